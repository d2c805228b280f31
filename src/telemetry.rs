//! Telemetry: babysitter's own Prometheus metrics (served on `/metrics`).
//!
//! Names follow `babysitter_<name>_<unit>_total`; labels are bounded sets (kinds, verdicts,
//! outcomes) plus the run name for per-watch gauges.

use crate::sources::PollStats;
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
    /// Incident rows that could not be read back when restoring (counted at each restore).
    pub incidents_unreadable: Counter,
    /// Plans replaced by a re-diagnosis, by the finding kind that brought it about.
    pub rediagnoses: Family<KindLabel, Counter>,
    /// 1 when this replica leads (only the leader acts).
    pub leader: Gauge,
    pub source_requests: Counter,
    pub source_retries: Counter,
    pub source_failed_queries: Counter,
    pub source_series: Counter,
    pub source_samples: Counter,
    /// Wall time of the last poll of every watch.
    pub poll_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The source's cumulative counters at the last poll (the counters above grow by the difference).
    source_seen: std::sync::Mutex<PollStats>,
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
            incidents_unreadable: Counter::default(),
            rediagnoses: Family::default(),
            leader: Gauge::default(),
            source_requests: Counter::default(),
            source_retries: Counter::default(),
            source_failed_queries: Counter::default(),
            source_series: Counter::default(),
            source_samples: Counter::default(),
            poll_seconds: Gauge::default(),
            source_seen: std::sync::Mutex::new(PollStats::default()),
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
        registry.register(
            "incidents_unreadable",
            "Incident rows that could not be read back at a restore, so were not continued (counted at each restore)",
            m.incidents_unreadable.clone(),
        );
        registry.register(
            "rediagnoses",
            "Plans replaced before any of their actions ran, because a more specific finding joined the incident (by that finding's kind)",
            m.rediagnoses.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica leads and may act; 0 for a follower",
            m.leader.clone(),
        );
        registry.register(
            "source_requests",
            "HTTP requests sent to the metrics source, retries included",
            m.source_requests.clone(),
        );
        registry.register(
            "source_retries",
            "Metrics-source requests retried after a transient failure",
            m.source_retries.clone(),
        );
        registry.register(
            "source_failed_queries",
            "Metrics-source queries that failed after their retries",
            m.source_failed_queries.clone(),
        );
        registry.register(
            "source_series",
            "Series received from the metrics source",
            m.source_series.clone(),
        );
        registry.register(
            "source_samples",
            "Samples received from the metrics source",
            m.source_samples.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "Wall time of the last poll of every watch",
            m.poll_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Brings the source counters up to the source's cumulative `stats`.
    pub fn observe_source(&self, stats: PollStats, poll_seconds: f64) {
        let mut seen = self.source_seen.lock().unwrap_or_else(|e| e.into_inner());
        let grow = |c: &Counter, now: u64, before: u64| {
            c.inc_by(now.saturating_sub(before));
        };
        grow(&self.source_requests, stats.requests, seen.requests);
        grow(&self.source_retries, stats.retries, seen.retries);
        grow(
            &self.source_failed_queries,
            stats.failed_queries,
            seen.failed_queries,
        );
        grow(&self.source_series, stats.series, seen.series);
        grow(&self.source_samples, stats.samples, seen.samples);
        *seen = stats;
        self.poll_seconds.set(poll_seconds);
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

    #[test]
    fn source_counters_follow_the_cumulative_stats() {
        let m = Metrics::new();
        let mut st = PollStats {
            polls: 1,
            requests: 6,
            retries: 1,
            failed_queries: 0,
            series: 600,
            samples: 72_000,
        };
        m.observe_source(st, 0.25);
        st.requests = 12;
        st.samples = 74_400;
        m.observe_source(st, 0.5);
        let text = m.encode();
        for want in [
            "babysitter_source_requests_total 12",
            "babysitter_source_retries_total 1",
            "babysitter_source_samples_total 74400",
            "babysitter_poll_duration_seconds 0.5",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    /// The alert rules and the Grafana dashboard shipped with the Helm chart only name metrics
    /// babysitter exposes (a renamed metric would silently break them).
    #[test]
    fn the_charts_alerts_and_dashboard_use_real_metric_names() {
        let m = Metrics::new();
        m.poll_errors
            .get_or_create(&RunLabel { run: "r".into() })
            .inc();
        m.watch_blind
            .get_or_create(&RunLabel { run: "r".into() })
            .set(0);
        let k = KindLabel { kind: "k".into() };
        for f in [&m.findings, &m.incidents_opened, &m.decisions, &m.pages] {
            f.get_or_create(&k).inc();
        }
        m.actions
            .get_or_create(&ActionLabels {
                kind: "pause".into(),
                outcome: "ok".into(),
            })
            .inc();
        let exposed = m.encode();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/babysitter/files");
        let mut checked = 0;
        for f in ["babysitter-rules.yaml", "grafana-dashboard.json"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("babysitter_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                if name == "babysitter_" {
                    continue;
                }
                let base = name.trim_end_matches("_total");
                assert!(
                    exposed.contains(&format!("# TYPE {base} ")),
                    "{f} uses `{name}`, which babysitter does not expose"
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "only {checked} metric references found");
    }
}
