//! Preference pairs from a person's answers.
//!
//! Every answered item gives one prompt (the evaluation's item prompt, ending with the
//! prefill "Option") whose completions are single option tokens `" A"`..`" E"`. The chosen
//! completion is the person's option (answer 5 = A ... 1 = E). Under [`Rejected::AllOthers`]
//! (the default) every other option is rejected: four pairs per item, so the person's option
//! must rank above each of the others. Under [`Rejected::OppositeExtreme`] the rejected one
//! is the extreme on the other side: E for answers 5 and 4, A for 2 and 1; an answer of 3 has
//! no other side, so both extremes are rejected (two pairs: the person is neither). Missing
//! answers give no pair.
//!
//! Why all-others by default: opposite-extreme pairs can all be won without finding the
//! person's option, by pushing both extremes down. Measured on the default model (one
//! subject, 30 test items), opposite-extreme training answered C to every test item (the
//! same as always answering 3), while all-others answered the person's most frequent option.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Which options are rejected against the person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rejected {
    /// The extreme on the other side of the scale (both extremes for an answer of 3).
    OppositeExtreme,
    /// Every other option, one pair each (the default).
    #[default]
    AllOthers,
}

impl std::str::FromStr for Rejected {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "opposite-extreme" => Ok(Rejected::OppositeExtreme),
            "all-others" => Ok(Rejected::AllOthers),
            _ => Err(format!("unknown rejection rule `{s}` (expected opposite-extreme or all-others)")),
        }
    }
}

/// The option index (0 = A ... 4 = E) of a 1..=5 answer; `None` for anything else
/// (0 is a missing answer).
pub fn option_of_answer(answer: u8) -> Option<usize> {
    (1..=5).contains(&answer).then(|| 5 - answer as usize)
}

/// The chosen option and the rejected ones for an answer, by the module's rule.
pub fn preference(answer: u8, rule: Rejected) -> Option<(usize, Vec<usize>)> {
    let chosen = option_of_answer(answer)?;
    let rejected = match rule {
        Rejected::AllOthers => (0..5).filter(|&o| o != chosen).collect(),
        Rejected::OppositeExtreme => match chosen {
            0 | 1 => vec![4],
            3 | 4 => vec![0],
            _ => vec![0, 4],
        },
    };
    Some((chosen, rejected))
}

/// One prompt with its chosen option and the options rejected against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The item's number (for logs).
    pub item: u16,
    /// The chat-formatted prompt's token ids, ending with the prefill.
    pub prompt: Vec<u32>,
    /// The person's option (0 = A ... 4 = E).
    pub chosen: usize,
    /// Options rejected against it.
    pub rejected: Vec<usize>,
}

impl Example {
    /// Builds the example for an item's answer (`None` when the answer is missing).
    pub fn new(item: u16, prompt: Vec<u32>, answer: u8, rule: Rejected) -> Option<Self> {
        let (chosen, rejected) = preference(answer, rule)?;
        Some(Example { item, prompt, chosen, rejected })
    }
}

/// One preference pair: an example's prompt, the chosen and one rejected option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// Index of the example.
    pub example: usize,
    /// Chosen option.
    pub chosen: usize,
    /// Rejected option.
    pub rejected: usize,
}

/// Every pair of the examples, in order.
pub fn pairs(examples: &[Example]) -> Vec<Pair> {
    examples.iter().enumerate().flat_map(|(i, e)| e.rejected.iter().map(move |&r| Pair { example: i, chosen: e.chosen, rejected: r })).collect()
}

/// Splits examples (whole items, so no item is on both sides) into training and held-out
/// parts: a seeded shuffle, `round(fraction · n)` items held out, both parts kept in their
/// original order.
pub fn split_held_out(examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let k = ((fraction * n as f64).round() as usize).min(n.saturating_sub(1));
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut held = vec![false; n];
    for &i in &idx[..k] {
        held[i] = true;
    }
    let (mut train, mut out) = (Vec::new(), Vec::new());
    for (i, e) in examples.into_iter().enumerate() {
        if held[i] { out.push(e) } else { train.push(e) }
    }
    (train, out)
}
