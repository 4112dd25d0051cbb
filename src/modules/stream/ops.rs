//! The `stream::update` op engine: parses the `ops` array of a `stream::update` call and applies
//! the ops, in order, to one stored value (PROTOCOL.md §6.2).
//!
//! Pure logic, no I/O: the stream actor reads the current value, calls [`parse_ops`] once and
//! [`apply_ops`] once, then stores the result and reports `errors` next to `old_value` and
//! `new_value`.
//!
//! * A wrongly-typed op (`by: 1.5`, a `set` without `path`, an unknown `type`, …) fails the whole
//!   call: [`parse_ops`] returns a serde-style message naming the op index and field, which the
//!   caller reports as `deserialization_error`.
//! * An op that is well-typed but cannot be applied (a path that is too deep, an increment of a
//!   string, …) is skipped and recorded as an [`UpdateOpError`]; the ops after it still run.
//!
//! Paths are literal keys, never split on dots. `set`, `increment`, `decrement` and `remove` take
//! a single key (`""` means the whole value); `merge` and `append` also accept an array of keys for
//! a nested target. Limits: 32 path segments, 256 bytes per segment, no `__proto__`,
//! `constructor` or `prototype` segment; a merge value has at most 1024 top-level keys, none of
//! those three names, and a nesting depth of at most 16.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Documentation link carried by every [`UpdateOpError`].
pub const DOC_URL: &str = "https://iii.dev/docs/workers/iii-state#error-codes";
/// Most segments a path may have.
pub const MAX_PATH_DEPTH: usize = 32;
/// Longest path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 256;
/// Deepest nesting of a merge value (a scalar is 0, each object or array adds 1).
pub const MAX_VALUE_DEPTH: usize = 16;
/// Most top-level keys of a merge value.
pub const MAX_VALUE_KEYS: usize = 1024;
/// Keys that are refused in paths and as top-level merge keys (JavaScript prototype pollution).
pub const FORBIDDEN_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

const OP_NAMES: &str = "`set`, `merge`, `increment`, `decrement`, `append`, `remove`";

/// One op that could not be applied; it was skipped and the following ops still ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateOpError {
    /// 0-based index of the op in the request's `ops` array.
    pub op_index: usize,
    /// Stable code such as `increment.not_number` or `merge.path.too_deep`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
    /// Always [`DOC_URL`].
    pub doc_url: String,
}

/// One parsed op. `Merge` and `Append` paths are already split into literal segments; an empty
/// vector means the root.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    /// Replace the whole value (`path` empty) or one top-level key.
    Set { path: String, value: Value },
    /// Shallow-merge an object into the root or into the object at a nested path.
    Merge { path: Vec<String>, value: Value },
    /// Add `by` to a number (the whole value when `path` is empty).
    Increment { path: String, by: i64 },
    /// Subtract `by` from a number (the whole value when `path` is empty).
    Decrement { path: String, by: i64 },
    /// Push onto an array or concatenate onto a string.
    Append { path: Vec<String>, value: Value },
    /// Delete one top-level key, or null the whole value when `path` is empty.
    Remove { path: String },
}

