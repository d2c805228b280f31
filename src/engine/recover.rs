//! Crash recovery: settling action intents that have no outcome.
//!
//! Every action is written as an intent (with its idempotency key) before it runs and as an
//! outcome after. A crash in between leaves an intent alone. On start-up,
//! [`Engine::settle_unfinished_intents`] finds each one and settles it before the loop runs:
//!
//! 1. it asks the actuator what was done under that key ([`Actuator::recall`], which looks at
//!    the workload); if the action happened, its outcome is recorded as it was;
//! 2. otherwise the action is carried out now *with the same key* (actuators are idempotent per
//!    key, so if it did happen after all, the workload is not changed twice);
//! 3. either way the log shows `action_intent`, then a `recovery` entry saying what was found
//!    and decided, then the `action_outcome` (with `"recovered": true`).
//!
//! A restored incident whose next step is the settled one moves past it, so the step is not
//! planned again. Page intents are not re-sent (pagers deduplicate by the incident's key and
//! the incident pages again if it still needs a human).
//!
//! Test hook: `BABYSITTER_TEST_CRASH_AFTER_INTENT` makes the process stop dead right after an
//! intent is durable — `abort` (or `1`) aborts, `hang` prints `crash-test: intent KEY written`
//! on stderr and blocks forever so a test can SIGKILL it. Only tests/crash.rs sets it.

use serde_json::json;

use super::Engine;
use crate::act::{Action, ActionKind, Target};
use crate::audit::{Entry, EntryKind, Filter, MAX_QUERY_LIMIT};
use crate::incident::{ActionRecord, IncidentEvent, IncidentState};

/// The environment variable of the crash-test hook (see the module docs).
pub const CRASH_AFTER_INTENT_ENV: &str = "BABYSITTER_TEST_CRASH_AFTER_INTENT";

/// Called right after an intent is durable: the crash-test hook.
pub(super) async fn crash_point_after_intent(key: &str) {
    match std::env::var(CRASH_AFTER_INTENT_ENV).as_deref() {
        Ok("1") | Ok("abort") => {
            eprintln!("crash-test: intent {key} written; aborting");
            std::process::abort();
        }
        Ok("hang") => {
            eprintln!("crash-test: intent {key} written");
            std::future::pending::<()>().await;
        }
        _ => {}
    }
}

/// What start-up recovery did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Keys whose action the actuator reported as already done.
    pub found_done: Vec<String>,
    /// Keys whose action was carried out at recovery.
    pub executed: Vec<String>,
    /// Keys settled without acting (pages, runs no longer watched, unreadable intents).
    pub abandoned: Vec<String>,
}

