//! The dashboard through the API's router, without a socket or a browser (tests/dashboard.rs
//! drives a real Chromium).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::act::Target;
use crate::clock::{ManualClock, SharedClock};
use crate::config::{ApiRole, ApiToken, Config, WatchConfig};
use crate::engine::Handles;
use crate::incident::IncidentState;
use crate::notify::ConsolePager;
use crate::policy::Autonomy;
use crate::sim::{Fault, SimCluster, SimRunSpec};
use crate::telemetry::Metrics;

const ORIGIN: f64 = 1_700_000_000.0;
const HISTORY: f64 = 3.0 * 3600.0;
const OPERATOR: &str = "alice-secret-token";
const VIEWER: &str = "vera-secret-token";

struct Fixture {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn watch(run: &str) -> WatchConfig {
    WatchConfig {
        run: run.to_string(),
        target: Target::Simulated {
            run: run.to_string(),
        },
        autonomy: Autonomy::Act,
        route: "ml-oncall".into(),
        runbooks: Vec::new(),
        detectors: None,
        profile: None,
        charts: Default::default(),
    }
}

/// `run-c` gets GPU Xid errors 10 min in (its plan needs an approval); `run-h` stays healthy.
async fn fixture(read_open: bool) -> Fixture {
    let clock = ManualClock::new(ORIGIN);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(SimCluster::new(shared.clone(), 7));
    let mut cfg = Config::default();
    for (name, faults) in [
        (
            "run-c",
            vec![Fault::GpuXid {
                at: HISTORY + 600.0,
                errors: 3,
                every: 60.0,
                node_bound: true,
            }],
        ),
        ("run-h", vec![]),
    ] {
        let mut spec = SimRunSpec::new(name, ORIGIN - HISTORY);
        spec.faults = faults;
        sim.add_run(spec).unwrap();
        cfg.watches.push(watch(name));
    }
    let dir = tempfile::tempdir().unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    cfg.api.read_open = read_open;
    cfg.api.tokens = vec![
        ApiToken::for_secret("alice", ApiRole::Operator, OPERATOR),
        ApiToken::for_secret("vera", ApiRole::Viewer, VIEWER),
    ];
    let audit = Arc::new(
        crate::audit::AuditLog::open(&cfg.audit_url())
            .await
            .unwrap(),
    );
    let handles = Handles {
        clock: shared,
        source: sim.clone(),
        actuator: sim,
        pager: ConsolePager::new(),
        audit,
        runbooks: Arc::new(crate::runbook::RunbookSet::embedded()),
        checks: None,
    };
    let engine = Engine::new(Arc::new(cfg), handles, Arc::new(Metrics::new()));
    engine.start("test").await;
    Fixture {
        engine,
        clock,
        _dir: dir,
    }
}

impl Fixture {
    async fn tick(&self) {
        self.clock
            .advance(self.engine.config().poll_interval.as_secs_f64());
        self.engine.tick().await;
    }

