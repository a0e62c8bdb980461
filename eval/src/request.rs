//! What a model method asks the model ([`Request`]: items under one system prompt, each row
//! under a steering) and the one place that asks it ([`Executor`]). Methods plan requests and
//! turn the scores into answers; only the executor talks to the scorer.

use burn::tensor::backend::Backend;
use papi_data::Inventory;
use pas_core::Steering;

use crate::error::{Error, Result};
use crate::prompt::question;
use crate::score::{Scored, Scorer};

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

/// Runs requests through a scorer.
pub struct Executor<'e, 'm, B: Backend> {
    scorer: &'e Scorer<'m, B>,
    inventory: &'e Inventory,
}

impl<'e, 'm, B: Backend> Executor<'e, 'm, B> {
    /// An executor over `scorer`, asking the items of `inventory`.
    pub fn new(scorer: &'e Scorer<'m, B>, inventory: &'e Inventory) -> Self {
        Executor { scorer, inventory }
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
    pub fn run(&self, req: &Request) -> Result<Vec<Scored>> {
        let users = self.questions(&req.items)?;
        let none = || Steering::none(self.scorer.geometry());
        Ok(match &req.steer {
            Steer::None => vec![self.scorer.score(&req.system, &users, &none())?],
            Steer::One(s) => vec![self.scorer.score(&req.system, &users, s)?],
            Steer::Strengths(all) => self.scorer.score_strengths(&req.system, &users, all)?,
            Steer::PerRow { steerings, of_row } => vec![self.scorer.score_each(&req.system, &users, steerings, of_row)?],
        })
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
