//! Every RBAC escalation attempt of `RELIABILITY.md` §4.4 (R1–R20) against a public listener,
//! with its expected outcome. A trusted Rust worker serves the auth function (its answer
//! depends on the `mode` query parameter of the connecting socket) and the `api::*` functions;
//! attackers connect to the public listener with our client or raw frames (see
//! `common/attack.rs`). More attacks, found later, are in `rbac_holes_e2e.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::attack::{error_frame, forbidden, public, public_url, trusted, CONFIG, T};
use common::{EngineProc, RawEvent, RawWs};
use serde_json::json;

#[actix::test]
async fn r1_r2_r3_calls_outside_the_expose_list() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    let c = public(&engine, "prefix").await;
    assert_eq!(
        c.trigger("api::echo", json!({"x": 1})).await.unwrap()["echo"]["x"],
        1
    );
    // R1: named, with the config key to change.
    let msg = forbidden(&c, "internal::wipe").await;
    assert_eq!(
        msg,
        "function 'internal::wipe' not allowed (add to rbac.expose_functions)"
    );
    // R2: stream and engine functions are not exposed.
    for id in [
        "stream::set",
        "stream::get",
        "state::set",
        "engine::functions::list",
        "engine::workers::list",
        "engine::registered-triggers::list",
        "engine::register_trigger",
        "engine::unregister_trigger",
    ] {
        forbidden(&c, id).await;
    }
    // R3: the infrastructure allow-list passes RBAC: the call reaches the log function, which
    // answers for its input, not RBAC.
    assert!(c
        .trigger("engine::workers::register", json!({"name": "x"}))
        .await
        .is_ok());
    let err = c.trigger("engine::log::info", json!({})).await.unwrap_err();
    assert_eq!(err.code, "deserialization_error", "{err:?}");
    c.trigger(
        "engine::log::info",
        json!({"message": "hello from a public session"}),
    )
    .await
    .unwrap();
    assert!(
        engine.log().contains("denied by rule NotExposed"),
        "denials are logged with the rule"
    );
}

#[actix::test]
async fn r4_forbidden_beats_allowed_and_infrastructure() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    let c = public(&engine, "lists").await;
    // allowed_functions opens a function the listener does not expose.
    assert!(c
        .trigger(
            "stream::get",
            json!({"stream_name": "s", "group_id": "g", "item_id": "i"})
        )
        .await
        .is_ok());
    for id in ["api::both", "engine::workers::register"] {
        let msg = forbidden(&c, id).await;
        assert!(
            msg.ends_with("(remove from rbac.forbidden_functions)"),
            "{msg}"
        );
    }
}

#[actix::test]
async fn r5_r6_registrations_cannot_shadow_anyone() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    // With a prefix: the squatter's api::login lands under its own prefix.
    let squatter = public(&engine, "prefix").await;
    squatter.register_function("api::login", |_| async { Ok(json!({"token": "stolen"})) });
    squatter.register_function("stream::set(orders)", |_| async { Ok(json!("hijacked")) });
    let victim = public(&engine, "prefix").await;
    common::barrier(&squatter).await;
    assert_eq!(
        victim.trigger("api::login", json!({})).await.unwrap(),
        json!({"token": "real"})
    );
    assert_eq!(
        t.client.trigger("api::login", json!({})).await.unwrap(),
        json!({"token": "real"})
    );

    // Without a prefix: taking over a trusted id or an engine id is refused with an error frame.
    let mut raw = RawWs::connect(&public_url(&engine, "noprefix")).await;
    raw.text(r#"{"type":"registerfunction","id":"api::login"}"#)
        .await;
    let e = error_frame(&mut raw).await;
    assert_eq!(e["code"], "FORBIDDEN");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("another worker owns this id"),
        "{e}"
    );
    raw.text(r#"{"type":"registerfunction","id":"engine::workers::list"}"#)
        .await;
    let e = error_frame(&mut raw).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the engine provides this function"),
        "{e}"
    );
    assert_eq!(
        t.client.trigger("api::login", json!({})).await.unwrap(),
        json!({"token": "real"})
    );

    // R6: a session cannot reach into another's namespace: A's "s_B::x" is A's own function.
    let b = public(&engine, "fixed").await;
    b.register_function("x", |_| async { Ok(json!("from B")) });
    let a = public(&engine, "prefix").await;
    a.register_function("fixed-prefix::x", |_| async { Ok(json!("from A")) });
    common::barrier(&a).await;
    common::barrier(&b).await;
    assert_eq!(
        t.client
            .trigger("fixed-prefix::x", json!({}))
            .await
            .unwrap(),
        json!("from B")
    );
    // Reserved, malformed and duplicate prefixes refuse the connection.
    for mode in ["reserved", "malformed", "fixed"] {
        let mut ws = RawWs::connect(&public_url(&engine, mode)).await;
        let e = error_frame(&mut ws).await;
        assert_eq!(e["code"], "AUTH_ERROR", "{mode}: {e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("function_registration_prefix"),
            "{e}"
        );
    }
}

