//! Detect: pure, causal functions from a run's charts and `now` to findings.
//!
//! Every detector is a plain synchronous function of a [`DetectContext`]: it returns the
//! conditions that hold *now*, using only samples with `since <= t <= now`. [`Hysteresis`] turns
//! those into episodes: a condition is reported once when it starts and once when it clears.
//! The engine and `babysitter replay` both drive detectors the same way.
//!
//! One file per detector (one per kind of FORMATS.md §2), each opening with what it watches,
//! its parameters and why their defaults are what they are: `nonfinite`, `loss_spike`,
//! `loss_divergence`, `grad_explosion`, `loss_scale_collapse`, `loss_plateau`,
//! `eval_regression`, `lr_anomaly`, `stall`, `metrics_absent`, `throughput_drop`, `straggler`,
//! `gpu_util_drop`, `dataloader_stall`, `gpu_hardware_error`, `crash_loop`, `checkpoint_stale`. `stats` holds what they share (windows, median/MAD, onsets). Detectors
//! never panic, whatever the input (empty charts, NaN everywhere, duplicate or huge values), and
//! cost O(window) per poll: binary searches into the charts and one scratch buffer per detector.

mod checkpoint_stale;
mod crash_loop;
mod dataloader_stall;
mod eval_regression;
mod finding;
mod gpu_hardware_error;
mod gpu_util_drop;
mod grad_explosion;
mod hysteresis;
mod loss_divergence;
mod loss_plateau;
mod loss_scale_collapse;
mod loss_spike;
mod lr_anomaly;
mod metrics_absent;
mod nonfinite;
mod params;
mod stall;
mod stats;
mod straggler;
#[cfg(test)]
pub(crate) mod testkit;
mod throughput_drop;

pub use finding::{Band, Family, Finding, FindingKind, Severity};
pub use hysteresis::{Hysteresis, Transitions};
pub use params::{DetectorParams, ParamsError};

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

