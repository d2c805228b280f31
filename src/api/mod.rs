//! API: the HTTP interface for on-call automation.
//!
//! `/healthz`, `/readyz` and `/metrics` at the root; everything else under `/api/v1`:
//! watches and their state, incidents with findings, diagnosis, decisions and actions, approve /
//! reject of a pending action, an incident as a replayable trace with its labels
//! (`/incidents/{id}/trace`, `/incidents/{id}/labels`), the audit log filtered by run,
//! incident, kind and time, and who leads (`/api/v1/leader`; a follower replica refuses every mutation with 503).
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was; request bodies
//! are size-limited and parsed into typed values at the edge.

mod alerts;
mod export;

pub use export::{ORIGIN_HEADER, PRUNED_HEADER, UNTIL_HEADER};

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{EntryKind, Filter};
use crate::config::ApiRole;
use crate::engine::{ApprovalError, Engine, ExecuteError, ExecuteRequest, ExecuteResult};
use crate::incident::{Incident, IncidentState};

/// Largest request body accepted (approve / reject bodies are tiny).
const MAX_BODY: usize = 64 * 1024;

pub fn router(engine: Arc<Engine>) -> Router {
    let v1 = Router::new()
        .route("/watches", get(list_watches))
        .route("/watches/{run}", get(get_watch))
        .route("/incidents", get(list_incidents))
        .route("/incidents/{id}", get(get_incident))
        .route("/incidents/{id}/trace", get(export::trace))
        .route("/incidents/{id}/labels", get(export::labels))
        .route("/actions/pending", get(pending_actions))
        .route("/actions/{id}/approve", post(approve))
        .route("/actions/{id}/reject", post(reject))
        .route("/runbooks", get(list_runbooks))
        .route("/runbooks/{id}", get(get_runbook))
        .route("/runbooks/{id}/execute", post(execute_runbook))
        .route("/audit", get(audit))
        .route("/audit/verify", get(audit_verify))
        .route("/audit/heads", post(sign_head))
        .route("/leader", get(leader));
    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        engine.clone(),
        authorize,
    ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(alerts::routes(engine.clone()))
        .nest("/api/v1", v1)
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
}

/// The authenticated caller of a request under `/api/v1`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`anonymous` for open reads).
    pub name: String,
    pub role: Option<ApiRole>,
}

/// The role a mutation under `/api/v1` needs: `admin` for the audit log's own upkeep
/// (`POST /audit/…`), `operator` for everything else (approve, reject, execute runbooks, and
/// whatever other modules add).
pub fn mutation_role(path: &str) -> ApiRole {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    if path.starts_with("/audit") {
        ApiRole::Admin
    } else {
        ApiRole::Operator
    }
}

