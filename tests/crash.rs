//! Idempotency across crashes: the real binary is SIGKILLed between an action's intent and its
//! outcome, restarted on the same data, and settles that action exactly once; and the engine's
//! recovery on its own, for an action that did reach the workload and one that did not.
//!
//! The crash point is deterministic: `BABYSITTER_TEST_CRASH_AFTER_INTENT=hang` makes the
//! process stop right after the first intent is durable (it prints `crash-test: intent KEY
//! written` and blocks); the test then kills it with SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use babysitter::act::{Action, Actuator, ChangeOp, ConfigChange, Target};
use babysitter::audit::{AuditLog, Entry, EntryKind, Filter, NewEntry};
use babysitter::engine::CRASH_AFTER_INTENT_ENV;
use common::Harness;
use serde_json::json;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_babysitter")
}

async fn all_entries(url: &str) -> Vec<Entry> {
    let log = AuditLog::open(url).await.expect("open audit log");
    let entries = log
        .query(&Filter {
            limit: Some(10_000),
            ..Filter::default()
        })
        .await
        .expect("query");
    let report = log.verify().await.expect("verify");
    assert!(report.ok(), "the chain survives a SIGKILL: {report}");
    log.close().await;
    entries
}

fn with_key<'a>(entries: &'a [Entry], kind: EntryKind, key: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.kind == kind && e.payload["key"] == json!(key))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_intent_and_outcome_neither_repeats_nor_loses_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let url = format!("sqlite://{}?mode=rwc", data.join("audit.db").display());
    let demo = |extra_env: Option<(&str, &str)>, run_for: &str| {
        let mut cmd = Command::new(bin());
        cmd.args([
            "demo",
            "--speed",
            "180",
            "--for",
            run_for,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(&data)
        .env_remove(CRASH_AFTER_INTENT_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some((k, v)) = extra_env {
            cmd.env(k, v);
        }
        cmd
    };

    // 1. Run until the first intent is durable, then SIGKILL.
    let mut child = demo(Some((CRASH_AFTER_INTENT_ENV, "hang")), "120s")
        .spawn()
        .expect("start the demo");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("crash-test: intent ") {
                let key = rest.trim_end_matches(" written").to_string();
                let _ = tx.send(key);
            }
        }
    });
    let key = rx.recv_timeout(Duration::from_secs(90));
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no `stopped` entry.
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    let key = key.expect("the demo wrote an intent within 90 s");
    assert!(!status.success());

    let before = all_entries(&url).await;
    assert_eq!(with_key(&before, EntryKind::ActionIntent, &key).len(), 1);
    assert!(
        with_key(&before, EntryKind::ActionOutcome, &key).is_empty(),
        "killed before the outcome"
    );
    assert!(!before.iter().any(|e| e.kind == EntryKind::Stopped));
    let crashed_incident = with_key(&before, EntryKind::ActionIntent, &key)[0]
        .incident
        .clone()
        .expect("the intent names its incident");

    // 2. Restart on the same data: recovery settles the intent before the loop acts.
    let out = demo(None, "6s").output().expect("restart the demo");
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = all_entries(&url).await;
    let intents = with_key(&after, EntryKind::ActionIntent, &key);
    let recoveries = with_key(&after, EntryKind::Recovery, &key);
    let outcomes = with_key(&after, EntryKind::ActionOutcome, &key);
    assert_eq!(intents.len(), 1, "the action was not planned again");
    assert_eq!(recoveries.len(), 1, "one recovery decision");
    assert_eq!(outcomes.len(), 1, "settled exactly once");
    assert!(intents[0].seq < recoveries[0].seq && recoveries[0].seq < outcomes[0].seq);
    assert_eq!(recoveries[0].payload["found"], "not done");
    assert_eq!(outcomes[0].payload["recovered"], true);
    assert_eq!(
        outcomes[0].payload["action"], intents[0].payload["action"],
        "the outcome is for the very action of the intent"
    );
    // Every other intent has exactly one outcome; new incidents do not reuse the crashed id.
    for intent in after.iter().filter(|e| e.kind == EntryKind::ActionIntent) {
        let k = intent.payload["key"].as_str().expect("key");
        assert_eq!(
            with_key(&after, EntryKind::ActionOutcome, k).len(),
            1,
            "intent {k} has one outcome"
        );
    }
    let reopened = after
        .iter()
        .filter(|e| e.kind == EntryKind::IncidentOpened)
        .filter(|e| e.incident.as_deref() == Some(crashed_incident.as_str()))
        .count();
    assert_eq!(reopened, 1, "incident id {crashed_incident} was not reused");
}

fn lr_half() -> Action {
    Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Scale(0.5),
        }],
    }
}

