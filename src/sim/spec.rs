//! What a simulated run is: its shape ([`SimRunSpec`]), its loss curve ([`LossCurve`]) and the
//! faults scheduled into it ([`Fault`]). Specs are plain data (serde, `deny_unknown_fields`) so
//! a config file can declare demo runs; [`SimRunSpec::validate`] rejects nonsense with the field
//! it is about.

use serde::{Deserialize, Serialize};

use super::SimError;

/// How far before the clock's `now` a run may start: the simulator backfills its history from
/// the start, so a start years in the past (a unit mix-up) would mean millions of scrapes.
pub const MAX_BACKFILL_SECS: f64 = 30.0 * 86_400.0;

/// `loss(step) = l_inf + a · (step + s0)^-alpha`: a power law, the shape of LM pre-training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossCurve {
    pub l_inf: f64,
    pub a: f64,
    pub s0: f64,
    pub alpha: f64,
}

impl Default for LossCurve {
    /// ≈3.8 at step 0, ≈2.4 at step 5,000, ≈2.3 at step 10,000.
    fn default() -> Self {
        LossCurve {
            l_inf: 1.8,
            a: 8.0,
            s0: 100.0,
            alpha: 0.3,
        }
    }
}

impl LossCurve {
    pub fn at(&self, step: u64) -> f64 {
        self.l_inf + self.a * (step as f64 + self.s0).powf(-self.alpha)
    }
}

/// A fault scheduled into a run. `at` is seconds after the run's start; every fault fires once,
/// at the first scrape at or after `at` at which the run is training (not while paused or
/// while its pods are being recreated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// A bad-data region `[step, step + span_steps)` starting at the step the run is at when
    /// the fault fires. Training through it with an effective lr above `lr_safe` destabilises
    /// the run (loss ≈3× and rising, grad norm ×50–200) until a restart; below `lr_safe` it
    /// only leaves a bump of ≈2%. The data stays bad: a restart before the region without a
    /// lower lr spikes again.
    LossSpike { at: f64, span_steps: u64 },
    /// A collective hang: the step counter stops, the exporter serves stale gauges and the GPUs
    /// spin (busy, no progress). A restart clears it, unless it survives that many restarts (it
    /// then hangs again after 60 s of training).
    Hang {
        at: f64,
        #[serde(default)]
        survives_restarts: u32,
    },
    /// GPU Xid errors: the counter rises by one every `every` seconds of training, up to
    /// `errors`, and step time degrades by 10%. A node-bound fault (a bad GPU) lasts until a
    /// restart moves the run to another node; otherwise it lasts while errors keep coming.
    GpuXid {
        at: f64,
        errors: u32,
        every: f64,
        #[serde(default)]
        node_bound: bool,
    },
    /// Loss and grad norm become NaN and stay NaN until a restart. Checkpoints saved more than
    /// `steps` steps after the onset hold NaN weights (restoring them keeps the run NaN).
    Nan { at: f64, steps: u64 },
    /// Throughput × `factor` (step time ÷ `factor`) for `duration` seconds while the GPUs stay
    /// busy: a degraded interconnect (NCCL kernels spin waiting on the network, which counts as
    /// utilisation) or throttled clocks. Restarts do not help. GPUs left idle are
    /// [`Fault::GpuUtilDrop`]; an input pipeline that starves them is [`Fault::DataloaderStall`].
    ThroughputDrop { at: f64, factor: f64, duration: f64 },
    /// A sustained rise of the loss (≈+0.05 % per step over the curve, grad norm ×3–10) that
    /// does not recover. A restart to a checkpoint before the onset with a lowered lr (scale
    /// below 1) clears it; without one the run diverges again from the restored step.
    LossDivergence { at: f64 },
    /// The gradient norm jumps ×100–1000 for `steps` steps; the loss does not follow (the
    /// clipper absorbs it, as in BLOOM-176B at iteration ≈31230). Ends by itself.
    GradExplosion { at: f64, steps: u64 },
    /// The fp16 loss scale halves at every scrape down to 1 and skipped steps climb by
    /// ≈20 per scrape. A restart with a lowered lr clears it.
    LossScaleCollapse { at: f64 },
    /// The loss stops improving: it stays at its value at the onset (noise continues).
    LossPlateau { at: f64 },
    /// The evaluation loss (a gauge updated every 20 scrapes) rises ≈2 % per evaluation above
    /// its best while the training loss keeps falling (overfitting / repeated data).
    EvalRegression { at: f64 },
    /// The learning rate is multiplied by `factor` (a wrong value after a resume); a patch of
    /// `lr` applied by a restart corrects it.
    LrAnomaly { at: f64, factor: f64 },
    /// The exporter stops serving for `duration` seconds while training goes on.
    MetricsAbsent { at: f64, duration: f64 },
    /// Rank `rank`'s compute time × `factor`; every rank waits for it, so step time rises
    /// too. Node-bound: a restart moves the run to another node and clears it.
    Straggler { at: f64, rank: u32, factor: f64 },
    /// GPUs wait on something outside them (network, host): utilisation falls to `util`
    /// (0–1) and throughput with it, for `duration` seconds.
    GpuUtilDrop { at: f64, util: f64, duration: f64 },
    /// The input pipeline takes `wait` (a fraction in (0, 1)) of every step for `duration`
    /// seconds. Doubling `data.num_workers` (applied at a restart) halves the wait.
    DataloaderStall { at: f64, wait: f64, duration: f64 },
    /// The workers crash every 90 s of training and restart from the last checkpoint,
    /// `crashes` times (a corrupt checkpoint or a deterministic bug). A pause stops it.
    CrashLoop { at: f64, crashes: u32 },
    /// Checkpoint saves stop completing (storage failing) until the next restart.
    CheckpointStale { at: f64 },
}

