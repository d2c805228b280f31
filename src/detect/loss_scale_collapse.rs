//! `loss_scale_collapse`: the fp16 dynamic loss scale keeps falling, or steps keep being skipped.
//!
//! Watches `loss_scale` and `skipped_steps`. A dynamic loss scaler halves the scale on every
//! overflow and doubles it after a quiet growth interval (2000 steps by default), so a healthy
//! run backs off about once per interval, and a handful of times in a row when it calibrates or
//! meets a patch of hard batches; a collapsing one halves on every step or two. Within `loss_scale_window_secs` (10 min) the condition
//! holds when the scale was reduced `loss_scale_max_drops` (8) times or more, when the newest
//! scale is at or below `loss_scale_floor` (1.0: nothing is left to scale, every step
//! overflows), or when the cumulative `skipped_steps` counter grew by `skipped_steps_max` (25)
//! or more (a counter reset on restart is not growth). Severity error: the optimizer is not
//! stepping, or is about to produce NaNs.

use crate::charts::Role;

use super::stats::{between, increments, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    let from = ctx.now - p.loss_scale_window_secs;
    for (key, series) in ctx.charts.by_role(Role::LossScale) {
        let win = between(visible(series, ctx), from, f64::INFINITY);
        let mut drops = 0usize;
        let mut first_drop = None;
        let mut prev: Option<f64> = None;
        for s in win.iter().filter(|s| s.v.is_finite()) {
            if let Some(pv) = prev
                && s.v < pv
            {
                drops += 1;
                first_drop.get_or_insert(s.t);
            }
            prev = Some(s.v);
        }
        let Some(latest) = win.iter().rev().find(|s| s.v.is_finite()) else {
            continue;
        };
        let floor = latest.v <= p.loss_scale_floor;
        if drops < p.loss_scale_max_drops.max(1) && !floor {
            continue;
        }
        let onset = first_drop.unwrap_or(latest.t);
        out.push(Finding {
            kind: FindingKind::LossScaleCollapse,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Error,
            message: format!(
                "{key} is {} after {drops} reductions in the last {}{}",
                num(latest.v),
                crate::clock::fmt_span(p.loss_scale_window_secs),
                if floor {
                    " (at its floor: every step overflows)"
                } else {
                    ""
                }
            ),
            value: Some(latest.v),
            baseline: None,
        });
    }
    for (key, series) in ctx.charts.by_role(Role::SkippedSteps) {
        let win = between(visible(series, ctx), from, f64::INFINITY);
        let (grew, _, first) = increments(win);
        if grew < p.skipped_steps_max {
            continue;
        }
        out.push(Finding {
            kind: FindingKind::LossScaleCollapse,
            chart: key.to_string(),
            at: ctx.now,
            onset: first.unwrap_or(ctx.now),
            severity: Severity::Error,
            message: format!(
                "{key} grew by {} in the last {} (threshold {}): the optimizer keeps skipping steps on overflow",
                num(grew),
                crate::clock::fmt_span(p.loss_scale_window_secs),
                num(p.skipped_steps_max)
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
    fn repeated_halving_and_skips_collapse_one_back_off_does_not() {
        let mut c = ChartSet::new();
        // One back-off at 600 s, then from 3000 s a halving every 60 s.
        c.merge(
            ChartKey::new(Role::LossScale),
            (0..=80).map(|i| {
                let t = i as f64 * 60.0;
                let v = if t < 600.0 {
                    65536.0
                } else if t < 3000.0 {
                    32768.0
                } else {
                    32768.0 / 2f64.powf((t - 2940.0) / 60.0)
                };
                Sample::new(t, v)
            }),
        );
        assert!(run_detector(detect, &c, 1200.0, None, false).is_empty());
        assert!(run_detector(detect, &c, 3360.0, None, false).is_empty());
        let f = run_detector(detect, &c, 3420.0, None, false);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].onset, 3000.0);
        assert!(
            f[0].message.contains("after 8 reductions"),
            "{}",
            f[0].message
        );

        // A healthy cluster (generated seed 9): four back-offs in 8.5 min, 65536 → 4096, one
        // skipped step each, then growth again.
        let mut h = ChartSet::new();
        h.merge(
            ChartKey::new(Role::LossScale),
            (0..=60).map(|i| {
                let t = i as f64 * 10.0;
                let drops = [90.0, 240.0, 440.0, 600.0]
                    .iter()
                    .filter(|d| t >= **d)
                    .count();
                Sample::new(t, 65536.0 / 2f64.powi(drops as i32))
            }),
        );
        assert!(run_detector(detect, &h, 600.0, None, false).is_empty());

        let mut s = ChartSet::new();
        // 10 skips per minute from 1200 s; a restart resets the counter at 600 s.
        s.merge(
            ChartKey::new(Role::SkippedSteps),
            (0..=40).map(|i| {
                let t = i as f64 * 60.0;
                let v = if t < 600.0 {
                    5.0
                } else {
                    ((t - 1140.0).max(0.0) / 60.0 * 10.0).floor()
                };
                Sample::new(t, v)
            }),
        );
        assert!(run_detector(detect, &s, 1260.0, None, false).is_empty());
        let f = run_detector(detect, &s, 1380.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].chart, "skipped_steps");
    }
}
