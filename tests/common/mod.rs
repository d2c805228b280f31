//! Test harness: the real engine on the simulator, a SQLite audit log in a temp dir, a
//! recording console pager, and a manual clock stepped one poll at a time.
#![allow(dead_code)]

pub mod services;

use std::sync::Arc;

use babysitter::act::Target;
use babysitter::audit::{AuditLog, Entry, EntryKind, Filter};
use babysitter::clock::{ManualClock, ScaledClock, SharedClock};
use babysitter::config::{ApiRole, ApiToken, Config, WatchConfig};
use babysitter::engine::{Engine, Handles, View};
use babysitter::incident::Incident;
use babysitter::notify::ConsolePager;
use babysitter::policy::Autonomy;
use babysitter::sim::{Fault, SimCluster, SimRunSpec};
use babysitter::sources::MetricsSource;
use babysitter::telemetry::Metrics;

pub const ORIGIN: f64 = 1_700_000_000.0;
/// Bearer tokens the harness configures: `alice` is an operator, `vera` a viewer.
pub const OPERATOR_TOKEN: &str = "alice-secret-token";
pub const VIEWER_TOKEN: &str = "vera-secret-token";
pub const HISTORY: f64 = 3.0 * 3600.0;

pub struct Harness {
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub sim: Arc<SimCluster>,
    pub pager: Arc<ConsolePager>,
    pub audit: Arc<AuditLog>,
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    /// Set when the engine runs on tokio's paused clock instead of the manual one.
    pub paused: Option<ScaledClock>,
}

pub fn watch(run: &str) -> WatchConfig {
    WatchConfig {
        run: run.to_string(),
        target: Target::Simulated {
            run: run.to_string(),
        },
        autonomy: Autonomy::Act,
        route: "ml-oncall".into(),
        runbooks: Vec::new(),
        detectors: None,
        profile: None,
        charts: Default::default(),
    }
}

impl Harness {
    /// Runs named `runs` (each with faults, times relative to the harness origin) on a sim.
    pub async fn new(runs: Vec<(&str, Vec<Fault>)>, tweak: impl FnOnce(&mut Config)) -> Harness {
        let clock = ManualClock::new(ORIGIN);
        let shared: SharedClock = clock.clone();
        let sim = Arc::new(SimCluster::new(shared.clone(), 7));
        let mut cfg = Config::default();
        for (name, faults) in runs {
            let mut spec = SimRunSpec::new(name, ORIGIN - HISTORY);
            spec.faults = faults;
            sim.add_run(spec).unwrap();
            cfg.watches.push(watch(name));
        }
        Self::with_parts(cfg, shared, clock, sim.clone(), sim, tweak).await
    }

    pub async fn with_parts(
        mut cfg: Config,
        shared: SharedClock,
        clock: Arc<ManualClock>,
        sim: Arc<SimCluster>,
        source: Arc<dyn MetricsSource>,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        cfg.api.tokens = vec![
            ApiToken::for_secret("alice", ApiRole::Operator, OPERATOR_TOKEN),
            ApiToken::for_secret("vera", ApiRole::Viewer, VIEWER_TOKEN),
        ];
        tweak(&mut cfg);
        let audit = Arc::new(AuditLog::open(&cfg.audit_url()).await.unwrap());
        let pager = ConsolePager::new();
        let handles = Handles {
            clock: shared,
            source,
            actuator: sim.clone(),
            pager: pager.clone(),
            audit: audit.clone(),
            runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).unwrap()),
            checks: None,
        };
        let engine = Engine::new(Arc::new(cfg.clone()), handles, Arc::new(Metrics::new()));
        engine.start("test").await;
        Harness {
            engine,
            clock,
            sim,
            pager,
            audit,
            dir,
            cfg,
            paused: None,
        }
    }

    /// One poll interval later, one tick.
    pub async fn tick(&self) {
        let secs = self.cfg.poll_interval.as_secs_f64();
        match &self.paused {
            // The engine reads a ScaledClock on tokio's clock, which stays paused except while
            // the engine works: the test moves it one poll interval at a time. (While paused,
            // tokio would auto-advance to the audit pool's acquire timeout whenever SQLite works
            // on its own thread; letting real time run during the tick costs only milliseconds.)
            Some(clock) => {
                tokio::time::pause();
                tokio::time::advance(clock.wall(secs)).await;
                tokio::time::resume();
            }
            None => self.clock.advance(secs),
        }
        self.engine.tick().await;
    }

    /// Ticks until `pred` holds or `max_secs` of simulated time passed; returns whether it held.
    pub async fn until(&self, max_secs: f64, pred: impl Fn(&View) -> bool) -> bool {
        let steps = (max_secs / self.cfg.poll_interval.as_secs_f64()).ceil() as usize;
        for _ in 0..steps {
            self.tick().await;
            if pred(&self.engine.view()) {
                return true;
            }
        }
        false
    }

    pub fn incidents_of(&self, run: &str) -> Vec<Incident> {
        self.engine
            .view()
            .incidents
            .values()
            .filter(|i| i.run == run)
            .cloned()
            .collect()
    }

    pub async fn entries(&self, incident: &str) -> Vec<Entry> {
        self.audit
            .query(&Filter {
                incident: Some(incident.to_string()),
                limit: Some(10_000),
                ..Filter::default()
            })
            .await
            .unwrap()
    }

    pub async fn kinds(&self, incident: &str) -> Vec<EntryKind> {
        self.entries(incident)
            .await
            .iter()
            .map(|e| e.kind)
            .collect()
    }
}

/// GPU Xid errors 10 min into the harness's time: three, a minute apart, on the run's node.
pub fn xid_fault() -> Vec<Fault> {
    vec![Fault::GpuXid {
        at: HISTORY + 600.0,
        errors: 3,
        every: 60.0,
        node_bound: true,
    }]
}

/// A hang 10 min into the harness's time that comes back after `survives_restarts` restarts.
pub fn hang_fault(survives_restarts: u32) -> Vec<Fault> {
    vec![Fault::Hang {
        at: HISTORY + 600.0,
        survives_restarts,
    }]
}

/// A loss spike (a bad-data region of 40 steps) 10 min into the harness's time.
pub fn spike_fault() -> Vec<Fault> {
    vec![Fault::LossSpike {
        at: HISTORY + 600.0,
        span_steps: 40,
    }]
}

impl Harness {
    /// Ticks until some incident waits for a human's approval (at most an hour).
    pub async fn until_approval_pending(&self) -> bool {
        self.until(3600.0, |v| {
            v.incidents
                .values()
                .any(|i| i.state == babysitter::incident::IncidentState::AwaitingApproval)
        })
        .await
    }
}

impl Harness {
    /// Ticks until some incident is resolved or escalated (at most `max_secs` of run time).
    pub async fn until_finished(&self, max_secs: f64) -> bool {
        self.until(max_secs, |v| {
            v.incidents.values().any(|i| i.state.is_final())
        })
        .await
    }
}
