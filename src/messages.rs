//! The messages between the engine's actors, defined in one place so that no actor's file
//! imports another's: sockets and modules talk to the registry, the registry talks back.
//!
//! | message | from → to |
//! |---|---|
//! | [`Connect`], [`FromWorker`], [`Disconnect`] | worker socket → registry |
//! | [`ToSession`] | registry → worker socket |
//! | [`RegisterBuiltins`] | module → registry, once at start |
//! | [`BuiltinCall`] → [`BuiltinDone`] | registry → module → registry (a call of a module's function) |
//! | [`TriggerBinding`] → [`TriggerRejected`] | registry → module → registry (a binding of a module's trigger type) |
//! | [`FireTrigger`] | module → registry (call a bound function, nobody waits) |
//! | [`Call`] | module → registry (a call whose outcome the module awaits) |

use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::config::ListenerConfig;
use crate::flow::Flow;
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody};
use crate::router::{CallRequest, Outcome, PeerInfo};

/// A new connection on a worker listener.
#[derive(Message)]
#[rtype(result = "()")]
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
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromWorker {
    pub worker_id: Uuid,
    pub msg: protocol::Message,
    /// The frame's size, as counted by the connection's flow control.
    pub bytes: usize,
}

/// The connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
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

/// An internal call (no caller connection); resolves with the function's result.
#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct Call(pub CallRequest);

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
#[derive(Message)]
#[rtype(result = "()")]
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
}

/// An engine-hosted module finished a [`BuiltinCall`].
#[derive(Message)]
#[rtype(result = "()")]
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
#[derive(Message)]
#[rtype(result = "()")]
pub struct TriggerRejected {
    pub trigger_id: String,
    pub error: ErrorBody,
}

/// A trigger provider fires: call `function_id` with `data`; the result is discarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FireTrigger {
    pub function_id: String,
    pub data: Payload,
    pub metadata: Option<Value>,
}
