//! End-to-end tests with the published SDKs: npm `iii-sdk@0.22.1` and PyPI `iii-sdk==0.25.0`
//! (installed by `scripts/setup-test-deps`), talking to the real engine. A Node worker serves
//! `math::add`, `math::fail` and `node::echo`; a second Node process calls them; a Python worker
//! serves `py::echo`; Node calls Python and Python calls Node. The scripts live in `tests/sdk/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{repo_path, EngineProc, BASIC};

/// A worker process started from `tests/sdk`, stopped with SIGTERM when dropped.
struct SdkProc {
    child: Child,
    name: String,
}

impl Drop for SdkProc {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("{} did not stop on SIGTERM", self.name);
    }
}

fn sdk_dir() -> PathBuf {
    repo_path("tests/sdk")
}

fn node_cmd(script: &str) -> Command {
    let sdk = sdk_dir().join("node_modules/iii-sdk/package.json");
    assert!(
        sdk.exists(),
        "npm iii-sdk is not installed in tests/sdk: run scripts/setup-test-deps (it runs npm ci)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(sdk_dir()).arg(script);
    cmd
}

fn python_cmd(script: &str) -> Command {
    let py = repo_path("target/sdk-venv/bin/python");
    assert!(
        py.exists(),
        "the Python SDK venv is missing (target/sdk-venv): run scripts/setup-test-deps"
    );
    let mut cmd = Command::new(py);
    cmd.current_dir(sdk_dir().join("python")).arg(script);
    cmd
}

/// Starts a worker script and waits for its `{"ready":true}` line.
fn start_worker(mut cmd: Command, name: &str, url: &str) -> SdkProc {
    let mut child = cmd
        .env("III_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {name} ({e}); is node/python installed? run scripts/setup-test-deps"
            )
        });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = SdkProc {
        child,
        name: name.to_string(),
    };
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("\"ready\"") => return proc,
            Ok(_) => continue,
            Err(_) => panic!("{name} did not become ready within 30 s"),
        }
    }
}

/// Runs a checking script to completion; it prints one JSON line per check.
fn run_checks(mut cmd: Command, name: &str, url: &str) -> String {
    let out = cmd
        .env("III_URL", url)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}",
        out.status
    );
    stdout
}

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
