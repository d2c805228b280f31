//! Engine: the babysitting loop.
//!
//! One [`Engine::tick`] is one pass of watch → charts → detect → incident → diagnose → policy →
//! act → verify → page, with every step written to the audit log. The stages themselves are
//! pure functions ([`crate::detect`], [`crate::runbook::diagnose`], [`crate::policy::decide`],
//! [`crate::verify::evaluate`]); the engine owns the state between polls and the side effects
//! (the [`Handles`]: source, actuator, pager, audit log, clock).
//!
//! Promises kept here:
//! - no action without a policy decision, recorded with its reason, and an audit intent entry
//!   written *before* the action runs (if the intent cannot be written, nothing runs);
//! - no detection and no action on a watch whose charts cannot be read (it is *blind*);
//! - an action that fails, a verification that fails for the last time, a denied step and a
//!   rejected approval all escalate to a human.
//! - a finding that joins an incident and calls for another runbook replaces its plan only while
//!   none of the plan's actions has run, and withdraws the pending approval (an approval is for
//!   one action of one plan); afterwards the plan is kept and the audit log says what the
//!   finding would have picked.

mod agent;
mod drive;
mod events;
mod execute;
mod recover;
mod suspension;
mod view;
mod watches;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Mutex, Notify, broadcast};

pub use events::{Event, EventKind};
pub use execute::{ExecuteError, ExecuteRequest, ExecuteResult, PlannedStep};
pub use recover::{CRASH_AFTER_INTENT_ENV, Recovered, RestoreReport, SkippedIncident};
pub use suspension::{HELD_RULE, Held, SuspendedBy};
pub use view::{View, WatchView};
pub use watches::{Leadership, WatchError};

use crate::act::Actuator;
use crate::audit::{AuditLog, EntryKind, NewEntry};
use crate::charts::ChartSet;
use crate::clock::SharedClock;
use crate::config::{Config, WatchConfig};
use crate::detect::Severity;
use crate::detect::{DetectContext, Finding, Hysteresis, detect_all};
use crate::incident::{Incident, IncidentState};
use crate::notify::{Page, PageAction, Pager};
use crate::policy::PastAction;
use crate::runbook::{CheckLimits, CheckRunner, RunbookSet};
use crate::sources::{MetricsSource, PollRequest};
use crate::telemetry::{KindLabel, Metrics, RunLabel};

/// Every side-effecting handle the engine uses.
#[derive(Clone)]
pub struct Handles {
    pub clock: SharedClock,
    pub source: Arc<dyn MetricsSource>,
    pub actuator: Arc<dyn Actuator>,
    pub pager: Arc<dyn Pager>,
    pub audit: Arc<AuditLog>,
    pub runbooks: Arc<RunbookSet>,
    /// Answers runbook checks with PromQL (`serve` with `[sources.prometheus]`); `None`: checks
    /// are answered from the run's charts (the demo, replay, most tests).
    pub checks: Option<Arc<dyn CheckRunner>>,
}

/// How the engine asks [`Handles::checks`] when `[checks]` is not configured: 5 s per query,
/// 4 at a time ([`Config::check_limits`] gives the configured ones).
pub const CHECK_LIMITS: CheckLimits = CheckLimits::DEFAULT;

impl Engine {
    /// The check runner with the configured `[checks]` limits, as
    /// [`crate::runbook::diagnose_with`] takes it.
    pub(crate) fn check_runner(&self) -> Option<(&dyn CheckRunner, CheckLimits)> {
        self.h
            .checks
            .as_deref()
            .map(|r| (r, self.cfg.check_limits()))
    }
}

/// Per-watch state kept between polls.
pub(crate) struct WatchState {
    pub cfg: WatchConfig,
    pub charts: ChartSet,
    pub hysteresis: Hysteresis,
    /// Newest sample time seen (the next poll asks for what is newer).
    pub last_sample: Option<f64>,
    /// Samples before this belong to a life of the run before babysitter restarted/resumed it.
    pub since: Option<f64>,
    /// Babysitter paused this run.
    pub paused: bool,
    /// Someone other than babysitter holds the workload suspended (a human, Kueue): detection
    /// treats the run as paused and workload changes wait for a human (see `suspension`).
    pub held: Option<suspension::Held>,
    /// The workload's suspend field as Kubernetes discovery last reported it (reconciled with
    /// `paused` and `held` on the next pass).
    pub observed: Option<suspension::Observed>,
    /// The last poll failed: the watch is blind, nothing is detected or done on stale data.
    pub blind_since: Option<f64>,
    pub source_error: Option<String>,
    /// On-call was paged about this blindness (resolved when sight returns).
    pub blind_paged: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub watches: BTreeMap<String, WatchState>,
    pub incidents: BTreeMap<String, Incident>,
    pub history: Vec<PastAction>,
    pub next_incident: u64,
    /// A finding of the incident's family that started again while it was being verified.
    pub recurred: HashMap<String, Finding>,
    pub ticks: u64,
}

