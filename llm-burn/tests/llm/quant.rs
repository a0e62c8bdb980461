//! Dequantisation against the `gguf` Python package on real tensors: the first 64 blocks of a
//! tensor of each type from the models' GGUF files (shipped in `tests/data/dequant`, made by
//! `tests/data/make_dequant.py`), and whole files where the models have been fetched.

use std::path::{Path, PathBuf};

use llm_burn::gguf::{Gguf, TensorType, dequantize};
use sha2::{Digest, Sha256};

use crate::npy::read_f32;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dequant")
}

fn kind(name: &str) -> TensorType {
    match name {
        "Q4_0" => TensorType::Q4_0,
        "Q4_1" => TensorType::Q4_1,
        "Q5_0" => TensorType::Q5_0,
        "Q8_0" => TensorType::Q8_0,
        "Q4_K" => TensorType::Q4_K,
        "Q6_K" => TensorType::Q6_K,
        other => panic!("no type {other}"),
    }
}

/// Bit-for-bit equality, reporting the first difference.
fn assert_same_bits(ours: &[f32], reference: &[f32], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    if let Some((i, (a, b))) = ours.iter().zip(reference).enumerate().find(|(_, (a, b))| a.to_bits() != b.to_bits()) {
        panic!("{what}: value {i} is {a}, the gguf package gives {b}");
    }
}

#[test]
fn dequantisation_matches_the_gguf_package() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("manifest.json")).expect("manifest")).expect("json");
    let types: Vec<&String> = manifest.as_object().expect("object").keys().collect();
    for t in ["Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"] {
        assert!(types.iter().any(|k| *k == t), "no reference for {t}");
    }
    for name in types {
        let raw = std::fs::read(data_dir().join(format!("{name}.bin"))).expect("raw blocks");
        let (_, reference) = read_f32(&data_dir().join(format!("{name}.npy")));
        let ours = dequantize(kind(name), &raw);
        let source = &manifest[name.as_str()];
        assert_same_bits(&ours, &reference, &format!("{name} ({} of {})", source["tensor"], source["file"]));
    }
}

#[test]
fn a_block_type_reports_its_layout() {
    assert_eq!(TensorType::Q4_K.block(), (256, 144));
    assert_eq!(TensorType::Q6_K.block(), (256, 210));
    assert_eq!(TensorType::Q5_0.block(), (32, 22));
    // A partial block at the end is not read as values.
    assert_eq!(dequantize(TensorType::Q4_K, &[0; 143]).len(), 0);
    assert_eq!(dequantize(TensorType::Q6_K, &[0; 211]).len(), 256);
}

/// Every tensor of each fetched GGUF file bit for bit against the gguf package, where its
/// reference (`NAME.dequant-check.json`: SHA-256 of each tensor's float32 values, made by
/// `make_dequant.py --whole`) is beside it; says so otherwise.
#[test]
fn whole_fetched_files_dequantise_as_the_gguf_package() {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/gguf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        let path = entry.path();
        let reference = path.with_extension("dequant-check.json");
        if path.extension().is_none_or(|e| e != "gguf") || !reference.is_file() {
            continue;
        }
        let sums: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&reference).expect("read")).expect("json");
        let g = Gguf::open(&path).expect("open");
        checked += g.tensors.len();
        for t in &g.tensors {
            let values = g.dequantize(t).expect("dequantize");
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let ours = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(Some(ours.as_str()), sums[&t.name].as_str(), "{}: {} ({:?}) differs from the gguf package", path.display(), t.name, t.kind);
        }
        eprintln!("{}: {} tensors dequantise as the gguf package does", path.display(), g.tensors.len());
    }
    if checked == 0 {
        eprintln!("skipped: no fetched GGUF file with a whole-file reference in {}", cache.display());
    }
}
