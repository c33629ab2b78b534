//! A `redis-server` of a test's own: Debian's binary, on a free port of
//! loopback, in a temporary directory, never a system service; killed when
//! dropped.
//!
//! Without `redis-server` on `PATH`, [`RedisServer::start`] says loudly
//! that the test is skipped and returns `None`, unless
//! `FLOW_REQUIRE_REDIS=1` (as in CI), which makes it a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> Option<RedisServer> {
        Self::launch(false)
    }

    /// Starts a server that writes every change to its append-only file
    /// before it answers (`appendfsync always`), so that a `kill -9` and
    /// [`RedisServer::restart`] lose nothing it acknowledged.
    pub fn start_persistent() -> Option<RedisServer> {
        Self::launch(true)
    }

    /// Starts a server that keeps nothing on disk, on `port` (one the test
    /// picked with [`free_port`] earlier).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        Self::launch_on(port, false)
    }

    fn launch(persistent: bool) -> Option<RedisServer> {
        Self::launch_on(free_port(), persistent)
    }

    fn launch_on(port: u16, persistent: bool) -> Option<RedisServer> {
        binary()?;
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
            persistent,
        };
        server.spawn();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("the test's redis-server answers")
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.connect())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// How many entries the group has pending, on every consumer.
    pub fn pending(&self, stream: &str, group: &str) -> u64 {
        let reply: redis::Value = self.cmd(&["XPENDING", stream, group]);
        match reply {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                other => panic!("XPENDING: {other:?}"),
            },
            other => panic!("XPENDING: {other:?}"),
        }
    }

    /// The IDs pending on `consumer`, oldest first.
    pub fn pending_ids(&self, stream: &str, group: &str, consumer: &str) -> Vec<String> {
        let rows: Vec<(String, String, u64, u64)> =
            self.cmd(&["XPENDING", stream, group, "-", "+", "1000000", consumer]);
        rows.into_iter().map(|(id, ..)| id).collect()
    }

    /// How many times entry `id` has been delivered (0: not pending).
    pub fn deliveries(&self, stream: &str, group: &str, id: &str) -> u64 {
        let rows: Vec<(String, String, u64, u64)> =
            self.cmd(&["XPENDING", stream, group, id, id, "1"]);
        rows.first().map_or(0, |r| r.3)
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, on the same port and directory (a
    /// persistent one loads what it had written).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path();
        let mut cmd = Command::new(binary().expect("redis-server was found"));
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
        cmd.arg("--dir").arg(dir);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.arg("--logfile").arg(dir.join("redis.log"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("redis-server starts");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls with PING until the server answers (loading its data
    /// included), for up to 10 s.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("a valid URL");
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("redis.log"))
                        .unwrap_or_default();
                    panic!(
                        "redis-server on port {} did not answer: {e}\n{log}",
                        self.port
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The server's directory (its log is `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port of loopback nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `redis-server` on `PATH`; `None` (said loudly) when it is missing,
/// unless `FLOW_REQUIRE_REDIS=1`, which makes that a failure.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("FLOW_REQUIRE_REDIS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FLOW_REQUIRE_REDIS=1 but redis-server is not on PATH (apt-get install redis-server)"
        );
        // Straight to stderr: the test harness would hide an eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: redis-server is not installed: the Redis stages were not \
             tested (apt-get install redis-server; FLOW_REQUIRE_REDIS=1 makes this a \
             failure) !!!!!!!!\n"
        );
    }
    found
}
