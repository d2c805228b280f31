//! Discovery: finds the training workloads to babysit on a Kubernetes cluster and turns each
//! into a watch of the engine.
//!
//! A kube-runtime watcher runs per workload kind (batch/v1 Job, JobSet, Kubeflow PyTorchJob and
//! TrainJob, read as `DynamicObject`s) over the whole cluster or over the configured namespaces.
//! A workload is babysat when it carries the annotation `babysitter.dev/watch: "true"`; other
//! annotations set its profile, autonomy, on-call route, Prometheus run label, runbooks and chart
//! overrides (see [`WATCH`] and its siblings). A bad annotation value is a warning that names the
//! workload and the annotation, and the workload is not watched; nothing here panics on what the
//! cluster sends. A workload that completes (a `Complete`/`Failed`-like condition), stops being
//! annotated, is deleted or disappears while the watcher was away ends its watch. A kind whose
//! CRD is not installed is skipped with a warning.
//!
//! Deciding what one object means ([`evaluate`]) is a pure function; [`Discovery`] owns the
//! streams and the bookkeeping of which workload became which watch.
//!
//! Discovery also reads every watched workload's suspend field ([`suspension`]) and tells the
//! engine ([`Engine::observe_suspension`]) when it changes, and once when the watch starts
//! (so a run babysitter had paused, and that was resumed while babysitter was down, is noticed
//! too), naming who likely holds it: Kueue when the workload carries Kueue's queue label,
//! otherwise someone outside babysitter. The initial list of a (re)started watcher goes
//! through the same path, so a hold is found again after babysitter restarts. Workloads that a
//! watch of the config file targets (`target = { kind = "kubernetes", … }`) are not discovery's
//! to start or end, but their suspend field is reported the same way; such a workload is not
//! also discovered through its annotations (the config file's watch is the one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::act::Target;
use crate::charts::ChartKey;
use crate::config::{Config, WatchConfig};
use crate::engine::{Engine, SuspendedBy};
use crate::policy::Autonomy;
use crate::sources::prometheus::settings::{ChartTemplate, ProfileSel};

/// `"true"`: babysit this workload. Any other value than `"true"` or `"false"` is a warning.
pub const WATCH: &str = "babysitter.dev/watch";
/// Chart profile(s), comma-separated: `generic`, `dcgm`, `kube_state_metrics`.
pub const PROFILE: &str = "babysitter.dev/profile";
/// `observe`, `suggest` or `act` (capped by `kubernetes.max_autonomy`).
pub const AUTONOMY: &str = "babysitter.dev/autonomy";
/// The on-call route (or pager) for pages about this workload.
pub const ROUTE: &str = "babysitter.dev/route";
/// The value of the run label in Prometheus (and the watch's name); default: the workload's name.
pub const RUN: &str = "babysitter.dev/run";
/// Runbook ids that may diagnose it, comma-separated; default: all.
pub const RUNBOOKS: &str = "babysitter.dev/runbooks";
/// Chart overrides as a JSON object: `{"loss": "avg by ($RUN_LABEL) (my_loss{$RUNS})"}`.
pub const CHARTS: &str = "babysitter.dev/charts";

/// The workload kinds babysitter knows: one table, in [`crate::k8s::workload`].
pub use crate::k8s::workload::WorkloadKind;

/// One workload: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// What discovery needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Empty: the whole cluster.
    pub namespaces: Vec<String>,
    pub default_autonomy: Autonomy,
    pub max_autonomy: Autonomy,
    /// `sources.prometheus.default_profile`, to check profile and chart annotations early.
    pub default_profile: Option<ProfileSel>,
    /// Route names that reach a pager (`None`: any route is accepted, e.g. the console pager).
    pub routes: Option<HashSet<String>>,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let k = &cfg.kubernetes;
        // With named pagers and no default route, a route must name a route or a pager.
        let routes = (!cfg.pagers.is_empty() && cfg.default_route.is_none()).then(|| {
            cfg.routes
                .keys()
                .chain(cfg.pagers.keys())
                .cloned()
                .collect()
        });
        Settings {
            namespaces: k.namespaces.clone(),
            default_autonomy: k.default_autonomy,
            max_autonomy: k.max_autonomy,
            default_profile: cfg
                .sources
                .prometheus
                .as_ref()
                .map(|p| p.default_profile.clone()),
            routes,
        }
    }
}

