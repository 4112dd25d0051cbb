//! Engine modules, one per config entry kind: `worker` (the `iii-worker-manager` listeners),
//! `stream` (`iii-stream`: the store, the `stream::*` functions and triggers, the consumer
//! socket) and `exec` (`iii-exec`: the worker processes the engine starts and supervises). Each module's `start` does its fallible setup first and returns a handle the engine
//! keeps to stop it.

pub mod exec;
pub mod stream;
pub mod worker;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

/// Resolves and binds `host:port`; errors name the address. Returns the socket and the address
/// it is bound to (the real port when the config said 0).
pub(crate) fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), String> {
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {addr}"))?;
    let socket =
        TcpListener::bind(resolved).map_err(|e| format!("cannot listen on {resolved}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    Ok((socket, local))
}
