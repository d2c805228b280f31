//! Scoring (FORMATS.md §4): findings against a trace's labelled anomalies, with grace
//! G = 600 s, at family level and strictly (same kind), by episodes.
//!
//! Rules, as implemented:
//! - a labelled anomaly is detected when a finding of the same family (strict: same kind) has
//!   `start <= at <= end + G`; its latency is `at - start` of the first such finding;
//! - findings of the same family (strict: same kind) less than G apart form one episode; an
//!   episode is matched when one of its findings lies in the window `[start, end + G]` of a
//!   label of that family (strict: kind), otherwise it is a false positive;
//! - precision = matched episodes / episodes, recall = detected / labelled, F1 their harmonic
//!   mean. With nothing to find and nothing found, precision and recall are undefined (`None`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::{Family, Finding, FindingKind};

/// The grace period after a labelled anomaly's end, and the episode gap.
pub const GRACE_SECS: f64 = 600.0;

/// A trace's sidecar `NAME.labels.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub description: String,
    pub anomalies: Vec<LabelledAnomaly>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledAnomaly {
    pub kind: FindingKind,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{path}: anomalies[{index}] ({kind}): {reason}")]
    Window {
        path: PathBuf,
        index: usize,
        kind: FindingKind,
        reason: String,
    },
}

impl Labels {
    pub fn load(path: &Path) -> Result<Labels, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Labels::parse(&text, path)
    }

    /// Parses labels; an unknown kind, a missing field or a window with `end < start` is an
    /// error naming the file (and the line and column for JSON errors).
    pub fn parse(text: &str, path: &Path) -> Result<Labels, LabelsError> {
        let labels: Labels = serde_json::from_str(text).map_err(|e| LabelsError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        for (index, a) in labels.anomalies.iter().enumerate() {
            if !(a.start.is_finite() && a.end.is_finite() && a.end >= a.start) {
                return Err(LabelsError::Window {
                    path: path.to_path_buf(),
                    index,
                    kind: a.kind,
                    reason: format!(
                        "needs finite start <= end, got start {} end {}",
                        a.start, a.end
                    ),
                });
            }
        }
        Ok(labels)
    }

    /// A healthy run: every finding on it is a false positive.
    pub fn is_healthy(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Counts behind precision, recall and latency; they add up over traces.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    pub episodes: usize,
    pub matched_episodes: usize,
    pub anomalies: usize,
    pub detected: usize,
    /// Latency (`at - start`) of each detected anomaly.
    pub latencies: Vec<f64>,
}

impl Score {
    pub fn false_positives(&self) -> usize {
        self.episodes - self.matched_episodes
    }

    pub fn precision(&self) -> Option<f64> {
        (self.episodes > 0).then(|| self.matched_episodes as f64 / self.episodes as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        (self.anomalies > 0).then(|| self.detected as f64 / self.anomalies as f64)
    }

    /// F1; `None` when precision or recall is undefined. With anomalies and no findings the
    /// precision is undefined but the F1 is 0 (nothing was found).
    pub fn f1(&self) -> Option<f64> {
        match (self.precision(), self.recall()) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            (None, Some(_)) => Some(0.0),
            _ => None,
        }
    }

    pub fn add(&mut self, other: &Score) {
        self.episodes += other.episodes;
        self.matched_episodes += other.matched_episodes;
        self.anomalies += other.anomalies;
        self.detected += other.detected;
        self.latencies.extend_from_slice(&other.latencies);
    }

    /// The `q`-quantile (0..=1) of the latencies, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies, q)
    }
}

/// Nearest-rank quantile of unsorted values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// One trace's score.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TraceScore {
    /// Family-level, per family (only families that were labelled or found).
    pub by_family: BTreeMap<Family, Score>,
    /// Family-level over all families.
    pub family: Score,
    /// Same kind required.
    pub strict: Score,
    /// Strict, per kind (only kinds that were labelled or found).
    pub strict_by_kind: BTreeMap<FindingKind, Score>,
}

impl TraceScore {
    pub fn add(&mut self, other: &TraceScore) {
        for (f, s) in &other.by_family {
            self.by_family.entry(*f).or_default().add(s);
        }
        self.family.add(&other.family);
        self.strict.add(&other.strict);
        for (k, s) in &other.strict_by_kind {
            self.strict_by_kind.entry(*k).or_default().add(s);
        }
    }
}

