//! The `state::*` functions (`MODULES.md` §1.2): input parsing ([`plan`]), upstream's exact
//! result shapes and error codes, and the change each write produces, run over a [`Store`]
//! ([`call`], pure and synchronous) or over Redis (`redis.rs`, with the same [`Op`]s and
//! shapes). The state actor fans the returned [`StateChange`] out.
//!
//! State lives in the store as one stream ([`STREAM`]): a scope is a group, a key an item.
//! Where upstream is wrong we do better: `state::delete` of a missing key changes nothing and
//! announces nothing, an emptied scope leaves `state::list_groups` at once, and
//! `max_value_bytes` bounds `state::update` as well as `state::set`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::kv::store::{Store, StoreError};
use crate::modules::{bad_input, check_string_keys};
use crate::protocol::ErrorBody;
use crate::update_ops as ops;

/// The store stream that holds every scope.
pub const STREAM: &str = "state";

/// Longest scope or key accepted.
pub const MAX_NAME_BYTES: usize = 4096;

/// The functions this module serves, with their descriptions.
pub const FUNCTIONS: &[(&str, &str)] = &[
    (
        "state::set",
        "Store a value: {scope, key, value} -> {old_value, new_value}",
    ),
    (
        "state::get",
        "Read a value: {scope, key} -> value (no result when missing)",
    ),
    (
        "state::delete",
        "Delete a value: {scope, key} -> the deleted value (no result when missing)",
    ),
    (
        "state::update",
        "Apply update ops atomically: {scope, key, ops} -> {old_value, new_value, errors?}",
    ),
    (
        "state::list",
        "A scope's values in insertion order: {scope} -> [value]",
    ),
    (
        "state::list_groups",
        "Every scope that holds a value: {} -> {groups: [scope]}",
    ),
];

/// A write to announce to `state` triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub scope: String,
    pub key: String,
    /// `state:created`, `state:updated` or `state:deleted`.
    pub event_type: &'static str,
    pub old_value: Value,
    pub new_value: Value,
}

impl StateChange {
    /// The `state` trigger payload (§1.3), exact keys.
    pub fn payload(&self) -> Value {
        json!({"type": "state", "event_type": self.event_type, "scope": self.scope,
               "key": self.key, "old_value": self.old_value, "new_value": self.new_value})
    }

    fn written(scope: String, key: String, old: Option<Value>, new: Value) -> StateChange {
        StateChange {
            scope,
            key,
            event_type: if old.is_some() {
                "state:updated"
            } else {
                "state:created"
            },
            old_value: old.unwrap_or(Value::Null),
            new_value: new,
        }
    }
}

type Outcome = Result<Option<Value>, ErrorBody>;

#[derive(Deserialize)]
struct KeyInput {
    scope: String,
    key: String,
}

