//! The in-engine modules (`iii-state`, `iii-pubsub`, `iii-cron`, `engine::log::*`, custom
//! streams) driven by the published Node SDK 0.22.1, Python SDK 0.25.0 and Rust SDK 0.22.1
//! exactly as their users write it (`tests/sdk/`).

mod common;

use common::sdk::{node_cmd, python_cmd, run_checks};
use common::{repo_path, EngineProc, MODULES};
use serde_json::{json, Value};

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn node_sdk_uses_every_module() {
    let engine = EngineProc::start(MODULES);
    let out = run_checks(
        node_cmd("node-modules-check.mjs"),
        "node-modules-check",
        &engine.url(0),
    );
    let checks: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|v| v.get("check").is_some())
        .collect();
    assert_eq!(checks.len(), 34, "{out}");
    for c in &checks {
        assert_eq!(c["ok"], true, "{c}");
    }
    // engine::log::info went to the engine log with the caller's worker id and its fields.
    let log = engine.log();
    let line = log
        .lines()
        .find(|l| l.contains("order placed"))
        .unwrap_or_else(|| panic!("no worker log line:\n{log}"));
    assert!(line.contains("INFO") && line.contains("o-17"), "{line}");
    assert!(line.contains("worker"), "{line}");
}

#[test]
fn python_sdk_uses_every_module() {
    let engine = EngineProc::start(MODULES);
    let out = run_checks(python_cmd("py_modules.py"), "py_modules", &engine.url(0));
    let checks: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|v| v.get("check").is_some())
        .collect();
    assert_eq!(checks.len(), 7, "{out}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{out}");
    assert!(engine.log().contains("py low stock"), "{}", engine.log());
}

#[test]
fn rust_sdk_registers_calls_uses_state_and_gets_stream_events() {
    let bin = repo_path("target/sdk-rust/debug/iii-sdk-rust-check");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-test-deps (it builds tests/sdk/rust with the crates.io iii-sdk)",
        bin.display()
    );
    let engine = EngineProc::start(MODULES);
    let out = run_checks(
        std::process::Command::new(&bin),
        "iii-sdk-rust-check",
        &engine.url(0),
    );
    let got = lines(&out);
    let want = vec![
        json!({"double": {"doubled": 42}}),
        got.get(1).cloned().unwrap_or_default(),
        json!({"state_set": {"old_value": null, "new_value": {"count": 1}}}),
        json!({"state_get": {"count": 1}}),
        json!({"state_list": [{"count": 1}]}),
        json!({"state_delete": {"count": 1}}),
        json!({"state_missing": null}),
        got.get(7).cloned().unwrap_or_default(),
        json!({"stream_event": {"type": "stream", "streamName": "rust-stream", "groupId": "g", "event_type": "create"}}),
        json!({"done": true}),
    ];
    assert_eq!(got, want, "{out}");
    assert_eq!(
        got[1]["handler_error"]["error"]["code"], "invocation_failed",
        "{out}"
    );
    assert_eq!(
        got[7]["state_bad"]["error"]["code"], "deserialization_error",
        "{out}"
    );
}
