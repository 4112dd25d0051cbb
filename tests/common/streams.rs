//! Helpers of the stream and store tests: the config with a file-backed stream module, a
//! connected client, a `stream::set` input.
#![allow(dead_code)]

use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

use super::EngineProc;

/// A trusted listener and a file-backed stream module in the engine's temp directory.
pub fn stream_config(extra_kv: &str) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n  \
         - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n      adapter:\n        \
         name: kv\n        config:\n          store_method: file_based\n          file_path: ./data/stream_store\n{extra_kv}"
    )
}

pub async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), ClientOptions::named(name))
        .await
        .expect("connect")
}

pub fn set(item: &str, data: Value) -> Value {
    json!({"stream_name": "todo", "group_id": "todos", "item_id": item, "data": data})
}
