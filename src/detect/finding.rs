//! Finding kinds, families and severities (FORMATS.md §2), and the finding itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every kind of FORMATS.md §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Nonfinite,
    LossSpike,
    LossDivergence,
    GradExplosion,
    LossScaleCollapse,
    LossPlateau,
    EvalRegression,
    LrAnomaly,
    Stall,
    MetricsAbsent,
    ThroughputDrop,
    Straggler,
    GpuUtilDrop,
    DataloaderStall,
    GpuHardwareError,
    CrashLoop,
    CheckpointStale,
}

impl FindingKind {
    pub const ALL: [FindingKind; 17] = [
        FindingKind::Nonfinite,
        FindingKind::LossSpike,
        FindingKind::LossDivergence,
        FindingKind::GradExplosion,
        FindingKind::LossScaleCollapse,
        FindingKind::LossPlateau,
        FindingKind::EvalRegression,
        FindingKind::LrAnomaly,
        FindingKind::Stall,
        FindingKind::MetricsAbsent,
        FindingKind::ThroughputDrop,
        FindingKind::Straggler,
        FindingKind::GpuUtilDrop,
        FindingKind::DataloaderStall,
        FindingKind::GpuHardwareError,
        FindingKind::CrashLoop,
        FindingKind::CheckpointStale,
    ];

    pub fn family(self) -> Family {
        use FindingKind::*;
        match self {
            Nonfinite | LossSpike | LossDivergence | GradExplosion | LossScaleCollapse
            | LossPlateau | EvalRegression => Family::Numerics,
            LrAnomaly => Family::Config,
            Stall | MetricsAbsent => Family::Progress,
            ThroughputDrop | Straggler | GpuUtilDrop | DataloaderStall => Family::Slowdown,
            GpuHardwareError | CrashLoop | CheckpointStale => Family::Infra,
        }
    }

    pub fn as_str(self) -> &'static str {
        use FindingKind::*;
        match self {
            Nonfinite => "nonfinite",
            LossSpike => "loss_spike",
            LossDivergence => "loss_divergence",
            GradExplosion => "grad_explosion",
            LossScaleCollapse => "loss_scale_collapse",
            LossPlateau => "loss_plateau",
            EvalRegression => "eval_regression",
            LrAnomaly => "lr_anomaly",
            Stall => "stall",
            MetricsAbsent => "metrics_absent",
            ThroughputDrop => "throughput_drop",
            Straggler => "straggler",
            GpuUtilDrop => "gpu_util_drop",
            DataloaderStall => "dataloader_stall",
            GpuHardwareError => "gpu_hardware_error",
            CrashLoop => "crash_loop",
            CheckpointStale => "checkpoint_stale",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FindingKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FindingKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown finding kind `{s}`"))
    }
}

/// Families group kinds: one incident per run and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Numerics,
    Config,
    Progress,
    Slowdown,
    Infra,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Numerics => "numerics",
            Family::Config => "config",
            Family::Progress => "progress",
            Family::Slowdown => "slowdown",
            Family::Infra => "infra",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A robust description of a chart's normal range: its median and a robust sigma (1.4826 × MAD).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub center: f64,
    pub sigma: f64,
}

/// What a detector reports: a condition of one chart that holds at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The chart it was seen on, as written in a trace header (`loss`, `step_time{rank=3}`).
    pub chart: String,
    /// Clock time at which it was raised (the poll time; only samples with `t <= at` were used).
    pub at: f64,
    /// Estimated onset: time of the first anomalous sample.
    pub onset: f64,
    pub severity: Severity,
    /// One human-readable line with the numbers that justify it.
    pub message: String,
    /// The value that triggered it (latest anomalous value), if one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The normal range it was compared against, if one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Band>,
}

impl Finding {
    pub fn family(&self) -> Family {
        self.kind.family()
    }
}
