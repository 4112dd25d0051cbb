//! RBAC policy as plain data and pure functions (`PROTOCOL.md` §7); no actix in here.
//!
//! What lives here: the `match("…")` pattern language and `expose_functions` filters of a
//! listener ([`ExposeFilter`]), the per-connection [`SessionPolicy`] (built from an auth
//! function's `AuthResult`, or the defaults of §7.2), the invocation decision order of §7.3
//! ([`decide_invoke`]), the infrastructure allow-list of §7.4, and registration prefixing (§7.8).
//! The registry calls these; they never touch the network.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Separator between a session's registration prefix and the id it registered.
pub const PREFIX_SEPARATOR: &str = "::";

/// Engine functions every session may call unless explicitly forbidden (§7.4).
pub const INFRASTRUCTURE_FUNCTIONS: &[&str] = &[
    "engine::channels::create",
    "engine::workers::register",
    "engine::log::info",
    "engine::log::warn",
    "engine::log::error",
    "engine::log::debug",
    "engine::log::trace",
    "engine::baggage::get",
    "engine::baggage::set",
    "engine::baggage::get_all",
];

/// Longest function id accepted.
pub const MAX_ID_BYTES: usize = 256;

/// A function id must be 1–256 bytes, without `*`, whitespace or control characters, and
/// without empty `::` segments (`a::::b`, a leading or trailing `::`).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("a function id must be 1 to {MAX_ID_BYTES} bytes"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| *c == '*' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("a function id may not contain {c:?}"));
    }
    if id.split(PREFIX_SEPARATOR).any(str::is_empty) {
        return Err("a function id may not have an empty `::` segment".into());
    }
    Ok(())
}

/// A glob where `*` matches any run of characters (including `::`), anchored at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: impl Into<String>) -> Self {
        Pattern(p.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does `text` match this pattern?
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }

    /// Parses `match("…")` / `match('…')` (whitespace around trimmed); anything else is an error.
    pub fn parse_match(s: &str) -> Result<Pattern, String> {
        let t = s.trim();
        let inner = t
            .strip_prefix("match(")
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
            .ok_or_else(|| format!("expected match(\"pattern\"), got {s:?}"))?;
        let unquoted = inner
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
            .ok_or_else(|| format!("the pattern in {s:?} must be quoted"))?;
        Ok(Pattern::new(unquoted))
    }
}

/// Iterative glob matcher with backtracking on the last `*` (linear for typical patterns).
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How one metadata key must look for a metadata filter to match.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaMatcher {
    /// Exact JSON equality.
    Exact(Value),
    /// `match("…")` on a string value.
    Pattern(Pattern),
}

/// One entry of `rbac.expose_functions`.
#[derive(Debug, Clone, PartialEq)]
pub enum ExposeFilter {
    /// `match("todos::*")`: matches the function id.
    Id(Pattern),
    /// `{metadata: {key: value | match("…")}}`: every key must match the function's metadata.
    Metadata(Vec<(String, MetaMatcher)>),
}

impl ExposeFilter {
    /// Does this filter expose `function_id`, whose registered metadata is `metadata`?
    pub fn matches(&self, function_id: &str, metadata: Option<&Value>) -> bool {
        match self {
            ExposeFilter::Id(p) => p.matches(function_id),
            ExposeFilter::Metadata(keys) => {
                let Some(Value::Object(meta)) = metadata else {
                    return false;
                };
                keys.iter().all(|(k, m)| match (m, meta.get(k)) {
                    (MetaMatcher::Exact(v), Some(actual)) => v == actual,
                    (MetaMatcher::Pattern(p), Some(Value::String(s))) => p.matches(s),
                    _ => false,
                })
            }
        }
    }

    /// Parses one YAML entry of `expose_functions`.
    pub fn from_value(v: &Value) -> Result<ExposeFilter, String> {
        match v {
            Value::String(s) => Pattern::parse_match(s).map(ExposeFilter::Id),
            Value::Object(map) => {
                let Some(meta) = map.get("metadata") else {
                    return Err("a map entry needs a `metadata` key".into());
                };
                let Value::Object(meta) = meta else {
                    return Err("`metadata` must be a map of key: value".into());
                };
                if meta.is_empty() {
                    return Err("`metadata` must not be empty".into());
                }
                let keys = meta
                    .iter()
                    .map(|(k, v)| (k.clone(), meta_matcher(v)))
                    .collect();
                Ok(ExposeFilter::Metadata(keys))
            }
            other => Err(format!(
                "expected match(\"…\") or {{metadata: …}}, got {other}"
            )),
        }
    }
}

fn meta_matcher(v: &Value) -> MetaMatcher {
    match v {
        Value::String(s) if s.trim().starts_with("match(") => match Pattern::parse_match(s) {
            Ok(p) => MetaMatcher::Pattern(p),
            Err(_) => MetaMatcher::Exact(v.clone()),
        },
        _ => MetaMatcher::Exact(v.clone()),
    }
}

