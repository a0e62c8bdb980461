//! Training over a GGUF file's blocks (`Dtype::File`): the frozen projections run the
//! engine's products under autodiff (`llm_burn::model::frozen`), and the adapters' gradients
//! are the float32 model's of the same values, and the loss's finite differences.

use burn::tensor::{Tensor, TensorData};
use dpo_baseline::data::Pair;
use dpo_baseline::train::{dpo_loss, option_logprobs};
use llm_burn::model::lora::{Lora, LoraSpec, Target};
use llm_burn::quant::TensorType;
use llm_burn::quant::qmatrix::with_float_products;
use llm_burn::random::{RandomWeights, SPECIAL_TOKENS, Shape, write_model_as};
use llm_burn::{Decoder, Dtype, LoraPass};

use super::{AD, B};

const OPTIONS: [u32; 5] = [40, 41, 42, 43, 44];

/// A Qwen2-shaped random model (biases) as one GGUF file of Q8_0 blocks.
fn file_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape { hidden: 64, intermediate: 160, layers: 2, heads: 4, kv_heads: 2, vocab: 288 + SPECIAL_TOKENS, ..Shape::qwen2_5_0_5b() };
    write_model_as(dir.path(), &shape, 11, RandomWeights::Gguf(TensorType::Q8_0)).unwrap();
    dir
}

/// Adapters on every projection with non-zero B (fresh ones have B = 0, where A gets no
/// gradient), `delta` added to the named tensor's entry `at`.
fn adapters(model: &Decoder<B>, delta: Option<(&str, usize, f32)>) -> Lora<B> {
    let spec = LoraSpec { rank: 4, alpha: 8.0, targets: Target::ALL.to_vec() };
    let lora = Lora::<B>::init(model.config(), &spec, 3, &Default::default()).unwrap();
    lora.map(|name, t| {
        let t = if name.contains(".lora_B.") { t.ones_like() * 0.05 } else { t };
        match delta {
            Some((n, at, h)) if n == name => {
                let mut v = t.clone().into_data().to_vec::<f32>().unwrap();
                v[at] += h;
                Tensor::from_data(TensorData::new(v, t.dims()), &Default::default())
            }
            _ => t,
        }
    })
}

/// The DPO loss of a fixed batch and the adapters' gradients, in [`Lora::tensors`] order.
fn loss_and_grads(model: &Decoder<B>, lora: &Lora<B>) -> (f32, Vec<(String, Vec<f32>)>) {
    let policy = Decoder::<AD>::from_inner(model);
    let trainable = Lora::<AD>::trainable(lora);
    let prompts: [&[u32]; 3] = [&[5, 9, 13, 21, 8, 40, 2], &[5, 9, 13, 100, 7], &[5, 9, 13, 250, 3, 17]];
    let pairs = [(0, Pair { example: 0, chosen: 0, rejected: 4 }), (1, Pair { example: 1, chosen: 3, rejected: 1 }), (2, Pair { example: 2, chosen: 2, rejected: 0 })];
    let reference = [[-1.7, -1.5, -1.6, -1.6, -1.65]; 3];
    let (lp, _) = option_logprobs(&policy, Some(LoraPass::new(&trainable)), &prompts, &OPTIONS).unwrap();
    let (loss, _, _) = dpo_loss(lp, &pairs, &reference, 0.5).unwrap();
    let value = loss.clone().into_scalar();
    let grads = loss.backward();
    let g = trainable.tensors().into_iter().map(|(n, t)| (n, t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())).collect();
    (value, g)
}

