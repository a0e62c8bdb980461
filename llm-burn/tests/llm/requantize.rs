//! `requantize`: a GGUF file re-encoded to Q4_K or Q8_0 keeps every metadata entry as stored,
//! its names and shapes, and stays the same model to the quantization's error.

use llm_burn::formats::gguf::Gguf;
use llm_burn::quant::TensorType;
use llm_burn::formats::gguf_write::{GgufWriter, Meta, Planned};
use llm_burn::random::{RandomWeights, SPECIAL_TOKENS, Shape, write_model_as};
use llm_burn::formats::requantize::{requantize, target_type};
use llm_burn::{Dtype, ForwardOptions, Decoder};

use crate::TestBackend;

fn logits(dir: &std::path::Path) -> Vec<f32> {
    let model = Decoder::<TestBackend>::load_as(dir, &Default::default(), Dtype::File).unwrap();
    let rows: [&[u32]; 2] = [&[5, 9, 13, 21, 8, 40, 2], &[250, 3, 17]];
    let out = model.forward(&rows, &mut model.new_cache(), ForwardOptions::default()).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap()
}

/// A folder holding `src`'s config and tokenizer and `gguf` as its model file.
fn folder_with(src: &std::path::Path, dst: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst.join(llm_burn::formats::GGUF_FILE)
}

#[test]
fn a_q8_0_file_requantized_to_q4_k_is_the_same_model_to_the_quantization_error() {
    // Width 256 (whole Q4_K rows), MLP 320 (its down projection falls back to Q8_0).
    let shape = Shape { hidden: 256, intermediate: 320, layers: 2, heads: 4, kv_heads: 2, vocab: 512 + SPECIAL_TOKENS, ..Shape::qwen2_5_0_5b() };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("q8");
    write_model_as(&src, &shape, 3, RandomWeights::Gguf(TensorType::Q8_0)).unwrap();
    let src_file = src.join(llm_burn::formats::GGUF_FILE);
    let q4 = dir.path().join("q4");
    let mut seen = 0;
    let plan = requantize(&src_file, &folder_with(&src, &q4), TensorType::Q4_K, &mut |done, _| seen = done).unwrap();
    let (a, b) = (Gguf::open(&src_file).unwrap(), Gguf::open(q4.join(llm_burn::formats::GGUF_FILE)).unwrap());
    assert_eq!(seen, a.tensors.len());
    for (s, (t, p)) in a.tensors.iter().zip(b.tensors.iter().zip(&plan)) {
        assert_eq!((&t.name, &t.shape, t.kind), (&s.name, &s.shape, target_type(&s.shape, s.kind, TensorType::Q4_K)));
        assert_eq!(p.kind, t.kind);
        if t.kind == s.kind {
            assert_eq!(a.tensor_bytes(s).unwrap(), b.tensor_bytes(t).unwrap(), "`{}` is copied as stored", t.name);
        }
    }
    let kind = |n: &str| b.tensor(n).unwrap().kind;
    assert_eq!((kind("blk.0.attn_q.weight"), kind("blk.0.ffn_down.weight"), kind("output_norm.weight")), (TensorType::Q4_K, TensorType::Q8_0, TensorType::F32));
    let (ls, lq) = (logits(&src), logits(&q4));
    let spread = ls.iter().fold(f32::MIN, |m, &x| m.max(x)) - ls.iter().fold(f32::MAX, |m, &x| m.min(x));
    let d = ls.iter().zip(&lq).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(d > 0.0 && d < 0.1 * spread, "Q4_K from Q8_0: {d} against a range of {spread}");
    // Requantizing to the type it already has is a copy: the same logits, bit for bit.
    let same = dir.path().join("same");
    requantize(&src_file, &folder_with(&src, &same), TensorType::Q8_0, &mut |_, _| {}).unwrap();
    assert_eq!(logits(&same), ls);
}

#[test]
fn metadata_is_copied_as_stored_but_the_file_type() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    // An array of i32 (type 5) and a u64 (type 10): types a reader's values would not keep.
    let mut array = 5u32.to_le_bytes().to_vec();
    array.extend(3u64.to_le_bytes());
    for v in [-1i32, 2, 3] {
        array.extend(v.to_le_bytes());
    }
    let meta = [
        ("general.architecture", Meta::Str("llama".into())),
        ("general.file_type", Meta::U32(3)),
        ("tokenizer.ggml.token_type", Meta::Raw { kind: 9, bytes: array }),
        ("x.big", Meta::Raw { kind: 10, bytes: 7u64.to_le_bytes().to_vec() }),
    ];
    let plan = [
        Planned { name: "w".into(), shape: vec![2, 256], kind: TensorType::F32 },
        Planned { name: "n".into(), shape: vec![3], kind: TensorType::F32 },
    ];
    let mut w = GgufWriter::create(&src, &meta, &plan).unwrap();
    let values: Vec<f32> = (0..515).map(|i| (i as f32 * 0.37).sin()).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.write(&bytes[..512 * 4]).unwrap();
    w.write(&bytes[512 * 4..]).unwrap();
    w.finish().unwrap();
    requantize(&src, &dst, TensorType::Q4_K, &mut |_, _| {}).unwrap();
    let (a, b) = (Gguf::open(&src).unwrap(), Gguf::open(&dst).unwrap());
    let entries = |g: &Gguf| -> Vec<(String, u32, Vec<u8>)> { g.raw_metadata().filter(|e| e.0 != "general.file_type").map(|(k, t, v)| (k.into(), t, v.to_vec())).collect() };
    assert_eq!(entries(&a), entries(&b));
    assert_eq!(b.get_u64("general.file_type").unwrap(), 14);
    assert_eq!(b.get("tokenizer.ggml.token_type").unwrap(), a.get("tokenizer.ggml.token_type").unwrap());
    assert_eq!(b.tensor("w").unwrap().kind, TensorType::Q4_K);
    assert_eq!(b.dequantize(b.tensor("n").unwrap()).unwrap(), values[512..].to_vec());
    let back = b.dequantize(b.tensor("w").unwrap()).unwrap();
    assert!(values.iter().zip(&back).all(|(x, y)| (x - y).abs() < 0.1));
    assert!(requantize(&src, &dir.path().join("c.gguf"), TensorType::Q6_K, &mut |_, _| {}).unwrap_err().to_string().contains("not supported"));
}
