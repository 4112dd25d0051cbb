//! The stream module's consumer side: what each consumer socket (port 3112) joined, the `sync`
//! it gets, the changes pushed to it, and slow consumers dropped. With the Redis or bridge
//! adapter the `sync` is read from there; with the bridge, a subscription also tells the bridge
//! (before its `sync` is read) which stream's changes the remote engine must report.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};

use super::fanout::BindingKind;
use super::functions::Change;
use super::socket::{self, ConsumerFrame};
use super::{Consumer, StreamActor, Subscription, CONSUMER_STALL_MS};
use crate::outbox::{Delivery, Outbox};
use crate::payload::Payload;
use crate::router::{now_ms, CallRequest};

pub(super) struct ConsumerConn {
    outbox: Outbox<ConsumerFrame>,
    context: Value,
    subs: BTreeMap<String, Subscription>,
}

impl StreamActor {
    pub(super) fn push_to_consumers(&mut self, change: &Change, payload: &Payload) {
        let frame: Arc<str> = Arc::from(payload.as_str());
        let mut dropped = Vec::new();
        for (conn_id, conn) in self.consumers.iter_mut() {
            let hits = conn
                .subs
                .values()
                .filter(|s| {
                    s.stream == change.stream
                        && s.group == change.group
                        && s.item
                            .as_ref()
                            .is_none_or(|i| Some(i) == change.id.as_ref())
                })
                .count();
            for _ in 0..hits {
                if !deliver(*conn_id, conn, ConsumerFrame::Text(frame.clone())) {
                    dropped.push(*conn_id);
                    break;
                }
            }
        }
        for conn in dropped {
            self.consumer_gone(conn);
        }
    }

    /// Sends to one consumer; a slow or gone one is dropped.
    pub(super) fn send_consumer(&mut self, conn_id: u64, frame: ConsumerFrame) {
        let Some(conn) = self.consumers.get_mut(&conn_id) else {
            return;
        };
        if !deliver(conn_id, conn, frame) {
            self.consumer_gone(conn_id);
        }
    }

    /// Consumers that stopped draining what is queued for them, found once a second.
    pub(super) fn check_stalled_consumers(&mut self) {
        let stalled: Vec<u64> = self
            .consumers
            .iter_mut()
            .filter_map(|(id, c)| {
                let ms = c.outbox.stalled_for()?;
                log::warn!(
                    "stream consumer {id}: slow consumer (nothing drained for {ms} ms); closing it"
                );
                c.outbox.force(ConsumerFrame::Close("slow consumer"));
                Some(*id)
            })
            .collect();
        for id in stalled {
            self.consumer_gone(id);
        }
    }

    pub(super) fn handle_consumer(&mut self, event: Consumer, ctx: &mut Context<Self>) {
        match event {
            Consumer::Connected {
                conn,
                frames,
                flow,
                context,
            } => {
                let hard_cap = socket::OUTBOUND_PAUSE * 4;
                let outbox = Outbox::new(frames, flow, CONSUMER_STALL_MS, hard_cap);
                self.consumers.insert(
                    conn,
                    ConsumerConn {
                        outbox,
                        context,
                        subs: BTreeMap::new(),
                    },
                );
            }
            Consumer::Join { conn, sub } => self.join(conn, sub, ctx),
            Consumer::Leave {
                conn,
                subscription_id,
                bytes,
            } => {
                let sub = self.consumers.get_mut(&conn).and_then(|c| {
                    c.outbox.flow().frame_done(bytes);
                    c.subs.remove(&subscription_id)
                });
                if let Some(sub) = sub {
                    self.unwant_sub(&sub);
                    self.run_leave(conn, &sub);
                }
            }
            Consumer::Gone { conn } => self.consumer_gone(conn),
        }
    }

    pub(super) fn consumer_gone(&mut self, conn: u64) {
        if let Some(c) = self.consumers.remove(&conn) {
            for sub in c.subs.values() {
                self.unwant_sub(sub);
                self.fire_kind(BindingKind::Leave, join_payload(sub, &c.context));
            }
        }
    }

    /// A subscription is gone (or never came to be): the bridge may stop asking for its
    /// stream's changes.
    fn unwant_sub(&mut self, sub: &Subscription) {
        if let Some(bridge) = &mut self.bridge {
            bridge.release(&sub.stream);
        }
    }

    pub(super) fn run_leave(&mut self, conn: u64, sub: &Subscription) {
        let context = self
            .consumers
            .get(&conn)
            .map(|c| c.context.clone())
            .unwrap_or(Value::Null);
        self.fire_kind(BindingKind::Leave, join_payload(sub, &context));
    }

