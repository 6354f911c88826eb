//! A `redis-server` of a test's own, on a free loopback port, its data (AOF,
//! fsync on every write) in a temporary directory, so that a test can kill it and
//! bring it back with its data, or empty.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestRedis {
    pub async fn start() -> anyhow::Result<Self> {
        let mut last = None;
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut r = Self {
                port,
                dir: tempfile::tempdir()?,
                child: None,
            };
            match r.run().await {
                Ok(()) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
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

    /// Whether it answers PING.
    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf))
                .await
                .is_ok_and(|r| r.is_ok())
            && &buf == b"+PONG\r\n"
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
