//! Workload kinds: what differs between a batch/v1 Job, a JobSet, a Kubeflow PyTorchJob and a
//! TrainJob, as data and pure functions over the object's JSON.
//!
//! The actuator asks this module where a kind keeps its suspend field, its pod templates and
//! its pods, who owns its suspension (a queue controller or another `managedBy`), how to strip
//! an object so it can be created again, and how to read the annotations a training script
//! maintains (checkpoints, config bindings). Nothing here does I/O, so every rule is unit-tested.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::ApiResource;
use kube::core::GroupVersionKind;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::act::{ChangeOp, Checkpoint, ConfigChange};

/// Annotation the training script (or its operator) keeps up to date with its completed
/// checkpoints: a JSON list of `{"step": u64, "t": unix_seconds}`.
pub const CHECKPOINTS_ANNOTATION: &str = "babysitter.dev/checkpoints";
/// Annotation that maps config keys (as runbooks name them) to where the job reads them.
pub const CONFIG_ANNOTATION: &str = "babysitter.dev/config";
/// Annotation set on the workload and its pod templates: the step a restart resumes from.
pub const RESUME_ANNOTATION: &str = "babysitter.dev/resume-checkpoint";
/// Environment variable set in every training container: the step a restart resumes from.
pub const RESUME_ENV: &str = "BABYSITTER_RESUME_CHECKPOINT";
/// Annotation holding the idempotency key of the last action applied to the object.
pub const LAST_KEY_ANNOTATION: &str = "babysitter.dev/last-action-key";
/// Annotation holding the last note babysitter left (the `annotate` action).
pub const NOTE_ANNOTATION: &str = "babysitter.dev/last-note";
/// Kueue's label: a workload in a Kueue queue is suspended and resumed by Kueue.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Why a workload or one of its annotations cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error(
        "unsupported workload {api_version} {kind} (babysitter acts on batch/v1 Job, jobset.x-k8s.io/v1alpha2 JobSet, kubeflow.org/v1 PyTorchJob and trainer.kubeflow.org/v1alpha1 TrainJob)"
    )]
    Unsupported { api_version: String, kind: String },
    #[error("{object}: annotation `{annotation}` is missing")]
    MissingAnnotation {
        object: String,
        annotation: &'static str,
    },
    #[error("{object}: annotation `{annotation}` is malformed: {reason}")]
    BadAnnotation {
        object: String,
        annotation: &'static str,
        reason: String,
    },
    #[error("{object}: field `{field}` is malformed: {reason}")]
    BadField {
        object: String,
        field: String,
        reason: String,
    },
}

/// The four workload kinds babysitter discovers and acts on (the one table of their API
/// groups, versions, kinds and plurals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Job,
    JobSet,
    PyTorchJob,
    TrainJob,
}

