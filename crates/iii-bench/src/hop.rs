//! What a call scenario's traffic goes through: our engine (spawned or at `--url`) or, with
//! `--direct`, the minimal relay (`relay.rs`) that gives the limit the engine is compared to.
//! Shared by `invoke` and `node`.

use serde_json::{json, Value};

use crate::args::{parse_count, parse_on_off};
use crate::procs::Spawned;
use crate::target::{Common, Target};

/// The `--direct` options.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayOpts {
    /// Go through the minimal relay instead of the engine (the limit)
    #[arg(long)]
    pub direct: bool,
    /// With --direct: use a relay already running there
    #[arg(long, value_name = "ws-url", requires = "direct")]
    pub relay_url: Option<String>,
    /// With --direct: socket threads of the spawned relay
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2")]
    pub relay_threads: usize,
    /// With --direct: TCP_NODELAY on the relay's sockets
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    #[arg(action = clap::ArgAction::Set, default_value = "on")]
    pub relay_nodelay: bool,
}

/// What the traffic goes through, kept alive for the run.
pub enum Hop {
    Engine(Target),
    Relay {
        url: String,
        spawned: Option<Box<Spawned>>,
        threads: usize,
        nodelay: bool,
    },
}

impl Hop {
    /// The engine, or the relay with `--direct` (spawned unless `--relay-url` names one).
    pub fn open(common: &Common, relay: &RelayOpts) -> Result<Hop, String> {
        if !relay.direct {
            return Ok(Hop::Engine(common.target()?));
        }
        Ok(match &relay.relay_url {
            Some(u) => Hop::Relay {
                url: u.trim_end_matches('/').to_string(),
                spawned: None,
                threads: relay.relay_threads,
                nodelay: relay.relay_nodelay,
            },
            None => {
                let r = Spawned::relay(relay.relay_threads, relay.relay_nodelay)?;
                Hop::Relay {
                    url: r.url.clone(),
                    spawned: Some(Box::new(r)),
                    threads: relay.relay_threads,
                    nodelay: relay.relay_nodelay,
                }
            }
        })
    }

    /// The caller's and the callee's URLs.
    pub fn urls(&self) -> (String, String) {
        match self {
            Hop::Engine(t) => (t.url().to_string(), t.url().to_string()),
            Hop::Relay { url, .. } => {
                (format!("{url}/?role=caller"), format!("{url}/?role=callee"))
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Hop::Engine(t) => t.pid(),
            Hop::Relay { spawned, .. } => spawned.as_ref().map(|s| s.pid()),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Hop::Engine(t) => t.json(),
            Hop::Relay {
                url,
                spawned,
                threads,
                nodelay,
            } => json!({
                "kind": "direct",
                "spawned": spawned.is_some(),
                "url": url,
                "pid": spawned.as_ref().map(|s| s.pid()),
                "relay_threads": if spawned.is_some() { json!(threads) } else { Value::Null },
                "relay_nodelay": if spawned.is_some() { json!(nodelay) } else { Value::Null },
            }),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Hop::Engine(_) => "engine",
            Hop::Relay { .. } => "direct (relay)",
        }
    }
}
