//! The dependency rule of the workspace: the leaf crates never depend on burn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Crates that must stay free of burn, so any inference engine can use them.
pub const BURN_FREE: [&str; 2] = ["papi-data", "pas-core"];

/// This workspace's `Cargo.toml`.
pub fn workspace_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")
}

/// Fails if any crate in `crates` reaches a `burn*` package through normal or build
/// dependencies, with any features enabled; the error shows the path to it.
pub fn check(manifest: &Path, crates: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features", "--manifest-path"])
        .arg(manifest)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .context("metadata.packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("metadata.resolve.nodes")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    // Edges that are normal or build dependencies (not dev-dependencies).
    let runtime_deps = |id: &str| -> Vec<&str> {
        nodes.get(id).and_then(|n| n["deps"].as_array()).into_iter().flatten()
            .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].as_str() != Some("dev"))))
            .filter_map(|d| d["pkg"].as_str())
            .collect()
    };
    for krate in crates {
        let root = name_of
            .iter()
            .find(|(_, n)| **n == *krate)
            .map(|(id, _)| *id)
            .with_context(|| format!("crate {krate} is not in the workspace"))?;
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::from([root]);
        let mut queue = VecDeque::from([root]);
        while let Some(id) = queue.pop_front() {
            if name_of.get(id).is_some_and(|n| n.starts_with("burn")) {
                let mut chain = vec![name_of[id]];
                let mut at = id;
                while let Some(p) = parent.get(at) {
                    chain.push(name_of[p]);
                    at = p;
                }
                chain.reverse();
                bail!("{krate} depends on burn: {}", chain.join(" -> "));
            }
            for dep in runtime_deps(id) {
                if seen.insert(dep) {
                    parent.insert(dep, id);
                    queue.push_back(dep);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn papi_data_and_pas_core_do_not_depend_on_burn() {
        check(&workspace_manifest(), &BURN_FREE).expect("dependency rule");
    }

    #[test]
    fn the_check_finds_a_burn_dependency() {
        // A throwaway workspace where a crate depends on a package named burn-like.
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for (name, deps) in [("burn-fake", ""), ("leaf", "burn-fake = { path = \"../burn-fake\" }")] {
            std::fs::create_dir_all(root.join(name).join("src")).unwrap();
            std::fs::write(
                root.join(name).join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[dependencies]\n{deps}\n"),
            )
            .unwrap();
            std::fs::write(root.join(name).join("src/lib.rs"), "").unwrap();
        }
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"leaf\", \"burn-fake\"]\nresolver = \"2\"\n").unwrap();
        let err = check(&root.join("Cargo.toml"), &["leaf"]).expect_err("must find burn-fake");
        assert!(err.to_string().contains("leaf -> burn-fake"), "{err}");
    }
}
