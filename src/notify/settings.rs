//! `[paging]`: how babysitter pages over time (re-notifying an approval nobody answers) and how
//! it takes alerts from Alertmanager's webhook (which label names the run, which bearer token
//! Alertmanager presents, whether enriched alerts are forwarded to the pagers).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    /// An approval still unanswered this long after its page is paged again (same dedup key,
    /// so still one open page per incident).
    #[serde(with = "duration")]
    pub renotify_after: Duration,
    /// At most this many re-notifications per pending approval (0: never re-notify).
    pub renotify_max: u32,
    /// The label of an incoming alert that names the watched run (`run`); `job` and `pod` are
    /// matched against each watch's target as well.
    pub alert_run_label: String,
    /// SHA-256 (hex) of a bearer token Alertmanager may present on
    /// `POST /api/v1/alerts/alertmanager` (`http_config.authorization.credentials`) instead of
    /// an operator token. It grants that endpoint only.
    pub alert_token_sha256: Option<String>,
    /// Forward enriched alerts about watched runs to the watch's pagers.
    pub forward_alerts: bool,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            renotify_after: Duration::from_secs(30 * 60),
            renotify_max: 3,
            alert_run_label: "run".into(),
            alert_token_sha256: None,
            forward_alerts: true,
        }
    }
}

impl PagingConfig {
    /// Checks the values; errors name the field (`paging.…`).
    pub fn validate(&self) -> Result<(), String> {
        if self.renotify_max > 0 && self.renotify_after < Duration::from_secs(1) {
            return Err("paging.renotify_after: at least 1s (or set renotify_max = 0)".into());
        }
        let l = &self.alert_run_label;
        let mut chars = l.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "paging.alert_run_label: `{l}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        if let Some(h) = &self.alert_token_sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(
                "paging.alert_token_sha256: 64 hex digits expected (printf %s \"$TOKEN\" | sha256sum)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(PagingConfig::default().validate().is_ok());
        let bad = PagingConfig {
            alert_run_label: "run-name".into(),
            ..PagingConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("paging.alert_run_label")
        );
        let bad = PagingConfig {
            alert_token_sha256: Some("abc".into()),
            ..PagingConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("paging.alert_token_sha256")
        );
        let bad = PagingConfig {
            renotify_after: Duration::ZERO,
            ..PagingConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("paging.renotify_after")
        );
        let off = PagingConfig {
            renotify_after: Duration::ZERO,
            renotify_max: 0,
            ..PagingConfig::default()
        };
        assert!(off.validate().is_ok());
    }
}