/// How a restart from a checkpoint is carried out for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMechanism {
    /// Delete the object (background propagation, preconditioned on its uid) and create it
    /// again from its own spec with the resume checkpoint in its pod templates.
    Recreate,
    /// Patch the resume checkpoint into the (mutable) pod templates, then delete the pods: the
    /// operator recreates them from the patched templates.
    PatchTemplatesDeletePods,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::Job,
        WorkloadKind::JobSet,
        WorkloadKind::PyTorchJob,
        WorkloadKind::TrainJob,
    ];

    /// Resolves a [`crate::act::Target::Kubernetes`]'s `api_version` and `workload_kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Result<Self, WorkloadError> {
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
            .ok_or_else(|| WorkloadError::Unsupported {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    pub fn group(self) -> &'static str {
        match self {
            WorkloadKind::Job => "batch",
            WorkloadKind::JobSet => "jobset.x-k8s.io",
            WorkloadKind::PyTorchJob => "kubeflow.org",
            WorkloadKind::TrainJob => "trainer.kubeflow.org",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            WorkloadKind::Job => "v1",
            WorkloadKind::JobSet => "v1alpha2",
            WorkloadKind::PyTorchJob => "v1",
            WorkloadKind::TrainJob => "v1alpha1",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Job => "batch/v1",
            WorkloadKind::JobSet => "jobset.x-k8s.io/v1alpha2",
            WorkloadKind::PyTorchJob => "kubeflow.org/v1",
            WorkloadKind::TrainJob => "trainer.kubeflow.org/v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Job => "Job",
            WorkloadKind::JobSet => "JobSet",
            WorkloadKind::PyTorchJob => "PyTorchJob",
            WorkloadKind::TrainJob => "TrainJob",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Job => "jobs",
            WorkloadKind::JobSet => "jobsets",
            WorkloadKind::PyTorchJob => "pytorchjobs",
            WorkloadKind::TrainJob => "trainjobs",
        }
    }

    /// The resource for a dynamic [`kube::Api`]: no CRD crates, the CRDs need not be installed
    /// where babysitter is built.
    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group(), self.version(), self.kind()),
            self.plural(),
        )
    }

    /// Condition types (with status `"True"`) that mean the workload has finished.
    pub fn terminal_conditions(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Job => &["Complete", "Failed"],
            WorkloadKind::JobSet => &["Completed", "Failed"],
            WorkloadKind::PyTorchJob => &["Succeeded", "Failed"],
            WorkloadKind::TrainJob => &["Complete", "Failed"],
        }
    }

    /// Path of the boolean suspend field.
    pub fn suspend_path(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::PyTorchJob => &["spec", "runPolicy", "suspend"],
            WorkloadKind::Job | WorkloadKind::JobSet | WorkloadKind::TrainJob => {
                &["spec", "suspend"]
            }
        }
    }

    /// Path of the `managedBy` field.
    pub fn managed_by_path(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::PyTorchJob => &["spec", "runPolicy", "managedBy"],
            WorkloadKind::Job | WorkloadKind::JobSet | WorkloadKind::TrainJob => {
                &["spec", "managedBy"]
            }
        }
    }

    /// The `managedBy` value meaning "the kind's own controller" (an absent field means the
    /// same).
    pub fn default_manager(self) -> &'static str {
        match self {
            WorkloadKind::Job => "kubernetes.io/job-controller",
            WorkloadKind::JobSet => "jobset.sigs.k8s.io/jobset-controller",
            WorkloadKind::PyTorchJob => "kubeflow.org/training-operator",
            WorkloadKind::TrainJob => "trainer.kubeflow.org/trainjob-controller",
        }
    }

    /// Label selector of the workload's pods.
    pub fn pod_selector(self, name: &str) -> String {
        match self {
            WorkloadKind::Job => format!("batch.kubernetes.io/job-name={name}"),
            // A TrainJob runs as a JobSet of the same name.
            WorkloadKind::JobSet | WorkloadKind::TrainJob => {
                format!("jobset.sigs.k8s.io/jobset-name={name}")
            }
            WorkloadKind::PyTorchJob => format!("training.kubeflow.org/job-name={name}"),
        }
    }

    pub fn restart_mechanism(self) -> RestartMechanism {
        match self {
            // The Job and JobSet pod templates are immutable, and a TrainJob's trainer settings
            // reach the pods through a JobSet whose template is immutable: only a new object
            // carries a new resume checkpoint into the pods.
            WorkloadKind::Job | WorkloadKind::JobSet | WorkloadKind::TrainJob => {
                RestartMechanism::Recreate
            }
            // The training operator recreates missing pods from the current (mutable) replica
            // templates: its own restart path.
            WorkloadKind::PyTorchJob => RestartMechanism::PatchTemplatesDeletePods,
        }
    }

    /// Whether container env and args can be changed in place (otherwise the API server
    /// rejects the change as immutable).
    pub fn mutable_containers(self) -> bool {
        match self {
            WorkloadKind::Job | WorkloadKind::JobSet => false,
            WorkloadKind::PyTorchJob | WorkloadKind::TrainJob => true,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version(), self.kind())
    }
}

/// The value at `path` in `v`, if every step exists.
pub fn get_path<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

/// A merge patch that sets `path` to `value` (nested objects along the way).
pub fn patch_at(path: &[&str], value: Value) -> Value {
    path.iter()
        .rev()
        .fold(value, |inner, k| json!({ (*k).to_string(): inner }))
}

/// Deep-merges `b` into `a` (objects merge key by key, anything else is replaced).
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The Kueue queue the workload is in ([`KUEUE_QUEUE_LABEL`]), if any: Kueue then suspends
/// and admits it.
pub fn kueue_queue(obj: &Value) -> Option<&str> {
    get_path(obj, &["metadata", "labels", KUEUE_QUEUE_LABEL]).and_then(Value::as_str)
}

