//! Tests of the policy gate: every action under every mode and autonomy, each rule on its own,
//! their order, and the configuration's serde and validation.

use super::*;
use crate::act::{CheckpointSelector, ConfigChange};
use crate::detect::Severity;

/// 2026-11-03T00:00:00Z: any fixed time works; a real date makes reasons readable.
const NOW: f64 = 1_793_664_000.0;
const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;

/// One action of every variant. The match forces a new variant to be added here.
fn actions() -> Vec<Action> {
    let all = vec![
        Action::Pause,
        Action::Resume,
        Action::RestartFromCheckpoint {
            checkpoint: CheckpointSelector::BeforeOnset,
        },
        Action::PatchConfig {
            changes: vec![ConfigChange {
                key: "lr".into(),
                op: ChangeOp::Scale(0.5),
            }],
        },
        Action::CaptureDiagnostics,
        Action::Page {
            severity: Severity::Error,
            summary: "loss diverged".into(),
        },
        Action::Annotate {
            note: "babysitter looked".into(),
        },
    ];
    for a in &all {
        match a {
            Action::Pause
            | Action::Resume
            | Action::RestartFromCheckpoint { .. }
            | Action::PatchConfig { .. }
            | Action::CaptureDiagnostics
            | Action::Page { .. }
            | Action::Annotate { .. } => {}
        }
    }
    let kinds: Vec<ActionKind> = all.iter().map(Action::kind).collect();
    assert_eq!(kinds, ActionKind::ALL.to_vec());
    all
}

/// The kinds that change the workload, written out rather than read from the code under test.
fn mutating(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::Pause
            | ActionKind::Resume
            | ActionKind::RestartFromCheckpoint
            | ActionKind::PatchConfig
    )
}

fn restart() -> Action {
    Action::RestartFromCheckpoint {
        checkpoint: CheckpointSelector::Latest,
    }
}

fn page() -> Action {
    Action::Page {
        severity: Severity::Critical,
        summary: "run-a stalled".into(),
    }
}

/// A request that passes every rule under an `auto` policy without limits.
fn req<'a>(action: &'a Action, history: &'a [PastAction]) -> PolicyRequest<'a> {
    PolicyRequest {
        run: "run-a",
        action,
        autonomy: Autonomy::Act,
        runbook_allows: true,
        step_requires_approval: false,
        approved_by: None,
        history,
        now: NOW,
        audit_healthy: true,
        is_leader: true,
    }
}

/// No limits, no cooldowns: only modes, autonomy and switches matter.
fn bare() -> PolicyConfig {
    PolicyConfig {
        limits: Vec::new(),
        cooldowns: BTreeMap::new(),
        ..PolicyConfig::default()
    }
}

fn past(run: &str, kind: ActionKind, at: f64) -> PastAction {
    PastAction {
        run: run.into(),
        kind,
        at,
    }
}

#[track_caller]
fn assert_decision(d: &Decision, verdict: Verdict, rule: &str) {
    assert_eq!((d.verdict, d.rule.as_str()), (verdict, rule), "{d:?}");
}

