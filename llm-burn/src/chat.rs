//! Chat formatting from the model's own template, rendered as transformers renders it, and
//! prompt encoding without adding special tokens a second time.

use std::path::Path;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::Serialize;

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with a role and content.
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_owned(), content: content.to_owned() }
    }
}

/// A model's chat template, with the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: Option<String>,
    eos: Option<String>,
}

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": ...}`.
fn token_text(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_owned).or_else(|| v.get("content").and_then(|c| c.as_str()).map(str::to_owned))
}

impl ChatTemplate {
    /// Builds a template from its source (Jinja) and the BOS/EOS token texts.
    pub fn new(source: &str, bos: Option<String>, eos: Option<String>) -> Result<Self> {
        let mut env = Environment::new();
        // transformers: jinja2.Environment(trim_blocks=True, lstrip_blocks=True, loopcontrols).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Deterministic output: templates use it for "today's date" in system prompts.
            "01 Jan 2025".to_owned()
        });
        env.add_template_owned("chat", source.to_owned()).map_err(|e| Error::Template(e.to_string()))?;
        Ok(ChatTemplate { env, source: source.to_owned(), bos, eos })
    }

    /// Reads the template from `chat_template.jinja`, else `tokenizer_config.json`
    /// (`chat_template` as a string, or the entry named `default` of a list).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| Error::Template(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?
        } else {
            match &cfg["chat_template"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(list) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| Error::Template(format!("{}: no `default` chat template in the list", cfg_path.display())))?,
                _ => return Err(Error::Template(format!("{}: no chat template (and no chat_template.jinja)", dir.display()))),
            }
        };
        Self::new(&source, token_text(&cfg["bos_token"]), token_text(&cfg["eos_token"]))
    }

    /// The template source (hashed into reports).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, adding the assistant's generation prompt when asked.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.clone().unwrap_or_default(),
            eos_token => self.eos.clone().unwrap_or_default(),
        })
        .map_err(|e| Error::Template(e.to_string()))
    }
}

/// Tokenizer plus chat template: turns (system, user, prefill) into token ids.
#[derive(Debug)]
pub struct PromptEncoder {
    /// The tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
}

impl PromptEncoder {
    /// Loads `tokenizer.json` and the chat template from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| Error::Tokenizer(format!("{}: {e}", dir.join("tokenizer.json").display())))?;
        Ok(PromptEncoder { tokenizer, template: ChatTemplate::from_dir(dir)? })
    }

    /// The rendered chat text: system and user messages, the generation prompt, then the
    /// assistant prefill (e.g. "Option").
    pub fn render(&self, system: &str, user: &str, prefill: &str) -> Result<String> {
        let mut messages = Vec::with_capacity(2);
        if !system.is_empty() {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", user));
        Ok(self.template.render(&messages, true)? + prefill)
    }

    /// Token ids of text that already holds its special tokens (no BOS added again).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    /// Token ids of a chat prompt (see [`PromptEncoder::render`]).
    pub fn encode_chat(&self, system: &str, user: &str, prefill: &str) -> Result<Vec<u32>> {
        self.encode(&self.render(system, user, prefill)?)
    }

    /// The id of a token that must be a single token (e.g. `" A"`), or an error saying how
    /// the tokenizer splits it.
    pub fn single_token(&self, text: &str) -> Result<u32> {
        let ids = self.encode(text)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(Error::Tokenizer(format!("{text:?} is {} tokens ({ids:?}), not one", ids.len()))),
        }
    }

    /// Decodes ids to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}

impl PromptEncoder {
    /// The ids that end an assistant turn: the model's end-of-sequence ids and the chat
    /// template's end token (e.g. `<|im_end|>`, `<|eot_id|>`) when it is one token.
    pub fn stop_ids(&self, config_eos: &[u32]) -> Vec<u32> {
        let mut ids = config_eos.to_vec();
        if let Some(id) = self.template.eos.as_deref().and_then(|t| self.tokenizer.token_to_id(t)) {
            ids.push(id);
        }
        for t in ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"] {
            if let Some(id) = self.tokenizer.token_to_id(t) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Token ids of a conversation rendered by the chat template, with the generation prompt.
    pub fn encode_messages(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode(&self.template.render(messages, true)?)
    }
}

/// Text of generated tokens as it grows: each new token gives the text it completes (a
/// token that ends inside a multi-byte character gives nothing until the character is whole).
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    sent: usize,
}

impl TextStream {
    /// Adds a token; returns the new text (possibly empty). Special tokens are left out.
    pub fn push(&mut self, prompts: &PromptEncoder, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.text(prompts)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.sent || !text.is_char_boundary(self.sent) {
            return Ok(String::new());
        }
        let new = text[self.sent..].to_owned();
        self.sent = text.len();
        Ok(new)
    }

    /// The text not yet returned by [`TextStream::push`] (held back because it ended inside a
    /// character): call at the end, so that the pieces add up to [`TextStream::text`].
    pub fn flush(&mut self, prompts: &PromptEncoder) -> Result<String> {
        let text = self.text(prompts)?;
        let rest = text.get(self.sent..).unwrap_or_default().to_owned();
        self.sent = text.len();
        Ok(rest)
    }

    /// The tokens so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The whole text so far.
    pub fn text(&self, prompts: &PromptEncoder) -> Result<String> {
        prompts.tokenizer.decode(&self.ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}
