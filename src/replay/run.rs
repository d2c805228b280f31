//! The replay clock: feeds a trace to a detector set poll by poll, causally, through
//! [`Hysteresis`], exactly as the engine polls a live run.

use serde::Serialize;

use crate::charts::{ChartSet, Sample};
use crate::detect::{DetectContext, DetectorParams, Finding, Hysteresis, detect_all};

use super::baseline::BaselineRules;
use super::trace::Trace;

/// Which detectors a replay runs: babysitter's, or the static alert rules it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorSet {
    Babysitter,
    Baseline,
}

impl DetectorSet {
    pub fn name(self) -> &'static str {
        match self {
            DetectorSet::Babysitter => "babysitter",
            DetectorSet::Baseline => "baseline",
        }
    }
}

/// How the detectors' windows relate to the trace's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeScale {
    /// Windows and poll interval as configured when the trace is sampled at least once per poll
    /// interval; for a coarser trace (e.g. one sample per day) every window and the poll interval
    /// are stretched by `cadence / poll_interval`, so the detectors see as many samples per
    /// window as on a live run polled at its configured interval.
    Auto,
    /// Every window and the poll interval multiplied by this factor.
    Fixed(f64),
}

/// Settings of one replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Seconds between polls before scaling (the config's `poll_interval`).
    pub poll_interval: f64,
    pub params: DetectorParams,
    pub time_scale: TimeScale,
    /// Charts that arrive late: `None` delivers every sample at the first poll at or after its
    /// time, as a live source that is never behind.
    pub late: Option<Lateness>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            poll_interval: 30.0,
            params: DetectorParams::default(),
            time_scale: TimeScale::Auto,
            late: None,
        }
    }
}

/// Late delivery, as remote-write batching, a slow exporter or a lagging recording rule make
/// it: at each poll, each chart independently is behind by a delay drawn uniformly from
/// `0..=max_secs` (seeded, so a replay is repeatable), and sees only its samples up to
/// `now - delay`. A sample once seen stays seen; the charts of one poll disagree on how far
/// they reach. `max_secs` is in trace seconds, scaled with the windows on sparse traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lateness {
    pub max_secs: f64,
    pub seed: u64,
}

/// Delay of chart `chart` at poll `poll`: a SplitMix64 hash of the three, uniform in
/// `0..=max` (no state, so each chart's delays do not depend on the others').
fn delay(late: &Lateness, chart: usize, poll: u64, scale: f64) -> f64 {
    let mut z = late
        .seed
        .wrapping_add((chart as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(poll.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    late.max_secs.max(0.0) * scale * u
}

/// More polls than this in one replay is a mistake (a daily trace replayed at a 1-s poll),
/// not a workload.
pub const MAX_POLLS: u64 = 20_000_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("poll interval must be a finite number of seconds above 0, got {0}")]
    PollInterval(f64),
    #[error("late delivery must be a finite number of seconds, 0 or more, got {0}")]
    Late(f64),
    #[error("time scale must be a finite number above 0, got {0}")]
    TimeScale(f64),
    #[error(
        "replaying {duration:.0} s at one poll every {poll:.3} s would take {polls} polls (limit {MAX_POLLS}); raise the poll interval or the time scale"
    )]
    TooManyPolls {
        duration: f64,
        poll: f64,
        polls: u64,
    },
}

/// What a replay produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub set: DetectorSet,
    /// The factor applied to every window and to the poll interval.
    pub scale: f64,
    /// The poll interval actually used (seconds of trace time).
    pub poll_interval: f64,
    pub polls: u64,
    /// Every finding that *started*, in poll order (`at` is the poll time).
    pub findings: Vec<Finding>,
}

/// One line of `babysitter replay --json` (FORMATS.md §3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingLine<'a> {
    pub kind: &'a str,
    pub chart: &'a str,
    pub at: f64,
    pub severity: &'a str,
    pub message: &'a str,
}

impl<'a> From<&'a Finding> for FindingLine<'a> {
    fn from(f: &'a Finding) -> Self {
        FindingLine {
            kind: f.kind.as_str(),
            chart: &f.chart,
            at: f.at,
            severity: f.severity.as_str(),
            message: &f.message,
        }
    }
}

