//! Dashboard: server-rendered pages for the human on call, served beside the API.
//!
//! `/` lists the watched runs with their health at a glance; `/runs/{run}` draws a run's charts
//! as inline SVG with every finding marked where it was raised, and its incidents with their
//! actions and outcomes; `/incidents/{id}` shows the evidence, the runbook (rendered Markdown),
//! the plan, a pending approval with Approve / Reject, and the incident's audit trail; `/audit`
//! pages through the audit log. Pages refresh themselves (`/dashboard.js`: on each engine event
//! from the `/events` stream, and every few seconds), and need no front-end build.
//!
//! Everything shown is escaped by maud (run names, chart labels and messages come from outside);
//! pages are served with a Content-Security-Policy that allows no inline script. Reads follow
//! the API's rules (`api.read_open`, else a token with role `viewer`); a browser signs in with its
//! API token at `/login` (see [`auth`]), and Approve / Reject forms are forwarded to
//! `POST /api/v1/actions/{id}/approve|reject` with that token, so the API's role check and audit
//! record apply unchanged.

pub mod auth;
mod pages;
pub mod svg;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use tower::ServiceExt;

use crate::audit::{AuditLog, Entry, EntryKind, Filter};
use crate::engine::Engine;
use crate::incident::Incident;
use auth::Session;

/// How long one `/events` stream lasts before the browser reconnects (streams also end when the
/// engine stops, so an open tab never holds up a graceful shutdown).
const STREAM_LIFETIME: Duration = Duration::from_secs(20);
/// Entries per page of the audit view.
const AUDIT_PAGE: usize = 100;
/// The audit view reads the log backwards in windows of this many entries ...
const AUDIT_WINDOW: i64 = 2_000;
/// ... and scans at most this many entries for one page of a filtered view.
const AUDIT_SCAN: i64 = 50_000;

/// The dashboard's routes; `crate::api::router` merges them beside the API.
pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/", get(index))
        .route("/runs/{run}", get(run_page))
        .route("/incidents/{id}", get(incident_page))
        .route("/audit", get(audit_page))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/actions/{id}/approve", post(approve))
        .route("/actions/{id}/reject", post(reject))
        .route("/events", get(events))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(stylesheet))
}

/// What can go wrong while serving a page; shown as an HTML page with a status.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// The audit database could not be read.
    #[error("the audit log cannot be read: {0}")]
    Audit(String),
    /// The API refused a forwarded approve / reject (its status and message).
    #[error("{message}")]
    Api { status: StatusCode, message: String },
}

impl DashboardError {
    fn status(&self) -> StatusCode {
        match self {
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashboardError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::Api { status, .. } => *status,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "dashboard error");
        }
        page(status, pages::error(status, &self.to_string()))
    }
}

impl From<crate::audit::AuditError> for DashboardError {
    fn from(e: crate::audit::AuditError) -> Self {
        DashboardError::Audit(e.to_string())
    }
}

/// An HTML response with the dashboard's security headers.
fn page(status: StatusCode, body: Markup) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Percent-encodes one path segment (run names and ids come from outside).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signed-in browser, or the way to the login page when reads need one.
fn reader(engine: &Engine, headers: &HeaderMap, here: &str) -> Result<Option<Session>, Redirect> {
    let api = &engine.config().api;
    let session = auth::session(api, headers);
    if auth::can_read(api, session.as_ref()) {
        Ok(session)
    } else {
        Err(Redirect::to(&format!("/login?next={}", seg(here))))
    }
}

/// Context every page shows in its header.
pub(crate) struct Chrome {
    pub session: Option<Session>,
    pub now: f64,
    pub audit_healthy: bool,
    /// The run whose events refresh this page (all runs when `None`).
    pub live_run: Option<String>,
    pub path: String,
}

