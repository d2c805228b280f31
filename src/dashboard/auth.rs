//! How a browser signs in: `POST /login` with an API token sets an HTTP-only, `SameSite=Strict`
//! cookie holding it (hex-encoded); pages read it to apply the API's read rules and to show
//! Approve / Reject, and the dashboard forwards approvals to the API with it as the bearer token.
//! Forms carry a token derived from the cookie (HMAC), and a cross-site `Origin` is refused.

use axum::http::{HeaderMap, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::{ApiConfig, ApiRole, token_hash};

/// The cookie's name.
pub const COOKIE: &str = "babysitter_token";
/// How long a browser stays signed in.
pub const MAX_AGE_SECS: u64 = 12 * 3600;

/// A signed-in browser: whose token it holds and what that token may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub name: String,
    pub role: ApiRole,
    /// The API token itself (forwarded as the bearer token of approvals).
    pub(crate) token: String,
}

impl Session {
    pub fn can_operate(&self) -> bool {
        self.role >= ApiRole::Operator
    }

    /// The anti-forgery value forms must send back: only a page rendered for this cookie has it.
    pub fn form_token(&self) -> String {
        form_token(&self.token)
    }
}

fn form_token(token: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"babysitter dashboard form");
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; keep a value no form can match anyway.
        Err(_) => String::new(),
    }
}

/// Does `sent` equal the session's form token (in constant time)?
pub fn form_token_ok(session: &Session, sent: &str) -> bool {
    let want = session.form_token();
    !want.is_empty() && constant_time_eq(want.as_bytes(), sent.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured token whose hash matches `token`: its name and role.
pub fn lookup(api: &ApiConfig, token: &str) -> Option<(String, ApiRole)> {
    let h = token_hash(token.trim());
    api.tokens
        .iter()
        .find(|t| constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), h.as_bytes()))
        .map(|t| (t.name.clone(), t.role))
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session of a request, if its cookie holds a token that is still configured.
pub fn session(api: &ApiConfig, headers: &HeaderMap) -> Option<Session> {
    let raw = cookie(headers, COOKIE)?;
    let token = String::from_utf8(hex::decode(raw).ok()?).ok()?;
    let (name, role) = lookup(api, &token)?;
    Some(Session { name, role, token })
}

/// May this browser read the dashboard? The API's rule: open reads, or any configured token.
pub fn can_read(api: &ApiConfig, session: Option<&Session>) -> bool {
    api.read_open || session.is_some()
}

/// `Set-Cookie` that signs a browser in; `Secure` when the service is reached over HTTPS.
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}{}",
        hex::encode(token.trim().as_bytes()),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that signs a browser out.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Refuses a form posted from another site: `Sec-Fetch-Site: cross-site`, or an `Origin` whose
/// host differs from `Host`. (Browsers send at least one of them on every form post.)
pub fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if fetch_site == "cross-site" || fetch_site == "same-site" {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// A safe place to go after signing in: a path on this site, never another host.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(char::is_control) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;
    use axum::http::HeaderValue;

    fn api() -> ApiConfig {
        ApiConfig {
            read_open: false,
            tokens: vec![
                ApiToken::for_secret("alice", ApiRole::Operator, "alice-secret"),
                ApiToken::for_secret("vera", ApiRole::Viewer, "vera-secret"),
            ],
            tokens_file: None,
        }
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_cookie_set_at_login_signs_in_with_the_tokens_role() {
        let set = set_cookie("alice-secret", false);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(!set.contains("Secure"));
        assert!(set_cookie("x", true).ends_with("; Secure"));
        let value = set.split(';').next().unwrap();
        let s = session(&api(), &with_cookie(&format!("theme=dark; {value}"))).unwrap();
        assert_eq!((s.name.as_str(), s.role), ("alice", ApiRole::Operator));
        assert!(s.can_operate());
        let v = session(
            &api(),
            &with_cookie(set_cookie("vera-secret", false).split(';').next().unwrap()),
        )
        .unwrap();
        assert!(!v.can_operate());
    }

    #[test]
    fn unknown_or_malformed_cookies_are_no_session() {
        assert!(session(&api(), &HeaderMap::new()).is_none());
        assert!(session(&api(), &with_cookie("babysitter_token=zz")).is_none());
        let other = set_cookie("not-configured", false);
        assert!(session(&api(), &with_cookie(other.split(';').next().unwrap())).is_none());
    }

    #[test]
    fn reads_follow_the_api_rules() {
        let mut a = api();
        assert!(!can_read(&a, None));
        let s = Session {
            name: "vera".into(),
            role: ApiRole::Viewer,
            token: "vera-secret".into(),
        };
        assert!(can_read(&a, Some(&s)));
        a.read_open = true;
        assert!(can_read(&a, None));
    }

    #[test]
    fn form_tokens_belong_to_one_cookie() {
        let a = Session {
            name: "alice".into(),
            role: ApiRole::Operator,
            token: "alice-secret".into(),
        };
        let b = Session {
            token: "other".into(),
            ..a.clone()
        };
        assert_eq!(a.form_token().len(), 64);
        assert!(form_token_ok(&a, &a.form_token()));
        assert!(!form_token_ok(&a, &b.form_token()));
        assert!(!form_token_ok(&a, ""));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn sign_in_only_goes_back_to_local_paths() {
        assert_eq!(local_path(Some("/incidents/inc-1")), "/incidents/inc-1");
        assert_eq!(local_path(Some("//evil.test/")), "/");
        assert_eq!(local_path(Some("https://evil.test/")), "/");
        assert_eq!(local_path(Some("/\\evil")), "/");
        assert_eq!(local_path(None), "/");
    }
}
