//! What a restart from a checkpoint throws away: the steps between the checkpoint and where the
//! run is now, the training time they took, and — when the charts show how many GPUs the run
//! has — the GPU-hours. A human asked to approve a restart sees this beside the question
//! (and the decision entry of every restart carries it), so "restart from step 5700?" comes
//! with "that redoes 40 min of training on 64 GPUs".
//!
//! Read from the run's `step` chart only, after its last rollback (a restart's own rollback is
//! not progress): the time is how long the run actually took from the first sample at or past
//! the checkpoint's step to the first at its newest step (eval and checkpoint pauses included:
//! they are redone too). When the chart no longer reaches back to the checkpoint, the time is
//! the steps at the run's average pace over what the chart holds, and says so. The GPU count
//! is the number of per-GPU `gpu_util` charts (one aggregate chart tells nothing).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::charts::{ChartSet, Role, Sample};

/// The cost of rolling a run back to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackCost {
    /// The run's newest step.
    pub from_step: u64,
    /// The checkpoint's step.
    pub to_step: u64,
    /// Steps to be redone.
    pub steps: u64,
    /// Training time those steps took (seconds), when the step chart tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secs: Option<f64>,
    /// Whether `secs` is the run's average pace applied to `steps` (the chart no longer
    /// reaches back to the checkpoint) rather than the time it really took.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// GPUs of the run (per-GPU `gpu_util` charts), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<usize>,
    /// `secs` × `gpus`, in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours: Option<f64>,
}

impl fmt::Display for RollbackCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps == 0 {
            return write!(
                f,
                "rolls back nothing (the run is at the checkpoint's step {})",
                self.to_step
            );
        }
        write!(
            f,
            "rolls back {} step{} ({} → {})",
            self.steps,
            if self.steps == 1 { "" } else { "s" },
            self.from_step,
            self.to_step
        )?;
        if let Some(secs) = self.secs {
            write!(
                f,
                ", {}{} of training",
                if self.estimated { "≈ " } else { "" },
                crate::clock::fmt_span(secs)
            )?;
            if let (Some(gpus), Some(h)) = (self.gpus, self.gpu_hours) {
                write!(f, " on {gpus} GPUs ({h:.1} GPU-hours)")?;
            }
        }
        Ok(())
    }
}

/// The cost of restarting the run whose charts are `charts` from the checkpoint at `to_step`.
/// `None` without a usable `step` chart.
pub fn rollback_cost(charts: &ChartSet, to_step: u64) -> Option<RollbackCost> {
    let steps = charts.get(Role::Step)?.samples();
    // This life of the run: the samples after its last rollback.
    let life = current_life(steps);
    let newest = life.iter().rev().find(|s| s.v.is_finite() && s.v >= 0.0)?;
    let from_step = newest.v as u64;
    let rolled = from_step.saturating_sub(to_step);
    // When the run first got to its newest step (it may have stood still since: a hang).
    let reached = life.iter().find(|s| s.v.is_finite() && s.v >= newest.v)?.t;
    let start = life
        .iter()
        .find(|s| s.v.is_finite() && s.v >= to_step as f64);
    let (secs, estimated) = match start {
        Some(s) if life.first().is_some_and(|f| f.v <= to_step as f64) => {
            (Some(reached - s.t), false)
        }
        _ => {
            // The chart does not reach back to the checkpoint: the average pace of what it holds.
            let first = life.iter().find(|s| s.v.is_finite())?;
            let (dv, dt) = (newest.v - first.v, reached - first.t);
            if dv > 0.0 && dt > 0.0 {
                (Some(rolled as f64 * dt / dv), true)
            } else {
                (None, false)
            }
        }
    };
    let gpus = gpu_count(charts);
    let gpu_hours = match (secs, gpus) {
        (Some(s), Some(g)) => Some(s * g as f64 / 3600.0),
        _ => None,
    };
    Some(RollbackCost {
        from_step,
        to_step,
        steps: rolled,
        secs: secs.filter(|s| s.is_finite() && *s >= 0.0),
        estimated,
        gpus,
        gpu_hours,
    })
}

/// How many GPUs the run has, when its charts say: the number of per-GPU `gpu_util` charts
/// (labelled, more than one). One aggregate chart tells nothing.
pub fn gpu_count(charts: &ChartSet) -> Option<usize> {
    let per_gpu = charts
        .by_role(Role::GpuUtil)
        .filter(|(k, _)| !k.labels.is_empty())
        .count();
    (per_gpu > 1).then_some(per_gpu)
}

/// What a paused run has cost so far, for a reminder: "the run has been paused 25 min: 8 GPUs
/// idle, 3.3 GPU-hours so far" (without the GPUs when their number is unknown).
pub fn idle_note(secs: f64, gpus: Option<usize>) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    let span = crate::clock::fmt_span(secs);
    match gpus {
        Some(g) => format!(
            "the run has been paused {span}: {g} GPUs idle, {:.1} GPU-hours so far",
            secs * g as f64 / 3600.0
        ),
        None => format!("the run has been paused {span}"),
    }
}

