//! Every finding kind, end to end: a simulated run is driven into the anomaly, and the test
//! shows the runbook babysitter picked, the checks it answered, the plan, every policy decision
//! and action, and whether verification passed or escalated. Kinds whose detector lands with
//! the detection branch are `#[ignore]`d until then. Also: runbooks executed over HTTP, with
//! and without `dry_run`, with the checks that chose their steps and the audit entries left.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use babysitter::act::{Action, ActionKind};
use babysitter::audit::EntryKind;
use babysitter::detect::FindingKind;
use babysitter::incident::{Incident, IncidentState};
use babysitter::runbook::Outcome;
use babysitter::sim::Fault;
use common::{HISTORY, Harness};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Fault times: 10 minutes into the harness's time.
const AT: f64 = HISTORY + 600.0;

/// What a run driven into one anomaly produced.
struct Driven {
    h: Harness,
    inc: Incident,
}

impl Driven {
    fn runbook(&self) -> &str {
        &self.inc.diagnosis.as_ref().expect("diagnosed").runbook
    }

    fn plan(&self) -> Vec<ActionKind> {
        self.inc
            .diagnosis
            .as_ref()
            .expect("diagnosed")
            .plan
            .steps
            .iter()
            .map(|s| s.action.kind())
            .collect()
    }

    fn done(&self) -> Vec<ActionKind> {
        self.inc.actions.iter().map(|a| a.action.kind()).collect()
    }

    fn check(&self, id: &str) -> Outcome {
        self.inc
            .diagnosis
            .as_ref()
            .expect("diagnosed")
            .checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id}"))
            .outcome
    }

    /// The audit trail of the incident says what happened, in this order.
    async fn assert_audited(&self) {
        let kinds = self.h.kinds(&self.inc.id).await;
        let pos = |k: EntryKind| kinds.iter().position(|x| *x == k);
        let (Some(d), Some(dec)) = (pos(EntryKind::Diagnosis), pos(EntryKind::Decision)) else {
            panic!("no diagnosis or decision in {kinds:?}");
        };
        assert!(d < dec, "{kinds:?}");
        let end = match self.inc.state {
            IncidentState::Resolved => EntryKind::IncidentResolved,
            IncidentState::Escalated => EntryKind::IncidentEscalated,
            other => panic!("not final: {other:?}"),
        };
        assert!(kinds.contains(&end), "{end:?} missing from {kinds:?}");
        assert!(self.h.audit.verify().await.expect("verify").ok());
    }
}

/// Runs one simulated run with `faults`, approving every step that waits for a human, until
/// its first incident is resolved or escalated (at most `max_secs` of run time).
async fn drive(faults: Vec<Fault>, want: FindingKind, max_secs: f64) -> Driven {
    let h = Harness::new(vec![("run", faults)], |_| {}).await;
    let poll = h.cfg.poll_interval.as_secs_f64();
    let mut left = max_secs;
    while left > 0.0 {
        h.tick().await;
        left -= poll;
        let incs = h.incidents_of("run");
        if let Some(inc) = incs.first() {
            if inc.state.is_final() {
                break;
            }
            if let Some(p) = &inc.pending {
                h.engine
                    .approve(&p.id, "alice", Some("test approves".into()))
                    .await
                    .expect("approve");
            }
        }
    }
    let inc = h
        .incidents_of("run")
        .into_iter()
        .next()
        .expect("an incident was opened");
    assert!(
        inc.findings.iter().any(|f| f.kind == want),
        "no {want} finding in {:?}",
        inc.findings
    );
    assert!(inc.state.is_final(), "{inc:#?}");
    Driven { h, inc }
}

use ActionKind::{
    Annotate, CaptureDiagnostics as Capture, Page, PatchConfig as Patch, Pause,
    RestartFromCheckpoint as Restart,
};

// ---------- kinds whose detector exists on this branch ----------

