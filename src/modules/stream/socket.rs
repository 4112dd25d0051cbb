//! The stream module's consumer WebSocket (`PROTOCOL.md` §6.7), on its own port (3112 by
//! default), path `/`.
//!
//! A client sends `{"type":"join","data":{subscriptionId, streamName, groupId, id?}}` and
//! `{"type":"leave","data":{…}}`; the [`StreamActor`](super::StreamActor) answers a join with a
//! `sync` frame (or `unauthorized`) and then pushes every matching change. One
//! `ConsumerSession` actor per socket; it answers pings, pings the peer, and tells the stream
//! actor when it is gone (which runs `stream:leave` for its subscriptions). With an
//! `auth_function`, the function is called before the upgrade with
//! `{headers, path, query_params, addr}`; a failure refuses the upgrade (401).
//!
//! Flow control (`flow.rs`): a socket is not read while it has [`JOINS_IN_FLIGHT`] joins
//! waiting for their `sync`, or more than [`OUTBOUND_PAUSE`] bytes queued for it; one that lets
//! 4× that pile up, or drains nothing for 10 s while over it, is closed as a slow consumer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Consumer, StreamActor, Subscription};
use crate::config::StreamConfig;
use crate::flow::{Budget, Flow, Gated, Limits};
use crate::messages::Call;
use crate::modules::worker::{peer_info, query_params};
use crate::registry::RegistryActor;
use crate::router::CallRequest;
use crate::session::{close_on_shutdown, Shutdown};

/// Largest frame a consumer may send (joins and leaves are tiny).
const MAX_FRAME: usize = 1 << 20;
const HEARTBEAT: Duration = Duration::from_secs(20);
const IDLE: Duration = Duration::from_secs(60);
/// Joins one socket may have waiting for their `sync` before it is not read any more.
pub const JOINS_IN_FLIGHT: usize = 4;
/// Bytes queued for one consumer before it is not read any more (4× this: closed).
pub const OUTBOUND_PAUSE: usize = 8 << 20;
/// Bytes of frames held for all consumer sockets together.
const INFLIGHT_BYTES: usize = 64 << 20;

/// What the stream actor tells a consumer socket.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum ConsumerFrame {
    /// Send this text frame.
    Text(Arc<str>),
    /// Close the socket (code 1008) for this reason.
    Close(&'static str),
}

impl ConsumerFrame {
    /// What flow control counts for this message.
    pub fn wire_len(&self) -> usize {
        match self {
            ConsumerFrame::Text(t) => t.len(),
            ConsumerFrame::Close(_) => 64,
        }
    }
}

fn limits() -> Limits {
    Limits {
        queued_frames: 64,
        queued_bytes: 1 << 20,
        inflight_calls: JOINS_IN_FLIGHT,
        outbound_bytes: OUTBOUND_PAUSE,
    }
}

#[derive(Clone)]
struct State {
    stream: Addr<StreamActor>,
    registry: Addr<RegistryActor>,
    auth_function: Option<String>,
    budget: Arc<Budget>,
    shutdown: Shutdown,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Binds and starts the consumer socket listener.
pub fn start(
    config: &StreamConfig,
    stream: Addr<StreamActor>,
    registry: Addr<RegistryActor>,
    shutdown: Shutdown,
) -> Result<(SocketAddr, actix_web::dev::ServerHandle), String> {
    let (socket, local) = crate::modules::bind(&config.bind_addr())?;
    let state = State {
        stream,
        registry,
        auth_function: config.auth_function.clone(),
        budget: Budget::new(INFLIGHT_BYTES),
        shutdown,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/", web::get().to(upgrade))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().body("iii stream: connect with a WebSocket on /\n")
            }))
    })
    .workers(1)
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(socket)
    .map_err(|e| format!("cannot listen on {local}: {e}"))?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((local, handle))
}

