//! The flooders of the `flood` scenario: raw WebSocket clients (awc) that send what a
//! misbehaving or hostile client would — calls whose replies are read slowly, calls it may not
//! make, frames sent while its auth function runs, stream joins it never reads, unfinished
//! fragmented messages, one 60 MiB call — and count what they sent and what came back. A flood
//! runs until its future is dropped; only `big` ends by itself (once its call is answered).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::ws::Item;
use awc::ws::{self, CloseCode, Message};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

/// The function the slow reader floods (an echo on the bench's flood worker).
pub const FLOOD_ECHO: &str = "bench::flood::echo";
/// Answers `{"rows": n}` for `{"rows": [...]}` (the big call, and the pre-auth frames).
pub const FLOOD_COUNT: &str = "bench::flood::count";
/// Registered but not exposed on the public listener: what the forbidden flood calls.
pub const SECRET: &str = "bench::secret";

/// The flood kinds, in the order they run by default.
pub const KINDS: &[&str] = &[
    "slow-reader",
    "forbidden",
    "preauth",
    "joins",
    "fragments",
    "big",
];

/// Where the flooders aim: the trusted listener, the public (RBAC) one, the stream module.
pub struct Aim {
    pub trusted: String,
    pub public: String,
    pub stream: String,
}

/// What a flood did so far.
#[derive(Default)]
pub struct Tally {
    /// Calls, joins, or (for `fragments`) 1 MiB chunks written.
    pub sent: AtomicU64,
    /// `invocationresult` frames read.
    pub answered: AtomicU64,
    /// Of those, the ones carrying an error.
    pub refused: AtomicU64,
    /// Sockets the engine closed (close frame or end of stream).
    pub closed: AtomicU64,
    /// Of those, closed with 1013 (try again later).
    pub closed_busy: AtomicU64,
    pub connections: AtomicU64,
    /// The flood ended by itself (only `big` does).
    pub finished: AtomicBool,
    pub first_error: Mutex<Option<String>>,
    /// The first error reply read.
    pub first_refusal: Mutex<Option<String>>,
    /// `big`: from the first byte of the call written to its answer read, in µs.
    pub call_us: AtomicU64,
}

impl Tally {
    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn error(&self, e: impl Into<String>) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.into());
        }
    }

    pub fn json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "sent": get(&self.sent),
            "answered": get(&self.answered),
            "refused": get(&self.refused),
            "closed_by_engine": get(&self.closed),
            "closed_1013": get(&self.closed_busy),
            "connections": get(&self.connections),
            "finished": self.finished.load(Ordering::Relaxed),
            "first_error": self.first_error.lock().ok().and_then(|e| e.clone()),
            "first_refusal": self.first_refusal.lock().ok().and_then(|e| e.clone()),
            "call_ms": (get(&self.call_us) > 0).then(|| get(&self.call_us) as f64 / 1000.0),
        })
    }
}

type Socket = Framed<awc::BoxedSocket, ws::Codec>;
type Sink = SplitSink<Socket, Message>;
type Stream = SplitStream<Socket>;

/// Runs the flood `kind` against `aim`, counting into `tally`.
pub async fn run(kind: &str, aim: &Aim, tally: &Tally) {
    match kind {
        "slow-reader" => slow_reader(aim, tally).await,
        "forbidden" => {
            let lanes = (0..2).map(|_| forbidden(aim, tally));
            futures_util::future::join_all(lanes).await;
        }
        "preauth" => {
            let lanes = (0..4).map(|_| preauth(aim, tally));
            futures_util::future::join_all(lanes).await;
        }
        "joins" => joins(aim, tally).await,
        "fragments" => {
            let lanes = (0..10).map(|_| fragments(aim, tally));
            futures_util::future::join_all(lanes).await;
        }
        "big" => big(aim, tally).await,
        other => tally.error(format!("unknown flood kind {other:?}")),
    }
}

fn call(function_id: &str, data: Value) -> String {
    json!({"type": "invokefunction", "invocation_id": uuid::Uuid::new_v4().to_string(),
           "function_id": function_id, "data": data})
    .to_string()
}

