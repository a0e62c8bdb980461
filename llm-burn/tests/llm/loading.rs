//! The loader on variants of the tiny model that the default model does not exercise:
//! sharded files with an index, F16 and BF16 weights, q/k/v biases (Qwen2), and Llama-3
//! RoPE scaling.

use std::collections::BTreeMap;
use std::path::Path;

use llm_burn::{ForwardOptions, Decoder};
use pas_core::{HeadId, Intervention, Positions, SteeredHead};
use safetensors::{Dtype, SafeTensors};

use crate::TestBackend;

const ROWS: [&[u32]; 2] = [&[5, 9, 13, 21, 8], &[7, 3, 30]];

/// Tensors by name: shape and values.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The tiny model's tensors as `f32` (name → (shape, values)), and its `config.json`.
fn tiny_tensors(seed: u64) -> (Tensors, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    llm_burn::tiny::write_weights(dir.path(), seed, 50).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect();
    let config = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    (tensors, config)
}

/// Writes `tensors` (in `dtype`) as one file, or as `shards` files with an index.
fn write(dir: &Path, tensors: &Tensors, config: &serde_json::Value, dtype: Dtype, shards: usize) {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let encode = |v: &[f32]| -> Vec<u8> {
        match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            other => panic!("{other:?}"),
        }
    };
    let names: Vec<&String> = tensors.keys().collect();
    let per = names.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (s, chunk) in names.chunks(per).enumerate() {
        let file = if shards == 1 { "model.safetensors".to_owned() } else { format!("model-{:05}-of-{shards:05}.safetensors", s + 1) };
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = chunk.iter().map(|n| ((*n).clone(), tensors[*n].0.clone(), encode(&tensors[*n].1))).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            data.iter().map(|(n, sh, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, sh.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

fn logits_of(dir: &Path) -> Vec<f32> {
    let model = Decoder::<TestBackend>::load(dir, &Default::default()).unwrap();
    let mut cache = model.new_cache();
    model.forward(&ROWS, &mut cache, ForwardOptions::default()).unwrap().logits.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn sharded_files_with_an_index_load_like_one_file() {
    let (tensors, config) = tiny_tensors(3);
    let (one, three) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(one.path(), &tensors, &config, Dtype::F32, 1);
    write(three.path(), &tensors, &config, Dtype::F32, 3);
    assert!(three.path().join("model-00003-of-00003.safetensors").is_file());
    assert_eq!(logits_of(one.path()), logits_of(three.path()));
}

#[test]
fn f16_and_bf16_weights_load_as_their_exact_values() {
    let (tensors, config) = tiny_tensors(4);
    for (dtype, round) in [(Dtype::F16, (|x: f32| half::f16::from_f32(x).to_f32()) as fn(f32) -> f32), (Dtype::BF16, |x: f32| half::bf16::from_f32(x).to_f32())] {
        let rounded: BTreeMap<_, _> = tensors.iter().map(|(n, (s, v))| (n.clone(), (s.clone(), v.iter().map(|x| round(*x)).collect()))).collect();
        let (half_dir, f32_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(half_dir.path(), &tensors, &config, dtype, 1);
        write(f32_dir.path(), &rounded, &config, Dtype::F32, 1);
        assert_eq!(logits_of(half_dir.path()), logits_of(f32_dir.path()), "{dtype:?}");
    }
}

#[test]
fn qkv_biases_load_and_a_v_bias_equals_steering_every_head_by_it() {
    let (mut tensors, plain_config) = tiny_tensors(5);
    let (heads, kv, hd, layers) = (4usize, 2usize, 4usize, 2usize);
    let plain = tempfile::tempdir().unwrap();
    write(plain.path(), &tensors, &plain_config, Dtype::F32, 1);
    let mut config = plain_config.clone();
    config["attention_bias"] = true.into();
    config["model_type"] = "qwen2".into();
    // A missing bias is an error that names it.
    let missing = tempfile::tempdir().unwrap();
    write(missing.path(), &tensors, &config, Dtype::F32, 1);
    let err = Decoder::<TestBackend>::load(missing.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("self_attn.q_proj.bias"), "{err}");
    // Zero biases change nothing, bit for bit.
    for l in 0..layers {
        tensors.insert(format!("model.layers.{l}.self_attn.q_proj.bias"), (vec![heads * hd], vec![0.0; heads * hd]));
        tensors.insert(format!("model.layers.{l}.self_attn.k_proj.bias"), (vec![kv * hd], vec![0.0; kv * hd]));
        tensors.insert(format!("model.layers.{l}.self_attn.v_proj.bias"), (vec![kv * hd], vec![0.0; kv * hd]));
    }
    let zero = tempfile::tempdir().unwrap();
    write(zero.path(), &tensors, &config, Dtype::F32, 1);
    let base = logits_of(plain.path());
    assert_eq!(logits_of(zero.path()), base);
    // Attention weights sum to one, so a v bias `b` adds `b` (of the head's key/value head) to
    // every head output: the same as steering every head by it at every position.
    let biases: Vec<Vec<f32>> = (0..layers).map(|l| (0..kv * hd).map(|i| ((i + 3 * l) as f32 * 0.9).sin() * 0.7).collect()).collect();
    for (l, b) in biases.iter().enumerate() {
        tensors.insert(format!("model.layers.{l}.self_attn.v_proj.bias"), (vec![kv * hd], b.clone()));
    }
    let vb = tempfile::tempdir().unwrap();
    write(vb.path(), &tensors, &config, Dtype::F32, 1);
    let with_bias = logits_of(vb.path());
    let model = Decoder::<TestBackend>::load(plain.path(), &Default::default()).unwrap();
    let group = heads / kv;
    let mut steered = Vec::new();
    for (l, b) in biases.iter().enumerate() {
        for h in 0..heads {
            let v = &b[(h / group) * hd..(h / group + 1) * hd];
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            steered.push(SteeredHead { head: HeadId::new(l as u32, h as u32), direction: v.iter().map(|x| x / norm).collect(), sigma: norm });
        }
    }
    let steering = Intervention::new(pas_core::Steerable::geometry(&model), steered).unwrap().at(1.0, Positions::All);
    let mut cache = model.new_cache();
    let by_steering = model.forward(&ROWS, &mut cache, ForwardOptions { steering: &[&steering], ..Default::default() }).unwrap().logits.into_data().to_vec::<f32>().unwrap();
    assert!(with_bias.iter().zip(&by_steering).all(|(a, b)| (a - b).abs() < 1e-4));
    assert!(with_bias.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3), "the v bias changed nothing");
    // A q bias is applied too.
    tensors.insert("model.layers.0.self_attn.q_proj.bias".into(), (vec![heads * hd], vec![0.5; heads * hd]));
    let qb = tempfile::tempdir().unwrap();
    write(qb.path(), &tensors, &config, Dtype::F32, 1);
    assert_ne!(logits_of(qb.path()), with_bias);
}

#[test]
fn llama3_rope_scaling_is_read_and_scales_only_long_wavelengths() {
    let (tensors, plain_config) = tiny_tensors(6);
    let plain = tempfile::tempdir().unwrap();
    write(plain.path(), &tensors, &plain_config, Dtype::F32, 1);
    let base = logits_of(plain.path());
    // head_dim 4, theta 1e4: frequencies 1 and 0.01 (wavelengths 6.3 and 628 positions).
    let scaled = |original: f64| {
        let mut c = plain_config.clone();
        c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": original});
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &tensors, &c, Dtype::F32, 1);
        let cfg = llm_burn::ModelConfig::load(&dir.path().join("config.json")).unwrap();
        let r = cfg.rope_scaling.expect("rope scaling read");
        assert_eq!((r.factor, r.low_freq_factor, r.high_freq_factor, r.original_max_position_embeddings), (8.0, 1.0, 4.0, original));
        logits_of(dir.path())
    };
    // Every wavelength below original / high_freq_factor: nothing is scaled.
    assert_eq!(scaled(1e9), base);
    // Original 64: the 628-position wavelength (above 64 / 1) is divided by 8, the other kept.
    assert_ne!(scaled(64.0), base);
}
