//! `stall`: the step counter stopped advancing while the run should be running (a hang).
//!
//! Watches every `step` chart. The condition holds when the step has not increased for a
//! threshold although its samples keep arriving (the newest `step` sample is at most
//! `stall_fresh_secs`, 180 s, old: when the data stops too, that is `metrics_absent`). The time
//! standing still is measured up to the newest sample, so only samples that show the same step
//! count as evidence of a hang.
//!
//! The threshold is learned from the run's own history, because a hang and a planned pause
//! (evaluation, checkpoint save) look the same while they last. The completed stops of the
//! last 4 × `stall_learn_secs` (8 h: enough to show a schedule, and a poll costs the same on day
//! 30 as on day 1) are the run's pauses: no advance for more than 3× the usual gap between
//! advances, 1.5× when the counter moves several steps per sample (holes and rollbacks are
//! restarts, not stops); evals and checkpoints recur on a
//! schedule, so a pause whose start is evenly spaced with two others is *scheduled* when the
//! pauses are the same work: the two shortest of the three last about as long (the longer at
//! most 1.5× the shorter; the third may be longer, a save that coincides with an eval). When the
//! counter stops where the schedule puts a pause (continuing an evenly spaced pair), the
//! threshold is `stall_after_secs` (300 s) or 1.5× the longest pause seen, whichever is longer.
//! Anywhere else, it is `stall_min_secs` (45 s: two polls see the same step), or 1.5× the longest *irregular*
//! stop the run has had, or 2× its usual gap between advances when the counter usually moves
//! three or more steps between them (only the sampling sets that gap), 4× when it moves about
//! one (step-time jitter beats against the sampling), whichever is longest. The pauses are learned once
//! the run has `stall_learn_secs` (2 h) of history, or more than half of it and three evenly spaced
//! pauses (a schedule it has shown); before that, or with fewer than 10 advances, the threshold
//! is `stall_after_secs`. The hour is what keeps the first save of an hourly checkpoint under
//! the default when only a faster eval schedule has been seen: it comes before the hour ends.
//! The run must have advanced at least once among the samples since `since`: right after a
//! start or restart, loading a checkpoint is not a hang. Paused runs are quiet. 300 s is above
//! a checkpoint save or an evaluation pass of most runs and below PyTorch's 10-min NCCL timeout,
//! so a hang is caught before (or when) the job's own watchdog gives up.
//!
//! The onset is the time of the last advance. A hang with busy GPUs is the costliest failure
//! (processes alive, NCCL spinning at 100 %, nothing else fires: BLOOM lost 3+ h this way), so
//! the message says what `gpu_util` shows, and severity is critical when GPUs are busy (mean
//! ≥ 50 %), error otherwise.

use crate::charts::{Role, Sample};

use super::DetectorParams;

use super::stats::{last_advance, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// GPUs at or above this mean utilisation are "busy" (a hang in a collective, not a crash).
const BUSY_PERCENT: f64 = 50.0;

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    if ctx.paused {
        return;
    }
    let p = ctx.params;
    for (key, series) in ctx.charts.by_role(Role::Step) {
        let vis = visible(series, ctx);
        let Some(newest) = vis.last() else { continue };
        let age = ctx.now - newest.t;
        if age.is_nan() || age > p.stall_fresh_secs {
            continue;
        }
        let Some(adv) = last_advance(vis) else {
            continue;
        };
        let last = vis[adv];
        // Observed standing still: up to the newest sample, not to `now`. A counter whose
        // samples stopped with it (the exporter or the pods gone) is not seen to hang.
        let mut quiet = newest.t - last.t;
        let (mut after, mut why) = threshold(vis, last.t, p);
        // A rollback since the last advance is a restart (a crash, or one babysitter did not
        // make): loading a checkpoint takes minutes, so the new life gets the default
        // threshold, counted from the rollback.
        if let Some(back) = vis[adv..].iter().find(|s| s.v.is_finite() && s.v < last.v) {
            quiet = newest.t - back.t;
            after = p.stall_after_secs;
            why = "restarted: the step rolled back";
        }
        if quiet.is_nan() || quiet < after {
            continue;
        }
        let (gpu, severity) = match gpu_util(ctx) {
            Some(g) if g.mean >= BUSY_PERCENT => (
                format!("; GPUs still busy at {:.0}%{}", g.mean, g.spread()),
                Severity::Critical,
            ),
            Some(g) => (
                format!("; GPU utilisation {:.0}%{}", g.mean, g.spread()),
                Severity::Error,
            ),
            None => (String::new(), Severity::Error),
        };
        out.push(Finding {
            kind: FindingKind::Stall,
            chart: key.to_string(),
            at: ctx.now,
            onset: last.t,
            severity,
            message: format!(
                "{key} stuck at {} for {quiet:.0} s (last advance at {}) while samples keep arriving{gpu}; threshold {after:.0} s ({why})",
                num(last.v),
                crate::clock::fmt_t(last.t)
            ),
            value: Some(last.v),
            baseline: None,
        });
    }
}

