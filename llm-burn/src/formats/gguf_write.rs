//! Writing GGUF files (version 3) tensor by tensor: the header, with every tensor's offset,
//! is written first from the planned shapes and types, then each tensor's bytes in order,
//! in as many pieces as the caller likes, so that a model larger than memory can be written.
//! The file is written under a temporary name and renamed into place by
//! [`GgufWriter::finish`]: an interrupted write leaves nothing under the final name.
//!
//! ```
//! use llm_burn::formats::gguf::Gguf;
//! use llm_burn::quant::TensorType;
//! use llm_burn::formats::gguf_write::{GgufWriter, Meta, Planned};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("m.gguf");
//! let plan = [Planned { name: "output_norm.weight".into(), shape: vec![4], kind: TensorType::F32 }];
//! let mut w = GgufWriter::create(&path, &[("general.architecture", Meta::Str("llama".into()))], &plan).unwrap();
//! w.write(&[1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
//! w.finish().unwrap();
//! let g = Gguf::open(&path).unwrap();
//! assert_eq!(g.dequantize(g.tensor("output_norm.weight").unwrap()).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::quant::TensorType;

/// Alignment of the tensor data (GGUF's default).
const ALIGN: usize = 32;

/// A metadata value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// `u32`.
    U32(u32),
    /// `f32`.
    F32(f32),
    /// A UTF-8 string.
    Str(String),
    /// A value copied from another file as stored: its GGUF type id and bytes
    /// ([`crate::formats::gguf::Gguf::raw_metadata`]).
    Raw {
        /// GGUF type id.
        kind: u32,
        /// The value's bytes.
        bytes: Vec<u8>,
    },
}

/// A tensor the file will hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape in PyTorch order (outermost first); the innermost dimension is whole blocks.
    pub shape: Vec<usize>,
    /// Element type.
    pub kind: TensorType,
}

impl Planned {
    /// Bytes of the tensor's data.
    pub fn bytes(&self) -> usize {
        let (per_block, block_bytes) = self.kind.block();
        self.shape.iter().product::<usize>() / per_block * block_bytes
    }
}

/// A GGUF file being written ([`GgufWriter::create`], [`GgufWriter::write`],
/// [`GgufWriter::finish`]).
pub struct GgufWriter {
    out: BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    /// Bytes each tensor still expects, in order (the current one first).
    left: std::collections::VecDeque<(String, usize)>,
    /// Bytes written so far, header included.
    pos: usize,
    /// Renamed into place (else the temporary file is removed when dropped).
    done: bool,
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN - n
}