async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> actix_web::Result<HttpResponse> {
    let mut context = Value::Null;
    if let Some(function_id) = &state.auth_function {
        let peer = peer_info(&req);
        let input = json!({"headers": peer.headers, "path": req.path(),
                           "query_params": query_params(req.query_string()),
                           "addr": req.peer_addr().map(|a| a.to_string())});
        let req_call = CallRequest::new(function_id.clone(), input).timeout(Duration::from_secs(5));
        match state.registry.send(Call(req_call)).await {
            Ok(Ok(Some(v))) => {
                context = v.to_value().get("context").cloned().unwrap_or(Value::Null)
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                log::warn!(
                    "stream socket: auth function {function_id} refused a connection: {}",
                    e.message
                );
                return Ok(
                    HttpResponse::Unauthorized().body(format!("{}: {}\n", e.code, e.message))
                );
            }
            Err(_) => return Ok(HttpResponse::ServiceUnavailable().finish()),
        }
    }
    let flow = Flow::new(limits(), state.budget.clone());
    let session = ConsumerSession {
        conn: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        stream: state.stream.clone(),
        context: Some(context),
        flow: flow.clone(),
        last_inbound: Instant::now(),
        shutdown: Some(state.shutdown.clone()),
    };
    ws::WsResponseBuilder::new(session, &req, Gated::new(payload, flow))
        .frame_size(MAX_FRAME)
        .start()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinData {
    subscription_id: String,
    stream_name: String,
    group_id: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
enum ClientFrame {
    Join(JoinData),
    Leave(JoinData),
}

/// One consumer socket.
struct ConsumerSession {
    conn: u64,
    stream: Addr<StreamActor>,
    context: Option<Value>,
    flow: Arc<Flow>,
    last_inbound: Instant,
    shutdown: Option<Shutdown>,
}

impl ConsumerSession {
    fn handle_text(&mut self, text: &str) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Join(d)) => {
                // Answered by the stream actor with a `sync` (which ends the call).
                self.flow.call_started();
                self.stream.do_send(Consumer::Join {
                    conn: self.conn,
                    sub: Subscription {
                        id: d.subscription_id,
                        stream: d.stream_name,
                        group: d.group_id,
                        item: d.id.filter(|i| !i.is_empty()),
                    },
                })
            }
            Ok(ClientFrame::Leave(d)) => {
                self.flow.frame_in(text.len());
                self.stream.do_send(Consumer::Leave {
                    conn: self.conn,
                    subscription_id: d.subscription_id,
                    bytes: text.len(),
                })
            }
            Err(e) => log::warn!("stream consumer {}: ignored a frame: {e}", self.conn),
        }
    }
}

impl Actor for ConsumerSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        if let Some(shutdown) = self.shutdown.take() {
            close_on_shutdown(ctx, shutdown);
        }
        ctx.run_interval(HEARTBEAT, |act, ctx| {
            if act.last_inbound.elapsed() > IDLE {
                log::warn!("stream consumer {}: silent for {IDLE:?}; closing", act.conn);
                ctx.close(Some(ws::CloseCode::Away.into()));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        self.stream.do_send(Consumer::Connected {
            conn: self.conn,
            frames: ctx.address().recipient(),
            flow: self.flow.clone(),
            context: self.context.take().unwrap_or(Value::Null),
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stream.do_send(Consumer::Gone { conn: self.conn });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for ConsumerSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_inbound = Instant::now();
        match item {
            Ok(ws::Message::Text(t)) => self.handle_text(&t),
            Ok(ws::Message::Binary(b)) => match std::str::from_utf8(&b) {
                Ok(t) => self.handle_text(t),
                Err(_) => log::warn!(
                    "stream consumer {}: ignored a non-UTF-8 binary frame",
                    self.conn
                ),
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!(
                    "stream consumer {}: protocol error: {e}; closing",
                    self.conn
                );
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<ConsumerFrame> for ConsumerSession {
    type Result = ();
    fn handle(&mut self, frame: ConsumerFrame, ctx: &mut Self::Context) {
        self.flow.out_written(frame.wire_len());
        match frame {
            ConsumerFrame::Text(text) => ctx.text(&*text),
            ConsumerFrame::Close(reason) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some(reason.into()),
                }));
                ctx.stop();
            }
        }
    }
}
