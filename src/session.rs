//! [`WorkerSession`]: what a socket on a worker listener says (the [`Protocol`] of its
//! [`Socket`](crate::socket::Socket)). It turns frames into typed [`protocol::Message`]s for the registry and the
//! registry's [`ToSession`] back into frames; answers bad frames precisely (an `error` frame,
//! or an error `invocationresult` when a broken call's id can be read) and closes after too
//! many in a row; answers JSON pings; marks every call with the caller's id for §4.3. When it
//! stops, the registry is told (`Disconnect`) and cleans up.
//!
//! Until the registry accepts the connection (its auth function may still run) the frames it
//! sends are kept as raw text, counted against its flow's queued-bytes limit, and handed over
//! in order once it is accepted.
//!
//! A session on `/otel` only carries telemetry (handed to `iii-observability`, or dropped when
//! its queue is full): it is never registered as a worker. On a listener
//! with `rbac` it is authenticated like any connection first (and read only once accepted).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;
use serde_json::json;
use uuid::Uuid;

use crate::config::ListenerConfig;
use crate::error::Code;
use crate::flow::Flow;
use crate::messages::{Connect, Disconnect, FromWorker, ToSession};
use crate::protocol::{self, Decoded, ErrorBody, ErrorFrame};
use crate::registry::Registry;
use crate::router::PeerInfo;
use crate::socket::{close, Ctx, Limits, Protocol};

/// Consecutive invalid frames after which a connection is closed (policy violation).
const MAX_INVALID_STREAK: u32 = 16;

/// Binary frames with these prefixes carry OTLP telemetry, handed to `iii-observability`.
const TELEMETRY_PREFIXES: [&[u8]; 3] = [b"OTLP", b"MTRC", b"LOGS"];

/// Which socket of a listener this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Worker,
    Telemetry,
}

/// One connection of a worker listener. See the module docs.
pub struct WorkerSession {
    worker_id: Uuid,
    /// `worker_id` as text, written into every call this connection makes.
    worker_id_text: Arc<str>,
    kind: SessionKind,
    registry: Registry,
    listener: Arc<ListenerConfig>,
    peer: Option<PeerInfo>,
    invalid_streak: u32,
    /// The registry accepted the connection; until then frames wait in `early`.
    accepted: bool,
    early: VecDeque<Bytes>,
}

impl WorkerSession {
    pub fn new(
        kind: SessionKind,
        registry: Registry,
        listener: Arc<ListenerConfig>,
        peer: PeerInfo,
    ) -> Self {
        let worker_id = Uuid::new_v4();
        WorkerSession {
            worker_id,
            worker_id_text: Arc::from(worker_id.to_string()),
            kind,
            accepted: kind == SessionKind::Telemetry && listener.rbac.is_none(),
            registry,
            listener,
            peer: Some(peer),
            invalid_streak: 0,
            early: VecDeque::new(),
        }
    }

    /// The socket limits of this session's listener.
    pub fn limits(listener: &ListenerConfig) -> Limits {
        Limits {
            max_frame_bytes: listener.max_frame_bytes,
            max_message_bytes: listener.max_message_bytes,
            heartbeat_interval: Duration::from_millis(listener.heartbeat_interval_ms),
            idle_timeout: Duration::from_millis(listener.idle_timeout_ms),
        }
    }

    /// Does this session report to the registry (every worker socket, and telemetry sockets
    /// that need authenticating)?
    fn registered(&self) -> bool {
        self.kind == SessionKind::Worker || self.listener.rbac.is_some()
    }

    fn send(ctx: &mut Ctx<Self>, msg: &protocol::Message) {
        ctx.text(msg.encode());
    }