/// What one workload object means for babysitting.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not annotated `babysitter.dev/watch: "true"`.
    NotAnnotated,
    /// It has finished (the reason names the condition).
    Finished(String),
    /// An annotation is wrong: not watched (the message names the annotation).
    Invalid(String),
    /// Babysit it with this watch.
    Watch(Box<WatchConfig>),
}

/// Decides what one object of `kind` means: pure, no I/O.
pub fn evaluate(kind: WorkloadKind, obj: &DynamicObject, s: &Settings) -> Verdict {
    let ann = obj.metadata.annotations.clone().unwrap_or_default();
    let get = |k: &str| ann.get(k).map(|v| v.trim());
    match get(WATCH) {
        None | Some("false") => return Verdict::NotAnnotated,
        Some("true") => {}
        Some(other) => {
            return Verdict::Invalid(format!(
                "annotation `{WATCH}`: `{other}` is neither \"true\" nor \"false\""
            ));
        }
    }
    if let Some(why) = finished(kind, obj) {
        return Verdict::Finished(why);
    }
    let (Some(name), Some(namespace)) = (obj.metadata.name.clone(), obj.metadata.namespace.clone())
    else {
        return Verdict::Invalid("the object has no name or namespace".into());
    };
    match parse(kind, &namespace, &name, &ann, s) {
        Ok(w) => Verdict::Watch(Box::new(w)),
        Err(e) => Verdict::Invalid(e),
    }
}

/// The finished condition of a workload, if any: `status.conditions[]` with a terminal type and
/// status `"True"`.
fn finished(kind: WorkloadKind, obj: &DynamicObject) -> Option<String> {
    let conditions = obj.data.get("status")?.get("conditions")?.as_array()?;
    conditions.iter().find_map(|c| {
        let t = c.get("type")?.as_str()?;
        let status = c.get("status")?.as_str()?;
        (status == "True" && kind.terminal_conditions().contains(&t)).then(|| {
            match c.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => format!("workload finished ({t}: {r})"),
                _ => format!("workload finished ({t})"),
            }
        })
    })
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// The watch an annotated workload asks for; an error names the annotation.
fn parse(
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    ann: &BTreeMap<String, String>,
    s: &Settings,
) -> Result<WatchConfig, String> {
    let get = |k: &str| ann.get(k).map(|v| v.trim());
    let run = match get(RUN) {
        None => name.to_string(),
        Some(r)
            if r.is_empty() || r.len() > 253 || r.chars().any(|c| c.is_control() || c == '/') =>
        {
            return Err(format!(
                "annotation `{RUN}`: `{r}` must be 1 to 253 characters, without `/` or control characters"
            ));
        }
        Some(r) => r.to_string(),
    };
    let autonomy = match get(AUTONOMY) {
        None => s.default_autonomy,
        Some(a) => {
            let asked = Autonomy::ALL
                .into_iter()
                .find(|x| {
                    serde_json::to_value(x)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        == Some(a.to_string())
                })
                .ok_or_else(|| {
                    format!("annotation `{AUTONOMY}`: `{a}` is not one of observe, suggest, act")
                })?;
            if asked > s.max_autonomy {
                tracing::warn!(
                    workload = %format!("{kind}/{namespace}/{name}"),
                    annotation = AUTONOMY,
                    asked = ?asked,
                    max = ?s.max_autonomy,
                    "autonomy above kubernetes.max_autonomy: lowered"
                );
                s.max_autonomy
            } else {
                asked
            }
        }
    };
    let route = match get(ROUTE) {
        None => "default".to_string(),
        Some("") => return Err(format!("annotation `{ROUTE}`: empty")),
        Some(r) => {
            if let Some(known) = &s.routes
                && !known.contains(r)
            {
                return Err(format!(
                    "annotation `{ROUTE}`: `{r}` is neither a configured route nor a pager"
                ));
            }
            r.to_string()
        }
    };
    let runbooks = get(RUNBOOKS).map(list).unwrap_or_default();
    let profile = match get(PROFILE) {
        None => None,
        Some(p) => {
            let names = list(p);
            match names.len() {
                0 => return Err(format!("annotation `{PROFILE}`: empty")),
                1 => Some(ProfileSel::One(names[0].clone())),
                _ => Some(ProfileSel::Many(names)),
            }
        }
    };
    let charts: BTreeMap<ChartKey, ChartTemplate> = match get(CHARTS) {
        None => BTreeMap::new(),
        Some(c) => serde_json::from_str(c).map_err(|e| {
            format!(
                "annotation `{CHARTS}`: not a JSON object of chart → PromQL ({e}); e.g. {{\"loss\": \"avg by ($RUN_LABEL) (my_loss{{$RUNS}})\"}}"
            )
        })?,
    };
    // Profiles and chart overrides are checked now, so the warning names the annotation.
    if let Some(sel) = profile.as_ref().or(s.default_profile.as_ref()) {
        crate::sources::prometheus::profile::resolve(sel, &BTreeMap::new())
            .map_err(|e| format!("annotation `{PROFILE}`: {e}"))?;
        crate::sources::prometheus::profile::resolve(sel, &charts)
            .map_err(|e| format!("annotation `{CHARTS}`: {e}"))?;
    }
    Ok(WatchConfig {
        run,
        target: Target::Kubernetes {
            api_version: kind.api_version().to_string(),
            workload_kind: kind.kind().to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        autonomy,
        route,
        runbooks,
        detectors: None,
        profile,
        charts,
    })
}

/// Where one watcher stream looks: a namespace, or the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    fn covers(&self, ns: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespace(n) => n == ns,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("all namespaces"),
            Scope::Namespace(n) => write!(f, "namespace {n}"),
        }
    }
}

