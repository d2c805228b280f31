//! The detection goals of docs/PERFORMANCE.md held as floors, so a detector change that loses
//! them fails here, not in a table nobody reruns: the benchmark (the code behind
//! `cargo bench --bench detection`) over the committed generated set, over sets generated
//! afresh from other seeds (the detectors are not tuned to one seed's output), and over the real
//! traces of ../shared/traces/real when they are present (read in place, never copied).

use std::path::{Path, PathBuf};

use babysitter::detect::FindingKind;
use babysitter::replay::bench::{Report, run_benchmark};
use babysitter::replay::generate::{generate_set, write_set};
use babysitter::replay::{DetectorSet, Lateness, ReplayOptions};

/// Two polls of the default 30 s interval: the latency goal for the urgent kinds.
const TWO_POLLS: f64 = 60.0;

fn bench(dir: &Path) -> Report {
    run_benchmark(&[dir.to_path_buf()], &ReplayOptions::default()).expect("benchmark runs")
}

fn median_latency(r: &Report, kind: FindingKind) -> f64 {
    let t = r.totals(DetectorSet::Babysitter);
    let s = t
        .score
        .strict_by_kind
        .get(&kind)
        .unwrap_or_else(|| panic!("no {kind:?} label in the set"));
    assert_eq!(s.detected, s.anomalies, "{kind:?}: every label found");
    s.latency_quantile(0.5).expect("latencies")
}

/// The goals of issue 4 on a generated set: family F1 ≥ 0.9 and far above the baseline, no
/// false positive on healthy runs, the urgent kinds within two polls (median).
fn assert_generated_goals(r: &Report, what: &str) {
    let ours = r.totals(DetectorSet::Babysitter);
    let base = r.totals(DetectorSet::Baseline);
    let f1 = ours.score.family.f1().expect("f1");
    let base_f1 = base.score.family.f1().expect("baseline f1");
    assert!(f1 >= 0.9, "{what}: family F1 {f1:.2}\n{r}");
    assert!(
        f1 >= base_f1 + 0.3,
        "{what}: F1 {f1:.2} vs baseline {base_f1:.2}"
    );
    assert!(ours.healthy_secs > 3.0 * 3600.0, "{what}: healthy runs");
    assert_eq!(
        ours.healthy_false_positives, 0,
        "{what}: false positives on healthy runs\n{r}"
    );
    for kind in [
        FindingKind::Nonfinite,
        FindingKind::Stall,
        FindingKind::GpuHardwareError,
    ] {
        let lat = median_latency(r, kind);
        assert!(
            lat <= TWO_POLLS,
            "{what}: {kind:?} median latency {lat} s\n{r}"
        );
    }
}

#[test]
fn committed_generated_set_meets_the_goals() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/generated");
    let r = bench(&dir);
    assert_eq!(r.traces.len(), 21, "{}", dir.display());
    assert!(r.skipped.is_empty());
    assert_generated_goals(&r, "testdata/generated");
    // Every kind of FORMATS.md §2 is labelled once and found.
    let ours = r.totals(DetectorSet::Babysitter);
    assert_eq!(ours.score.strict.anomalies, 17);
    assert_eq!(ours.score.strict.detected, 17);
}

#[test]
fn charts_that_arrive_late_raise_no_false_alarm_and_miss_nothing() {
    // Every chart behind by up to 90 s (three polls), independently, as remote-write batching
    // makes it: windows that end at `now` would hold one or two samples of a late chart.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/generated");
    let opts = ReplayOptions {
        late: Some(Lateness {
            max_secs: 90.0,
            seed: 7,
        }),
        ..ReplayOptions::default()
    };
    let r = run_benchmark(&[dir], &opts).expect("benchmark runs");
    // Late data costs at most its own delay on the urgent kinds.
    assert_all_found_without_false_alarm(&r, TWO_POLLS + 90.0);
}

#[test]
fn sets_generated_from_other_seeds_meet_the_goals() {
    // Four more seeds, scored as one set: each has one label per kind, so a median latency
    // over four seeds says more than any one of them. Seed 9 once found two false alarms the
    // others did not (a cluster of fp16 back-offs; one high batch right after an eval pause).
    let seeds = [2u64, 3, 4, 9];
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = seeds
        .iter()
        .map(|seed| {
            let dir = tmp.path().join(format!("seed-{seed}"));
            std::fs::create_dir(&dir).expect("mkdir");
            write_set(&dir, &generate_set(*seed, 4)).expect("write set");
            dir
        })
        .collect();
    let r = run_benchmark(&dirs, &ReplayOptions::default()).expect("benchmark runs");
    assert_eq!(r.traces.len(), 21 * seeds.len());
    assert_generated_goals(&r, "seeds 2, 3, 4, 9");
}

