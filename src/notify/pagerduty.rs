//! PagerDuty Events API v2: `POST {url}/v2/enqueue` with the integration's routing key. One
//! dedup key per incident makes trigger, acknowledge and resolve one PagerDuty alert; a
//! trigger carries the evidence in `payload.custom_details` and the approve/reject commands.
//! A reminder (`Page::reminder > 0`) resolves the open alert and triggers it again under the
//! same key, because PagerDuty silently folds a repeated trigger into an open alert.

use async_trait::async_trait;
use serde::Serialize;

use super::http::{Delivery, truncate};
use super::{Page, PageAction, PageError, Pager};
use crate::config::PagerDutyConfig;

/// PagerDuty's limits: the summary and the dedup key are cut to these lengths.
pub const SUMMARY_MAX: usize = 1024;
pub const DEDUP_KEY_MAX: usize = 255;

pub struct PagerDutyPager {
    name: String,
    routing_key: String,
    endpoint: String,
    source: Option<String>,
    delivery: Delivery,
}

impl std::fmt::Debug for PagerDutyPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyPager")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("routing_key", &"<redacted>")
            .finish()
    }
}

/// An Events API v2 event.
#[derive(Debug, Serialize, PartialEq)]
pub struct Event {
    pub routing_key: String,
    pub event_action: &'static str,
    pub dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'static str>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Payload {
    pub summary: String,
    pub source: String,
    pub severity: &'static str,
    pub timestamp: String,
    pub component: String,
    pub group: String,
    pub class: String,
    pub custom_details: serde_json::Value,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Link {
    pub href: String,
    pub text: String,
}

impl PagerDutyPager {
    pub fn new(name: &str, cfg: &PagerDutyConfig) -> Result<PagerDutyPager, PageError> {
        PagerDutyPager::new_at(name, &format!("pagers.{name}"), cfg)
    }

    /// Like `new`; errors name fields under the config path `at` (`pager` for the single pager).
    pub fn new_at(
        name: &str,
        at: &str,
        cfg: &PagerDutyConfig,
    ) -> Result<PagerDutyPager, PageError> {
        let routing_key = cfg
            .routing_key
            .expose(&format!("{at}.routing_key"))
            .map_err(|e| PageError::Config {
                pager: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(PagerDutyPager {
            name: name.to_string(),
            routing_key,
            endpoint: format!("{}/v2/enqueue", cfg.url.trim_end_matches('/')),
            source: cfg.source.clone(),
            delivery: Delivery::new(name, &cfg.delivery)?,
        })
    }

    /// The event for a page, at `now`.
    pub fn event(&self, page: &Page, now: chrono::DateTime<chrono::Utc>) -> Event {
        let dedup_key = truncate(&page.dedup_key, DEDUP_KEY_MAX);
        let (event_action, payload, links, client) = match page.action {
            PageAction::Trigger => {
                let mut details = page.details_object();
                details.insert("incident".into(), page.incident.clone().into());
                details.insert("run".into(), page.run.clone().into());
                if let Some(c) = &page.approve_command {
                    details.insert("approve".into(), c.clone().into());
                }
                if let Some(c) = &page.reject_command {
                    details.insert("reject".into(), c.clone().into());
                }
                let class = page
                    .details
                    .iter()
                    .find(|(k, _)| k == "finding")
                    .and_then(|(_, v)| v.split_whitespace().next())
                    .unwrap_or("incident")
                    .to_string();
                let payload = Payload {
                    summary: truncate(&page.summary, SUMMARY_MAX),
                    source: self.source.clone().unwrap_or_else(|| page.run.clone()),
                    severity: page.severity.as_str(),
                    timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    component: page.run.clone(),
                    group: page.route.clone(),
                    class,
                    custom_details: serde_json::Value::Object(details),
                };
                let links = page
                    .links
                    .iter()
                    .map(|l| Link {
                        href: l.clone(),
                        text: link_text(l).into(),
                    })
                    .collect();
                ("trigger", Some(payload), links, Some("babysitter"))
            }
            PageAction::Acknowledge => ("acknowledge", None, Vec::new(), None),
            PageAction::Resolve => ("resolve", None, Vec::new(), None),
        };
        Event {
            routing_key: self.routing_key.clone(),
            event_action,
            dedup_key,
            payload,
            links,
            client,
        }
    }
}

#[async_trait]
impl Pager for PagerDutyPager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        if page.action == PageAction::Trigger && page.reminder > 0 {
            // PagerDuty folds a trigger into the open alert of its key without notifying
            // anyone: a reminder resolves it and triggers it again (never two open at once).
            let close = Page {
                action: PageAction::Resolve,
                ..page.clone()
            };
            let event = self.event(&close, chrono::Utc::now());
            let what = format!(
                "resolve before reminder {} {}",
                page.reminder, page.dedup_key
            );
            self.delivery
                .send(&what, |c| c.post(&self.endpoint).json(&event))
                .await
                .map_err(|e| scrub(e, &self.routing_key))?;
        }
        let event = self.event(page, chrono::Utc::now());
        let what = format!("{} {}", event.event_action, page.dedup_key);
        self.delivery
            .send(&what, |c| c.post(&self.endpoint).json(&event))
            .await
            .map_err(|e| scrub(e, &self.routing_key))?;
        Ok(())
    }
}

/// What a link in a page points at, for PagerDuty's link text.
fn link_text(url: &str) -> &'static str {
    if url.contains("/api/v1/incidents/") {
        "babysitter incident"
    } else if url.contains("/runs/") {
        "run on the babysitter dashboard"
    } else if url.contains("/api/v1/watches/") {
        "babysitter watch"
    } else {
        "source"
    }
}