/// Errors of the approve / reject API.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no pending action `{0}`")]
    NotFound(String),
    #[error("action `{id}` is not waiting for approval (incident {incident} is {state})")]
    NotPending {
        id: String,
        incident: String,
        state: IncidentState,
    },
    #[error("the audit log cannot be written, so nothing is approved: {0}")]
    Audit(String),
    /// The incident was re-diagnosed before the action ran: an approval is for one action of
    /// one plan, and never carries over to another.
    #[error(
        "action `{id}` was withdrawn: incident {incident} was re-diagnosed (runbook {runbook} → {replaced_by}) before it ran, so it will not run; {now}"
    )]
    Withdrawn {
        id: String,
        incident: String,
        runbook: String,
        replaced_by: String,
        /// What the incident waits for now (the new plan's pending action, if any).
        now: String,
    },
}

pub struct Engine {
    cfg: Arc<Config>,
    h: Handles,
    state: Mutex<State>,
    view: RwLock<View>,
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
    /// Turns `true` when [`Engine::run`] stops, so long-lived readers (the dashboard's event
    /// stream) end and let the HTTP server shut down.
    stopped: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// The optional LLM investigator and the reports its tasks hand back.
    agent: agent::AgentHook,
    /// Base URL of the API, for approve commands and links in pages.
    public_url: RwLock<String>,
    /// On-call was paged that the audit log cannot be written (resolved when it can again).
    audit_paged: std::sync::atomic::AtomicBool,

    /// Who leads: only the leader polls and acts (a single instance always leads).
    leadership: RwLock<Leadership>,
}

