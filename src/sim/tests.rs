//! Scenario tests of the simulator: dynamics, faults and how runs react to actions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::act::{ChangeOp, CheckpointSelector, ConfigChange};
use crate::charts::Role;
use crate::clock::{Clock, ScaledClock};
use crate::detect::Severity;

const T0: f64 = 1_800_000_000.0;
const H: f64 = 3600.0;

/// A clock tests move by hand.
struct ManualClock(Mutex<f64>);

impl ManualClock {
    fn set(&self, t: f64) {
        *self.0.lock().unwrap() = t;
    }
    fn advance(&self, secs: f64) {
        *self.0.lock().unwrap() += secs;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.0.lock().unwrap()
    }
}

fn cluster(seed: u64, specs: Vec<SimRunSpec>) -> (Arc<ManualClock>, SimCluster) {
    let clock = Arc::new(ManualClock(Mutex::new(T0)));
    let sim = SimCluster::new(clock.clone(), seed);
    for s in specs {
        sim.add_run(s).unwrap();
    }
    (clock, sim)
}

fn target(run: &str) -> Target {
    Target::Simulated { run: run.into() }
}

type Charts = BTreeMap<Role, Vec<Sample>>;

async fn poll(sim: &SimCluster, run: &str, since: Option<f64>, now: f64) -> Charts {
    let req = PollRequest {
        run: run.into(),
        target: target(run),
        since,
    };
    let mut out = sim.poll(&[req], now).await;
    let batch = out.pop().unwrap().unwrap();
    batch.into_iter().map(|(k, v)| (k.role, v)).collect()
}

/// Samples of one chart with `from <= t <= to`.
fn window(c: &Charts, role: Role, from: f64, to: f64) -> Vec<Sample> {
    c.get(&role)
        .map(|v| {
            v.iter()
                .copied()
                .filter(|s| s.t >= from && s.t <= to)
                .collect()
        })
        .unwrap_or_default()
}

fn values(c: &Charts, role: Role, from: f64, to: f64) -> Vec<f64> {
    window(c, role, from, to).iter().map(|s| s.v).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median of loss / loss_curve(step) over a window: 1.0 on a healthy run.
fn loss_ratio(c: &Charts, spec: &SimRunSpec, from: f64, to: f64) -> f64 {
    let loss = window(c, Role::Loss, from, to);
    let step = window(c, Role::Step, from, to);
    assert_eq!(loss.len(), step.len());
    median(
        loss.iter()
            .zip(&step)
            .map(|(l, s)| l.v / spec.loss_curve.at(s.v as u64))
            .collect(),
    )
}

async fn act(
    sim: &SimCluster,
    run: &str,
    action: Action,
    key: &str,
) -> Result<ActionOutcome, ActError> {
    sim.execute(&target(run), &action, key).await
}

fn restart(step: u64) -> Action {
    Action::RestartFromCheckpoint {
        checkpoint: CheckpointSelector::Step(step),
    }
}

fn lr_scale(f: f64) -> Action {
    Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Scale(f),
        }],
    }
}

#[tokio::test]
async fn healthy_run_loss_trends_down_with_heavy_tailed_noise() {
    let spec = SimRunSpec::new("a", T0 - 6.0 * H);
    let (_clock, sim) = cluster(1, vec![spec.clone()]);
    let c = poll(&sim, "a", None, T0).await;

    // Every chart, one sample per 15 s grid point over 6 h (both ends included).
    // One role per chart; compute_time comes once per rank under one role.
    assert_eq!(c.len(), CHARTS.len() + 1);
    let steps = &c[&Role::Step];
    assert_eq!(steps.len(), 1441);
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s.t, spec.start + k as f64 * 15.0);
    }
    assert!(steps.windows(2).all(|w| w[1].v >= w[0].v));
    assert_eq!(steps.last().unwrap().v, 10_800.0); // 6 h at 2 s/step

    let first = median(values(&c, Role::Loss, spec.start, spec.start + H));
    let last = median(values(&c, Role::Loss, T0 - H, T0));
    assert!(
        last < 0.85 * first,
        "loss should fall: first hour {first}, last hour {last}"
    );
    assert!((2.2..2.45).contains(&last), "{last}");

    // Residuals around the curve: ≈2% scale with heavy tails.
    let loss = &c[&Role::Loss];
    let res: Vec<f64> = loss
        .iter()
        .zip(steps)
        .map(|(l, s)| (l.v / spec.loss_curve.at(s.v as u64)).ln())
        .collect();
    let n = res.len() as f64;
    let mean = res.iter().sum::<f64>() / n;
    let var = res.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    let kurt = res.iter().map(|r| (r - mean).powi(4)).sum::<f64>() / n / var.powi(2);
    assert!(mean.abs() < 0.003, "{mean}");
    assert!((0.015..0.04).contains(&var.sqrt()), "sd {}", var.sqrt());
    assert!(kurt > 4.0, "heavy tails expected, kurtosis {kurt}");

    // Other charts in their realistic bands.
    let late = |r| values(&c, r, T0 - H, T0);
    assert!(late(Role::GradNorm).iter().all(|g| (0.2..1.2).contains(g)));
    assert!(late(Role::GpuUtil).iter().all(|u| (0.93..0.99).contains(u)));
    let tp = median(late(Role::Throughput));
    assert!((tp / (4_194_304.0 / 2.0) - 1.0).abs() < 0.01, "{tp}");
    assert!(
        late(Role::Throughput)
            .iter()
            .all(|t| (t / 2_097_152.0 - 1.0).abs() < 0.07)
    );
    assert!(late(Role::XidErrors).iter().all(|x| *x == 0.0));
    assert!(
        late(Role::CheckpointAge)
            .iter()
            .all(|a| (0.0..=600.0).contains(a))
    );
    let lr = late(Role::Lr);
    assert!(
        lr.windows(2).all(|w| w[1] <= w[0]),
        "cosine decay after warm-up"
    );
    assert!((lr[0] - spec.schedule_lr(9_000)).abs() < 1e-12);

    // Warm-up: lr rises during the first 2,000 steps.
    let early = values(&c, Role::Lr, spec.start, spec.start + 3000.0);
    assert!(early.windows(2).all(|w| w[1] >= w[0]) && early[0] < 1e-6);
}

