//! A watched workload suspended or resumed by someone other than babysitter (a human with
//! kubectl, Kueue), as the engine hears of it from discovery (`Engine::observe_suspension`):
//! held, released, resumed outside babysitter, and babysitter's own pause echoed back. Stepped
//! one poll at a time on the simulator and a manual clock.

mod common;

use babysitter::act::ActionKind;
use babysitter::audit::{Entry, EntryKind, Filter};
use babysitter::clock::Clock;
use babysitter::detect::Family;
use babysitter::engine::{EventKind, HELD_RULE, SuspendedBy};
use babysitter::incident::IncidentState;
use common::Harness;
use serde_json::json;

async fn suspension_entries(h: &Harness, run: &str) -> Vec<Entry> {
    h.audit
        .query(&Filter {
            run: Some(run.to_string()),
            kind: Some(EntryKind::WorkloadSuspension),
            limit: Some(1000),
            ..Filter::default()
        })
        .await
        .unwrap()
}

fn status(h: &Harness, run: &str) -> String {
    h.engine
        .view()
        .watches
        .into_iter()
        .find(|w| w.run == run)
        .map(|w| w.status)
        .unwrap_or_else(|| panic!("no watch {run}"))
}

/// Events of the kind seen so far on `rx`.
fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<babysitter::engine::Event>,
    kind: EventKind,
) -> Vec<babysitter::engine::Event> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if ev.kind == kind {
            out.push(ev);
        }
    }
    out
}

#[tokio::test]
async fn a_run_held_by_someone_else_is_quiet_until_released() {
    // Both runs hang 10 minutes in; only `held` was suspended by a human first.
    let h = Harness::new(
        vec![
            ("held", common::hang_fault(9)),
            ("control", common::hang_fault(9)),
        ],
        |_| {},
    )
    .await;
    let mut events = h.engine.subscribe();
    h.tick().await;
    assert!(
        h.engine
            .observe_suspension("held", true, SuspendedBy::Outside)
            .await
    );
    assert!(
        !h.engine
            .observe_suspension("nobody", true, SuspendedBy::Outside)
            .await,
        "an unwatched run is not reported"
    );
    h.tick().await;
    assert_eq!(status(&h, "held"), "held");
    let view = h.engine.view();
    let w = view.watches.iter().find(|w| w.run == "held").unwrap();
    let held = w.held.clone().expect("who holds it");
    assert_eq!(held.by, SuspendedBy::Outside);
    assert_eq!(held.since, h.clock.now());
    assert_eq!(status(&h, "control"), "running");
    let entries = suspension_entries(&h, "held").await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].payload["change"], json!("held"));
    assert_eq!(entries[0].payload["suspended"], json!(true));
    assert_eq!(entries[0].payload["by"], json!({"holder": "outside"}));
    assert_eq!(entries[0].payload["babysitter_paused"], json!(false));
    let evs = drain(&mut events, EventKind::WorkloadSuspension);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].run, "held");
    assert!(evs[0].text.contains("held"), "{}", evs[0].text);

    // The same report again (discovery re-lists after a reconnect) changes nothing.
    h.engine
        .observe_suspension("held", true, SuspendedBy::Outside)
        .await;
    // An hour: the control run's step chart stops and it gets a stall incident; the held run's
    // stops too, and nothing is reported or done on it.
    let stalled = h
        .until(3600.0, |v| {
            v.incidents
                .values()
                .any(|i| i.run == "control" && i.family == Family::Progress)
        })
        .await;
    assert!(
        stalled,
        "the hang is visible: {:#?}",
        h.incidents_of("control")
    );
    for _ in 0..40 {
        h.tick().await;
    }
    assert!(
        h.incidents_of("held").is_empty(),
        "{:#?}",
        h.incidents_of("held")
    );
    let view = h.engine.view();
    let w = view.watches.iter().find(|w| w.run == "held").unwrap();
    assert!(w.active_findings.is_empty(), "{:?}", w.active_findings);
    assert_eq!(w.status, "held");
    assert_eq!(suspension_entries(&h, "held").await.len(), 1);
    assert!(drain(&mut events, EventKind::WorkloadSuspension).is_empty());

    // The human resumes it: released, and watched as a new start of the run (the restart grace
    // applies, as after babysitter's own resume).
    let held_since = held.since;
    h.engine
        .observe_suspension("held", false, SuspendedBy::Outside)
        .await;
    h.tick().await;
    assert_eq!(status(&h, "held"), "running");
    let view = h.engine.view();
    assert!(view.watches.iter().all(|w| w.held.is_none()));
    let entries = suspension_entries(&h, "held").await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[1].payload["change"], json!("released"));
    assert_eq!(entries[1].payload["suspended"], json!(false));
    assert_eq!(entries[1].payload["held_since"], json!(held_since));
    let evs = drain(&mut events, EventKind::WorkloadSuspension);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(evs[0].text.contains("running again"), "{}", evs[0].text);
    assert!(suspension_entries(&h, "control").await.is_empty());
}