impl Fault {
    /// Seconds after the run's start at which the fault is due.
    pub fn at(&self) -> f64 {
        match self {
            Fault::LossSpike { at, .. }
            | Fault::Hang { at, .. }
            | Fault::GpuXid { at, .. }
            | Fault::Nan { at, .. }
            | Fault::ThroughputDrop { at, .. }
            | Fault::LossDivergence { at }
            | Fault::GradExplosion { at, .. }
            | Fault::LossScaleCollapse { at }
            | Fault::LossPlateau { at }
            | Fault::EvalRegression { at }
            | Fault::LrAnomaly { at, .. }
            | Fault::MetricsAbsent { at, .. }
            | Fault::Straggler { at, .. }
            | Fault::GpuUtilDrop { at, .. }
            | Fault::DataloaderStall { at, .. }
            | Fault::CrashLoop { at, .. }
            | Fault::CheckpointStale { at } => *at,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fault::LossSpike { .. } => "loss_spike",
            Fault::Hang { .. } => "hang",
            Fault::GpuXid { .. } => "gpu_xid",
            Fault::Nan { .. } => "nan",
            Fault::ThroughputDrop { .. } => "throughput_drop",
            Fault::LossDivergence { .. } => "loss_divergence",
            Fault::GradExplosion { .. } => "grad_explosion",
            Fault::LossScaleCollapse { .. } => "loss_scale_collapse",
            Fault::LossPlateau { .. } => "loss_plateau",
            Fault::EvalRegression { .. } => "eval_regression",
            Fault::LrAnomaly { .. } => "lr_anomaly",
            Fault::MetricsAbsent { .. } => "metrics_absent",
            Fault::Straggler { .. } => "straggler",
            Fault::GpuUtilDrop { .. } => "gpu_util_drop",
            Fault::DataloaderStall { .. } => "dataloader_stall",
            Fault::CrashLoop { .. } => "crash_loop",
            Fault::CheckpointStale { .. } => "checkpoint_stale",
        }
    }
}

/// One simulated training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRunSpec {
    pub name: String,
    /// Clock time (Unix-like seconds) the run started; may lie before the clock's origin so the
    /// run has history on the first poll.
    pub start: f64,
    /// Seconds between scrapes; samples land on `start + k · scrape_interval`.
    #[serde(default = "defaults::scrape_interval")]
    pub scrape_interval: f64,
    /// Seconds per optimizer step on a healthy node.
    #[serde(default = "defaults::step_time")]
    pub step_time: f64,
    /// A checkpoint completes every this many steps.
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Seconds with no progress and no metrics while pods are recreated on a restart.
    #[serde(default = "defaults::restart_cost")]
    pub restart_cost: f64,
    /// Peak learning rate of the schedule.
    #[serde(default = "defaults::base_lr")]
    pub base_lr: f64,
    /// Linear warm-up length, then cosine decay to 10% of `base_lr` at `total_steps`.
    #[serde(default = "defaults::warmup_steps")]
    pub warmup_steps: u64,
    #[serde(default = "defaults::total_steps")]
    pub total_steps: u64,
    /// A bad-data region destabilises the run only when the effective lr is above this.
    #[serde(default = "defaults::lr_safe")]
    pub lr_safe: f64,
    /// Tokens per optimizer step (global batch).
    #[serde(default = "defaults::batch_tokens")]
    pub batch_tokens: f64,
    #[serde(default)]
    pub loss_curve: LossCurve,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

