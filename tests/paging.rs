//! Paging against receivers that check requests the way the real services do: PagerDuty's
//! Events API v2, a Slack incoming webhook, Opsgenie's Alert API and a webhook receiver that
//! verifies the HMAC signature — all local axum servers on 127.0.0.1:0 — plus a real
//! Alertmanager (Debian's `prometheus-alertmanager`) when it is installed: babysitter's alerts
//! in its v2 API, resolved and silenced, and its own webhook delivering alerts to babysitter's
//! enrichment endpoint, from where the enriched alert reaches a pager. Also: the durable outbox
//! across a restart, and reminders for an approval nobody answers.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use babysitter::audit::{AuditLog, EntryKind, Filter};
use babysitter::config::{
    AlertmanagerConfig, Config, DeliveryConfig, OpsgenieConfig, PagerDutyConfig, Secret,
    SlackConfig, WebhookConfig,
};
use babysitter::detect::Severity;
use babysitter::notify::alertmanager::AlertmanagerPager;
use babysitter::notify::opsgenie::OpsgeniePager;
use babysitter::notify::pagerduty::PagerDutyPager;
use babysitter::notify::slack::SlackPager;
use babysitter::notify::webhook::WebhookPager;
use babysitter::notify::{ConsolePager, Page, PageAction, PageError, PageStore, Pager};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

const PD_KEY: &str = "R0c2a1e9f4b84c1d9a7e3f5b6c8d0e2a";

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(2),
        attempts: 6,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(2),
        ..DeliveryConfig::default()
    }
}

fn page(action: PageAction) -> Page {
    Page {
        dedup_key: "babysitter/inc-7".into(),
        action,
        severity: Severity::Critical,
        summary: "run-c: loss spike 9σ; restart from checkpoint step 41000 awaits approval".into(),
        run: "run-c".into(),
        incident: "inc-7".into(),
        route: "ml-oncall".into(),
        details: vec![
            (
                "finding".into(),
                "loss_spike on loss: 9.1σ above the median".into(),
            ),
            ("runbook".into(), "loss-spike — Loss spike".into()),
            ("done".into(), "pause (ok)".into()),
            (
                "proposed".into(),
                "restart_from_checkpoint — needs approval".into(),
            ),
        ],
        approve_command: Some(
            "curl -sX POST http://127.0.0.1:8080/api/v1/actions/act-3/approve".into(),
        ),
        reject_command: Some(
            "curl -sX POST http://127.0.0.1:8080/api/v1/actions/act-3/reject".into(),
        ),
        links: vec!["http://127.0.0.1:8080/api/v1/incidents/inc-7".into()],
        reminder: 0,
    }
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

// ---------------------------------------------------------------- PagerDuty

#[derive(Default)]
struct Pd {
    /// Requests answered, valid or not.
    requests: usize,
    /// Accepted events.
    events: Vec<Value>,
    /// Alert state per dedup key, as PagerDuty keeps it.
    alerts: BTreeMap<String, &'static str>,
    /// The next N requests get 429 with `Retry-After: 1`.
    throttle: usize,
    /// The next N requests get 503.
    unavailable: usize,
    /// Every request before this instant gets 503 (a receiver down for a while).
    down_until: Option<Instant>,
}

/// What PagerDuty's Events API v2 checks before it answers 202.
fn pd_errors(ev: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    match ev["routing_key"].as_str() {
        Some(k) if k.len() != 32 => errs.push("'routing_key' must be 32 characters".to_string()),
        Some(PD_KEY) => {}
        _ => errs.push("'routing_key' is invalid".to_string()),
    }
    let action = ev["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errs.push("'event_action' is invalid".into());
    }
    match ev["dedup_key"].as_str() {
        Some(k) if k.len() > 255 => errs.push("'dedup_key' is too long".into()),
        None if action != "trigger" => errs.push("'dedup_key' is missing".into()),
        _ => {}
    }
    if action == "trigger" {
        let p = &ev["payload"];
        match p["summary"].as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
            _ => errs.push("'payload.summary' is missing or longer than 1024".into()),
        }
        if p["source"].as_str().is_none_or(str::is_empty) {
            errs.push("'payload.source' is missing".into());
        }
        if !["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap_or(""))
        {
            errs.push("'payload.severity' is invalid".into());
        }
        if let Some(t) = p.get("timestamp")
            && t.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none()
        {
            errs.push("'payload.timestamp' is invalid".into());
        }
        if let Some(d) = p.get("custom_details")
            && !d.is_object()
        {
            errs.push("'payload.custom_details' must be an object".into());
        }
    }
    errs
}

async fn pd_enqueue(State(s): State<Arc<Mutex<Pd>>>, body: Bytes) -> Response {
    let mut s = s.lock().unwrap();
    s.requests += 1;
    if s.throttle > 0 {
        s.throttle -= 1;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
    }
    if s.unavailable > 0 {
        s.unavailable -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
    }
    if s.down_until.is_some_and(|t| Instant::now() < t) {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
    }
    let Ok(ev) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["invalid JSON"]}))).into_response();
    };
    let errs = pd_errors(&ev);
    if !errs.is_empty() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": errs}))).into_response();
    }
    let key = ev["dedup_key"].as_str().unwrap_or("generated").to_string();
    let state = s.alerts.get(&key).copied();
    match (ev["event_action"].as_str(), state) {
        (Some("trigger"), None | Some("resolved")) => {
            s.alerts.insert(key.clone(), "triggered");
        }
        (Some("acknowledge"), Some("triggered")) => {
            s.alerts.insert(key.clone(), "acknowledged");
        }
        (Some("resolve"), Some(_)) => {
            s.alerts.insert(key.clone(), "resolved");
        }
        // PagerDuty accepts and ignores the rest (a trigger on an open alert is a duplicate).
        _ => {}
    }
    s.events.push(ev);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
    )
        .into_response()
}

async fn pagerduty() -> (String, Arc<Mutex<Pd>>) {
    let state = Arc::new(Mutex::new(Pd::default()));
    let app = axum::Router::new()
        .route("/v2/enqueue", post(pd_enqueue))
        .with_state(state.clone());
    (format!("http://{}", serve(app).await), state)
}

fn pd_pager(url: &str, key: &str) -> PagerDutyPager {
    PagerDutyPager::new(
        "oncall-pd",
        &PagerDutyConfig {
            routing_key: Secret::Value(key.into()),
            url: url.into(),
            source: None,
            delivery: fast(),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn pagerduty_trigger_acknowledge_resolve_is_one_alert() {
    let (url, pd) = pagerduty().await;
    let pager = pd_pager(&url, PD_KEY);
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    assert_eq!(pd.lock().unwrap().alerts["babysitter/inc-7"], "triggered");
    // An update of the open page is a duplicate trigger, not a second alert.
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    pager.send(&page(PageAction::Acknowledge)).await.unwrap();
    assert_eq!(
        pd.lock().unwrap().alerts["babysitter/inc-7"],
        "acknowledged"
    );
    pager.send(&page(PageAction::Resolve)).await.unwrap();

    let pd = pd.lock().unwrap();
    assert_eq!(pd.alerts.len(), 1, "{:?}", pd.alerts);
    assert_eq!(pd.alerts["babysitter/inc-7"], "resolved");
    let actions: Vec<&str> = pd
        .events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "acknowledge", "resolve"]);
    let trigger = &pd.events[0];
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "run-c");
    assert_eq!(
        trigger["payload"]["custom_details"]["runbook"],
        "loss-spike — Loss spike"
    );
    assert!(
        trigger["payload"]["custom_details"]["approve"]
            .as_str()
            .unwrap()
            .contains("/approve")
    );
    assert_eq!(
        trigger["links"][0]["href"],
        "http://127.0.0.1:8080/api/v1/incidents/inc-7"
    );
}

