//! An example implementation of [`Steerable`] on a toy model, and PAS run end to end on it.
//!
//! The toy model: token embeddings form a residual stream; each layer's heads read the
//! causal mean of the stream, `head = tanh(A · ctx)`, and write back through `W_o`; the
//! logits are `U · resid[last]`. Steering adds the layer's displacement to the head outputs
//! (the input of `W_o`) at the chosen positions, exactly where a real model is steered.

use pas_core::{ContrastPair, Geometry, HeadActivations, PasConfig, Positions, Preference, Steerable, Steering, fit_intervention, labelled_samples};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::normal;

struct Toy {
    g: Geometry,
    vocab: usize,
    width: usize,
    emb: Vec<f32>,
    a: Vec<Vec<f32>>,
    wo: Vec<Vec<f32>>,
    unembed: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("toy model: {0}")]
struct ToyError(String);

/// Head outputs `[layers][positions][heads * head_dim]` and the last position's logits.
type Run = (Vec<Vec<Vec<f32>>>, Vec<f32>);

fn matvec(m: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let cols = x.len();
    (0..rows).map(|r| m[r * cols..(r + 1) * cols].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

impl Toy {
    fn new(g: Geometry, vocab: usize, width: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rand = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| normal(&mut rng) * scale).collect() };
        let w = g.layer_width();
        Toy {
            g,
            vocab,
            width,
            emb: rand(vocab * width, 1.0),
            a: (0..g.layers).map(|_| rand(w * width, 0.5)).collect(),
            wo: (0..g.layers).map(|_| rand(width * w, 0.3)).collect(),
            unembed: rand(vocab * width, 1.0),
        }
    }

    /// Head outputs per layer at every position, and the logits at the last position.
    fn run(&self, tokens: &[u32], steering: Option<&Steering>) -> Result<Run, ToyError> {
        if tokens.is_empty() || tokens.iter().any(|&t| t as usize >= self.vocab) {
            return Err(ToyError(format!("bad prompt {tokens:?}")));
        }
        let n = tokens.len();
        let mut resid: Vec<Vec<f32>> = tokens.iter().map(|&t| self.emb[t as usize * self.width..(t as usize + 1) * self.width].to_vec()).collect();
        let mut heads_out = Vec::with_capacity(self.g.layers as usize);
        for l in 0..self.g.layers as usize {
            let mut layer_heads = Vec::with_capacity(n);
            for t in 0..n {
                let ctx: Vec<f32> = (0..self.width).map(|k| resid[..=t].iter().map(|r| r[k]).sum::<f32>() / (t + 1) as f32).collect();
                let mut h: Vec<f32> = matvec(&self.a[l], &ctx, self.g.layer_width()).into_iter().map(f32::tanh).collect();
                if let Some(s) = steering
                    && let Some(d) = s.layer(l)
                    && (s.positions() == Positions::All || t == n - 1)
                {
                    h.iter_mut().zip(d).for_each(|(x, y)| *x += y);
                }
                layer_heads.push(h);
            }
            for t in 0..n {
                let add = matvec(&self.wo[l], &layer_heads[t], self.width);
                resid[t].iter_mut().zip(add).for_each(|(r, a)| *r += a);
            }
            heads_out.push(layer_heads);
        }
        let logits = matvec(&self.unembed, &resid[n - 1], self.vocab);
        Ok((heads_out, logits))
    }
}

impl Steerable for Toy {
    type Error = ToyError;

    fn geometry(&self) -> Geometry {
        self.g
    }

    fn capture(&self, prompts: &[&[u32]], positions: &[usize]) -> Result<HeadActivations, ToyError> {
        let mut data = Vec::with_capacity(prompts.len() * self.g.sample_len());
        for (p, &pos) in prompts.iter().zip(positions) {
            let (heads, _) = self.run(p, None)?;
            for layer in &heads {
                data.extend_from_slice(layer.get(pos).ok_or_else(|| ToyError(format!("position {pos} out of range")))?);
            }
        }
        HeadActivations::new(self.g, prompts.len(), data).map_err(|e| ToyError(e.to_string()))
    }

