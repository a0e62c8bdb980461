//! The pinned models (converted by `cargo xtask fetch-model [--model NAME]`) against Hugging
//! Face transformers' own loading of the same GGUF files: chat rendering, token ids, logits at
//! the last position (a sample of ids: the top 32 and every 64th) and every layer's head
//! outputs (their norm and every 8th value). The fixtures ship in `tests/data/NAME` (made by `tests/data/make_fixtures.py`), so
//! a clone with nothing beside it checks them; the models do not ship. The default model is
//! required (the README's test command fetches it first): without it these tests fail and say
//! how to fetch it. The Qwen models are checked where they have been fetched, and a test says
//! on stderr which it skipped.

use std::path::{Path, PathBuf};

use llm_burn::{Architecture, Dtype, ForwardOptions, Decoder, PromptEncoder};
use serde_json::Value;

use crate::TestBackend;

/// (name in `fetch-model`, folder in the cache, architecture, required).
const MODELS: [(&str, &str, Architecture, bool); 3] = [
    ("smollm2-135m-instruct", "SmolLM2-135M-Instruct", Architecture::Llama, true),
    ("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B-Instruct", Architecture::Qwen2, false),
    ("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder-0.5B-Instruct", Architecture::Qwen2, false),
];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The model folder of a pinned model: `LLM_MODEL_DIR` for the default one, else the cache.
fn model_dir(name: &str, folder: &str) -> PathBuf {
    match std::env::var_os("LLM_MODEL_DIR") {
        Some(dir) if name == MODELS[0].0 => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models").join(folder),
    }
}

/// One fetched model with its fixtures.
#[derive(Clone)]
struct Pinned {
    dir: PathBuf,
    fx: Value,
    arch: Architecture,
}

/// The fetched models with their fixtures. Missing fixtures fail; a missing default model
/// fails; a missing Qwen model is skipped with a line on stderr.
fn fetched() -> Vec<Pinned> {
    let mut found = Vec::new();
    for (name, folder, arch, required) in MODELS {
        let dir = model_dir(name, folder);
        let fx = fixture_dir(name);
        let text = std::fs::read_to_string(fx.join("fixtures.json")).unwrap_or_else(|e| panic!("{}: {e} (the parity fixtures ship with the repository)", fx.join("fixtures.json").display()));
        if llm_burn::is_model_dir(&dir) {
            found.push(Pinned { dir, fx: serde_json::from_str(&text).expect("fixtures.json"), arch });
        } else if required {
            panic!("the default model is not at {}: run `cargo xtask fetch-model` first (the README's test command does)", dir.display());
        } else {
            eprintln!("skipped {name}: not fetched (cargo xtask fetch-model --model {name})");
        }
    }
    found
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("token ids")
}

