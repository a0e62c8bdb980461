//! The converted default model against the Hugging Face fixtures (../shared/fixtures):
//! tokenizer parity today; logits and head outputs arrive with the model.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The converted default model (`LLM_MODEL_DIR`, else the xtask cache), if present.
pub fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LLM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/SmolLM2-135M-Instruct"));
    if dir.join("tokenizer.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: no default model at {} (run `cargo xtask fetch-model`)", dir.display());
        None
    }
}

/// The fixtures (`FIXTURES_DIR`, else ../shared/fixtures), if present.
pub fn fixtures() -> Option<Value> {
    let dir = std::env::var_os("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    match std::fs::read_to_string(dir.join("fixtures.json")) {
        Ok(text) => Some(serde_json::from_str(&text).expect("fixtures.json parses")),
        Err(_) => {
            eprintln!("skipped: no fixtures at {}", dir.display());
            None
        }
    }
}

/// The fixture's token ids (stored as a JSON list or as its text).
fn ids(v: &Value) -> Vec<u32> {
    match v {
        Value::String(s) => serde_json::from_str(s).expect("token id list"),
        other => serde_json::from_value(other.clone()).expect("token id list"),
    }
}

#[test]
fn the_rebuilt_tokenizer_gives_hugging_faces_token_ids() {
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer loads");
    let prompts = fx["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), 6);
    for p in prompts {
        let text = p["prompt"].as_str().expect("prompt");
        let expected = ids(&p["token_ids"]);
        let got = tok.encode(text, false).expect("encode").get_ids().to_vec();
        assert_eq!(got, expected, "{}", p["name"]);
        // The greedy continuation decodes to the fixture's text.
        let greedy = ids(&p["greedy_15_ids"]);
        assert_eq!(tok.decode(&greedy, false).expect("decode"), p["greedy_15_text"].as_str().unwrap(), "{}", p["name"]);
    }
    // The option letters after "Option" are single tokens with the fixture's ids.
    for (letter, id) in fx["meta"]["option_letter_token_ids"].as_object().expect("letters") {
        let enc = tok.encode(format!(" {letter}"), false).expect("encode");
        assert_eq!(enc.get_ids(), [id.as_u64().unwrap() as u32], "\" {letter}\"");
    }
    // Digits are split one by one, as SmolLM2's pre-tokenizer does.
    let digits = tok.encode("12345", false).expect("encode");
    assert_eq!(digits.get_ids().len(), 5);
}

#[test]
fn the_converted_config_matches_the_fixture_geometry() {
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let meta = &fx["meta"];
    for key in ["num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size", "vocab_size", "tie_word_embeddings"] {
        assert_eq!(config[key], meta[key], "{key}");
    }
    assert_eq!(config["rope_theta"].as_f64(), meta["rope_theta"].as_f64());
    assert_eq!(config["rms_norm_eps"].as_f64(), meta["rms_norm_eps"].as_f64());
    assert_eq!(config["eos_token_id"], meta["eos_token_id"]);
    let tc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["eos_token"], meta["eos_token"]);
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>"));
}
