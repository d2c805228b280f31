//! Detector parameters, with defaults that work without configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorParams {
    /// A stall: no step progress for this many seconds while the run should be running.
    pub stall_after_secs: f64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams { stall_after_secs: 300.0 }
    }
}