/// What one connection may do: the `AuthResult` of §7.2, or its defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SessionPolicy {
    pub allowed_functions: Vec<String>,
    pub forbidden_functions: Vec<String>,
    /// `None` = every trigger type is allowed.
    pub allowed_trigger_types: Option<Vec<String>>,
    pub allow_trigger_type_registration: bool,
    pub allow_function_registration: bool,
    pub context: Value,
    pub function_registration_prefix: Option<String>,
}

impl Default for SessionPolicy {
    /// The defaults for an `AuthResult` that omits keys (§7.2 table).
    fn default() -> Self {
        SessionPolicy {
            allowed_functions: Vec::new(),
            forbidden_functions: Vec::new(),
            allowed_trigger_types: None,
            allow_trigger_type_registration: false,
            allow_function_registration: true,
            context: Value::Object(Map::new()),
            function_registration_prefix: None,
        }
    }
}

impl SessionPolicy {
    /// The session of a listener without an auth function: full registration rights.
    pub fn unauthenticated() -> Self {
        SessionPolicy {
            allow_trigger_type_registration: true,
            ..SessionPolicy::default()
        }
    }

    /// Parses an auth function's result.
    pub fn from_auth_result(v: Value) -> Result<SessionPolicy, String> {
        if !v.is_object() {
            return Err(format!(
                "auth function must return an object, got {}",
                kind(&v)
            ));
        }
        serde_json::from_value(v).map_err(|e| format!("invalid auth result: {e}"))
    }

    /// May this session register a binding of `trigger_type`?
    /// May this session bind `trigger_type`? Without `allowed_trigger_types` any type except
    /// an engine-wide one (which sees every connection's or every function's events); with
    /// the list, exactly the types it names.
    pub fn allows_trigger_type(&self, trigger_type: &str, engine_wide: bool) -> bool {
        match &self.allowed_trigger_types {
            None => !engine_wide,
            Some(list) => list.iter().any(|t| t == trigger_type),
        }
    }

    /// The id under which this session's registration of `id` is stored (§7.8).
    pub fn prefixed(&self, id: &str) -> String {
        match &self.function_registration_prefix {
            Some(p) => format!("{p}{PREFIX_SEPARATOR}{id}"),
            None => id.to_string(),
        }
    }

    /// The id this session knows a stored id by (prefix stripped when present).
    pub fn unprefixed<'a>(&self, stored: &'a str) -> &'a str {
        match &self.function_registration_prefix {
            Some(p) => stored
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix(PREFIX_SEPARATOR))
                .unwrap_or(stored),
            None => stored,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Which rule decided an invocation (logged with every denial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Forbidden,
    Allowed,
    Infrastructure,
    NoRbac,
    Exposed,
    NotExposed,
}

impl Rule {
    /// The rule as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rule::Forbidden => "forbidden",
            Rule::Allowed => "allowed",
            Rule::Infrastructure => "infrastructure",
            Rule::NoRbac => "no_rbac",
            Rule::Exposed => "exposed",
            Rule::NotExposed => "not_exposed",
        }
    }
}

/// The result of [`decide_invoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Rule),
    /// Denied; the hint names the config key to change (goes into the `FORBIDDEN` message).
    Deny {
        rule: Rule,
        hint: &'static str,
    },
}

