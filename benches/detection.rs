//! Detection benchmark: `cargo bench --bench detection -- [--config FILE] DIR...`
//!
//! Replays every labelled trace (`NAME.csv` + `NAME.labels.json`) of the folders through
//! babysitter's detectors and through the static baseline rules, scores both with the same
//! code (FORMATS.md §4) and prints precision, recall and F1 by family and strict, detection
//! latency (p50, p90) and false positives per day of healthy run, side by side.
//! `--late SECS` delivers every chart late by a random delay of up to SECS at each poll
//! (`replay::Lateness`), to see what remote-write lag does to the scores.

use std::path::PathBuf;
use std::process::ExitCode;

use babysitter::config::Config;
use babysitter::replay::bench::run_benchmark;
use babysitter::replay::{Lateness, ReplayOptions};

fn main() -> ExitCode {
    let mut dirs = Vec::new();
    let mut config = None;
    let mut late = None;
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
            "--late" => match args.next().map(|v| v.parse::<f64>()) {
                Some(Ok(secs)) => {
                    late = Some(Lateness {
                        max_secs: secs,
                        seed: 1,
                    })
                }
                _ => {
                    eprintln!("--late needs a number of seconds");
                    return ExitCode::from(2);
                }
            },
            // cargo passes `--bench`; other harness flags do not apply here.
            s if s.starts_with("--") => {}
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        eprintln!("usage: cargo bench --bench detection -- [--config FILE] [--late SECS] DIR...");
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
        late,
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
