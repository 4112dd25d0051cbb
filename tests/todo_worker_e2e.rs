//! The todo API workers against the real engine, through the public (RBAC) port as a browser
//! would call them: the JavaScript worker (`worker/`, published npm iii-sdk) and the Rust
//! worker (`examples/todo-worker.rs`) must behave the same for every function and error case;
//! a public session can reach nothing but the five exposed functions. Also: the repository's
//! own `iii-config.yaml` starts the engine, installs the worker into a clean `worker/` and
//! brings the app up.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sdk::node_cmd;
use common::{eventually, recorder, repo_path, ChildGuard, EngineProc, TODO_CONFIG};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

fn rust_worker_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join("todo-worker");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (scripts/test does)",
        path.display()
    );
    path
}

fn start_worker(kind: &str, url: &str) -> ChildGuard {
    let mut cmd = match kind {
        "js" => {
            assert!(
                repo_path("worker/node_modules/iii-sdk").exists(),
                "run scripts/setup-test-deps"
            );
            node_cmd(&repo_path("worker/src/main.mjs").to_string_lossy())
        }
        _ => std::process::Command::new(rust_worker_path()),
    };
    cmd.env("III_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    ChildGuard(cmd.spawn().expect("start the todo worker"))
}

/// A public client, once the worker's auth function admits it and todos::list answers.
async fn tab(engine: &EngineProc) -> Client {
    let mut opts = ClientOptions::named("tab");
    opts.connect_timeout = Duration::from_secs(30);
    opts.reconnect.initial = Duration::from_millis(100);
    opts.reconnect.max = Duration::from_millis(500);
    let c = Client::connect(&engine.url(1), opts)
        .await
        .expect("admitted by the auth function");
    for _ in 0..300 {
        match c.trigger("todos::list", json!({})).await {
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => {
                other.expect("todos::list");
                return c;
            }
        }
    }
    panic!("todos::list never became callable");
}

async fn fails(c: &Client, function_id: &str, input: Value, message: &str) {
    let err = c.trigger(function_id, input.clone()).await.unwrap_err();
    assert_eq!(
        err.code, "invocation_failed",
        "{function_id} {input}: {err:?}"
    );
    assert!(
        err.message.contains(message),
        "{function_id} {input}: {err:?}"
    );
}

async fn check_worker(kind: &str) {
    let engine = EngineProc::start(TODO_CONFIG);
    let _worker = start_worker(kind, &engine.url(0));
    let c = tab(&engine).await;
    let watcher = tab(&engine).await;
    let events = recorder(&watcher, "ui::on-todo-change");
    watcher.register_trigger(
        "stream",
        "ui::on-todo-change",
        json!({"stream_name": "todo", "group_id": "todos"}),
    );
    common::barrier(&watcher).await;

    let milk = c
        .trigger("todos::create", json!({"title": "  Buy milk  "}))
        .await
        .unwrap();
    assert_eq!(milk["title"], "Buy milk", "{kind}");
    assert_eq!(milk["completed"], false);
    assert_eq!(milk["id"].as_str().map(str::len), Some(36));
    assert!(milk["created_at"].as_u64().is_some());
    let id = milk["id"].clone();
    let bread = c
        .trigger("todos::create", json!({"title": "Bread"}))
        .await
        .unwrap();

    let list = c.trigger("todos::list", json!({})).await.unwrap();
    let titles: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["title"].as_str())
        .collect();
    assert_eq!(titles, ["Buy milk", "Bread"], "{kind}: oldest first");
    assert_eq!(
        c.trigger("todos::get", json!({"id": id})).await.unwrap(),
        milk
    );
    assert_eq!(
        c.trigger("todos::get", json!({"id": "nope"}))
            .await
            .unwrap(),
        Value::Null
    );

    let toggled = c.trigger("todos::toggle", json!({"id": id})).await.unwrap();
    assert_eq!(toggled["completed"], true, "{kind}");
    assert_eq!(toggled["title"], "Buy milk");
    let back = c.trigger("todos::toggle", json!({"id": id})).await.unwrap();
    assert_eq!(back["completed"], false);
    assert_eq!(
        c.trigger("todos::toggle", json!({"id": "nope"}))
            .await
            .unwrap(),
        Value::Null
    );

    let deleted = c
        .trigger("todos::delete", json!({"id": bread["id"]}))
        .await
        .unwrap();
    assert_eq!(deleted, json!({"id": bread["id"], "deleted": true}));
    let again = c
        .trigger("todos::delete", json!({"id": bread["id"]}))
        .await
        .unwrap();
    assert_eq!(again, json!({"id": bread["id"], "deleted": false}));

    // Input errors, named.
    fails(&c, "todos::create", json!({}), "title is required").await;
    fails(
        &c,
        "todos::create",
        json!({"title": 5}),
        "title must be a string",
    )
    .await;
    fails(
        &c,
        "todos::create",
        json!({"title": "   "}),
        "title must not be empty",
    )
    .await;
    fails(
        &c,
        "todos::create",
        json!({"title": "x".repeat(201)}),
        "at most 200 characters, got 201",
    )
    .await;
    for f in ["todos::get", "todos::toggle", "todos::delete"] {
        fails(&c, f, json!({}), "id is required").await;
    }
    assert_eq!(
        c.trigger("todos::create", json!({"title": "é".repeat(200)}))
            .await
            .unwrap()["title"]
            .as_str()
            .map(|t| t.chars().count()),
        Some(200)
    );

    // A public session reaches nothing else.
    for f in [
        "stream::set",
        "stream::list",
        "stream::delete",
        "engine::functions::list",
        "todo-project::auth-function",
        "todos::purge",
    ] {
        let err = c.trigger(f, json!({})).await.unwrap_err();
        assert_eq!(err.code, "FORBIDDEN", "{kind} {f}");
    }

    // The watcher saw every change: 3 creates, 2 toggles, 1 delete.
    assert!(
        eventually(Duration::from_secs(5), || events.lock().unwrap().len() == 6).await,
        "{kind}: {:?}",
        events.lock().unwrap()
    );
    let kinds: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        ["create", "create", "update", "update", "delete", "create"],
        "{kind}"
    );
}

