//! Calls: routing, answers, waiters, deadlines, disconnects, modules, flow accounting.

use super::*;
use crate::flow::{Budget, Limits};

/// A caller and a callee serving `svc::echo`, both trusted.
fn pair(h: &mut H) -> (Uuid, Uuid) {
    let l = trusted();
    let callee = h.live(&l);
    h.register(callee, "svc::echo");
    let caller = h.live(&l);
    (caller, callee)
}

#[test]
fn a_call_goes_out_under_a_fresh_id_and_comes_back_under_the_callers() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = h.call(caller, "svc::echo", json!({"x": 1}));
    let (engine_id, data) = h.invoked(callee);
    assert_ne!(
        engine_id,
        id.to_string(),
        "the callee never sees the caller's id"
    );
    assert_eq!(data["x"], 1);
    h.answer(callee, &engine_id, json!({"ok": true}));
    let r = h.result(caller, id);
    assert_eq!(r["result"], json!({"ok": true}));
    assert_eq!(r["function_id"], "svc::echo");
    assert!(h.r.pending.is_empty() && h.r.deadlines.is_empty());
}

#[test]
fn the_callers_worker_id_is_written_into_object_data() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = Uuid::new_v4();
    let text = json!({"type": "invokefunction", "invocation_id": id.to_string(),
                      "function_id": "svc::echo", "data": {"a": 1}})
    .to_string();
    let Ok(Decoded::Message(protocol::Message::InvokeFunction(mut inv))) = protocol::decode(&text)
    else {
        panic!()
    };
    inv.caller = Some(Arc::from(caller.to_string()));
    h.event(Event::Frame {
        worker_id: caller,
        msg: protocol::Message::InvokeFunction(inv),
        bytes: text.len(),
    });
    let (_, data) = h.invoked(callee);
    assert_eq!(
        data,
        json!({"a": 1, "_caller_worker_id": caller.to_string()})
    );
}

#[test]
fn an_unknown_function_fails_at_once() {
    let mut h = H::new();
    let w = h.live(&trusted());
    let id = h.call(w, "nope::fn", json!({}));
    let r = h.result(w, id);
    assert_eq!(r["error"]["code"], "function_not_found");
    assert_eq!(r["error"]["message"], "Function nope::fn not found");
}

#[test]
fn only_the_callee_may_answer() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let thief = h.live(&trusted());
    let id = h.call(caller, "svc::echo", json!({}));
    let (engine_id, _) = h.invoked(callee);
    h.answer(thief, &engine_id, json!("forged"));
    assert!(h.frames(caller).is_empty(), "the forged answer is ignored");
    h.answer(callee, &engine_id, json!("real"));
    assert_eq!(h.result(caller, id)["result"], "real");
}

#[test]
fn a_duplicate_invocation_id_is_refused_and_the_first_call_goes_on() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = Uuid::new_v4();
    let frame = json!({"type": "invokefunction", "invocation_id": id.to_string(),
                       "function_id": "svc::echo", "data": {}});
    h.frame(caller, frame.clone());
    h.frame(caller, frame);
    assert_eq!(
        h.result(caller, id)["error"]["code"],
        "duplicate_invocation_id"
    );
    let (engine_id, _) = h.invoked(callee);
    h.answer(callee, &engine_id, json!(1));
    assert_eq!(h.result(caller, id)["result"], 1);
}

#[test]
fn a_void_call_is_served_and_answered_to_nobody() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    h.frame(
        caller,
        json!({"type": "invokefunction", "function_id": "svc::echo", "data": {},
               "action": {"type": "void"}}),
    );
    let (engine_id, _) = h.invoked(callee);
    h.answer(callee, &engine_id, json!(1));
    assert!(h.frames(caller).is_empty());
    assert!(h.r.pending.is_empty());
}

