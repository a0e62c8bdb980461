//! Chat templates rendered as transformers renders them, and BOS handling.

use llm_burn::{ChatTemplate, Message, PromptEncoder};

use crate::default_model::{fixtures, model_dir};

const SYSTEM: &str = "You are a helpful, honest and concise assistant.";

#[test]
fn the_default_models_template_renders_the_fixture_prompts() {
    let (Some(dir), Some(fx)) = (model_dir(), fixtures()) else { return };
    let enc = PromptEncoder::from_dir(&dir).expect("tokenizer and template");
    for p in fx["prompts"].as_array().unwrap() {
        let text = p["item_text"].as_str().unwrap().to_lowercase();
        let user = format!(
            "Given a statement of you: \"You {text}.\"\nPlease choose from the following options to identify how accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n"
        );
        let rendered = enc.render(SYSTEM, &user, p["assistant_prefill"].as_str().unwrap()).unwrap();
        assert_eq!(rendered, p["prompt"].as_str().unwrap(), "{}", p["name"]);
        // No BOS: SmolLM2's template emits none, and encoding adds none.
        let ids = enc.encode(&rendered).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 0);
    }
    assert_eq!(enc.single_token(" A").unwrap(), 330);
    assert!(enc.single_token(" Accurate Nor").is_err());
}

#[test]
fn exactly_one_bos_where_the_template_emits_one() {
    let Some(dir) = model_dir() else { return };
    let enc = PromptEncoder::from_dir(&dir).unwrap();
    // A Llama-3 style template that starts with the BOS token (here `<|endoftext|>`, id 0).
    let template = ChatTemplate::new(
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        Some("<|endoftext|>".into()),
        Some("<|im_end|>".into()),
    )
    .unwrap();
    let enc = PromptEncoder { tokenizer: enc.tokenizer, template };
    let ids = enc.encode_chat("  sys  ", "hello", "Option").unwrap();
    assert_eq!(ids[0], 0);
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 1, "{ids:?}");
    assert!(enc.render("", "x", "").unwrap().starts_with("<|endoftext|><|im_start|>user\nx"));
}

#[test]
fn templates_can_raise_and_use_python_string_methods() {
    let t = ChatTemplate::new("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip().upper() }}", None, None).unwrap();
    assert_eq!(t.render(&[Message::new("user", "  hi ")], false).unwrap(), "HI");
    let err = t.render(&[Message::new("system", "x")], false).unwrap_err().to_string();
    assert!(err.contains("first must be user"), "{err}");
}
