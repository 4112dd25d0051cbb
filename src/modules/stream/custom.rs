//! Custom streams (`PROTOCOL.md` §6.1, "per-stream overrides"; the SDKs' `createStream`): a
//! trusted worker that registers `stream::<op>(<stream_name>)` serves that operation for the
//! stream instead of the store. The router names the worker function in
//! [`BuiltinCall::delegate`]; here the input is checked as for the store, the worker is
//! called with the same input, its result is checked for the shape the operation promises
//! (`JSON_ERROR` otherwise) and passed back, and the change it reports is announced to
//! `stream` triggers and consumer sockets like any other write:
//!
//! * `set` / `update` → `{old_value, new_value}`: `create` when `old_value` is null or
//!   absent, `update` otherwise, with `new_value` as the event's data;
//! * `delete` → `{old_value}`: a `delete` event only when something was deleted;
//! * `get`, `list`, `list_groups` → the worker's result as it is.
//!
//! The worker owns the data, so nothing is written to the store and nothing waits for an
//! fsync; ordering between concurrent writes is the worker's. A worker that fails answers the
//! caller with its own error, and nothing is announced. A worker that left between the routing
//! and the call (`function_not_found`) hands the stream back to the store, for that call too.

use actix::prelude::*;
use serde_json::{json, Value};

use super::functions::Change;
use super::StreamActor;
use crate::messages::{BuiltinCall, BuiltinDone};
use crate::modules::{bad_input, check_string_keys};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::router::{CallRequest, Outcome};

/// Where a custom stream operation applies: `(stream, group, item)` as given.
struct Target {
    stream: String,
    group: Option<String>,
    item: Option<String>,
}

/// The keys each operation requires, besides `stream_name`.
fn required(function_id: &str) -> &'static [&'static str] {
    match function_id {
        "stream::set" => &["group_id", "item_id", "data"],
        "stream::update" => &["group_id", "item_id", "ops"],
        "stream::get" | "stream::delete" => &["group_id", "item_id"],
        "stream::list" => &["group_id"],
        _ => &[],
    }
}

/// The input must be what the store would accept: an object with the operation's keys, and
/// names that are strings.
fn check_input(function_id: &str, data: &Value) -> Result<Target, ErrorBody> {
    let Some(obj) = data.as_object() else {
        return Err(bad_input(function_id, "expected an object"));
    };
    check_string_keys(function_id, data, &["stream_name", "group_id", "item_id"])?;
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
    let Some(stream) = text("stream_name") else {
        return Err(bad_input(function_id, "missing field `stream_name`"));
    };
    for key in required(function_id) {
        if !obj.contains_key(*key) {
            return Err(bad_input(function_id, format!("missing field `{key}`")));
        }
    }
    Ok(Target {
        stream,
        group: text("group_id"),
        item: text("item_id"),
    })
}

/// Checks a worker's result and turns it into the caller's outcome and the change to announce.
fn finish(function_id: &str, target: Target, outcome: Outcome) -> (Outcome, Option<Change>) {
    let result = match outcome {
        Err(e) => return (Err(e), None),
        Ok(result) => result,
    };
    let writes = matches!(
        function_id,
        "stream::set" | "stream::update" | "stream::delete"
    );
    if !writes {
        return (Ok(result), None);
    }
    let value = result
        .as_ref()
        .map(Payload::to_value)
        .unwrap_or(Value::Null);
    let shape_error = |what: &str| {
        let prefix = match function_id {
            "stream::set" => "Failed to set value: ",
            "stream::update" => "Failed to update value: ",
            _ => "Failed to delete value: ",
        };
        ErrorBody::new(
            "JSON_ERROR",
            format!("{prefix}the custom stream function returned {what}, not the result shape of {function_id}"),
        )
    };
    let Some(obj) = value.as_object() else {
        return (Err(shape_error("a non-object")), None);
    };
    let old = obj.get("old_value").cloned().unwrap_or(Value::Null);
    let (Some(stream), Some(group), Some(item)) = (Some(target.stream), target.group, target.item)
    else {
        return (Ok(result), None);
    };
    let event = if function_id == "stream::delete" {
        if !obj.contains_key("old_value") {
            return (Err(shape_error("no `old_value`")), None);
        }
        (!old.is_null()).then(|| json!({"type": "delete", "data": old}))
    } else {
        let Some(new) = obj.get("new_value") else {
            return (Err(shape_error("no `new_value`")), None);
        };
        let kind = if old.is_null() { "create" } else { "update" };
        Some(json!({"type": kind, "data": new}))
    };
    let change = event.map(|event| Change {
        stream,
        group,
        id: Some(item),
        event,
    });
    (Ok(result), change)
}

