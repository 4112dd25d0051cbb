//! RBAC end to end: the todo app's own layout (the published-SDK todo worker on the trusted
//! port serves `todo-project::auth-function` and `todos::*`; clients on the public port), and
//! the listener's middleware and registration hooks with the session `context`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sdk::node_cmd;
use common::{recorder, repo_path, ChildGuard, EngineProc, RawWs, TODO_CONFIG};
use iii::protocol::ErrorBody;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

fn start_todo_worker(url: &str) -> ChildGuard {
    assert!(
        repo_path("worker/node_modules/iii-sdk").exists(),
        "worker/ dependencies are missing: run scripts/setup-test-deps"
    );
    let mut cmd = node_cmd(&repo_path("worker/src/main.mjs").to_string_lossy());
    let child = cmd
        .env("III_URL", url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node");
    ChildGuard(child)
}

async fn public_client(engine: &EngineProc) -> Client {
    let mut opts = ClientOptions::named("tab");
    opts.connect_timeout = Duration::from_secs(20);
    opts.reconnect.initial = Duration::from_millis(100);
    Client::connect(&engine.url(1), opts)
        .await
        .expect("the auth function admits a public client")
}

#[actix::test]
async fn todo_layout_with_the_published_sdk_worker() {
    let engine = EngineProc::start(TODO_CONFIG);
    let _worker = start_todo_worker(&engine.url(0));
    let a = public_client(&engine).await;
    let b = public_client(&engine).await;

    // Each tab registers the same ui::on-todo-change; the prefix keeps them apart.
    let mut seen = Vec::new();
    for tab in [&a, &b] {
        let events = recorder(tab, "ui::on-todo-change");
        tab.register_trigger(
            "stream",
            "ui::on-todo-change",
            json!({"stream_name": "todo", "group_id": "todos"}),
        );
        seen.push(events);
    }
    // Exposed calls work (waiting for the worker's registrations to land).
    let created = loop {
        match a
            .trigger("todos::create", json!({"title": "Buy milk"}))
            .await
        {
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other.expect("todos::create"),
        }
    };
    assert_eq!(created["title"], "Buy milk");
    assert_eq!(created["completed"], false);
    let list = b.trigger("todos::list", json!({})).await.unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    for events in &seen {
        assert!(
            common::eventually(T, || events.lock().unwrap().len() == 1).await,
            "each tab got the create"
        );
        assert_eq!(events.lock().unwrap()[0]["event"]["type"], "create");
    }

    // Everything else is forbidden, by name.
    for id in [
        "stream::set",
        "stream::list",
        "engine::functions::list",
        "todo-project::auth-function",
    ] {
        let err = a.trigger(id, json!({})).await.unwrap_err();
        assert_eq!(err.code, "FORBIDDEN", "{id}");
        assert!(err.message.contains(id), "{err:?}");
    }

    // A tab registering todos::create gets its own copy; everyone else still reaches the worker.
    a.register_function("todos::create", |_| async { Ok(json!("hijacked")) });
    common::barrier(&a).await;
    let real = b
        .trigger("todos::create", json!({"title": "Second"}))
        .await
        .unwrap();
    assert_eq!(real["title"], "Second");
    // A tab cannot remove another tab's binding, nor answer calls meant for others.
    let mut raw = RawWs::connect(&engine.url(1)).await;
    raw.text(r#"{"type":"unregisterfunction","id":"todos::create"}"#)
        .await;
    let toggled = b
        .trigger("todos::toggle", json!({"id": real["id"]}))
        .await
        .unwrap();
    assert_eq!(toggled["completed"], true);
    for events in &seen {
        assert!(common::eventually(T, || events.lock().unwrap().len() == 3).await);
    }
}

#[actix::test]
async fn missing_auth_function_is_waited_for_until_the_auth_deadline() {
    let config = TODO_CONFIG.replace("      rbac:\n", "      auth_timeout_ms: 600\n      rbac:\n");
    let engine = EngineProc::start(&config);
    let started = Instant::now();
    let mut raw = RawWs::connect(&engine.url(1)).await;
    let v = raw.next_json(T).await;
    assert_eq!(
        v,
        json!({"type": "error", "error": {"code": "AUTH_ERROR", "message": "Function todo-project::auth-function not found"}})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // A connection made while the auth worker is still starting is admitted once it is up.
    let waiting = actix::spawn({
        let url = engine.url(1);
        async move { RawWs::connect(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trusted = Client::connect(&engine.url(0), ClientOptions::named("auth"))
        .await
        .unwrap();
    trusted.register_function("todo-project::auth-function", |_| async { Ok(json!({})) });
    let mut admitted = waiting.await.unwrap();
    match admitted.next(T).await {
        Some(common::RawEvent::Json(v)) => assert_eq!(v["type"], "workerregistered", "{v}"),
        other => panic!("not admitted: {other:?}"),
    }
}

const HOOKS_CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      auth_timeout_ms: 1000
      middleware_function_id: mw::fn
      rbac:
        auth_function_id: auth::fn
        expose_functions: [match(\"api::*\")]
        on_function_registration_function_id: hook::fn
        on_trigger_registration_function_id: hook::trig
        on_trigger_type_registration_function_id: hook::tt
  - name: iii-stream
    config: {host: 127.0.0.1, port: 0}
";

type Log = Arc<Mutex<Vec<Value>>>;

fn recording<F>(c: &Client, id: &str, log: &Log, answer: F)
where
    F: Fn(&Value) -> Result<Value, ErrorBody> + Send + Sync + 'static,
{
    let log = log.clone();
    let answer = Arc::new(answer);
    c.register_function(id, move |v: Value| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            log.lock().unwrap().push(v.clone());
            if v["function_id"]
                .as_str()
                .is_some_and(|f| f.starts_with("hang::"))
            {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            answer(&v)
        }
    });
}

#[actix::test]
async fn middleware_and_registration_hooks_see_the_context() {
    let engine = EngineProc::start(HOOKS_CONFIG);
    let trusted = Client::connect(&engine.url(0), ClientOptions::named("trusted"))
        .await
        .unwrap();
    let (mw, hooks) = (Log::default(), Log::default());
    trusted.register_function("auth::fn", |_| async {
        Ok(
            json!({"function_registration_prefix": format!("p{}", uuid::Uuid::new_v4().simple()),
                  "allow_trigger_type_registration": true, "context": {"user": "ada"}}),
        )
    });
    recording(&trusted, "mw::fn", &mw, |v| {
        Ok(json!({"via": "middleware", "target": v["function_id"]}))
    });
    recording(&trusted, "hook::fn", &hooks, |v| {
        match v["function_id"].as_str().unwrap_or("") {
            id if id.starts_with("deny::") => {
                Err(ErrorBody::new("invocation_failed", "not on my watch"))
            }
            "rename::me" => Ok(json!({"function_id": "renamed"})),
            _ => Ok(json!({})),
        }
    });
    recording(&trusted, "hook::trig", &hooks, |v| {
        Ok(if v["function_id"] == "deny" {
            Value::Null
        } else {
            json!({"config": {"stream_name": "todo"}})
        })
    });
    recording(&trusted, "hook::tt", &hooks, |v| {
        Ok(
            json!({"trigger_type_id": format!("{}-checked", v["trigger_type_id"].as_str().unwrap_or(""))}),
        )
    });
    while trusted.trigger("auth::fn", json!({})).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tab = Client::connect(&engine.url(1), ClientOptions::named("tab"))
        .await
        .unwrap();
    // Middleware answers for the target, with the session context and without _caller_worker_id.
    let out = tab.trigger("api::anything", json!({"x": 1})).await.unwrap();
    assert_eq!(out, json!({"via": "middleware", "target": "api::anything"}));
    let input = mw.lock().unwrap()[0].clone();
    assert_eq!(
        input,
        json!({"function_id": "api::anything", "payload": {"x": 1}, "action": null, "context": {"user": "ada"}})
    );
    // engine::* skips the middleware (RBAC still applies).
    tab.trigger("engine::workers::register", json!({"name": "tab"}))
        .await
        .unwrap();
    assert_eq!(mw.lock().unwrap().len(), 1);
    // Even a void call gets the middleware's answer, under a fresh id.
    let mut raw = RawWs::connect(&engine.url(1)).await;
    raw.text(
        r#"{"type":"invokefunction","function_id":"api::v","data":{},"action":{"type":"void"}}"#,
    )
    .await;
    let v = raw.next_json(T).await;
    assert_eq!(v["type"], "invocationresult");
    assert_eq!(v["result"]["target"], "api::v");

    // The function hook sees the id as sent and the context; it can deny or rename.
    tab.register_function("deny::me", |_| async { Ok(json!(1)) });
    tab.register_function("rename::me", |_| async { Ok(json!("renamed works")) });
    tab.register_function("keep::me", |_| async { Ok(json!("kept")) });
    let prefix_of = |hooks: &Log, id: &str| -> bool {
        hooks.lock().unwrap().iter().any(|h| h["function_id"] == id)
    };
    assert!(common::eventually(T, || prefix_of(&hooks, "keep::me")).await);
    let seen = hooks.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| h["context"] == json!({"user": "ada"})),
        "{seen:?}"
    );
    let list = trusted
        .trigger("engine::functions::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<String> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.iter().any(|i| i.ends_with("::renamed")), "{ids:?}");
    assert!(ids.iter().any(|i| i.ends_with("::keep::me")), "{ids:?}");
    assert!(
        !ids.iter()
            .any(|i| i.contains("deny::me") || i.contains("rename::me")),
        "{ids:?}"
    );

    // Trigger hook: deny, or rewrite the config.
    tab.register_function("deny", |_| async { Ok(json!({})) });
    tab.register_trigger("stream", "deny", json!({"stream_name": "todo"}));
    tab.register_trigger("stream", "keep::me", json!({}));
    let (reg, _events) = tab.register_trigger_type("mine", "my type");
    let _ = reg;
    common::barrier(&tab).await;
    let bindings = trusted
        .trigger("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    let b = bindings["registered_triggers"].as_array().unwrap();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["config"], json!({"stream_name": "todo"}));
    let types = trusted
        .trigger("engine::triggers::list", json!({}))
        .await
        .unwrap();
    assert!(
        types["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "mine-checked"),
        "{types}"
    );

    // A hook that hangs fails only that registration, at the deadline; others are not held.
    let started = Instant::now();
    let mut held = RawWs::connect(&engine.url(1)).await;
    held.text(r#"{"type":"registerfunction","id":"hang::x"}"#)
        .await;
    held.text(r#"{"type":"invokefunction","invocation_id":"0b7f2a8e-6c1d-4f3a-9e2b-5d4c3b2a1f00","function_id":"api::after","data":{}}"#)
        .await;
    assert_eq!(
        tab.trigger("api::during", json!({})).await.unwrap()["target"],
        "api::during"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "another session was held up"
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(held.next_json(T).await);
    }
    assert_eq!(got[0]["type"], "error", "{got:?}");
    assert!(
        got[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hook::fn failed"),
        "{got:?}"
    );
    assert_eq!(
        got[1]["result"]["target"], "api::after",
        "frames after the held one still run, in order"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}
