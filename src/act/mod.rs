//! Act: the actions babysitter can take, and the [`Actuator`] trait that carries them out.
//!
//! Actions are an enum: the policy gate matches every variant, so adding one forces a decision
//! about who may run it. An actuator is the only thing that touches a workload: the simulator
//! in the demo, Kubernetes in production.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::detect::Severity;

pub mod rollback;

/// Which checkpoint a restart goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointSelector {
    /// The newest completed checkpoint.
    Latest,
    /// The newest checkpoint saved before the anomaly's onset (numerics: don't resume a
    /// poisoned state).
    BeforeOnset,
    /// A given optimizer step (what `before_onset` and `latest` resolve to before acting).
    Step(u64),
}

impl fmt::Display for CheckpointSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointSelector::Latest => f.write_str("latest checkpoint"),
            CheckpointSelector::BeforeOnset => f.write_str("checkpoint before onset"),
            CheckpointSelector::Step(s) => write!(f, "checkpoint at step {s}"),
        }
    }
}

/// How a configuration key changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Set to this value.
    Set(serde_json::Value),
    /// Multiply the current numeric value by this factor.
    Scale(f64),
}

/// One configuration change, e.g. `lr × 0.5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    pub key: String,
    pub op: ChangeOp,
}

impl fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            ChangeOp::Set(v) => write!(f, "{} = {v}", self.key),
            ChangeOp::Scale(x) => write!(f, "{} × {x}", self.key),
        }
    }
}

/// Everything babysitter can do to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Suspend the run: it keeps its state and makes no progress.
    Pause,
    /// Undo a pause.
    Resume,
    /// Stop the run and start it again from a checkpoint.
    RestartFromCheckpoint { checkpoint: CheckpointSelector },
    /// Change configuration the run reads at (re)start.
    PatchConfig { changes: Vec<ConfigChange> },
    /// Save the run's state, pods, events and last logs with the incident.
    CaptureDiagnostics,
    /// Page the on-call human.
    Page { severity: Severity, summary: String },
    /// Leave a note on the workload.
    Annotate { note: String },
}

/// The data-free kind of an [`Action`], for policy modes and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Pause,
    Resume,
    RestartFromCheckpoint,
    PatchConfig,
    CaptureDiagnostics,
    Page,
    Annotate,
}

impl ActionKind {
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Pause,
        ActionKind::Resume,
        ActionKind::RestartFromCheckpoint,
        ActionKind::PatchConfig,
        ActionKind::CaptureDiagnostics,
        ActionKind::Page,
        ActionKind::Annotate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Pause => "pause",
            ActionKind::Resume => "resume",
            ActionKind::RestartFromCheckpoint => "restart_from_checkpoint",
            ActionKind::PatchConfig => "patch_config",
            ActionKind::CaptureDiagnostics => "capture_diagnostics",
            ActionKind::Page => "page",
            ActionKind::Annotate => "annotate",
        }
    }

    /// Does this kind change the workload (as opposed to only reading it or telling people)?
    pub fn mutates_workload(self) -> bool {
        match self {
            ActionKind::Pause
            | ActionKind::Resume
            | ActionKind::RestartFromCheckpoint
            | ActionKind::PatchConfig => true,
            ActionKind::CaptureDiagnostics | ActionKind::Page | ActionKind::Annotate => false,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown action `{s}`"))
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Pause => ActionKind::Pause,
            Action::Resume => ActionKind::Resume,
            Action::RestartFromCheckpoint { .. } => ActionKind::RestartFromCheckpoint,
            Action::PatchConfig { .. } => ActionKind::PatchConfig,
            Action::CaptureDiagnostics => ActionKind::CaptureDiagnostics,
            Action::Page { .. } => ActionKind::Page,
            Action::Annotate { .. } => ActionKind::Annotate,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pause => f.write_str("pause"),
            Action::Resume => f.write_str("resume"),
            Action::RestartFromCheckpoint { checkpoint } => write!(f, "restart from {checkpoint}"),
            Action::PatchConfig { changes } => {
                f.write_str("patch config: ")?;
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            Action::CaptureDiagnostics => f.write_str("capture diagnostics"),
            Action::Page { severity, summary } => write!(f, "page on-call ({severity}): {summary}"),
            Action::Annotate { note } => write!(f, "annotate: {note}"),
        }
    }
}

/// Where a watched run lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A run of the built-in simulator (the demo).
    Simulated { run: String },
    /// A Kubernetes workload (later issue: Job, JobSet, PyTorchJob, TrainJob).
    Kubernetes {
        api_version: String,
        workload_kind: String,
        namespace: String,
        name: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Simulated { run } => write!(f, "sim/{run}"),
            Target::Kubernetes {
                workload_kind,
                namespace,
                name,
                ..
            } => write!(f, "{workload_kind}/{namespace}/{name}"),
        }
    }
}

/// A completed checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub step: u64,
    /// Clock time at which it completed.
    pub t: f64,
}

/// What an actuator reports after carrying out an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// One line for the audit log and the terminal: what changed.
    pub detail: String,
    /// Structured facts (old/new values, checkpoint step, …).
    #[serde(default)]
    pub facts: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("unknown target {0}")]
    UnknownTarget(String),
    #[error("no checkpoint matches {0}")]
    NoCheckpoint(String),
    #[error("action refused by the workload: {0}")]
    Refused(String),
    #[error("actuator failed: {0}")]
    Failed(String),
}

/// Carries out actions on workloads. Implementations must be idempotent per `key`: the same
/// key twice does the work once (babysitter may retry after a crash).
#[async_trait]
pub trait Actuator: Send + Sync {
    async fn execute(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<ActionOutcome, ActError>;

    /// Completed checkpoints, oldest first.
    async fn checkpoints(&self, target: &Target) -> Result<Vec<Checkpoint>, ActError>;

    /// Whether `action` was done under `key`, as the workload shows it (crash recovery asks
    /// this before anything is retried). `Ok(Some(outcome))`: it was; the actuator may finish
    /// what the crash cut short after the change itself (e.g. the record it posts on the
    /// workload), idempotently. `Ok(None)`: not done, or this actuator cannot tell; recovery
    /// then runs the action under the same key, which [`execute`](Self::execute) keeps
    /// idempotent.
    async fn recall(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<Option<ActionOutcome>, ActError> {
        let _ = (target, action, key);
        Ok(None)
    }
}
