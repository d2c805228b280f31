//! Policy: the gate every action passes, whoever proposed it (a runbook, the agent, an API
//! request).
//!
//! [`decide`] is a pure function: the same [`PolicyConfig`] and [`PolicyRequest`] always give the
//! same [`Decision`], and every decision carries the rule that decided it (a stable snake_case
//! name, see [`rule`]) and a one-line reason a human can read, with the numbers. The engine
//! records each decision in the audit log before acting on it.
//!
//! The rules, in order; the first that applies decides:
//!
//! | # | rule | applies when | verdict |
//! | - | --- | --- | --- |
//! | 1 | `not_leader` | this replica does not lead | deny |
//! | 2 | `audit_unavailable` | the audit log cannot be written (everything but `page`) | deny |
//! | 3 | `invalid_action` | the action is malformed (a config patch with no change, a scale factor ≤ 0) | deny |
//! | 4 | `not_in_runbook` | the diagnosing runbook does not list the action | deny |
//! | 5 | `mode_never` | the kind's mode is `never` | deny |
//! | 6 | `read_only` | the global read-only switch is on and the action mutates the workload | deny |
//! | 7 | `autonomy_observe` | the watch only observes and the action mutates the workload | deny |
//! | 8 | `invalid_clock` | `now` is not a finite number (fail closed: no breaker can be evaluated) | deny |
//! | 9 | `circuit_breaker` | a rate limit for the kind is reached on this run (approval does not lift it) | deny |
//! | 10 | `cooldown` | the last action of the kind on this run is too recent | deny |
//! | 11 | `maintenance` | a maintenance window is open and the action mutates the workload | needs approval |
//! | 12 | `approval_mode` / `approval_autonomy` / `approval_runbook` | mode `approve`; autonomy `suggest` and the action mutates; the runbook step asks | needs approval |
//! | 13 | `approved` | 11 or 12 applied and a human approved this very action | allow |
//! | 14 | `mode_auto` | nothing above applied | allow |

mod maintenance;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::act::{Action, ActionKind, ChangeOp};

pub use maintenance::{MaintenanceWindow, format_unix, unix_time};

/// The names of the rules that decide (the `rule` of a [`Decision`]). They are stable: the audit
/// log, dashboards and users' automation match on them.
pub mod rule {
    pub const NOT_LEADER: &str = "not_leader";
    pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";
    pub const INVALID_ACTION: &str = "invalid_action";
    pub const NOT_IN_RUNBOOK: &str = "not_in_runbook";
    pub const MODE_NEVER: &str = "mode_never";
    pub const READ_ONLY: &str = "read_only";
    pub const AUTONOMY_OBSERVE: &str = "autonomy_observe";
    pub const INVALID_CLOCK: &str = "invalid_clock";
    pub const CIRCUIT_BREAKER: &str = "circuit_breaker";
    pub const COOLDOWN: &str = "cooldown";
    pub const MAINTENANCE: &str = "maintenance";
    pub const APPROVAL_MODE: &str = "approval_mode";
    pub const APPROVAL_AUTONOMY: &str = "approval_autonomy";
    pub const APPROVAL_RUNBOOK: &str = "approval_runbook";
    pub const APPROVED: &str = "approved";
    pub const MODE_AUTO: &str = "mode_auto";
}

/// How far babysitter may go on a watch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Autonomy {
    /// Detect, diagnose and page; never touch the workload.
    Observe,
    /// Propose every workload action for a human's approval.
    Suggest,
    /// Act within the per-action modes.
    #[default]
    Act,
}

impl Autonomy {
    pub const ALL: [Autonomy; 3] = [Autonomy::Observe, Autonomy::Suggest, Autonomy::Act];

    pub fn as_str(self) -> &'static str {
        match self {
            Autonomy::Observe => "observe",
            Autonomy::Suggest => "suggest",
            Autonomy::Act => "act",
        }
    }
}

