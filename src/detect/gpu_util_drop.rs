//! `gpu_util_drop`: GPUs idle or far below their usual utilisation while the run progresses.
//!
//! Watches every `gpu_util` chart (one per GPU or one for the job; 0–1 or 0–100). The recent
//! level is the median of the last `gpu_util_recent_secs` (5 min: one checkpoint save or
//! evaluation pause does not move it); the baseline is the median of the
//! `gpu_util_baseline_secs` (60 min) before it, with at least 20 finite samples, and 5 in the
//! recent window. A drop is a recent median below `gpu_util_drop_ratio` (0.6) of the baseline:
//! healthy utilisation wanders by a few points, an input-bound or throttled run loses half.
//! Only while the step advances (a run without progress is a stall, and a run without a `step`
//! chart cannot tell an idle GPU from a finished job). A lasting drop is measured against the
//! level before its onset (up to the throughput hold, 2 h), so it is reported once. Severity
//! warning.

use crate::charts::Role;

use super::stats::{ShiftSearch, level_drop, num, progressing, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    if ctx.paused {
        return;
    }
    if progressing(ctx).is_none() {
        return;
    }
    let search = ShiftSearch {
        baseline_secs: p.gpu_util_baseline_secs,
        recent_secs: p.gpu_util_recent_secs,
        hold_secs: p.throughput_hold_secs,
        min_samples: p.throughput_min_baseline_samples,
    };
    let ratio = p.gpu_util_drop_ratio;
    let mut buf = Vec::new();
    for (key, series) in ctx.charts.by_role(Role::GpuUtil) {
        let vis = visible(series, ctx);
        let upto = vis;
        let Some((level, shift)) = level_drop(
            upto,
            ctx.now - p.gpu_util_recent_secs,
            ctx.now,
            &search,
            ratio,
            p.throughput_min_recent_samples,
            &mut buf,
        ) else {
            continue;
        };
        let b = shift.base;
        let onset = upto[shift.onset].t;
        out.push(Finding {
            kind: FindingKind::GpuUtilDrop,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "{key} median {} over the last {} is {:.0}% of its usual {} (threshold {:.0}%) while steps advance; low since {}",
                num(level),
                crate::clock::fmt_span(p.gpu_util_recent_secs),
                level / b.median * 100.0,
                num(b.median),
                ratio * 100.0,
                crate::clock::fmt_t(onset)
            ),
            value: Some(level),
            baseline: Some(b.band()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::{Rng, run_detector};

    fn run(util: impl Fn(f64) -> f64) -> ChartSet {
        let mut rng = Rng::new(2);
        let mut c = ChartSet::new();
        let n = 4 * 240;
        c.merge(
            ChartKey::new(Role::Step),
            (0..=n).map(|i| Sample::new(i as f64 * 15.0, i as f64 * 10.0)),
        );
        c.merge(
            ChartKey::new(Role::GpuUtil).with_label("gpu", "0"),
            (0..=n).map(|i| {
                let t = i as f64 * 15.0;
                Sample::new(t, (util(t) + 2.0 * rng.normal()).clamp(0.0, 100.0))
            }),
        );
        c
    }

    #[test]
    fn utilisation_halved_is_a_drop_a_save_pause_is_not() {
        let save = run(|t| {
            if (7200.0..7260.0).contains(&t) {
                5.0
            } else {
                95.0
            }
        });
        assert!(run_detector(detect, &save, 7260.0, None, false).is_empty());
        let drop = run(|t| if t >= 7200.0 { 40.0 } else { 95.0 });
        assert!(run_detector(detect, &drop, 7290.0, None, false).is_empty());
        let f = run_detector(detect, &drop, 7400.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 7200.0);
        assert_eq!(f[0].chart, "gpu_util{gpu=0}");
        let later = run_detector(detect, &drop, 9000.0, None, false);
        assert_eq!(later[0].onset, 7200.0);
    }
}
