//! Incident: the findings of one run and one family, and their lifecycle.
//!
//! ```text
//! open → diagnosing → awaiting_approval ⇄ acting → verifying → resolved
//!                  ↘──────────────────────↗      ↘ (retry) acting
//!   diagnosing | awaiting_approval → diagnosing (re-diagnosed before any action ran)
//!   any non-final state → escalated (a human owns it)
//! ```
//! The lifecycle is an explicit enum stepped by [`IncidentState::on`]: an event that does not
//! apply in a state is an error, never a silent change. Incidents are persisted so that a
//! restart of babysitter continues where it was.
//!
//! A finding that joins an incident may change its diagnosis (a `nonfinite` a poll after a
//! `loss_spike` matches a runbook of higher priority). [`Incident::plan_status`] says whether
//! the plan may still be replaced — only while none of its actions has run — and
//! [`Incident::replan`] replaces it, withdrawing the pending approval, which was given (or
//! asked) for an action of the old plan and never carries over to the new one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::act::Action;
use crate::detect::{Band, Family, Finding};
use crate::policy::Decision;
use crate::runbook::Diagnosis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Diagnosing,
    AwaitingApproval,
    Acting,
    Verifying,
    Resolved,
    Escalated,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Diagnosing => "diagnosing",
            IncidentState::AwaitingApproval => "awaiting_approval",
            IncidentState::Acting => "acting",
            IncidentState::Verifying => "verifying",
            IncidentState::Resolved => "resolved",
            IncidentState::Escalated => "escalated",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, IncidentState::Resolved | IncidentState::Escalated)
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentEvent {
    /// Diagnosis started.
    Diagnose,
    /// A step needs a human's approval.
    NeedApproval,
    /// A step may run (allowed by policy, or approved).
    Act,
    /// Every step of the plan ran; verification starts.
    StepsDone,
    /// Verification failed and another attempt is allowed.
    Retry,
    /// Verification passed, or (with no plan to run) every finding cleared.
    Recovered,
    /// Babysitter gives up: a human owns the incident.
    Escalate,
    /// A joining finding changed the diagnosis before any action of the plan ran: the new plan
    /// starts from its first step (a pending approval is withdrawn).
    Rediagnose,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("incident in state {from} cannot take event {event:?}")]
pub struct InvalidTransition {
    pub from: IncidentState,
    pub event: IncidentEvent,
}

/// Why [`Incident::replan`] refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplanError {
    #[error("the plan of incident {incident} is kept: {}", status.why_kept())]
    Kept {
        incident: String,
        status: PlanStatus,
    },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
}

impl IncidentState {
    /// The lifecycle's transition function.
    pub fn on(self, event: IncidentEvent) -> Result<IncidentState, InvalidTransition> {
        use IncidentEvent as E;
        use IncidentState as S;
        let next = match (self, event) {
            (S::Open, E::Diagnose) => S::Diagnosing,
            (S::Diagnosing, E::NeedApproval) | (S::Acting, E::NeedApproval) => S::AwaitingApproval,
            (S::Diagnosing, E::Act) | (S::AwaitingApproval, E::Act) | (S::Acting, E::Act) => {
                S::Acting
            }
            (S::Diagnosing, E::StepsDone) | (S::Acting, E::StepsDone) => S::Verifying,
            (S::Verifying, E::Retry) => S::Acting,
            (S::Verifying, E::Recovered) | (S::Diagnosing, E::Recovered) => S::Resolved,
            (S::Diagnosing, E::Rediagnose) | (S::AwaitingApproval, E::Rediagnose) => S::Diagnosing,
            (s, E::Escalate) if !s.is_final() => S::Escalated,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }
}

/// A step of the plan that is waiting for a human, or was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    /// Stable id used by the approve / reject API.
    pub id: String,
    pub step: usize,
    pub attempt: u32,
    pub action: Action,
    pub decision: Decision,
    /// Clock time at which approval was requested.
    pub requested_at: f64,
    /// Set by the API; the engine consumes it on its next pass.
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub rejected_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// What a restart from a checkpoint throws away (steps, training time, GPU-hours), shown
    /// to the human deciding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::act::rollback::RollbackCost>,
}