#[tokio::test]
async fn pagerduty_long_summary_is_cut_to_the_limit() {
    let (url, pd) = pagerduty().await;
    let mut p = page(PageAction::Trigger);
    p.summary = "ü".repeat(5000);
    pd_pager(&url, PD_KEY).send(&p).await.unwrap();
    let pd = pd.lock().unwrap();
    assert_eq!(
        pd.events[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        1024
    );
}

#[tokio::test]
async fn pagerduty_429_is_retried_after_retry_after() {
    let (url, pd) = pagerduty().await;
    pd.lock().unwrap().throttle = 1;
    let t0 = Instant::now();
    pd_pager(&url, PD_KEY)
        .send(&page(PageAction::Trigger))
        .await
        .unwrap();
    // The backoff is 20 ms: only `Retry-After: 1` explains a wait of a second.
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    let pd = pd.lock().unwrap();
    assert_eq!(pd.requests, 2);
    assert_eq!(pd.events.len(), 1);
}

#[tokio::test]
async fn pagerduty_5xx_is_retried_and_400_is_not() {
    let (url, pd) = pagerduty().await;
    pd.lock().unwrap().unavailable = 3;
    pd_pager(&url, PD_KEY)
        .send(&page(PageAction::Trigger))
        .await
        .unwrap();
    assert_eq!(pd.lock().unwrap().requests, 4);

    let wrong = "WRONGKEY000000000000000000000000";
    let err = pd_pager(&url, wrong)
        .send(&page(PageAction::Trigger))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PageError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("'routing_key' is invalid"), "{text}");
    assert!(!text.contains(wrong), "the routing key leaked: {text}");
    assert_eq!(pd.lock().unwrap().requests, 5, "a 400 is not retried");
    let err = pd_pager(&url, "short")
        .send(&page(PageAction::Trigger))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'routing_key' must be 32 characters"), "{err}");
}

#[tokio::test]
async fn pagerduty_gives_up_after_the_last_try_and_says_so() {
    let (url, pd) = pagerduty().await;
    pd.lock().unwrap().unavailable = 100;
    let err = pd_pager(&url, PD_KEY)
        .send(&page(PageAction::Trigger))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 6 tries: HTTP 503"), "{err}");
    assert!(!err.contains(PD_KEY));
    assert_eq!(pd.lock().unwrap().requests, 6);
}

// ---------------------------------------------------------------- receiver down

#[tokio::test]
async fn a_receiver_down_for_a_while_loses_no_page() {
    // Reserve a port, close it: connections are refused until the receiver comes up.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let state = Arc::new(Mutex::new(Pd::default()));
    let late = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let app = axum::Router::new()
            .route("/v2/enqueue", post(pd_enqueue))
            .with_state(late);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = axum::serve(listener, app).await;
    });
    let mut delivery = fast();
    delivery.backoff = Duration::from_millis(100);
    delivery.attempts = 8;
    let pager = PagerDutyPager::new(
        "oncall-pd",
        &PagerDutyConfig {
            routing_key: Secret::Value(PD_KEY.into()),
            url: format!("http://127.0.0.1:{port}"),
            source: None,
            delivery,
        },
    )
    .unwrap();
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    let s = state.lock().unwrap();
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.alerts["babysitter/inc-7"], "triggered");
}

#[tokio::test]
async fn a_page_that_outlasts_its_retries_is_queued_and_delivered_later() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paging.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[pagers.oncall-pd]
kind = "pagerduty"
routing_key = "{PD_KEY}"
url = "http://127.0.0.1:{port}"
[pagers.oncall-pd.delivery]
attempts = 2
backoff = "20ms"
redeliver_every = "200ms"
[routes]
ml-oncall = ["oncall-pd"]
"#
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path)).unwrap();
    let pager = babysitter::notify::build(&cfg, ConsolePager::new(), false).unwrap();
    // The receiver is down: both tries fail, the engine hears so, the page is queued.
    let err = pager
        .send(&page(PageAction::Trigger))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 2 tries"), "{err}");
    assert!(err.contains("queued for redelivery"), "{err}");
    // The acknowledge waits behind it.
    assert!(pager.send(&page(PageAction::Acknowledge)).await.is_err());

    let state = Arc::new(Mutex::new(Pd::default()));
    let app = axum::Router::new()
        .route("/v2/enqueue", post(pd_enqueue))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let t0 = Instant::now();
    while state.lock().unwrap().events.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = state.lock().unwrap();
    let actions: Vec<&str> = s
        .events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge"], "in order, once each");
    assert_eq!(s.alerts["babysitter/inc-7"], "acknowledged");
}

// ---------------------------------------------------------------- Slack

/// What Slack checks on an incoming webhook message (Block Kit limits).
fn slack_error(m: &Value) -> Option<&'static str> {
    let text = m["text"].as_str();
    let blocks = m["blocks"].as_array();
    if text.is_none_or(str::is_empty) && blocks.is_none() {
        return Some("no_text");
    }
    let blocks = blocks?;
    if blocks.len() > 50 {
        return Some("invalid_blocks");
    }
    for b in blocks {
        let ok = match b["type"].as_str() {
            Some("header") => {
                b["text"]["type"] == "plain_text"
                    && b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty() && t.chars().count() <= 150)
            }
            Some("section") => {
                let text_ok = b.get("text").is_none_or(|t| {
                    t["text"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty() && t.chars().count() <= 3000)
                });
                let fields_ok = b.get("fields").is_none_or(|f| {
                    f.as_array().is_some_and(|f| {
                        f.len() <= 10
                            && f.iter().all(|x| {
                                x["text"]
                                    .as_str()
                                    .is_some_and(|t| t.chars().count() <= 2000)
                            })
                    })
                });
                text_ok && fields_ok && (b.get("text").is_some() || b.get("fields").is_some())
            }
            Some("context") => b["elements"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.len() <= 10),
            _ => false,
        };
        if !ok {
            return Some("invalid_blocks");
        }
    }
    None
}

