//! `oxlet standalone` end to end: the real binary, with the real containerd, registry, CNI
//! bridge and nftables, driven by the real kubectl.
//!
//! Standalone rewires the network namespace it runs in (CNI bridge, NAT, ip_forward, its nft
//! table), so it runs inside a test namespace (entered with nsenter, as kubectl is). It uses a
//! temporary data dir holding the locally built images, a cgroup root and CNI network name of
//! its own; the guard removes processes (by PID), mounts, cgroups, CNI cache entries, shim
//! sockets, the data dir and the namespace, even when an assertion fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oxlet_e2e::containerd::{remove_cgroup_tree, shim_socket_path, unmount_under};
use oxlet_e2e::images;
use oxlet_e2e::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_oxlet");
/// Start-up on a loaded 2-core machine: API server, registry, containerd, node Ready.
const START_DEADLINE: Duration = Duration::from_secs(180);
/// The brief: a stop takes at most 30 s.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// One standalone instance (its namespace, data dir and process) and everything to clean up.
struct Standalone {
    dir: PathBuf,
    port: u16,
    node: String,
    cgroup_root: String,
    network: String,
    child: Option<Child>,
    runs: u32,
    kubeconfig: Option<PathBuf>,
    /// Dropped after the cleanup in `Drop::drop`.
    netns: Netns,
}

