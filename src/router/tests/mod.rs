//! Unit tests of the router: events in, effects out, no sockets and no actors. [`H`] drives a
//! [`Router`] the way the registry actor does and reads back what it asked to be sent.
//!
//! Files: `calls.rs` (routing, results, deadlines, disconnects), `rbac.rs` (decisions, public
//! sessions, prefixes), `hooks.rs` (auth function and registration hooks), `triggers.rs`
//! (types, bindings, providers), `conns.rs` (frame order, reattach, cleanup, engine functions).

mod calls;
mod conns;
mod hooks;
mod rbac;
mod triggers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::{Effect, Effects, Event, Outcome, PeerInfo, Router};
use crate::config::{ListenerConfig, RbacConfig};
use crate::flow::Flow;
use crate::messages::{BuiltinFunction, BuiltinTriggerType, ToSession, TriggerBinding};
use crate::payload::Payload;
use crate::protocol::{self, Decoded};
use crate::rbac::ExposeFilter;

/// A trusted listener (no `rbac`).
fn trusted() -> Arc<ListenerConfig> {
    Arc::new(ListenerConfig::default())
}

/// A public listener exposing `expose` (patterns), with an optional auth function.
fn public(expose: &[&str], auth: Option<&str>) -> Arc<ListenerConfig> {
    public_with(expose, auth, |_| {})
}

fn public_with(
    expose: &[&str],
    auth: Option<&str>,
    tweak: impl FnOnce(&mut ListenerConfig),
) -> Arc<ListenerConfig> {
    let rbac = RbacConfig {
        auth_function_id: auth.map(str::to_string),
        expose_functions: expose
            .iter()
            .map(|p| ExposeFilter::from_value(&json!(format!("match(\"{p}\")"))).unwrap())
            .collect(),
        on_function_registration_function_id: None,
        on_trigger_registration_function_id: None,
        on_trigger_type_registration_function_id: None,
    };
    let mut l = ListenerConfig {
        rbac: Some(rbac),
        ..ListenerConfig::default()
    };
    tweak(&mut l);
    Arc::new(l)
}

/// The harness: a router and what it has asked for so far.
struct H {
    r: Router,
    out: Effects,
}

impl H {
    fn new() -> H {
        H {
            r: Router::new(),
            out: Vec::new(),
        }
    }

    fn event(&mut self, e: Event) {
        self.r.handle(e, &mut self.out);
    }

    /// Connects a socket; returns its id. Its `Accepted` (if any) stays in the effects.
    fn connect(&mut self, listener: &Arc<ListenerConfig>) -> Uuid {
        self.connect_with(listener, PeerInfo::default(), Flow::unlimited())
    }

    fn connect_with(
        &mut self,
        listener: &Arc<ListenerConfig>,
        peer: PeerInfo,
        flow: Arc<Flow>,
    ) -> Uuid {
        let worker_id = Uuid::new_v4();
        self.event(Event::Connect {
            worker_id,
            listener: listener.clone(),
            peer,
            flow,
            telemetry: false,
        });
        worker_id
    }

    /// A connection that is accepted right away (trusted, or public without auth).
    fn live(&mut self, listener: &Arc<ListenerConfig>) -> Uuid {
        let w = self.connect(listener);
        assert!(self.accepted(w), "{w} accepted");
        w
    }

    /// Feeds a frame written as JSON.
    fn frame(&mut self, from: Uuid, frame: Value) {
        let text = frame.to_string();
        let msg = match protocol::decode(&text) {
            Ok(Decoded::Message(m)) => m,
            other => panic!("test frame does not decode: {other:?}"),
        };
        self.event(Event::Frame {
            worker_id: from,
            msg,
            bytes: text.len(),
        });
    }

    fn register(&mut self, from: Uuid, id: &str) {
        self.frame(from, json!({"type": "registerfunction", "id": id}));
    }

    fn bind(&mut self, from: Uuid, id: &str, ty: &str, function_id: &str, config: Value) {
        self.frame(
            from,
            json!({"type": "registertrigger", "id": id, "trigger_type": ty,
                   "function_id": function_id, "config": config}),
        );
    }

    /// A call from `from`; returns its invocation id.
    fn call(&mut self, from: Uuid, function_id: &str, data: Value) -> Uuid {
        let id = Uuid::new_v4();
        self.frame(
            from,
            json!({"type": "invokefunction", "invocation_id": id.to_string(),
                   "function_id": function_id, "data": data}),
        );
        id
    }

    /// An answer from `from` to the engine's call `engine_id`.
    fn answer(&mut self, from: Uuid, engine_id: &str, result: Value) {
        self.frame(
            from,
            json!({"type": "invocationresult", "invocation_id": engine_id, "function_id": "f",
                   "result": result}),
        );
    }

    fn fail(&mut self, from: Uuid, engine_id: &str, code: &str) {
        self.frame(
            from,
            json!({"type": "invocationresult", "invocation_id": engine_id, "function_id": "f",
                   "error": {"code": code, "message": "boom"}}),
        );
    }