#[tokio::test]
async fn babysitter_s_own_pause_echoed_back_is_consistent_and_a_resume_outside_is_noted() {
    // GPU Xid errors: the gpu-hardware-error runbook pauses the run, then asks before restarting.
    let h = Harness::new(vec![("run-a", common::xid_fault())], |_| {}).await;
    // Discovery's first report: running.
    h.engine
        .observe_suspension("run-a", false, SuspendedBy::Outside)
        .await;
    let mut events = h.engine.subscribe();
    assert!(h.until_approval_pending().await);
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.actions[0].action.kind(), ActionKind::Pause);
    assert_eq!(status(&h, "run-a"), "paused");
    // The report from before the pause is not taken for a resume.
    h.tick().await;
    h.tick().await;
    assert_eq!(status(&h, "run-a"), "paused");
    assert!(suspension_entries(&h, "run-a").await.is_empty());

    // The watch stream echoes babysitter's own pause: consistent, nothing recorded.
    h.engine
        .observe_suspension("run-a", true, SuspendedBy::Outside)
        .await;
    h.tick().await;
    h.tick().await;
    assert_eq!(status(&h, "run-a"), "paused");
    assert!(suspension_entries(&h, "run-a").await.is_empty());
    assert!(drain(&mut events, EventKind::WorkloadSuspension).is_empty());

    // A human resumes it with kubectl: no longer paused, the incident is left to the human.
    h.engine
        .observe_suspension("run-a", false, SuspendedBy::Outside)
        .await;
    h.tick().await;
    assert_eq!(status(&h, "run-a"), "running");
    let entries = suspension_entries(&h, "run-a").await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].payload["change"], json!("resumed_outside"));
    assert_eq!(entries[0].payload["babysitter_paused"], json!(true));
    assert_eq!(entries[0].payload["open_incidents"], json!([inc.id]));
    let evs = drain(&mut events, EventKind::WorkloadSuspension);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(
        evs[0].text.contains("resumed outside babysitter")
            && evs[0]
                .text
                .contains(&format!("open incidents ({})", inc.id))
            && evs[0].text.contains("a human took over"),
        "{}",
        evs[0].text
    );
    let now = h.incidents_of("run-a").remove(0);
    assert_eq!(now.state, IncidentState::AwaitingApproval);
    assert_eq!(now.pending.map(|p| p.id), inc.pending.map(|p| p.id));
    assert_eq!(
        now.actions.len(),
        1,
        "nothing more was done: {:#?}",
        now.actions
    );
    // And once: the same report again records nothing more.
    h.engine
        .observe_suspension("run-a", false, SuspendedBy::Outside)
        .await;
    h.tick().await;
    assert_eq!(suspension_entries(&h, "run-a").await.len(), 1);
}

