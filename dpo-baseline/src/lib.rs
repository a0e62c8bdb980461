//! dpo-baseline: DPO fine-tuning of LoRA adapters on a person's answers, the baseline that
//! PAS's optimisation time is compared against.
//!
//! It will hold LoRA adapters on llm-burn's model, preference pairs built from a subject's
//! known items, the sigmoid DPO loss with a frozen reference (adapters off), the training
//! loop with per-step logs, and adapter save/load. (Not written yet: see the dpo-baseline
//! issue.)
