//! `dataloader_stall`: the input pipeline dominates the step time.
//!
//! Watches every `data_wait` chart. FORMATS.md §1 allows a fraction of the step or a time: a
//! chart whose recent values are all within 0–1 is read as a fraction; otherwise it is seconds
//! and is divided by the median `step_time` of the same window (without a `step_time` chart a
//! time cannot be judged and the chart is skipped). The condition holds when the median wait
//! over the last `dataloader_recent_secs` (5 min, at least 5 finite samples) is at least
//! `dataloader_wait_fraction` (0.3) of the step: a well-fed run waits a few percent, and a
//! median over five minutes ignores the first batches after an evaluation or a new epoch.
//! Paused runs are quiet. The onset is the first sample of the newest stretch above the
//! threshold. Severity warning.

use crate::charts::Role;

use super::stats::{between, median, num, stretch_onset, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// Finite samples needed in the recent window.
const MIN_SAMPLES: usize = 5;

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    let p = ctx.params;
    let from = ctx.now - p.dataloader_recent_secs;
    let mut buf = Vec::new();
    let step_time = ctx
        .charts
        .get(Role::StepTime)
        .and_then(|s| median(between(visible(s, ctx), from, f64::INFINITY), &mut buf))
        .map(|(m, _)| m)
        .filter(|m| *m > 0.0);
    for (key, series) in ctx.charts.by_role(Role::DataWait) {
        let vis = visible(series, ctx);
        let recent = between(vis, from, f64::INFINITY);
        let Some((wait, n)) = median(recent, &mut buf) else {
            continue;
        };
        if n < MIN_SAMPLES {
            continue;
        }
        let is_fraction = recent
            .iter()
            .filter(|s| s.v.is_finite())
            .all(|s| (0.0..=1.0).contains(&s.v));
        let per_step = if is_fraction { Some(1.0) } else { step_time };
        let Some(per_step) = per_step else { continue };
        let fraction = wait / per_step;
        if fraction.is_nan()
            || p.dataloader_wait_fraction.is_nan()
            || fraction < p.dataloader_wait_fraction
        {
            continue;
        }
        let limit = p.dataloader_wait_fraction * per_step;
        let onset = stretch_onset(vis, |v| v >= limit).map_or(ctx.now, |i| vis[i].t);
        out.push(Finding {
            kind: FindingKind::DataloaderStall,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "{key}: the input pipeline takes {:.0}% of each step (median {}{} over {}; threshold {:.0}%)",
                fraction * 100.0,
                num(wait),
                if is_fraction { "" } else { " s" },
                crate::clock::fmt_span(p.dataloader_recent_secs),
                p.dataloader_wait_fraction * 100.0,
            ),
            value: Some(fraction),
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
    fn waiting_most_of_the_step_is_a_stall_fractions_and_seconds() {
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::DataWait),
            (0..=200).map(|i| {
                let t = i as f64 * 15.0;
                Sample::new(
                    t,
                    if t >= 2000.0 {
                        0.6
                    } else if t == 1000.0 {
                        0.9
                    } else {
                        0.03
                    },
                )
            }),
        );
        assert!(run_detector(detect, &c, 1000.0, None, false).is_empty());
        assert!(run_detector(detect, &c, 2100.0, None, false).is_empty());
        let f = run_detector(detect, &c, 2200.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 2010.0);
        assert!(f[0].message.contains("takes 60%"), "{}", f[0].message);

        let mut s = ChartSet::new();
        s.merge(
            ChartKey::new(Role::DataWait),
            (0..=40).map(|i| Sample::new(i as f64 * 15.0, 1.2)),
        );
        assert!(
            run_detector(detect, &s, 600.0, None, false).is_empty(),
            "no step_time"
        );
        s.merge(
            ChartKey::new(Role::StepTime),
            (0..=40).map(|i| Sample::new(i as f64 * 15.0, 2.0)),
        );
        let f = run_detector(detect, &s, 600.0, None, false);
        assert!(
            f[0].message
                .contains("takes 60% of each step (median 1.2 s"),
            "{}",
            f[0].message
        );
    }
}
