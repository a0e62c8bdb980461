//! `engine-bench`'s `train_step` unit: one DPO step of LoRA adapters on a batch of real
//! questionnaire prompts (forward, backward to the adapters, clipping, AdamW), as
//! `reproduce --methods dpo` runs it, and the same on PyTorch (`bench/torch_engine.py`).
//!
//! Both sides start from the same adapters: `A` from [`a_value`] (a formula the Python side
//! repeats, uniform in `±1/√in` like PEFT's initialisation) and `B` zero, so the first step's
//! loss (ln 2) and gradient norm can be compared across engines.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use dpo_baseline::data::Pair;
use dpo_baseline::train::{AdamW, reference_logprobs, step};
use dpo_baseline::{DpoConfig, Example, Rejected};
use eval::prompt::{DEFAULT_SYSTEM, PREFILL, question};
use llm_burn::model::lora::Lora;
use llm_burn::{Decoder, PromptEncoder};
use papi_data::Dataset;
use serde::{Deserialize, Serialize};

use crate::model::Backend;

/// The work of a `train_step` unit, as both engines read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainStep {
    /// The batch's prompts (full token ids).
    pub prompts: Vec<Vec<u32>>,
    /// The five option tokens (A..E).
    pub choices: Vec<u32>,
    /// Per prompt: (chosen option, rejected option), both indices into `choices`.
    pub pairs: Vec<(usize, usize)>,
    /// LoRA rank and alpha (every attention and MLP projection adapted).
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// DPO's beta.
    pub beta: f64,
    /// AdamW's learning rate (TRL's other defaults: eps 1e-8, no decay, norm clipped at 1).
    pub learning_rate: f64,
    /// Steps timed from the same start: the best is reported.
    pub repeats: usize,
}

impl TrainStep {
    /// The default DPO settings on the first `n` known items of the first person (answers
    /// as the corrected keying reads them, rejected: the opposite extreme), under the plain
    /// system prompt, as `reproduce` asks them.
    pub fn build(data: &Dataset, prompts: &PromptEncoder, choices: &[u32; 5], n: usize) -> Result<Self> {
        let subject = data.subjects.first().context("the records file has no subject")?;
        let inv = &data.inventory;
        let config = DpoConfig::default();
        let mut out = TrainStep { prompts: Vec::new(), choices: choices.to_vec(), pairs: Vec::new(), rank: config.lora.rank, alpha: config.lora.alpha, beta: config.beta, learning_rate: config.optimiser.learning_rate, repeats: 2 };
        for &item in &data.split.known {
            if out.prompts.len() == n {
                break;
            }
            let it = inv.item(item).context("split item")?;
            let answer = papi_data::Keying::Corrected.answer(subject.stored(item), it.sign);
            let Some(example) = Example::new(item, Vec::new(), answer, Rejected::OppositeExtreme) else { continue };
            out.prompts.push(prompts.encode(&prompts.render(DEFAULT_SYSTEM, &question(&it.text), PREFILL)?)?);
            out.pairs.push((example.chosen, example.rejected[0]));
        }
        Ok(out)
    }

    /// Tokens forwarded (and back-propagated) per step, without prefix sharing.
    pub fn tokens(&self) -> usize {
        self.prompts.iter().map(Vec::len).sum()
    }
}

/// Entry `e` (row-major) of the `k`-th adapter's `A` (`[in, rank]`, adapters in layer order,
/// then q, k, v, o, gate, up, down): uniform in `±1/√in` by a hash both engines compute.
pub fn a_value(k: usize, e: usize, inputs: usize) -> f32 {
    let u = ((e as u64).wrapping_mul(2_654_435_761).wrapping_add((k as u64 + 1) * 40_503) % (1 << 32)) as f64 / 4_294_967_296.0;
    ((2.0 * u - 1.0) / (inputs as f64).sqrt()) as f32
}

/// Runs the unit on our engine: seconds of the best step and `[loss, grad_norm]` of the first.
pub fn run_ours(model: &Decoder<Backend>, w: &TrainStep) -> Result<(f64, Vec<f32>)> {
    let mut config = DpoConfig::default();
    config.lora.rank = w.rank;
    config.lora.alpha = w.alpha;
    config.beta = w.beta;
    config.optimiser.learning_rate = w.learning_rate;
    let options: [u32; 5] = w.choices.as_slice().try_into().context("five choices")?;
    let examples: Vec<Example> = w.prompts.iter().zip(&w.pairs).enumerate().map(|(i, (p, &(c, r)))| Example { item: i as u16, prompt: p.clone(), chosen: c, rejected: vec![r] }).collect();
    let (reference, _) = reference_logprobs(model, &examples, &options, w.prompts.len())?;
    let fresh = Lora::<Backend>::init(model.config(), &config.lora.spec(), 0, model.device())?;
    let mut k = 0;
    let lora = fresh.map(|name, t| {
        if !name.contains(".lora_A.") {
            return t;
        }
        let [inputs, rank] = t.dims();
        let v: Vec<f32> = (0..inputs * rank).map(|e| a_value(k, e, inputs)).collect();
        k += 1;
        Tensor::from_data(TensorData::new(v, [inputs, rank]), model.device())
    });
    let policy = Decoder::<Autodiff<Backend>>::from_inner(model);
    let prompts: Vec<&[u32]> = w.prompts.iter().map(Vec::as_slice).collect();
    let pairs: Vec<(usize, Pair)> = examples.iter().enumerate().map(|(row, e)| (row, Pair { example: row, chosen: e.chosen, rejected: e.rejected[0] })).collect();
    let (mut best, mut first) = (f64::INFINITY, Vec::new());
    for _ in 0..w.repeats.max(1) {
        let mut adam = AdamW::new(&lora);
        let t = Instant::now();
        let done = step::<Autodiff<Backend>>(&policy, &lora, &mut adam, &prompts, &pairs, &reference, &options, &config, 0)?;
        best = best.min(t.elapsed().as_secs_f64());
        if first.is_empty() {
            first = vec![done.metrics.loss as f32, done.grad_norm as f32];
        }
    }
    Ok((best, first))
}
