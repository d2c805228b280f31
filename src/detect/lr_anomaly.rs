//! `lr_anomaly`: the learning rate does not follow its schedule.
//!
//! Watches every `lr` chart for two events. A **jump**: a sample above `lr_jump_factor` (2) ×
//! the highest learning rate of the `lr_window_secs` (5 min) before it, with at least 10 finite
//! samples in that window, or 3 that cover it on a sparser chart (a 60-s scrape). A linear
//! warm-up never doubles against its recent maximum; a restart that resets a decayed schedule
//! to its peak, or a wrong value patched in, does. A **drop to
//! zero**: a sample at or below 0 right after one that was at least `lr_zero_min_fraction`
//! (5 %) of the window's peak (a schedule that decays to zero gets there smoothly, and values
//! printed with few decimals round to 0 at the very end: that is not an anomaly). Step decays
//! (×0.1 at a milestone) are legitimate schedule changes and are not reported. The condition
//! holds for `lr_hold_secs` (15 min) after the event, so it is reported once, and beyond that
//! for as long as the learning rate stays off in the same way (still above `lr_jump_factor` ×
//! the reference after a jump, still at zero after a drop): a wrong value that nobody fixed is
//! still wrong, and a runbook verifying that the finding cleared must not pass while it holds.
//! It is looked for over the last `lr_max_hold_secs` (6 h); a level held longer than that is the
//! run's new normal. Severity warning.

use std::collections::VecDeque;

use crate::charts::{Role, Sample};

