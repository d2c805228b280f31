//! The Kubernetes [`WorkloadInspector`]: read-only views of a babysat workload for the
//! investigating agent — its status, its pods, recent Events and the last lines of a pod's log.
//!
//! It only reads (`get` on the workload, `list` on pods and Events, `get` on `pods/log`: all in
//! deploy/rbac/actuator-rules.yaml) and it shows no spec: a pod template's env may hold secrets,
//! so `status` returns the workload's status, whether it is suspended and its
//! `babysitter.dev/*` annotations, nothing else.

use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use kube::{Client, Error as KubeError};
use serde_json::{Map, Value, json};

use super::workload::{self, WorkloadKind};
use crate::act::Target;
use crate::agent::{EventInfo, InspectFailed, PodInfo, WorkloadInspector};

/// Bounds of what one call reads.
#[derive(Debug, Clone)]
pub struct InspectorLimits {
    /// Pods listed per workload.
    pub max_pods: u32,
    /// Bytes of log read per call.
    pub log_bytes: i64,
    /// Lines of log asked for, at most.
    pub max_log_lines: usize,
}

impl Default for InspectorLimits {
    fn default() -> Self {
        InspectorLimits {
            max_pods: 16,
            log_bytes: 64 * 1024,
            max_log_lines: 500,
        }
    }
}

/// Reads Kubernetes workloads ([`Target::Kubernetes`]) through the API server.
#[derive(Clone)]
pub struct KubeInspector {
    client: Client,
    limits: InspectorLimits,
}

impl std::fmt::Debug for KubeInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeInspector")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The workload a call is about.
struct Subject {
    kind: WorkloadKind,
    namespace: String,
    name: String,
}

impl Subject {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

impl KubeInspector {
    pub fn new(client: Client, limits: InspectorLimits) -> Self {
        KubeInspector { client, limits }
    }

    fn subject(target: &Target) -> Result<Subject, InspectFailed> {
        let Target::Kubernetes {
            api_version,
            workload_kind,
            namespace,
            name,
        } = target
        else {
            return Err(InspectFailed(format!(
                "{target} is not a Kubernetes workload"
            )));
        };
        let kind = WorkloadKind::from_type(api_version, workload_kind)
            .map_err(|e| InspectFailed(e.to_string()))?;
        Ok(Subject {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        })
    }

    async fn list_pods(&self, s: &Subject) -> Result<Vec<Pod>, InspectFailed> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace);
        let lp = ListParams::default()
            .labels(&s.kind.pod_selector(&s.name))
            .limit(self.limits.max_pods);
        let mut items = pods
            .list(&lp)
            .await
            .map_err(|e| failed(&format!("listing the pods of {}", s.label()), e))?
            .items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(items)
    }

    async fn events_of(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<EventInfo>, InspectFailed> {
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), ns);
        let fields = format!("involvedObject.kind={kind},involvedObject.name={name}");
        let list = api
            .list(&ListParams::default().fields(&fields))
            .await
            .map_err(|e| failed(&format!("listing the events of {kind}/{ns}/{name}"), e))?;
        Ok(list.items.iter().map(event_info).collect())
    }
}

#[async_trait::async_trait]
impl WorkloadInspector for KubeInspector {
    async fn status(&self, target: &Target) -> Result<Value, InspectFailed> {
        let s = Self::subject(target)?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &s.namespace, &s.kind.api_resource());
        let obj = match api.get(&s.name).await {
            Ok(o) => serde_json::to_value(&o).map_err(|e| InspectFailed(e.to_string()))?,
            Err(KubeError::Api(e)) if e.is_not_found() => {
                return Err(InspectFailed(format!("{} not found", s.label())));
            }
            Err(e) => return Err(failed(&format!("reading {}", s.label()), e)),
        };
        Ok(summary(s.kind, &obj))
    }

    async fn pods(&self, target: &Target) -> Result<Vec<PodInfo>, InspectFailed> {
        let s = Self::subject(target)?;
        Ok(self.list_pods(&s).await?.iter().map(pod_info).collect())
    }

    async fn events(&self, target: &Target, limit: usize) -> Result<Vec<EventInfo>, InspectFailed> {
        let s = Self::subject(target)?;
        let mut out = self.events_of(&s.namespace, s.kind.kind(), &s.name).await?;
        for p in self.list_pods(&s).await? {
            if let Some(name) = &p.metadata.name {
                out.extend(self.events_of(&s.namespace, "Pod", name).await?);
            }
        }
        out.sort_by(|a, b| a.t.total_cmp(&b.t));
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    async fn logs(
        &self,
        target: &Target,
        pod: Option<&str>,
        tail: usize,
    ) -> Result<Vec<String>, InspectFailed> {
        let s = Self::subject(target)?;
        let pods = self.list_pods(&s).await?;
        let chosen = match pod {
            Some(want) => pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(want))
                .ok_or_else(|| {
                    InspectFailed(format!(
                        "pod `{want}` is not one of {}'s pods ({})",
                        s.label(),
                        names(&pods)
                    ))
                })?,
            None => pods
                .first()
                .ok_or_else(|| InspectFailed(format!("{} has no pods", s.label())))?,
        };
        let name = chosen.metadata.name.clone().unwrap_or_default();
        let container = chosen
            .spec
            .as_ref()
            .and_then(|sp| sp.containers.first())
            .map(|c| c.name.clone());
        let tail = tail.min(self.limits.max_log_lines);
        let lp = LogParams {
            container,
            tail_lines: Some(tail as i64),
            limit_bytes: Some(self.limits.log_bytes),
            ..LogParams::default()
        };
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace);
        let text = pods_api
            .logs(&name, &lp)
            .await
            .map_err(|e| failed(&format!("reading the log of pod {name}"), e))?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let skip = lines.len().saturating_sub(tail);
        Ok(lines[skip..].to_vec())
    }
}

