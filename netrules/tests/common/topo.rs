//! A dual-stack test network built from `oxlet_e2e::netns` namespaces: a "node" routing between
//! a "client" and two "backend" namespaces, backends serving TCP and UDP, and the two rule
//! backends behind one applier. Nothing here touches the host's own namespace beyond creating
//! and deleting ours.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oxlet_e2e::netns::Netns;
// Used by traffic.rs only; the other test crates that include `common` leave it unused.
#[allow(unused_imports)]
pub use oxlet_e2e::netns_traffic::UdpClient;
use oxlet_e2e::netns_traffic::{addrs_up, default_routes, echo_lines, read_answer, veth};
use oxlet_netrules::apply::iptables::Iptables;
use oxlet_netrules::apply::nft::Nft;
use oxlet_netrules::apply::Command;
use oxlet_netrules::iptables::IptablesRules;
use oxlet_netrules::nft::Ruleset;
use oxlet_netrules::{Family, Model};

/// The node's address toward the client (also its NodePort address).
pub const NODE_ADDR: &str = "192.168.0.1";
/// The client's address.
pub const CLIENT_ADDR: &str = "192.168.0.2";
/// The node's IPv6 address toward the client.
pub const NODE_ADDR6: &str = "fd00:168::1";
/// The client's IPv6 address.
pub const CLIENT_ADDR6: &str = "fd00:168::2";
/// Backend 1 (this node's pod network 10.0.1.0/24).
pub const B1: &str = "10.0.1.2";
/// Backend 2.
pub const B2: &str = "10.0.2.2";
/// Backend 1, IPv6.
pub const B1_6: &str = "fd00:10:1::2";
/// Backend 2, IPv6.
pub const B2_6: &str = "fd00:10:2::2";
/// The node's address toward backend 1 (what b1 sees after masquerade).
pub const NODE_TO_B1: &str = "10.0.1.1";
/// Port where backends answer with `<name> <peer address>` and close.
pub const NAME_PORT: u16 = 8080;
/// Port where backends echo lines prefixed with their name, until the client closes.
pub const ECHO_PORT: u16 = 9090;
/// UDP port where backends answer each datagram with `<name> <peer address>`.
pub const UDP_PORT: u16 = 5353;

/// Runs a command in `ns`, failing with its stderr.
pub fn sh(ns: &Netns, argv: &[&str]) -> Result<String> {
    ns.exec(argv.iter().copied())
}

