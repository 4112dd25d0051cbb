//! Reading and writing frames. A frame is read twice: once for its `type`, then straight into
//! that frame's struct, with `data` and `result` kept as text (views into the frame when it is
//! decoded with [`decode_shared`]). The two frames that carry payloads are written by hand, the
//! payload copied in verbatim and `_caller_worker_id` spliced into it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

use super::{Action, Code, ErrorBody, InvocationResult, InvokeFunction, Message, Payload};
use crate::payload::push_json_str;

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// `invalid_message` or `unknown_message_type`.
    pub code: Code,
    pub message: String,
    /// For a broken `invokefunction`: its `invocation_id` and `function_id` if they could be read,
    /// so the caller gets an error result instead of waiting for its timeout.
    pub invocation: Option<(String, String)>,
}

/// The outcome of reading one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Message(Message),
    /// A frame type the SDKs send that this engine deliberately ignores.
    Ignored(&'static str),
}

/// Frame types that published SDKs send and upstream v0.22.1 drops without a word.
const IGNORED_TYPES: &[&str] = &[
    "unregistertriggertype",
    "observe",
    "unobserve",
    "observerack",
    "invocationsobserved",
    "localinvocationstats",
];

/// Appends `,"key":<value>` for an optional serialisable member.
fn push_member<T: Serialize>(out: &mut String, key: &str, value: &Option<T>) {
    if let Some(v) = value {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
    }
}

fn push_str_member(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        push_json_str(out, v);
    }
}

fn push_uuid(out: &mut String, key: &str, id: &Uuid) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":\"");
    out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    out.push('"');
}

pub(super) fn encode_invoke(i: &InvokeFunction) -> String {
    let mut out = String::with_capacity(i.data.len() + i.function_id.len() + 160);
    out.push_str("{\"type\":\"invokefunction\"");
    if let Some(id) = &i.invocation_id {
        push_uuid(&mut out, "invocation_id", id);
    }
    push_str_member(&mut out, "function_id", Some(&i.function_id));
    out.push_str(",\"data\":");
    i.data.write_json(&mut out, i.caller.as_deref());
    push_str_member(&mut out, "traceparent", i.traceparent.as_deref());
    push_str_member(&mut out, "baggage", i.baggage.as_deref());
    push_member(&mut out, "action", &i.action);
    push_member(&mut out, "metadata", &i.metadata);
    push_member(&mut out, "timeout_ms", &i.timeout_ms);
    out.push('}');
    out
}

pub(super) fn encode_result(r: &InvocationResult) -> String {
    let len = r.result.as_ref().map_or(0, Payload::len);
    let mut out = String::with_capacity(len + r.function_id.len() + 160);
    out.push_str("{\"type\":\"invocationresult\"");
    push_uuid(&mut out, "invocation_id", &r.invocation_id);
    push_str_member(&mut out, "function_id", Some(&r.function_id));
    if let Some(result) = &r.result {
        out.push_str(",\"result\":");
        result.write_json(&mut out, None);
    }
    push_member(&mut out, "error", &r.error);
    push_str_member(&mut out, "traceparent", r.traceparent.as_deref());
    push_str_member(&mut out, "baggage", r.baggage.as_deref());
    out.push('}');
    out
}

/// `invokefunction` as read off the wire, its `data` borrowed from the frame.
#[derive(Deserialize)]
struct InvokeWire<'a> {
    #[serde(default)]
    invocation_id: Option<Uuid>,
    function_id: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    baggage: Option<String>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `invocationresult` as read off the wire, its `result` borrowed from the frame.
#[derive(Deserialize)]
struct ResultWire<'a> {
    invocation_id: Uuid,
    function_id: String,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    baggage: Option<String>,
}

/// Just the discriminator of a frame; every other member is skipped without being built.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    ty: Option<Value>,
}

/// Reads one text frame (already trimmed and non-empty). The text is read twice: once for its
/// `type`, then straight into that frame's struct, with `data` and `result` kept as text
/// (copied; see [`decode_shared`]).
pub fn decode(text: &str) -> Result<Decoded, DecodeError> {
    decode_shared(text, None)
}

