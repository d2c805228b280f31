//! Config: typed settings with defaults, read from TOML or YAML plus `BABYSITTER_*` environment
//! overrides. `demo` needs no file at all.
//!
//! Environment overrides use `__` between levels: `BABYSITTER_POLICY__READ_ONLY=true`,
//! `BABYSITTER_SERVER__LISTEN=0.0.0.0:8080`.
//!
//! Reading never stops at the first problem: [`Config::check_file`] (`babysitter check`) and
//! [`Config::load`] (every start-up) are one collection that reports each bad field with its
//! file and line, or the variable that set it ([`ConfigIssue`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};

use crate::act::Target;
use crate::charts::ChartKey;
use crate::detect::DetectorParams;
use crate::policy::{Autonomy, PolicyConfig};
use crate::sources::prometheus::settings::{ChartTemplate, ProfileSel, PrometheusConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Who may call the API, and with which role.
    pub api: ApiConfig,
    /// Where babysitter keeps its state (the SQLite audit database by default).
    pub data_dir: PathBuf,
    pub audit: AuditConfig,
    /// How often every watch's charts are polled.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Page on-call when a watch has been blind (its charts unreadable) this long.
    #[serde(with = "duration")]
    pub blind_page_after: Duration,
    /// How much chart history is kept in memory per run.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// A folder of runbooks (`*.md`). Unset: `./runbooks` if it exists, else the built-in set.
    pub runbooks_dir: Option<PathBuf>,
    /// `[checks]`: how hard runbook checks ask Prometheus (per-query timeout, concurrency).
    pub checks: ChecksConfig,
    pub policy: PolicyConfig,
    pub detectors: DetectorParams,
    /// The pager used when no named `pagers` are declared (the console by default).
    pub pager: PagerConfig,
    /// Where charts come from. No source configured: the built-in simulator.
    pub sources: SourcesConfig,
    /// Named pagers (`[pagers.oncall-pd] kind = "pagerduty" …`); routes pick among them.
    pub pagers: BTreeMap<String, PagerConfig>,
    /// On-call routes: a route name to the pagers it pages (`ml-oncall = ["oncall-pd", "slack"]`).
    /// A watch's `route` names one of them (or a pager directly).
    pub routes: BTreeMap<String, Vec<String>>,
    /// The route (or pager) for pages whose route is neither a route nor a pager.
    pub default_route: Option<String>,
    /// Re-notification and incoming alerts (`[paging]`).
    pub paging: crate::notify::PagingConfig,
    pub watches: Vec<WatchConfig>,
    /// `[kubernetes]`: discover annotated workloads, elect a leader on a Lease, act on workloads.
    pub kubernetes: KubernetesConfig,
    /// `[agent]`: the optional LLM investigator (absent: no agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agent::AgentConfig>,

    /// The file this config was read from and its SHA-256 (set by [`Config::load`]).
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// Where a config came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSource {
    pub path: String,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            api: ApiConfig::default(),
            data_dir: PathBuf::from("babysitter-data"),
            audit: AuditConfig::default(),
            poll_interval: Duration::from_secs(30),
            blind_page_after: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(6 * 3600),
            runbooks_dir: None,
            checks: ChecksConfig::default(),
            policy: PolicyConfig::default(),
            detectors: DetectorParams::default(),
            pager: PagerConfig::default(),
            sources: SourcesConfig::default(),
            pagers: BTreeMap::new(),
            routes: BTreeMap::new(),
            default_route: None,
            paging: crate::notify::PagingConfig::default(),
            watches: Vec::new(),
            agent: None,

            source: None,

            kubernetes: KubernetesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The address people use to reach the API (for approve commands and links in pages).
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
        }
    }
}

/// API access: bearer tokens, stored as SHA-256 hashes, each with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Read endpoints (GET) without a token. Mutations always need a token with a role.
    pub read_open: bool,
    pub tokens: Vec<ApiToken>,
    /// More tokens from a file, e.g. a mounted Kubernetes Secret: one `name:role:sha256` per
    /// line (`#` comments and blank lines skipped), or a YAML/JSON list of
    /// `{name, role, sha256}` when the file ends in `.yaml`, `.yml` or `.json`. Read at start.
    pub tokens_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            read_open: true,
            tokens: Vec::new(),
            tokens_file: None,
        }
    }
}

/// Parses a tokens file's text (see [`ApiConfig::tokens_file`]); errors name the line.
pub fn parse_tokens_file(path: &Path, text: &str) -> Result<Vec<ApiToken>, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let structured = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml") | Some("json")
    );
    if structured {
        return serde_saphyr::from_str::<Vec<ApiToken>>(text).map_err(|e| file_err(e.to_string()));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').map(str::trim).collect();
        let [name, role, sha256] = parts[..] else {
            return Err(file_err(format!(
                "line {}: expected `name:role:sha256`",
                i + 1
            )));
        };
        let role = match role {
            "viewer" => ApiRole::Viewer,
            "operator" => ApiRole::Operator,
            "admin" => ApiRole::Admin,
            other => {
                return Err(file_err(format!(
                    "line {}: role `{other}`: expected viewer, operator or admin",
                    i + 1
                )));
            }
        };
        out.push(ApiToken {
            name: name.to_string(),
            role,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// What a caller may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Read watches, incidents, runbooks, the audit log.
    Viewer,
    /// Approve / reject actions, execute runbooks.
    Operator,
    /// Everything.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

/// One bearer token. Only its hash is kept: `printf %s "$TOKEN" | sha256sum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it (recorded as the actor of their API calls in the audit log).
    pub name: String,
    pub role: ApiRole,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

impl ApiToken {
    /// A token entry for a secret (the demo makes one at start-up).
    pub fn for_secret(name: &str, role: ApiRole, secret: &str) -> ApiToken {
        ApiToken {
            name: name.to_string(),
            role,
            sha256: token_hash(secret),
        }
    }
}

/// Hex SHA-256 of a token.
pub fn token_hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// `sqlite://PATH` or `postgres://…`. Unset: `sqlite://<data_dir>/audit.db`.
    pub url: Option<String>,
    /// File holding the HMAC key of signed heads (a mounted Kubernetes Secret; at least 16
    /// bytes, surrounding whitespace ignored). With it (or `signing_key`), babysitter signs
    /// the chain's head every `head_every`.
    pub signing_key_file: Option<PathBuf>,
    /// The key inline or as `{ env = "VAR" }`; `signing_key_file` is preferred.
    pub signing_key: Option<Secret>,
    /// How often a signed head is written (on the first append after it elapsed).
    #[serde(with = "duration")]
    pub head_every: Duration,
    /// Append-only file that receives every signed head as a JSON line (keep it off the
    /// database's disk, or ship it); `babysitter audit verify --heads FILE` checks against it.
    pub heads_file: Option<PathBuf>,
    /// Delete entries older than this (checked hourly), leaving a checkpoint entry so the
    /// chain stays verifiable. Unset: keep everything.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            url: None,
            signing_key_file: None,
            signing_key: None,
            head_every: Duration::from_secs(300),
            heads_file: None,
            retention: None,
        }
    }
}

/// One pager: where pages go and how they are delivered. Secrets (`routing_key`, `webhook_url`,
/// `secret`, `api_key`) are written inline or as `{ env = "VAR" }`, and never appear in Debug
/// output, errors or logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PagerConfig {
    /// Print pages on the terminal (the demo).
    #[default]
    Console,
    /// PagerDuty Events API v2.
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// A generic JSON webhook signed with HMAC-SHA256.
    Webhook(WebhookConfig),
    /// Alertmanager's API v2 (teams keep their routing, silences and inhibition).
    Alertmanager(AlertmanagerConfig),
    /// Opsgenie Alert API (optional: Opsgenie's API is being retired in 2027).
    Opsgenie(OpsgenieConfig),
}

impl PagerConfig {
    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            PagerConfig::Console => "console",
            PagerConfig::PagerDuty(_) => "pagerduty",
            PagerConfig::Slack(_) => "slack",
            PagerConfig::Webhook(_) => "webhook",
            PagerConfig::Alertmanager(_) => "alertmanager",
            PagerConfig::Opsgenie(_) => "opsgenie",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key (Events API v2).
    pub routing_key: Secret,
    /// Base URL; `{url}/v2/enqueue` receives events.
    #[serde(default = "pagerduty_url")]
    pub url: String,
    /// The event's `payload.source`; the run name when unset.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (it is the credential).
    pub webhook_url: Secret,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA256 key; the receiver checks `X-Babysitter-Signature`.
    pub secret: Secret,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL; alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    /// Extra labels on every alert (e.g. `team = "ml"`), for Alertmanager's routing.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Open alerts are re-sent this often so Alertmanager does not expire them (it resolves an
    /// alert that is not re-sent before its `endsAt`).
    #[serde(default = "resend_interval", with = "duration")]
    pub resend_interval: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn resend_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// The API integration key (`Authorization: GenieKey …`).
    pub api_key: Secret,
    /// Base URL (`https://api.eu.opsgenie.com` for the EU instance).
    #[serde(default = "opsgenie_url")]
    pub url: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn opsgenie_url() -> String {
    "https://api.opsgenie.com".into()
}

/// How one pager delivers: a per-request timeout and retries with exponential backoff on
/// 429 (honouring `Retry-After`), 5xx and connection errors. The engine waits for delivery,
/// so the defaults bound one page to well under a minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first wait; doubled after each failed try.
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// The longest wait between tries, `Retry-After` included.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// A page still undelivered after every try is queued and sent again this often, in
    /// order per incident, until delivered or `redeliver_for` has passed.
    #[serde(with = "duration")]
    pub redeliver_every: Duration,
    #[serde(with = "duration")]
    pub redeliver_for: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            redeliver_every: Duration::from_secs(60),
            redeliver_for: Duration::from_secs(24 * 3600),
        }
    }
}

