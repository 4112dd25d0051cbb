//! One HTTP request through `iii-http` (`MODULES.md` §5.3–§5.5): route → global middleware →
//! condition → the route's middleware → request and response channels → the handler, whose
//! result (buffered mode) or response channel (streaming mode) becomes the response.
//!
//! Beyond upstream: path parameters are percent-decoded; `HEAD` is served by the `GET` binding
//! (without a body); a body over `body_limit_bytes` is answered 413; a handler that returns
//! nothing and never attaches to its response channel within [`WRITER_GRACE`] gets an empty
//! 200 instead of a 504; the JSON content type is recognised in any case.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::response::{self, envelope, StreamHead};
use super::routes::{Lookup, Route};
use super::HttpState;
use crate::channels::Item;
use crate::payload::Payload;
use crate::router::{CallRequest, Outcome};

/// How long a handler that returned nothing has to attach to its response channel.
pub const WRITER_GRACE: Duration = Duration::from_secs(1);
/// Items each request or response channel holds.
const CHANNEL_ITEMS: usize = 64;

/// The request as middleware and conditions see it: name → value pairs (a repeated name
/// keeps its last value), serialised straight to the call's JSON.
struct Parts {
    method: String,
    path_params: Vec<(String, String)>,
    query_params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

/// Sets `name` (replacing an earlier value).
fn put(pairs: &mut Vec<(String, String)>, name: String, value: String) {
    match pairs.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => pairs.push((name, value)),
    }
}

impl Parts {
    fn of(req: &HttpRequest, params: Vec<(String, String)>) -> Parts {
        let mut headers = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let v = value
                .to_str()
                .ok()
                .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
                .unwrap_or("");
            put(
                &mut headers,
                name.as_str().to_ascii_lowercase(),
                v.to_string(),
            );
        }
        let mut query_params = Vec::new();
        for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            put(&mut query_params, form_decode(k), form_decode(v));
        }
        let path_params = params
            .into_iter()
            .map(|(k, v)| (k, percent_decode(&v)))
            .collect();
        Parts {
            method: req.method().as_str().to_string(),
            path_params,
            query_params,
            headers,
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            path_params: Pairs(&self.path_params),
            query_params: Pairs(&self.query_params),
            headers: Pairs(&self.headers),
            method: &self.method,
        }
    }
}

