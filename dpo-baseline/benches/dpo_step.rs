//! One DPO step on the default model (SmolLM2-135M-Instruct) on the CPU: 8 items (one
//! preference pair each), forward with adapters on every projection, backward, clipping and
//! AdamW; beside it the forward alone on the autodiff backend and the reference forward.
//!
//! `cargo bench -p dpo-baseline --bench dpo_step` (needs `cargo xtask fetch-model`;
//! `LLM_MODEL_DIR` points elsewhere).
#![allow(missing_docs, clippy::print_stderr)]


use burn::backend::Autodiff;
use criterion::{Criterion, criterion_group, criterion_main};
use dpo_baseline::data::pairs;
use dpo_baseline::train::{AdamW, option_logprobs, reference_logprobs, step};
use dpo_baseline::{DpoConfig, Example, Rejected};
use llm_burn::{CpuBackend, Decoder, Lora, LoraPass, PromptEncoder};

type AD = Autodiff<CpuBackend>;

const ITEMS: [(&str, u8); 8] = [
    ("Worry about things", 5),
    ("Make friends easily", 1),
    ("Have a vivid imagination", 4),
    ("Trust others", 2),
    ("Complete tasks successfully", 5),
    ("Get angry easily", 1),
    ("Love large parties", 4),
    ("Believe in the importance of art", 2),
];

fn bench(c: &mut Criterion) {
    let Some(dir) = llm_burn::default_model_dir() else {
        eprintln!("skipped: no default model (run `cargo xtask fetch-model`)");
        return;
    };
    let model = Decoder::<CpuBackend>::load(&dir, &Default::default()).expect("model");
    let prompts = PromptEncoder::from_dir(&dir).expect("tokenizer");
    let options = [" A", " B", " C", " D", " E"].map(|t| prompts.single_token(t).expect("option token"));
    let examples: Vec<Example> = ITEMS
        .iter()
        .enumerate()
        .filter_map(|(i, (text, answer))| {
            let user = format!("Given a statement of you: \"You {text}.\" Please choose from the following options to identify how accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n\nAnswer:");
            let ids = prompts.encode_chat("You are a helpful, honest and concise assistant.", &user, "Option").expect("prompt");
            Example::new(i as u16, ids, *answer, Rejected::OppositeExtreme)
        })
        .collect();
    let rows: Vec<&[u32]> = examples.iter().map(|e| e.prompt.as_slice()).collect();
    let batch: Vec<_> = pairs(&examples).into_iter().map(|p| (p.example, p)).collect();
    let config = DpoConfig::default();
    let (reference, _) = reference_logprobs(&model, &examples, &options, 16).expect("reference");
    let policy = Decoder::<AD>::from_inner(&model);
    let lora = Lora::<CpuBackend>::init(model.config(), &config.lora.spec(), 0, &Default::default()).expect("adapters");

    let mut g = c.benchmark_group("dpo_default_model_8_items");
    g.sample_size(10);
    g.bench_function("step (forward, backward, AdamW)", |b| {
        let mut adam = AdamW::new(&lora);
        b.iter(|| step::<AD>(&policy, &lora, &mut adam, &rows, &batch, &reference, &options, &config, 1).expect("step"));
    });
    g.bench_function("forward on the autodiff backend", |b| {
        let trainable = Lora::<AD>::trainable(&lora);
        b.iter(|| option_logprobs(&policy, Some(LoraPass::new(&trainable)), &rows, &options).expect("forward"));
    });
    g.bench_function("reference forward (no adapters, no autodiff)", |b| {
        b.iter(|| option_logprobs(&model, None, &rows, &options).expect("forward"));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
