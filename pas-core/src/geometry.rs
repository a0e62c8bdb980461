//! Model geometry, head ids and captured head activations.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One attention head: a layer and a head index within it (query heads, not KV heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HeadId {
    /// Layer, 0-based.
    pub layer: u32,
    /// Head within the layer, 0-based.
    pub head: u32,
}

impl HeadId {
    /// A head id.
    pub fn new(layer: u32, head: u32) -> Self {
        HeadId { layer, head }
    }
}

impl fmt::Display for HeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}H{}", self.layer, self.head)
    }
}

/// The shape of a model's attention-head outputs: the input of `o_proj`, split by head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Geometry {
    /// Number of transformer layers.
    pub layers: u32,
    /// Query heads per layer.
    pub heads: u32,
    /// Dimension of one head's output.
    pub head_dim: u32,
}

impl Geometry {
    /// A geometry.
    pub fn new(layers: u32, heads: u32, head_dim: u32) -> Self {
        Geometry { layers, heads, head_dim }
    }

    /// Heads in all layers.
    pub fn num_heads(&self) -> usize {
        self.layers as usize * self.heads as usize
    }

    /// Width of one layer's concatenated head outputs (`heads * head_dim`).
    pub fn layer_width(&self) -> usize {
        self.heads as usize * self.head_dim as usize
    }

    /// Floats in one sample of [`HeadActivations`].
    pub fn sample_len(&self) -> usize {
        self.num_heads() * self.head_dim as usize
    }

    /// All heads, layer-major.
    pub fn head_ids(&self) -> impl Iterator<Item = HeadId> + '_ {
        (0..self.layers).flat_map(move |l| (0..self.heads).map(move |h| HeadId::new(l, h)))
    }

    /// Layer-major index of a head (`layer * heads + head`).
    pub fn index(&self, head: HeadId) -> Result<usize> {
        if head.layer < self.layers && head.head < self.heads {
            Ok(head.layer as usize * self.heads as usize + head.head as usize)
        } else {
            Err(Error::HeadOutOfRange { head, geometry: *self })
        }
    }

    pub(crate) fn expect_same(&self, other: &Geometry, what: &str) -> Result<()> {
        if self == other {
            Ok(())
        } else {
            Err(Error::GeometryMismatch { what: what.to_owned(), expected: *self, found: *other })
        }
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layers x {} heads x {} dims", self.layers, self.heads, self.head_dim)
    }
}

/// Captured head outputs of several prompts, in plain `f32`.
///
/// # Shape
/// `[samples, layers, heads, head_dim]`, row-major: the value of sample `s`, head
/// `(l, h)`, dimension `d` is at `((s * layers + l) * heads + h) * head_dim + d`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadActivations {
    geometry: Geometry,
    samples: usize,
    data: Vec<f32>,
}

impl HeadActivations {
    /// Wraps a buffer of `samples * layers * heads * head_dim` floats.
    pub fn new(geometry: Geometry, samples: usize, data: Vec<f32>) -> Result<Self> {
        let expected = samples * geometry.sample_len();
        if data.len() != expected {
            return Err(Error::Shape { what: "head activations".into(), expected, found: data.len() });
        }
        Ok(HeadActivations { geometry, samples, data })
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The whole buffer, `[samples, layers, heads, head_dim]`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// One sample's output of one head, `[head_dim]`.
    ///
    /// # Panics
    /// If `sample` or the head index is out of range.
    pub fn head(&self, sample: usize, head_index: usize) -> &[f32] {
        let d = self.geometry.head_dim as usize;
        let start = (sample * self.geometry.num_heads() + head_index) * d;
        &self.data[start..start + d]
    }

    /// Selected samples, in the given order (e.g. one subject's labelled rows).
    pub fn select(&self, rows: &[usize]) -> Result<HeadActivations> {
        let len = self.geometry.sample_len();
        let mut data = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            if r >= self.samples {
                return Err(Error::Shape { what: format!("sample index {r}"), expected: self.samples, found: r });
            }
            data.extend_from_slice(&self.data[r * len..(r + 1) * len]);
        }
        Ok(HeadActivations { geometry: self.geometry, samples: rows.len(), data })
    }
}
