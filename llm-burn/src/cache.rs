//! The KV cache: keys and values of the positions seen so far, passed into
//! [`Llama::forward`](crate::Llama::forward) and never held by the model.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::error::{Error, Result};

/// One layer's keys and values, in the layout of the kernels that made them.
#[derive(Debug, Clone)]
pub(crate) enum LayerKv<B: Backend> {
    /// Tensor kernels: keys and values `[batch, kv_heads, positions, head_dim]`.
    Tensor { k: Tensor<B, 4>, v: Tensor<B, 4> },
    /// Host kernels: per row, keys and values `[positions, kv_heads * head_dim]`; a row's
    /// buffer is shared (not copied) when the cache is repeated, and copied on write.
    Host { k: Vec<Arc<Vec<f32>>>, v: Vec<Arc<Vec<f32>>> },
}

/// Keys and values of the positions seen so far, per layer, and which of them are real
/// tokens (not padding) in each row. A fresh cache per run; [`KvCache::repeat`] shares one
/// computed prefix across many continuations without copying it.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Per layer: a prefix shared by every row, as a batch of one (set by [`KvCache::repeat`]).
    pub(crate) shared: Vec<Option<LayerKv<B>>>,
    /// Per layer: each row's own keys and values.
    pub(crate) layers: Vec<Option<LayerKv<B>>>,
    /// Per row: whether each cached position (shared prefix first) is a real token.
    pub(crate) valid: Vec<Vec<bool>>,
    /// Positions in the shared prefix.
    pub(crate) shared_len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        KvCache { shared: vec![None; layers], layers: vec![None; layers], valid: Vec::new(), shared_len: 0 }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the cache.
    pub fn batch(&self) -> usize {
        self.valid.len()
    }

    /// A batch-1 cache shared by `n` rows, so `n` continuations share one prefix: the
    /// prefix is kept once (not copied per row) and attended to by all rows together.
    pub fn repeat(&self, n: usize) -> Result<Self> {
        if self.batch() != 1 || self.shared_len > 0 {
            return Err(Error::Input(format!(
                "only a batch-1 cache without a shared prefix can be repeated (this one has {} rows, {} shared positions)",
                self.batch(),
                self.shared_len
            )));
        }
        Ok(KvCache {
            shared: self.layers.clone(),
            layers: vec![None; self.layers.len()],
            valid: vec![self.valid[0].clone(); n],
            shared_len: self.len(),
        })
    }

    /// A cache whose row `i` is a copy of this cache's row `rows[i]` (rows may repeat), so
    /// several continuations can fork from each row; a shared prefix stays shared.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(Error::Input(format!("row {r} of a cache of {} rows", self.batch())));
        }
        let pick = |kv: &Option<LayerKv<B>>| -> Option<LayerKv<B>> {
            kv.as_ref().map(|kv| match kv {
                LayerKv::Tensor { k, v } => {
                    let idx = burn::tensor::Tensor::<B, 1, burn::tensor::Int>::from_data(
                        burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
                        &k.device(),
                    );
                    LayerKv::Tensor { k: k.clone().select(0, idx.clone()), v: v.clone().select(0, idx) }
                }
                LayerKv::Host { k, v } => LayerKv::Host { k: rows.iter().map(|&r| k[r].clone()).collect(), v: rows.iter().map(|&r| v[r].clone()).collect() },
            })
        };
        Ok(KvCache {
            shared: self.shared.clone(),
            layers: self.layers.iter().map(pick).collect(),
            valid: rows.iter().map(|&r| self.valid[r].clone()).collect(),
            shared_len: self.shared_len,
        })
    }
}