impl fmt::Display for Autonomy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-action mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Runs without asking (within autonomy, runbook, breakers and cooldowns).
    Auto,
    /// Every action of this kind waits for a human's approval.
    Approve,
    /// Never runs, whoever asks.
    Never,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Auto, Mode::Approve, Mode::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::Never => "never",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A circuit breaker: at most `max` actions of `action` per run within `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub action: ActionKind,
    /// At least 1 (to forbid a kind, set its mode to `never`).
    pub max: u32,
    /// Sliding window, positive.
    #[serde(with = "crate::config::duration")]
    pub window: Duration,
}

/// The policy section of the configuration (`[policy]`).
///
/// Every field has a default (see [`PolicyConfig::default`]), so a file only lists what it
/// changes; maps merge key by key with the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Global switch: no workload-mutating action runs while it is on.
    pub read_only: bool,
    /// Mode per action kind; kinds not listed use `Mode::Auto`.
    pub modes: BTreeMap<ActionKind, Mode>,
    /// Circuit breakers per run. Several limits may name one kind (e.g. 1 per 10m and 3 per 6h);
    /// each applies.
    pub limits: Vec<RateLimit>,
    /// Minimum time between two actions of one kind on one run; `0s` turns a default off.
    #[serde(with = "crate::config::duration_map")]
    pub cooldowns: BTreeMap<ActionKind, Duration>,
    /// Periods during which workload-mutating actions need a human's approval.
    pub maintenance: Vec<MaintenanceWindow>,
}

/// An action already carried out (or started) on a run, for breakers and cooldowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastAction {
    pub run: String,
    pub kind: ActionKind,
    pub at: f64,
}

/// What the gate is asked.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    pub run: &'a str,
    pub action: &'a Action,
    pub autonomy: Autonomy,
    /// The diagnosing runbook lists this action (an action outside the runbook is denied).
    pub runbook_allows: bool,
    /// The runbook step asks for a human's approval.
    pub step_requires_approval: bool,
    /// A human approved this very action. A blank name counts as no approval.
    pub approved_by: Option<&'a str>,
    /// Past actions (any run; the gate filters by run). Entries whose `at` is not a finite number
    /// are ignored.
    pub history: &'a [PastAction],
    pub now: f64,
    /// The audit log is writable (fail closed when it is not).
    pub audit_healthy: bool,
    /// This replica leads (only the leader acts).
    pub is_leader: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    NeedsApproval,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::NeedsApproval => "needs_approval",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Machine-readable name of the rule that decided (one of [`rule`]).
    pub rule: String,
    /// One line for humans.
    pub reason: String,
    /// For a denial by `cooldown` or `circuit_breaker`: the clock time (Unix seconds) from which
    /// the same action on the same run would pass that rule, if nothing else runs meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<f64>,
}

impl Decision {
    fn new(verdict: Verdict, rule: &str, reason: String) -> Self {
        Decision {
            verdict,
            rule: rule.to_owned(),
            reason,
            retry_at: None,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// A policy setting that makes no sense; names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy.{field}: {message}")]
pub struct PolicyError {
    /// Path of the field inside `[policy]`, e.g. `limits[1].max`.
    pub field: String,
    pub message: String,
}

impl PolicyConfig {
    /// The mode of an action kind (`auto` when the kind is not listed).
    pub fn mode(&self, kind: ActionKind) -> Mode {
        self.modes.get(&kind).copied().unwrap_or(Mode::Auto)
    }

    /// Rejects settings that cannot be meant: a limit of 0 (use mode `never`), a zero window, a
    /// maintenance window that ends before (or when) it starts.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |field: String, message: String| Err(PolicyError { field, message });
        for (i, l) in self.limits.iter().enumerate() {
            if l.max == 0 {
                return err(
                    format!("limits[{i}].max"),
                    format!(
                        "must be at least 1 (to forbid {} altogether, set policy.modes.{} = \"never\")",
                        l.action, l.action
                    ),
                );
            }
            if l.window.is_zero() {
                return err(
                    format!("limits[{i}].window"),
                    format!("must be positive (limit for {})", l.action),
                );
            }
        }
        for (i, w) in self.maintenance.iter().enumerate() {
            if !w.start.is_finite() {
                return err(
                    format!("maintenance[{i}].start"),
                    "must be a finite time".into(),
                );
            }
            if !w.end.is_finite() {
                return err(
                    format!("maintenance[{i}].end"),
                    "must be a finite time".into(),
                );
            }
            if w.end <= w.start {
                return err(
                    format!("maintenance[{i}].end"),
                    format!(
                        "{} is not after start {}",
                        format_unix(w.end),
                        format_unix(w.start)
                    ),
                );
            }
        }
        Ok(())
    }
}

impl Default for PolicyConfig {
    /// Conservative but useful: babysitter may act on its own, but cannot loop.
    ///
    /// - **Modes**: every kind `auto`. Autonomy per watch (`observe` / `suggest`) and
    ///   `requires_approval` on a runbook step are the places to ask for a human; a global
    ///   `approve` would make the default `act` autonomy mean "suggest".
    /// - **restart_from_checkpoint: at most 3 per run per 6h, 5m apart.** NVIDIA Resiliency
    ///   Extension gives up after 3 restart cycles without progress; Megatron-LM issue #5281
    ///   shows a deterministic NaN after restore that restarted 44 times, ~90 s apart. Three
    ///   attempts cover a transient fault (a bad node, a flaky collective) without burning a
    ///   night of GPU hours; the 5-minute cooldown leaves time for the verification that a
    ///   restart worked before the next one.
    /// - **patch_config: 3 per 6h, 1m apart.** A patch usually rides on a restart; more than that
    ///   means the diagnosis is guessing.
    /// - **pause: 6 per 1h.** Pausing is cheap to undo but a pause/resume flap wastes the
    ///   allocation and hides the problem.
    /// - **page: 10 per 1h per run.** Enough for every incident to reach a human, few enough that
    ///   a flapping run does not bury the on-call.
    /// - No limit on resume (it undoes a pause, which is limited), capture_diagnostics or annotate
    ///   (read-only or informational).
    /// - Not read-only, no maintenance windows.
    fn default() -> Self {
        const HOUR: u64 = 3600;
        let limit = |action, max, secs| RateLimit {
            action,
            max,
            window: Duration::from_secs(secs),
        };
        PolicyConfig {
            read_only: false,
            modes: ActionKind::ALL.iter().map(|&k| (k, Mode::Auto)).collect(),
            limits: vec![
                limit(ActionKind::RestartFromCheckpoint, 3, 6 * HOUR),
                limit(ActionKind::PatchConfig, 3, 6 * HOUR),
                limit(ActionKind::Pause, 6, HOUR),
                limit(ActionKind::Page, 10, HOUR),
            ],
            cooldowns: BTreeMap::from([
                (ActionKind::RestartFromCheckpoint, Duration::from_secs(300)),
                (ActionKind::PatchConfig, Duration::from_secs(60)),
            ]),
            maintenance: Vec::new(),
        }
    }
}

/// May this action go out while the audit log cannot be written? Only a page: babysitter then
/// does nothing to workloads, but a human must hear about it. Every variant is listed so that a
/// new action forces this choice.
fn runs_without_audit(action: &Action) -> bool {
    match action {
        Action::Page { .. } => true,
        Action::Pause
        | Action::Resume
        | Action::RestartFromCheckpoint { .. }
        | Action::PatchConfig { .. }
        | Action::CaptureDiagnostics
        | Action::Annotate { .. } => false,
    }
}

/// Why an action is malformed, if it is. Every variant is listed so that a new action forces a
/// decision about what a well-formed one is.
fn malformed(action: &Action) -> Option<String> {
    match action {
        Action::PatchConfig { changes } => {
            if changes.is_empty() {
                return Some("a config patch with no change".into());
            }
            let mut seen = std::collections::BTreeSet::new();
            for c in changes {
                if c.key.trim().is_empty() {
                    return Some("a config change with an empty key".into());
                }
                if !seen.insert(c.key.as_str()) {
                    return Some(format!("`{}` is changed twice in one patch", c.key));
                }
                match &c.op {
                    ChangeOp::Scale(x) if !(x.is_finite() && *x > 0.0) => {
                        return Some(format!(
                            "scaling `{}` by {x} (a factor must be finite and positive)",
                            c.key
                        ));
                    }
                    ChangeOp::Scale(_) | ChangeOp::Set(_) => {}
                }
            }
            None
        }
        Action::Pause
        | Action::Resume
        | Action::RestartFromCheckpoint { .. }
        | Action::CaptureDiagnostics
        | Action::Page { .. }
        | Action::Annotate { .. } => None,
    }
}

/// `n` actions of a kind, in words: "1 restart", "3 restarts".
fn count_of(kind: ActionKind, n: usize) -> String {
    let (one, many) = match kind {
        ActionKind::Pause => ("pause", "pauses"),
        ActionKind::Resume => ("resume", "resumes"),
        ActionKind::RestartFromCheckpoint => ("restart", "restarts"),
        ActionKind::PatchConfig => ("config patch", "config patches"),
        ActionKind::CaptureDiagnostics => ("diagnostics capture", "diagnostics captures"),
        ActionKind::Page => ("page", "pages"),
        ActionKind::Annotate => ("annotation", "annotations"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A span of seconds for a human, rounded up to whole seconds: "4m 10s".
fn format_span(secs: f64) -> String {
    let whole = if secs.is_finite() && secs > 0.0 {
        secs.ceil().min(u64::MAX as f64) as u64
    } else {
        0
    };
    humantime::format_duration(Duration::from_secs(whole)).to_string()
}

/// "may run again in 4m 10s, at 2026-11-03T10:05:00Z".
fn again(now: f64, at: f64) -> String {
    format!(
        "may run again in {}, at {}",
        format_span(at - now),
        format_unix(at)
    )
}

/// The gate. Pure and deterministic; see the module documentation for the rules and their order.
pub fn decide(cfg: &PolicyConfig, req: &PolicyRequest<'_>) -> Decision {
    let kind = req.action.kind();
    let run = req.run;
    let mutates = kind.mutates_workload();
    let mode = cfg.mode(kind);
    let deny = |rule: &str, why: String| {
        Decision::new(Verdict::Deny, rule, format!("{kind} refused: {why}"))
    };

    if !req.is_leader {
        return deny(
            rule::NOT_LEADER,
            "this replica is not the leader (only the leader acts)".into(),
        );
    }
    if !req.audit_healthy && !runs_without_audit(req.action) {
        return deny(
            rule::AUDIT_UNAVAILABLE,
            "the audit log cannot be written (fail closed; only pages go out)".into(),
        );
    }
    if let Some(why) = malformed(req.action) {
        return deny(rule::INVALID_ACTION, why);
    }
    if !req.runbook_allows {
        return deny(
            rule::NOT_IN_RUNBOOK,
            format!("the runbook diagnosing {run} does not list {kind}"),
        );
    }
    if mode == Mode::Never {
        return deny(rule::MODE_NEVER, format!("policy mode for {kind} is never"));
    }
    if cfg.read_only && mutates {
        return deny(
            rule::READ_ONLY,
            "policy is read-only (no workload changes)".into(),
        );
    }
    if req.autonomy == Autonomy::Observe && mutates {
        return deny(
            rule::AUTONOMY_OBSERVE,
            format!("the watch of {run} has autonomy observe (no workload changes)"),
        );
    }
    let now = req.now;
    if !now.is_finite() {
        return deny(
            rule::INVALID_CLOCK,
            format!("the clock reads {now}, so rate limits cannot be checked"),
        );
    }

    // Times of earlier actions of this kind on this run, oldest first.
    let mut past: Vec<f64> = req
        .history
        .iter()
        .filter(|p| p.run == run && p.kind == kind && p.at.is_finite())
        .map(|p| p.at)
        .collect();
    past.sort_by(f64::total_cmp);

    for limit in cfg.limits.iter().filter(|l| l.action == kind) {
        let window = limit.window.as_secs_f64();
        let recent: Vec<f64> = past
            .iter()
            .copied()
            .filter(|&at| at > now - window)
            .collect();
        let max = limit.max as usize;
        if recent.len() >= max {
            // The count drops below `max` once the `len - max + 1` oldest have left the window.
            let idx = recent.len().saturating_sub(max);
            let retry = recent.get(idx).map(|at| at + window);
            let window_text = humantime::format_duration(limit.window);
            let mut why = format!(
                "{} of {run} in the last {window_text} (limit {})",
                count_of(kind, recent.len()),
                limit.max
            );
            if let Some(at) = retry {
                why = format!("{why}; {}", again(now, at));
            }
            let mut d = deny(rule::CIRCUIT_BREAKER, why);
            d.retry_at = retry;
            return d;
        }
    }

    if let (Some(&cooldown), Some(&last)) = (cfg.cooldowns.get(&kind), past.last())
        && !cooldown.is_zero()
    {
        let ready = last + cooldown.as_secs_f64();
        if now < ready {
            let ago = if now >= last {
                format!("{} ago", format_span(now - last))
            } else {
                format!("{} in the future", format_span(last - now))
            };
            let mut d = deny(
                rule::COOLDOWN,
                format!(
                    "cooldown {} after the last {kind} on {run} ({ago}); {}",
                    humantime::format_duration(cooldown),
                    again(now, ready)
                ),
            );
            d.retry_at = Some(ready);
            return d;
        }
    }

    // Rules that ask for a human, the first that applies names the decision.
    let window = cfg.maintenance.iter().find(|w| mutates && w.contains(now));
    let needs: Option<(&str, String)> = if let Some(w) = window {
        let about = if w.reason.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", w.reason.trim())
        };
        Some((
            rule::MAINTENANCE,
            format!("maintenance window{about} until {}", format_unix(w.end)),
        ))
    } else if mode == Mode::Approve {
        Some((
            rule::APPROVAL_MODE,
            format!("policy mode for {kind} is approve"),
        ))
    } else if req.autonomy == Autonomy::Suggest && mutates {
        Some((
            rule::APPROVAL_AUTONOMY,
            format!("the watch of {run} has autonomy suggest"),
        ))
    } else if req.step_requires_approval {
        Some((
            rule::APPROVAL_RUNBOOK,
            "the runbook step requires approval".into(),
        ))
    } else {
        None
    };

    let approver = req.approved_by.map(str::trim).filter(|a| !a.is_empty());
    match (needs, approver) {
        (Some((rule, why)), None) => Decision::new(
            Verdict::NeedsApproval,
            rule,
            format!("{kind} on {run} needs approval: {why}"),
        ),
        (Some((_, why)), Some(who)) => Decision::new(
            Verdict::Allow,
            rule::APPROVED,
            format!("{kind} on {run} allowed: approved by {who} ({why})"),
        ),
        (None, _) => Decision::new(
            Verdict::Allow,
            rule::MODE_AUTO,
            format!(
                "{kind} on {run} allowed: mode {mode}, autonomy {}",
                req.autonomy
            ),
        ),
    }
}
