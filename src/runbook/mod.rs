//! Runbooks: Markdown a human can follow, with a front matter the machine evaluates, and the
//! deterministic diagnosis that picks one for an incident and produces its plan.

use serde::{Deserialize, Serialize};

use crate::act::Action;
use crate::detect::{Finding, Severity};
use crate::verify::VerifySpec;

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
}

/// The loaded, validated runbooks.
#[derive(Debug, Clone, Default)]
pub struct RunbookSet {}

/// Picks a runbook for the findings of one incident and produces the plan.
pub fn diagnose(set: &RunbookSet, findings: &[Finding], allowed: &[String]) -> Diagnosis {
    let _ = (set, findings, allowed);
    unimplemented!()
}

// --- temporary stubs in main until the runbook branch lands ---
#[derive(Debug, Clone)]
pub struct Runbook {
    pub id: String,
    pub title: String,
    pub path: String,
    pub hash: String,
    pub body: String,
}
#[derive(Debug)]
pub struct RunbookErrors(pub Vec<String>);
impl std::fmt::Display for RunbookErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}
impl std::error::Error for RunbookErrors {}
impl RunbookSet {
    pub fn embedded() -> Result<RunbookSet, RunbookErrors> {
        Ok(RunbookSet {})
    }
    pub fn load_dir(_p: &std::path::Path) -> Result<RunbookSet, RunbookErrors> {
        Ok(RunbookSet {})
    }
    pub fn get(&self, _id: &str) -> Option<&Runbook> {
        None
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Runbook> {
        [].iter()
    }
    pub fn len(&self) -> usize {
        0
    }
}
