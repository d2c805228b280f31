//! Audit: the append-only, hash-chained record of every decision and action.
//!
//! Stored through sqlx's `Any` driver: SQLite by default, PostgreSQL by URL, one code path.
//! Each entry carries the hash of the one before; [`AuditLog::verify`] recomputes the chain and
//! names the first entry that was edited, deleted or reordered.

use serde::{Deserialize, Serialize};

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Started,
    ConfigLoaded,
    RunbooksLoaded,
    WatchStarted,
    Finding,
    FindingCleared,
    IncidentOpened,
    Diagnosis,
    Decision,
    ActionIntent,
    ActionOutcome,
    ApprovalRequested,
    Approved,
    Rejected,
    Verification,
    Page,
    IncidentResolved,
    IncidentEscalated,
    Stopped,
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub run: Option<String>,
    pub incident: Option<String>,
    /// Who: `babysitter`, `policy`, `api:<caller>`, …
    pub actor: String,
    pub payload: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    /// Wall-clock time of the append, RFC 3339 UTC.
    pub ts: String,
    pub kind: EntryKind,
    pub run: Option<String>,
    pub incident: Option<String>,
    pub actor: String,
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database: {0}")]
    Db(String),
}

pub struct AuditLog {}