#[test]
fn every_action_under_every_mode_and_autonomy() {
    let expect = |kind: ActionKind, mode: Mode, autonomy: Autonomy| -> (Verdict, &'static str) {
        match (mode, autonomy, mutating(kind)) {
            (Mode::Never, _, _) => (Verdict::Deny, "mode_never"),
            (_, Autonomy::Observe, true) => (Verdict::Deny, "autonomy_observe"),
            (Mode::Approve, _, _) => (Verdict::NeedsApproval, "approval_mode"),
            (Mode::Auto, Autonomy::Suggest, true) => (Verdict::NeedsApproval, "approval_autonomy"),
            (Mode::Auto, _, _) => (Verdict::Allow, "mode_auto"),
        }
    };
    let mut checked = 0;
    for action in actions() {
        let kind = action.kind();
        for mode in Mode::ALL {
            let mut cfg = bare();
            cfg.modes.insert(kind, mode);
            for autonomy in Autonomy::ALL {
                let (verdict, rule) = expect(kind, mode, autonomy);
                let r = PolicyRequest {
                    autonomy,
                    ..req(&action, &[])
                };
                let d = decide(&cfg, &r);
                assert_decision(&d, verdict, rule);
                assert!(d.reason.starts_with(kind.as_str()), "{}", d.reason);
                assert_eq!(d.retry_at, None);

                // A human's approval turns "needs approval" into "allow", and nothing else.
                let approved = decide(
                    &cfg,
                    &PolicyRequest {
                        approved_by: Some("alice"),
                        ..r.clone()
                    },
                );
                match verdict {
                    Verdict::NeedsApproval => {
                        assert_decision(&approved, Verdict::Allow, "approved");
                        assert!(
                            approved.reason.contains("approved by alice"),
                            "{approved:?}"
                        );
                    }
                    Verdict::Deny | Verdict::Allow => assert_eq!(approved, d),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 3 * 3);
}

#[test]
fn mode_defaults_to_auto_and_reasons_name_mode_and_autonomy() {
    let cfg = PolicyConfig {
        modes: BTreeMap::new(),
        ..bare()
    };
    for kind in ActionKind::ALL {
        assert_eq!(cfg.mode(kind), Mode::Auto);
    }
    let a = restart();
    let d = decide(&cfg, &req(&a, &[]));
    assert_eq!(
        d.reason,
        "restart_from_checkpoint on run-a allowed: mode auto, autonomy act"
    );
    let mut cfg = bare();
    cfg.modes.insert(ActionKind::Page, Mode::Never);
    let p = page();
    let d = decide(&cfg, &req(&p, &[]));
    assert_eq!(d.reason, "page refused: policy mode for page is never");
}

#[test]
fn read_only_denies_exactly_the_mutating_kinds() {
    let cfg = PolicyConfig {
        read_only: true,
        ..bare()
    };
    for action in actions() {
        let d = decide(&cfg, &req(&action, &[]));
        if mutating(action.kind()) {
            assert_decision(&d, Verdict::Deny, "read_only");
            // An approval does not lift it.
            let r = PolicyRequest {
                approved_by: Some("alice"),
                ..req(&action, &[])
            };
            assert_decision(&decide(&cfg, &r), Verdict::Deny, "read_only");
        } else {
            assert_decision(&d, Verdict::Allow, "mode_auto");
        }
    }
}

#[test]
fn not_leader_denies_everything() {
    let cfg = bare();
    for action in actions() {
        let r = PolicyRequest {
            is_leader: false,
            audit_healthy: false,
            approved_by: Some("alice"),
            ..req(&action, &[])
        };
        let d = decide(&cfg, &r);
        assert_decision(&d, Verdict::Deny, "not_leader");
        assert_eq!(
            d.reason,
            format!(
                "{} refused: this replica is not the leader (only the leader acts)",
                action.kind()
            )
        );
    }
}

#[test]
fn audit_unavailable_denies_all_but_page() {
    let cfg = bare();
    for action in actions() {
        let r = PolicyRequest {
            audit_healthy: false,
            approved_by: Some("alice"),
            ..req(&action, &[])
        };
        let d = decide(&cfg, &r);
        if action.kind() == ActionKind::Page {
            assert_decision(&d, Verdict::Allow, "mode_auto");
        } else {
            assert_decision(&d, Verdict::Deny, "audit_unavailable");
        }
    }
    // A page still passes the later rules: its breaker holds.
    let p = page();
    let history: Vec<PastAction> = (0..10)
        .map(|i| past("run-a", ActionKind::Page, NOW - f64::from(i) * MIN))
        .collect();
    let r = PolicyRequest {
        audit_healthy: false,
        ..req(&p, &history)
    };
    assert_decision(
        &decide(&PolicyConfig::default(), &r),
        Verdict::Deny,
        "circuit_breaker",
    );
}

#[test]
fn not_in_runbook_denies_even_approved() {
    let cfg = bare();
    for action in actions() {
        let r = PolicyRequest {
            runbook_allows: false,
            approved_by: Some("alice"),
            ..req(&action, &[])
        };
        let d = decide(&cfg, &r);
        assert_decision(&d, Verdict::Deny, "not_in_runbook");
        assert_eq!(
            d.reason,
            format!(
                "{k} refused: the runbook diagnosing run-a does not list {k}",
                k = action.kind()
            )
        );
    }
}

#[test]
fn observe_allows_only_read_only_actions() {
    let cfg = bare();
    for action in actions() {
        let r = PolicyRequest {
            autonomy: Autonomy::Observe,
            approved_by: Some("alice"),
            ..req(&action, &[])
        };
        let d = decide(&cfg, &r);
        match action.kind() {
            ActionKind::CaptureDiagnostics | ActionKind::Annotate | ActionKind::Page => {
                assert_decision(&d, Verdict::Allow, "mode_auto")
            }
            ActionKind::Pause
            | ActionKind::Resume
            | ActionKind::RestartFromCheckpoint
            | ActionKind::PatchConfig => assert_decision(&d, Verdict::Deny, "autonomy_observe"),
        }
    }
}

#[test]
fn circuit_breaker_allows_n_then_refuses_until_the_oldest_leaves() {
    let cfg = PolicyConfig {
        cooldowns: BTreeMap::new(),
        ..PolicyConfig::default()
    };
    let a = restart();
    let times = [NOW - 5.0 * HOUR, NOW - 3.0 * HOUR, NOW - HOUR];
    let mut history = Vec::new();
    for at in times {
        let d = decide(&cfg, &req(&a, &history));
        assert_decision(&d, Verdict::Allow, "mode_auto");
        history.push(past("run-a", ActionKind::RestartFromCheckpoint, at));
    }
    let d = decide(&cfg, &req(&a, &history));
    assert_decision(&d, Verdict::Deny, "circuit_breaker");
    assert_eq!(
        d.reason,
        "restart_from_checkpoint refused: 3 restarts of run-a in the last 6h (limit 3); \
         may run again in 1h, at 2026-11-03T01:00:00Z"
    );
    assert_eq!(d.retry_at, Some(NOW + HOUR));

    // Approval does not lift the breaker.
    let r = PolicyRequest {
        approved_by: Some("alice"),
        ..req(&a, &history)
    };
    assert_decision(&decide(&cfg, &r), Verdict::Deny, "circuit_breaker");

    // One second before the oldest leaves the window: still refused; then allowed.
    let r = PolicyRequest {
        now: NOW + HOUR - 1.0,
        ..req(&a, &history)
    };
    let d = decide(&cfg, &r);
    assert_decision(&d, Verdict::Deny, "circuit_breaker");
    assert!(d.reason.contains("may run again in 1s"), "{}", d.reason);
    let r = PolicyRequest {
        now: NOW + HOUR,
        ..req(&a, &history)
    };
    assert_decision(&decide(&cfg, &r), Verdict::Allow, "mode_auto");
}

#[test]
fn circuit_breaker_counts_only_the_same_run_and_kind() {
    let cfg = PolicyConfig {
        cooldowns: BTreeMap::new(),
        ..PolicyConfig::default()
    };
    let a = restart();
    let mut history = Vec::new();
    for i in 0..5 {
        let at = NOW - f64::from(i + 1) * MIN;
        history.push(past("run-b", ActionKind::RestartFromCheckpoint, at));
        history.push(past("run-a", ActionKind::PatchConfig, at - HOUR));
        history.push(past("run-a-2", ActionKind::RestartFromCheckpoint, at));
    }
    history.push(past(
        "run-a",
        ActionKind::RestartFromCheckpoint,
        NOW - 2.0 * HOUR,
    ));
    history.push(past("run-a", ActionKind::RestartFromCheckpoint, NOW - HOUR));
    // Outside the window: does not count.
    history.push(past(
        "run-a",
        ActionKind::RestartFromCheckpoint,
        NOW - 6.0 * HOUR,
    ));
    // Corrupt entries are ignored.
    history.push(past("run-a", ActionKind::RestartFromCheckpoint, f64::NAN));
    assert_decision(
        &decide(&cfg, &req(&a, &history)),
        Verdict::Allow,
        "mode_auto",
    );

    history.push(past(
        "run-a",
        ActionKind::RestartFromCheckpoint,
        NOW - 30.0 * MIN,
    ));
    let d = decide(&cfg, &req(&a, &history));
    assert_decision(&d, Verdict::Deny, "circuit_breaker");
    assert!(d.reason.contains("3 restarts of run-a"), "{}", d.reason);
    // The oldest counted (2h ago) leaves in 4h.
    assert_eq!(d.retry_at, Some(NOW + 4.0 * HOUR));

    // run-b has 5 restarts within the window of 6h.
    let r = PolicyRequest {
        run: "run-b",
        ..req(&a, &history)
    };
    let d = decide(&cfg, &r);
    assert!(d.reason.contains("5 restarts of run-b"), "{}", d.reason);
    // 5 in the window, limit 3: the count drops below 3 when the 3 oldest have left; the third
    // oldest is 3 minutes old.
    assert_eq!(d.retry_at, Some(NOW - 3.0 * MIN + 6.0 * HOUR));
}

#[test]
fn every_limit_of_a_kind_applies() {
    let mut cfg = bare();
    cfg.limits = vec![
        RateLimit {
            action: ActionKind::Pause,
            max: 3,
            window: Duration::from_secs(3600),
        },
        RateLimit {
            action: ActionKind::Pause,
            max: 1,
            window: Duration::from_secs(600),
        },
    ];
    let a = Action::Pause;
    let history = [past("run-a", ActionKind::Pause, NOW - 5.0 * MIN)];
    let d = decide(&cfg, &req(&a, &history));
    assert_decision(&d, Verdict::Deny, "circuit_breaker");
    assert_eq!(
        d.reason,
        "pause refused: 1 pause of run-a in the last 10m (limit 1); \
         may run again in 5m, at 2026-11-03T00:05:00Z"
    );
    let history = [past("run-a", ActionKind::Pause, NOW - 11.0 * MIN)];
    assert_decision(
        &decide(&cfg, &req(&a, &history)),
        Verdict::Allow,
        "mode_auto",
    );
}

#[test]
fn cooldown_says_when_it_may_run_again() {
    let cfg = PolicyConfig::default();
    let a = restart();
    let history = [past(
        "run-a",
        ActionKind::RestartFromCheckpoint,
        NOW - 2.0 * MIN,
    )];
    let d = decide(&cfg, &req(&a, &history));
    assert_decision(&d, Verdict::Deny, "cooldown");
    assert_eq!(
        d.reason,
        "restart_from_checkpoint refused: cooldown 5m after the last restart_from_checkpoint \
         on run-a (2m ago); may run again in 3m, at 2026-11-03T00:03:00Z"
    );
    assert_eq!(d.retry_at, Some(NOW + 3.0 * MIN));

    // Approval does not lift it.
    let r = PolicyRequest {
        approved_by: Some("alice"),
        ..req(&a, &history)
    };
    assert_decision(&decide(&cfg, &r), Verdict::Deny, "cooldown");

    // At the time it names, it passes.
    let r = PolicyRequest {
        now: NOW + 3.0 * MIN,
        ..req(&a, &history)
    };
    assert_decision(&decide(&cfg, &r), Verdict::Allow, "mode_auto");

    // Another run or another kind is not cooling down.
    let r = PolicyRequest {
        run: "run-b",
        ..req(&a, &history)
    };
    assert_decision(&decide(&cfg, &r), Verdict::Allow, "mode_auto");
    let p = Action::Pause;
    assert_decision(
        &decide(&cfg, &req(&p, &history)),
        Verdict::Allow,
        "mode_auto",
    );

    // The last one counts, whatever the order of the history.
    let history = [
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 7.0 * HOUR),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 30.0),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 20.0 * MIN),
    ];
    let d = decide(&cfg, &req(&a, &history));
    assert_decision(&d, Verdict::Deny, "cooldown");
    assert_eq!(d.retry_at, Some(NOW + 270.0));
    assert!(
        d.reason.contains("(30s ago); may run again in 4m 30s"),
        "{}",
        d.reason
    );

    // A zero cooldown turns it off.
    let mut cfg = PolicyConfig::default();
    cfg.cooldowns
        .insert(ActionKind::RestartFromCheckpoint, Duration::ZERO);
    let history = [past("run-a", ActionKind::RestartFromCheckpoint, NOW - 1.0)];
    assert_decision(
        &decide(&cfg, &req(&a, &history)),
        Verdict::Allow,
        "mode_auto",
    );
}

