//! Text generation: seeded sampling, and a [`Batcher`] that requests join and leave while it
//! runs (continuous batching), each row with its own steering.
//!
//! Every step decodes one token for each running row in one forward pass, then admits
//! waiting requests (their prompts run together, left-padded) and adds their rows to the
//! batch. Padding is masked and never counts as a position, and each row samples from its
//! own seeded generator, so a request's tokens do not depend on the requests it shares a
//! batch with.

use std::collections::VecDeque;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use pas_core::Steering;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::cache::KvCache;
use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Decoder, argmax};

/// How the next token is chosen: greedy when `temperature` is 0, else sampled from the
/// softmax of `logits / temperature` restricted to the smallest set of most likely tokens
/// whose probability reaches `top_p` (nucleus sampling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 = the whole vocabulary.
    pub top_p: f32,
    /// Seed of the row's generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    /// Refuses a negative or non-finite temperature and a `top_p` outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Input(format!("temperature must be a finite number >= 0, not {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Input(format!("top_p must be in (0, 1], not {}", self.top_p)));
        }
        Ok(())
    }
}

/// Chooses tokens under one [`Sampling`], with its own generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded by `sampling.seed`.
    pub fn new(sampling: Sampling) -> Self {
        Sampler { sampling, rng: ChaCha8Rng::seed_from_u64(sampling.seed) }
    }

    /// The next token from a row of logits.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        let Sampling { temperature, top_p, .. } = self.sampling;
        if temperature == 0.0 {
            return argmax(logits) as u32;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, f64::from((l - max) / temperature).exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let (mut kept, mut mass) = (0, 0.0);
        for p in &probs {
            kept += 1;
            mass += p.1 / total;
            if mass >= f64::from(top_p) {
                break;
            }
        }
        let nucleus = &probs[..kept];
        let sum: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut u = self.rng.random::<f64>() * sum;
        for &(id, p) in nucleus {
            if u < p {
                return id;
            }
            u -= p;
        }
        nucleus[kept - 1].0
    }
}

/// One request to generate.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids (the chat template already applied).
    pub prompt: Vec<u32>,
    /// The row's steering (none: the unsteered model).
    pub steering: Option<Arc<Steering>>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// At most this many new tokens.
    pub max_new: usize,
    /// Tokens that end the generation (not emitted).
    pub stop: Vec<u32>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token was chosen.
    Stop,
    /// `max_new` tokens were generated.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What one step produced for one request: a token, the end, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The request's id (given to [`Batcher::add`]).
    pub id: u64,
    /// The new token (none when a stop token was chosen).
    pub token: Option<u32>,
    /// Set on the request's last event.
    pub finish: Option<Finish>,
}

/// A running row.
struct Row {
    id: u64,
    steering: Arc<Steering>,
    sampler: Sampler,
    produced: usize,
    max_new: usize,
    stop: Vec<u32>,
    /// The token to feed next.
    next: u32,
}

impl Row {
    /// Takes the row's next token from its logits; returns the event and whether it ended.
    fn advance(&mut self, logits: &[f32]) -> Emitted {
        let token = self.sampler.next(logits);
        self.produced += 1;
        self.next = token;
        if self.stop.contains(&token) {
            return Emitted { id: self.id, token: None, finish: Some(Finish::Stop) };
        }
        let finish = (self.produced >= self.max_new).then_some(Finish::Length);
        Emitted { id: self.id, token: Some(token), finish }
    }
}

/// Continuous batching over one model: [`Batcher::add`] queues requests, each
/// [`Batcher::step`] decodes a token for every running row and admits waiting ones.
pub struct Batcher<'m, B: Backend> {
    model: &'m Decoder<B>,
    unsteered: Arc<Steering>,
    pending: VecDeque<(u64, Generation)>,
    rows: Vec<Row>,
    cache: Option<KvCache<B>>,
    max_rows: usize,
}

