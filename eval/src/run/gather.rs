//! What a run's folder holds so far, gathered into its reports: the methods and people of
//! every part run into the folder (its previous `results.json`), not only this invocation's.
//! A published run made in parts (`reproduce --methods dpo,ppo --subjects 2` into a folder
//! that holds ten people's other methods) then keeps every row; a method run on fewer people
//! than the folder holds is aggregated over the people it has and says so.

use burn::tensor::backend::Backend;
use papi_data::{MissingAnswers, Subject};

use super::{Evaluator, read_json, write_json};
use crate::aggregate::{Shared, summarise};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::files::write_samples;
use crate::method::Method;
use crate::results::{FORMAT_VERSION, Meta, Results, SubjectResult};

/// The methods of a folder's reports: the previous parts' methods in their order, then this
/// invocation's new ones (model methods before the first reference predictor, reference
/// predictors at the end).
pub fn union_methods(previous: &[Method], mine: &[Method]) -> Vec<Method> {
    if previous.is_empty() {
        return mine.to_vec();
    }
    let mut out = previous.to_vec();
    for &m in mine.iter().filter(|m| !previous.contains(m)) {
        let at = if m.reference().is_none() { out.iter().position(|x| x.reference().is_some()).unwrap_or(out.len()) } else { out.len() };
        out.insert(at, m);
    }
    out
}

/// Work of the previous parts: their reports, their methods and people.
pub(super) struct Previous {
    /// The folder's `results.json`, when it has one (never for a shard: shards are merged).
    results: Option<Results>,
}

impl Previous {
    /// The methods the previous parts reported.
    pub(super) fn methods(&self) -> Vec<Method> {
        self.results.iter().flat_map(|r| r.runs.iter().map(|x| x.method)).collect()
    }

    /// Seconds and tokens of the activation collection the previous parts recorded.
    fn collect(&self) -> Option<(f64, u64)> {
        self.results.as_ref().map(|r| (r.meta.collect_seconds, r.meta.collect_tokens)).filter(|c| c.1 > 0)
    }
}

