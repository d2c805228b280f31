//! App: wires config, runbooks, audit log, source, actuator and pager into an [`Engine`] and an
//! HTTP server, and runs both until shutdown (`App::build` then `App::run_until`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::act::Actuator;
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::{Engine, Handles};
use crate::notify::Pager;
use crate::runbook::RunbookSet;
use crate::sources::MetricsSource;
use crate::telemetry::Metrics;

/// The side-effecting parts that differ between `serve`, `demo` and tests.
pub struct Parts {
    pub clock: SharedClock,
    pub source: Arc<dyn MetricsSource>,
    pub actuator: Arc<dyn Actuator>,
    pub pager: Arc<dyn Pager>,
    /// Wall time between two polls (the poll interval, divided by the demo's speed).
    pub tick_every: Duration,
}

pub struct App {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    listener: TcpListener,
    tick_every: Duration,
}

/// Loads runbooks: the configured folder, else `./runbooks` if present, else the built-in set.
pub fn load_runbooks(cfg: &Config) -> anyhow::Result<RunbookSet> {
    let set = match &cfg.runbooks_dir {
        Some(dir) => RunbookSet::load_dir(dir)?,
        None if Path::new("runbooks").is_dir() => RunbookSet::load_dir(Path::new("runbooks"))?,
        None => RunbookSet::embedded(),
    };
    Ok(set)
}

/// A watch may only name runbooks that exist: every watch that names an unknown one is
/// reported, one line each.
pub fn check_watch_runbooks(cfg: &Config, runbooks: &RunbookSet) -> anyhow::Result<()> {
    let errors: Vec<String> = cfg
        .watches
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let unknown = runbooks.unknown_ids(&w.runbooks);
            (!unknown.is_empty()).then(|| {
                format!(
                    "watches[{i}].runbooks (run `{}`): unknown runbook id(s) {}",
                    w.run,
                    unknown.join(", ")
                )
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("\n"))
    }
}

impl App {
    /// Opens the audit log, loads runbooks and binds the API. With `fallback_port`, a busy
    /// listen address falls back to a free port on the same host (the demo).
    pub async fn build(cfg: Config, parts: Parts, fallback_port: bool) -> anyhow::Result<App> {
        let runbooks = load_runbooks(&cfg).context("runbooks")?;
        check_watch_runbooks(&cfg, &runbooks)?;
        let url = cfg.audit_url();
        let options = crate::audit::AuditOptions::from_config(&cfg.audit).context("[audit]")?;
        let audit = AuditLog::open_with(&url, options)
            .await
            .with_context(|| format!("opening the audit log {}", redact(&url)))?;
        let listener = match TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) if fallback_port => {
                let any = SocketAddr::new(cfg.server.listen.ip(), 0);
                tracing::warn!(listen = %cfg.server.listen, error = %e, "address busy, using a free port");
                TcpListener::bind(any).await.context("binding the API")?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("binding the API on {}", cfg.server.listen));
            }
        };
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        // Without leader election the one instance leads.
        metrics.leader.set(1);
        // Runbook checks ask the Prometheus the charts come from, with the very same client
        // settings (URL, auth, headers such as X-Scope-OrgID, TLS, timeouts).
        let checks: Option<Arc<dyn crate::runbook::CheckRunner>> = match &cfg.sources.prometheus {
            Some(p) => Some(Arc::new(
                crate::runbook::PrometheusChecks::from_config(p)
                    .context("runbook checks on [sources.prometheus]")?,
            )),
            None => None,
        };
        let handles = Handles {
            clock: parts.clock,
            source: parts.source,
            actuator: parts.actuator,
            pager: parts.pager,
            audit: Arc::new(audit),
            runbooks: Arc::new(runbooks),
            checks,
        };
        let public = cfg.server.public_url.clone();
        // The optional investigator; workloads are read through nothing until the caller gives
        // it an inspector (`Engine::set_agent` with `Investigator::with_inspector`).
        let investigator = match &cfg.agent {
            Some(a) => Some(
                crate::agent::Investigator::from_config(
                    &cfg,
                    a,
                    Arc::new(crate::agent::NoInspector),
                    handles.runbooks.clone(),
                )
                .context("agent")?,
            ),
            None => None,
        };
        let engine = Engine::new(Arc::new(cfg), handles, metrics);
        if let Some(inv) = investigator {
            engine.set_agent(Arc::new(inv));
        }
        engine.set_public_url(public.unwrap_or_else(|| format!("http://{addr}")));
        Ok(App {
            engine,
            addr,
            listener,
            tick_every: parts.tick_every,
        })
    }

    /// Serves the API and runs the loop until `shutdown` completes; then stops both cleanly.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let router = crate::api::router(self.engine.clone());
        let mut server_rx = rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_rx.wait_for(|s| *s).await;
                })
                .await
        });
        let mut engine_rx = rx;
        let engine = self.engine.clone();
        let looper = tokio::spawn(engine.run(self.tick_every, async move {
            let _ = engine_rx.wait_for(|s| *s).await;
        }));
        shutdown.await;
        let _ = tx.send(true);
        looper.await.context("engine loop")?;
        server.await.context("API server")?.context("API server")?;
        Ok(())
    }
}

