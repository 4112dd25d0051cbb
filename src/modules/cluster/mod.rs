//! Calls across engines (`iii-cluster`, this engine's own; upstream's calls never leave their
//! engine): a worker on engine A calls a function registered only on engine B, with the same
//! results, errors, deadline and `invocation_stopped` when B's worker or B itself goes away.
//!
//! Directory: every `heartbeat_ms` each engine writes `iii:cluster:engine:<id>` and the set
//! `iii:cluster:fn:<id>` of the functions its trusted workers registered, both expiring after
//! `expiry_ms`, and reads the other engines' sets: the router then forwards calls of functions
//! it does not have to this module ([`BuiltinCall`]). An engine that stops heartbeating is gone
//! within `expiry_ms` plus a heartbeat: its functions disappear and calls in flight to it fail
//! with `invocation_stopped`.
//!
//! Transport, chosen by measurement (`iii-bench cluster`, BENCH.md): `link` by default — a
//! WebSocket from the calling engine to the other engine's trusted worker listener, whose
//! address each engine advertises in the directory (`link.rs`) — measured 1.75–1.9× the call
//! rate of Redis pub/sub at half the CPU per call: one socket crossed each way instead of two,
//! and no envelope to write and parse. `transport: redis` keeps calls on Redis pub/sub
//! (`iii:cluster:call:<engine>` for calls, `iii:cluster:result:<engine>` for their outcomes,
//! JSON), for engines that reach Redis but not each other. Either way the callee engine runs a
//! forwarded call there only (never forwarding it again), RBAC stays with the engine the caller
//! is connected to, and a call lost with its engine fails with `invocation_stopped` (on a link,
//! as soon as the link drops). With several engines offering a function, calls go round-robin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use redis::aio::ConnectionManager;
use serde_json::{json, Value};
use uuid::Uuid;

mod link;

use crate::config::{ClusterConfig, ClusterTransport};
use crate::messages::{BuiltinCall, BuiltinDone, RegisterBuiltins, TriggerBinding};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;
use crate::router::CallRequest;

const PREFIX: &str = "iii:cluster";

/// A call forwarded to another engine, waiting for its outcome.
struct Forwarded {
    engine: String,
}

/// The cluster actor. See the module docs.
pub struct ClusterActor {
    registry: Registry,
    conn: ConnectionManager,
    me: String,
    config: ClusterConfig,
    /// Function → engines offering it.
    directory: BTreeMap<String, Vec<String>>,
    /// Engines seen in the last directory read.
    engines: HashSet<String>,
    /// Our call id → the engine call it answers.
    forwarded: HashMap<String, (Uuid, Forwarded)>,
    turn: usize,
    /// `link`: the address this engine advertises (once its listeners are up).
    advertised: Option<String>,
    /// `link`: each other engine's advertised address.
    addresses: HashMap<String, String>,
    links: link::Links,
}

/// `link`: the address of this engine's first trusted worker listener, for the directory.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Advertise(pub String);

/// A message on one of this engine's channels.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming {
    channel: String,
    body: Value,
}

/// The outcome of a call served for another engine, to send back.
#[derive(Message)]
#[rtype(result = "()")]
struct Reply {
    channel: String,
    body: Value,
}

/// The directory the last heartbeat read (functions → engines, engines → addresses), and this
/// engine's own functions it announced.
#[derive(Message)]
#[rtype(result = "()")]
struct Directory(Found, Vec<String>);

/// What a directory read found.
struct Found {
    functions: BTreeMap<String, Vec<String>>,
    addresses: HashMap<String, String>,
}

/// Starts the actor on `arbiter`; this engine joins the cluster of `client`'s Redis.
pub fn start(
    config: &ClusterConfig,
    registry: Registry,
    arbiter: &ArbiterHandle,
    (client, conn): (redis::Client, ConnectionManager),
) -> Addr<ClusterActor> {
    let me = Uuid::new_v4().to_string();
    log::info!("iii-cluster: this engine is {me}");
    let reg = registry.clone();
    let config = config.clone();
    let actor = ClusterActor::start_in_arbiter(arbiter, move |ctx| {
        let addr = ctx.address();
        crate::redis::listen(
            client,
            format!("{PREFIX}:*:{me}"),
            move |channel, payload| match serde_json::from_slice(&payload) {
                Ok(body) => addr.do_send(Incoming { channel, body }),
                Err(e) => log::warn!("iii-cluster: unreadable message on {channel}: {e}"),
            },
        );
        ClusterActor {
            registry: reg,
            conn,
            me,
            config,
            directory: BTreeMap::new(),
            engines: HashSet::new(),
            forwarded: HashMap::new(),
            turn: 0,
            advertised: None,
            addresses: HashMap::new(),
            links: link::Links::default(),
        }
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-cluster",
        functions: Vec::new(),
        calls: actor.clone().recipient(),
        trigger_types: Vec::new(),
        bindings: actor.clone().recipient(),
    });
    actor
}