impl Engine {
    pub fn new(cfg: Arc<Config>, h: Handles, metrics: Arc<Metrics>) -> Arc<Engine> {
        let (events, _) = broadcast::channel(1024);
        let mut st = State {
            next_incident: 1,
            ..State::default()
        };
        for w in &cfg.watches {
            st.watches.insert(w.run.clone(), WatchState::new(w.clone()));
        }
        let public_url = cfg
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.server.listen));
        let engine = Engine {
            cfg,
            h,
            state: Mutex::new(st),
            view: RwLock::new(View::default()),
            events,
            wake: Arc::new(Notify::new()),
            stopped: tokio::sync::watch::Sender::new(false),
            metrics,
            agent: agent::AgentHook::default(),
            public_url: RwLock::new(public_url),
            audit_paged: std::sync::atomic::AtomicBool::new(false),

            leadership: RwLock::new(Leadership::default()),
        };
        Arc::new(engine)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn handles(&self) -> &Handles {
        &self.h
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The story, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Turns `true` once the loop has stopped (see [`Engine::run`]).
    pub fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    /// Sets the API's base URL once the server is bound (approve commands and links use it).
    pub fn set_public_url(&self, url: String) {
        if let Ok(mut u) = self.public_url.write() {
            *u = url;
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .read()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// A consistent snapshot for the API.
    pub fn view(&self) -> View {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// A copy of one watched run's charts (what the detectors see), for the dashboard. Charts are
    /// not part of [`View`] because copying every run's series on every poll would cost more
    /// than the rare page that draws them; this waits for a tick in progress to finish.
    pub async fn charts(&self, run: &str) -> Option<ChartSet> {
        let st = self.state.lock().await;
        st.watches.get(run).map(|w| w.charts.clone())
    }

    /// Records the start of the service: config and runbooks (with content hashes) and each watch.
    pub async fn start(&self, mode: &str) {
        let runbooks: Vec<_> = self
            .h
            .runbooks
            .iter()
            .map(|r| json!({"id": r.id, "path": r.path, "sha256": r.sha256}))
            .collect();
        self.record(
            EntryKind::Started,
            None,
            None,
            json!({"mode": mode, "version": env!("CARGO_PKG_VERSION")}),
        )
        .await;
        self.record(
            EntryKind::ConfigLoaded,
            None,
            None,
            json!({
                "file": self.cfg.source.as_ref().map(|s| &s.path),
                "file_sha256": self.cfg.source.as_ref().map(|s| &s.sha256),
                "effective_sha256": self.cfg.effective_sha256(),
                "poll_interval_secs": self.cfg.poll_interval.as_secs_f64(),
                "policy": self.cfg.policy,
                "watches": self.cfg.watches.iter().map(|w| &w.run).collect::<Vec<_>>(),
                // Which model investigates, with its budgets (the key is never in the config).
                "agent": self.cfg.agent,
            }),
        )
        .await;
        self.record(
            EntryKind::RunbooksLoaded,
            None,
            None,
            json!({ "runbooks": runbooks }),
        )
        .await;
        let now = self.h.clock.now();
        for w in &self.cfg.watches {
            self.record(
                EntryKind::WatchStarted,
                Some(&w.run),
                None,
                json!({"target": w.target, "autonomy": w.autonomy, "route": w.route}),
            )
            .await;
            self.emit(
                now,
                &w.run,
                None,
                EventKind::WatchStarted,
                format!("watching {} (autonomy {:?})", w.target, w.autonomy).to_lowercase(),
            );
        }
        self.attach_page_store().await;
        let st = self.state.lock().await;
        self.publish(&st, now);
    }

    /// Keeps incident ids unique across runs that share one database, without resuming them.
    pub async fn reserve_incident_ids(&self) {
        match self.h.audit.load_incident_rows().await {
            Ok(rows) => {
                let mut st = self.state.lock().await;
                for row in rows {
                    // A row whose data cannot be read still holds its id.
                    let id = match row {
                        Ok(rec) => rec.id,
                        Err(crate::audit::AuditError::CorruptIncident { id, .. }) => id,
                        Err(_) => continue,
                    };
                    recover::reserve_id(&mut st, &id);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read incident ids: new incidents may reuse an old id");
            }
        }
    }

    /// Runs the loop until `shutdown` completes: a tick every `every` (wall time), or sooner
    /// when an approval arrives.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            if self.is_leader() {
                self.tick().await;
                // Retention and signed heads are due on time even when nothing is recorded.
                self.h.audit.maintain().await;
            } else {
                // A follower neither polls nor acts; it keeps its view (watches, incidents
                // restored when it leads) fresh for the read-only API.
                let now = self.h.clock.now();
                let st = self.state.lock().await;
                self.publish(&st, now);
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
                _ = &mut shutdown => break,
            }
        }
        self.stopped.send_replace(true);
        let now = self.h.clock.now();
        self.record(EntryKind::Stopped, None, None, json!({ "at": now }))
            .await;
    }

    /// One pass of the loop over every watch.
    pub async fn tick(&self) {
        let now = self.h.clock.now();
        let mut st = self.state.lock().await;
        self.collect_agent_reports(&mut st, now).await;
        self.reconcile_suspensions(&mut st, now).await;
        self.poll(&mut st, now).await;
        let runs: Vec<String> = st.watches.keys().cloned().collect();
        for run in &runs {
            self.detect(&mut st, run, now).await;
        }
        let live: Vec<String> = st
            .incidents
            .values()
            .filter(|i| !i.state.is_final())
            .map(|i| i.id.clone())
            .collect();
        for id in live {
            self.drive(&mut st, &id, now).await;
        }
        st.ticks += 1;
        // Breakers look back at most a day; finished incidents stay in memory (and in the API)
        // for a day, and in the database for good.
        st.history.retain(|p| p.at > now - 86_400.0);
        st.incidents
            .retain(|_, i| !i.state.is_final() || i.updated_at > now - 86_400.0);
        self.publish(&st, now);
    }

    async fn poll(&self, st: &mut State, now: f64) {
        let requests: Vec<PollRequest> = st
            .watches
            .values()
            .map(|w| PollRequest {
                run: w.cfg.run.clone(),
                target: w.cfg.target.clone(),
                since: w.last_sample,
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        self.metrics.polls.inc();
        let started = std::time::Instant::now();
        let results = self.h.source.poll(&requests, now).await;
        self.metrics
            .observe_source(self.h.source.stats(), started.elapsed().as_secs_f64());
        let retention = self.cfg.retention.as_secs_f64();
        for (req, res) in requests.iter().zip(results) {
            let Some(w) = st.watches.get_mut(&req.run) else {
                continue;
            };
            let label = RunLabel {
                run: req.run.clone(),
            };
            match res {
                Ok(batch) => {
                    for (key, samples) in batch {
                        let samples: Vec<_> = samples.into_iter().filter(|s| s.t <= now).collect();
                        if let Some(t) = samples.iter().map(|s| s.t).max_by(f64::total_cmp) {
                            w.last_sample = Some(w.last_sample.map_or(t, |l: f64| l.max(t)));
                        }
                        w.charts.merge(key, samples);
                    }
                    w.charts.prune_before(now - retention);
                    if let Some(since) = w.blind_since.take() {
                        w.source_error = None;
                        if std::mem::take(&mut w.blind_paged) {
                            let page =
                                self.blind_page(&w.cfg, PageAction::Resolve, now - since, None);
                            self.deliver(&page, &req.run, None).await;
                        }
                        self.metrics.watch_blind.get_or_create(&label).set(0);
                        self.emit(
                            now,
                            &req.run,
                            None,
                            EventKind::SourceRecovered,
                            format!("charts readable again after {:.0} s blind", now - since),
                        );
                    }
                }
                Err(e) => {
                    self.metrics.poll_errors.get_or_create(&label).inc();
                    self.metrics.watch_blind.get_or_create(&label).set(1);
                    w.source_error = Some(e.to_string());
                    let blind_for = w.blind_since.map_or(0.0, |b| now - b);
                    if !w.blind_paged && blind_for >= self.cfg.blind_page_after.as_secs_f64() {
                        // Nothing is watched on this run any more: a human must know.
                        w.blind_paged = true;
                        let page = self.blind_page(
                            &w.cfg,
                            PageAction::Trigger,
                            blind_for,
                            Some(e.to_string()),
                        );
                        self.deliver(&page, &req.run, None).await;
                    }
                    if w.blind_since.is_none() {
                        w.blind_since = Some(now);
                        self.emit(
                            now,
                            &req.run,
                            None,
                            EventKind::SourceBlind,
                            format!("blind: {e} (no detection, no action until charts return)"),
                        );
                    }
                }
            }
        }
    }

    async fn detect(&self, st: &mut State, run: &str, now: f64) {
        let transitions = {
            let Some(w) = st.watches.get_mut(run) else {
                return;
            };
            if w.blind_since.is_some() {
                return;
            }
            let params = w.cfg.detectors.as_ref().unwrap_or(&self.cfg.detectors);
            let ctx = DetectContext {
                now,
                charts: &w.charts,
                since: w.since,
                paused: w.quiet(),
                params,
            };
            let current = detect_all(&ctx);
            w.hysteresis.update(current)
        };
        for f in transitions.cleared {
            self.record(
                EntryKind::FindingCleared,
                Some(run),
                None,
                // `cleared_at` (clock time of the poll that no longer saw it) ends the
                // anomaly's window in an exported trace's labels (`replay::export`).
                json!({ "finding": f, "cleared_at": now }),
            )
            .await;
            self.emit(
                now,
                run,
                None,
                EventKind::FindingCleared,
                format!("{} on {} cleared", f.kind, f.chart),
            );
        }
        for f in transitions.started {
            self.metrics
                .findings
                .get_or_create(&KindLabel {
                    kind: f.kind.to_string(),
                })
                .inc();
            self.emit(
                now,
                run,
                None,
                EventKind::Finding,
                format!("{}: {}", f.kind, f.message),
            );
            self.route_finding(st, run, f, now).await;
        }
    }

    /// Attaches a finding to the open incident of its run and family, or opens one.
    async fn route_finding(&self, st: &mut State, run: &str, f: Finding, now: f64) {
        let family = f.family();
        let open = st
            .incidents
            .values_mut()
            .find(|i| i.run == run && i.family == family && !i.state.is_final());
        if let Some(inc) = open {
            let id = inc.id.clone();
            // The same condition raised again (same kind, chart and onset): after a restart or a
            // leader change, hysteresis starts empty and the first poll raises what is still
            // active. The incident holds it already: it is not appended or reconsidered again.
            let rejoined = inc.holds(&f);
            if !rejoined {
                inc.findings.push(f.clone());
            }
            // Only evidence from after the action is a recurrence: a second chart reporting the
            // same pre-action anomaly (NaN in grad_norm a poll after NaN in loss) is not.
            if inc.state == IncidentState::Verifying
                && inc.verify_since.is_none_or(|since| f.onset > since)
            {
                st.recurred.insert(id.clone(), f.clone());
            }
            if rejoined {
                self.record(
                    EntryKind::Finding,
                    Some(run),
                    Some(&id),
                    json!({ "finding": f, "joined": true, "rejoined": true }),
                )
                .await;
                return;
            }
            // The new evidence may call for another runbook (drive.rs: `reconsider`).
            let verdict = self.reconsider(st, &id, &f, now).await;
            let mut payload = json!({ "finding": f, "joined": true });
            if let drive::Reconsidered::Kept {
                runbook,
                would_pick,
                status,
            } = &verdict
            {
                // The plan stays; a human reading the log sees what this evidence suggests.
                payload["diagnosis_kept"] = json!(true);
                payload["runbook"] = json!(runbook);
                payload["would_pick"] = json!(would_pick);
                payload["kept_because"] = json!(status.why_kept());
            }
            self.record(EntryKind::Finding, Some(run), Some(&id), payload)
                .await;
            match verdict {
                drive::Reconsidered::Replace(d) => {
                    self.rediagnose(st, &id, &f, *d, now).await;
                }
                drive::Reconsidered::Kept {
                    runbook,
                    would_pick,
                    status,
                } => self.emit(
                    now,
                    run,
                    Some(&id),
                    EventKind::Diagnosed,
                    format!(
                        "{} on {} points to runbook `{would_pick}`; plan of `{runbook}` kept: {}",
                        f.kind,
                        f.chart,
                        status.why_kept()
                    ),
                ),
                drive::Reconsidered::Same => {}
            }
            return;
        }
        let id = format!("inc-{}", st.next_incident);
        st.next_incident += 1;
        self.record(
            EntryKind::Finding,
            Some(run),
            Some(&id),
            json!({ "finding": f }),
        )
        .await;
        let inc = Incident::new(id.clone(), run.to_string(), f.clone(), now);
        self.metrics
            .incidents_opened
            .get_or_create(&KindLabel {
                kind: family.to_string(),
            })
            .inc();
        self.record(
            EntryKind::IncidentOpened,
            Some(run),
            Some(&id),
            json!({ "family": family, "onset": f.onset, "kind": f.kind, "chart": f.chart }),
        )
        .await;
        self.emit(
            now,
            run,
            Some(&id),
            EventKind::IncidentOpened,
            format!("incident {id} opened ({family})"),
        );
        st.incidents.insert(id, inc);
    }

    /// Appends to the audit log. Failures are counted and logged, and leave the log unhealthy,
    /// which makes the policy gate refuse every action (fail closed).
    async fn record(
        &self,
        kind: EntryKind,
        run: Option<&str>,
        incident: Option<&str>,
        payload: serde_json::Value,
    ) -> bool {
        self.record_as(kind, run, incident, "babysitter", payload)
            .await
    }

    async fn record_as(
        &self,
        kind: EntryKind,
        run: Option<&str>,
        incident: Option<&str>,
        actor: &str,
        payload: serde_json::Value,
    ) -> bool {
        let entry = NewEntry {
            kind,
            run: run.map(str::to_string),
            incident: incident.map(str::to_string),
            actor: actor.to_string(),
            payload,
        };
        match self.h.audit.append(entry).await {
            Ok(_) => {
                self.metrics.audit_healthy.set(1);
                if self
                    .audit_paged
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    self.page_audit(PageAction::Resolve, None);
                }
                true
            }
            Err(e) => {
                self.metrics.audit_failures.inc();
                self.metrics.audit_healthy.set(0);
                tracing::error!(error = %e, ?kind, "audit log append failed: no action will run until it recovers");
                if !self
                    .audit_paged
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.page_audit(PageAction::Trigger, Some(e.to_string()));
                }
                false
            }
        }
    }

    /// Pages on-call that babysitter fails closed (or no longer does). Sent straight to the
    /// pager from a task: it cannot be recorded in the log it is about, and must not hold up
    /// the loop.
    fn page_audit(&self, action: PageAction, error: Option<String>) {
        let summary = match action {
            PageAction::Trigger => format!(
                "babysitter cannot write its audit log ({}): it takes no action until it can",
                self.h.audit.url()
            ),
            _ => "babysitter's audit log is writable again; actions resume".to_string(),
        };
        let page = Page {
            dedup_key: "babysitter/audit-unavailable".into(),
            action,
            severity: Severity::Critical,
            summary,
            run: String::new(),
            incident: "audit".into(),
            route: self
                .cfg
                .default_route
                .clone()
                .unwrap_or_else(|| "default".into()),
            details: error
                .map(|e| vec![("audit error".to_string(), e)])
                .unwrap_or_default(),
            approve_command: None,
            reject_command: None,
            links: vec![format!("{}/readyz", self.public_url())],
            reminder: 0,
        };
        let pager = self.h.pager.clone();
        tokio::spawn(async move {
            if let Err(e) = pager.send(&page).await {
                tracing::error!(error = %e, "cannot page that the audit log is unavailable");
            }
        });
    }

    /// The page about a watch that cannot read its charts (one per run, by dedup key).
    fn blind_page(
        &self,
        w: &WatchConfig,
        action: PageAction,
        secs: f64,
        error: Option<String>,
    ) -> Page {
        let summary = match action {
            PageAction::Trigger => format!(
                "babysitter has been blind on {} for {:.0} min: nothing is detected or done on it until its charts return",
                w.run,
                secs / 60.0
            ),
            _ => format!(
                "charts of {} readable again after {:.0} min",
                w.run,
                secs / 60.0
            ),
        };
        Page {
            dedup_key: format!("babysitter/blind/{}", w.run),
            action,
            severity: Severity::Error,
            summary,
            run: w.run.clone(),
            incident: format!("blind/{}", w.run),
            route: w.route.clone(),
            details: error
                .map(|e| vec![("source error".to_string(), e)])
                .unwrap_or_default(),
            approve_command: None,
            reject_command: None,
            links: vec![
                format!("{}/api/v1/watches/{}", self.public_url(), w.run),
                format!("{}/runs/{}", self.public_url(), w.run),
            ],
            reminder: 0,
        }
    }

    fn emit(&self, at: f64, run: &str, incident: Option<&str>, kind: EventKind, text: String) {
        tracing::info!(run, incident, kind = ?kind, "{text}");
        let _ = self.events.send(Event {
            at,
            run: run.to_string(),
            incident: incident.map(str::to_string),
            kind,
            text,
        });
    }

    fn publish(&self, st: &State, now: f64) {
        let v = View::build(st, now, self.h.audit.is_healthy());
        self.metrics.incidents_open.set(
            st.incidents
                .values()
                .filter(|i| !i.state.is_final())
                .count() as i64,
        );
        if let Ok(mut view) = self.view.write() {
            *view = v;
        }
    }
}

impl WatchState {
    /// What a successful action tells the watch: a pause quiets the progress detectors until a
    /// resume or a restart, which also starts a new life of the run at `at` (older samples and
    /// conditions belong to the last one).
    ///
    /// A workload-changing action also sets aside the last suspension report: it may predate
    /// the change, and the watch stream reports the change itself.
    pub(crate) fn note_action(&mut self, kind: crate::act::ActionKind, at: f64) {
        use crate::act::ActionKind;
        if kind.mutates_workload()
            && let Some(o) = self.observed.as_mut()
        {
            o.stale = true;
        }
        match kind {
            ActionKind::Pause => self.paused = true,
            ActionKind::Resume => {
                self.paused = false;
                self.since = Some(at);
            }
            ActionKind::RestartFromCheckpoint => {
                self.paused = false;
                self.since = Some(at);
                self.hysteresis.reset();
            }
            ActionKind::PatchConfig
            | ActionKind::CaptureDiagnostics
            | ActionKind::Page
            | ActionKind::Annotate => {}
        }
    }

    fn new(cfg: WatchConfig) -> WatchState {
        WatchState {
            cfg,
            charts: ChartSet::new(),
            hysteresis: Hysteresis::new(),
            last_sample: None,
            since: None,
            paused: false,
            held: None,
            observed: None,
            blind_since: None,
            source_error: None,
            blind_paged: false,
        }
    }
}
