//! The bridge (`iii-bridge`, `MODULES.md` §7.1): this engine as an ordinary worker of another
//! engine, through our own worker client (`crates/iii-client`: reconnects with backoff and
//! registers everything again after each reconnect). No engine-to-engine protocol: the remote
//! engine's RBAC applies to the bridge like to any worker.
//!
//! * `expose`: registers `remote_function` on the remote engine; when the remote calls it, the
//!   local `local_function` runs (internal call) and its result or error (code, message and
//!   stacktrace kept) goes back.
//! * `forward`: a local function `local_function` that calls `remote_function` on the remote
//!   with the same payload and `timeout_ms` (30 s by default).
//! * Always: `bridge.invoke {function_id, data?, timeout_ms?}` (calls a remote function, answers
//!   its result) and `bridge.invoke_async` (sends it as a void call, answers nothing).
//!
//! Better than upstream: a forwarded call's error keeps the remote's code and message
//! (upstream flattens every failure into `bridge_error`); failures of the bridge itself (remote
//! unreachable, deadline) are `bridge_error` with the reason.

use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use crate::config::BridgeConfig;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, RegisterBuiltins, TriggerBinding,
};
use crate::modules::bad_input;
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;
use crate::router::CallRequest;
use iii_client::{Client, ClientOptions, InvocationError, TriggerRequest};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The bridge actor: owns the client connection to the remote engine.
pub struct BridgeActor {
    registry: Registry,
    config: BridgeConfig,
    client: Option<Client>,
}

/// Starts the bridge on `arbiter` and announces its local functions.
pub fn start(
    config: &BridgeConfig,
    registry: Registry,
    arbiter: &ArbiterHandle,
) -> Addr<BridgeActor> {
    let reg = registry.clone();
    let cfg = config.clone();
    let actor = BridgeActor::start_in_arbiter(arbiter, move |_| BridgeActor {
        registry: reg,
        config: cfg,
        client: None,
    });
    let mut functions = vec![
        BuiltinFunction {
            id: "bridge.invoke".into(),
            description: "Call a function of the remote engine: {function_id, data?, timeout_ms?}"
                .into(),
        },
        BuiltinFunction {
            id: "bridge.invoke_async".into(),
            description: "Send a void call to the remote engine: {function_id, data?}".into(),
        },
    ];
    functions.extend(config.forward.iter().map(|f| BuiltinFunction {
        id: f.local_function.clone(),
        description: format!("Forward to remote function {}", f.remote_function),
    }));
    registry.do_send(RegisterBuiltins {
        owner: "iii-bridge",
        functions,
        calls: actor.clone().recipient(),
        trigger_types: Vec::new(),
        bindings: actor.clone().recipient(),
    });
    actor
}

fn bridge_error(e: InvocationError) -> ErrorBody {
    match e.code.as_str() {
        // The bridge's own failures (its deadline, a stopped client): upstream's code.
        "TIMEOUT" | "SHUTDOWN" => {
            ErrorBody::new("bridge_error", format!("{}: {}", e.code, e.message))
        }
        // The remote engine's or function's error: kept as it was.
        _ => ErrorBody {
            code: e.code,
            message: e.message,
            stacktrace: e.stacktrace,
        },
    }
}

impl BridgeActor {
    /// A call of one of the bridge's local functions: the remote function and the deadline.
    fn target(&self, call: &BuiltinCall) -> Result<(String, Value, Duration, bool), ErrorBody> {
        if let Some(f) = self
            .config
            .forward
            .iter()
            .find(|f| f.local_function == call.function_id)
        {
            let timeout = f
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_TIMEOUT);
            return Ok((
                f.remote_function.clone(),
                call.data.to_value(),
                timeout,
                false,
            ));
        }
        let void = match call.function_id.as_str() {
            "bridge.invoke" => false,
            "bridge.invoke_async" => true,
            other => {
                return Err(ErrorBody::new(
                    "function_not_found",
                    format!("Function {other} not found"),
                ))
            }
        };
        let input = call.data.to_value();
        let Some(function_id) = input.get("function_id").and_then(Value::as_str) else {
            return Err(bad_input(
                &call.function_id,
                "Failed to parse invoke input: missing field `function_id`",
            ));
        };
        let timeout = input
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT);
        let data = input.get("data").cloned().unwrap_or(Value::Null);
        Ok((function_id.to_string(), data, timeout, void))
    }
}

impl Actor for BridgeActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let mut options = ClientOptions::named("iii-bridge");
        options.reconnect.initial = Duration::from_millis(200);
        options.reconnect.max = Duration::from_secs(5);
        let client = Client::start(&self.config.url, options);
        log::info!("iii-bridge: connecting to {}", self.config.url);
        for e in &self.config.expose {
            let remote = e
                .remote_function
                .clone()
                .unwrap_or_else(|| e.local_function.clone());
            let local = e.local_function.clone();
            let registry = self.registry.clone();
            client.register_function(&remote, move |data: Value| {
                let req = CallRequest::new(local.clone(), Payload::from_value(&data));
                let answer = registry.call(req);
                async move {
                    match answer.await {
                        Ok(v) => Ok(v.map(|p| p.to_value()).unwrap_or(Value::Null)),
                        Err(e) => Err(e),
                    }
                }
            });
        }
        self.client = Some(client);
    }
}

impl Handler<BuiltinCall> for BridgeActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        let engine_id = call.engine_id;
        let (function_id, payload, timeout, void) = match self.target(&call) {
            Ok(t) => t,
            Err(e) => {
                return self.registry.do_send(BuiltinDone {
                    engine_id,
                    outcome: Err(e),
                })
            }
        };
        let Some(client) = self.client.clone() else {
            let e = ErrorBody::new("bridge_error", "the bridge is not started");
            return self.registry.do_send(BuiltinDone {
                engine_id,
                outcome: Err(e),
            });
        };
        if void {
            client.trigger_void(&function_id, payload);
            return self.registry.do_send(BuiltinDone {
                engine_id,
                outcome: Ok(None),
            });
        }
        let registry = self.registry.clone();
        crate::modules::answer_later(registry, engine_id, async move {
            let req = TriggerRequest {
                function_id,
                payload,
                timeout: Some(timeout),
                metadata: None,
                action: None,
            };
            client.trigger_with(req).await.map_err(bridge_error)
        });
    }
}

impl Handler<TriggerBinding> for BridgeActor {
    type Result = ();
    fn handle(&mut self, _msg: TriggerBinding, _ctx: &mut Self::Context) {}
}