#[tokio::test]
async fn samples_do_not_depend_on_poll_cadence() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::GpuXid {
        at: H + 500.0,
        errors: 4,
        every: 100.0,
        node_bound: false,
    });
    let mut series = Vec::new();
    for cadence in [7.0, 61.0] {
        let (clock, sim) = cluster(9, vec![spec.clone()]);
        let mut got = Charts::new();
        let mut since = None;
        let mut now = T0;
        let mut paused = false;
        let mut resumed = false;
        while now <= T0 + 2.0 * H {
            clock.set(now);
            // The same actions at the same times on both.
            if !paused && now >= T0 + 1000.0 {
                clock.set(T0 + 1000.0);
                act(&sim, "a", Action::Pause, "p").await.unwrap();
                clock.set(now);
                paused = true;
            }
            if !resumed && now >= T0 + 2000.0 {
                clock.set(T0 + 2000.0);
                act(&sim, "a", Action::Resume, "r").await.unwrap();
                clock.set(now);
                resumed = true;
            }
            let c = poll(&sim, "a", since, now).await;
            for (role, v) in c {
                if let Some(s) = v.last() {
                    since = Some(since.map_or(s.t, |x: f64| x.max(s.t)));
                }
                got.entry(role).or_default().extend(v);
            }
            now += cadence;
        }
        series.push(got);
    }
    let end = T0 + 2.0 * H - 61.0;
    let cut = |c: &Charts| -> Charts {
        c.iter()
            .map(|(r, v)| (*r, v.iter().copied().filter(|s| s.t <= end).collect()))
            .collect()
    };
    let (a, b) = (cut(&series[0]), cut(&series[1]));
    assert_eq!(a, b);
    assert_eq!(a[&Role::Step].len(), ((end - (T0 - H)) / 15.0) as usize + 1);
    assert_eq!(a[&Role::XidErrors].last().unwrap().v, 4.0);
}

#[tokio::test]
async fn pause_stops_progress_and_resume_restarts_it() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::GpuXid {
        at: H + 300.0, // due while paused: must wait for the resume
        errors: 1,
        every: 60.0,
        node_bound: false,
    });
    let (clock, sim) = cluster(2, vec![spec]);
    clock.set(T0 + 100.0);
    let out = act(&sim, "a", Action::Pause, "k1").await.unwrap();
    assert!(
        out.detail.contains("paused sim/a at step 1850"),
        "{}",
        out.detail
    );
    assert_eq!(sim.status("a").unwrap().phase, SimPhase::Paused);

    clock.set(T0 + 700.0);
    let c = poll(&sim, "a", Some(T0 + 100.0), T0 + 700.0).await;
    assert_eq!(
        c[&Role::Step].len(),
        40,
        "metrics are still scraped while paused"
    );
    assert!(
        values(&c, Role::Step, 0.0, f64::MAX)
            .iter()
            .all(|s| *s == 1850.0)
    );
    assert!(
        values(&c, Role::GpuUtil, 0.0, f64::MAX)
            .iter()
            .all(|u| *u < 0.05)
    );
    assert!(
        values(&c, Role::Throughput, 0.0, f64::MAX)
            .iter()
            .all(|t| *t == 0.0)
    );
    assert!(
        values(&c, Role::XidErrors, 0.0, f64::MAX)
            .iter()
            .all(|x| *x == 0.0)
    );
    let age = values(&c, Role::CheckpointAge, 0.0, f64::MAX);
    assert!(
        age.windows(2).all(|w| w[1] > w[0]),
        "checkpoint age keeps growing"
    );

    let out = act(&sim, "a", Action::Resume, "k2").await.unwrap();
    assert!(out.detail.contains("resumed"), "{}", out.detail);
    clock.set(T0 + 1300.0);
    let st = sim.status("a").unwrap();
    assert_eq!(st.phase, SimPhase::Running);
    assert_eq!(st.step, 1850 + 300);
    assert_eq!(
        st.xid_errors, 1,
        "the overdue fault fires once training resumes"
    );
    let c = poll(&sim, "a", Some(T0 + 700.0), T0 + 1300.0).await;
    assert_eq!(
        c[&Role::XidErrors][0].v,
        1.0,
        "fires at the first scrape after the resume"
    );
    assert!(
        values(&c, Role::GpuUtil, 0.0, f64::MAX)
            .iter()
            .all(|u| *u > 0.8)
    );

    // Resume when not paused is a harmless no-op.
    let out = act(&sim, "a", Action::Resume, "k3").await.unwrap();
    assert!(out.detail.contains("not paused"), "{}", out.detail);
}

