//! End-to-end tests of the stream store's durability promise, with the real engine on a temp
//! directory: data survives a clean restart, two engines cannot share a store, damage done to
//! the files while the engine was down is reported loudly (and a torn tail kept aside), and
//! compactions on their own thread fail no call. The SIGKILL test is `crash_e2e.rs`.

mod common;

use common::streams::{client, set, stream_config};
use common::EngineProc;
use iii_client::{Client, ClientOptions};
use serde_json::json;

#[actix::test]
async fn data_survives_a_clean_restart() {
    let mut engine = EngineProc::start(&stream_config(""));
    {
        let w = client(&engine, "w").await;
        for i in 0..50 {
            w.trigger("stream::set", set(&format!("k{i}"), json!({"i": i})))
                .await
                .unwrap();
        }
        w.trigger(
            "stream::delete",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "k7"}),
        )
        .await
        .unwrap();
        w.shutdown().await;
    }
    assert_eq!(engine.terminate(), Some(0));
    assert!(
        engine.log().contains("stream store flushed and closed"),
        "{}",
        engine.log()
    );
    engine.restart();
    let w = client(&engine, "w").await;
    let list = w
        .trigger(
            "stream::list",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 49);
    assert_eq!(items[0], json!({"i": 0}), "insertion order kept");
    assert!(!items.contains(&json!({"i": 7})), "deleted stays deleted");
}

#[test]
fn two_engines_cannot_share_a_store() {
    let first = EngineProc::start(&stream_config(""));
    let dir = first.path().to_path_buf();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iii"))
        .current_dir(&dir)
        .arg("--config")
        .arg("iii-config.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iii-stream") && err.contains("in use"),
        "{err}"
    );
}

/// Damage done to the store's files while the engine was down is never silent: an emptied or
/// deleted log is reported loudly at start-up, and a damaged tail is cut off with the cut bytes
/// kept in a `.corrupt-<time>` file.
#[actix::test]
async fn damaged_store_files_are_reported_loudly() {
    let mut engine = EngineProc::start(&stream_config(""));
    let write = |n: usize| {
        let url = engine.url(0);
        async move {
            let w = Client::connect(&url, ClientOptions::named("w"))
                .await
                .unwrap();
            for i in 0..n {
                w.trigger("stream::set", set(&format!("k{i}"), json!(i)))
                    .await
                    .unwrap();
            }
            w.shutdown().await;
        }
    };
    write(10).await;
    assert_eq!(engine.terminate(), Some(0));
    let dir = engine.path().join("data/stream_store");
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a log file");
    // A torn tail: cut, kept aside, the data before it intact.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"\x07\x00\x00\x00garbage");
    std::fs::write(&log, &bytes).unwrap();
    engine.restart();
    let c = client(&engine, "c").await;
    let list = c
        .trigger(
            "stream::list",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(10));
    assert!(engine.log().contains(".corrupt-"), "{}", engine.log());
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .expect("the cut bytes are kept");
    assert!(std::fs::read(aside.path()).unwrap().ends_with(b"garbage"));
    c.shutdown().await;
    // Truncated to zero: loud.
    assert_eq!(engine.terminate(), Some(0));
    std::fs::write(&log, b"").unwrap();
    engine.restart();
    assert!(
        engine.log().contains("the log is EMPTY"),
        "{}",
        engine.log()
    );
    // Deleted: loud.
    assert_eq!(engine.terminate(), Some(0));
    std::fs::remove_file(&log).unwrap();
    engine.restart();
    assert!(
        engine.log().contains("starting EMPTY") || engine.log().contains("no log after snapshot"),
        "{}",
        engine.log()
    );
}

/// Compactions run on their own thread: a reader and a writer going through many of them see
/// no failure, and everything is there after a restart.
#[actix::test]
async fn compactions_fail_no_call() {
    let mut engine = EngineProc::start(&stream_config(
        "          compact_threshold_bytes: 200000\n",
    ));
    let w = client(&engine, "w").await;
    let r = client(&engine, "r").await;
    let pad = "c".repeat(1000);
    let reader = {
        let r = r.clone();
        actix::spawn(async move {
            let mut failures = 0;
            for i in 0..1500 {
                let key = json!({"stream_name": "todo", "group_id": "todos", "item_id": format!("k{}", i % 50)});
                if r.trigger("stream::get", key).await.is_err() {
                    failures += 1;
                }
            }
            failures
        })
    };
    for i in 0..1500 {
        w.trigger(
            "stream::set",
            set(&format!("k{i}"), json!({"i": i, "pad": pad})),
        )
        .await
        .unwrap();
    }
    assert_eq!(reader.await.unwrap(), 0);
    // Compaction is considered once a second: the writes may all be done before the first look.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !engine.log().contains("compacted stream store") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        engine.log().contains("compacted stream store"),
        "{}",
        engine.log()
    );
    w.shutdown().await;
    r.shutdown().await;
    assert_eq!(engine.terminate(), Some(0));
    engine.restart();
    let c = client(&engine, "c").await;
    let list = c
        .trigger(
            "stream::list",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1500));
}

/// An engine with a file store and nothing to do uses next to no CPU (its fsync thread sleeps
/// between seconds instead of spinning).
#[actix::test]
async fn an_idle_engine_stays_idle() {
    let engine = EngineProc::start(&stream_config(""));
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", engine.pid())).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // utime and stime, fields 14 and 15 of /proc/<pid>/stat (11 and 12 after the name).
        fields[10] + fields[11]
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = ticks();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let used = ticks() - before;
    assert!(
        used < 20,
        "an idle engine used {used} clock ticks of CPU in 2 s"
    );
}