/// Bearer-token check for `/api/v1`: reads need `viewer` unless `api.read_open`; mutations need
/// [`mutation_role`] (roles include the ones below them: viewer ⊂ operator ⊂ admin). Tokens are
/// compared by their SHA-256 (only hashes are configured).
async fn authorize(
    State(engine): State<Arc<Engine>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = &engine.config().api;
    let mutation = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let needed = if mutation {
        Some(mutation_role(req.uri().path()))
    } else if api.read_open {
        None
    } else {
        Some(ApiRole::Viewer)
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| crate::config::token_hash(t.trim()));
    let holder = presented.as_ref().and_then(|h| {
        api.tokens
            .iter()
            .find(|t| constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), h.as_bytes()))
    });
    let caller = match (holder, &presented) {
        (Some(t), _) => Caller {
            name: t.name.clone(),
            role: Some(t.role),
        },
        (None, Some(_)) => return ApiError::Unauthorized("unknown token".into()).into_response(),
        (None, None) => Caller {
            name: "anonymous".into(),
            role: None,
        },
    };
    if let Some(needed) = needed {
        match caller.role {
            None if api.tokens.is_empty() => {
                return ApiError::Forbidden(format!(
                    "this needs a token with role `{}`, and no API tokens are configured ([[api.tokens]])",
                    needed.as_str()
                ))
                .into_response();
            }
            None => {
                return ApiError::Unauthorized(format!(
                    "this needs a bearer token with role `{}`",
                    needed.as_str()
                ))
                .into_response();
            }
            Some(role) if role < needed => {
                return ApiError::Forbidden(format!(
                    "`{}` has role `{}`; this needs `{}`",
                    caller.name,
                    role.as_str(),
                    needed.as_str()
                ))
                .into_response();
            }
            Some(_) => {}
        }
    }
    // Only the leader acts: a follower's approval or execution would be lost or repeated.
    if mutation && !engine.is_leader() {
        let l = engine.leadership();
        return ApiError::Unavailable(format!(
            "this replica ({}) is a follower and serves the API read-only; send this to the leader ({})",
            l.identity.as_deref().unwrap_or("unknown"),
            l.holder.as_deref().unwrap_or("not known yet")
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Errors as the API reports them.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// It existed, and what was asked of it is no longer kept (410).
    #[error("{0}")]
    Gone(String),
}

/// A request body that did not parse: 413 when it is over [`MAX_BODY`], else 400 with serde's
/// message (which names the field: `unknown field `x``, `missing field `run``, `invalid type …
/// at line 1 column 9` for the field's value).
fn body_error(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body over {MAX_BODY} bytes"))
    } else {
        ApiError::BadRequest(format!("invalid body: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "API error");
        }
        let mut res = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ApprovalError::NotPending { .. } | ApprovalError::Withdrawn { .. } => {
                ApiError::Conflict(e.to_string())
            }
            ApprovalError::Audit(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<ExecuteError> for ApiError {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::UnknownRunbook(_) | ExecuteError::UnknownRun(_) => {
                ApiError::NotFound(e.to_string())
            }
            ExecuteError::NotAllowed { .. } => ApiError::Forbidden(e.to_string()),
            ExecuteError::Busy { .. } => ApiError::Conflict(e.to_string()),
            ExecuteError::Audit => ApiError::Unavailable(e.to_string()),
        }
    }
}

type Api<T> = Result<Json<T>, ApiError>;

async fn readyz(State(engine): State<Arc<Engine>>) -> Response {
    let view = engine.view();
    let mut problems = Vec::new();
    if !engine.handles().audit.is_healthy() {
        problems.push("audit log not writable: babysitter will not act".to_string());
    }
    let leadership = engine.leadership();
    // A follower does not poll: it is ready when it can serve the read-only API.
    if view.ticks == 0 && leadership.is_leader {
        problems.push("no poll completed yet".to_string());
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let blind: Vec<_> = view
        .watches
        .iter()
        .filter(|w| w.status == "blind")
        .map(|w| w.run.clone())
        .collect();
    (
        status,
        Json(json!({
            "ready": problems.is_empty(),
            "problems": problems,
            "leader": leadership.is_leader,
            "leadership": leadership,
            "watches": view.watches.len(),
            "blind_watches": blind,
        })),
    )
        .into_response()
}

/// Who leads: this replica's identity, whether it leads, the Lease and its holder.
async fn leader(State(engine): State<Arc<Engine>>) -> Api<crate::engine::Leadership> {
    Ok(Json(engine.leadership()))
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        engine.metrics().encode(),
    )
        .into_response()
}

async fn list_watches(State(engine): State<Arc<Engine>>) -> Api<serde_json::Value> {
    let view = engine.view();
    Ok(Json(json!({ "now": view.now, "watches": view.watches })))
}

async fn get_watch(
    State(engine): State<Arc<Engine>>,
    Path(run): Path<String>,
) -> Api<serde_json::Value> {
    let view = engine.view();
    let w = view
        .watches
        .into_iter()
        .find(|w| w.run == run)
        .ok_or_else(|| ApiError::NotFound(format!("no watch for run `{run}`")))?;
    Ok(Json(json!(w)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentQuery {
    run: Option<String>,
    state: Option<IncidentState>,
    /// Only incidents that are not resolved or escalated.
    open: Option<bool>,
}

/// An incident in a list: the headline, not the whole record.
#[derive(Debug, Serialize)]
struct IncidentSummary {
    id: String,
    run: String,
    family: crate::detect::Family,
    state: IncidentState,
    opened_at: f64,
    updated_at: f64,
    kinds: Vec<crate::detect::FindingKind>,
    runbook: Option<String>,
    pending_action: Option<String>,
    outcome: Option<String>,
}

impl From<&Incident> for IncidentSummary {
    fn from(i: &Incident) -> Self {
        let mut kinds: Vec<_> = i.findings.iter().map(|f| f.kind).collect();
        kinds.dedup();
        IncidentSummary {
            id: i.id.clone(),
            run: i.run.clone(),
            family: i.family,
            state: i.state,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            kinds,
            runbook: i.diagnosis.as_ref().map(|d| d.runbook.clone()),
            pending_action: i.pending.as_ref().map(|p| p.id.clone()),
            outcome: i.outcome.clone(),
        }
    }
}

async fn list_incidents(
    State(engine): State<Arc<Engine>>,
    q: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<serde_json::Value> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let view = engine.view();
    let incidents: Vec<IncidentSummary> = view
        .incidents
        .values()
        .filter(|i| q.run.as_ref().is_none_or(|r| &i.run == r))
        .filter(|i| q.state.is_none_or(|s| i.state == s))
        .filter(|i| !q.open.unwrap_or(false) || !i.state.is_final())
        .map(IncidentSummary::from)
        .collect();
    Ok(Json(json!({ "incidents": incidents })))
}

async fn get_incident(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Api<Incident> {
    find_incident(&engine, &id).await.map(Json)
}

/// An incident by id: from memory, else (finished incidents leave memory after a day) from the
/// database; 404 naming the id when neither has it.
async fn find_incident(engine: &Engine, id: &str) -> Result<Incident, ApiError> {
    if let Some(inc) = engine.view().incidents.remove(id) {
        return Ok(inc);
    }
    let record = engine
        .handles()
        .audit
        .load_incident(id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no incident `{id}`")))?;
    serde_json::from_value(record.data)
        .map_err(|e| ApiError::Unavailable(format!("incident `{id}` is unreadable: {e}")))
}

async fn pending_actions(State(engine): State<Arc<Engine>>) -> Api<serde_json::Value> {
    let view = engine.view();
    let base = engine.public_url();
    let pending: Vec<_> = view
        .incidents
        .values()
        .filter(|i| i.state == IncidentState::AwaitingApproval)
        .filter_map(|i| {
            i.pending.as_ref().map(|p| {
                json!({
                    "id": p.id, "incident": i.id, "run": i.run, "action": p.action,
                    "description": p.action.to_string(), "reason": p.decision.reason,
                    "requested_at": p.requested_at,
                    "approve": format!("{base}/api/v1/actions/{}/approve", p.id),
                    "reject": format!("{base}/api/v1/actions/{}/reject", p.id),
                })
            })
        })
        .collect();
    Ok(Json(json!({ "pending": pending })))
}

/// Body of approve / reject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settle {
    /// On whose behalf, if not the token holder's (recorded beside the caller).
    by: Option<String>,
    reason: Option<String>,
}

/// Checks an approve / reject body; returns (on behalf of, reason).
fn parse_settle(
    caller: &Caller,
    body: Result<Json<Settle>, JsonRejection>,
) -> Result<(String, Option<String>), ApiError> {
    let Json(s) = body.map_err(body_error)?;
    let by = s.by.as_deref().map(str::trim).unwrap_or(&caller.name);
    if by.is_empty() || by.len() > 200 {
        return Err(ApiError::BadRequest(
            "field `by`: a name of 1 to 200 characters".into(),
        ));
    }
    if s.reason.as_ref().is_some_and(|r| r.len() > 2000) {
        return Err(ApiError::BadRequest(
            "field `reason`: at most 2000 characters".into(),
        ));
    }
    Ok((by.to_string(), s.reason))
}

async fn approve(
    State(engine): State<Arc<Engine>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Settle>, JsonRejection>,
) -> Api<Incident> {
    let (by, reason) = parse_settle(&caller, body)?;
    Ok(Json(
        engine
            .settle_as(&id, &caller.name, &by, reason, true)
            .await?,
    ))
}

async fn reject(
    State(engine): State<Arc<Engine>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Settle>, JsonRejection>,
) -> Api<Incident> {
    let (by, reason) = parse_settle(&caller, body)?;
    Ok(Json(
        engine
            .settle_as(&id, &caller.name, &by, reason, false)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    run: Option<String>,
    incident: Option<String>,
    kind: Option<EntryKind>,
    /// RFC 3339 lower bound on the entry time.
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<i64>,
    /// The `cursor` of the previous page (same as `after_seq`).
    cursor: Option<String>,
    limit: Option<u32>,
}

fn parse_time(
    field: &str,
    v: &Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    v.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ApiError::BadRequest(format!(
                        "query `{field}`: `{t}` is not an RFC 3339 time ({e})"
                    ))
                })
        })
        .transpose()
}

/// `%`-encodes a query value (RFC 3986 unreserved characters stay).
fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link to the page after `last_seq`, with the same filters.
fn audit_next_link(q: &AuditQuery, last_seq: i64, limit: u32) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    let text = [
        ("run", &q.run),
        ("incident", &q.incident),
        ("since", &q.since),
        ("until", &q.until),
    ];
    for (k, v) in text {
        if let Some(v) = v {
            params.push((k, v.clone()));
        }
    }
    if let Some(kind) = q.kind {
        params.push(("kind", kind.as_str().to_string()));
    }
    params.push(("after_seq", last_seq.to_string()));
    params.push(("limit", limit.to_string()));
    let query: Vec<String> = params
        .into_iter()
        .map(|(k, v)| format!("{k}={}", encode_query_value(&v)))
        .collect();
    format!("/api/v1/audit?{}", query.join("&"))
}

/// `POST /api/v1/audit/heads` (admin): signs the chain's head now.
async fn sign_head(
    State(engine): State<Arc<Engine>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let audit = &engine.handles().audit;
    let head = audit
        .sign_head()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match head {
        Some(h) => {
            tracing::info!(caller = %caller.name, seq = h.seq, "signed head on request");
            Ok((
                StatusCode::CREATED,
                Json(json!({ "head": h, "by": caller.name })),
            )
                .into_response())
        }
        None => Err(ApiError::Conflict(
            "no signing key configured (audit.signing_key_file), or the log is empty".into(),
        )),
    }
}

async fn audit(
    State(engine): State<Arc<Engine>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<serde_json::Value> {
    let Query(mut q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(c) = q.cursor.take() {
        if q.after_seq.is_some() {
            return Err(ApiError::BadRequest(
                "query `cursor`: give either `cursor` or `after_seq`, not both".into(),
            ));
        }
        q.after_seq = Some(c.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "query `cursor`: `{c}` is not a cursor from a `next` link"
            ))
        })?);
    }
    let since = parse_time("since", &q.since)?;
    let until = parse_time("until", &q.until)?;
    let max = crate::audit::MAX_QUERY_LIMIT;
    if q.limit.is_some_and(|l| l < 1 || l > max) {
        return Err(ApiError::BadRequest(format!(
            "query `limit`: between 1 and {max}"
        )));
    }
    let limit = q.limit.unwrap_or(crate::audit::DEFAULT_QUERY_LIMIT);
    let filter = Filter {
        run: q.run.clone(),
        incident: q.incident.clone(),
        kind: q.kind,
        since,
        until,
        after_seq: q.after_seq,
        limit: Some(limit),
    };
    let entries = engine
        .handles()
        .audit
        .query(&filter)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    // A full page may have more after it; the last page has no `next`.
    let next = match entries.last() {
        Some(last) if entries.len() as u64 == u64::from(limit) => {
            Some(audit_next_link(&q, last.seq, limit))
        }
        _ => None,
    };
    let cursor = next
        .as_ref()
        .and_then(|_| entries.last().map(|e| e.seq.to_string()));
    Ok(Json(
        json!({ "entries": entries, "next": next, "cursor": cursor }),
    ))
}

async fn audit_verify(State(engine): State<Arc<Engine>>) -> Response {
    match engine.handles().audit.verify().await {
        Ok(report) => {
            let status = if report.ok() {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            (
                status,
                Json(json!({ "ok": report.ok(), "report": report, "summary": report.to_string() })),
            )
                .into_response()
        }
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}

/// A runbook as listed: what it reacts to and what it does.
fn runbook_summary(r: &crate::runbook::Runbook) -> serde_json::Value {
    json!({
        "id": r.id,
        "title": r.title,
        "path": r.path,
        "sha256": r.sha256,
        "triggers": r.triggers,
        "priority": r.priority,
        "steps": r.steps.iter().map(|s| json!({
            "action": s.action,
            "description": s.action.to_string(),
            "requires_approval": s.requires_approval,
        })).collect::<Vec<_>>(),
        "verify": r.verify,
        "max_attempts": r.max_attempts,
        "escalation_severity": r.escalation_severity,
    })
}

async fn list_runbooks(State(engine): State<Arc<Engine>>) -> Api<serde_json::Value> {
    let list: Vec<_> = engine
        .handles()
        .runbooks
        .iter()
        .map(runbook_summary)
        .collect();
    Ok(Json(json!({ "runbooks": list })))
}

async fn get_runbook(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Api<serde_json::Value> {
    let rb = engine
        .handles()
        .runbooks
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no runbook `{id}`")))?;
    let mut html = String::new();
    pulldown_cmark::html::push_html(
        &mut html,
        pulldown_cmark::Parser::new_ext(&rb.body, pulldown_cmark::Options::ENABLE_TABLES),
    );
    let mut v = runbook_summary(rb);
    v["markdown"] = json!(rb.body);
    v["html"] = json!(html);
    Ok(Json(v))
}

/// Body of `POST /api/v1/runbooks/{id}/execute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Execute {
    /// The watched run to execute it on.
    run: String,
    /// On whose behalf, if not the token holder's.
    by: Option<String>,
    /// Return the plan and every policy decision without acting.
    #[serde(default)]
    dry_run: bool,
    reason: Option<String>,
}

async fn execute_runbook(
    State(engine): State<Arc<Engine>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Execute>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(body_error)?;
    let by = b.by.as_deref().map(str::trim).unwrap_or(&caller.name);
    if by.is_empty() || by.len() > 200 {
        return Err(ApiError::BadRequest(
            "field `by`: a name of 1 to 200 characters".into(),
        ));
    }
    if b.run.trim().is_empty() {
        return Err(ApiError::BadRequest("field `run`: required".into()));
    }
    if b.reason.as_ref().is_some_and(|r| r.len() > 2000) {
        return Err(ApiError::BadRequest(
            "field `reason`: at most 2000 characters".into(),
        ));
    }
    let result = engine
        .execute_runbook(ExecuteRequest {
            runbook: id,
            run: b.run,
            caller: caller.name.clone(),
            by: by.to_string(),
            reason: b.reason,
            dry_run: b.dry_run,
        })
        .await?;
    let status = match result {
        ExecuteResult::DryRun { .. } => StatusCode::OK,
        ExecuteResult::Executed { .. } => StatusCode::ACCEPTED,
    };
    Ok((status, Json(result)).into_response())
}
