//! `oxlet server` as a test fixture: a private data dir, a free port on loopback, SQLite or a
//! private etcd, and the real kubectl pointed at it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::etcd::Etcd;

/// The real kubectl (a dispatcher picking `kubectl.1.NN` by the server's minor version).
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Which store the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in the data dir.
    Sqlite,
    /// A private etcd started with the server.
    Etcd,
}

/// A running `oxlet server`.
pub struct TestServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// Dropped after the server process.
    etcd: Option<Etcd>,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts `bin server` and waits until it is ready and `admin.kubeconfig` exists.
    pub fn start(bin: &Path, backend: Backend, extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("oxt-srv-").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let etcd = match backend {
            Backend::Sqlite => None,
            Backend::Etcd => Some(Etcd::start()?),
        };
        let mut args = vec![
            "server".to_string(),
            "--data-dir".to_string(),
            dir.path().display().to_string(),
            "--bind-address".to_string(),
            "127.0.0.1".to_string(),
            "--secure-port".to_string(),
            port.to_string(),
        ];
        if let Some(e) = &etcd {
            args.push("--etcd-servers".to_string());
            args.push(e.endpoint().to_string());
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut me = Self {
            bin: bin.to_path_buf(),
            child: None,
            port,
            args,
            etcd,
            dir,
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(90))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("oxlet server exited ({status}):\n{}", self.log());
                }
            }
            if self.kubeconfig().exists() {
                match self.kubectl(&["get", "--raw", "/readyz"]) {
                    Ok(out) if out.status.success() => return Ok(()),
                    Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "oxlet server not ready after {timeout:?}: {last}\n{}",
            self.log()
        )
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server process's PID while it runs (for /proc readings such as RSS and CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The etcd endpoint when the backend is etcd.
    pub fn etcd_endpoint(&self) -> Option<String> {
        self.etcd.as_ref().map(|e| e.endpoint().to_string())
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .context("run kubectl")
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<Output> {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Runs kubectl and returns stdout; fails with stderr when kubectl fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server with SIGTERM (or SIGKILL when `kill`), waiting for it to exit.
    pub fn stop(&mut self, kill: bool) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let sig = if kill {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("oxlet server ignored {sig} for 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Stops and starts the server again on the same data dir and port.
    pub fn restart(&mut self, kill: bool) -> Result<()> {
        self.stop(kill)?;
        self.spawn()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
