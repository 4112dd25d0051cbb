//! Every RBAC escalation attempt of `RELIABILITY.md` §4.4 (R1–R20) against a public listener,
//! with its expected outcome. A trusted Rust worker serves the auth function (its answer
//! depends on the `mode` query parameter of the connecting socket) and the `api::*` functions;
//! attackers connect to the public listener with our client or raw frames.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EngineProc, RawEvent, RawWs};
use iii::protocol::ErrorBody;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      auth_timeout_ms: 1000
      max_invocation_timeout_ms: 1500
      max_triggers_per_session: 20
      rbac:
        auth_function_id: auth::fn
        expose_functions:
          - match(\"api::*\")
          - metadata:
              public: true
  - name: iii-stream
    config: {host: 127.0.0.1, port: 0}
";

/// The trusted side: the auth function (answer chosen by `?mode=`), `api::*` functions, and a
/// non-exposed `internal::wipe` that counts its calls.
struct Trusted {
    client: Client,
    wipes: Arc<AtomicUsize>,
}

async fn trusted(engine: &EngineProc) -> Trusted {
    let client = Client::connect(&engine.url(0), ClientOptions::named("trusted"))
        .await
        .unwrap();
    client.register_function("auth::fn", |input: Value| async move {
        let mode = input["query_params"]["mode"][0].as_str().unwrap_or("prefix").to_string();
        let fresh = format!("s-{}", uuid::Uuid::new_v4());
        Ok(match mode.as_str() {
            "prefix" => json!({"function_registration_prefix": fresh, "allowed_trigger_types": ["stream"],
                               "context": {"session": fresh}}),
            "noprefix" => json!({"allowed_trigger_types": ["stream"]}),
            "lists" => json!({"allowed_functions": ["stream::get", "api::both"],
                              "forbidden_functions": ["api::both", "engine::workers::register"]}),
            "discovery" => json!({"allowed_functions": ["engine::functions::list", "engine::functions::info"],
                                  "function_registration_prefix": fresh}),
            "widen" => json!({"function_registration_prefix": fresh, "is_admin": true, "allowed_functions_all": true}),
            "throw" => return Err(ErrorBody::new("invocation_failed", "no such user")),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                json!({})
            }
            "junk" => json!("not an object"),
            "nothing" => Value::Null,
            "reserved" => json!({"function_registration_prefix": "engine"}),
            "malformed" => json!({"function_registration_prefix": "a::b"}),
            "fixed" => json!({"function_registration_prefix": "fixed-prefix"}),
            "open" => json!({}),
            other => json!({"function_registration_prefix": format!("{other}-{fresh}")}),
        })
    });
    client.register_function(
        "api::echo",
        |v: Value| async move { Ok(json!({"echo": v})) },
    );
    client.register_function("api::login", |_| async { Ok(json!({"token": "real"})) });
    client.register_function("api::both", |_| async { Ok(json!("both")) });
    client.register_function("api::slow", |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(json!("late"))
    });
    client.register_function_with(
        "public::tagged",
        None,
        Some(json!({"public": true})),
        |_| async { Ok(json!("trusted and tagged")) },
    );
    let wipes = Arc::new(AtomicUsize::new(0));
    let w = wipes.clone();
    client.register_function("internal::wipe", move |_| {
        let w = w.clone();
        async move {
            w.fetch_add(1, Ordering::SeqCst);
            Ok(json!("wiped"))
        }
    });
    // Ready when the auth function answers through the engine.
    while client
        .trigger("auth::fn", json!({"query_params": {}}))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Trusted { client, wipes }
}

fn public_url(engine: &EngineProc, mode: &str) -> String {
    format!("{}/?mode={mode}", engine.url(1))
}

async fn public(engine: &EngineProc, mode: &str) -> Client {
    Client::connect(&public_url(engine, mode), ClientOptions::named(mode))
        .await
        .unwrap()
}

async fn forbidden(c: &Client, function_id: &str) -> String {
    let err = c.trigger(function_id, json!({})).await.unwrap_err();
    assert_eq!(err.code, "FORBIDDEN", "{function_id}: {err:?}");
    assert!(err.message.contains(&format!("'{function_id}'")), "{err:?}");
    err.message
}

