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
    /// band. 30 min holds 30–180 samples at usual logging rates (enough for a stable median)
    /// while following the slow downward trend of the loss and learning-rate schedule changes.
    pub loss_baseline_secs: f64,
    /// `loss_spike`: the newest part of the chart kept out of the baseline, so a spike that is
    /// already a few samples long does not raise its own baseline. 2 min = four polls.
    pub loss_recent_secs: f64,
    /// `loss_spike`: how many robust sigmas (1.4826 × MAD) above the baseline median the latest
    /// loss must be. 8 is above what heavy-tailed batch-to-batch noise reaches in hours of
    /// training (OLMo-core uses 6σ against a mean/stddev band, which is less robust).
    pub loss_spike_sigmas: f64,
    /// `loss_spike`: and the latest loss must also be at least this fraction above the median.
    /// 0.2 (20 %) keeps very smooth losses (tiny MAD) from firing on harmless wiggles; real
    /// spikes (BLOOM: 2.2 → 5.1) are far larger.
    pub loss_spike_min_rise: f64,
    /// `loss_spike`: minimum number of finite baseline samples before the detector speaks.
    /// 20 keeps the median and MAD meaningful during warm-up and right after a restart.
    pub loss_min_baseline_samples: usize,
    /// `loss_spike`: how long after its onset a loss that stays high keeps the condition
    /// active (measured against the band before the onset, so it is reported once). Beyond 1 h
    /// a high loss is the run's new level: a divergence, not a spike.
    pub loss_spike_hold_secs: f64,

    /// `stall`: no step progress for this many seconds while samples keep arriving. 300 s is
    /// well above checkpoint saves and evaluation pauses of most runs and well below the NCCL
    /// collective timeout (10 min), so a hang is caught before the job's own watchdog.
    pub stall_after_secs: f64,
    /// `stall`: the newest `step` sample must be at most this old, or the data has stopped
    /// arriving (that is `metrics_absent`, not a stall). 180 s tolerates a few missed scrapes.
    pub stall_fresh_secs: f64,

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
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            nonfinite_window_secs: 120.0,
            loss_baseline_secs: 1800.0,
            loss_recent_secs: 120.0,
            loss_spike_sigmas: 8.0,
            loss_spike_min_rise: 0.2,
            loss_min_baseline_samples: 20,
            loss_spike_hold_secs: 3600.0,
            stall_after_secs: 300.0,
            stall_fresh_secs: 180.0,
            hardware_window_secs: 600.0,
            throughput_recent_secs: 300.0,
            throughput_baseline_secs: 3600.0,
            throughput_drop_ratio: 0.7,
            throughput_min_baseline_samples: 20,
            throughput_min_recent_samples: 5,
            throughput_hold_secs: 7200.0,
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
            ("hardware_window_secs", self.hardware_window_secs),
            ("throughput_recent_secs", self.throughput_recent_secs),
            ("throughput_baseline_secs", self.throughput_baseline_secs),
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
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ParamsError {
                    field,
                    reason: format!("must be a finite number of at least 0, got {v}"),
                });
            }
        }
        if !(self.throughput_drop_ratio > 0.0 && self.throughput_drop_ratio < 1.0) {
            return Err(ParamsError {
                field: "throughput_drop_ratio",
                reason: format!(
                    "must be between 0 and 1 (exclusive), got {}",
                    self.throughput_drop_ratio
                ),
            });
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
