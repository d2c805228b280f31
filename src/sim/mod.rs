//! Sim: simulated training runs, the demo's embedded default. A [`SimCluster`] is at once a
//! [`MetricsSource`] (the charts of FORMATS.md §1 a real exporter would publish) and an
//! [`Actuator`] (pause, resume, restart from checkpoint, patch config, …), and its runs
//! *react*: a restart rolls the step back to the checkpoint and costs minutes without metrics,
//! an lr patch applies at the next restart, a bad-data region only destabilises the run while
//! the lr is high. Faults are scheduled per run ([`Fault`]).
//!
//! Everything is deterministic from the seed (a counter-addressed PRNG, [`rng`]) and from the
//! clock: samples are produced lazily on a fixed scrape grid `start + k · scrape_interval` up to
//! `now`, so the series does not depend on how often it is polled.
//!
//! Layout: [`spec`] (what a run is and its faults; the demo's runs are in [`crate::demo::scenario`]), [`run`] (the dynamics),
//! [`rng`] (xoshiro256** / splitmix64), this file (the cluster, its traits, status).

pub mod rng;
pub mod run;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde::Serialize;

use crate::act::{ActError, Action, ActionOutcome, Actuator, Checkpoint, Target};
use crate::charts::{ChartKey, Sample};
use crate::clock::SharedClock;
use crate::sources::{ChartBatch, MetricsSource, PollRequest, SourceError};

pub use run::{Annotation, CHARTS, RANKS, SimEvent, SimPhase};
pub use spec::{Fault, LossCurve, SimRunSpec};

use run::RunState;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("simulated run `{0}` already exists")]
    DuplicateRun(String),
    #[error("simulated run `{run}`: field `{field}` {reason}")]
    InvalidSpec {
        run: String,
        field: String,
        reason: String,
    },
}

/// What a run looks like now (for the dashboard, tests and diagnostics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimRunStatus {
    pub run: String,
    pub phase: SimPhase,
    pub step: u64,
    /// Effective learning rate at `step`.
    pub lr: f64,
    /// Multiplier on the schedule in force (1.0 until a patch is applied by a restart).
    pub lr_scale: f64,
    /// A patched multiplier waiting for the next restart.
    pub pending_lr_scale: Option<f64>,
    pub restarts: u32,
    /// Which node the pods run on; a restart moves them to a new one.
    pub node: u32,
    pub active_faults: Vec<String>,
    pub last_checkpoint: Option<Checkpoint>,
    pub xid_errors: u64,
    pub notes: Vec<Annotation>,
    /// The newest events, oldest first (at most 20).
    pub recent_events: Vec<SimEvent>,
}

/// The outcome recorded for an idempotency key.
struct Done {
    target: Target,
    action: Action,
    result: Result<ActionOutcome, ActError>,
}

fn clone_result(r: &Result<ActionOutcome, ActError>) -> Result<ActionOutcome, ActError> {
    match r {
        Ok(o) => Ok(o.clone()),
        Err(e) => Err(match e {
            ActError::UnknownTarget(s) => ActError::UnknownTarget(s.clone()),
            ActError::NoCheckpoint(s) => ActError::NoCheckpoint(s.clone()),
            ActError::Refused(s) => ActError::Refused(s.clone()),
            ActError::Failed(s) => ActError::Failed(s.clone()),
        }),
    }
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<String, RunState>,
    done: HashMap<String, Done>,
}

/// A set of simulated runs sharing one clock and seed.
pub struct SimCluster {
    clock: SharedClock,
    seed: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("seed", &self.seed)
            .field("runs", &self.runs())
            .finish()
    }
}

impl SimCluster {
    pub fn new(clock: SharedClock, seed: u64) -> Self {
        SimCluster {
            clock,
            seed,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The mutex only guards plain data and is never held across an await; a panic while it
    /// was held cannot leave a half-applied action (each one validates before it mutates), so
    /// a poisoned lock is recovered rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_run(&self, spec: SimRunSpec) -> Result<(), SimError> {
        spec.validate(self.clock.now())?;
        let mut inner = self.lock();
        if inner.runs.contains_key(&spec.name) {
            return Err(SimError::DuplicateRun(spec.name));
        }
        let seed = rng::mix(self.seed, rng::fnv1a(&spec.name));
        inner
            .runs
            .insert(spec.name.clone(), RunState::new(spec, seed));
        Ok(())
    }

    pub fn runs(&self) -> Vec<String> {
        self.lock().runs.keys().cloned().collect()
    }

    pub fn spec(&self, run: &str) -> Option<SimRunSpec> {
        self.lock().runs.get(run).map(|r| r.spec.clone())
    }

    /// The run as of the clock's `now`.
    pub fn status(&self, run: &str) -> Option<SimRunStatus> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let r = inner.runs.get_mut(run)?;
        r.advance(now);
        let d = r.project(now);
        let step = d.step();
        Some(SimRunStatus {
            run: run.to_string(),
            phase: d.phase(),
            step,
            lr: d.lr_at(&r.spec, step),
            lr_scale: d.lr_scale,
            pending_lr_scale: d.pending_lr_scale,
            restarts: d.restarts,
            node: d.node,
            active_faults: d.active_faults(&r.spec),
            last_checkpoint: d.last_checkpoint(),
            xid_errors: d.xid_total,
            notes: r.notes.clone(),
            recent_events: d.events.iter().rev().take(20).rev().cloned().collect(),
        })
    }
}

