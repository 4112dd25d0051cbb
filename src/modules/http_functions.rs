//! HTTP-invoked functions (`iii-http-functions`, `MODULES.md` §5.7): a worker registers a
//! function with an `invocation` (`url`, `method`, `timeout_ms`, `headers`, `auth`), and every
//! call of it becomes an HTTP request from the engine; the response becomes the result.
//!
//! The URL is checked when the function is registered (a refusal reaches the worker as an
//! error frame naming the reason; upstream drops it silently) and again before every request,
//! with DNS: `require_https`, the host `url_allowlist` (globs), and `block_private_ips`, which
//! refuses loopback, RFC 1918, link-local (cloud metadata), CGNAT, multicast, documentation,
//! unspecified and IPv6 ULA/link-local addresses, v4-mapped forms included. The request goes
//! to the address that was checked (the host name is only the `Host`), so a DNS answer that
//! changes between check and connect cannot point it elsewhere. Redirects are not followed.
//!
//! Request: the call's `data` as compact JSON (with `_caller_worker_id` for worker callers),
//! headers `Content-Type: application/json`, `x-iii-Function-Path`, `x-iii-Invocation-ID`,
//! `x-iii-Timestamp`, the configured ones, then auth: `hmac` signs
//! `"<timestamp>:<base64(body)>"` with HMAC-SHA256 into `x-iii-Signature: sha256=<hex>`;
//! `bearer` and `api_key` add their header. Secrets are names of the engine's environment
//! variables, read at registration.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::config::SecurityConfig;
use crate::messages::{BuiltinCall, BuiltinDone, RegisterBuiltins, TriggerBinding};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;

/// The longest a request may take, whatever `timeout_ms` says.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How a function is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    url: url::Url,
    method: awc::http::Method,
    timeout: Duration,
    headers: Vec<(String, String)>,
    auth: Auth,
}

#[derive(Debug, Clone, PartialEq)]
enum Auth {
    None,
    Hmac(String),
    Bearer(String),
    ApiKey { header: String, value: String },
}

fn secret(obj: &Value, key: &str, missing: &str) -> Result<String, String> {
    let name = obj
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("auth.{key} is required"))?;
    std::env::var(name).map_err(|_| format!("{missing}: {name}"))
}

/// Reads and checks an `invocation` (everything but DNS); `Err` says why it is refused.
pub fn prepare(invocation: &Value, security: &SecurityConfig) -> Result<Invocation, String> {
    let text = |k: &str| invocation.get(k).and_then(Value::as_str);
    let raw = text("url").ok_or("invocation.url is required")?;
    let url =
        url::Url::parse(raw).map_err(|e| format!("url_validation_failed: Invalid URL ({e})"))?;
    check_url(&url, security)?;
    if let Some(ip) = host_ip(&url) {
        check_ip(ip, security)?;
    } else if security.block_private_ips && url.host_str() == Some("localhost") {
        return Err("url_validation_failed: Private IP blocked (localhost)".into());
    }
    let method = match text("method")
        .unwrap_or("POST")
        .to_ascii_uppercase()
        .as_str()
    {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => {
            awc::http::Method::from_bytes(m.as_bytes()).expect("method")
        }
        other => {
            return Err(format!(
                "invocation.method {other:?} is not one of GET, POST, PUT, PATCH, DELETE"
            ))
        }
    };
    let timeout = invocation
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
        .min(MAX_TIMEOUT);
    let headers = invocation
        .get("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let auth = match invocation.get("auth") {
        None | Some(Value::Null) => Auth::None,
        Some(a) => match a.get("type").and_then(Value::as_str) {
            Some("hmac") => Auth::Hmac(secret(a, "secret_key", "Secret not found")?),
            Some("bearer") => Auth::Bearer(secret(a, "token_key", "token_not_found")?),
            Some("api_key") => Auth::ApiKey {
                header: a
                    .get("header")
                    .and_then(Value::as_str)
                    .ok_or("auth.header is required")?
                    .to_string(),
                value: secret(a, "value_key", "api_key_not_found")?,
            },
            other => {
                return Err(format!(
                    "auth.type {other:?} is not hmac, bearer or api_key"
                ))
            }
        },
    };
    Ok(Invocation {
        url,
        method,
        timeout,
        headers,
        auth,
    })
}

