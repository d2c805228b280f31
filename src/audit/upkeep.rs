//! Upkeep of the log: signed heads, retention with a checkpoint, checking outside heads,
//! and export as JSON Lines.
//!
//! Retention deletes the oldest entries in one transaction with a `checkpoint` entry appended
//! at the end of the chain, whose payload names the last deleted entry and its hash
//! (`pruned_through`). [`AuditLog::verify`] then starts from that hash: the first remaining
//! entry must link to it. When heads are signed, the checkpoint carries a MAC of
//! `pruned_through` too, so an outside check ([`AuditLog::check_heads`]) can tell retention
//! from someone deleting entries and appending a checkpoint of their own.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use super::heads::{self, HeadKey, HeadSigning, HeadsReport, SignedHead};
use super::{
    AttemptError, AuditError, AuditLog, ENTRY_COLUMNS, EntryKind, Filter, NewEntry, StoredRow,
    canonical_json, format_ts, is_unique_violation, now_ts,
};

/// What a checkpoint entry says about the pruned part of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The checkpoint entry's own seq.
    pub at: i64,
    /// The last deleted entry.
    pub seq: i64,
    /// Its hash: the first remaining entry's `prev_hash`.
    pub hash: String,
    /// MAC of `(seq, hash)` under the head key, when heads were signed.
    pub mac: Option<String>,
}

impl AuditLog {
    /// Signs the current head now (no-op without signing options or on an empty log).
    pub async fn sign_head(&self) -> Result<Option<SignedHead>, AuditError> {
        let Some(signing) = &self.options.signing else {
            return Ok(None);
        };
        let mut upkeep = self.write_lock.lock().await;
        upkeep.last_signed = Some(std::time::Instant::now());
        let head = self.sign_head_locked(signing).await?;
        upkeep.head_after_signing = self.head().await?.map(|(seq, _)| seq);
        Ok(head)
    }

    /// Signs the head with the write lock held: appends a `signed_head` entry, logs the head
    /// and appends it to the heads file.
    pub(super) async fn sign_head_locked(
        &self,
        signing: &HeadSigning,
    ) -> Result<Option<SignedHead>, AuditError> {
        let Some((seq, hash)) = self.head().await? else {
            return Ok(None);
        };
        let head = SignedHead {
            seq,
            mac: signing.key.sign(seq, &hash),
            hash,
            signed_at: now_ts(),
        };
        let payload = serde_json::to_value(&head).map_err(|e| AuditError::Db(e.to_string()))?;
        self.append_locked(NewEntry {
            kind: EntryKind::SignedHead,
            run: None,
            incident: None,
            actor: "babysitter".into(),
            payload,
        })
        .await?;
        let line = serde_json::to_string(&head).unwrap_or_default();
        tracing::info!(
            target: "babysitter::audit::head",
            seq = head.seq,
            hash = %head.hash,
            "signed_head={line}"
        );
        if let Some(path) = &signing.heads_file
            && let Err(e) = heads::append_head_line(path, &head)
        {
            tracing::error!(error = %e, "cannot append the signed head to the heads file");
        }
        Ok(Some(head))
    }