impl UpdateOp {
    /// The op's wire name, also the first part of its error codes.
    pub fn name(&self) -> &'static str {
        match self {
            UpdateOp::Set { .. } => "set",
            UpdateOp::Merge { .. } => "merge",
            UpdateOp::Increment { .. } => "increment",
            UpdateOp::Decrement { .. } => "decrement",
            UpdateOp::Append { .. } => "append",
            UpdateOp::Remove { .. } => "remove",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// A parse failure inside one op: the field it concerns (if any) and a serde-style message.
struct FieldError {
    field: Option<&'static str>,
    message: String,
}

impl FieldError {
    fn at(field: &'static str, message: String) -> Self {
        FieldError {
            field: Some(field),
            message,
        }
    }

    fn missing(field: &'static str) -> Self {
        FieldError {
            field: None,
            message: format!("missing field `{field}`"),
        }
    }
}

/// Parses `ops` (the raw JSON array from the request). A wrongly-typed op (e.g. `by: 1.5`,
/// missing `path` on `set`, unknown `type`) fails the whole call: `Err(message)` where message is
/// a serde-style description naming the op index and field, e.g.
/// ``ops[1].by: invalid type: floating point `1.5`, expected i64``.
pub fn parse_ops(ops: &Value) -> Result<Vec<UpdateOp>, String> {
    let items = ops
        .as_array()
        .ok_or_else(|| format!("ops: {}", invalid_type(ops, "a sequence")))?;
    items
        .iter()
        .enumerate()
        .map(|(index, op)| {
            parse_op(op).map_err(|e| match e.field {
                Some(field) => format!("ops[{index}].{field}: {}", e.message),
                None => format!("ops[{index}]: {}", e.message),
            })
        })
        .collect()
}

fn parse_op(op: &Value) -> Result<UpdateOp, FieldError> {
    let obj = op.as_object().ok_or_else(|| FieldError {
        field: None,
        message: invalid_type(op, "an update op object"),
    })?;
    let kind = match obj.get("type") {
        None => return Err(FieldError::missing("type")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => return Err(FieldError::at("type", invalid_type(other, "a string"))),
    };
    match kind {
        "set" => Ok(UpdateOp::Set {
            path: string_field(obj, "path")?,
            value: obj.get("value").cloned().unwrap_or(Value::Null),
        }),
        "merge" => Ok(UpdateOp::Merge {
            path: segments_field(obj, "path")?,
            value: required_value(obj, "value")?,
        }),
        "increment" => Ok(UpdateOp::Increment {
            path: string_field(obj, "path")?,
            by: int_field(obj, "by")?,
        }),
        "decrement" => Ok(UpdateOp::Decrement {
            path: string_field(obj, "path")?,
            by: int_field(obj, "by")?,
        }),
        "append" => Ok(UpdateOp::Append {
            path: segments_field(obj, "path")?,
            value: required_value(obj, "value")?,
        }),
        "remove" => Ok(UpdateOp::Remove {
            path: string_field(obj, "path")?,
        }),
        other => Err(FieldError::at(
            "type",
            format!("unknown variant `{other}`, expected one of {OP_NAMES}"),
        )),
    }
}

fn string_field(obj: &Map<String, Value>, name: &'static str) -> Result<String, FieldError> {
    let value = obj.get(name).ok_or(FieldError::missing(name))?;
    String::deserialize(value).map_err(|e| FieldError::at(name, e.to_string()))
}

fn int_field(obj: &Map<String, Value>, name: &'static str) -> Result<i64, FieldError> {
    let value = obj.get(name).ok_or(FieldError::missing(name))?;
    i64::deserialize(value).map_err(|e| FieldError::at(name, e.to_string()))
}

fn required_value(obj: &Map<String, Value>, name: &'static str) -> Result<Value, FieldError> {
    obj.get(name).cloned().ok_or(FieldError::missing(name))
}

/// An optional path that is a string (one key) or an array of strings (literal segments).
/// Absent, `null`, `""` and `[]` all mean the root.
fn segments_field(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<String>, FieldError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(value @ Value::Array(_)) => {
            Vec::<String>::deserialize(value).map_err(|e| FieldError::at(name, e.to_string()))
        }
        Some(other) => Err(FieldError::at(
            name,
            invalid_type(other, "a string or an array of strings"),
        )),
    }
}

/// `invalid type: <what was found>, expected <expected>` in serde's wording.
fn invalid_type(found: &Value, expected: &str) -> String {
    let found = match found {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".to_string(),
        Value::Object(_) => "map".to_string(),
    };
    format!("invalid type: {found}, expected {expected}")
}

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

/// Why one op was skipped: the code after `<op>.` and a message.
struct Failure {
    code: &'static str,
    message: String,
}

fn fail(code: &'static str, message: String) -> Failure {
    Failure { code, message }
}

/// What a successfully validated op did.
enum Applied {
    /// The value was updated (possibly to the same content).
    Changed,
    /// Nothing to do and nothing wrong (a root merge into a non-object value).
    Ignored,
}

/// The value being updated. `fresh` is true while the item was missing and no op has been
/// applied yet: a root `increment`/`decrement`/`append` then starts from nothing instead of `{}`.
struct Target {
    value: Value,
    fresh: bool,
}

/// Applies ops in order to `current` (None = missing item, start from `{}`); failed ops are
/// skipped and recorded; later ops still run.
pub fn apply_ops(current: Option<&Value>, ops: &[UpdateOp]) -> (Value, Vec<UpdateOpError>) {
    let mut target = Target {
        value: current
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
        fresh: current.is_none(),
    };
    let mut errors = Vec::new();
    for (op_index, op) in ops.iter().enumerate() {
        match apply_one(&mut target, op) {
            Ok(Applied::Changed) => target.fresh = false,
            Ok(Applied::Ignored) => {}
            Err(failure) => errors.push(UpdateOpError {
                op_index,
                code: format!("{}.{}", op.name(), failure.code),
                message: failure.message,
                doc_url: DOC_URL.to_string(),
            }),
        }
    }
    (target.value, errors)
}

fn apply_one(target: &mut Target, op: &UpdateOp) -> Result<Applied, Failure> {
    match op {
        UpdateOp::Set { path, value } => {
            validate_path(key_segments(path))?;
            apply_set(&mut target.value, path, value)
        }
        UpdateOp::Merge { path, value } => {
            validate_path(path)?;
            let source = validate_merge_value(value)?;
            apply_merge(&mut target.value, path, source)
        }
        UpdateOp::Increment { path, by } => {
            validate_path(key_segments(path))?;
            apply_step(target, path, *by, Step::Add)
        }
        UpdateOp::Decrement { path, by } => {
            validate_path(key_segments(path))?;
            apply_step(target, path, *by, Step::Subtract)
        }
        UpdateOp::Append { path, value } => {
            validate_path(path)?;
            apply_append(target, path, value)
        }
        UpdateOp::Remove { path } => {
            validate_path(key_segments(path))?;
            apply_remove(&mut target.value, path)
        }
    }
}

/// A single-key path as segments: `""` (the root) has none.
fn key_segments(path: &String) -> &[String] {
    if path.is_empty() {
        &[]
    } else {
        std::slice::from_ref(path)
    }
}

fn validate_path(segments: &[String]) -> Result<(), Failure> {
    if segments.len() > MAX_PATH_DEPTH {
        return Err(fail(
            "path.too_deep",
            format!(
                "path has {} segments; the maximum is {MAX_PATH_DEPTH}",
                segments.len()
            ),
        ));
    }
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(fail(
                "path.empty_segment",
                format!("path segment {i} is empty"),
            ));
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(fail(
                "path.segment_too_long",
                format!(
                    "path segment {i} is {} bytes; the maximum is {MAX_SEGMENT_BYTES}",
                    segment.len()
                ),
            ));
        }
        if FORBIDDEN_KEYS.contains(&segment.as_str()) {
            return Err(fail(
                "path.proto_polluted",
                format!("path segment {segment:?} is not allowed (prototype pollution)"),
            ));
        }
    }
    Ok(())
}

