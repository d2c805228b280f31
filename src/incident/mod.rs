//! Incident: the findings of one run and one family, and their lifecycle.
//!
//! ```text
//! open → diagnosing → awaiting_approval ⇄ acting → verifying → resolved
//!                  ↘──────────────────────↗      ↘ (retry) acting
//!   any non-final state → escalated (a human owns it)
//! ```
//! The lifecycle is an explicit enum stepped by [`IncidentState::on`]: an event that does not
//! apply in a state is an error, never a silent change. Incidents are persisted so that a
//! restart of babysitter continues where it was.

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
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("incident in state {from} cannot take event {event:?}")]
pub struct InvalidTransition {
    pub from: IncidentState,
    pub event: IncidentEvent,
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
}

impl Incident {
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
    const ALL_EVENTS: [E; 7] = [
        E::Diagnose,
        E::NeedApproval,
        E::Act,
        E::StepsDone,
        E::Retry,
        E::Recovered,
        E::Escalate,
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
        // 11 non-escalation edges + 5 live states that may escalate.
        assert_eq!(allowed, 16);
        assert!(S::Open.on(E::Act).is_err(), "must diagnose before acting");
        assert!(
            S::AwaitingApproval.on(E::StepsDone).is_err(),
            "no skipping the approval"
        );
        assert!(S::Verifying.on(E::NeedApproval).is_err());
    }
}
