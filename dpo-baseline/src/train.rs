//! The DPO loss and the training loop.
//!
//! Completions are single option tokens, so a prompt's chosen and rejected completions
//! share everything but the last token: one forward pass over the prompt gives the
//! log-probabilities of all five options, and every pair of that prompt is read from it
//! (TRL's "one forward over `[chosen; rejected]`", without computing the shared prompt
//! twice). The prompts of a batch also share their leading tokens (chat header, system
//! prompt, question template): that prefix runs once per step and the prompts continue
//! from it through the KV cache. Gradients flow through both parts.
//!
//! The reference model is the base model with the adapters off (no second copy of the
//! weights); its log-probabilities are computed once per subject, before training.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, activation};
use llm_burn::{ForwardOptions, Decoder, KvCache, Lora, LoraPass};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::DpoConfig;
use crate::data::{Example, Pair, pairs};
use crate::error::{Error, Result};
use crate::prefix::{StepPrefix, common_prefix, logprobs_after, option_columns};

/// Metrics of a batch of pairs (TRL's names when serialised).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean sigmoid DPO loss.
    pub loss: f64,
    /// Mean `beta · (log π(chosen) − log π_ref(chosen))`.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Mean `beta · (log π(rejected) − log π_ref(rejected))`.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Mean of chosen minus rejected reward.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Share of pairs whose chosen reward exceeds the rejected one.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Pairs in the batch.
    pub pairs: usize,
}

impl Metrics {
    /// Metrics from per-pair rewards (the loss is recomputed from them in `f64`).
    fn from_rewards(chosen: &[f32], rejected: &[f32]) -> Self {
        let n = chosen.len().max(1) as f64;
        let mut m = Metrics { pairs: chosen.len(), ..Default::default() };
        for (&c, &r) in chosen.iter().zip(rejected) {
            let (c, r) = (f64::from(c), f64::from(r));
            m.rewards_chosen += c / n;
            m.rewards_rejected += r / n;
            m.rewards_margins += (c - r) / n;
            m.rewards_accuracies += f64::from(u8::from(c > r)) / n;
            m.loss += softplus(-(c - r)) / n;
        }
        m
    }

    /// Pair-weighted mean of several batches' metrics.
    fn pooled(parts: &[Metrics]) -> Self {
        let n: usize = parts.iter().map(|m| m.pairs).sum();
        let w = |f: fn(&Metrics) -> f64| parts.iter().map(|m| f(m) * m.pairs as f64).sum::<f64>() / n.max(1) as f64;
        Metrics {
            loss: w(|m| m.loss),
            rewards_chosen: w(|m| m.rewards_chosen),
            rewards_rejected: w(|m| m.rewards_rejected),
            rewards_margins: w(|m| m.rewards_margins),
            rewards_accuracies: w(|m| m.rewards_accuracies),
            pairs: n,
        }
    }
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }
}

/// One line of a training log, DPO's or PPO's (one per optimisation step, plus one per
/// epoch's held-out check): `S` is what a step measures, `E` what the held-out check does.
/// Written as TRL writes its log: the step's measures at the top level of the line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrainingLog<S, E> {
    /// An optimisation step.
    Step {
        /// Step number, from 1.
        step: usize,
        /// Fractional epoch at the end of the step.
        epoch: f64,
        /// What the step measured.
        #[serde(flatten)]
        stats: S,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Learning rate of the step.
        learning_rate: f64,
        /// Seconds since training began.
        seconds: f64,
    },
    /// The held-out part after an epoch.
    Eval {
        /// Epochs done, from 1.
        epoch: usize,
        /// Steps done.
        step: usize,
        /// Held-out measures (`eval_` prefixed in TRL; here the keys are nested).
        eval: E,
        /// Whether these adapters are the best so far (kept).
        best: bool,
    },
}

/// One line of the DPO log: each step's batch metrics, the held-out pairs' after an epoch.
pub type LogLine = TrainingLog<Metrics, Metrics>;

