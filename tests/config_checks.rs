//! `[checks]` reaches the engine: a runbook's PromQL checks are asked with the configured
//! per-query timeout and concurrency (read from a config file through `Config::load`), against
//! a check runner that never answers and counts the queries in flight.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use babysitter::audit::AuditLog;
use babysitter::clock::{ManualClock, SharedClock};
use babysitter::config::Config;
use babysitter::engine::{Engine, ExecuteRequest, ExecuteResult, Handles};
use babysitter::notify::ConsolePager;
use babysitter::runbook::{CheckResult, CheckRunner};
use babysitter::sim::{SimCluster, SimRunSpec};
use babysitter::telemetry::Metrics;

/// Three PromQL checks, so the concurrency shows.
const THREE_CHECKS: &str = r#"---
id: three
title: Three questions
triggers:
  kinds: [stall]
priority: 100
checks:
  - id: a
    description: First question
    promql: 'q_a{run="$run"}'
    op: ">"
    threshold: 0
  - id: b
    description: Second question
    promql: 'q_b{run="$run"}'
    op: ">"
    threshold: 0
  - id: c
    description: Third question
    promql: 'q_c{run="$run"}'
    op: ">"
    threshold: 0
steps:
  - action: annotate
    note: asked
verify:
  within: 10m
  expect: [progress]
---
# Three questions

A runbook for the tests of `[checks]`.
"#;

/// A Prometheus that accepts every query and never answers; it counts queries in flight.
#[derive(Default)]
struct Silent {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    asked: AtomicUsize,
}

/// Counts a query out of flight when its future ends or is dropped (timed out).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl CheckRunner for Silent {
    async fn instant(&self, _promql: &str, _now: f64) -> Result<Option<f64>, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(Some(1.0))
    }
}

/// A dry run of `three` on run `run-a`, with the `[checks]` section `checks`; its results,
/// the wall time it took and the most queries in flight.
async fn dry_run(checks: &str) -> (Vec<CheckResult>, Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let rb_dir = dir.path().join("runbooks");
    std::fs::create_dir_all(&rb_dir).unwrap();
    std::fs::write(rb_dir.join("three.md"), THREE_CHECKS).unwrap();
    let file = dir.path().join("babysitter.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nrunbooks_dir = {:?}\n\n{checks}\n",
            dir.path().display().to_string(),
            rb_dir.display().to_string()
        ),
    )
    .unwrap();
    let mut cfg = Config::load(Some(&file)).expect("config loads");
    cfg.watches.push(common::watch("run-a"));

    let clock = ManualClock::new(common::ORIGIN);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(SimCluster::new(shared.clone(), 7));
    sim.add_run(SimRunSpec::new("run-a", common::ORIGIN - common::HISTORY))
        .unwrap();
    let audit = Arc::new(AuditLog::open(&cfg.audit_url()).await.unwrap());
    let runner = Arc::new(Silent::default());
    let handles = Handles {
        clock: shared,
        source: sim.clone(),
        actuator: sim,
        pager: ConsolePager::new(),
        audit,
        runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).unwrap()),
        checks: Some(runner.clone()),
    };
    let engine = Engine::new(Arc::new(cfg), handles, Arc::new(Metrics::new()));
    engine.start("test").await;
    let started = Instant::now();
    let res = engine
        .execute_runbook(ExecuteRequest {
            runbook: "three".into(),
            run: "run-a".into(),
            caller: "alice".into(),
            by: "alice".into(),
            reason: None,
            dry_run: true,
        })
        .await
        .expect("dry run");
    let took = started.elapsed();
    let ExecuteResult::DryRun { checks, .. } = res else {
        panic!("not a dry run: {res:?}")
    };
    assert_eq!(
        runner.asked.load(Ordering::SeqCst),
        3,
        "every check is asked"
    );
    assert_eq!(runner.in_flight.load(Ordering::SeqCst), 0, "no query left");
    (checks, took, runner.most.load(Ordering::SeqCst))
}

fn details(checks: &[CheckResult]) -> Vec<String> {
    checks
        .iter()
        .map(|c| c.detail.split(';').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_asks_with_the_configured_timeout_one_at_a_time() {
    let (checks, took, most) = dry_run("[checks]\ntimeout = \"300ms\"\nconcurrency = 1\n").await;
    assert_eq!(most, 1, "one query at a time");
    assert_eq!(
        details(&checks),
        ["Prometheus did not answer (no answer within 300ms)"; 3]
    );
    // One after the other: three timeouts, far below the default 5 s each.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_asks_side_by_side_up_to_the_configured_concurrency() {
    let (checks, took, most) = dry_run("[checks]\ntimeout = \"400ms\"\nconcurrency = 2\n").await;
    assert_eq!(most, 2, "two queries at a time, never three");
    assert_eq!(
        details(&checks),
        ["Prometheus did not answer (no answer within 400ms)"; 3]
    );
    // Two rounds of one timeout each.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_checks_section_the_defaults_hold() {
    // Every check at once (4 allowed), one 5 s timeout.
    let (checks, took, most) = dry_run("").await;
    assert_eq!(most, 3);
    assert_eq!(
        details(&checks),
        ["Prometheus did not answer (no answer within 5s)"; 3]
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
}
