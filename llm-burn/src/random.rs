//! Seeded random models of a real model's shapes, written as Hugging Face folders: the
//! paper's setting (Llama-3-8B-Instruct) and the capable model of this project
//! (Qwen2.5-Coder-1.5B-Instruct) tested for shapes, grouped-query attention, RoPE, biases and
//! the chat template without their weights. The outputs mean nothing.
//!
//! The folder holds `config.json` with the real configuration (layers may be fewer),
//! bf16 weights in one safetensors shard per layer plus one for the embeddings (with
//! `model.safetensors.index.json`, as Hugging Face shards them, so that writing and loading
//! stay near one layer's size above the model's), a byte-level BPE `tokenizer.json` of the
//! real vocabulary size (256 bytes, merges up to 128,000 regular tokens, 256 special tokens in
//! Llama-3's places, or Qwen's first three) and `tokenizer_config.json` with the Llama-3
//! Instruct chat template (BOS, `<|start_header_id|>`, `<|eot_id|>` ending each turn) or
//! Qwen2.5's (ChatML, `<|im_end|>` ending each turn).
//!
//! # Example
//!
//! ```no_run
//! use llm_burn::random::{Shape, write_model};
//!
//! // Llama-3-8B's shapes with 2 of its 32 layers (about 3 GB of bf16 weights).
//! write_model("/tmp/llama3-2l".as_ref(), &Shape::llama_3_8b().with_layers(2), 7)?;
//! # Ok::<(), llm_burn::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::model::config::Architecture;
use crate::quant::TensorType;
use crate::error::{Error, Result};

/// The configuration of a random model.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Residual width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size (regular tokens, then [`SPECIAL_TOKENS`] special ones).
    pub vocab: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama-3.1's RoPE scaling (factor 8, low 1, high 4, original context 8,192).
    pub rope_scaling: bool,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// The architecture: its row of the table decides biases and the GGUF layout; Qwen2 gets
    /// Qwen's special tokens and its ChatML template, every other family Llama-3's.
    pub arch: Architecture,
}

/// Special tokens at the end of the vocabulary, as in Llama-3.
pub const SPECIAL_TOKENS: usize = 256;

/// Names of the named special tokens by offset from the first special id (Llama-3's); the
/// others are `<|reserved_special_token_K|>`.
const NAMED: [(usize, &str); 7] = [
    (0, "<|begin_of_text|>"),
    (1, "<|end_of_text|>"),
    (4, "<|finetune_right_pad_id|>"),
    (6, "<|start_header_id|>"),
    (7, "<|end_header_id|>"),
    (8, "<|eom_id|>"),
    (9, "<|eot_id|>"),
];

/// Names of Qwen2.5's named special tokens by offset from the first special id.
const QWEN_NAMED: &[(usize, &str)] = &[(0, "<|endoftext|>"), (1, "<|im_start|>"), (2, "<|im_end|>")];

/// Qwen2.5 Instruct's chat template (from the Qwen2.5-Coder GGUF files): ChatML, with its
/// own default system prompt when the conversation has none, and tool calls.
pub const QWEN25_TEMPLATE: &str = include_str!("templates/qwen2.5.jinja");

/// The Llama-3 Instruct chat template (Meta's, as in the 8B-Instruct release).
pub const LLAMA3_TEMPLATE: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

impl Shape {
    /// Llama-3-8B(-Instruct): 32 layers, hidden 4,096, 32 query heads over 8 key/value heads,
    /// MLP 14,336, vocabulary 128,256, RoPE theta 500,000.
    pub fn llama_3_8b() -> Self {
        Shape { hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kv_heads: 8, vocab: 128_256, rope_theta: 500_000.0, rope_scaling: false, rms_eps: 1e-5, arch: Architecture::Llama }
    }

