//! `SessionActor`: one per WebSocket connection on a worker listener; the only code that touches
//! the WebSocket crate.
//!
//! It turns frames into typed [`protocol::Message`]s for the registry and registry output
//! ([`ToSession`]) back into frames. It owns what belongs to the socket: frame limits and
//! continuation reassembly (`max_frame_bytes` / `max_message_bytes`), WebSocket and JSON
//! ping/pong, a heartbeat (the engine pings and closes a peer that stays silent past
//! `idle_timeout_ms`), precise answers to bad frames (an `error` frame, or an error
//! `invocationresult` when a broken call's id can be read), and the `_caller_worker_id`
//! injection of §4.3. When it stops, the registry is told (`Disconnect`) and cleans up.
//!
//! Flow control ([`Flow`]): the socket is read only while the connection's counts in the engine
//! are under their limits (see `flow.rs`). Until the registry accepts the connection (its auth
//! function may still run) the frames it sends are kept as raw text, counted against its
//! queued-bytes limit, and handed over in order once it is accepted. Unfinished fragmented
//! messages are charged to the listener's [`Budget`]; one that does not fit closes the socket
//! with 1013.
//!
//! A session on `/otel` only drains telemetry: it is never registered as a worker. On a listener
//! with `rbac` it is authenticated like any connection first (and read only once accepted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use serde_json::json;
use uuid::Uuid;

use crate::config::ListenerConfig;
use crate::flow::{Budget, Flow};
use crate::messages::{Connect, Disconnect, FromWorker, ToSession};
use crate::protocol::{self, Decoded, ErrorBody, ErrorFrame};
use crate::registry::RegistryActor;
use crate::router::PeerInfo;

/// Flips to `true` when the engine shuts down; every socket then closes with 1001.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Closes the socket of `ctx` (code 1001, "engine shutting down") when `shutdown` flips.
pub fn close_on_shutdown<A>(ctx: &mut ws::WebsocketContext<A>, mut shutdown: Shutdown)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    let flipped = async move {
        let _ = shutdown.wait_for(|down| *down).await;
    };
    ctx.spawn(actix::fut::wrap_future::<_, A>(flipped).map(
        |_, _, ctx: &mut ws::WebsocketContext<A>| {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Away,
                description: Some("engine shutting down".into()),
            }));
            ctx.stop();
        },
    ));
}

/// Consecutive invalid frames after which a connection is closed (policy violation).
const MAX_INVALID_STREAK: u32 = 16;

/// Binary frames with these prefixes carry OTLP telemetry and are drained.
const TELEMETRY_PREFIXES: [&[u8]; 3] = [b"OTLP", b"MTRC", b"LOGS"];

/// Which socket of a listener this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Worker,
    Telemetry,
}

/// One WebSocket connection.
pub struct SessionActor {
    worker_id: Uuid,
    /// `worker_id` as text, injected into every call this connection makes.
    worker_id_text: Arc<str>,
    kind: SessionKind,
    registry: Addr<RegistryActor>,
    listener: Arc<ListenerConfig>,
    peer: Option<PeerInfo>,
    last_inbound: Instant,
    /// A fragmented message being reassembled: (is_text, bytes so far), charged to `budget`.
    partial: Option<(bool, BytesMut)>,
    invalid_streak: u32,
    flow: Arc<Flow>,
    budget: Arc<Budget>,
    /// The registry accepted the connection; until then frames wait in `early`.
    accepted: bool,
    early: std::collections::VecDeque<Bytes>,
    shutdown: Option<Shutdown>,
}

impl SessionActor {
    pub fn new(
        kind: SessionKind,
        registry: Addr<RegistryActor>,
        listener: Arc<ListenerConfig>,
        peer: PeerInfo,
        flow: Arc<Flow>,
        budget: Arc<Budget>,
        shutdown: Shutdown,
    ) -> Self {
        let worker_id = Uuid::new_v4();
        // A telemetry socket of an RBAC listener is not read before its auth function agrees.
        let gated_telemetry = kind == SessionKind::Telemetry && listener.rbac.is_some();
        flow.hold(gated_telemetry);
        SessionActor {
            worker_id,
            worker_id_text: Arc::from(worker_id.to_string()),
            kind,
            registry,
            listener,
            peer: Some(peer),
            last_inbound: Instant::now(),
            partial: None,
            invalid_streak: 0,
            accepted: kind == SessionKind::Telemetry && !gated_telemetry,
            flow,
            budget,
            early: std::collections::VecDeque::new(),
            shutdown: Some(shutdown),
        }
    }

    /// Does this session report to the registry (every worker socket, and telemetry sockets
    /// that need authenticating)?
    fn registered(&self) -> bool {
        self.kind == SessionKind::Worker || self.listener.rbac.is_some()
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let idle = Duration::from_millis(self.listener.idle_timeout_ms);
        if self.last_inbound.elapsed() > idle {
            log::warn!(
                "worker {}: nothing received for {} ms (no pong either); closing",
                self.worker_id,
                idle.as_millis()
            );
            close(ctx, ws::CloseCode::Away, "idle timeout");
            return;
        }
        ctx.ping(b"");
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, msg: &protocol::Message) {
        ctx.text(msg.encode());
    }

