//! The pages in a real browser: runs the Node browser suite (`tests/browser/`, node:test and
//! playwright-core driving Debian's headless Chromium) against this build's `iii` binary, so
//! `cargo test` covers the todo page, its WebSocket client, the JS todo worker, the console page
//! and the engine together, and the todo page on two engines whose streams share one Redis (a
//! change made in a tab of one engine shows live in a tab of the other).
//!
//! The suite starts the engines itself (free ports, temporary directories, and a `redis-server` of
//! its own for the two engines) and saves screenshots in `test-artifacts/browser/`. Its output
//! goes straight to the terminal. Needs Node.js, the npm packages of `tests/browser` and
//! `worker`, `/usr/bin/chromium` and `redis-server`: `scripts/setup-test-deps`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Far more than the suite needs (about 30 s); only there so a hang cannot block `cargo test`.
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn todo_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, what) in [
        (
            "tests/browser/node_modules/playwright-core",
            "npm playwright-core",
        ),
        (
            "worker/node_modules/iii-sdk",
            "npm iii-sdk for the todo worker",
        ),
    ] {
        assert!(
            root.join(path).exists(),
            "{what} is missing ({path}): run scripts/setup-test-deps"
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/setup-test-deps"
    );

    // In a process group of its own, so a timeout can stop the runner and the engine it started.
    let mut child = Command::new("node")
        .args(["--test", "tests/browser/"])
        .current_dir(root)
        .env("III_BIN", env!("CARGO_BIN_EXE_iii"))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cannot run `node` (install Node.js 20 or newer)");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            // SAFETY: plain kill(2) on the group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("the browser suite did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the browser suite failed ({status}); its output is above"
    );
}