impl GgufWriter {
    /// Starts `path` with `metadata` and the tensor table of `tensors` (checked: whole
    /// blocks in the innermost dimension, distinct names).
    pub fn create(path: &Path, metadata: &[(&str, Meta)], tensors: &[Planned]) -> Result<Self> {
        let bad = |message: String| Error::Gguf { path: path.to_owned(), message };
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend((tensors.len() as u64).to_le_bytes());
        header.extend((metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            string(&mut header, key);
            match value {
                Meta::U32(v) => {
                    header.extend(4u32.to_le_bytes());
                    header.extend(v.to_le_bytes());
                }
                Meta::F32(v) => {
                    header.extend(6u32.to_le_bytes());
                    header.extend(v.to_le_bytes());
                }
                Meta::Str(s) => {
                    header.extend(8u32.to_le_bytes());
                    string(&mut header, s);
                }
                Meta::Raw { kind, bytes } => {
                    header.extend(kind.to_le_bytes());
                    header.extend(bytes);
                }
            }
        }
        let mut offset = 0usize;
        let mut names = std::collections::BTreeSet::new();
        for t in tensors {
            let inner = t.shape.last().copied().unwrap_or(0);
            if !inner.is_multiple_of(t.kind.block().0) {
                return Err(bad(format!("tensor `{}`: {:?} rows are whole blocks of {}; its rows are {inner}", t.name, t.kind, t.kind.block().0)));
            }
            if !names.insert(t.name.as_str()) {
                return Err(bad(format!("tensor `{}` planned twice", t.name)));
            }
            string(&mut header, &t.name);
            header.extend((t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                header.extend((*d as u64).to_le_bytes());
            }
            header.extend(t.kind.id().to_le_bytes());
            header.extend((offset as u64).to_le_bytes());
            offset += t.bytes() + pad(t.bytes());
        }
        header.resize(header.len() + pad(header.len()), 0);
        let tmp = path.with_extension("gguf.partial");
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        out.write_all(&header).map_err(|e| Error::io(&tmp, e))?;
        let left = tensors.iter().map(|t| (t.name.clone(), t.bytes())).collect();
        Ok(GgufWriter { out, tmp, path: path.to_owned(), left, pos: header.len(), done: false })
    }

    /// Appends `bytes` of the current tensor's data; a piece may end a tensor but not run
    /// into the next one.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some((name, left)) = self.left.front_mut() else {
            return Err(Error::Gguf { path: self.path.clone(), message: format!("{} bytes written past the last tensor", bytes.len()) });
        };
        if bytes.len() > *left {
            return Err(Error::Gguf { path: self.path.clone(), message: format!("tensor `{name}`: {} bytes written, {left} left", bytes.len()) });
        }
        self.out.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))?;
        *left -= bytes.len();
        self.pos += bytes.len();
        if *left == 0 {
            self.left.pop_front();
            let n = pad(self.pos);
            self.out.write_all(&[0u8; ALIGN][..n]).map_err(|e| Error::io(&self.tmp, e))?;
            self.pos += n;
        }
        Ok(())
    }

    /// Checks that every tensor was written in full and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if let Some((name, left)) = self.left.front() {
            return Err(Error::Gguf { path: self.path.clone(), message: format!("tensor `{name}` is missing {left} bytes ({} tensors unwritten)", self.left.len()) });
        }
        self.out.flush().map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.done = true;
        Ok(self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::Gguf;

    /// Tensors of odd sizes, written in pieces, read back in place with their metadata; a
    /// short or overlong write is an error naming the tensor, and leaves no file.
    #[test]
    fn tensors_written_in_pieces_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let plan = vec![
            Planned { name: "a".into(), shape: vec![3], kind: TensorType::F32 },
            Planned { name: "b".into(), shape: vec![2, 32], kind: TensorType::Q8_0 },
            Planned { name: "c".into(), shape: vec![5], kind: TensorType::F32 },
        ];
        let meta = [("general.architecture", Meta::Str("qwen2".into())), ("x.count", Meta::U32(7)), ("x.eps", Meta::F32(0.5))];
        let mut w = GgufWriter::create(&path, &meta, &plan).unwrap();
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        w.write(&f(&[1.0, 2.0])).unwrap();
        w.write(&f(&[3.0])).unwrap();
        let q = crate::quant::qmatrix::QMatrix::quantize_q8_0(&(0..64).map(|i| i as f32 / 64.0).collect::<Vec<_>>(), 2, 32).unwrap();
        w.write(&q.blocks()[..30]).unwrap();
        w.write(&q.blocks()[30..]).unwrap();
        assert!(!path.exists(), "the file appears only when finished");
        w.write(&f(&[4.0, 5.0, 6.0, 7.0, 8.0])).unwrap();
        assert!(w.write(&[0]).unwrap_err().to_string().contains("past the last tensor"));
        w.finish().unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!((g.get_str("general.architecture").unwrap(), g.get_u64("x.count").unwrap(), g.get_f64("x.eps").unwrap()), ("qwen2", 7, 0.5));
        assert_eq!(g.dequantize(g.tensor("a").unwrap()).unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(g.tensor("b").unwrap().shape, vec![2, 32]);
        assert_eq!(g.dequantize(g.tensor("b").unwrap()).unwrap(), q.dequantize());
        assert_eq!(g.dequantize(g.tensor("c").unwrap()).unwrap(), vec![4.0, 5.0, 6.0, 7.0, 8.0]);

        let path = dir.path().join("short.gguf");
        let mut w = GgufWriter::create(&path, &[], &plan).unwrap();
        assert!(w.write(&f(&[1.0; 4])).unwrap_err().to_string().contains("tensor `a`"));
        w.write(&f(&[1.0; 3])).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("tensor `b`") && err.contains("2 tensors unwritten"), "{err}");
        assert!(!path.exists() && !path.with_extension("gguf.partial").exists());
        let bad = [Planned { name: "q".into(), shape: vec![2, 48], kind: TensorType::Q4_K }];
        assert!(GgufWriter::create(&path, &[], &bad).err().unwrap().to_string().contains("whole blocks of 256"));
    }
}