    /// One complete text message (or a binary one holding JSON).
    fn handle_text(&mut self, text: &str, backing: &Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        let text = text.trim();
        if text.is_empty() || self.kind == SessionKind::Telemetry {
            return;
        }
        if !self.accepted {
            // Kept raw until the registry accepts the connection; counted, so a flood waits.
            self.flow.frame_in(text.len());
            self.early.push_back(backing.slice_ref(text.as_bytes()));
            return;
        }
        self.process(text, backing, false, ctx);
    }

    /// Decodes and handles one frame (payloads stay views into `backing`); `counted` when
    /// [`Flow::frame_in`] already counted it.
    fn process(
        &mut self,
        text: &str,
        backing: &Bytes,
        counted: bool,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let forwarded = match protocol::decode_shared(text, Some(backing)) {
            Ok(Decoded::Message(msg)) => {
                self.invalid_streak = 0;
                self.handle_message(msg, text.len(), counted, ctx)
            }
            Ok(Decoded::Ignored(ty)) => {
                self.invalid_streak = 0;
                log::debug!("worker {}: ignoring a {ty} frame", self.worker_id);
                false
            }
            Err(e) => {
                self.reject_frame(e, ctx);
                false
            }
        };
        if counted && !forwarded {
            self.flow.frame_done(text.len());
        }
    }

