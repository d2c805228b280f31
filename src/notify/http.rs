//! HTTP delivery shared by every remote pager: one request, retried with exponential backoff
//! on 429 (honouring `Retry-After`), 5xx and connection errors; any other 4xx is permanent and
//! its response body is quoted in the error. Errors never carry the request URL (a Slack
//! webhook URL is itself the credential) nor any header.

use std::sync::{Arc, Weak};
use std::time::Duration;

use reqwest::StatusCode;

use super::PageError;
use crate::config::DeliveryConfig;

/// Runs `work` on the owner every `every` (the first time one period after the start) for as
/// long as the owner lives: the task ends once the last `Arc` is dropped, or when `work` returns
/// false. Background work of a pager (re-sending, redelivering) must not keep the pager alive.
pub(crate) async fn every_while_alive<T, F, Fut>(owner: Weak<T>, every: Duration, mut work: F)
where
    F: FnMut(Arc<T>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(owner) = owner.upgrade() else { return };
        if !work(owner).await {
            return;
        }
    }
}

/// The longest response body quoted in an error.
const BODY_QUOTE: usize = 1000;

/// Sends requests for one pager.
#[derive(Debug, Clone)]
pub struct Delivery {
    pager: String,
    client: reqwest::Client,
    cfg: DeliveryConfig,
}

/// A delivered request's status and body.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub status: StatusCode,
    pub body: String,
}

impl Delivery {
    pub fn new(pager: &str, cfg: &DeliveryConfig) -> Result<Delivery, PageError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("babysitter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PageError::Config {
                pager: pager.to_string(),
                message: format!(
                    "building the HTTP client: {}",
                    error_chain(&e.without_url())
                ),
            })?;
        Ok(Delivery {
            pager: pager.to_string(),
            client,
            cfg: cfg.clone(),
        })
    }

    pub fn pager(&self) -> &str {
        &self.pager
    }

    /// Sends the request `build` makes (once per try) until a 2xx, a permanent error or the
    /// last try. `what` names the request in logs and errors ("trigger babysitter/inc-3").
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Delivered, PageError> {
        let mut last = String::new();
        for attempt in 1..=self.cfg.attempts {
            let mut wait = None;
            match build(&self.client).send().await {
                Ok(res) => {
                    let status = res.status();
                    let retry_after = retry_after(res.headers());
                    let body = res.text().await.unwrap_or_default();
                    if status.is_success() {
                        if attempt > 1 {
                            tracing::info!(pager = %self.pager, what, attempt, "page delivered after retries");
                        }
                        return Ok(Delivered { status, body });
                    }
                    let quoted = quote(&body);
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        last = format!("HTTP {}: {quoted}", status.as_u16());
                        wait = retry_after;
                    } else {
                        return Err(PageError::Rejected {
                            pager: self.pager.clone(),
                            status: status.as_u16(),
                            body: quoted,
                        });
                    }
                }
                Err(e) => last = error_chain(&e.without_url()),
            }
            if attempt == self.cfg.attempts {
                break;
            }
            let delay = wait
                .unwrap_or_else(|| backoff(&self.cfg, attempt))
                .min(self.cfg.max_backoff);
            tracing::warn!(
                pager = %self.pager, what, attempt, error = %last,
                retry_in_ms = delay.as_millis() as u64, "page not delivered yet, retrying"
            );
            tokio::time::sleep(delay).await;
        }
        Err(PageError::Delivery {
            pager: self.pager.clone(),
            message: format!("{what}: gave up after {} tries: {last}", self.cfg.attempts),
        })
    }
}

/// The wait after failed try `attempt` (1-based): `backoff × 2^(attempt-1)`, capped.
pub fn backoff(cfg: &DeliveryConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    cfg.backoff
        .checked_mul(factor)
        .unwrap_or(cfg.max_backoff)
        .min(cfg.max_backoff)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let secs = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(secs.max(0) as u64))
}

/// An error and its sources on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(empty body)".into();
    }
    truncate(body, BODY_QUOTE)
}

/// At most `max` characters, cut on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = DeliveryConfig {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..DeliveryConfig::default()
        };
        assert_eq!(backoff(&cfg, 1), Duration::from_millis(100));
        assert_eq!(backoff(&cfg, 2), Duration::from_millis(200));
        assert_eq!(backoff(&cfg, 3), Duration::from_millis(400));
        assert_eq!(backoff(&cfg, 4), Duration::from_millis(500));
        assert_eq!(backoff(&cfg, 60), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("héllo", 3).chars().count(), 3);
    }
}
