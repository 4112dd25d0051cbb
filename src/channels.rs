//! Channels (`MODULES.md` §8): one-way pipes of ordered items (text messages and binary
//! chunks) between two parties that each attach once — a worker socket on
//! `/ws/channels/{id}?key=…&dir=read|write` of any worker listener, or the engine itself (the
//! HTTP module reads a response channel and writes a request-body channel).
//!
//! A channel is a bounded queue of `buffer_size` items (default 64, at most 1024). Items a
//! writer socket sent that do not fit wait in order, counted like any frame the engine holds;
//! past the listener's queued-frame limits the socket is not read (TCP backpressure); a reader socket
//! gets the next item only once it took the previous one off the socket actor (a reader that
//! does not read fills the queue, which then stops the writer). When the writer is gone the
//! reader gets everything queued, then a Close frame.
//!
//! [`Channels`] is the table of channels not yet attached on both sides: an entry leaves it as
//! soon as both sides are attached (upstream keeps it forever), when the HTTP exchange that made
//! it ends, or — with a side never attached — after [`ABANDONED_AFTER`] (swept every minute);
//! dropping an entry ends the side that is attached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::flow::Flow;
use crate::socket::{close, Ctx, Protocol};

/// Items a channel holds when `buffer_size` is not given.
pub const DEFAULT_BUFFER: usize = 64;
/// The largest `buffer_size`.
pub const MAX_BUFFER: usize = 1024;
/// A channel with a side still unattached this long after creation is removed.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(300);

/// How long a reader socket waits for the peer's Close after sending its own.
const READER_CLOSE_WAIT: Duration = Duration::from_secs(30);

/// One item: a text message or a chunk of bytes, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text(String),
    Binary(Bytes),
}

impl Item {
    /// Its payload size.
    pub fn len(&self) -> usize {
        match self {
            Item::Text(t) => t.len(),
            Item::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which end of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Read,
    Write,
}

impl Side {
    pub fn parse(dir: &str) -> Option<Side> {
        match dir {
            "read" => Some(Side::Read),
            "write" => Some(Side::Write),
            _ => None,
        }
    }
}

/// An attached end.
#[derive(Debug)]
pub enum End {
    Writer(mpsc::Sender<Item>),
    Reader(mpsc::Receiver<Item>),
}

/// Why an end cannot be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// No such channel, or the wrong key.
    NotFound,
    /// That end is already attached.
    Taken,
}

struct Entry {
    key: Uuid,
    created: Instant,
    writer: Option<mpsc::Sender<Item>>,
    reader: Option<mpsc::Receiver<Item>>,
}

/// The channels not yet attached on both sides. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Channels {
    table: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

/// A channel's id and key as the SDKs pass them around.
pub fn channel_ref(id: Uuid, key: Uuid, side: Side) -> Value {
    let direction = match side {
        Side::Read => "read",
        Side::Write => "write",
    };
    json!({"channel_id": id.to_string(), "access_key": key.to_string(), "direction": direction})
}

impl Channels {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new channel holding up to `buffer_size` items (clamped to 1..=1024): `(id, key)`.
    pub fn create(&self, buffer_size: usize) -> (Uuid, Uuid) {
        let (tx, rx) = mpsc::channel(buffer_size.clamp(1, MAX_BUFFER));
        self.insert(Some(tx), Some(rx))
    }

    /// A new channel whose writing end the engine itself holds: `(id, key, writer)`.
    pub fn create_writing(&self, buffer_size: usize) -> (Uuid, Uuid, mpsc::Sender<Item>) {
        let (tx, rx) = mpsc::channel(buffer_size.clamp(1, MAX_BUFFER));
        let (id, key) = self.insert(None, Some(rx));
        (id, key, tx)
    }

    /// A new channel whose reading end the engine itself holds: `(id, key, reader)`.
    pub fn create_reading(&self, buffer_size: usize) -> (Uuid, Uuid, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(buffer_size.clamp(1, MAX_BUFFER));
        let (id, key) = self.insert(Some(tx), None);
        (id, key, rx)
    }

    fn insert(
        &self,
        writer: Option<mpsc::Sender<Item>>,
        reader: Option<mpsc::Receiver<Item>>,
    ) -> (Uuid, Uuid) {
        let (id, key) = (Uuid::new_v4(), Uuid::new_v4());
        let entry = Entry {
            key,
            created: Instant::now(),
            writer,
            reader,
        };
        self.table().insert(id, entry);
        (id, key)
    }

    /// Attaches one end; the entry leaves the table once both ends are attached.
    pub fn attach(&self, id: Uuid, key: &str, side: Side) -> Result<End, AttachError> {
        let mut table = self.table();
        let entry = table.get_mut(&id).ok_or(AttachError::NotFound)?;
        if Uuid::parse_str(key).ok() != Some(entry.key) {
            return Err(AttachError::NotFound);
        }
        let end = match side {
            Side::Write => entry.writer.take().map(End::Writer),
            Side::Read => entry.reader.take().map(End::Reader),
        }
        .ok_or(AttachError::Taken)?;
        if entry.writer.is_none() && entry.reader.is_none() {
            table.remove(&id);
        }
        Ok(end)
    }

    /// Has the writing end been attached (or the channel ended)?
    pub fn writer_attached(&self, id: Uuid) -> bool {
        self.table().get(&id).is_none_or(|e| e.writer.is_none())
    }

    /// Forgets a channel: its unattached ends are dropped, which ends the attached one.
    pub fn remove(&self, id: Uuid) {
        self.table().remove(&id);
    }

