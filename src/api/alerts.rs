//! Alert enrichment: babysitter as an Alertmanager webhook receiver, and as a lookup other
//! tools call.
//!
//! - `POST /api/v1/alerts/alertmanager` takes Alertmanager's webhook payload (version `"4"`),
//!   checks it field by field (a 400 names the field, `alerts[2].fingerprint`), records every
//!   alert in the audit log (`alert_received`; if that fails, 503 and nothing is forwarded, so
//!   Alertmanager retries), and for each alert about a watched run attaches babysitter's
//!   current diagnosis and forwards the enriched alert to that watch's pagers under the dedup
//!   key `alertmanager/<fingerprint>` (a trigger while firing, a resolve once resolved; the same
//!   alert re-sent unchanged by Alertmanager is not paged again). Alerts babysitter raised itself
//!   (`source="babysitter"`) are recorded but never forwarded, which would loop.
//!
//!   What was forwarded per fingerprint (status and a SHA-256 of the enrichment) is kept in the
//!   audit database (table `alert_forwarded`, [`crate::audit::ForwardedAlert`]), not in memory,
//!   so a restarted babysitter or another replica after a leader change still recognises an
//!   unchanged re-send, and still forwards the `resolved` of an alert forwarded before. There is
//!   no cache in front: a cached row could be stale after another replica forwarded a resolve,
//!   and then a new firing would be taken for a re-send and dropped. Bounded to [`REMEMBERED`]
//!   rows, resolved ones forgotten after [`RESOLVED_KEPT_MS`]. Fails open: when that table
//!   cannot be read or written, the alert is forwarded — a duplicate page beats a missed one.
//! - `GET /api/v1/alerts/enrich?label=value…` returns the same enrichment for a label set.
//!
//! An alert is about a watched run when its `[paging] alert_run_label` label (`run`) names the
//! run, or its `job` / `job_name` label names the watch's workload, or its `pod` label is one
//! of the workload's pods (`<name>-…`); a `namespace` label, when present, must match too.
//! Both endpoints sit behind the API's bearer-token check; the POST also accepts the token
//! whose hash is `[paging] alert_token_sha256` (what Alertmanager sends with
//! `http_config.authorization`), which grants nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ApiError, Caller, authorize, constant_time_eq};
use crate::act::Target;
use crate::audit::{EntryKind, NewEntry};
use crate::config::ApiRole;
use crate::detect::Severity;
use crate::engine::{Engine, View, WatchView};
use crate::incident::{Incident, IncidentState};
use crate::notify::{Page, PageAction, PagingConfig};

/// Alertmanager sends up to `max_alerts` per group (all by default): allow large groups.
const MAX_ALERTS_BODY: usize = 4 * 1024 * 1024;
/// Forwarded fingerprints remembered (to skip Alertmanager's unchanged re-sends); the oldest
/// beyond this are forgotten.
pub const REMEMBERED: u64 = 10_000;
/// How long a resolved alert stays remembered (a late duplicate of its `resolved` is skipped).
pub const RESOLVED_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;
/// The caller name of Alertmanager's own token.
pub const WEBHOOK_CALLER: &str = "alertmanager-webhook";

/// The routes, with their own auth layer; merged at the root by `api::router`.
pub(super) fn routes(engine: Arc<Engine>) -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/v1/alerts/alertmanager", post(receive))
        .route("/api/v1/alerts/enrich", get(enrich))
        .layer(axum::middleware::from_fn_with_state(
            engine,
            authorize_alerts,
        ))
        .layer(Extension(Arc::new(Forwarded::default())))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ALERTS_BODY))
}

/// Serialises deciding and recording what is forwarded within this process, so two requests
/// carrying the same alert at once do not both forward it (across replicas a race can still
/// forward a duplicate, the safe direction).
#[derive(Default)]
struct Forwarded(tokio::sync::Mutex<()>);

