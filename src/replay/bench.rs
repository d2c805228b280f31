//! The detection benchmark: every labelled trace of some folders replayed through babysitter's
//! detectors and through the baseline rules, scored by the same code, printed side by side.
//!
//! A trace is `NAME.csv` with a sidecar `NAME.labels.json`; a CSV without labels cannot be
//! scored and is listed as skipped. Scores add up over traces (counts, not averages of ratios);
//! false positives per day are the false-positive episodes on healthy traces over their total
//! length.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::detect::{Family, FindingKind};

use super::run::{DetectorSet, ReplayError, ReplayOptions, replay};
use super::score::{Labels, LabelsError, Score, TraceScore, score};
use super::trace::{Trace, TraceError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error("{path}: {source}")]
    Replay {
        path: PathBuf,
        #[source]
        source: ReplayError,
    },
}

/// One detector set's result on one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SetResult {
    pub findings: usize,
    pub score: TraceScore,
}

/// One trace's results.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceResult {
    pub path: PathBuf,
    pub duration: f64,
    pub anomalies: usize,
    pub scale: f64,
    pub babysitter: SetResult,
    pub baseline: SetResult,
}

impl TraceResult {
    pub fn healthy(&self) -> bool {
        self.anomalies == 0
    }

    fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// The benchmark over a set of folders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The configured poll interval (before any time scaling), seconds.
    pub poll_interval: f64,
    pub traces: Vec<TraceResult>,
    /// CSV files without a labels sidecar.
    pub skipped: Vec<PathBuf>,
}

/// Replays and scores one labelled trace with both detector sets.
pub fn bench_trace(
    csv: &Path,
    labels: &Path,
    opts: &ReplayOptions,
) -> Result<TraceResult, BenchError> {
    let trace = Trace::load(csv)?;
    let labels = Labels::load(labels)?;
    let run = |set| {
        replay(&trace, opts, set).map_err(|source| BenchError::Replay {
            path: csv.to_path_buf(),
            source,
        })
    };
    let b = run(DetectorSet::Babysitter)?;
    let base = run(DetectorSet::Baseline)?;
    Ok(TraceResult {
        path: csv.to_path_buf(),
        duration: trace.duration().max(0.0),
        anomalies: labels.anomalies.len(),
        scale: b.scale,
        babysitter: SetResult {
            findings: b.findings.len(),
            score: score(&b.findings, &labels),
        },
        baseline: SetResult {
            findings: base.findings.len(),
            score: score(&base.findings, &labels),
        },
    })
}

/// Runs the benchmark over every `*.csv` of the folders (not recursive), in name order.
pub fn run_benchmark(dirs: &[PathBuf], opts: &ReplayOptions) -> Result<Report, BenchError> {
    let mut report = Report {
        poll_interval: opts.poll_interval,
        ..Report::default()
    };
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| BenchError::Dir {
            path: dir.clone(),
            source,
        })?;
        let mut csvs = Vec::new();
        for e in entries {
            let e = e.map_err(|source| BenchError::Dir {
                path: dir.clone(),
                source,
            })?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "csv") {
                csvs.push(p);
            }
        }
        csvs.sort();
        for csv in csvs {
            let labels = csv.with_extension("labels.json");
            if labels.is_file() {
                report.traces.push(bench_trace(&csv, &labels, opts)?);
            } else {
                report.skipped.push(csv);
            }
        }
    }
    Ok(report)
}

/// A detector set's totals over the whole report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub score: TraceScore,
    pub healthy_secs: f64,
    pub healthy_false_positives: usize,
}

impl Totals {
    /// False-positive episodes per day of healthy run (`None` without healthy traces).
    pub fn false_positives_per_day(&self) -> Option<f64> {
        (self.healthy_secs > 0.0)
            .then(|| self.healthy_false_positives as f64 / (self.healthy_secs / 86400.0))
    }
}

impl Report {
    pub fn totals(&self, set: DetectorSet) -> Totals {
        let mut t = Totals::default();
        for r in &self.traces {
            let s = match set {
                DetectorSet::Babysitter => &r.babysitter,
                DetectorSet::Baseline => &r.baseline,
            };
            t.score.add(&s.score);
            if r.healthy() {
                t.healthy_secs += r.duration;
                t.healthy_false_positives += s.score.family.false_positives();
            }
        }
        t
    }
}

fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// Seconds as a short human duration.
pub fn fmt_secs(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.abs() < 120.0 => format!("{s:.0} s"),
        Some(s) if s.abs() < 7200.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s.abs() < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86400.0),
    }
}

fn score_cells(s: &Score) -> String {
    format!(
        "{:>5} {:>5} {:>5} {:>7} {:>7} {:>3}/{:<3} {:>3}",
        ratio(s.precision()),
        ratio(s.recall()),
        ratio(s.f1()),
        fmt_secs(s.latency_quantile(0.5)),
        fmt_secs(s.latency_quantile(0.9)),
        s.detected,
        s.anomalies,
        s.false_positives(),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ours = self.totals(DetectorSet::Babysitter);
        let base = self.totals(DetectorSet::Baseline);
        let healthy = self.traces.iter().filter(|r| r.healthy()).count();
        writeln!(
            f,
            "{} traces ({} with anomalies, {} healthy over {}), {} labelled anomalies; grace {} s; poll every {} (stretched on sparser traces, see scale below)",
            self.traces.len(),
            self.traces.len() - healthy,
            healthy,
            fmt_secs(Some(ours.healthy_secs)),
            ours.score.family.anomalies,
            super::GRACE_SECS,
            fmt_secs(Some(self.poll_interval))
        )?;
        writeln!(f)?;
        let head = format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>3}",
            "P", "R", "F1", "lat p50", "lat p90", "det/lab", "FP"
        );
        writeln!(
            f,
            "{:<16} | {:<46} | {:<46}",
            "", "babysitter", "baseline (static rules)"
        )?;
        writeln!(f, "{:<16} | {head} | {head}", "scope")?;
        writeln!(f, "{:-<16}-+-{:-<46}-+-{:-<46}", "", "", "")?;
        let families: Vec<Family> = {
            let mut v: Vec<Family> = ours
                .score
                .by_family
                .keys()
                .chain(base.score.by_family.keys())
                .copied()
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let empty = Score::default();
        for fam in families {
            writeln!(
                f,
                "{:<16} | {} | {}",
                fam.as_str(),
                score_cells(ours.score.by_family.get(&fam).unwrap_or(&empty)),
                score_cells(base.score.by_family.get(&fam).unwrap_or(&empty)),
            )?;
        }
        writeln!(f, "{:-<16}-+-{:-<46}-+-{:-<46}", "", "", "")?;
        writeln!(
            f,
            "{:<16} | {} | {}",
            "all (family)",
            score_cells(&ours.score.family),
            score_cells(&base.score.family)
        )?;
        writeln!(
            f,
            "{:<16} | {} | {}",
            "all (strict)",
            score_cells(&ours.score.strict),
            score_cells(&base.score.strict)
        )?;
        let per_day = |t: &Totals| {
            t.false_positives_per_day()
                .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
        };
        writeln!(
            f,
            "{:<16} | {:<46} | {:<46}",
            "FP/day healthy",
            format!(
                "{} ({} episodes)",
                per_day(&ours),
                ours.healthy_false_positives
            ),
            format!(
                "{} ({} episodes)",
                per_day(&base),
                base.healthy_false_positives
            ),
        )?;
        writeln!(f)?;
        writeln!(f, "by kind (strict):")?;
        let kinds: std::collections::BTreeSet<FindingKind> = ours
            .score
            .strict_by_kind
            .keys()
            .chain(base.score.strict_by_kind.keys())
            .copied()
            .collect();
        for k in kinds {
            writeln!(
                f,
                "{:<16} | {} | {}",
                k.as_str(),
                score_cells(ours.score.strict_by_kind.get(&k).unwrap_or(&empty)),
                score_cells(base.score.strict_by_kind.get(&k).unwrap_or(&empty)),
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "per trace (family level: detected/labelled, false-positive episodes):"
        )?;
        for r in &self.traces {
            let cell = |s: &SetResult| {
                format!(
                    "{}/{} FP {} ({} findings)",
                    s.score.family.detected,
                    s.score.family.anomalies,
                    s.score.family.false_positives(),
                    s.findings
                )
            };
            writeln!(
                f,
                "  {:<42} {:>8} scale {:<7} babysitter {:<28} baseline {}",
                r.name(),
                fmt_secs(Some(r.duration)),
                format!("{:.4}", r.scale)
                    .trim_end_matches('0')
                    .trim_end_matches('.'),
                cell(&r.babysitter),
                cell(&r.baseline)
            )?;
        }
        for p in &self.skipped {
            writeln!(f, "  skipped (no labels): {}", p.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_over_a_folder_scores_both_sets_and_counts_healthy_days() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A hang: steps stop at 1000 s, rows continue to 3000 s.
        let mut hang = String::from("time,step\n");
        for i in 0..=300 {
            let t = i as f64 * 10.0;
            hang.push_str(&format!("{t},{}\n", (t.min(1000.0) / 10.0) as u64));
        }
        std::fs::write(dir.path().join("hang.csv"), hang).expect("write");
        std::fs::write(
            dir.path().join("hang.labels.json"),
            r#"{"anomalies":[{"kind":"stall","start":1000,"end":3000}]}"#,
        )
        .expect("write");
        // A healthy day with a steady step counter.
        let mut ok = String::from("time,step\n");
        for i in 0..=2880 {
            ok.push_str(&format!("{},{i}\n", i as f64 * 30.0));
        }
        std::fs::write(dir.path().join("ok.csv"), ok).expect("write");
        std::fs::write(dir.path().join("ok.labels.json"), r#"{"anomalies":[]}"#).expect("write");
        std::fs::write(dir.path().join("nolabels.csv"), "time,loss\n0,1\n").expect("write");

        let report =
            run_benchmark(&[dir.path().to_path_buf()], &ReplayOptions::default()).expect("runs");
        assert_eq!(report.traces.len(), 2);
        assert_eq!(report.skipped.len(), 1);
        let ours = report.totals(DetectorSet::Babysitter);
        assert_eq!(
            (ours.score.family.detected, ours.score.family.anomalies),
            (1, 1)
        );
        // Last advance at 1000, 300 s threshold: the first poll at or after 1300 is 1320.
        assert_eq!(ours.score.family.latencies, vec![320.0]);
        assert_eq!(ours.healthy_secs, 86400.0);
        assert_eq!(ours.false_positives_per_day(), Some(0.0));
        let base = report.totals(DetectorSet::Baseline);
        // increase(step[10m]) == 0 first holds once the window starts at 1000: the poll at
        // 1620 (polls are 30 s apart from 0).
        assert_eq!(base.score.family.latencies, vec![620.0]);
        let table = report.to_string();
        assert!(table.contains("progress"), "{table}");
        assert!(table.contains("FP/day healthy"), "{table}");
        assert!(table.contains("skipped (no labels)"), "{table}");
    }

    /// The committed generated set (testdata/generated) is a regression guard: every injected
    /// fault is found at family level, nothing fires on the healthy runs, and babysitter stays
    /// above the baseline.
    #[test]
    fn generated_set_is_fully_detected_without_false_alarms() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/generated");
        let report = run_benchmark(&[dir], &ReplayOptions::default()).expect("benchmark runs");
        assert_eq!(report.traces.len(), 4 + FindingKind::ALL.len());
        let b = report.totals(DetectorSet::Babysitter);
        assert_eq!(b.score.family.detected, FindingKind::ALL.len());
        assert_eq!(b.score.family.false_positives(), 0);
        assert_eq!(b.healthy_false_positives, 0);
        let base = report.totals(DetectorSet::Baseline);
        assert!(b.score.family.f1() > base.score.family.f1());
    }

    /// The real traces are read where they live (they are not copied into the repository);
    /// when they are there, the healthy ones must stay silent and every straggler be found.
    #[test]
    fn real_traces_healthy_runs_stay_silent_when_present() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/real");
        if !dir.is_dir() {
            return;
        }
        let report = run_benchmark(&[dir], &ReplayOptions::default()).expect("benchmark runs");
        let b = report.totals(DetectorSet::Babysitter);
        assert_eq!(b.healthy_false_positives, 0);
        let stragglers = b.score.strict_by_kind.get(&FindingKind::Straggler);
        assert!(stragglers.is_some_and(|s| s.detected == s.anomalies && s.anomalies > 0));
    }
}
