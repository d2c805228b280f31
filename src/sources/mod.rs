//! Sources: where charts come from. The simulator in the demo, a trace file for replay, and
//! Prometheus-compatible APIs in production. A source is polled for many runs at once, so one
//! query can serve many watches.

pub mod prometheus;

use async_trait::async_trait;

use crate::act::Target;
use crate::charts::{ChartKey, Sample};
use crate::config::WatchConfig;

/// One run to poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest {
    pub run: String,
    pub target: Target,
    /// Time of the newest sample already seen; `None` on the first poll (the source then
    /// returns what history it has, bounded by its own look-back).
    pub since: Option<f64>,
}

/// New samples for one run.
pub type ChartBatch = Vec<(ChartKey, Vec<Sample>)>;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("unknown run `{0}`")]
    UnknownRun(String),
    #[error("source unavailable: {0}")]
    Unavailable(String),
    #[error("bad data from source: {0}")]
    BadData(String),
}

#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// Samples newer than each request's `since` (a source may repeat a small overlap; merging
    /// is idempotent) and no newer than `now`. One result per request, in order.
    async fn poll(
        &self,
        requests: &[PollRequest],
        now: f64,
    ) -> Vec<Result<ChartBatch, SourceError>>;

    /// A watch added while running (Kubernetes discovery): the source prepares what it needs
    /// to poll it (e.g. resolves its charts), or says why it cannot.
    fn add_run(&self, watch: &WatchConfig) -> Result<(), SourceError> {
        let _ = watch;
        Ok(())
    }

    /// A watch that ended: the source forgets it.
    fn remove_run(&self, run: &str) {
        let _ = run;
    }
}
