//! Unit tests of the store: the promise (write before ack, torn tails, refusal of mid-log
//! damage, locks, compaction), some of them by re-running this test binary as a child process
//! that is killed.

use super::*;
use serde_json::json;
use std::fs::File;
use std::process::Command;

/// Set by the tests that re-run this test binary as a child process; the child tests do
/// nothing without it.
const CHILD_ENV: &str = "STREAM_STORE_TEST_CHILD_DIR";

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        compact_threshold_bytes: DEFAULT_COMPACT_THRESHOLD,
        name: "test",
    }
}

fn open(dir: &Path) -> Store {
    let _ = env_logger::builder().is_test(true).try_init();
    Store::open(options(dir)).expect("open store")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Everything in the store: (stream, group, values in list order).
fn dump(store: &Store) -> Vec<(String, String, Vec<Value>)> {
    let mut out = Vec::new();
    for (stream, groups) in store.list_all() {
        for group in groups {
            let values = store.list(&stream, &group);
            out.push((stream.clone(), group, values));
        }
    }
    out
}

fn only_log(dir: &Path) -> PathBuf {
    let listing = files::list_dir(dir).expect("list");
    assert_eq!(listing.logs.len(), 1, "{listing:?}");
    listing.logs[0].1.clone()
}

/// Writes five records of different sizes and returns (file bytes, start of each record).
fn five_records(dir: &Path) -> (Vec<u8>, Vec<u64>) {
    let mut store = open(dir);
    let mut starts = Vec::new();
    for i in 0..5 {
        starts.push(store.disk().log.len());
        let value = json!({"i": i, "pad": "x".repeat(i * 7)});
        store.set("s", "g", &format!("k{i}"), value).expect("set");
    }
    store.close().expect("close");
    (fs::read(only_log(dir)).expect("read log"), starts)
}

fn first_values(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"i": i, "pad": "x".repeat(i * 7)}))
        .collect()
}

#[test]
fn set_get_list_delete() {
    let dir = tempdir();
    let mut store = open(dir.path());
    assert_eq!(
        store.set("todo", "todos", "a", json!(1)).expect("set"),
        None
    );
    assert_eq!(
        store.set("todo", "todos", "b", json!(2)).expect("set"),
        None
    );
    assert_eq!(
        store.set("todo", "todos", "a", json!(3)).expect("set"),
        Some(json!(1))
    );
    store.set("todo", "other", "x", json!("x")).expect("set");
    store.set("alpha", "g", "x", json!(null)).expect("set");
    assert_eq!(store.get("todo", "todos", "a"), Some(&json!(3)));
    assert_eq!(store.get("todo", "todos", "zz"), None);
    assert_eq!(store.get("alpha", "g", "x"), Some(&Value::Null));
    assert_eq!(store.list("todo", "todos"), vec![json!(3), json!(2)]);
    assert_eq!(store.list("todo", "nope"), Vec::<Value>::new());
    assert_eq!(store.list_groups("todo"), ["other", "todos"]);
    assert_eq!(
        store.list_all(),
        vec![
            ("alpha".to_string(), vec!["g".to_string()]),
            (
                "todo".to_string(),
                vec!["other".to_string(), "todos".to_string()]
            ),
        ]
    );
    assert_eq!(
        store.delete("todo", "todos", "a").expect("delete"),
        Some(json!(3))
    );
    store.set("todo", "todos", "a", json!(4)).expect("set");
    assert_eq!(store.list("todo", "todos"), vec![json!(2), json!(4)]);
    assert_eq!(store.disk().last_seq, 7);
}

#[test]
fn delete_of_absent_item_writes_nothing() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.set("s", "g", "a", json!(1)).expect("set");
    let len = store.disk().log.len();
    assert_eq!(store.delete("s", "g", "missing").expect("delete"), None);
    assert_eq!(store.delete("s", "nope", "a").expect("delete"), None);
    assert_eq!((store.disk().log.len(), store.disk().last_seq), (len, 1));
    store.delete("s", "g", "a").expect("delete");
    assert!(store.list_all().is_empty());
}

#[test]
fn reopen_after_close_keeps_everything_in_order() {
    let dir = tempdir();
    let mut store = open(dir.path());
    for i in 0..50 {
        let group = format!("g{}", i % 3);
        store
            .set("s", &group, &format!("k{}", i % 7), json!(i))
            .expect("set");
        if i % 5 == 0 {
            store
                .delete("s", "g1", &format!("k{}", i % 4))
                .expect("delete");
        }
    }
    let before = dump(&store);
    let seq = store.disk().last_seq;
    store.close().expect("close");
    let store = open(dir.path());
    assert_eq!(dump(&store), before);
    assert_eq!(store.disk().last_seq, seq);
}

#[test]
fn reopen_after_drop_without_close() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.set("s", "g", "a", json!({"v": 1})).expect("set");
    store.set("s", "g", "b", json!({"v": 2})).expect("set");
    store.delete("s", "g", "a").expect("delete");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.list("s", "g"), vec![json!({"v": 2})]);
    assert_eq!(store.get("s", "g", "a"), None);
}

#[test]
fn every_policy_persists_writes() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::EverySecond,
        FsyncPolicy::Never,
    ] {
        let dir = tempdir();
        let mut opts = options(dir.path());
        opts.fsync = fsync;
        let mut store = Store::open(opts.clone()).expect("open");
        store.set("s", "g", "a", json!(1)).expect("set");
        assert_eq!(store.disk().log.is_dirty(), fsync != FsyncPolicy::Always);
        store.sync().expect("sync");
        assert!(!store.disk().log.is_dirty());
        drop(store);
        let store = Store::open(opts).expect("reopen");
        assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
    }
}

