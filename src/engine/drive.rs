//! Driving an incident through its lifecycle: diagnose, run the plan's steps through the
//! policy gate, wait for approvals, verify, resolve or escalate — and re-diagnose it when a
//! finding that joins it calls for another runbook before any action of its plan has run.

use serde_json::json;

use super::{ApprovalError, Engine, EventKind, State};
use crate::act::{Action, ActionKind, CheckpointSelector};
use crate::audit::EntryKind;
use crate::detect::{Finding, Severity};
use crate::incident::{
    ActionRecord, Incident, IncidentEvent, IncidentState, PendingAction, PlanStatus,
};
use crate::notify::{Page, PageAction};
use crate::policy::{self, PastAction, PolicyRequest, Verdict};
use crate::runbook::{Diagnosis, NO_RUNBOOK_ID, diagnose_on_charts, diagnose_with};
use crate::telemetry::{ActionLabels, KindLabel};
use crate::verify::{self, VerifyContext, VerifyStatus};

/// How long the loop waits for a page to be delivered before leaving it to a background task.
const PAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a finding that joined an incident means for its diagnosis ([`Engine::reconsider`]).
pub(super) enum Reconsidered {
    /// The findings still point to the runbook of the plan (or the incident is not diagnosed
    /// yet, and its diagnosis will see every finding).
    Same,
    /// The finding points to another runbook, but the plan stays (see [`PlanStatus`]).
    Kept {
        runbook: String,
        would_pick: String,
        status: PlanStatus,
    },
    /// No action of the plan has run: this diagnosis replaces it ([`Engine::rediagnose`]).
    Replace(Box<Diagnosis>),
}

/// What running one step led to.
enum Step {
    /// Done; go on with the next step.
    Done,
    /// Waiting for a human.
    Waiting,
    /// Babysitter must stop and hand over, for this reason.
    Escalate(String),
}

impl Engine {
    /// Moves one incident as far as it can go in this tick.
    pub(super) async fn drive(&self, st: &mut State, id: &str, now: f64) {
        let Some(mut inc) = st.incidents.remove(id) else {
            return;
        };
        let blind = st
            .watches
            .get(&inc.run)
            .is_none_or(|w| w.blind_since.is_some());
        // Bounded: each iteration either changes state or breaks.
        for _ in 0..32 {
            if inc.state.is_final() {
                break;
            }
            if blind {
                // Nothing is decided on stale charts; the incident waits for sight to return.
                break;
            }
            match inc.state {
                IncidentState::Open => self.diagnose(st, &mut inc, now).await,
                IncidentState::Diagnosing | IncidentState::Acting => {
                    let steps = inc.diagnosis.as_ref().map_or(0, |d| d.plan.steps.len());
                    if inc.next_step >= steps {
                        self.start_verification(&mut inc, now).await;
                        continue;
                    }
                    match self.run_step(st, &mut inc, None, now).await {
                        Step::Done => {
                            inc.next_step += 1;
                            if inc.state == IncidentState::Diagnosing {
                                self.transition(&mut inc, IncidentEvent::Act, now);
                            }
                        }
                        Step::Waiting => break,
                        Step::Escalate(why) => {
                            self.escalate(&mut inc, why, now).await;
                        }
                    }
                }
                IncidentState::AwaitingApproval => {
                    let Some(p) = inc.pending.clone() else {
                        // Cannot happen through the API; treat it as a lost approval.
                        self.escalate(&mut inc, "approval state lost".into(), now)
                            .await;
                        continue;
                    };
                    if let Some(by) = p.rejected_by.clone() {
                        inc.pending = None;
                        let why = format!(
                            "{} rejected by {by}{}",
                            p.action,
                            p.reason.map(|r| format!(": {r}")).unwrap_or_default()
                        );
                        self.escalate(&mut inc, why, now).await;
                    } else if let Some(by) = p.approved_by.clone() {
                        self.transition(&mut inc, IncidentEvent::Act, now);
                        match self.run_step(st, &mut inc, Some(by.clone()), now).await {
                            Step::Done => {
                                inc.pending = None;
                                inc.next_step += 1;
                                if inc.paged {
                                    // The human said yes and automation carries on: the page is
                                    // acknowledged (it resolves when verification passes).
                                    let summary = format!(
                                        "{}: approved by {by}; babysitter is acting and will verify",
                                        inc.run
                                    );
                                    self.page(
                                        &mut inc,
                                        PageAction::Acknowledge,
                                        Severity::Info,
                                        summary,
                                        now,
                                    )
                                    .await;
                                }
                            }
                            Step::Waiting => break,
                            Step::Escalate(why) => {
                                inc.pending = None;
                                self.escalate(&mut inc, why, now).await;
                            }
                        }
                    } else {
                        let idle = st
                            .watches
                            .get(&inc.run)
                            .filter(|w| w.paused)
                            .map(|w| crate::act::rollback::gpu_count(&w.charts));
                        self.renotify(&mut inc, &p, idle, now).await;
                        break;
                    }
                }
                IncidentState::Verifying => {
                    if !self.check_verification(st, &mut inc, now).await {
                        break;
                    }
                }
                IncidentState::Resolved | IncidentState::Escalated => break,
            }
        }
        if let Err(e) = self
            .h
            .audit
            .save_incident(&inc.id, &inc.run, inc.state.as_str(), &json!(inc))
            .await
        {
            tracing::error!(incident = %inc.id, error = %e, "cannot persist incident");
        }
        st.incidents.insert(inc.id.clone(), inc);
    }

