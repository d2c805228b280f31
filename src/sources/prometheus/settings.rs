//! Settings of the Prometheus source: the `[sources.prometheus]` section of the config (where
//! Prometheus is, how to authenticate, how hard to query it) and the per-watch profile choice.
//!
//! Every field is documented here because this is what users write. Secrets never appear in
//! `Debug` output nor in serialized config.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration;

/// `[sources.prometheus]`: a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir,
/// VictoriaMetrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090` or `https://mimir/prometheus` (no `/api/v1`).
    pub url: String,
    /// The series label that names a training run (its value is the watch's `run`).
    #[serde(default = "default_run_label")]
    pub run_label: String,
    /// kube-state-metrics' name of the *pod* label that carries the run (pod label `run`
    /// becomes `label_run`; it must be in ksm's `--metric-labels-allowlist`).
    #[serde(default = "default_pod_run_label")]
    pub pod_run_label: String,
    /// Resolution of the charts (range-query step); whole seconds.
    #[serde(default = "default_step", with = "duration")]
    pub step: Duration,
    /// How much history the first poll of a watch reads.
    #[serde(default = "default_lookback", with = "duration")]
    pub lookback: Duration,
    /// Re-read this much before the newest sample seen, for samples that arrive late.
    #[serde(default = "default_overlap", with = "duration")]
    pub overlap: Duration,
    /// A longer window (the first poll) is read in slices of this length, so one response
    /// never holds the whole start-up history of every run.
    #[serde(default = "default_max_query_window", with = "duration")]
    pub max_query_window: Duration,
    /// HTTP timeout of one request (also sent as PromQL's own evaluation timeout).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Retries of a failed request (transport errors, 5xx, Prometheus timeout/unavailable).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubles at each retry, capped at 8× this value.
    #[serde(default = "default_retry_backoff", with = "duration")]
    pub retry_backoff: Duration,
    /// At most this many queries in flight at once (measured: 2 halves the poll time at
    /// 10,000 runs on a 2-core Prometheus; more only adds load).
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// At most this many runs in one query's `run=~"…"` matcher.
    #[serde(default = "default_max_runs_per_query")]
    pub max_runs_per_query: usize,
    /// Extra headers on every request, e.g. `X-Scope-OrgID = "team-ml"` for Mimir.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `Authorization: Bearer …`; or read from `bearer_token_file` at start-up.
    #[serde(default, skip_serializing)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Profile(s) of watches that name none.
    #[serde(default = "default_profile")]
    pub default_profile: ProfileSel,
}

impl PrometheusConfig {
    /// A config with every default, for `url`.
    pub fn new(url: impl Into<String>) -> PrometheusConfig {
        PrometheusConfig {
            url: url.into(),
            run_label: default_run_label(),
            pod_run_label: default_pod_run_label(),
            step: default_step(),
            lookback: default_lookback(),
            overlap: default_overlap(),
            max_query_window: default_max_query_window(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            max_concurrent_queries: default_max_concurrent_queries(),
            max_runs_per_query: default_max_runs_per_query(),
            headers: BTreeMap::new(),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            tls: TlsConfig::default(),
            default_profile: default_profile(),
        }
    }
}

fn default_run_label() -> String {
    "run".into()
}
fn default_pod_run_label() -> String {
    "label_run".into()
}
fn default_step() -> Duration {
    Duration::from_secs(15)
}
fn default_lookback() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_overlap() -> Duration {
    Duration::from_secs(60)
}
fn default_max_query_window() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(250)
}
fn default_max_concurrent_queries() -> usize {
    2
}
fn default_max_runs_per_query() -> usize {
    1000
}
fn default_profile() -> ProfileSel {
    ProfileSel::One("generic".into())
}

/// A secret string: shown as `***` in `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    /// Read the password from this file at start-up (trailing newline trimmed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: it disables server authentication.
    pub insecure_skip_verify: bool,
}

/// One profile name or several (`"generic"` or `["generic", "dcgm", "kube_state_metrics"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProfileSel {
    One(String),
    Many(Vec<String>),
}

impl ProfileSel {
    pub fn names(&self) -> Vec<&str> {
        match self {
            ProfileSel::One(s) => vec![s.as_str()],
            ProfileSel::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A chart's PromQL: a string, or `{ expr = "…", labels = ["gpu"] }`. See
/// [`super::profile`] for the placeholders. An empty `expr` turns the chart off.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "RawTemplate", into = "RawTemplate")]
pub struct ChartTemplate {
    pub expr: String,
    /// Result labels that become chart labels (`gpu` → `gpu_util{gpu=3}`); all others but the
    /// run label are dropped.
    pub labels: Vec<String>,
}

impl ChartTemplate {
    pub fn new(expr: impl Into<String>, labels: &[&str]) -> ChartTemplate {
        ChartTemplate {
            expr: expr.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.expr.trim().is_empty()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawTemplate {
    Expr(String),
    Full {
        expr: String,
        #[serde(default)]
        labels: Vec<String>,
    },
}

impl From<RawTemplate> for ChartTemplate {
    fn from(r: RawTemplate) -> Self {
        match r {
            RawTemplate::Expr(expr) => ChartTemplate {
                expr,
                labels: Vec::new(),
            },
            RawTemplate::Full { expr, labels } => ChartTemplate { expr, labels },
        }
    }
}

impl From<ChartTemplate> for RawTemplate {
    fn from(t: ChartTemplate) -> Self {
        if t.labels.is_empty() {
            RawTemplate::Expr(t.expr)
        } else {
            RawTemplate::Full {
                expr: t.expr,
                labels: t.labels,
            }
        }
    }
}
