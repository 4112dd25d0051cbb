//! Unit tests of each update op: set, merge, increment/decrement, append, remove, and the
//! path checks they share.

use super::*;

// --- set -----------------------------------------------------------------------------------

#[test]
fn set_key_root_and_literal_dots() {
    let set = |path: &str, value: Value| json!([{"type": "set", "path": path, "value": value}]);
    assert_eq!(
        run_ok(Some(json!({"a": 1})), set("a", json!(2))),
        json!({"a": 2})
    );
    assert_eq!(
        run_ok(Some(json!({"a": 1})), set("", json!([1]))),
        json!([1])
    );
    assert_eq!(
        run_ok(Some(json!({})), set("a.b", json!(1))),
        json!({"a.b": 1})
    );
    assert_eq!(
        run_ok(Some(json!({"a": 1})), json!([{"type": "set", "path": "a"}])),
        json!({"a": null})
    );
    assert_eq!(
        run_ok(
            Some(json!({"a": 1})),
            json!([{"type": "set", "path": "", "value": null}])
        ),
        Value::Null
    );
}

#[test]
fn set_on_non_object_is_target_not_object() {
    let (value, errs) = run(
        Some(json!(5)),
        json!([{"type": "set", "path": "a", "value": 1}]),
    );
    assert_eq!(value, json!(5));
    assert_eq!(errs, vec![(0, "set.target_not_object".to_string())]);
}

// --- merge ---------------------------------------------------------------------------------

#[test]
fn merge_at_root_is_shallow() {
    let new = run_ok(
        Some(json!({"a": {"x": 1}, "b": 1})),
        json!([{"type": "merge", "value": {"a": {"y": 2}, "c": 3}}]),
    );
    assert_eq!(new, json!({"a": {"y": 2}, "b": 1, "c": 3}));
    for path in [json!(""), json!([]), Value::Null] {
        let new = run_ok(
            Some(json!({"b": 1})),
            json!([{"type": "merge", "path": path, "value": {"c": 3}}]),
        );
        assert_eq!(new, json!({"b": 1, "c": 3}));
    }
}

#[test]
fn merge_at_root_of_non_object_is_skipped_silently() {
    let (value, errs) = run(
        Some(json!([1])),
        json!([{"type": "merge", "value": {"a": 1}}]),
    );
    assert_eq!(value, json!([1]));
    assert!(errs.is_empty());
}

#[test]
fn merge_at_path_creates_and_replaces_intermediates() {
    let merge = |path: Value| json!([{"type": "merge", "path": path, "value": {"k": 1}}]);
    assert_eq!(
        run_ok(Some(json!({"meta": {"a": 1}})), merge(json!("meta"))),
        json!({"meta": {"a": 1, "k": 1}})
    );
    assert_eq!(
        run_ok(Some(json!({"a": 5})), merge(json!(["a", "b", "c"]))),
        json!({"a": {"b": {"c": {"k": 1}}}})
    );
    assert_eq!(
        run_ok(Some(json!("text")), merge(json!(["a"]))),
        json!({"a": {"k": 1}})
    );
    assert_eq!(
        run_ok(Some(json!({})), merge(json!("a.b"))),
        json!({"a.b": {"k": 1}})
    );
}

#[test]
fn merge_value_errors() {
    let merge = |value: Value| json!([{"type": "merge", "value": value}]);
    assert_eq!(
        codes(None, merge(json!([1]))),
        ["merge.value.not_an_object"]
    );
    assert_eq!(
        codes(None, merge(json!(null))),
        ["merge.value.not_an_object"]
    );
    let keys = |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect());
    assert!(codes(None, merge(keys(MAX_VALUE_KEYS))).is_empty());
    assert_eq!(
        codes(None, merge(keys(MAX_VALUE_KEYS + 1))),
        ["merge.value.too_many_keys"]
    );
    for key in FORBIDDEN_KEYS {
        let mut value = Map::new();
        value.insert(key.to_string(), json!({}));
        assert_eq!(
            codes(None, merge(Value::Object(value))),
            ["merge.value.proto_polluted"]
        );
    }
    // Forbidden names are only checked at the top level.
    assert!(codes(None, merge(json!({"a": {"__proto__": 1}}))).is_empty());
}

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for i in 0..depth {
        value = if i % 2 == 0 {
            json!({"d": value})
        } else {
            json!([value])
        };
    }
    value
}

