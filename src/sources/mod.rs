//! Sources: where charts come from. The simulator in the demo, a trace file for replay, and
//! Prometheus-compatible APIs in production. A source is polled for many runs at once, so one
//! query can serve many watches.

pub mod prometheus;

use async_trait::async_trait;

use crate::act::Target;
use crate::charts::{ChartKey, Sample};
use crate::config::WatchConfig;

/// Cumulative counters of a source (its own metrics on `/metrics`, the benchmark, the tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    pub polls: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    pub retries: u64,
    /// Queries that failed after their retries.
    pub failed_queries: u64,
    pub series: u64,
    pub samples: u64,
}

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

    /// A watch added while running (Kubernetes discovery): set up what polling it needs. An
    /// error names what is wrong with the watch; the engine then does not add it.
    fn add_run(&self, _watch: &WatchConfig) -> Result<(), SourceError> {
        Ok(())
    }

    /// A watch that ended (its workload completed or disappeared).
    fn remove_run(&self, _run: &str) {}

    /// Counters since start (zero for sources that keep none).
    fn stats(&self) -> PollStats {
        PollStats::default()
    }
}
