//! `loss_plateau`: the loss has not improved for far longer than a healthy run goes without.
//!
//! Watches every `loss` chart. The smoothed loss now (median of the newest
//! `loss_plateau_window_secs`, 30 min) is compared with the smoothed loss `loss_plateau_secs`
//! (4 h) earlier (median of the 30 min ending then). Both windows need 10 finite samples, and
//! the run's visible history must cover the whole span, so warm-up and a fresh restart never
//! count. A plateau is an improvement below `loss_plateau_min_drop` (0.2 %) of the earlier
//! level: language-model runs still gain a percent or more over four hours late in training,
//! and medians over half an hour make per-batch noise irrelevant. A rising loss is a plateau
//! too here (divergence reports it more precisely, in the same family). Two half-hour medians
//! of a flat, noisy loss differ by about ±0.3 %, so a plateau judged on one comparison flickers
//! across the threshold; the condition therefore holds while any check of the last
//! `loss_plateau_hold_secs` (1 h, one check every 5 min) shows a plateau, and clears only after
//! an hour in which every check shows the loss improving again. Only while the run is
//! progressing and its learning rate, when charted, is not at zero (the end of a schedule).
//! Severity info: wasted compute, not damage.

use crate::charts::Role;

use super::stats::{between, median, num, progressing, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// Finite samples needed in each of the two windows.
const MIN_SAMPLES: usize = 10;

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    if ctx.paused || progressing(ctx).is_none() {
        return;
    }
    if let Some(lr) = ctx.charts.get(Role::Lr)
        && let Some(last) = visible(lr, ctx).iter().rev().find(|s| s.v.is_finite())
        && last.v <= 0.0
    {
        return;
    }
    let w = p.loss_plateau_window_secs;
    let mut buf = Vec::new();
    for (key, series) in ctx.charts.by_role(Role::Loss) {
        let vis = visible(series, ctx);
        // The newest check that shows a plateau, every sixth of the smoothing window back to `loss_plateau_hold_secs` earlier, on a grid fixed in time (multiples of the
        // spacing), so consecutive polls look at the same checks and the hold does not flicker.
        let every = w / 6.0;
        let checks = (p.loss_plateau_hold_secs / every).floor() as usize;
        let grid = (ctx.now / every).floor() * every;
        let times = (0..=checks)
            .map(|j| grid - j as f64 * every)
            .filter(|&t| t >= ctx.now - p.loss_plateau_hold_secs);
        let Some((at, now_level, then_level, drop)) =
            times.filter_map(|t| plateau_at(vis, t, p, &mut buf)).next()
        else {
            continue;
        };
        let held = if ctx.now - at >= every {
            format!(
                "; still within the {} hold (every check since has improved)",
                crate::clock::fmt_span_adj(p.loss_plateau_hold_secs)
            )
        } else {
            String::new()
        };
        out.push(Finding {
            kind: FindingKind::LossPlateau,
            chart: key.to_string(),
            at: ctx.now,
            onset: at - p.loss_plateau_secs,
            severity: Severity::Info,
            message: format!(
                "{key} has not improved in {:.1} h: median {} now vs {} then ({:+.2}%, expected at least -{:.1}%){held}",
                p.loss_plateau_secs / 3600.0,
                num(now_level),
                num(then_level),
                -drop * 100.0,
                p.loss_plateau_min_drop * 100.0,
            ),
            value: Some(now_level),
            baseline: None,
        });
    }
}

/// Whether the loss shows a plateau as seen at `t`: (t, level at t, level then, relative drop).
fn plateau_at(
    vis: &[crate::charts::Sample],
    t: f64,
    p: &super::DetectorParams,
    buf: &mut Vec<f64>,
) -> Option<(f64, f64, f64, f64)> {
    let w = p.loss_plateau_window_secs;
    let then_end = t - p.loss_plateau_secs;
    if vis.first().is_none_or(|first| first.t > then_end - w) {
        return None;
    }
    let (now_level, n_now) = median(between(vis, t - w, t), buf)?;
    let (then_level, n_then) = median(between(vis, then_end - w, then_end), buf)?;
    if n_now < MIN_SAMPLES || n_then < MIN_SAMPLES {
        return None;
    }
    let drop = (then_level - now_level) / then_level.abs().max(1e-12);
    (drop < p.loss_plateau_min_drop).then_some((t, now_level, then_level, drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::{Rng, run_detector};

    fn run(flat_from: f64) -> ChartSet {
        let mut rng = Rng::new(4);
        let mut c = ChartSet::new();
        let n = 12 * 60;
        c.merge(
            ChartKey::new(Role::Step),
            (0..=n).map(|i| Sample::new(i as f64 * 60.0, i as f64)),
        );
        c.merge(
            ChartKey::new(Role::Loss),
            (0..=n).map(|i| {
                let t = (i as f64 * 60.0).min(flat_from);
                let v = 2.0 + 3.0 * (-t / 14400.0).exp();
                Sample::new(i as f64 * 60.0, v * (1.0 + 0.01 * rng.student_t(4)))
            }),
        );
        c
    }

    #[test]
    fn a_flat_loss_is_a_plateau_an_improving_one_is_not() {
        let healthy = run(f64::INFINITY);
        assert!(run_detector(detect, &healthy, 12.0 * 3600.0, None, false).is_empty());
        let flat = run(3.0 * 3600.0);
        assert!(run_detector(detect, &flat, 6.0 * 3600.0, None, false).is_empty());
        let f = run_detector(detect, &flat, 8.0 * 3600.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::LossPlateau);
        assert!(
            f[0].message.contains("not improved in 4.0 h"),
            "{}",
            f[0].message
        );
    }
}
