//! The engine's hooks for the optional LLM investigator ([`crate::agent`]): start one
//! investigation when an incident opens (after the deterministic diagnosis), and, on a later
//! tick, attach its report to the incident with the policy gate's verdict on its proposal.
//!
//! The investigation runs in its own task so a slow model never holds up the loop; the
//! deterministic plan goes on meanwhile, untouched. The proposal is recorded, never executed:
//! nothing here calls the actuator.

use std::sync::{Arc, Mutex, RwLock};

use serde_json::json;

use super::{Engine, EventKind, State};
use crate::agent::{AgentReport, AgentStatus, Brief, Investigator, runbook_lists};
use crate::audit::{EntryKind, NewEntry};
use crate::charts::{ChartSet, Series};
use crate::incident::Incident;
use crate::policy::{self, PolicyRequest};

/// Chart history handed to an investigation: at least this much, whatever `chart_window` is
/// (range queries without Prometheus read it).
const MIN_HISTORY_SECS: f64 = 3600.0;

#[derive(Default)]
pub(super) struct AgentHook {
    investigator: RwLock<Option<Arc<Investigator>>>,
    /// Reports of finished investigations, by incident id, waiting for the next tick.
    done: Arc<Mutex<Vec<(String, AgentReport)>>>,
}

impl Engine {
    /// Turns the investigator on (or replaces it). Without one, incidents are handled exactly
    /// as before.
    pub fn set_agent(&self, investigator: Arc<Investigator>) {
        if let Ok(mut a) = self.agent.investigator.write() {
            *a = Some(investigator);
        }
    }

    /// The configured investigator, if any.
    pub fn agent(&self) -> Option<Arc<Investigator>> {
        self.agent.investigator.read().ok().and_then(|a| a.clone())
    }

    /// Starts an investigation of a newly diagnosed incident opened by a detector (not one a
    /// person opened by running a runbook).
    pub(super) async fn start_investigation(&self, st: &State, inc: &Incident, now: f64) {
        let Some(inv) = self.agent() else {
            return;
        };
        if inc.requested_by.is_some() || inc.findings.is_empty() {
            return;
        }
        let (Some(w), Some(diagnosis)) = (st.watches.get(&inc.run), inc.diagnosis.clone()) else {
            return;
        };
        let keep = inv
            .config()
            .chart_window
            .as_secs_f64()
            .max(MIN_HISTORY_SECS);
        let mut charts = ChartSet::new();
        for (key, series) in w.charts.iter() {
            charts.insert(
                key.clone(),
                Series::from_samples(series.range(now - keep, now).iter().copied()),
            );
        }
        let brief = Brief {
            incident: inc.id.clone(),
            run: inc.run.clone(),
            target: w.cfg.target.clone(),
            findings: inc.findings.clone(),
            diagnosis,
            charts,
            allowed_runbooks: w.cfg.runbooks.clone(),
            now,
        };
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::AgentReported,
            format!("agent ({}) investigating", inv.config().model),
        );
        let audit = self.h.audit.clone();
        let done = self.agent.done.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let report = inv.investigate(&brief).await;
            // The whole transcript goes on record as soon as the investigation ends.
            let entry = NewEntry {
                kind: EntryKind::AgentInvestigation,
                run: Some(brief.run.clone()),
                incident: Some(brief.incident.clone()),
                actor: "agent".into(),
                payload: json!({ "report": report }),
            };
            if let Err(e) = audit.append(entry).await {
                tracing::error!(incident = %brief.incident, error = %e, "cannot record the agent's investigation");
            }
            if let Ok(mut d) = done.lock() {
                d.push((brief.incident.clone(), report));
            }
            wake.notify_one();
        });
    }

    /// Attaches finished reports to their incidents, with the policy gate's verdict on each
    /// proposal (the same gate as every action; an agent's proposal always needs a human).
    pub(super) async fn collect_agent_reports(&self, st: &mut State, now: f64) {
        let reports: Vec<(String, AgentReport)> = match self.agent.done.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        for (id, mut report) in reports {
            let Some(mut inc) = st.incidents.remove(&id) else {
                tracing::warn!(incident = %id, "agent report for an incident no longer in memory (kept in the audit log)");
                continue;
            };
            if let (Some(p), Some(w)) = (&report.proposal, st.watches.get(&inc.run)) {
                let runbook_allows = self
                    .h
                    .runbooks
                    .get(&p.runbook)
                    .is_some_and(|rb| runbook_lists(rb, &p.action));
                let request = PolicyRequest {
                    run: &inc.run,
                    action: &p.action,
                    autonomy: w.cfg.autonomy,
                    runbook_allows,
                    step_requires_approval: true,
                    approved_by: None,
                    history: &st.history,
                    now,
                    audit_healthy: self.h.audit.is_healthy(),
                    is_leader: true,
                };
                let decision = policy::decide(&self.cfg.policy, &request);
                self.record_as(
                    EntryKind::AgentProposal,
                    Some(&inc.run),
                    Some(&inc.id),
                    "policy",
                    json!({
                        "proposal": p, "confidence": report.confidence,
                        "stated_confidence": report.stated_confidence,
                        "evidence": report.evidence,
                        "verdict": decision.verdict, "rule": decision.rule, "reason": decision.reason,
                        "executed": false,
                    }),
                )
                .await;
                report.decision = Some(decision);
            }
            let text = match (&report.status, &report.proposal, &report.decision) {
                (AgentStatus::Proposed, Some(p), Some(d)) => format!(
                    "agent proposes {} (runbook {}, confidence {:.2}) — policy: {} ({}); not executed",
                    p.action,
                    p.runbook,
                    report.confidence.unwrap_or(0.0),
                    d.verdict.as_str(),
                    d.reason
                ),
                (AgentStatus::DoesNotKnow, _, _) => {
                    format!("agent does not know: {}", report.summary)
                }
                _ => format!(
                    "agent failed: {} — the deterministic plan stands",
                    report.error.as_deref().unwrap_or("no proposal")
                ),
            };
            self.emit(now, &inc.run, Some(&inc.id), EventKind::AgentReported, text);
            inc.agent = Some(report);
            if let Err(e) = self
                .h
                .audit
                .save_incident(&inc.id, &inc.run, inc.state.as_str(), &json!(inc))
                .await
            {
                tracing::error!(incident = %inc.id, error = %e, "cannot persist incident");
            }
            st.incidents.insert(id, inc);
        }
    }
}
