//! `checkpoint_stale`: no checkpoint for longer than policy allows (work at risk).
//!
//! Watches every `checkpoint_age` chart (seconds since the last completed checkpoint). The
//! condition holds while its newest sample (at most `stall_fresh_secs` old: a chart that stopped
//! is `metrics_absent`) exceeds `checkpoint_max_age_secs` (3 h). Most training policies save at
//! least hourly; three hours without a save means saves are failing (full disk, a hung writer)
//! and a crash now loses hours of a large run. Paused runs are quiet (nothing is being lost).
//! The onset is when the age crossed the limit. Severity warning: nothing is broken yet.

use crate::charts::Role;

use super::stats::{fresh_last, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    let p = ctx.params;
    for (key, series) in ctx.charts.by_role(Role::CheckpointAge) {
        let vis = visible(series, ctx);
        let Some(last) = fresh_last(vis, ctx.now, p.stall_fresh_secs) else {
            continue;
        };
        if last.v.partial_cmp(&p.checkpoint_max_age_secs) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let onset = (last.t - (last.v - p.checkpoint_max_age_secs)).min(last.t);
        out.push(Finding {
            kind: FindingKind::CheckpointStale,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "last checkpoint {} h ago (limit {} h): a failure now loses that much work",
                num(last.v / 3600.0),
                num(p.checkpoint_max_age_secs / 3600.0)
            ),
            value: Some(last.v),
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
    fn saves_that_stop_make_the_checkpoint_stale() {
        let mut c = ChartSet::new();
        // Hourly saves until 4 h, then none.
        c.merge(
            ChartKey::new(Role::CheckpointAge),
            (0..=600).map(|i| {
                let t = i as f64 * 60.0;
                let age = if t < 14400.0 {
                    t % 3600.0
                } else {
                    t - 14400.0 + 0.0
                };
                Sample::new(t, age)
            }),
        );
        assert!(run_detector(detect, &c, 14400.0 + 3.0 * 3600.0, None, false).is_empty());
        let f = run_detector(detect, &c, 14400.0 + 3.0 * 3600.0 + 60.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 14400.0 + 3.0 * 3600.0);
        assert!(
            f[0].message.starts_with("last checkpoint 3.017 h ago"),
            "{}",
            f[0].message
        );
        assert!(run_detector(detect, &c, 30000.0, None, true).is_empty());
    }
}
