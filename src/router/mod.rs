//! The router: the engine's routing state as plain data. Functions, trigger types, trigger
//! bindings, connections and calls in flight live here; nothing here touches a socket or an
//! actor (it reads the clock for deadlines; expiry itself comes with [`Event::Tick`]).
//!
//! ```text
//!                 Event                         Router                          Effect
//!  socket ──▶ Connect, Frame, Disconnect ──▶ ┌──────────────────┐ ──▶ Send / Force (a frame or
//!  actor      Unreachable (slow or gone)      │ conns  functions │      close to one connection)
//!  modules ─▶ Call, ModuleDone, Fire,     ──▶ │ types  triggers  │ ──▶ ModuleCall / ModuleBinding
//!             BindingRejected, Install        │ pending: engine  │ ──▶ Reply (to a module's Call)
//!  clock ───▶ Tick, AuthRetry             ──▶ │   id → Waiter    │ ──▶ Later (an event, after a delay)
//!                                             └──────────────────┘ ──▶ Forget (drop an outbox)
//! ```
//!
//! [`Router::handle`] takes one [`Event`] and appends the [`Effect`]s it causes; the registry
//! (`registry.rs`) delivers events, one at a time under its lock, and carries the effects
//! out, in order. Every call in
//! flight is parked under a fresh engine id with a [`Waiter`] saying who gets the outcome: a
//! connection (under its own invocation id), nobody, a module's internal call, or the engine
//! itself — a connection's auth function ([`Waiter::Auth`]) or a registration hook
//! ([`Waiter::Hook`]), whose answers continue the connection's story. Waiters are data: they
//! can be printed, compared and tested without sockets (`tests/`).
//!
//! Files: `mod.rs` (state, events, effects), `conns.rs` (connect, auth, frame order, reattach,
//! cleanup), `calls.rs` (routing, middleware, waiters, deadlines), `register.rs`
//! (registrations and their RBAC rules and hooks), `triggers.rs` (trigger types and bindings),
//! `engine_fns.rs` (the `engine::*` functions), `tests/` (unit tests).

mod calls;
mod cluster;
mod conns;
mod detours;
mod discovery;
mod engine_fns;
mod register;
mod tracing;
mod triggers;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use uuid::Uuid;

pub use calls::{CallRequest, Outcome, Waiter};
pub use cluster::CLUSTER_HOP;
pub(crate) use conns::Conn;
pub use conns::{ConnState, PeerInfo};
pub use tracing::Tracing;
use triggers::{TriggerEntry, TriggerTypeEntry};

use crate::config::ListenerConfig;
use crate::deadlines::Deadlines;
use crate::flow::Flow;
use crate::ids::IdMap;
use crate::lograte::LogLimiter;
use crate::messages::{
    BuiltinCall, BuiltinFunction, BuiltinTriggerType, ToSession, TriggerBinding,
};
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody};

/// How often the actor ticks (deadlines are resolved to this).
pub const TICK: Duration = Duration::from_millis(50);
/// Deadline for internal calls that do not name one.
pub const DEFAULT_INTERNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that happened, for the router to handle.
#[derive(Debug)]
pub enum Event {
    /// A socket connected on a worker listener (or a telemetry socket needing auth).
    Connect {
        worker_id: Uuid,
        listener: Arc<ListenerConfig>,
        peer: PeerInfo,
        flow: Arc<Flow>,
        telemetry: bool,
    },
    /// One decoded frame of a connection, in arrival order; `bytes` as its flow counted it.
    Frame {
        worker_id: Uuid,
        msg: protocol::Message,
        bytes: usize,
    },
    /// The socket closed.
    Disconnect { worker_id: Uuid },
    /// The connection's socket does not take what it is sent (not reading, or gone).
    Unreachable { worker_id: Uuid, why: String },
    /// A module calls a function; the outcome goes back as [`Effect::Reply`] with `token`.
    Call { token: u64, req: CallRequest },
    /// A module announces its functions and trigger types; it is module number `index`.
    Install {
        owner: &'static str,
        functions: Vec<BuiltinFunction>,
        trigger_types: Vec<BuiltinTriggerType>,
    },
    /// A module finished a [`BuiltinCall`].
    ModuleDone { engine_id: Uuid, outcome: Outcome },
    /// A trigger provider fires: call `function_id`, nobody waits for the result.
    Fire {
        function_id: String,
        data: Payload,
        metadata: Option<Value>,
    },
    /// A module's trigger provider refused a binding.
    BindingRejected {
        trigger_id: String,
        error: ErrorBody,
    },
    /// Ask the auth function of a connection again (it was not registered yet).
    AuthRetry {
        worker_id: Uuid,
        function_id: String,
        input: Payload,
        deadline: Instant,
    },
    /// Time passes: deadlines, `engine::functions-available`, log summaries.
    Tick { now: Instant },
}