mod defaults {
    pub fn scrape_interval() -> f64 {
        15.0
    }
    pub fn step_time() -> f64 {
        2.0
    }
    pub fn checkpoint_every() -> u64 {
        300
    }
    pub fn restart_cost() -> f64 {
        120.0
    }
    pub fn base_lr() -> f64 {
        3e-4
    }
    pub fn warmup_steps() -> u64 {
        2_000
    }
    pub fn total_steps() -> u64 {
        250_000
    }
    pub fn lr_safe() -> f64 {
        2e-4
    }
    pub fn batch_tokens() -> f64 {
        4_194_304.0
    }
}

impl SimRunSpec {
    /// A healthy run with realistic defaults: 15 s scrapes, 2 s/step, a checkpoint every 300
    /// steps (10 min), 2 min to recreate pods, peak lr 3e-4 after 2,000 warm-up steps, cosine
    /// decay over 250,000 steps (≈6 days), 4 M tokens per step (≈2.1 M tokens/s), no faults.
    pub fn new(name: impl Into<String>, start: f64) -> Self {
        SimRunSpec {
            name: name.into(),
            start,
            scrape_interval: defaults::scrape_interval(),
            step_time: defaults::step_time(),
            checkpoint_every: defaults::checkpoint_every(),
            restart_cost: defaults::restart_cost(),
            base_lr: defaults::base_lr(),
            warmup_steps: defaults::warmup_steps(),
            total_steps: defaults::total_steps(),
            lr_safe: defaults::lr_safe(),
            batch_tokens: defaults::batch_tokens(),
            loss_curve: LossCurve::default(),
            faults: Vec::new(),
        }
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// The learning-rate schedule (before any `lr_scale` patch) at `step`.
    pub fn schedule_lr(&self, step: u64) -> f64 {
        let s = step as f64;
        if step < self.warmup_steps {
            return self.base_lr * (s + 1.0) / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let p = ((s - self.warmup_steps as f64) / span).clamp(0.0, 1.0);
        let min = 0.1 * self.base_lr;
        min + (self.base_lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }

    /// Rejects specs the simulator cannot run, naming the field.
    pub fn validate(&self, now: f64) -> Result<(), SimError> {
        let bad = |field: &str, reason: String| SimError::InvalidSpec {
            run: self.name.clone(),
            field: field.to_string(),
            reason,
        };
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(field, format!("must be a positive number, got {v}")))
            }
        };
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        if !self.start.is_finite() {
            return Err(bad(
                "start",
                format!("must be a finite time, got {}", self.start),
            ));
        }
        if now - self.start > MAX_BACKFILL_SECS {
            return Err(bad(
                "start",
                format!(
                    "{:.0} s before the clock's now ({now:.0}); at most {MAX_BACKFILL_SECS:.0} s of history is simulated (seconds since the Unix epoch expected)",
                    now - self.start
                ),
            ));
        }
        if !(self.scrape_interval.is_finite() && self.scrape_interval >= 0.1) {
            return Err(bad(
                "scrape_interval",
                format!("must be at least 0.1 s, got {}", self.scrape_interval),
            ));
        }
        positive("step_time", self.step_time)?;
        positive("base_lr", self.base_lr)?;
        positive("lr_safe", self.lr_safe)?;
        positive("batch_tokens", self.batch_tokens)?;
        if !(self.restart_cost.is_finite() && self.restart_cost >= 0.0) {
            return Err(bad(
                "restart_cost",
                format!("must be zero or more seconds, got {}", self.restart_cost),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(bad("checkpoint_every", "must be at least 1 step".into()));
        }
        if self.total_steps == 0 || self.warmup_steps >= self.total_steps {
            return Err(bad(
                "warmup_steps",
                format!(
                    "warm-up ({}) must be shorter than total_steps ({})",
                    self.warmup_steps, self.total_steps
                ),
            ));
        }
        let c = &self.loss_curve;
        if ![c.l_inf, c.a, c.s0, c.alpha].iter().all(|v| v.is_finite())
            || c.s0 <= 0.0
            || c.alpha <= 0.0
        {
            return Err(bad(
                "loss_curve",
                "needs finite values with s0 > 0 and alpha > 0".into(),
            ));
        }
        let positive_secs = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(field, format!("must be positive seconds, got {v}")))
            }
        };
        for (i, f) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{i}].{name}");
            let at = f.at();
            if !(at.is_finite() && at >= 0.0) {
                return Err(bad(
                    &field("at"),
                    format!("must be zero or more seconds, got {at}"),
                ));
            }
            match f {
                Fault::LossSpike { span_steps, .. } if *span_steps == 0 => {
                    return Err(bad(&field("span_steps"), "must be at least 1".into()));
                }
                Fault::GpuXid { every, .. } if !(every.is_finite() && *every > 0.0) => {
                    return Err(bad(
                        &field("every"),
                        format!("must be positive seconds, got {every}"),
                    ));
                }
                Fault::ThroughputDrop {
                    factor, duration, ..
                } => {
                    if !(factor.is_finite() && *factor > 0.0 && *factor <= 1.0) {
                        return Err(bad(
                            &field("factor"),
                            format!("must be in (0, 1], got {factor}"),
                        ));
                    }
                    if !(duration.is_finite() && *duration > 0.0) {
                        return Err(bad(
                            &field("duration"),
                            format!("must be positive seconds, got {duration}"),
                        ));
                    }
                }
                Fault::GradExplosion { steps, .. } if *steps == 0 => {
                    return Err(bad(&field("steps"), "must be at least 1".into()));
                }
                Fault::LrAnomaly { factor, .. } if !(factor.is_finite() && *factor >= 0.0) => {
                    return Err(bad(
                        &field("factor"),
                        format!("must be zero or a positive number, got {factor}"),
                    ));
                }
                Fault::Straggler { factor, .. } if !(factor.is_finite() && *factor >= 1.0) => {
                    return Err(bad(
                        &field("factor"),
                        format!("must be at least 1 (a slowdown), got {factor}"),
                    ));
                }
                Fault::GpuUtilDrop { util, duration, .. } => {
                    if !(util.is_finite() && *util > 0.0 && *util < 1.0) {
                        return Err(bad(
                            &field("util"),
                            format!("must be in (0, 1), got {util}"),
                        ));
                    }
                    positive_secs(&field("duration"), *duration)?;
                }
                Fault::DataloaderStall { wait, duration, .. } => {
                    if !(wait.is_finite() && *wait > 0.0 && *wait < 1.0) {
                        return Err(bad(
                            &field("wait"),
                            format!("must be in (0, 1), got {wait}"),
                        ));
                    }
                    positive_secs(&field("duration"), *duration)?;
                }
                Fault::MetricsAbsent { duration, .. } => {
                    positive_secs(&field("duration"), *duration)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_warms_up_then_decays_to_ten_percent() {
        let s = SimRunSpec::new("r", 0.0);
        assert!((s.schedule_lr(999) - 1.5e-4).abs() < 1e-12);
        assert!((s.schedule_lr(2_000) - 3e-4).abs() < 1e-12);
        assert!((s.schedule_lr(250_000) - 3e-5).abs() < 1e-12);
        assert!((s.schedule_lr(1_000_000) - 3e-5).abs() < 1e-12);
        let mid = s.schedule_lr(126_000);
        assert!((mid - 1.65e-4).abs() < 1e-6, "{mid}");
        assert!(s.schedule_lr(6_000) > s.lr_safe);
    }

    #[test]
    fn loss_curve_decreases() {
        let c = LossCurve::default();
        assert!((c.at(0) - 3.808).abs() < 0.01, "{}", c.at(0));
        assert!(c.at(5_000) > c.at(10_000));
        assert!(c.at(10_000) > c.l_inf);
    }

    #[test]
    fn validate_names_the_field() {
        let mut s = SimRunSpec::new("r", 1000.0);
        assert!(s.validate(1000.0).is_ok());
        s.step_time = 0.0;
        let e = s.validate(1000.0).unwrap_err().to_string();
        assert!(e.contains("step_time"), "{e}");
        let s = SimRunSpec::new("r", 0.0);
        let e = s.validate(1.7e9).unwrap_err().to_string();
        assert!(e.contains("start"), "{e}");
        let s = SimRunSpec::new("r", 0.0).with_fault(Fault::ThroughputDrop {
            at: 5.0,
            factor: 2.0,
            duration: 10.0,
        });
        let e = s.validate(0.0).unwrap_err().to_string();
        assert!(e.contains("faults[0].factor"), "{e}");
    }

    #[test]
    fn spec_parses_from_yaml_with_defaults() {
        let yaml = "name: a\nstart: 100.0\nfaults:\n  - kind: hang\n    at: 60\n    survives_restarts: 1\n";
        let s: SimRunSpec = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(s.step_time, 2.0);
        assert_eq!(
            s.faults,
            vec![Fault::Hang {
                at: 60.0,
                survives_restarts: 1
            }]
        );
        assert!(serde_saphyr::from_str::<SimRunSpec>("name: a\nstart: 1\nbogus: 2\n").is_err());
    }
}
