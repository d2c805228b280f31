//! Crash recovery: coming back after a restart or a leader change.
//!
//! Two things are rebuilt from the audit database before the loop runs.
//!
//! **Unfinished incidents and watch state** ([`Engine::restore`]). Every incident row that is not
//! final and belongs to a watched run is continued. A row that cannot be read back is never
//! dropped quietly: it is logged at ERROR with its id, counted in
//! `babysitter_incidents_unreadable_total` and listed in the [`RestoreReport`]. Whether babysitter
//! left a run *paused* is rebuilt from the audit log's `action_outcome` entries: per run, the last
//! successful pause, resume or restart-from-checkpoint after the run's last `watch_ended` decides
//! (a watch that ended starts fresh when it comes back, as it does in memory); a pause that a
//! `workload_suspension` entry after it says was undone outside babysitter (a human resumed the
//! workload) no longer counts. A hold by someone else is not restored: discovery reports every
//! watched workload's suspend field when it adds the watch, and the engine holds it again. The audit log is
//! the source because it is the durable record written around every action (the intent before,
//! the outcome after), it covers incidents that have since ended (an escalated incident leaves
//! its run paused) and it needs no call to the workload. The actuator is not asked:
//! [`crate::act::Actuator::recall`] answers "was the action with this key done", not "is the
//! workload paused now". A resume or restart rebuilt this way also restores where the run's new
//! life starts (the action's time, from the incident that ran it).
//!
//! **Action intents without an outcome.**
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
//! planned again, and a settled pause, resume or restart updates the watch as it would have. Page intents are not re-sent (pagers deduplicate by the incident's key and
//! the incident pages again if it still needs a human).
//!
//! Test hook: `BABYSITTER_TEST_CRASH_AFTER_INTENT` makes the process stop dead right after an
//! intent is durable — `abort` (or `1`) aborts, `hang` prints `crash-test: intent KEY written`
//! on stderr and blocks forever so a test can SIGKILL it. Only tests/crash.rs sets it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::json;

use super::{Engine, State};
use crate::act::{Action, ActionKind, Target};
use crate::audit::{Entry, EntryKind, Filter, IncidentRecord, MAX_QUERY_LIMIT};
use crate::incident::{ActionRecord, Incident, IncidentEvent, IncidentState};

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

/// What [`Engine::restore`] found in the audit database, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Unfinished incidents continued, by id.
    pub restored: Vec<String>,
    /// Watched runs babysitter had paused and that stay paused.
    pub paused: Vec<String>,
    /// Incident rows that could not be read back, so were not restored.
    pub skipped: Vec<SkippedIncident>,
}

/// An incident row [`Engine::restore`] could not read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedIncident {
    /// The row's id (the table's `id` column, readable even when its JSON is not; `?` when not
    /// even that can be read).
    pub id: String,
    /// The row's run and state columns, when the row could be read at all.
    pub run: Option<String>,
    /// `awaiting_approval`, `resolved`, ... as saved.
    pub state: Option<String>,
    /// Why it could not be read.
    pub error: String,
}

/// A pause, resume or restart-from-checkpoint that succeeded: what decides whether a run is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastLifeAction {
    pub kind: ActionKind,
    /// Its `action_outcome` entry's seq.
    pub seq: i64,
    /// The action's idempotency key (finds the incident's record of it, with its time).
    pub key: String,
}

