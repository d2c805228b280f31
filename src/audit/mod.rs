//! Audit: the append-only, hash-chained record of every decision and action.
//!
//! Stored through sqlx's `Any` driver: SQLite by default, PostgreSQL by URL, one code path.
//! Each entry carries the hash of the one before; [`AuditLog::verify`] recomputes the chain and
//! names the first entry that was edited, deleted or reordered. This module also persists the
//! engine's incidents (table `incidents`) so a restart continues where it was, and what alert
//! enrichment last forwarded per Alertmanager alert (table `alert_forwarded`, `forwarded.rs`).
//!
//! Fail closed: [`AuditLog::is_healthy`] turns `false` when an append fails and `true` again at
//! the next successful one; the policy gate refuses to act while it is `false`.
//!
//! Layout: `chain.rs` (canonical bytes and hashing, pure), `verify.rs` (the chain checker and its
//! report), `schema.rs` (tables and their versions), `forwarded.rs` (forwarded alerts), this
//! file (the store).

mod chain;
mod forwarded;
pub mod heads;
mod schema;
mod upkeep;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

pub use chain::{GENESIS_HASH, HashInput, canonical_json, entry_hash};
pub use forwarded::ForwardedAlert;
pub use heads::{HeadKey, HeadSigning, HeadsReport, SignedHead};
pub use upkeep::Checkpoint;
pub use verify::{BadEntry, VerifyReport};

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
    /// A runbook was executed over the API (who, which run, why).
    RunbookExecuted,
    /// A runbook's plan and decisions were computed over the API without acting.
    RunbookDryRun,
    /// The LLM investigator finished: its full transcript, usage and outcome.
    AgentInvestigation,
    /// The investigator's proposal and the policy gate's verdict on it (never executed directly).
    AgentProposal,

    /// A page could not be delivered (queued for redelivery, or given up).
    PageFailed,
    /// An alert arrived from Alertmanager's webhook (enriched and maybe forwarded).
    AlertReceived,

    /// A signed head: HMAC of the previous entry's `(seq, hash)` ([`heads`]).
    SignedHead,
    /// Retention deleted the entries up to `pruned_through.seq`; verification starts here.
    Checkpoint,
    /// Start-up settled an action intent that had no outcome (babysitter crashed in between).
    Recovery,

    /// A watch ended: its workload completed or disappeared, or it stopped being annotated.
    WatchEnded,
    /// This replica gained or lost the leadership (only the leader acts).
    LeadershipChanged,
    /// A watched workload was suspended or resumed by someone other than babysitter (a human
    /// with kubectl, Kueue): babysitter holds off, or takes note that its own pause was undone.
    WorkloadSuspension,
}

impl EntryKind {
    /// Every kind, in declaration order.
    pub const ALL: [EntryKind; 31] = [
        EntryKind::Started,
        EntryKind::ConfigLoaded,
        EntryKind::RunbooksLoaded,
        EntryKind::WatchStarted,
        EntryKind::Finding,
        EntryKind::FindingCleared,
        EntryKind::IncidentOpened,
        EntryKind::Diagnosis,
        EntryKind::Decision,
        EntryKind::ActionIntent,
        EntryKind::ActionOutcome,
        EntryKind::ApprovalRequested,
        EntryKind::Approved,
        EntryKind::Rejected,
        EntryKind::Verification,
        EntryKind::Page,
        EntryKind::IncidentResolved,
        EntryKind::IncidentEscalated,
        EntryKind::Stopped,
        EntryKind::RunbookExecuted,
        EntryKind::RunbookDryRun,
        EntryKind::AgentInvestigation,
        EntryKind::AgentProposal,
        EntryKind::PageFailed,
        EntryKind::AlertReceived,
        EntryKind::SignedHead,
        EntryKind::Checkpoint,
        EntryKind::Recovery,
        EntryKind::WatchEnded,
        EntryKind::LeadershipChanged,
        EntryKind::WorkloadSuspension,
    ];

