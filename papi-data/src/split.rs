//! Item splits: which items a subject shows the model (known) and which it must predict
//! (test), and k folds over the known items for held-out strength selection.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inventory::{Domain, Inventory};

/// The file name of the PAPI evaluation split.
pub const SPLIT_FILE: &str = "mpi_300_split.json";

/// An item split: known items (given to the model) and test items (to predict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Items whose answers are shown (the PAPI split's `train_index`), in file order.
    pub known: Vec<u16>,
    /// Items the model must predict (`test_index`), in file order.
    pub test: Vec<u16>,
}

impl Split {
    /// Builds a split, checking that every item is in the inventory, none repeats and the
    /// two parts are disjoint and non-empty.
    pub fn new(known: Vec<u16>, test: Vec<u16>, inventory: &Inventory) -> Result<Self> {
        Self::validated(PathBuf::from("<custom split>"), known, test, inventory)
    }

    fn validated(path: PathBuf, known: Vec<u16>, test: Vec<u16>, inventory: &Inventory) -> Result<Self> {
        let err = |message: String| Error::Split { path: path.clone(), message };
        let mut seen = vec![None::<&str>; inventory.len() + 1];
        for (part, items) in [("known", &known), ("test", &test)] {
            if items.is_empty() {
                return Err(err(format!("the {part} part is empty")));
            }
            for (pos, &n) in items.iter().enumerate() {
                if inventory.item(n).is_none() {
                    return Err(err(format!(
                        "{part}[{pos}] names item {n}, which is not in the inventory (items 1..={})",
                        inventory.len()
                    )));
                }
                if let Some(prev) = seen[usize::from(n)] {
                    return Err(err(if prev == part {
                        format!("item {n} appears twice in the {part} part")
                    } else {
                        format!("item {n} is in both the known and the test part")
                    }));
                }
                seen[usize::from(n)] = Some(part);
            }
        }
        Ok(Split { known, test })
    }

    /// Reads a split file in the PAPI format: `{"train_index": [...], "test_index": [...]}`.
    pub fn load(path: impl AsRef<Path>, inventory: &Inventory) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if text.trim().is_empty() {
            return Err(Error::Empty { path: path.to_owned() });
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::malformed(path, "JSON", e))?;
        let field = |name: &str| -> Result<Vec<u16>> {
            let arr = value.get(name).and_then(|v| v.as_array()).ok_or_else(|| Error::Split {
                path: path.to_owned(),
                message: format!("expected an object with an array `{name}`"),
            })?;
            arr.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| Error::Split {
                        path: path.to_owned(),
                        message: format!("{name}[{i}] = {v} is not an item number"),
                    })
                })
                .collect()
        };
        let known = field("train_index")?;
        let test = field("test_index")?;
        Self::validated(path.to_owned(), known, test, inventory)
    }

    /// Reads `mpi_300_split.json` from a PAPI folder.
    pub fn load_dir(dir: impl AsRef<Path>, inventory: &Inventory) -> Result<Self> {
        Self::load(dir.as_ref().join(SPLIT_FILE), inventory)
    }

    /// The short form (items with a short-form position) as known, every other item as test.
    /// For the IPIP-NEO-300 key this is the same partition as the PAPI split.
    pub fn short_form(inventory: &Inventory) -> Result<Self> {
        let known = inventory.short_form();
        let test = inventory.items().iter().filter(|i| i.short.is_none()).map(|i| i.number).collect();
        Self::new(known, test, inventory)
    }
}

/// A partition of items into k folds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folds {
    folds: Vec<Vec<u16>>,
}

impl Folds {
    /// Splits `items` into `k` folds, stratified by domain so that every fold holds items of
    /// every domain where there are enough: each domain's items are shuffled with `seed` and
    /// dealt round-robin, continuing from where the previous domain stopped.
    pub fn new(items: &[u16], inventory: &Inventory, k: usize, seed: u64) -> Result<Self> {
        if k < 2 {
            return Err(Error::InvalidArgument(format!("k-fold needs k >= 2, got {k}")));
        }
        if items.len() < k {
            return Err(Error::InvalidArgument(format!("cannot split {} items into {k} folds", items.len())));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut folds = vec![Vec::new(); k];
        let mut next = 0;
        for domain in Domain::ALL {
            let mut of_domain: Vec<u16> = items
                .iter()
                .copied()
                .filter(|&n| inventory.item(n).is_some_and(|i| i.domain() == domain))
                .collect();
            of_domain.sort_unstable();
            of_domain.shuffle(&mut rng);
            for n in of_domain {
                folds[next % k].push(n);
                next += 1;
            }
        }
        if let Some(&n) = items.iter().find(|&&n| inventory.item(n).is_none()) {
            return Err(Error::InvalidArgument(format!("item {n} is not in the inventory")));
        }
        for f in &mut folds {
            f.sort_unstable();
        }
        Ok(Folds { folds })
    }

    /// Number of folds.
    pub fn k(&self) -> usize {
        self.folds.len()
    }

    /// The items held out in fold `i`.
    pub fn held_out(&self, i: usize) -> &[u16] {
        &self.folds[i]
    }

    /// The items used for fitting in fold `i`: every other fold's items, sorted.
    pub fn fit(&self, i: usize) -> Vec<u16> {
        let mut v: Vec<u16> =
            self.folds.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, f)| f.iter().copied()).collect();
        v.sort_unstable();
        v
    }
}
