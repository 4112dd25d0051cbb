//! Connections: reattach, cleanup, unreachable sockets, telemetry sockets, worker metadata.

use super::*;

/// The reattach token `w` was welcomed with.
fn token_of(h: &H, w: Uuid) -> String {
    h.r.conns[&w].token.to_string()
}

#[test]
fn a_reattach_retires_the_old_connection_before_the_replay() {
    let mut h = H::new();
    let l = trusted();
    let old = h.live(&l);
    h.register(old, "svc::fn");
    let caller = h.live(&l);
    let pending = h.call(caller, "svc::fn", json!({}));
    let new = h.live(&l);
    let token = token_of(&h, old);
    h.frame(
        new,
        json!({"type": "reattach", "previous_worker_id": old.to_string(), "reattach_token": token}),
    );
    let effects = h.take();
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Force { to, msg: ToSession::Close(_) } if *to == old)));
    assert!(!h.r.conns.contains_key(&old) && !h.has_function("svc::fn"));
    let stopped = effects.iter().any(|e| match e {
        Effect::Send {
            to,
            msg: ToSession::Frame(f),
        } if *to == caller => {
            f.encode().contains("invocation_stopped") && f.encode().contains(&pending.to_string())
        }
        _ => false,
    });
    assert!(stopped, "the old connection's calls stopped");
    h.register(new, "svc::fn");
    assert_eq!(
        h.r.functions["svc::fn"].owner,
        super::super::Owner::Session(new)
    );
}

#[test]
fn a_wrong_token_or_another_listener_changes_nothing() {
    let mut h = H::new();
    let l = trusted();
    let victim = h.live(&l);
    h.register(victim, "svc::fn");
    let attacker = h.live(&l);
    h.frame(
        attacker,
        json!({"type": "reattach", "previous_worker_id": victim.to_string(), "reattach_token": "x"}),
    );
    assert_eq!(h.error(attacker).0, "reattach_rejected");
    let public_attacker = h.live(&public(&[], None));
    let token = token_of(&h, victim);
    h.frame(
        public_attacker,
        json!({"type": "reattach", "previous_worker_id": victim.to_string(), "reattach_token": token}),
    );
    let (code, message) = h.error(public_attacker);
    assert_eq!(code, "reattach_rejected");
    assert!(message.contains("another listener"));
    assert!(h.r.conns.contains_key(&victim) && h.has_function("svc::fn"));
}

#[test]
fn a_reattach_to_itself_or_nobody_is_ignored() {
    let mut h = H::new();
    let w = h.live(&trusted());
    let token = token_of(&h, w);
    h.frame(
        w,
        json!({"type": "reattach", "previous_worker_id": w.to_string(), "reattach_token": token}),
    );
    h.frame(
        w,
        json!({"type": "reattach", "previous_worker_id": Uuid::new_v4().to_string()}),
    );
    h.frame(
        w,
        json!({"type": "reattach", "previous_worker_id": "not-a-uuid"}),
    );
    assert!(h.take().is_empty());
    assert!(h.r.conns.contains_key(&w));
}

#[test]
fn cleanup_runs_once_and_removes_only_what_is_still_owned() {
    let mut h = H::new();
    let l = trusted();
    let a = h.live(&l);
    h.register(a, "shared::fn");
    h.register(a, "only::a");
    let b = h.live(&l);
    h.register(b, "shared::fn");
    h.disconnect(a);
    assert!(h.has_function("shared::fn") && !h.has_function("only::a"));
    h.take();
    h.disconnect(a);
    assert!(h.take().is_empty(), "a second cleanup does nothing");
    h.frame(b, json!({"type": "unregisterfunction", "id": "only::a"}));
    assert!(h.has_function("shared::fn"));
}

#[test]
fn a_stale_unregister_does_not_remove_the_new_owners_function() {
    let mut h = H::new();
    let l = trusted();
    let a = h.live(&l);
    h.register(a, "svc::fn");
    let b = h.live(&l);
    h.register(b, "svc::fn");
    h.frame(a, json!({"type": "unregisterfunction", "id": "svc::fn"}));
    assert_eq!(
        h.r.functions["svc::fn"].owner,
        super::super::Owner::Session(b)
    );
}

#[test]
fn an_unreachable_connection_is_closed_and_cleaned_up() {
    let mut h = H::new();
    let l = trusted();
    let slow = h.live(&l);
    h.register(slow, "slow::fn");
    h.event(Event::Unreachable {
        worker_id: slow,
        why: "nothing drained for 10000 ms".into(),
    });
    let effects = h.take();
    assert!(
        matches!(&effects[0], Effect::Force { to, msg: ToSession::Close(r) }
        if *to == slow && r.contains("not reading"))
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Forget { conn } if *conn == slow)));
    assert!(!h.has_function("slow::fn"));
}

#[test]
fn a_telemetry_socket_is_authenticated_but_never_a_worker() {
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
    let g = h.live(&trusted());
    h.register(g, "auth::fn");
    h.frames(watcher);
    let otel = Uuid::new_v4();
    h.event(Event::Connect {
        worker_id: otel,
        listener: public(&[], Some("auth::fn")),
        peer: PeerInfo::default(),
        flow: Flow::unlimited(),
        telemetry: true,
    });
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!({}));
    assert!(h.accepted(otel));
    h.disconnect(otel);
    assert!(
        h.frames(watcher).is_empty(),
        "no workers-available for telemetry"
    );
}

#[test]
fn worker_metadata_is_recorded_and_listed() {
    let mut h = H::new();
    let w = h.live(&trusted());
    h.register(w, "svc::fn");
    let id = h.call(
        w,
        "engine::workers::register",
        json!({"name": "  api\u{0007} ", "runtime": "node", "version": "1.2", "pid": 42}),
    );
    assert_eq!(h.result(w, id)["result"], json!({"success": true}));
    let id = h.call(w, "engine::workers::list", json!({}));
    let workers = h.result(w, id)["result"]["workers"].clone();
    let me = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == json!(w.to_string()))
        .cloned()
        .unwrap();
    assert_eq!(me["name"], "api");
    assert_eq!(me["pid"], 42);
    assert_eq!(me["function_count"], 1);
    assert!(workers.to_string().contains("iii-engine-functions"));
}

#[test]
fn held_frames_keep_counting_until_handled() {
    let mut h = H::new();
    let g = h.live(&trusted());
    h.register(g, "auth::fn");
    let flow = Flow::unlimited();
    let user = h.connect_with(
        &public(&[], Some("auth::fn")),
        PeerInfo::default(),
        flow.clone(),
    );
    flow.frame_in(10);
    h.event(Event::Frame {
        worker_id: user,
        msg: protocol::Message::Pong,
        bytes: 10,
    });
    assert_eq!(flow.queued_frames(), 1, "held while the auth function runs");
    let (engine_id, _) = h.invoked(g);
    h.answer(g, &engine_id, json!({}));
    assert_eq!(flow.queued_frames(), 0);
}

#[test]
fn malformed_function_ids_are_refused_by_name() {
    let mut h = H::new();
    let w = h.live(&trusted());
    for bad in ["a::::b", "::lead", "star*", "white space", ""] {
        h.register(w, bad);
        assert_eq!(h.error(w).0, "invalid_id", "{bad:?}");
    }
}
