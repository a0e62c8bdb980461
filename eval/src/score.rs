//! Scoring an item: the option the model picks after the prefill "Option", from next-token
//! log-probabilities (format-aware by default), or by greedy generation parsed as the
//! official code does.
//!
//! Items asked under one system prompt share their token prefix: it is computed once in the
//! KV cache and every item continues from it, in batches.

use burn::tensor::backend::Backend;
use llm_burn::{ForwardOptions, KvCache, Decoder, PromptEncoder};
use pas_core::{Positions, Steering};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::prompt::{LETTERS, PREFILL};

/// How an answer is read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// Next-token log-probabilities of the five letters where the model puts its letter: if
    /// the greedy next token is not a letter (e.g. `" ("`), it is appended and the model
    /// looked at again, at most [`LOOKAHEAD`] times; both spellings of a letter (`"A"`,
    /// `" A"`) count (log-sum-exp). The default.
    #[default]
    FormatAware,
    /// The five `" A"`..`" E"` log-probabilities right after the prefill, nothing else.
    NextToken,
    /// Greedy generation of up to [`GENERATE_TOKENS`] tokens parsed with the official regex
    /// (reproduction only: unparsable answers are left out of the metric).
    Generate,
}

impl Scoring {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scoring::FormatAware => "format-aware",
            Scoring::NextToken => "next-token",
            Scoring::Generate => "generate",
        }
    }
}

impl std::str::FromStr for Scoring {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "format-aware" => Ok(Scoring::FormatAware),
            "next-token" => Ok(Scoring::NextToken),
            "generate" => Ok(Scoring::Generate),
            _ => Err(format!("unknown scoring `{s}` (expected format-aware, next-token or generate)")),
        }
    }
}

/// Tokens appended at most by [`Scoring::FormatAware`] before giving up on finding a letter.
pub const LOOKAHEAD: usize = 3;

/// Tokens generated at most by [`Scoring::Generate`].
pub const GENERATE_TOKENS: usize = 15;

/// The option letters' token ids: `" A"`..`" E"` (required to be single tokens) and the bare
/// `"A"`..`"E"` where those are single tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionTokens {
    /// `" A"`..`" E"`.
    pub spaced: [u32; 5],
    /// `"A"`..`"E"`.
    pub bare: [Option<u32>; 5],
}

impl OptionTokens {
    /// Looks the letters up; a tokenizer that splits `" A"` is an error, not something to
    /// guess around.
    pub fn new(prompts: &PromptEncoder) -> Result<Self> {
        let mut spaced = [0; 5];
        let mut bare = [None; 5];
        for (i, l) in LETTERS.iter().enumerate() {
            spaced[i] = prompts.single_token(&format!(" {l}"))?;
            bare[i] = prompts.single_token(&l.to_string()).ok();
        }
        Ok(OptionTokens { spaced, bare })
    }

    /// The option (0 = A .. 4 = E) a token spells, if any.
    pub fn option_of(&self, token: u32) -> Option<usize> {
        (0..5).find(|&i| self.spaced[i] == token || self.bare[i] == Some(token))
    }

    /// Log-probabilities of the five options from a row of vocabulary log-probabilities:
    /// only the spaced letters, or both spellings combined.
    fn pick(&self, lp: &[f32], both: bool) -> [f32; 5] {
        std::array::from_fn(|i| {
            let a = lp[self.spaced[i] as usize];
            match self.bare[i] {
                Some(b) if both => log_add(a, lp[b as usize]),
                _ => a,
            }
        })
    }
}

fn log_add(a: f32, b: f32) -> f32 {
    let m = a.max(b);
    if m == f32::NEG_INFINITY { m } else { m + ((a - m).exp() + (b - m).exp()).ln() }
}

