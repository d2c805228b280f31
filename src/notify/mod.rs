//! Notify: pages to the on-call human.
//!
//! A [`Page`] carries one dedup key per incident, so that a trigger, its updates and its resolve
//! are one page on the receiving side, and the evidence a person needs to decide in a minute:
//! the finding, the diagnosis, the pending action and the exact command that approves it.
//! The demo prints pages on the terminal ([`ConsolePager`]); the real pagers — PagerDuty
//! ([`pagerduty`]), Slack ([`slack`]), a signed webhook ([`webhook`]), Alertmanager
//! ([`alertmanager`]) and Opsgenie ([`opsgenie`]) — sit behind the same [`Pager`] trait and
//! share one retrying HTTP delivery ([`http`]); a page still undelivered after every retry
//! waits in an [`Outbox`] and is sent again, in order, rather than dropped. A [`Router`] fans a page out to the pagers of its
//! watch's route, so the engine calls one `Pager`; [`build`] makes it from the config. The
//! outbox is durable once the engine attaches a [`PageStore`] (table `page_outbox` in the audit
//! database): a restart redelivers what was not delivered. [`PagingConfig`] (`[paging]`) sets
//! how long an unanswered approval waits before it is paged again, and how alerts coming in
//! from Alertmanager are matched to watched runs (`api/alerts.rs` enriches and forwards them).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::detect::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageAction {
    /// A human is needed (or the open page is updated).
    Trigger,
    /// Automation has taken over.
    Acknowledge,
    /// The incident is resolved.
    Resolve,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// One per incident: `babysitter/<incident id>`.
    pub dedup_key: String,
    pub action: PageAction,
    pub severity: Severity,
    /// One line: what happened and what is asked.
    pub summary: String,
    pub run: String,
    pub incident: String,
    /// The on-call route of the watch.
    pub route: String,
    /// Evidence, in reading order (finding, diagnosis, actions taken, verification).
    pub details: Vec<(String, String)>,
    /// The exact commands that approve / reject the pending action, when one waits.
    pub approve_command: Option<String>,
    pub reject_command: Option<String>,
    /// Where to look (API, dashboard).
    pub links: Vec<String>,
    /// 0 for a page; n for the n-th reminder of a trigger nobody answered. Pagers whose
    /// service would swallow a repeated trigger (PagerDuty, Opsgenie deduplicate an open
    /// alert silently) close the open alert and open it again under the same key, so the
    /// reminder rings while there is still only one open page per incident.
    #[serde(default)]
    pub reminder: u32,
}

pub mod alertmanager;
pub mod http;
pub mod opsgenie;
mod outbox;
pub mod pagerduty;
mod router;
mod settings;
pub mod slack;
pub mod store;
pub mod webhook;

pub use outbox::{MAX_REDELIVER_WAIT, Outbox, redeliver_wait};
pub use router::{Router, build};
pub use settings::PagingConfig;
pub use store::PageStore;

#[cfg(test)]
impl Page {
    /// A page for tests: a critical trigger-or-other for `babysitter/inc-3` on run-c, with a
    /// finding, two actions done, the approve/reject commands and a link. Tests override fields.
    pub(crate) fn sample(action: PageAction) -> Page {
        Page {
            dedup_key: "babysitter/inc-3".into(),
            action,
            severity: Severity::Critical,
            summary: "loss spike".into(),
            run: "run-c".into(),
            incident: "inc-3".into(),
            route: "ml-oncall".into(),
            details: vec![
                ("finding".into(), "loss_spike on loss: 8σ".into()),
                ("done".into(), "pause (ok)".into()),
                ("done".into(), "resume (ok)".into()),
            ],
            approve_command: Some("curl approve".into()),
            reject_command: Some("curl reject".into()),
            links: vec!["http://h/api/v1/incidents/inc-3".into()],
            reminder: 0,
        }
    }
}

