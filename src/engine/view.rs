//! View: a consistent, cheap-to-clone snapshot of the engine for the API.

use std::collections::BTreeMap;

use serde::Serialize;

use super::State;
use super::suspension::Held;
use crate::act::Target;
use crate::detect::Finding;
use crate::incident::Incident;
use crate::policy::Autonomy;

/// What the API shows of one watch.
#[derive(Debug, Clone, Serialize)]
pub struct WatchView {
    pub run: String,
    pub target: Target,
    pub autonomy: Autonomy,
    pub route: String,
    /// `running`, `paused` (by babysitter), `held` (suspended by someone else: a human, Kueue),
    /// `blind` (charts unreadable) or `waiting` (no data yet).
    pub status: String,
    /// Who holds the workload suspended, and since when (status `held`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    pub last_sample: Option<f64>,
    pub blind_since: Option<f64>,
    pub source_error: Option<String>,
    pub active_findings: Vec<Finding>,
    pub open_incidents: Vec<String>,
    /// Newest value of every chart (`null` for NaN/Inf).
    pub latest: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub now: f64,
    pub ticks: u64,
    pub audit_healthy: bool,
    pub watches: Vec<WatchView>,
    pub incidents: BTreeMap<String, Incident>,
}

impl View {
    pub(super) fn build(st: &State, now: f64, audit_healthy: bool) -> View {
        let watches = st
            .watches
            .values()
            .map(|w| {
                let status = if w.blind_since.is_some() {
                    "blind"
                } else if w.paused {
                    "paused"
                } else if w.held.is_some() {
                    "held"
                } else if w.last_sample.is_none() {
                    "waiting"
                } else {
                    "running"
                };
                WatchView {
                    run: w.cfg.run.clone(),
                    target: w.cfg.target.clone(),
                    autonomy: w.cfg.autonomy,
                    route: w.cfg.route.clone(),
                    status: status.to_string(),
                    held: w.held.clone(),
                    last_sample: w.last_sample,
                    blind_since: w.blind_since,
                    source_error: w.source_error.clone(),
                    active_findings: w.hysteresis.active().cloned().collect(),
                    open_incidents: st
                        .incidents
                        .values()
                        .filter(|i| i.run == w.cfg.run && !i.state.is_final())
                        .map(|i| i.id.clone())
                        .collect(),
                    latest: w
                        .charts
                        .iter()
                        .filter_map(|(k, s)| {
                            s.last()
                                .map(|x| (k.to_string(), x.v.is_finite().then_some(x.v)))
                        })
                        .collect(),
                }
            })
            .collect();
        View {
            now,
            ticks: st.ticks,
            audit_healthy,
            watches,
            incidents: st.incidents.clone(),
        }
    }
}
