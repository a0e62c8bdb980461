//! The GPU acceptance checks behind `cargo xtask gpu-check`, generic over backends so that
//! the same code runs CPU against CPU in the tests and CPU against CUDA on a GPU machine:
//! [`agreement`] (one model on two backends: logits, captured head outputs, steered
//! log-probabilities, one DPO epoch, each within a stated tolerance) and [`throughput`]
//! (load time, prefill tokens/s, batched item scoring after a long shared prefix, and the
//! per-subject PAS time they imply).

use std::path::Path;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use dpo_baseline::{DpoConfig, Example, Rejected};
use llm_burn::{Dtype, ForwardOptions, Decoder, PromptEncoder};
use pas_core::{HeadId, Intervention, Positions, SteeredHead, Steerable, Steering};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::prompt::{DEFAULT_SYSTEM, PREFILL, question};
use crate::score::{Scorer, Scoring};

/// One quantity compared between two backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// What was compared.
    pub what: String,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
    /// Largest absolute value on the reference backend (for scale).
    pub max_abs: f64,
    /// The tolerance: `max_abs_diff <= tolerance * (1 + max_abs)`.
    pub tolerance: f64,
    /// Whether it holds.
    pub ok: bool,
}

impl Compared {
    fn new(what: &str, a: &[f32], b: &[f32], tolerance: f64) -> Self {
        let max_abs_diff = if a.len() == b.len() { a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max) } else { f64::INFINITY };
        let max_abs = a.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
        let ok = max_abs_diff.is_finite() && max_abs_diff <= tolerance * (1.0 + max_abs);
        Compared { what: what.to_owned(), max_abs_diff, max_abs, tolerance, ok }
    }
}

/// Relative tolerance of float32 comparisons between backends (different summation orders
/// and fused kernels).
pub const F32_TOLERANCE: f64 = 2e-3;

/// Relative tolerance of bf16 comparisons between backends (8-bit mantissas: the default
/// model's bf16 logits differ from float32 ones by up to 0.4 on a range of 35).
pub const BF16_TOLERANCE: f64 = 3e-2;

fn tensor_vec<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| Error::Config(format!("reading a tensor back: {e:?}")))
}

/// A seeded intervention on a few heads of `model` (directions of unit length).
pub fn probe_intervention<B: Backend>(model: &Decoder<B>) -> Result<Intervention> {
    let g = model.geometry();
    let dim = g.head_dim as usize;
    let heads = (0..g.layers.min(4))
        .map(|l| {
            let direction: Vec<f32> = (0..dim).map(|i| if (i + l as usize).is_multiple_of(3) { 1.0 } else { -0.5 }).collect();
            let norm = direction.iter().map(|x| x * x).sum::<f32>().sqrt();
            SteeredHead { head: HeadId::new(l, l % g.heads), direction: direction.iter().map(|x| x / norm).collect(), sigma: 1.0 }
        })
        .collect();
    Intervention::new(g, heads).map_err(|e| Error::Config(e.to_string()))
}

/// The prompts the checks run: a few items asked under the default system prompt.
fn prompts(encoder: &PromptEncoder) -> Result<Vec<Vec<u32>>> {
    ["Worry about things.", "Make friends easily.", "Have a vivid imagination.", "Love to help others."]
        .iter()
        .map(|t| Ok(encoder.encode(&encoder.render(DEFAULT_SYSTEM, &question(t), PREFILL)?)?))
        .collect()
}

/// One model folder on two backends (`R`, the reference, and `T`, the one tested), weights in
/// `dtype` on both: logits
/// after each prompt, head outputs captured at each prompt's last token, the option
/// log-probabilities under a steering at strength 4, and one DPO epoch on LoRA adapters
/// (first loss and held-out loss after it).
pub fn agreement<R: Backend, T: Backend>(dir: &Path, reference: &R::Device, tested: &T::Device, dtype: Dtype, tolerance: f64) -> Result<Vec<Compared>> {
    let encoder = PromptEncoder::from_dir(dir)?;
    let a = Decoder::<R>::load_as(dir, reference, dtype)?;
    let b = Decoder::<T>::load_as(dir, tested, dtype)?;
    let rows = prompts(&encoder)?;
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    let la = tensor_vec(a.forward(&refs, &mut a.new_cache(), ForwardOptions::default())?.logits)?;
    let lb = tensor_vec(b.forward(&refs, &mut b.new_cache(), ForwardOptions::default())?.logits)?;
    out.push(Compared::new("logits", &la, &lb, tolerance));
    let positions: Vec<usize> = rows.iter().map(|r| r.len() - 1).collect();
    let ca = a.capture(&refs, &positions)?;
    let cb = b.capture(&refs, &positions)?;
    out.push(Compared::new("captured head outputs", ca.data(), cb.data(), tolerance));
    let iv = probe_intervention(&a)?;
    let steer = iv.at(4.0, Positions::All);
    let steers: Vec<&Steering> = vec![&steer; rows.len()];
    let letters = Scorer::new(&a, &encoder, Scoring::NextToken, 4)?.options().spaced;
    let sa: Vec<f32> = a.choice_logprobs(&refs, &steers, &letters)?.concat();
    let sb: Vec<f32> = b.choice_logprobs(&refs, &steers, &letters)?.concat();
    out.push(Compared::new("steered option log-probabilities", &sa, &sb, tolerance));
    let examples: Vec<Example> = rows.iter().enumerate().filter_map(|(i, r)| Example::new(i as u16 + 1, r.clone(), [5, 1, 4, 2][i % 4], Rejected::AllOthers)).collect();
    let (train, held) = examples.split_at(3);
    let config = DpoConfig { epochs: 1, batch_size: 3, optimiser: dpo_baseline::OptimiserConfig { learning_rate: 1e-3, ..Default::default() }, ..Default::default() };
    let ta = dpo_baseline::train::train::<Autodiff<R>>(&a, train, held, &letters, &config, |_| {})?;
    let tb = dpo_baseline::train::train::<Autodiff<T>>(&b, train, held, &letters, &config, |_| {})?;
    let losses = |r: &dpo_baseline::TrainReport| -> Vec<f32> {
        let held = r.held_out.as_ref().map_or(f64::NAN, |(_, after)| after.loss);
        vec![r.first_loss as f32, r.last_epoch.loss as f32, held as f32]
    };
    out.push(Compared::new("one DPO epoch (first, last and held-out loss)", &losses(&ta.report), &losses(&tb.report), tolerance));
    Ok(out)
}