#[tokio::test]
async fn restart_rolls_back_goes_dark_and_discards_later_checkpoints() {
    let (clock, sim) = cluster(3, vec![SimRunSpec::new("a", T0 - 3.0 * H)]);
    clock.set(T0 + 250.0); // step 5525
    let cps = sim.checkpoints(&target("a")).await.unwrap();
    assert_eq!(cps.len(), 18);
    assert_eq!(cps.first().unwrap().step, 300);
    assert_eq!(cps.last().unwrap().step, 5400);
    assert_eq!(cps.last().unwrap().t, T0);

    let err = act(&sim, "a", restart(5150), "r0").await.unwrap_err();
    assert!(matches!(err, ActError::NoCheckpoint(_)), "{err}");
    assert_eq!(
        sim.status("a").unwrap().restarts,
        0,
        "a failed restart changes nothing"
    );

    let out = act(&sim, "a", restart(5100), "r1").await.unwrap();
    assert!(
        out.detail.contains("from checkpoint at step 5100"),
        "{}",
        out.detail
    );
    assert!(
        out.detail.contains("425 steps rolled back"),
        "{}",
        out.detail
    );
    assert_eq!(out.facts["discarded_checkpoints"], 1);
    let st = sim.status("a").unwrap();
    assert_eq!(
        (st.phase, st.step, st.restarts, st.node),
        (SimPhase::Restarting, 5100, 1, 1)
    );
    let cps = sim.checkpoints(&target("a")).await.unwrap();
    assert_eq!(cps.last().unwrap().step, 5100);

    // Dark for restart_cost (120 s): no samples at all.
    clock.set(T0 + 600.0);
    let c = poll(&sim, "a", Some(T0 + 240.0), T0 + 600.0).await;
    let steps = &c[&Role::Step];
    assert_eq!(
        steps.first().unwrap().t,
        T0 + 375.0,
        "first scrape after T0+250+120"
    );
    for (role, v) in &c {
        assert!(
            v.iter().all(|s| s.t >= T0 + 370.0),
            "{role} sampled during restart"
        );
    }
    assert_eq!(steps.first().unwrap().v, 5102.0);
    assert_eq!(steps.last().unwrap().v, 5100.0 + 115.0);
    let restarts = values(&c, Role::Restarts, 0.0, f64::MAX);
    assert!(restarts.iter().all(|r| *r == 1.0));
    let spec = sim.spec("a").unwrap();
    let ratio = loss_ratio(&c, &spec, 0.0, f64::MAX);
    assert!(
        (ratio - 1.0).abs() < 0.02,
        "loss back on its curve: {ratio}"
    );

    // A new history: the next checkpoint is 5400 again, at a new time.
    clock.set(T0 + 1000.0);
    let cps = sim.checkpoints(&target("a")).await.unwrap();
    let last = cps.last().unwrap();
    assert_eq!(last.step, 5400);
    assert_eq!(last.t, T0 + 370.0 + 300.0 * 2.0);
}

#[tokio::test]
async fn loss_spike_recurs_without_lr_patch_and_recovers_with_half_lr() {
    let spec = SimRunSpec::new("a", T0 - 3.0 * H).with_fault(Fault::LossSpike {
        at: 3.0 * H + 300.0, // fires at T0+300, step 5550
        span_steps: 60,
    });
    let (clock, sim) = cluster(4, vec![spec.clone()]);

    clock.set(T0 + 900.0);
    let c = poll(&sim, "a", None, T0 + 900.0).await;
    assert!((loss_ratio(&c, &spec, T0 - 600.0, T0 + 300.0) - 1.0).abs() < 0.02);
    let spiked = loss_ratio(&c, &spec, T0 + 400.0, T0 + 900.0);
    assert!(
        (2.8..4.0).contains(&spiked),
        "loss ≈3× after bad data at high lr: {spiked}"
    );
    assert!(median(values(&c, Role::GradNorm, T0 + 400.0, T0 + 900.0)) > 15.0);
    let st = sim.status("a").unwrap();
    assert!(
        st.active_faults
            .iter()
            .any(|f| f.contains("divergence since step 5550")),
        "{:?}",
        st.active_faults
    );

    // Checkpoints saved after the onset hold diverged weights.
    let cps = sim.checkpoints(&target("a")).await.unwrap();
    assert_eq!(cps.last().unwrap().step, 5700);
    let before_onset = 5400;

    // Restart before the onset, lr unchanged: the bad data spikes the run again.
    act(&sim, "a", restart(before_onset), "r1").await.unwrap();
    clock.set(T0 + 900.0 + 120.0 + 900.0);
    let c = poll(&sim, "a", Some(T0 + 900.0), clock.now()).await;
    let from = clock.now() - 300.0;
    let again = loss_ratio(&c, &spec, from, clock.now());
    assert!(again > 2.5, "spikes again without an lr patch: {again}");

    // Halve the lr (pending until the restart), then restart before the onset: it recovers.
    let out = act(&sim, "a", lr_scale(0.5), "p1").await.unwrap();
    assert_eq!(
        out.detail,
        "lr 3.00e-4 → 1.50e-4, takes effect at the next restart"
    );
    let st = sim.status("a").unwrap();
    assert_eq!((st.lr_scale, st.pending_lr_scale), (1.0, Some(0.5)));
    act(&sim, "a", restart(before_onset), "r2").await.unwrap();
    let st = sim.status("a").unwrap();
    assert_eq!((st.lr_scale, st.pending_lr_scale), (0.5, None));
    let t_restart = clock.now();
    clock.advance(120.0 + 1200.0); // through the region and beyond
    let c = poll(&sim, "a", Some(t_restart), clock.now()).await;
    let ratio = loss_ratio(&c, &spec, t_restart, clock.now());
    assert!((ratio - 1.0).abs() < 0.03, "no spike at half lr: {ratio}");
    let peak = c[&Role::Loss]
        .iter()
        .zip(&c[&Role::Step])
        .map(|(l, s)| l.v / spec.loss_curve.at(s.v as u64))
        .fold(0.0, f64::max);
    assert!(peak < 1.5, "no divergence at all: peak ratio {peak}");
    assert!(median(values(&c, Role::GradNorm, t_restart, clock.now())) < 1.0);
    let lr = values(&c, Role::Lr, t_restart, clock.now());
    assert!(
        lr.iter().all(|x| *x < spec.lr_safe),
        "effective lr halved: {}",
        lr[0]
    );
    assert!(
        sim.status("a").unwrap().step > 5610,
        "trained past the bad data"
    );
}

