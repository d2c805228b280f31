//! Verify: after acting, did the run recover?
//!
//! [`evaluate`] is a pure function of the charts since the last action, `now` and the
//! runbook's [`VerifySpec`]: it answers pending, passed or failed, with the numbers. Each
//! [`Expectation`] is judged on samples with `since < t <= now` only (what came before belongs
//! to the incident). A NaN/Inf or a new hardware error fails at once; otherwise the verdict is
//! passed when every expectation holds, failed when the deadline `since + within` has passed
//! without that, and pending before.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::charts::{ChartSet, Role, Sample};
use crate::detect::Band;

/// What must hold, and how long babysitter waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Deadline after the last action; not all expectations met by then → failed.
    #[serde(with = "crate::config::duration")]
    pub within: Duration,
    /// How long every expectation must have had to show itself before babysitter calls the run
    /// recovered: a run that makes a few steps and hangs again, or trains back into the data
    /// that blew it up, must not pass. Default: 5 min, or half of `within` if that is shorter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::config::opt_duration"
    )]
    pub settle: Option<Duration>,
    pub expect: Vec<Expectation>,
}

impl VerifySpec {
    /// The settle time in effect.
    pub fn settle(&self) -> Duration {
        self.settle
            .unwrap_or_else(|| Duration::from_secs(300).min(self.within / 2))
    }
}

/// One condition of recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// The step counter advances again: by at least [`PROGRESS_MIN_STEPS`] over at least two
    /// advances since the action, the last one at most [`PROGRESS_FRESH_SECS`] ago.
    Progress,
    /// The last [`LOSS_TAIL`] loss samples are finite and within the pre-incident band
    /// (`center + max(4σ, 5 % of center)`); without a band, not above the first post-action
    /// loss by more than 20 %.
    LossInBand,
    /// No new Xid / ECC errors since the action (an increase fails at once).
    NoNewHardwareErrors,
    /// No NaN / Inf in the training charts since the action (one fails at once).
    Finite,
    /// The incident's findings no longer hold (the engine says so through
    /// [`VerifyContext::findings_active`]).
    FindingsCleared,
}

impl Expectation {
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Progress => "progress",
            Expectation::LossInBand => "loss_in_band",
            Expectation::NoNewHardwareErrors => "no_new_hardware_errors",
            Expectation::Finite => "finite",
            Expectation::FindingsCleared => "findings_cleared",
        }
    }
}

/// Inputs of a verification.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    pub charts: &'a ChartSet,
    /// When the last action of the plan completed.
    pub since: f64,
    pub now: f64,
    /// The loss band before the incident's onset, when known.
    pub baseline_loss: Option<Band>,
    /// Whether the incident's findings still hold now (after hysteresis).
    pub findings_active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum VerifyStatus {
    Pending(String),
    Passed(String),
    Failed(String),
}

/// Minimum increase of the step counter after the action.
pub const PROGRESS_MIN_STEPS: f64 = 3.0;
/// The step counter must have advanced this recently (a restart blip that then hangs is not
/// progress). Below the default stall threshold (300 s), so "progressing" and "stalled" never
/// overlap.
pub const PROGRESS_FRESH_SECS: f64 = 120.0;
/// How many of the newest loss samples must be back in the band.
pub const LOSS_TAIL: usize = 5;
/// Without a pre-incident band: the loss may rise at most this fraction above its first
/// post-action value.
pub const LOSS_MAX_RISE: f64 = 0.2;
/// The charts whose NaN/Inf fails `finite`.
const TRAINING_ROLES: [Role; 5] = [
    Role::Loss,
    Role::GradNorm,
    Role::EvalLoss,
    Role::Lr,
    Role::LossScale,
];

/// The verdict on one expectation.
enum Verdict {
    Holds(String),
    NotYet(String),
    FailNow(String),
}

