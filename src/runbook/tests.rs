//! Tests of the shipped runbooks: they load, the embedded set is the folder on disk, and each
//! prescribes the plan the engine and the demo rely on.

use std::time::Duration;

use super::*;
use crate::act::{ActionKind, ChangeOp, CheckpointSelector, ConfigChange};
use crate::verify::Expectation;

fn disk_set() -> RunbookSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    match RunbookSet::load_dir(&dir) {
        Ok(s) => s,
        Err(e) => panic!("runbooks/ does not load:\n{e}"),
    }
}

fn step(action: Action) -> PlanStep {
    PlanStep {
        action,
        requires_approval: false,
    }
}

#[test]
fn embedded_set_loads_and_equals_disk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut on_disk: Vec<(String, String)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".md") && n != "README.md")
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n)).unwrap_or_default();
                (format!("runbooks/{n}"), text)
            })
            .collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    on_disk.sort();
    let embedded: Vec<(String, String)> = EMBEDDED
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        embedded.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        on_disk.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        "EMBEDDED in src/runbook/mod.rs must list every runbooks/*.md file, sorted"
    );
    assert_eq!(embedded, on_disk);

    let embedded = RunbookSet::embedded();
    let disk = disk_set();
    assert_eq!(embedded.len(), 17);
    let ids: Vec<&str> = embedded.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "checkpoint-stale",
            "crash-loop",
            "dataloader-stall",
            "eval-regression",
            "gpu-hardware-error",
            "gpu-util-drop",
            "grad-explosion",
            "hang",
            "loss-divergence",
            "loss-plateau",
            "loss-scale-collapse",
            "loss-spike",
            "lr-anomaly",
            "metrics-absent",
            "nonfinite",
            "straggler",
            "throughput-drop",
        ]
    );
    for (e, d) in embedded.iter().zip(disk.iter()) {
        assert_eq!(e.id, d.id);
        assert_eq!(e.sha256, d.sha256);
        assert_eq!(e.steps, d.steps);
        assert_eq!(e.path, format!("runbooks/{}.md", e.id));
    }
}

#[test]
fn loss_spike_halves_lr_then_restarts_before_onset() {
    let set = RunbookSet::embedded();
    let rb = set.get("loss-spike").expect("loss-spike");
    assert_eq!(rb.title, "Loss spike");
    assert_eq!(rb.triggers.kinds, vec![FindingKind::LossSpike]);
    assert_eq!(rb.priority, 50);
    assert_eq!(
        rb.plan().steps,
        vec![
            step(Action::CaptureDiagnostics),
            step(Action::PatchConfig {
                changes: vec![ConfigChange {
                    key: "lr".into(),
                    op: ChangeOp::Scale(0.5)
                }]
            }),
            step(Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::BeforeOnset
            }),
        ]
    );
    assert_eq!(rb.verify.within, Duration::from_secs(30 * 60));
    assert_eq!(
        rb.verify.expect,
        vec![
            Expectation::Progress,
            Expectation::LossInBand,
            Expectation::Finite
        ]
    );
    assert_eq!(rb.max_attempts, 1);
    assert_eq!(rb.escalation_severity, Severity::Critical);
    assert!(rb.body.contains("BLOOM"), "cites a real incident");
}

#[test]
fn nonfinite_restarts_before_onset_twice_at_most() {
    let set = RunbookSet::embedded();
    let rb = set.get("nonfinite").expect("nonfinite");
    assert_eq!(rb.triggers.kinds, vec![FindingKind::Nonfinite]);
    assert_eq!(
        rb.plan().steps,
        vec![
            step(Action::CaptureDiagnostics),
            step(Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::BeforeOnset
            }),
        ]
    );
    assert_eq!(rb.verify.within, Duration::from_secs(30 * 60));
    assert_eq!(
        rb.verify.expect,
        vec![Expectation::Progress, Expectation::Finite]
    );
    assert_eq!(rb.max_attempts, 2);
    assert_eq!(rb.escalation_severity, Severity::Critical);
}