/// The official answer parser: the first `[abcdeABCDE][^a-zA-Z]` in the first 12 characters
/// of the assistant text (the prefill included), as an option index.
pub fn parse_official(text: &str) -> Option<usize> {
    let head: Vec<char> = text.chars().take(12).collect();
    head.windows(2).find_map(|w| {
        let (c, next) = (w[0], w[1]);
        let letter = "abcdeABCDE".find(c)? % 5;
        (!next.is_ascii_alphabetic()).then_some(letter)
    })
}

/// How the answer of one item was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorePath {
    /// Tokens appended before the letter was read (format-aware) or generated (generate).
    pub tokens: Vec<u32>,
    /// Whether a letter was found (format-aware: the greedy token became a letter within
    /// the lookahead; generate: the parser matched).
    pub found: bool,
}

/// The score of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    /// Log-probabilities of options A..E where the answer was read.
    pub logprobs: [f32; 5],
    /// The chosen option (0 = A .. 4 = E); `None` when generation did not parse.
    pub choice: Option<usize>,
    /// How it was found.
    pub path: ScorePath,
    /// The generated text (generate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// SHA-256 (first 16 hex digits) of the rendered prompt.
    pub prompt_hash: String,
}

/// Scores of a set of items and the tokens run to get them.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// One per item, in order.
    pub items: Vec<ItemScore>,
    /// Tokens run through the model (shared prefix once, suffixes, lookahead steps).
    pub tokens: u64,
}

/// Short SHA-256 of a text, for reports.
pub fn short_hash(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The length of the token prefix that all `rows` share, leaving every row at least one token
/// of its own (the prefix is computed once, each row continues it).
pub fn shared_prefix_len(rows: &[Vec<u32>]) -> usize {
    let min_len = rows.iter().map(Vec::len).min().unwrap_or(0);
    let mut lcp = 0;
    while lcp + 1 < min_len && rows.iter().all(|r| r[lcp] == rows[0][lcp]) {
        lcp += 1;
    }
    lcp
}

/// Rendered prompts, their tokens and the length of the prefix they share.
struct Prompts<'a> {
    rendered: &'a [String],
    rows: &'a [Vec<u32>],
    lcp: usize,
}

/// Asks a model items and reads its answers.
#[derive(Debug)]
pub struct Scorer<'m, B: Backend> {
    model: &'m Decoder<B>,
    prompts: &'m PromptEncoder,
    options: OptionTokens,
    /// How answers are read.
    pub scoring: Scoring,
    /// Items continued from the shared prefix in one forward pass.
    pub batch: usize,
    /// The last unsteered prefixes run (their tokens and caches): a request under a system
    /// prompt asked just before (the folds' unsteered, calibration and grid passes) starts
    /// from its cache instead of running the prompt again.
    prefixes: std::sync::Mutex<Vec<(Vec<u32>, KvCache<B>)>>,
    /// Prompts scored so far (jobs, a prompt under one steering each), for progress reports.
    scored: std::sync::atomic::AtomicUsize,
}

/// Unsteered prefixes kept (each a few hundred MB for a 1.5B model's few-shot prompt).
const PREFIXES_KEPT: usize = 3;

fn log_softmax_rows(logits: Vec<f32>, vocab: usize) -> Vec<Vec<f32>> {
    logits
        .chunks(vocab)
        .map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            row.iter().map(|x| x - lse).collect()
        })
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    llm_burn::model::argmax(v) as u32
}

