//! Keying: stored values vs the person's actual answers, and how missing answers count.
//!
//! In the released PAPI records the stored value of a reverse-keyed item (`Sign` starting
//! with `-`) is already reflected into the trait direction: the person's actual answer is
//! `6 - v`. The official code uses stored values as answers; this crate supports both.

use serde::{Deserialize, Serialize};

use crate::inventory::Sign;

/// The value that marks a missing answer in PAPI records.
pub const MISSING: u8 = 0;

/// Reflects a 1..=5 answer (`6 - v`); a missing answer (0) stays missing.
pub fn reflect(v: u8) -> u8 {
    if v == MISSING { MISSING } else { 6 - v }
}

/// How stored values are turned into the answers shown in prompts and used as targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keying {
    /// The person's actual answers: reverse-keyed stored values are reflected back (default).
    #[default]
    Corrected,
    /// Stored values used as answers, as the official code does (reverse-keyed items backwards).
    AsReleased,
}

impl Keying {
    /// Maps a value between the stored (trait-direction) space and the answer space of this
    /// keying. The map is an involution, so it serves both directions: a stored value gives
    /// the answer, and a trait-direction prediction gives the predicted answer.
    pub fn answer(self, stored: u8, sign: Sign) -> u8 {
        match (self, sign) {
            (Keying::Corrected, Sign::Minus) => reflect(stored),
            _ => stored,
        }
    }

    /// The command-line spelling: `corrected` or `as-released`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keying::Corrected => "corrected",
            Keying::AsReleased => "as-released",
        }
    }
}

impl std::str::FromStr for Keying {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "corrected" => Ok(Keying::Corrected),
            "as-released" => Ok(Keying::AsReleased),
            _ => Err(format!("unknown keying `{s}` (expected `corrected` or `as-released`)")),
        }
    }
}

/// How a missing answer (stored 0) of a target item counts in the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingAnswers {
    /// Left out of the metric (and of prompts and labels).
    Exclude,
    /// Scored as a target of 0, as the official code does (an error of up to 5 on one item).
    ScoreAsZero,
}

/// The evaluation protocol: keying plus missing-answer handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Protocol {
    /// How stored values map to answers.
    pub keying: Keying,
    /// How missing target answers count.
    pub missing: MissingAnswers,
}

impl Protocol {
    /// This project's default: actual answers, missing answers excluded.
    pub fn corrected() -> Self {
        Protocol { keying: Keying::Corrected, missing: MissingAnswers::Exclude }
    }

    /// Bit-compatible with the official code: stored values, missing scored as 0.
    pub fn as_released() -> Self {
        Protocol { keying: Keying::AsReleased, missing: MissingAnswers::ScoreAsZero }
    }

    /// The protocol a keying implies: `corrected` excludes missing answers, `as-released`
    /// keeps the official behaviour.
    pub fn for_keying(keying: Keying) -> Self {
        match keying {
            Keying::Corrected => Self::corrected(),
            Keying::AsReleased => Self::as_released(),
        }
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Self::corrected()
    }
}