#[test]
fn hang_restarts_from_latest() {
    let set = RunbookSet::embedded();
    let rb = set.get("hang").expect("hang");
    assert_eq!(rb.triggers.kinds, vec![FindingKind::Stall]);
    assert_eq!(
        rb.plan().steps,
        vec![
            step(Action::CaptureDiagnostics),
            step(Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::Latest
            }),
        ]
    );
    assert_eq!(rb.verify.within, Duration::from_secs(15 * 60));
    assert_eq!(rb.verify.expect, vec![Expectation::Progress]);
    assert_eq!(rb.max_attempts, 3);
}

#[test]
fn gpu_hardware_error_pauses_pages_and_needs_approval_to_restart() {
    let set = RunbookSet::embedded();
    let rb = set.get("gpu-hardware-error").expect("gpu-hardware-error");
    assert_eq!(rb.triggers.kinds, vec![FindingKind::GpuHardwareError]);
    assert_eq!(
        rb.plan().steps,
        vec![
            step(Action::Pause),
            PlanStep {
                action: Action::RestartFromCheckpoint {
                    checkpoint: CheckpointSelector::Latest
                },
                requires_approval: true
            },
        ]
    );
    assert_eq!(rb.verify.within, Duration::from_secs(20 * 60));
    assert_eq!(
        rb.verify.expect,
        vec![Expectation::Progress, Expectation::NoNewHardwareErrors]
    );
    assert_eq!(rb.max_attempts, 1);
}

#[test]
fn throughput_drop_only_captures_and_pages() {
    let set = RunbookSet::embedded();
    let rb = set.get("throughput-drop").expect("throughput-drop");
    assert_eq!(rb.triggers.kinds, vec![FindingKind::ThroughputDrop]);
    let kinds: Vec<ActionKind> = rb.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(
        kinds,
        vec![ActionKind::CaptureDiagnostics, ActionKind::Page]
    );
    assert!(matches!(
        rb.steps[1].action,
        Action::Page {
            severity: Severity::Warning,
            ..
        }
    ));
    assert!(rb.steps.iter().all(|s| !s.action.kind().mutates_workload()));
    assert_eq!(rb.verify.within, Duration::from_secs(60 * 60));
    assert_eq!(rb.verify.expect, vec![Expectation::FindingsCleared]);
}

#[test]
fn every_finding_kind_has_exactly_one_runbook_of_its_own() {
    let set = RunbookSet::embedded();
    for kind in crate::detect::FindingKind::ALL {
        let answering: Vec<&str> = set
            .iter()
            .filter(|r| r.triggers.kinds.contains(&kind))
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(answering.len(), 1, "{kind}: {answering:?}");
    }
}

#[test]
fn every_check_parses_and_says_what_it_tells_apart() {
    for rb in &RunbookSet::embedded() {
        for c in &rb.checks {
            assert_eq!(
                super::checks::parse_promql(&c.query_for("run-a")),
                Ok(()),
                "{}: {}",
                rb.id,
                c.id
            );
            assert!(
                !c.description.is_empty(),
                "{}: {} has no description",
                rb.id,
                c.id
            );
        }
    }
}

#[test]
fn every_runbook_body_is_written_for_a_human() {
    for rb in &RunbookSet::embedded() {
        for section in [
            "## What it looks like on the charts",
            "## Why it happens",
            "## What to do by hand",
            "## How to tell it is fixed",
            "## When to escalate",
        ] {
            assert!(rb.body.contains(section), "{} lacks {section}", rb.id);
        }
        assert!(
            rb.body.trim_start().starts_with(&format!("# {}", rb.title)),
            "{}",
            rb.id
        );
    }
}

#[test]
fn set_lookup_and_unknown_ids() {
    let set = RunbookSet::embedded();
    assert!(set.get("hang").is_some());
    assert!(set.get("nope").is_none());
    let ids = vec!["hang".to_string(), "nope".to_string()];
    assert_eq!(set.unknown_ids(&ids), vec!["nope"]);
    assert_eq!(set.iter().count(), set.len());
    assert!(!set.is_empty());
}
