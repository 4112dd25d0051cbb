//! Engine modules, one per config entry kind: `worker` (the `iii-worker-manager` listeners),
//! `stream` (`iii-stream`: the store, the `stream::*` functions and triggers, the consumer
//! socket), `state` (`iii-state`), `queue` (`iii-queue`: durable queues), `pubsub` (`iii-pubsub`), `cron` (`iii-cron`), `worker_log`
//! (`engine::log::*`, always present), `http` (`iii-http`: its listener and the `http` trigger),
//! `http_functions` (`iii-http-functions`: functions that live behind a URL)
//! and `exec` (`iii-exec`: the worker processes the engine starts and supervises). `fire` is what the trigger-providing modules share.
//! `bridge` (`iii-bridge`: this engine as a worker of another), `cluster` (`iii-cluster`: calls across engines that share a Redis), `observability` (`iii-observability`: telemetry from workers and the engine's own spans,
//! the query functions, `log` and `trace` triggers), `prometheus` (its optional `/metrics`
//! listener). `console` is the operator console page
//! that every trusted worker listener serves at `/console`.
//! Each module's `start` does its fallible setup first and returns a handle the engine keeps to
//! stop it, or a [`ModuleError`] naming what failed.

pub mod bridge;
pub mod cluster;
pub mod console;
pub mod cron;
pub mod exec;
pub mod fire;
pub mod http;
pub mod http_functions;
pub mod observability;
pub mod prometheus;
pub mod pubsub;
pub mod queue;
pub mod state;
pub mod stream;
pub mod worker;
pub mod worker_log;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;

use serde_json::Value;

use crate::kv::store::StoreError;
use crate::protocol::ErrorBody;

/// Why a module could not start.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("static_dir {}: {reason}", .path.display())]
    StaticDir { path: PathBuf, reason: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Redis(String),
}

/// Resolves and binds `host:port`; errors name the address. Returns the socket and the address
/// it is bound to (the real port when the config said 0).
pub(crate) fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), ModuleError> {
    let resolve = |reason: String| ModuleError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))?;
    let listen = |source: io::Error| ModuleError::Listen {
        addr: resolved.to_string(),
        source,
    };
    let socket = TcpListener::bind(resolved).map_err(listen)?;
    let local = socket.local_addr().map_err(listen)?;
    Ok((socket, local))
}

/// Answers a module's call with what `work` comes to, once it is done: for backends that are
/// not on the module actor's thread (Redis, another engine). Runs on the current arbiter.
pub(crate) fn answer_later(
    registry: crate::registry::Registry,
    engine_id: uuid::Uuid,
    work: impl std::future::Future<Output = Result<Option<Value>, ErrorBody>> + 'static,
) {
    actix::spawn(async move {
        let outcome = work
            .await
            .map(|v| v.map(|v| crate::payload::Payload::from_value(&v)));
        registry.do_send(crate::messages::BuiltinDone { engine_id, outcome });
    });
}

/// `deserialization_error` with upstream's message form: `Failed to deserialize input for <fn>: …`.
pub fn bad_input(function_id: &str, reason: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(
        "deserialization_error",
        format!("Failed to deserialize input for {function_id}: {reason}"),
    )
}

/// Names the key when one of `keys` is present in an object input but is not a string (serde
/// alone says only "invalid type: integer, expected a string"). `null` counts as absent.
pub fn check_string_keys(function_id: &str, input: &Value, keys: &[&str]) -> Result<(), ErrorBody> {
    let Some(obj) = input.as_object() else {
        return Ok(());
    };
    for key in keys {
        match obj.get(*key) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(bad_input(
                    function_id,
                    format!("`{key}` must be a string, got {other}"),
                ))
            }
        }
    }
    Ok(())
}