/// Who owns the workload's suspension, if not babysitter: a Kueue queue label or a
/// `managedBy` naming another controller. The reason is meant for the operator.
pub fn suspension_owner(kind: WorkloadKind, obj: &Value) -> Option<String> {
    if let Some(q) = kueue_queue(obj) {
        return Some(format!(
            "it is in Kueue queue `{q}` (label {KUEUE_QUEUE_LABEL}): Kueue owns its suspension; pause or resume it through Kueue (e.g. stop its LocalQueue or Workload)"
        ));
    }
    foreign_manager(kind, obj)
}

/// A `managedBy` that is not the kind's own controller: another controller (e.g. MultiKueue)
/// runs the workload, and babysitter must not change it.
pub fn foreign_manager(kind: WorkloadKind, obj: &Value) -> Option<String> {
    let field = kind.managed_by_path().join(".");
    match get_path(obj, kind.managed_by_path()) {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.is_empty() || m == kind.default_manager() => None,
        Some(m) => Some(format!(
            "its {field} is {m}, not the default {}: that controller owns it; act through it",
            kind.default_manager()
        )),
    }
}

/// The object's current suspend value (absent means running).
pub fn is_suspended(kind: WorkloadKind, obj: &Value) -> bool {
    get_path(obj, kind.suspend_path())
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// JSON pointers (RFC 6901) of the workload's pod templates (`PodTemplateSpec`s). A TrainJob
/// has none of its own: its pods come from a runtime (see [`trainer_pointer`]).
pub fn pod_template_pointers(kind: WorkloadKind, obj: &Value) -> Vec<String> {
    match kind {
        WorkloadKind::Job => {
            if obj.pointer("/spec/template").is_some() {
                vec!["/spec/template".to_string()]
            } else {
                vec![]
            }
        }
        WorkloadKind::JobSet => obj
            .pointer("/spec/replicatedJobs")
            .and_then(Value::as_array)
            .map(|rjs| {
                (0..rjs.len())
                    .map(|i| format!("/spec/replicatedJobs/{i}/template/spec/template"))
                    .filter(|p| obj.pointer(p).is_some())
                    .collect()
            })
            .unwrap_or_default(),
        WorkloadKind::PyTorchJob => obj
            .pointer("/spec/pytorchReplicaSpecs")
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .map(|role| format!("/spec/pytorchReplicaSpecs/{}/template", escape(role)))
                    .filter(|p| obj.pointer(p).is_some())
                    .collect()
            })
            .unwrap_or_default(),
        WorkloadKind::TrainJob => vec![],
    }
}

/// Where a TrainJob keeps its trainer's env and args.
pub fn trainer_pointer() -> &'static str {
    "/spec/trainer"
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn object_name(kind: WorkloadKind, obj: &Value) -> String {
    let ns = get_path(obj, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .unwrap_or("?");
    let name = get_path(obj, &["metadata", "name"])
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{}/{ns}/{name}", kind.kind())
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    get_path(obj, &["metadata", "annotations", key]).and_then(Value::as_str)
}

/// The checkpoints the training script reported in [`CHECKPOINTS_ANNOTATION`], oldest first.
pub fn checkpoints(kind: WorkloadKind, obj: &Value) -> Result<Vec<Checkpoint>, WorkloadError> {
    let object = object_name(kind, obj);
    let raw = annotation(obj, CHECKPOINTS_ANNOTATION).ok_or_else(|| {
        WorkloadError::MissingAnnotation {
            object: object.clone(),
            annotation: CHECKPOINTS_ANNOTATION,
        }
    })?;
    let bad = |reason: String| WorkloadError::BadAnnotation {
        object: object.clone(),
        annotation: CHECKPOINTS_ANNOTATION,
        reason,
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        step: u64,
        t: f64,
    }
    let list: Vec<Raw> = serde_json::from_str(raw).map_err(|e| {
        bad(format!(
            "{e} (expected a JSON list like [{{\"step\": 1200, \"t\": 1764000000.0}}])"
        ))
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.into_iter().enumerate() {
        if !c.t.is_finite() || c.t < 0.0 {
            return Err(bad(format!(
                "entry {i}: `t` must be Unix seconds, not {}",
                c.t
            )));
        }
        out.push(Checkpoint {
            step: c.step,
            t: c.t,
        });
    }
    out.sort_by(|a, b| a.step.cmp(&b.step).then(a.t.total_cmp(&b.t)));
    Ok(out)
}

/// Where a config key lives, from [`CONFIG_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ConfigBinding {
    /// A key of a ConfigMap in the workload's namespace that the job reads.
    ConfigMap {
        #[serde(rename = "configMap")]
        config_map: String,
        key: String,
    },
    /// An environment variable of the training containers (all that declare it, or only
    /// `container`).
    Env {
        env: String,
        #[serde(default)]
        container: Option<String>,
    },
    /// A command-line argument `--flag=value` or `--flag value` of the training containers.
    Arg {
        arg: String,
        #[serde(default)]
        container: Option<String>,
    },
}

impl fmt::Display for ConfigBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |c: &Option<String>| c.as_ref().map(|c| format!(" of {c}")).unwrap_or_default();
        match self {
            ConfigBinding::ConfigMap { config_map, key } => {
                write!(f, "ConfigMap {config_map} key {key}")
            }
            ConfigBinding::Env { env, container } => write!(f, "env {env}{}", c(container)),
            ConfigBinding::Arg { arg, container } => write!(f, "arg {arg}{}", c(container)),
        }
    }
}

