//! The baseline babysitter must beat: the static Prometheus alert rules a team writes by hand.
//!
//! Each rule is the PromQL expression in its doc line, evaluated at every poll the way
//! Prometheus evaluates an alert (an instant selector sees the newest sample of the last 5 min;
//! `avg_over_time(x[1h])` is the plain mean of the hour's samples; no `for:` clause). They run
//! over the same replay path and are scored by the same code as babysitter's detectors. Windows
//! are scaled with the replay's time scale, like babysitter's.

use crate::charts::{Role, Sample, Series};
use crate::detect::{DetectContext, Finding, FindingKind, Severity};

/// The rules' windows and thresholds (the values a team would typically write).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRules {
    /// Prometheus' instant-vector lookback: 5 min.
    pub lookback_secs: f64,
    /// `avg_over_time(...[1h])`.
    pub average_secs: f64,
    /// `increase(step[10m]) == 0`, `increase(xid_errors[10m]) > 0`.
    pub increase_secs: f64,
    /// `loss > 1.5 * avg_over_time(loss[1h])`.
    pub loss_factor: f64,
    /// `grad_norm > 5 * avg_over_time(grad_norm[1h])`.
    pub grad_factor: f64,
    /// `throughput < 0.7 * avg_over_time(throughput[1h])`; for step time the same slowdown is
    /// `step_time > avg_over_time(step_time[1h]) / 0.7`.
    pub throughput_ratio: f64,
    /// `max(compute_time) > 1.5 * quantile(0.5, compute_time)` (over ranks).
    pub straggler_factor: f64,
}

impl Default for BaselineRules {
    fn default() -> Self {
        BaselineRules {
            lookback_secs: 300.0,
            average_secs: 3600.0,
            increase_secs: 600.0,
            loss_factor: 1.5,
            grad_factor: 5.0,
            throughput_ratio: 0.7,
            straggler_factor: 1.5,
        }
    }
}

impl BaselineRules {
    /// The same rules with every window multiplied by `k`.
    pub fn scaled(&self, k: f64) -> BaselineRules {
        BaselineRules {
            lookback_secs: self.lookback_secs * k,
            average_secs: self.average_secs * k,
            increase_secs: self.increase_secs * k,
            ..self.clone()
        }
    }

