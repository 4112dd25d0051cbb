//! The processes the bench starts and watches: our own engine (the `iii` binary next to the
//! bench executable, on free ports, with the default or a scenario's own config and
//! `--ready-file`), the `relay` baseline (this same executable), `redis-server` for the
//! `cluster` scenario, a scratch directory that removes itself, the engine's RSS, peak RSS and
//! CPU time from `/proc`, and the open-file limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A scratch directory under the system temp dir, removed on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(tag: &str) -> Result<ScratchDir, String> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!(
            "iii-bench-{tag}-{}-{}",
            std::process::id(),
            &short[..8]
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The engine config the bench runs with: one trusted listener on 127.0.0.1 and a
/// file-backed stream module in the working directory.
pub fn engine_config(port: u16) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: {port}\n  \
         - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n      adapter:\n        \
         name: kv\n        config:\n          store_method: file_based\n          file_path: ./data/stream_store\n"
    )
}

/// A child process we started (engine or relay); stopped (SIGTERM, then SIGKILL) on drop.
pub struct Spawned {
    child: Child,
    dir: ScratchDir,
    /// What the child wrote to its ready file.
    pub ready: Value,
    /// The worker URL (`ws://127.0.0.1:PORT`).
    pub url: String,
}

/// The `iii` executable next to this one. When it is missing and this one was started by
/// `cargo run` (which only builds the bench), it is built with the same profile first.
pub fn engine_exe() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let exe = me.with_file_name(format!("iii{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        build_engine(&me)?;
    }
    if !exe.is_file() {
        return Err(format!(
            "the engine binary {} is missing; build it next to iii-bench with \
             `cargo build --release -p iii -p iii-bench` (or pass --url ws://HOST:PORT)",
            exe.display()
        ));
    }
    Ok(exe)
}

/// `cargo build --bin iii` for the profile this executable was built with, when run by cargo.
fn build_engine(me: &std::path::Path) -> Result<(), String> {
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(());
    };
    let release = me
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", "iii"]);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "iii-bench: building the engine (cargo build{} --bin iii)",
        if release { " --release" } else { "" }
    );
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the engine failed ({status})"))
    }
}

impl Spawned {
    /// Starts our engine on a free port (0) in a fresh scratch directory, log level warn,
    /// and waits for its ready file.
    pub fn engine() -> Result<Spawned, String> {
        Spawned::engine_with(&engine_config(0), "warn")
    }

    /// Starts our engine with this config text (its listeners should ask for port 0) and this
    /// `RUST_LOG` filter, in a fresh scratch directory, and waits for its ready file.
    pub fn engine_with(config: &str, rust_log: &str) -> Result<Spawned, String> {
        let exe = engine_exe()?;
        let dir = ScratchDir::new("engine")?;
        let (child, ready_file) = start_engine_with(&exe, &dir, config, rust_log)?;
        let (child, ready) = wait_ready(child, &dir, &ready_file, Duration::from_secs(20))?;
        let url = ready["listeners"][0]["url"]
            .as_str()
            .ok_or_else(|| format!("the engine's ready file has no listener url: {ready}"))?
            .to_string();
        Ok(Spawned {
            child,
            dir,
            ready,
            url,
        })
    }

    /// Starts `iii-bench relay` (this executable) on a free port.
    pub fn relay(threads: usize, nodelay: bool) -> Result<Spawned, String> {
        let threads = threads.to_string();
        let nodelay = if nodelay { "on" } else { "off" };
        let args = [
            "relay",
            "--port",
            "0",
            "--threads",
            &threads,
            "--nodelay",
            nodelay,
        ];
        Spawned::this_exe("relay", &args)
    }

    /// Starts `iii-bench http-direct` (this executable): the plain HTTP server `http --direct`
    /// measures.
    pub fn http_direct() -> Result<Spawned, String> {
        Spawned::this_exe("the direct HTTP server", &["http-direct"])
    }