/// The invocation decision order of §7.3, first match wins.
pub fn decide_invoke(
    session: &SessionPolicy,
    expose: Option<&[ExposeFilter]>,
    function_id: &str,
    metadata: Option<&Value>,
) -> Decision {
    if session.forbidden_functions.iter().any(|f| f == function_id) {
        return Decision::Deny {
            rule: Rule::Forbidden,
            hint: "remove from rbac.forbidden_functions",
        };
    }
    if session.allowed_functions.iter().any(|f| f == function_id) {
        return Decision::Allow(Rule::Allowed);
    }
    if INFRASTRUCTURE_FUNCTIONS.contains(&function_id) {
        return Decision::Allow(Rule::Infrastructure);
    }
    let Some(filters) = expose else {
        return Decision::Allow(Rule::NoRbac);
    };
    if filters.iter().any(|f| f.matches(function_id, metadata)) {
        return Decision::Allow(Rule::Exposed);
    }
    Decision::Deny {
        rule: Rule::NotExposed,
        hint: "add to rbac.expose_functions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_semantics() {
        let p = Pattern::new("todos::*");
        assert!(p.matches("todos::list"));
        assert!(p.matches("todos::a::b"));
        assert!(p.matches("todos::"));
        assert!(!p.matches("xtodos::list"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("*").matches("anything::at::all"));
        assert!(Pattern::new("todos::list").matches("todos::list"));
        assert!(!Pattern::new("todos::list").matches("todos::lis"));
        assert!(!Pattern::new("todos::list").matches("todos::listx"));
        assert!(Pattern::new("a*b*c").matches("a-b-b-c"));
        assert!(!Pattern::new("a*b*c").matches("a-b-b-d"));
        assert!(Pattern::new("*::on-*").matches("s1::ui::on-todo-change"));
    }

    #[test]
    fn function_ids() {
        for ok in [
            "todos::create",
            "a",
            "stream::set(orders)",
            "s-1::ui::on-todo-change",
        ] {
            assert_eq!(check_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a::::b",
            "::a",
            "a::",
            "a*",
            "a b",
            "a\u{7}",
            &"x".repeat(257),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_match_syntax() {
        assert_eq!(
            Pattern::parse_match("match(\"todos::*\")")
                .unwrap()
                .as_str(),
            "todos::*"
        );
        assert_eq!(
            Pattern::parse_match("  match( 'a' ) ").unwrap().as_str(),
            "a"
        );
        assert!(Pattern::parse_match("todos::*").is_err());
        assert!(Pattern::parse_match("match(todos)").is_err());
    }

    #[test]
    fn metadata_filters() {
        let f = ExposeFilter::from_value(
            &json!({"metadata": {"public": true, "tier": "match(\"free*\")"}}),
        )
        .unwrap();
        assert!(f.matches(
            "x",
            Some(&json!({"public": true, "tier": "free-plus", "other": 1}))
        ));
        assert!(!f.matches("x", Some(&json!({"public": true, "tier": "paid"}))));
        assert!(!f.matches("x", Some(&json!({"public": "true", "tier": "free"}))));
        assert!(!f.matches("x", Some(&json!({"tier": "free"}))));
        assert!(!f.matches("x", None));
        // The wildcard only matches strings.
        let f = ExposeFilter::from_value(&json!({"metadata": {"n": "match(\"*\")"}})).unwrap();
        assert!(!f.matches("x", Some(&json!({"n": 1}))));
        assert!(ExposeFilter::from_value(&json!({"metadata": {}})).is_err());
        assert!(ExposeFilter::from_value(&json!("todos::*")).is_err());
        assert!(ExposeFilter::from_value(&json!(3)).is_err());
    }

    fn exposed() -> Vec<ExposeFilter> {
        vec![ExposeFilter::Id(Pattern::new("todos::*"))]
    }

    #[test]
    fn decision_order() {
        let mut s = SessionPolicy::default();
        let e = exposed();
        assert_eq!(
            decide_invoke(&s, Some(&e), "todos::list", None),
            Decision::Allow(Rule::Exposed)
        );
        assert!(matches!(
            decide_invoke(&s, Some(&e), "stream::set", None),
            Decision::Deny {
                rule: Rule::NotExposed,
                hint: "add to rbac.expose_functions"
            }
        ));
        assert!(matches!(
            decide_invoke(&s, Some(&e), "engine::functions::list", None),
            Decision::Deny { .. }
        ));
        assert_eq!(
            decide_invoke(&s, Some(&e), "engine::workers::register", None),
            Decision::Allow(Rule::Infrastructure)
        );
        assert_eq!(
            decide_invoke(&s, None, "stream::set", None),
            Decision::Allow(Rule::NoRbac)
        );
        s.allowed_functions = vec!["stream::get".into()];
        assert_eq!(
            decide_invoke(&s, Some(&e), "stream::get", None),
            Decision::Allow(Rule::Allowed)
        );
        // Forbidden beats allowed, exposure and the infrastructure list.
        s.forbidden_functions = vec![
            "stream::get".into(),
            "todos::list".into(),
            "engine::workers::register".into(),
        ];
        for id in ["stream::get", "todos::list", "engine::workers::register"] {
            assert_eq!(
                decide_invoke(&s, Some(&e), id, None),
                Decision::Deny {
                    rule: Rule::Forbidden,
                    hint: "remove from rbac.forbidden_functions"
                },
                "{id}"
            );
        }
        // Forbidden applies even without an rbac block.
        assert!(matches!(
            decide_invoke(&s, None, "todos::list", None),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn auth_result_defaults_and_errors() {
        let p = SessionPolicy::from_auth_result(json!({})).unwrap();
        assert_eq!(p, SessionPolicy::default());
        assert!(!p.allow_trigger_type_registration);
        assert!(p.allow_function_registration);
        assert_eq!(p.context, json!({}));
        let p = SessionPolicy::from_auth_result(json!({
            "allowed_trigger_types": ["stream"], "function_registration_prefix": "S",
            "context": {"session_id": "S"}, "unknown_privilege": true
        }))
        .unwrap();
        assert!(p.allows_trigger_type("stream", false));
        assert!(!p.allows_trigger_type("cron", false));
        assert_eq!(p.prefixed("ui::on-todo-change"), "S::ui::on-todo-change");
        assert_eq!(p.unprefixed("S::ui::on-todo-change"), "ui::on-todo-change");
        assert_eq!(p.unprefixed("other::x"), "other::x");
        assert!(SessionPolicy::from_auth_result(json!(null))
            .unwrap_err()
            .contains("nothing"));
        assert!(SessionPolicy::from_auth_result(json!({"allowed_functions": "x"})).is_err());
        assert!(SessionPolicy::unauthenticated().allows_trigger_type("anything", false));
        assert!(!SessionPolicy::unauthenticated().allows_trigger_type("stream:join", true));
    }
}
