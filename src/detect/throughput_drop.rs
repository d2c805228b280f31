//! `throughput_drop`: the run is making progress, but much slower than its own baseline.
//!
//! Watches every `throughput` chart. The recent level is the median of the last
//! `throughput_recent_secs` (5 min, enough to ride over one checkpoint save or evaluation
//! pause); the baseline is the median of the `throughput_baseline_secs` (60 min) before it,
//! with at least `throughput_min_baseline_samples` (20) and `throughput_min_recent_samples` (5)
//! finite samples. A drop is a recent median below `throughput_drop_ratio` (0.7) of the
//! baseline: NVRx's straggler threshold, and well above the 1–5 % of thermal throttling or
//! diurnal drift. Medians, because throughput charts have zeros (saves) and bursts.
//!
//! Only while the step advances: the run must not be paused, there must be a `step` chart, and
//! its last advance must be less than `stall_after_secs` ago; samples after that last advance
//! are not used, and the recent window is the `throughput_recent_secs` up to it. After a gap of `stall_after_secs` without progress, there is no verdict until
//! the run has advanced for a whole recent window again. No progress is a stall, not a
//! slowdown: a hang that zeroes throughput is left to `stall` and never shows as a drop first. Like `loss_spike`, a lasting slowdown is measured
//! against the baseline before its onset (up to `throughput_hold_secs`, 2 h), so it is reported
//! once; the onset is the first low sample of the stretch. Severity warning: costly, not fatal.

use crate::charts::{Role, Sample};

use super::stats::{ShiftSearch, last_advance, level_drop, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    let p = ctx.params;
    // Progress gate: the time of the step counter's last advance, if recent.
    let Some(step) = ctx.charts.get(Role::Step) else {
        return;
    };
    let steps = visible(step, ctx);
    let Some(adv) = last_advance(steps) else {
        return;
    };
    let t_adv = steps[adv].t;
    let since_advance = ctx.now - t_adv;
    if since_advance.is_nan() || since_advance >= p.stall_after_secs {
        return;
    }
    // The recent window ends at the last advance (later samples are not used): anchored there,
    // it keeps its length while the counter stands still for a while, instead of shrinking to
    // the few samples between its start and the last advance (an eval pause among three
    // samples of a 30-s chart is no median of five minutes).
    let recent_from = t_adv - p.throughput_recent_secs;
    let resumed = progress_start(steps, adv, p.stall_after_secs, recent_from);
    // A run that resumed less than a recent window ago has no recent level yet.
    if resumed > recent_from {
        return;
    }
    let search = ShiftSearch {
        baseline_secs: p.throughput_baseline_secs,
        recent_secs: p.throughput_recent_secs,
        hold_secs: p.throughput_hold_secs,
        min_samples: p.throughput_min_baseline_samples,
    };
    let ratio = p.throughput_drop_ratio;
    let mut buf = Vec::new();
    for (key, series) in ctx.charts.by_role(Role::Throughput) {
        let vis = visible(series, ctx);
        let upto = &vis[..vis.partition_point(|s| s.t <= t_adv)];
        let Some((level, shift)) = level_drop(
            upto,
            recent_from.max(resumed),
            t_adv,
            &search,
            ratio,
            p.throughput_min_recent_samples,
            &mut buf,
        ) else {
            continue;
        };
        let b = shift.base;
        let onset = upto[shift.onset].t;
        out.push(Finding {
            kind: FindingKind::ThroughputDrop,
            chart: key.to_string(),
            at: ctx.now,
            onset,
            severity: Severity::Warning,
            message: format!(
                "{key} median {} over the last {} is {:.0}% of its {} baseline {} (threshold {:.0}%); low since {}",
                num(level),
                crate::clock::fmt_span(p.throughput_recent_secs),
                level / b.median * 100.0,
                crate::clock::fmt_span_adj(p.throughput_baseline_secs),
                num(b.median),
                ratio * 100.0,
                crate::clock::fmt_t(onset)
            ),
            value: Some(level),
            baseline: Some(b.band()),
        });
    }
}