/// The config bindings declared on the workload. Only keys listed here can be patched: a
/// runbook names the key, the workload's owner says where it lives, nothing else is written.
pub fn config_bindings(
    kind: WorkloadKind,
    obj: &Value,
) -> Result<BTreeMap<String, ConfigBinding>, WorkloadError> {
    let object = object_name(kind, obj);
    let raw =
        annotation(obj, CONFIG_ANNOTATION).ok_or_else(|| WorkloadError::MissingAnnotation {
            object: object.clone(),
            annotation: CONFIG_ANNOTATION,
        })?;
    serde_json::from_str::<BTreeMap<String, ConfigBinding>>(raw).map_err(|e| {
        WorkloadError::BadAnnotation {
            object,
            annotation: CONFIG_ANNOTATION,
            reason: format!(
                "{e} (expected e.g. {{\"lr\": {{\"configMap\": \"train-config\", \"key\": \"lr\"}}}}, {{\"lr\": {{\"env\": \"LR\"}}}} or {{\"lr\": {{\"arg\": \"--lr\"}}}})"
            ),
        }
    })
}

/// The new value of a config key as text, from its old text and the change.
pub fn apply_change(old: Option<&str>, change: &ConfigChange) -> Result<String, String> {
    match &change.op {
        ChangeOp::Set(v) => match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Null | Value::Array(_) | Value::Object(_) => Err(format!(
                "`{}` can only be set to a string, number or boolean, not {v}",
                change.key
            )),
        },
        ChangeOp::Scale(f) => {
            if !(f.is_finite() && *f > 0.0) {
                return Err(format!(
                    "scale factor of `{}` must be finite and positive, not {f}",
                    change.key
                ));
            }
            let old =
                old.ok_or_else(|| format!("`{}` has no current value to scale", change.key))?;
            let x: f64 = old.trim().parse().map_err(|_| {
                format!(
                    "`{}` is `{old}`, not a number: it cannot be scaled",
                    change.key
                )
            })?;
            let y = x * f;
            if !y.is_finite() {
                return Err(format!("`{}` × {f} overflows", change.key));
            }
            Ok(format_number(y))
        }
    }
}

/// Shortest text that reads back as `x` (Rust's `Display` for f64 is round-trip exact).
fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Reads an argument's value from `args`: `--flag=value` or `--flag value`.
pub fn arg_value(args: &[Value], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    for (i, a) in args.iter().enumerate() {
        let Some(a) = a.as_str() else { continue };
        if let Some(v) = a.strip_prefix(&prefix) {
            return Some(v.to_string());
        }
        if a == flag {
            return args.get(i + 1).and_then(Value::as_str).map(str::to_string);
        }
    }
    None
}

