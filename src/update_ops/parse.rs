//! Reading the `ops` array: each op's type and fields, with serde-style messages naming the op
//! index and the field for anything wrongly typed.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{UpdateOp, OP_NAMES};

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
