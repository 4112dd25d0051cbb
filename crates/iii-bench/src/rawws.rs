//! A lean idle worker connection for the `connections` and `startup` scenarios: an awc
//! WebSocket that waits for the engine's `workerregistered` welcome, then only answers pings
//! until told to close. One small task per connection instead of a full client actor, so ten
//! thousand of them stay cheap on the bench side.

use std::time::Duration;

use actix_codec::Framed;
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;

pub type Socket = Framed<awc::BoxedSocket, ws::Codec>;

/// An awc client with no connection-count limit (awc caps it at 100 by default).
pub fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(0).timeout(timeout))
        .timeout(timeout)
        .finish()
}

/// Opens a socket and waits for `workerregistered` (answering pings meanwhile).
pub async fn connect_welcomed(
    client: &awc::Client,
    url: &str,
    within: Duration,
) -> Result<Socket, String> {
    let attempt = async {
        let (_resp, mut framed) = client
            .ws(url)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        loop {
            match framed.next().await {
                Some(Ok(ws::Frame::Text(b))) => {
                    if is_welcome(&b) {
                        return Ok(framed);
                    }
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = framed.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(ws::Frame::Close(r))) => {
                    return Err(format!("closed before the welcome: {r:?}"))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("protocol error: {e}")),
                None => return Err("closed before the welcome".into()),
            }
        }
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no welcome within {within:?}")),
    }
}

/// `{"type":"workerregistered",...}` (parsed, not pattern-matched, so spacing does not matter).
fn is_welcome(frame: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(frame)
        .map(|v| v["type"] == "workerregistered")
        .unwrap_or(false)
}

/// How an idle connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// We closed it when asked.
    Stopped,
    /// The engine closed it or it broke.
    Dropped,
}

/// Keeps a socket idle: answers WebSocket and protocol pings, closes when `stop` turns true.
pub async fn hold(mut socket: Socket, mut stop: watch::Receiver<bool>) -> Ended {
    loop {
        if *stop.borrow() {
            let _ = socket.send(ws::Message::Close(None)).await;
            return Ended::Stopped;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = socket.send(ws::Message::Close(None)).await;
                    return Ended::Stopped;
                }
            }
            frame = socket.next() => match frame {
                Some(Ok(ws::Frame::Ping(p))) => {
                    if socket.send(ws::Message::Pong(p)).await.is_err() {
                        return Ended::Dropped;
                    }
                }
                Some(Ok(ws::Frame::Text(b))) => {
                    let is_ping = serde_json::from_slice::<serde_json::Value>(&b)
                        .map(|v| v["type"] == "ping")
                        .unwrap_or(false);
                    if is_ping
                        && socket
                            .send(ws::Message::Text(r#"{"type":"pong"}"#.into()))
                            .await
                            .is_err()
                    {
                        return Ended::Dropped;
                    }
                }
                Some(Ok(ws::Frame::Close(_))) | Some(Err(_)) | None => return Ended::Dropped,
                Some(Ok(_)) => {}
            }
        }
    }
}
