//! The state module (`iii-state`, `MODULES.md` §1): a `StateActor` that owns a key/value store
//! (scope › key → JSON value), serves the `state::*` functions for the registry like any
//! function owner, and provides the `state` trigger type.
//!
//! Who sends what: the registry sends [`BuiltinCall`] (a call of a `state::*` function) and
//! [`TriggerBinding`] (a `state` binding); the engine sends [`Close`] at shutdown.
//!
//! The store is the stream module's (`crate::kv`): with `store_method: file_based` a write is in
//! the log of its own directory before it is acknowledged and survives `kill -9`; with
//! `fsync: always` the answer also waits for the fsync. Then the call is answered, then every
//! matching `state` binding is fired (through its condition's queue if it has one), unless
//! `triggers_enabled: false`. The actor runs on its own arbiter: file I/O never blocks the
//! socket-serving threads.
//!
//! With the `redis` adapter the data lives in Redis instead (`redis.rs`): calls run there, and
//! the actor fires its `state` triggers for the changes every engine publishes.
//!
//! With the `bridge` adapter every call goes to another engine (`bridge.rs`), and this actor
//! fires its local `state` triggers from the results.
//!
//! Files: `functions.rs` (the functions and their shapes), `redis.rs` (the Redis backend),
//! `bridge.rs` (the remote engine as the backend).

mod bridge;
pub mod functions;
mod redis;

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use crate::config::StateConfig;
use crate::kv::durable::{self, CompactionDone, Durability, Mode, Synced};
use crate::kv::store::Store;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::modules::fire::{config_text, Route};
use crate::modules::ModuleError;
use crate::payload::Payload;
use crate::registry::Registry;
use functions::StateChange;

/// How often compaction is considered.
const MAINTENANCE: Duration = Duration::from_secs(1);

/// Stop: flush and close the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// A `state` binding: optional scope and key filters, and the way to its function.
struct Binding {
    scope: Option<String>,
    key: Option<String>,
    route: Route,
}

impl Binding {
    fn matches(&self, c: &StateChange) -> bool {
        self.scope.as_ref().is_none_or(|s| *s == c.scope)
            && self.key.as_ref().is_none_or(|k| *k == c.key)
    }
}

/// The state actor. See the module docs.
pub struct StateActor {
    store: Store,
    /// The `bridge` adapter: the remote engine to call (a client, this engine as its worker).
    bridge: Option<(String, Option<iii_client::Client>)>,
    /// The `redis` adapter: client (for the event listener) and command connection.
    redis: Option<(::redis::Client, ::redis::aio::ConnectionManager)>,
    registry: Registry,
    durable: Option<Durability<StateChange>>,
    mode: Mode,
    triggers_enabled: bool,
    max_value_bytes: Option<usize>,
    bindings: HashMap<String, Binding>,
}

/// A started state module.
pub struct StateModule {
    actor: Addr<StateActor>,
    arbiter: Arbiter,
}

/// Opens the store (or takes the Redis connection), starts the actor and announces its
/// functions and trigger type.
pub fn start(
    config: &StateConfig,
    registry: Registry,
    redis: Option<(::redis::Client, ::redis::aio::ConnectionManager)>,
) -> Result<StateModule, ModuleError> {
    let shared = redis.is_some() || config.adapter.bridge_url.is_some();
    let (store, mode) = match shared {
        true => (Store::in_memory(), Mode::EverySecond),
        false => crate::kv::open(&config.adapter.kv, &config.directory(), "state")?,
    };
    let bridge = config.adapter.bridge_url.clone().map(|url| (url, None));
    let arbiter = Arbiter::new();
    let reg = registry.clone();
    let (triggers_enabled, max_value_bytes) = (config.triggers_enabled, config.value_limit());
    let actor = StateActor::start_in_arbiter(&arbiter.handle(), move |_| StateActor {
        store,
        bridge,
        redis,
        registry: reg,
        durable: None,
        mode,
        triggers_enabled,
        max_value_bytes,
        bindings: HashMap::new(),
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-state",
        functions: functions::FUNCTIONS
            .iter()
            .map(|(id, d)| BuiltinFunction {
                id: id.to_string(),
                description: d.to_string(),
            })
            .collect(),
        calls: actor.clone().recipient(),
        trigger_types: vec![BuiltinTriggerType {
            id: "state".into(),
            description: "State trigger".into(),
            engine_wide: false,
        }],
        bindings: actor.clone().recipient(),
    });
    Ok(StateModule { actor, arbiter })
}

impl StateModule {
    /// Flushes and closes the store.
    pub async fn stop(self) {
        let _ = self.actor.send(Close).await;
        self.arbiter.stop();
    }
}

