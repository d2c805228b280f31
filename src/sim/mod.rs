//! sim

// --- temporary stubs in main until the sim branch lands ---
use crate::clock::SharedClock;
pub enum Fault {
    LossSpike {
        at: f64,
        span_steps: u64,
    },
    Hang {
        at: f64,
        survives_restarts: u32,
    },
    GpuXid {
        at: f64,
        errors: u32,
        every: f64,
        node_bound: bool,
    },
}
pub struct SimRunSpec {
    pub faults: Vec<Fault>,
}
impl SimRunSpec {
    pub fn new(_n: &str, _s: f64) -> Self {
        SimRunSpec { faults: vec![] }
    }
}
pub struct SimCluster;
impl SimCluster {
    pub fn new(_c: SharedClock, _s: u64) -> Self {
        SimCluster
    }
    pub fn add_run(&self, _s: SimRunSpec) {}
}
#[async_trait::async_trait]
impl crate::sources::MetricsSource for SimCluster {
    async fn poll(
        &self,
        r: &[crate::sources::PollRequest],
        _n: f64,
    ) -> Vec<Result<crate::sources::ChartBatch, crate::sources::SourceError>> {
        r.iter().map(|_| Ok(vec![])).collect()
    }
}
#[async_trait::async_trait]
impl crate::act::Actuator for SimCluster {
    async fn execute(
        &self,
        _t: &crate::act::Target,
        _a: &crate::act::Action,
        _k: &str,
    ) -> Result<crate::act::ActionOutcome, crate::act::ActError> {
        Err(crate::act::ActError::Failed("stub".into()))
    }
    async fn checkpoints(
        &self,
        _t: &crate::act::Target,
    ) -> Result<Vec<crate::act::Checkpoint>, crate::act::ActError> {
        Ok(vec![])
    }
}