#[tokio::test]
async fn a_held_run_s_workload_changes_wait_for_a_human() {
    let h = Harness::new(vec![("run-a", common::xid_fault())], |_| {}).await;
    h.tick().await;
    let kueue = SuspendedBy::Kueue {
        queue: "gpu-a100".into(),
    };
    h.engine
        .observe_suspension("run-a", true, kueue.clone())
        .await;
    h.tick().await;
    assert_eq!(status(&h, "run-a"), "held");
    // The Xid errors still raise an incident (hardware is not a progress detector), and its
    // runbook would pause the run on its own: held, the pause waits for a human instead.
    assert!(h.until_approval_pending().await);
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(
        inc.diagnosis.as_ref().unwrap().runbook,
        "gpu-hardware-error"
    );
    assert!(inc.actions.is_empty(), "{:#?}", inc.actions);
    let pending = inc.pending.clone().unwrap();
    assert_eq!(pending.action.kind(), ActionKind::Pause);
    assert_eq!(pending.decision.rule, HELD_RULE);
    assert!(
        pending
            .decision
            .reason
            .contains("held suspended by Kueue (queue `gpu-a100`)"),
        "{}",
        pending.decision.reason
    );
    let decisions: Vec<Entry> = h
        .entries(&inc.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Decision)
        .collect();
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    assert_eq!(decisions[0].payload["rule"], json!(HELD_RULE));
    assert_eq!(decisions[0].payload["verdict"], json!("needs_approval"));
    assert!(
        !h.kinds(&inc.id).await.contains(&EntryKind::ActionIntent),
        "nothing ran"
    );
    // A human approves: the pause runs, through the policy gate again.
    h.engine
        .approve(&pending.id, "alice", Some("drain first".into()))
        .await
        .unwrap();
    h.tick().await;
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.actions.len(), 1, "{inc:#?}");
    assert!(inc.actions[0].ok);
    assert_eq!(inc.actions[0].action.kind(), ActionKind::Pause);
    assert_ne!(inc.actions[0].decision.rule, HELD_RULE);
    assert_eq!(status(&h, "run-a"), "paused");
}

#[tokio::test]
async fn verification_waits_out_a_hold_and_starts_again_when_released() {
    // A hang that a restart cures: the hang runbook restarts the run and verifies progress.
    let h = Harness::new(vec![("run-a", common::hang_fault(0))], |_| {}).await;
    let verifying = h
        .until(3600.0, |v| {
            v.incidents
                .values()
                .any(|i| i.state == IncidentState::Verifying)
        })
        .await;
    assert!(verifying, "{:#?}", h.incidents_of("run-a"));
    // A human suspends the workload to look at it, mid-verification.
    h.engine
        .observe_suspension("run-a", true, SuspendedBy::Outside)
        .await;
    h.tick().await;
    assert_eq!(status(&h, "run-a"), "held");
    // Two hours, far past the runbook's verification window: a held run is not judged, so the
    // incident neither resolves nor fails (the simulator keeps stepping: without the wait it
    // would have counted as recovered while suspended).
    for _ in 0..240 {
        h.tick().await;
    }
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.state, IncidentState::Verifying, "{inc:#?}");
    assert_eq!(inc.attempt, 1, "no retry while held");
    match &inc.verification {
        Some(babysitter::verify::VerifyStatus::Pending(why)) => {
            assert!(
                why.contains("held suspended by someone outside babysitter"),
                "{why}"
            )
        }
        other => panic!("expected a pending verification, got {other:?}"),
    }
    let verdicts: Vec<Entry> = h
        .entries(&inc.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Verification && e.payload["status"] != json!("started"))
        .collect();
    assert!(verdicts.is_empty(), "no verdict while held: {verdicts:#?}");

    // Released: verification starts again from now, with the runbook's whole window.
    h.engine
        .observe_suspension("run-a", false, SuspendedBy::Outside)
        .await;
    h.tick().await;
    let released_at = h.clock.now();
    let entries = suspension_entries(&h, "run-a").await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[1].payload["change"], json!("released"));
    assert_eq!(
        entries[1].payload["verification_restarted"],
        json!([inc.id])
    );
    assert!(
        entries[1].payload["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("verification of {} starts again", inc.id))),
        "{}",
        entries[1].payload["text"]
    );
    let inc = h.incidents_of("run-a").remove(0);
    assert_eq!(inc.verify_since, Some(released_at));
    let resolved = h
        .until(3600.0, |v| {
            v.incidents
                .values()
                .any(|i| i.state == IncidentState::Resolved)
        })
        .await;
    assert!(resolved, "{:#?}", h.incidents_of("run-a"));
    assert!(h.clock.now() - released_at >= 60.0);
}
