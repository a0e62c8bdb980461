//! A folder holding only its GGUF file (what `fetch-model` writes): every dtype loads from the
//! file, the float load is the float32 copy's model, and the copy streamed from the file is
//! the safetensors crate's file, byte for byte, with the same identity as when it is written.

use std::path::Path;

use llm_burn::quant::TensorType;
use llm_burn::formats::gguf_model::{FLOAT_COPY, GgufModel};
use llm_burn::formats::identity::{content_hash, float_weights_len};
use llm_burn::random::{RandomWeights, SPECIAL_TOKENS, Shape, write_model_as};
use llm_burn::{Dtype, ForwardOptions, Decoder, ModelConfig};
use safetensors::SafeTensors;

use crate::TestBackend;

fn logits(dir: &Path, dtype: Dtype) -> Vec<f32> {
    let model = Decoder::<TestBackend>::load_as(dir, &Default::default(), dtype).unwrap();
    let rows: [&[u32]; 2] = [&[5, 9, 13, 21, 8, 40, 2], &[250, 3, 17]];
    let out = model.forward(&rows, &mut model.new_cache(), ForwardOptions::default()).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap()
}

/// The identity with its memo removed, so that it is computed from the files as they are.
fn fresh_hash(dir: &Path) -> String {
    std::fs::remove_file(dir.join(".content-sha256")).ok();
    content_hash(dir).unwrap()
}

#[test]
fn a_folder_with_only_its_gguf_file_is_its_float32_copy_in_every_respect() {
    // Llama: its file's Q/K rows are permuted, and the float load must put them back.
    let shape = Shape { hidden: 64, intermediate: 160, layers: 2, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, ..Shape::llama_3_8b() };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_model_as(d, &shape, 7, RandomWeights::Gguf(TensorType::Q8_0)).unwrap();
    assert!(!d.join(FLOAT_COPY).exists());
    let (from_file, q8_from_file) = (logits(d, Dtype::F32), logits(d, Dtype::Q8_0));
    let (hash, len) = (fresh_hash(d), float_weights_len(d).unwrap());

    assert!(llm_burn::formats::convert::ensure_float_copy(d).unwrap(), "the copy is written when missing");
    assert!(!llm_burn::formats::convert::ensure_float_copy(d).unwrap(), "and only once");
    let bytes = std::fs::read(d.join(FLOAT_COPY)).unwrap();
    assert_eq!(len, bytes.len() as u64, "the size measured without the copy is the copy's");
    assert_eq!(hash, fresh_hash(d), "the identity does not depend on whether the copy exists");
    // The same bytes as the safetensors crate writes for these tensors.
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let meta = std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]);
    assert_eq!(safetensors::serialize(st.tensors(), Some(meta)).unwrap(), bytes);
    // Loading from the copy (safetensors are preferred when present) gives the same model.
    assert_eq!(logits(d, Dtype::F32), from_file);
    assert_eq!(logits(d, Dtype::Q8_0), q8_from_file);
    let spread = from_file.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(spread > 1e-3, "logits carry signal: {spread}");
}

#[test]
fn a_gguf_file_without_hyper_parameters_or_config_is_a_clear_error() {
    let shape = Shape { hidden: 64, intermediate: 160, layers: 1, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, ..Shape::qwen2_5_0_5b() };
    let dir = tempfile::tempdir().unwrap();
    write_model_as(dir.path(), &shape, 1, RandomWeights::Gguf(TensorType::Q8_0)).unwrap();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = Decoder::<TestBackend>::load_as(dir.path(), &Default::default(), Dtype::F32).unwrap_err().to_string();
    assert!(err.contains("model.gguf") && err.contains("hyper-parameters"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = Decoder::<TestBackend>::load(empty.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}

/// The default model's configuration read from its GGUF metadata alone (no `config.json`
/// beside it) is the one its folder's `config.json` gives.
#[test]
fn the_default_models_metadata_is_its_config() {
    let Some(dir) = llm_burn::default_model_dir() else {
        eprintln!("skipped: the default model is not fetched");
        return;
    };
    let gguf = dir.join(llm_burn::formats::GGUF_FILE);
    if !gguf.is_file() {
        eprintln!("skipped: no model.gguf in {}", dir.display());
        return;
    }
    let alone = tempfile::tempdir().unwrap();
    let link = alone.path().join("model.gguf");
    std::fs::hard_link(&gguf, &link).or_else(|_| std::fs::copy(&gguf, &link).map(|_| ())).unwrap();
    let from_metadata = GgufModel::open(&link, None).unwrap().config().clone();
    assert_eq!(from_metadata, ModelConfig::load(&dir.join("config.json")).unwrap());
    assert_eq!(from_metadata.layers, 30, "SmolLM2-135M has 30 layers");
}