async fn write_intent(h: &Harness, key: &str, action: &Action) {
    h.audit
        .append(NewEntry {
            kind: EntryKind::ActionIntent,
            run: Some("run-a".into()),
            incident: Some("inc-7".into()),
            actor: "babysitter".into(),
            payload: json!({
                "key": key, "action": action,
                "target": Target::Simulated { run: "run-a".into() },
            }),
        })
        .await
        .expect("intent");
}

#[tokio::test]
async fn an_action_that_reached_the_workload_is_recorded_not_repeated() {
    let h = Harness::new(vec![("run-a", vec![])], |_| {}).await;
    let target = Target::Simulated {
        run: "run-a".into(),
    };
    let key = "inc-7/a0/s0";
    write_intent(&h, key, &lr_half()).await;
    // The action happened; the crash came before its outcome was written.
    h.sim
        .execute(&target, &lr_half(), key)
        .await
        .expect("acted");
    assert_eq!(
        h.sim.status("run-a").expect("status").pending_lr_scale,
        Some(0.5)
    );

    let rec = h.engine.settle_unfinished_intents().await;
    assert_eq!(rec.found_done, vec![key.to_string()]);
    assert!(rec.executed.is_empty());
    assert_eq!(
        h.sim.status("run-a").expect("status").pending_lr_scale,
        Some(0.5),
        "not patched twice"
    );
    let kinds = h.kinds("inc-7").await;
    assert_eq!(
        kinds,
        vec![
            EntryKind::ActionIntent,
            EntryKind::Recovery,
            EntryKind::ActionOutcome
        ]
    );
    let entries = h.entries("inc-7").await;
    assert_eq!(entries[1].payload["found"], "done");
    assert_eq!(entries[2].payload["ok"], true);
    // Settling again finds nothing to do.
    assert_eq!(
        h.engine.settle_unfinished_intents().await,
        Default::default()
    );
}

#[tokio::test]
async fn an_action_that_never_ran_runs_once_under_its_key() {
    let h = Harness::new(vec![("run-a", vec![])], |_| {}).await;
    let key = "inc-7/a0/s0";
    write_intent(&h, key, &lr_half()).await;
    assert_eq!(
        h.sim.status("run-a").expect("status").pending_lr_scale,
        None
    );
    let rec = h.engine.settle_unfinished_intents().await;
    assert_eq!(rec.executed, vec![key.to_string()]);
    assert_eq!(
        h.sim.status("run-a").expect("status").pending_lr_scale,
        Some(0.5)
    );
    assert_eq!(
        h.engine.settle_unfinished_intents().await,
        Default::default(),
        "a second start settles nothing again"
    );
    assert_eq!(
        h.sim.status("run-a").expect("status").pending_lr_scale,
        Some(0.5),
        "executed exactly once"
    );
    let entries = h.entries("inc-7").await;
    let kinds: Vec<_> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::ActionIntent,
            EntryKind::Recovery,
            EntryKind::ActionOutcome
        ]
    );
    assert_eq!(entries[1].payload["found"], "not done");
    assert_eq!(entries[2].payload["recovered"], true);
    // An intent for a run that is no longer watched is settled without acting.
    h.audit
        .append(NewEntry {
            kind: EntryKind::ActionIntent,
            run: Some("gone".into()),
            incident: Some("inc-8".into()),
            actor: "babysitter".into(),
            payload: json!({"key": "inc-8/a0/s0", "action": lr_half(),
                "target": Target::Simulated { run: "gone".into() }}),
        })
        .await
        .expect("intent");
    let rec = h.engine.settle_unfinished_intents().await;
    assert_eq!(rec.abandoned, vec!["inc-8/a0/s0".to_string()]);
    let last = h.entries("inc-8").await;
    assert_eq!(
        last.last().map(|e| e.payload["ok"].clone()),
        Some(json!(false))
    );
}

#[tokio::test]
async fn a_pause_settled_at_recovery_leaves_the_watch_paused() {
    let h = Harness::new(vec![("run-a", vec![])], |_| {}).await;
    let key = "inc-7/a0/s0";
    write_intent(&h, key, &Action::Pause).await;
    let rec = h.engine.settle_unfinished_intents().await;
    assert_eq!(rec.executed, vec![key.to_string()]);
    assert_eq!(
        h.sim.status("run-a").expect("status").phase,
        babysitter::sim::SimPhase::Paused
    );
    // The watch knows: its progress detectors stay quiet on the paused run.
    h.tick().await;
    let view = h.engine.view();
    let w = view
        .watches
        .iter()
        .find(|w| w.run == "run-a")
        .expect("watch");
    assert_eq!(w.status, "paused");
    // And a babysitter restarted on the same log knows it too.
    let report = h.engine.restore().await;
    assert_eq!(report.paused, vec!["run-a".to_string()]);
}
