//! Replay and scoring: `babysitter replay` and the detection benchmark.
//!
//! [`trace`] reads metric traces (FORMATS.md §1); [`run`] replays one through a detector set
//! poll by poll, causally and through hysteresis, as the engine would watch it live (§3);
//! [`baseline`] holds the static Prometheus alert rules babysitter is compared with; [`score`]
//! scores findings against labelled anomalies (§4); [`bench`] runs both detector sets over
//! folders of traces and prints the comparison table; [`export`] turns a live incident into a
//! trace and its labels, so a false alarm or a miss seen on call becomes a regression case.

pub mod baseline;
pub mod bench;
pub mod export;
pub mod generate;
pub mod run;
pub mod score;
pub mod trace;

pub use baseline::BaselineRules;
pub use export::{
    Clearing, ExportContext, ExportError, ExportWindow, IncidentTrace, incident_trace,
};
pub use run::{
    DetectorSet, FindingLine, Lateness, Replay, ReplayError, ReplayOptions, TimeScale, replay,
    scale_params,
};
pub use score::{GRACE_SECS, LabelledAnomaly, Labels, LabelsError, Score, TraceScore, score};
pub use trace::{Trace, TraceError};
