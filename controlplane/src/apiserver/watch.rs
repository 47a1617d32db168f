//! Watch responses: a chunked stream of `{"type": …, "object": …}` lines, like kube-apiserver.
//!
//! Selectors are applied to both sides of a change, so an object that stops matching is seen
//! as DELETED and one that starts matching as ADDED. Bookmarks (when asked for) carry the last
//! revision delivered; a watch from a compacted revision answers with one ERROR event (410).

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::apiserver::resources::ResourceInfo;
use crate::apiserver::status::ApiError;
use crate::apiserver::table;
use crate::registry::generic::{Filter, Registry};
use crate::storage::{self, EventKind, WatchStream};

/// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);

/// How watch objects are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Plain objects.
    Object,
    /// One-row `Table`s (`kubectl get -w`).
    Table,
}

/// The state of one watch response.
pub struct WatchBody {
    /// Lines to send before the live events (initial state, the initial-events-end bookmark).
    pub initial: VecDeque<Bytes>,
    /// Live events (None when the watch failed before starting).
    pub events: Option<WatchStream>,
    /// Which objects pass.
    pub filter: Filter,
    /// The resource.
    pub res: &'static ResourceInfo,
    /// Rendering.
    pub render: Render,
    /// Bookmarks wanted.
    pub bookmarks: bool,
    /// Revision of the last thing delivered.
    pub last_rv: i64,
    /// Ends the response (`timeoutSeconds`).
    pub timeout: Duration,
}

/// One watch line.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The ERROR event of a failed watch.
pub fn error_line(err: &ApiError) -> Bytes {
    event_line("ERROR", &err.to_status())
}

/// A BOOKMARK object: only kind, apiVersion and resourceVersion (and annotations).
pub fn bookmark(res: &ResourceInfo, rv: i64, initial_events_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

fn render(body: &WatchBody, obj: Value) -> Value {
    match body.render {
        Render::Object => obj,
        Render::Table => table::to_table(
            body.res,
            &[obj],
            table::IncludeObject::Metadata,
            json!({}),
            jiff::Timestamp::now(),
        ),
    }
}

/// Maps one store event to a line, applying selectors on both sides.
fn map_event(body: &WatchBody, ev: &storage::Event) -> Result<Option<(i64, Bytes)>, ApiError> {
    let rev = ev.revision();
    let now = Registry::decode(body.res, &ev.kv)?;
    let was = match &ev.prev_kv {
        Some(p) => Some(Registry::decode(body.res, p)?),
        None => None,
    };
    let now_in = body.filter.matches(body.res, &now);
    let was_in = was
        .as_ref()
        .is_some_and(|w| body.filter.matches(body.res, w));
    let kind = match ev.kind {
        EventKind::Added if now_in => "ADDED",
        EventKind::Modified if now_in && was_in => "MODIFIED",
        EventKind::Modified if now_in => "ADDED",
        EventKind::Modified if was_in => "DELETED",
        // A delete carries the last state, which is what the selector saw.
        EventKind::Deleted if now_in || was_in => "DELETED",
        _ => return Ok(None),
    };
    Ok(Some((rev, event_line(kind, &render(body, now)))))
}

/// The response body stream.
pub fn stream(
    body: WatchBody,
) -> Pin<Box<dyn Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>> {
    struct St {
        body: WatchBody,
        deadline: Pin<Box<tokio::time::Sleep>>,
        tick: tokio::time::Interval,
        done: bool,
    }
    let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = St {
        deadline: Box::pin(tokio::time::sleep(body.timeout)),
        body,
        tick,
        done: false,
    };
    let s = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(line) = st.body.initial.pop_front() {
                return Some((Ok(line), st));
            }
            if st.done {
                return None;
            }
            let events = st.body.events.as_mut()?;
            tokio::select! {
                _ = &mut st.deadline => return None,
                _ = st.tick.tick(), if st.body.bookmarks => {
                    let b = bookmark(st.body.res, st.body.last_rv, false);
                    return Some((Ok(event_line("BOOKMARK", &b)), st));
                }
                ev = events.next() => match ev {
                    None => return None,
                    Some(Err(e)) => {
                        st.done = true;
                        let api = match &e {
                            storage::Error::Compacted { .. } => ApiError::gone(format!("too old resource version: {e}")),
                            storage::Error::WatcherTooSlow { .. } => ApiError::gone(format!("watch closed: {e}")),
                            other => ApiError::internal(other.to_string()),
                        };
                        return Some((Ok(error_line(&api)), st));
                    }
                    Some(Ok(ev)) => match map_event(&st.body, &ev) {
                        Ok(Some((rev, line))) => {
                            st.body.last_rv = rev;
                            return Some((Ok(line), st));
                        }
                        Ok(None) => {
                            st.body.last_rv = ev.revision();
                            continue;
                        }
                        Err(api) => {
                            st.done = true;
                            return Some((Ok(error_line(&api)), st));
                        }
                    },
                }
            }
        }
    });
    Box::pin(s)
}
