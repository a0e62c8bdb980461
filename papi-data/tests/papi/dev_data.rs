//! Tests on the real development data; each skips with a message when it is absent.

use papi_data::reference::{self, Reference, RidgeConfig};
use papi_data::{Dataset, Inventory, Keying, Protocol, Split, read_records, write_records};

use crate::common::{mean_cross_key_correlation, papi_dir};

#[test]
fn csv_and_xls_item_keys_give_identical_inventories() {
    let Some(dir) = papi_dir() else { return };
    let csv = Inventory::load(dir.join("IPIP-NEO-ItemKey.csv")).expect("csv key");
    let xls = Inventory::load(dir.join("IPIP-NEO-ItemKey.xls")).expect("xls key");
    assert_eq!(csv, xls);
    assert_eq!(csv.len(), 300);
    assert_eq!(csv.short_form().len(), 120);
    let first = csv.item(1).expect("item 1");
    assert_eq!((first.text.as_str(), first.facet.to_string()), ("Worry about things.", "N1".to_owned()));
}

#[test]
fn papi_split_is_the_short_form() {
    let Some(dir) = papi_dir() else { return };
    let inv = Inventory::load_dir(&dir).expect("key");
    let split = Split::load_dir(&dir, &inv).expect("split");
    let short = Split::short_form(&inv).expect("short form");
    let sorted = |v: &[u16]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    assert_eq!((split.known.len(), split.test.len()), (120, 180));
    assert_eq!(sorted(&split.known), sorted(&short.known));
    assert_eq!(sorted(&split.test), sorted(&short.test));
}

#[test]
fn stored_values_of_reverse_keyed_items_are_reflected() {
    let Some(dir) = papi_dir() else { return };
    let data = Dataset::load(&dir, None).expect("dataset");
    assert_eq!(data.subjects.len(), 200);
    // If stored values were the answers people gave, '+' and '-' items of one facet would
    // correlate negatively. They correlate positively: the release stored '-' items
    // reflected. Corrected keying turns them back into answers, which correlate negatively.
    let stored = mean_cross_key_correlation(&data.inventory, &data.subjects, |v, _| v);
    let answers = mean_cross_key_correlation(&data.inventory, &data.subjects, |v, s| Keying::Corrected.answer(v, s));
    assert!(stored > 0.2, "stored +/- correlation {stored}");
    assert!(answers < -0.2, "corrected +/- correlation {answers}");
    assert!((stored + answers).abs() < 1e-9, "reflection only flips the sign: {stored} vs {answers}");
}

#[test]
fn dev_records_round_trip_through_csv_and_parquet() {
    let Some(dir) = papi_dir() else { return };
    let data = Dataset::load(&dir, None).expect("dataset");
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in ["dev.csv", "dev.parquet", "dev.json"] {
        let p = tmp.path().join(name);
        write_records(&p, &data.subjects).expect("write");
        let back = read_records(&p, &data.inventory).expect("read back");
        assert_eq!(back, data.subjects, "{name}");
    }
}

#[test]
fn reference_predictors_on_dev_data() {
    let Some(dir) = papi_dir() else { return };
    let data = Dataset::load(&dir, None).expect("dataset");
    let totals = |p: Protocol| -> Vec<f64> {
        Reference::ALL
            .iter()
            .map(|&r| {
                reference::evaluate(r, &data.inventory, &data.split, &data.subjects, p, &RidgeConfig::default())
                    .expect("evaluate")
                    .total
                    .expect("total")
            })
            .collect()
    };
    let released = totals(Protocol::as_released());
    let corrected = totals(Protocol::corrected());
    // Each reference is better than the one before it.
    for t in [&released, &corrected] {
        assert!(t[2] < t[1] && t[1] < t[0], "{t:?}");
    }
    // always-3 under the official protocol, computed independently: missing targets count 3.
    let mut per_domain = [(0.0, 0usize); 5];
    for s in &data.subjects {
        let mut sub = [(0u32, 0u32); 5];
        for &n in &data.split.test {
            let d = data.inventory.item(n).unwrap().domain().index();
            sub[d].0 += u32::from(s.stored(n).abs_diff(3));
            sub[d].1 += 1;
        }
        for d in 0..5 {
            per_domain[d].0 += f64::from(sub[d].0) / f64::from(sub[d].1);
            per_domain[d].1 += 1;
        }
    }
    let expected: f64 = per_domain.iter().map(|(s, n)| s / *n as f64).sum();
    assert!((released[0] - expected).abs() < 1e-12, "{} vs {expected}", released[0]);
    // Missing answers: the official protocol scores them, so always-3 is a little worse.
    assert!(released[0] > corrected[0]);
}

