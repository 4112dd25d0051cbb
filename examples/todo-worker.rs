//! The todo API worker in Rust, on our client: the same functions and behaviour as the
//! JavaScript worker in `worker/` (which `iii-config.yaml` runs by default).
//!
//! Registers `todo-project::auth-function` (a fresh session id per public connection, used as
//! its registration prefix; only `stream` triggers; function registration allowed) and
//! `todos::create/list/get/toggle/delete` over the engine's `stream::*` functions (stream
//! `todo`, group `todos`). Input is validated: a missing, non-string, blank or over-long (200
//! characters) title, or a missing id, fails with `invocation_failed` and a message naming the
//! field.
//!
//! ```sh
//! III_URL=ws://localhost:49134 cargo run --release --example todo-worker
//! # or let the engine start it:
//! III_TODO_WORKER="cargo run --release --quiet --example todo-worker" cargo run --release
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use iii::protocol::ErrorBody;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const MAX_TITLE_CHARS: usize = 200;

fn failed(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new("invocation_failed", message)
}

/// The field as a non-blank string, or an error naming it.
fn required_string(input: &Value, field: &str) -> Result<String, ErrorBody> {
    match input.get(field) {
        None | Some(Value::Null) => Err(failed(format!("{field} is required"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(failed(format!("{field} must not be empty")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(failed(format!(
            "{field} must be a string, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Array(_) | Value::Object(_) => "object",
        _ => "string",
    }
}

fn validate_title(input: &Value) -> Result<String, ErrorBody> {
    let title = required_string(input, "title")?.trim().to_string();
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(failed(format!(
            "title must be at most {MAX_TITLE_CHARS} characters, got {chars}"
        )));
    }
    Ok(title)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Calls `stream::<op>` on the todo group.
async fn stream(iii: &Client, op: &str, mut payload: Value) -> Result<Value, ErrorBody> {
    payload["stream_name"] = json!("todo");
    payload["group_id"] = json!("todos");
    iii.trigger(&format!("stream::{op}"), payload)
        .await
        .map_err(|e| ErrorBody::new(e.code, e.message))
}

/// Oldest first; items without `created_at` keep their store order, ahead of the rest.
fn sort_by_created_at(mut items: Vec<Value>) -> Vec<Value> {
    items.sort_by_key(|t| {
        t.get("created_at")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MIN)
    });
    items
}

fn register(iii: &Client) {
    iii.register_function_with(
        "todo-project::auth-function",
        Some("Creates a session for each connection to the public (RBAC) port".into()),
        None,
        |input: Value| async move {
            let session_id = uuid::Uuid::new_v4().to_string();
            log::info!(
                "auth: new session {session_id} from {}",
                input["ip_address"].as_str().unwrap_or("?")
            );
            Ok(json!({"allowed_functions": [], "forbidden_functions": [],
                      "allow_trigger_type_registration": false, "allow_function_registration": true,
                      "allowed_trigger_types": ["stream"], "context": {"session_id": session_id},
                      "function_registration_prefix": session_id}))
        },
    );
    let c = iii.clone();
    iii.register_function_with(
        "todos::create",
        Some("Create a todo from {title}; returns the new todo".into()),
        None,
        move |input| {
            let c = c.clone();
            async move {
                let title = validate_title(&input)?;
                let id = uuid::Uuid::new_v4().to_string();
                let todo =
                    json!({"id": id, "title": title, "completed": false, "created_at": now_ms()});
                let out = stream(&c, "set", json!({"item_id": id, "data": todo})).await?;
                log::info!("todos::create id={id}");
                Ok(out["new_value"].clone())
            }
        },
    );
    let c = iii.clone();
    iii.register_function_with(
        "todos::list",
        Some("List all todos, oldest first; returns {items}".into()),
        None,
        move |_| {
            let c = c.clone();
            async move {
                let items = match stream(&c, "list", json!({})).await? {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                };
                Ok(json!({ "items": sort_by_created_at(items) }))
            }
        },
    );
    let c = iii.clone();
    iii.register_function_with(
        "todos::get",
        Some("Get the todo with {id}; returns it, or null if there is none".into()),
        None,
        move |input| {
            let c = c.clone();
            async move {
                let id = required_string(&input, "id")?;
                stream(&c, "get", json!({ "item_id": id })).await
            }
        },
    );
    let c = iii.clone();
    iii.register_function_with(
        "todos::toggle",
        Some("Flip `completed` of the todo with {id}; returns the updated todo, or null if there is none".into()),
        None,
        move |input| {
            let c = c.clone();
            async move {
                let id = required_string(&input, "id")?;
                let current = stream(&c, "get", json!({ "item_id": id })).await?;
                if current.is_null() {
                    log::info!("todos::toggle id={id} not found");
                    return Ok(Value::Null);
                }
                let completed = !current["completed"].as_bool().unwrap_or(false);
                let ops = json!([{"type": "set", "path": "completed", "value": completed}]);
                let out = stream(&c, "update", json!({"item_id": id, "ops": ops})).await?;
                log::info!("todos::toggle id={id} completed={completed}");
                Ok(out["new_value"].clone())
            }
        },
    );
    let c = iii.clone();
    iii.register_function_with(
        "todos::delete",
        Some("Delete the todo with {id}; returns {id, deleted}".into()),
        None,
        move |input| {
            let c = c.clone();
            async move {
                let id = required_string(&input, "id")?;
                let out = stream(&c, "delete", json!({ "item_id": id })).await?;
                let deleted = !out["old_value"].is_null();
                log::info!("todos::delete id={id} deleted={deleted}");
                Ok(json!({"id": id, "deleted": deleted}))
            }
        },
    );
}

#[actix::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let url = std::env::var("III_URL").unwrap_or_else(|_| "ws://localhost:49134".into());
    let iii = Client::start(&url, ClientOptions::named("todo-api-worker-rust"));
    register(&iii);
    log::info!("registered functions, engine at {url}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    log::info!("shutting down");
    iii.shutdown().await;
}
