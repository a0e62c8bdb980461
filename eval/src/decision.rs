//! Decision rules: how an answer is read from the five option log-probabilities, and the
//! answer-bias control (`option-bias`) that any alignment method must beat.
//!
//! Options are indexed 0 = A (answer 5, "very accurate") .. 4 = E (answer 1).

use serde::{Deserialize, Serialize};

use crate::prompt::answer_of_option;

/// How an answer is read from an item's five option log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The most probable option, as the official code reads it.
    Argmax,
    /// The median answer of the five-option distribution (renormalised): the answer that
    /// minimises the expected absolute error under the model's own distribution.
    Median,
    /// The method's log-probabilities minus the unsteered plain-prompt ones of the same item
    /// (renormalised), then the median: what the method changed, not the model's prior
    /// answer bias. The default (see DESIGN: fixed before the 10-subject run).
    #[default]
    Calibrated,
    /// Per person and method, whichever of the three rules above gives the lowest Total on
    /// that person's held-out known items (the strength search's folds; the test items never
    /// choose), recorded in each subject's result. Methods without held-out known items to
    /// choose on (DPO, PPO, PAS per domain, the option-bias control) read by the median.
    HeldOut,
}

impl Decision {
    /// Every rule, in report order.
    pub const ALL: [Decision; 4] = [Decision::Argmax, Decision::Median, Decision::Calibrated, Decision::HeldOut];

    /// The rules that read an answer by themselves (all but [`Decision::HeldOut`]), in the
    /// order a held-out choice prefers them on a tie.
    pub const READING: [Decision; 3] = [Decision::Median, Decision::Calibrated, Decision::Argmax];

    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Argmax => "argmax",
            Decision::Median => "median",
            Decision::Calibrated => "calibrated",
            Decision::HeldOut => "held-out",
        }
    }

    /// Parses a comma-separated list of rules (`all` for every rule); duplicates are dropped.
    pub fn parse_list(s: &str) -> Result<Vec<Decision>, String> {
        crate::method::parse_list(s, &Decision::ALL, "decision rule")
    }

    /// The rule as it applies to `method`: `option-bias` is read by the median under
    /// `calibrated` too, since its offsets already are its calibration (subtracting the plain
    /// log-probabilities again would leave the offsets alone, a distortion of the person's
    /// answer distribution by the model's prior). Every other method: the rule itself.
    pub fn for_method(self, method: crate::method::Method) -> Decision {
        match (self, method) {
            (Decision::Calibrated | Decision::HeldOut, crate::method::Method::OptionBias) => Decision::Median,
            (rule, _) => rule,
        }
    }

    /// The rule that reads the answers: `chosen` (a subject's held-out choice) for
    /// [`Decision::HeldOut`], the median where there is none; the rule itself otherwise.
    pub fn resolve(self, chosen: Option<Decision>) -> Decision {
        match self {
            Decision::HeldOut => chosen.filter(|c| *c != Decision::HeldOut).unwrap_or(Decision::Median),
            rule => rule,
        }
    }

    /// The option this rule reads from `logprobs`; `plain` holds the unsteered plain-prompt
    /// log-probabilities of the same item (needed by [`Decision::Calibrated`] only).
    /// [`Decision::HeldOut`] reads as the median here: resolve it first ([`Decision::resolve`]).
    /// `None` when the log-probabilities carry no distribution (none finite) or the plain
    /// ones are missing for the calibrated rule.
    pub fn decide(self, logprobs: &[f32; 5], plain: Option<&[f32; 5]>) -> Option<usize> {
        match self {
            Decision::Argmax => argmax(logprobs),
            Decision::Median | Decision::HeldOut => median_option(&distribution(logprobs)?),
            Decision::Calibrated => {
                let plain = plain?;
                median_option(&distribution(&std::array::from_fn(|i| logprobs[i] - plain[i]))?)
            }
        }
    }
}

/// A person's held-out choice of a decision rule for one method: the Total each reading rule
/// gives on the held-out known items, and the lowest (ties: [`Decision::READING`]'s order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChoice {
    /// The chosen rule.
    pub rule: Decision,
    /// The held-out Total under each reading rule.
    pub totals: Vec<(Decision, f64)>,
    /// Held-out known items it was chosen on.
    pub items: usize,
}

impl RuleChoice {
    /// The choice among `totals` (rule, held-out Total): the lowest finite Total.
    pub fn from_totals(totals: Vec<(Decision, f64)>, items: usize) -> Self {
        let rule = Decision::READING
            .into_iter()
            .filter_map(|r| totals.iter().find(|(t, v)| *t == r && v.is_finite()).map(|&(_, v)| (r, v)))
            .fold(None::<(Decision, f64)>, |best, (r, v)| if best.is_none_or(|(_, b)| v < b) { Some((r, v)) } else { best })
            .map_or(Decision::Median, |(r, _)| r);
        RuleChoice { rule, totals, items }
    }

    /// The lowest held-out Total (what the strength search minimises under `held-out`).
    pub fn best(&self) -> f64 {
        self.totals.iter().find(|(r, _)| *r == self.rule).map_or(f64::INFINITY, |&(_, v)| v)
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Decision::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown decision rule `{s}` (expected argmax, median, calibrated or held-out)"))
    }
}

/// The first most probable option (ties: the earlier letter), `None` when nothing is finite.
pub fn argmax(logprobs: &[f32; 5]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in logprobs.iter().enumerate() {
        if !v.is_nan() && v > f32::NEG_INFINITY && best.is_none_or(|b| v > logprobs[b]) {
            best = Some(i);
        }
    }
    best
}