fn validate_merge_value(value: &Value) -> Result<&Map<String, Value>, Failure> {
    let map = value.as_object().ok_or_else(|| {
        fail(
            "value.not_an_object",
            format!("merge value must be an object, got {}", type_name(value)),
        )
    })?;
    if map.len() > MAX_VALUE_KEYS {
        return Err(fail(
            "value.too_many_keys",
            format!(
                "merge value has {} top-level keys; the maximum is {MAX_VALUE_KEYS}",
                map.len()
            ),
        ));
    }
    if let Some(key) = map.keys().find(|k| FORBIDDEN_KEYS.contains(&k.as_str())) {
        return Err(fail(
            "value.proto_polluted",
            format!("merge value key {key:?} is not allowed (prototype pollution)"),
        ));
    }
    if deeper_than(value, MAX_VALUE_DEPTH) {
        return Err(fail(
            "value.too_deep",
            format!("merge value is nested deeper than {MAX_VALUE_DEPTH} levels"),
        ));
    }
    Ok(map)
}

/// True when `value` nests objects/arrays more than `limit` levels deep. Stops descending past
/// the limit, so it is cheap on hostile input.
fn deeper_than(value: &Value, limit: usize) -> bool {
    match value {
        Value::Object(map) => limit == 0 || map.values().any(|v| deeper_than(v, limit - 1)),
        Value::Array(items) => limit == 0 || items.iter().any(|v| deeper_than(v, limit - 1)),
        _ => false,
    }
}

fn apply_set(root: &mut Value, path: &str, value: &Value) -> Result<Applied, Failure> {
    if path.is_empty() {
        *root = value.clone();
        return Ok(Applied::Changed);
    }
    let map = object_root(root, "set", path)?;
    map.insert(path.to_string(), value.clone());
    Ok(Applied::Changed)
}

fn apply_merge(
    root: &mut Value,
    path: &[String],
    source: &Map<String, Value>,
) -> Result<Applied, Failure> {
    let target = if path.is_empty() {
        let Some(map) = root.as_object_mut() else {
            return Ok(Applied::Ignored);
        };
        map
    } else {
        object_at(root, path)
    };
    for (key, item) in source {
        target.insert(key.clone(), item.clone());
    }
    Ok(Applied::Changed)
}

/// The object at `path` below `root`, turning `root` and every missing or non-object step into
/// `{}` on the way.
fn object_at<'a>(root: &'a mut Value, path: &[String]) -> &'a mut Map<String, Value> {
    let mut node = root;
    for segment in path {
        node = ensure_object(node)
            .entry(segment.clone())
            .or_insert(Value::Null);
    }
    ensure_object(node)
}

fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("the value was just replaced by an object"),
    }
}

#[derive(Clone, Copy)]
enum Step {
    Add,
    Subtract,
}

