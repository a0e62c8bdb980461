//! The converted default model against the Hugging Face fixtures (../shared/fixtures):
//! tokenizer parity today; logits and head outputs arrive with the model.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The converted default model (`LLM_MODEL_DIR`, else the xtask cache), if present.
pub fn model_dir() -> Option<PathBuf> {
    let dir = llm_burn::default_model_dir();
    if dir.is_none() {
        eprintln!("skipped: no default model (run `cargo xtask fetch-model`, or set LLM_MODEL_DIR)");
    }
    dir
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

#[test]
fn logits_head_outputs_and_greedy_text_match_hugging_face() {
    use crate::TestBackend;
    use llm_burn::{ForwardOptions, Decoder};
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    let fixtures_dir = std::env::var_os("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let device = Default::default();
    let model = Decoder::<TestBackend>::load(&dir, &device).expect("load the default model");
    for p in fx["prompts"].as_array().expect("prompts") {
        let name = p["name"].as_str().unwrap();
        let ids = ids(&p["token_ids"]);
        let mut cache = model.new_cache();
        let out = model.forward(&[&ids], &mut cache, ForwardOptions { capture: true, ..Default::default() }).expect("forward");
        let logits = out.logits.into_data().to_vec::<f32>().unwrap();
        let (_, expected) = crate::npy::read_f32(&fixtures_dir.join(p["logits_file"].as_str().unwrap()));
        let max = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 1e-3, "{name}: max |logit diff| {max}");
        let mut worst_heads = 0.0f32;
        let top = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
            idx.truncate(5);
            idx
        };
        assert_eq!(top(&logits), top(&expected), "{name}: top-5");
        let (shape, heads_expected) = crate::npy::read_f32(&fixtures_dir.join(p["head_outputs_file"].as_str().unwrap()));
        let heads = out.heads.expect("captured");
        assert_eq!(shape, vec![heads.len(), 576]);
        for (l, h) in heads.into_iter().enumerate() {
            let h = h.into_data().to_vec::<f32>().unwrap();
            let e = &heads_expected[l * 576..(l + 1) * 576];
            let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff = h.iter().zip(e).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff <= 1e-4 * norm.max(1.0), "{name}: layer {l} head outputs differ by {diff} (norm {norm})");
            worst_heads = worst_heads.max(diff / norm.max(1.0));
        }
        eprintln!("{name}: {} tokens, max |logit diff| {max:.2e}, max head-output diff / layer norm {worst_heads:.2e}", ids.len());
        let greedy = model.generate_greedy(&ids, 15, &[], None).expect("generate");
        assert_eq!(greedy, self::ids(&p["greedy_15_ids"]), "{name}: greedy continuation");
    }
}

#[test]
fn half_precision_and_quantized_weights_stay_near_hugging_faces_float32_logits() {
    use crate::TestBackend;
    use llm_burn::{Dtype, ForwardOptions, Decoder};
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    let fixtures_dir = std::env::var_os("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    for dtype in [Dtype::Bf16, Dtype::F16, Dtype::Q8_0, Dtype::Q4K] {
        let model = Decoder::<TestBackend>::load_as(&dir, &Default::default(), dtype).expect("load");
        assert_eq!(model.dtype(), dtype);
        for p in fx["prompts"].as_array().expect("prompts") {
            let name = p["name"].as_str().unwrap();
            let ids = ids(&p["token_ids"]);
            let out = model.forward(&[&ids], &mut model.new_cache(), ForwardOptions::default()).expect("forward");
            let logits = out.logits.into_data().to_vec::<f32>().unwrap();
            let (_, expected) = crate::npy::read_f32(&fixtures_dir.join(p["logits_file"].as_str().unwrap()));
            let max = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let spread = expected.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) - expected.iter().fold(f32::INFINITY, |m, &x| m.min(x));
            let top1 = |v: &[f32]| llm_burn::model::argmax(v);
            eprintln!("{dtype} {name}: max |logit diff| {max:.3} (logit range {spread:.1}), top-1 {} vs {}", top1(&logits), top1(&expected));
            assert!(logits.iter().all(|x| x.is_finite()), "{dtype} {name}: non-finite logits");
            if dtype == Dtype::Q4K {
                // 4-bit weights and (integer products) 8-bit activations: the most likely token
                // Hugging Face's or a near-tie of it (item1_option: "ĠE" 23.02 against "Ġ(" 22.87).
                let best = expected[top1(&expected)];
                assert!(expected[top1(&logits)] >= best - 0.5, "{dtype} {name}: the most likely next token is {} at {} in float32, against {best}", top1(&logits), expected[top1(&logits)]);
            } else {
                assert_eq!(top1(&logits), top1(&expected), "{dtype} {name}: the most likely next token changed");
            }
            assert!(max < 0.05 * spread, "{dtype} {name}: max |logit diff| {max} against a range of {spread}");
        }
    }
}

/// `--dtype file` keeps the blocks of the GGUF file the float32 weights were converted from:
/// the same values, so the same logits up to float rounding with float products (the Q and K
/// rows of this Llama file are un-permuted as whole rows of blocks); with integer products
/// (the default) the same most likely token, within the activations' rounding.
#[test]
fn the_gguf_files_own_blocks_give_the_float32_logits() {
    use crate::TestBackend;
    use llm_burn::{Dtype, ForwardOptions, Decoder};
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    if !dir.join(llm_burn::formats::GGUF_FILE).is_file() {
        eprintln!("skipped: no model.gguf in {} (`cargo xtask fetch-model` links it)", dir.display());
        return;
    }
    let dev = Default::default();
    let (f32, file) = (Decoder::<TestBackend>::load(&dir, &dev).expect("load"), Decoder::<TestBackend>::load_as(&dir, &dev, Dtype::File).expect("load the file's blocks"));
    for p in fx["prompts"].as_array().expect("prompts") {
        let ids = ids(&p["token_ids"]);
        let run = |m: &Decoder<TestBackend>| m.forward(&[&ids], &mut m.new_cache(), ForwardOptions::default()).expect("forward").logits.into_data().to_vec::<f32>().unwrap();
        let (a, b) = (run(&f32), llm_burn::quant::qmatrix::with_float_products(|| run(&file)));
        let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("file {}: max |logit diff| against float32 {max:.2e}", p["name"]);
        assert!(max < 2e-3, "{}: the file's blocks give logits {max} away from its float32 values", p["name"]);
        let c = run(&file);
        let spread = a.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) - a.iter().fold(f32::INFINITY, |m, &x| m.min(x));
        let int_max = a.iter().zip(&c).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("file {} with integer products: max |logit diff| {int_max:.3} (range {spread:.1})", p["name"]);
        assert_eq!(llm_burn::model::argmax(&c), llm_burn::model::argmax(&a), "{}: integer products changed the top token", p["name"]);
        assert!(int_max < 0.05 * spread, "{}: integer products moved a logit by {int_max}", p["name"]);
    }
}
