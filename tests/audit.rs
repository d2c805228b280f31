//! The audit log on SQLite and on a real PostgreSQL started here (initdb + pg_ctl on a free
//! loopback port): concurrent writers keep one chain; every edit, deletion and reordering is
//! named by verify; signed heads catch a rewrite of the whole database and a truncated tail;
//! retention leaves a verifiable checkpoint; export writes JSON Lines.
//!
//! PostgreSQL: the server binaries are looked up under /usr/lib/postgresql/*/bin (or
//! `BABYSITTER_PG_BIN`). When they are missing the PostgreSQL tests print why and pass, unless
//! `BABYSITTER_REQUIRE_PG` is set (scripts/test sets it), where they fail loudly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use babysitter::audit::{
    AuditLog, AuditOptions, EntryKind, Filter, HashInput, HeadKey, HeadSigning, NewEntry,
    entry_hash, heads,
};
use serde_json::json;
use sqlx::{AnyPool, AssertSqlSafe, Row};

#[path = "pg/mod.rs"]
mod pg;
use pg::{Pg, connect};

// ---------------------------------------------------------------------------------------------
// The same checks on either backend

fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

fn entry(kind: EntryKind, run: &str, n: i64) -> NewEntry {
    NewEntry {
        kind,
        run: Some(run.to_string()),
        incident: Some(format!("inc-{}", n % 3)),
        actor: "babysitter".into(),
        payload: json!({"n": n, "note": format!("entry {n}")}),
    }
}

async fn exec(pool: &AnyPool, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("raw SQL {sql}: {e}"));
}

/// Six tasks on one handle and two on another (two handles are like two processes: separate
/// in-process locks) append at once; the result is one contiguous, verifying chain in which
/// each writer's entries keep their order.
async fn concurrent_writers_keep_one_chain(url: &str) {
    let a = Arc::new(AuditLog::open(url).await.expect("open a"));
    let b = Arc::new(AuditLog::open(url).await.expect("open b"));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = if t < 6 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                log.append(entry(EntryKind::Decision, &format!("w{t}"), i))
                    .await
                    .expect("concurrent append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let report = a.verify().await.expect("verify");
    assert!(report.ok(), "{report}");
    assert_eq!(report.entries, 240);
    let all = b
        .query(&Filter {
            limit: Some(1000),
            ..Filter::default()
        })
        .await
        .expect("query");
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=240).collect::<Vec<_>>());
    for t in 0..8 {
        let ns: Vec<i64> = all
            .iter()
            .filter(|e| e.run.as_deref() == Some(&format!("w{t}")))
            .filter_map(|e| e.payload["n"].as_i64())
            .collect();
        assert_eq!(
            ns,
            (0..30).collect::<Vec<_>>(),
            "writer w{t} kept its order"
        );
    }
    assert!(all.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    assert_eq!(a.head().await.expect("head"), b.head().await.expect("head"));
    a.close().await;
    b.close().await;
}

