//! The whole loop on the simulator: watch → charts → detect → incident → diagnose → policy →
//! act → verify → page → audit, stepped one poll at a time on a manual clock.

mod common;

use std::time::Duration;

use babysitter::act::{Action, ActionKind, ChangeOp, CheckpointSelector};
use babysitter::audit::EntryKind;
use babysitter::detect::FindingKind;
use babysitter::incident::{Incident, IncidentState};
use babysitter::notify::PageAction;
use babysitter::policy::{Mode, RateLimit};
use common::{HISTORY, Harness};

fn restarts(inc: &Incident) -> Vec<u64> {
    inc.actions
        .iter()
        .filter_map(|a| match a.action {
            Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::Step(s),
            } if a.ok => Some(s),
            _ => None,
        })
        .collect()
}

/// Every action intent is followed by its outcome, with the same idempotency key, and the
/// decision that allowed it comes before both.
async fn assert_intents_have_outcomes(h: &Harness, incident: &str) {
    let entries = h.entries(incident).await;
    let mut open: Vec<String> = Vec::new();
    for e in &entries {
        match e.kind {
            EntryKind::ActionIntent => open.push(e.payload["key"].as_str().unwrap().to_string()),
            EntryKind::ActionOutcome => {
                let key = e.payload["key"].as_str().unwrap();
                assert_eq!(
                    open.pop().as_deref(),
                    Some(key),
                    "outcome {key} without its intent"
                );
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "intents without outcome: {open:?}");
}

#[tokio::test]
async fn loss_spike_is_rolled_back_with_lower_lr_and_verified() {
    let h = Harness::new(vec![("run-a", common::spike_fault())], |_| {}).await;
    let resolved = h
        .until(3.0 * 3600.0, |v| {
            v.incidents
                .values()
                .any(|i| i.run == "run-a" && i.state.is_final())
        })
        .await;
    assert!(
        resolved,
        "incident did not finish: {:#?}",
        h.incidents_of("run-a")
    );
    let incs = h.incidents_of("run-a");
    assert_eq!(incs.len(), 1, "one incident for one spike: {incs:#?}");
    let inc = &incs[0];
    assert_eq!(inc.state, IncidentState::Resolved, "{inc:#?}");
    assert_eq!(inc.findings[0].kind, FindingKind::LossSpike);
    assert_eq!(inc.diagnosis.as_ref().unwrap().runbook, "loss-spike");
    // lr × 0.5 was patched before the restart, and the restart went back before the onset.
    let kinds: Vec<ActionKind> = inc.actions.iter().map(|a| a.action.kind()).collect();
    let patch = kinds
        .iter()
        .position(|k| *k == ActionKind::PatchConfig)
        .unwrap();
    let restart = kinds
        .iter()
        .position(|k| *k == ActionKind::RestartFromCheckpoint)
        .unwrap();
    assert!(patch < restart, "{kinds:?}");
    match &inc.actions[patch].action {
        Action::PatchConfig { changes } => {
            assert_eq!(changes[0].key, "lr");
            assert_eq!(changes[0].op, ChangeOp::Scale(0.5));
        }
        other => panic!("{other:?}"),
    }
    let cps = h
        .engine
        .handles()
        .actuator
        .checkpoints(&babysitter::act::Target::Simulated {
            run: "run-a".into(),
        })
        .await
        .unwrap();
    let step = restarts(inc)[0];
    let cp = cps
        .iter()
        .find(|c| c.step == step)
        .expect("restarted from a real checkpoint");
    assert!(
        cp.t < inc.onset(),
        "checkpoint at {} is not before onset {}",
        cp.t,
        inc.onset()
    );
    // No human was needed.
    assert!(h.pager.sent().is_empty(), "{:#?}", h.pager.sent());
    let kinds = h.kinds(&inc.id).await;
    for k in [
        EntryKind::Finding,
        EntryKind::IncidentOpened,
        EntryKind::Diagnosis,
        EntryKind::Decision,
        EntryKind::ActionIntent,
        EntryKind::ActionOutcome,
        EntryKind::Verification,
        EntryKind::IncidentResolved,
    ] {
        assert!(kinds.contains(&k), "no {k:?} entry in {kinds:?}");
    }
    assert_intents_have_outcomes(&h, &inc.id).await;
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn hang_with_busy_gpus_is_restarted_and_verified() {
    let h = Harness::new(vec![("run-b", common::hang_fault(0))], |_| {}).await;
    assert!(h.until_finished(3.0 * 3600.0).await);
    let inc = &h.incidents_of("run-b")[0];
    assert_eq!(inc.state, IncidentState::Resolved, "{inc:#?}");
    assert_eq!(inc.findings[0].kind, FindingKind::Stall);
    assert!(
        inc.findings[0].message.to_lowercase().contains("gpu"),
        "{}",
        inc.findings[0].message
    );
    assert_eq!(inc.diagnosis.as_ref().unwrap().runbook, "hang");
    assert_eq!(restarts(inc).len(), 1);
    assert!(
        inc.actions
            .iter()
            .any(|a| a.action.kind() == ActionKind::CaptureDiagnostics)
    );
    assert_intents_have_outcomes(&h, &inc.id).await;
}

#[tokio::test]
async fn a_hang_that_survives_restarts_fails_verification_and_escalates() {
    let h = Harness::new(vec![("run-b", common::hang_fault(5))], |_| {}).await;
    assert!(h.until_finished(6.0 * 3600.0).await);
    let inc = &h.incidents_of("run-b")[0];
    assert_eq!(inc.state, IncidentState::Escalated, "{inc:#?}");
    let plan = &inc.diagnosis.as_ref().unwrap().plan;
    // Every allowed attempt was made, then a human was paged with the evidence.
    assert_eq!(inc.attempt, plan.max_attempts);
    assert_eq!(restarts(inc).len() as u32, plan.max_attempts);
    assert!(
        inc.outcome.as_ref().unwrap().contains("did not recover"),
        "{:?}",
        inc.outcome
    );
    let pages = h.pager.sent();
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert_eq!(pages[0].action, PageAction::Trigger);
    assert_eq!(pages[0].dedup_key, format!("babysitter/{}", inc.id));
    assert!(
        pages[0].details.iter().any(|(k, _)| k == "verification"),
        "{:#?}",
        pages[0]
    );
    let kinds = h.kinds(&inc.id).await;
    assert!(kinds.contains(&EntryKind::IncidentEscalated));
    assert!(kinds.contains(&EntryKind::Page));
    assert_intents_have_outcomes(&h, &inc.id).await;
}

#[tokio::test]
async fn gpu_errors_pause_page_and_wait_for_approval() {
    // Reminders have their own test (tests/paging.rs); here the page lifecycle is the point.
    let h = Harness::new(vec![("run-c", common::xid_fault())], |c| {
        c.paging.renotify_max = 0;
    })
    .await;
    assert!(h.until_approval_pending().await);
    let inc = h.incidents_of("run-c").remove(0);
    assert_eq!(
        inc.diagnosis.as_ref().unwrap().runbook,
        "gpu-hardware-error"
    );
    assert_eq!(inc.actions[0].action, Action::Pause);
    let pending = inc.pending.clone().unwrap();
    assert!(matches!(
        pending.action,
        Action::RestartFromCheckpoint { .. }
    ));
    // The page carries the exact approve command for this action.
    let pages = h.pager.sent();
    let approval_page = pages
        .iter()
        .find(|p| p.approve_command.is_some())
        .expect("approval page");
    // …and what the restart throws away: here nothing, the run was paused on the step of its
    // newest checkpoint (restart_with_approval_shows_what_it_throws_away has the real case).
    let cost = pending.rollback.clone().expect("the rollback cost");
    assert_eq!((cost.steps, cost.from_step), (0, cost.to_step), "{cost:?}");
    assert!(
        approval_page
            .summary
            .contains("It rolls back nothing (the run is at the checkpoint's step"),
        "{}",
        approval_page.summary
    );
    assert!(
        approval_page
            .approve_command
            .as_ref()
            .unwrap()
            .contains(&format!("/api/v1/actions/{}/approve", pending.id))
    );
    // Nothing happens while nobody answers: the run stays paused, no restart.
    h.until(1800.0, |_| false).await;
    let inc = h.incidents_of("run-c").remove(0);
    assert_eq!(inc.state, IncidentState::AwaitingApproval);
    assert!(restarts(&inc).is_empty());
    assert_eq!(h.engine.view().watches[0].status, "paused");

    h.engine
        .approve(&pending.id, "alice", Some("node looks bad".into()))
        .await
        .unwrap();
    assert!(h.until_finished(3600.0).await);
    let inc = h.incidents_of("run-c").remove(0);
    assert_eq!(inc.state, IncidentState::Resolved, "{inc:#?}");
    assert_eq!(restarts(&inc).len(), 1);
    let approved = inc
        .actions
        .iter()
        .find(|a| a.action.kind() == ActionKind::RestartFromCheckpoint)
        .unwrap();
    assert_eq!(approved.decision.rule, "approved");
    let entries = h.entries(&inc.id).await;
    let approval = entries
        .iter()
        .find(|e| e.kind == EntryKind::Approved)
        .unwrap();
    assert_eq!(approval.actor, "api:alice");
    // One page for the incident: triggered for the approval, acknowledged once automation acts
    // on it, resolved when verification passes — all under one dedup key.
    let lifecycle: Vec<PageAction> = h.pager.sent().iter().map(|p| p.action).collect();
    assert_eq!(
        lifecycle,
        [
            PageAction::Trigger,
            PageAction::Acknowledge,
            PageAction::Resolve
        ]
    );
    assert!(
        h.pager
            .sent()
            .iter()
            .all(|p| p.dedup_key == format!("babysitter/{}", inc.id))
    );
    // The acknowledge and resolve carry the trigger's severity, so every pager matches them.
    assert!(
        h.pager
            .sent()
            .iter()
            .all(|p| p.severity == babysitter::detect::Severity::Critical)
    );
    // Approving twice is refused.
    assert!(h.engine.approve(&pending.id, "bob", None).await.is_err());
    assert_intents_have_outcomes(&h, &inc.id).await;
}

#[tokio::test]
async fn a_rejected_action_escalates_without_acting() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    assert!(h.until_approval_pending().await);
    let id = h.incidents_of("run-c")[0].pending.clone().unwrap().id;
    h.engine
        .reject(&id, "carol", Some("draining the node first".into()))
        .await
        .unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-c").remove(0);
    assert_eq!(inc.state, IncidentState::Escalated);
    assert!(inc.outcome.as_ref().unwrap().contains("rejected by carol"));
    assert!(restarts(&inc).is_empty());
    let kinds = h.kinds(&inc.id).await;
    assert!(kinds.contains(&EntryKind::Rejected));
}

#[tokio::test]
async fn a_denied_step_stops_the_plan_and_pages() {
    let h = Harness::new(vec![("run-a", common::spike_fault())], |cfg| {
        cfg.policy
            .modes
            .insert(ActionKind::PatchConfig, Mode::Never);
    })
    .await;
    assert!(h.until_finished(3.0 * 3600.0).await);
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.state, IncidentState::Escalated);
    assert!(
        inc.outcome.as_ref().unwrap().contains("policy refused"),
        "{:?}",
        inc.outcome
    );
    // The restart after the refused patch never ran.
    assert!(restarts(&inc).is_empty());
    let entries = h.entries(&inc.id).await;
    let denial = entries
        .iter()
        .find(|e| e.kind == EntryKind::Decision && e.payload["verdict"] == "deny")
        .expect("the denial is in the audit log");
    assert_eq!(denial.payload["rule"], "mode_never");
    assert!(!entries.iter().any(|e| e.kind == EntryKind::ActionIntent
        && e.payload["action"]["type"] == "restart_from_checkpoint"));
    assert_eq!(h.pager.sent().len(), 1);
}

#[tokio::test]
async fn the_circuit_breaker_stops_a_restart_storm() {
    let h = Harness::new(vec![("run-b", common::hang_fault(10))], |cfg| {
        cfg.policy.limits = vec![RateLimit {
            action: ActionKind::RestartFromCheckpoint,
            max: 1,
            window: Duration::from_secs(6 * 3600),
        }];
    })
    .await;
    assert!(h.until_finished(6.0 * 3600.0).await);
    let inc = h.incidents_of("run-b").remove(0);
    assert_eq!(inc.state, IncidentState::Escalated);
    assert_eq!(
        restarts(&inc).len(),
        1,
        "the breaker allows exactly one restart"
    );
    assert!(
        inc.decisions
            .iter()
            .any(|(k, d)| *k == ActionKind::RestartFromCheckpoint && d.rule == "circuit_breaker"),
        "{:#?}",
        inc.decisions
    );
}

#[tokio::test]
async fn healthy_runs_raise_nothing() {
    let h = Harness::new(vec![("run-h", vec![])], |_| {}).await;
    h.until(4.0 * 3600.0, |_| false).await;
    let view = h.engine.view();
    assert!(view.incidents.is_empty(), "{:#?}", view.incidents);
    assert_eq!(view.watches[0].status, "running");
    assert!(h.pager.sent().is_empty());
}

#[tokio::test]
async fn the_demo_story_runs_end_to_end() {
    let clock = babysitter::clock::ManualClock::new(common::ORIGIN);
    let shared: babysitter::clock::SharedClock = clock.clone();
    let (sim, watches) = babysitter::demo::scenario(shared.clone(), common::ORIGIN, 7).unwrap();
    let cfg = babysitter::config::Config {
        watches,
        ..Default::default()
    };
    let h = Harness::with_parts(cfg, shared, clock, sim.clone(), sim, |_| {}).await;
    assert!(h.until_approval_pending().await);
    let id = h.incidents_of("run-c")[0].pending.clone().unwrap().id;
    h.engine.approve(&id, "demo", None).await.unwrap();
    let all_done = h
        .until(2.0 * 3600.0, |v| {
            v.incidents.len() >= 3 && v.incidents.values().all(|i| i.state.is_final())
        })
        .await;
    let view = h.engine.view();
    assert!(all_done, "{:#?}", view.incidents);
    for run in ["run-a", "run-b", "run-c"] {
        let incs = h.incidents_of(run);
        assert_eq!(incs.len(), 1, "{run}: {incs:#?}");
        assert_eq!(
            incs[0].state,
            IncidentState::Resolved,
            "{run}: {:#?}",
            incs[0]
        );
    }
    let runbooks: Vec<String> = ["run-a", "run-b", "run-c"]
        .iter()
        .map(|r| {
            h.incidents_of(r)[0]
                .diagnosis
                .as_ref()
                .unwrap()
                .runbook
                .clone()
        })
        .collect();
    assert_eq!(runbooks, ["loss-spike", "hang", "gpu-hardware-error"]);
    let report = h.audit.verify().await.unwrap();
    assert!(report.ok(), "{report}");
}

#[tokio::test]
async fn a_restart_without_the_lr_patch_trains_into_the_spike_again_and_escalates() {
    // The same runbook without its `patch_config lr × 0.5` step.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("runbooks").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path.file_name().unwrap() == "loss-spike.md" {
                text = text.replace(
                    "  - action: patch_config\n    changes: [{key: lr, scale: 0.5}]\n",
                    "",
                );
                assert!(
                    !text.contains("patch_config\n"),
                    "the test must remove the patch step"
                );
            }
            std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let runbooks = dir.path().to_path_buf();
    let h = Harness::new(vec![("run-a", common::spike_fault())], move |cfg| {
        cfg.runbooks_dir = Some(runbooks)
    })
    .await;
    assert!(h.until_finished(3.0 * 3600.0).await);
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.state, IncidentState::Escalated, "{inc:#?}");
    assert!(
        !inc.actions
            .iter()
            .any(|a| a.action.kind() == ActionKind::PatchConfig)
    );
    assert_eq!(restarts(&inc).len(), 1);
    let outcome = inc.outcome.clone().unwrap();
    assert!(
        outcome.contains("loss_spike came back") || outcome.contains("relapsed"),
        "{outcome}"
    );
    let pages = h.pager.sent();
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0].summary.contains("needs a human"),
        "{:#?}",
        pages[0]
    );
}