/// Whether a workload is suspended (its kind's suspend field; absent means running), and who
/// likely holds it so: Kueue if it is in a Kueue queue, otherwise someone outside babysitter.
pub fn suspension(kind: WorkloadKind, obj: &DynamicObject) -> (bool, SuspendedBy) {
    let suspended = crate::k8s::workload::is_suspended(kind, &obj.data);
    let queue = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::k8s::workload::KUEUE_QUEUE_LABEL))
        .map(|q| q.trim())
        .filter(|q| !q.is_empty());
    let by = match queue {
        Some(q) => SuspendedBy::Kueue {
            queue: q.to_string(),
        },
        None => SuspendedBy::Outside,
    };
    (suspended, by)
}

/// What discovery remembers of one workload.
#[derive(Debug, Default)]
struct Tracked {
    /// The watch it became (`None`: not watched).
    watch: Option<WatchConfig>,
    /// The suspend value last reported to the engine for this watch (`None`: not yet).
    suspended: Option<bool>,
    /// The last problem warned about (each problem is warned once, not on every update).
    problem: Option<String>,
}

/// Runs the watchers and keeps the engine's watches in step with the cluster.
pub struct Discovery {
    client: kube::Client,
    engine: Arc<Engine>,
    settings: Settings,
    kinds: Vec<WorkloadKind>,
    tracked: Mutex<HashMap<WorkloadKey, Tracked>>,
    /// Deletions that are the actuator's recreations (shared with this replica's actuator).
    recreations: Arc<crate::k8s::workload::Recreations>,
    /// The config file's watches of Kubernetes workloads, by workload (their runs).
    configured: HashMap<WorkloadKey, String>,
    /// The suspend value last reported for each configured workload (`None`: not yet).
    configured_suspended: Mutex<HashMap<WorkloadKey, Option<bool>>>,
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no workload kind can be listed: {0}")]
    NothingToWatch(String),
}

