//! Interventions as values: a set of steered heads with an algebra, resolved at a strength
//! into a [`Steering`] that a model applies, and saved as safetensors with metadata.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::geometry::{Geometry, HeadId};

/// One steered head: a unit direction in the head's output space and a scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeredHead {
    /// The head.
    pub head: HeadId,
    /// Unit direction, `[head_dim]`.
    pub direction: Vec<f32>,
    /// Scale (the standard deviation of the activations along the direction), >= 0.
    pub sigma: f32,
}

/// A set of steered heads on one model geometry, in rank order (best first).
///
/// At strength `alpha`, head `h`'s output is shifted by `alpha * sigma_h * direction_h`.
/// Interventions add, scale, negate, restrict to their top K heads and merge across users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    geometry: Geometry,
    heads: Vec<SteeredHead>,
}

/// Which positions of a sequence a steering shifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// Every prompt and generated token (PAS's `o_proj` bias; the official code).
    #[default]
    All,
    /// The last position of the input only (as ITI).
    Last,
    /// Every token after the prompt's shared prefix (the system prompt, few-shot answers and
    /// the question's fixed opening stay unsteered): the caller runs that prefix without
    /// steering, once for every strength; within a forward pass it acts as [`Positions::All`].
    Answer,
}

impl Positions {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Positions::All => "all",
            Positions::Last => "last",
            Positions::Answer => "answer",
        }
    }

    /// Whether the tokens of a forward pass are steered at every position (not the last only).
    pub fn every_token(self) -> bool {
        self != Positions::Last
    }
}

impl std::str::FromStr for Positions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(Positions::All),
            "last" => Ok(Positions::Last),
            "answer" => Ok(Positions::Answer),
            _ => Err(format!("unknown steered positions `{s}` (expected all, answer or last)")),
        }
    }
}

/// An intervention resolved at one strength: per layer, the displacement added to the
/// concatenated head outputs (the input of `o_proj`), and the positions it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Steering {
    geometry: Geometry,
    positions: Positions,
    /// Per layer: `None` (nothing added) or `[heads * head_dim]`.
    layers: Vec<Option<Vec<f32>>>,
}

impl Steering {
    /// No steering at all.
    pub fn none(geometry: Geometry) -> Self {
        Steering { geometry, positions: Positions::All, layers: vec![None; geometry.layers as usize] }
    }

    /// A steering from per-layer displacements (`None`: nothing added to that layer), checked
    /// against the geometry: one entry per layer, each `[heads * head_dim]` and finite.
    pub fn from_layers(geometry: Geometry, positions: Positions, layers: Vec<Option<Vec<f32>>>) -> Result<Self> {
        if layers.len() != geometry.layers as usize {
            return Err(Error::Shape { what: "steering layers".into(), expected: geometry.layers as usize, found: layers.len() });
        }
        for (l, d) in layers.iter().enumerate() {
            let Some(d) = d else { continue };
            if d.len() != geometry.layer_width() {
                return Err(Error::Shape { what: format!("steering of layer {l}"), expected: geometry.layer_width(), found: d.len() });
            }
            if let Some(x) = d.iter().find(|x| !x.is_finite()) {
                return Err(Error::Intervention(format!("steering of layer {l} holds {x}")));
            }
        }
        Ok(Steering { geometry, positions, layers })
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The positions steered.
    pub fn positions(&self) -> Positions {
        self.positions
    }

    /// Layer `l`'s displacement, `[heads * head_dim]`, or `None` when nothing is added there.
    pub fn layer(&self, l: usize) -> Option<&[f32]> {
        self.layers.get(l).and_then(|v| v.as_deref())
    }

    /// Whether nothing is added anywhere (also true for all-zero displacements).
    pub fn is_zero(&self) -> bool {
        self.layers.iter().flatten().all(|v| v.iter().all(|x| *x == 0.0))
    }
}

impl Intervention {
    /// Builds an intervention, checking heads against the geometry, unit directions
    /// (within 1e-3), finite non-negative scales and no repeated head.
    pub fn new(geometry: Geometry, heads: Vec<SteeredHead>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for h in &heads {
            geometry.index(h.head)?;
            if !seen.insert(h.head) {
                return Err(Error::Intervention(format!("head {} appears twice", h.head)));
            }
            if h.direction.len() != geometry.head_dim as usize {
                return Err(Error::Shape {
                    what: format!("direction of head {}", h.head),
                    expected: geometry.head_dim as usize,
                    found: h.direction.len(),
                });
            }
            let norm = h.direction.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            if (norm - 1.0).abs() > 1e-3 {
                return Err(Error::Intervention(format!("direction of head {} has norm {norm}, not 1", h.head)));
            }
            if !(h.sigma.is_finite() && h.sigma >= 0.0) {
                return Err(Error::Intervention(format!("sigma of head {} is {}", h.head, h.sigma)));
            }
        }
        Ok(Intervention { geometry, heads })
    }

