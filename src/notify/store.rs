//! The durable side of the outbox: pages not yet delivered, kept per pager in the table
//! `page_outbox` of the audit database (SQLite or PostgreSQL, through the audit log's pool), so
//! a restart of babysitter redelivers them instead of losing them. This module owns that table
//! (it never touches `audit_log` except through [`AuditLog::append`]) and the audit entries that
//! say what became of an undelivered page: `page_failed` when it is queued or given up, `page`
//! with `redelivered: true` when it finally arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use sqlx::Row;

use super::Page;
use crate::audit::{AuditLog, EntryKind, NewEntry};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS page_outbox (
    pager TEXT NOT NULL,
    ord BIGINT NOT NULL,
    dedup_key TEXT NOT NULL,
    page TEXT NOT NULL,
    first_failed_ms BIGINT NOT NULL,
    tries BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    PRIMARY KEY (pager, ord)
)";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("page_outbox in {url}: {op}: {source}")]
    Db {
        url: String,
        op: String,
        source: sqlx::Error,
    },
    #[error("page_outbox in {url}: row ({pager}, {ord}) holds an unreadable page: {reason}")]
    Corrupt {
        url: String,
        pager: String,
        ord: i64,
        reason: String,
    },
}

/// One persisted undelivered page.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPage {
    /// Order of arrival (per pager); also the row's key.
    pub ord: i64,
    pub page: Page,
    /// When its incident's queue first failed (Unix milliseconds).
    pub first_failed_ms: i64,
    /// Failed redeliveries so far (drives the backoff).
    pub tries: u32,
    pub last_error: String,
}

/// The `page_outbox` table and the audit entries about undelivered pages.
pub struct PageStore {
    audit: Arc<AuditLog>,
    next_ord: AtomicI64,
}

impl std::fmt::Debug for PageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStore")
            .field("db", &self.audit.url())
            .finish()
    }
}