    /// The stored (and serialized) name: snake_case, as in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Started => "started",
            EntryKind::ConfigLoaded => "config_loaded",
            EntryKind::RunbooksLoaded => "runbooks_loaded",
            EntryKind::WatchStarted => "watch_started",
            EntryKind::Finding => "finding",
            EntryKind::FindingCleared => "finding_cleared",
            EntryKind::IncidentOpened => "incident_opened",
            EntryKind::Diagnosis => "diagnosis",
            EntryKind::Decision => "decision",
            EntryKind::ActionIntent => "action_intent",
            EntryKind::ActionOutcome => "action_outcome",
            EntryKind::ApprovalRequested => "approval_requested",
            EntryKind::Approved => "approved",
            EntryKind::Rejected => "rejected",
            EntryKind::Verification => "verification",
            EntryKind::Page => "page",
            EntryKind::IncidentResolved => "incident_resolved",
            EntryKind::IncidentEscalated => "incident_escalated",
            EntryKind::Stopped => "stopped",
            EntryKind::RunbookExecuted => "runbook_executed",
            EntryKind::RunbookDryRun => "runbook_dry_run",
            EntryKind::AgentInvestigation => "agent_investigation",
            EntryKind::AgentProposal => "agent_proposal",

            EntryKind::PageFailed => "page_failed",
            EntryKind::AlertReceived => "alert_received",

            EntryKind::SignedHead => "signed_head",
            EntryKind::Checkpoint => "checkpoint",
            EntryKind::Recovery => "recovery",

            EntryKind::WatchEnded => "watch_ended",
            EntryKind::LeadershipChanged => "leadership_changed",
            EntryKind::WorkloadSuspension => "workload_suspension",
        }
    }

    /// The kind named `s` (its [`as_str`](Self::as_str) form), if there is one.
    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Wall-clock time of the append, RFC 3339 UTC with milliseconds (`2026-11-02T10:00:00.123Z`).
    pub ts: String,
    pub kind: EntryKind,
    pub run: Option<String>,
    pub incident: Option<String>,
    pub actor: String,
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Which entries [`AuditLog::query`] returns; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub run: Option<String>,
    pub incident: Option<String>,
    pub kind: Option<EntryKind>,
    /// Entries at or after this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Entries with `seq` greater than this (for paging and tailing).
    pub after_seq: Option<i64>,
    /// At most this many entries; [`DEFAULT_QUERY_LIMIT`] when unset, capped at
    /// [`MAX_QUERY_LIMIT`].
    pub limit: Option<u32>,
}

/// Entries returned by [`AuditLog::query`] when the filter sets no limit.
pub const DEFAULT_QUERY_LIMIT: u32 = 1000;
/// The most entries one [`AuditLog::query`] returns; page with `after_seq` for more.
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// A persisted incident, as the engine saved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub id: String,
    pub run: String,
    pub state: String,
    pub data: serde_json::Value,
    /// When it was last saved, RFC 3339 UTC with milliseconds.
    pub updated_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A database failure outside a named operation (also handy for test doubles).
    #[error("audit database: {0}")]
    Db(String),
    #[error(
        "unsupported audit database URL {url}: expected sqlite://PATH[?mode=rwc] or postgres://…"
    )]
    UnsupportedUrl { url: String },
    #[error("creating directory {} for the audit database: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening audit database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("preparing audit database schema (version {version}) in {url}: {source}")]
    Schema {
        url: String,
        version: i64,
        source: sqlx::Error,
    },
    #[error(
        "audit database {url} has schema version {found}, newer than this babysitter supports ({supported}); upgrade babysitter"
    )]
    SchemaTooNew {
        url: String,
        found: i64,
        supported: i64,
    },
    /// A statement failed; `op` says what was being done (and for which entry).
    #[error("{op} (table {table}) in {url}: {source}")]
    Query {
        op: String,
        table: &'static str,
        url: String,
        source: sqlx::Error,
    },
    #[error("audit entry {seq} in {url} is unreadable: {reason}")]
    CorruptEntry {
        seq: i64,
        url: String,
        reason: String,
    },
    #[error("incident {id} in {url} is unreadable: {reason}")]
    CorruptIncident {
        id: String,
        url: String,
        reason: String,
    },
    #[error(
        "appending entry {seq} to audit_log in {url}: other writers took the next sequence number {attempts} times in a row; giving up"
    )]
    Contention {
        seq: i64,
        url: String,
        attempts: u32,
    },
    #[error("audit_log in {url} is full: sequence number overflow after entry {seq}")]
    SeqOverflow { seq: i64, url: String },
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`memory` for `sqlite::memory:` / `mode=memory`).
    Sqlite {
        memory: bool,
    },
    Postgres,
}

