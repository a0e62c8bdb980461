//! pas-core: the PAS (Personality Activation Search) intervention algebra, burn-free.
//!
//! It will hold head geometry and captured head activations, contrast-pair labels, per-head
//! logistic probes and head ranking, mass-mean directions and their scales, interventions as
//! values with an algebra (add, scale, negate, restrict, merge) saved as safetensors with
//! metadata, the `Steerable` trait a model implements, and the strength search. It depends
//! on no model framework, so any inference engine can use it. (Not written yet: see the
//! pas-core issue.)