    /// Decodes and handles one frame (payloads stay views into `backing`); `counted` when
    /// [`Flow::frame_in`] already counted it.
    fn process(
        &mut self,
        text: &str,
        backing: &Bytes,
        counted: bool,
        flow: &Arc<Flow>,
        ctx: &mut Ctx<Self>,
    ) {
        let forwarded = match protocol::decode_shared(text, Some(backing)) {
            Ok(Decoded::Message(msg)) => {
                self.invalid_streak = 0;
                self.forward(msg, text.len(), counted, flow, ctx)
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
            flow.frame_done(text.len());
        }
    }

    /// Hands a decoded frame to the registry (pings are answered here); returns whether it
    /// went there.
    fn forward(
        &mut self,
        msg: protocol::Message,
        bytes: usize,
        counted: bool,
        flow: &Arc<Flow>,
        ctx: &mut Ctx<Self>,
    ) -> bool {
        let msg = match msg {
            protocol::Message::Ping => {
                Self::send(ctx, &protocol::Message::Pong);
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
            flow.frame_in(bytes);
        }
        self.registry.do_send(FromWorker {
            worker_id: self.worker_id,
            msg,
            bytes,
        });
        true
    }

    /// The registry accepted the connection: handle what arrived meanwhile, in order.
    fn on_accepted(&mut self, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        self.accepted = true;
        flow.hold(false);
        while let Some(frame) = self.early.pop_front() {
            // Checked when it arrived; a frame that is not UTF-8 never gets here.
            if let Ok(text) = std::str::from_utf8(&frame) {
                self.process(text, &frame, true, flow, ctx);
            }
        }
    }

    /// Answers a frame that could not be used, and closes after too many in a row.
    fn reject_frame(&mut self, e: protocol::DecodeError, ctx: &mut Ctx<Self>) {
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
            None => Self::send(ctx, &protocol::Message::Error(ErrorFrame { error: body })),
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
}

impl Protocol for WorkerSession {
    type Out = ToSession;

    fn label(&self) -> String {
        format!("worker {}", self.worker_id)
    }

    fn started(&mut self, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        if !self.registered() {
            return;
        }
        // A telemetry socket of an RBAC listener is not read before its auth function agrees.
        flow.hold(self.kind == SessionKind::Telemetry);
        self.registry.do_send(Connect {
            worker_id: self.worker_id,
            session: ctx.address().recipient(),
            listener: self.listener.clone(),
            peer: self.peer.take().unwrap_or_default(),
            flow: flow.clone(),
            telemetry: self.kind == SessionKind::Telemetry,
        });
    }

    fn stopped(&mut self, flow: &Arc<Flow>) {
        for frame in self.early.drain(..) {
            flow.frame_done(frame.len());
        }
        if self.registered() {
            self.registry.do_send(Disconnect {
                worker_id: self.worker_id,
            });
        }
    }

    fn text(&mut self, text: &str, backing: &Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        let text = text.trim();
        if text.is_empty() || self.kind == SessionKind::Telemetry {
            return;
        }
        if !self.accepted {
            // Kept raw until the registry accepts the connection; counted, so a flood waits.
            flow.frame_in(text.len());
            self.early.push_back(backing.slice_ref(text.as_bytes()));
            return;
        }
        self.process(text, backing, false, flow, ctx);
    }

    fn binary(&mut self, data: Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        if TELEMETRY_PREFIXES.iter().any(|p| data.starts_with(p)) {
            let item = crate::modules::observability::Telemetry::Frame(data);
            return self.registry.telemetry(item);
        }
        match std::str::from_utf8(&data) {
            Ok(text) => self.text(text, &data, flow, ctx),
            Err(_) => self.reject_frame(
                protocol::DecodeError {
                    code: Code::InvalidMessage,
                    message: "binary frame is neither telemetry (OTLP/MTRC/LOGS) nor UTF-8 JSON"
                        .into(),
                    invocation: None,
                },
                ctx,
            ),
        }
    }

    fn out_len(msg: &ToSession) -> usize {
        msg.wire_len()
    }

    fn outbound(&mut self, msg: ToSession, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        match msg {
            ToSession::Frame(frame) => Self::send(ctx, &frame),
            ToSession::Accepted { reattach_token } => {
                if self.kind == SessionKind::Worker {
                    let welcome = protocol::Message::WorkerRegistered(protocol::WorkerRegistered {
                        worker_id: self.worker_id,
                        reattach_token,
                    });
                    Self::send(ctx, &welcome);
                }
                self.on_accepted(flow, ctx);
            }
            ToSession::Reject(error) => {
                Self::send(ctx, &protocol::Message::Error(ErrorFrame { error }));
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