#[tokio::test]
async fn slack_gets_the_evidence_and_the_commands_in_valid_blocks() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/services/T000/B000/XXXX",
            post(|State(got): State<Arc<Mutex<Vec<Value>>>>, headers: HeaderMap, body: Bytes| async move {
                if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
                    return (StatusCode::BAD_REQUEST, "invalid_payload");
                }
                let Ok(m) = serde_json::from_slice::<Value>(&body) else {
                    return (StatusCode::BAD_REQUEST, "invalid_payload");
                };
                if let Some(e) = slack_error(&m) {
                    return (StatusCode::BAD_REQUEST, e);
                }
                got.lock().unwrap().push(m);
                (StatusCode::OK, "ok")
            }),
        )
        .with_state(got.clone());
    let addr = serve(app).await;
    let pager = SlackPager::new(
        "slack-ml",
        &SlackConfig {
            webhook_url: Secret::Value(format!("http://{addr}/services/T000/B000/XXXX")),
            delivery: fast(),
        },
    )
    .unwrap();
    let mut p = page(PageAction::Trigger);
    // More evidence than a section takes, and a long value.
    p.details
        .extend((0..10).map(|i| (format!("extra {i}"), "x".repeat(2500))));
    pager.send(&p).await.unwrap();
    pager.send(&page(PageAction::Resolve)).await.unwrap();
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        let all = got[0].to_string();
        assert!(all.contains("loss_spike on loss"), "{all}");
        assert!(all.contains("/api/v1/actions/act-3/approve"), "{all}");
        assert!(all.contains("/api/v1/actions/act-3/reject"), "{all}");
        assert!(got[1]["text"].as_str().unwrap().contains("resolved"));
    }

    // A wrong webhook path is a permanent 404 whose error does not show the URL.
    let bad = SlackPager::new(
        "slack-ml",
        &SlackConfig {
            webhook_url: Secret::Value(format!("http://{addr}/services/T000/B000/SECRETPATH")),
            delivery: fast(),
        },
    )
    .unwrap();
    let err = bad.send(&page(PageAction::Trigger)).await.unwrap_err();
    assert!(
        matches!(err, PageError::Rejected { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("SECRETPATH"), "{err}");
}

// ---------------------------------------------------------------- signed webhook

#[tokio::test]
async fn webhook_receiver_checks_the_hmac() {
    const SECRET: &str = "whsec-test-0123";
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(|State(got): State<Arc<Mutex<Vec<Value>>>>, headers: HeaderMap, body: Bytes| async move {
                // An independent receiver: HMAC-SHA256(secret, "{timestamp}.{body}").
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let ts = h("x-babysitter-timestamp");
                let Ok(ts_n) = ts.parse::<i64>() else { return StatusCode::UNAUTHORIZED };
                if (chrono::Utc::now().timestamp() - ts_n).abs() > 300 {
                    return StatusCode::UNAUTHORIZED;
                }
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(format!("{ts}.").as_bytes());
                mac.update(&body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                if h("x-babysitter-signature") != want {
                    return StatusCode::UNAUTHORIZED;
                }
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(h("x-babysitter-dedup-key"), v["page"]["dedup_key"].as_str().unwrap());
                got.lock().unwrap().push(v);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(got.clone());
    let addr = serve(app).await;
    let hook = |secret: &str| {
        WebhookPager::new(
            "hook",
            &WebhookConfig {
                url: format!("http://{addr}/hook"),
                secret: Secret::Value(secret.into()),
                delivery: fast(),
            },
        )
        .unwrap()
    };
    hook(SECRET).send(&page(PageAction::Trigger)).await.unwrap();
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["version"], "1");
        assert_eq!(got[0]["page"]["action"], "trigger");
        assert_eq!(got[0]["page"]["severity"], "critical");
        assert_eq!(got[0]["page"]["details"][0][0], "finding");
    }
    let err = hook("not-the-secret")
        .send(&page(PageAction::Trigger))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PageError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(got.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------- Opsgenie

#[derive(Default)]
struct Og {
    alerts: BTreeMap<String, &'static str>,
    calls: Vec<String>,
}

async fn opsgenie() -> (String, Arc<Mutex<Og>>) {
    const KEY: &str = "GenieKey 5e1f-test";
    fn authorized(h: &HeaderMap) -> bool {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(KEY)
    }
    let state = Arc::new(Mutex::new(Og::default()));
    let app = axum::Router::new()
        .route(
            "/v2/alerts",
            post(
                |State(s): State<Arc<Mutex<Og>>>, h: HeaderMap, body: Bytes| async move {
                    if !authorized(&h) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"message": "Key format is not valid!"})),
                        );
                    }
                    let Ok(a) = serde_json::from_slice::<Value>(&body) else {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"message": "invalid json"})),
                        );
                    };
                    let msg_ok = a["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty() && m.chars().count() <= 130);
                    let alias_ok = a["alias"]
                        .as_str()
                        .is_some_and(|m| m.chars().count() <= 512);
                    let prio_ok = ["P1", "P2", "P3", "P4", "P5"]
                        .contains(&a["priority"].as_str().unwrap_or("P3"));
                    let desc_ok = a["description"]
                        .as_str()
                        .is_none_or(|d| d.chars().count() <= 15000);
                    if !(msg_ok && alias_ok && prio_ok && desc_ok) {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            axum::Json(json!({"message": "Request body is not processable"})),
                        );
                    }
                    let mut s = s.lock().unwrap();
                    let alias = a["alias"].as_str().unwrap().to_string();
                    s.calls.push(format!(
                        "create {alias} {}",
                        a["priority"].as_str().unwrap()
                    ));
                    s.alerts.insert(alias, "open");
                    (
                        StatusCode::ACCEPTED,
                        axum::Json(
                            json!({"result": "Request will be processed", "requestId": "r1"}),
                        ),
                    )
                },
            ),
        )
        .route(
            "/v2/alerts/{alias}/{verb}",
            post(
                |State(s): State<Arc<Mutex<Og>>>,
                 Path((alias, verb)): Path<(String, String)>,
                 Query(q): Query<BTreeMap<String, String>>,
                 h: HeaderMap| async move {
                    if !authorized(&h) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"message": "unauthorized"})),
                        );
                    }
                    if q.get("identifierType").map(String::as_str) != Some("alias") {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"message": "Alert does not exist"})),
                        );
                    }
                    let mut s = s.lock().unwrap();
                    let new = match verb.as_str() {
                        "acknowledge" => "acked",
                        "close" => "closed",
                        _ => {
                            return (
                                StatusCode::NOT_FOUND,
                                axum::Json(json!({"message": "no such action"})),
                            );
                        }
                    };
                    s.calls.push(format!("{verb} {alias}"));
                    if let Some(st) = s.alerts.get_mut(&alias) {
                        *st = new;
                    }
                    (
                        StatusCode::ACCEPTED,
                        axum::Json(json!({"result": "Request will be processed"})),
                    )
                },
            ),
        )
        .with_state(state.clone());
    (format!("http://{}", serve(app).await), state)
}

#[tokio::test]
async fn opsgenie_create_acknowledge_close_by_alias() {
    let (url, og) = opsgenie().await;
    let pager = OpsgeniePager::new(
        "og",
        &OpsgenieConfig {
            api_key: Secret::Value("5e1f-test".into()),
            url,
            tags: vec!["ml".into()],
            delivery: fast(),
        },
    )
    .unwrap();
    let mut p = page(PageAction::Trigger);
    p.summary = "s".repeat(400);
    pager.send(&p).await.unwrap();
    pager.send(&page(PageAction::Acknowledge)).await.unwrap();
    assert_eq!(og.lock().unwrap().alerts["babysitter/inc-7"], "acked");
    pager.send(&page(PageAction::Resolve)).await.unwrap();
    let og = og.lock().unwrap();
    assert_eq!(og.alerts.len(), 1);
    assert_eq!(og.alerts["babysitter/inc-7"], "closed");
    assert_eq!(
        og.calls,
        [
            "create babysitter/inc-7 P1",
            "acknowledge babysitter/inc-7",
            "close babysitter/inc-7"
        ]
    );
}

// ---------------------------------------------------------------- routing from config