    fn choice_logprobs(&self, prompts: &[&[u32]], steerings: &[&Steering], choices: &[u32]) -> Result<Vec<Vec<f32>>, ToyError> {
        if steerings.len() != 1 && steerings.len() != prompts.len() {
            return Err(ToyError("one steering, or one per prompt".into()));
        }
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = steerings[if steerings.len() == 1 { 0 } else { i }];
                let (_, logits) = self.run(p, Some(s))?;
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
                Ok(choices.iter().map(|&c| logits[c as usize] - lse).collect())
            })
            .collect()
    }
}

/// Contrast prompts: item tokens then the "agree" (1) or "disagree" (2) token.
fn contrast_prompts(items: usize) -> Vec<Vec<u32>> {
    (0..items).flat_map(|i| [vec![3 + i as u32, 1], vec![3 + i as u32, 2]]).collect()
}

#[test]
fn pas_runs_end_to_end_on_a_toy_model() {
    let g = Geometry::new(3, 4, 6);
    let model = Toy::new(g, 40, 16, 1);
    let items = 30;
    let prompts = contrast_prompts(items);
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let positions: Vec<usize> = prompts.iter().map(|p| p.len() - 1).collect();
    let acts = model.capture(&refs, &positions).unwrap();
    assert_eq!(acts.samples(), 2 * items);

    // A person who agrees with everything: the "agree" prompts are theirs.
    let pairs: Vec<ContrastPair> = (0..items).map(|i| ContrastPair { first: 2 * i, second: 2 * i + 1 }).collect();
    let prefs = vec![Some(Preference::First); items];
    let samples = labelled_samples(&pairs, &prefs);
    let fit = fit_intervention(&acts, &samples, &PasConfig { top_k: 4, ..PasConfig::heldout() }).unwrap();
    assert_eq!(fit.intervention.len(), 4);

    // Steering changes the answer distribution of a new item.
    let question: &[u32] = &[35];
    let none = Steering::none(g);
    let base = model.choice_logprobs(&[question], &[&none], &[1, 2]).unwrap()[0].clone();
    let steered = model.choice_logprobs(&[question], &[&fit.intervention.at(4.0, Positions::All)], &[1, 2]).unwrap()[0].clone();
    assert_ne!(steered, base);

    // Alpha 0 is bit-identical to no steering.
    let zero = model.choice_logprobs(&[question], &[&fit.intervention.at(0.0, Positions::All)], &[1, 2]).unwrap()[0].clone();
    assert_eq!(zero, base);

    // Per-row steering equals running the rows separately; last-only differs from all.
    let other = fit.intervention.at(-2.0, Positions::Last);
    let s4 = fit.intervention.at(4.0, Positions::All);
    let q2: &[u32] = &[36, 7];
    let batch = model.choice_logprobs(&[question, q2], &[&s4, &other], &[1, 2]).unwrap();
    assert_eq!(batch[0], model.choice_logprobs(&[question], &[&s4], &[1, 2]).unwrap()[0]);
    assert_eq!(batch[1], model.choice_logprobs(&[q2], &[&other], &[1, 2]).unwrap()[0]);
    let all = model.choice_logprobs(&[q2], &[&fit.intervention.at(-2.0, Positions::All)], &[1, 2]).unwrap();
    assert_ne!(all[0], batch[1]);

    // Strength search recovers a planted strength: the objective is the distance of the
    // agree margin on held-out items from the margin the model shows at alpha = 2.
    let held_out: Vec<Vec<u32>> = (0..5).map(|i| vec![20 + i]).collect();
    let rows: Vec<&[u32]> = held_out.iter().map(Vec::as_slice).collect();
    let margins = |alpha: f64| -> Result<Vec<f32>, ToyError> {
        let s = fit.intervention.at(alpha as f32, Positions::All);
        Ok(model.choice_logprobs(&rows, &[&s], &[1, 2])?.iter().map(|r| r[0] - r[1]).collect())
    };
    let target = margins(2.0).unwrap();
    let result = PasConfig::heldout()
        .search
        .run(|alpha| Ok::<_, ToyError>(margins(alpha)?.iter().zip(&target).map(|(m, t)| f64::from((m - t).abs())).sum()))
        .unwrap();
    assert_eq!(result.alpha, 2.0, "{result:?}");
    assert_eq!(result.value, 0.0);
}
