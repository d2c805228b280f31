//! Coming back after a restart: a run babysitter paused stays paused (in the view, the API and
//! for the detectors), a condition still active is not added to its incident twice, approving
//! the pending restart afterwards clears the pause, and an incident row that cannot be read back
//! is reported while the others are restored.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use babysitter::act::ActionKind;
use babysitter::audit::{AuditLog, EntryKind, Filter};
use babysitter::detect::FindingKind;
use babysitter::engine::{Engine, Handles, Leadership, RestoreReport};
use babysitter::incident::IncidentState;
use babysitter::sim::SimPhase;
use common::Harness;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The babysitter writing to `old` stops (its audit pool is closed, its engine is never ticked
/// again) and a new one starts on the same database and the same, still running, cluster.
async fn restart(h: &Harness, old: &AuditLog) -> (Arc<Engine>, Arc<AuditLog>, RestoreReport) {
    old.close().await;
    let audit = Arc::new(AuditLog::open(&h.cfg.audit_url()).await.unwrap());
    let engine = engine_on(h, audit.clone());
    // As `serve` does: restore, then start.
    let report = engine.restore().await;
    engine.start("test").await;
    (engine, audit, report)
}

/// A babysitter on the harness's cluster and clock, writing to `audit`.
fn engine_on(h: &Harness, audit: Arc<AuditLog>) -> Arc<Engine> {
    let handles = Handles {
        clock: h.clock.clone(),
        source: h.sim.clone(),
        actuator: h.sim.clone(),
        pager: h.pager.clone(),
        audit,
        runbooks: Arc::new(babysitter::app::load_runbooks(&h.cfg).unwrap()),
        checks: None,
    };
    Engine::new(
        Arc::new(h.cfg.clone()),
        handles,
        Arc::new(babysitter::telemetry::Metrics::new()),
    )
}

async fn tick(h: &Harness, engine: &Engine, n: usize) {
    for _ in 0..n {
        h.clock.advance(h.cfg.poll_interval.as_secs_f64());
        engine.tick().await;
    }
}

fn watch_status(engine: &Engine, run: &str) -> String {
    engine
        .view()
        .watches
        .iter()
        .find(|w| w.run == run)
        .map(|w| w.status.clone())
        .unwrap_or_default()
}

async fn api_watch(engine: &Arc<Engine>, run: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(format!("/api/v1/watches/{run}"))
        .header("authorization", format!("Bearer {}", common::VIEWER_TOKEN))
        .body(Body::empty())
        .unwrap();
    let res = babysitter::api::router(engine.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_paused_run_stays_paused_across_a_restart_until_the_restart_is_approved() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    // GPU errors: babysitter pauses the run and asks before restarting it elsewhere.
    assert!(h.until_approval_pending().await);
    let before = h.incidents_of("run-c").remove(0);
    assert_eq!(before.state, IncidentState::AwaitingApproval);
    assert_eq!(before.actions[0].action.kind(), ActionKind::Pause);
    assert_eq!(watch_status(&h.engine, "run-c"), "paused");
    assert_eq!(h.sim.status("run-c").unwrap().phase, SimPhase::Paused);
    let pending = before.pending.clone().unwrap().id;

    let (engine, audit, report) = restart(&h, &h.audit).await;
    assert_eq!(report.restored, vec![before.id.clone()]);
    assert_eq!(report.paused, vec!["run-c".to_string()]);
    assert!(report.skipped.is_empty(), "{report:?}");

    // (a) The view and the API say paused, before and after the first polls.
    assert_eq!(watch_status(&engine, "run-c"), "paused");
    let (code, body) = api_watch(&engine, "run-c").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!("paused"), "{body}");

    // Half an hour of a paused run: the step counter does not move.
    tick(&h, &engine, 60).await;
    assert_eq!(watch_status(&engine, "run-c"), "paused");
    let (_, body) = api_watch(&engine, "run-c").await;
    assert_eq!(body["status"], json!("paused"), "{body}");

    // (b) No stall (nor any other progress detector) fired on the paused run: no new incident,
    // no stall finding anywhere in the log.
    let view = engine.view();
    assert_eq!(
        view.incidents.keys().collect::<Vec<_>>(),
        vec![&before.id],
        "{:#?}",
        view.incidents
    );
    let findings = audit
        .query(&Filter {
            kind: Some(EntryKind::Finding),
            limit: Some(10_000),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert!(
        findings
            .iter()
            .all(|e| e.payload["finding"]["kind"] != json!(FindingKind::Stall)),
        "{findings:#?}"
    );

    // (c) The GPU errors still on the charts were raised again by the new babysitter, and
    // joined the incident as already held: no duplicate.
    let restored = view.incidents[&before.id].clone();
    assert_eq!(restored.findings, before.findings);
    let distinct: HashSet<_> = restored
        .findings
        .iter()
        .map(|f| (f.kind, f.chart.clone(), f.onset.to_bits()))
        .collect();
    assert_eq!(distinct.len(), restored.findings.len());
    let rejoined: Vec<_> = findings
        .iter()
        .filter(|e| e.payload["rejoined"] == json!(true))
        .collect();
    assert!(!rejoined.is_empty(), "the re-raised finding is on record");
    assert!(
        rejoined
            .iter()
            .all(|e| e.incident.as_deref() == Some(before.id.as_str())),
        "{rejoined:#?}"
    );
    assert_eq!(restored.state, IncidentState::AwaitingApproval);
    assert_eq!(restored.pending.as_ref().map(|p| &p.id), Some(&pending));

    // (d) Approving the restart resumes the run and clears the pause.
    engine.approve(&pending, "alice", None).await.unwrap();
    tick(&h, &engine, 1).await;
    assert_ne!(h.sim.status("run-c").unwrap().phase, SimPhase::Paused);
    assert_ne!(watch_status(&engine, "run-c"), "paused");
    tick(&h, &engine, 120).await;
    let after = engine.view().incidents[&before.id].clone();
    assert_eq!(after.state, IncidentState::Resolved, "{after:#?}");
    let kinds: Vec<_> = after.actions.iter().map(|a| a.action.kind()).collect();
    assert_eq!(
        kinds,
        [ActionKind::Pause, ActionKind::RestartFromCheckpoint]
    );
    assert_eq!(watch_status(&engine, "run-c"), "running");
    assert!(audit.verify().await.unwrap().ok());

    // A second restart now finds the run running: the restart outcome is the last word.
    let (engine3, _, report3) = restart(&h, &audit).await;
    assert!(report3.paused.is_empty(), "{report3:?}");
    assert_eq!(watch_status(&engine3, "run-c"), "waiting", "no poll yet");
    tick(&h, &engine3, 1).await;
    assert_eq!(watch_status(&engine3, "run-c"), "running");
}

#[tokio::test]
async fn an_unreadable_incident_row_is_reported_and_the_others_are_restored() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    assert!(h.until_approval_pending().await);
    let good = h.incidents_of("run-c").remove(0);
    // Two rows that cannot be read back: one whose data is not JSON at all, one that is JSON
    // but not an incident.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&h.cfg.audit_url()).await.unwrap();
    sqlx::query(
        "INSERT INTO incidents (id, run, state, data, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind("inc-7")
    .bind("run-c")
    .bind("awaiting_approval")
    .bind("{\"id\": \"inc-7\", truncated")
    .bind("2026-11-25T10:00:00.000Z")
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    h.audit
        .save_incident(
            "inc-9",
            "run-c",
            "verifying",
            &json!({"id": "inc-9", "run": "run-c", "findings": "not a list"}),
        )
        .await
        .unwrap();

    let (engine, _audit, report) = restart(&h, &h.audit).await;
    assert_eq!(report.restored, vec![good.id.clone()]);
    let skipped: Vec<_> = report.skipped.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(skipped, ["inc-7", "inc-9"], "{report:#?}");
    assert!(
        report.skipped[0].error.contains("not JSON"),
        "{:?}",
        report.skipped[0]
    );
    assert_eq!(report.skipped[1].run.as_deref(), Some("run-c"));
    assert_eq!(report.skipped[1].state.as_deref(), Some("verifying"));
    assert!(
        report.skipped[1].error.contains("not an incident"),
        "{:?}",
        report.skipped[1]
    );
    assert_eq!(engine.metrics().incidents_unreadable.get(), 2);
    let text = engine.metrics().encode();
    assert!(
        text.contains("babysitter_incidents_unreadable_total 2"),
        "{text}"
    );
    // The readable incident continues, and its run stays paused.
    let view = engine.view();
    assert_eq!(
        view.incidents[&good.id].state,
        IncidentState::AwaitingApproval
    );
    assert_eq!(report.paused, vec!["run-c".to_string()]);
}

#[tokio::test]
async fn a_replica_that_gains_the_lease_knows_the_run_is_paused() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    assert!(h.until_approval_pending().await);
    let id = h.incidents_of("run-c").remove(0).id;
    let lease = |is_leader: bool, holder: &str| Leadership {
        is_leader,
        identity: Some("replica-b".into()),
        holder: Some(holder.into()),
        lease: Some("ml/babysitter".into()),
    };
    // A second replica follows while the first leads.
    let audit = Arc::new(AuditLog::open(&h.cfg.audit_url()).await.unwrap());
    let b = engine_on(&h, audit.clone());
    b.set_leadership(lease(false, "replica-a")).await;
    b.start("test").await;
    assert_eq!(
        watch_status(&b, "run-c"),
        "waiting",
        "a follower does not poll"
    );
    // The first replica dies; the second takes the Lease.
    h.audit.close().await;
    b.set_leadership(lease(true, "replica-b")).await;
    assert_eq!(watch_status(&b, "run-c"), "paused");
    tick(&h, &b, 60).await;
    assert_eq!(watch_status(&b, "run-c"), "paused");
    let view = b.view();
    assert_eq!(view.incidents.keys().collect::<Vec<_>>(), vec![&id]);
    assert_eq!(view.incidents[&id].state, IncidentState::AwaitingApproval);
}
