//! Runbooks: Markdown a human can follow, with a front matter the machine evaluates, and the
//! deterministic diagnosis that picks one for an incident and produces its plan.
//!
//! This module owns the runbook file format (`runbooks/README.md` documents it for authors),
//! loading a folder of runbooks or the set compiled into the binary ([`RunbookSet`]), and
//! [`diagnose`]. Loading parses every file into typed values up front and never half-loads:
//! one bad file fails the whole set, and every error names `file:line` ([`RunbookErrors`]).
//! Diagnosis is a pure function of the set, the incident's findings and the watch's allowed
//! runbook ids, so the same incident always gets the same plan.

pub mod checks;
mod diagnose;
mod load;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::act::Action;
use crate::detect::{Finding, FindingKind, Severity};
use crate::verify::VerifySpec;

pub use checks::{
    ChartCondition, Check, CheckLimits, CheckResult, CheckRunner, CheckSource, Outcome, Outcomes,
    PrometheusChecks,
};
pub use diagnose::{
    NO_RUNBOOK_ID, NO_RUNBOOK_VERIFY_WITHIN, diagnose, diagnose_on_charts, diagnose_with,
};
pub use load::{RunbookError, RunbookErrors};

/// A step as the runbook writes it: an action, and when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookStep {
    pub action: Action,
    /// The runbook asks a human to approve this step, whatever the policy mode.
    pub requires_approval: bool,
    /// Runs only when this check has one of these outcomes; always when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// The plan ends after this step when it runs (a page that hands the run to a human).
    #[serde(default)]
    pub stop: bool,
}

/// `when: {check: ID, is: true}`: the outcomes of one check that select a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct When {
    pub check: String,
    pub is: Vec<Outcome>,
}

impl When {
    pub fn selects(&self, outcomes: &Outcomes) -> bool {
        let got = outcomes
            .get(&self.check)
            .copied()
            .unwrap_or(Outcome::Unknown);
        self.is.contains(&got)
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let is: Vec<&str> = self.is.iter().map(|o| o.as_str()).collect();
        write!(f, "{} is {}", self.check, is.join(" or "))
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub action: Action,
    /// The runbook asks a human to approve this step, whatever the policy mode.
    pub requires_approval: bool,
}

/// What to do about an incident, in order, and how to tell it worked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub verify: VerifySpec,
    /// How many times the steps may be run for one incident before escalating.
    pub max_attempts: u32,
    /// Severity of the page when babysitter gives up.
    pub escalation_severity: Severity,
    /// The on-call route the incident's pages go to instead of the watch's route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_route: Option<String>,
}

/// The runbook chosen for an incident, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Runbook id, or `none` when no runbook matched.
    pub runbook: String,
    pub title: String,
    /// Why this runbook: which findings matched which trigger.
    pub reason: String,
    pub plan: Plan,
    /// The runbook's checks as answered when the plan was made (empty when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
}

/// Which findings a runbook answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggers {
    /// Finding kinds this runbook handles (never empty).
    pub kinds: Vec<FindingKind>,
    /// Findings below this severity do not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Chart conditions that must all hold (on the run's charts) for the runbook to match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<ChartCondition>,
}

impl Triggers {
    /// Does this finding trigger the runbook (kinds and severity; chart conditions aside)?
    pub fn matches(&self, finding: &Finding) -> bool {
        self.kinds.contains(&finding.kind)
            && self.min_severity.is_none_or(|min| finding.severity >= min)
    }

    /// Do the chart conditions hold? A condition whose chart has no samples does not hold;
    /// without charts only a runbook without conditions matches.
    pub fn charts_hold(&self, charts: Option<&crate::charts::ChartSet>, now: f64) -> bool {
        self.charts.iter().all(|c| {
            charts
                .and_then(|charts| c.holds(charts, now))
                .unwrap_or(false)
        })
    }
}