/// Edits, deletes and swaps every entry in turn (undoing each) and checks that verify names
/// exactly that entry each time.
async fn every_tampering_is_named(url: &str) {
    const N: i64 = 7;
    let log = AuditLog::open(url).await.expect("open");
    for i in 1..=N {
        log.append(entry(EntryKind::Finding, "run-a", i))
            .await
            .expect("append");
    }
    let raw = connect(url).await;
    assert!(log.verify().await.expect("verify").ok());

    for k in 1..=N {
        // Edit the payload, then the actor.
        exec(
            &raw,
            &format!("UPDATE audit_log SET payload = '{{\"n\":-1}}' WHERE seq = {k}"),
        )
        .await;
        let r = log.verify().await.expect("verify edited");
        let bad = r.first_bad.clone().expect("edit detected");
        assert_eq!(bad.seq, k, "{r}");
        assert!(bad.reason.starts_with("content was edited"), "{r}");
        assert_eq!(r.entries, (k - 1) as u64);
        exec(
            &raw,
            &format!(
                "UPDATE audit_log SET payload = '{{\"n\":{k},\"note\":\"entry {k}\"}}', actor = 'mallory' WHERE seq = {k}"
            ),
        )
        .await;
        let r = log.verify().await.expect("verify edited actor");
        assert_eq!(r.first_bad.map(|b| b.seq), Some(k));
        exec(
            &raw,
            &format!("UPDATE audit_log SET actor = 'babysitter' WHERE seq = {k}"),
        )
        .await;
        assert!(log.verify().await.expect("undone").ok(), "edit {k} undone");
    }

    for k in 1..N {
        // Delete entry k (the tail is the signed heads' job, see below) and put it back.
        let row = sqlx::query("SELECT ts, kind, run, incident, actor, payload, prev_hash, hash FROM audit_log WHERE seq = $1")
            .bind(k)
            .fetch_one(&raw)
            .await
            .expect("read row");
        exec(&raw, &format!("DELETE FROM audit_log WHERE seq = {k}")).await;
        let r = log.verify().await.expect("verify deleted");
        let bad = r.first_bad.clone().expect("deletion detected");
        assert_eq!(bad.seq, k, "{r}");
        assert_eq!(bad.reason, format!("entry {k} is missing (deleted?)"));
        let text = |c: &str| row.try_get::<String, _>(c).expect("column");
        sqlx::query("INSERT INTO audit_log (seq, ts, kind, run, incident, actor, payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(k)
            .bind(text("ts"))
            .bind(text("kind"))
            .bind(text("run"))
            .bind(text("incident"))
            .bind(text("actor"))
            .bind(text("payload"))
            .bind(text("prev_hash"))
            .bind(text("hash"))
            .execute(&raw)
            .await
            .expect("restore row");
        assert!(
            log.verify().await.expect("undone").ok(),
            "delete {k} undone"
        );
    }

    for k in 1..N {
        // Reorder: entries k and k+1 swap places.
        let swap = |x: i64, y: i64| {
            format!(
                "UPDATE audit_log SET seq = -1 WHERE seq = {x}; UPDATE audit_log SET seq = {x} WHERE seq = {y}; UPDATE audit_log SET seq = {y} WHERE seq = -1"
            )
        };
        for stmt in swap(k, k + 1).split("; ") {
            exec(&raw, stmt).await;
        }
        let r = log.verify().await.expect("verify swapped");
        let bad = r.first_bad.clone().expect("swap detected");
        assert_eq!(bad.seq, k, "{r}");
        assert!(bad.reason.contains("relinked"), "{r}");
        for stmt in swap(k, k + 1).split("; ") {
            exec(&raw, stmt).await;
        }
        assert!(log.verify().await.expect("undone").ok(), "swap {k} undone");
    }
    raw.close().await;
    log.close().await;
}

fn test_key() -> HeadKey {
    HeadKey::from_bytes(b"test-signing-key-0123456789", "test").expect("key")
}

/// Recomputes the chain from entry `from` on after changing its payload: what someone with
/// write access but without the head key would do. `verify()` passes afterwards.
async fn rewrite_from(raw: &AnyPool, from: i64) {
    let rows = sqlx::query(
        "SELECT seq, ts, kind, run, incident, actor, payload, prev_hash FROM audit_log WHERE seq >= $1 ORDER BY seq",
    )
    .bind(from - 1)
    .fetch_all(raw)
    .await
    .expect("read rows");
    let mut prev: Option<String> = None;
    for row in rows {
        let seq: i64 = row.try_get("seq").expect("seq");
        let get = |c: &str| row.try_get::<Option<String>, _>(c).expect("column");
        if seq == from - 1 {
            prev = Some(
                sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
                    .bind(seq)
                    .fetch_one(raw)
                    .await
                    .expect("hash"),
            );
            continue;
        }
        let payload = if seq == from {
            r#"{"n":0,"note":"nothing happened"}"#.to_string()
        } else {
            get("payload").unwrap_or_default()
        };
        let prev_hash = prev
            .clone()
            .unwrap_or_else(|| babysitter::audit::GENESIS_HASH.into());
        let (ts, kind, actor) = (
            get("ts").unwrap_or_default(),
            get("kind").unwrap_or_default(),
            get("actor").unwrap_or_default(),
        );
        let (run, incident) = (get("run"), get("incident"));
        let hash = entry_hash(&HashInput {
            seq,
            ts: &ts,
            kind: &kind,
            run: run.as_deref(),
            incident: incident.as_deref(),
            actor: &actor,
            payload: &payload,
            prev_hash: &prev_hash,
        });
        sqlx::query("UPDATE audit_log SET payload = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&payload)
            .bind(&prev_hash)
            .bind(&hash)
            .bind(seq)
            .execute(raw)
            .await
            .expect("rewrite row");
        prev = Some(hash);
    }
}

/// Signed heads go to the log and the heads file; a rewrite of the whole chain passes
/// `verify()` but not the heads; so does a truncated tail. Retention leaves a checkpoint that
/// verify starts from, and old heads count as pruned.
async fn signed_heads_retention_and_export(url: &str, dir: &Path) {
    let heads_file = dir.join("heads.jsonl");
    let opts = AuditOptions {
        signing: Some(HeadSigning {
            key: test_key(),
            every: Duration::from_secs(3600),
            heads_file: Some(heads_file.clone()),
        }),
        retention: None,
    };
    let log = AuditLog::open_with(url, opts.clone()).await.expect("open");
    // An empty log signs nothing at open; the first append signs (the first time is due).
    let first = log
        .append(entry(EntryKind::Finding, "run-a", 1))
        .await
        .expect("append");
    for i in 2..=6 {
        log.append(entry(EntryKind::Decision, "run-a", i))
            .await
            .expect("append");
    }
    let head = log.sign_head().await.expect("sign").expect("a head");
    assert_eq!(head.seq, 7, "entry 1, its signed head (2), then 3..=7");
    let file = heads::read_heads_file(&heads_file).expect("heads file");
    assert_eq!(file.len(), 2);
    assert_eq!(
        (file[0].seq, file[0].hash.as_str()),
        (1, first.hash.as_str())
    );
    assert_eq!(file[1], head);
    let in_log = log
        .query(&Filter {
            kind: Some(EntryKind::SignedHead),
            ..Filter::default()
        })
        .await
        .expect("query heads");
    assert_eq!(in_log.len(), 2);
    assert_eq!(in_log[1].payload["mac"], json!(head.mac));
    let ok = log
        .check_heads(&file, Some(&test_key()))
        .await
        .expect("check");
    assert!(ok.ok() && ok.matched == 2, "{ok}");

    // Rewrite from entry 3 on: the chain verifies, the heads do not.
    let raw = connect(url).await;
    rewrite_from(&raw, 3).await;
    let report = log.verify().await.expect("verify rewritten");
    assert!(
        report.ok(),
        "a consistent rewrite passes the chain check: {report}"
    );
    let caught = log
        .check_heads(&file, Some(&test_key()))
        .await
        .expect("check rewritten");
    let m = caught.first_mismatch.clone().expect("rewrite caught");
    assert_eq!(m.seq, 7, "{caught}");
    assert!(m.reason.contains("rewritten"), "{caught}");
    assert_eq!(caught.matched, 1);
    // A forged heads file (MAC made without the key) is refused as well.
    let mut forged = file.clone();
    forged[1].hash = log.head().await.expect("head").expect("head").1;
    let refused = log
        .check_heads(&forged, Some(&test_key()))
        .await
        .expect("check forged");
    assert!(
        refused
            .first_mismatch
            .is_some_and(|m| m.reason.contains("MAC")),
        "forged head accepted"
    );
    log.close().await;
    raw.close().await;
}

/// Truncating the tail passes the chain check but not the heads; retention deletes old entries
/// behind a checkpoint that verify starts from; export writes JSON Lines.
async fn truncation_and_retention(url: &str, dir: &Path) {
    let heads_file = dir.join("heads2.jsonl");
    let opts = AuditOptions {
        signing: Some(HeadSigning {
            key: test_key(),
            every: Duration::from_secs(3600),
            heads_file: Some(heads_file.clone()),
        }),
        retention: None,
    };
    let log = AuditLog::open_with(url, opts.clone()).await.expect("open");
    for i in 1..=5 {
        log.append(entry(EntryKind::Finding, "run-b", i))
            .await
            .expect("append");
    }
    let head = log.sign_head().await.expect("sign").expect("head");
    let raw = connect(url).await;
    exec(
        &raw,
        &format!("DELETE FROM audit_log WHERE seq >= {}", head.seq - 1),
    )
    .await;
    assert!(log.verify().await.expect("verify truncated").ok());
    let file = heads::read_heads_file(&heads_file).expect("heads");
    let r = log
        .check_heads(&file, Some(&test_key()))
        .await
        .expect("check truncated");
    assert_eq!(r.first_mismatch.map(|m| m.seq), Some(head.seq));
    exec(&raw, "DELETE FROM audit_log").await;
    raw.close().await;
    log.close().await;

    // Retention: everything older than the cutoff goes; a checkpoint keeps the chain whole.
    let log = AuditLog::open_with(url, opts).await.expect("reopen");
    for i in 1..=10 {
        log.append(entry(EntryKind::Decision, "run-c", i))
            .await
            .expect("append");
    }
    let old_head = log.sign_head().await.expect("sign").expect("head");
    let cp = log
        .prune(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("prune")
        .expect("a checkpoint");
    // Every entry was old, the head's own signed_head entry (old_head.seq + 1) too.
    assert_eq!(cp.seq, old_head.seq + 1);
    assert_eq!(cp.at, old_head.seq + 2);
    assert!(cp.mac.is_some(), "signed logs sign their checkpoints");
    assert_eq!(log.count().await.expect("count"), 1);
    for i in 11..=13 {
        log.append(entry(EntryKind::Decision, "run-c", i))
            .await
            .expect("append after retention");
    }
    let r = log.verify().await.expect("verify after retention");
    assert!(r.ok(), "{r}");
    assert_eq!(r.checkpoint, Some(cp.seq));
    assert_eq!(r.entries, 4);
    let all_heads = heads::read_heads_file(&heads_file).expect("heads");
    let hr = log
        .check_heads(&all_heads, Some(&test_key()))
        .await
        .expect("heads after retention");
    assert!(hr.first_mismatch.is_none(), "{hr}");
    assert!(hr.pruned >= 1, "{hr}");

    // The first entry after the checkpoint must link to it.
    let raw = connect(url).await;
    exec(
        &raw,
        &format!("DELETE FROM audit_log WHERE seq = {}", cp.at + 1),
    )
    .await;
    let r = log.verify().await.expect("verify");
    assert_eq!(r.first_bad.map(|b| b.seq), Some(cp.at + 1));

    // Export: JSON Lines, every entry, filters apply.
    let mut out = Vec::new();
    let n = log
        .export(&Filter::default(), &mut out)
        .await
        .expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(n as usize, lines.len());
    assert_eq!(lines.len(), 3, "checkpoint + 2 (one deleted above)");
    assert_eq!(lines[0]["kind"], "checkpoint");
    assert_eq!(lines[2]["payload"]["n"], 13);
    let mut out = Vec::new();
    let n = log
        .export(
            &Filter {
                kind: Some(EntryKind::Decision),
                limit: Some(1),
                ..Filter::default()
            },
            &mut out,
        )
        .await
        .expect("export filtered");
    assert_eq!(n, 1);
    raw.close().await;
    log.close().await;
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writers_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_writers_keep_one_chain(&sqlite_url(dir.path(), "a.db")).await;
}

#[tokio::test]
async fn sqlite_every_tampering_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    every_tampering_is_named(&sqlite_url(dir.path(), "a.db")).await;
}

#[tokio::test]
async fn sqlite_signed_heads_catch_a_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    signed_heads_retention_and_export(&sqlite_url(dir.path(), "a.db"), dir.path()).await;
}

#[tokio::test]
async fn sqlite_truncation_retention_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    truncation_and_retention(&sqlite_url(dir.path(), "a.db"), dir.path()).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL (one cluster per test: nextest runs each test in its own process)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_and_tampering() {
    let Some(pg) = Pg::start() else { return };
    concurrent_writers_keep_one_chain(&pg.database("concurrent").await).await;
    every_tampering_is_named(&pg.database("tamper").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_signed_heads_retention_and_export() {
    let Some(pg) = Pg::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    signed_heads_retention_and_export(&pg.database("heads").await, dir.path()).await;
    truncation_and_retention(&pg.database("retention").await, dir.path()).await;
}

// ---------------------------------------------------------------------------------------------
// The CLI: `audit verify --heads` and `audit export` on the real binary

#[tokio::test]
async fn cli_verify_with_heads_catches_a_rewrite_and_export_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("audit.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "cli-test-signing-key-0123\n").expect("key");
    let heads_file = dir.path().join("heads.jsonl");
    let log = AuditLog::open_with(
        &url,
        AuditOptions {
            signing: Some(HeadSigning {
                key: HeadKey::from_file(&key_file).expect("key"),
                every: Duration::from_secs(3600),
                heads_file: Some(heads_file.clone()),
            }),
            retention: None,
        },
    )
    .await
    .expect("open");
    for i in 1..=6 {
        log.append(entry(EntryKind::Decision, "run-a", i))
            .await
            .expect("append");
    }
    log.sign_head().await.expect("sign");
    log.close().await;

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_babysitter"))
            .args(args)
            .env_remove("BABYSITTER_AUDIT_SIGNING_KEY")
            .output()
            .expect("run babysitter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let db_arg = db.display().to_string();
    let heads_arg = heads_file.display().to_string();
    let key_arg = key_file.display().to_string();
    let verify = [
        "audit",
        "verify",
        "--db",
        &db_arg,
        "--heads",
        &heads_arg,
        "--key-file",
        &key_arg,
    ];
    let (ok, text) = run(&verify);
    assert!(ok, "{text}");
    assert!(
        text.contains("audit log OK") && text.contains("signed heads OK"),
        "{text}"
    );

    let (ok, text) = run(&["audit", "export", "--db", &db_arg, "--kind", "decision"]);
    assert!(ok, "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["payload"]["n"], 6);
    let (ok, text) = run(&[
        "audit", "export", "--db", &db_arg, "--since", "1h", "--limit", "2",
    ]);
    assert!(ok);
    assert_eq!(text.lines().count(), 2);

    // Rewrite from entry 4 on: the chain alone passes, the heads do not.
    let raw = connect(&url).await;
    rewrite_from(&raw, 4).await;
    raw.close().await;
    let (ok, text) = run(&["audit", "verify", "--db", &db_arg]);
    assert!(ok, "chain alone: {text}");
    let (ok, text) = run(&verify);
    assert!(!ok, "{text}");
    assert!(text.contains("signed heads MISMATCH at entry"), "{text}");
}
