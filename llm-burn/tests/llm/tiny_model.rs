//! A tiny random Llama saved in Hugging Face layout and loaded through the real loader:
//! the laws of caching, batching and steering.

use std::path::Path;

use llm_burn::{ForwardOptions, Decoder};

use crate::TestBackend;
use pas_core::{HeadId, Intervention, Positions, SteeredHead, Steering};

/// Writes a random model (2 layers, hidden 16, 4 heads of 4, 2 KV heads, vocab 50, tied).
pub fn write_tiny_model(dir: &Path, seed: u64) {
    llm_burn::tiny::write_weights(dir, seed, 50).expect("write tiny model");
}

fn tiny() -> (tempfile::TempDir, Decoder<TestBackend>) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), 7);
    let model = Decoder::load(dir.path(), &Default::default()).expect("load tiny model");
    (dir, model)
}

fn logits(model: &Decoder<TestBackend>, rows: &[&[u32]], steering: &[&Steering]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let out = model.forward(rows, &mut cache, ForwardOptions { steering, ..Default::default() }).unwrap();
    let v = out.logits.into_data().to_vec::<f32>().unwrap();
    v.chunks(50).map(<[f32]>::to_vec).collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

fn intervention(model: &Decoder<TestBackend>) -> Intervention {
    let g = model.config().geometry();
    Intervention::new(
        g,
        vec![
            SteeredHead { head: HeadId::new(0, 1), direction: vec![0.5, 0.5, 0.5, 0.5], sigma: 2.0 },
            SteeredHead { head: HeadId::new(1, 3), direction: vec![1.0, 0.0, 0.0, 0.0], sigma: 1.5 },
        ],
    )
    .unwrap()
}

#[test]
fn incremental_decoding_with_the_cache_equals_a_full_forward() {
    let (_d, model) = tiny();
    let full = logits(&model, &[&[5, 9, 13, 21, 8]], &[]);
    let mut cache = model.new_cache();
    model.forward(&[&[5, 9]], &mut cache, ForwardOptions::default()).unwrap();
    model.forward(&[&[13, 21]], &mut cache, ForwardOptions::default()).unwrap();
    let out = model.forward(&[&[8]], &mut cache, ForwardOptions::default()).unwrap();
    let inc = out.logits.into_data().to_vec::<f32>().unwrap();
    assert!(close(&full[0], &inc, 1e-5), "{:?}\n{:?}", &full[0][..5], &inc[..5]);
    // A shared prefix repeated over continuations equals each full sequence.
    let mut prefix = model.new_cache();
    model.forward(&[&[5, 9, 13]], &mut prefix, ForwardOptions::default()).unwrap();
    let mut shared = prefix.repeat(2).unwrap();
    let out = model.forward(&[&[21, 8], &[4]], &mut shared, ForwardOptions::default()).unwrap();
    let v = out.logits.into_data().to_vec::<f32>().unwrap();
    assert!(close(&v[..50], &full[0], 1e-5));
    assert!(close(&v[50..], &logits(&model, &[&[5, 9, 13, 4]], &[])[0], 1e-5));
}

#[test]
fn a_shared_prefix_with_ragged_steered_continuations_and_more_steps_equals_full_rows() {
    let (_d, model) = tiny();
    let st = intervention(&model).at(1.5, Positions::All);
    let none = Steering::none(model.config().geometry());
    let prefix: &[u32] = &[5, 9, 13, 2, 7, 7];
    let tails: [&[u32]; 3] = [&[21, 8, 30], &[4], &[11, 12]];
    let steer: [&Steering; 3] = [&st, &none, &st];
    let mut cache = model.new_cache();
    model.forward(&[prefix], &mut cache, ForwardOptions { steering: &[&st], ..Default::default() }).unwrap();
    let mut shared = cache.repeat(3).unwrap();
    assert!(shared.repeat(2).is_err(), "a shared cache cannot be repeated again");
    // The prefix was computed under `st`: rows steered otherwise see a different prefix, so
    // compare against full rows whose prefix was steered the same way as the cache.
    model.forward(&tails, &mut shared, ForwardOptions { steering: &[&st], ..Default::default() }).unwrap();
    let out = model.forward(&[&[40], &[41], &[42]], &mut shared, ForwardOptions { steering: &[&st], ..Default::default() }).unwrap();
    let v = out.logits.into_data().to_vec::<f32>().unwrap();
    for (r, tail) in tails.iter().enumerate() {
        let full: Vec<u32> = prefix.iter().chain(tail.iter()).copied().chain([40 + r as u32]).collect();
        let alone = logits(&model, &[&full], &[&st]);
        assert!(close(&v[r * 50..(r + 1) * 50], &alone[0], 1e-4), "row {r}");
    }
    // Per-row steering of the continuations, over an unsteered prefix.
    let mut cache = model.new_cache();
    model.forward(&[prefix], &mut cache, ForwardOptions::default()).unwrap();
    let mut shared = cache.repeat(3).unwrap();
    let out = model.forward(&tails, &mut shared, ForwardOptions { steering: &steer, ..Default::default() }).unwrap();
    let v = out.logits.into_data().to_vec::<f32>().unwrap();
    for (r, tail) in tails.iter().enumerate() {
        let mut c = model.new_cache();
        model.forward(&[prefix], &mut c, ForwardOptions::default()).unwrap();
        let o = model.forward(&[tail], &mut c, ForwardOptions { steering: &[steer[r]], ..Default::default() }).unwrap();
        assert!(close(&v[r * 50..(r + 1) * 50], &o.logits.into_data().to_vec::<f32>().unwrap(), 1e-4), "row {r}");
    }
}

#[test]
fn a_left_padded_batch_equals_single_rows() {
    let (_d, model) = tiny();
    let rows: [&[u32]; 3] = [&[3, 4, 5, 6, 7], &[11, 12], &[30, 31, 32]];
    let batch = logits(&model, &rows, &[]);
    for (i, r) in rows.iter().enumerate() {
        assert!(close(&batch[i], &logits(&model, &[r], &[])[0], 1e-5), "row {i}");
    }
}

#[test]
fn zero_steering_is_bit_identical_and_per_row_steering_equals_separate_runs() {
    let (_d, model) = tiny();
    let iv = intervention(&model);
    let row: &[u32] = &[3, 4, 5, 6];
    let base = logits(&model, &[row], &[]);
    let none = Steering::none(model.config().geometry());
    assert_eq!(logits(&model, &[row], &[&none]), base);
    assert_eq!(logits(&model, &[row], &[&iv.at(0.0, Positions::All)]), base);
    let s_all = iv.at(3.0, Positions::All);
    let s_last = iv.at(-2.0, Positions::Last);
    let steered = logits(&model, &[row], &[&s_all]);
    assert!(!close(&steered[0], &base[0], 1e-3), "steering changes the logits");
    let other: &[u32] = &[9, 10];
    let batch = logits(&model, &[row, other, row], &[&s_all, &s_last, &none]);
    assert!(close(&batch[0], &steered[0], 1e-5));
    assert!(close(&batch[1], &logits(&model, &[other], &[&s_last])[0], 1e-5));
    assert!(close(&batch[2], &base[0], 1e-5));
    assert!(!close(&logits(&model, &[row], &[&iv.at(-2.0, Positions::All)])[0], &logits(&model, &[row], &[&s_last])[0], 1e-4), "last-only differs from all positions");
}

#[test]
fn bad_inputs_are_errors() {
    let (dir, model) = tiny();
    let mut cache = model.new_cache();
    assert!(model.forward(&[&[]], &mut cache, ForwardOptions::default()).is_err());
    assert!(model.forward(&[&[50]], &mut cache, ForwardOptions::default()).is_err());
    // A mis-shaped tensor is named with both shapes.
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("\"intermediate_size\":24", "\"intermediate_size\":25");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    let err = Decoder::<TestBackend>::load(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("gate_proj") && err.contains("[24, 16]") && err.contains("[25, 16]"), "{err}");
}

#[test]
fn steering_in_head_space_equals_the_o_proj_bias_path() {
    let (_d, model) = tiny();
    let s = intervention(&model).at(2.5, Positions::All);
    let rows: [&[u32]; 2] = [&[3, 4, 5, 6], &[7, 8]];
    let head_space = logits(&model, &rows, &[&s]);
    let bias = model.o_proj_bias(&s).unwrap();
    let mut cache = model.new_cache();
    let out = model.forward(&rows, &mut cache, ForwardOptions { o_proj_bias: Some(&bias), ..Default::default() }).unwrap();
    let v = out.logits.into_data().to_vec::<f32>().unwrap();
    for r in 0..2 {
        assert!(close(&v[r * 50..(r + 1) * 50], &head_space[r], 1e-4), "row {r}");
    }
    assert!(model.o_proj_bias(&intervention(&model).at(1.0, Positions::Last)).is_err());
}

#[test]
fn the_model_is_steerable_through_pas_core() {
    use pas_core::Steerable;
    let (_d, model) = tiny();
    let prompts: [&[u32]; 3] = [&[3, 4, 5, 6], &[7, 8], &[9, 10, 11]];
    // Capture at the last position of each prompt, and at position 1 of the first.
    let acts = model.capture(&[prompts[0], prompts[1], prompts[2], prompts[0]], &[3, 1, 2, 1]).unwrap();
    assert_eq!(acts.samples(), 4);
    let g = model.config().geometry();
    let mut cache = model.new_cache();
    let single = model.forward(&[&[3, 4]], &mut cache, ForwardOptions { capture: true, ..Default::default() }).unwrap();
    let want: Vec<f32> = single.heads.unwrap().into_iter().flat_map(|t| t.into_data().to_vec::<f32>().unwrap()).collect();
    let got = &acts.data()[3 * g.sample_len()..4 * g.sample_len()];
    assert!(close(got, &want, 1e-5));
    let s = intervention(&model).at(1.0, Positions::All);
    let lp = model.choice_logprobs(&prompts, &[&s], &[1, 2, 3]).unwrap();
    assert_eq!((lp.len(), lp[0].len()), (3, 3));
    assert!(lp.iter().flatten().all(|v| v.is_finite() && *v <= 0.0));
    assert!(model.capture(&[prompts[1]], &[5]).is_err(), "position past the prompt");
}

mod lora {
    use llm_burn::model::lora::{Adapter, Lora, LoraSpec, Target};
    use llm_burn::{ForwardOptions, Decoder, LoraPass};

    use super::{close, tiny};
    use crate::TestBackend;

    fn lora_logits(model: &Decoder<TestBackend>, rows: &[&[u32]], lora: Option<&Lora<TestBackend>>) -> Vec<f32> {
        let mut cache = model.new_cache();
        let options = ForwardOptions { lora: lora.map(LoraPass::new), ..Default::default() };
        model.forward(rows, &mut cache, options).unwrap().logits.into_data().to_vec::<f32>().unwrap()
    }

    /// Adapters with a non-zero `B`, so they change the model.
    fn nonzero(model: &Decoder<TestBackend>, targets: &[Target]) -> Lora<TestBackend> {
        let spec = LoraSpec { rank: 2, alpha: 4.0, targets: targets.to_vec() };
        let fresh = Lora::<TestBackend>::init(model.config(), &spec, 3, &Default::default()).unwrap();
        let mut k = 0.0f32;
        fresh.map(|_, t| {
            let dims = t.dims();
            k += 1.0;
            let v: Vec<f32> = (0..dims[0] * dims[1]).map(|i| ((i as f32 * 0.37 + k).sin()) * 0.3).collect();
            burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(v, dims), &Default::default())
        })
    }

    #[test]
    fn fresh_adapters_leave_the_logits_bit_identical() {
        let (_d, model) = tiny();
        let spec = LoraSpec { rank: 4, alpha: 8.0, targets: Target::ALL.to_vec() };
        let lora = Lora::<TestBackend>::init(model.config(), &spec, 11, &Default::default()).unwrap();
        let rows: [&[u32]; 2] = [&[5, 9, 13, 21], &[7, 3]];
        assert_eq!(lora_logits(&model, &rows, None), lora_logits(&model, &rows, Some(&lora)));
        // `A` is random (PEFT's init), `B` is zero.
        let a = lora.get(0, Target::Q).unwrap().a.clone().into_data().to_vec::<f32>().unwrap();
        assert!(a.iter().any(|x| *x != 0.0) && a.iter().all(|x| x.abs() <= 0.25));
        assert_eq!(lora.tensors().len(), 2 * 7 * 2);
    }

    #[test]
    fn adapters_change_the_logits_and_merging_them_gives_the_same_model() {
        let (_d, model) = tiny();
        let rows: [&[u32]; 2] = [&[5, 9, 13, 21], &[7, 3]];
        let base = lora_logits(&model, &rows, None);
        for targets in [Target::ALL.to_vec(), vec![Target::Q], vec![Target::O, Target::Down]] {
            let lora = nonzero(&model, &targets);
            let with = lora_logits(&model, &rows, Some(&lora));
            assert!(!close(&base, &with, 1e-3), "adapters on {targets:?} changed nothing");
            let merged = model.merged(&lora).unwrap();
            let m = lora_logits(&merged, &rows, None);
            assert!(close(&with, &m, 1e-4), "merged differs on {targets:?}");
        }
        // The base model is untouched by merging.
        assert_eq!(lora_logits(&model, &rows, None), base);
    }

    #[test]
    fn dropout_is_seeded_and_scales_the_kept_inputs() {
        let (_d, model) = tiny();
        let lora = nonzero(&model, &Target::ALL);
        let rows: [&[u32]; 1] = [&[5, 9, 13, 21]];
        let run = |dropout: f64, seed: u64| {
            let mut cache = model.new_cache();
            let options = ForwardOptions { lora: Some(LoraPass { lora: &lora, dropout, seed }), ..Default::default() };
            model.forward(&rows, &mut cache, options).unwrap().logits.into_data().to_vec::<f32>().unwrap()
        };
        assert_eq!(run(0.3, 1), run(0.3, 1));
        assert_ne!(run(0.3, 1), run(0.3, 2));
        assert_eq!(run(0.0, 1), lora_logits(&model, &rows, Some(&lora)));
        let mut cache = model.new_cache();
        let bad = ForwardOptions { lora: Some(LoraPass { lora: &lora, dropout: 1.0, seed: 0 }), ..Default::default() };
        assert!(model.forward(&rows, &mut cache, bad).is_err());
    }

    #[test]
    fn adapters_of_the_wrong_shape_are_refused() {
        let (_d, model) = tiny();
        let dev = Default::default();
        let bad = Adapter::<TestBackend> { a: burn::tensor::Tensor::zeros([16, 2], &dev), b: burn::tensor::Tensor::zeros([2, 15], &dev) };
        let layers = vec![[(Target::Q, bad)].into_iter().collect(), Default::default()];
        let err = Lora::from_parts(model.config(), 2, 4.0, layers).unwrap_err().to_string();
        assert!(err.contains("q_proj") && err.contains("[2, 15]"), "{err}");
        assert!(Target::parse("gate").is_ok() && Target::parse("v_proj").is_ok() && Target::parse("lm_head").is_err());
    }
}
