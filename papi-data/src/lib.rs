//! PAPI data: the IPIP-NEO-300 item inventory, subject records, validation, keying, splits,
//! trait scoring, the evaluation metric, reference predictors and synthetic populations.
//!
//! This crate is the bottom of the workspace and depends on no model code (no burn), so it
//! can be used with any inference engine.
//!
//! Protocol decisions (see the workspace's DESIGN): stored values of reverse-keyed items are
//! already reflected into the trait direction; [`Keying::Corrected`] (default) turns them
//! back into the person's actual answers, [`Keying::AsReleased`] keeps the official code's
//! behaviour. Missing answers are 0.
//!
//! # Example
//!
//! Score the reference predictors on a synthetic population (no data files needed):
//!
//! ```
//! use papi_data::{Inventory, Protocol, Split};
//! use papi_data::reference::{self, Reference, RidgeConfig};
//! use papi_data::synthetic::{self, SyntheticConfig};
//!
//! let inventory = Inventory::synthetic();
//! let split = Split::short_form(&inventory)?; // 120 known items, 180 to predict
//! let subjects = synthetic::generate(&inventory, &SyntheticConfig { subjects: 60, ..Default::default() });
//! for r in Reference::ALL {
//!     let agg = reference::evaluate(r, &inventory, &split, &subjects, Protocol::corrected(), &RidgeConfig::default())?;
//!     let total = agg.total.expect("every domain has test items");
//!     assert!((0.0..=20.0).contains(&total), "{}: {total}", r.name());
//! }
//! # Ok::<(), papi_data::Error>(())
//! ```
//!
//! With the real data, [`Dataset::load`] reads a PAPI folder (item key, split, records):
//!
//! ```no_run
//! let data = papi_data::Dataset::load(std::env::var("PAPI_DIR").unwrap(), None)?;
//! println!("{} subjects", data.subjects.len());
//! # Ok::<(), papi_data::Error>(())
//! ```

pub mod dataset;
pub mod error;
pub mod inventory;
pub mod keying;
mod linalg;
pub mod records;
pub mod reference;
pub mod release;
pub mod scoring;
pub mod split;
pub mod stats;
pub mod synthetic;
mod table;

pub use dataset::Dataset;
pub use error::{Error, Result};
pub use inventory::{Domain, Facet, Inventory, Item, PerDomain, Sign};
pub use keying::{Keying, MissingAnswers, Protocol};
pub use records::{Demographics, Subject, read_records, write_records};
pub use scoring::{Aggregate, Predictions};
pub use split::{Folds, Split};
