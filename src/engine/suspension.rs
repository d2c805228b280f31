//! Suspension from outside: a watched workload suspended or resumed by someone other than
//! babysitter (a human with `kubectl`, Kueue preempting or admitting it).
//!
//! Kubernetes discovery reads the workload's suspend field on every change and reports it with
//! [`Engine::observe_suspension`]. The report is kept on the watch and *reconciled* at the start
//! of the next pass of the loop (on the leader only, before detection), against what babysitter
//! itself believes ([`WatchState::paused`]):
//!
//! | reported | babysitter paused it | held | what happens |
//! | --- | --- | --- | --- |
//! | suspended | no | no | **held**: progress and slowdown detectors go quiet, the view says `held` |
//! | suspended | yes | – | consistent (its own pause): nothing |
//! | suspended | no | yes | still held: nothing |
//! | running | – | yes | **released**: the run starts a new life now (restart grace applies) |
//! | running | yes | no | **resumed outside babysitter**: it is no longer paused; open incidents stay as they are |
//! | running | no | no | nothing |
//!
//! Each change is one `workload_suspension` audit entry and one timeline event. While a run is
//! held, a workload-changing step of an incident babysitter opened itself waits for a human's
//! approval ([`hold_gate`], rule `workload_held`): babysitter never undoes someone else's hold
//! on its own. Approvals and runbooks an operator executes go through the policy gate as usual.
//! A held run's verification is not judged (a suspended run cannot show progress, and one that
//! still steps is not being checked on what it will do); when the hold is lifted, verification
//! of its incidents starts again with the runbook's whole window.
//!
//! Why reconcile at the next pass instead of at once: the watch stream can deliver a change
//! babysitter made itself after babysitter made another one (a pause and a restart in one pass
//! arrive as `suspend: true`, then `false`). Only the newest report counts, and a report older
//! than babysitter's own last workload-changing action on the run is set aside until a newer
//! one arrives ([`Observed::stale`]), so babysitter never mistakes its own change for someone
//! else's. The price: a suspension undone within one poll interval may go unrecorded.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Engine, EventKind, State, WatchState};
use crate::act::ActionKind;
use crate::audit::EntryKind;
use crate::policy::{Decision, Verdict};

/// The rule name a decision carries when a step waits because the workload is held.
pub const HELD_RULE: &str = "workload_held";

/// Who is likely holding a workload suspended (or who resumed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "holder", rename_all = "snake_case")]
pub enum SuspendedBy {
    /// The workload is in a Kueue queue (label `kueue.x-k8s.io/queue-name`): Kueue suspends
    /// (preempts) and resumes (admits) it.
    Kueue { queue: String },
    /// Someone or something outside babysitter: a human with `kubectl`, another controller.
    Outside,
}

impl fmt::Display for SuspendedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuspendedBy::Kueue { queue } => write!(f, "Kueue (queue `{queue}`)"),
            SuspendedBy::Outside => f.write_str("someone outside babysitter"),
        }
    }
}

/// A run held suspended by someone other than babysitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// Engine clock time babysitter took note of the hold.
    pub since: f64,
    pub by: SuspendedBy,
}

/// The workload's suspend field as discovery last reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub suspended: bool,
    pub by: SuspendedBy,
    /// Babysitter changed the workload after this report (a pause, resume, restart or config
    /// patch): the report may predate that change, so it is not judged until a newer one comes.
    pub stale: bool,
}

/// What one reconciliation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Held,
    Released,
    ResumedOutside,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Held => "held",
            Change::Released => "released",
            Change::ResumedOutside => "resumed_outside",
        }
    }
}

/// What the report means for the watch (see the module table); `None`: nothing changes.
fn judge(w: &WatchState) -> Option<Change> {
    let o = w.observed.as_ref().filter(|o| !o.stale)?;
    match (o.suspended, w.paused, w.held.is_some()) {
        (true, false, false) => Some(Change::Held),
        (true, true, _) | (true, false, true) => None,
        (false, _, true) => Some(Change::Released),
        (false, true, false) => Some(Change::ResumedOutside),
        (false, false, false) => None,
    }
}

/// The hold gate, applied after the policy gate to a step of an incident babysitter opened
/// itself: a workload-changing action the policy allows on a held run waits for a human's
/// approval instead. `human`: a person approved this very action or asked for the runbook,
/// and the policy's word stands. Refusals and approvals the policy asks for are kept as they are.
pub(crate) fn hold_gate(
    decision: Decision,
    held: Option<&Held>,
    kind: ActionKind,
    human: bool,
) -> Decision {
    match held {
        Some(h) if !human && decision.verdict == Verdict::Allow && kind.mutates_workload() => {
            Decision {
                verdict: Verdict::NeedsApproval,
                rule: HELD_RULE.to_string(),
                reason: format!(
                    "the workload is held suspended by {}: babysitter does not {kind} it on its own (the policy allowed it: {}); a human decides",
                    h.by, decision.reason
                ),
                retry_at: None,
            }
        }
        _ => decision,
    }
}

impl WatchState {
    /// Is detection to treat the run as paused (by babysitter, or held by someone else)?
    pub(crate) fn quiet(&self) -> bool {
        self.paused || self.held.is_some()
    }
}

impl Engine {
    /// Discovery saw the workload of `run` suspended (`true`) or running (`false`), likely
    /// because of `by`. Kept on the watch and reconciled on the next pass of the loop (see the
    /// module docs). Returns whether `run` is watched.
    pub async fn observe_suspension(&self, run: &str, suspended: bool, by: SuspendedBy) -> bool {
        let mut st = self.state.lock().await;
        let Some(w) = st.watches.get_mut(run) else {
            return false;
        };
        tracing::debug!(run, suspended, by = %by, "workload suspend field reported");
        w.observed = Some(Observed {
            suspended,
            by,
            stale: false,
        });
        true
    }