    /// Qwen2.5(-Coder)-1.5B-Instruct: 28 layers, hidden 1,536, 12 query heads over 2 key/value
    /// heads, MLP 8,960, vocabulary 151,936, RoPE theta 1,000,000, q/k/v biases.
    pub fn qwen2_5_1_5b() -> Self {
        Shape { hidden: 1536, intermediate: 8960, layers: 28, heads: 12, kv_heads: 2, vocab: 151_936, rope_theta: 1e6, rope_scaling: false, rms_eps: 1e-6, arch: Architecture::Qwen2 }
    }

    /// Qwen2.5(-Coder)-0.5B-Instruct: 24 layers, hidden 896, 14 query heads over 2 key/value heads.
    pub fn qwen2_5_0_5b() -> Self {
        Shape { hidden: 896, intermediate: 4864, layers: 24, heads: 14, ..Self::qwen2_5_1_5b() }
    }

    /// A model known by name (`llama-3-8b`, `qwen2.5-1.5b`, `qwen2.5-0.5b`).
    pub fn like(name: &str) -> Result<Self> {
        match name {
            "llama-3-8b" => Ok(Self::llama_3_8b()),
            "qwen2.5-1.5b" => Ok(Self::qwen2_5_1_5b()),
            "qwen2.5-0.5b" => Ok(Self::qwen2_5_0_5b()),
            other => Err(Error::Input(format!("unknown model shape `{other}` (known: llama-3-8b, qwen2.5-1.5b, qwen2.5-0.5b)"))),
        }
    }

    /// The name of special token `k` (0-based from the first special id) in this
    /// architecture's vocabulary.
    pub fn special(&self, k: usize) -> String {
        match self.arch {
            Architecture::Qwen2 => QWEN_NAMED.iter().find(|(o, _)| *o == k).map_or_else(|| format!("<|reserved_special_token_{k}|>"), |(_, n)| (*n).to_owned()),
            _ => special_name(k),
        }
    }

    /// Offsets from the first special id of the BOS token, the end-of-turn tokens (the
    /// config's `eos_token_id`) and the tokenizer's EOS token.
    fn special_roles(&self) -> (usize, Vec<usize>, usize) {
        match self.arch {
            Architecture::Qwen2 => (0, vec![2], 2),
            _ => (0, vec![1, 9], 9),
        }
    }

    /// The same with `layers` layers.
    pub fn with_layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// The first special token's id.
    pub fn first_special(&self) -> usize {
        self.vocab - SPECIAL_TOKENS
    }

    /// Parameters of the model.
    pub fn parameters(&self) -> usize {
        let (h, hd) = (self.hidden, self.head_dim());
        let bias = if self.arch.default_qkv_bias() { (self.heads + 2 * self.kv_heads) * hd } else { 0 };
        let attn = h * self.heads * hd * 2 + h * self.kv_heads * hd * 2 + bias;
        let layer = attn + 3 * h * self.intermediate + 2 * h;
        2 * self.vocab * h + h + self.layers * layer
    }

    /// `config.json`.
    pub fn config_json(&self) -> serde_json::Value {
        let s = self.first_special();
        let (bos, eos, _) = self.special_roles();
        let eos: Vec<usize> = eos.iter().map(|e| s + e).collect();
        let mut c = serde_json::json!({
            "architectures": [self.arch.hf_class()], "model_type": self.arch.model_type(), "hidden_size": self.hidden,
            "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim(),
            "vocab_size": self.vocab, "rms_norm_eps": self.rms_eps, "rope_theta": self.rope_theta,
            "tie_word_embeddings": false, "attention_bias": self.arch.default_qkv_bias(), "bos_token_id": s + bos, "eos_token_id": eos,
            "max_position_embeddings": if self.rope_scaling { 131_072 } else { 8192 }, "torch_dtype": "bfloat16"
        });
        if self.rope_scaling {
            c["rope_scaling"] = serde_json::json!({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"});
        }
        c
    }
}

/// GPT-2's byte-to-character map of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let direct = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if direct(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                extra += 1;
                char::from_u32(256 + extra - 1).unwrap_or('?')
            }
        })
        .collect()
}

