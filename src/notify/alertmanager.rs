//! Alertmanager API v2: pages become alerts (`POST {url}/api/v2/alerts`), so teams keep their
//! own routing, grouping, silences and inhibition. An alert's identity is its label set, so
//! the labels of a trigger are remembered per dedup key and reused for its acknowledge and
//! resolve (a resolve is the same labels with `endsAt` = now). Alertmanager resolves an alert
//! that is not re-sent before its `endsAt`, as it does for Prometheus: open alerts are re-sent
//! every `resend_interval` with `endsAt` three intervals ahead, so if babysitter stops, its
//! alerts resolve by themselves a few minutes later instead of firing forever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::notify::http::every_while_alive;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::http::{Delivery, truncate};
use super::{Page, PageAction, PageError, Pager};
use crate::config::AlertmanagerConfig;

/// The `alertname` of every babysitter alert.
pub const ALERT_NAME: &str = "BabysitterIncident";
/// Labels babysitter sets itself; config labels may not override them.
const OWN_LABELS: [&str; 6] = [
    "alertname",
    "run",
    "incident",
    "severity",
    "route",
    "source",
];

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

struct Inner {
    name: String,
    endpoint: String,
    labels: BTreeMap<String, String>,
    resend_interval: Duration,
    delivery: Delivery,
    /// Firing alerts by dedup key; re-sent until resolved (also after a failed delivery, so a
    /// trigger Alertmanager missed reaches it on the next resend).
    open: Mutex<BTreeMap<String, Alert>>,
}

pub struct AlertmanagerPager {
    inner: Arc<Inner>,
    resender: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for AlertmanagerPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerPager")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.endpoint)
            .finish()
    }
}

