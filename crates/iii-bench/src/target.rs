//! Where a scenario sends its traffic — our own spawned engine or one at `--url` (the options
//! that choose it: [`Common`], and [`SpawnOnly`] for scenarios that always spawn) — and the
//! helpers every scenario shares to put workers (our Rust [`Client`]) on it: client options
//! for benchmarking, starting a client (or any task) on a chosen arbiter (thread), waiting
//! until a function is callable, and calling one at a steady pace.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use iii_client::{Backoff, Client, ClientOptions, TriggerRequest};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::procs::Spawned;

/// The options every engine-facing scenario accepts: where its traffic goes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Common {
    /// Use a running engine instead of spawning one
    #[arg(long, value_name = "ws://HOST:PORT", value_parser = parse_ws_url)]
    pub url: Option<String>,
    /// Spawn our own engine (the default without --url)
    #[arg(long, conflicts_with = "url")]
    pub spawn: bool,
    /// With --url: the engine's pid (to read its RSS, CPU time and open-file limit)
    #[arg(long, value_name = "pid")]
    pub engine_pid: Option<u32>,
}

/// `ws://HOST:PORT` or `wss://…`.
fn parse_ws_url(u: &str) -> Result<String, String> {
    if u.starts_with("ws://") || u.starts_with("wss://") {
        Ok(u.to_string())
    } else {
        Err("must look like ws://HOST:PORT".into())
    }
}

impl Common {
    /// Starts our engine, or names the one at `--url`.
    pub fn target(&self) -> Result<Target, String> {
        match &self.url {
            Some(u) => Ok(Target::Url {
                url: u.trim_end_matches('/').to_string(),
                pid: self.engine_pid,
            }),
            None => Ok(Target::Spawned(Box::new(Spawned::engine()?))),
        }
    }
}

/// The target options of a scenario that always spawns its engine with its own config:
/// `--spawn` is accepted, `--url` and `--engine-pid` are refused by [`SpawnOnly::check`].
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpawnOnly {
    /// Accepted for symmetry (this scenario always spawns its engine)
    #[arg(long)]
    pub spawn: bool,
    /// Refused by [`SpawnOnly::check`]
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Refused by [`SpawnOnly::check`]
    #[arg(long, hide = true)]
    pub engine_pid: Option<String>,
}

impl SpawnOnly {
    /// Refuses `--url` and `--engine-pid`, saying `why` the scenario spawns its own engine.
    pub fn check(&self, scenario: &str, why: &str) -> Result<(), String> {
        if self.url.is_some() || self.engine_pid.is_some() {
            return Err(format!(
                "{scenario} spawns its own engine ({why}); --url and --engine-pid are not supported"
            ));
        }
        Ok(())
    }
}

/// An engine to talk to.
pub enum Target {
    Spawned(Box<Spawned>),
    Url { url: String, pid: Option<u32> },
}

impl Target {
    pub fn url(&self) -> &str {
        match self {
            Target::Spawned(s) => &s.url,
            Target::Url { url, .. } => url,
        }
    }

    /// The engine's pid when known (spawned, or `--engine-pid`).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Target::Spawned(s) => Some(s.pid()),
            Target::Url { pid, .. } => *pid,
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Target::Spawned(s) => {
                json!({"kind": "engine", "spawned": true, "url": s.url, "pid": s.pid(),
                       "stream_url": s.ready["stream"]})
            }
            Target::Url { url, pid } => {
                json!({"kind": "engine", "spawned": false, "url": url, "pid": pid})
            }
        }
    }

    /// The spawned engine's log (empty for `--url`).
    pub fn log(&self) -> String {
        match self {
            Target::Spawned(s) => s.log(),
            Target::Url { .. } => String::new(),
        }
    }
}

/// Client options for the bench: no reconnect storms (a dropped connection is a failure to
/// report, not something to hide), generous deadlines.
pub fn bench_options(name: &str) -> ClientOptions {
    ClientOptions {
        reconnect: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.1,
        },
        invocation_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(15),
        ..ClientOptions::named(name)
    }
}

/// Connects a [`Client`] whose actor lives on `arbiter` (so its frames and handlers run on
/// that thread), runs `setup` on it there, and hands the client back.
pub async fn connect_on<F>(
    arbiter: &ArbiterHandle,
    url: String,
    options: ClientOptions,
    setup: F,
) -> Result<Client, String>
where
    F: FnOnce(&Client) + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let started = arbiter.spawn(async move {
        let result = Client::connect(&url, options)
            .await
            .inspect(|c| setup(c))
            .map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    if !started {
        return Err("the client thread has stopped".into());
    }
    rx.await
        .map_err(|_| "the client thread dropped the connection attempt".to_string())?
}

/// Runs the future `make` returns on `arbiter` (it need not be `Send`: it is built there);
/// its output arrives on the returned receiver.
pub fn run_on<F, Fut, T>(arbiter: &ArbiterHandle, make: F) -> oneshot::Receiver<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let _ = tx.send(make().await);
        });
    });
    rx
}

/// Calls `function_id` until it answers (registrations are asynchronous), for up to 15 s.
pub async fn wait_callable(client: &Client, function_id: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let req = TriggerRequest {
            function_id: function_id.into(),
            payload: json!({"probe": true}),
            timeout: Some(Duration::from_secs(2)),
            metadata: None,
            action: None,
        };
        match client.trigger_with(req).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("{function_id} never became callable: {last}"))
}

/// Calls `function_id` every `interval` (a late call delays the next, none is skipped) until
/// `stop`, each with a 10 s deadline; returns the latencies in µs, the failures and the first
/// error, and shuts the client down.
pub async fn call_every(
    client: Client,
    function_id: &str,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, usize, Option<String>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut samples, mut failures, mut first_error) = (Vec::new(), 0, None);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let req = TriggerRequest {
            function_id: function_id.into(),
            payload: json!({"n": n}),
            timeout: Some(Duration::from_secs(10)),
            metadata: None,
            action: None,
        };
        let t = Instant::now();
        let outcome = client.trigger_with(req).await;
        samples.push(crate::report::us(t.elapsed()));
        if let Err(e) = outcome {
            failures += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
    client.shutdown().await;
    (samples, failures, first_error)
}

/// `n` client threads (arbiters); stopped when the returned value is dropped.
pub struct Threads(pub Vec<actix::Arbiter>);

impl Threads {
    pub fn new(n: usize) -> Threads {
        Threads((0..n.max(1)).map(|_| actix::Arbiter::new()).collect())
    }

    /// The arbiter for the `i`-th client (round-robin).
    pub fn pick(&self, i: usize) -> ArbiterHandle {
        self.0[i % self.0.len()].handle()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for a in self.0.drain(..) {
            a.stop();
            let _ = a.join();
        }
    }
}
