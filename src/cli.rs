//! CLI: `babysitter serve | demo | check | replay | audit verify | audit export | approve | reject
//! | incident export`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::act::{Actuator, Target};
use crate::app::{App, Parts};
use crate::audit::AuditLog;
use crate::clock::{SharedClock, SystemClock, unix_now};
use crate::config::{Config, ConfigError, ConfigIssue};
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
        /// Deliver charts late: at each poll every chart is behind by a random delay of up to
        /// this many seconds (seeded, repeatable), as remote-write batching or a slow exporter
        /// would make it.
        #[arg(long, value_name = "SECS")]
        late: Option<f64>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The LLM investigator (`[agent]`).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Approve a pending action through the API.
    Approve(SettleArgs),
    /// Reject a pending action through the API (the incident goes to a human).
    Reject(SettleArgs),
    /// Incidents, through the API.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Write an incident as a replayable trace: DIR/ID.csv and DIR/ID.labels.json (one
    /// labelled anomaly per finding), for `babysitter replay --labels` and the detection
    /// benchmark.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The incident's id (`inc-3`).
    pub id: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Bearer token (any role can read; needed when `api.read_open = false`).
    #[arg(long, env = "BABYSITTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// History before the first finding's onset (detectors learn from it: stall over 2 h).
    #[arg(long, default_value = "3h", value_parser = parse_duration)]
    pub before: Duration,
    /// Folder to write the two files to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
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
pub enum AgentCommand {
    /// Run the eval suite: every `*.json` case of a folder through the agent; print each
    /// case's grade and the score.
    Eval {
        /// Folder of cases (e.g. testdata/agent-evals).
        #[arg(long)]
        cases: PathBuf,
        /// Config with an `[agent]` section (endpoint, model, budgets) and optionally
        /// `runbooks_dir`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Play each case's scripted model turns instead of calling an endpoint (CI).
        #[arg(long)]
        scripted: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Exit with failure when the score (0–1 of the maximum) is below this.
        #[arg(long)]
        min_score: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first edited, deleted or reordered entry. With
    /// `--heads`, also compare signed heads kept outside the database (catches a rewrite of
    /// the whole chain and a truncated tail).
    Verify {
        /// A SQLite file path, or a database URL (sqlite://…, postgres://…). Unset: the
        /// config's `audit.url`.
        #[arg(long)]
        db: Option<String>,
        /// Config file whose `audit.url` is used when `--db` is not given.
        #[arg(long, short, env = "BABYSITTER_CONFIG")]
        config: Option<PathBuf>,
        /// A heads file (`audit.heads_file`, or log lines containing `signed_head={…}`).
        #[arg(long)]
        heads: Option<PathBuf>,
        /// The signing key file: each head's MAC must verify too. Also read from the
        /// environment variable BABYSITTER_AUDIT_SIGNING_KEY (the key itself).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Print entries as JSON Lines (one entry per line, oldest first).
    Export {
        #[arg(long)]
        db: Option<String>,
        #[arg(long, short, env = "BABYSITTER_CONFIG")]
        config: Option<PathBuf>,
        /// Entries at or after this time: RFC 3339 (`2026-11-02T10:00:00Z`) or an age (`24h`).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Entries before this time (RFC 3339 or an age).
        #[arg(long, value_parser = parse_since)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        incident: Option<String>,
        /// An entry kind (`action_intent`, `decision`, …).
        #[arg(long, value_parser = parse_kind)]
        kind: Option<crate::audit::EntryKind>,
        /// Entries with a greater seq only.
        #[arg(long)]
        after_seq: Option<i64>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// RFC 3339, or an age before now (`90m`, `24h`, `7d`).
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = crate::config::duration::parse(s)
        .map_err(|e| format!("`{s}`: neither an RFC 3339 time nor an age ({e})"))?;
    let age = chrono::Duration::from_std(age).map_err(|e| format!("`{s}`: {e}"))?;
    chrono::Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| format!("`{s}`: too far back"))
}

fn parse_kind(s: &str) -> Result<crate::audit::EntryKind, String> {
    crate::audit::EntryKind::parse(s).ok_or_else(|| {
        let all: Vec<_> = crate::audit::EntryKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        format!("unknown kind `{s}`; one of {}", all.join(", "))
    })
}

/// The database of an `audit` command: `--db`, else the config's audit URL (read-only for a
/// SQLite file, which must exist).
fn audit_db(db: Option<String>, config: Option<&std::path::Path>) -> anyhow::Result<String> {
    match db {
        Some(db) => Ok(db_url(&db)),
        None => {
            let cfg = Config::load(config)?;
            let url = cfg.audit_url();
            Ok(url.replace("?mode=rwc", "?mode=ro"))
        }
    }
}

/// The head key for `audit verify --heads`: `--key-file`, else BABYSITTER_AUDIT_SIGNING_KEY.
fn cli_head_key(
    key_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::audit::HeadKey>> {
    if let Some(p) = key_file {
        return Ok(Some(crate::audit::HeadKey::from_file(p)?));
    }
    match std::env::var("BABYSITTER_AUDIT_SIGNING_KEY") {
        Ok(k) if !k.trim().is_empty() => Ok(Some(crate::audit::HeadKey::from_bytes(
            k.as_bytes(),
            "BABYSITTER_AUDIT_SIGNING_KEY",
        )?)),
        _ => Ok(None),
    }
}

/// The URL for `--db`: a URL as is, a path as read-only SQLite (never creates a file).
pub fn db_url(db: &str) -> String {
    if db.contains("://") {
        db.to_string()
    } else {
        format!("sqlite://{db}?mode=ro")
    }
}

/// Runs a command. A config that does not load stops it before anything starts: every
/// problem is printed on stderr, one per line, as `babysitter check` prints them
/// (`file:line: field: message`), and the exit code is 2 like any other start-up error.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match run_command(cli).await {
        Err(e) => match e.downcast_ref::<ConfigError>() {
            Some(ce @ ConfigError::Issues(_)) => {
                let issues = ce.issues();
                eprint!("{}", config_report(&issues));
                Ok(ExitCode::from(2))
            }
            _ => Err(e),
        },
        done => done,
    }
}

/// What start-up prints for a config that does not load: each issue on its own line, then a
/// count.
fn config_report(issues: &[ConfigIssue]) -> String {
    let mut out = String::new();
    for i in issues {
        out.push_str(&format!("{i}\n"));
    }
    let n = issues.len();
    out.push_str(&format!(
        "error: {n} configuration error{}; nothing was started\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

async fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
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
            late,
        } => replay(
            &trace,
            config.as_deref(),
            json,
            labels.as_deref(),
            time_scale,
            late,
            baseline,
        ),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    db,
                    config,
                    heads,
                    key_file,
                },
        } => {
            let url = audit_db(db, config.as_deref())?;
            let log = AuditLog::open(&url)
                .await
                .with_context(|| format!("opening {}", crate::app::redact(&url)))?;
            let report = log.verify().await?;
            println!("{report}");
            let mut ok = report.ok();
            if let Some(path) = heads {
                let key = cli_head_key(key_file.as_deref())?;
                let list = crate::audit::heads::read_heads_file(&path)?;
                let hr = log.check_heads(&list, key.as_ref()).await?;
                println!("{hr}");
                if key.is_none() {
                    println!(
                        "note: no signing key given (--key-file or BABYSITTER_AUDIT_SIGNING_KEY): the heads' MACs were not checked"
                    );
                }
                ok &= hr.ok();
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Agent {
            command:
                AgentCommand::Eval {
                    cases,
                    config,
                    scripted,
                    json,
                    min_score,
                },
        } => agent_eval(&cases, config.as_deref(), scripted, json, min_score).await,

        Command::Audit {
            command:
                AuditCommand::Export {
                    db,
                    config,
                    since,
                    until,
                    run,
                    incident,
                    kind,
                    after_seq,
                    limit,
                },
        } => {
            let url = audit_db(db, config.as_deref())?;
            let log = AuditLog::open(&url)
                .await
                .with_context(|| format!("opening {}", crate::app::redact(&url)))?;
            let filter = crate::audit::Filter {
                run,
                incident,
                kind,
                since,
                until,
                after_seq,
                limit,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = log.export(&filter, &mut out).await?;
            use std::io::Write;
            out.flush().context("writing the export")?;
            eprintln!("exported {n} entries");
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve(a) => settle(a, "approve").await,
        Command::Reject(a) => settle(a, "reject").await,
        Command::Incident {
            command: IncidentCommand::Export(a),
        } => {
            let written = export_incident(&a).await?;
            print!("{written}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `check`: validates the config, the pagers and the runbooks; prints every error (runbook
/// errors as `file:line: message`) and fails on any.
fn check(config: Option<PathBuf>, runbooks: Option<PathBuf>) -> ExitCode {
    use crate::runbook::RunbookErrors;
    let mut ok = true;
    // Every problem of the file, each with its field (and line when the file shows it).
    let (cfg, issues) = Config::check_file(config.as_deref());
    for i in &issues {
        eprintln!("{i}");
    }
    let cfg = match cfg {
        Some(c) if issues.is_empty() => {
            println!("config: OK ({} watches)", c.watches.len());
            Some(c)
        }
        // Read, but wrong: the runbooks are still checked against it.
        Some(c) => {
            ok = false;
            Some(c)
        }
        None => {
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
    // The agent's key file or variable must be readable now, not at the first incident.
    if let Some(a) = cfg.as_ref().and_then(|c| c.agent.as_ref()) {
        match a.api_key() {
            Ok(_) => println!("agent: OK ({} at {})", a.model, a.base_url),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }

    // The signing key is read like at start-up: a missing or short key is reported here.
    if let Some(c) = &cfg
        && (c.audit.signing_key_file.is_some() || c.audit.signing_key.is_some())
    {
        match crate::audit::AuditOptions::from_config(&c.audit) {
            Ok(_) => println!(
                "audit: OK (signed heads every {})",
                humantime::format_duration(c.audit.head_every)
            ),
            Err(e) => {
                eprintln!("audit: {e}");
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
            // Each watch naming an unknown runbook, at its line in the file.
            for (i, w) in cfg.watches.iter().enumerate() {
                let unknown = set.unknown_ids(&w.runbooks);
                if unknown.is_empty() {
                    continue;
                }
                ok = false;
                let at = match config.as_deref() {
                    Some(file) => {
                        let idx = i.to_string();
                        match crate::config::field_line(file, &["watches", &idx, "runbooks"]) {
                            Some(line) => format!("{}:{line}: ", file.display()),
                            None => format!("{}: ", file.display()),
                        }
                    }
                    None => String::new(),
                };
                eprintln!(
                    "{at}watches[{i}].runbooks (run `{}`): unknown runbook id(s) {}",
                    w.run,
                    unknown.join(", ")
                );
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

/// `agent eval`: the eval suite against the configured endpoint, or scripted.
async fn agent_eval(
    cases: &std::path::Path,
    config: Option<&std::path::Path>,
    scripted: bool,
    json: bool,
    min_score: Option<f64>,
) -> anyhow::Result<ExitCode> {
    use crate::agent::{AgentConfig, LlmClient, OpenAiClient};
    let cfg = Config::load(config)?;
    let runbooks = Arc::new(crate::app::load_runbooks(&cfg).context("runbooks")?);
    let (agent, llm): (AgentConfig, Option<Arc<dyn LlmClient>>) = if scripted {
        let agent = cfg
            .agent
            .clone()
            .unwrap_or_else(|| AgentConfig::new("http://127.0.0.1:9/v1", "scripted"));
        (agent, None)
    } else {
        let Some(agent) = cfg.agent.clone() else {
            anyhow::bail!(
                "no [agent] section: pass --config with one (see docs/AGENT.md), or --scripted"
            );
        };
        let client = OpenAiClient::from_config(&agent).context("agent")?;
        (agent, Some(Arc::new(client)))
    };
    let summary = crate::agent::eval::run_suite(cases, &agent, runbooks, llm).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    let ratio = if summary.max > 0.0 {
        summary.score / summary.max
    } else {
        0.0
    };
    Ok(match min_score {
        Some(m) if ratio < m => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// `replay`: findings as JSON lines or text, or the score against labels.
fn replay(
    trace: &std::path::Path,
    config: Option<&std::path::Path>,
    json: bool,
    labels: Option<&std::path::Path>,
    time_scale: crate::replay::TimeScale,
    late: Option<f64>,
    baseline: bool,
) -> anyhow::Result<ExitCode> {
    use crate::replay::{DetectorSet, FindingLine, Labels, Lateness, ReplayOptions, Trace};
    let cfg = Config::load(config)?;
    let opts = ReplayOptions {
        poll_interval: cfg.poll_interval.as_secs_f64(),
        params: cfg.detectors,
        time_scale,
        late: late.map(|max_secs| Lateness { max_secs, seed: 1 }),
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

/// What `incident export` wrote.
#[derive(Debug)]
pub struct Exported {
    pub csv: PathBuf,
    pub labels: PathBuf,
    pub rows: usize,
    pub anomalies: usize,
    /// The API's note when older charts were already pruned.
    pub pruned: Option<String>,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} ({} rows)", self.csv.display(), self.rows)?;
        writeln!(
            f,
            "{} ({} anomal{})",
            self.labels.display(),
            self.anomalies,
            if self.anomalies == 1 { "y" } else { "ies" }
        )?;
        if let Some(p) = &self.pruned {
            writeln!(f, "note: {p}")?;
        }
        writeln!(
            f,
            "replay: babysitter replay {} --labels {}",
            self.csv.display(),
            self.labels.display()
        )
    }
}

/// One answer of the export API.
struct ExportPart {
    body: String,
    /// `x-babysitter-trace-origin`: clock seconds of the trace's time 0.
    origin: String,
    /// `x-babysitter-trace-until`: clock seconds where its window ends.
    until: Option<String>,
    /// `x-babysitter-trace-pruned`: the note when older charts were already pruned.
    pruned: Option<String>,
}

/// One GET of the export API, or an error naming the URL and what the API said.
async fn export_get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<ExportPart> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.map_err(|e| {
        if e.is_connect() || e.is_timeout() {
            anyhow::anyhow!(
                "cannot reach the API at {url}: {e} (is babysitter serving there? --api)"
            )
        } else {
            anyhow::anyhow!("GET {url}: {e}")
        }
    })?;
    let status = res.status();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let origin = header(crate::api::ORIGIN_HEADER);
    let until = header(crate::api::UNTIL_HEADER);
    let pruned = header(crate::api::PRUNED_HEADER);
    let body = res
        .text()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("GET {url}: HTTP {status}: {msg}");
    }
    let origin = origin.with_context(|| {
        format!(
            "GET {url}: no {} header (is this babysitter?)",
            crate::api::ORIGIN_HEADER
        )
    })?;
    Ok(ExportPart {
        body,
        origin,
        until,
        pruned,
    })
}

/// `incident export`: fetches the trace, then the labels for exactly its window (same origin),
/// checks both read back with babysitter's own parsers, and writes them to `--out`.
pub async fn export_incident(a: &ExportArgs) -> anyhow::Result<Exported> {
    let id = a.id.trim();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || id.starts_with('.')
    {
        anyhow::bail!("`{id}` is not an incident id (like `inc-3`)");
    }
    let base = format!("{}/api/v1/incidents/{id}", a.api.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .context("HTTP client")?;
    let token = a.token.as_deref().filter(|t| !t.trim().is_empty());
    // Milliseconds: whole units humantime reads back, with no space to encode in a URL.
    let before = format!("{}ms", a.before.as_millis());
    let trace = export_get(&client, &format!("{base}/trace?before={before}"), token).await?;
    let origin = &trace.origin;
    // The labels of exactly this trace: same start (so the same time 0), same end.
    let mut labels_url = format!("{base}/labels?from={origin}");
    if let Some(u) = &trace.until {
        labels_url.push_str(&format!("&until={u}"));
    }
    let labels = export_get(&client, &labels_url, token).await?;
    let labels_origin = &labels.origin;
    if labels_origin != origin {
        anyhow::bail!(
            "incident {id}: the labels start at clock {labels_origin} but the trace at {origin} (charts were pruned between the two requests); run the export again"
        );
    }
    let csv_path = a.out.join(format!("{id}.csv"));
    let labels_path = a.out.join(format!("{id}.labels.json"));
    let csv = trace.body;
    let pruned = trace.pruned;
    let trace = crate::replay::Trace::parse(&csv, &csv_path)
        .with_context(|| format!("incident {id}: the API's trace does not read back"))?;
    let labels = crate::replay::Labels::parse(&labels.body, &labels_path)
        .with_context(|| format!("incident {id}: the API's labels do not read back"))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    std::fs::write(&csv_path, &csv).with_context(|| format!("writing {}", csv_path.display()))?;
    let mut pretty = serde_json::to_string_pretty(&labels)?;
    pretty.push('\n');
    std::fs::write(&labels_path, pretty)
        .with_context(|| format!("writing {}", labels_path.display()))?;
    Ok(Exported {
        csv: csv_path,
        labels: labels_path,
        rows: trace.rows,
        anomalies: labels.anomalies.len(),
        pruned,
    })
}

/// `serve`: the service on the configured watches. Charts come from `[sources.prometheus]`
/// when it is configured, else from the built-in simulator; simulated targets are acted on by
/// the simulator. With `[kubernetes] enabled = true`, annotated workloads are discovered, the
/// replicas elect a leader on a Lease, and Kubernetes targets are acted on through the API.
async fn serve(cfg: Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let sim = Arc::new(SimCluster::new(clock.clone(), 1));
    for w in &cfg.watches {
        match &w.target {
            Target::Simulated { run } => sim
                .add_run(SimRunSpec::new(run, unix_now() - 3600.0))
                .with_context(|| format!("watch `{}`", w.run))?,
            Target::Kubernetes { .. } if cfg.kubernetes.enabled => {}
            Target::Kubernetes { .. } => anyhow::bail!(
                "watch `{}`: a Kubernetes target needs [kubernetes] enabled = true",
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
    let kube = if cfg.kubernetes.enabled {
        Some(kube::Client::try_default().await.context(
            "kubernetes: no cluster credentials ($KUBECONFIG or the pod's service account)",
        )?)
    } else {
        None
    };
    // A restart by recreation deletes the workload; discovery must know it was babysitter.
    let recreations = Arc::new(crate::k8s::workload::Recreations::default());
    let actuator: Arc<dyn Actuator> = match &kube {
        Some(client) => Arc::new(crate::app::TargetRouter {
            simulated: sim.clone(),
            kubernetes: crate::app::kubernetes_actuator(client.clone(), recreations.clone()),
        }),
        None => sim.clone(),
    };
    let tick_every = cfg.poll_interval;
    let pager = crate::notify::build(&cfg, ConsolePager::new(), false).context("pagers")?;
    let parts = Parts {
        clock,
        source,
        actuator,
        pager,
        tick_every,
    };
    let app = App::build(cfg, parts, false).await?;
    if let Some(inv) = app.engine.agent() {
        let simulated: Arc<dyn crate::agent::WorkloadInspector> =
            Arc::new(crate::agent::SimInspector::new(sim));
        // With a cluster, the agent reads Kubernetes workloads too (read-only).
        let inspector: Arc<dyn crate::agent::WorkloadInspector> = match &kube {
            Some(client) => Arc::new(crate::app::InspectorRouter {
                simulated,
                kubernetes: Arc::new(crate::k8s::inspector::KubeInspector::new(
                    client.clone(),
                    Default::default(),
                )),
            }),
            None => simulated,
        };
        app.engine
            .set_agent(Arc::new(inv.with_inspector(inspector)));
    }
    tracing::info!(addr = %app.addr, "babysitter serving");
    let restored = app.engine.restore().await;
    tracing::info!(
        restored = restored.restored.len(),
        paused = ?restored.paused,
        "unfinished incidents restored"
    );
    if !restored.skipped.is_empty() {
        let ids: Vec<&str> = restored.skipped.iter().map(|s| s.id.as_str()).collect();
        tracing::error!(
            ?ids,
            "{} incident row(s) could not be read back and were NOT restored; see the errors above",
            ids.len()
        );
    }
    app.engine.start("serve").await;
    // Before the loop starts: the replica follows until the Lease is its own. Intents without
    // outcomes (a crash in between) are settled before the loop acts: here for a single
    // instance, by `Engine::set_leadership` when a replica gains the Lease.
    let k8s = match kube {
        Some(client) => {
            Some(crate::app::start_kubernetes(client, app.engine.clone(), recreations).await?)
        }
        None => {
            let recovered = app.engine.settle_unfinished_intents().await;
            if recovered != Default::default() {
                tracing::warn!(?recovered, "crash recovery settled unfinished actions");
            }
            None
        }
    };
    let result = app.run_until(crate::app::shutdown_signal()).await;
    if let Some(k) = k8s {
        k.stop().await;
    }
    result
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
    fn a_config_that_does_not_load_is_reported_one_issue_per_line() {
        let issues = vec![
            ConfigIssue {
                file: Some("b.toml".into()),
                line: Some(3),
                env: None,
                field: "retention".into(),
                message: "invalid duration `soon`".into(),
            },
            ConfigIssue {
                file: None,
                line: None,
                env: Some("BABYSITTER_POLL_INTERVAL".into()),
                field: "poll_interval".into(),
                message: "must be positive".into(),
            },
        ];
        assert_eq!(
            config_report(&issues),
            "b.toml:3: retention: invalid duration `soon`\n\
             environment variable BABYSITTER_POLL_INTERVAL: poll_interval: must be positive\n\
             error: 2 configuration errors; nothing was started\n"
        );
    }

    #[test]
    fn incident_export_parses_its_flags_and_refuses_a_bad_before() {
        let cli = Cli::try_parse_from([
            "babysitter",
            "incident",
            "export",
            "inc-3",
            "--api",
            "http://h:1",
            "--before",
            "90m",
            "--out",
            "traces",
        ])
        .unwrap();
        match cli.command {
            Command::Incident {
                command: IncidentCommand::Export(a),
            } => {
                assert_eq!(a.id, "inc-3");
                assert_eq!(a.api, "http://h:1");
                assert_eq!(a.before, Duration::from_secs(5400));
                assert_eq!(a.out, PathBuf::from("traces"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let e = Cli::try_parse_from([
            "babysitter",
            "incident",
            "export",
            "inc-3",
            "--before",
            "soon",
            "--out",
            "d",
        ])
        .expect_err("bad --before")
        .to_string();
        assert!(e.contains("--before") && e.contains("soon"), "{e}");
        // --out is required.
        assert!(Cli::try_parse_from(["babysitter", "incident", "export", "inc-3"]).is_err());
    }

    #[tokio::test]
    async fn incident_export_names_a_bad_id_and_an_unreachable_api() {
        let dir = tempfile::tempdir().unwrap();
        let args = |id: &str, api: &str| ExportArgs {
            id: id.into(),
            api: api.into(),
            token: None,
            before: Duration::from_secs(3600),
            out: dir.path().join("out"),
        };
        let e = export_incident(&args("../etc", "http://127.0.0.1:1"))
            .await
            .expect_err("bad id")
            .to_string();
        assert_eq!(e, "`../etc` is not an incident id (like `inc-3`)");
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = export_incident(&args("inc-1", &format!("http://127.0.0.1:{port}")))
            .await
            .expect_err("unreachable")
            .to_string();
        assert!(
            e.starts_with("cannot reach the API at http://127.0.0.1:"),
            "{e}"
        );
        assert!(
            !dir.path().join("out").exists(),
            "nothing written on failure"
        );
    }

    #[test]
    fn db_paths_become_read_only_sqlite_urls() {
        assert_eq!(db_url("d/audit.db"), "sqlite://d/audit.db?mode=ro");
        assert_eq!(db_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