impl Discovery {
    /// Discovery of every known kind, with the settings from the engine's config.
    pub fn new(client: kube::Client, engine: Arc<Engine>) -> Arc<Discovery> {
        let settings = Settings::from_config(engine.config());
        Self::with_kinds(client, engine, settings, WorkloadKind::ALL.to_vec())
    }

    pub fn with_kinds(
        client: kube::Client,
        engine: Arc<Engine>,
        settings: Settings,
        kinds: Vec<WorkloadKind>,
    ) -> Arc<Discovery> {
        Self::sharing(client, engine, settings, kinds, Arc::default())
    }

    /// Discovery that keeps the watch of a workload its actuator recreates (pass the same
    /// `recreations` as the actuator's [`KubeActuatorOptions`](crate::k8s::actuator::KubeActuatorOptions)).
    pub fn sharing(
        client: kube::Client,
        engine: Arc<Engine>,
        settings: Settings,
        kinds: Vec<WorkloadKind>,
        recreations: Arc<crate::k8s::workload::Recreations>,
    ) -> Arc<Discovery> {
        let configured = configured_workloads(&engine.config().watches);
        Arc::new(Discovery {
            client,
            engine,
            settings,
            kinds,
            tracked: Mutex::new(HashMap::new()),
            recreations,
            configured,
            configured_suspended: Mutex::new(HashMap::new()),
        })
    }

    /// The runs discovery has turned into watches, by workload.
    pub async fn watched(&self) -> BTreeMap<WorkloadKey, String> {
        self.tracked
            .lock()
            .await
            .iter()
            .filter_map(|(k, t)| t.watch.as_ref().map(|w| (k.clone(), w.run.clone())))
            .collect()
    }

    fn scopes(&self) -> Vec<Scope> {
        if self.settings.namespaces.is_empty() {
            vec![Scope::Cluster]
        } else {
            self.settings
                .namespaces
                .iter()
                .cloned()
                .map(Scope::Namespace)
                .collect()
        }
    }

    fn api(&self, kind: WorkloadKind, scope: &Scope) -> Api<DynamicObject> {
        let ar = kind.api_resource();
        match scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            Scope::Namespace(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
        }
    }