/// The next `error` frame on a raw socket (skipping anything else).
async fn error_frame(ws: &mut RawWs) -> Value {
    loop {
        let v = ws.next_json(T).await;
        if v["type"] == "error" {
            return v["error"].clone();
        }
    }
}

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
    // R3: the infrastructure allow-list passes RBAC (log functions have no provider here).
    assert!(c
        .trigger("engine::workers::register", json!({"name": "x"}))
        .await
        .is_ok());
    let err = c.trigger("engine::log::info", json!({})).await.unwrap_err();
    assert_eq!(err.code, "function_not_found");
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

/// A function named inside a trigger's config is called by the engine on the session's
/// behalf: it must pass the same decision as a call (the confused deputy of
/// `condition_function_id`).
#[actix::test]
async fn functions_named_in_a_trigger_config_are_checked_like_calls() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let mut raw = RawWs::connect(&public_url(&engine, "noprefix")).await;
    raw.text(r#"{"type":"registerfunction","id":"ui::x"}"#)
        .await;
    raw.text(r#"{"type":"registertrigger","id":"c1","trigger_type":"stream","function_id":"ui::x","config":{"stream_name":"todo","group_id":"todos","condition_function_id":"internal::wipe"}}"#).await;
    let e = error_frame(&mut raw).await;
    assert_eq!(e["code"], "FORBIDDEN");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("condition_function_id internal::wipe"),
        "{e}"
    );
    // A condition the session may call is fine.
    raw.text(r#"{"type":"registertrigger","id":"c2","trigger_type":"stream","function_id":"ui::x","config":{"stream_name":"todo","group_id":"todos","condition_function_id":"api::echo"}}"#).await;
    raw.barrier().await;
    // With a prefix the condition is resolved inside the session's own namespace.
    let mut prefixed = RawWs::connect(&public_url(&engine, "prefix")).await;
    prefixed
        .text(r#"{"type":"registerfunction","id":"ui::x"}"#)
        .await;
    prefixed.text(r#"{"type":"registertrigger","id":"c3","trigger_type":"stream","function_id":"ui::x","config":{"stream_name":"todo","group_id":"todos","condition_function_id":"internal::wipe"}}"#).await;
    prefixed.barrier().await;
    t.client
        .trigger(
            "stream::set",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "i", "data": 1}),
        )
        .await
        .unwrap();
    common::barrier(&t.client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.wipes.load(Ordering::SeqCst),
        0,
        "internal::wipe never ran"
    );
    let bindings = t
        .client
        .trigger("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = bindings["registered_triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, ["c2", "c3"], "{bindings}");
    let c3 = &bindings["registered_triggers"][1]["config"]["condition_function_id"];
    assert!(c3.as_str().unwrap().ends_with("::internal::wipe") && c3 != "internal::wipe");
}

/// Trigger types whose events concern the whole engine (every function, every worker, every
/// consumer socket) need to be listed in `allowed_trigger_types`.
#[actix::test]
async fn engine_wide_trigger_types_are_not_open_by_default() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let mut raw = RawWs::connect(&public_url(&engine, "open")).await;
    raw.text(r#"{"type":"registerfunction","id":"spy::fn"}"#)
        .await;
    for ty in [
        "engine::functions-available",
        "engine::workers-available",
        "stream:join",
        "stream:leave",
    ] {
        let bind = json!({"type": "registertrigger", "id": format!("spy-{ty}"), "trigger_type": ty,
                          "function_id": "spy::fn", "config": {}});
        raw.text(bind.to_string()).await;
        let e = error_frame(&mut raw).await;
        assert!(
            e["message"].as_str().unwrap().contains("engine-wide"),
            "{ty}: {e}"
        );
    }
    // An ordinary type is still open to a session without a list.
    raw.text(r#"{"type":"registertrigger","id":"ok","trigger_type":"stream","function_id":"spy::fn","config":{"stream_name":"todo"}}"#).await;
    raw.barrier().await;
    // Changes that would have fired the engine-wide types reach nobody on the public side.
    t.client
        .register_function("new::fn", |_| async { Ok(json!(1)) });
    let _other = Client::connect(&engine.url(0), ClientOptions::named("other"))
        .await
        .unwrap();
    common::barrier(&t.client).await;
    assert!(
        raw.next(Duration::from_millis(500)).await.is_none(),
        "the public session received nothing"
    );
}

/// Without a prefix, a public session cannot register an exposed id, nor one a trusted
/// worker serves, even while that worker is reconnecting (its id is momentarily free).
#[actix::test]
async fn ids_of_trusted_workers_stay_theirs_while_they_reconnect() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let owner = Client::connect(&engine.url(0), ClientOptions::named("owner"))
        .await
        .unwrap();
    owner.register_function("api::toggle", |_| async { Ok(json!("real toggle")) });
    owner.register_function("back::office", |_| async { Ok(json!("real office")) });
    common::barrier(&owner).await;
    let mut squatter = RawWs::connect(&public_url(&engine, "noprefix")).await;
    squatter.barrier().await;
    owner.shutdown().await;
    // Its functions are gone from the table: the ids are free, but still not the squatter's.
    while t
        .client
        .trigger("engine::functions::list", json!({}))
        .await
        .unwrap()
        .to_string()
        .contains("api::toggle")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ["api::toggle", "back::office", "api::brand-new"] {
        squatter
            .text(json!({"type": "registerfunction", "id": id}).to_string())
            .await;
        let e = error_frame(&mut squatter).await;
        assert_eq!(e["code"], "FORBIDDEN", "{id}: {e}");
    }
    // Nobody's call reaches the squatter.
    let victim = public(&engine, "prefix").await;
    assert_eq!(
        victim
            .trigger("api::toggle", json!({"secret": "payload"}))
            .await
            .unwrap_err()
            .code,
        "function_not_found"
    );
    let _ = t;
}

/// A reattach token only works on the listener that issued it.
#[actix::test]
async fn a_reattach_token_cannot_cross_listeners() {
    let engine = EngineProc::start(CONFIG);
    let t = trusted(&engine).await;
    let mut worker = RawWs::connect(&engine.url(0)).await;
    let welcome = match worker.next(T).await {
        Some(RawEvent::Json(v)) => v,
        other => panic!("{other:?}"),
    };
    worker
        .text(r#"{"type":"registerfunction","id":"held::fn"}"#)
        .await;
    worker.barrier().await;
    let mut attacker = RawWs::connect(&public_url(&engine, "noprefix")).await;
    let reattach = json!({"type": "reattach", "previous_worker_id": welcome["worker_id"],
                          "reattach_token": welcome["reattach_token"]});
    attacker.text(reattach.to_string()).await;
    let e = error_frame(&mut attacker).await;
    assert_eq!(e["code"], "reattach_rejected", "{e}");
    assert!(e["message"].as_str().unwrap().contains("another listener"));
    // The worker is still there.
    worker.barrier().await;
    let functions = t
        .client
        .trigger("engine::functions::list", json!({}))
        .await
        .unwrap();
    assert!(functions.to_string().contains("held::fn"), "{functions}");
}

/// A public session's `timeout_ms` is capped, and so is the number of its triggers.
#[actix::test]
async fn public_timeouts_and_trigger_counts_are_capped() {
    let engine = EngineProc::start(CONFIG);
    let _t = trusted(&engine).await;
    let mut raw = RawWs::connect(&public_url(&engine, "noprefix")).await;
    let started = Instant::now();
    raw.text(
        json!({"type": "invokefunction", "invocation_id": uuid::Uuid::new_v4().to_string(),
               "function_id": "api::slow", "data": {}, "timeout_ms": 600000})
        .to_string(),
    )
    .await;
    let answer = raw.next_json(Duration::from_secs(8)).await;
    assert_eq!(answer["error"]["code"], "invocation_timeout", "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1500 ms"));
    assert!(started.elapsed() < Duration::from_secs(5));
    raw.text(r#"{"type":"registerfunction","id":"ui::f"}"#)
        .await;
    for i in 0..21 {
        let bind = json!({"type": "registertrigger", "id": format!("cap{i}"), "trigger_type": "stream",
                          "function_id": "ui::f", "config": {"stream_name": format!("s{i}")}});
        raw.text(bind.to_string()).await;
    }
    let e = error_frame(&mut raw).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("max_triggers_per_session")
            && e["message"].as_str().unwrap().contains("cap20"),
        "{e}"
    );
}

/// The page server does not follow symlinks out of its directory.
#[actix::test]
async fn static_files_never_leave_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc", site.join("etc")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), site.join("leak.txt")).unwrap();
    let config = format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n      static_dir: {}\n      rbac: {{}}\n",
        site.display()
    );
    let engine = EngineProc::start(&config);
    let base = engine.url(0).replace("ws://", "http://");
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let mut resp = awc::Client::new().get(url).send().await.unwrap();
            let body = resp.body().await.unwrap();
            (
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).to_string(),
            )
        }
    };
    assert_eq!(get("/").await, (200, "<h1>home</h1>".to_string()));
    for path in ["/etc/hostname", "/etc/passwd", "/leak.txt"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