#[test]
fn merge_value_depth_limit() {
    let merge = |value: Value| json!([{"type": "merge", "value": {"x": value}}]);
    assert!(codes(None, merge(nested(MAX_VALUE_DEPTH - 1))).is_empty());
    assert_eq!(
        codes(None, merge(nested(MAX_VALUE_DEPTH))),
        ["merge.value.too_deep"]
    );
    assert_eq!(
        codes(None, merge(json!({"a": {"b": {}}}))),
        Vec::<String>::new()
    );
    assert!(deeper_than(&json!([[]]), 1));
    assert!(!deeper_than(&json!([[1]]), 2));
    assert!(!deeper_than(&json!(7), 0));
}

#[test]
fn merge_path_errors() {
    let merge = |path: Value| json!([{"type": "merge", "path": path, "value": {"a": 1}}]);
    let deep: Vec<String> = (0..=MAX_PATH_DEPTH).map(|i| format!("s{i}")).collect();
    assert_eq!(codes(None, merge(json!(deep))), ["merge.path.too_deep"]);
    assert!(codes(None, merge(json!(deep[..MAX_PATH_DEPTH]))).is_empty());
    assert_eq!(
        codes(None, merge(json!(["a", ""]))),
        ["merge.path.empty_segment"]
    );
    assert_eq!(
        codes(None, merge(json!([""]))),
        ["merge.path.empty_segment"]
    );
    let long = "x".repeat(MAX_SEGMENT_BYTES + 1);
    assert_eq!(
        codes(None, merge(json!(long))),
        ["merge.path.segment_too_long"]
    );
    assert!(codes(None, merge(json!("x".repeat(MAX_SEGMENT_BYTES)))).is_empty());
    for key in FORBIDDEN_KEYS {
        assert_eq!(
            codes(None, merge(json!(["a", key]))),
            ["merge.path.proto_polluted"]
        );
    }
}

#[test]
fn merge_path_is_checked_before_value() {
    let raw = json!([{"type": "merge", "path": ["__proto__"], "value": 1}]);
    assert_eq!(codes(None, raw), ["merge.path.proto_polluted"]);
}

// --- increment / decrement -----------------------------------------------------------------

#[test]
fn increment_numbers() {
    let inc = |path: &str, by: i64| json!([{"type": "increment", "path": path, "by": by}]);
    assert_eq!(run_ok(Some(json!({"n": 1})), inc("n", 2)), json!({"n": 3}));
    assert_eq!(run_ok(Some(json!({})), inc("n", 5)), json!({"n": 5}));
    assert_eq!(
        run_ok(Some(json!({"n": 1.5})), inc("n", 1)),
        json!({"n": 2.5})
    );
    let float = run_ok(Some(json!({"n": 2.0})), inc("n", 1));
    assert!(float["n"].is_f64(), "float stays float: {float}");
    assert_eq!(
        run_ok(Some(json!({"n": -3})), inc("n", -2)),
        json!({"n": -5})
    );
    assert_eq!(
        run_ok(Some(json!({"n": i64::MAX})), inc("n", 1)),
        json!({"n": i64::MAX as u64 + 1})
    );
    assert_eq!(
        run_ok(Some(json!({"n": u64::MAX})), inc("n", -1)),
        json!({"n": u64::MAX - 1})
    );
}

#[test]
fn increment_root() {
    let inc = json!([{"type": "increment", "path": "", "by": 4}]);
    assert_eq!(run_ok(None, inc.clone()), json!(4));
    assert_eq!(run_ok(Some(json!(1)), inc.clone()), json!(5));
    assert_eq!(
        codes(Some(json!({})), inc.clone()),
        ["increment.not_number"]
    );
    // Only a missing item counts as nothing: after another op the root is `{}`.
    let after_set = json!([
        {"type": "set", "path": "a", "value": 1},
        {"type": "increment", "path": "", "by": 4},
    ]);
    assert_eq!(codes(None, after_set), ["increment.not_number"]);
}

