//! Schema of the audit database, versioned by hand.
//!
//! sqlx's migrator needs either the `migrate!` macro (not built here) or migration files on disk
//! at run time, and its bookkeeping SQL differs per backend. Portable `CREATE … IF NOT EXISTS`
//! statements plus a `schema_version` table do the same job on SQLite and PostgreSQL through the
//! `Any` driver with one code path. A migration only ever adds; the version check refuses a
//! database written by a newer babysitter instead of guessing.

use sqlx::AnyPool;

use super::{AuditError, now_ts};

/// One schema step.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub statements: &'static [&'static str],
}

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "audit_log and incidents",
    statements: &[
        "CREATE TABLE IF NOT EXISTS audit_log (
            seq BIGINT PRIMARY KEY,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            run TEXT NULL,
            incident TEXT NULL,
            actor TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS audit_log_run_seq ON audit_log (run, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_incident_seq ON audit_log (incident, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_kind_seq ON audit_log (kind, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts)",
        "CREATE TABLE IF NOT EXISTS incidents (
            id TEXT PRIMARY KEY,
            run TEXT NOT NULL,
            state TEXT NOT NULL,
            data TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS incidents_run ON incidents (run)",
    ],
}];

/// The newest schema this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

async fn current_version(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(v.unwrap_or(0))
}

/// Brings the schema to [`latest_version`]; idempotent, safe when several processes start at once.
pub(crate) async fn migrate(pool: &AnyPool, url: &str) -> Result<(), AuditError> {
    let schema_err = |version: i64| {
        move |source: sqlx::Error| AuditError::Schema {
            url: url.to_string(),
            version,
            source,
        }
    };
    if let Err(source) = sqlx::query(CREATE_VERSION_TABLE).execute(pool).await {
        // Two processes creating it at once: PostgreSQL can report a duplicate type even with
        // IF NOT EXISTS. Success if the table is there now.
        if current_version(pool).await.is_err() {
            return Err(schema_err(0)(source));
        }
    }
    let found = current_version(pool).await.map_err(schema_err(0))?;
    let supported = latest_version();
    if found > supported {
        return Err(AuditError::SchemaTooNew {
            url: url.to_string(),
            found,
            supported,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        if let Err(source) = apply(pool, m).await {
            // Another process may have applied the same step concurrently (PostgreSQL can
            // report a duplicate even with IF NOT EXISTS); that is success.
            let now = current_version(pool).await.map_err(schema_err(m.version))?;
            if now < m.version {
                return Err(schema_err(m.version)(source));
            }
        }
        tracing::info!(
            version = m.version,
            description = m.description,
            "audit schema migrated"
        );
    }
    Ok(())
}

async fn apply(pool: &AnyPool, m: &Migration) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for stmt in m.statements {
        sqlx::query(*stmt).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
    )
    .bind(m.version)
    .bind(m.description)
    .bind(now_ts())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
