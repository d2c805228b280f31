//! Running a runbook on request (the API), through the same policy gate and audit log as an
//! incident babysitter found itself. A dry run returns the plan with every step resolved and
//! the decision the gate would take now, and acts on nothing.

use serde::Serialize;
use serde_json::json;

use super::{Engine, EventKind};
use crate::act::Action;
use crate::audit::EntryKind;
use crate::incident::{Incident, IncidentEvent};
use crate::policy::{self, Decision, PastAction, PolicyRequest};
use crate::runbook::Diagnosis;

/// What the caller asks.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    pub runbook: String,
    pub run: String,
    /// The authenticated caller (recorded as the actor, `api:<caller>`).
    pub caller: String,
    /// On whose behalf (usually the caller).
    pub by: String,
    pub reason: Option<String>,
    pub dry_run: bool,
}

/// One step of a dry run: the action as it would run, and what the gate says now.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub step: usize,
    pub action: Action,
    pub description: String,
    pub requires_approval: bool,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ExecuteResult {
    /// Nothing was done; this is what would happen.
    DryRun {
        runbook: String,
        run: String,
        steps: Vec<PlannedStep>,
        /// The runbook's checks as answered now; they chose the steps.
        checks: Vec<crate::runbook::CheckResult>,
        verify: crate::verify::VerifySpec,
        max_attempts: u32,
    },
    /// An incident was opened and driven as far as it could go now.
    Executed { incident: Box<Incident> },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("no runbook `{0}`")]
    UnknownRunbook(String),
    #[error("no watch for run `{0}`")]
    UnknownRun(String),
    #[error("runbook `{runbook}` is not allowed on run `{run}` (the watch allows: {allowed})")]
    NotAllowed {
        runbook: String,
        run: String,
        allowed: String,
    },
    #[error(
        "incident {incident} ({state}) is already handling {family} on run `{run}`: answer or wait for it first"
    )]
    Busy {
        incident: String,
        state: crate::incident::IncidentState,
        family: crate::detect::Family,
        run: String,
    },
    #[error("the audit log cannot be written, so nothing is executed")]
    Audit,
}