    /// No steered head.
    pub fn empty(geometry: Geometry) -> Self {
        Intervention { geometry, heads: Vec::new() }
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The steered heads, best first.
    pub fn heads(&self) -> &[SteeredHead] {
        &self.heads
    }

    /// Number of steered heads.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether no head is steered.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// The intervention scaled by `k` (a negative `k` flips the directions).
    pub fn scale(&self, k: f32) -> Self {
        let flip = k < 0.0;
        let heads = self
            .heads
            .iter()
            .filter(|_| k != 0.0)
            .map(|h| SteeredHead {
                head: h.head,
                direction: if flip { h.direction.iter().map(|x| -x).collect() } else { h.direction.clone() },
                sigma: h.sigma * k.abs(),
            })
            .collect();
        Intervention { geometry: self.geometry, heads }
    }

    /// The sum of two interventions: displacements of shared heads add (and a head whose
    /// displacements cancel is dropped); heads keep `self`'s order, then `other`'s new ones.
    pub fn add(&self, other: &Intervention) -> Result<Self> {
        self.geometry.expect_same(&other.geometry, "adding interventions")?;
        let mut acc: Vec<(HeadId, Vec<f64>)> = Vec::new();
        let mut at: HashMap<HeadId, usize> = HashMap::new();
        for h in self.heads.iter().chain(&other.heads) {
            let i = *at.entry(h.head).or_insert_with(|| {
                acc.push((h.head, vec![0.0; h.direction.len()]));
                acc.len() - 1
            });
            for (a, d) in acc[i].1.iter_mut().zip(&h.direction) {
                *a += f64::from(h.sigma) * f64::from(*d);
            }
        }
        Ok(Intervention { geometry: self.geometry, heads: acc.into_iter().filter_map(|(head, v)| from_displacement(head, v)).collect() })
    }

    /// The first `k` heads (the best `k` when built by the fit).
    pub fn top(&self, k: usize) -> Self {
        Intervention { geometry: self.geometry, heads: self.heads.iter().take(k).cloned().collect() }
    }

    /// Several users' interventions merged into one: the mean of their displacements (so a
    /// merged strength means what a single one does). Fails on an empty list or mixed
    /// geometries.
    pub fn merge(sets: &[Intervention]) -> Result<Self> {
        let first = sets.first().ok_or_else(|| Error::Intervention("nothing to merge".into()))?;
        let mut sum = Intervention::empty(first.geometry);
        for s in sets {
            sum = sum.add(s)?;
        }
        Ok(sum.scale(1.0 / sets.len() as f32))
    }

    /// Resolves the intervention at strength `alpha`: head `h` of layer `l` gets
    /// `alpha * sigma * direction` in its slot of layer `l`'s displacement. At `alpha = 0`
    /// (or with no head) the steering adds nothing.
    pub fn at(&self, alpha: f32, positions: Positions) -> Steering {
        let g = self.geometry;
        let mut layers: Vec<Option<Vec<f32>>> = vec![None; g.layers as usize];
        if alpha != 0.0 {
            let d = g.head_dim as usize;
            for h in &self.heads {
                let slot = layers[h.head.layer as usize].get_or_insert_with(|| vec![0.0; g.layer_width()]);
                let s = alpha * h.sigma;
                let start = h.head.head as usize * d;
                for (o, x) in slot[start..start + d].iter_mut().zip(&h.direction) {
                    *o += s * x;
                }
            }
        }
        Steering { geometry: g, positions, layers }
    }
}

impl std::ops::Neg for &Intervention {
    type Output = Intervention;
    fn neg(self) -> Intervention {
        self.scale(-1.0)
    }
}

fn from_displacement(head: HeadId, v: Vec<f64>) -> Option<SteeredHead> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (norm > 1e-12).then(|| SteeredHead { head, direction: v.iter().map(|x| (x / norm) as f32).collect(), sigma: norm as f32 })
}

/// The file format version written by [`Intervention::save`].
pub const SCHEMA_VERSION: u32 = 1;

/// What a saved intervention records about how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterventionMeta {
    /// Model id, e.g. `SmolLM2-135M-Instruct`.
    pub model_id: String,
    /// Hash of the model's config (identifies the exact architecture and weights' layout).
    pub config_hash: String,
    /// How it was made, e.g. `pas/mass-mean`.
    pub method: String,
    /// Heads kept (K).
    pub top_k: usize,
    /// Seed of the probe split.
    pub seed: u64,
    /// Degrees of freedom removed in sigma.
    pub sigma_ddof: u32,
    /// The positions it is meant to steer (files without the field: [`Positions::All`]).
    pub positions: Positions,
    /// The strength chosen for it (by a search), if any: what a user of the file applies
    /// unless told otherwise.
    pub alpha: Option<f64>,
}