#[test]
fn breaker_is_checked_before_cooldown() {
    let cfg = PolicyConfig::default();
    let a = restart();
    let history = [
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 2.0 * HOUR),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - HOUR),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - MIN),
    ];
    assert_decision(
        &decide(&cfg, &req(&a, &history)),
        Verdict::Deny,
        "circuit_breaker",
    );
}

#[test]
fn approval_from_the_runbook_step() {
    let cfg = bare();
    for action in actions() {
        let r = PolicyRequest {
            step_requires_approval: true,
            ..req(&action, &[])
        };
        let d = decide(&cfg, &r);
        assert_decision(&d, Verdict::NeedsApproval, "approval_runbook");
        assert_eq!(
            d.reason,
            format!(
                "{} on run-a needs approval: the runbook step requires approval",
                action.kind()
            )
        );
        let d = decide(
            &cfg,
            &PolicyRequest {
                approved_by: Some("bob"),
                ..r
            },
        );
        assert_decision(&d, Verdict::Allow, "approved");
        assert_eq!(
            d.reason,
            format!(
                "{} on run-a allowed: approved by bob (the runbook step requires approval)",
                action.kind()
            )
        );
    }
}

#[test]
fn approval_rules_in_order_and_a_blank_approver_is_none() {
    let mut cfg = bare();
    cfg.modes
        .insert(ActionKind::RestartFromCheckpoint, Mode::Approve);
    let a = restart();
    let r = PolicyRequest {
        autonomy: Autonomy::Suggest,
        step_requires_approval: true,
        ..req(&a, &[])
    };
    assert_decision(&decide(&cfg, &r), Verdict::NeedsApproval, "approval_mode");
    cfg.modes
        .insert(ActionKind::RestartFromCheckpoint, Mode::Auto);
    assert_decision(
        &decide(&cfg, &r),
        Verdict::NeedsApproval,
        "approval_autonomy",
    );
    for blank in ["", "   "] {
        let r = PolicyRequest {
            approved_by: Some(blank),
            ..r.clone()
        };
        assert_decision(
            &decide(&cfg, &r),
            Verdict::NeedsApproval,
            "approval_autonomy",
        );
    }
    // An approval nobody needed: still decided by the mode.
    let r = PolicyRequest {
        approved_by: Some("alice"),
        ..req(&a, &[])
    };
    assert_decision(&decide(&cfg, &r), Verdict::Allow, "mode_auto");
}

