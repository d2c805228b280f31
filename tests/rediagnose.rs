//! Re-diagnosis on the simulator: a finding that joins an incident and calls for a runbook of
//! higher priority replaces the plan while none of its actions has run (withdrawing the pending
//! approval, which was for the old plan), and never once one has.
//!
//! The scenario: a bad-data loss spike 10 min into the harness's time (detected on the poll at
//! +630 s), then the loss turns NaN 15 s later (detected on the next poll, +660 s). `loss-spike`
//! has priority 50, `nonfinite` 80.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use babysitter::act::{Action, ActionKind};
use babysitter::audit::{Entry, EntryKind};
use babysitter::detect::FindingKind;
use babysitter::engine::ApprovalError;
use babysitter::incident::{Incident, IncidentState};
use babysitter::notify::PageAction;
use babysitter::policy::Mode;
use babysitter::sim::Fault;
use common::{HISTORY, Harness};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A loss spike at +600 s, and NaN in the loss and grad norm from +645 s on.
fn spike_then_nan() -> Vec<Fault> {
    vec![
        Fault::LossSpike {
            at: HISTORY + 600.0,
            span_steps: 40,
        },
        Fault::Nan {
            at: HISTORY + 645.0,
            steps: 1000,
        },
    ]
}

/// Ticks until the loss-spike incident exists and has a diagnosis, returns it.
async fn until_diagnosed(h: &Harness) -> Incident {
    assert!(
        h.until(1800.0, |v| v
            .incidents
            .values()
            .any(|i| i.diagnosis.is_some()))
            .await,
        "no incident was diagnosed"
    );
    h.incidents_of("run-a").remove(0)
}

fn runbook(inc: &Incident) -> &str {
    inc.diagnosis.as_ref().map_or("", |d| d.runbook.as_str())
}