/// The largest difference between two gradient sets, and the largest entry of the first.
fn compare(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> (f32, f32) {
    let (mut diff, mut scale) = (0.0f32, 0.0f32);
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    (diff, scale)
}

#[test]
fn adapters_over_the_files_blocks_get_the_float_models_gradients() {
    let dir = file_folder();
    let dev = Default::default();
    let file = Decoder::<B>::load_as(dir.path(), &dev, Dtype::File).unwrap();
    let float = Decoder::<B>::load_as(dir.path(), &dev, Dtype::F32).unwrap(); // the same values, dequantized
    let (lora_f, lora_d) = (adapters(&file, None), adapters(&float, None));
    let (loss_d, g_d) = loss_and_grads(&float, &lora_d);
    let (loss_f, g_f) = with_float_products(|| loss_and_grads(&file, &lora_f));
    let (diff, scale) = compare(&g_d, &g_f);
    assert!(scale > 1e-4, "the gradients carry signal: {scale}");
    assert!((loss_d - loss_f).abs() < 1e-5 && diff < 1e-3 * scale, "float products: loss {loss_f} against {loss_d}, gradients differ by {diff} (up to {scale})");
    // Every adapter gets a gradient, A's included (a transposed product that dropped a
    // layer's input would leave some at zero).
    assert!(g_f.iter().all(|(_, v)| v.iter().any(|x| x.abs() > 0.0)), "some adapter got no gradient");
    // Integer products (the default) round activations to 8 bits in the forward pass only.
    let (loss_i, g_i) = loss_and_grads(&file, &lora_f);
    let (diff, _) = compare(&g_d, &g_i);
    assert!((loss_d - loss_i).abs() < 0.02 && diff < 0.1 * scale, "integer products: loss {loss_i} against {loss_d}, gradients differ by {diff} (up to {scale})");
}

#[test]
fn the_gradient_over_the_files_blocks_is_the_losss_finite_difference() {
    let dir = file_folder();
    let file = Decoder::<B>::load_as(dir.path(), &Default::default(), Dtype::File).unwrap();
    with_float_products(|| {
        let (_, grads) = loss_and_grads(&file, &adapters(&file, None));
        // The largest entry of a layer-0 A (its gradient crosses every transposed product
        // above it) and of the last layer's down-projection B.
        for prefix in ["base_model.model.model.layers.0.self_attn.q_proj.lora_A", "base_model.model.model.layers.1.mlp.down_proj.lora_B"] {
            let (name, g) = grads.iter().find(|(n, _)| n.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {:?}", grads.iter().map(|g| &g.0).collect::<Vec<_>>()));
            let at = (0..g.len()).max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs())).unwrap();
            let h = 1e-2;
            let (up, _) = loss_and_grads(&file, &adapters(&file, Some((name, at, h))));
            let (down, _) = loss_and_grads(&file, &adapters(&file, Some((name, at, -h))));
            let fd = (up - down) / (2.0 * h);
            assert!((fd - g[at]).abs() < 0.03 * g[at].abs() + 1e-5, "{name}[{at}]: finite difference {fd}, gradient {}", g[at]);
        }
    });
}

/// Adapters attached unmerged (how DPO and PPO score over quantized weights) give the same
/// logits as passing them to every forward pass; a quantized model is not merged.
#[test]
fn attached_adapters_are_the_adapters_passed_to_each_pass() {
    let dir = file_folder();
    let file = Decoder::<B>::load_as(dir.path(), &Default::default(), Dtype::File).unwrap();
    let lora = adapters(&file, None);
    let rows: [&[u32]; 2] = [&[5, 9, 13, 21, 8, 40, 2], &[250, 3, 17]];
    let logits = |m: &Decoder<B>, pass: Option<LoraPass<'_, B>>| {
        let o = llm_burn::ForwardOptions { lora: pass, ..Default::default() };
        m.forward(&rows, &mut m.new_cache(), o).unwrap().logits.into_data().to_vec::<f32>().unwrap()
    };
    let (tuned, merged) = file.tuned(&lora).unwrap();
    assert!(!merged);
    let (attached, passed, base) = (logits(&tuned, None), logits(&file, Some(LoraPass::new(&lora))), logits(&file, None));
    assert_eq!(attached, passed);
    assert_ne!(attached, base, "the adapters change the logits");
}
