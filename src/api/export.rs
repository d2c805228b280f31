//! `GET /api/v1/incidents/{id}/trace` and `/labels`: an incident as a replayable, labelled
//! trace (FORMATS.md §1), built by [`crate::replay::export::incident_trace`] from the charts the
//! engine still holds for the run, the incident, the run's recorded `finding_cleared` entries
//! and its active conditions. Both endpoints cut the same window and so share one time origin;
//! the response headers carry it (`x-babysitter-trace-origin`, clock seconds of `time` 0) and
//! the end (`x-babysitter-trace-until`), and `from`/`until` query parameters pin a window so the
//! CLI fetches the labels for exactly the trace it fetched.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::audit::{EntryKind, Filter, MAX_QUERY_LIMIT};
use crate::engine::Engine;
use crate::replay::export::{
    Clearing, DEFAULT_BEFORE_SECS, ExportContext, ExportError, ExportWindow, IncidentTrace,
    format_value, incident_trace, rfc3339,
};

/// Clock seconds (Unix seconds live) of the trace's `time` 0.
pub const ORIGIN_HEADER: &str = "x-babysitter-trace-origin";
/// Clock seconds at which the trace's window ends.
pub const UNTIL_HEADER: &str = "x-babysitter-trace-until";
/// Present when the trace starts later than asked because older charts were pruned.
pub const PRUNED_HEADER: &str = "x-babysitter-trace-pruned";

/// At most this many `finding_cleared` entries are read for one export (pages of
/// [`MAX_QUERY_LIMIT`]); a run with more has its newest ones missed and those anomalies end
/// with the trace.
const MAX_CLEARINGS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TraceQuery {
    /// History before the first onset (`3h`, `90m`); 3 h by default.
    before: Option<String>,
    /// Start of the window in clock seconds, instead of `onset − before`.
    from: Option<f64>,
    /// End of the window in clock seconds, if earlier than the incident's end.
    until: Option<f64>,
}

/// `GET /api/v1/incidents/{id}/trace`: the trace CSV.
pub(super) async fn trace(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    q: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tr = build(&engine, &id, q).await?;
    let mut res = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.csv\"", file_stem(&id)),
            ),
        ],
        tr.csv.clone(),
    )
        .into_response();
    add_headers(&engine, &tr, &mut res);
    Ok(res)
}

/// `GET /api/v1/incidents/{id}/labels`: the sidecar labels JSON.
pub(super) async fn labels(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    q: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tr = build(&engine, &id, q).await?;
    let mut res = axum::Json(&tr.labels).into_response();
    add_headers(&engine, &tr, &mut res);
    Ok(res)
}

fn add_headers(engine: &Engine, tr: &IncidentTrace, res: &mut Response) {
    let h = res.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(ORIGIN_HEADER, format_value(tr.origin));
    set(UNTIL_HEADER, format_value(tr.window.until));
    if let Some(note) = tr.pruned_note(&retention_text(engine)) {
        set(PRUNED_HEADER, note);
    }
}

fn retention_text(engine: &Engine) -> String {
    humantime::format_duration(engine.config().retention).to_string()
}

/// A file name stem for the id (anything but `[A-Za-z0-9._-]` becomes `_`).
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn build(
    engine: &Engine,
    id: &str,
    q: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<IncidentTrace, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let before = match &q.before {
        Some(b) => crate::config::duration::parse(b)
            .map_err(|e| ApiError::BadRequest(format!("query `before`: {e}")))?
            .as_secs_f64(),
        None => DEFAULT_BEFORE_SECS,
    };
    for (name, v) in [("from", q.from), ("until", q.until)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(ApiError::BadRequest(format!(
                "query `{name}`: clock seconds, a finite number"
            )));
        }
    }
    let inc = super::find_incident(engine, id).await?;
    let now = engine.handles().clock.now();
    let retention = retention_text(engine);
    let mut window =
        ExportWindow::for_incident(&inc, before, now, engine.config().retention.as_secs_f64());
    if let Some(from) = q.from {
        window.from = from;
    }
    if let Some(until) = q.until {
        window.until = window.until.min(until);
    }
    let Some(charts) = engine.charts(&inc.run).await else {
        return Err(ApiError::Gone(format!(
            "incident `{id}`: run `{}` is no longer watched, so its charts are gone (babysitter keeps charts in memory only while it watches a run)",
            inc.run
        )));
    };
    let active: Vec<_> = engine
        .view()
        .watches
        .into_iter()
        .find(|w| w.run == inc.run)
        .map(|w| w.active_findings)
        .unwrap_or_default();
    let cleared = clearings(engine, &inc.run).await?;
    let exported_at = rfc3339(now);
    let ctx = ExportContext {
        window,
        cleared: &cleared,
        active: &active,
        exported_at: &exported_at,
        retention: &retention,
    };
    incident_trace(&charts, &inc, &ctx).map_err(|e| match e {
        ExportError::NoSamples { .. } => ApiError::Gone(e.to_string()),
        ExportError::Window { .. } => ApiError::BadRequest(e.to_string()),
    })
}

/// The run's recorded clearings, oldest first.
async fn clearings(engine: &Engine, run: &str) -> Result<Vec<Clearing>, ApiError> {
    let audit = &engine.handles().audit;
    let mut out = Vec::new();
    let mut after_seq = None;
    let mut read = 0usize;
    loop {
        let page = audit
            .query(&Filter {
                run: Some(run.to_string()),
                kind: Some(EntryKind::FindingCleared),
                after_seq,
                limit: Some(MAX_QUERY_LIMIT),
                ..Filter::default()
            })
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        read += page.len();
        out.extend(
            page.iter()
                .filter_map(|e| Clearing::from_payload(&e.payload)),
        );
        match page.last() {
            Some(last)
                if page.len() as u64 == u64::from(MAX_QUERY_LIMIT) && read < MAX_CLEARINGS =>
            {
                after_seq = Some(last.seq);
            }
            _ => break,
        }
    }
    Ok(out)
}
