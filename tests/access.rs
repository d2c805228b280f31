//! Access control and what reaches the audit log: every role on every mutating endpoint (401
//! without a valid token, 403 with too weak a role, through with enough), tokens from a file,
//! request bodies validated with errors naming the field, audit pagination by `next` links,
//! config loads with content hashes, and no secret in any entry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use babysitter::audit::{AuditLog, AuditOptions, Filter, HeadKey, HeadSigning, canonical_json};
use babysitter::clock::{ManualClock, SharedClock};
use babysitter::config::{ApiRole, ApiToken, Config};
use babysitter::engine::{Engine, Handles};
use babysitter::incident::IncidentState;
use babysitter::notify::ConsolePager;
use babysitter::sim::{SimCluster, SimRunSpec};
use babysitter::telemetry::Metrics;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "ada-admin-token";
const OPERATOR: &str = "otto-operator-token";
const VIEWER: &str = "vera-viewer-token";
/// From the tokens file.
const FILE_ADMIN: &str = "fiona-from-file-token";

struct Setup {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    audit: Arc<AuditLog>,
    _dir: tempfile::TempDir,
}

/// The engine on the simulator with signed heads, tokens inline and from a file, and runs with
/// GPU faults (they wait for approval).
async fn setup(config_extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "# mounted Secret\nfiona:admin:{}\n\n",
            babysitter::config::token_hash(FILE_ADMIN)
        ),
    )
    .expect("tokens file");
    let cfg_path = dir.path().join("babysitter.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "data_dir = {:?}\n[api]\nread_open = false\ntokens_file = {:?}\n{config_extra}",
            dir.path().display().to_string(),
            tokens.display().to_string()
        ),
    )
    .expect("config");
    let mut cfg = Config::load(Some(&cfg_path)).expect("config loads");
    cfg.api.tokens.extend([
        ApiToken::for_secret("ada", ApiRole::Admin, ADMIN),
        ApiToken::for_secret("otto", ApiRole::Operator, OPERATOR),
        ApiToken::for_secret("vera", ApiRole::Viewer, VIEWER),
    ]);
    let clock = ManualClock::new(common::ORIGIN);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(SimCluster::new(shared.clone(), 7));
    for run in ["run-c", "run-d", "run-h"] {
        let mut spec = SimRunSpec::new(run, common::ORIGIN - common::HISTORY);
        if run != "run-h" {
            spec.faults = common::xid_fault();
        }
        sim.add_run(spec).expect("sim run");
        cfg.watches.push(common::watch(run));
    }
    let audit = Arc::new(
        AuditLog::open_with(
            &cfg.audit_url(),
            AuditOptions {
                signing: Some(HeadSigning {
                    key: HeadKey::from_bytes(b"access-test-signing-key", "test").expect("key"),
                    every: Duration::from_secs(3600),
                    heads_file: Some(dir.path().join("heads.jsonl")),
                }),
                retention: None,
            },
        )
        .await
        .expect("audit"),
    );
    let handles = Handles {
        clock: shared,
        source: sim.clone(),
        actuator: sim,
        pager: ConsolePager::new(),
        audit: audit.clone(),
        runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).expect("runbooks")),
        checks: None,
    };
    let engine = Engine::new(Arc::new(cfg), handles, Arc::new(Metrics::new()));
    engine.start("test").await;
    Setup {
        engine,
        clock,
        audit,
        _dir: dir,
    }
}

impl Setup {
    async fn until_pending(&self, n: usize) {
        for _ in 0..200 {
            self.clock.advance(30.0);
            self.engine.tick().await;
            let pending = self
                .engine
                .view()
                .incidents
                .values()
                .filter(|i| i.state == IncidentState::AwaitingApproval)
                .count();
            if pending >= n {
                return;
            }
        }
        panic!("{n} approvals never became pending");
    }

    fn pending_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .engine
            .view()
            .incidents
            .values()
            .filter_map(|i| i.pending.as_ref().map(|p| p.id.clone()))
            .collect();
        ids.sort();
        ids
    }
}

