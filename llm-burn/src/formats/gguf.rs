//! A reader for GGUF files (llama.cpp's format) and dequantisation to `f32`.
//!
//! Supported tensor types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K
//! ([`crate::quant::TensorType`], dequantised in [`crate::quant`]). Shapes are reported in
//! PyTorch order (GGUF stores them innermost first; this reader reverses them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::quant::TensorType;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned integer (u8, u16, u32 or u64).
    U64(u64),
    /// Signed integer (i8, i16, i32 or i64).
    I64(i64),
    /// Float (f32 or f64).
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Element type.
    pub kind: TensorType,
    /// Byte offset in the data section.
    pub offset: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file held in memory, or only its header ([`Gguf::open_header`]).
#[derive(Debug)]
pub struct Gguf {
    path: PathBuf,
    /// The whole file, or a prefix holding the header.
    bytes: Vec<u8>,
    /// The file's length.
    file_len: usize,
    /// Format version.
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Each metadata entry's key, type id and where its value's bytes lie in `bytes`, in
    /// file order (for copying entries verbatim, [`Gguf::raw_metadata`]).
    raw: Vec<(String, u32, std::ops::Range<usize>)>,
    data_start: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n).map(|b| String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, kind: u32, depth: usize) -> Option<Value> {
        let int = |b: &[u8]| -> i64 {
            match b.len() {
                1 => i64::from(b[0] as i8),
                2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                _ => i64::from_le_bytes(b.try_into().unwrap_or_default()),
            }
        };
        Some(match kind {
            0 => Value::U64(u64::from(self.take(1)?[0])),
            1 => Value::I64(int(self.take(1)?)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?))),
            3 => Value::I64(int(self.take(2)?)),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(int(self.take(4)?)),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.take(4)?.try_into().ok()?))),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = usize::try_from(self.u64()?).ok()?;
                // Each element takes at least one byte: a count past the end is malformed.
                if n > self.bytes.len() - self.pos {
                    return None;
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(int(self.take(8)?)),
            12 => Value::F64(f64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            _ => return None,
        })
    }
}

impl Gguf {
    /// Reads a GGUF file (version 2 or 3).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Reads a GGUF file's header alone (metadata and tensor table), leaving the tensors on
    /// disk for [`Gguf::read_tensor`]: a loader that keeps the blocks holds each once.
    pub fn open_header(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let file_len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len() as usize;
        let mut want = 16 << 20;
        loop {
            let mut bytes = Vec::new();
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            file.take(want.min(file_len) as u64).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
            match Self::parse(path, bytes, file_len) {
                // A header longer than the prefix reads as truncated: read more.
                Err(_) if want < file_len => want *= 4,
                done => return done,
            }
        }
    }

