//! The dashboard in a real browser: headless Chromium driven through chromedriver's W3C
//! WebDriver HTTP API, against the engine on the simulator served on a loopback port.
//!
//! It checks what an on-call engineer relies on: the pages render, a chart marks the anomaly,
//! approving a pending action on the page carries it out and lands in the audit log, and a
//! chart label holding `<script>` is shown as text; the audit page says the hash chain verifies;
//! the runbooks page lists the runbooks and a dry run from a runbook's page shows the plan and
//! every policy decision. It saves screenshots of the main pages in
//! `docs/screenshots/`. Needs the Debian packages `chromium` and `chromium-driver` (scripts/test
//! installs them); without them it skips, unless `BABYSITTER_REQUIRE_CHROMIUM` is set.

mod common;

use common::services::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use babysitter::charts::{ChartKey, Role};
use babysitter::clock::SharedClock;
use babysitter::config::Config;
use babysitter::incident::IncidentState;
use babysitter::sim::{SimCluster, SimRunSpec};
use babysitter::sources::{ChartBatch, MetricsSource, PollRequest, SourceError};
use base64::Engine as _;
use common::{HISTORY, Harness, ORIGIN};
use serde_json::{Value, json};

/// A label value as a hostile exporter could set it.
const HOSTILE: &str = "<script>window.__xss=1</script>";

/// The simulator, plus one chart on `run-h` whose label value is markup.
struct HostileLabels(Arc<SimCluster>);

