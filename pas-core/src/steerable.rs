//! The narrow interface a model implements so PAS can fit and apply interventions with it.

use crate::geometry::{Geometry, HeadActivations};
use crate::intervention::Steering;

/// A language model whose attention-head outputs can be captured and steered.
///
/// The site is the per-head input of `o_proj` (the concatenated head outputs of each
/// layer). Implementations must be pure functions of their inputs: the steering is an
/// argument, never state left in the model.
pub trait Steerable {
    /// The model's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The model's head geometry.
    fn geometry(&self) -> Geometry;

    /// Runs each prompt (token ids) and captures every head's output at `positions[i]`
    /// (an index into prompt `i`), for all layers in one pass.
    ///
    /// # Shapes
    /// Returns `[prompts, layers, heads, head_dim]`.
    fn capture(&self, prompts: &[&[u32]], positions: &[usize]) -> Result<HeadActivations, Self::Error>;

    /// Log-probabilities of the `choices` tokens as the next token after each prompt.
    /// `steerings` holds one steering for all rows, or one per row (so different people's
    /// interventions run in one batch); [`Steering::none`] runs the model unsteered.
    ///
    /// # Shapes
    /// Returns `[prompts][choices]`.
    fn choice_logprobs(&self, prompts: &[&[u32]], steerings: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>, Self::Error>;
}