    /// Removes channels with an end still unattached after `age`; returns how many.
    pub fn sweep(&self, age: Duration) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|_, e| e.created.elapsed() < age);
        before - table.len()
    }

    /// Channels waiting for an end.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a channel socket's pump hands the socket actor.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ChannelOut {
    Item(Item),
    /// The writer is gone and everything was sent: close.
    End,
}

/// The protocol of a `/ws/channels/{id}` socket: the end it attached (`None`: the end was
/// already taken, and the socket closes at once).
pub struct ChannelSession {
    pub id: Uuid,
    pub end: Option<End>,
    /// A writer's items go through this to a task that puts them in the channel in order; the
    /// socket is not read while more than one waits there. Closing the socket lets the task
    /// finish what was written before the close.
    forward: Option<mpsc::UnboundedSender<Item>>,
}

impl ChannelSession {
    pub fn new(id: Uuid, end: Option<End>) -> ChannelSession {
        ChannelSession {
            id,
            end,
            forward: None,
        }
    }

    fn push(&mut self, item: Item, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        let Some(forward) = &self.forward else {
            return; // a reader's messages are read (pings, close) and otherwise ignored
        };
        flow.frame_in(item.len());
        if let Err(mpsc::error::SendError(item)) = forward.send(item) {
            flow.frame_done(item.len());
            self.forward = None;
            close(ctx, ws::CloseCode::Normal, "the reader is gone");
        }
    }
}

/// Moves a writer socket's items into the channel in order. Items waiting here are counted
/// in the socket's flow like any frame the engine holds, so past the listener's
/// `max_queued_frames` / `max_queued_bytes` the socket is not read until the reader catches up.
/// (That slack matters: the Node SDK's ChannelWriter drops its connection right after
/// `end()`, and what the engine has not read by then never arrives.)
fn start_forwarding(tx: mpsc::Sender<Item>, flow: Arc<Flow>) -> mpsc::UnboundedSender<Item> {
    let (fwd, mut rx) = mpsc::unbounded_channel::<Item>();
    actix::spawn(async move {
        while let Some(item) = rx.recv().await {
            let bytes = item.len();
            let sent = tx.send(item).await.is_ok();
            flow.frame_done(bytes);
            if !sent {
                break; // the reader is gone; the socket notices on its next item
            }
        }
        // Whatever is left is never sent: release its count.
        while let Ok(item) = rx.try_recv() {
            flow.frame_done(item.len());
        }
    });
    fwd
}

impl Protocol for ChannelSession {
    type Out = ChannelOut;

    fn label(&self) -> String {
        format!("channel {}", self.id)
    }

    fn started(&mut self, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        match self.end.take() {
            None => close(ctx, ws::CloseCode::Policy, "this end is already attached"),
            Some(End::Reader(mut rx)) => {
                let addr = ctx.address();
                actix::spawn(async move {
                    while let Some(item) = rx.recv().await {
                        if addr.send(ChannelOut::Item(item)).await.is_err() {
                            return;
                        }
                    }
                    addr.do_send(ChannelOut::End);
                });
            }
            Some(End::Writer(tx)) => self.forward = Some(start_forwarding(tx, flow.clone())),
        }
    }

    fn stopped(&mut self, _flow: &Arc<Flow>) {
        self.forward = None;
    }

    fn text(&mut self, text: &str, _backing: &Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        self.push(Item::Text(text.to_string()), flow, ctx);
    }

    fn binary(&mut self, data: Bytes, flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        self.push(Item::Binary(data), flow, ctx);
    }

    fn out_len(_msg: &ChannelOut) -> usize {
        0
    }

    fn outbound(&mut self, msg: ChannelOut, _flow: &Arc<Flow>, ctx: &mut Ctx<Self>) {
        match msg {
            ChannelOut::Item(Item::Text(t)) => ctx.text(t),
            ChannelOut::Item(Item::Binary(b)) => ctx.binary(b),
            ChannelOut::End => {
                // Wait for the peer's Close (it comes after everything sent was read): closing
                // the connection earlier could reset it and lose data still in flight.
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.run_later(READER_CLOSE_WAIT, |_, ctx| ctx.stop());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_end_attaches_once_and_the_entry_goes_with_the_second() {
        let c = Channels::default();
        let (id, key) = c.create(4);
        assert_eq!(
            c.attach(id, "wrong", Side::Read).unwrap_err(),
            AttachError::NotFound
        );
        assert!(matches!(
            c.attach(id, &key.to_string(), Side::Read),
            Ok(End::Reader(_))
        ));
        assert_eq!(
            c.attach(id, &key.to_string(), Side::Read).unwrap_err(),
            AttachError::Taken
        );
        assert!(!c.writer_attached(id));
        assert!(matches!(
            c.attach(id, &key.to_string(), Side::Write),
            Ok(End::Writer(_))
        ));
        assert!(c.is_empty(), "attached on both sides: nothing left to keep");
        assert!(c.writer_attached(id));
    }

    #[test]
    fn abandoned_channels_are_swept_and_their_reader_ends() {
        let c = Channels::default();
        let (id, key) = c.create(0);
        let Ok(End::Reader(mut rx)) = c.attach(id, &key.to_string(), Side::Read) else {
            panic!("reader")
        };
        assert_eq!(c.sweep(Duration::from_secs(60)), 0);
        assert_eq!(c.sweep(Duration::ZERO), 1);
        assert!(rx.try_recv().is_err());
        assert!(
            rx.blocking_recv().is_none(),
            "the writer is gone: end of stream"
        );
    }

    #[test]
    fn buffer_sizes_are_clamped() {
        let c = Channels::default();
        let (id, key) = c.create(5000);
        let Ok(End::Writer(tx)) = c.attach(id, &key.to_string(), Side::Write) else {
            panic!("writer")
        };
        assert_eq!(tx.max_capacity(), MAX_BUFFER);
    }
}
