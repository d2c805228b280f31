//! `grad_explosion`: the gradient norm far above its recent range, for more than a blip.
//!
//! Watches every `grad_norm` chart. The baseline is the median of the `grad_baseline_secs`
//! (10 min) before the newest samples, with at least `grad_min_baseline_samples` (20) finite
//! values. A sample is exploding when it is at least `grad_explosion_factor` (10) times that
//! median; the condition needs the newest `grad_explosion_min_samples` (3) finite samples to
//! all be exploding. Isolated one-step blips (a hard batch: 7× the median in the healthy llm.c
//! run) recover on the next step and are not reported; an explosion that feeds on itself stays
//! up. A ratio, not a z-score: grad norms are heavy-tailed and their spread scales with their
//! level. Non-finite values are `nonfinite`'s. A lasting explosion is measured against the band from before its
//! onset (`stats::find_shift`, for up to `loss_spike_hold_secs`), so it is reported once. Severity error: the next steps usually turn into a loss spike or NaN.

use crate::charts::Role;

use super::stats::{Robust, ShiftSearch, find_shift, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    let k = p.grad_explosion_min_samples.max(1);
    let factor = p.grad_explosion_factor;
    let search = ShiftSearch {
        baseline_secs: p.grad_baseline_secs,
        // The newest fifth of a window is kept out of the first baseline.
        recent_secs: p.grad_baseline_secs / 5.0,
        hold_secs: p.loss_spike_hold_secs,
        min_samples: p.grad_min_baseline_samples,
    };
    let hit = |v: f64, b: &Robust| b.median > 0.0 && v >= factor * b.median;
    let mut buf = Vec::new();
    for (key, series) in ctx.charts.by_role(Role::GradNorm) {
        let vis = visible(series, ctx);
        // The newest k finite samples must all be high.
        let newest: Vec<f64> = vis
            .iter()
            .rev()
            .filter(|s| s.v.is_finite())
            .take(k)
            .map(|s| s.v)
            .collect();
        if newest.len() < k {
            continue;
        }
        let Some(lowest) = newest.iter().copied().reduce(f64::min) else {
            continue;
        };
        let Some(shift) = find_shift(vis, ctx.now, &search, &mut buf, |b| hit(lowest, b), hit)
        else {
            continue;
        };
        let base = shift.base.median;
        let latest = newest[0];
        let t_onset = vis[shift.onset].t;
        out.push(Finding {
            kind: FindingKind::GradExplosion,
            chart: key.to_string(),
            at: ctx.now,
            onset: t_onset,
            severity: Severity::Error,
            message: format!(
                "{key} {} is {:.1}× its {} median {} (threshold {}×) for the last {k} samples; high since {}",
                num(latest),
                latest / base,
                crate::clock::fmt_span_adj(p.grad_baseline_secs),
                num(base),
                num(factor),
                crate::clock::fmt_t(t_onset),
            ),
            value: Some(latest),
            baseline: Some(shift.base.band()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::{Rng, run_detector};

    fn grads(f: impl Fn(f64, f64) -> f64) -> ChartSet {
        let mut rng = Rng::new(9);
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::GradNorm),
            (0..=400).map(|i| {
                let t = i as f64 * 10.0;
                Sample::new(t, f(t, 0.3 * (1.0 + 0.2 * rng.student_t(4).abs())))
            }),
        );
        c
    }

    #[test]
    fn a_lasting_explosion_is_found_but_a_one_step_blip_is_not() {
        let blip = grads(|t, v| if t == 2000.0 { v * 8.0 } else { v });
        for now in [2000.0, 2010.0, 2030.0] {
            assert!(run_detector(detect, &blip, now, None, false).is_empty());
        }
        let boom = grads(|t, v| if t >= 2000.0 { v * 20.0 } else { v });
        assert!(run_detector(detect, &boom, 2010.0, None, false).is_empty());
        let f = run_detector(detect, &boom, 2020.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 2000.0);
        assert!(
            f[0].message.contains("for the last 3 samples"),
            "{}",
            f[0].message
        );
        // Still one condition with the same onset much later.
        let later = run_detector(detect, &boom, 3500.0, None, false);
        assert_eq!(later[0].onset, 2000.0);
    }
}