#[actix::test]
async fn r7_r8_r14_trigger_rules() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let mut raw = RawWs::connect(&public_url(&engine, "noprefix")).await;
    // R7: a type outside allowed_trigger_types.
    raw.text(r#"{"type":"registertrigger","id":"t1","trigger_type":"engine::workers-available","function_id":"api::echo","config":{}}"#).await;
    let e = error_frame(&mut raw).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("allowed_trigger_types"),
        "{e}"
    );
    // R8: a stream binding whose target the session may not call.
    raw.text(r#"{"type":"registertrigger","id":"t2","trigger_type":"stream","function_id":"internal::wipe","config":{"stream_name":"todo"}}"#).await;
    let e = error_frame(&mut raw).await;
    assert!(
        e["message"].as_str().unwrap().contains("internal::wipe"),
        "{e}"
    );
    // R14: trigger types need allow_trigger_type_registration.
    raw.text(r#"{"type":"registertriggertype","id":"cron","description":"cron"}"#)
        .await;
    let e = error_frame(&mut raw).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("allow_trigger_type_registration"),
        "{e}"
    );
    t.client
        .trigger(
            "stream::set",
            json!({"stream_name": "todo", "group_id": "g", "item_id": "i", "data": 1}),
        )
        .await
        .unwrap();
    // Any fire would have been dispatched before this round trip returns; give it time to run.
    common::barrier(&t.client).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        t.wipes.load(Ordering::SeqCst),
        0,
        "the engine never called internal::wipe"
    );
    let bindings = t
        .client
        .trigger("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(bindings["registered_triggers"], json!([]));
}

#[actix::test]
async fn r9_cannot_unregister_what_others_own() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let victim = public(&engine, "prefix").await;
    victim.register_function("ui::on-change", move |_| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            Ok(json!({}))
        }
    });
    let binding =
        victim.register_trigger("stream", "ui::on-change", json!({"stream_name": "todo"}));
    let mut attacker = RawWs::connect(&public_url(&engine, "noprefix")).await;
    common::barrier(&victim).await;
    attacker
        .text(
            json!({"type": "unregistertrigger", "id": binding.id(), "trigger_type": "stream"})
                .to_string(),
        )
        .await;
    let e = error_frame(&mut attacker).await;
    assert!(
        e["message"].as_str().unwrap().contains("not its trigger"),
        "{e}"
    );
    attacker
        .text(r#"{"type":"unregisterfunction","id":"api::login"}"#)
        .await;
    attacker.barrier().await;
    t.client
        .trigger(
            "stream::set",
            json!({"stream_name": "todo", "group_id": "g", "item_id": "i", "data": 1}),
        )
        .await
        .unwrap();
    assert!(common::eventually(T, || seen.load(Ordering::SeqCst) == 1).await);
    assert_eq!(
        t.client.trigger("api::login", json!({})).await.unwrap(),
        json!({"token": "real"})
    );
}

#[actix::test]
async fn r10_r11_r13_invocation_ids_and_caller_identity() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    // A raw trusted callee, so the test can see the engine's id for the call.
    let mut callee = RawWs::connect(&engine.url(0)).await;
    callee
        .text(r#"{"type":"registerfunction","id":"api::slow"}"#)
        .await;
    callee.barrier().await;
    let mut caller = RawWs::connect(&public_url(&engine, "prefix")).await;
    let id = "7a1b5c2d-1111-4222-8333-944455566677";
    let call = json!({"type": "invokefunction", "invocation_id": id, "function_id": "api::slow",
                      "data": {"_caller_worker_id": "someone-else"}});
    caller.text(call.to_string()).await;
    let got = callee.next_json(T).await;
    assert_eq!(got["type"], "invokefunction");
    let engine_id = got["invocation_id"].as_str().unwrap().to_string();
    assert_ne!(engine_id, id, "the callee leg uses the engine's own id");
    // R13: the engine overwrote the spoofed caller id with the real one.
    assert_ne!(got["data"]["_caller_worker_id"], "someone-else");
    // R11: the same id again while in flight is refused; the original is undisturbed.
    caller.text(call.to_string()).await;
    let dup = caller.next_json(T).await;
    assert_eq!(dup["error"]["code"], "duplicate_invocation_id");
    // R10: a third party answering the engine's id changes nothing.
    let mut spoofer = RawWs::connect(&public_url(&engine, "prefix")).await;
    let fake = json!({"type": "invocationresult", "invocation_id": engine_id, "function_id": "api::slow", "result": "spoofed"});
    spoofer.text(fake.to_string()).await;
    spoofer.barrier().await;
    let real = json!({"type": "invocationresult", "invocation_id": engine_id, "function_id": "api::slow", "result": "real"});
    callee.text(real.to_string()).await;
    let answer = caller.next_json(T).await;
    assert_eq!(answer["invocation_id"], id);
    assert_eq!(answer["result"], "real");
    assert!(
        engine.log().contains("it was not sent to this worker"),
        "{}",
        engine.log()
    );
}

