//! A private `docker-registry` (distribution 2.8) on loopback, optionally with htpasswd auth.
//!
//! Each registry has its own config, storage and log in a temp dir, runs inside a test's network
//! namespace when given one (so containerd in that namespace reaches it at 127.0.0.1), and is
//! stopped by PID when dropped. [`hosts_toml_dirs`] writes the containerd `certs.d` files that
//! mirror `docker.io` and `registry.k8s.io` to it, so `image: busybox` pulls offline.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::images::{self, BuiltImages};
use crate::netns::Netns;

/// The port a registry uses inside a namespace (free there: the namespace is the test's own).
pub const NETNS_PORT: u16 = 5000;
/// How long [`Registry::start`] waits for `GET /v2/` to answer.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`Drop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// bcrypt cost for the htpasswd entry: low, since it is verified on every request.
const BCRYPT_COST: u32 = 5;

/// A running `docker-registry serve`, stopped (SIGTERM, then SIGKILL) and cleaned up on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    netns: Option<String>,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry on 127.0.0.1, inside `netns` when given (port 5000 there, a free port
    /// on the host otherwise), with htpasswd basic auth when `auth` is `(user, password)`.
    /// Returns once `GET /v2/` answers 200 (401 with auth).
    pub fn start(netns: Option<&Netns>, auth: Option<(&str, &str)>) -> Result<Self> {
        // On the host a port found free may be taken before the registry binds it; retry then.
        let attempts = if netns.is_some() { 1 } else { 3 };
        let mut last_err = None;
        for _ in 0..attempts {
            match Self::start_once(netns, auth) {
                Ok(r) => return Ok(r),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry: no start attempt made")))
    }

    fn start_once(netns: Option<&Netns>, auth: Option<(&str, &str)>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oxlet-registry-")
            .tempdir()
            .context("create registry dir")?;
        let port = match netns {
            // A second, authenticated registry shares the namespace with the plain one.
            Some(_) if auth.is_some() => NETNS_PORT + 1,
            Some(_) => NETNS_PORT,
            None => free_host_port()?,
        };
        let addr = format!("127.0.0.1:{port}");
        let config = config_yaml(dir.path(), &addr, auth.is_some());
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)
            .with_context(|| format!("write {}", config_path.display()))?;
        if let Some((user, pass)) = auth {
            let hash = bcrypt::hash_with_result(pass, BCRYPT_COST)
                .context("bcrypt")?
                .format_for_version(bcrypt::Version::TwoY);
            fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))?;
        }
        fs::create_dir_all(dir.path().join("data"))?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;

        let mut cmd = match netns {
            Some(ns) => ns.command("docker-registry"),
            None => Command::new("docker-registry"),
        };
        cmd.arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // nsenter execs the program, so this PID is the registry's own.
        let child = cmd
            .spawn()
            .context("spawn docker-registry (Debian package docker-registry)")?;
        let mut reg = Self {
            child,
            dir,
            addr,
            netns: netns.map(|n| n.name().to_string()),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let want = if self.auth.is_some() { 401 } else { 200 };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry on {} exited early ({status}); log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            let last = match self.get("/v2/", false) {
                Ok((code, _)) if code == want => return Ok(()),
                Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "docker-registry on {} not ready after {START_DEADLINE:?} (last: {last}); log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, as seen from inside its namespace (or the host).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The registry process's PID (in the host's PID namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The namespace the registry runs in, if any.
    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// A plain HTTP `GET path` from the registry's namespace, with its credentials if
    /// `authenticated`; returns the status code and body.
    pub fn get(&self, path: &str, authenticated: bool) -> Result<(u16, String)> {
        let addr = self.addr.clone();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        // A manifest GET without Accept gets schema1 conversion errors; ask for what we push.
        request.push_str(
            "Accept: application/vnd.oci.image.manifest.v1+json, \
             application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json\r\n",
        );
        if let (true, Some((u, p))) = (authenticated, &self.auth) {
            request.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            ));
        }
        request.push_str("\r\n");
        in_netns(self.netns.as_deref(), move || http_get(&addr, &request))?
    }

    /// Pushes every standard image under the path containerd's mirror asks for:
    /// `library/busybox:{latest,1.35}`, `pause:3.10`, `oxlet/echoserver:latest`.
    pub fn push_standard_images(&self, images: &BuiltImages) -> Result<()> {
        for image in images.all() {
            let path = mirror_path(&image.name)?;
            for tag in &image.tags {
                let dest = format!("{}/{path}:{tag}", self.addr);
                images::push_in(
                    &image.layout,
                    tag,
                    &dest,
                    self.credentials(),
                    self.netns.as_deref(),
                )?;
            }
        }
        Ok(())
    }

    /// `<addr>/<path>` for a fully qualified reference, as a mirror serves it
    /// (`docker.io/library/busybox:latest` → `127.0.0.1:5000/library/busybox:latest`).
    pub fn mirrored(&self, reference: &str) -> Result<String> {
        Ok(format!("{}/{}", self.addr, mirror_path(reference)?))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    eprintln!(
                        "registry {}: no exit {STOP_GRACE:?} after SIGTERM, killing",
                        self.addr
                    );
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The temp dir (config, storage, log) is removed when `dir` drops.
    }
}

