//! [`Socket`]: the one WebSocket actor of the engine, shared by worker sockets (`session.rs`)
//! and stream consumer sockets (`modules/stream/socket.rs`); the only code that touches the
//! WebSocket crate. What a socket *says* is its [`Protocol`]'s business; everything else is
//! here and the same for both:
//!
//! * **limits**: a frame over the listener's frame limit closes with 1009 (checked by the codec
//!   before the payload is buffered); a fragmented message is reassembled up to the message
//!   limit (1009 past it), its bytes charged to the listener's [`Budget`] (1013 when the
//!   listener holds too much unfinished data);
//! * **flow control**: the socket's bytes are read through [`Gated`], so its [`Flow`] can stop
//!   reading it; every message from its owner is counted out of the flow when written;
//! * **liveness**: the socket pings every `heartbeat_interval` and closes (1001) a peer that
//!   sent nothing, not even a pong, for `idle_timeout`; WebSocket pings are answered;
//! * **closing**: unreadable data (invalid UTF-8, a broken stream) closes with 1007, protocol
//!   errors with 1002, engine shutdown with 1001 for every socket at once; when the socket
//!   stops, its protocol is told.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};

use std::rc::Rc;

use crate::flow::{client_frame_len, Budget, Flow, Gated, ReadAhead};

/// Flips to `true` when the engine shuts down; every socket then closes with 1001.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// The actor context a [`Protocol`] writes to.
pub type Ctx<P> = ws::WebsocketContext<Socket<P>>;

/// What one kind of socket says. The [`Socket`] hands it complete messages and the messages
/// its owner sends it; it answers through the context (`ctx.text(…)`, [`close`]).
pub trait Protocol: Sized + Unpin + 'static {
    /// What the socket's owner sends it.
    type Out: Message<Result = ()> + Send + 'static;

    /// How the socket is named in the log ("worker `<id>`", "stream consumer 7").
    fn label(&self) -> String;

    /// The socket is up (tell the owner, with `ctx.address()`).
    fn started(&mut self, flow: &Arc<Flow>, ctx: &mut Ctx<Self>);

    /// The socket is gone.
    fn stopped(&mut self, flow: &Arc<Flow>);

    /// One complete text message (`backing` holds its bytes: views into it are free).
    fn text(&mut self, text: &str, backing: &Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>);

    /// One complete binary message.
    fn binary(&mut self, data: Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>);

    /// What flow control counts for one of the owner's messages.
    fn out_len(msg: &Self::Out) -> usize;

    /// A message from the owner.
    fn outbound(&mut self, msg: Self::Out, flow: &Arc<Flow>, ctx: &mut Ctx<Self>);
}

/// The limits and timers of one socket.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub heartbeat_interval: Duration,
    pub idle_timeout: Duration,
}

/// One WebSocket. See the module docs.
pub struct Socket<P: Protocol> {
    proto: P,
    limits: Limits,
    flow: Arc<Flow>,
    /// What the reader has read ahead of the codec (shared with the [`Gated`] reader).
    ahead: Rc<ReadAhead>,
    budget: Arc<Budget>,
    last_inbound: Instant,
    /// A fragmented message being reassembled: (is_text, bytes so far), charged to `budget`.
    partial: Option<(bool, BytesMut)>,
    shutdown: Option<Shutdown>,
}

/// Upgrades `req` to a socket speaking `proto`, read through `flow`.
pub fn upgrade<P: Protocol>(
    proto: P,
    limits: Limits,
    flow: Arc<Flow>,
    budget: Arc<Budget>,
    shutdown: Shutdown,
    req: &HttpRequest,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let ahead = Rc::new(ReadAhead::default());
    let socket = Socket {
        proto,
        limits,
        flow: flow.clone(),
        ahead: ahead.clone(),
        budget,
        last_inbound: Instant::now(),
        partial: None,
        shutdown: Some(shutdown),
    };
    ws::WsResponseBuilder::new(socket, req, Gated::new(payload, flow, ahead))
        .frame_size(limits.max_frame_bytes)
        .start()
}

/// The payload size of a frame the codec decoded (what [`client_frame_len`] counts from).
fn payload_len(msg: &ws::Message) -> usize {
    match msg {
        ws::Message::Text(t) => t.len(),
        ws::Message::Binary(b) | ws::Message::Ping(b) | ws::Message::Pong(b) => b.len(),
        ws::Message::Continuation(
            Item::FirstText(b) | Item::FirstBinary(b) | Item::Continue(b) | Item::Last(b),
        ) => b.len(),
        ws::Message::Close(Some(r)) => 2 + r.description.as_ref().map_or(0, String::len),
        ws::Message::Close(None) | ws::Message::Nop => 0,
    }
}

