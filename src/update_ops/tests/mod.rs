//! Unit tests of the update-op engine: parsing, the todo app's transcript, ordering and error
//! reporting (each op in `ops.rs`).

use super::apply::deeper_than;
use super::*;
use serde_json::{json, Map};

fn ops(raw: Value) -> Vec<UpdateOp> {
    parse_ops(&raw).expect("ops parse")
}

/// Applies `raw` ops to `current` and returns the new value and the error codes with indexes.
fn run(current: Option<Value>, raw: Value) -> (Value, Vec<(usize, String)>) {
    let (value, errors) = apply_ops(current.as_ref(), &ops(raw));
    let codes = errors.into_iter().map(|e| (e.op_index, e.code)).collect();
    (value, codes)
}

fn run_ok(current: Option<Value>, raw: Value) -> Value {
    let (value, codes) = run(current, raw);
    assert!(codes.is_empty(), "unexpected errors: {codes:?}");
    value
}

fn codes(current: Option<Value>, raw: Value) -> Vec<String> {
    run(current, raw).1.into_iter().map(|(_, c)| c).collect()
}

fn parse_err(raw: Value) -> String {
    parse_ops(&raw).expect_err("must fail")
}

// --- parsing -------------------------------------------------------------------------------

#[test]
fn parses_every_op() {
    let parsed = ops(json!([
        {"type": "set", "path": "a", "value": 1},
        {"type": "set", "path": "b"},
        {"type": "merge", "value": {}},
        {"type": "merge", "path": "m", "value": {}},
        {"type": "merge", "path": ["x", "y"], "value": {}},
        {"type": "increment", "path": "n", "by": 2},
        {"type": "decrement", "path": "n", "by": -3},
        {"type": "append", "path": null, "value": "s"},
        {"type": "append", "path": "", "value": "s"},
        {"type": "remove", "path": "a", "ignored": true},
    ]));
    let root: Vec<String> = Vec::new();
    assert_eq!(
        parsed,
        vec![
            UpdateOp::Set {
                path: "a".into(),
                value: json!(1)
            },
            UpdateOp::Set {
                path: "b".into(),
                value: Value::Null
            },
            UpdateOp::Merge {
                path: root.clone(),
                value: json!({})
            },
            UpdateOp::Merge {
                path: vec!["m".into()],
                value: json!({})
            },
            UpdateOp::Merge {
                path: vec!["x".into(), "y".into()],
                value: json!({})
            },
            UpdateOp::Increment {
                path: "n".into(),
                by: 2
            },
            UpdateOp::Decrement {
                path: "n".into(),
                by: -3
            },
            UpdateOp::Append {
                path: root.clone(),
                value: json!("s")
            },
            UpdateOp::Append {
                path: root,
                value: json!("s")
            },
            UpdateOp::Remove { path: "a".into() },
        ]
    );
    assert_eq!(parsed[5].name(), "increment");
}

#[test]
fn wrongly_typed_ops_fail_the_whole_call() {
    assert_eq!(
        parse_err(
            json!([{"type": "set", "path": "a"}, {"type": "increment", "path": "n", "by": 1.5}])
        ),
        "ops[1].by: invalid type: floating point `1.5`, expected i64"
    );
    assert_eq!(
        parse_err(json!([{"type": "set", "value": 1}])),
        "ops[0]: missing field `path`"
    );
    assert_eq!(
        parse_err(json!([{"type": "frob"}])),
        format!("ops[0].type: unknown variant `frob`, expected one of {OP_NAMES}")
    );
    assert_eq!(
        parse_err(json!([{"path": "a"}])),
        "ops[0]: missing field `type`"
    );
    assert_eq!(
        parse_err(json!([{"type": 7}])),
        "ops[0].type: invalid type: integer `7`, expected a string"
    );
    assert_eq!(
        parse_err(json!({"type": "set"})),
        "ops: invalid type: map, expected a sequence"
    );
    assert_eq!(
        parse_err(json!(["set"])),
        "ops[0]: invalid type: string \"set\", expected an update op object"
    );
    assert_eq!(
        parse_err(json!([{"type": "remove", "path": 3}])),
        "ops[0].path: invalid type: integer `3`, expected a string"
    );
    assert_eq!(
        parse_err(json!([{"type": "merge", "path": true, "value": {}}])),
        "ops[0].path: invalid type: boolean `true`, expected a string or an array of strings"
    );
    assert!(
        parse_err(json!([{"type": "append", "path": ["a", 1], "value": 1}]))
            .starts_with("ops[0].path: invalid type: integer `1`")
    );
    assert_eq!(
        parse_err(json!([{"type": "merge", "path": "m"}])),
        "ops[0]: missing field `value`"
    );
    assert_eq!(
        parse_err(json!([{"type": "append", "path": "m"}])),
        "ops[0]: missing field `value`"
    );
    assert_eq!(
        parse_err(json!([{"type": "decrement", "path": "n"}])),
        "ops[0]: missing field `by`"
    );
    assert!(
        parse_err(json!([{"type": "increment", "path": "n", "by": u64::MAX}]))
            .starts_with("ops[0].by: invalid value: integer `18446744073709551615`")
    );
    assert!(
        parse_err(json!([{"type": "increment", "path": "n", "by": "2"}]))
            .starts_with("ops[0].by: invalid type: string")
    );
}

