//! The command line as a user meets it: commands that must fail cleanly do, with their status.

use std::process::Command;

#[test]
fn gpu_check_without_a_gpu_says_so_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("gpu-check").output().expect("run xtask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "cuda") {
        // A CUDA build on a machine without a GPU must still fail cleanly (no panic).
        if out.status.code() == Some(3) {
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no GPU") && !stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn random_model_refuses_an_unknown_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["random-model", "--like", "gpt-5", "--out"]).arg(dir.path()).output().expect("run xtask");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model shape `gpt-5`"));
}

#[test]
fn papi_stats_runs_on_the_embedded_data_and_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["papi-stats", "--json"]).env_remove("PAPI_DIR").output().expect("run xtask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("embedded development data") && stderr.contains("data/papi"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["subjects"], 200, "{v}");
}

#[test]
fn a_kubernetes_index_runs_its_shard_and_logs_a_line_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let model = dir.path().join("tiny");
    let out = Command::new(xtask).args(["random-model", "--like", "tiny", "--out"]).arg(&model).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join("run");
    let out = Command::new(xtask)
        .args(["reproduce", "--subjects", "3", "--methods", "no-change,always-3", "--test-items", "5", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&run)
        .env_remove("PAPI_DIR")
        .env("JOB_COMPLETION_INDEX", "1")
        .env("SHARD_COUNT", "3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Shard 1 of 3 holds the second subject of the records.
    let records: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/papi/papi-dev-200.json")).unwrap()).unwrap();
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("shard-1-of-3/results.json")).unwrap()).unwrap();
    assert_eq!(results["meta"]["cases"], serde_json::json!([records[1]["case"]]));
    assert_eq!(results["meta"]["shard"], serde_json::json!({"index": 1, "count": 3}));
    // Not a terminal: one plain progress line per finished subject × method.
    assert!(stderr.contains(&format!("1/1 case {} no-change", records[1]["case"])), "{stderr}");
}

#[test]
fn align_writes_a_persona_that_chat_uses_and_refuses_bad_answers_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let model = dir.path().join("tiny");
    let out = Command::new(xtask).args(["random-model", "--like", "tiny", "--out"]).arg(&model).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "item,answer\n3,7\n").unwrap();
    let out = Command::new(xtask).args(["align", "--answers"]).arg(&bad).arg("--out").arg(dir.path().join("x.safetensors")).arg("--model").arg(&model).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("bad.csv") && stderr.contains("row 2"), "{stderr}");

    let persona = dir.path().join("personas/p.safetensors");
    let answers = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/person-172481.csv");
    let out = Command::new(xtask).args(["align", "--answers", answers, "--model"]).arg(&model).arg("--out").arg(&persona).env_remove("PAPI_DIR").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("120 answers") && persona.is_file(), "{stderr}");
    let out = Command::new(xtask).args(["chat", "--prompt", "hello", "--max-tokens", "5", "--persona"]).arg(&persona).arg("--model").arg(&model).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("strength"), "{stderr}");
    // Another model of the same shape refuses the persona.
    let other = dir.path().join("other");
    let out = Command::new(xtask).args(["random-model", "--like", "tiny", "--seed", "9", "--out"]).arg(&other).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(xtask).args(["chat", "--prompt", "hello", "--max-tokens", "5", "--persona"]).arg(&persona).arg("--model").arg(&other).output().unwrap();
    assert!(!out.status.success(), "a persona of another model must be refused");
}
