//! Writes the generated trace set: `cargo bench --profile dev --bench generate -- --seed N --out DIR [--healthy K]`.
//!
//! Healthy runs and one run per finding kind with the fault injected (src/replay/generate.rs),
//! as `NAME.csv` + `NAME.labels.json`. The committed set in `testdata/generated/` is seed 1 with
//! 4 healthy runs.

use std::path::PathBuf;
use std::process::ExitCode;

use babysitter::replay::generate::{generate_set, write_set};

fn main() -> ExitCode {
    let mut seed = 1u64;
    let mut out = None;
    let mut healthy = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value")),
        };
        let r = match a.as_str() {
            "--seed" => value("--seed").and_then(|v| {
                v.parse()
                    .map(|s| seed = s)
                    .map_err(|e| format!("--seed: {e}"))
            }),
            "--healthy" => value("--healthy").and_then(|v| {
                v.parse()
                    .map(|h| healthy = h)
                    .map_err(|e| format!("--healthy: {e}"))
            }),
            "--out" => value("--out").map(|v| out = Some(PathBuf::from(v))),
            // cargo passes `--bench`.
            _ => Ok(()),
        };
        if let Err(e) = r {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("usage: cargo bench --bench generate -- --seed N --out DIR [--healthy K]");
        return ExitCode::SUCCESS;
    };
    let set = generate_set(seed, healthy);
    match write_set(&out, &set) {
        Ok(()) => {
            println!("wrote {} traces to {}", set.len(), out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