#[actix::test]
async fn r16_bad_auth_answers_reject_the_connection_in_time() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    for (mode, needle) in [
        ("throw", "no such user"),
        ("junk", "must return an object"),
        ("nothing", "returned no result"),
        ("hang", "did not answer in time"),
    ] {
        let started = Instant::now();
        let mut ws = RawWs::connect(&public_url(&engine, mode)).await;
        let e = error_frame(&mut ws).await;
        assert_eq!(e["code"], "AUTH_ERROR", "{mode}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{mode}: {e}"
        );
        assert!(
            matches!(
                ws.next(T).await,
                Some(RawEvent::Close(_)) | Some(RawEvent::Ended)
            ),
            "{mode}: closed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
    // Unknown privilege fields are ignored: they widen nothing.
    let c = public(&engine, "widen").await;
    forbidden(&c, "internal::wipe").await;
}

#[actix::test]
async fn r17_discovery_shows_only_what_the_session_may_call() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    let c = public(&engine, "discovery").await;
    let list = c
        .trigger("engine::functions::list", json!({"include_internal": true}))
        .await
        .unwrap();
    let ids: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"api::echo") && ids.contains(&"public::tagged"),
        "{ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|i| *i == "internal::wipe" || *i == "auth::fn" || i.starts_with("stream::")),
        "{ids:?}"
    );
    for hidden in ["internal::wipe", "internal::does-not-exist"] {
        let err = c
            .trigger("engine::functions::info", json!({"function_id": hidden}))
            .await
            .unwrap_err();
        assert_eq!(err.code, "FORBIDDEN", "no existence oracle for {hidden}");
    }
    let info = c
        .trigger(
            "engine::functions::info",
            json!({"function_id": "api::echo"}),
        )
        .await
        .unwrap();
    assert_eq!(info["function_id"], "api::echo");
}

#[actix::test]
async fn r18_metadata_from_public_sessions_exposes_nothing() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    // Trusted metadata counts: public::tagged is exposed by {metadata: {public: true}}.
    let c = public(&engine, "prefix").await;
    assert_eq!(
        c.trigger("public::tagged", json!({})).await.unwrap(),
        json!("trusted and tagged")
    );
    // A public session tagging its own function public does not expose it to anyone.
    let mut raw = RawWs::connect(&public_url(&engine, "noprefix")).await;
    raw.text(r#"{"type":"registerfunction","id":"evil::open","metadata":{"public":true}}"#)
        .await;
    raw.barrier().await;
    // It is registered (the trusted side sees it), yet nobody on the public port may call it.
    let all = t
        .client
        .trigger("engine::functions::list", json!({}))
        .await
        .unwrap();
    assert!(
        all["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function_id"] == "evil::open"),
        "{all}"
    );
    forbidden(&c, "evil::open").await;
}

#[actix::test]
async fn r19_unknown_paths_are_404() {
    let engine = EngineProc::start(CONFIG);
    let http = engine.url(1).replace("ws://", "http://");
    let res = awc::Client::new()
        .get(format!("{http}/ws/channels/abc?key=wrong&dir=read"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[actix::test]
async fn public_sessions_each_get_their_own_events() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let c = public(&engine, "prefix").await;
        let seen = common::recorder(&c, "ui::on-todo-change");
        c.register_trigger(
            "stream",
            "ui::on-todo-change",
            json!({"stream_name": "todo", "group_id": "todos"}),
        );
        tabs.push((c, seen));
    }
    for (c, _) in &tabs {
        common::barrier(c).await;
    }
    t.client
        .trigger("stream::set", json!({"stream_name": "todo", "group_id": "todos", "item_id": "a", "data": {"id": "a"}}))
        .await
        .unwrap();
    for (_, seen) in &tabs {
        assert!(common::eventually(T, || seen.lock().unwrap().len() == 1).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, seen) in &tabs {
        let v = seen.lock().unwrap();
        assert_eq!(v.len(), 1, "exactly once per tab");
        assert_eq!(v[0]["event"]["type"], "create");
    }
}
