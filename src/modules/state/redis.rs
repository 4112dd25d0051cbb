//! `iii-state` on Redis (`adapter: {name: redis, config: {redis_url}}`, `MODULES.md` §1.4):
//! the same [`Op`]s, shapes and errors as the store, so engines that share a Redis share their
//! state. One hash per scope (`state:<scope>`, field = key, value = compact JSON), as upstream.
//!
//! * `set` and `delete` are one Lua script each (read the old value and write, atomically).
//! * `update` reads the value, applies the ops here (the same code as the store), and writes
//!   with a compare-and-set script that succeeds only if the value is still what was read;
//!   otherwise it reads again (`crate::redis::hash_update`). Concurrent updates from any
//!   number of engines are applied one after another, none lost.
//! * Every write publishes its change on `iii:state:events`; each engine listens there and fires
//!   its own `state` triggers, so a write through any engine reaches the triggers of all of
//!   them, once each (Redis pub/sub: while an engine's link to Redis is down, it misses the
//!   events of that time).

use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::functions::{delete_done, set_done, update_apply, Done, Op, StateChange};
use crate::protocol::ErrorBody;
use crate::redis::{hash_delete, hash_get, hash_set, hash_update, CAS_ATTEMPTS};

/// The channel every engine's state actor listens to.
pub const EVENTS: &str = "iii:state:events";

fn hash(scope: &str) -> String {
    format!("state:{scope}")
}

fn failed(code: &str, what: &str, e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(code, format!("Failed to {what} value: {e}"))
}

/// Runs one op on Redis; a write's change is published for every engine.
pub async fn exec(
    mut conn: ConnectionManager,
    op: Op,
    max_value_bytes: Option<usize>,
) -> Result<Done, ErrorBody> {
    let done = match op {
        Op::Set { scope, key, value } => {
            let old = hash_set(&mut conn, &hash(&scope), &key, &value)
                .await
                .map_err(|e| failed("SET_ERROR", "set", e))?;
            set_done(scope, key, old, value)
        }
        Op::Get { scope, key } => {
            let v = hash_get(&mut conn, &hash(&scope), &key)
                .await
                .map_err(|e| failed("GET_ERROR", "get", e))?;
            (v, None)
        }
        Op::Delete { scope, key } => {
            let old = hash_delete(&mut conn, &hash(&scope), &key)
                .await
                .map_err(|e| failed("DELETE_ERROR", "delete", e))?;
            delete_done(scope, key, old)
        }
        Op::Update { scope, key, ops } => {
            let updated = hash_update(
                &mut conn,
                &hash(&scope),
                &key,
                |e| failed("UPDATE_ERROR", "update", e),
                |old| update_apply(scope.clone(), key.clone(), old, &ops, max_value_bytes),
            )
            .await?;
            updated.ok_or_else(|| {
                ErrorBody::new(
                    "UPDATE_ERROR",
                    format!("Failed to update value: {scope}/{key} kept changing under {CAS_ATTEMPTS} attempts"),
                )
            })?
        }
        Op::List { scope } => {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(hash(&scope))
                .query_async(&mut conn)
                .await
                .map_err(|e| failed("LIST_ERROR", "list", e))?;
            let list: Vec<Value> = values
                .into_iter()
                .filter_map(|t| serde_json::from_str(&t).ok())
                .collect();
            (Some(Value::Array(list)), None)
        }
        Op::ListGroups => {
            let mut groups = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("state:*")
                    .arg("COUNT")
                    .arg(100)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| failed("LIST_ERROR", "list groups of", e))?;
                groups.extend(
                    keys.into_iter()
                        .filter_map(|k| k.strip_prefix("state:").map(str::to_string)),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            groups.sort();
            groups.dedup();
            (Some(json!({"groups": groups})), None)
        }
    };
    if let Some(change) = &done.1 {
        let event = change.payload().to_string();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(EVENTS)
            .arg(event)
            .query_async(&mut conn)
            .await;
        if let Err(e) = sent {
            log::warn!("iii-state: the change of {}/{} was written but its event could not be published: {e}", change.scope, change.key);
        }
    }
    Ok(done)
}

/// A change another engine (or this one) published.
pub fn change_of(event: &Value) -> Option<StateChange> {
    let event_type = match event["event_type"].as_str()? {
        "state:created" => "state:created",
        "state:updated" => "state:updated",
        "state:deleted" => "state:deleted",
        _ => return None,
    };
    Some(StateChange {
        scope: event["scope"].as_str()?.to_string(),
        key: event["key"].as_str()?.to_string(),
        event_type,
        old_value: event["old_value"].clone(),
        new_value: event["new_value"].clone(),
    })
}