#[test]
fn maintenance_window_asks_approval_for_mutating_actions() {
    let mut cfg = bare();
    cfg.maintenance = vec![MaintenanceWindow {
        start: NOW - HOUR,
        end: NOW + HOUR,
        reason: "cluster upgrade CHG-42".into(),
    }];
    for action in actions() {
        let d = decide(&cfg, &req(&action, &[]));
        if mutating(action.kind()) {
            assert_decision(&d, Verdict::NeedsApproval, "maintenance");
            assert_eq!(
                d.reason,
                format!(
                    "{} on run-a needs approval: maintenance window (cluster upgrade CHG-42) \
                     until 2026-11-03T01:00:00Z",
                    action.kind()
                )
            );
            let r = PolicyRequest {
                approved_by: Some("carol"),
                ..req(&action, &[])
            };
            let d = decide(&cfg, &r);
            assert_decision(&d, Verdict::Allow, "approved");
            assert!(
                d.reason.contains("approved by carol (maintenance window"),
                "{d:?}"
            );
        } else {
            assert_decision(&d, Verdict::Allow, "mode_auto");
        }
    }
    let a = restart();
    // Maintenance comes before the other approval rules, and after every denial.
    cfg.modes
        .insert(ActionKind::RestartFromCheckpoint, Mode::Approve);
    assert_decision(
        &decide(&cfg, &req(&a, &[])),
        Verdict::NeedsApproval,
        "maintenance",
    );
    cfg.modes
        .insert(ActionKind::RestartFromCheckpoint, Mode::Never);
    assert_decision(&decide(&cfg, &req(&a, &[])), Verdict::Deny, "mode_never");
    cfg.modes
        .insert(ActionKind::RestartFromCheckpoint, Mode::Auto);

    // Half-open: [start, end).
    for (now, rule) in [
        (NOW - HOUR - 1.0, "mode_auto"),
        (NOW - HOUR, "maintenance"),
        (NOW + HOUR - 1.0, "maintenance"),
        (NOW + HOUR, "mode_auto"),
    ] {
        let r = PolicyRequest {
            now,
            ..req(&a, &[])
        };
        assert_eq!(decide(&cfg, &r).rule, rule, "at {now}");
    }

    // No reason given: none quoted.
    cfg.maintenance[0].reason = String::new();
    let d = decide(&cfg, &req(&a, &[]));
    assert!(
        d.reason
            .ends_with("needs approval: maintenance window until 2026-11-03T01:00:00Z"),
        "{}",
        d.reason
    );
}

