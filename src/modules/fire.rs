//! Firing a module's trigger bindings, shared by the modules that have them (state, pub/sub,
//! cron): a binding without a condition is fired straight away through the registry; a binding
//! with a `condition_function_id` gets a [`Conditioned`] queue, so its events are checked and
//! fired one at a time, in order, without holding up the module or other bindings.
//!
//! Conditions follow `MODULES.md` §0.3: the condition gets the payload the handler would get;
//! only a result that is literally `false` skips; no result means proceed; an error skips (and
//! is logged, at most [`crate::lograte`] allows).

use futures_util::future::{AbortHandle, Abortable};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::messages::FireTrigger;
use crate::payload::Payload;
use crate::registry::Registry;
use crate::router::CallRequest;

/// Calls `function_id` with `data`; nobody waits for the result.
pub fn fire(registry: &Registry, function_id: &str, data: Payload, metadata: Option<Value>) {
    registry.do_send(FireTrigger {
        function_id: function_id.to_string(),
        data,
        metadata,
    });
}

/// Does a condition's outcome let the event through?
pub fn passes(
    outcome: &Result<Option<Payload>, crate::protocol::ErrorBody>,
) -> Result<bool, String> {
    match outcome {
        Ok(Some(p)) => Ok(p.as_str().trim() != "false"),
        Ok(None) => Ok(true),
        Err(e) => Err(format!("{}: {}", e.code, e.message)),
    }
}

/// A binding with a condition: its events wait in a queue that a task of its own works
/// through, one event at a time (condition, then fire). Dropping it (the binding is gone)
/// ends the task and drops the events still queued.
pub struct Conditioned {
    tx: mpsc::UnboundedSender<Payload>,
    task: AbortHandle,
}

impl Drop for Conditioned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conditioned {
    /// Starts the queue's task on the current arbiter. `trigger_id` names it in log lines.
    pub fn start(
        registry: Registry,
        trigger_id: String,
        condition: String,
        function_id: String,
        metadata: Option<Value>,
    ) -> Conditioned {
        let (tx, mut rx) = mpsc::unbounded_channel::<Payload>();
        let (task, registration) = AbortHandle::new_pair();
        let work = async move {
            while let Some(payload) = rx.recv().await {
                let check = registry
                    .call(CallRequest::new(condition.clone(), payload.clone()))
                    .await;
                match passes(&check) {
                    Ok(true) => fire(&registry, &function_id, payload, metadata.clone()),
                    Ok(false) => {}
                    Err(e) => log::warn!(
                        "trigger {trigger_id}: condition {condition} failed ({e}); event skipped"
                    ),
                }
            }
        };
        actix::spawn(async move {
            let _ = Abortable::new(work, registration).await;
        });
        Conditioned { tx, task }
    }

    /// Queues one event.
    pub fn push(&self, payload: Payload) {
        let _ = self.tx.send(payload);
    }
}

/// One binding's way to its function: straight, or through its condition's queue.
pub enum Route {
    Direct {
        function_id: String,
        metadata: Option<Value>,
    },
    Conditioned(Conditioned),
}

impl Route {
    /// A route for a binding; with a condition, its queue's task starts on the current arbiter.
    pub fn new(
        registry: &Registry,
        trigger_id: &str,
        function_id: String,
        condition: Option<String>,
        metadata: Option<Value>,
    ) -> Route {
        match condition {
            None => Route::Direct {
                function_id,
                metadata,
            },
            Some(condition) => Route::Conditioned(Conditioned::start(
                registry.clone(),
                trigger_id.to_string(),
                condition,
                function_id,
                metadata,
            )),
        }
    }

    /// Delivers one event.
    pub fn send(&self, registry: &Registry, payload: Payload) {
        if let Some(f) = self.fire_or_queue(payload) {
            registry.do_send(f);
        }
    }

    /// A direct route's fire, for the caller to send (with others of the same event, say);
    /// a conditioned route queues the event itself.
    pub fn fire_or_queue(&self, payload: Payload) -> Option<FireTrigger> {
        match self {
            Route::Direct {
                function_id,
                metadata,
            } => Some(FireTrigger {
                function_id: function_id.clone(),
                data: payload,
                metadata: metadata.clone(),
            }),
            Route::Conditioned(q) => {
                q.push(payload);
                None
            }
        }
    }
}

/// Reads an optional string key of a trigger config: absent, `null` and `""` are "not given".
pub fn config_text(config: &Value, key: &str, what: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "Failed to parse {what} trigger config: `{key}` must be a string, got {other}"
        )),
    }
}