/// Most planned pauses remembered (the newest).
const MAX_PAUSES: usize = 32;

/// How far back, in `stall_learn_secs`, the run's pauses and gaps are learned from.
const LEARN_HORIZON: f64 = 4.0;

/// Steps per advance from which the sampling interval, not the step time, sets the gap between
/// advances (see `threshold`).
const MANY_STEPS: f64 = 3.0;

/// Two pauses are of one kind when the longer lasts at most this many times the shorter.
const SAME_PAUSE: f64 = 1.5;

/// A completed stop of the step counter in the run's history: when it began, how long it lasted.
#[derive(Debug, Clone, Copy)]
struct Pause {
    start: f64,
    secs: f64,
}

/// How long the counter may stand still from `stop` (the last advance) before it is a hang, and
/// why. Learned from the completed stops of the visible history (see the module doc).
fn threshold(vis: &[Sample], stop: f64, p: &DetectorParams) -> (f64, &'static str) {
    let fallback = (
        p.stall_after_secs,
        "default: too little history to learn its pauses",
    );
    // The last few hours are enough to learn a schedule (and keep the cost of a poll from
    // growing with the run's age).
    let vis = &vis[vis.partition_point(|s| s.t < stop - LEARN_HORIZON * p.stall_learn_secs)..];
    let Some(first) = vis.first() else {
        return fallback;
    };
    // Times of the advances (a sample above the one before), and no hole or rollback between.
    let mut advances: Vec<f64> = Vec::new();
    let mut pauses: Vec<Pause> = Vec::new();
    let mut gaps: Vec<f64> = Vec::new();
    // Steps per advance: how far the counter moves between two samples that show it moving.
    let mut moves: Vec<f64> = Vec::new();
    let mut prev: Option<Sample> = None;
    let mut last_adv: Option<f64> = None;
    for s in vis.iter().filter(|s| s.v.is_finite() && s.t <= stop) {
        if let Some(q) = prev {
            if s.v < q.v || s.t - q.t > p.stall_fresh_secs {
                // A restart (rollback) or a hole in the data: not a pause of a running job.
                last_adv = None;
            } else if s.v > q.v {
                if let Some(a) = last_adv {
                    gaps.push(s.t - a);
                    moves.push(s.v - q.v);
                }
                advances.push(s.t);
                last_adv = Some(s.t);
            }
        }
        prev = Some(*s);
    }
    let history = stop - first.t;
    if history <= p.stall_learn_secs / 2.0 || gaps.len() < 10 {
        return fallback;
    }
    let mid = gaps.len() / 2;
    let usual = *gaps.select_nth_unstable_by(mid, f64::total_cmp).1;
    let mid = moves.len() / 2;
    let typical_move = *moves.select_nth_unstable_by(mid, f64::total_cmp).1;
    // How many usual gaps of standing still are a hang, off schedule. When the counter
    // typically moves several steps between samples, the sampling interval alone sets the gap
    // (a sample without a step is already unheard of): two gaps. When it moves about one step
    // per sample, step-time jitter beating against the sampling makes a double gap ordinary:
    // four.
    let gap_factor = if typical_move >= MANY_STEPS { 2.0 } else { 4.0 };
    // A stop is a pause when it lasted well beyond the usual gap between advances: for a
    // counter that moves several steps per sample, any stop longer than one gap is one (a
    // 60-s eval among 30-s samples is two samples without a step), else three gaps.
    let pause_factor = if gap_factor < 4.0 { 1.5 } else { 3.0 };
    let min_pause = (pause_factor * usual).max(p.stall_min_secs / 2.0);
    for w in advances.windows(2) {
        let secs = w[1] - w[0];
        if secs > min_pause {
            pauses.push(Pause { start: w[0], secs });
        }
    }
    if pauses.len() > MAX_PAUSES {
        pauses.drain(..pauses.len() - MAX_PAUSES);
    }
    let tol = (3.0 * usual).max(p.stall_min_secs / 2.0);
    // Pauses of one schedule are the same work (an eval pass, a save), so they last about as
    // long; an eval and a save that happen to be evenly spaced are no schedule.
    let alike = |a: &Pause, b: &Pause| a.secs.max(b.secs) <= SAME_PAUSE * a.secs.min(b.secs);
    // Pause `k` continues a schedule when two earlier pauses are spaced as it is from the later.
    let on_schedule = |start: f64, before: &[Pause]| {
        before.iter().enumerate().any(|(j, b)| {
            before[..j]
                .iter()
                .any(|a| alike(a, b) && ((start - b.start) - (b.start - a.start)).abs() <= tol)
        })
    };
    let longest_planned = pauses.iter().map(|x| x.secs).fold(0.0_f64, f64::max);
    // Between half and all of `stall_learn_secs`, the pauses count as learned only once the run
    // has shown its schedule: three evenly spaced pauses.
    if history < p.stall_learn_secs
        && !(0..pauses.len()).any(|k| on_schedule(pauses[k].start, &pauses[..k]))
    {
        return fallback;
    }
    if on_schedule(stop, &pauses) {
        return (
            p.stall_after_secs.max(1.5 * longest_planned),
            "a scheduled pause (eval or checkpoint) is due now",
        );
    }
    // Off schedule: only the run's irregular stops (in no evenly spaced triple) set the bar.
    let n = pauses.len();
    let mut periodic = vec![false; n];
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                let (a, b, c) = (pauses[i].start, pauses[j].start, pauses[k].start);
                // The two shortest must be alike; the third may be longer (a save that
                // coincides with an eval lasts as long as both).
                let mut secs = [pauses[i].secs, pauses[j].secs, pauses[k].secs];
                secs.sort_by(f64::total_cmp);
                if secs[1] <= SAME_PAUSE * secs[0] && ((c - b) - (b - a)).abs() <= tol {
                    periodic[i] = true;
                    periodic[j] = true;
                    periodic[k] = true;
                }
            }
        }
    }
    let longest_irregular = pauses
        .iter()
        .zip(&periodic)
        .filter(|(_, per)| !**per)
        .map(|(x, _)| x.secs)
        .fold(0.0_f64, f64::max);
    (
        p.stall_min_secs
            .max(1.5 * longest_irregular)
            .max(gap_factor * usual),
        "off the run's eval/checkpoint schedule",
    )
}