/// The model a saved intervention must match on load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIdentity {
    /// Model id.
    pub model_id: String,
    /// Config hash.
    pub config_hash: String,
    /// Head geometry.
    pub geometry: Geometry,
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

impl Intervention {
    /// Saves the intervention and its metadata as safetensors: `heads` (I32 `[n, 2]`: layer,
    /// head), `directions` (F32 `[n, head_dim]`), `sigmas` (F32 `[n]`), and the metadata
    /// (schema version, model id, config hash, geometry, method, K, seed, ddof, steered
    /// positions, the chosen strength when there is one) in the header.
    /// The file is written atomically.
    pub fn save(&self, path: impl AsRef<Path>, meta: &InterventionMeta) -> Result<()> {
        let path = path.as_ref();
        let n = self.heads.len();
        let d = self.geometry.head_dim as usize;
        let heads: Vec<u8> = self.heads.iter().flat_map(|h| [h.head.layer as i32, h.head.head as i32]).flat_map(i32::to_le_bytes).collect();
        let dirs = f32_bytes(self.heads.iter().flat_map(|h| h.direction.iter().copied()));
        let sigmas = f32_bytes(self.heads.iter().map(|h| h.sigma));
        let fmt_err = |e: safetensors::SafeTensorError| Error::Format { path: path.to_owned(), message: e.to_string() };
        let tensors = [
            ("directions", TensorView::new(Dtype::F32, vec![n, d], &dirs).map_err(fmt_err)?),
            ("heads", TensorView::new(Dtype::I32, vec![n, 2], &heads).map_err(fmt_err)?),
            ("sigmas", TensorView::new(Dtype::F32, vec![n], &sigmas).map_err(fmt_err)?),
        ];
        let g = self.geometry;
        let info: HashMap<String, String> = [
            ("format", "pas-core/intervention".to_owned()),
            ("schema_version", SCHEMA_VERSION.to_string()),
            ("model_id", meta.model_id.clone()),
            ("config_hash", meta.config_hash.clone()),
            ("layers", g.layers.to_string()),
            ("heads", g.heads.to_string()),
            ("head_dim", g.head_dim.to_string()),
            ("method", meta.method.clone()),
            ("top_k", meta.top_k.to_string()),
            ("seed", meta.seed.to_string()),
            ("sigma_ddof", meta.sigma_ddof.to_string()),
            ("positions", meta.positions.as_str().to_owned()),
        ]
        .into_iter()
        .chain(meta.alpha.map(|a| ("alpha", a.to_string())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let bytes = safetensors::serialize(tensors, Some(info)).map_err(fmt_err)?;
        let tmp = path.with_extension("safetensors.partial");
        std::fs::write(&tmp, bytes).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_owned(), source: e })
    }

