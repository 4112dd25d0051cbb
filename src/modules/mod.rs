//! Engine modules, one per config entry kind: `worker` (the `iii-worker-manager` listeners),
//! `stream` (`iii-stream`: the store, the `stream::*` functions and triggers, the consumer
//! socket) and `exec` (`iii-exec`: the worker processes the engine starts and supervises). Each module's `start` does its fallible setup first and returns a handle the engine
//! keeps to stop it.

pub mod exec;
pub mod stream;
pub mod worker;
