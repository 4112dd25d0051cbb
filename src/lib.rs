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
//!  browser tab ──ws──┐  SessionActor (session.rs)       RegistryActor (registry/)        StreamActor (modules/stream/)
//!  Node worker ──ws──┼─ one per socket: frames <->  ──> functions, triggers, calls, ──> stream::* functions, store dir
//!  Python, Rust ─ws──┘  typed messages, limits, pings    connections, RBAC, prefixes <── change events -> trigger fires
//!                                                                                         consumer sockets (port 3112)
//!  ExecActor (modules/exec.rs): sh -c <command> per exec entry, III_URL = the trusted listener
//! ```
//!
//! * [`session::SessionActor`] — one per WebSocket; the only code that touches the socket.
//! * [`registry::RegistryActor`] — the single owner of routing state, on its own thread. It
//!   never awaits a worker: calls are forwarded and parked, results come back as messages.
//! * [`modules`] — one module per config entry kind: the worker listeners (`modules::worker`),
//!   the stream store and its consumer socket (`modules::stream`, a `StreamActor` on its own
//!   thread that serves `stream::*` for the registry like any function owner), and the worker
//!   processes the engine supervises (`modules::exec`, an `ExecActor` per entry).
//! * [`client`] — our Rust worker client (tests, the bench tool and Rust workers use it).
//!
//! # One invocation's path
//!
//! 1. Worker A sends `invokefunction {invocation_id: I, function_id: F}`. A's session decodes
//!    it ([`protocol::decode`]), injects `_caller_worker_id`, and sends `FromWorker` to the
//!    registry.
//! 2. The registry applies RBAC ([`rbac::decide_invoke`]), looks `F` up, parks the call under a
//!    fresh engine id E with a deadline, and sends `invokefunction {invocation_id: E}` to the
//!    owner's session (prefix stripped, §7.8).
//! 3. Worker B answers `invocationresult {invocation_id: E}`; only B may. The registry completes
//!    E and sends A `invocationresult {invocation_id: I}`.
//! 4. If B disconnects first, A gets `invocation_stopped`; if nobody answers, A gets
//!    `invocation_timeout` at the deadline.
//!
//! # Which file owns what
//!
//! | file | owns |
//! |---|---|
//! | `main.rs` | CLI, logging, signals |
//! | `engine.rs` | start/stop order of actors and listeners |
//! | `config.rs` | the config file: `${VAR:default}`, both entry forms, strict structs |
//! | `protocol.rs` | wire types, decode/encode |
//! | `error.rs` | [`error::EngineError`] and its wire codes |
//! | `rbac.rs` | pure RBAC policy: patterns, decision order, prefixes |
//! | `session.rs` | the WebSocket actor |
//! | `outbox.rs` | stall-aware delivery to socket actors (a peer that stops reading is dropped) |
//! | `registry/` | routing state: `mod.rs` messages, `connections.rs` lifecycle, `registration.rs` RBAC registrations and hooks, `invoke.rs` calls and middleware, `triggers.rs`, `engine_fns.rs` |
//! | `modules/worker.rs` | the listener (HTTP server, upgrades, static files) |
//! | `modules/stream/` | `mod.rs` the actor and fan-out, `functions.rs` the `stream::*` shapes, `ops.rs` update ops, `store.rs` the durable log + snapshots, `socket.rs` the consumer socket |
//! | `modules/exec.rs` | child processes: pipeline, restarts, output, process groups, shutdown |
//! | `client/` | the Rust worker client |

pub mod config;
pub mod engine;
pub mod error;
pub mod flow;
pub mod lograte;
pub mod messages;
pub mod modules;
pub mod outbox;
pub mod rbac;
pub mod registry;
pub mod router;
pub mod session;
pub mod socket;
pub mod update_ops;

// The wire protocol is its own crate, shared with the Rust client (`crates/iii-protocol`).
pub use iii_protocol::{deadlines, ids, payload, protocol};