/// The name of special token `k` (0-based from the first special id).
pub fn special_name(k: usize) -> String {
    NAMED.iter().find(|(o, _)| *o == k).map_or_else(|| format!("<|reserved_special_token_{k}|>"), |(_, n)| (*n).to_owned())
}

/// `tokenizer.json` for `shape`'s vocabulary: the 256 byte tokens, then merges (the option
/// letters `" A"`..`" E"` first, then every pair of bytes, then byte pairs extended by a byte)
/// until the regular vocabulary is full, then the special tokens.
pub fn tokenizer_json(shape: &Shape) -> Result<String> {
    let regular = shape.first_special();
    if regular < 256 + 5 {
        return Err(Error::Input(format!("a vocabulary of {} leaves no room for the byte tokens and the option letters", shape.vocab)));
    }
    let chars = byte_chars();
    let mut vocab: Vec<String> = chars.iter().map(char::to_string).collect();
    let mut seen: std::collections::HashSet<String> = vocab.iter().cloned().collect();
    let mut merges: Vec<(String, String)> = Vec::with_capacity(regular - 256);
    let mut push = |a: String, b: String, vocab: &mut Vec<String>| {
        let t = format!("{a}{b}");
        if vocab.len() < regular && seen.insert(t.clone()) {
            vocab.push(t);
            merges.push((a, b));
        }
    };
    let space = chars[b' ' as usize].to_string();
    for l in ['A', 'B', 'C', 'D', 'E'] {
        push(space.clone(), l.to_string(), &mut vocab);
    }
    'pairs: for a in 0..256 {
        for b in 0..256 {
            if vocab.len() == regular {
                break 'pairs;
            }
            push(chars[a].to_string(), chars[b].to_string(), &mut vocab);
        }
    }
    let mut k = 256 + 5;
    while vocab.len() < regular {
        let pair = vocab[k].clone();
        for c in &chars {
            push(pair.clone(), c.to_string(), &mut vocab);
        }
        k += 1;
    }
    let mut map = serde_json::Map::new();
    for (i, t) in vocab.iter().enumerate() {
        map.insert(t.clone(), i.into());
    }
    let added: Vec<serde_json::Value> = (0..SPECIAL_TOKENS)
        .map(|k| serde_json::json!({"id": regular + k, "content": shape.special(k), "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
    Ok(serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": map, "merges": merges}
    })
    .to_string())
}

/// A seeded stream of uniform values in [-scale, scale] (a 64-bit LCG: fast, reproducible).
struct Stream(u64);

impl Stream {
    /// The next `n` values as [`Stream::bf16_bytes`] writes them, as floats.
    fn values(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        let mut b = Vec::new();
        self.bf16_bytes(n, scale, offset, &mut b);
        b.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
    }

    fn bf16_bytes(&mut self, n: usize, scale: f32, offset: f32, out: &mut Vec<u8>) {
        out.reserve(2 * n);
        for _ in 0..n {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            out.extend_from_slice(&half::bf16::from_f32(offset + 2.0 * scale * u).to_le_bytes());
        }
    }
}

/// Writes one shard: `(name, shape, bf16 bytes)` tensors.
fn write_shard(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::BF16, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("random model tensor: {e}")))?;
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// One tensor of a random model: name, shape, and the uniform values' half-width and centre.
type Spec = (String, Vec<usize>, f32, f32);

