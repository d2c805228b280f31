//! The `alert_forwarded` table (what alert enrichment last forwarded per Alertmanager
//! fingerprint) on SQLite and on a real PostgreSQL started here: it survives closing and
//! reopening the database (a restart), a second process on the same database (another replica)
//! sees what the first recorded at once, two processes creating it at once both succeed, pruning
//! keeps it bounded, and the hash-chained `audit_log` is never touched.
//!
//! PostgreSQL: see tests/audit.rs — skipped with a message when the server binaries are missing,
//! unless `BABYSITTER_REQUIRE_PG` is set (scripts/test sets it).

use babysitter::audit::{AuditLog, EntryKind, ForwardedAlert, NewEntry};
use serde_json::json;

#[path = "pg/mod.rs"]
mod pg;
use pg::Pg;

async fn forwarded_alerts_are_durable_shared_and_bounded(url: &str) {
    // Two processes starting at once on a fresh database both create the table.
    let (a, b) = tokio::join!(AuditLog::open(url), AuditLog::open(url));
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    a.append(NewEntry {
        kind: EntryKind::AlertReceived,
        run: Some("run-x".into()),
        incident: None,
        actor: "api:alertmanager-webhook".into(),
        payload: json!({"fingerprint": "f1"}),
    })
    .await
    .expect("append");

    a.record_forwarded_alert("f1", "firing", "digest-1", 1_000)
        .await
        .expect("record");
    // The other replica sees it at once (no cache anywhere).
    assert_eq!(
        b.forwarded_alert("f1").await.expect("read on b"),
        Some(ForwardedAlert {
            fingerprint: "f1".into(),
            status: "firing".into(),
            enrichment_sha256: "digest-1".into(),
            updated_ms: 1_000,
        })
    );
    b.record_forwarded_alert("f1", "resolved", "digest-2", 2_000)
        .await
        .expect("record on b");
    assert_eq!(
        a.forwarded_alert("f1")
            .await
            .expect("read on a")
            .map(|f| f.status),
        Some("resolved".into())
    );
    a.close().await;
    b.close().await;

    // A restart: everything is still there.
    let log = AuditLog::open(url).await.expect("reopen");
    let f1 = log.forwarded_alert("f1").await.expect("read").expect("f1");
    assert_eq!(
        (
            f1.status.as_str(),
            f1.enrichment_sha256.as_str(),
            f1.updated_ms
        ),
        ("resolved", "digest-2", 2_000)
    );
    assert_eq!(log.forwarded_alert("nope").await.expect("read"), None);

    // Bounded: resolved ones past the cut-off go, then the oldest beyond the limit.
    for i in 0..20 {
        log.record_forwarded_alert(&format!("g{i:02}"), "firing", "d", 10_000 + i)
            .await
            .expect("record");
    }
    assert_eq!(log.forwarded_alert_count().await.expect("count"), 21);
    assert_eq!(
        log.prune_forwarded_alerts(5_000, 100).await.expect("prune"),
        1
    );
    assert_eq!(log.forwarded_alert("f1").await.expect("read"), None);
    assert_eq!(
        log.prune_forwarded_alerts(5_000, 5).await.expect("prune"),
        15
    );
    assert_eq!(log.forwarded_alert_count().await.expect("count"), 5);
    assert!(log.forwarded_alert("g14").await.expect("read").is_none());
    assert!(log.forwarded_alert("g15").await.expect("read").is_some());
    assert!(log.forwarded_alert("g19").await.expect("read").is_some());

    // The chain holds exactly the one entry appended, intact.
    assert_eq!(log.count().await.expect("count"), 1);
    assert!(log.verify().await.expect("verify").ok());
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_forwarded_alerts_are_durable_shared_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    forwarded_alerts_are_durable_shared_and_bounded(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_forwarded_alerts_are_durable_shared_and_bounded() {
    let Some(pg) = Pg::start() else { return };
    forwarded_alerts_are_durable_shared_and_bounded(&pg.database("forwarded").await).await;
}
