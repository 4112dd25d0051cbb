//! `iii-client`: a Rust worker client for engines that speak the iii worker protocol. Register
//! functions with async handlers, call functions (with a deadline, or fire-and-forget), bind
//! triggers, provide trigger types; reconnects with backoff and replays every registration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iii_client::ClientError> {
//! use iii_client::{Client, ClientOptions};
//! use serde_json::json;
//! let iii = Client::connect("ws://127.0.0.1:49134", ClientOptions::named("math")).await?;
//! iii.register_function("math::add", |input| async move {
//!     let (a, b) = (input["a"].as_i64().unwrap_or(0), input["b"].as_i64().unwrap_or(0));
//!     Ok(json!({ "sum": a + b }))
//! });
//! let sum = iii.trigger("math::add", json!({"a": 2, "b": 3})).await?;
//! # Ok(()) }
//! ```
//!
//! The connection is an actix actor (`actor.rs`) on the arbiter that created the client, so
//! handlers may hold non-`Send` state; the [`Client`] handle itself is `Send + Sync + Clone`.
//! Registrations made while disconnected are kept and sent on the next connect; calls made
//! while disconnected are queued and sent then (unless their deadline passed first). A call
//! already written to a socket that drops fails at once with `connection_lost` (the engine can
//! only answer it on that socket) instead of waiting for its deadline.

mod actor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use actor::{ClientActor, Command};

pub use actor::ConnectionState;
pub use iii_protocol::protocol::ErrorBody;
pub use iii_protocol::Payload;

/// A function handler: input → result or error.
pub type HandlerFn =
    Arc<dyn Fn(Value) -> LocalBoxFuture<'static, Result<Value, ErrorBody>> + Send + Sync>;

/// Reconnect backoff: `initial`, multiplied by `multiplier` per failed attempt, capped at `max`,
/// with ±`jitter` (a fraction) of randomness.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.3,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Reported to the engine in `engine::workers::register`.
    pub name: String,
    /// Default deadline of [`Client::trigger`].
    pub invocation_timeout: Duration,
    pub reconnect: Backoff,
    /// TCP + WebSocket handshake deadline.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the engine.
    pub max_frame_bytes: usize,
    /// WebSocket ping interval; a connection silent for 3 intervals is dropped and re-opened.
    pub heartbeat: Duration,
    /// Send `engine::workers::register` after connecting (as the published SDKs do).
    pub register_worker: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: "rust-worker".into(),
            invocation_timeout: Duration::from_secs(30),
            reconnect: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 << 20,
            heartbeat: Duration::from_secs(20),
            register_worker: true,
        }
    }
}

impl ClientOptions {
    /// Defaults with a worker name.
    pub fn named(name: impl Into<String>) -> Self {
        ClientOptions {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// Why a call failed: the engine's or the callee's error, or a local one (`TIMEOUT`,
/// `SHUTDOWN`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InvocationError {
    pub code: String,
    pub message: String,
    pub stacktrace: Option<String>,
}

impl From<ErrorBody> for InvocationError {
    fn from(e: ErrorBody) -> Self {
        InvocationError {
            code: e.code,
            message: e.message,
            stacktrace: e.stacktrace,
        }
    }
}

/// Why [`Client::connect`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect to {url} within {timeout_ms} ms: {last_error}")]
    Connect {
        url: String,
        timeout_ms: u64,
        last_error: String,
    },
    #[error(transparent)]
    Invocation(#[from] InvocationError),
}

/// A call: function, payload, optional deadline and action.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub function_id: String,
    pub payload: Value,
    /// Overrides [`ClientOptions::invocation_timeout`]; also sent to the engine as the call's
    /// engine-side deadline.
    pub timeout: Option<Duration>,
    pub metadata: Option<Value>,
    /// `None`: an ordinary call. `Some(Action::Enqueue {queue})`: the engine queues it and
    /// answers `{messageReceiptId}`.
    pub action: Option<iii_protocol::protocol::Action>,
}

/// A binding handed to this client because it provides the binding's trigger type.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerTypeEvent {
    Bind {
        id: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    },
    Unbind {
        id: String,
    },
}

/// Handle to a registration; [`Registration::unregister`] removes it from the engine and
/// from the replay list.
#[derive(Debug, Clone)]
pub struct Registration {
    kind: actor::RegKind,
    id: String,
    client: Addr<ClientActor>,
}

impl Registration {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn unregister(&self) {
        self.client
            .do_send(Command::Unregister(self.kind, self.id.clone()));
    }
}

/// A connected (or reconnecting) worker. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    addr: Addr<ClientActor>,
    state: watch::Receiver<ConnectionState>,
    timeout: Duration,
}