/// Evaluates a verification.
pub fn evaluate(spec: &VerifySpec, ctx: &VerifyContext<'_>) -> VerifyStatus {
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    let mut failed = Vec::new();
    for &e in &spec.expect {
        let verdict = match e {
            Expectation::Progress => progress(ctx),
            Expectation::LossInBand => loss_in_band(ctx),
            Expectation::NoNewHardwareErrors => no_new_hardware_errors(ctx),
            Expectation::Finite => finite(ctx),
            Expectation::FindingsCleared => {
                if ctx.findings_active {
                    Verdict::NotYet("the incident's findings still hold".into())
                } else {
                    Verdict::Holds("the incident's findings have cleared".into())
                }
            }
        };
        match verdict {
            Verdict::Holds(d) => held.push(format!("{}: {d}", e.as_str())),
            Verdict::NotYet(d) => waiting.push(format!("{}: {d}", e.as_str())),
            Verdict::FailNow(d) => failed.push(format!("{}: {d}", e.as_str())),
        }
    }
    if !failed.is_empty() {
        return VerifyStatus::Failed(failed.join("; "));
    }
    let within = spec.within.as_secs_f64();
    let waited = ctx.now - ctx.since;
    if waiting.is_empty() {
        if held.is_empty() {
            return VerifyStatus::Passed("no expectations to verify".into());
        }
        let settle = spec.settle().as_secs_f64();
        if waited < settle {
            return VerifyStatus::Pending(format!(
                "{} — watching {:.0} s more before calling it recovered",
                held.join("; "),
                settle - waited
            ));
        }
        return VerifyStatus::Passed(held.join("; "));
    }
    if waited > within {
        return VerifyStatus::Failed(format!(
            "not met within {}: {}",
            humantime::format_duration(spec.within),
            waiting.join("; ")
        ));
    }
    VerifyStatus::Pending(format!(
        "awaiting {} ({:.0} s of {:.0} s left)",
        waiting.join("; "),
        (within - waited).max(0.0),
        within
    ))
}

/// A chart's samples after the action: `since < t <= now`.
fn after<'c>(ctx: &VerifyContext<'c>, samples: &'c [Sample]) -> &'c [Sample] {
    let lo = samples.partition_point(|s| ctx.since.is_nan() || s.t <= ctx.since);
    let hi = samples.partition_point(|s| s.t <= ctx.now);
    if lo >= hi { &[] } else { &samples[lo..hi] }
}

fn progress(ctx: &VerifyContext<'_>) -> Verdict {
    let Some(step) = ctx.charts.get(Role::Step) else {
        return Verdict::NotYet("no step chart".into());
    };
    let s = after(ctx, step.samples());
    let mut finite = s.iter().filter(|x| x.v.is_finite());
    let Some(first) = finite.next() else {
        return Verdict::NotYet("no step samples since the action yet".into());
    };
    // Advances: increases between consecutive finite samples; a rollback (restart from a
    // checkpoint) resets the count of steps made, not of advances.
    let (mut prev, mut advances, mut last_adv, mut gained, mut low) =
        (first.v, 0usize, None, 0.0, first.v);
    for x in finite {
        if x.v > prev {
            advances += 1;
            last_adv = Some(x.t);
        }
        low = low.min(x.v);
        prev = x.v;
        gained = x.v - low;
    }
    let Some(last_adv) = last_adv else {
        return Verdict::NotYet(format!(
            "step has not advanced since the action (at {})",
            first.v
        ));
    };
    let quiet = ctx.now - last_adv;
    if gained < PROGRESS_MIN_STEPS || advances < 2 {
        return Verdict::NotYet(format!(
            "step advanced {gained} in {advances} advance(s) since the action, need {PROGRESS_MIN_STEPS} in 2"
        ));
    }
    if quiet > PROGRESS_FRESH_SECS {
        return Verdict::NotYet(format!(
            "step advanced {gained} after the action but not in the last {quiet:.0} s (stuck at {prev})"
        ));
    }
    Verdict::Holds(format!(
        "step advanced {gained} to {prev} in {advances} advances, last {quiet:.0} s ago"
    ))
}

