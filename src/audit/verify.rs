//! Verifying the chain: a pure, incremental checker fed with stored rows in `seq` order.
//!
//! What the chain alone catches: an edited entry (its hash no longer matches its content), a
//! deleted entry (a gap in `seq`), reordered or relinked entries (`prev_hash` does not match the
//! entry before), unknown kinds and unreadable payloads.
//!
//! What it cannot catch alone:
//! - **truncation of the tail**: deleting the last N entries leaves a shorter chain that is
//!   perfectly valid;
//! - **a full rewrite**: whoever can write the database can recompute every hash from the first
//!   edited entry onwards.
//!
//! Both need an anchor outside the database (a signed or externally published head); that comes
//! with signed heads later. Until then, compare [`VerifyReport::head`] with a head recorded
//! elsewhere (logs, the pager, a backup) to detect them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::chain::{self, GENESIS_HASH, HashInput};
use super::{EntryKind, StoredRow};

/// The first entry that fails verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadEntry {
    /// The sequence number of the bad (or missing) entry.
    pub seq: i64,
    /// The kind as stored, when there is a row to read it from (not for a missing entry).
    pub kind: Option<String>,
    /// Why it is bad, in words an operator can act on.
    pub reason: String,
}

/// The outcome of [`AuditLog::verify`](super::AuditLog::verify).
///
/// `ok()` means no entry was edited, deleted from the middle, reordered or relinked. It does not
/// prove that the tail was not truncated or that the whole chain was not rewritten: compare
/// [`head`](Self::head) with a head recorded outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Entries that verified intact (all of them when `first_bad` is `None`; those before the
    /// first bad one otherwise).
    pub entries: u64,
    /// The last intact entry: `(seq, hash)`. `None` for an empty log (or a bad first entry).
    pub head: Option<(i64, String)>,
    /// The first entry that failed, if any. Verification stops there.
    pub first_bad: Option<BadEntry>,
    /// Retention deleted the entries up to this seq; verification started from the
    /// checkpoint that names its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<i64>,
}

impl VerifyReport {
    /// `true` when every entry verified.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// How many hex characters of a hash to show in messages.
const HASH_PREFIX: usize = 12;

fn short(hash: &str) -> &str {
    hash.get(..HASH_PREFIX).unwrap_or(hash)
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.first_bad, &self.head) {
            (None, None) => write!(f, "audit log OK: empty"),
            (None, Some((seq, hash))) => write!(
                f,
                "audit log OK: {} entries, head {} {}",
                self.entries,
                seq,
                short(hash)
            ),
            (Some(bad), _) => {
                write!(f, "audit log BROKEN at entry {}", bad.seq)?;
                if let Some(kind) = &bad.kind {
                    write!(f, " (kind {kind})")?;
                }
                write!(f, ": {}", bad.reason)?;
                if self.entries > 0 {
                    write!(f, "; the {} entries before it verify", self.entries)?;
                }
                Ok(())
            }
        }
    }
}

/// Incremental checker: feed rows in ascending `seq` order, stop at the first bad one.
#[derive(Debug)]
pub(crate) struct Verifier {
    entries: u64,
    head: Option<(i64, String)>,
    first_bad: Option<BadEntry>,
    /// Where the chain starts when retention pruned its beginning.
    start: Option<(i64, String)>,
}

impl Verifier {
    pub(crate) fn new() -> Self {
        Verifier {
            entries: 0,
            head: None,
            first_bad: None,
            start: None,
        }
    }

    /// A checker for a chain whose entries up to `seq` were pruned: the first row must be
    /// `seq + 1` and link to `hash`.
    pub(crate) fn starting_at(seq: i64, hash: String) -> Self {
        Verifier {
            start: Some((seq, hash)),
            ..Verifier::new()
        }
    }

