//! Local test images and registries: deterministic OCI builds, the pause and echoserver
//! programs, and pushing to / pulling from a private `docker-registry` in a test namespace.
//!
//! Needs root (network namespaces, chroot), gcc, busybox-static, skopeo, umoci, docker-registry.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oxlet_e2e::images::{self, BuiltImages, Skopeo};
use oxlet_e2e::netns::{self, Netns};
use oxlet_e2e::registry::{self, Registry};

const DEADLINE: Duration = Duration::from_secs(30);

/// A child process this test started; killed by PID (SIGKILL) if still running when dropped.
struct Started(Child);

impl Started {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }

    /// Sends `sig` and waits (with a deadline) for the process to exit.
    fn signal_and_wait(&mut self, sig: Signal) -> Result<ExitStatus> {
        kill(self.pid(), sig).with_context(|| format!("kill {} {sig}", self.pid()))?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "pid {} still running {DEADLINE:?} after {sig}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `check` until it returns `Ok(Some(_))`, failing at the deadline with the last state.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not after {DEADLINE:?}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn build() -> BuiltImages {
    match images::build_all() {
        Ok(b) => b,
        Err(e) => panic!("build images: {e:#}"),
    }
}

fn digests(b: &BuiltImages) -> Vec<String> {
    b.all().iter().map(|i| i.manifest_digest.clone()).collect()
}

#[test]
fn images_build_deterministically_into_valid_layouts() -> Result<()> {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    let started = Instant::now();
    let first = images::build_all_in(a.path())?;
    let cold = started.elapsed();
    let second = images::build_all_in(b.path())?;
    let started = Instant::now();
    let again = images::build_all_in(a.path())?;
    let warm = started.elapsed();
    eprintln!("cold build {cold:?}, warm (cached) build {warm:?}");
    assert_eq!(digests(&first), digests(&second), "two cold builds differ");
    assert_eq!(
        first, again,
        "a cached build differs from the build it cached"
    );
    assert_eq!(
        digests(&first),
        digests(&build()),
        "the shared cache differs"
    );
    // busybox and echoserver share their first layer, as `docker history` would show.
    let busybox = inspect_layout(&first.busybox.oci_ref("latest"))?;
    let echo = inspect_layout(&first.echoserver.oci_ref("latest"))?;
    assert_eq!(busybox["Layers"][0], echo["Layers"][0]);
    assert_eq!(echo["Layers"].as_array().map(Vec::len), Some(2));

    for image in first.all() {
        for tag in &image.tags {
            let oci = image.oci_ref(tag);
            let info = inspect_layout(&oci)?;
            assert_eq!(info["Digest"], image.manifest_digest.as_str(), "{oci}");
            assert_eq!(info["Architecture"], images::host_arch(), "{oci}");
            assert_eq!(info["Os"], "linux", "{oci}");
            let stat = netns::run(Command::new("umoci").args([
                "stat",
                "--image",
                &format!("{}:{tag}", image.layout.display()),
            ]))?;
            assert!(stat.contains("LAYER"), "umoci stat {oci}: {stat}");
        }
        // The archive holds the same manifest under fully qualified names.
        let index = archive_index(&image.archive)?;
        let manifests = index["manifests"].as_array().context("manifests")?;
        let names: Vec<_> = manifests
            .iter()
            .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].clone())
            .collect();
        let want: Vec<serde_json::Value> = image.refs().into_iter().map(Into::into).collect();
        assert_eq!(names, want, "{}", image.archive.display());
        for m in manifests {
            assert_eq!(m["digest"], image.manifest_digest.as_str());
        }
    }
    let refs: Vec<_> = first.all().iter().flat_map(|i| i.refs()).collect();
    assert_eq!(
        refs,
        [
            images::PAUSE_REF,
            images::BUSYBOX_REF,
            images::BUSYBOX_1_35_REF,
            images::ECHOSERVER_REF
        ]
    );
    Ok(())
}

fn inspect_layout(oci: &str) -> Result<serde_json::Value> {
    let skopeo = Skopeo::new()?;
    let out = netns::run(skopeo.command(None).args(["inspect", oci]))?;
    serde_json::from_str(&out).with_context(|| format!("parse skopeo inspect {oci}"))
}

