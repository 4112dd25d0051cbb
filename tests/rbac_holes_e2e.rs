//! RBAC holes found by attacking the public port as an attacker would, beyond R1–R20: functions
//! named inside a trigger's config (the confused deputy of `condition_function_id`),
//! engine-wide trigger types, ids of trusted workers taken while they reconnect, reattach tokens
//! used on another listener, uncapped timeouts and trigger counts. The harness is
//! `common/attack.rs`; static files reached through symlinks are in `static_e2e.rs`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::attack::{error_frame, public, public_url, trusted, CONFIG, T};
use common::{EngineProc, RawEvent, RawWs};
use iii_client::{Client, ClientOptions};
use serde_json::json;

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
