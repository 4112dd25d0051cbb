//! The configuration of `iii-http` (`MODULES.md` §5.1): its listener, timeouts, CORS, global
//! middleware and — beyond upstream — a request body limit. Strict: unknown keys are errors,
//! also inside `cors` and `middleware` entries.

use serde::Deserialize;

/// The `iii-http` module.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    /// Milliseconds until a request without a response head is answered 504.
    pub default_timeout: u64,
    /// Requests handled at once; more wait (they are not refused). 0 counts as 1.
    pub concurrency_request_limit: usize,
    /// Absent: any origin, any method, any header (as upstream).
    pub cors: Option<CorsConfig>,
    /// Global middleware, run before every route's own, in `priority` order.
    pub middleware: Vec<MiddlewareEntry>,
    /// Largest request body accepted (413 past it). Not in upstream, which has no limit.
    pub body_limit_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            host: "0.0.0.0".into(),
            port: 3111,
            default_timeout: 30_000,
            concurrency_request_limit: 1024,
            cors: None,
            middleware: Vec::new(),
            body_limit_bytes: 16 << 20,
        }
    }
}

impl HttpConfig {
    /// `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The global middleware that runs (`phase: preHandler`), sorted by priority (stable).
    pub fn pre_handler_middleware(&self) -> Vec<String> {
        let mut m: Vec<&MiddlewareEntry> = self
            .middleware
            .iter()
            .filter(|m| m.phase == "preHandler")
            .collect();
        m.sort_by_key(|m| m.priority);
        m.into_iter().map(|m| m.function_id.clone()).collect()
    }
}

/// `cors`: allowed origins (`[]` or `*` = any) and methods (`[]` = any).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
}

/// One global middleware.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareEntry {
    pub function_id: String,
    #[serde(default = "pre_handler")]
    pub phase: String,
    #[serde(default)]
    pub priority: i64,
}

fn pre_handler() -> String {
    "preHandler".into()
}

/// The `iii-http-functions` module (`MODULES.md` §5.7): which URLs functions may live behind.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFunctionsConfig {
    pub security: SecurityConfig,
}

/// URL rules for HTTP-invoked functions. Defaults refuse plain http and private addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Glob patterns (`*` = any run of characters) on the URL's host; empty = any host.
    pub url_allowlist: Vec<String>,
    /// Refuse loopback, private, link-local and other non-public addresses (SSRF).
    pub block_private_ips: bool,
    /// Refuse `http://` URLs.
    pub require_https: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            url_allowlist: Vec::new(),
            block_private_ips: true,
            require_https: true,
        }
    }
}