/// What a training run did and how long it took.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainReport {
    /// Training pairs (and their prompts).
    pub train_pairs: usize,
    /// Training prompts.
    pub train_prompts: usize,
    /// Held-out pairs.
    pub held_out_pairs: usize,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose adapters were kept (the lowest held-out loss; the last without
    /// held-out pairs).
    pub best_epoch: usize,
    /// Whether training stopped before `epochs` for lack of held-out progress.
    pub stopped_early: bool,
    /// Loss of the first step (ln 2 when the adapters start at zero).
    pub first_loss: f64,
    /// Mean training metrics of the last epoch.
    pub last_epoch: Metrics,
    /// Held-out metrics before training and of the kept adapters.
    pub held_out: Option<(Metrics, Metrics)>,
    /// Seconds computing the reference log-probabilities.
    pub reference_seconds: f64,
    /// Seconds of optimisation and held-out evaluation.
    pub training_seconds: f64,
    /// Tokens forwarded for the reference.
    pub reference_tokens: u64,
    /// Tokens forwarded (and back-propagated) in training, plus held-out tokens.
    pub training_tokens: u64,
}

/// Trained adapters and the run's report.
#[derive(Debug, Clone)]
pub struct Trained<B: Backend> {
    /// The kept adapters.
    pub lora: Lora<B>,
    /// What happened.
    pub report: TrainReport,
}

/// The log-probabilities `[rows, 5]` of the five option tokens as the next token after
/// each prompt, with the prompts' common prefix run once. Returns them and the tokens run.
pub fn option_logprobs<B: Backend>(
    model: &Decoder<B>,
    lora: Option<LoraPass<'_, B>>,
    prompts: &[&[u32]],
    options: &[u32; 5],
) -> Result<(Tensor<B, 2>, u64)> {
    let n = prompts.len();
    if n == 0 || prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Data("every prompt needs at least one token".into()));
    }
    let with_seed = |k: u64| lora.map(|p| LoraPass { seed: p.seed.wrapping_add(k), ..p });
    let prefix = common_prefix(prompts);
    if prefix > 0 {
        let mut cache = model.new_cache();
        model.forward(&[&prompts[0][..prefix]], &mut cache, ForwardOptions { lora: with_seed(0), ..Default::default() })?;
        let (lp, tokens) = logprobs_after(model, with_seed(1), &cache, prefix, prompts, options)?;
        return Ok((lp, prefix as u64 + tokens));
    }
    let out = model.forward(prompts, &mut model.new_cache(), ForwardOptions { lora: with_seed(0), ..Default::default() })?;
    Ok((option_columns(out.logits, options), prompts.iter().map(|p| p.len() as u64).sum()))
}

/// A micro-batch's option log-probabilities: after the step's prefix when it has one (its
/// leaves, from [`StepPrefix::leaves`], and its length), else as [`option_logprobs`]. The
/// prompts' own tokens run with `pass`'s seed + 1, as [`option_logprobs`] runs them.
pub(crate) fn micro_logprobs<B: Backend>(
    model: &Decoder<B>,
    pass: LoraPass<'_, B>,
    prefix: Option<(&KvCache<B>, usize)>,
    prompts: &[&[u32]],
    options: &[u32; 5],
) -> Result<(Tensor<B, 2>, u64)> {
    match prefix {
        Some((cache, len)) => logprobs_after(model, Some(LoraPass { seed: pass.seed.wrapping_add(1), ..pass }), cache, len, prompts, options),
        None => option_logprobs(model, Some(pass), prompts, options),
    }
}

/// The sigmoid DPO loss of `pairs` whose prompts are the rows of `policy` (`[rows, 5]`
/// option log-probabilities); `reference` holds the reference's for the same rows.
/// `row_of(pair)` gives a pair's row. Returns the mean loss and per-pair rewards
/// (`beta · log-ratio`) of the chosen and rejected options.
pub fn dpo_loss<B: Backend>(
    policy: Tensor<B, 2>,
    pairs: &[(usize, Pair)],
    reference: &[[f32; 5]],
    beta: f64,
) -> Result<(Tensor<B, 1>, Vec<f32>, Vec<f32>)> {
    let [rows, five] = policy.dims();
    if five != 5 || reference.len() != rows {
        return Err(Error::Data(format!("{rows}×{five} policy log-probabilities against {} reference rows", reference.len())));
    }
    if pairs.is_empty() {
        return Err(Error::Data("no pair in the batch".into()));
    }
    let device = policy.device();
    let p = pairs.len();
    let flat = |f: fn(&Pair) -> usize| -> Tensor<B, 1, Int> {
        let v: Vec<i32> = pairs.iter().map(|(row, pair)| (row * 5 + f(pair)) as i32).collect();
        Tensor::from_data(TensorData::new(v, [p]), &device)
    };
    let lp = policy.reshape([rows * 5]);
    let chosen = lp.clone().select(0, flat(|x| x.chosen));
    let rejected = lp.select(0, flat(|x| x.rejected));
    let refs = |f: fn(&Pair) -> usize| -> Tensor<B, 1> {
        let v: Vec<f32> = pairs.iter().map(|(row, pair)| reference[*row][f(pair)]).collect();
        Tensor::from_data(TensorData::new(v, [p]), &device)
    };
    let chosen_ratio = chosen - refs(|x| x.chosen);
    let rejected_ratio = rejected - refs(|x| x.rejected);
    let logits = (chosen_ratio.clone() - rejected_ratio.clone()) * beta;
    let loss = activation::log_sigmoid(logits).mean().neg();
    let host = |t: Tensor<B, 1>| -> Result<Vec<f32>> {
        (t.detach() * beta).into_data().to_vec::<f32>().map_err(|e| Error::Data(format!("reading rewards: {e:?}")))
    };
    Ok((loss, host(chosen_ratio)?, host(rejected_ratio)?))
}

