//! Shared helpers of the detectors: causal windows, robust statistics (median / MAD), the scan
//! for the onset of an anomalous stretch, the last advance of a step counter, and the search
//! for a level shift measured against the band *before* its onset.
//!
//! Everything works on borrowed slices of a [`Series`] (binary searches, no copies of a whole
//! series); the only allocation is the caller's scratch buffer for a window's median.

use crate::charts::{Sample, Series};

use super::{Band, DetectContext};

/// 1.4826 × MAD estimates the standard deviation of normal data, robustly.
pub(crate) const MAD_TO_SIGMA: f64 = 1.4826;

/// Consecutive non-anomalous samples tolerated inside an anomalous stretch: one or two noisy
/// samples dipping back into the band do not end an episode (that would re-report it).
pub(crate) const MAX_DIPS: usize = 2;

/// The samples a detector may use: `since <= t <= now`.
pub(crate) fn visible<'s>(series: &'s Series, ctx: &DetectContext<'_>) -> &'s [Sample] {
    let lo = match ctx.since {
        Some(s) if !s.is_nan() => s,
        _ => f64::NEG_INFINITY,
    };
    series.range(lo, ctx.now)
}

/// Samples of a time-sorted slice with `from <= t < to`.
pub(crate) fn between(s: &[Sample], from: f64, to: f64) -> &[Sample] {
    let lo = s.partition_point(|x| x.t < from);
    let hi = s.partition_point(|x| x.t < to);
    if lo >= hi { &[] } else { &s[lo..hi] }
}

/// Samples of a time-sorted slice with `t >= from`.
pub(crate) fn from(s: &[Sample], from: f64) -> &[Sample] {
    let lo = s.partition_point(|x| x.t < from);
    &s[lo..]
}

/// Median and robust sigma of a window's finite values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Robust {
    pub median: f64,
    pub sigma: f64,
    /// How many finite values the window held.
    pub n: usize,
}

impl Robust {
    pub(crate) fn band(&self) -> Band {
        Band {
            center: self.median,
            sigma: self.sigma,
        }
    }
}

/// Median of a slice, reordering it. `None` when empty.
pub(crate) fn median_in_place(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (left, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        return Some(mid);
    }
    let below = left.iter().copied().max_by(f64::total_cmp)?;
    // Halves first: the sum of two huge values would overflow.
    Some(below / 2.0 + mid / 2.0)
}

/// Median of the finite values of a window, using `buf` as scratch.
pub(crate) fn median(samples: &[Sample], buf: &mut Vec<f64>) -> Option<(f64, usize)> {
    buf.clear();
    buf.extend(samples.iter().map(|s| s.v).filter(|v| v.is_finite()));
    let n = buf.len();
    median_in_place(buf).map(|m| (m, n))
}

/// Median and robust sigma (1.4826 × MAD) of the finite values of a window. The sigma has a
/// floor of 0.1 % of |median| (and 1e-12): a constant chart must not make every wiggle infinite.
pub(crate) fn robust(samples: &[Sample], buf: &mut Vec<f64>) -> Option<Robust> {
    let (median, n) = median(samples, buf)?;
    for x in buf.iter_mut() {
        *x = (*x - median).abs();
    }
    let mad = median_in_place(buf)?;
    let floor = (median.abs() * 1e-3).max(1e-12);
    let sigma = MAD_TO_SIGMA * mad;
    let sigma = if sigma.is_nan() || sigma < floor {
        floor
    } else {
        sigma
    };
    Some(Robust { median, sigma, n })
}

/// Walks back from the end of `s` over samples for which `hit` holds, tolerating up to
/// [`MAX_DIPS`] consecutive misses (a non-finite value is a miss); returns the index of the
/// earliest hit of that stretch, or `None` if the stretch is empty.
pub(crate) fn stretch_onset(s: &[Sample], hit: impl Fn(f64) -> bool) -> Option<usize> {
    let mut onset = None;
    let mut dips = 0;
    for (i, x) in s.iter().enumerate().rev() {
        if x.v.is_finite() && hit(x.v) {
            onset = Some(i);
            dips = 0;
        } else {
            dips += 1;
            if dips > MAX_DIPS {
                break;
            }
        }
    }
    onset
}