    /// Parses GGUF bytes; `path` is used in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let len = bytes.len();
        Self::parse(path, bytes, len)
    }

    /// Parses the header in `bytes` (the file, or a prefix of a file of `file_len` bytes)
    /// and checks that every tensor lies inside the file.
    fn parse(path: &Path, bytes: Vec<u8>, file_len: usize) -> Result<Self> {
        let bad = |message: &str| Error::Gguf { path: path.to_owned(), message: message.to_owned() };
        let mut c = Cursor { bytes: &bytes, pos: 0 };
        if c.take(4) != Some(b"GGUF") {
            return Err(bad("not a GGUF file (bad magic)"));
        }
        let version = c.u32().ok_or_else(|| bad("truncated header"))?;
        if !(2..=3).contains(&version) {
            return Err(bad(&format!("unsupported version {version}")));
        }
        let n_tensors = c.u64().ok_or_else(|| bad("truncated header"))?;
        let n_kv = c.u64().ok_or_else(|| bad("truncated header"))?;
        let (mut metadata, mut raw) = (BTreeMap::new(), Vec::new());
        for i in 0..n_kv {
            let key = c.string().ok_or_else(|| bad(&format!("truncated metadata key {i}")))?;
            let kind = c.u32().ok_or_else(|| bad(&format!("truncated metadata `{key}`")))?;
            let start = c.pos;
            let value = c.value(kind, 0).ok_or_else(|| bad(&format!("malformed metadata value `{key}` (type {kind})")))?;
            raw.push((key.clone(), kind, start..c.pos));
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for i in 0..n_tensors {
            let name = c.string().ok_or_else(|| bad(&format!("truncated tensor info {i}")))?;
            let trunc = || bad(&format!("truncated tensor info `{name}`"));
            let n_dims = c.u32().ok_or_else(trunc)?;
            if n_dims > 8 {
                return Err(bad(&format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                shape.push(usize::try_from(c.u64().ok_or_else(trunc)?).map_err(|_| trunc())?);
            }
            shape.reverse();
            let type_id = c.u32().ok_or_else(trunc)?;
            let kind = TensorType::from_id(type_id)
                .ok_or_else(|| bad(&format!("tensor `{name}` has unsupported type {type_id}")))?;
            let offset = usize::try_from(c.u64().ok_or_else(trunc)?).map_err(|_| trunc())?;
            tensors.push(TensorInfo { name, shape, kind, offset });
        }
        let align = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        if align == 0 {
            return Err(bad("general.alignment is 0"));
        }
        let data_start = c.pos.div_ceil(align) * align;
        let gguf = Gguf { path: path.to_owned(), bytes, file_len, version, metadata, tensors, raw, data_start };
        for t in &gguf.tensors {
            gguf.tensor_range(t)?;
        }
        Ok(gguf)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value, or an error naming the key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| Error::Metadata { path: self.path.clone(), key: key.into(), message: "missing".into() })
    }

    /// A metadata integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?.as_u64().ok_or_else(|| Error::Metadata { path: self.path.clone(), key: key.into(), message: "not an integer".into() })
    }

    /// A metadata float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?.as_f64().ok_or_else(|| Error::Metadata { path: self.path.clone(), key: key.into(), message: "not a number".into() })
    }

    /// A metadata string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?.as_str().ok_or_else(|| Error::Metadata { path: self.path.clone(), key: key.into(), message: "not a string".into() })
    }

    /// A metadata array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>> {
        let bad = || Error::Metadata { path: self.path.clone(), key: key.into(), message: "not an array of strings".into() };
        self.get(key)?.as_array().ok_or_else(bad)?.iter().map(|v| v.as_str().ok_or_else(bad)).collect()
    }

    /// Every metadata entry as stored, in file order: key, GGUF type id and the value's bytes
    /// (what a writer copies to keep each entry's exact type, [`crate::formats::gguf_write::Meta::Raw`]).
    pub fn raw_metadata(&self) -> impl Iterator<Item = (&str, u32, &[u8])> {
        self.raw.iter().map(|(k, kind, r)| (k.as_str(), *kind, &self.bytes[r.clone()]))
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Where the tensor's bytes lie in the file.
    fn tensor_range(&self, t: &TensorInfo) -> Result<std::ops::Range<usize>> {
        let (per_block, block_bytes) = t.kind.block();
        let n = t.len();
        let bad = |m: String| Error::Gguf { path: self.path.clone(), message: format!("tensor `{}`: {m}", t.name) };
        if !n.is_multiple_of(per_block) {
            return Err(bad(format!("{n} elements is not a multiple of the block size {per_block}")));
        }
        let len = n / per_block * block_bytes;
        let start = self.data_start.checked_add(t.offset).ok_or_else(|| bad("offset overflows".into()))?;
        match start.checked_add(len) {
            Some(end) if end <= self.file_len => Ok(start..end),
            _ => Err(bad("data lies past the end of the file".into())),
        }
    }

    /// The tensor's raw bytes as stored (blocks of its type), from a file held in memory.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let range = self.tensor_range(t)?;
        self.bytes.get(range).ok_or_else(|| Error::Gguf { path: self.path.clone(), message: format!("tensor `{}`: not in memory (the header alone was read)", t.name) })
    }

    /// The tensor's raw bytes as stored, copied from memory or read from the file.
    pub fn read_tensor(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let range = self.tensor_range(t)?;
        if let Some(b) = self.bytes.get(range.clone()) {
            return Ok(b.to_vec());
        }
        let mut file = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.seek(SeekFrom::Start(range.start as u64)).map_err(|e| Error::io(&self.path, e))?;
        let mut out = vec![0u8; range.len()];
        file.read_exact(&mut out).map_err(|e| Error::io(&self.path, e))?;
        Ok(out)
    }

    /// The tensor's values as `f32`, dequantised, in PyTorch (row-major) order (from memory,
    /// or read from the file when the header alone was read).
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        match self.tensor_bytes(t) {
            Ok(bytes) => Ok(crate::quant::dequantize(t.kind, bytes)),
            Err(_) => Ok(crate::quant::dequantize(t.kind, &self.read_tensor(t)?)),
        }
    }
}

/// How many tensors of each type, most frequent first (`Q4_K 168, Q6_K 29`).
pub fn type_counts(kinds: impl IntoIterator<Item = TensorType>) -> String {
    let mut counts = BTreeMap::new();
    for k in kinds {
        *counts.entry(format!("{k:?}")).or_insert(0usize) += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// llama.cpp's row permutation of a Q or K projection (what its converter does to a Hugging
/// Face checkpoint): row `s * head_dim / 2 + i` of a head becomes row `2 i + s`; undone by
/// [`unpermute_rows`]. `cols` as there.
pub fn permute_rows<T: Copy + Default>(w: &[T], n_heads: usize, rows: usize, cols: usize) -> Vec<T> {
    move_head_rows(w, n_heads, rows, cols, true)
}

/// Undoes llama.cpp's row permutation of a Q or K projection (`[n_heads * head_dim, in]`):
/// llama.cpp stores each head's rows interleaved (pairs for the interleaved RoPE); Hugging
/// Face checkpoints use the half-split layout. Row `2 i + s` of a GGUF head becomes row
/// `s * head_dim / 2 + i`.
/// `cols` is a row's length in `T`s: values, or bytes of a row of blocks.
pub fn unpermute_rows<T: Copy + Default>(w: &[T], n_heads: usize, rows: usize, cols: usize) -> Vec<T> {
    move_head_rows(w, n_heads, rows, cols, false)
}

/// Moves each head's row between the half-split place `s * head_dim / 2 + i` and the
/// interleaved place `2 i + s`: to the interleaved one if `interleave`, else back.
fn move_head_rows<T: Copy + Default>(w: &[T], n_heads: usize, rows: usize, cols: usize, interleave: bool) -> Vec<T> {
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let (split, inter) = (h * head_dim + s * half + i, h * head_dim + 2 * i + s);
                let (src, dst) = if interleave { (split, inter) } else { (inter, split) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}