/// Scores findings against labels (FORMATS.md §4).
pub fn score(findings: &[Finding], labels: &Labels) -> TraceScore {
    let mut out = TraceScore::default();
    let families: std::collections::BTreeSet<Family> = findings
        .iter()
        .map(|f| f.family())
        .chain(labels.anomalies.iter().map(|a| a.kind.family()))
        .collect();
    for fam in families {
        let fs: Vec<&Finding> = findings.iter().filter(|f| f.family() == fam).collect();
        let ls: Vec<&LabelledAnomaly> = labels
            .anomalies
            .iter()
            .filter(|a| a.kind.family() == fam)
            .collect();
        let s = score_group(&fs, &ls, |f, a| f.family() == a.kind.family());
        out.family.add(&s);
        out.by_family.insert(fam, s);
    }
    for kind in FindingKind::ALL {
        let fs: Vec<&Finding> = findings.iter().filter(|f| f.kind == kind).collect();
        let ls: Vec<&LabelledAnomaly> =
            labels.anomalies.iter().filter(|a| a.kind == kind).collect();
        if fs.is_empty() && ls.is_empty() {
            continue;
        }
        let s = score_group(&fs, &ls, |f, a| f.kind == a.kind);
        out.strict.add(&s);
        out.strict_by_kind.insert(kind, s);
    }
    out
}