/// The tensors of shard `shard` (a layer, or the embeddings' shard after the last layer),
/// in the order their values are drawn.
fn shard_specs(shape: &Shape, shard: usize) -> Vec<Spec> {
    let (h, hd, ff) = (shape.hidden, shape.head_dim(), shape.intermediate);
    if shard == shape.layers {
        return vec![
            ("model.embed_tokens.weight".into(), vec![shape.vocab, h], 0.05, 0.0),
            ("lm_head.weight".into(), vec![shape.vocab, h], 0.02, 0.0),
            ("model.norm.weight".into(), vec![h], 0.1, 1.0),
        ];
    }
    let p = |s: &str| format!("model.layers.{shard}.{s}");
    let mut t: Vec<Spec> = vec![
        (p("input_layernorm.weight"), vec![h], 0.1, 1.0),
        (p("post_attention_layernorm.weight"), vec![h], 0.1, 1.0),
        (p("self_attn.q_proj.weight"), vec![shape.heads * hd, h], 0.03, 0.0),
        (p("self_attn.k_proj.weight"), vec![shape.kv_heads * hd, h], 0.03, 0.0),
        (p("self_attn.v_proj.weight"), vec![shape.kv_heads * hd, h], 0.03, 0.0),
    ];
    if shape.arch.default_qkv_bias() {
        t.push((p("self_attn.q_proj.bias"), vec![shape.heads * hd], 0.1, 0.0));
        t.push((p("self_attn.k_proj.bias"), vec![shape.kv_heads * hd], 0.1, 0.0));
        t.push((p("self_attn.v_proj.bias"), vec![shape.kv_heads * hd], 0.1, 0.0));
    }
    t.push((p("self_attn.o_proj.weight"), vec![h, shape.heads * hd], 0.03, 0.0));
    t.push((p("mlp.gate_proj.weight"), vec![ff, h], 0.03, 0.0));
    t.push((p("mlp.up_proj.weight"), vec![ff, h], 0.03, 0.0));
    t.push((p("mlp.down_proj.weight"), vec![h, ff], 0.02, 0.0));
    t
}

