//! The `stream::*` functions (`PROTOCOL.md` §6.1) over a [`Store`]: input parsing, the exact
//! upstream result shapes and error codes, and the change each write produces. Pure and
//! synchronous; the stream actor calls [`call`] and fans the returned [`Change`] out.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::kv::store::{Store, StoreError};
use crate::modules::bad_input;
use crate::protocol::ErrorBody;
use crate::update_ops as ops;

/// Longest stream, group or item name accepted.
pub const MAX_NAME_BYTES: usize = 4096;

/// The functions this module serves, with their descriptions.
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("stream::set", "Store an item: {stream_name, group_id, item_id, data} -> {old_value, new_value}"),
    ("stream::get", "Read an item: {stream_name, group_id, item_id} -> value (no result when missing)"),
    ("stream::delete", "Delete an item: {stream_name, group_id, item_id} -> {old_value}"),
    ("stream::list", "A group's values in insertion order: {stream_name, group_id} -> [value]"),
    ("stream::list_groups", "A stream's groups: {stream_name} -> [group_id]"),
    ("stream::list_all", "Every stream and its groups: {} -> {stream: [{id, groups}], count}"),
    ("stream::update", "Apply update ops atomically: {stream_name, group_id, item_id, ops} -> {old_value, new_value, errors?}"),
    ("stream::send", "Send a custom event to subscribers: {stream_name, group_id, type, data, id?}"),
];

/// A change to announce to triggers and subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub stream: String,
    pub group: String,
    /// Item id (`None` for a `stream::send` without one).
    pub id: Option<String>,
    /// `{"type":"create"|"update"|"delete","data":…}` or `{"type":"event","event":{…}}`.
    pub event: Value,
}

impl Change {
    /// The `stream` trigger payload (§5.3), camelCase as upstream.
    pub fn payload(&self, timestamp_ms: u64) -> Value {
        json!({"type": "stream", "timestamp": timestamp_ms, "streamName": self.stream,
               "groupId": self.group, "id": self.id, "event": self.event})
    }
}

type Outcome = Result<Option<Value>, ErrorBody>;

#[derive(Deserialize)]
struct ItemInput {
    stream_name: String,
    group_id: String,
    item_id: String,
}

#[derive(Deserialize)]
struct SetInput {
    stream_name: String,
    group_id: String,
    item_id: String,
    data: Value,
}

#[derive(Deserialize)]
struct GroupInput {
    stream_name: String,
    group_id: String,
}

#[derive(Deserialize)]
struct StreamInput {
    stream_name: String,
}

#[derive(Deserialize)]
struct UpdateInput {
    stream_name: String,
    group_id: String,
    item_id: String,
    ops: Value,
}

