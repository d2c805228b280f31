//! Diagnosis: pick the runbook for an incident's findings and produce its plan.
//!
//! Deterministic: among the runbooks whose triggers match any finding (restricted to the
//! watch's allowed ids when it names some), the highest priority wins and ties go to the
//! smallest id. When none matches, the plan pages a human: babysitter never guesses.
//! With the run's charts ([`diagnose_on_charts`]) trigger chart conditions are evaluated and
//! the chosen runbook's checks are answered from the charts, which selects its steps; without
//! them ([`diagnose`]) only runbooks without chart conditions match and every check is unknown.
//! [`diagnose_with`] asks a [`CheckRunner`] (PromQL) first and falls back to the charts: the
//! choice of the runbook stays a pure function; only the answers to its checks involve I/O.

use std::time::Duration;

use super::checks::{
    CheckLimits, CheckResult, CheckRunner, Outcomes, evaluate_all, evaluate_all_on_charts,
};
use super::{Diagnosis, Plan, PlanStep, Runbook, RunbookSet};
use crate::act::Action;
use crate::charts::ChartSet;
use crate::detect::{Finding, Severity};
use crate::verify::{Expectation, VerifySpec};

/// The runbook id of a diagnosis where no runbook matched.
pub const NO_RUNBOOK_ID: &str = "none";

/// How long the "no runbook" plan waits for the findings to clear before escalating.
pub const NO_RUNBOOK_VERIFY_WITHIN: Duration = Duration::from_secs(3600);

/// Picks a runbook for the findings of one incident and produces the plan.
///
/// `allowed` restricts the candidates to these runbook ids when it is not empty. The primary
/// finding — named in the reason — is the first finding that matches the chosen runbook, or the
/// first finding of all when nothing matches.
pub fn diagnose(set: &RunbookSet, findings: &[Finding], allowed: &[String]) -> Diagnosis {
    diagnose_on_charts(set, findings, allowed, None, 0.0)
}

/// [`diagnose`] with the run's charts at `now`: chart conditions of triggers are evaluated and
/// the chosen runbook's checks are answered from the charts ([`super::checks`]).
pub fn diagnose_on_charts(
    set: &RunbookSet,
    findings: &[Finding],
    allowed: &[String],
    charts: Option<&ChartSet>,
    now: f64,
) -> Diagnosis {
    match choose(set, findings, allowed, charts, now) {
        Choice::Runbook(rb, reason) => {
            let checks = evaluate_all_on_charts(&rb.checks, charts, now);
            finish(rb, reason, checks)
        }
        Choice::None(d) => *d,
    }
}

/// [`diagnose_on_charts`] for run `run`, whose checks are asked of the runner first (PromQL, at
/// most `limits.concurrency` at a time, each within `limits.timeout`), then of the charts, else
/// `unknown`. Every answer and what gave it is in [`Diagnosis::checks`].
pub async fn diagnose_with(
    set: &RunbookSet,
    findings: &[Finding],
    allowed: &[String],
    run: &str,
    runner: Option<(&dyn CheckRunner, CheckLimits)>,
    charts: Option<&ChartSet>,
    now: f64,
) -> Diagnosis {
    match choose(set, findings, allowed, charts, now) {
        Choice::Runbook(rb, reason) => {
            let (runner, limits) = match runner {
                Some((r, l)) => (Some(r), l),
                None => (None, CheckLimits::default()),
            };
            let checks = evaluate_all(&rb.checks, run, runner, charts, now, limits).await;
            finish(rb, reason, checks)
        }
        Choice::None(d) => *d,
    }
}

/// The winning runbook with the reason so far, or the "no runbook" diagnosis.
enum Choice<'a> {
    Runbook(&'a Runbook, String),
    None(Box<Diagnosis>),
}

