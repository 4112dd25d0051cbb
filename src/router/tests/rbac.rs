//! RBAC: call decisions, public sessions' registrations, prefixes, bindings.

use super::*;

/// A trusted worker serving `api::echo` and `internal::wipe`.
fn server(h: &mut H) -> Uuid {
    let s = h.live(&trusted());
    h.register(s, "api::echo");
    h.register(s, "internal::wipe");
    s
}

#[test]
fn a_function_outside_the_expose_list_is_forbidden() {
    let mut h = H::new();
    let s = server(&mut h);
    let user = h.live(&public(&["api::*"], None));
    let id = h.call(user, "internal::wipe", json!({}));
    let r = h.result(user, id);
    assert_eq!(r["error"]["code"], "FORBIDDEN");
    assert_eq!(
        r["error"]["message"],
        "function 'internal::wipe' not allowed (add to rbac.expose_functions)"
    );
    assert!(h.frames(s).is_empty());
    h.call(user, "api::echo", json!({}));
    assert_eq!(h.frames(s).len(), 1, "exposed: routed");
}

#[test]
fn infrastructure_functions_are_open_to_every_session() {
    let mut h = H::new();
    let user = h.live(&public(&[], None));
    let id = h.call(user, "engine::workers::register", json!({"name": "x"}));
    assert_eq!(h.result(user, id)["result"], json!({"success": true}));
    let id = h.call(user, "engine::functions::list", json!({}));
    assert_eq!(h.result(user, id)["error"]["code"], "FORBIDDEN");
}

#[test]
fn public_timeouts_are_capped() {
    let mut h = H::new();
    server(&mut h);
    let l = public_with(&["api::*"], None, |l| l.max_invocation_timeout_ms = 500);
    let user = h.live(&l);
    let id = Uuid::new_v4();
    h.frame(
        user,
        json!({"type": "invokefunction", "invocation_id": id.to_string(), "function_id": "api::echo",
               "data": {}, "timeout_ms": 600000}),
    );
    h.tick_at(Instant::now() + Duration::from_secs(1));
    let r = h.result(user, id);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("500 ms"),
        "{r}"
    );
}

#[test]
fn a_public_session_cannot_take_an_id_someone_else_owns() {
    let mut h = H::new();
    server(&mut h);
    let user = h.live(&public(&["api::*"], None));
    h.register(user, "internal::wipe");
    assert!(h.error(user).1.contains("another worker owns this id"));
    h.register(user, "engine::functions::list");
    assert!(h
        .error(user)
        .1
        .contains("the engine provides this function"));
}

#[test]
fn trusted_workers_replace_each_other() {
    let mut h = H::new();
    let a = server(&mut h);
    let b = h.live(&trusted());
    h.register(b, "api::echo");
    let caller = h.live(&trusted());
    h.call(caller, "api::echo", json!({}));
    assert!(h.frames(a).is_empty());
    assert_eq!(h.frames(b).len(), 1);
}

/// A public session admitted by `auth::fn` (served by `server`) with this auth result.
pub(super) fn admitted(h: &mut H, server: Uuid, l: &Arc<ListenerConfig>, policy: Value) -> Uuid {
    let user = h.connect(l);
    let (engine_id, _) = h.invoked(server);
    h.answer(server, &engine_id, policy);
    assert!(h.accepted(user), "admitted");
    user
}

#[test]
fn a_prefixed_session_registers_in_its_own_namespace() {
    let mut h = H::new();
    let s = server(&mut h);
    h.register(s, "auth::fn");
    let l = public(&["api::*"], Some("auth::fn"));
    let tab = admitted(
        &mut h,
        s,
        &l,
        json!({"function_registration_prefix": "tab1"}),
    );
    h.register(tab, "api::echo");
    assert!(h.has_function("tab1::api::echo"));
    let id = h.call(s, "tab1::api::echo", json!({}));
    let f = h.frames(tab);
    assert_eq!(
        f[0]["function_id"], "api::echo",
        "the prefix is stripped for the owner"
    );
    let engine_id = f[0]["invocation_id"].as_str().unwrap().to_string();
    h.answer(tab, &engine_id, json!("mine"));
    assert_eq!(h.result(s, id)["result"], "mine");
    h.frame(
        tab,
        json!({"type": "unregisterfunction", "id": "api::echo"}),
    );
    assert!(!h.has_function("tab1::api::echo"));
}