impl Engine {
    /// Every entry of one kind, in seq order (paged).
    async fn all_of(&self, kind: EntryKind) -> Result<Vec<Entry>, crate::audit::AuditError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .h
                .audit
                .query(&Filter {
                    kind: Some(kind),
                    after_seq: after,
                    limit: Some(MAX_QUERY_LIMIT),
                    ..Filter::default()
                })
                .await?;
            let n = page.len();
            after = page.last().map(|e| e.seq);
            out.extend(page);
            if n < MAX_QUERY_LIMIT as usize {
                return Ok(out);
            }
        }
    }

    /// Settles intents without outcomes (see the module docs). Also keeps new incident ids
    /// clear of every id the log has seen, so a new incident never reuses a crashed one's keys.
    pub async fn settle_unfinished_intents(&self) -> Recovered {
        let mut done = Recovered::default();
        let (intents, outcomes, opened) = match (
            self.all_of(EntryKind::ActionIntent).await,
            self.all_of(EntryKind::ActionOutcome).await,
            self.all_of(EntryKind::IncidentOpened).await,
        ) {
            (Ok(i), Ok(o), Ok(op)) => (i, o, op),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                tracing::error!(error = %e, "crash recovery cannot read the audit log; babysitter will not act until it can");
                return done;
            }
        };
        let mut st = self.state.lock().await;
        for id in opened.iter().filter_map(|e| e.incident.as_deref()) {
            if let Some(n) = id.strip_prefix("inc-").and_then(|n| n.parse::<u64>().ok()) {
                st.next_incident = st.next_incident.max(n + 1);
            }
        }
        let settled: std::collections::HashSet<&str> = outcomes
            .iter()
            .filter_map(|e| e.payload["key"].as_str())
            .collect();
        let now = self.h.clock.now();
        for intent in intents.iter() {
            let Some(key) = intent.payload["key"].as_str() else {
                continue;
            };
            if settled.contains(key) {
                continue;
            }
            let run = intent.run.as_deref();
            let incident = intent.incident.as_deref();
            let parsed = (
                serde_json::from_value::<Action>(intent.payload["action"].clone()),
                serde_json::from_value::<Target>(intent.payload["target"].clone()),
            );
            let (action, target) = match parsed {
                (Ok(a), Ok(t)) => (a, t),
                _ => {
                    self.settle(
                        run,
                        incident,
                        key,
                        intent,
                        json!({"found": "unreadable intent", "decision": "not retried"}),
                        None,
                    )
                    .await;
                    done.abandoned.push(key.to_string());
                    continue;
                }
            };
            let watched = run.is_some_and(|r| st.watches.contains_key(r));
            if action.kind() == ActionKind::Page || !watched {
                let why = if watched {
                    "pages are deduplicated by the incident's key; the incident pages again if it needs a human"
                } else {
                    "the run is no longer watched"
                };
                self.settle(
                    run,
                    incident,
                    key,
                    intent,
                    json!({"found": "unknown", "decision": "not retried", "why": why}),
                    Some((false, format!("not settled: {why}"), json!(null), &action)),
                )
                .await;
                done.abandoned.push(key.to_string());
                continue;
            }
            let (found, result) = match self.h.actuator.recall(&target, &action, key).await {
                Ok(Some(outcome)) => ("done", Ok(outcome)),
                Ok(None) | Err(_) => {
                    // Not done (or the workload cannot tell): run it now under the same key.
                    if !self.h.audit.is_healthy() {
                        tracing::error!(
                            key,
                            "crash recovery: audit log unhealthy; the action stays unsettled"
                        );
                        continue;
                    }
                    let recorded = self
                        .record(
                            EntryKind::Recovery,
                            run,
                            incident,
                            json!({"key": key, "intent_seq": intent.seq, "found": "not done", "decision": "execute with the same key"}),
                        )
                        .await;
                    if !recorded {
                        continue;
                    }
                    let r = self.h.actuator.execute(&target, &action, key).await;
                    ("not done", r)
                }
            };
            let ok = result.is_ok();
            let (detail, facts) = match result {
                Ok(o) => (o.detail, o.facts),
                Err(e) => (e.to_string(), json!(null)),
            };
            if found == "done" {
                self.record(
                    EntryKind::Recovery,
                    run,
                    incident,
                    json!({"key": key, "intent_seq": intent.seq, "found": "done", "decision": "record its outcome"}),
                )
                .await;
                done.found_done.push(key.to_string());
            } else {
                done.executed.push(key.to_string());
            }
            self.record(
                EntryKind::ActionOutcome,
                run,
                incident,
                json!({"key": key, "action": action, "ok": ok, "detail": detail, "facts": facts, "recovered": true}),
            )
            .await;
            // A restored incident waiting on this very step moves past it.
            if let Some(inc) = incident.and_then(|id| st.incidents.get_mut(id)) {
                let this_step = format!("{}/a{}/s{}", inc.id, inc.attempt, inc.next_step);
                if this_step == key
                    && let Some((_, decision)) = inc.decisions.last().cloned()
                {
                    inc.actions.push(ActionRecord {
                        key: key.to_string(),
                        step: inc.next_step,
                        attempt: inc.attempt,
                        action: action.clone(),
                        decision,
                        at: now,
                        ok,
                        detail: detail.clone(),
                    });
                    inc.next_step += 1;
                    inc.pending = None;
                    if matches!(
                        inc.state,
                        IncidentState::Diagnosing | IncidentState::AwaitingApproval
                    ) && let Err(e) = inc.apply(IncidentEvent::Act, now)
                    {
                        tracing::error!(incident = %inc.id, error = %e, "recovery transition");
                    }
                }
            }
            tracing::warn!(
                key,
                found,
                ok,
                "crash recovery settled an action intent without an outcome"
            );
        }
        done
    }

    /// Records a recovery entry and, when given, the outcome that settles the intent.
    async fn settle(
        &self,
        run: Option<&str>,
        incident: Option<&str>,
        key: &str,
        intent: &Entry,
        mut what: serde_json::Value,
        outcome: Option<(bool, String, serde_json::Value, &Action)>,
    ) {
        what["key"] = json!(key);
        what["intent_seq"] = json!(intent.seq);
        self.record(EntryKind::Recovery, run, incident, what).await;
        let (ok, detail, facts, action) = match outcome {
            Some((ok, detail, facts, action)) => (ok, detail, facts, json!(action)),
            None => (
                false,
                "not settled: unreadable intent".to_string(),
                json!(null),
                intent.payload["action"].clone(),
            ),
        };
        self.record(
            EntryKind::ActionOutcome,
            run,
            incident,
            json!({"key": key, "action": action, "ok": ok, "detail": detail, "facts": facts, "recovered": true}),
        )
        .await;
    }
}
