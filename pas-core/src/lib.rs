//! pas-core: the PAS (Personality Activation Search) intervention algebra, burn-free.
//!
//! PAS finds the attention heads whose outputs separate a person's "like me" answers from
//! the others, and shifts those heads' outputs along the separating direction by a searched
//! strength. This crate holds every step that does not need a model: labels from contrast
//! pairs, per-head logistic probes and head ranking, directions and scales, interventions as
//! values with an algebra (saved as safetensors with metadata), the strength search, the
//! strength unit defined by its effect ([`calibrate`]: KL curves, layer windows, the
//! one-standard-error choice), and the narrow [`Steerable`] trait a model implements. It depends on no model framework, so any
//! inference engine can use it.
//!
//! Modules depend one way (`fit` → `search`, `probe`, `direction`, `calibrate` →
//! `intervention` → `geometry`), but for one pair: [`error`] and [`geometry`] import each
//! other, because a geometry check fails with an error that carries both geometries.
//!
//! # Example
//!
//! Fit an intervention on synthetic activations where one head carries the signal, save it
//! and load it back:
//!
//! ```
//! use pas_core::{ContrastPair, Geometry, HeadActivations, HeadId, Intervention, InterventionMeta,
//!                PasConfig, Positions, Preference, fit_intervention, labelled_samples};
//!
//! let geometry = Geometry::new(2, 3, 4); // 2 layers x 3 heads x 4 dims
//! let pairs = 20;
//! // Rows 2i and 2i+1 are pair i's "agree" and "disagree" prompts. Head L1H2's first
//! // dimension is +1 for the preferred prompt and -1 for the other; everything else is noise.
//! let preferences: Vec<Option<Preference>> =
//!     (0..pairs).map(|i| Some(if i % 3 == 0 { Preference::Second } else { Preference::First })).collect();
//! let mut data = vec![0.0f32; 2 * pairs * geometry.sample_len()];
//! for (i, v) in data.iter_mut().enumerate() {
//!     *v = ((i * 7919 % 101) as f32 / 101.0 - 0.5) * 0.1;
//! }
//! for i in 0..pairs {
//!     let first_is_me = preferences[i] == Some(Preference::First);
//!     for (row, me) in [(2 * i, first_is_me), (2 * i + 1, !first_is_me)] {
//!         let at = row * geometry.sample_len() + (1 * 3 + 2) * 4; // head L1H2, dim 0
//!         data[at] = if me { 1.0 } else { -1.0 };
//!     }
//! }
//! let acts = HeadActivations::new(geometry, 2 * pairs, data)?;
//! let pair_rows: Vec<ContrastPair> = (0..pairs).map(|i| ContrastPair { first: 2 * i, second: 2 * i + 1 }).collect();
//! let samples = labelled_samples(&pair_rows, &preferences);
//!
//! let config = PasConfig { top_k: 2, ..PasConfig::heldout() };
//! let fit = fit_intervention(&acts, &samples, &config)?;
//! assert_eq!(fit.intervention.heads()[0].head, HeadId::new(1, 2));
//!
//! // At strength 2 the head's output is shifted by 2 * sigma * direction.
//! let steering = fit.intervention.at(2.0, Positions::All);
//! assert!(steering.layer(1).is_some());
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("person.safetensors");
//! let meta = InterventionMeta { model_id: "toy".into(), config_hash: "0".into(), method: "pas/mass-mean".into(),
//!                               top_k: 2, seed: config.seed, sigma_ddof: 0, positions: Positions::All,
//!                               alpha: Some(2.0) };
//! fit.intervention.save(&path, &meta)?;
//! let (back, back_meta) = Intervention::load(&path)?;
//! assert_eq!((back, back_meta), (fit.intervention, meta));
//! # Ok::<(), pas_core::Error>(())
//! ```

pub mod calibrate;
pub mod direction;
pub mod error;
pub mod fit;
pub mod geometry;
pub mod intervention;
pub mod labels;
mod linalg;
pub mod probe;
pub mod search;
pub mod steerable;

pub use calibrate::{KlCurve, LayerWindow, Setting, StrengthChoice, StrengthUnit};
pub use direction::DirectionMethod;
pub use error::{Error, Result};
pub use fit::{Fallback, HeldOutFold, PasConfig, PasFit, fit_intervention};
pub use geometry::{Geometry, HeadActivations, HeadId};
pub use intervention::{Intervention, InterventionMeta, ModelIdentity, Positions, SteeredHead, Steering};
pub use labels::{ContrastPair, LabelledSample, Preference, labelled_samples};
pub use probe::{Probe, ProbeConfig, ProbeScore, Ranking};
pub use search::{Search, SearchResult, Selection};
pub use steerable::Steerable;