#[test]
fn a_call_nobody_answers_times_out_and_a_late_answer_is_dropped() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = h.call(caller, "svc::echo", json!({}));
    let (engine_id, _) = h.invoked(callee);
    h.tick_at(Instant::now());
    assert!(h.frames(caller).is_empty(), "not yet");
    h.tick_at(much_later());
    let r = h.result(caller, id);
    assert_eq!(r["error"]["code"], "invocation_timeout");
    assert!(r["error"]["message"].as_str().unwrap().contains("30000 ms"));
    h.answer(callee, &engine_id, json!("late"));
    assert!(h.frames(caller).is_empty());
}

#[test]
fn a_calls_own_timeout_is_honoured() {
    let mut h = H::new();
    let (caller, _) = pair(&mut h);
    let id = Uuid::new_v4();
    h.frame(
        caller,
        json!({"type": "invokefunction", "invocation_id": id.to_string(),
               "function_id": "svc::echo", "data": {}, "timeout_ms": 200}),
    );
    h.tick_at(Instant::now() + Duration::from_millis(400));
    let r = h.result(caller, id);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("200 ms"),
        "{r}"
    );
}

#[test]
fn a_callee_that_leaves_stops_its_calls() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let a = h.call(caller, "svc::echo", json!({}));
    let b = h.call(caller, "svc::echo", json!({}));
    h.disconnect(callee);
    for id in [a, b] {
        assert_eq!(h.result(caller, id)["error"]["code"], "invocation_stopped");
    }
    assert!(!h.has_function("svc::echo"));
    let c = h.call(caller, "svc::echo", json!({}));
    assert_eq!(h.result(caller, c)["error"]["code"], "function_not_found");
}

#[test]
fn a_caller_that_leaves_gets_nothing_and_leaves_nothing() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    h.call(caller, "svc::echo", json!({}));
    let (engine_id, _) = h.invoked(callee);
    h.disconnect(caller);
    h.answer(callee, &engine_id, json!(1));
    assert!(h.frames(caller).is_empty());
    assert!(h.r.pending.is_empty());
}

#[test]
fn errors_are_forwarded_and_null_results_omitted() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = h.call(caller, "svc::echo", json!({}));
    let (engine_id, _) = h.invoked(callee);
    h.fail(callee, &engine_id, "invocation_failed");
    assert_eq!(h.result(caller, id)["error"]["code"], "invocation_failed");
    let id = h.call(caller, "svc::echo", json!({}));
    let (engine_id, _) = h.invoked(callee);
    h.answer(callee, &engine_id, Value::Null);
    let r = h.result(caller, id);
    assert!(r.get("result").is_none() && r.get("error").is_none(), "{r}");
}

#[test]
fn module_functions_are_handed_to_their_module() {
    let mut h = H::new();
    h.module("iii-test", &["mod::fn"], &[]);
    let w = h.live(&trusted());
    let id = h.call(w, "mod::fn", json!({"q": 1}));
    let calls = h.module_calls();
    assert_eq!(calls.len(), 1);
    let (module, engine_id, function_id) = calls[0].clone();
    assert_eq!((module, function_id.as_str()), (0, "mod::fn"));
    h.event(Event::ModuleDone {
        engine_id,
        outcome: Ok(Some(payload(json!([1, 2])))),
    });
    assert_eq!(h.result(w, id)["result"], json!([1, 2]));
}

#[test]
fn a_modules_own_call_is_answered_with_a_reply() {
    let mut h = H::new();
    let l = trusted();
    let callee = h.live(&l);
    h.register(callee, "svc::echo");
    let mut req = super::super::CallRequest::new("svc::echo", json!({"from": "module"}));
    req.timeout = Duration::from_secs(1);
    h.event(Event::Call { token: 7, req });
    let (engine_id, data) = h.invoked(callee);
    assert_eq!(data, json!({"from": "module"}));
    h.answer(callee, &engine_id, json!("done"));
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 7);
    assert_eq!(
        replies[0].1.clone().unwrap().unwrap().to_value(),
        json!("done")
    );
    let req = super::super::CallRequest::new("missing::fn", json!({}));
    h.event(Event::Call { token: 8, req });
    let replies = h.replies();
    assert_eq!(replies[0].1.clone().unwrap_err().code, "function_not_found");
}

