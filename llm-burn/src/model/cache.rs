//! The KV cache: keys and values of the positions seen so far, passed into
//! [`Decoder::forward`](crate::Decoder::forward) and never held by the model.

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

    /// The keys and values held as tensors (the tensor kernels' layout, which autodiff
    /// backends use), layer by layer, keys before values; host buffers are left out.
    pub fn tensors(&self) -> Vec<Tensor<B, 4>> {
        self.shared.iter().chain(&self.layers).flatten().filter_map(|kv| match kv {
            LayerKv::Tensor { k, v } => Some([k.clone(), v.clone()]),
            LayerKv::Host { .. } => None,
        }).flatten().collect()
    }

    /// The cache with every tensor of [`KvCache::tensors`] replaced by `f` of it (in that
    /// order), host buffers shared: for example detached leaves of a training graph, so that
    /// several passes continue one prefix and their gradients with respect to it are summed.
    pub fn map_tensors(&self, mut f: impl FnMut(Tensor<B, 4>) -> Tensor<B, 4>) -> Self {
        let mut map = |kv: &Option<LayerKv<B>>| -> Option<LayerKv<B>> {
            kv.as_ref().map(|kv| match kv {
                LayerKv::Tensor { k, v } => LayerKv::Tensor { k: f(k.clone()), v: f(v.clone()) },
                host => host.clone(),
            })
        };
        let shared = self.shared.iter().map(&mut map).collect();
        let layers = self.layers.iter().map(&mut map).collect();
        KvCache { shared, layers, valid: self.valid.clone(), shared_len: self.shared_len }
    }

    /// The rows of several caches as one (in order), for rows that join a running batch:
    /// shorter rows are left-padded with masked positions (which never count as positions),
    /// so every row continues exactly as it would alone. The caches must share no prefix
    /// ([`KvCache::repeat`]) and come from the same kernels.
    pub fn join(parts: Vec<KvCache<B>>) -> Result<Self> {
        let parts: Vec<KvCache<B>> = parts.into_iter().filter(|p| p.batch() > 0).collect();
        let Some(first) = parts.first() else { return Err(Error::Input("no rows to join".into())) };
        let layers = first.layers.len();
        if parts.iter().any(|p| p.shared_len > 0 || p.layers.len() != layers) {
            return Err(Error::Input("only caches of one model without a shared prefix can be joined".into()));
        }
        let len = parts.iter().map(KvCache::len).max().unwrap_or(0);
        let mut valid = Vec::new();
        for p in &parts {
            for v in &p.valid {
                valid.push(std::iter::repeat_n(false, len - v.len()).chain(v.iter().copied()).collect());
            }
        }
        let mut joined: Vec<Option<LayerKv<B>>> = vec![None; layers];
        for (l, slot) in joined.iter_mut().enumerate() {
            let kvs: Vec<(&LayerKv<B>, usize, usize)> = parts.iter().filter_map(|p| p.layers[l].as_ref().map(|kv| (kv, len - p.len(), p.len()))).collect();
            if kvs.is_empty() {
                continue;
            }
            if kvs.len() != parts.len() {
                return Err(Error::Input(format!("layer {l} is cached in some of the joined caches only")));
            }
            *slot = Some(join_layer(&kvs)?);
        }
        Ok(KvCache { shared: vec![None; layers], layers: joined, valid, shared_len: 0 })
    }

    /// Drops the leading positions that are padding in every row (left behind by rows that
    /// left the batch); results are unchanged.
    pub fn compact(&mut self) {
        let lead = self.valid.iter().map(|v| v.iter().take_while(|x| !**x).count()).min().unwrap_or(0);
        if lead == 0 || self.shared_len > 0 {
            return;
        }
        for v in &mut self.valid {
            v.drain(..lead);
        }
        for kv in self.layers.iter_mut().flatten() {
            match kv {
                LayerKv::Tensor { k, v } => {
                    let t = k.dims()[2];
                    *k = k.clone().narrow(2, lead, t - lead);
                    *v = v.clone().narrow(2, lead, t - lead);
                }
                LayerKv::Host { k, v } => {
                    for buf in k.iter_mut().chain(v.iter_mut()) {
                        let width = buf.len() / (lead + self.valid[0].len());
                        Arc::make_mut(buf).drain(..lead * width);
                    }
                }
            }
        }
    }
}

/// One layer of [`KvCache::join`]: each part's keys and values after `pad` masked positions.
fn join_layer<B: Backend>(parts: &[(&LayerKv<B>, usize, usize)]) -> Result<LayerKv<B>> {
    match parts[0].0 {
        LayerKv::Tensor { .. } => {
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            for (kv, pad, _) in parts {
                let LayerKv::Tensor { k, v } = kv else { return Err(Error::Input("caches of different kernels cannot be joined".into())) };
                let padded = |t: &Tensor<B, 4>| {
                    if *pad == 0 {
                        return t.clone();
                    }
                    let [b, h, _, d] = t.dims();
                    Tensor::cat(vec![Tensor::zeros([b, h, *pad, d], &t.device()), t.clone()], 2)
                };
                ks.push(padded(k));
                vs.push(padded(v));
            }
            Ok(LayerKv::Tensor { k: Tensor::cat(ks, 0), v: Tensor::cat(vs, 0) })
        }
        LayerKv::Host { .. } => {
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            for &(kv, pad, len) in parts {
                let LayerKv::Host { k, v } = kv else { return Err(Error::Input("caches of different kernels cannot be joined".into())) };
                for (rows, out) in [(k, &mut ks), (v, &mut vs)] {
                    for row in rows {
                        out.push(if pad == 0 {
                            row.clone()
                        } else {
                            // [positions, width] with `pad` zero positions in front.
                            let width = row.len() / len.max(1);
                            let mut buf = vec![0.0f32; pad * width];
                            buf.extend_from_slice(row);
                            Arc::new(buf)
                        });
                    }
                }
            }
            Ok(LayerKv::Host { k: ks, v: vs })
        }
    }
}

