//! `nonfinite`: a NaN or ±Inf in a training chart.
//!
//! Watches every `loss`, `grad_norm`, `eval_loss`, `lr` and `loss_scale` chart (all labels).
//! The condition holds while a non-finite value lies in the last `nonfinite_window_secs`
//! (default 120 s): four polls, so a single NaN is never missed between polls, and a run whose
//! numbers are finite again clears two minutes later. Its onset is the first non-finite sample
//! of that window. Severity critical: a NaN loss or gradient poisons the weights and every step
//! after it is wasted compute.

use crate::charts::Role;

use super::stats::{between, nonfinite_name, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// The charts a non-finite value makes meaningless.
pub(crate) const ROLES: [Role; 5] = [
    Role::Loss,
    Role::GradNorm,
    Role::EvalLoss,
    Role::Lr,
    Role::LossScale,
];

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let window = ctx.params.nonfinite_window_secs;
    for role in ROLES {
        for (key, series) in ctx.charts.by_role(role) {
            let win = between(visible(series, ctx), ctx.now - window, f64::INFINITY);
            let mut bad = win.iter().filter(|s| !s.v.is_finite());
            let Some(first) = bad.next() else { continue };
            let (count, last) = bad.fold((1usize, *first), |(n, _), s| (n + 1, *s));
            out.push(Finding {
                kind: FindingKind::Nonfinite,
                chart: key.to_string(),
                at: ctx.now,
                onset: first.t,
                severity: Severity::Critical,
                message: format!(
                    "{key} is {} at {}: {count} of {} samples in the last {} are not finite (first at {})",
                    nonfinite_name(last.v),
                    crate::clock::fmt_t(last.t),
                    win.len(),
                    crate::clock::fmt_span(window),
                    crate::clock::fmt_t(first.t)
                ),
                value: Some(last.v),
                baseline: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};

    fn run(charts: &ChartSet, now: f64, since: Option<f64>) -> Vec<Finding> {
        crate::detect::testkit::run_detector(detect, charts, now, since, false)
    }

    fn charts() -> ChartSet {
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::Loss),
            (0..100).map(|i| {
                let t = i as f64 * 15.0;
                Sample::new(t, if t == 900.0 { f64::NAN } else { 2.0 })
            }),
        );
        c.merge(
            ChartKey::new(Role::GradNorm).with_label("rank", "1"),
            (0..100).map(|i| {
                let t = i as f64 * 15.0;
                Sample::new(t, if t >= 1200.0 { f64::INFINITY } else { 1.0 })
            }),
        );
        c
    }

    #[test]
    fn finds_nan_at_its_onset_and_clears_after_the_window() {
        let c = charts();
        assert!(run(&c, 885.0, None).is_empty());
        let f = run(&c, 900.0, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].chart, "loss");
        assert_eq!(f[0].onset, 900.0);
        assert_eq!(f[0].at, 900.0);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].value.is_some_and(f64::is_nan));
        assert!(
            f[0].message.contains("loss is NaN at t=900"),
            "{}",
            f[0].message
        );
        assert_eq!(run(&c, 1020.0, None).len(), 1);
        assert!(run(&c, 1035.0, None).is_empty());
    }

    #[test]
    fn inf_on_a_labelled_chart_and_since_honoured() {
        let c = charts();
        let f = run(&c, 1260.0, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].chart, "grad_norm{rank=1}");
        assert_eq!(f[0].onset, 1200.0);
        assert!(f[0].message.contains("5 of 9 samples"), "{}", f[0].message);
        // The NaN at 900 belongs to an earlier life of the run.
        assert!(run(&c, 960.0, Some(915.0)).is_empty());
        assert_eq!(run(&c, 960.0, Some(900.0)).len(), 1);
    }
}
