//! `iii-stream` on Redis (`adapter: {name: redis, config: {redis_url}}`): the same [`Op`]s,
//! shapes and errors as the store, so engines that share a Redis share their streams — the
//! todo app behind a load balancer. One hash per group (`stream:<name>:<group>`, field = item
//! id, value = compact JSON).
//!
//! * `set` and `delete` are one Lua script each (old value and write, atomically); `update`
//!   applies the ops here and writes with a compare-and-set script, retrying while another
//!   engine changed the item (`crate::redis::hash_update`).
//! * Every change (and every `stream::send`) is published on `iii:stream:events`; each engine
//!   listens there and hands it to its own `stream` triggers and consumer sockets, so a write
//!   through any engine reaches every subscriber of every engine once (Redis pub/sub: an engine
//!   whose link to Redis is down misses the events of that time; its consumers resync when they
//!   join again).
//! * `list` is `HVALS` (a small hash keeps insertion order; a large one does not).

use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::functions::{delete_done, list_all_done, set_done, update_apply, Change, Done, Op};
use crate::protocol::ErrorBody;
use crate::redis::{hash_delete, hash_get, hash_set, hash_update, CAS_ATTEMPTS};

/// The channel every engine's stream actor listens to.
pub const EVENTS: &str = "iii:stream:events";

fn hash(stream: &str, group: &str) -> String {
    format!("stream:{stream}:{group}")
}

fn failed(code: &str, what: &str, e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(code, format!("Failed to {what} value: {e}"))
}

/// Every key matching `pattern` (SCAN, so Redis is never blocked).
async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, ErrorBody> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await
            .map_err(|e| failed("STREAM_LIST_ERROR", "list", e))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// A group's values (the first `sync` of a consumer socket, and `stream::list`).
pub async fn list(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> Result<Value, ErrorBody> {
    let values: Vec<String> = redis::cmd("HVALS")
        .arg(hash(stream, group))
        .query_async(conn)
        .await
        .map_err(|e| failed("STREAM_LIST_ERROR", "list", e))?;
    Ok(Value::Array(
        values
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect(),
    ))
}

/// One item's value, if any.
pub async fn get(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
    item: &str,
) -> Result<Option<Value>, ErrorBody> {
    hash_get(conn, &hash(stream, group), item)
        .await
        .map_err(|e| failed("STREAM_GET_ERROR", "get", e))
}

/// Runs one op on Redis; a change is published for every engine.
pub async fn exec(mut conn: ConnectionManager, op: Op) -> Result<Done, ErrorBody> {
    let done = match op {
        Op::Set {
            stream,
            group,
            item,
            data,
        } => {
            let old = hash_set(&mut conn, &hash(&stream, &group), &item, &data)
                .await
                .map_err(|e| failed("STREAM_SET_ERROR", "set", e))?;
            set_done(stream, group, item, old, data)
        }
        Op::Get {
            stream,
            group,
            item,
        } => (get(&mut conn, &stream, &group, &item).await?, None),
        Op::Delete {
            stream,
            group,
            item,
        } => {
            let old = hash_delete(&mut conn, &hash(&stream, &group), &item)
                .await
                .map_err(|e| failed("STREAM_DELETE_ERROR", "delete", e))?;
            delete_done(stream, group, item, old)
        }
        Op::List { stream, group } => (Some(list(&mut conn, &stream, &group).await?), None),
        Op::ListGroups { stream } => {
            let prefix = format!("stream:{stream}:");
            let mut groups: Vec<String> = scan(&mut conn, &format!("{prefix}*"))
                .await?
                .into_iter()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
                .collect();
            groups.sort();
            (Some(json!(groups)), None)
        }
        Op::ListAll => {
            let mut all: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for key in scan(&mut conn, "stream:*").await? {
                let Some((stream, group)) =
                    key.strip_prefix("stream:").and_then(|k| k.rsplit_once(':'))
                else {
                    continue;
                };
                all.entry(stream.to_string())
                    .or_default()
                    .push(group.to_string());
            }
            let mut all: Vec<(String, Vec<String>)> = all.into_iter().collect();
            for (_, groups) in &mut all {
                groups.sort();
            }
            list_all_done(all)
        }
        Op::Update {
            stream,
            group,
            item,
            ops,
        } => update(&mut conn, stream, group, item, &ops).await?,
        Op::Send(change) => (None, Some(change)),
    };
    if let Some(change) = &done.1 {
        publish(&mut conn, change).await;
    }
    Ok(done)
}

async fn update(
    conn: &mut ConnectionManager,
    stream: String,
    group: String,
    item: String,
    ops: &[crate::update_ops::UpdateOp],
) -> Result<Done, ErrorBody> {
    let updated = hash_update(
        conn,
        &hash(&stream, &group),
        &item,
        |e| failed("STREAM_UPDATE_ERROR", "update", e),
        |old| Ok(update_apply(&stream, &group, &item, old, ops)),
    )
    .await?;
    updated.ok_or_else(|| {
        ErrorBody::new(
            "STREAM_UPDATE_ERROR",
            format!("Failed to update value: {stream}/{group}/{item} kept changing under {CAS_ATTEMPTS} attempts"),
        )
    })
}

async fn publish(conn: &mut ConnectionManager, change: &Change) {
    let event = json!({"stream": change.stream, "group": change.group, "id": change.id, "event": change.event});
    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(EVENTS)
        .arg(event.to_string())
        .query_async(conn)
        .await;
    if let Err(e) = sent {
        log::warn!(
            "iii-stream: a change of {}/{} was made but its event could not be published: {e}",
            change.stream,
            change.group
        );
    }
}

/// A change some engine published.
pub fn change_of(event: &Value) -> Option<Change> {
    Some(Change {
        stream: event["stream"].as_str()?.to_string(),
        group: event["group"].as_str()?.to_string(),
        id: event["id"].as_str().map(str::to_string),
        event: event.get("event")?.clone(),
    })
}