/// The ridge reference written the plain way: the same folds, the centred normal equations
/// summed subject by subject, solved by Gaussian elimination with partial pivoting.
fn plain_ridge_values(split: &Split, subjects: &[papi_data::Subject], config: &RidgeConfig) -> Vec<Vec<f64>> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..subjects.len()).collect();
    order.sort_by_key(|&i| subjects[i].case);
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(config.seed));
    let mut fold_of = vec![0; subjects.len()];
    for (pos, &i) in order.iter().enumerate() {
        fold_of[i] = pos % config.folds;
    }
    let (known, test) = (&split.known, &split.test);
    let (p, q) = (known.len(), test.len());
    let means = |train: &[&papi_data::Subject], items: &[u16]| -> Vec<f64> {
        items
            .iter()
            .map(|&n| {
                let v: Vec<f64> = train.iter().map(|s| s.stored(n)).filter(|&v| v != 0).map(f64::from).collect();
                if v.is_empty() { 3.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
            })
            .collect()
    };
    let centred = |s: &papi_data::Subject, items: &[u16], m: &[f64]| -> Vec<f64> {
        items.iter().zip(m).map(|(&n, &m)| if s.stored(n) == 0 { 0.0 } else { f64::from(s.stored(n)) - m }).collect()
    };
    let mut out = vec![Vec::new(); subjects.len()];
    for f in 0..config.folds {
        let train: Vec<_> = subjects.iter().zip(&fold_of).filter(|(_, g)| **g != f).map(|(s, _)| s).collect();
        let (mx, my) = (means(&train, known), means(&train, test));
        // Augmented system [XᵀX + λI | XᵀY], p × (p + q).
        let mut a = vec![vec![0.0; p + q]; p];
        for s in &train {
            let (x, y) = (centred(s, known, &mx), centred(s, test, &my));
            for i in 0..p {
                for j in 0..p {
                    a[i][j] += x[i] * x[j];
                }
                for j in 0..q {
                    a[i][p + j] += x[i] * y[j];
                }
            }
        }
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += config.lambda;
        }
        for c in 0..p {
            let pivot = (c..p).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
            a.swap(c, pivot);
            for r in 0..p {
                if r != c {
                    let factor = a[r][c] / a[c][c];
                    let pivot_row = a[c].clone();
                    for (x, y) in a[r].iter_mut().zip(&pivot_row) {
                        *x -= factor * y;
                    }
                }
            }
        }
        for (i, s) in subjects.iter().enumerate().filter(|(i, _)| fold_of[*i] == f) {
            let x = centred(s, known, &mx);
            out[i] = (0..q).map(|j| my[j] + (0..p).map(|k| x[k] * a[k][p + j] / a[k][k]).sum::<f64>()).collect();
        }
    }
    out
}

#[test]
fn ridge_matches_the_plain_normal_equations_on_dev_data() {
    let Some(dir) = papi_dir() else { return };
    let data = Dataset::load(&dir, None).expect("dataset");
    let config = RidgeConfig::default();
    let fast = reference::ridge_values(&data.split, &data.subjects, &config).expect("ridge");
    let plain = plain_ridge_values(&data.split, &data.subjects, &config);
    let worst = fast.iter().flatten().zip(plain.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(fast.len(), 200);
    assert!(fast.iter().all(|v| v.len() == 180));
    assert!(worst < 1e-9, "largest difference {worst:e}");
}
