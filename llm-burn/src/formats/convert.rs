//! Converting a GGUF file (Llama or Qwen2 architecture) into a Hugging Face folder: `config.json`,
//! `tokenizer.json`, `tokenizer_config.json`, and `model.safetensors` (float32) only where a
//! tool outside this crate needs it: every dtype here loads from the GGUF file itself.

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::formats::gguf::Gguf;
use crate::formats::gguf_model::{FLOAT_COPY, GgufModel, hf_config};

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The output folder.
    pub dir: PathBuf,
    /// Tensors in the model.
    pub tensors: usize,
    /// Parameters in the model.
    pub parameters: usize,
    /// Whether the float32 copy (`model.safetensors`) was written.
    pub float_copy: bool,
}

/// Converts a Llama- or Qwen2-architecture GGUF file into a Hugging Face folder at `out`
/// (created if needed): `config.json` from the GGUF metadata, a byte-level BPE
/// `tokenizer.json` rebuilt from the GGUF vocabulary, merges and special tokens,
/// `tokenizer_config.json` with the chat template, and `model.safetensors` (float32, Q/K rows
/// un-permuted where the architecture's GGUF files permute them), streamed a tensor at a time.
pub fn gguf_to_hf(gguf_path: &Path, out: &Path) -> Result<Converted> {
    convert(gguf_path, out, true)
}

/// [`gguf_to_hf`] without the float32 weights: the folder's configuration and tokenizer, for
/// a model loaded from its GGUF file ([`crate::formats::gguf_model`]; every dtype reads it).
pub fn gguf_to_folder(gguf_path: &Path, out: &Path) -> Result<Converted> {
    convert(gguf_path, out, false)
}

/// Writes `dir/model.safetensors` from `dir/model.gguf` when it is not there (tools that read
/// a Hugging Face folder, such as PyTorch, need it); returns whether it was written.
pub fn ensure_float_copy(dir: &Path) -> Result<bool> {
    if dir.join(FLOAT_COPY).is_file() || dir.join("model.safetensors.index.json").is_file() {
        return Ok(false);
    }
    let gguf = dir.join(crate::formats::GGUF_FILE);
    GgufModel::open(&gguf, Some(&dir.join("config.json")))?.write_float_copy(dir)?;
    Ok(true)
}

fn convert(gguf_path: &Path, out: &Path, float_copy: bool) -> Result<Converted> {
    let model = GgufModel::open(gguf_path, None)?;
    let g = model.gguf();
    let config = hf_config(g)?.ok_or_else(|| Error::Metadata { path: gguf_path.to_owned(), key: "general.architecture".into(), message: "missing, or the file holds no hyper-parameters".into() })?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if float_copy {
        model.write_float_copy(out)?;
    }
    write_json(&out.join("config.json"), &config)?;

    // tokenizer.json and tokenizer_config.json.
    let tokens = g.get_strings("tokenizer.ggml.tokens")?;
    let tokenizer = tokenizer_json(g)?;
    let text = serde_json::to_string(&tokenizer).map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| Error::Tokenizer(format!("the rebuilt tokenizer does not load: {e}")))?;
    std::fs::write(out.join("tokenizer.json"), text).map_err(|e| Error::io(out.join("tokenizer.json"), e))?;
    let opt_u64 = |k: &str| g.metadata.get(k).and_then(|v| v.as_u64());
    let token_at = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map(|s| (*s).to_owned());
    let context = config["max_position_embeddings"].as_u64();
    let tokenizer_config = json!({
        "add_bos_token": g.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false),
        "bos_token": token_at(opt_u64("tokenizer.ggml.bos_token_id")),
        "eos_token": token_at(opt_u64("tokenizer.ggml.eos_token_id")),
        "pad_token": token_at(opt_u64("tokenizer.ggml.padding_token_id")),
        "unk_token": token_at(opt_u64("tokenizer.ggml.unknown_token_id")),
        "chat_template": g.metadata.get("tokenizer.chat_template").and_then(|v| v.as_str()),
        "model_max_length": context,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "GPT2Tokenizer",
    });
    write_json(&out.join("tokenizer_config.json"), &tokenizer_config)?;
    let parameters = g.tensors.iter().map(|t| t.len()).sum();
    Ok(Converted { dir: out.to_owned(), tensors: g.tensors.len(), parameters, float_copy })
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