/// Closes the socket with `code` and `reason`.
pub fn close<P: Protocol>(ctx: &mut Ctx<P>, code: ws::CloseCode, reason: &str) {
    ctx.close(Some(ws::CloseReason {
        code,
        description: Some(reason.to_string()),
    }));
    ctx.stop();
}

impl<P: Protocol> Socket<P> {
    fn heartbeat(&mut self, ctx: &mut Ctx<P>) {
        let idle = self.limits.idle_timeout;
        if self.last_inbound.elapsed() > idle {
            log::warn!(
                "{}: nothing received for {} ms (no pong either); closing",
                self.proto.label(),
                idle.as_millis()
            );
            return close(ctx, ws::CloseCode::Away, "idle timeout");
        }
        ctx.ping(b"");
    }

    fn text(&mut self, text: &str, backing: &Bytes, ctx: &mut Ctx<P>) {
        self.proto.text(text, backing, &self.flow, ctx);
    }

    fn continuation(&mut self, item: Item, ctx: &mut Ctx<P>) {
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
        let label = self.proto.label();
        let Some((is_text, buf)) = self.partial.as_mut() else {
            log::warn!("{label}: continuation frame without a first frame; closing");
            return close(
                ctx,
                ws::CloseCode::Protocol,
                "unexpected continuation frame",
            );
        };
        let max = self.limits.max_message_bytes;
        if buf.len() + chunk.len() > max {
            log::warn!("{label}: fragmented message over {max} bytes; closing");
            return close(ctx, ws::CloseCode::Size, "message too big");
        }
        if !self.budget.try_take(chunk.len()) {
            log::warn!(
                "{label}: its listener holds {} bytes of unfinished messages already; closing this one",
                self.budget.used()
            );
            let reason = "engine busy: too much unfinished data on this listener";
            return close(ctx, ws::CloseCode::Again, reason);
        }
        buf.extend_from_slice(&chunk);
        if !last {
            return;
        }
        let is_text = *is_text;
        let data = self.take_partial().unwrap_or_default();
        if !is_text {
            return self.proto.binary(data, &self.flow, ctx);
        }
        match std::str::from_utf8(&data) {
            Ok(text) => self.text(text, &data, ctx),
            Err(_) => close(
                ctx,
                ws::CloseCode::Invalid,
                "invalid UTF-8 in a text message",
            ),
        }
    }

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

impl<P: Protocol> Actor for Socket<P> {
    type Context = Ctx<P>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Flow control bounds what waits here; the mailbox itself is not the limit.
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.limits.heartbeat_interval, |act, ctx| {
            act.heartbeat(ctx)
        });
        if let Some(mut shutdown) = self.shutdown.take() {
            let flipped = async move {
                let _ = shutdown.wait_for(|down| *down).await;
            };
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(flipped).map(|_, _, ctx| {
                    close(ctx, ws::CloseCode::Away, "engine shutting down");
                }),
            );
        }
        self.proto.started(&self.flow, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.release_partial();
        self.proto.stopped(&self.flow);
    }
}

impl<P: Protocol> StreamHandler<Result<ws::Message, ws::ProtocolError>> for Socket<P> {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_inbound = Instant::now();
        let label = self.proto.label();
        let msg = match item {
            Ok(m) => {
                self.ahead.parsed(client_frame_len(payload_len(&m)));
                m
            }
            Err(ws::ProtocolError::Overflow) => {
                let max = self.limits.max_frame_bytes;
                log::warn!("{label}: frame over {max} bytes; closing");
                return close(ctx, ws::CloseCode::Size, "frame too big");
            }
            Err(ws::ProtocolError::Io(e)) => {
                // The codec reports a text frame that is not UTF-8, and a stream that broke
                // (a closed tab, a cut network), the same way: nothing more can be read.
                log::info!("{label}: unreadable data or connection lost ({e}); closing");
                return close(ctx, ws::CloseCode::Invalid, "unreadable data");
            }
            Err(e) => {
                log::warn!("{label}: protocol error: {e}; closing");
                return close(ctx, ws::CloseCode::Protocol, "protocol error");
            }
        };
        match msg {
            ws::Message::Text(text) => self.text(&text, text.as_bytes(), ctx),
            ws::Message::Binary(data) => self.proto.binary(data, &self.flow, ctx),
            ws::Message::Continuation(item) => self.continuation(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                log::debug!("{label}: closed by peer ({reason:?})");
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<P: Protocol> Handler<P::Out> for Socket<P> {
    type Result = ();

    /// A message from the owner: counted out of the flow, then handed to the protocol.
    fn handle(&mut self, msg: P::Out, ctx: &mut Self::Context) {
        self.flow.out_written(P::out_len(&msg));
        self.proto.outbound(msg, &self.flow, ctx);
    }
}
