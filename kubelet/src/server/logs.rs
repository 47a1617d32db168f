//! `/containerLogs`: container logs read from the CRI log file the runtime writes.
//!
//! The runtime writes one record per line, `<RFC3339Nano> <stdout|stderr> <F|P> <message>`
//! (the CRI logging format; `P` marks a partial line the runtime split, `F` the end of a
//! line). As upstream's reader (pkg/kubelet/kuberuntime/logs/logs.go) this filters by time,
//! keeps the last N lines, stops after N bytes and, when following, keeps reading the file as
//! it grows, reopens it after the kubelet rotates it, and ends once the container has exited
//! and everything it wrote was sent. Unlike upstream, the pieces of a partial line are joined
//! into one line (one timestamp, counted once by `tailLines`).

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use oxlet_cri::{api, Runtime};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a follower looks for new data once it reached the end of the file (there is no
/// inotify binding among our dependencies; polling a local file is cheap).
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How many idle polls between two checks whether the container is still running.
const STATUS_EVERY_POLLS: u32 = 5;
/// A partial line longer than this is sent as it is rather than buffered further.
const MAX_JOINED_LINE: usize = 1024 * 1024;
/// Bytes read from the file at once.
const READ_CHUNK: usize = 64 * 1024;
/// Output is sent in pieces of about this size.
const SEND_BATCH: usize = 32 * 1024;

/// Which of the container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// When the output starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `sinceSeconds`: this many seconds before the request.
    Seconds(i64),
    /// `sinceTime`: an absolute time.
    Time(Timestamp),
}

/// What a `/containerLogs` request asks for: the v1 `PodLogOptions` the kubelet serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container exits.
    pub follow: bool,
    /// The previous instance of the container instead of the current one.
    pub previous: bool,
    /// Prefix each line with its RFC3339 timestamp (nanoseconds, fixed width).
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<Since>,
}

impl LogOptions {
    /// Parses a query string (`follow=true&tailLines=10&…`). Errors are upstream's
    /// validation messages (`tailLines: must be greater than or equal to 0`).
    pub fn from_query(query: Option<&str>) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = query_pairs(query.unwrap_or(""))?;
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (key, value) in &pairs {
            match key.as_str() {
                "follow" => opts.follow = parse_bool(key, value)?,
                "previous" => opts.previous = parse_bool(key, value)?,
                "timestamps" => opts.timestamps = parse_bool(key, value)?,
                // `tail` is the old name; `all` means no limit.
                "tailLines" | "tail" if value == "all" || value.is_empty() => {
                    opts.tail_lines = None
                }
                "tailLines" | "tail" => {
                    let n = parse_int(key, value)?;
                    opts.tail_lines = Some(
                        u64::try_from(n)
                            .map_err(|_| "tailLines: must be greater than or equal to 0")?,
                    );
                }
                "limitBytes" if !value.is_empty() => {
                    let n = parse_int(key, value)?;
                    opts.limit_bytes = Some(
                        u64::try_from(n)
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or("limitBytes: must be greater than 0")?,
                    );
                }
                "sinceSeconds" if !value.is_empty() => {
                    let n = parse_int(key, value)?;
                    if n < 1 {
                        return Err("sinceSeconds: must be greater than 0".into());
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" if !value.is_empty() => {
                    let t = value
                        .parse::<Timestamp>()
                        .map_err(|e| format!("sinceTime: {value:?} is not an RFC3339 time: {e}"))?;
                    since_time = Some(t);
                }
                _ => {}
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into())
            }
            (Some(s), None) => Some(Since::Seconds(s)),
            (None, Some(t)) => Some(Since::Time(t)),
            (None, None) => None,
        };
        Ok(opts)
    }

    /// The earliest timestamp to show, relative to `now` for `sinceSeconds`.
    pub fn since_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.since? {
            Since::Time(t) => Some(t),
            Since::Seconds(s) => now
                .checked_sub(jiff::SignedDuration::from_secs(s))
                .ok()
                .or(Some(Timestamp::MIN)),
        }
    }
}

