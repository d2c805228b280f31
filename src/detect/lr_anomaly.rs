//! `lr_anomaly`: the learning rate does not follow its schedule.
//!
//! Watches every `lr` chart for two events. A **jump**: a sample above `lr_jump_factor` (2) ×
//! the highest learning rate of the `lr_window_secs` (5 min) before it, with at least 10 finite
//! samples in that window (a linear warm-up never doubles against its recent maximum; a restart
//! that resets a decayed schedule to its peak, or a wrong value patched in, does). A **drop to
//! zero**: a sample at or below 0 right after one that was at least `lr_zero_min_fraction`
//! (5 %) of the window's peak (a schedule that decays to zero gets there smoothly, and values
//! printed with few decimals round to 0 at the very end: that is not an anomaly). Step decays
//! (×0.1 at a milestone) are legitimate schedule changes and are not reported. The condition
//! holds for `lr_hold_secs` (15 min) after the event, so it is reported once. Severity warning.

use crate::charts::{Role, Sample};

use super::stats::{between, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// Finite samples the reference window needs.
const MIN_WINDOW_SAMPLES: usize = 10;

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    for (key, series) in ctx.charts.by_role(Role::Lr) {
        let vis = visible(series, ctx);
        let recent_from = ctx.now - p.lr_hold_secs;
        let start = vis.partition_point(|s| s.t < recent_from);
        // Reference: the window before the hold window, then grown sample by sample.
        let ref_win = between(vis, recent_from - p.lr_window_secs, recent_from);
        let mut peak = f64::NEG_INFINITY;
        let mut n = 0usize;
        let mut prev: Option<Sample> = None;
        for s in ref_win.iter().filter(|s| s.v.is_finite()) {
            peak = peak.max(s.v);
            n += 1;
            prev = Some(*s);
        }
        let mut event: Option<(Sample, f64, &'static str)> = None;
        for s in vis[start..].iter().filter(|s| s.v.is_finite()) {
            if n >= MIN_WINDOW_SAMPLES && peak > 0.0 {
                if s.v > p.lr_jump_factor * peak {
                    event = Some((*s, peak, "jumped"));
                    break;
                }
                if s.v <= 0.0
                    && let Some(q) = prev
                {
                    // Against the run's peak, computed only when a zero shows up.
                    let run_peak = vis
                        .iter()
                        .map(|x| x.v)
                        .filter(|v| v.is_finite())
                        .fold(f64::NEG_INFINITY, f64::max);
                    if q.v >= p.lr_zero_min_fraction * run_peak {
                        event = Some((*s, run_peak, "dropped to zero"));
                        break;
                    }
                }
            }
            peak = peak.max(s.v);
            n += 1;
            prev = Some(*s);
        }
        let Some((s, reference, what)) = event else {
            continue;
        };
        out.push(Finding {
            kind: FindingKind::LrAnomaly,
            chart: key.to_string(),
            at: ctx.now,
            onset: s.t,
            severity: Severity::Warning,
            message: format!(
                "{key} {what}: {} at {} against a recent peak of {} (schedule changes never {})",
                num(s.v),
                crate::clock::fmt_t(s.t),
                num(reference),
                if what == "jumped" {
                    format!(
                        "more than double it within {:.0} min",
                        p.lr_window_secs / 60.0
                    )
                } else {
                    "fall from a working rate to zero in one step".into()
                },
            ),
            value: Some(s.v),
            baseline: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet};
    use crate::detect::testkit::run_detector;

    /// Linear warm-up over 10 min, cosine decay to 0 over 4 h, sampled every 10 s.
    fn schedule(t: f64) -> f64 {
        let peak = 6e-4;
        if t < 600.0 {
            peak * t / 600.0
        } else {
            let x = ((t - 600.0) / 14400.0).min(1.0);
            // Printed with 6 decimals, like llm.c: the tail reads 0.
            (peak * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()) * 1e6).round() / 1e6
        }
    }

    fn lr(f: impl Fn(f64) -> f64) -> ChartSet {
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::Lr),
            (0..=1560).map(|i| Sample::new(i as f64 * 10.0, f(i as f64 * 10.0))),
        );
        c
    }

    #[test]
    fn warm_up_decay_and_rounding_to_zero_are_normal() {
        let c = lr(schedule);
        let mut now = 0.0;
        while now <= 15600.0 {
            assert!(
                run_detector(detect, &c, now, None, false).is_empty(),
                "at {now}"
            );
            now += 300.0;
        }
    }

    #[test]
    fn a_reset_to_peak_and_a_sudden_zero_are_anomalies() {
        let reset = lr(|t| if t >= 10000.0 { 6e-4 } else { schedule(t) });
        let f = run_detector(detect, &reset, 10020.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 10000.0);
        assert!(f[0].message.contains("jumped"), "{}", f[0].message);
        assert!(run_detector(detect, &reset, 10000.0 + 901.0, None, false).is_empty());
        let zero = lr(|t| if t >= 5000.0 { 0.0 } else { schedule(t) });
        let f = run_detector(detect, &zero, 5030.0, None, false);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("dropped to zero"), "{}", f[0].message);
    }
}
