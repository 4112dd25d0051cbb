//! Unit tests of the wire types and their encoding.

use bytes::Bytes;

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
    let m = msg(r#"{"type":"registerfunction","description":"List all todos","id":"todos::list"}"#);
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
    let e =
        decode(r#"{"type":"invokefunction","invocation_id":"abc","function_id":"f","data":{}}"#)
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
    assert!(matches!(m, Message::Error(ErrorFrame { ref error }) if error.code == "AUTH_ERROR"));
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