impl Drop for AlertmanagerPager {
    fn drop(&mut self) {
        if let Some(h) = &self.resender {
            h.abort();
        }
    }
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A detail key as an annotation name (`done 2` → `done_2`).
fn annotation_name(k: &str) -> String {
    let mut out: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl AlertmanagerPager {
    /// Builds the pager; inside a Tokio runtime it also starts the resend task.
    pub fn new(name: &str, cfg: &AlertmanagerConfig) -> Result<AlertmanagerPager, PageError> {
        AlertmanagerPager::new_at(name, &format!("pagers.{name}"), cfg)
    }

    /// Like `new`; errors name fields under the config path `at` (`pager` for the single pager).
    pub fn new_at(
        name: &str,
        at: &str,
        cfg: &AlertmanagerConfig,
    ) -> Result<AlertmanagerPager, PageError> {
        for k in cfg.labels.keys() {
            if !valid_label_name(k) {
                return Err(PageError::Config {
                    pager: name.to_string(),
                    message: format!(
                        "{at}.labels.{k}: not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                    ),
                });
            }
            if OWN_LABELS.contains(&k.as_str()) {
                return Err(PageError::Config {
                    pager: name.to_string(),
                    message: format!("{at}.labels.{k}: set by babysitter itself"),
                });
            }
        }
        let inner = Arc::new(Inner {
            name: name.to_string(),
            endpoint: format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/')),
            labels: cfg.labels.clone(),
            resend_interval: cfg.resend_interval,
            delivery: Delivery::new(name, &cfg.delivery)?,
            open: Mutex::new(BTreeMap::new()),
        });
        let resender = tokio::runtime::Handle::try_current().ok().map(|h| {
            h.spawn(every_while_alive(
                Arc::downgrade(&inner),
                inner.resend_interval,
                |inner| async move { resend(&inner).await },
            ))
        });
        Ok(AlertmanagerPager { inner, resender })
    }

    /// The alert for a trigger (labels, annotations, start) at `now`.
    pub fn alert(&self, page: &Page, now: DateTime<Utc>) -> Alert {
        let mut labels = self.inner.labels.clone();
        for (k, v) in [
            ("alertname", ALERT_NAME.to_string()),
            ("run", page.run.clone()),
            ("incident", page.incident.clone()),
            ("severity", page.severity.as_str().to_string()),
            ("route", page.route.clone()),
            ("source", "babysitter".to_string()),
        ] {
            labels.insert(k.to_string(), v);
        }
        Alert {
            labels,
            annotations: annotations(page),
            starts_at: ts(now),
            ends_at: ts(now + self.ttl()),
            generator_url: page.links.first().cloned(),
        }
    }

    fn ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.resend_interval * 3)
            .unwrap_or(chrono::Duration::minutes(3))
    }

    /// The dedup keys of the alerts babysitter keeps firing.
    pub fn open_alerts(&self) -> Vec<String> {
        self.inner
            .open
            .lock()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn annotations(page: &Page) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".to_string(), truncate(&page.summary, 1024));
    a.insert("dedup_key".to_string(), page.dedup_key.clone());
    let description = page
        .details
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    if !description.is_empty() {
        a.insert("description".to_string(), description);
    }
    for (k, v) in page.details_object() {
        if let serde_json::Value::String(v) = v {
            a.insert(format!("detail_{}", annotation_name(&k)), v);
        }
    }
    if let Some(c) = &page.approve_command {
        a.insert("approve".to_string(), c.clone());
    }
    if let Some(c) = &page.reject_command {
        a.insert("reject".to_string(), c.clone());
    }
    a
}

async fn post(inner: &Inner, what: &str, alerts: &[Alert]) -> Result<(), PageError> {
    inner
        .delivery
        .send(what, |c| c.post(&inner.endpoint).json(alerts))
        .await
        .map(|_| ())
}

/// Re-sends every open alert with a later `endsAt`; false when the state is unusable.
async fn resend(inner: &Inner) -> bool {
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(inner.resend_interval * 3)
        .unwrap_or(chrono::Duration::minutes(3));
    let alerts: Vec<Alert> = match inner.open.lock() {
        Ok(mut open) => open
            .values_mut()
            .map(|a| {
                a.ends_at = ts(now + ttl);
                a.clone()
            })
            .collect(),
        Err(_) => return false,
    };
    if alerts.is_empty() {
        return true;
    }
    if let Err(e) = post(inner, "resend open alerts", &alerts).await {
        tracing::warn!(pager = %inner.name, error = %e, "re-sending open alerts failed");
    }
    true
}

#[async_trait]
impl Pager for AlertmanagerPager {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let now = Utc::now();
        let poisoned = || PageError::Delivery {
            pager: self.inner.name.clone(),
            message: "internal state lock poisoned".into(),
        };
        let (what, alert) = match page.action {
            PageAction::Trigger => {
                let mut open = self.inner.open.lock().map_err(|_| poisoned())?;
                let alert = match open.get(&page.dedup_key) {
                    // An update keeps the labels (the alert's identity) and its start.
                    Some(prev) => Alert {
                        annotations: annotations(page),
                        ends_at: ts(now + self.ttl()),
                        ..prev.clone()
                    },
                    None => self.alert(page, now),
                };
                open.insert(page.dedup_key.clone(), alert.clone());
                ("trigger", alert)
            }
            PageAction::Acknowledge => {
                let mut open = self.inner.open.lock().map_err(|_| poisoned())?;
                let Some(a) = open.get_mut(&page.dedup_key) else {
                    // Nothing fires for this incident: nothing to acknowledge.
                    return Ok(());
                };
                a.annotations
                    .insert("acknowledged".into(), truncate(&page.summary, 1024));
                a.ends_at = ts(now + self.ttl());
                ("acknowledge", a.clone())
            }
            PageAction::Resolve => {
                let prev = self
                    .inner
                    .open
                    .lock()
                    .map_err(|_| poisoned())?
                    .remove(&page.dedup_key);
                // Without the trigger's labels (babysitter restarted), the page's own labels
                // are the best guess at the alert's identity.
                let mut alert = prev.unwrap_or_else(|| self.alert(page, now));
                alert.ends_at = ts(now);
                ("resolve", alert)
            }
        };
        post(
            &self.inner,
            &format!("{what} {}", page.dedup_key),
            std::slice::from_ref(&alert),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn page(action: PageAction, severity: Severity) -> Page {
        Page {
            severity,
            route: "ml".into(),
            details: vec![
                ("finding".into(), "loss_spike".into()),
                ("done".into(), "pause".into()),
                ("done".into(), "resume".into()),
            ],
            reject_command: None,
            ..Page::sample(action)
        }
    }

    fn cfg(labels: &[(&str, &str)]) -> AlertmanagerConfig {
        AlertmanagerConfig {
            url: "http://127.0.0.1:9/".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resend_interval: Duration::from_secs(60),
            delivery: Default::default(),
        }
    }

    #[test]
    fn alert_has_identity_labels_and_evidence() {
        let p = AlertmanagerPager::new("am", &cfg(&[("team", "ml")])).unwrap();
        let now = Utc::now();
        let a = p.alert(&page(PageAction::Trigger, Severity::Critical), now);
        assert_eq!(a.labels["alertname"], ALERT_NAME);
        assert_eq!(a.labels["run"], "run-c");
        assert_eq!(a.labels["severity"], "critical");
        assert_eq!(a.labels["team"], "ml");
        assert_eq!(a.annotations["detail_done_2"], "resume");
        assert_eq!(a.annotations["approve"], "curl approve");
        assert_eq!(a.ends_at, ts(now + chrono::Duration::minutes(3)));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["generatorURL"], "http://h/api/v1/incidents/inc-3");
        assert!(json.get("startsAt").is_some());
    }

    #[test]
    fn config_labels_are_checked() {
        assert!(AlertmanagerPager::new("am", &cfg(&[("bad-name", "x")])).is_err());
        let e = AlertmanagerPager::new("am", &cfg(&[("run", "x")])).unwrap_err();
        assert!(e.to_string().contains("pagers.am.labels.run"), "{e}");
    }

    #[tokio::test]
    async fn an_undelivered_trigger_stays_open_until_resolved() {
        let mut c = cfg(&[]);
        c.delivery.attempts = 1;
        let p = AlertmanagerPager::new("am", &c).unwrap();
        // Nothing listens on port 9: delivery fails, but the alert stays open for resending.
        assert!(
            p.send(&page(PageAction::Trigger, Severity::Critical))
                .await
                .is_err()
        );
        assert_eq!(p.open_alerts(), vec!["babysitter/inc-3".to_string()]);
        assert!(
            p.send(&page(PageAction::Resolve, Severity::Info))
                .await
                .is_err()
        );
        assert!(p.open_alerts().is_empty());
    }
}