fn host_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

fn check_url(url: &url::Url, security: &SecurityConfig) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url_validation_failed: Invalid URL (http or https only)".into());
    }
    if security.require_https && url.scheme() != "https" {
        return Err("url_validation_failed: HTTPS is required (security.require_https)".into());
    }
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let allowed =
        security.url_allowlist.is_empty() || security.url_allowlist.iter().any(|g| glob(g, host));
    if !allowed {
        return Err(format!(
            "url_validation_failed: URL not in allowlist ({host})"
        ));
    }
    Ok(())
}

fn check_ip(ip: IpAddr, security: &SecurityConfig) -> Result<(), String> {
    if security.block_private_ips && !is_public(ip) {
        return Err(format!(
            "url_validation_failed: Private IP blocked ({ip}; security.block_private_ips)"
        ));
    }
    Ok(())
}

/// `*` matches any run of characters; case-insensitive.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Is this an address on the public internet?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// The actor that makes the requests.
pub struct HttpFunctionsActor {
    registry: Registry,
    security: SecurityConfig,
    client: Option<awc::Client>,
}

/// Starts the actor on `arbiter` (it provides no functions of its own).
pub fn start(security: SecurityConfig, registry: Registry, arbiter: &ArbiterHandle) {
    let reg = registry.clone();
    let actor = HttpFunctionsActor::start_in_arbiter(arbiter, move |_| HttpFunctionsActor {
        registry: reg,
        security,
        client: None,
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-http-functions",
        functions: Vec::new(),
        calls: actor.clone().recipient(),
        trigger_types: Vec::new(),
        bindings: actor.recipient(),
    });
}

impl Actor for HttpFunctionsActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.client = Some(
            awc::Client::builder()
                .disable_redirects()
                .timeout(MAX_TIMEOUT)
                .finish(),
        );
    }
}

fn failed(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// One request: checks the address, sends, maps the answer.
async fn request(
    client: awc::Client,
    security: SecurityConfig,
    inv: Arc<Invocation>,
    function_id: String,
    body: Payload,
) -> Result<Option<Payload>, ErrorBody> {
    let host = inv
        .url
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = inv.url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| {
            failed(
                "url_validation_failed",
                format!("DNS lookup failed for {host}: {e}"),
            )
        })?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        return Err(failed(
            "url_validation_failed",
            format!("DNS lookup failed for {host}: no address"),
        ));
    };
    for a in &addrs {
        check_ip(a.ip(), &security).map_err(|m| failed("url_validation_failed", m))?;
    }
    let bytes = body.as_bytes().clone();
    let timestamp = crate::router::now_ms() / 1000;
    let mut req = client
        .request(inv.method.clone(), inv.url.as_str())
        .address(addr)
        .timeout(inv.timeout)
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-iii-Function-Path", function_id.as_str()))
        .insert_header(("x-iii-Invocation-ID", uuid::Uuid::new_v4().to_string()))
        .insert_header(("x-iii-Timestamp", timestamp.to_string()));
    for (k, v) in &inv.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    req = match &inv.auth {
        Auth::None => req,
        Auth::Hmac(secret) => {
            req.insert_header(("x-iii-Signature", sign(secret, timestamp, &bytes)))
        }
        Auth::Bearer(token) => req.insert_header(("authorization", format!("Bearer {token}"))),
        Auth::ApiKey { header, value } => req.insert_header((header.as_str(), value.as_str())),
    };
    let mut resp = req.send_body(bytes).await.map_err(|e| {
        let why = match e {
            awc::error::SendRequestError::Timeout => {
                format!("timed out after {} ms", inv.timeout.as_millis())
            }
            other => other.to_string(),
        };
        failed(
            "http_request_failed",
            format!("{} {}: {why}", inv.method, inv.url),
        )
    })?;
    let status = resp.status();
    let body = resp
        .body()
        .limit(64 << 20)
        .await
        .map_err(|e| failed("http_response_failed", e.to_string()))?;
    let parsed = (!body.is_empty()).then(|| serde_json::from_slice::<Value>(&body));
    if status.as_u16() >= 400 {
        let err = parsed
            .and_then(Result::ok)
            .and_then(|v| v.get("error").cloned());
        return Err(match err {
            Some(e) => failed(
                e.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("http_error"),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("HTTP request failed"),
            ),
            None => failed(
                "http_error",
                format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
            ),
        });
    }
    match parsed {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(Payload::from_value(&v))),
        Some(Err(e)) => Err(failed(
            "invalid_response",
            format!("the response is not JSON: {e}"),
        )),
    }
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>:<base64(body)>")>`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    mac.update(format!("{timestamp}:{b64}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

