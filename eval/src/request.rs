//! What a model method asks the model ([`Request`]: items under one system prompt, each row
//! under a steering) and the one place that asks it ([`Executor`]). Methods plan requests and
//! turn the scores into answers; only the executor talks to the scorer.
//!
//! The executor remembers what the unsteered model said: an item asked again under the same
//! system prompt without steering (or under a steering of strength zero, which adds nothing)
//! is answered from memory. Within a subject this is what PAS shares with few-shot: the
//! strength search's zero on the folds, and the test items when the search chose zero, are
//! the few-shot rule choice's and few-shot's own prompts.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use papi_data::Inventory;
use pas_core::Steering;

use crate::error::{Error, Result};
use crate::prompt::question;
use crate::score::{ItemScore, Scored, Scorer};
use sha2::{Digest, Sha256};

/// How the rows of a request are steered.
#[derive(Debug, Clone)]
pub enum Steer {
    /// Unsteered.
    None,
    /// Every row under one steering.
    One(Steering),
    /// Every row under each steering in turn (e.g. one intervention at the strengths of a
    /// grid): one set of scores per steering.
    Strengths(Vec<Steering>),
    /// Row `i` under `steerings[of_row[i]]` (e.g. each item under its domain's intervention).
    PerRow {
        /// The distinct steerings.
        steerings: Vec<Steering>,
        /// Each row's steering.
        of_row: Vec<usize>,
    },
}

/// Items asked under one system prompt.
#[derive(Debug, Clone)]
pub struct Request {
    /// The system prompt.
    pub system: String,
    /// The items asked, in order.
    pub items: Vec<u16>,
    /// How the rows are steered.
    pub steer: Steer,
}

impl Request {
    /// `items` under `system`, unsteered.
    pub fn plain(system: impl Into<String>, items: &[u16]) -> Self {
        Request { system: system.into(), items: items.to_vec(), steer: Steer::None }
    }

    /// `items` under `system`, steered as `steer` says.
    pub fn steered(system: impl Into<String>, items: &[u16], steer: Steer) -> Self {
        Request { system: system.into(), items: items.to_vec(), steer }
    }
}

/// Unsteered scores kept at most (then forgotten all at once): a run's subjects ask a few
/// thousand items each.
const MEMO_MAX: usize = 200_000;

/// A system prompt's SHA-256 and an item: what an unsteered score depends on.
type MemoKey = ([u8; 32], u16);

/// Runs requests through a scorer.
pub struct Executor<'e, 'm, B: Backend> {
    scorer: &'e Scorer<'m, B>,
    inventory: &'e Inventory,
    /// Unsteered scores already computed.
    memo: Mutex<HashMap<MemoKey, ItemScore>>,
}

impl<'e, 'm, B: Backend> Executor<'e, 'm, B> {
    /// An executor over `scorer`, asking the items of `inventory`.
    pub fn new(scorer: &'e Scorer<'m, B>, inventory: &'e Inventory) -> Self {
        Executor { scorer, inventory, memo: Mutex::new(HashMap::new()) }
    }

    /// The scorer it runs on.
    pub fn scorer(&self) -> &Scorer<'m, B> {
        self.scorer
    }

    fn questions(&self, items: &[u16]) -> Result<Vec<String>> {
        items
            .iter()
            .map(|&n| self.inventory.item(n).map(|i| question(&i.text)).ok_or_else(|| Error::Config(format!("item {n} is not in the inventory"))))
            .collect()
    }

    /// Runs a request: one set of scores per steering for [`Steer::Strengths`], else one.
    /// An unsteered request (or one whose steerings are all zero) runs only the items not
    /// asked before under its system prompt; its `tokens` count what ran.
    pub fn run(&self, req: &Request) -> Result<Vec<Scored>> {
        let unsteered = match &req.steer {
            Steer::None => true,
            Steer::One(s) => s.is_zero(),
            Steer::Strengths(all) => all.len() == 1 && all[0].is_zero(),
            Steer::PerRow { steerings, .. } => steerings.iter().all(|s| s.is_zero()),
        };
        if unsteered {
            return Ok(vec![self.remembered(&req.system, &req.items)?]);
        }
        let users = self.questions(&req.items)?;
        let none = || Steering::none(self.scorer.geometry());
        Ok(match &req.steer {
            Steer::None => vec![self.scorer.score(&req.system, &users, &none())?],
            Steer::One(s) => vec![self.scorer.score(&req.system, &users, s)?],
            Steer::Strengths(all) => self.scorer.score_strengths(&req.system, &users, all)?,
            Steer::PerRow { steerings, of_row } => vec![self.scorer.score_each(&req.system, &users, steerings, of_row)?],
        })
    }

    /// `items` under `system` unsteered: those asked before from memory, the rest run in one
    /// request and remembered.
    fn remembered(&self, system: &str, items: &[u16]) -> Result<Scored> {
        let key: [u8; 32] = Sha256::digest(system.as_bytes()).into();
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= MEMO_MAX {
            memo.clear();
        }
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<u16> = items.iter().copied().filter(|&n| !memo.contains_key(&(key, n)) && seen.insert(n)).collect();
        let mut tokens = 0;
        if !missing.is_empty() {
            let users = self.questions(&missing)?;
            let scored = self.scorer.score(system, &users, &Steering::none(self.scorer.geometry()))?;
            tokens = scored.tokens;
            memo.extend(missing.into_iter().map(|n| (key, n)).zip(scored.items));
        }
        let items = items.iter().map(|&n| memo.get(&(key, n)).cloned().ok_or_else(|| Error::Config(format!("item {n} was not scored")))).collect::<Result<_>>()?;
        Ok(Scored { items, tokens })
    }

    /// Puts unsteered scores of items under `system` into memory (e.g. a method's answers
    /// finished in an earlier part of the run), as if they had been asked.
    pub fn remember(&self, system: &str, scores: impl IntoIterator<Item = (u16, ItemScore)>) {
        let key: [u8; 32] = Sha256::digest(system.as_bytes()).into();
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        memo.extend(scores.into_iter().map(|(n, s)| ((key, n), s)));
    }

    /// Runs a request that yields one set of scores (anything but [`Steer::Strengths`] with
    /// several steerings).
    pub fn one(&self, req: &Request) -> Result<Scored> {
        let mut all = self.run(req)?;
        if all.len() != 1 {
            return Err(Error::Config(format!("a request with {} steerings gives {} sets of scores, not one", all.len(), all.len())));
        }
        Ok(all.remove(0))
    }
}
