//! What the agent's tools read: metrics ([`QueryBackend`]: PromQL through the configured
//! Prometheus source, or babysitter's own chart window when there is none) and workloads
//! ([`WorkloadInspector`]: status, pods, events, logs; read-only by construction — the trait
//! has no method that changes anything).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::act::Target;
use crate::charts::{ChartKey, ChartSet};
use crate::sim::SimCluster;

/// One series of a query result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuerySeries {
    pub labels: BTreeMap<String, String>,
    /// `(t, v)`; a non-finite `v` is kept (NaN is an anomaly, not missing data).
    pub points: Vec<(f64, f64)>,
}

/// A query, as run and as cited in evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuerySpec {
    Instant {
        query: String,
        time: f64,
    },
    Range {
        query: String,
        start: f64,
        end: f64,
        step: f64,
    },
}

impl QuerySpec {
    pub fn expr(&self) -> &str {
        match self {
            QuerySpec::Instant { query, .. } | QuerySpec::Range { query, .. } => query,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryFailed(pub String);

/// Read-only metric queries.
#[async_trait]
pub trait QueryBackend: Send + Sync {
    /// What the model is told it may write (`PromQL`, or chart names).
    fn language(&self) -> &'static str;
    async fn run(&self, spec: &QuerySpec) -> Result<Vec<QuerySeries>, QueryFailed>;
}

/// PromQL through the Prometheus source's HTTP client (same URL, auth, TLS and headers).
pub struct PrometheusQuery {
    client: prometheus_http_query::Client,
}

impl PrometheusQuery {
    pub fn new(
        cfg: &crate::sources::prometheus::settings::PrometheusConfig,
    ) -> Result<PrometheusQuery, crate::sources::prometheus::http::SetupError> {
        Ok(PrometheusQuery {
            client: crate::sources::prometheus::http::build_client(cfg)?,
        })
    }
}

fn labels_of(m: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[async_trait]
impl QueryBackend for PrometheusQuery {
    fn language(&self) -> &'static str {
        "PromQL"
    }

    async fn run(&self, spec: &QuerySpec) -> Result<Vec<QuerySeries>, QueryFailed> {
        use prometheus_http_query::response::Data;
        let res = match spec {
            QuerySpec::Instant { query, time } => {
                self.client
                    .query(query.as_str())
                    .at(*time as i64)
                    .get()
                    .await
            }
            QuerySpec::Range {
                query,
                start,
                end,
                step,
            } => {
                self.client
                    .query_range(query.as_str(), *start as i64, *end as i64, *step)
                    .get()
                    .await
            }
        }
        .map_err(|e| QueryFailed(e.to_string()))?;
        let (data, _) = res.into_inner();
        Ok(match data {
            Data::Vector(v) => v
                .iter()
                .map(|s| QuerySeries {
                    labels: labels_of(s.metric()),
                    points: vec![(s.sample().timestamp(), s.sample().value())],
                })
                .collect(),
            Data::Matrix(m) => m
                .iter()
                .map(|s| QuerySeries {
                    labels: labels_of(s.metric()),
                    points: s
                        .samples()
                        .iter()
                        .map(|p| (p.timestamp(), p.value()))
                        .collect(),
                })
                .collect(),
            Data::Scalar(s) => vec![QuerySeries {
                labels: BTreeMap::new(),
                points: vec![(s.timestamp(), s.value())],
            }],
        })
    }
}

/// Without Prometheus: a "query" is a chart name (`loss`, `step_time{rank=3}`) read from the
/// run's charts as babysitter holds them.
pub struct ChartQuery {
    charts: ChartSet,
}

impl ChartQuery {
    pub fn new(charts: ChartSet) -> ChartQuery {
        ChartQuery { charts }
    }
}

#[async_trait]
impl QueryBackend for ChartQuery {
    fn language(&self) -> &'static str {
        "a chart name of this run (loss, grad_norm, step, step_time{rank=3}, …); not PromQL"
    }

    async fn run(&self, spec: &QuerySpec) -> Result<Vec<QuerySeries>, QueryFailed> {
        let key: ChartKey = spec.expr().trim().parse().map_err(|e| {
            QueryFailed(format!(
                "`{}` is not a chart name ({e}); charts: {}",
                spec.expr(),
                self.charts
                    .iter()
                    .map(|(k, _)| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let Some(series) = self.charts.get_key(&key) else {
            return Ok(Vec::new());
        };
        let labels: BTreeMap<String, String> = [("chart".to_string(), key.to_string())].into();
        let points = match spec {
            QuerySpec::Instant { time, .. } => series
                .until(*time)
                .last()
                .map(|s| vec![(s.t, s.v)])
                .unwrap_or_default(),
            QuerySpec::Range {
                start, end, step, ..
            } => {
                let mut out = Vec::new();
                let mut next = f64::NEG_INFINITY;
                for s in series.range(*start, *end) {
                    if s.t >= next {
                        out.push((s.t, s.v));
                        next = s.t + step.max(0.0);
                    }
                }
                out
            }
        };
        Ok(vec![QuerySeries { labels, points }])
    }
}

/// A pod of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub ready: bool,
}

/// A cluster event about a workload or its pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    pub t: f64,
    #[serde(default)]
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InspectFailed(pub String);

/// Read-only views of a workload. The Kubernetes implementation belongs to the Kubernetes
/// actuator's module; [`SimInspector`] and [`ClusterState`] serve the demo, tests and evals.
#[async_trait]
pub trait WorkloadInspector: Send + Sync {
    async fn status(&self, target: &Target) -> Result<serde_json::Value, InspectFailed>;
    async fn pods(&self, target: &Target) -> Result<Vec<PodInfo>, InspectFailed>;
    /// Newest last, at most `limit`.
    async fn events(&self, target: &Target, limit: usize) -> Result<Vec<EventInfo>, InspectFailed>;
    /// The last `tail` lines of a pod's log (the first pod when `pod` is `None`).
    async fn logs(
        &self,
        target: &Target,
        pod: Option<&str>,
        tail: usize,
    ) -> Result<Vec<String>, InspectFailed>;
}

/// No cluster access configured: every workload tool says so.
pub struct NoInspector;

#[async_trait]
impl WorkloadInspector for NoInspector {
    async fn status(&self, _: &Target) -> Result<serde_json::Value, InspectFailed> {
        Err(InspectFailed("no cluster access is configured".into()))
    }
    async fn pods(&self, _: &Target) -> Result<Vec<PodInfo>, InspectFailed> {
        Err(InspectFailed("no cluster access is configured".into()))
    }
    async fn events(&self, _: &Target, _: usize) -> Result<Vec<EventInfo>, InspectFailed> {
        Err(InspectFailed("no cluster access is configured".into()))
    }
    async fn logs(
        &self,
        _: &Target,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<String>, InspectFailed> {
        Err(InspectFailed("no cluster access is configured".into()))
    }
}

/// A fixed picture of one workload (eval cases and tests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterState {
    pub status: serde_json::Value,
    pub pods: Vec<PodInfo>,
    pub events: Vec<EventInfo>,
    /// Log lines per pod name.
    pub logs: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl WorkloadInspector for ClusterState {
    async fn status(&self, _: &Target) -> Result<serde_json::Value, InspectFailed> {
        Ok(self.status.clone())
    }
    async fn pods(&self, _: &Target) -> Result<Vec<PodInfo>, InspectFailed> {
        Ok(self.pods.clone())
    }
    async fn events(&self, _: &Target, limit: usize) -> Result<Vec<EventInfo>, InspectFailed> {
        let skip = self.events.len().saturating_sub(limit);
        Ok(self.events[skip..].to_vec())
    }
    async fn logs(
        &self,
        _: &Target,
        pod: Option<&str>,
        tail: usize,
    ) -> Result<Vec<String>, InspectFailed> {
        let pod = match pod {
            Some(p) => p.to_string(),
            None => self
                .pods
                .first()
                .map(|p| p.name.clone())
                .or_else(|| self.logs.keys().next().cloned())
                .ok_or_else(|| InspectFailed("the workload has no pods".into()))?,
        };
        let lines = self
            .logs
            .get(&pod)
            .ok_or_else(|| InspectFailed(format!("no pod `{pod}`")))?;
        let skip = lines.len().saturating_sub(tail);
        Ok(lines[skip..].to_vec())
    }
}

/// The simulator's runs seen as workloads: one worker pod per run on the run's node; the
/// simulator keeps no container logs, so `logs` returns its event log as lines.
pub struct SimInspector {
    sim: Arc<SimCluster>,
}

impl SimInspector {
    pub fn new(sim: Arc<SimCluster>) -> SimInspector {
        SimInspector { sim }
    }

    fn run_status(&self, target: &Target) -> Result<crate::sim::SimRunStatus, InspectFailed> {
        let Target::Simulated { run } = target else {
            return Err(InspectFailed(format!("{target} is not a simulated run")));
        };
        self.sim
            .status(run)
            .ok_or_else(|| InspectFailed(format!("no simulated run `{run}`")))
    }
}

#[async_trait]
impl WorkloadInspector for SimInspector {
    async fn status(&self, target: &Target) -> Result<serde_json::Value, InspectFailed> {
        let s = self.run_status(target)?;
        serde_json::to_value(&s).map_err(|e| InspectFailed(e.to_string()))
    }
    async fn pods(&self, target: &Target) -> Result<Vec<PodInfo>, InspectFailed> {
        let s = self.run_status(target)?;
        Ok(vec![PodInfo {
            name: format!("{}-worker-0", s.run),
            phase: s.phase.as_str().to_string(),
            node: Some(format!("node-{}", s.node)),
            restarts: s.restarts,
            ready: s.phase == crate::sim::SimPhase::Running,
        }])
    }
    async fn events(&self, target: &Target, limit: usize) -> Result<Vec<EventInfo>, InspectFailed> {
        let s = self.run_status(target)?;
        let skip = s.recent_events.len().saturating_sub(limit);
        Ok(s.recent_events[skip..]
            .iter()
            .map(|e| EventInfo {
                t: e.t,
                reason: String::new(),
                message: e.message.clone(),
            })
            .collect())
    }
    async fn logs(
        &self,
        target: &Target,
        _pod: Option<&str>,
        tail: usize,
    ) -> Result<Vec<String>, InspectFailed> {
        let s = self.run_status(target)?;
        let skip = s.recent_events.len().saturating_sub(tail);
        Ok(s.recent_events[skip..]
            .iter()
            .map(|e| format!("[t={:.0}] {}", e.t, e.message))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{Role, Sample, Series};

    #[tokio::test]
    async fn chart_query_reads_instant_and_thinned_range() {
        let mut charts = ChartSet::new();
        charts.insert(
            ChartKey::new(Role::Loss),
            Series::from_samples((0..10).map(|i| Sample::new(i as f64 * 10.0, i as f64))),
        );
        let q = ChartQuery::new(charts);
        let r = q
            .run(&QuerySpec::Instant {
                query: "loss".into(),
                time: 45.0,
            })
            .await
            .unwrap();
        assert_eq!(r[0].points, vec![(40.0, 4.0)]);
        let r = q
            .run(&QuerySpec::Range {
                query: "loss".into(),
                start: 0.0,
                end: 90.0,
                step: 30.0,
            })
            .await
            .unwrap();
        assert_eq!(
            r[0].points,
            vec![(0.0, 0.0), (30.0, 3.0), (60.0, 6.0), (90.0, 9.0)]
        );
        assert!(
            q.run(&QuerySpec::Instant {
                query: "rate(x[5m])".into(),
                time: 1.0
            })
            .await
            .is_err()
        );
        assert!(
            q.run(&QuerySpec::Instant {
                query: "grad_norm".into(),
                time: 1.0
            })
            .await
            .unwrap()
            .is_empty()
        );
    }

    #[tokio::test]
    async fn cluster_state_tails_logs_of_the_first_pod() {
        let c: ClusterState = serde_json::from_value(serde_json::json!({
            "pods": [{"name": "w-0", "phase": "Running"}],
            "logs": {"w-0": ["a", "b", "c"]},
        }))
        .unwrap();
        let t = Target::Simulated { run: "r".into() };
        assert_eq!(c.logs(&t, None, 2).await.unwrap(), vec!["b", "c"]);
        assert!(c.logs(&t, Some("w-9"), 2).await.is_err());
    }
}