#[test]
fn without_a_prefix_exposed_and_trusted_ids_are_never_a_public_sessions() {
    let mut h = H::new();
    let s = h.live(&trusted());
    h.register(s, "back::office");
    let user = h.live(&public(&["api::*"], None));
    h.disconnect(s);
    assert!(!h.has_function("back::office"));
    h.register(user, "back::office");
    assert!(h.error(user).1.contains("a trusted worker serves this id"));
    h.register(user, "api::new");
    assert!(h.error(user).1.contains("exposes this id"));
    h.register(user, "ui::mine");
    assert!(h.has_function("ui::mine"));
}

#[test]
fn a_public_session_has_a_function_limit() {
    let mut h = H::new();
    let l = public_with(&[], None, |l| l.max_functions_per_session = 2);
    let user = h.live(&l);
    for id in ["ui::a", "ui::b", "ui::c"] {
        h.register(user, id);
    }
    assert!(h.error(user).1.contains("max_functions_per_session"));
    assert!(h.has_function("ui::b") && !h.has_function("ui::c"));
    h.register(user, "ui::a");
    assert!(
        h.frames(user).is_empty(),
        "registering an id it has again is fine"
    );
}

#[test]
fn a_trigger_may_target_only_what_the_session_may_call_or_owns() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    server(&mut h);
    let user = h.live(&public(&["api::*"], None));
    h.bind(
        user,
        "t1",
        "stream",
        "internal::wipe",
        json!({"stream_name": "s"}),
    );
    assert!(h.error(user).1.contains("internal::wipe"));
    h.bind(
        user,
        "t2",
        "stream",
        "api::echo",
        json!({"stream_name": "s"}),
    );
    h.register(user, "ui::own");
    h.bind(user, "t3", "stream", "ui::own", json!({"stream_name": "s"}));
    let bound: Vec<String> = h
        .module_bindings()
        .into_iter()
        .filter_map(|b| match b {
            TriggerBinding::Bind { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(bound, ["t2", "t3"]);
}

#[test]
fn functions_named_in_a_config_are_checked_and_prefixed() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let s = server(&mut h);
    let user = h.live(&public(&["api::*"], None));
    h.register(user, "ui::own");
    let cfg = json!({"stream_name": "s", "condition_function_id": "internal::wipe"});
    h.bind(user, "c1", "stream", "ui::own", cfg);
    assert!(h
        .error(user)
        .1
        .contains("condition_function_id internal::wipe"));
    let cfg =
        json!({"stream_name": "s", "middleware_function_ids": ["api::echo", "internal::wipe"]});
    h.bind(user, "c2", "stream", "ui::own", cfg);
    assert!(h
        .error(user)
        .1
        .contains("middleware_function_ids internal::wipe"));
    assert!(h.module_bindings().is_empty());
    // With a prefix, the named function is the session's own.
    h.register(s, "auth::fn");
    let l = public(&["api::*"], Some("auth::fn"));
    let tab = admitted(&mut h, s, &l, json!({"function_registration_prefix": "p"}));
    let cfg = json!({"stream_name": "s", "condition_function_id": "internal::wipe"});
    h.bind(tab, "c3", "stream", "ui::own", cfg);
    match &h.module_bindings()[..] {
        [TriggerBinding::Bind {
            function_id,
            config,
            ..
        }] => {
            assert_eq!(function_id, "p::ui::own");
            assert_eq!(config["condition_function_id"], "p::internal::wipe");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn engine_wide_types_need_listing() {
    let mut h = H::new();
    h.module(
        "iii-stream",
        &[],
        &[("stream", false), ("stream:join", true)],
    );
    let user = h.live(&public(&[], None));
    h.register(user, "ui::f");
    for ty in [
        "engine::functions-available",
        "engine::workers-available",
        "stream:join",
    ] {
        h.bind(user, &format!("w-{ty}"), ty, "ui::f", json!({}));
        assert!(h.error(user).1.contains("engine-wide"), "{ty}");
    }
    h.bind(user, "ok", "stream", "ui::f", json!({"stream_name": "s"}));
    assert_eq!(h.module_bindings().len(), 1);
    // A trusted worker may bind anything.
    let t = h.live(&trusted());
    h.register(t, "ops::f");
    h.bind(t, "join", "stream:join", "ops::f", json!({}));
    assert_eq!(h.module_bindings().len(), 1);
}

#[test]
fn listed_types_are_exactly_what_a_session_may_bind() {
    let mut h = H::new();
    h.module(
        "iii-stream",
        &[],
        &[("stream", false), ("stream:join", true)],
    );
    let s = h.live(&trusted());
    h.register(s, "auth::fn");
    let l = public(&[], Some("auth::fn"));
    let user = admitted(
        &mut h,
        s,
        &l,
        json!({"allowed_trigger_types": ["stream:join"]}),
    );
    h.register(user, "ui::f");
    h.bind(user, "j", "stream:join", "ui::f", json!({}));
    h.bind(user, "s", "stream", "ui::f", json!({"stream_name": "x"}));
    assert!(h.error(user).1.contains("not in allowed_trigger_types"));
    assert_eq!(h.module_bindings().len(), 1);
}

#[test]
fn a_public_session_has_a_trigger_limit() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let l = public_with(&[], None, |l| l.max_triggers_per_session = 3);
    let user = h.live(&l);
    h.register(user, "ui::f");
    for i in 0..4 {
        h.bind(
            user,
            &format!("t{i}"),
            "stream",
            "ui::f",
            json!({"stream_name": "s"}),
        );
    }
    let (_, message) = h.error(user);
    assert!(
        message.contains("max_triggers_per_session") && message.contains("t3"),
        "{message}"
    );
    assert_eq!(h.module_bindings().len(), 3);
}

#[test]
fn metadata_from_a_public_session_exposes_nothing() {
    let mut h = H::new();
    let tagged = ExposeFilter::from_value(&json!({"metadata": {"public": true}})).unwrap();
    let l = Arc::new(ListenerConfig {
        rbac: Some(RbacConfig {
            auth_function_id: None,
            expose_functions: vec![tagged],
            on_function_registration_function_id: None,
            on_trigger_registration_function_id: None,
            on_trigger_type_registration_function_id: None,
        }),
        ..ListenerConfig::default()
    });
    let sneaky = h.live(&l);
    h.frame(
        sneaky,
        json!({"type": "registerfunction", "id": "sneaky::fn", "metadata": {"public": true}}),
    );
    let t = h.live(&trusted());
    h.frame(
        t,
        json!({"type": "registerfunction", "id": "real::fn", "metadata": {"public": true}}),
    );
    let user = h.live(&l);
    let id = h.call(user, "sneaky::fn", json!({}));
    assert_eq!(h.result(user, id)["error"]["code"], "FORBIDDEN");
    h.call(user, "real::fn", json!({}));
    assert_eq!(h.frames(t).len(), 1);
}

#[test]
fn discovery_shows_a_session_only_what_it_may_call() {
    let mut h = H::new();
    server(&mut h);
    let s = h.live(&trusted());
    h.register(s, "auth::fn");
    let l = public(&["api::*"], Some("auth::fn"));
    let policy =
        json!({"allowed_functions": ["engine::functions::list", "engine::functions::info"]});
    let user = admitted(&mut h, s, &l, policy);
    let id = h.call(user, "engine::functions::list", json!({}));
    let list = h.result(user, id)["result"]["functions"].clone();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function_id"].as_str())
        .collect();
    assert_eq!(ids, ["api::echo"]);
    for hidden in ["internal::wipe", "does::not-exist"] {
        let id = h.call(
            user,
            "engine::functions::info",
            json!({ "function_id": hidden }),
        );
        assert_eq!(h.result(user, id)["error"]["code"], "FORBIDDEN", "{hidden}");
    }
}

#[test]
fn a_public_binding_id_is_never_taken_from_another_session() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let l = public(&[], None);
    let a = h.live(&l);
    h.register(a, "ui::a");
    h.bind(a, "shared", "stream", "ui::a", json!({"stream_name": "s"}));
    let b = h.live(&l);
    h.register(b, "ui::b");
    h.bind(b, "shared", "stream", "ui::b", json!({"stream_name": "s"}));
    assert!(h.error(b).1.contains("belongs to another registration"));
    assert_eq!(h.r.triggers["shared"].function_id, "ui::a");
}