/// Index of the sample at which a counter last increased (the first sample showing the new
/// value), ignoring non-finite values. A decrease (rollback, reset) is not an advance. Scans
/// back from the end and stops at the first advance, so a progressing run costs O(1).
pub(crate) fn last_advance(s: &[Sample]) -> Option<usize> {
    let mut later: Option<(usize, f64)> = None;
    for (i, x) in s.iter().enumerate().rev() {
        if !x.v.is_finite() {
            continue;
        }
        if let Some((j, v)) = later
            && v > x.v
        {
            return Some(j);
        }
        later = Some((i, x.v));
    }
    None
}

/// How to search for a level shift (see [`find_shift`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShiftSearch {
    /// Length of a baseline window.
    pub baseline_secs: f64,
    /// The newest part of the chart kept out of the first baseline window.
    pub recent_secs: f64,
    /// How long after its onset a sustained shift is still reported.
    pub hold_secs: f64,
    /// Minimum finite samples in a baseline window.
    pub min_samples: usize,
}

/// A level shift: the band before it and the index of its first anomalous sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shift {
    pub base: Robust,
    pub onset: usize,
}

/// Does a window of `len` seconds starting at `from`, whose first sample is at `first`, cover
/// its length? Its first sample must lie within a fifth of it from its start: a chart that has
/// only just (re)entered the window (after a hole, or right after a start) holds too few samples
/// to stand for it.
pub(crate) fn covers(first: f64, from: f64, len: f64) -> bool {
    first - from <= 0.2 * len
}

/// A level drop: the median of `s` since `recent_from` (at least `min_recent` samples) is below
/// `ratio` × the median of the band before the drop began ([`find_shift`]). Returns that median
/// and the shift; the throughput and GPU-utilisation detectors share it.
///
/// The recent samples must cover the recent window: when the chart comes back from a hole, the
/// few samples since are no median of the window (one eval pause among them would halve it), so
/// the verdict waits until the first of them is within a fifth of the window from its start.
pub(crate) fn level_drop(
    s: &[Sample],
    recent_from: f64,
    now: f64,
    search: &ShiftSearch,
    ratio: f64,
    min_recent: usize,
    buf: &mut Vec<f64>,
) -> Option<(f64, Shift)> {
    let recent = between(s, recent_from, f64::INFINITY);
    let first = recent.first()?;
    if !covers(first.t, recent_from, now - recent_from) {
        return None;
    }
    let (level, n) = median(recent, buf)?;
    if n < min_recent {
        return None;
    }
    let low = |b: &Robust| b.median > 0.0 && level < ratio * b.median;
    let shift = find_shift(s, now, search, buf, low, |v, b| v < ratio * b.median)?;
    Some((level, shift))
}

/// Is the chart's current state (`probe`) anomalous against the band before the anomaly began?
///
/// The first baseline window ends `recent_secs` before `now`. A shift that lasts longer pollutes
/// that window (at half of it the median moves and the condition would flap and be reported
/// again), so older windows, stepped back by half a baseline each up to `hold_secs`, are tried
/// too; from an older window the anomalous stretch must reach back past the first window's end
/// (it is a sustained shift, not a new blip). Once the onset is found, the band is recomputed
/// from the window just before it, which the anomaly cannot have polluted: the condition then
/// holds as long as the level stays shifted, up to `hold_secs` after the onset.
///
/// `s` is the visible chart up to the newest sample that may belong to the stretch; `hit` says
/// whether one sample is anomalous against a band. Cost: at most `hold/(baseline/2) + 2`
/// medians of one window, plus one pass over the stretch.
pub(crate) fn find_shift(
    s: &[Sample],
    now: f64,
    p: &ShiftSearch,
    buf: &mut Vec<f64>,
    probe: impl Fn(&Robust) -> bool,
    hit: impl Fn(f64, &Robust) -> bool,
) -> Option<Shift> {
    if p.baseline_secs.is_nan() || p.baseline_secs <= 0.0 || !now.is_finite() {
        return None;
    }
    let step = p.baseline_secs / 2.0;
    let hold = if p.hold_secs.is_finite() {
        p.hold_secs.max(0.0)
    } else {
        0.0
    };
    // Bounded whatever the parameters say.
    let anchors = ((hold / step).ceil() as usize).min(32);
    let first_end = now - p.recent_secs;
    for j in 0..=anchors {
        let end = first_end - j as f64 * step;
        let Some(b) = robust(between(s, end - p.baseline_secs, end), buf) else {
            continue;
        };
        if b.n < p.min_samples.max(1) || !probe(&b) {
            continue;
        }
        let Some(onset) = stretch_onset(s, |v| hit(v, &b)) else {
            continue;
        };
        let t_onset = s[onset].t;
        if j > 0 && t_onset > first_end {
            continue;
        }
        let base = match robust(between(s, t_onset - p.baseline_secs, t_onset), buf) {
            Some(pre) if pre.n >= p.min_samples.max(1) => pre,
            _ => b,
        };
        if !probe(&base) || now - t_onset > hold.max(p.recent_secs) {
            return None;
        }
        return Some(Shift { base, onset });
    }
    None
}