/// The audit log and incident store. Share it behind an `Arc`; all methods take `&self`.
pub struct AuditLog {
    pool: AnyPool,
    backend: Backend,
    /// The URL with any password replaced, for messages.
    url: String,
    /// Serializes appends in this process so concurrent tasks extend one chain. Holds when
    /// the last head was signed and the last retention pass ran.
    write_lock: tokio::sync::Mutex<Upkeep>,
    healthy: AtomicBool,
    options: AuditOptions,
}

/// What [`AuditLog::open_with`] adds to a plain log: signed heads and retention.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Sign the head periodically ([`heads`]). `None`: no signed heads.
    pub signing: Option<HeadSigning>,
    /// Delete entries older than this, leaving a checkpoint entry ([`AuditLog::prune`]).
    /// `None`: keep everything.
    pub retention: Option<Duration>,
}

impl AuditOptions {
    /// Options from `[audit]`: the signing key from `signing_key_file`, else `signing_key`.
    pub fn from_config(cfg: &crate::config::AuditConfig) -> Result<AuditOptions, heads::HeadError> {
        let key = match (&cfg.signing_key_file, &cfg.signing_key) {
            (Some(path), _) => Some(HeadKey::from_file(path)?),
            (None, Some(secret)) => {
                let value = secret
                    .expose("audit.signing_key")
                    .map_err(|e| heads::HeadError::KeyUnavailable(e.to_string()))?;
                Some(HeadKey::from_bytes(value.as_bytes(), "audit.signing_key")?)
            }
            (None, None) => None,
        };
        Ok(AuditOptions {
            signing: key.map(|key| HeadSigning {
                key,
                every: cfg.head_every,
                heads_file: cfg.heads_file.clone(),
            }),
            retention: cfg.retention,
        })
    }
}

