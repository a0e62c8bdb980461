//! The GGUF ↔ Hugging Face tensor-name table, one row per tensor kind, read both ways, with
//! the Q/K rows llama.cpp permutes for its interleaved RoPE.

/// How a GGUF tensor maps to a Hugging Face one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permute {
    /// Copied as is.
    None,
    /// Q projection rows: undo llama.cpp's permutation with the query head count.
    Query,
    /// K projection rows: likewise with the key/value head count.
    Key,
}

impl Permute {
    /// The head count whose rows llama.cpp permutes in such a tensor of `arch` (with `heads`
    /// query and `kv_heads` key/value heads), if any: the one place readers and writers ask.
    pub(crate) fn heads(self, arch: crate::Architecture, heads: usize, kv_heads: usize) -> Option<usize> {
        match self {
            _ if !arch.gguf_permutes_qk() => None,
            Permute::None => None,
            Permute::Query => Some(heads),
            Permute::Key => Some(kv_heads),
        }
    }
}

/// The name table: GGUF name (with `{i}` for the layer) → Hugging Face name, and the
/// row permutation to undo.
const NAMES: &[(&str, &str, Permute)] = &[
    ("token_embd.weight", "model.embed_tokens.weight", Permute::None),
    ("output_norm.weight", "model.norm.weight", Permute::None),
    ("output.weight", "lm_head.weight", Permute::None),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight", Permute::None),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight", Permute::None),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight", Permute::Query),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight", Permute::Key),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight", Permute::None),
    ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias", Permute::Query),
    ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias", Permute::Key),
    ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias", Permute::None),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight", Permute::None),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight", Permute::None),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight", Permute::None),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight", Permute::None),
];

/// Maps a GGUF tensor name to its Hugging Face name and permutation.
pub(crate) fn hf_name(gguf_name: &str) -> Option<(String, Permute)> {
    NAMES.iter().find_map(|&(g, hf, permute)| rename(gguf_name, g, hf).map(|n| (n, permute)))
}

/// Maps a Hugging Face tensor name to its GGUF name and the rows llama.cpp permutes: the
/// inverse of [`hf_name`], from the same table.
pub(crate) fn gguf_name(hf_name: &str) -> Option<(String, Permute)> {
    NAMES.iter().find_map(|&(g, hf, permute)| rename(hf_name, hf, g).map(|n| (n, permute)))
}

/// `name` matched against `from` (a pattern with `{i}` for the layer) and written as `to`.
fn rename(name: &str, from: &str, to: &str) -> Option<String> {
    match from.split_once("{i}") {
        Some((prefix, suffix)) => {
            let layer = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse::<usize>().ok()?;
            Some(to.replace("{i}", &layer.to_string()))
        }
        None => (name == from).then(|| to.to_owned()),
    }
}