/// A pending action withdrawn because the incident was re-diagnosed: its approval (given or
/// not) was for a step of the old plan. Kept so that an approve or reject that arrives
/// afterwards is refused with the reason rather than "not found".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawnAction {
    /// The id the approve / reject API knew it by.
    pub id: String,
    pub action: Action,
    /// Who had approved it, when the approval came before the re-diagnosis could act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Runbook of the plan it belonged to.
    pub runbook: String,
    /// Runbook of the plan that replaced it.
    pub replaced_by: String,
    pub at: f64,
}

/// Whether a new diagnosis may replace an incident's plan ([`Incident::plan_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Not diagnosed yet: the diagnosis, when it comes, sees every finding.
    Undiagnosed,
    /// Diagnosed and no action of the plan has run: a better diagnosis replaces it.
    Replaceable,
    /// A person chose the runbook (ran it over the API): their choice stands.
    ChosenByPerson,
    /// An action of the plan ran, or it is acting or being verified: a half-done plan is never
    /// swapped for another mid-flight.
    InFlight,
}

impl PlanStatus {
    /// Why a plan is kept, in words for the audit log and events.
    pub fn why_kept(self) -> &'static str {
        match self {
            PlanStatus::Undiagnosed => "the incident is not diagnosed yet",
            PlanStatus::Replaceable => "the plan could still be replaced",
            PlanStatus::ChosenByPerson => "a person chose its runbook",
            PlanStatus::InFlight => "an action of its plan has already run",
        }
    }
}

/// An action that ran for this incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub key: String,
    pub step: usize,
    pub attempt: u32,
    pub action: Action,
    pub decision: Decision,
    pub at: f64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub run: String,
    pub family: Family,
    pub state: IncidentState,
    pub opened_at: f64,
    pub updated_at: f64,
    /// Findings that opened or joined it, in order.
    pub findings: Vec<Finding>,
    /// The loss band before onset (what "back in band" means for verification).
    pub baseline_loss: Option<Band>,
    pub diagnosis: Option<Diagnosis>,
    /// Attempt number (1-based) of the plan being executed.
    pub attempt: u32,
    /// Index of the next step of the plan to run.
    pub next_step: usize,
    pub pending: Option<PendingAction>,
    pub actions: Vec<ActionRecord>,
    /// Every decision taken for it, including denials.
    pub decisions: Vec<(crate::act::ActionKind, Decision)>,
    /// When the current verification started (the last action's completion).
    pub verify_since: Option<f64>,
    /// Last verification result, for the API.
    pub verification: Option<crate::verify::VerifyStatus>,
    /// Why it ended (resolution or escalation reason).
    pub outcome: Option<String>,
    /// A page is open for it (trigger sent, no resolve yet).
    pub paged: bool,
    /// Severity of the last trigger, so its acknowledge and resolve match it on every pager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_severity: Option<crate::detect::Severity>,
    /// Who asked for it when it was opened by running a runbook over the API (no finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The LLM investigator's report, when an agent is configured (a proposal, never an action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agent::AgentReport>,

    /// Reminders paged for the pending approval so far (`[paging] renotify_*`).
    #[serde(default)]
    pub renotified: u32,
    /// How many times the incident was re-diagnosed (0: the plan is the first one). Part of
    /// pending action ids, so an approval can only ever name a step of one plan.
    #[serde(default)]
    pub revision: u32,
    /// Pending actions withdrawn by re-diagnoses, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<WithdrawnAction>,
}