impl Client {
    /// Starts a client on the current arbiter and waits until the engine has welcomed it.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let deadline = options.connect_timeout;
        let client = Client::start(url, options);
        client
            .wait_connected(deadline)
            .await
            .map_err(|last_error| ClientError::Connect {
                url: url.to_string(),
                timeout_ms: deadline.as_millis() as u64,
                last_error,
            })?;
        Ok(client)
    }

    /// Starts a client on the current arbiter without waiting; it connects in the background.
    pub fn start(url: &str, options: ClientOptions) -> Client {
        let (tx, rx) = watch::channel(ConnectionState::Connecting);
        let timeout = options.invocation_timeout;
        let addr = ClientActor::new(url.to_string(), options, tx).start();
        Client {
            addr,
            state: rx,
            timeout,
        }
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every connection state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// The worker id the engine gave the current connection.
    pub fn worker_id(&self) -> Option<String> {
        match &*self.state.borrow() {
            ConnectionState::Connected { worker_id } => Some(worker_id.clone()),
            _ => None,
        }
    }

    /// Waits until connected (welcomed by the engine); the error is the last failure seen.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), String> {
        let mut rx = self.state.clone();
        let wait = async move {
            rx.wait_for(|s| matches!(s, ConnectionState::Connected { .. }))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(match &*self.state.borrow() {
                ConnectionState::Reconnecting { last_error, .. } => last_error.clone(),
                other => format!("{other:?}"),
            }),
        }
    }

    /// Registers a function served by `handler`.
    pub fn register_function<F, Fut>(&self, id: &str, handler: F) -> Registration
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorBody>> + 'static,
    {
        self.register_function_with(id, None, None, handler)
    }

    /// Registers a function with a description and metadata.
    pub fn register_function_with<F, Fut>(
        &self,
        id: &str,
        description: Option<String>,
        metadata: Option<Value>,
        handler: F,
    ) -> Registration
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorBody>> + 'static,
    {
        let handler: HandlerFn = Arc::new(move |v| Box::pin(handler(v)));
        self.addr.do_send(Command::RegisterFunction {
            id: id.to_string(),
            description,
            metadata,
            handler,
        });
        Registration {
            kind: actor::RegKind::Function,
            id: id.to_string(),
            client: self.addr.clone(),
        }
    }

    /// Binds `function_id` to a trigger of `trigger_type` with `config`.
    pub fn register_trigger(
        &self,
        trigger_type: &str,
        function_id: &str,
        config: Value,
    ) -> Registration {
        let id = uuid::Uuid::new_v4().to_string();
        self.addr.do_send(Command::RegisterTrigger {
            id: id.clone(),
            trigger_type: trigger_type.to_string(),
            function_id: function_id.to_string(),
            config,
        });
        Registration {
            kind: actor::RegKind::Trigger,
            id,
            client: self.addr.clone(),
        }
    }

    /// Provides a trigger type; the bindings the engine hands over arrive on the receiver.
    pub fn register_trigger_type(
        &self,
        id: &str,
        description: &str,
    ) -> (Registration, mpsc::UnboundedReceiver<TriggerTypeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.addr.do_send(Command::RegisterTriggerType {
            id: id.to_string(),
            description: description.to_string(),
            events: tx,
        });
        let reg = Registration {
            kind: actor::RegKind::TriggerType,
            id: id.to_string(),
            client: self.addr.clone(),
        };
        (reg, rx)
    }

    /// Calls a function and waits for its result (`Value::Null` when it returned nothing).
    pub async fn trigger(
        &self,
        function_id: &str,
        payload: Value,
    ) -> Result<Value, InvocationError> {
        let req = TriggerRequest {
            function_id: function_id.to_string(),
            payload,
            timeout: None,
            metadata: None,
            action: None,
        };
        Ok(self.trigger_with(req).await?.unwrap_or(Value::Null))
    }

    /// Calls a function with full control; `Ok(None)` when it returned no result.
    pub async fn trigger_with(
        &self,
        req: TriggerRequest,
    ) -> Result<Option<Value>, InvocationError> {
        let timeout = req.timeout.unwrap_or(self.timeout);
        let (tx, rx) = oneshot::channel();
        self.addr.do_send(Command::Invoke {
            req,
            timeout,
            reply: tx,
        });
        rx.await.unwrap_or_else(|_| {
            Err(InvocationError {
                code: "SHUTDOWN".into(),
                message: "the client stopped".into(),
                stacktrace: None,
            })
        })
    }

    /// Fire-and-forget: sends the call, waits for nothing.
    pub fn trigger_void(&self, function_id: &str, payload: Value) {
        self.addr.do_send(Command::InvokeVoid {
            function_id: function_id.to_string(),
            payload,
        });
    }

    /// Closes the connection for good; pending calls fail with `SHUTDOWN`.
    pub async fn shutdown(&self) {
        let _ = self.addr.send(Command::Shutdown).await;
    }

    /// Drops the current socket without telling the engine (as a network cut would) and
    /// reconnects with the usual backoff.
    pub fn drop_connection(&self) {
        self.addr.do_send(Command::DropConnection);
    }
}