fn loss_in_band(ctx: &VerifyContext<'_>) -> Verdict {
    let Some(loss) = ctx.charts.get(Role::Loss) else {
        return Verdict::NotYet("no loss chart".into());
    };
    let s = after(ctx, loss.samples());
    if s.len() < LOSS_TAIL {
        return Verdict::NotYet(format!(
            "{} of {LOSS_TAIL} loss samples since the action",
            s.len()
        ));
    }
    let tail = &s[s.len() - LOSS_TAIL..];
    if let Some(bad) = tail.iter().find(|x| !x.v.is_finite()) {
        return Verdict::NotYet(format!(
            "loss is {} at {}",
            bad.v,
            crate::clock::fmt_t(bad.t)
        ));
    }
    let worst = tail.iter().map(|x| x.v).fold(f64::NEG_INFINITY, f64::max);
    let (limit, what) = match ctx.baseline_loss {
        Some(b) if b.center.is_finite() && b.sigma.is_finite() => {
            let limit = b.center + (4.0 * b.sigma).max(0.05 * b.center.abs());
            (
                limit,
                format!(
                    "pre-incident band {:.4} + max(4σ, 5%) = {limit:.4}",
                    b.center
                ),
            )
        }
        _ => {
            let Some(first) = s.iter().find(|x| x.v.is_finite()) else {
                return Verdict::NotYet("no finite loss since the action".into());
            };
            let limit = first.v + LOSS_MAX_RISE * first.v.abs();
            (
                limit,
                format!("first post-action loss {:.4} + 20% = {limit:.4}", first.v),
            )
        }
    };
    if worst <= limit {
        return Verdict::Holds(format!(
            "last {LOSS_TAIL} losses ≤ {worst:.4}, within {what}"
        ));
    }
    // A relapse: the loss came back into band after the action, then the whole tail left it by
    // far (≥ 1.5× the band's centre and ≥ 10σ). Waiting for the deadline would only burn GPU time.
    if let Some(b) = ctx
        .baseline_loss
        .filter(|b| b.center > 0.0 && b.sigma.is_finite())
    {
        let relapse = (1.5 * b.center).max(b.center + 10.0 * b.sigma);
        let was_in_band = s[..s.len() - LOSS_TAIL]
            .iter()
            .any(|x| x.v.is_finite() && x.v <= limit);
        let best = tail.iter().map(|x| x.v).fold(f64::INFINITY, f64::min);
        if was_in_band && best > relapse {
            return Verdict::FailNow(format!(
                "the loss came back into band, then relapsed: last {LOSS_TAIL} losses all above {relapse:.4} (≥ {best:.4}); {what}"
            ));
        }
    }
    {
        Verdict::NotYet(format!(
            "last {LOSS_TAIL} losses reach {worst:.4}, above {what}"
        ))
    }
}

fn no_new_hardware_errors(ctx: &VerifyContext<'_>) -> Verdict {
    let mut charts = 0;
    for role in [Role::XidErrors, Role::EccErrors] {
        for (key, series) in ctx.charts.by_role(role) {
            charts += 1;
            let mut prev: Option<f64> = None;
            for x in after(ctx, series.samples())
                .iter()
                .filter(|x| x.v.is_finite())
            {
                if let Some(p) = prev
                    && x.v > p
                {
                    return Verdict::FailNow(format!(
                        "{key} rose from {p} to {} at {}",
                        x.v,
                        crate::clock::fmt_t(x.t)
                    ));
                }
                prev = Some(x.v);
            }
        }
    }
    Verdict::Holds(format!("no increase on {charts} Xid/ECC chart(s)"))
}

