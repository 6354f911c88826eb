//! A `redis-server` of a test's own, on a free loopback port, its data (AOF,
//! fsync on every write) in a temporary directory, so that a test can kill it and
//! bring it back with its data, or empty. Also over TLS only (with client
//! certificates required, Redis's default), as a replica of another, and as a
//! Redis Sentinel watching a master.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// How a test server runs.
#[derive(Clone, Debug)]
enum Mode {
    Plain,
    /// TLS only, on `port`: the server's certificate and key, and the CA whose
    /// client certificates it accepts.
    Tls { cert: PathBuf, key: PathBuf, ca: PathBuf },
    /// A replica of the server on this port.
    ReplicaOf(u16),
    /// A sentinel monitoring master `name` on this port (quorum 1), declaring it
    /// down after `down_after`.
    Sentinel { name: String, master: u16, down_after: Duration },
}

pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    mode: Mode,
}

impl TestRedis {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_as(Mode::Plain).await
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by
    /// `ca`, and that requires client certificates signed by `ca`.
    pub async fn start_tls(ca: &crate::TestCa) -> anyhow::Result<Self> {
        let (cert, key) = ca.server_files();
        Self::start_as(Mode::Tls { cert, key, ca: ca.ca_pem.clone() }).await
    }

    /// A replica of `master` (plain).
    pub async fn start_replica_of(master: &TestRedis) -> anyhow::Result<Self> {
        Self::start_as(Mode::ReplicaOf(master.port)).await
    }

    /// A Redis Sentinel monitoring `master` under `name` (quorum 1).
    pub async fn start_sentinel(name: &str, master: &TestRedis, down_after: Duration) -> anyhow::Result<Self> {
        Self::start_as(Mode::Sentinel { name: name.into(), master: master.port, down_after }).await
    }

    async fn start_as(mode: Mode) -> anyhow::Result<Self> {
        let mut last = None;
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut r = Self {
                port,
                dir: tempfile::tempdir()?,
                child: None,
                mode: mode.clone(),
            };
            match r.run().await {
                Ok(()) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    pub fn url(&self) -> String {
        match self.mode {
            Mode::Tls { .. } => format!("rediss://127.0.0.1:{}/0", self.port),
            _ => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// `host:port`, as `control_plane.redis_sentinels` lists a sentinel.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if let Mode::Sentinel { name, master, down_after } = &self.mode {
            // A sentinel rewrites its config file, so it gets one of its own.
            let conf = self.dir.path().join("sentinel.conf");
            if !conf.exists() {
                let ms = down_after.as_millis();
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {name} 127.0.0.1 {master} 1\n\
                         sentinel down-after-milliseconds {name} {ms}\n\
                         sentinel failover-timeout {name} {}\n",
                        ms * 3
                    ),
                )?;
            }
            cmd.arg(conf).arg("--sentinel");
        }
        match &self.mode {
            Mode::Tls { cert, key, ca } => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca);
            }
            _ => {
                cmd.args(["--port", &port]);
            }
        }
        if let Mode::ReplicaOf(master) = self.mode {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        if !matches!(self.mode, Mode::Sentinel { .. }) {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .args(["--protected-mode", "no", "--loglevel", "notice"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server (Debian's redis-server package; scripts/test installs it)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!("redis-server on port {} exited: {status}", self.port);
            }
            if self.ping().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                bail!("redis-server on port {} did not answer within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers PING (over TLS: whether its log says it is ready).
    pub async fn ping(&self) -> bool {
        if matches!(self.mode, Mode::Tls { .. }) {
            return std::fs::read_to_string(self.log()).is_ok_and(|l| l.contains("Ready to accept connections"));
        }
        self.command("PING").await.is_ok_and(|r| r == "+PONG")
    }

    /// Sends one inline command (plain servers and sentinels) and returns the
    /// first line of the answer.
    pub async fn command(&self, line: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut s = tokio::io::BufReader::new(s);
        s.get_mut().write_all(format!("{line}\r\n").as_bytes()).await?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut answer))
            .await
            .context("no answer within 5 s")??;
        Ok(answer.trim_end().to_owned())
    }

    /// Kills it (SIGKILL): what it fsynced stays in its directory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port; with `keep_data = false`, empty.
    pub async fn restart(&mut self, keep_data: bool) -> anyhow::Result<()> {
        self.kill();
        if !keep_data {
            for e in std::fs::read_dir(self.dir.path())? {
                let p = e?.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(p)?;
                } else {
                    std::fs::remove_file(p)?;
                }
            }
        }
        // The port can linger briefly after the kill.
        let mut last = None;
        for _ in 0..20 {
            match self.run().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.expect("tried"))
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