#[test]
fn increment_errors() {
    let inc = |path: &str, by: i64| json!([{"type": "increment", "path": path, "by": by}]);
    assert_eq!(
        codes(Some(json!({"n": "1"})), inc("n", 1)),
        ["increment.not_number"]
    );
    assert_eq!(
        codes(Some(json!({"n": null})), inc("n", 1)),
        ["increment.not_number"]
    );
    assert_eq!(
        codes(Some(json!({"n": u64::MAX})), inc("n", 1)),
        ["increment.not_number"]
    );
    assert_eq!(
        codes(Some(json!({"n": i64::MIN})), inc("n", -1)),
        ["increment.not_number"]
    );
    assert_eq!(
        codes(Some(json!([1])), inc("n", 1)),
        ["increment.target_not_object"]
    );
    let (value, _) = run(Some(json!({"n": "1"})), inc("n", 1));
    assert_eq!(value, json!({"n": "1"}));
}

#[test]
fn decrement_numbers_and_errors() {
    let dec = |path: &str, by: i64| json!([{"type": "decrement", "path": path, "by": by}]);
    assert_eq!(run_ok(Some(json!({"n": 5})), dec("n", 2)), json!({"n": 3}));
    assert_eq!(run_ok(Some(json!({})), dec("n", 2)), json!({"n": -2}));
    assert_eq!(
        run_ok(Some(json!({})), dec("n", i64::MIN)),
        json!({"n": 1u64 << 63})
    );
    assert_eq!(
        run_ok(Some(json!({"n": 0.5})), dec("n", 1)),
        json!({"n": -0.5})
    );
    assert_eq!(run_ok(None, dec("", 3)), json!(-3));
    assert_eq!(run_ok(Some(json!(10)), dec("", 3)), json!(7));
    assert_eq!(
        codes(Some(json!({"n": true})), dec("n", 1)),
        ["decrement.not_number"]
    );
    assert_eq!(
        codes(Some(json!({"n": i64::MIN})), dec("n", 1)),
        ["decrement.not_number"]
    );
    assert_eq!(
        codes(Some(json!("s")), dec("n", 1)),
        ["decrement.target_not_object"]
    );
    assert_eq!(
        codes(Some(json!("s")), dec("", 1)),
        ["decrement.not_number"]
    );
}

// --- append --------------------------------------------------------------------------------

#[test]
fn append_to_existing_targets() {
    let app = |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
    assert_eq!(
        run_ok(Some(json!({"l": [1]})), app(json!("l"), json!({"k": 2}))),
        json!({"l": [1, {"k": 2}]})
    );
    assert_eq!(
        run_ok(Some(json!({"s": "ab"})), app(json!("s"), json!("cd"))),
        json!({"s": "abcd"})
    );
    assert_eq!(
        run_ok(Some(json!({"s": null})), app(json!("s"), json!("x"))),
        json!({"s": "x"})
    );
    assert_eq!(
        run_ok(Some(json!({"s": null})), app(json!("s"), json!(1))),
        json!({"s": [1]})
    );
    assert_eq!(
        run_ok(
            Some(json!({"a": {"l": []}})),
            app(json!(["a", "l"]), json!("x"))
        ),
        json!({"a": {"l": ["x"]}})
    );
}

#[test]
fn append_to_missing_targets() {
    let app = |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
    assert_eq!(
        run_ok(Some(json!({})), app(json!("s"), json!("x"))),
        json!({"s": "x"})
    );
    assert_eq!(
        run_ok(Some(json!({})), app(json!(["s"]), json!(1))),
        json!({"s": [1]})
    );
    // A missing leaf under a nested path always becomes an array.
    assert_eq!(
        run_ok(
            Some(json!({"a": 1})),
            app(json!(["a", "b", "s"]), json!("x"))
        ),
        json!({"a": {"b": {"s": ["x"]}}})
    );
    assert_eq!(
        run_ok(
            Some(json!({"a": {"s": null}})),
            app(json!(["a", "s"]), json!("x"))
        ),
        json!({"a": {"s": "x"}})
    );
}

