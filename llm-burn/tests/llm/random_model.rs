//! Random models of real shapes: the configuration they declare, and their tokenizer and
//! template on a small vocabulary (the full Llama-3 shapes run in eval's tests).

use llm_burn::ModelConfig;
use llm_burn::model::config::HfConfig;
use llm_burn::random::{SPECIAL_TOKENS, Shape, special_name, tokenizer_json};

#[test]
fn the_llama_3_configuration_parses_with_and_without_rope_scaling() {
    for scaling in [false, true] {
        let shape = Shape { rope_scaling: scaling, ..Shape::llama_3_8b() };
        let hf: HfConfig = serde_json::from_value(shape.config_json()).unwrap();
        let c = ModelConfig::try_from(hf).unwrap();
        assert_eq!((c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab), (32, 4096, 32, 8, 128, 14336, 128_256));
        assert_eq!((c.rope_theta, c.tied, c.qkv_bias), (500_000.0, false, false));
        assert_eq!(c.rope_scaling.map(|r| (r.factor, r.low_freq_factor, r.high_freq_factor, r.original_max_position_embeddings)), scaling.then_some((8.0, 1.0, 4.0, 8192.0)));
    }
    // Llama-3-8B has about 8.03 B parameters.
    assert!((Shape::llama_3_8b().parameters() as f64 / 1e9 - 8.03).abs() < 0.01);
}

#[test]
fn a_random_tokenizer_spells_the_options_and_the_special_tokens_as_single_ids() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape { vocab: 2048 + SPECIAL_TOKENS, ..Shape::llama_3_8b() };
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json(&shape).unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), shape.vocab);
    for l in ["A", "B", "C", "D", "E"] {
        assert_eq!(tok.encode(format!(" {l}"), false).unwrap().get_ids().len(), 1, "\" {l}\"");
    }
    let s = shape.first_special() as u32;
    let text = format!("{}{}user{}\n\nhello{}", special_name(0), special_name(6), special_name(7), special_name(9));
    let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    assert_eq!(ids[..2], [s, s + 6]);
    assert_eq!(*ids.last().unwrap(), s + 9);
    assert!(ids.contains(&(s + 7)));
    // Any text round-trips (byte-level: nothing is unknown).
    let odd = "Ünïcode, tabs\tand emoji 🙂";
    let enc = tok.encode(odd, false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), odd);
}
