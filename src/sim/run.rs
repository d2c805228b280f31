//! The dynamics of one simulated run: continuous training progress between events, scrapes on
//! a fixed grid, faults, and the effect of actions.
//!
//! State changes only at scrape-grid points (faults fire, Xid errors count, slowdowns end) and
//! at action times (pause, restart, …); between them the step rate is constant, so progress is
//! integrated exactly and checkpoint times are computed where the step counter crosses a
//! multiple of `checkpoint_every`. Polling never splits an integration, so the series does not
//! depend on poll cadence.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::json;

use super::rng::Rng;
use super::spec::{Fault, SimRunSpec};
use crate::act::{
    ActError, Action, ActionOutcome, ChangeOp, Checkpoint, CheckpointSelector, ConfigChange,
};
use crate::charts::Role;

/// Charts of every scrape, in this order; [`RANKS`] per-rank `compute_time` values follow.
pub const CHARTS: [Role; 14] = [
    Role::Step,
    Role::Loss,
    Role::GradNorm,
    Role::Lr,
    Role::Throughput,
    Role::StepTime,
    Role::GpuUtil,
    Role::XidErrors,
    Role::CheckpointAge,
    Role::Restarts,
    Role::EvalLoss,
    Role::LossScale,
    Role::SkippedSteps,
    Role::DataWait,
];

/// Ranks whose `compute_time{rank=…}` is scraped after [`CHARTS`].
pub const RANKS: usize = 4;

/// Values per scrape: the charts, then one compute time per rank.
pub(crate) const VALUES: usize = CHARTS.len() + RANKS;

/// Healthy fp16 loss scale.
const LOSS_SCALE: f64 = 65_536.0;
/// Training seconds between crashes of a crash loop.
const CRASH_EVERY: f64 = 90.0;
/// Scrapes between evaluations (the eval-loss gauge changes only then).
const EVAL_EVERY: u64 = 20;
/// Fraction of a healthy step spent waiting for data.
const HEALTHY_DATA_WAIT: f64 = 0.02;
/// Share of a healthy step a rank spends in its own compute (the rest: collectives).
const COMPUTE_SHARE: f64 = 0.85;

/// Training seconds after a restart before a surviving hang strikes again.
const REHANG_AFTER: f64 = 60.0;
/// Step-time factor while a GPU throws Xid errors.
const XID_SLOWDOWN: f64 = 1.10;
/// Loss factor while training through bad data at a safe lr.
const SAFE_BUMP: f64 = 1.02;
/// Events kept per run (for diagnostics).
const MAX_EVENTS: usize = 100;

// Noise channels: each draw site has its own stream per scrape.
const CH_LOSS: u64 = 1;
const CH_GRAD: u64 = 2;
const CH_STEP_TIME: u64 = 3;
const CH_GPU: u64 = 4;
const CH_SPIKE: u64 = 5;
const CH_RANK: u64 = 6;
const CH_EVAL: u64 = 7;

/// The phase of a run as reported by [`super::SimCluster::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimPhase {
    Running,
    Paused,
    Restarting,
    /// Running, but the step counter is stuck (a collective hang).
    Hung,
    /// Reached `total_steps`; the pods exited and publish nothing more.
    Completed,
}

impl SimPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SimPhase::Running => "running",
            SimPhase::Paused => "paused",
            SimPhase::Restarting => "restarting",
            SimPhase::Hung => "hung",
            SimPhase::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    Running,
    Paused,
    Restarting { until: f64 },
    Completed,
}

/// Something that happened to the run, as a cluster's event log would show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimEvent {
    pub t: f64,
    pub message: String,
}

/// A note left by `Annotate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub t: f64,
    pub note: String,
}