/// What `status` shows of a workload: no spec (env may hold secrets).
fn summary(kind: WorkloadKind, obj: &Value) -> Value {
    let ours: Map<String, Value> = workload::get_path(obj, &["metadata", "annotations"])
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.starts_with("babysitter.dev/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "kind": kind.kind(),
        "api_version": kind.api_version(),
        "namespace": workload::get_path(obj, &["metadata", "namespace"]),
        "name": workload::get_path(obj, &["metadata", "name"]),
        "uid": workload::get_path(obj, &["metadata", "uid"]),
        "suspended": workload::is_suspended(kind, obj),
        "annotations": ours,
        "status": obj.get("status").cloned().unwrap_or(Value::Null),
    })
}

fn pod_info(p: &Pod) -> PodInfo {
    let statuses = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    PodInfo {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_string()),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        restarts: statuses
            .iter()
            .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
            .sum(),
        ready: !statuses.is_empty() && statuses.iter().all(|c| c.ready),
    }
}

fn event_info(e: &CoreEvent) -> EventInfo {
    let when = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()));
    EventInfo {
        t: when.as_deref().map(seconds).unwrap_or(0.0),
        reason: e.reason.clone().unwrap_or_default(),
        message: workload::truncate(e.message.as_deref().unwrap_or_default(), 1024),
    }
}

/// RFC 3339 → seconds since the epoch (0 when unreadable: sorted first, shown as is).
fn seconds(s: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros() as f64 / 1e6)
        .unwrap_or(0.0)
}

fn names(pods: &[Pod]) -> String {
    let n: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    if n.is_empty() {
        "none".to_string()
    } else {
        n.join(", ")
    }
}

fn failed(what: &str, e: KubeError) -> InspectFailed {
    match e {
        KubeError::Api(s) => {
            InspectFailed(format!("{what}: {} {}: {}", s.code, s.reason, s.message))
        }
        other => InspectFailed(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shows_no_spec() {
        let obj = json!({
            "metadata": {"name": "llm", "namespace": "ml", "uid": "u-1", "annotations": {
                "babysitter.dev/watch": "true", "team.example/secret-ish": "x"}},
            "spec": {"suspend": true, "template": {"spec": {"containers": [
                {"name": "c", "env": [{"name": "TOKEN", "value": "hunter2"}]}]}}},
            "status": {"active": 2},
        });
        let s = summary(WorkloadKind::Job, &obj);
        assert_eq!(s["suspended"], json!(true));
        assert_eq!(s["status"], json!({"active": 2}));
        assert_eq!(s["annotations"], json!({"babysitter.dev/watch": "true"}));
        assert_eq!(s["kind"], json!("Job"));
        assert!(!s.to_string().contains("hunter2"));
    }

    #[test]
    fn pods_and_events_are_summarised() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "llm-0"},
            "spec": {"nodeName": "gpu-7", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": true, "restartCount": 3, "image": "i", "imageID": ""},
                {"name": "d", "ready": false, "restartCount": 1, "image": "i", "imageID": ""}]},
        }))
        .unwrap();
        assert_eq!(
            pod_info(&p),
            PodInfo {
                name: "llm-0".into(),
                phase: "Running".into(),
                node: Some("gpu-7".into()),
                restarts: 4,
                ready: false,
            }
        );
        let e: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "llm-0"},
            "reason": "BackOff", "message": "restarting", "lastTimestamp": "2025-11-24T17:01:40Z",
        }))
        .unwrap();
        let info = event_info(&e);
        assert_eq!(info.t, 1_764_003_700.0);
        assert_eq!(info.reason, "BackOff");
        assert_eq!(seconds("not a time"), 0.0);
    }

    #[tokio::test]
    async fn other_targets_are_refused_without_a_request() {
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(cfg).expect("client");
        let i = KubeInspector::new(client, InspectorLimits::default());
        let err = i
            .pods(&Target::Simulated { run: "r".into() })
            .await
            .unwrap_err();
        assert!(err.0.contains("not a Kubernetes workload"), "{err}");
        let err = i
            .status(&Target::Kubernetes {
                api_version: "apps/v1".into(),
                workload_kind: "Deployment".into(),
                namespace: "ml".into(),
                name: "x".into(),
            })
            .await
            .unwrap_err();
        assert!(err.0.contains("Deployment"), "{err}");
    }
}
