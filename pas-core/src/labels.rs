//! Labels from contrast pairs: for each pair of prompts (e.g. an item answered "agree" and
//! "disagree"), an optional preference says which one is "like me".

use serde::{Deserialize, Serialize};

/// Two prompts that differ in one respect, by their row in a [`crate::HeadActivations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContrastPair {
    /// Row of the first prompt (for questionnaires: the most-agree answer, "A").
    pub first: usize,
    /// Row of the second prompt (the most-disagree answer, "E").
    pub second: usize,
}

/// Which prompt of a pair is the person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preference {
    /// The first prompt is "like me".
    First,
    /// The second prompt is "like me".
    Second,
}

impl Preference {
    /// The preference a 1..=5 agreement answer expresses: above the midpoint 3, the first
    /// (agree) prompt; below it, the second; 3 and missing (0) express none.
    pub fn from_likert(answer: u8) -> Option<Preference> {
        match answer {
            4..=5 => Some(Preference::First),
            1..=2 => Some(Preference::Second),
            _ => None,
        }
    }
}

/// One labelled sample: a row of the activations, its label and its group (samples of one
/// group, e.g. the two prompts of a pair, always land on the same side of a split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledSample {
    /// Row in the activations.
    pub row: usize,
    /// `true` for "like me".
    pub label: bool,
    /// Group id (the pair's index).
    pub group: usize,
}

/// Labelled samples from pairs and per-pair preferences: a pair with a preference gives two
/// samples (the preferred prompt labelled `true`, the other `false`) in group = the pair's
/// index; a pair without one is dropped.
///
/// # Panics
/// If `pairs` and `preferences` differ in length (a programming error).
pub fn labelled_samples(pairs: &[ContrastPair], preferences: &[Option<Preference>]) -> Vec<LabelledSample> {
    assert_eq!(pairs.len(), preferences.len(), "one preference per pair");
    pairs
        .iter()
        .zip(preferences)
        .enumerate()
        .filter_map(|(group, (pair, pref))| {
            let first_is_me = match (*pref)? {
                Preference::First => true,
                Preference::Second => false,
            };
            Some([
                LabelledSample { row: pair.first, label: first_is_me, group },
                LabelledSample { row: pair.second, label: !first_is_me, group },
            ])
        })
        .flatten()
        .collect()
}
