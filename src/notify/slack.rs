//! Slack incoming webhook: one message per page action, with the evidence as fields and the
//! approve/reject commands as code blocks. Slack has no dedup: the dedup key is shown so a
//! reader can tie the acknowledge and resolve messages to their trigger.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::http::{Delivery, truncate};
use super::{Page, PageAction, PageError, Pager};
use crate::config::SlackConfig;
use crate::detect::Severity;

/// Block Kit limits (a message over them is refused with `invalid_blocks`).
const HEADER_MAX: usize = 150;
const SECTION_TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_MAX: usize = 10;

pub struct SlackPager {
    name: String,
    webhook_url: String,
    delivery: Delivery,
}

impl std::fmt::Debug for SlackPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackPager")
            .field("name", &self.name)
            .field("webhook_url", &"<redacted>")
            .finish()
    }
}

impl SlackPager {
    pub fn new(name: &str, cfg: &SlackConfig) -> Result<SlackPager, PageError> {
        SlackPager::new_at(name, &format!("pagers.{name}"), cfg)
    }

    /// Like `new`; errors name fields under the config path `at` (`pager` for the single pager).
    pub fn new_at(name: &str, at: &str, cfg: &SlackConfig) -> Result<SlackPager, PageError> {
        let webhook_url = cfg
            .webhook_url
            .expose(&format!("{at}.webhook_url"))
            .map_err(|e| PageError::Config {
                pager: name.to_string(),
                message: e.to_string(),
            })?;
        if !matches!(reqwest::Url::parse(&webhook_url), Ok(u) if matches!(u.scheme(), "http" | "https"))
        {
            return Err(PageError::Config {
                pager: name.to_string(),
                message: format!("{at}.webhook_url: not an http(s) URL"),
            });
        }
        Ok(SlackPager {
            name: name.to_string(),
            webhook_url,
            delivery: Delivery::new(name, &cfg.delivery)?,
        })
    }
}

fn marker(s: Severity) -> &'static str {
    match s {
        Severity::Critical => ":red_circle:",
        Severity::Error => ":large_orange_circle:",
        Severity::Warning => ":large_yellow_circle:",
        Severity::Info => ":large_blue_circle:",
    }
}

/// Escapes what Slack's mrkdwn treats as control characters.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The webhook body for a page.
pub fn message(page: &Page) -> Value {
    let (head, text) = match page.action {
        PageAction::Trigger => (
            format!(
                "{} {} · {}",
                page.severity.as_str().to_uppercase(),
                page.run,
                page.dedup_key
            ),
            format!(
                "{} [{}] {} ({})",
                marker(page.severity),
                page.severity,
                page.summary,
                page.dedup_key
            ),
        ),
        PageAction::Acknowledge => (
            format!("ACKNOWLEDGED {} · {}", page.run, page.dedup_key),
            format!(
                ":robot_face: automation took over: {} ({})",
                page.summary, page.dedup_key
            ),
        ),
        PageAction::Resolve => (
            format!("RESOLVED {} · {}", page.run, page.dedup_key),
            format!(
                ":white_check_mark: resolved: {} ({})",
                page.summary, page.dedup_key
            ),
        ),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&head, HEADER_MAX)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&esc(&page.summary), SECTION_TEXT_MAX)}}),
    ];
    if page.action == PageAction::Trigger {
        let fields: Vec<Value> = page
            .details
            .iter()
            .take(FIELDS_MAX)
            .map(|(k, v)| {
                json!({"type": "mrkdwn", "text": truncate(&format!("*{}*\n{}", esc(k), esc(v)), FIELD_MAX)})
            })
            .collect();
        if !fields.is_empty() {
            blocks.push(json!({"type": "section", "fields": fields}));
        }
        for (label, cmd) in [
            ("Approve", &page.approve_command),
            ("Reject", &page.reject_command),
        ] {
            if let Some(cmd) = cmd {
                // Code blocks are shown verbatim: no escaping inside them.
                let body = truncate(cmd, SECTION_TEXT_MAX - 20);
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{label}:*\n```{body}```")}}));
            }
        }
    }
    let mut context = vec![
        json!({"type": "mrkdwn", "text": format!("route `{}` · run `{}` · incident `{}`", esc(&page.route), esc(&page.run), esc(&page.incident))}),
    ];
    for l in page.links.iter().take(9) {
        context.push(json!({"type": "mrkdwn", "text": format!("<{l}|{}>", truncate(l, 200))}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    json!({ "text": text, "blocks": blocks })
}

#[async_trait]
impl Pager for SlackPager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let body = message(page);
        let what = format!("{:?} {}", page.action, page.dedup_key).to_lowercase();
        self.delivery
            .send(&what, |c| c.post(&self.webhook_url).json(&body))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(action: PageAction) -> Page {
        Page {
            summary: "GPU <Xid> errors".into(),
            route: "default".into(),
            details: (0..12)
                .map(|i| (format!("k{i}"), "v".repeat(3000)))
                .collect(),
            approve_command: Some("curl -X POST http://h/approve".into()),
            reject_command: Some("curl -X POST http://h/reject".into()),
            ..Page::sample(action)
        }
    }

    #[test]
    fn trigger_message_fits_block_kit_limits() {
        let m = message(&page(PageAction::Trigger));
        assert!(m["text"].as_str().unwrap().contains("babysitter/inc-3"));
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[1]["text"]["text"], "GPU &lt;Xid&gt; errors");
        let fields = blocks[2]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), FIELDS_MAX);
        assert!(
            fields
                .iter()
                .all(|f| f["text"].as_str().unwrap().chars().count() <= FIELD_MAX)
        );
        let all = m.to_string();
        assert!(all.contains("```curl -X POST http://h/approve```"));
        assert!(all.contains("```curl -X POST http://h/reject```"));
    }

    #[test]
    fn resolve_message_has_no_commands() {
        let m = message(&page(PageAction::Resolve));
        assert!(
            m["text"]
                .as_str()
                .unwrap()
                .starts_with(":white_check_mark: resolved")
        );
        assert!(!m.to_string().contains("approve"));
    }

    #[test]
    fn debug_hides_the_webhook_url() {
        let p = SlackPager::new(
            "s",
            &SlackConfig {
                webhook_url: crate::config::Secret::Value(
                    "https://hooks.slack.com/services/T0/B0/SEKRET".into(),
                ),
                delivery: Default::default(),
            },
        )
        .unwrap();
        assert!(!format!("{p:?}").contains("SEKRET"));
    }
}
