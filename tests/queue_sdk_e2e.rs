//! Durable queues (`iii-queue`) driven by the published Node SDK 0.22.1 and Python SDK 0.25.0
//! exactly as their users write it (`tests/sdk/node-queue-check.mjs`,
//! `tests/sdk/python/py_queue.py`): the enqueue action, subscribers, retries, dead letters,
//! FIFO, concurrency.

mod common;

use common::sdk::{check_lines as checks, node_cmd, python_cmd, run_checks};
use common::EngineProc;

const QUEUES: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-queue
    config:
      adapter: {name: builtin, config: {store_method: file_based, file_path: ./data/queue}}
      queue_configs:
        jobs: {concurrency: 2, max_retries: 1, backoff_ms: 50}
        orders: {type: fifo, message_group_field: customer, concurrency: 4, max_retries: 3, backoff_ms: 50}
";

#[test]
fn node_sdk_enqueues_subscribes_retries_and_keeps_fifo_order() {
    let engine = EngineProc::start(QUEUES);
    let out = run_checks(
        node_cmd("node-queue-check.mjs"),
        "node-queue-check",
        &engine.url(0),
    );
    let checks = checks(&out);
    assert_eq!(checks.len(), 8, "{out}");
    for c in &checks {
        assert_eq!(c["ok"], true, "{c}");
    }
}

#[test]
fn python_sdk_enqueues_subscribes_retries_and_keeps_fifo_order() {
    let engine = EngineProc::start(QUEUES);
    let out = run_checks(python_cmd("py_queue.py"), "py_queue", &engine.url(0));
    let checks = checks(&out);
    assert_eq!(checks.len(), 5, "{out}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{out}");
}
