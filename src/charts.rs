//! Charts: the time series babysitter reads for each watched run.
//!
//! A chart is identified by a [`ChartKey`]: a [`Role`] from the vocabulary of FORMATS.md §1 plus
//! optional labels (`step_time{rank=3}`). Samples are `(t, v)` pairs where `t` is seconds on the
//! engine's clock (Unix seconds live, seconds since the start of the run in a trace). `NaN` and
//! `±Inf` are real values, not missing data: they are anomalies to detect.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Chart roles (FORMATS.md §1). Unknown names are not roles: readers skip them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Step,
    Loss,
    EvalLoss,
    GradNorm,
    Lr,
    LossScale,
    SkippedSteps,
    Throughput,
    StepTime,
    ComputeTime,
    GpuUtil,
    GpuMemUsed,
    XidErrors,
    EccErrors,
    Restarts,
    CheckpointAge,
    DataWait,
}

impl Role {
    pub const ALL: [Role; 17] = [
        Role::Step,
        Role::Loss,
        Role::EvalLoss,
        Role::GradNorm,
        Role::Lr,
        Role::LossScale,
        Role::SkippedSteps,
        Role::Throughput,
        Role::StepTime,
        Role::ComputeTime,
        Role::GpuUtil,
        Role::GpuMemUsed,
        Role::XidErrors,
        Role::EccErrors,
        Role::Restarts,
        Role::CheckpointAge,
        Role::DataWait,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Step => "step",
            Role::Loss => "loss",
            Role::EvalLoss => "eval_loss",
            Role::GradNorm => "grad_norm",
            Role::Lr => "lr",
            Role::LossScale => "loss_scale",
            Role::SkippedSteps => "skipped_steps",
            Role::Throughput => "throughput",
            Role::StepTime => "step_time",
            Role::ComputeTime => "compute_time",
            Role::GpuUtil => "gpu_util",
            Role::GpuMemUsed => "gpu_mem_used",
            Role::XidErrors => "xid_errors",
            Role::EccErrors => "ecc_errors",
            Role::Restarts => "restarts",
            Role::CheckpointAge => "checkpoint_age",
            Role::DataWait => "data_wait",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ChartError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ChartError::UnknownRole(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChartError {
    #[error("unknown chart role `{0}`")]
    UnknownRole(String),
    #[error("malformed chart name `{0}`: expected role or role{{label=value,...}}")]
    Malformed(String),
}

/// A chart: role plus labels, written `role` or `role{k=v,k2=v2}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChartKey {
    pub role: Role,
    pub labels: BTreeMap<String, String>,
}

impl ChartKey {
    pub fn new(role: Role) -> Self {
        ChartKey {
            role,
            labels: BTreeMap::new(),
        }
    }

    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
}

impl fmt::Display for ChartKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role.as_str())?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl FromStr for ChartKey {
    type Err = ChartError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (role, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let role: Role = role.trim().parse()?;
        let mut key = ChartKey::new(role);
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| ChartError::Malformed(s.to_string()))?;
            for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| ChartError::Malformed(s.to_string()))?;
                let v = v.trim().trim_matches('"');
                key.labels.insert(k.trim().to_string(), v.to_string());
            }
        }
        Ok(key)
    }
}

impl Serialize for ChartKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChartKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One sample: time (seconds) and value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t: f64,
    pub v: f64,
}

impl Sample {
    pub fn new(t: f64, v: f64) -> Self {
        Sample { t, v }
    }
}

/// A chart's samples, sorted by time, one sample per timestamp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    samples: Vec<Sample>,
}

impl Series {
    pub fn new() -> Self {
        Series::default()
    }

