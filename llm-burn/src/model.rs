//! A Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2, TinyLlama) on burn, generic
//! over the backend. The model is immutable: the KV cache and the steering are values passed
//! into [`Llama::forward`].

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData, activation};
use pas_core::{Positions, Steering};

use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};

use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::lora::{Lora, Target};
use crate::weights::{WeightFiles, transpose};

/// The name table of a layer, relative to `model.layers.{i}.`: the two norms (`[hidden]`);
/// every projection of [`Target::ALL`] as `{target.module()}.weight` (`[out, in]` in the file,
/// [`Target::dims`]); and, when the config has q/k/v biases, `{module}.bias` (`[out]`) of these.
const NORMS: [&str; 2] = ["input_layernorm.weight", "post_attention_layernorm.weight"];
/// The projections that carry a bias when the config says so (Qwen2).
const BIASED: [Target; 3] = [Target::Q, Target::K, Target::V];

/// One decoder layer's weights; linear weights are stored `[in, out]`.
#[derive(Debug, Clone)]
struct Layer<B: Backend> {
    input_norm: Tensor<B, 1>,
    post_norm: Tensor<B, 1>,
    /// The projections in [`Target::ALL`] order.
    linear: [Tensor<B, 2>; 7],
    /// Biases of [`BIASED`], in that order.
    bias: [Option<Tensor<B, 1>>; 3],
}

impl<B: Backend> Layer<B> {
    fn w(&self, t: Target) -> &Tensor<B, 2> {
        &self.linear[t as usize]
    }

    fn b(&self, t: Target) -> Option<&Tensor<B, 1>> {
        BIASED.iter().position(|&x| x == t).and_then(|k| self.bias[k].as_ref())
    }
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Llama<B: Backend> {
    config: LlamaConfig,
    /// `[vocab, hidden]`.
    embed: Tensor<B, 2>,
    /// `[vocab, hidden]` (the embedding when tied); used transposed.
    lm_head: Tensor<B, 2>,
    norm: Tensor<B, 1>,
    layers: Vec<Layer<B>>,
    inv_freq: Vec<f32>,
    device: B::Device,
}

/// Keys and values of the positions seen so far, per layer, and which of them are real
/// tokens (not padding) in each row. A fresh cache per run; [`KvCache::repeat`] shares one
/// computed prefix across many continuations without copying it.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Per layer: a prefix shared by every row, keys and values
    /// `[1, kv_heads, prefix, head_dim]` (set by [`KvCache::repeat`]).
    shared: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// Per layer: each row's own keys and values `[batch, kv_heads, positions, head_dim]`.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// Per row: whether each cached position (shared prefix first) is a real token.
    valid: Vec<Vec<bool>>,
    /// Positions in the shared prefix.
    shared_len: usize,
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
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct Output<B: Backend> {
    /// Logits at the last position of each row, `[batch, vocab]`.
    pub logits: Tensor<B, 2>,
    /// If asked for: per layer, the head outputs (input of `o_proj`, before steering) at the
    /// last position, `[batch, heads * head_dim]`.
    pub heads: Option<Vec<Tensor<B, 2>>>,
}

/// A steering folded through `o_proj`: per layer, `W_o · d` added to the residual stream
/// after the attention output, at every position of every row (the official PAS bias).
#[derive(Debug, Clone)]
pub struct OProjBias<B: Backend> {
    /// Per layer: `[hidden]` or nothing.
    layers: Vec<Option<Tensor<B, 1>>>,
}

/// Options of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions<'a, B: Backend> {
    /// No steering (empty), one for every row, or one per row (in head space).
    pub steering: &'a [&'a Steering],
    /// A steering already folded through `o_proj` (see [`Llama::o_proj_bias`]).
    pub o_proj_bias: Option<&'a OProjBias<B>>,
    /// Capture the head outputs at the last position.
    pub capture: bool,
    /// LoRA adapters added to their projections (none: the base model).
    pub lora: Option<LoraPass<'a, B>>,
}