fn choose<'a>(
    set: &'a RunbookSet,
    findings: &[Finding],
    allowed: &[String],
    charts: Option<&ChartSet>,
    now: f64,
) -> Choice<'a> {
    let eligible = |rb: &&Runbook| allowed.is_empty() || allowed.contains(&rb.id);
    let mut matched: Vec<(&Runbook, &Finding)> = set
        .iter()
        .filter(eligible)
        .filter(|rb| rb.triggers.charts_hold(charts, now))
        .filter_map(|rb| findings.iter().find(|f| rb.matches(f)).map(|f| (rb, f)))
        .collect();
    // Highest priority first, then by id: a total order, so the choice never depends on the
    // order the runbooks were loaded in.
    matched.sort_by(|(a, _), (b, _)| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));

    let Some(&(rb, finding)) = matched.first() else {
        return Choice::None(Box::new(no_runbook(set, findings, allowed)));
    };
    let mut reason = format!(
        "{} on {} matched runbook {} (priority {})",
        finding.kind, finding.chart, rb.id, rb.priority
    );
    if matched.len() > 1 {
        let others: Vec<String> = matched[1..]
            .iter()
            .map(|(r, f)| format!("{} by {} (priority {})", r.id, f.kind, r.priority))
            .collect();
        reason.push_str("; also matched: ");
        reason.push_str(&others.join(", "));
    }
    Choice::Runbook(rb, reason)
}

/// The diagnosis once the checks are answered: they select the steps.
fn finish(rb: &Runbook, mut reason: String, checks: Vec<CheckResult>) -> Diagnosis {
    let outcomes: Outcomes = checks.iter().map(|c| (c.id.clone(), c.outcome)).collect();
    if !checks.is_empty() {
        let said: Vec<String> = checks
            .iter()
            .map(|c| format!("{} = {}", c.id, c.outcome))
            .collect();
        reason.push_str("; checks: ");
        reason.push_str(&said.join(", "));
    }
    Diagnosis {
        runbook: rb.id.clone(),
        title: rb.title.clone(),
        reason,
        plan: rb.plan_for(&outcomes),
        checks,
    }
}

