//! A tiny random Llama with a byte-level tokenizer and a ChatML template, written as a
//! Hugging Face folder: fast model tests in this and downstream crates without the real
//! weights. Its outputs mean nothing; the laws it obeys (caching, batching, steering,
//! scoring paths) are the same as the real model's.
//!
//! # Example
//!
//! ```
//! use llm_burn::{CpuBackend, Decoder, PromptEncoder, tiny};
//!
//! let dir = tempfile_dir();
//! tiny::write_model(&dir, 7)?;
//! let model = Decoder::<CpuBackend>::load(&dir, &Default::default())?;
//! let prompts = PromptEncoder::from_dir(&dir)?;
//! assert_eq!(prompts.single_token(" A")?, tiny::option_token(0));
//! # fn tempfile_dir() -> std::path::PathBuf {
//! #     let d = std::env::temp_dir().join(format!("tiny-doc-{}", std::process::id()));
//! #     std::fs::create_dir_all(&d).unwrap();
//! #     d
//! # }
//! # Ok::<(), llm_burn::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::error::{Error, Result};

/// Special tokens of the tiny tokenizer, ids 0, 1, 2.
pub const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The ChatML template (SmolLM2's, with a fixed default system message).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Vocabulary size of the tiny tokenizer: 3 special tokens, 256 byte tokens, and the five
/// merged option tokens `" A"`..`" E"`.
pub const VOCAB: usize = 3 + 256 + 5;

/// The id of option token `" A"`..`" E"` (`i` in 0..5).
pub fn option_token(i: usize) -> u32 {
    (3 + 256 + i) as u32
}

/// GPT-2's byte-to-character map of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut direct: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 0;
    let mut map = vec!['\0'; 256];
    for b in 0..256u32 {
        if let Some(pos) = direct.iter().position(|&d| d == b) {
            direct.remove(pos);
            map[b as usize] = char::from_u32(b).unwrap_or('?');
        } else {
            map[b as usize] = char::from_u32(256 + extra).unwrap_or('?');
            extra += 1;
        }
    }
    map
}

/// The tokenizer as `tokenizer.json` text.
pub fn tokenizer_json() -> String {
    let chars = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (i, s) in SPECIAL.iter().enumerate() {
        vocab.insert((*s).to_owned(), i.into());
    }
    for (b, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), (3 + b).into());
    }
    let space = chars[b' ' as usize];
    let mut merges = Vec::new();
    for (i, letter) in ['A', 'B', 'C', 'D', 'E'].iter().enumerate() {
        vocab.insert(format!("{space}{letter}"), (3 + 256 + i).into());
        merges.push(format!("{space} {letter}"));
    }
    let added: Vec<serde_json::Value> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
    .to_string()
}

/// Writes random weights (2 layers, hidden 16, 4 heads of 4, 2 key/value heads, MLP 24,
/// tied embeddings, EOS id 2) with a `vocab`-token vocabulary: `config.json` and
/// `model.safetensors`. Deterministic in `seed`.
pub fn write_weights(dir: &Path, seed: u64, vocab: usize) -> Result<()> {
    let (h, heads, kv, hd, ff, layers) = (16usize, 4usize, 2usize, 4usize, 24usize, 2usize);
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": h, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true, "eos_token_id": 2
    });
    let io = |e: std::io::Error| Error::Io { path: dir.to_owned(), source: e };
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(io)?;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, h], rand(vocab * h, 1.0)),
        ("model.norm.weight".into(), vec![h], rand(h, 0.2).iter().map(|x| 1.0 + x).collect()),
    ];
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        tensors.push((p("input_layernorm.weight"), vec![h], rand(h, 0.2).iter().map(|x| 1.0 + x).collect()));
        tensors.push((p("post_attention_layernorm.weight"), vec![h], rand(h, 0.2).iter().map(|x| 1.0 + x).collect()));
        tensors.push((p("self_attn.q_proj.weight"), vec![heads * hd, h], rand(heads * hd * h, 0.5)));
        tensors.push((p("self_attn.k_proj.weight"), vec![kv * hd, h], rand(kv * hd * h, 0.5)));
        tensors.push((p("self_attn.v_proj.weight"), vec![kv * hd, h], rand(kv * hd * h, 0.5)));
        tensors.push((p("self_attn.o_proj.weight"), vec![h, heads * hd], rand(h * heads * hd, 0.5)));
        tensors.push((p("mlp.gate_proj.weight"), vec![ff, h], rand(ff * h, 0.5)));
        tensors.push((p("mlp.up_proj.weight"), vec![ff, h], rand(ff * h, 0.5)));
        tensors.push((p("mlp.down_proj.weight"), vec![h, ff], rand(h * ff, 0.5)));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(n, s, v)| (n, s, v.into_iter().flat_map(f32::to_le_bytes).collect())).collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("tiny model tensor: {e}")))?;
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// Writes a whole tiny model folder: weights sized to the tiny tokenizer's vocabulary,
/// `tokenizer.json`, and `tokenizer_config.json` with the ChatML template.
pub fn write_model(dir: &Path, seed: u64) -> Result<()> {
    write_weights(dir, seed, VOCAB)?;
    let io = |e: std::io::Error| Error::Io { path: dir.to_owned(), source: e };
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).map_err(io)?;
    let config = serde_json::json!({
        "add_bos_token": false, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
        "chat_template": CHAT_TEMPLATE, "model_max_length": 8192
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).map_err(io)
}
