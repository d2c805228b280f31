//! The Prometheus source against a real Prometheus (the Debian package), started here on a free
//! loopback port with a temporary storage dir. It scrapes a real HTTP exporter served by the
//! test (training metrics in the text exposition format); long histories are backfilled with
//! `promtool tsdb create-blocks-from openmetrics` before it starts.
//!
//! A test is skipped (with a message) only when no `prometheus` binary exists and none can be
//! installed; `scripts/test` installs it.

mod common;

use common::services::{free_port, prometheus_binaries as binaries};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use babysitter::act::Target;
use babysitter::charts::{ChartKey, Sample};
use babysitter::clock::{ManualClock, SharedClock, SystemClock, unix_now};
use babysitter::config::Config;
use babysitter::sim::{SimCluster, SimRunSpec};
use babysitter::sources::prometheus::PrometheusSource;
use babysitter::sources::prometheus::settings::{ChartTemplate, ProfileSel, PrometheusConfig};
use babysitter::sources::{ChartBatch, MetricsSource, PollRequest, SourceError};

/// A training exporter: serves whatever text the test puts in `body` on `/metrics`.
struct Exporter {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
}

impl Exporter {
    async fn start() -> Exporter {
        let body = Arc::new(Mutex::new(String::new()));
        let b = body.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let b = b.clone();
                async move {
                    let text = b.lock().map(|s| s.clone()).unwrap_or_default();
                    ([("content-type", "text/plain; version=0.0.4")], text)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Exporter { addr, body }
    }

    fn set(&self, text: String) {
        *self.body.lock().unwrap() = text;
    }
}

/// A Prometheus process on loopback; killed on drop.
struct Prometheus {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Prometheus {
    /// Writes the config (scraping `target` every second, if any); does not start yet.
    fn new(bin: PathBuf, target: Option<SocketAddr>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let scrape = match target {
            Some(t) => format!(
                "scrape_configs:\n  - job_name: train\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{t}']\n"
            ),
            None => String::new(),
        };
        std::fs::write(
            dir.path().join("prom.yml"),
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{scrape}"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Prometheus {
            bin,
            dir,
            port: free_port(),
            child: None,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prom.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prom.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.data().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.url());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                std::fs::read_to_string(self.dir.path().join("prom.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until an instant query for `expr` returns at least `n` series, then 2 s more: a
    /// range query with a 1 s step ends at the last whole second, which must pass the scrape.
    async fn wait_for(&self, expr: &str, n: usize) {
        let client = prometheus_http_query::Client::try_from(self.url().as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.query(expr).get().await
                && r.data().as_vector().is_some_and(|v| v.len() >= n)
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            assert!(Instant::now() < deadline, "no data for {expr}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn watch(run: &str, profile: &[&str]) -> babysitter::config::WatchConfig {
    let mut w = common::watch(run);
    w.profile = Some(ProfileSel::Many(
        profile.iter().map(|s| s.to_string()).collect(),
    ));
    w
}

fn req(run: &str, since: Option<f64>) -> PollRequest {
    PollRequest {
        run: run.into(),
        target: Target::Simulated { run: run.into() },
        since,
    }
}

fn chart<'a>(batch: &'a ChartBatch, key: &str) -> &'a [Sample] {
    let key: ChartKey = key.parse().unwrap();
    batch
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| s.as_slice())
        .unwrap_or_else(|| panic!("no chart {key} in {:?}", keys(batch)))
}

fn keys(batch: &ChartBatch) -> Vec<String> {
    batch.iter().map(|(k, _)| k.to_string()).collect()
}

fn loss_at(run: usize, t: i64) -> f64 {
    // Exactly representable in decimal, so the text round trip is exact.
    2.0 + (run as f64) * 0.5 + ((t / 15) % 40) as f64 * 0.125
}

/// Two hours of history for r0 and r1, backfilled: every chart comes back with its values, at
/// the step instants, labelled per GPU, NaN kept; a run Prometheus has never seen is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_history_is_read_correctly() {
    let Some((bin, promtool)) = binaries() else {
        return;
    };
    let mut prom = Prometheus::new(bin, None);
    let now = unix_now();
    let end = ((now as i64) / 15) * 15 - 600;
    let start = end - 2 * 3600;
    let nan_at = start + 3600;
    let mut om = String::new();
    om.push_str("# TYPE training_step gauge\n");
    for run in 0..2 {
        for t in (start..=end).step_by(15) {
            om.push_str(&format!(
                "training_step{{run=\"r{run}\"}} {} {t}\n",
                (t - start) / 15
            ));
        }
    }
    om.push_str("# TYPE training_loss gauge\n");
    for run in 0..2 {
        for t in (start..=end).step_by(15) {
            let v = if run == 1 && t == nan_at {
                "NaN".to_string()
            } else {
                loss_at(run, t).to_string()
            };
            om.push_str(&format!("training_loss{{run=\"r{run}\"}} {v} {t}\n"));
        }
    }
    om.push_str("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n");
    for gpu in 0..2 {
        for t in (start..=end).step_by(15) {
            om.push_str(&format!(
                "DCGM_FI_DEV_GPU_UTIL{{run=\"r0\",Hostname=\"node-a\",gpu=\"{gpu}\"}} {} {t}\n",
                90 + gpu
            ));
        }
    }
    om.push_str("# EOF\n");
    let file = prom.dir.path().join("history.om");
    std::fs::write(&file, om).unwrap();
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(prom.data())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prom.start().await;

    let mut cfg = PrometheusConfig::new(prom.url());
    cfg.lookback = Duration::from_secs(3 * 3600);
    cfg.max_query_window = Duration::from_secs(3600);
    let src = PrometheusSource::new(
        &cfg,
        &[
            watch("r0", &["generic", "dcgm"]),
            watch("r1", &["generic"]),
            watch("ghost", &["generic"]),
        ],
    )
    .unwrap();
    let res = src
        .poll(&[req("r0", None), req("r1", None), req("ghost", None)], now)
        .await;
    let r0 = res[0].as_ref().expect("r0 readable");
    let r1 = res[1].as_ref().expect("r1 readable");
    assert_eq!(res[2], Ok(Vec::new()), "no series is not an error");

    let loss0 = chart(r0, "loss");
    assert!(
        loss0.windows(2).all(|w| w[0].t < w[1].t),
        "sorted across slices"
    );
    let (history, carried): (Vec<Sample>, Vec<Sample>) =
        loss0.iter().partition(|s| s.t <= end as f64);
    assert_eq!(history.len(), ((end - start) / 15 + 1) as usize);
    assert_eq!(history[0].t, start as f64);
    assert!(history.iter().all(|s| s.v == loss_at(0, s.t as i64)));
    // After the last sample Prometheus carries it for its 5-min look-back delta, no longer.
    assert!(
        !carried.is_empty() && carried.len() <= 20,
        "{}",
        carried.len()
    );
    assert!(carried.iter().all(|s| s.v == loss_at(0, end)));
    let step0 = chart(r0, "step");
    let last_real = step0.iter().rev().find(|s| s.t <= end as f64);
    assert_eq!(last_real.map(|s| (s.t, s.v)), Some((end as f64, 480.0)));
    assert!(step0.iter().all(|s| s.t <= (end + 300) as f64));
    let loss1 = chart(r1, "loss");
    let nan = loss1.iter().find(|s| s.t == nan_at as f64).unwrap();
    assert!(nan.v.is_nan(), "NaN is a value, not a gap");
    assert_eq!(
        loss1
            .iter()
            .find(|s| s.t == (nan_at + 15) as f64)
            .map(|s| s.v),
        Some(loss_at(1, nan_at + 15))
    );
    let g1 = chart(r0, "gpu_util{Hostname=node-a,gpu=1}");
    assert!(g1.iter().all(|s| s.v == 91.0) && g1.len() > 400);
    assert!(
        !keys(r1).iter().any(|k| k.starts_with("gpu_util")),
        "r1 has no dcgm profile"
    );

    // One query per template and window slice, whatever the number of runs.
    let st = src.stats();
    let templates = src.plan("r0").unwrap().len(); // generic + dcgm ⊇ generic
    let slices = 3;
    assert_eq!(st.requests as usize, templates * slices, "{st:?}");
    assert_eq!(st.failed_queries, 0);
}

fn exposition(step: u64, runs: &[&str]) -> String {
    let mut s = String::from("# TYPE training_step gauge\n");
    for r in runs {
        s.push_str(&format!("training_step{{run=\"{r}\"}} {step}\n"));
    }
    s.push_str("# TYPE training_loss gauge\n");
    for (i, r) in runs.iter().enumerate() {
        s.push_str(&format!(
            "training_loss{{run=\"{r}\"}} {}\n",
            3.0 - step as f64 * 0.01 + i as f64
        ));
    }
    s.push_str("# TYPE training_step_time_seconds gauge\n");
    for r in runs {
        for rank in 0..2 {
            s.push_str(&format!(
                "training_step_time_seconds{{run=\"{r}\",rank=\"{rank}\"}} {}\n",
                0.5 + rank as f64
            ));
        }
    }
    s
}

/// Scraped live: the second poll asks only for what is newer than the first one saw (plus the
/// overlap), and sends one query per chart template for all three runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_polls_fetch_only_new_samples() {
    let Some((bin, _)) = binaries() else {
        return;
    };
    let runs = ["a", "b", "c"];
    let exporter = Exporter::start().await;
    exporter.set(exposition(100, &runs));
    let mut prom = Prometheus::new(bin, Some(exporter.addr));
    prom.start().await;
    prom.wait_for("training_step", 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut cfg = PrometheusConfig::new(prom.url());
    cfg.step = Duration::from_secs(1);
    cfg.overlap = Duration::from_secs(2);
    cfg.lookback = Duration::from_secs(60);
    let watches: Vec<_> = runs.iter().map(|r| watch(r, &["generic"])).collect();
    let src = PrometheusSource::new(&cfg, &watches).unwrap();
    let templates = src.plan("a").unwrap().len() as u64;

    let now1 = unix_now();
    let first = src
        .poll(&runs.map(|r| req(r, None)), now1)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, SourceError>>()
        .unwrap();
    assert_eq!(src.stats().requests, templates, "one query per template");
    let since = first
        .iter()
        .flat_map(|b| b.iter().flat_map(|(_, s)| s.iter().map(|x| x.t)))
        .max_by(f64::total_cmp)
        .unwrap();
    assert!(chart(&first[0], "step").iter().all(|s| s.v == 100.0));
    assert_eq!(chart(&first[1], "step_time{rank=1}").last().unwrap().v, 1.5);
    assert_eq!(chart(&first[2], "loss").last().unwrap().v, 3.0 - 1.0 + 2.0);

    exporter.set(exposition(105, &runs));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = src.stats();
    let now2 = unix_now();
    let second = src
        .poll(&runs.map(|r| req(r, Some(since))), now2)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, SourceError>>()
        .unwrap();
    let after = src.stats();
    assert_eq!(after.requests - before.requests, templates);
    let max_per_chart = (now2 - since + 2.0).ceil() as usize + 1;
    for b in &second {
        for (k, s) in b {
            assert!(!s.is_empty(), "{k}");
            assert!(s.len() <= max_per_chart, "{k}: {} samples", s.len());
            assert!(
                s.iter().all(|x| x.t >= since - 2.0 && x.t <= now2),
                "{k}: only samples after since - overlap"
            );
        }
    }
    assert_eq!(chart(&second[0], "step").last().unwrap().v, 105.0);
    let first_samples: usize = first
        .iter()
        .flat_map(|b| b.iter().map(|(_, s)| s.len()))
        .sum();
    let second_samples: usize = second
        .iter()
        .flat_map(|b| b.iter().map(|(_, s)| s.len()))
        .sum();
    assert!(second_samples <= (after.samples - before.samples) as usize);
    assert!(
        first_samples > 0 && second_samples > 0,
        "{first_samples} then {second_samples}"
    );
}

/// Prometheus killed mid-run: the watch turns blind (its error says why), nothing is detected or
/// done; Prometheus back on the same storage: the watch reads its charts again, history included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_blinds_the_watch_and_it_recovers() {
    let Some((bin, _)) = binaries() else {
        return;
    };
    let exporter = Exporter::start().await;
    exporter.set(exposition(10, &["r1"]));
    let mut prom = Prometheus::new(bin, Some(exporter.addr));
    prom.start().await;
    prom.wait_for("training_step", 1).await;

    let mut pcfg = PrometheusConfig::new(prom.url());
    pcfg.step = Duration::from_secs(1);
    pcfg.lookback = Duration::from_secs(60);
    pcfg.retries = 1;
    pcfg.retry_backoff = Duration::from_millis(50);
    pcfg.timeout = Duration::from_secs(2);
    let mut cfg = Config::default();
    cfg.watches.push(watch("r1", &["generic"]));
    cfg.sources.prometheus = Some(pcfg.clone());
    let src = Arc::new(PrometheusSource::new(&pcfg, &cfg.watches).unwrap());
    let sim = Arc::new(SimCluster::new(Arc::new(SystemClock), 1));
    sim.add_run(SimRunSpec::new("r1", unix_now() - 3600.0))
        .unwrap();
    let shared: SharedClock = Arc::new(SystemClock);
    let h = common::Harness::with_parts(
        cfg,
        shared,
        ManualClock::new(unix_now()),
        sim,
        src.clone(),
        |_| {},
    )
    .await;

    h.engine.tick().await;
    let w = h.engine.view().watches[0].clone();
    assert_ne!(w.status, "blind", "{w:?}");
    assert_eq!(w.latest.get("step"), Some(&Some(10.0)), "{w:?}");
    let seen = w.last_sample.unwrap();

    prom.kill();
    exporter.set(exposition(11, &["r1"]));
    h.engine.tick().await;
    let w = h.engine.view().watches[0].clone();
    assert_eq!(w.status, "blind", "{w:?}");
    assert!(w.blind_since.is_some());
    let err = w.source_error.clone().unwrap_or_default();
    assert!(
        err.contains(&prom.url()),
        "the error names Prometheus: {err}"
    );
    assert!(w.active_findings.is_empty(), "no detection while blind");
    assert!(
        h.engine.view().incidents.is_empty(),
        "nothing acts while blind"
    );
    h.engine.tick().await;
    assert_eq!(h.engine.view().watches[0].status, "blind");

    prom.start().await;
    prom.wait_for("training_step == 11", 1).await;
    h.engine.tick().await;
    let w = h.engine.view().watches[0].clone();
    assert_ne!(w.status, "blind", "{w:?}");
    assert!(w.source_error.is_none());
    assert_eq!(w.latest.get("step"), Some(&Some(11.0)));
    assert!(w.last_sample.unwrap() > seen);
    assert!(h.incidents_of("r1").is_empty());
    let st = src.stats();
    assert!(st.failed_queries > 0 && st.retries > 0, "{st:?}");
}

/// Kills the `babysitter serve` child on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// `babysitter serve` on a real Prometheus scraping a live training exporter: a NaN injected into
/// the published loss is detected, opens an incident, and is diagnosed by the `nonfinite` runbook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_detects_a_fault_injected_into_published_metrics() {
    let Some((bin, _)) = binaries() else {
        return;
    };
    let exporter = Exporter::start().await;
    let fault = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (body, fault) = (exporter.body.clone(), fault.clone());
        tokio::spawn(async move {
            for i in 0u64.. {
                let loss = if fault.load(std::sync::atomic::Ordering::Relaxed) {
                    "NaN".to_string()
                } else {
                    format!("{}", 2.5 - (i % 100) as f64 * 0.001)
                };
                let text = format!(
                    "# TYPE training_step gauge\ntraining_step{{run=\"e2e\"}} {i}\n# TYPE training_loss gauge\ntraining_loss{{run=\"e2e\"}} {loss}\n"
                );
                if let Ok(mut b) = body.lock() {
                    *b = text;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    let mut prom = Prometheus::new(bin, Some(exporter.addr));
    prom.start().await;
    prom.wait_for("training_step", 1).await;

    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let config = dir.path().join("babysitter.toml");
    std::fs::write(
        &config,
        format!(
            r#"
poll_interval = "2s"
data_dir = "{data}"
[server]
listen = "127.0.0.1:{api_port}"
[sources.prometheus]
url = "{url}"
step = "1s"
lookback = "2m"
overlap = "3s"
[[watches]]
run = "e2e"
target = {{ kind = "simulated", run = "e2e" }}
autonomy = "suggest"
profile = "generic"
"#,
            data = dir.path().join("data").display(),
            url = prom.url(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_babysitter"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start babysitter serve"),
    );
    let api = format!("http://127.0.0.1:{api_port}/api/v1");
    let serve_log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();

    // Healthy first: the watch reads its charts and nothing is open.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = get_json(&format!("{api}/watches/e2e")).await;
        if let Some(w) = &w
            && w["status"] == "running"
            && w["latest"]["step"].as_f64().is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch never read its charts: {w:?}\n{}",
            serve_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let open = get_json(&format!("{api}/incidents?run=e2e")).await.unwrap();
    assert!(
        open["incidents"].as_array().is_some_and(|a| a
            .iter()
            .all(|i| !i["kinds"].to_string().contains("nonfinite"))),
        "{open}"
    );

    fault.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let incident = loop {
        let found = get_json(&format!("{api}/incidents?run=e2e"))
            .await
            .and_then(|v| {
                v["incidents"].as_array().and_then(|a| {
                    a.iter()
                        .find(|i| i["kinds"].to_string().contains("nonfinite"))
                        .cloned()
                })
            });
        if let Some(i) = found
            && !i["runbook"].is_null()
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no nonfinite incident\n{}",
            serve_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(incident["runbook"], "nonfinite", "{incident}");
    assert_eq!(incident["run"], "e2e");
    let watch = get_json(&format!("{api}/watches/e2e")).await.unwrap();
    assert_ne!(watch["status"], "blind", "{watch}");
    let audit = reqwest::get(format!("{api}/audit?run=e2e"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("nonfinite"),
        "the finding is audited: {audit}"
    );
}

/// Benchmark, not a test: `cargo test --test prometheus -- --ignored --nocapture bench`
/// (`BENCH_RUNS=10000` for more runs). Backfills N runs × 6 charts × 30 min at 15 s, then
/// prints, per poll, requests, wall time, samples and bytes, and the time of the same PromQL sent
/// directly over plain HTTP (body read, not decoded). Debug builds decode JSON several times
/// slower than release: compare ratios within one build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures"]
async fn bench_poll_many_runs() {
    let Some((bin, promtool)) = binaries() else {
        return;
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let metrics = [
        "training_step",
        "training_loss",
        "training_grad_norm",
        "training_learning_rate",
        "training_throughput",
        "training_data_wait_seconds",
    ];
    let mut prom = Prometheus::new(bin, None);
    let now = unix_now();
    let end = ((now as i64) / 15) * 15;
    let start = end - 1800;
    let file = prom.dir.path().join("bench.om");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for m in metrics {
            writeln!(f, "# TYPE {m} gauge").unwrap();
            for r in 0..runs {
                for t in (start..end).step_by(15) {
                    writeln!(
                        f,
                        "{m}{{run=\"run-{r}\"}} {} {t}",
                        (t - start) / 15 + r as i64
                    )
                    .unwrap();
                }
            }
        }
        writeln!(f, "# EOF").unwrap();
    }
    let t0 = Instant::now();
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(prom.data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "backfill of {runs} runs x 6 charts: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    prom.start().await;

    let mut cfg = PrometheusConfig::new(prom.url());
    cfg.lookback = Duration::from_secs(1800);
    let mut watches = Vec::new();
    for r in 0..runs {
        let mut w = watch(&format!("run-{r}"), &["generic"]);
        for key in [
            "eval_loss",
            "loss_scale",
            "skipped_steps",
            "step_time",
            "compute_time",
            "checkpoint_age",
        ] {
            w.charts
                .insert(key.parse().unwrap(), ChartTemplate::new("", &[]));
        }
        watches.push(w);
    }
    let src = PrometheusSource::new(&cfg, &watches).unwrap();
    let requests: Vec<_> = (0..runs).map(|r| req(&format!("run-{r}"), None)).collect();
    for (label, since) in [
        ("first poll (30 min)", None),
        ("incremental (last 60 s)", Some(now - 60.0)),
    ] {
        let reqs: Vec<_> = requests
            .iter()
            .map(|r| PollRequest { since, ..r.clone() })
            .collect();
        let before = src.stats();
        let rss_before = reset_peak_rss();
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let res = src.poll(&reqs, now).await;
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let peak = peak_rss_mb();
        let after = src.stats();
        assert!(res.iter().all(|r| r.is_ok()));
        // The same PromQL, sent directly, two at a time, not decoded into charts.
        let queries = src.plan_queries(&reqs, now);
        // Raw: plain HTTP, the body read but not decoded, two at a time (the source's limit).
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/query_range", prom.url());
        let labels = babysitter::sources::prometheus::profile::Labels {
            run_label: "run",
            pod_run_label: "label_run",
        };
        let t = Instant::now();
        let mut bytes = 0usize;
        for pair in queries.chunks(2) {
            let futs: Vec<_> = pair
                .iter()
                .map(|q| {
                    let runs: Vec<&str> = q.runs.iter().map(|(r, _)| r.as_str()).collect();
                    let expr = babysitter::sources::prometheus::profile::expand(
                        &q.template.expr,
                        &labels,
                        &runs,
                    );
                    let form = [
                        ("query", expr),
                        ("start", q.start.to_string()),
                        ("end", q.end.to_string()),
                        ("step", "15".to_string()),
                    ];
                    let req = http.post(&url).form(&form);
                    tokio::spawn(async move { req.send().await?.bytes().await })
                })
                .collect();
            for f in futs {
                bytes += f.await.unwrap().unwrap().len();
            }
        }
        let raw = t.elapsed().as_secs_f64();
        println!(
            "{runs} runs, {label}: babysitter CPU {cpu:.3}s, peak RSS {peak:.0} MB (was {rss_before:.0} MB before the poll)"
        );
        println!(
            "{runs} runs, {label}: {} requests, {} series, {} samples, {:.1} MB, poll {wall:.3}s, raw queries {raw:.3}s, ratio {:.2}",
            after.requests - before.requests,
            after.series - before.series,
            after.samples - before.samples,
            bytes as f64 / 1e6,
            wall / raw
        );
    }
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the kernel's peak-RSS mark to the current RSS (`clear_refs` 5) and returns it in MB.
fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    peak_rss_mb()
}

/// Peak resident memory of this process since the last reset, in MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
