//! Sharded runs: each shard runs its subjects alone, and the merge gives the unsharded run.

use eval::config::Shard;
use eval::{Evaluator, Method, RunConfig};

use crate::{provenance, quick_config, synthetic_dataset, tiny_model};

#[test]
fn three_shards_merge_into_the_unsharded_run_and_bad_sets_are_refused() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, prompts) = tiny_model(model_dir.path());
    let data = synthetic_dataset(8);
    let methods = [Method::NoChange, Method::OptionBias, Method::FewShot, Method::Pas, Method::Always3, Method::OwnMean, Method::Ridge];
    let base = quick_config(&methods, 5);
    let run = |config: RunConfig, dir: &std::path::Path| Evaluator::new(&model, &prompts, &data, None, config, provenance(model_dir.path()), dir).unwrap().run().unwrap();
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = run(base.clone(), whole_dir.path());
    let root = tempfile::tempdir().unwrap();
    let shard_dirs: Vec<std::path::PathBuf> = (0..3).map(|i| root.path().join(format!("shard-{i}-of-3"))).collect();
    for (i, dir) in shard_dirs.iter().enumerate() {
        let part = run(RunConfig { shard: Some(Shard::new(i, 3).unwrap()), ..base.clone() }, dir);
        // Positions 0..5 dealt round-robin: shard 0 has 2 subjects, 1 has 2, 2 has 1.
        assert_eq!(part.meta.cases.len(), [2, 2, 1][i]);
        assert_eq!(part.meta.selection, whole.meta.cases);
    }
    let merged_dir = tempfile::tempdir().unwrap();
    let merged = eval::merge::merge(&shard_dirs, merged_dir.path()).unwrap();
    assert_eq!(merged.meta.cases, whole.meta.cases);
    assert!(merged.meta.shard.is_none());
    for (a, b) in merged.runs.iter().zip(&whole.runs) {
        assert_eq!((a.method, a.total, a.total_ci95, &a.per_domain), (b.method, b.total, b.total_ci95, &b.per_domain));
    }
    assert_eq!(merged.decisions, whole.decisions);
    assert_eq!(merged.comparisons, whole.comparisons);
    let lines = |d: &std::path::Path| {
        let mut v: Vec<serde_json::Value> = eval::files::read_samples(d).unwrap().iter().map(|l| serde_json::to_value(l).unwrap()).collect();
        v.sort_by_key(|x| x.to_string());
        v
    };
    assert_eq!(lines(merged_dir.path()), lines(whole_dir.path()));
    // Per-subject files too, bit for bit but for wall times.
    for m in methods {
        for case in &whole.meta.cases {
            let load = |d: &std::path::Path| {
                let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join(format!("subjects/{}/{case}.json", m.name()))).unwrap()).unwrap();
                v["seconds"] = serde_json::Value::Null;
                v
            };
            assert_eq!(load(merged_dir.path()), load(whole_dir.path()), "{m} {case}");
        }
    }
    assert!(merged_dir.path().join("report.md").is_file() && merged_dir.path().join("totals.svg").is_file());

    // `merge OUT`: the run's own folder stands for its shard folders, in shard order.
    assert_eq!(eval::merge::shard_folders(&[root.path().to_owned()]).unwrap(), shard_dirs);
    assert_eq!(eval::merge::shard_folders(&shard_dirs).unwrap(), shard_dirs);
    let into_root = eval::merge::merge(&eval::merge::shard_folders(&[root.path().to_owned()]).unwrap(), root.path()).unwrap();
    assert_eq!(into_root.runs.iter().map(|r| r.total).collect::<Vec<_>>(), whole.runs.iter().map(|r| r.total).collect::<Vec<_>>());
    assert!(root.path().join("results.json").is_file());
    assert_eq!(eval::merge::shard_folders(&[root.path().to_owned()]).unwrap(), shard_dirs, "merged again");
    let empty = tempfile::tempdir().unwrap();
    let e = eval::merge::shard_folders(&[empty.path().to_owned()]).unwrap_err().to_string();
    assert!(e.contains("shard-I-of-N"), "{e}");

    // A missing shard, a shard given twice, and a shard with other settings are refused.
    let err = |dirs: &[std::path::PathBuf]| eval::merge::merge(dirs, &root.path().join("bad")).unwrap_err().to_string();
    assert!(err(&shard_dirs[..2]).contains("shard 2/3 is missing"));
    assert!(err(&[shard_dirs[0].clone(), shard_dirs[1].clone(), shard_dirs[1].clone()]).contains("also in"));
    let other = root.path().join("other");
    run(RunConfig { shard: Some(Shard::new(2, 3).unwrap()), keying: papi_data::Keying::AsReleased, ..base.clone() }, &other);
    let e = err(&[shard_dirs[0].clone(), shard_dirs[1].clone(), other]);
    assert!(e.contains("`keying`"), "{e}");
    // Shard specifications are checked.
    assert!("3/3".parse::<Shard>().is_err() && "1-3".parse::<Shard>().is_err() && "0/2".parse::<Shard>().is_ok());
}

#[test]
fn the_shard_comes_from_slurm_or_kubernetes() {
    let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(a, _)| *a == k).map(|(_, v)| (*v).to_owned());
    assert_eq!(Shard::from_env(env(&[]), None), Ok(None));
    // Slurm arrays may start at 1 (--array=1-3).
    let slurm = Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "3")]), None);
    assert_eq!(slurm, Ok(Some(Shard::new(2, 3).unwrap())));
    let k8s = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0"), ("SHARD_COUNT", "4")]), None);
    assert_eq!(k8s, Ok(Some(Shard::new(0, 4).unwrap())));
    assert_eq!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "5")]), Some(8)), Ok(Some(Shard::new(5, 8).unwrap())));
    assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")]), None).unwrap_err().contains("SHARD_COUNT"));
    assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "x")]), Some(2)).unwrap_err().contains("not a number"));
}
