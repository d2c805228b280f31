//! `straggler`: one rank (or a few) much slower than its peers.
//!
//! Compares ranks with each other, not with the past: a straggler can be present from the
//! first step. Reads the per-rank `compute_time{rank=…}` charts (a rank's own compute per
//! step, FORMATS.md §1): in synchronous training every rank's `step_time` equals the slowest
//! rank's, so a straggler shows only in its compute time. Without `compute_time`, per-rank
//! `step_time{…}` charts are compared instead (asynchronous or per-node timings). Each rank's
//! level is the median of its samples in the last `straggler_window_secs` (2 min), or its newest
//! sample when it has none there (sparse traces); the peers' level is the median of those
//! levels over all ranks, which a minority of slow ranks cannot move. A rank at least
//! `straggler_ratio` (1.3) times the peers' level is a straggler; at least
//! `straggler_min_ranks` (3) ranks must report. Healthy ranks agree within a few percent, and
//! NVRx flags ranks below 0.7 relative speed (1.43×). Only while the run is not paused.
//!
//! One condition per chart role (the chart is `compute_time` or `step_time`): the slowest rank
//! can change from step to step (sequence-length imbalance) and that is one straggler problem,
//! not many; the message names the slow ranks. Severity warning.

use crate::charts::{ChartKey, Role, Sample};

use super::stats::{between, median_in_place, num, visible};
use super::{Band, DetectContext, Finding, FindingKind, Severity};

/// Slow ranks named in a message.
const MAX_NAMED: usize = 5;

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    for role in [Role::ComputeTime, Role::StepTime] {
        let ranked = ctx
            .charts
            .by_role(role)
            .filter(|(k, _)| !k.labels.is_empty())
            .count();
        if ranked < ctx.params.straggler_min_ranks.max(2) {
            continue;
        }
        if let Some(f) = compare(ctx, role) {
            out.push(f);
        }
        // compute_time decides when it exists: step_time of synchronous ranks is all equal.
        return;
    }
}

fn compare(ctx: &DetectContext<'_>, role: Role) -> Option<Finding> {
    let p = ctx.params;
    let mut buf = Vec::new();
    let mut levels: Vec<(&ChartKey, f64, f64)> = Vec::new(); // key, level, onset
    for (key, series) in ctx.charts.by_role(role) {
        if key.labels.is_empty() {
            continue;
        }
        let vis = visible(series, ctx);
        let win = between(vis, ctx.now - p.straggler_window_secs, f64::INFINITY);
        buf.clear();
        buf.extend(
            win.iter()
                .map(|s| s.v)
                .filter(|v| v.is_finite() && *v >= 0.0),
        );
        let (level, first) = if buf.is_empty() {
            match vis.iter().rev().find(|s| s.v.is_finite() && s.v >= 0.0) {
                Some(s) => (s.v, s.t),
                None => continue,
            }
        } else {
            let first = win.first().map_or(ctx.now, |s: &Sample| s.t);
            (median_in_place(&mut buf)?, first)
        };
        levels.push((key, level, first));
    }
    if levels.len() < p.straggler_min_ranks.max(2) {
        return None;
    }
    let mut all: Vec<f64> = levels.iter().map(|l| l.1).collect();
    let peers = median_in_place(&mut all)?;
    if peers.is_nan() || peers <= 0.0 {
        return None;
    }
    let mut slow: Vec<&(&ChartKey, f64, f64)> = levels
        .iter()
        .filter(|l| l.1 >= p.straggler_ratio * peers)
        .collect();
    if slow.is_empty() {
        return None;
    }
    slow.sort_by(|a, b| b.1.total_cmp(&a.1));
    let worst = slow[0];
    let onset = slow
        .iter()
        .map(|l| l.2)
        .min_by(f64::total_cmp)
        .unwrap_or(ctx.now);
    let named: Vec<String> = slow
        .iter()
        .take(MAX_NAMED)
        .map(|l| format!("{} {:.2}×", rank_name(l.0), l.1 / peers))
        .collect();
    Some(Finding {
        kind: FindingKind::Straggler,
        chart: role.as_str().to_string(),
        at: ctx.now,
        onset,
        severity: Severity::Warning,
        message: format!(
            "{} of {} ranks are at least {}× slower than the median of their peers ({} s): {}{}",
            slow.len(),
            levels.len(),
            num(p.straggler_ratio),
            num(peers),
            named.join(", "),
            if slow.len() > MAX_NAMED { ", …" } else { "" }
        ),
        value: Some(worst.1),
        baseline: Some(Band {
            center: peers,
            sigma: 0.0,
        }),
    })
}

/// `rank=3` from `compute_time{rank=3}` (all labels when there are several).
fn rank_name(k: &ChartKey) -> String {
    k.labels
        .iter()
        .map(|(a, b)| format!("{a}={b}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::ChartSet;
    use crate::detect::testkit::{Rng, run_detector};

    fn ranks(n: usize, slow: impl Fn(usize, f64) -> f64) -> ChartSet {
        let mut rng = Rng::new(1);
        let mut c = ChartSet::new();
        for r in 0..n {
            let samples: Vec<_> = (0..=100)
                .map(|i| {
                    let t = i as f64 * 10.0;
                    Sample::new(t, slow(r, t) * (1.0 + 0.03 * rng.normal()))
                })
                .collect();
            c.merge(
                ChartKey::new(Role::ComputeTime).with_label("rank", r.to_string()),
                samples.clone(),
            );
            // Synchronous: every rank's step time is the slowest rank's (here ~2 s).
            c.merge(
                ChartKey::new(Role::StepTime).with_label("rank", r.to_string()),
                samples.iter().map(|s| Sample::new(s.t, 2.0)),
            );
        }
        c
    }

    #[test]
    fn the_slow_rank_is_named_healthy_peers_are_quiet() {
        let healthy = ranks(8, |_, _| 1.0);
        assert!(run_detector(detect, &healthy, 1000.0, None, false).is_empty());
        let slow = ranks(8, |r, t| if r == 6 && t >= 500.0 { 1.8 } else { 1.0 });
        assert!(run_detector(detect, &slow, 450.0, None, false).is_empty());
        let f = run_detector(detect, &slow, 700.0, None, false);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].chart, "compute_time");
        assert!(f[0].message.starts_with("1 of 8 ranks"), "{}", f[0].message);
        assert!(f[0].message.contains("rank=6 1."), "{}", f[0].message);
        assert!(
            run_detector(detect, &slow, 700.0, None, true).is_empty(),
            "paused"
        );
    }
}
