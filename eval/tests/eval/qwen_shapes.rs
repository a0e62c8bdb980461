//! The capable model's shapes without its weights: a 2-layer random model with
//! Qwen2.5-Coder-1.5B-Instruct's configuration (hidden 1,536, 12 query heads over 2 key/value
//! heads, q/k/v biases, RoPE theta 1e6, vocabulary 151,936) and Qwen2.5's own chat template,
//! through the same loader, the whole PAS path with few-shot beside it, and generation.

use eval::{Evaluator, Method};
use llm_burn::random::{Shape, write_model};
use llm_burn::{Architecture, Decoder, Message, PromptEncoder};

use crate::{TestBackend, one_person_cheap_run, provenance};

#[test]
fn a_qwen2_shaped_model_runs_the_pas_path() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &Shape::qwen2_5_1_5b().with_layers(2), 3).unwrap();
    let model = Decoder::<TestBackend>::load(dir.path(), &Default::default()).unwrap();
    let c = model.config();
    assert_eq!(c.arch, Architecture::Qwen2);
    assert_eq!((c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab), (2, 1536, 12, 2, 128, 8960, 151_936));
    assert!(c.qkv_bias && !c.tied && c.rope_theta == 1e6);

    // Qwen2.5's template: ChatML turns, its own system prompt when none is given.
    let prompts = PromptEncoder::from_dir(dir.path()).unwrap();
    let text = prompts.render("Be brief.", "Worry about things.", "Option").unwrap();
    assert_eq!(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWorry about things.<|im_end|>\n<|im_start|>assistant\nOption");
    let bare = prompts.template.render(&[Message::new("user", "Hi")], true).unwrap();
    assert!(bare.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"), "{bare}");
    let ids = prompts.encode(&text).unwrap();
    let first = c.vocab as u32 - 256;
    assert_eq!(ids.iter().filter(|&&t| t == first + 1).count(), 3, "one <|im_start|> per turn");
    assert_eq!(prompts.stop_ids(&c.eos), vec![first, first + 2], "<|endoftext|> and <|im_end|> end a turn");

    // Greedy generation stops at the token budget and stays in the vocabulary.
    let out = model.generate_greedy(&ids, 3, &[], None).unwrap();
    assert!(out.len() <= 3 && out.iter().all(|&t| (t as usize) < c.vocab), "{out:?}");

    // One subject through no-change, few-shot, PAS-only and DPO (LoRA on the biased
    // projections), with few items.
    let (data, mut config) = one_person_cheap_run(&[Method::NoChange, Method::FewShot, Method::PasOnly, Method::Dpo], 4);
    config.dpo = dpo_baseline::DpoConfig { epochs: 1, optimiser: dpo_baseline::OptimiserConfig { learning_rate: 1e-2, ..Default::default() }, batch_size: 2, ..Default::default() };
    config.dpo_items = Some(5);
    let out = tempfile::tempdir().unwrap();
    let results = Evaluator::new(&model, &prompts, &data, None, config, provenance(dir.path()), out.path()).unwrap().run().unwrap();
    for r in &results.runs {
        assert!(r.total.is_some_and(f64::is_finite), "{}", r.method);
    }
    let case = data.subjects[0].case;
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("subjects/pas-only/{case}.json"))).unwrap()).unwrap();
    let p = &saved["pas"];
    assert!(p["fallback"].is_null() && p["heads"].as_u64() == Some(4), "an intervention on 4 of the 12 x 2 heads: {p}");
    assert!(saved["items"].as_array().unwrap().iter().all(|i| i["logprobs"].as_array().unwrap().iter().all(|x| x.as_f64().is_some_and(f64::is_finite))));
    let dpo = results.runs.iter().find(|r| r.method == Method::Dpo).unwrap();
    assert!(dpo.phases.train > 0.0 && dpo.tokens.train > 0, "DPO trained: {dpo:?}");
}