/// Something the router wants done, in order.
#[derive(Debug)]
pub enum Effect {
    /// Queue a message for a connection (subject to its flow control; a connection that does
    /// not take it comes back as [`Event::Unreachable`]).
    Send { to: Uuid, msg: ToSession },
    /// The last word to a connection the router has dropped: queued whatever its queue holds.
    Force { to: Uuid, msg: ToSession },
    /// The router forgot a connection: its outbox can go.
    Forget { conn: Uuid },
    /// Hand a call to module number `module`.
    ModuleCall { module: usize, call: BuiltinCall },
    /// Hand a binding (or an unbinding) to module number `module`.
    ModuleBinding {
        module: usize,
        binding: TriggerBinding,
    },
    /// The outcome of a module's [`Event::Call`].
    Reply { token: u64, outcome: Outcome },
    /// Deliver `event` after `after`.
    Later { after: Duration, event: Event },
}

/// Effects in the order they must be carried out.
pub type Effects = Vec<Effect>;

/// Who serves a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Session(Uuid),
    /// An engine-hosted module (its index).
    Module(usize),
    /// The router itself (`engine::*`).
    Engine,
}

/// One registered function.
#[derive(Debug, Clone)]
pub(crate) struct FunctionEntry {
    pub owner: Owner,
    /// Registered by a trusted party (the engine, or a listener without `rbac`): only then
    /// does its metadata count for `expose_functions` metadata filters.
    pub trusted: bool,
    pub description: Option<String>,
    pub request_format: Option<Value>,
    pub response_format: Option<Value>,
    pub metadata: Option<Value>,
    /// An HTTP-invoked function: calls go to `iii-http-functions` as requests to this.
    pub invocation: Option<Arc<crate::modules::http_functions::Invocation>>,
}

/// The routing state. See the module docs.
pub struct Router {
    pub(crate) conns: IdMap<Conn>,
    pub(crate) functions: HashMap<String, FunctionEntry>,
    /// Engine-hosted modules by index: their names.
    pub(crate) modules: Vec<&'static str>,
    pub(crate) trigger_types: HashMap<String, TriggerTypeEntry>,
    pub(crate) triggers: HashMap<String, TriggerEntry>,
    pub(crate) pending: IdMap<calls::Pending>,
    pub(crate) deadlines: Deadlines,
    /// The set of function ids changed since `engine::functions-available` last fired.
    pub(crate) functions_dirty: bool,
    /// Every id a trusted worker (or the engine) ever registered: a public session without a
    /// prefix can never take one, not even while its owner is reconnecting.
    pub(crate) trusted_ids: HashSet<String>,
    /// Denied calls and registrations: logged a few per second, the rest counted.
    pub(crate) denials: LogLimiter,
    /// Registered custom stream functions (`stream::set(todo)`, …; see `custom_stream_op`):
    /// while there are none, stream calls are routed without looking at their input.
    pub(crate) custom_streams: HashSet<String>,
    /// The channel table `engine::channels::create` adds to (shared with the listeners).
    pub channels: crate::channels::Channels,
    /// `iii-http-functions`' URL rules, when that module runs (else HTTP-invoked functions are
    /// refused).
    pub http_security: Option<crate::config::SecurityConfig>,
    /// Calls, fires and denials counted for `/metrics`.
    pub(crate) stats: crate::metrics::RouterStats,
    /// Where the engine's span of each call goes (`iii-observability`), when it records them.
    pub(crate) tracing: Option<tracing::Tracing>,
    /// Functions registered only on other engines of the cluster (`iii-cluster`), as its last
    /// look at their directories saw them.
    pub(crate) remote_functions: HashSet<String>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    pub fn new() -> Router {
        let mut r = Router {
            conns: IdMap::default(),
            functions: HashMap::new(),
            modules: Vec::new(),
            trigger_types: HashMap::new(),
            triggers: HashMap::new(),
            pending: IdMap::default(),
            deadlines: Deadlines::new(TICK),
            functions_dirty: false,
            trusted_ids: HashSet::new(),
            denials: LogLimiter::new("denied calls and registrations", 20),
            custom_streams: HashSet::new(),
            channels: crate::channels::Channels::default(),
            http_security: None,
            stats: crate::metrics::RouterStats::default(),
            tracing: None,
            remote_functions: HashSet::new(),
        };
        r.install_engine_functions();
        r
    }