#[test]
fn append_at_root() {
    let app = |value: Value| json!([{"type": "append", "value": value}]);
    assert_eq!(run_ok(None, app(json!("x"))), json!("x"));
    assert_eq!(run_ok(None, app(json!({"k": 1}))), json!([{"k": 1}]));
    assert_eq!(run_ok(Some(json!([1])), app(json!(2))), json!([1, 2]));
    assert_eq!(run_ok(Some(json!("a")), app(json!("b"))), json!("ab"));
    assert_eq!(run_ok(Some(Value::Null), app(json!(2))), json!([2]));
    assert_eq!(
        codes(Some(json!({})), app(json!(2))),
        ["append.type_mismatch"]
    );
}

#[test]
fn append_errors() {
    let app = |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
    assert_eq!(
        codes(Some(json!({"s": "a"})), app(json!("s"), json!(1))),
        ["append.type_mismatch"]
    );
    assert_eq!(
        codes(Some(json!({"o": {}})), app(json!("o"), json!(1))),
        ["append.type_mismatch"]
    );
    assert_eq!(
        codes(Some(json!({"n": 1})), app(json!("n"), json!(1))),
        ["append.type_mismatch"]
    );
    assert_eq!(
        codes(Some(json!({"b": true})), app(json!("b"), json!(1))),
        ["append.type_mismatch"]
    );
    assert_eq!(
        codes(Some(json!([])), app(json!("l"), json!(1))),
        ["append.target_not_object"]
    );
    assert_eq!(
        codes(
            Some(json!({"a": {"n": 1}})),
            app(json!(["a", "n"]), json!(1))
        ),
        ["append.type_mismatch"]
    );
    let deep: Vec<String> = (0..=MAX_PATH_DEPTH).map(|i| i.to_string()).collect();
    assert_eq!(
        codes(Some(json!({})), app(json!(deep), json!(1))),
        ["append.path.too_deep"]
    );
    assert_eq!(
        codes(Some(json!({})), app(json!(["a", ""]), json!(1))),
        ["append.path.empty_segment"]
    );
    assert_eq!(
        codes(Some(json!({})), app(json!(["x".repeat(300)]), json!(1))),
        ["append.path.segment_too_long"]
    );
    assert_eq!(
        codes(Some(json!({})), app(json!(["a", "prototype"]), json!(1))),
        ["append.path.proto_polluted"]
    );
}

// --- remove --------------------------------------------------------------------------------

#[test]
fn remove_key_and_root() {
    let rm = |path: &str| json!([{"type": "remove", "path": path}]);
    assert_eq!(
        run_ok(Some(json!({"a": 1, "b": 2})), rm("a")),
        json!({"b": 2})
    );
    assert_eq!(run_ok(Some(json!({"b": 2})), rm("a")), json!({"b": 2}));
    assert_eq!(run_ok(Some(json!({"b": 2})), rm("")), Value::Null);
    assert_eq!(codes(Some(json!(3)), rm("a")), ["remove.target_not_object"]);
}

// --- path validation for single-key ops ----------------------------------------------------

#[test]
fn single_key_path_errors_carry_the_op_name() {
    let long = "p".repeat(MAX_SEGMENT_BYTES + 1);
    let cases = [
        json!({"type": "set", "path": long, "value": 1}),
        json!({"type": "increment", "path": long, "by": 1}),
        json!({"type": "decrement", "path": long, "by": 1}),
        json!({"type": "remove", "path": long}),
    ];
    for (op, name) in cases
        .iter()
        .zip(["set", "increment", "decrement", "remove"])
    {
        assert_eq!(
            codes(Some(json!({})), json!([op])),
            [format!("{name}.path.segment_too_long")]
        );
        let mut polluted = op.clone();
        polluted["path"] = json!("constructor");
        assert_eq!(
            codes(Some(json!({})), json!([polluted])),
            [format!("{name}.path.proto_polluted")]
        );
    }
    // A dotted key is one literal segment, so "__proto__.x" is allowed.
    assert!(codes(
        Some(json!({})),
        json!([{"type": "set", "path": "__proto__.x"}])
    )
    .is_empty());
}
