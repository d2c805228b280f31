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

// --- temporary stubs in main until the audit branch lands ---
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub run: Option<String>,
    pub incident: Option<String>,
    pub kind: Option<EntryKind>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}
#[derive(Debug, Clone, Serialize)]
pub struct BadEntry {
    pub seq: i64,
    pub reason: String,
}
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub head: Option<(i64, String)>,
    pub first_bad: Option<BadEntry>,
}
impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}
impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self)
    }
}
impl AuditLog {
    pub async fn open(_url: &str) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {})
    }
    pub async fn append(&self, _e: NewEntry) -> Result<Entry, AuditError> {
        Err(AuditError::Db("stub".into()))
    }
    pub fn is_healthy(&self) -> bool {
        true
    }
    pub async fn query(&self, _f: &Filter) -> Result<Vec<Entry>, AuditError> {
        Ok(vec![])
    }
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        Ok(VerifyReport {
            entries: 0,
            head: None,
            first_bad: None,
        })
    }
    pub async fn save_incident(
        &self,
        _id: &str,
        _run: &str,
        _state: &str,
        _data: &serde_json::Value,
    ) -> Result<(), AuditError> {
        Ok(())
    }
    pub async fn load_incidents(&self) -> Result<Vec<serde_json::Value>, AuditError> {
        Ok(vec![])
    }
}