#[tokio::test]
async fn restoring_a_checkpoint_saved_after_divergence_stays_diverged() {
    let spec = SimRunSpec::new("a", T0 - 3.0 * H).with_fault(Fault::LossSpike {
        at: 3.0 * H + 300.0,
        span_steps: 60,
    });
    let (clock, sim) = cluster(4, vec![spec.clone()]);
    clock.set(T0 + 900.0);
    let out = act(
        &sim,
        "a",
        Action::RestartFromCheckpoint {
            checkpoint: CheckpointSelector::BeforeOnset,
        },
        "r",
    )
    .await
    .unwrap();
    assert!(out.detail.contains("step 5700"), "{}", out.detail);
    assert!(
        out.detail.contains("resolved by the engine"),
        "{}",
        out.detail
    );
    clock.advance(600.0);
    let c = poll(&sim, "a", Some(T0 + 900.0), clock.now()).await;
    assert!(loss_ratio(&c, &spec, 0.0, f64::MAX) > 2.5);
}

#[tokio::test]
async fn hang_keeps_gpus_busy_with_stale_gauges_until_a_restart() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::Hang {
        at: H + 300.0,
        survives_restarts: 0,
    });
    let (clock, sim) = cluster(5, vec![spec]);
    clock.set(T0 + 1200.0);
    let c = poll(&sim, "a", Some(T0), clock.now()).await;
    let hung = |r| values(&c, r, T0 + 300.0, T0 + 1200.0);
    let steps = hung(Role::Step);
    assert_eq!(steps.len(), 61, "the exporter keeps serving while hung");
    assert!(steps.iter().all(|s| *s == 1950.0), "{steps:?}");
    assert!(
        hung(Role::GpuUtil).iter().all(|u| *u >= 0.97),
        "NCCL spin keeps GPUs busy"
    );
    let loss_before = values(&c, Role::Loss, T0 + 285.0, T0 + 285.0)[0];
    assert!(
        hung(Role::Loss).iter().all(|l| *l == loss_before),
        "stale loss gauge"
    );
    let tp_before = values(&c, Role::Throughput, T0 + 285.0, T0 + 285.0)[0];
    assert!(hung(Role::Throughput).iter().all(|t| *t == tp_before));
    assert_eq!(sim.status("a").unwrap().phase, SimPhase::Hung);
    let cps = sim.checkpoints(&target("a")).await.unwrap();
    assert_eq!(cps.last().unwrap().step, 1800, "no checkpoint while hung");

    act(&sim, "a", restart(1800), "r").await.unwrap();
    clock.advance(120.0 + 600.0);
    let st = sim.status("a").unwrap();
    assert_eq!(st.phase, SimPhase::Running);
    assert_eq!(st.step, 1800 + 300);
    assert!(st.active_faults.is_empty(), "{:?}", st.active_faults);
}

#[tokio::test]
async fn a_hang_that_survives_one_restart_needs_two() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::Hang {
        at: H + 300.0,
        survives_restarts: 1,
    });
    let (clock, sim) = cluster(6, vec![spec]);
    clock.set(T0 + 600.0);
    assert_eq!(sim.status("a").unwrap().phase, SimPhase::Hung);

    act(&sim, "a", restart(1800), "r1").await.unwrap();
    clock.advance(120.0 + 30.0);
    let st = sim.status("a").unwrap();
    assert_eq!((st.phase, st.step), (SimPhase::Running, 1815));
    clock.advance(300.0);
    let st = sim.status("a").unwrap();
    assert_eq!(
        st.phase,
        SimPhase::Hung,
        "hangs again about 60 s into training"
    );
    assert!((1825..=1840).contains(&st.step), "{}", st.step);
    let hung_at = st.step;
    clock.advance(300.0);
    assert_eq!(sim.status("a").unwrap().step, hung_at);

    act(&sim, "a", restart(1800), "r2").await.unwrap();
    clock.advance(120.0 + 900.0);
    let st = sim.status("a").unwrap();
    assert_eq!(
        (st.phase, st.step, st.restarts),
        (SimPhase::Running, 2250, 2)
    );
}

#[tokio::test]
async fn gpu_xid_counts_up_slows_steps_and_node_bound_is_cleared_by_restart() {
    let spec = SimRunSpec::new("a", T0 - H)
        .with_fault(Fault::GpuXid {
            at: H + 300.0,
            errors: 3,
            every: 60.0,
            node_bound: true,
        })
        .with_fault(Fault::GpuXid {
            at: H + 300.0,
            errors: 4,
            every: 300.0,
            node_bound: false,
        });
    let (clock, sim) = cluster(7, vec![spec]);
    clock.set(T0 + 900.0);
    let c = poll(&sim, "a", Some(T0), clock.now()).await;
    let xid = values(&c, Role::XidErrors, 0.0, f64::MAX);
    assert!(xid.windows(2).all(|w| w[1] >= w[0]), "cumulative");
    // Node-bound: 3 errors at +0, +60, +120 s; the other: +0, +300, +600 s (one more to come).
    assert_eq!(
        values(&c, Role::XidErrors, T0 + 300.0, T0 + 300.0),
        vec![2.0]
    );
    assert_eq!(
        values(&c, Role::XidErrors, T0 + 435.0, T0 + 435.0),
        vec![4.0]
    );
    assert_eq!(*xid.last().unwrap(), 6.0);
    let before = median(values(&c, Role::StepTime, T0, T0 + 285.0));
    let during = median(values(&c, Role::StepTime, T0 + 300.0, T0 + 900.0));
    assert!((during / before - 1.10).abs() < 0.02, "{before} → {during}");

    act(&sim, "a", restart(2100), "r").await.unwrap();
    let st = sim.status("a").unwrap();
    assert_eq!(st.node, 1);
    assert_eq!(
        st.active_faults.len(),
        1,
        "only the non-node-bound fault remains: {:?}",
        st.active_faults
    );
    clock.advance(120.0 + 1200.0);
    let c = poll(&sim, "a", Some(T0 + 900.0), clock.now()).await;
    let xid = values(&c, Role::XidErrors, 0.0, f64::MAX);
    assert_eq!(
        *xid.last().unwrap(),
        7.0,
        "the last of the non-node-bound errors, on the new node too"
    );
    let late = median(values(&c, Role::StepTime, clock.now() - 300.0, clock.now()));
    assert!(
        (late / before - 1.0).abs() < 0.02,
        "healthy again on the new node: {late}"
    );
}

