//! Helpers shared by the tests.

use std::path::{Path, PathBuf};

use papi_data::Inventory;
use papi_data::synthetic::{self, SyntheticConfig};

/// The real PAPI folder: `PAPI_DIR`, else the embedded `data/papi`, if present.
pub fn papi_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PAPI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/papi"));
    if dir.join("IPIP-NEO-ItemKey.csv").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: no PAPI data (set PAPI_DIR)");
        None
    }
}

/// A synthetic population of `n` subjects over the synthetic inventory.
pub fn population(n: usize, seed: u64) -> (Inventory, Vec<papi_data::Subject>) {
    let inv = Inventory::synthetic();
    let subjects = synthetic::generate(&inv, &SyntheticConfig { subjects: n, seed, ..Default::default() });
    (inv, subjects)
}

/// Writes `text` to `name` inside `dir` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// The synthetic inventory as an item-key CSV.
pub fn item_key_csv(inv: &Inventory) -> String {
    let mut s = String::from("Full#,Short#,Sign,Key,Facet,Item\n");
    for i in inv.items() {
        s.push_str(&format!(
            "{},{},{}{},{},{},\"{}\"\n",
            i.number,
            i.short.map(|v| v.to_string()).unwrap_or_default(),
            i.sign.symbol(),
            i.facet,
            i.facet,
            i.facet_name,
            i.text
        ));
    }
    s
}

/// Mean within-facet Pearson correlation between '+' and '-' items, using `value(stored, sign)`.
pub fn mean_cross_key_correlation(
    inv: &Inventory,
    subjects: &[papi_data::Subject],
    value: impl Fn(u8, papi_data::Sign) -> u8,
) -> f64 {
    let column = |n: u16| -> Vec<f64> {
        let sign = inv.item(n).expect("item").sign;
        subjects.iter().map(|s| f64::from(value(s.stored(n), sign))).collect()
    };
    let corr = |a: &[f64], b: &[f64]| {
        let pairs: Vec<(f64, f64)> = a.iter().zip(b).filter(|(x, y)| **x > 0.0 && **y > 0.0).map(|(x, y)| (*x, *y)).collect();
        let n = pairs.len() as f64;
        let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
        let cov: f64 = pairs.iter().map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = pairs.iter().map(|(x, _)| (x - ma).powi(2)).sum();
        let vb: f64 = pairs.iter().map(|(_, y)| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    };
    let mut total = 0.0;
    let mut count = 0;
    for a in inv.items().iter().filter(|i| i.sign == papi_data::Sign::Plus) {
        for b in inv.items().iter().filter(|i| i.sign == papi_data::Sign::Minus && i.facet == a.facet) {
            let r = corr(&column(a.number), &column(b.number));
            if r.is_finite() {
                total += r;
                count += 1;
            }
        }
    }
    assert!(count > 0, "no +/- item pairs within a facet");
    total / f64::from(count)
}