/// The reference's option log-probabilities for every example (adapters off), in batches.
pub fn reference_logprobs<B: Backend>(model: &Decoder<B>, examples: &[Example], options: &[u32; 5], batch: usize) -> Result<(Vec<[f32; 5]>, u64)> {
    logprobs_in_batches(model, None, examples, options, batch)
}

pub(crate) fn logprobs_in_batches<B: Backend>(
    model: &Decoder<B>,
    lora: Option<&Lora<B>>,
    examples: &[Example],
    options: &[u32; 5],
    batch: usize,
) -> Result<(Vec<[f32; 5]>, u64)> {
    let mut out = Vec::with_capacity(examples.len());
    let mut tokens = 0;
    for chunk in examples.chunks(batch.max(1)) {
        let prompts: Vec<&[u32]> = chunk.iter().map(|e| e.prompt.as_slice()).collect();
        let (lp, t) = option_logprobs(model, lora.map(LoraPass::new), &prompts, options)?;
        tokens += t;
        let v = lp.into_data().to_vec::<f32>().map_err(|e| Error::Data(format!("reading log-probabilities: {e:?}")))?;
        out.extend(v.chunks_exact(5).map(|c| [c[0], c[1], c[2], c[3], c[4]]));
    }
    Ok((out, tokens))
}

/// DPO metrics of `lora` (or of the base model, `None`) on every pair of `examples`,
/// against the reference log-probabilities of the same examples. Also returns the tokens run.
pub fn evaluate<B: Backend>(
    model: &Decoder<B>,
    lora: Option<&Lora<B>>,
    examples: &[Example],
    reference: &[[f32; 5]],
    options: &[u32; 5],
    config: &DpoConfig,
) -> Result<(Metrics, u64)> {
    let (lp, tokens) = logprobs_in_batches(model, lora, examples, options, config.eval_batch)?;
    let (mut c, mut r) = (Vec::new(), Vec::new());
    for p in pairs(examples) {
        let (pol, re) = (&lp[p.example], &reference[p.example]);
        c.push(((pol[p.chosen] - re[p.chosen]) as f64 * config.beta) as f32);
        r.push(((pol[p.rejected] - re[p.rejected]) as f64 * config.beta) as f32);
    }
    Ok((Metrics::from_rewards(&c, &r), tokens))
}

/// AdamW as PyTorch computes it (decoupled weight decay, bias-corrected moments), over the
/// adapters' tensors in [`Lora::tensors`] order.
#[derive(Debug)]
pub struct AdamW<B: Backend> {
    moments: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    step: i32,
}

impl<B: Backend> AdamW<B> {
    /// Zero moments for `lora`'s tensors.
    pub fn new(lora: &Lora<B>) -> Self {
        let moments = lora.tensors().iter().map(|(_, t)| (t.zeros_like(), t.zeros_like())).collect();
        AdamW { moments, step: 0 }
    }

