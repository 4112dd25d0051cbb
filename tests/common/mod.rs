//! Shared e2e harness: starts the real `iii` binary on free ports (127.0.0.1, port 0) with a
//! temporary working directory, reads the bound addresses from its ready file, and stops or
//! kills it. The engine's log goes to `engine.log` in that directory and is printed when a test
//! fails, so a failure shows what the engine saw. `III_ENGINE_BIN` runs the tests against
//! another engine binary (an older build, to see a regression test fail there).
#![allow(dead_code)]

pub mod attack;
pub mod http;
pub mod redis;
pub mod sdk;
pub mod streams;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A trusted listener, a public RBAC listener exposing nothing, and every service module;
/// state is file based with a 1 KiB value limit.
pub const MODULES: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {expose_functions: ['match(\"public::*\")']}
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/stream}}
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
      max_value_bytes: 1024
  - name: iii-pubsub
  - name: iii-cron
";

/// A running engine process.
pub struct EngineProc {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub ready: Value,
}

/// The trusted + RBAC + stream layout most tests use, on free ports.
pub const BASIC: &str =
    "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n";

impl EngineProc {
    /// Starts the engine with this config text in a fresh temporary directory.
    pub fn start(config: &str) -> EngineProc {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    /// Starts the engine in `dir` (which it then owns).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> EngineProc {
        std::fs::write(dir.path().join("iii-config.yaml"), config).expect("write config");
        let (child, ready) = spawn(dir.path(), &[]);
        EngineProc { child, dir, ready }
    }

    /// Starts the engine in `dir` with extra environment variables.
    pub fn start_with_env(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> EngineProc {
        std::fs::write(dir.path().join("iii-config.yaml"), config).expect("write config");
        let (child, ready) = spawn(dir.path(), env);
        EngineProc { child, dir, ready }
    }

    /// Starts again on the same directory (after a stop or kill).
    pub fn restart(&mut self) {
        let _ = self.child.wait();
        let (child, ready) = spawn(self.dir.path(), &[]);
        self.child = child;
        self.ready = ready;
    }

    /// `ws://127.0.0.1:PORT` of listener `i`.
    pub fn url(&self, i: usize) -> String {
        self.ready["listeners"][i]["url"]
            .as_str()
            .expect("listener url")
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("engine did not stop within 15 s of SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the engine logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The engine's resident memory now and at its peak, in MiB (from /proc).
    pub fn rss_mib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// How many lines of the engine log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- engine log ----\n{}\n---- end of engine log ----",
                self.log()
            );
        }
    }
}