impl StreamActor {
    /// Serves a call of a custom stream through its worker function `delegate`.
    pub(super) fn call_custom(
        &mut self,
        call: BuiltinCall,
        delegate: String,
        ctx: &mut Context<Self>,
    ) {
        let BuiltinCall {
            engine_id,
            function_id,
            data,
            timeout,
            ..
        } = call;
        let target = match check_input(&function_id, &data.to_value()) {
            Ok(t) => t,
            Err(e) => {
                return self.registry.do_send(BuiltinDone {
                    engine_id,
                    outcome: Err(e),
                })
            }
        };
        let registry = self.registry.clone();
        let input = data.clone();
        let answer = async move { registry.call(CallRequest::new(delegate, input)).await };
        ctx.spawn(answer.into_actor(self).map(move |outcome, act, ctx| {
            if matches!(&outcome, Err(e) if e.code == "function_not_found") {
                // The worker left between routing and this call: the stream is the store's
                // again, as if it had never registered.
                let call = BuiltinCall {
                    engine_id,
                    function_id,
                    data,
                    caller: None,
                    delegate: None,
                    invocation: None,
                    timeout,
                };
                return act.handle_call(call, ctx);
            }
            let (outcome, change) = finish(&function_id, target, outcome);
            act.registry.do_send(BuiltinDone { engine_id, outcome });
            if let Some(change) = change {
                act.announce(&change);
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            stream: "s".into(),
            group: Some("g".into()),
            item: Some("i".into()),
        }
    }

    fn ok(v: Value) -> Outcome {
        Ok(Some(Payload::from_value(&v)))
    }

    #[test]
    fn set_results_become_create_or_update_events() {
        let (out, change) = finish(
            "stream::set",
            target(),
            ok(json!({"old_value": null, "new_value": 1})),
        );
        assert!(out.is_ok());
        assert_eq!(change.unwrap().event, json!({"type": "create", "data": 1}));
        let (_, change) = finish(
            "stream::update",
            target(),
            ok(json!({"old_value": 1, "new_value": 2})),
        );
        assert_eq!(change.unwrap().event, json!({"type": "update", "data": 2}));
    }

    #[test]
    fn delete_of_nothing_announces_nothing() {
        let (out, change) = finish("stream::delete", target(), ok(json!({"old_value": null})));
        assert!(out.is_ok());
        assert!(change.is_none());
        let (_, change) = finish(
            "stream::delete",
            target(),
            ok(json!({"old_value": {"a": 1}})),
        );
        assert_eq!(
            change.unwrap().event,
            json!({"type": "delete", "data": {"a": 1}})
        );
    }

    #[test]
    fn wrong_shapes_are_json_errors() {
        for (f, v) in [
            ("stream::set", json!(5)),
            ("stream::set", json!({"old_value": null})),
            ("stream::delete", json!({})),
        ] {
            let (out, change) = finish(f, target(), ok(v));
            assert_eq!(out.unwrap_err().code, "JSON_ERROR", "{f}");
            assert!(change.is_none());
        }
        let (out, _) = finish("stream::set", target(), Ok(None));
        assert_eq!(out.unwrap_err().code, "JSON_ERROR");
    }

    #[test]
    fn reads_pass_through_and_errors_stay_the_workers() {
        let (out, change) = finish("stream::get", target(), Ok(None));
        assert!(out.unwrap().is_none() && change.is_none());
        let err = ErrorBody::new("boom", "worker failed");
        let (out, _) = finish("stream::set", target(), Err(err));
        assert_eq!(out.unwrap_err().code, "boom");
    }

    #[test]
    fn input_is_checked_like_the_store_does() {
        assert!(check_input(
            "stream::set",
            &json!({"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        )
        .is_ok());
        for bad in [
            json!([]),
            json!({"group_id": "g"}),
            json!({"stream_name": 1, "group_id": "g"}),
            json!({"stream_name": "s", "group_id": "g", "item_id": "i"}),
        ] {
            let e = check_input("stream::set", &bad).err().unwrap();
            assert_eq!(e.code, "deserialization_error", "{bad}");
        }
    }
}
