//! Trigger types, bindings and their providers; the engine's own trigger types.

use super::*;

#[test]
fn a_binding_waits_for_its_type_and_goes_to_the_provider() {
    let mut h = H::new();
    let l = trusted();
    let user = h.live(&l);
    h.register(user, "on::hook");
    h.bind(user, "t1", "webhook", "on::hook", json!({"path": "/x"}));
    assert!(!h.r.triggers["t1"].active, "parked");
    let provider = h.live(&l);
    h.frame(
        provider,
        json!({"type": "registertriggertype", "id": "webhook", "description": "d"}),
    );
    let f = h.one(provider);
    assert_eq!(f["type"], "registertrigger");
    assert_eq!(
        (f["id"].as_str(), f["config"]["path"].as_str()),
        (Some("t1"), Some("/x"))
    );
    assert!(h.r.triggers["t1"].active);
}

#[test]
fn a_provider_that_leaves_parks_its_bindings_for_the_next() {
    let mut h = H::new();
    let l = trusted();
    let provider = h.live(&l);
    h.frame(
        provider,
        json!({"type": "registertriggertype", "id": "cron", "description": "d"}),
    );
    let user = h.live(&l);
    h.register(user, "job::run");
    h.bind(
        user,
        "nightly",
        "cron",
        "job::run",
        json!({"expression": "0 0 * * * *"}),
    );
    assert_eq!(h.one(provider)["id"], "nightly");
    h.disconnect(provider);
    assert!(!h.r.triggers["nightly"].active);
    let next = h.live(&l);
    h.frame(
        next,
        json!({"type": "registertriggertype", "id": "cron", "description": "d"}),
    );
    assert_eq!(h.one(next)["id"], "nightly");
}

#[test]
fn module_bindings_are_bound_and_unbound() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let user = h.live(&trusted());
    h.register(user, "on::change");
    h.bind(
        user,
        "t",
        "stream",
        "on::change",
        json!({"stream_name": "s"}),
    );
    h.frame(user, json!({"type": "unregistertrigger", "id": "t"}));
    let b = h.module_bindings();
    assert!(matches!(&b[0], TriggerBinding::Bind { id, .. } if id == "t"));
    assert!(matches!(&b[1], TriggerBinding::Unbind { id } if id == "t"));
    assert!(!h.r.triggers.contains_key("t"));
}

#[test]
fn a_provider_refusal_reaches_the_worker_that_registered() {
    let mut h = H::new();
    let l = trusted();
    let provider = h.live(&l);
    h.frame(
        provider,
        json!({"type": "registertriggertype", "id": "cron", "description": "d"}),
    );
    let user = h.live(&l);
    h.register(user, "job::run");
    h.bind(
        user,
        "bad",
        "cron",
        "job::run",
        json!({"expression": "nope"}),
    );
    h.frames(provider);
    let spoofer = h.live(&l);
    let refusal = json!({"type": "triggerregistrationresult", "id": "bad", "trigger_type": "cron",
                         "function_id": "job::run", "error": {"code": "x", "message": "bad expression"}});
    h.frame(spoofer, refusal.clone());
    assert!(
        h.frames(user).is_empty(),
        "only the provider's answer counts"
    );
    h.frame(provider, refusal);
    let f = h.one(user);
    assert_eq!(f["type"], "triggerregistrationresult");
    assert_eq!(f["error"]["code"], "trigger_registration_failed");
    assert_eq!(f["error"]["message"], "bad expression");
    assert!(!h.r.triggers["bad"].active);
    h.event(Event::BindingRejected {
        trigger_id: "missing".into(),
        error: crate::protocol::ErrorBody::new("x", "y"),
    });
}

#[test]
fn nobody_unregisters_anothers_binding() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let l = public(&[], None);
    let a = h.live(&l);
    h.register(a, "ui::a");
    h.bind(a, "mine", "stream", "ui::a", json!({"stream_name": "s"}));
    let b = h.live(&l);
    h.frame(b, json!({"type": "unregistertrigger", "id": "mine"}));
    assert!(h.error(b).1.contains("not its trigger"));
    assert!(h.r.triggers.contains_key("mine"));
}