/// Removes the routing key from an error, should a receiver echo it back.
fn scrub(e: PageError, secret: &str) -> PageError {
    match e {
        PageError::Rejected {
            pager,
            status,
            body,
        } => PageError::Rejected {
            pager,
            status,
            body: body.replace(secret, "<redacted>"),
        },
        PageError::Delivery { pager, message } => PageError::Delivery {
            pager,
            message: message.replace(secret, "<redacted>"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn page(action: PageAction) -> Page {
        Page {
            summary: "x".repeat(2000),
            ..Page::sample(action)
        }
    }

    fn pager() -> PagerDutyPager {
        PagerDutyPager::new(
            "pd",
            &PagerDutyConfig {
                routing_key: Secret::Value("R0UTINGKEY".into()),
                url: "http://127.0.0.1:9/".into(),
                source: None,
                delivery: Default::default(),
            },
        )
        .unwrap()
    }

    #[test]
    fn trigger_carries_the_evidence_within_limits() {
        let p = pager();
        assert_eq!(p.endpoint, "http://127.0.0.1:9/v2/enqueue");
        let ev = p.event(&page(PageAction::Trigger), chrono::Utc::now());
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event_action"], "trigger");
        assert_eq!(json["routing_key"], "R0UTINGKEY");
        assert_eq!(json["payload"]["severity"], "critical");
        assert_eq!(json["payload"]["source"], "run-c");
        assert_eq!(json["payload"]["class"], "loss_spike");
        assert_eq!(json["payload"]["group"], "ml-oncall");
        assert_eq!(
            json["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_MAX
        );
        assert_eq!(json["payload"]["custom_details"]["done 2"], "resume (ok)");
        assert_eq!(json["payload"]["custom_details"]["approve"], "curl approve");
        assert_eq!(json["links"][0]["href"], "http://h/api/v1/incidents/inc-3");
        assert_eq!(json["links"][0]["text"], "babysitter incident");
        assert_eq!(
            link_text("http://h/runs/run-c"),
            "run on the babysitter dashboard"
        );
    }

    #[test]
    fn acknowledge_and_resolve_are_bare_under_the_same_key() {
        let p = pager();
        for (a, name) in [
            (PageAction::Acknowledge, "acknowledge"),
            (PageAction::Resolve, "resolve"),
        ] {
            let json = serde_json::to_value(p.event(&page(a), chrono::Utc::now())).unwrap();
            assert_eq!(json["event_action"], name);
            assert_eq!(json["dedup_key"], "babysitter/inc-3");
            assert!(json.get("payload").is_none());
        }
    }

    #[test]
    fn debug_and_errors_hide_the_routing_key() {
        let p = pager();
        assert!(!format!("{p:?}").contains("R0UTINGKEY"));
        let e = scrub(
            PageError::Rejected {
                pager: "pd".into(),
                status: 400,
                body: "bad key R0UTINGKEY".into(),
            },
            "R0UTINGKEY",
        );
        assert!(!e.to_string().contains("R0UTINGKEY"), "{e}");
    }
}
