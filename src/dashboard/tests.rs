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
    fixture_with(read_open, |_| {}).await
}

/// [`fixture`], with the config changed by `edit` before the engine starts.
async fn fixture_with(read_open: bool, edit: impl FnOnce(&mut Config)) -> Fixture {
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
    edit(&mut cfg);
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
    // The restart waiting for approval says what it throws away.
    assert!(
        body.contains(r#"<p class="rollback">It rolls back"#),
        "{body}"
    );
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

#[tokio::test]
async fn the_runbooks_page_lists_every_runbook_by_priority() {
    let f = fixture(true).await;
    let (status, _, body) = f.get("/runbooks", None).await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<&str> = body
        .split(r#"<tr data-runbook=""#)
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(rows.len(), f.engine.handles().runbooks.iter().count());
    // Highest priority first: gpu-hardware-error (90), then loss-spike (50), then
    // grad-explosion (45: a gradient explosion the loss followed is a loss spike).
    let pos = |id: &str| rows.iter().position(|r| *r == id).unwrap();
    assert!(pos("gpu-hardware-error") < pos("loss-spike"));
    assert!(pos("loss-spike") < pos("grad-explosion"));
    assert!(body.contains("<code>grad_explosion</code>"), "{body}");
    assert!(body.contains(r#"href="/runbooks/loss-spike""#));
}

#[tokio::test]
async fn a_runbook_page_reads_its_front_matter_as_a_plan() {
    let f = fixture(true).await;
    let (status, _, body) = f.get("/runbooks/grad-explosion", None).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "<h1>Gradient explosion</h1>",
        "<code>loss_followed</code>",
        "unanswered counts as <strong>false</strong>",
        "when loss_followed is true",
        "Plan per outcome",
        "within <strong>30m</strong>, holding for 15m",
        "<code>findings_cleared</code>",
        "after <strong>2</strong> attempt(s)",
        // The Markdown, rendered.
        "<h1>Gradient explosion</h1>",
    ] {
        assert!(body.contains(needle), "missing {needle}:\n{body}");
    }
    // Per outcome: `false` annotates, `true` patches and restarts.
    let outcome = |o: &str| {
        let at = body
            .find(&format!(
                "<code>loss_followed</code> is <strong>{o}</strong>"
            ))
            .unwrap();
        let rest = &body[at..];
        rest[..rest.find("</li>").unwrap()].to_string()
    };
    assert!(
        outcome("false").contains("annotate"),
        "{}",
        outcome("false")
    );
    assert!(!outcome("false").contains("restart"));
    assert!(outcome("true").contains("restart"), "{}", outcome("true"));
    // Open reads, nobody signed in: no form, a way to sign in.
    assert!(!body.contains(r#"action="/runbooks/grad-explosion/dry-run""#));
    assert!(body.contains("to dry-run this runbook"));
    assert_eq!(f.get("/runbooks/nope", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_operator_dry_runs_a_runbook_and_sees_every_decision() {
    let f = fixture(true).await;
    f.tick().await;
    let op = cookie_for(OPERATOR);
    let (_, _, page) = f.get("/runbooks/gpu-hardware-error", Some(&op)).await;
    assert!(page.contains(r#"action="/runbooks/gpu-hardware-error/dry-run""#));
    assert!(
        page.contains(r#"<option value="run-h">run-h</option>"#),
        "{page}"
    );
    let form = format!("csrf={}&run=run-h", form_token_for(OPERATOR));
    let (status, _, body) = f
        .post_form(
            "/runbooks/gpu-hardware-error/dry-run",
            Some(&op),
            Some("http://127.0.0.1:8080"),
            &form,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"id="dry-run""#));
    assert!(
        body.contains("data-frozen"),
        "the answer must not refresh itself"
    );
    // Step 1 (pause) passes on an `act` watch; step 2 is a restart the runbook wants approved.
    let verdicts: Vec<&str> = body
        .split(r#"<tr data-verdict=""#)
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(verdicts, ["allow", "needs_approval"], "{body}");
    assert!(body.contains(r#"<option value="run-h" selected>run-h</option>"#));
    // Nothing was done, and the dry run is in the audit log under the operator's name.
    assert_eq!(f.engine.view().watches[1].status, "running");
    let dry = f
        .engine
        .handles()
        .audit
        .query(&Filter {
            kind: Some(EntryKind::RunbookDryRun),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(dry[0].actor, "api:alice");
    assert_eq!(dry[0].run.as_deref(), Some("run-h"));

    // Refusals: another site, a viewer, an unknown run.
    let (status, _, _) = f
        .post_form(
            "/runbooks/gpu-hardware-error/dry-run",
            Some(&op),
            Some("https://evil.example"),
            &form,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let viewer_form = format!("csrf={}&run=run-h", form_token_for(VIEWER));
    let (status, _, body) = f
        .post_form(
            "/runbooks/gpu-hardware-error/dry-run",
            Some(&cookie_for(VIEWER)),
            None,
            &viewer_form,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("Dry run refused"));
    let bad = format!("csrf={}&run=run-x", form_token_for(OPERATOR));
    let (status, _, body) = f
        .post_form(
            "/runbooks/gpu-hardware-error/dry-run",
            Some(&op),
            None,
            &bad,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no watch for run `run-x`"), "{body}");
}

#[tokio::test]
async fn the_audit_page_says_whether_the_chain_verifies() {
    let f = fixture(true).await;
    f.until_pending().await;
    let audit = &f.engine.handles().audit;
    let n = audit.verify().await.unwrap().entries;
    let (_, _, body) = f.get("/audit", None).await;
    assert!(
        body.contains(&format!("Hash chain verified: {n} entries")),
        "{body}"
    );
    assert!(body.contains("No signed head yet"));

    // An edited entry breaks it at that entry. The page reuses a verification for a while; a
    // new one, past that, finds the edit.
    sqlx::query(r#"UPDATE audit_log SET payload = '{"n":999}' WHERE seq = 3"#)
        .execute(audit.pool())
        .await
        .unwrap();
    let (_, _, body) = f.get("/audit", None).await;
    assert!(
        body.contains("Hash chain verified"),
        "reused within VERIFY_REUSE"
    );
    forget_verification(audit);
    let (_, _, body) = f.get("/audit", None).await;
    assert!(body.contains("Hash chain BROKEN at entry 3"), "{body}");
    assert!(!body.contains("Hash chain verified"));
}

#[tokio::test]
async fn the_audit_page_shows_the_latest_signed_head() {
    let f = fixture(true).await;
    let head = crate::audit::SignedHead {
        seq: 2,
        hash: "ab".repeat(32),
        mac: "cd".repeat(32),
        signed_at: "2026-11-02T10:00:00.000Z".into(),
    };
    f.engine
        .handles()
        .audit
        .append(crate::audit::NewEntry {
            kind: EntryKind::SignedHead,
            run: None,
            incident: None,
            actor: "babysitter".into(),
            payload: serde_json::to_value(&head).unwrap(),
        })
        .await
        .unwrap();
    let (_, _, body) = f.get("/audit", None).await;
    assert!(
        body.contains("Latest signed head: entry #2 <code>abababababab</code> signed 2026-11-02 10:00:00.000 UTC"),
        "{body}"
    );
}

#[tokio::test]
async fn the_header_says_who_leads() {
    let f = fixture(true).await;
    let (_, _, body) = f.get("/", None).await;
    assert!(body.contains("leader · single instance"), "{body}");
    f.engine
        .set_leadership(crate::engine::Leadership {
            is_leader: false,
            identity: Some("babysitter-1".into()),
            holder: Some("babysitter-0".into()),
            lease: Some("ml/babysitter".into()),
        })
        .await;
    let (_, _, body) = f.get("/runbooks", None).await;
    assert!(
        body.contains("follower · holder <strong>babysitter-0</strong> · read-only"),
        "{body}"
    );
}

#[test]
fn blind_runs_come_first_on_the_index() {
    let now = ORIGIN;
    let w = |run: &str, status: &str| crate::engine::WatchView {
        run: run.into(),
        target: Target::Simulated { run: run.into() },
        autonomy: Autonomy::Act,
        route: "ml-oncall".into(),
        status: status.into(),
        held: None,
        last_sample: Some(now - 30.0),
        blind_since: (status == "blind").then_some(now - 600.0),
        source_error: (status == "blind").then(|| "prometheus: connection refused <b>".to_string()),
        active_findings: Vec::new(),
        open_incidents: Vec::new(),
        latest: Default::default(),
    };
    let view = crate::engine::View {
        now,
        audit_healthy: true,
        watches: vec![w("run-ok", "running"), w("run-dark", "blind")],
        ..Default::default()
    };
    let chrome = Chrome {
        session: None,
        now,
        audit_healthy: true,
        live_run: None,
        path: "/".into(),
        leadership: None,
        frozen: false,
    };
    let html = pages::index(&chrome, &view).into_string();
    let card = html.find(r#"id="blind""#).expect("a blind card");
    assert!(
        card < html.find("<table").unwrap(),
        "the card comes before the table"
    );
    assert!(html.contains("1 blind run: nothing is detected or done on it"));
    assert!(
        html.contains("blind since 2023-11-14 22:03:20 UTC (10 min ago)"),
        "{html}"
    );
    assert!(html.contains("connection refused &lt;b&gt;"));
    assert!(!html[card..].starts_with("run-ok"));
}

#[tokio::test]
async fn the_incident_page_shows_the_agents_proposal_as_not_executed() {
    use crate::agent::{AgentReport, AgentStatus, AgentUsage, EvidenceCheck, Message, Proposal};
    let f = fixture(true).await;
    let mut inc = Incident::manual(
        "inc-77".into(),
        "run-h".into(),
        crate::detect::Family::Numerics,
        "alice".into(),
        ORIGIN,
    );
    inc.agent = Some(AgentReport {
        status: AgentStatus::Proposed,
        model: "qwen2.5-7b".into(),
        summary: "the loss spike follows a bad shard <script>x</script>".into(),
        error: None,
        proposal: Some(Proposal {
            runbook: "loss-spike".into(),
            action: crate::act::Action::Pause,
            rationale: "grad norm rose 300x".into(),
            evidence: vec!["grad_norm".into()],
        }),
        stated_confidence: Some(0.9),
        confidence: Some(0.45),
        evidence: vec![EvidenceCheck {
            query: "max_over_time(grad_norm[10m])".into(),
            status: "reproduced".into(),
            detail: None,
        }],
        decision: Some(crate::policy::Decision {
            verdict: crate::policy::Verdict::NeedsApproval,
            rule: "agent_proposal".into(),
            reason: "an agent's proposal always needs a human".into(),
            retry_at: None,
        }),
        usage: AgentUsage {
            steps: 3,
            total_tokens: 1234,
            ..AgentUsage::default()
        },
        redacted_names: 2,
        transcript: vec![
            Message::system("you investigate"),
            Message::tool("call-1", "grad_norm: 312.5"),
        ],
    });
    f.engine
        .handles()
        .audit
        .save_incident(
            &inc.id,
            &inc.run,
            inc.state.as_str(),
            &serde_json::json!(inc),
        )
        .await
        .unwrap();
    let (status, _, body) = f.get("/incidents/inc-77", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for needle in [
        r#"id="agent""#,
        "proposal — not executed",
        "<code>qwen2.5-7b</code>",
        "<strong>0.45</strong> after re-running the evidence (the model stated 0.90)",
        r#"<span class="verdict-needs_approval">needs_approval</span> (agent_proposal)"#,
        r#"<span class="evidence-reproduced">reproduced</span>"#,
        "Transcript (2 messages",
        "answers call-1",
        "2 names redacted",
        "bad shard &lt;script&gt;x&lt;/script&gt;",
    ] {
        assert!(body.contains(needle), "missing {needle}:\n{body}");
    }
    assert!(
        body.contains("<details class=\"transcript\">"),
        "collapsed by default"
    );
}

#[tokio::test]
async fn the_dry_run_form_offers_only_runs_whose_watch_allows_the_runbook() {
    let f = fixture_with(true, |cfg| {
        cfg.watches[1].runbooks = vec!["loss-spike".into()];
    })
    .await;
    let op = cookie_for(OPERATOR);
    let (_, _, body) = f.get("/runbooks/gpu-hardware-error", Some(&op)).await;
    assert!(
        body.contains(r#"<option value="run-c">run-c</option>"#),
        "{body}"
    );
    assert!(!body.contains(r#"<option value="run-h""#), "{body}");
    let (_, _, body) = f.get("/runbooks/loss-spike", Some(&op)).await;
    assert!(
        body.contains(r#"<option value="run-h">run-h</option>"#),
        "{body}"
    );
    // Posting it anyway: the API refuses, and the page says why.
    let form = format!("csrf={}&run=run-h", form_token_for(OPERATOR));
    let (status, _, body) = f
        .post_form(
            "/runbooks/gpu-hardware-error/dry-run",
            Some(&op),
            None,
            &form,
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    assert!(body.contains("is not allowed on run `run-h`"), "{body}");
}
