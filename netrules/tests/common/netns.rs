//! Private network namespaces for kernel tests: a "node" routing between a "client" and two
//! "backend" namespaces, servers and clients running on threads moved into a namespace.
//! Nothing here touches the host's own namespace beyond creating and deleting ours.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, failing with its stderr.
pub fn run(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("spawn {argv:?}"))?;
    if !out.status.success() {
        bail!(
            "{argv:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            bail!("kernel tests need root (ip netns add, nft)");
        }
        let name = format!(
            "oxl{}-{}-{role}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let net = format!("--net={}", self.path());
        let mut full = vec!["nsenter", net.as_str()];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Runs a command inside the namespace with `stdin`.
    pub fn run_stdin(&self, argv: &[&str], stdin: &str) -> Result<String> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("spawn nsenter")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{argv:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let path = self.path();
        Ok(std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        }))
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A TCP server answering every connection with its name, on a thread inside a namespace.
pub struct Server {
    fd: i32,
    handle: Option<JoinHandle<Result<Result<()>>>>,
}

impl Server {
    pub fn start(ns: &Netns, port: u16, name: &str) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let name = name.to_owned();
        let handle = ns.spawn(move || -> Result<()> {
            let listener = TcpListener::bind(("0.0.0.0", port))?;
            let _ = tx.send(listener.as_raw_fd());
            // Ends when Drop shuts the socket down (accept then fails).
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let _ = conn.write_all(name.as_bytes());
            }
            Ok(())
        })?;
        let fd = rx
            .recv_timeout(Duration::from_secs(5))
            .context("server did not start")?;
        Ok(Self {
            fd,
            handle: Some(handle),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Shutting a listening socket down wakes the blocked accept() with EINVAL.
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What one connection attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server's name.
    Answer(String),
    /// connect() failed with this error kind.
    Failed(std::io::ErrorKind),
}

/// Connects `n` times to `addr` from inside `ns` (1 s connect timeout each).
pub fn connect_many(ns: &Netns, addr: SocketAddr, n: usize) -> Result<Vec<Outcome>> {
    ns.within(move || {
        (0..n)
            .map(
                |_| match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(mut s) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = String::new();
                        match s.read_to_string(&mut buf) {
                            Ok(_) => Outcome::Answer(buf),
                            Err(e) => Outcome::Failed(e.kind()),
                        }
                    }
                    Err(e) => Outcome::Failed(e.kind()),
                },
            )
            .collect()
    })
}

/// Counts answers per server name; failures under "!<kind>".
pub fn tally(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for o in outcomes {
        let k = match o {
            Outcome::Answer(a) => a.clone(),
            Outcome::Failed(k) => format!("!{k:?}"),
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Retries `f` until it returns `Ok(Some)` or the deadline passes (then the last state).
pub fn eventually<T>(
    deadline: Duration,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T> {
    let end = Instant::now() + deadline;
    let mut last = String::from("never ran");
    while Instant::now() < end {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        std::thread::yield_now();
    }
    bail!("condition not met within {deadline:?}; last state: {last}")
}

/// node ⇄ client (192.168.0.1/24 ⇄ .2), node ⇄ backend1 (10.0.1.1/24 ⇄ .2),
/// node ⇄ backend2 (10.0.2.1/24 ⇄ .2); backends serve their name on :8080.
pub struct Topology {
    pub servers: Vec<Server>,
    pub client: Netns,
    pub b1: Netns,
    pub b2: Netns,
    pub node: Netns,
}

pub const NODE_ADDR: &str = "192.168.0.1";
pub const B1: &str = "10.0.1.2";
pub const B2: &str = "10.0.2.2";

impl Topology {
    pub fn new() -> Result<Self> {
        let node = Netns::new("node")?;
        let client = Netns::new("client")?;
        let b1 = Netns::new("b1")?;
        let b2 = Netns::new("b2")?;
        node.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for (peer, ifname, node_addr, peer_addr) in [
            (&client, "vc", "192.168.0.1/24", "192.168.0.2/24"),
            (&b1, "vb1", "10.0.1.1/24", "10.0.1.2/24"),
            (&b2, "vb2", "10.0.2.1/24", "10.0.2.2/24"),
        ] {
            node.run(&[
                "ip", "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns",
                &peer.name,
            ])?;
            node.run(&["ip", "addr", "add", node_addr, "dev", ifname])?;
            node.run(&["ip", "link", "set", ifname, "up"])?;
            peer.run(&["ip", "addr", "add", peer_addr, "dev", "eth0"])?;
            peer.run(&["ip", "link", "set", "eth0", "up"])?;
            let gw = node_addr.split('/').next().unwrap_or_default();
            peer.run(&["ip", "route", "add", "default", "via", gw])?;
        }
        // Service addresses are virtual: route them somewhere so the node's own connects get
        // as far as the output hook (the rules then DNAT or reject them).
        node.run(&["ip", "route", "add", "172.30.0.0/16", "dev", "vc"])?;
        let servers = vec![
            Server::start(&b1, 8080, "b1")?,
            Server::start(&b2, 8080, "b2")?,
        ];
        Ok(Self {
            servers,
            client,
            b1,
            b2,
            node,
        })
    }
}