/// Utilisation of the GPUs now: the newest fresh sample of every `gpu_util` chart, in percent.
struct GpuUtil {
    mean: f64,
    min: f64,
    n: usize,
}

impl GpuUtil {
    fn spread(&self) -> String {
        if self.n > 1 {
            format!(" (mean of {} GPUs, min {:.0}%)", self.n, self.min)
        } else {
            String::new()
        }
    }
}

fn gpu_util(ctx: &DetectContext<'_>) -> Option<GpuUtil> {
    let (mut sum, mut min, mut max, mut n) = (0.0, f64::INFINITY, f64::NEG_INFINITY, 0usize);
    for (_, series) in ctx.charts.by_role(Role::GpuUtil) {
        let vis = visible(series, ctx);
        let fresh = vis
            .iter()
            .rev()
            .take_while(|s| ctx.now - s.t <= ctx.params.stall_fresh_secs)
            .find(|s| s.v.is_finite() && s.v >= 0.0);
        if let Some(s) = fresh {
            sum += s.v;
            min = min.min(s.v);
            max = max.max(s.v);
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    // FORMATS.md §1: 0–1 or 0–100. A fraction never exceeds 1.
    let scale = if max <= 1.0 { 100.0 } else { 1.0 };
    Some(GpuUtil {
        mean: (sum / n as f64 * scale).min(100.0),
        min: (min * scale).min(100.0),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::poll_started;

    /// Steps advance every 15 s until `hang`, then the counter freezes; samples continue to `end`.
    fn hung(hang: f64, end: f64, util: Option<f64>) -> ChartSet {
        let mut c = ChartSet::new();
        let n = (end / 15.0) as usize;
        c.merge(
            ChartKey::new(Role::Step),
            (0..=n).map(|i| {
                let t = i as f64 * 15.0;
                Sample::new(t, (t.min(hang) / 15.0).floor() * 10.0)
            }),
        );
        if let Some(u) = util {
            for gpu in 0..4 {
                c.merge(
                    ChartKey::new(Role::GpuUtil).with_label("gpu", gpu.to_string()),
                    (0..=n).map(|i| Sample::new(i as f64 * 15.0, u - gpu as f64 * 0.02)),
                );
            }
        }
        c
    }

    fn detect_at(c: &ChartSet, now: f64, since: Option<f64>, paused: bool) -> Vec<Finding> {
        crate::detect::testkit::run_detector(detect, c, now, since, paused)
    }

    /// A 30-s scrape of a run that takes `steps_per_sample` steps between two samples, with a
    /// 60-s eval pause every 30 min, hung from `hang` on.
    fn scraped_every_30s(steps_per_sample: f64, hang: f64, end: f64) -> ChartSet {
        let mut c = ChartSet::new();
        let mut step = 0.0;
        c.merge(
            ChartKey::new(Role::Step),
            (0..=(end / 30.0) as usize).map(|i| {
                let t = i as f64 * 30.0;
                let eval = t % 1800.0 < 60.0 && t > 0.0;
                if t <= hang && !eval {
                    step += steps_per_sample;
                }
                Sample::new(t, step)
            }),
        );
        c
    }

    #[test]
    fn what_the_run_did_more_than_eight_hours_ago_no_longer_sets_the_bar() {
        // 12 h at a step per 15 s, one irregular 20-min stop in hour 1 (a slow checkpoint
        // load), then a hang at 11.5 h. The old stop is past the 8-h horizon: the bar is the
        // run's recent one, not 1.5 × 20 min.
        let hang = 11.5 * 3600.0;
        let mut c = ChartSet::new();
        let mut step = 0.0;
        c.merge(
            ChartKey::new(Role::Step),
            (0..=(12.0 * 240.0) as usize).map(|i| {
                let t = i as f64 * 15.0;
                let stopped = (3600.0..4800.0).contains(&t) || t > hang;
                if !stopped {
                    step += 10.0;
                }
                Sample::new(t, step)
            }),
        );
        let f = detect_at(&c, hang + 120.0, None, false);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(f[0].message.contains("threshold 45 s"), "{}", f[0].message);
    }

    #[test]
    fn a_coarse_scrape_of_a_fast_run_finds_a_hang_after_two_samples() {
        // 15 steps between samples: a sample without a step is unheard of, so two in a row
        // (60 s) are a hang, off the eval schedule; healthy hours before it stay quiet.
        let hang = 3.0 * 3600.0 + 600.0;
        let c = scraped_every_30s(15.0, hang, hang + 900.0);
        let started = poll_started(&c, 0.0, hang + 900.0, None, false);
        let stalls: Vec<_> = started
            .iter()
            .filter(|f| f.kind == FindingKind::Stall)
            .collect();
        assert_eq!(stalls.len(), 1, "{stalls:#?}");
        assert_eq!(stalls[0].onset, hang);
        assert!(stalls[0].at - hang <= 90.0, "{:#?}", stalls[0]);
        assert!(
            stalls[0].message.contains("threshold 60 s"),
            "{}",
            stalls[0].message
        );
        // About one step per sample: step-time jitter makes a double gap ordinary, so the bar
        // stays at four gaps (120 s).
        let slow = scraped_every_30s(1.0, hang, hang + 900.0);
        let started = poll_started(&slow, 0.0, hang + 900.0, None, false);
        let stall = started
            .iter()
            .find(|f| f.kind == FindingKind::Stall)
            .expect("the hang");
        assert!(
            stall.message.contains("threshold 120 s"),
            "{}",
            stall.message
        );
    }

    #[test]
    fn hang_with_busy_gpus_is_found_at_the_threshold() {
        let c = hung(3000.0, 5000.0, Some(0.99));
        let started = poll_started(&c, 0.0, 5000.0, None, false);
        assert_eq!(started.len(), 1, "{started:#?}");
        let f = &started[0];
        assert_eq!(f.kind, FindingKind::Stall);
        assert_eq!(f.onset, 3000.0);
        assert_eq!(f.at, 3300.0);
        assert_eq!(f.value, Some(2000.0));
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.message.contains("stuck at 2000 for 300 s"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("GPUs still busy at 96% (mean of 4 GPUs, min 93%)"),
            "{}",
            f.message
        );
        assert!(detect_at(&c, 3285.0, None, false).is_empty());
    }

    /// Steps every 10 s, an evaluation pause of 60 s every 30 min, a hang from `hang`.
    fn scheduled(hang: f64, end: f64) -> ChartSet {
        let mut c = ChartSet::new();
        let mut step = 0.0;
        let mut samples = Vec::new();
        let mut t = 0.0;
        while t <= end {
            let eval = t > 600.0 && t % 1800.0 < 60.0;
            if !eval && t < hang {
                step += 10.0;
            }
            samples.push(Sample::new(t, step));
            t += 10.0;
        }
        c.merge(ChartKey::new(Role::Step), samples);
        c
    }

    /// The one stall a scheduled run that hangs at `hang` raises, polled every 30 s to `end`.
    fn only_stall(hang: f64, end: f64) -> Finding {
        let started = poll_started(&scheduled(hang, end), 0.0, end, None, false);
        assert_eq!(started.len(), 1, "{started:#?}");
        started.into_iter().next().expect("one finding")
    }

    #[test]
    fn once_the_schedule_is_learned_a_hang_off_it_is_found_in_two_polls() {
        // 8000 s is 800 s past an evaluation: off schedule.
        let c = scheduled(8000.0, 9000.0);
        let started = poll_started(&c, 0.0, 9000.0, None, false);
        assert_eq!(started.len(), 1, "{started:#?}");
        let f = &started[0];
        assert!(f.at - f.onset <= 90.0, "{f:#?}");
        assert!(
            f.message.contains("off the run's eval/checkpoint schedule"),
            "{}",
            f.message
        );
        // The evaluations themselves, on schedule, are never hangs.
        let healthy = scheduled(f64::INFINITY, 12000.0);
        assert!(poll_started(&healthy, 0.0, 12000.0, None, false).is_empty());
        // A hang that starts exactly when an evaluation is due waits for the default.
        let f = only_stall(9000.0, 10000.0);
        assert!(f.at - f.onset >= 300.0, "{f:#?}");
        assert!(f.message.contains("scheduled pause"), "{}", f.message);
    }

    #[test]
    fn a_schedule_shown_after_the_first_hour_is_learned_before_two_hours() {
        // Evals at 1800, 3600 and 5400 s show the schedule: a hang at 6000 s is off it.
        let f = only_stall(6000.0, 7000.0);
        assert!(f.at - f.onset <= 90.0, "{f:#?}");
        // At 3000 s only one eval has been seen: the 300 s default still applies.
        let f = only_stall(3000.0, 4000.0);
        assert!(f.at - f.onset >= 300.0, "{f:#?}");
        assert!(f.message.contains("too little history"), "{}", f.message);
    }

    #[test]
    fn idle_gpus_paused_stale_and_never_started_are_not_hangs() {
        let f = detect_at(&hung(3000.0, 5000.0, Some(3.0)), 3600.0, None, false);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(
            f[0].message.contains("GPU utilisation 3%"),
            "{}",
            f[0].message
        );
        let c = hung(3000.0, 5000.0, None);
        assert!(detect_at(&c, 3600.0, None, true).is_empty(), "paused");
        // Samples stopped at 3400: at 3700 the data is 300 s old (metrics_absent, not stall).
        let stale = hung(3000.0, 3400.0, None);
        assert_eq!(detect_at(&stale, 3550.0, None, false).len(), 1);
        assert!(detect_at(&stale, 3700.0, None, false).is_empty());
        // Restarted at 3100 (after the hang began): no advance in this life yet.
        assert!(detect_at(&c, 4000.0, Some(3100.0), false).is_empty());
        assert_eq!(detect_at(&c, 4000.0, Some(2900.0), false)[0].onset, 3000.0);
    }
}
