//! The router's side of `iii-cluster` (calls between engines): which calls go to the module
//! because only another engine has their function, and how a call another engine forwarded
//! here over its link is recognised (never forwarded again, the original caller's
//! `_caller_worker_id` kept; on a trusted listener only).

use std::sync::Arc;

use serde_json::Value;

use super::{CallRequest, Router};

/// The metadata key of a call another engine's `iii-cluster` forwarded over its link:
/// `{"caller": <the original caller's worker id>}`.
pub const CLUSTER_HOP: &str = "__iii_cluster_hop";

/// A call on a trusted listener whose metadata carries [`CLUSTER_HOP`] was forwarded by another
/// engine: it runs here only (never forwarded again) and its callee sees the original caller's
/// `_caller_worker_id`; the key is taken out of the metadata. Any other call keeps `caller`.
pub(super) fn hop(
    metadata: Value,
    caller: Option<Arc<str>>,
) -> (Option<Arc<str>>, Option<Value>, bool) {
    let Value::Object(mut m) = metadata else {
        return (caller, Some(metadata), false);
    };
    let Some(hop) = m.remove(CLUSTER_HOP) else {
        return (caller, Some(Value::Object(m)), false);
    };
    let original = hop.get("caller").and_then(Value::as_str).map(Arc::from);
    let rest = (!m.is_empty()).then_some(Value::Object(m));
    (original, rest, true)
}

impl Router {
    /// The `iii-cluster` module, when the function is registered on another engine only.
    pub(super) fn remote_route(&self, req: &CallRequest) -> Option<usize> {
        if req.local_only || !self.remote_functions.contains(&req.function_id) {
            return None;
        }
        self.modules.iter().position(|m| *m == "iii-cluster")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hop_is_recognised_and_taken_out_of_the_metadata() {
        let me: Option<Arc<str>> = Some(Arc::from("link-session"));
        let (caller, meta, local) = hop(
            json!({CLUSTER_HOP: {"caller": "worker-on-a"}, "tenant": 7}),
            me.clone(),
        );
        assert_eq!(caller.as_deref(), Some("worker-on-a"));
        assert_eq!(meta, Some(json!({"tenant": 7})));
        assert!(local);
        // An internal call on the other engine had no caller; nothing else in the metadata.
        let (caller, meta, local) = hop(json!({CLUSTER_HOP: {"caller": null}}), me.clone());
        assert_eq!((caller, meta, local), (None, None, true));
        // Ordinary metadata is left alone.
        let (caller, meta, local) = hop(json!({"tenant": 7}), me.clone());
        assert_eq!(
            (caller, meta, local),
            (me.clone(), Some(json!({"tenant": 7})), false)
        );
        let (caller, meta, local) = hop(json!([1]), me.clone());
        assert_eq!((caller, meta, local), (me, Some(json!([1])), false));
    }
}