impl Page {
    /// The evidence as a JSON object in reading order; a repeated key gets a number (`done 2`).
    pub fn details_object(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in &self.details {
            let mut key = k.clone();
            let mut n = 1;
            while out.contains_key(&key) {
                n += 1;
                key = format!("{k} {n}");
            }
            out.insert(key, serde_json::Value::String(v.clone()));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not delivered after every try (or a transport failure).
    #[error("pager {pager} failed: {message}")]
    Delivery { pager: String, message: String },
    /// The receiver refused the page for good (a 4xx other than 429).
    #[error("pager {pager}: rejected with HTTP {status}: {body}")]
    Rejected {
        pager: String,
        status: u16,
        body: String,
    },
    /// The pager could not be built from its config.
    #[error("pager {pager}: {message}")]
    Config { pager: String, message: String },
    /// Some pagers of a route failed (the others were delivered).
    #[error("route `{route}`: {} failed ({}){}", failed.len(), failed.join("; "), delivered_note(delivered))]
    Route {
        route: String,
        delivered: Vec<String>,
        failed: Vec<String>,
    },
}

fn delivered_note(delivered: &[String]) -> String {
    if delivered.is_empty() {
        String::new()
    } else {
        format!("; delivered to {}", delivered.join(", "))
    }
}

#[async_trait]
pub trait Pager: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, page: &Page) -> Result<(), PageError>;

    /// Gives the pager a durable store for the pages it could not deliver: an [`Outbox`] writes
    /// its queue there and redelivers what a previous process left; a [`Router`] passes the
    /// store on to its pagers. Pagers that keep nothing ignore it.
    async fn attach_store(&self, _store: Arc<PageStore>) {}
}

/// Prints pages on the terminal, framed so they stand out from the story lines.
#[derive(Debug, Default)]
pub struct ConsolePager {
    /// Every page sent, for tests and the demo summary.
    sent: Mutex<Vec<Page>>,
}

impl ConsolePager {
    pub fn new() -> Arc<Self> {
        Arc::new(ConsolePager::default())
    }

    pub fn sent(&self) -> Vec<Page> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The text printed for a page.
    pub fn render(page: &Page) -> String {
        let mut out = String::new();
        let head = match page.action {
            PageAction::Trigger => format!("PAGE [{}] to on-call `{}`", page.severity, page.route),
            PageAction::Acknowledge => format!("PAGE ACK to on-call `{}`", page.route),
            PageAction::Resolve => format!("PAGE RESOLVED to on-call `{}`", page.route),
        };
        out.push_str(&format!(
            "  ┌─ {head} · {} · {}\n",
            page.run, page.dedup_key
        ));
        out.push_str(&format!("  │  {}\n", page.summary));
        if page.action == PageAction::Trigger {
            for (k, v) in &page.details {
                out.push_str(&format!("  │  {k}: {v}\n"));
            }
        }
        if let Some(cmd) = &page.approve_command {
            out.push_str(&format!("  │  approve: {cmd}\n"));
        }
        if let Some(cmd) = &page.reject_command {
            out.push_str(&format!("  │  reject:  {cmd}\n"));
        }
        for l in &page.links {
            out.push_str(&format!("  │  {l}\n"));
        }
        out.push_str("  └─");
        out
    }
}

#[async_trait]
impl Pager for ConsolePager {
    fn name(&self) -> &str {
        "console"
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        println!("{}", ConsolePager::render(page));
        if let Ok(mut s) = self.sent.lock() {
            s.push(page.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_page_shows_evidence_and_commands() {
        let page = Page {
            dedup_key: "babysitter/inc-3".into(),
            action: PageAction::Trigger,
            severity: Severity::Critical,
            summary: "GPU Xid errors on run-c".into(),
            run: "run-c".into(),
            incident: "inc-3".into(),
            route: "default".into(),
            details: vec![("finding".into(), "xid_errors +2 in 10 min".into())],
            approve_command: Some("curl -X POST …/approve".into()),
            reject_command: None,
            links: vec!["http://127.0.0.1:8080/api/v1/incidents/inc-3".into()],
            reminder: 0,
        };
        let text = ConsolePager::render(&page);
        assert!(text.contains("PAGE [critical]"));
        assert!(text.contains("xid_errors +2"));
        assert!(text.contains("approve: curl -X POST"));
        assert!(text.contains("babysitter/inc-3"));
    }
}
