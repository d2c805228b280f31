//! CLI: `babysitter serve | demo | check | replay | audit verify | approve | reject`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::act::Target;
use crate::app::{App, Parts};
use crate::audit::AuditLog;
use crate::clock::{SharedClock, SystemClock, unix_now};
use crate::config::Config;
use crate::notify::ConsolePager;
use crate::sim::{SimCluster, SimRunSpec};
use crate::sources::MetricsSource;
use crate::sources::prometheus::PrometheusSource;

#[derive(Debug, Parser)]
#[command(
    name = "babysitter",
    version,
    about = "Babysits long-running ML training jobs: watches their charts, diagnoses anomalies with runbooks, acts within policy, pages a human, audits everything."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::duration::parse(s)
}

fn parse_time_scale(s: &str) -> Result<crate::replay::TimeScale, String> {
    if s == "auto" {
        return Ok(crate::replay::TimeScale::Auto);
    }
    match s.parse::<f64>() {
        Ok(k) if k.is_finite() && k > 0.0 => Ok(crate::replay::TimeScale::Fixed(k)),
        _ => Err(format!("expected `auto` or a number above 0, got `{s}`")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service on a config file.
    Serve {
        #[arg(long, short, env = "BABYSITTER_CONFIG")]
        config: PathBuf,
    },
    /// Run everything on the embedded default: three simulated runs with faults.
    Demo {
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Stop after this much wall time (e.g. 90s); without it, run until Ctrl-C.
        #[arg(long = "for", value_parser = parse_duration)]
        run_for: Option<Duration>,
        /// Where to keep state (the audit database is DIR/audit.db).
        #[arg(long, default_value = "demo-data")]
        data: PathBuf,
        /// Approve pending actions through the API this long (wall time) after they are requested.
        #[arg(long, value_parser = parse_duration)]
        approve_after: Option<Duration>,
        /// API listen address (a busy port falls back to a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Optional config file (policy, detectors, runbooks); its watches replace the demo's.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Seed of the simulated runs.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Validate the config and the runbooks; print every error as file:line: message.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        runbooks: Option<PathBuf>,
    },
    /// Replay a metric trace (CSV) through the detectors as if polling it live; with
    /// `--labels`, score the findings against the labelled anomalies.
    Replay {
        trace: PathBuf,
        /// Config file: its `poll_interval` and `detectors` settings are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per finding (FORMATS.md §3), or the score as one JSON object.
        #[arg(long)]
        json: bool,
        /// The trace's `NAME.labels.json`: print the score instead of the findings.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Multiply every detector window and the poll interval by this factor; `auto` (the
        /// default) stretches them only for traces sampled less often than once per poll.
        #[arg(long, default_value = "auto", value_parser = parse_time_scale)]
        time_scale: crate::replay::TimeScale,
        /// Run the static Prometheus-style baseline rules instead of babysitter's detectors.
        #[arg(long)]
        baseline: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Approve a pending action through the API.
    Approve(SettleArgs),
    /// Reject a pending action through the API (the incident goes to a human).
    Reject(SettleArgs),
}

#[derive(Debug, clap::Args)]
pub struct SettleArgs {
    /// The pending action's id (printed in the page and by `GET /api/v1/actions/pending`).
    pub id: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// On whose behalf (the token's holder is recorded as the caller).
    #[arg(long, env = "USER", default_value = "cli")]
    pub by: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// Bearer token with the `operator` role.
    #[arg(long, env = "BABYSITTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first edited, deleted or reordered entry.
    Verify {
        /// A SQLite file path, or a database URL (sqlite://…, postgres://…).
        #[arg(long)]
        db: String,
    },
}

/// The URL for `--db`: a URL as is, a path as read-only SQLite (never creates a file).
pub fn db_url(db: &str) -> String {
    if db.contains("://") {
        db.to_string()
    } else {
        format!("sqlite://{db}?mode=ro")
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = Config::load(Some(&config))?;
            serve(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            speed,
            run_for,
            data,
            approve_after,
            listen,
            config,
            seed,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            crate::demo::run(
                cfg,
                crate::demo::DemoOptions {
                    speed,
                    run_for,
                    data_dir: data,
                    approve_after,
                    seed,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, runbooks } => Ok(check(config, runbooks)),
        Command::Replay {
            trace,
            config,
            json,
            labels,
            time_scale,
            baseline,
        } => replay(
            &trace,
            config.as_deref(),
            json,
            labels.as_deref(),
            time_scale,
            baseline,
        ),
        Command::Audit {
            command: AuditCommand::Verify { db },
        } => {
            let url = db_url(&db);
            let log = AuditLog::open(&url)
                .await
                .with_context(|| format!("opening {}", crate::app::redact(&url)))?;
            let report = log.verify().await?;
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Approve(a) => settle(a, "approve").await,
        Command::Reject(a) => settle(a, "reject").await,
    }
}

/// `check`: validates the config, the pagers and the runbooks; prints every error (runbook
/// errors as `file:line: message`) and fails on any.
fn check(config: Option<PathBuf>, runbooks: Option<PathBuf>) -> ExitCode {
    use crate::runbook::RunbookErrors;
    let mut ok = true;
    let cfg = match Config::load(config.as_deref()) {
        Ok(c) => {
            println!("config: OK ({} watches)", c.watches.len());
            Some(c)
        }
        Err(e) => {
            eprintln!("{e}");
            ok = false;
            None
        }
    };
    // Building the pagers resolves `{ env = "…" }` secrets: a missing one is reported here.
    if let Some(c) = &cfg {
        match crate::notify::build(c, ConsolePager::new(), false) {
            Ok(_) if c.pagers.is_empty() => println!("pagers: OK ({})", c.pager.kind()),
            Ok(_) => println!(
                "pagers: OK ({}; routes: {})",
                c.pagers.keys().cloned().collect::<Vec<_>>().join(", "),
                c.routes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    let mut cfg = cfg.unwrap_or_default();
    if let Some(dir) = runbooks {
        cfg.runbooks_dir = Some(dir);
    }
    match crate::app::load_runbooks(&cfg) {
        Ok(set) => {
            let ids: Vec<_> = set.iter().map(|r| r.id.clone()).collect();
            // A runbook's `escalate.route` must name a route or pager when the config names any.
            let routes = if cfg.pagers.is_empty() && cfg.routes.is_empty() {
                RunbookErrors(Vec::new())
            } else {
                set.unknown_routes(|r| cfg.routes.contains_key(r) || cfg.pagers.contains_key(r))
            };
            if routes.is_empty() {
                println!("runbooks: OK ({}: {})", ids.len(), ids.join(", "));
            } else {
                eprintln!("{routes}");
                ok = false;
            }
            if let Err(e) = crate::app::check_watch_runbooks(&cfg, &set) {
                eprintln!("{e:#}");
                ok = false;
            }
        }
        Err(e) => {
            eprintln!("{e:#}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `replay`: findings as JSON lines or text, or the score against labels.
fn replay(
    trace: &std::path::Path,
    config: Option<&std::path::Path>,
    json: bool,
    labels: Option<&std::path::Path>,
    time_scale: crate::replay::TimeScale,
    baseline: bool,
) -> anyhow::Result<ExitCode> {
    use crate::replay::{DetectorSet, FindingLine, Labels, ReplayOptions, Trace};
    let cfg = Config::load(config)?;
    let opts = ReplayOptions {
        poll_interval: cfg.poll_interval.as_secs_f64(),
        params: cfg.detectors,
        time_scale,
    };
    let set = if baseline {
        DetectorSet::Baseline
    } else {
        DetectorSet::Babysitter
    };
    let tr = Trace::load(trace)?;
    let labels = labels.map(Labels::load).transpose()?;
    let run =
        crate::replay::replay(&tr, &opts, set).with_context(|| trace.display().to_string())?;
    if run.scale != 1.0 {
        eprintln!(
            "{}: sampled every {} s: windows and poll interval scaled by {} (one poll every {} s)",
            trace.display(),
            tr.cadence.unwrap_or(0.0),
            run.scale,
            run.poll_interval
        );
    }
    // Everything goes to one buffer first: a closed pipe (`| head`) ends the output quietly.
    let mut out = String::new();
    match (labels, json) {
        (None, true) => {
            for f in &run.findings {
                out.push_str(&serde_json::to_string(&FindingLine::from(f))?);
                out.push('\n');
            }
        }
        (None, false) => {
            for f in &run.findings {
                out.push_str(&format!(
                    "{:>12} {:<20} {:<24} {:<8} {}\n",
                    crate::clock::fmt_t(f.at),
                    f.kind.as_str(),
                    f.chart,
                    f.severity.as_str(),
                    f.message
                ));
            }
            out.push_str(&format!(
                "{} findings over {} polls\n",
                run.findings.len(),
                run.polls
            ));
        }
        (Some(l), true) => {
            let s = crate::replay::score(&run.findings, &l);
            out.push_str(&serde_json::to_string(&s)?);
            out.push('\n');
        }
        (Some(l), false) => {
            let s = crate::replay::score(&run.findings, &l);
            out.push_str(&score_text(&s, set));
        }
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The score of one trace as a small table.
fn score_text(s: &crate::replay::TraceScore, set: crate::replay::DetectorSet) -> String {
    use crate::replay::bench::fmt_secs;
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    let line = |name: &str, sc: &crate::replay::Score| {
        format!(
            "{name:<12} precision {:>4}  recall {:>4}  F1 {:>4}  detected {}/{}  episodes {} (false positives {})  latency p50 {} p90 {}\n",
            ratio(sc.precision()),
            ratio(sc.recall()),
            ratio(sc.f1()),
            sc.detected,
            sc.anomalies,
            sc.episodes,
            sc.false_positives(),
            fmt_secs(sc.latency_quantile(0.5)),
            fmt_secs(sc.latency_quantile(0.9)),
        )
    };
    let mut out = format!("{} (grace {} s)\n", set.name(), crate::replay::GRACE_SECS);
    for (fam, sc) in &s.by_family {
        out.push_str(&line(fam.as_str(), sc));
    }
    out.push_str(&line("family", &s.family));
    out.push_str(&line("strict", &s.strict));
    out
}

async fn settle(a: SettleArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let SettleArgs {
        id,
        api,
        by,
        reason,
        token,
    } = a;
    let url = format!("{}/api/v1/actions/{id}/{verb}", api.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    let res = req
        .json(&serde_json::json!({ "by": by, "reason": reason }))
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{verb}d {id}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{verb} {id}: HTTP {status}: {body}");
        Ok(ExitCode::FAILURE)
    }
}

/// `serve`: the service on the configured watches. Charts come from `[sources.prometheus]`
/// when it is configured, else from the built-in simulator; simulated targets are acted on by
/// the simulator (Kubernetes actuators plug in here as they land).
async fn serve(cfg: Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let sim = Arc::new(SimCluster::new(clock.clone(), 1));
    for w in &cfg.watches {
        match &w.target {
            Target::Simulated { run } => sim
                .add_run(SimRunSpec::new(run, unix_now() - 3600.0))
                .with_context(|| format!("watch `{}`", w.run))?,
            Target::Kubernetes { .. } => anyhow::bail!(
                "watch `{}`: Kubernetes targets are not supported by this build yet (only `simulated`)",
                w.run
            ),
        }
    }
    let source: Arc<dyn MetricsSource> = match &cfg.sources.prometheus {
        Some(p) => {
            let src = PrometheusSource::new(p, &cfg.watches)?;
            tracing::info!(url = %src.url(), watches = cfg.watches.len(), "charts from Prometheus");
            Arc::new(src)
        }
        None => sim.clone(),
    };
    let tick_every = cfg.poll_interval;
    let pager = crate::notify::build(&cfg, ConsolePager::new(), false).context("pagers")?;
    let parts = Parts {
        clock,
        source,
        actuator: sim,
        pager,
        tick_every,
    };
    let app = App::build(cfg, parts, false).await?;
    tracing::info!(addr = %app.addr, "babysitter serving");
    app.engine.restore().await;
    app.engine.start("serve").await;
    app.run_until(crate::app::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_the_readme_commands() {
        let cli = Cli::try_parse_from([
            "babysitter",
            "demo",
            "--speed",
            "60",
            "--for",
            "90s",
            "--data",
            "d",
            "--approve-after",
            "30s",
        ])
        .unwrap();
        match cli.command {
            Command::Demo {
                speed,
                run_for,
                approve_after,
                ..
            } => {
                assert_eq!(speed, 60.0);
                assert_eq!(run_for, Some(Duration::from_secs(90)));
                assert_eq!(approve_after, Some(Duration::from_secs(30)));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["babysitter", "demo", "--for", "soon"]).is_err());
        let cli = Cli::try_parse_from([
            "babysitter",
            "replay",
            "t.csv",
            "--json",
            "--time-scale",
            "2",
        ])
        .unwrap();
        match cli.command {
            Command::Replay {
                json, time_scale, ..
            } => {
                assert!(json);
                assert_eq!(time_scale, crate::replay::TimeScale::Fixed(2.0));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["babysitter", "replay", "t.csv", "--time-scale", "0"]).is_err()
        );
        let cli =
            Cli::try_parse_from(["babysitter", "audit", "verify", "--db", "x/audit.db"]).unwrap();
        assert!(matches!(cli.command, Command::Audit { .. }));
    }

    #[test]
    fn db_paths_become_read_only_sqlite_urls() {
        assert_eq!(db_url("d/audit.db"), "sqlite://d/audit.db?mode=ro");
        assert_eq!(db_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