/// Sets an argument's value in `args` (in the form it already has). False if absent.
pub fn set_arg(args: &mut [Value], flag: &str, value: &str) -> bool {
    let prefix = format!("{flag}=");
    for i in 0..args.len() {
        let Some(a) = args[i].as_str() else { continue };
        if a.starts_with(&prefix) {
            args[i] = Value::String(format!("{flag}={value}"));
            return true;
        }
        if a == flag && i + 1 < args.len() {
            args[i + 1] = Value::String(value.to_string());
            return true;
        }
    }
    false
}

/// The value of env var `name` in an env list (only literal `value`s; `valueFrom` is not
/// babysitter's to change).
pub fn env_value(env: &[Value], name: &str) -> Option<Option<String>> {
    env.iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .map(|e| e.get("value").and_then(Value::as_str).map(str::to_string))
}

/// Sets (or adds) env var `name` to `value` in an env list.
pub fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    match env
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(e) => *e = json!({ "name": name, "value": value }),
        None => env.push(json!({ "name": name, "value": value })),
    }
}

/// Writes the resume checkpoint into a pod template: the annotation on its metadata and the
/// env var in each of its containers (init containers are not training).
pub fn set_resume_in_template(template: &mut Value, step: u64) {
    let step = step.to_string();
    if let Some(t) = template.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(ann) = ann.as_object_mut() {
                ann.insert(RESUME_ANNOTATION.into(), Value::String(step.clone()));
            }
        }
    }
    if let Some(containers) = template
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            set_container_env(c, RESUME_ENV, &step);
        }
    }
}

/// Sets env var `name` in one container object.
pub fn set_container_env(container: &mut Value, name: &str, value: &str) {
    if let Some(c) = container.as_object_mut() {
        let env = c.entry("env").or_insert_with(|| json!([]));
        if !env.is_array() {
            *env = json!([]);
        }
        if let Some(list) = env.as_array_mut() {
            set_env(list, name, value);
        }
    }
}

/// Metadata fields the API server owns: a created object must not carry them.
const SERVER_METADATA: [&str; 9] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
    "finalizers",
];

/// Labels the Job controller derives from the old Job's uid; a new Job gets its own.
const CONTROLLER_UID_LABELS: [&str; 2] = ["controller-uid", "batch.kubernetes.io/controller-uid"];

/// The object as it must be sent to create it again: server-owned metadata, status and (for a
/// Job without a manual selector) the uid-bound selector and labels removed.
pub fn strip_for_recreate(kind: WorkloadKind, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_METADATA {
                meta.remove(f);
            }
        }
    }
    if kind == WorkloadKind::Job {
        let manual = out
            .pointer("/spec/manualSelector")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !manual {
            if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("selector");
            }
            for labels in ["/metadata/labels", "/spec/template/metadata/labels"] {
                if let Some(l) = out.pointer_mut(labels).and_then(Value::as_object_mut) {
                    for k in CONTROLLER_UID_LABELS {
                        l.remove(k);
                    }
                }
            }
        }
    }
    out
}

/// Truncates `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Sets `metadata.annotations[key] = value` in a JSON object under construction.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if let Some(o) = obj.as_object_mut() {
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let ann = m
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(a) = ann.as_object_mut() {
                a.insert(key.to_string(), Value::String(value.to_string()));
            }
        }
    }
}

/// Workloads the actuator deleted in order to create them again (a restart from a checkpoint
/// by recreation), by the deleted object's uid. Discovery does not end the watch of a workload
/// whose deletion is one of these: the object comes back under the same name at once, and its
/// incident (which is verifying that restart) goes on. Shared by the actuator and discovery of
/// one replica; bounded, oldest forgotten first (a deletion discovery never saw).
#[derive(Debug, Default)]
pub struct Recreations {
    uids: std::sync::Mutex<std::collections::VecDeque<String>>,
}

impl Recreations {
    /// At most this many uids are remembered.
    pub const CAPACITY: usize = 1024;

    /// The actuator is about to delete the object with `uid` to recreate it.
    pub fn mark(&self, uid: &str) {
        if let Ok(mut u) = self.uids.lock() {
            if u.len() >= Self::CAPACITY {
                u.pop_front();
            }
            u.push_back(uid.to_string());
        }
    }

