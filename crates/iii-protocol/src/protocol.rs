//! Wire types of the iii worker protocol (`PROTOCOL.md` §3) and nothing else.
//!
//! Every frame is a JSON object with a lowercase discriminator in `"type"`. [`Message`] is the
//! typed form of the frames the engine understands, in both directions; [`Message::encode`]
//! writes one, [`decode`] reads one and says precisely what is wrong with a bad one (the
//! `invocation_id` of a broken `invokefunction` is kept so the caller can be answered).
//!
//! Compatibility rules kept here: unknown fields are ignored; optional fields may be absent or
//! `null`; `None` is omitted on output; `result: null` is read as "no result"; a frame type the
//! SDKs send but this engine has no use for (`unregistertriggertype`, the 0.25+ observe family)
//! is recognised and ignored rather than reported as an error.
//!
//! Files: `protocol.rs` (the types), `protocol/codec.rs` (reading and writing frames),
//! `protocol/tests.rs` (frames as the published SDKs send them, round trips, bad frames).

mod codec;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use crate::code::Code;
pub use crate::payload::Payload;
pub use codec::{decode, decode_shared, DecodeError, Decoded};

/// `{code, message, stacktrace?}` — the error carried by an `invocationresult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            stacktrace: None,
        }
    }
}

/// `registerfunction` (worker → engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterFunction {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// HTTP-invoked functions; this engine has no HTTP function provider and refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Value>,
}

/// `unregisterfunction` (worker → engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnregisterFunction {
    pub id: String,
}

/// The `action` of an `invokefunction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    Void,
    Enqueue { queue: String },
}

/// `invokefunction` (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeFunction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<Uuid>,
    pub function_id: String,
    /// Kept as the JSON text it arrived as (absent = `null`); see [`Payload`].
    #[serde(default)]
    pub data: Payload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Engine extension: per-call deadline in milliseconds (upstream SDKs never send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Not on the wire as such: the worker id the engine writes into an object `data` as
    /// `_caller_worker_id` when it encodes the frame for the callee (§4.3).
    #[serde(skip)]
    pub caller: Option<Arc<str>>,
}

/// `invocationresult` (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResult {
    pub invocation_id: Uuid,
    pub function_id: String,
    /// Kept as JSON text; `null` means "no result" and is omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
}

/// `registertriggertype` (worker → engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterTriggerType {
    pub id: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_request_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_request_format: Option<Value>,
}

/// `registertrigger` (worker → engine, and engine → provider worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterTrigger {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `unregistertrigger` (worker → engine, and engine → provider worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnregisterTrigger {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_type: Option<String>,
}

/// `triggerregistrationresult` (provider → engine, engine → registering worker on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRegistrationResult {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// `registerservice` (worker → engine): bookkeeping only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterService {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_service_id: Option<String>,
}

/// `reattach` (worker → engine), the first frame of a reconnect (§2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reattach {
    pub previous_worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reattach_token: Option<String>,
}

/// `workerregistered` (engine → worker), the first frame on every accepted connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistered {
    pub worker_id: Uuid,
    pub reattach_token: Uuid,
}

/// `error` (engine → worker): connection-level error, e.g. `AUTH_ERROR` before a close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub error: ErrorBody,
}

/// One frame of the worker protocol. Always written `protocol::Message` (actix exports a
/// `Message` trait).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    RegisterFunction(RegisterFunction),
    UnregisterFunction(UnregisterFunction),
    InvokeFunction(InvokeFunction),
    InvocationResult(InvocationResult),
    RegisterTriggerType(RegisterTriggerType),
    RegisterTrigger(RegisterTrigger),
    UnregisterTrigger(UnregisterTrigger),
    TriggerRegistrationResult(TriggerRegistrationResult),
    RegisterService(RegisterService),
    Reattach(Reattach),
    WorkerRegistered(WorkerRegistered),
    Error(ErrorFrame),
    Ping,
    Pong,
}

impl Message {
    /// Serialises the frame as JSON text. The two frames that carry payloads are written by
    /// hand, the payload copied in verbatim (and `_caller_worker_id` spliced into it).
    pub fn encode(&self) -> String {
        match self {
            Message::InvokeFunction(i) => codec::encode_invoke(i),
            Message::InvocationResult(r) => codec::encode_result(r),
            // Serialising these types cannot fail: every map key is a string.
            other => serde_json::to_string(other).unwrap_or_else(|e| {
                log::error!("could not encode a frame: {e}");
                String::from("{}")
            }),
        }
    }

    /// About how many bytes this frame takes on the wire: exact for payloads, a fixed
    /// allowance for the rest. Flow control counts this (the same value on both sides).
    pub fn estimated_len(&self) -> usize {
        const FRAME: usize = 160;
        FRAME
            + match self {
                Message::InvokeFunction(i) => i.data.len() + i.function_id.len(),
                Message::InvocationResult(r) => {
                    r.result.as_ref().map_or(0, Payload::len)
                        + r.function_id.len()
                        + r.error.as_ref().map_or(0, |e| {
                            e.message.len() + e.stacktrace.as_ref().map_or(0, String::len)
                        })
                }
                Message::RegisterTrigger(t) => t.id.len() + t.function_id.len() + 256,
                Message::Error(e) => e.error.message.len(),
                _ => 0,
            }
    }

    /// An `invocationresult` carrying an error.
    pub fn error_result(invocation_id: Uuid, function_id: &str, error: ErrorBody) -> Message {
        Message::InvocationResult(InvocationResult {
            invocation_id,
            function_id: function_id.to_string(),
            result: None,
            error: Some(error),
            traceparent: None,
            baggage: None,
        })
    }
}
