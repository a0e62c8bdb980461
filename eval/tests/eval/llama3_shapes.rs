//! The paper's model shapes without its weights: a 2-layer random model with Llama-3-8B's
//! configuration (hidden 4,096, 32 query heads over 8 key/value heads, MLP 14,336, vocabulary
//! 128,256), its chat template and special tokens, through the same loader and the whole PAS
//! path (capture, fit, steer, score).

use eval::{Evaluator, Method};
use llm_burn::random::{Shape, write_model};
use llm_burn::{Decoder, PromptEncoder};

use crate::{TestBackend, one_person_cheap_run, provenance};

#[test]
fn a_llama_3_shaped_model_runs_the_pas_path() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape::llama_3_8b().with_layers(2);
    write_model(dir.path(), &shape, 5).unwrap();
    let model = Decoder::<TestBackend>::load(dir.path(), &Default::default()).unwrap();
    let c = model.config();
    assert_eq!((c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab), (2, 4096, 32, 8, 128, 14336, 128_256));
    assert_eq!(c.heads / c.kv_heads, 4, "grouped-query attention at 4:1");
    assert_eq!(c.rope_theta, 500_000.0);
    assert_eq!(c.eos, vec![128_001, 128_009]);

    // The Llama-3 Instruct template: BOS once, a header per turn, <|eot_id|> ending each
    // finished turn, the prefill after the assistant's header; special tokens are single ids.
    let prompts = PromptEncoder::from_dir(dir.path()).unwrap();
    let text = prompts.render("Be brief.", "Worry about things.", "Option").unwrap();
    assert!(text.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"), "{text}");
    assert!(text.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\nOption"), "{text}");
    let ids = prompts.encode(&text).unwrap();
    let count = |id: u32| ids.iter().filter(|&&t| t == id).count();
    assert_eq!((ids[0], count(128_000), count(128_006), count(128_007), count(128_009)), (128_000, 1, 3, 3, 2));
    assert!(prompts.single_token(" A").is_ok() && prompts.single_token(" E").is_ok());

    // One subject through no-change and PAS-only, with few items so that it stays quick.
    let (data, config) = one_person_cheap_run(&[Method::NoChange, Method::PasOnly], 9);
    let out = tempfile::tempdir().unwrap();
    let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(dir.path()), out.path()).unwrap().run().unwrap();
    for r in &results.runs {
        assert!(r.total.is_some_and(f64::is_finite), "{}", r.method);
    }
    let pas = results.runs.iter().find(|r| r.method == Method::PasOnly).unwrap();
    let case = data.subjects[0].case;
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/pas-only/{case}.json"))).unwrap()).unwrap();
    let p = &saved["pas"];
    // The search ran; the test items ran steered, or at strength 0 came from the unsteered pass.
    let zero = p["alpha"].as_f64() == Some(0.0);
    assert!(pas.phases.collect > 0.0 && pas.tokens.search > 0 && (pas.tokens.eval > 0) != zero, "{pas:?}");
    // An intervention on 4 of the 32 × 2 heads, its strength searched over the grid.
    assert!(p["fallback"].is_null() && p["heads"].as_u64() == Some(4), "{p}");
    assert_eq!(p["search"]["evaluations"].as_array().map(Vec::len), Some(2), "{p}");
    assert!(saved["items"].as_array().unwrap().iter().all(|i| i["logprobs"].as_array().unwrap().iter().all(|x| x.as_f64().is_some_and(f64::is_finite))));
}