/// The time scale [`TimeScale::Auto`] picks for a trace: 1 unless the trace is sampled more
/// sparsely than once per poll interval.
pub fn auto_scale(trace: &Trace, poll_interval: f64) -> f64 {
    match trace.cadence {
        Some(c) if c.is_finite() && poll_interval > 0.0 && c > poll_interval => c / poll_interval,
        _ => 1.0,
    }
}

/// Every `*_secs` window of the detector parameters multiplied by `k`; counts and ratios kept.
pub fn scale_params(p: &DetectorParams, k: f64) -> DetectorParams {
    // Destructured field by field so that a new window cannot be forgotten here.
    let DetectorParams {
        nonfinite_window_secs,
        loss_baseline_secs,
        loss_recent_secs,
        loss_spike_sigmas,
        loss_spike_min_rise,
        loss_min_baseline_samples,
        loss_spike_hold_secs,
        stall_after_secs,
        stall_fresh_secs,
        stall_min_secs,
        stall_learn_secs,
        hardware_window_secs,
        throughput_recent_secs,
        throughput_baseline_secs,
        throughput_drop_ratio,
        throughput_min_baseline_samples,
        throughput_min_recent_samples,
        throughput_hold_secs,
        loss_spike_min_samples,
        divergence_recent_secs,
        divergence_baseline_secs,
        divergence_sigmas,
        divergence_min_rise,
        divergence_min_samples,
        divergence_lookback_secs,
        divergence_jump_hold_secs,
        grad_baseline_secs,
        grad_explosion_factor,
        grad_explosion_min_samples,
        grad_min_baseline_samples,
        loss_scale_window_secs,
        loss_scale_max_drops,
        loss_scale_floor,
        skipped_steps_max,
        loss_plateau_secs,
        loss_plateau_window_secs,
        loss_plateau_min_drop,
        loss_plateau_hold_secs,
        eval_regression_min_rise,
        eval_regression_min_evals,
        eval_min_history,
        lr_window_secs,
        lr_jump_factor,
        lr_zero_min_fraction,
        lr_hold_secs,
        lr_max_hold_secs,
        absent_after_secs,
        absent_history_secs,
        gpu_util_recent_secs,
        gpu_util_baseline_secs,
        gpu_util_drop_ratio,
        dataloader_recent_secs,
        dataloader_wait_fraction,
        crash_loop_window_secs,
        crash_loop_restarts,
        checkpoint_max_age_secs,
        straggler_window_secs,
        straggler_ratio,
        straggler_min_ranks,
    } = p.clone();
    DetectorParams {
        nonfinite_window_secs: nonfinite_window_secs * k,
        loss_baseline_secs: loss_baseline_secs * k,
        loss_recent_secs: loss_recent_secs * k,
        loss_spike_sigmas,
        loss_spike_min_rise,
        loss_min_baseline_samples,
        loss_spike_hold_secs: loss_spike_hold_secs * k,
        stall_after_secs: stall_after_secs * k,
        stall_fresh_secs: stall_fresh_secs * k,
        stall_min_secs: stall_min_secs * k,
        stall_learn_secs: stall_learn_secs * k,
        hardware_window_secs: hardware_window_secs * k,
        throughput_recent_secs: throughput_recent_secs * k,
        throughput_baseline_secs: throughput_baseline_secs * k,
        throughput_drop_ratio,
        throughput_min_baseline_samples,
        throughput_min_recent_samples,
        throughput_hold_secs: throughput_hold_secs * k,
        loss_spike_min_samples,
        divergence_recent_secs: divergence_recent_secs * k,
        divergence_baseline_secs: divergence_baseline_secs * k,
        divergence_sigmas,
        divergence_min_rise,
        divergence_min_samples,
        divergence_lookback_secs: divergence_lookback_secs * k,
        divergence_jump_hold_secs: divergence_jump_hold_secs * k,
        grad_baseline_secs: grad_baseline_secs * k,
        grad_explosion_factor,
        grad_explosion_min_samples,
        grad_min_baseline_samples,
        loss_scale_window_secs: loss_scale_window_secs * k,
        loss_scale_max_drops,
        loss_scale_floor,
        skipped_steps_max,
        loss_plateau_secs: loss_plateau_secs * k,
        loss_plateau_window_secs: loss_plateau_window_secs * k,
        loss_plateau_min_drop,
        loss_plateau_hold_secs: loss_plateau_hold_secs * k,
        eval_regression_min_rise,
        eval_regression_min_evals,
        eval_min_history,
        lr_window_secs: lr_window_secs * k,
        lr_jump_factor,
        lr_zero_min_fraction,
        lr_hold_secs: lr_hold_secs * k,
        lr_max_hold_secs: lr_max_hold_secs * k,
        absent_after_secs: absent_after_secs * k,
        absent_history_secs: absent_history_secs * k,
        gpu_util_recent_secs: gpu_util_recent_secs * k,
        gpu_util_baseline_secs: gpu_util_baseline_secs * k,
        gpu_util_drop_ratio,
        dataloader_recent_secs: dataloader_recent_secs * k,
        dataloader_wait_fraction,
        crash_loop_window_secs: crash_loop_window_secs * k,
        crash_loop_restarts,
        checkpoint_max_age_secs: checkpoint_max_age_secs * k,
        straggler_window_secs: straggler_window_secs * k,
        straggler_ratio,
        straggler_min_ranks,
    }
}

