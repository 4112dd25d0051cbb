//! End-to-end tests of the exec module: a configured command that connects back as a worker
//! through `III_URL`, restart after a kill, no child left after the engine's SIGTERM or
//! SIGKILL (checked by pid), clear reports for commands that cannot start, backoff in a crash
//! loop, setup steps, and output relayed to the engine log.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, repo_path, EngineProc};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const LISTENER: &str =
    "workers:\n  - name: iii-worker-manager\n    config: {host: 127.0.0.1, port: 0}\n";

fn with_exec(exec_yaml: &str) -> String {
    format!("{LISTENER}  - name: iii-exec\n    config:\n{exec_yaml}")
}

/// The Node worker of tests/sdk, started by the engine.
fn node_worker_config() -> String {
    assert!(
        repo_path("tests/sdk/node_modules/iii-sdk").exists(),
        "tests/sdk dependencies are missing: run scripts/setup-test-deps"
    );
    let cwd = repo_path("tests/sdk");
    with_exec(&format!(
        "      stop_grace_ms: 2000\n      exec:\n        - command: node node-math-worker.mjs\n          name: math\n          cwd: {}\n",
        cwd.display()
    ))
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits until `math::add` answers, then returns the pid the worker reported.
async fn worker_pid(c: &Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(v) = c.trigger("math::add", json!({"a": 1, "b": 2})).await {
            assert_eq!(v["sum"], 3);
            let workers = c.trigger("engine::workers::list", json!({})).await.unwrap();
            let pid = workers["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == "sdk-test-node-math-worker")
                .and_then(|w| w["pid"].as_i64());
            if let Some(pid) = pid {
                return pid as i32;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the exec'd worker never came up");
}

async fn client(engine: &EngineProc) -> Client {
    let mut o = ClientOptions::named("observer");
    o.reconnect.initial = Duration::from_millis(100);
    Client::connect(&engine.url(0), o).await.unwrap()
}

#[actix::test]
async fn exec_worker_connects_and_comes_back_after_a_kill() {
    let engine = EngineProc::start(&node_worker_config());
    let c = client(&engine).await;
    let first = worker_pid(&c).await;
    assert!(
        engine.log().contains("[math] ") || engine.log().contains("[math!] "),
        "output is relayed"
    );
    unsafe { libc::kill(first, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = worker_pid(&c).await;
        if pid != first {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        engine.log().contains("math: restarting in 1s"),
        "{}",
        engine.log()
    );
}

#[actix::test]
async fn sigterm_stops_every_child_before_the_engine_exits() {
    let mut engine = EngineProc::start(&node_worker_config());
    let c = client(&engine).await;
    let pid = worker_pid(&c).await;
    c.shutdown().await;
    let code = tokio::task::spawn_blocking(move || {
        let code = engine.terminate();
        (code, engine)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert!(
        !alive(pid),
        "worker {pid} outlived the engine\n{}",
        code.1.log()
    );
    assert!(code.1.log().contains("math: stopped"), "{}", code.1.log());
}

#[actix::test]
async fn sigkill_of_the_engine_leaves_no_child() {
    let mut engine = EngineProc::start(&node_worker_config());
    let c = client(&engine).await;
    let pid = worker_pid(&c).await;
    c.shutdown().await;
    engine.kill();
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)).await,
        "worker {pid} outlived a killed engine"
    );
}

#[actix::test]
async fn commands_that_cannot_start_are_reported_and_the_engine_serves_on() {
    let engine = EngineProc::start(&with_exec(
        "      exec:\n        - command: definitely-not-a-program-iii --flag\n          restart: never\n  \
         - name: iii-exec\n    config:\n      exec:\n        - command: \"true\"\n          cwd: no/such/dir\n",
    ));
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = engine.log();
            log.contains("definitely-not-a-program-iii --flag")
                && log.contains("command not found")
                && log.contains("cannot start `true` in no/such/dir")
        })
        .await,
        "{}",
        engine.log()
    );
    let c = client(&engine).await;
    let v: Value = c.trigger("engine::workers::list", json!({})).await.unwrap();
    assert!(v["workers"].is_array());
}

#[actix::test]
async fn crash_loop_backs_off_instead_of_spinning() {
    let engine = EngineProc::start(&with_exec("      exec:\n        - echo boom; exit 3\n"));
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let log = engine.log();
    let starts = log.matches("started `echo boom; exit 3`").count();
    assert!(
        (2..=4).contains(&starts),
        "{starts} starts in 3.6 s:\n{log}"
    );
    assert!(log.contains("exited (exit status 3)"), "{log}");
    assert!(
        log.contains("restarting in 1s") && log.contains("restarting in 2s"),
        "{log}"
    );
    assert!(
        log.contains("] boom"),
        "output relayed with the command's name:\n{log}"
    );
}

#[actix::test]
async fn setup_steps_run_first_and_children_get_iii_url_and_env() {
    let engine = EngineProc::start(&with_exec(
        "      exec:\n        - echo prepared > marker.txt\n        - command: echo url=$III_URL x=$X; sleep 30\n          name: main\n          env: {X: \"42\"}\n",
    ));
    let url = engine.url(0);
    assert!(
        eventually(Duration::from_secs(5), || engine
            .log()
            .contains(&format!("[main] url={url} x=42")))
        .await,
        "{}",
        engine.log()
    );
    assert_eq!(
        std::fs::read_to_string(engine.path().join("marker.txt"))
            .unwrap()
            .trim(),
        "prepared"
    );
}

/// A command whose real work runs in a grandchild that watches nothing: only the engine's own
/// measures (process group signals, parent-death signal, guardian) can stop it.
fn grandchild_config() -> String {
    with_exec("      stop_grace_ms: 1000\n      exec:\n        - command: sleep 300 & echo child=$!; wait\n          name: deep\n")
}

async fn grandchild_pid(engine: &EngineProc) -> i32 {
    let mut pid = None;
    eventually(Duration::from_secs(5), || {
        pid = engine.log().lines().find_map(|l| {
            l.split("[deep] child=")
                .nth(1)
                .and_then(|p| p.trim().parse::<i32>().ok())
        });
        pid.is_some()
    })
    .await;
    let pid = pid.unwrap_or_else(|| panic!("no child pid in the log:\n{}", engine.log()));
    assert!(alive(pid));
    pid
}

#[actix::test]
async fn grandchildren_die_with_a_killed_engine() {
    let mut engine = EngineProc::start(&grandchild_config());
    let pid = grandchild_pid(&engine).await;
    engine.kill();
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)).await,
        "grandchild {pid} outlived a killed engine"
    );
}

