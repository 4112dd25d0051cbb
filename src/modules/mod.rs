//! Engine modules, one per config entry kind: `worker` (the `iii-worker-manager` listeners),
//! `stream` (`iii-stream`: the store, the `stream::*` functions and triggers, the consumer
//! socket) and `exec` (`iii-exec`: the worker processes the engine starts and supervises).
//! Each module's `start` does its fallible setup first and returns a handle the engine keeps to
//! stop it, or a [`ModuleError`] naming what failed.

pub mod exec;
pub mod stream;
pub mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;

use crate::modules::stream::store::StoreError;

/// Why a module could not start.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("static_dir {}: {reason}", .path.display())]
    StaticDir { path: PathBuf, reason: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// Resolves and binds `host:port`; errors name the address. Returns the socket and the address
/// it is bound to (the real port when the config said 0).
pub(crate) fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), ModuleError> {
    let resolve = |reason: String| ModuleError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))?;
    let listen = |source: io::Error| ModuleError::Listen {
        addr: resolved.to_string(),
        source,
    };
    let socket = TcpListener::bind(resolved).map_err(listen)?;
    let local = socket.local_addr().map_err(listen)?;
    Ok((socket, local))
}
