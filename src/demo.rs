//! Demo: babysitter on its embedded default — three simulated training runs with faults, a
//! local SQLite audit log, the API, and a terminal that tells the story.
//!
//! - `run-a` hits a loss spike: diagnosed with `loss-spike`, lr × 0.5, restart from the
//!   checkpoint before the spike, verified back in band.
//! - `run-b` hangs with busy GPUs: diagnosed with `hang`, restarted from the latest checkpoint,
//!   verified making progress.
//! - `run-c` logs GPU Xid errors: `gpu-hardware-error` pauses it and pages on-call with the
//!   exact command that approves the restart; once approved (API or `--approve-after`), it
//!   restarts on a healthy node and is verified.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::act::Target;
use crate::app::{App, Parts};
use crate::clock::{ScaledClock, SharedClock, unix_now};
use crate::config::{ApiRole, ApiToken, Config, WatchConfig};
use crate::engine::{Engine, Event, EventKind};
use crate::incident::IncidentState;
use crate::notify::ConsolePager;
use crate::policy::Autonomy;
use crate::sim::{Fault, SimCluster, SimRunSpec};

/// Options of `babysitter demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Stop after this much wall time (None: until Ctrl-C).
    pub run_for: Option<Duration>,
    pub data_dir: PathBuf,
    /// Approve pending actions through the API after this much wall time.
    pub approve_after: Option<Duration>,
    pub seed: u64,
}

/// The three runs of the demo and their watches. Faults fire a few simulated minutes after
/// `origin` (the demo's start); each run has hours of healthy history before it.
pub fn scenario(
    clock: SharedClock,
    origin: f64,
    seed: u64,
) -> Result<(Arc<SimCluster>, Vec<WatchConfig>), crate::sim::SimError> {
    let sim = Arc::new(SimCluster::new(clock, seed));
    let history = 3.0 * 3600.0;
    let start = origin - history;
    let runs = [
        (
            "run-a",
            vec![Fault::LossSpike {
                at: history + 8.0 * 60.0,
                span_steps: 40,
            }],
        ),
        (
            "run-b",
            vec![Fault::Hang {
                at: history + 11.0 * 60.0,
                survives_restarts: 0,
            }],
        ),
        (
            "run-c",
            vec![Fault::GpuXid {
                at: history + 14.0 * 60.0,
                errors: 3,
                every: 60.0,
                node_bound: true,
            }],
        ),
    ];
    let mut watches = Vec::new();
    for (name, faults) in runs {
        let mut spec = SimRunSpec::new(name, start);
        spec.faults = faults;
        sim.add_run(spec)?;
        watches.push(WatchConfig {
            run: name.to_string(),
            target: Target::Simulated {
                run: name.to_string(),
            },
            autonomy: Autonomy::Act,
            route: "ml-oncall".to_string(),
            runbooks: Vec::new(),
            detectors: None,
            profile: None,
            charts: Default::default(),
        });
    }
    Ok((sim, watches))
}

/// One story line: `[T+12:30] run-a   ! loss_spike: …`.
pub fn format_event(origin: f64, ev: &Event) -> String {
    let rel = (ev.at - origin).max(0.0) as u64;
    format!(
        "[T+{:02}:{:02}] {:<6} {} {}",
        rel / 60,
        rel % 60,
        ev.run,
        ev.kind.marker(),
        ev.text
    )
}

