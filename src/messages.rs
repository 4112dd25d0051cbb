//! The messages between the engine's actors and the registry, defined in one place so that no
//! actor's file imports another's: sockets and modules report to the registry
//! ([`Registry::do_send`](crate::registry::Registry::do_send), handled on the reporting thread),
//! the registry talks back through actor mailboxes.
//!
//! | message | from → to |
//! |---|---|
//! | [`Connect`], [`FromWorker`], [`Disconnect`] | worker socket → registry |
//! | [`ToSession`] | registry → worker socket (actor message) |
//! | [`RegisterBuiltins`] | module → registry, once at start |
//! | [`BuiltinCall`] → [`BuiltinDone`] | registry → module (actor message) → registry (a call of a module's function) |
//! | [`TriggerBinding`] → [`TriggerRejected`] | registry → module (actor message) → registry (a binding of a module's trigger type) |
//! | [`FireTrigger`], [`FireMany`] | module → registry (call bound functions, nobody waits) |
//!
//! A module that awaits a call's outcome uses [`Registry::call`](crate::registry::Registry::call).

use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::config::ListenerConfig;
use crate::flow::Flow;
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody};
use crate::router::{Outcome, PeerInfo};

/// A new connection on a worker listener.
pub struct Connect {
    pub worker_id: Uuid,
    pub session: Recipient<ToSession>,
    pub listener: Arc<ListenerConfig>,
    pub peer: PeerInfo,
    pub flow: Arc<Flow>,
    /// A telemetry (`/otel`) socket that only needs authenticating.
    pub telemetry: bool,
}

/// One decoded frame from a connection.
pub struct FromWorker {
    pub worker_id: Uuid,
    pub msg: protocol::Message,
    /// The frame's size, as counted by the connection's flow control.
    pub bytes: usize,
}

/// The connection is gone.
pub struct Disconnect {
    pub worker_id: Uuid,
}

/// What the registry tells a worker socket.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToSession {
    /// The connection is accepted (after auth): a worker socket sends `workerregistered` first.
    Accepted { reattach_token: Uuid },
    /// Send this frame.
    Frame(protocol::Message),
    /// Auth failed: send an `error` frame, then close.
    Reject(ErrorBody),
    /// Close the connection, for the logged reason.
    Close(String),
}

impl ToSession {
    /// What flow control counts for this message while it waits for the socket.
    pub fn wire_len(&self) -> usize {
        match self {
            ToSession::Frame(f) => f.estimated_len(),
            _ => 128,
        }
    }
}

/// What the registry needs to know about one engine-hosted function.
#[derive(Debug, Clone)]
pub struct BuiltinFunction {
    pub id: String,
    pub description: String,
}

/// What the registry needs to know about one engine-hosted trigger type.
#[derive(Debug, Clone)]
pub struct BuiltinTriggerType {
    pub id: String,
    pub description: String,
    /// Its events concern every connection or function: public sessions need it listed in
    /// `allowed_trigger_types`.
    pub engine_wide: bool,
}

/// An engine-hosted module announces its functions and trigger types.
pub struct RegisterBuiltins {
    pub owner: &'static str,
    pub functions: Vec<BuiltinFunction>,
    pub calls: Recipient<BuiltinCall>,
    pub trigger_types: Vec<BuiltinTriggerType>,
    pub bindings: Recipient<TriggerBinding>,
}

/// A call of an engine-hosted function. Answer with `BuiltinDone { engine_id, .. }`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BuiltinCall {
    pub engine_id: Uuid,
    pub function_id: String,
    pub data: Payload,
    /// The calling connection's worker id (`None` for internal calls and trigger fires).
    pub caller: Option<Arc<str>>,
    /// A `stream::<op>` call on a custom stream: the worker function that serves it
    /// (`stream::set(todo)`, …) instead of the store.
    pub delegate: Option<String>,
    /// A call of an HTTP-invoked function: where the request goes.
    pub invocation: Option<Arc<crate::modules::http_functions::Invocation>>,
    /// The call's deadline, for modules that pass the call on (`iii-cluster`).
    pub timeout: std::time::Duration,
}

/// An engine-hosted module finished a [`BuiltinCall`].
pub struct BuiltinDone {
    pub engine_id: Uuid,
    pub outcome: Outcome,
}

/// A trigger of a type the module provides was bound or unbound.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum TriggerBinding {
    Bind {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    },
    Unbind {
        id: String,
    },
}

/// An engine-hosted provider refused a binding.
pub struct TriggerRejected {
    pub trigger_id: String,
    pub error: ErrorBody,
}

/// A trigger provider fires: call `function_id` with `data`; the result is discarded.
pub struct FireTrigger {
    pub function_id: String,
    pub data: Payload,
    pub metadata: Option<Value>,
}

/// Every fire of one event, routed under one acquisition of the registry's lock, in order.
pub struct FireMany(pub Vec<FireTrigger>);
