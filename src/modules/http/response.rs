//! What `iii-http` answers (`MODULES.md` §5.5, §5.6): the error envelope, a middleware's
//! `respond`, a handler's result in buffered mode, the head and body of a streamed response,
//! and CORS headers.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::{json, Value};

use crate::config::CorsConfig;

/// `{"error":{"code","message","error_id"?}}` with `status`; 5xx answers carry an `error_id`
/// that is also in the engine log line.
pub fn envelope(status: u16, code: &str, message: &str) -> HttpResponse {
    let mut error = json!({"code": code, "message": message});
    if status >= 500 {
        let id = error_id();
        log::warn!("http: {status} {code}: {message} (error_id {id})");
        error["error_id"] = json!(id);
    }
    HttpResponse::build(status_or_200(status as i64))
        .content_type("application/json")
        .body(json!({ "error": error }).to_string())
}

/// 12 lowercase hex digits from the clock.
fn error_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:012x}", (nanos as u64) & 0xffff_ffff_ffff)
}

fn status_or_200(code: i64) -> StatusCode {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK)
}

/// Adds one header if its name and value are valid (invalid ones are skipped).
fn add_header(b: &mut HttpResponseBuilder, name: &str, value: &str) -> bool {
    match (
        HeaderName::from_bytes(name.trim().as_bytes()),
        HeaderValue::from_str(value.trim()),
    ) {
        (Ok(n), Ok(v)) => {
            b.append_header((n, v));
            true
        }
        _ => false,
    }
}

/// Headers as an object `{"Name": "value"}` or a list of `"Name: value"`; returns whether a
/// `content-type` was among them.
fn add_headers(b: &mut HttpResponseBuilder, headers: Option<&Value>) -> Option<String> {
    let mut content_type = None;
    let mut one = |name: &str, value: &str| {
        if add_header(b, name, value) && name.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_string());
        }
    };
    match headers {
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if let Some(v) = value.as_str() {
                    one(name, v);
                }
            }
        }
        Some(Value::Array(list)) => {
            for line in list.iter().filter_map(Value::as_str) {
                if let Some((name, value)) = line.split_once(':') {
                    if !name.trim().is_empty() {
                        one(name, value);
                    }
                }
            }
        }
        _ => {}
    }
    content_type
}

/// A middleware's `{"action":"respond","response":{status_code, body, headers}}`: JSON always.
pub fn middleware_respond(response: &Value) -> HttpResponse {
    let status = response
        .get("status_code")
        .and_then(Value::as_i64)
        .unwrap_or(200);
    let mut b = HttpResponse::build(status_or_200(status));
    add_headers(&mut b, response.get("headers").filter(|h| h.is_object()));
    b.content_type("application/json");
    let body = response.get("body").cloned().unwrap_or(Value::Null);
    b.body(body.to_string())
}

/// A handler's result in buffered mode (§5.5).
pub fn buffered(result: &Value) -> HttpResponse {
    let Some(obj) = result.as_object() else {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body("{}");
    };
    let status = obj
        .get("status_code")
        .and_then(Value::as_i64)
        .unwrap_or(200);
    let mut b = HttpResponse::build(status_or_200(status));
    let content_type = add_headers(&mut b, obj.get("headers"));
    let body = obj.get("body").cloned().unwrap_or_else(|| json!({}));
    match (&content_type, &body) {
        (Some(_), Value::String(s)) => b.body(s.clone()),
        (Some(_), Value::Null) => b.finish(),
        (Some(ct), other) if !ct.to_ascii_lowercase().contains("application/json") => {
            b.body(other.to_string())
        }
        (Some(_), other) => b.body(other.to_string()),
        (None, other) => b.content_type("application/json").body(other.to_string()),
    }
}

/// The head a streamed response has collected from `set_status` / `set_headers` messages.
#[derive(Debug, Default)]
pub struct StreamHead {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
}

