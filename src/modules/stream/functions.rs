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

/// Runs one `stream::*` function. A successful write also returns the change it made.
pub fn call(backend: &mut Store, function_id: &str, data: Value) -> (Outcome, Option<Change>) {
    match run(backend, function_id, data) {
        Ok((value, change)) => (Ok(value), change),
        Err(e) => (Err(e), None),
    }
}

fn run(
    backend: &mut Store,
    f: &str,
    data: Value,
) -> Result<(Option<Value>, Option<Change>), ErrorBody> {
    match f {
        "stream::set" => {
            let i: SetInput = parse(f, data)?;
            check_names(
                f,
                &[
                    ("stream_name", &i.stream_name),
                    ("group_id", &i.group_id),
                    ("item_id", &i.item_id),
                ],
            )?;
            let old = backend
                .set(&i.stream_name, &i.group_id, &i.item_id, i.data.clone())
                .map_err(|e| store_error("STREAM_SET_ERROR", "Failed to set value: ", e))?;
            let change = write_change(
                &i.stream_name,
                &i.group_id,
                &i.item_id,
                old.is_some(),
                i.data.clone(),
            );
            Ok((
                Some(json!({"old_value": old, "new_value": i.data})),
                Some(change),
            ))
        }
        "stream::get" => {
            let i: ItemInput = parse(f, data)?;
            Ok((
                backend
                    .get(&i.stream_name, &i.group_id, &i.item_id)
                    .cloned(),
                None,
            ))
        }
        "stream::delete" => {
            let i: ItemInput = parse(f, data)?;
            let old = backend
                .delete(&i.stream_name, &i.group_id, &i.item_id)
                .map_err(|e| store_error("STREAM_DELETE_ERROR", "Failed to delete value: ", e))?;
            let change = old.clone().map(|v| Change {
                stream: i.stream_name,
                group: i.group_id,
                id: Some(i.item_id),
                event: json!({"type": "delete", "data": v}),
            });
            Ok((Some(json!({ "old_value": old })), change))
        }
        "stream::list" => {
            let i: GroupInput = parse(f, data)?;
            Ok((
                Some(Value::Array(backend.list(&i.stream_name, &i.group_id))),
                None,
            ))
        }
        "stream::list_groups" => {
            let i: StreamInput = parse(f, data)?;
            Ok((Some(json!(backend.list_groups(&i.stream_name))), None))
        }
        "stream::list_all" => {
            let all = backend.list_all();
            let streams: Vec<Value> = all
                .iter()
                .map(|(id, groups)| json!({"id": id, "groups": groups}))
                .collect();
            Ok((Some(json!({"stream": streams, "count": all.len()})), None))
        }
        "stream::update" => update(backend, f, data),
        "stream::send" => {
            let i: SendInput = parse(f, data)?;
            let change = Change {
                stream: i.stream_name,
                group: i.group_id,
                id: i.id,
                event: json!({"type": "event", "event": {"type": i.kind, "data": i.data}}),
            };
            Ok((None, Some(change)))
        }
        other => Err(ErrorBody::new(
            "function_not_found",
            format!("Function {other} not found"),
        )),
    }
}