fn spawn(dir: &Path, extra_env: &[(&str, &str)]) -> (Child, Value) {
    let ready_file = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("engine.log"))
        .expect("log file");
    let bin = std::env::var("III_ENGINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_iii").into());
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .arg("--config")
        .arg("iii-config.yaml")
        .arg("--ready-file")
        .arg(&ready_file)
        .env(
            "RUST_LOG",
            std::env::var("ENGINE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the iii binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return (child, v);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
            panic!("engine exited early ({status}):\n{log}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
            panic!("engine not ready within 20 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// A path inside the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A bare WebSocket client for sending what SDKs never would.
pub struct RawWs {
    framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

/// The writing half of a split [`RawWs`].
pub type RawSink = futures_util::stream::SplitSink<
    actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    awc::ws::Message,
>;
/// The reading half of a split [`RawWs`].
pub type RawStream =
    futures_util::stream::SplitStream<actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>>;

/// The next JSON frame on a reading half (other frames skipped); `None` on timeout or close.
pub async fn read_json(stream: &mut RawStream, within: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(awc::ws::Frame::Text(b)))) | Ok(Some(Ok(awc::ws::Frame::Binary(b)))) => {
                if let Ok(v) = serde_json::from_slice(&b) {
                    return Some(v);
                }
            }
            Ok(Some(Ok(awc::ws::Frame::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                return None
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// What arrived on a [`RawWs`].
#[derive(Debug)]
pub enum RawEvent {
    Json(Value),
    Text(String),
    Close(Option<awc::ws::CloseReason>),
    Ended,
}

impl RawWs {
    pub async fn connect(url: &str) -> RawWs {
        let (_resp, framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(64 << 20)
            .connect()
            .await
            .expect("raw websocket connect");
        RawWs { framed }
    }

    /// Separate halves, to write and read at the same time.
    pub fn split(self) -> (RawSink, RawStream) {
        use futures_util::StreamExt;
        self.framed.split()
    }

    pub async fn send(&mut self, msg: awc::ws::Message) {
        use futures_util::SinkExt;
        self.framed.send(msg).await.expect("send");
    }

    /// Sends unless that takes longer than `within` (the engine stopped reading) or fails.
    pub async fn send_timeout(&mut self, msg: awc::ws::Message, within: Duration) -> bool {
        use futures_util::SinkExt;
        matches!(
            tokio::time::timeout(within, self.framed.send(msg)).await,
            Ok(Ok(()))
        )
    }

    pub async fn text(&mut self, text: impl Into<String>) {
        self.send(awc::ws::Message::Text(text.into().into())).await;
    }

    /// The next data or close frame (pings are answered, pongs skipped).
    pub async fn next(&mut self, within: Duration) -> Option<RawEvent> {
        use futures_util::{SinkExt, StreamExt};
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(RawEvent::Ended),
                Ok(Some(Ok(f))) => f,
            };
            match frame {
                awc::ws::Frame::Text(b) | awc::ws::Frame::Binary(b) => {
                    let text = String::from_utf8_lossy(&b).to_string();
                    return Some(match serde_json::from_str(&text) {
                        Ok(v) => RawEvent::Json(v),
                        Err(_) => RawEvent::Text(text),
                    });
                }
                awc::ws::Frame::Close(r) => return Some(RawEvent::Close(r)),
                awc::ws::Frame::Ping(p) => {
                    let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
                }
                _ => {}
            }
        }
    }

    /// Returns once the engine has handled every frame sent before (see [`barrier`]); frames
    /// arriving meanwhile are skipped.
    pub async fn barrier(&mut self) {
        let id = uuid::Uuid::new_v4().to_string();
        let call = serde_json::json!({"type": "invokefunction", "invocation_id": id,
                                      "function_id": "engine::barrier", "data": {}});
        self.text(call.to_string()).await;
        loop {
            let v = self.next_json(Duration::from_secs(5)).await;
            if v["type"] == "invocationresult" && v["invocation_id"] == serde_json::json!(id) {
                return;
            }
        }
    }

    /// The next JSON frame whose `type` is not `workerregistered`.
    pub async fn next_json(&mut self, within: Duration) -> Value {
        loop {
            match self.next(within).await {
                Some(RawEvent::Json(v)) if v["type"] == "workerregistered" => continue,
                Some(RawEvent::Json(v)) => return v,
                other => panic!("expected a JSON frame, got {other:?}"),
            }
        }
    }
}

/// The todo app's layout on free ports: trusted listener (0), public RBAC listener with the
/// todo auth function and exactly the five `todos::*` functions exposed (1), file-backed stream.
pub const TODO_CONFIG: &str = "modules:
  - class: modules::worker::WorkerModule
    config: {host: 127.0.0.1, port: 0}
  - class: modules::worker::WorkerModule
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        auth_function_id: todo-project::auth-function
        expose_functions:
          - match(\"todos::create\")
          - match(\"todos::list\")
          - match(\"todos::get\")
          - match(\"todos::toggle\")
          - match(\"todos::delete\")
  - class: modules::stream::StreamModule
    config:
      host: 127.0.0.1
      port: 0
      adapter:
        class: modules::stream::adapters::KvStore
        config: {store_method: file_based, file_path: ./data/stream_store}
";

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registers `function_id` on `client` as a handler that records every input it gets.
pub fn recorder(
    client: &iii_client::Client,
    function_id: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    client.register_function(function_id, move |v: Value| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(v);
            Ok(serde_json::json!({}))
        }
    });
    seen
}

/// Returns once the engine has handled everything `client` sent before. A connection's frames
/// are handled in order, so one round trip through the registry (this call answers
/// `function_not_found` or `FORBIDDEN`) proves its registrations have landed, and any trigger
/// binding has reached its provider before a later write.
pub async fn barrier(client: &iii_client::Client) {
    let _ = client
        .trigger("engine::barrier", serde_json::json!({}))
        .await;
}

/// The SDKs' enqueue action (`TriggerAction.Enqueue {queue}`) through our client: the queue's
/// `{messageReceiptId}`, or the error.
pub async fn enqueue(
    client: &iii_client::Client,
    queue: &str,
    function_id: &str,
    data: Value,
) -> Result<Value, iii_client::InvocationError> {
    let req = iii_client::TriggerRequest {
        function_id: function_id.into(),
        payload: data,
        timeout: None,
        metadata: None,
        action: Some(iii_protocol::protocol::Action::Enqueue {
            queue: queue.into(),
        }),
    };
    client
        .trigger_with(req)
        .await
        .map(|r| r.unwrap_or(Value::Null))
}