impl<'m, B: Backend> Scorer<'m, B> {
    /// A scorer for `model` with its prompt encoder.
    pub fn new(model: &'m Decoder<B>, prompts: &'m PromptEncoder, scoring: Scoring, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("the batch size must be at least 1".into()));
        }
        Ok(Scorer { model, prompts, options: OptionTokens::new(prompts)?, scoring, batch, prefixes: Default::default(), scored: Default::default() })
    }

    /// Prompts scored so far by this scorer (each batch adds its prompts as it finishes): a
    /// long request's progress, read from another thread.
    pub fn prompts_scored(&self) -> usize {
        self.scored.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The option tokens.
    pub fn options(&self) -> &OptionTokens {
        &self.options
    }

    /// The model's head geometry (for unsteered steerings).
    pub fn geometry(&self) -> pas_core::Geometry {
        self.model.config().geometry()
    }

    /// One forward pass; `steer` is one steering per row (all-zero ones run unsteered).
    fn step(&self, tokens: &[&[u32]], cache: &mut KvCache<B>, steer: &[&Steering]) -> Result<Vec<Vec<f32>>> {
        let st: &[&Steering] = if steer.iter().all(|s| s.is_zero()) { &[] } else { steer };
        let out = self.model.forward(tokens, cache, ForwardOptions { steering: st, ..Default::default() })?;
        let vocab = out.logits.dims()[1];
        let data = out.logits.into_data().to_vec::<f32>().map_err(|e| Error::Config(format!("logits: {e:?}")))?;
        Ok(log_softmax_rows(data, vocab))
    }

    /// Asks every user message under one system prompt (rendered with the model's chat
    /// template and the prefill "Option") with `steering` applied, and reads the answers.
    pub fn score(&self, system: &str, users: &[String], steering: &Steering) -> Result<Scored> {
        let mut all = self.score_strengths(system, users, std::slice::from_ref(steering))?;
        Ok(all.pop().expect("one scored set per steering"))
    }

    /// [`Scorer::score`] under each of `steerings` (e.g. one intervention at several
    /// strengths). When none of them steers the prompt's shared prefix (zero steerings,
    /// [`Positions::Answer`], whose prefix ends where the user's message starts, and
    /// [`Positions::Last`], whose one steered position is never in the prefix) that prefix
    /// runs once, unsteered, and the rows of every steering share batches, each row with its
    /// own steering; otherwise ([`Positions::All`]) each steering runs apart with its prefix
    /// steered.
    pub fn score_strengths(&self, system: &str, users: &[String], steerings: &[Steering]) -> Result<Vec<Scored>> {
        if users.is_empty() || steerings.is_empty() {
            return Ok(steerings.iter().map(|_| Scored { items: Vec::new(), tokens: 0 }).collect());
        }
        let rendered: Vec<String> = users.iter().map(|u| self.prompts.render(system, u, PREFILL)).collect::<Result<_, _>>()?;
        let rows: Vec<Vec<u32>> = rendered.iter().map(|r| self.prompts.encode(r)).collect::<Result<_, _>>()?;
        let prefix_free = steerings.iter().all(|s| s.is_zero() || s.positions() != Positions::All);
        // `answer` steers the whole user message: the shared prefix stops where it starts.
        let answer = steerings.iter().any(|s| !s.is_zero() && s.positions() == Positions::Answer);
        let lcp = if answer { shared_prefix_len(&rows).min(self.user_start(system)?) } else { shared_prefix_len(&rows) };
        let prompts = Prompts { rendered: &rendered, rows: &rows, lcp };
        if !prefix_free {
            return steerings.iter().map(|s| self.score_rows(&prompts, s, &(0..rows.len()).map(|i| (i, s)).collect::<Vec<_>>())).collect();
        }
        let jobs: Vec<(usize, &Steering)> = steerings.iter().flat_map(|s| (0..rows.len()).map(move |i| (i, s))).collect();
        let all = self.score_rows(&prompts, &Steering::none(self.model.config().geometry()), &jobs)?;
        // The shared run's tokens are counted with the first steering.
        Ok(all
            .items
            .chunks(rows.len())
            .enumerate()
            .map(|(k, items)| Scored { items: items.to_vec(), tokens: if k == 0 { all.tokens } else { 0 } })
            .collect())
    }

    /// Asks every user message under one system prompt, row `i` steered by
    /// `steerings[of_row[i]]` (e.g. each item by its domain's intervention). Steerings that
    /// leave the prompt's prefix alone share one unsteered prefix and run in the same
    /// batches; otherwise ([`Positions::All`]) each steering's rows run apart, behind their
    /// own steered prefix. Scores come back in row order.
    pub fn score_each(&self, system: &str, users: &[String], steerings: &[Steering], of_row: &[usize]) -> Result<Scored> {
        if users.len() != of_row.len() || of_row.iter().any(|&k| k >= steerings.len()) {
            return Err(Error::Config(format!("{} rows, {} steering indices, {} steerings: one valid index per row needed", users.len(), of_row.len(), steerings.len())));
        }
        if users.is_empty() {
            return Ok(Scored { items: Vec::new(), tokens: 0 });
        }
        let prefix_free = steerings.iter().all(|s| s.is_zero() || s.positions() != Positions::All);
        if !prefix_free {
            let mut items: Vec<Option<ItemScore>> = vec![None; users.len()];
            let mut tokens = 0;
            for (k, steering) in steerings.iter().enumerate() {
                let rows: Vec<usize> = (0..users.len()).filter(|&i| of_row[i] == k).collect();
                if rows.is_empty() {
                    continue;
                }
                let mine: Vec<String> = rows.iter().map(|&i| users[i].clone()).collect();
                let scored = self.score(system, &mine, steering)?;
                tokens += scored.tokens;
                for (&i, s) in rows.iter().zip(scored.items) {
                    items[i] = Some(s);
                }
            }
            return Ok(Scored { items: items.into_iter().map(|s| s.expect("every row has a steering")).collect(), tokens });
        }
        let rendered: Vec<String> = users.iter().map(|u| self.prompts.render(system, u, PREFILL)).collect::<Result<_, _>>()?;
        let rows: Vec<Vec<u32>> = rendered.iter().map(|r| self.prompts.encode(r)).collect::<Result<_, _>>()?;
        let answer = steerings.iter().any(|s| !s.is_zero() && s.positions() == Positions::Answer);
        let lcp = if answer { shared_prefix_len(&rows).min(self.user_start(system)?) } else { shared_prefix_len(&rows) };
        let prompts = Prompts { rendered: &rendered, rows: &rows, lcp };
        let jobs: Vec<(usize, &Steering)> = of_row.iter().enumerate().map(|(i, &k)| (i, &steerings[k])).collect();
        self.score_rows(&prompts, &Steering::none(self.model.config().geometry()), &jobs)
    }

    /// Tokens of a prompt under `system` before the user's message (the system prompt, e.g.
    /// the few-shot answers, and the chat template's opening of the user turn): what
    /// [`Positions::Answer`] leaves unsteered, the same whichever items are asked.
    pub fn user_start(&self, system: &str) -> Result<usize> {
        let probe = |user: &str| -> Result<Vec<u32>> { Ok(self.prompts.encode(&self.prompts.render(system, user, PREFILL)?)?) };
        Ok(shared_prefix_len(&[probe("A")?, probe("B")?]))
    }

    /// The prefix once (under `prefix_steering`), then `jobs` (row, steering of its tokens)
    /// continuing it in batches; scores in job order. When rows run under several steerings
    /// that steer the last position only, each row's tokens but its last run once for all its
    /// jobs (see [`Scorer::first_step`]).
    fn score_rows(&self, p: &Prompts<'_>, prefix_steering: &Steering, jobs: &[(usize, &Steering)]) -> Result<Scored> {
        let lcp = p.lcp;
        let mut tokens = 0u64;
        let mut prefix = self.model.new_cache();
        if lcp > 0 && prefix_steering.is_zero() {
            let (cache, run) = self.unsteered_prefix(&p.rows[0][..lcp])?;
            prefix = cache;
            tokens += run;
        } else if lcp > 0 {
            self.step(&[&p.rows[0][..lcp]], &mut prefix, &[prefix_steering])?;
            tokens += lcp as u64;
        }
        // Worth it when a row runs under several steerings, all of them at the last position
        // at most (unsteered scoring keeps the plain path).
        let distinct = jobs.iter().map(|&(i, _)| i).collect::<std::collections::BTreeSet<_>>().len();
        let share_bodies = jobs.len() > distinct
            && jobs.iter().any(|(_, s)| !s.is_zero())
            && jobs.iter().all(|&(i, s)| (s.is_zero() || s.positions() == Positions::Last) && p.rows[i].len() - lcp >= 2);
        // Jobs of one row side by side, so that a batch holds few rows under many steerings.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        if share_bodies {
            order.sort_by_key(|&j| jobs[j].0);
        }
        let mut items: Vec<Option<ItemScore>> = vec![None; jobs.len()];
        for chunk in order.chunks(self.batch) {
            let chunk_jobs: Vec<(usize, &Steering)> = chunk.iter().map(|&j| jobs[j]).collect();
            let steer: Vec<&Steering> = chunk_jobs.iter().map(|&(_, s)| s).collect();
            let (first, mut cache, run) = self.first_step(p, &prefix, &chunk_jobs, share_bodies)?;
            let (scores, steps) = self.read(first, &mut cache, &steer)?;
            tokens += run + steps;
            self.scored.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            for (&j, mut s) in chunk.iter().zip(scores) {
                s.prompt_hash = short_hash(&p.rendered[jobs[j].0]);
                items[j] = Some(s);
            }
        }
        Ok(Scored { items: items.into_iter().map(|s| s.expect("every job is scored")).collect(), tokens })
    }

    /// The cache of `tokens` run unsteered, and the tokens run for it: 0 when the same
    /// prefix ran last (or among the last few), the whole prefix otherwise.
    fn unsteered_prefix(&self, tokens: &[u32]) -> Result<(KvCache<B>, u64)> {
        let mut kept = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = kept.iter().position(|(t, _)| t == tokens) {
            let hit = kept.remove(i);
            let cache = hit.1.clone();
            kept.push(hit);
            return Ok((cache, 0));
        }
        let mut cache = self.model.new_cache();
        self.step(&[tokens], &mut cache, &[])?;
        if kept.len() == PREFIXES_KEPT {
            kept.remove(0);
        }
        kept.push((tokens.to_vec(), cache.clone()));
        Ok((cache, tokens.len() as u64))
    }

    /// The log-probabilities after each job's whole prompt, its cache, and the tokens run.
    /// With `share_bodies` (jobs sorted by row, each steering at most the last position) the
    /// distinct rows' tokens but the last run once, unsteered, and each job continues a copy
    /// of its row's cache with its last token under its own steering.
    fn first_step(&self, p: &Prompts<'_>, prefix: &KvCache<B>, jobs: &[(usize, &Steering)], share_bodies: bool) -> Result<(Vec<Vec<f32>>, KvCache<B>, u64)> {
        let lcp = p.lcp;
        let fresh = |n: usize| if lcp > 0 { prefix.repeat(n) } else { Ok(self.model.new_cache()) };
        let steer: Vec<&Steering> = jobs.iter().map(|&(_, s)| s).collect();
        if !share_bodies {
            let mut cache = fresh(jobs.len())?;
            let suffixes: Vec<&[u32]> = jobs.iter().map(|&(i, _)| &p.rows[i][lcp..]).collect();
            let first = self.step(&suffixes, &mut cache, &steer)?;
            return Ok((first, cache, suffixes.iter().map(|s| s.len() as u64).sum()));
        }
        let mut distinct: Vec<usize> = jobs.iter().map(|&(i, _)| i).collect();
        distinct.dedup();
        let mut cache = fresh(distinct.len())?;
        let bodies: Vec<&[u32]> = distinct.iter().map(|&i| &p.rows[i][lcp..p.rows[i].len() - 1]).collect();
        self.model.forward(&bodies, &mut cache, ForwardOptions::default())?;
        let fork: Vec<usize> = jobs.iter().map(|&(i, _)| distinct.iter().position(|&d| d == i).expect("a job's row is among the distinct rows")).collect();
        let mut forked = cache.select_rows(&fork)?;
        let lasts: Vec<[u32; 1]> = jobs.iter().map(|&(i, _)| [p.rows[i][p.rows[i].len() - 1]]).collect();
        let refs: Vec<&[u32]> = lasts.iter().map(|l| l.as_slice()).collect();
        let first = self.step(&refs, &mut forked, &steer)?;
        Ok((first, forked, bodies.iter().map(|b| b.len() as u64).sum::<u64>() + jobs.len() as u64))
    }

    /// Reads the answers of a batch from the log-probabilities after the prompt, running
    /// further steps as the scoring needs; returns the scores and the tokens run.
    fn read(&self, first: Vec<Vec<f32>>, cache: &mut KvCache<B>, steer: &[&Steering]) -> Result<(Vec<ItemScore>, u64)> {
        let n = first.len();
        let o = &self.options;
        let new = |lp: [f32; 5], choice, tokens, found| ItemScore {
            logprobs: lp,
            choice,
            path: ScorePath { tokens, found },
            text: None,
            prompt_hash: String::new(),
        };
        let best = |lp: &[f32; 5]| (0..5).fold(0, |b, i| if lp[i] > lp[b] { i } else { b });
        match self.scoring {
            Scoring::NextToken => Ok((
                first
                    .iter()
                    .map(|lp| {
                        let p = o.pick(lp, false);
                        new(p, Some(best(&p)), Vec::new(), true)
                    })
                    .collect(),
                0,
            )),
            Scoring::FormatAware => {
                let mut out: Vec<Option<ItemScore>> = vec![None; n];
                let mut path: Vec<Vec<u32>> = vec![Vec::new(); n];
                let mut lps = first.clone();
                let mut steps = 0u64;
                for step in 0..=LOOKAHEAD {
                    let mut next = Vec::with_capacity(n);
                    for r in 0..n {
                        let g = argmax(&lps[r]);
                        next.push(g);
                        if out[r].is_some() {
                            continue;
                        }
                        if o.option_of(g).is_some() {
                            let p = o.pick(&lps[r], true);
                            out[r] = Some(new(p, Some(best(&p)), path[r].clone(), true));
                        } else if step == LOOKAHEAD {
                            // No letter within the lookahead: read the letters right after
                            // the prefill, and say so.
                            let p = o.pick(&first[r], true);
                            out[r] = Some(new(p, Some(best(&p)), path[r].clone(), false));
                        } else {
                            path[r].push(g);
                        }
                    }
                    if out.iter().all(Option::is_some) {
                        break;
                    }
                    let rows: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
                    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
                    lps = self.step(&refs, cache, steer)?;
                    steps += n as u64;
                }
                Ok((out.into_iter().map(|s| s.expect("every row is read by the last step")).collect(), steps))
            }
            Scoring::Generate => {
                let eos = &self.model.config().eos;
                let mut generated: Vec<Vec<u32>> = vec![Vec::new(); n];
                let mut done = vec![false; n];
                let mut lps = first.clone();
                let mut steps = 0u64;
                for step in 0..GENERATE_TOKENS {
                    let mut next = Vec::with_capacity(n);
                    for r in 0..n {
                        let g = argmax(&lps[r]);
                        next.push(g);
                        if !done[r] {
                            generated[r].push(g);
                            done[r] = eos.contains(&g);
                        }
                    }
                    if done.iter().all(|d| *d) || step + 1 == GENERATE_TOKENS {
                        break;
                    }
                    let rows: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
                    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
                    lps = self.step(&refs, cache, steer)?;
                    steps += n as u64;
                }
                let mut out = Vec::with_capacity(n);
                for r in 0..n {
                    let text = self.prompts.decode(&generated[r])?;
                    let choice = parse_official(&format!("{PREFILL}{text}"));
                    let mut s = new(o.pick(&first[r], false), choice, generated[r].clone(), choice.is_some());
                    s.text = Some(text);
                    out.push(s);
                }
                Ok((out, steps))
            }
        }
    }
}