async fn index(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> Response {
    let session = match reader(&engine, &headers, "/") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let view = engine.view();
    let chrome = Chrome {
        session,
        now: view.now,
        audit_healthy: view.audit_healthy,
        live_run: None,
        path: "/".into(),
    };
    page(StatusCode::OK, pages::index(&chrome, &view))
}

#[derive(Debug, Deserialize)]
struct RunQuery {
    /// Hours of history to draw: one of [`pages::RUN_WINDOWS_H`].
    hours: Option<u32>,
}

async fn run_page(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(run): Path<String>,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let here = format!("/runs/{}", seg(&run));
    let session = match reader(&engine, &headers, &here) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let hours = match q.map(|Query(q)| q.hours) {
        Ok(None) => pages::RUN_WINDOWS_H[0],
        Ok(Some(h)) if pages::RUN_WINDOWS_H.contains(&h) => h,
        _ => {
            return DashboardError::BadRequest(format!(
                "query `hours`: one of {:?}",
                pages::RUN_WINDOWS_H
            ))
            .into_response();
        }
    };
    let view = engine.view();
    let Some(watch) = view.watches.iter().find(|w| w.run == run).cloned() else {
        return DashboardError::NotFound(format!("no watched run `{run}`")).into_response();
    };
    let charts = engine.charts(&run).await.unwrap_or_default();
    let incidents: Vec<Incident> = view
        .incidents
        .values()
        .filter(|i| i.run == run)
        .cloned()
        .collect();
    let recent = match newest(
        &engine.handles().audit,
        Filter {
            run: Some(run.clone()),
            ..Filter::default()
        },
        None,
        40,
    )
    .await
    {
        Ok((entries, _)) => entries,
        Err(e) => return DashboardError::from(e).into_response(),
    };
    let chrome = Chrome {
        session,
        now: view.now,
        audit_healthy: view.audit_healthy,
        live_run: Some(run.clone()),
        path: here,
    };
    page(
        StatusCode::OK,
        pages::run(&chrome, hours, &watch, &charts, &incidents, &recent),
    )
}

#[derive(Debug, Deserialize)]
struct Done {
    /// What the browser just did here (`approved` / `rejected`), for a banner.
    done: Option<String>,
}

async fn incident_page(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    let here = format!("/incidents/{}", seg(&id));
    let session = match reader(&engine, &headers, &here) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let view = engine.view();
    let inc = match view.incidents.get(&id) {
        Some(i) => i.clone(),
        // Finished incidents leave memory after a day; the database keeps them.
        None => match engine.handles().audit.load_incident(&id).await {
            Ok(Some(rec)) => match serde_json::from_value::<Incident>(rec.data) {
                Ok(i) => i,
                Err(e) => {
                    return DashboardError::Audit(format!("incident `{id}` is unreadable: {e}"))
                        .into_response();
                }
            },
            Ok(None) => {
                return DashboardError::NotFound(format!("no incident `{id}`")).into_response();
            }
            Err(e) => return DashboardError::from(e).into_response(),
        },
    };
    let charts = engine.charts(&inc.run).await.unwrap_or_default();
    let trail = match engine
        .handles()
        .audit
        .query(&Filter {
            incident: Some(id.clone()),
            limit: Some(crate::audit::MAX_QUERY_LIMIT),
            ..Filter::default()
        })
        .await
    {
        Ok(t) => t,
        Err(e) => return DashboardError::from(e).into_response(),
    };
    let runbook = inc
        .diagnosis
        .as_ref()
        .and_then(|d| engine.handles().runbooks.get(&d.runbook))
        .cloned();
    let chrome = Chrome {
        session,
        now: view.now,
        audit_healthy: view.audit_healthy,
        live_run: Some(inc.run.clone()),
        path: here,
    };
    let done = q.done.filter(|d| d == "approved" || d == "rejected");
    page(
        StatusCode::OK,
        pages::incident(&chrome, &inc, &charts, runbook.as_ref(), &trail, done),
    )
}

/// Query of the audit view: filters, and the page to show.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    pub run: Option<String>,
    pub incident: Option<String>,
    pub kind: Option<String>,
    /// Show entries with `seq` below this (the "older" link).
    pub before: Option<i64>,
}

async fn audit_page(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let session = match reader(&engine, &headers, "/audit") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return DashboardError::BadRequest(e.body_text()).into_response(),
    };
    let blank = |s: &Option<String>| {
        s.as_ref()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let kind = match blank(&q.kind) {
        None => None,
        Some(k) => match EntryKind::parse(&k) {
            Some(k) => Some(k),
            None => {
                return DashboardError::BadRequest(format!("no audit entry kind `{k}`"))
                    .into_response();
            }
        },
    };
    let filter = Filter {
        run: blank(&q.run),
        incident: blank(&q.incident),
        kind,
        ..Filter::default()
    };
    let (entries, older) = match newest(
        &engine.handles().audit,
        filter.clone(),
        q.before,
        AUDIT_PAGE,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return DashboardError::from(e).into_response(),
    };
    let view = engine.view();
    let chrome = Chrome {
        session,
        now: view.now,
        audit_healthy: view.audit_healthy,
        live_run: None,
        path: "/audit".into(),
    };
    page(
        StatusCode::OK,
        pages::audit(&chrome, &filter, &entries, older),
    )
}