    /// One update with the (already clipped) gradients.
    pub(crate) fn update(&mut self, lora: &Lora<B>, grads: Vec<Tensor<B, 2>>, o: &crate::config::OptimiserConfig) -> Lora<B> {
        let (lr, (b1, b2), eps, weight_decay) = (o.learning_rate, o.adam_betas, o.adam_epsilon, o.weight_decay);
        self.step += 1;
        let bc1 = 1.0 - b1.powi(self.step);
        let bc2 = 1.0 - b2.powi(self.step);
        let mut k = 0;
        lora.map(|_, p| {
            let g = grads[k].clone();
            let (m, v) = &mut self.moments[k];
            *m = m.clone() * b1 + g.clone() * (1.0 - b1);
            *v = v.clone() * b2 + g.powi_scalar(2) * (1.0 - b2);
            k += 1;
            let p = if weight_decay > 0.0 { p * (1.0 - lr * weight_decay) } else { p };
            let denom = (v.clone() / bc2).sqrt() + eps;
            p - (m.clone() / bc1) / denom * lr
        })
    }
}

/// What one optimisation step did.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// The updated adapters.
    pub lora: Lora<B>,
    /// The batch's metrics (the loss as computed in the graph).
    pub metrics: Metrics,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens forwarded.
    pub tokens: u64,
}

/// One DPO step: the policy's option log-probabilities for `prompts` (adapters on, with
/// dropout seeded by `seed`), the loss of `pairs` (row, pair) against `reference`,
/// back-propagation to the adapters, global-norm clipping and an AdamW update.
/// `policy_model` is the model on the autodiff backend ([`Decoder::from_inner`]).
#[allow(clippy::too_many_arguments)] // the step's inputs are all distinct and named
pub fn step<A: AutodiffBackend>(
    policy_model: &Decoder<A>,
    lora: &Lora<A::InnerBackend>,
    adam: &mut AdamW<A::InnerBackend>,
    prompts: &[&[u32]],
    pairs: &[(usize, Pair)],
    reference: &[[f32; 5]],
    options: &[u32; 5],
    config: &DpoConfig,
    seed: u64,
) -> Result<StepOutput<A::InnerBackend>> {
    let trainable = Lora::<A>::trainable(lora);
    let (mut rc, mut rr, mut tokens) = (Vec::new(), Vec::new(), 0);
    let total = pairs.len().max(1) as f64;
    let micro = config.optimiser.micro_batch;
    let pass = LoraPass { lora: &trainable, dropout: config.lora.dropout, seed };
    let prefix = StepPrefix::run(policy_model, Some(pass), prompts)?;
    tokens += prefix.as_ref().map_or(0, |p| p.len as u64);
    let (g, loss_value) = accumulated_gradients(&trainable, prompts.len(), micro, prefix, |rows, m, prefix| {
        let sub: Vec<(usize, Pair)> = pairs.iter().filter(|(r, _)| rows.contains(r)).map(|&(r, p)| (r - rows.start, p)).collect();
        if sub.is_empty() {
            return Ok(None);
        }
        // The first micro-batch keeps the step's dropout seed (a whole batch at once is
        // the step as it always ran).
        let pass = LoraPass { seed: seed ^ ((m as u64) << 40), ..pass };
        let (lp, t) = micro_logprobs(policy_model, pass, prefix, &prompts[rows.clone()], options)?;
        tokens += t;
        let (loss, c, r) = dpo_loss(lp, &sub, &reference[rows], config.beta)?;
        rc.extend(c);
        rr.extend(r);
        Ok(Some((loss, sub.len() as f64 / total)))
    })?;
    let (g, norm) = clipped(g, loss_value, config.optimiser.max_grad_norm)?;
    let lora = adam.update(lora, g, &config.optimiser);
    let mut metrics = Metrics::from_rewards(&rc, &rr);
    metrics.loss = loss_value;
    Ok(StepOutput { lora, metrics, grad_norm: norm, tokens })
}

