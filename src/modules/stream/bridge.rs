//! `iii-stream` through another engine (`adapter: {name: bridge, config: {bridge_url}}`,
//! `MODULES.md` §7.2): this engine is a worker of the remote one (`iii_client`), every
//! `stream::*` call goes there with the same input and its result comes back as it is, so the
//! shapes are the remote's (`{old_value, new_value}`, no result for a missing item, …). Custom
//! streams served by this engine's own workers stay local.
//!
//! Changes come back as the remote's own `stream` trigger fires: the bridge registers on the
//! remote a function `stream::bridge::on_event::<uuid>` and binds it to one remote `stream`
//! trigger per stream name this engine cares about (a local `stream` binding or a consumer
//! subscription names it; upstream's `stream` trigger needs a `stream_name`, so there is no
//! binding for all streams). Each remote change then reaches this engine once, whoever made it —
//! a worker of this engine, of the remote or of any other engine bridged to it — and the stream
//! actor hands it to its triggers and consumer sockets. A write made through this engine is
//! announced only from that event, never from its result, so nothing fires twice. (Upstream
//! listens on the remote's pubsub topic `stream.events`, which this engine does not publish.)
//!
//! The client reconnects with backoff and registers the function and the triggers again; the
//! remote's changes made while the link was down are not replayed. A call while the remote is
//! unreachable waits [`CONNECT_GRACE`] for the link, then fails with the operation's
//! `STREAM_*_ERROR` naming the remote; the remote's own errors keep their code.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use iii_client::{Client, ClientOptions, ConnectionState, Registration, TriggerRequest};
use serde_json::{json, Value};

use super::functions::Change;
use super::{Changed, StreamActor};
use crate::protocol::ErrorBody;

/// Deadline of a forwarded call.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for a link that is down before it fails.
pub const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// The link to the remote engine and the remote `stream` triggers it holds.
pub(super) struct Bridge {
    url: String,
    client: Option<Client>,
    /// `stream::bridge::on_event::<uuid>`: the remote calls it with each change.
    on_event: String,
    /// Stream name → how many local bindings and consumer subscriptions want it, and its
    /// remote trigger.
    interest: HashMap<String, (usize, Option<Registration>)>,
}

impl Bridge {
    pub(super) fn new(url: String) -> Bridge {
        Bridge {
            url,
            client: None,
            on_event: format!("stream::bridge::on_event::{}", uuid::Uuid::new_v4()),
            interest: HashMap::new(),
        }
    }

    /// Starts the client on the actor's arbiter and registers the event function.
    pub(super) fn connect(&mut self, actor: Addr<StreamActor>) {
        let mut options = ClientOptions::named("iii-stream-bridge");
        options.reconnect.initial = Duration::from_millis(200);
        options.reconnect.max = Duration::from_secs(5);
        let client = Client::start(&self.url, options);
        client.register_function(&self.on_event, move |event: Value| {
            // Sent before the handler returns: the changes keep the order they arrived in.
            match change_of(&event) {
                Some(change) => actor.do_send(Changed(change)),
                None => log::warn!("iii-stream: an unreadable change event was dropped: {event}"),
            }
            async { Ok(Value::Null) }
        });
        for (stream, (_, trigger)) in self.interest.iter_mut() {
            *trigger = Some(bind(&client, &self.on_event, stream));
        }
        log::info!(
            "iii-stream: calls go to the engine at {} (bridge adapter)",
            self.url
        );
        self.client = Some(client);
    }

    /// What a call needs to run on the remote.
    pub(super) fn link(&self) -> Option<Link> {
        Some(Link {
            client: self.client.clone()?,
            url: self.url.clone(),
        })
    }

    /// One more local binding or subscription wants `stream`'s changes.
    pub(super) fn want(&mut self, stream: &str) {
        let entry = self.interest.entry(stream.to_string()).or_default();
        entry.0 += 1;
        if entry.1.is_none() {
            if let Some(client) = &self.client {
                entry.1 = Some(bind(client, &self.on_event, stream));
            }
        }
    }

    /// One binding or subscription of `stream` is gone; the last one unbinds the remote trigger.
    pub(super) fn release(&mut self, stream: &str) {
        let Some(entry) = self.interest.get_mut(stream) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            if let Some((_, Some(trigger))) = self.interest.remove(stream) {
                trigger.unregister();
            }
        }
    }
}

fn bind(client: &Client, on_event: &str, stream: &str) -> Registration {
    client.register_trigger("stream", on_event, json!({ "stream_name": stream }))
}