    /// Runs this executable with `args` and `--ready-file`, and waits for its `{"url"}`.
    fn this_exe(what: &str, args: &[&str]) -> Result<Spawned, String> {
        let me =
            std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let dir = ScratchDir::new(args[0])?;
        let ready_file = dir.path().join("ready.json");
        let log = log_file(&dir)?;
        let child = Command::new(me)
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let (child, ready) = wait_ready(child, &dir, &ready_file, Duration::from_secs(10))?;
        let url = ready["url"]
            .as_str()
            .ok_or_else(|| format!("the ready file of {what} has no url: {ready}"))?
            .to_string();
        Ok(Spawned {
            child,
            dir,
            ready,
            url,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL of the engine's `i`-th worker listener (in config order).
    pub fn listener_url(&self, i: usize) -> Result<String, String> {
        self.ready["listeners"][i]["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "the engine's ready file has no listener {i}: {}",
                    self.ready
                )
            })
    }

    /// The URL of the engine's stream module.
    pub fn stream_url(&self) -> Result<String, String> {
        self.ready["stream"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the engine's ready file has no stream url: {}", self.ready))
    }

    /// Everything the child logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("process.log")).unwrap_or_default()
    }

    /// SIGTERM, wait up to `within`, then SIGKILL; returns how long the stop took.
    pub fn stop(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            while started.elapsed() < within {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        started.elapsed()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn log_file(dir: &ScratchDir) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("process.log"))
        .map_err(|e| format!("cannot create a log file: {e}"))
}

/// Writes the default config into `dir` and starts the engine there (not waiting for it).
pub fn start_engine(exe: &Path, dir: &ScratchDir, port: u16) -> Result<(Child, PathBuf), String> {
    start_engine_with(exe, dir, &engine_config(port), "warn")
}

/// Writes `config` into `dir` and starts the engine there with this `RUST_LOG` filter (not
/// waiting for it).
pub fn start_engine_with(
    exe: &Path,
    dir: &ScratchDir,
    config: &str,
    rust_log: &str,
) -> Result<(Child, PathBuf), String> {
    std::fs::write(dir.path().join("iii-config.yaml"), config)
        .map_err(|e| format!("cannot write the engine config: {e}"))?;
    let ready_file = dir.path().join("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let log = log_file(dir)?;
    let child = Command::new(exe)
        .current_dir(dir.path())
        .arg("--config")
        .arg("iii-config.yaml")
        .arg("--ready-file")
        .arg(&ready_file)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    Ok((child, ready_file))
}

/// Reads a ready file once it holds JSON; fails if the child exits first or `within` passes.
fn wait_ready(
    mut child: Child,
    dir: &ScratchDir,
    ready_file: &Path,
    within: Duration,
) -> Result<(Child, Value), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_file) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Ok((child, v));
            }
        }
        let log = || std::fs::read_to_string(dir.path().join("process.log")).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the child exited early ({status}):\n{}", log()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("not ready within {within:?}:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `redis-server` on a free port with a scratch directory and no persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: ScratchDir,
}

impl RedisServer {
    pub fn start(exe: &str) -> Result<RedisServer, String> {
        Self::start_with(exe, false)
    }

    /// `aof`: an append-only file fsynced once a second (`appendfsync everysec`), in the
    /// scratch directory; otherwise nothing is persisted.
    pub fn start_with(exe: &str, aof: bool) -> Result<RedisServer, String> {
        let dir = ScratchDir::new("redis")?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let persistence: &[&str] = if aof {
            &["--appendonly", "yes", "--appendfsync", "everysec"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new(exe)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {exe} ({e}): the cluster scenario needs a Redis server \
                     (Debian: apt-get install redis-server; or --redis-server PATH)"
                )
            })?;
        let mut redis = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                let log = std::fs::read_to_string(redis._dir.path().join("redis.log"));
                return Err(format!(
                    "{exe} exited ({status}):\n{}",
                    log.unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{exe} did not listen on port {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// `VmHWM` (the peak RSS since the process started) of a process, in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Raises this process's soft open-file limit to the hard limit; returns (soft, hard).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

/// The soft open-file limit of another process (from `/proc/<pid>/limits`).
pub fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// How many file descriptors a process has open now.
pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// CPU time a process has used so far: the sum of its threads' on-CPU nanoseconds from
/// `/proc/<pid>/task/*/schedstat` (threads that already exited are not counted), or the
/// coarser user + system ticks of `/proc/<pid>/stat` when schedstat is unavailable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut total_ns: u64 = 0;
        let mut any = false;
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                total_ns += ns;
                any = true;
            }
        }
        if any {
            return Some(Duration::from_nanos(total_ns));
        }
    }
    cpu_ticks(pid)
}

/// User + system CPU time from `/proc/<pid>/stat` (clock-tick resolution).
fn cpu_ticks(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are space-separated.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}