impl<B: Backend> Default for ForwardOptions<'_, B> {
    fn default() -> Self {
        ForwardOptions { steering: &[], o_proj_bias: None, capture: false, lora: None }
    }
}

/// Adapters for one forward pass, with LoRA dropout on their input when training.
#[derive(Debug)]
pub struct LoraPass<'a, B: Backend> {
    /// The adapters.
    pub lora: &'a Lora<B>,
    /// Probability of zeroing an input of an adapter (PEFT's `lora_dropout`); 0 at inference.
    pub dropout: f64,
    /// Seed of this pass's dropout masks (the same seed gives the same masks).
    pub seed: u64,
}

impl<B: Backend> Clone for LoraPass<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LoraPass<'_, B> {}

impl<'a, B: Backend> LoraPass<'a, B> {
    /// The adapters without dropout.
    pub fn new(lora: &'a Lora<B>) -> Self {
        LoraPass { lora, dropout: 0.0, seed: 0 }
    }
}

/// One layer's steering for a batch: displacements `[batch, 1, heads * head_dim]` of the rows
/// steered at every position, and of the rows steered at the last position only.
type LayerSteering<B> = (Option<Tensor<B, 3>>, Option<Tensor<B, 3>>);

impl<B: Backend> Llama<B> {
    /// Loads a Hugging Face folder (`config.json` and safetensors weights). Every tensor of
    /// the table must be present with its shape, and every tensor in the files must be used
    /// (except `lm_head.weight` of a tied model and rotary caches).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = LlamaConfig::load(&dir.join("config.json"))?;
        let files = WeightFiles::open(dir)?;
        let c = &config;
        let h = c.hidden;
        let mut used = std::collections::BTreeSet::new();
        let mut read = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let v = files.read(&name, shape)?;
            used.insert(name);
            Ok(v)
        };
        let t1 = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
        };
        // Linear weights are [out, in] in the file; stored [in, out] for `x.matmul(w)`.
        let lin = |v: Vec<f32>, out: usize, inp: usize| Tensor::<B, 2>::from_data(TensorData::new(transpose(&v, out, inp), [inp, out]), device);
        let embed_v = read("model.embed_tokens.weight".into(), &[c.vocab, h])?;
        let embed = Tensor::<B, 2>::from_data(TensorData::new(embed_v, [c.vocab, h]), device);
        let lm_head = if c.tied {
            embed.clone()
        } else {
            Tensor::<B, 2>::from_data(TensorData::new(read("lm_head.weight".into(), &[c.vocab, h])?, [c.vocab, h]), device)
        };
        let norm = t1(read("model.norm.weight".into(), &[h])?);
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let [input_norm, post_norm] = NORMS.map(&p);
            let (input_norm, post_norm) = (t1(read(input_norm, &[h])?), t1(read(post_norm, &[h])?));
            let mut linear = Vec::with_capacity(Target::ALL.len());
            for t in Target::ALL {
                let (inp, out) = t.dims(c);
                linear.push(lin(read(p(&format!("{}.weight", t.module())), &[out, inp])?, out, inp));
            }
            let mut bias = [None, None, None];
            if c.qkv_bias {
                for (slot, t) in bias.iter_mut().zip(BIASED) {
                    *slot = Some(t1(read(p(&format!("{}.bias", t.module())), &[t.dims(c).1])?));
                }
            }
            let linear = linear.try_into().unwrap_or_else(|_| unreachable!("one weight per target"));
            layers.push(Layer { input_norm, post_norm, linear, bias });
        }
        let unused: Vec<&str> = files
            .names()
            .filter(|n| {
                let allowed = (c.tied && *n == "lm_head.weight") || n.contains("rotary_emb.inv_freq");
                !used.contains(*n) && !allowed
            })
            .collect();
        if let Some(name) = unused.first() {
            return Err(Error::Tensor { name: (*name).to_owned(), message: format!("unused by the model ({} unused tensors)", unused.len()) });
        }
        let inv_freq = rope_inv_freq(c);
        Ok(Llama { config, embed, lm_head, norm, layers, inv_freq, device: device.clone() })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A fresh cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.config.layers)
    }

    fn rms_norm(&self, x: Tensor<B, 3>, w: &Tensor<B, 1>) -> Tensor<B, 3> {
        let [b, s, h] = x.dims();
        let var = x.clone().powi_scalar(2).mean_dim(2); // [b, s, 1]
        let inv = (var + self.config.rms_eps).sqrt().recip();
        x * inv.expand([b, s, h]) * w.clone().reshape([1, 1, h]).expand([b, s, h])
    }

    fn linear(x: Tensor<B, 3>, w: &Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
        let [b, s, i] = x.dims();
        let o = w.dims()[1];
        let y = x.reshape([b * s, i]).matmul(w.clone());
        let y = match bias {
            Some(bias) => y + bias.clone().reshape([1, o]).expand([b * s, o]),
            None => y,
        };
        y.reshape([b, s, o])
    }

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
        let c = &self.config;
        let b = tokens.len();
        let s = tokens.iter().map(|t| t.len()).max().unwrap_or(0);
        if b == 0 || s == 0 || tokens.iter().any(|t| t.is_empty()) {
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
        if cache.valid.is_empty() {
            cache.valid = vec![Vec::new(); b];
        }
        let past = cache.len();
        let t_all = past + s;
        // Left-pad this step; positions count real tokens only.
        let mut ids = Vec::with_capacity(b * s);
        let mut cos = Vec::with_capacity(b * s * c.head_dim);
        let mut sin = Vec::with_capacity(b * s * c.head_dim);
        for (r, row) in tokens.iter().enumerate() {
            let pad = s - row.len();
            let mut pos = cache.valid[r].iter().filter(|v| **v).count();
            for i in 0..s {
                let real = i >= pad;
                ids.push(if real { row[i - pad] as i32 } else { 0 });
                cache.valid[r].push(real);
                let p = if real { pos } else { 0 };
                // Rotate-half layout: the same angles for both halves of the head.
                let start = cos.len();
                for f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
                cos.extend_from_within(start..);
                sin.extend_from_within(start..);
                if real {
                    pos += 1;
                }
            }
        }
        // Mask [b, 1, group * s, t]: true where a query may not look. Query heads are
        // grouped per key/value head (rows g * s + i), so the mask repeats over the group.
        let group = c.heads / c.kv_heads;
        // The shared prefix (if any) is attended separately: this mask covers the rows' own
        // positions, `shared_len..t_all`.
        let sp = cache.shared_len;
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
        let (hd, nh, nkv) = (c.head_dim, c.heads, c.kv_heads);
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [b * s]), dev);
        let cos = Tensor::<B, 4>::from_data(TensorData::new(cos, [b, 1, s, hd]), dev);
        let sin = Tensor::<B, 4>::from_data(TensorData::new(sin, [b, 1, s, hd]), dev);
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(mask, [b, 1, group * s, t_own]), dev).expand([b, nkv, group * s, t_own]);
        // Padding inside the shared prefix (none when it came from one row): `[1, 1, prefix]`.
        let prefix_pad: Vec<bool> = cache.valid.first().map_or(Vec::new(), |v| v[..sp].iter().map(|x| !x).collect());
        let prefix_mask = prefix_pad
            .iter()
            .any(|p| *p)
            .then(|| Tensor::<B, 3, Bool>::from_data(TensorData::new(prefix_pad.clone(), [1, 1, sp]), dev));
        let scale = 1.0 / (hd as f64).sqrt();
        let rope = |x: Tensor<B, 4>, heads: usize| -> Tensor<B, 4> {
            let half = hd / 2;
            let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
            x * cos.clone().expand([b, heads, s, hd]) + rotated * sin.clone().expand([b, heads, s, hd])
        };
        let steer_rows = |l: usize| -> Option<LayerSteering<B>> {
            let width = c.heads * hd;
            let pick = |r: usize| if steering.len() == 1 { steering[0] } else { steering[r] };
            if steering.is_empty() || (0..b).all(|r| pick(r).layer(l).is_none()) {
                return None;
            }
            let build = |which: Positions| -> Option<Tensor<B, 3>> {
                let mut any = false;
                let mut v = vec![0.0f32; b * width];
                for r in 0..b {
                    let st = pick(r);
                    if st.positions() == which
                        && let Some(d) = st.layer(l)
                    {
                        v[r * width..(r + 1) * width].copy_from_slice(d);
                        any = true;
                    }
                }
                any.then(|| Tensor::<B, 3>::from_data(TensorData::new(v, [b, 1, width]), dev))
            };
            Some((build(Positions::All), build(Positions::Last)))
        };

        if let Some(pass) = options.lora {
            if pass.lora.num_layers() != c.layers {
                return Err(Error::Input(format!("adapters for {} layers on a model of {}", pass.lora.num_layers(), c.layers)));
            }
            if !(0.0..1.0).contains(&pass.dropout) {
                return Err(Error::Input(format!("LoRA dropout must be in [0, 1), not {}", pass.dropout)));
            }
        }
        // A projection with its adapter (if any): `x·W (+ bias) + scale · (drop(x)·A)·B`.
        let proj = |x: Tensor<B, 3>, l: usize, t: Target, layer: &Layer<B>| -> Tensor<B, 3> {
            let (w, bias) = (layer.w(t), layer.b(t));
            let Some(pass) = options.lora else { return Self::linear(x, w, bias) };
            let Some(ad) = pass.lora.get(l, t) else { return Self::linear(x, w, bias) };
            let [bb, ss, i] = x.dims();
            let o = w.dims()[1];
            let x2 = x.clone().reshape([bb * ss, i]);
            let x2 = if pass.dropout > 0.0 {
                let keep = 1.0 - pass.dropout;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(pass.seed ^ ((l as u64) << 32 | t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let m: Vec<f32> = (0..bb * ss * i).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
                x2 * Tensor::<B, 2>::from_data(TensorData::new(m, [bb * ss, i]), dev)
            } else {
                x2
            };
            let delta = x2.matmul(ad.a.clone()).matmul(ad.b.clone()) * pass.lora.scale();
            Self::linear(x, w, bias) + delta.reshape([bb, ss, o])
        };
        let mut x = self.embed.clone().select(0, ids).reshape([b, s, c.hidden]); // [b, s, hidden]
        let mut captured = options.capture.then(|| Vec::with_capacity(c.layers));
        for (l, layer) in self.layers.iter().enumerate() {
            let hn = self.rms_norm(x.clone(), &layer.input_norm);
            let q = proj(hn.clone(), l, Target::Q, layer).reshape([b, s, nh, hd]).swap_dims(1, 2); // [b, nh, s, hd]
            let k = proj(hn.clone(), l, Target::K, layer).reshape([b, s, nkv, hd]).swap_dims(1, 2); // [b, nkv, s, hd]
            let v = proj(hn, l, Target::V, layer).reshape([b, s, nkv, hd]).swap_dims(1, 2);
            let q = rope(q, nh);
            let k = rope(k, nkv);
            let (k, v) = match cache.layers[l].take() {
                Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)), // [b, nkv, t, hd]
                None => (k, v),
            };
            cache.layers[l] = Some((k.clone(), v.clone()));
            // Grouped-query attention without copying keys and values per query head: the
            // `group` query heads of each key/value head are stacked along the query axis.
            let gs = group * s;
            let qg = q.reshape([b, nkv, gs, hd]); // [b, nkv, gs, hd]
            let own_scores = (qg.clone().matmul(k.swap_dims(2, 3)) * scale).mask_fill(mask.clone(), f32::MIN); // [b, nkv, gs, t_own]
            let attended = match &cache.shared[l] {
                None => activation::softmax(own_scores, 3).matmul(v), // [b, nkv, gs, hd]
                Some((kp, vp)) => {
                    // Every row's queries against the one shared prefix in a single product,
                    // merged with the rows' own part by log-sum-exp.
                    let n = b * gs;
                    let q1 = qg.swap_dims(0, 1).reshape([nkv, n, hd]); // [nkv, b*gs, hd]
                    let s1 = q1.matmul(kp.clone().reshape([nkv, sp, hd]).swap_dims(1, 2)) * scale; // [nkv, n, prefix]
                    let s1 = match &prefix_mask {
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
            };
            let mut heads = attended.reshape([b, nh, s, hd]).swap_dims(1, 2).reshape([b, s, nh * hd]); // [b, s, nh*hd]: the input of o_proj
            if let Some(cap) = captured.as_mut() {
                cap.push(heads.clone().narrow(1, s - 1, 1).reshape([b, nh * hd]));
            }
            if let Some((all, last)) = steer_rows(l) {
                if let Some(all) = all {
                    heads = heads + all.expand([b, s, nh * hd]);
                }
                if let Some(last) = last {
                    let tail = heads.clone().narrow(1, s - 1, 1) + last;
                    heads = if s > 1 { Tensor::cat(vec![heads.narrow(1, 0, s - 1), tail], 1) } else { tail };
                }
            }
            x = x + proj(heads, l, Target::O, layer);
            if let Some(bias) = options.o_proj_bias.and_then(|o| o.layers[l].as_ref()) {
                x = x + bias.clone().reshape([1, 1, c.hidden]).expand([b, s, c.hidden]);
            }
            let hn = self.rms_norm(x.clone(), &layer.post_norm);
            let gate = activation::silu(proj(hn.clone(), l, Target::Gate, layer));
            let up = proj(hn, l, Target::Up, layer);
            x = x + proj(gate * up, l, Target::Down, layer);
        }
        let last = self.rms_norm(x.narrow(1, s - 1, 1), &self.norm).reshape([b, c.hidden]);
        let logits = last.matmul(self.lm_head.clone().transpose()); // [b, vocab]
        Ok(Output { logits, heads: captured })
    }

    /// A copy of the model with `lora` merged into its weights (`W + scale · A·B`), which
    /// runs at the base model's speed and gives the same logits as passing the adapters to
    /// [`Llama::forward`] (to rounding). The base weights are shared, not copied, where no
    /// adapter sits.
    pub fn merged(&self, lora: &Lora<B>) -> Result<Self> {
        if lora.num_layers() != self.config.layers {
            return Err(Error::Input(format!("adapters for {} layers on a model of {}", lora.num_layers(), self.config.layers)));
        }
        let mut out = self.clone();
        let scale = lora.scale();
        for (l, layer) in out.layers.iter_mut().enumerate() {
            for t in Target::ALL {
                let Some(ad) = lora.get(l, t) else { continue };
                let w = &mut layer.linear[t as usize];
                let delta = ad.a.clone().matmul(ad.b.clone()) * scale;
                if delta.dims() != w.dims() {
                    return Err(Error::Tensor { name: t.peft_name(l, "lora_A·lora_B"), message: format!("{:?}, the weight is {:?}", delta.dims(), w.dims()) });
                }
                *w = w.clone() + delta;
            }
        }
        Ok(out)
    }

    /// The model with every tensor passed through `f`, possibly onto another backend.
    fn map_tensors<C: Backend>(&self, device: &C::Device, f1: impl Fn(Tensor<B, 1>) -> Tensor<C, 1>, f2: impl Fn(Tensor<B, 2>) -> Tensor<C, 2>) -> Llama<C> {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                input_norm: f1(l.input_norm.clone()),
                post_norm: f1(l.post_norm.clone()),
                linear: l.linear.clone().map(&f2),
                bias: l.bias.clone().map(|b| b.map(&f1)),
            })
            .collect();
        Llama {
            config: self.config.clone(),
            embed: f2(self.embed.clone()),
            lm_head: f2(self.lm_head.clone()),
            norm: f1(self.norm.clone()),
            layers,
            inv_freq: self.inv_freq.clone(),
            device: device.clone(),
        }
    }

    /// Folds a steering through each layer's `o_proj`: `W_o · d` per steered layer, computed
    /// once (e.g. per subject and strength) and added after the attention output. Equals
    /// steering in head space at every position ([`Positions::All`]).
    pub fn o_proj_bias(&self, steering: &Steering) -> Result<OProjBias<B>> {
        if steering.geometry() != self.config.geometry() {
            return Err(Error::Input(format!("steering for {} on a model of {}", steering.geometry(), self.config.geometry())));
        }
        if steering.positions() != Positions::All {
            return Err(Error::Input("an o_proj bias steers every position; this steering is for the last only".into()));
        }
        let width = self.config.heads * self.config.head_dim;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                steering.layer(l).map(|d| {
                    let d = Tensor::<B, 2>::from_data(TensorData::new(d.to_vec(), [1, width]), &self.device);
                    d.matmul(layer.w(Target::O).clone()).reshape([self.config.hidden]) // [hidden]
                })
            })
            .collect();
        Ok(OProjBias { layers })
    }

    /// Log-probabilities of `choices` as the next token after each row (rows may differ in
    /// length), under the given steering(s).
    pub fn choice_logprobs(&self, rows: &[&[u32]], steering: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache();
        let out = self.forward(rows, &mut cache, ForwardOptions { steering, ..Default::default() })?;
        logprobs_of(out.logits, choices)
    }

    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping after an
    /// end-of-sequence token (`stop`, or the config's EOS ids when empty).
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32], steering: Option<&Steering>) -> Result<Vec<u32>> {
        let stop: Vec<u32> = if stop.is_empty() { self.config.eos.clone() } else { stop.to_vec() };
        let steer: Vec<&Steering> = steering.into_iter().collect();
        let mut cache = self.new_cache();
        let mut out = Vec::new();
        let mut next: Vec<u32> = prompt.to_vec();
        for _ in 0..max_new {
            let o = self.forward(&[&next], &mut cache, ForwardOptions { steering: &steer, ..Default::default() })?;
            let logits = o.logits.into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}")))?;
            let id = argmax(&logits) as u32;
            out.push(id);
            if stop.contains(&id) {
                break;
            }
            next = vec![id];
        }
        Ok(out)
    }
}