/// Alertmanager's token (POST only), else the API's usual check.
async fn authorize_alerts(
    State(engine): State<Arc<Engine>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() == Method::POST
        && let Some(want) = &engine.config().paging.alert_token_sha256
        && let Some(got) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| crate::config::token_hash(t.trim()))
        && constant_time_eq(want.to_ascii_lowercase().as_bytes(), got.as_bytes())
    {
        req.extensions_mut().insert(Caller {
            name: WEBHOOK_CALLER.into(),
            role: Some(ApiRole::Operator),
        });
        return next.run(req).await;
    }
    authorize(State(engine), req, next).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// Alertmanager's word for it (also what `alert_forwarded.status` holds).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert of the webhook payload, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct InAlert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub generator_url: Option<String>,
    pub fingerprint: String,
}

/// The webhook payload, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub status: AlertStatus,
    pub receiver: String,
    pub external_url: Option<String>,
    pub alerts: Vec<InAlert>,
}

fn bad(field: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("field `{field}`: {what}"))
}

fn status_of(field: &str, v: &Value) -> Result<AlertStatus, ApiError> {
    match v.as_str() {
        Some("firing") => Ok(AlertStatus::Firing),
        Some("resolved") => Ok(AlertStatus::Resolved),
        Some(other) => Err(bad(
            field,
            format!("`{other}` is neither `firing` nor `resolved`"),
        )),
        None => Err(bad(field, "required, `firing` or `resolved`")),
    }
}

fn string_map(field: &str, v: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad(field, "must be an object of strings"))?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(bad(&format!("{field}.{k}"), "must be a string")),
        })
        .collect()
}

fn opt_string(field: &str, v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// Parses and checks Alertmanager's webhook body (version 4).
pub fn parse_notification(body: &[u8]) -> Result<Notification, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body: not JSON: {e}")))?;
    let top = v
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("body: expected a JSON object".into()))?;
    match top.get("version").and_then(Value::as_str) {
        Some("4") => {}
        Some(other) => {
            return Err(bad(
                "version",
                format!("`{other}` is not supported; Alertmanager's webhook version is \"4\""),
            ));
        }
        None => return Err(bad("version", "required, \"4\"")),
    }
    let status = status_of("status", top.get("status").unwrap_or(&Value::Null))?;
    let receiver = match top.get("receiver") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad("receiver", "required, a string")),
    };
    let external_url = opt_string("externalURL", top.get("externalURL"))?;
    string_map("groupLabels", top.get("groupLabels"))?;
    string_map("commonLabels", top.get("commonLabels"))?;
    string_map("commonAnnotations", top.get("commonAnnotations"))?;
    let list = match top.get("alerts") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad("alerts", "is empty")),
        _ => return Err(bad("alerts", "required, an array of alerts")),
    };
    let mut alerts = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let at = |f: &str| format!("alerts[{i}].{f}");
        let a = a
            .as_object()
            .ok_or_else(|| bad(&format!("alerts[{i}]"), "must be an object"))?;
        let status = status_of(&at("status"), a.get("status").unwrap_or(&Value::Null))?;
        let labels = string_map(&at("labels"), a.get("labels"))?;
        if labels.is_empty() {
            return Err(bad(&at("labels"), "required, at least one label"));
        }
        let annotations = string_map(&at("annotations"), a.get("annotations"))?;
        let starts_at = match a.get("startsAt").and_then(Value::as_str) {
            Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => t.to_string(),
            Some(t) => return Err(bad(&at("startsAt"), format!("`{t}` is not RFC 3339"))),
            None => return Err(bad(&at("startsAt"), "required, an RFC 3339 time")),
        };
        if let Some(t) = opt_string(&at("endsAt"), a.get("endsAt"))?
            && chrono::DateTime::parse_from_rfc3339(&t).is_err()
        {
            return Err(bad(&at("endsAt"), format!("`{t}` is not RFC 3339")));
        }
        let fingerprint = match a.get("fingerprint").and_then(Value::as_str) {
            Some(f) if !f.trim().is_empty() && f.len() <= 128 => f.to_string(),
            Some(_) => return Err(bad(&at("fingerprint"), "1 to 128 characters")),
            None => return Err(bad(&at("fingerprint"), "required, a string")),
        };
        alerts.push(InAlert {
            status,
            labels,
            annotations,
            starts_at,
            generator_url: opt_string(&at("generatorURL"), a.get("generatorURL"))?,
            fingerprint,
        });
    }
    Ok(Notification {
        status,
        receiver,
        external_url,
        alerts,
    })
}