/// A query string as decoded `key=value` pairs, in order.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

/// Decodes `%XX` escapes and `+` (form encoding) in a query component.
pub(crate) fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid escape in query component {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query component {s:?} is not UTF-8"))
}

/// Go's `strconv.ParseBool`, which upstream's parameter codec uses; empty is false.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{key}: invalid boolean value {value:?}")),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .map_err(|_| format!("{key}: invalid integer value {value:?}"))
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// When the runtime read it from the container.
    pub timestamp: Timestamp,
    /// The stream it came from.
    pub stream: Stream,
    /// `P`: the message continues in the next record of the same stream.
    pub partial: bool,
    /// The message, without a line end.
    pub message: &'a [u8],
}

/// Parses one record (without its `\n`); `None` for a line not in the CRI format.
pub fn parse_record(line: &[u8]) -> Option<LogRecord<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(fields.next()?).ok()?;
    let timestamp = ts.parse::<Timestamp>().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags are `:`-separated; the first says full (F) or partial (P).
    let tags = fields.next()?;
    let partial = match tags.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogRecord {
        timestamp,
        stream,
        partial,
        message: fields.next().unwrap_or_default(),
    })
}

/// A whole log line: a full record, or partial records joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp of its first record.
    pub timestamp: Timestamp,
    /// The stream it came from.
    pub stream: Stream,
    /// The text, ending in `\n` unless the container never finished the line.
    pub content: Vec<u8>,
}

impl LogLine {
    /// Appends the line as the client sees it.
    pub fn render(&self, timestamps: bool, out: &mut Vec<u8>) {
        if timestamps {
            // Upstream's fixed-width RFC3339Nano, so columns line up.
            out.extend_from_slice(format!("{:.9} ", self.timestamp).as_bytes());
        }
        out.extend_from_slice(&self.content);
    }
}

/// Joins partial records per stream into whole lines.
#[derive(Debug, Default)]
pub struct LineJoiner {
    pending: [Option<LogLine>; 2],
}

impl LineJoiner {
    /// Adds a record; returns the line it completes, if any.
    pub fn push(&mut self, rec: &LogRecord<'_>) -> Option<LogLine> {
        let slot = &mut self.pending[rec.stream as usize];
        let line = slot.get_or_insert_with(|| LogLine {
            timestamp: rec.timestamp,
            stream: rec.stream,
            content: Vec::new(),
        });
        line.content.extend_from_slice(rec.message);
        if rec.partial && line.content.len() < MAX_JOINED_LINE {
            return None;
        }
        if !rec.partial {
            line.content.push(b'\n');
        }
        slot.take()
    }

    /// The unfinished lines, oldest first (at the end of a file that will not grow).
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut out: Vec<LogLine> = self.pending.iter_mut().filter_map(Option::take).collect();
        out.sort_by_key(|l| l.timestamp);
        out
    }
}

/// Reads a CRI log file record by record, following it across rotations.
pub(crate) struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    identity: (u64, u64),
    offset: u64,
    buf: Vec<u8>,
    joiner: LineJoiner,
}

impl LogFile {
    /// Opens `path` at its start.
    pub(crate) async fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(&path).await?;
        let meta = file.metadata().await?;
        Ok(Self {
            path,
            file,
            identity: (meta.dev(), meta.ino()),
            offset: 0,
            buf: Vec::new(),
            joiner: LineJoiner::default(),
        })
    }

    /// The lines completed by the next read; `None` at the end of the file.
    async fn next_lines(&mut self) -> std::io::Result<Option<Vec<LogLine>>> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = self.file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        self.buf.extend_from_slice(&chunk[..n]);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let raw = &self.buf[start..start + pos];
            match parse_record(raw) {
                Some(rec) => lines.extend(self.joiner.push(&rec)),
                None => {
                    tracing::debug!(path = %self.path.display(), "skipping a log line not in CRI format")
                }
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
        Ok(Some(lines))
    }

    /// Whether the path now names another file (rotated) or the file shrank (truncated);
    /// a missing path (between rename and re-create) is neither yet.
    async fn replaced(&self) -> bool {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) => (meta.dev(), meta.ino()) != self.identity || meta.len() < self.offset,
            Err(_) => false,
        }
    }

    /// Switches to the file now at the path, from its start, keeping unfinished lines.
    async fn reopen(&mut self) -> std::io::Result<()> {
        let next = Self::open(self.path.clone()).await?;
        self.file = next.file;
        self.identity = next.identity;
        self.offset = 0;
        self.buf.clear();
        Ok(())
    }
}