    /// Is the kind served by the cluster? A 404 means its CRD is not installed: skipped with a
    /// warning. Other errors (permissions, a flaky API server) do not skip it: the watcher
    /// retries with backoff and says so.
    async fn served(&self, kind: WorkloadKind) -> bool {
        let Some(scope) = self.scopes().into_iter().next() else {
            return false;
        };
        match self
            .api(kind, &scope)
            .list(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::warn!(
                    kind = %kind,
                    api_version = %kind.api_version(),
                    "{kind} is not served by this cluster (CRD not installed?): not discovered"
                );
                false
            }
            Err(e) => {
                tracing::warn!(kind = %kind, error = %e, "cannot list {kind} yet; the watcher will retry");
                true
            }
        }
    }

    /// Watches every served kind in every scope until `shutdown` completes.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DiscoveryError> {
        let mut tasks = tokio::task::JoinSet::new();
        for kind in self.kinds.clone() {
            if !self.served(kind).await {
                continue;
            }
            for scope in self.scopes() {
                let me = self.clone();
                tasks.spawn(async move { me.watch(kind, scope).await });
            }
        }
        if tasks.is_empty() {
            return Err(DiscoveryError::NothingToWatch(format!(
                "none of {} is served",
                self.kinds
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        shutdown.await;
        tasks.shutdown().await;
        Ok(())
    }

    /// One kind in one scope: the watcher stream, for as long as the task lives.
    async fn watch(&self, kind: WorkloadKind, scope: Scope) {
        tracing::info!(kind = %kind, scope = %scope, "discovering annotated workloads");
        let stream =
            watcher::watcher(self.api(kind, &scope), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // Workloads seen since the stream (re)started listing.
        let mut listed: HashSet<WorkloadKey> = HashSet::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(obj)) => {
                    if let Some(key) = key_of(kind, &obj) {
                        listed.insert(key.clone());
                        self.apply(key, kind, &obj).await;
                    }
                }
                Ok(Event::InitDone) => {
                    // Watched before the (re)list, and gone now: deleted while we were away.
                    let gone: Vec<WorkloadKey> = self
                        .tracked
                        .lock()
                        .await
                        .keys()
                        .filter(|k| k.kind == kind && scope.covers(&k.namespace))
                        .filter(|k| !listed.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.forget(&key, "workload disappeared").await;
                    }
                    listed.clear();
                }
                Ok(Event::Apply(obj)) => {
                    if let Some(key) = key_of(kind, &obj) {
                        self.apply(key, kind, &obj).await;
                    }
                }
                Ok(Event::Delete(obj)) => {
                    let recreated = obj
                        .metadata
                        .uid
                        .as_deref()
                        .is_some_and(|u| self.recreations.take(u));
                    if recreated {
                        // babysitter deleted it to create it again: the watch goes on.
                        tracing::info!(kind = %kind, name = ?obj.metadata.name, "workload recreated by babysitter: still watched");
                        continue;
                    }
                    if let Some(key) = key_of(kind, &obj) {
                        self.forget(&key, "workload deleted").await;
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = %kind, scope = %scope, error = %e, "workload watcher error (retrying)");
                }
            }
        }
    }

    /// One object added or changed.
    async fn apply(&self, key: WorkloadKey, kind: WorkloadKind, obj: &DynamicObject) {
        if let Some(run) = self.configured.get(&key) {
            // A watch of the config file: only its suspend field is discovery's business.
            let mut seen = self.configured_suspended.lock().await;
            let last = seen.entry(key).or_default();
            self.report_suspension(last, run, kind, obj).await;
            return;
        }
        match evaluate(kind, obj, &self.settings) {
            Verdict::NotAnnotated => {
                self.forget(&key, "no longer annotated babysitter.dev/watch=\"true\"")
                    .await
            }
            Verdict::Finished(why) => self.forget(&key, &why).await,
            Verdict::Invalid(problem) => {
                let mut tracked = self.tracked.lock().await;
                let t = tracked.entry(key.clone()).or_default();
                if t.problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(workload = %key, "{problem}: not babysitting {key}");
                    t.problem = Some(problem.clone());
                }
                if let Some(w) = t.watch.take() {
                    self.engine
                        .remove_watch(&w.run, &format!("bad annotation: {problem}"))
                        .await;
                }
            }
            Verdict::Watch(w) => {
                let w = *w;
                let mut tracked = self.tracked.lock().await;
                let t = tracked.entry(key.clone()).or_default();
                if t.watch.as_ref() == Some(&w) {
                    self.report_suspension(&mut t.suspended, &w.run, kind, obj)
                        .await;
                    return;
                }
                if let Some(old) = t.watch.take() {
                    self.engine
                        .remove_watch(&old.run, "its annotations changed")
                        .await;
                }
                match self.engine.add_watch(w.clone()).await {
                    Ok(()) => {
                        tracing::info!(workload = %key, run = %w.run, "babysitting {key} as run `{}`", w.run);
                        t.problem = None;
                        // A new watch in the engine knows nothing yet: report once.
                        t.suspended = None;
                        self.report_suspension(&mut t.suspended, &w.run, kind, obj)
                            .await;
                        t.watch = Some(w);
                    }
                    Err(e) => {
                        let problem = e.to_string();
                        if t.problem.as_deref() != Some(problem.as_str()) {
                            tracing::warn!(workload = %key, "{problem}: not babysitting {key}");
                            t.problem = Some(problem);
                        }
                    }
                }
            }
        }
    }

    /// Tells the engine the workload's suspend value if it changed since the last report (or
    /// was never reported for this watch).
    async fn report_suspension(
        &self,
        last: &mut Option<bool>,
        run: &str,
        kind: WorkloadKind,
        obj: &DynamicObject,
    ) {
        let (suspended, by) = suspension(kind, obj);
        if *last == Some(suspended) {
            return;
        }
        *last = Some(suspended);
        tracing::info!(run, suspended, by = %by, "watched workload's suspend field: {suspended}");
        if !self.engine.observe_suspension(run, suspended, by).await {
            // Not watched after all (removed meanwhile): report again when it is.
            *last = None;
        }
    }

    /// Ends the watch of a workload, if it had one, and forgets it.
    async fn forget(&self, key: &WorkloadKey, reason: &str) {
        // A configured workload deleted and created again is reported afresh.
        self.configured_suspended.lock().await.remove(key);
        let t = self.tracked.lock().await.remove(key);
        if let Some(w) = t.and_then(|t| t.watch) {
            tracing::info!(workload = %key, run = %w.run, "{reason}: watch ended");
            self.engine.remove_watch(&w.run, reason).await;
        }
    }
}