    /// Takes every effect so far.
    fn take(&mut self) -> Effects {
        std::mem::take(&mut self.out)
    }

    /// Takes the frames queued for `to` (as JSON), leaving other effects alone.
    fn frames(&mut self, to: Uuid) -> Vec<Value> {
        let mut frames = Vec::new();
        self.out.retain(|e| match e {
            Effect::Send {
                to: t,
                msg: ToSession::Frame(f),
            } if *t == to => {
                frames.push(serde_json::from_str(&f.encode()).unwrap());
                false
            }
            _ => true,
        });
        frames
    }

    /// The one frame queued for `to` (panics if not exactly one).
    fn one(&mut self, to: Uuid) -> Value {
        let mut f = self.frames(to);
        assert_eq!(f.len(), 1, "frames for {to}: {f:?}");
        f.remove(0)
    }

    /// Was `w` accepted (an `Accepted` queued for it)? Takes that effect.
    fn accepted(&mut self, w: Uuid) -> bool {
        let before = self.out.len();
        self.out.retain(
            |e| !matches!(e, Effect::Send { to, msg: ToSession::Accepted { .. } } if *to == w),
        );
        before != self.out.len()
    }

    /// The last error frame queued for `to`, as `(code, message)`.
    fn error(&mut self, to: Uuid) -> (String, String) {
        let f = self.frames(to);
        let e = f
            .iter()
            .rev()
            .find(|f| f["type"] == "error")
            .unwrap_or_else(|| panic!("no error frame for {to}: {f:?}"));
        (
            e["error"]["code"].as_str().unwrap().to_string(),
            e["error"]["message"].as_str().unwrap().to_string(),
        )
    }

    /// Serves the next call queued for `callee`: returns its engine id and data.
    fn invoked(&mut self, callee: Uuid) -> (String, Value) {
        let f = self
            .frames(callee)
            .into_iter()
            .find(|f| f["type"] == "invokefunction")
            .unwrap_or_else(|| panic!("no call queued for {callee}"));
        (
            f["invocation_id"].as_str().unwrap().to_string(),
            f["data"].clone(),
        )
    }

    /// The result frame for `caller`'s invocation `id`.
    fn result(&mut self, caller: Uuid, id: Uuid) -> Value {
        let mut found = None;
        self.out.retain(|e| match e {
            Effect::Send {
                to,
                msg: ToSession::Frame(protocol::Message::InvocationResult(r)),
            } if *to == caller && r.invocation_id == id && found.is_none() => {
                let frame = protocol::Message::InvocationResult(r.clone());
                found = Some(serde_json::from_str(&frame.encode()).unwrap());
                false
            }
            _ => true,
        });
        found.unwrap_or_else(|| panic!("no result for {id}"))
    }

    /// Modules' calls queued so far: (module, engine id, function id).
    fn module_calls(&mut self) -> Vec<(usize, Uuid, String)> {
        let mut calls = Vec::new();
        self.out.retain(|e| match e {
            Effect::ModuleCall { module, call } => {
                calls.push((*module, call.engine_id, call.function_id.clone()));
                false
            }
            _ => true,
        });
        calls
    }

    /// Bindings handed to modules so far.
    fn module_bindings(&mut self) -> Vec<TriggerBinding> {
        let mut b = Vec::new();
        self.out.retain(|e| match e {
            Effect::ModuleBinding { binding, .. } => {
                b.push(binding.clone());
                false
            }
            _ => true,
        });
        b
    }

    /// Replies to modules' calls so far.
    fn replies(&mut self) -> Vec<(u64, Outcome)> {
        let mut r = Vec::new();
        self.out.retain(|e| match e {
            Effect::Reply { token, outcome } => {
                r.push((*token, outcome.clone()));
                false
            }
            _ => true,
        });
        r
    }

    /// Installs a module serving `functions` and providing `types` (engine-wide when marked).
    fn module(&mut self, owner: &'static str, functions: &[&str], types: &[(&str, bool)]) {
        self.event(Event::Install {
            owner,
            functions: functions
                .iter()
                .map(|id| BuiltinFunction {
                    id: id.to_string(),
                    description: String::new(),
                })
                .collect(),
            trigger_types: types
                .iter()
                .map(|(id, engine_wide)| BuiltinTriggerType {
                    id: id.to_string(),
                    description: String::new(),
                    engine_wide: *engine_wide,
                })
                .collect(),
        });
    }

    fn disconnect(&mut self, w: Uuid) {
        self.event(Event::Disconnect { worker_id: w });
    }

    fn tick_at(&mut self, now: Instant) {
        self.event(Event::Tick { now });
    }

    fn has_function(&self, id: &str) -> bool {
        self.r.functions.contains_key(id)
    }
}

fn payload(v: Value) -> Payload {
    Payload::from_value(&v)
}

/// Later than any default deadline.
fn much_later() -> Instant {
    Instant::now() + Duration::from_secs(120)
}
