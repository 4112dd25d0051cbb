//! The `relay` subcommand: the "limit" the engine is compared against in `invoke --direct`.
//!
//! A minimal WebSocket relay on actix-web: a connection opened with `?role=callee` or
//! `?role=caller` is welcomed with a `workerregistered` frame (our client waits for one), and
//! every text frame is forwarded verbatim to the other side — caller → callee, callee →
//! caller — without parsing. It holds one caller and one callee at a time (a newer
//! connection of a role replaces the older one). It costs what any WebSocket hop costs (two
//! socket reads/writes and a hand-over between connection actors) and nothing of what an
//! engine adds (decoding, routing, bookkeeping, re-encoding).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use serde_json::json;

use crate::args::{parse_count, parse_on_off};

const ABOUT: &str = "\
Run the minimal relay (what invoke --direct spawns)

The baseline for `invoke --direct`: a minimal WebSocket relay. Connect with
ws://HOST:PORT/?role=callee and ws://HOST:PORT/?role=caller. Each connection gets
{\"type\":\"workerregistered\",\"worker_id\":<uuid>,\"reattach_token\":<uuid>} on accept; every
text frame is then forwarded verbatim to the other role (one caller and one callee at a time).
Binary frames are dropped; pings are answered.";

/// The `relay` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
pub struct Opts {
    /// Address to listen on
    #[arg(long, value_name = "addr", default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: a free one)
    #[arg(long, value_name = "n", default_value = "0")]
    pub port: u16,
    /// Socket threads (the default is the engine listener's)
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2")]
    pub threads: usize,
    /// TCP_NODELAY on accepted sockets
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    #[arg(action = clap::ArgAction::Set, default_value = "on")]
    pub nodelay: bool,
    /// Write {"url":"ws://HOST:PORT","pid":N} there once listening
    #[arg(long, value_name = "file")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

/// The two current ends.
#[derive(Default)]
struct Hub {
    caller: Option<Addr<RelayConn>>,
    callee: Option<Addr<RelayConn>>,
}

type SharedHub = Arc<Mutex<Hub>>;

/// A frame to write to this connection's socket.
#[derive(Message)]
#[rtype(result = "()")]
struct Forward(ws::Message);

struct RelayConn {
    role: Role,
    hub: SharedHub,
    /// The other end, cached; refreshed from the hub when missing or gone.
    peer: Option<Addr<RelayConn>>,
    dropped: u64,
}

impl RelayConn {
    fn peer(&mut self) -> Option<Addr<RelayConn>> {
        if let Some(p) = &self.peer {
            if p.connected() {
                return Some(p.clone());
            }
        }
        let hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        self.peer = match self.role {
            Role::Caller => hub.callee.clone(),
            Role::Callee => hub.caller.clone(),
        };
        self.peer.clone()
    }
}

impl Actor for RelayConn {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        {
            let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
            let slot = match self.role {
                Role::Caller => &mut hub.caller,
                Role::Callee => &mut hub.callee,
            };
            *slot = Some(ctx.address());
        }
        let welcome = json!({
            "type": "workerregistered",
            "worker_id": uuid::Uuid::new_v4(),
            "reattach_token": uuid::Uuid::new_v4(),
        });
        ctx.text(welcome.to_string());
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match self.role {
            Role::Caller => &mut hub.caller,
            Role::Callee => &mut hub.callee,
        };
        if slot.as_ref() == Some(&me) {
            *slot = None;
        }
        if self.dropped > 0 {
            log::warn!(
                "relay: {:?} connection dropped {} frames (no peer)",
                self.role,
                self.dropped
            );
        }
    }
}

impl Handler<Forward> for RelayConn {
    type Result = ();
    fn handle(&mut self, msg: Forward, ctx: &mut Self::Context) {
        ctx.write_raw(msg.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for RelayConn {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(msg @ ws::Message::Text(_)) => match self.peer() {
                Some(p) => p.do_send(Forward(msg)),
                None => self.dropped += 1,
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(e) => {
                log::debug!("relay: protocol error: {e}");
                ctx.stop();
            }
        }
    }
}

async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    hub: web::Data<SharedHub>,
) -> Result<HttpResponse, actix_web::Error> {
    let query = req.query_string();
    let role = if query.split('&').any(|kv| kv == "role=callee") {
        Role::Callee
    } else if query.split('&').any(|kv| kv == "role=caller") {
        Role::Caller
    } else {
        return Ok(HttpResponse::BadRequest().body("connect with ?role=caller or ?role=callee\n"));
    };
    let conn = RelayConn {
        role,
        hub: hub.get_ref().clone(),
        peer: None,
        dropped: 0,
    };
    ws::WsResponseBuilder::new(conn, &req, stream)
        .frame_size(64 << 20)
        .start()
}

/// Runs the relay until SIGTERM / Ctrl-C.
pub fn run(o: Opts) -> Result<(), String> {
    let Opts {
        host,
        port,
        threads,
        nodelay,
        ready_file,
    } = o;
    let threads = threads.max(1);
    let socket = TcpListener::bind((host.as_str(), port))
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    let hub: SharedHub = Arc::new(Mutex::new(Hub::default()));
    let system = actix::System::new();
    system.block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(hub.clone()))
                .route("/", web::get().to(upgrade))
        })
        .workers(threads)
        .tcp_nodelay(nodelay)
        .listen(socket)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        .run();
        let url = format!("ws://{addr}");
        let info = json!({"url": url, "pid": std::process::id()});
        match &ready_file {
            Some(path) => {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, info.to_string())
                    .and_then(|_| std::fs::rename(&tmp, path))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            None => println!("relay listening on {url}"),
        }
        server.await.map_err(|e| format!("relay stopped: {e}"))
    })
}