#[derive(Deserialize)]
struct SendInput {
    stream_name: String,
    group_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(function_id: &str, data: Value) -> Result<T, ErrorBody> {
    serde_json::from_value(data).map_err(|e| bad_input(function_id, e))
}

fn check_names(function_id: &str, names: &[(&str, &str)]) -> Result<(), ErrorBody> {
    for (key, value) in names {
        if value.len() > MAX_NAME_BYTES {
            return Err(bad_input(
                function_id,
                format!("`{key}` is longer than {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

fn store_error(code: &str, prefix: &str, e: StoreError) -> ErrorBody {
    ErrorBody::new(code, format!("{prefix}{e}"))
}

/// A checked `stream::*` call, ready to run on the store or on Redis.
pub enum Op {
    Set {
        stream: String,
        group: String,
        item: String,
        data: Value,
    },
    Get {
        stream: String,
        group: String,
        item: String,
    },
    Delete {
        stream: String,
        group: String,
        item: String,
    },
    Update {
        stream: String,
        group: String,
        item: String,
        ops: Vec<ops::UpdateOp>,
    },
    List {
        stream: String,
        group: String,
    },
    ListGroups {
        stream: String,
    },
    ListAll,
    /// `stream::send`: nothing stored, only the change to announce.
    Send(Change),
}

/// A call's result and the change to announce.
pub type Done = (Option<Value>, Option<Change>);

/// Parses and checks a call's input.
pub fn plan(f: &str, data: Value) -> Result<Op, ErrorBody> {
    let item_names = |f: &str, s: &str, g: &str, i: &str| {
        check_names(f, &[("stream_name", s), ("group_id", g), ("item_id", i)])
    };
    Ok(match f {
        "stream::set" => {
            let i: SetInput = parse(f, data)?;
            item_names(f, &i.stream_name, &i.group_id, &i.item_id)?;
            Op::Set {
                stream: i.stream_name,
                group: i.group_id,
                item: i.item_id,
                data: i.data,
            }
        }
        "stream::get" => {
            let i: ItemInput = parse(f, data)?;
            Op::Get {
                stream: i.stream_name,
                group: i.group_id,
                item: i.item_id,
            }
        }
        "stream::delete" => {
            let i: ItemInput = parse(f, data)?;
            Op::Delete {
                stream: i.stream_name,
                group: i.group_id,
                item: i.item_id,
            }
        }
        "stream::list" => {
            let i: GroupInput = parse(f, data)?;
            Op::List {
                stream: i.stream_name,
                group: i.group_id,
            }
        }
        "stream::list_groups" => {
            let i: StreamInput = parse(f, data)?;
            Op::ListGroups {
                stream: i.stream_name,
            }
        }
        "stream::list_all" => Op::ListAll,
        "stream::update" => {
            let i: UpdateInput = parse(f, data)?;
            item_names(f, &i.stream_name, &i.group_id, &i.item_id)?;
            let ops = ops::parse_ops(&i.ops).map_err(|e| bad_input(f, e))?;
            Op::Update {
                stream: i.stream_name,
                group: i.group_id,
                item: i.item_id,
                ops,
            }
        }
        "stream::send" => {
            let i: SendInput = parse(f, data)?;
            Op::Send(Change {
                stream: i.stream_name,
                group: i.group_id,
                id: i.id,
                event: json!({"type": "event", "event": {"type": i.kind, "data": i.data}}),
            })
        }
        other => {
            return Err(ErrorBody::new(
                "function_not_found",
                format!("Function {other} not found"),
            ))
        }
    })
}

/// What a set that replaced `old` answers.
pub fn set_done(
    stream: String,
    group: String,
    item: String,
    old: Option<Value>,
    data: Value,
) -> Done {
    let change = write_change(&stream, &group, &item, old.is_some(), data.clone());
    (
        Some(json!({"old_value": old, "new_value": data})),
        Some(change),
    )
}

/// What a delete that removed `old` (if anything) answers.
pub fn delete_done(stream: String, group: String, item: String, old: Option<Value>) -> Done {
    let change = old.clone().map(|v| Change {
        stream,
        group,
        id: Some(item),
        event: json!({"type": "delete", "data": v}),
    });
    (Some(json!({ "old_value": old })), change)
}

/// Applies update ops to `old`: the new value and the result to answer once it is written.
pub fn update_apply(
    stream: &str,
    group: &str,
    item: &str,
    old: Option<Value>,
    update: &[ops::UpdateOp],
) -> (Value, Done) {
    let (new, errors) = ops::apply_ops(old.as_ref(), update);
    let mut out = Map::new();
    out.insert("old_value".into(), old.clone().unwrap_or(Value::Null));
    out.insert("new_value".into(), new.clone());
    if !errors.is_empty() {
        out.insert("errors".into(), json!(errors));
    }
    let change = write_change(stream, group, item, old.is_some(), new.clone());
    (new, (Some(Value::Object(out)), Some(change)))
}

/// `stream::list_all`'s shape.
pub fn list_all_done(all: Vec<(String, Vec<String>)>) -> Done {
    let streams: Vec<Value> = all
        .iter()
        .map(|(id, groups)| json!({"id": id, "groups": groups}))
        .collect();
    (Some(json!({"stream": streams, "count": all.len()})), None)
}

/// Runs one `stream::*` function on the store. A successful write also returns the change it
/// made.
pub fn call(backend: &mut Store, function_id: &str, data: Value) -> (Outcome, Option<Change>) {
    match plan(function_id, data).and_then(|op| exec(backend, op)) {
        Ok((value, change)) => (Ok(value), change),
        Err(e) => (Err(e), None),
    }
}

fn exec(backend: &mut Store, op: Op) -> Result<Done, ErrorBody> {
    Ok(match op {
        Op::Set {
            stream,
            group,
            item,
            data,
        } => {
            let old = backend
                .set(&stream, &group, &item, data.clone())
                .map_err(|e| store_error("STREAM_SET_ERROR", "Failed to set value: ", e))?;
            set_done(stream, group, item, old, data)
        }
        Op::Get {
            stream,
            group,
            item,
        } => (backend.get(&stream, &group, &item).cloned(), None),
        Op::Delete {
            stream,
            group,
            item,
        } => {
            let old = backend
                .delete(&stream, &group, &item)
                .map_err(|e| store_error("STREAM_DELETE_ERROR", "Failed to delete value: ", e))?;
            delete_done(stream, group, item, old)
        }
        Op::List { stream, group } => (Some(Value::Array(backend.list(&stream, &group))), None),
        Op::ListGroups { stream } => (Some(json!(backend.list_groups(&stream))), None),
        Op::ListAll => list_all_done(backend.list_all()),
        Op::Update {
            stream,
            group,
            item,
            ops,
        } => {
            let old = backend.get(&stream, &group, &item).cloned();
            let (new, done) = update_apply(&stream, &group, &item, old, &ops);
            backend
                .set(&stream, &group, &item, new)
                .map_err(|e| store_error("STREAM_UPDATE_ERROR", "Failed to update value: ", e))?;
            done
        }
        Op::Send(change) => (None, Some(change)),
    })
}

fn write_change(stream: &str, group: &str, item: &str, existed: bool, data: Value) -> Change {
    let kind = if existed { "update" } else { "create" };
    Change {
        stream: stream.to_string(),
        group: group.to_string(),
        id: Some(item.to_string()),
        event: json!({"type": kind, "data": data}),
    }
}

#[cfg(test)]
mod tests;