#[test]
fn malformed_actions_are_denied() {
    let cfg = bare();
    let patch = |changes: Vec<ConfigChange>| Action::PatchConfig { changes };
    let scale = |key: &str, x: f64| ConfigChange {
        key: key.into(),
        op: ChangeOp::Scale(x),
    };
    let cases = [
        (patch(vec![]), "a config patch with no change"),
        (
            patch(vec![scale(" ", 0.5)]),
            "a config change with an empty key",
        ),
        (
            patch(vec![scale("lr", 0.5), scale("lr", 0.5)]),
            "`lr` is changed twice in one patch",
        ),
        (
            patch(vec![scale("lr", 0.0)]),
            "scaling `lr` by 0 (a factor must be finite and positive)",
        ),
        (
            patch(vec![scale("lr", -2.0)]),
            "scaling `lr` by -2 (a factor must be finite and positive)",
        ),
        (
            patch(vec![scale("lr", f64::NAN)]),
            "scaling `lr` by NaN (a factor must be finite and positive)",
        ),
    ];
    for (action, why) in cases {
        let d = decide(&cfg, &req(&action, &[]));
        assert_decision(&d, Verdict::Deny, "invalid_action");
        assert_eq!(d.reason, format!("patch_config refused: {why}"));
    }
    let ok = patch(vec![
        scale("lr", 0.5),
        ConfigChange {
            key: "micro_batch".into(),
            op: ChangeOp::Set(serde_json::json!(2)),
        },
    ]);
    assert_decision(&decide(&cfg, &req(&ok, &[])), Verdict::Allow, "mode_auto");
}

