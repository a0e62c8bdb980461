//! The model as a [`pas_core::Steerable`]: capture and steered choice log-probabilities.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use pas_core::{Geometry, HeadActivations, Steerable, Steering};

use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Decoder, logprobs_of};

/// Prompts run together in one forward pass by [`Steerable::capture`].
const CAPTURE_BATCH: usize = 16;

impl<B: Backend> Steerable for Decoder<B> {
    type Error = Error;

    fn geometry(&self) -> Geometry {
        self.config().geometry()
    }

    /// Runs each prompt up to and including `positions[i]` (the model is causal, so this is
    /// the head output at that position), batched, computing shared prefixes once (see
    /// [`families`]).
    fn capture(&self, prompts: &[&[u32]], positions: &[usize]) -> Result<HeadActivations> {
        self.capture_with_progress(prompts, positions, &mut |_, _| {})
    }

    fn choice_logprobs(&self, prompts: &[&[u32]], steerings: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache();
        let out = self.forward(prompts, &mut cache, ForwardOptions { steering: steerings, ..Default::default() })?;
        logprobs_of(out.logits, choices)
    }
}

impl<B: Backend> Decoder<B> {
    /// [`Steerable::capture`], calling `progress(prompts done, prompts)` after each batch
    /// (a long capture can then say how far it is).
    pub fn capture_with_progress(&self, prompts: &[&[u32]], positions: &[usize], progress: &mut dyn FnMut(usize, usize)) -> Result<HeadActivations> {
        if prompts.len() != positions.len() {
            return Err(Error::Input(format!("{} prompts but {} positions", prompts.len(), positions.len())));
        }
        let geometry = self.geometry();
        let rows: Vec<&[u32]> = prompts
            .iter()
            .zip(positions)
            .map(|(p, &pos)| p.get(..=pos).ok_or_else(|| Error::Input(format!("position {pos} is past a prompt of {} tokens", p.len()))))
            .collect::<Result<_>>()?;
        let mut data = Vec::with_capacity(prompts.len() * geometry.sample_len());
        let width = geometry.layer_width();
        let mut done = 0;
        for chunk in chunks(&families(&rows), CAPTURE_BATCH) {
            let heads = self.capture_chunk(&rows, chunk)?;
            // [layers][batch, width] -> [batch, layers, width]
            let per_layer: Vec<Vec<f32>> = heads
                .into_iter()
                .map(|t: Tensor<B, 2>| t.into_data().to_vec::<f32>().map_err(|e| Error::Input(format!("{e:?}"))))
                .collect::<Result<_>>()?;
            let n = chunk.iter().map(|f| f.len()).sum::<usize>();
            for r in 0..n {
                for layer in &per_layer {
                    data.extend_from_slice(&layer[r * width..(r + 1) * width]);
                }
            }
            done += n;
            progress(done, prompts.len());
        }
        HeadActivations::new(geometry, prompts.len(), data).map_err(|e| Error::Input(e.to_string()))
    }

    /// Head outputs at the last token of the rows of some families (in family order, then
    /// row order): the prefix every row of the chunk shares runs once, then each family's
    /// stem once, then every row's own tail from a copy of its family's cache.
    fn capture_chunk(&self, rows: &[&[u32]], chunk: &[std::ops::Range<usize>]) -> Result<Vec<Tensor<B, 2>>> {
        let capture = ForwardOptions { capture: true, ..Default::default() };
        // Each family's stem leaves every one of its rows at least one token of its own.
        let stems: Vec<usize> = chunk.iter().map(|f| common_len(&rows[f.clone()]).min(rows[f.clone()].iter().map(|r| r.len()).min().unwrap_or(0) - 1)).collect();
        let all: Vec<&[u32]> = chunk.iter().flat_map(|f| rows[f.clone()].iter().copied()).collect();
        if stems.contains(&0) {
            let out = self.forward(&all, &mut self.new_cache(), capture)?;
            return Ok(out.heads.unwrap_or_default());
        }
        // The chunk's shared prefix leaves every stem at least one token of its own.
        let firsts: Vec<&[u32]> = chunk.iter().zip(&stems).map(|(f, &n)| &rows[f.start][..n]).collect();
        let shared = common_len(&firsts).min(stems.iter().min().copied().unwrap_or(0) - 1);
        let mut cache = if shared > 0 {
            let mut c = self.new_cache();
            self.forward(&[&firsts[0][..shared]], &mut c, ForwardOptions::default())?;
            c.repeat(chunk.len())?
        } else {
            self.new_cache()
        };
        let stem_rows: Vec<&[u32]> = firsts.iter().map(|f| &f[shared..]).collect();
        self.forward(&stem_rows, &mut cache, ForwardOptions::default())?;
        let family_of: Vec<usize> = chunk.iter().enumerate().flat_map(|(i, f)| std::iter::repeat_n(i, f.len())).collect();
        let mut forked = cache.select_rows(&family_of)?;
        let tails: Vec<&[u32]> = chunk.iter().zip(&stems).flat_map(|(f, &n)| rows[f.clone()].iter().map(move |r| &r[n..])).collect();
        let out = self.forward(&tails, &mut forked, capture)?;
        Ok(out.heads.unwrap_or_default())
    }
}

/// Tokens that all `rows` start with.
fn common_len(rows: &[&[u32]]) -> usize {
    let Some(first) = rows.first() else { return 0 };
    rows.iter().skip(1).fold(first.len(), |n, r| first.iter().zip(r.iter()).take(n).take_while(|(a, b)| a == b).count())
}

/// Consecutive rows grouped into families that share most of their tokens: a row joins the
/// family before it when it shares at least half of its tokens with the family's first row
/// (the contrast prompts of one item, which differ only in the answer, are one family).
pub(crate) fn families(rows: &[&[u32]]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match out.last_mut() {
            Some(f) if 2 * common_len(&[rows[f.start], r]) >= r.len() => f.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Families grouped into chunks of at most `rows` rows (a larger family is a chunk alone).
fn chunks(families: &[std::ops::Range<usize>], rows: usize) -> Vec<&[std::ops::Range<usize>]> {
    let mut out = Vec::new();
    let (mut start, mut n) = (0, 0);
    for (i, f) in families.iter().enumerate() {
        if n > 0 && n + f.len() > rows {
            out.push(&families[start..i]);
            (start, n) = (i, 0);
        }
        n += f.len();
    }
    if n > 0 {
        out.push(&families[start..]);
    }
    out
}