impl<B: Backend> Evaluator<'_, B> {
    /// The previous parts' reports in this folder (none for a shard, whose folder holds its
    /// subjects only).
    pub(super) fn previous(&self) -> Result<Previous> {
        let path = self.out.join("results.json");
        let results = if self.config.shard.is_none() && path.exists() {
            Some(read_json(&path).map_err(|e| match e {
                Error::File { path, message } => Error::File {
                    path,
                    message: format!("{message} (the earlier parts' reports, kept by this part: remove the file to rebuild them from subjects/ with every method in --methods)"),
                },
                e => e,
            })?)
        } else {
            None
        };
        Ok(Previous { results })
    }

    /// Positions in the records of the people the reports cover: this invocation's and the
    /// previous parts' (in the records' order).
    fn gathered_positions(&self, previous: &Previous) -> Vec<usize> {
        let mine = self.positions();
        let before: std::collections::HashSet<i64> = previous.results.iter().flat_map(|r| r.meta.cases.iter().copied()).collect();
        (0..self.data.subjects.len()).filter(|p| mine.contains(p) || before.contains(&self.data.subjects[*p].case)).collect()
    }

    /// Reads every finished subject of `methods` (this invocation's and the previous parts')
    /// and writes `results.json`, `report.md`, `totals.svg` and `samples.jsonl`. A method is
    /// aggregated over the people whose file it has (this invocation's methods have all of
    /// this invocation's people); one with none is left out.
    /// `collect` is this invocation's activation collection (its seconds and tokens), if it
    /// ran one; `plain` the unsteered pass's.
    pub(super) fn aggregate(&self, collect: Option<(f64, u64)>, plain: (f64, u64), previous: &Previous, methods: &[Method]) -> Result<Results> {
        let positions = self.gathered_positions(previous);
        let subjects: Vec<&Subject> = positions.iter().map(|&p| &self.data.subjects[p]).collect();
        let references = self.references(&positions, methods)?;
        // Reference predictors' subjects are written too, so that shards merge from files alone.
        for (m, results) in &references {
            for r in results {
                write_json(&self.subject_path(*m, r.case), r)?;
            }
        }
        let mut per_method: Vec<(Method, Vec<SubjectResult>)> = Vec::new();
        for &m in methods {
            if let Some((_, r)) = references.iter().find(|(rm, _)| *rm == m) {
                per_method.push((m, r.clone()));
                continue;
            }
            // This invocation's people have every method of it (the loop above wrote them).
            let results: Vec<SubjectResult> = subjects
                .iter()
                .map(|s| self.subject_path(m, s.case))
                .filter(|p| p.exists())
                .map(|p| read_json(&p))
                .collect::<Result<_>>()?;
            if !results.is_empty() {
                per_method.push((m, results));
            }
        }
        // The work shared by every subject: the collection by the PAS methods (this
        // invocation's, else the earlier parts'), the plain pass by no-change.
        let mut shared = Shared::new();
        let collect = collect.filter(|c| c.1 > 0).or_else(|| previous.collect()).unwrap_or_default();
        for m in methods.iter().filter(|m| m.is_pas()) {
            shared.entry(*m).or_default().collect = collect;
        }
        if methods.contains(&Method::NoChange) {
            shared.entry(Method::NoChange).or_default().eval = plain;
        }
        let meta = self.meta(&subjects, collect, plain, methods);
        let results = summarise(meta, &per_method, &shared, self.diagnostic());
        write_samples(&self.out, self.config.keying, &per_method)?;
        super::write_reports(&self.out, &results)?;
        Ok(results)
    }

    fn meta(&self, subjects: &[&Subject], collect: (f64, u64), plain: (f64, u64), methods: &[Method]) -> Meta {
        let settings: &Settings = &self.settings;
        let cases: Vec<i64> = subjects.iter().map(|s| s.case).collect();
        Meta {
            format_version: FORMAT_VERSION,
            tool: format!("personality-alignment eval {}", env!("CARGO_PKG_VERSION")),
            git_revision: self.provenance.git_revision.clone(),
            device: self.provenance.device.clone(),
            settings: settings.clone(),
            records_path: crate::files::portable(&self.data.records_path),
            missing_answers: match self.protocol().missing {
                MissingAnswers::Exclude => "excluded".into(),
                MissingAnswers::ScoreAsZero => "scored as 0 (official)".into(),
            },
            test_items: self.test_items().len(),
            batch: self.config.batch,
            shard: self.config.shard,
            // A shard's selection is the whole run's (merge checks the shards agree); a part's
            // reports cover the previous parts' people too.
            selection: if self.config.shard.is_some() { self.data.subjects[self.selection()].iter().map(|s| s.case).collect() } else { cases.clone() },
            cases,
            bootstrap: self.config.bootstrap,
            ridge: self.config.ridge,
            collect_seconds: collect.0,
            collect_tokens: collect.1,
            plain_seconds: plain.0,
            plain_tokens: plain.1,
            dpo_ran: methods.contains(&Method::Dpo),
            ppo_ran: methods.contains(&Method::Ppo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_model_methods_go_before_the_reference_predictors_and_nothing_is_repeated() {
        let previous = [Method::NoChange, Method::Pas, Method::Always3, Method::OwnMean];
        let got = union_methods(&previous, &[Method::Dpo, Method::Pas, Method::Ridge, Method::Ppo]);
        assert_eq!(got, vec![Method::NoChange, Method::Pas, Method::Dpo, Method::Ppo, Method::Always3, Method::OwnMean, Method::Ridge]);
        // A first part keeps its own order.
        assert_eq!(union_methods(&[], &[Method::Ridge, Method::FewShot]), vec![Method::Ridge, Method::FewShot]);
    }
}