#[tokio::test]
async fn nan_stays_until_restart_and_poisons_later_checkpoints() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::Nan {
        at: H + 300.0, // step 1950
        steps: 20,
    });
    let (clock, sim) = cluster(8, vec![spec]);
    clock.set(T0 + 1500.0);
    let c = poll(&sim, "a", Some(T0), clock.now()).await;
    assert!(
        values(&c, Role::Loss, T0, T0 + 285.0)
            .iter()
            .all(|l| l.is_finite())
    );
    assert!(
        values(&c, Role::Loss, T0 + 300.0, clock.now())
            .iter()
            .all(|l| l.is_nan())
    );
    assert!(
        values(&c, Role::GradNorm, T0 + 300.0, clock.now())
            .iter()
            .all(|l| l.is_nan())
    );
    assert!(
        sim.status("a").unwrap().step > 2400,
        "the step counter keeps going"
    );

    // Checkpoint 2100 was saved well after the onset: restoring it keeps the NaN.
    act(&sim, "a", restart(2100), "r1").await.unwrap();
    clock.advance(300.0);
    let c = poll(&sim, "a", Some(clock.now() - 150.0), clock.now()).await;
    assert!(
        values(&c, Role::Loss, 0.0, f64::MAX)
            .iter()
            .all(|l| l.is_nan())
    );

    act(&sim, "a", restart(1800), "r2").await.unwrap();
    clock.advance(300.0);
    let c = poll(&sim, "a", Some(clock.now() - 150.0), clock.now()).await;
    let loss = values(&c, Role::Loss, 0.0, f64::MAX);
    assert!(
        !loss.is_empty() && loss.iter().all(|l| l.is_finite()),
        "{loss:?}"
    );
}

#[tokio::test]
async fn throughput_drop_lasts_its_duration() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::ThroughputDrop {
        at: H + 300.0,
        factor: 0.5,
        duration: 600.0,
    });
    let (clock, sim) = cluster(10, vec![spec]);
    clock.set(T0 + 1800.0);
    let c = poll(&sim, "a", Some(T0), clock.now()).await;
    let base = median(values(&c, Role::Throughput, T0, T0 + 285.0));
    let low = median(values(&c, Role::Throughput, T0 + 300.0, T0 + 885.0));
    let after = median(values(&c, Role::Throughput, T0 + 900.0, T0 + 1800.0));
    assert!((low / base - 0.5).abs() < 0.02, "{base} → {low}");
    assert!((after / base - 1.0).abs() < 0.02, "{base} → {after}");
    // The GPUs stay busy (an interconnect or clock slowdown), unlike a GPU utilisation drop.
    assert!(median(values(&c, Role::GpuUtil, T0 + 300.0, T0 + 885.0)) > 0.9);
    // Step rate halves too: 300 s of progress at half speed.
    let s = |t| values(&c, Role::Step, t, t)[0];
    assert_eq!(s(T0 + 900.0) - s(T0 + 300.0), 150.0);
}

#[tokio::test]
async fn execute_is_idempotent_per_key() {
    let (clock, sim) = cluster(11, vec![SimRunSpec::new("a", T0 - H)]);
    let first = act(&sim, "a", Action::Pause, "k1").await.unwrap();
    clock.advance(100.0);
    act(&sim, "a", Action::Resume, "k2").await.unwrap();
    clock.advance(100.0);
    let again = act(&sim, "a", Action::Pause, "k1").await.unwrap();
    assert_eq!(first, again, "the same key returns the first outcome");
    assert_eq!(
        sim.status("a").unwrap().phase,
        SimPhase::Running,
        "and does nothing more"
    );

    let err = act(&sim, "a", Action::Resume, "k1").await.unwrap_err();
    assert!(
        matches!(err, ActError::Refused(ref m) if m.contains("k1")),
        "{err}"
    );

    // Errors are replayed too.
    let e1 = act(&sim, "a", restart(7), "k3").await.unwrap_err();
    let e2 = act(&sim, "a", restart(7), "k3").await.unwrap_err();
    assert_eq!(e1.to_string(), e2.to_string());

    // Restart idempotency: one restart, even if asked twice.
    act(&sim, "a", restart(1800), "k4").await.unwrap();
    act(&sim, "a", restart(1800), "k4").await.unwrap();
    assert_eq!(sim.status("a").unwrap().restarts, 1);
}

#[tokio::test]
async fn config_patches_validate_and_refuse_unknown_keys() {
    let (_clock, sim) = cluster(12, vec![SimRunSpec::new("a", T0 - 3.0 * H)]);
    let bad = Action::PatchConfig {
        changes: vec![
            ConfigChange {
                key: "lr".into(),
                op: ChangeOp::Scale(0.5),
            },
            ConfigChange {
                key: "batch_size".into(),
                op: ChangeOp::Set(serde_json::json!(512)),
            },
        ],
    };
    let err = act(&sim, "a", bad, "p1").await.unwrap_err();
    assert!(
        matches!(err, ActError::Refused(ref m) if m.contains("`batch_size`")),
        "{err}"
    );
    assert_eq!(
        sim.status("a").unwrap().pending_lr_scale,
        None,
        "nothing applied"
    );

    let set = Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Set(serde_json::json!(1.5e-4)),
        }],
    };
    let out = act(&sim, "a", set, "p2").await.unwrap();
    assert_eq!(
        out.detail,
        "lr 3.00e-4 → 1.50e-4, takes effect at the next restart"
    );
    let st = sim.status("a").unwrap();
    assert!((st.lr - 2.9988e-4).abs() < 1e-7, "{}", st.lr);
    assert_eq!(st.lr_scale, 1.0, "not in force before a restart");
    let pending = st.pending_lr_scale.unwrap();
    assert!((pending * sim.spec("a").unwrap().schedule_lr(st.step) - 1.5e-4).abs() < 1e-12);

    let nonsense = Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Set(serde_json::json!("fast")),
        }],
    };
    assert!(matches!(
        act(&sim, "a", nonsense, "p3").await,
        Err(ActError::Refused(_))
    ));

    let page = Action::Page {
        severity: Severity::Critical,
        summary: "x".into(),
    };
    assert!(
        matches!(act(&sim, "a", page, "p4").await, Err(ActError::Refused(m)) if m.contains("paging"))
    );
    let k8s = Target::Kubernetes {
        api_version: "batch/v1".into(),
        workload_kind: "Job".into(),
        namespace: "ml".into(),
        name: "a".into(),
    };
    assert!(matches!(
        sim.execute(&k8s, &Action::Pause, "p5").await,
        Err(ActError::UnknownTarget(_))
    ));
    assert!(matches!(
        act(&sim, "nope", Action::Pause, "p6").await,
        Err(ActError::UnknownTarget(_))
    ));
}