/// The gradients of a step's loss with respect to the adapters (zero where none flows),
/// computed `micro` rows (prompts) of `rows` at a time: `loss_of(range, k, prefix)` gives
/// the `k`-th micro-batch's mean loss and its weight in the step's loss (its share of the
/// step's terms), or nothing when it has none; `prefix` is the step's common prefix to
/// continue from (fresh leaves and its length) when there is one. The weighted losses are
/// back-propagated one at a time and their gradients summed, so that only one micro-batch's
/// activations are held; the prefix's share goes back through it once at the end
/// ([`crate::prefix`]). Also returns the step's loss.
pub(crate) fn accumulated_gradients<A: AutodiffBackend>(
    trainable: &Lora<A>,
    rows: usize,
    micro: usize,
    mut prefix: Option<StepPrefix<A>>,
    mut loss_of: impl FnMut(std::ops::Range<usize>, usize, Option<(&KvCache<A>, usize)>) -> Result<Option<(Tensor<A, 1>, f64)>>,
) -> Result<(Vec<Tensor<A::InnerBackend, 2>>, f64)> {
    let mut sum: Option<Vec<Tensor<A::InnerBackend, 2>>> = None;
    let mut add = |grads: &A::Gradients| {
        let g: Vec<Tensor<A::InnerBackend, 2>> = trainable.tensors().iter().map(|(_, t)| t.grad(grads).unwrap_or_else(|| (*t).clone().inner().zeros_like())).collect();
        sum = Some(match sum.take() {
            None => g,
            Some(s) => s.into_iter().zip(g).map(|(a, b)| a + b).collect(),
        });
    };
    let mut loss_value = 0.0;
    for (k, start) in (0..rows).step_by(micro.max(1)).enumerate() {
        let leaves = prefix.as_ref().map(|p| (p.leaves(), p.len));
        let Some((loss, weight)) = loss_of(start..(start + micro.max(1)).min(rows), k, leaves.as_ref().map(|(c, len)| (c, *len)))? else { continue };
        loss_value += weight * f64::from(loss.clone().into_scalar().elem::<f32>());
        let loss = if weight == 1.0 { loss } else { loss * weight };
        let grads = loss.backward();
        add(&grads);
        if let (Some(p), Some((leaves, _))) = (prefix.as_mut(), leaves.as_ref()) {
            p.collect(leaves, &grads);
        }
    }
    if let Some(grads) = prefix.and_then(StepPrefix::backward) {
        add(&grads);
    }
    let sum = sum.ok_or_else(|| Error::Data("no pair in the batch".into()))?;
    Ok((sum, loss_value))
}

/// Gradients clipped to a global norm of `max` when given, and the norm before clipping. A
/// non-finite loss or norm is an error.
pub(crate) fn clipped<B: Backend>(mut g: Vec<Tensor<B, 2>>, loss_value: f64, max: Option<f64>) -> Result<(Vec<Tensor<B, 2>>, f64)> {
    let norm = g.iter().map(|t| f64::from(t.clone().powi_scalar(2).sum().into_scalar().elem::<f32>())).sum::<f64>().sqrt();
    if !norm.is_finite() || !loss_value.is_finite() {
        return Err(Error::Data(format!("loss {loss_value}, gradient norm {norm} (lower the learning rate)")));
    }
    if let Some(max) = max
        && norm > max
    {
        let s = max / (norm + 1e-6);
        g = g.into_iter().map(|t| t * s).collect();
    }
    Ok((g, norm))
}

/// Held-out early stopping: keeps the adapters of the best epoch by a held-out measure and
/// says when `patience` epochs in a row have not improved on it.
pub(crate) struct EarlyStop<B: Backend, M> {
    best: Option<(M, usize, Lora<B>)>,
    bad_epochs: usize,
    patience: usize,
}

impl<B: Backend, M: Copy> EarlyStop<B, M> {
    pub(crate) fn new(patience: usize) -> Self {
        EarlyStop { best: None, bad_epochs: 0, patience }
    }

