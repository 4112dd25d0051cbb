//! `ClientActor`: the client side of one worker connection (socket, reconnects, replay,
//! pending calls). Driven by [`Command`]s from the [`Client`](super::Client) handle and by the
//! frames of the current socket; every socket gets a generation number so that events of an
//! old socket never disturb the new one.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_http::ws::Item;
use awc::ws;
use bytes::BytesMut;
use futures_util::stream::{SplitSink, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

mod frames;
mod work;

use super::{ClientOptions, HandlerFn, InvocationError, TriggerRequest, TriggerTypeEvent};
use iii_protocol::deadlines::Deadlines;
use iii_protocol::ids::IdMap;
use iii_protocol::payload::Payload;
use iii_protocol::protocol::{self, Action, Decoded, ErrorBody, InvocationResult, InvokeFunction};

/// TCP connections with Nagle's algorithm off: frames are small and a delayed ACK would hold
/// a reply back by tens of milliseconds.
fn nodelay_connector() -> impl actix_service::Service<
    actix_tls::connect::ConnectInfo<awc::http::Uri>,
    Response = actix_tls::connect::Connection<awc::http::Uri, actix_rt::net::TcpStream>,
    Error = actix_tls::connect::ConnectError,
> + Clone {
    use actix_service::ServiceExt;
    actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default())
        .service()
        .map(
            |conn: actix_tls::connect::Connection<awc::http::Uri, actix_rt::net::TcpStream>| {
                let _ = conn.io_ref().set_nodelay(true);
                conn
            },
        )
}

/// How long after an explicit deadline the client gives up on its own.
const LOCAL_GRACE: Duration = Duration::from_millis(250);

type WsSink = SinkWrite<
    ws::Message,
    SplitSink<actix_codec::Framed<awc::BoxedSocket, ws::Codec>, ws::Message>,
>;

/// Where the client's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    /// Welcomed by the engine with this worker id.
    Connected {
        worker_id: String,
    },
    /// Waiting to retry after `attempt` failures.
    Reconnecting {
        attempt: u32,
        last_error: String,
    },
    /// Shut down for good.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegKind {
    Function,
    Trigger,
    TriggerType,
}

/// What the [`Client`](super::Client) handle asks of the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum Command {
    RegisterFunction {
        id: String,
        description: Option<String>,
        metadata: Option<Value>,
        handler: HandlerFn,
    },
    RegisterTrigger {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
    },
    RegisterTriggerType {
        id: String,
        description: String,
        events: mpsc::UnboundedSender<TriggerTypeEvent>,
    },
    Unregister(RegKind, String),
    Invoke {
        req: TriggerRequest,
        timeout: Duration,
        reply: oneshot::Sender<Result<Option<Value>, InvocationError>>,
    },
    InvokeVoid {
        function_id: String,
        payload: Value,
    },
    Shutdown,
    DropConnection,
}

/// A call waiting for its result.
struct PendingCall {
    reply: oneshot::Sender<Result<Option<Value>, InvocationError>>,
    function_id: String,
    started: Instant,
}

/// How often local call deadlines are checked.
const DEADLINE_SWEEP: Duration = Duration::from_millis(25);

struct FunctionReg {
    description: Option<String>,
    metadata: Option<Value>,
    handler: HandlerFn,
}

struct TriggerReg {
    trigger_type: String,
    function_id: String,
    config: Value,
}

/// A local function handler finished.
#[derive(Message)]
#[rtype(result = "()")]
struct HandlerDone {
    invocation_id: Option<Uuid>,
    function_id: String,
    traceparent: Option<String>,
    baggage: Option<String>,
    outcome: Result<Value, ErrorBody>,
}

/// One event of socket number `.0`; `None` = that socket ended.
struct SocketEvent(
    u64,
    Option<Result<ws::Frame, actix_http::ws::ProtocolError>>,
);

pub(crate) struct ClientActor {
    url: String,
    opts: ClientOptions,
    state: watch::Sender<ConnectionState>,
    sink: Option<WsSink>,
    generation: u64,
    reader: Option<SpawnHandle>,
    previous: Option<(String, String)>,
    functions: BTreeMap<String, FunctionReg>,
    triggers: BTreeMap<String, TriggerReg>,
    trigger_types: BTreeMap<String, (String, mpsc::UnboundedSender<TriggerTypeEvent>)>,
    pending: IdMap<PendingCall>,
    /// Local deadlines of pending calls, checked by one periodic sweep (a timer per call costs
    /// more than the call itself at high rates).
    deadlines: Deadlines,
    /// Calls written to the current socket (they can only be answered on it).
    sent: HashSet<Uuid>,
    /// Frames waiting for a socket, with the call id of `invokefunction` frames.
    queue: VecDeque<(Option<Uuid>, String)>,
    attempt: u32,
    last_inbound: Instant,
    partial: Option<BytesMut>,
    closed: bool,
}