/// The value stream of shard `shard`: it depends on the seed and the shard alone.
fn shard_stream(seed: u64, shard: usize) -> Stream {
    Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (shard as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// How a random model's weights are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomWeights {
    /// bf16 safetensors, one shard per layer (a Hugging Face folder).
    Bf16,
    /// One GGUF file, `model.gguf` (what `--dtype file` loads): every matrix in this block
    /// type (`Q8_0` where its rows are not whole blocks of it, as llama.cpp falls back), Q/K
    /// rows permuted as llama.cpp's converter does for Llama, vectors in float32. The values
    /// are the bf16 folder's of the same seed, quantized.
    Gguf(TensorType),
}

/// Writes a random model of `shape` into `dir` (created if needed): config, bf16 weight shards
/// and their index, tokenizer and chat template. Deterministic in `seed`. Weights are uniform
/// with the scale of a trained model's initialisation (about 0.02; norms near 1), so that
/// activations stay finite through every layer.
pub fn write_model(dir: &Path, shape: &Shape, seed: u64) -> Result<()> {
    write_model_as(dir, shape, seed, RandomWeights::Bf16)
}

/// [`write_model`] with the weights written as `weights` says.
pub fn write_model_as(dir: &Path, shape: &Shape, seed: u64, weights: RandomWeights) -> Result<()> {
    if shape.heads == 0 || shape.kv_heads == 0 || !shape.heads.is_multiple_of(shape.kv_heads) || !shape.hidden.is_multiple_of(shape.heads) {
        return Err(Error::Input(format!("{} heads over {} key/value heads and width {} do not fit", shape.heads, shape.kv_heads, shape.hidden)));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match weights {
        RandomWeights::Bf16 => write_shards(dir, shape, seed)?,
        RandomWeights::Gguf(kind) => write_gguf(&dir.join(crate::formats::GGUF_FILE), shape, seed, kind)?,
    }
    write_config_and_tokenizer(dir, shape)
}

/// The bf16 shards and their index.
fn write_shards(dir: &Path, shape: &Shape, seed: u64) -> Result<()> {
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    let shards = shape.layers + 1;
    let name = |i: usize| format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
    for shard in 0..shards {
        let mut rng = shard_stream(seed, shard);
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, s, scale, offset) in shard_specs(shape, shard) {
            let mut b = Vec::new();
            rng.bf16_bytes(s.iter().product(), scale, offset, &mut b);
            tensors.push((n, s, b));
        }
        for (n, _, b) in &tensors {
            weight_map.insert(n.clone(), name(shard));
            total += b.len();
        }
        write_shard(&dir.join(name(shard)), &tensors)?;
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(&path, index.to_string()).map_err(|e| Error::io(&path, e))
}

/// Values drawn and quantized per piece of a large tensor.
const PIECE: usize = 1 << 24;

/// `model.gguf`: the shards' values in the same order, matrices quantized to `kind` row by
/// row (a piece of rows at a time, whole heads for a permuted Q/K), written as they are made.
fn write_gguf(path: &Path, shape: &Shape, seed: u64, kind: TensorType) -> Result<()> {
    use crate::formats::names::gguf_name;
    use crate::formats::gguf_write::{GgufWriter, Meta, Planned};
    let shards: Vec<Vec<Spec>> = (0..=shape.layers).map(|i| shard_specs(shape, i)).collect();
    let mut plan = Vec::new();
    let mut permutes = Vec::new();
    for (name, dims, _, _) in shards.iter().flatten() {
        let (g, permute) = gguf_name(name).ok_or_else(|| Error::Tensor { name: name.clone(), message: "no GGUF name".into() })?;
        let kind = if dims.len() == 2 { crate::quant::quantize::row_type(dims[1], kind) } else { TensorType::F32 };
        plan.push(Planned { name: g, shape: dims.clone(), kind });
        permutes.push(permute);
    }
    let meta = [
        ("general.architecture", Meta::Str(shape.arch.family().gguf.into())),
        ("general.name", Meta::Str("random".into())),
        ("general.alignment", Meta::U32(32)),
    ];
    let mut w = GgufWriter::create(path, &meta, &plan)?;
    let mut planned = plan.iter().zip(&permutes);
    for (shard, specs) in shards.iter().enumerate() {
        let mut rng = shard_stream(seed, shard);
        for ((name, dims, scale, offset), (p, permute)) in specs.iter().zip(planned.by_ref()) {
            let kind = p.kind;
            // A vector is a column: a permuted bias moves with its rows.
            let (rows, cols) = match dims[..] {
                [rows, cols] => (rows, cols),
                _ => (dims.iter().product(), 1),
            };
            let heads = permute.heads(shape.arch, shape.heads, shape.kv_heads);
            let head_rows = heads.map_or(1, |n| rows / n);
            let piece = ((PIECE / cols).max(1) / head_rows).max(1) * head_rows;
            for r0 in (0..rows).step_by(piece) {
                let n = piece.min(rows - r0);
                let mut v = rng.values(n * cols, *scale, *offset);
                if heads.is_some() {
                    v = crate::formats::gguf::permute_rows(&v, n / head_rows, n, cols);
                }
                let bytes = match kind {
                    TensorType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    k => crate::quant::qmatrix::QMatrix::quantize(k, &v, n, cols).map_err(|message| Error::Tensor { name: name.clone(), message })?.into_blocks(),
                };
                w.write(&bytes)?;
            }
        }
    }
    w.finish().map(|_| ())
}

/// `config.json`, `tokenizer.json` and `tokenizer_config.json`.
fn write_config_and_tokenizer(dir: &Path, shape: &Shape) -> Result<()> {
    let io = |p: &Path| { let p = p.to_owned(); move |e: std::io::Error| Error::io(&p, e) };
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&shape.config_json()).unwrap_or_default()).map_err(io(&path))?;
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer_json(shape)?).map_err(io(&path))?;
    let s = shape.first_special();
    let (bos, ends, eos) = shape.special_roles();
    let (bos_token, template) = match shape.arch {
        Architecture::Qwen2 => (None, QWEN25_TEMPLATE),
        _ => (Some(shape.special(bos)), LLAMA3_TEMPLATE),
    };
    let special_ids: Vec<usize> = std::iter::once(bos).chain(ends).map(|k| s + k).collect();
    let config = serde_json::json!({
        "bos_token": bos_token, "eos_token": shape.special(eos), "add_bos_token": false,
        "chat_template": template, "model_max_length": 131_072, "clean_up_tokenization_spaces": true,
        "tokenizer_class": "PreTrainedTokenizerFast", "special_ids": special_ids
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, config.to_string()).map_err(io(&path))
}
