//! Running the published-SDK scripts of `tests/sdk/` (Node and Python) against an engine.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::repo_path;

impl SdkProc {
    /// Every line printed within `within` of the last one, until quiet.
    pub fn drain(&self, within: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(within) {
            out.push(line);
        }
        out
    }
}

/// A worker process started from `tests/sdk`, stopped with SIGTERM when dropped.
pub struct SdkProc {
    child: Child,
    name: String,
    /// Lines the process printed after it became ready.
    pub lines: mpsc::Receiver<String>,
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

pub fn sdk_dir() -> PathBuf {
    repo_path("tests/sdk")
}

pub fn node_cmd(script: &str) -> Command {
    let sdk = sdk_dir().join("node_modules/iii-sdk/package.json");
    assert!(
        sdk.exists(),
        "npm iii-sdk is not installed in tests/sdk: run scripts/setup-test-deps (it runs npm ci)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(sdk_dir()).arg(script);
    cmd
}

pub fn python_cmd(script: &str) -> Command {
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
pub fn start_worker(mut cmd: Command, name: &str, url: &str) -> SdkProc {
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
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("\"ready\"") => break,
            Ok(_) => continue,
            Err(_) => panic!("{name} did not become ready within 30 s"),
        }
    }
    SdkProc {
        child,
        name: name.to_string(),
        lines: rx,
    }
}

/// Runs a checking script to completion; it prints one JSON line per check.
pub fn run_checks(mut cmd: Command, name: &str, url: &str) -> String {
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

/// The `{"check": …}` lines a checking script printed.
pub fn check_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("check").is_some())
        .collect()
}
