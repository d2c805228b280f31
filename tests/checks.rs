//! Runbook checks against a real Prometheus (the Debian package, started here on a free loopback
//! port, its history backfilled with `promtool tsdb create-blocks-from openmetrics`): the engine
//! asks PromQL first, then the run's charts, then answers `unknown`; a dead or silent Prometheus
//! never stalls the loop; the diagnosis audit entry says what answered each check.
//!
//! The Prometheus harness follows tests/prometheus.rs. A test that needs the binary is skipped
//! (with a message) only when none exists and none can be installed; `scripts/test` installs it.

mod common;

use common::services::{free_port, prometheus_binaries as binaries};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use babysitter::act::Action;
use babysitter::audit::{AuditLog, EntryKind, Filter};
use babysitter::clock::{ManualClock, SharedClock, unix_now};
use babysitter::config::Config;
use babysitter::engine::{CHECK_LIMITS, Engine, ExecuteRequest, ExecuteResult, Handles};
use babysitter::notify::ConsolePager;
use babysitter::runbook::{CheckRunner, PrometheusChecks, RunbookSet, diagnose_on_charts};
use babysitter::sim::{SimCluster, SimRunSpec};
use babysitter::sources::prometheus::settings::PrometheusConfig;
use babysitter::telemetry::Metrics;
use serde_json::Value;

/// A Prometheus process on loopback with backfilled history; killed on drop.
struct Prometheus {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Prometheus {
    /// Backfills `openmetrics` (lines `name{labels} value unix_seconds`, `# EOF` appended), then
    /// starts Prometheus and waits until it is ready.
    async fn start(bin: &PathBuf, promtool: &PathBuf, openmetrics: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prom.yml"),
            "global:\n  scrape_interval: 15s\n",
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let file = dir.path().join("history.om");
        std::fs::write(&file, format!("{openmetrics}# EOF\n")).unwrap();
        let out = Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&data)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prom.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prom.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus {
            dir,
            port,
            child: Some(child),
        };
        let ready = format!("{}/-/ready", prom.url());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                return prom;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                std::fs::read_to_string(prom.dir.path().join("prom.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A runbook whose steps say which branch each check took. `hot` asks PromQL for the hottest
/// GPU and, without an answer, the run's loss chart (which never reaches 80); `quota` has no
/// chart, so without Prometheus it is `unknown` and its page branch runs.
const PROBE: &str = r#"---
id: probe
title: Probe
triggers:
  kinds: [stall]
priority: 100
checks:
  - id: hot
    description: Is a GPU of the run above 80 °C?
    promql: 'test_gpu_temp_celsius{run="$run"}'
    op: ">"
    threshold: 80
    chart: loss
    reduce: max
    over: 10m
  - id: quota
    description: Has the tenant used up its quota?
    promql: 'test_tenant_quota_used{run="$run"}'
    op: ">="
    threshold: 1
steps:
  - action: annotate
    note: hot
    when: {check: hot, is: true}
  - action: annotate
    note: cool
    when: {check: hot, is: false}
  - action: annotate
    note: temperature unknown
    when: {check: hot, is: unknown}
  - action: annotate
    note: over quota
    when: {check: quota, is: true}
  - action: annotate
    note: within quota
    when: {check: quota, is: false}
  - action: page
    severity: warning
    summary: nobody could tell the quota
    when: {check: quota, is: unknown}
verify:
  within: 10m
  expect: [progress]
---
# Probe

A runbook for the tests of check answering.
"#;

/// The engine on the simulator (run `run-a`, hanging 10 min into the test), the `probe`
/// runbook, and `checks` as its check runner.
struct Setup {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    audit: Arc<AuditLog>,
    _dir: tempfile::TempDir,
}

async fn setup(origin: f64, checks: Option<Arc<dyn CheckRunner>>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rb_dir = dir.path().join("runbooks");
    std::fs::create_dir_all(&rb_dir).unwrap();
    std::fs::write(rb_dir.join("probe.md"), PROBE).unwrap();
    let clock = ManualClock::new(origin);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(SimCluster::new(shared.clone(), 7));
    let mut spec = SimRunSpec::new("run-a", origin - common::HISTORY);
    spec.faults = vec![babysitter::sim::Fault::Hang {
        at: common::HISTORY + 600.0,
        survives_restarts: 0,
    }];
    sim.add_run(spec).unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        runbooks_dir: Some(rb_dir),
        ..Config::default()
    };
    cfg.watches.push(common::watch("run-a"));
    let audit = Arc::new(AuditLog::open(&cfg.audit_url()).await.unwrap());
    let handles = Handles {
        clock: shared,
        source: sim.clone(),
        actuator: sim,
        pager: ConsolePager::new(),
        audit: audit.clone(),
        runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).unwrap()),
        checks,
    };
    let engine = Engine::new(Arc::new(cfg), handles, Arc::new(Metrics::new()));
    engine.start("test").await;
    Setup {
        engine,
        clock,
        audit,
        _dir: dir,
    }
}

impl Setup {
    /// Ticks (30 s each) until the run has a diagnosed incident; returns its id.
    async fn until_diagnosed(&self) -> String {
        for _ in 0..120 {
            self.clock.advance(30.0);
            self.engine.tick().await;
            if let Some(inc) = self
                .engine
                .view()
                .incidents
                .values()
                .find(|i| i.diagnosis.as_ref().is_some_and(|d| d.runbook == "probe"))
            {
                return inc.id.clone();
            }
        }
        panic!("no incident diagnosed with `probe` within an hour");
    }

