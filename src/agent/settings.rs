//! The `[agent]` section of the configuration: where the model is, how to authenticate, and the
//! budgets of one investigation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The environment variable read for the API key when neither `api_key_env` nor `api_key_file`
/// is set.
pub const DEFAULT_KEY_ENV: &str = "BABYSITTER_AGENT_API_KEY";

/// `[agent]`: the optional LLM investigator. Absent: no agent, babysitter works exactly as
/// without one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Base URL of an OpenAI-compatible API, up to and including the version
    /// (`https://api.openai.com/v1`, `http://localhost:11434/v1` for Ollama,
    /// `http://vllm:8000/v1`). Requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Environment variable holding the API key (default `BABYSITTER_AGENT_API_KEY`; unset
    /// variable and no file: requests carry no `Authorization`, as local servers expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A file holding the API key (a mounted Kubernetes Secret); wins over the variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Model calls per investigation.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Tokens per investigation, summed from each response's `usage.total_tokens`.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// Wall time per investigation.
    #[serde(default = "default_max_wall", with = "crate::config::duration")]
    pub max_wall: Duration,
    /// Wall time per model call (within `max_wall`).
    #[serde(default = "default_request_timeout", with = "crate::config::duration")]
    pub request_timeout: Duration,
    /// Sampling temperature sent to the model (0: as repeatable as the server allows).
    #[serde(default)]
    pub temperature: f64,
    /// Replace run, namespace, workload and pod names by placeholders before anything is sent.
    #[serde(default)]
    pub redact: bool,
    /// How much of each chart the model gets up front.
    #[serde(default = "default_chart_window", with = "crate::config::duration")]
    pub chart_window: Duration,
    /// At most this many points per chart up front (evenly thinned, newest kept).
    #[serde(default = "default_chart_points")]
    pub chart_points: usize,
    /// A tool's output is cut to this many characters before it is sent.
    #[serde(default = "default_tool_output_chars")]
    pub max_tool_output_chars: usize,
    /// Investigations running at once (more wait their turn).
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
}

fn default_max_steps() -> u32 {
    8
}
fn default_max_tokens() -> u64 {
    60_000
}
fn default_max_wall() -> Duration {
    Duration::from_secs(180)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_chart_window() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_chart_points() -> usize {
    40
}
fn default_tool_output_chars() -> usize {
    8_000
}
fn default_concurrency() -> usize {
    2
}

/// A bad `[agent]` section; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("agent.{field}: {message}")]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        field,
        message: message.into(),
    }
}

impl AgentConfig {
    /// Settings with every default, for this endpoint and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> AgentConfig {
        AgentConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            api_key_file: None,
            max_steps: default_max_steps(),
            max_tokens: default_max_tokens(),
            max_wall: default_max_wall(),
            request_timeout: default_request_timeout(),
            temperature: 0.0,
            redact: false,
            chart_window: default_chart_window(),
            chart_points: default_chart_points(),
            max_tool_output_chars: default_tool_output_chars(),
            max_concurrent: default_concurrency(),
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "base_url",
                format!("`{url}` is not an http(s) URL (e.g. http://localhost:11434/v1)"),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(bad("model", "must not be empty"));
        }
        if self.max_steps == 0 {
            return Err(bad("max_steps", "must be at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(bad("max_tokens", "must be at least 1"));
        }
        if self.max_wall.is_zero() {
            return Err(bad("max_wall", "must be positive"));
        }
        if self.request_timeout.is_zero() {
            return Err(bad("request_timeout", "must be positive"));
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(bad("temperature", "must be between 0 and 2"));
        }
        if self.chart_points < 2 {
            return Err(bad("chart_points", "must be at least 2"));
        }
        if self.max_tool_output_chars < 256 {
            return Err(bad("max_tool_output_chars", "must be at least 256"));
        }
        if self.max_concurrent == 0 {
            return Err(bad("max_concurrent", "must be at least 1"));
        }
        Ok(())
    }

    /// The API key: the file if one is configured, else the variable; `None` when neither is
    /// set (local servers need no key). A configured file that cannot be read is an error, so a
    /// missing Secret mount is noticed at start-up, not at the first incident.
    pub fn api_key(&self) -> Result<Option<String>, SettingsError> {
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                bad(
                    "api_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let key = text.trim().to_string();
            if key.is_empty() {
                return Err(bad("api_key_file", format!("{} is empty", path.display())));
            }
            return Ok(Some(key));
        }
        let var = self.api_key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
            Ok(_) => Err(bad("api_key_env", format!("`{var}` is set but empty"))),
            Err(_) if self.api_key_env.is_some() => Err(bad(
                "api_key_env",
                format!("environment variable `{var}` is not set"),
            )),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        let c = AgentConfig::new("http://localhost:11434/v1", "qwen2.5");
        assert_eq!(c.validate(), Ok(()));
        let mut b = c.clone();
        b.base_url = "localhost:11434".into();
        assert_eq!(b.validate().unwrap_err().field, "base_url");
        let mut b = c.clone();
        b.max_steps = 0;
        assert_eq!(b.validate().unwrap_err().field, "max_steps");
        let mut b = c.clone();
        b.model = " ".into();
        assert_eq!(b.validate().unwrap_err().field, "model");
    }

    #[test]
    fn key_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-secret\n").unwrap();
        let mut c = AgentConfig::new("http://x/v1", "m");
        c.api_key_file = Some(path.clone());
        assert_eq!(c.api_key().unwrap().as_deref(), Some("sk-secret"));
        c.api_key_file = Some(dir.path().join("missing"));
        let e = c.api_key().unwrap_err();
        assert_eq!(e.field, "api_key_file");
        assert!(e.message.contains("missing"), "{e}");
    }

    #[test]
    fn named_variable_must_exist() {
        let mut c = AgentConfig::new("http://x/v1", "m");
        c.api_key_env = Some("BABYSITTER_TEST_AGENT_KEY_SURELY_UNSET".into());
        assert_eq!(c.api_key().unwrap_err().field, "api_key_env");
    }

    #[test]
    fn config_file_section_loads_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[agent]\nbase_url = \"http://localhost:11434/v1\"\nmodel = \"qwen2.5:7b\"\nmax_steps = 5\n",
        )
        .unwrap();
        let cfg = crate::config::Config::load(Some(&path)).unwrap();
        let a = cfg.agent.unwrap();
        assert_eq!(a.model, "qwen2.5:7b");
        assert_eq!(a.max_steps, 5);
        std::fs::write(
            &path,
            "[agent]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nmax_steps = 0\n",
        )
        .unwrap();
        let e = crate::config::Config::load(Some(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.max_steps"), "{e}");
        assert!(crate::config::Config::default().agent.is_none());
    }

    #[test]
    fn toml_section_parses_with_defaults() {
        let c: AgentConfig = toml::from_str(
            "base_url = \"http://vllm:8000/v1\"\nmodel = \"llama\"\nmax_wall = \"90s\"\nredact = true\n",
        )
        .unwrap();
        assert_eq!(c.max_wall, Duration::from_secs(90));
        assert!(c.redact);
        assert_eq!(c.max_steps, 8);
        assert!(
            toml::from_str::<AgentConfig>("base_url = \"x\"\nmodel = \"m\"\nmax_step = 3\n")
                .is_err()
        );
    }
}
