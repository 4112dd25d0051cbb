//! A real `redis-server` for the scale-out tests: started on a free port with a temporary
//! directory (no snapshots; or, [`RedisProc::start_durable`], an append-only file fsynced on
//! every write), stopped when dropped and restartable on the same port and directory. A
//! missing `redis-server` fails the test and says how to install it.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisProc {
    child: Child,
    pub port: u16,
    durable: bool,
    _dir: tempfile::TempDir,
}

impl RedisProc {
    pub fn start() -> RedisProc {
        Self::launch(tempfile::tempdir().expect("temp dir"), None, false)
    }

    /// With `appendonly yes` and `appendfsync always`: every write Redis answered survives a
    /// SIGKILL.
    pub fn start_durable() -> RedisProc {
        Self::launch(tempfile::tempdir().expect("temp dir"), None, true)
    }

    /// After [`RedisProc::kill`]: the same port and directory (and so the same data).
    pub fn restart(&mut self) {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
        let again = Self::launch(dir, Some(self.port), self.durable);
        // The old value holds the dead process and an empty placeholder directory.
        drop(std::mem::replace(self, again));
    }

    fn launch(dir: tempfile::TempDir, port: Option<u16>, durable: bool) -> RedisProc {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        });
        let aof: &[&str] = if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run scripts/setup-test-deps (it installs Debian's redis-server)")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisProc {
            child,
            port,
            durable,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: Redis is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}