impl<'m, B: Backend> Batcher<'m, B> {
    /// A batcher running at most `max_rows` requests at once (others wait their turn).
    pub fn new(model: &'m Decoder<B>, max_rows: usize) -> Self {
        let unsteered = Arc::new(Steering::none(model.config().geometry()));
        Batcher { model, unsteered, pending: VecDeque::new(), rows: Vec::new(), cache: None, max_rows: max_rows.max(1) }
    }

    /// Checks a request against the model: a non-empty prompt of known tokens that fits the
    /// context with the tokens asked for, a steering of the model's geometry, valid sampling.
    pub fn check(&self, g: &Generation) -> Result<()> {
        let c = self.model.config();
        if g.prompt.is_empty() {
            return Err(Error::Input("the prompt has no tokens".into()));
        }
        if let Some(t) = g.prompt.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::Input(format!("token id {t} is outside the vocabulary ({})", c.vocab)));
        }
        if g.max_new == 0 {
            return Err(Error::Input("at least one new token must be asked for".into()));
        }
        if g.prompt.len() + g.max_new > c.context {
            return Err(Error::Input(format!(
                "the prompt's {} tokens and {} new ones exceed the model's context of {} tokens",
                g.prompt.len(),
                g.max_new,
                c.context
            )));
        }
        if let Some(st) = &g.steering
            && st.geometry() != c.geometry()
        {
            return Err(Error::Input(format!("steering for {} on a model of {}", st.geometry(), c.geometry())));
        }
        g.sampling.validate()
    }

    /// Queues a request under `id` (ids are the caller's; they name the events).
    pub fn add(&mut self, id: u64, g: Generation) -> Result<()> {
        self.check(&g)?;
        self.pending.push_back((id, g));
        Ok(())
    }

    /// Drops a request, waiting or running (e.g. its client went away).
    pub fn cancel(&mut self, id: u64) -> Result<()> {
        self.pending.retain(|(i, _)| *i != id);
        if let Some(r) = self.rows.iter().position(|row| row.id == id) {
            self.remove(&[r])?;
        }
        Ok(())
    }

    /// Requests running.
    pub fn running(&self) -> usize {
        self.rows.len()
    }

    /// Requests waiting to be admitted.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.rows.is_empty() && self.pending.is_empty()
    }

    /// One step: a token for each running row, then the first token of each admitted
    /// request. Rows that end leave the batch.
    pub fn step(&mut self) -> Result<Vec<Emitted>> {
        let mut out = Vec::new();
        if !self.rows.is_empty() {
            let tokens: Vec<[u32; 1]> = self.rows.iter().map(|r| [r.next]).collect();
            let refs: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
            let logits = self.run(&refs, self.rows.iter().map(|r| r.steering.clone()).collect())?;
            let mut ended = Vec::new();
            for (i, (row, l)) in self.rows.iter_mut().zip(&logits).enumerate() {
                let e = row.advance(l);
                if e.finish.is_some() {
                    ended.push(i);
                }
                out.push(e);
            }
            self.remove(&ended)?;
        }
        let room = self.max_rows.saturating_sub(self.rows.len()).min(self.pending.len());
        if room > 0 {
            out.extend(self.admit(room)?);
        }
        Ok(out)
    }

    /// Prefills `n` waiting requests together and adds those that go on to the batch.
    fn admit(&mut self, n: usize) -> Result<Vec<Emitted>> {
        let new: Vec<(u64, Generation)> = self.pending.drain(..n).collect();
        let refs: Vec<&[u32]> = new.iter().map(|(_, g)| g.prompt.as_slice()).collect();
        let steerings: Vec<Arc<Steering>> = new.iter().map(|(_, g)| g.steering.clone().unwrap_or_else(|| self.unsteered.clone())).collect();
        let mut cache = self.model.new_cache();
        let logits = self.forward(&refs, &steerings, &mut cache)?;
        let mut out = Vec::new();
        let mut keep = Vec::new();
        let mut rows = Vec::new();
        for (i, ((id, g), st)) in new.into_iter().zip(steerings).enumerate() {
            let mut row = Row { id, steering: st, sampler: Sampler::new(g.sampling), produced: 0, max_new: g.max_new, stop: g.stop, next: 0 };
            let e = row.advance(&logits[i]);
            if e.finish.is_none() {
                keep.push(i);
                rows.push(row);
            }
            out.push(e);
        }
        if !rows.is_empty() {
            let fresh = cache.select_rows(&keep)?;
            self.cache = Some(match self.cache.take() {
                Some(running) => KvCache::join(vec![running, fresh])?,
                None => fresh,
            });
            self.rows.extend(rows);
        }
        Ok(out)
    }

    /// Runs the running batch's cache on `tokens` (one row each).
    fn run(&mut self, tokens: &[&[u32]], steerings: Vec<Arc<Steering>>) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.cache.take().ok_or_else(|| Error::Input("no running rows".into()))?;
        let result = self.forward(tokens, &steerings, &mut cache);
        self.cache = Some(cache);
        result
    }

    /// One forward pass with per-row steering; the logits of each row.
    fn forward(&self, tokens: &[&[u32]], steerings: &[Arc<Steering>], cache: &mut KvCache<B>) -> Result<Vec<Vec<f32>>> {
        let steered = steerings.iter().any(|s| !s.is_zero());
        let refs: Vec<&Steering> = if steered { steerings.iter().map(|s| s.as_ref()).collect() } else { Vec::new() };
        let out = self.model.forward(tokens, cache, ForwardOptions { steering: &refs, ..Default::default() })?;
        let vocab = self.model.config().vocab;
        let flat = out.logits.into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}")))?;
        Ok(flat.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Removes rows (indices into the batch) and their cache rows.
    fn remove(&mut self, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let keep: Vec<usize> = (0..self.rows.len()).filter(|i| !rows.contains(i)).collect();
        let cache = self.cache.take();
        if keep.is_empty() {
            self.rows.clear();
            return Ok(());
        }
        let mut kept = cache.ok_or_else(|| Error::Input("running rows without a cache".into()))?.select_rows(&keep)?;
        kept.compact();
        self.cache = Some(kept);
        let mut i = 0;
        self.rows.retain(|_| {
            i += 1;
            keep.contains(&(i - 1))
        });
        Ok(())
    }
}