    pub(super) fn transition(&self, inc: &mut Incident, event: IncidentEvent, now: f64) {
        if let Err(e) = inc.apply(event, now) {
            // A bug, not an input error: log it loudly and leave the state as it was.
            tracing::error!(incident = %inc.id, error = %e, "invalid incident transition");
        }
    }

    async fn diagnose(&self, st: &State, inc: &mut Incident, now: f64) {
        let w = st.watches.get(&inc.run);
        let allowed = w.map(|w| w.cfg.runbooks.clone()).unwrap_or_default();
        // Checks ask PromQL first (bounded by `[checks]`), then the watch's charts.
        let d = diagnose_with(
            &self.h.runbooks,
            &inc.findings,
            &allowed,
            &inc.run,
            self.check_runner(),
            w.map(|w| &w.charts),
            now,
        )
        .await;
        let hash = self.h.runbooks.get(&d.runbook).map(|r| r.sha256.clone());
        let steps: Vec<String> = d.plan.steps.iter().map(|s| s.action.to_string()).collect();
        self.record(
            EntryKind::Diagnosis,
            Some(&inc.run),
            Some(&inc.id),
            json!({ "diagnosis": d, "runbook_sha256": hash }),
        )
        .await;
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::Diagnosed,
            format!(
                "diagnosed with runbook `{}` — plan: {}",
                d.runbook,
                steps.join(" → ")
            ),
        );
        inc.diagnosis = Some(d);
        self.transition(inc, IncidentEvent::Diagnose, now);
        // The optional agent investigates beside the deterministic plan, which goes on as is.
        self.start_investigation(st, inc, now).await;
    }

    /// Asks whether finding `f`, which just joined incident `id`, changes its diagnosis.
    ///
    /// The runbook is chosen again over all the incident's findings, with the same pure choice
    /// as the first diagnosis. Only new evidence changes a plan: the runbook chosen now must
    /// answer `f` itself, so a chart condition that drifted between polls never swaps a plan.
    /// The full diagnosis (with the runbook's checks asked of PromQL) is made only when the
    /// plan is replaceable and the runbook changed.
    pub(super) async fn reconsider(
        &self,
        st: &State,
        id: &str,
        f: &Finding,
        now: f64,
    ) -> Reconsidered {
        let Some(inc) = st.incidents.get(id) else {
            return Reconsidered::Same;
        };
        let status = inc.plan_status();
        let Some(current) = inc.diagnosis.as_ref().map(|d| d.runbook.clone()) else {
            return Reconsidered::Same;
        };
        if status == PlanStatus::Undiagnosed {
            return Reconsidered::Same;
        }
        let w = st.watches.get(&inc.run);
        let allowed = w.map(|w| w.cfg.runbooks.clone()).unwrap_or_default();
        let charts = w.map(|w| &w.charts);
        let choice = diagnose_on_charts(&self.h.runbooks, &inc.findings, &allowed, charts, now);
        let points_here = self
            .h
            .runbooks
            .get(&choice.runbook)
            .is_some_and(|rb| rb.matches(f));
        if choice.runbook == current || choice.runbook == NO_RUNBOOK_ID || !points_here {
            return Reconsidered::Same;
        }
        if status != PlanStatus::Replaceable {
            return Reconsidered::Kept {
                runbook: current,
                would_pick: choice.runbook,
                status,
            };
        }
        let d = diagnose_with(
            &self.h.runbooks,
            &inc.findings,
            &allowed,
            &inc.run,
            self.check_runner(),
            charts,
            now,
        )
        .await;
        if d.runbook == current {
            return Reconsidered::Same;
        }
        Reconsidered::Replace(Box::new(d))
    }

    /// Replaces the plan of incident `id` with diagnosis `d`, which finding `f` brought about:
    /// the pending approval (asked or given for the old plan's step) is withdrawn, the change is
    /// recorded and told, and a human paged for the old approval gets a page that says the plan
    /// changed. The new plan starts at its first step on this tick's drive, through the policy
    /// gate like any plan.
    pub(super) async fn rediagnose(
        &self,
        st: &mut State,
        id: &str,
        f: &Finding,
        d: Diagnosis,
        now: f64,
    ) {
        let Some(mut inc) = st.incidents.remove(id) else {
            return;
        };
        let previous = inc
            .diagnosis
            .as_ref()
            .map(|d| d.runbook.clone())
            .unwrap_or_default();
        let hash = self.h.runbooks.get(&d.runbook).map(|r| r.sha256.clone());
        let steps: Vec<String> = d.plan.steps.iter().map(|s| s.action.to_string()).collect();
        let withdrawn = match inc.replan(d.clone(), now) {
            Ok(w) => w,
            Err(e) => {
                // `reconsider` checked the plan was replaceable: this is a bug, not input.
                tracing::error!(incident = %inc.id, error = %e, "re-diagnosis refused");
                st.incidents.insert(inc.id.clone(), inc);
                return;
            }
        };
        self.record(
            EntryKind::Diagnosis,
            Some(&inc.run),
            Some(&inc.id),
            json!({
                "diagnosis": d, "runbook_sha256": hash,
                "rediagnosed": true, "previous_runbook": previous, "reason": f,
                "revision": inc.revision, "withdrawn": withdrawn,
            }),
        )
        .await;
        let void = withdrawn
            .as_ref()
            .map_or(String::new(), |w| match &w.approved_by {
                Some(by) => format!(
                    "; {} ({}) approved by {by} for the old plan will not run",
                    w.action, w.id
                ),
                None => format!(
                    "; the approval asked for {} ({}) is withdrawn",
                    w.action, w.id
                ),
            });
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::Diagnosed,
            format!(
                "re-diagnosed after {} on {}: runbook `{}` replaces `{previous}` — plan: {}{void}",
                f.kind,
                f.chart,
                d.runbook,
                steps.join(" → ")
            ),
        );
        if inc.paged {
            // The page a human holds names the old plan (and maybe its approve command): it is
            // updated under the same dedup key. The new plan pages again if it needs a human.
            let summary = format!(
                "{}: plan changed — {} on {} calls for runbook `{}` instead of `{previous}`{void}",
                inc.run, f.kind, f.chart, d.runbook
            );
            let severity = inc.page_severity.unwrap_or(Severity::Critical);
            let mut page = self.incident_page(&inc, PageAction::Trigger, severity, summary);
            if let Some(w) = &withdrawn {
                page.details.push((
                    "withdrawn".to_string(),
                    format!(
                        "{} ({}): it was for the plan of `{}`; do not approve it",
                        w.action, w.id, w.runbook
                    ),
                ));
            }
            self.send_page(&mut inc, page, now).await;
        }
        self.metrics
            .rediagnoses
            .get_or_create(&KindLabel {
                kind: f.kind.to_string(),
            })
            .inc();
        // The agent investigates the new diagnosis too (the report on the old one, if it comes,
        // is kept on record like any other).
        self.start_investigation(st, &inc, now).await;
        st.incidents.insert(inc.id.clone(), inc);
    }

    /// The finding the diagnosis is about: the first one its runbook answers (after a
    /// re-diagnosis, not necessarily the one that opened the incident).
    fn primary_finding<'a>(&self, inc: &'a Incident) -> Option<&'a Finding> {
        inc.diagnosis
            .as_ref()
            .and_then(|d| self.h.runbooks.get(&d.runbook))
            .and_then(|rb| inc.findings.iter().find(|f| rb.matches(f)))
            .or_else(|| inc.findings.first())
    }

    /// Resolves the checkpoint a restart goes back to (before onset, latest) into a step.
    async fn resolve_action(
        &self,
        st: &State,
        inc: &Incident,
        action: &Action,
    ) -> Result<Action, String> {
        let target = &st
            .watches
            .get(&inc.run)
            .ok_or_else(|| format!("run {} is no longer watched", inc.run))?
            .cfg
            .target;
        self.resolve_action_for(target, inc, action).await
    }

    pub(super) async fn resolve_action_for(
        &self,
        target: &crate::act::Target,
        inc: &Incident,
        action: &Action,
    ) -> Result<Action, String> {
        let Action::RestartFromCheckpoint { checkpoint } = action else {
            return Ok(action.clone());
        };
        if let CheckpointSelector::Step(_) = checkpoint {
            return Ok(action.clone());
        }
        let cps = self
            .h
            .actuator
            .checkpoints(target)
            .await
            .map_err(|e| format!("cannot list checkpoints: {e}"))?;
        let onset = inc.onset();
        let chosen = match checkpoint {
            CheckpointSelector::BeforeOnset => cps.iter().rev().find(|c| c.t < onset),
            _ => cps.last(),
        };
        match chosen {
            Some(c) => Ok(Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::Step(c.step),
            }),
            None => Err(format!("no {checkpoint} among {} checkpoints", cps.len())),
        }
    }

    /// Runs the incident's next step through the policy gate.
    async fn run_step(
        &self,
        st: &mut State,
        inc: &mut Incident,
        approved_by: Option<String>,
        now: f64,
    ) -> Step {
        let Some(plan) = inc.diagnosis.as_ref().map(|d| d.plan.clone()) else {
            return Step::Escalate("no diagnosis".into());
        };
        let Some(step) = plan.steps.get(inc.next_step).cloned() else {
            return Step::Done;
        };
        // An approved step runs exactly the action the human saw.
        let action = match (&approved_by, &inc.pending) {
            (Some(_), Some(p)) => p.action.clone(),
            _ => match self.resolve_action(st, inc, &step.action).await {
                Ok(a) => a,
                Err(why) => return Step::Escalate(format!("cannot {}: {why}", step.action)),
            },
        };
        let Some(w) = st.watches.get(&inc.run) else {
            return Step::Escalate(format!("run {} is no longer watched", inc.run));
        };
        // What a restart throws away, for the decision on record and the human asked.
        let rollback = match &action {
            Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::Step(to),
            } => crate::act::rollback::rollback_cost(&w.charts, *to),
            _ => None,
        };
        let request = PolicyRequest {
            run: &inc.run,
            action: &action,
            autonomy: w.cfg.autonomy,
            runbook_allows: true,
            step_requires_approval: step.requires_approval,
            approved_by: approved_by.as_deref(),
            history: &st.history,
            now,
            audit_healthy: self.h.audit.is_healthy(),
            is_leader: self.is_leader(),
        };
        let decision = policy::decide(&self.cfg.policy, &request);
        // Someone else holds the workload suspended: babysitter does not undo that on its own.
        let human = approved_by.is_some() || inc.requested_by.is_some();
        let decision =
            super::suspension::hold_gate(decision, w.held.as_ref(), action.kind(), human);
        let target = w.cfg.target.clone();
        self.metrics
            .decisions
            .get_or_create(&KindLabel {
                kind: format!("{:?}", decision.verdict).to_lowercase(),
            })
            .inc();
        inc.decisions.push((action.kind(), decision.clone()));
        let recorded = self
            .record_as(
                EntryKind::Decision,
                Some(&inc.run),
                Some(&inc.id),
                "policy",
                json!({
                    "action": action, "step": inc.next_step, "attempt": inc.attempt,
                    "verdict": decision.verdict, "rule": decision.rule, "reason": decision.reason,
                    "rollback": rollback,
                }),
            )
            .await;
        // A decision that is not on record is not acted on (fail closed).
        if !recorded && decision.verdict != Verdict::Deny {
            return Step::Escalate(format!(
                "{action} not run: its policy decision could not be written to the audit log"
            ));
        }
        let verdict_text = match decision.verdict {
            Verdict::Allow => "allowed",
            Verdict::NeedsApproval => "needs approval",
            Verdict::Deny => "DENIED",
        };
        // Allowed steps are told with their result (ActionDone); refusals and approvals now.
        if decision.verdict != Verdict::Allow {
            self.emit(
                now,
                &inc.run,
                Some(&inc.id),
                EventKind::Decision,
                format!("policy: {action} — {verdict_text} ({})", decision.reason),
            );
        }
        match decision.verdict {
            Verdict::Deny => {
                Step::Escalate(format!("policy refused {action}: {}", decision.reason))
            }
            Verdict::NeedsApproval => {
                let pending = PendingAction {
                    id: inc.action_id(),
                    step: inc.next_step,
                    attempt: inc.attempt,
                    action: action.clone(),
                    decision: decision.clone(),
                    requested_at: now,
                    approved_by: None,
                    rejected_by: None,
                    reason: None,
                    rollback: rollback.clone(),
                };
                self.record(
                    EntryKind::ApprovalRequested,
                    Some(&inc.run),
                    Some(&inc.id),
                    json!({ "pending": pending }),
                )
                .await;
                inc.pending = Some(pending.clone());
                inc.renotified = 0;
                self.transition(inc, IncidentEvent::NeedApproval, now);
                self.emit(
                    now,
                    &inc.run,
                    Some(&inc.id),
                    EventKind::ApprovalRequested,
                    format!(
                        "waiting for a human to approve: {action} (id {}){}",
                        pending.id,
                        rollback
                            .as_ref()
                            .map(|c| format!("; it {c}"))
                            .unwrap_or_default()
                    ),
                );
                let what = self
                    .primary_finding(inc)
                    .map(|f| format!("{} on {}", f.kind, f.chart))
                    .unwrap_or_default();
                let cost = rollback
                    .as_ref()
                    .map(|c| format!(" It {c}."))
                    .unwrap_or_default();
                let summary = format!("{}: {what} — approve {action}?{cost}", inc.run);
                self.page(inc, PageAction::Trigger, Severity::Critical, summary, now)
                    .await;
                Step::Waiting
            }
            Verdict::Allow => self.execute(st, inc, &target, action, &decision, now).await,
        }
    }

    /// Writes the intent, carries the action out, writes the outcome.
    async fn execute(
        &self,
        st: &mut State,
        inc: &mut Incident,
        target: &crate::act::Target,
        action: Action,
        decision: &policy::Decision,
        now: f64,
    ) -> Step {
        let key = format!("{}/a{}/s{}", inc.id, inc.attempt, inc.next_step);
        // The incident as it stands (this step decided) is durable before its intent: a replica
        // that takes over after a crash right after the intent restores it at this step, and
        // recovery moves it past the step instead of a new incident planning it again.
        if let Err(e) = self
            .h
            .audit
            .save_incident(&inc.id, &inc.run, inc.state.as_str(), &json!(inc))
            .await
        {
            tracing::error!(incident = %inc.id, error = %e, "cannot persist incident");
        }
        let intent = self
            .record(
                EntryKind::ActionIntent,
                Some(&inc.run),
                Some(&inc.id),
                json!({ "key": key, "action": action, "target": target }),
            )
            .await;
        if !intent {
            return Step::Escalate(format!(
                "{action} not run: its intent could not be written to the audit log"
            ));
        }
        super::recover::crash_point_after_intent(&key).await;
        st.history.push(PastAction {
            run: inc.run.clone(),
            kind: action.kind(),
            at: now,
        });
        let result = match &action {
            Action::Page { severity, summary } => {
                let ok = self
                    .page(inc, PageAction::Trigger, *severity, summary.clone(), now)
                    .await;
                if ok {
                    Ok((format!("paged on-call: {summary}"), json!({})))
                } else {
                    Err("page could not be delivered".to_string())
                }
            }
            _ => self
                .h
                .actuator
                .execute(target, &action, &key)
                .await
                .map(|o| (o.detail, o.facts))
                .map_err(|e| e.to_string()),
        };
        let ok = result.is_ok();
        let (detail, facts) = match result {
            Ok(x) => x,
            Err(e) => (e, json!(null)),
        };
        self.metrics
            .actions
            .get_or_create(&ActionLabels {
                kind: action.kind().to_string(),
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
        self.record(
            EntryKind::ActionOutcome,
            Some(&inc.run),
            Some(&inc.id),
            json!({ "key": key, "action": action, "ok": ok, "detail": detail, "facts": facts }),
        )
        .await;
        inc.actions.push(ActionRecord {
            key,
            step: inc.next_step,
            attempt: inc.attempt,
            action: action.clone(),
            decision: decision.clone(),
            at: now,
            ok,
            detail: detail.clone(),
        });
        if !ok {
            self.emit(
                now,
                &inc.run,
                Some(&inc.id),
                EventKind::ActionFailed,
                format!("{action} failed: {detail}"),
            );
            return Step::Escalate(format!("{action} failed: {detail}"));
        }
        if action.kind() != ActionKind::Page {
            let text = format!("{detail}  [policy: {}]", decision.rule);
            self.emit(now, &inc.run, Some(&inc.id), EventKind::ActionDone, text);
        }
        if let Some(w) = st.watches.get_mut(&inc.run) {
            w.note_action(action.kind(), now);
        }
        Step::Done
    }

    async fn start_verification(&self, inc: &mut Incident, now: f64) {
        let spec = inc.diagnosis.as_ref().map(|d| d.plan.verify.clone());
        inc.verify_since = Some(now);
        inc.verification = None;
        self.transition(inc, IncidentEvent::StepsDone, now);
        let within = spec.as_ref().map_or(0.0, |s| s.within.as_secs_f64());
        let expect: Vec<String> = spec
            .map(|s| s.expect.iter().map(|e| e.as_str().to_string()).collect())
            .unwrap_or_default();
        self.record(
            EntryKind::Verification,
            Some(&inc.run),
            Some(&inc.id),
            json!({ "status": "started", "attempt": inc.attempt, "within_secs": within, "expect": expect }),
        )
        .await;
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::Verifying,
            format!(
                "verifying (attempt {}): expecting {} within {}",
                inc.attempt,
                expect.join(", "),
                humantime::format_duration(std::time::Duration::from_secs(within as u64))
            ),
        );
    }

    /// Returns true when the incident changed state (the caller loops again).
    async fn check_verification(&self, st: &mut State, inc: &mut Incident, now: f64) -> bool {
        let Some(plan) = inc.diagnosis.as_ref().map(|d| d.plan.clone()) else {
            self.escalate(inc, "no diagnosis to verify".into(), now)
                .await;
            return true;
        };
        let since = inc.verify_since.unwrap_or(now);
        let status = if let Some(f) = st.recurred.remove(&inc.id) {
            VerifyStatus::Failed(format!("{} came back: {}", f.kind, f.message))
        } else {
            let Some(w) = st.watches.get(&inc.run) else {
                self.escalate(inc, "run no longer watched".into(), now)
                    .await;
                return true;
            };
            if let Some(h) = &w.held {
                // Someone else holds the workload suspended: a run that cannot progress is not
                // judged. Its verification starts afresh when the hold is lifted.
                let status = VerifyStatus::Pending(format!(
                    "held suspended by {} since {}: verification waits until the run is released",
                    h.by,
                    crate::clock::fmt_t(h.since)
                ));
                inc.verification = Some(status);
                return false;
            }
            let kinds: Vec<_> = inc.findings.iter().map(|f| f.kind).collect();
            let findings_active = w.hysteresis.active().any(|f| kinds.contains(&f.kind));
            verify::evaluate(
                &plan.verify,
                &VerifyContext {
                    charts: &w.charts,
                    since,
                    now,
                    baseline_loss: inc.baseline_loss,
                    findings_active,
                },
            )
        };
        inc.verification = Some(status.clone());
        match status {
            VerifyStatus::Pending(_) => false,
            VerifyStatus::Passed(detail) => {
                self.record(
                    EntryKind::Verification,
                    Some(&inc.run),
                    Some(&inc.id),
                    json!({ "status": "passed", "attempt": inc.attempt, "detail": detail }),
                )
                .await;
                self.transition(inc, IncidentEvent::Recovered, now);
                inc.outcome = Some(format!("recovered: {detail}"));
                self.record(
                    EntryKind::IncidentResolved,
                    Some(&inc.run),
                    Some(&inc.id),
                    json!({ "detail": detail, "duration_secs": now - inc.opened_at }),
                )
                .await;
                self.emit(
                    now,
                    &inc.run,
                    Some(&inc.id),
                    EventKind::Resolved,
                    format!("verified: {detail} — incident {} resolved", inc.id),
                );
                if inc.paged {
                    let summary = format!("resolved on {}: {detail}", inc.run);
                    self.page(inc, PageAction::Resolve, Severity::Info, summary, now)
                        .await;
                }
                true
            }
            VerifyStatus::Failed(detail) => {
                self.record(
                    EntryKind::Verification,
                    Some(&inc.run),
                    Some(&inc.id),
                    json!({ "status": "failed", "attempt": inc.attempt, "detail": detail }),
                )
                .await;
                self.emit(
                    now,
                    &inc.run,
                    Some(&inc.id),
                    EventKind::VerificationFailed,
                    format!(
                        "verification failed (attempt {}/{}): {detail}",
                        inc.attempt, plan.max_attempts
                    ),
                );
                if inc.attempt < plan.max_attempts {
                    inc.attempt += 1;
                    inc.next_step = 0;
                    self.transition(inc, IncidentEvent::Retry, now);
                } else {
                    let why = format!("did not recover after {} attempt(s): {detail}", inc.attempt);
                    self.escalate(inc, why, now).await;
                }
                true
            }
        }
    }

    async fn escalate(&self, inc: &mut Incident, why: String, now: f64) {
        self.transition(inc, IncidentEvent::Escalate, now);
        inc.outcome = Some(why.clone());
        self.record(
            EntryKind::IncidentEscalated,
            Some(&inc.run),
            Some(&inc.id),
            json!({ "reason": why }),
        )
        .await;
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::Escalated,
            format!("escalated to a human: {why}"),
        );
        let severity = inc
            .diagnosis
            .as_ref()
            .map_or(Severity::Critical, |d| d.plan.escalation_severity);
        let summary = format!("babysitter needs a human on {}: {why}", inc.run);
        self.page(inc, PageAction::Trigger, severity, summary, now)
            .await;
    }

    /// Sends a page for the incident with its evidence; records it. Returns delivery success.
    async fn page(
        &self,
        inc: &mut Incident,
        action: PageAction,
        severity: Severity,
        summary: String,
        now: f64,
    ) -> bool {
        let page = self.incident_page(inc, action, severity, summary);
        self.send_page(inc, page, now).await
    }

    /// The page for an incident: its finding, diagnosis and plan, what was done, the pending
    /// action with the commands that approve or reject it, and links to the incident and to the
    /// run's page on the dashboard.
    fn incident_page(
        &self,
        inc: &Incident,
        action: PageAction,
        severity: Severity,
        summary: String,
    ) -> Page {
        // An acknowledge or resolve carries the severity of the trigger it answers.
        let severity = match action {
            PageAction::Trigger => severity,
            PageAction::Acknowledge | PageAction::Resolve => inc.page_severity.unwrap_or(severity),
        };
        let base = self.public_url();
        // A runbook's `escalate.route` overrides the watch's route for its incident's pages.
        let route = match inc
            .diagnosis
            .as_ref()
            .and_then(|d| d.plan.escalation_route.clone())
        {
            Some(r) => r,
            None => self
                .cfg
                .watches
                .iter()
                .find(|w| w.run == inc.run)
                .map_or_else(|| "default".to_string(), |w| w.route.clone()),
        };
        let mut details = Vec::new();
        if let Some(f) = self.primary_finding(inc) {
            details.push((
                "finding".to_string(),
                format!("{} on {}: {}", f.kind, f.chart, f.message),
            ));
        }
        if let Some(d) = &inc.diagnosis {
            details.push((
                "runbook".to_string(),
                format!("{} — {}", d.runbook, d.title),
            ));
            if !d.plan.steps.is_empty() {
                let steps: Vec<String> =
                    d.plan.steps.iter().map(|s| s.action.to_string()).collect();
                details.push(("plan".to_string(), steps.join(" → ")));
            }
        }
        for a in &inc.actions {
            details.push((
                "done".to_string(),
                format!(
                    "{} ({})",
                    a.action,
                    if a.ok { a.detail.as_str() } else { "FAILED" }
                ),
            ));
        }
        if let Some(VerifyStatus::Failed(v)) = &inc.verification {
            details.push(("verification".to_string(), format!("failed: {v}")));
        }
        let dashboard = format!("{base}/runs/{}", inc.run);
        let (approve_command, reject_command) = match (&inc.pending, inc.state) {
            (Some(p), IncidentState::AwaitingApproval) => {
                details.push((
                    "proposed".to_string(),
                    format!("{} — {}", p.action, p.decision.reason),
                ));
                (
                    Some(format!(
                        "curl -sX POST {base}/api/v1/actions/{}/approve -H \"Authorization: Bearer $BABYSITTER_TOKEN\" -H 'content-type: application/json' -d '{{\"by\":\"'$USER'\"}}'",
                        p.id
                    )),
                    Some(format!(
                        "curl -sX POST {base}/api/v1/actions/{}/reject -H \"Authorization: Bearer $BABYSITTER_TOKEN\" -H 'content-type: application/json' -d '{{\"by\":\"'$USER'\",\"reason\":\"...\"}}'",
                        p.id
                    )),
                )
            }
            _ => (None, None),
        };
        details.push(("dashboard".to_string(), dashboard.clone()));
        Page {
            dedup_key: format!("babysitter/{}", inc.id),
            action,
            severity,
            summary,
            run: inc.run.clone(),
            incident: inc.id.clone(),
            route,
            details,
            approve_command,
            reject_command,
            links: vec![format!("{base}/api/v1/incidents/{}", inc.id), dashboard],
            reminder: 0,
        }
    }

    /// Pages a reminder when the pending approval has waited `renotify_after` (once more per
    /// period, at most `renotify_max` times). Same dedup key: still one open page. `paused` is
    /// `Some(gpus)` when babysitter holds the run paused meanwhile: the reminder says for how
    /// long, and what the idle GPUs have cost so far when their number is known.
    async fn renotify(
        &self,
        inc: &mut Incident,
        p: &crate::incident::PendingAction,
        paused: Option<Option<usize>>,
        now: f64,
    ) {
        let cfg = &self.cfg.paging;
        if cfg.renotify_max == 0 || inc.renotified >= cfg.renotify_max || !inc.paged {
            return;
        }
        let every = cfg.renotify_after.as_secs_f64();
        let due = p.requested_at + every * f64::from(inc.renotified + 1);
        if now < due {
            return;
        }
        inc.renotified += 1;
        let (n, max) = (inc.renotified, cfg.renotify_max);
        let waited = std::time::Duration::from_secs((now - p.requested_at).max(0.0) as u64);
        let idle = paused
            .and_then(|gpus| paused_since(inc).map(|since| (now - since, gpus)))
            .map(|(secs, gpus)| format!("; {}", crate::act::rollback::idle_note(secs, gpus)))
            .unwrap_or_default();
        let summary = format!(
            "{}: approval of {} unanswered for {} — reminder {n}/{max}{idle}",
            inc.run,
            p.action,
            humantime::format_duration(waited)
        );
        let severity = inc.page_severity.unwrap_or(Severity::Critical);
        let mut page = self.incident_page(inc, PageAction::Trigger, severity, summary);
        page.reminder = n;
        self.send_page(inc, page, now).await;
    }

    /// Delivers an incident's page and keeps the incident's page state.
    async fn send_page(&self, inc: &mut Incident, page: Page, now: f64) -> bool {
        let (action, severity) = (page.action, page.severity);
        let ok = self.deliver(&page, &inc.run, Some(&inc.id)).await;
        match action {
            PageAction::Trigger => {
                inc.paged = true;
                inc.page_severity = Some(severity);
            }
            PageAction::Resolve => inc.paged = false,
            PageAction::Acknowledge => {}
        }
        self.emit(
            now,
            &inc.run,
            Some(&inc.id),
            EventKind::Paged,
            format!("paged on-call `{}` ({action:?}, {severity})", page.route).to_lowercase(),
        );
        ok
    }

    /// Makes the pagers' outbox durable: undelivered pages go to `page_outbox` in the audit
    /// database, and those a previous run left there are redelivered. Called at start-up.
    pub(super) async fn attach_page_store(&self) {
        match crate::notify::PageStore::open(self.h.audit.clone()).await {
            Ok(store) => self.h.pager.attach_store(store).await,
            Err(e) => tracing::error!(
                error = %e,
                "page outbox not durable: undelivered pages are kept in memory only"
            ),
        }
    }

    /// Sends a page from a task and records it. The loop waits at most [`PAGE_WAIT`]; a slower
    /// delivery is recorded when it finishes. Returns false only for a delivery known to have
    /// failed.
    pub(super) async fn deliver(&self, page: &Page, run: &str, incident: Option<&str>) -> bool {
        self.metrics
            .pages
            .get_or_create(&KindLabel {
                kind: format!("{:?}", page.action).to_lowercase(),
            })
            .inc();
        // Deliver from a task: a slow or failing receiver (retries, backoff) must not hold up
        // the loop. What finishes within PAGE_WAIT is recorded here; what takes longer is
        // recorded by the task when it is done.
        let pager = self.h.pager.clone();
        let sent = page.clone();
        let mut delivery =
            tokio::spawn(async move { pager.send(&sent).await.map_err(|e| e.to_string()) });
        let result = match tokio::time::timeout(PAGE_WAIT, &mut delivery).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => Some(Err(format!("pager task failed: {e}"))),
            Err(_) => None,
        };
        let ok = result.as_ref().is_none_or(|r| r.is_ok());
        let pending = result.is_none();
        if !ok {
            self.metrics.page_failures.inc();
        }
        self.record(
            EntryKind::Page,
            Some(run),
            incident,
            json!({
                "pager": self.h.pager.name(), "page": page,
                "delivered": result.as_ref().map(|r| r.is_ok()),
                "pending": pending,
                "error": result.and_then(|r| r.err()),
            }),
        )
        .await;
        if pending {
            let audit = self.h.audit.clone();
            let metrics = self.metrics.clone();
            let (run, id, key) = (
                run.to_string(),
                incident.map(str::to_string),
                page.dedup_key.clone(),
            );
            tokio::spawn(async move {
                let outcome = match delivery.await {
                    Ok(r) => r,
                    Err(e) => Err(format!("pager task failed: {e}")),
                };
                if outcome.is_err() {
                    metrics.page_failures.inc();
                }
                let entry = crate::audit::NewEntry {
                    kind: EntryKind::Page,
                    run: Some(run),
                    incident: id,
                    actor: "babysitter".into(),
                    payload: json!({
                        "dedup_key": key, "late_delivery": true,
                        "delivered": outcome.is_ok(), "error": outcome.err(),
                    }),
                };
                if let Err(e) = audit.append(entry).await {
                    tracing::error!(error = %e, "cannot record a page's late delivery");
                }
            });
        }
        ok
    }

    /// A human approves a pending action. The engine runs it on its next pass, through the
    /// policy gate again.
    pub async fn approve(
        &self,
        action_id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Incident, ApprovalError> {
        self.settle_as(action_id, by, by, reason, true).await
    }

    /// A human rejects a pending action: the incident is escalated to humans.
    pub async fn reject(
        &self,
        action_id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Incident, ApprovalError> {
        self.settle_as(action_id, by, by, reason, false).await
    }

    /// Approves (or rejects) as `caller` (the authenticated API caller, recorded as the actor
    /// `api:<caller>`) on behalf of `by`.
    pub async fn settle_as(
        &self,
        action_id: &str,
        caller: &str,
        by: &str,
        reason: Option<String>,
        approve: bool,
    ) -> Result<Incident, ApprovalError> {
        let mut st = self.state.lock().await;
        let Some(inc) = st
            .incidents
            .values_mut()
            .find(|i| i.pending.as_ref().is_some_and(|p| p.id == action_id))
        else {
            return Err(withdrawn_or_not_found(&st, action_id));
        };
        let p = inc
            .pending
            .as_ref()
            .cloned()
            .ok_or_else(|| ApprovalError::NotFound(action_id.to_string()))?;
        if inc.state != IncidentState::AwaitingApproval
            || p.approved_by.is_some()
            || p.rejected_by.is_some()
        {
            return Err(ApprovalError::NotPending {
                id: action_id.to_string(),
                incident: inc.id.clone(),
                state: inc.state,
            });
        }
        let (run, id) = (inc.run.clone(), inc.id.clone());
        let kind = if approve {
            EntryKind::Approved
        } else {
            EntryKind::Rejected
        };
        let recorded = self
            .record_as(
                kind,
                Some(&run),
                Some(&id),
                &format!("api:{caller}"),
                json!({ "action_id": action_id, "action": p.action, "by": by, "reason": reason }),
            )
            .await;
        if !recorded {
            return Err(ApprovalError::Audit("append failed".into()));
        }
        let Some(inc) = st.incidents.get_mut(&id) else {
            return Err(ApprovalError::NotFound(action_id.to_string()));
        };
        if let Some(pending) = inc.pending.as_mut() {
            if approve {
                pending.approved_by = Some(by.to_string());
            } else {
                pending.rejected_by = Some(by.to_string());
            }
            pending.reason = reason;
        }
        let snapshot = inc.clone();
        let now = self.h.clock.now();
        self.emit(
            now,
            &run,
            Some(&id),
            if approve {
                EventKind::Approved
            } else {
                EventKind::Rejected
            },
            format!(
                "{by} {} {}",
                if approve { "approved" } else { "rejected" },
                p.action
            ),
        );
        drop(st);
        self.wake.notify_one();
        Ok(snapshot)
    }
}

/// Why an approve or reject names no pending action: it was withdrawn by a re-diagnosis (and
/// what waits for approval now, if anything), or it never existed here.
fn withdrawn_or_not_found(st: &State, action_id: &str) -> ApprovalError {
    let found = st.incidents.values().find_map(|inc| {
        inc.withdrawn
            .iter()
            .find(|w| w.id == action_id)
            .map(|w| (inc, w))
    });
    match found {
        Some((inc, w)) => ApprovalError::Withdrawn {
            id: action_id.to_string(),
            incident: inc.id.clone(),
            runbook: w.runbook.clone(),
            replaced_by: w.replaced_by.clone(),
            now: match (&inc.pending, inc.state) {
                (Some(p), IncidentState::AwaitingApproval) => {
                    format!(
                        "the new plan waits for approval of {} (id `{}`)",
                        p.action, p.id
                    )
                }
                _ => format!(
                    "incident {} is {} and waits for no approval",
                    inc.id, inc.state
                ),
            },
        },
        None => ApprovalError::NotFound(action_id.to_string()),
    }
}

/// When the incident's own pause took effect, if the run is still paused by it (no later
/// resume or restart of the incident).
fn paused_since(inc: &Incident) -> Option<f64> {
    let mut since = None;
    for a in inc.actions.iter().filter(|a| a.ok) {
        match a.action.kind() {
            ActionKind::Pause => since = Some(a.at),
            ActionKind::Resume | ActionKind::RestartFromCheckpoint => since = None,
            _ => {}
        }
    }
    since
}
