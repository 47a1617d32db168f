//! `oxlet crictl`: the everyday crictl verbs over the CRI client.
//!
//! Output follows crictl: the same table columns, 13-character IDs unless `--no-trunc`, `-q`
//! for IDs only, IDs accepted by unique prefix. `inspect*` and `info` print the CRI messages as
//! JSON (field names as in the Rust bindings, snake_case) with the runtime's verbose `info`
//! values decoded from their JSON strings.

use std::collections::HashMap;
use std::io::{SeekFrom, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use oxlet_cri::{api, image_spec, ImageService, RemoteRuntime, RuntimeService, Timeouts};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

/// Flags of `oxlet crictl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CRI endpoint of the container runtime.
    #[arg(
        long,
        short = 'r',
        env = "CONTAINER_RUNTIME_ENDPOINT",
        default_value = oxlet_cri::DEFAULT_ENDPOINT,
        global = true
    )]
    runtime_endpoint: String,
    /// Deadline of each call, e.g. `2s`, `1m`, `500ms` (plain numbers are seconds).
    #[arg(long, short = 't', default_value = "2m", value_parser = parse_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// List pod sandboxes.
    Pods(PodsArgs),
    /// List containers.
    Ps(PsArgs),
    /// List images.
    Images(ImagesArgs),
    /// Show the status of one or more containers as JSON.
    Inspect {
        /// Container IDs or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show the status of one or more pod sandboxes as JSON.
    Inspectp {
        /// Pod sandbox IDs or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print a container's log.
    Logs(LogsArgs),
    /// Run a command in a running container and wait for it.
    Exec {
        /// Container ID or unique prefix.
        id: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Pull an image.
    Pull {
        /// Image reference.
        image: String,
        /// Registry credentials as `USERNAME[:PASSWORD]`.
        #[arg(long)]
        creds: Option<String>,
    },
    /// Stop one or more pod sandboxes.
    Stopp {
        /// Pod sandbox IDs or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove one or more pod sandboxes.
    Rmp {
        /// Pod sandbox IDs or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Stop running sandboxes first.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Runtime status and configuration as JSON.
    Info,
    /// Runtime name and versions.
    Version,
}

#[derive(Debug, clap::Args)]
struct PodsArgs {
    /// Only pods with this name (substring match, like crictl).
    #[arg(long)]
    name: Option<String>,
    /// Only pods in this namespace (substring match, like crictl).
    #[arg(long)]
    namespace: Option<String>,
    /// Only pods with these labels, `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only pods in this state: `ready` or `notready`.
    #[arg(long, short = 's')]
    state: Option<String>,
    /// Only print pod IDs.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print full IDs.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, clap::Args)]
struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(long, short = 'a')]
    all: bool,
    /// Only containers of this pod sandbox (ID or prefix).
    #[arg(long, short = 'p')]
    pod: Option<String>,
    /// Only containers with this name (substring match).
    #[arg(long)]
    name: Option<String>,
    /// Only containers with these labels, `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only print container IDs.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print full IDs.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, clap::Args)]
struct ImagesArgs {
    /// Only print image IDs.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print full IDs.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    /// Container ID or unique prefix.
    id: String,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Keep printing new lines until the container stops.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Runs one crictl verb.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeouts = Timeouts {
        request: args.timeout,
        connect: args.timeout,
        ..Timeouts::default()
    };
    let rt = RemoteRuntime::connect(&args.runtime_endpoint, timeouts).await?;
    let mut out = std::io::stdout().lock();
    match args.verb {
        Verb::Pods(a) => pods(&rt, a, &mut out).await?,
        Verb::Ps(a) => ps(&rt, a, &mut out).await?,
        Verb::Images(a) => images(&rt, a, &mut out).await?,
        Verb::Inspect { ids } => {
            for id in ids {
                let id = resolve_container(&rt, &id).await?;
                let resp = rt.container_status(&id, true).await?;
                let json = with_info(serde_json::to_value(&resp.status)?, &resp.info);
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            }
        }
        Verb::Inspectp { ids } => {
            for id in ids {
                let id = resolve_pod(&rt, &id).await?;
                let resp = rt.pod_sandbox_status(&id, true).await?;
                let json = with_info(serde_json::to_value(&resp.status)?, &resp.info);
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            }
        }
        Verb::Logs(a) => {
            drop(out);
            logs(&rt, a).await?;
        }
        Verb::Exec { id, cmd } => {
            let id = resolve_container(&rt, &id).await?;
            let resp = rt.exec_sync(&id, &cmd, Duration::ZERO).await?;
            out.write_all(&resp.stdout)?;
            out.flush()?;
            std::io::stderr().write_all(&resp.stderr)?;
            // An exit code outside 0..=255 still must not read as success.
            let code = u8::try_from(resp.exit_code).unwrap_or(1);
            return Ok(ExitCode::from(code));
        }
        Verb::Pull { image, creds } => {
            let auth = creds.map(|c| {
                let (username, password) = c.split_once(':').unwrap_or((c.as_str(), ""));
                api::AuthConfig {
                    username: username.to_string(),
                    password: password.to_string(),
                    ..Default::default()
                }
            });
            let image_ref = rt
                .pull_image(&image_spec(&image), auth.as_ref(), None)
                .await?;
            writeln!(out, "Image is up to date for {image_ref}")?;
        }
        Verb::Stopp { ids } => {
            for id in ids {
                let id = resolve_pod(&rt, &id).await?;
                rt.stop_pod_sandbox(&id).await?;
                writeln!(out, "Stopped sandbox {id}")?;
            }
        }
        Verb::Rmp { ids, force } => {
            for id in ids {
                let id = resolve_pod(&rt, &id).await?;
                if force {
                    rt.stop_pod_sandbox(&id).await?;
                }
                rt.remove_pod_sandbox(&id).await?;
                writeln!(out, "Removed sandbox {id}")?;
            }
        }
        Verb::Info => {
            let resp = rt.status(true).await?;
            let status = serde_json::json!({ "status": resp.status });
            let json = with_info(status, &resp.info);
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Verb::Version => {
            let v = rt.version().await?;
            writeln!(out, "Version:  {}", v.version)?;
            writeln!(out, "RuntimeName:  {}", v.runtime_name)?;
            writeln!(out, "RuntimeVersion:  {}", v.runtime_version)?;
            writeln!(out, "RuntimeApiVersion:  {}", v.runtime_api_version)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn pods(rt: &RemoteRuntime, a: PodsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let state = match a.state.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("ready") => Some(api::PodSandboxState::SandboxReady),
        Some("notready") => Some(api::PodSandboxState::SandboxNotready),
        Some(other) => bail!("--state must be ready or notready, not {other:?}"),
    };
    let filter = api::PodSandboxFilter {
        state: state.map(|s| api::PodSandboxStateValue { state: s as i32 }),
        label_selector: parse_labels(&a.labels)?,
        ..Default::default()
    };
    let mut items = rt.list_pod_sandbox(Some(filter)).await?;
    items.retain(|p| {
        let m = p.metadata.clone().unwrap_or_default();
        a.name.as_ref().is_none_or(|n| m.name.contains(n.as_str()))
            && a.namespace
                .as_ref()
                .is_none_or(|n| m.namespace.contains(n.as_str()))
    });
    items.sort_by_key(|x| std::cmp::Reverse(x.created_at));
    if a.quiet {
        for p in &items {
            writeln!(out, "{}", p.id)?;
        }
        return Ok(());
    }
    let now = now_nanos();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            let m = p.metadata.clone().unwrap_or_default();
            vec![
                truncate_id(&p.id, a.no_trunc),
                human_since(p.created_at, now),
                pod_state(p.state).to_string(),
                m.name,
                m.namespace,
                m.attempt.to_string(),
                if p.runtime_handler.is_empty() {
                    "(default)".to_string()
                } else {
                    p.runtime_handler.clone()
                },
            ]
        })
        .collect();
    let headers = [
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ];
    write!(out, "{}", render_table(&headers, &rows))?;
    Ok(())
}

async fn ps(rt: &RemoteRuntime, a: PsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let pod_id = match &a.pod {
        Some(p) => resolve_pod(rt, p).await?,
        None => String::new(),
    };
    let filter = api::ContainerFilter {
        pod_sandbox_id: pod_id,
        state: (!a.all).then_some(api::ContainerStateValue {
            state: api::ContainerState::ContainerRunning as i32,
        }),
        label_selector: parse_labels(&a.labels)?,
        ..Default::default()
    };
    let mut items = rt.list_containers(Some(filter)).await?;
    items.retain(|c| {
        a.name.as_ref().is_none_or(|n| {
            c.metadata
                .as_ref()
                .is_some_and(|m| m.name.contains(n.as_str()))
        })
    });
    items.sort_by_key(|x| std::cmp::Reverse(x.created_at));
    if a.quiet {
        for c in &items {
            writeln!(out, "{}", c.id)?;
        }
        return Ok(());
    }
    let pod_names: HashMap<String, String> = rt
        .list_pod_sandbox(None)
        .await?
        .into_iter()
        .map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default()))
        .collect();
    let now = now_nanos();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            let m = c.metadata.clone().unwrap_or_default();
            let image = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
            vec![
                truncate_id(&c.id, a.no_trunc),
                truncate_id(image, a.no_trunc),
                human_since(c.created_at, now),
                container_state(c.state).to_string(),
                m.name,
                m.attempt.to_string(),
                truncate_id(&c.pod_sandbox_id, a.no_trunc),
                pod_names
                    .get(&c.pod_sandbox_id)
                    .cloned()
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let headers = [
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ];
    write!(out, "{}", render_table(&headers, &rows))?;
    Ok(())
}

async fn images(rt: &RemoteRuntime, a: ImagesArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let items = rt.list_images(None).await?;
    if a.quiet {
        for i in &items {
            writeln!(out, "{}", i.id)?;
        }
        return Ok(());
    }
    let mut rows = image_rows(&items, a.no_trunc);
    rows.sort();
    write!(
        out,
        "{}",
        render_table(&["IMAGE", "TAG", "IMAGE ID", "SIZE"], &rows)
    )?;
    Ok(())
}

/// One row per tag (or one `<none>` row), as crictl's `images`.
fn image_rows(items: &[api::Image], no_trunc: bool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for i in items {
        let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
        let id = truncate_id(id, no_trunc);
        let size = human_size(i.size);
        let mut tags: Vec<(String, String)> = i
            .repo_tags
            .iter()
            .map(|t| match t.rfind(':') {
                Some(pos) if !t[pos..].contains('/') => {
                    (t[..pos].to_string(), t[pos + 1..].to_string())
                }
                _ => (t.clone(), "<none>".to_string()),
            })
            .collect();
        if tags.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "<none>".to_string());
            tags.push((repo, "<none>".to_string()));
        }
        for (repo, tag) in tags {
            rows.push(vec![repo, tag, id.clone(), size.clone()]);
        }
    }
    rows
}

async fn logs(rt: &RemoteRuntime, a: LogsArgs) -> anyhow::Result<()> {
    let id = resolve_container(rt, &a.id).await?;
    let status = rt
        .container_status(&id, false)
        .await?
        .status
        .context("runtime returned no container status")?;
    if status.log_path.is_empty() {
        bail!("container {id} has no log path");
    }
    let path = status.log_path.clone();
    let mut file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("open {path}"))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .await
        .with_context(|| format!("read {path}"))?;
    let mut printer = LogPrinter::default();
    let lines: Vec<&str> = text.lines().collect();
    let start = match a.tail {
        Some(n) => lines.len().saturating_sub(n),
        None => 0,
    };
    for line in &lines[start..] {
        printer.print(line)?;
    }
    if !a.follow {
        return Ok(());
    }
    // Follow: read what the runtime appends; stop once the container is no longer running.
    let mut offset = text.len() as u64;
    let mut reader = BufReader::new(file);
    let mut pending = String::new();
    let mut idle = 0u32;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        if n > 0 {
            offset += n as u64;
            pending.push_str(&line);
            if pending.ends_with('\n') {
                printer.print(pending.trim_end_matches('\n'))?;
                pending.clear();
            }
            idle = 0;
            continue;
        }
        idle += 1;
        if idle % 5 == 0 {
            let running = rt
                .container_status(&id, false)
                .await?
                .status
                .is_some_and(|s| s.state == api::ContainerState::ContainerRunning as i32);
            if !running {
                return Ok(());
            }
            // The kubelet rotates logs by renaming: reopen when the file got shorter or replaced.
            let len = tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if len < offset {
                let f = tokio::fs::File::open(&path).await?;
                reader = BufReader::new(f);
                reader.seek(SeekFrom::Start(0)).await?;
                offset = 0;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Joins CRI log lines (`<time> <stream> <P|F> <msg>`) and prints stdout and stderr apart.
#[derive(Default)]
struct LogPrinter {
    partial: HashMap<String, String>,
}

impl LogPrinter {
    fn print(&mut self, line: &str) -> std::io::Result<()> {
        let Some(entry) = parse_cri_log_line(line) else {
            return Ok(());
        };
        let buf = self.partial.entry(entry.stream.to_string()).or_default();
        buf.push_str(entry.message);
        if entry.partial {
            return Ok(());
        }
        let msg = std::mem::take(buf);
        if entry.stream == "stderr" {
            writeln!(std::io::stderr(), "{msg}")
        } else {
            writeln!(std::io::stdout(), "{msg}")
        }
    }
}

/// One line of a CRI container log file.
#[derive(Debug, PartialEq, Eq)]
struct LogEntry<'a> {
    time: &'a str,
    stream: &'a str,
    /// `P`: the message continues on the next line of the same stream.
    partial: bool,
    message: &'a str,
}

/// Parses `2016-10-06T00:17:09.669794202Z stdout F hello`; `None` if malformed.
fn parse_cri_log_line(line: &str) -> Option<LogEntry<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or("");
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    // The tag may carry more flags after ':' in the future; P is the first one.
    let partial = tag.split(':').next() == Some("P");
    Some(LogEntry {
        time,
        stream,
        partial,
        message,
    })
}

async fn resolve_pod(rt: &RemoteRuntime, prefix: &str) -> anyhow::Result<String> {
    let ids: Vec<String> = rt
        .list_pod_sandbox(None)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    resolve_prefix("pod sandbox", prefix, &ids)
}

async fn resolve_container(rt: &RemoteRuntime, prefix: &str) -> anyhow::Result<String> {
    let ids: Vec<String> = rt
        .list_containers(None)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    resolve_prefix("container", prefix, &ids)
}

/// The one ID starting with `prefix` (an exact match wins), as crictl accepts.
fn resolve_prefix(kind: &str, prefix: &str, ids: &[String]) -> anyhow::Result<String> {
    if prefix.is_empty() {
        bail!("empty {kind} ID");
    }
    if let Some(id) = ids.iter().find(|id| *id == prefix) {
        return Ok(id.clone());
    }
    let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(prefix)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no {kind} with ID {prefix:?}"),
        many => bail!(
            "{kind} ID prefix {prefix:?} is ambiguous: {} matches",
            many.len()
        ),
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("label {l:?} is not key=value"),
        })
        .collect()
}