#[actix::test]
async fn grandchildren_are_stopped_on_sigterm() {
    let mut engine = EngineProc::start(&grandchild_config());
    let pid = grandchild_pid(&engine).await;
    let started = Instant::now();
    assert_eq!(engine.terminate(), Some(0));
    assert!(!alive(pid), "grandchild {pid} outlived the engine");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Pids a command printed as `left=<pid>` lines, in order.
fn left_pids(engine: &EngineProc) -> Vec<i32> {
    engine
        .log()
        .lines()
        .filter_map(|l| l.split("[leaky] left=").nth(1)?.trim().parse().ok())
        .collect()
}

/// A command whose leader exits and leaves a background child behind: the child goes with it,
/// before the restart, and none is left after SIGTERM or SIGKILL of the engine.
#[actix::test]
async fn what_an_exited_leader_leaves_behind_is_stopped_too() {
    let config = with_exec(
        "      stop_grace_ms: 500\n      exec:\n        - command: sleep 300 & echo left=$!; sleep 0.2; exit 1\n          name: leaky\n",
    );
    let mut engine = EngineProc::start(&config);
    assert!(
        eventually(Duration::from_secs(10), || left_pids(&engine).len() >= 3).await,
        "{}",
        engine.log()
    );
    let pids = left_pids(&engine);
    // Every run but the current one has been cleaned up.
    for pid in &pids[..pids.len() - 1] {
        assert!(!alive(*pid), "leftover {pid} of an earlier run is alive");
    }
    assert_eq!(engine.terminate(), Some(0));
    let pids = left_pids(&engine);
    assert!(
        eventually(Duration::from_secs(3), || pids.iter().all(|p| !alive(*p))).await,
        "a leftover outlived the engine's SIGTERM"
    );

    let mut engine = EngineProc::start(&config);
    assert!(eventually(Duration::from_secs(5), || !left_pids(&engine).is_empty()).await);
    engine.kill();
    let pids = left_pids(&engine);
    assert!(
        eventually(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))).await,
        "a leftover outlived the engine's SIGKILL"
    );
}
