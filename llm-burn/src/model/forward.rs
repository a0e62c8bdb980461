//! [`Decoder::forward`] in named steps, in the order they run: step inputs (positions, masks,
//! RoPE), attention (its output is the PAS site; the shared-prefix merge), row steering, the
//! MLP (each projection with its LoRA adapter), and the head.
//!
//! Every step but the large matrix products has two kernels ([`Kernels`]): plain-buffer CPU
//! kernels ([`crate::host`]), the default on the CPU backend, and burn tensor operations, for
//! any backend (CUDA, autodiff). Tests check that the two agree.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData, activation};
use pas_core::Steering;
use rand::{Rng, SeedableRng};

use crate::model::cache::{KvCache, LayerKv};
use crate::error::{Error, Result};
use crate::host::{self, AttentionShape, RowKv};
use crate::model::lora::Target;
use crate::model::{ForwardOptions, Kernels, Layer, Decoder, LoraPass, Output};

/// What every layer of one forward step needs.
struct Step<B: Backend> {
    /// Rows.
    b: usize,
    /// New positions per row (shorter rows are left-padded to it).
    s: usize,
    /// Positions cached before this step, shared prefix included.
    past: usize,
    /// The RoPE position of each new token, `[b * s]` (padding: 0).
    positions: Vec<usize>,
    /// Token ids `[b * s]` (padding: 0).
    ids: Vec<i32>,
    /// RoPE tables and masks for the tensor kernels.
    tensor: Option<TensorStep<B>>,
}

/// The tensor kernels' RoPE tables and masks.
struct TensorStep<B: Backend> {
    /// `[b, 1, s, head_dim]`.
    cos: Tensor<B, 4>,
    /// `[b, 1, s, head_dim]`.
    sin: Tensor<B, 4>,
    /// `[b, kv_heads, group * s, own positions]`: true where a query may not look.
    mask: Tensor<B, 4, Bool>,
    /// `[1, 1, prefix]`: padding inside the shared prefix, if any.
    prefix_mask: Option<Tensor<B, 3, Bool>>,
}

/// One layer's steering for a batch: displacements `[batch, 1, heads * head_dim]` of the rows
/// steered at every position, and of the rows steered at the last position only.
type LayerSteering<B> = (Option<Tensor<B, 3>>, Option<Tensor<B, 3>>);

/// A float tensor's values (no copy on the CPU backend when the tensor is not shared).
fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("the model computes in f32")
}

impl<B: Backend> Decoder<B> {
    /// Runs new tokens through the model, appending them to `cache`.
    ///
    /// Rows may differ in length: shorter rows are left-padded for this step and the padding
    /// is masked out (and never counted as a position), so a row gives the same result alone
    /// or in a batch.
    ///
    /// # Shapes
    /// `tokens`: `batch` rows of token ids (the cache's batch, or any for an empty cache).
    /// Returns logits `[batch, vocab]` at each row's last position, and optionally the head
    /// outputs `[batch, heads * head_dim]` per layer there.
    pub fn forward(&self, tokens: &[&[u32]], cache: &mut KvCache<B>, options: ForwardOptions<'_, B>) -> Result<Output<B>> {
        let options = ForwardOptions { lora: options.lora.or(self.attached.as_deref().map(LoraPass::new)), ..options };
        self.check(tokens, cache, &options)?;
        let c = &self.config;
        let step = self.step_inputs(tokens, cache);
        let (b, width) = (step.b, c.heads * c.head_dim);
        let mut x = self.embed.rows(&step.ids, &self.device).reshape([b, step.s, c.hidden]); // [b, s, hidden]
        let mut captured = options.capture.then(|| Vec::with_capacity(c.layers));
        for (l, layer) in self.layers.iter().enumerate() {
            // Only the last position's output of the last layer is read (its keys and values
            // are cached all the same): from its attention on, that layer runs on it alone.
            let last_only = l + 1 == c.layers && step.s > 1;
            let hn = self.rms_norm(x.clone(), &layer.input_norm);
            let heads = self.attention(l, layer, hn, &step, cache, options.lora, last_only)?; // [b, s', heads * head_dim]
            let s = heads.dims()[1];
            if last_only {
                x = x.narrow(1, step.s - 1, 1);
            }
            if let Some(cap) = captured.as_mut() {
                cap.push(heads.clone().narrow(1, s - 1, 1).reshape([b, width])); // [b, heads * head_dim]
            }
            let heads = self.steer(heads, l, options.steering);
            x = x + self.proj(heads, l, Target::O, layer, options.lora);
            if let Some(bias) = options.o_proj_bias.and_then(|o| o.layers[l].as_ref()) {
                x = x + bias.clone().reshape([1, 1, c.hidden]).expand([b, s, c.hidden]);
            }
            let hn = self.rms_norm(x.clone(), &layer.post_norm);
            x = x + self.mlp(hn, l, layer, options.lora);
        }
        Ok(Output { logits: self.head(x), heads: captured })
    }

