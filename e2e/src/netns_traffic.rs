//! Traffic between test namespaces: veth wiring, and the small servers and clients that the
//! proxy and rule tests run in them (see [`crate::netns`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;

/// Creates a veth pair: `node_if` in `node`, its peer `eth0` in `peer` (both still down).
pub fn veth(node: &Netns, node_if: &str, peer: &Netns) -> Result<()> {
    node.exec([
        "ip",
        "link",
        "add",
        node_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ])?;
    Ok(())
}

/// Adds `cidrs` (`addr/len`, in order) to `dev` in `ns`, then brings `dev` up. IPv6 addresses
/// skip duplicate detection (`nodad`), so they are usable at once.
pub fn addrs_up(ns: &Netns, dev: &str, cidrs: &[impl AsRef<str>]) -> Result<()> {
    for cidr in cidrs {
        let cidr = cidr.as_ref();
        if cidr.contains(':') {
            ns.exec(["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            ns.exec(["ip", "addr", "add", cidr, "dev", dev])?;
        }
    }
    ns.exec(["ip", "link", "set", dev, "up"])?;
    Ok(())
}

/// Adds a default route in `ns` via each of `gateways` (`ip -6` for IPv6 ones).
pub fn default_routes(ns: &Netns, gateways: &[impl AsRef<str>]) -> Result<()> {
    for gw in gateways {
        let gw = gw.as_ref();
        if gw.contains(':') {
            ns.exec(["ip", "-6", "route", "add", "default", "via", gw])?;
        } else {
            ns.exec(["ip", "route", "add", "default", "via", gw])?;
        }
    }
    Ok(())
}

/// Serves one echo connection: answers each line as `<name>: <line>` until the client closes
/// (or is silent for 120 s, so a client that never closes cannot keep the thread forever).
pub fn echo_lines(name: &str, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        if out
            .write_all(format!("{name}: {line}\n").as_bytes())
            .is_err()
        {
            break;
        }
    }
}

/// Connects to `addr` (within `connect_timeout`) and reads until the server closes (2 s read
/// timeout): the whole answer. Call it on a thread inside the client's namespace.
pub fn read_answer(addr: SocketAddr, connect_timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, connect_timeout)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A UDP socket bound in a namespace on a fixed local port, so every datagram is the same flow
/// (the same conntrack entry).
#[derive(Debug)]
pub struct UdpClient {
    sock: UdpSocket,
}

impl UdpClient {
    /// Binds `local` inside `ns`; answers are awaited for 500 ms.
    pub fn bind(ns: &Netns, local: SocketAddr) -> Result<Self> {
        let sock = ns.run_in(move || UdpSocket::bind(local))??;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Self { sock })
    }

    /// Sends one datagram to `to` and returns the answer, or `None` if none came.
    pub fn ask(&self, to: SocketAddr) -> Result<Option<String>> {
        self.sock.send_to(b"hi", to)?;
        let mut buf = [0u8; 1500];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A minimal HTTP/1.0 `GET path` to `addr` with header `Host: host` (5 s read timeout): the
/// raw response, head and body.
pub fn http_get_raw(addr: impl ToSocketAddrs, host: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The status code of a raw HTTP response, if its status line has one.
pub fn http_status(response: &str) -> Option<u16> {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}
