//! TCP forwarders between the host network namespace and a test namespace, so a kubelet
//! inside a test "host" reaches an API server on the real loopback and vice versa, without
//! any interface or route added to the host.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// A running forwarder; stops accepting on drop (open connections end with their peers).
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    /// Where it listens.
    pub listen: SocketAddr,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    copy(a, b2);
    copy(b, a2);
}

fn accept_loop<F>(listener: TcpListener, stop: Arc<AtomicBool>, connect: F)
where
    F: Fn() -> io::Result<TcpStream> + Send + 'static,
{
    std::thread::spawn(move || {
        let _ = listener.set_nonblocking(true);
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    match connect() {
                        Ok(upstream) => pump(client, upstream),
                        Err(e) => eprintln!("forwarder: connect failed: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    eprintln!("forwarder: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
}

/// Listens on `listen` inside `netns` and forwards each connection to `target` in the host
/// namespace.
pub fn into_host(netns: &Netns, listen: SocketAddr, target: SocketAddr) -> Result<Forwarder> {
    let listener = netns
        .run_in(move || TcpListener::bind(listen))?
        .with_context(|| format!("bind {listen} in {}", netns.name()))?;
    let stop = Arc::new(AtomicBool::new(false));
    accept_loop(listener, stop.clone(), move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(10))
    });
    Ok(Forwarder { stop, listen })
}

/// Listens on `listen` in the host namespace and forwards each connection to `target` inside
/// `netns` (each upstream socket is opened from a thread that joined the namespace).
pub fn into_netns(netns: &Netns, listen: SocketAddr, target: SocketAddr) -> Result<Forwarder> {
    let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    let listen = listener.local_addr()?;
    let path = netns.path();
    let stop = Arc::new(AtomicBool::new(false));
    accept_loop(listener, stop.clone(), move || {
        let path = path.clone();
        std::thread::spawn(move || -> io::Result<TcpStream> {
            let f = std::fs::File::open(&path)?;
            nix::sched::setns(
                std::os::fd::AsFd::as_fd(&f),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .map_err(io::Error::from)?;
            TcpStream::connect_timeout(&target, Duration::from_secs(10))
        })
        .join()
        .map_err(|_| io::Error::other("connect thread panicked"))?
    });
    Ok(Forwarder { stop, listen })
}