#[test]
fn a_broken_clock_fails_closed() {
    let cfg = PolicyConfig::default();
    for now in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for action in actions() {
            let r = PolicyRequest {
                now,
                ..req(&action, &[])
            };
            assert_decision(&decide(&cfg, &r), Verdict::Deny, "invalid_clock");
        }
    }
}

#[test]
fn decisions_are_deterministic() {
    let mut cfg = PolicyConfig::default();
    cfg.maintenance.push(MaintenanceWindow {
        start: NOW + HOUR,
        end: NOW + 2.0 * HOUR,
        reason: "later".into(),
    });
    let history = vec![
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 4.0 * HOUR),
        past("run-b", ActionKind::RestartFromCheckpoint, NOW - 10.0),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 2.0 * HOUR),
        past("run-a", ActionKind::Pause, NOW - 60.0),
        past("run-a", ActionKind::RestartFromCheckpoint, NOW - 3.0 * HOUR),
    ];
    for action in actions() {
        for autonomy in Autonomy::ALL {
            for now in [NOW, NOW + 1.5 * HOUR, NOW + 3.0 * HOUR] {
                let r = PolicyRequest {
                    autonomy,
                    now,
                    ..req(&action, &history)
                };
                let first = decide(&cfg, &r);
                assert_eq!(decide(&cfg, &r), first);
                assert_eq!(decide(&cfg.clone(), &r.clone()), first);
                // The order of the history does not matter.
                let mut reversed = history.clone();
                reversed.reverse();
                let r2 = PolicyRequest {
                    history: &reversed,
                    ..r.clone()
                };
                assert_eq!(decide(&cfg, &r2), first);
            }
        }
    }
}