impl Incident {
    /// Whether the incident already holds this finding: same kind, chart and onset (a condition
    /// raised again, e.g. after a restart of babysitter). A recurrence has a later onset.
    pub fn holds(&self, f: &Finding) -> bool {
        self.findings
            .iter()
            .any(|g| g.kind == f.kind && g.chart == f.chart && g.onset == f.onset)
    }

    pub fn new(id: String, run: String, first: Finding, now: f64) -> Incident {
        Incident {
            baseline_loss: first.baseline.filter(|_| first.chart == "loss"),
            findings: vec![first.clone()],
            ..Incident::blank(id, run, first.family(), now)
        }
    }

    /// An incident opened by a person running a runbook on a run (no finding behind it).
    pub fn manual(id: String, run: String, family: Family, by: String, now: f64) -> Incident {
        Incident {
            requested_by: Some(by),
            ..Incident::blank(id, run, family, now)
        }
    }

    fn blank(id: String, run: String, family: Family, now: f64) -> Incident {
        Incident {
            id,
            run,
            family,
            state: IncidentState::Open,
            opened_at: now,
            updated_at: now,
            findings: Vec::new(),
            baseline_loss: None,
            diagnosis: None,
            attempt: 1,
            next_step: 0,
            pending: None,
            actions: Vec::new(),
            decisions: Vec::new(),
            verify_since: None,
            verification: None,
            outcome: None,
            paged: false,
            page_severity: None,
            requested_by: None,
            agent: None,

            renotified: 0,
            revision: 0,
            withdrawn: Vec::new(),
        }
    }

    /// Onset of the incident: the earliest onset of its findings.
    pub fn onset(&self) -> f64 {
        self.findings
            .iter()
            .map(|f| f.onset)
            .min_by(f64::total_cmp)
            .unwrap_or(self.opened_at)
    }

    /// The id of the approve / reject API for the next step, were it to need a human:
    /// `inc-3-a1-s0` for the first plan, `inc-3-p2-a1-s0` once re-diagnosed (plan 2), so an
    /// approval of the old plan's step can never match the new plan's.
    pub fn action_id(&self) -> String {
        if self.revision == 0 {
            format!("{}-a{}-s{}", self.id, self.attempt, self.next_step)
        } else {
            format!(
                "{}-p{}-a{}-s{}",
                self.id,
                self.revision + 1,
                self.attempt,
                self.next_step
            )
        }
    }

    /// Whether a new diagnosis may replace the plan (see [`PlanStatus`]).
    pub fn plan_status(&self) -> PlanStatus {
        if self.requested_by.is_some() {
            return PlanStatus::ChosenByPerson;
        }
        if self.diagnosis.is_none() {
            return PlanStatus::Undiagnosed;
        }
        let untouched = self.actions.is_empty() && self.next_step == 0 && self.attempt == 1;
        match self.state {
            IncidentState::Diagnosing | IncidentState::AwaitingApproval if untouched => {
                PlanStatus::Replaceable
            }
            IncidentState::Open => PlanStatus::Undiagnosed,
            _ => PlanStatus::InFlight,
        }
    }

    /// Replaces the diagnosis and its plan: back to `diagnosing` at the first step of the new
    /// plan, under a new [`Incident::revision`]. The pending action, if any, is withdrawn and
    /// returned — approved or not, it never runs. Refused (nothing changes) unless the plan is
    /// [`PlanStatus::Replaceable`].
    pub fn replan(
        &mut self,
        diagnosis: Diagnosis,
        now: f64,
    ) -> Result<Option<WithdrawnAction>, ReplanError> {
        let status = self.plan_status();
        if status != PlanStatus::Replaceable {
            return Err(ReplanError::Kept {
                incident: self.id.clone(),
                status,
            });
        }
        self.apply(IncidentEvent::Rediagnose, now)?;
        let previous = self
            .diagnosis
            .replace(diagnosis)
            .map(|d| d.runbook)
            .unwrap_or_default();
        let replaced_by = self
            .diagnosis
            .as_ref()
            .map(|d| d.runbook.clone())
            .unwrap_or_default();
        self.revision += 1;
        self.next_step = 0;
        self.renotified = 0;
        let withdrawn = self.pending.take().map(|p| WithdrawnAction {
            id: p.id,
            action: p.action,
            approved_by: p.approved_by,
            runbook: previous,
            replaced_by,
            at: now,
        });
        if let Some(w) = &withdrawn {
            self.withdrawn.push(w.clone());
        }
        Ok(withdrawn)
    }

