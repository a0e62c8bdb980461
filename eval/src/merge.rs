//! Merging the output folders of a sharded run (`reproduce --shard I/N`, one folder per shard)
//! into the folder a single run would have written: the shards' settings must agree, every
//! shard of the run must be there once, and every subject of the run must be in exactly one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::aggregate::{Shared, summarise};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::results::{Phases, Results, SubjectResult};
use crate::files::{read_json, write_json, write_samples};
use crate::run::write_reports;

/// The first field where two JSON objects differ, as `field: a there, b here`.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    let keys: std::collections::BTreeSet<&String> = a.as_object().into_iter().flatten().chain(b.as_object().into_iter().flatten()).map(|(k, _)| k).collect();
    keys.into_iter().find(|k| a.get(k.as_str()) != b.get(k.as_str())).map(|k| {
        let show = |v: Option<&serde_json::Value>| v.map_or("absent".to_owned(), |v| v.to_string());
        format!("`{k}`: {} and {}", show(a.get(k.as_str())), show(b.get(k.as_str())))
    })
}

/// The folders to merge for `merge DIR ...`: each folder given, except that a folder holding
/// `shard-I-of-N` subfolders (what `reproduce --shard I/N --out DIR` writes) stands for those
/// subfolders, in shard order (also once the merge has written its results beside them).
pub fn shard_folders(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in given {
        if !dir.is_dir() {
            out.push(dir.clone());
            continue;
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut found: Vec<(usize, PathBuf)> = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let index = name.strip_prefix("shard-").and_then(|r| r.split_once("-of-")).and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
            if let Some((i, _)) = index.filter(|_| path.is_dir()) {
                found.push((i, path));
            }
        }
        if found.is_empty() && dir.join("results.json").is_file() {
            out.push(dir.clone());
            continue;
        }
        if found.is_empty() {
            return Err(Error::file(dir, "holds neither results.json nor shard-I-of-N folders (is the run unfinished?)"));
        }
        found.sort();
        out.extend(found.into_iter().map(|(_, p)| p));
    }
    Ok(out)
}

/// Merges the finished shards in `shards` into `out`: checks them, copies every subject's
/// file, and writes `results.json`, `report.md`, `totals.svg` and `samples.jsonl` over all
/// subjects. Each method's time and tokens are the sums over the shards (work shared within a
/// shard, such as the activation collection, was done once per shard).
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<Results> {
    if shards.is_empty() {
        return Err(Error::Config("merge needs at least one shard folder".into()));
    }
    let parts: Vec<Results> = shards.iter().map(|d| read_json(&d.join("results.json"))).collect::<Result<_>>()?;
    let first = &parts[0];
    let base = serde_json::to_value(&first.meta.settings).unwrap_or_default();
    for (dir, r) in shards.iter().zip(&parts).skip(1) {
        if let Some(diff) = first_difference(&base, &serde_json::to_value(&r.meta.settings).unwrap_or_default()) {
            return Err(Error::file(dir.join("results.json"), format!("its settings differ from {}'s: {diff}", shards[0].display())));
        }
        let methods = |r: &Results| r.runs.iter().map(|x| x.method).collect::<Vec<_>>();
        if methods(r) != methods(first) {
            return Err(Error::file(dir.join("results.json"), format!("its methods differ from {}'s", shards[0].display())));
        }
        if r.meta.selection != first.meta.selection {
            return Err(Error::file(dir.join("results.json"), format!("it shards another selection of subjects than {}", shards[0].display())));
        }
    }
    // Every shard of the run once.
    let count = first.meta.shard.map_or(1, |s| s.count);
    let mut by_index: BTreeMap<usize, &Path> = BTreeMap::new();
    for (dir, r) in shards.iter().zip(&parts) {
        let s = r.meta.shard.ok_or_else(|| Error::file(dir.join("results.json"), "not a shard (run without --shard)"))?;
        if s.count != count {
            return Err(Error::file(dir.join("results.json"), format!("shard {s} of a run in {count} shards")));
        }
        if let Some(other) = by_index.insert(s.index, dir) {
            return Err(Error::file(dir.join("results.json"), format!("shard {s} is also in {}", other.display())));
        }
    }
    if let Some(missing) = (0..count).find(|i| !by_index.contains_key(i)) {
        return Err(Error::Config(format!("shard {missing}/{count} is missing from the folders given")));
    }
    // Every subject once.
    let mut owner: BTreeMap<i64, &Path> = BTreeMap::new();
    for (dir, r) in shards.iter().zip(&parts) {
        for &case in &r.meta.cases {
            if let Some(other) = owner.insert(case, dir) {
                return Err(Error::Config(format!("subject {case} is in both {} and {}", other.display(), dir.display())));
            }
        }
    }
    if let Some(case) = first.meta.selection.iter().find(|c| !owner.contains_key(c)) {
        return Err(Error::Config(format!("subject {case} of the run is in no shard (is a shard unfinished?)")));
    }
    let methods: Vec<Method> = first.runs.iter().map(|r| r.method).collect();
    let mut per_method = Vec::new();
    for &m in &methods {
        let results: Vec<SubjectResult> = first
            .meta
            .selection
            .iter()
            .map(|case| {
                let path = owner[case].join("subjects").join(m.name()).join(format!("{case}.json"));
                let r: SubjectResult = read_json(&path)?;
                write_json(&out.join("subjects").join(m.name()).join(format!("{case}.json")), &r)?;
                Ok(r)
            })
            .collect::<Result<_>>()?;
        per_method.push((m, results));
    }
    let mut meta = first.meta.clone();
    meta.cases = first.meta.selection.clone();
    meta.shard = None;
    meta.collect_seconds = parts.iter().map(|p| p.meta.collect_seconds).sum();
    meta.collect_tokens = parts.iter().map(|p| p.meta.collect_tokens).sum();
    meta.plain_seconds = parts.iter().map(|p| p.meta.plain_seconds).sum();
    meta.plain_tokens = parts.iter().map(|p| p.meta.plain_tokens).sum();
    let mut results = summarise(meta, &per_method, &Shared::new(), first.diagnostic.clone());
    for run in &mut results.runs {
        let of = |p: &Results| p.runs.iter().find(|r| r.method == run.method).cloned();
        let (mut phases, mut tokens) = (Phases::<f64>::default(), Phases::<u64>::default());
        for r in parts.iter().filter_map(of) {
            phases = phases.plus(&r.phases);
            tokens = tokens.plus(&r.tokens);
        }
        run.phases = phases;
        run.tokens = tokens;
        run.seconds = phases.sum();
        run.seconds_per_subject = run.seconds / run.subjects.max(1) as f64;
    }
    let people = results.optimisation_time.take().map(|t| t.people).unwrap_or_default();
    results.optimisation_time = crate::aggregate::optimisation_time(&results.runs).map(|t| crate::results::OptimisationTime { people, ..t });
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_json(&out.join("run.json"), &results.meta.settings)?;
    write_samples(out, results.meta.settings.keying, &per_method)?;
    write_reports(out, &results)?;
    Ok(results)
}
