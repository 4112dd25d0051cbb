//! The route table of `iii-http` (`MODULES.md` §5.2): `http` trigger bindings by method and
//! path, with `:name` segments as path parameters.
//!
//! Matching is per segment and exact (no trailing-slash tolerance, no wildcards); a literal
//! segment beats a parameter. Registering the same method and path again replaces the route
//! (newest wins); a route with the same shape as an existing one but other parameter names is
//! refused with upstream's message. A route goes when the binding that owns it goes.

use serde_json::Value;

/// The methods a route may be bound to.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// One bound route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub trigger_id: String,
    pub method: String,
    /// `api_path` as registered (what the handler gets as `path`).
    pub api_path: String,
    segments: Vec<Segment>,
    pub function_id: String,
    pub condition: Option<String>,
    pub middleware: Vec<String>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

fn segments(path: &str) -> Vec<Segment> {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/')
        .map(|s| match s.strip_prefix(':') {
            Some(name) => Segment::Param(name.to_string()),
            None => Segment::Literal(s.to_string()),
        })
        .collect()
}

/// The shape of a path: parameters replaced by a placeholder.
fn shape(segments: &[Segment]) -> Vec<Option<&str>> {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            Segment::Param(_) => None,
        })
        .collect()
}

fn normalized(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

impl Route {
    /// A route from an `http` trigger config; `Err` is the registration error's message.
    pub fn parse(
        trigger_id: &str,
        function_id: &str,
        config: &Value,
        metadata: Option<Value>,
    ) -> Result<Route, String> {
        let Some(api_path) = config.get("api_path").and_then(Value::as_str) else {
            return Err("api_path is required for http triggers".into());
        };
        let method = match config.get("http_method") {
            None | Some(Value::Null) => "GET".to_string(),
            Some(Value::String(m)) => m.to_ascii_uppercase(),
            Some(other) => return Err(format!("http_method must be a string, got {other}")),
        };
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "http_method {method:?} is not served (use one of {})",
                METHODS.join(", ")
            ));
        }
        let text = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let middleware = config
            .get("middleware_function_ids")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Route {
            trigger_id: trigger_id.to_string(),
            method,
            api_path: api_path.to_string(),
            segments: segments(api_path),
            function_id: function_id.to_string(),
            condition: text("condition_function_id"),
            middleware,
            metadata,
        })
    }
}

/// What a request found.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    Route {
        route: &'a Route,
        /// `(name, raw segment)`, not yet percent-decoded.
        params: Vec<(String, String)>,
    },
    /// The path exists with other methods (for `Allow`).
    WrongMethod(Vec<String>),
    Missing,
}

/// Every bound route.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Adds (or replaces) a route; `Err` is upstream's conflict message.
    pub fn add(&mut self, route: Route) -> Result<(), String> {
        let same_path = |r: &Route| normalized(&r.api_path) == normalized(&route.api_path);
        if let Some(other) = self.routes.iter().find(|r| {
            r.method == route.method
                && !same_path(r)
                && shape(&r.segments) == shape(&route.segments)
        }) {
            return Err(format!(
                "Route '{} {}' conflicts with already-registered route '{} {}': routes with \
                 identical structure but different path-parameter names are not supported",
                route.method, route.api_path, other.method, other.api_path
            ));
        }
        self.routes.retain(|r| {
            !(r.method == route.method && same_path(r)) && r.trigger_id != route.trigger_id
        });
        self.routes.push(route);
        Ok(())
    }

    /// Removes the route a binding owns, if it still owns one.
    pub fn remove(&mut self, trigger_id: &str) -> bool {
        let before = self.routes.len();
        self.routes.retain(|r| r.trigger_id != trigger_id);
        before != self.routes.len()
    }

    /// The route for `method` and the request `path` (`HEAD` falls back to `GET`).
    pub fn find(&self, method: &str, path: &str) -> Lookup<'_> {
        let parts: Vec<&str> = normalized(path).split('/').collect();
        let mut best: Option<(&Route, usize)> = None;
        let mut methods = Vec::new();
        for r in &self.routes {
            let Some(literals) = matches(&r.segments, &parts) else {
                continue;
            };
            methods.push(r.method.clone());
            let wanted = r.method == method || (method == "HEAD" && r.method == "GET");
            let exact_head = method == "HEAD" && r.method == "HEAD";
            if wanted {
                let better = match best {
                    None => true,
                    Some((b, n)) => {
                        literals > n || (literals == n && exact_head && b.method != "HEAD")
                    }
                };
                if better {
                    best = Some((r, literals));
                }
            }
        }
        match best {
            Some((route, _)) => {
                let params = route
                    .segments
                    .iter()
                    .zip(&parts)
                    .filter_map(|(s, p)| match s {
                        Segment::Param(name) => Some((name.clone(), p.to_string())),
                        Segment::Literal(_) => None,
                    })
                    .collect();
                Lookup::Route { route, params }
            }
            None if !methods.is_empty() => {
                if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                    methods.push("HEAD".into());
                }
                methods.sort();
                methods.dedup();
                Lookup::WrongMethod(methods)
            }
            None => Lookup::Missing,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.routes.len()
    }
}

