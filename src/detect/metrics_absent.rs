//! `metrics_absent`: the charts stopped arriving (exporter, pod or node gone).
//!
//! Watches all charts of the run together. The condition holds when the newest sample of any
//! chart is more than `absent_after_secs` (300 s, ten 30-s polls: beyond a scrape hiccup or a
//! slow evaluation export) old, but only for a run that had been reporting as a live feed: its
//! charts must have arrived without such a gap for at least `absent_history_secs` (30 min)
//! before the silence. Exporters that are still starting (a long first compile step) and
//! sampled or short-lived series (profiler bursts) are not a feed that stopped. Paused runs are
//! quiet. The onset is the time of the newest sample. Severity error: babysitter is blind to
//! this run, and a dead node looks exactly like this.

use super::stats::visible;
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    let p = ctx.params;
    // The newest sample time over all charts.
    let mut newest = f64::NEG_INFINITY;
    for (_, series) in ctx.charts.iter() {
        if let Some(s) = visible(series, ctx).last() {
            newest = newest.max(s.t);
        }
    }
    let silence = ctx.now - newest;
    if !(silence.is_finite() && silence > p.absent_after_secs) {
        return;
    }
    // Was the feed continuous (no gap above `absent_after`) over the history before it?
    let from = newest - p.absent_history_secs;
    let mut times: Vec<f64> = Vec::new();
    for (_, series) in ctx.charts.iter() {
        let vis = visible(series, ctx);
        let lo = vis.partition_point(|s| s.t < from);
        // A whole chart's history is not needed: gaps are judged on the union of sample times.
        times.extend(vis[lo..].iter().map(|s| s.t));
    }
    times.sort_by(f64::total_cmp);
    times.dedup();
    let covered = times
        .first()
        .is_some_and(|&t0| t0 - from <= p.absent_after_secs);
    let continuous = covered && times.windows(2).all(|w| w[1] - w[0] <= p.absent_after_secs);
    if !continuous {
        return;
    }
    out.push(Finding {
        kind: FindingKind::MetricsAbsent,
        chart: "*".into(),
        at: ctx.now,
        onset: newest,
        severity: Severity::Error,
        message: format!(
            "no sample on any chart for {silence:.0} s (last at {}; threshold {:.0} s)",
            crate::clock::fmt_t(newest),
            p.absent_after_secs
        ),
        value: None,
        baseline: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Role, Sample};
    use crate::detect::testkit::run_detector;

    fn feed(times: impl Iterator<Item = f64>) -> ChartSet {
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::Loss),
            times.map(|t| Sample::new(t, 2.0)),
        );
        c
    }

    #[test]
    fn a_live_feed_that_stops_is_absent_bursts_and_start_up_are_not() {
        let live = feed((0..=240).map(|i| i as f64 * 15.0)); // 0..3600
        assert!(run_detector(detect, &live, 3600.0 + 300.0, None, false).is_empty());
        let f = run_detector(detect, &live, 3600.0 + 330.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 3600.0);
        assert!(
            run_detector(detect, &live, 4000.0, None, true).is_empty(),
            "paused"
        );
        // Profiler bursts of 5 min every hour: never a live feed.
        let bursts =
            feed((0..5).flat_map(|h| (0..20).map(move |i| h as f64 * 3600.0 + i as f64 * 15.0)));
        assert!(run_detector(detect, &bursts, 3000.0, None, false).is_empty());
        // A run that just started (10 min of data) then went silent.
        let young = feed((0..40).map(|i| i as f64 * 15.0));
        assert!(run_detector(detect, &young, 2000.0, None, false).is_empty());
    }
}