async fn call(
    engine: &Arc<Engine>,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let router = babysitter::api::router(engine.clone());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    let res = router.oneshot(req).await.expect("response");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[tokio::test]
async fn every_role_on_every_mutating_endpoint() {
    let s = setup("").await;
    s.until_pending(2).await;
    let ids = s.pending_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // (endpoint, body, role it needs)
    let endpoints = [
        (
            format!("/api/v1/actions/{}/approve", ids[0]),
            json!({}),
            ApiRole::Operator,
        ),
        (
            format!("/api/v1/actions/{}/reject", ids[1]),
            json!({"reason": "not now"}),
            ApiRole::Operator,
        ),
        (
            "/api/v1/runbooks/hang/execute".to_string(),
            json!({"run": "run-h", "dry_run": true}),
            ApiRole::Operator,
        ),
        ("/api/v1/audit/heads".to_string(), json!({}), ApiRole::Admin),
    ];
    let callers = [
        (None, None),
        (Some("not-a-token"), None),
        (Some(VIEWER), Some(ApiRole::Viewer)),
        (Some(OPERATOR), Some(ApiRole::Operator)),
        (Some(ADMIN), Some(ApiRole::Admin)),
        (Some(FILE_ADMIN), Some(ApiRole::Admin)),
    ];
    for (uri, body, needs) in &endpoints {
        for (token, role) in callers {
            // Denials first: they must change nothing.
            if role.is_some_and(|r| r >= *needs) {
                continue;
            }
            let (status, res) = call(&s.engine, token, "POST", uri, Some(body.to_string())).await;
            match role {
                None => assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {token:?}: {res}"),
                Some(r) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{uri} as {r:?}: {res}");
                    let msg = res["error"].as_str().unwrap_or_default();
                    assert!(msg.contains(needs.as_str()), "{msg}");
                }
            }
        }
    }
    assert_eq!(
        s.pending_ids(),
        ids,
        "no denied call approved or rejected anything"
    );

    // Enough: the operator approves and rejects; operator and admins execute dry runs; only
    // admins sign heads.
    let (st, res) = call(
        &s.engine,
        Some(OPERATOR),
        "POST",
        &endpoints[0].0,
        Some("{}".into()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{res}");
    let (st, res) = call(
        &s.engine,
        Some(ADMIN),
        "POST",
        &endpoints[1].0,
        Some(endpoints[1].1.to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "admin ⊃ operator: {res}");
    for token in [OPERATOR, ADMIN, FILE_ADMIN] {
        let (st, res) = call(
            &s.engine,
            Some(token),
            "POST",
            &endpoints[2].0,
            Some(endpoints[2].1.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{res}");
    }
    for token in [ADMIN, FILE_ADMIN] {
        let (st, res) = call(&s.engine, Some(token), "POST", "/api/v1/audit/heads", None).await;
        assert_eq!(st, StatusCode::CREATED, "{res}");
        let seq = res["head"]["seq"].as_i64().expect("seq");
        assert_eq!(
            s.audit.hash_at(seq).await.expect("hash"),
            res["head"]["hash"].as_str().map(str::to_string)
        );
    }
    // Reads: closed here, so a viewer token is needed.
    let (st, _) = call(&s.engine, None, "GET", "/api/v1/audit", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Every mutation is on record with the caller's identity.
    let entries = s
        .audit
        .query(&Filter {
            limit: Some(10_000),
            ..Filter::default()
        })
        .await
        .expect("entries");
    let actors: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.actor.starts_with("api:"))
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert!(actors.contains(&("approved", "api:otto")), "{actors:?}");
    assert!(actors.contains(&("rejected", "api:ada")), "{actors:?}");
    for who in ["api:otto", "api:ada", "api:fiona"] {
        assert!(
            actors.contains(&("runbook_dry_run", who)),
            "{who} missing in {actors:?}"
        );
    }
}

#[tokio::test]
async fn bodies_are_limited_and_validated_naming_the_field() {
    let s = setup("").await;
    let exec = "/api/v1/runbooks/hang/execute";
    let cases = [
        (r#"{"run": "run-h", "bogus": 1}"#, "bogus"),
        (r#"{"run": 5}"#, "run"),
        (r#"{"dry_run": true}"#, "run"),
        (r#"{"run": "run-h", "dry_run": "yes"}"#, "dry_run"),
        (r#"{"run": "  "}"#, "run"),
        (r#"{"run": "run-h", "by": ""}"#, "by"),
    ];
    for (body, field) in cases {
        let (st, res) = call(&s.engine, Some(OPERATOR), "POST", exec, Some(body.into())).await;
        assert!(st.is_client_error(), "{body}: {st} {res}");
        let msg = res["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field),
            "{body}: error does not name `{field}`: {msg}"
        );
    }
    let long = format!(r#"{{"run": "run-h", "reason": "{}"}}"#, "x".repeat(3000));
    let (st, res) = call(&s.engine, Some(OPERATOR), "POST", exec, Some(long)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(res["error"].as_str().unwrap_or_default().contains("reason"));
    let (st, _) = call(
        &s.engine,
        Some(OPERATOR),
        "POST",
        exec,
        Some("{not json".into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let huge = format!(r#"{{"run": "{}"}}"#, "r".repeat(200 * 1024));
    let (st, _) = call(&s.engine, Some(OPERATOR), "POST", exec, Some(huge)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, res) = call(
        &s.engine,
        Some(VIEWER),
        "GET",
        "/api/v1/audit?limit=0",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(res["error"].as_str().unwrap_or_default().contains("limit"));
    let (st, res) = call(
        &s.engine,
        Some(VIEWER),
        "GET",
        "/api/v1/audit?cursor=abc",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(res["error"].as_str().unwrap_or_default().contains("cursor"));
}

#[tokio::test]
async fn audit_pages_follow_next_links_to_the_end() {
    let s = setup("").await;
    s.until_pending(1).await;
    let total = s.audit.count().await.expect("count") as i64;
    assert!(total > 12, "{total}");
    let mut uri = "/api/v1/audit?limit=5".to_string();
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let (st, res) = call(&s.engine, Some(VIEWER), "GET", &uri, None).await;
        assert_eq!(st, StatusCode::OK, "{res}");
        let page: Vec<i64> = res["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["seq"].as_i64())
            .collect();
        assert!(page.len() <= 5);
        seqs.extend(page);
        pages += 1;
        match res["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    res["cursor"].as_str(),
                    seqs.last().map(|s| s.to_string()).as_deref()
                );
                uri = next.to_string();
            }
            None => break,
        }
    }
    // Nothing was appended while paging (the clock did not move).
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // Full pages, then a partial one (or an empty one after a full last page).
    assert_eq!(pages, total / 5 + 1);
    // Filters carry over into the next link.
    let (_, res) = call(
        &s.engine,
        Some(VIEWER),
        "GET",
        "/api/v1/audit?run=run-c&kind=decision&limit=1",
        None,
    )
    .await;
    let next = res["next"].as_str().unwrap_or_default();
    assert!(
        next.contains("run=run-c") && next.contains("kind=decision"),
        "{next}"
    );
}

#[tokio::test]
async fn config_loads_are_hashed_and_secrets_never_reach_the_log() {
    const KEY: &str = "R0UT1NG-KEY-never-in-the-audit-log";
    let s = setup(&format!(
        "[pager]\nkind = \"pagerduty\"\nrouting_key = \"{KEY}\"\nurl = \"http://127.0.0.1:9/v2/enqueue\"\n"
    ))
    .await;
    s.until_pending(2).await;
    let entries = s
        .audit
        .query(&Filter {
            limit: Some(10_000),
            ..Filter::default()
        })
        .await
        .expect("entries");
    for e in &entries {
        let text = canonical_json(&serde_json::to_value(e).expect("entry json"));
        assert!(
            !text.contains(KEY),
            "entry {} ({}) leaks the routing key",
            e.seq,
            e.kind
        );
        for token in [ADMIN, OPERATOR, VIEWER, FILE_ADMIN] {
            assert!(!text.contains(token), "entry {} leaks a token", e.seq);
        }
    }
    let loaded = entries
        .iter()
        .find(|e| e.kind == babysitter::audit::EntryKind::ConfigLoaded)
        .expect("config_loaded");
    let cfg = s.engine.config();
    let file = cfg.source.as_ref().expect("loaded from a file");
    let bytes = std::fs::read(&file.path).expect("config file");
    use sha2::Digest;
    assert_eq!(
        loaded.payload["file_sha256"],
        json!(hex::encode(sha2::Sha256::digest(&bytes)))
    );
    assert_eq!(
        loaded.payload["effective_sha256"],
        json!(cfg.effective_sha256())
    );
    let runbooks = entries
        .iter()
        .find(|e| e.kind == babysitter::audit::EntryKind::RunbooksLoaded)
        .expect("runbooks_loaded");
    assert!(runbooks.payload["runbooks"].as_array().is_some_and(|r| {
        !r.is_empty()
            && r.iter()
                .all(|x| x["sha256"].as_str().is_some_and(|h| h.len() == 64))
    }));
}

#[tokio::test]
async fn an_unwritable_audit_log_is_visible_in_readyz_metrics_and_a_page() {
    let h = common::Harness::new(vec![("run-b", common::hang_fault(0))], |_| {}).await;
    h.tick().await;
    assert_eq!(
        call(&h.engine, None, "GET", "/readyz", None).await.0,
        StatusCode::OK
    );
    // The disk fills: every insert fails from now on.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&h.cfg.audit_url())
        .await
        .expect("connect");
    sqlx::query("CREATE TRIGGER no_space BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&pool)
        .await
        .expect("trigger");
    h.until(3600.0, |_| false).await;
    let (status, body) = call(&h.engine, None, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["problems"]
            .to_string()
            .contains("audit log not writable"),
        "{body}"
    );
    let metrics = h.engine.metrics().encode();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("babysitter_audit_write_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("babysitter_audit_write_failures_total exported");
    assert!(failures >= 1.0, "{metrics}");
    // One page (deduplicated by key), however many appends failed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pages: Vec<_> = h
        .pager
        .sent()
        .into_iter()
        .filter(|p| p.dedup_key == "babysitter/audit-unavailable")
        .collect();
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert_eq!(pages[0].action, babysitter::notify::PageAction::Trigger);
    assert!(
        pages[0].summary.contains("takes no action"),
        "{}",
        pages[0].summary
    );
    // The disk frees up: the next append (here: a dry run over the API) resolves the page.
    sqlx::query("DROP TRIGGER no_space")
        .execute(&pool)
        .await
        .expect("drop trigger");
    let (st, res) = call(
        &h.engine,
        Some(common::OPERATOR_TOKEN),
        "POST",
        "/api/v1/runbooks/hang/execute",
        Some(json!({"run": "run-b", "dry_run": true}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert!(h.audit.is_healthy());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = h
        .pager
        .sent()
        .into_iter()
        .rfind(|p| p.dedup_key == "babysitter/audit-unavailable")
        .expect("page");
    assert_eq!(last.action, babysitter::notify::PageAction::Resolve);
}