impl Engine {
    /// Executes (or dry-runs) a runbook on a watched run.
    pub async fn execute_runbook(
        &self,
        req: ExecuteRequest,
    ) -> Result<ExecuteResult, ExecuteError> {
        let rb = self
            .h
            .runbooks
            .get(&req.runbook)
            .cloned()
            .ok_or_else(|| ExecuteError::UnknownRunbook(req.runbook.clone()))?;
        let now = self.h.clock.now();
        let mut st = self.state.lock().await;
        let w = st
            .watches
            .get(&req.run)
            .ok_or_else(|| ExecuteError::UnknownRun(req.run.clone()))?;
        if !w.cfg.runbooks.is_empty() && !w.cfg.runbooks.contains(&rb.id) {
            return Err(ExecuteError::NotAllowed {
                runbook: rb.id.clone(),
                run: req.run.clone(),
                allowed: w.cfg.runbooks.join(", "),
            });
        }
        let (target, autonomy) = (w.cfg.target.clone(), w.cfg.autonomy);
        // The runbook's checks pick its steps: PromQL first (bounded by `[checks]`), then
        // the run's charts, else `unknown`.
        let (runner, limits) = match self.check_runner() {
            Some((r, l)) => (Some(r), l),
            None => (None, self.cfg.check_limits()),
        };
        let checks = crate::runbook::checks::evaluate_all(
            &rb.checks,
            &req.run,
            runner,
            Some(&w.charts),
            now,
            limits,
        )
        .await;
        let outcomes: crate::runbook::Outcomes =
            checks.iter().map(|c| (c.id.clone(), c.outcome)).collect();
        let plan = rb.plan_for(&outcomes);
        let actor = format!("api:{}", req.caller);

        if req.dry_run {
            // Each step is judged as if the ones before it had just run (breakers, cooldowns).
            let mut history = st.history.clone();
            let probe = Incident::manual(
                String::new(),
                req.run.clone(),
                family_of(&rb),
                req.by.clone(),
                now,
            );
            let mut steps = Vec::new();
            for (i, step) in plan.steps.iter().enumerate() {
                let action = self
                    .resolve_action_for(&target, &probe, &step.action)
                    .await
                    .unwrap_or_else(|_| step.action.clone());
                let decision = policy::decide(
                    &self.cfg.policy,
                    &PolicyRequest {
                        run: &req.run,
                        action: &action,
                        autonomy,
                        runbook_allows: true,
                        step_requires_approval: step.requires_approval,
                        approved_by: None,
                        history: &history,
                        now,
                        audit_healthy: self.h.audit.is_healthy(),
                        is_leader: self.is_leader(),
                    },
                );
                history.push(PastAction {
                    run: req.run.clone(),
                    kind: action.kind(),
                    at: now,
                });
                steps.push(PlannedStep {
                    step: i,
                    description: action.to_string(),
                    action,
                    requires_approval: step.requires_approval,
                    decision,
                });
            }
            self.record_as(
                EntryKind::RunbookDryRun,
                Some(&req.run),
                None,
                &actor,
                json!({
                    "runbook": rb.id, "runbook_sha256": rb.sha256, "by": req.by, "reason": req.reason,
                    "checks": checks, "steps": steps,
                }),
            )
            .await;
            return Ok(ExecuteResult::DryRun {
                runbook: rb.id.clone(),
                run: req.run.clone(),
                steps,
                checks,
                verify: rb.verify.clone(),
                max_attempts: rb.max_attempts,
            });
        }

        let family = family_of(&rb);
        if let Some(busy) = st
            .incidents
            .values()
            .find(|i| i.run == req.run && i.family == family && !i.state.is_final())
        {
            return Err(ExecuteError::Busy {
                incident: busy.id.clone(),
                state: busy.state,
                family,
                run: req.run.clone(),
            });
        }
        let id = format!("inc-{}", st.next_incident);
        let recorded = self
            .record_as(
                EntryKind::RunbookExecuted,
                Some(&req.run),
                Some(&id),
                &actor,
                json!({ "runbook": rb.id, "runbook_sha256": rb.sha256, "by": req.by, "reason": req.reason }),
            )
            .await;
        if !recorded {
            return Err(ExecuteError::Audit);
        }
        st.next_incident += 1;
        let mut inc = Incident::manual(id.clone(), req.run.clone(), family, req.by.clone(), now);
        self.record_as(
            EntryKind::IncidentOpened,
            Some(&req.run),
            Some(&id),
            &actor,
            json!({ "family": family, "runbook": rb.id, "requested_by": req.by }),
        )
        .await;
        let diagnosis = Diagnosis {
            runbook: rb.id.clone(),
            title: rb.title.clone(),
            reason: format!(
                "runbook {} executed over the API by {}{}",
                rb.id,
                req.by,
                req.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            plan,
            checks,
        };
        self.record(
            EntryKind::Diagnosis,
            Some(&req.run),
            Some(&id),
            json!({ "diagnosis": diagnosis, "runbook_sha256": rb.sha256 }),
        )
        .await;
        self.emit(
            now,
            &req.run,
            Some(&id),
            EventKind::Diagnosed,
            format!("{} runs runbook `{}` on request", req.by, rb.id),
        );
        inc.diagnosis = Some(diagnosis);
        self.transition(&mut inc, IncidentEvent::Diagnose, now);
        st.incidents.insert(id.clone(), inc);
        self.drive(&mut st, &id, now).await;
        let inc = st.incidents.get(&id).cloned();
        self.publish(&st, now);
        drop(st);
        self.wake.notify_one();
        match inc {
            Some(inc) => Ok(ExecuteResult::Executed {
                incident: Box::new(inc),
            }),
            None => Err(ExecuteError::Audit),
        }
    }
}

/// The family a runbook works on: that of its first trigger.
fn family_of(rb: &crate::runbook::Runbook) -> crate::detect::Family {
    rb.triggers
        .kinds
        .first()
        .map_or(crate::detect::Family::Progress, |k| k.family())
}