/// Per run, the last successful pause, resume or restart-from-checkpoint recorded after the run's
/// last `watch_ended`. `outcomes` are `action_outcome` entries and `ended` `watch_ended` ones,
/// each in seq order. Outcomes that failed or whose action cannot be read are ignored (a failed
/// pause did not pause anything).
pub(crate) fn last_life_actions(
    outcomes: &[Entry],
    ended: &[Entry],
) -> BTreeMap<String, LastLifeAction> {
    let mut ended_at: HashMap<&str, i64> = HashMap::new();
    for e in ended {
        if let Some(run) = e.run.as_deref() {
            let seq = ended_at.entry(run).or_insert(e.seq);
            *seq = (*seq).max(e.seq);
        }
    }
    let mut last: BTreeMap<String, (i64, LastLifeAction)> = BTreeMap::new();
    for e in outcomes {
        let Some(run) = e.run.as_deref() else {
            continue;
        };
        if ended_at.get(run).is_some_and(|&end| e.seq < end) {
            continue;
        }
        if e.payload["ok"].as_bool() != Some(true) {
            continue;
        }
        let Ok(action) = serde_json::from_value::<Action>(e.payload["action"].clone()) else {
            continue;
        };
        let kind = action.kind();
        if !matches!(
            kind,
            ActionKind::Pause | ActionKind::Resume | ActionKind::RestartFromCheckpoint
        ) {
            continue;
        }
        let key = e.payload["key"].as_str().unwrap_or_default().to_string();
        if last.get(run).is_none_or(|(seq, _)| e.seq > *seq) {
            last.insert(
                run.to_string(),
                (
                    e.seq,
                    LastLifeAction {
                        kind,
                        seq: e.seq,
                        key,
                    },
                ),
            );
        }
    }
    last.into_iter().map(|(run, (_, a))| (run, a)).collect()
}

/// Runs whose last pause by babysitter (in `last`) was undone outside babysitter afterwards:
/// a `workload_suspension` entry (`suspensions`, in seq order) that released the run or noted
/// it resumed, after that pause. Maps each to the engine time the resume was noted (where its
/// new life starts).
pub(crate) fn resumed_after_pause(
    last: &BTreeMap<String, LastLifeAction>,
    suspensions: &[Entry],
) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for e in suspensions {
        let Some(run) = e.run.as_deref() else {
            continue;
        };
        let Some(pause) = last.get(run).filter(|a| a.kind == ActionKind::Pause) else {
            continue;
        };
        let undone = matches!(
            e.payload["change"].as_str(),
            Some("resumed_outside" | "released")
        );
        if e.seq > pause.seq
            && undone
            && let Some(at) = e.payload["at"].as_f64()
        {
            out.insert(run.to_string(), at);
        }
    }
    out
}

impl Engine {
    /// Reloads incidents that were not finished when babysitter last stopped (or when the last
    /// leader lost the Lease), and whether it had paused each watched run, so it continues where
    /// it was. Rows that cannot be read are reported, never dropped quietly (see the module docs).
    pub async fn restore(&self) -> RestoreReport {
        self.restore_from_db(None).await
    }

