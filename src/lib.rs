//! An actor-model iii engine.
//!
//! Workers (Node, Python, Rust, browser tabs) connect over WebSocket, register functions and
//! triggers, and call each other's functions by id; the engine routes every call, gates a public
//! listener with RBAC, keeps a durable key/value stream store, and starts the worker processes it
//! is configured to run. The wire protocol is the one the published `iii-sdk` packages speak.
//!
//! # The actor graph
//!
//! ```text
//!  browser tab ──ws──┐  Socket<WorkerSession>           Registry (registry.rs)          StreamActor (modules/stream/)
//!  Node worker ──ws──┼─ one per socket: frames <->  ──> the Router (router/) under  ──> stream::* functions, store dir
//!  Python, Rust ─ws──┘  typed messages, flow gate       one lock, run on the thread <── change events -> trigger fires
//!                       (socket.rs, session.rs)          that reports; frames go out      Socket<ConsumerSession> (port 3112)
//!                                                        by the sockets' mailboxes
//!  StateActor (modules/state/): state::*, its own store dir, `state` trigger fires
//!  QueueActor (modules/queue/): enqueue/publish in, jobs out as calls through the registry
//!  services thread: PubSubActor (publish, `subscribe`), CronActor (`cron` ticks), engine::log::*,
//!                   HttpActor (`http` routes; requests served by iii-http's own listener threads),
//!                   HttpFunctionsActor (functions behind a URL)
//!  ExecActor (modules/exec.rs): sh -c <command> per exec entry, III_URL = the trusted listener
//! ```
//!
//! * [`socket::Socket`] — the one WebSocket actor, generic over what its socket speaks:
//!   [`session::WorkerSession`] on worker listeners, the stream module's consumer session on
//!   port 3112. It is the only code that touches a socket; [`flow`] decides when it stops reading.
//! * [`registry::Registry`] — the one owner of [`router::Router`], the engine's routing state as
//!   plain data: events in, effects out, unit-tested without actix. A socket or module reports
//!   an event and it is routed right there, on the reporting thread, under the registry's lock;
//!   the effects go out through actor mailboxes. It never awaits a worker: calls are forwarded
//!   and parked, results come back as events.
//! * [`modules`] — one module per config entry kind: the worker listeners (`modules::worker`),
//!   the stream store and its consumer socket (`modules::stream`, a `StreamActor` on its own
//!   thread that serves `stream::*` for the registry like any function owner), state
//!   (`modules::state`), durable queues (`modules::queue`), pub/sub, cron and worker logs (`modules::{pubsub,cron,worker_log}`),
//!   and the worker processes the engine supervises (`modules::exec`, an `ExecActor` per entry).
//! * [`kv`] — the durable log store (log + snapshots, fsync and compaction threads) that the
//!   stream, state and queue modules each open in their own directory.
//! * `crates/iii-protocol` — the wire types, payloads, error codes and deadlines, shared with
//!   `crates/iii-client` (our Rust worker client: tests, Rust workers) and `crates/iii-bench`.
//!
//! # One invocation's path
//!
//! 1. Worker A sends `invokefunction {invocation_id: I, function_id: F}`. A's socket decodes the
//!    frame's head ([`protocol::decode`]) and keeps `data` as the raw JSON text it arrived as
//!    ([`payload::Payload`]); the registry receives it as a [`messages::FromWorker`].
//! 2. The router applies RBAC ([`rbac::decide_invoke`]), looks `F` up, parks the call under a
//!    fresh engine id E with a deadline, and sends `invokefunction {invocation_id: E}` to the
//!    owner's socket (prefix stripped, §7.8; `_caller_worker_id` spliced in as the frame is
//!    encoded).
//! 3. Worker B answers `invocationresult {invocation_id: E}`; only B may. The router completes
//!    E and sends A `invocationresult {invocation_id: I}`.
//! 4. If B disconnects first, A gets `invocation_stopped`; if nobody answers, A gets
//!    `invocation_timeout` at the deadline.
//!
//! # Which file owns what
//!
//! | file | owns |
//! |---|---|
//! | `main.rs` | CLI, logging, signals, the panic hook |
//! | `engine.rs` | start/stop order of actors and listeners, typed start-up errors |
//! | `config/` | the config file: `mod.rs` loading, `env.rs` `${VAR:default}`, `entries.rs` both entry forms, `modules.rs` strict per-module structs, `services.rs` state, pub/sub and cron, `queue.rs` iii-queue |
//! | `error.rs` | [`error::EngineError`] and its wire codes |
//! | `rbac.rs` | pure RBAC policy: patterns, decision order, prefixes |
//! | `messages.rs` | every message between actors |
//! | `socket.rs` | the WebSocket actor: frames, pings, read-ahead, refusal throttling |
//! | `session.rs` | what a worker socket says: auth, pre-auth buffering, frames to router events |
//! | `flow.rs` | per-connection flow control: bytes in the engine, when to stop reading |
//! | `outbox.rs` | stall-aware delivery to socket actors (a peer that stops reading is dropped) |
//! | `channels.rs` | channels: the table, `engine::channels::create`'s pipes, the `/ws/channels/{id}` socket protocol |
//! | `lograte.rs` | rate-limited log lines for events an attacker can cause at will |
//! | `registry.rs` | the router's owner: reports to events under one lock, effects to mailboxes, the clock thread |
//! | `router/` | routing state: `conns.rs` lifecycle and auth, `register.rs` session registrations, `calls.rs` calls, `cluster.rs` calls to and from other engines, `detours.rs` middleware and enqueue, `triggers.rs`, `engine_fns.rs`, `discovery.rs`; `tests/` |
//! | `update_ops/` | the update-op engine of `stream::update`: `parse.rs`, `apply.rs` |
//! | `modules/mod.rs` | module start-up and its errors |
//! | `modules/worker.rs` | the listener (HTTP server, upgrades, static files) |
//! | `modules/cluster/` | `iii-cluster`: `mod.rs` the function directory in Redis and calls forwarded to the engine that has the function (or through Redis pub/sub), `link.rs` the WebSocket links between engines |
//! | `redis.rs` | the connection and pub/sub listener the Redis adapters share |
//! | `metrics.rs` | `/metrics`: the router's call counters and latency histograms, what stores, queues and exec publish, the Prometheus text |
//! | `kv/` | the durable store: `store.rs` + `store/` the log and snapshots, `durable.rs` fsync and compaction threads and the answers held until durable |
//! | `modules/stream/` | `mod.rs` the actor, `functions.rs` the `stream::*` shapes, `custom.rs` streams served by a worker, `fanout.rs` triggers, `consumers.rs` + `socket.rs` the consumer socket, `redis.rs` and `bridge.rs` the Redis and other-engine backends |
//! | `modules/state/` | `mod.rs` the actor and the `state` trigger, `functions.rs` the `state::*` shapes, `redis.rs` and `bridge.rs` the Redis and other-engine backends |
//! | `modules/queue/` | `iii-queue`: `mod.rs` the actor and restore, `lanes.rs` job order (FIFO groups, delays, leases), `delivery.rs` calls, acks, retries, dead letters, `functions.rs` enqueue/publish, `admin.rs` inspect/redrive/purge, `subscribe.rs` `durable:subscriber`; `redis/` the same on Redis for engines that share it (`scripts.rs` layout and Lua, `enqueue.rs`, `deliver.rs` claims and leases, `admin.rs`) |
//! | `modules/pubsub.rs`, `cron.rs`, `worker_log.rs` | `publish` + `subscribe`; `cron` schedules; `engine::log::*` |
//! | `modules/http/` | `iii-http`: `mod.rs` listener and `http` bindings, `routes.rs` matching, `pipeline.rs` one request, `response.rs` results, envelopes, CORS |
//! | `modules/http_functions.rs` | functions behind a URL: URL rules (SSRF), signed requests, response mapping |
//! | `modules/observability/` | `iii-observability`: `mod.rs` the actor and `log`/`trace` triggers, `otlp.rs` reading OTLP/JSON, `store.rs` ring buffers and queries, `functions.rs`, `export.rs` OTLP/HTTP export |
//! | `modules/console.rs`, `modules/prometheus.rs` | the console page served from the binary; `/metrics` on its own port |
//! | `modules/fire.rs` | firing trigger bindings, with a condition's queue when they have one |
//! | `modules/exec.rs` | child processes: pipeline, restarts, output, process groups, shutdown |

pub mod channels;
pub mod config;
pub mod engine;
pub mod error;
pub mod flow;
pub mod kv;
pub mod lograte;
pub mod messages;
pub mod metrics;
pub mod modules;
pub mod outbox;
pub mod rbac;
pub mod redis;
pub mod registry;
pub mod router;
pub mod session;
pub mod socket;
pub mod update_ops;

// The wire protocol is its own crate, shared with the Rust client (`crates/iii-protocol`).
pub use iii_protocol::{deadlines, ids, payload, protocol};
