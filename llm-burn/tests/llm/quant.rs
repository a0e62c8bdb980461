//! Dequantisation against the `gguf` Python package: 64 blocks of deterministic pseudo-random
//! bytes per type (their reference digests in `tests/data/dequant/dequant.json`, made by
//! `tests/data/make_dequant.py`; no tensor data is stored), and every tensor of the fetched
//! GGUF files where their whole-file reference has been made.

use std::path::Path;

use llm_burn::formats::gguf::Gguf;
use llm_burn::quant::dequantize;
use llm_burn::quant::TensorType;
use sha2::{Digest, Sha256};

fn kind(name: &str) -> TensorType {
    match name {
        "Q4_1" => TensorType::Q4_1,
        "Q5_0" => TensorType::Q5_0,
        "Q8_0" => TensorType::Q8_0,
        "Q4_K" => TensorType::Q4_K,
        "Q6_K" => TensorType::Q6_K,
        other => panic!("no type {other}"),
    }
}

/// Byte offsets of a type's float16 fields within a block (as in make_dequant.py).
fn halves(name: &str) -> &'static [usize] {
    match name {
        "Q4_1" | "Q4_K" => &[0, 2],
        "Q6_K" => &[208],
        _ => &[0],
    }
}

/// The test blocks of make_dequant.py: SplitMix64 bytes, float16 fields masked finite.
fn blocks(name: &str, type_number: u64, count: usize) -> Vec<u8> {
    let size = kind(name).block().1;
    let mut state = 0x5EED_u64 + type_number;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut raw: Vec<u8> = (0..count * size).map(|_| next() as u8).collect();
    for b in 0..count {
        for off in halves(name) {
            raw[b * size + off + 1] &= 0xBB;
        }
    }
    raw
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn dequantisation_matches_the_gguf_package() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dequant/dequant.json");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dequant.json")).expect("json");
    for name in ["Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"] {
        let r = &manifest[name];
        let raw = blocks(name, r["type"].as_u64().expect("type"), r["blocks"].as_u64().expect("blocks") as usize);
        assert_eq!(Some(sha(&raw).as_str()), r["bytes_sha256"].as_str(), "{name}: the test blocks differ from make_dequant.py's");
        let ours = dequantize(kind(name), &raw);
        let first: Vec<f32> = serde_json::from_value(r["first"].clone()).expect("first values");
        assert_eq!(ours[..first.len()], first[..], "{name}: first values against the gguf package");
        let bytes: Vec<u8> = ours.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(Some(sha(&bytes).as_str()), r["values_sha256"].as_str(), "{name}: values differ from the gguf package's");
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
            let ours = sha(&bytes);
            assert_eq!(Some(ours.as_str()), sums[&t.name].as_str(), "{}: {} ({:?}) differs from the gguf package", path.display(), t.name, t.kind);
        }
        eprintln!("{}: {} tensors dequantise as the gguf package does", path.display(), g.tensors.len());
    }
    if checked == 0 {
        eprintln!("skipped: no fetched GGUF file with a whole-file reference in {}", cache.display());
    }
}