    /// The diagnosis audit entry of an incident.
    async fn diagnosis_entry(&self, incident: &str) -> Value {
        let entries = self
            .audit
            .query(&Filter {
                incident: Some(incident.to_string()),
                limit: Some(10_000),
                ..Filter::default()
            })
            .await
            .unwrap();
        entries
            .into_iter()
            .find(|e| e.kind == EntryKind::Diagnosis)
            .map(|e| e.payload)
            .expect("a diagnosis entry")
    }

    async fn dry_run(&self) -> (Vec<Value>, Vec<String>) {
        let res = self
            .engine
            .execute_runbook(ExecuteRequest {
                runbook: "probe".into(),
                run: "run-a".into(),
                caller: "alice".into(),
                by: "alice".into(),
                reason: None,
                dry_run: true,
            })
            .await
            .expect("dry run");
        match res {
            ExecuteResult::DryRun { checks, steps, .. } => (
                checks
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap())
                    .collect(),
                steps.iter().map(|s| notes(&s.action)).collect(),
            ),
            other => panic!("not a dry run: {other:?}"),
        }
    }
}

/// What a step of the probe runbook says: its note, or the page's summary.
fn notes(a: &Action) -> String {
    match a {
        Action::Annotate { note } => note.clone(),
        Action::Page { summary, .. } => summary.clone(),
        other => other.to_string(),
    }
}

