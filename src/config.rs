//! Config: typed settings with defaults, read from TOML or YAML plus `BABYSITTER_*` environment
//! overrides. `demo` needs no file at all.
//!
//! Environment overrides use `__` between levels: `BABYSITTER_POLICY__READ_ONLY=true`,
//! `BABYSITTER_SERVER__LISTEN=0.0.0.0:8080`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
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
    /// How much chart history is kept in memory per run.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// A folder of runbooks (`*.md`). Unset: `./runbooks` if it exists, else the built-in set.
    pub runbooks_dir: Option<PathBuf>,
    pub policy: PolicyConfig,
    pub detectors: DetectorParams,
    pub pager: PagerConfig,
    /// Where charts come from. No source configured: the built-in simulator.
    pub sources: SourcesConfig,
    pub watches: Vec<WatchConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            api: ApiConfig::default(),
            data_dir: PathBuf::from("babysitter-data"),
            audit: AuditConfig::default(),
            poll_interval: Duration::from_secs(30),
            retention: Duration::from_secs(6 * 3600),
            runbooks_dir: None,
            policy: PolicyConfig::default(),
            detectors: DetectorParams::default(),
            pager: PagerConfig::default(),
            sources: SourcesConfig::default(),
            watches: Vec::new(),
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            read_open: true,
            tokens: Vec::new(),
        }
    }
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// `sqlite://PATH` or `postgres://…`. Unset: `sqlite://<data_dir>/audit.db`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PagerConfig {
    /// Print pages on the terminal (the demo).
    #[default]
    Console,
}

/// `[sources]`: metrics sources. Only one kind so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// `[sources.prometheus]`: read charts from a Prometheus-compatible API.
    pub prometheus: Option<PrometheusConfig>,
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file (TOML, or YAML by extension), then `BABYSITTER_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            );
            if is_yaml {
                let value: serde_json::Value =
                    serde_saphyr::from_str(&text).map_err(|e| ConfigError::File {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                fig = fig.merge(Serialized::defaults(value));
            } else {
                fig = fig.merge(Toml::string(&text));
            }
        }
        fig = fig.merge(Env::prefixed("BABYSITTER_").split("__"));
        let cfg: Config = fig.extract().map_err(|e| {
            let message = e
                .clone()
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            match path {
                Some(p) => ConfigError::File {
                    path: p.display().to_string(),
                    message,
                },
                None => ConfigError::Invalid(message),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, w) in self.watches.iter().enumerate() {
            if w.run.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "watches[{i}].run: must not be empty"
                )));
            }
            if !seen.insert(w.run.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "watches[{i}].run: `{}` is watched twice",
                    w.run
                )));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "api.tokens[{i}].name: must be a unique, non-empty name"
                )));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "api.tokens[{i}].sha256: 64 hex digits expected (printf %s \"$TOKEN\" | sha256sum)"
                )));
            }
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "poll_interval: must be positive".into(),
            ));
        }
        self.policy
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.detectors
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(p) = &self.sources.prometheus {
            crate::sources::prometheus::validate(p)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            for (i, w) in self.watches.iter().enumerate() {
                let sel = w.profile.as_ref().unwrap_or(&p.default_profile);
                crate::sources::prometheus::profile::resolve(sel, &w.charts).map_err(|e| {
                    ConfigError::Invalid(format!("watches[{i}] (run `{}`): {e}", w.run))
                })?;
            }
        }
        for (i, w) in self.watches.iter().enumerate() {
            if let Some(d) = &w.detectors {
                d.validate()
                    .map_err(|e| ConfigError::Invalid(format!("watches[{i}].{e}")))?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
