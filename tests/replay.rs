//! `babysitter replay` end to end on the real traces of ../shared/traces/real (read in place,
//! never copied here; `BABYSITTER_TRACES` points elsewhere), plus causality checked the hard
//! way: every finding is raised again, at the same time, by a replay of the trace cut off at
//! that time.

use std::path::{Path, PathBuf};
use std::process::Command;

use babysitter::replay::{DetectorSet, Labels, ReplayOptions, TimeScale, Trace, replay, score};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_babysitter")
}

fn traces_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BABYSITTER_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/traces/real"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no trace folder at {} (set BABYSITTER_TRACES)",
            dir.display()
        );
        None
    }
}

fn real(name: &str) -> Option<PathBuf> {
    let p = traces_dir()?.join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is missing", p.display());
        None
    }
}

/// The trace's text up to and including the last row with `time <= at`.
fn cut(text: &str, at: f64) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let keep = i == 0
            || line
                .split(',')
                .next()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .is_some_and(|t| t <= at);
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn assert_causal(path: &Path, set: DetectorSet) -> usize {
    let text = std::fs::read_to_string(path).expect("readable trace");
    let full = Trace::parse(&text, path).expect("valid trace");
    let run = replay(&full, &ReplayOptions::default(), set).expect("replays");
    // The cut trace must be replayed on the same clock: same start, same time scale.
    let opts = ReplayOptions {
        time_scale: TimeScale::Fixed(run.scale),
        ..ReplayOptions::default()
    };
    for f in &run.findings {
        assert!(f.at >= full.start && f.onset <= f.at, "{f:?}");
        let part = Trace::parse(&cut(&text, f.at), path).expect("valid prefix");
        let again = replay(&part, &opts, set).expect("replays prefix");
        assert!(
            again.findings.iter().any(|g| g.kind == f.kind
                && g.chart == f.chart
                && g.at == f.at
                && g.message == f.message),
            "{}: {f:?} not reproduced from the samples up to {}: {:#?}",
            path.display(),
            f.at,
            again.findings
        );
    }
    run.findings.len()
}

#[test]
fn replay_json_on_a_real_trace_prints_documented_lines() {
    let Some(trace) = real("nanogpt-1p5b-scaleup-healthy.csv") else {
        return;
    };
    let out = Command::new(bin())
        .args(["replay", trace.to_str().expect("utf-8 path"), "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let parsed = Trace::load(&trace).expect("valid trace");
    let mut last_at = f64::NEG_INFINITY;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let obj = v.as_object().expect("object");
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["at", "chart", "kind", "message", "severity"],
            "{line}"
        );
        let at = obj["at"].as_f64().expect("numeric at");
        // On the poll grid (30 s from the first row) and inside the replayed span.
        let polls = (at - parsed.start) / 30.0;
        assert!((polls - polls.round()).abs() < 1e-6, "{line}");
        assert!(at >= last_at && at < parsed.end + 30.0, "{line}");
        last_at = at;
        let kind = obj["kind"].as_str().expect("kind");
        assert!(
            kind.parse::<babysitter::detect::FindingKind>().is_ok(),
            "{line}"
        );
        assert!(!obj["message"].as_str().expect("message").is_empty());
    }
}

#[test]
fn replay_with_labels_prints_the_score() {
    let Some(trace) = real("straggler-st-stage-imbalance.csv") else {
        return;
    };
    let labels = trace.with_extension("labels.json");
    let out = Command::new(bin())
        .args([
            "replay",
            trace.to_str().expect("utf-8 path"),
            "--labels",
            labels.to_str().expect("utf-8 path"),
            "--baseline",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("score JSON");
    // The baseline's max-vs-median rule sees the slow last stage in every sampled step.
    assert_eq!(v["family"]["anomalies"], 1);
    assert_eq!(v["family"]["detected"], 1);
    assert_eq!(v["strict"]["detected"], 1);
    // The library agrees with the binary.
    let l = Labels::load(&labels).expect("labels");
    let t = Trace::load(&trace).expect("trace");
    let run = replay(&t, &ReplayOptions::default(), DetectorSet::Baseline).expect("replays");
    let s = score(&run.findings, &l);
    assert_eq!(serde_json::to_value(&s).expect("json"), v);
}

#[test]
fn findings_on_real_traces_are_causal() {
    let Some(dir) = traces_dir() else { return };
    let mut checked = 0;
    for (name, set) in [
        ("nanogpt-1p5b-scaleup-healthy.csv", DetectorSet::Babysitter),
        ("straggler-st-stage-imbalance.csv", DetectorSet::Baseline),
        ("straggler-ar-worker-slowdown.csv", DetectorSet::Baseline),
    ] {
        let p = dir.join(name);
        if p.is_file() {
            checked += assert_causal(&p, set);
        }
    }
    assert!(checked > 0, "no finding was checked");
}

#[test]
fn broken_trace_fails_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.csv");
    std::fs::write(&p, "time,loss\n0,1\n30,1\n60,oops\n").expect("write");
    let out = Command::new(bin())
        .args(["replay", p.to_str().expect("utf-8 path"), "--json"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4: column 2 (`loss`): `oops` is not a number",
            p.display()
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn config_poll_interval_sets_the_replay_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("nan.csv");
    let mut text = String::from("time,loss,progress_pct\n");
    for i in 0..=30 {
        let t = i as f64 * 10.0;
        let v = if t == 130.0 {
            "NaN".to_string()
        } else {
            "2.0".into()
        };
        text.push_str(&format!("{t},{v},{i}\n"));
    }
    std::fs::write(&trace, text).expect("write");
    let cfg = dir.path().join("b.toml");
    std::fs::write(&cfg, "poll_interval = \"60s\"\n").expect("write");
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("replay")
            .arg(&trace)
            .args(args)
            .arg("--json")
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).expect("utf-8");
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one finding");
        (v["kind"].clone(), v["at"].clone())
    };
    // The NaN at 130 s is first seen by the poll at 150 s (30-s polls) or 180 s (60-s polls).
    assert_eq!(run(&[]), ("nonfinite".into(), 150.0.into()));
    assert_eq!(
        run(&["--config", cfg.to_str().expect("utf-8 path")]),
        ("nonfinite".into(), 180.0.into())
    );
}
