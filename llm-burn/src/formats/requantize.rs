//! Requantizing a GGUF file to another weight type (what llama.cpp's `llama-quantize` does):
//! every matrix re-encoded as `Q4_K` or `Q8_0` (`Q8_0` where its rows are not whole blocks
//! of the type, as llama.cpp falls back), vectors kept as stored, every metadata entry copied
//! as stored (tokenizer, chat template, hyper-parameters) but `general.file_type`. The result
//! loads in llama.cpp and here (`--dtype file`), so both engines can multiply the same blocks.
//!
//! ```no_run
//! use llm_burn::quant::TensorType;
//! let plan = llm_burn::formats::requantize::requantize("in.gguf".as_ref(), "out.gguf".as_ref(), TensorType::Q4_K, &mut |_, _| {}).unwrap();
//! println!("{} tensors, {} bytes", plan.len(), plan.iter().map(|p| p.bytes()).sum::<usize>());
//! ```

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::gguf::Gguf;
use crate::quant::TensorType;
use crate::formats::gguf_write::{GgufWriter, Meta, Planned};

/// Values dequantized and requantized per piece of a tensor.
const PIECE: usize = 1 << 22;

/// llama.cpp's `general.file_type` for a file mostly of `kind` (`LLAMA_FTYPE_MOSTLY_*`).
fn file_type(kind: TensorType) -> Option<u32> {
    match kind {
        TensorType::Q8_0 => Some(7),
        TensorType::Q4_K => Some(14),
        _ => None,
    }
}

/// The type a tensor of `shape` (PyTorch order) now stored as `from` gets: matrices become
/// `to`, or `Q8_0` where their rows are not whole blocks of `to`; vectors, and matrices whose
/// rows are not whole `Q8_0` blocks either, keep their type.
pub fn target_type(shape: &[usize], from: TensorType, to: TensorType) -> TensorType {
    match shape {
        [_, cols] if cols.is_multiple_of(TensorType::Q8_0.block().0) => crate::quant::quantize::row_type(*cols, to),
        _ => from,
    }
}

/// Writes `dst` from `src` with its matrices requantized to `to` (`Q4_K` or `Q8_0`); a tensor
/// already of its target type is copied as stored. `progress(done, total)` counts tensors.
/// Returns the plan written (names, shapes, types). Reads one tensor at a time.
pub fn requantize(src: &Path, dst: &Path, to: TensorType, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Planned>> {
    let code = file_type(to).ok_or_else(|| Error::Gguf { path: dst.to_owned(), message: format!("requantizing to {to:?} is not supported (Q8_0 and Q4_K are)") })?;
    let g = Gguf::open_header(src)?;
    let mut meta: Vec<(&str, Meta)> = g
        .raw_metadata()
        .filter(|(k, _, _)| !matches!(*k, "general.file_type" | "general.alignment"))
        .map(|(k, kind, bytes)| (k, Meta::Raw { kind, bytes: bytes.to_vec() }))
        .collect();
    meta.push(("general.file_type", Meta::U32(code)));
    let plan: Vec<Planned> =
        g.tensors.iter().map(|t| Planned { name: t.name.clone(), shape: t.shape.clone(), kind: target_type(&t.shape, t.kind, to) }).collect();
    let mut w = GgufWriter::create(dst, &meta, &plan)?;
    for (i, (t, p)) in g.tensors.iter().zip(&plan).enumerate() {
        let bytes = g.read_tensor(t)?;
        if p.kind == t.kind {
            w.write(&bytes)?;
        } else {
            let cols = *t.shape.last().unwrap_or(&1);
            let (per_block, block_bytes) = t.kind.block();
            let row_bytes = cols / per_block * block_bytes;
            let rows_per_piece = (PIECE / cols).max(1);
            for piece in bytes.chunks(rows_per_piece * row_bytes) {
                let v = crate::quant::dequantize(t.kind, piece);
                let (n, (per, out_block)) = (v.len(), p.kind.block());
                let mut out = vec![0u8; n / per * out_block];
                crate::quant::quantize::quantize_row(p.kind, &v, &mut out).map_err(|message| Error::Tensor { name: t.name.clone(), message })?;
                w.write(&out)?;
            }
        }
        progress(i + 1, plan.len());
    }
    w.finish()?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_take_the_type_where_their_rows_are_whole_blocks() {
        use TensorType::*;
        assert_eq!(target_type(&[64, 512], Q4_1, Q4_K), Q4_K);
        assert_eq!(target_type(&[64, 576], Q4_1, Q4_K), Q8_0);
        assert_eq!(target_type(&[64, 576], F32, Q8_0), Q8_0);
        assert_eq!(target_type(&[64, 40], F16, Q8_0), F16);
        assert_eq!(target_type(&[576], F32, Q4_K), F32);
        assert_eq!(crate::formats::gguf::type_counts([Q4_K, Q8_0, Q8_0, F32]), "Q8_0 2, F32 1, Q4_K 1");
    }
}
