//! The exec module (`iii-exec`): an `ExecActor` per config entry that runs its commands and
//! keeps the long-running one healthy (`PROTOCOL.md` §8, `RELIABILITY.md` §1.8 and F9–F12).
//!
//! An entry's `exec` list is a pipeline, as upstream: every command but the last is a setup
//! step that must exit 0 (a failing step is retried with backoff); the last one is the
//! long-running worker, restarted by its `restart` policy (`always` by default, `on-failure`,
//! `never`) with backoff 1 s doubling to 30 s, reset once it has stayed up 60 s.
//!
//! Each command runs as `sh -c <command>` in the engine's working directory (or its `cwd`),
//! with its `env` and `III_URL` set to the engine's trusted listener, in a process group of its
//! own; its stdout and stderr go to the engine log line by line, prefixed with its name.
//! Nothing outlives its command: when the group's leader exits (crash, exit, or a stop), what
//! it left behind in its group gets SIGTERM, then SIGKILL after `stop_grace_ms`, before the
//! next run starts; on shutdown the engine waits for the whole group; if the engine is killed
//! outright, the leader dies with it (parent-death signal, Linux only) and a guardian process —
//! a tiny `sh` that blocks reading a pipe whose write end only the engine holds — kills the
//! rest of the group when the pipe closes.
//!
//! Portability: Unix only (process groups, signals). The parent-death signal and reading
//! `/proc` to see whether a group still has live members are Linux's; elsewhere the guardian
//! alone covers a killed engine, and `kill(-pgid, 0)` tells whether a group is still there.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{ExecConfig, ExecEntry, RestartPolicy};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a stopping process group is checked for stragglers.
const GROUP_POLL: Duration = Duration::from_millis(50);
/// A command that stays up this long is healthy: its backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Stop every process and answer when they are gone.
#[derive(Message)]
#[rtype(result = "()")]
struct Stop(oneshot::Sender<()>);

/// A started exec module.
pub struct ExecModule {
    addr: Addr<ExecActor>,
}

/// Starts the pipeline of one `iii-exec` entry; `iii_url` is the trusted listener's URL;
/// restarts are counted in `restarts` (for `/metrics`).
pub fn start(
    index: usize,
    config: &ExecConfig,
    iii_url: String,
    restarts: Arc<AtomicU64>,
) -> ExecModule {
    let actor = ExecActor {
        restarts,
        index,
        entries: config.exec.clone(),
        grace: Duration::from_millis(config.stop_grace_ms),
        iii_url,
        step: 0,
        running: None,
        failures: 0,
        stopped: false,
        stopping: None,
        reaping: None,
    };
    ExecModule {
        addr: actor.start(),
    }
}

impl ExecModule {
    /// SIGTERM, then SIGKILL after the grace period; returns when every process is gone.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.addr.send(Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The process currently running for this entry.
struct Running {
    pid: i32,
    started: Instant,
    guardian: Option<std::process::Child>,
    lifeline: Option<OwnedFd>,
}

struct ExecActor {
    /// Restarts after an exit or a failed setup step.
    restarts: Arc<AtomicU64>,
    index: usize,
    entries: Vec<ExecEntry>,
    grace: Duration,
    iii_url: String,
    /// The pipeline step running (or to run next).
    step: usize,
    running: Option<Running>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// The engine is shutting down: start nothing new.
    stopped: bool,
    /// Answered when the running process has exited after a stop.
    stopping: Option<oneshot::Sender<()>>,
    /// A leader that exited while processes of its group lived on: them, since when they are
    /// being stopped, and how the leader ended.
    reaping: Option<(Running, Instant, io::Result<ExitStatus>)>,
}

impl ExecActor {
    fn label(&self) -> String {
        let e = &self.entries[self.step];
        match &e.name {
            Some(n) => n.clone(),
            None => {
                let short: String = e.command.chars().take(40).collect();
                format!("exec[{}] {short}", self.index)
            }
        }
    }

    fn is_last(&self) -> bool {
        self.step + 1 == self.entries.len()
    }

    fn spawn_step(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let entry = self.entries[self.step].clone();
        let label = self.label();
        match spawn(&entry, &self.iii_url) {
            Ok((mut child, guardian, lifeline)) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                log::info!("{label}: started `{}` (pid {pid})", entry.command);
                relay(child.stdout.take(), label.clone(), false);
                relay(child.stderr.take(), label, true);
                self.running = Some(Running {
                    pid,
                    started: Instant::now(),
                    guardian,
                    lifeline,
                });
                let wait = async move { child.wait().await };
                ctx.spawn(
                    wait.into_actor(self)
                        .map(|status, act, ctx| act.on_exit(status, ctx)),
                );
            }
            Err(e) => {
                let cwd = entry
                    .cwd
                    .as_ref()
                    .map(|c| format!(" in {}", c.display()))
                    .unwrap_or_default();
                log::error!("{label}: cannot start `{}`{cwd}: {e}", entry.command);
                self.retry_later(ctx);
            }
        }
    }