    /// Builds a series from samples in any order; for duplicate timestamps the last one wins.
    /// Samples with a non-finite *time* are dropped (a non-finite *value* is kept).
    pub fn from_samples(samples: impl IntoIterator<Item = Sample>) -> Self {
        let mut s = Series::new();
        s.merge(samples);
        s
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn last(&self) -> Option<Sample> {
        self.samples.last().copied()
    }

    /// Merges new samples in. The common case (all newer than the last one) is an append; late
    /// samples are inserted in order. Returns how many samples were new.
    pub fn merge(&mut self, samples: impl IntoIterator<Item = Sample>) -> usize {
        let mut added = 0;
        for s in samples {
            if !s.t.is_finite() {
                continue;
            }
            match self.samples.last() {
                Some(last) if s.t > last.t => {
                    self.samples.push(s);
                    added += 1;
                }
                None => {
                    self.samples.push(s);
                    added += 1;
                }
                Some(_) => {
                    match self.samples.binary_search_by(|x| x.t.total_cmp(&s.t)) {
                        Ok(i) => self.samples[i] = s,
                        Err(i) => {
                            self.samples.insert(i, s);
                            added += 1;
                        }
                    }
                }
            }
        }
        added
    }

    /// Samples with `from <= t <= to`.
    pub fn range(&self, from: f64, to: f64) -> &[Sample] {
        let lo = self.samples.partition_point(|s| s.t < from);
        let hi = self.samples.partition_point(|s| s.t <= to);
        if lo >= hi { &[] } else { &self.samples[lo..hi] }
    }

    /// Samples with `t <= to` (what a causal reader may see at time `to`).
    pub fn until(&self, to: f64) -> &[Sample] {
        let hi = self.samples.partition_point(|s| s.t <= to);
        &self.samples[..hi]
    }

    /// Drops samples older than `before`.
    pub fn prune_before(&mut self, before: f64) {
        let lo = self.samples.partition_point(|s| s.t < before);
        if lo > 0 {
            self.samples.drain(..lo);
        }
    }
}

/// All charts of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartSet {
    charts: BTreeMap<ChartKey, Series>,
}

impl ChartSet {
    pub fn new() -> Self {
        ChartSet::default()
    }

    pub fn insert(&mut self, key: ChartKey, series: Series) {
        self.charts.insert(key, series);
    }

    /// Merges samples into a chart, creating it if needed; returns how many were new.
    pub fn merge(&mut self, key: ChartKey, samples: impl IntoIterator<Item = Sample>) -> usize {
        self.charts.entry(key).or_default().merge(samples)
    }

    /// The chart with this role and no labels (or, failing that, the first one with this role).
    pub fn get(&self, role: Role) -> Option<&Series> {
        self.charts.get(&ChartKey::new(role)).or_else(|| self.by_role(role).next().map(|(_, s)| s))
    }

    pub fn get_key(&self, key: &ChartKey) -> Option<&Series> {
        self.charts.get(key)
    }

    /// Every chart with this role (e.g. one per rank).
    pub fn by_role(&self, role: Role) -> impl Iterator<Item = (&ChartKey, &Series)> {
        self.charts.iter().filter(move |(k, _)| k.role == role)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ChartKey, &Series)> {
        self.charts.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.charts.values().all(Series::is_empty)
    }

    /// Time of the newest sample of any chart.
    pub fn latest_t(&self) -> Option<f64> {
        self.charts
            .values()
            .filter_map(|s| s.last().map(|x| x.t))
            .max_by(f64::total_cmp)
    }

    pub fn prune_before(&mut self, before: f64) {
        for s in self.charts.values_mut() {
            s.prune_before(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_key_round_trip() {
        let k: ChartKey = "step_time{rank=3}".parse().unwrap();
        assert_eq!(k.role, Role::StepTime);
        assert_eq!(k.labels.get("rank").map(String::as_str), Some("3"));
        assert_eq!(k.to_string(), "step_time{rank=3}");
        assert_eq!("loss".parse::<ChartKey>().unwrap(), ChartKey::new(Role::Loss));
        assert!("lossy".parse::<ChartKey>().is_err());
        assert!("loss{rank".parse::<ChartKey>().is_err());
    }

    #[test]
    fn series_merge_keeps_order_and_dedups() {
        let mut s = Series::from_samples([Sample::new(1.0, 1.0), Sample::new(3.0, 3.0)]);
        assert_eq!(s.merge([Sample::new(2.0, 2.0), Sample::new(3.0, 30.0), Sample::new(4.0, f64::NAN)]), 2);
        let ts: Vec<f64> = s.samples().iter().map(|x| x.t).collect();
        assert_eq!(ts, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.samples()[2].v, 30.0);
        assert!(s.last().unwrap().v.is_nan());
        assert_eq!(s.range(2.0, 3.0).len(), 2);
        assert_eq!(s.until(2.5).len(), 2);
        s.prune_before(3.0);
        assert_eq!(s.len(), 2);
    }
}
