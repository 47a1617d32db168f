//! Running a kernel tool, optionally inside another network namespace.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        self.output_lines(program, args, stdin.map(|s| std::iter::once(s.to_owned())))
            .await
    }

    /// As [`Command::output`], with stdin written piece by piece as `stdin` yields it: a
    /// large input never has to exist in memory at once.
    pub(crate) async fn output_lines<I>(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<I>,
    ) -> Result<String>
    where
        I: Iterator<Item = String>,
    {
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
        // stdout and stderr are read while stdin is written, so a tool that answers before
        // reading all of its input cannot block us on a full pipe.
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                s.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let write_in = async {
            if let (Some(input), Some(pipe)) = (stdin, child.stdin.take()) {
                let mut pipe = tokio::io::BufWriter::with_capacity(1 << 16, pipe);
                for piece in input {
                    // A tool that exits early (a syntax error) closes its stdin: its own
                    // error message is what matters, so a broken pipe ends the input quietly.
                    if pipe.write_all(piece.as_bytes()).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = pipe.flush().await;
            }
            Ok::<_, std::io::Error>(())
        };
        let (stdout_buf, stderr_buf, written) = tokio::join!(read_out, read_err, write_in);
        written.map_err(spawn_err)?;
        let status = child.wait().await.map_err(spawn_err)?;
        let out = std::process::Output {
            status,
            stdout: stdout_buf.map_err(spawn_err)?,
            stderr: stderr_buf.map_err(spawn_err)?,
        };
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