impl PagerConfig {
    /// How a remote pager delivers (`None` for the console).
    pub fn delivery(&self) -> Option<&DeliveryConfig> {
        match self {
            PagerConfig::Console => None,
            PagerConfig::PagerDuty(c) => Some(&c.delivery),
            PagerConfig::Slack(c) => Some(&c.delivery),
            PagerConfig::Webhook(c) => Some(&c.delivery),
            PagerConfig::Alertmanager(c) => Some(&c.delivery),
            PagerConfig::Opsgenie(c) => Some(&c.delivery),
        }
    }

    /// Checks what can be checked before start: URLs parse, counts are positive.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let url = |field: &str, u: &str| -> Result<(), ConfigError> {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(()),
                _ => Err(ConfigError::Invalid(format!(
                    "{at}.{field}: `{u}` is not an http(s) URL"
                ))),
            }
        };
        let delivery = match self {
            PagerConfig::Console => return Ok(()),
            PagerConfig::PagerDuty(c) => {
                url("url", &c.url)?;
                &c.delivery
            }
            PagerConfig::Slack(c) => &c.delivery,
            PagerConfig::Webhook(c) => {
                url("url", &c.url)?;
                &c.delivery
            }
            PagerConfig::Alertmanager(c) => {
                url("url", &c.url)?;
                if c.resend_interval.is_zero() {
                    return Err(ConfigError::Invalid(format!(
                        "{at}.resend_interval: must be positive"
                    )));
                }
                &c.delivery
            }
            PagerConfig::Opsgenie(c) => {
                url("url", &c.url)?;
                &c.delivery
            }
        };
        if delivery.attempts == 0 {
            return Err(ConfigError::Invalid(format!(
                "{at}.delivery.attempts: must be at least 1"
            )));
        }
        if delivery.redeliver_every.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "{at}.delivery.redeliver_every: must be positive"
            )));
        }
        if delivery.timeout.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "{at}.delivery.timeout: must be positive"
            )));
        }
        Ok(())
    }
}

/// A credential: inline, or read from an environment variable when the pager is built.
/// Debug and Serialize never show the value.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Value(String),
    Env(String),
}

impl Secret {
    /// The value; `field` names the config field in the error when the variable is unset.
    pub fn expose(&self, field: &str) -> Result<String, ConfigError> {
        let v = match self {
            Secret::Value(v) => v.clone(),
            Secret::Env(var) => std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("{field}: environment variable `{var}` is not set"))
            })?,
        };
        if v.trim().is_empty() {
            return Err(ConfigError::Invalid(format!("{field}: must not be empty")));
        }
        Ok(v)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env(var) => write!(f, "Secret(env {var})"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Secret::Value(_) => s.serialize_str("<redacted>"),
            Secret::Env(var) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("env", var)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FromEnv {
            env: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Value(String),
            Env(FromEnv),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Value(v)) => Ok(Secret::Value(v)),
            Ok(Raw::Env(e)) => Ok(Secret::Env(e.env)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or { env = \"VARIABLE\" }",
            )),
        }
    }
}

/// `[sources]`: metrics sources. Only one kind so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// `[sources.prometheus]`: read charts from a Prometheus-compatible API.
    pub prometheus: Option<PrometheusConfig>,
}

/// `[checks]`: how runbook checks ask Prometheus (with `[sources.prometheus]`). The loop holds
/// its state while a plan is made, so a dead or slow Prometheus must cost seconds, not a poll:
/// the checks of one plan are queried at most `concurrency` at a time, and a query without an
/// answer after `timeout` counts as unanswered (the run's chart, then `unknown`, answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChecksConfig {
    /// Per query; above 0 and at most 60s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Queries of one plan in flight at once; 1 to 64.
    pub concurrency: usize,
}

impl Default for ChecksConfig {
    /// [`CheckLimits::default`](crate::runbook::CheckLimits): 5 s per query, 4 at a time.
    fn default() -> Self {
        let d = crate::runbook::CheckLimits::default();
        ChecksConfig {
            timeout: d.timeout,
            concurrency: d.concurrency,
        }
    }
}

impl ChecksConfig {
    /// The limits as [`crate::runbook::checks::evaluate_all`] takes them.
    pub fn limits(&self) -> crate::runbook::CheckLimits {
        crate::runbook::CheckLimits {
            timeout: self.timeout,
            concurrency: self.concurrency,
        }
    }

    /// The timeout is above 0 and at most [`CheckLimits::MAX_TIMEOUT`]; the concurrency 1 to
    /// [`CheckLimits::MAX_CONCURRENCY`].
    ///
    /// [`CheckLimits::MAX_TIMEOUT`]: crate::runbook::CheckLimits::MAX_TIMEOUT
    /// [`CheckLimits::MAX_CONCURRENCY`]: crate::runbook::CheckLimits::MAX_CONCURRENCY
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::runbook::CheckLimits;
        if self.timeout.is_zero() || self.timeout > CheckLimits::MAX_TIMEOUT {
            return Err(ConfigError::Invalid(format!(
                "checks.timeout: must be above 0 and at most {} (got {})",
                humantime::format_duration(CheckLimits::MAX_TIMEOUT),
                humantime::format_duration(self.timeout)
            )));
        }
        if !(1..=CheckLimits::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(ConfigError::Invalid(format!(
                "checks.concurrency: must be 1 to {} (got {})",
                CheckLimits::MAX_CONCURRENCY,
                self.concurrency
            )));
        }
        Ok(())
    }
}

/// One run to babysit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The run's name, unique among watches.
    pub run: String,
    pub target: Target,
    #[serde(default)]
    pub autonomy: Autonomy,
    /// On-call route for pages.
    #[serde(default = "default_route")]
    pub route: String,
    /// Runbook ids that may diagnose this run; empty means all.
    #[serde(default)]
    pub runbooks: Vec<String>,
    /// Per-watch detector settings (override the global ones).
    #[serde(default)]
    pub detectors: Option<DetectorParams>,
    /// Prometheus source: the profile(s) of this run's charts (`generic`, `dcgm`,
    /// `kube_state_metrics`); unset means `sources.prometheus.default_profile`.
    #[serde(default)]
    pub profile: Option<ProfileSel>,
    /// Prometheus source: per-chart PromQL overrides, keyed by chart (`loss`,
    /// `step_time{rank=0}`); an empty expression turns a chart off.
    #[serde(default)]
    pub charts: BTreeMap<ChartKey, ChartTemplate>,
}

fn default_route() -> String {
    "default".into()
}

/// `[kubernetes]`: babysit workloads annotated `babysitter.dev/watch: "true"` (Job, JobSet,
/// PyTorchJob, TrainJob), with leader election on a `coordination.k8s.io/v1` Lease so that
/// several replicas can run and only one acts. Credentials come from the pod's service account
/// or `$KUBECONFIG`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Off by default: `serve` then babysits only the configured watches.
    pub enabled: bool,
    /// Namespaces to discover workloads in; empty means the whole cluster.
    pub namespaces: Vec<String>,
    /// Autonomy of a discovered workload without a `babysitter.dev/autonomy` annotation.
    pub default_autonomy: Autonomy,
    /// The most autonomy an annotation may ask for; a higher one is lowered to this (the
    /// cluster owner, not the workload's owner, decides how far babysitter may go).
    pub max_autonomy: Autonomy,
    /// The Lease the replicas elect a leader on.
    pub lease_name: String,
    /// Its namespace; unset: `$POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    /// How long a leader's claim lasts without renewal: a dead leader is replaced within this.
    #[serde(with = "duration")]
    pub lease_duration: Duration,
    /// The leader renews this long before its claim expires.
    #[serde(with = "duration")]
    pub lease_renew_before: Duration,
    /// This replica's name in the election; unset: `$POD_NAME`, else `$HOSTNAME`.
    pub identity: Option<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            namespaces: Vec::new(),
            default_autonomy: Autonomy::Suggest,
            max_autonomy: Autonomy::Act,
            lease_name: "babysitter-leader".into(),
            lease_namespace: None,
            lease_duration: Duration::from_secs(15),
            lease_renew_before: Duration::from_secs(5),
            identity: None,
        }
    }
}