    fn on_exit(&mut self, status: io::Result<ExitStatus>, ctx: &mut Context<Self>) {
        let label = self.label();
        if self.stopped {
            log::info!(
                "{label}: leader exited ({}); waiting for the rest of its group",
                describe(&status)
            );
            return self.finish_stop(ctx);
        }
        let Some(run) = self.running.take() else {
            return;
        };
        let uptime = run.started.elapsed();
        let pid = run.pid;
        if group_alive(pid) {
            // The leader is gone but left processes in its group (`sleep 300 & exit 1`): they
            // go too, before anything runs again. The guardian stays until they have.
            log::info!("{label}: leader exited; stopping what it left in process group {pid}");
            signal_group(pid, libc::SIGTERM);
            self.reaping = Some((run, Instant::now(), status));
            return self.reap_leftovers(ctx);
        }
        release(run);
        self.after_exit(status, uptime, ctx);
    }

    /// Waits for the leftovers of an exited leader's group (SIGKILL after the grace period),
    /// then goes on as if the leader had just exited.
    fn reap_leftovers(&mut self, ctx: &mut Context<Self>) {
        let Some((run, since, _)) = &self.reaping else {
            return;
        };
        let pid = run.pid;
        if group_alive(pid) {
            if since.elapsed() >= self.grace {
                signal_group(pid, libc::SIGKILL);
            }
            ctx.run_later(GROUP_POLL, |act, ctx| act.reap_leftovers(ctx));
            return;
        }
        let Some((run, _, status)) = self.reaping.take() else {
            return;
        };
        let uptime = run.started.elapsed();
        release(run);
        if let Some(done) = self.stopping.take() {
            log::info!("{}: stopped", self.label());
            let _ = done.send(());
            return;
        }
        self.after_exit(status, uptime, ctx);
    }

    /// What happens after a command exited: the next pipeline step, a restart, or nothing.
    fn after_exit(
        &mut self,
        status: io::Result<ExitStatus>,
        uptime: Duration,
        ctx: &mut Context<Self>,
    ) {
        let label = self.label();
        if self.stopped {
            return;
        }
        let success = matches!(&status, Ok(s) if s.success());
        let how = describe(&status);
        if !self.is_last() {
            if success {
                log::info!("{label}: finished ({how})");
                self.step += 1;
                self.failures = 0;
                return self.spawn_step(ctx);
            }
            log::error!("{label}: setup step failed ({how})");
            return self.retry_later(ctx);
        }
        let restart = match self.entries[self.step].restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        if !restart {
            log::warn!("{label}: exited ({how}); not restarted (restart policy)");
            return;
        }
        if uptime >= HEALTHY_AFTER {
            self.failures = 0;
        }
        log::warn!("{label}: exited ({how}) after {:.1}s", uptime.as_secs_f64());
        self.retry_later(ctx);
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        self.failures += 1;
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let delay = backoff(self.failures);
        let label = self.label();
        if self.failures >= 5 {
            log::error!(
                "{label}: crash loop: {} failures in a row; next attempt in {}s",
                self.failures,
                delay.as_secs()
            );
        } else {
            log::info!("{label}: restarting in {}s", delay.as_secs());
        }
        ctx.run_later(delay, |act, ctx| act.spawn_step(ctx));
    }

    fn stop(&mut self, done: oneshot::Sender<()>, ctx: &mut Context<Self>) {
        self.stopped = true;
        if self.reaping.is_some() {
            // Leftovers of an exited leader are being stopped already; answer when they are gone.
            self.stopping = Some(done);
            return;
        }
        let Some(run) = &self.running else {
            let _ = done.send(());
            return;
        };
        let pid = run.pid;
        log::info!(
            "{}: stopping (SIGTERM to process group {pid})",
            self.label()
        );
        signal_group(pid, libc::SIGTERM);
        self.stopping = Some(done);
        ctx.run_later(self.grace, move |act, _| {
            if act.running.as_ref().is_some_and(|r| r.pid == pid) && group_alive(pid) {
                log::warn!(
                    "{}: still running after {:?}; SIGKILL",
                    act.label(),
                    act.grace
                );
                signal_group(pid, libc::SIGKILL);
            }
        });
    }