    /// Loads an intervention saved by [`Intervention::save`], with its metadata and geometry.
    pub fn load(path: impl AsRef<Path>) -> Result<(Self, InterventionMeta)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_owned(), source: e })?;
        let bad = |message: String| Error::Format { path: path.to_owned(), message };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let info = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| info.get(k).cloned().ok_or_else(|| bad(format!("metadata field `{k}` is missing")));
        let num = |k: &str| -> Result<u64> { get(k)?.parse().map_err(|_| bad(format!("metadata field `{k}` is not a number"))) };
        let version = num("schema_version")?;
        if version != u64::from(SCHEMA_VERSION) {
            return Err(bad(format!("schema version {version}; this build reads version {SCHEMA_VERSION}")));
        }
        let as_u32 = |k: &str| -> Result<u32> { u32::try_from(num(k)?).map_err(|_| bad(format!("metadata field `{k}` is too large"))) };
        let geometry = Geometry::new(as_u32("layers")?, as_u32("heads")?, as_u32("head_dim")?);
        let meta = InterventionMeta {
            model_id: get("model_id")?,
            config_hash: get("config_hash")?,
            method: get("method")?,
            top_k: num("top_k")? as usize,
            seed: num("seed")?,
            sigma_ddof: as_u32("sigma_ddof")?,
            positions: match info.get("positions") {
                Some(p) => p.parse().map_err(bad)?,
                None => Positions::All,
            },
            alpha: match info.get("alpha") {
                Some(a) => Some(a.parse().ok().filter(|a: &f64| a.is_finite()).ok_or_else(|| bad(format!("metadata field `alpha` is not a finite number: {a}")))?),
                None => None,
            },
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let tensor = |name: &str, dtype: Dtype| -> Result<TensorView<'_>> {
            let t = st.tensor(name).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != dtype {
                return Err(bad(format!("tensor `{name}` has dtype {:?}, expected {dtype:?}", t.dtype())));
            }
            Ok(t)
        };
        let heads_t = tensor("heads", Dtype::I32)?;
        let dirs_t = tensor("directions", Dtype::F32)?;
        let sigmas_t = tensor("sigmas", Dtype::F32)?;
        let n = sigmas_t.shape().first().copied().unwrap_or(0);
        let d = geometry.head_dim as usize;
        if heads_t.shape() != [n, 2] || dirs_t.shape() != [n, d] || sigmas_t.shape() != [n] {
            return Err(bad(format!(
                "tensor shapes heads {:?}, directions {:?}, sigmas {:?} do not fit {n} heads of {d} dims",
                heads_t.shape(),
                dirs_t.shape(),
                sigmas_t.shape()
            )));
        }
        let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
        let ids: Vec<i32> = heads_t.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let dirs = f32s(dirs_t.data());
        let sigmas = f32s(sigmas_t.data());
        let mut heads = Vec::with_capacity(n);
        for i in 0..n {
            let (l, h) = (ids[2 * i], ids[2 * i + 1]);
            let (Ok(l), Ok(h)) = (u32::try_from(l), u32::try_from(h)) else {
                return Err(bad(format!("head {i} has a negative index ({l}, {h})")));
            };
            heads.push(SteeredHead { head: HeadId::new(l, h), direction: dirs[i * d..(i + 1) * d].to_vec(), sigma: sigmas[i] });
        }
        let intervention = Intervention::new(geometry, heads).map_err(|e| bad(e.to_string()))?;
        Ok((intervention, meta))
    }

    /// Loads an intervention for a given model, refusing one made for another geometry
    /// ([`Error::GeometryMismatch`]) or another model or config ([`Error::ModelMismatch`]).
    pub fn load_for(path: impl AsRef<Path>, model: &ModelIdentity) -> Result<(Self, InterventionMeta)> {
        let path = path.as_ref();
        let (iv, meta) = Self::load(path)?;
        model.geometry.expect_same(&iv.geometry, &format!("loading {}", path.display()))?;
        if meta.model_id != model.model_id || meta.config_hash != model.config_hash {
            return Err(Error::ModelMismatch {
                path: path.to_owned(),
                expected_model: model.model_id.clone(),
                expected_hash: model.config_hash.clone(),
                found_model: meta.model_id,
                found_hash: meta.config_hash,
            });
        }
        Ok((iv, meta))
    }
}
