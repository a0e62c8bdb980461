//! Q4_K weights: `--dtype q4_k` (quantized at load) and a random model written as a Q4_K
//! GGUF file (`random-model --weights q4_k`, loaded with `--dtype file`) hold the same blocks,
//! stay near the float32 model, and every path that acts on activations keeps working.

use llm_burn::formats::gguf::Gguf;
use llm_burn::quant::TensorType;
use llm_burn::random::{RandomWeights, SPECIAL_TOKENS, Shape, write_model_as};
use llm_burn::{Dtype, ForwardOptions, Decoder};
use pas_core::{HeadId, Intervention, SteeredHead};

use crate::TestBackend;

/// Small shapes whose widths are whole Q4_K super-blocks (256), Qwen2 (biases) and Llama
/// (permuted Q/K rows in its files); the Llama one's MLP (320) is not, so its down
/// projection falls back to Q8_0.
fn shapes() -> [Shape; 2] {
    let small = |s: Shape, ff: usize| Shape { hidden: 256, intermediate: ff, layers: 2, heads: 4, kv_heads: 2, vocab: 512 + SPECIAL_TOKENS, ..s };
    [small(Shape::qwen2_5_0_5b(), 512), small(Shape::llama_3_8b(), 320)]
}

fn logits(model: &Decoder<TestBackend>, rows: &[&[u32]], steering: &[&pas_core::Steering]) -> Vec<f32> {
    let out = model.forward(rows, &mut model.new_cache(), ForwardOptions { steering, ..Default::default() }).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn spread(v: &[f32]) -> f32 {
    v.iter().fold(f32::MIN, |m, &x| m.max(x)) - v.iter().fold(f32::MAX, |m, &x| m.min(x))
}

const ROWS: [&[u32]; 3] = [&[5, 9, 13, 21, 8, 40, 2], &[7, 7, 100], &[250, 3, 17, 90]];

#[test]
fn q4_k_at_load_and_the_written_q4_k_file_are_the_same_model_near_float32() {
    for shape in shapes() {
        let dir = tempfile::tempdir().unwrap();
        let (bf16, gguf) = (dir.path().join("bf16"), dir.path().join("gguf"));
        write_model_as(&bf16, &shape, 4, RandomWeights::Bf16).unwrap();
        write_model_as(&gguf, &shape, 4, RandomWeights::Gguf(TensorType::Q4_K)).unwrap();
        let g = Gguf::open_header(gguf.join(llm_burn::formats::GGUF_FILE)).unwrap();
        let kind = |n: &str| g.tensor(n).unwrap().kind;
        assert_eq!((kind("blk.0.attn_q.weight"), kind("token_embd.weight"), kind("output_norm.weight")), (TensorType::Q4_K, TensorType::Q4_K, TensorType::F32));
        let down = if shape.intermediate % 256 == 0 { TensorType::Q4_K } else { TensorType::Q8_0 };
        assert_eq!(kind("blk.1.ffn_down.weight"), down, "{:?}", shape.arch);
        let dev = Default::default();
        let q = Decoder::<TestBackend>::load_as(&bf16, &dev, Dtype::Q4K).unwrap();
        let file = Decoder::<TestBackend>::load_as(&gguf, &dev, Dtype::File).unwrap();
        let f = Decoder::<TestBackend>::load(&bf16, &dev).unwrap();
        assert_eq!(q.dtype(), Dtype::Q4K);
        let (lq, lfile, lf) = (logits(&q, &ROWS, &[]), logits(&file, &ROWS, &[]), logits(&f, &ROWS, &[]));
        // The same blocks (the file's Q/K rows permuted, then put back): the same products.
        assert_eq!(lq, lfile, "{:?}: q4_k at load vs the Q4_K file", shape.arch);
        // Against float32: the quantization's error, small next to the logits' range.
        let (d, s) = (max_diff(&lq, &lf), spread(&lf));
        assert!(d > 0.0 && d < 0.1 * s, "{:?}: q4_k vs float32: {d} against a range of {s}", shape.arch);
    }
}

#[test]
fn steering_capture_generation_and_lora_run_on_q4_k_weights() {
    let shape = shapes()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    write_model_as(dir.path(), &shape, 9, RandomWeights::Bf16).unwrap();
    let dev = Default::default();
    let q = Decoder::<TestBackend>::load_as(dir.path(), &dev, Dtype::Q4K).unwrap();
    let f = Decoder::<TestBackend>::load(dir.path(), &dev).unwrap();
    let hd = q.config().head_dim;
    let steer = Intervention::new(q.config().geometry(), vec![SteeredHead { head: HeadId::new(1, 2), direction: vec![1.0 / (hd as f32).sqrt(); hd], sigma: 3.0 }])
        .unwrap()
        .at(4.0, pas_core::Positions::All);
    let row: &[u32] = &[12, 40, 77, 5, 9];
    // What the steering changes is what it changes in float32, to the quantization's error.
    let shift = |m: &Decoder<TestBackend>| -> Vec<f32> { logits(m, &[row], &[&steer]).iter().zip(logits(m, &[row], &[])).map(|(a, b)| a - b).collect() };
    let (sq, sf) = (shift(&q), shift(&f));
    assert!(spread(&sq) > 1e-3 && max_diff(&sq, &sf) < 0.2 * spread(&sf), "steering shift: {} against {}", max_diff(&sq, &sf), spread(&sf));
    // Head capture: the heads of a row alone are those of the row in a batch.
    let cap = |rows: &[&[u32]]| {
        let out = q.forward(rows, &mut q.new_cache(), ForwardOptions { capture: true, ..Default::default() }).unwrap();
        out.heads.unwrap().into_iter().map(|t| t.into_data().to_vec::<f32>().unwrap()).collect::<Vec<_>>()
    };
    let (alone, batch) = (cap(&[row]), cap(&[row, &[3, 4, 5, 6, 7]]));
    assert!(alone.iter().zip(&batch).all(|(a, b)| max_diff(a, &b[..a.len()]) < 1e-4));
    // Greedy generation through the cache: the cached steps give the full recompute's tokens.
    let tokens = q.generate_greedy(row, 5, &[], None).unwrap();
    let mut seq = row.to_vec();
    for &t in &tokens {
        let l = logits(&q, &[&seq], &[]);
        let v = q.config().vocab;
        assert_eq!(llm_burn::model::argmax(&l[l.len() - v..]) as u32, t);
        seq.push(t);
    }
    // LoRA on Q4_K weights: passed in, and merged (requantized to Q8_0), agree.
    let spec = llm_burn::LoraSpec { rank: 2, alpha: 4.0, targets: vec![llm_burn::Target::Q, llm_burn::Target::Down] };
    let lora = llm_burn::Lora::<TestBackend>::init(q.config(), &spec, 5, &dev).unwrap().map(|name, t| if name.contains("lora_B") { t.ones_like() * 0.05 } else { t });
    let out = q.forward(&[row], &mut q.new_cache(), ForwardOptions { lora: Some(llm_burn::LoraPass::new(&lora)), ..Default::default() }).unwrap();
    let passed = out.logits.into_data().to_vec::<f32>().unwrap();
    let merged = logits(&q.merged(&lora).unwrap(), &[row], &[]);
    assert!(max_diff(&passed, &merged) < 0.05 * spread(&passed), "LoRA passed vs merged: {}", max_diff(&passed, &merged));
    assert!(max_diff(&passed, &logits(&q, &[row], &[])) > 1e-3, "the adapters act");
}
