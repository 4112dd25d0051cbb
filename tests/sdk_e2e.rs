//! End-to-end tests with the published SDKs: npm `iii-sdk@0.22.1` and PyPI `iii-sdk==0.25.0`
//! (installed by `scripts/setup-test-deps`), talking to the real engine. A Node worker serves
//! `math::add`, `math::fail` and `node::echo`; a second Node process calls them; a Python worker
//! serves `py::echo`; Node calls Python and Python calls Node; a Node user bursts 2,000 calls.
//! The scripts live in `tests/sdk/`.

mod common;

use common::sdk::{node_cmd, python_cmd, run_checks, start_worker};
use common::{EngineProc, BASIC};

#[test]
fn node_sdk_worker_and_caller() {
    let engine = EngineProc::start(BASIC);
    let url = engine.url(0);
    let _worker = start_worker(node_cmd("node-math-worker.mjs"), "node-math-worker", &url);
    let out = run_checks(node_cmd("node-math-caller.mjs"), "node-math-caller", &url);
    for check in ["math::add", "math::fail", "missing function"] {
        assert!(
            out.contains(&format!(r#""check":"{check}","ok":true"#)),
            "{check}:\n{out}"
        );
    }
}

#[test]
fn python_and_node_call_each_other() {
    let engine = EngineProc::start(BASIC);
    let url = engine.url(0);
    let _node = start_worker(node_cmd("node-math-worker.mjs"), "node-math-worker", &url);
    let _py = start_worker(python_cmd("py_worker.py"), "py_worker", &url);
    let out = run_checks(node_cmd("node-call-python.mjs"), "node-call-python", &url);
    assert!(out.contains(r#""check":"py::echo","ok":true"#), "{out}");
    let out = run_checks(python_cmd("py_caller.py"), "py_caller", &url);
    for check in ["node::echo", "math::fail", "missing function"] {
        assert!(
            out.contains(&format!(r#""check": "{check}", "ok": true"#)),
            "{check}:\n{out}"
        );
    }
}

/// A busy Node SDK user: 2,000 concurrent `stream::set` calls and 50 trigger registrations
/// during them; nothing is refused or lost.
#[test]
fn node_sdk_burst_is_never_refused() {
    let engine = EngineProc::start(&format!(
        "{BASIC}  - name: iii-stream\n    config: {{host: 127.0.0.1, port: 0}}\n"
    ));
    let out = run_checks(node_cmd("node-burst.mjs"), "node-burst", &engine.url(0));
    for check in [
        "2000 concurrent sets",
        "all items stored",
        "triggers registered during the burst all fire",
    ] {
        assert!(
            out.contains(&format!(r#""check":"{check}","ok":true"#)),
            "{check}:\n{out}"
        );
    }
}