/// The demo's story on tokio's paused clock: the engine reads a 60× `ScaledClock`, and the test
/// moves tokio's time one poll interval (0.5 s of wall time) at a time (see `Harness::tick`).
#[tokio::test]
async fn the_demo_story_on_paused_tokio_time() {
    let clock = babysitter::clock::ScaledClock::new(common::ORIGIN, 60.0);
    let shared: babysitter::clock::SharedClock = std::sync::Arc::new(clock);
    let (sim, watches) = babysitter::demo::scenario(shared.clone(), common::ORIGIN, 7).unwrap();
    let cfg = babysitter::config::Config {
        watches,
        ..Default::default()
    };
    let manual = babysitter::clock::ManualClock::new(0.0);
    let mut h = Harness::with_parts(cfg, shared.clone(), manual, sim.clone(), sim, |_| {}).await;
    h.paused = Some(clock);
    assert!(h.until_approval_pending().await);
    let id = h.incidents_of("run-c")[0].pending.clone().unwrap().id;
    h.engine.approve(&id, "demo", None).await.unwrap();
    assert!(
        h.until(2.0 * 3600.0, |v| v.incidents.len() >= 3
            && v.incidents.values().all(|i| i.state.is_final()))
            .await
    );
    for run in ["run-a", "run-b", "run-c"] {
        assert_eq!(
            h.incidents_of(run)[0].state,
            IncidentState::Resolved,
            "{run}"
        );
    }
    // Simulated time went by at 60× tokio's (paused) time.
    let elapsed = shared.now() - common::ORIGIN;
    assert!(elapsed > 19.0 * 60.0, "{elapsed}");
}