    /// Deletes every entry written before `cutoff`, appending a checkpoint entry in the same
    /// transaction so the chain stays verifiable. Returns the checkpoint, `None` when nothing
    /// was old enough.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Option<Checkpoint>, AuditError> {
        let mut upkeep = self.write_lock.lock().await;
        upkeep.last_pruned = Some(std::time::Instant::now());
        self.prune_locked(cutoff).await
    }

    pub(super) async fn prune_locked(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let err = |op: &str| self.query_err(op.to_string(), "audit_log");
        let mut tx = self
            .begin_locked()
            .await
            .map_err(err("beginning retention"))?;
        // Entries are appended in time order under the lock, so "older than" is a seq prefix.
        // The checkpoint is inserted before the delete, so it links to the real head even when
        // every entry is old.
        let last_old: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM audit_log WHERE ts < $1")
                .bind(format_ts(cutoff))
                .fetch_one(&mut *tx)
                .await
                .map_err(err("finding entries past retention"))?;
        let Some(through) = last_old else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(through)
            .fetch_one(&mut *tx)
            .await
            .map_err(err("reading the last pruned entry"))?;
        let hash: String = row.try_get("hash").map_err(err("reading a hash"))?;
        let deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE seq <= $1")
            .bind(through)
            .fetch_one(&mut *tx)
            .await
            .map_err(err("counting entries past retention"))?;
        let mac = self
            .options
            .signing
            .as_ref()
            .map(|s| s.key.sign(through, &hash));
        let entry = NewEntry {
            kind: EntryKind::Checkpoint,
            run: None,
            incident: None,
            actor: "babysitter".into(),
            payload: json!({
                "pruned_through": {"seq": through, "hash": hash},
                "deleted": deleted,
                "cutoff": format_ts(cutoff),
                "mac": mac,
            }),
        };
        let stored = match self
            .insert_next(&mut tx, &entry, &canonical_json(&entry.payload))
            .await
        {
            Ok(e) => e,
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::SeqTaken(seq)) => {
                return Err(AuditError::Contention {
                    seq,
                    url: self.url.clone(),
                    attempts: 1,
                });
            }
        };
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(err("deleting entries past retention"))?;
        if let Err(e) = tx.commit().await {
            if is_unique_violation(&e) {
                return Err(AuditError::Contention {
                    seq: stored.seq,
                    url: self.url.clone(),
                    attempts: 1,
                });
            }
            return Err(err("committing retention")(e));
        }
        tracing::info!(url = %self.url, deleted, through, checkpoint = stored.seq, "audit retention pruned old entries");
        Ok(Some(Checkpoint {
            at: stored.seq,
            seq: through,
            hash,
            mac,
        }))
    }

    /// The checkpoint the remaining chain starts from: the one naming the entry just before
    /// the oldest row. `None` when the log starts at entry 1 (or is empty).
    pub async fn start_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let err = |op: &str| self.query_err(op.to_string(), "audit_log");
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
            .fetch_one(&self.pool)
            .await
            .map_err(err("finding the oldest entry"))?;
        let Some(first) = first.filter(|s| *s > 1) else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT seq, payload FROM audit_log WHERE kind = $1 ORDER BY seq")
            .bind(EntryKind::Checkpoint.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(err("reading checkpoints"))?;
        for row in rows {
            let at: i64 = row.try_get("seq").map_err(err("reading a checkpoint"))?;
            let text: String = row
                .try_get("payload")
                .map_err(err("reading a checkpoint"))?;
            let Ok(p) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let through = &p["pruned_through"];
            if let (Some(seq), Some(hash)) = (through["seq"].as_i64(), through["hash"].as_str())
                && seq == first - 1
            {
                return Ok(Some(Checkpoint {
                    at,
                    seq,
                    hash: hash.to_string(),
                    mac: p["mac"].as_str().map(str::to_string),
                }));
            }
        }
        Ok(None)
    }

    /// The stored hash of entry `seq`.
    pub async fn hash_at(&self, seq: i64) -> Result<Option<String>, AuditError> {
        sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.query_err(format!("reading the hash of entry {seq}"), "audit_log"))
    }

    /// Compares heads kept outside the database (a heads file, shipped logs) with it. With a
    /// key, every head's MAC must verify, and heads older than the retention checkpoint count
    /// as pruned only when the checkpoint's MAC verifies too.
    pub async fn check_heads(
        &self,
        heads: &[SignedHead],
        key: Option<&HeadKey>,
    ) -> Result<HeadsReport, AuditError> {
        let pruned_through = match self.start_checkpoint().await? {
            Some(c) => match key {
                None => c.seq,
                Some(k) => {
                    if c.mac
                        .as_deref()
                        .is_some_and(|m| k.verify(c.seq, &c.hash, m))
                    {
                        c.seq
                    } else {
                        0
                    }
                }
            },
            None => 0,
        };
        let mut hashes = std::collections::HashMap::new();
        for h in heads {
            if h.seq > pruned_through && !hashes.contains_key(&h.seq) {
                hashes.insert(h.seq, self.hash_at(h.seq).await?);
            }
        }
        Ok(heads::check_heads(heads, key, pruned_through, |seq| {
            hashes.get(&seq).cloned().flatten()
        }))
    }

    /// Writes the entries matching `f` (every page of them; `f.limit` caps the total) to `out`
    /// as JSON Lines, one [`Entry`](super::Entry) per line. Returns how many were written.
    pub async fn export(&self, f: &Filter, out: &mut dyn Write) -> Result<u64, AuditError> {
        let mut page = f.clone();
        let mut left = f.limit.map(u64::from);
        let mut written = 0;
        loop {
            page.limit = Some(super::MAX_QUERY_LIMIT.min(
                left.map_or(super::MAX_QUERY_LIMIT, |l| {
                    u32::try_from(l).unwrap_or(u32::MAX)
                }),
            ));
            if page.limit == Some(0) {
                break;
            }
            let entries = self.query(&page).await?;
            let Some(last) = entries.last() else {
                break;
            };
            page.after_seq = Some(last.seq);
            for e in &entries {
                let line = serde_json::to_string(e).map_err(|err| AuditError::CorruptEntry {
                    seq: e.seq,
                    url: self.url.clone(),
                    reason: err.to_string(),
                })?;
                writeln!(out, "{line}")
                    .map_err(|err| AuditError::Db(format!("writing the export: {err}")))?;
                written += 1;
            }
            if let Some(l) = left.as_mut() {
                *l = l.saturating_sub(entries.len() as u64);
            }
            if entries.len() < page.limit.map_or(0, |l| l as usize) {
                break;
            }
        }
        Ok(written)
    }

    /// Rows of `audit_log` after `after`, in seq order, at most `limit` (for verification).
    pub(super) async fn rows_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredRow>, AuditError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_err(format!("verifying entries after {after}"), "audit_log"))?;
        rows.iter()
            .map(|row| {
                StoredRow::from_row(row).map_err(
                    self.query_err(format!("reading the entry after {after}"), "audit_log"),
                )
            })
            .collect()
    }
}