#[test]
fn defaults_are_the_documented_ones_and_valid() {
    let cfg = PolicyConfig::default();
    assert_eq!(cfg.validate(), Ok(()));
    assert!(!cfg.read_only);
    assert!(cfg.maintenance.is_empty());
    for kind in ActionKind::ALL {
        assert_eq!(cfg.mode(kind), Mode::Auto, "{kind}");
    }
    let limits: Vec<(ActionKind, u32, u64)> = cfg
        .limits
        .iter()
        .map(|l| (l.action, l.max, l.window.as_secs()))
        .collect();
    assert_eq!(
        limits,
        vec![
            (ActionKind::RestartFromCheckpoint, 3, 6 * 3600),
            (ActionKind::PatchConfig, 3, 6 * 3600),
            (ActionKind::Pause, 6, 3600),
            (ActionKind::Page, 10, 3600),
        ]
    );
    assert_eq!(
        cfg.cooldowns,
        BTreeMap::from([
            (ActionKind::RestartFromCheckpoint, Duration::from_secs(300)),
            (ActionKind::PatchConfig, Duration::from_secs(60)),
        ])
    );
}

#[test]
fn validate_names_the_field() {
    let mut cfg = PolicyConfig::default();
    cfg.limits.push(RateLimit {
        action: ActionKind::Resume,
        max: 0,
        window: Duration::from_secs(60),
    });
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.field, "limits[4].max");
    assert_eq!(
        e.to_string(),
        "policy.limits[4].max: must be at least 1 (to forbid resume altogether, set \
         policy.modes.resume = \"never\")"
    );

    let mut cfg = PolicyConfig::default();
    cfg.limits[1].window = Duration::ZERO;
    assert_eq!(cfg.validate().unwrap_err().field, "limits[1].window");

    let mut cfg = PolicyConfig {
        maintenance: vec![
            MaintenanceWindow {
                start: NOW,
                end: NOW + 1.0,
                reason: String::new(),
            },
            MaintenanceWindow {
                start: NOW,
                end: NOW - HOUR,
                reason: String::new(),
            },
        ],
        ..PolicyConfig::default()
    };
    let e = cfg.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "policy.maintenance[1].end: 2026-11-02T23:00:00Z is not after start 2026-11-03T00:00:00Z"
    );
    cfg.maintenance[1].end = NOW;
    assert_eq!(cfg.validate().unwrap_err().field, "maintenance[1].end");
    cfg.maintenance[1].start = f64::NAN;
    assert_eq!(cfg.validate().unwrap_err().field, "maintenance[1].start");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policy: PolicyConfig,
}

const TOML: &str = r#"
[policy]
read_only = true

[policy.modes]
restart_from_checkpoint = "approve"
patch_config = "never"

[[policy.limits]]
action = "pause"
max = 2
window = "1h"

[[policy.limits]]
action = "restart_from_checkpoint"
max = 1
window = 7200

[policy.cooldowns]
restart_from_checkpoint = "10m"

[[policy.maintenance]]
start = "2026-11-03T02:00:00+01:00"
end = 1793674800
reason = "cluster upgrade"

[[policy.maintenance]]
start = 2026-11-04T00:00:00Z
end = 1793764800.5
"#;

