//! The Kubernetes actuator: carries out babysitter's actions on a Job, JobSet, PyTorchJob or
//! TrainJob through the API server.
//!
//! Every action reads the workload first, refuses when another controller owns what it would
//! change (a Kueue queue or a foreign `managedBy`), skips when its idempotency key is already
//! recorded on the object (`babysitter.dev/last-action-key`, written in the same request as the
//! change), and ends by posting an `events.k8s.io/v1` Event on the workload with reason
//! `Babysitter<Action>`. docs/KUBERNETES.md documents the contract with training scripts and
//! the RBAC rules (deploy/rbac/actuator-rules.yaml) this code needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::core::GroupVersionKind;
use kube::{Client, Error as KubeError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::workload::{
    self, CONFIG_ANNOTATION, ConfigBinding, LAST_KEY_ANNOTATION, NOTE_ANNOTATION,
    RESUME_ANNOTATION, RESUME_ENV, Recreations, RestartMechanism, WorkloadKind, get_path, patch_at,
};
use crate::act::{
    ActError, Action, ActionKind, ActionOutcome, Actuator, Checkpoint, CheckpointSelector,
    ConfigChange, Target,
};
use crate::clock::{Clock, SystemClock};

/// `reportingController` of babysitter's Events.
pub const REPORTING_CONTROLLER: &str = "babysitter.dev/babysitter";

/// Tuning of the Kubernetes actuator. `Default` suits production.
#[derive(Clone)]
pub struct KubeActuatorOptions {
    /// `reportingInstance` of the Events babysitter posts (its pod name in a cluster).
    pub instance: String,
    /// Time of the Events babysitter posts.
    pub clock: Arc<dyn Clock>,
    /// Log lines kept per container by `capture_diagnostics`.
    pub log_lines: i64,
    /// Log bytes kept per container by `capture_diagnostics`.
    pub log_bytes: i64,
    /// Pods described (and whose logs are read) by `capture_diagnostics`.
    pub max_pods: u32,
    /// Most recent workload Events kept by `capture_diagnostics`.
    pub max_events: usize,
    /// How long a restart by recreation waits for the old object to disappear.
    pub recreate_timeout: Duration,
    /// Shared with discovery, so a recreation does not end the workload's watch.
    pub recreations: Arc<Recreations>,
}

impl Default for KubeActuatorOptions {
    fn default() -> Self {
        KubeActuatorOptions {
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "babysitter".to_string()),
            clock: Arc::new(SystemClock),
            log_lines: 50,
            log_bytes: 16 * 1024,
            max_pods: 8,
            max_events: 20,
            recreate_timeout: Duration::from_secs(60),
            recreations: Arc::new(Recreations::default()),
        }
    }
}

impl std::fmt::Debug for KubeActuatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeActuatorOptions")
            .field("instance", &self.instance)
            .field("log_lines", &self.log_lines)
            .field("log_bytes", &self.log_bytes)
            .field("max_pods", &self.max_pods)
            .field("max_events", &self.max_events)
            .field("recreate_timeout", &self.recreate_timeout)
            .finish_non_exhaustive()
    }
}

/// Carries out actions on Kubernetes workloads ([`Target::Kubernetes`]).
#[derive(Clone)]
pub struct KubeActuator {
    client: Client,
    opts: KubeActuatorOptions,
}

/// The workload an action is about.
struct Workload {
    kind: WorkloadKind,
    namespace: String,
    name: String,
    api: Api<DynamicObject>,
}

impl Workload {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

impl std::fmt::Debug for KubeActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeActuator")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl KubeActuator {
    /// An actuator talking to the cluster through `client`.
    pub fn new(client: Client, opts: KubeActuatorOptions) -> Self {
        KubeActuator { client, opts }
    }

    fn workload(&self, target: &Target) -> Result<Workload, ActError> {
        let Target::Kubernetes {
            api_version,
            workload_kind,
            namespace,
            name,
        } = target
        else {
            return Err(ActError::UnknownTarget(format!(
                "{target} (the Kubernetes actuator acts on Kubernetes workloads only)"
            )));
        };
        let kind = WorkloadKind::from_type(api_version, workload_kind)
            .map_err(|e| ActError::UnknownTarget(e.to_string()))?;
        let api = Api::namespaced_with(self.client.clone(), namespace, &kind.api_resource());
        Ok(Workload {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            api,
        })
    }

    async fn fetch(&self, w: &Workload) -> Result<Value, ActError> {
        match w.api.get(&w.name).await {
            Ok(o) => to_value(&o, &w.label()),
            Err(KubeError::Api(s)) if s.is_not_found() => {
                Err(ActError::UnknownTarget(format!("{} not found", w.label())))
            }
            Err(e) => Err(kube_err(&format!("reading {}", w.label()), e)),
        }
    }

