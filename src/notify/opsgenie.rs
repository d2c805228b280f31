//! Opsgenie Alert API (optional; Opsgenie's API is being retired, support ends 2027-04-05):
//! a trigger creates an alert whose `alias` is the dedup key (`POST /v2/alerts`; Opsgenie
//! deduplicates open alerts by alias), acknowledge and resolve act on it by alias
//! (`POST /v2/alerts/{alias}/acknowledge|close?identifierType=alias`). Every call answers 202.
//! A reminder (`Page::reminder > 0`) closes the open alert and creates it again, since a
//! create on an open alias only bumps its count.

use async_trait::async_trait;
use serde::Serialize;

use super::http::{Delivery, truncate};
use super::{Page, PageAction, PageError, Pager};
use crate::config::OpsgenieConfig;
use crate::detect::Severity;

/// Opsgenie's field limits.
pub const MESSAGE_MAX: usize = 130;
pub const ALIAS_MAX: usize = 512;
pub const DESCRIPTION_MAX: usize = 15000;

pub struct OpsgeniePager {
    name: String,
    base: reqwest::Url,
    api_key: String,
    tags: Vec<String>,
    delivery: Delivery,
}

impl std::fmt::Debug for OpsgeniePager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsgeniePager")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CreateAlert {
    pub message: String,
    pub alias: String,
    pub description: String,
    pub priority: &'static str,
    pub tags: Vec<String>,
    pub details: serde_json::Map<String, serde_json::Value>,
    pub entity: String,
    pub source: &'static str,
}

pub fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "P1",
        Severity::Error => "P2",
        Severity::Warning => "P3",
        Severity::Info => "P5",
    }
}

impl OpsgeniePager {
    pub fn new(name: &str, cfg: &OpsgenieConfig) -> Result<OpsgeniePager, PageError> {
        OpsgeniePager::new_at(name, &format!("pagers.{name}"), cfg)
    }

