//! Converting a GGUF file (Llama or Qwen2 architecture) into a Hugging Face folder: `config.json`,
//! `model.safetensors` (float32), `tokenizer.json` and `tokenizer_config.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value as Json, json};

use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, unpermute_rows};

/// How a GGUF tensor maps to a Hugging Face one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permute {
    /// Copied as is.
    None,
    /// Q projection rows: undo llama.cpp's permutation with the query head count.
    Query,
    /// K projection rows: likewise with the key/value head count.
    Key,
}

/// The name table: GGUF name (with `{i}` for the layer) → Hugging Face name, and the
/// row permutation to undo.
const NAMES: &[(&str, &str, Permute)] = &[
    ("token_embd.weight", "model.embed_tokens.weight", Permute::None),
    ("output_norm.weight", "model.norm.weight", Permute::None),
    ("output.weight", "lm_head.weight", Permute::None),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight", Permute::None),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight", Permute::None),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight", Permute::Query),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight", Permute::Key),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight", Permute::None),
    ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias", Permute::Query),
    ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias", Permute::Key),
    ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias", Permute::None),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight", Permute::None),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight", Permute::None),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight", Permute::None),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight", Permute::None),
];

/// Maps a GGUF tensor name to its Hugging Face name and permutation.
pub(crate) fn hf_name(gguf_name: &str) -> Option<(String, Permute)> {
    NAMES.iter().find_map(|&(g, hf, permute)| rename(gguf_name, g, hf).map(|n| (n, permute)))
}

/// Maps a Hugging Face tensor name to its GGUF name and the rows llama.cpp permutes: the
/// inverse of [`hf_name`], from the same table.
pub(crate) fn gguf_name(hf_name: &str) -> Option<(String, Permute)> {
    NAMES.iter().find_map(|&(g, hf, permute)| rename(hf_name, hf, g).map(|n| (n, permute)))
}

/// `name` matched against `from` (a pattern with `{i}` for the layer) and written as `to`.
fn rename(name: &str, from: &str, to: &str) -> Option<String> {
    match from.split_once("{i}") {
        Some((prefix, suffix)) => {
            let layer = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse::<usize>().ok()?;
            Some(to.replace("{i}", &layer.to_string()))
        }
        None => (name == from).then(|| to.to_owned()),
    }
}

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The output folder.
    pub dir: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: usize,
}