/// Lower quantile `q` (0–1) of the finite values of a window, using `buf` as scratch.
pub(crate) fn quantile(samples: &[Sample], q: f64, buf: &mut Vec<f64>) -> Option<f64> {
    buf.clear();
    buf.extend(samples.iter().map(|s| s.v).filter(|v| v.is_finite()));
    if buf.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    let i = ((buf.len() - 1) as f64 * q).floor() as usize;
    let (_, x, _) = buf.select_nth_unstable_by(i, f64::total_cmp);
    Some(*x)
}

/// Lower quantile `q` of the window's *smoothed* level: the medians of consecutive blocks of
/// `block_secs` (counted from the window's first sample), as a median over `block_secs` would
/// have read at each point. A quantile of the raw samples sits lower by their own noise: a
/// smoothed level compared with it reads as a rise when the samples are few and noisy (a
/// per-step loss scraped every 15 s). `blocks` is scratch for the block medians.
pub(crate) fn block_quantile(
    samples: &[Sample],
    block_secs: f64,
    q: f64,
    buf: &mut Vec<f64>,
    blocks: &mut Vec<f64>,
) -> Option<f64> {
    blocks.clear();
    let finite = || samples.iter().filter(|s| s.v.is_finite());
    let start = finite().next()?.t;
    if !(block_secs.is_finite() && block_secs > 0.0) {
        return quantile(samples, q, buf);
    }
    buf.clear();
    let mut block = 0.0_f64;
    for s in finite() {
        let b = ((s.t - start) / block_secs).floor();
        if b != block && !buf.is_empty() {
            blocks.extend(median_in_place(buf));
            buf.clear();
        }
        block = b;
        buf.push(s.v);
    }
    blocks.extend(median_in_place(buf));
    if blocks.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    let i = ((blocks.len() - 1) as f64 * q).floor() as usize;
    let (_, x, _) = blocks.select_nth_unstable_by(i, f64::total_cmp);
    Some(*x)
}

/// Robust noise sigma of a window from its consecutive differences: 1.4826 × MAD(diffs) / √2.
/// Differences cancel a slow trend, so a falling loss does not inflate its own noise.
pub(crate) fn diff_sigma(samples: &[Sample], buf: &mut Vec<f64>) -> Option<f64> {
    buf.clear();
    let mut prev: Option<f64> = None;
    for v in samples.iter().map(|s| s.v).filter(|v| v.is_finite()) {
        if let Some(p) = prev {
            buf.push((v - p).abs());
        }
        prev = Some(v);
    }
    let mad = median_in_place(buf)?;
    let s = MAD_TO_SIGMA * mad / std::f64::consts::SQRT_2;
    s.is_finite().then_some(s)
}

/// The newest finite sample no older than `max_age` before `now`.
pub(crate) fn fresh_last(s: &[Sample], now: f64, max_age: f64) -> Option<Sample> {
    s.iter()
        .rev()
        .take_while(|x| now - x.t <= max_age)
        .find(|x| x.v.is_finite())
        .copied()
}

/// Time of the step counter's last advance if the run is progressing: the `step` chart's last
/// advance happened less than `stall_after_secs` ago. Slowdown detectors speak only then (no
/// progress is a stall, not a slowdown). `None` when there is no `step` chart either.
pub(crate) fn progressing(ctx: &DetectContext<'_>) -> Option<f64> {
    let steps = visible(ctx.charts.get(crate::charts::Role::Step)?, ctx);
    let t = steps[last_advance(steps)?].t;
    let age = ctx.now - t;
    (age.is_finite() && age < ctx.params.stall_after_secs).then_some(t)
}