/// How often retention runs at most (on the first append after it is due).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Bookkeeping of the periodic work done under the write lock.
#[derive(Debug, Default)]
struct Upkeep {
    last_signed: Option<Instant>,
    last_pruned: Option<Instant>,
    /// The chain head right after this process last signed it (the `signed_head` entry itself):
    /// while the head is still there, an idle pass has nothing new to sign.
    head_after_signing: Option<i64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("url", &self.url)
            .field("backend", &self.backend)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// How often an append retries when another process took the next `seq` first.
const MAX_APPEND_ATTEMPTS: u32 = 8;
/// Rows per round trip in [`AuditLog::verify`].
const VERIFY_PAGE: i64 = 1000;

const ENTRY_COLUMNS: &str = "seq, ts, kind, run, incident, actor, payload, prev_hash, hash";

/// Wall-clock now as stored: RFC 3339, UTC, milliseconds, `Z` (fixed width, so text order is
/// time order).
pub(crate) fn now_ts() -> String {
    format_ts(Utc::now())
}

fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One row of `audit_log` as stored, before interpretation.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub run: Option<String>,
    pub incident: Option<String>,
    pub actor: String,
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredRow {
    fn from_row(row: &AnyRow) -> Result<StoredRow, sqlx::Error> {
        Ok(StoredRow {
            seq: row.try_get("seq")?,
            ts: row.try_get("ts")?,
            kind: row.try_get("kind")?,
            run: row.try_get("run")?,
            incident: row.try_get("incident")?,
            actor: row.try_get("actor")?,
            payload: row.try_get("payload")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn into_entry(self) -> Result<Entry, (i64, String)> {
        let kind = EntryKind::parse(&self.kind)
            .ok_or_else(|| (self.seq, format!("unknown kind {:?}", self.kind)))?;
        let payload = serde_json::from_str(&self.payload)
            .map_err(|e| (self.seq, format!("unreadable payload: {e}")))?;
        Ok(Entry {
            seq: self.seq,
            ts: self.ts,
            kind,
            run: self.run,
            incident: self.incident,
            actor: self.actor,
            payload,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// Why one append attempt failed.
enum AttemptError {
    /// Another writer inserted this `seq` first: read the head again.
    SeqTaken(i64),
    Fatal(AuditError),
}

/// A bind value for dynamically built queries.
enum Arg {
    Text(String),
    Int(i64),
}

impl AuditLog {
    /// Opens (creating when needed) the audit database at `url` and brings its schema up to date.
    ///
    /// - `sqlite://PATH?mode=rwc`: creates the parent directory and the file; every connection
    ///   runs in WAL mode with `synchronous=FULL`, so an append that returned is on disk.
    /// - `sqlite::memory:`: a private in-memory database (tests, dry runs); one connection.
    /// - `postgres://…` / `postgresql://…`: PostgreSQL, same tables and SQL.
    pub async fn open(url: &str) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(url, AuditOptions::default()).await
    }

    /// [`open`](Self::open) with signed heads and retention. With signing, a head is signed
    /// right away when the log is not empty (an anchor at every start).
    pub async fn open_with(url: &str, audit_options: AuditOptions) -> Result<AuditLog, AuditError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend =
            backend_of(url).ok_or_else(|| AuditError::UnsupportedUrl { url: shown.clone() })?;

        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        match backend {
            Backend::Sqlite { memory } => {
                if !memory && let Some(dir) = sqlite_parent_dir(url) {
                    std::fs::create_dir_all(&dir).map_err(|source| AuditError::CreateDir {
                        path: dir.clone(),
                        source,
                    })?;
                }
                options = if memory {
                    // An in-memory database lives as long as a connection to it: keep exactly one.
                    options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    // A local file: connections do not go stale, so keep them (no reaper task,
                    // no ping before use). Besides saving work on every append, this keeps
                    // appends free of timers, so tests on tokio's paused clock do not see the
                    // pool time out while SQLite works on its own thread.
                    options
                        .max_connections(4)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .test_before_acquire(false)
                };
                options = options.after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // journal_mode is a property of the file; synchronous is per connection.
                        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                            .fetch_one(&mut *conn)
                            .await?;
                        if !memory && !mode.eq_ignore_ascii_case("wal") {
                            tracing::warn!(
                                journal_mode = %mode,
                                "audit database did not switch to WAL mode; appends stay durable but slower"
                            );
                        }
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                });
            }
            Backend::Postgres => {
                options = options.max_connections(8);
            }
        }

        let pool = options
            .connect(url)
            .await
            .map_err(|source| AuditError::Open {
                url: shown.clone(),
                source,
            })?;
        schema::migrate(&pool, &shown).await?;
        forwarded::create_table(&pool, &shown).await?;
        tracing::info!(url = %shown, "audit log opened");
        let log = AuditLog {
            pool,
            backend,
            url: shown,
            write_lock: tokio::sync::Mutex::new(Upkeep::default()),
            healthy: AtomicBool::new(true),
            options: audit_options,
        };
        if log.options.signing.is_some() && log.head().await?.is_some() {
            log.sign_head().await?;
        }
        Ok(log)
    }

    /// The connection pool, for modules that keep their own tables beside the log
    /// (`page_outbox`, `alert_forwarded`). They must never touch `audit_log` itself.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database URL, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `false` after an append failed, until one succeeds again. The policy gate must not act
    /// while this is `false`: an action that cannot be recorded does not happen.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn query_err(
        &self,
        op: impl Into<String>,
        table: &'static str,
    ) -> impl FnOnce(sqlx::Error) -> AuditError {
        let op = op.into();
        let url = self.url.clone();
        move |source| AuditError::Query {
            op,
            table,
            url,
            source,
        }
    }

    /// Appends one entry at the end of the chain and returns it as stored.
    ///
    /// Durable when it returns `Ok` (the transaction committed). On error nothing was written,
    /// the log is marked unhealthy and the error says what failed.
    pub async fn append(&self, e: NewEntry) -> Result<Entry, AuditError> {
        let result = self.append_inner(e).await;
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::SeqCst) {
                    tracing::info!(url = %self.url, "audit log writable again");
                }
            }
            Err(err) => {
                self.healthy.store(false, Ordering::SeqCst);
                tracing::error!(
                    url = %self.url,
                    error = %err,
                    "audit append failed: babysitter will not act until the audit log is writable"
                );
            }
        }
        result
    }

