//! The `stream::*` functions over an in-memory store: shapes, errors, update ops.
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
