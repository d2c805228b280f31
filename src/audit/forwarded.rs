//! The table `alert_forwarded`: what alert enrichment (`src/api/alerts.rs`) last forwarded to
//! the pagers for each Alertmanager alert, by fingerprint — its status (`firing` /
//! `resolved`) and a digest of the enrichment sent with it — so Alertmanager's unchanged
//! re-sends (every `group_interval` / `repeat_interval`) are not paged again after babysitter
//! restarts, or on another replica after a leader change, and a `resolved` for an alert
//! forwarded before the restart is still seen as a change.
//!
//! A side table beside the log, like `page_outbox`: created with `CREATE TABLE IF NOT EXISTS`
//! when the log opens, without a schema version step, so an older babysitter opening the same
//! database simply ignores it (a version step would make it refuse the database). It never
//! touches `audit_log`. Bounded: [`AuditLog::prune_forwarded_alerts`] drops resolved alerts
//! older than a cut-off and the oldest rows beyond a count.

use sqlx::{AnyPool, Row};

use super::{AuditError, AuditLog};

const TABLE: &str = "alert_forwarded";

const CREATE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alert_forwarded (
        fingerprint TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        enrichment_sha256 TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS alert_forwarded_updated ON alert_forwarded (updated_ms)",
];

/// Creates the table and its index when missing (called by [`AuditLog::open`]).
pub(crate) async fn create_table(pool: &AnyPool, url: &str) -> Result<(), AuditError> {
    for stmt in CREATE {
        if let Err(source) = sqlx::query(*stmt).execute(pool).await {
            // Two processes starting at once: PostgreSQL can report a duplicate even with
            // IF NOT EXISTS. Success if the table is there now.
            let there = sqlx::query("SELECT COUNT(*) AS n FROM alert_forwarded")
                .fetch_one(pool)
                .await
                .is_ok();
            if !there {
                return Err(AuditError::Query {
                    op: "creating the table".into(),
                    table: TABLE,
                    url: url.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// What was last forwarded for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedAlert {
    pub fingerprint: String,
    /// Alertmanager's status as forwarded: `firing` or `resolved`.
    pub status: String,
    /// SHA-256 (hex) of the enrichment sent with it.
    pub enrichment_sha256: String,
    /// When it was forwarded (Unix milliseconds, wall clock).
    pub updated_ms: i64,
}

impl AuditLog {
    /// What was last forwarded for `fingerprint`, if anything is remembered.
    pub async fn forwarded_alert(
        &self,
        fingerprint: &str,
    ) -> Result<Option<ForwardedAlert>, AuditError> {
        let op = || format!("reading forwarded alert {fingerprint}");
        let row = sqlx::query(
            "SELECT fingerprint, status, enrichment_sha256, updated_ms FROM alert_forwarded
             WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_optional(self.pool())
        .await
        .map_err(self.query_err(op(), TABLE))?;
        let Some(row) = row else { return Ok(None) };
        let get = |col: &str| row.try_get::<String, _>(col);
        let read = || -> Result<ForwardedAlert, sqlx::Error> {
            Ok(ForwardedAlert {
                fingerprint: get("fingerprint")?,
                status: get("status")?,
                enrichment_sha256: get("enrichment_sha256")?,
                updated_ms: row.try_get::<i64, _>("updated_ms")?,
            })
        };
        read().map(Some).map_err(self.query_err(op(), TABLE))
    }

    /// Remembers that `fingerprint` was forwarded with `status` and an enrichment whose
    /// SHA-256 is `enrichment_sha256`, at `now_ms` (replaces what was remembered).
    pub async fn record_forwarded_alert(
        &self,
        fingerprint: &str,
        status: &str,
        enrichment_sha256: &str,
        now_ms: i64,
    ) -> Result<(), AuditError> {
        sqlx::query(
            "INSERT INTO alert_forwarded (fingerprint, status, enrichment_sha256, updated_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (fingerprint) DO UPDATE SET
                status = excluded.status, enrichment_sha256 = excluded.enrichment_sha256,
                updated_ms = excluded.updated_ms",
        )
        .bind(fingerprint)
        .bind(status)
        .bind(enrichment_sha256)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(self.query_err(format!("recording forwarded alert {fingerprint}"), TABLE))?;
        Ok(())
    }

    /// Forgets resolved alerts forwarded before `resolved_before_ms`, then the oldest rows
    /// beyond the newest `keep` (rows forwarded in the same millisecond as the `keep`-th
    /// newest are kept with it). Returns how many rows went.
    pub async fn prune_forwarded_alerts(
        &self,
        resolved_before_ms: i64,
        keep: u64,
    ) -> Result<u64, AuditError> {
        let resolved = sqlx::query(
            "DELETE FROM alert_forwarded WHERE status = 'resolved' AND updated_ms < $1",
        )
        .bind(resolved_before_ms)
        .execute(self.pool())
        .await
        .map_err(self.query_err("pruning resolved forwarded alerts", TABLE))?
        .rows_affected();
        // The `keep`-th newest row's time, if there are more rows than that.
        let offset = i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX);
        let cutoff: Option<i64> = sqlx::query_scalar(
            "SELECT updated_ms FROM alert_forwarded ORDER BY updated_ms DESC LIMIT 1 OFFSET $1",
        )
        .bind(offset)
        .fetch_optional(self.pool())
        .await
        .map_err(self.query_err("finding the oldest forwarded alert to keep", TABLE))?;
        let oldest = match cutoff {
            Some(t) if keep > 0 => sqlx::query("DELETE FROM alert_forwarded WHERE updated_ms < $1")
                .bind(t)
                .execute(self.pool())
                .await
                .map_err(self.query_err("pruning the oldest forwarded alerts", TABLE))?
                .rows_affected(),
            Some(_) => sqlx::query("DELETE FROM alert_forwarded")
                .execute(self.pool())
                .await
                .map_err(self.query_err("forgetting every forwarded alert", TABLE))?
                .rows_affected(),
            None => 0,
        };
        Ok(resolved + oldest)
    }

    /// How many forwarded alerts are remembered.
    pub async fn forwarded_alert_count(&self) -> Result<u64, AuditError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_forwarded")
            .fetch_one(self.pool())
            .await
            .map_err(self.query_err("counting forwarded alerts", TABLE))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn log() -> AuditLog {
        AuditLog::open("sqlite::memory:").await.expect("open")
    }

    #[tokio::test]
    async fn a_forwarded_alert_is_remembered_and_replaced() {
        let log = log().await;
        assert_eq!(log.forwarded_alert("f1").await.unwrap(), None);
        log.record_forwarded_alert("f1", "firing", "aa", 1_000)
            .await
            .unwrap();
        let got = log.forwarded_alert("f1").await.unwrap().unwrap();
        assert_eq!(
            got,
            ForwardedAlert {
                fingerprint: "f1".into(),
                status: "firing".into(),
                enrichment_sha256: "aa".into(),
                updated_ms: 1_000,
            }
        );
        log.record_forwarded_alert("f1", "resolved", "bb", 2_000)
            .await
            .unwrap();
        let got = log.forwarded_alert("f1").await.unwrap().unwrap();
        assert_eq!(
            (
                got.status.as_str(),
                got.enrichment_sha256.as_str(),
                got.updated_ms
            ),
            ("resolved", "bb", 2_000)
        );
        assert_eq!(log.forwarded_alert_count().await.unwrap(), 1);
        // The hash chain is not touched.
        assert_eq!(log.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn pruning_drops_old_resolved_then_the_oldest_beyond_the_limit() {
        let log = log().await;
        log.record_forwarded_alert("old-resolved", "resolved", "x", 100)
            .await
            .unwrap();
        log.record_forwarded_alert("old-firing", "firing", "x", 100)
            .await
            .unwrap();
        for i in 0..5 {
            log.record_forwarded_alert(&format!("f{i}"), "firing", "x", 1_000 + i)
                .await
                .unwrap();
        }
        log.record_forwarded_alert("new-resolved", "resolved", "x", 2_000)
            .await
            .unwrap();
        // Resolved before 500 go; firing ones stay whatever their age; 7 rows, keep 10.
        assert_eq!(log.prune_forwarded_alerts(500, 10).await.unwrap(), 1);
        assert_eq!(log.forwarded_alert("old-resolved").await.unwrap(), None);
        assert!(log.forwarded_alert("old-firing").await.unwrap().is_some());
        assert_eq!(log.forwarded_alert_count().await.unwrap(), 7);
        // Keep the newest 3: new-resolved, f4, f3.
        assert_eq!(log.prune_forwarded_alerts(500, 3).await.unwrap(), 4);
        for (fp, kept) in [
            ("old-firing", false),
            ("f0", false),
            ("f2", false),
            ("f3", true),
            ("f4", true),
            ("new-resolved", true),
        ] {
            assert_eq!(
                log.forwarded_alert(fp).await.unwrap().is_some(),
                kept,
                "{fp}"
            );
        }
        assert_eq!(log.prune_forwarded_alerts(500, 3).await.unwrap(), 0);
        assert_eq!(log.prune_forwarded_alerts(500, 0).await.unwrap(), 3);
        assert_eq!(log.forwarded_alert_count().await.unwrap(), 0);
    }
}