    /// Runs every `stream:join` trigger in turn; any answer `{"unauthorized": true}` refuses.
    pub(super) fn join(&mut self, conn: u64, sub: Subscription, ctx: &mut Context<Self>) {
        let Some(c) = self.consumers.get(&conn) else {
            return;
        };
        let payload = join_payload(&sub, &c.context);
        // Asked before the sync is read, so no change falls between the two.
        if let Some(bridge) = &mut self.bridge {
            bridge.want(&sub.stream);
        }
        let mut hooks: Vec<String> = self
            .bindings
            .values()
            .filter(|b| b.kind == BindingKind::Join)
            .map(|b| b.function_id.clone())
            .collect();
        hooks.sort();
        let registry = self.registry.clone();
        let custom = custom_sync_call(&sub);
        let redis = self.redis.as_ref().map(|(_, conn)| conn.clone());
        let link = self.bridge.as_ref().and_then(super::bridge::Bridge::link);
        let (stream, group, item, conn_id) = (
            sub.stream.clone(),
            sub.group.clone(),
            sub.item.clone(),
            conn,
        );
        let verdict = async move {
            for function_id in hooks {
                let res = registry
                    .call(CallRequest::new(function_id, payload.clone()))
                    .await;
                if let Ok(Some(v)) = res {
                    if v.to_value().get("unauthorized") == Some(&Value::Bool(true)) {
                        return (false, None);
                    }
                }
            }
            // A custom stream's data is its worker's: ask it (no such function → the store,
            // Redis with the redis adapter, the remote engine with the bridge adapter).
            let (function_id, input) = custom;
            let data = match registry.call(CallRequest::new(function_id, input)).await {
                Err(e) if e.code == "function_not_found" => {
                    let read = match (redis, link) {
                        (Some(mut conn), _) => match &item {
                            Some(i) => super::redis::get(&mut conn, &stream, &group, i)
                                .await
                                .map(|v| v.unwrap_or(Value::Null)),
                            None => super::redis::list(&mut conn, &stream, &group).await,
                        },
                        (None, Some(link)) => link.sync(&stream, &group, item.as_deref()).await,
                        (None, None) => return (true, None),
                    };
                    Some(read.unwrap_or_else(|e| {
                        log::warn!("stream consumer {conn_id}: sync failed: {}", e.message);
                        Value::Null
                    }))
                }
                Ok(v) => Some(v.map(|v| v.to_value()).unwrap_or(Value::Null)),
                Err(e) => {
                    log::warn!(
                        "stream consumer {conn}: custom stream sync failed: {}",
                        e.message
                    );
                    Some(Value::Null)
                }
            };
            (true, data)
        };
        ctx.spawn(
            verdict
                .into_actor(self)
                .map(move |(authorized, data), act, _| {
                    act.finish_join(conn, sub, authorized, data)
                }),
        );
    }

    pub(super) fn finish_join(
        &mut self,
        conn: u64,
        sub: Subscription,
        authorized: bool,
        custom: Option<Value>,
    ) {
        let event = if !authorized {
            json!({"type": "unauthorized"})
        } else if let Some(data) = custom {
            json!({"type": "sync", "data": data})
        } else {
            match &sub.item {
                Some(item) => {
                    json!({"type": "sync", "data": self.store.get(&sub.stream, &sub.group, item)})
                }
                None => json!({"type": "sync", "data": self.store.list(&sub.stream, &sub.group)}),
            }
        };
        let frame = json!({"type": "stream", "timestamp": now_ms(), "streamName": sub.stream,
                           "groupId": sub.group, "id": sub.item, "event": event});
        let Some(c) = self.consumers.get_mut(&conn) else {
            return self.unwant_sub(&sub);
        };
        c.outbox.flow().call_finished();
        let replaced = match authorized {
            true => c.subs.insert(sub.id.clone(), sub),
            false => Some(sub),
        };
        if let Some(old) = replaced {
            self.unwant_sub(&old);
        }
        self.send_consumer(conn, ConsumerFrame::Text(Arc::from(frame.to_string())));
    }
}

/// The custom stream function that would serve a subscription's first `sync`, with its input:
/// `stream::get(<stream>)` for one item, `stream::list(<stream>)` for a group.
fn custom_sync_call(sub: &Subscription) -> (String, Payload) {
    match &sub.item {
        Some(item) => (
            format!("stream::get({})", sub.stream),
            Payload::from_value(
                &json!({"stream_name": sub.stream, "group_id": sub.group, "item_id": item}),
            ),
        ),
        None => (
            format!("stream::list({})", sub.stream),
            Payload::from_value(&json!({"stream_name": sub.stream, "group_id": sub.group})),
        ),
    }
}

/// Queues a frame for a consumer; false when the consumer must be dropped (it is told to close).
fn deliver(conn_id: u64, conn: &mut ConsumerConn, frame: ConsumerFrame) -> bool {
    let bytes = frame.wire_len();
    match conn.outbox.send(frame, bytes) {
        Delivery::Sent => true,
        Delivery::Closed => false,
        Delivery::Stalled { ms } => {
            log::warn!("stream consumer {conn_id}: slow consumer (nothing drained for {ms} ms); closing it");
            conn.outbox.force(ConsumerFrame::Close("slow consumer"));
            false
        }
        Delivery::Overflow { queued } => {
            log::warn!("stream consumer {conn_id}: slow consumer ({queued} bytes queued for it); closing it");
            conn.outbox.force(ConsumerFrame::Close("slow consumer"));
            false
        }
    }
}

fn join_payload(sub: &Subscription, context: &Value) -> Value {
    json!({"subscription_id": sub.id, "stream_name": sub.stream, "group_id": sub.group,
           "id": sub.item, "context": context})
}