impl StateActor {
    fn handle_call(&mut self, call: BuiltinCall, ctx: &mut Context<Self>) {
        if let Some((_, Some(client))) = &self.bridge {
            let engine_id = call.engine_id;
            let input = call.data.to_value();
            let op = functions::plan(&call.function_id, input.clone(), self.max_value_bytes);
            let (client, registry, addr) = (client.clone(), self.registry.clone(), ctx.address());
            let function_id = call.function_id;
            crate::modules::answer_later(registry, engine_id, async move {
                let (value, change) = bridge::exec(client, function_id, input, op?).await?;
                if let Some(c) = change {
                    addr.do_send(Changed(c));
                }
                Ok(value)
            });
            return;
        }
        if let Some((_, conn)) = &self.redis {
            let engine_id = call.engine_id;
            let op = functions::plan(
                &call.function_id,
                call.data.to_value(),
                self.max_value_bytes,
            );
            let (conn, max, registry) = (conn.clone(), self.max_value_bytes, self.registry.clone());
            crate::modules::answer_later(registry, engine_id, async move {
                Ok(redis::exec(conn, op?, max).await?.0)
            });
            return;
        }
        let (outcome, change) = functions::call(
            &mut self.store,
            &call.function_id,
            call.data.to_value(),
            self.max_value_bytes,
        );
        if let Err(e) = &outcome {
            if e.code.ends_with("_ERROR") && e.code != "deserialization_error" {
                log::error!("{}: {}", call.function_id, e.message);
            }
        }
        let done = BuiltinDone {
            engine_id: call.engine_id,
            outcome: outcome.map(|v| v.map(|v| Payload::from_value(&v))),
        };
        let seq = self.store.last_seq();
        let ready = match &mut self.durable {
            Some(d) => d.admit(seq, done, change),
            None => Some(durable::Held::now(done, change)),
        };
        if let Some(held) = ready {
            self.release(held);
        }
    }

    /// Answers a call and announces its change (once its write is durable).
    fn release(&mut self, held: durable::Held<StateChange>) {
        self.registry.do_send(held.done);
        if let Some(change) = held.change {
            self.announce(&change);
        }
    }

    fn announce(&self, change: &StateChange) {
        if !self.triggers_enabled {
            return;
        }
        let mut matching = self
            .bindings
            .values()
            .filter(|b| b.matches(change))
            .peekable();
        if matching.peek().is_none() {
            return;
        }
        let payload = Payload::from_value(&change.payload());
        for b in matching {
            b.route.send(&self.registry, payload.clone());
        }
    }

    fn bind(&mut self, id: String, function_id: String, config: Value, metadata: Option<Value>) {
        let parsed = (|| -> Result<_, String> {
            if !config.is_object() {
                return Err(format!(
                    "Failed to parse trigger config: expected an object, got {config}"
                ));
            }
            Ok((
                config_text(&config, "scope", "state")?,
                config_text(&config, "key", "state")?,
                config_text(&config, "condition_function_id", "state")?,
            ))
        })();
        match parsed {
            Ok((scope, key, condition)) => {
                let route = Route::new(&self.registry, &id, function_id, condition, metadata);
                self.bindings.insert(id, Binding { scope, key, route });
            }
            Err(message) => {
                self.registry.reject_binding(id, message);
            }
        }
    }
}

impl Actor for StateActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some((url, client)) = &mut self.bridge {
            let mut options = iii_client::ClientOptions::named("iii-state-bridge");
            options.reconnect.initial = Duration::from_millis(200);
            options.reconnect.max = Duration::from_secs(5);
            *client = Some(iii_client::Client::start(url, options));
            log::info!("iii-state: calls go to the engine at {url} (bridge adapter)");
        }
        if let Some((client, _)) = &self.redis {
            let addr = ctx.address();
            crate::redis::listen(client.clone(), redis::EVENTS.into(), move |_, payload| {
                match serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .as_ref()
                    .and_then(redis::change_of)
                {
                    Some(change) => addr.do_send(Changed(change)),
                    None => log::warn!("iii-state: an unreadable change event was dropped"),
                }
            });
        }
        self.durable = Some(Durability::new(
            "state",
            &self.store,
            self.mode,
            ctx.address().recipient(),
            self.registry.metrics().store("state"),
        ));
        ctx.run_interval(MAINTENANCE, |act, ctx| {
            if let Some(d) = &mut act.durable {
                d.maintain(&mut act.store, ctx.address().recipient());
            }
        });
    }
}

impl Handler<BuiltinCall> for StateActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, ctx: &mut Self::Context) {
        self.handle_call(call, ctx);
    }
}

impl Handler<TriggerBinding> for StateActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, _ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => self.bind(id, function_id, config, metadata),
            TriggerBinding::Unbind { id } => {
                self.bindings.remove(&id);
            }
        }
    }
}

/// A change some engine made through Redis: fire this engine's `state` triggers.
#[derive(Message)]
#[rtype(result = "()")]
struct Changed(StateChange);

impl Handler<Changed> for StateActor {
    type Result = ();
    fn handle(&mut self, msg: Changed, _ctx: &mut Self::Context) {
        self.announce(&msg.0);
    }
}

impl Handler<Close> for StateActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        for h in durable::shut_down("state", &mut self.durable, &mut self.store) {
            self.registry.do_send(h.done);
        }
        ctx.stop();
    }
}

impl Handler<Synced> for StateActor {
    type Result = ();
    fn handle(&mut self, msg: Synced, _ctx: &mut Self::Context) {
        let Some(d) = &mut self.durable else {
            return;
        };
        for held in d.synced(msg.0, &mut self.store) {
            self.release(held);
        }
    }
}

impl Handler<CompactionDone> for StateActor {
    type Result = ();
    fn handle(&mut self, msg: CompactionDone, _ctx: &mut Self::Context) {
        if let Some(d) = &mut self.durable {
            d.compaction_done(msg.0, &mut self.store);
        }
    }
}