fn sim_run(target: &Target) -> Option<&str> {
    match target {
        Target::Simulated { run } => Some(run),
        Target::Kubernetes { .. } => None,
    }
}

#[async_trait]
impl MetricsSource for SimCluster {
    async fn poll(
        &self,
        requests: &[PollRequest],
        now: f64,
    ) -> Vec<Result<ChartBatch, SourceError>> {
        // A scrape cannot be from the future: samples never run ahead of the cluster's clock,
        // whatever `now` the caller passes (a NaN `now` also falls back to the clock).
        let now = now.min(self.clock.now());
        let mut inner = self.lock();
        requests
            .iter()
            .map(|req| {
                let name = sim_run(&req.target).ok_or_else(|| {
                    SourceError::UnknownRun(format!(
                        "{} (target {} is not simulated)",
                        req.run, req.target
                    ))
                })?;
                let r = inner
                    .runs
                    .get_mut(name)
                    .ok_or_else(|| SourceError::UnknownRun(name.to_string()))?;
                r.advance(now);
                let scrapes = r.samples(req.since, now);
                if scrapes.is_empty() {
                    return Ok(Vec::new());
                }
                let keys = CHARTS
                    .iter()
                    .map(|role| ChartKey::new(*role))
                    .chain((0..RANKS).map(|r| {
                        ChartKey::new(crate::charts::Role::ComputeTime)
                            .with_label("rank", r.to_string())
                    }));
                Ok(keys
                    .enumerate()
                    .map(|(i, key)| {
                        let samples = scrapes.iter().map(|s| Sample::new(s.t, s.v[i])).collect();
                        (key, samples)
                    })
                    .collect())
            })
            .collect()
    }
}

#[async_trait]
impl Actuator for SimCluster {
    async fn execute(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<ActionOutcome, ActError> {
        let name = sim_run(target).ok_or_else(|| ActError::UnknownTarget(target.to_string()))?;
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(done) = inner.done.get(key) {
            if done.target == *target && done.action == *action {
                return clone_result(&done.result);
            }
            return Err(ActError::Refused(format!(
                "idempotency key `{key}` was already used for `{}` on {}",
                done.action, done.target
            )));
        }
        let r = inner
            .runs
            .get_mut(name)
            .ok_or_else(|| ActError::UnknownTarget(target.to_string()))?;
        let result = r.act(action, now);
        match &result {
            Ok(o) => tracing::info!(run = name, %action, key, detail = %o.detail, "sim action"),
            Err(e) => tracing::info!(run = name, %action, key, error = %e, "sim action refused"),
        }
        inner.done.insert(
            key.to_string(),
            Done {
                target: target.clone(),
                action: action.clone(),
                result: clone_result(&result),
            },
        );
        result
    }

    async fn recall(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<Option<ActionOutcome>, ActError> {
        // The key names one action; the simulator remembers what it did under it.
        let _ = action;
        let inner = self.lock();
        match inner.done.get(key) {
            Some(done) if done.target == *target => match &done.result {
                Ok(o) => Ok(Some(o.clone())),
                Err(e) => Err(ActError::Refused(e.to_string())),
            },
            _ => Ok(None),
        }
    }

    async fn checkpoints(&self, target: &Target) -> Result<Vec<Checkpoint>, ActError> {
        let name = sim_run(target).ok_or_else(|| ActError::UnknownTarget(target.to_string()))?;
        let now = self.clock.now();
        let mut inner = self.lock();
        let r = inner
            .runs
            .get_mut(name)
            .ok_or_else(|| ActError::UnknownTarget(target.to_string()))?;
        r.advance(now);
        Ok(r.project(now)
            .checkpoints
            .iter()
            .map(|c| Checkpoint {
                step: c.step,
                t: c.t,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
