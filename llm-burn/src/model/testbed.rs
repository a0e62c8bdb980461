//! The architecture slot, proved with a third family that exists only in tests: `Testbed`
//! is Llama's GGUF layout (Q/K rows permuted for interleaved RoPE) with Qwen2's q/k/v
//! biases, a combination neither real family has. Its whole definition is one variant and
//! one row of [`super::config::ARCHITECTURES`]; nothing in the loader, the name table or the
//! forward pass names it, yet it reads from both formats and gives the same model.

use std::path::Path;

use crate::formats::gguf::unpermute_rows;
use crate::formats::gguf_model::{GGUF_FILE, GgufModel};
use crate::formats::weight_files::WeightFiles;
use crate::model::config::{Architecture, ModelConfig};
use crate::quant::TensorType;
use crate::random::{RandomWeights, SPECIAL_TOKENS, Shape, write_model_as};
use crate::{CpuBackend, Decoder, Dtype, ForwardOptions};

fn shape() -> Shape {
    Shape { hidden: 64, intermediate: 160, layers: 2, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, arch: Architecture::Testbed, ..Shape::llama_3_8b() }
}

fn logits(dir: &Path, dtype: Dtype) -> Vec<f32> {
    let model = Decoder::<CpuBackend>::load_as(dir, &Default::default(), dtype).unwrap();
    assert_eq!(model.config().arch, Architecture::Testbed);
    let rows: [&[u32]; 2] = [&[5, 9, 13, 21, 8, 40, 2], &[250, 3, 17]];
    let out = crate::quant::qmatrix::with_float_products(|| model.forward(&rows, &mut model.new_cache(), ForwardOptions::default()).unwrap());
    out.logits.into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_third_family_is_its_row_of_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (hf, file) = (dir.path().join("hf"), dir.path().join("file"));
    write_model_as(&hf, &shape(), 5, RandomWeights::Bf16).unwrap();
    write_model_as(&file, &shape(), 5, RandomWeights::Gguf(TensorType::Q8_0)).unwrap();

    // Its config names it, and its row gives the biases the config does not mention.
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["model_type"], "testbed");
    json.as_object_mut().unwrap().remove("attention_bias");
    let config = ModelConfig::try_from(serde_json::from_value::<crate::model::config::HfConfig>(json).unwrap()).unwrap();
    assert_eq!((config.arch, config.qkv_bias), (Architecture::Testbed, true));

    // The file holds its Q rows (and their biases) permuted, as its row says; the reader
    // puts them back in Hugging Face's order.
    let gguf = GgufModel::open(&file.join(GGUF_FILE), Some(&file.join("config.json"))).unwrap();
    let st = WeightFiles::open(&hf).unwrap();
    let (hd, h) = (shape().head_dim(), shape().hidden);
    for (leaf, gguf_leaf, heads) in [("q_proj", "attn_q", 4), ("k_proj", "attn_k", 2)] {
        let name = format!("model.layers.1.self_attn.{leaf}.weight");
        let want = st.read(&name, &[heads * hd, h]).unwrap();
        let raw = gguf.gguf().dequantize(gguf.gguf().tensor(&format!("blk.1.{gguf_leaf}.weight")).unwrap()).unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max_diff(&raw, &want) > 0.5 * scale, "{leaf}: the file's rows are permuted");
        assert!(max_diff(&unpermute_rows(&raw, heads, heads * hd, h), &want) < 0.02 * scale, "{leaf}: and un-permuted they are the weights");
        assert!(max_diff(&gguf.read_f32(&name, &[heads * hd, h]).unwrap(), &want) < 0.02 * scale, "{leaf}: as the reader gives them");
        let bias = format!("model.layers.1.self_attn.{leaf}.bias");
        assert_eq!(gguf.read_f32(&bias, &[heads * hd]).unwrap(), st.read(&bias, &[heads * hd]).unwrap(), "{leaf}: biases move with their rows");
    }

    // The same model from either format: the float folder, and the file's blocks.
    let (from_hf, from_file) = (logits(&hf, Dtype::F32), logits(&file, Dtype::File));
    let range = from_hf.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(range > 1e-3 && max_diff(&from_hf, &from_file) < 0.05 * range, "{} against logits up to {range}", max_diff(&from_hf, &from_file));
}