#[tokio::test]
async fn nonfinite_rolls_back_before_onset_and_verifies() {
    let d = drive(
        vec![Fault::Nan {
            at: AT,
            steps: 2000,
        }],
        FindingKind::Nonfinite,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "nonfinite");

    assert_eq!(d.plan(), [Capture, Restart]);
    assert_eq!(d.done(), [Capture, Restart]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn loss_spike_halves_lr_restarts_before_onset_and_verifies() {
    let d = drive(common::spike_fault(), FindingKind::LossSpike, 3.0 * 3600.0).await;
    assert_eq!(d.runbook(), "loss-spike");
    assert_eq!(d.plan(), [Capture, Patch, Restart]);
    assert_eq!(d.done(), [Capture, Patch, Restart]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn stall_captures_then_restarts_and_verifies() {
    let d = drive(common::hang_fault(0), FindingKind::Stall, 3.0 * 3600.0).await;
    assert_eq!(d.runbook(), "hang");
    assert_eq!(d.plan(), [Capture, Restart]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn stall_that_survives_restarts_is_tried_three_times_then_escalated() {
    let d = drive(common::hang_fault(10), FindingKind::Stall, 8.0 * 3600.0).await;
    assert_eq!(d.runbook(), "hang");
    assert_eq!(d.inc.state, IncidentState::Escalated);
    assert_eq!(d.inc.attempt, 3);
    assert_eq!(d.done().iter().filter(|k| **k == Restart).count(), 3);
    let pages = d.h.pager.sent();
    assert!(
        pages.iter().any(|p| p.summary.contains("needs a human")),
        "{:?}",
        pages.iter().map(|p| &p.summary).collect::<Vec<_>>()
    );
    d.assert_audited().await;
}

#[tokio::test]
async fn gpu_hardware_error_pauses_and_restarts_elsewhere_after_approval() {
    let d = drive(
        common::xid_fault(),
        FindingKind::GpuHardwareError,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "gpu-hardware-error");
    assert_eq!(d.plan(), [Pause, Restart]);
    assert_eq!(d.done(), [Pause, Restart]);
    let restart = d
        .inc
        .actions
        .iter()
        .find(|a| a.action.kind() == Restart)
        .expect("restart");
    assert_eq!(restart.decision.rule, "approved");
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn throughput_drop_pages_and_verifies_when_it_clears() {
    let d = drive(
        vec![Fault::ThroughputDrop {
            at: AT,
            factor: 0.5,
            duration: 1800.0,
        }],
        FindingKind::ThroughputDrop,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "throughput-drop");
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

// ---------- kinds whose detector lands with the detection branch ----------

#[tokio::test]
async fn loss_divergence_rolls_back_with_a_gentler_lr_when_gradients_are_calm() {
    let d = drive(
        vec![Fault::LossDivergence { at: AT }],
        FindingKind::LossDivergence,
        4.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "loss-divergence");
    // The simulated divergence raises the gradient norm ×3–10 of ≈0.45: below 10.
    assert_eq!(d.check("grad_norm_high"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Page, Patch, Restart]);
    let patch = d
        .inc
        .actions
        .iter()
        .find(|a| a.action.kind() == Patch)
        .expect("patch");
    assert!(patch.action.to_string().contains("0.8"), "{}", patch.action);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn grad_explosion_the_loss_does_not_follow_is_annotated_and_clears() {
    let d = drive(
        vec![Fault::GradExplosion { at: AT, steps: 200 }],
        FindingKind::GradExplosion,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "grad-explosion");
    assert_eq!(d.check("loss_followed"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Annotate]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn loss_scale_collapse_rolls_back_with_half_lr() {
    let d = drive(
        vec![Fault::LossScaleCollapse { at: AT }],
        FindingKind::LossScaleCollapse,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "loss-scale-collapse");
    let want: Vec<ActionKind> = match d.check("at_floor") {
        Outcome::True => vec![Capture, Page, Patch, Restart],
        _ => vec![Capture, Patch, Restart],
    };
    assert_eq!(d.plan(), want);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    assert_eq!(d.h.sim.status("run").expect("run").restarts, 1);
    d.assert_audited().await;
}

#[tokio::test]
async fn loss_plateau_only_pages_and_escalates_while_it_holds() {
    let d = drive(
        vec![Fault::LossPlateau { at: AT }],
        FindingKind::LossPlateau,
        12.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "loss-plateau");
    assert_eq!(d.check("lr_near_zero"), Outcome::False);
    assert_eq!(d.plan(), [Annotate, Page]);
    assert!(d.done().iter().all(|k| !k.mutates_workload()));
    assert_eq!(d.inc.state, IncidentState::Escalated);
    d.assert_audited().await;
}

#[tokio::test]
async fn eval_regression_pages_before_rotation_and_escalates_while_it_holds() {
    let d = drive(
        vec![Fault::EvalRegression { at: AT }],
        FindingKind::EvalRegression,
        8.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "eval-regression");
    assert_eq!(d.check("train_loss_finite"), Outcome::True);
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Escalated);
    d.assert_audited().await;
}

#[tokio::test]
async fn lr_anomaly_without_a_restart_pages_for_a_review() {
    let d = drive(
        vec![Fault::LrAnomaly {
            at: AT,
            factor: 10.0,
        }],
        FindingKind::LrAnomaly,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "lr-anomaly");
    assert_eq!(d.check("restarted_recently"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Escalated);
    d.assert_audited().await;
}

#[tokio::test]
async fn metrics_absent_pages_and_resolves_when_charts_return() {
    let d = drive(
        vec![Fault::MetricsAbsent {
            at: AT,
            duration: 1200.0,
        }],
        FindingKind::MetricsAbsent,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "metrics-absent");
    // No Prometheus here: the checks that only PromQL answers are unknown → the generic page.
    assert_eq!(d.check("gpu_series_gone"), Outcome::Unknown);
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn straggler_without_hardware_errors_pages_and_escalates_while_it_holds() {
    let d = drive(
        vec![Fault::Straggler {
            at: AT,
            rank: 2,
            factor: 1.8,
        }],
        FindingKind::Straggler,
        4.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "straggler");
    assert_eq!(d.check("hardware_errors"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Escalated);
    d.assert_audited().await;
}

#[tokio::test]
async fn gpu_util_drop_pages_and_resolves_when_it_ends() {
    let d = drive(
        vec![Fault::GpuUtilDrop {
            at: AT,
            util: 0.4,
            duration: 1800.0,
        }],
        FindingKind::GpuUtilDrop,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "gpu-util-drop");
    assert_eq!(d.check("input_bound"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Page]);
    assert_eq!(d.inc.state, IncidentState::Resolved);
    d.assert_audited().await;
}

#[tokio::test]
async fn dataloader_stall_doubles_workers_and_restarts_with_approval() {
    let d = drive(
        vec![Fault::DataloaderStall {
            at: AT,
            wait: 0.9,
            duration: 6.0 * 3600.0,
        }],
        FindingKind::DataloaderStall,
        4.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "dataloader-stall");
    assert_eq!(d.check("fully_starved"), Outcome::True);
    assert_eq!(d.plan(), [Capture, Patch, Restart, Page]);
    assert_eq!(d.done(), [Capture, Patch, Restart, Page]);
    assert!(
        d.inc
            .actions
            .iter()
            .filter(|a| a.action.kind() != Capture && a.action.kind() != Page)
            .all(|a| a.decision.rule == "approved")
    );
    d.assert_audited().await;
}

#[tokio::test]
async fn crash_loop_is_paused_and_paged_instead_of_restarted() {
    let d = drive(
        vec![Fault::CrashLoop {
            at: AT,
            crashes: 100,
        }],
        FindingKind::CrashLoop,
        3.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "crash-loop");
    assert_eq!(d.check("hardware_errors"), Outcome::False);
    assert_eq!(d.plan(), [Capture, Pause, Page]);
    assert_eq!(d.done(), [Capture, Pause, Page]);
    assert!(!d.done().contains(&Restart));
    d.assert_audited().await;
}

#[tokio::test]
async fn checkpoint_stale_pages_before_anything_risky() {
    let d = drive(
        vec![Fault::CheckpointStale { at: AT }],
        FindingKind::CheckpointStale,
        6.0 * 3600.0,
    )
    .await;
    assert_eq!(d.runbook(), "checkpoint-stale");
    assert_eq!(d.plan(), [Capture, Page]);
    assert!(d.done().iter().all(|k| !k.mutates_workload()));
    assert_eq!(d.inc.state, IncidentState::Escalated);
    d.assert_audited().await;
}

// ---------- runbooks executed over HTTP: checks choose the steps ----------

async fn call(h: &Harness, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let router = babysitter::api::router(h.engine.clone());
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", common::OPERATOR_TOKEN),
        )
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .expect("request");
    let res = router.oneshot(req).await.expect("response");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn step_types(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["action"]["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn dry_run_answers_checks_from_the_charts_and_picks_the_branch() {
    // run-x throws Xid errors 10 minutes in; run-h is healthy.
    let h = Harness::new(
        vec![("run-x", common::xid_fault()), ("run-h", vec![])],
        |c| {
            // Observe only: the dry runs must not race the automatic incident.
            for w in &mut c.watches {
                w.autonomy = babysitter::policy::Autonomy::Observe;
            }
        },
    )
    .await;
    h.until(1200.0, |_| false).await;
    let url = "/api/v1/runbooks/crash-loop/execute";
    let (status, healthy) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-h", "by": "alice", "dry_run": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{healthy}");
    assert_eq!(healthy["checks"][0]["id"], "hardware_errors");
    assert_eq!(healthy["checks"][0]["outcome"], "false");
    assert_eq!(healthy["checks"][0]["source"], "chart");
    assert_eq!(
        step_types(&healthy),
        ["capture_diagnostics", "pause", "page"]
    );
    assert!(
        healthy["steps"][2]["action"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("restart storm"),
        "{healthy}"
    );

    let (_, xid) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-x", "by": "alice", "dry_run": true})),
    )
    .await;
    assert_eq!(xid["checks"][0]["outcome"], "true", "{xid}");
    assert!(
        xid["checks"][0]["value"].as_f64().unwrap_or(0.0) >= 1.0,
        "{xid}"
    );
    assert_eq!(step_types(&xid), ["capture_diagnostics", "pause", "page"]);
    assert!(
        xid["steps"][2]["action"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("cordon"),
        "{xid}"
    );

    // Each dry run left one audit entry with the checks; nothing was done to the runs.
    let (_, audit) = call(&h, "GET", "/api/v1/audit?kind=runbook_dry_run", None).await;
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{audit}");
    for e in entries {
        assert_eq!(e["actor"], "api:alice");
        assert_eq!(e["payload"]["checks"][0]["id"], "hardware_errors", "{e}");
    }
    assert_eq!(h.sim.status("run-h").expect("run").restarts, 0);
    assert_eq!(
        h.sim.status("run-h").expect("run").phase,
        babysitter::sim::SimPhase::Running
    );
}

#[tokio::test]
async fn executing_a_branching_runbook_records_its_checks_and_acts_through_the_gate() {
    let h = Harness::new(vec![("run-h", vec![])], |_| {}).await;
    h.until(600.0, |_| false).await;
    let (status, res) = call(
        &h,
        "POST",
        "/api/v1/runbooks/crash-loop/execute",
        Some(json!({"run": "run-h", "by": "alice", "reason": "drill"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{res}");
    let id = res["incident"]["id"].as_str().expect("id").to_string();
    let diagnosis = &res["incident"]["diagnosis"];
    assert_eq!(diagnosis["checks"][0]["outcome"], "false", "{res}");
    let planned: Vec<&str> = diagnosis["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["action"]["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(planned, ["capture_diagnostics", "pause", "page"]);
    assert_eq!(
        h.sim.status("run-h").expect("run").phase,
        babysitter::sim::SimPhase::Paused
    );

    let kinds = h.kinds(&id).await;
    for k in [
        EntryKind::RunbookExecuted,
        EntryKind::IncidentOpened,
        EntryKind::Diagnosis,
        EntryKind::Decision,
        EntryKind::ActionIntent,
        EntryKind::ActionOutcome,
        EntryKind::Page,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    let entries = h.entries(&id).await;
    let diag = entries
        .iter()
        .find(|e| e.kind == EntryKind::Diagnosis)
        .expect("diagnosis");
    assert_eq!(
        diag.payload["diagnosis"]["checks"][0]["id"],
        "hardware_errors"
    );
    let paused = h.incidents_of("run-h")[0]
        .actions
        .iter()
        .any(|a| a.action == Action::Pause);
    assert!(paused);
    assert!(h.audit.verify().await.expect("verify").ok());
}

// ---------- `babysitter check` on the binary ----------

fn check(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .arg("check")
        .args(args)
        .env_remove("BABYSITTER_CONFIG")
        .output()
        .expect("run babysitter check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_runbook_passes_check() {
    let (ok, out, err) = check(&["--runbooks".as_ref(), "runbooks".as_ref()]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("runbooks: OK (17: checkpoint-stale, crash-loop,"),
        "{out}"
    );
}

/// Two broken runbooks: every error of both, each as `file:line: message`, in file order.
#[test]
fn check_prints_every_error_of_every_broken_runbook_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = "---
id: a
title: A
triggers:
  kinds: [stall, stal]
steps:
  - action: pause
verify:
  within: 5m
  expect: [progress]
---
Body
";
    let b = "---
id: b
title: B
triggers:
  kinds: [crash_loop]
checks:
  - id: hw
    promql: 'increase(xid_total{run=\"$run\"}[1h]'
    op: \">\"
    threshold: 0
    chart: xid_errors
    reduce: increase
    over: 1h
    unknown_as: false
steps:
  - action: page
    severity: critical
    summary: hand over
    stop: true
  - action: restart_from_checkpoint
    checkpoint: latest
    when: {check: hw, is: unknown}
  - action: patch_config
    changes: [{key: lr, scale: half}]
    when: {check: gpu, is: true}
verify:
  within: 5m
  expect: [progress]
---
Body
";
    std::fs::write(dir.path().join("a.md"), a).expect("write");
    std::fs::write(dir.path().join("b.md"), b).expect("write");
    let (ok, out, err) = check(&["--runbooks".as_ref(), dir.path().as_os_str()]);
    assert!(!ok, "{out}");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:5: unknown variant `stal`, expected one of",
            p("a.md")
        )),
        "{err}"
    );
    // b.md fails at its YAML type error first (a scale that is not a number): the YAML parser
    // stops there, so the rest of that file is checked once it parses.
    assert_eq!(
        lines[1],
        format!(
            "{}:24: expected a number (near `changes: [{{key: lr, scale: half}}]`)",
            p("b.md")
        ),
        "{err}"
    );

    // With the type error fixed, every semantic error of b.md is reported.
    std::fs::write(
        dir.path().join("b.md"),
        b.replace("scale: half", "scale: 0.5"),
    )
    .expect("write");
    std::fs::remove_file(dir.path().join("a.md")).expect("rm");
    let (ok, _, err) = check(&["--runbooks".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    let want = [
        "8: check `hw`: the PromQL does not parse: unclosed left parenthesis",
        "20: step 2 is unreachable: step 1 (page, stop: true) always ends the plan before it",
        "22: step 2 is unreachable: check `hw` never yields unknown (it has `unknown_as: false`)",
        "23: step 3 is unreachable: step 1 (page, stop: true) always ends the plan before it",
        "25: step 3: `when` names an undefined check `gpu` (checks: hw)",
    ]
    .map(|l| format!("{}:{l}", p("b.md")));
    assert_eq!(err.lines().collect::<Vec<_>>(), want, "{err}");
}

#[test]
fn check_refuses_an_escalation_route_the_config_does_not_know() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rb = dir.path().join("runbooks");
    std::fs::create_dir(&rb).expect("mkdir");
    std::fs::write(
        rb.join("x.md"),
        "---\nid: x\ntitle: X\ntriggers:\n  kinds: [stall]\nsteps:\n  - action: capture_diagnostics\n\
         verify:\n  within: 5m\n  expect: [progress]\nescalate:\n  severity: error\n  route: research-oncall\n---\nBody\n",
    )
    .expect("write");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[pagers.console]\nkind = \"console\"\n[routes]\nml-oncall = [\"console\"]\n",
    )
    .expect("write");
    let (ok, out, err) = check(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--runbooks".as_ref(),
        rb.as_os_str(),
    ]);
    assert!(!ok, "{out}");
    assert_eq!(
        err.trim(),
        format!(
            "{}:13: escalate.route `research-oncall` is neither a route nor a pager of the config",
            rb.join("x.md").display()
        )
    );
    // Named in the config, it passes.
    std::fs::write(
        &cfg,
        "[pagers.console]\nkind = \"console\"\n[routes]\nresearch-oncall = [\"console\"]\n",
    )
    .expect("write");
    let (ok, out, err) = check(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--runbooks".as_ref(),
        rb.as_os_str(),
    ]);
    assert!(ok, "{out}\n{err}");
}