    async fn append_inner(&self, e: NewEntry) -> Result<Entry, AuditError> {
        let mut upkeep = self.write_lock.lock().await;
        let entry = self.append_locked(e).await?;
        self.upkeep(&mut upkeep, true).await;
        Ok(entry)
    }

    /// The periodic work of [`upkeep`](Self::upkeep) without an append: the engine's loop calls
    /// it on every pass, so a quiet babysitter (nothing to record for days) still prunes past
    /// retention and signs its head on time. Cheap when nothing is due.
    pub async fn maintain(&self) {
        if self.options.retention.is_none() && self.options.signing.is_none() {
            return;
        }
        let mut upkeep = self.write_lock.lock().await;
        let head = self.head().await.ok().flatten().map(|(seq, _)| seq);
        let unsigned = head.is_some() && head != upkeep.head_after_signing;
        self.upkeep(&mut upkeep, unsigned).await;
    }

    /// Periodic work after an append, under the write lock: sign the head (when `sign` says
    /// there is something new to sign), apply retention. Failures are logged (the entry itself
    /// is already durable) and retried next time.
    async fn upkeep(&self, upkeep: &mut Upkeep, sign: bool) {
        let due =
            |last: Option<Instant>, every: Duration| last.is_none_or(|t| t.elapsed() >= every);
        if let Some(retention) = self.options.retention
            && due(upkeep.last_pruned, RETENTION_EVERY)
        {
            upkeep.last_pruned = Some(Instant::now());
            let cutoff =
                Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            if let Err(err) = self.prune_locked(cutoff).await {
                tracing::error!(url = %self.url, error = %err, "audit retention failed; entries are kept");
            }
        }
        if let Some(signing) = &self.options.signing
            && sign
            && due(upkeep.last_signed, signing.every)
        {
            upkeep.last_signed = Some(Instant::now());
            match self.sign_head_locked(signing).await {
                Ok(_) => {
                    upkeep.head_after_signing = self.head().await.ok().flatten().map(|(s, _)| s);
                }
                Err(err) => {
                    tracing::error!(url = %self.url, error = %err, "signing the audit head failed");
                }
            }
        }
    }

