//! The host kernels against the tensor kernels, and the prefix sharing built on the cache:
//! each must give what the plain computation gives, to float rounding.

use llm_burn::{ForwardOptions, Kernels, Decoder};
use pas_core::{HeadId, Intervention, Positions, Steerable, SteeredHead, Steering};
use proptest::prelude::*;

use crate::TestBackend;

fn tiny(kernels: Kernels) -> (tempfile::TempDir, Decoder<TestBackend>) {
    let dir = tempfile::tempdir().unwrap();
    crate::tiny_model::write_tiny_model(dir.path(), 11);
    let model = Decoder::load(dir.path(), &Default::default()).expect("load tiny model").with_kernels(kernels);
    (dir, model)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn steering(model: &Decoder<TestBackend>, alpha: f32, positions: Positions) -> Steering {
    let heads = vec![
        SteeredHead { head: HeadId::new(0, 2), direction: vec![0.5, -0.5, 0.5, 0.5], sigma: 1.0 },
        SteeredHead { head: HeadId::new(1, 0), direction: vec![0.0, 1.0, 0.0, 0.0], sigma: 2.0 },
    ];
    Intervention::new(model.config().geometry(), heads).unwrap().at(alpha, positions)
}

/// A shared prefix, ragged steered continuations, a second step, with capture: every output.
fn run(model: &Decoder<TestBackend>) -> Vec<f32> {
    let (all, last) = (steering(model, 2.0, Positions::All), steering(model, -1.0, Positions::Last));
    let mut cache = model.new_cache();
    model.forward(&[&[5, 9, 13, 2, 7]], &mut cache, ForwardOptions::default()).unwrap();
    let mut shared = cache.repeat(3).unwrap();
    let steer: [&Steering; 3] = [&all, &last, &Steering::none(model.config().geometry())];
    let rows: [&[u32]; 3] = [&[21, 8, 30], &[4], &[11, 12]];
    let first = model.forward(&rows, &mut shared, ForwardOptions { steering: &steer, capture: true, ..Default::default() }).unwrap();
    let second = model.forward(&[&[40], &[41], &[42]], &mut shared, ForwardOptions { steering: &steer, ..Default::default() }).unwrap();
    let mut out = first.logits.into_data().to_vec::<f32>().unwrap();
    for h in first.heads.unwrap() {
        out.extend(h.into_data().to_vec::<f32>().unwrap());
    }
    out.extend(second.logits.into_data().to_vec::<f32>().unwrap());
    out
}

#[test]
fn the_host_kernels_give_what_the_tensor_kernels_give() {
    let (_d, host) = tiny(Kernels::Host);
    let (_e, tensor) = tiny(Kernels::Tensor);
    assert_eq!(Kernels::default_for::<TestBackend>(), if cfg!(feature = "cuda") { Kernels::Tensor } else { Kernels::Host });
    let d = max_diff(&run(&host), &run(&tensor));
    assert!(d < 1e-5, "host and tensor kernels differ by {d}");
}

#[test]
fn a_cache_filled_by_other_kernels_is_refused() {
    let (_d, host) = tiny(Kernels::Host);
    let tensor = host.clone().with_kernels(Kernels::Tensor);
    let mut cache = host.new_cache();
    host.forward(&[&[1, 2]], &mut cache, ForwardOptions::default()).unwrap();
    assert!(tensor.forward(&[&[3]], &mut cache, ForwardOptions::default()).is_err());
}

#[test]
fn forked_rows_continue_as_their_source_rows() {
    for kernels in [Kernels::Host, Kernels::Tensor] {
        let (_d, model) = tiny(kernels);
        let mut cache = model.new_cache();
        model.forward(&[&[5, 9, 13]], &mut cache, ForwardOptions::default()).unwrap();
        let mut shared = cache.repeat(2).unwrap();
        model.forward(&[&[21, 8], &[4]], &mut shared, ForwardOptions::default()).unwrap();
        let mut forked = shared.select_rows(&[1, 0, 1]).unwrap();
        assert!(shared.select_rows(&[2]).is_err(), "row 2 of a 2-row cache");
        let out = model.forward(&[&[30], &[31], &[32, 33]], &mut forked, ForwardOptions::default()).unwrap();
        let v = out.logits.into_data().to_vec::<f32>().unwrap();
        let full: [&[u32]; 3] = [&[5, 9, 13, 4, 30], &[5, 9, 13, 21, 8, 31], &[5, 9, 13, 4, 32, 33]];
        for (r, row) in full.iter().enumerate() {
            let alone = model.forward(&[row], &mut model.new_cache(), ForwardOptions::default()).unwrap();
            let d = max_diff(&v[r * 50..(r + 1) * 50], &alone.logits.into_data().to_vec::<f32>().unwrap());
            assert!(d < 1e-5, "{kernels:?} row {r}: {d}");
        }
    }
}

/// Captures `prompts` together and each alone; the largest difference.
fn capture_vs_alone(model: &Decoder<TestBackend>, prompts: &[Vec<u32>], positions: &[usize]) -> f32 {
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let acts = model.capture(&refs, positions).unwrap();
    let sample = acts.data().len() / refs.len();
    let mut worst = 0.0f32;
    for (i, p) in refs.iter().enumerate() {
        let alone = model.capture(&[&p[..=positions[i]]], &[positions[i]]).unwrap();
        worst = worst.max(max_diff(&acts.data()[i * sample..(i + 1) * sample], alone.data()));
    }
    worst
}

#[test]
fn capture_with_shared_prefixes_equals_each_prompt_alone() {
    let (_d, model) = tiny(Kernels::Host);
    // Families of two (one item, two answers), a singleton, and a prompt captured before
    // its end: the chunk's prefix, the stems and the tails each run once.
    let prompts: Vec<Vec<u32>> = vec![
        vec![1, 2, 3, 10, 11, 12, 40],
        vec![1, 2, 3, 10, 11, 12, 41],
        vec![1, 2, 3, 20, 21, 40],
        vec![1, 2, 3, 20, 21, 41],
        vec![1, 2, 3, 30, 31, 32, 33, 34],
        vec![1, 2, 3, 10, 11, 12, 40, 5, 5],
    ];
    let d = capture_vs_alone(&model, &prompts, &[6, 6, 5, 5, 7, 6]);
    assert!(d < 1e-5, "shared prefixes: {d}");
    // A one-token prompt has no stem to share: its chunk runs rows whole.
    let d = capture_vs_alone(&model, &[vec![7], vec![1, 2, 3], vec![1, 2, 4]], &[0, 2, 2]);
    assert!(d < 1e-5, "rows whole: {d}");
}

proptest! {
    #[test]
    fn the_host_exp_is_accurate(x in -87.0f32..88.0) {
        let (ours, exact) = (llm_burn::host::exp(x), f64::from(x).exp());
        prop_assert!(((f64::from(ours) - exact) / exact).abs() < 5e-7, "exp({x}) = {ours}, not {exact}");
    }
}

#[test]
fn the_host_exp_flushes_below_its_range_and_clamps_above() {
    assert!(llm_burn::host::exp(-1000.0) < 1e-37);
    assert!(llm_burn::host::exp(f32::NEG_INFINITY) < 1e-37);
    assert!(llm_burn::host::exp(1000.0).is_finite());
}

/// `KvCache::tensors` lists every layer's keys and values held as tensors, and
/// `KvCache::map_tensors` replaces what a continuation reads: an identity map continues as the
/// cache itself does, zeroed keys and values do not; host buffers are left out and kept.
#[test]
fn a_caches_tensors_are_what_its_continuations_read() {
    let logits = |model: &Decoder<TestBackend>, cache: &llm_burn::KvCache<TestBackend>| {
        let mut c = cache.repeat(2).unwrap();
        model.forward(&[&[7, 8], &[9]], &mut c, ForwardOptions::default()).unwrap().logits.into_data().to_vec::<f32>().unwrap()
    };
    for kernels in [Kernels::Tensor, Kernels::Host] {
        let (_d, model) = tiny(kernels);
        let mut cache = model.new_cache();
        model.forward(&[&[1, 2, 3, 4]], &mut cache, ForwardOptions::default()).unwrap();
        let n = cache.tensors().len();
        assert_eq!(n, if kernels == Kernels::Tensor { 2 * model.config().layers } else { 0 }, "{kernels:?}");
        let base = logits(&model, &cache);
        assert!(max_diff(&base, &logits(&model, &cache.map_tensors(|t| t))) < 1e-6, "{kernels:?}: the identity map");
        let zeroed = logits(&model, &cache.map_tensors(|t| t.zeros_like()));
        assert_eq!(max_diff(&base, &zeroed) > 1e-3, kernels == Kernels::Tensor, "{kernels:?}: zeroed keys and values");
    }
}
