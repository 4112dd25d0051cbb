//! Unit tests of config loading: both entry forms, interpolation, and every error case.

use std::path::PathBuf;

use super::*;

const NEW_FORM: &str = r#"
workers:
  - name: iii-worker-manager
    config:
      port: 49134
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 3111
      rbac:
        auth_function_id: todo-project::auth-function
        expose_functions:
          - match("todos::create")
          - metadata:
              public: true
  - name: iii-stream
    config:
      port: 3112
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/stream_store
  - name: iii-exec
    config:
      exec:
        - node worker/src/main.mjs
  - name: iii-observability
    config:
      enabled: true
      service_name: todo
"#;

const OLD_FORM: &str = r#"
modules:
  - class: modules::worker::WorkerModule
    config:
      port: 49134
  - class: modules::worker::WorkerModule
    config:
      host: 127.0.0.1
      port: 3111
      rbac:
        auth_function_id: todo-project::auth-function
        expose_functions:
          - match("todos::create")
          - metadata:
              public: true
  - class: modules::stream::StreamModule
    config:
      port: 3112
      adapter:
        class: modules::stream::adapters::KvStore
        config:
          store_method: file_based
          file_path: ./data/stream_store
  - class: modules::shell::ExecModule
    config:
      exec:
        - node worker/src/main.mjs
  - class: modules::observability::OtelModule
    config:
      enabled: true
      service_name: todo
"#;

