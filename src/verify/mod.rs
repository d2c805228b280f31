//! Verify: after acting, did the run recover?
//!
//! [`evaluate`] is a pure function of the charts since the last action, `now` and the
//! runbook's [`VerifySpec`]: it answers pending, passed or failed, with the numbers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::charts::ChartSet;
use crate::detect::Band;

/// What must hold, and how long babysitter waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Deadline after the last action; not all expectations met by then → failed.
    #[serde(with = "crate::config::duration")]
    pub within: Duration,
    pub expect: Vec<Expectation>,
}

/// One condition of recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// The step counter advances again.
    Progress,
    /// The loss is back within its pre-incident band.
    LossInBand,
    /// No new Xid / ECC errors since the action.
    NoNewHardwareErrors,
    /// No NaN / Inf in the training charts since the action.
    Finite,
    /// The findings that opened the incident are no longer reported.
    FindingsCleared,
}

/// Inputs of a verification.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    pub charts: &'a ChartSet,
    /// When the last action of the plan completed.
    pub since: f64,
    pub now: f64,
    /// The loss band before the incident's onset, when known.
    pub baseline_loss: Option<Band>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum VerifyStatus {
    Pending(String),
    Passed(String),
    Failed(String),
}

/// Evaluates a verification.
pub fn evaluate(spec: &VerifySpec, ctx: &VerifyContext<'_>) -> VerifyStatus {
    let _ = (spec, ctx);
    VerifyStatus::Pending("stub".into())
}
