//! Watches that come and go while the engine runs (Kubernetes discovery), and leadership (only
//! the replica that holds the Lease polls and acts). Both are audited: a watch that starts or
//! ends and a replica that gains or loses the leadership each leave an entry in the log.

use serde::Serialize;
use serde_json::json;

use super::{Engine, EventKind, WatchState};
use crate::audit::EntryKind;
use crate::config::WatchConfig;

/// Who leads, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// This replica leads: it polls, detects and acts. Followers serve the API read-only.
    pub is_leader: bool,
    /// This replica's identity in the election (`None`: no election, a single instance).
    pub identity: Option<String>,
    /// The identity that holds the Lease, when known.
    pub holder: Option<String>,
    /// The Lease, as `namespace/name` (`None` without leader election).
    pub lease: Option<String>,
}

impl Default for Leadership {
    /// A single instance without leader election leads.
    fn default() -> Self {
        Leadership {
            is_leader: true,
            identity: None,
            holder: None,
            lease: None,
        }
    }
}

/// Why a watch could not be added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WatchError {
    #[error("watch `{run}`: {message}")]
    Invalid { run: String, message: String },
    #[error(
        "run `{run}` is already watched (as {existing}); give one of them its own `babysitter.dev/run`"
    )]
    Duplicate { run: String, existing: String },
    #[error("watch `{run}`: unknown runbook id(s) {}", ids.join(", "))]
    UnknownRunbooks { run: String, ids: Vec<String> },
    #[error("watch `{run}`: the metrics source cannot poll it: {message}")]
    Source { run: String, message: String },
}

impl Engine {
    /// Starts watching a run while the engine is running (a workload found by discovery).
    /// Checked like a configured watch: a unique non-empty run, known runbooks, valid detector
    /// settings and charts the source can resolve. Recorded as `watch_started`.
    pub async fn add_watch(&self, w: WatchConfig) -> Result<(), WatchError> {
        let invalid = |message: String| WatchError::Invalid {
            run: w.run.clone(),
            message,
        };
        if w.run.trim().is_empty() {
            return Err(invalid("the run name is empty".into()));
        }
        let unknown = self.h.runbooks.unknown_ids(&w.runbooks);
        if !unknown.is_empty() {
            return Err(WatchError::UnknownRunbooks {
                run: w.run.clone(),
                ids: unknown.into_iter().map(str::to_string).collect(),
            });
        }
        if let Some(d) = &w.detectors {
            d.validate().map_err(|e| invalid(e.to_string()))?;
        }
        let now = self.h.clock.now();
        {
            let mut st = self.state.lock().await;
            if let Some(existing) = st.watches.get(&w.run) {
                return Err(WatchError::Duplicate {
                    run: w.run.clone(),
                    existing: existing.cfg.target.to_string(),
                });
            }
            self.h.source.add_run(&w).map_err(|e| WatchError::Source {
                run: w.run.clone(),
                message: e.to_string(),
            })?;
            st.watches.insert(w.run.clone(), WatchState::new(w.clone()));
        }
        self.record(
            EntryKind::WatchStarted,
            Some(&w.run),
            None,
            json!({"target": w.target, "autonomy": w.autonomy, "route": w.route, "discovered": true}),
        )
        .await;
        // The API shows the watch once it is on record.
        {
            let st = self.state.lock().await;
            self.publish(&st, now);
        }
        self.emit(
            now,
            &w.run,
            None,
            EventKind::WatchStarted,
            format!("watching {} (autonomy {:?})", w.target, w.autonomy).to_lowercase(),
        );
        // A leader that (re)discovers a run continues its unfinished incidents (after a restart
        // of babysitter, or a watch that ended and came back); a follower reloads all of them
        // when it gains the leadership.
        if self.is_leader() {
            self.restore_run(&w.run).await;
        }
        Ok(())
    }