fn ok(text: &str) -> EngineConfig {
    parse(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse(text, "test.yaml").unwrap_err().to_string()
}

#[test]
fn both_forms_parse_to_the_same_config() {
    let a = ok(NEW_FORM);
    let b = ok(OLD_FORM);
    assert_eq!(a, b);
    assert_eq!(a.listeners.len(), 2);
    assert_eq!(a.listeners[0].port, 49134);
    assert_eq!(a.listeners[0].host, "0.0.0.0");
    assert!(a.listeners[0].rbac.is_none());
    let rbac = a.listeners[1].rbac.as_ref().unwrap();
    assert_eq!(
        rbac.auth_function_id.as_deref(),
        Some("todo-project::auth-function")
    );
    assert_eq!(rbac.expose_functions.len(), 2);
    let s = a.stream.unwrap();
    assert_eq!(s.port, 3112);
    assert_eq!(s.adapter.kv.store_method, StoreMethod::FileBased);
    assert_eq!(s.adapter.kv.file_path, PathBuf::from("./data/stream_store"));
    assert_eq!(a.exec[0].exec[0].command, "node worker/src/main.mjs");
    assert_eq!(a.exec[0].exec[0].restart, RestartPolicy::Always);
}

#[test]
fn empty_config_gets_the_default_listener() {
    let c = ok("");
    assert_eq!(c.listeners, vec![ListenerConfig::default()]);
    assert!(c.stream.is_none());
    let c = ok("workers: []\n");
    assert_eq!(c.listeners[0].port, 49134);
}

#[test]
fn interpolation() {
    let env = |n: &str| match n {
        "SET" => Some("value".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    assert_eq!(expand_env("a ${SET} b", env).unwrap(), "a value b");
    assert_eq!(expand_env("${EMPTY:fallback}", env).unwrap(), "");
    assert_eq!(expand_env("${UNSET:fallback}", env).unwrap(), "fallback");
    assert_eq!(expand_env("${UNSET:}", env).unwrap(), "");
    assert_eq!(
        expand_env("${OTEL:http://localhost:4317}", env).unwrap(),
        "http://localhost:4317"
    );
    assert_eq!(expand_env("$SET stays", env).unwrap(), "$SET stays");
    assert_eq!(
        expand_env("${UNSET:__III_ENGINE_VERSION__}", env).unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    let e = expand_env("a: 1\nb: ${NOPE}\n", env).unwrap_err();
    assert!(e.contains("line 2") && e.contains("NOPE"), "{e}");
}

#[test]
fn interpolation_happens_before_yaml() {
    std::env::set_var("III_TEST_PORT_5521", "5521");
    let c = ok("workers:\n  - name: iii-worker-manager\n    config:\n      port: ${III_TEST_PORT_5521}\n      host: ${III_TEST_UNSET_HOST:127.0.0.1}\n");
    assert_eq!(c.listeners[0].port, 5521);
    assert_eq!(c.listeners[0].host, "127.0.0.1");
}

#[test]
fn unknown_key_names_file_entry_key_and_line() {
    let e = err("workers:\n  - name: iii-worker-manager\n    config:\n      prot: 1\n");
    assert!(e.starts_with("test.yaml: "), "{e}");
    assert!(e.contains("workers[0] (iii-worker-manager).config"), "{e}");
    assert!(e.contains("unknown field `prot`"), "{e}");
    assert!(e.contains("line 4"), "{e}");
    let e = err("modules:\n  - class: modules::worker::WorkerModule\n    config:\n      rbac:\n        expose: []\n");
    assert!(
        e.contains("modules[0] (iii-worker-manager).config.rbac")
            && e.contains("unknown field `expose`"),
        "{e}"
    );
    let e = err("port: 3111\n");
    assert!(e.contains("unknown field `port`"), "{e}");
}

#[test]
fn unknown_and_unsupported_modules() {
    let e = err("workers:\n  - name: iii-nope\n");
    assert!(
        e.contains("unknown module \"iii-nope\"") && e.contains("workers[0]"),
        "{e}"
    );
    let e = err("modules:\n  - class: modules::nope::Nope\n");
    assert!(e.contains("unknown module class"), "{e}");
    let e = err("workers:\n  - name: iii-bridge\n    config: {url: 'ws://x:1', expose: [{remote_function: a}]}\n");
    assert!(e.contains("local_function"), "{e}");
    let e = err("workers:\n  - config: {port: 1}\n");
    assert!(e.contains("needs `name`"), "{e}");
}

#[test]
fn bad_values() {
    let e = err("workers:\n  - name: iii-worker-manager\n    config:\n      port: 70000\n");
    assert!(
        e.contains("workers[0] (iii-worker-manager).config.port") && e.contains("70000"),
        "{e}"
    );
    let e = err("workers:\n  - name: iii-worker-manager\n    config:\n      port: abc\n");
    assert!(e.contains("config.port"), "{e}");
    let e = err("workers:\n  - name: iii-worker-manager\n    config:\n      host: not-an-ip\n");
    assert!(e.contains("config.host"), "{e}");
    let e = err("workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n");
    assert!(e.contains("port 49134 is used by two modules"), "{e}");
    let e = err("workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions: [\"todos::*\"]\n");
    assert!(
        e.contains("expose_functions[0]") && e.contains("match("),
        "{e}"
    );
    let e = err("workers:\n  - name: iii-exec\n");
    assert!(e.contains("iii-exec needs a config"), "{e}");
    let e = err("workers:\n  - name: iii-exec\n    config:\n      exec: [\"a\"]\n      watch: [\"src/**/*.js\"]\n");
    assert!(e.contains("watch"), "{e}");
    let e = err(
        "workers:\n  - name: iii-stream\n    config:\n      adapter:\n        name: rabbitmq\n",
    );
    assert!(e.contains("rabbitmq") && e.contains("not supported"), "{e}");
    let e = err("workers:\n  - name: iii-observability\n    config:\n      colour: red\n");
    assert!(e.contains("colour"), "{e}");
    let e = err("workers: [\n");
    assert!(e.starts_with("test.yaml: "), "{e}");
}

#[test]
fn exec_entry_forms() {
    let c = ok("workers:\n  - name: iii-exec\n    config:\n      exec:\n        - echo hi\n        - command: node w.mjs\n          name: api\n          cwd: worker\n          env: {A: \"1\"}\n          restart: on-failure\n");
    let e = &c.exec[0].exec;
    assert_eq!(e[0].command, "echo hi");
    assert_eq!(e[1].name.as_deref(), Some("api"));
    assert_eq!(e[1].cwd, Some(PathBuf::from("worker")));
    assert_eq!(e[1].env, vec![("A".to_string(), "1".to_string())]);
    assert_eq!(e[1].restart, RestartPolicy::OnFailure);
    let e = err("workers:\n  - name: iii-exec\n    config:\n      exec:\n        - command: x\n          restart: sometimes\n");
    assert!(e.contains("exec entry"), "{e}");
}

#[test]
fn missing_file_is_reported() {
    let e = load(Path::new("definitely/not/here.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("definitely/not/here.yaml: cannot read"),
        "{e}"
    );
}

#[test]
fn service_modules_parse_in_both_forms() {
    let c = ok("workers:\n  - name: iii-state\n  - name: iii-pubsub\n  - name: iii-cron\n");
    let state = c.state.as_ref().unwrap();
    assert!(state.triggers_enabled);
    assert_eq!(state.adapter.kv.store_method, StoreMethod::InMemory);
    assert_eq!(state.directory(), PathBuf::from("state_store_data.db"));
    assert_eq!(c.pubsub.as_ref().unwrap().adapter.name, "local");
    assert_eq!(c.cron.as_ref().unwrap().adapter.name, "kv");
    let old = ok("modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n        class: modules::state::adapters::KvStore\n        config: {store_method: file_based, file_path: ./data/state}\n      max_value_bytes: 0\n  - class: modules::pubsub::PubSubModule\n    config:\n      adapter: {class: modules::pubsub::LocalAdapter}\n  - class: modules::cron::CronModule\n");
    let state = old.state.as_ref().unwrap();
    assert_eq!(state.directory(), PathBuf::from("./data/state"));
    assert_eq!(state.value_limit(), None, "0 means no limit, as upstream");
    assert!(old.pubsub.is_some() && old.cron.is_some());
}

#[test]
fn service_module_mistakes_stop_startup() {
    let e = err("workers:\n  - name: iii-state\n    config:\n      trigers_enabled: false\n");
    assert!(e.contains("trigers_enabled"), "{e}");
    let e = err("workers:\n  - name: iii-pubsub\n    config:\n      adapter: {name: rabbitmq}\n");
    assert!(
        e.contains("not supported") && e.contains("local, redis"),
        "{e}"
    );
    let c = ok("workers:\n  - name: iii-state\n    config:\n      adapter: {name: redis, config: {redis_url: 'redis://r:1'}}\n");
    assert_eq!(
        c.state.unwrap().adapter.redis_url.as_deref(),
        Some("redis://r:1")
    );
    let c = ok("workers:\n  - name: iii-stream\n    config:\n      adapter: {name: redis}\n");
    assert_eq!(
        c.stream.unwrap().adapter.redis_url.as_deref(),
        Some("redis://localhost:6379")
    );
    let e = err(
        "workers:\n  - name: iii-cron\n    config:\n      adapter: {name: kv}\n      extra: 1\n",
    );
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn http_modules_parse_strictly() {
    let c = ok("workers:\n  - name: iii-http\n  - name: iii-http-functions\n");
    let h = c.http.unwrap();
    assert_eq!(
        (h.port, h.default_timeout, h.body_limit_bytes),
        (3111, 30_000, 16 << 20)
    );
    assert!(h.cors.is_none());
    let s = c.http_functions.unwrap().security;
    assert!(s.block_private_ips && s.require_https && s.url_allowlist.is_empty());
    let c = ok("modules:\n  - class: modules::api::RestApiModule\n    config:\n      port: 3199\n      middleware:\n        - {function_id: b, priority: 5}\n        - {function_id: a, priority: 1}\n        - {function_id: c, phase: onResponse}\n");
    assert_eq!(c.http.unwrap().pre_handler_middleware(), vec!["a", "b"]);
    let e = err("workers:\n  - name: iii-http\n    config:\n      cors: {allowed_origin: ['*']}\n");
    assert!(e.contains("allowed_origin"), "{e}");
    let e = err(
        "workers:\n  - name: iii-worker-manager\n    config: {port: 3111}\n  - name: iii-http\n",
    );
    assert!(e.contains("port 3111 is used by two modules"), "{e}");
}

#[test]
fn the_cluster_example_config_shares_every_module_through_redis() {
    let c = ok(include_str!("../../iii-config.cluster.yaml"));
    let url = Some("redis://127.0.0.1:6379".to_string());
    assert_eq!(c.stream.unwrap().adapter.redis_url, url);
    assert_eq!(c.state.unwrap().adapter.redis_url, url);
    assert_eq!(c.pubsub.unwrap().adapter.redis_url(), url);
    assert_eq!(c.cron.unwrap().adapter.redis_url(), url);
    assert_eq!(c.queue.unwrap().redis_url, url);
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(cluster.transport, ClusterTransport::Link);
    // Unset: empty, so each engine advertises its own listener.
    assert_eq!(cluster.advertise_url.as_deref(), Some(""));
}

#[test]
fn a_second_stream_module_is_refused() {
    let e = err("workers:\n  - name: iii-stream\n  - name: iii-stream\n    config: {port: 3113}\n");
    assert!(e.contains("iii-stream is configured twice"), "{e}");
}

#[test]
fn the_bridge_adapter_serves_state_and_streams() {
    let c = ok("workers:\n  - name: iii-state\n    config:\n      adapter: {name: bridge, config: {bridge_url: 'ws://r:1'}}\n");
    assert_eq!(
        c.state.unwrap().adapter.bridge_url.as_deref(),
        Some("ws://r:1")
    );
    let c = ok("workers:\n  - name: iii-stream\n    config:\n      adapter: {name: bridge}\n");
    assert_eq!(
        c.stream.unwrap().adapter.bridge_url.as_deref(),
        Some("ws://localhost:49134")
    );
    let e = err("workers:\n  - name: iii-stream\n    config:\n      adapter: {name: bridge, config: {url: 'ws://r:1'}}\n");
    assert!(e.contains("unknown field `url`"), "{e}");
}
