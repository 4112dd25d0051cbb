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

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

pub use crate::code::Code;
use crate::payload::push_json_str;
pub use crate::payload::Payload;

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
            Message::InvokeFunction(i) => encode_invoke(i),
            Message::InvocationResult(r) => encode_result(r),
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

fn encode_invoke(i: &InvokeFunction) -> String {
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

fn encode_result(r: &InvocationResult) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(text: &str) -> Message {
        match decode(text) {
            Ok(Decoded::Message(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// Frames exactly as the published SDKs send them (from the recorded transcripts).
    #[test]
    fn decodes_real_sdk_frames() {
        let m =
            msg(r#"{"type":"registerfunction","description":"List all todos","id":"todos::list"}"#);
        assert!(
            matches!(m, Message::RegisterFunction(ref r) if r.id == "todos::list"
            && r.description.as_deref() == Some("List all todos"))
        );

        let m = msg(
            r#"{"type":"registertrigger","function_id":"todos::on-change","config":{"stream_name":"todo","group_id":"todos"},"id":"82076323-563a-4a00-aa78-a5d876ac1fb3","message_type":"registertrigger","trigger_type":"stream"}"#,
        );
        let Message::RegisterTrigger(t) = m else {
            panic!()
        };
        assert_eq!(t.trigger_type, "stream");
        assert_eq!(t.config, json!({"stream_name":"todo","group_id":"todos"}));

        let m = msg(
            r#"{"type":"invokefunction","function_id":"engine::workers::register","data":{"runtime":"node","version":"0.22.1","name":"w","pid":8603,"isolation":null},"action":{"type":"void"}}"#,
        );
        let Message::InvokeFunction(i) = m else {
            panic!()
        };
        assert_eq!(i.invocation_id, None);
        assert_eq!(i.action, Some(Action::Void));
        assert_eq!(i.data.to_value()["pid"], json!(8603));

        // Python 0.25 puts "type" last and adds fields the engine ignores.
        let m = msg(
            r#"{"function_id":"py::echo","data":{"hello":"from py caller"},"invocation_id":"144de893-79cd-4ba8-b8d6-3a1cfe453c09","namespace":null,"type":"invokefunction"}"#,
        );
        let Message::InvokeFunction(i) = m else {
            panic!()
        };
        assert_eq!(
            i.invocation_id.unwrap().to_string(),
            "144de893-79cd-4ba8-b8d6-3a1cfe453c09"
        );

        let m = msg(
            r#"{"invocation_id":"144de893-79cd-4ba8-b8d6-3a1cfe453c09","function_id":"py::echo","result":{"lang":"python"},"traceparent":"00-eb42-b99e-03","type":"invocationresult"}"#,
        );
        let Message::InvocationResult(r) = m else {
            panic!()
        };
        assert_eq!(
            r.result.map(|p| p.to_value()),
            Some(json!({"lang":"python"}))
        );

        let m = msg(
            r#"{"type":"invocationresult","invocation_id":"223850e8-3190-4d25-b35f-13cd72416bf3","function_id":"x","error":{"code":"invocation_failed","message":"boom","stacktrace":"Error: boom"}}"#,
        );
        let Message::InvocationResult(r) = m else {
            panic!()
        };
        assert_eq!(r.error.unwrap().code, "invocation_failed");

        let m = msg(
            r#"{"type":"reattach","previous_worker_id":"71d1352a-84c8-4961-8a99-35c4d5459276","reattach_token":"b42eded4-f182-45e7-a002-4e96cf241112"}"#,
        );
        assert!(matches!(m, Message::Reattach(_)));
        assert_eq!(msg(r#"{"type":"ping"}"#), Message::Ping);
    }

    #[test]
    fn null_result_is_no_result_and_is_omitted() {
        let m = msg(
            r#"{"type":"invocationresult","invocation_id":"223850e8-3190-4d25-b35f-13cd72416bf3","function_id":"f","result":null}"#,
        );
        let Message::InvocationResult(ref r) = m else {
            panic!()
        };
        assert_eq!(r.result, None);
        assert_eq!(
            m.encode(),
            r#"{"type":"invocationresult","invocation_id":"223850e8-3190-4d25-b35f-13cd72416bf3","function_id":"f"}"#
        );
    }

    #[test]
    fn encodes_engine_frames_like_upstream() {
        let id = Uuid::parse_str("71d1352a-84c8-4961-8a99-35c4d5459276").unwrap();
        let m = Message::WorkerRegistered(WorkerRegistered {
            worker_id: id,
            reattach_token: id,
        });
        assert_eq!(
            m.encode(),
            r#"{"type":"workerregistered","worker_id":"71d1352a-84c8-4961-8a99-35c4d5459276","reattach_token":"71d1352a-84c8-4961-8a99-35c4d5459276"}"#
        );
        let m = Message::error_result(
            id,
            "todos::nope",
            ErrorBody::new("function_not_found", "Function todos::nope not found"),
        );
        let v: Value = serde_json::from_str(&m.encode()).unwrap();
        assert_eq!(
            v,
            json!({"type":"invocationresult","invocation_id":id.to_string(),"function_id":"todos::nope",
                   "error":{"code":"function_not_found","message":"Function todos::nope not found"}})
        );
        assert_eq!(Message::Pong.encode(), r#"{"type":"pong"}"#);
        let e = Message::Error(ErrorFrame {
            error: ErrorBody::new("AUTH_ERROR", "nope"),
        });
        assert_eq!(
            e.encode(),
            r#"{"type":"error","error":{"code":"AUTH_ERROR","message":"nope"}}"#
        );
    }

    #[test]
    fn round_trips_every_variant() {
        let id = Uuid::new_v4();
        let frames = vec![
            Message::InvokeFunction(InvokeFunction {
                invocation_id: Some(id),
                function_id: "a::b".into(),
                data: json!({"x":[1,2,{"y":null}]}).into(),
                traceparent: Some("00-1-2-01".into()),
                baggage: None,
                action: Some(Action::Enqueue { queue: "q".into() }),
                metadata: Some(json!({"m":1})),
                timeout_ms: Some(500),
                caller: None,
            }),
            Message::InvocationResult(InvocationResult {
                invocation_id: id,
                function_id: "a::\"b\"".into(),
                result: Some(json!([1, "two", {"3": null}]).into()),
                error: Some(ErrorBody::new("c", "m\n")),
                traceparent: None,
                baggage: Some("k=v".into()),
            }),
            Message::RegisterTrigger(RegisterTrigger {
                id: "t".into(),
                trigger_type: "stream".into(),
                function_id: "f".into(),
                config: json!({"stream_name":"todo"}),
                metadata: None,
            }),
            Message::UnregisterTrigger(UnregisterTrigger {
                id: "t".into(),
                trigger_type: Some("stream".into()),
            }),
            Message::TriggerRegistrationResult(TriggerRegistrationResult {
                id: "t".into(),
                trigger_type: "x".into(),
                function_id: "f".into(),
                error: Some(ErrorBody::new("trigger_registration_failed", "bad")),
            }),
            Message::RegisterTriggerType(RegisterTriggerType {
                id: "webhook".into(),
                description: "d".into(),
                trigger_request_format: None,
                call_request_format: None,
            }),
            Message::UnregisterFunction(UnregisterFunction { id: "f".into() }),
            Message::Pong,
        ];
        for f in frames {
            assert_eq!(msg(&f.encode()), f);
        }
    }

    #[test]
    fn hand_written_frames_match_serde_and_carry_the_caller() {
        let id = Uuid::parse_str("71d1352a-84c8-4961-8a99-35c4d5459276").unwrap();
        let inv = InvokeFunction {
            invocation_id: Some(id),
            function_id: "todos::list".into(),
            data: json!({"a": [1, {"b": "c"}]}).into(),
            traceparent: Some("00-1-2-01".into()),
            baggage: None,
            action: Some(Action::Void),
            metadata: None,
            timeout_ms: Some(5),
            caller: None,
        };
        let text = Message::InvokeFunction(inv.clone()).encode();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type": "invokefunction", "invocation_id": id.to_string(),
                   "function_id": "todos::list", "data": {"a": [1, {"b": "c"}]},
                   "traceparent": "00-1-2-01", "action": {"type": "void"}, "timeout_ms": 5})
        );
        let with = InvokeFunction {
            caller: Some(Arc::from("w-1")),
            ..inv
        };
        let v: Value = serde_json::from_str(&Message::InvokeFunction(with).encode()).unwrap();
        assert_eq!(
            v["data"],
            json!({"a": [1, {"b": "c"}], "_caller_worker_id": "w-1"})
        );
    }

    #[test]
    fn payloads_decoded_from_a_shared_frame_are_views() {
        let frame = Bytes::from(
            r#"{"type":"invocationresult","invocation_id":"223850e8-3190-4d25-b35f-13cd72416bf3","function_id":"f","result":{"big":[1,2,3]}}"#,
        );
        let text = std::str::from_utf8(&frame).unwrap();
        let Ok(Decoded::Message(Message::InvocationResult(r))) = decode_shared(text, Some(&frame))
        else {
            panic!()
        };
        let result = r.result.unwrap();
        assert_eq!(result.as_str(), r#"{"big":[1,2,3]}"#);
        let start = frame.len() - result.len() - 1;
        assert_eq!(result.as_bytes().as_ptr(), frame[start..].as_ptr());
    }

    #[test]
    fn bad_frames_are_described() {
        let e = decode("{nope").unwrap_err();
        assert_eq!(e.code, Code::InvalidMessage);
        assert!(e.message.starts_with("invalid JSON"));
        assert_eq!(
            decode("[1,2]").unwrap_err().message,
            "a frame must be a JSON object"
        );
        let e = decode(r#"{"type":"frobnicate"}"#).unwrap_err();
        assert_eq!(e.code, Code::UnknownMessageType);
        assert!(e.message.contains("frobnicate"));
        // A non-UUID invocation id: the id is still reported so the caller can be answered.
        let e = decode(
            r#"{"type":"invokefunction","invocation_id":"abc","function_id":"f","data":{}}"#,
        )
        .unwrap_err();
        assert_eq!(e.invocation, Some(("abc".to_string(), "f".to_string())));
        let e = decode(r#"{"type":"registertriggertype","id":"x"}"#).unwrap_err();
        assert!(e.message.contains("description"), "{}", e.message);
        // Deep nesting fails cleanly at serde_json's recursion limit.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(decode(&deep).unwrap_err().code, Code::InvalidMessage);
    }

    #[test]
    fn sdk_only_frames_are_ignored() {
        assert_eq!(
            decode(r#"{"type":"unregistertriggertype","id":"x","description":"d"}"#),
            Ok(Decoded::Ignored("unregistertriggertype"))
        );
        // Engine-only frames decode (clients need them); the registry ignores them from workers.
        let m = msg(
            r#"{"type":"workerregistered","worker_id":"71d1352a-84c8-4961-8a99-35c4d5459276","reattach_token":"b42eded4-f182-45e7-a002-4e96cf241112"}"#,
        );
        assert!(matches!(m, Message::WorkerRegistered(_)));
        let m = msg(r#"{"type":"error","error":{"code":"AUTH_ERROR","message":"no"}}"#);
        assert!(
            matches!(m, Message::Error(ErrorFrame { ref error }) if error.code == "AUTH_ERROR")
        );
    }

    #[test]
    fn missing_data_defaults_to_null() {
        let m = msg(
            r#"{"type":"invokefunction","invocation_id":"223850e8-3190-4d25-b35f-13cd72416bf3","function_id":"f"}"#,
        );
        let Message::InvokeFunction(i) = m else {
            panic!()
        };
        assert!(i.data.is_null());
    }
}
