//! The engine thread: owns the model and runs one [`Batcher`] that requests join and leave
//! between steps (continuous batching); each request gets its tokens on its own channel.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, mpsc};

use burn::tensor::backend::Backend;
use llm_burn::{Batcher, Finish, Generation, Decoder};
use tokio::sync::mpsc::UnboundedSender;

/// What a request hears from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new token.
    Token(u32),
    /// The end.
    Done(Finish),
    /// The request could not be run (the message says why).
    Failed(String),
}

/// A request handed to the engine.
struct Job {
    id: u64,
    generation: Generation,
    events: UnboundedSender<Event>,
}

/// Counters the engine keeps (read by `GET /v1/stats`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Steps run.
    pub steps: AtomicU64,
    /// Tokens generated.
    pub tokens: AtomicU64,
    /// Most rows in one step so far.
    pub max_rows: AtomicUsize,
    /// Rows running after the last step.
    pub running: AtomicUsize,
}

/// A handle to the engine thread; cloning it is cheap. The thread ends when every handle is
/// dropped.
#[derive(Clone)]
pub struct Engine {
    jobs: Sender<Job>,
    next_id: Arc<AtomicU64>,
    /// The engine's counters.
    pub stats: Arc<Stats>,
}

impl Engine {
    /// Starts the engine thread with `model`, running at most `max_rows` requests at once.
    pub fn start<B: Backend>(model: Decoder<B>, max_rows: usize) -> Self
    where
        Decoder<B>: Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        std::thread::Builder::new().name("engine".into()).spawn(move || run(&model, max_rows, &rx, &s)).expect("the engine thread starts");
        Engine { jobs, next_id: Arc::new(AtomicU64::new(0)), stats }
    }

    /// Queues a generation; its events arrive on `events` (dropping the receiver cancels it).
    pub fn submit(&self, generation: Generation, events: UnboundedSender<Event>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.jobs.send(Job { id, generation, events }) {
            let _ = e.0.events.send(Event::Failed("the engine has stopped".into()));
        }
    }
}

/// The engine loop: wait for work when idle, admit what came, step, hand out tokens.
fn run<B: Backend>(model: &Decoder<B>, max_rows: usize, rx: &Receiver<Job>, stats: &Stats) {
    let mut batch = Batcher::new(model, max_rows);
    let mut listeners: std::collections::HashMap<u64, UnboundedSender<Event>> = Default::default();
    loop {
        if batch.is_idle() {
            match rx.recv() {
                Ok(job) => admit(&mut batch, &mut listeners, job),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => admit(&mut batch, &mut listeners, job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if batch.is_idle() => return,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if batch.is_idle() {
            continue;
        }
        let rows = batch.running() + batch.waiting().min(max_rows.saturating_sub(batch.running()));
        stats.max_rows.fetch_max(rows, Ordering::Relaxed);
        match batch.step() {
            Ok(events) => {
                stats.steps.fetch_add(1, Ordering::Relaxed);
                for e in events {
                    let gone = match listeners.get(&e.id) {
                        Some(tx) => {
                            let mut ok = true;
                            if let Some(t) = e.token {
                                stats.tokens.fetch_add(1, Ordering::Relaxed);
                                ok &= tx.send(Event::Token(t)).is_ok();
                            }
                            if let Some(f) = e.finish {
                                let _ = tx.send(Event::Done(f));
                            }
                            !ok || e.finish.is_some()
                        }
                        None => true,
                    };
                    if gone {
                        listeners.remove(&e.id);
                        if e.finish.is_none() {
                            // The client went away: free its row.
                            let _ = batch.cancel(e.id);
                        }
                    }
                }
            }
            Err(err) => {
                // A failed step fails every request in it; the engine starts afresh.
                for (_, tx) in listeners.drain() {
                    let _ = tx.send(Event::Failed(err.to_string()));
                }
                batch = Batcher::new(model, max_rows);
            }
        }
        stats.running.store(batch.running(), Ordering::Relaxed);
    }
}

/// Queues a job, or tells its listener why it cannot run.
fn admit<B: Backend>(batch: &mut Batcher<'_, B>, listeners: &mut std::collections::HashMap<u64, UnboundedSender<Event>>, job: Job) {
    match batch.add(job.id, job.generation) {
        Ok(()) => {
            listeners.insert(job.id, job.events);
        }
        Err(e) => {
            let _ = job.events.send(Event::Failed(e.to_string()));
        }
    }
}