/// The samples since the step counter last went back (a restart from a checkpoint).
fn current_life(steps: &[Sample]) -> &[Sample] {
    let mut start = 0;
    let mut prev: Option<f64> = None;
    for (i, s) in steps.iter().enumerate() {
        if !s.v.is_finite() {
            continue;
        }
        if prev.is_some_and(|p| s.v < p) {
            start = i;
        }
        prev = Some(s.v);
    }
    &steps[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, Series};

    /// A run stepping once every 10 s from step 0 at t = 0 (`until` seconds), with `gpus`
    /// per-GPU utilisation charts.
    fn run(until: f64, gpus: usize) -> ChartSet {
        let mut c = ChartSet::new();
        c.insert(
            ChartKey::new(Role::Step),
            Series::from_samples((0..=(until / 10.0) as usize).map(|i| {
                let t = i as f64 * 10.0;
                Sample::new(t, t / 10.0)
            })),
        );
        for g in 0..gpus {
            c.insert(
                ChartKey::new(Role::GpuUtil).with_label("gpu", g.to_string()),
                Series::from_samples([Sample::new(0.0, 97.0)]),
            );
        }
        c
    }

    #[test]
    fn the_rolled_back_steps_cost_the_time_they_took_and_their_gpu_hours() {
        let c = run(7200.0, 8);
        let cost = rollback_cost(&c, 480).expect("a cost");
        assert_eq!((cost.from_step, cost.to_step, cost.steps), (720, 480, 240));
        assert_eq!(cost.secs, Some(2400.0));
        assert!(!cost.estimated);
        assert_eq!(cost.gpus, Some(8));
        assert!((cost.gpu_hours.unwrap() - 2400.0 * 8.0 / 3600.0).abs() < 1e-9);
        assert_eq!(
            cost.to_string(),
            "rolls back 240 steps (720 → 480), 40 min of training on 8 GPUs (5.3 GPU-hours)"
        );
    }

    #[test]
    fn a_hang_does_not_count_as_training_and_an_earlier_restart_is_not_progress() {
        // Steps 0..=360 in the first hour, then rolled back to 300 at t = 3700 and on to 500
        // by t = 5700, then stuck at 500 (a hang) until t = 9000.
        let mut samples: Vec<Sample> = (0..=360)
            .map(|i| Sample::new(i as f64 * 10.0, i as f64))
            .collect();
        samples.extend((0..=200).map(|i| Sample::new(3700.0 + i as f64 * 10.0, 300.0 + i as f64)));
        samples.extend((1..=330).map(|i| Sample::new(5700.0 + i as f64 * 10.0, 500.0)));
        let mut c = ChartSet::new();
        c.insert(ChartKey::new(Role::Step), Series::from_samples(samples));
        let cost = rollback_cost(&c, 400).unwrap();
        assert_eq!((cost.from_step, cost.steps), (500, 100));
        // Steps 400 → 500 of this life took 1000 s; the hour stuck at 500 is not counted.
        assert_eq!(cost.secs, Some(1000.0));
        assert_eq!(cost.gpus, None, "no per-GPU charts");
        assert_eq!(
            cost.to_string(),
            "rolls back 100 steps (500 → 400), 17 min of training"
        );
    }

    #[test]
    fn a_chart_that_no_longer_reaches_the_checkpoint_gives_an_estimate() {
        // The chart was pruned: it starts at step 300 (t = 3000), the checkpoint is step 100.
        let mut c = ChartSet::new();
        c.insert(
            ChartKey::new(Role::Step),
            Series::from_samples((300..=720).map(|s| Sample::new(s as f64 * 10.0, s as f64))),
        );
        let cost = rollback_cost(&c, 100).unwrap();
        assert_eq!(cost.steps, 620);
        assert!(cost.estimated);
        assert_eq!(cost.secs, Some(6200.0));
        assert!(cost.to_string().contains("≈ 103 min of training"), "{cost}");
        // One aggregate GPU chart tells no count.
        let mut one = run(600.0, 0);
        one.insert(
            ChartKey::new(Role::GpuUtil),
            Series::from_samples([Sample::new(0.0, 90.0)]),
        );
        assert_eq!(rollback_cost(&one, 10).unwrap().gpus, None);
    }

    #[test]
    fn a_paused_run_s_idle_gpus_are_counted() {
        assert_eq!(
            idle_note(1500.0, Some(8)),
            "the run has been paused 25 min: 8 GPUs idle, 3.3 GPU-hours so far"
        );
        assert_eq!(idle_note(600.0, None), "the run has been paused 10 min");
        assert_eq!(idle_note(f64::NAN, None), "the run has been paused 0 s");
        let c = run(60.0, 4);
        assert_eq!(gpu_count(&c), Some(4));
        assert_eq!(
            gpu_count(&run(60.0, 1)),
            None,
            "one labelled chart is no count"
        );
    }

    #[test]
    fn no_step_chart_or_nonsense_gives_no_cost_and_no_panic() {
        assert_eq!(rollback_cost(&ChartSet::new(), 10), None);
        let mut c = ChartSet::new();
        c.insert(
            ChartKey::new(Role::Step),
            Series::from_samples([Sample::new(0.0, f64::NAN), Sample::new(10.0, -5.0)]),
        );
        assert_eq!(rollback_cost(&c, 10), None);
        // A checkpoint ahead of the run (a stale chart): nothing rolled back, no time.
        let c = run(100.0, 0);
        let cost = rollback_cost(&c, 50).unwrap();
        assert_eq!(cost.steps, 0);
        let at = rollback_cost(&c, 10).unwrap();
        assert_eq!(
            at.to_string(),
            "rolls back nothing (the run is at the checkpoint's step 10)"
        );
    }
}