/// A change the remote's `stream` trigger delivered (`PROTOCOL.md` §5.3).
fn change_of(event: &Value) -> Option<Change> {
    Some(Change {
        stream: event["streamName"].as_str()?.to_string(),
        group: event["groupId"].as_str()?.to_string(),
        id: event["id"].as_str().map(str::to_string),
        event: event.get("event").filter(|e| e.is_object())?.clone(),
    })
}

/// The code and message prefix of a failure of `function_id` (`PROTOCOL.md` §6.1).
fn failure(function_id: &str, why: impl std::fmt::Display) -> ErrorBody {
    let (code, prefix) = match function_id {
        "stream::set" => ("STREAM_SET_ERROR", "Failed to set value"),
        "stream::get" => ("STREAM_GET_ERROR", "Failed to get value"),
        "stream::delete" => ("STREAM_DELETE_ERROR", "Failed to delete value"),
        "stream::list" => ("STREAM_GET_GROUP_ERROR", "Failed to get group"),
        "stream::list_groups" => ("STREAM_LIST_GROUPS_ERROR", "Failed to list groups"),
        "stream::list_all" => ("STREAM_LIST_ALL_ERROR", "Failed to list streams"),
        "stream::update" => ("STREAM_UPDATE_ERROR", "Failed to update value"),
        _ => ("STREAM_SEND_ERROR", "Failed to send event"),
    };
    ErrorBody::new(code, format!("{prefix}: {why}"))
}

/// A handle on the remote engine for one call.
pub(super) struct Link {
    client: Client,
    url: String,
}

impl Link {
    /// Runs `function_id` on the remote with `input` (already checked here).
    pub(super) async fn exec(
        self,
        function_id: String,
        input: Value,
    ) -> Result<Option<Value>, ErrorBody> {
        let url = &self.url;
        if !matches!(self.client.state(), ConnectionState::Connected { .. }) {
            if let Err(why) = self.client.wait_connected(CONNECT_GRACE).await {
                return Err(failure(
                    &function_id,
                    format!("the engine at {url} is unreachable ({why})"),
                ));
            }
        }
        let req = TriggerRequest {
            function_id: function_id.clone(),
            payload: input,
            timeout: Some(TIMEOUT),
            metadata: None,
            action: None,
        };
        self.client.trigger_with(req).await.map_err(|e| match e.code.as_str() {
            "TIMEOUT" | "SHUTDOWN" | "connection_lost" => failure(
                &function_id,
                format!("through the engine at {url}: {}: {}", e.code, e.message),
            ),
            "function_not_found" => failure(
                &function_id,
                format!("the engine at {url} does not serve {function_id} (is iii-stream configured there?)"),
            ),
            _ => ErrorBody {
                code: e.code,
                message: e.message,
                stacktrace: e.stacktrace,
            },
        })
    }

    /// A consumer subscription's first `sync`: the item, or the group's values.
    pub(super) async fn sync(
        self,
        stream: &str,
        group: &str,
        item: Option<&str>,
    ) -> Result<Value, ErrorBody> {
        Ok(match item {
            Some(item) => {
                let input = json!({"stream_name": stream, "group_id": group, "item_id": item});
                let got = self.exec("stream::get".into(), input).await?;
                got.unwrap_or(Value::Null)
            }
            None => {
                let input = json!({"stream_name": stream, "group_id": group});
                let got = self.exec("stream::list".into(), input).await?;
                got.unwrap_or_else(|| json!([]))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_trigger_payloads_become_changes() {
        let event = json!({"type": "stream", "timestamp": 1, "streamName": "todo",
                           "groupId": "todos", "id": "t1",
                           "event": {"type": "create", "data": {"a": 1}}});
        let c = change_of(&event).unwrap();
        assert_eq!((c.stream.as_str(), c.group.as_str()), ("todo", "todos"));
        assert_eq!(c.id.as_deref(), Some("t1"));
        assert_eq!(c.event, json!({"type": "create", "data": {"a": 1}}));
        let sent = json!({"streamName": "s", "groupId": "g", "id": null,
                          "event": {"type": "event", "event": {"type": "ping", "data": 1}}});
        assert_eq!(change_of(&sent).unwrap().id, None);
        assert!(change_of(&json!({"streamName": "s", "event": {}})).is_none());
        assert!(change_of(&json!({"streamName": "s", "groupId": "g"})).is_none());
    }

    #[test]
    fn bridge_failures_carry_the_operations_code() {
        assert_eq!(failure("stream::set", "x").code, "STREAM_SET_ERROR");
        assert_eq!(failure("stream::list", "x").code, "STREAM_GET_GROUP_ERROR");
        let e = failure("stream::update", "down");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("STREAM_UPDATE_ERROR", "Failed to update value: down")
        );
    }
}