    /// Applies the newest suspension report of every watch (the leader, before detection).
    pub(super) async fn reconcile_suspensions(&self, st: &mut State, now: f64) {
        let runs: Vec<String> = st.watches.keys().cloned().collect();
        for run in runs {
            let Some(w) = st.watches.get_mut(&run) else {
                continue;
            };
            let Some(change) = judge(w) else {
                continue;
            };
            let Some(by) = w.observed.as_ref().map(|o| o.by.clone()) else {
                continue;
            };
            let was_paused = w.paused;
            let held_since = w.held.as_ref().map(|h| h.since);
            match change {
                Change::Held => {
                    w.held = Some(Held {
                        since: now,
                        by: by.clone(),
                    });
                }
                Change::Released | Change::ResumedOutside => {
                    // Like a resume: a new life of the run starts now, with its restart grace.
                    w.held = None;
                    w.paused = false;
                    w.since = Some(now);
                }
            }
            let open: Vec<String> = st
                .incidents
                .values()
                .filter(|i| i.run == run && !i.state.is_final())
                .map(|i| i.id.clone())
                .collect();
            // Verification waited out the hold (`check_verification`): the run's new life is
            // judged from now, with the runbook's whole window, not what was left of it.
            let mut reverified = Vec::new();
            if change != Change::Held {
                for inc in st.incidents.values_mut().filter(|i| {
                    i.run == run && i.state == crate::incident::IncidentState::Verifying
                }) {
                    inc.verify_since = Some(now);
                    reverified.push(inc.id.clone());
                }
            }
            let text = match change {
                Change::Held => format!(
                    "workload suspended by {by}, not by babysitter: held — progress and slowdown detectors are quiet and babysitter changes nothing on it without a human"
                ),
                Change::Released => format!(
                    "workload running again (suspend lifted, likely by {by}) after {} held: babysitter watches it as a new start{}",
                    crate::clock::fmt_span(held_since.map_or(0.0, |s| now - s)),
                    if reverified.is_empty() {
                        String::new()
                    } else {
                        format!("; verification of {} starts again", reverified.join(", "))
                    }
                ),
                Change::ResumedOutside => {
                    let incidents = if open.is_empty() {
                        "no incident is open".to_string()
                    } else {
                        format!(
                            "open incidents ({}) are left as they are: a human took over",
                            open.join(", ")
                        )
                    };
                    format!(
                        "babysitter had paused this run; it was resumed outside babysitter ({by}) — no longer paused, {incidents}"
                    )
                }
            };
            self.record(
                EntryKind::WorkloadSuspension,
                Some(&run),
                None,
                json!({
                    "change": change.as_str(),
                    "suspended": change == Change::Held,
                    "by": by,
                    "babysitter_paused": was_paused,
                    "held_since": held_since,
                    "at": now,
                    "open_incidents": open,
                    "verification_restarted": reverified,
                    "text": text,
                }),
            )
            .await;
            self.emit(now, &run, None, EventKind::WorkloadSuspension, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(rule: &str) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            rule: rule.into(),
            reason: "mode auto".into(),
            retry_at: None,
        }
    }

    fn held() -> Held {
        Held {
            since: 10.0,
            by: SuspendedBy::Kueue {
                queue: "gpu".into(),
            },
        }
    }

    #[test]
    fn a_held_run_s_workload_changes_wait_for_a_human() {
        for kind in [
            ActionKind::Pause,
            ActionKind::Resume,
            ActionKind::RestartFromCheckpoint,
            ActionKind::PatchConfig,
        ] {
            let d = hold_gate(allow("mode_auto"), Some(&held()), kind, false);
            assert_eq!(d.verdict, Verdict::NeedsApproval, "{kind}");
            assert_eq!(d.rule, HELD_RULE);
            assert!(d.reason.contains("Kueue (queue `gpu`)"), "{}", d.reason);
            assert!(
                d.reason.contains(&format!("does not {kind}")),
                "{}",
                d.reason
            );
        }
    }

    #[test]
    fn the_hold_gate_leaves_other_decisions_alone() {
        let h = held();
        // Not held, a read-only or informational action, or a human's word: unchanged.
        assert_eq!(
            hold_gate(allow("mode_auto"), None, ActionKind::Pause, false).rule,
            "mode_auto"
        );
        for kind in [
            ActionKind::CaptureDiagnostics,
            ActionKind::Page,
            ActionKind::Annotate,
        ] {
            assert_eq!(
                hold_gate(allow("mode_auto"), Some(&h), kind, false).verdict,
                Verdict::Allow
            );
        }
        assert_eq!(
            hold_gate(
                allow("approved"),
                Some(&h),
                ActionKind::RestartFromCheckpoint,
                true
            )
            .verdict,
            Verdict::Allow
        );
        // A refusal stays a refusal.
        let deny = Decision {
            verdict: Verdict::Deny,
            rule: "cooldown".into(),
            reason: "too soon".into(),
            retry_at: Some(99.0),
        };
        assert_eq!(
            hold_gate(deny.clone(), Some(&h), ActionKind::Pause, false),
            deny
        );
    }

    #[test]
    fn holders_read_well_and_serialize_with_a_tag() {
        assert_eq!(
            SuspendedBy::Outside.to_string(),
            "someone outside babysitter"
        );
        assert_eq!(
            serde_json::to_value(SuspendedBy::Kueue { queue: "q".into() }).unwrap(),
            json!({"holder": "kueue", "queue": "q"})
        );
        assert_eq!(
            serde_json::to_value(SuspendedBy::Outside).unwrap(),
            json!({"holder": "outside"})
        );
    }
}