/// Positive increments of a cumulative counter within a window (a reset or rollback to a lower
/// value is not an increment), ignoring non-finite values.
pub(crate) fn increments(s: &[Sample]) -> (f64, usize, Option<f64>) {
    let mut total = 0.0;
    let mut count = 0;
    let mut first = None;
    let mut prev: Option<f64> = None;
    for x in s.iter().filter(|x| x.v.is_finite()) {
        if let Some(p) = prev
            && x.v > p
        {
            total += x.v - p;
            count += 1;
            first.get_or_insert(x.t);
        }
        prev = Some(x.v);
    }
    (total, count, first)
}

/// A number with about four significant digits, for messages.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return nonfinite_name(x).to_string();
    }
    let a = x.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `NaN`, `+Inf` or `-Inf`.
pub(crate) fn nonfinite_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ser(vals: &[(f64, f64)]) -> Vec<Sample> {
        vals.iter().map(|&(t, v)| Sample::new(t, v)).collect()
    }

    #[test]
    fn the_best_smoothed_level_is_not_the_best_single_sample() {
        // A flat loss of 3.0 whose samples alternate ±0.3 (a per-step loss scraped every 15 s):
        // single samples reach 2.7 a quarter of the time and more, but no 60-s median does.
        let s: Vec<Sample> = (0..480)
            .map(|i| Sample::new(i as f64 * 15.0, if i % 2 == 0 { 2.7 } else { 3.3 }))
            .collect();
        let (mut buf, mut blocks) = (Vec::new(), Vec::new());
        assert_eq!(quantile(&s, 0.25, &mut buf), Some(2.7));
        let q = block_quantile(&s, 60.0, 0.25, &mut buf, &mut blocks).unwrap();
        assert!((q - 3.0).abs() < 1e-9, "{q}");
        // Blocks are counted from the first finite sample; NaN is skipped; degenerate blocks
        // fall back to the plain quantile.
        let mut with_nan = s.clone();
        with_nan.insert(0, Sample::new(-15.0, f64::NAN));
        assert!(
            (block_quantile(&with_nan, 60.0, 0.25, &mut buf, &mut blocks).unwrap() - 3.0).abs()
                < 1e-9
        );
        assert_eq!(
            block_quantile(&s, 0.0, 0.25, &mut buf, &mut blocks),
            Some(2.7)
        );
        assert_eq!(block_quantile(&[], 60.0, 0.25, &mut buf, &mut blocks), None);
    }

    #[test]
    fn median_and_mad() {
        let mut buf = Vec::new();
        let s = ser(&[
            (0.0, 1.0),
            (1.0, f64::NAN),
            (2.0, 3.0),
            (3.0, 2.0),
            (4.0, 100.0),
        ]);
        let r = robust(&s, &mut buf).expect("finite values");
        assert_eq!(r.n, 4);
        assert_eq!(r.median, 2.5);
        // deviations 1.5, 0.5, 0.5, 97.5 → MAD 1.0
        assert!((r.sigma - MAD_TO_SIGMA).abs() < 1e-12);
        assert!(robust(&ser(&[(0.0, f64::NAN)]), &mut buf).is_none());
        let huge = ser(&[(0.0, 1e308), (1.0, 1.5e308)]);
        assert!(robust(&huge, &mut buf).expect("finite").median.is_finite());
    }

    #[test]
    fn stretch_tolerates_short_dips() {
        let s = ser(&[
            (0.0, 0.0),
            (1.0, 0.0),
            (2.0, 0.0),
            (3.0, 5.0),
            (4.0, 0.0),
            (5.0, 5.0),
            (6.0, 5.0),
        ]);
        assert_eq!(stretch_onset(&s, |v| v > 1.0), Some(3));
        assert_eq!(stretch_onset(&s[..3], |v| v > 1.0), None);
    }

    #[test]
    fn last_advance_ignores_rollbacks_and_nan() {
        let s = ser(&[
            (0.0, 10.0),
            (1.0, 11.0),
            (2.0, 11.0),
            (3.0, f64::NAN),
            (4.0, 11.0),
        ]);
        assert_eq!(last_advance(&s), Some(1));
        let s = ser(&[(0.0, 100.0), (1.0, 101.0), (2.0, 50.0), (3.0, 50.0)]);
        assert_eq!(last_advance(&s), Some(1));
        assert_eq!(last_advance(&ser(&[(0.0, 5.0), (1.0, 5.0)])), None);
        assert_eq!(last_advance(&[]), None);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(7.91), "7.91");
        assert_eq!(num(0.12), "0.12");
        assert_eq!(num(1000.0), "1000");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(1e300), "1.000e300");
    }
}