/// The repository path under a registry for a reference whose registry part is dropped.
fn mirror_path(reference: &str) -> Result<String> {
    let Some((registry, path)) = reference.split_once('/') else {
        bail!("{reference}: not a fully qualified reference");
    };
    if !registry.contains('.') && !registry.contains(':') {
        bail!("{reference}: not a fully qualified reference");
    }
    Ok(path.to_string())
}

fn config_yaml(dir: &Path, addr: &str, auth: bool) -> String {
    // The secret only signs upload state; uniqueness per registry is all it needs.
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        dir.display(),
        Instant::now()
    );
    let secret: String = Sha256::digest(seed.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        data = dir.join("data").display(),
    );
    if auth {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: oxlet-test-registry\n    path: {}\n",
            dir.join("htpasswd").display()
        ));
    }
    yaml
}

fn free_host_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Runs `f` on a thread that joined the named namespace (or directly, without one).
fn in_netns<F, T>(netns: Option<&str>, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(name) = netns else {
        return Ok(f());
    };
    let path = format!("/var/run/netns/{name}");
    let file = fs::File::open(&path).with_context(|| format!("open netns {path}"))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns {name} panicked"))?
}

/// One HTTP/1.1 request over a fresh connection; returns the status code and the body text.
fn http_get(addr: &str, request: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(
        &addr.parse().with_context(|| format!("parse {addr}"))?,
        Duration::from_secs(2),
    )
    .with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("read response from {addr}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr}: no HTTP status in {:?}", text.lines().next()))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes containerd `certs.d` mirror config for a plain-HTTP registry at `registry_addr`:
/// `docker.io/hosts.toml` and `registry.k8s.io/hosts.toml` (pull and resolve through it), and
/// `<registry_addr>/hosts.toml` for pulling from it by its own address.
pub fn hosts_toml_dirs(certs_d: &Path, registry_addr: &str) -> Result<()> {
    let mirror = |server: &str| {
        format!(
            "server = \"{server}\"\n\n\
             [host.\"http://{registry_addr}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n  \
             skip_verify = true\n"
        )
    };
    let files = [
        ("docker.io", mirror("https://registry-1.docker.io")),
        ("registry.k8s.io", mirror("https://registry.k8s.io")),
    ];
    for (host, text) in files {
        write_hosts_toml(certs_d, host, &text)?;
    }
    direct_hosts_toml(certs_d, registry_addr)
}

/// Writes `certs.d/<addr>/hosts.toml` so references naming `registry_addr` itself are pulled
/// over plain HTTP (containerd would try HTTPS first otherwise).
pub fn direct_hosts_toml(certs_d: &Path, registry_addr: &str) -> Result<()> {
    let text = format!(
        "server = \"http://{registry_addr}\"\n\n\
         [host.\"http://{registry_addr}\"]\n  \
         capabilities = [\"pull\", \"resolve\", \"push\"]\n  \
         skip_verify = true\n"
    );
    write_hosts_toml(certs_d, registry_addr, &text)
}

fn write_hosts_toml(certs_d: &Path, host: &str, text: &str) -> Result<()> {
    let dir = certs_d.join(host);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("hosts.toml");
    fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn mirror_path_drops_the_registry() {
        assert_eq!(
            mirror_path("docker.io/library/busybox").ok().as_deref(),
            Some("library/busybox")
        );
        assert_eq!(
            mirror_path("registry.k8s.io/pause:3.10").ok().as_deref(),
            Some("pause:3.10")
        );
        assert!(mirror_path("library/busybox").is_err());
    }
}