#[tokio::test]
async fn diagnostics_and_annotations() {
    let spec = SimRunSpec::new("a", T0 - H).with_fault(Fault::Hang {
        at: H + 60.0,
        survives_restarts: 0,
    });
    let (clock, sim) = cluster(13, vec![spec]);
    clock.set(T0 + 300.0);
    act(
        &sim,
        "a",
        Action::Annotate {
            note: "looking into it".into(),
        },
        "a1",
    )
    .await
    .unwrap();
    let out = act(&sim, "a", Action::CaptureDiagnostics, "d1")
        .await
        .unwrap();
    assert_eq!(out.facts["phase"], "hung");
    assert_eq!(out.facts["step"], 1830);
    assert_eq!(out.facts["node"], 0);
    assert_eq!(out.facts["last_checkpoint"]["step"], 1800);
    let events = out.facts["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("hung at step 1830")
    );
    assert!(
        events[1]["message"]
            .as_str()
            .unwrap()
            .contains("looking into it")
    );
    assert_eq!(out.facts["active_faults"].as_array().unwrap().len(), 1);
    let st = sim.status("a").unwrap();
    assert_eq!(st.notes.len(), 1);
    assert_eq!(st.notes[0].note, "looking into it");
}

#[tokio::test]
async fn deterministic_for_a_seed() {
    let spec = SimRunSpec::new("a", T0 - H);
    let run = |seed| {
        let spec = spec.clone();
        async move {
            let (_c, sim) = cluster(seed, vec![spec]);
            poll(&sim, "a", None, T0).await
        }
    };
    let (a, b, c) = (run(21).await, run(21).await, run(22).await);
    assert_eq!(a, b);
    assert_ne!(a[&Role::Loss], c[&Role::Loss]);
    assert_eq!(
        a[&Role::Step],
        c[&Role::Step],
        "the seed changes noise, not dynamics"
    );
}

#[tokio::test]
async fn poll_boundaries_and_unknown_runs() {
    let (_clock, sim) = cluster(
        14,
        vec![
            SimRunSpec::new("a", T0 - 60.0),
            SimRunSpec::new("later", T0 + 60.0),
        ],
    );
    let reqs = [
        PollRequest {
            run: "a".into(),
            target: target("a"),
            since: Some(T0 - 30.0),
        },
        PollRequest {
            run: "later".into(),
            target: target("later"),
            since: None,
        },
        PollRequest {
            run: "x".into(),
            target: target("x"),
            since: None,
        },
    ];
    let out = sim.poll(&reqs, T0).await;
    let a = out[0].as_ref().unwrap();
    let ts: Vec<f64> = a[0].1.iter().map(|s| s.t).collect();
    assert_eq!(ts, vec![T0 - 15.0, T0], "t > since and t <= now");
    assert!(out[1].as_ref().unwrap().is_empty(), "not started yet");
    // Never ahead of the clock, even if asked (a far-future `now` must not simulate years).
    let ahead = sim.poll(&reqs[..1], T0 + 1e12).await;
    let ts: Vec<f64> = ahead[0].as_ref().unwrap()[0]
        .1
        .iter()
        .map(|s| s.t)
        .collect();
    assert_eq!(ts, vec![T0 - 15.0, T0]);
    assert_eq!(out[2], Err(SourceError::UnknownRun("x".into())));
    assert!(matches!(
        sim.add_run(SimRunSpec::new("a", T0)),
        Err(SimError::DuplicateRun(_))
    ));
}