impl KubernetesConfig {
    /// The Lease's namespace: configured, else `$POD_NAMESPACE`, else `default`.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            })
            .unwrap_or_else(|| "default".into())
    }

    /// This replica's identity: configured, else `$POD_NAME`, else `$HOSTNAME`.
    pub fn identity(&self) -> Result<String, ConfigError> {
        self.identity
            .clone()
            .or_else(|| {
                ["POD_NAME", "HOSTNAME"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok().filter(|x| !x.trim().is_empty()))
            })
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "kubernetes.identity: unset, and neither POD_NAME nor HOSTNAME is set".into(),
                )
            })
    }

    /// Checks names and durations (whole seconds: the Lease counts in seconds).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, msg: String| {
            Err(ConfigError::Invalid(format!("kubernetes.{field}: {msg}")))
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return bad(
                    &format!("namespaces[{i}]"),
                    format!("`{ns}` is not a namespace name (lower-case letters, digits, `-`)"),
                );
            }
            if !seen.insert(ns) {
                return bad(
                    &format!("namespaces[{i}]"),
                    format!("`{ns}` is listed twice"),
                );
            }
        }
        if !is_dns_subdomain(&self.lease_name) {
            return bad(
                "lease_name",
                format!("`{}` is not a valid object name", self.lease_name),
            );
        }
        if let Some(ns) = &self.lease_namespace
            && !is_dns_label(ns)
        {
            return bad("lease_namespace", format!("`{ns}` is not a namespace name"));
        }
        let whole = |d: Duration| d.subsec_nanos() == 0;
        if !whole(self.lease_duration) || self.lease_duration.as_secs() < 2 {
            return bad(
                "lease_duration",
                "must be a whole number of seconds, at least 2s".into(),
            );
        }
        if !whole(self.lease_renew_before)
            || self.lease_renew_before.is_zero()
            || self.lease_renew_before >= self.lease_duration
        {
            return bad(
                "lease_renew_before",
                "must be a whole number of seconds, at least 1s and less than lease_duration"
                    .into(),
            );
        }
        if let Some(id) = &self.identity
            && id.trim().is_empty()
        {
            return bad("identity", "must not be empty".into());
        }
        if self.default_autonomy > self.max_autonomy {
            return bad("default_autonomy", "is above max_autonomy".into());
        }
        Ok(())
    }
}

/// A Kubernetes DNS label (RFC 1123): namespaces.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes DNS subdomain (RFC 1123): most object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
    /// Every problem [`Config::load`] found, in file order; shown one per line.
    #[error("{}", render_issues(.0))]
    Issues(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The problems one per line item: the issues of [`ConfigError::Issues`], else this error
    /// as the only one.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Issues(v) => v.clone(),
            ConfigError::File { path, message } => {
                vec![issue(Some(path), None, "", message.clone())]
            }
            ConfigError::Invalid(m) => {
                let (field, rest) = split_field(m);
                vec![issue(None, None, field, rest.to_string())]
            }
        }
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Defaults, then the file (TOML, or YAML by extension), then `BABYSITTER_*` variables;
    /// then the tokens file and every check of [`Config::validate`]. This is
    /// [`Config::check_file`]: on any problem the error carries all of them
    /// ([`ConfigError::Issues`]), each with its file, line (when the file shows it) or
    /// environment variable, and field.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match Config::check_file(path) {
            (Some(cfg), issues) if issues.is_empty() => Ok(cfg),
            (_, issues) if issues.is_empty() => {
                // Unreachable by construction (no config comes with an issue); never silent.
                Err(ConfigError::Issues(vec![issue(
                    path.map(|p| p.display().to_string()).as_deref(),
                    None,
                    "",
                    "the configuration could not be read".into(),
                )]))
            }
            (_, issues) => Err(ConfigError::Issues(issues)),
        }
    }

    /// SHA-256 of the effective configuration (defaults, file and environment merged), as
    /// canonical JSON with every secret redacted: two replicas with the same hash run the same
    /// settings.
    pub fn effective_sha256(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            crate::audit::canonical_json(&v).as_bytes(),
        ))
    }

    /// Every check of the settings as a whole; the error lists all that fail (at most one per
    /// section whose own validator stops at its first problem).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Issues(
            problems
                .iter()
                .map(|p| {
                    let (field, rest) = split_field(p);
                    issue(None, None, field, rest.to_string())
                })
                .collect(),
        ))
    }

    /// What [`Config::validate`] finds, each as `field: message`.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                for i in e.issues() {
                    out.push(if i.field.is_empty() {
                        i.message
                    } else {
                        format!("{}: {}", i.field, i.message)
                    });
                }
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, w) in self.watches.iter().enumerate() {
            if w.run.trim().is_empty() {
                push(Err(ConfigError::Invalid(format!(
                    "watches[{i}].run: must not be empty"
                ))));
            } else if !seen.insert(w.run.as_str()) {
                push(Err(ConfigError::Invalid(format!(
                    "watches[{i}].run: `{}` is watched twice",
                    w.run
                ))));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                push(Err(ConfigError::Invalid(format!(
                    "api.tokens[{i}].name: must be a unique, non-empty name"
                ))));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                push(Err(ConfigError::Invalid(format!(
                    "api.tokens[{i}].sha256: 64 hex digits expected (printf %s \"$TOKEN\" | sha256sum)"
                ))));
            }
        }
        for p in self.paging_problems() {
            push(Err(ConfigError::Invalid(p)));
        }
        if let Some(a) = &self.agent {
            push(
                a.validate()
                    .map_err(|e| ConfigError::Invalid(e.to_string())),
            );
        }

        if self.audit.head_every < Duration::from_secs(1) {
            push(Err(ConfigError::Invalid(
                "audit.head_every: at least 1s (a signed head per append doubles the log)".into(),
            )));
        }
        if self.poll_interval.is_zero() {
            push(Err(ConfigError::Invalid(
                "poll_interval: must be positive".into(),
            )));
        }
        push(self.checks.validate());
        push(
            self.policy
                .validate()
                .map_err(|e| ConfigError::Invalid(e.to_string())),
        );
        push(
            self.detectors
                .validate()
                .map_err(|e| ConfigError::Invalid(e.to_string())),
        );
        if let Some(p) = &self.sources.prometheus {
            push(
                crate::sources::prometheus::validate(p)
                    .map_err(|e| ConfigError::Invalid(e.to_string())),
            );
            for (i, w) in self.watches.iter().enumerate() {
                let sel = w.profile.as_ref().unwrap_or(&p.default_profile);
                push(
                    crate::sources::prometheus::profile::resolve(sel, &w.charts)
                        .map(|_| ())
                        .map_err(|e| {
                            ConfigError::Invalid(format!("watches[{i}] (run `{}`): {e}", w.run))
                        }),
                );
            }
        }
        if self.kubernetes.enabled {
            push(self.kubernetes.validate());
            if self.sources.prometheus.is_none() {
                push(Err(ConfigError::Invalid(
                    "kubernetes.enabled: discovered workloads read their charts from Prometheus; configure [sources.prometheus]".into(),
                )));
            }
        }
        for (i, w) in self.watches.iter().enumerate() {
            if let Some(d) = &w.detectors {
                push(
                    d.validate()
                        .map_err(|e| ConfigError::Invalid(format!("watches[{i}].{e}"))),
                );
            }
        }
        out
    }

    /// The limits runbook checks ask Prometheus with (`[checks]`), as the engine uses them.
    pub fn check_limits(&self) -> crate::runbook::CheckLimits {
        self.checks.limits()
    }

    /// Pagers, routes and each watch's route must fit together: a route names declared pagers,
    /// and with named pagers every watch's route reaches at least one of them.
    fn paging_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pager_ok = |name: &str| self.pagers.contains_key(name);
        for (name, p) in &self.pagers {
            if name.trim().is_empty() {
                out.push("pagers: a pager name is empty".to_string());
                continue;
            }
            if let Err(e) = p.validate(&format!("pagers.{name}")) {
                out.push(strip_prefix(&e));
            }
        }
        if let Err(e) = self.pager.validate("pager") {
            out.push(strip_prefix(&e));
        }
        if let Err(e) = self.paging.validate() {
            out.push(e);
        }
        for (route, members) in &self.routes {
            if members.is_empty() {
                out.push(format!("routes.{route}: lists no pager"));
            }
            for (i, m) in members.iter().enumerate() {
                if !pager_ok(m) {
                    out.push(format!(
                        "routes.{route}[{i}]: `{m}` is not a declared pager (declare it under [pagers.{m}])"
                    ));
                }
            }
        }
        let resolves = |r: &str| self.routes.contains_key(r) || pager_ok(r);
        if let Some(d) = &self.default_route
            && !resolves(d)
        {
            out.push(format!(
                "default_route: `{d}` is neither a route nor a pager"
            ));
        }
        if self.pagers.is_empty() {
            if !self.routes.is_empty() {
                out.push("routes: routes need named pagers ([pagers.NAME])".into());
            }
            return out;
        }
        if self.default_route.is_none() {
            for (i, w) in self.watches.iter().enumerate() {
                if !resolves(&w.route) {
                    out.push(format!(
                        "watches[{i}].route: `{}` is neither a route nor a pager, and no default_route is set",
                        w.route
                    ));
                }
            }
        }
        out
    }

    /// The audit database URL, defaulting to SQLite in the data dir.
    pub fn audit_url(&self) -> String {
        self.audit.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("audit.db").display()
            )
        })
    }
}

