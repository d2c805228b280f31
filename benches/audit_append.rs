//! Durable audit appends per second, on SQLite (WAL, `synchronous=FULL`) and PostgreSQL
//! (`synchronous_commit=on`): one writer, and eight concurrent tasks on one handle. Every
//! append is a committed transaction (read head, hash, insert) that is on disk when it returns.
//!
//! `cargo bench --bench audit_append` (or `--profile dev` on a shared machine). PostgreSQL: the
//! server binaries under /usr/lib/postgresql/*/bin start a throwaway cluster (as in
//! tests/audit.rs); without them that part is skipped. `BABYSITTER_BENCH_N` sets the appends
//! per case (default 2000). Results are recorded in docs/PERFORMANCE.md.

use std::sync::Arc;
use std::time::Instant;

use babysitter::audit::{AuditLog, EntryKind, NewEntry};
use serde_json::json;

#[path = "../tests/pg/mod.rs"]
mod pg;

fn entry(i: usize) -> NewEntry {
    NewEntry {
        kind: EntryKind::Decision,
        run: Some(format!("run-{}", i % 16)),
        incident: Some(format!("inc-{}", i % 64)),
        actor: "policy".into(),
        // A typical decision payload (≈ 250 bytes).
        payload: json!({
            "action": {"type": "restart_from_checkpoint", "checkpoint": {"step": 12000}},
            "step": 1, "attempt": 0, "verdict": "allow", "rule": "autonomy",
            "reason": "autonomy `act` allows restart_from_checkpoint; rate limit 1/3 in 1h",
            "i": i,
        }),
    }
}

async fn bench(name: &str, url: &str, n: usize) {
    let log = Arc::new(AuditLog::open(url).await.expect("open"));
    // Warm-up (connections, schema, page cache).
    for i in 0..50 {
        log.append(entry(i)).await.expect("append");
    }
    let t = Instant::now();
    for i in 0..n {
        log.append(entry(i)).await.expect("append");
    }
    let one = n as f64 / t.elapsed().as_secs_f64();

    let tasks = 8;
    let t = Instant::now();
    let mut handles = Vec::new();
    for w in 0..tasks {
        let log = Arc::clone(&log);
        handles.push(tokio::spawn(async move {
            for i in 0..n / tasks {
                log.append(entry(w * n + i)).await.expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let eight = (n / tasks * tasks) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = log.verify().await.expect("verify");
    let verify = report.entries as f64 / t.elapsed().as_secs_f64();
    assert!(report.ok(), "{report}");
    println!(
        "{name:<12} 1 writer: {one:>8.0} appends/s   8 tasks: {eight:>8.0} appends/s   verify: {verify:>9.0} entries/s ({} entries)",
        report.entries
    );
    log.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BABYSITTER_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    bench("sqlite", &sqlite, n).await;
    match pg::Pg::start() {
        Some(cluster) => {
            let url = cluster.database("bench").await;
            bench("postgresql", &url, n).await;
        }
        None => println!("postgresql   skipped (no server binaries)"),
    }
}