impl<B: Backend> Decoder<B> {
    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping after an
    /// end-of-sequence token (`stop`, or the config's EOS ids when empty), which is included.
    /// The same decoding loop as [`Decoder::generate`] (one request of a
    /// [`crate::model::generate::Batcher`]).
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32], steering: Option<&Steering>) -> Result<Vec<u32>> {
        if max_new == 0 {
            return Ok(Vec::new());
        }
        let stop: Vec<u32> = if stop.is_empty() { self.config.eos.clone() } else { stop.to_vec() };
        let g = crate::model::generate::Generation {
            prompt: prompt.to_vec(),
            steering: steering.map(|s| std::sync::Arc::new(s.clone())),
            sampling: crate::model::generate::Sampling::default(),
            max_new,
            stop: Vec::new(),
        };
        let mut out = Vec::new();
        self.generate(g, |id| {
            out.push(id);
            !stop.contains(&id)
        })?;
        Ok(out)
    }

    /// Generates for one request, calling `on_token` with each new token as it comes (return
    /// `false` to stop early); returns why it ended (`None`: stopped by `on_token`).
    pub fn generate(&self, g: Generation, mut on_token: impl FnMut(u32) -> bool) -> Result<Option<Finish>> {
        let mut batch = Batcher::new(self, 1);
        batch.add(0, g)?;
        loop {
            for e in batch.step()? {
                if let Some(t) = e.token
                    && !on_token(t)
                {
                    return Ok(None);
                }
                if let Some(f) = e.finish {
                    return Ok(Some(f));
                }
            }
        }
    }
}
