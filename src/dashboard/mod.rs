//! Dashboard: server-rendered pages for the human on call, served beside the API.
//!
//! `/` lists the watched runs with their health at a glance; `/runs/{run}` draws a run's charts
//! as inline SVG with every finding marked where it was raised, and its incidents with their
//! actions and outcomes; `/incidents/{id}` shows the evidence, the runbook (rendered Markdown),
//! the plan, the LLM agent's report (a proposal, never executed by itself), a pending approval
//! with Approve / Reject, and the incident's audit trail; `/runbooks` lists the runbooks and
//! `/runbooks/{id}` reads one's front matter as a plan with a dry-run form; `/audit` says whether
//! the hash chain verifies, shows the latest signed head and pages through the log. The header
//! says who leads. Pages refresh themselves (`/dashboard.js`: on each engine event
//! from the `/events` stream, and every few seconds), and need no front-end build.
//!
//! Everything shown is escaped by maud (run names, chart labels and messages come from outside);
//! pages are served with a Content-Security-Policy that allows no inline script. Reads follow
//! the API's rules (`api.read_open`, else a token with role `viewer`); a browser signs in with its
//! API token at `/login` (see [`auth`]), and Approve / Reject and dry-run forms are forwarded to
//! `POST /api/v1/actions/{id}/approve|reject` and `POST /api/v1/runbooks/{id}/execute` with that
//! token, so the API's role check and audit
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

use crate::audit::{AuditLog, Entry, EntryKind, Filter, SignedHead, VerifyReport};
use crate::engine::{Engine, Leadership, View};
use crate::incident::Incident;
use crate::runbook::Runbook;
use auth::Session;

/// How long one `/events` stream lasts before the browser reconnects (streams also end when the
/// engine stops, so an open tab never holds up a graceful shutdown).
const STREAM_LIFETIME: Duration = Duration::from_secs(20);
/// The largest API answer a forwarded form reads.
const FORWARD_LIMIT: usize = 4 << 20;
/// How long the audit page reuses a chain verification.
const VERIFY_REUSE: Duration = Duration::from_secs(30);
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
        .route("/runbooks", get(runbooks_page))
        .route("/runbooks/{id}", get(runbook_page))
        .route("/runbooks/{id}/dry-run", post(dry_run))
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
    /// Who leads (`None` on pages drawn without the engine: sign-in, errors).
    pub leadership: Option<Leadership>,
    /// The page shows the answer to a form post: it must not refresh itself (a refresh would
    /// fetch the form's URL, and the answer is not to be repeated).
    pub frozen: bool,
}

impl Chrome {
    fn new(
        engine: &Engine,
        view: &View,
        session: Option<Session>,
        live_run: Option<String>,
        path: String,
    ) -> Self {
        Chrome {
            session,
            now: view.now,
            audit_healthy: view.audit_healthy,
            live_run,
            path,
            leadership: Some(engine.leadership()),
            frozen: false,
        }
    }
}

async fn index(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> Response {
    let session = match reader(&engine, &headers, "/") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let view = engine.view();
    let chrome = Chrome::new(&engine, &view, session, None, "/".into());
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
    let chrome = Chrome::new(&engine, &view, session, Some(run.clone()), here);
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
    let chrome = Chrome::new(&engine, &view, session, Some(inc.run.clone()), here);
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
    let audit = &engine.handles().audit;
    let chain = verified(audit).await;
    let signed = match newest(
        audit,
        Filter {
            kind: Some(EntryKind::SignedHead),
            ..Filter::default()
        },
        None,
        1,
    )
    .await
    {
        Ok((heads, _)) => heads.into_iter().next().map(|e| {
            serde_json::from_value::<SignedHead>(e.payload.clone())
                .map_err(|err| format!("entry {} is not a signed head: {err}", e.seq))
        }),
        Err(e) => Some(Err(e.to_string())),
    };
    let view = engine.view();
    let chrome = Chrome::new(&engine, &view, session, None, "/audit".into());
    page(
        StatusCode::OK,
        pages::audit(&chrome, &filter, &entries, older, &chain, signed.as_ref()),
    )
}

/// A chain verification the audit page reuses for [`VERIFY_REUSE`]: the page refreshes every few
/// seconds and on every engine event, and a full verification reads the whole log, so a busy log
/// would otherwise be re-read by every open tab several times a minute. The banner says which
/// head was verified and when.
struct CachedVerify {
    url: String,
    at: std::time::Instant,
    report: VerifyReport,
    checked_at: f64,
}

static VERIFIED: std::sync::Mutex<Vec<CachedVerify>> = std::sync::Mutex::new(Vec::new());

/// The outcome of verifying the audit chain, and the wall-clock time (Unix seconds) it ran.
pub(crate) type ChainStatus = Result<(VerifyReport, f64), String>;

/// Verifies the audit chain ([`AuditLog::verify`]), reusing the last answer for this log while
/// it is younger than [`VERIFY_REUSE`].
async fn verified(audit: &AuditLog) -> ChainStatus {
    let url = audit.url().to_string();
    if let Ok(cache) = VERIFIED.lock()
        && let Some(c) = cache.iter().find(|c| c.url == url)
        && c.at.elapsed() < VERIFY_REUSE
    {
        return Ok((c.report.clone(), c.checked_at));
    }
    let report = audit.verify().await.map_err(|e| e.to_string())?;
    let checked_at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    if let Ok(mut cache) = VERIFIED.lock() {
        cache.retain(|c| c.url != url);
        // Bounded: one entry per audit database this process opened (tests open many).
        if cache.len() >= 16 {
            cache.remove(0);
        }
        cache.push(CachedVerify {
            url,
            at: std::time::Instant::now(),
            report: report.clone(),
            checked_at,
        });
    }
    Ok((report, checked_at))
}

/// Forgets the cached verification of this log (tests that tamper with it).
#[cfg(test)]
fn forget_verification(audit: &AuditLog) {
    if let Ok(mut cache) = VERIFIED.lock() {
        cache.retain(|c| c.url != audit.url());
    }
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
    let json = forward(
        &engine,
        &session,
        &format!("/api/v1/actions/{}/{verb}", seg(&id)),
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    let incident = json["id"].as_str().unwrap_or_default();
    let done = if approve { "approved" } else { "rejected" };
    Ok(Redirect::to(&format!("/incidents/{}?done={done}", seg(incident))).into_response())
}

/// Posts `body` to the API at `path` in-process with the session's token, so the API's role
/// check, validation and audit record apply unchanged; its answer as JSON, or its refusal.
async fn forward(
    engine: &Arc<Engine>,
    session: &Session,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, DashboardError> {
    let req = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| DashboardError::BadRequest(format!("`{path}`: {e}")))?;
    let res = match crate::api::router(engine.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), FORWARD_LIMIT)
        .await
        .map_err(|e| DashboardError::Api {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the API's answer to `{path}` could not be read: {e}"),
        })?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let message = json["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the API answered {status}"));
        return Err(DashboardError::Api { status, message });
    }
    Ok(json)
}