/// Runs every detector and returns the conditions that hold now: at most one finding per
/// (kind, chart), each with `at = now`.
pub fn detect_all(ctx: &DetectContext<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    nonfinite::detect(ctx, &mut out);
    loss_spike::detect(ctx, &mut out);
    stall::detect(ctx, &mut out);
    gpu_hardware_error::detect(ctx, &mut out);
    throughput_drop::detect(ctx, &mut out);
    loss_divergence::detect(ctx, &mut out);
    grad_explosion::detect(ctx, &mut out);
    loss_scale_collapse::detect(ctx, &mut out);
    loss_plateau::detect(ctx, &mut out);
    eval_regression::detect(ctx, &mut out);
    lr_anomaly::detect(ctx, &mut out);
    metrics_absent::detect(ctx, &mut out);
    straggler::detect(ctx, &mut out);
    gpu_util_drop::detect(ctx, &mut out);
    dataloader_stall::detect(ctx, &mut out);
    crash_loop::detect(ctx, &mut out);
    checkpoint_stale::detect(ctx, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::testkit::{Rng, poll_started};
    use super::*;
    use crate::charts::{ChartKey, Role, Sample};

    /// A healthy run with the usual texture: loss warm-up and decay with heavy-tailed noise, a
    /// learning-rate schedule with a step decay, 60-s checkpoint saves every 30 min (no steps,
    /// zero throughput), noisy throughput and GPU utilisation, flat hardware counters.
    fn healthy(seed: u64, hours: f64) -> ChartSet {
        let mut rng = Rng::new(seed);
        let mut c = ChartSet::new();
        let mut step = 0.0;
        for i in 0..=(hours * 240.0) as usize {
            let t = i as f64 * 15.0;
            let saving = t > 60.0 && t % 1800.0 < 60.0;
            if !saving {
                step += 10.0;
            }
            let decay = if t > 0.6 * hours * 3600.0 { 0.3 } else { 1.0 };
            let lr = 3e-4 * (t / 600.0).min(1.0) * decay;
            let level = 2.0 + 8.0 * (-t / 300.0).exp() + (-t / 7200.0).exp()
                - if decay < 1.0 { 0.1 } else { 0.0 };
            let mut put = |role: Role, v: f64| {
                c.merge(ChartKey::new(role), [Sample::new(t, v)]);
            };
            put(Role::Step, step);
            put(Role::Loss, level * (1.0 + 0.01 * rng.student_t(4)));
            put(Role::GradNorm, 1.0 + 0.2 * rng.student_t(4).abs());
            put(Role::Lr, lr);
            put(Role::LossScale, 65536.0);
            put(
                Role::Throughput,
                if saving {
                    0.0
                } else {
                    (1000.0 * (1.0 + 0.03 * rng.student_t(4))).max(0.0)
                },
            );
            put(
                Role::GpuUtil,
                if saving {
                    0.1
                } else {
                    (0.95 + 0.02 * rng.normal()).clamp(0.0, 1.0)
                },
            );
            put(Role::XidErrors, 0.0);
            put(Role::EccErrors, 0.0);
        }
        c
    }

    #[test]
    fn healthy_runs_raise_nothing_over_hours() {
        for seed in [42, 43, 44] {
            let c = healthy(seed, 6.0);
            let started = poll_started(&c, 0.0, 6.0 * 3600.0, None, false);
            assert!(started.is_empty(), "seed {seed}: {started:#?}");
        }
    }

    #[test]
    fn every_detector_reports_through_detect_all() {
        let mut c = healthy(7, 3.0);
        let t = 2.0 * 3600.0;
        c.merge(ChartKey::new(Role::Loss), [Sample::new(t, f64::NAN)]);
        c.merge(ChartKey::new(Role::EccErrors), [Sample::new(t, 1.0)]);
        let params = DetectorParams::default();
        let ctx = DetectContext {
            now: t,
            charts: &c,
            since: None,
            paused: false,
            params: &params,
        };
        let kinds: Vec<_> = detect_all(&ctx)
            .iter()
            .map(|f| (f.kind, f.chart.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (FindingKind::Nonfinite, "loss".into()),
                (FindingKind::GpuHardwareError, "ecc_errors".into())
            ]
        );
    }

    #[test]
    fn degenerate_inputs_never_panic() {
        let bad_values = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            f64::MAX,
            0.0,
            -0.0,
        ];
        let mut sets: Vec<ChartSet> = vec![ChartSet::new()];
        // One sample per chart, of each bad value.
        for &v in &bad_values {
            let mut c = ChartSet::new();
            for role in Role::ALL {
                c.merge(ChartKey::new(role), [Sample::new(100.0, v)]);
            }
            sets.push(c);
        }
        // Long charts of a constant bad value, of alternating extremes, and with duplicate times.
        for &v in &bad_values {
            let mut c = ChartSet::new();
            for role in Role::ALL {
                c.merge(
                    ChartKey::new(role),
                    (0..2000).map(|i| Sample::new(i as f64 * 5.0, v)),
                );
                c.merge(
                    ChartKey::new(role),
                    (0..2000).map(|i| Sample::new((i / 3) as f64, -v)),
                );
                c.merge(
                    ChartKey::new(role).with_label("rank", "1"),
                    (0..2000).map(|i| Sample::new(i as f64 * 5.0, if i % 2 == 0 { v } else { -v })),
                );
            }
            sets.push(c);
        }
        let weird_params = DetectorParams {
            loss_baseline_secs: 0.0,
            loss_recent_secs: -5.0,
            loss_spike_hold_secs: f64::INFINITY,
            throughput_baseline_secs: f64::NAN,
            throughput_hold_secs: 1e300,
            loss_min_baseline_samples: 0,
            throughput_min_recent_samples: 0,
            ..DetectorParams::default()
        };
        let nows = [
            f64::NAN,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            100.0,
            5000.0,
            1e12,
            f64::INFINITY,
        ];
        let sinces = [
            None,
            Some(f64::NAN),
            Some(50.0),
            Some(1e12),
            Some(f64::NEG_INFINITY),
        ];
        for c in &sets {
            for params in [&DetectorParams::default(), &weird_params] {
                for &now in &nows {
                    for &since in &sinces {
                        for paused in [false, true] {
                            let ctx = DetectContext {
                                now,
                                charts: c,
                                since,
                                paused,
                                params,
                            };
                            for f in detect_all(&ctx) {
                                assert!(!f.message.is_empty());
                            }
                        }
                    }
                }
            }
        }
    }

    mod props {
        use super::super::*;
        use crate::charts::{ChartKey, Role, Sample};
        use proptest::prelude::*;

        /// Any value a chart may hold, weighted towards the awkward ones.
        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                3 => -10.0f64..10.0,
                1 => Just(f64::NAN),
                1 => Just(f64::INFINITY),
                1 => Just(f64::NEG_INFINITY),
                1 => Just(0.0),
                1 => Just(f64::MAX),
                1 => Just(-f64::MAX),
                1 => prop::num::f64::ANY,
            ]
        }

        /// Any time, including duplicates, going backwards and huge ones.
        fn time() -> impl Strategy<Value = f64> {
            prop_oneof![
                4 => 0.0f64..5000.0,
                1 => Just(100.0),
                1 => -1e6f64..0.0,
                1 => prop::num::f64::ANY,
            ]
        }

        fn charts() -> impl Strategy<Value = ChartSet> {
            prop::collection::vec(
                (
                    0..Role::ALL.len(),
                    0u8..3,
                    prop::collection::vec((time(), value()), 0..60),
                ),
                0..12,
            )
            .prop_map(|cols| {
                let mut c = ChartSet::new();
                for (role, rank, samples) in cols {
                    let mut key = ChartKey::new(Role::ALL[role]);
                    if rank > 0 {
                        key = key.with_label("rank", rank.to_string());
                    }
                    c.merge(key, samples.into_iter().map(|(t, v)| Sample::new(t, v)));
                }
                c
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn no_detector_panics_on_any_input(
                c in charts(),
                nows in prop::collection::vec(time(), 1..6),
                since in prop::option::of(time()),
                paused in any::<bool>(),
            ) {
                let params = DetectorParams::default();
                let mut h = Hysteresis::new();
                for now in nows {
                    let ctx = DetectContext { now, charts: &c, since, paused, params: &params };
                    let found = detect_all(&ctx);
                    for f in &found {
                        prop_assert!(!f.message.is_empty());
                        prop_assert!(f.chart.len() < 200);
                    }
                    let _ = h.update(found);
                }
            }
        }
    }
}
