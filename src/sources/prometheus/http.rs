//! The HTTP side of the Prometheus source: the reqwest client (timeouts, auth, extra headers,
//! TLS) wrapped in prometheus-http-query's client, and range queries with retries and backoff.

use std::time::Duration;

use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use super::decode::{self, DecodeError, Series};
use super::settings::PrometheusConfig;

/// Why the source could not be built (bad settings or unreadable files).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("sources.prometheus.{field}: cannot read {path}: {message}")]
    ReadFile {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error("sources.prometheus.{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("sources.prometheus: building the HTTP client: {0}")]
    Client(String),
    #[error("watch `{run}`: {source}")]
    Profile {
        run: String,
        #[source]
        source: super::profile::ProfileError,
    },
}

fn read(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::ReadFile {
        field,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn read_secret(field: &'static str, path: &std::path::Path) -> Result<String, SetupError> {
    let bytes = read(field, path)?;
    let s = String::from_utf8(bytes).map_err(|_| SetupError::Invalid {
        field: field.to_string(),
        message: format!("{} is not UTF-8", path.display()),
    })?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// The headers sent with every request: the configured ones plus `Authorization`.
pub fn default_headers(cfg: &PrometheusConfig) -> Result<HeaderMap, SetupError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &cfg.headers {
        let field = format!("headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| SetupError::Invalid {
            field: field.clone(),
            message: e.to_string(),
        })?;
        let v = HeaderValue::from_str(value).map_err(|e| SetupError::Invalid {
            field,
            message: e.to_string(),
        })?;
        headers.insert(n, v);
    }
    let bearer = match (&cfg.bearer_token, &cfg.bearer_token_file) {
        (Some(_), Some(_)) => {
            return Err(SetupError::Invalid {
                field: "bearer_token".into(),
                message: "set bearer_token or bearer_token_file, not both".into(),
            });
        }
        (Some(t), None) => Some(t.expose().to_string()),
        (None, Some(p)) => Some(read_secret("bearer_token_file", p)?),
        (None, None) => None,
    };
    let basic = match &cfg.basic_auth {
        None => None,
        Some(b) => {
            let password = match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    return Err(SetupError::Invalid {
                        field: "basic_auth.password".into(),
                        message: "set password or password_file, not both".into(),
                    });
                }
                (Some(p), None) => p.expose().to_string(),
                (None, Some(p)) => read_secret("basic_auth.password_file", p)?,
                (None, None) => String::new(),
            };
            Some(format!(
                "Basic {}",
                base64(format!("{}:{password}", b.username).as_bytes())
            ))
        }
    };
    let auth = match (bearer, basic) {
        (Some(_), Some(_)) => {
            return Err(SetupError::Invalid {
                field: "basic_auth".into(),
                message: "bearer and basic authentication are exclusive".into(),
            });
        }
        (Some(t), None) => Some(format!("Bearer {t}")),
        (None, b) => b,
    };
    if let Some(auth) = auth {
        let mut v = HeaderValue::from_str(&auth).map_err(|_| SetupError::Invalid {
            field: "bearer_token".into(),
            message: "the credentials contain characters not allowed in a header".into(),
        })?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    Ok(headers)
}

/// The Prometheus client: reqwest with the configured timeouts, headers and TLS.
pub fn build_client(cfg: &PrometheusConfig) -> Result<prometheus_http_query::Client, SetupError> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.connect_timeout)
        .default_headers(default_headers(cfg)?)
        .user_agent(concat!("babysitter/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &cfg.tls.ca_file {
        let certs =
            reqwest::Certificate::from_pem_bundle(&read("tls.ca_file", ca)?).map_err(|e| {
                SetupError::Invalid {
                    field: "tls.ca_file".into(),
                    message: format!("{}: {e}", ca.display()),
                }
            })?;
        if certs.is_empty() {
            return Err(SetupError::Invalid {
                field: "tls.ca_file".into(),
                message: format!("{}: no PEM certificate in it", ca.display()),
            });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read("tls.cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("tls.key_file", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| SetupError::Invalid {
                field: "tls.cert_file".into(),
                message: e.to_string(),
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(SetupError::Invalid {
                field: "tls".into(),
                message: "cert_file and key_file go together".into(),
            });
        }
    }
    if cfg.tls.insecure_skip_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    let http = b.build().map_err(|e| SetupError::Client(e.to_string()))?;
    // `//api/v1/…` would 404 on some proxies: no trailing slash.
    let url = cfg.url.trim_end_matches('/');
    prometheus_http_query::Client::from(http, url).map_err(|e| SetupError::Invalid {
        field: "url".into(),
        message: format!("`{}`: {e}", cfg.url),
    })
}

/// A failed query after its retries.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryError {
    /// Prometheus unreachable, too slow, or failing (5xx): the data may be fine.
    Unavailable(String),
    /// Prometheus refused the query or sent something unreadable: retrying will not help.
    Rejected(String),
}

/// The error with its causes (`reqwest`'s "error sending request" alone says little).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Retry policy of one query.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub retries: u32,
    pub backoff: Duration,
}

impl Retry {
    /// Delay before retry `n` (0-based): backoff × 2ⁿ, capped at 8 × backoff. No jitter: the
    /// concurrency limit already keeps babysitter's queries from arriving in a herd.
    pub fn delay(&self, n: u32) -> Duration {
        self.backoff * 2u32.saturating_pow(n.min(3))
    }
}

