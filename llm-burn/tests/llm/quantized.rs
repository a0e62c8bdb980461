//! Weights kept quantized (`Dtype::Q8_0`): the model gives what the float model with the
//! same (dequantized) weights gives, near the float32 model, and every path that acts on
//! activations (capture, steering, batches, the cache, LoRA, generation) keeps working.

use std::collections::BTreeMap;
use std::path::Path;

use llm_burn::quant::qmatrix::QMatrix;
use llm_burn::random::{SPECIAL_TOKENS, Shape};
use llm_burn::formats::weight_files::WeightFiles;
use llm_burn::{Architecture, Dtype, ForwardOptions, Decoder};
use pas_core::{HeadId, Intervention, SteeredHead, Steering};
use safetensors::Dtype as StDtype;
use safetensors::tensor::TensorView;

use crate::TestBackend;

/// A small Qwen2-shaped random model (biases, GQA, untied table) whose dimensions are whole
/// blocks of 32 (the vocabulary too: 544).
fn shape() -> Shape {
    Shape { hidden: 64, intermediate: 160, layers: 2, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, ..Shape::qwen2_5_0_5b() }
}

/// Copies the model in `from` into `to` with every linear and table weight replaced by its
/// Q8_0 round trip, stored as float32: the float model that multiplies the same values.
fn write_dequantized(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    let files = WeightFiles::open(from).unwrap();
    let config = llm_burn::ModelConfig::load(&from.join("config.json")).unwrap();
    let shape_of = |name: &str| -> Vec<usize> {
        let (h, v, ff, hd) = (config.hidden, config.vocab, config.intermediate, config.head_dim);
        let (q, kv) = (config.heads * hd, config.kv_heads * hd);
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        let bias = name.ends_with(".bias");
        match (leaf, bias) {
            ("embed_tokens" | "lm_head", _) => vec![v, h],
            ("q_proj", false) => vec![q, h],
            ("k_proj" | "v_proj", false) => vec![kv, h],
            ("o_proj", _) => vec![h, q],
            ("gate_proj" | "up_proj", _) => vec![ff, h],
            ("down_proj", _) => vec![h, ff],
            ("q_proj", true) => vec![q],
            ("k_proj" | "v_proj", true) => vec![kv],
            _ => vec![h],
        }
    };
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for name in files.names() {
        let s = shape_of(name);
        let mut v = files.read(name, &s).unwrap();
        if s.len() == 2 {
            // Quantized in the engine's layout ([in, out], blocks along out), then back.
            let t = llm_burn::formats::weight_files::transpose(&v, s[0], s[1]);
            v = llm_burn::formats::weight_files::transpose(&QMatrix::quantize_q8_0(&t, s[1], s[0]).unwrap().dequantize(), s[1], s[0]);
        }
        tensors.insert(name.to_owned(), (s, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors.iter().map(|(n, (s, b))| (n.clone(), TensorView::new(StDtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &to.join("model.safetensors")).unwrap();
}

fn logits(model: &Decoder<TestBackend>, rows: &[&[u32]], steering: &[&Steering]) -> Vec<f32> {
    let out = model.forward(rows, &mut model.new_cache(), ForwardOptions { steering, ..Default::default() }).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A random model (`seed`) loaded three ways: Q8_0, the float model of its dequantized
/// values, and the original float model (the folder is deleted with the returned guard).
fn three_ways(seed: u64) -> (tempfile::TempDir, [Decoder<TestBackend>; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let (orig, deq) = (dir.path().join("orig"), dir.path().join("deq"));
    llm_burn::random::write_model(&orig, &shape(), seed).unwrap();
    write_dequantized(&orig, &deq);
    let dev = Default::default();
    let q = Decoder::<TestBackend>::load_as(&orig, &dev, Dtype::Q8_0).unwrap();
    let d = Decoder::<TestBackend>::load(&deq, &dev).unwrap();
    let f = Decoder::<TestBackend>::load(&orig, &dev).unwrap();
    (dir, [q, d, f])
}

#[test]
fn q8_0_weights_give_the_float_model_of_the_same_values() {
    let (_dir, [q, d, f]) = three_ways(3);
    assert_eq!(q.dtype(), Dtype::Q8_0);
    assert_eq!(q.config().arch, Architecture::Qwen2);
    let rows: [&[u32]; 3] = [&[5, 9, 13, 21, 8, 40, 2], &[7, 7, 100], &[250, 3, 17, 90]];
    let (lq, ld, lf) = (logits(&q, &rows, &[]), logits(&d, &rows, &[]), logits(&f, &rows, &[]));
    // The same values multiplied in another order: float rounding only.
    assert!(max_diff(&lq, &ld) < 1e-4, "q8_0 vs its dequantized float model: {}", max_diff(&lq, &ld));
    // Against the original float weights: the quantization's error, small next to the logits.
    let spread = lf.iter().fold(f32::MIN, |m, &x| m.max(x)) - lf.iter().fold(f32::MAX, |m, &x| m.min(x));
    assert!(max_diff(&lq, &lf) < 0.05 * spread, "q8_0 vs float32: {} against a range of {spread}", max_diff(&lq, &lf));
    assert!(max_diff(&lq, &lf) > 0.0, "the quantized model is not the float one");
    // A row alone gives what it gives in the batch (the panels do not mix rows).
    let alone = logits(&q, &rows[1..2], &[]);
    let v = q.config().vocab;
    assert!(max_diff(&alone, &lq[v..2 * v]) < 1e-4);
}

#[test]
fn capture_steering_generation_and_lora_run_on_quantized_weights() {
    let (_dir, [q, d, _]) = three_ways(11);
    let dev = Default::default();
    let g = q.config().geometry();
    let hd = q.config().head_dim;
    let steer = Intervention::new(g, vec![SteeredHead { head: HeadId::new(1, 2), direction: vec![1.0 / (hd as f32).sqrt(); hd], sigma: 3.0 }])
        .unwrap()
        .at(4.0, pas_core::Positions::All);
    let row: &[u32] = &[12, 40, 77, 5, 9];
    let (sq, sd) = (logits(&q, &[row], &[&steer]), logits(&d, &[row], &[&steer]));
    assert!(max_diff(&sq, &sd) < 1e-4, "steered: {}", max_diff(&sq, &sd));
    assert!(max_diff(&sq, &logits(&q, &[row], &[])) > 1e-3, "the steering changes the quantized model");
    let cap = |m: &Decoder<TestBackend>| {
        let out = m.forward(&[row], &mut m.new_cache(), ForwardOptions { capture: true, ..Default::default() }).unwrap();
        out.heads.unwrap().into_iter().flat_map(|t| t.into_data().to_vec::<f32>().unwrap()).collect::<Vec<f32>>()
    };
    assert!(max_diff(&cap(&q), &cap(&d)) < 1e-4);
    // Greedy generation through the cache: the same tokens as the float model of the same values.
    assert_eq!(q.generate_greedy(row, 6, &[], None).unwrap(), d.generate_greedy(row, 6, &[], None).unwrap());
    // LoRA adapters on quantized weights: passed in, and merged (requantized), agree.
    let spec = llm_burn::LoraSpec { rank: 2, alpha: 4.0, targets: vec![llm_burn::Target::Q, llm_burn::Target::Down] };
    // PEFT's start has B = 0 (no change): give B values so the adapters act.
    let lora = llm_burn::Lora::<TestBackend>::init(q.config(), &spec, 5, &dev).unwrap().map(|name, t| if name.contains("lora_B") { t.ones_like() * 0.05 } else { t });
    let passed = {
        let out = q.forward(&[row], &mut q.new_cache(), ForwardOptions { lora: Some(llm_burn::LoraPass::new(&lora)), ..Default::default() }).unwrap();
        out.logits.into_data().to_vec::<f32>().unwrap()
    };
    let merged = logits(&q.merged(&lora).unwrap(), &[row], &[]);
    let spread = passed.iter().fold(f32::MIN, |m, &x| m.max(x)) - passed.iter().fold(f32::MAX, |m, &x| m.min(x));
    assert!(max_diff(&passed, &merged) < 0.05 * spread, "LoRA passed vs merged: {}", max_diff(&passed, &merged));
}