/// Start of the current stretch of progress: the first advance after the newest gap of at least
/// `stall_after` without one (a hang or a restart that has recovered), looking back to `horizon`.
/// Throughput measured before it belongs to the hang, not to a slowdown.
fn progress_start(steps: &[Sample], adv: usize, stall_after: f64, horizon: f64) -> f64 {
    let mut later = steps[adv].t;
    let mut newer: Option<Sample> = None;
    for s in steps[..=adv].iter().rev() {
        if !s.v.is_finite() {
            continue;
        }
        if let Some(n) = newer
            && n.v > s.v
        {
            if later - n.t >= stall_after {
                return later;
            }
            later = n.t;
            if n.t < horizon {
                break;
            }
        }
        newer = Some(*s);
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet};
    use crate::detect::testkit::{Rng, poll_started};

    /// 15-s samples: the step advances 10 per sample unless `hung(t)`; throughput `tp(t)` × noise.
    fn run(seed: u64, end: f64, hung: impl Fn(f64) -> bool, tp: impl Fn(f64) -> f64) -> ChartSet {
        let mut rng = Rng::new(seed);
        let mut c = ChartSet::new();
        let mut step = 0.0;
        for i in 0..=(end / 15.0) as usize {
            let t = i as f64 * 15.0;
            if !hung(t) {
                step += 10.0;
            }
            c.merge(ChartKey::new(Role::Step), [Sample::new(t, step)]);
            let v = if hung(t) {
                0.0
            } else {
                tp(t) * (1.0 + 0.03 * rng.student_t(4))
            };
            c.merge(
                ChartKey::new(Role::Throughput),
                [Sample::new(t, v.max(0.0))],
            );
        }
        c
    }

    #[test]
    fn a_slowdown_is_found_with_its_onset() {
        let c = run(
            3,
            4.0 * 3600.0,
            |_| false,
            |t| if t >= 7200.0 { 500.0 } else { 1000.0 },
        );
        let started = poll_started(&c, 0.0, 4.0 * 3600.0, None, false);
        assert_eq!(started.len(), 1, "{started:#?}");
        let f = &started[0];
        assert_eq!(f.kind, FindingKind::ThroughputDrop);
        assert_eq!(f.onset, 7200.0);
        // The 5-min median turns once half the window is slow (+ one poll).
        assert!(f.at <= 7200.0 + 150.0 + 30.0, "{}", f.at);
        assert!(f.value.is_some_and(|v| (v - 500.0).abs() < 60.0), "{f:#?}");
        assert!(
            f.message
                .contains("is 54% of its 60-min baseline 999.7 (threshold 70%); low since t=7200"),
            "{}",
            f.message
        );
        // The slower rate persists for 2 h: still the same one episode (len == 1 above).
    }

    #[test]
    fn a_hang_is_not_a_slowdown_and_paused_runs_are_quiet() {
        let hang = |t: f64| (7200.0..9000.0).contains(&t);
        let c = run(4, 4.0 * 3600.0, hang, |_| 1000.0);
        let started = poll_started(&c, 0.0, 4.0 * 3600.0, None, false);
        let kinds: Vec<_> = started.iter().map(|f| (f.kind, f.onset)).collect();
        // The hang is a stall (from its last advance), and never a throughput drop.
        assert_eq!(kinds, vec![(FindingKind::Stall, 7185.0)]);
        let slow = run(
            3,
            4.0 * 3600.0,
            |_| false,
            |t| if t >= 7200.0 { 500.0 } else { 1000.0 },
        );
        assert!(poll_started(&slow, 0.0, 4.0 * 3600.0, None, true).is_empty());
        // Restarted at 7150: this life's baseline is (almost) all at the slower rate.
        assert!(poll_started(&slow, 7150.0, 9000.0, Some(7150.0), false).is_empty());
    }

    #[test]
    fn periodic_checkpoint_pauses_and_noise_stay_quiet() {
        for seed in [1, 2, 3] {
            // Every 30 min the run saves a checkpoint for 60 s: no steps, zero throughput.
            let save = |t: f64| t % 1800.0 < 60.0 && t > 60.0;
            let c = run(seed, 8.0 * 3600.0, save, |t| 1000.0 * (1.0 - t / 1e6));
            assert!(
                poll_started(&c, 0.0, 8.0 * 3600.0, None, false).is_empty(),
                "seed {seed}"
            );
        }
    }
}