/// The newest entries matching `filter` with `seq < before`, newest first, and the `before` of
/// the next (older) page if there may be one. The log is read backwards in windows because
/// [`AuditLog::query`] pages forwards.
async fn newest(
    audit: &AuditLog,
    mut filter: Filter,
    before: Option<i64>,
    want: usize,
) -> Result<(Vec<Entry>, Option<i64>), crate::audit::AuditError> {
    let Some((head, _)) = audit.head().await? else {
        return Ok((Vec::new(), None));
    };
    let mut hi = before.map_or(head + 1, |b| b.min(head + 1));
    let mut out = Vec::new();
    let mut scanned = 0;
    while hi > 0 && out.len() < want && scanned < AUDIT_SCAN {
        let lo = (hi - 1 - AUDIT_WINDOW).max(-1);
        filter.after_seq = Some(lo);
        filter.limit = Some(crate::audit::MAX_QUERY_LIMIT);
        let mut got: Vec<Entry> = audit
            .query(&filter)
            .await?
            .into_iter()
            .filter(|e| e.seq < hi)
            .collect();
        got.reverse();
        out.extend(got);
        scanned += hi - 1 - lo;
        hi = lo + 1;
    }
    let older = if out.len() > want {
        out.truncate(want);
        out.last().map(|e| e.seq)
    } else if hi > 0 {
        // Stopped scanning before the start of the log: there may be older matches.
        Some(out.last().map_or(hi, |e| e.seq.min(hi)))
    } else {
        None
    };
    Ok((out, older))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let api = &engine.config().api;
    let session = auth::session(api, &headers);
    let next = auth::local_path(q.next.as_deref());
    page(
        StatusCode::OK,
        pages::login(session.as_ref(), &next, None, api.tokens.is_empty()),
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !auth::same_origin(&headers) {
        return DashboardError::Forbidden("sign-in from another site refused".into())
            .into_response();
    }
    let Ok(Form(f)) = form else {
        return DashboardError::BadRequest("the sign-in form needs a `token` field".into())
            .into_response();
    };
    let api = &engine.config().api;
    let next = auth::local_path(f.next.as_deref());
    if auth::lookup(api, &f.token).is_none() {
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(
                None,
                &next,
                Some("That token is not one of the configured API tokens."),
                api.tokens.is_empty(),
            ),
        );
    }
    let secure = engine.public_url().starts_with("https://");
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(&f.token, secure)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout(headers: HeaderMap) -> Response {
    if !auth::same_origin(&headers) {
        return DashboardError::Forbidden("sign-out from another site refused".into())
            .into_response();
    }
    let mut res = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The Approve / Reject form.
#[derive(Debug, Deserialize)]
struct SettleForm {
    /// The session's form token ([`Session::form_token`]).
    csrf: String,
    reason: Option<String>,
}

async fn approve(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<SettleForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    settle(engine, headers, id, form, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn reject(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<SettleForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    settle(engine, headers, id, form, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Forwards an Approve / Reject to the API with the browser's token, then goes back to the
/// incident. The API decides whether the token may (role `operator`) and records it.
async fn settle(
    engine: Arc<Engine>,
    headers: HeaderMap,
    id: String,
    form: Result<Form<SettleForm>, axum::extract::rejection::FormRejection>,
    approve: bool,
) -> Result<Response, DashboardError> {
    if !auth::same_origin(&headers) {
        return Err(DashboardError::Forbidden(
            "an approval posted from another site is refused".into(),
        ));
    }
    let session =
        auth::session(&engine.config().api, &headers).ok_or_else(|| DashboardError::Api {
            status: StatusCode::UNAUTHORIZED,
            message: "sign in with an operator token to approve or reject".into(),
        })?;
    let Form(f) = form.map_err(|e| DashboardError::BadRequest(e.body_text()))?;
    if !auth::form_token_ok(&session, &f.csrf) {
        return Err(DashboardError::Forbidden(
            "this form was not issued to your session: reload the page and try again".into(),
        ));
    }
    let reason = f
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let verb = if approve { "approve" } else { "reject" };
    let body = serde_json::json!({ "reason": reason });
    let req = Request::post(format!("/api/v1/actions/{}/{verb}", seg(&id)))
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| DashboardError::BadRequest(format!("action id `{id}`: {e}")))?;
    let res = match crate::api::router(engine.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let message = json["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the API answered {status}"));
        return Err(DashboardError::Api { status, message });
    }
    let incident = json["id"].as_str().unwrap_or_default();
    let done = if approve { "approved" } else { "rejected" };
    Ok(Redirect::to(&format!("/incidents/{}?done={done}", seg(incident))).into_response())
}

/// The engine's story as server-sent events (`event: engine`, data: the event as JSON); each
/// stream ends after [`STREAM_LIFETIME`] (the browser reconnects) or when the engine stops.
async fn events(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> Response {
    let api = &engine.config().api;
    if !auth::can_read(api, auth::session(api, &headers).as_ref()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let rx = engine.subscribe();
    let stopped = engine.stopped();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream =
        futures_util::stream::unfold((rx, stopped), move |(mut rx, mut stopped)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let next = tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.recv()) => r.ok()?,
                // The service is stopping: end the stream so the server can finish.
                _ = stopped.wait_for(|s| *s) => return None,
            };
            let event = match next {
                Ok(ev) => SseEvent::default()
                    .event("engine")
                    .json_data(&ev)
                    .unwrap_or_else(|_| SseEvent::default().event("lagged").data("{}")),
                Err(RecvError::Lagged(_)) => SseEvent::default().event("lagged").data("{}"),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(event), (rx, stopped)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::SCRIPT,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::STYLE,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