    /// The counts `/metrics` shows next to [`Router::stats`].
    pub(crate) fn gauges(&self) -> crate::metrics::Gauges {
        let mut g = crate::metrics::Gauges {
            functions: self.functions.len() as u64,
            triggers: self.triggers.len() as u64,
            pending_calls: self.pending.len() as u64,
            ..Default::default()
        };
        for c in self.conns.values() {
            let listener = format!(
                "{}:{}{}",
                c.listener.host,
                c.listener.port,
                if c.public() { " (rbac)" } else { "" }
            );
            let kind = if c.telemetry { "telemetry" } else { "worker" };
            *g.connections.entry((listener, kind)).or_default() += 1;
        }
        g
    }

    /// Handles one event; what it causes is appended to `out`.
    pub fn handle(&mut self, event: Event, out: &mut Effects) {
        match event {
            Event::Connect {
                worker_id,
                listener,
                peer,
                flow,
                telemetry,
            } => self.connect(worker_id, listener, peer, flow, telemetry, out),
            Event::Frame {
                worker_id,
                msg,
                bytes,
            } => self.frame(worker_id, msg, bytes, out),
            Event::Disconnect { worker_id } => {
                self.cleanup(worker_id, out);
            }
            Event::Unreachable { worker_id, why } => self.drop_unreachable(worker_id, &why, out),
            Event::Call { token, req } => self.call(req, Waiter::Module { token }, out),
            Event::Install {
                owner,
                functions,
                trigger_types,
            } => self.install_module(owner, functions, trigger_types, out),
            Event::ModuleDone { engine_id, outcome } => self.complete(engine_id, outcome, out),
            Event::Fire {
                function_id,
                data,
                metadata,
            } => self.fire(function_id, data, metadata, out),
            Event::BindingRejected { trigger_id, error } => {
                self.reject_trigger(&trigger_id, error, out)
            }
            Event::AuthRetry {
                worker_id,
                function_id,
                input,
                deadline,
            } => self.authenticate(worker_id, function_id, input, deadline, out),
            Event::Tick { now } => self.tick(now, out),
        }
    }

    /// Deadlines, `engine::functions-available` when ids changed, log summaries.
    fn tick(&mut self, now: Instant, out: &mut Effects) {
        self.expire_deadlines(now, out);
        if self.functions_dirty {
            self.functions_dirty = false;
            self.fire_functions_available(out);
        }
        self.denials.roll();
        if let Some(t) = &mut self.tracing {
            t.flush();
        }
    }

    /// Queues a frame for a connection.
    pub(crate) fn send_frame(&self, to: Uuid, frame: protocol::Message, out: &mut Effects) {
        out.push(Effect::Send {
            to,
            msg: ToSession::Frame(frame),
        });
    }

    /// A connection's socket does not take what it is sent: it is dropped.
    fn drop_unreachable(&mut self, worker_id: Uuid, why: &str, out: &mut Effects) {
        if !self.conns.contains_key(&worker_id) {
            return;
        }
        log::warn!("worker {worker_id}: not reading its socket ({why}); disconnecting it");
        out.push(Effect::Force {
            to: worker_id,
            msg: ToSession::Close("not reading its socket".into()),
        });
        self.cleanup(worker_id, out);
    }
}

/// The stream operations a worker may take over for one stream (`PROTOCOL.md` §6.1,
/// "per-stream overrides"): `stream::<op>(<stream_name>)`.
pub const CUSTOM_STREAM_OPS: &[&str] = &["get", "set", "delete", "list", "list_groups", "update"];

/// `Some((op, stream_name))` when `id` is a custom stream function id such as
/// `stream::set(todo)`.
pub fn custom_stream_op(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("stream::")?.strip_suffix(')')?;
    let (op, name) = rest.split_once('(')?;
    (CUSTOM_STREAM_OPS.contains(&op) && !name.is_empty()).then_some((op, name))
}

/// Wall-clock milliseconds since the Unix epoch (for `connected_at_ms` and event timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