    /// Steps the lifecycle; the caller records the transition in the audit log.
    pub fn apply(
        &mut self,
        event: IncidentEvent,
        now: f64,
    ) -> Result<IncidentState, InvalidTransition> {
        let next = self.state.on(event)?;
        self.state = next;
        self.updated_at = now;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::IncidentEvent as E;
    use super::IncidentState as S;
    use super::*;

    const ALL_STATES: [S; 7] = [
        S::Open,
        S::Diagnosing,
        S::AwaitingApproval,
        S::Acting,
        S::Verifying,
        S::Resolved,
        S::Escalated,
    ];
    const ALL_EVENTS: [E; 8] = [
        E::Diagnose,
        E::NeedApproval,
        E::Act,
        E::StepsDone,
        E::Retry,
        E::Recovered,
        E::Escalate,
        E::Rediagnose,
    ];

    #[test]
    fn happy_path_with_approval_and_retry() {
        let mut s = S::Open;
        for (e, want) in [
            (E::Diagnose, S::Diagnosing),
            (E::Act, S::Acting),
            (E::NeedApproval, S::AwaitingApproval),
            (E::Act, S::Acting),
            (E::StepsDone, S::Verifying),
            (E::Retry, S::Acting),
            (E::StepsDone, S::Verifying),
            (E::Recovered, S::Resolved),
        ] {
            s = s.on(e).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn final_states_take_no_event() {
        for s in [S::Resolved, S::Escalated] {
            for e in ALL_EVENTS {
                assert_eq!(s.on(e), Err(InvalidTransition { from: s, event: e }));
            }
        }
    }

    #[test]
    fn every_live_state_can_escalate() {
        for s in ALL_STATES.into_iter().filter(|s| !s.is_final()) {
            assert_eq!(s.on(E::Escalate), Ok(S::Escalated));
        }
    }

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let mut allowed = 0;
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                if s.on(e).is_ok() {
                    allowed += 1;
                }
            }
        }
        // 13 non-escalation edges (2 of them re-diagnoses) + 5 live states that may escalate.
        assert_eq!(allowed, 18);
        assert!(S::Open.on(E::Act).is_err(), "must diagnose before acting");
        assert!(
            S::AwaitingApproval.on(E::StepsDone).is_err(),
            "no skipping the approval"
        );
        assert!(S::Verifying.on(E::NeedApproval).is_err());
        for s in [S::Open, S::Acting, S::Verifying] {
            assert!(s.on(E::Rediagnose).is_err(), "no re-diagnosis in {s}");
        }
        assert_eq!(S::AwaitingApproval.on(E::Rediagnose), Ok(S::Diagnosing));
    }