#[test]
fn toml_round_trip() {
    let file: File = toml::from_str(TOML).unwrap();
    let p = &file.policy;
    assert!(p.read_only);
    assert_eq!(p.mode(ActionKind::RestartFromCheckpoint), Mode::Approve);
    assert_eq!(p.mode(ActionKind::PatchConfig), Mode::Never);
    assert_eq!(p.mode(ActionKind::Pause), Mode::Auto);
    assert_eq!(
        p.limits,
        vec![
            RateLimit {
                action: ActionKind::Pause,
                max: 2,
                window: Duration::from_secs(3600),
            },
            RateLimit {
                action: ActionKind::RestartFromCheckpoint,
                max: 1,
                window: Duration::from_secs(7200),
            },
        ]
    );
    assert_eq!(
        p.cooldowns,
        BTreeMap::from([(ActionKind::RestartFromCheckpoint, Duration::from_secs(600))])
    );
    assert_eq!(
        p.maintenance,
        vec![
            MaintenanceWindow {
                start: NOW + HOUR, // 02:00 at +01:00 is 01:00Z
                end: NOW + 3.0 * HOUR,
                reason: "cluster upgrade".into(),
            },
            MaintenanceWindow {
                start: NOW + 24.0 * HOUR,
                end: NOW + 28.0 * HOUR + 0.5,
                reason: String::new(),
            },
        ]
    );
    assert_eq!(p.validate(), Ok(()));

    let text = toml::to_string(&file).unwrap();
    assert!(text.contains("start = \"2026-11-03T01:00:00Z\""), "{text}");
    assert!(text.contains("window = \"1h\""), "{text}");
    let back: File = toml::from_str(&text).unwrap();
    assert_eq!(back, file);

    // And the defaults, and through JSON (the API).
    let d = File {
        policy: PolicyConfig::default(),
    };
    let back: File = toml::from_str(&toml::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
    let back: File = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
    assert_eq!(back, file);

    // An empty section is the defaults.
    let empty: File = toml::from_str("[policy]\n").unwrap();
    assert_eq!(empty.policy, PolicyConfig::default());
}

#[test]
fn unknown_or_bad_fields_are_rejected() {
    let cases = [
        ("[policy]\nread_onyl = true\n", "read_onyl"),
        (
            "[[policy.limits]]\naction = \"pause\"\nmax = 2\nwindow = \"1h\"\nburst = 3\n",
            "burst",
        ),
        ("[policy.modes]\nrestart = \"approve\"\n", "restart"),
        ("[policy.modes]\npause = \"sometimes\"\n", "sometimes"),
        ("[policy.cooldowns]\npause = \"soon\"\n", "soon"),
        (
            "[[policy.maintenance]]\nstart = \"tonight\"\nend = 1\n",
            "RFC 3339",
        ),
        (
            "[[policy.maintenance]]\nstart = 1\nend = 2\nwhy = \"x\"\n",
            "why",
        ),
    ];
    for (text, needle) in cases {
        let err = toml::from_str::<File>(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn config_file_merges_with_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("babysitter.toml");
    std::fs::write(&path, TOML).unwrap();
    let cfg = crate::config::Config::load(Some(&path)).unwrap();
    let p = cfg.policy;
    assert!(p.read_only);
    // Maps merge key by key: the default patch_config cooldown stays.
    assert_eq!(p.mode(ActionKind::RestartFromCheckpoint), Mode::Approve);
    assert_eq!(p.mode(ActionKind::Pause), Mode::Auto);
    assert_eq!(
        p.cooldowns,
        BTreeMap::from([
            (ActionKind::RestartFromCheckpoint, Duration::from_secs(600)),
            (ActionKind::PatchConfig, Duration::from_secs(60)),
        ])
    );
    // Lists replace the defaults.
    assert_eq!(p.limits.len(), 2);
    assert_eq!(p.maintenance.len(), 2);
    assert_eq!(p.maintenance[1].start, NOW + 24.0 * HOUR);
}

#[test]
fn config_load_rejects_a_nonsense_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("babysitter.toml");
    std::fs::write(
        &path,
        "[[policy.limits]]\naction = \"pause\"\nmax = 0\nwindow = \"1h\"\n",
    )
    .unwrap();
    let err = crate::config::Config::load(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.limits[0].max"), "{err}");
}