/// Scores one group (one family, or one kind) whose findings and labels all belong together.
fn score_group(
    findings: &[&Finding],
    labels: &[&LabelledAnomaly],
    same: impl Fn(&Finding, &LabelledAnomaly) -> bool,
) -> Score {
    let in_window = |f: &Finding, a: &LabelledAnomaly| {
        same(f, a) && a.start <= f.at && f.at <= a.end + GRACE_SECS
    };
    let mut s = Score {
        anomalies: labels.len(),
        ..Score::default()
    };
    for a in labels {
        let first = findings
            .iter()
            .filter(|f| in_window(f, a))
            .map(|f| f.at)
            .min_by(f64::total_cmp);
        if let Some(at) = first {
            s.detected += 1;
            s.latencies.push(at - a.start);
        }
    }
    let mut sorted: Vec<&Finding> = findings.to_vec();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut prev_at: Option<f64> = None;
    let mut episode_matched = false;
    for f in sorted {
        let new_episode = prev_at.is_none_or(|p| f.at - p >= GRACE_SECS);
        if new_episode {
            if prev_at.is_some() {
                s.episodes += 1;
                s.matched_episodes += usize::from(episode_matched);
            }
            episode_matched = false;
        }
        episode_matched |= labels.iter().any(|a| in_window(f, a));
        prev_at = Some(f.at);
    }
    if prev_at.is_some() {
        s.episodes += 1;
        s.matched_episodes += usize::from(episode_matched);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn f(kind: FindingKind, at: f64) -> Finding {
        Finding {
            kind,
            chart: "loss".into(),
            at,
            onset: at,
            severity: Severity::Warning,
            message: String::new(),
            value: None,
            baseline: None,
        }
    }

    fn label(kind: FindingKind, start: f64, end: f64) -> LabelledAnomaly {
        LabelledAnomaly {
            kind,
            start,
            end,
            note: String::new(),
        }
    }

    fn labels(anomalies: Vec<LabelledAnomaly>) -> Labels {
        Labels {
            source: String::new(),
            description: String::new(),
            anomalies,
        }
    }

    #[test]
    fn family_and_strict_scores_on_hand_made_labels() {
        use FindingKind::*;
        let l = labels(vec![
            label(LossSpike, 1000.0, 1200.0),
            label(Stall, 5000.0, 6000.0),
            label(GpuHardwareError, 9000.0, 9000.0),
        ]);
        let findings = vec![
            // Numerics: a divergence inside the spike's window (family match, strict miss) ...
            f(LossDivergence, 1100.0),
            // ... and a second numerics finding 500 s later: same episode, inside grace.
            f(LossDivergence, 1600.0),
            // Progress: the stall found 90 s after onset, then restated 2 h later (a new,
            // unmatched episode).
            f(Stall, 5090.0),
            f(Stall, 12000.0),
            // Infra: found 30 s after onset, exactly at the grace limit would also count.
            f(GpuHardwareError, 9030.0),
            // Slowdown: nothing labelled, a false positive.
            f(ThroughputDrop, 3000.0),
        ];
        let s = score(&findings, &l);
        // Family level: episodes numerics 1 (matched), progress 2 (1 matched), infra 1
        // (matched), slowdown 1 (not) = 5 episodes, 3 matched; 3 of 3 anomalies detected.
        assert_eq!(
            (s.family.episodes, s.family.matched_episodes),
            (5, 3),
            "{s:#?}"
        );
        assert_eq!((s.family.anomalies, s.family.detected), (3, 3));
        assert_eq!(s.family.precision(), Some(0.6));
        assert_eq!(s.family.recall(), Some(1.0));
        assert!((s.family.f1().expect("f1") - 0.75).abs() < 1e-12);
        let mut lat = s.family.latencies.clone();
        lat.sort_by(f64::total_cmp);
        assert_eq!(lat, vec![30.0, 90.0, 100.0]);
        assert_eq!(s.family.latency_quantile(0.5), Some(90.0));
        assert_eq!(s.family.latency_quantile(0.9), Some(100.0));
        assert_eq!(s.by_family[&Family::Slowdown].false_positives(), 1);
        // Strict: the divergence episode no longer matches the spike; the spike is missed.
        // Episodes: loss_divergence 1 (unmatched), stall 2 (1), gpu 1 (1), throughput 1 (0).
        assert_eq!((s.strict.episodes, s.strict.matched_episodes), (5, 2));
        assert_eq!((s.strict.anomalies, s.strict.detected), (3, 2));
        assert_eq!(s.strict_by_kind[&Stall].latencies, vec![90.0]);
        assert_eq!(s.strict_by_kind[&Stall].false_positives(), 1);
        assert_eq!(
            (
                s.strict_by_kind[&LossSpike].anomalies,
                s.strict_by_kind[&LossSpike].detected
            ),
            (1, 0)
        );
        assert!(!s.strict_by_kind.contains_key(&Nonfinite));
    }

    #[test]
    fn grace_boundaries_and_early_findings() {
        use FindingKind::*;
        let l = labels(vec![label(Stall, 1000.0, 2000.0)]);
        // Before the onset: a false positive, and the anomaly is missed.
        let s = score(&[f(Stall, 999.0)], &l);
        assert_eq!((s.family.detected, s.family.matched_episodes), (0, 0));
        assert_eq!(s.family.f1(), Some(0.0));
        // Exactly at end + G: detected.
        let s = score(&[f(MetricsAbsent, 2600.0)], &l);
        assert_eq!(
            (s.family.detected, s.family.latencies.clone()),
            (1, vec![1600.0])
        );
        // Findings 599 s apart chain into one episode; 600 s apart do not.
        let s = score(&[f(Stall, 5000.0), f(Stall, 5599.0), f(Stall, 6198.0)], &l);
        assert_eq!(s.family.episodes, 1);
        let s = score(&[f(Stall, 5000.0), f(Stall, 5600.0)], &l);
        assert_eq!(s.family.episodes, 2);
        // A healthy run without findings: nothing defined but nothing wrong.
        let s = score(&[], &labels(vec![]));
        assert_eq!(
            (s.family.precision(), s.family.recall(), s.family.f1()),
            (None, None, None)
        );
    }

    #[test]
    fn labels_parse_and_reject_by_name() {
        let p = Path::new("x.labels.json");
        let l = Labels::parse(
            r#"{"source":"s","description":"d","anomalies":[{"kind":"stall","start":1,"end":2}]}"#,
            p,
        )
        .expect("parses");
        assert_eq!(l.anomalies[0].kind, FindingKind::Stall);
        assert!(!l.is_healthy());
        let e = Labels::parse(
            "{\"anomalies\":[\n{\"kind\":\"hiccup\",\"start\":1,\"end\":2}]}",
            p,
        )
        .expect_err("unknown kind")
        .to_string();
        assert!(e.starts_with("x.labels.json:2:"), "{e}");
        assert!(e.contains("hiccup"), "{e}");
        let e = Labels::parse(r#"{"anomalies":[{"kind":"stall","start":5,"end":2}]}"#, p)
            .expect_err("backwards window")
            .to_string();
        assert_eq!(
            e,
            "x.labels.json: anomalies[0] (stall): needs finite start <= end, got start 5 end 2"
        );
    }
}