impl<A: AutodiffBackend> Llama<A> {
    /// The model on an autodiff backend, sharing `inner`'s weights (no copy). Its weights
    /// are constants: gradients flow only to tensors that require them (adapters).
    pub fn from_inner(inner: &Llama<A::InnerBackend>) -> Self {
        inner.map_tensors(inner.device(), Tensor::from_inner, Tensor::from_inner)
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// Log-softmax of `[batch, vocab]` logits, at the `choices` ids.
pub fn logprobs_of<B: Backend>(logits: Tensor<B, 2>, choices: &[u32]) -> Result<Vec<Vec<f32>>> {
    let [b, vocab] = logits.dims();
    if let Some(&c) = choices.iter().find(|&&c| c as usize >= vocab) {
        return Err(Error::Input(format!("choice token {c} is outside the vocabulary ({vocab})")));
    }
    let lp = activation::log_softmax(logits, 1).into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}")))?;
    Ok((0..b).map(|r| choices.iter().map(|&c| lp[r * vocab + c as usize]).collect()).collect())
}

/// RoPE inverse frequencies in `f32` as Hugging Face computes them (with Llama-3 scaling).
fn rope_inv_freq(c: &LlamaConfig) -> Vec<f32> {
    let d = c.head_dim;
    let base = c.rope_theta as f32;
    let mut inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
    if let Some(r) = c.rope_scaling {
        let old = r.original_max_position_embeddings;
        let low_wavelen = old / r.low_freq_factor;
        let high_wavelen = old / r.high_freq_factor;
        for f in &mut inv {
            let freq = f64::from(*f);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let scaled = if wavelen < high_wavelen {
                freq
            } else if wavelen > low_wavelen {
                freq / r.factor
            } else {
                let smooth = (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
                (1.0 - smooth) * freq / r.factor + smooth * freq
            };
            *f = scaled as f32;
        }
    }
    inv
}