fn plan_notes(d: &Value) -> Vec<String> {
    d["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| serde_json::from_value::<Action>(s["action"].clone()).expect("an action"))
        .map(|a| notes(&a))
        .collect()
}

/// The simulated clock starts an hour ago, so everything the test asks about is in the past
/// and backfilled.
fn origin() -> f64 {
    ((unix_now() as i64 - 3600) / 15 * 15) as f64
}

/// Two GPUs (60 °C and 95 °C) and an unused quota, every 15 s from 3 h before `origin` to
/// 50 min after it.
fn history(origin: f64) -> String {
    let (start, end) = (origin as i64 - 3 * 3600, origin as i64 + 50 * 60);
    let mut om = String::from("# TYPE test_gpu_temp_celsius gauge\n");
    for (gpu, temp) in [(0, 60), (1, 95)] {
        for t in (start..=end).step_by(15) {
            om.push_str(&format!(
                "test_gpu_temp_celsius{{run=\"run-a\",gpu=\"{gpu}\"}} {temp} {t}\n"
            ));
        }
    }
    om.push_str("# TYPE test_tenant_quota_used gauge\n");
    for t in (start..=end).step_by(15) {
        om.push_str(&format!("test_tenant_quota_used{{run=\"run-a\"}} 0 {t}\n"));
    }
    om
}

/// PromQL answers first and picks a different branch than the charts would; the diagnosis audit
/// entry shows each check's value and source; when Prometheus dies, `hot` falls back to the
/// chart, `quota` becomes unknown and its page branch runs — at once, without a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_first_then_charts_then_unknown() {
    let Some((bin, promtool)) = binaries() else {
        return;
    };
    let origin = origin();
    let mut prom = Prometheus::start(&bin, &promtool, &history(origin)).await;
    let mut pcfg = PrometheusConfig::new(prom.url());
    pcfg.headers.insert("X-Scope-OrgID".into(), "team-a".into());
    let runner = PrometheusChecks::from_config(&pcfg).expect("runner");
    let s = setup(origin, Some(Arc::new(runner))).await;

    // Automatic incident: the hang is diagnosed with `probe`, its checks answered by PromQL.
    let id = s.until_diagnosed().await;
    let entry = s.diagnosis_entry(&id).await;
    let d = &entry["diagnosis"];
    assert_eq!(d["runbook"], "probe", "{entry}");
    let hot = &d["checks"][0];
    assert_eq!(hot["id"], "hot");
    assert_eq!(hot["source"], "promql", "{hot}");
    assert_eq!(hot["outcome"], "true", "{hot}");
    // Two series: the largest counts.
    assert_eq!(hot["value"], 95.0, "{hot}");
    assert_eq!(hot["query"], "test_gpu_temp_celsius{run=\"run-a\"}");
    let quota = &d["checks"][1];
    assert_eq!(
        (
            &quota["id"],
            &quota["source"],
            &quota["outcome"],
            &quota["value"]
        ),
        (
            &Value::from("quota"),
            &Value::from("promql"),
            &Value::from("false"),
            &Value::from(0.0)
        ),
        "{quota}"
    );
    assert_eq!(plan_notes(d), ["hot", "within quota"]);

    // The charts alone would have said the opposite for `hot`.
    let charts = s.engine.charts("run-a").await.expect("charts");
    let findings = s
        .engine
        .view()
        .incidents
        .get(&id)
        .map(|i| i.findings.clone())
        .expect("incident");
    let on_charts = diagnose_on_charts(
        &RunbookSet::from_sources(&[("probe.md", PROBE)]).unwrap(),
        &findings,
        &[],
        Some(&charts),
        babysitter::clock::Clock::now(s.clock.as_ref()),
    );
    assert_eq!(on_charts.checks[0].outcome.as_str(), "false");
    let chart_plan: Vec<String> = on_charts
        .plan
        .steps
        .iter()
        .map(|st| notes(&st.action))
        .collect();
    assert_eq!(chart_plan[0], "cool");

    // A dry run asks Prometheus too.
    let (checks, steps) = s.dry_run().await;
    assert_eq!(checks[0]["source"], "promql");
    assert_eq!(steps, ["hot", "within quota"]);

    // Prometheus down: the chart answers `hot`, nothing answers `quota`, its unknown branch runs.
    prom.kill();
    let started = Instant::now();
    let (checks, steps) = s.dry_run().await;
    assert!(
        started.elapsed() < CHECK_LIMITS.timeout,
        "a refused connection is not waited on"
    );
    assert_eq!(
        (&checks[0]["source"], &checks[0]["outcome"]),
        (&Value::from("chart"), &Value::from("false")),
        "{}",
        checks[0]
    );
    let detail = checks[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("Prometheus did not answer (GET http://127.0.0.1:")
            && detail.contains("; max(loss) over 10m = "),
        "{detail}"
    );
    assert_eq!(
        (&checks[1]["source"], &checks[1]["outcome"]),
        (&Value::from("unknown"), &Value::from("unknown")),
        "{}",
        checks[1]
    );
    assert!(checks[1].get("value").is_none(), "{}", checks[1]);
    assert_eq!(steps, ["cool", "nobody could tell the quota"]);
    assert!(s.audit.verify().await.expect("verify").ok());
}

