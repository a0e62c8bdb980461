//! The methods a run compares, by their command-line names.

use papi_data::reference::Reference;
use serde::{Deserialize, Serialize};

/// A method is either a model method (it asks the model) or a reference predictor (it
/// predicts from the data alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Asks the model.
    Model,
    /// Predicts from the data alone.
    Reference(Reference),
}

/// A method of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The default system prompt, no person at all.
    NoChange,
    /// The answer-bias control: five per-person logit offsets over the unsteered model's
    /// option logits, fitted on the known items; nothing else.
    OptionBias,
    /// The person's known answers in the system prompt.
    FewShot,
    /// A prose description of the person as the system prompt (P²).
    P2,
    /// Few-shot prompt plus steering (the official PAS).
    Pas,
    /// PAS as the original code searched it (few-shot prompt + steering; raw strengths
    /// 0, 1, 2, 4, 6, 8; every position and layer; the lowest held-out Total), beside a run
    /// whose `pas` is calibrated.
    PasOriginal,
    /// Steering with the default system prompt: what the steering itself contributes.
    PasOnly,
    /// Few-shot prompt plus one intervention per Big Five domain, each test item steered by
    /// its domain's (strength searched per domain).
    PasDomain,
    /// DPO on LoRA adapters (dpo-baseline).
    Dpo,
    /// PPO on LoRA adapters, exact over the five options (dpo-baseline).
    Ppo,
    /// Reference predictor: always 3.
    #[serde(rename = "always-3")]
    Always3,
    /// Reference predictor: the subject's own rounded domain mean.
    OwnMean,
    /// Reference predictor: population ridge regression fitted on other subjects.
    Ridge,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 13] = [
        Method::NoChange,
        Method::OptionBias,
        Method::FewShot,
        Method::P2,
        Method::Pas,
        Method::PasOriginal,
        Method::PasOnly,
        Method::PasDomain,
        Method::Dpo,
        Method::Ppo,
        Method::Always3,
        Method::OwnMean,
        Method::Ridge,
    ];

    /// The methods that answer the paper's question quickly (`quick`, `reproduce`'s default):
    /// does PAS beat no change, few-shot and the reference predictors? About 3 minutes for one
    /// person on the default model; `all` adds option-bias, P², the PAS controls, DPO and PPO.
    pub const QUICK: [Method; 6] =
        [Method::NoChange, Method::FewShot, Method::Pas, Method::Always3, Method::OwnMean, Method::Ridge];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::NoChange => "no-change",
            Method::OptionBias => "option-bias",
            Method::FewShot => "few-shot",
            Method::P2 => "p2",
            Method::Pas => "pas",
            Method::PasOriginal => "pas-original",
            Method::PasOnly => "pas-only",
            Method::PasDomain => "pas-domain",
            Method::Dpo => "dpo",
            Method::Ppo => "ppo",
            Method::Always3 => "always-3",
            Method::OwnMean => "own-mean",
            Method::Ridge => "ridge",
        }
    }

    /// The reference predictor this method is, if it is one.
    pub fn reference(self) -> Option<Reference> {
        match self {
            Method::Always3 => Some(Reference::Always3),
            Method::OwnMean => Some(Reference::OwnMean),
            Method::Ridge => Some(Reference::Ridge),
            _ => None,
        }
    }

    /// Whether it steers the model with PAS interventions.
    pub fn is_pas(self) -> bool {
        matches!(self, Method::Pas | Method::PasOriginal | Method::PasOnly | Method::PasDomain)
    }

    /// What kind of predictor it is.
    pub fn kind(self) -> Kind {
        match self.reference() {
            Some(r) => Kind::Reference(r),
            None => Kind::Model,
        }
    }

    /// Parses a comma-separated list (`all` for every method, `quick` for [`Method::QUICK`]);
    /// duplicates are dropped.
    pub fn parse_list(s: &str) -> Result<Vec<Method>, String> {
        if s.trim() == "quick" {
            return Ok(Method::QUICK.to_vec());
        }
        parse_list(s, &Method::ALL, "method")
    }
}

/// Parses a comma-separated list of `T` (`all` for every one of `all`), dropping duplicates;
/// an empty list is an error naming `what`.
pub(crate) fn parse_list<T: std::str::FromStr<Err = String> + PartialEq + Copy>(s: &str, all: &[T], what: &str) -> Result<Vec<T>, String> {
    if s.trim() == "all" {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let x: T = part.parse()?;
        if !out.contains(&x) {
            out.push(x);
        }
    }
    if out.is_empty() {
        return Err(format!("no {what} given"));
    }
    Ok(out)
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown method `{s}` (expected one of: {})", Method::ALL.map(Method::name).join(", "))
        })
    }
}
