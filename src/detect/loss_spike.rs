//! `loss_spike`: the latest loss far above its own recent noise.
//!
//! Watches every `loss` chart. The baseline is the median and robust sigma (1.4826 × MAD) of
//! the `loss_baseline_secs` (10 min) before the newest `loss_recent_secs` (2 min); median/MAD
//! because per-batch loss noise is heavy-tailed and a mean/stddev band is dragged along by the
//! very outliers it should flag. The latest finite loss (at most `loss_recent_secs` old) is a
//! spike when it is both `loss_spike_sigmas` (8) robust sigmas and `loss_spike_min_rise` (10 %)
//! above the median: the sigma rule ignores noise, the relative rule ignores harmless wiggles
//! of very smooth losses. The stretch above the band must hold at least
//! `loss_spike_min_samples` (2) samples: a one-batch outlier that is back in the band on the
//! next sample is not actionable (healthy runs have them). At least `loss_min_baseline_samples` (15) finite baseline samples are
//! needed, so warm-up and the minutes after a restart stay quiet. The condition holds while one of
//! the newest three samples is above the band (the stretch's own dip tolerance), so a level
//! hovering at the threshold is not reported again after every dip. Only rises count: a falling
//! loss (learning-rate decay) is good news.
//!
//! A loss that stays high keeps the condition active: it is measured against the band before
//! its onset (see `stats::find_shift`), for up to `loss_spike_hold_secs` (1 h), so it is
//! reported once. The onset is the first sample of the anomalous stretch (one or two samples
//! dipping back into the band do not end it). Severity warning: most spikes recover by
//! themselves within tens of steps (BLOOM 176B, steps 31216–31250).

use crate::charts::Role;

