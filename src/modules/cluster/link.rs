//! The `link` transport of `iii-cluster`: this engine calls another engine's functions over a
//! WebSocket to that engine's trusted worker listener (the address it advertises in the
//! directory), as a worker of it (`iii_client`, reconnecting with backoff). A forwarded call is
//! an ordinary invocation of the function, with the caller's deadline and the metadata key
//! [`CLUSTER_HOP`] carrying the original caller's worker id: the other engine runs it there only
//! (never forwards it again) and its worker sees that `_caller_worker_id`.
//!
//! Measured against Redis pub/sub (`iii-bench cluster`, BENCH.md): a call and its answer each
//! cross one socket instead of two through Redis, and the other engine handles the call like
//! any worker's, with no envelope to parse.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use iii_client::{Client, ClientOptions, TriggerRequest};
use serde_json::{json, Value};

use crate::protocol::ErrorBody;
use crate::router::CLUSTER_HOP;

/// The links to other engines, made when first needed.
#[derive(Default)]
pub(super) struct Links {
    /// Engine id → (its advertised URL, the client connected there).
    clients: HashMap<String, (String, Client)>,
}

impl Links {
    /// The link to `engine` at `url` (a new one if the engine moved).
    pub(super) fn to(&mut self, engine: &str, url: &str) -> Client {
        if let Some((u, c)) = self.clients.get(engine) {
            if u == url {
                return c.clone();
            }
        }
        let mut options = ClientOptions::named("iii-cluster-link");
        options.reconnect.initial = Duration::from_millis(100);
        options.reconnect.max = Duration::from_secs(2);
        let client = Client::start(url, options);
        log::info!("iii-cluster: linking to engine {engine} at {url}");
        if let Some((_, old)) = self
            .clients
            .insert(engine.to_string(), (url.to_string(), client.clone()))
        {
            actix::spawn(async move { old.shutdown().await });
        }
        client
    }

    /// Closes the links to engines that left the directory.
    pub(super) fn keep(&mut self, engines: &HashSet<String>) {
        let gone: Vec<String> = self
            .clients
            .keys()
            .filter(|e| !engines.contains(*e))
            .cloned()
            .collect();
        for engine in gone {
            if let Some((_, c)) = self.clients.remove(&engine) {
                actix::spawn(async move { c.shutdown().await });
            }
        }
    }
}

/// Calls `function_id` on the engine behind `client`. The link dropping under the call (the
/// engine died) is `invocation_stopped`; the other engine's errors keep their code.
pub(super) async fn call(
    client: Client,
    function_id: String,
    data: Value,
    caller: Option<String>,
    timeout: Duration,
) -> Result<Option<Value>, ErrorBody> {
    let req = TriggerRequest {
        function_id,
        payload: data,
        timeout: Some(timeout),
        metadata: Some(json!({ CLUSTER_HOP: {"caller": caller} })),
        action: None,
    };
    client
        .trigger_with(req)
        .await
        .map_err(|e| match e.code.as_str() {
            "connection_lost" | "SHUTDOWN" => ErrorBody::new(
                "invocation_stopped",
                "Invocation stopped: the engine serving it went away",
            ),
            _ => ErrorBody {
                code: e.code,
                message: e.message,
                stacktrace: e.stacktrace,
            },
        })
}