impl ClientActor {
    pub(crate) fn new(
        url: String,
        opts: ClientOptions,
        state: watch::Sender<ConnectionState>,
    ) -> Self {
        ClientActor {
            url,
            opts,
            state,
            sink: None,
            generation: 0,
            reader: None,
            previous: None,
            functions: BTreeMap::new(),
            triggers: BTreeMap::new(),
            trigger_types: BTreeMap::new(),
            pending: IdMap::default(),
            deadlines: Deadlines::new(DEADLINE_SWEEP),
            sent: HashSet::new(),
            queue: VecDeque::new(),
            attempt: 0,
            last_inbound: Instant::now(),
            partial: None,
            closed: false,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        let timeout = self.opts.connect_timeout;
        let request = awc::Client::builder()
            .timeout(timeout)
            .connector(awc::Connector::new().connector(nodelay_connector()))
            .finish()
            .ws(self.url.as_str())
            .max_frame_size(self.opts.max_frame_bytes);
        let fut = async move { tokio::time::timeout(timeout, request.connect()).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok((_resp, framed))) => act.on_open(framed, ctx),
            Ok(Err(e)) => act.on_lost(format!("connect failed: {e}"), ctx),
            Err(_) => act.on_lost("connect timed out".to_string(), ctx),
        }));
    }

    fn on_open(
        &mut self,
        framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
        ctx: &mut Context<Self>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let (sink, stream) = framed.split();
        self.sink = Some(SinkWrite::new(sink, ctx));
        let events = stream
            .map(move |item| SocketEvent(generation, Some(item)))
            .chain(futures_util::stream::once(async move {
                SocketEvent(generation, None)
            }));
        self.reader = Some(ctx.add_stream(events));
        self.last_inbound = Instant::now();
        self.partial = None;
        self.replay();
    }

    /// The published SDKs' order on (re)connect: reattach, trigger types, functions,
    /// triggers, queued frames, worker metadata.
    fn replay(&mut self) {
        let mut frames: Vec<String> = Vec::new();
        if let Some((id, token)) = &self.previous {
            frames.push(
                json!({"type": "reattach", "previous_worker_id": id, "reattach_token": token})
                    .to_string(),
            );
        }
        for (id, (description, _)) in &self.trigger_types {
            frames.push(
                json!({"type": "registertriggertype", "id": id, "description": description})
                    .to_string(),
            );
        }
        for (id, f) in &self.functions {
            let msg = protocol::Message::RegisterFunction(protocol::RegisterFunction {
                id: id.clone(),
                description: f.description.clone(),
                request_format: None,
                response_format: None,
                metadata: f.metadata.clone(),
                invocation: None,
            });
            frames.push(msg.encode());
        }
        for (id, t) in &self.triggers {
            frames.push(self.trigger_frame(id, t));
        }
        for (id, frame) in self.queue.drain(..) {
            self.sent.extend(id);
            frames.push(frame);
        }
        if self.opts.register_worker {
            frames.push(
                json!({"type": "invokefunction", "function_id": "engine::workers::register",
                       "action": {"type": "void"},
                       "data": {"runtime": "rust", "version": env!("CARGO_PKG_VERSION"), "name": self.opts.name,
                                "os": std::env::consts::OS, "pid": std::process::id(), "isolation": null}})
                .to_string(),
            );
        }
        for f in frames {
            self.send(f);
        }
    }

    fn trigger_frame(&self, id: &str, t: &TriggerReg) -> String {
        protocol::Message::RegisterTrigger(protocol::RegisterTrigger {
            id: id.to_string(),
            trigger_type: t.trigger_type.clone(),
            function_id: t.function_id.clone(),
            config: t.config.clone(),
            metadata: None,
        })
        .encode()
    }

    /// Writes a frame if a socket is open; returns false if there is none.
    fn send(&mut self, text: String) -> bool {
        match self.sink.as_mut() {
            Some(sink) => sink.write(ws::Message::Text(text.into())).is_ok(),
            None => false,
        }
    }

    fn send_or_queue(&mut self, text: String) {
        self.send_call_or_queue(None, text);
    }

    /// Writes a frame now, or queues it for the next socket; `call` is the id of a call frame.
    fn send_call_or_queue(&mut self, call: Option<Uuid>, text: String) {
        match self.sink.as_mut() {
            Some(sink) => match sink.write(ws::Message::Text(text.into())) {
                Ok(()) => self.sent.extend(call),
                Err(ws::Message::Text(t)) => self.queue.push_back((call, t.to_string())),
                Err(_) => {}
            },
            None => self.queue.push_back((call, text)),
        }
    }

    fn on_lost(&mut self, reason: String, ctx: &mut Context<Self>) {
        if let Some(h) = self.reader.take() {
            ctx.cancel_future(h);
        }
        self.sink = None;
        // Calls written to the lost socket can never be answered: fail them now.
        for id in std::mem::take(&mut self.sent) {
            if let Some(call) = self.take_pending(id) {
                let _ = call.reply.send(Err(InvocationError {
                    code: "connection_lost".into(),
                    message: format!("the connection to the engine was lost ({reason})"),
                    stacktrace: None,
                }));
            }
        }
        if self.closed {
            return;
        }
        let delay = self.backoff();
        self.attempt += 1;
        log::debug!(
            "client {}: connection lost ({reason}); retrying in {delay:?}",
            self.opts.name
        );
        let _ = self.state.send(ConnectionState::Reconnecting {
            attempt: self.attempt,
            last_error: reason,
        });
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn backoff(&self) -> Duration {
        let b = &self.opts.reconnect;
        let base = b.initial.as_secs_f64() * b.multiplier.powi(self.attempt.min(30) as i32);
        let capped = base.min(b.max.as_secs_f64());
        let unit = (Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        let jittered = capped * (1.0 + b.jitter * (2.0 * unit - 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }

    fn on_message(&mut self, msg: protocol::Message, ctx: &mut Context<Self>) {
        use protocol::Message as M;
        match msg {
            M::WorkerRegistered(w) => {
                let id = w.worker_id.to_string();
                self.previous = Some((id.clone(), w.reattach_token.to_string()));
                self.attempt = 0;
                let _ = self
                    .state
                    .send(ConnectionState::Connected { worker_id: id });
            }
            M::InvocationResult(r) => {
                self.sent.remove(&r.invocation_id);
                if let Some(call) = self.take_pending(r.invocation_id) {
                    let outcome = match r.error {
                        Some(e) => Err(e.into()),
                        None => Ok(r.result.map(|p| p.to_value())),
                    };
                    let _ = call.reply.send(outcome);
                }
            }
            M::InvokeFunction(inv) => self.serve(inv, ctx),
            M::RegisterTrigger(t) => self.provider_event(
                &t.trigger_type,
                &t.id,
                &t.function_id,
                TriggerTypeEvent::Bind {
                    id: t.id.clone(),
                    function_id: t.function_id.clone(),
                    config: t.config.clone(),
                    metadata: t.metadata.clone(),
                },
            ),
            M::UnregisterTrigger(t) => {
                let ty = t.trigger_type.clone().unwrap_or_default();
                if let Some((_, tx)) = self.trigger_types.get(&ty) {
                    let _ = tx.send(TriggerTypeEvent::Unbind { id: t.id });
                }
            }
            M::TriggerRegistrationResult(r) => {
                if let Some(e) = r.error {
                    log::warn!(
                        "client {}: trigger {} ({}) failed: {}",
                        self.opts.name,
                        r.id,
                        r.trigger_type,
                        e.message
                    );
                }
            }
            M::Ping => {
                self.send(protocol::Message::Pong.encode());
            }
            M::Error(e) => {
                log::warn!(
                    "client {}: the engine reported {}: {}",
                    self.opts.name,
                    e.error.code,
                    e.error.message
                );
                let _ = self.state.send(ConnectionState::Reconnecting {
                    attempt: self.attempt,
                    last_error: format!("{}: {}", e.error.code, e.error.message),
                });
            }
            _ => {}
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let beat = self.opts.heartbeat;
        ctx.run_interval(beat, |act, ctx| act.heartbeat(ctx));
        ctx.run_interval(DEADLINE_SWEEP, |act, _| act.expire());
        self.connect(ctx);
    }
}

impl Handler<Command> for ClientActor {
    type Result = ();
    fn handle(&mut self, cmd: Command, ctx: &mut Self::Context) {
        self.handle_command(cmd, ctx);
    }
}

impl Handler<HandlerDone> for ClientActor {
    type Result = ();
    fn handle(&mut self, done: HandlerDone, _ctx: &mut Self::Context) {
        self.answer(done);
    }
}

impl StreamHandler<SocketEvent> for ClientActor {
    fn handle(&mut self, ev: SocketEvent, ctx: &mut Self::Context) {
        if ev.0 != self.generation {
            return;
        }
        match ev.1 {
            Some(Ok(frame)) => self.on_frame(frame, ctx),
            Some(Err(e)) => self.on_lost(format!("protocol error: {e}"), ctx),
            None => {
                if self.sink.is_some() {
                    self.on_lost("connection closed".into(), ctx);
                }
            }
        }
    }

    /// Socket ends are signalled in-band (`SocketEvent(_, None)`); the actor lives on.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl WriteHandler<actix_http::ws::ProtocolError> for ClientActor {
    fn error(&mut self, err: actix_http::ws::ProtocolError, _ctx: &mut Self::Context) -> Running {
        log::debug!("client {}: write failed: {err}", self.opts.name);
        Running::Continue
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}