impl StreamHead {
    /// Applies one text message of the response channel (anything else is ignored).
    pub fn apply(&mut self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match msg.get("type").and_then(Value::as_str) {
            Some("set_status") => {
                if let Some(code) = msg.get("status_code").and_then(Value::as_u64) {
                    if (100..=599).contains(&code) {
                        self.status = Some(code as u16);
                    }
                }
            }
            Some("set_headers") => {
                if let Some(map) = msg.get("headers").and_then(Value::as_object) {
                    for (name, value) in map {
                        if let Some(v) = value.as_str() {
                            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                            self.headers.push((name.clone(), v.to_string()));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The response builder for this head (no default content type).
    pub fn builder(&self) -> HttpResponseBuilder {
        let mut b = HttpResponse::build(status_or_200(self.status.unwrap_or(200) as i64));
        for (n, v) in &self.headers {
            add_header(&mut b, n, v);
        }
        b
    }
}

/// Is `origin` allowed by `cors` (absent: any)?
fn origin_allowed(cors: Option<&CorsConfig>, origin: &str) -> bool {
    cors.is_none_or(|c| {
        c.allowed_origins.is_empty() || c.allowed_origins.iter().any(|o| o == "*" || o == origin)
    })
}

fn method_allowed(cors: Option<&CorsConfig>, method: &str) -> bool {
    cors.is_none_or(|c| {
        c.allowed_methods.is_empty()
            || c.allowed_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method))
    })
}

/// Answers a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
pub fn preflight(req: &HttpRequest, cors: Option<&CorsConfig>) -> Option<HttpResponse> {
    let h = req.headers();
    let origin = h.get("origin")?.to_str().ok()?;
    let method = h.get("access-control-request-method")?.to_str().ok()?;
    if req.method() != actix_web::http::Method::OPTIONS {
        return None;
    }
    let mut b = HttpResponse::Ok();
    b.append_header((
        "vary",
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    ));
    if origin_allowed(cors, origin) && method_allowed(cors, method) {
        b.append_header(("access-control-allow-origin", origin));
        let methods = match cors {
            Some(c) if !c.allowed_methods.is_empty() => c.allowed_methods.join(", "),
            _ => super::routes::METHODS.join(", "),
        };
        b.append_header(("access-control-allow-methods", methods));
        let asked = h
            .get("access-control-request-headers")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*");
        b.append_header(("access-control-allow-headers", asked));
        b.append_header(("access-control-max-age", "600"));
    }
    Some(b.finish())
}

/// Adds the CORS headers of an ordinary response.
pub fn decorate(headers: &HeaderMap, cors: Option<&CorsConfig>, resp: &mut HttpResponse) {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !origin_allowed(cors, origin) {
        return;
    }
    let out = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        out.insert(HeaderName::from_static("access-control-allow-origin"), v);
    }
    out.append(
        HeaderName::from_static("vary"),
        HeaderValue::from_static("Origin"),
    );
    if cors.is_none() {
        out.insert(
            HeaderName::from_static("access-control-expose-headers"),
            HeaderValue::from_static("*"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body(r: HttpResponse) -> (u16, Option<String>, String) {
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = r.into_body().try_into_bytes().unwrap_or_default();
        (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn buffered_results_follow_upstream_rules() {
        let (s, ct, b) = body(buffered(&json!({"status_code": 201, "body": {"a": 1}})));
        assert_eq!(
            (s, ct.as_deref(), b.as_str()),
            (201, Some("application/json"), r#"{"a":1}"#)
        );
        let (s, ct, b) = body(buffered(
            &json!({"headers": {"Content-Type": "text/xml"}, "body": "<a/>"}),
        ));
        assert_eq!(
            (s, ct.as_deref(), b.as_str()),
            (200, Some("text/xml"), "<a/>")
        );
        let (_, _, b) = body(buffered(
            &json!({"headers": ["X-A: 1", "bad"], "body": null, "status_code": 99999}),
        ));
        assert_eq!(b, "null");
        let (s, _, b) = body(buffered(&json!("bare")));
        assert_eq!((s, b.as_str()), (200, "{}"));
        let (_, _, b) = body(buffered(&json!({"status_code": 204})));
        assert_eq!(b, "{}");
    }

    #[test]
    fn stream_heads_take_valid_controls_only() {
        let mut h = StreamHead::default();
        h.apply(r#"{"type":"set_status","status_code":201}"#);
        h.apply(r#"{"type":"set_status","status_code":999}"#);
        h.apply(r#"{"type":"set_headers","headers":{"content-type":"text/plain","x":1}}"#);
        h.apply("not json");
        assert_eq!(h.status, Some(201));
        assert_eq!(
            h.headers,
            vec![("content-type".to_string(), "text/plain".to_string())]
        );
    }

    #[test]
    fn envelopes_of_server_errors_carry_an_id() {
        let (s, _, b) = body(envelope(500, "boom", "it broke"));
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(s, 500);
        assert_eq!(v["error"]["error_id"].as_str().unwrap().len(), 12);
        let (_, _, b) = body(envelope(404, "NOT_FOUND", "Not Found"));
        assert_eq!(b, r#"{"error":{"code":"NOT_FOUND","message":"Not Found"}}"#);
    }
}
