//! The GGUF reader on files written here, so every field and quantisation is checked
//! against values computed by hand.

use std::path::Path;

use llm_burn::formats::gguf::{Gguf, Value, unpermute_rows};
use llm_burn::quant::dequantize;
use llm_burn::quant::TensorType;
use proptest::prelude::*;

/// A minimal GGUF writer for the tests.
#[derive(Default)]
pub(crate) struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn string(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl Writer {
    pub(crate) fn kv_u32(&mut self, k: &str, v: u32) {
        string(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
    }
    pub(crate) fn kv_str(&mut self, k: &str, v: &str) {
        string(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        string(&mut self.kv, v);
        self.n_kv += 1;
    }
    pub(crate) fn kv_strs(&mut self, k: &str, v: &[&str]) {
        string(&mut self.kv, k);
        self.kv.extend(9u32.to_le_bytes());
        self.kv.extend(8u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for s in v {
            string(&mut self.kv, s);
        }
        self.n_kv += 1;
    }
    /// `shape` in PyTorch order; `type_id` as GGUF numbers it.
    pub(crate) fn tensor(&mut self, name: &str, shape: &[u64], type_id: u32, bytes: &[u8]) {
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        string(&mut self.infos, name);
        self.infos.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(type_id.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.n_tensors += 1;
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(self.kv);
        out.extend(self.infos);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(self.data);
        out
    }
}

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn reads_metadata_and_dequantises_every_supported_type() {
    let mut w = Writer::default();
    w.kv_u32("llama.block_count", 2);
    w.kv_str("general.architecture", "llama");
    w.kv_strs("tokenizer.ggml.tokens", &["a", "b", "ab"]);
    // F32 [2, 2].
    let f32s: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    w.tensor("f32", &[2, 2], 0, &f32s);
    // F16 [3].
    let f16s: Vec<u8> = [0.5f32, -1.0, 3.0].iter().flat_map(|v| h(*v)).collect();
    w.tensor("f16", &[3], 1, &f16s);
    // Q8_0: one block, d = 0.5, q = -16..16.
    let mut q8 = h(0.5).to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    w.tensor("q8", &[32], 8, &q8);
    // Q4_1: one block, d = 0.25, m = -1; nibbles: low = j % 16, high = 15 - j % 16.
    let mut q41 = h(0.25).to_vec();
    q41.extend(h(-1.0));
    q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    w.tensor("q41", &[32], 3, &q41);
    // Q4_0: one block, d = 2; low nibble j, high nibble 8.
    let mut q40 = h(2.0).to_vec();
    q40.extend((0..16u8).map(|j| j | (8 << 4)));
    w.tensor("q40", &[32], 2, &q40);

    let g = Gguf::from_bytes(Path::new("test.gguf"), w.finish()).expect("parse");
    assert_eq!(g.version, 3);
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_strings("tokenizer.ggml.tokens").unwrap(), vec!["a", "b", "ab"]);
    assert!(matches!(g.metadata.get("llama.block_count"), Some(Value::U64(2))));
    assert!(g.get_u64("missing.key").unwrap_err().to_string().contains("missing.key"));

    let t = g.tensor("f32").unwrap();
    assert_eq!((t.shape.clone(), t.kind), (vec![2, 2], TensorType::F32));
    assert_eq!(g.dequantize(t).unwrap(), vec![1.5, -2.0, 0.25, 8.0]);
    assert_eq!(g.dequantize(g.tensor("f16").unwrap()).unwrap(), vec![0.5, -1.0, 3.0]);
    let q8v = g.dequantize(g.tensor("q8").unwrap()).unwrap();
    assert_eq!(q8v, (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect::<Vec<_>>());
    let q41v = g.dequantize(g.tensor("q41").unwrap()).unwrap();
    let expect: Vec<f32> = (0..16).map(|j| j as f32 * 0.25 - 1.0).chain((0..16).map(|j| (15 - j) as f32 * 0.25 - 1.0)).collect();
    assert_eq!(q41v, expect);
    let q40v = g.dequantize(g.tensor("q40").unwrap()).unwrap();
    let expect: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 2.0).chain(std::iter::repeat_n(0.0, 16)).collect();
    assert_eq!(q40v, expect);
    assert_eq!(dequantize(TensorType::BF16, &half::bf16::from_f32(-3.5).to_le_bytes()), vec![-3.5]);
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let p = Path::new("bad.gguf");
    assert!(Gguf::from_bytes(p, b"GGML....".to_vec()).unwrap_err().to_string().contains("magic"));
    assert!(Gguf::from_bytes(p, b"GGUF".to_vec()).is_err());
    let mut w = Writer::default();
    w.tensor("t", &[64], 0, &[0u8; 16]); // claims 64 floats, holds 4
    assert!(Gguf::from_bytes(p, w.finish()).unwrap_err().to_string().contains("past the end"));
    let mut w = Writer::default();
    w.tensor("t", &[4], 99, &[0u8; 16]);
    assert!(Gguf::from_bytes(p, w.finish()).unwrap_err().to_string().contains("unsupported type 99"));
}

/// llama.cpp's permutation (convert_hf_to_gguf.py): rows of each head reshaped to
/// [2, head_dim / 2] and transposed.
pub(crate) fn permute(w: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for i in 0..half {
                let src = h * hd + s * half + i;
                let dst = h * hd + 2 * i + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn unpermute_undoes_llama_cpp_permute(n_heads in 1usize..5, half in 1usize..5, cols in 1usize..4, seed in any::<u32>()) {
        let rows = n_heads * half * 2;
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as f32).collect();
        prop_assert_eq!(unpermute_rows(&permute(&w, n_heads, rows, cols), n_heads, rows, cols), w.clone());
        // The library's permutation (what random-model writes) is llama.cpp's.
        prop_assert_eq!(llm_burn::formats::gguf::permute_rows(&w, n_heads, rows, cols), permute(&w, n_heads, rows, cols));
    }

    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(tail);
        let _ = Gguf::from_bytes(Path::new("fuzz.gguf"), bytes);
    }
}