#[async_trait]
impl MetricsSource for HostileLabels {
    async fn poll(
        &self,
        requests: &[PollRequest],
        now: f64,
    ) -> Vec<Result<ChartBatch, SourceError>> {
        let mut out = self.0.poll(requests, now).await;
        for (req, res) in requests.iter().zip(out.iter_mut()) {
            if req.run != "run-h" {
                continue;
            }
            if let Ok(batch) = res {
                let copy = batch
                    .iter()
                    .find(|(k, _)| k.role == Role::GpuUtil && k.labels.is_empty())
                    .map(|(_, s)| s.clone());
                if let Some(samples) = copy {
                    batch.push((
                        ChartKey::new(Role::GpuUtil).with_label("node", HOSTILE),
                        samples,
                    ));
                }
            }
        }
        out
    }
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver and the Chromium it starts, in their own process group so that nothing is left
/// behind even when a test fails half-way.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        assert!(ready, "chromedriver did not become ready");
        let user_data = format!("--user-data-dir={}", b._profile.path().display());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", user_data],
            }
        }}});
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver command; panics with the driver's error message.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let res = req.send().await.map_err(|e| e.to_string())?;
        let v: Value = res.json().await.map_err(|e| e.to_string())?;
        let value = v["value"].clone();
        match value.get("error").and_then(Value::as_str) {
            Some(err) => Err(format!("{err}: {}", value["message"])),
            None => Ok(value),
        }
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits up to 20 s for an element; the page swaps its content on refresh, so a stale
    /// element is looked up again.
    async fn find(&self, css: &str) -> String {
        for _ in 0..200 {
            if let Ok(v) = self
                .try_call(
                    "POST",
                    &self.s("/element"),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await
                && let Some(id) = v[ELEMENT].as_str()
            {
                return id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element `{css}` on {}", self.url().await);
    }

    async fn click(&self, css: &str) {
        for _ in 0..20 {
            let el = self.find(css).await;
            match self
                .try_call("POST", &self.s(&format!("/element/{el}/click")), None)
                .await
            {
                Ok(_) => return,
                Err(e) if e.starts_with("stale element") => continue,
                Err(e) => panic!("click `{css}`: {e}"),
            }
        }
        panic!("`{css}` kept going stale");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call("GET", &self.s(&format!("/element/{el}/text")), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves the whole page (up to 2,600 px tall) as a PNG.
    async fn screenshot(&self, path: &Path) {
        let height = self
            .js("return document.documentElement.scrollHeight")
            .await
            .as_f64()
            .unwrap_or(1000.0)
            .clamp(600.0, 2600.0);
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({"width": 1400, "height": height as i64 + 120})),
        )
        .await;
        let b64 = self.call("GET", &self.s("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({"width": 1400, "height": 1000})),
        )
        .await;
    }

    async fn quit(mut self) {
        let _ = self.try_call("DELETE", &self.s(""), None).await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            self.kill();
        }
    }
}

/// Three runs like the demo's: a loss spike, GPU Xid errors (its plan needs an approval) and a
/// healthy run whose extra chart has a hostile label; served on a loopback port.
async fn app() -> (Harness, String) {
    let clock = babysitter::clock::ManualClock::new(ORIGIN);
    let shared: SharedClock = clock.clone();
    let sim = Arc::new(SimCluster::new(shared.clone(), 7));
    let mut cfg = Config::default();
    for (name, faults) in [
        ("run-a", common::spike_fault()),
        ("run-c", common::xid_fault()),
        ("run-h", vec![]),
    ] {
        let mut spec = SimRunSpec::new(name, ORIGIN - HISTORY);
        spec.faults = faults;
        sim.add_run(spec).unwrap();
        cfg.watches.push(common::watch(name));
    }
    let source = Arc::new(HostileLabels(sim.clone()));
    let h = Harness::with_parts(cfg, shared, clock, sim, source, |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    h.engine.set_public_url(base.clone());
    let router = babysitter::api::router(h.engine.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (h, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let chromium = find_binary(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]);
    let driver = find_binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        if std::env::var_os("BABYSITTER_REQUIRE_CHROMIUM").is_some() {
            panic!("chromium / chromium-driver are not installed (scripts/test installs them)");
        }
        eprintln!(
            "SKIPPED: chromium / chromium-driver are not installed (scripts/test installs them)"
        );
        return;
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    let (h, base) = app().await;
    // Play the runs forward until run-c waits for a human; run-a's spike is handled by then.
    assert!(h.until_approval_pending().await);
    for _ in 0..10 {
        h.tick().await;
    }
    let view = h.engine.view();
    let waiting = view
        .incidents
        .values()
        .find(|i| i.state == IncidentState::AwaitingApproval)
        .cloned()
        .expect("an incident waits for approval");
    assert_eq!(waiting.run, "run-c");
    let pending = waiting.pending.clone().unwrap();

    let b = Browser::start(&chromium, &driver).await;

    // The runs at a glance.
    b.goto(&format!("{base}/")).await;
    let table = b.text("table.runs").await;
    for run in ["run-a", "run-c", "run-h"] {
        assert!(table.contains(run), "{table}");
    }
    assert!(table.contains("paused"), "{table}");
    assert!(b.text(".stats").await.contains("1 waiting for approval"));
    b.screenshot(&shots.join("runs.png")).await;

    // The run's charts mark each finding where it was raised.
    b.goto(&format!("{base}/runs/run-a")).await;
    b.find("svg g.finding-marker").await;
    let marks = b
        .js(
            r#"return Array.from(document.querySelectorAll('figure.chart')).map(f => [
                 f.querySelector('figcaption').textContent,
                 Array.from(f.querySelectorAll('g.finding-marker')).map(g => g.dataset.kind)])"#,
        )
        .await;
    let loss = marks
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == "loss")
        .unwrap_or_else(|| panic!("no loss chart: {marks}"));
    assert!(
        loss[1]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "loss_spike"),
        "{marks}"
    );
    // The marker sits inside the drawing, on the time axis where it was raised.
    let inside = b
        .js(
            r#"const g = document.querySelector('g.finding-marker[data-kind="loss_spike"] circle');
               const svg = g.ownerSVGElement.getBoundingClientRect(), c = g.getBoundingClientRect();
               return c.width > 0 && c.left >= svg.left && c.right <= svg.right"#,
        )
        .await;
    assert_eq!(inside, true);
    b.screenshot(&shots.join("run.png")).await;

    // A label value with markup is text, and no script ran.
    b.goto(&format!("{base}/runs/run-h")).await;
    b.find("figure.chart").await;
    let captions = b
        .js("return Array.from(document.querySelectorAll('figcaption')).map(e => e.textContent)")
        .await;
    assert!(
        captions
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str() == Some(&format!("gpu_util{{node={HOSTILE}}}"))),
        "{captions}"
    );
    assert_eq!(
        b.js("return [typeof window.__xss, document.querySelectorAll('main script').length]")
            .await,
        json!(["undefined", 0])
    );

    // Sign in as the operator from the incident page, and approve there.
    let incident_url = format!("{base}/incidents/{}", waiting.id);
    b.goto(&incident_url).await;
    assert!(
        b.text("#pending")
            .await
            .contains("Sign in with an operator token")
    );
    b.click("#pending a").await;
    b.type_into("input[name=token]", common::OPERATOR_TOKEN)
        .await;
    b.click("form.login button[type=submit]").await;
    b.find("form.settle button.approve").await;
    assert_eq!(b.url().await, incident_url);
    assert!(b.text("header .who").await.contains("alice"));
    b.screenshot(&shots.join("incident.png")).await;
    b.type_into("form.settle input[name=reason]", "node cordoned by hand")
        .await;
    b.click("form.settle button.approve").await;
    assert!(b.text("#done").await.contains("approved"));

    // babysitter carries it out on its next pass.
    let key = h
        .until(600.0, |v| {
            v.incidents[&waiting.id]
                .actions
                .iter()
                .any(|a| a.step == pending.step && a.attempt == pending.attempt && a.ok)
        })
        .await;
    assert!(key, "the approved action was not carried out");
    let done = h.engine.view().incidents[&waiting.id].clone();
    let action = done
        .actions
        .iter()
        .find(|a| a.step == pending.step)
        .unwrap();
    assert_eq!(action.action, pending.action);

    // ... and the audit log shows who approved it and what was done.
    b.goto(&format!("{base}/audit?incident={}", waiting.id))
        .await;
    let rows = b
        .js(
            r#"return Array.from(document.querySelectorAll('table.audit tbody tr')).map(r =>
                 [r.dataset.kind, r.children[5].textContent, r.children[6].textContent])"#,
        )
        .await;
    let rows = rows.as_array().unwrap();
    let approved = rows
        .iter()
        .position(|r| r[0] == "approved")
        .unwrap_or_else(|| panic!("no approved entry: {rows:?}"));
    assert_eq!(rows[approved][1], "api:alice");
    assert!(
        rows[approved][2]
            .as_str()
            .unwrap()
            .contains("node cordoned by hand")
    );
    // Newest first: the outcome of the approved action is above the approval.
    let outcome = rows
        .iter()
        .position(|r| r[0] == "action_outcome" && r[2].as_str().unwrap().contains(&action.key))
        .unwrap_or_else(|| panic!("no outcome for {}: {rows:?}", action.key));
    assert!(outcome < approved);
    // The hash chain is verified on the page, above the entries.
    let chain = b.text("#chain").await;
    assert!(chain.contains("Hash chain verified:"), "{chain}");
    assert!(b.text("#leadership").await.contains("leader"));
    b.screenshot(&shots.join("audit.png")).await;

    // The runbooks, and a dry run of one with checks from its page: the plan and every
    // policy decision, with nothing done.
    b.goto(&format!("{base}/runbooks")).await;
    let list = b.text("table.runbooks").await;
    for id in ["gpu-hardware-error", "grad-explosion", "loss-spike"] {
        assert!(list.contains(id), "{list}");
    }
    b.click(r#"table.runbooks a[href="/runbooks/grad-explosion"]"#)
        .await;
    b.find("form.dry-run").await;
    assert!(b.text("main").await.contains("Plan per outcome"));
    b.js("document.querySelector('form.dry-run select[name=run]').value = 'run-a'")
        .await;
    b.click("form.dry-run button[type=submit]").await;
    let result = b.text("#dry-run").await;
    assert!(result.contains("Nothing was done"), "{result}");
    assert!(result.contains("loss_followed"), "{result}");
    let decisions = b
        .js(
            r#"return Array.from(document.querySelectorAll('#dry-run table.decisions tbody tr')).map(r =>
                 [r.dataset.verdict, r.children[3].textContent, r.children[4].textContent])"#,
        )
        .await;
    let decisions = decisions.as_array().unwrap();
    assert!(decisions.len() >= 2, "{decisions:?}");
    for d in decisions {
        assert!(
            ["allow", "needs_approval", "deny"].contains(&d[0].as_str().unwrap()),
            "{d}"
        );
        assert!(!d[1].as_str().unwrap().is_empty() && !d[2].as_str().unwrap().is_empty());
    }
    b.screenshot(&shots.join("runbooks.png")).await;

    // The incident page after the approval, with its timeline (a closing screenshot).
    b.goto(&incident_url).await;
    b.find("ol.timeline").await;
    b.screenshot(&shots.join("incident-after.png")).await;
    b.quit().await;
}
