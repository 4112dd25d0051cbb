//! The auth function and the registration hooks: waiting, admitting, refusing, rewriting.

use super::rbac::admitted;
use super::*;
use crate::config::RbacConfig;

/// A trusted worker serving the auth function and the hooks.
fn gatekeeper(h: &mut H) -> Uuid {
    let g = h.live(&trusted());
    for id in ["auth::fn", "hook::fn", "hook::trigger", "hook::type"] {
        h.register(g, id);
    }
    g
}

fn hooked(auth: bool) -> Arc<ListenerConfig> {
    Arc::new(ListenerConfig {
        rbac: Some(RbacConfig {
            auth_function_id: auth.then(|| "auth::fn".to_string()),
            expose_functions: vec![],
            on_function_registration_function_id: Some("hook::fn".into()),
            on_trigger_registration_function_id: Some("hook::trigger".into()),
            on_trigger_type_registration_function_id: Some("hook::type".into()),
        }),
        ..ListenerConfig::default()
    })
}

#[test]
fn a_connection_waits_for_its_auth_function_and_gets_its_input() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let peer = PeerInfo {
        ip: "10.0.0.9".into(),
        headers: json!({"x-token": "t"}).as_object().unwrap().clone(),
        query_params: json!({"tab": ["1"]}).as_object().unwrap().clone(),
    };
    let user = h.connect_with(&hooked(true), peer, Flow::unlimited());
    assert!(!h.accepted(user), "not before the auth function answered");
    let (engine_id, input) = h.invoked(g);
    assert_eq!(
        input,
        json!({"headers": {"x-token": "t"}, "query_params": {"tab": ["1"]}, "ip_address": "10.0.0.9"})
    );
    h.answer(g, &engine_id, json!({"context": {"user": "ann"}}));
    assert!(h.accepted(user));
    assert_eq!(h.r.conns[&user].policy.context, json!({"user": "ann"}));
}

#[test]
fn frames_that_arrive_before_the_answer_are_handled_after_it_in_order() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let l = public(&[], Some("auth::fn"));
    let user = h.connect(&l);
    h.register(user, "ui::a");
    h.register(user, "ui::b");
    assert!(!h.has_function("ui::a"));
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!({}));
    assert!(h.has_function("ui::a") && h.has_function("ui::b"));
}

#[test]
fn a_refusing_auth_function_closes_the_connection() {
    for (answer, reason) in [
        (Err("denied"), "boom"),
        (Ok(json!("not an object")), "invalid"),
        (Ok(Value::Null), "no result"),
        (
            Ok(json!({"function_registration_prefix": "engine"})),
            "reserved",
        ),
        (
            Ok(json!({"function_registration_prefix": "a::b"})),
            "malformed",
        ),
    ] {
        let mut h = H::new();
        let g = gatekeeper(&mut h);
        let user = h.connect(&public(&[], Some("auth::fn")));
        let (engine_id, _) = h.invoked(g);
        match answer {
            Ok(v) => h.answer(g, &engine_id, v),
            Err(code) => h.fail(g, &engine_id, code),
        }
        let effects = h.take();
        let rejected = effects.iter().find_map(|e| match e {
            Effect::Force {
                to,
                msg: ToSession::Reject(err),
            } if *to == user => Some(err.clone()),
            _ => None,
        });
        let err = rejected.unwrap_or_else(|| panic!("{reason}: {effects:?}"));
        assert_eq!(err.code, "AUTH_ERROR");
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Forget { conn } if *conn == user)));
        assert!(!h.r.conns.contains_key(&user), "{reason}");
    }
}

#[test]
fn two_live_sessions_cannot_share_a_prefix() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let l = public(&[], Some("auth::fn"));
    admitted(
        &mut h,
        g,
        &l,
        json!({"function_registration_prefix": "same"}),
    );
    let second = h.connect(&l);
    let (engine_id, _) = h.invoked(g);
    h.answer(
        g,
        &engine_id,
        json!({"function_registration_prefix": "same"}),
    );
    assert!(!h.accepted(second));
    assert!(!h.r.conns.contains_key(&second));
}

#[test]
fn an_auth_function_not_registered_yet_is_waited_for() {
    let mut h = H::new();
    let user = h.connect(&public(&[], Some("auth::late")));
    let later = h
        .take()
        .into_iter()
        .find_map(|e| match e {
            Effect::Later { event, .. } => Some(event),
            _ => None,
        })
        .expect("asks again later");
    let g = h.live(&trusted());
    h.register(g, "auth::late");
    h.event(later);
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!({}));
    assert!(h.accepted(user));
}

