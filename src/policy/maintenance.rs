//! Maintenance windows: periods (a cluster upgrade, a planned node drain, a storage migration)
//! during which babysitter must not change a workload on its own. Inside a window every
//! workload-mutating action needs a human's approval; reading, annotating and paging go on.
//!
//! Times are written either as Unix seconds (`start = 1793500000`) or as RFC 3339 text with an
//! offset (`start = "2026-11-03T02:00:00Z"`; in TOML also the bare datetime
//! `start = 2026-11-03T02:00:00Z`). They are kept as Unix seconds, the unit of babysitter's clock.

use serde::{Deserialize, Serialize};

/// A period during which workload-mutating actions need approval.
///
/// The window is half-open: it covers `start <= now < end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Unix seconds at which the window opens.
    #[serde(with = "unix_time")]
    pub start: f64,
    /// Unix seconds at which the window closes; must be after `start`.
    #[serde(with = "unix_time")]
    pub end: f64,
    /// Why (quoted in every decision the window causes), e.g. "cluster upgrade CHG-1234".
    #[serde(default)]
    pub reason: String,
}

impl MaintenanceWindow {
    /// Is `now` inside the window?
    pub fn contains(&self, now: f64) -> bool {
        self.start <= now && now < self.end
    }
}

/// Formats Unix seconds for a human: RFC 3339 in UTC, or the raw number if it is no date.
pub fn format_unix(t: f64) -> String {
    if t.is_finite()
        && let Some(dt) = chrono::DateTime::from_timestamp(t.floor() as i64, 0)
    {
        return dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    }
    format!("t={t}")
}

/// Serde for a point in time written as Unix seconds or RFC 3339 text.
pub mod unix_time {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Whole seconds are written as RFC 3339 (readable, and exact); fractional ones as a number
    /// so that a round trip gives back the same value.
    pub fn serialize<S: Serializer>(t: &f64, s: S) -> Result<S::Ok, S::Error> {
        if t.fract() == 0.0
            && let Some(dt) = chrono::DateTime::from_timestamp(*t as i64, 0)
        {
            return s.collect_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        s.serialize_f64(*t)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
        /// A native TOML datetime (`start = 2026-11-03T02:00:00Z`): the `toml` crate hands it to
        /// serde as a one-field map under this private key.
        TomlDatetime {
            #[serde(rename = "$__toml_private_datetime")]
            value: String,
        },
    }

    /// Parses RFC 3339 text (with an offset) into Unix seconds.
    pub fn parse(raw: &str) -> Result<f64, String> {
        let dt = chrono::DateTime::parse_from_rfc3339(raw.trim()).map_err(|e| {
            format!(
                "invalid time `{raw}` ({e}); write RFC 3339 with an offset, e.g. \
                 \"2026-11-03T02:00:00Z\", or Unix seconds"
            )
        })?;
        Ok(dt.timestamp() as f64 + f64::from(dt.timestamp_subsec_nanos()) / 1e9)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a time: Unix seconds or RFC 3339 text such as \"2026-11-03T02:00:00Z\"",
            )
        })?;
        match raw {
            Raw::Secs(x) if x.is_finite() => Ok(x),
            Raw::Secs(x) => Err(serde::de::Error::custom(format!("invalid time {x}"))),
            Raw::Text(t) | Raw::TomlDatetime { value: t } => {
                parse(&t).map_err(serde::de::Error::custom)
            }
        }
    }
}