fn no_runbook(set: &RunbookSet, findings: &[Finding], allowed: &[String]) -> Diagnosis {
    let what = match findings.first() {
        Some(f) => format!("{} on {}", f.kind, f.chart),
        None => "an incident without findings".to_string(),
    };
    let scope = if allowed.is_empty() {
        format!("none of the {} runbooks matches", set.len())
    } else {
        format!(
            "none of the runbooks allowed for this watch ({}) matches",
            allowed.join(", ")
        )
    };
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    let reason = if kinds.is_empty() {
        format!("{what}: {scope}")
    } else {
        format!("{what}: {scope} the findings [{}]", kinds.join(", "))
    };
    Diagnosis {
        runbook: NO_RUNBOOK_ID.to_string(),
        title: "No runbook matched".to_string(),
        reason,
        plan: Plan {
            steps: vec![PlanStep {
                action: Action::Page {
                    severity: Severity::Critical,
                    summary: format!("no runbook for {what}: a human must look"),
                },
                requires_approval: false,
            }],
            verify: VerifySpec {
                within: NO_RUNBOOK_VERIFY_WITHIN,
                settle: Some(Duration::ZERO),
                expect: vec![Expectation::FindingsCleared],
            },
            max_attempts: 1,
            escalation_severity: Severity::Critical,
            escalation_route: None,
        },
        checks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{ChangeOp, CheckpointSelector};
    use crate::detect::FindingKind;

    fn finding(kind: FindingKind, chart: &str, severity: Severity) -> Finding {
        Finding {
            kind,
            chart: chart.to_string(),
            at: 100.0,
            onset: 90.0,
            severity,
            message: "test".to_string(),
            value: None,
            baseline: None,
        }
    }

    fn runbook(id: &str, kinds: &str, priority: i64, extra: &str) -> (String, String) {
        (
            format!("rb/{id}.md"),
            format!(
                "---\nid: {id}\ntitle: {id}\ntriggers:\n  kinds: [{kinds}]\n{extra}priority: {priority}\n\
                 steps:\n  - action: annotate\n    note: ran {id}\nverify:\n  within: 5m\n  expect: [progress]\n---\nBody.\n"
            ),
        )
    }

    fn set(rbs: &[(String, String)]) -> RunbookSet {
        match RunbookSet::from_sources(rbs) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn first_note(d: &Diagnosis) -> &str {
        match &d.plan.steps[0].action {
            Action::Annotate { note } => note,
            other => panic!("unexpected first step {other:?}"),
        }
    }

    #[test]
    fn embedded_loss_spike_is_diagnosed_with_its_plan() {
        let set = RunbookSet::embedded();
        let d = diagnose(
            &set,
            &[finding(FindingKind::LossSpike, "loss", Severity::Warning)],
            &[],
        );
        assert_eq!(d.runbook, "loss-spike");
        assert_eq!(
            d.reason,
            "loss_spike on loss matched runbook loss-spike (priority 50)"
        );
        let actions: Vec<&Action> = d.plan.steps.iter().map(|s| &s.action).collect();
        assert_eq!(actions[0], &Action::CaptureDiagnostics);
        match actions[1] {
            Action::PatchConfig { changes } => {
                assert_eq!(changes[0].key, "lr");
                assert_eq!(changes[0].op, ChangeOp::Scale(0.5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            actions[2],
            &Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::BeforeOnset
            }
        );
        assert_eq!(d.plan.max_attempts, 1);
    }

    #[test]
    fn picks_by_kind_then_priority_and_names_the_matching_finding() {
        let s = set(&[
            runbook("a-low", "stall, loss_spike", 10, ""),
            runbook("b-high", "loss_spike", 90, ""),
            runbook("c-other", "nonfinite", 100, ""),
        ]);
        let findings = [
            finding(FindingKind::Stall, "step", Severity::Error),
            finding(FindingKind::LossSpike, "loss", Severity::Warning),
        ];
        let d = diagnose(&s, &findings, &[]);
        assert_eq!(d.runbook, "b-high");
        assert_eq!(d.title, "b-high");
        assert_eq!(first_note(&d), "ran b-high");
        assert_eq!(
            d.reason,
            "loss_spike on loss matched runbook b-high (priority 90); also matched: \
             a-low by stall (priority 10)"
        );
    }

    #[test]
    fn honours_allowed_ids() {
        let s = set(&[
            runbook("a-low", "loss_spike", 10, ""),
            runbook("b-high", "loss_spike", 90, ""),
        ]);
        let f = [finding(FindingKind::LossSpike, "loss", Severity::Warning)];
        let d = diagnose(&s, &f, &["a-low".to_string()]);
        assert_eq!(d.runbook, "a-low");
        // An allowed list without a matching runbook falls back to paging.
        let d = diagnose(&s, &f, &["nope".to_string()]);
        assert_eq!(d.runbook, NO_RUNBOOK_ID);
        assert!(
            d.reason.contains("allowed for this watch (nope)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn ties_break_by_id_whatever_the_load_order() {
        let a = runbook("alpha", "stall", 5, "");
        let b = runbook("beta", "stall", 5, "");
        let f = [finding(FindingKind::Stall, "step", Severity::Error)];
        let d1 = diagnose(&set(&[a.clone(), b.clone()]), &f, &[]);
        let d2 = diagnose(&set(&[b, a]), &f, &[]);
        assert_eq!(d1.runbook, "alpha");
        assert_eq!(d1, d2);
    }

    #[test]
    fn min_severity_filters_findings() {
        let s = set(&[
            runbook("severe", "loss_spike", 90, "  min_severity: error\n"),
            runbook("any", "loss_spike", 10, ""),
        ]);
        let warn = [finding(FindingKind::LossSpike, "loss", Severity::Warning)];
        assert_eq!(diagnose(&s, &warn, &[]).runbook, "any");
        let crit = [finding(FindingKind::LossSpike, "loss", Severity::Critical)];
        assert_eq!(diagnose(&s, &crit, &[]).runbook, "severe");
    }

    #[test]
    fn no_match_pages_a_human() {
        let s = set(&[runbook("a", "stall", 1, "")]);
        let f = [finding(FindingKind::LossPlateau, "loss", Severity::Warning)];
        let d = diagnose(&s, &f, &[]);
        assert_eq!(d.runbook, "none");
        assert_eq!(
            d.plan.steps,
            vec![PlanStep {
                action: Action::Page {
                    severity: Severity::Critical,
                    summary: "no runbook for loss_plateau on loss: a human must look".into(),
                },
                requires_approval: false,
            }]
        );
        assert_eq!(d.plan.verify.expect, vec![Expectation::FindingsCleared]);
        assert_eq!(d.plan.verify.within, NO_RUNBOOK_VERIFY_WITHIN);
        assert_eq!(d.plan.max_attempts, 1);
        assert_eq!(d.plan.escalation_severity, Severity::Critical);

        let empty = diagnose(&RunbookSet::default(), &[], &[]);
        assert_eq!(empty.runbook, "none");
        assert!(empty.reason.starts_with("an incident without findings"));
    }

    #[test]
    fn charts_decide_trigger_conditions_and_checks() {
        use crate::charts::{ChartKey, Role, Sample, Series};
        let specific = (
            "rb/specific.md".to_string(),
            "---\nid: specific\ntitle: s\ntriggers:\n  kinds: [stall]\n  charts: [{chart: gpu_util, reduce: min, over: 5m, op: \">\", threshold: 0.9}]\n\
             priority: 10\nchecks:\n  - id: hw\n    promql: 'increase(x[1h])'\n    op: \">\"\n    threshold: 0\n    chart: xid_errors\n    reduce: increase\n    over: 1h\n\
             steps:\n  - action: capture_diagnostics\n  - action: page\n    severity: critical\n    summary: hw\n    when: {check: hw, is: true}\n    stop: true\n\
             \x20 - action: restart_from_checkpoint\n    checkpoint: latest\nverify:\n  within: 5m\n  expect: [progress]\n---\nBody.\n"
                .to_string(),
        );
        let set = set(&[specific, runbook("general", "stall", 0, "")]);
        let stall = [finding(FindingKind::Stall, "step", Severity::Error)];
        let mut charts = ChartSet::new();
        let series =
            |pts: &[(f64, f64)]| Series::from_samples(pts.iter().map(|&(t, v)| Sample::new(t, v)));
        charts.insert(
            ChartKey::new(Role::GpuUtil),
            series(&[(900.0, 0.98), (1000.0, 0.97)]),
        );
        charts.insert(
            ChartKey::new(Role::XidErrors),
            series(&[(0.0, 2.0), (1000.0, 2.0)]),
        );

        // Busy GPUs, no new Xid: the specific runbook, restart branch.
        let d = diagnose_on_charts(&set, &stall, &[], Some(&charts), 1000.0);
        assert_eq!(d.runbook, "specific");
        assert_eq!(d.checks.len(), 1);
        assert_eq!(d.checks[0].outcome, crate::runbook::Outcome::False);
        assert!(d.reason.ends_with("; checks: hw = false"), "{}", d.reason);
        let kinds: Vec<_> = d.plan.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            [
                crate::act::ActionKind::CaptureDiagnostics,
                crate::act::ActionKind::RestartFromCheckpoint
            ]
        );

        // A new Xid: the page-and-stop branch.
        charts.merge(ChartKey::new(Role::XidErrors), [Sample::new(1010.0, 3.0)]);
        let d = diagnose_on_charts(&set, &stall, &[], Some(&charts), 1010.0);
        assert_eq!(d.checks[0].outcome, crate::runbook::Outcome::True);
        let kinds: Vec<_> = d.plan.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            [
                crate::act::ActionKind::CaptureDiagnostics,
                crate::act::ActionKind::Page
            ]
        );

        // Idle GPUs: the condition fails, the general runbook answers; no charts: likewise.
        charts.merge(ChartKey::new(Role::GpuUtil), [Sample::new(1020.0, 0.1)]);
        assert_eq!(
            diagnose_on_charts(&set, &stall, &[], Some(&charts), 1020.0).runbook,
            "general"
        );
        assert_eq!(diagnose(&set, &stall, &[]).runbook, "general");
    }
}
