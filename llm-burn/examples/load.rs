//! Loads a model folder and reports the time taken (run under `/usr/bin/time -v` for the
//! peak resident memory): `cargo run --release -p llm-burn --example load -- DIR`.

use std::time::Instant;

use llm_burn::{CpuBackend, Decoder};

fn main() -> Result<(), llm_burn::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".cache/models/SmolLM2-135M-Instruct".into());
    let start = Instant::now();
    let model = Decoder::<CpuBackend>::load(std::path::Path::new(&dir), &Default::default())?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("loaded {} layers in {:.2} s", model.config().layers, start.elapsed().as_secs_f64());
    }
    Ok(())
}