/// A Prometheus that accepts connections and never answers: every check waits at most
/// [`CHECK_LIMITS`]'s timeout (the queries of a plan run side by side), then falls back; the
/// automatic diagnosis records the fallback and the loop goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_prometheus_costs_one_timeout_and_never_stalls_the_loop() {
    // The kernel completes connections into the backlog; nobody ever reads the requests.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut pcfg = PrometheusConfig::new(url);
    pcfg.timeout = Duration::from_secs(120);
    let runner = PrometheusChecks::from_config(&pcfg).expect("runner");
    let s = setup(origin(), Some(Arc::new(runner))).await;
    // One poll, so the run has charts.
    s.clock.advance(30.0);
    s.engine.tick().await;

    let started = Instant::now();
    let (checks, steps) = s.dry_run().await;
    let took = started.elapsed();
    assert!(
        took >= CHECK_LIMITS.timeout && took < CHECK_LIMITS.timeout + Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(checks[0]["source"], "chart", "{}", checks[0]);
    assert_eq!(
        checks[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .split(';')
            .next(),
        Some("Prometheus did not answer (no answer within 5s)")
    );
    assert_eq!(checks[1]["outcome"], "unknown");
    assert_eq!(steps, ["cool", "nobody could tell the quota"]);

    // The automatic path: the incident is diagnosed and driven on, one timeout later.
    let id = s.until_diagnosed().await;
    let entry = s.diagnosis_entry(&id).await;
    let sources: Vec<&Value> = entry["diagnosis"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| &c["source"])
        .collect();
    assert_eq!(sources, [&Value::from("chart"), &Value::from("unknown")]);
    assert_eq!(
        plan_notes(&entry["diagnosis"]),
        ["cool", "nobody could tell the quota"]
    );
    drop(silent);
}

/// `babysitter check --config` prints every error of the file, each with `file:line` and the
/// field, in file order, and fails.
#[test]
fn check_prints_every_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "poll_intervall = \"15s\"\nretention = \"soon\"\n\n[pagers.pd]\nkind = \"pagerduty\"\nrouting_key = \"k\"\n\n\
         [sources.prometheus]\nurl = \"http://prom:9090\"\n\n\
         [[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\nroute = \"pd\"\nautonomy = \"wild\"\nrunbooks = [\"nope\"]\n\n\
         [[watches]]\nrun = \"b\"\ntarget = { kind = \"simulated\", run = \"b\" }\nroute = \"nowhere\"\nprofile = \"nvidia\"\n\
         charts = { loss = \"rate(training_loss{$RUNS}[5m]\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .current_dir(dir.path())
        .env_remove("BABYSITTER_CONFIG")
        .output()
        .expect("run babysitter check");
    assert!(!out.status.success());
    let f = file.display().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = stderr.lines().map(|l| l.replacen(&f, "F", 1)).collect();
    assert_eq!(
        lines,
        [
            "F:1: poll_intervall: unknown field `poll_intervall`, expected one of `server`, `api`, `data_dir`, `audit`, `poll_interval`, `blind_page_after`, `retention`, `runbooks_dir`, `checks`, `policy`, `detectors`, `pager`, `sources`, `pagers`, `routes`, `default_route`, `paging`, `watches`, `kubernetes`, `agent`",
            "F:2: retention: invalid duration `soon` (expected number at 0); write e.g. \"90s\", \"10m\", \"1h\"",
            "F:15: watches[0].autonomy: unknown variant `wild`, expected one of `observe`, `suggest`, `act`",
            "F:21: watches[1].route: `nowhere` is neither a route nor a pager, and no default_route is set",
            "F:22: watches[1].profile: unknown profile `nvidia` (known: generic, dcgm, kube_state_metrics)",
            "F:23: watches[1].charts.loss: the PromQL does not parse: unclosed left parenthesis",
            "F:16: watches[0].runbooks (run `a`): unknown runbook id(s) nope",
        ],
        "{stderr}"
    );
}