/// Where lines go: the response body channel, with the byte limit applied.
struct Output {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    timestamps: bool,
    since: Option<Timestamp>,
    remaining: Option<u64>,
    batch: Vec<u8>,
}

/// Whether to go on after a write.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Output {
    fn wanted(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|s| line.timestamp >= s)
    }

    async fn write(&mut self, line: &LogLine) -> Flow {
        if !self.wanted(line) {
            return Flow::Continue;
        }
        let start = self.batch.len();
        line.render(self.timestamps, &mut self.batch);
        if let Some(left) = self.remaining.as_mut() {
            let added = (self.batch.len() - start) as u64;
            if added >= *left {
                self.batch.truncate(start + *left as usize);
                *left = 0;
                self.flush().await;
                return Flow::Stop;
            }
            *left -= added;
        }
        if self.batch.len() >= SEND_BATCH {
            return self.flush().await;
        }
        Flow::Continue
    }

    async fn flush(&mut self) -> Flow {
        if self.batch.is_empty() {
            return if self.tx.is_closed() {
                Flow::Stop
            } else {
                Flow::Continue
            };
        }
        let data = Bytes::from(std::mem::take(&mut self.batch));
        match self.tx.send(Ok(data)).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// The container a log stream belongs to, checked while following.
pub(crate) struct Watched {
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) container_id: String,
}

impl Watched {
    /// True once the container exited or is gone: its log will not grow any more.
    async fn finished(&self) -> bool {
        match self
            .runtime
            .container_status(&self.container_id, false)
            .await
        {
            Ok(resp) => resp.status.is_none_or(|s| {
                s.state == api::ContainerState::ContainerExited as i32
                    || s.state == api::ContainerState::ContainerUnknown as i32
            }),
            Err(e) if e.is_not_found() => true,
            Err(e) => {
                tracing::debug!(error = %e, "container status while following logs");
                false
            }
        }
    }
}

