//! Signed heads: the anchor outside the database that catches a rewrite of the whole chain.
//!
//! Whoever can write the database can recompute every hash after an edit, and
//! [`AuditLog::verify`](super::AuditLog::verify) will then pass. A *signed head* is the pair
//! `(seq, hash)` of the chain's last entry with an HMAC-SHA256 under a key the database does not
//! hold:
//!
//! ```text
//! mac = hex(HMAC-SHA256(key, "babysitter-audit-head:v1:" + seq + ":" + hash))
//! ```
//!
//! Babysitter writes one periodically ([`HeadSigning::every`]) as an entry of kind
//! `signed_head` in the log itself, as a `tracing` line (target `babysitter::audit::head`, for
//! whatever ships logs off the machine) and, when configured, as one JSON line appended to a
//! heads file (`audit.heads_file`, opened append-only and fsynced). [`check_heads`] compares
//! such an outside copy with the database: a head whose entry has another hash (or is gone)
//! means the chain was rewritten or truncated after it was signed.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Domain separation: a head MAC can never be confused with another HMAC under the same key.
const HEAD_DOMAIN: &str = "babysitter-audit-head:v1:";

/// Errors of signed heads: reading the key or a heads file, writing a heads file.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("audit signing key {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit signing key {origin}: too short (at least 16 bytes expected)")]
    KeyTooShort { origin: String },
    /// The key could not be read from where the config says (e.g. an unset variable).
    #[error("{0}")]
    KeyUnavailable(String),
    #[error("heads file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("heads file {}:{line}: {reason}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The HMAC key of signed heads. Debug never shows it.
#[derive(Clone)]
pub struct HeadKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for HeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadKey(<redacted>)")
    }
}

/// Shortest key accepted, in bytes (HMAC accepts any length; a short one is a mistake).
pub const MIN_KEY_LEN: usize = 16;

impl HeadKey {
    /// A key from raw bytes; surrounding whitespace (a trailing newline in a Secret file) is
    /// trimmed. `origin` names where it came from, for the error.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<HeadKey, HeadError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(HeadError::KeyTooShort {
                origin: origin.to_string(),
            });
        }
        Ok(HeadKey {
            key: trimmed.to_vec(),
        })
    }

    /// Reads the key from a file (a mounted Kubernetes Secret).
    pub fn from_file(path: &Path) -> Result<HeadKey, HeadError> {
        let bytes = std::fs::read(path).map_err(|source| HeadError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        HeadKey::from_bytes(&bytes, &path.display().to_string())
    }

    /// Lower-case hex MAC of a head.
    pub fn sign(&self, seq: i64, hash: &str) -> String {
        hex::encode(self.mac(seq, hash).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is the MAC of this head, compared in constant time.
    pub fn verify(&self, seq: i64, hash: &str, mac: &str) -> bool {
        match hex::decode(mac) {
            Ok(bytes) => self.mac(seq, hash).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, seq: i64, hash: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail; the fallback keeps it total.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        mac.update(HEAD_DOMAIN.as_bytes());
        mac.update(seq.to_string().as_bytes());
        mac.update(b":");
        mac.update(hash.as_bytes());
        mac
    }
}

/// How babysitter signs heads.
#[derive(Debug, Clone)]
pub struct HeadSigning {
    pub key: HeadKey,
    /// At most one signed head per this interval, written on the first append after it elapsed
    /// or by the engine's next pass ([`AuditLog::maintain`](super::AuditLog::maintain)) when
    /// entries are still unsigned; a log with nothing new since its last head signs nothing.
    pub every: Duration,
    /// Append-only copy outside the database (one JSON line per head).
    pub heads_file: Option<PathBuf>,
}

/// One signed head, as written to the heads file and in the `signed_head` entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// The signed entry's sequence number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// Hex HMAC-SHA256 of the head (see the module docs).
    pub mac: String,
    /// When it was signed (RFC 3339 UTC).
    pub signed_at: String,
}

/// Appends one head to the heads file (creating it), as a JSON line, and fsyncs it.
pub fn append_head_line(path: &Path, head: &SignedHead) -> Result<(), HeadError> {
    let io = |source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut line = serde_json::to_string(head).map_err(|e| HeadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Reads a heads file: one JSON [`SignedHead`] per line; blank lines are skipped. Also accepts
/// log lines that carry the JSON object after the text `signed_head=` (a shipped log stream).
pub fn read_heads_file(path: &Path) -> Result<Vec<SignedHead>, HeadError> {
    let file = std::fs::File::open(path).map_err(|source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut heads = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let json = match text.find("signed_head=") {
            Some(at) => &text[at + "signed_head=".len()..],
            None => text,
        };
        let head: SignedHead = serde_json::from_str(json).map_err(|e| HeadError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        heads.push(head);
    }
    Ok(heads)
}

/// A head from outside that the database contradicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadMismatch {
    pub seq: i64,
    pub reason: String,
}

/// Result of comparing outside heads with the database ([`check_heads`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsReport {
    /// Heads that matched.
    pub matched: usize,
    /// Heads older than the retention checkpoint (their entries were pruned on purpose).
    pub pruned: usize,
    /// The first head (in file order) the database contradicts.
    pub first_mismatch: Option<HeadMismatch>,
}

impl HeadsReport {
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }
}

impl std::fmt::Display for HeadsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first_mismatch {
            None => write!(
                f,
                "signed heads OK: {} match the database ({} before the retention checkpoint)",
                self.matched, self.pruned
            ),
            Some(m) => write!(
                f,
                "signed heads MISMATCH at entry {}: {}; {} heads before it match",
                m.seq, m.reason, self.matched
            ),
        }
    }
}

