//! Applying parsed ops to a value: each op is validated (path limits, forbidden keys, types)
//! and either applied or skipped with an [`UpdateOpError`]; later ops still run.

use serde_json::{Map, Number, Value};

use super::*;

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
pub(super) fn deeper_than(value: &Value, limit: usize) -> bool {
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
