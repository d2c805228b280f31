//! Detector parameters, with defaults that work without configuration.
//!
//! Every window is in seconds of the engine's clock (fields named `*_secs`). The defaults are
//! chosen for runs that report every 10–60 s and are polled every 30 s; each field says why its
//! default is what it is. [`DetectorParams::validate`] rejects values that would make a detector
//! meaningless (a negative window, a ratio above 1) and names the field.

use serde::{Deserialize, Serialize};

/// Settings of the built-in detectors (config key `detectors`, or per watch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorParams {
    /// `nonfinite`: a NaN/Inf in loss, grad_norm, eval_loss, lr or loss_scale stays a condition
    /// for this long after it was seen. 120 s = four polls: long enough that one poll never
    /// misses it, short enough that a recovered run clears quickly.
    pub nonfinite_window_secs: f64,

    /// `loss_spike`: length of the baseline window whose median/MAD define the loss's normal
    /// band. 10 min holds 20 polls and 10–600 samples at usual logging rates (enough for a stable
    /// median) while following the downward trend of the loss and learning-rate schedule changes
    /// closely (a longer window spans level changes of the run and inflates the noise band).
    pub loss_baseline_secs: f64,
    /// `loss_spike`: the newest part of the chart kept out of the baseline, so a spike that is
    /// already a few samples long does not raise its own baseline. 2 min = four polls.
    pub loss_recent_secs: f64,
    /// `loss_spike`: how many robust sigmas (1.4826 × MAD) above the baseline median the latest
    /// loss must be. 8 is above what heavy-tailed batch-to-batch noise reaches in hours of
    /// training (OLMo-core uses 6σ against a mean/stddev band, which is less robust).
    pub loss_spike_sigmas: f64,
    /// `loss_spike`: and the latest loss must also be at least this fraction above the median.
    /// 0.1 (10 %) keeps very smooth losses (tiny MAD) from firing on harmless wiggles (2–5 %);
    /// real spikes (BLOOM: 2.2 → 5.1; CPM-Bee after a model change: 2.04 → 2.38) are larger.
    pub loss_spike_min_rise: f64,
    /// `loss_spike`: minimum number of finite baseline samples before the detector speaks.
    /// 15 keeps the median and MAD meaningful (their error is about ±20 % at 15 samples) during
    /// warm-up and right after a restart, and still lets a daily log speak after two weeks.
    pub loss_min_baseline_samples: usize,
    /// `loss_spike`: how long after its onset a loss that stays high keeps the condition
    /// active (measured against the band before the onset, so it is reported once). Beyond 1 h
    /// a high loss is the run's new level: a divergence, not a spike.
    pub loss_spike_hold_secs: f64,

    /// `stall`: no step progress for this many seconds while samples keep arriving, while the
    /// run's pauses are not learned yet and when a scheduled pause is due. 300 s is
    /// well above checkpoint saves and evaluation pauses of most runs and well below the NCCL
    /// collective timeout (10 min), so a hang is caught before the job's own watchdog.
    pub stall_after_secs: f64,
    /// `stall`: the newest `step` sample must be at most this old, or the data has stopped
    /// arriving (that is `metrics_absent`, not a stall). 180 s tolerates a few missed scrapes.
    pub stall_fresh_secs: f64,
    /// `stall`: the shortest threshold, for a stop off the run's eval/checkpoint schedule once
    /// its pauses are learned. 45 s: at a 30 s poll interval, the second poll after the last
    /// advance sees the same step; a healthy run does not stand still that long between two
    /// steps outside its planned pauses (the learned bar rises above its own irregular stops).
    pub stall_min_secs: f64,
    /// `stall`: history the run needs before its pauses are learned (2 h: two or more evals or
    /// checkpoints of most runs), or half of it once three evenly spaced pauses show the run's
    /// schedule. Until then `stall_after_secs` applies.
    pub stall_learn_secs: f64,

    /// `gpu_hardware_error`: an increase of the cumulative Xid / ECC counter within this window
    /// is a condition. 10 min keeps it visible over many polls without holding it for long
    /// after the event.
    pub hardware_window_secs: f64,

    /// `throughput_drop`: window of the recent throughput median. 5 min rides over one
    /// checkpoint save or evaluation pause, so those are not reported as slowdowns.
    pub throughput_recent_secs: f64,
    /// `throughput_drop`: window of the run's own baseline median, before the recent window.
    /// 60 min averages over periodic pauses and diurnal drifts of a few percent.
    pub throughput_baseline_secs: f64,
    /// `throughput_drop`: a drop is a recent median below this fraction of the baseline.
    /// 0.7 matches NVRx's straggler threshold; thermal throttling (1–5 %) stays below it.
    pub throughput_drop_ratio: f64,
    /// `throughput_drop`: minimum finite samples in the baseline window.
    pub throughput_min_baseline_samples: usize,
    /// `throughput_drop`: minimum finite samples in the recent window (5 × 60 s scrapes).
    pub throughput_min_recent_samples: usize,
    /// `throughput_drop`: how long after its onset a sustained slowdown stays reported against
    /// the throughput before its onset. 2 h; after that the slower rate is the new baseline.
    pub throughput_hold_secs: f64,

    /// `loss_spike`: consecutive samples (one or two dips tolerated) that must lie above the
    /// band. 2: a single-batch outlier that is back in the band on the very next sample is not
    /// actionable (healthy runs have them), while a real spike lasts tens of steps. At per-step
    /// logging the second sample arrives within the same poll, so latency does not change.
    pub loss_spike_min_samples: usize,

    /// `loss_divergence`: the smoothed loss is the median of this newest window. 60 s = two
    /// polls (the samples of three polls): long enough to ride over single noisy batches, short
    /// enough to see a rise early.
    pub divergence_recent_secs: f64,
    /// `loss_divergence`: the window before the recent one whose consecutive differences give the
    /// noise sigma, and which must hold `divergence_min_samples`. 15 min (30 polls).
    pub divergence_baseline_secs: f64,
    /// `loss_divergence`: the smoothed loss must be this many noise sigmas above the best level.
    /// The noise sigma is 1.4826 × the MAD of consecutive differences / √2, which is immune to
    /// the trend. 3 is what a median of three noisy samples reaches by chance very rarely.
    pub divergence_sigmas: f64,
    /// `loss_divergence`: and at least this fraction above the best level (7.5 %). Per-batch
    /// noise averages out in a median, but batch noise is autocorrelated (data shards): the
    /// one-minute median of a healthy small-batch run wanders up to 7 % above its two-hour best
    /// (nanoGPT 1.5B), so less than that is not evidence of a run going wrong.
    pub divergence_min_rise: f64,
    /// `loss_divergence`: minimum finite samples in the baseline window (warm-up, restarts).
    pub divergence_min_samples: usize,
    /// `loss_divergence`: look-back whose lower quartile is the best level reached. 2 h: a rise
    /// lasting an hour is still compared with the level before it (one report), and a run that
    /// settled at a higher level after a planned change has a new normal two hours later.
    pub divergence_lookback_secs: f64,
    /// `loss_divergence`: a loss that jumped to its elevated level (rather than climbing) is a
    /// spike first, and a divergence only once it has held this long. 10 min (20 polls): long
    /// enough for the loss-spike runbook to roll back, short enough that a jump which does not
    /// come down is escalated to the divergence runbook within the hour.
    pub divergence_jump_hold_secs: f64,

    /// `grad_explosion`: baseline window of the gradient norm (median). 10 min.
    pub grad_baseline_secs: f64,
    /// `grad_explosion`: a grad norm at least this many times its baseline median is exploding.
    /// 10, an order of magnitude: grad norms of healthy runs wander within 2–3× and hard
    /// batches blip to 7–8× (the healthy llm.c run); a norm held at 3–10× while the loss climbs
    /// is the start of a divergence (`loss_divergence`, whose runbook rolls back), whereas the
    /// explosions teams logged (BLOOM-176B, OPT-175B) were ×10–1000.
    pub grad_explosion_factor: f64,
    /// `grad_explosion`: consecutive samples above the threshold. 3: isolated one-step blips
    /// (a hard batch; 7× the median in the healthy llm.c run) recover on the next step.
    pub grad_explosion_min_samples: usize,
    /// `grad_explosion`: minimum finite samples in the baseline window.
    pub grad_min_baseline_samples: usize,

    /// `loss_scale_collapse`: window in which loss-scale reductions and skipped steps are
    /// counted. 10 min.
    pub loss_scale_window_secs: f64,
    /// `loss_scale_collapse`: this many reductions of the dynamic loss scale within the window.
    /// 8 (a 256× fall): a healthy fp16 scaler backs off about once per growth interval (2000
    /// steps), but its first calibration from 2^16, or a patch of hard batches, costs a few
    /// halvings within minutes (65536 → 4096 in 8 min happens in healthy runs). A scaler in
    /// collapse overflows on every step and halves every step or two: past 8 within a minute.
    pub loss_scale_max_drops: usize,
    /// `loss_scale_collapse`: or the loss scale at or below this value (1.0: nothing left to
    /// scale, every step overflows).
    pub loss_scale_floor: f64,
    /// `loss_scale_collapse`: or this many skipped optimizer steps within the window (25).
    pub skipped_steps_max: f64,

    /// `loss_plateau`: the smoothed loss (median of `loss_plateau_window_secs`) is compared with
    /// its value this long ago. 4 h: healthy runs improve measurably over hours even late.
    pub loss_plateau_secs: f64,
    /// `loss_plateau`: smoothing window at both ends. 30 min.
    pub loss_plateau_window_secs: f64,
    /// `loss_plateau`: improvement below this fraction over `loss_plateau_secs` is a plateau
    /// (0.2 %).
    pub loss_plateau_min_drop: f64,
    /// `loss_plateau`: the condition holds while any check (one every sixth of the smoothing
    /// window) of this long shows a plateau. 1 h: a flat loss's medians flicker around the
    /// threshold; a resumed fall shows at every check within the hour.
    pub loss_plateau_hold_secs: f64,

    /// `eval_regression`: the latest evaluation loss this fraction above the best so far (5 %).
    pub eval_regression_min_rise: f64,
    /// `eval_regression`: for this many consecutive evaluations (2: one bad eval is noise).
    pub eval_regression_min_evals: usize,
    /// `eval_regression`: evaluations needed before the best means anything (3).
    pub eval_min_history: usize,

    /// `lr_anomaly`: window of the reference (highest recent) learning rate. 5 min.
    pub lr_window_secs: f64,
    /// `lr_anomaly`: a learning rate above this factor × the reference is a jump (2: a linear
    /// warm-up never doubles against the window's maximum once it holds 10 samples).
    pub lr_jump_factor: f64,
    /// `lr_anomaly`: a learning rate that falls to zero counts only if the sample before it was
    /// at least this fraction of the recent peak (5 %): a schedule that decays to zero gets
    /// there smoothly, and a printed value that rounds to 0 at the end is not an anomaly.
    pub lr_zero_min_fraction: f64,
    /// `lr_anomaly`: how long the condition stays after the anomalous sample (15 min).
    pub lr_hold_secs: f64,
    /// `lr_anomaly`: how far back an anomaly that still holds is looked for (6 h). A learning
    /// rate that has stayed at a wrong value that long without anyone fixing it is the run's
    /// new normal; until then the finding holds and the runbook escalates.
    pub lr_max_hold_secs: f64,

    /// `metrics_absent`: no sample on any chart for this long. 300 s = ten 30-s polls, beyond
    /// a Prometheus scrape hiccup or a slow evaluation export.
    pub absent_after_secs: f64,
    /// `metrics_absent`: charts must have arrived without such a gap for this long first. 30 min:
    /// exporters that are still starting, and sampled or short-lived series (profiler bursts),
    /// are not a live feed that has stopped.
    pub absent_history_secs: f64,

    /// `gpu_util_drop`: recent window (median). 5 min rides over one checkpoint save.
    pub gpu_util_recent_secs: f64,
    /// `gpu_util_drop`: baseline window before it (60 min).
    pub gpu_util_baseline_secs: f64,
    /// `gpu_util_drop`: a recent median below this fraction of the baseline (0.6).
    pub gpu_util_drop_ratio: f64,

    /// `dataloader_stall`: recent window of `data_wait` (5 min).
    pub dataloader_recent_secs: f64,
    /// `dataloader_stall`: the input pipeline takes at least this fraction of the step (0.3):
    /// a well-fed run waits a few percent.
    pub dataloader_wait_fraction: f64,

    /// `crash_loop`: window in which restarts are counted (30 min).
    pub crash_loop_window_secs: f64,
    /// `crash_loop`: this many restarts within the window (3: one restart is recovery, three is a
    /// loop).
    pub crash_loop_restarts: f64,

    /// `checkpoint_stale`: `checkpoint_age` above this many seconds (3 h: most policies save at
    /// least hourly; losing more than three hours of a large run is the risk worth a page).
    pub checkpoint_max_age_secs: f64,

    /// `straggler`: window of each rank's median compute (or step) time. 2 min.
    pub straggler_window_secs: f64,
    /// `straggler`: a rank whose median is this factor above the median of its peers (1.3).
    /// Healthy ranks agree within a few percent; NVRx flags ranks below 0.7 relative speed.
    pub straggler_ratio: f64,
    /// `straggler`: peers needed for a comparison (3).
    pub straggler_min_ranks: usize,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            nonfinite_window_secs: 120.0,
            loss_baseline_secs: 600.0,
            loss_recent_secs: 120.0,
            loss_spike_sigmas: 8.0,
            loss_spike_min_rise: 0.1,
            loss_min_baseline_samples: 15,
            loss_spike_hold_secs: 3600.0,
            stall_after_secs: 300.0,
            stall_fresh_secs: 180.0,
            stall_min_secs: 45.0,
            stall_learn_secs: 7200.0,
            hardware_window_secs: 600.0,
            throughput_recent_secs: 300.0,
            throughput_baseline_secs: 3600.0,
            throughput_drop_ratio: 0.7,
            throughput_min_baseline_samples: 20,
            throughput_min_recent_samples: 5,
            throughput_hold_secs: 7200.0,
            loss_spike_min_samples: 2,
            divergence_recent_secs: 60.0,
            divergence_baseline_secs: 900.0,
            divergence_sigmas: 3.0,
            divergence_min_rise: 0.075,
            divergence_min_samples: 10,
            divergence_lookback_secs: 7200.0,
            divergence_jump_hold_secs: 600.0,
            grad_baseline_secs: 600.0,
            grad_explosion_factor: 10.0,
            grad_explosion_min_samples: 3,
            grad_min_baseline_samples: 20,
            loss_scale_window_secs: 600.0,
            loss_scale_max_drops: 8,
            loss_scale_floor: 1.0,
            skipped_steps_max: 25.0,
            loss_plateau_secs: 4.0 * 3600.0,
            loss_plateau_window_secs: 1800.0,
            loss_plateau_min_drop: 0.002,
            loss_plateau_hold_secs: 3600.0,
            eval_regression_min_rise: 0.05,
            eval_regression_min_evals: 2,
            eval_min_history: 3,
            lr_window_secs: 300.0,
            lr_jump_factor: 2.0,
            lr_zero_min_fraction: 0.05,
            lr_hold_secs: 900.0,
            lr_max_hold_secs: 6.0 * 3600.0,
            absent_after_secs: 300.0,
            absent_history_secs: 1800.0,
            gpu_util_recent_secs: 300.0,
            gpu_util_baseline_secs: 3600.0,
            gpu_util_drop_ratio: 0.6,
            dataloader_recent_secs: 300.0,
            dataloader_wait_fraction: 0.3,
            crash_loop_window_secs: 1800.0,
            crash_loop_restarts: 3.0,
            checkpoint_max_age_secs: 3.0 * 3600.0,
            straggler_window_secs: 120.0,
            straggler_ratio: 1.3,
            straggler_min_ranks: 3,
        }
    }
}

