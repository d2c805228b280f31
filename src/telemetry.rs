//! Telemetry: babysitter's own Prometheus metrics (served on `/metrics`).
//!
//! Names follow `babysitter_<name>_<unit>_total`; labels are bounded sets (kinds, verdicts,
//! outcomes) plus the run name for per-watch gauges.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    pub run: String,
}

pub struct Metrics {
    registry: Registry,
    pub polls: Counter,
    pub poll_errors: Family<RunLabel, Counter>,
    pub watch_blind: Family<RunLabel, Gauge>,
    pub findings: Family<KindLabel, Counter>,
    pub incidents_opened: Family<KindLabel, Counter>,
    pub incidents_open: Gauge,
    pub decisions: Family<KindLabel, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    pub pages: Family<KindLabel, Counter>,
    pub page_failures: Counter,
    pub audit_failures: Counter,
    pub audit_healthy: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("babysitter");
        let m = Metrics {
            registry: Registry::default(),
            polls: Counter::default(),
            poll_errors: Family::default(),
            watch_blind: Family::default(),
            findings: Family::default(),
            incidents_opened: Family::default(),
            incidents_open: Gauge::default(),
            decisions: Family::default(),
            actions: Family::default(),
            pages: Family::default(),
            page_failures: Counter::default(),
            audit_failures: Counter::default(),
            audit_healthy: Gauge::default(),
        };
        registry.register("polls", "Polls of all watches", m.polls.clone());
        registry.register("poll_errors", "Failed polls, by run", m.poll_errors.clone());
        registry.register(
            "watch_blind",
            "1 when babysitter cannot read the run's charts",
            m.watch_blind.clone(),
        );
        registry.register("findings", "Findings raised, by kind", m.findings.clone());
        registry.register(
            "incidents_opened",
            "Incidents opened, by family",
            m.incidents_opened.clone(),
        );
        registry.register(
            "incidents_open",
            "Incidents not yet resolved or escalated",
            m.incidents_open.clone(),
        );
        registry.register(
            "policy_decisions",
            "Policy decisions, by verdict",
            m.decisions.clone(),
        );
        registry.register(
            "actions",
            "Actions carried out, by kind and outcome",
            m.actions.clone(),
        );
        registry.register("pages", "Pages sent, by page action", m.pages.clone());
        registry.register(
            "page_failures",
            "Pages that could not be delivered",
            m.page_failures.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit appends that failed (babysitter does not act while the log is unwritable)",
            m.audit_failures.clone(),
        );
        registry.register(
            "audit_healthy",
            "1 when the audit log is writable",
            m.audit_healthy.clone(),
        );
        Metrics { registry, ..m }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let m = Metrics::new();
        m.polls.inc();
        m.findings
            .get_or_create(&KindLabel {
                kind: "stall".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("babysitter_polls_total 1"), "{text}");
        assert!(
            text.contains("babysitter_findings_total{kind=\"stall\"} 1"),
            "{text}"
        );
    }
}
