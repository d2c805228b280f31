//! Detection benchmark: `cargo bench --bench detection -- [--config FILE] DIR...`
//!
//! Replays every labelled trace (`NAME.csv` + `NAME.labels.json`) of the folders through
//! babysitter's detectors and through the static baseline rules, scores both with the same
//! code (FORMATS.md §4) and prints precision, recall and F1 by family and strict, detection
//! latency (p50, p90) and false positives per day of healthy run, side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use babysitter::config::Config;
use babysitter::replay::ReplayOptions;
use babysitter::replay::bench::run_benchmark;

fn main() -> ExitCode {
    let mut dirs = Vec::new();
    let mut config = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => match args.next() {
                Some(c) => config = Some(PathBuf::from(c)),
                None => {
                    eprintln!("--config needs a file");
                    return ExitCode::from(2);
                }
            },
            // cargo passes `--bench`; other harness flags do not apply here.
            s if s.starts_with("--") => {}
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        eprintln!("usage: cargo bench --bench detection -- [--config FILE] DIR...");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = ReplayOptions {
        poll_interval: cfg.poll_interval.as_secs_f64(),
        params: cfg.detectors,
        ..ReplayOptions::default()
    };
    match run_benchmark(&dirs, &opts) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
