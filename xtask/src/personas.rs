//! Personas in use: `align` (a persona file from one person's answers), `chat` (talk to the
//! model, steered by a persona or not) and `serve` (the OpenAI-compatible server).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use eval::align::{Answers, align};
use eval::{Method, RunConfig};
use llm_burn::{Generation, Decoder, Message, Sampling, TextStream};
use pas_core::{Intervention, Positions};

use crate::model::Backend;

/// Arguments of `align`.
#[derive(Args)]
pub struct AlignArgs {
    /// The person's answers: JSON (`{"1": 4, ...}`) or CSV (`item,answer`), item number ->
    /// answer 1..5 as given to the statement, any subset of the 300 items.
    #[arg(long)]
    answers: PathBuf,
    #[command(flatten)]
    model: crate::model::ModelArgs,
    /// The persona file to write.
    #[arg(long)]
    out: PathBuf,
    /// `pas-only` (default: the persona steers the model under any prompt) or `pas` (meant
    /// for the few-shot prompt of the benchmark).
    #[arg(long, default_value = "pas-only")]
    method: Method,
    /// Positions steered: `all` (default), `answer` or `last`.
    #[arg(long, default_value = "all")]
    steer_positions: Positions,
    /// The IPIP-NEO-300 folder with the item key (default: $PAPI_DIR, else data/papi).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Runs `align`.
pub fn run_align(args: &AlignArgs) -> Result<()> {
    let data = crate::papi::data_dir(args.data.clone())?;
    let inventory = papi_data::Inventory::load_dir(&data).with_context(|| format!("reading the item key in {}", data.display()))?;
    let answers = Answers::read(&args.answers, &inventory)?;
    answers.check_usable()?;
    let agree = answers.answers.values().filter(|&&a| a > 3).count();
    let disagree = answers.answers.values().filter(|&&a| a < 3).count();
    eprintln!("{}: {} answers ({agree} agree, {disagree} disagree, {} neutral)", args.answers.display(), answers.answers.len(), answers.answers.len() - agree - disagree);
    let (dir, prompts, model) = args.model.load()?;
    let mut config = RunConfig::default();
    config.pas.positions = args.steer_positions;
    let work = args.out.with_extension("work");
    let a = align(&model, &prompts, &dir, &inventory, &answers, args.method, config, &work, &args.out)?;
    std::fs::remove_dir_all(&work).ok();
    let alpha = a.meta.alpha.unwrap_or(0.0);
    eprintln!(
        "{} heads steered at strength {alpha} (searched held out on the {} answers; {} labelled pairs) in {:.1} s",
        a.heads, a.answers, a.pairs, a.seconds
    );
    if alpha == 0.0 {
        eprintln!(
            "note: the search chose strength 0: on this person's held-out answers the model did not follow them better when steered, so this persona answers as the unsteered model (`serve` lists it with \"steered\": false)"
        );
    }
    println!("{}", args.out.display());
    Ok(())
}

/// Arguments of `chat`.
#[derive(Args)]
pub struct ChatArgs {
    /// A persona file (from `align` or `reproduce`); none = the unsteered model.
    #[arg(long)]
    persona: Option<PathBuf>,
    /// Strength (default: the persona file's).
    #[arg(long)]
    alpha: Option<f32>,
    /// One message, answered once (default: an interactive session on stdin).
    #[arg(long)]
    prompt: Option<String>,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature (0 = greedy, the default).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus mass (1 = the whole vocabulary).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    model: crate::model::ModelArgs,
}

/// A persona file's steering for the model in `dir`, at its own or the given strength.
fn load_persona(path: &Path, dir: &Path, model: &Decoder<Backend>, alpha: Option<f32>) -> Result<Arc<pas_core::Steering>> {
    let id = llm_burn::formats::identity::identity(dir, model.config())?;
    let (iv, meta) = Intervention::load_for(path, &id)?;
    let a = alpha.unwrap_or(meta.alpha.unwrap_or(1.0) as f32);
    eprintln!("persona {}: {} heads, {}, strength {a}", path.display(), iv.len(), meta.method);
    Ok(Arc::new(iv.at(a, meta.positions)))
}

/// Runs `chat`.
pub fn run_chat(args: &ChatArgs) -> Result<()> {
    let (dir, prompts, model) = args.model.load()?;
    let steering = args.persona.as_deref().map(|p| load_persona(p, &dir, &model, args.alpha)).transpose()?;
    let sampling = Sampling { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    sampling.validate()?;
    let stop = prompts.stop_ids(&model.config().eos);
    let mut history: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
    let say = |history: &mut Vec<Message>, user: &str| -> Result<()> {
        history.push(Message::new("user", user));
        let prompt = prompts.encode_messages(history)?;
        let g = Generation { prompt, steering: steering.clone(), sampling, max_new: args.max_tokens, stop: stop.clone() };
        let mut text = TextStream::default();
        let mut out = std::io::stdout().lock();
        let mut failed = None;
        model.generate(g, |t| match text.push(&prompts, t) {
            Ok(piece) => write!(out, "{piece}").and_then(|_| out.flush()).is_ok(),
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        writeln!(out, "{}", text.flush(&prompts)?)?;
        history.push(Message::new("assistant", &text.text(&prompts)?));
        Ok(())
    };
    if let Some(p) = &args.prompt {
        return say(&mut history, p);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!("type a message and press Enter; /reset forgets the conversation; Ctrl-D ends");
    }
    loop {
        if interactive {
            eprint!("> ");
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim() {
            "" => continue,
            "/reset" => history.retain(|m| m.role == "system"),
            user => say(&mut history, user)?,
        }
    }
}

/// Arguments of `serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The personas folder: `<name>.safetensors` files, found when added while running.
    #[arg(long)]
    personas: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Most requests in one batch (others wait for a row).
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Most new tokens a request may ask for.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// New tokens when a request does not say.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    #[command(flatten)]
    model: crate::model::ModelArgs,
    /// Most requests waiting for a row; past it, 429 with Retry-After.
    #[arg(long, default_value_t = serve::ServerConfig::default().max_waiting)]
    max_waiting: usize,
    /// Seconds a request may take before it is ended with an error and its row freed (0: no limit).
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for the requests in flight.
    #[arg(long, default_value_t = 30.0)]
    shutdown_grace: f64,
    /// Largest request body in bytes (past it, 413).
    #[arg(long, default_value_t = serve::ServerConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Personas kept loaded (the least recently used goes past it).
    #[arg(long, default_value_t = serve::personas::DEFAULT_MAX_LOADED)]
    max_personas_loaded: usize,
}

impl ServeArgs {
    /// The server's limits from the flags.
    fn config(&self) -> Result<serve::ServerConfig> {
        let seconds = |x: f64, what: &str| -> Result<std::time::Duration> {
            std::time::Duration::try_from_secs_f64(x).map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds >= 0, not {x}"))
        };
        Ok(serve::ServerConfig {
            model_id: String::new(),
            max_tokens: self.max_tokens,
            default_max_tokens: self.default_max_tokens,
            max_batch: self.max_batch,
            max_waiting: self.max_waiting,
            request_timeout: Some(seconds(self.request_timeout, "request-timeout")?).filter(|d| !d.is_zero()),
            shutdown_grace: seconds(self.shutdown_grace, "shutdown-grace")?,
            max_body_bytes: self.max_body_bytes,
            handle_signals: true,
        })
    }
}

/// Starts a server (in this process) and returns it with the model's name.
pub fn start_server(model: &crate::model::ModelArgs, personas: &Path, max_personas: usize, addr: &str, config: serve::ServerConfig, log: impl Fn(&str) + Send + Sync + 'static) -> Result<(serve::Running, String)> {
    if !personas.is_dir() {
        bail!("{} is not a folder (create it and put persona files in it)", personas.display());
    }
    let (dir, prompts, model) = model.load()?;
    let identity = llm_burn::formats::identity::identity(&dir, model.config())?;
    let model_id = identity.model_id.clone();
    let personas = serve::Personas::new(personas.to_owned(), identity).max_loaded(max_personas);
    let config = serve::ServerConfig { model_id: model_id.clone(), ..config };
    let running = serve::spawn(addr, model, prompts, personas, config, log).with_context(|| format!("listening on {addr}"))?;
    Ok((running, model_id))
}

/// Runs `serve` until the process is stopped.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let config = args.config()?;
    let (running, model_id) = start_server(&args.model, &args.personas, args.max_personas_loaded, &args.addr, config, |line| eprintln!("{line}"))?;
    let n = std::fs::read_dir(&args.personas).map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "safetensors")).count()).unwrap_or(0);
    eprintln!("serving {model_id} on http://{} with {n} personas in {}", running.addr, args.personas.display());
    match running.thread.join() {
        Ok(r) => {
            r?;
            eprintln!("stopped");
            Ok(())
        }
        Err(_) => bail!("the server thread panicked"),
    }
}