/// Runs a command in `ns` with `stdin`.
pub fn sh_stdin(ns: &Netns, argv: &[&str], stdin: &str) -> Result<String> {
    let (prog, rest) = argv.split_first().context("empty command")?;
    let mut cmd = ns.command(prog);
    cmd.args(rest)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().context("spawn nsenter")?;
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

/// A backend's servers (TCP name, TCP echo, UDP name), stopped on drop.
pub struct Backend {
    stop: Arc<AtomicBool>,
    fds: Vec<i32>,
    threads: Vec<JoinHandle<()>>,
    _sockets: Vec<Arc<dyn Send + Sync>>,
}

fn peer(addr: SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

impl Backend {
    /// Starts the three servers of backend `name` inside `ns`, on every address of both
    /// families (`[::]` accepts IPv4 too; peers are reported in canonical form).
    pub fn start(ns: &Netns, name: &'static str) -> Result<Self> {
        let (names, echo, udp) = ns.run_in(|| -> std::io::Result<_> {
            Ok((
                TcpListener::bind(("::", NAME_PORT))?,
                TcpListener::bind(("::", ECHO_PORT))?,
                UdpSocket::bind(("::", UDP_PORT))?,
            ))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let (names, echo, udp) = (Arc::new(names), Arc::new(echo), Arc::new(udp));
        let fds = vec![names.as_raw_fd(), echo.as_raw_fd()];
        let mut threads = Vec::new();
        {
            let l = names.clone();
            threads.push(std::thread::spawn(move || {
                // Ends when Drop shuts the socket down (accept then fails).
                for conn in l.incoming() {
                    let Ok(mut conn) = conn else { break };
                    let who = conn.peer_addr().map(peer);
                    let line = match who {
                        Ok(ip) => format!("{name} {ip}"),
                        Err(_) => name.to_string(),
                    };
                    let _ = conn.write_all(line.as_bytes());
                }
            }));
        }
        {
            let l = echo.clone();
            threads.push(std::thread::spawn(move || {
                for conn in l.incoming() {
                    let Ok(conn) = conn else { break };
                    std::thread::spawn(move || echo_lines(name, conn));
                }
            }));
        }
        {
            let s = udp.clone();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((_, from)) = s.recv_from(&mut buf) {
                        let line = format!("{name} {}", peer(from));
                        let _ = s.send_to(line.as_bytes(), from);
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            fds,
            threads,
            _sockets: vec![names, echo, udp],
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes the blocked accept() with EINVAL.
        for fd in &self.fds {
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// node ⇄ client (192.168.0.1/24 ⇄ .2, fd00:168::1/64 ⇄ ::2), node ⇄ backend1
/// (10.0.1.1/24 ⇄ .2, fd00:10:1::1/64 ⇄ ::2), node ⇄ backend2 (10.0.2.x, fd00:10:2::x).
/// The node's default route points at the client.
pub struct Topology {
    // Servers first: they stop before their namespaces go away.
    pub backends: Vec<Backend>,
    pub client: Netns,
    pub b1: Netns,
    pub b2: Netns,
    pub node: Netns,
}

impl Topology {
    pub fn new() -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            bail!("kernel tests need root (ip netns add, nft, iptables)");
        }
        let node = Netns::new("nrn")?;
        let client = Netns::new("nrc")?;
        let b1 = Netns::new("nrb")?;
        let b2 = Netns::new("nrb")?;
        sh(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        sh(&node, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        for (peer, ifname, v4, v6) in [
            (&client, "vc", "192.168.0", "fd00:168:"),
            (&b1, "vb1", "10.0.1", "fd00:10:1:"),
            (&b2, "vb2", "10.0.2", "fd00:10:2:"),
        ] {
            veth(&node, ifname, peer)?;
            // IPv6 addresses without duplicate detection: usable at once.
            for (ns, dev, suffix) in [(&node, ifname, "1"), (peer, "eth0", "2")] {
                addrs_up(
                    ns,
                    dev,
                    &[format!("{v4}.{suffix}/24"), format!("{v6}:{suffix}/64")],
                )?;
            }
            default_routes(peer, &[format!("{v4}.1"), format!("{v6}:1")])?;
        }
        // A default route, as a real node has: service and external addresses are routable,
        // so a connect gets as far as our hooks; unproxied packets end in the client
        // namespace, which forwards nothing.
        default_routes(&node, &[CLIENT_ADDR, CLIENT_ADDR6])?;
        let backends = vec![Backend::start(&b1, "b1")?, Backend::start(&b2, "b2")?];
        Ok(Self {
            backends,
            client,
            b1,
            b2,
            node,
        })
    }
}

/// What one connection attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server's answer, `<name> <peer address>`.
    Answer(String),
    /// connect() or the read failed with this error kind.
    Failed(std::io::ErrorKind),
}

impl Outcome {
    /// The answering backend's name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Outcome::Answer(a) => a.split_whitespace().next(),
            Outcome::Failed(_) => None,
        }
    }

    /// The client address the backend saw.
    pub fn peer(&self) -> Option<IpAddr> {
        match self {
            Outcome::Answer(a) => a.split_whitespace().nth(1)?.parse().ok(),
            Outcome::Failed(_) => None,
        }
    }
}

/// Connects `n` times to `addr` from inside `ns` (1 s connect timeout each).
pub fn connect_many(ns: &Netns, addr: SocketAddr, n: usize) -> Result<Vec<Outcome>> {
    ns.run_in(move || {
        (0..n)
            .map(|_| match read_answer(addr, Duration::from_secs(1)) {
                Ok(answer) => Outcome::Answer(answer),
                Err(e) => Outcome::Failed(e.kind()),
            })
            .collect()
    })
}

/// Counts answers per backend name; failures under "!<kind>".
pub fn tally(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        let k = match o {
            Outcome::Answer(_) => o.name().unwrap_or_default().to_string(),
            Outcome::Failed(k) => format!("!{k:?}"),
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Whether a failed connect means "dropped" (no answer within the timeout).
pub fn is_drop(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Failed(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
    )
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| panic!("bad address {s}"))
}

/// The two rule backends behind one interface: each `apply` moves the kernel from the last
/// applied rules to `model`'s, both families.
pub enum Rules {
    /// nft transactions from [`oxlet_netrules::nft::diff`].
    Nft {
        nft: Nft,
        applied: BTreeMap<Family, Ruleset>,
    },
    /// iptables-restore through [`Iptables`].
    Iptables {
        cmd: Command,
        applied: BTreeMap<Family, IptablesRules>,
    },
}

/// Which backend a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nft,
    Iptables,
}

impl Rules {
    pub fn new(mode: Mode, ns: &Netns) -> Self {
        let cmd = Command::in_netns(&ns.path());
        match mode {
            Mode::Nft => Rules::Nft {
                nft: Nft::new(cmd),
                applied: BTreeMap::new(),
            },
            Mode::Iptables => Rules::Iptables {
                cmd,
                applied: BTreeMap::new(),
            },
        }
    }

    /// Applies `model` for both families (partial nft transactions after the first).
    pub fn apply(&mut self, model: &Model) -> Result<()> {
        self.apply_with(model, false)
    }

    /// Applies `model` with a full nft sync (recreating the table), as after a restart.
    pub fn apply_full(&mut self, model: &Model) -> Result<()> {
        self.apply_with(model, true)
    }

    fn apply_with(&mut self, model: &Model, full: bool) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for family in [Family::V4, Family::V6] {
            match self {
                Rules::Nft { nft, applied } => {
                    let new = oxlet_netrules::nft::render(model, family);
                    let tx = if full {
                        oxlet_netrules::nft::full_sync(&new)
                    } else {
                        oxlet_netrules::nft::diff(applied.get(&family), &new)
                    };
                    rt.block_on(nft.apply(&tx))
                        .with_context(|| format!("nft {family:?}:\n{}", tx.to_nft_script()))?;
                    applied.insert(family, tx.into_applied());
                }
                Rules::Iptables { cmd, applied } => {
                    let rules = oxlet_netrules::iptables::render(model, family);
                    let previous = if full { None } else { applied.get(&family) };
                    rt.block_on(Iptables::new(cmd.clone(), family).apply(&rules, previous))
                        .with_context(|| format!("iptables {family:?}"))?;
                    applied.insert(family, rules);
                }
            }
        }
        Ok(())
    }

    /// Removes everything this backend installed.
    pub fn cleanup(&self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        match self {
            Rules::Nft { nft, .. } => rt.block_on(nft.cleanup())?,
            Rules::Iptables { cmd, .. } => {
                for family in [Family::V4, Family::V6] {
                    rt.block_on(Iptables::new(cmd.clone(), family).cleanup())?;
                }
            }
        }
        Ok(())
    }
}