/// How many literal segments match, if the route matches at all.
fn matches(segments: &[Segment], parts: &[&str]) -> Option<usize> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut literals = 0;
    for (s, p) in segments.iter().zip(parts) {
        match s {
            Segment::Literal(l) if l == p => literals += 1,
            Segment::Literal(_) => return None,
            Segment::Param(_) if p.is_empty() => return None,
            Segment::Param(_) => {}
        }
    }
    Some(literals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(id: &str, method: &str, path: &str) -> Route {
        Route::parse(
            id,
            "f",
            &json!({"api_path": path, "http_method": method}),
            None,
        )
        .unwrap()
    }

    #[test]
    fn literals_beat_params_and_params_are_captured() {
        let mut t = RouteTable::default();
        t.add(route("a", "GET", "users/:id")).unwrap();
        t.add(route("b", "GET", "/users/me")).unwrap();
        let Lookup::Route { route, params } = t.find("GET", "/users/me") else {
            panic!()
        };
        assert_eq!((route.trigger_id.as_str(), params.len()), ("b", 0));
        let Lookup::Route { route, params } = t.find("GET", "/users/42") else {
            panic!()
        };
        assert_eq!(route.trigger_id, "a");
        assert_eq!(params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(
            t.find("GET", "/users/"),
            Lookup::Missing,
            "no trailing-slash tolerance"
        );
        assert_eq!(t.find("GET", "/users/42/x"), Lookup::Missing);
    }

    #[test]
    fn wrong_method_names_the_allowed_ones_and_head_uses_get() {
        let mut t = RouteTable::default();
        t.add(route("a", "GET", "/items")).unwrap();
        t.add(route("b", "POST", "/items")).unwrap();
        assert_eq!(
            t.find("DELETE", "/items"),
            Lookup::WrongMethod(vec!["GET".into(), "HEAD".into(), "POST".into()])
        );
        let Lookup::Route { route, .. } = t.find("HEAD", "/items") else {
            panic!()
        };
        assert_eq!(route.trigger_id, "a");
    }

    #[test]
    fn same_route_replaces_and_same_shape_conflicts() {
        let mut t = RouteTable::default();
        t.add(route("a", "GET", "/u/:id")).unwrap();
        t.add(route("b", "GET", "u/:id")).unwrap();
        assert_eq!(t.len(), 1, "newest wins");
        let e = t.add(route("c", "GET", "/u/:name")).unwrap_err();
        assert!(
            e.contains("conflicts with already-registered route 'GET u/:id'"),
            "{e}"
        );
        t.add(route("d", "POST", "/u/:name")).unwrap();
        assert!(!t.remove("a"), "a no longer owns the route");
        assert!(t.remove("b"));
        assert_eq!(
            t.find("GET", "/u/1"),
            Lookup::WrongMethod(vec!["POST".into()])
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let e = Route::parse("t", "f", &json!({}), None).unwrap_err();
        assert_eq!(e, "api_path is required for http triggers");
        let e = Route::parse(
            "t",
            "f",
            &json!({"api_path": "/x", "http_method": "BREW"}),
            None,
        )
        .unwrap_err();
        assert!(e.contains("BREW"), "{e}");
        let r = Route::parse(
            "t",
            "f",
            &json!({"api_path": "/x", "http_method": "post",
            "middleware_function_ids": ["m1", 5, "m2"], "condition_function_id": "c"}),
            None,
        )
        .unwrap();
        assert_eq!((r.method.as_str(), r.middleware.len()), ("POST", 2));
        assert_eq!(r.condition.as_deref(), Some("c"));
    }
}
