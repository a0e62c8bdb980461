//! The official prompts: the question template, the system prompts and the prefill.

use papi_data::{Inventory, Keying, MissingAnswers, Subject};
use papi_data::keying::MISSING;

/// The default system prompt (no-change, PAS-only, and the contrast prompts).
pub const DEFAULT_SYSTEM: &str = "You are a helpful, honest and concise assistant.";

/// The opening of the few-shot system prompt; `text:label` pairs follow, joined by `;`.
pub const FEW_SHOT_INTRO: &str = "Here are some of your behaviors and your level of recognition towards them;";

/// The assistant prefill after which the answer letter is read.
pub const PREFILL: &str = "Option";

/// The option letters, A (answer 5) to E (answer 1).
pub const LETTERS: [char; 5] = ['A', 'B', 'C', 'D', 'E'];

/// The official labels of answers 0 (missing) to 5 (`SCORES_BACK`).
pub const LABELS: [&str; 6] = [
    "Unknown",
    "Very Inaccurate",
    "Moderately Inaccurate",
    "Neither Accurate Nor Inaccurate",
    "Moderately Accurate",
    "Very Accurate",
];

/// The answer (5..1) of option `i` (0 = A .. 4 = E).
pub fn answer_of_option(i: usize) -> u8 {
    5 - i as u8
}

fn template(statement: &str) -> String {
    format!(
        "Given a statement of you: \"You {statement}.\"\nPlease choose from the following options to identify how accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n"
    )
}

/// The user message asking about one item: the item text lower-cased into the official
/// template (it keeps its own period, so the official prompt ends in `..`).
pub fn question(item_text: &str) -> String {
    template(&item_text.to_lowercase())
}

/// The user message of a contrast prompt: as [`question`] but not lower-cased, as the
/// official activation collection does.
pub fn contrast_question(item_text: &str) -> String {
    template(item_text)
}

/// The few-shot system prompt from a subject's answers to `items` (in that order): each
/// item as `text:label` with the label of the answer under `keying`. A missing answer is
/// left out when `missing` excludes it, and shown as "Unknown" otherwise (the official code).
pub fn few_shot_system(inventory: &Inventory, subject: &Subject, items: &[u16], keying: Keying, missing: MissingAnswers) -> String {
    let pairs: Vec<String> = items
        .iter()
        .filter_map(|&n| {
            let item = inventory.item(n)?;
            let stored = subject.stored(n);
            if stored == MISSING && missing == MissingAnswers::Exclude {
                return None;
            }
            let answer = keying.answer(stored, item.sign);
            Some(format!("{}:{}", item.text, LABELS[usize::from(answer)]))
        })
        .collect();
    format!("{FEW_SHOT_INTRO}{}", pairs.join(";"))
}