/// How an alert was tied to a watch: the label and its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchedBy {
    pub label: String,
    pub value: String,
}

/// The watch an alert's labels are about, if any.
pub fn match_watch<'a>(
    cfg: &PagingConfig,
    watches: &'a [WatchView],
    labels: &BTreeMap<String, String>,
) -> Option<(&'a WatchView, MatchedBy)> {
    let by = |label: &str, value: &str| MatchedBy {
        label: label.to_string(),
        value: value.to_string(),
    };
    if let Some(v) = labels.get(&cfg.alert_run_label)
        && let Some(w) = watches.iter().find(|w| &w.run == v)
    {
        return Some((w, by(&cfg.alert_run_label, v)));
    }
    for w in watches {
        let (namespace, name) = match &w.target {
            Target::Kubernetes {
                namespace, name, ..
            } => (Some(namespace.as_str()), name.as_str()),
            Target::Simulated { run } => (None, run.as_str()),
        };
        if let (Some(ns), Some(l)) = (namespace, labels.get("namespace"))
            && ns != l
        {
            continue;
        }
        for label in ["job", "job_name"] {
            if labels.get(label).is_some_and(|v| v == name) {
                return Some((w, by(label, name)));
            }
        }
        if let Some(pod) = labels.get("pod")
            && pod
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
        {
            return Some((w, by("pod", pod)));
        }
    }
    None
}

/// The open incident of a run (the newest), else none.
fn incident_of<'a>(view: &'a View, run: &str) -> Option<&'a Incident> {
    view.incidents
        .values()
        .filter(|i| i.run == run && !i.state.is_final())
        .max_by(|a, b| a.opened_at.total_cmp(&b.opened_at))
}

