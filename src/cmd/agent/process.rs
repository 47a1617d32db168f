//! Child processes the agent manages (containerd, the image registry): started in a process
//! group of their own so a terminal's Ctrl-C reaches only oxlet (which then stops them in
//! order), recorded in a PID file, stopped by PID (SIGTERM, then SIGKILL after a grace period).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A running child process and where it logs.
#[derive(Debug)]
pub struct Managed {
    name: &'static str,
    child: Child,
    pid: u32,
    pid_file: PathBuf,
    log: PathBuf,
}

impl Managed {
    /// Starts `program args` with stdout and stderr appended to `log`, its PID written to
    /// `pid_file`. A process an earlier oxlet left running under the same PID file (it died
    /// without stopping it) is stopped first, if its command line still names `marker`.
    pub async fn spawn(
        name: &'static str,
        program: &str,
        args: &[String],
        log: &Path,
        pid_file: &Path,
        marker: &str,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        stop_stale(name, pid_file, marker, grace).await;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: Ctrl-C in a terminal signals the whole foreground group,
            // and the agent must stop its children itself, after the kubelet.
            .process_group(0)
            // Dropped without `stop` (a panic, an aborted task): never leave an orphan.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {program} (run `make setup` if it is missing)"))?;
        let pid = child
            .id()
            .with_context(|| format!("{program} exited before its PID was read"))?;
        std::fs::write(pid_file, format!("{pid}\n"))
            .with_context(|| format!("write {}", pid_file.display()))?;
        tracing::info!(process = name, pid, log = %log.display(), "started");
        Ok(Self {
            name,
            child,
            pid,
            pid_file: pid_file.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    /// The exit status if the process has already ended.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of the process's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Waits until `stop` fires (then stops the process: SIGTERM, SIGKILL after `grace`) or
    /// the process ends by itself, which is an error naming its exit status and last log lines.
    pub async fn supervise(
        mut self,
        stop: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<()> {
        tokio::select! {
            status = self.child.wait() => {
                let _ = std::fs::remove_file(&self.pid_file);
                let status = status.with_context(|| format!("wait for {}", self.name))?;
                bail!(
                    "{} (pid {}) exited unexpectedly ({status}); last lines of {}:\n{}",
                    self.name,
                    self.pid,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            _ = stop.cancelled() => {
                self.stop(grace).await;
                Ok(())
            }
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; removes the PID file.
    pub async fn stop(&mut self, grace: Duration) {
        if self.try_exited().is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            match tokio::time::timeout(grace, self.child.wait()).await {
                Ok(_) => tracing::info!(process = self.name, pid = self.pid, "stopped"),
                Err(_) => {
                    tracing::warn!(
                        process = self.name,
                        pid = self.pid,
                        "still running {grace:?} after SIGTERM; killing it"
                    );
                    let _ = self.child.kill().await;
                }
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `pid` is alive and its command line contains `marker` (so a recycled PID that now
/// belongs to something else is never signalled).
fn is_ours(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(marker)
        })
        .unwrap_or(false)
}

/// Stops a process recorded in `pid_file` by an earlier run, if it is still ours.
async fn stop_stale(name: &str, pid_file: &Path, marker: &str, grace: Duration) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if pid > 0 && is_ours(pid, marker) {
        tracing::warn!(
            process = name,
            pid,
            "an earlier run left it running; stopping it first"
        );
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while is_ours(pid, marker) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if is_ours(pid, marker) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // Not our child: it disappears once the kernel has delivered SIGKILL.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while is_ours(pid, marker) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn supervise_reports_an_unexpected_exit_with_the_log() {
        let dir = tempfile_dir();
        let log = dir.join("log");
        let pid_file = dir.join("pid");
        let p = Managed::spawn(
            "sh",
            "/bin/sh",
            &["-c".into(), "echo boom; exit 3".into()],
            &log,
            &pid_file,
            "boom",
            Duration::from_secs(1),
        )
        .await
        .expect("spawn");
        let err = p
            .supervise(CancellationToken::new(), Duration::from_secs(1))
            .await
            .expect_err("exit must be an error");
        let text = format!("{err:#}");
        assert!(text.contains("exited unexpectedly"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert!(!pid_file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_and_stale_processes_are_stopped() {
        let dir = tempfile_dir();
        let log = dir.join("log");
        let pid_file = dir.join("pid");
        let marker = format!("oxlet-process-test-{}", std::process::id());
        // Ignores SIGTERM: only SIGKILL ends it.
        let script = format!("trap '' TERM; echo {marker}; while :; do sleep 1; done");
        let args = vec!["-c".to_string(), script];
        let mut first = Managed::spawn(
            "sh",
            "/bin/sh",
            &args,
            &log,
            &pid_file,
            &marker,
            Duration::from_millis(200),
        )
        .await
        .expect("spawn");
        let first_pid = first.pid as i32;
        // The echo runs after the trap: from then on SIGTERM is ignored. (Right after spawn
        // the command line may still be empty: exec has not finished setting it up.)
        let ignoring = |n: usize| log_tail(&log, 10).matches(marker.as_str()).count() >= n;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ignoring(1) {
            assert!(std::time::Instant::now() < deadline, "no trap after 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(is_ours(first_pid, &marker));
        let started = std::time::Instant::now();
        // A second start with the same PID file finds the first one and stops it.
        let mut second = Managed::spawn(
            "sh",
            "/bin/sh",
            &args,
            &log,
            &pid_file,
            &marker,
            Duration::from_millis(200),
        )
        .await
        .expect("spawn again");
        // The first is our child: reap it so its PID really disappears.
        let _ = first.child.wait().await;
        assert!(!is_ours(first_pid, &marker));
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "SIGTERM was ignored: only SIGKILL after the grace period ends it"
        );
        let second_pid = second.pid as i32;
        while !ignoring(2) {
            assert!(std::time::Instant::now() < deadline, "no trap after 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        second.stop(Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(!is_ours(second_pid, &marker));
        assert!(!pid_file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oxlet-process-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