/// Runs the demo; returns when `--for` elapses or on Ctrl-C.
pub async fn run(mut cfg: Config, opts: DemoOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.speed.is_finite() && opts.speed > 0.0,
        "--speed must be a positive number"
    );
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data directory {}", opts.data_dir.display()))?;
    cfg.data_dir = opts.data_dir.clone();
    let origin = unix_now();
    let clock = ScaledClock::new(origin, opts.speed);
    let shared: SharedClock = Arc::new(clock);
    let (sim, watches) = scenario(shared.clone(), origin, opts.seed)?;
    if cfg.watches.is_empty() {
        cfg.watches = watches;
    } else {
        // Watches from --config replace the demo's; their simulated runs start healthy.
        for w in &cfg.watches {
            if let Target::Simulated { run } = &w.target
                && sim.status(run).is_none()
            {
                sim.add_run(SimRunSpec::new(run, origin - 3.0 * 3600.0))?;
            }
        }
    }
    // An operator token for this demo session: the page's approve command and the auto-approver
    // use it. Only its hash goes into the config.
    let token = new_token()?;
    cfg.api.tokens.push(ApiToken::for_secret(
        "demo-operator",
        ApiRole::Operator,
        &token,
    ));
    // The console always shows pages in the demo; `--config` may add real pagers beside it.
    let pager = crate::notify::build(&cfg, ConsolePager::new(), true).context("pagers")?;
    let tick_every = clock.wall(cfg.poll_interval.as_secs_f64());
    let parts = Parts {
        clock: shared.clone(),
        source: sim.clone(),
        actuator: sim.clone(),
        pager,
        tick_every,
    };
    let audit_url = cfg.audit_url();
    let app = App::build(cfg, parts, true).await?;
    if let Some(inv) = app.engine.agent() {
        let inspector = Arc::new(crate::agent::SimInspector::new(sim.clone()));
        app.engine
            .set_agent(Arc::new(inv.with_inspector(inspector)));
    }
    let engine = app.engine.clone();
    println!(
        "babysitter demo — 3 simulated training runs, time ×{} (1 s = {} of training)",
        opts.speed,
        humantime::format_duration(Duration::from_secs(opts.speed.round() as u64))
    );
    println!(
        "  dashboard: {}/   (open it in a browser; sign in with the operator token below to approve)",
        engine.public_url()
    );
    println!(
        "  API:       {}/api/v1/watches   (incidents: /api/v1/incidents, audit: /api/v1/audit)",
        engine.public_url()
    );
    println!("  audit log: {}", audit_url);
    println!("  operator token (approve with the paged command): export BABYSITTER_TOKEN={token}");
    match opts.run_for {
        Some(d) => println!(
            "  stops after {} of wall time",
            humantime::format_duration(d)
        ),
        None => println!("  runs until Ctrl-C"),
    }
    println!();
    engine.reserve_incident_ids().await;
    engine.start("demo").await;
    // A demo killed between an intent and its outcome settles that action now.
    engine.settle_unfinished_intents().await;

    let printer = tokio::spawn(print_story(engine.subscribe(), origin));
    let approver = opts
        .approve_after
        .map(|after| tokio::spawn(auto_approve(engine.clone(), after, token.clone())));
    let run_for = opts.run_for;
    let shutdown = async move {
        match run_for {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = crate::app::shutdown_signal() => {}
                }
            }
            None => crate::app::shutdown_signal().await,
        }
    };
    app.run_until(shutdown).await?;
    if let Some(a) = approver {
        a.abort();
    }
    // Let the printer drain what is left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    printer.abort();
    summary(&engine, shared.now(), origin).await;
    Ok(())
}

async fn print_story(mut rx: tokio::sync::broadcast::Receiver<Event>, origin: f64) {
    loop {
        match rx.recv().await {
            Ok(ev) => {
                // Cleared findings of a run that babysitter is handling are noise on a terminal.
                // A page is printed by the console pager itself, framed.
                if matches!(ev.kind, EventKind::FindingCleared | EventKind::Paged) {
                    continue;
                }
                println!("{}", format_event(origin, &ev));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                println!("  … {n} events skipped");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Plays the on-call human: approves each pending action `after` it was requested, through
/// the HTTP API like a person would.
async fn auto_approve(engine: Arc<Engine>, after: Duration, token: String) {
    let client = reqwest::Client::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let view = engine.view();
        for inc in view.incidents.values() {
            let Some(p) = &inc.pending else { continue };
            if inc.state != IncidentState::AwaitingApproval || !seen.insert(p.id.clone()) {
                continue;
            }
            let url = format!("{}/api/v1/actions/{}/approve", engine.public_url(), p.id);
            let client = client.clone();
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"reason": "--approve-after"}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => println!("  approve {url}: HTTP {}", r.status()),
                    Err(e) => println!("  approve {url}: {e}"),
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn summary(engine: &Engine, now: f64, origin: f64) {
    let view = engine.view();
    println!();
    println!(
        "— after {} of simulated time —",
        humantime::format_duration(Duration::from_secs((now - origin).max(0.0) as u64))
    );
    for w in &view.watches {
        let incs: Vec<String> = view
            .incidents
            .values()
            .filter(|i| i.run == w.run)
            .map(|i| {
                format!(
                    "{} {} ({}) {}",
                    i.id,
                    i.state,
                    i.diagnosis.as_ref().map_or("-", |d| d.runbook.as_str()),
                    i.outcome.as_deref().unwrap_or("")
                )
            })
            .collect();
        println!(
            "  {:<6} {:<8} {}",
            w.run,
            w.status,
            if incs.is_empty() {
                "no incident".to_string()
            } else {
                incs.join("; ")
            }
        );
    }
    match engine.handles().audit.verify().await {
        Ok(r) => println!("  {r}"),
        Err(e) => println!("  audit log: {e}"),
    }
}

/// 32 random bytes from the OS, hex-encoded.
fn new_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom for the demo's API token")?;
    Ok(hex::encode(buf))
}