fn archive_index(archive: &Path) -> Result<serde_json::Value> {
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "index.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return Ok(serde_json::from_str(&text)?);
        }
    }
    bail!("{}: no index.json", archive.display())
}

/// Unpacks a layout's rootfs with umoci and runs programs in it with chroot: the layers are
/// real filesystems, not just well-formed JSON.
#[test]
fn busybox_and_echoserver_rootfs_run_under_chroot() -> Result<()> {
    let built = build();
    let dir = tempfile::tempdir()?;
    for (image, checks) in [
        (
            &built.busybox,
            vec![
                (vec!["/bin/sh", "-c", "echo hi from $(id -u)"], "hi from 0"),
                (vec!["/bin/cat", "/etc/passwd"], "nobody:x:65534"),
                (vec!["/bin/stat", "-c", "%a", "/tmp"], "1777"),
                (vec!["/bin/wget", "--help"], "wget"),
            ],
        ),
        (
            &built.echoserver,
            vec![(vec!["/echoserver", "-v"], "oxlet-echoserver")],
        ),
    ] {
        let rootfs = dir.path().join(image.name.replace('/', "_"));
        netns::run(
            Command::new("umoci")
                .args(["raw", "unpack", "--image"])
                .arg(format!("{}:latest", image.layout.display()))
                .arg(&rootfs),
        )?;
        for (argv, want) in checks {
            let out = Command::new("chroot")
                .arg(&rootfs)
                .args(&argv)
                .output()
                .context("spawn chroot")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains(want), "{argv:?} in {}: {text}", image.name);
        }
    }
    Ok(())
}

#[test]
fn pause_prints_version_and_exits_zero_on_sigterm() -> Result<()> {
    let built = build();
    let version = netns::run(Command::new(&built.pause_bin).arg("-v"))?;
    assert!(version.starts_with("pause.c "), "{version}");

    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut pause = Started(
            Command::new(&built.pause_bin)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_for_handler(pause.pid(), sig)?;
        let status = pause.signal_and_wait(sig)?;
        assert_eq!(status.code(), Some(0), "pause after {sig}: {status}");
    }
    Ok(())
}

/// Waits until `pid` has a handler for `sig` (its bit in SigCgt), so the signal is not sent
/// before the program installed it.
fn wait_for_handler(pid: Pid, sig: Signal) -> Result<()> {
    let bit = 1u64 << (sig as i32 - 1);
    wait_for(&format!("pid {pid} to catch {sig}"), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .context("no SigCgt")?;
        let mask = u64::from_str_radix(mask.trim(), 16)?;
        Ok((mask & bit != 0).then_some(()))
    })
}

/// As PID 1 of a PID namespace, pause inherits orphans and must reap them when they exit.
#[test]
fn pause_as_pid1_reaps_orphans() -> Result<()> {
    let built = build();
    let mut unshare = Started(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(&built.pause_bin)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn unshare")?,
    );
    let outer = unshare.pid();
    let pause: Pid = wait_for("unshare's child (pause)", || {
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))?;
        Ok(children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .map(Pid::from_raw))
    })?;
    wait_for_handler(pause, Signal::SIGCHLD)?;
    // A shell in pause's PID namespace starts a short-lived background job and exits at once:
    // the job is orphaned to pause, exits, and stays a zombie unless pause reaps it.
    netns::run(
        Command::new("nsenter")
            .args(["--target", &pause.to_string(), "--pid", "--"])
            .args([
                "/bin/busybox",
                "sh",
                "-c",
                "/bin/busybox sleep 0.2 & exit 0",
            ]),
    )?;
    let children = format!("/proc/{pause}/task/{pause}/children");
    let mut saw_orphan = false;
    wait_for("pause to reap its orphan", || {
        let now = std::fs::read_to_string(&children)?;
        saw_orphan |= !now.trim().is_empty();
        Ok(now.trim().is_empty().then_some(()))
    })?;
    eprintln!("orphan seen under pause before reaping: {saw_orphan}");
    kill(pause, Signal::SIGTERM)?;
    let status = wait_for("unshare to exit", || Ok(unshare.0.try_wait()?))?;
    assert_eq!(status.code(), Some(0), "pause (via unshare) after SIGTERM");
    Ok(())
}