#[tokio::test]
async fn a_restarted_babysitter_continues_its_incidents() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    assert!(h.until_approval_pending().await);
    let before = h.incidents_of("run-c").remove(0);
    let pending = before.pending.clone().unwrap().id;

    // A second babysitter on the same database (the first one is gone), same workload.
    let shared: babysitter::clock::SharedClock = h.clock.clone();
    let cfg = h.cfg.clone();
    let audit = std::sync::Arc::new(
        babysitter::audit::AuditLog::open(&cfg.audit_url())
            .await
            .unwrap(),
    );
    let handles = babysitter::engine::Handles {
        clock: shared,
        source: h.sim.clone(),
        actuator: h.sim.clone(),
        pager: h.pager.clone(),
        audit: audit.clone(),
        runbooks: std::sync::Arc::new(babysitter::runbook::RunbookSet::embedded()),
        checks: None,
    };
    let engine2 = babysitter::engine::Engine::new(
        std::sync::Arc::new(cfg),
        handles,
        std::sync::Arc::new(babysitter::telemetry::Metrics::new()),
    );
    assert_eq!(engine2.restore().await.restored.len(), 1);
    engine2.start("test").await;
    let restored = engine2.view().incidents.remove(&before.id).unwrap();
    assert_eq!(restored.state, IncidentState::AwaitingApproval);
    assert_eq!(
        restored.actions, before.actions,
        "what was done is remembered"
    );
    engine2.approve(&pending, "alice", None).await.unwrap();
    for _ in 0..120 {
        h.clock.advance(30.0);
        engine2.tick().await;
    }
    let after = engine2.view().incidents.remove(&before.id).unwrap();
    assert_eq!(after.state, IncidentState::Resolved, "{after:#?}");
    // The pause was not repeated: one pause, one restart in all.
    let kinds: Vec<_> = after.actions.iter().map(|a| a.action.kind()).collect();
    assert_eq!(
        kinds,
        [ActionKind::Pause, ActionKind::RestartFromCheckpoint]
    );
    // New incidents do not reuse the ids of old ones.
    assert!(audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn when_the_audit_log_cannot_be_written_nothing_acts() {
    let h = Harness::new(vec![("run-b", common::hang_fault(0))], |_| {}).await;
    // Someone fills the disk: every insert into the audit log fails from now on.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&h.cfg.audit_url()).await.unwrap();
    sqlx::query("CREATE TRIGGER no_space BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&pool)
        .await
        .unwrap();
    h.until(3600.0, |_| false).await;
    let status = h.sim.status("run-b").unwrap();
    assert_eq!(
        status.restarts, 0,
        "babysitter acted without an audit record: {status:?}"
    );
    let incs = h.incidents_of("run-b");
    assert_eq!(incs.len(), 1);
    assert!(
        incs[0]
            .actions
            .iter()
            .all(|a| !a.action.kind().mutates_workload()),
        "{:#?}",
        incs[0].actions
    );
    assert!(
        incs[0]
            .decisions
            .iter()
            .any(|(_, d)| d.rule == "audit_unavailable"),
        "{:#?}",
        incs[0].decisions
    );
    assert!(!h.audit.is_healthy());
    assert!(
        h.engine
            .metrics()
            .encode()
            .contains("babysitter_audit_healthy 0")
    );
}

/// A source that fails while `down` is set.
struct Flaky {
    inner: std::sync::Arc<babysitter::sim::SimCluster>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl babysitter::sources::MetricsSource for Flaky {
    async fn poll(
        &self,
        requests: &[babysitter::sources::PollRequest],
        now: f64,
    ) -> Vec<Result<babysitter::sources::ChartBatch, babysitter::sources::SourceError>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return requests
                .iter()
                .map(|_| {
                    Err(babysitter::sources::SourceError::Unavailable(
                        "connection refused".into(),
                    ))
                })
                .collect();
        }
        self.inner.poll(requests, now).await
    }
}

#[tokio::test]
async fn a_blind_watch_detects_nothing_and_does_nothing_until_it_sees_again() {
    let clock = babysitter::clock::ManualClock::new(common::ORIGIN);
    let shared: babysitter::clock::SharedClock = clock.clone();
    let sim = std::sync::Arc::new(babysitter::sim::SimCluster::new(shared.clone(), 7));
    let mut spec = babysitter::sim::SimRunSpec::new("run-b", common::ORIGIN - HISTORY);
    spec.faults = common::hang_fault(0);
    sim.add_run(spec).unwrap();
    let flaky = std::sync::Arc::new(Flaky {
        inner: sim.clone(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let cfg = babysitter::config::Config {
        watches: vec![common::watch("run-b")],
        ..Default::default()
    };
    let h = Harness::with_parts(cfg, shared, clock, sim.clone(), flaky.clone(), |_| {}).await;
    h.until(300.0, |_| false).await;
    assert_eq!(h.engine.view().watches[0].status, "running");
    // The source goes down before the hang; it stays down for an hour of run time.
    flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
    h.until(3600.0, |_| false).await;
    let w = h.engine.view().watches[0].clone();
    assert_eq!(w.status, "blind");
    assert!(w.source_error.unwrap().contains("connection refused"));
    assert!(
        h.engine.view().incidents.is_empty(),
        "missing data is not an anomaly of the run"
    );
    assert_eq!(h.sim.status("run-b").unwrap().restarts, 0);
    assert!(
        h.engine
            .metrics()
            .encode()
            .contains("babysitter_watch_blind{run=\"run-b\"} 1")
    );
    // A long blindness is worth a page (one, under its own dedup key)…
    let pages = h.pager.sent();
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert_eq!(pages[0].dedup_key, "babysitter/blind/run-b");
    assert_eq!(pages[0].action, PageAction::Trigger);
    assert!(pages[0].summary.contains("blind"), "{}", pages[0].summary);
    // Sight returns: the hang is now visible and handled.
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(h.until_finished(3600.0).await);
    assert_eq!(h.incidents_of("run-b")[0].state, IncidentState::Resolved);
    assert_eq!(h.engine.view().watches[0].status, "running");
    // …resolved when sight returns.
    let last = h
        .pager
        .sent()
        .into_iter()
        .rfind(|p| p.dedup_key == "babysitter/blind/run-b")
        .unwrap();
    assert_eq!(last.action, PageAction::Resolve);
}

/// A pager whose receiver does not answer until the test lets it (`gate`).
struct GatedPager {
    entered: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl babysitter::notify::Pager for GatedPager {
    fn name(&self) -> &str {
        "gated"
    }
    async fn send(
        &self,
        _page: &babysitter::notify::Page,
    ) -> Result<(), babysitter::notify::PageError> {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_slow_pager_does_not_hold_up_the_loop_and_its_delivery_is_recorded() {
    let h = Harness::new(vec![("run-c", common::xid_fault())], |_| {}).await;
    let pager = std::sync::Arc::new(GatedPager {
        entered: Default::default(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let handles = babysitter::engine::Handles {
        pager: pager.clone(),
        ..h.engine.handles().clone()
    };
    let engine = babysitter::engine::Engine::new(
        std::sync::Arc::new(h.cfg.clone()),
        handles,
        std::sync::Arc::new(babysitter::telemetry::Metrics::new()),
    );
    // The receiver does not answer at all while the loop runs: a tick that waited for it would
    // never return (the timeout is only there to fail instead of hanging).
    let ticks = async {
        for _ in 0..120 {
            h.clock.advance(30.0);
            engine.tick().await;
            if engine
                .view()
                .incidents
                .values()
                .any(|i| i.state == IncidentState::AwaitingApproval)
            {
                return true;
            }
        }
        false
    };
    let paged = tokio::time::timeout(std::time::Duration::from_secs(120), ticks)
        .await
        .expect("the tick waited for the pager");
    assert!(paged);
    assert_eq!(
        pager.entered.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the page is on its way, unanswered, while the loop went on"
    );
    let id = engine.view().incidents.values().next().unwrap().id.clone();
    let pages = |entries: Vec<babysitter::audit::Entry>| {
        entries
            .into_iter()
            .filter(|e| e.kind == EntryKind::Page)
            .collect::<Vec<_>>()
    };
    let first = pages(h.entries(&id).await);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].payload["pending"], true);
    // The receiver answers: the late delivery is recorded.
    pager.gate.add_permits(1);
    let mut all = Vec::new();
    for _ in 0..600 {
        all = pages(h.entries(&id).await);
        if all.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[1].payload["late_delivery"], true);
    assert_eq!(all[1].payload["delivered"], true);
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn restart_with_approval_shows_what_it_throws_away() {
    // A loss spike; restarts need a human here. The loss-spike runbook goes back to the
    // checkpoint before the onset, so the steps since then are redone.
    let h = Harness::new(vec![("run-a", common::spike_fault())], |c| {
        c.policy
            .modes
            .insert(ActionKind::RestartFromCheckpoint, Mode::Approve);
    })
    .await;
    assert!(h.until_approval_pending().await);
    let inc = h.incidents_of("run-a").remove(0);
    let pending = inc.pending.clone().unwrap();
    let Action::RestartFromCheckpoint {
        checkpoint: CheckpointSelector::Step(to),
    } = pending.action
    else {
        panic!("a restart to a resolved checkpoint: {:?}", pending.action)
    };
    let cost = pending.rollback.clone().expect("the rollback cost");
    let step_now = h.engine.view().watches[0].latest["step"].expect("a step") as u64;
    assert_eq!((cost.from_step, cost.to_step), (step_now, to));
    assert_eq!(cost.steps, step_now - to);
    assert!(cost.steps > 0, "{cost:?}");
    // The time those steps took on the run's own step chart (the simulator steps every
    // ~2.2 s): not an estimate, and within a few seconds per step of it.
    let secs = cost.secs.expect("the time those steps took");
    assert!(!cost.estimated);
    let per_step = secs / cost.steps as f64;
    assert!(
        (1.0..5.0).contains(&per_step),
        "{per_step} s per step: {cost:?}"
    );
    let page = h
        .pager
        .sent()
        .into_iter()
        .find(|p| p.approve_command.is_some())
        .expect("approval page");
    assert!(
        page.summary.contains(&format!(
            "It rolls back {} steps ({step_now} → {to}), {} of training.",
            cost.steps,
            babysitter::clock::fmt_span(secs)
        )),
        "{}",
        page.summary
    );
    let decisions: Vec<_> = h
        .entries(&inc.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Decision && e.payload["rollback"].is_object())
        .collect();
    assert_eq!(
        decisions.len(),
        1,
        "the restart's decision carries the cost"
    );
    assert_eq!(
        decisions[0].payload["rollback"]["steps"],
        serde_json::json!(cost.steps)
    );
}