#[tokio::test]
async fn a_completed_run_stops_publishing() {
    let mut spec = SimRunSpec::new("a", T0 - 1000.0);
    spec.total_steps = 600;
    spec.warmup_steps = 50;
    let (clock, sim) = cluster(15, vec![spec]);
    clock.set(T0 + 1000.0);
    let c = poll(&sim, "a", None, clock.now()).await;
    let steps = &c[&Role::Step];
    assert_eq!(
        steps.last().unwrap().t,
        T0 + 185.0,
        "last scrape before step 600 at T0+200"
    );
    let st = sim.status("a").unwrap();
    assert_eq!((st.phase, st.step), (SimPhase::Completed, 600));
    assert_eq!(st.last_checkpoint.map(|c| c.step), Some(600));
    assert!(matches!(
        act(&sim, "a", Action::Pause, "p").await,
        Err(ActError::Refused(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn runs_on_a_scaled_clock() {
    let clock = Arc::new(ScaledClock::new(T0, 60.0));
    let (sim, _) = crate::demo::scenario(clock.clone(), T0, 99).unwrap();
    assert_eq!(sim.runs().len(), 3);
    tokio::time::advance(std::time::Duration::from_secs(60)).await; // one simulated hour
    let now = clock.now();
    assert!((now - (T0 + H)).abs() < 1.0);
    let c = poll(&sim, "run-a", Some(T0), now).await;
    assert_eq!(c[&Role::Step].len(), 240);
    let spec = sim.spec("run-a").unwrap();
    assert!(
        loss_ratio(&c, &spec, T0 + 600.0, now) > 2.5,
        "the demo's spike fires"
    );
    let st = sim.status("run-b").unwrap();
    assert_eq!(st.phase, SimPhase::Hung);
}

// ---- Faults for every finding kind: the chart shapes they produce. ----

/// A run started 2 h before T0 with `fault` due 1 h in; polled up to T0.
async fn faulted(fault: Fault) -> (SimRunSpec, Arc<ManualClock>, SimCluster, Charts) {
    let spec = SimRunSpec::new("f", T0 - 2.0 * H).with_fault(fault);
    let (clock, sim) = cluster(7, vec![spec.clone()]);
    let c = poll(&sim, "f", None, T0).await;
    (spec, clock, sim, c)
}

/// Onset time of the faults below (1 h into the run).
const ON: f64 = T0 - H;

#[tokio::test]
async fn loss_divergence_rises_steadily_and_needs_a_lower_lr_from_before_onset() {
    let (spec, clock, sim, c) = faulted(Fault::LossDivergence { at: H }).await;
    let before = loss_ratio(&c, &spec, ON - 1800.0, ON);
    let early = loss_ratio(&c, &spec, ON + 300.0, ON + 900.0);
    let late = loss_ratio(&c, &spec, T0 - 600.0, T0);
    assert!((0.97..1.03).contains(&before), "{before}");
    assert!(early < late && late > 1.5, "{early} {late}");
    let g0 = median(values(&c, Role::GradNorm, ON - 1800.0, ON));
    let g1 = median(values(&c, Role::GradNorm, ON + 60.0, T0));
    assert!(g1 > 3.0 * g0, "{g0} {g1}");
    // The checkpoint before onset with lr × 0.5 cures it.
    let onset_step = values(&c, Role::Step, ON, ON + 15.0)[0] as u64;
    let ckpt = onset_step / 300 * 300;
    act(&sim, "f", lr_scale(0.5), "k1").await.unwrap();
    act(&sim, "f", restart(ckpt), "k2").await.unwrap();
    clock.advance(H);
    let c = poll(&sim, "f", Some(T0), T0 + H).await;
    let after = loss_ratio(&c, &spec, T0 + 1800.0, T0 + H);
    assert!(after < 1.05, "{after}");
}

#[tokio::test]
async fn grad_explosion_hits_grad_norm_only_and_ends_by_itself() {
    let (spec, _clock, _sim, c) = faulted(Fault::GradExplosion { at: H, steps: 150 }).await;
    let g0 = median(values(&c, Role::GradNorm, ON - 1800.0, ON));
    let burst = median(values(&c, Role::GradNorm, ON + 15.0, ON + 240.0));
    let after = median(values(&c, Role::GradNorm, ON + 600.0, T0));
    assert!(burst > 100.0 * g0 * 0.5, "{g0} {burst}");
    assert!(after < 2.0 * g0, "{g0} {after}");
    let l = loss_ratio(&c, &spec, ON + 15.0, ON + 240.0);
    assert!((0.95..1.05).contains(&l), "{l}");
}

#[tokio::test]
async fn loss_scale_collapses_to_one_with_skipped_steps_until_a_restart_with_lower_lr() {
    let (_spec, clock, sim, c) = faulted(Fault::LossScaleCollapse { at: H }).await;
    assert_eq!(
        values(&c, Role::LossScale, ON - 600.0, ON - 15.0),
        vec![65_536.0; 40]
    );
    let scale = values(&c, Role::LossScale, ON + 300.0, T0);
    assert!(scale.iter().all(|&s| s == 1.0), "{scale:?}");
    let skipped = values(&c, Role::SkippedSteps, ON - 15.0, T0);
    assert!(skipped.last().unwrap() - skipped[0] > 2000.0, "{skipped:?}");
    act(&sim, "f", lr_scale(0.5), "k1").await.unwrap();
    let step = values(&c, Role::Step, T0 - 15.0, T0)[0] as u64;
    act(&sim, "f", restart(step / 300 * 300), "k2")
        .await
        .unwrap();
    clock.advance(H);
    let c = poll(&sim, "f", Some(T0), T0 + H).await;
    assert_eq!(
        *values(&c, Role::LossScale, T0 + 600.0, T0 + H)
            .last()
            .unwrap(),
        65_536.0
    );
}

#[tokio::test]
async fn loss_plateau_stops_improving_while_eval_regression_diverges_from_train_loss() {
    let (_spec, _c0, _s0, c) = faulted(Fault::LossPlateau { at: H }).await;
    let at_onset = median(values(&c, Role::Loss, ON, ON + 300.0));
    let end = median(values(&c, Role::Loss, T0 - 300.0, T0));
    assert!((end / at_onset - 1.0).abs() < 0.01, "{at_onset} {end}");

    let (_spec, _c1, _s1, c) = faulted(Fault::EvalRegression { at: H }).await;
    let eval = values(&c, Role::EvalLoss, ON - 1800.0, T0);
    let best = eval.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        *eval.last().unwrap() > 1.15 * best,
        "{best} {:?}",
        eval.last()
    );
    // Between evaluations the gauge holds its value (20 scrapes).
    let flat = values(&c, Role::EvalLoss, ON - 1200.0, ON - 1200.0 + 14.0 * 15.0);
    assert!(
        flat.windows(2).filter(|w| w[0] != w[1]).count() <= 1,
        "{flat:?}"
    );
    let l0 = median(values(&c, Role::Loss, ON, ON + 600.0));
    let l1 = median(values(&c, Role::Loss, T0 - 600.0, T0));
    assert!(l1 < l0, "train loss keeps falling: {l0} {l1}");
}

#[tokio::test]
async fn lr_anomaly_jumps_off_the_schedule() {
    let (spec, _clock, _sim, c) = faulted(Fault::LrAnomaly {
        at: H,
        factor: 10.0,
    })
    .await;
    let lr = window(&c, Role::Lr, ON - 15.0, ON + 15.0);
    let steps = window(&c, Role::Step, ON - 15.0, ON + 15.0);
    assert!((lr[0].v - spec.schedule_lr(steps[0].v as u64)).abs() < 1e-12);
    assert!((lr[2].v / spec.schedule_lr(steps[2].v as u64) - 10.0).abs() < 1e-9);
}

#[tokio::test]
async fn metrics_absent_leaves_a_gap_while_training_goes_on() {
    let (_spec, _clock, _sim, c) = faulted(Fault::MetricsAbsent {
        at: H,
        duration: 1200.0,
    })
    .await;
    assert!(window(&c, Role::Step, ON, ON + 1199.0).is_empty());
    let before = values(&c, Role::Step, ON - 15.0, ON - 15.0)[0];
    let after = values(&c, Role::Step, ON + 1200.0, ON + 1200.0)[0];
    assert!((after - before - 607.0).abs() < 5.0, "{before} {after}");
}

#[tokio::test]
async fn straggler_shows_in_one_ranks_compute_time_and_everyone_s_step_time() {
    let spec = SimRunSpec::new("f", T0 - 2.0 * H).with_fault(Fault::Straggler {
        at: H,
        rank: 2,
        factor: 1.8,
    });
    let (_clock, sim) = cluster(7, vec![spec.clone()]);
    let req = PollRequest {
        run: "f".into(),
        target: target("f"),
        since: Some(T0 - 600.0),
    };
    let batch = sim.poll(&[req], T0).await.pop().unwrap().unwrap();
    let rank = |r: &str| {
        let key = ChartKey::new(Role::ComputeTime).with_label("rank", r);
        median(
            batch
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s.iter().map(|x| x.v).collect())
                .unwrap_or_default(),
        )
    };
    assert!((rank("0") - 1.7).abs() < 0.05, "{}", rank("0"));
    assert!((rank("2") / rank("0") - 1.8).abs() < 0.05);
    let step_time = batch
        .iter()
        .find(|(k, _)| k.role == Role::StepTime)
        .map(|(_, s)| median(s.iter().map(|x| x.v).collect()))
        .unwrap();
    assert!(
        (step_time - 2.0 * (1.0 + 0.85 * 0.8)).abs() < 0.1,
        "{step_time}"
    );
}

#[tokio::test]
async fn gpu_util_drop_and_dataloader_stall_starve_the_gpus() {
    let (_spec, _c0, _s0, c) = faulted(Fault::GpuUtilDrop {
        at: H,
        util: 0.4,
        duration: 7200.0,
    })
    .await;
    let u = median(values(&c, Role::GpuUtil, ON + 60.0, T0));
    assert!((0.37..0.42).contains(&u), "{u}");

    let (_spec, clock, sim, c) = faulted(Fault::DataloaderStall {
        at: H,
        wait: 0.6,
        duration: 7.0 * H,
    })
    .await;
    assert!((median(values(&c, Role::DataWait, ON - 600.0, ON - 15.0)) - 0.02).abs() < 1e-9);
    assert!((median(values(&c, Role::DataWait, ON + 60.0, T0)) - 0.6).abs() < 1e-9);
    let st = median(values(&c, Role::StepTime, ON + 60.0, T0));
    assert!((st - 2.0 * 0.98 / 0.4).abs() < 0.1, "{st}");
    // Doubling the workers (at a restart) halves the wait.
    let workers = Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "data.num_workers".into(),
            op: ChangeOp::Scale(2.0),
        }],
    };
    act(&sim, "f", workers, "k1").await.unwrap();
    let step = values(&c, Role::Step, T0 - 15.0, T0)[0] as u64;
    act(&sim, "f", restart(step / 300 * 300), "k2")
        .await
        .unwrap();
    clock.advance(H);
    let c = poll(&sim, "f", Some(T0), T0 + H).await;
    assert!((median(values(&c, Role::DataWait, T0 + 600.0, T0 + H)) - 0.3).abs() < 1e-9);
}

