//! `eval_regression`: the evaluation loss clearly worse than the best it reached.
//!
//! Watches every `eval_loss` chart (sparse: one sample per evaluation). After at least
//! `eval_min_history` (3) evaluations, the condition holds when the newest
//! `eval_regression_min_evals` (2) evaluations are all `eval_regression_min_rise` (5 %) or more
//! above the best (lowest) earlier evaluation of this life of the run (`since`). One bad
//! evaluation is noise (a small eval set, a shard boundary); two in a row is a trend. 5 % is far
//! above the eval-to-eval noise of healthy runs (≤ 1 %) and below the rise of a real regression
//! (overfitting, a corrupted checkpoint, a bad data mix). Severity warning.

use crate::charts::Role;

use super::stats::{num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    let k = p.eval_regression_min_evals.max(1);
    for (key, series) in ctx.charts.by_role(Role::EvalLoss) {
        let vis = visible(series, ctx);
        let finite: Vec<_> = vis.iter().filter(|s| s.v.is_finite()).collect();
        if finite.len() < k + p.eval_min_history.max(1) {
            continue;
        }
        let (earlier, newest) = finite.split_at(finite.len() - k);
        let Some(best) = earlier.iter().map(|s| s.v).min_by(f64::total_cmp) else {
            continue;
        };
        let limit = best + p.eval_regression_min_rise * best.abs();
        if !newest.iter().all(|s| s.v >= limit) {
            continue;
        }
        // Onset: the first evaluation of the worse stretch.
        let mut onset = newest[0].t;
        for s in earlier.iter().rev() {
            if s.v >= limit {
                onset = s.t;
            } else {
                break;
            }
        }
        let latest = newest[newest.len() - 1];
        out.push(Finding {
            kind: FindingKind::EvalRegression,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "{key} {} is {:.1}% above its best {} ({k} evaluations in a row above +{:.0}%)",
                num(latest.v),
                (latest.v - best) / best.abs().max(1e-12) * 100.0,
                num(best),
                p.eval_regression_min_rise * 100.0,
            ),
            value: Some(latest.v),
            baseline: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::run_detector;

    #[test]
    fn two_bad_evals_in_a_row_regress_one_does_not() {
        let vals = [4.0, 3.5, 3.2, 3.1, 3.3, 3.05, 3.4, 3.45];
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::EvalLoss),
            vals.iter()
                .enumerate()
                .map(|(i, &v)| Sample::new(i as f64 * 600.0, v)),
        );
        // 3.3 after 3.1 (+6.5 %) alone: quiet.
        assert!(run_detector(detect, &c, 2400.0, None, false).is_empty());
        assert!(run_detector(detect, &c, 3600.0, None, false).is_empty());
        let f = run_detector(detect, &c, 4200.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 3600.0);
        assert!(
            f[0].message
                .starts_with("eval_loss 3.45 is 13.1% above its best 3.05"),
            "{}",
            f[0].message
        );
    }
}
