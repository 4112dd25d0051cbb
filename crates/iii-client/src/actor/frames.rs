//! The socket's frames as the client reads them: pings and the heartbeat that drops a silent
//! connection, close frames, and fragmented messages put back together.

use super::*;

impl ClientActor {
    pub(super) fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.sink.is_none() {
            return;
        }
        if self.last_inbound.elapsed() > self.opts.heartbeat * 3 {
            self.on_lost("no frame from the engine for 3 heartbeats".into(), ctx);
            return;
        }
        if let Some(sink) = self.sink.as_mut() {
            let _ = sink.write(ws::Message::Ping(bytes::Bytes::new()));
        }
    }

    pub(super) fn on_frame(&mut self, frame: ws::Frame, ctx: &mut Context<Self>) {
        self.last_inbound = Instant::now();
        let text = match frame {
            ws::Frame::Text(b) | ws::Frame::Binary(b) => b,
            ws::Frame::Continuation(item) => match self.reassemble(item) {
                Some(b) => b.freeze(),
                None => return,
            },
            ws::Frame::Ping(p) => {
                if let Some(sink) = self.sink.as_mut() {
                    let _ = sink.write(ws::Message::Pong(p));
                }
                return;
            }
            ws::Frame::Pong(_) => return,
            ws::Frame::Close(reason) => {
                self.on_lost(format!("closed by the engine: {reason:?}"), ctx);
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            log::warn!("client {}: non-UTF-8 frame ignored", self.opts.name);
            return;
        };
        match protocol::decode(text.trim()) {
            Ok(Decoded::Message(m)) => self.on_message(m, ctx),
            Ok(Decoded::Ignored(_)) => {}
            Err(e) => log::warn!(
                "client {}: undecodable frame from the engine: {}",
                self.opts.name,
                e.message
            ),
        }
    }

    pub(super) fn reassemble(&mut self, item: Item) -> Option<BytesMut> {
        match item {
            Item::FirstText(b) | Item::FirstBinary(b) => {
                self.partial = Some(BytesMut::from(&b[..]));
                None
            }
            Item::Continue(b) => {
                if let Some(p) = self.partial.as_mut() {
                    p.extend_from_slice(&b);
                }
                None
            }
            Item::Last(b) => {
                let mut p = self.partial.take()?;
                p.extend_from_slice(&b);
                Some(p)
            }
        }
    }
}