    /// `false` once a bad entry was found (further rows are ignored).
    pub(crate) fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }

    /// Checks the next row; returns whether the chain is still intact.
    pub(crate) fn feed(&mut self, row: &StoredRow) -> bool {
        if self.first_bad.is_some() {
            return false;
        }
        match self.check(row) {
            Ok(()) => {
                self.entries += 1;
                self.head = Some((row.seq, row.hash.clone()));
                true
            }
            Err(bad) => {
                self.first_bad = Some(bad);
                false
            }
        }
    }

    fn check(&self, row: &StoredRow) -> Result<(), BadEntry> {
        let (prev_seq, prev_hash) = match (&self.head, &self.start) {
            (Some((seq, hash)), _) | (None, Some((seq, hash))) => (*seq, hash.as_str()),
            (None, None) => (0, GENESIS_HASH),
        };
        let expected = prev_seq.saturating_add(1);
        let bad = |reason: String| BadEntry {
            seq: row.seq,
            kind: Some(row.kind.clone()),
            reason,
        };
        if row.seq > expected {
            let reason = if row.seq == expected + 1 {
                format!("entry {expected} is missing (deleted?)")
            } else {
                format!(
                    "entries {expected} to {} are missing (deleted?)",
                    row.seq - 1
                )
            };
            return Err(BadEntry {
                seq: expected,
                kind: None,
                reason,
            });
        }
        if row.seq < expected {
            return Err(bad(format!(
                "sequence out of order: expected entry {expected}, found {}",
                row.seq
            )));
        }
        if EntryKind::parse(&row.kind).is_none() {
            return Err(bad(format!("unknown kind {:?}", row.kind)));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&row.payload) {
            return Err(bad(format!("unreadable payload: {e}")));
        }
        if row.prev_hash != prev_hash {
            let reason = if prev_seq == 0 {
                format!(
                    "relinked: the first entry's prev_hash is {}…, not the genesis hash (entries before it were removed, or it was moved)",
                    short(&row.prev_hash)
                )
            } else {
                format!(
                    "out of order or relinked: prev_hash {}… does not match the hash {}… of entry {prev_seq} (entries were swapped, or entry {prev_seq} was rewritten)",
                    short(&row.prev_hash),
                    short(prev_hash)
                )
            };
            return Err(bad(reason));
        }
        let recomputed = chain::entry_hash(&row.hash_input());
        if recomputed != row.hash {
            return Err(bad(format!(
                "content was edited (stored hash {}…, recomputed {}…)",
                short(&row.hash),
                short(&recomputed)
            )));
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> VerifyReport {
        VerifyReport {
            entries: self.entries,
            head: self.head,
            first_bad: self.first_bad,
            checkpoint: None,
        }
    }
}

impl StoredRow {
    pub(crate) fn hash_input(&self) -> HashInput<'_> {
        HashInput {
            seq: self.seq,
            ts: &self.ts,
            kind: &self.kind,
            run: self.run.as_deref(),
            incident: self.incident.as_deref(),
            actor: &self.actor,
            payload: &self.payload,
            prev_hash: &self.prev_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: i64) -> Vec<StoredRow> {
        let mut rows = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=n {
            let mut row = StoredRow {
                seq,
                ts: format!("2026-11-02T10:00:{seq:02}.000Z"),
                kind: "decision".into(),
                run: Some("run-a".into()),
                incident: None,
                actor: "policy".into(),
                payload: format!(r#"{{"n":{seq}}}"#),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = chain::entry_hash(&row.hash_input());
            prev = row.hash.clone();
            rows.push(row);
        }
        rows
    }

    fn run(rows: &[StoredRow]) -> VerifyReport {
        let mut v = Verifier::new();
        for row in rows {
            if !v.feed(row) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn intact_chain_reports_count_and_head() {
        let rows = chain_of(5);
        let report = run(&rows);
        assert!(report.ok());
        assert_eq!(report.entries, 5);
        assert_eq!(report.head, Some((5, rows[4].hash.clone())));
        assert_eq!(
            report.to_string(),
            format!("audit log OK: 5 entries, head 5 {}", &rows[4].hash[..12])
        );
    }

    #[test]
    fn empty_log_is_ok() {
        let report = run(&[]);
        assert!(report.ok());
        assert_eq!(report.to_string(), "audit log OK: empty");
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        // edited
        let mut rows = chain_of(4);
        rows[2].payload = r#"{"n":99}"#.into();
        let r = run(&rows);
        let bad = r.first_bad.as_ref().expect("edit detected");
        assert_eq!((bad.seq, r.entries), (3, 2));
        assert!(
            bad.reason.starts_with("content was edited"),
            "{}",
            bad.reason
        );
        assert!(
            r.to_string()
                .starts_with("audit log BROKEN at entry 3 (kind decision): content was edited"),
            "{r}"
        );

        // missing
        let mut rows = chain_of(4);
        rows.remove(1);
        let r = run(&rows);
        let bad = r.first_bad.expect("gap detected");
        assert_eq!(bad.seq, 2);
        assert_eq!(bad.kind, None);
        assert_eq!(bad.reason, "entry 2 is missing (deleted?)");

        // first entry missing
        let rows = chain_of(3);
        let r = run(&rows[1..]);
        assert_eq!(
            r.first_bad.map(|b| (b.seq, b.reason)),
            Some((1, "entry 1 is missing (deleted?)".to_string()))
        );

        // relinked
        let mut rows = chain_of(4);
        rows[3].prev_hash = rows[1].hash.clone();
        let r = run(&rows);
        let bad = r.first_bad.expect("relink detected");
        assert_eq!(bad.seq, 4);
        assert!(
            bad.reason.starts_with("out of order or relinked"),
            "{}",
            bad.reason
        );

        // unknown kind, unreadable payload
        let mut rows = chain_of(3);
        rows[1].kind = "bogus".into();
        let bad = run(&rows).first_bad.expect("unknown kind");
        assert_eq!(
            (bad.seq, bad.reason.as_str()),
            (2, "unknown kind \"bogus\"")
        );
        let mut rows = chain_of(3);
        rows[0].payload = "{not json".into();
        let bad = run(&rows).first_bad.expect("bad payload");
        assert_eq!(bad.seq, 1);
        assert!(
            bad.reason.starts_with("unreadable payload"),
            "{}",
            bad.reason
        );
    }
}
