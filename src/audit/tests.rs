//! Tests of the store against real SQLite files (and PostgreSQL when one is given).

use std::sync::Arc;

use serde_json::json;

use super::*;

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("audit.db").display())
}

async fn open_temp() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(&sqlite_url(dir.path()))
        .await
        .expect("open sqlite audit log");
    (dir, log)
}

fn entry(kind: EntryKind, run: Option<&str>, incident: Option<&str>, n: i64) -> NewEntry {
    NewEntry {
        kind,
        run: run.map(str::to_string),
        incident: incident.map(str::to_string),
        actor: "babysitter".into(),
        payload: json!({"n": n, "zeta": [1, 2], "alpha": {"b": true, "a": null}}),
    }
}

async fn fill(log: &AuditLog, n: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    for i in 1..=n {
        let kind = if i % 2 == 0 {
            EntryKind::Decision
        } else {
            EntryKind::Finding
        };
        out.push(
            log.append(entry(kind, Some("run-a"), None, i))
                .await
                .expect("append"),
        );
    }
    out
}

async fn exec(log: &AuditLog, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&log.pool)
        .await
        .unwrap_or_else(|e| panic!("raw SQL {sql}: {e}"));
}

fn seqs(entries: &[Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.seq).collect()
}

#[test]
fn entry_kind_names_match_serde() {
    for kind in EntryKind::ALL {
        let serde_name = serde_json::to_value(kind).expect("serialize kind");
        assert_eq!(serde_name, json!(kind.as_str()));
        assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(EntryKind::parse("Decision"), None);
}

#[test]
fn urls_are_classified_and_redacted() {
    assert_eq!(
        backend_of("sqlite:///var/lib/b/audit.db?mode=rwc"),
        Some(Backend::Sqlite { memory: false })
    );
    assert_eq!(
        backend_of("sqlite::memory:"),
        Some(Backend::Sqlite { memory: true })
    );
    assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
    assert_eq!(backend_of("mysql://h/db"), None);

    assert_eq!(
        redact_url("postgres://bob:s3cret@db.example:5432/audit?sslmode=require&password=x"),
        "postgres://bob:***@db.example:5432/audit?sslmode=require&password=***"
    );
    assert_eq!(
        redact_url("postgres://bob@db/audit"),
        "postgres://bob@db/audit"
    );
    assert_eq!(
        redact_url("sqlite:///tmp/a.db?mode=rwc"),
        "sqlite:///tmp/a.db?mode=rwc"
    );

    assert_eq!(
        sqlite_parent_dir("sqlite:///var/lib/my%20dir/audit.db?mode=rwc"),
        Some(PathBuf::from("/var/lib/my dir"))
    );
    assert_eq!(sqlite_parent_dir("sqlite://audit.db"), None);
}

#[tokio::test]
async fn appends_chain_and_query_filters_select_the_right_entries() {
    let (_dir, log) = open_temp().await;
    assert_eq!(log.head().await.expect("head"), None);

    let e1 = log
        .append(entry(EntryKind::Started, None, None, 1))
        .await
        .expect("append 1");
    let e2 = log
        .append(entry(EntryKind::Finding, Some("run-a"), None, 2))
        .await
        .expect("append 2");
    tokio::time::sleep(Duration::from_millis(15)).await;
    let boundary = Utc::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    let e3 = log
        .append(entry(
            EntryKind::IncidentOpened,
            Some("run-a"),
            Some("inc-1"),
            3,
        ))
        .await
        .expect("append 3");
    let e4 = log
        .append(entry(EntryKind::Decision, Some("run-b"), Some("inc-2"), 4))
        .await
        .expect("append 4");
    let e5 = log
        .append(entry(EntryKind::Decision, Some("run-a"), Some("inc-1"), 5))
        .await
        .expect("append 5");

    assert_eq!(
        seqs(&[e1.clone(), e2.clone(), e3.clone(), e4.clone(), e5.clone()]),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(e1.prev_hash, GENESIS_HASH);
    assert_eq!(e2.prev_hash, e1.hash);
    assert_eq!(e5.prev_hash, e4.hash);
    assert_eq!(e1.hash.len(), 64);
    // ts: RFC 3339 UTC with milliseconds.
    assert_eq!(e1.ts.len(), "2026-11-02T10:00:00.123Z".len());
    assert!(e1.ts.ends_with('Z'));
    assert!(DateTime::parse_from_rfc3339(&e1.ts).is_ok());

    let all = log.query(&Filter::default()).await.expect("query all");
    assert_eq!(
        all,
        vec![e1.clone(), e2.clone(), e3.clone(), e4.clone(), e5.clone()]
    );
    assert_eq!(
        all[3].payload,
        json!({"n": 4, "zeta": [1, 2], "alpha": {"a": null, "b": true}})
    );

    let q = |f: Filter| {
        let log = &log;
        async move { seqs(&log.query(&f).await.expect("query")) }
    };
    assert_eq!(
        q(Filter {
            run: Some("run-a".into()),
            ..Filter::default()
        })
        .await,
        [2, 3, 5]
    );
    assert_eq!(
        q(Filter {
            incident: Some("inc-1".into()),
            ..Filter::default()
        })
        .await,
        [3, 5]
    );
    assert_eq!(
        q(Filter {
            kind: Some(EntryKind::Decision),
            ..Filter::default()
        })
        .await,
        [4, 5]
    );
    assert_eq!(
        q(Filter {
            run: Some("run-a".into()),
            kind: Some(EntryKind::Decision),
            ..Filter::default()
        })
        .await,
        [5]
    );
    assert_eq!(
        q(Filter {
            since: Some(boundary),
            ..Filter::default()
        })
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        q(Filter {
            until: Some(boundary),
            ..Filter::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        q(Filter {
            after_seq: Some(3),
            ..Filter::default()
        })
        .await,
        [4, 5]
    );
    assert_eq!(
        q(Filter {
            after_seq: Some(1),
            limit: Some(2),
            ..Filter::default()
        })
        .await,
        [2, 3]
    );
    assert_eq!(
        q(Filter {
            run: Some("nope".into()),
            ..Filter::default()
        })
        .await,
        Vec::<i64>::new()
    );

    assert_eq!(log.count().await.expect("count"), 5);
    assert_eq!(log.head().await.expect("head"), Some((5, e5.hash.clone())));
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.entries, 5);
    assert_eq!(report.head, Some((5, e5.hash.clone())));
    assert_eq!(
        report.to_string(),
        format!("audit log OK: 5 entries, head 5 {}", &e5.hash[..12])
    );
}

#[tokio::test]
async fn stored_hash_is_reproducible_from_the_documented_bytes() {
    let (_dir, log) = open_temp().await;
    let e = log
        .append(entry(EntryKind::Page, Some("r"), Some("i"), 1))
        .await
        .expect("append");
    let payload: String = sqlx::query_scalar("SELECT payload FROM audit_log WHERE seq = 1")
        .fetch_one(&log.pool)
        .await
        .expect("payload");
    assert_eq!(
        payload,
        r#"{"alpha":{"a":null,"b":true},"n":1,"zeta":[1,2]}"#
    );
    let bytes = format!(
        r#"[1,{ts:?},"page","r","i","babysitter",{payload:?},"{GENESIS_HASH}"]"#,
        ts = e.ts,
        payload = payload
    );
    use sha2::Digest;
    assert_eq!(e.hash, hex::encode(sha2::Sha256::digest(bytes.as_bytes())));
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let (_dir, log) = open_temp().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&log.pool)
        .await
        .expect("journal_mode");
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&log.pool)
        .await
        .expect("synchronous");
    assert_eq!(sync, 2, "synchronous=FULL");
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version DESC LIMIT 1")
            .fetch_one(&log.pool)
            .await
            .expect("schema version");
    assert_eq!(version, schema::latest_version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_one_contiguous_chain() {
    let (_dir, log) = open_temp().await;
    let log = Arc::new(log);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                log.append(entry(
                    EntryKind::Finding,
                    Some(&format!("run-{t}")),
                    None,
                    i,
                ))
                .await
                .expect("concurrent append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(log.count().await.expect("count"), 400);
    let all = log.query(&Filter::default()).await.expect("query");
    assert_eq!(seqs(&all), (1..=400).collect::<Vec<_>>());
    for t in 0..8 {
        let mine = log
            .query(&Filter {
                run: Some(format!("run-{t}")),
                ..Filter::default()
            })
            .await
            .expect("query run");
        let ns: Vec<_> = mine.iter().map(|e| e.payload["n"].as_i64()).collect();
        assert_eq!(
            ns,
            (0..50).map(Some).collect::<Vec<_>>(),
            "task {t} appended in order"
        );
    }
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.entries, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_cannot_fork_the_chain() {
    // Two AuditLogs have separate in-process locks, like two processes: the seq primary key
    // and the retry on a taken seq must still give one chain.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let a = Arc::new(AuditLog::open(&url).await.expect("open a"));
    let b = Arc::new(AuditLog::open(&url).await.expect("open b"));
    let mut tasks = Vec::new();
    for (name, log) in [("a", &a), ("b", &b), ("a", &a), ("b", &b)] {
        let log = Arc::clone(log);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                log.append(entry(EntryKind::Decision, Some(name), None, i))
                    .await
                    .expect("append from two handles");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let report = a.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.entries, 100);
    assert_eq!(b.head().await.expect("head"), report.head);
}

async fn tampered(sql: &[&str]) -> VerifyReport {
    let (_dir, log) = open_temp().await;
    fill(&log, 8).await;
    assert!(log.verify().await.expect("verify before").ok());
    for stmt in sql {
        exec(&log, stmt).await;
    }
    log.verify().await.expect("verify after")
}

#[tokio::test]
async fn an_edited_payload_is_detected_at_that_entry() {
    let report = tampered(&[r#"UPDATE audit_log SET payload = '{"n":999}' WHERE seq = 5"#]).await;
    let bad = report.first_bad.as_ref().expect("tampering detected");
    assert_eq!(bad.seq, 5);
    assert_eq!(report.entries, 4);
    assert!(
        bad.reason.starts_with("content was edited"),
        "{}",
        bad.reason
    );
    assert!(
        report
            .to_string()
            .starts_with("audit log BROKEN at entry 5 (kind finding): content was edited"),
        "{report}"
    );
}

#[tokio::test]
async fn a_deleted_entry_is_reported_missing() {
    let report = tampered(&["DELETE FROM audit_log WHERE seq = 4"]).await;
    let bad = report.first_bad.as_ref().expect("deletion detected");
    assert_eq!(bad.seq, 4);
    assert_eq!(bad.reason, "entry 4 is missing (deleted?)");
    assert_eq!(report.entries, 3);
    assert_eq!(
        report.to_string(),
        "audit log BROKEN at entry 4: entry 4 is missing (deleted?); the 3 entries before it verify"
    );
}

#[tokio::test]
async fn swapped_entries_are_reported_out_of_order() {
    // Swap the full contents (everything but seq) of entries 3 and 6.
    let report = tampered(&[
        "UPDATE audit_log SET seq = -3 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 6",
        "UPDATE audit_log SET seq = 6 WHERE seq = -3",
    ])
    .await;
    let bad = report.first_bad.as_ref().expect("reorder detected");
    assert_eq!(bad.seq, 3);
    assert!(
        bad.reason.starts_with("out of order or relinked"),
        "{}",
        bad.reason
    );
    assert_eq!(report.entries, 2);
}

#[tokio::test]
async fn a_changed_kind_is_detected() {
    let report = tampered(&["UPDATE audit_log SET kind = 'decision' WHERE seq = 3"]).await;
    let bad = report.first_bad.as_ref().expect("kind change detected");
    assert_eq!((bad.seq, bad.kind.as_deref()), (3, Some("decision")));
    assert!(
        bad.reason.starts_with("content was edited"),
        "{}",
        bad.reason
    );

    let report = tampered(&["UPDATE audit_log SET kind = 'teleport' WHERE seq = 2"]).await;
    let bad = report.first_bad.as_ref().expect("unknown kind detected");
    assert_eq!(
        (bad.seq, bad.reason.as_str()),
        (2, "unknown kind \"teleport\"")
    );
}

#[tokio::test]
async fn query_names_an_unreadable_entry() {
    let (_dir, log) = open_temp().await;
    fill(&log, 3).await;
    exec(&log, "UPDATE audit_log SET payload = '{oops' WHERE seq = 2").await;
    let err = log
        .query(&Filter::default())
        .await
        .expect_err("corrupt row");
    assert!(
        matches!(err, AuditError::CorruptEntry { seq: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("audit entry 2"), "{err}");
    let report = log.verify().await.expect("verify");
    assert_eq!(report.first_bad.map(|b| b.seq), Some(2));
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let log = AuditLog::open(&url).await.expect("open");
    let before = fill(&log, 3).await;
    log.close().await;
    drop(log);

    let log = AuditLog::open(&url).await.expect("reopen");
    assert_eq!(
        log.head().await.expect("head"),
        Some((3, before[2].hash.clone()))
    );
    let next = log
        .append(entry(EntryKind::Stopped, None, None, 4))
        .await
        .expect("append after reopen");
    assert_eq!(next.seq, 4);
    assert_eq!(next.prev_hash, before[2].hash);
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.entries, 4);
}

#[tokio::test]
async fn a_failed_append_marks_the_log_unhealthy_until_one_succeeds() {
    let (_dir, log) = open_temp().await;
    fill(&log, 2).await;
    assert!(log.is_healthy());
    exec(
        &log,
        "CREATE TRIGGER block_appends BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'disk says no'); END",
    )
    .await;
    let err = log
        .append(entry(EntryKind::ActionIntent, Some("run-a"), None, 3))
        .await
        .expect_err("append must fail");
    assert!(!log.is_healthy());
    let msg = err.to_string();
    assert!(msg.contains("appending entry 3"), "{msg}");
    assert!(msg.contains("audit_log"), "{msg}");
    assert!(msg.contains("disk says no"), "{msg}");

    exec(&log, "DROP TRIGGER block_appends").await;
    let e = log
        .append(entry(EntryKind::ActionIntent, Some("run-a"), None, 3))
        .await
        .expect("append after recovery");
    assert!(log.is_healthy());
    assert_eq!(e.seq, 3, "a failed append consumes no sequence number");
    assert!(log.verify().await.expect("verify").ok());

    log.close().await;
    assert!(
        log.append(entry(EntryKind::Stopped, None, None, 4))
            .await
            .is_err()
    );
    assert!(!log.is_healthy());
}

#[tokio::test]
async fn incidents_upsert_and_load() {
    let (_dir, log) = open_temp().await;
    assert!(log.load_incidents().await.expect("load empty").is_empty());
    log.save_incident(
        "inc-2",
        "run-b",
        "open",
        &json!({"id": "inc-2", "findings": 1}),
    )
    .await
    .expect("save inc-2");
    log.save_incident("inc-1", "run-a", "open", &json!({"id": "inc-1"}))
        .await
        .expect("save inc-1");
    log.save_incident(
        "inc-2",
        "run-b",
        "acting",
        &json!({"id": "inc-2", "findings": 3}),
    )
    .await
    .expect("update inc-2");

    let data = log.load_incidents().await.expect("load");
    assert_eq!(
        data,
        vec![
            json!({"id": "inc-1"}),
            json!({"id": "inc-2", "findings": 3})
        ]
    );
    let records = log.load_incident_records().await.expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(
        (
            records[1].id.as_str(),
            records[1].run.as_str(),
            records[1].state.as_str()
        ),
        ("inc-2", "run-b", "acting")
    );
    assert!(DateTime::parse_from_rfc3339(&records[1].updated_at).is_ok());

    exec(
        &log,
        "UPDATE incidents SET data = 'nope' WHERE id = 'inc-1'",
    )
    .await;
    let err = log.load_incidents().await.expect_err("corrupt incident");
    assert!(err.to_string().contains("incident inc-1"), "{err}");
}

#[tokio::test]
async fn in_memory_database_keeps_its_entries() {
    let log = AuditLog::open("sqlite::memory:")
        .await
        .expect("open memory");
    fill(&log, 3).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.count().await.expect("count"), 3);
    assert!(log.verify().await.expect("verify").ok());
}

#[tokio::test]
async fn open_errors_name_what_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write file");

    let url = format!("sqlite://{}/sub/audit.db?mode=rwc", file.display());
    let err = AuditLog::open(&url).await.expect_err("parent is a file");
    assert!(matches!(err, AuditError::CreateDir { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}/sub", file.display())), "{msg}");

    let url = format!("sqlite://{}/missing.db", dir.path().display());
    let err = AuditLog::open(&url)
        .await
        .expect_err("no mode=rwc, no file");
    assert!(matches!(err, AuditError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing.db"), "{err}");

    let err = AuditLog::open("mysql://root:hunter2@db/audit")
        .await
        .expect_err("unsupported");
    let msg = err.to_string();
    assert!(msg.contains("unsupported audit database URL"), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let log = AuditLog::open(&url).await.expect("open");
    exec(
        &log,
        "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', 'now')",
    )
    .await;
    log.close().await;
    let err = AuditLog::open(&url).await.expect_err("newer schema");
    assert!(
        matches!(err, AuditError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

// PostgreSQL: tests/audit.rs starts a real cluster and runs the same checks there (concurrent
// writers, tampering, signed heads, retention); scripts/test requires it.

#[tokio::test]
async fn retention_keeps_the_chain_verifiable_from_its_checkpoint() {
    let (_dir, log) = open_temp().await;
    fill(&log, 5).await;
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let cp = log.prune(cutoff).await.expect("prune").expect("checkpoint");
    assert_eq!((cp.seq, cp.at, cp.mac.clone()), (5, 6, None));
    assert_eq!(log.count().await.expect("count"), 1);
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!((report.entries, report.checkpoint), (1, Some(5)));
    // An earlier cutoff finds nothing; a later one prunes the checkpoint itself and chains a
    // new one to it.
    assert!(
        log.prune(Utc::now() - chrono::Duration::hours(1))
            .await
            .expect("prune")
            .is_none()
    );
    let again = log
        .prune(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("prune")
        .expect("checkpoint");
    assert_eq!((again.seq, again.at), (6, 7));
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.checkpoint, Some(6));
    // Retention on open options runs on the first append.
    let (_dir, with_retention) = filled_then_reopened(3, RETAIN_NOTHING).await;
    with_retention
        .append(entry(EntryKind::Decision, None, None, 9))
        .await
        .expect("append");
    assert_eq!(kinds(&with_retention).await, vec![EntryKind::Checkpoint]);
    assert!(with_retention.verify().await.expect("verify").ok());
}

const RETAIN_NOTHING: AuditOptions = AuditOptions {
    signing: None,
    retention: Some(Duration::ZERO),
};

/// A log with `n` entries written without options, opened again with `opts`.
async fn filled_then_reopened(n: i64, opts: AuditOptions) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let plain = AuditLog::open(&url).await.expect("open");
    fill(&plain, n).await;
    plain.close().await;
    let log = AuditLog::open_with(&url, opts)
        .await
        .expect("open with options");
    (dir, log)
}

async fn kinds(log: &AuditLog) -> Vec<EntryKind> {
    log.query(&Filter::default())
        .await
        .expect("query")
        .iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn retention_runs_without_appends_when_the_log_is_maintained() {
    // A quiet babysitter: entries from before, and nothing appended since.
    let (_dir, log) = filled_then_reopened(4, RETAIN_NOTHING).await;
    assert_eq!(
        log.count().await.expect("count"),
        4,
        "opening prunes nothing"
    );
    log.maintain().await;
    assert_eq!(kinds(&log).await, vec![EntryKind::Checkpoint]);
    assert!(log.verify().await.expect("verify").ok());
    // Not due again within the hour: a second pass prunes nothing more.
    log.maintain().await;
    assert_eq!(log.count().await.expect("count"), 1);
}

#[tokio::test]
async fn a_maintained_idle_log_signs_what_is_new_once_and_then_nothing() {
    let (_dir, plain) = open_temp().await;
    let url = plain.url().to_string();
    plain.close().await;
    let every = Duration::from_secs(2);
    let log = AuditLog::open_with(
        &url,
        AuditOptions {
            signing: Some(HeadSigning {
                key: HeadKey::from_bytes(b"0123456789abcdef0123", "test key").expect("key"),
                every,
                heads_file: None,
            }),
            retention: None,
        },
    )
    .await
    .expect("open with signing");
    let signed_heads = |entries: &[Entry]| {
        entries
            .iter()
            .filter(|e| e.kind == EntryKind::SignedHead)
            .map(|e| e.payload["seq"].as_i64().unwrap_or(-1))
            .collect::<Vec<_>>()
    };
    // The first append signs (it is due); the next ones, within `every`, are left unsigned.
    fill(&log, 3).await;
    let all = log.query(&Filter::default()).await.expect("query");
    assert_eq!(signed_heads(&all), vec![1], "{all:#?}");
    // Then nothing is appended for a while: the loop's pass signs what is new, once.
    tokio::time::sleep(every + Duration::from_millis(100)).await;
    log.maintain().await;
    let all = log.query(&Filter::default()).await.expect("query");
    let last_entry = all
        .iter()
        .rev()
        .find(|e| e.kind != EntryKind::SignedHead)
        .map(|e| e.seq)
        .expect("entries");
    assert_eq!(signed_heads(&all), vec![1, last_entry], "{all:#?}");
    // Idle passes after that add nothing (no heartbeat entries), however late they come.
    let n = log.count().await.expect("count");
    tokio::time::sleep(every + Duration::from_millis(100)).await;
    for _ in 0..3 {
        log.maintain().await;
    }
    assert_eq!(log.count().await.expect("count"), n);
    assert!(log.verify().await.expect("verify").ok());
}
