//! Criterion benchmark: the full detector set over one million samples.
//!
//! A generated run (src/replay/generate.rs) is replayed poll by poll (every 30 s, causal,
//! through hysteresis) until the charts the detectors have seen hold one million samples;
//! the throughput is reported as samples per second (criterion's `Elements`).

use std::path::Path;

use babysitter::replay::generate::generate_set;
use babysitter::replay::{DetectorSet, ReplayOptions, Trace, replay};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn million_samples() -> (Trace, u64) {
    // One healthy run is ~20 charts × 1,300 rows; concatenate runs end to end in time until
    // the trace holds a million samples.
    let set = generate_set(1, 40);
    let mut text = String::new();
    let mut offset = 0.0;
    let mut samples = 0u64;
    for g in set.iter().filter(|g| g.name.starts_with("healthy")) {
        let mut lines = g.csv.lines();
        let header = lines.next().unwrap_or_default();
        if text.is_empty() {
            text.push_str(header);
            text.push('\n');
        }
        let mut last = 0.0;
        for l in lines {
            let Some((t, rest)) = l.split_once(',') else {
                continue;
            };
            let Ok(t) = t.parse::<f64>() else { continue };
            samples += rest.split(',').filter(|c| !c.is_empty()).count() as u64;
            text.push_str(&format!("{},{rest}\n", t + offset));
            last = t;
            if samples >= 1_000_000 {
                break;
            }
        }
        offset += last + 10.0;
        if samples >= 1_000_000 {
            break;
        }
    }
    let trace = Trace::parse(&text, Path::new("million.csv")).expect("generated trace parses");
    (trace, samples)
}

fn bench(c: &mut Criterion) {
    let (trace, samples) = million_samples();
    let opts = ReplayOptions::default();
    let mut g = c.benchmark_group("detectors");
    g.sample_size(10);
    g.throughput(Throughput::Elements(samples));
    g.bench_function("full_set_replay_1M_samples", |b| {
        b.iter(|| replay(&trace, &opts, DetectorSet::Babysitter).expect("replays"))
    });
    g.finish();
    let start = std::time::Instant::now();
    let r = replay(&trace, &opts, DetectorSet::Babysitter).expect("replays");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "full detector set: {samples} samples, {} polls, {} findings in {secs:.2} s = {:.0} samples/s",
        r.polls,
        r.findings.len(),
        samples as f64 / secs
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
