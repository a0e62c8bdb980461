//! A training step's common prefix (chat header, system prompt, question template), run once
//! per step rather than once per micro-batch.
//!
//! A step's gradient is accumulated over micro-batches (`micro_batch` prompts at a time, so
//! that only one micro-batch's activations are held). Each micro-batch used to run the
//! prompts' shared prefix again, forward and backward; on Qwen2.5-Coder-1.5B's questionnaire
//! prompts that prefix is 26 tokens against about 66 of each prompt's own, so at two prompts
//! per micro-batch a step ran 632 tokens where 554 carry its work.
//!
//! Here the prefix runs once with the adapters and its graph is kept until the step ends.
//! Every micro-batch continues from detached copies of its keys and values (leaves of its
//! own graph), and the gradients those receive are summed over the micro-batches; at the
//! end one backward pass of `Σ ⟨prefix keys and values, their summed gradient⟩` through the
//! prefix's graph gives the adapters the prefix's share, which is exactly what the prefix
//! contributed to every micro-batch's loss (the chain rule through the keys and values, the
//! prefix's only way into later positions).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, activation};
use llm_burn::{Decoder, ForwardOptions, KvCache, LoraPass};

use crate::error::Result;

/// The length of the prompts' common prefix that leaves at least one token of every prompt
/// to continue with (0 for fewer than two prompts).
pub fn common_prefix(prompts: &[&[u32]]) -> usize {
    let (Some(first), true) = (prompts.first(), prompts.len() > 1) else { return 0 };
    let min_len = prompts.iter().map(|p| p.len()).min().unwrap_or(0);
    let lcp = first.iter().enumerate().take_while(|&(i, t)| prompts.iter().all(|p| p.get(i) == Some(t))).count();
    lcp.min(min_len.saturating_sub(1))
}

/// The log-probabilities `[rows, 5]` of the five option tokens after each prompt, every
/// prompt beginning with the `prefix` tokens held in `cache` (a batch-1 cache of them):
/// only the rest of each prompt is run. Returns them and the tokens run.
pub fn logprobs_after<B: Backend>(
    model: &Decoder<B>,
    lora: Option<LoraPass<'_, B>>,
    cache: &KvCache<B>,
    prefix: usize,
    prompts: &[&[u32]],
    options: &[u32; 5],
) -> Result<(Tensor<B, 2>, u64)> {
    let mut shared = cache.repeat(prompts.len())?;
    let rest: Vec<&[u32]> = prompts.iter().map(|p| &p[prefix..]).collect();
    let out = model.forward(&rest, &mut shared, ForwardOptions { lora, ..Default::default() })?;
    Ok((option_columns(out.logits, options), rest.iter().map(|r| r.len() as u64).sum()))
}

/// The five options' log-probabilities from last-position logits `[rows, vocab]`.
pub(crate) fn option_columns<B: Backend>(logits: Tensor<B, 2>, options: &[u32; 5]) -> Tensor<B, 2> {
    let n = logits.dims()[0];
    let ids: Vec<i32> = (0..n).flat_map(|_| options.iter().map(|&o| o as i32)).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, 5]), &logits.device());
    activation::log_softmax(logits, 1).gather(1, idx)
}

/// A step's common prefix, run once with the adapters, its graph kept for the step's end.
pub(crate) struct StepPrefix<A: AutodiffBackend> {
    /// The prefix's keys and values, tracked back to the adapters.
    cache: KvCache<A>,
    /// Its tokens.
    pub(crate) len: usize,
    /// Per tensor of `cache`, the sum of the gradients its copies received.
    grads: Vec<Option<Tensor<A::InnerBackend, 4>>>,
}

impl<A: AutodiffBackend> StepPrefix<A> {
    /// The common prefix of `prompts` run with `lora` (`None` when there is none to share).
    pub(crate) fn run(model: &Decoder<A>, lora: Option<LoraPass<'_, A>>, prompts: &[&[u32]]) -> Result<Option<Self>> {
        let len = common_prefix(prompts);
        if len == 0 {
            return Ok(None);
        }
        let mut cache = model.new_cache();
        model.forward(&[&prompts[0][..len]], &mut cache, ForwardOptions { lora, ..Default::default() })?;
        let grads = vec![None; cache.tensors().len()];
        Ok(Some(StepPrefix { cache, len, grads }))
    }

    /// A micro-batch's copy of the prefix: its keys and values as fresh leaves that collect
    /// gradients.
    pub(crate) fn leaves(&self) -> KvCache<A> {
        self.cache.map_tensors(|t| t.detach().require_grad())
    }

    /// Adds the gradients that `leaves` (from [`StepPrefix::leaves`]) received in `grads`.
    pub(crate) fn collect(&mut self, leaves: &KvCache<A>, grads: &A::Gradients) {
        for (sum, t) in self.grads.iter_mut().zip(leaves.tensors()) {
            if let Some(g) = t.grad(grads) {
                *sum = Some(match sum.take() {
                    Some(s) => s + g,
                    None => g,
                });
            }
        }
    }

    /// The gradients of the summed micro-batch losses through the prefix (`None` when no
    /// gradient reached it).
    pub(crate) fn backward(self) -> Option<A::Gradients> {
        let terms: Vec<Tensor<A, 1>> = self.cache.tensors().into_iter().zip(self.grads).filter_map(|(t, g)| g.map(|g| (t * Tensor::from_inner(g)).sum())).collect();
        (!terms.is_empty()).then(|| Tensor::cat(terms, 0).sum().backward())
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn the_common_prefix_leaves_a_token_of_every_prompt() {
        let (a, b, c) = ([1u32, 2, 3, 4], [1u32, 2, 3, 5], [1u32, 2]);
        assert_eq!(common_prefix(&[&a, &b]), 3);
        assert_eq!(common_prefix(&[&a, &b, &c]), 1); // c keeps its last token
        assert_eq!(common_prefix(&[&a, &a]), 3); // identical prompts keep one token each
        assert_eq!(common_prefix(&[&a]), 0);
        assert_eq!(common_prefix(&[&a, &[9u32, 2][..]]), 0);
        assert_eq!(common_prefix(&[]), 0);
    }
}