    /// [`Engine::restore`] for every run, or for one run (a watch added while running); for one
    /// run, incidents already in memory are kept.
    pub(super) async fn restore_from_db(&self, only: Option<&str>) -> RestoreReport {
        let mut report = RestoreReport::default();
        let records = match self.h.audit.load_incident_rows().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, run = only, "cannot load incidents: none restored");
                return report;
            }
        };
        let history = match (
            self.all_of(EntryKind::ActionOutcome, only).await,
            self.all_of(EntryKind::WatchEnded, only).await,
            self.all_of(EntryKind::WorkloadSuspension, only).await,
        ) {
            (Ok(outcomes), Ok(ended), Ok(suspensions)) => {
                let last = last_life_actions(&outcomes, &ended);
                let resumed = resumed_after_pause(&last, &suspensions);
                Some((last, resumed))
            }
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                tracing::error!(error = %e, run = only, "cannot read action outcomes: whether babysitter paused a run is not restored");
                None
            }
        };
        let mut st = self.state.lock().await;
        // When each action ran (clock time), from the incidents that ran it.
        let mut action_times: HashMap<String, f64> = HashMap::new();
        for rec in records {
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    let id = match &e {
                        crate::audit::AuditError::CorruptIncident { id, .. } => id.clone(),
                        _ => "?".to_string(),
                    };
                    reserve_id(&mut st, &id);
                    // Its run is unknown: restoring one run reports it only if asked for all.
                    if only.is_none() {
                        self.report_unreadable(&mut report, id, None, None, e.to_string());
                    }
                    continue;
                }
            };
            if only.is_some_and(|run| run != rec.run) {
                continue;
            }
            reserve_id(&mut st, &rec.id);
            let Some(inc) = self.read_incident(rec, &mut report) else {
                continue;
            };
            for a in &inc.actions {
                action_times.insert(a.key.clone(), a.at);
            }
            if inc.state.is_final() || !st.watches.contains_key(&inc.run) {
                continue;
            }
            if only.is_some() && st.incidents.contains_key(&inc.id) {
                continue;
            }
            tracing::info!(run = %inc.run, incident = %inc.id, state = %inc.state, "unfinished incident continued");
            report.restored.push(inc.id.clone());
            st.incidents.insert(inc.id.clone(), inc);
        }
        if let Some((history, resumed)) = history {
            for (run, w) in st.watches.iter_mut() {
                if only.is_some_and(|o| o != run) {
                    continue;
                }
                let last = history.get(run);
                w.paused = last.is_some_and(|a| a.kind == ActionKind::Pause);
                if let Some(at) = last
                    .filter(|a| a.kind != ActionKind::Pause)
                    .and_then(|a| action_times.get(&a.key))
                {
                    w.since = Some(*at);
                }
                // Someone resumed it outside babysitter after that pause (see `suspension`).
                if let Some(at) = resumed.get(run).filter(|_| w.paused) {
                    tracing::info!(
                        run,
                        "babysitter's pause of this run was undone outside babysitter: not paused"
                    );
                    w.paused = false;
                    w.since = Some(*at);
                }
                if w.paused {
                    tracing::info!(run, "babysitter had paused this run: it stays paused");
                    report.paused.push(run.clone());
                }
            }
        }
        // The API shows what was restored at once (a follower's view included).
        self.publish(&st, self.h.clock.now());
        report
    }

    /// One incident row read back, or `None` after reporting why it cannot be.
    fn read_incident(&self, rec: IncidentRecord, report: &mut RestoreReport) -> Option<Incident> {
        match serde_json::from_value::<Incident>(rec.data) {
            Ok(inc) => Some(inc),
            Err(e) => {
                self.report_unreadable(
                    report,
                    rec.id,
                    Some(rec.run),
                    Some(rec.state),
                    format!("not an incident: {e}"),
                );
                None
            }
        }
    }

    /// Logs (ERROR: a human must repair or close the row), counts and lists a row not restored.
    fn report_unreadable(
        &self,
        report: &mut RestoreReport,
        id: String,
        run: Option<String>,
        state: Option<String>,
        error: String,
    ) {
        tracing::error!(
            incident = %id, run = ?run, state = ?state, error = %error,
            "incident row cannot be read back: it is NOT restored; repair or close it in the incidents table"
        );
        self.metrics.incidents_unreadable.inc();
        report.skipped.push(SkippedIncident {
            id,
            run,
            state,
            error,
        });
    }

    /// Every entry of one kind (of one run, if given), in seq order (paged).
    async fn all_of(
        &self,
        kind: EntryKind,
        run: Option<&str>,
    ) -> Result<Vec<Entry>, crate::audit::AuditError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .h
                .audit
                .query(&Filter {
                    kind: Some(kind),
                    run: run.map(str::to_string),
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
            self.all_of(EntryKind::ActionIntent, None).await,
            self.all_of(EntryKind::ActionOutcome, None).await,
            self.all_of(EntryKind::IncidentOpened, None).await,
        ) {
            (Ok(i), Ok(o), Ok(op)) => (i, o, op),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                tracing::error!(error = %e, "crash recovery cannot read the audit log; babysitter will not act until it can");
                return done;
            }
        };
        let mut st = self.state.lock().await;
        for id in opened.iter().filter_map(|e| e.incident.as_deref()) {
            reserve_id(&mut st, id);
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
            // The watch learns what the action did, as it would have when it ran.
            if ok && let Some(w) = run.and_then(|r| st.watches.get_mut(r)) {
                w.note_action(action.kind(), now);
            }
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

/// Keeps new incident ids clear of `id` (`inc-N`).
pub(super) fn reserve_id(st: &mut State, id: &str) {
    if let Some(n) = id.strip_prefix("inc-").and_then(|n| n.parse::<u64>().ok()) {
        st.next_incident = st.next_incident.max(n + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::CheckpointSelector;

    fn outcome(seq: i64, run: &str, action: Action, ok: bool) -> Entry {
        Entry {
            seq,
            ts: "2026-11-25T10:00:00.000Z".into(),
            kind: EntryKind::ActionOutcome,
            run: Some(run.into()),
            incident: Some("inc-1".into()),
            actor: "babysitter".into(),
            payload: json!({"key": format!("inc-1/a1/s{seq}"), "action": action, "ok": ok}),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn ended(seq: i64, run: &str) -> Entry {
        Entry {
            kind: EntryKind::WatchEnded,
            payload: json!({"reason": "job completed"}),
            incident: None,
            ..outcome(seq, run, Action::Pause, true)
        }
    }

    fn restart() -> Action {
        Action::RestartFromCheckpoint {
            checkpoint: CheckpointSelector::Latest,
        }
    }

    fn kinds(m: &BTreeMap<String, LastLifeAction>) -> Vec<(&str, ActionKind)> {
        m.iter().map(|(r, a)| (r.as_str(), a.kind)).collect()
    }

    #[test]
    fn the_last_successful_pause_resume_or_restart_decides() {
        let outcomes = [
            outcome(1, "a", Action::Pause, true),
            outcome(2, "b", Action::Pause, true),
            outcome(3, "b", restart(), true),
            // Not a pause or a resume: they do not change whether the run is paused.
            outcome(4, "a", Action::CaptureDiagnostics, true),
            outcome(5, "b", Action::Annotate { note: "x".into() }, true),
            // A resume that failed resumed nothing.
            outcome(6, "a", Action::Resume, false),
        ];
        let last = last_life_actions(&outcomes, &[]);
        assert_eq!(
            kinds(&last),
            [
                ("a", ActionKind::Pause),
                ("b", ActionKind::RestartFromCheckpoint)
            ]
        );
        assert_eq!(last["a"].key, "inc-1/a1/s1");
        assert_eq!(last["b"].key, "inc-1/a1/s3");
    }

    fn suspension(seq: i64, run: &str, change: &str, at: f64) -> Entry {
        Entry {
            kind: EntryKind::WorkloadSuspension,
            payload: json!({"change": change, "at": at}),
            incident: None,
            ..outcome(seq, run, Action::Pause, true)
        }
    }

    #[test]
    fn a_pause_undone_outside_babysitter_afterwards_no_longer_counts() {
        let outcomes = [
            outcome(1, "a", Action::Pause, true),
            outcome(2, "b", Action::Pause, true),
            outcome(3, "c", Action::Pause, true),
            outcome(6, "c", Action::Pause, true),
            outcome(7, "d", Action::Resume, true),
        ];
        let last = last_life_actions(&outcomes, &[]);
        let suspensions = [
            // `a`: resumed by a human after babysitter's pause.
            suspension(4, "a", "resumed_outside", 100.0),
            // `b`: held (nothing undone).
            suspension(5, "b", "held", 110.0),
            // `c`: resumed, then paused by babysitter again: the later pause stands.
            suspension(5, "c", "resumed_outside", 120.0),
            // `d`: not paused by babysitter at all.
            suspension(8, "d", "released", 130.0),
        ];
        let resumed = resumed_after_pause(&last, &suspensions);
        assert_eq!(resumed, HashMap::from([("a".to_string(), 100.0)]));
    }

    #[test]
    fn a_watch_that_ended_starts_fresh_and_unreadable_outcomes_are_ignored() {
        let mut garbled = outcome(4, "c", Action::Resume, true);
        garbled.payload["action"] = json!({"kind": "teleport"});
        let outcomes = [
            outcome(1, "a", Action::Pause, true),
            outcome(2, "b", Action::Pause, true),
            outcome(3, "c", Action::Pause, true),
            garbled,
            outcome(6, "b", Action::Pause, true),
        ];
        // `a` ended after its pause (its workload finished); `b` ended, came back and was paused
        // again.
        let last = last_life_actions(&outcomes, &[ended(5, "a"), ended(5, "b")]);
        assert_eq!(
            kinds(&last),
            [("b", ActionKind::Pause), ("c", ActionKind::Pause)]
        );
    }
}