fn finite(ctx: &VerifyContext<'_>) -> Verdict {
    let mut seen = 0usize;
    for role in TRAINING_ROLES {
        for (key, series) in ctx.charts.by_role(role) {
            let s = after(ctx, series.samples());
            if let Some(bad) = s.iter().find(|x| !x.v.is_finite()) {
                return Verdict::FailNow(format!(
                    "{key} is {} at {}",
                    bad.v,
                    crate::clock::fmt_t(bad.t)
                ));
            }
            seen += s.len();
        }
    }
    if seen == 0 {
        return Verdict::NotYet("no training samples since the action yet".into());
    }
    Verdict::Holds(format!(
        "{seen} training samples since the action, all finite"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::ChartKey;

    fn spec(secs: u64, expect: &[Expectation]) -> VerifySpec {
        VerifySpec {
            within: Duration::from_secs(secs),
            settle: Some(Duration::ZERO),
            expect: expect.to_vec(),
        }
    }

    #[test]
    fn a_loss_that_relapses_fails_at_once() {
        let mut c = ChartSet::new();
        let k = ChartKey::new(Role::Loss);
        // In band (≈2.0) for 10 samples after the action at 1000, then 6 samples near 7.
        let mut t = 1000.0;
        for i in 0..16 {
            t += 15.0;
            let v = if i < 10 {
                2.0 + 0.01 * (i % 3) as f64
            } else {
                7.0 + 0.1 * i as f64
            };
            c.merge(k.clone(), [Sample::new(t, v)]);
        }
        let s = spec(1800, &[Expectation::LossInBand]);
        let ctx = VerifyContext {
            charts: &c,
            since: 1000.0,
            now: t,
            baseline_loss: Some(Band {
                center: 2.0,
                sigma: 0.02,
            }),
            findings_active: false,
        };
        match evaluate(&s, &ctx) {
            VerifyStatus::Failed(d) => assert!(d.contains("relapsed"), "{d}"),
            other => panic!("{other:?}"),
        }
        // Never in band since the action: not a relapse, wait for the deadline.
        let ctx = VerifyContext {
            since: t - 5.0 * 15.0 - 1.0,
            ..ctx
        };
        assert!(matches!(evaluate(&s, &ctx), VerifyStatus::Pending(_)));
    }

    #[test]
    fn passing_waits_for_the_settle_time() {
        let charts = recovering(2000.0);
        let mut s = spec(1800, &[Expectation::Progress]);
        s.settle = Some(Duration::from_secs(600));
        let at = |now: f64| {
            evaluate(
                &s,
                &VerifyContext {
                    charts: &charts,
                    since: 1000.0,
                    now,
                    baseline_loss: None,
                    findings_active: false,
                },
            )
        };
        // Progress already holds at 1200, but the run must keep it up for 10 min.
        match at(1200.0) {
            VerifyStatus::Pending(d) => assert!(d.contains("400 s more"), "{d}"),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(at(1650.0), VerifyStatus::Passed(_)),
            "{:?}",
            at(1650.0)
        );
    }

    /// Before 1000 the run hung at step 500 with a high loss; restarted from the checkpoint at
    /// step 400 at 1000; from 1060 it advances 10 steps per 15 s with a loss back near 2.0.
    fn recovering(until: f64) -> ChartSet {
        let mut c = ChartSet::new();
        let mut t = 0.0;
        while t <= until {
            let (step, loss) = if t < 1000.0 {
                (500.0_f64.min(t), 6.0)
            } else if t < 1060.0 {
                (400.0, 2.05)
            } else {
                (
                    400.0 + ((t - 1060.0) / 15.0).floor() * 10.0,
                    2.0 + 0.01 * ((t / 15.0) % 3.0),
                )
            };
            c.merge(ChartKey::new(Role::Step), [Sample::new(t, step)]);
            c.merge(ChartKey::new(Role::Loss), [Sample::new(t, loss)]);
            c.merge(
                ChartKey::new(Role::XidErrors),
                [Sample::new(t, if t < 900.0 { 0.0 } else { 3.0 })],
            );
            t += 15.0;
        }
        c
    }

    fn ctx(charts: &ChartSet, now: f64, active: bool) -> VerifyContext<'_> {
        VerifyContext {
            charts,
            since: 1000.0,
            now,
            baseline_loss: Some(Band {
                center: 2.0,
                sigma: 0.02,
            }),
            findings_active: active,
        }
    }

    const ALL: [Expectation; 5] = [
        Expectation::Progress,
        Expectation::LossInBand,
        Expectation::NoNewHardwareErrors,
        Expectation::Finite,
        Expectation::FindingsCleared,
    ];

    #[test]
    fn pending_then_passed_with_numbers() {
        let c = recovering(1300.0);
        let sp = spec(600, &ALL);
        match evaluate(&sp, &ctx(&c, 1030.0, true)) {
            VerifyStatus::Pending(d) => {
                assert!(
                    d.contains("progress: step has not advanced since the action (at 400)"),
                    "{d}"
                );
                assert!(d.contains("loss_in_band: 2 of 5 loss samples"), "{d}");
                assert!(
                    d.contains("findings_cleared: the incident's findings still hold"),
                    "{d}"
                );
                assert!(!d.contains("finite:"), "{d}");
            }
            other => panic!("expected pending, got {other:?}"),
        }
        // Findings still active: pending even though the charts recovered.
        assert!(matches!(
            evaluate(&sp, &ctx(&c, 1200.0, true)),
            VerifyStatus::Pending(_)
        ));
        match evaluate(&sp, &ctx(&c, 1200.0, false)) {
            VerifyStatus::Passed(d) => {
                assert!(
                    d.contains("progress: step advanced 90 to 490 in 9 advances, last 0 s ago"),
                    "{d}"
                );
                assert!(
                    d.contains("within pre-incident band 2.0000 + max(4σ, 5%) = 2.1000"),
                    "{d}"
                );
                assert!(
                    d.contains("no_new_hardware_errors: no increase on 1 Xid/ECC chart(s)"),
                    "{d}"
                );
            }
            other => panic!("expected passed, got {other:?}"),
        }
    }

    #[test]
    fn timeout_names_the_unmet_expectation() {
        // Restarted, but the run hangs again right after two advances.
        let mut c = recovering(1100.0);
        c.merge(
            ChartKey::new(Role::Step),
            (0..20).map(|i| Sample::new(1115.0 + i as f64 * 15.0, 420.0)),
        );
        let sp = spec(300, &[Expectation::Progress, Expectation::Finite]);
        let at_deadline = evaluate(&sp, &ctx(&c, 1300.0, false));
        assert!(
            matches!(at_deadline, VerifyStatus::Pending(ref d) if d.contains("not in the last 205 s"))
        );
        match evaluate(&sp, &ctx(&c, 1301.0, false)) {
            VerifyStatus::Failed(d) => {
                assert!(
                    d.starts_with("not met within 5m: progress: step advanced 20"),
                    "{d}"
                );
                assert!(!d.contains("finite"), "{d}");
            }
            other => panic!("expected failed, got {other:?}"),
        }
    }

    #[test]
    fn nan_and_new_hardware_errors_fail_at_once() {
        let mut c = recovering(1300.0);
        c.merge(
            ChartKey::new(Role::GradNorm),
            [Sample::new(1100.0, f64::NAN)],
        );
        match evaluate(&spec(3600, &ALL), &ctx(&c, 1110.0, false)) {
            VerifyStatus::Failed(d) => assert_eq!(d, "finite: grad_norm is NaN at t=1100s"),
            other => panic!("expected failed, got {other:?}"),
        }
        let mut c = recovering(1300.0);
        c.merge(ChartKey::new(Role::XidErrors), [Sample::new(1150.0, 4.0)]);
        match evaluate(
            &spec(3600, &[Expectation::NoNewHardwareErrors]),
            &ctx(&c, 1160.0, false),
        ) {
            VerifyStatus::Failed(d) => assert_eq!(
                d,
                "no_new_hardware_errors: xid_errors rose from 3 to 4 at t=1150s"
            ),
            other => panic!("expected failed, got {other:?}"),
        }
        // The Xid increase at 900 was before the action: not a new error.
        assert!(matches!(
            evaluate(
                &spec(3600, &[Expectation::NoNewHardwareErrors]),
                &ctx(&recovering(1300.0), 1160.0, false)
            ),
            VerifyStatus::Passed(_)
        ));
    }

    #[test]
    fn loss_without_a_baseline_must_not_rise() {
        let mut c = recovering(1300.0);
        let cx = VerifyContext {
            baseline_loss: None,
            ..ctx(&c, 1300.0, false)
        };
        assert!(matches!(
            evaluate(&spec(600, &[Expectation::LossInBand]), &cx),
            VerifyStatus::Passed(_)
        ));
        c.merge(
            ChartKey::new(Role::Loss),
            (0..5).map(|i| Sample::new(1315.0 + i as f64 * 15.0, 2.6)),
        );
        let cx = VerifyContext {
            baseline_loss: None,
            ..ctx(&c, 1400.0, false)
        };
        match evaluate(&spec(600, &[Expectation::LossInBand]), &cx) {
            VerifyStatus::Pending(d) => assert!(
                d.contains("reach 2.6000, above first post-action loss 2.0500"),
                "{d}"
            ),
            other => panic!("expected pending, got {other:?}"),
        }
    }

    #[test]
    fn degenerate_inputs_never_panic() {
        let values = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            0.0,
        ];
        let mut sets = vec![ChartSet::new()];
        for &v in &values {
            let mut c = ChartSet::new();
            for role in Role::ALL {
                c.merge(
                    ChartKey::new(role),
                    (0..50).map(|i| Sample::new(i as f64, if i % 2 == 0 { v } else { -v })),
                );
            }
            sets.push(c);
        }
        let bands = [
            None,
            Some(Band {
                center: f64::NAN,
                sigma: f64::INFINITY,
            }),
            Some(Band {
                center: 1e300,
                sigma: 1e300,
            }),
        ];
        for c in &sets {
            for &(since, now) in &[
                (0.0, 10.0),
                (f64::NAN, f64::NAN),
                (100.0, 0.0),
                (-1.0, f64::INFINITY),
            ] {
                for &baseline_loss in &bands {
                    for within in [0, 60, u64::MAX / 4] {
                        let sp = spec(within, &ALL);
                        let cx = VerifyContext {
                            charts: c,
                            since,
                            now,
                            baseline_loss,
                            findings_active: false,
                        };
                        let _ = evaluate(&sp, &cx);
                    }
                }
            }
        }
        assert!(matches!(
            evaluate(&spec(60, &[]), &ctx(&ChartSet::new(), 0.0, true)),
            VerifyStatus::Passed(_)
        ));
    }
}