use super::stats::{MAX_DIPS, Robust, ShiftSearch, find_shift, from, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    let search = ShiftSearch {
        baseline_secs: p.loss_baseline_secs,
        recent_secs: p.loss_recent_secs,
        hold_secs: p.loss_spike_hold_secs,
        min_samples: p.loss_min_baseline_samples,
    };
    let sigmas = p.loss_spike_sigmas;
    let rise = p.loss_spike_min_rise;
    let anomalous = |v: f64, b: &Robust| {
        let up = v - b.median;
        up > 0.0 && up >= sigmas * b.sigma && up >= rise * b.median.abs()
    };
    let mut buf = Vec::new();
    for (key, series) in ctx.charts.by_role(Role::Loss) {
        let vis = visible(series, ctx);
        // The newest finite loss, looked for only among fresh samples.
        let fresh_start = vis.len() - from(vis, ctx.now - p.loss_recent_secs).len();
        let Some(last) = vis[fresh_start..].iter().rposition(|s| s.v.is_finite()) else {
            continue;
        };
        let last = fresh_start + last;
        let latest = vis[last];
        let upto = &vis[..=last];
        // The stretch tolerates MAX_DIPS samples back in the band; so does the condition, or a
        // level hovering at the threshold would be reported again after every dip.
        let peak = upto
            .iter()
            .rev()
            .filter(|s| s.v.is_finite())
            .take(MAX_DIPS + 1)
            .map(|s| s.v)
            .fold(f64::NEG_INFINITY, f64::max);
        let Some(shift) = find_shift(
            upto,
            ctx.now,
            &search,
            &mut buf,
            |b| anomalous(peak, b),
            anomalous,
        ) else {
            continue;
        };
        // A single-batch outlier that the next sample already leaves is not a spike.
        let hits = upto[shift.onset..]
            .iter()
            .filter(|s| s.v.is_finite() && anomalous(s.v, &shift.base))
            .count();
        if hits < p.loss_spike_min_samples.max(1) {
            continue;
        }
        let b = shift.base;
        let z = (latest.v - b.median) / b.sigma;
        let pct = if b.median != 0.0 {
            (latest.v - b.median) / b.median.abs() * 100.0
        } else {
            f64::INFINITY
        };
        let onset = upto[shift.onset].t;
        out.push(Finding {
            kind: FindingKind::LossSpike,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "{key} {} is {}σ above its {} median {} (σ {}), +{}%; high since {}",
                num(latest.v),
                if z.abs() >= 10.0 {
                    format!("{z:.0}")
                } else {
                    format!("{z:.1}")
                },
                crate::clock::fmt_span_adj(p.loss_baseline_secs),
                num(b.median),
                num(b.sigma),
                if pct.abs() >= 10.0 {
                    format!("{pct:.0}")
                } else {
                    format!("{pct:.1}")
                },
                crate::clock::fmt_t(onset),
            ),
            value: Some(latest.v),
            baseline: Some(b.band()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::{Rng, poll_started};
    use crate::detect::{DetectorParams, Hysteresis};

    fn detect_at(charts: &ChartSet, now: f64, since: Option<f64>) -> Vec<Finding> {
        crate::detect::testkit::run_detector(detect, charts, now, since, false)
    }

    /// A loss with heavy-tailed noise every 15 s for `secs`, `f(t, noisy)` applied on top.
    fn loss(seed: u64, secs: f64, f: impl Fn(f64, f64) -> f64) -> ChartSet {
        let mut rng = Rng::new(seed);
        let mut c = ChartSet::new();
        let n = (secs / 15.0) as usize;
        c.merge(
            ChartKey::new(Role::Loss),
            (0..=n).map(|i| {
                let t = i as f64 * 15.0;
                let level = 3.0 + 2.0 * (-t / 3600.0).exp();
                Sample::new(t, f(t, level * (1.0 + 0.01 * rng.student_t(4))))
            }),
        );
        c
    }

    #[test]
    fn spike_found_on_its_second_sample_with_its_onset_and_numbers() {
        let c = loss(7, 4.0 * 3600.0, |t, v| {
            if (7200.0..7260.0).contains(&t) {
                v * 2.5
            } else {
                v
            }
        });
        let started = poll_started(&c, 0.0, 4.0 * 3600.0, None, false);
        // A minute at 2.5× also lifts the 90-s median: divergence (same family) joins it.
        let spikes: Vec<_> = started
            .iter()
            .filter(|f| f.kind == FindingKind::LossSpike)
            .collect();
        assert_eq!(spikes.len(), 1, "{started:#?}");
        let f = spikes[0];
        assert_eq!(f.onset, 7200.0);
        // The second sample above the band (7215) confirms it: the poll at 7230.
        assert_eq!(f.at, 7230.0);
        let b = f.baseline.expect("band");
        assert!((b.center - 3.3).abs() < 0.1, "{b:?}");
        assert!(f.value.is_some_and(|v| v > 7.0));
        assert!(f.message.starts_with("loss 8."), "{}", f.message);
        assert!(
            f.message.contains("σ above its 10-min median 3.2"),
            "{}",
            f.message
        );
        // Over: clears once the loss is back.
        assert!(detect_at(&c, 7320.0, None).is_empty());
    }

    #[test]
    fn hours_of_heavy_tailed_noise_and_small_blips_stay_quiet() {
        for seed in [1, 2, 3, 4] {
            // A 5 % blip and a learning-rate drop (loss falls 10 %) are ordinary.
            let c = loss(seed, 8.0 * 3600.0, |t, v| {
                let v = if (3600.0..3615.0).contains(&t) {
                    v * 1.05
                } else {
                    v
                };
                if t > 5.0 * 3600.0 { v * 0.9 } else { v }
            });
            let started = poll_started(&c, 0.0, 8.0 * 3600.0, None, false);
            assert!(started.is_empty(), "seed {seed}: {started:#?}");
        }
    }

    #[test]
    fn sustained_high_loss_stays_one_episode() {
        let c = loss(11, 5.0 * 3600.0, |t, v| {
            if (7200.0..7200.0 + 2400.0).contains(&t) {
                v * 2.0
            } else {
                v
            }
        });
        let mut h = Hysteresis::new();
        let params = DetectorParams::default();
        let mut starts = 0;
        let mut clears = 0;
        let mut now = 0.0;
        while now <= 5.0 * 3600.0 {
            let ctx = DetectContext {
                now,
                charts: &c,
                since: None,
                paused: false,
                params: &params,
            };
            let mut cur = Vec::new();
            detect(&ctx, &mut cur);
            if (7230.0..9600.0).contains(&now) {
                assert_eq!(cur.len(), 1, "condition lapsed at {now}");
                assert_eq!(cur[0].onset, 7200.0, "at {now}");
            }
            let tr = h.update(cur);
            starts += tr.started.len();
            clears += tr.cleared.len();
            now += 30.0;
        }
        assert_eq!((starts, clears), (1, 1));
    }

    #[test]
    fn since_and_warm_up_need_a_fresh_baseline() {
        let c = loss(5, 4.0 * 3600.0, |t, v| {
            if (7200.0..7260.0).contains(&t) {
                v * 2.5
            } else {
                v
            }
        });
        // Restarted 5 min before the spike: fewer than 20 baseline samples in this life.
        assert!(detect_at(&c, 7215.0, Some(6900.0)).is_empty());
        assert_eq!(detect_at(&c, 7215.0, Some(3600.0)).len(), 1);
        // Only samples up to `now` are used: the spike is not visible before it happens.
        assert!(detect_at(&c, 7199.0, None).is_empty());
    }
}