#[tokio::test]
async fn crash_loop_restarts_repeatedly_without_progress_and_a_pause_stops_it() {
    let (_spec, clock, sim, c) = faulted(Fault::CrashLoop {
        at: H,
        crashes: 100,
    })
    .await;
    let restarts = values(&c, Role::Restarts, ON, T0);
    let n = restarts.last().unwrap() - restarts[0];
    // A cycle is 90 s of training plus 120 s of restart: ≈17 in an hour.
    assert!((15.0..=18.0).contains(&n), "{n}");
    let steps = values(&c, Role::Step, ON + 600.0, T0);
    let max = steps.iter().copied().fold(0.0, f64::max);
    let min = steps.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(max - min < 400.0, "no real progress: {min}..{max}");
    act(&sim, "f", Action::Pause, "k1").await.unwrap();
    clock.advance(H);
    let c = poll(&sim, "f", Some(T0), T0 + H).await;
    let r = values(&c, Role::Restarts, T0, T0 + H);
    assert_eq!(r.first(), r.last());
}

#[tokio::test]
async fn checkpoint_stale_lets_checkpoint_age_climb_until_a_restart() {
    let (_spec, _clock, sim, c) = faulted(Fault::CheckpointStale { at: H }).await;
    let age = values(&c, Role::CheckpointAge, ON - 1800.0, ON);
    assert!(age.iter().all(|&a| a <= 615.0), "{age:?}");
    let end = *values(&c, Role::CheckpointAge, T0, T0).first().unwrap();
    assert!(end > 3000.0, "{end}");
    let status = sim.status("f").unwrap();
    assert!(
        status
            .active_faults
            .iter()
            .any(|f| f == "checkpoint saves failing"),
        "{:?}",
        status.active_faults
    );
}