#[actix::test]
async fn javascript_worker_serves_the_todo_functions() {
    check_worker("js").await;
}

#[actix::test]
async fn rust_worker_serves_the_todo_functions() {
    check_worker("rust").await;
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The repository's iii-config.yaml, from a directory holding a clean copy of worker/ (no
/// node_modules) and static/: the exec module installs the worker and the app comes up.
#[actix::test]
async fn repo_config_brings_the_app_up_from_a_clean_worker_dir() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &repo_path("worker"),
        &dir.path().join("worker"),
        &["node_modules"],
    );
    copy_dir(&repo_path("static"), &dir.path().join("static"), &[]);
    assert!(!dir.path().join("worker/node_modules").exists());
    let config = std::fs::read_to_string(repo_path("iii-config.yaml")).unwrap();
    let free_ports = [
        ("III_PORT", "0"),
        ("III_PUBLIC_PORT", "0"),
        ("III_STREAM_PORT", "0"),
    ];
    let engine = EngineProc::start_with_env(dir, &config, &free_ports);
    let c = tab(&engine).await;
    let todo = c
        .trigger("todos::create", json!({"title": "from a clean checkout"}))
        .await
        .unwrap();
    assert_eq!(todo["title"], "from a clean checkout");
    assert!(
        engine.path().join("worker/node_modules/iii-sdk").exists(),
        "installed by the exec setup step"
    );
    assert!(engine.path().join("data/stream_store").is_dir());
    let page = awc::Client::new()
        .get(engine.url(1).replace("ws://", "http://") + "/")
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&page).contains("Todo App"));
}

/// Three tabs each create 100 todos at once through the JavaScript worker: every create
/// succeeds (none refused because a queue inside the engine was full) and all 300 are listed.
#[actix::test]
async fn three_tabs_creating_at_once_lose_nothing() {
    let engine = EngineProc::start(TODO_CONFIG);
    let _worker = start_worker("js", &engine.url(0));
    let tabs = [tab(&engine).await, tab(&engine).await, tab(&engine).await];
    let creates = tabs.iter().enumerate().flat_map(|(t, c)| {
        (0..100).map(move |i| {
            let c = c.clone();
            async move {
                c.trigger("todos::create", json!({"title": format!("tab {t} #{i}")}))
                    .await
            }
        })
    });
    let results = futures_util::future::join_all(creates).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed);
    let list = tabs[0].trigger("todos::list", json!({})).await.unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(300));
}