/// Bodies larger than this are decoded on the blocking pool, so a 70 MB start-up slice does not
/// stall the runtime worker that is reading the next response.
const INLINE_DECODE_BYTES: usize = 256 * 1024;

/// One range query (POST: a batch's run matcher can be long), retried on transient failures.
/// Sent with prometheus-http-query's reqwest client (its timeouts, auth, headers and TLS) and
/// decoded by [`decode::range_response`], keeping only the labels in `keep`. Returns the series
/// and how many retries it took.
#[allow(clippy::too_many_arguments)]
pub async fn range_query(
    client: &prometheus_http_query::Client,
    expr: &str,
    start: i64,
    end: i64,
    step_secs: f64,
    eval_timeout: Duration,
    retry: Retry,
    keep: Arc<Vec<String>>,
) -> (Result<Vec<Series>, QueryError>, u32) {
    let url = format!(
        "{}/api/v1/query_range",
        client.base_url().as_str().trim_end_matches('/')
    );
    let form = [
        ("query", expr.to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", step_secs.to_string()),
        ("timeout", format!("{}ms", eval_timeout.as_millis())),
    ];
    let mut attempt = 0;
    loop {
        let err = match fetch(client.inner(), &url, &form).await {
            Ok(body) => match decode_body(body, keep.clone()).await {
                Ok(series) => return (Ok(series), attempt),
                Err(e) => e,
            },
            Err(e) => e,
        };
        match err {
            QueryError::Unavailable(_) if attempt < retry.retries => {
                tracing::debug!(attempt, error = ?err, "prometheus query failed, retrying");
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
            e => return (Err(e), attempt),
        }
    }
}

/// POSTs the query; a 2xx body, or the failure classified for retrying.
async fn fetch(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
) -> Result<bytes::Bytes, QueryError> {
    let resp = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| QueryError::Unavailable(error_text(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| QueryError::Unavailable(error_text(&e)))?;
    if status.is_success() {
        return Ok(body);
    }
    let text = match decode::error_response(&body) {
        Some((kind, msg)) => format!("HTTP {status}: {kind}: {msg}"),
        None => format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        ),
    };
    // 4xx (but 429) is a query Prometheus refuses: retrying will not help. 429, 5xx (503 while
    // starting, 422 is 4xx: a PromQL execution error) are transient.
    if status.is_client_error() && status.as_u16() != 429 {
        Err(QueryError::Rejected(text))
    } else {
        Err(QueryError::Unavailable(text))
    }
}

async fn decode_body(
    body: bytes::Bytes,
    keep: Arc<Vec<String>>,
) -> Result<Vec<Series>, QueryError> {
    let small = body.len() <= INLINE_DECODE_BYTES;
    let run = move || {
        let names: Vec<&str> = keep.iter().map(String::as_str).collect();
        decode::range_response(&body, &names)
    };
    let res = if small {
        run()
    } else {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| QueryError::Unavailable(format!("decoding task failed: {e}")))?
    };
    res.map_err(|e| match e {
        DecodeError::Api { ref error_type, .. }
            if matches!(
                error_type.as_str(),
                "timeout" | "canceled" | "unavailable" | "internal"
            ) =>
        {
            QueryError::Unavailable(e.to_string())
        }
        e => QueryError::Rejected(e.to_string()),
    })
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::settings::{BasicAuth, Secret};
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn headers_carry_auth_and_tenant() {
        let mut cfg = PrometheusConfig::new("http://p:9090");
        cfg.headers.insert("X-Scope-OrgID".into(), "team-ml".into());
        cfg.basic_auth = Some(BasicAuth {
            username: "Aladdin".into(),
            password: Some(Secret("open sesame".into())),
            password_file: None,
        });
        let h = default_headers(&cfg).unwrap();
        assert_eq!(h["x-scope-orgid"], "team-ml");
        assert_eq!(h[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(h[AUTHORIZATION].is_sensitive());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut cfg = PrometheusConfig::new("http://p:9090");
        cfg.bearer_token_file = Some(f);
        assert_eq!(
            default_headers(&cfg).unwrap()[AUTHORIZATION],
            "Bearer s3cret"
        );
        cfg.bearer_token = Some(Secret("x".into()));
        assert!(default_headers(&cfg).is_err());

        let mut cfg = PrometheusConfig::new("http://p:9090");
        cfg.bearer_token_file = Some(dir.path().join("missing"));
        let e = default_headers(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("bearer_token_file") && e.contains("missing"),
            "{e}"
        );
        let mut cfg = PrometheusConfig::new("http://p:9090");
        cfg.headers.insert("bad header".into(), "x".into());
        assert!(
            default_headers(&cfg)
                .unwrap_err()
                .to_string()
                .contains("headers.bad header")
        );
    }

    #[test]
    fn tls_files_are_checked_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut cfg = PrometheusConfig::new("https://p:9090/");
        cfg.tls.ca_file = Some(ca);
        let e = build_client(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("tls.ca_file"), "{e}");
        let mut cfg = PrometheusConfig::new("https://p:9090/");
        cfg.tls.cert_file = Some(dir.path().join("c.pem"));
        assert!(build_client(&cfg).is_err());
        let mut cfg = PrometheusConfig::new("https://p:9090/");
        cfg.tls.insecure_skip_verify = true;
        let c = build_client(&cfg).unwrap();
        assert_eq!(
            c.base_url().as_str().trim_end_matches('/'),
            "https://p:9090"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let r = Retry {
            retries: 5,
            backoff: Duration::from_millis(100),
        };
        let d: Vec<u128> = (0..6).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 800, 800]);
    }
}
