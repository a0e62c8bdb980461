//! llm-burn: a Llama-family transformer on burn 0.21, generic over the backend.
//!
//! It will hold Hugging Face loading (config, safetensors, tokenizer, chat template), the KV
//! cache as a value passed into `forward`, greedy generation and choice log-probabilities,
//! per-head capture and steering, and the embedded default model (SmolLM2-135M-Instruct,
//! converted from a GGUF file by `cargo xtask fetch-model`). (Not written yet: see the
//! llm-burn issue.)