/// Top-level field names of [`Config`], as written in a file.
fn config_fields() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        // `agent` is absent from the defaults (it is optional) but may be set from the
        // environment (`BABYSITTER_AGENT__MODEL`).
        Ok(serde_json::Value::Object(m)) => m
            .keys()
            .cloned()
            .chain(std::iter::once("agent".to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Serde for durations written as `"90s"`, `"10m"`, `"1h 30m"` or a number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }

    pub fn parse(raw: &str) -> Result<Duration, String> {
        humantime::parse_duration(raw.trim()).map_err(|e| {
            format!("invalid duration `{raw}` ({e}); write e.g. \"90s\", \"10m\", \"1h\"")
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(x) if x.is_finite() && x >= 0.0 => Ok(Duration::from_secs_f64(x)),
            Raw::Secs(x) => Err(serde::de::Error::custom(format!("invalid duration {x}"))),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for optional durations (`None` when absent).
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "super::duration")] Duration);

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(D).serialize(s)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<Option<Duration>, De::Error> {
        Ok(Option::<D>::deserialize(d)?.map(|x| x.0))
    }
}

/// Serde for maps whose values are durations.
pub mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "super::duration")] Duration);

    pub fn serialize<K: Serialize + Ord, S: Serializer>(
        m: &BTreeMap<K, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&K, D> = m.iter().map(|(k, v)| (k, D(*v))).collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, De: Deserializer<'de>>(
        d: De,
    ) -> Result<BTreeMap<K, Duration>, De::Error> {
        let m: BTreeMap<K, D> = BTreeMap::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

/// One problem of a config file, as `babysitter check` and start-up print it:
/// `file:line: field: message` (the line when the file shows where the field is), or
/// `environment variable NAME: field: message` when a `BABYSITTER_*` variable set the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: Option<String>,
    pub line: Option<usize>,
    /// The `BABYSITTER_*` variable that set the field, when the problem comes from one.
    pub env: Option<String>,
    /// The field as written in the file: `watches[0].autonomy`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.env, &self.file, self.line) {
            (Some(var), _, _) => write!(f, "environment variable {var}: ")?,
            (None, Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (None, Some(file), None) => write!(f, "{file}: ")?,
            (None, None, _) => f.write_str("configuration: ")?,
        }
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// One `BABYSITTER_*` environment variable that sets a config field.
#[derive(Debug, Clone, PartialEq)]
struct EnvVar {
    /// As set: `BABYSITTER_POLICY__READ_ONLY`.
    name: String,
    /// The field it sets, lower-cased: `["policy", "read_only"]`.
    path: Vec<String>,
    value: String,
}

const ENV_PREFIX: &str = "BABYSITTER_";

/// The variables among `vars` that set config fields: the prefix `BABYSITTER_` (any case),
/// then a top-level field, levels joined by `__`. Others (`BABYSITTER_CONFIG`,
/// `BABYSITTER_LOG`, `BABYSITTER_TOKEN`, the tests' own) belong to the CLI or the tests.
fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<EnvVar> {
    let fields = config_fields();
    let mut out: Vec<EnvVar> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.trim();
            let rest = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .and_then(|_| name.get(ENV_PREFIX.len()..))?;
            let path: Vec<String> = rest
                .to_ascii_lowercase()
                .split("__")
                .map(|s| s.trim().to_string())
                .collect();
            let known = path.first().is_some_and(|top| fields.contains(top));
            (known && path.iter().all(|s| !s.is_empty())).then(|| EnvVar {
                name: name.to_string(),
                path,
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The variables as one nested value. A value is read like TOML (`true`, `4`, `[1, 2]`,
/// `{ kind = "slack" }`), else taken as a string.
fn env_value(vars: &[EnvVar]) -> serde_json::Value {
    let mut root = serde_json::Value::Object(serde_json::Map::new());
    for v in vars {
        let Ok(parsed) = v.value.parse::<figment::value::Value>();
        let value = serde_json::to_value(&parsed)
            .unwrap_or_else(|_| serde_json::Value::String(v.value.clone()));
        let mut cur = &mut root;
        for seg in &v.path {
            if !cur.is_object() {
                *cur = serde_json::Value::Object(serde_json::Map::new());
            }
            let serde_json::Value::Object(m) = cur else {
                break;
            };
            cur = m.entry(seg.clone()).or_insert(serde_json::Value::Null);
        }
        *cur = value;
    }
    root
}

/// Where a setting came from, to say where a problem is.
enum Place<'a> {
    File(Option<usize>),
    Env(&'a EnvVar),
}

/// What the settings were read from: the file's text (to find lines) and the variables
/// still in effect.
struct Origin {
    file: Option<String>,
    text: String,
    yaml: bool,
    env: Vec<EnvVar>,
}

impl Origin {
    fn line(&self, path: &[String]) -> Option<usize> {
        self.file.as_ref()?;
        if self.yaml {
            yaml_line(&self.text, path)
        } else {
            toml_line(&self.text, path)
        }
    }

    /// `at` in the merged settings (`file_path` in the file's own coordinates): a variable
    /// setting it or a field above it wins (it overrides the file), then the file when it
    /// shows the field, then a variable setting something inside `owner`.
    fn place(&self, at: &[String], file_path: &[String], owner: &[String]) -> Place<'_> {
        if let Some(v) = self.env.iter().find(|v| at.starts_with(&v.path)) {
            return Place::Env(v);
        }
        let line = self.line(file_path);
        if line.is_none()
            && !owner.is_empty()
            && let Some(v) = self.env.iter().find(|v| v.path.starts_with(owner))
        {
            return Place::Env(v);
        }
        Place::File(line)
    }

    fn issue_from(&self, from: &Place<'_>, field: &str, message: String) -> ConfigIssue {
        match from {
            Place::Env(v) => ConfigIssue {
                file: None,
                line: None,
                env: Some(v.name.clone()),
                field: field.to_string(),
                message,
            },
            Place::File(line) => issue(self.file.as_deref(), *line, field, message),
        }
    }

    /// An issue of the field at `path` (same in the file and the merged settings).
    fn issue(&self, path: &[String], field: &str, message: String) -> ConfigIssue {
        self.issue_from(&self.place(path, path, path), field, message)
    }
}

impl Config {
    /// Every problem of a config file that can be found, not only the first (`babysitter
    /// check`, and [`Config::load`] at start-up): each field that does not deserialize
    /// (unknown field, bad duration, invalid enum value, …) is reported and taken out — from
    /// the file, or the `BABYSITTER_*` variable that set it — and deserialization tried again,
    /// until the rest reads; then the settings are checked as a whole (watches' routes and
    /// profiles, PromQL of chart overrides, the tokens file, and [`Config::validate`]). The
    /// config is returned when the settings read (they may still have issues); issues are in
    /// file order, those of variables last.
    pub fn check_file(path: Option<&Path>) -> (Option<Config>, Vec<ConfigIssue>) {
        let vars = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        Config::check_with_env(path, env_overrides(vars))
    }

    fn check_with_env(path: Option<&Path>, env: Vec<EnvVar>) -> (Option<Config>, Vec<ConfigIssue>) {
        let (mut origin, mut value) = match path {
            None => (
                Origin {
                    file: None,
                    text: String::new(),
                    yaml: false,
                    env,
                },
                serde_json::Value::Object(serde_json::Map::new()),
            ),
            Some(path) => {
                let file = path.display().to_string();
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => return (None, vec![issue(Some(&file), None, "", e.to_string())]),
                };
                let yaml = matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                );
                let parsed: Result<serde_json::Value, (Option<usize>, String)> = if yaml {
                    serde_saphyr::from_str(&text).map_err(|e| (None, e.to_string()))
                } else {
                    toml::from_str::<toml::Table>(&text)
                        .map(|t| toml_to_json(toml::Value::Table(t)))
                        .map_err(|e| {
                            let line = e.span().map(|s| line_at(&text, s.start));
                            (line, e.message().trim().to_string())
                        })
                };
                let value = match parsed {
                    // An empty YAML file is no mapping, but means "all defaults".
                    Ok(serde_json::Value::Null) => {
                        serde_json::Value::Object(serde_json::Map::new())
                    }
                    Ok(v) => v,
                    Err((line, message)) => {
                        return (None, vec![issue(Some(&file), line, "", message)]);
                    }
                };
                (
                    Origin {
                        file: Some(file),
                        text,
                        yaml,
                        env,
                    },
                    value,
                )
            }
        };
        let mut issues = Vec::new();
        let mut removed = Removed::default();
        let mut cfg = None;
        // Each round takes bad fields out; a file has far fewer than this many.
        for _ in 0..256 {
            let fig = Figment::from(Serialized::defaults(Config::default()))
                .merge(Serialized::defaults(value.clone()))
                .merge(Serialized::defaults(env_value(&origin.env)));
            let err = match fig.extract::<Config>() {
                Ok(c) => {
                    cfg = Some(c);
                    break;
                }
                Err(e) => e,
            };
            let mut progressed = false;
            for e in err {
                let cur: Vec<String> = e.path.clone();
                let (owner, caused_by_us) = match &e.kind {
                    // The field is missing from its mapping: the mapping is what goes.
                    figment::error::Kind::MissingField(name) => {
                        let owner: Vec<String> = if cur.last().map(String::as_str) == Some(name) {
                            cur[..cur.len() - 1].to_vec()
                        } else {
                            cur.clone()
                        };
                        let ours = removed.emptied(&removed.original(&owner));
                        (owner, ours)
                    }
                    _ => (cur.clone(), false),
                };
                let orig = removed.original(&cur);
                let owner_orig = removed.original(&owner);
                let from = origin.place(&cur, &orig, &owner);
                if !caused_by_us {
                    issues.push(origin.issue_from(
                        &from,
                        &field_name(&orig),
                        figment_message(&e.kind),
                    ));
                }
                // Take the bad value out where it came from: the variable overrides the file.
                if matches!(from, Place::Env(_)) {
                    let before = origin.env.len();
                    origin
                        .env
                        .retain(|v| !(cur.starts_with(&v.path) || v.path.starts_with(&owner)));
                    if origin.env.len() < before {
                        removed.paths.push(owner_orig);
                        progressed = true;
                    }
                } else if remove_at(&mut value, &owner) {
                    removed.note(&owner_orig);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        let tokens_path = ["api".to_string(), "tokens_file".to_string()];
        if let Some(c) = cfg.as_mut()
            && let Some(tf) = c.api.tokens_file.clone()
        {
            // Its tokens count for the checks below.
            match std::fs::read_to_string(&tf)
                .map_err(|e| ConfigError::File {
                    path: tf.display().to_string(),
                    message: e.to_string(),
                })
                .and_then(|t| parse_tokens_file(&tf, &t))
            {
                Ok(tokens) => c.api.tokens.extend(tokens),
                Err(e) => issues.push(origin.issue(&tokens_path, "api.tokens_file", e.to_string())),
            }
        }
        if let Some(c) = &cfg {
            issues.extend(c.semantic_issues(&origin));
        }
        if let Some(c) = cfg.as_mut()
            && let Some(file) = &origin.file
        {
            // Content hash for the audit log's `config_loaded` entry.
            c.source = Some(ConfigSource {
                path: file.clone(),
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                    origin.text.as_bytes(),
                )),
            });
        }
        if cfg.is_none() && issues.is_empty() {
            issues.push(issue(
                origin.file.as_deref(),
                None,
                "",
                "the settings do not read, and no field could be blamed".into(),
            ));
        }
        issues.sort_by_key(|i| (i.env.is_some(), i.line.unwrap_or(usize::MAX)));
        (cfg, issues)
    }

    /// Problems of settings that read: each watch's route and profile, the PromQL of its chart
    /// overrides, then whatever [`Config::validate`] finds beyond those.
    fn semantic_issues(&self, origin: &Origin) -> Vec<ConfigIssue> {
        let at = |path: &[&str], field: &str, message: String| -> ConfigIssue {
            let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            origin.issue(&p, field, message)
        };
        let mut out = Vec::new();
        let resolves = |r: &str| self.routes.contains_key(r) || self.pagers.contains_key(r);
        for (i, w) in self.watches.iter().enumerate() {
            let idx = i.to_string();
            if !self.pagers.is_empty() && self.default_route.is_none() && !resolves(&w.route) {
                out.push(at(
                    &["watches", &idx, "route"],
                    &format!("watches[{i}].route"),
                    format!(
                        "`{}` is neither a route nor a pager, and no default_route is set",
                        w.route
                    ),
                ));
            }
            if let Some(p) = &self.sources.prometheus {
                let sel = w.profile.as_ref().unwrap_or(&p.default_profile);
                for name in sel.names() {
                    if let Err(e) = crate::sources::prometheus::profile::builtin(name.trim()) {
                        out.push(at(
                            &["watches", &idx, "profile"],
                            &format!("watches[{i}].profile"),
                            e.to_string(),
                        ));
                    }
                }
            }
            for (key, t) in &w.charts {
                if t.is_off() {
                    continue;
                }
                // The placeholders filled in for a batch of runs, so the parser sees PromQL.
                let expr = t
                    .expr
                    .replace("$POD_RUN_LABEL", "label_run")
                    .replace("$POD_RUNS", "label_run=~\"a|b\"")
                    .replace("$RUN_LABEL", "run")
                    .replace("$RUNS", "run=~\"a|b\"");
                if let Err(e) = crate::runbook::checks::parse_promql(&expr) {
                    let k = key.to_string();
                    out.push(at(
                        &["watches", &idx, "charts", &k],
                        &format!("watches[{i}].charts.{k}"),
                        format!("the PromQL does not parse: {e}"),
                    ));
                }
            }
        }
        let reported = out.len();
        for message in self.problems() {
            // Already reported above, with its line.
            let dup = out[..reported]
                .iter()
                .any(|i| message == format!("{}: {}", i.field, i.message));
            let profile_dup = out[..reported]
                .iter()
                .any(|i| i.field.ends_with(".profile"))
                && message.contains("unknown profile");
            if dup || profile_dup {
                continue;
            }
            let (field, rest) = split_field(&message);
            out.push(origin.issue(&field_path(field), field, rest.to_string()));
        }
        out
    }
}

/// The line of a field (`["watches", "0", "runbooks"]`) in a config file, when it shows; for
/// checks made outside this module (`babysitter check` on watches' runbook ids).
pub fn field_line(file: &Path, path: &[&str]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    match file.extension().and_then(|e| e.to_str()) {
        Some("yaml") | Some("yml") => yaml_line(&text, &path),
        _ => toml_line(&text, &path),
    }
}

fn issue(file: Option<&str>, line: Option<usize>, field: &str, message: String) -> ConfigIssue {
    ConfigIssue {
        file: file.map(str::to_string),
        line,
        env: None,
        field: field.to_string(),
        message,
    }
}

/// `("watches[0].route", "…")` from `watches[0].route: …`, as validators write their errors;
/// `("", message)` when the message names no field.
fn split_field(message: &str) -> (&str, &str) {
    match message.split_once(": ") {
        Some((f, r)) if !f.contains(' ') || f.starts_with("watches[") => (f, r),
        _ => ("", message),
    }
}

/// The error's text without the `configuration: ` of [`ConfigError::Invalid`].
fn strip_prefix(e: &ConfigError) -> String {
    let text = e.to_string();
    match text.strip_prefix("configuration: ") {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// A TOML document as JSON; dates and times become their RFC 3339 text (what the config's
/// time fields read).
fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// `watches[0].autonomy` from `["watches", "0", "autonomy"]`.
fn field_name(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            s.push_str(&format!("[{p}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

/// `["watches", "0", "route"]` from `watches[0].route` (what [`Config::validate`] names).
fn field_path(field: &str) -> Vec<String> {
    field
        .split(['.', '[', ']'])
        .filter(|s| !s.is_empty())
        .map(|s| s.split(' ').next().unwrap_or(s).to_string())
        .collect()
}

/// figment's message without its own "for key … in …" suffix (the issue names the field).
fn figment_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(found, expected) => format!(
            "unknown field `{found}`, expected one of {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::UnknownVariant(found, expected) => format!(
            "unknown variant `{found}`, expected one of {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::MissingField(name) => format!("missing field `{name}`"),
        other => other.to_string(),
    }
}

/// What [`Config::check_file`] took out of the file so far, in the file's own coordinates.
#[derive(Default)]
struct Removed {
    /// Array path → the original indices removed from it.
    elements: BTreeMap<Vec<String>, Vec<usize>>,
    /// Paths removed (tables' keys and array elements).
    paths: Vec<Vec<String>>,
}

impl Removed {
    /// The file's path of a path in the current (reduced) value.
    fn original(&self, cur: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(cur.len());
        for seg in cur {
            match (seg.parse::<usize>(), self.elements.get(&out)) {
                (Ok(mut i), Some(gone)) => {
                    // The i-th remaining element: skip the removed ones before it.
                    let mut orig = 0;
                    loop {
                        if !gone.contains(&orig) {
                            if i == 0 {
                                break;
                            }
                            i -= 1;
                        }
                        orig += 1;
                    }
                    out.push(orig.to_string());
                }
                _ => out.push(seg.clone()),
            }
        }
        out
    }

    fn note(&mut self, orig: &[String]) {
        if let Some((last, parent)) = orig.split_last()
            && let Ok(i) = last.parse::<usize>()
        {
            self.elements.entry(parent.to_vec()).or_default().push(i);
        }
        self.paths.push(orig.to_vec());
    }

    /// Did we take a field out of this mapping (so a missing field there is our doing)?
    fn emptied(&self, owner: &[String]) -> bool {
        self.paths
            .iter()
            .any(|p| p.len() > owner.len() && p.starts_with(owner))
    }
}

/// Removes the value at `path` (object keys, array indices); false if there is none.
fn remove_at(v: &mut serde_json::Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parent {
        cur = match cur {
            serde_json::Value::Object(m) => match m.get_mut(seg) {
                Some(x) => x,
                None => return false,
            },
            serde_json::Value::Array(a) => {
                match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(x) => x,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match cur {
        serde_json::Value::Object(m) => m.remove(last).is_some(),
        serde_json::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key of a TOML line (`key = …`, `"key" = …`), if it is one.
fn toml_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    Some(k.trim().trim_matches('"'))
}

/// The line of a field in a TOML file: the `[table]` / n-th `[[array]]` header of its longest
/// prefix, then the key's line within that section (or a dotted key / inline table on it).
fn toml_line(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| -> Option<(bool, String)> {
        let t = l.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            return Some((true, h.0.trim().to_string()));
        }
        t.strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|h| (false, h.0.trim().to_string()))
    };
    // Walk the path: `table.sub` headers and `[[array]]` occurrences narrow the section.
    let (mut start, mut end) = (0usize, lines.len());
    let mut prefix: Vec<&str> = Vec::new();
    let mut i = 0;
    let mut found = None;
    while i < path.len() {
        let seg = path[i].as_str();
        let next_is_index = path.get(i + 1).and_then(|s| s.parse::<usize>().ok());
        let mut name = prefix.clone();
        name.push(seg);
        let dotted = name.join(".");
        let section = match next_is_index {
            Some(n) => lines[start..end]
                .iter()
                .enumerate()
                .filter(|(_, l)| header(l) == Some((true, dotted.clone())))
                .nth(n)
                .map(|(k, _)| start + k),
            None => lines[start..end]
                .iter()
                .position(|l| header(l) == Some((false, dotted.clone())))
                .map(|k| start + k),
        };
        if let Some(h) = section {
            found = Some(h + 1);
            start = h + 1;
            end = (start..lines.len())
                .find(|&k| {
                    header(lines[k]).is_some_and(|(_, n)| !n.starts_with(&format!("{dotted}.")))
                })
                .unwrap_or(lines.len());
            prefix = name;
            i += if next_is_index.is_some() { 2 } else { 1 };
            continue;
        }
        // A key of this section (before any sub-table header).
        let own_end = (start..end)
            .find(|&k| header(lines[k]).is_some())
            .unwrap_or(end);
        if let Some(k) = (start..own_end).find(|&k| {
            toml_key(lines[k]).is_some_and(|key| key == seg || key.starts_with(&format!("{seg}.")))
        }) {
            return Some(k + 1);
        }
        return found;
    }
    found
}

/// The line of a field in a YAML file: each key at a deeper indent than its parent, the n-th
/// `- ` item for an index.
fn yaml_line(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut from, mut min_indent, mut found) = (0usize, 0usize, None);
    for seg in path {
        let mut hit = None;
        if let Ok(n) = seg.parse::<usize>() {
            let mut count = 0;
            for (k, l) in lines.iter().enumerate().skip(from) {
                let t = l.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                if indent(l) < min_indent && k > from {
                    break;
                }
                if t.starts_with("- ") || t == "-" {
                    if count == n {
                        hit = Some((k, indent(l) + 2));
                        break;
                    }
                    count += 1;
                }
            }
        } else {
            for (k, l) in lines.iter().enumerate().skip(from) {
                let t = l.trim_start().trim_start_matches("- ");
                if l.trim().is_empty() || l.trim_start().starts_with('#') {
                    continue;
                }
                if indent(l) < min_indent && k > from {
                    break;
                }
                let key = t
                    .split_once(':')
                    .map(|(k, _)| k.trim().trim_matches(['"', '\'']));
                if key == Some(seg.as_str()) {
                    hit = Some((k, indent(l) + 1));
                    break;
                }
            }
        }
        match hit {
            Some((k, ind)) => {
                found = Some(k + 1);
                // A list item's own key (`- run: a`) may be the next segment on the same line.
                from = k;
                min_indent = ind;
            }
            None => return found,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_only_name_config_fields() {
        let fields = config_fields();
        for f in [
            "server",
            "api",
            "data_dir",
            "audit",
            "poll_interval",
            "policy",
            "detectors",
            "pager",
            "sources",
            "pagers",
            "routes",
            "default_route",
            "watches",
            "runbooks_dir",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        for not_config in [
            "config",
            "log",
            "token",
            "require_alertmanager",
            "test_pg_url",
        ] {
            assert!(!fields.iter().any(|x| x == not_config));
        }
    }

    #[test]
    fn defaults_need_no_file() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.poll_interval, Duration::from_secs(30));
        assert!(cfg.audit_url().starts_with("sqlite://"));
    }

    #[test]
    fn toml_file_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "poll_interval = \"15s\"\n[policy]\nread_only = true\n").unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.poll_interval, Duration::from_secs(15));
        assert!(cfg.policy.read_only);

        std::fs::write(&p, "poll_intervall = \"15s\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("poll_intervall"), "{err}");
        assert!(err.contains("c.toml"), "{err}");

        std::fs::write(&p, "poll_interval = \"soon\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn api_tokens_are_hashes_with_roles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let hash = token_hash("s3cret");
        std::fs::write(
            &p,
            format!("[api]\nread_open = false\n[[api.tokens]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{hash}\"\n"),
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.api.tokens[0].role, ApiRole::Operator);
        assert!(!cfg.api.read_open);
        std::fs::write(
            &p,
            "[[api.tokens]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"s3cret\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("api.tokens[0].sha256"), "{err}");
        std::fs::write(
            &p,
            "[[api.tokens]]\nname = \"ci\"\nrole = \"root\"\nsha256 = \"x\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("root"), "{err}");
    }

    #[test]
    fn audit_section_parses_and_checks_head_every() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[audit]\nsigning_key_file = \"/k\"\nhead_every = \"10m\"\nheads_file = \"/h.jsonl\"\nretention = \"90d\"\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.audit.head_every, Duration::from_secs(600));
        assert_eq!(cfg.audit.retention, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(cfg.audit.heads_file, Some(PathBuf::from("/h.jsonl")));
        assert_eq!(cfg.audit.signing_key_file, Some(PathBuf::from("/k")));
        assert_eq!(Config::default().audit.retention, None);
        std::fs::write(&p, "[audit]\nhead_every = \"0s\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("audit.head_every"), "{err}");
    }

    #[test]
    fn tokens_file_lines_and_yaml() {
        let h = token_hash("t");
        let toks = parse_tokens_file(
            Path::new("tokens"),
            &format!(
                "# comment\n\n ci : operator : {}\nops:admin:{h}\n",
                h.to_uppercase()
            ),
        )
        .unwrap();
        assert_eq!(
            toks,
            vec![
                ApiToken {
                    name: "ci".into(),
                    role: ApiRole::Operator,
                    sha256: h.clone()
                },
                ApiToken {
                    name: "ops".into(),
                    role: ApiRole::Admin,
                    sha256: h.clone()
                },
            ]
        );
        let err = parse_tokens_file(Path::new("/s/tokens"), "a:root:x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/s/tokens: line 1: role `root`: expected viewer, operator or admin"
        );
        let err = parse_tokens_file(Path::new("t"), "ok:viewer:x\nbad line\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("line 2: expected `name:role:sha256`"),
            "{err}"
        );
        let yaml = format!("- name: ci\n  role: viewer\n  sha256: {h}\n");
        let toks = parse_tokens_file(Path::new("tokens.yaml"), &yaml).unwrap();
        assert_eq!(toks[0].role, ApiRole::Viewer);
        // Through Config::load, validated like inline tokens.
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("tokens");
        std::fs::write(&tf, "ci:operator:nothex\n").unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("[api]\ntokens_file = {:?}\n", tf.display().to_string()),
        )
        .unwrap();
        let err = Config::load(Some(&cfg)).unwrap_err().to_string();
        assert!(err.contains("api.tokens[0].sha256"), "{err}");
    }

    #[test]
    fn yaml_file_with_a_watch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "watches:\n  - run: a\n    target: {kind: simulated, run: a}\n    autonomy: suggest\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.watches[0].autonomy, Autonomy::Suggest);
    }

    #[test]
    fn prometheus_source_and_watch_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            r#"
[sources.prometheus]
url = "http://prom:9090"
step = "30s"
headers = { "X-Scope-OrgID" = "ml" }
bearer_token = "t0ken"

[[watches]]
run = "a"
target = { kind = "simulated", run = "a" }
profile = ["generic", "dcgm"]
charts = { loss = "avg by ($RUN_LABEL) (my_loss{$RUNS})", "step_time" = "" }
"#,
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        let prom = cfg.sources.prometheus.as_ref().unwrap();
        assert_eq!(prom.url, "http://prom:9090");
        assert_eq!(prom.step, Duration::from_secs(30));
        assert_eq!(prom.lookback, Duration::from_secs(1800));
        assert_eq!(prom.headers["X-Scope-OrgID"], "ml");
        assert_eq!(
            prom.bearer_token.as_ref().map(|s| s.expose()),
            Some("t0ken")
        );
        assert!(
            !format!("{cfg:?}").contains("t0ken"),
            "secrets stay out of Debug"
        );
        let w = &cfg.watches[0];
        assert_eq!(w.charts.len(), 2);
        assert!(w.charts[&"step_time".parse::<ChartKey>().unwrap()].is_off());

        std::fs::write(
            &p,
            "[sources.prometheus]\nurl = \"http://p\"\n[[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\nprofile = \"dgcm\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("watches[0]") && err.contains("dgcm"), "{err}");
        std::fs::write(
            &p,
            "[sources.prometheus]\nurl = \"http://p\"\ntimeot = \"1s\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("timeot"), "{err}");
        std::fs::write(
            &p,
            "[sources.prometheus]\nurl = \"http://p\"\nstep = \"0s\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("sources.prometheus.step"), "{err}");
    }

    #[test]
    fn named_pagers_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let base = r#"
default_route = "ml-oncall"
[pagers.oncall-pd]
kind = "pagerduty"
routing_key = { env = "BABYSITTER_TEST_PD_KEY_UNSET" }
url = "http://127.0.0.1:1"
[pagers.oncall-pd.delivery]
attempts = 3
backoff = "200ms"
[pagers.slack-ml]
kind = "slack"
webhook_url = "https://hooks.slack.com/services/T/B/SECRETPART"
[pagers.am]
kind = "alertmanager"
url = "http://127.0.0.1:9093"
labels = { team = "ml" }
[routes]
ml-oncall = ["oncall-pd", "slack-ml"]
"#;
        std::fs::write(&p, base).unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.routes["ml-oncall"], vec!["oncall-pd", "slack-ml"]);
        let PagerConfig::PagerDuty(pd) = &cfg.pagers["oncall-pd"] else {
            panic!("{:?}", cfg.pagers)
        };
        assert_eq!(pd.delivery.attempts, 3);
        assert_eq!(pd.delivery.backoff, Duration::from_millis(200));
        assert_eq!(pd.delivery.timeout, Duration::from_secs(10));
        assert_eq!(
            pd.routing_key,
            Secret::Env("BABYSITTER_TEST_PD_KEY_UNSET".into())
        );
        let err = pd
            .routing_key
            .expose("pagers.oncall-pd.routing_key")
            .unwrap_err();
        assert!(
            err.to_string().contains("pagers.oncall-pd.routing_key"),
            "{err}"
        );
        // Secrets stay out of Debug output.
        assert!(!format!("{cfg:?}").contains("SECRETPART"));
        assert_eq!(cfg.pagers["am"].kind(), "alertmanager");

        // An unknown field inside a pager is named.
        std::fs::write(&p, base.replace("labels = {", "lables = {")).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("lables"), "{err}");

        // An unknown kind is named.
        std::fs::write(&p, base.replace("kind = \"slack\"", "kind = \"pigeon\"")).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("pigeon"), "{err}");

        // A route naming an undeclared pager.
        std::fs::write(&p, base.replace("\"slack-ml\"]", "\"slack-mx\"]")).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("routes.ml-oncall[1]"), "{err}");

        // Without a default route, a watch's route must reach a pager.
        let no_default = base.replace("default_route = \"ml-oncall\"", "")
            + "[[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\n";
        std::fs::write(&p, &no_default).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("watches[0].route"), "{err}");
        std::fs::write(
            &p,
            no_default.replace("run = \"a\"\n", "run = \"a\"\nroute = \"am\"\n"),
        )
        .unwrap();
        assert!(Config::load(Some(&p)).is_ok());

        // A bad URL is named.
        std::fs::write(&p, base.replace("http://127.0.0.1:9093", "not a url")).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("pagers.am.url"), "{err}");
    }

    #[test]
    fn the_single_pager_form_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "pager = { kind = \"console\" }\n").unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().pager, PagerConfig::Console);
        std::fs::write(
            &p,
            "[pager]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"k\"\n",
        )
        .unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().pager.kind(), "webhook");
    }

    #[test]
    fn yaml_pagers_with_env_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "pagers:\n  hook:\n    kind: webhook\n    url: http://127.0.0.1:1/h\n    secret: {env: HOOK_SECRET_UNSET_IN_TESTS}\n    delivery: {attempts: 2}\nroutes:\n  default: [hook]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        let PagerConfig::Webhook(w) = &cfg.pagers["hook"] else {
            panic!("{:?}", cfg.pagers)
        };
        assert_eq!(w.secret, Secret::Env("HOOK_SECRET_UNSET_IN_TESTS".into()));
        assert_eq!(w.delivery.attempts, 2);
        assert_eq!(w.delivery.redeliver_every, Duration::from_secs(60));

        std::fs::write(&p, "pagers:\n  hook:\n    kind: webhook\n    url: http://127.0.0.1:1/h\n    secret: {vault: x}\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("env = \"VARIABLE\""), "{err}");
    }

    #[test]
    fn kubernetes_section_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let base = "[sources.prometheus]\nurl = \"http://p\"\n[kubernetes]\nenabled = true\nnamespaces = [\"ml\", \"research\"]\nlease_duration = \"20s\"\nidentity = \"pod-a\"\n";
        std::fs::write(&p, base).unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        let k = &cfg.kubernetes;
        assert!(k.enabled);
        assert_eq!(k.namespaces, vec!["ml", "research"]);
        assert_eq!(k.lease_duration, Duration::from_secs(20));
        assert_eq!(k.lease_renew_before, Duration::from_secs(5));
        assert_eq!(k.default_autonomy, Autonomy::Suggest);
        assert_eq!(k.identity().unwrap(), "pod-a");
        assert_eq!(k.lease_name, "babysitter-leader");
        // Off by default, and then nothing is checked.
        assert!(!Config::default().kubernetes.enabled);

        let bad = |text: String, field: &str| {
            std::fs::write(&p, text).unwrap();
            let err = Config::load(Some(&p)).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        };
        bad(
            base.replace("\"ml\",", "\"ML\","),
            "kubernetes.namespaces[0]",
        );
        bad(
            base.replace("\"research\"", "\"ml\""),
            "kubernetes.namespaces[1]",
        );
        bad(
            base.replace("\"20s\"", "\"1500ms\""),
            "kubernetes.lease_duration",
        );
        bad(
            base.replace("\"20s\"", "\"5s\""),
            "kubernetes.lease_renew_before",
        );
        bad(
            format!("{base}lease_name = \"Bad_Name\"\n"),
            "kubernetes.lease_name",
        );
        bad(format!("{base}leese = 1\n"), "leese");
        bad(
            base.replace("[sources.prometheus]\nurl = \"http://p\"\n", ""),
            "[sources.prometheus]",
        );
        bad(
            format!("{base}default_autonomy = \"act\"\nmax_autonomy = \"observe\"\n"),
            "kubernetes.default_autonomy",
        );
    }

    fn check_text(name: &str, text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (_, issues) = Config::check_file(Some(&p));
        let prefix = format!("{}:", p.display());
        issues
            .iter()
            .map(|i| i.to_string().replacen(&prefix, "", 1))
            .collect()
    }

    #[test]
    fn check_reports_every_error_of_a_toml_file_with_its_line() {
        let text = "poll_intervall = \"15s\"\nretention = \"soon\"\n\n[policy]\nread_only = true\ncolour = \"red\"\n\n\
                    [sources.prometheus]\nurl = \"http://prom:9090\"\n\n\
                    [[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\nautonomy = \"wild\"\n\n\
                    [[watches]]\nrun = \"b\"\ntarget = { kind = \"simulated\", run = \"b\" }\nprofile = \"nvidia\"\n\
                    charts = { loss = \"max by ($RUN_LABEL) (training_loss{$RUNS}\" }\n";
        let issues = check_text("c.toml", text);
        assert_eq!(
            issues,
            [
                "1: poll_intervall: unknown field `poll_intervall`, expected one of `server`, `api`, `data_dir`, `audit`, `poll_interval`, `blind_page_after`, `retention`, `runbooks_dir`, `checks`, `policy`, `detectors`, `pager`, `sources`, `pagers`, `routes`, `default_route`, `paging`, `watches`, `kubernetes`, `agent`",
                "2: retention: invalid duration `soon` (expected number at 0); write e.g. \"90s\", \"10m\", \"1h\"",
                "6: policy.colour: unknown field `colour`, expected one of `read_only`, `modes`, `limits`, `cooldowns`, `maintenance`",
                "14: watches[0].autonomy: unknown variant `wild`, expected one of `observe`, `suggest`, `act`",
                "19: watches[1].profile: unknown profile `nvidia` (known: generic, dcgm, kube_state_metrics)",
                "20: watches[1].charts.loss: the PromQL does not parse: unclosed left parenthesis",
            ]
        );
    }

    #[test]
    fn check_reports_every_error_of_a_yaml_file_with_its_line() {
        let text = "poll_interval: 3x\npagers:\n  pd:\n    kind: pagerduty\n    routing_key: k\n\
                    watches:\n  - run: a\n    target: {kind: simulated, run: a}\n    route: nowhere\n\
                    \x20 - run: b\n    target: {kind: teleport, run: b}\n    bogus: 1\n";
        let issues = check_text("c.yaml", text);
        assert_eq!(
            issues,
            [
                "1: poll_interval: invalid duration `3x` (unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write e.g. \"90s\", \"10m\", \"1h\"",
                "9: watches[0].route: `nowhere` is neither a route nor a pager, and no default_route is set",
                "11: watches[1].target.kind: unknown variant `teleport`, expected one of `simulated`, `kubernetes`",
                "12: watches[1].bogus: unknown field `bogus`, expected one of `run`, `target`, `autonomy`, `route`, `runbooks`, `detectors`, `profile`, `charts`",
            ]
        );
    }

    #[test]
    fn check_reads_the_tokens_file_like_start_up() {
        let issues = check_text(
            "c.toml",
            "[api]\nread_open = false\ntokens_file = \"/nonexistent/tokens\"\n",
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].starts_with("3: api.tokens_file: /nonexistent/tokens: "),
            "{issues:?}"
        );
    }

    fn vars(list: &[(&str, &str)]) -> Vec<EnvVar> {
        env_overrides(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn load_reports_every_error_with_its_line_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "poll_interval = \"fast\"\n\n[policy]\nread_only = true\ncolour = \"red\"\n\n\
             [[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\n\n\
             [[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"b\" }\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err();
        let ConfigError::Issues(issues) = &err else {
            panic!("{err:?}")
        };
        let file = p.display().to_string();
        let lines: Vec<(Option<usize>, &str)> =
            issues.iter().map(|i| (i.line, i.field.as_str())).collect();
        assert_eq!(
            lines,
            [
                (Some(1), "poll_interval"),
                (Some(5), "policy.colour"),
                (Some(12), "watches[1].run"),
            ]
        );
        assert!(issues.iter().all(|i| i.file.as_deref() == Some(&file)));
        assert_eq!(issues[2].message, "`a` is watched twice");
        // One per line, as `babysitter check` prints them.
        let text = err.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with(&format!("{file}:5: policy.colour: unknown field"))),
            "{text}"
        );
        // The same issues as `check`.
        assert_eq!(Config::check_file(Some(&p)).1, *issues);
    }

    #[test]
    fn validation_reports_every_section_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "poll_interval: 0s\nchecks:\n  concurrency: 0\naudit:\n  head_every: 10ms\n",
        )
        .unwrap();
        let issues = Config::load(Some(&p)).unwrap_err().issues();
        let got: Vec<(Option<usize>, &str)> =
            issues.iter().map(|i| (i.line, i.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "poll_interval"),
                (Some(3), "checks.concurrency"),
                (Some(5), "audit.head_every"),
            ]
        );
    }

    #[test]
    fn environment_overrides_apply_and_their_errors_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "poll_interval = \"soon\"\nretention = \"2h\"\n").unwrap();
        // A variable overrides the file, a bad file value included.
        let (cfg, issues) = Config::check_with_env(
            Some(&p),
            vars(&[
                ("BABYSITTER_POLL_INTERVAL", "15s"),
                ("BABYSITTER_POLICY__READ_ONLY", "true"),
                ("babysitter_checks__concurrency", "8"),
                // Not config fields: left to the CLI.
                ("BABYSITTER_CONFIG", "/elsewhere.toml"),
                ("BABYSITTER_TOKEN", "x"),
            ]),
        );
        assert_eq!(issues, []);
        let cfg = cfg.unwrap();
        assert_eq!(cfg.poll_interval, Duration::from_secs(15));
        assert_eq!(cfg.retention, Duration::from_secs(2 * 3600));
        assert!(cfg.policy.read_only);
        assert_eq!(cfg.checks.concurrency, 8);

        let (cfg, issues) = Config::check_with_env(
            Some(&p),
            vars(&[
                ("BABYSITTER_RETENTION", "later"),
                ("BABYSITTER_POLICY__COLOUR", "red"),
                ("BABYSITTER_CHECKS__TIMEOUT", "5m"),
            ]),
        );
        let shown: Vec<String> = issues.iter().map(ToString::to_string).collect();
        let file = p.display().to_string();
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(
            shown[0].starts_with(&format!("{file}:1: poll_interval: invalid duration `soon`")),
            "{shown:#?}"
        );
        assert!(
            shown[1..].iter().any(|s| s.starts_with(
                "environment variable BABYSITTER_RETENTION: retention: invalid duration `later`"
            )),
            "{shown:#?}"
        );
        assert!(
            shown[1..].iter().any(|s| s.starts_with(
                "environment variable BABYSITTER_POLICY__COLOUR: policy.colour: unknown field `colour`"
            )),
            "{shown:#?}"
        );
        assert!(
            shown[1..].contains(
                &"environment variable BABYSITTER_CHECKS__TIMEOUT: checks.timeout: must be above 0 and at most 1m (got 5m)"
                    .to_string()
            ),
            "{shown:#?}"
        );
        // The file's retention stands once the bad variable is taken out.
        assert_eq!(
            cfg.map(|c| c.retention),
            Some(Duration::from_secs(2 * 3600))
        );

        // Without a file, too.
        let (_, issues) = Config::check_with_env(None, vars(&[("BABYSITTER_POLL_INTERVAL", "0s")]));
        assert_eq!(
            issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["environment variable BABYSITTER_POLL_INTERVAL: poll_interval: must be positive"]
        );
    }

    #[test]
    fn check_limits_come_from_the_checks_section() {
        // Unset: the defaults the engine always had.
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.check_limits(), crate::runbook::CheckLimits::DEFAULT);
        assert_eq!(
            cfg.check_limits(),
            crate::runbook::CheckLimits {
                timeout: Duration::from_secs(5),
                concurrency: 4
            }
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[checks]\ntimeout = \"1500ms\"\nconcurrency = 2\n").unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(
            cfg.check_limits(),
            crate::runbook::CheckLimits {
                timeout: Duration::from_millis(1500),
                concurrency: 2
            }
        );
        // The bounds are accepted.
        std::fs::write(&p, "[checks]\ntimeout = \"60s\"\nconcurrency = 64\n").unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.check_limits().timeout, Duration::from_secs(60));
        assert_eq!(cfg.check_limits().concurrency, 64);

        let bad = |text: &str, line: usize, field: &str, message: &str| {
            std::fs::write(&p, text).unwrap();
            let issues = Config::load(Some(&p)).unwrap_err().issues();
            assert_eq!(
                issues
                    .iter()
                    .map(|i| (i.line, i.field.as_str(), i.message.as_str()))
                    .collect::<Vec<_>>(),
                [(Some(line), field, message)],
                "{text}"
            );
        };
        bad(
            "[checks]\ntimeout = \"0s\"\n",
            2,
            "checks.timeout",
            "must be above 0 and at most 1m (got 0s)",
        );
        bad(
            "[checks]\ntimeout = \"61s\"\n",
            2,
            "checks.timeout",
            "must be above 0 and at most 1m (got 1m 1s)",
        );
        bad(
            "[checks]\nconcurrency = 0\n",
            2,
            "checks.concurrency",
            "must be 1 to 64 (got 0)",
        );
        bad(
            "poll_interval = \"10s\"\n[checks]\ntimeout = \"2s\"\nconcurrency = 65\n",
            4,
            "checks.concurrency",
            "must be 1 to 64 (got 65)",
        );
        std::fs::write(&p, "[checks]\nconcurrency = -1\n").unwrap();
        let issues = Config::load(Some(&p)).unwrap_err().issues();
        assert_eq!(
            (issues[0].line, issues[0].field.as_str()),
            (Some(2), "checks.concurrency")
        );
        std::fs::write(&p, "[checks]\ntimout = \"2s\"\n").unwrap();
        let issues = Config::load(Some(&p)).unwrap_err().issues();
        assert_eq!(
            (issues[0].line, issues[0].field.as_str()),
            (Some(2), "checks.timout")
        );
    }

    #[test]
    fn toml_dates_read_as_rfc3339() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[[policy.maintenance]]\nstart = 2026-11-04T00:00:00Z\nend = \"2026-11-04T02:00:00Z\"\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        assert_eq!(cfg.policy.maintenance[0].start, 1_793_750_400.0);
        assert_eq!(cfg.policy.maintenance[0].end, 1_793_757_600.0);
    }

    #[test]
    fn a_good_file_has_no_issues() {
        assert_eq!(
            check_text(
                "c.toml",
                "poll_interval = \"15s\"\n[[watches]]\nrun = \"a\"\ntarget = { kind = \"simulated\", run = \"a\" }\n"
            ),
            Vec::<String>::new()
        );
    }
}
