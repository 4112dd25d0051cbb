//! Engine modules, one per config entry kind: `worker` (the `iii-worker-manager` listeners).
//! Each module's `start` does its fallible setup and returns a handle the engine keeps to stop it.

pub mod worker;