#[test]
fn chat_rendering_and_token_ids_match_transformers() {
    for Pinned { dir, fx, arch, .. } in fetched() {
        let prompts = PromptEncoder::from_dir(&dir).expect("tokenizer and template");
        for p in fx["prompts"].as_array().expect("prompts") {
            let name = p["name"].as_str().unwrap();
            let (system, user, prefill) = (p["system"].as_str().unwrap(), p["user"].as_str().unwrap(), p["assistant_prefill"].as_str().unwrap());
            assert_eq!(prompts.render(system, user, prefill).expect("render"), p["prompt"].as_str().unwrap(), "{name}: rendered text");
            assert_eq!(prompts.encode_chat(system, user, prefill).expect("encode"), ids(&p["token_ids"]), "{name}: token ids");
        }
        for (letter, id) in fx["meta"]["option_letter_token_ids"].as_object().expect("letters") {
            assert_eq!(prompts.single_token(&format!(" {letter}")).expect("one token"), id.as_u64().unwrap() as u32, "\" {letter}\"");
        }
        if arch != Architecture::Qwen2 {
            continue;
        }
        // Without a system message the template supplies Qwen's own, as transformers renders it.
        let messages = [llm_burn::Message::new("user", "Hi")];
        let text = prompts.template.render(&messages, true).expect("render");
        assert!(text.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."), "{text}");
    }
}

#[test]
fn logits_and_head_outputs_match_transformers() {
    for (Pinned { dir, fx, arch }, dtype) in fetched().into_iter().flat_map(|p| {
        // The GGUF file's own blocks (`--dtype file`) hold the values the float32 weights were
        // converted from: the same bounds hold for both.
        let file = p.dir.join(llm_burn::formats::GGUF_FILE).is_file();
        [Some(Dtype::F32), file.then_some(Dtype::File)].into_iter().flatten().map(move |d| (p.clone(), d))
    }) {
        let model = Decoder::<TestBackend>::load_as(&dir, &Default::default(), dtype).expect("load");
        assert_eq!(model.config().arch, arch);
        let width = model.config().heads * model.config().head_dim;
        for p in fx["prompts"].as_array().expect("prompts") {
            let name = p["name"].as_str().unwrap();
            let ids = ids(&p["token_ids"]);
            let run = || model.forward(&[&ids], &mut model.new_cache(), ForwardOptions { capture: true, ..Default::default() }).expect("forward");
            if dtype == Dtype::File {
                // Integer products (the default) round the activations to 8 bits: the sampled
                // logits within 1 of transformers', and the most likely token transformers'
                // or one it ranks within 0.5 of it (Qwen2.5-1.5B's item1: "(B" 17.13 against
                // "The" 17.02 flips).
                let logits = run().logits.into_data().to_vec::<f32>().unwrap();
                let sample: Vec<usize> = serde_json::from_value(p["logit_sample_ids"].clone()).unwrap();
                let expected: Vec<f32> = serde_json::from_value(p["logit_sample"].clone()).unwrap();
                let max = sample.iter().zip(&expected).map(|(&i, e)| (logits[i] - e).abs()).fold(0.0f32, f32::max);
                let top = llm_burn::model::argmax(&logits);
                let ranked: Vec<(usize, f64)> = p["top5"].as_array().unwrap().iter().map(|t| (t["id"].as_u64().unwrap() as usize, t["logit"].as_f64().unwrap())).collect();
                eprintln!("{arch:?} {name}: integer products: max |logit diff| {max:.3}, top-1 {top} (transformers {})", ranked[0].0);
                assert!(max < 1.0, "{name}: integer products moved a sampled logit by {max}");
                assert!(ranked.iter().any(|&(id, l)| id == top && l >= ranked[0].1 - 0.5), "{name}: integer products chose {top}, not a near-tie of transformers' top-5 {ranked:?}");
            }
            // The file's values with float products: transformers' logits to float rounding.
            let out = llm_burn::quant::qmatrix::with_float_products(run);
            let logits = out.logits.into_data().to_vec::<f32>().unwrap();
            let sample: Vec<usize> = serde_json::from_value(p["logit_sample_ids"].clone()).unwrap();
            let expected: Vec<f32> = serde_json::from_value(p["logit_sample"].clone()).unwrap();
            let max = sample.iter().zip(&expected).map(|(&i, e)| (logits[i] - e).abs()).fold(0.0f32, f32::max);
            assert!(max < 1e-3, "{name}: max |logit diff| {max}");
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top5: Vec<usize> = p["top5"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap() as usize).collect();
            assert_eq!(order[..5], top5[..], "{name}: top-5");
            let mut worst = None::<f32>;
            if let Some(reference) = p["head_outputs"].as_object() {
                let shape: Vec<usize> = serde_json::from_value(reference["shape"].clone()).expect("shape");
                let stride = reference["stride"].as_u64().expect("stride") as usize;
                let norms: Vec<f32> = serde_json::from_value(reference["norms"].clone()).expect("norms");
                let sample: Vec<Vec<f32>> = serde_json::from_value(reference["sample"].clone()).expect("sample");
                let heads = out.heads.expect("captured");
                assert_eq!(shape, vec![heads.len(), width]);
                for (l, h) in heads.into_iter().enumerate() {
                    let h = h.into_data().to_vec::<f32>().unwrap();
                    let ours: Vec<f32> = h.iter().step_by(stride).copied().collect();
                    let norm = norms[l].max(1.0);
                    let ours_norm = h.iter().map(|x| x * x).sum::<f32>().sqrt().max(1.0);
                    assert!((ours_norm - norm).abs() <= 1e-4 * norm, "{name}: layer {l} head output norm {ours_norm}, transformers {norm}");
                    assert_eq!(ours.len(), sample[l].len(), "{name}: layer {l} sample length");
                    let diff = ours.iter().zip(&sample[l]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(diff <= 1e-4 * norm, "{name}: layer {l} head outputs differ by {diff} (norm {norm})");
                    worst = Some(worst.unwrap_or(0.0).max(diff / norm));
                }
            }
            let heads = worst.map_or("not recorded".to_owned(), |w| format!("within {w:.2e} of the layer norm"));
            eprintln!("{} ({dtype}): {name}: {} tokens, max |logit diff| {max:.2e}, head outputs {heads}", dir.display(), ids.len());
        }
    }
}