/// Sends the log of `file` as `opts` asks into `tx` until done, the client goes away
/// (`tx` closed) or `cancel` fires.
pub(crate) async fn stream(
    mut file: LogFile,
    opts: LogOptions,
    watched: Watched,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    cancel: CancellationToken,
) {
    let mut out = Output {
        tx,
        timestamps: opts.timestamps,
        since: opts.since_at(Timestamp::now()),
        remaining: opts.limit_bytes,
        batch: Vec::new(),
    };
    if let Err(e) = send_existing(&mut file, &opts, &mut out).await {
        fail(&mut out, &file, e).await;
        return;
    }
    if !opts.follow || out.flush().await == Flow::Stop {
        return;
    }
    let mut idle_polls: u32 = 0;
    loop {
        match file.next_lines().await {
            Ok(Some(lines)) => {
                idle_polls = 0;
                for line in &lines {
                    if out.write(line).await == Flow::Stop {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => return fail(&mut out, &file, e).await,
        }
        if out.flush().await == Flow::Stop {
            return;
        }
        if file.replaced().await {
            // Whatever was written to the old file before the runtime reopened was read
            // above; carry on in the new one.
            if let Err(e) = file.reopen().await {
                return fail(&mut out, &file, e).await;
            }
            continue;
        }
        if idle_polls % STATUS_EVERY_POLLS == 0 && watched.finished().await {
            // The runtime closes the log before it reports the exit: read to the end once
            // more and stop.
            loop {
                match file.next_lines().await {
                    Ok(Some(lines)) => {
                        for line in &lines {
                            if out.write(line).await == Flow::Stop {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return fail(&mut out, &file, e).await,
                }
            }
            for line in file.joiner.flush() {
                if out.write(&line).await == Flow::Stop {
                    return;
                }
            }
            out.flush().await;
            return;
        }
        idle_polls = idle_polls.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = out.tx.closed() => return,
            _ = cancel.cancelled() => return,
        }
    }
}

/// The file as it is now: filtered, tailed, and, when not following, with unfinished lines.
async fn send_existing(
    file: &mut LogFile,
    opts: &LogOptions,
    out: &mut Output,
) -> std::io::Result<()> {
    let mut tail: Option<VecDeque<LogLine>> = opts.tail_lines.map(|_| VecDeque::new());
    let limit = opts.tail_lines.unwrap_or(0) as usize;
    let keep = |line: LogLine, tail: &mut Option<VecDeque<LogLine>>| -> Option<LogLine> {
        match tail {
            Some(t) => {
                if limit > 0 {
                    if t.len() == limit {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
                None
            }
            None => Some(line),
        }
    };
    while let Some(lines) = file.next_lines().await? {
        for line in lines {
            if !out.wanted(&line) {
                continue;
            }
            if let Some(line) = keep(line, &mut tail) {
                if out.write(&line).await == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }
    if !opts.follow {
        for line in file.joiner.flush() {
            if !out.wanted(&line) {
                continue;
            }
            if let Some(line) = keep(line, &mut tail) {
                if out.write(&line).await == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }
    for line in tail.into_iter().flatten() {
        if out.write(&line).await == Flow::Stop {
            return Ok(());
        }
    }
    if !opts.follow {
        out.flush().await;
    }
    Ok(())
}

async fn fail(out: &mut Output, file: &LogFile, e: std::io::Error) {
    tracing::warn!(path = %file.path.display(), error = %e, "reading container log failed");
    out.flush().await;
    let _ = out.tx.send(Err(e)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn parses_records() {
        let r = parse_record(b"2016-10-06T00:17:09.669794202Z stdout F hello world").expect("ok");
        assert_eq!(r.timestamp, ts("2016-10-06T00:17:09.669794202Z"));
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.message, b"hello world");
        let r = parse_record(b"2016-10-06T00:17:09.1+02:00 stderr P part").expect("ok");
        assert_eq!((r.stream, r.partial), (Stream::Stderr, true));
        // An empty line has nothing after the tag.
        let r = parse_record(b"2016-10-06T00:17:09Z stdout F").expect("ok");
        assert_eq!(r.message, b"");
        let r = parse_record(b"2016-10-06T00:17:09Z stdout F ").expect("ok");
        assert_eq!(r.message, b"");
        assert!(parse_record(b"not a record").is_none());
        assert!(parse_record(b"2016-10-06T00:17:09Z stdin F x").is_none());
        assert!(parse_record(b"2016-10-06T00:17:09Z stdout X x").is_none());
    }

    #[test]
    fn joins_partial_records_per_stream() {
        let mut j = LineJoiner::default();
        let rec = |t: &str, stream, partial, msg: &'static str| LogRecord {
            timestamp: ts(t),
            stream,
            partial,
            message: msg.as_bytes(),
        };
        assert_eq!(
            j.push(&rec("2024-01-01T00:00:01Z", Stream::Stdout, true, "hel")),
            None
        );
        let err = j
            .push(&rec("2024-01-01T00:00:02Z", Stream::Stderr, false, "oops"))
            .expect("full stderr line");
        assert_eq!(err.content, b"oops\n");
        let line = j
            .push(&rec("2024-01-01T00:00:03Z", Stream::Stdout, false, "lo"))
            .expect("joined");
        assert_eq!(line.content, b"hello\n");
        assert_eq!(line.timestamp, ts("2024-01-01T00:00:01Z"));
        assert_eq!(
            j.push(&rec("2024-01-01T00:00:04Z", Stream::Stdout, true, "tail")),
            None
        );
        let rest = j.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].content, b"tail");
        assert!(j.flush().is_empty());
    }

    #[test]
    fn renders_fixed_width_timestamps() {
        let line = LogLine {
            timestamp: ts("2024-01-01T00:00:01.5Z"),
            stream: Stream::Stdout,
            content: b"x\n".to_vec(),
        };
        let mut out = Vec::new();
        line.render(true, &mut out);
        assert_eq!(out, b"2024-01-01T00:00:01.500000000Z x\n");
        out.clear();
        line.render(false, &mut out);
        assert_eq!(out, b"x\n");
    }

    #[test]
    fn parses_and_validates_options() {
        let o = LogOptions::from_query(Some(
            "follow=true&previous=1&timestamps=true&tailLines=5&limitBytes=100&sinceSeconds=10",
        ))
        .expect("valid");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(5),
                limit_bytes: Some(100),
                since: Some(Since::Seconds(10)),
            }
        );
        let o = LogOptions::from_query(Some("sinceTime=2024-01-01T00%3A00%3A00Z&tail=all"))
            .expect("valid");
        assert_eq!(o.since, Some(Since::Time(ts("2024-01-01T00:00:00Z"))));
        assert_eq!(o.tail_lines, None);
        assert_eq!(
            o.since_at(Timestamp::now()),
            Some(ts("2024-01-01T00:00:00Z"))
        );
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "follow=maybe",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z",
        ] {
            assert!(LogOptions::from_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            LogOptions::from_query(None).expect("empty"),
            LogOptions::default()
        );
    }

    fn write_log(dir: &std::path::Path, text: &str) -> PathBuf {
        let path = dir.join("0.log");
        std::fs::write(&path, text).expect("write log");
        path
    }

    async fn collect(path: PathBuf, opts: LogOptions) -> String {
        let file = LogFile::open(path).await.expect("open");
        let (tx, mut rx) = mpsc::channel(4);
        let watched = Watched {
            runtime: Arc::new(oxlet_cri::fake::FakeRuntime::new()),
            container_id: "gone".into(),
        };
        let task = tokio::spawn(stream(file, opts, watched, tx, CancellationToken::new()));
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk.expect("no read error"));
        }
        task.await.expect("task");
        String::from_utf8(out).expect("utf8")
    }

    const LOG: &str = "\
2024-01-01T00:00:01Z stdout F one
2024-01-01T00:00:02Z stderr F two
garbage line
2024-01-01T00:00:03Z stdout P thr
2024-01-01T00:00:04Z stdout F ee
2024-01-01T00:00:05Z stdout F four
2024-01-01T00:00:06Z stdout P unfinished
";

    #[tokio::test]
    async fn reads_filters_tails_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_log(dir.path(), LOG);
        let all = collect(path.clone(), LogOptions::default()).await;
        assert_eq!(all, "one\ntwo\nthree\nfour\nunfinished");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(collect(path.clone(), tail).await, "four\nunfinished");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(collect(path.clone(), none).await, "");
        let since = LogOptions {
            since: Some(Since::Time(ts("2024-01-01T00:00:03Z"))),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            collect(path.clone(), since).await,
            "2024-01-01T00:00:03.000000000Z three\n\
             2024-01-01T00:00:05.000000000Z four\n\
             2024-01-01T00:00:06.000000000Z unfinished"
        );
        let limited = LogOptions {
            limit_bytes: Some(10),
            ..Default::default()
        };
        assert_eq!(collect(path.clone(), limited).await, "one\ntwo\nth");
    }

    #[tokio::test]
    async fn follow_ends_when_the_container_is_gone() {
        // The fake runtime has no such container: the follower reads what is there, sees
        // the container gone, and ends with the unfinished line.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_log(dir.path(), LOG);
        let follow = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(collect(path, follow).await, "four\nunfinished");
    }
}
