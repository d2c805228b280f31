//! Policy: the gate every action passes, whoever proposed it.
//!
//! [`decide`] is a pure function: the same [`PolicyConfig`] and [`PolicyRequest`] always give the
//! same [`Decision`], and every decision carries the rule that decided it and a reason a human
//! can read. The engine records each decision in the audit log before acting on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::act::{Action, ActionKind};

/// How far babysitter may go on a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Autonomy {
    /// Detect, diagnose and page; never touch the workload.
    Observe,
    /// Propose every workload action for a human's approval.
    Suggest,
    /// Act within the per-action modes.
    #[default]
    Act,
}

/// Per-action mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Auto,
    Approve,
    Never,
}

/// A circuit breaker: at most `max` actions of `action` per run within `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub action: ActionKind,
    pub max: u32,
    #[serde(with = "crate::config::duration")]
    pub window: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Global switch: no workload-mutating action runs while it is on.
    pub read_only: bool,
    /// Mode per action kind; kinds not listed use `Mode::Auto`.
    pub modes: BTreeMap<ActionKind, Mode>,
    /// Circuit breakers per run.
    pub limits: Vec<RateLimit>,
    /// Minimum time between two actions of one kind on one run.
    #[serde(with = "crate::config::duration_map")]
    pub cooldowns: BTreeMap<ActionKind, std::time::Duration>,
}

/// An action already carried out (or started) on a run, for breakers and cooldowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastAction {
    pub run: String,
    pub kind: ActionKind,
    pub at: f64,
}

/// What the gate is asked.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    pub run: &'a str,
    pub action: &'a Action,
    pub autonomy: Autonomy,
    /// The diagnosing runbook lists this action (an action outside the runbook is denied).
    pub runbook_allows: bool,
    /// The runbook step asks for a human's approval.
    pub step_requires_approval: bool,
    /// A human approved this very action.
    pub approved_by: Option<&'a str>,
    /// Past actions (any run; the gate filters by run).
    pub history: &'a [PastAction],
    pub now: f64,
    /// The audit log is writable (fail closed when it is not).
    pub audit_healthy: bool,
    /// This replica leads (only the leader acts).
    pub is_leader: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    NeedsApproval,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Machine-readable name of the rule that decided.
    pub rule: String,
    /// One line for humans.
    pub reason: String,
}

/// The gate.
pub fn decide(cfg: &PolicyConfig, req: &PolicyRequest<'_>) -> Decision {
    let _ = (cfg, req);
    Decision {
        verdict: Verdict::Allow,
        rule: "stub".into(),
        reason: "stub".into(),
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            read_only: false,
            modes: BTreeMap::new(),
            limits: Vec::new(),
            cooldowns: BTreeMap::new(),
        }
    }
}