async fn connect(url: &str, tally: &Tally) -> Option<Socket> {
    let attempt = awc::Client::new()
        .ws(url)
        .max_frame_size(64 << 20)
        .connect()
        .await;
    match attempt {
        Ok((_resp, socket)) => {
            tally.add(&tally.connections, 1);
            Some(socket)
        }
        Err(e) => {
            tally.error(format!("connect {url}: {e}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Writes calls made by `make` as fast as the engine takes them, flushing every 64.
async fn write_calls(sink: &mut Sink, tally: &Tally, limit: u64, make: impl Fn(u64) -> String) {
    for i in 0..limit {
        if sink.feed(Message::Text(make(i).into())).await.is_err() {
            return;
        }
        tally.add(&tally.sent, 1);
        if i % 64 == 63 && sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.flush().await;
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: Option<Value>,
}

/// Reads replies until `limit` were read or the socket ends; with `slow`, pauses 20 ms after
/// every 100 replies.
async fn read_replies(stream: &mut Stream, tally: &Tally, limit: u64, slow: bool) {
    let mut read = 0u64;
    while read < limit {
        match stream.next().await {
            Some(Ok(ws::Frame::Text(b))) => {
                let Ok(r) = serde_json::from_slice::<Reply>(&b) else {
                    continue;
                };
                if r.kind != "invocationresult" {
                    continue;
                }
                read += 1;
                tally.add(&tally.answered, 1);
                if let Some(e) = r.error {
                    tally.add(&tally.refused, 1);
                    if let Ok(mut first) = tally.first_refusal.lock() {
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
                if slow && read.is_multiple_of(100) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Some(Ok(ws::Frame::Close(reason))) => {
                closed(tally, reason);
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                tally.add(&tally.closed, 1);
                return;
            }
        }
    }
}

fn closed(tally: &Tally, reason: Option<ws::CloseReason>) {
    tally.add(&tally.closed, 1);
    if reason.as_ref().is_some_and(|r| r.code == CloseCode::Again) {
        tally.add(&tally.closed_busy, 1);
    }
}

/// Floods 4 KiB echo calls on the trusted listener, reading the replies slowly; reconnects if
/// the engine drops it.
async fn slow_reader(aim: &Aim, tally: &Tally) {
    let pad = "x".repeat(4096);
    loop {
        let Some(socket) = connect(&aim.trusted, tally).await else {
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let make = |_| call(FLOOD_ECHO, json!({ "pad": pad }));
        tokio::select! {
            _ = write_calls(&mut sink, tally, u64::MAX, make) => {}
            _ = read_replies(&mut stream, tally, u64::MAX, true) => {}
        }
    }
}

/// Floods calls to a function the public listener does not expose, reading the denials.
async fn forbidden(aim: &Aim, tally: &Tally) {
    loop {
        let Some(socket) = connect(&aim.public, tally).await else {
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let make = |_| call(SECRET, json!({}));
        tokio::select! {
            _ = write_calls(&mut sink, tally, u64::MAX, make) => {}
            _ = read_replies(&mut stream, tally, u64::MAX, false) => {}
        }
    }
}

/// Frames written per connection by the `preauth` flood (64 KiB each, ~19 MiB in all).
const PREAUTH_FRAMES: u64 = 300;

/// Connects with `?slow=1` (the auth function takes 2 s), writes 300 calls of 64 KiB at once
/// and reads every answer; then again on a new connection.
async fn preauth(aim: &Aim, tally: &Tally) {
    let pad = "y".repeat(64 << 10);
    let url = format!("{}/?slow=1", aim.public);
    loop {
        let Some(socket) = connect(&url, tally).await else {
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let make = |i| call(FLOOD_COUNT, json!({ "i": i, "pad": pad }));
        futures_util::future::join(
            write_calls(&mut sink, tally, PREAUTH_FRAMES, make),
            read_replies(&mut stream, tally, PREAUTH_FRAMES, false),
        )
        .await;
    }
}

/// One consumer on the stream module joins the 8 MiB group `big`/`g` 300 times and never
/// reads what the engine sends back.
async fn joins(aim: &Aim, tally: &Tally) {
    let Some(mut socket) = connect(&aim.stream, tally).await else {
        return std::future::pending().await;
    };
    for i in 0..300 {
        let join = json!({"type": "join", "data": {"subscriptionId": format!("s{i}"),
                          "streamName": "big", "groupId": "g"}});
        if let Err(e) = socket.send(Message::Text(join.to_string().into())).await {
            tally.error(format!("join {i}: {e}"));
            break;
        }
        tally.add(&tally.sent, 1);
    }
    std::future::pending::<()>().await;
    drop(socket);
}

/// One socket on the public listener: starts a text message and sends 1 MiB continuation
/// frames up to 40 MiB, never the last one; gives up on a frame the engine has not taken
/// within 2 s; then waits for the engine to close it (or for the end of the flood).
async fn fragments(aim: &Aim, tally: &Tally) {
    let Some(mut socket) = connect(&aim.public, tally).await else {
        return std::future::pending().await;
    };
    // Accepted once the engine says `workerregistered`.
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    let chunk = Bytes::from(vec![b'a'; 1 << 20]);
    for i in 0..40 {
        let item = if i == 0 {
            Item::FirstText(chunk.clone())
        } else {
            Item::Continue(chunk.clone())
        };
        let send = socket.send(Message::Continuation(item));
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(Ok(())) => tally.add(&tally.sent, 1),
            _ => break,
        }
    }
    loop {
        match socket.next().await {
            Some(Ok(ws::Frame::Close(reason))) => {
                closed(tally, reason);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                tally.add(&tally.closed, 1);
                break;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// The 60 MiB call of `big`: `{"rows": [...]}` made of small JSON records.
pub fn big_call() -> (String, usize) {
    let record = r#"{"id":1234567,"ok":true,"v":"abcdefgh"},"#;
    let rows = (60 << 20) / record.len();
    let mut text = String::with_capacity(rows * record.len() + 200);
    text.push_str(r#"{"type":"invokefunction","invocation_id":""#);
    text.push_str(&uuid::Uuid::new_v4().to_string());
    text.push_str(r#"","function_id":""#);
    text.push_str(FLOOD_COUNT);
    text.push_str(r#"","data":{"rows":["#);
    for _ in 0..rows {
        text.push_str(record);
    }
    text.pop();
    text.push_str("]}}");
    (text, rows)
}

/// Sends one 60 MiB call (as 15 MiB fragments) on the trusted listener and waits for the
/// answer, which must count every row.
async fn big(aim: &Aim, tally: &Tally) {
    let Some(mut socket) = connect(&aim.trusted, tally).await else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    let (text, rows) = big_call();
    let bytes = Bytes::from(text.into_bytes());
    let parts: Vec<Bytes> = (0..bytes.len())
        .step_by(15 << 20)
        .map(|at| bytes.slice(at..(at + (15 << 20)).min(bytes.len())))
        .collect();
    let last = parts.len() - 1;
    let started = Instant::now();
    for (i, p) in parts.into_iter().enumerate() {
        let item = match i {
            0 => Item::FirstText(p),
            i if i == last => Item::Last(p),
            _ => Item::Continue(p),
        };
        if let Err(e) = socket.send(Message::Continuation(item)).await {
            tally.error(format!("sending the 60 MiB call: {e}"));
            return;
        }
    }
    tally.add(&tally.sent, 1);
    let answer = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(ws::Frame::Text(b)) => {
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    if v["type"] == "invocationresult" {
                        return Ok(v);
                    }
                }
                Ok(ws::Frame::Close(r)) => return Err(format!("closed by the engine: {r:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("protocol error: {e}")),
            }
        }
        Err("the socket ended".to_string())
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 120 s".into()));
    match answer {
        Ok(v) => {
            tally.add(&tally.answered, 1);
            let us = started.elapsed().as_micros() as u64;
            tally.call_us.store(us, Ordering::Relaxed);
            if v.get("error").is_some() || v["result"]["rows"] != json!(rows) {
                tally.add(&tally.refused, 1);
                let mut shown = v.to_string();
                shown.truncate(300);
                tally.error(format!("the 60 MiB call's answer is wrong: {shown}"));
            }
        }
        Err(e) => tally.error(format!("the 60 MiB call: {e}")),
    }
}
