//! Where a scenario sends its traffic — our own spawned engine or one at `--url` — and the
//! helpers every scenario shares to put workers (our Rust [`Client`]) on it: client options
//! for benchmarking and starting a client on a chosen arbiter (thread).

use std::time::Duration;

use actix::ArbiterHandle;
use iii_client::{Backoff, Client, ClientOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::procs::Spawned;

/// The options every engine-facing scenario accepts.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub url: Option<String>,
    pub engine_pid: Option<u32>,
}

impl Common {
    /// Reads `--url`, `--spawn`, `--engine-pid`.
    pub fn parse(a: &mut crate::args::Args) -> Result<Common, String> {
        let url = a.value("--url")?;
        let spawn = a.flag("--spawn");
        let engine_pid = match a.value("--engine-pid")? {
            None => None,
            Some(p) => Some(
                p.parse::<u32>()
                    .map_err(|_| format!("--engine-pid: not a pid: {p:?}"))?,
            ),
        };
        if spawn && url.is_some() {
            return Err("--spawn and --url exclude each other".into());
        }
        if let Some(u) = &url {
            if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                return Err(format!("--url must look like ws://HOST:PORT, got {u:?}"));
            }
        }
        Ok(Common { url, engine_pid })
    }

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
