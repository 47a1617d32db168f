//! Running a kernel tool, optionally inside another network namespace.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// How tools are started: directly, or behind a prefix such as
/// `nsenter --net=/var/run/netns/x` to act on another network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    prefix: Vec<String>,
}

impl Command {
    /// Runs tools in the current network namespace.
    pub fn host() -> Self {
        Self::default()
    }

    /// Runs tools in the network namespace at `path` (e.g. `/var/run/netns/<name>`) via nsenter.
    pub fn in_netns(path: &str) -> Self {
        Self {
            prefix: vec!["nsenter".into(), format!("--net={path}")],
        }
    }

    /// Runs `program args…` with `stdin` and returns its stdout; a non-zero exit is
    /// [`Error::CommandFailed`] carrying the tool's stderr verbatim.
    pub(crate) async fn output(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.push(program);
        argv.extend_from_slice(args);
        let command_line = argv.join(" ");
        tracing::debug!(command = %command_line, "running");
        let mut cmd = tokio::process::Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |source| Error::Spawn {
            command: command_line.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command: command_line,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
