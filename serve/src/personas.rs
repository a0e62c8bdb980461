//! The personas folder: `<name>.safetensors` interventions, loaded once (again when the file
//! changes), found when they are added while the server runs, and refused when made for
//! another model. At most [`Personas::max_loaded`] stay loaded: the least recently used goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use pas_core::{Intervention, InterventionMeta, ModelIdentity, Steering};

use crate::api::ApiError;

/// A loaded persona: its steering at the file's strength.
#[derive(Debug, Clone)]
pub struct Persona {
    /// The steering applied to its requests.
    pub steering: Arc<Steering>,
    /// The strength it was resolved at.
    pub alpha: f64,
    /// The method that made it (e.g. `pas-only/mass-mean`).
    pub method: String,
}

/// The personas of one folder, for one model.
#[derive(Debug)]
pub struct Personas {
    dir: PathBuf,
    identity: ModelIdentity,
    loaded: Mutex<Cache>,
    capacity: usize,
}

/// The loaded personas: file time, last use (a counter), the persona.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<String, (SystemTime, u64, Loaded)>,
    clock: u64,
}

/// Personas kept loaded when [`Personas::max_loaded`] is not set.
pub const DEFAULT_MAX_LOADED: usize = 64;

/// Whether `name` is a plain file stem: 1 to 128 of `A-Z a-z 0-9 _ - .`, not starting with a
/// dot (so no path, no parent folder, no hidden file).
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Personas {
    /// The personas in `dir` for the model `identity`.
    pub fn new(dir: PathBuf, identity: ModelIdentity) -> Self {
        Personas { dir, identity, loaded: Mutex::new(Cache::default()), capacity: DEFAULT_MAX_LOADED }
    }

    /// Keeps at most `n` (>= 1) personas loaded; past it the least recently used is dropped
    /// (and loaded again from its file when next asked for).
    pub fn max_loaded(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// How many personas are loaded now.
    pub fn loaded_count(&self) -> usize {
        self.loaded.lock().expect("persona cache").entries.len()
    }

    /// The strength stored in persona `name`'s file (1 when it stores none), without loading
    /// it into the cache; `None` if it cannot be read.
    pub fn file_alpha(&self, name: &str) -> Option<f64> {
        let (_, meta) = Intervention::load(self.dir.join(format!("{name}.safetensors"))).ok()?;
        Some(meta.alpha.unwrap_or(1.0))
    }

    /// The folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The names of the persona files in the folder now, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                (p.extension().is_some_and(|x| x == "safetensors")).then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned())).flatten()
            })
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }

    /// The persona `name`, loaded from its file (or the copy loaded before, if the file has
    /// not changed since). `alpha` overrides the file's strength.
    pub fn get(&self, name: &str, alpha: Option<f64>) -> Result<Persona, ApiError> {
        if !valid_name(name) {
            return Err(ApiError::bad_request("invalid_persona_name", format!("persona names are file stems of letters, digits, `_`, `-` and `.` (not starting with `.`), not {name:?}")));
        }
        if alpha.is_some_and(|a| !a.is_finite() || a.abs() > crate::MAX_ALPHA) {
            return Err(ApiError::invalid_field("invalid_alpha", "alpha", format!("alpha must be a number from -{m} to {m}", m = crate::MAX_ALPHA)));
        }
        let path = self.dir.join(format!("{name}.safetensors"));
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(|_| ApiError::not_found("persona_not_found", format!("no persona `{name}` in {}", self.dir.display())))?;
        let mut cache = self.loaded.lock().expect("persona cache");
        cache.clock += 1;
        let now = cache.clock;
        if cache.entries.get(name).is_none_or(|(t, _, _)| *t != modified) {
            let (iv, meta) = Intervention::load_for(&path, &self.identity).map_err(|e| ApiError::conflict("persona_model_mismatch", format!("persona `{name}` cannot be used with this model: {e}")))?;
            while cache.entries.len() >= self.capacity && !cache.entries.contains_key(name) {
                let oldest = cache.entries.iter().min_by_key(|(_, (_, used, _))| *used).map(|(k, _)| k.clone());
                oldest.map(|k| cache.entries.remove(&k));
            }
            let steering = Arc::new(iv.at(meta.alpha.unwrap_or(1.0) as f32, meta.positions));
            cache.entries.insert(name.to_owned(), (modified, now, Loaded { steering, intervention: iv, meta }));
        }
        let entry = cache.entries.get_mut(name).expect("just loaded");
        entry.1 = now;
        let l = &entry.2;
        let file_alpha = l.meta.alpha.unwrap_or(1.0);
        Ok(match alpha {
            Some(a) if a != file_alpha => Persona { steering: Arc::new(l.intervention.at(a as f32, l.meta.positions)), alpha: a, method: l.meta.method.clone() },
            _ => Persona { steering: l.steering.clone(), alpha: file_alpha, method: l.meta.method.clone() },
        })
    }
}

/// A persona file as loaded.
#[derive(Debug)]
struct Loaded {
    intervention: Intervention,
    meta: InterventionMeta,
    /// At the file's strength.
    steering: Arc<Steering>,
}