/// [`decode`] for text that lives in `backing` (a received frame): `data` and `result` become
/// views into it instead of copies.
pub fn decode_shared(text: &str, backing: Option<&Bytes>) -> Result<Decoded, DecodeError> {
    if !text.starts_with('{') {
        // (serde would read a struct from an array, so look at the shape first.)
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => invalid("a frame must be a JSON object".to_string()),
            Err(e) => invalid(format!("invalid JSON: {e}")),
        });
    }
    let kind =
        serde_json::from_str::<Kind>(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let ty = match kind.ty {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("\"type\" must be a string".to_string())),
        None => return Err(invalid("missing \"type\"".to_string())),
    };
    if let Some(ignored) = IGNORED_TYPES.iter().find(|t| **t == ty) {
        return Ok(Decoded::Ignored(ignored));
    }
    let msg = match ty.as_str() {
        "registerfunction" => typed(&ty, text).map(Message::RegisterFunction),
        "unregisterfunction" => typed(&ty, text).map(Message::UnregisterFunction),
        "invokefunction" => decode_invoke(text, backing),
        "invocationresult" => typed::<ResultWire>(&ty, text).map(|r| {
            Message::InvocationResult(InvocationResult {
                invocation_id: r.invocation_id,
                function_id: r.function_id,
                result: r.result.map(|raw| Payload::from_raw(raw, backing)),
                error: r.error,
                traceparent: r.traceparent,
                baggage: r.baggage,
            })
        }),
        "registertriggertype" => typed(&ty, text).map(Message::RegisterTriggerType),
        "registertrigger" => typed(&ty, text).map(Message::RegisterTrigger),
        "unregistertrigger" => typed(&ty, text).map(Message::UnregisterTrigger),
        "triggerregistrationresult" => typed(&ty, text).map(Message::TriggerRegistrationResult),
        "registerservice" => typed(&ty, text).map(Message::RegisterService),
        "reattach" => typed(&ty, text).map(Message::Reattach),
        "workerregistered" => typed(&ty, text).map(Message::WorkerRegistered),
        "error" => typed(&ty, text).map(Message::Error),
        "ping" => Ok(Message::Ping),
        "pong" => Ok(Message::Pong),
        other => Err(DecodeError {
            code: Code::UnknownMessageType,
            message: format!("unknown message type \"{}\"", truncate(other, 64)),
            invocation: None,
        }),
    }?;
    Ok(Decoded::Message(msg))
}

fn decode_invoke(text: &str, backing: Option<&Bytes>) -> Result<Message, DecodeError> {
    match serde_json::from_str::<InvokeWire>(text) {
        Ok(w) => Ok(Message::InvokeFunction(InvokeFunction {
            invocation_id: w.invocation_id,
            function_id: w.function_id,
            data: w
                .data
                .map_or_else(Payload::null, |raw| Payload::from_raw(raw, backing)),
            traceparent: w.traceparent,
            baggage: w.baggage,
            action: w.action,
            metadata: w.metadata,
            timeout_ms: w.timeout_ms,
            caller: None,
        })),
        Err(e) => {
            /// What can still be read of a broken call, to answer its caller.
            #[derive(Deserialize)]
            struct Ids {
                invocation_id: Option<Value>,
                function_id: Option<Value>,
            }
            let ids = serde_json::from_str::<Ids>(text).ok();
            let readable_id = ids
                .as_ref()
                .and_then(|i| i.invocation_id.as_ref()?.as_str().map(str::to_string));
            let function_id = ids
                .as_ref()
                .and_then(|i| i.function_id.as_ref()?.as_str().map(str::to_string))
                .unwrap_or_default();
            Err(DecodeError {
                code: Code::InvalidMessage,
                message: format!("invalid invokefunction: {e}"),
                invocation: readable_id.map(|id| (id, function_id)),
            })
        }
    }
}

fn typed<'a, T: Deserialize<'a>>(ty: &str, text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| invalid(format!("invalid {ty}: {e}")))
}

fn invalid(message: String) -> DecodeError {
    DecodeError {
        code: Code::InvalidMessage,
        message,
        invocation: None,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