#[derive(Deserialize)]
struct SetInput {
    scope: String,
    key: String,
    #[serde(default)]
    value: Option<Value>,
    /// Upstream accepts `data` as another name for `value`.
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct ScopeInput {
    scope: String,
}

#[derive(Deserialize)]
struct UpdateInput {
    scope: String,
    key: String,
    ops: Value,
}

fn parse<T: for<'de> Deserialize<'de>>(function_id: &str, data: Value) -> Result<T, ErrorBody> {
    check_string_keys(function_id, &data, &["scope", "key"])?;
    serde_json::from_value(data).map_err(|e| bad_input(function_id, e))
}

fn check_names(function_id: &str, scope: &str, key: Option<&str>) -> Result<(), ErrorBody> {
    for (name, value) in [("scope", Some(scope)), ("key", key)] {
        if value.is_some_and(|v| v.len() > MAX_NAME_BYTES) {
            return Err(bad_input(
                function_id,
                format!("`{name}` is longer than {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

fn store_error(code: &str, prefix: &str, e: StoreError) -> ErrorBody {
    ErrorBody::new(code, format!("{prefix}{e}"))
}

/// `VALUE_TOO_LARGE` when `value`'s compact JSON is over `max_bytes`.
fn check_size(value: &Value, max_bytes: Option<usize>) -> Result<(), ErrorBody> {
    let Some(limit) = max_bytes else {
        return Ok(());
    };
    let len = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > limit {
        return Err(ErrorBody::new(
            "VALUE_TOO_LARGE",
            format!("value of {len} bytes exceeds the configured max_value_bytes limit of {limit}"),
        ));
    }
    Ok(())
}

/// A checked `state::*` call, ready to run on the store or on Redis.
pub enum Op {
    Set {
        scope: String,
        key: String,
        value: Value,
    },
    Get {
        scope: String,
        key: String,
    },
    Delete {
        scope: String,
        key: String,
    },
    Update {
        scope: String,
        key: String,
        ops: Vec<ops::UpdateOp>,
    },
    List {
        scope: String,
    },
    ListGroups,
}

/// Parses and checks a call's input (names, sizes, ops); what it needs to read is left to the
/// backend.
pub fn plan(f: &str, data: Value, max_value_bytes: Option<usize>) -> Result<Op, ErrorBody> {
    Ok(match f {
        "state::set" => {
            let i: SetInput = parse(f, data)?;
            check_names(f, &i.scope, Some(&i.key))?;
            let value = match (i.value, i.data) {
                (Some(v), _) | (None, Some(v)) => v,
                (None, None) => return Err(bad_input(f, "missing field `value`")),
            };
            check_size(&value, max_value_bytes)?;
            Op::Set {
                scope: i.scope,
                key: i.key,
                value,
            }
        }
        "state::get" => {
            let i: KeyInput = parse(f, data)?;
            Op::Get {
                scope: i.scope,
                key: i.key,
            }
        }
        "state::delete" => {
            let i: KeyInput = parse(f, data)?;
            Op::Delete {
                scope: i.scope,
                key: i.key,
            }
        }
        "state::update" => {
            let i: UpdateInput = parse(f, data)?;
            check_names(f, &i.scope, Some(&i.key))?;
            let ops = ops::parse_ops(&i.ops).map_err(|e| bad_input(f, e))?;
            Op::Update {
                scope: i.scope,
                key: i.key,
                ops,
            }
        }
        "state::list" => {
            let i: ScopeInput = parse(f, data)?;
            Op::List { scope: i.scope }
        }
        "state::list_groups" => Op::ListGroups,
        other => {
            return Err(ErrorBody::new(
                "function_not_found",
                format!("Function {other} not found"),
            ))
        }
    })
}

/// A call's result and the change to announce.
pub type Done = (Option<Value>, Option<StateChange>);

/// What a set that replaced `old` answers.
pub fn set_done(scope: String, key: String, old: Option<Value>, value: Value) -> Done {
    let result = json!({"old_value": old.clone(), "new_value": value.clone()});
    (
        Some(result),
        Some(StateChange::written(scope, key, old, value)),
    )
}

/// What a delete that removed `old` (if anything) answers.
pub fn delete_done(scope: String, key: String, old: Option<Value>) -> Done {
    let change = old.clone().map(|v| StateChange {
        scope,
        key,
        event_type: "state:deleted",
        old_value: v,
        new_value: Value::Null,
    });
    (old, change)
}

/// Applies update ops to `old`: the new value (checked against the size limit) and the result
/// to answer once it is written.
pub fn update_apply(
    scope: String,
    key: String,
    old: Option<Value>,
    update: &[ops::UpdateOp],
    max_value_bytes: Option<usize>,
) -> Result<(Value, Done), ErrorBody> {
    let (new, errors) = ops::apply_ops(old.as_ref(), update);
    check_size(&new, max_value_bytes)?;
    let mut out = Map::new();
    out.insert("old_value".into(), old.clone().unwrap_or(Value::Null));
    out.insert("new_value".into(), new.clone());
    if !errors.is_empty() {
        out.insert("errors".into(), json!(errors));
    }
    let change = StateChange::written(scope, key, old, new.clone());
    Ok((new, (Some(Value::Object(out)), Some(change))))
}

/// Runs one `state::*` function on the store. A successful write also returns the change it
/// made.
pub fn call(
    store: &mut Store,
    function_id: &str,
    data: Value,
    max_value_bytes: Option<usize>,
) -> (Outcome, Option<StateChange>) {
    let run =
        plan(function_id, data, max_value_bytes).and_then(|op| exec(store, op, max_value_bytes));
    match run {
        Ok((value, change)) => (Ok(value), change),
        Err(e) => (Err(e), None),
    }
}

fn exec(store: &mut Store, op: Op, max_value_bytes: Option<usize>) -> Result<Done, ErrorBody> {
    match op {
        Op::Set { scope, key, value } => {
            let old = store
                .set(STREAM, &scope, &key, value.clone())
                .map_err(|e| store_error("SET_ERROR", "Failed to set value: ", e))?;
            Ok(set_done(scope, key, old, value))
        }
        Op::Get { scope, key } => Ok((store.get(STREAM, &scope, &key).cloned(), None)),
        Op::Delete { scope, key } => {
            let old = store
                .delete(STREAM, &scope, &key)
                .map_err(|e| store_error("DELETE_ERROR", "Failed to delete value: ", e))?;
            Ok(delete_done(scope, key, old))
        }
        Op::Update { scope, key, ops } => {
            let old = store.get(STREAM, &scope, &key).cloned();
            let (new, done) = update_apply(scope.clone(), key.clone(), old, &ops, max_value_bytes)?;
            store
                .set(STREAM, &scope, &key, new)
                .map_err(|e| store_error("UPDATE_ERROR", "Failed to update value: ", e))?;
            Ok(done)
        }
        Op::List { scope } => Ok((Some(Value::Array(store.list(STREAM, &scope))), None)),
        Op::ListGroups => Ok((Some(json!({"groups": store.list_groups(STREAM)})), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_ok(store: &mut Store, f: &str, data: Value) -> (Option<Value>, Option<StateChange>) {
        let (outcome, change) = call(store, f, data, Some(64));
        (outcome.expect(f), change)
    }

    #[test]
    fn set_get_delete_have_upstreams_shapes() {
        let mut s = Store::in_memory();
        let (r, c) = run_ok(
            &mut s,
            "state::set",
            json!({"scope": "u", "key": "k", "value": 1}),
        );
        assert_eq!(r, Some(json!({"old_value": null, "new_value": 1})));
        assert_eq!(c.unwrap().event_type, "state:created");
        let (r, c) = run_ok(
            &mut s,
            "state::set",
            json!({"scope": "u", "key": "k", "data": 2}),
        );
        assert_eq!(r, Some(json!({"old_value": 1, "new_value": 2})));
        assert_eq!(c.unwrap().payload()["event_type"], "state:updated");
        assert_eq!(
            run_ok(&mut s, "state::get", json!({"scope": "u", "key": "k"})).0,
            Some(json!(2))
        );
        // delete returns the bare value; a second delete returns nothing and announces nothing.
        let (r, c) = run_ok(&mut s, "state::delete", json!({"scope": "u", "key": "k"}));
        assert_eq!(r, Some(json!(2)));
        assert_eq!(c.unwrap().new_value, Value::Null);
        assert_eq!(
            run_ok(&mut s, "state::delete", json!({"scope": "u", "key": "k"})),
            (None, None)
        );
        assert_eq!(
            run_ok(&mut s, "state::get", json!({"scope": "u", "key": "k"})).0,
            None
        );
    }

    #[test]
    fn an_emptied_scope_leaves_list_groups_at_once() {
        let mut s = Store::in_memory();
        run_ok(
            &mut s,
            "state::set",
            json!({"scope": "b", "key": "k", "value": 1}),
        );
        run_ok(
            &mut s,
            "state::set",
            json!({"scope": "a", "key": "k", "value": 1}),
        );
        let (r, _) = run_ok(&mut s, "state::list_groups", json!({}));
        assert_eq!(r, Some(json!({"groups": ["a", "b"]})));
        run_ok(&mut s, "state::delete", json!({"scope": "a", "key": "k"}));
        let (r, _) = run_ok(&mut s, "state::list_groups", json!({}));
        assert_eq!(r, Some(json!({"groups": ["b"]})));
        assert_eq!(
            run_ok(&mut s, "state::list", json!({"scope": "a"})).0,
            Some(json!([]))
        );
    }

    #[test]
    fn update_creates_and_appends() {
        let mut s = Store::in_memory();
        let ops = json!([{"type": "append", "path": "events", "value": {"n": 1}}]);
        let (r, c) = run_ok(
            &mut s,
            "state::update",
            json!({"scope": "u", "key": "k", "ops": ops}),
        );
        assert_eq!(
            r,
            Some(json!({"old_value": null, "new_value": {"events": [{"n": 1}]}}))
        );
        assert_eq!(c.unwrap().event_type, "state:created");
    }

    #[test]
    fn errors_name_the_problem() {
        let mut s = Store::in_memory();
        let err = |data: Value, f: &str| {
            call(&mut Store::in_memory(), f, data, Some(64))
                .0
                .unwrap_err()
        };
        let e = err(json!({"key": "k", "value": 1}), "state::set");
        assert_eq!(e.code, "deserialization_error");
        assert!(e.message.contains("missing field `scope`"), "{}", e.message);
        let e = err(json!({"scope": "u", "key": "k"}), "state::set");
        assert!(e.message.contains("missing field `value`"), "{}", e.message);
        let e = err(json!({"scope": 1, "key": "k", "value": 1}), "state::set");
        assert!(
            e.message.contains("`scope` must be a string, got 1"),
            "{}",
            e.message
        );
        let e = err(
            json!({"scope": "u", "key": "k", "value": "x".repeat(100)}),
            "state::set",
        );
        assert_eq!(e.code, "VALUE_TOO_LARGE");
        assert!(e
            .message
            .contains("exceeds the configured max_value_bytes limit of 64"));
        let big = json!([{"type": "set", "path": "", "value": "x".repeat(100)}]);
        let (outcome, change) = call(
            &mut s,
            "state::update",
            json!({"scope": "u", "key": "k", "ops": big}),
            Some(64),
        );
        assert_eq!(outcome.unwrap_err().code, "VALUE_TOO_LARGE");
        assert!(change.is_none());
        assert_eq!(
            run_ok(&mut s, "state::get", json!({"scope": "u", "key": "k"})).0,
            None
        );
    }
}