/// A detector parameter that makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detectors.{field}: {reason}")]
pub struct ParamsError {
    /// The field, as written in the config file.
    pub field: &'static str,
    pub reason: String,
}

impl DetectorParams {
    /// Checks that every window is a finite positive number of seconds and every ratio is in
    /// range. Detectors never panic on bad parameters, but they would silently never fire.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let positive = [
            ("nonfinite_window_secs", self.nonfinite_window_secs),
            ("loss_baseline_secs", self.loss_baseline_secs),
            ("loss_recent_secs", self.loss_recent_secs),
            ("loss_spike_sigmas", self.loss_spike_sigmas),
            ("stall_after_secs", self.stall_after_secs),
            ("stall_fresh_secs", self.stall_fresh_secs),
            ("stall_min_secs", self.stall_min_secs),
            ("stall_learn_secs", self.stall_learn_secs),
            ("hardware_window_secs", self.hardware_window_secs),
            ("throughput_recent_secs", self.throughput_recent_secs),
            ("throughput_baseline_secs", self.throughput_baseline_secs),
            ("divergence_recent_secs", self.divergence_recent_secs),
            ("divergence_baseline_secs", self.divergence_baseline_secs),
            ("divergence_sigmas", self.divergence_sigmas),
            ("grad_baseline_secs", self.grad_baseline_secs),
            ("grad_explosion_factor", self.grad_explosion_factor),
            ("loss_scale_window_secs", self.loss_scale_window_secs),
            ("skipped_steps_max", self.skipped_steps_max),
            ("loss_plateau_secs", self.loss_plateau_secs),
            ("loss_plateau_window_secs", self.loss_plateau_window_secs),
            ("lr_window_secs", self.lr_window_secs),
            ("lr_jump_factor", self.lr_jump_factor),
            ("absent_after_secs", self.absent_after_secs),
            ("gpu_util_recent_secs", self.gpu_util_recent_secs),
            ("gpu_util_baseline_secs", self.gpu_util_baseline_secs),
            ("dataloader_recent_secs", self.dataloader_recent_secs),
            ("crash_loop_window_secs", self.crash_loop_window_secs),
            ("crash_loop_restarts", self.crash_loop_restarts),
            ("checkpoint_max_age_secs", self.checkpoint_max_age_secs),
            ("straggler_window_secs", self.straggler_window_secs),
            ("straggler_ratio", self.straggler_ratio),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(ParamsError {
                    field,
                    reason: format!("must be a finite number above 0, got {v}"),
                });
            }
        }
        let non_negative = [
            ("loss_spike_min_rise", self.loss_spike_min_rise),
            ("loss_spike_hold_secs", self.loss_spike_hold_secs),
            ("throughput_hold_secs", self.throughput_hold_secs),
            ("divergence_min_rise", self.divergence_min_rise),
            ("divergence_lookback_secs", self.divergence_lookback_secs),
            ("divergence_jump_hold_secs", self.divergence_jump_hold_secs),
            ("loss_scale_floor", self.loss_scale_floor),
            ("loss_plateau_min_drop", self.loss_plateau_min_drop),
            ("loss_plateau_hold_secs", self.loss_plateau_hold_secs),
            ("eval_regression_min_rise", self.eval_regression_min_rise),
            ("lr_zero_min_fraction", self.lr_zero_min_fraction),
            ("lr_hold_secs", self.lr_hold_secs),
            ("lr_max_hold_secs", self.lr_max_hold_secs),
            ("absent_history_secs", self.absent_history_secs),
            ("dataloader_wait_fraction", self.dataloader_wait_fraction),
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ParamsError {
                    field,
                    reason: format!("must be a finite number of at least 0, got {v}"),
                });
            }
        }
        for (field, v) in [
            ("throughput_drop_ratio", self.throughput_drop_ratio),
            ("gpu_util_drop_ratio", self.gpu_util_drop_ratio),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(ParamsError {
                    field,
                    reason: format!("must be between 0 and 1 (exclusive), got {v}"),
                });
            }
        }
        let counts = [
            ("loss_min_baseline_samples", self.loss_min_baseline_samples),
            (
                "throughput_min_baseline_samples",
                self.throughput_min_baseline_samples,
            ),
            (
                "throughput_min_recent_samples",
                self.throughput_min_recent_samples,
            ),
            ("loss_spike_min_samples", self.loss_spike_min_samples),
            ("divergence_min_samples", self.divergence_min_samples),
            (
                "grad_explosion_min_samples",
                self.grad_explosion_min_samples,
            ),
            ("grad_min_baseline_samples", self.grad_min_baseline_samples),
            ("loss_scale_max_drops", self.loss_scale_max_drops),
            ("eval_regression_min_evals", self.eval_regression_min_evals),
            ("eval_min_history", self.eval_min_history),
            ("straggler_min_ranks", self.straggler_min_ranks),
        ];
        for (field, v) in counts {
            if v == 0 {
                return Err(ParamsError {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_config_fills_in() {
        assert_eq!(DetectorParams::default().validate(), Ok(()));
        let p: DetectorParams = toml::from_str("stall_after_secs = 600.0").expect("parses");
        assert_eq!(p.stall_after_secs, 600.0);
        assert_eq!(p.loss_spike_sigmas, 8.0);
    }

    #[test]
    fn unknown_and_bad_fields_are_rejected_by_name() {
        assert!(toml::from_str::<DetectorParams>("stall_secs = 1.0").is_err());
        let p = DetectorParams {
            throughput_drop_ratio: 1.5,
            ..DetectorParams::default()
        };
        let e = p.validate().expect_err("ratio above 1");
        assert_eq!(e.field, "throughput_drop_ratio");
        let p = DetectorParams {
            loss_baseline_secs: f64::NAN,
            ..DetectorParams::default()
        };
        assert_eq!(
            p.validate().expect_err("NaN window").field,
            "loss_baseline_secs"
        );
        let p = DetectorParams {
            loss_min_baseline_samples: 0,
            ..DetectorParams::default()
        };
        assert!(
            p.validate()
                .expect_err("zero")
                .to_string()
                .contains("loss_min_baseline_samples")
        );
    }
}