    /// Like `new`; errors name fields under the config path `at` (`pager` for the single pager).
    pub fn new_at(name: &str, at: &str, cfg: &OpsgenieConfig) -> Result<OpsgeniePager, PageError> {
        let api_key =
            cfg.api_key
                .expose(&format!("{at}.api_key"))
                .map_err(|e| PageError::Config {
                    pager: name.to_string(),
                    message: e.to_string(),
                })?;
        let base = reqwest::Url::parse(&cfg.url).map_err(|e| PageError::Config {
            pager: name.to_string(),
            message: format!("{at}.url: {e}"),
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(PageError::Config {
                pager: name.to_string(),
                message: format!("{at}.url: `{base}` is not an http(s) base URL"),
            });
        }
        Ok(OpsgeniePager {
            name: name.to_string(),
            base,
            api_key,
            tags: cfg.tags.clone(),
            delivery: Delivery::new(name, &cfg.delivery)?,
        })
    }

    pub fn create(&self, page: &Page) -> CreateAlert {
        let mut details = page.details_object();
        details.insert("run".into(), page.run.clone().into());
        details.insert("incident".into(), page.incident.clone().into());
        details.insert("route".into(), page.route.clone().into());
        let mut description = page.summary.clone();
        for (k, v) in &page.details {
            description.push_str(&format!("\n{k}: {v}"));
        }
        if let Some(c) = &page.approve_command {
            description.push_str(&format!("\n\napprove: {c}"));
        }
        if let Some(c) = &page.reject_command {
            description.push_str(&format!("\nreject: {c}"));
        }
        for l in &page.links {
            description.push_str(&format!("\n{l}"));
        }
        let mut tags = self.tags.clone();
        tags.push("babysitter".into());
        tags.push(format!("run:{}", page.run));
        CreateAlert {
            message: truncate(&page.summary, MESSAGE_MAX),
            alias: truncate(&page.dedup_key, ALIAS_MAX),
            description: truncate(&description, DESCRIPTION_MAX),
            priority: priority(page.severity),
            tags,
            details,
            entity: page.run.clone(),
            source: "babysitter",
        }
    }

    /// `{base}/v2/alerts[/{alias}/{verb}]`, the alias percent-encoded as one path segment.
    pub fn url(&self, alias_verb: Option<(&str, &str)>) -> Result<reqwest::Url, PageError> {
        let mut url = self.base.clone();
        {
            let mut seg = url.path_segments_mut().map_err(|_| PageError::Config {
                pager: self.name.clone(),
                message: format!("`{}` cannot be a base URL", self.base),
            })?;
            seg.pop_if_empty().extend(["v2", "alerts"]);
            if let Some((alias, verb)) = alias_verb {
                seg.push(alias).push(verb);
            }
        }
        if alias_verb.is_some() {
            url.set_query(Some("identifierType=alias"));
        }
        Ok(url)
    }
}

#[async_trait]
impl Pager for OpsgeniePager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let alias = truncate(&page.dedup_key, ALIAS_MAX);
        if page.action == PageAction::Trigger && page.reminder > 0 {
            // Opsgenie only counts a create on an open alias: close it, then create it again.
            let url = self.url(Some((&alias, "close")))?;
            let body = serde_json::json!({"source": "babysitter", "note": format!("reminder {} follows", page.reminder)});
            let auth = format!("GenieKey {}", self.api_key);
            let what = format!("close before reminder {} {}", page.reminder, page.dedup_key);
            self.delivery
                .send(&what, |c| {
                    c.post(url.clone())
                        .header(reqwest::header::AUTHORIZATION, &auth)
                        .json(&body)
                })
                .await?;
        }
        let (url, body) = match page.action {
            PageAction::Trigger => (
                self.url(None)?,
                serde_json::to_value(self.create(page)).map_err(|e| PageError::Delivery {
                    pager: self.name.clone(),
                    message: format!("encoding the alert: {e}"),
                })?,
            ),
            PageAction::Acknowledge | PageAction::Resolve => {
                let verb = if page.action == PageAction::Resolve {
                    "close"
                } else {
                    "acknowledge"
                };
                (
                    self.url(Some((&alias, verb)))?,
                    serde_json::json!({"source": "babysitter", "note": truncate(&page.summary, 25000)}),
                )
            }
        };
        let what = format!("{:?} {}", page.action, page.dedup_key).to_lowercase();
        let auth = format!("GenieKey {}", self.api_key);
        self.delivery
            .send(&what, |c| {
                c.post(url.clone())
                    .header(reqwest::header::AUTHORIZATION, &auth)
                    .json(&body)
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn pager(url: &str) -> OpsgeniePager {
        OpsgeniePager::new(
            "og",
            &OpsgenieConfig {
                api_key: Secret::Value("GENIEKEY123".into()),
                url: url.into(),
                tags: vec!["ml".into()],
                delivery: Default::default(),
            },
        )
        .unwrap()
    }

    #[test]
    fn alias_is_one_encoded_path_segment() {
        let p = pager("https://api.eu.opsgenie.com/");
        assert_eq!(
            p.url(None).unwrap().as_str(),
            "https://api.eu.opsgenie.com/v2/alerts"
        );
        assert_eq!(
            p.url(Some(("babysitter/inc-3", "close"))).unwrap().as_str(),
            "https://api.eu.opsgenie.com/v2/alerts/babysitter%2Finc-3/close?identifierType=alias"
        );
        assert!(!format!("{p:?}").contains("GENIEKEY123"));
    }

    #[test]
    fn create_respects_limits_and_maps_priority() {
        let p = pager("https://api.opsgenie.com");
        let page = Page {
            severity: Severity::Warning,
            summary: "s".repeat(500),
            route: "default".into(),
            details: vec![("finding".into(), "loss_spike".into())],
            reject_command: None,
            links: vec![],
            ..Page::sample(PageAction::Trigger)
        };
        let a = p.create(&page);
        assert_eq!(a.message.chars().count(), MESSAGE_MAX);
        assert_eq!(a.priority, "P3");
        assert_eq!(a.alias, "babysitter/inc-3");
        assert!(a.description.contains("approve: curl approve"));
        assert_eq!(a.tags, vec!["ml", "babysitter", "run:run-c"]);
        assert_eq!(a.details["finding"], "loss_spike");
    }
}