#[tokio::test]
async fn config_routes_fan_out_to_the_route_pagers() {
    let (pd_url, pd) = pagerduty().await;
    let (og_url, og) = opsgenie().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paging.toml");
    std::fs::write(
        &path,
        format!(
            r#"
default_route = "fallback"
[pagers.oncall-pd]
kind = "pagerduty"
routing_key = {{ env = "PAGING_TEST_PD_KEY" }}
url = "{pd_url}"
[pagers.oncall-pd.delivery]
backoff = "20ms"
[pagers.og]
kind = "opsgenie"
api_key = "5e1f-test"
url = "{og_url}"
[routes]
ml-oncall = ["oncall-pd", "og"]
fallback = ["og"]
"#
        ),
    )
    .unwrap();
    // SAFETY: set before any thread of this test reads the environment; no other test uses it.
    unsafe { std::env::set_var("PAGING_TEST_PD_KEY", PD_KEY) };
    let cfg = Config::load(Some(&path)).unwrap();
    let pager = babysitter::notify::build(&cfg, ConsolePager::new(), false).unwrap();
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    assert_eq!(pd.lock().unwrap().events.len(), 1);
    assert_eq!(og.lock().unwrap().calls.len(), 1);

    let mut other = page(PageAction::Trigger);
    other.route = "nobody".into();
    other.dedup_key = "babysitter/inc-8".into();
    pager.send(&other).await.unwrap();
    assert_eq!(
        pd.lock().unwrap().events.len(),
        1,
        "the default route has no PagerDuty"
    );
    assert_eq!(og.lock().unwrap().calls.len(), 2);

    // One pager refusing does not stop the other; the error names it.
    pd.lock().unwrap().unavailable = 100;
    let mut p = page(PageAction::Resolve);
    p.dedup_key = "babysitter/inc-7".into();
    let cfg_fast_fail = {
        let mut c = cfg.clone();
        if let babysitter::config::PagerConfig::PagerDuty(pd) =
            c.pagers.get_mut("oncall-pd").unwrap()
        {
            pd.delivery.attempts = 2;
        }
        c
    };
    let pager = babysitter::notify::build(&cfg_fast_fail, ConsolePager::new(), false).unwrap();
    let err = pager.send(&p).await.unwrap_err().to_string();
    assert!(err.contains("route `ml-oncall`: 1 failed"), "{err}");
    assert!(err.contains("oncall-pd"), "{err}");
    assert!(err.contains("delivered to og"), "{err}");
    assert_eq!(og.lock().unwrap().alerts["babysitter/inc-7"], "closed");
}

// ---------------------------------------------------------------- Alertmanager resend

/// What Alertmanager's `POST /api/v2/alerts` checks: an array of alerts with labels,
/// RFC 3339 times, and `endsAt` not before `startsAt`.
async fn am_alerts(State(got): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> Response {
    let Ok(Value::Array(alerts)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected an array of alerts").into_response();
    };
    for a in &alerts {
        let labels_ok = a["labels"]
            .as_object()
            .is_some_and(|l| !l.is_empty() && l.values().all(Value::is_string));
        let t = |k: &str| {
            a[k].as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        let (Some(start), Some(end)) = (t("startsAt"), t("endsAt")) else {
            return (StatusCode::BAD_REQUEST, "bad startsAt/endsAt").into_response();
        };
        if !labels_ok || end < start {
            return (StatusCode::BAD_REQUEST, "invalid alert").into_response();
        }
    }
    got.lock().unwrap().extend(alerts);
    StatusCode::OK.into_response()
}

#[tokio::test]
async fn alertmanager_open_alerts_are_resent_until_resolved() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route("/api/v2/alerts", post(am_alerts))
        .with_state(got.clone());
    let addr = serve(app).await;
    let pager = AlertmanagerPager::new(
        "am",
        &AlertmanagerConfig {
            url: format!("http://{addr}/"),
            labels: BTreeMap::new(),
            resend_interval: Duration::from_millis(300),
            delivery: fast(),
        },
    )
    .unwrap();
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resent = got.lock().unwrap().len();
    assert!(resent >= 3, "trigger plus resends, got {resent}");
    {
        let got = got.lock().unwrap();
        // Same identity every time; endsAt moves forward, three intervals ahead.
        assert!(got.iter().all(|a| a["labels"] == got[0]["labels"]));
        assert!(got.iter().all(|a| a["startsAt"] == got[0]["startsAt"]));
        let end = |a: &Value| {
            chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap()).unwrap()
        };
        assert!(end(&got[resent - 1]) > end(&got[0]));
    }
    pager.send(&page(PageAction::Resolve)).await.unwrap();
    let after_resolve = got.lock().unwrap().len();
    {
        let got = got.lock().unwrap();
        let last = &got[after_resolve - 1];
        let end = chrono::DateTime::parse_from_rfc3339(last["endsAt"].as_str().unwrap()).unwrap();
        assert!(end <= chrono::Utc::now(), "a resolve ends the alert now");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        got.lock().unwrap().len(),
        after_resolve,
        "no resend after resolve"
    );
}