/// Converts a Llama- or Qwen2-architecture GGUF file into a Hugging Face folder at `out`
/// (created if needed): weights dequantised to float32 (Q/K rows un-permuted where the
/// architecture's GGUF files permute them), `config.json` from the GGUF metadata, a byte-level BPE `tokenizer.json` rebuilt from the GGUF vocabulary,
/// merges and special tokens, and `tokenizer_config.json` with the chat template.
pub fn gguf_to_hf(gguf_path: &Path, out: &Path) -> Result<Converted> {
    let g = Gguf::open(gguf_path)?;
    let arch = g.get_str("general.architecture")?.to_owned();
    let architecture = Architecture::from_gguf(&arch).ok_or_else(|| Error::Metadata {
        path: gguf_path.to_owned(),
        key: "general.architecture".into(),
        message: format!("`{arch}` is not supported (llama, qwen2)"),
    })?;
    let key = |k: &str| format!("{arch}.{k}");
    if let Some(kind) = g.metadata.get(&key("rope.scaling.type")).and_then(|v| v.as_str())
        && kind != "none"
    {
        return Err(Error::Metadata { path: gguf_path.to_owned(), key: key("rope.scaling.type"), message: format!("rope scaling `{kind}` is not supported by the converter yet") });
    }
    let layers = g.get_u64(&key("block_count"))? as usize;
    let heads = g.get_u64(&key("attention.head_count"))? as usize;
    let kv_heads = g.metadata.get(&key("attention.head_count_kv")).and_then(|v| v.as_u64()).map_or(heads, |v| v as usize);
    let hidden = g.get_u64(&key("embedding_length"))? as usize;
    let tokens = g.get_strings("tokenizer.ggml.tokens")?;
    let vocab = g.metadata.get(&key("vocab_size")).and_then(|v| v.as_u64()).map_or(tokens.len(), |v| v as usize);
    let head_dim = g.metadata.get(&key("attention.key_length")).and_then(|v| v.as_u64()).map_or(hidden / heads, |v| v as usize);

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    // Weights.
    let mut data: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut parameters = 0;
    for t in &g.tensors {
        let (name, permute) = hf_name(&t.name).ok_or_else(|| Error::Tensor { name: t.name.clone(), message: "no Hugging Face name for this GGUF tensor (unused)".into() })?;
        let mut values = g.dequantize(t)?;
        let rows = t.shape[0];
        let cols = t.shape.get(1..).map_or(1, |s| s.iter().product());
        let n_heads = match permute {
            _ if !architecture.gguf_permutes_qk() => None,
            Permute::None => None,
            Permute::Query => Some(heads),
            Permute::Key => Some(kv_heads),
        };
        if let Some(n) = n_heads {
            if rows != n * head_dim {
                return Err(Error::Tensor { name: t.name.clone(), message: format!("expected {} rows ({n} heads x {head_dim}), found shape {:?}", n * head_dim, t.shape) });
            }
            values = unpermute_rows(&values, n, rows, cols);
        }
        parameters += values.len();
        data.insert(name, (t.shape.clone(), values.into_iter().flat_map(f32::to_le_bytes).collect()));
    }
    for required in ["model.embed_tokens.weight", "model.norm.weight"] {
        if !data.contains_key(required) {
            return Err(Error::Tensor { name: required.into(), message: "missing from the GGUF file".into() });
        }
    }
    let tied = !data.contains_key("lm_head.weight");
    let attention_bias = data.keys().any(|n| n.ends_with("q_proj.bias"));
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Safetensors { path: out.join("model.safetensors"), message: e.to_string() })
        })
        .collect::<Result<_>>()?;
    let weights = out.join("model.safetensors");
    let meta: HashMap<String, String> = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(views, Some(meta), &weights)
        .map_err(|e| Error::Safetensors { path: weights.clone(), message: e.to_string() })?;
    let n_tensors = data.len();
    drop(data);

    // config.json.
    let opt_u64 = |k: &str| g.metadata.get(k).and_then(|v| v.as_u64());
    let bos = opt_u64("tokenizer.ggml.bos_token_id");
    let eos = opt_u64("tokenizer.ggml.eos_token_id");
    let ffn = g.get_u64(&key("feed_forward_length"))?;
    let config = json!({
        "architectures": [architecture.hf_class()],
        "model_type": architecture.model_type(),
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": opt_u64(&key("context_length")).unwrap_or(2048),
        "rms_norm_eps": g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        "rope_theta": g.metadata.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10000.0),
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": opt_u64("tokenizer.ggml.padding_token_id"),
        "hidden_act": "silu",
        "attention_bias": attention_bias,
        "mlp_bias": false,
        "use_sliding_window": false,
        "torch_dtype": "float32",
    });
    write_json(&out.join("config.json"), &config)?;

    // tokenizer.json and tokenizer_config.json.
    let tokenizer = tokenizer_json(&g)?;
    let text = serde_json::to_string(&tokenizer).map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| Error::Tokenizer(format!("the rebuilt tokenizer does not load: {e}")))?;
    std::fs::write(out.join("tokenizer.json"), text).map_err(|e| Error::io(out.join("tokenizer.json"), e))?;
    let token_at = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map(|s| (*s).to_owned());
    let tokenizer_config = json!({
        "add_bos_token": g.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false),
        "bos_token": token_at(bos),
        "eos_token": token_at(eos),
        "pad_token": token_at(opt_u64("tokenizer.ggml.padding_token_id")),
        "unk_token": token_at(opt_u64("tokenizer.ggml.unknown_token_id")),
        "chat_template": g.metadata.get("tokenizer.chat_template").and_then(|v| v.as_str()),
        "model_max_length": opt_u64(&key("context_length")),
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "GPT2Tokenizer",
    });
    write_json(&out.join("tokenizer_config.json"), &tokenizer_config)?;
    Ok(Converted { dir: out.to_owned(), tensors: n_tensors, parameters })
}

/// Qwen2's split before the byte-level step (its `tokenizer.json`, and llama.cpp's `qwen2`):
/// contractions, letters with one leading non-letter, single digits, punctuation runs,
/// newlines, spaces.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The normalizer and pre-tokenizer of the tokenizer a GGUF `tokenizer.ggml.pre` names, as
/// Hugging Face's `tokenizer.json` writes them; `None` for one not supported.
fn pre_tokenizer(pre: &str) -> Option<(Json, Json)> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    Some(match pre {
        // SmolLM and StarCoder: every digit on its own, then GPT-2's byte-level regex.
        "smollm" | "starcoder" | "refact" => {
            (Json::Null, json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]}))
        }
        "gpt2" | "default" => (Json::Null, byte_level),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            ]}),
        ),
        _ => return None,
    })
}

fn write_json(path: &Path, v: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Tokenizer(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// The Hugging Face `tokenizer.json` of a GGUF byte-level BPE vocabulary (`gpt2` model):
/// vocabulary, merges, control tokens as special added tokens, and the pre-tokenizer the
/// GGUF's `tokenizer.ggml.pre` names.
pub fn tokenizer_json(g: &Gguf) -> Result<Json> {
    let path = g.path().to_owned();
    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Metadata { path, key: "tokenizer.ggml.model".into(), message: format!("`{model}` is not supported (only byte-level BPE, `gpt2`)") });
    }
    let tokens = g.get_strings("tokenizer.ggml.tokens")?;
    let merges = g.get_strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match g.metadata.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let pre = g.metadata.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let (normalizer, pre_tokenizer) = pre_tokenizer(pre).ok_or_else(|| Error::Metadata {
        path,
        key: "tokenizer.ggml.pre".into(),
        message: format!("pre-tokenizer `{pre}` is not supported yet (smollm, starcoder, refact, gpt2, qwen2)"),
    })?;
    let vocab: serde_json::Map<String, Json> = tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), json!(i))).collect();
    // Token type 3 is llama.cpp's "control" (special) token; 4 is "user defined".
    let added: Vec<Json> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == 3 || **ty == 4)
        .map(|(i, (t, ty))| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": *ty == 4, "special": *ty == 3}))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        }
    }))
}