    async fn patch_workload(
        &self,
        w: &Workload,
        pp: &PatchParams,
        patch: &Value,
    ) -> Result<Value, ActError> {
        let what = if pp.dry_run {
            format!("dry-run patch of {}", w.label())
        } else {
            format!("patching {}", w.label())
        };
        let o = w
            .api
            .patch(&w.name, pp, &Patch::Merge(patch))
            .await
            .map_err(|e| kube_err(&what, e))?;
        to_value(&o, &w.label())
    }

    async fn pause_resume(
        &self,
        w: &Workload,
        obj: &Value,
        suspend: bool,
        key: &str,
    ) -> Result<ActionOutcome, ActError> {
        let verb = if suspend { "pause" } else { "resume" };
        if let Some(reason) = workload::suspension_owner(w.kind, obj) {
            return Err(ActError::Refused(format!(
                "babysitter does not {verb} {}: {reason}",
                w.label()
            )));
        }
        let field = w.kind.suspend_path().join(".");
        let was = workload::is_suspended(w.kind, obj);
        if was == suspend {
            return Ok(ActionOutcome {
                detail: format!(
                    "{} is already {}; nothing to {verb}",
                    w.label(),
                    if suspend { "suspended" } else { "running" }
                ),
                facts: json!({ "changed": false, "field": field, "suspend": suspend }),
            });
        }
        let mut patch = patch_at(w.kind.suspend_path(), json!(suspend));
        workload::merge(&mut patch, key_patch(key));
        self.patch_workload(w, &PatchParams::default(), &patch)
            .await?;
        Ok(ActionOutcome {
            detail: format!(
                "{} {} ({field}: {was} → {suspend})",
                if suspend { "suspended" } else { "resumed" },
                w.label()
            ),
            facts: json!({ "changed": true, "field": field, "old": was, "new": suspend }),
        })
    }

    async fn restart(
        &self,
        w: &Workload,
        obj: &Value,
        selector: CheckpointSelector,
        key: &str,
    ) -> Result<ActionOutcome, ActError> {
        if let Some(reason) = workload::foreign_manager(w.kind, obj) {
            return Err(ActError::Refused(format!(
                "babysitter does not restart {}: {reason}",
                w.label()
            )));
        }
        let cps = workload::checkpoints(w.kind, obj).map_err(no_checkpoint)?;
        let ckpt = pick_checkpoint(&cps, selector, &w.label())?;
        let was_suspended = workload::is_suspended(w.kind, obj);
        // "Restart from a checkpoint" means the job runs again from it: a paused workload is
        // resumed in the same request (or the same new object), unless Kueue owns its
        // suspension, in which case Kueue admits it when it decides to.
        let queue = workload::kueue_queue(obj);
        let unsuspend = queue.is_none();
        let step = ckpt.step.to_string();
        let (how, mut facts) = match w.kind.restart_mechanism() {
            RestartMechanism::Recreate => self.recreate(w, obj, ckpt.step, unsuspend, key).await?,
            RestartMechanism::PatchTemplatesDeletePods => {
                self.patch_templates_delete_pods(w, obj, ckpt.step, unsuspend, key)
                    .await?
            }
        };
        let suspended = if unsuspend { false } else { was_suspended };
        workload::merge(
            &mut facts,
            json!({
                "checkpoint_step": ckpt.step,
                "checkpoint_t": ckpt.t,
                "selector": selector,
                "env": RESUME_ENV,
                "annotation": RESUME_ANNOTATION,
                "was_suspended": was_suspended,
                "suspended": suspended,
            }),
        );
        if let Some(q) = queue {
            workload::merge(&mut facts, json!({ "kueue_queue": q }));
        }
        let field = w.kind.suspend_path().join(".");
        let tail = match (queue, was_suspended) {
            (None, true) => format!("; it was suspended and runs again ({field}: true → false)"),
            (None, false) => String::new(),
            (Some(q), true) => format!("; it stays suspended until Kueue (queue `{q}`) admits it"),
            (Some(q), false) => format!("; its suspension is left to Kueue (queue `{q}`)"),
        };
        Ok(ActionOutcome {
            detail: format!(
                "restarted {} from checkpoint at step {step} ({how}; {RESUME_ENV}={step}){tail}",
                w.label(),
            ),
            facts,
        })
    }