// ---------------------------------------------------------------- real Alertmanager

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alertmanager_bin() -> Option<String> {
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Polls until `f` holds (Alertmanager applies alerts and silences asynchronously).
async fn eventually<F: AsyncFn() -> bool>(what: &str, f: F) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn real_alertmanager_shows_resolves_and_silences_babysitter_alerts() {
    let Some(bin) = alertmanager_bin() else {
        if std::env::var_os("BABYSITTER_REQUIRE_ALERTMANAGER").is_some() {
            panic!("prometheus-alertmanager is not installed (scripts/test installs it)");
        }
        eprintln!("SKIPPED: prometheus-alertmanager is not installed (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("am.yml");
    std::fs::write(
        &cfg_path,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _am = Kill(
        std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("Alertmanager ready", async || {
        reqwest::get(format!("{base}/-/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let pager = AlertmanagerPager::new(
        "am",
        &AlertmanagerConfig {
            url: base.clone(),
            labels: [("team".to_string(), "ml".to_string())].into(),
            resend_interval: Duration::from_secs(60),
            delivery: fast(),
        },
    )
    .unwrap();
    let alerts_of = |run: &str| format!("{base}/api/v2/alerts?filter=run%3D%22{run}%22");

    // Trigger: the alert appears with babysitter's labels and evidence.
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    eventually("the alert to appear", async || {
        get_json(&alerts_of("run-c"))
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let a = get_json(&alerts_of("run-c")).await[0].clone();
    assert_eq!(a["labels"]["alertname"], "BabysitterIncident");
    assert_eq!(a["labels"]["incident"], "inc-7");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["team"], "ml");
    assert_eq!(a["labels"]["route"], "ml-oncall");
    assert_eq!(a["status"]["state"], "active");
    assert!(
        a["annotations"]["approve"]
            .as_str()
            .unwrap()
            .contains("/approve")
    );
    assert_eq!(
        a["generatorURL"],
        "http://127.0.0.1:8080/api/v1/incidents/inc-7"
    );

    // Resolve (with a different severity on the page: the trigger's labels are reused).
    let mut resolve = page(PageAction::Resolve);
    resolve.severity = Severity::Info;
    pager.send(&resolve).await.unwrap();
    eventually("the alert to resolve", async || {
        get_json(&alerts_of("run-c"))
            .await
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;

    // A silence on a run suppresses babysitter's alert for it.
    let now = chrono::Utc::now();
    let res = reqwest::Client::new()
        .post(format!("{base}/api/v2/silences"))
        .json(&json!({
            "matchers": [{"name": "run", "value": "run-s", "isRegex": false, "isEqual": true}],
            "startsAt": now.to_rfc3339(),
            "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "createdBy": "paging-test",
            "comment": "maintenance",
        }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let mut silenced = page(PageAction::Trigger);
    silenced.run = "run-s".into();
    silenced.incident = "inc-9".into();
    silenced.dedup_key = "babysitter/inc-9".into();
    pager.send(&silenced).await.unwrap();
    eventually("the alert to be suppressed", async || {
        let a = get_json(&alerts_of("run-s")).await;
        a[0]["status"]["state"] == "suppressed"
            && a[0]["status"]["silencedBy"]
                .as_array()
                .is_some_and(|s| s.len() == 1)
    })
    .await;
}

// ---------------------------------------------------------------- durable outbox

#[tokio::test]
async fn a_page_undelivered_across_a_restart_still_arrives() {
    let (url, pd) = pagerduty().await;
    // PagerDuty answers 503 for the next 2.5 s.
    pd.lock().unwrap().down_until = Some(Instant::now() + Duration::from_millis(2500));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paging.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[pagers.oncall-pd]
kind = "pagerduty"
routing_key = "{PD_KEY}"
url = "{url}"
[pagers.oncall-pd.delivery]
attempts = 2
backoff = "20ms"
redeliver_every = "200ms"
[routes]
ml-oncall = ["oncall-pd"]
"#
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path)).unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );

    // First life: the trigger and the acknowledge fail and are persisted.
    {
        let audit = Arc::new(AuditLog::open(&db).await.unwrap());
        let store = PageStore::open(audit.clone()).await.unwrap();
        let pager = babysitter::notify::build(&cfg, ConsolePager::new(), false).unwrap();
        pager.attach_store(store.clone()).await;
        let err = pager
            .send(&page(PageAction::Trigger))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("queued for redelivery"), "{err}");
        assert!(pager.send(&page(PageAction::Acknowledge)).await.is_err());
        assert_eq!(store.count().await.unwrap(), 2);
        let failed = audit
            .query(&Filter {
                kind: Some(EntryKind::PageFailed),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            failed.len(),
            1,
            "one page_failed when the incident's queue starts"
        );
        assert_eq!(failed[0].payload["pager"], "oncall-pd");
        assert_eq!(failed[0].payload["dedup_key"], "babysitter/inc-7");
        assert!(
            failed[0].payload["error"]
                .as_str()
                .unwrap()
                .contains("HTTP 503")
        );
        // babysitter stops (the pager and its redelivery task go away).
        drop(pager);
        audit.close().await;
    }
    assert!(pd.lock().unwrap().events.is_empty());

    // Second life on the same database: the pages are loaded and delivered, in order.
    let audit = Arc::new(AuditLog::open(&db).await.unwrap());
    let store = PageStore::open(audit.clone()).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    let pager = babysitter::notify::build(&cfg, ConsolePager::new(), false).unwrap();
    pager.attach_store(store.clone()).await;
    let t0 = Instant::now();
    while pd.lock().unwrap().events.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let pd = pd.lock().unwrap();
        let actions: Vec<&str> = pd
            .events
            .iter()
            .map(|e| e["event_action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["trigger", "acknowledge"], "in order, once each");
        assert_eq!(pd.alerts["babysitter/inc-7"], "acknowledged");
        assert!(pd.requests > 2, "503s were answered before the 202s");
    }
    // Delivered pages leave the table (just after the receiver has them) and are on record.
    let t0 = Instant::now();
    while store.count().await.unwrap() > 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "delivered pages leave the table"
    );
    let redelivered = |audit: Arc<AuditLog>| async move {
        audit
            .query(&Filter {
                kind: Some(EntryKind::Page),
                ..Filter::default()
            })
            .await
            .unwrap()
    };
    while redelivered(audit.clone()).await.len() < 2 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let redelivered = audit
        .query(&Filter {
            kind: Some(EntryKind::Page),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(redelivered.len(), 2);
    assert!(redelivered.iter().all(|e| e.payload["redelivered"] == true));
    assert!(audit.verify().await.unwrap().ok());
}

// ---------------------------------------------------------------- Slack 429 and lifecycle

#[derive(Default)]
struct SlackState {
    throttle: usize,
    requests: Vec<Instant>,
    got: Vec<Value>,
}

async fn slack() -> (String, Arc<Mutex<SlackState>>) {
    let state = Arc::new(Mutex::new(SlackState::default()));
    let app = axum::Router::new()
        .route(
            "/services/T000/B000/XXXX",
            post(
                |State(s): State<Arc<Mutex<SlackState>>>, body: Bytes| async move {
                    let mut s = s.lock().unwrap();
                    s.requests.push(Instant::now());
                    if s.throttle > 0 {
                        s.throttle -= 1;
                        // Slack's rate limit: 429 with Retry-After (seconds).
                        return (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            "rate_limited",
                        )
                            .into_response();
                    }
                    let Ok(m) = serde_json::from_slice::<Value>(&body) else {
                        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
                    };
                    if let Some(e) = slack_error(&m) {
                        return (StatusCode::BAD_REQUEST, e).into_response();
                    }
                    s.got.push(m);
                    (StatusCode::OK, "ok").into_response()
                },
            ),
        )
        .with_state(state.clone());
    (
        format!("http://{}/services/T000/B000/XXXX", serve(app).await),
        state,
    )
}

#[tokio::test]
async fn slack_honours_retry_after_and_tells_trigger_acknowledge_resolve_under_one_key() {
    let (url, state) = slack().await;
    state.lock().unwrap().throttle = 1;
    let pager = SlackPager::new(
        "slack-ml",
        &SlackConfig {
            webhook_url: Secret::Value(url),
            delivery: fast(),
        },
    )
    .unwrap();
    for a in [
        PageAction::Trigger,
        PageAction::Acknowledge,
        PageAction::Resolve,
    ] {
        pager.send(&page(a)).await.unwrap();
    }
    let s = state.lock().unwrap();
    assert_eq!(s.requests.len(), 4, "one 429, then three messages");
    // The backoff is 20 ms: only `Retry-After: 1` explains the wait after the 429.
    assert!(s.requests[1] - s.requests[0] >= Duration::from_millis(950));
    let texts: Vec<&str> = s.got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(texts[0].contains("[critical]"), "{texts:?}");
    assert!(texts[1].contains("automation took over"), "{texts:?}");
    assert!(texts[2].contains("resolved"), "{texts:?}");
    assert!(texts.iter().all(|t| t.contains("babysitter/inc-7")));
}

// ---------------------------------------------------------------- Opsgenie 429

#[tokio::test]
async fn opsgenie_429_then_success() {
    let throttled = Arc::new(Mutex::new((1usize, 0usize)));
    let t = throttled.clone();
    let (og_url, og) = opsgenie().await;
    // A throttling proxy in front of the fake Opsgenie: the first request gets 429.
    let upstream = og_url.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let t = t.clone();
        let upstream = upstream.clone();
        async move {
            {
                let mut t = t.lock().unwrap();
                t.1 += 1;
                if t.0 > 0 {
                    t.0 -= 1;
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "")
                        .into_response();
                }
            }
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut fwd = reqwest::Client::new().post(format!("{upstream}{}", parts.uri));
            for (k, v) in parts.headers.iter() {
                if k == "authorization" || k == "content-type" {
                    fwd = fwd.header(k.as_str(), v.to_str().unwrap());
                }
            }
            let res = fwd.body(body).send().await.unwrap();
            let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
            (status, res.text().await.unwrap()).into_response()
        }
    });
    let proxy = format!("http://{}", serve(app).await);
    let pager = OpsgeniePager::new(
        "og",
        &OpsgenieConfig {
            api_key: Secret::Value("5e1f-test".into()),
            url: proxy,
            tags: vec![],
            delivery: fast(),
        },
    )
    .unwrap();
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    assert_eq!(throttled.lock().unwrap().1, 2, "a 429, then the create");
    assert_eq!(og.lock().unwrap().alerts["babysitter/inc-7"], "open");
}

// ---------------------------------------------------------------- reminders

#[tokio::test]
async fn reminders_close_and_reopen_one_pagerduty_alert() {
    let (url, pd) = pagerduty().await;
    let pager = pd_pager(&url, PD_KEY);
    pager.send(&page(PageAction::Trigger)).await.unwrap();
    let mut reminder = page(PageAction::Trigger);
    reminder.reminder = 1;
    pager.send(&reminder).await.unwrap();
    let pd = pd.lock().unwrap();
    let actions: Vec<&str> = pd
        .events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    // PagerDuty would fold a second trigger into the open alert silently.
    assert_eq!(actions, ["trigger", "resolve", "trigger"]);
    assert_eq!(pd.alerts.len(), 1);
    assert_eq!(pd.alerts["babysitter/inc-7"], "triggered");
}

#[tokio::test]
async fn an_unanswered_approval_is_paged_again_up_to_the_limit() {
    let h = common::Harness::new(vec![("run-x", common::xid_fault())], |c| {
        c.paging.renotify_after = Duration::from_secs(600);
        c.paging.renotify_max = 2;
    })
    .await;
    assert!(h.until_approval_pending().await);
    let triggers = |h: &common::Harness| -> Vec<Page> {
        h.pager
            .sent()
            .into_iter()
            .filter(|p| p.action == PageAction::Trigger && p.run == "run-x")
            .collect()
    };
    assert_eq!(triggers(&h).len(), 1);
    let first = triggers(&h)[0].clone();
    assert_eq!(first.reminder, 0);
    assert!(first.approve_command.is_some());
    assert!(
        first.links.iter().any(|l| l.ends_with("/runs/run-x")),
        "{:?}",
        first.links
    );
    assert!(first.details.iter().any(|(k, _)| k == "plan"));
    // Nine minutes: no reminder yet.
    h.until(540.0, |_| false).await;
    assert_eq!(triggers(&h).len(), 1);
    // An hour later: exactly two reminders, same key, with the commands.
    h.until(3600.0, |_| false).await;
    let t = triggers(&h);
    assert_eq!(
        t.len(),
        3,
        "{:?}",
        t.iter().map(|p| &p.summary).collect::<Vec<_>>()
    );
    assert_eq!(t.iter().map(|p| p.reminder).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(t.iter().all(|p| p.dedup_key == first.dedup_key));
    assert!(t[1].summary.contains("reminder 1/2"), "{}", t[1].summary);
    // The run was paused when the approval was asked for: the reminders say for how long.
    assert!(
        t[1].summary.ends_with("; the run has been paused 10 min"),
        "{}",
        t[1].summary
    );
    assert!(
        t[2].summary.ends_with("; the run has been paused 20 min"),
        "{}",
        t[2].summary
    );
    assert!(t[2].approve_command.is_some());
}

// ---------------------------------------------------------------- alert enrichment

const AM_TOKEN: &str = "am-webhook-token-0123";

/// The real engine on the simulator, paging through `pager`, with Alertmanager's token set.
struct Live {
    engine: Arc<babysitter::engine::Engine>,
    clock: Arc<babysitter::clock::ManualClock>,
    sim: Arc<babysitter::sim::SimCluster>,
    runs: Vec<String>,
    audit: Arc<AuditLog>,
    dir: tempfile::TempDir,
}

impl Live {
    async fn new(runs: Vec<(&str, Vec<babysitter::sim::Fault>)>, pager: Arc<dyn Pager>) -> Live {
        let clock = babysitter::clock::ManualClock::new(common::ORIGIN);
        let shared: babysitter::clock::SharedClock = clock.clone();
        let sim = Arc::new(babysitter::sim::SimCluster::new(shared, 7));
        let mut names = Vec::new();
        for (name, faults) in runs {
            let mut spec = babysitter::sim::SimRunSpec::new(name, common::ORIGIN - common::HISTORY);
            spec.faults = faults;
            sim.add_run(spec).unwrap();
            names.push(name.to_string());
        }
        Live::on(clock, sim, names, tempfile::tempdir().unwrap(), pager).await
    }

    /// Stops this babysitter and starts a new one on the same audit database, watching the
    /// same (still running) cluster: a restart. Unfinished incidents are restored.
    async fn restart(self, pager: Arc<dyn Pager>) -> Live {
        self.audit.close().await;
        drop(self.engine);
        let live = Live::on(self.clock, self.sim, self.runs, self.dir, pager).await;
        live.engine.restore().await;
        live
    }

    async fn on(
        clock: Arc<babysitter::clock::ManualClock>,
        sim: Arc<babysitter::sim::SimCluster>,
        runs: Vec<String>,
        dir: tempfile::TempDir,
        pager: Arc<dyn Pager>,
    ) -> Live {
        use babysitter::config::{ApiRole, ApiToken, token_hash};
        let shared: babysitter::clock::SharedClock = clock.clone();
        let mut cfg = Config::default();
        for name in &runs {
            cfg.watches.push(common::watch(name));
        }
        cfg.data_dir = dir.path().to_path_buf();
        cfg.server.public_url = Some("http://babysitter.example".into());
        cfg.api.tokens = vec![
            ApiToken::for_secret("alice", ApiRole::Operator, common::OPERATOR_TOKEN),
            ApiToken::for_secret("vera", ApiRole::Viewer, common::VIEWER_TOKEN),
        ];
        cfg.paging.alert_token_sha256 = Some(token_hash(AM_TOKEN));
        let audit = Arc::new(AuditLog::open(&cfg.audit_url()).await.unwrap());
        let handles = babysitter::engine::Handles {
            clock: shared,
            source: sim.clone(),
            actuator: sim.clone(),
            pager,
            audit: audit.clone(),
            runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).unwrap()),
            checks: None,
        };
        let engine = babysitter::engine::Engine::new(
            Arc::new(cfg),
            handles,
            Arc::new(babysitter::telemetry::Metrics::new()),
        );
        engine.start("test").await;
        Live {
            engine,
            clock,
            sim,
            runs,
            audit,
            dir,
        }
    }

    /// Ticks (30 s each) until an approval is pending.
    async fn until_approval_pending(&self) {
        for _ in 0..120 {
            self.clock.advance(30.0);
            self.engine.tick().await;
            if self
                .engine
                .view()
                .incidents
                .values()
                .any(|i| i.state == babysitter::incident::IncidentState::AwaitingApproval)
            {
                return;
            }
        }
        panic!("no approval became pending");
    }
}

fn am_payload(status: &str, alerts: Value) -> Value {
    json!({
        "version": "4", "status": status, "receiver": "babysitter", "groupLabels": {"alertname": "TrainingLossHigh"},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.example:9093",
        "groupKey": "{}:{alertname=\"TrainingLossHigh\"}", "truncatedAlerts": 0, "alerts": alerts,
    })
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(axum::body::Body::from(b.to_string())),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn enrichment_endpoints_check_auth_and_fields_and_forward_once() {
    let (url, pd) = pagerduty().await;
    let live = Live::new(
        vec![("run-x", common::xid_fault())],
        Arc::new(pd_pager(&url, PD_KEY)),
    )
    .await;
    live.until_approval_pending().await;
    let router = babysitter::api::router(live.engine.clone());

    // GET enrich: babysitter's view of the run, by the run label or the workload's pod.
    let (st, e) = call(
        &router,
        "GET",
        "/api/v1/alerts/enrich?run=run-x",
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert_eq!(e["run"], "run-x");
    assert_eq!(e["matched_by"]["label"], "run");
    assert_eq!(e["runbook"]["id"], "gpu-hardware-error");
    assert_eq!(e["incident"]["state"], "awaiting_approval");
    assert!(!e["plan"].as_array().unwrap().is_empty());
    assert!(
        e["pending_action"]["approve"]
            .as_str()
            .unwrap()
            .starts_with("http://babysitter.example/api/v1/actions/")
    );
    assert_eq!(
        e["links"]["dashboard"],
        "http://babysitter.example/runs/run-x"
    );
    let (st, e2) = call(
        &router,
        "GET",
        "/api/v1/alerts/enrich?pod=run-x-worker-0",
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(e2["matched_by"]["label"], "pod");
    let (st, _) = call(&router, "GET", "/api/v1/alerts/enrich?run=nope", None, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(&router, "GET", "/api/v1/alerts/enrich", None, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let alert = json!({
        "status": "firing", "labels": {"alertname": "TrainingLossHigh", "run": "run-x", "severity": "critical"},
        "annotations": {"summary": "loss above 4 for 10m"}, "startsAt": "2026-11-25T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.example/graph", "fingerprint": "f00d",
    });
    let uri = "/api/v1/alerts/alertmanager";
    // Auth: nobody, a viewer: refused; Alertmanager's own token or an operator: taken.
    let body = am_payload("firing", json!([alert.clone()]));
    assert_eq!(
        call(&router, "POST", uri, None, Some(body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &router,
            "POST",
            uri,
            Some(common::VIEWER_TOKEN),
            Some(body.clone())
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Alertmanager's token grants nothing but this endpoint.
    assert_eq!(
        call(&router, "GET", "/api/v1/incidents", Some(AM_TOKEN), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // A bad payload is a 400 naming the field.
    let mut broken = body.clone();
    broken["alerts"][0]["fingerprint"] = json!(null);
    let (st, err) = call(&router, "POST", uri, Some(AM_TOKEN), Some(broken)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["error"],
        "field `alerts[0].fingerprint`: required, a string"
    );
    let mut v3 = body.clone();
    v3["version"] = json!("3");
    let (st, err) = call(&router, "POST", uri, Some(AM_TOKEN), Some(v3)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("field `version`"),
        "{err}"
    );

    // Taken: enriched and forwarded; the same alert again is not paged twice.
    let unwatched = json!({
        "status": "firing", "labels": {"alertname": "DiskFull", "instance": "db-1"},
        "startsAt": "2026-11-25T10:00:00Z", "fingerprint": "beef",
    });
    let (st, res) = call(
        &router,
        "POST",
        uri,
        Some(AM_TOKEN),
        Some(am_payload("firing", json!([alert.clone(), unwatched]))),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["alerts"][0]["forwarded"], true);
    assert_eq!(
        res["alerts"][0]["enrichment"]["runbook"]["id"],
        "gpu-hardware-error"
    );
    assert_eq!(res["alerts"][1]["forwarded"], false);
    assert_eq!(res["alerts"][1]["run"], Value::Null);
    let (_, again) = call(
        &router,
        "POST",
        uri,
        Some(common::OPERATOR_TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(again["alerts"][0]["forwarded"], false);
    assert_eq!(again["alerts"][0]["note"], "already forwarded unchanged");

    let key = "alertmanager/f00d";
    eventually("the enriched alert at PagerDuty", async || {
        pd.lock().unwrap().alerts.contains_key(key)
    })
    .await;
    {
        let pd = pd.lock().unwrap();
        let ev: Vec<&Value> = pd.events.iter().filter(|e| e["dedup_key"] == key).collect();
        assert_eq!(ev.len(), 1);
        let p = &ev[0]["payload"];
        assert_eq!(p["severity"], "critical");
        assert!(
            p["summary"]
                .as_str()
                .unwrap()
                .starts_with("[TrainingLossHigh] run-x: loss above 4 for 10m — babysitter: inc-")
        );
        assert_eq!(
            p["custom_details"]["runbook"]
                .as_str()
                .unwrap()
                .split(' ')
                .next(),
            Some("gpu-hardware-error")
        );
        assert!(
            p["custom_details"]["approve"]
                .as_str()
                .unwrap()
                .contains("/approve")
        );
        assert_eq!(
            ev[0]["links"][0]["href"],
            "http://babysitter.example/runs/run-x"
        );
    }
    // Every alert is on record, with who sent it.
    let received = live
        .audit
        .query(&Filter {
            kind: Some(EntryKind::AlertReceived),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].actor, "api:alertmanager-webhook");
    assert_eq!(received[0].run.as_deref(), Some("run-x"));
    assert_eq!(received[1].payload["forwarded"], false);
    assert_eq!(received[2].actor, "api:alice");

    // A large group (well over the API's usual 64 KiB body limit) is taken whole.
    let many: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "status": "firing", "labels": {"alertname": "NodeDown", "instance": format!("n{i}")},
                "annotations": {"description": "x".repeat(1000)},
                "startsAt": "2026-11-25T10:00:00Z", "fingerprint": format!("fp{i}"),
            })
        })
        .collect();
    let big = am_payload("firing", json!(many));
    assert!(big.to_string().len() > 128 * 1024);
    let (st, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(big)).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["received"], 150);
}

/// PagerDuty events sent under `key`, as `event_action`s.
fn pd_actions(pd: &Mutex<Pd>, key: &str) -> Vec<String> {
    pd.lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| e["dedup_key"] == key)
        .map(|e| e["event_action"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until every forward task of `live` recorded its `page` entry (`n` in all).
async fn until_forwarded_pages(live: &Live, n: usize) {
    eventually("the forwarded pages on record", async || {
        live.audit
            .query(&Filter {
                kind: Some(EntryKind::Page),
                ..Filter::default()
            })
            .await
            .unwrap()
            .iter()
            .filter(|e| e.payload["from_alertmanager"] == true)
            .count()
            >= n
    })
    .await;
}

#[tokio::test]
async fn a_restarted_babysitter_does_not_page_an_unchanged_resend_again_but_pages_its_resolve() {
    let (url, pd) = pagerduty().await;
    let live = Live::new(
        vec![("run-x", common::xid_fault())],
        Arc::new(pd_pager(&url, PD_KEY)),
    )
    .await;
    live.until_approval_pending().await;
    let uri = "/api/v1/alerts/alertmanager";
    let key = "alertmanager/cafe01";
    let alert = |status: &str| {
        json!({
            "status": status, "labels": {"alertname": "TrainingLossHigh", "run": "run-x", "severity": "critical"},
            "annotations": {"summary": "loss above 4 for 10m"}, "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.example/graph", "fingerprint": "cafe01",
        })
    };
    let firing = am_payload("firing", json!([alert("firing")]));
    let resolved = am_payload("resolved", json!([alert("resolved")]));

    let router = babysitter::api::router(live.engine.clone());
    let (st, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(firing.clone())).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["alerts"][0]["forwarded"], true, "{res}");
    let before = res["alerts"][0]["enrichment"].clone();
    assert_eq!(before["incident"]["state"], "awaiting_approval");
    until_forwarded_pages(&live, 1).await;
    assert_eq!(pd_actions(&pd, key), ["trigger"]);
    let remembered = live.audit.forwarded_alert("cafe01").await.unwrap().unwrap();
    assert_eq!(remembered.status, "firing");

    // Restart: a new engine and API on the same audit database.
    let live = live.restart(Arc::new(pd_pager(&url, PD_KEY))).await;
    live.clock.advance(30.0);
    live.engine.tick().await;
    let router = babysitter::api::router(live.engine.clone());

    // Alertmanager's unchanged re-send (group_interval / repeat_interval): not paged again.
    let (st, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(firing.clone())).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(
        res["alerts"][0]["forwarded"], false,
        "before the restart: {before}\nafter: {}",
        res["alerts"][0]["enrichment"]
    );
    assert_eq!(res["alerts"][0]["note"], "already forwarded unchanged");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pd_actions(&pd, key), ["trigger"]);

    // Its resolve is a change: forwarded as a resolve, and the alert is closed at PagerDuty.
    let (st, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(resolved.clone())).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["alerts"][0]["forwarded"], true, "{res}");
    until_forwarded_pages(&live, 2).await;
    assert_eq!(pd_actions(&pd, key), ["trigger", "resolve"]);
    assert_eq!(pd.lock().unwrap().alerts.get(key), Some(&"resolved"));
    let remembered = live.audit.forwarded_alert("cafe01").await.unwrap().unwrap();
    assert_eq!(remembered.status, "resolved");
    // ... and its re-send is not.
    let (_, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(resolved.clone())).await;
    assert_eq!(res["alerts"][0]["forwarded"], false, "{res}");

    // Bookkeeping unreadable: forwarded anyway (a duplicate page beats a missed one).
    sqlx::query("DROP TABLE alert_forwarded")
        .execute(live.audit.pool())
        .await
        .unwrap();
    let (st, res) = call(&router, "POST", uri, Some(AM_TOKEN), Some(resolved)).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["alerts"][0]["forwarded"], true, "{res}");
    until_forwarded_pages(&live, 3).await;
    assert_eq!(pd_actions(&pd, key), ["trigger", "resolve", "resolve"]);
    // The hash chain was never touched by any of it.
    assert!(live.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn real_alertmanager_webhook_reaches_a_pager_enriched() {
    if alertmanager_bin().is_none() && std::env::var_os("BABYSITTER_REQUIRE_ALERTMANAGER").is_none()
    {
        eprintln!("SKIPPED: prometheus-alertmanager is not installed (scripts/test installs it)");
        return;
    }
    let (pd_url, pd) = pagerduty().await;
    let live = Live::new(
        vec![("run-x", common::xid_fault())],
        Arc::new(pd_pager(&pd_url, PD_KEY)),
    )
    .await;
    live.until_approval_pending().await;
    let api = serve(babysitter::api::router(live.engine.clone())).await;
    // Alertmanager posts to babysitter with its bearer token, resolved alerts too.
    let Some((_am, base, _dir)) = start_alertmanager(&format!(
        r#"route:
  receiver: babysitter
  group_by: ['alertname', 'run']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: babysitter
    webhook_configs:
      - url: http://{api}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {AM_TOKEN}
"#
    ))
    .await
    else {
        return;
    };

    // A firing alert about the watched run, as Prometheus would post it.
    let starts = chrono::Utc::now();
    let alert = |ends: chrono::DateTime<chrono::Utc>| {
        json!([{
            "labels": {"alertname": "TrainingLossHigh", "run": "run-x", "severity": "critical"},
            "annotations": {"summary": "loss above 4 for 10m"},
            "startsAt": starts.to_rfc3339(), "endsAt": ends.to_rfc3339(),
            "generatorURL": "http://prom.example/graph",
        }])
    };
    let post = |body: Value| {
        let url = format!("{base}/api/v2/alerts");
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        }
    };
    post(alert(starts + chrono::Duration::hours(1))).await;

    // Alertmanager → babysitter (webhook, with its token) → enriched → PagerDuty.
    eventually("the enriched alert at PagerDuty", async || {
        pd.lock().unwrap().events.iter().any(|e| {
            e["dedup_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("alertmanager/"))
        })
    })
    .await;
    let key = {
        let pd = pd.lock().unwrap();
        let ev = pd
            .events
            .iter()
            .find(|e| {
                e["dedup_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("alertmanager/"))
            })
            .unwrap();
        assert_eq!(ev["event_action"], "trigger");
        let p = &ev["payload"];
        assert!(
            p["summary"]
                .as_str()
                .unwrap()
                .contains("run-x: loss above 4 for 10m — babysitter: inc-"),
            "{p}"
        );
        assert!(
            p["custom_details"]["runbook"]
                .as_str()
                .unwrap()
                .starts_with("gpu-hardware-error")
        );
        assert!(p["custom_details"]["plan"].as_str().is_some());
        assert_eq!(
            p["custom_details"]["dashboard"],
            "http://babysitter.example/runs/run-x"
        );
        assert!(
            p["custom_details"]["approve"]
                .as_str()
                .unwrap()
                .contains("/approve")
        );
        ev["dedup_key"].as_str().unwrap().to_string()
    };
    let received = live
        .audit
        .query(&Filter {
            kind: Some(EntryKind::AlertReceived),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(received[0].actor, "api:alertmanager-webhook");
    assert_eq!(received[0].payload["receiver"], "babysitter");
    assert_eq!(
        format!(
            "alertmanager/{}",
            received[0].payload["fingerprint"].as_str().unwrap()
        ),
        key
    );

    // Resolved at the source: Alertmanager sends the resolve (send_resolved), the page resolves.
    post(alert(chrono::Utc::now())).await;
    eventually("the page to resolve", async || {
        pd.lock().unwrap().alerts.get(&key) == Some(&"resolved")
    })
    .await;
}

/// Starts a real Alertmanager with `config` on a free port; `None` (the test is skipped) when
/// it is not installed, unless `BABYSITTER_REQUIRE_ALERTMANAGER` is set.
async fn start_alertmanager(config: &str) -> Option<(Kill, String, tempfile::TempDir)> {
    let Some(bin) = alertmanager_bin() else {
        if std::env::var_os("BABYSITTER_REQUIRE_ALERTMANAGER").is_some() {
            panic!("prometheus-alertmanager is not installed (scripts/test installs it)");
        }
        eprintln!("SKIPPED: prometheus-alertmanager is not installed (scripts/test installs it)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("am.yml");
    std::fs::write(&cfg_path, config).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let am = Kill(
        std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("Alertmanager ready", async || {
        reqwest::get(format!("{base}/-/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    Some((am, base, dir))
}

#[tokio::test]
async fn real_alertmanager_alert_of_an_incident_resolves_when_the_incident_does() {
    let Some((_am, base, _dir)) =
        start_alertmanager("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
            .await
    else {
        return;
    };
    let pager = AlertmanagerPager::new(
        "am",
        &AlertmanagerConfig {
            url: base.clone(),
            labels: [("team".to_string(), "ml".to_string())].into(),
            resend_interval: Duration::from_secs(60),
            delivery: fast(),
        },
    )
    .unwrap();
    let live = Live::new(vec![("run-x", common::xid_fault())], Arc::new(pager)).await;
    live.until_approval_pending().await;
    let alerts = format!("{base}/api/v2/alerts?filter=run%3D%22run-x%22");
    eventually("babysitter's alert in Alertmanager", async || {
        get_json(&alerts)
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let a = get_json(&alerts).await[0].clone();
    let inc = live
        .engine
        .view()
        .incidents
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(a["labels"]["alertname"], "BabysitterIncident");
    assert_eq!(a["labels"]["incident"], inc.id);
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["route"], "ml-oncall");
    assert_eq!(a["labels"]["team"], "ml");
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(
        a["annotations"]["detail_dashboard"],
        "http://babysitter.example/runs/run-x"
    );
    assert!(
        a["annotations"]["approve"]
            .as_str()
            .unwrap()
            .contains("/approve")
    );

    // The human approves; babysitter restarts the run, verifies, resolves: so does the alert.
    let pending = inc.pending.unwrap();
    live.engine
        .approve(&pending.id, "alice", None)
        .await
        .unwrap();
    let mut resolved = false;
    for _ in 0..240 {
        live.clock.advance(30.0);
        live.engine.tick().await;
        if live.engine.view().incidents[&inc.id].state
            == babysitter::incident::IncidentState::Resolved
        {
            resolved = true;
            break;
        }
    }
    assert!(resolved, "{:#?}", live.engine.view().incidents[&inc.id]);
    eventually("the alert to resolve", async || {
        get_json(&alerts)
            .await
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;
}
