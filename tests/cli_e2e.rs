//! The `iii` binary's command line: `--help`, a broken config that stops startup with the file,
//! key and reason, a port that is taken, and a clean exit on SIGTERM and SIGINT.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{EngineProc, BASIC};
use iii_client::{Client, ClientOptions, ConnectionState};

fn iii() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iii"))
}

#[test]
fn help_explains_the_flags() {
    let out = iii().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--ready-file", "RUST_LOG", "SIGTERM"] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    let out = iii().arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}

#[test]
fn broken_config_stops_startup_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "workers:\n  - name: iii-worker-manager\n    config:\n      prot: 1\n",
    )
    .unwrap();
    let out = iii().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(
        err.contains("workers[0] (iii-worker-manager).config"),
        "{err}"
    );
    assert!(err.contains("unknown field `prot`"), "{err}");
    assert!(err.contains("line 4"), "{err}");

    std::fs::write(&path, "workers:\n  - name: iii-worker-manager\n    config:\n      port: ${III_TEST_SURELY_UNSET}\n").unwrap();
    let out = iii()
        .arg("--config")
        .arg(&path)
        .env_remove("III_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("III_TEST_SURELY_UNSET") && err.contains("line 4"),
        "{err}"
    );

    let out = iii()
        .arg("--config")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml: cannot read"));
}

#[test]
fn taken_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, format!("workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: {port}\n")).unwrap();
    let out = iii().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("listener 0"),
        "{err}"
    );
}

#[actix::test]
async fn sigterm_and_sigint_stop_the_engine_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut engine = EngineProc::start(BASIC);
        let mut opts = ClientOptions::named("watcher");
        opts.reconnect.initial = Duration::from_secs(60);
        let client = Client::connect(&engine.url(0), opts).await.unwrap();
        unsafe { libc::kill(engine.pid(), signal) };
        let status = tokio::task::spawn_blocking(move || {
            let s = engine.child.wait().unwrap();
            (s, engine)
        })
        .await
        .unwrap();
        assert_eq!(status.0.code(), Some(0), "{}", status.1.log());
        assert!(status.1.log().contains("stopping"), "{}", status.1.log());
        let mut state = client.watch_state();
        let lost = tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        )
        .await;
        assert!(lost.is_ok(), "the client saw the engine go away");
    }
}

#[actix::test]
async fn shutdown_closes_every_socket_promptly_with_1001() {
    let mut engine = EngineProc::start(BASIC);
    let mut ws = common::RawWs::connect(&engine.url(0)).await;
    let mut otel = common::RawWs::connect(&format!("{}/otel", engine.url(0))).await;
    let started = std::time::Instant::now();
    unsafe { libc::kill(engine.pid(), libc::SIGTERM) };
    for sock in [&mut ws, &mut otel] {
        let close = loop {
            match sock.next(Duration::from_secs(3)).await {
                Some(common::RawEvent::Json(_)) => continue,
                other => break other,
            }
        };
        match close {
            Some(common::RawEvent::Close(Some(r))) => assert_eq!(r.code, awc::ws::CloseCode::Away),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    let status = tokio::task::spawn_blocking(move || engine.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// A panic on the registry's or the stream store's thread stops the whole engine with a clear
/// message and a non-zero exit, instead of leaving a process that accepts sockets and answers
/// nothing. (`III_FAULT_INJECTION=1` adds the functions that panic on purpose.)
#[actix::test]
async fn a_panic_on_an_engine_thread_stops_the_engine() {
    for function in ["engine::fault::panic", "stream::fault::panic"] {
        let mut engine = EngineProc::start_with_env(
            tempfile::tempdir().unwrap(),
            &format!("{BASIC}  - name: iii-stream\n    config: {{host: 127.0.0.1, port: 0}}\n"),
            &[("III_FAULT_INJECTION", "1")],
        );
        let mut ws = common::RawWs::connect(&engine.url(0)).await;
        let call = serde_json::json!({"type": "invokefunction", "function_id": function,
                                      "invocation_id": uuid::Uuid::new_v4().to_string(), "data": {}});
        ws.text(call.to_string()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(status)) = engine.child.try_wait() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{function}: still running\n{}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(70), "{function}");
        assert!(
            engine.log().contains("internal error on thread"),
            "{function}: {}",
            engine.log()
        );
    }
}
