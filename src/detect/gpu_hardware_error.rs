//! `gpu_hardware_error`: new GPU Xid or uncorrectable ECC errors.
//!
//! Watches every `xid_errors` and `ecc_errors` chart (usually one per GPU). Both are cumulative
//! counters, so the condition is an *increase* between consecutive finite samples within the
//! last `hardware_window_secs` (10 min; the sample just before the window is the reference for
//! the first one). A decrease is a counter reset (exporter or node restart), not an error, and
//! the count goes on from the reset value. The onset is the first sample that shows an increase.
//! Severity critical: an uncorrectable ECC error or a hardware-class Xid means the node must be
//! drained, and a run that continues on it may silently diverge later (IDEFICS after Xid 64).

use crate::charts::Role;

use super::stats::{num, visible};
use super::{DetectContext, Finding, FindingKind, Severity};

pub(crate) fn detect(ctx: &DetectContext<'_>, out: &mut Vec<Finding>) {
    let window = ctx.params.hardware_window_secs;
    for role in [Role::XidErrors, Role::EccErrors] {
        for (key, series) in ctx.charts.by_role(role) {
            let vis = visible(series, ctx);
            let start = vis
                .partition_point(|s| s.t < ctx.now - window)
                .saturating_sub(1);
            let mut prev: Option<f64> = None;
            let mut rise = 0.0;
            let mut first: Option<f64> = None;
            let mut latest = f64::NAN;
            for s in vis[start..].iter().filter(|s| s.v.is_finite()) {
                if let Some(p) = prev
                    && s.v > p
                {
                    rise += s.v - p;
                    first.get_or_insert(s.t);
                }
                prev = Some(s.v);
                latest = s.v;
            }
            let Some(onset) = first else { continue };
            out.push(Finding {
                kind: FindingKind::GpuHardwareError,
                chart: key.to_string(),
                at: ctx.now,
                onset,
                severity: Severity::Critical,
                message: format!(
                    "{key} rose by {} to {} within the last {} (first increase at {})",
                    num(rise),
                    num(latest),
                    crate::clock::fmt_span(window),
                    crate::clock::fmt_t(onset)
                ),
                value: Some(latest),
                baseline: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet, Sample};
    use crate::detect::testkit::poll_started;

    fn counter(points: &[(f64, f64)], end: f64) -> ChartSet {
        let mut c = ChartSet::new();
        let n = (end / 15.0) as usize;
        c.merge(
            ChartKey::new(Role::XidErrors).with_label("gpu", "3"),
            (0..=n).map(|i| {
                let t = i as f64 * 15.0;
                let v = points
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= t)
                    .map_or(0.0, |p| p.1);
                Sample::new(t, v)
            }),
        );
        c
    }

    fn detect_at(c: &ChartSet, now: f64, since: Option<f64>) -> Vec<Finding> {
        crate::detect::testkit::run_detector(detect, c, now, since, false)
    }

    #[test]
    fn an_increase_is_found_and_held_for_the_window() {
        let c = counter(&[(1005.0, 2.0)], 4000.0);
        let started = poll_started(&c, 0.0, 4000.0, None, false);
        assert_eq!(started.len(), 1);
        let f = &started[0];
        assert_eq!((f.onset, f.at), (1005.0, 1020.0));
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.chart, "xid_errors{gpu=3}");
        assert!(
            f.message.contains("rose by 2 to 2 within the last 10 min"),
            "{}",
            f.message
        );
        assert_eq!(detect_at(&c, 1600.0, None).len(), 1);
        assert!(detect_at(&c, 1620.0, None).is_empty());
    }

    #[test]
    fn a_counter_reset_is_not_an_error_and_since_is_honoured() {
        // 5 errors from long ago, then the exporter restarts (reset to 0) at 2000.
        let c = counter(&[(0.0, 5.0), (2000.0, 0.0)], 4000.0);
        assert!(poll_started(&c, 0.0, 4000.0, None, false).is_empty());
        // After the reset, a real increase counts from the reset value.
        let c = counter(&[(0.0, 5.0), (2000.0, 0.0), (2500.0, 1.0)], 4000.0);
        let f = detect_at(&c, 2600.0, None);
        assert!(f[0].message.contains("rose by 1 to 1"), "{}", f[0].message);
        // The increase at 2500 belongs to an earlier life when the run restarted at 2550.
        assert!(detect_at(&c, 2600.0, Some(2550.0)).is_empty());
    }
}