/// Replays a trace: the clock starts at the first row and advances one poll interval at a time
/// until it has passed the last row; before each poll, exactly the samples with `t <= now` are
/// merged into the charts the detectors see (`t <= now - delay` with [`Lateness`]), so no
/// finding can use a later sample. Conditions
/// go through [`Hysteresis`]: each is reported once when it starts.
pub fn replay(
    trace: &Trace,
    opts: &ReplayOptions,
    set: DetectorSet,
) -> Result<Replay, ReplayError> {
    if !(opts.poll_interval.is_finite() && opts.poll_interval > 0.0) {
        return Err(ReplayError::PollInterval(opts.poll_interval));
    }
    if let Some(late) = &opts.late
        && !(late.max_secs.is_finite() && late.max_secs >= 0.0)
    {
        return Err(ReplayError::Late(late.max_secs));
    }
    let scale = match opts.time_scale {
        TimeScale::Auto => auto_scale(trace, opts.poll_interval),
        TimeScale::Fixed(k) if k.is_finite() && k > 0.0 => k,
        TimeScale::Fixed(k) => return Err(ReplayError::TimeScale(k)),
    };
    let poll = opts.poll_interval * scale;
    let duration = trace.duration().max(0.0);
    let polls_f = (duration / poll).ceil() + 1.0;
    if !(polls_f.is_finite() && polls_f <= MAX_POLLS as f64) {
        return Err(ReplayError::TooManyPolls {
            duration,
            poll,
            polls: if polls_f.is_finite() {
                polls_f as u64
            } else {
                u64::MAX
            },
        });
    }
    let polls = if trace.rows == 0 { 0 } else { polls_f as u64 };
    let params = scale_params(&opts.params, scale);
    let rules = BaselineRules::default().scaled(scale);

    // Every chart's samples with a cursor: how many of them the detectors already see.
    let sources: Vec<_> = trace
        .charts
        .iter()
        .map(|(k, s)| (k.clone(), s.samples()))
        .collect();
    let mut cursors = vec![0usize; sources.len()];
    let mut seen = ChartSet::new();
    let mut hysteresis = Hysteresis::new();
    let mut findings = Vec::new();
    for i in 0..polls {
        let now = trace.start + i as f64 * poll;
        for (c, ((key, samples), cursor)) in sources.iter().zip(cursors.iter_mut()).enumerate() {
            let reach = match &opts.late {
                Some(late) => now - delay(late, c, i, scale),
                None => now,
            };
            let upto = samples.partition_point(|s: &Sample| s.t <= reach);
            if upto > *cursor {
                seen.merge(key.clone(), samples[*cursor..upto].iter().copied());
                *cursor = upto;
            }
        }
        let ctx = DetectContext {
            now,
            charts: &seen,
            since: None,
            paused: false,
            params: &params,
        };
        let current = match set {
            DetectorSet::Babysitter => detect_all(&ctx),
            DetectorSet::Baseline => rules.detect(&ctx),
        };
        findings.extend(hysteresis.update(current).started);
    }
    Ok(Replay {
        set,
        scale,
        poll_interval: poll,
        polls,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::detect::FindingKind;

    fn trace(text: &str) -> Trace {
        Trace::parse(text, Path::new("t.csv")).expect("valid trace")
    }

    /// A run that logs every 10 s and hangs from `hang` on (the step stops, rows keep coming).
    fn hung_run(hang: f64, end: f64) -> String {
        let mut s = String::from("time,step,loss\n");
        let mut step = 0;
        let mut t = 0.0;
        while t <= end {
            if t < hang {
                step += 5;
            }
            s.push_str(&format!("{t},{step},2.0\n"));
            t += 10.0;
        }
        s
    }

    #[test]
    fn a_hang_is_reported_once_at_the_first_poll_past_the_threshold() {
        let tr = trace(&hung_run(1000.0, 3000.0));
        let r = replay(&tr, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
        assert_eq!((r.scale, r.poll_interval, r.polls), (1.0, 30.0, 101));
        assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
        let f = &r.findings[0];
        assert_eq!(f.kind, FindingKind::Stall);
        // Last advance at t=990; 300 s later is 1290; first poll at or after it is 1290.
        assert_eq!((f.onset, f.at), (990.0, 1290.0));
    }

    #[test]
    fn findings_never_use_samples_after_their_poll() {
        // A NaN at t=95: the poll at 90 must not see it, the poll at 120 must.
        let tr = trace("time,loss\n0,1\n60,1\n95,NaN\n200,1\n");
        let r = replay(&tr, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].kind, FindingKind::Nonfinite);
        assert_eq!(r.findings[0].at, 120.0);
        for f in &r.findings {
            assert!(f.at >= f.onset, "{f:?}");
        }
    }

    #[test]
    fn a_condition_is_reported_again_only_after_it_cleared() {
        // NaN losses at 100..160 (one condition, seen on three polls), then again at 1000.
        let mut text = String::from("time,loss\n");
        for i in 0..=60 {
            let t = i as f64 * 20.0;
            let bad = (100.0..=160.0).contains(&t) || t == 1000.0;
            text.push_str(&format!("{t},{}\n", if bad { "NaN" } else { "2.0" }));
        }
        let r = replay(
            &trace(&text),
            &ReplayOptions::default(),
            DetectorSet::Babysitter,
        )
        .expect("replays");
        let at: Vec<_> = r.findings.iter().map(|f| (f.kind, f.at)).collect();
        assert_eq!(
            at,
            vec![
                (FindingKind::Nonfinite, 120.0),
                (FindingKind::Nonfinite, 1020.0)
            ]
        );
    }

    #[test]
    fn sparse_traces_stretch_windows_and_polls() {
        let mut text = String::from("time,loss\n");
        for d in 0..10 {
            text.push_str(&format!("{},2.0\n", d as f64 * 86400.0));
        }
        let tr = trace(&text);
        assert_eq!(auto_scale(&tr, 30.0), 2880.0);
        let r = replay(&tr, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
        assert_eq!((r.poll_interval, r.polls), (86400.0, 10));
        let p = scale_params(&DetectorParams::default(), 2.0);
        assert_eq!(p.stall_after_secs, 600.0);
        assert_eq!(p.loss_spike_sigmas, 8.0);
        assert_eq!(p.loss_min_baseline_samples, 15);
        let fixed = ReplayOptions {
            time_scale: TimeScale::Fixed(1.0),
            poll_interval: 0.001,
            ..ReplayOptions::default()
        };
        assert!(matches!(
            replay(&tr, &fixed, DetectorSet::Babysitter),
            Err(ReplayError::TooManyPolls { .. })
        ));
        let bad = ReplayOptions {
            poll_interval: f64::NAN,
            ..ReplayOptions::default()
        };
        assert!(matches!(
            replay(&tr, &bad, DetectorSet::Babysitter),
            Err(ReplayError::PollInterval(p)) if p.is_nan()
        ));
    }

    #[test]
    fn json_lines_have_exactly_the_documented_fields() {
        let tr = trace("time,loss\n0,1\n30,NaN\n");
        let r = replay(&tr, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
        let line = serde_json::to_value(FindingLine::from(&r.findings[0])).expect("json");
        let obj = line.as_object().expect("object");
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5);
        for k in ["kind", "chart", "at", "severity", "message"] {
            assert!(obj.contains_key(k), "{k} missing: {line}");
        }
        assert_eq!(obj["kind"], "nonfinite");
        assert_eq!(obj["chart"], "loss");
        assert_eq!(obj["at"], 30.0);
    }
}