use super::stats::{covers, num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

/// Finite samples the reference window needs when the chart's cadence fills it with more.
const MIN_WINDOW_SAMPLES: usize = 10;

/// The fewest finite samples a reference window may have, however sparse the chart (a 60-s
/// scrape puts five in five minutes), as long as they cover it.
const MIN_SPARSE_SAMPLES: usize = 3;

/// An anomalous sample and what it was measured against.
struct Event {
    sample: Sample,
    reference: f64,
    what: &'static str,
    /// Every sample since has stayed off the schedule in the same way.
    holding: bool,
}

impl Event {
    /// The learning rate at `v` is still off in the way the event said.
    fn still(&self, v: f64, jump_factor: f64) -> bool {
        match self.what {
            "jumped" => v > jump_factor * self.reference,
            _ => v <= 0.0,
        }
    }
}

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let p = ctx.params;
    let w = p.lr_window_secs;
    for (key, series) in ctx.charts.by_role(Role::Lr) {
        let vis = visible(series, ctx);
        let scan_from = ctx.now - p.lr_max_hold_secs.max(p.lr_hold_secs);
        // Only what the scan and its reference windows read (the run's peak, for a drop to
        // zero, still reads the whole chart): a poll costs the same however old the run is.
        let scanned = &vis[vis.partition_point(|s| s.t < scan_from - w)..];
        let fin: Vec<Sample> = scanned
            .iter()
            .filter(|s| s.v.is_finite())
            .copied()
            .collect();
        let lo = fin.partition_point(|s| s.t < scan_from - w);
        let start = fin.partition_point(|s| s.t < scan_from);
        // Highest value of the `w` before each sample: a monotonic queue of indices.
        let mut peaks: VecDeque<usize> = VecDeque::new();
        let mut next = lo;
        let mut run_peak: Option<f64> = None;
        let mut active: Option<Event> = None;
        for i in start..fin.len() {
            let s = fin[i];
            while next < i {
                while peaks.back().is_some_and(|&b| fin[b].v <= fin[next].v) {
                    peaks.pop_back();
                }
                peaks.push_back(next);
                next += 1;
            }
            while peaks.front().is_some_and(|&f| fin[f].t < s.t - w) {
                peaks.pop_front();
            }
            if let Some(ev) = &mut active {
                if ev.holding && !ev.still(s.v, p.lr_jump_factor) {
                    ev.holding = false;
                }
                if ev.holding || s.t - ev.sample.t <= p.lr_hold_secs {
                    continue;
                }
                // Back on schedule and past the hold: cleared; this sample may start another.
                active = None;
            }
            let first = fin[..i].partition_point(|x| x.t < s.t - w);
            let n = i - first;
            let Some(peak) = peaks.front().map(|&f| fin[f].v) else {
                continue;
            };
            // Ten samples, or, on a chart too sparse for ten in the window, three that cover
            // it (its first within a fifth of the window from its start: the run has been
            // logging through the whole window, not just started).
            let covered = n >= MIN_SPARSE_SAMPLES && covers(fin[first].t, s.t - w, w);
            if !(n >= MIN_WINDOW_SAMPLES || covered) || peak <= 0.0 {
                continue;
            }
            if s.v > p.lr_jump_factor * peak {
                active = Some(Event {
                    sample: s,
                    reference: peak,
                    what: "jumped",
                    holding: true,
                });
            } else if s.v <= 0.0 && i > 0 {
                // Against the run's peak, computed only when a zero shows up.
                let rp = *run_peak.get_or_insert_with(|| {
                    vis.iter()
                        .map(|x| x.v)
                        .filter(|v| v.is_finite())
                        .fold(f64::NEG_INFINITY, f64::max)
                });
                if fin[i - 1].v >= p.lr_zero_min_fraction * rp {
                    active = Some(Event {
                        sample: s,
                        reference: rp,
                        what: "dropped to zero",
                        holding: true,
                    });
                }
            }
        }
        let Some(ev) = active.filter(|ev| ev.holding || ctx.now - ev.sample.t <= p.lr_hold_secs)
        else {
            continue;
        };
        let (s, reference, what) = (ev.sample, ev.reference, ev.what);
        let still = if ev.holding && ctx.now - s.t > p.lr_hold_secs {
            format!(
                "; still off after {}",
                crate::clock::fmt_span(ctx.now - s.t)
            )
        } else {
            String::new()
        };
        out.push(Finding {
            kind: FindingKind::LrAnomaly,
            chart: key.to_string(),
            at: ctx.now,
            onset: s.t,
            severity: Severity::Warning,
            message: format!(
                "{key} {what}: {} at {} against a recent peak of {} (schedule changes never {}){still}",
                num(s.v),
                crate::clock::fmt_t(s.t),
                num(reference),
                if what == "jumped" {
                    format!("more than double it within {}", crate::clock::fmt_span(w))
                } else {
                    "fall from a working rate to zero in one step".into()
                },
            ),
            value: Some(s.v),
            baseline: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet};
    use crate::detect::testkit::run_detector;

    /// Linear warm-up over 10 min, cosine decay to 0 over 4 h, sampled every 10 s.
    fn schedule(t: f64) -> f64 {
        let peak = 6e-4;
        if t < 600.0 {
            peak * t / 600.0
        } else {
            let x = ((t - 600.0) / 14400.0).min(1.0);
            // Printed with 6 decimals, like llm.c: the tail reads 0.
            (peak * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()) * 1e6).round() / 1e6
        }
    }

    fn lr(f: impl Fn(f64) -> f64) -> ChartSet {
        let mut c = ChartSet::new();
        c.merge(
            ChartKey::new(Role::Lr),
            (0..=1560).map(|i| Sample::new(i as f64 * 10.0, f(i as f64 * 10.0))),
        );
        c
    }

    #[test]
    fn a_chart_scraped_every_minute_is_judged_too() {
        // Five samples in the 5-min window: the same schedule is normal, warm-up from 0
        // included, and a ×10 jump is found on the sample that shows it.
        let every_minute = |f: &dyn Fn(f64) -> f64| {
            let mut c = ChartSet::new();
            c.merge(
                ChartKey::new(Role::Lr),
                (0..=260).map(|i| Sample::new(i as f64 * 60.0, f(i as f64 * 60.0))),
            );
            c
        };
        let c = every_minute(&schedule);
        let mut now = 0.0;
        while now <= 15600.0 {
            assert!(
                run_detector(detect, &c, now, None, false).is_empty(),
                "at {now}"
            );
            now += 60.0;
        }
        let jump = every_minute(&|t| {
            if t >= 6000.0 {
                schedule(t) * 10.0
            } else {
                schedule(t)
            }
        });
        let f = run_detector(detect, &jump, 6000.0, None, false);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].onset, 6000.0);
        // The first minutes of a run (a window it has not covered yet) stay quiet.
        let early = every_minute(&|t| if t >= 120.0 { 6e-3 } else { 6e-4 });
        assert!(run_detector(detect, &early, 120.0, None, false).is_empty());
    }

    #[test]
    fn warm_up_decay_and_rounding_to_zero_are_normal() {
        let c = lr(schedule);
        let mut now = 0.0;
        while now <= 15600.0 {
            assert!(
                run_detector(detect, &c, now, None, false).is_empty(),
                "at {now}"
            );
            now += 300.0;
        }
    }

    #[test]
    fn a_reset_to_peak_and_a_sudden_zero_are_anomalies() {
        let reset = lr(|t| if t >= 10000.0 { 6e-4 } else { schedule(t) });
        let f = run_detector(detect, &reset, 10020.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 10000.0);
        assert!(f[0].message.contains("jumped"), "{}", f[0].message);
        // Still reported while the lr stays at the wrong value...
        let f = run_detector(detect, &reset, 10000.0 + 3600.0, None, false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].onset, 10000.0);
        assert!(
            f[0].message.contains("still off after 60 min"),
            "{}",
            f[0].message
        );
        // ...and cleared once it is back on its schedule and the hold has passed.
        let fixed = lr(|t| {
            if (10000.0..10300.0).contains(&t) {
                6e-4
            } else {
                schedule(t)
            }
        });
        assert_eq!(
            run_detector(detect, &fixed, 10000.0 + 600.0, None, false).len(),
            1
        );
        let f = run_detector(detect, &fixed, 10000.0 + 901.0, None, false);
        assert!(f.is_empty(), "{f:#?}");
        let zero = lr(|t| if t >= 5000.0 { 0.0 } else { schedule(t) });
        let f = run_detector(detect, &zero, 5030.0, None, false);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("dropped to zero"), "{}", f[0].message);
    }
}