    /// Handles a decoded frame; returns whether it went to the registry.
    fn handle_message(
        &mut self,
        msg: protocol::Message,
        bytes: usize,
        counted: bool,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> bool {
        let msg = match msg {
            protocol::Message::Ping => {
                self.send(ctx, &protocol::Message::Pong);
                return false;
            }
            protocol::Message::Pong => return false,
            protocol::Message::InvokeFunction(mut inv) => {
                inv.caller = Some(self.worker_id_text.clone());
                protocol::Message::InvokeFunction(inv)
            }
            other => other,
        };
        if !counted {
            self.flow.frame_in(bytes);
        }
        self.registry.do_send(FromWorker {
            worker_id: self.worker_id,
            msg,
            bytes,
        });
        true
    }

    /// The registry accepted the connection: handle what arrived meanwhile, in order.
    fn on_accepted(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.accepted = true;
        self.flow.hold(false);
        while let Some(frame) = self.early.pop_front() {
            // Checked when it arrived; a frame that is not UTF-8 never gets here.
            if let Ok(text) = std::str::from_utf8(&frame) {
                self.process(text, &frame, true, ctx);
            }
        }
    }

    /// Answers a frame that could not be used, and closes after too many in a row.
    fn reject_frame(&mut self, e: protocol::DecodeError, ctx: &mut ws::WebsocketContext<Self>) {
        log::warn!(
            "worker {}: bad frame ({}): {}",
            self.worker_id,
            e.code,
            e.message
        );
        let body = ErrorBody::new(e.code, e.message);
        match e.invocation {
            Some((invocation_id, function_id)) => ctx.text(
                json!({"type": "invocationresult", "invocation_id": invocation_id,
                       "function_id": function_id, "error": body})
                .to_string(),
            ),
            None => self.send(ctx, &protocol::Message::Error(ErrorFrame { error: body })),
        }
        self.invalid_streak += 1;
        if self.invalid_streak > MAX_INVALID_STREAK {
            log::warn!(
                "worker {}: {} invalid frames in a row; closing",
                self.worker_id,
                self.invalid_streak
            );
            close(ctx, ws::CloseCode::Policy, "too many invalid frames");
        }
    }

    fn handle_binary(&mut self, data: Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        if TELEMETRY_PREFIXES.iter().any(|p| data.starts_with(p)) {
            return;
        }
        match std::str::from_utf8(&data) {
            Ok(text) => self.handle_text(text, &data, ctx),
            Err(_) => self.reject_frame(
                protocol::DecodeError {
                    code: "invalid_message",
                    message: "binary frame is neither telemetry (OTLP/MTRC/LOGS) nor UTF-8 JSON"
                        .into(),
                    invocation: None,
                },
                ctx,
            ),
        }
    }

    fn handle_continuation(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (first, chunk, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(is_text) = first {
            self.release_partial();
            self.partial = Some((is_text, BytesMut::new()));
        }
        let Some((is_text, buf)) = self.partial.as_mut() else {
            log::warn!(
                "worker {}: continuation frame without a first frame; closing",
                self.worker_id
            );
            return close(
                ctx,
                ws::CloseCode::Protocol,
                "unexpected continuation frame",
            );
        };
        if buf.len() + chunk.len() > self.listener.max_message_bytes {
            log::warn!(
                "worker {}: fragmented message over {} bytes; closing",
                self.worker_id,
                self.listener.max_message_bytes
            );
            return close(ctx, ws::CloseCode::Size, "message too big");
        }
        if !self.budget.try_take(chunk.len()) {
            log::warn!(
                "worker {}: the listener holds {} bytes of unfinished messages (max_inflight_bytes {}); closing this one",
                self.worker_id,
                self.budget.used(),
                self.listener.max_inflight_bytes
            );
            return close(
                ctx,
                ws::CloseCode::Again,
                "engine busy: too much unfinished data on this listener",
            );
        }
        buf.extend_from_slice(&chunk);
        if last {
            let is_text = *is_text;
            let data = self.take_partial().unwrap_or_default();
            if is_text {
                match std::str::from_utf8(&data) {
                    Ok(text) => self.handle_text(text, &data, ctx),
                    Err(_) => close(
                        ctx,
                        ws::CloseCode::Invalid,
                        "invalid UTF-8 in a text message",
                    ),
                }
            } else {
                self.handle_binary(data, ctx);
            }
        }
    }
}

impl SessionActor {
    /// The finished message, its bytes given back to the listener's budget.
    fn take_partial(&mut self) -> Option<Bytes> {
        let (_, buf) = self.partial.take()?;
        self.budget.give(buf.len());
        Some(buf.freeze())
    }

    fn release_partial(&mut self) {
        let _ = self.take_partial();
    }
}

fn close(ctx: &mut ws::WebsocketContext<SessionActor>, code: ws::CloseCode, reason: &str) {
    ctx.close(Some(ws::CloseReason {
        code,
        description: Some(reason.to_string()),
    }));
    ctx.stop();
}

impl Actor for SessionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Flow control bounds what waits here; the mailbox itself is not the limit.
        ctx.set_mailbox_capacity(1024);
        let interval = Duration::from_millis(self.listener.heartbeat_interval_ms);
        ctx.run_interval(interval, |act, ctx| act.heartbeat(ctx));
        if let Some(shutdown) = self.shutdown.take() {
            close_on_shutdown(ctx, shutdown);
        }
        if self.registered() {
            let peer = self.peer.take().unwrap_or_default();
            self.registry.do_send(Connect {
                worker_id: self.worker_id,
                session: ctx.address().recipient(),
                listener: self.listener.clone(),
                peer,
                flow: self.flow.clone(),
                telemetry: self.kind == SessionKind::Telemetry,
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.release_partial();
        for frame in self.early.drain(..) {
            self.flow.frame_done(frame.len());
        }
        if self.registered() {
            self.registry.do_send(Disconnect {
                worker_id: self.worker_id,
            });
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_inbound = Instant::now();
        let msg = match item {
            Ok(m) => m,
            Err(ws::ProtocolError::Overflow) => {
                log::warn!(
                    "worker {}: frame over {} bytes; closing",
                    self.worker_id,
                    self.listener.max_frame_bytes
                );
                return close(ctx, ws::CloseCode::Size, "frame too big");
            }
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                log::warn!(
                    "worker {}: invalid UTF-8 in a text frame; closing",
                    self.worker_id
                );
                return close(ctx, ws::CloseCode::Invalid, "invalid UTF-8");
            }
            Err(ws::ProtocolError::Io(e)) => {
                // The peer went away without a close frame (a closed tab, a cut network).
                log::info!("worker {}: connection lost ({e})", self.worker_id);
                return ctx.stop();
            }
            Err(e) => {
                log::warn!("worker {}: protocol error: {e}; closing", self.worker_id);
                return close(ctx, ws::CloseCode::Protocol, "protocol error");
            }
        };
        match msg {
            ws::Message::Text(text) => self.handle_text(&text, text.as_bytes(), ctx),
            ws::Message::Binary(data) => self.handle_binary(data, ctx),
            ws::Message::Continuation(item) => self.handle_continuation(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                log::debug!("worker {}: closed by peer ({reason:?})", self.worker_id);
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<ToSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        self.flow.out_written(msg.wire_len());
        match msg {
            ToSession::Frame(frame) => self.send(ctx, &frame),
            ToSession::Accepted { reattach_token } => {
                if self.kind == SessionKind::Worker {
                    let welcome = protocol::Message::WorkerRegistered(protocol::WorkerRegistered {
                        worker_id: self.worker_id,
                        reattach_token,
                    });
                    self.send(ctx, &welcome);
                }
                self.on_accepted(ctx);
            }
            ToSession::Reject(error) => {
                self.send(ctx, &protocol::Message::Error(ErrorFrame { error }));
                ctx.close(None);
                ctx.stop();
            }
            ToSession::Close(reason) => {
                log::info!("worker {}: closing: {reason}", self.worker_id);
                close(ctx, ws::CloseCode::Policy, &reason);
            }
        }
    }
}