/// One parsed, validated runbook file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runbook {
    /// Unique id, equal to the file stem (`loss-spike` for `loss-spike.md`).
    pub id: String,
    pub title: String,
    /// Where it was loaded from (`runbooks/loss-spike.md` for the embedded set).
    pub path: String,
    /// The Markdown after the front matter: what the human on call reads.
    pub body: String,
    /// Hex sha256 of the whole file, so the audit log says exactly which text was followed.
    pub sha256: String,
    pub triggers: Triggers,
    /// Higher wins when several runbooks match an incident (default 0).
    pub priority: i64,
    /// Questions that tell causes apart; steps choose among them with `when`.
    pub checks: Vec<Check>,
    pub steps: Vec<RunbookStep>,
    pub verify: VerifySpec,
    /// How many times the steps may run for one incident before escalating (≥ 1).
    pub max_attempts: u32,
    /// Severity of the page when babysitter gives up.
    pub escalation_severity: Severity,
    /// The on-call route for this runbook's pages; the watch's route when `None`.
    pub escalation_route: Option<String>,
    /// File line of `escalate.route` (for `babysitter check` against the config's routes).
    #[serde(skip)]
    pub escalation_route_line: usize,
}

impl Runbook {
    /// Does this finding trigger the runbook?
    pub fn matches(&self, finding: &Finding) -> bool {
        self.triggers.matches(finding)
    }

    /// The plan when no check could be answered (every check `unknown`, or its `unknown_as`):
    /// what a dry run shows without charts.
    pub fn plan(&self) -> Plan {
        let outcomes = self
            .checks
            .iter()
            .map(|c| {
                let o = match c.unknown_as {
                    Some(true) => Outcome::True,
                    Some(false) => Outcome::False,
                    None => Outcome::Unknown,
                };
                (c.id.clone(), o)
            })
            .collect();
        self.plan_for(&outcomes)
    }

    /// The plan for these check outcomes (a missing check counts as `unknown`): the steps whose
    /// `when` holds, in order, up to and including the first selected `stop` step.
    pub fn plan_for(&self, outcomes: &Outcomes) -> Plan {
        let mut steps = Vec::new();
        for s in &self.steps {
            if s.when.as_ref().is_some_and(|w| !w.selects(outcomes)) {
                continue;
            }
            steps.push(PlanStep {
                action: s.action.clone(),
                requires_approval: s.requires_approval,
            });
            if s.stop {
                break;
            }
        }
        Plan {
            steps,
            verify: self.verify.clone(),
            max_attempts: self.max_attempts,
            escalation_severity: self.escalation_severity,
            escalation_route: self.escalation_route.clone(),
        }
    }
}

/// The runbooks shipped in `runbooks/`, compiled into the binary so the demo needs nothing on
/// disk. A unit test checks this list equals the `*.md` files of `runbooks/`.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "runbooks/checkpoint-stale.md",
        include_str!("../../runbooks/checkpoint-stale.md"),
    ),
    (
        "runbooks/crash-loop.md",
        include_str!("../../runbooks/crash-loop.md"),
    ),
    (
        "runbooks/dataloader-stall.md",
        include_str!("../../runbooks/dataloader-stall.md"),
    ),
    (
        "runbooks/eval-regression.md",
        include_str!("../../runbooks/eval-regression.md"),
    ),
    (
        "runbooks/gpu-hardware-error.md",
        include_str!("../../runbooks/gpu-hardware-error.md"),
    ),
    (
        "runbooks/gpu-util-drop.md",
        include_str!("../../runbooks/gpu-util-drop.md"),
    ),
    (
        "runbooks/grad-explosion.md",
        include_str!("../../runbooks/grad-explosion.md"),
    ),
    ("runbooks/hang.md", include_str!("../../runbooks/hang.md")),
    (
        "runbooks/loss-divergence.md",
        include_str!("../../runbooks/loss-divergence.md"),
    ),
    (
        "runbooks/loss-plateau.md",
        include_str!("../../runbooks/loss-plateau.md"),
    ),
    (
        "runbooks/loss-scale-collapse.md",
        include_str!("../../runbooks/loss-scale-collapse.md"),
    ),
    (
        "runbooks/loss-spike.md",
        include_str!("../../runbooks/loss-spike.md"),
    ),
    (
        "runbooks/lr-anomaly.md",
        include_str!("../../runbooks/lr-anomaly.md"),
    ),
    (
        "runbooks/metrics-absent.md",
        include_str!("../../runbooks/metrics-absent.md"),
    ),
    (
        "runbooks/nonfinite.md",
        include_str!("../../runbooks/nonfinite.md"),
    ),
    (
        "runbooks/straggler.md",
        include_str!("../../runbooks/straggler.md"),
    ),
    (
        "runbooks/throughput-drop.md",
        include_str!("../../runbooks/throughput-drop.md"),
    ),
];

