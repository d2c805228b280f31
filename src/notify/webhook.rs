//! A generic JSON webhook signed with HMAC-SHA256, for receivers babysitter has no dedicated
//! pager for. The body is `{"version": "1", "sent_at", "page": {…}}`; the receiver recomputes
//! `HMAC-SHA256(secret, "{timestamp}.{body}")` and compares it with
//! `X-Babysitter-Signature: sha256=<hex>`, and rejects old timestamps
//! (`X-Babysitter-Timestamp`, Unix seconds) against replays. Signing the timestamp with the
//! body is the scheme Slack and Stripe use: a captured request cannot be replayed later
//! with a fresh timestamp.

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::http::Delivery;
use super::{Page, PageError, Pager};
use crate::config::WebhookConfig;

pub const SIGNATURE_HEADER: &str = "x-babysitter-signature";
pub const TIMESTAMP_HEADER: &str = "x-babysitter-timestamp";
/// The page's dedup key, for receivers that deduplicate without parsing the body.
pub const DEDUP_HEADER: &str = "x-babysitter-dedup-key";

pub struct WebhookPager {
    name: String,
    url: String,
    secret: String,
    delivery: Delivery,
}

impl std::fmt::Debug for WebhookPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPager")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `sha256=<hex>` of `HMAC-SHA256(secret, "{timestamp}.{body}")`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a receiver does: checks the signature in constant time and the timestamp's age.
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    signature: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl WebhookPager {
    pub fn new(name: &str, cfg: &WebhookConfig) -> Result<WebhookPager, PageError> {
        WebhookPager::new_at(name, &format!("pagers.{name}"), cfg)
    }

    /// Like `new`; errors name fields under the config path `at` (`pager` for the single pager).
    pub fn new_at(name: &str, at: &str, cfg: &WebhookConfig) -> Result<WebhookPager, PageError> {
        let secret = cfg
            .secret
            .expose(&format!("{at}.secret"))
            .map_err(|e| PageError::Config {
                pager: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(WebhookPager {
            name: name.to_string(),
            url: cfg.url.clone(),
            secret,
            delivery: Delivery::new(name, &cfg.delivery)?,
        })
    }
}

#[async_trait]
impl Pager for WebhookPager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let now = chrono::Utc::now();
        let body = serde_json::to_vec(&serde_json::json!({
            "version": "1",
            "sent_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "page": page,
        }))
        .map_err(|e| PageError::Delivery {
            pager: self.name.clone(),
            message: format!("encoding the page: {e}"),
        })?;
        let what = format!("{:?} {}", page.action, page.dedup_key).to_lowercase();
        self.delivery
            .send(&what, |c| {
                // Signed at each try, so a retry after a long wait is not refused as stale.
                let ts = chrono::Utc::now().timestamp();
                c.post(&self.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(TIMESTAMP_HEADER, ts.to_string())
                    .header(SIGNATURE_HEADER, sign(self.secret.as_bytes(), ts, &body))
                    .header(DEDUP_HEADER, &page.dedup_key)
                    .body(body.clone())
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Computed with `printf '12.what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe`.
        let sig = sign(b"Jefe", 12, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=884f387af4fab053210fff358c2ae1ceb946a70c677f05c2b731ca65c7769498"
        );
    }

    #[test]
    fn verify_accepts_fresh_and_refuses_tampered_or_stale() {
        let body = br#"{"page":1}"#;
        let sig = sign(b"s3cret", 1000, body);
        assert!(verify(b"s3cret", 1000, body, &sig, 1010, 300));
        assert!(!verify(b"s3cret", 1000, br#"{"page":2}"#, &sig, 1010, 300));
        assert!(!verify(b"other", 1000, body, &sig, 1010, 300));
        assert!(!verify(b"s3cret", 1000, body, &sig, 2000, 300));
        assert!(!verify(b"s3cret", 1001, body, &sig, 1010, 300));
        assert!(!verify(b"s3cret", 1000, body, "md5=00", 1010, 300));
    }
}