    /// Deletes the object and creates it again with the resume checkpoint in its templates.
    async fn recreate(
        &self,
        w: &Workload,
        obj: &Value,
        step: u64,
        unsuspend: bool,
        key: &str,
    ) -> Result<(String, Value), ActError> {
        let mut fresh = workload::strip_for_recreate(w.kind, obj);
        let step_s = step.to_string();
        workload::set_annotation(&mut fresh, LAST_KEY_ANNOTATION, key);
        workload::set_annotation(&mut fresh, RESUME_ANNOTATION, &step_s);
        if unsuspend {
            workload::merge(&mut fresh, patch_at(w.kind.suspend_path(), json!(false)));
        }
        match w.kind {
            WorkloadKind::TrainJob => {
                // Env of the trainer containers; annotations reach its JobSet and Jobs.
                let mut trainer = fresh
                    .pointer(workload::trainer_pointer())
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                workload::set_container_env(&mut trainer, RESUME_ENV, &step_s);
                let mut spec_patch = json!({ "spec": { "trainer": trainer } });
                workload::merge(
                    &mut spec_patch,
                    json!({ "spec": { "annotations": { RESUME_ANNOTATION: step_s } } }),
                );
                workload::merge(&mut fresh, spec_patch);
            }
            WorkloadKind::Job | WorkloadKind::JobSet | WorkloadKind::PyTorchJob => {
                for p in workload::pod_template_pointers(w.kind, &fresh) {
                    if let Some(t) = fresh.pointer_mut(&p) {
                        workload::set_resume_in_template(t, step);
                    }
                }
            }
        }
        let uid = get_path(obj, &["metadata", "uid"])
            .and_then(Value::as_str)
            .map(str::to_string);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        // Between the delete and the create the object exists only here: log the manifest so
        // that a crash in that window leaves it where a human can find it.
        tracing::info!(workload = %w.label(), manifest = %fresh, "recreating the workload to restart it from a checkpoint");
        if let Some(u) = &uid {
            self.opts.recreations.mark(u);
        }
        if let Err(e) = w.api.delete(&w.name, &dp).await {
            if let Some(u) = &uid {
                self.opts.recreations.unmark(u);
            }
            return Err(kube_err(
                &format!("deleting {} to recreate it", w.label()),
                e,
            ));
        }
        let manifest: DynamicObject = serde_json::from_value(fresh.clone()).map_err(|e| {
            ActError::Failed(format!("{}: cannot rebuild the object: {e}", w.label()))
        })?;
        let deadline = tokio::time::Instant::now() + self.opts.recreate_timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match w.api.create(&PostParams::default(), &manifest).await {
                Ok(created) => {
                    let new_uid = created.metadata.uid.clone();
                    return Ok((
                        "deleted and recreated from its spec".to_string(),
                        json!({
                            "mechanism": "recreate",
                            "old_uid": uid,
                            "new_uid": new_uid,
                            "create_attempts": attempts,
                        }),
                    ));
                }
                // The old object may still be terminating (finalizers): wait for it.
                Err(KubeError::Api(s))
                    if s.code == 409
                        && s.reason == "AlreadyExists"
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    return Err(ActError::Failed(format!(
                        "{} was deleted but could not be created again ({}); re-create it by hand from this manifest: {fresh}",
                        w.label(),
                        kube_err("create", e)
                    )));
                }
            }
        }
    }

    /// PyTorchJob: patch the resume checkpoint into the replica templates, then delete the
    /// pods; the training operator recreates them from the patched templates.
    async fn patch_templates_delete_pods(
        &self,
        w: &Workload,
        obj: &Value,
        step: u64,
        unsuspend: bool,
        key: &str,
    ) -> Result<(String, Value), ActError> {
        let mut patch = key_patch(key);
        workload::set_annotation(&mut patch, RESUME_ANNOTATION, &step.to_string());
        // In the same request as the key: a restart recorded on the object has also resumed it.
        if unsuspend {
            workload::merge(&mut patch, patch_at(w.kind.suspend_path(), json!(false)));
        }
        if let Some(rv) = get_path(obj, &["metadata", "resourceVersion"]).cloned() {
            workload::merge(&mut patch, json!({ "metadata": { "resourceVersion": rv } }));
        }
        let mut modified = obj.clone();
        for p in workload::pod_template_pointers(w.kind, obj) {
            let Some(t) = modified.pointer_mut(&p) else {
                continue;
            };
            workload::set_resume_in_template(t, step);
            let containers = t.pointer("/spec/containers").cloned().unwrap_or(json!([]));
            let segs = pointer_segments(&p);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            workload::merge(
                &mut patch,
                patch_at(
                    &segs,
                    json!({
                        "metadata": { "annotations": { RESUME_ANNOTATION: step.to_string() } },
                        "spec": { "containers": containers },
                    }),
                ),
            );
        }
        self.patch_workload(w, &PatchParams::default(), &patch)
            .await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &w.namespace);
        let selector = w.kind.pod_selector(&w.name);
        let deleted = pods
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(|e| kube_err(&format!("deleting the pods of {}", w.label()), e))?;
        // The API server answers with the deleted pods (or a bare Status).
        let names: Vec<String> = deleted
            .left()
            .map(|list| {
                list.items
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            format!(
                "patched its replica templates and deleted {} pod(s); the training operator recreates them",
                names.len()
            ),
            json!({ "mechanism": "patch_templates_delete_pods", "pod_selector": selector, "deleted_pods": names }),
        ))
    }

    async fn patch_config(
        &self,
        w: &Workload,
        obj: &Value,
        changes: &[ConfigChange],
        key: &str,
    ) -> Result<ActionOutcome, ActError> {
        if let Some(reason) = workload::foreign_manager(w.kind, obj) {
            return Err(ActError::Refused(format!(
                "babysitter does not patch {}: {reason}",
                w.label()
            )));
        }
        if changes.is_empty() {
            return Err(ActError::Refused(format!(
                "{}: empty config patch",
                w.label()
            )));
        }
        let bindings =
            workload::config_bindings(w.kind, obj).map_err(|e| ActError::Refused(e.to_string()))?;
        // Every key must be bound before anything is written: a patch applies whole or not at all.
        let mut by_cm: BTreeMap<String, Vec<(&ConfigChange, String)>> = BTreeMap::new();
        let mut on_workload: Vec<(&ConfigChange, &ConfigBinding)> = vec![];
        for c in changes {
            let b = bindings.get(&c.key).ok_or_else(|| {
                ActError::Refused(format!(
                    "{}: config key `{}` is not bound in annotation {CONFIG_ANNOTATION} (bound keys: {})",
                    w.label(),
                    c.key,
                    bindings.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            match b {
                ConfigBinding::ConfigMap { config_map, key } => by_cm
                    .entry(config_map.clone())
                    .or_default()
                    .push((c, key.clone())),
                ConfigBinding::Env { .. } | ConfigBinding::Arg { .. } => {
                    if !w.kind.mutable_containers() {
                        return Err(ActError::Refused(format!(
                            "{}: `{}` is bound to {b}, but a {}'s pod template is immutable; bind it to a ConfigMap key (docs/KUBERNETES.md)",
                            w.label(),
                            c.key,
                            w.kind.kind()
                        )));
                    }
                    on_workload.push((c, b));
                }
            }
        }
        let mut diff = vec![];
        // ConfigMaps: read, compute, dry-run every patch, then apply.
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &w.namespace);
        let mut cm_patches = vec![];
        for (cm_name, items) in &by_cm {
            let cm = cms.get(cm_name).await.map_err(|e| {
                kube_err(&format!("reading ConfigMap {}/{cm_name}", w.namespace), e)
            })?;
            // A retry after a crash between this ConfigMap's patch and the workload's: the
            // ConfigMap already carries the key, so its change is not applied twice (a scale
            // applied twice would halve the learning rate twice).
            let done = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LAST_KEY_ANNOTATION))
                .is_some_and(|k| k == key);
            if done {
                for (c, data_key) in items {
                    diff.push(json!({
                        "key": c.key, "at": format!("ConfigMap {cm_name} key {data_key}"),
                        "already_applied": true,
                        "new": cm.data.as_ref().and_then(|d| d.get(data_key)),
                    }));
                }
                continue;
            }
            let data = cm.data.clone().unwrap_or_default();
            let mut new_data = serde_json::Map::new();
            for (c, data_key) in items {
                let old = data.get(data_key).map(String::as_str);
                let new = workload::apply_change(old, c).map_err(|e| {
                    ActError::Refused(format!(
                        "{} (ConfigMap {cm_name} key {data_key}): {e}",
                        w.label()
                    ))
                })?;
                diff.push(json!({
                    "key": c.key, "at": format!("ConfigMap {cm_name} key {data_key}"),
                    "old": old, "new": new,
                }));
                new_data.insert(data_key.clone(), Value::String(new));
            }
            let mut patch = key_patch(key);
            if let Some(rv) = &cm.metadata.resource_version {
                workload::merge(&mut patch, json!({ "metadata": { "resourceVersion": rv } }));
            }
            workload::merge(&mut patch, json!({ "data": new_data }));
            cm_patches.push((cm_name.clone(), patch));
        }
        let wl_patch = if on_workload.is_empty() {
            None
        } else {
            Some(self.workload_config_patch(w, obj, &on_workload, key, &mut diff)?)
        };
        let dry = PatchParams::default().dry_run();
        let dry_run = if cm_patches.is_empty() && wl_patch.is_none() {
            "nothing left to patch"
        } else {
            "server-side dry run passed"
        };
        for (cm_name, patch) in &cm_patches {
            cms.patch(cm_name, &dry, &Patch::Merge(patch))
                .await
                .map_err(|e| kube_err(&format!("dry-run patch of ConfigMap {cm_name}"), e))?;
        }
        if let Some(p) = &wl_patch {
            self.patch_workload(w, &dry, p).await?;
        }
        for (cm_name, patch) in &cm_patches {
            cms.patch(cm_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| kube_err(&format!("patching ConfigMap {cm_name}"), e))?;
        }
        // The workload carries the key too: in the same request as its own change, or alone.
        let final_patch = wl_patch.unwrap_or_else(|| key_patch(key));
        self.patch_workload(w, &PatchParams::default(), &final_patch)
            .await?;
        // One entry per distinct change (a key set in several containers reads once).
        let mut summary: Vec<String> = vec![];
        for d in &diff {
            let line = if d["already_applied"] == json!(true) {
                format!(
                    "{} = {} (already applied)",
                    d["key"].as_str().unwrap_or("?"),
                    d["new"].as_str().unwrap_or("(unset)")
                )
            } else {
                format!(
                    "{} {} → {}",
                    d["key"].as_str().unwrap_or("?"),
                    d["old"].as_str().unwrap_or("(unset)"),
                    d["new"].as_str().unwrap_or("?")
                )
            };
            if !summary.contains(&line) {
                summary.push(line);
            }
        }
        let summary = summary.join(", ");
        Ok(ActionOutcome {
            detail: format!(
                "patched config of {}: {summary} ({dry_run}; takes effect when the job re-reads it or restarts)",
                w.label()
            ),
            facts: json!({ "changes": diff, "dry_run": dry_run }),
        })
    }

    /// The merge patch for env/args changes of a PyTorchJob or TrainJob (full container or
    /// trainer lists: merge patches replace lists whole), guarded by the resourceVersion read.
    fn workload_config_patch(
        &self,
        w: &Workload,
        obj: &Value,
        changes: &[(&ConfigChange, &ConfigBinding)],
        key: &str,
        diff: &mut Vec<Value>,
    ) -> Result<Value, ActError> {
        let mut modified = obj.clone();
        // Lists to write back, by JSON pointer.
        let mut touched: BTreeMap<String, Value> = BTreeMap::new();
        for (c, b) in changes {
            let mut found = false;
            // Pointers of the objects holding `env` and `args`: containers, or a TrainJob's
            // trainer.
            let holders: Vec<String> = match w.kind {
                WorkloadKind::TrainJob => vec![workload::trainer_pointer().to_string()],
                _ => workload::pod_template_pointers(w.kind, obj)
                    .into_iter()
                    .flat_map(|t| {
                        let n = obj
                            .pointer(&format!("{t}/spec/containers"))
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        (0..n).map(move |i| format!("{t}/spec/containers/{i}"))
                    })
                    .collect(),
            };
            for ptr in holders {
                let Some(holder) = modified.pointer_mut(&ptr) else {
                    continue;
                };
                let cname = holder
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let wanted = match b {
                    ConfigBinding::Env { container, .. } | ConfigBinding::Arg { container, .. } => {
                        container.clone()
                    }
                    ConfigBinding::ConfigMap { .. } => None,
                };
                if w.kind != WorkloadKind::TrainJob && wanted.is_some() && wanted != cname {
                    continue;
                }
                let at_label = format!("{ptr} ({})", cname.as_deref().unwrap_or("trainer"));
                let (field, old) = match b {
                    ConfigBinding::Env { env, .. } => {
                        let list = holder.get("env").and_then(Value::as_array);
                        match list.and_then(|l| workload::env_value(l, env)) {
                            Some(Some(v)) => ("env", Some(v)),
                            Some(None) => {
                                return Err(ActError::Refused(format!(
                                    "{}: env {env} at {at_label} comes from valueFrom; babysitter only changes literal values",
                                    w.label()
                                )));
                            }
                            None => continue,
                        }
                    }
                    ConfigBinding::Arg { arg, .. } => {
                        let list = holder.get("args").and_then(Value::as_array);
                        match list.and_then(|l| workload::arg_value(l, arg)) {
                            Some(v) => ("args", Some(v)),
                            None => continue,
                        }
                    }
                    ConfigBinding::ConfigMap { .. } => continue,
                };
                let new = workload::apply_change(old.as_deref(), c)
                    .map_err(|e| ActError::Refused(format!("{}: {e}", w.label())))?;
                match b {
                    ConfigBinding::Env { env, .. } => {
                        if let Some(l) = holder.get_mut("env").and_then(Value::as_array_mut) {
                            workload::set_env(l, env, &new);
                        }
                    }
                    ConfigBinding::Arg { arg, .. } => {
                        if let Some(l) = holder.get_mut("args").and_then(Value::as_array_mut) {
                            workload::set_arg(l, arg, &new);
                        }
                    }
                    ConfigBinding::ConfigMap { .. } => {}
                }
                found = true;
                diff.push(json!({
                    "key": c.key, "at": format!("{at_label} {field} {}", match b {
                        ConfigBinding::Env { env, .. } => env.as_str(),
                        ConfigBinding::Arg { arg, .. } => arg.as_str(),
                        ConfigBinding::ConfigMap { key, .. } => key.as_str(),
                    }),
                    "old": old, "new": new,
                }));
                // The list that changed, written back whole.
                let list_ptr = match w.kind {
                    WorkloadKind::TrainJob => format!("{ptr}/{field}"),
                    _ => ptr
                        .rsplit_once('/')
                        .map(|(l, _)| l.to_string())
                        .unwrap_or_default(),
                };
                touched.insert(list_ptr, Value::Null);
            }
            if !found {
                return Err(ActError::Refused(format!(
                    "{}: `{}` is bound to {b}, but no container sets it",
                    w.label(),
                    c.key
                )));
            }
        }
        let mut patch = key_patch(key);
        if let Some(rv) = get_path(obj, &["metadata", "resourceVersion"]).cloned() {
            workload::merge(&mut patch, json!({ "metadata": { "resourceVersion": rv } }));
        }
        for list_ptr in touched.keys() {
            let value = modified.pointer(list_ptr).cloned().unwrap_or(Value::Null);
            let segs = pointer_segments(list_ptr);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            workload::merge(&mut patch, patch_at(&segs, value));
        }
        Ok(patch)
    }

    async fn diagnostics(&self, w: &Workload, obj: &Value) -> Result<ActionOutcome, ActError> {
        let status = obj.get("status").cloned().unwrap_or(Value::Null);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &w.namespace);
        let selector = w.kind.pod_selector(&w.name);
        let list = pods
            .list(
                &ListParams::default()
                    .labels(&selector)
                    .limit(self.opts.max_pods),
            )
            .await
            .map_err(|e| kube_err(&format!("listing the pods of {}", w.label()), e))?;
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), &w.namespace);
        let fields = format!(
            "involvedObject.kind={},involvedObject.name={}",
            w.kind.kind(),
            w.name
        );
        let mut evs = events
            .list(&ListParams::default().fields(&fields))
            .await
            .map_err(|e| kube_err(&format!("listing the events of {}", w.label()), e))?
            .items;
        evs.sort_by_key(event_time);
        let skip = evs.len().saturating_sub(self.opts.max_events);
        let events_out: Vec<Value> = evs
            .iter()
            .skip(skip)
            .map(|e| {
                json!({
                    "type": e.type_, "reason": e.reason, "count": e.count,
                    "message": e.message.as_deref().map(|m| workload::truncate(m, 512)),
                    "time": event_time(e),
                })
            })
            .collect();
        let mut pods_out = vec![];
        for p in list.items.iter().take(self.opts.max_pods as usize) {
            let pname = p.metadata.name.clone().unwrap_or_default();
            let statuses: Vec<Value> = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            json!({
                                "name": c.name, "ready": c.ready, "restarts": c.restart_count,
                                "state": c.state.as_ref().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
                                "last_state": c.last_state.as_ref().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut logs = serde_json::Map::new();
            let containers: Vec<String> = p
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            for c in containers {
                let lp = LogParams {
                    container: Some(c.clone()),
                    tail_lines: Some(self.opts.log_lines),
                    limit_bytes: Some(self.opts.log_bytes),
                    ..LogParams::default()
                };
                let text = match pods.logs(&pname, &lp).await {
                    Ok(t) => workload::truncate(&t, self.opts.log_bytes.max(0) as usize),
                    // A pod still pending has no logs: say so instead of failing the capture.
                    Err(e) => format!("(no logs: {})", kube_err("logs", e)),
                };
                logs.insert(c, Value::String(text));
            }
            pods_out.push(json!({
                "name": pname,
                "phase": p.status.as_ref().and_then(|s| s.phase.clone()),
                "node": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                "containers": statuses,
                "logs": logs,
            }));
        }
        let status_text = workload::truncate(&status.to_string(), 8 * 1024);
        Ok(ActionOutcome {
            detail: format!(
                "captured diagnostics of {}: status, {} pod(s), {} event(s), last {} log lines per container",
                w.label(),
                pods_out.len(),
                events_out.len(),
                self.opts.log_lines
            ),
            facts: json!({
                "status": if status_text.len() < status.to_string().len() { Value::String(status_text) } else { status },
                "pod_selector": selector,
                "pods": pods_out,
                "more_pods": list.metadata.continue_.as_deref().is_some_and(|c| !c.is_empty()),
                "events": events_out,
            }),
        })
    }

    /// Posts an `events.k8s.io/v1` Event on the workload. Its name derives from the key, so a
    /// retry finds it already there (409) instead of posting it twice.
    async fn post_event(
        &self,
        w: &Workload,
        obj: &Value,
        kind: ActionKind,
        key: &str,
        refused: bool,
        note: &str,
    ) -> Result<String, String> {
        let reason = format!(
            "Babysitter{}{}",
            camel(kind.as_str()),
            if refused { "Refused" } else { "" }
        );
        let digest = Sha256::digest(format!("{key}\n{reason}").as_bytes());
        let name = format!(
            "{}.babysitter.{}",
            workload::truncate(&w.name, 200).trim_end_matches('…'),
            &hex::encode(digest)[..16]
        );
        let now = self.opts.clock.now();
        let secs = now.floor();
        let micros = ((now - secs) * 1e6).round().min(999_999.0) as u32;
        let time = chrono::DateTime::from_timestamp(secs as i64, micros * 1000)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let body = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": { "name": name, "namespace": w.namespace },
            "eventTime": time,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": workload::truncate(&self.opts.instance, 128),
            "action": camel(kind.as_str()),
            "reason": reason,
            "type": if refused { "Warning" } else { "Normal" },
            "note": workload::truncate(note, 1000),
            "regarding": {
                "apiVersion": w.kind.api_version(),
                "kind": w.kind.kind(),
                "namespace": w.namespace,
                "name": w.name,
                "uid": get_path(obj, &["metadata", "uid"]),
            },
        });
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &w.namespace, &ar);
        let ev: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => Ok(name),
            Err(KubeError::Api(s)) if s.code == 409 => Ok(name),
            Err(e) => Err(kube_err("posting the Event", e).to_string()),
        }
    }

    /// Reports the Event's fate in the outcome: an action that worked is not undone because
    /// its Event could not be posted.
    async fn with_event(
        &self,
        w: &Workload,
        obj: &Value,
        kind: ActionKind,
        key: &str,
        mut out: ActionOutcome,
    ) -> ActionOutcome {
        let ev = self.post_event(w, obj, kind, key, false, &out.detail).await;
        let fact = match ev {
            Ok(name) => json!({ "event": name }),
            Err(e) => {
                tracing::warn!(workload = %w.label(), error = %e, "could not post the Kubernetes Event");
                json!({ "event_error": e })
            }
        };
        if !out.facts.is_object() {
            out.facts = json!({});
        }
        workload::merge(&mut out.facts, fact);
        out
    }
}