/// The loaded, validated runbooks, ordered by id.
#[derive(Debug, Clone, Default)]
pub struct RunbookSet {
    runbooks: Vec<Runbook>,
}

impl RunbookSet {
    /// Loads every `*.md` file of `dir` except `README.md`, in file-name order. Any error in
    /// any file fails the whole load; all errors of all files are returned.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<RunbookSet, RunbookErrors> {
        load::load_dir(dir.as_ref())
    }

    /// Parses runbooks from `(path, text)` pairs (the path gives the id and error locations).
    pub fn from_sources<P: AsRef<Path>, S: AsRef<str>>(
        sources: &[(P, S)],
    ) -> Result<RunbookSet, RunbookErrors> {
        let sources: Vec<(String, &str)> = sources
            .iter()
            .map(|(p, s)| (p.as_ref().display().to_string(), s.as_ref()))
            .collect();
        load::parse_all(&sources)
    }

    /// The runbooks compiled into the binary ([`EMBEDDED`]).
    pub fn embedded() -> RunbookSet {
        // The embedded files are part of the source tree, not outside input, and the test
        // `embedded_set_loads_and_equals_disk` proves they load; a failure here is a build bug.
        match RunbookSet::from_sources(EMBEDDED) {
            Ok(set) => set,
            Err(e) => panic!("the embedded runbooks do not load (run `cargo test runbook`):\n{e}"),
        }
    }

    /// The runbook with this id.
    pub fn get(&self, id: &str) -> Option<&Runbook> {
        self.runbooks
            .binary_search_by(|r| r.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.runbooks[i])
    }

    /// All runbooks, ordered by id.
    pub fn iter(&self) -> std::slice::Iter<'_, Runbook> {
        self.runbooks.iter()
    }

    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }

    /// `file:line` errors for every `escalate.route` that `known` does not accept (a route or
    /// pager name of the config).
    pub fn unknown_routes(&self, known: impl Fn(&str) -> bool) -> RunbookErrors {
        RunbookErrors(
            self.iter()
                .filter_map(|rb| {
                    let route = rb.escalation_route.as_deref()?;
                    (!known(route)).then(|| RunbookError::At {
                        path: rb.path.clone(),
                        line: rb.escalation_route_line.max(1),
                        message: format!(
                            "escalate.route `{route}` is neither a route nor a pager of the config"
                        ),
                    })
                })
                .collect(),
        )
    }

    /// The ids among `ids` that name no runbook of this set (for checking a watch's
    /// `runbooks` list at start-up).
    pub fn unknown_ids<'a>(&self, ids: &'a [String]) -> Vec<&'a str> {
        ids.iter()
            .map(String::as_str)
            .filter(|id| self.get(id).is_none())
            .collect()
    }

    fn from_runbooks(mut runbooks: Vec<Runbook>) -> RunbookSet {
        runbooks.sort_by(|a, b| a.id.cmp(&b.id));
        RunbookSet { runbooks }
    }
}

impl<'a> IntoIterator for &'a RunbookSet {
    type Item = &'a Runbook;
    type IntoIter = std::slice::Iter<'a, Runbook>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests;