    /// Appends with the write lock held (retrying when another process took the seq).
    async fn append_locked(&self, e: NewEntry) -> Result<Entry, AuditError> {
        let payload_text = canonical_json(&e.payload);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_append(&e, &payload_text).await {
                Ok(entry) => {
                    return Ok(Entry {
                        payload: e.payload,
                        ..entry
                    });
                }
                Err(AttemptError::SeqTaken(seq)) if attempt >= MAX_APPEND_ATTEMPTS => {
                    return Err(AuditError::Contention {
                        seq,
                        url: self.url.clone(),
                        attempts: attempt,
                    });
                }
                Err(AttemptError::SeqTaken(seq)) => {
                    tracing::debug!(seq, attempt, "audit seq taken by another writer; retrying");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(AttemptError::Fatal(err)) => return Err(err),
            }
        }
    }

    /// Begins a transaction that holds the log's cross-process write lock.
    ///
    /// SQLite: take the write lock up front (a deferred transaction would have to upgrade its
    /// read lock, which fails with SQLITE_BUSY instead of waiting). PostgreSQL: a table lock
    /// that conflicts with itself but not with readers. The seq primary key stays the last
    /// line of defence against a fork (a writer that skips the lock).
    async fn begin_locked(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = match self.backend {
            Backend::Sqlite { .. } => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        if self.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// One transaction: read the head, hash, insert. The returned entry's payload is `Null`
    /// (the caller fills in the value it already has).
    async fn try_append(&self, e: &NewEntry, payload: &str) -> Result<Entry, AttemptError> {
        let fatal = |op: String| {
            let f = self.query_err(op, "audit_log");
            move |source| AttemptError::Fatal(f(source))
        };
        let mut tx = self
            .begin_locked()
            .await
            .map_err(fatal("beginning an append".into()))?;
        let entry = self.insert_next(&mut tx, e, payload).await?;
        if let Err(err) = tx.commit().await {
            if is_unique_violation(&err) {
                return Err(AttemptError::SeqTaken(entry.seq));
            }
            return Err(fatal(format!("committing entry {}", entry.seq))(err));
        }
        Ok(entry)
    }

    /// Reads the head and inserts `e` after it, inside `tx`.
    async fn insert_next(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        e: &NewEntry,
        payload: &str,
    ) -> Result<Entry, AttemptError> {
        let fatal = |op: String| {
            let f = self.query_err(op, "audit_log");
            move |source| AttemptError::Fatal(f(source))
        };
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await
            .map_err(fatal("reading the chain head".into()))?;
        let (prev_seq, prev_hash) = match head {
            Some(row) => {
                let seq: i64 = row
                    .try_get("seq")
                    .map_err(fatal("reading the chain head".into()))?;
                let hash: String = row
                    .try_get("hash")
                    .map_err(fatal("reading the chain head".into()))?;
                (seq, hash)
            }
            None => (0, GENESIS_HASH.to_string()),
        };
        let seq = prev_seq.checked_add(1).ok_or_else(|| {
            AttemptError::Fatal(AuditError::SeqOverflow {
                seq: prev_seq,
                url: self.url.clone(),
            })
        })?;
        let ts = now_ts();
        let kind = e.kind.as_str();
        let hash = chain::entry_hash(&chain::HashInput {
            seq,
            ts: &ts,
            kind,
            run: e.run.as_deref(),
            incident: e.incident.as_deref(),
            actor: &e.actor,
            payload,
            prev_hash: &prev_hash,
        });

        let inserted = sqlx::query(
            "INSERT INTO audit_log (seq, ts, kind, run, incident, actor, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(&ts)
        .bind(kind)
        .bind(e.run.as_deref())
        .bind(e.incident.as_deref())
        .bind(&e.actor)
        .bind(payload)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await;
        if let Err(err) = inserted {
            if is_unique_violation(&err) {
                return Err(AttemptError::SeqTaken(seq));
            }
            return Err(fatal(format!("appending entry {seq}"))(err));
        }
        Ok(Entry {
            seq,
            ts,
            kind: e.kind,
            run: e.run.clone(),
            incident: e.incident.clone(),
            actor: e.actor.clone(),
            payload: serde_json::Value::Null,
            prev_hash,
            hash,
        })
    }

    /// Entries matching `f`, in `seq` order.
    pub async fn query(&self, f: &Filter) -> Result<Vec<Entry>, AuditError> {
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut args = Vec::new();
        let mut cond = |column: &str, op: &str, arg: Arg, sql: &mut String| {
            args.push(arg);
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        };
        if let Some(run) = &f.run {
            cond("run", "=", Arg::Text(run.clone()), &mut sql);
        }
        if let Some(incident) = &f.incident {
            cond("incident", "=", Arg::Text(incident.clone()), &mut sql);
        }
        if let Some(kind) = f.kind {
            cond("kind", "=", Arg::Text(kind.as_str().into()), &mut sql);
        }
        if let Some(since) = f.since {
            cond("ts", ">=", Arg::Text(format_ts(since)), &mut sql);
        }
        if let Some(until) = f.until {
            cond("ts", "<", Arg::Text(format_ts(until)), &mut sql);
        }
        if let Some(after) = f.after_seq {
            cond("seq", ">", Arg::Int(after), &mut sql);
        }
        let limit = f.limit.unwrap_or(DEFAULT_QUERY_LIMIT).min(MAX_QUERY_LIMIT);
        args.push(Arg::Int(i64::from(limit)));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));

        let mut q = sqlx::query(AssertSqlSafe(sql));
        for arg in args {
            q = match arg {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(self.query_err("querying entries", "audit_log"))?;
        rows.iter()
            .map(|row| {
                let stored = StoredRow::from_row(row)
                    .map_err(self.query_err("reading an entry", "audit_log"))?;
                stored
                    .into_entry()
                    .map_err(|(seq, reason)| AuditError::CorruptEntry {
                        seq,
                        url: self.url.clone(),
                        reason,
                    })
            })
            .collect()
    }

    /// Recomputes the whole chain in `seq` order (in pages, so memory stays flat) and reports
    /// the first entry that was edited, deleted, reordered or cannot be read. After retention
    /// the chain starts from the checkpoint that names the last deleted entry's hash.
    ///
    /// The chain alone cannot detect truncation of the tail (a shorter chain is still valid) or
    /// a full rewrite (whoever can write the database can recompute every hash from the edit
    /// on): compare with signed heads kept outside ([`check_heads`](Self::check_heads)).
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        let checkpoint = self.start_checkpoint().await?;
        let mut verifier = match &checkpoint {
            Some(c) => verify::Verifier::starting_at(c.seq, c.hash.clone()),
            None => verify::Verifier::new(),
        };
        let mut after = i64::MIN;
        loop {
            let rows = self.rows_after(after, VERIFY_PAGE).await?;
            let page_len = rows.len();
            for stored in &rows {
                after = stored.seq;
                if !verifier.feed(stored) {
                    break;
                }
            }
            if !verifier.is_intact() || (page_len as i64) < VERIFY_PAGE {
                break;
            }
        }
        let mut report = verifier.finish();
        report.checkpoint = checkpoint.map(|c| c.seq);
        Ok(report)
    }

    /// The last entry's `(seq, hash)`, `None` when the log is empty.
    pub async fn head(&self) -> Result<Option<(i64, String)>, AuditError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(self.query_err("reading the chain head", "audit_log"))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let seq: i64 = row
                    .try_get("seq")
                    .map_err(self.query_err("reading the chain head", "audit_log"))?;
                let hash: String = row
                    .try_get("hash")
                    .map_err(self.query_err("reading the chain head", "audit_log"))?;
                Ok(Some((seq, hash)))
            }
        }
    }

    /// Number of entries stored.
    pub async fn count(&self) -> Result<u64, AuditError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await
            .map_err(self.query_err("counting entries", "audit_log"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Saves (inserts or replaces) the engine's view of one incident.
    pub async fn save_incident(
        &self,
        id: &str,
        run: &str,
        state: &str,
        data: &serde_json::Value,
    ) -> Result<(), AuditError> {
        sqlx::query(
            "INSERT INTO incidents (id, run, state, data, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET
                run = excluded.run, state = excluded.state,
                data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(run)
        .bind(state)
        .bind(canonical_json(data))
        .bind(now_ts())
        .execute(&self.pool)
        .await
        .map_err(self.query_err(format!("saving incident {id}"), "incidents"))?;
        Ok(())
    }

    /// Every saved incident with its bookkeeping, ordered by id.
    pub async fn load_incident_records(&self) -> Result<Vec<IncidentRecord>, AuditError> {
        let rows =
            sqlx::query("SELECT id, run, state, data, updated_at FROM incidents ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(self.query_err("loading incidents", "incidents"))?;
        rows.iter().map(|row| self.incident_record(row)).collect()
    }

    /// Every saved incident, ordered by id, each read on its own: a row that cannot be read (its
    /// `data` is not JSON) is an [`AuditError::CorruptIncident`] naming its id and does not hide
    /// the others ([`AuditLog::load_incident_records`] fails as a whole).
    pub async fn load_incident_rows(
        &self,
    ) -> Result<Vec<Result<IncidentRecord, AuditError>>, AuditError> {
        let rows =
            sqlx::query("SELECT id, run, state, data, updated_at FROM incidents ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(self.query_err("loading incidents", "incidents"))?;
        Ok(rows.iter().map(|row| self.incident_record(row)).collect())
    }

    /// One incident by id (finished incidents leave the engine's memory; the table keeps them).
    pub async fn load_incident(&self, id: &str) -> Result<Option<IncidentRecord>, AuditError> {
        let row =
            sqlx::query("SELECT id, run, state, data, updated_at FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(self.query_err("loading an incident", "incidents"))?;
        row.map(|row| self.incident_record(&row)).transpose()
    }

    fn incident_record(&self, row: &AnyRow) -> Result<IncidentRecord, AuditError> {
        let read = self.query_err("reading an incident", "incidents");
        let get = |col: &str| row.try_get::<String, _>(col);
        let (id, run, state, data, updated_at) = match (
            get("id"),
            get("run"),
            get("state"),
            get("data"),
            get("updated_at"),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            (Err(e), ..)
            | (_, Err(e), ..)
            | (_, _, Err(e), ..)
            | (_, _, _, Err(e), _)
            | (.., Err(e)) => return Err(read(e)),
        };
        let data = serde_json::from_str(&data).map_err(|e| AuditError::CorruptIncident {
            id: id.clone(),
            url: self.url.clone(),
            reason: format!("data is not JSON: {e}"),
        })?;
        Ok(IncidentRecord {
            id,
            run,
            state,
            data,
            updated_at,
        })
    }

    /// The `data` of every saved incident, ordered by id (what the engine saved).
    pub async fn load_incidents(&self) -> Result<Vec<serde_json::Value>, AuditError> {
        Ok(self
            .load_incident_records()
            .await?
            .into_iter()
            .map(|r| r.data)
            .collect())
    }

    /// Closes the pool, waiting for in-flight statements. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The backend a URL names, `None` for anything else.
fn backend_of(url: &str) -> Option<Backend> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        let path = path.trim_start_matches("//");
        let memory =
            path.is_empty() || path == ":memory:" || params.split('&').any(|p| p == "mode=memory");
        Some(Backend::Sqlite { memory })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// The directory that must exist for a `sqlite:` URL's file, if it names one.
fn sqlite_parent_dir(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let path = path.strip_prefix("//").unwrap_or(path);
    let decoded = percent_decode(path);
    let parent = Path::new(&decoded).parent()?;
    if parent.as_os_str().is_empty() {
        None
    } else {
        Some(parent.to_path_buf())
    }
}

/// `%XX` decoding as sqlx applies it to SQLite paths; malformed escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with the password (in the authority or a `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests;
