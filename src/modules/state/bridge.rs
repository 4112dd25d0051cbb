//! `iii-state` through another engine (`adapter: {name: bridge, config: {bridge_url}}`,
//! `MODULES.md` §7.2): this engine is a worker of the remote one and every `state::*` call goes
//! there with the same input; the remote engine stores the value and fires its own `state`
//! triggers, and this engine fires its local ones from the result (upstream does the same).
//! The remote's errors keep their code; a failure of the bridge itself (remote unreachable,
//! deadline) is `<OP>_ERROR` with the reason, as upstream.

use std::time::Duration;

use iii_client::{Client, TriggerRequest};
use serde_json::Value;

use super::functions::{delete_done, set_done, Done, Op};
use crate::protocol::ErrorBody;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one call on the remote engine; `op` (already checked here) says what change to announce.
pub async fn exec(
    client: Client,
    function_id: String,
    input: Value,
    op: Op,
) -> Result<Done, ErrorBody> {
    let req = TriggerRequest {
        function_id: function_id.clone(),
        payload: input,
        timeout: Some(TIMEOUT),
        metadata: None,
        action: None,
    };
    let result = client.trigger_with(req).await.map_err(|e| {
        if e.code == "TIMEOUT" || e.code == "SHUTDOWN" {
            let op = function_id.trim_start_matches("state::").to_uppercase();
            ErrorBody::new(
                format!("{op}_ERROR"),
                format!("Failed via bridge: {}: {}", e.code, e.message),
            )
        } else {
            ErrorBody {
                code: e.code,
                message: e.message,
                stacktrace: e.stacktrace,
            }
        }
    })?;
    let field = |r: &Option<Value>, k: &str| {
        r.as_ref()
            .and_then(|v| v.get(k))
            .cloned()
            .filter(|v| !v.is_null())
    };
    Ok(match op {
        Op::Set { scope, key, .. } | Op::Update { scope, key, .. } => {
            let (old, new) = (
                field(&result, "old_value"),
                field(&result, "new_value").unwrap_or(Value::Null),
            );
            (result, set_done(scope, key, old, new).1)
        }
        Op::Delete { scope, key } => {
            let old = result.clone().filter(|v| !v.is_null());
            (result, delete_done(scope, key, old).1)
        }
        _ => (result, None),
    })
}