impl Standalone {
    fn new() -> Self {
        let built = images::build_all().expect("build the test images");
        let netns = Netns::new("sa").expect("create a network namespace");
        // A host has a default route; without one, connecting to a ClusterIP fails routing
        // before the proxy's DNAT can apply. A veth pair with both ends here stands in for
        // the uplink (this kernel has no dummy links).
        for argv in [
            &[
                "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
            ][..],
            &["ip", "link", "set", "uplink1", "up"],
            &["ip", "link", "set", "uplink0", "up"],
            &["ip", "route", "add", "default", "dev", "uplink0"],
        ] {
            netns
                .exec(argv)
                .expect("give the namespace a default route");
        }
        let tag = format!("{}", std::process::id());
        // Short: containerd's socket paths must fit a unix socket address.
        let dir = PathBuf::from(format!("/tmp/oxt-sa-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let images_dir = dir.join("data/agent/images");
        std::fs::create_dir_all(&images_dir).expect("create the images dir");
        for image in [&built.pause, &built.busybox] {
            let name = image.archive.file_name().expect("archive name");
            std::fs::copy(&image.archive, images_dir.join(name)).expect("copy an image archive");
        }
        let port = netns
            .run_in(|| {
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
            })
            .expect("enter the namespace")
            .expect("find a free port");
        Self {
            dir,
            port,
            node: format!("sa-node-{tag}"),
            cgroup_root: format!("/oxlet-test-sa-{tag}"),
            network: format!("oxt-sa-{tag}"),
            child: None,
            runs: 0,
            kubeconfig: None,
            netns,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn containerd_dir(&self) -> PathBuf {
        self.data().join("agent/containerd")
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.join(format!("stdout-{}.log", self.runs))
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join(format!("stderr-{}.log", self.runs))
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// The last lines of this run's stdout and stderr (tracing logs), for failure messages.
    fn logs(&self) -> String {
        let err = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = err.lines().collect();
        format!(
            "--- stdout:\n{}\n--- stderr (last 80 lines):\n{}",
            self.stdout(),
            lines[lines.len().saturating_sub(80)..].join("\n")
        )
    }

    /// Starts `oxlet standalone` and waits for the line naming the kubeconfig.
    fn start(&mut self) -> PathBuf {
        self.runs += 1;
        let out = std::fs::File::create(self.stdout_path()).expect("stdout file");
        let err = std::fs::File::create(self.stderr_path()).expect("stderr file");
        let child = self
            .netns
            .command(BIN)
            .arg("standalone")
            .arg("--data-dir")
            .arg(self.data())
            .args(["--secure-port", &self.port.to_string()])
            .args(["--node-ip", "127.0.0.1"])
            .args(["--hostname-override", &self.node])
            .args(["--cgroup-root", &self.cgroup_root])
            .args(["--cni-network-name", &self.network])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn oxlet standalone");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let text = self.stdout();
            if let Some(path) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("kubeconfig: "))
            {
                let path = PathBuf::from(path.trim());
                self.kubeconfig = Some(path.clone());
                return path;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "oxlet standalone exited ({status}) while starting\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no kubeconfig line after {START_DEADLINE:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the process to exit by itself (panics after `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status (panics if it takes longer than the deadline).
    fn stop(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "still running {STOP_DEADLINE:?} after SIGTERM\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig.as_ref().expect("started");
        self.netns
            .command("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// kubectl's stdout; panics with its stderr and the logs when it fails.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `kubectl args` until its output satisfies `want`.
    fn kubectl_until(
        &self,
        args: &[&str],
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(args);
            let last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && want(&String::from_utf8_lossy(&out.stdout)) {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?}: condition not met after {timeout:?}; last output: {last}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// PIDs of the managed processes, from their PID files.
    fn managed_pids(&self) -> Vec<(&'static str, i32)> {
        [
            ("containerd", self.containerd_dir().join("containerd.pid")),
            ("registry", self.data().join("agent/registry/registry.pid")),
        ]
        .into_iter()
        .filter_map(|(name, file)| {
            let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect()
    }

    /// Live processes whose command line names this instance's data dir (containerd, the
    /// registry, containerd's shims), by PID.
    fn live_processes(&self) -> Vec<(i32, String)> {
        let marker = self.data().display().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) && pid != std::process::id() as i32 {
                out.push((pid, cmdline));
            }
        }
        out
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has an empty cmdline; only a running process counts.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// SIGKILLs `pid` and its descendants (a shim's containers are its children).
fn kill_tree(pid: i32) {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent PID is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for child in children {
        kill_tree(child);
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever it started and left (only on failure): by PID, never by name; a shim
        // with its containers.
        for (pid, _) in self.live_processes() {
            kill_tree(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.live_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let socket = self.containerd_dir().join("containerd.sock");
        let tasks = self
            .containerd_dir()
            .join("state/io.containerd.runtime.v2.task/k8s.io");
        for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if let Some(id) = entry.file_name().to_str() {
                let _ = std::fs::remove_file(shim_socket_path(&socket, "k8s.io", id));
            }
        }
        unmount_under(&self.dir);
        remove_cgroup_tree(&self.cgroup_root);
        let prefix = format!("{}-", self.network);
        for entry in std::fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("remove {}: {e}", self.dir.display());
        }
        // The namespace goes when `netns` drops, after this.
    }
}

#[test]
fn standalone_runs_a_pod_offline_stops_cleanly_restarts_with_its_data_and_fails_loudly() {
    let mut sa = Standalone::new();
    let kubeconfig = sa.start();
    assert_start_narrated(&sa);
    let out = sa.stdout();
    assert!(
        out.contains(&format!(
            "kubectl --kubeconfig {} get nodes",
            kubeconfig.display()
        )),
        "{out}"
    );
    assert!(kubeconfig.is_file(), "{}", kubeconfig.display());

    let ready = sa.kubectl_ok(&[
        "get",
        "node",
        &sa.node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready.trim(), "True");

    // `image: busybox` is `imagePullPolicy: Always`: it must come from the bundled mirror.
    sa.kubectl_ok(&[
        "run",
        "t",
        "--image=busybox",
        "--restart=Never",
        "--",
        "echo",
        "hi",
    ]);
    sa.kubectl_until(
        &["get", "pod", "t", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(120),
        |phase| phase == "Succeeded",
    );
    let node = sa.kubectl_ok(&["get", "pod", "t", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(node, sa.node, "the bundled scheduler binds the pod");
    // Through the API server's proxy to the kubelet server.
    assert_eq!(sa.kubectl_ok(&["logs", "t"]), "hi\n");
    sa.kubectl_until(
        &[
            "get",
            "node",
            &sa.node,
            "-o",
            "jsonpath={.status.images[*].names}",
        ],
        Duration::from_secs(60),
        |names| names.contains("docker.io/library/busybox:latest"),
    );

    service_answers_on_its_cluster_ip(&sa);

    let managed = sa.managed_pids();
    let names: Vec<&str> = managed.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["containerd", "registry"], "PID files");
    let (status, took) = sa.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM ({took:?})\n{}",
        sa.logs()
    );
    for (name, pid) in &managed {
        assert!(!alive(*pid), "{name} (pid {pid}) still running after stop");
    }
    let left = sa.live_processes();
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    assert!(sa.stdout().contains("oxlet: stopped"), "{}", sa.stdout());

    // Same data dir: the same cluster, pod `t` included. The node's Ready condition from
    // the first run must not count as ready: start-up waits for this run's kubelet.
    sa.start();
    assert_start_narrated(&sa);
    let phase = sa.kubectl_ok(&["get", "pod", "t", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Succeeded");

    // A managed process dying is not papered over: the whole thing stops, non-zero, saying
    // why, and still stops what it started.
    let containerd = sa
        .managed_pids()
        .into_iter()
        .find(|(name, _)| *name == "containerd")
        .map(|(_, pid)| pid)
        .expect("containerd PID file");
    kill(Pid::from_raw(containerd), Signal::SIGKILL).expect("kill containerd");
    let status = sa.wait_exit(STOP_DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", sa.logs());
    let err = std::fs::read_to_string(sa.stderr_path()).unwrap_or_default();
    assert!(
        err.contains("containerd") && err.contains("exited unexpectedly"),
        "{}",
        sa.logs()
    );
    let left = sa.live_processes();
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

/// The bundled proxy: a Deployment exposed as a Service answers on its ClusterIP from the node
/// itself, through the EndpointSlice the bundled controller writes once the pod is Ready.
/// Removed again afterwards, so the stop that follows has no running pod to leave behind.
fn service_answers_on_its_cluster_ip(sa: &Standalone) {
    // PID 1 is the shell, which exits on SIGTERM; httpd runs in the background.
    sa.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--port=8080",
        "--",
        "sh",
        "-c",
        "echo hello-from-web > /tmp/index.html; httpd -p 8080 -h /tmp; \
         trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    sa.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let ip = sa.kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let addr: SocketAddr = format!("{}:80", ip.trim()).parse().expect("a ClusterIP");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let last = match http_get_in(&sa.netns, addr) {
            Ok(body) if body.contains("hello-from-web") => break,
            Ok(body) => body,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{addr} never answered from the node; last: {last}\n{}\n{}",
            sa.kubectl_ok(&["get", "pods,endpointslices", "-o", "wide"]),
            sa.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    sa.kubectl_ok(&["delete", "service", "web"]);
    sa.kubectl_ok(&["delete", "deployment", "web"]);
    sa.kubectl_until(
        &["get", "pods", "-l", "app=web", "-o", "name"],
        Duration::from_secs(120),
        |out| out.trim().is_empty(),
    );
}

/// One HTTP/1.0 GET to `addr` from inside `ns`; the whole response, or why there is none.
fn http_get_in(ns: &Netns, addr: SocketAddr) -> Result<String, String> {
    let mut stream = ns
        .run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

/// Start-up said what it waited for, in order, before naming the kubeconfig.
fn assert_start_narrated(sa: &Standalone) {
    let out = sa.stdout();
    let mut at = 0;
    for step in [
        "waiting for the API server".to_string(),
        "waiting for containerd".to_string(),
        format!("waiting for node {} to be Ready", sa.node),
        "kubeconfig: ".to_string(),
    ] {
        match out[at..].find(&step) {
            Some(i) => at += i + step.len(),
            None => panic!("start-up did not say {step:?} (in this order):\n{out}"),
        }
    }
}

/// A run that must fail before starting anything; returns (exit code, stderr).
fn refused(data_dir: &Path, args: &[&str], path_env: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("standalone")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let out = cmd.output().expect("run oxlet standalone");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prerequisite_errors_are_clear_and_start_nothing() {
    let data = std::env::temp_dir().join(format!("oxlet-sa-prereq-{}", std::process::id()));
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();

    let (code, err) = refused(&data, &["--secure-port", &port], None);
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{err}"
    );
    assert!(err.contains("--secure-port"), "{err}");

    let (code, err) = refused(&data, &["--secure-port", &port], Some("/nonexistent"));
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("missing programs: containerd"), "{err}");
    assert!(err.contains("run `make setup`"), "{err}");

    let (code, err) = refused(&data, &["--secure-port", "0"], None);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--secure-port"), "{err}");

    assert!(
        !data.exists(),
        "nothing may be written when refusing to start"
    );
}