    /// Reloads the unfinished incidents of one run that are not in memory, and whether
    /// babysitter had paused it (see [`Engine::restore`]).
    async fn restore_run(&self, run: &str) {
        let report = self.restore_from_db(Some(run)).await;
        if !report.skipped.is_empty() {
            tracing::error!(run, skipped = ?report.skipped, "incidents of this run could not be restored");
        }
    }

    /// Stops watching a run (its workload completed or disappeared). Returns whether it was
    /// watched. Its open incidents escalate to a human on the next pass (the run is gone).
    /// Recorded as `watch_ended` with the reason.
    pub async fn remove_watch(&self, run: &str, reason: &str) -> bool {
        let now = self.h.clock.now();
        let removed = self.state.lock().await.watches.remove(run);
        let Some(w) = removed else {
            return false;
        };
        self.h.source.remove_run(run);
        self.record(
            EntryKind::WatchEnded,
            Some(run),
            None,
            json!({"target": w.cfg.target, "reason": reason}),
        )
        .await;
        {
            let st = self.state.lock().await;
            self.publish(&st, now);
        }
        self.emit(
            now,
            run,
            None,
            EventKind::WatchEnded,
            format!("stopped watching {}: {reason}", w.cfg.target),
        );
        true
    }

    /// Does this replica lead (and so poll and act)?
    pub fn is_leader(&self) -> bool {
        self.leadership.read().map(|l| l.is_leader).unwrap_or(false)
    }

    /// Who leads, as this replica knows it.
    pub fn leadership(&self) -> Leadership {
        self.leadership
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|_| Leadership {
                is_leader: false,
                ..Leadership::default()
            })
    }

    /// Updates who leads. A change of this replica's own leadership is recorded as
    /// `leadership_changed`. Losing it takes effect before the entry is written (stop acting
    /// first); gaining it takes effect only after the entry is written and the unfinished
    /// incidents are reloaded from the audit database, so the new leader continues where the
    /// old one stopped (no action repeated).
    pub async fn set_leadership(&self, new: Leadership) {
        let was_leader = self.is_leader();
        let store = |l: &Leadership| {
            if let Ok(mut cur) = self.leadership.write() {
                *cur = l.clone();
            }
        };
        if was_leader == new.is_leader {
            store(&new);
            return;
        }
        if !new.is_leader {
            store(&new);
        }
        let now = self.h.clock.now();
        let who = new
            .identity
            .clone()
            .unwrap_or_else(|| "this replica".into());
        self.record(
            EntryKind::LeadershipChanged,
            None,
            None,
            json!({
                "identity": new.identity, "is_leader": new.is_leader,
                "holder": new.holder, "lease": new.lease,
            }),
        )
        .await;
        if new.is_leader {
            {
                let mut st = self.state.lock().await;
                // What this replica remembers may be stale: the database has the last leader's word.
                st.incidents.retain(|_, i| i.state.is_final());
            }
            let report = self.restore().await;
            tracing::info!(
                restored = report.restored.len(),
                paused = ?report.paused,
                "leadership gained: unfinished incidents reloaded"
            );
            if !report.skipped.is_empty() {
                let ids: Vec<&str> = report.skipped.iter().map(|s| s.id.as_str()).collect();
                tracing::error!(
                    ?ids,
                    "leadership gained: incident rows that cannot be read were not restored"
                );
            }
            // The last leader may have died between an action's intent and its outcome.
            let recovered = self.settle_unfinished_intents().await;
            if recovered != Default::default() {
                tracing::warn!(?recovered, "leadership gained: unfinished actions settled");
            }
            store(&new);
        }
        let text = if new.is_leader {
            format!("{who} now leads: it polls and acts")
        } else {
            format!(
                "{who} follows (leader: {}): read-only",
                new.holder.as_deref().unwrap_or("unknown")
            )
        };
        self.emit(now, "", None, EventKind::LeadershipChanged, text);
    }
}
