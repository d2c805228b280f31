//! Events: what the engine tells the terminal (demo story), the logs and, later, the dashboard.

use serde::{Deserialize, Serialize};

/// What kind of step of the story an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    WatchStarted,
    /// A discovered workload completed or disappeared: its watch ended.
    WatchEnded,
    /// This replica gained or lost the leadership.
    LeadershipChanged,
    SourceBlind,
    SourceRecovered,
    Finding,
    FindingCleared,
    IncidentOpened,
    Diagnosed,
    Decision,
    ActionDone,
    ActionFailed,
    ApprovalRequested,
    Approved,
    Rejected,
    Verifying,
    VerificationFailed,
    Resolved,
    Escalated,
    Paged,
    /// The LLM investigator reported (a proposal, "does not know", or a failure).
    AgentReported,
    /// A watched workload was suspended or resumed by someone other than babysitter (held,
    /// released, or babysitter's own pause undone).
    WorkloadSuspension,
}

impl EventKind {
    /// A one-character marker for the terminal.
    pub fn marker(self) -> &'static str {
        match self {
            EventKind::WatchStarted => "·",
            EventKind::WatchEnded => "·",
            EventKind::LeadershipChanged => "♛",
            EventKind::SourceBlind => "?",
            EventKind::SourceRecovered => "·",
            EventKind::Finding => "!",
            EventKind::FindingCleared => "·",
            EventKind::IncidentOpened => "▲",
            EventKind::Diagnosed => "≡",
            EventKind::Decision => "§",
            EventKind::ActionDone => "→",
            EventKind::ActionFailed => "✗",
            EventKind::ApprovalRequested => "⏸",
            EventKind::Approved => "✓",
            EventKind::Rejected => "✗",
            EventKind::Verifying => "…",
            EventKind::VerificationFailed => "✗",
            EventKind::Resolved => "✓",
            EventKind::Escalated => "⚑",
            EventKind::Paged => "☎",
            EventKind::AgentReported => "✎",
            EventKind::WorkloadSuspension => "‖",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Engine clock time.
    pub at: f64,
    pub run: String,
    pub incident: Option<String>,
    pub kind: EventKind,
    /// One readable line.
    pub text: String,
}
