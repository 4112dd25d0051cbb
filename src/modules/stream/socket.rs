//! The stream module's consumer WebSocket (`PROTOCOL.md` §6.7), on its own port (3112 by
//! default), path `/`.
//!
//! A client sends `{"type":"join","data":{subscriptionId, streamName, groupId, id?}}` and
//! `{"type":"leave","data":{…}}`; the [`StreamActor`](super::StreamActor) answers a join with a
//! `sync` frame (or `unauthorized`) and then pushes every matching change. Each socket is a
//! [`socket::Socket`] speaking `ConsumerSession` (pings, limits and closing are the socket's);
//! it tells the stream actor when it is gone (which runs `stream:leave` for its
//! subscriptions). With an
//! `auth_function`, the function is called before the upgrade with
//! `{headers, path, query_params, addr}`; a failure refuses the upgrade (401).
//!
//! Flow control (`flow.rs`): a socket is not read while it has [`JOINS_IN_FLIGHT`] joins
//! waiting for their `sync`, or more than [`OUTBOUND_PAUSE`] bytes queued for it; one that lets
//! 4× that pile up, or drains nothing for 10 s while over it, is closed as a slow consumer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Consumer, StreamActor, Subscription};
use crate::config::StreamConfig;
use crate::flow::{self, Budget, Flow};
use crate::modules::worker::{peer_info, query_params};
use crate::modules::ModuleError;
use crate::registry::Registry;
use crate::router::CallRequest;
use crate::socket::{self, close, Ctx, Limits, Protocol, Shutdown};

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

fn flow_limits() -> flow::Limits {
    flow::Limits {
        queued_frames: 64,
        queued_bytes: 1 << 20,
        inflight_calls: JOINS_IN_FLIGHT,
        outbound_bytes: OUTBOUND_PAUSE,
    }
}

#[derive(Clone)]
struct State {
    stream: Addr<StreamActor>,
    registry: Registry,
    auth_function: Option<String>,
    budget: Arc<Budget>,
    shutdown: Shutdown,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Binds and starts the consumer socket listener.
pub fn start(
    config: &StreamConfig,
    stream: Addr<StreamActor>,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<(SocketAddr, actix_web::dev::ServerHandle), ModuleError> {
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
    .map_err(|source| ModuleError::Listen {
        addr: local.to_string(),
        source,
    })?
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
        match state.registry.call(req_call).await {
            Ok(Some(v)) => context = v.to_value().get("context").cloned().unwrap_or(Value::Null),
            Ok(None) => {}
            Err(e) => {
                log::warn!(
                    "stream socket: auth function {function_id} refused a connection: {}",
                    e.message
                );
                return Ok(
                    HttpResponse::Unauthorized().body(format!("{}: {}\n", e.code, e.message))
                );
            }
        }
    }
    let session = ConsumerSession {
        conn: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        stream: state.stream.clone(),
        context: Some(context),
    };
    let limits = Limits {
        max_frame_bytes: MAX_FRAME,
        max_message_bytes: MAX_FRAME,
        heartbeat_interval: HEARTBEAT,
        idle_timeout: IDLE,
    };
    let flow = Flow::new(flow_limits(), state.budget.clone());
    let budget = state.budget.clone();
    socket::upgrade(
        session,
        limits,
        flow,
        budget,
        state.shutdown.clone(),
        &req,
        payload,
    )
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

/// One consumer socket (the [`Protocol`] of its [`socket::Socket`]).
struct ConsumerSession {
    conn: u64,
    stream: Addr<StreamActor>,
    context: Option<Value>,
}

impl Protocol for ConsumerSession {
    type Out = ConsumerFrame;

    fn label(&self) -> String {
        format!("stream consumer {}", self.conn)
    }

    fn started(&mut self, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        self.stream.do_send(Consumer::Connected {
            conn: self.conn,
            frames: ctx.address().recipient(),
            flow: flow.clone(),
            context: self.context.take().unwrap_or(Value::Null),
        });
    }

    fn stopped(&mut self, _flow: &Arc<Flow>) {
        self.stream.do_send(Consumer::Gone { conn: self.conn });
    }

    fn text(&mut self, text: &str, _backing: &Bytes, flow: &Arc<Flow>, _ctx: &mut Ctx<Self>) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Join(d)) => {
                // Answered by the stream actor with a `sync` (which ends the call).
                flow.call_started();
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
                flow.frame_in(text.len());
                self.stream.do_send(Consumer::Leave {
                    conn: self.conn,
                    subscription_id: d.subscription_id,
                    bytes: text.len(),
                })
            }
            Err(e) => log::warn!("stream consumer {}: ignored a frame: {e}", self.conn),
        }
    }

    fn binary(&mut self, data: Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        match std::str::from_utf8(&data) {
            Ok(text) => self.text(text, &data, flow, ctx),
            Err(_) => log::warn!(
                "stream consumer {}: ignored a non-UTF-8 binary frame",
                self.conn
            ),
        }
    }

    fn out_len(frame: &ConsumerFrame) -> usize {
        frame.wire_len()
    }

    fn outbound(&mut self, frame: ConsumerFrame, _flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        match frame {
            ConsumerFrame::Text(text) => ctx.text(&*text),
            ConsumerFrame::Close(reason) => close(ctx, ws::CloseCode::Policy, reason),
        }
    }
}