#[test]
fn echoserver_answers_http_and_udp_in_a_netns() -> Result<()> {
    let built = build();
    let ns = Netns::new("img-echo")?;
    // A veth pair inside the namespace gives it a non-loopback IPv4 address to report.
    ns.exec([
        "ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1",
    ])?;
    ns.exec(["ip", "addr", "add", "10.251.0.2/24", "dev", "e0"])?;
    ns.exec(["ip", "link", "set", "e0", "up"])?;
    ns.exec(["ip", "link", "set", "e1", "up"])?;
    let mut server = Started(
        ns.command(&built.echoserver_bin.to_string_lossy())
            .args(["--port", "8080", "--udp-port", "8081"])
            .env_remove("POD_IP")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let (body, by_pod_ip, by_v6, healthz, udp_host, udp_echo) = ns.run_in(|| -> Result<_> {
        let body = wait_for("echoserver to answer", || {
            match http("127.0.0.1:8080", "/hello/world?x=1") {
                Ok(r) => Ok(Some(r)),
                Err(e) if is_refused(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let by_pod_ip = http("10.251.0.2:8080", "/")?;
        let by_v6 = http("[::1]:8080", "/v6")?;
        let healthz = http("127.0.0.1:8080", "/healthz")?;
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_read_timeout(Some(Duration::from_secs(10)))?;
        udp.connect("127.0.0.1:8081")?;
        let mut buf = [0u8; 1500];
        udp.send(b"hostname")?;
        let n = udp.recv(&mut buf)?;
        let udp_host = String::from_utf8_lossy(&buf[..n]).into_owned();
        udp.send(b"echo conntrack")?;
        let n = udp.recv(&mut buf)?;
        let udp_echo = String::from_utf8_lossy(&buf[..n]).into_owned();
        Ok((body, by_pod_ip, by_v6, healthz, udp_host, udp_echo))
    })??;

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string();
    assert_eq!(body.0, 200, "{body:?}");
    for want in [
        format!("hostname={hostname}\n"),
        "pod_ip=10.251.0.2\n".to_string(),
        "client=127.0.0.1:".to_string(),
        "method=GET\n".to_string(),
        "path=/hello/world?x=1\n".to_string(),
        "header.X-Oxlet-Test=yes\n".to_string(),
    ] {
        assert!(body.1.contains(&want), "missing {want:?} in:\n{}", body.1);
    }
    assert!(
        by_pod_ip.1.contains("client=10.251.0.2:"),
        "{}",
        by_pod_ip.1
    );
    assert!(by_v6.1.contains("client=[::1]:"), "{}", by_v6.1);
    assert_eq!(healthz, (200, "ok".to_string()));
    assert_eq!(udp_host, hostname);
    assert_eq!(udp_echo, "conntrack");

    let status = server.signal_and_wait(Signal::SIGTERM)?;
    assert_eq!(status.code(), Some(0), "echoserver after SIGTERM: {status}");
    Ok(())
}

fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// GET over a fresh connection; returns status and body.
fn http(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Oxlet-Test: yes\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((code, body.to_string()))
}

/// `skopeo inspect` of a registry image from inside the namespace; `creds` None means anonymous.
fn inspect_remote(ns: &Netns, image: &str, creds: Option<&str>) -> Result<serde_json::Value> {
    let skopeo = Skopeo::new()?;
    let mut cmd = skopeo.command(Some(ns.name()));
    cmd.args(["inspect", "--tls-verify=false"]);
    match creds {
        Some(c) => cmd.args(["--creds", c]),
        None => cmd.arg("--no-creds"),
    };
    let out = netns::run(cmd.arg(format!("docker://{image}")))?;
    Ok(serde_json::from_str(&out)?)
}

#[test]
fn registry_in_netns_serves_the_standard_images() -> Result<()> {
    let built = build();
    let ns = Netns::new("img-reg")?;
    let reg = Registry::start(Some(&ns), None)?;
    assert_eq!(reg.addr(), "127.0.0.1:5000");
    reg.push_standard_images(&built)?;

    for (reference, image) in [
        (images::PAUSE_REF, &built.pause),
        (images::BUSYBOX_REF, &built.busybox),
        (images::BUSYBOX_1_35_REF, &built.busybox),
        (images::ECHOSERVER_REF, &built.echoserver),
    ] {
        let mirrored = reg.mirrored(reference)?;
        let info = inspect_remote(&ns, &mirrored, None)?;
        // skopeo copied the OCI manifest unchanged, so containerd sees the layout's digest.
        assert_eq!(info["Digest"], image.manifest_digest.as_str(), "{mirrored}");
    }
    let (code, tags) = reg.get("/v2/library/busybox/tags/list", false)?;
    assert_eq!(code, 200, "{tags}");
    assert!(
        tags.contains("\"latest\"") && tags.contains("\"1.35\""),
        "{tags}"
    );
    Ok(())
}

#[test]
fn auth_registry_rejects_anonymous_and_accepts_credentials() -> Result<()> {
    let built = build();
    let ns = Netns::new("img-auth")?;
    let reg = Registry::start(Some(&ns), Some(("oxlet", "s3cret-pw")))?;
    let dest = reg.mirrored(images::BUSYBOX_REF)?;

    let anonymous_push = images::push(&built.busybox.layout, "latest", &dest, None, Some(&ns));
    assert!(anonymous_push.is_err(), "anonymous push was accepted");
    images::push(
        &built.busybox.layout,
        "latest",
        &dest,
        Some(("oxlet", "s3cret-pw")),
        Some(&ns),
    )?;

    let (code, body) = reg.get("/v2/library/busybox/manifests/latest", false)?;
    assert_eq!(code, 401, "anonymous manifest GET: {body}");
    let (code, body) = reg.get("/v2/library/busybox/manifests/latest", true)?;
    assert_eq!(code, 200, "authenticated manifest GET: {body}");

    let anonymous = inspect_remote(&ns, &dest, None);
    let err = format!("{:#}", anonymous.err().context("anonymous pull succeeded")?);
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
    let wrong = inspect_remote(&ns, &dest, Some("oxlet:wrong"));
    assert!(wrong.is_err(), "a wrong password was accepted");
    let info = inspect_remote(&ns, &dest, Some("oxlet:s3cret-pw"))?;
    assert_eq!(info["Digest"], built.busybox.manifest_digest.as_str());
    Ok(())
}

#[test]
fn host_registry_uses_a_free_port_and_stops_on_drop() -> Result<()> {
    let reg = Registry::start(None, None)?;
    let (code, _) = reg.get("/v2/", false)?;
    assert_eq!(code, 200);
    let pid = Pid::from_raw(reg.pid() as i32);
    drop(reg);
    // Drop waited for the exit, so the PID is gone (reaped), not a zombie.
    assert!(kill(pid, None).is_err(), "registry pid {pid} survived drop");
    Ok(())
}

#[test]
fn hosts_toml_mirrors_docker_io_and_registry_k8s_io() -> Result<()> {
    let dir = tempfile::tempdir()?;
    registry::hosts_toml_dirs(dir.path(), "127.0.0.1:5000")?;
    let read = |host: &str| std::fs::read_to_string(dir.path().join(host).join("hosts.toml"));
    let docker = read("docker.io")?;
    assert!(
        docker.starts_with("server = \"https://registry-1.docker.io\"\n"),
        "{docker}"
    );
    assert!(
        docker.contains("[host.\"http://127.0.0.1:5000\"]"),
        "{docker}"
    );
    assert!(
        docker.contains("capabilities = [\"pull\", \"resolve\"]"),
        "{docker}"
    );
    let k8s = read("registry.k8s.io")?;
    assert!(
        k8s.starts_with("server = \"https://registry.k8s.io\"\n"),
        "{k8s}"
    );
    assert!(k8s.contains("[host.\"http://127.0.0.1:5000\"]"), "{k8s}");
    let direct = read("127.0.0.1:5000")?;
    assert!(
        direct.starts_with("server = \"http://127.0.0.1:5000\"\n"),
        "{direct}"
    );
    Ok(())
}