/// The run's weights diverged after training `onset_step` on bad data at `lr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Instability {
    pub onset_step: u64,
    pub lr: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NanState {
    pub onset_step: u64,
    /// Checkpoints at a step above this hold NaN weights.
    pub poison_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HangState {
    pub hung: bool,
    /// Restarts it still survives.
    pub survives: u32,
    /// Training seconds (`active_secs`) at which it strikes again after a restart.
    pub rehang_at: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct XidState {
    pub remaining: u32,
    pub every: f64,
    pub next_at: f64,
    pub node_bound: bool,
    pub node: u32,
}

impl XidState {
    fn degrading(&self) -> bool {
        self.node_bound || self.remaining > 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DropState {
    pub factor: f64,
    pub until: f64,
    /// The GPUs wait idle for the missing throughput (their utilisation falls with it); when
    /// false they stay busy while each step takes longer (a degraded interconnect keeps NCCL
    /// kernels spinning, throttled clocks run every kernel slower).
    pub gpus_idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SimCheckpoint {
    pub step: u64,
    pub t: f64,
    pub unstable: Option<Instability>,
    pub nan: bool,
}

/// The last values a live exporter served (a hung or paused trainer keeps serving them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gauges {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub throughput: f64,
    pub step_time: f64,
}

/// One scrape: time and one value per chart of [`CHARTS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scrape {
    pub t: f64,
    pub v: [f64; VALUES],
}

/// Everything that evolves; cheap to clone (no history) so status can project to `now`.
#[derive(Debug, Clone)]
pub(crate) struct Dyn {
    pub phase: Phase,
    /// Time the state is integrated to.
    pub t: f64,
    /// Next scrape index to emit.
    pub next_k: u64,
    /// Fractional optimizer steps done.
    pub progress: f64,
    /// Seconds spent in the running phase (hung included); drives Xid timers and re-hangs.
    pub active_secs: f64,
    pub lr_scale: f64,
    pub pending_lr_scale: Option<f64>,
    pub restarts: u32,
    pub node: u32,
    pub checkpoints: Vec<SimCheckpoint>,
    pub fired: Vec<bool>,
    pub bad_regions: Vec<(u64, u64)>,
    pub instability: Option<Instability>,
    pub nan: Option<NanState>,
    pub hang: Option<HangState>,
    pub xids: Vec<XidState>,
    pub drops: Vec<DropState>,
    pub xid_total: u64,
    pub last: Option<Gauges>,
    pub events: VecDeque<SimEvent>,
    /// Step at which a sustained divergence began.
    pub divergence: Option<u64>,
    /// Gradient explosion lasts until this step.
    pub grad_burst_until: Option<u64>,
    pub scale_collapse: bool,
    pub loss_scale: f64,
    pub skipped: f64,
    /// The loss stopped improving at this step.
    pub plateau_at: Option<u64>,
    /// Evaluations since an eval regression began.
    pub eval_regress: Option<u32>,
    pub eval_last: Option<f64>,
    pub absent_until: Option<f64>,
    /// (rank, compute-time factor) of a straggler on the current node.
    pub straggler: Option<(u32, f64)>,
    /// (wait fraction, until) of an input-pipeline stall.
    pub data_stall: Option<(f64, f64)>,
    pub workers_scale: f64,
    pub pending_workers_scale: Option<f64>,
    /// (crashes left, training seconds of the next crash).
    pub crash: Option<(u32, f64)>,
    pub ckpt_failing: bool,
}

pub(crate) struct RunState {
    pub spec: SimRunSpec,
    pub seed: u64,
    pub d: Dyn,
    pub history: Vec<Scrape>,
    pub notes: Vec<Annotation>,
}

fn fmt_lr(x: f64) -> String {
    format!("{x:.2e}")
}

impl Dyn {
    fn new(spec: &SimRunSpec) -> Self {
        Dyn {
            phase: Phase::Running,
            t: spec.start,
            next_k: 0,
            progress: 0.0,
            active_secs: 0.0,
            lr_scale: 1.0,
            pending_lr_scale: None,
            restarts: 0,
            node: 0,
            checkpoints: Vec::new(),
            fired: vec![false; spec.faults.len()],
            bad_regions: Vec::new(),
            instability: None,
            nan: None,
            hang: None,
            xids: Vec::new(),
            drops: Vec::new(),
            xid_total: 0,
            last: None,
            events: VecDeque::new(),
            divergence: None,
            grad_burst_until: None,
            scale_collapse: false,
            loss_scale: LOSS_SCALE,
            skipped: 0.0,
            plateau_at: None,
            eval_regress: None,
            eval_last: None,
            absent_until: None,
            straggler: None,
            data_stall: None,
            workers_scale: 1.0,
            pending_workers_scale: None,
            crash: None,
            ckpt_failing: false,
        }
    }

    fn event(&mut self, t: f64, message: String) {
        tracing::debug!(t, %message, "sim event");
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(SimEvent { t, message });
    }

    pub fn step(&self) -> u64 {
        self.progress.max(0.0).floor() as u64
    }

    pub fn hung(&self) -> bool {
        self.hang.is_some_and(|h| h.hung)
    }

    pub fn lr_at(&self, spec: &SimRunSpec, step: u64) -> f64 {
        spec.schedule_lr(step) * self.lr_scale
    }

    /// Seconds per step right now, before measurement noise.
    fn step_time(&self, spec: &SimRunSpec) -> f64 {
        let xid = if self.xids.iter().any(XidState::degrading) {
            XID_SLOWDOWN
        } else {
            1.0
        };
        let straggle = self.straggler.map_or(1.0, |(_, f)| {
            // Every rank waits for the slowest: its compute share stretches the step.
            1.0 + COMPUTE_SHARE * (f - 1.0)
        });
        // `spec.step_time` already includes the healthy wait for data.
        spec.step_time * xid * straggle / self.drop_factor() * (1.0 - HEALTHY_DATA_WAIT)
            / (1.0 - self.data_wait())
    }

    /// Fraction of the step spent waiting for input data.
    fn data_wait(&self) -> f64 {
        match self.data_stall {
            Some((w, _)) => (w / self.workers_scale).max(HEALTHY_DATA_WAIT),
            None => HEALTHY_DATA_WAIT,
        }
    }

    fn drop_factor(&self) -> f64 {
        self.drops.iter().map(|d| d.factor).product()
    }

    /// The part of [`Self::drop_factor`] that leaves the GPUs idle.
    fn idle_factor(&self) -> f64 {
        self.drops
            .iter()
            .filter(|d| d.gpus_idle)
            .map(|d| d.factor)
            .product()
    }

    pub fn phase(&self) -> SimPhase {
        match self.phase {
            Phase::Running if self.hung() => SimPhase::Hung,
            Phase::Running => SimPhase::Running,
            Phase::Paused => SimPhase::Paused,
            Phase::Restarting { .. } => SimPhase::Restarting,
            Phase::Completed => SimPhase::Completed,
        }
    }

    /// Advances the state from `self.t` to `to` (no-op if `to` is not later).
    pub fn integrate(&mut self, spec: &SimRunSpec, to: f64) {
        while self.t < to {
            match self.phase {
                Phase::Restarting { until } => {
                    if until <= to {
                        self.t = until.max(self.t);
                        self.phase = Phase::Running;
                        let msg = format!(
                            "pods ready on node-{}; training resumes from step {}",
                            self.node,
                            self.step()
                        );
                        self.event(self.t, msg);
                    } else {
                        self.t = to;
                    }
                }
                Phase::Paused | Phase::Completed => self.t = to,
                Phase::Running => self.run_segment(spec, to),
            }
        }
    }

    /// Training from `self.t` to `to` at a constant rate (or until completion).
    fn run_segment(&mut self, spec: &SimRunSpec, to: f64) {
        let total = spec.total_steps as f64;
        if self.progress >= total {
            self.phase = Phase::Completed;
            return;
        }
        let t0 = self.t;
        let dt = to - t0;
        if self.hung() {
            self.active_secs += dt;
            self.t = to;
            return;
        }
        let rate = 1.0 / self.step_time(spec);
        let p0 = self.progress;
        let mut p1 = p0 + dt * rate;
        let mut end = to;
        let completed = p1 >= total;
        if completed {
            p1 = total;
            end = t0 + (total - p0) / rate;
        }
        let c0 = p0.floor() as u64;
        let c1 = p1.floor() as u64;
        let when = |step: u64| t0 + (step as f64 - p0) / rate;

        // Batches c0..c1 were trained in this segment: do any of them lie in bad data?
        if self.instability.is_none() {
            let mut onset: Option<(u64, f64)> = None;
            for &(r0, r1) in &self.bad_regions {
                let lo = c0.max(r0);
                let hi = c1.min(r1);
                if lo < hi {
                    let lr = self.lr_at(spec, lo);
                    if lr > spec.lr_safe && onset.is_none_or(|(s, _)| lo < s) {
                        onset = Some((lo, lr));
                    }
                }
            }
            if let Some((step, lr)) = onset {
                self.instability = Some(Instability {
                    onset_step: step,
                    lr,
                });
                let msg = format!(
                    "loss diverging after bad data at step {step} (lr {} > safe {})",
                    fmt_lr(lr),
                    fmt_lr(spec.lr_safe)
                );
                self.event(when(step + 1), msg);
            }
        }

        // Checkpoints completed in this segment.
        let every = spec.checkpoint_every;
        let mut m = (c0 / every + 1) * every;
        while m <= c1 && !self.ckpt_failing {
            let unstable = self.instability.filter(|i| i.onset_step < m);
            let nan = self.nan.is_some_and(|n| m > n.poison_after);
            self.checkpoints.push(SimCheckpoint {
                step: m,
                t: when(m),
                unstable,
                nan,
            });
            m += every;
        }

        self.progress = p1;
        self.active_secs += end - t0;
        self.t = end;
        if completed {
            self.phase = Phase::Completed;
            let msg = format!(
                "training completed at step {}; pods exited",
                spec.total_steps
            );
            self.event(end, msg);
        }
    }

    /// Work due at scrape `t` (the state is already integrated to `t`): faults fire, Xid errors
    /// count, slowdowns end. Only while running.
    fn on_scrape(&mut self, spec: &SimRunSpec, t: f64) {
        if self.phase != Phase::Running {
            return;
        }
        for i in 0..spec.faults.len() {
            if self.fired.get(i).copied().unwrap_or(true) || spec.start + spec.faults[i].at() > t {
                continue;
            }
            self.fired[i] = true;
            self.fire(&spec.faults[i], t);
        }
        if let Some(h) = &mut self.hang
            && !h.hung
            && h.rehang_at.is_some_and(|a| self.active_secs >= a)
        {
            h.hung = true;
            h.rehang_at = None;
            let msg = format!(
                "training hung again at step {} (NCCL collective not completing)",
                self.step()
            );
            self.event(t, msg);
        }
        let mut new_errors = Vec::new();
        for x in &mut self.xids {
            while x.remaining > 0 && x.next_at <= self.active_secs {
                x.remaining -= 1;
                x.next_at += x.every;
                new_errors.push(x.node);
            }
        }
        for node in new_errors {
            self.xid_total += 1;
            self.event(
                t,
                format!("node-{node}: NVRM Xid 79, GPU has fallen off the bus"),
            );
        }
        if self.scale_collapse {
            self.loss_scale = (self.loss_scale / 2.0).max(1.0);
            self.skipped += 20.0;
        }
        if let Some((left, next)) = self.crash
            && self.active_secs >= next
        {
            let back = self.checkpoints.last().map_or(0, |c| c.step);
            self.progress = back as f64;
            self.restarts += 1;
            self.phase = Phase::Restarting {
                until: t + spec.restart_cost,
            };
            self.last = None;
            self.crash = (left > 1).then(|| (left - 1, self.active_secs + CRASH_EVERY));
            self.event(
                t,
                format!("worker crashed (exit code 1); restarting from checkpoint at step {back}"),
            );
            return;
        }
        if self.data_stall.is_some_and(|(_, until)| until <= t) {
            self.data_stall = None;
            self.event(t, "input pipeline back to normal".into());
        }
        let before = self.drops.len();
        self.drops.retain(|d| d.until > t);
        if self.drops.len() < before {
            self.event(t, "throughput back to normal (storage recovered)".into());
        }
    }

    fn fire(&mut self, fault: &Fault, t: f64) {
        let step = self.step();
        match *fault {
            Fault::LossSpike { span_steps, .. } => {
                let end = step.saturating_add(span_steps);
                self.bad_regions.push((step, end));
                self.event(t, format!("bad data shard in steps [{step}, {end})"));
            }
            Fault::Hang {
                survives_restarts, ..
            } => {
                let survives = self.hang.map_or(0, |h| h.survives).max(survives_restarts);
                self.hang = Some(HangState {
                    hung: true,
                    survives,
                    rehang_at: None,
                });
                self.event(
                    t,
                    format!("training hung at step {step} (NCCL collective not completing)"),
                );
            }
            Fault::GpuXid {
                errors,
                every,
                node_bound,
                ..
            } => {
                self.xids.push(XidState {
                    remaining: errors,
                    every,
                    next_at: self.active_secs,
                    node_bound,
                    node: self.node,
                });
            }
            Fault::Nan { steps, .. } => {
                if self.nan.is_none() {
                    self.nan = Some(NanState {
                        onset_step: step,
                        poison_after: step.saturating_add(steps),
                    });
                    self.event(t, format!("loss is NaN from step {step}"));
                }
            }
            Fault::ThroughputDrop {
                factor, duration, ..
            } => {
                self.drops.push(DropState {
                    factor,
                    until: t + duration,
                    gpus_idle: false,
                });
                self.event(
                    t,
                    format!(
                        "interconnect degraded: throughput × {factor} for {duration:.0} s (GPUs stay busy)"
                    ),
                );
            }
            Fault::LossDivergence { .. } => {
                self.divergence.get_or_insert(step);
                self.event(t, format!("loss starts diverging at step {step}"));
            }
            Fault::GradExplosion { steps, .. } => {
                self.grad_burst_until = Some(step.saturating_add(steps));
                self.event(t, format!("gradient norm explodes at step {step}"));
            }
            Fault::LossScaleCollapse { .. } => {
                self.scale_collapse = true;
                self.event(t, format!("fp16 overflow storm from step {step}"));
            }
            Fault::LossPlateau { .. } => {
                self.plateau_at.get_or_insert(step);
                self.event(t, format!("loss stops improving at step {step}"));
            }
            Fault::EvalRegression { .. } => {
                self.eval_regress.get_or_insert(0);
                self.event(t, format!("eval loss starts regressing at step {step}"));
            }
            Fault::LrAnomaly { factor, .. } => {
                self.lr_scale *= factor;
                self.event(t, format!("learning rate × {factor} (off its schedule)"));
            }
            Fault::MetricsAbsent { duration, .. } => {
                self.absent_until = Some(t + duration);
                self.event(t, format!("exporter stops serving for {duration:.0} s"));
            }
            Fault::Straggler { rank, factor, .. } => {
                self.straggler = Some((rank, factor));
                self.event(
                    t,
                    format!("rank {rank} on node-{} slows down × {factor}", self.node),
                );
            }
            Fault::GpuUtilDrop { util, duration, .. } => {
                self.drops.push(DropState {
                    factor: (util / 0.96).min(1.0),
                    until: t + duration,
                    gpus_idle: true,
                });
                self.event(
                    t,
                    format!("GPUs wait on the network: utilisation ≈{util} for {duration:.0} s"),
                );
            }
            Fault::DataloaderStall { wait, duration, .. } => {
                self.data_stall = Some((wait, t + duration));
                self.event(
                    t,
                    format!("input pipeline slow: {wait} of each step waiting for data"),
                );
            }
            Fault::CrashLoop { crashes, .. } => {
                if crashes > 0 {
                    self.crash = Some((crashes, self.active_secs + CRASH_EVERY));
                    self.event(
                        t,
                        format!("workers start crashing every {CRASH_EVERY:.0} s"),
                    );
                }
            }
            Fault::CheckpointStale { .. } => {
                self.ckpt_failing = true;
                self.event(t, "checkpoint saves start failing (storage)".into());
            }
        }
    }

    fn fresh_gauges(&self, spec: &SimRunSpec, seed: u64, k: u64) -> Gauges {
        let step = self.step();
        let loss = if self.nan.is_some() {
            f64::NAN
        } else {
            let noise = (0.02 * Rng::at(seed, k, CH_LOSS).student_t(4).clamp(-8.0, 8.0)).exp();
            let factor = match self.instability {
                Some(i) => 3.0 * (1.0 + 0.0015 * step.saturating_sub(i.onset_step) as f64),
                None if self.bad_regions.iter().any(|&(a, b)| step >= a && step < b) => SAFE_BUMP,
                None => 1.0,
            };
            let drift = self
                .divergence
                .map_or(1.0, |d| 1.0 + 0.0005 * step.saturating_sub(d) as f64);
            let curve_step = self.plateau_at.map_or(step, |p| p.min(step));
            spec.loss_curve.at(curve_step) * noise * factor * drift
        };
        let grad_norm = if self.nan.is_some() {
            f64::NAN
        } else {
            let base = 0.35 + 0.65 * (-(step as f64) / 3000.0).exp();
            let noise = (0.15 * Rng::at(seed, k, CH_GRAD).normal()).exp();
            let spike = if self.instability.is_some() {
                Rng::at(seed, k, CH_SPIKE).range(50.0, 200.0)
            } else if self.grad_burst_until.is_some_and(|u| step < u) {
                Rng::at(seed, k, CH_SPIKE).range(100.0, 1000.0)
            } else if self.divergence.is_some() {
                Rng::at(seed, k, CH_SPIKE).range(3.0, 10.0)
            } else {
                1.0
            };
            base * noise * spike
        };
        let step_time =
            self.step_time(spec) * (0.015 * Rng::at(seed, k, CH_STEP_TIME).normal()).exp();
        Gauges {
            loss,
            grad_norm,
            lr: self.lr_at(spec, step),
            throughput: spec.batch_tokens / step_time,
            step_time,
        }
    }

    /// The sample at scrape `k` (time `t`), or `None` when no pod is there to scrape.
    fn scrape(&mut self, spec: &SimRunSpec, seed: u64, k: u64, t: f64) -> Option<Scrape> {
        self.on_scrape(spec, t);
        if k.is_multiple_of(EVAL_EVERY) || self.eval_last.is_none() {
            self.evaluate(spec, seed, k);
        }
        if let Some(until) = self.absent_until {
            if until > t {
                return None;
            }
            self.absent_until = None;
            self.event(t, "exporter serving again".into());
        }
        let mut gpu = Rng::at(seed, k, CH_GPU);
        let (g, throughput, gpu_util) = match self.phase {
            Phase::Restarting { .. } | Phase::Completed => return None,
            Phase::Paused => {
                let g = self
                    .last
                    .unwrap_or_else(|| self.fresh_gauges(spec, seed, k));
                (g, 0.0, gpu.range(0.0, 0.02))
            }
            Phase::Running if self.hung() => {
                let g = self
                    .last
                    .unwrap_or_else(|| self.fresh_gauges(spec, seed, k));
                (g, g.throughput, gpu.range(0.97, 1.0))
            }
            Phase::Running => {
                let g = self.fresh_gauges(spec, seed, k);
                let util = (gpu.range(0.93, 0.99) * self.idle_factor()).clamp(0.0, 1.0);
                (g, g.throughput, util)
            }
        };
        self.last = Some(g);
        let ckpt_t = self.checkpoints.last().map_or(spec.start, |c| c.t);
        let training = self.phase == Phase::Running && !self.hung();
        let mut v = [0.0; VALUES];
        let charts = [
            self.step() as f64,
            g.loss,
            g.grad_norm,
            g.lr,
            throughput,
            g.step_time,
            gpu_util,
            self.xid_total as f64,
            (t - ckpt_t).max(0.0),
            f64::from(self.restarts),
            self.eval_last.unwrap_or(g.loss),
            self.loss_scale,
            self.skipped,
            if training { self.data_wait() } else { 0.0 },
        ];
        v[..CHARTS.len()].copy_from_slice(&charts);
        // Each rank's own compute: a share of the healthy step, the straggler's stretched.
        let healthy_compute = spec.step_time * COMPUTE_SHARE;
        for r in 0..RANKS {
            let mut rng = Rng::at(seed, k * RANKS as u64 + r as u64, CH_RANK);
            let slow = match self.straggler {
                Some((rank, f)) if rank as usize == r => f,
                _ => 1.0,
            };
            v[CHARTS.len() + r] = healthy_compute * slow * (0.01 * rng.normal()).exp();
        }
        Some(Scrape { t, v })
    }

    /// Updates the eval-loss gauge (what the last evaluation measured).
    fn evaluate(&mut self, spec: &SimRunSpec, seed: u64, k: u64) {
        let step = self.step();
        let noise = (0.005 * Rng::at(seed, k, CH_EVAL).normal()).exp();
        let regress = match &mut self.eval_regress {
            Some(n) => {
                *n += 1;
                1.0 + 0.02 * f64::from(*n)
            }
            None => 1.0,
        };
        self.eval_last = Some(spec.loss_curve.at(step) * 1.05 * noise * regress);
    }

    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints.last().map(|c| Checkpoint {
            step: c.step,
            t: c.t,
        })
    }

    pub fn active_faults(&self, spec: &SimRunSpec) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = self.hang {
            if h.hung {
                out.push(format!("hang (survives {} more restart(s))", h.survives));
            } else if h.rehang_at.is_some() {
                out.push(format!(
                    "hang pending: strikes again {REHANG_AFTER:.0} s into training (survives {} more restart(s))",
                    h.survives
                ));
            }
        }
        if let Some(i) = self.instability {
            out.push(format!(
                "loss divergence since step {} (bad data at lr {} > safe {})",
                i.onset_step,
                fmt_lr(i.lr),
                fmt_lr(spec.lr_safe)
            ));
        }
        for &(a, b) in &self.bad_regions {
            out.push(format!("bad data in steps [{a}, {b})"));
        }
        if let Some(n) = self.nan {
            out.push(format!("NaN loss since step {}", n.onset_step));
        }
        for x in &self.xids {
            if x.degrading() {
                out.push(format!(
                    "GPU Xid errors on node-{}{} ({} more to come)",
                    x.node,
                    if x.node_bound { ", node-bound" } else { "" },
                    x.remaining
                ));
            }
        }
        for d in &self.drops {
            out.push(format!("throughput × {} until t={:.0}", d.factor, d.until));
        }
        if let Some(d) = self.divergence {
            out.push(format!("loss diverging since step {d}"));
        }
        if let Some(u) = self.grad_burst_until.filter(|&u| self.step() < u) {
            out.push(format!("gradient explosion until step {u}"));
        }
        if self.scale_collapse {
            out.push(format!(
                "fp16 loss scale collapsing (now {})",
                self.loss_scale
            ));
        }
        if let Some(p) = self.plateau_at {
            out.push(format!("loss plateau since step {p}"));
        }
        if self.eval_regress.is_some() {
            out.push("eval loss regressing".into());
        }
        if let Some(u) = self.absent_until {
            out.push(format!("exporter silent until t={u:.0}"));
        }
        if let Some((rank, f)) = self.straggler {
            out.push(format!(
                "straggler: rank {rank} × {f} on node-{}",
                self.node
            ));
        }
        if let Some((w, u)) = self.data_stall {
            out.push(format!(
                "input pipeline waits {w} of each step until t={u:.0}"
            ));
        }
        if let Some((left, _)) = self.crash {
            out.push(format!("crash loop ({left} crash(es) to come)"));
        }
        if self.ckpt_failing {
            out.push("checkpoint saves failing".into());
        }
        out
    }
}

impl RunState {
    pub fn new(spec: SimRunSpec, seed: u64) -> Self {
        RunState {
            d: Dyn::new(&spec),
            spec,
            seed,
            history: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn grid_t(&self, k: u64) -> f64 {
        self.spec.start + k as f64 * self.spec.scrape_interval
    }

    /// Emits every scrape with `t <= now` not emitted yet.
    pub fn advance(&mut self, now: f64) {
        loop {
            let k = self.d.next_k;
            let t = self.grid_t(k);
            if t > now {
                break;
            }
            self.d.integrate(&self.spec, t);
            if let Some(s) = self.d.scrape(&self.spec, self.seed, k, t) {
                self.history.push(s);
            }
            self.d.next_k += 1;
        }
    }

    /// Scrapes with `since < t <= now`.
    pub fn samples(&self, since: Option<f64>, now: f64) -> &[Scrape] {
        let lo = since.map_or(0, |s| self.history.partition_point(|x| x.t <= s));
        let hi = self.history.partition_point(|x| x.t <= now);
        if lo >= hi { &[] } else { &self.history[lo..hi] }
    }

    /// The state projected to `now` without changing the run.
    pub fn project(&self, now: f64) -> Dyn {
        let mut d = self.d.clone();
        d.integrate(&self.spec, now);
        d
    }

    /// Carries out an action at `now` (or at the state's own time if that is later).
    pub fn act(&mut self, action: &Action, now: f64) -> Result<ActionOutcome, ActError> {
        self.advance(now);
        let now = now.max(self.d.t);
        self.d.integrate(&self.spec, now);
        let name = self.spec.name.clone();
        match action {
            Action::Pause => self.pause(now),
            Action::Resume => self.resume(now),
            Action::RestartFromCheckpoint { checkpoint } => self.restart(*checkpoint, now),
            Action::PatchConfig { changes } => self.patch(changes, now),
            Action::CaptureDiagnostics => Ok(self.diagnostics()),
            Action::Page { .. } => Err(ActError::Refused(format!(
                "sim/{name}: paging is not a workload action (babysitter pages through its notifier)"
            ))),
            Action::Annotate { note } => {
                self.notes.push(Annotation {
                    t: now,
                    note: note.clone(),
                });
                self.d.event(now, format!("annotated: {note}"));
                Ok(ActionOutcome {
                    detail: format!("annotated sim/{name}: {note}"),
                    facts: json!({ "note": note, "t": now }),
                })
            }
        }
    }

    fn pause(&mut self, now: f64) -> Result<ActionOutcome, ActError> {
        let name = &self.spec.name;
        let step = self.d.step();
        match self.d.phase {
            Phase::Running => {
                let was = self.d.phase();
                self.d.phase = Phase::Paused;
                self.d.event(now, format!("paused at step {step}"));
                Ok(ActionOutcome {
                    detail: format!("paused sim/{name} at step {step} (was {})", was.as_str()),
                    facts: json!({ "step": step, "was": was.as_str(), "changed": true }),
                })
            }
            Phase::Paused => Ok(ActionOutcome {
                detail: format!("sim/{name} already paused at step {step}"),
                facts: json!({ "step": step, "was": "paused", "changed": false }),
            }),
            Phase::Restarting { until } => Err(ActError::Refused(format!(
                "sim/{name} is restarting (pods back at t={until:.0}); pause after it is running"
            ))),
            Phase::Completed => Err(ActError::Refused(format!(
                "sim/{name} completed at step {step}; nothing to pause"
            ))),
        }
    }

    fn resume(&mut self, now: f64) -> Result<ActionOutcome, ActError> {
        let name = &self.spec.name;
        let step = self.d.step();
        match self.d.phase {
            Phase::Paused => {
                self.d.phase = Phase::Running;
                self.d.event(now, format!("resumed at step {step}"));
                let hung = self.d.hung();
                Ok(ActionOutcome {
                    detail: format!(
                        "resumed sim/{name} at step {step}{}",
                        if hung {
                            " (still hung: a resume does not clear a hang)"
                        } else {
                            ""
                        }
                    ),
                    facts: json!({ "step": step, "changed": true, "hung": hung }),
                })
            }
            _ => {
                let phase = self.d.phase().as_str();
                Ok(ActionOutcome {
                    detail: format!("sim/{name} is not paused ({phase}); nothing to resume"),
                    facts: json!({ "step": step, "changed": false, "phase": phase }),
                })
            }
        }
    }

    fn restart(
        &mut self,
        selector: CheckpointSelector,
        now: f64,
    ) -> Result<ActionOutcome, ActError> {
        let name = self.spec.name.clone();
        if self.d.phase == Phase::Completed {
            return Err(ActError::Refused(format!(
                "sim/{name} completed at step {}; nothing to restart",
                self.d.step()
            )));
        }
        let (ckpt, note) = match selector {
            CheckpointSelector::Latest => (self.d.checkpoints.last().copied(), ""),
            CheckpointSelector::BeforeOnset => (
                self.d.checkpoints.last().copied(),
                " (before_onset is resolved by the engine; the simulator used the latest)",
            ),
            CheckpointSelector::Step(s) => (
                self.d
                    .checkpoints
                    .iter()
                    .rev()
                    .find(|c| c.step == s)
                    .copied(),
                "",
            ),
        };
        let Some(ckpt) = ckpt else {
            let have: Vec<u64> = self.d.checkpoints.iter().map(|c| c.step).collect();
            return Err(ActError::NoCheckpoint(format!(
                "{selector} for sim/{name} (completed checkpoints: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        };
        let d = &mut self.d;
        let from_step = d.step();
        let discarded = d.checkpoints.iter().filter(|c| c.step > ckpt.step).count();
        d.checkpoints.retain(|c| c.step <= ckpt.step);
        d.progress = ckpt.step as f64;
        d.instability = ckpt.unstable;
        d.nan = if ckpt.nan {
            Some(NanState {
                onset_step: ckpt.step,
                poison_after: ckpt.step,
            })
        } else {
            None
        };
        let hang_note = match &mut d.hang {
            Some(h) if h.survives > 0 => {
                h.survives -= 1;
                h.hung = false;
                h.rehang_at = Some(d.active_secs + REHANG_AFTER);
                "the hang's cause was not fixed"
            }
            Some(_) => {
                d.hang = None;
                "hang cleared"
            }
            None => "",
        };
        let old_node = d.node;
        d.xids.retain(|x| !x.node_bound);
        d.straggler = None;
        d.ckpt_failing = false;
        if let Some(w) = d.pending_workers_scale.take() {
            d.workers_scale = w;
        }
        // A lowered lr (the pending patch, if any) is what cures the numeric faults.
        let lowered = d.pending_lr_scale.unwrap_or(d.lr_scale) < 1.0;
        d.divergence = match d.divergence {
            Some(onset) if ckpt.step <= onset && lowered => None,
            Some(onset) => Some(onset.min(ckpt.step)),
            None => None,
        };
        if d.scale_collapse && lowered {
            d.scale_collapse = false;
            d.loss_scale = LOSS_SCALE;
        }
        d.grad_burst_until = None;
        d.node += 1;
        d.restarts += 1;
        let old_scale = d.lr_scale;
        if let Some(s) = d.pending_lr_scale.take() {
            d.lr_scale = s;
        }
        let until = now + self.spec.restart_cost;
        d.phase = Phase::Restarting { until };
        d.last = None;
        let lr = d.lr_at(&self.spec, ckpt.step);
        let msg = format!(
            "restart from checkpoint at step {} requested; pods recreated on node-{} (was node-{old_node})",
            ckpt.step, d.node
        );
        d.event(now, msg);
        let mut detail = format!(
            "restarted sim/{name} from checkpoint at step {} (was at step {from_step}, {} steps rolled back, {discarded} later checkpoint(s) discarded); pods on node-{}, training resumes at {}; lr {}{}",
            ckpt.step,
            from_step.saturating_sub(ckpt.step),
            d.node,
            crate::clock::fmt_t(until),
            fmt_lr(lr),
            if (d.lr_scale - old_scale).abs() > f64::EPSILON {
                format!(
                    " (patched lr applied: scale {} → {})",
                    old_scale, d.lr_scale
                )
            } else {
                String::new()
            }
        );
        detail.push_str(note);
        if !hang_note.is_empty() {
            detail.push_str("; ");
            detail.push_str(hang_note);
        }
        Ok(ActionOutcome {
            detail,
            facts: json!({
                "checkpoint_step": ckpt.step,
                "checkpoint_t": ckpt.t,
                "from_step": from_step,
                "discarded_checkpoints": discarded,
                "node": d.node,
                "previous_node": old_node,
                "restarts": d.restarts,
                "resumes_at": until,
                "lr_scale": d.lr_scale,
                "lr": lr,
                "selector": selector,
            }),
        })
    }

    fn patch(&mut self, changes: &[ConfigChange], now: f64) -> Result<ActionOutcome, ActError> {
        let name = self.spec.name.clone();
        if changes.is_empty() {
            return Err(ActError::Refused(format!("sim/{name}: empty config patch")));
        }
        // Validate everything first: a patch applies whole or not at all.
        let step = self.d.step();
        let sched = self.spec.schedule_lr(step);
        let old_scale = self.d.pending_lr_scale.unwrap_or(self.d.lr_scale);
        let mut scale = old_scale;
        let old_workers = self.d.pending_workers_scale.unwrap_or(self.d.workers_scale);
        let mut workers = old_workers;
        let mut lr_changed = false;
        for c in changes {
            if c.key == "data.num_workers" {
                // The simulator models workers as a factor on the healthy count (8).
                workers = match &c.op {
                    ChangeOp::Scale(f) if f.is_finite() && *f > 0.0 => workers * f,
                    ChangeOp::Set(v) => match v.as_f64() {
                        Some(x) if x.is_finite() && x >= 1.0 => x / 8.0,
                        _ => {
                            return Err(ActError::Refused(format!(
                                "sim/{name}: data.num_workers must be set to 1 or more, got {v}"
                            )));
                        }
                    },
                    ChangeOp::Scale(f) => {
                        return Err(ActError::Refused(format!(
                            "sim/{name}: data.num_workers scale factor must be positive, got {f}"
                        )));
                    }
                };
                continue;
            }
            if c.key != "lr" {
                return Err(ActError::Refused(format!(
                    "sim/{name}: unknown config key `{}` (the simulator supports `lr` and `data.num_workers`)",
                    c.key
                )));
            }
            lr_changed = true;
            scale = match &c.op {
                ChangeOp::Scale(f) if f.is_finite() && *f > 0.0 => scale * f,
                ChangeOp::Scale(f) => {
                    return Err(ActError::Refused(format!(
                        "sim/{name}: lr scale factor must be a positive number, got {f}"
                    )));
                }
                ChangeOp::Set(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 && sched > 0.0 => x / sched,
                    _ => {
                        return Err(ActError::Refused(format!(
                            "sim/{name}: lr must be set to a positive number, got {v}"
                        )));
                    }
                },
            };
        }
        if !lr_changed {
            self.d.pending_workers_scale = Some(workers);
            let detail = format!(
                "data.num_workers {} → {}, takes effect at the next restart",
                old_workers * 8.0,
                workers * 8.0
            );
            self.d.event(now, format!("config patched: {detail}"));
            return Ok(ActionOutcome {
                detail,
                facts: json!({
                    "key": "data.num_workers",
                    "old": old_workers * 8.0,
                    "new": workers * 8.0,
                    "takes_effect": "next_restart",
                }),
            });
        }
        self.d.pending_workers_scale = Some(workers);
        let old_lr = self.d.lr_at(&self.spec, step);
        let new_lr = sched * scale;
        self.d.pending_lr_scale = Some(scale);
        let detail = format!(
            "lr {} → {}, takes effect at the next restart",
            fmt_lr(old_lr),
            fmt_lr(new_lr)
        );
        self.d.event(now, format!("config patched: {detail}"));
        Ok(ActionOutcome {
            detail,
            facts: json!({
                "key": "lr",
                "old_lr": old_lr,
                "new_lr": new_lr,
                "old_scale": old_scale,
                "new_scale": scale,
                "at_step": step,
                "takes_effect": "next_restart",
            }),
        })
    }

    fn diagnostics(&self) -> ActionOutcome {
        let d = &self.d;
        let step = d.step();
        let faults = d.active_faults(&self.spec);
        let events: Vec<&SimEvent> = d.events.iter().rev().take(5).rev().collect();
        let ckpt = d.last_checkpoint();
        ActionOutcome {
            detail: format!(
                "captured diagnostics of sim/{}: {} at step {step} on node-{}, {} active fault(s)",
                self.spec.name,
                d.phase().as_str(),
                d.node,
                faults.len()
            ),
            facts: json!({
                "phase": d.phase().as_str(),
                "step": step,
                "lr": d.lr_at(&self.spec, step),
                "lr_scale": d.lr_scale,
                "pending_lr_scale": d.pending_lr_scale,
                "node": d.node,
                "restarts": d.restarts,
                "xid_errors": d.xid_total,
                "last_checkpoint": ckpt,
                "active_faults": faults,
                "events": events,
            }),
        }
    }
}