    use crate::detect::{FindingKind, Severity};
    use crate::policy::Verdict;
    use crate::runbook::{Plan, PlanStep};
    use crate::verify::{Expectation, VerifySpec};

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            kind,
            chart: "loss".into(),
            at: 100.0,
            onset: 90.0,
            severity: Severity::Error,
            message: "test".into(),
            value: None,
            baseline: None,
        }
    }

    fn diagnosis(runbook: &str, steps: &[Action]) -> Diagnosis {
        Diagnosis {
            runbook: runbook.into(),
            title: runbook.into(),
            reason: format!("matched {runbook}"),
            plan: Plan {
                steps: steps
                    .iter()
                    .map(|a| PlanStep {
                        action: a.clone(),
                        requires_approval: false,
                    })
                    .collect(),
                verify: VerifySpec {
                    within: std::time::Duration::from_secs(1800),
                    settle: None,
                    expect: vec![Expectation::Finite],
                },
                max_attempts: 1,
                escalation_severity: Severity::Critical,
                escalation_route: None,
            },
            checks: Vec::new(),
        }
    }

    fn decision(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            rule: "test".into(),
            reason: "test".into(),
            retry_at: None,
        }
    }

    /// A loss-spike incident whose first step waits for a human.
    fn awaiting_first_approval() -> Incident {
        let mut inc = Incident::new(
            "inc-3".into(),
            "run-a".into(),
            finding(FindingKind::LossSpike),
            100.0,
        );
        inc.diagnosis = Some(diagnosis(
            "loss-spike",
            &[Action::CaptureDiagnostics, Action::Pause],
        ));
        inc.apply(E::Diagnose, 100.0).unwrap();
        inc.pending = Some(PendingAction {
            id: inc.action_id(),
            step: 0,
            attempt: 1,
            action: Action::CaptureDiagnostics,
            decision: decision(Verdict::NeedsApproval),
            requested_at: 100.0,
            approved_by: None,
            rejected_by: None,
            reason: None,
            rollback: None,
        });
        inc.renotified = 2;
        inc.apply(E::NeedApproval, 100.0).unwrap();
        inc
    }

    #[test]
    fn action_ids_name_the_plan_revision() {
        let mut inc = awaiting_first_approval();
        assert_eq!(inc.action_id(), "inc-3-a1-s0");
        inc.revision = 1;
        inc.next_step = 2;
        inc.attempt = 2;
        assert_eq!(inc.action_id(), "inc-3-p2-a2-s2");
    }

    #[test]
    fn plan_status_follows_the_lifecycle() {
        let mut inc = Incident::new(
            "inc-1".into(),
            "r".into(),
            finding(FindingKind::LossSpike),
            0.0,
        );
        assert_eq!(inc.plan_status(), PlanStatus::Undiagnosed);
        inc.diagnosis = Some(diagnosis("loss-spike", &[Action::Pause]));
        inc.apply(E::Diagnose, 1.0).unwrap();
        assert_eq!(inc.plan_status(), PlanStatus::Replaceable);
        inc.apply(E::NeedApproval, 1.0).unwrap();
        assert_eq!(inc.plan_status(), PlanStatus::Replaceable);
        // A step done (even with the incident back waiting for a human on the next one).
        let mut later = inc.clone();
        later.next_step = 1;
        assert_eq!(later.plan_status(), PlanStatus::InFlight);
        let mut ran = inc.clone();
        ran.actions.push(ActionRecord {
            key: "inc-1/a1/s0".into(),
            step: 0,
            attempt: 1,
            action: Action::Pause,
            decision: decision(Verdict::Allow),
            at: 2.0,
            ok: true,
            detail: "paused".into(),
        });
        assert_eq!(ran.plan_status(), PlanStatus::InFlight);
        inc.apply(E::Act, 2.0).unwrap();
        assert_eq!(inc.plan_status(), PlanStatus::InFlight);
        inc.apply(E::StepsDone, 3.0).unwrap();
        assert_eq!(inc.plan_status(), PlanStatus::InFlight);
        let mut manual = Incident::manual(
            "inc-2".into(),
            "r".into(),
            Family::Numerics,
            "alice".into(),
            0.0,
        );
        manual.diagnosis = Some(diagnosis("loss-spike", &[Action::Pause]));
        manual.apply(E::Diagnose, 1.0).unwrap();
        assert_eq!(manual.plan_status(), PlanStatus::ChosenByPerson);
    }

    #[test]
    fn replan_withdraws_the_pending_approval_and_restarts_the_plan() {
        let mut inc = awaiting_first_approval();
        inc.pending.as_mut().unwrap().approved_by = Some("alice".into());
        let new = diagnosis("nonfinite", &[Action::CaptureDiagnostics]);
        let withdrawn = inc.replan(new.clone(), 130.0).unwrap().unwrap();
        assert_eq!(withdrawn.id, "inc-3-a1-s0");
        assert_eq!(withdrawn.action, Action::CaptureDiagnostics);
        assert_eq!(withdrawn.approved_by.as_deref(), Some("alice"));
        assert_eq!(withdrawn.runbook, "loss-spike");
        assert_eq!(withdrawn.replaced_by, "nonfinite");
        assert_eq!(withdrawn.at, 130.0);
        assert_eq!(inc.withdrawn, vec![withdrawn]);
        assert_eq!(inc.state, S::Diagnosing);
        assert_eq!(inc.updated_at, 130.0);
        assert_eq!(inc.diagnosis, Some(new));
        assert!(inc.pending.is_none());
        assert_eq!((inc.revision, inc.next_step, inc.renotified), (1, 0, 0));
        // The new plan's first step has an id no approval of the old plan can name.
        assert_eq!(inc.action_id(), "inc-3-p2-a1-s0");
        // Survives persistence.
        let back: Incident = serde_json::from_value(serde_json::to_value(&inc).unwrap()).unwrap();
        assert_eq!(back, inc);
    }

    #[test]
    fn replan_without_a_pending_approval_withdraws_nothing() {
        let mut inc = Incident::new(
            "inc-1".into(),
            "r".into(),
            finding(FindingKind::LossSpike),
            0.0,
        );
        inc.diagnosis = Some(diagnosis("loss-spike", &[Action::Pause]));
        inc.apply(E::Diagnose, 1.0).unwrap();
        assert_eq!(inc.replan(diagnosis("nonfinite", &[]), 2.0), Ok(None));
        assert_eq!(inc.state, S::Diagnosing);
        assert!(inc.withdrawn.is_empty());
        assert_eq!(inc.revision, 1);
    }

    #[test]
    fn replan_refuses_a_plan_in_flight_and_changes_nothing() {
        let mut inc = awaiting_first_approval();
        inc.next_step = 1;
        let before = inc.clone();
        let err = inc.replan(diagnosis("nonfinite", &[]), 200.0).unwrap_err();
        assert_eq!(
            err,
            ReplanError::Kept {
                incident: "inc-3".into(),
                status: PlanStatus::InFlight
            }
        );
        assert!(
            err.to_string()
                .contains("an action of its plan has already run"),
            "{err}"
        );
        assert_eq!(inc, before);
        // An incident stored by an older babysitter (no revision, no withdrawn) still loads.
        let mut old = serde_json::to_value(&before).unwrap();
        old.as_object_mut().unwrap().remove("revision");
        let back: Incident = serde_json::from_value(old).unwrap();
        assert_eq!(back.revision, 0);
    }

    #[test]
    fn holds_the_same_finding_but_not_a_recurrence_or_another_chart() {
        let first = finding(FindingKind::LossSpike);
        let inc = Incident::new("inc-1".into(), "run-a".into(), first.clone(), 100.0);
        // Raised again a poll later (a restart of babysitter): same kind, chart and onset.
        let again = Finding {
            at: 400.0,
            message: "raised again".into(),
            ..first.clone()
        };
        assert!(inc.holds(&again));
        let later = Finding {
            onset: 300.0,
            ..first.clone()
        };
        assert!(!inc.holds(&later), "a recurrence has a later onset");
        let elsewhere = Finding {
            chart: "grad_norm".into(),
            ..first.clone()
        };
        assert!(!inc.holds(&elsewhere));
        let other_kind = Finding {
            kind: FindingKind::LossDivergence,
            ..first
        };
        assert!(!inc.holds(&other_kind));
    }
}