    /// Was the deletion of `uid` a recreation? Answers `true` once per mark.
    pub fn take(&self, uid: &str) -> bool {
        let Ok(mut u) = self.uids.lock() else {
            return false;
        };
        match u.iter().position(|x| x == uid) {
            Some(i) => {
                u.remove(i);
                true
            }
            None => false,
        }
    }

    /// The deletion of `uid` is no recreation after all (the delete request failed).
    pub fn unmark(&self, uid: &str) {
        self.take(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Value {
        v
    }

    #[test]
    fn kinds_round_trip_from_target_types() {
        for k in WorkloadKind::ALL {
            assert_eq!(WorkloadKind::from_type(k.api_version(), k.kind()), Ok(k));
        }
        assert_eq!(
            WorkloadKind::from_type("jobset.x-k8s.io/v1alpha2", "JobSet"),
            Ok(WorkloadKind::JobSet)
        );
        let e = WorkloadKind::from_type("apps/v1", "Deployment").unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported workload apps/v1 Deployment")
        );
        let ar = WorkloadKind::PyTorchJob.api_resource();
        assert_eq!(
            (
                ar.group.as_str(),
                ar.api_version.as_str(),
                ar.plural.as_str()
            ),
            ("kubeflow.org", "kubeflow.org/v1", "pytorchjobs")
        );
    }

    #[test]
    fn queue_label_and_foreign_manager_own_suspension() {
        let kueue = obj(json!({"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpu"}}}));
        let r = suspension_owner(WorkloadKind::Job, &kueue).unwrap();
        assert!(r.contains("Kueue queue `gpu`"), "{r}");
        assert_eq!(kueue_queue(&kueue), Some("gpu"));
        assert_eq!(kueue_queue(&json!({"metadata": {"labels": {}}})), None);

        let multi = json!({"spec": {"managedBy": "kueue.x-k8s.io/multikueue"}});
        let r = suspension_owner(WorkloadKind::JobSet, &multi).unwrap();
        assert!(
            r.contains("spec.managedBy is \"kueue.x-k8s.io/multikueue\""),
            "{r}"
        );

        let pt = json!({"spec": {"runPolicy": {"managedBy": "kueue.x-k8s.io/multikueue"}}});
        assert!(suspension_owner(WorkloadKind::PyTorchJob, &pt).is_some());
        // managedBy at the wrong place for a PyTorchJob is not its manager.
        assert!(suspension_owner(WorkloadKind::PyTorchJob, &multi).is_none());