#[test]
fn a_fire_calls_the_bound_function_and_nobody_waits() {
    let mut h = H::new();
    let w = h.live(&trusted());
    h.register(w, "on::event");
    h.event(Event::Fire {
        function_id: "on::event".into(),
        data: payload(json!({"e": 1})),
        metadata: Some(json!({"m": true})),
    });
    let f = h.frames(w);
    assert_eq!(f[0]["data"], json!({"e": 1}));
    assert_eq!(f[0]["metadata"], json!({"m": true}));
    let engine_id = f[0]["invocation_id"].as_str().unwrap().to_string();
    h.answer(w, &engine_id, json!(1));
    assert!(h.take().is_empty());
}

#[test]
fn calls_in_flight_are_counted_against_the_caller() {
    let mut h = H::new();
    let l = trusted();
    let callee = h.live(&l);
    h.register(callee, "svc::echo");
    let limits = Limits {
        queued_frames: 100,
        queued_bytes: 1 << 20,
        inflight_calls: 2,
        outbound_bytes: 1 << 20,
    };
    let flow = Flow::new(limits, Budget::new(1 << 30));
    let caller = h.connect_with(&l, PeerInfo::default(), flow.clone());
    h.call(caller, "svc::echo", json!({}));
    h.frame(
        caller,
        json!({"type": "invokefunction", "function_id": "svc::echo", "data": {},
               "action": {"type": "void"}}),
    );
    assert_eq!(flow.inflight(), 2, "void calls count too");
    let served: Vec<String> = h
        .frames(callee)
        .iter()
        .map(|f| f["invocation_id"].as_str().unwrap().to_string())
        .collect();
    for engine_id in served {
        h.answer(callee, &engine_id, json!(1));
    }
    assert_eq!(flow.inflight(), 0);
    let id = h.call(caller, "nope::fn", json!({}));
    h.result(caller, id);
    assert_eq!(flow.inflight(), 0, "an answer given at once holds no slot");
}

#[test]
fn handled_frames_give_their_bytes_back() {
    let mut h = H::new();
    let flow = Flow::unlimited();
    let w = h.connect_with(&trusted(), PeerInfo::default(), flow.clone());
    flow.frame_in(100);
    h.event(Event::Frame {
        worker_id: w,
        msg: protocol::Message::Pong,
        bytes: 100,
    });
    assert_eq!(flow.queued_frames(), 0);
}

#[test]
fn enqueue_without_a_queue_fails_closed() {
    let mut h = H::new();
    let (caller, callee) = pair(&mut h);
    let id = Uuid::new_v4();
    h.frame(
        caller,
        json!({"type": "invokefunction", "invocation_id": id.to_string(), "function_id": "svc::echo",
               "data": {}, "action": {"type": "enqueue", "queue": "jobs"}}),
    );
    assert_eq!(h.result(caller, id)["error"]["code"], "enqueue_error");
    assert!(h.frames(callee).is_empty());
}

#[test]
fn middleware_answers_for_the_target_and_engine_calls_skip_it() {
    let mut h = H::new();
    let mw = h.live(&trusted());
    h.register(mw, "mw::gate");
    let l = public_with(&["api::*"], None, |l| {
        l.middleware_function_id = Some("mw::gate".into())
    });
    let user = h.live(&l);
    let id = h.call(user, "api::thing", json!({"k": "v"}));
    let (engine_id, data) = h.invoked(mw);
    assert_eq!(data["function_id"], "api::thing");
    assert_eq!(data["payload"], json!({"k": "v"}));
    assert!(data["context"].is_object());
    h.answer(mw, &engine_id, json!("from middleware"));
    assert_eq!(h.result(user, id)["result"], "from middleware");
    let id = h.call(user, "engine::workers::register", json!({"name": "tab"}));
    assert_eq!(h.result(user, id)["result"], json!({"success": true}));
    assert!(h.frames(mw).is_empty());
}