async fn runbooks_page(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> Response {
    let session = match reader(&engine, &headers, "/runbooks") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let view = engine.view();
    let chrome = Chrome::new(&engine, &view, session, None, "/runbooks".into());
    let mut list: Vec<&Runbook> = engine.handles().runbooks.iter().collect();
    // The order diagnosis prefers them in: highest priority first.
    list.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    page(StatusCode::OK, pages::runbooks(&chrome, &list))
}

/// The watched runs a runbook may be executed on: every watched run (from the config or
/// discovered) except those whose configured `runbooks` list leaves it out. The API checks again.
fn runs_for(engine: &Engine, view: &View, runbook: &str) -> Vec<String> {
    let cfg = engine.config();
    view.watches
        .iter()
        .filter(|w| {
            cfg.watches
                .iter()
                .find(|c| c.run == w.run)
                .is_none_or(|c| c.runbooks.is_empty() || c.runbooks.iter().any(|r| r == runbook))
        })
        .map(|w| w.run.clone())
        .collect()
}

async fn runbook_page(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/runbooks/{}", seg(&id));
    let session = match reader(&engine, &headers, &here) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Some(rb) = engine.handles().runbooks.get(&id).cloned() else {
        return DashboardError::NotFound(format!("no runbook `{id}`")).into_response();
    };
    let view = engine.view();
    let chrome = Chrome::new(&engine, &view, session, None, here);
    let runs = runs_for(&engine, &view, &rb.id);
    page(
        StatusCode::OK,
        pages::runbook(&chrome, &rb, &runs, None, None),
    )
}

/// The "Dry run" form.
#[derive(Debug, Deserialize)]
struct DryRunForm {
    /// The session's form token ([`Session::form_token`]).
    csrf: String,
    run: String,
}

/// Forwards a dry run to `POST /api/v1/runbooks/{id}/execute` with `dry_run: true` and the
/// browser's token (role `operator`; the API records it as `runbook_dry_run`), then shows the
/// runbook page with the plan and every policy decision. A refusal is shown on the same page.
async fn dry_run(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<DryRunForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !auth::same_origin(&headers) {
        return DashboardError::Forbidden("a dry run posted from another site is refused".into())
            .into_response();
    }
    let Some(rb) = engine.handles().runbooks.get(&id).cloned() else {
        return DashboardError::NotFound(format!("no runbook `{id}`")).into_response();
    };
    let Some(session) = auth::session(&engine.config().api, &headers) else {
        return DashboardError::Api {
            status: StatusCode::UNAUTHORIZED,
            message: "sign in with an operator token to dry-run a runbook".into(),
        }
        .into_response();
    };
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return DashboardError::BadRequest(e.body_text()).into_response(),
    };
    if !auth::form_token_ok(&session, &f.csrf) {
        return DashboardError::Forbidden(
            "this form was not issued to your session: reload the page and try again".into(),
        )
        .into_response();
    }
    let run = f.run.trim().to_string();
    let outcome = match forward(
        &engine,
        &session,
        &format!("/api/v1/runbooks/{}/execute", seg(&rb.id)),
        serde_json::json!({ "run": run, "dry_run": true }),
    )
    .await
    {
        Ok(json) => match serde_json::from_value::<pages::DryRun>(json) {
            Ok(plan) if plan.mode == "dry_run" => Ok(plan),
            Ok(plan) => Err(DashboardError::Api {
                status: StatusCode::BAD_GATEWAY,
                message: format!("the API answered mode `{}` to a dry run", plan.mode),
            }),
            Err(e) => Err(DashboardError::Api {
                status: StatusCode::BAD_GATEWAY,
                message: format!("the API's dry run could not be read: {e}"),
            }),
        },
        Err(e) => Err(e),
    };
    let view = engine.view();
    let here = format!("/runbooks/{}", seg(&rb.id));
    let mut chrome = Chrome::new(&engine, &view, Some(session), None, here);
    chrome.frozen = true;
    let runs = runs_for(&engine, &view, &rb.id);
    match outcome {
        Ok(plan) => page(
            StatusCode::OK,
            pages::runbook(&chrome, &rb, &runs, Some(&run), Some(Ok(&plan))),
        ),
        Err(e) => page(
            e.status(),
            pages::runbook(&chrome, &rb, &runs, Some(&run), Some(Err(&e.to_string()))),
        ),
    }
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