#[test]
fn an_auth_function_that_never_answers_refuses_at_its_deadline() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let user = h.connect(&public_with(&[], Some("auth::fn"), |l| {
        l.auth_timeout_ms = 100
    }));
    h.invoked(g);
    h.tick_at(Instant::now() + Duration::from_millis(300));
    let effects = h.take();
    let msg = effects.iter().find_map(|e| match e {
        Effect::Force {
            msg: ToSession::Reject(err),
            ..
        } => Some(err.message.clone()),
        _ => None,
    });
    assert!(msg.unwrap().contains("did not answer in time"));
    assert!(!h.r.conns.contains_key(&user));
}

#[test]
fn a_registration_hook_holds_the_connection_and_may_rewrite() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let user = admitted(
        &mut h,
        g,
        &hooked(true),
        json!({"context": {"tenant": "t1"}}),
    );
    h.register(user, "ui::orig");
    h.register(user, "ui::second");
    let (engine_id, input) = h.invoked(g);
    assert_eq!(input["function_id"], "ui::orig");
    assert_eq!(input["context"], json!({"tenant": "t1"}));
    assert!(
        h.frames(g).is_empty(),
        "the second waits for the first hook"
    );
    h.answer(
        g,
        &engine_id,
        json!({"function_id": "ui::renamed", "metadata": {"m": 1}}),
    );
    assert!(h.has_function("ui::renamed") && !h.has_function("ui::orig"));
    assert_eq!(h.r.functions["ui::renamed"].metadata, Some(json!({"m": 1})));
    let (engine_id, input) = h.invoked(g);
    assert_eq!(input["function_id"], "ui::second");
    h.answer(g, &engine_id, json!({}));
    assert!(h.has_function("ui::second"));
}

#[test]
fn a_hook_that_does_not_say_yes_denies_and_the_connection_goes_on() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let user = h.live(&hooked(false));
    h.register(user, "ui::a");
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!(false));
    assert!(h.error(user).1.contains("not an object"));
    h.register(user, "ui::b");
    let (engine_id, _) = h.invoked(g);
    h.fail(g, &engine_id, "nope");
    assert!(h.error(user).1.contains("hook hook::fn failed"));
    h.register(user, "ui::c");
    h.invoked(g);
    h.tick_at(much_later());
    assert!(h.error(user).1.contains("invocation_timeout"));
    assert!(!h.has_function("ui::a") && !h.has_function("ui::b") && !h.has_function("ui::c"));
    assert!(!h.r.conns[&user].held, "released after every answer");
}

#[test]
fn a_trigger_hook_may_rewrite_the_config() {
    let mut h = H::new();
    h.module("iii-stream", &[], &[("stream", false)]);
    let g = gatekeeper(&mut h);
    let user = h.live(&hooked(false));
    h.frame(user, json!({"type": "registerfunction", "id": "ui::f"}));
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!({}));
    h.bind(user, "t", "stream", "ui::f", json!({"stream_name": "wide"}));
    let (engine_id, input) = h.invoked(g);
    assert_eq!(input["config"], json!({"stream_name": "wide"}));
    h.answer(g, &engine_id, json!({"config": {"stream_name": "narrow"}}));
    match &h.module_bindings()[..] {
        [TriggerBinding::Bind { config, .. }] => assert_eq!(config["stream_name"], "narrow"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn trigger_types_need_permission_and_pass_their_hook() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let l = hooked(true);
    let plain = admitted(&mut h, g, &l, json!({}));
    h.frame(
        plain,
        json!({"type": "registertriggertype", "id": "webhook", "description": "d"}),
    );
    assert!(h.error(plain).1.contains("allow_trigger_type_registration"));
    let allowed = admitted(
        &mut h,
        g,
        &l,
        json!({"allow_trigger_type_registration": true}),
    );
    h.frame(
        allowed,
        json!({"type": "registertriggertype", "id": "webhook", "description": "d"}),
    );
    let (engine_id, input) = h.invoked(g);
    assert_eq!(input["trigger_type_id"], "webhook");
    h.answer(g, &engine_id, json!({"trigger_type_id": "renamed"}));
    assert!(h.r.trigger_types.contains_key("renamed"));
}

#[test]
fn a_hook_answer_for_a_connection_that_left_changes_nothing() {
    let mut h = H::new();
    let g = gatekeeper(&mut h);
    let user = h.live(&hooked(false));
    h.register(user, "ui::a");
    let (engine_id, _) = h.invoked(g);
    h.disconnect(user);
    h.answer(g, &engine_id, json!({}));
    assert!(!h.has_function("ui::a"));
    let _ = payload(json!(null));
}