/// The audit entries of `kind` for `incident`.
async fn entries_of(h: &Harness, incident: &str, kind: EntryKind) -> Vec<Entry> {
    h.entries(incident)
        .await
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

#[tokio::test]
async fn a_nan_after_a_spike_replaces_the_plan_and_voids_the_pending_approval() {
    // Capturing diagnostics needs a human here, so the first step of either plan waits.
    let h = Harness::new(vec![("run-a", spike_then_nan())], |cfg| {
        cfg.policy
            .modes
            .insert(ActionKind::CaptureDiagnostics, Mode::Approve);
        cfg.paging.renotify_max = 0;
    })
    .await;
    let inc = until_diagnosed(&h).await;
    assert_eq!(runbook(&inc), "loss-spike");
    assert_eq!(inc.state, IncidentState::AwaitingApproval);
    assert_eq!(inc.findings[0].kind, FindingKind::LossSpike);
    let old = inc
        .pending
        .clone()
        .expect("the first step waits for a human");
    assert_eq!(old.id, "inc-1-a1-s0");
    assert_eq!(old.action, Action::CaptureDiagnostics);

    // One poll later the loss is NaN.
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert!(
        inc.findings
            .iter()
            .any(|f| f.kind == FindingKind::Nonfinite),
        "{:#?}",
        inc.findings
    );
    assert_eq!(runbook(&inc), "nonfinite", "{inc:#?}");
    assert_eq!(inc.revision, 1);
    let plan: Vec<ActionKind> = inc
        .diagnosis
        .as_ref()
        .unwrap()
        .plan
        .steps
        .iter()
        .map(|s| s.action.kind())
        .collect();
    assert_eq!(
        plan,
        [
            ActionKind::CaptureDiagnostics,
            ActionKind::RestartFromCheckpoint
        ]
    );
    // The new plan went through the policy gate from its first step, under a new id.
    assert_eq!(inc.state, IncidentState::AwaitingApproval);
    assert!(inc.actions.is_empty(), "{:#?}", inc.actions);
    let new = inc.pending.clone().unwrap();
    assert_eq!(new.id, "inc-1-p2-a1-s0");
    assert_eq!(new.step, 0);
    assert_eq!(new.decision.rule, "approval_mode");
    assert_eq!(inc.withdrawn.len(), 1);
    let w = &inc.withdrawn[0];
    assert_eq!(
        (w.id.as_str(), w.runbook.as_str(), w.replaced_by.as_str()),
        ("inc-1-a1-s0", "loss-spike", "nonfinite")
    );
    assert_eq!(w.approved_by, None);

    // Approving the old plan's action is refused, and says why and what waits now.
    let err = h
        .engine
        .approve(&old.id, "alice", None)
        .await
        .expect_err("an approval of the old plan must not apply");
    assert!(matches!(err, ApprovalError::Withdrawn { .. }), "{err:?}");
    let text = err.to_string();
    for part in [
        "inc-1-a1-s0",
        "withdrawn",
        "re-diagnosed",
        "loss-spike → nonfinite",
        "inc-1-p2-a1-s0",
    ] {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    assert!(h.engine.reject(&old.id, "alice", None).await.is_err());
    // Nothing was recorded for the refused approval, and nothing ran.
    assert!(
        entries_of(&h, &inc.id, EntryKind::Approved)
            .await
            .is_empty()
    );
    assert!(
        entries_of(&h, &inc.id, EntryKind::ActionIntent)
            .await
            .is_empty()
    );

    // The re-diagnosis is on record, with what it replaced and why.
    let diagnoses = entries_of(&h, &inc.id, EntryKind::Diagnosis).await;
    assert_eq!(diagnoses.len(), 2, "{diagnoses:#?}");
    assert!(diagnoses[0].payload.get("rediagnosed").is_none());
    let re = &diagnoses[1].payload;
    assert_eq!(re["rediagnosed"], true);
    assert_eq!(re["previous_runbook"], "loss-spike");
    assert_eq!(re["diagnosis"]["runbook"], "nonfinite");
    assert_eq!(re["reason"]["kind"], "nonfinite");
    assert_eq!(re["revision"], 1);
    assert_eq!(re["withdrawn"]["id"], "inc-1-a1-s0");
    assert!(re["runbook_sha256"].is_string());

    // On-call saw: the approval page, its update saying the plan changed (with no approve
    // command for the old action), then the new plan's approval page — one dedup key.
    let pages = h.pager.sent();
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(pages.iter().all(|p| p.action == PageAction::Trigger));
    assert!(pages.iter().all(|p| p.dedup_key == "babysitter/inc-1"));
    assert!(
        pages[0]
            .approve_command
            .as_ref()
            .unwrap()
            .contains("/actions/inc-1-a1-s0/approve")
    );
    assert!(
        pages[1].summary.contains("plan changed"),
        "{}",
        pages[1].summary
    );
    assert!(
        pages[1]
            .summary
            .contains("`nonfinite` instead of `loss-spike`"),
        "{}",
        pages[1].summary
    );
    assert!(pages[1].approve_command.is_none());
    assert!(
        pages[1]
            .details
            .iter()
            .any(|(k, v)| k == "withdrawn" && v.contains("inc-1-a1-s0")),
        "{:#?}",
        pages[1].details
    );
    assert!(
        pages[2]
            .approve_command
            .as_ref()
            .unwrap()
            .contains("/actions/inc-1-p2-a1-s0/approve")
    );
    // The approval page is about the finding the plan answers.
    assert!(
        pages[2].summary.starts_with("run-a: nonfinite on "),
        "{}",
        pages[2].summary
    );

    // The new plan's action is approved and runs, as approved.
    h.engine.approve(&new.id, "alice", None).await.unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(runbook(&inc), "nonfinite");
    let ran: Vec<(ActionKind, &str)> = inc
        .actions
        .iter()
        .map(|a| (a.action.kind(), a.decision.rule.as_str()))
        .collect();
    assert_eq!(
        ran[0],
        (ActionKind::CaptureDiagnostics, "approved"),
        "{ran:?}"
    );
    assert!(
        inc.actions
            .iter()
            .any(|a| a.action.kind() == ActionKind::RestartFromCheckpoint && a.ok),
        "{ran:?}"
    );
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn an_approval_given_for_the_old_plan_is_not_applied_to_the_new_one() {
    let h = Harness::new(vec![("run-a", spike_then_nan())], |cfg| {
        cfg.policy
            .modes
            .insert(ActionKind::CaptureDiagnostics, Mode::Approve);
        cfg.paging.renotify_max = 0;
    })
    .await;
    let inc = until_diagnosed(&h).await;
    let old = inc.pending.clone().unwrap();
    // A human approves the spike plan's first step; before the loop acts on it, the NaN
    // arrives and the incident is re-diagnosed.
    h.engine.approve(&old.id, "alice", None).await.unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(runbook(&inc), "nonfinite");
    assert!(
        inc.actions.is_empty(),
        "the old approval ran: {:#?}",
        inc.actions
    );
    assert_eq!(inc.withdrawn[0].approved_by.as_deref(), Some("alice"));
    assert_eq!(inc.state, IncidentState::AwaitingApproval);
    assert_eq!(inc.pending.as_ref().unwrap().approved_by, None);
    assert!(
        entries_of(&h, &inc.id, EntryKind::ActionIntent)
            .await
            .is_empty()
    );
    let update = h
        .pager
        .sent()
        .into_iter()
        .find(|p| p.summary.contains("plan changed"))
        .expect("the plan-changed page");
    assert!(
        update
            .summary
            .contains("approved by alice for the old plan will not run"),
        "{}",
        update.summary
    );
    // Approving it again names the withdrawal, not "not found"; over the API it is a 409.
    let err = h.engine.approve(&old.id, "alice", None).await.unwrap_err();
    assert!(matches!(err, ApprovalError::Withdrawn { .. }), "{err:?}");
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/actions/{}/approve", old.id))
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", common::OPERATOR_TOKEN),
        )
        .body(Body::from(json!({"by": "alice"}).to_string()))
        .unwrap();
    let res = babysitter::api::router(h.engine.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("withdrawn") && text.contains("inc-1-p2-a1-s0"),
        "{body}"
    );
    assert_eq!(
        h.incidents_of("run-a")[0]
            .pending
            .as_ref()
            .unwrap()
            .approved_by,
        None
    );
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn once_an_action_ran_a_more_specific_finding_does_not_change_the_plan() {
    // Capturing diagnostics runs by itself; the lr patch waits for a human.
    let h = Harness::new(vec![("run-a", spike_then_nan())], |cfg| {
        cfg.policy
            .modes
            .insert(ActionKind::PatchConfig, Mode::Approve);
        cfg.paging.renotify_max = 0;
    })
    .await;
    let inc = until_diagnosed(&h).await;
    assert_eq!(runbook(&inc), "loss-spike");
    assert_eq!(inc.actions.len(), 1);
    assert_eq!(inc.actions[0].action, Action::CaptureDiagnostics);
    let pending = inc.pending.clone().unwrap();
    assert_eq!(pending.id, "inc-1-a1-s1");

    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert!(
        inc.findings
            .iter()
            .any(|f| f.kind == FindingKind::Nonfinite)
    );
    // The half-done plan stays, and so does its pending approval.
    assert_eq!(runbook(&inc), "loss-spike");
    assert_eq!(inc.revision, 0);
    assert!(inc.withdrawn.is_empty());
    assert_eq!(
        inc.pending.as_ref().map(|p| p.id.as_str()),
        Some("inc-1-a1-s1")
    );
    assert_eq!(entries_of(&h, &inc.id, EntryKind::Diagnosis).await.len(), 1);
    // The joined finding's entry says what it would have picked, and why the plan stayed.
    let joined = entries_of(&h, &inc.id, EntryKind::Finding).await;
    let nan = joined
        .iter()
        .find(|e| e.payload["finding"]["kind"] == "nonfinite")
        .expect("the nonfinite finding is recorded");
    assert_eq!(nan.payload["joined"], true);
    assert_eq!(nan.payload["diagnosis_kept"], true);
    assert_eq!(nan.payload["would_pick"], "nonfinite");
    assert_eq!(nan.payload["runbook"], "loss-spike");
    assert_eq!(
        nan.payload["kept_because"],
        "an action of its plan has already run"
    );
    // The finding that opened the incident carries no such note.
    assert!(joined[0].payload.get("diagnosis_kept").is_none());

    // The approval still applies to the plan it was asked for.
    h.engine.approve(&pending.id, "alice", None).await.unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    let kinds: Vec<ActionKind> = inc.actions.iter().map(|a| a.action.kind()).collect();
    assert_eq!(
        kinds,
        [
            ActionKind::CaptureDiagnostics,
            ActionKind::PatchConfig,
            ActionKind::RestartFromCheckpoint
        ]
    );
    assert_eq!(runbook(&inc), "loss-spike");
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_finding_that_points_to_the_same_runbook_changes_nothing() {
    // A loss spike alone, on a watch that allows only loss-spike and grad-explosion: the
    // grad-norm explosion that follows the spike joins the incident, but grad-explosion ranks
    // below loss-spike (45 < 50), and the divergence that follows matches no allowed runbook.
    let h = Harness::new(vec![("run-a", common::spike_fault())], |cfg| {
        cfg.policy
            .modes
            .insert(ActionKind::CaptureDiagnostics, Mode::Approve);
        cfg.paging.renotify_max = 0;
        cfg.watches[0].runbooks = vec!["loss-spike".into(), "grad-explosion".into()];
    })
    .await;
    let inc = until_diagnosed(&h).await;
    let pending = inc.pending.clone().unwrap();
    assert!(
        h.until(600.0, |v| v.incidents.values().any(|i| i
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::GradExplosion)))
            .await,
        "no grad_explosion joined"
    );
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(runbook(&inc), "loss-spike");
    assert_eq!(inc.revision, 0);
    assert_eq!(inc.pending.as_ref(), Some(&pending));
    assert!(inc.withdrawn.is_empty());
    assert_eq!(entries_of(&h, &inc.id, EntryKind::Diagnosis).await.len(), 1);
    let findings = entries_of(&h, &inc.id, EntryKind::Finding).await;
    assert!(findings.len() >= 2, "{findings:#?}");
    for e in &findings {
        assert!(e.payload.get("diagnosis_kept").is_none(), "{e:#?}");
    }
    // One page: the approval; no "plan changed".
    assert_eq!(h.pager.sent().len(), 1, "{:#?}", h.pager.sent());
    // The old approval is still the one that applies.
    h.engine.approve(&pending.id, "alice", None).await.unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.actions[0].action, Action::CaptureDiagnostics);
    assert_eq!(inc.actions[0].decision.rule, "approved");
    assert!(h.audit.verify().await.unwrap().ok());
}
