//! Weights kept as a GGUF file holds them (`Dtype::File`): the model gives what the float
//! model of the same (dequantized) values gives, for Qwen2 (biases) and for Llama, whose
//! files permute the Q and K rows.

use std::path::Path;

use llm_burn::formats::GGUF_FILE;
use llm_burn::quant::qmatrix::QMatrix;
use llm_burn::random::{SPECIAL_TOKENS, Shape};
use llm_burn::{Architecture, Dtype, ForwardOptions, Decoder};
use safetensors::tensor::TensorView;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::TestBackend;
use crate::gguf_format::{Writer, permute};

/// The GGUF name of a Hugging Face tensor name (llama.cpp's).
fn gguf_name(hf: &str) -> String {
    let fixed = [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return (*g).to_owned();
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
    let (i, leaf) = rest.split_once('.').expect("layer.leaf");
    let leaf = [
        ("input_layernorm.", "attn_norm."),
        ("post_attention_layernorm.", "ffn_norm."),
        ("self_attn.q_proj.", "attn_q."),
        ("self_attn.k_proj.", "attn_k."),
        ("self_attn.v_proj.", "attn_v."),
        ("self_attn.o_proj.", "attn_output."),
        ("mlp.gate_proj.", "ffn_gate."),
        ("mlp.up_proj.", "ffn_up."),
        ("mlp.down_proj.", "ffn_down."),
    ]
    .iter()
    .find_map(|(h, g)| leaf.strip_prefix(h).map(|w| format!("{g}{w}")))
    .expect("a known leaf");
    format!("blk.{i}.{leaf}")
}

/// Writes the random model in `from` as `file/model.gguf` (every matrix Q8_0 in blocks
/// along its input, Q/K rows permuted as llama.cpp does for Llama) and `deq/` (the float
/// model of the same values), both with `from`'s config and tokenizer.
fn write_both(from: &Path, file: &Path, deq: &Path, arch: Architecture, heads: (usize, usize)) {
    for d in [file, deq] {
        std::fs::create_dir_all(d).unwrap();
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            if from.join(f).is_file() {
                std::fs::copy(from.join(f), d.join(f)).unwrap();
            }
        }
    }
    let shards: Vec<Vec<u8>> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let files: Vec<SafeTensors<'_>> = shards.iter().map(|b| SafeTensors::deserialize(b).unwrap()).collect();
    let mut w = Writer::default();
    let mut deq_tensors = Vec::new();
    let mut names: Vec<(String, usize)> = files.iter().enumerate().flat_map(|(i, st)| st.names().into_iter().map(move |n| (n.to_owned(), i))).collect();
    names.sort();
    for (name, i) in names {
        let t = files[i].tensor(&name).unwrap();
        let v: Vec<f32> = match t.dtype() {
            StDtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            StDtype::BF16 => t.data().chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => panic!("{name}: {other:?}"),
        };
        let shape = t.shape().to_vec();
        let values = if let [rows, cols] = shape[..] {
            let q = QMatrix::quantize_q8_0(&v, rows, cols).unwrap();
            let n_heads = match name.rsplit('.').nth(1) {
                Some("q_proj") if arch.gguf_permutes_qk() => Some(heads.0),
                Some("k_proj") if arch.gguf_permutes_qk() => Some(heads.1),
                _ => None,
            };
            let file_q = match n_heads {
                Some(n) => QMatrix::quantize_q8_0(&permute(&v, n, rows, cols), rows, cols).unwrap(),
                None => q.clone(),
            };
            w.tensor(&gguf_name(&name), &[rows as u64, cols as u64], 8, file_q.blocks());
            q.dequantize()
        } else {
            w.tensor(&gguf_name(&name), &[shape[0] as u64], 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
            v
        };
        deq_tensors.push((name, shape, values.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
    }
    std::fs::write(file.join(GGUF_FILE), w.finish()).unwrap();
    let views: Vec<(String, TensorView<'_>)> = deq_tensors.iter().map(|(n, s, b)| (n.clone(), TensorView::new(StDtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &deq.join("model.safetensors")).unwrap();
}

fn logits(model: &Decoder<TestBackend>, rows: &[&[u32]]) -> Vec<f32> {
    let out = model.forward(rows, &mut model.new_cache(), ForwardOptions::default()).unwrap();
    out.logits.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn every_familys_model_in_its_files_blocks_gives_the_float_model_of_the_same_values() {
    // Every family of the architecture table, each with its own row's layout (biases,
    // permuted Q/K rows in its files): a new row is tested here as it is added.
    let small = |arch: Architecture| Shape { hidden: 64, intermediate: 160, layers: 2, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, arch, ..Shape::qwen2_5_0_5b() };
    assert!(llm_burn::model::config::ARCHITECTURES.len() >= 2);
    for shape in llm_burn::model::config::ARCHITECTURES.iter().map(|f| small(f.arch)) {
        let dir = tempfile::tempdir().unwrap();
        let (orig, file, deq) = (dir.path().join("orig"), dir.path().join("file"), dir.path().join("deq"));
        llm_burn::random::write_model(&orig, &shape, 5).unwrap();
        write_both(&orig, &file, &deq, shape.arch, (shape.heads, shape.kv_heads));
        let dev = Default::default();
        let f = Decoder::<TestBackend>::load_as(&file, &dev, Dtype::File).unwrap();
        let d = Decoder::<TestBackend>::load(&deq, &dev).unwrap();
        assert_eq!((f.dtype(), f.config().arch), (Dtype::File, shape.arch));
        let rows: [&[u32]; 3] = [&[5, 9, 13, 21, 8, 40, 2], &[7, 7, 100], &[250, 3, 17, 90]];
        let (lf, ld) = (llm_burn::quant::qmatrix::with_float_products(|| logits(&f, &rows)), logits(&d, &rows));
        let diff = lf.iter().zip(&ld).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let range = ld.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(diff < 1e-4 && range > 1e-3, "{:?}: file vs its dequantized float model: {diff} (logits up to {range})", shape.arch);
        // Integer products (the default) round the activations to 8 bits: near, not equal.
        let li = logits(&f, &rows);
        let diff = li.iter().zip(&ld).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 0.05 * range, "{:?}: integer products vs the float model: {diff} (logits up to {range})", shape.arch);
    }
}

#[test]
fn a_folder_without_its_gguf_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape { hidden: 64, intermediate: 160, layers: 1, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, ..Shape::qwen2_5_0_5b() };
    llm_burn::random::write_model(dir.path(), &shape, 1).unwrap();
    let err = Decoder::<TestBackend>::load_as(dir.path(), &Default::default(), Dtype::File).unwrap_err().to_string();
    assert!(err.contains("model.gguf") && err.contains("fetch-model"), "{err}");
}

#[test]
fn the_architecture_table_reads_back_every_name_it_writes() {
    use llm_burn::model::config::ARCHITECTURES;
    for f in ARCHITECTURES {
        assert_eq!(Architecture::from_gguf(f.gguf), Some(f.arch));
        for t in f.model_types {
            assert_eq!(Architecture::from_model_type(t), Some(f.arch), "{t}");
        }
        assert_eq!(f.arch.model_type(), f.model_types[0]);
        assert_eq!(f.arch.family(), f);
    }
    assert!(Architecture::supported().contains("qwen2") && Architecture::from_model_type("gpt_neox").is_none());
}