/// Wall-clock now in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl PageStore {
    /// Creates `page_outbox` when needed.
    pub async fn open(audit: Arc<AuditLog>) -> Result<Arc<PageStore>, StoreError> {
        let store = PageStore {
            audit,
            next_ord: AtomicI64::new(0),
        };
        sqlx::query(CREATE)
            .execute(store.audit.pool())
            .await
            .map_err(store.err("creating the table"))?;
        let max: Option<i64> = sqlx::query("SELECT MAX(ord) AS m FROM page_outbox")
            .fetch_one(store.audit.pool())
            .await
            .and_then(|r| r.try_get::<Option<i64>, _>("m"))
            .map_err(store.err("reading the last ord"))?;
        // Microseconds keep the order across restarts without a sequence (portable SQL).
        let start = chrono::Utc::now()
            .timestamp_micros()
            .max(max.unwrap_or(0) + 1);
        store.next_ord.store(start, Ordering::SeqCst);
        Ok(Arc::new(store))
    }

    fn err(&self, op: &str) -> impl FnOnce(sqlx::Error) -> StoreError {
        let (url, op) = (self.audit.url().to_string(), op.to_string());
        move |source| StoreError::Db { url, op, source }
    }

    /// Persists an undelivered page; returns its `ord`.
    pub async fn insert(
        &self,
        pager: &str,
        page: &Page,
        first_failed_ms: i64,
        error: &str,
    ) -> Result<i64, StoreError> {
        let ord = self.next_ord.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::to_string(page).map_err(|e| StoreError::Corrupt {
            url: self.audit.url().to_string(),
            pager: pager.to_string(),
            ord,
            reason: format!("cannot encode: {e}"),
        })?;
        sqlx::query(
            "INSERT INTO page_outbox (pager, ord, dedup_key, page, first_failed_ms, tries, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(pager)
        .bind(ord)
        .bind(&page.dedup_key)
        .bind(body)
        .bind(first_failed_ms)
        .bind(0i64)
        .bind(error)
        .execute(self.audit.pool())
        .await
        .map_err(self.err(&format!("saving {} for {pager}", page.dedup_key)))?;
        Ok(ord)
    }

    /// Forgets one page (delivered, or refused for good).
    pub async fn delete(&self, pager: &str, ord: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM page_outbox WHERE pager = $1 AND ord = $2")
            .bind(pager)
            .bind(ord)
            .execute(self.audit.pool())
            .await
            .map_err(self.err("deleting a delivered page"))?;
        Ok(())
    }

    /// Forgets every page of one incident (resolved, or given up).
    pub async fn delete_key(&self, pager: &str, dedup_key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM page_outbox WHERE pager = $1 AND dedup_key = $2")
            .bind(pager)
            .bind(dedup_key)
            .execute(self.audit.pool())
            .await
            .map_err(self.err(&format!("deleting the pages of {dedup_key}")))?;
        Ok(())
    }

    /// Notes a failed redelivery of an incident's queue.
    pub async fn set_tries(
        &self,
        pager: &str,
        dedup_key: &str,
        tries: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE page_outbox SET tries = $1, last_error = $2 WHERE pager = $3 AND dedup_key = $4",
        )
        .bind(i64::from(tries))
        .bind(error)
        .bind(pager)
        .bind(dedup_key)
        .execute(self.audit.pool())
        .await
        .map_err(self.err(&format!("updating the tries of {dedup_key}")))?;
        Ok(())
    }

    /// The pages waiting for `pager`, oldest first.
    pub async fn load(&self, pager: &str) -> Result<Vec<StoredPage>, StoreError> {
        let rows = sqlx::query(
            "SELECT ord, page, first_failed_ms, tries, last_error FROM page_outbox
             WHERE pager = $1 ORDER BY ord",
        )
        .bind(pager)
        .fetch_all(self.audit.pool())
        .await
        .map_err(self.err(&format!("loading the pages of {pager}")))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let read = |e: sqlx::Error| StoreError::Db {
                url: self.audit.url().to_string(),
                op: format!("reading a page of {pager}"),
                source: e,
            };
            let ord: i64 = row.try_get("ord").map_err(read)?;
            let body: String = row.try_get("page").map_err(read)?;
            let first_failed_ms: i64 = row.try_get("first_failed_ms").map_err(read)?;
            let tries: i64 = row.try_get("tries").map_err(read)?;
            let last_error: String = row.try_get("last_error").map_err(read)?;
            let page = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                url: self.audit.url().to_string(),
                pager: pager.to_string(),
                ord,
                reason: e.to_string(),
            })?;
            out.push(StoredPage {
                ord,
                page,
                first_failed_ms,
                tries: u32::try_from(tries.max(0)).unwrap_or(u32::MAX),
                last_error,
            });
        }
        Ok(out)
    }

    /// Pages waiting, all pagers together.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM page_outbox")
            .fetch_one(self.audit.pool())
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(self.err("counting"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn append(&self, kind: EntryKind, page: &Page, payload: serde_json::Value) {
        let run = (!page.run.is_empty()).then(|| page.run.clone());
        let incident = (!page.incident.is_empty()).then(|| page.incident.clone());
        let entry = NewEntry {
            kind,
            run,
            incident,
            actor: "babysitter".into(),
            payload,
        };
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!(error = %e, dedup_key = %page.dedup_key, "cannot record what became of a page");
        }
    }

    /// `page_failed`: the page is queued for redelivery (or, with `given_up`, dropped after
    /// `redeliver_for` or refused for good — a human must look at the incident).
    pub async fn record_failure(&self, pager: &str, page: &Page, error: &str, given_up: bool) {
        self.append(
            EntryKind::PageFailed,
            page,
            json!({
                "pager": pager, "dedup_key": page.dedup_key, "action": page.action,
                "error": error, "queued": !given_up, "given_up": given_up,
            }),
        )
        .await;
    }

    /// `page` with `redelivered: true`: a queued page finally arrived.
    pub async fn record_redelivered(&self, pager: &str, page: &Page) {
        self.append(
            EntryKind::Page,
            page,
            json!({
                "pager": pager, "dedup_key": page.dedup_key, "action": page.action,
                "delivered": true, "redelivered": true,
            }),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::PageAction;

    #[tokio::test]
    async fn pages_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let audit = Arc::new(AuditLog::open(&url).await.unwrap());
        let store = PageStore::open(audit.clone()).await.unwrap();
        let t = Page::sample(PageAction::Trigger);
        let a = Page::sample(PageAction::Acknowledge);
        let o1 = store.insert("pd", &t, 1000, "HTTP 503").await.unwrap();
        let o2 = store.insert("pd", &a, 1000, "HTTP 503").await.unwrap();
        store.insert("slack", &t, 2000, "refused").await.unwrap();
        assert!(o2 > o1);
        store
            .set_tries("pd", &t.dedup_key, 3, "HTTP 502")
            .await
            .unwrap();
        store.record_failure("pd", &t, "HTTP 503", false).await;
        drop(store);

        let again = PageStore::open(audit.clone()).await.unwrap();
        let pd = again.load("pd").await.unwrap();
        assert_eq!(pd.len(), 2);
        assert_eq!(pd[0].page, t);
        assert_eq!(pd[1].page.action, PageAction::Acknowledge);
        assert_eq!((pd[0].tries, pd[0].last_error.as_str()), (3, "HTTP 502"));
        assert_eq!(pd[0].first_failed_ms, 1000);
        // New rows sort after the old ones.
        let o3 = again.insert("pd", &t, 3000, "x").await.unwrap();
        assert!(o3 > o2);
        again.delete("pd", o3).await.unwrap();
        again.delete_key("pd", &t.dedup_key).await.unwrap();
        assert!(again.load("pd").await.unwrap().is_empty());
        assert_eq!(
            again.count().await.unwrap(),
            1,
            "slack's page is still there"
        );

        let failed = audit
            .query(&crate::audit::Filter {
                kind: Some(EntryKind::PageFailed),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].payload["pager"], "pd");
        assert_eq!(failed[0].payload["queued"], true);
        assert_eq!(failed[0].incident.as_deref(), Some("inc-3"));
    }
}