        for k in WorkloadKind::ALL {
            let own = patch_at(k.managed_by_path(), json!(k.default_manager()));
            assert_eq!(suspension_owner(k, &own), None, "{k}");
            assert_eq!(suspension_owner(k, &json!({"spec": {}})), None, "{k}");
        }
    }

    #[test]
    fn suspend_paths_and_patches() {
        assert_eq!(
            patch_at(WorkloadKind::PyTorchJob.suspend_path(), json!(true)),
            json!({"spec": {"runPolicy": {"suspend": true}}})
        );
        assert_eq!(
            patch_at(WorkloadKind::TrainJob.suspend_path(), json!(false)),
            json!({"spec": {"suspend": false}})
        );
        assert!(is_suspended(
            WorkloadKind::PyTorchJob,
            &json!({"spec": {"runPolicy": {"suspend": true}}})
        ));
        assert!(!is_suspended(WorkloadKind::Job, &json!({"spec": {}})));
        let mut a = json!({"metadata": {"annotations": {"x": "1"}}, "spec": {"a": 1}});
        merge(
            &mut a,
            json!({"metadata": {"annotations": {"y": "2"}}, "spec": {"a": 2}}),
        );
        assert_eq!(
            a,
            json!({"metadata": {"annotations": {"x": "1", "y": "2"}}, "spec": {"a": 2}})
        );
    }

    #[test]
    fn pod_templates_per_kind() {
        let js = json!({"spec": {"replicatedJobs": [
            {"name": "driver", "template": {"spec": {"template": {"spec": {}}}}},
            {"name": "workers", "template": {"spec": {"template": {"spec": {}}}}}
        ]}});
        assert_eq!(
            pod_template_pointers(WorkloadKind::JobSet, &js),
            vec![
                "/spec/replicatedJobs/0/template/spec/template",
                "/spec/replicatedJobs/1/template/spec/template"
            ]
        );
        let pt = json!({"spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {}}}, "Worker": {"template": {"spec": {}}}}}});
        assert_eq!(
            pod_template_pointers(WorkloadKind::PyTorchJob, &pt),
            vec![
                "/spec/pytorchReplicaSpecs/Master/template",
                "/spec/pytorchReplicaSpecs/Worker/template"
            ]
        );
        assert_eq!(
            pod_template_pointers(WorkloadKind::Job, &json!({"spec": {"template": {}}})),
            vec!["/spec/template"]
        );
        assert!(pod_template_pointers(WorkloadKind::TrainJob, &json!({"spec": {}})).is_empty());
    }

    #[test]
    fn checkpoints_parse_sort_and_fail_clearly() {
        let o = json!({"metadata": {"namespace": "ml", "name": "llm", "annotations": {
            CHECKPOINTS_ANNOTATION: r#"[{"step": 2000, "t": 1764002000.5}, {"step": 1000, "t": 1764001000}]"#
        }}});
        assert_eq!(
            checkpoints(WorkloadKind::Job, &o).unwrap(),
            vec![
                Checkpoint {
                    step: 1000,
                    t: 1764001000.0
                },
                Checkpoint {
                    step: 2000,
                    t: 1764002000.5
                }
            ]
        );
        let none = json!({"metadata": {"namespace": "ml", "name": "llm"}});
        assert_eq!(
            checkpoints(WorkloadKind::JobSet, &none)
                .unwrap_err()
                .to_string(),
            "JobSet/ml/llm: annotation `babysitter.dev/checkpoints` is missing"
        );
        let bad = json!({"metadata": {"namespace": "ml", "name": "llm", "annotations": {
            CHECKPOINTS_ANNOTATION: r#"[{"step": -1, "t": 0}]"#}}});
        let e = checkpoints(WorkloadKind::Job, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Job/ml/llm: annotation `babysitter.dev/checkpoints` is malformed"),
            "{e}"
        );
        let neg_t = json!({"metadata": {"annotations": {
            CHECKPOINTS_ANNOTATION: r#"[{"step": 1, "t": -5}]"#}}});
        let e = checkpoints(WorkloadKind::Job, &neg_t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 0: `t` must be Unix seconds"), "{e}");
    }

    #[test]
    fn config_bindings_parse_every_form() {
        let o = json!({"metadata": {"annotations": {CONFIG_ANNOTATION:
            r#"{"lr": {"configMap": "cfg", "key": "learning_rate"},
                "warmup": {"env": "WARMUP", "container": "trainer"},
                "batch": {"arg": "--batch-size"}}"#}}});
        let b = config_bindings(WorkloadKind::PyTorchJob, &o).unwrap();
        assert_eq!(
            b["lr"],
            ConfigBinding::ConfigMap {
                config_map: "cfg".into(),
                key: "learning_rate".into()
            }
        );
        assert_eq!(
            b["warmup"],
            ConfigBinding::Env {
                env: "WARMUP".into(),
                container: Some("trainer".into())
            }
        );
        assert_eq!(
            b["batch"],
            ConfigBinding::Arg {
                arg: "--batch-size".into(),
                container: None
            }
        );
        // Two places at once is not a binding.
        let two = json!({"metadata": {"annotations": {CONFIG_ANNOTATION:
            r#"{"lr": {"env": "LR", "configMap": "cfg"}}"#}}});
        assert!(config_bindings(WorkloadKind::PyTorchJob, &two).is_err());
        let bad = json!({"metadata": {"annotations": {CONFIG_ANNOTATION: r#"{"lr": {"path": "/spec"}}"#}}});
        let e = config_bindings(WorkloadKind::Job, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`babysitter.dev/config` is malformed"), "{e}");
    }

    #[test]
    fn changes_apply_to_text_values() {
        let scale = |x: f64| ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Scale(x),
        };
        assert_eq!(
            apply_change(Some("0.0003"), &scale(0.5)).unwrap(),
            "0.00015"
        );
        assert_eq!(apply_change(Some("64"), &scale(2.0)).unwrap(), "128");
        assert!(
            apply_change(Some("fast"), &scale(0.5))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            apply_change(None, &scale(0.5))
                .unwrap_err()
                .contains("no current value")
        );
        assert!(apply_change(Some("1"), &scale(-1.0)).is_err());
        let set = |v: Value| ConfigChange {
            key: "opt".into(),
            op: ChangeOp::Set(v),
        };
        assert_eq!(apply_change(None, &set(json!("adamw"))).unwrap(), "adamw");
        assert_eq!(apply_change(None, &set(json!(3))).unwrap(), "3");
        assert_eq!(apply_change(None, &set(json!(true))).unwrap(), "true");
        assert!(apply_change(None, &set(json!({"a": 1}))).is_err());
    }

    #[test]
    fn args_and_env_edit_in_place() {
        let mut args = vec![json!("--lr=0.1"), json!("--batch"), json!("32")];
        assert_eq!(arg_value(&args, "--lr").as_deref(), Some("0.1"));
        assert_eq!(arg_value(&args, "--batch").as_deref(), Some("32"));
        assert_eq!(arg_value(&args, "--epochs"), None);
        assert!(set_arg(&mut args, "--lr", "0.05"));
        assert!(set_arg(&mut args, "--batch", "16"));
        assert!(!set_arg(&mut args, "--epochs", "1"));
        assert_eq!(
            args,
            vec![json!("--lr=0.05"), json!("--batch"), json!("16")]
        );

        let mut env = vec![
            json!({"name": "LR", "value": "0.1"}),
            json!({"name": "X", "valueFrom": {}}),
        ];
        assert_eq!(env_value(&env, "LR"), Some(Some("0.1".into())));
        assert_eq!(env_value(&env, "X"), Some(None));
        assert_eq!(env_value(&env, "Y"), None);
        set_env(&mut env, "LR", "0.05");
        set_env(&mut env, "Y", "1");
        assert_eq!(env[0], json!({"name": "LR", "value": "0.05"}));
        assert_eq!(env[2], json!({"name": "Y", "value": "1"}));
    }

    #[test]
    fn resume_goes_into_template_annotation_and_every_container() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "5"}]},
            {"name": "b"}
        ], "initContainers": [{"name": "init"}]}});
        set_resume_in_template(&mut t, 1200);
        assert_eq!(
            t,
            json!({"metadata": {"annotations": {RESUME_ANNOTATION: "1200"}}, "spec": {"containers": [
                {"name": "a", "env": [{"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "1200"}]},
                {"name": "b", "env": [{"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "1200"}]}
            ], "initContainers": [{"name": "init"}]}})
        );
    }

    #[test]
    fn recreate_strips_server_fields_and_uid_selectors() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "ml", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 2, "managedFields": [],
                "labels": {"controller-uid": "u1", "batch.kubernetes.io/controller-uid": "u1", "team": "a"}},
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "template": {"metadata": {"labels": {"controller-uid": "u1",
                    "batch.kubernetes.io/controller-uid": "u1", "batch.kubernetes.io/job-name": "j"}},
                "spec": {"containers": []}}},
            "status": {"active": 1}
        });
        assert_eq!(
            strip_for_recreate(WorkloadKind::Job, &job),
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "j", "namespace": "ml", "labels": {"team": "a"}},
                "spec": {"template": {"metadata": {"labels": {"batch.kubernetes.io/job-name": "j"}},
                    "spec": {"containers": []}}}
            })
        );
        let mut manual = job.clone();
        merge(&mut manual, json!({"spec": {"manualSelector": true}}));
        let s = strip_for_recreate(WorkloadKind::Job, &manual);
        assert!(s.pointer("/spec/selector").is_some());
        assert!(s.pointer("/status").is_none());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }

    #[test]
    fn recreations_are_taken_once_and_bounded() {
        let r = Recreations::default();
        r.mark("u1");
        assert!(!r.take("u2"));
        assert!(r.take("u1"));
        assert!(!r.take("u1"), "once");
        for i in 0..=Recreations::CAPACITY {
            r.mark(&format!("x{i}"));
        }
        assert!(!r.take("x0"), "the oldest is forgotten");
        assert!(r.take(&format!("x{}", Recreations::CAPACITY)));
        r.mark("u3");
        r.unmark("u3");
        assert!(!r.take("u3"));
    }
}