#[async_trait]
impl Actuator for KubeActuator {
    async fn execute(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<ActionOutcome, ActError> {
        let w = self.workload(target)?;
        if let Action::Page { .. } = action {
            return Err(ActError::Refused(format!(
                "{}: paging is not a workload action (babysitter pages through its notifier)",
                w.label()
            )));
        }
        let obj = self.fetch(&w).await?;
        let kind = action.kind();
        if kind != ActionKind::CaptureDiagnostics
            && get_path(&obj, &["metadata", "annotations", LAST_KEY_ANNOTATION])
                .and_then(Value::as_str)
                == Some(key)
        {
            // The change is done, but its Event may not be (a crash between the two): post it,
            // idempotently.
            let out = ActionOutcome {
                detail: format!(
                    "{kind} on {} already applied (idempotency key {key}); not repeated",
                    w.label()
                ),
                facts: json!({ "skipped": true, "key": key }),
            };
            return Ok(self.with_event(&w, &obj, kind, key, out).await);
        }
        let result = match action {
            Action::Pause => self.pause_resume(&w, &obj, true, key).await,
            Action::Resume => self.pause_resume(&w, &obj, false, key).await,
            Action::RestartFromCheckpoint { checkpoint } => {
                self.restart(&w, &obj, *checkpoint, key).await
            }
            Action::PatchConfig { changes } => self.patch_config(&w, &obj, changes, key).await,
            Action::CaptureDiagnostics => self.diagnostics(&w, &obj).await,
            Action::Annotate { note } => {
                let mut patch = key_patch(key);
                workload::set_annotation(&mut patch, NOTE_ANNOTATION, note);
                self.patch_workload(&w, &PatchParams::default(), &patch)
                    .await
                    .map(|_| ActionOutcome {
                        detail: format!("annotated {}: {note}", w.label()),
                        facts: json!({ "note": note }),
                    })
            }
            Action::Page { .. } => unreachable_page(&w),
        };
        match result {
            Ok(out) => Ok(self.with_event(&w, &obj, kind, key, out).await),
            Err(ActError::Refused(reason)) => {
                if let Err(e) = self.post_event(&w, &obj, kind, key, true, &reason).await {
                    tracing::warn!(workload = %w.label(), error = %e, "could not post the Kubernetes Event");
                }
                Err(ActError::Refused(reason))
            }
            Err(e) => Err(e),
        }
    }

    async fn checkpoints(&self, target: &Target) -> Result<Vec<Checkpoint>, ActError> {
        let w = self.workload(target)?;
        let obj = self.fetch(&w).await?;
        workload::checkpoints(w.kind, &obj).map_err(no_checkpoint)
    }

    /// Every changing action writes its key into `babysitter.dev/last-action-key` in the same
    /// request as the change, so the workload itself says whether the action under `key`
    /// happened: the annotation equals the key. Anything else (another key, no annotation, a
    /// read-only action, a workload that is gone) is `None`: recovery then runs the action
    /// under the same key, which `execute` keeps idempotent.
    ///
    /// A recalled action gets the Event every action ends with, since the crash may have come
    /// before it was posted. Its name derives from the key and the action, so an Event posted
    /// before the crash answers 409 and is not posted twice; its fate is in the facts (`event`
    /// or `event_error`) as for any action.
    async fn recall(
        &self,
        target: &Target,
        action: &Action,
        key: &str,
    ) -> Result<Option<ActionOutcome>, ActError> {
        let w = self.workload(target)?;
        let obj = self.fetch(&w).await?;
        let kind = action.kind();
        match recalled(&w, &obj, kind, key) {
            Some(out) => Ok(Some(self.with_event(&w, &obj, kind, key, out).await)),
            None => Ok(None),
        }
    }
}

/// The outcome `recall` reports when `obj` carries `key` as its last action key.
fn recalled(w: &Workload, obj: &Value, kind: ActionKind, key: &str) -> Option<ActionOutcome> {
    let annotations = get_path(obj, &["metadata", "annotations"]);
    let last = annotations
        .and_then(|a| a.get(LAST_KEY_ANNOTATION))
        .and_then(Value::as_str);
    if last != Some(key) {
        return None;
    }
    let resume = annotations
        .and_then(|a| a.get(RESUME_ANNOTATION))
        .and_then(Value::as_str);
    Some(ActionOutcome {
        detail: format!(
            "{} carries {LAST_KEY_ANNOTATION}={key}: the {kind} was applied before babysitter stopped; not repeated",
            w.label()
        ),
        facts: json!({
            "recalled": true,
            "key": key,
            "uid": get_path(obj, &["metadata", "uid"]),
            "resource_version": get_path(obj, &["metadata", "resourceVersion"]),
            "suspended": workload::is_suspended(w.kind, obj),
            "resume_checkpoint": resume,
        }),
    })
}

/// Page is refused before the workload is read; kept as a value so the match stays exhaustive.
fn unreachable_page(w: &Workload) -> Result<ActionOutcome, ActError> {
    Err(ActError::Refused(format!(
        "{}: paging is not a workload action",
        w.label()
    )))
}

fn no_checkpoint(e: workload::WorkloadError) -> ActError {
    match e {
        workload::WorkloadError::MissingAnnotation { .. } => ActError::NoCheckpoint(format!(
            "{e}: the training script must list its completed checkpoints there (docs/KUBERNETES.md)"
        )),
        other => ActError::Failed(other.to_string()),
    }
}

fn pick_checkpoint(
    cps: &[Checkpoint],
    selector: CheckpointSelector,
    label: &str,
) -> Result<Checkpoint, ActError> {
    let have = || {
        if cps.is_empty() {
            "none".to_string()
        } else {
            cps.iter()
                .map(|c| c.step.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match selector {
        CheckpointSelector::Step(s) => cps.iter().rev().find(|c| c.step == s).copied(),
        CheckpointSelector::Latest => cps.last().copied(),
        // Resuming a possibly poisoned state is worse than not restarting: the engine resolves
        // `before_onset` to a step (it knows the onset); the actuator does not guess.
        CheckpointSelector::BeforeOnset => {
            return Err(ActError::NoCheckpoint(format!(
                "{selector} for {label}: the onset is not known here; resolve it to a step first"
            )));
        }
    }
    .ok_or_else(|| {
        ActError::NoCheckpoint(format!(
            "{selector} for {label} (completed checkpoints: {})",
            have()
        ))
    })
}

/// `{"metadata": {"annotations": {"babysitter.dev/last-action-key": key}}}`.
fn key_patch(key: &str) -> Value {
    json!({ "metadata": { "annotations": { LAST_KEY_ANNOTATION: key } } })
}

/// JSON pointer → unescaped segments.
fn pointer_segments(ptr: &str) -> Vec<String> {
    ptr.split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// `restart_from_checkpoint` → `RestartFromCheckpoint`.
fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

fn event_time(e: &CoreEvent) -> Option<String> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()))
}

fn to_value(o: &DynamicObject, label: &str) -> Result<Value, ActError> {
    serde_json::to_value(o)
        .map_err(|e| ActError::Failed(format!("{label}: cannot read the object: {e}")))
}

/// An API error, in words an operator can act on.
fn kube_err(what: &str, e: KubeError) -> ActError {
    match e {
        KubeError::Api(s) => {
            let msg = format!("{what}: {} {}: {}", s.code, s.reason, s.message);
            match s.code {
                // The API server (or an admission webhook) rejected the change itself.
                400 | 422 => ActError::Refused(msg),
                403 => ActError::Failed(format!(
                    "{msg} (babysitter's RBAC lacks this permission: see docs/KUBERNETES.md)"
                )),
                409 => ActError::Failed(format!(
                    "{msg} (the object changed concurrently; the action can be retried)"
                )),
                _ => ActError::Failed(msg),
            }
        }
        other => ActError::Failed(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests;