#[test]
fn killed_process_keeps_acknowledged_writes() {
    let dir = tempdir();
    let status = run_child("child_writes_then_is_killed", dir.path());
    assert!(
        !status.success(),
        "the child must die by SIGKILL: {status:?}"
    );
    let store = open(dir.path());
    let expected: Vec<Value> = (0..200).map(|i| json!({"n": i})).collect();
    assert_eq!(store.list("s", "g"), expected);
}

/// Child side of `killed_process_keeps_acknowledged_writes`.
#[test]
fn child_writes_then_is_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = open(Path::new(&dir));
    for i in 0..200 {
        store
            .set("s", "g", &format!("k{i}"), json!({"n": i}))
            .expect("set");
    }
    // SAFETY: sending SIGKILL to ourselves; nothing runs afterwards.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

fn run_child(test: &str, dir: &Path) -> std::process::ExitStatus {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([&format!("{module}::{test}"), "--exact", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .output()
        .expect("run child")
        .status
}

mod damage;

#[test]
fn second_open_fails_while_the_first_is_alive() {
    let dir = tempdir();
    let first = open(dir.path());
    let err = Store::open(options(dir.path())).expect_err("locked");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Locked { .. }), "{message}");
    assert!(message.contains("is in use by another engine"), "{message}");
    assert!(
        message.contains(&dir.path().join("LOCK").display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    first.close().expect("close");
    let second = open(dir.path());
    drop(second);
    let third = open(dir.path());
    drop(third);
}

#[test]
fn another_process_cannot_open_a_locked_directory() {
    let dir = tempdir();
    let store = open(dir.path());
    assert_eq!(run_child("child_tries_to_open", dir.path()).code(), Some(3));
    store.close().expect("close");
    assert_eq!(run_child("child_tries_to_open", dir.path()).code(), Some(0));
}

/// Child side of `another_process_cannot_open_a_locked_directory`: exit code 3 when locked
/// out, 0 when the open succeeded.
#[test]
fn child_tries_to_open() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = match Store::open(options(Path::new(&dir))) {
        Ok(_) => 0,
        Err(StoreError::Locked { .. }) => 3,
        Err(_) => 4,
    };
    std::process::exit(code);
}

#[test]
fn names_round_trip_without_collision() {
    let names: Vec<String> = [
        "",
        ":",
        "a:b",
        "a",
        "b:c",
        "/",
        "a/b",
        "..",
        "../..",
        "%",
        "%3A",
        "\0",
        "a\0b",
        "😀",
        "stream:a:b",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["x".repeat(1024), "😀".repeat(256)])
    .collect();
    let dir = tempdir();
    let mut store = open(dir.path());
    for s in &names {
        for g in &names {
            for i in names.iter().step_by(4) {
                store.set(s, g, i, json!([s, g, i])).expect("set");
            }
        }
    }
    let check = |store: &Store| {
        assert_eq!(store.list_all().len(), names.len());
        for s in &names {
            assert_eq!(store.list_groups(s).len(), names.len());
            for g in &names {
                for i in names.iter().step_by(4) {
                    assert_eq!(store.get(s, g, i), Some(&json!([s, g, i])));
                }
            }
        }
    };
    check(&store);
    drop(store);
    let mut store = open(dir.path());
    check(&store);
    store.compact().expect("compact");
    drop(store);
    check(&open(dir.path()));
}

#[test]
fn colon_joined_names_stay_apart() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.set("a:b", "c", "i", json!(1)).expect("set");
    store.set("a", "b:c", "i", json!(2)).expect("set");
    assert_eq!(store.get("a:b", "c", "i"), Some(&json!(1)));
    assert_eq!(store.get("a", "b:c", "i"), Some(&json!(2)));
    assert_eq!(store.list_groups("a"), ["b:c"]);
    assert_eq!(store.list_groups("a:b"), ["c"]);
}

#[test]
fn failed_write_leaves_memory_unchanged() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.set("s", "g", "a", json!(1)).expect("set");
    let read_only = File::open(store.disk().log.path()).expect("open read-only");
    store
        .disk
        .as_mut()
        .expect("a store with a directory")
        .log
        .replace_file(read_only);
    let err = store.set("s", "g", "a", json!(2)).expect_err("write fails");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(err.to_string().contains("append to log"), "{err}");
    assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
    // The failed write could not be cut back on a read-only handle: writes stay refused.
    let err = store.delete("s", "g", "a").expect_err("poisoned");
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
    assert_eq!(store.disk().last_seq, 1);
    store.compact().expect("compaction starts a fresh log");
    store.set("s", "g", "a", json!(3)).expect("set");
    store.close().expect("close");
    assert_eq!(open(dir.path()).get("s", "g", "a"), Some(&json!(3)));
}

#[test]
fn error_messages_name_file_offset_and_reason() {
    let err = StoreError::Corrupt {
        file: PathBuf::from("/d/log-1.wal"),
        offset: 42,
        reason: "checksum mismatch".into(),
    };
    assert_eq!(
        err.to_string(),
        "/d/log-1.wal: corrupt data at byte offset 42: checksum mismatch"
    );
    let err = io_error("open log", Path::new("/d/x"))(io::Error::other("boom"));
    assert_eq!(err.to_string(), "cannot open log /d/x: boom");
}