/// Adds the runtime's verbose `info` map under `"info"`, decoding values that are JSON.
fn with_info(status: serde_json::Value, info: &HashMap<String, String>) -> serde_json::Value {
    let mut obj = match status {
        serde_json::Value::Object(m) if m.contains_key("status") => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("status".into(), other);
            m
        }
    };
    if !info.is_empty() {
        let info: serde_json::Map<String, serde_json::Value> = info
            .iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(v).unwrap_or_else(|_| v.clone().into());
                (k.clone(), value)
            })
            .collect();
        obj.insert("info".into(), info.into());
    }
    obj.into()
}

/// Renders rows under headers in columns, like crictl's tabwriter (min width 20, padding 3).
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let width = (widths[i] + 3).max(20);
                let pad = width.saturating_sub(cell.chars().count());
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn truncate_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(13).collect()
    }
}

fn pod_state(state: i32) -> &'static str {
    match api::PodSandboxState::try_from(state) {
        Ok(api::PodSandboxState::SandboxReady) => "Ready",
        Ok(api::PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

fn container_state(state: i32) -> &'static str {
    match api::ContainerState::try_from(state) {
        Ok(api::ContainerState::ContainerCreated) => "Created",
        Ok(api::ContainerState::ContainerRunning) => "Running",
        Ok(api::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// "5 minutes ago", in the words of go-units `HumanDuration` that crictl prints.
fn human_since(created_nanos: i64, now_nanos: i64) -> String {
    let secs = (now_nanos.saturating_sub(created_nanos) / 1_000_000_000).max(0);
    let d = match secs {
        s if s < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".to_string(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if (s as f64 / 3600.0).round() as i64 == 1 => "About an hour".to_string(),
        s if s < 48 * 3600 => format!("{} hours", (s as f64 / 3600.0).round() as i64),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86_400),
        s if s < 30 * 24 * 3600 * 2 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    };
    format!("{d} ago")
}

/// Decimal size with 3 significant digits, as go-units `HumanSizeWithPrecision(size, 3)`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < units.len() {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", units[unit])
}

/// Parses `500ms`, `2s`, `1m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_like_crictl() {
        let rows = vec![
            vec!["abc".to_string(), "Ready".to_string(), "web".to_string()],
            vec![
                "0123456789abcdef0123456".to_string(),
                "NotReady".to_string(),
                "db".to_string(),
            ],
        ];
        let got = render_table(&["POD ID", "STATE", "NAME"], &rows);
        let want = "\
POD ID                    STATE               NAME
abc                       Ready               web
0123456789abcdef0123456   NotReady            db
";
        assert_eq!(got, want);
    }

    #[test]
    fn image_rows_split_tags() {
        let images = vec![api::Image {
            id: "sha256:0123456789abcdef0123".into(),
            repo_tags: vec![
                "docker.io/library/busybox:latest".into(),
                "127.0.0.1:5000/bb".into(),
            ],
            size: 4_260_000,
            ..Default::default()
        }];
        let rows = image_rows(&images, false);
        assert_eq!(
            rows,
            vec![
                vec![
                    "docker.io/library/busybox",
                    "latest",
                    "0123456789abc",
                    "4.26MB"
                ],
                vec!["127.0.0.1:5000/bb", "<none>", "0123456789abc", "4.26MB"],
            ]
        );
    }

    #[test]
    fn parses_cri_log_lines() {
        let e = parse_cri_log_line("2016-10-06T00:17:09.669794202Z stdout F hello world");
        assert_eq!(
            e,
            Some(LogEntry {
                time: "2016-10-06T00:17:09.669794202Z",
                stream: "stdout",
                partial: false,
                message: "hello world",
            })
        );
        let e = parse_cri_log_line("2016-10-06T00:17:09.669794202Z stderr P part");
        assert_eq!(e.map(|e| (e.stream, e.partial)), Some(("stderr", true)));
        let e = parse_cri_log_line("2016-10-06T00:17:09.669794202Z stdout F ");
        assert_eq!(e.map(|e| e.message), Some(""));
        assert_eq!(parse_cri_log_line("garbage"), None);
    }

    #[test]
    fn resolves_unique_prefixes() {
        let ids = vec!["abc123".to_string(), "abd456".to_string(), "ab".to_string()];
        assert_eq!(
            resolve_prefix("pod", "abc", &ids).ok().as_deref(),
            Some("abc123")
        );
        assert_eq!(
            resolve_prefix("pod", "ab", &ids).ok().as_deref(),
            Some("ab")
        );
        assert!(resolve_prefix("pod", "a", &ids).is_err());
        assert!(resolve_prefix("pod", "x", &ids).is_err());
        assert!(resolve_prefix("pod", "", &ids).is_err());
    }

    #[test]
    fn humanizes_like_go_units() {
        let s = 1_000_000_000i64;
        assert_eq!(human_since(0, 0), "Less than a second ago");
        assert_eq!(human_since(0, 30 * s), "30 seconds ago");
        assert_eq!(human_since(0, 90 * s), "About a minute ago");
        assert_eq!(human_since(0, 300 * s), "5 minutes ago");
        assert_eq!(human_since(0, 3 * 3600 * s), "3 hours ago");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(742_000), "742kB");
        assert_eq!(human_size(12), "12B");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("2x").is_err());
    }

    #[test]
    fn info_values_are_decoded() {
        let info = HashMap::from([
            ("config".to_string(), r#"{"a":1}"#.to_string()),
            ("plain".to_string(), "not json".to_string()),
        ]);
        let v = with_info(serde_json::json!({"id": "x"}), &info);
        assert_eq!(v["status"]["id"], "x");
        assert_eq!(v["info"]["config"]["a"], 1);
        assert_eq!(v["info"]["plain"], "not json");
    }
}