/// Babysitter's current view of a watched run, for an alert about it.
pub fn enrichment(base: &str, view: &View, w: &WatchView, by: &MatchedBy) -> Value {
    let inc = incident_of(view, &w.run);
    let dashboard = format!("{base}/runs/{}", w.run);
    let pending = inc.and_then(|i| {
        (i.state == IncidentState::AwaitingApproval)
            .then_some(i.pending.as_ref())
            .flatten()
            .map(|p| {
                json!({
                    "id": p.id, "action": p.action.to_string(), "reason": p.decision.reason,
                    "approve": format!("{base}/api/v1/actions/{}/approve", p.id),
                    "reject": format!("{base}/api/v1/actions/{}/reject", p.id),
                })
            })
    });
    json!({
        "run": w.run,
        "matched_by": by,
        "watch": { "status": w.status, "autonomy": w.autonomy, "route": w.route, "target": w.target.to_string() },
        "findings": w.active_findings.iter().map(|f| json!({
            "kind": f.kind, "chart": f.chart, "severity": f.severity, "message": f.message, "at": f.at,
        })).collect::<Vec<_>>(),
        "incident": inc.map(|i| json!({
            "id": i.id, "state": i.state, "family": i.family, "opened_at": i.opened_at,
            "findings": i.findings.iter().map(|f| format!("{} on {}: {}", f.kind, f.chart, f.message)).collect::<Vec<_>>(),
            "done": i.actions.iter().map(|a| format!("{} ({})", a.action, if a.ok { "ok" } else { "FAILED" })).collect::<Vec<_>>(),
        })),
        "runbook": inc.and_then(|i| i.diagnosis.as_ref()).map(|d| json!({ "id": d.runbook, "title": d.title })),
        "plan": inc.and_then(|i| i.diagnosis.as_ref()).map(|d| d.plan.steps.iter().map(|s| s.action.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "pending_action": pending,
        "links": {
            "dashboard": dashboard,
            "watch": format!("{base}/api/v1/watches/{}", w.run),
            "incident": inc.map(|i| format!("{base}/api/v1/incidents/{}", i.id)),
        },
    })
}

fn severity_of(labels: &BTreeMap<String, String>) -> Severity {
    match labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("critical" | "page" | "p1") => Severity::Critical,
        Some("error" | "high" | "p2") => Severity::Error,
        Some("info" | "none" | "p5") => Severity::Info,
        _ => Severity::Warning,
    }
}

/// The page for an enriched alert: the alert's own words first, then babysitter's evidence.
pub fn alert_page(a: &InAlert, route: &str, e: &Value) -> Page {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let run = s(&e["run"]);
    let alertname = a
        .labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| "alert".into());
    let said = a
        .annotations
        .get("summary")
        .or_else(|| a.annotations.get("description"))
        .cloned()
        .unwrap_or_else(|| alertname.clone());
    let mut summary = format!("[{alertname}] {run}: {said}");
    if let Some(id) = e["incident"]["id"].as_str() {
        summary.push_str(&format!(
            " — babysitter: {id} {}",
            s(&e["incident"]["state"])
        ));
        if let Some(rb) = e["runbook"]["id"].as_str() {
            summary.push_str(&format!(", runbook {rb}"));
        }
    }
    let mut details = vec![
        ("alert".to_string(), alertname),
        (
            "labels".to_string(),
            a.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Some(d) = a.annotations.get("description") {
        details.push(("description".into(), d.clone()));
    }
    for f in e["incident"]["findings"].as_array().into_iter().flatten() {
        details.push(("finding".into(), s(f)));
    }
    if e["incident"].is_null() {
        for f in e["findings"].as_array().into_iter().flatten() {
            details.push((
                "finding".into(),
                format!(
                    "{} on {}: {}",
                    s(&f["kind"]),
                    s(&f["chart"]),
                    s(&f["message"])
                ),
            ));
        }
    }
    if let Some(id) = e["runbook"]["id"].as_str() {
        details.push((
            "runbook".into(),
            format!("{id} — {}", s(&e["runbook"]["title"])),
        ));
    }
    let plan: Vec<String> = e["plan"].as_array().into_iter().flatten().map(s).collect();
    if !plan.is_empty() {
        details.push(("plan".into(), plan.join(" → ")));
    }
    for d in e["incident"]["done"].as_array().into_iter().flatten() {
        details.push(("done".into(), s(d)));
    }
    if let Some(id) = e["incident"]["id"].as_str() {
        details.push((
            "babysitter incident".into(),
            format!("{id} ({})", s(&e["incident"]["state"])),
        ));
    }
    let pending = &e["pending_action"];
    let (approve_command, reject_command) = if pending.is_object() {
        details.push((
            "proposed".into(),
            format!("{} — {}", s(&pending["action"]), s(&pending["reason"])),
        ));
        (
            Some(format!(
                "curl -sX POST {} -H \"Authorization: Bearer $BABYSITTER_TOKEN\" -H 'content-type: application/json' -d '{{\"by\":\"'$USER'\"}}'",
                s(&pending["approve"])
            )),
            Some(format!(
                "curl -sX POST {} -H \"Authorization: Bearer $BABYSITTER_TOKEN\" -H 'content-type: application/json' -d '{{\"by\":\"'$USER'\",\"reason\":\"...\"}}'",
                s(&pending["reject"])
            )),
        )
    } else {
        (None, None)
    };
    let dashboard = s(&e["links"]["dashboard"]);
    details.push(("dashboard".into(), dashboard.clone()));
    let mut links = vec![dashboard];
    if let Some(l) = e["links"]["incident"].as_str() {
        links.push(l.to_string());
    }
    if let Some(g) = a.generator_url.as_ref().filter(|g| !g.is_empty()) {
        links.push(g.clone());
    }
    Page {
        dedup_key: format!("alertmanager/{}", a.fingerprint),
        action: match a.status {
            AlertStatus::Firing => PageAction::Trigger,
            AlertStatus::Resolved => PageAction::Resolve,
        },
        severity: severity_of(&a.labels),
        summary,
        // The alert's own identity: on an Alertmanager pager, babysitter's incident id as the
        // `incident` label would merge it with babysitter's own alert for that incident.
        incident: format!("alert/{}", a.fingerprint),
        run,
        route: route.to_string(),
        details,
        approve_command,
        reject_command,
        links,
        reminder: 0,
    }
}

/// What happened to one received alert (the response lists them in order).
#[derive(Debug, Serialize)]
struct Outcome {
    fingerprint: String,
    status: AlertStatus,
    run: Option<String>,
    forwarded: bool,
    /// Why it was not forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enrichment: Option<Value>,
}

/// SHA-256 (hex) of what in an enrichment would make a re-sent alert worth paging again, as
/// remembered in `alert_forwarded`: babysitter's diagnosis and decisions — the incident (id,
/// state, family, its findings as a set, what was done), the runbook, the plan, the pending
/// action, and the kinds, charts and severities of the active findings. Left out is what a
/// restarted babysitter sees differently without anything having happened, and what flaps:
/// when a finding was raised and its wording (re-detected at a later tick), the watch's
/// liveness status (`running` / `waiting` / `blind`; a pause or resume shows in `done`), links.
pub fn enrichment_digest(e: Option<&Value>) -> String {
    let text = match e {
        None => String::new(),
        Some(e) => {
            let set = |v: &Value, f: &dyn Fn(&Value) -> Value| {
                let mut items: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(|x| f(x).to_string()).collect())
                    .unwrap_or_default();
                items.sort();
                items.dedup();
                items
            };
            let inc = &e["incident"];
            json!({
                "run": e["run"],
                "findings": set(&e["findings"], &|f| json!([f["kind"], f["chart"], f["severity"]])),
                "incident": inc.is_object().then(|| json!({
                    "id": inc["id"], "state": inc["state"], "family": inc["family"],
                    "findings": set(&inc["findings"], &Value::clone), "done": inc["done"],
                })),
                "runbook": e["runbook"]["id"],
                "plan": e["plan"],
                "pending_action": e["pending_action"].is_object().then(|| json!({
                    "id": e["pending_action"]["id"], "action": e["pending_action"]["action"],
                })),
            })
            .to_string()
        }
    };
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `a` (with enrichment digest `digest`) was already forwarded unchanged: by this
/// request (`marked`), else per the audit database.
///
/// Fails open: when the database cannot be read the alert counts as not forwarded, so it is
/// forwarded (perhaps a duplicate page) rather than dropped (perhaps a missed one).
async fn already_forwarded(
    engine: &Engine,
    marked: &HashMap<String, (AlertStatus, String)>,
    a: &InAlert,
    digest: &str,
) -> bool {
    if let Some((status, d)) = marked.get(&a.fingerprint) {
        return *status == a.status && d == digest;
    }
    match engine.handles().audit.forwarded_alert(&a.fingerprint).await {
        Ok(Some(f)) => f.status == a.status.as_str() && f.enrichment_sha256 == digest,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(
                fingerprint = %a.fingerprint, error = %e,
                "cannot read what was forwarded for this alert; forwarding it (a duplicate beats a missed page)"
            );
            false
        }
    }
}

/// Remembers what this request forwards, then prunes. Fails open: a failed write is logged
/// and the alert forwarded anyway (its next unchanged re-send may page again).
async fn remember_forwarded(engine: &Engine, marked: &HashMap<String, (AlertStatus, String)>) {
    let audit = &engine.handles().audit;
    let now = chrono::Utc::now().timestamp_millis();
    for (fingerprint, (status, digest)) in marked {
        if let Err(e) = audit
            .record_forwarded_alert(fingerprint, status.as_str(), digest, now)
            .await
        {
            tracing::warn!(
                fingerprint = %fingerprint, error = %e,
                "cannot remember a forwarded alert; its next unchanged re-send may be paged again"
            );
        }
    }
    if let Err(e) = audit
        .prune_forwarded_alerts(now.saturating_sub(RESOLVED_KEPT_MS), REMEMBERED)
        .await
    {
        tracing::warn!(error = %e, "cannot prune the forwarded alerts");
    }
}

async fn receive(
    State(engine): State<Arc<Engine>>,
    Extension(caller): Extension<Caller>,
    Extension(forwarded): Extension<Arc<Forwarded>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let n = parse_notification(&body)?;
    let cfg = &engine.config().paging;
    let view = engine.view();
    let base = engine.public_url();
    let mut outcomes = Vec::with_capacity(n.alerts.len());
    let mut to_send = Vec::new();
    // Held until what this request forwards is recorded.
    let _deciding = forwarded.0.lock().await;
    // What this request forwards, per fingerprint: recorded once every alert is on record.
    let mut marked: HashMap<String, (AlertStatus, String)> = HashMap::new();
    for a in &n.alerts {
        let matched = match_watch(cfg, &view.watches, &a.labels);
        let enrichment = matched
            .as_ref()
            .map(|(w, by)| enrichment(&base, &view, w, by));
        let own = a.labels.get("source").is_some_and(|s| s == "babysitter");
        let (forward, note) = match (&matched, own) {
            (None, _) => (false, Some("no watched run matches its labels")),
            (_, true) => (false, Some("raised by babysitter itself")),
            (Some(_), false) if !cfg.forward_alerts => {
                (false, Some("forwarding is off ([paging] forward_alerts)"))
            }
            (Some(_), false) => {
                let digest = enrichment_digest(enrichment.as_ref());
                if already_forwarded(&engine, &marked, a, &digest).await {
                    (false, Some("already forwarded unchanged"))
                } else {
                    marked.insert(a.fingerprint.clone(), (a.status, digest));
                    (true, None)
                }
            }
        };
        let run = matched.as_ref().map(|(w, _)| w.run.clone());
        let incident = enrichment
            .as_ref()
            .and_then(|e| e["incident"]["id"].as_str().map(str::to_string));
        let entry = NewEntry {
            kind: EntryKind::AlertReceived,
            run: run.clone(),
            incident: incident.clone(),
            actor: format!("api:{}", caller.name),
            payload: json!({
                "fingerprint": a.fingerprint, "status": a.status, "receiver": n.receiver,
                "alertname": a.labels.get("alertname"), "labels": a.labels,
                "starts_at": a.starts_at, "external_url": n.external_url,
                "matched_by": matched.as_ref().map(|(_, by)| by),
                "forwarded": forward, "note": note,
            }),
        };
        if let Err(e) = engine.handles().audit.append(entry).await {
            // Nothing unrecorded is forwarded (nor remembered); Alertmanager retries a 5xx.
            return Err(ApiError::Unavailable(format!(
                "the audit log cannot be written, so the alert is not taken: {e}"
            )));
        }
        if forward && let (Some((w, _)), Some(e)) = (&matched, &enrichment) {
            to_send.push((alert_page(a, &w.route, e), incident.clone()));
        }
        outcomes.push(Outcome {
            fingerprint: a.fingerprint.clone(),
            status: a.status,
            run,
            forwarded: forward,
            note,
            enrichment,
        });
    }
    if !marked.is_empty() {
        remember_forwarded(&engine, &marked).await;
    }
    for (page, incident) in to_send {
        forward_page(&engine, page, incident);
    }
    Ok(Json(json!({ "received": outcomes.len(), "alerts": outcomes })).into_response())
}

/// Sends an enriched alert from a task (Alertmanager must not wait for retries) and records
/// the delivery as a `page` entry.
fn forward_page(engine: &Arc<Engine>, page: Page, incident: Option<String>) {
    let engine = engine.clone();
    tokio::spawn(async move {
        let pager = engine.handles().pager.clone();
        let result = pager.send(&page).await;
        if let Err(e) = &result {
            tracing::error!(dedup_key = %page.dedup_key, error = %e, "enriched alert not delivered");
        }
        let entry = NewEntry {
            kind: EntryKind::Page,
            run: Some(page.run.clone()),
            incident,
            actor: "babysitter".into(),
            payload: json!({
                "pager": pager.name(), "page": page, "from_alertmanager": true,
                "delivered": result.is_ok(), "error": result.err().map(|e| e.to_string()),
            }),
        };
        if let Err(e) = engine.handles().audit.append(entry).await {
            tracing::error!(error = %e, "cannot record a forwarded alert");
        }
    });
}

async fn enrich(
    State(engine): State<Arc<Engine>>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(labels) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if labels.is_empty() {
        return Err(ApiError::BadRequest(
            "query: give the alert's labels as ?label=value (e.g. ?run=my-run or ?job=trainer&namespace=ml)".into(),
        ));
    }
    let cfg = &engine.config().paging;
    let view = engine.view();
    let (w, by) = match_watch(cfg, &view.watches, &labels).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no watched run matches these labels (tried `{}`, then `job`, `job_name`, `pod` against each watch's workload)",
            cfg.alert_run_label
        ))
    })?;
    Ok(Json(enrichment(&engine.public_url(), &view, w, &by)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(alerts: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "version": "4", "status": "firing", "receiver": "babysitter",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am:9093", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "alerts": alerts,
        }))
        .unwrap()
    }

    fn alert() -> Value {
        json!({
            "status": "firing", "labels": {"alertname": "TrainingLossHigh", "run": "run-a"},
            "annotations": {"summary": "loss high"}, "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "abc123",
        })
    }

    fn err(b: &[u8]) -> String {
        parse_notification(b).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_payload_parses() {
        let n = parse_notification(&body(json!([alert()]))).unwrap();
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.receiver, "babysitter");
        assert_eq!(n.alerts[0].fingerprint, "abc123");
        assert_eq!(n.alerts[0].labels["run"], "run-a");
        assert_eq!(n.alerts[0].annotations["summary"], "loss high");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(b"nope").starts_with("body: not JSON"));
        let mut v: Value = serde_json::from_slice(&body(json!([alert()]))).unwrap();
        v["version"] = json!("3");
        assert!(err(&serde_json::to_vec(&v).unwrap()).starts_with("field `version`"));
        assert!(err(&body(json!([]))).contains("field `alerts`: is empty"));
        let mut a = alert();
        a.as_object_mut().unwrap().remove("fingerprint");
        let two = body(json!([alert(), a]));
        assert_eq!(
            err(&two),
            "field `alerts[1].fingerprint`: required, a string"
        );
        let mut a = alert();
        a["labels"]["run"] = json!(3);
        assert_eq!(
            err(&body(json!([a]))),
            "field `alerts[0].labels.run`: must be a string"
        );
        let mut a = alert();
        a["status"] = json!("pending");
        assert!(err(&body(json!([a]))).contains("`alerts[0].status`: `pending`"));
        let mut a = alert();
        a["startsAt"] = json!("yesterday");
        assert!(err(&body(json!([a]))).contains("`alerts[0].startsAt`"));
    }

    fn watch(run: &str, target: Target) -> WatchView {
        WatchView {
            run: run.into(),
            target,
            autonomy: crate::policy::Autonomy::Act,
            route: "ml".into(),
            status: "running".into(),
            held: None,
            last_sample: None,
            blind_since: None,
            source_error: None,
            active_findings: Vec::new(),
            open_incidents: Vec::new(),
            latest: BTreeMap::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn alerts_match_by_run_label_job_or_pod() {
        let ws = vec![
            watch(
                "run-a",
                Target::Simulated {
                    run: "run-a".into(),
                },
            ),
            watch(
                "llama",
                Target::Kubernetes {
                    api_version: "batch/v1".into(),
                    workload_kind: "Job".into(),
                    namespace: "ml".into(),
                    name: "llama-pretrain".into(),
                },
            ),
        ];
        let cfg = PagingConfig::default();
        let m = |l: &[(&str, &str)]| {
            match_watch(&cfg, &ws, &labels(l)).map(|(w, by)| (w.run.clone(), by.label))
        };
        assert_eq!(m(&[("run", "run-a")]), Some(("run-a".into(), "run".into())));
        assert_eq!(
            m(&[("job", "llama-pretrain"), ("namespace", "ml")]),
            Some(("llama".into(), "job".into()))
        );
        assert_eq!(
            m(&[("pod", "llama-pretrain-worker-3")]),
            Some(("llama".into(), "pod".into()))
        );
        assert_eq!(
            m(&[("job", "llama-pretrain"), ("namespace", "other")]),
            None
        );
        assert_eq!(m(&[("pod", "llama-pretrainer-0")]), None);
        assert_eq!(m(&[("run", "unknown")]), None);
        let custom = PagingConfig {
            alert_run_label: "training_run".into(),
            ..PagingConfig::default()
        };
        assert_eq!(
            match_watch(&custom, &ws, &labels(&[("training_run", "llama")]))
                .map(|(w, _)| w.run.clone()),
            Some("llama".into())
        );
    }

    #[test]
    fn the_page_carries_the_alert_and_the_diagnosis() {
        let n = parse_notification(&body(json!([alert()]))).unwrap();
        let e = json!({
            "run": "run-a",
            "incident": {"id": "inc-4", "state": "awaiting_approval", "findings": ["loss_spike on loss: 9σ"], "done": ["pause (ok)"]},
            "runbook": {"id": "loss-spike", "title": "Loss spike"},
            "plan": ["pause", "restart from checkpoint"],
            "pending_action": {"action": "restart from checkpoint", "reason": "needs approval",
                "approve": "http://b/api/v1/actions/x/approve", "reject": "http://b/api/v1/actions/x/reject"},
            "links": {"dashboard": "http://b/runs/run-a", "incident": "http://b/api/v1/incidents/inc-4"},
        });
        let p = alert_page(&n.alerts[0], "ml", &e);
        assert_eq!(p.dedup_key, "alertmanager/abc123");
        assert_eq!(p.action, PageAction::Trigger);
        assert_eq!(p.severity, Severity::Warning);
        assert_eq!(
            p.summary,
            "[TrainingLossHigh] run-a: loss high — babysitter: inc-4 awaiting_approval, runbook loss-spike"
        );
        assert_eq!(p.incident, "alert/abc123");
        assert_eq!(d_incident(&p), "inc-4 (awaiting_approval)");
        let d = p.details_object();
        assert_eq!(d["runbook"], "loss-spike — Loss spike");
        assert_eq!(d["plan"], "pause → restart from checkpoint");
        assert_eq!(d["finding"], "loss_spike on loss: 9σ");
        assert_eq!(d["dashboard"], "http://b/runs/run-a");
        assert!(
            p.approve_command
                .unwrap()
                .contains("http://b/api/v1/actions/x/approve")
        );
        assert_eq!(p.links[0], "http://b/runs/run-a");
        assert_eq!(p.links[2], "http://prom/graph");
    }

    #[test]
    fn the_digest_ignores_finding_onsets_but_not_what_matters() {
        let e = json!({
            "run": "run-a",
            "findings": [{"kind": "loss_spike", "chart": "loss", "severity": "critical", "message": "9.1σ", "at": 100.0}],
            "incident": {"id": "inc-1", "state": "awaiting_approval"},
        });
        let d = enrichment_digest(Some(&e));
        assert_eq!(d.len(), 64);
        let mut later = e.clone();
        later["findings"][0]["at"] = json!(160.0);
        later["findings"][0]["message"] = json!("9.3σ");
        assert_eq!(enrichment_digest(Some(&later)), d);
        let mut state = e.clone();
        state["incident"]["state"] = json!("acting");
        assert_ne!(enrichment_digest(Some(&state)), d);
        // A restart: the watch is seen running, the finding re-stated on the incident.
        later["watch"] = json!({"status": "running"});
        later["incident"]["findings"] = json!(["a", "a"]);
        let mut once = e.clone();
        once["incident"]["findings"] = json!(["a"]);
        assert_eq!(
            enrichment_digest(Some(&later)),
            enrichment_digest(Some(&once))
        );
        let mut chart = e.clone();
        chart["findings"][0]["chart"] = json!("grad_norm");
        assert_ne!(enrichment_digest(Some(&chart)), d);
        let mut done = e.clone();
        done["incident"]["done"] = json!(["pause (ok)"]);
        assert_ne!(enrichment_digest(Some(&done)), d);
        let mut pending = e.clone();
        pending["pending_action"] = json!({"id": "inc-1-a1-s1", "action": "restart"});
        assert_ne!(enrichment_digest(Some(&pending)), d);
        assert_ne!(enrichment_digest(None), d);
    }

    fn d_incident(p: &Page) -> String {
        p.details_object()["babysitter incident"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