impl Handler<BuiltinCall> for HttpFunctionsActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, ctx: &mut Self::Context) {
        let engine_id = call.engine_id;
        let (Some(inv), Some(client)) = (call.invocation.clone(), self.client.clone()) else {
            let err = failed(
                "function_not_found",
                format!("Function {} not found", call.function_id),
            );
            return self.registry.do_send(BuiltinDone {
                engine_id,
                outcome: Err(err),
            });
        };
        let body = match &call.caller {
            Some(c) if call.data.is_object() => call.data.with_caller(c),
            _ => call.data.clone(),
        };
        let fut = request(client, self.security.clone(), inv, call.function_id, body);
        ctx.spawn(fut.into_actor(self).map(move |outcome, act, _| {
            act.registry.do_send(BuiltinDone { engine_id, outcome });
        }));
    }
}

impl Handler<TriggerBinding> for HttpFunctionsActor {
    type Result = ();
    fn handle(&mut self, _msg: TriggerBinding, _ctx: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> SecurityConfig {
        SecurityConfig {
            url_allowlist: vec![],
            block_private_ips: false,
            require_https: false,
        }
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_when_registered() {
        let strict = SecurityConfig::default();
        let e = prepare(&json!({"url": "http://api.example.com/x"}), &strict).unwrap_err();
        assert!(e.contains("HTTPS is required"), "{e}");
        let e = prepare(&json!({"url": "https://127.0.0.1/x"}), &strict).unwrap_err();
        assert!(e.contains("Private IP blocked"), "{e}");
        let e = prepare(
            &json!({"url": "https://[::ffff:169.254.169.254]/x"}),
            &strict,
        )
        .unwrap_err();
        assert!(e.contains("Private IP blocked"), "{e}");
        let e = prepare(&json!({"url": "https://localhost/x"}), &strict).unwrap_err();
        assert!(e.contains("Private IP blocked"), "{e}");
        let e = prepare(&json!({"url": "not a url"}), &strict).unwrap_err();
        assert!(e.contains("Invalid URL"), "{e}");
        let listed = SecurityConfig {
            url_allowlist: vec!["*.example.com".into()],
            ..strict.clone()
        };
        assert!(prepare(&json!({"url": "https://api.example.com/x"}), &listed).is_ok());
        let e = prepare(&json!({"url": "https://evil.test/x"}), &listed).unwrap_err();
        assert!(e.contains("allowlist"), "{e}");
        let e = prepare(&json!({"url": "http://127.0.0.1/x", "auth": {"type": "hmac", "secret_key": "III_NO_SUCH_VAR"}}), &open()).unwrap_err();
        assert!(e.contains("Secret not found: III_NO_SUCH_VAR"), "{e}");
        let inv = prepare(
            &json!({"url": "http://127.0.0.1:9/x", "method": "put", "timeout_ms": 999999}),
            &open(),
        )
        .unwrap();
        assert_eq!((inv.method.as_str(), inv.timeout), ("PUT", MAX_TIMEOUT));
    }

    #[test]
    fn signatures_match_the_documented_recipe() {
        // HMAC-SHA256("key", "1700000000:" + base64("{}")), computed with Python's hmac.
        assert_eq!(
            sign("key", 1_700_000_000, b"{}"),
            "sha256=a2b91470f85746f9927b6fd65e1c1cc3c4ac1e358be210264e7ecf3f55d63a99"
        );
    }
}