impl Step {
    fn op_name(self) -> &'static str {
        match self {
            Step::Add => "increment",
            Step::Subtract => "decrement",
        }
    }

    /// `by` signed for this direction.
    fn delta(self, by: i64) -> i128 {
        match self {
            Step::Add => i128::from(by),
            Step::Subtract => -i128::from(by),
        }
    }

    /// The value of a missing number after this step: `by` or `-by`.
    fn start(self, by: i64) -> Value {
        int_value(self.delta(by)).unwrap_or(Value::Null)
    }

    /// `number ± by`: integers stay integers (None on overflow past i64/u64), floats stay floats.
    fn apply(self, number: &Number, by: i64) -> Option<Value> {
        let int = number.as_i64().map(i128::from);
        match int.or_else(|| number.as_u64().map(i128::from)) {
            Some(n) => int_value(n + self.delta(by)),
            None => Number::from_f64(number.as_f64()? + self.delta(by) as f64).map(Value::Number),
        }
    }
}

fn int_value(n: i128) -> Option<Value> {
    if let Ok(i) = i64::try_from(n) {
        return Some(Value::from(i));
    }
    u64::try_from(n).ok().map(Value::from)
}

fn apply_step(target: &mut Target, path: &str, by: i64, step: Step) -> Result<Applied, Failure> {
    if path.is_empty() {
        if target.fresh {
            target.value = step.start(by);
            return Ok(Applied::Changed);
        }
        target.value = stepped(&target.value, path, by, step)?;
        return Ok(Applied::Changed);
    }
    let map = object_root(&mut target.value, step.op_name(), path)?;
    let next = match map.get(path) {
        None => step.start(by),
        Some(current) => stepped(current, path, by, step)?,
    };
    map.insert(path.to_string(), next);
    Ok(Applied::Changed)
}

fn stepped(current: &Value, path: &str, by: i64, step: Step) -> Result<Value, Failure> {
    let Value::Number(number) = current else {
        return Err(fail(
            "not_number",
            format!(
                "expected a number at {}, got {}",
                label(path),
                type_name(current)
            ),
        ));
    };
    step.apply(number, by).ok_or_else(|| {
        fail(
            "not_number",
            format!(
                "{} of {number} at {} by {by} overflows",
                step.op_name(),
                label(path)
            ),
        )
    })
}

fn apply_append(target: &mut Target, path: &[String], value: &Value) -> Result<Applied, Failure> {
    if path.is_empty() {
        if target.fresh {
            target.value = Value::Null;
        }
        append_into(&mut target.value, value, "the root")?;
        return Ok(Applied::Changed);
    }
    if !target.value.is_object() {
        return Err(fail(
            "target_not_object",
            format!(
                "cannot append at {path:?}: the value is {}, expected an object",
                type_name(&target.value)
            ),
        ));
    }
    let (leaf, parents) = match path.split_last() {
        Some(split) => split,
        None => return Ok(Applied::Ignored),
    };
    let nested = !parents.is_empty();
    let parent = object_at(&mut target.value, parents);
    match parent.get_mut(leaf) {
        Some(existing) => append_into(existing, value, &format!("{path:?}"))?,
        None if nested => {
            parent.insert(leaf.clone(), Value::Array(vec![value.clone()]));
        }
        None => {
            parent.insert(leaf.clone(), first_appended(value));
        }
    }
    Ok(Applied::Changed)
}

/// Appends `value` to an array, string or null `target`.
fn append_into(target: &mut Value, value: &Value, at: &str) -> Result<(), Failure> {
    match target {
        Value::Array(items) => items.push(value.clone()),
        Value::String(text) => match value.as_str() {
            Some(more) => text.push_str(more),
            None => {
                return Err(fail(
                    "type_mismatch",
                    format!(
                        "cannot append {} to the string at {at}; expected a string",
                        type_name(value)
                    ),
                ))
            }
        },
        Value::Null => *target = first_appended(value),
        other => {
            return Err(fail(
                "type_mismatch",
                format!(
                    "cannot append to {} at {at}; expected an array, a string or null",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(())
}

/// What appending `value` to nothing yields: a string stays a string, anything else is wrapped.
fn first_appended(value: &Value) -> Value {
    if value.is_string() {
        value.clone()
    } else {
        Value::Array(vec![value.clone()])
    }
}

fn apply_remove(root: &mut Value, path: &str) -> Result<Applied, Failure> {
    if path.is_empty() {
        *root = Value::Null;
        return Ok(Applied::Changed);
    }
    let map = object_root(root, "remove", path)?;
    map.remove(path);
    Ok(Applied::Changed)
}

/// The root as an object, or `<op>.target_not_object`.
fn object_root<'a>(
    root: &'a mut Value,
    op: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, Failure> {
    let kind = type_name(root);
    root.as_object_mut().ok_or_else(|| {
        fail(
            "target_not_object",
            format!(
                "cannot {op} at {}: the value is {kind}, expected an object",
                label(path)
            ),
        )
    })
}

fn label(path: &str) -> String {
    if path.is_empty() {
        "the root".to_string()
    } else {
        format!("{path:?}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let app =
            |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
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
        let app =
            |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
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
        let app =
            |path: Value, value: Value| json!([{"type": "append", "path": path, "value": value}]);
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
}