impl ClusterActor {
    /// Announces this engine and its functions, and reads the others' (off the actor).
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let (mut conn, me, ttl) = (self.conn.clone(), self.me.clone(), self.config.expiry_ms);
        let functions = self.registry.shared_functions();
        let address = match self.config.transport {
            ClusterTransport::Link => self.advertised.clone().unwrap_or_default(),
            ClusterTransport::Redis => String::new(),
        };
        let addr = ctx.address();
        actix::spawn(async move {
            let set = format!("{PREFIX}:fn:{me}");
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(format!("{PREFIX}:engine:{me}"))
                .arg(address)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("DEL")
                .arg(&set)
                .ignore();
            if !functions.is_empty() {
                pipe.cmd("SADD").arg(&set).arg(&functions).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl).ignore();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                return log::warn!("iii-cluster: heartbeat failed: {e}");
            }
            match read_directory(&mut conn, &me).await {
                Ok(d) => addr.do_send(Directory(d, functions)),
                Err(e) => log::warn!("iii-cluster: cannot read the directory: {e}"),
            }
        });
    }

    fn send(&self, channel: String, body: Value) {
        let mut conn = self.conn.clone();
        actix::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(body.to_string())
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                log::warn!("iii-cluster: cannot publish on {channel}: {e}");
            }
        });
    }

    /// A call the router could not serve here: to the next engine that offers it.
    fn forward(&mut self, call: BuiltinCall) {
        let engines = self
            .directory
            .get(&call.function_id)
            .cloned()
            .unwrap_or_default();
        if engines.is_empty() {
            let err = ErrorBody::new(
                "function_not_found",
                format!("Function {} not found", call.function_id),
            );
            return self.registry.do_send(BuiltinDone {
                engine_id: call.engine_id,
                outcome: Err(err),
            });
        }
        self.turn = self.turn.wrapping_add(1);
        let engine = engines[self.turn % engines.len()].clone();
        if let Some(url) = self.addresses.get(&engine).filter(|u| !u.is_empty()) {
            let client = self.links.to(&engine, url);
            let (registry, engine_id) = (self.registry.clone(), call.engine_id);
            let caller = call.caller.as_deref().map(str::to_string);
            let work = link::call(
                client,
                call.function_id,
                call.data.to_value(),
                caller,
                call.timeout,
            );
            return crate::modules::answer_later(registry, engine_id, work);
        }
        let id = Uuid::new_v4().to_string();
        let body = json!({"id": id, "from": self.me, "function_id": call.function_id,
                          "data": call.data.to_value(), "caller": call.caller.as_deref()});
        self.forwarded.insert(
            id,
            (
                call.engine_id,
                Forwarded {
                    engine: engine.clone(),
                },
            ),
        );
        self.send(format!("{PREFIX}:call:{engine}"), body);
    }

    /// A call another engine forwarded here: run it as an internal call, send the outcome back.
    fn serve(&self, body: &Value, ctx: &mut Context<Self>) {
        let (Some(id), Some(from), Some(function_id)) = (
            body["id"].as_str(),
            body["from"].as_str(),
            body["function_id"].as_str(),
        ) else {
            return;
        };
        let mut req = CallRequest::new(function_id, Payload::from_value(&body["data"]));
        req.local_only = true;
        req.caller = body["caller"].as_str().map(std::sync::Arc::from);
        let (id, channel, addr) = (
            id.to_string(),
            format!("{PREFIX}:result:{from}"),
            ctx.address(),
        );
        self.registry.call_then(req, move |outcome| {
            let body = match outcome {
                Ok(r) => json!({"id": id, "result": r.map(|p| p.to_value())}),
                Err(e) => json!({"id": id, "error": e}),
            };
            addr.do_send(Reply { channel, body });
        });
    }

    /// An outcome of a call this engine forwarded.
    fn answered(&mut self, body: &Value) {
        let Some((engine_id, _)) = body["id"].as_str().and_then(|id| self.forwarded.remove(id))
        else {
            return;
        };
        let outcome = match body.get("error") {
            Some(e) if !e.is_null() => Err(serde_json::from_value(e.clone())
                .unwrap_or_else(|_| ErrorBody::new("invocation_failed", e.to_string()))),
            _ => Ok(body
                .get("result")
                .filter(|r| !r.is_null())
                .map(Payload::from_value)),
        };
        self.registry.do_send(BuiltinDone { engine_id, outcome });
    }

    /// A new directory: the router's remote functions, and calls to engines that are gone fail.
    fn adopt(&mut self, found: Found, local: Vec<String>) {
        let Found {
            functions: directory,
            addresses,
        } = found;
        let engines: HashSet<String> = directory.values().flatten().cloned().collect();
        self.links.keep(&engines);
        self.addresses = addresses;
        let gone: Vec<String> = self.engines.difference(&engines).cloned().collect();
        if !gone.is_empty() {
            log::warn!(
                "iii-cluster: engine(s) {} stopped answering; their calls in flight fail",
                gone.join(", ")
            );
            let lost: Vec<String> = self
                .forwarded
                .iter()
                .filter(|(_, (_, f))| gone.contains(&f.engine))
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                if let Some((engine_id, _)) = self.forwarded.remove(&id) {
                    let err = ErrorBody::new(
                        "invocation_stopped",
                        "Invocation stopped: the engine serving it went away",
                    );
                    self.registry.do_send(BuiltinDone {
                        engine_id,
                        outcome: Err(err),
                    });
                }
            }
        }
        self.engines = engines;
        let local: HashSet<String> = local.into_iter().collect();
        let remote = directory
            .keys()
            .filter(|f| !local.contains(*f))
            .cloned()
            .collect();
        self.registry.set_remote_functions(remote);
        self.directory = directory;
    }
}