/// Compares heads kept outside with the database's hashes.
///
/// `lookup(seq)` gives the stored hash of entry `seq` (`None` when there is no such row);
/// `pruned_through` is the last seq deleted by retention (0 when nothing was). With a key, each
/// head's MAC must verify too (so a forged heads file is not taken for proof).
pub fn check_heads(
    heads: &[SignedHead],
    key: Option<&HeadKey>,
    pruned_through: i64,
    mut lookup: impl FnMut(i64) -> Option<String>,
) -> HeadsReport {
    let mut report = HeadsReport {
        matched: 0,
        pruned: 0,
        first_mismatch: None,
    };
    for h in heads {
        if let Some(k) = key
            && !k.verify(h.seq, &h.hash, &h.mac)
        {
            report.first_mismatch = Some(HeadMismatch {
                seq: h.seq,
                reason:
                    "the head's MAC does not verify with this key (forged head, or another key)"
                        .into(),
            });
            return report;
        }
        if h.seq <= pruned_through {
            report.pruned += 1;
            continue;
        }
        match lookup(h.seq) {
            Some(stored) if stored == h.hash => report.matched += 1,
            Some(stored) => {
                report.first_mismatch = Some(HeadMismatch {
                    seq: h.seq,
                    reason: format!(
                        "the database's entry has hash {}…, the signed head says {}… (the chain was rewritten)",
                        stored.get(..12).unwrap_or(&stored),
                        h.hash.get(..12).unwrap_or(&h.hash)
                    ),
                });
                return report;
            }
            None => {
                report.first_mismatch = Some(HeadMismatch {
                    seq: h.seq,
                    reason: "the signed entry is not in the database (the log was truncated or rewritten)"
                        .into(),
                });
                return report;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HeadKey {
        HeadKey::from_bytes(b"0123456789abcdef-test-key\n", "test").expect("key")
    }

    #[test]
    fn mac_is_hmac_sha256_of_the_documented_message() {
        // printf 'babysitter-audit-head:v1:7:abc' | openssl dgst -sha256 -hmac 0123456789abcdef-test-key
        let mut independent =
            Hmac::<Sha256>::new_from_slice(b"0123456789abcdef-test-key").expect("hmac key");
        independent.update(b"babysitter-audit-head:v1:7:abc");
        let expected = hex::encode(independent.finalize().into_bytes());
        assert_eq!(key().sign(7, "abc"), expected);
        assert!(key().verify(7, "abc", &expected));
        assert!(!key().verify(8, "abc", &expected));
        assert!(!key().verify(7, "abd", &expected));
        assert!(!key().verify(7, "abc", "zz"));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!(matches!(
            HeadKey::from_bytes(b"  short \n", "env X"),
            Err(HeadError::KeyTooShort { .. })
        ));
        assert_eq!(format!("{:?}", key()), "HeadKey(<redacted>)");
    }

    #[test]
    fn heads_file_round_trips_and_names_a_bad_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/heads.jsonl");
        let h = SignedHead {
            seq: 3,
            hash: "aa".into(),
            mac: key().sign(3, "aa"),
            signed_at: "2026-11-02T10:00:00.000Z".into(),
        };
        append_head_line(&path, &h).expect("append");
        append_head_line(&path, &h).expect("append again");
        assert_eq!(read_heads_file(&path).expect("read"), vec![h.clone(), h]);
        std::fs::write(&path, "\n{\"seq\":1}\n").expect("write");
        let err = read_heads_file(&path).expect_err("bad line");
        assert!(err.to_string().contains("heads.jsonl:2: "), "{err}");
    }

    #[test]
    fn check_heads_names_the_first_contradicted_head() {
        let k = key();
        let head = |seq: i64, hash: &str| SignedHead {
            seq,
            hash: hash.into(),
            mac: k.sign(seq, hash),
            signed_at: String::new(),
        };
        let heads = vec![head(2, "h2"), head(5, "h5"), head(9, "h9")];
        let db = |seq: i64| match seq {
            2 => Some("h2".to_string()),
            5 => Some("other".to_string()),
            _ => None,
        };
        let r = check_heads(&heads, Some(&k), 0, db);
        assert_eq!(r.matched, 1);
        let m = r.first_mismatch.expect("mismatch");
        assert_eq!(m.seq, 5);
        assert!(m.reason.contains("rewritten"), "{}", m.reason);
        // Pruned heads are skipped, a missing entry is named.
        let r = check_heads(&heads[..1], Some(&k), 2, db);
        assert!(r.ok() && r.pruned == 1);
        let r = check_heads(&heads[2..], None, 0, db);
        assert_eq!(r.first_mismatch.map(|m| m.seq), Some(9));
        // A forged MAC is refused with the key, accepted without it.
        let mut forged = head(2, "h2");
        forged.mac = k.sign(2, "x");
        assert!(!check_heads(std::slice::from_ref(&forged), Some(&k), 0, db).ok());
        assert!(check_heads(&[forged], None, 0, db).ok());
    }
}
