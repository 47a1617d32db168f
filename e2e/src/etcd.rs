//! A private etcd (Debian's etcd-server) on loopback: free ports, its own data dir, killed by
//! PID and removed on drop even when a test fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The etcd binary from Debian's etcd-server.
pub const ETCD: &str = "/usr/bin/etcd";

/// A running private etcd.
pub struct Etcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    /// Starts etcd and waits (up to 60 s) until `/health` says it is healthy.
    pub fn start() -> Result<Self> {
        if !std::path::Path::new(ETCD).exists() {
            bail!("{ETCD} missing: install Debian's etcd-server (make setup)");
        }
        let dir = tempfile::tempdir()?;
        let client_port = free_port()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        let mut etcd = Self {
            child,
            endpoint: client,
            dir,
        };
        etcd.wait_ready(client_port)?;
        Ok(etcd)
    }

    fn wait_ready(&mut self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                last = format!("etcd exited: {status}");
                break;
            }
            match health(port) {
                Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "etcd at {} not ready: {last}\n{}",
            self.endpoint,
            self.log()
        )
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// etcd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

fn health(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
