//! CLI: `babysitter serve | demo | check | audit verify | approve | reject`.

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
    /// Who decides (recorded in the audit log).
    #[arg(long, env = "USER", default_value = "cli")]
    pub by: String,
    #[arg(long)]
    pub reason: Option<String>,
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

fn check(config: Option<PathBuf>, runbooks: Option<PathBuf>) -> ExitCode {
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
            println!("runbooks: OK ({}: {})", ids.len(), ids.join(", "));
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

async fn settle(a: SettleArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let SettleArgs {
        id,
        api,
        by,
        reason,
    } = a;
    let url = format!("{}/api/v1/actions/{id}/{verb}", api.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .post(&url)
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

/// `serve`: the service on the configured watches. Simulated targets run on the built-in
/// simulator; Prometheus sources and Kubernetes actuators plug in here as they land.
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
    let tick_every = cfg.poll_interval;
    let pager = crate::notify::build(&cfg, ConsolePager::new(), false).context("pagers")?;
    let parts = Parts {
        clock,
        source: sim.clone(),
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