    /// Records epoch `epoch`'s (from 1) held-out measure `m` (`better(new, best)` compares);
    /// returns whether it is the best so far and whether to stop.
    pub(crate) fn check(&mut self, m: M, epoch: usize, lora: &Lora<B>, better: impl Fn(&M, &M) -> bool) -> (bool, bool) {
        let is_best = self.best.as_ref().is_none_or(|(b, _, _)| better(&m, b));
        if is_best {
            self.best = Some((m, epoch, lora.clone()));
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        (is_best, self.bad_epochs >= self.patience)
    }

    /// The kept adapters, their epoch and measure (the last ones when nothing was checked).
    pub(crate) fn finish(self, last: Lora<B>, epochs: usize) -> (Lora<B>, usize, Option<M>) {
        match self.best {
            Some((m, e, l)) => (l, e, Some(m)),
            None => (last, epochs, None),
        }
    }
}

/// Trains fresh LoRA adapters with DPO on `train` (choosing the epoch on `held_out`) and
/// returns the kept adapters on the model's own backend, ready to merge or save.
///
/// `A` is the autodiff backend over the model's backend (`burn::backend::Autodiff<B>`).
/// `on_log` receives every log line as it happens (write it to a JSONL file, show it on a
/// progress bar).
pub fn train<A: AutodiffBackend>(
    model: &Decoder<A::InnerBackend>,
    train: &[Example],
    held_out: &[Example],
    options: &[u32; 5],
    config: &DpoConfig,
    mut on_log: impl FnMut(&LogLine),
) -> Result<Trained<A::InnerBackend>> {
    config.validate()?;
    let train_pairs = pairs(train);
    if train_pairs.is_empty() {
        return Err(Error::Data("no training pair: every known answer is missing".into()));
    }
    let device = model.device().clone();
    let mut report = TrainReport {
        train_pairs: train_pairs.len(),
        train_prompts: train.len(),
        held_out_pairs: pairs(held_out).len(),
        ..Default::default()
    };

    let t = Instant::now();
    let (ref_train, tok_a) = reference_logprobs(model, train, options, config.eval_batch)?;
    let (ref_held, tok_b) = reference_logprobs(model, held_out, options, config.eval_batch)?;
    report.reference_seconds = t.elapsed().as_secs_f64();
    report.reference_tokens = tok_a + tok_b;

    let t = Instant::now();
    let policy_model = Decoder::<A>::from_inner(model);
    let mut lora = Lora::<A::InnerBackend>::init(model.config(), &config.lora.spec(), config.seed, &device)?;
    let mut adam = AdamW::new(&lora);
    let has_held = !held_out.is_empty();
    let mut stop = EarlyStop::new(config.patience);
    let before = if has_held {
        let (m, tok) = evaluate(model, None, held_out, &ref_held, options, config)?;
        report.training_tokens += tok;
        Some(m)
    } else {
        None
    };
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    for epoch in 0..config.epochs {
        // A batch is `batch_size` prompts with all their pairs: each prompt runs once per
        // epoch however many options are rejected against its chosen one.
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(1 + epoch as u64)));
        let mut epoch_metrics = Vec::new();
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let batch: Vec<(usize, Pair)> = chunk
                .iter()
                .enumerate()
                .flat_map(|(row, &e)| train[e].rejected.iter().map(move |&r| (row, Pair { example: e, chosen: train[e].chosen, rejected: r })))
                .collect();
            let prompts: Vec<&[u32]> = chunk.iter().map(|&e| train[e].prompt.as_slice()).collect();
            let refs: Vec<[f32; 5]> = chunk.iter().map(|&e| ref_train[e]).collect();

            let seed = config.seed ^ ((report.steps as u64 + 1) << 20);
            let done = step::<A>(&policy_model, &lora, &mut adam, &prompts, &batch, &refs, options, config, seed)
                .map_err(|e| Error::Data(format!("step {}: {e}", report.steps + 1)))?;
            report.training_tokens += done.tokens;
            lora = done.lora;
            let (loss_value, norm, metrics) = (done.metrics.loss, done.grad_norm, done.metrics);
            report.steps += 1;
            if report.steps == 1 {
                report.first_loss = loss_value;
            }
            epoch_metrics.push(metrics);
            on_log(&LogLine::Step {
                step: report.steps,
                epoch: epoch as f64 + (b + 1) as f64 / steps_per_epoch as f64,
                stats: metrics,
                grad_norm: norm,
                learning_rate: config.optimiser.learning_rate,
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        report.epochs = epoch + 1;
        report.last_epoch = Metrics::pooled(&epoch_metrics);
        if has_held {
            let (m, tok) = evaluate(model, Some(&lora), held_out, &ref_held, options, config)?;
            report.training_tokens += tok;
            let (best, done) = stop.check(m, epoch + 1, &lora, |new, best| new.loss < best.loss);
            on_log(&LogLine::Eval { epoch: epoch + 1, step: report.steps, eval: m, best });
            if done && epoch + 1 < config.epochs {
                report.stopped_early = true;
                break;
            }
        }
    }
    let (lora, best_epoch, best_metrics) = stop.finish(lora, report.epochs);
    report.best_epoch = best_epoch;
    report.held_out = before.zip(best_metrics);
    report.training_seconds = t.elapsed().as_secs_f64();
    Ok(Trained { lora, report })
}
