//! eval: the PAPI benchmark end to end.
//!
//! It will hold the prompts, the scoring of answers from next-token log-probabilities, the
//! methods (`no-change`, `few-shot`, `p2`, `pas`, `pas-only`, `dpo` and the reference
//! predictors), held-out strength selection, statistics with bootstrap intervals, and the
//! `results.json` / `report.md` / `samples.jsonl` outputs of `cargo xtask reproduce`.
//! (Not written yet: see the eval issue.)