/// The workloads the config file's watches target, with their runs (a target of a kind
/// discovery does not know is left out: the actuator reports it when it acts).
fn configured_workloads(watches: &[WatchConfig]) -> HashMap<WorkloadKey, String> {
    watches
        .iter()
        .filter_map(|w| match &w.target {
            Target::Kubernetes {
                api_version,
                workload_kind,
                namespace,
                name,
            } => {
                let kind = WorkloadKind::from_type(api_version, workload_kind).ok()?;
                let key = WorkloadKey {
                    kind,
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                Some((key, w.run.clone()))
            }
            _ => None,
        })
        .collect()
}

fn key_of(kind: WorkloadKind, obj: &DynamicObject) -> Option<WorkloadKey> {
    Some(WorkloadKey {
        kind,
        namespace: obj.metadata.namespace.clone()?,
        name: obj.metadata.name.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            namespaces: vec![],
            default_autonomy: Autonomy::Suggest,
            max_autonomy: Autonomy::Act,
            default_profile: Some(ProfileSel::One("generic".into())),
            routes: None,
        }
    }

    fn obj(kind: WorkloadKind, ann: Value, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": kind.api_version(),
            "kind": kind.kind(),
            "metadata": {"name": "llama", "namespace": "ml", "annotations": ann},
            "status": status,
        }))
        .unwrap()
    }

    fn watch_of(v: Verdict) -> WatchConfig {
        match v {
            Verdict::Watch(w) => *w,
            other => panic!("expected a watch, got {other:?}"),
        }
    }

    #[test]
    fn the_config_file_s_kubernetes_watches_are_known_by_workload() {
        let kube = |run: &str, api: &str, kind: &str, name: &str| WatchConfig {
            run: run.into(),
            target: Target::Kubernetes {
                api_version: api.into(),
                workload_kind: kind.into(),
                namespace: "ml".into(),
                name: name.into(),
            },
            autonomy: Autonomy::Act,
            route: "default".into(),
            runbooks: vec![],
            detectors: None,
            profile: None,
            charts: BTreeMap::new(),
        };
        let sim = WatchConfig {
            target: Target::Simulated { run: "s".into() },
            ..kube("s", "batch/v1", "Job", "s")
        };
        let got = configured_workloads(&[
            kube("llama", "batch/v1", "Job", "llama-job"),
            kube("pt", "kubeflow.org/v1", "PyTorchJob", "pt-job"),
            kube("odd", "apps/v1", "Deployment", "web"),
            sim,
        ]);
        assert_eq!(got.len(), 2, "{got:?}");
        let key = |kind, name: &str| WorkloadKey {
            kind,
            namespace: "ml".into(),
            name: name.into(),
        };
        assert_eq!(got[&key(WorkloadKind::Job, "llama-job")], "llama");
        assert_eq!(got[&key(WorkloadKind::PyTorchJob, "pt-job")], "pt");
    }

    #[test]
    fn an_annotated_job_becomes_a_watch_with_defaults() {
        let o = obj(WorkloadKind::Job, json!({WATCH: "true"}), json!({}));
        let w = watch_of(evaluate(WorkloadKind::Job, &o, &settings()));
        assert_eq!(w.run, "llama");
        assert_eq!(w.autonomy, Autonomy::Suggest);
        assert_eq!(w.route, "default");
        assert!(w.runbooks.is_empty() && w.charts.is_empty() && w.profile.is_none());
        assert_eq!(
            w.target,
            Target::Kubernetes {
                api_version: "batch/v1".into(),
                workload_kind: "Job".into(),
                namespace: "ml".into(),
                name: "llama".into(),
            }
        );
    }

    #[test]
    fn every_annotation_is_read() {
        let o = obj(
            WorkloadKind::PyTorchJob,
            json!({
                WATCH: "true", RUN: "llama-70b", AUTONOMY: "act", ROUTE: "ml-oncall",
                PROFILE: "generic, dcgm", RUNBOOKS: "nan-loss,hang",
                CHARTS: r#"{"loss": "avg by ($RUN_LABEL) (my_loss{$RUNS})", "step_time": ""}"#,
            }),
            json!({"conditions": [{"type": "Running", "status": "True"}]}),
        );
        let w = watch_of(evaluate(WorkloadKind::PyTorchJob, &o, &settings()));
        assert_eq!(w.run, "llama-70b");
        assert_eq!(w.autonomy, Autonomy::Act);
        assert_eq!(w.route, "ml-oncall");
        assert_eq!(w.runbooks, vec!["nan-loss", "hang"]);
        assert_eq!(
            w.profile,
            Some(ProfileSel::Many(vec!["generic".into(), "dcgm".into()]))
        );
        assert_eq!(w.charts.len(), 2);
        assert!(w.charts[&"step_time".parse::<ChartKey>().unwrap()].is_off());
        match &w.target {
            Target::Kubernetes {
                api_version,
                workload_kind,
                ..
            } => {
                assert_eq!(api_version, "kubeflow.org/v1");
                assert_eq!(workload_kind, "PyTorchJob");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unannotated_and_finished_workloads_are_not_watched() {
        let s = settings();
        for ann in [json!({}), json!({WATCH: "false"}), json!({"other": "true"})] {
            let o = obj(WorkloadKind::Job, ann, json!({}));
            assert_eq!(evaluate(WorkloadKind::Job, &o, &s), Verdict::NotAnnotated);
        }
        let cases = [
            (WorkloadKind::Job, "Complete"),
            (WorkloadKind::Job, "Failed"),
            (WorkloadKind::JobSet, "Completed"),
            (WorkloadKind::PyTorchJob, "Succeeded"),
            (WorkloadKind::TrainJob, "Complete"),
        ];
        for (kind, cond) in cases {
            let o = obj(
                kind,
                json!({WATCH: "true"}),
                json!({"conditions": [{"type": cond, "status": "True", "reason": "Done"}]}),
            );
            assert_eq!(
                evaluate(kind, &o, &s),
                Verdict::Finished(format!("workload finished ({cond}: Done)")),
                "{kind}"
            );
        }
        // A condition that is not true (or not terminal for the kind) does not finish it.
        let o = obj(
            WorkloadKind::Job,
            json!({WATCH: "true"}),
            json!({"conditions": [{"type": "Complete", "status": "False"}, {"type": "Succeeded", "status": "True"}]}),
        );
        assert!(matches!(
            evaluate(WorkloadKind::Job, &o, &s),
            Verdict::Watch(_)
        ));
    }

    #[test]
    fn bad_annotations_name_the_annotation() {
        let s = Settings {
            routes: Some(["ml-oncall".to_string()].into_iter().collect()),
            ..settings()
        };
        let cases = [
            (json!({WATCH: "yes"}), WATCH),
            (json!({WATCH: "true", AUTONOMY: "yolo"}), AUTONOMY),
            (json!({WATCH: "true", ROUTE: "nobody"}), ROUTE),
            (json!({WATCH: "true", RUN: "a/b"}), RUN),
            (json!({WATCH: "true", PROFILE: "dgcm"}), PROFILE),
            (json!({WATCH: "true", PROFILE: " , "}), PROFILE),
            (json!({WATCH: "true", CHARTS: "{not json"}), CHARTS),
            (json!({WATCH: "true", CHARTS: r#"{"loss": 3}"#}), CHARTS),
        ];
        for (ann, name) in cases {
            let o = obj(WorkloadKind::Job, ann.clone(), json!({}));
            match evaluate(WorkloadKind::Job, &o, &s) {
                Verdict::Invalid(msg) => assert!(msg.contains(name), "{ann}: {msg}"),
                other => panic!("{ann}: expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn autonomy_is_capped_by_the_cluster_owner() {
        let s = Settings {
            max_autonomy: Autonomy::Suggest,
            ..settings()
        };
        let o = obj(
            WorkloadKind::TrainJob,
            json!({WATCH: "true", AUTONOMY: "act"}),
            json!(null),
        );
        assert_eq!(
            watch_of(evaluate(WorkloadKind::TrainJob, &o, &s)).autonomy,
            Autonomy::Suggest
        );
        let o = obj(
            WorkloadKind::TrainJob,
            json!({WATCH: "true", AUTONOMY: "observe"}),
            json!(null),
        );
        assert_eq!(
            watch_of(evaluate(WorkloadKind::TrainJob, &o, &s)).autonomy,
            Autonomy::Observe
        );
    }

    #[test]
    fn the_suspend_field_and_its_likely_holder_are_read_per_kind() {
        let with = |kind: WorkloadKind, spec: Value, labels: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": kind.api_version(),
                "kind": kind.kind(),
                "metadata": {"name": "llama", "namespace": "ml", "labels": labels},
                "spec": spec,
            }))
            .unwrap()
        };
        let none = json!({});
        for kind in [
            WorkloadKind::Job,
            WorkloadKind::JobSet,
            WorkloadKind::TrainJob,
        ] {
            let o = with(kind, json!({"suspend": true}), none.clone());
            assert_eq!(suspension(kind, &o), (true, SuspendedBy::Outside), "{kind}");
            let o = with(kind, json!({"suspend": false}), none.clone());
            assert!(!suspension(kind, &o).0, "{kind}");
            // Absent (or not a boolean) means running.
            assert!(!suspension(kind, &with(kind, json!({}), none.clone())).0);
            assert!(!suspension(kind, &with(kind, json!({"suspend": "yes"}), none.clone())).0);
        }
        // A PyTorchJob keeps it under runPolicy; spec.suspend means nothing there.
        let o = with(
            WorkloadKind::PyTorchJob,
            json!({"runPolicy": {"suspend": true}}),
            none.clone(),
        );
        assert!(suspension(WorkloadKind::PyTorchJob, &o).0);
        let o = with(WorkloadKind::PyTorchJob, json!({"suspend": true}), none);
        assert!(!suspension(WorkloadKind::PyTorchJob, &o).0);
        // In a Kueue queue: Kueue holds it.
        let o = with(
            WorkloadKind::Job,
            json!({"suspend": true}),
            json!({"kueue.x-k8s.io/queue-name": "gpu-a100"}),
        );
        assert_eq!(
            suspension(WorkloadKind::Job, &o),
            (
                true,
                SuspendedBy::Kueue {
                    queue: "gpu-a100".into()
                }
            )
        );
        let o = with(
            WorkloadKind::Job,
            json!({"suspend": true}),
            json!({"kueue.x-k8s.io/queue-name": " "}),
        );
        assert_eq!(suspension(WorkloadKind::Job, &o).1, SuspendedBy::Outside);
    }

    #[test]
    fn kinds_map_to_their_api_resources() {
        let ar = WorkloadKind::JobSet.api_resource();
        assert_eq!(ar.api_version, "jobset.x-k8s.io/v1alpha2");
        assert_eq!(ar.plural, "jobsets");
        assert_eq!(
            WorkloadKind::TrainJob.api_version(),
            "trainer.kubeflow.org/v1alpha1"
        );
        assert_eq!(WorkloadKind::Job.api_resource().group, "batch");
        for k in WorkloadKind::ALL {
            assert_eq!(k.api_resource().api_version, k.api_version(), "{k}");
            assert_eq!(k.api_resource().kind, k.kind(), "{k}");
        }
    }
}