/// Every other engine's functions (function → engines) and advertised addresses.
async fn read_directory(conn: &mut ConnectionManager, me: &str) -> redis::RedisResult<Found> {
    let mut directory: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{PREFIX}:fn:*"))
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await?;
        for key in keys {
            let Some(engine) = key.rsplit(':').next().filter(|e| *e != me) else {
                continue;
            };
            let functions: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(conn).await?;
            for f in functions {
                directory.entry(f).or_default().push(engine.to_string());
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let engines: Vec<String> = directory
        .values()
        .flatten()
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut addresses = HashMap::new();
    if !engines.is_empty() {
        let keys: Vec<String> = engines
            .iter()
            .map(|e| format!("{PREFIX}:engine:{e}"))
            .collect();
        let urls: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        for (e, url) in engines.into_iter().zip(urls) {
            if let Some(u) = url.filter(|u| u.starts_with("ws")) {
                addresses.insert(e, u);
            }
        }
    }
    Ok(Found {
        functions: directory,
        addresses,
    })
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.heartbeat(ctx);
        let every = Duration::from_millis(self.config.heartbeat_ms.max(100));
        ctx.run_interval(every, |act, ctx| act.heartbeat(ctx));
    }
}

impl Handler<BuiltinCall> for ClusterActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        self.forward(call);
    }
}

impl Handler<Incoming> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: Incoming, ctx: &mut Self::Context) {
        if msg.channel.starts_with(&format!("{PREFIX}:call:")) {
            self.serve(&msg.body, ctx);
        } else if msg.channel.starts_with(&format!("{PREFIX}:result:")) {
            self.answered(&msg.body);
        }
    }
}

impl Handler<Reply> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: Reply, _ctx: &mut Self::Context) {
        self.send(msg.channel, msg.body);
    }
}

impl Handler<Directory> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: Directory, _ctx: &mut Self::Context) {
        self.adopt(msg.0, msg.1);
    }
}

impl Handler<Advertise> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: Advertise, ctx: &mut Self::Context) {
        if self.config.transport == ClusterTransport::Link {
            log::info!("iii-cluster: other engines call this one at {}", msg.0);
            self.advertised = Some(msg.0);
            self.heartbeat(ctx);
        }
    }
}

impl Handler<TriggerBinding> for ClusterActor {
    type Result = ();
    fn handle(&mut self, _msg: TriggerBinding, _ctx: &mut Self::Context) {}
}
