//! The published SDKs' telemetry (Node SDK 0.22.1 and Python SDK 0.25.0 send OpenTelemetry
//! to `/otel` by default): their handler spans nest under the engine's span of each call, and
//! their observability Logger's lines arrive, all queryable (`tests/sdk/node-telemetry-check.mjs`,
//! `tests/sdk/python/py_telemetry.py`).

mod common;

use common::sdk::{check_lines as checks, node_cmd, python_cmd, run_checks};
use common::{EngineProc, BASIC};

#[test]
fn node_sdk_spans_and_logs_are_queryable() {
    let engine = EngineProc::start(BASIC);
    let out = run_checks(
        node_cmd("node-telemetry-check.mjs"),
        "node-telemetry-check",
        &engine.url(0),
    );
    let checks = checks(&out);
    assert_eq!(checks.len(), 3, "{out}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{out}");
}

#[test]
fn python_sdk_spans_and_logs_are_queryable() {
    let engine = EngineProc::start(BASIC);
    let out = run_checks(
        python_cmd("py_telemetry.py"),
        "py_telemetry",
        &engine.url(0),
    );
    let checks = checks(&out);
    assert_eq!(checks.len(), 2, "{out}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{out}");
}