/// The actuator for Kubernetes targets: the one place `serve` builds it. Pass the same
/// `recreations` to [`start_kubernetes`], so a restart by recreation keeps its watch.
pub fn kubernetes_actuator(
    client: kube::Client,
    recreations: Arc<crate::k8s::workload::Recreations>,
) -> Arc<dyn Actuator> {
    Arc::new(crate::k8s::actuator::KubeActuator::new(
        client,
        crate::k8s::actuator::KubeActuatorOptions {
            recreations,
            ..Default::default()
        },
    ))
}

/// Sends each action to the actuator of its target's kind: simulated runs to the simulator,
/// Kubernetes workloads to the Kubernetes actuator.
pub struct TargetRouter {
    pub simulated: Arc<dyn Actuator>,
    pub kubernetes: Arc<dyn Actuator>,
}

impl TargetRouter {
    fn for_target(&self, t: &crate::act::Target) -> &Arc<dyn Actuator> {
        match t {
            crate::act::Target::Simulated { .. } => &self.simulated,
            crate::act::Target::Kubernetes { .. } => &self.kubernetes,
        }
    }
}

#[async_trait::async_trait]
impl Actuator for TargetRouter {
    async fn execute(
        &self,
        target: &crate::act::Target,
        action: &crate::act::Action,
        key: &str,
    ) -> Result<crate::act::ActionOutcome, crate::act::ActError> {
        self.for_target(target).execute(target, action, key).await
    }

    async fn checkpoints(
        &self,
        target: &crate::act::Target,
    ) -> Result<Vec<crate::act::Checkpoint>, crate::act::ActError> {
        self.for_target(target).checkpoints(target).await
    }

    async fn recall(
        &self,
        target: &crate::act::Target,
        action: &crate::act::Action,
        key: &str,
    ) -> Result<Option<crate::act::ActionOutcome>, crate::act::ActError> {
        self.for_target(target).recall(target, action, key).await
    }
}

/// Sends each read of the investigating agent to the inspector of its target's kind.
pub struct InspectorRouter {
    pub simulated: Arc<dyn crate::agent::WorkloadInspector>,
    pub kubernetes: Arc<dyn crate::agent::WorkloadInspector>,
}

impl InspectorRouter {
    fn for_target(&self, t: &crate::act::Target) -> &Arc<dyn crate::agent::WorkloadInspector> {
        match t {
            crate::act::Target::Simulated { .. } => &self.simulated,
            crate::act::Target::Kubernetes { .. } => &self.kubernetes,
        }
    }
}

#[async_trait::async_trait]
impl crate::agent::WorkloadInspector for InspectorRouter {
    async fn status(
        &self,
        target: &crate::act::Target,
    ) -> Result<serde_json::Value, crate::agent::InspectFailed> {
        self.for_target(target).status(target).await
    }
    async fn pods(
        &self,
        target: &crate::act::Target,
    ) -> Result<Vec<crate::agent::PodInfo>, crate::agent::InspectFailed> {
        self.for_target(target).pods(target).await
    }
    async fn events(
        &self,
        target: &crate::act::Target,
        limit: usize,
    ) -> Result<Vec<crate::agent::EventInfo>, crate::agent::InspectFailed> {
        self.for_target(target).events(target, limit).await
    }
    async fn logs(
        &self,
        target: &crate::act::Target,
        pod: Option<&str>,
        tail: usize,
    ) -> Result<Vec<String>, crate::agent::InspectFailed> {
        self.for_target(target).logs(target, pod, tail).await
    }
}

/// Discovery and leader election, running beside the engine (`serve` with `[kubernetes]`).
pub struct KubernetesRuntime {
    election: crate::k8s::leader::Election,
    discovery: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Makes this replica a follower, joins the leader election and starts discovery. Call it
/// before [`App::run_until`], so the engine never acts before it is elected.
pub async fn start_kubernetes(
    client: kube::Client,
    engine: Arc<Engine>,
    recreations: Arc<crate::k8s::workload::Recreations>,
) -> anyhow::Result<KubernetesRuntime> {
    let k = &engine.config().kubernetes;
    let settings = crate::k8s::leader::ElectionSettings::from_config(k)?;
    let election = crate::k8s::leader::start(client.clone(), engine.clone(), settings).await?;
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let discovery = crate::k8s::discovery::Discovery::sharing(
        client,
        engine.clone(),
        crate::k8s::discovery::Settings::from_config(engine.config()),
        crate::k8s::discovery::WorkloadKind::ALL.to_vec(),
        recreations,
    );
    let discovery = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = discovery.run(shutdown).await {
            tracing::error!(error = %e, "Kubernetes discovery stopped: no workload is discovered");
        }
    });
    Ok(KubernetesRuntime {
        election,
        discovery,
        stop,
    })
}

impl KubernetesRuntime {
    /// Stops discovery and releases the Lease so another replica leads at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.discovery.await;
        self.election.shutdown().await;
    }
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://bob:secret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://data/audit.db"), "sqlite://data/audit.db");
    }
}