/// Pairs as a JSON object.
struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{path_params, query_params, headers, method}`: what middleware gets as `request`.
#[derive(Serialize)]
struct RequestView<'a> {
    path_params: Pairs<'a>,
    query_params: Pairs<'a>,
    headers: Pairs<'a>,
    method: &'a str,
}

#[derive(Serialize)]
struct MiddlewareInput<'a> {
    phase: &'static str,
    request: RequestView<'a>,
    context: serde_json::Map<String, Value>,
}

#[derive(Serialize)]
struct TriggerView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
    method: &'a str,
}

/// A channel ref as the SDKs expect it.
#[derive(Serialize)]
struct ChannelRef {
    channel_id: String,
    access_key: String,
    direction: &'static str,
}

/// The handler's input (§5.3); the condition gets it without the two channels.
#[derive(Serialize)]
struct HandlerInput<'a> {
    query_params: Pairs<'a>,
    path_params: Pairs<'a>,
    headers: Pairs<'a>,
    path: &'a str,
    method: &'a str,
    body: &'a Value,
    trigger: TriggerView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<ChannelRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ChannelRef>,
}

impl<'a> HandlerInput<'a> {
    fn new(parts: &'a Parts, route: &'a Route, body: &'a Value) -> HandlerInput<'a> {
        HandlerInput {
            query_params: Pairs(&parts.query_params),
            path_params: Pairs(&parts.path_params),
            headers: Pairs(&parts.headers),
            path: &route.api_path,
            method: &parts.method,
            body,
            trigger: TriggerView {
                kind: "http",
                path: &route.api_path,
                method: &parts.method,
            },
            request_body: None,
            response: None,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// A middleware's or condition's verdict.
enum Step {
    Continue,
    Answer(HttpResponse),
}

async fn middleware(state: &HttpState, function_id: &str, parts: &Parts) -> Step {
    let input = MiddlewareInput {
        phase: "preHandler",
        request: parts.view(),
        context: serde_json::Map::new(),
    };
    let req = CallRequest::new(function_id, Payload::from_serialize(&input)).timeout(state.timeout);
    match state.registry.call(req).await {
        Ok(Some(v)) => {
            let v = v.to_value();
            match v.get("action").and_then(Value::as_str) {
                Some("respond") => Step::Answer(response::middleware_respond(
                    v.get("response").unwrap_or(&Value::Null),
                )),
                Some("continue") => Step::Continue,
                other => {
                    log::debug!(
                        "http: middleware {function_id} answered action {other:?}; continuing"
                    );
                    Step::Continue
                }
            }
        }
        Ok(None) => Step::Continue,
        Err(e) if e.code == "invocation_timeout" => {
            Step::Answer(envelope(504, "MIDDLEWARE_TIMEOUT", "Middleware timeout"))
        }
        Err(e) => Step::Answer(envelope(500, &e.code, &e.message)),
    }
}

async fn condition(state: &HttpState, function_id: &str, input: &HandlerInput<'_>) -> Step {
    let req = CallRequest::new(function_id, Payload::from_serialize(input)).timeout(state.timeout);
    match state.registry.call(req).await {
        Ok(Some(v)) if v.as_str().trim() == "false" => Step::Answer(
            HttpResponse::UnprocessableEntity()
                .content_type("application/json")
                .body(
                    json!({"error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
                           "skipped": true})
                    .to_string(),
                ),
        ),
        Ok(_) => Step::Continue,
        Err(e) => Step::Answer(envelope(500, &e.code, &e.message)),
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"))
}

/// Reads the whole body, up to `limit` bytes (`Err` past it).
async fn read_body(payload: &mut web::Payload, limit: usize) -> Result<Bytes, HttpResponse> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| envelope(400, "BAD_REQUEST", &e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large(limit: usize) -> HttpResponse {
    envelope(
        413,
        "PAYLOAD_TOO_LARGE",
        &format!("the request body is larger than body_limit_bytes ({limit})"),
    )
}

/// Streams the body into the request channel as it arrives (stops past `limit`).
async fn pump_body(mut payload: web::Payload, tx: mpsc::Sender<Item>, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = payload.next().await {
        seen += chunk.len();
        if seen > limit {
            log::warn!("http: a streamed request body passed body_limit_bytes ({limit}); cut");
            return;
        }
        if tx.send(Item::Binary(chunk)).await.is_err() {
            return;
        }
    }
}

/// Where a request is, for the timeout's answer: while a middleware runs, a timeout is the
/// middleware's (`MIDDLEWARE_TIMEOUT`), otherwise the request's (`TIMEOUT`).
pub type Stage = std::rc::Rc<std::cell::Cell<bool>>;

/// Serves one request (the route is already known to exist for the method).
pub async fn serve(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<HttpState>,
    in_middleware: Stage,
) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let found = {
        let routes = state.routes.read().unwrap_or_else(|e| e.into_inner());
        match routes.find(&method, req.path()) {
            Lookup::Route { route, params } => Ok((route.clone(), params)),
            Lookup::WrongMethod(allowed) => Err(HttpResponse::MethodNotAllowed()
                .append_header(("allow", allowed.join(", ")))
                .finish()),
            Lookup::Missing => Err(envelope(404, "NOT_FOUND", "Not Found")),
        }
    };
    let (route, params) = match found {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.config.body_limit_bytes) {
        return too_large(state.config.body_limit_bytes);
    }
    let parts = Parts::of(&req, params);
    in_middleware.set(true);
    for m in &state.global_middleware {
        if let Step::Answer(r) = middleware(&state, m, &parts).await {
            return r;
        }
    }
    in_middleware.set(false);
    let json_body = is_json(&req);
    let no_body = declared.unwrap_or(0) == 0 && !req.headers().contains_key("transfer-encoding");
    let raw = if json_body {
        match read_body(&mut payload, state.config.body_limit_bytes).await {
            Ok(b) => Some(b),
            Err(resp) => return resp,
        }
    } else if no_body {
        Some(Bytes::new()) // nothing to stream: the request channel just ends
    } else {
        None
    };
    let body = raw
        .as_ref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .unwrap_or(Value::Null);
    let input = HandlerInput::new(&parts, &route, &body);
    if let Some(c) = &route.condition {
        if let Step::Answer(r) = condition(&state, c, &input).await {
            return r;
        }
    }
    in_middleware.set(true);
    for m in &route.middleware {
        if let Step::Answer(r) = middleware(&state, m, &parts).await {
            return r;
        }
    }
    in_middleware.set(false);
    // A HEAD request reaches the GET binding; actix-http sends the head without the body.
    invoke(&state, &route, input, raw, payload).await
}

/// Forgets an exchange's channels when it ends, also when a timeout cancels it.
struct Cleanup<'a>(&'a crate::channels::Channels, [Uuid; 2]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in self.1 {
            self.0.remove(id);
        }
    }
}

/// Creates the channels, calls the handler and turns what it does into the response.
async fn invoke(
    state: &HttpState,
    route: &Route,
    mut input: HandlerInput<'_>,
    raw: Option<Bytes>,
    payload: web::Payload,
) -> HttpResponse {
    let channels = state.registry.channels();
    let (req_id, req_key, body_tx) = channels.create_writing(CHANNEL_ITEMS);
    let (resp_id, resp_key, mut rx) = channels.create_reading(CHANNEL_ITEMS);
    let _cleanup = Cleanup(channels, [req_id, resp_id]);
    let channel = |id: Uuid, key: Uuid, direction| ChannelRef {
        channel_id: id.to_string(),
        access_key: key.to_string(),
        direction,
    };
    input.request_body = Some(channel(req_id, req_key, "read"));
    input.response = Some(channel(resp_id, resp_key, "write"));
    match raw {
        Some(bytes) => {
            if !bytes.is_empty() {
                let _ = body_tx.try_send(Item::Binary(bytes));
            }
            drop(body_tx);
        }
        None => {
            actix_web::rt::spawn(pump_body(payload, body_tx, state.config.body_limit_bytes));
        }
    }
    let mut call = CallRequest::new(route.function_id.clone(), Payload::from_serialize(&input))
        .timeout(state.timeout);
    drop(input);
    call.metadata = route.metadata.clone();
    let result = state.registry.call(call);
    let resp = respond(state, resp_id, result, &mut rx).await;
    let out = match resp {
        Answer::Done(r) => r,
        Answer::Stream(head, first) => {
            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Some(Item::Binary(b)) => return Some((Ok::<_, actix_web::Error>(b), rx)),
                        Some(Item::Text(_)) => continue,
                        None => return None,
                    }
                }
            });
            let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
            head.builder().streaming(body)
        }
    };
    out
}

enum Answer {
    Done(HttpResponse),
    /// Streaming mode: the head, and the first chunk of the body.
    Stream(StreamHead, Bytes),
}

/// Waits for the handler's result and its response channel, whichever decides first.
async fn respond(
    state: &HttpState,
    resp_id: Uuid,
    result: impl std::future::Future<Output = Outcome>,
    rx: &mut mpsc::Receiver<Item>,
) -> Answer {
    let mut head = StreamHead::default();
    let mut result = std::pin::pin!(result);
    let mut finished = false;
    let mut grace_until: Option<Instant> = None;
    loop {
        let grace = async {
            match grace_until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            outcome = &mut result, if !finished => {
                finished = true;
                match outcome {
                    Ok(Some(v)) if !v.is_null() => return Answer::Done(response::buffered(&v.to_value())),
                    Ok(_) => {
                        // Nothing returned: the answer comes through the response channel, if
                        // the handler ever attaches to it.
                        if !state.registry.channels().writer_attached(resp_id) {
                            grace_until = Some(Instant::now() + WRITER_GRACE);
                        }
                    }
                    Err(e) => return Answer::Done(envelope(500, &e.code, &e.message)),
                }
            }
            item = rx.recv() => match item {
                Some(Item::Text(t)) => head.apply(&t),
                Some(Item::Binary(b)) => return Answer::Stream(head, b),
                None => return Answer::Done(head.builder().finish()),
            },
            _ = grace => {
                if state.registry.channels().writer_attached(resp_id) {
                    grace_until = None;
                } else {
                    return Answer::Done(HttpResponse::Ok().finish());
                }
            }
        }
    }
}