    async fn until_pending(&self) -> (String, String) {
        for _ in 0..200 {
            self.tick().await;
            if let Some(i) = self
                .engine
                .view()
                .incidents
                .values()
                .find(|i| i.state == IncidentState::AwaitingApproval)
            {
                let p = i.pending.as_ref().unwrap();
                return (i.id.clone(), p.id.clone());
            }
        }
        panic!("no approval was requested");
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(
        &self,
        uri: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::post(uri)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        self.send(req.body(Body::from(form.to_string())).unwrap())
            .await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let res = crate::api::router(self.engine.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The cookie a browser would send after signing in with `token`.
fn cookie_for(token: &str) -> String {
    auth::set_cookie(token, false)
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn form_token_for(token: &str) -> String {
    Session {
        name: String::new(),
        role: ApiRole::Operator,
        token: token.to_string(),
    }
    .form_token()
}

#[tokio::test]
async fn the_index_shows_each_run_with_its_health_and_security_headers() {
    let f = fixture(true).await;
    let (_, pending_action) = f.until_pending().await;
    let (status, headers, body) = f.get("/", None).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(body.contains(r#"href="/runs/run-c""#), "{body}");
    assert!(body.contains(r#"href="/runs/run-h""#));
    // run-c is paused by babysitter and waits for a human; run-h runs.
    assert!(body.contains(r#"<span class="badge health-paused">paused</span>"#));
    assert!(body.contains(r#"<span class="badge health-running">running</span>"#));
    assert!(body.contains("gpu_hardware_error"));
    assert!(body.contains("Waiting for a human"));
    assert!(!pending_action.is_empty());
}

#[tokio::test]
async fn the_run_page_marks_the_finding_on_its_chart() {
    let f = fixture(true).await;
    f.until_pending().await;
    let (status, _, body) = f.get("/runs/run-c", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<svg"), "{body}");
    assert!(
        body.contains(r#"class="finding-marker" data-kind="gpu_hardware_error""#),
        "{body}"
    );
    assert!(body.contains(">xid_errors</figcaption>"));
    // The pause babysitter did is drawn as an action.
    assert!(body.contains("action-marker"));
    assert_eq!(f.get("/runs/nope", None).await.0, StatusCode::NOT_FOUND);
    // The window is one of the offered ones; the default (1 h) is marked, the others linked.
    assert!(body.contains("<strong>1 h</strong>"), "{body}");
    let (status, _, body) = f.get("/runs/run-c?hours=6", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<strong>6 h</strong>") && body.contains(r#"href="/runs/run-c?hours=1""#)
    );
    assert_eq!(
        f.get("/runs/run-c?hours=5", None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn an_operator_approves_on_the_page_and_it_is_recorded_under_their_name() {
    let f = fixture(true).await;
    let (incident, action) = f.until_pending().await;
    let page = format!("/incidents/{incident}");

    // Anonymous and viewer browsers see the buttons disabled.
    let (_, _, body) = f.get(&page, None).await;
    assert!(body.contains("Sign in with an operator token"), "{body}");
    assert!(!body.contains(r#"name="csrf""#));
    let (_, _, body) = f.get(&page, Some(&cookie_for(VIEWER))).await;
    assert!(body.contains("vera has role viewer"), "{body}");

    // A viewer who forges the form is refused by the API's role check.
    let uri = format!("/actions/{action}/approve");
    let (status, _, body) = f
        .post_form(
            &uri,
            Some(&cookie_for(VIEWER)),
            None,
            &format!("csrf={}", form_token_for(VIEWER)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("needs `operator`"), "{body}");

    // The operator's page carries the form; a wrong form token or another site is refused.
    let alice = cookie_for(OPERATOR);
    let (_, _, body) = f.get(&page, Some(&alice)).await;
    let csrf = form_token_for(OPERATOR);
    assert!(body.contains(&format!(r#"value="{csrf}""#)), "{body}");
    assert!(body.contains(&format!(r#"formaction="/actions/{action}/approve""#)));
    let (status, _, _) = f.post_form(&uri, Some(&alice), None, "csrf=0000").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = f
        .post_form(
            &uri,
            Some(&alice),
            Some("https://evil.test"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, headers, body) = f
        .post_form(
            &uri,
            Some(&alice),
            Some("http://127.0.0.1:8080"),
            &format!("csrf={csrf}&reason=node+drained"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        headers[header::LOCATION],
        format!("/incidents/{incident}?done=approved").as_str()
    );
    let approved = f
        .engine
        .handles()
        .audit
        .query(&Filter {
            incident: Some(incident.clone()),
            kind: Some(EntryKind::Approved),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].actor, "api:alice");
    assert!(approved[0].payload.to_string().contains("node drained"));

    // Approving twice is a conflict, shown as a page.
    let (status, _, body) = f
        .post_form(&uri, Some(&alice), None, &format!("csrf={csrf}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn closed_reads_need_a_sign_in_with_a_configured_token() {
    let f = fixture(false).await;
    f.tick().await;
    let (status, headers, _) = f.get("/runs/run-c", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login?next=%2Fruns%2Frun-c");
    assert_eq!(f.get("/events", None).await.0, StatusCode::UNAUTHORIZED);

    let (status, _, body) = f
        .post_form("/login", None, None, "token=wrong&next=%2F")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("not one of the configured API tokens"));

    let (status, headers, _) = f
        .post_form(
            "/login",
            None,
            Some("http://127.0.0.1:8080"),
            &format!("token={VIEWER}&next=%2Fruns%2Frun-c"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/runs/run-c");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    let cookie = set.split(';').next().unwrap();
    let (status, _, body) = f.get("/runs/run-c", Some(cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("signed in as <strong>vera</strong> (viewer)"));

    // An open redirect is not possible through `next`.
    let (_, headers, _) = f
        .post_form(
            "/login",
            None,
            None,
            &format!("token={VIEWER}&next=%2F%2Fevil.test"),
        )
        .await;
    assert_eq!(headers[header::LOCATION], "/");
}

#[tokio::test]
async fn the_audit_view_pages_backwards_and_filters() {
    let f = fixture(true).await;
    f.until_pending().await;
    let audit = &f.engine.handles().audit;
    let (head, _) = audit.head().await.unwrap().unwrap();
    let (all, older) = newest(audit, Filter::default(), None, 5).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (head - 4..=head).rev().collect::<Vec<_>>()
    );
    assert_eq!(older, Some(head - 4));
    let (next, _) = newest(audit, Filter::default(), older, 5).await.unwrap();
    assert_eq!(next[0].seq, head - 5);

    let only = Filter {
        kind: Some(EntryKind::WatchStarted),
        ..Filter::default()
    };
    let (started, older) = newest(audit, only, None, 100).await.unwrap();
    assert_eq!(started.len(), 2);
    assert_eq!(older, None);

    let (status, _, body) = f.get("/audit?kind=approval_requested", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"data-kind="approval_requested""#), "{body}");
    assert!(!body.contains(r#"<tr data-kind="watch_started""#));
    assert_eq!(
        f.get("/audit?kind=bogus", None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_incident_page_shows_evidence_plan_runbook_and_trail() {
    let f = fixture(true).await;
    let (incident, _) = f.until_pending().await;
    let (status, _, body) = f.get(&format!("/incidents/{incident}"), None).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "Evidence",
        "gpu_hardware_error",
        r#"data-kind="gpu_hardware_error""#,
        "Diagnosis and plan",
        "gpu-hardware-error",
        "Runbook:",
        r#"<tr data-kind="approval_requested">"#,
        "Waiting for approval",
    ] {
        assert!(body.contains(needle), "missing {needle}");
    }
    assert_eq!(
        f.get("/incidents/inc-999", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn runbook_markdown_cannot_carry_markup_or_script_links() {
    let html = pages::markdown(
        "# Title\n\n<script>alert(1)</script>\n\nsee [this](javascript:alert(1)) and \
         <img src=x onerror=alert(1)>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    );
    assert!(html.contains("<h1>Title</h1>"));
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(html.contains(r##"<a href="#">this</a>"##), "{html}");
    assert!(html.contains("<table>"));
}

#[test]
fn path_segments_are_encoded() {
    assert_eq!(seg("run-a_1.x~"), "run-a_1.x~");
    assert_eq!(seg("a/b c<"), "a%2Fb%20c%3C");
    assert_eq!(seg("é"), "%C3%A9");
}

#[test]
fn times_read_as_utc_and_relative() {
    assert_eq!(pages::fmt_time(ORIGIN), "2023-11-14 22:13:20");
    assert_eq!(pages::ago(100.0, 55.0), "45 s ago");
    assert_eq!(pages::ago(10_000.0, 10_000.0 - 720.0), "12 min ago");
    assert_eq!(pages::fmt_time(f64::NAN), "—");
}

#[tokio::test]
async fn the_event_stream_carries_engine_events_and_ends_when_the_engine_stops() {
    let f = fixture(true).await;
    let res = crate::api::router(f.engine.clone())
        .oneshot(Request::get("/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = f.engine.clone();
    let looper = tokio::spawn(
        engine.run(std::time::Duration::from_secs(3600), async move {
            let _ = stop_rx.await;
        }),
    );
    let mut body = res.into_body();
    // Each watch's start is an event; it comes through the stream.
    f.engine.start("test").await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(first.data_ref().unwrap()).into_owned();
    assert!(text.starts_with("event: engine\ndata: {"), "{text}");
    assert!(text.contains(r#""kind":"watch_started""#), "{text}");
    let _ = stop_tx.send(());
    looper.await.unwrap();
    // Drained, then closed well before the stream's own lifetime runs out.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the stream did not end when the engine stopped"
    );
}