#[test]
fn real_traces_keep_their_scores() {
    let dir = std::env::var_os("BABYSITTER_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/traces/real"));
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: no trace folder at {} (set BABYSITTER_TRACES)",
            dir.display()
        );
        return;
    }
    let r = bench(&dir);
    let ours = r.totals(DetectorSet::Babysitter);
    let base = r.totals(DetectorSet::Baseline);
    // No false alarm anywhere, healthy or not (family level).
    assert_eq!(ours.healthy_false_positives, 0, "{r}");
    assert_eq!(ours.score.family.false_positives(), 0, "{r}");
    // The floor of what is found today (docs/PERFORMANCE.md says why the rest is not).
    let f1 = ours.score.family.f1().expect("f1");
    let base_f1 = base.score.family.f1().expect("baseline f1");
    assert!(f1 >= 0.74, "family F1 {f1:.2}\n{r}");
    assert!(f1 >= base_f1 + 0.3, "F1 {f1:.2} vs baseline {base_f1:.2}");
    // All three stragglers, found from peers' compute time.
    let s = &ours.score.strict_by_kind[&FindingKind::Straggler];
    assert_eq!((s.detected, s.anomalies), (3, 3), "{r}");
}

#[test]
fn a_divergence_held_for_hours_is_reported_once() {
    // The committed divergence run: the loss climbs 35 % and stays up to the end (3.3 h later).
    // Once the rise fills most of the newest look-back, only older look-backs see it; the
    // condition must hold through that, not clear and start again (it did, three times).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/generated");
    let trace =
        babysitter::replay::Trace::load(&dir.join("loss_divergence-02.csv")).expect("trace");
    let run =
        babysitter::replay::replay(&trace, &ReplayOptions::default(), DetectorSet::Babysitter)
            .expect("replays");
    let divergences: Vec<_> = run
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::LossDivergence)
        .collect();
    assert_eq!(divergences.len(), 1, "{divergences:#?}");
}

/// The committed set as a coarser scrape would see it: every `k`-th row of the dense charts
/// (event charts such as `eval_loss`, sampled on fewer than a tenth of the rows, keep every
/// sample, as they would in Prometheus).
fn scraped_every(k: usize, out: &Path) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/generated");
    for entry in std::fs::read_dir(&dir).expect("read testdata/generated") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, out.join(name)).expect("copy labels");
            continue;
        }
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read trace");
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let cols = header.split(',').count();
        let sparse: Vec<bool> = (0..cols)
            .map(|c| rows.iter().filter(|r| !r[c].is_empty()).count() * 10 < rows.len())
            .collect();
        let mut csv = format!("{header}\n");
        for (i, r) in rows.iter().enumerate() {
            let kept: Vec<&str> = (0..cols)
                .map(|c| {
                    if c == 0 || i % k == 0 || sparse[c] {
                        r[c]
                    } else {
                        ""
                    }
                })
                .collect();
            if kept[1..].iter().any(|c| !c.is_empty()) {
                csv.push_str(&kept.join(","));
                csv.push('\n');
            }
        }
        std::fs::write(out.join(name), csv).expect("write trace");
    }
}

#[test]
fn a_30_second_scrape_meets_the_goals_too() {
    // Prometheus commonly scrapes every 30 s: a third of the committed set's samples. The
    // detectors' sample counts and gap rules must not assume the 10-s cadence: before they
    // did, `stall` took 2 min here and `throughput_drop` raised a false alarm on a hang.
    // The committed set's 10-s cadence holds the stricter two-poll goal.
    let tmp = tempfile::tempdir().expect("tempdir");
    scraped_every(3, tmp.path());
    let r = bench(tmp.path());
    assert_eq!(r.traces.len(), 21);
    // A hang or an error that starts between two samples is visible only from the next one:
    // two polls plus one scrape interval.
    assert_all_found_without_false_alarm(&r, 2.0 * 30.0 + 30.0);
}

/// Every label of the committed set found, no false alarm anywhere, and the urgent kinds'
/// median latency within `latency`.
fn assert_all_found_without_false_alarm(r: &Report, latency: f64) {
    let ours = r.totals(DetectorSet::Babysitter);
    assert_eq!(ours.healthy_false_positives, 0, "{r}");
    assert_eq!(ours.score.family.false_positives(), 0, "{r}");
    assert_eq!(ours.score.family.detected, 17, "{r}");
    for kind in [
        FindingKind::Nonfinite,
        FindingKind::Stall,
        FindingKind::GpuHardwareError,
    ] {
        let lat = median_latency(r, kind);
        assert!(lat <= latency, "{kind:?} median latency {lat} s\n{r}");
    }
}

#[test]
fn a_60_second_scrape_polled_every_minute_finds_every_kind() {
    // Scraped and polled every 60 s: five samples in a 5-min window. `lr_anomaly` used to
    // need ten there and never judged such a chart.
    let tmp = tempfile::tempdir().expect("tempdir");
    scraped_every(6, tmp.path());
    let opts = ReplayOptions {
        poll_interval: 60.0,
        ..ReplayOptions::default()
    };
    let r = run_benchmark(&[tmp.path().to_path_buf()], &opts).expect("benchmark runs");
    assert_all_found_without_false_alarm(&r, 2.0 * 60.0 + 60.0);
}
