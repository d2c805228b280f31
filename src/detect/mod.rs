//! Detect: pure, causal functions from a run's charts and `now` to findings.
//!
//! Every detector is a plain synchronous function of a [`DetectContext`]: it returns the
//! conditions that hold *now*, using only samples with `t <= now`. [`Hysteresis`] turns those
//! into episodes: a condition is reported once when it starts and once when it clears.
//! The engine and `babysitter replay` both drive detectors the same way.

mod finding;
mod hysteresis;
mod params;

pub use finding::{Band, Family, Finding, FindingKind, Severity};
pub use hysteresis::{Hysteresis, Transitions};
pub use params::DetectorParams;

use crate::charts::ChartSet;

/// Everything a detector may look at.
#[derive(Debug, Clone, Copy)]
pub struct DetectContext<'a> {
    /// The clock: only samples with `t <= now` may be used.
    pub now: f64,
    pub charts: &'a ChartSet,
    /// Samples before this time belong to an earlier incarnation of the run (before a restart or
    /// resume that babysitter performed): detectors ignore them.
    pub since: Option<f64>,
    /// The run is paused on purpose: progress and slowdown detectors stay quiet.
    pub paused: bool,
    pub params: &'a DetectorParams,
}

/// Runs every detector and returns the conditions that hold now.
pub fn detect_all(ctx: &DetectContext<'_>) -> Vec<Finding> {
    let _ = ctx;
    Vec::new()
}