    /// Refuses inputs the model cannot run.
    fn check(&self, tokens: &[&[u32]], cache: &KvCache<B>, options: &ForwardOptions<'_, B>) -> Result<()> {
        let c = &self.config;
        let b = tokens.len();
        if b == 0 || tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::Input("every row needs at least one token".into()));
        }
        if let Some(&t) = tokens.iter().flat_map(|t| t.iter()).find(|&&t| t as usize >= c.vocab) {
            return Err(Error::Input(format!("token id {t} is outside the vocabulary ({})", c.vocab)));
        }
        if !cache.is_empty() && cache.batch() != b {
            return Err(Error::Input(format!("{b} rows continue a cache of {} rows", cache.batch())));
        }
        let steering = options.steering;
        if steering.len() > 1 && steering.len() != b {
            return Err(Error::Input(format!("{} steerings for {b} rows (give none, one, or one per row)", steering.len())));
        }
        if let Some(st) = steering.iter().find(|st| st.geometry() != c.geometry()) {
            return Err(Error::Input(format!("steering for {} on a model of {}", st.geometry(), c.geometry())));
        }
        if let Some(pass) = options.lora {
            if pass.lora.num_layers() != c.layers {
                return Err(Error::Input(format!("adapters for {} layers on a model of {}", pass.lora.num_layers(), c.layers)));
            }
            if !(0.0..1.0).contains(&pass.dropout) {
                return Err(Error::Input(format!("LoRA dropout must be in [0, 1), not {}", pass.dropout)));
            }
        }
        let host = |kv: &Option<LayerKv<B>>| matches!(kv, Some(LayerKv::Host { .. }));
        let tensor = |kv: &Option<LayerKv<B>>| matches!(kv, Some(LayerKv::Tensor { .. }));
        let foreign = match self.kernels {
            Kernels::Host => cache.layers.iter().chain(&cache.shared).any(tensor),
            Kernels::Tensor => cache.layers.iter().chain(&cache.shared).any(host),
        };
        if foreign {
            return Err(Error::Input("this cache was filled by a model running other kernels".into()));
        }
        Ok(())
    }

    /// Step inputs: left-pads the rows, records which positions are real in `cache`, and
    /// gives each token its position (real tokens only are counted).
    fn step_inputs(&self, tokens: &[&[u32]], cache: &mut KvCache<B>) -> Step<B> {
        let b = tokens.len();
        let s = tokens.iter().map(|t| t.len()).max().unwrap_or(0);
        if cache.valid.is_empty() {
            cache.valid = vec![Vec::new(); b];
        }
        let past = cache.len();
        let mut ids = Vec::with_capacity(b * s);
        let mut positions = Vec::with_capacity(b * s);
        for (r, row) in tokens.iter().enumerate() {
            let pad = s - row.len();
            let mut pos = cache.valid[r].iter().filter(|v| **v).count();
            for i in 0..s {
                let real = i >= pad;
                ids.push(if real { row[i - pad] as i32 } else { 0 });
                positions.push(if real { pos } else { 0 });
                cache.valid[r].push(real);
                pos += usize::from(real);
            }
        }
        let tensor = (self.kernels == Kernels::Tensor).then(|| self.tensor_step(b, s, past, &positions, cache));
        Step { b, s, past, positions, ids, tensor }
    }

    /// RoPE tables and masks for the tensor kernels.
    fn tensor_step(&self, b: usize, s: usize, past: usize, positions: &[usize], cache: &KvCache<B>) -> TensorStep<B> {
        let c = &self.config;
        let hd = c.head_dim;
        let (mut cos, mut sin) = (Vec::with_capacity(b * s * hd), Vec::with_capacity(b * s * hd));
        for &p in positions {
            // Rotate-half layout: the same angles for both halves of the head.
            let start = cos.len();
            for f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            cos.extend_from_within(start..);
            sin.extend_from_within(start..);
        }
        // Query heads are grouped per key/value head (rows g * s + i), so the mask repeats
        // over the group. The shared prefix (if any) is attended separately: this mask
        // covers the rows' own positions, `shared_len..`.
        let group = c.heads / c.kv_heads;
        let (sp, t_all) = (cache.shared_len, past + s);
        let t_own = t_all - sp;
        let mut mask = Vec::with_capacity(b * group * s * t_own);
        for r in 0..b {
            let row_start = mask.len();
            for i in 0..s {
                for j in sp..t_all {
                    mask.push(j > past + i || !cache.valid[r][j]);
                }
            }
            let row: Vec<bool> = mask[row_start..].to_vec();
            for _ in 1..group {
                mask.extend_from_slice(&row);
            }
        }
        let dev = &self.device;
        let prefix_pad: Vec<bool> = cache.valid.first().map_or(Vec::new(), |v| v[..sp].iter().map(|x| !x).collect());
        TensorStep {
            cos: Tensor::from_data(TensorData::new(cos, [b, 1, s, hd]), dev),
            sin: Tensor::from_data(TensorData::new(sin, [b, 1, s, hd]), dev),
            mask: Tensor::<B, 4, Bool>::from_data(TensorData::new(mask, [b, 1, group * s, t_own]), dev).expand([b, c.kv_heads, group * s, t_own]),
            prefix_mask: prefix_pad.iter().any(|p| *p).then(|| Tensor::from_data(TensorData::new(prefix_pad, [1, 1, sp]), dev)),
        }
    }

    /// RMS norm over the last axis. `x`: `[b, s, hidden]`.
    pub(crate) fn rms_norm(&self, x: Tensor<B, 3>, w: &Tensor<B, 1>) -> Tensor<B, 3> {
        let [b, s, h] = x.dims();
        match self.kernels {
            Kernels::Host => {
                let out = host::rms_norm(&to_vec(x), &to_vec(w.clone()), self.config.rms_eps as f32);
                Tensor::from_data(TensorData::new(out, [b, s, h]), &self.device)
            }
            Kernels::Tensor => {
                let var = x.clone().powi_scalar(2).mean_dim(2); // [b, s, 1]
                let inv = (var + self.config.rms_eps).sqrt().recip();
                x * inv.expand([b, s, h]) * w.clone().reshape([1, 1, h]).expand([b, s, h])
            }
        }
    }

    /// A projection with its adapter (if any): `x·W (+ bias) + scale · (drop(x)·A)·B`.
    /// `x`: `[b, s, in]`; returns `[b, s, out]`.
    pub(crate) fn proj(&self, x: Tensor<B, 3>, l: usize, t: Target, layer: &Layer<B>, lora: Option<LoraPass<'_, B>>) -> Tensor<B, 3> {
        let (w, bias) = (layer.w(t), layer.b(t));
        let base = |x: Tensor<B, 3>| {
            let [b, s, i] = x.dims();
            let o = w.out_dim();
            let y = self.mm(x.reshape([b * s, i]), w);
            let y = match bias {
                Some(bias) => y + bias.clone().reshape([1, o]).expand([b * s, o]),
                None => y,
            };
            y.reshape([b, s, o])
        };
        let Some(pass) = lora else { return base(x) };
        let Some(ad) = pass.lora.get(l, t) else { return base(x) };
        let [bb, ss, i] = x.dims();
        let o = w.out_dim();
        let x2 = x.clone().reshape([bb * ss, i]);
        let x2 = if pass.dropout > 0.0 {
            let keep = 1.0 - pass.dropout;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(pass.seed ^ ((l as u64) << 32 | t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let m: Vec<f32> = (0..bb * ss * i).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
            x2 * Tensor::<B, 2>::from_data(TensorData::new(m, [bb * ss, i]), &self.device)
        } else {
            x2
        };
        let delta = x2.matmul(ad.a.clone()).matmul(ad.b.clone()) * pass.lora.scale();
        base(x) + delta.reshape([bb, ss, o])
    }

    /// Self-attention of layer `l`: projections, RoPE, the cache, and attention over the
    /// shared prefix and each row's own positions. `hn`: `[b, s, hidden]` (normed). Returns
    /// the head outputs `[b, s, heads * head_dim]`, the input of `o_proj` (the PAS site), or
    /// with `last_only` those of the last position, `[b, 1, heads * head_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn attention(&self, l: usize, layer: &Layer<B>, hn: Tensor<B, 3>, step: &Step<B>, cache: &mut KvCache<B>, lora: Option<LoraPass<'_, B>>, last_only: bool) -> Result<Tensor<B, 3>> {
        let k = self.proj(hn.clone(), l, Target::K, layer, lora); // [b, s, kv_heads * hd]
        let v = self.proj(hn.clone(), l, Target::V, layer, lora);
        match &step.tensor {
            None => {
                let hq = if last_only { hn.narrow(1, step.s - 1, 1) } else { hn };
                let q = self.proj(hq, l, Target::Q, layer, lora); // [b, s', heads * hd]
                self.attention_host(l, q, k, v, step, cache)
            }
            Some(ts) => {
                let q = self.proj(hn, l, Target::Q, layer, lora); // [b, s, heads * hd]
                let out = self.attention_tensor(l, q, k, v, step, ts, cache);
                Ok(if last_only { out.narrow(1, step.s - 1, 1) } else { out })
            }
        }
    }

    /// [`Decoder::attention`] on the host kernels; `q` holds the queries of all `s` new
    /// positions, or of the last one only.
    fn attention_host(&self, l: usize, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, step: &Step<B>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        let c = &self.config;
        let (b, s, hd) = (step.b, step.s, c.head_dim);
        let kv_width = c.kv_heads * hd;
        let queries = q.dims()[1];
        let (mut q, mut k, v) = (to_vec(q), to_vec(k), to_vec(v));
        let q_positions: Vec<usize> = step.positions.chunks(s).flat_map(|p| &p[s - queries..]).copied().collect();
        host::rope(&mut q, &q_positions, &self.inv_freq, hd);
        host::rope(&mut k, &step.positions, &self.inv_freq, hd);
        let KvCache { shared, layers, valid, .. } = cache;
        let slot = layers[l].get_or_insert_with(|| LayerKv::Host { k: (0..b).map(|_| Arc::default()).collect(), v: (0..b).map(|_| Arc::default()).collect() });
        let LayerKv::Host { k: ck, v: cv } = slot else { unreachable!("checked: the cache holds host buffers") };
        for r in 0..b {
            let span = r * s * kv_width..(r + 1) * s * kv_width;
            Arc::make_mut(&mut ck[r]).extend_from_slice(&k[span.clone()]);
            Arc::make_mut(&mut cv[r]).extend_from_slice(&v[span]);
        }
        let prefix = match &shared[l] {
            Some(LayerKv::Host { k, v }) => Some((k[0].as_slice(), v[0].as_slice())),
            _ => None,
        };
        let rows: Vec<RowKv<'_>> = (0..b).map(|r| RowKv { prefix, own: (ck[r].as_slice(), cv[r].as_slice()), valid: &valid[r] }).collect();
        // The queries are the last `queries` of the step's positions.
        let shape = AttentionShape { heads: c.heads, kv_heads: c.kv_heads, head_dim: hd, seq: queries, past: step.past + s - queries };
        let out = host::attention(&q, &rows, shape);
        Ok(Tensor::from_data(TensorData::new(out, [b, queries, c.heads * hd]), &self.device))
    }

    /// [`Decoder::attention`] on tensor operations. Grouped-query attention without copying
    /// keys and values per query head: the `group` query heads of each key/value head are
    /// stacked along the query axis. A shared prefix is attended by every row's queries in
    /// one product and merged with the rows' own part by log-sum-exp.
    #[allow(clippy::too_many_arguments)]
    fn attention_tensor(&self, l: usize, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, step: &Step<B>, ts: &TensorStep<B>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let c = &self.config;
        let (b, s, hd, nh, nkv) = (step.b, step.s, c.head_dim, c.heads, c.kv_heads);
        let rope = |x: Tensor<B, 4>, heads: usize| -> Tensor<B, 4> {
            let half = hd / 2;
            let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
            x * ts.cos.clone().expand([b, heads, s, hd]) + rotated * ts.sin.clone().expand([b, heads, s, hd])
        };
        let q = rope(q.reshape([b, s, nh, hd]).swap_dims(1, 2), nh); // [b, nh, s, hd]
        let k = rope(k.reshape([b, s, nkv, hd]).swap_dims(1, 2), nkv); // [b, nkv, s, hd]
        let v = v.reshape([b, s, nkv, hd]).swap_dims(1, 2);
        let (k, v) = match cache.layers[l].take() {
            Some(LayerKv::Tensor { k: pk, v: pv }) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)), // [b, nkv, t, hd]
            _ => (k, v),
        };
        cache.layers[l] = Some(LayerKv::Tensor { k: k.clone(), v: v.clone() });
        let scale = 1.0 / (hd as f64).sqrt();
        let group = nh / nkv;
        let gs = group * s;
        let t_own = k.dims()[2];
        let qg = q.reshape([b, nkv, gs, hd]); // [b, nkv, gs, hd]
        let own_scores = (qg.clone().matmul(k.swap_dims(2, 3)) * scale).mask_fill(ts.mask.clone(), f32::MIN); // [b, nkv, gs, t_own]
        let attended = match &cache.shared[l] {
            Some(LayerKv::Tensor { k: kp, v: vp }) => {
                let sp = kp.dims()[2];
                let n = b * gs;
                let q1 = qg.swap_dims(0, 1).reshape([nkv, n, hd]); // [nkv, b*gs, hd]
                let s1 = q1.matmul(kp.clone().reshape([nkv, sp, hd]).swap_dims(1, 2)) * scale; // [nkv, n, prefix]
                let s1 = match &ts.prefix_mask {
                    Some(m) => s1.mask_fill(m.clone().expand([nkv, n, sp]), f32::MIN),
                    None => s1,
                };
                let m1 = s1.clone().max_dim(2); // [nkv, n, 1]
                let e1 = (s1 - m1.clone().expand([nkv, n, sp])).exp();
                let l1 = e1.clone().sum_dim(2); // [nkv, n, 1]
                let o1 = e1.matmul(vp.clone().reshape([nkv, sp, hd])); // [nkv, n, hd]
                let rows = |t: Tensor<B, 3>, w: usize| t.reshape([nkv, b, gs, w]).swap_dims(0, 1); // [b, nkv, gs, w]
                let (o1, m1, l1) = (rows(o1, hd), rows(m1, 1), rows(l1, 1));
                let m2 = own_scores.clone().max_dim(3); // [b, nkv, gs, 1]
                let m = m1.clone().max_pair(m2);
                let e2 = (own_scores - m.clone().expand([b, nkv, gs, t_own])).exp();
                let l2 = e2.clone().sum_dim(3);
                let o2 = e2.matmul(v); // [b, nkv, gs, hd]
                let c1 = (m1 - m).exp(); // [b, nkv, gs, 1]
                let denom = l1 * c1.clone() + l2;
                (o1 * c1.expand([b, nkv, gs, hd]) + o2) / denom.expand([b, nkv, gs, hd])
            }
            _ => activation::softmax(own_scores, 3).matmul(v), // [b, nkv, gs, hd]
        };
        attended.reshape([b, nh, s, hd]).swap_dims(1, 2).reshape([b, s, nh * hd]) // [b, s, nh * hd]
    }

    /// Adds each row's steering of layer `l` to its head outputs `[b, s, heads * head_dim]`:
    /// at every position or at the last only, as the steering says.
    fn steer(&self, heads: Tensor<B, 3>, l: usize, steering: &[&Steering]) -> Tensor<B, 3> {
        let [b, s, width] = heads.dims();
        let Some((all, last)) = self.layer_steering(l, b, steering) else { return heads };
        let mut heads = heads;
        if let Some(all) = all {
            heads = heads + all.expand([b, s, width]);
        }
        if let Some(last) = last {
            let tail = heads.clone().narrow(1, s - 1, 1) + last;
            heads = if s > 1 { Tensor::cat(vec![heads.narrow(1, 0, s - 1), tail], 1) } else { tail };
        }
        heads
    }

    /// The displacements of layer `l` for `b` rows (one steering for all, or one per row).
    fn layer_steering(&self, l: usize, b: usize, steering: &[&Steering]) -> Option<LayerSteering<B>> {
        let width = self.config.heads * self.config.head_dim;
        let pick = |r: usize| if steering.len() == 1 { steering[0] } else { steering[r] };
        if steering.is_empty() || (0..b).all(|r| pick(r).layer(l).is_none()) {
            return None;
        }
        // Rows steered at every token of this pass (`All`, `Answer`), or at the last only.
        let build = |every_token: bool| -> Option<Tensor<B, 3>> {
            let mut any = false;
            let mut v = vec![0.0f32; b * width];
            for r in 0..b {
                let st = pick(r);
                if st.positions().every_token() == every_token
                    && let Some(d) = st.layer(l)
                {
                    v[r * width..(r + 1) * width].copy_from_slice(d);
                    any = true;
                }
            }
            any.then(|| Tensor::<B, 3>::from_data(TensorData::new(v, [b, 1, width]), &self.device))
        };
        Some((build(true), build(false)))
    }

    /// The gated MLP: `down(silu(gate(x)) * up(x))`. `hn`: `[b, s, hidden]` (normed).
    fn mlp(&self, hn: Tensor<B, 3>, l: usize, layer: &Layer<B>, lora: Option<LoraPass<'_, B>>) -> Tensor<B, 3> {
        let gate = self.proj(hn.clone(), l, Target::Gate, layer, lora); // [b, s, intermediate]
        let up = self.proj(hn, l, Target::Up, layer, lora);
        let act = match self.kernels {
            Kernels::Host => {
                let dims = gate.dims();
                let mut g = to_vec(gate);
                host::silu_mul(&mut g, &to_vec(up));
                Tensor::from_data(TensorData::new(g, dims), &self.device)
            }
            Kernels::Tensor => activation::silu(gate) * up,
        };
        self.proj(act, l, Target::Down, layer, lora)
    }

    /// The final norm and vocabulary logits at each row's last position. `x`:
    /// `[b, s, hidden]`; returns `[b, vocab]`.
    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, s, h] = x.dims();
        let last = self.rms_norm(x.narrow(1, s - 1, 1), &self.norm).reshape([b, h]);
        self.lm_head.project(last, self.dtype.burn()) // [b, vocab]
    }
}