#[test]
fn empty_ops_change_nothing() {
    assert_eq!(ops(json!([])), vec![]);
    assert_eq!(run_ok(Some(json!({"a": 1})), json!([])), json!({"a": 1}));
    assert_eq!(run_ok(None, json!([])), json!({}));
}

// --- transcript and todo app ---------------------------------------------------------------

#[test]
fn todo_toggle_sets_completed() {
    let old = json!({"id": "todo-2b5beb", "title": "from rbac", "completed": false});
    let new = run_ok(
        Some(old),
        json!([{"type": "set", "path": "completed", "value": true}]),
    );
    assert_eq!(
        new,
        json!({"id": "todo-2b5beb", "title": "from rbac", "completed": true})
    );
}

#[test]
fn transcript_example() {
    let old = json!({"completed": false, "id": "t1", "title": "first!"});
    let new = run_ok(
        Some(old),
        json!([
            {"type": "set", "path": "completed", "value": true},
            {"type": "increment", "path": "n", "by": 2},
            {"type": "append", "path": "tags", "value": "x"},
            {"type": "merge", "path": "meta", "value": {"a": 1}},
        ]),
    );
    assert_eq!(
        new,
        json!({"completed": true, "id": "t1", "meta": {"a": 1}, "n": 2, "tags": "x", "title": "first!"})
    );
}

#[test]
fn missing_item_starts_from_empty_object() {
    let new = run_ok(None, json!([{"type": "set", "path": "x", "value": 1}]));
    assert_eq!(new, json!({"x": 1}));
}

mod ops;

// --- ordering and error reporting ----------------------------------------------------------

#[test]
fn ops_apply_in_order() {
    let new = run_ok(
        Some(json!({"n": 10})),
        json!([
            {"type": "increment", "path": "n", "by": 5},
            {"type": "decrement", "path": "n", "by": 3},
            {"type": "set", "path": "s", "value": "a"},
            {"type": "append", "path": "s", "value": "b"},
            {"type": "remove", "path": "s"},
            {"type": "append", "path": "s", "value": "c"},
        ]),
    );
    assert_eq!(new, json!({"n": 12, "s": "c"}));
    let replaced = run_ok(
        Some(json!({"a": 1})),
        json!([
            {"type": "set", "path": "", "value": {"b": 1}},
            {"type": "set", "path": "c", "value": 2},
        ]),
    );
    assert_eq!(replaced, json!({"b": 1, "c": 2}));
}

#[test]
fn ops_after_a_failed_one_still_run() {
    let (value, errs) = run(
        Some(json!({"n": "x", "l": 1})),
        json!([
            {"type": "increment", "path": "n", "by": 1},
            {"type": "set", "path": "a", "value": 1},
            {"type": "append", "path": "l", "value": 2},
            {"type": "merge", "value": 5},
            {"type": "increment", "path": "m", "by": 1},
        ]),
    );
    assert_eq!(value, json!({"n": "x", "l": 1, "a": 1, "m": 1}));
    assert_eq!(
        errs,
        vec![
            (0, "increment.not_number".to_string()),
            (2, "append.type_mismatch".to_string()),
            (3, "merge.value.not_an_object".to_string()),
        ]
    );
}

#[test]
fn every_op_failing_on_a_missing_item_leaves_empty_object() {
    let (value, errs) = run(None, json!([{"type": "merge", "value": []}]));
    assert_eq!(value, json!({}));
    assert_eq!(errs.len(), 1);
}

#[test]
fn error_element_shape() {
    let (_, errors) = apply_ops(
        Some(&json!({"n": "x"})),
        &ops(json!([{"type": "increment", "path": "n", "by": 1}])),
    );
    let wire = serde_json::to_value(&errors).expect("serialize");
    assert_eq!(wire[0]["op_index"], json!(0));
    assert_eq!(wire[0]["code"], json!("increment.not_number"));
    assert_eq!(wire[0]["doc_url"], json!(DOC_URL));
    assert_eq!(
        wire[0]["doc_url"],
        json!("https://iii.dev/docs/workers/iii-state#error-codes")
    );
    let message = wire[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"n\"") && message.contains("a string"),
        "{message}"
    );
    assert_eq!(wire[0].as_object().map(|o| o.len()), Some(4));
}

#[test]
fn input_value_is_not_modified() {
    let old = json!({"a": 1});
    let (new, _) = apply_ops(Some(&old), &ops(json!([{"type": "remove", "path": "a"}])));
    assert_eq!(old, json!({"a": 1}));
    assert_eq!(new, json!({}));
}