fn update(
    backend: &mut Store,
    f: &str,
    data: Value,
) -> Result<(Option<Value>, Option<Change>), ErrorBody> {
    let i: UpdateInput = parse(f, data)?;
    check_names(
        f,
        &[
            ("stream_name", &i.stream_name),
            ("group_id", &i.group_id),
            ("item_id", &i.item_id),
        ],
    )?;
    let parsed = ops::parse_ops(&i.ops).map_err(|e| bad_input(f, e))?;
    let old = backend
        .get(&i.stream_name, &i.group_id, &i.item_id)
        .cloned();
    let (new, errors) = ops::apply_ops(old.as_ref(), &parsed);
    backend
        .set(&i.stream_name, &i.group_id, &i.item_id, new.clone())
        .map_err(|e| store_error("STREAM_UPDATE_ERROR", "Failed to update value: ", e))?;
    let mut out = Map::new();
    out.insert("old_value".into(), old.clone().unwrap_or(Value::Null));
    out.insert("new_value".into(), new.clone());
    if !errors.is_empty() {
        out.insert("errors".into(), json!(errors));
    }
    let change = write_change(&i.stream_name, &i.group_id, &i.item_id, old.is_some(), new);
    Ok((Some(Value::Object(out)), Some(change)))
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
mod tests {
    use super::*;

    fn mem() -> Store {
        Store::in_memory()
    }

    fn ok(b: &mut Store, f: &str, data: Value) -> (Option<Value>, Option<Change>) {
        let (out, change) = call(b, f, data);
        (out.unwrap_or_else(|e| panic!("{f}: {e:?}")), change)
    }

    #[test]
    fn shapes_match_upstream() {
        let b = &mut mem();
        let key = json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1"});
        let (out, change) = ok(
            b,
            "stream::set",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1", "data": {"id": "t1", "title": "first"}}),
        );
        assert_eq!(
            out,
            Some(json!({"old_value": null, "new_value": {"id": "t1", "title": "first"}}))
        );
        let change = change.unwrap();
        assert_eq!(
            change.event,
            json!({"type": "create", "data": {"id": "t1", "title": "first"}})
        );
        assert_eq!(
            change.payload(5),
            json!({"type": "stream", "timestamp": 5, "streamName": "todo", "groupId": "todos", "id": "t1",
                   "event": {"type": "create", "data": {"id": "t1", "title": "first"}}})
        );
        let (out, change) = ok(
            b,
            "stream::set",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1", "data": {"v": 2}}),
        );
        assert_eq!(
            out.unwrap()["old_value"],
            json!({"id": "t1", "title": "first"})
        );
        assert_eq!(change.unwrap().event["type"], "update");
        assert_eq!(ok(b, "stream::get", key.clone()).0, Some(json!({"v": 2})));
        assert_eq!(
            ok(
                b,
                "stream::get",
                json!({"stream_name": "todo", "group_id": "todos", "item_id": "nope"})
            )
            .0,
            None
        );
        assert_eq!(
            ok(
                b,
                "stream::list",
                json!({"stream_name": "todo", "group_id": "todos"})
            )
            .0,
            Some(json!([{"v": 2}]))
        );
        assert_eq!(
            ok(
                b,
                "stream::list",
                json!({"stream_name": "todo", "group_id": "none"})
            )
            .0,
            Some(json!([]))
        );
        assert_eq!(
            ok(b, "stream::list_groups", json!({"stream_name": "todo"})).0,
            Some(json!(["todos"]))
        );
        assert_eq!(
            ok(b, "stream::list_all", json!({})).0,
            Some(json!({"stream": [{"id": "todo", "groups": ["todos"]}], "count": 1}))
        );
        let (out, change) = ok(b, "stream::delete", key.clone());
        assert_eq!(out, Some(json!({"old_value": {"v": 2}})));
        assert_eq!(
            change.unwrap().event,
            json!({"type": "delete", "data": {"v": 2}})
        );
        let (out, change) = ok(b, "stream::delete", key);
        assert_eq!(out, Some(json!({"old_value": null})));
        assert!(change.is_none(), "nothing deleted, nothing announced");
    }

    #[test]
    fn update_creates_and_reports_op_errors() {
        let b = &mut mem();
        let (out, change) = ok(
            b,
            "stream::update",
            json!({"stream_name": "s", "group_id": "g", "item_id": "i",
            "ops": [{"type": "set", "path": "completed", "value": true}, {"type": "increment", "path": "completed", "by": 1}]}),
        );
        let out = out.unwrap();
        assert_eq!(out["old_value"], Value::Null);
        assert_eq!(out["new_value"], json!({"completed": true}));
        assert_eq!(out["errors"][0]["code"], "increment.not_number");
        assert_eq!(out["errors"][0]["op_index"], 1);
        assert_eq!(change.unwrap().event["type"], "create");
        let (out, change) = ok(
            b,
            "stream::update",
            json!({"stream_name": "s", "group_id": "g", "item_id": "i",
            "ops": [{"type": "set", "path": "completed", "value": false}]}),
        );
        let out = out.unwrap();
        assert!(out.get("errors").is_none(), "errors omitted when empty");
        assert_eq!(out["old_value"], json!({"completed": true}));
        assert_eq!(
            change.unwrap().event,
            json!({"type": "update", "data": {"completed": false}})
        );
        let (err, _) = call(
            b,
            "stream::update",
            json!({"stream_name": "s", "group_id": "g", "item_id": "i",
            "ops": [{"type": "increment", "path": "n", "by": 1.5}]}),
        );
        let err = err.unwrap_err();
        assert_eq!(err.code, "deserialization_error");
        assert!(
            err.message
                .starts_with("Failed to deserialize input for stream::update: ops[0].by"),
            "{}",
            err.message
        );
    }

    #[test]
    fn send_announces_without_storing() {
        let b = &mut mem();
        let (out, change) = ok(
            b,
            "stream::send",
            json!({"stream_name": "chat", "group_id": "room", "type": "typing", "data": {"who": "a"}}),
        );
        assert_eq!(out, None);
        let change = change.unwrap();
        assert_eq!(change.id, None);
        assert_eq!(
            change.event,
            json!({"type": "event", "event": {"type": "typing", "data": {"who": "a"}}})
        );
        assert_eq!(ok(b, "stream::list_all", json!({})).0.unwrap()["count"], 0);
    }

    #[test]
    fn bad_input_is_named() {
        let b = &mut mem();
        let (err, _) = call(b, "stream::set", json!({"stream_name": "todo"}));
        let err = err.unwrap_err();
        assert_eq!(err.code, "deserialization_error");
        assert_eq!(
            err.message,
            "Failed to deserialize input for stream::set: missing field `group_id`"
        );
        let (err, _) = call(
            b,
            "stream::get",
            json!({"stream_name": 1, "group_id": "g", "item_id": "i"}),
        );
        assert!(err
            .unwrap_err()
            .message
            .contains("invalid type: integer `1`, expected a string"));
        let (err, _) = call(b, "stream::list", json!(null));
        assert_eq!(err.unwrap_err().code, "deserialization_error");
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let (err, _) = call(
            b,
            "stream::set",
            json!({"stream_name": long, "group_id": "g", "item_id": "i", "data": 1}),
        );
        assert!(err
            .unwrap_err()
            .message
            .contains("`stream_name` is longer than 4096 bytes"));
    }

    #[test]
    fn names_never_collide() {
        let b = &mut mem();
        ok(
            b,
            "stream::set",
            json!({"stream_name": "a:b", "group_id": "c", "item_id": "i", "data": 1}),
        );
        ok(
            b,
            "stream::set",
            json!({"stream_name": "a", "group_id": "b:c", "item_id": "i", "data": 2}),
        );
        assert_eq!(
            ok(
                b,
                "stream::get",
                json!({"stream_name": "a:b", "group_id": "c", "item_id": "i"})
            )
            .0,
            Some(json!(1))
        );
        assert_eq!(
            ok(
                b,
                "stream::get",
                json!({"stream_name": "a", "group_id": "b:c", "item_id": "i"})
            )
            .0,
            Some(json!(2))
        );
        assert_eq!(
            ok(b, "stream::list_groups", json!({"stream_name": "a"})).0,
            Some(json!(["b:c"]))
        );
    }
}
