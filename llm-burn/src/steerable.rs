//! The model as a [`pas_core::Steerable`]: capture and steered choice log-probabilities.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use pas_core::{Geometry, HeadActivations, Steerable, Steering};

use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Llama, logprobs_of};

/// Prompts run together in one forward pass by [`Steerable::capture`].
const CAPTURE_BATCH: usize = 16;

impl<B: Backend> Steerable for Llama<B> {
    type Error = Error;

    fn geometry(&self) -> Geometry {
        self.config().geometry()
    }

    /// Runs each prompt up to and including `positions[i]` (the model is causal, so this is
    /// the head output at that position), batched.
    fn capture(&self, prompts: &[&[u32]], positions: &[usize]) -> Result<HeadActivations> {
        if prompts.len() != positions.len() {
            return Err(Error::Input(format!("{} prompts but {} positions", prompts.len(), positions.len())));
        }
        let geometry = self.geometry();
        let mut data = Vec::with_capacity(prompts.len() * geometry.sample_len());
        let rows: Vec<&[u32]> = prompts
            .iter()
            .zip(positions)
            .map(|(p, &pos)| p.get(..=pos).ok_or_else(|| Error::Input(format!("position {pos} is past a prompt of {} tokens", p.len()))))
            .collect::<Result<_>>()?;
        for chunk in rows.chunks(CAPTURE_BATCH) {
            let mut cache = self.new_cache();
            let out = self.forward(chunk, &mut cache, ForwardOptions { capture: true, ..Default::default() })?;
            let heads = out.heads.unwrap_or_default();
            // [layers][batch, width] -> [batch, layers, width]
            let per_layer: Vec<Vec<f32>> = heads
                .into_iter()
                .map(|t: Tensor<B, 2>| t.into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}"))))
                .collect::<Result<_>>()?;
            let width = geometry.layer_width();
            for r in 0..chunk.len() {
                for layer in &per_layer {
                    data.extend_from_slice(&layer[r * width..(r + 1) * width]);
                }
            }
        }
        HeadActivations::new(geometry, prompts.len(), data).map_err(|e| Error::Input(e.to_string()))
    }

    fn choice_logprobs(&self, prompts: &[&[u32]], steerings: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache();
        let out = self.forward(prompts, &mut cache, ForwardOptions { steering: steerings, ..Default::default() })?;
        logprobs_of(out.logits, choices)
    }
}