/// Speed of one model on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Seconds to load the weights onto the device.
    pub load_seconds: f64,
    /// Prefill tokens per second, by prompt length.
    pub prefill_tokens_per_second: Vec<(usize, f64)>,
    /// Tokens of the shared prefix before the scored items.
    pub scoring_prefix_tokens: usize,
    /// Items scored after that prefix.
    pub scoring_items: usize,
    /// Seconds for the prefix and every item (batches of `scoring_batch`).
    pub scoring_seconds: f64,
    /// Items per forward pass.
    pub scoring_batch: usize,
    /// The implied seconds of one subject's PAS with the default settings (see
    /// [`pas_subject_seconds`]).
    pub projected_pas_seconds_per_subject: f64,
}

/// The seconds of one subject's PAS with the default settings (steering at every position,
/// 2 folds, a grid of 6 strengths, 30 held-out search items, 180 test items) from two
/// measured rates: each of the 12 fold × strength evaluations and the final one recomputes
/// the few-shot prefix (`prefix_seconds`) and scores its items (`item_seconds` each: 15 per
/// search evaluation, 180 at the end). Activation collection (240 short prompts, once for all
/// subjects) is left out.
pub fn pas_subject_seconds(prefix_seconds: f64, item_seconds: f64) -> f64 {
    13.0 * prefix_seconds + (12.0 * 15.0 + 180.0) * item_seconds
}

/// Measures `dir`'s model on one backend with weights in `dtype`: load time, prefill of random tokens at each of
/// `prefill_lengths` (one warm-up pass first), and `items` items scored after a shared prefix
/// of about `prefix_tokens` tokens in batches of `batch`.
pub fn throughput<B: Backend>(dir: &Path, device: &B::Device, dtype: Dtype, prefill_lengths: &[usize], prefix_tokens: usize, items: usize, batch: usize) -> Result<Throughput> {
    let t = Instant::now();
    let model = Decoder::<B>::load_as(dir, device, dtype)?;
    let encoder = PromptEncoder::from_dir(dir)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let vocab = model.config().vocab as u32;
    let tokens = |n: usize| -> Vec<u32> { (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % vocab.min(100_000)).collect() };
    let run = |ids: &[u32]| -> Result<f64> {
        let t = Instant::now();
        let out = model.forward(&[ids], &mut model.new_cache(), ForwardOptions::default())?;
        tensor_vec(out.logits)?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(&tokens(16))?;
    let prefill_tokens_per_second = prefill_lengths.iter().map(|&n| Ok((n, n as f64 / run(&tokens(n))?))).collect::<Result<_>>()?;
    // A long system prompt, then the items; the scorer computes the prefix once.
    let mut system = String::new();
    while encoder.encode(&system)?.len() < prefix_tokens {
        system.push_str("I like to plan ahead, keep my promises and talk to strangers. ");
    }
    let users: Vec<String> = (0..items).map(|i| question(&format!("Statement number {i} about how I act."))).collect();
    let scorer = Scorer::new(&model, &encoder, Scoring::NextToken, batch)?;
    let none = Steering::none(model.geometry());
    scorer.score(&system, &users[..batch.min(items)], &none)?;
    let t = Instant::now();
    scorer.score(&system, &users, &none)?;
    let scoring_seconds = t.elapsed().as_secs_f64();
    let prefix = scorer.user_start(&system)?;
    let prefix_seconds = run(&tokens(prefix))?;
    let item_seconds = ((scoring_seconds - prefix_seconds) / items.max(1) as f64).max(0.0);
    Ok(Throughput {
        load_seconds,
        prefill_tokens_per_second,
        scoring_prefix_tokens: prefix,
        scoring_items: items,
        scoring_seconds,
        scoring_batch: batch,
        projected_pas_seconds_per_subject: pas_subject_seconds(prefix_seconds, item_seconds),
    })
}