    /// Evaluates every rule at `ctx.now`; returns the alerts that are firing.
    pub fn detect(&self, ctx: &DetectContext<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        let now = ctx.now;
        let fire =
            |out: &mut Vec<Finding>, kind, chart: String, severity, message: String, value| {
                out.push(Finding {
                    kind,
                    chart,
                    at: now,
                    onset: now,
                    severity,
                    message,
                    value: Some(value),
                    baseline: None,
                });
            };
        for role in [Role::Loss, Role::GradNorm] {
            for (key, s) in ctx.charts.by_role(role) {
                // isnan(x) or abs(x) == Inf
                if let Some(v) = self.instant(s, now)
                    && !v.is_finite()
                {
                    fire(
                        &mut out,
                        FindingKind::Nonfinite,
                        key.to_string(),
                        Severity::Critical,
                        format!("isnan({key}) or isinf({key}): {v}"),
                        v,
                    );
                }
            }
        }
        let above_average = [
            (Role::Loss, self.loss_factor, FindingKind::LossSpike),
            (Role::GradNorm, self.grad_factor, FindingKind::GradExplosion),
            (
                Role::StepTime,
                1.0 / self.throughput_ratio,
                FindingKind::ThroughputDrop,
            ),
        ];
        for (role, factor, kind) in above_average {
            for (key, s) in ctx.charts.by_role(role) {
                if let (Some(v), Some(avg)) = (self.instant(s, now), self.average(s, now))
                    && v > factor * avg
                {
                    fire(
                        &mut out,
                        kind,
                        key.to_string(),
                        Severity::Warning,
                        format!("{key} {v} > {factor:.2} × avg_over_time({key}[1h]) {avg:.4}"),
                        v,
                    );
                }
            }
        }
        for (key, s) in ctx.charts.by_role(Role::Throughput) {
            if let (Some(v), Some(avg)) = (self.instant(s, now), self.average(s, now))
                && v < self.throughput_ratio * avg
            {
                fire(
                    &mut out,
                    FindingKind::ThroughputDrop,
                    key.to_string(),
                    Severity::Warning,
                    format!(
                        "{key} {v} < {:.2} × avg_over_time({key}[1h]) {avg:.4}",
                        self.throughput_ratio
                    ),
                    v,
                );
            }
        }
        for (key, s) in ctx.charts.by_role(Role::Step) {
            if let Some(inc) = self.increase(s, now)
                && inc <= 0.0
            {
                fire(
                    &mut out,
                    FindingKind::Stall,
                    key.to_string(),
                    Severity::Error,
                    format!("increase({key}[10m]) == 0"),
                    inc,
                );
            }
        }
        for role in [Role::XidErrors, Role::EccErrors] {
            for (key, s) in ctx.charts.by_role(role) {
                if let Some(inc) = self.increase(s, now)
                    && inc > 0.0
                {
                    fire(
                        &mut out,
                        FindingKind::GpuHardwareError,
                        key.to_string(),
                        Severity::Critical,
                        format!("increase({key}[10m]) = {inc} > 0"),
                        inc,
                    );
                }
            }
        }
        let mut ranks: Vec<(String, f64)> = ctx
            .charts
            .by_role(Role::ComputeTime)
            .filter_map(|(k, s)| self.instant(s, now).map(|v| (k.to_string(), v)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        if ranks.len() >= 2 {
            ranks.sort_by(|a, b| a.1.total_cmp(&b.1));
            let median = ranks[ranks.len() / 2].1;
            if let Some((key, max)) = ranks.last()
                && *max > self.straggler_factor * median
            {
                fire(
                    &mut out,
                    FindingKind::Straggler,
                    key.clone(),
                    Severity::Warning,
                    format!(
                        "max(compute_time) {max} ({key}) > {:.2} × quantile(0.5, compute_time) {median:.4}",
                        self.straggler_factor
                    ),
                    *max,
                );
            }
        }
        out
    }

    /// The newest sample within the lookback, as an instant selector returns it.
    fn instant(&self, s: &Series, now: f64) -> Option<f64> {
        s.range(now - self.lookback_secs, now).last().map(|x| x.v)
    }

    /// `avg_over_time(x[1h])`: the mean of the window's samples (NaN if any is NaN, as in
    /// Prometheus).
    fn average(&self, s: &Series, now: f64) -> Option<f64> {
        let w = s.range(now - self.average_secs, now);
        if w.is_empty() {
            return None;
        }
        Some(w.iter().map(|x| x.v).sum::<f64>() / w.len() as f64)
    }

    /// `increase(x[10m])` of a counter: the sum of its rises over the window, a drop counted
    /// as a counter reset. Needs two samples in the window, like Prometheus.
    fn increase(&self, s: &Series, now: f64) -> Option<f64> {
        let w: &[Sample] = s.range(now - self.increase_secs, now);
        if w.len() < 2 {
            return None;
        }
        Some(
            w.windows(2)
                .map(|p| {
                    if p[1].v >= p[0].v {
                        p[1].v - p[0].v
                    } else {
                        p[1].v
                    }
                })
                .filter(|d| d.is_finite())
                .sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, ChartSet};
    use crate::detect::DetectorParams;

    fn kinds_at(c: &ChartSet, now: f64) -> Vec<(FindingKind, String)> {
        let params = DetectorParams::default();
        let ctx = DetectContext {
            now,
            charts: c,
            since: None,
            paused: false,
            params: &params,
        };
        BaselineRules::default()
            .detect(&ctx)
            .into_iter()
            .map(|f| (f.kind, f.chart))
            .collect()
    }

    fn chart(c: &mut ChartSet, name: &str, f: impl Fn(f64) -> f64) {
        let key: ChartKey = name.parse().expect("chart name");
        c.merge(
            key,
            (0..=240).map(|i| Sample::new(i as f64 * 15.0, f(i as f64 * 15.0))),
        );
    }

    #[test]
    fn each_rule_fires_on_its_textbook_case() {
        let mut c = ChartSet::new();
        chart(&mut c, "loss", |t| if t >= 3000.0 { 5.0 } else { 2.0 });
        chart(&mut c, "grad_norm", |t| {
            if t >= 3600.0 { f64::NAN } else { 1.0 }
        });
        chart(&mut c, "step", |t| t.min(2400.0));
        chart(&mut c, "throughput", |t| {
            if t >= 3000.0 { 400.0 } else { 1000.0 }
        });
        chart(
            &mut c,
            "xid_errors",
            |t| if t >= 3300.0 { 1.0 } else { 0.0 },
        );
        chart(&mut c, "compute_time{rank=0}", |_| 3.0);
        chart(&mut c, "compute_time{rank=1}", |_| 1.0);
        chart(&mut c, "compute_time{rank=2}", |_| 1.1);
        let mut got = kinds_at(&c, 3600.0);
        got.sort();
        let want = vec![
            (FindingKind::Nonfinite, "grad_norm".to_string()),
            (FindingKind::LossSpike, "loss".into()),
            (FindingKind::Stall, "step".into()),
            (FindingKind::ThroughputDrop, "throughput".into()),
            (FindingKind::Straggler, "compute_time{rank=0}".into()),
            (FindingKind::GpuHardwareError, "xid_errors".into()),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
        // Before any of it: only the straggler, which is there from the start.
        assert_eq!(
            kinds_at(&c, 2000.0),
            vec![(FindingKind::Straggler, "compute_time{rank=0}".into())]
        );
    }

    #[test]
    fn counters_need_two_samples_and_resets_are_not_increases() {
        let rules = BaselineRules::default();
        let s = Series::from_samples([Sample::new(0.0, 5.0)]);
        assert_eq!(rules.increase(&s, 10.0), None);
        let s = Series::from_samples([
            Sample::new(0.0, 5.0),
            Sample::new(10.0, 7.0),
            Sample::new(20.0, 1.0),
        ]);
        assert_eq!(rules.increase(&s, 20.0), Some(3.0));
        assert_eq!(rules.instant(&s, 400.0), None);
        assert_eq!(rules.average(&s, 20.0), Some(13.0 / 3.0));
        assert_eq!(rules.scaled(2.0).increase_secs, 1200.0);
    }
}
