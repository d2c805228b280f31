//! `crash_loop`: workers restarting again and again.
//!
//! Watches every `restarts` chart (a cumulative container or worker restart count). The
//! condition holds when the counter grew by at least `crash_loop_restarts` (3) within the last
//! `crash_loop_window_secs` (30 min). One restart is recovery (a preempted node, a restart from
//! checkpoint that babysitter itself performed); three in half an hour is a loop that burns the
//! allocation and the restart budget (Kubernetes back-off reaches minutes by then). A counter
//! that goes down (the exporter restarted) is not growth. Severity error.

use crate::charts::Role;

use super::stats::{between, increments, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    for (key, series) in ctx.charts.by_role(Role::Restarts) {
        let win = between(
            visible(series, ctx),
            ctx.now - p.crash_loop_window_secs,
            f64::INFINITY,
        );
        // The sample just before the window is the reference of the first increment.
        let (grew, _, first) = increments(win);
        if grew.is_nan() || grew < p.crash_loop_restarts || p.crash_loop_restarts.is_nan() {
            continue;
        }
        out.push(Finding {
            kind: FindingKind::CrashLoop,
            chart: key.to_string(),
            at: ctx.now,
            onset: first.unwrap_or(ctx.now),
            severity: Severity::Error,
            message: format!(
                "{key}: {} restarts in the last {} (threshold {})",
                num(grew),
                crate::clock::fmt_span(p.crash_loop_window_secs),
                num(p.crash_loop_restarts)
            ),
            value: Some(grew),
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
    fn three_restarts_in_half_an_hour_loop_spread_out_ones_do_not() {
        let mut c = ChartSet::new();
        // Restarts at 1000 and 5000 (spread out), then at 9000, 9300 and 9600.
        c.merge(
            ChartKey::new(Role::Restarts),
            (0..=400).map(|i| {
                let t = i as f64 * 30.0;
                let n = [1000.0, 5000.0, 9000.0, 9300.0, 9600.0]
                    .iter()
                    .filter(|&&r| t >= r)
                    .count();
                Sample::new(t, n as f64)
            }),
        );
        assert!(run_detector(detect, &c, 6000.0, None, false).is_empty());
        assert!(run_detector(detect, &c, 9330.0, None, false).is_empty());
        let f = run_detector(detect, &c, 9630.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 9000.0);
        assert!(
            f[0].message.contains("3 restarts in the last 30 min"),
            "{}",
            f[0].message
        );
        assert!(run_detector(detect, &c, 9000.0 + 1800.0 + 30.0, None, false).is_empty());
    }
}