    /// After the leader exits during a stop: done once no process of its group is left (the
    /// grace timer SIGKILLs stragglers).
    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &self.running else {
            return;
        };
        if group_alive(run.pid) {
            ctx.run_later(GROUP_POLL, |act, ctx| act.finish_stop(ctx));
            return;
        }
        if let Some(run) = self.running.take() {
            release(run);
        }
        log::info!("{}: stopped", self.label());
        if let Some(done) = self.stopping.take() {
            let _ = done.send(());
        }
    }
}

/// Is any live (non-zombie) process left in process group `pgid`?
#[cfg(not(target_os = "linux"))]
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists; nothing is sent.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Is any live (non-zombie) process left in process group `pgid`?
#[cfg(target_os = "linux")]
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After "pid (comm) ": state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX)
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(127), _) => "exit status 127: command not found".into(),
            (Some(126), _) => "exit status 126: command not executable".into(),
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "ended".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

fn signal_group(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe { libc::kill(-pid, sig) };
    }
}

/// Ends the guardian of a process that exited normally (it must not act any more).
fn release(run: Running) {
    drop(run.lifeline);
    if let Some(mut g) = run.guardian {
        let _ = g.kill();
        let _ = g.wait();
    }
}

/// Starts `sh -c <command>` in its own process group, plus its guardian.
fn spawn(
    entry: &ExecEntry,
    iii_url: &str,
) -> io::Result<(
    tokio::process::Child,
    Option<std::process::Child>,
    Option<OwnedFd>,
)> {
    if let Some(cwd) = &entry.cwd {
        if !cwd.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the cwd is not a directory",
            ));
        }
    }
    let engine_pid = std::process::id() as i32;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&entry.command)
        .env("III_URL", iii_url)
        .envs(entry.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(cwd) = &entry.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    #[allow(unused_unsafe)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            die_with_parent();
            if libc::getppid() != engine_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let (guardian, lifeline) = match guard(pid) {
        Ok((g, fd)) => (Some(g), Some(fd)),
        Err(e) => {
            log::warn!("process group {pid}: no guardian ({e}); it may outlive a killed engine");
            (None, None)
        }
    };
    Ok((child, guardian, lifeline))
}

/// Between fork and exec: the child gets SIGKILL when the engine dies (Linux).
#[cfg(target_os = "linux")]
fn die_with_parent() {
    // SAFETY: prctl is async-signal-safe and only changes this process's own setting.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// Elsewhere there is no parent-death signal: the guardian covers a killed engine.
#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}

/// A pipe whose ends are closed in every child that is not given them explicitly.
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[cfg(target_os = "linux")]
    // SAFETY: pipe2 fills two fds we then own; O_CLOEXEC keeps them out of other children.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0;
    #[cfg(not(target_os = "linux"))]
    // SAFETY: pipe fills two fds we then own; each is marked close-on-exec at once.
    let made = unsafe {
        libc::pipe(fds.as_mut_ptr()) == 0
            && libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) == 0
            && libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC) == 0
    };
    if !made {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A guardian: `sh` blocked on a pipe; when the engine dies the pipe closes and it kills
/// process group `pgid`. Returns it and the pipe's write end (held only by the engine).
fn guard(pgid: i32) -> io::Result<(std::process::Child, OwnedFd)> {
    let (read, write) = cloexec_pipe()?;
    let guardian = std::process::Command::new("sh")
        .arg("-c")
        .arg("read _ || true; kill -s KILL -- \"-$0\" 2>/dev/null")
        .arg(pgid.to_string())
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok((guardian, write))
}

/// Copies a child's output to the engine log, one line at a time.
fn relay<R>(pipe: Option<R>, label: String, stderr: bool)
where
    R: tokio::io::AsyncRead + Unpin + 'static,
{
    let Some(pipe) = pipe else {
        return;
    };
    actix::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if stderr {
                log::info!(target: "iii::exec", "[{label}!] {line}");
            } else {
                log::info!(target: "iii::exec", "[{label}] {line}");
            }
        }
    });
}

impl Actor for ExecActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.spawn_step(ctx);
    }
}

impl Handler<Stop> for ExecActor {
    type Result = ();
    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        self.stop(msg.0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn exit_statuses_are_described() {
        assert_eq!(
            describe(&Ok(ExitStatus::from_raw(127 << 8))),
            "exit status 127: command not found"
        );
        assert_eq!(describe(&Ok(ExitStatus::from_raw(1 << 8))), "exit status 1");
        assert_eq!(describe(&Ok(ExitStatus::from_raw(9))), "killed by signal 9");
    }
}