/// The five log-probabilities renormalised into probabilities (a softmax in f64); `None` when
/// none is finite. NaN counts as impossible.
pub fn distribution(logprobs: &[f32; 5]) -> Option<[f64; 5]> {
    let v: [f64; 5] = std::array::from_fn(|i| if logprobs[i].is_nan() { f64::NEG_INFINITY } else { f64::from(logprobs[i]) });
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return None;
    }
    let e: [f64; 5] = std::array::from_fn(|i| (v[i] - m).exp());
    let z: f64 = e.iter().sum();
    Some(e.map(|x| x / z))
}

/// The option of the median answer of a distribution over options: the smallest answer
/// (1..=5) whose cumulative probability reaches one half.
pub fn median_option(p: &[f64; 5]) -> Option<usize> {
    let mut cum = 0.0;
    // Answers 1..=5 are options E..A.
    for option in (0..5).rev() {
        cum += p[option];
        if cum >= 0.5 - 1e-12 {
            return Some(option);
        }
    }
    None
}

/// The expected answer (1..=5) under the renormalised distribution.
pub fn expected_answer(logprobs: &[f32; 5]) -> Option<f64> {
    let p = distribution(logprobs)?;
    Some((0..5).map(|o| p[o] * f64::from(answer_of_option(o))).sum())
}

/// Ridge on the option-bias offsets: keeps them finite when an option is never chosen.
pub const BIAS_RIDGE: f64 = 1e-2;

/// The answer-bias control: five logit offsets `b` maximising
/// `sum_i log softmax(plain_i + b)[chosen_i] - BIAS_RIDGE / 2 * |b|^2` over a person's known
/// items (`plain_i`: the unsteered model's option log-probabilities of item i; `chosen_i`:
/// the option of the person's answer). Newton's method with backtracking; the objective is
/// strictly concave, so the optimum is unique.
pub fn fit_option_bias(plain: &[[f32; 5]], chosen: &[usize]) -> [f64; 5] {
    assert_eq!(plain.len(), chosen.len(), "one chosen option per item");
    let objective = |b: &[f64; 5]| -> f64 {
        let ll: f64 = plain.iter().zip(chosen).map(|(l, &c)| log_softmax_at(l, b, c)).sum();
        ll - BIAS_RIDGE / 2.0 * b.iter().map(|x| x * x).sum::<f64>()
    };
    let mut b = [0.0f64; 5];
    let mut value = objective(&b);
    for _ in 0..100 {
        let mut grad: [f64; 5] = std::array::from_fn(|i| -BIAS_RIDGE * b[i]);
        let mut neg_hess = [[0.0f64; 5]; 5];
        for (l, &c) in plain.iter().zip(chosen) {
            let p = softmax_shifted(l, &b);
            grad[c] += 1.0;
            for i in 0..5 {
                grad[i] -= p[i];
                for j in 0..5 {
                    neg_hess[i][j] += if i == j { p[i] } else { 0.0 } - p[i] * p[j];
                }
            }
        }
        if grad.iter().map(|g| g.abs()).fold(0.0, f64::max) < 1e-10 {
            break;
        }
        for (i, row) in neg_hess.iter_mut().enumerate() {
            row[i] += BIAS_RIDGE;
        }
        let step = solve5(neg_hess, grad);
        let mut t = 1.0;
        loop {
            let next: [f64; 5] = std::array::from_fn(|i| b[i] + t * step[i]);
            let v = objective(&next);
            if v >= value || t < 1e-8 {
                if v >= value {
                    b = next;
                    value = v;
                }
                break;
            }
            t *= 0.5;
        }
        if t < 1e-8 {
            break;
        }
    }
    b
}

/// `plain + offsets` renormalised, as log-probabilities (what `option-bias` answers from).
pub fn with_offsets(plain: &[f32; 5], offsets: &[f64; 5]) -> [f32; 5] {
    let p = softmax_shifted(plain, offsets);
    p.map(|x| x.ln() as f32)
}

fn softmax_shifted(l: &[f32; 5], b: &[f64; 5]) -> [f64; 5] {
    let v: [f64; 5] = std::array::from_fn(|i| f64::from(l[i]) + b[i]);
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: [f64; 5] = std::array::from_fn(|i| (v[i] - m).exp());
    let z: f64 = e.iter().sum();
    e.map(|x| x / z)
}

fn log_softmax_at(l: &[f32; 5], b: &[f64; 5], c: usize) -> f64 {
    let v: [f64; 5] = std::array::from_fn(|i| f64::from(l[i]) + b[i]);
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    v[c] - m - v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Solves `a x = y` for a symmetric positive definite 5×5 `a` (Gaussian elimination with
/// partial pivoting).
fn solve5(mut a: [[f64; 5]; 5], mut y: [f64; 5]) -> [f64; 5] {
    for col in 0..5 {
        let piv = (col..5).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("rows left");
        a.swap(col, piv);
        y.swap(col, piv);
        let pivot_row = a[col];
        for r in col + 1..5 {
            let f = a[r][col] / pivot_row[col];
            for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            y[r] -= f * y[col];
        }
    }
    let mut x = [0.0; 5];
    for r in (0..5).rev() {
        let s: f64 = (r + 1..5).map(|c| a[r][c] * x[c]).sum();
        x[r] = (y[r] - s) / a[r][r];
    }
    x
}

/// The option (0 = A .. 4 = E) of an answer 1..=5.
pub fn option_of_answer(answer: u8) -> usize {
    usize::from(5 - answer.clamp(1, 5))
}