#[test]
fn a_leaving_owner_takes_its_bindings_along() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let user = h.live(&trusted());
    h.register(user, "on::change");
    h.bind(
        user,
        "t",
        "stream",
        "on::change",
        json!({"stream_name": "s"}),
    );
    h.module_bindings();
    h.disconnect(user);
    assert!(matches!(&h.module_bindings()[..], [TriggerBinding::Unbind { id }] if id == "t"));
    assert!(h.r.triggers.is_empty());
}

#[test]
fn workers_available_fires_on_connect_and_disconnect() {
    let mut h = H::new();
    let watcher = h.live(&trusted());
    h.register(watcher, "ops::workers");
    h.bind(
        watcher,
        "w",
        "engine::workers-available",
        "ops::workers",
        json!({}),
    );
    let other = h.live(&trusted());
    let f = h.one(watcher);
    assert_eq!(f["data"]["event"], "worker_connected");
    assert_eq!(f["data"]["worker_id"], other.to_string());
    h.disconnect(other);
    assert_eq!(h.one(watcher)["data"]["event"], "worker_disconnected");
}

#[test]
fn functions_available_fires_once_per_tick_after_a_change() {
    let mut h = H::new();
    let watcher = h.live(&trusted());
    h.register(watcher, "ops::functions");
    h.bind(
        watcher,
        "f",
        "engine::functions-available",
        "ops::functions",
        json!({}),
    );
    h.tick_at(Instant::now());
    h.frames(watcher);
    let other = h.live(&trusted());
    h.register(other, "new::a");
    h.register(other, "new::b");
    h.tick_at(Instant::now());
    let f = h.one(watcher);
    assert_eq!(f["data"]["event"], "functions_changed");
    assert!(f["data"]["functions"].to_string().contains("new::b"));
    h.tick_at(Instant::now());
    assert!(h.frames(watcher).is_empty(), "nothing changed since");
}

#[test]
fn register_trigger_the_function_way_follows_the_session_rules() {
    let mut h = H::new();
    h.module(
        "iii-stream",
        &[],
        &[("stream", false), ("stream:join", true)],
    );
    let t = h.live(&trusted());
    h.register(t, "ops::f");
    let id = h.call(
        t,
        "engine::register_trigger",
        json!({"trigger_type": "stream", "function_id": "ops::f", "config": {"stream_name": "s"}}),
    );
    let binding = h.result(t, id)["result"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.disconnect(t);
    assert!(
        h.r.triggers.contains_key(&binding),
        "a trusted caller's binding outlives it"
    );
    let l = public(&["engine::register_trigger"], None);
    let user = h.live(&l);
    h.register(user, "ui::f");
    let id = h.call(
        user,
        "engine::register_trigger",
        json!({"trigger_type": "stream:join", "function_id": "ui::f", "config": {}}),
    );
    assert_eq!(h.result(user, id)["error"]["code"], "FORBIDDEN");
    let id = h.call(
        user,
        "engine::register_trigger",
        json!({"trigger_type": "stream", "function_id": "ui::f", "config": {"stream_name": "s"}}),
    );
    let owned = h.result(user, id)["result"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.r.triggers[&owned].owner, Some(user));
    h.disconnect(user);
    assert!(
        !h.r.triggers.contains_key(&owned),
        "a public session's binding goes with it"
    );
}

#[test]
fn a_public_session_cannot_take_a_trigger_type_over() {
    let mut h = H::new();
    let s = h.live(&trusted());
    h.register(s, "auth::fn");
    let provider = h.live(&trusted());
    h.frame(
        provider,
        json!({"type": "registertriggertype", "id": "cron", "description": "d"}),
    );
    let l = public(&[], Some("auth::fn"));
    let user = super::rbac::admitted(
        &mut h,
        s,
        &l,
        json!({"allow_trigger_type_registration": true}),
    );
    h.frame(
        user,
        json!({"type": "registertriggertype", "id": "cron", "description": "mine"}),
    );
    assert!(h
        .error(user)
        .1
        .contains("another worker provides this type"));
}
