//! A seeded generator of labelled traces: realistic healthy training runs, and the same runs
//! with one fault of every kind of FORMATS.md §2 injected (FORMATS.md §1 CSV + labels.json).
//!
//! A healthy run logs every 10 s: a loss that falls from warm-up with heavy-tailed (Student-t)
//! noise, a linear-warm-up + cosine learning rate, a gradient norm with heavy tails and rare
//! one-sample blips, an fp16 loss scale that backs off now and then, evaluation pauses (no steps
//! for 60 s, an `eval_loss` sample at the end) every 30 min, checkpoint saves every 40 min,
//! per-rank compute times, GPU utilisation, data wait and hardware counters; some runs restart
//! once (a 2-min hole in every chart, the step counter rolled back to the last checkpoint).
//! Faults change the series from a random onset; the label's window is where the fault is
//! visible. Same seed, same files, on every platform (splitmix64, no system randomness).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::detect::FindingKind;

use super::score::{LabelledAnomaly, Labels};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// splitmix64: small, deterministic, identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Student-t with 4 degrees of freedom: heavy tails like per-batch loss noise.
    pub fn t4(&mut self) -> f64 {
        let chi2: f64 = (0..4).map(|_| self.normal().powi(2)).sum();
        self.normal() / (chi2 / 4.0).sqrt()
    }
}

/// Seconds between rows.
const CADENCE: f64 = 10.0;
/// Ranks with a `compute_time` chart.
const RANKS: usize = 4;

/// The chart columns, in file order.
const COLUMNS: [&str; 14] = [
    "step",
    "loss",
    "eval_loss",
    "grad_norm",
    "lr",
    "loss_scale",
    "skipped_steps",
    "throughput",
    "step_time",
    "gpu_util",
    "data_wait",
    "xid_errors",
    "restarts",
    "checkpoint_age",
];

/// One generated trace: its CSV text and its labels.
#[derive(Debug, Clone)]
pub struct Generated {
    pub name: String,
    pub csv: String,
    pub labels: Labels,
}

/// What a run looks like: the knobs drawn from the seed.
#[derive(Debug, Clone)]
struct Shape {
    hours: f64,
    loss_floor: f64,
    loss_noise: f64,
    peak_lr: f64,
    grad_level: f64,
    step_time: f64,
    /// A restart (2-min hole, step rollback) at this time, if any.
    restart_at: Option<f64>,
}

/// A fault injected into a run: its kind and onset.
#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: FindingKind,
    onset: f64,
}

/// The values of one row (`None`: no sample).
type Row = [Option<f64>; COLUMNS.len() + RANKS];

/// Generates the set: `healthy` healthy runs and one faulty run per finding kind, all from
/// `seed`. Names are `healthy-NN` and `KIND-NN`.
pub fn generate_set(seed: u64, healthy: usize) -> Vec<Generated> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for i in 0..healthy {
        let s = rng.next_u64();
        out.push(run(&format!("healthy-{i:02}"), s, None));
    }
    for (i, kind) in FindingKind::ALL.into_iter().enumerate() {
        let s = rng.next_u64();
        out.push(run(&format!("{}-{i:02}", kind.as_str()), s, Some(kind)));
    }
    out
}

/// Writes a set to `dir` (created if needed): `NAME.csv` and `NAME.labels.json` per trace.
pub fn write_set(dir: &Path, set: &[Generated]) -> Result<(), GenerateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for g in set {
        let csv = dir.join(format!("{}.csv", g.name));
        std::fs::write(&csv, &g.csv).map_err(io(&csv))?;
        let lp = dir.join(format!("{}.labels.json", g.name));
        let json =
            serde_json::to_string_pretty(&g.labels).map_err(|source| GenerateError::Json {
                path: lp.clone(),
                source,
            })?;
        std::fs::write(&lp, json + "\n").map_err(io(&lp))?;
    }
    Ok(())
}

fn run(name: &str, seed: u64, kind: Option<FindingKind>) -> Generated {
    let mut rng = Rng::new(seed);
    let long = matches!(
        kind,
        Some(FindingKind::LossPlateau | FindingKind::CheckpointStale)
    );
    let shape = Shape {
        hours: if long { 7.0 } else { rng.range(3.0, 4.0) },
        loss_floor: rng.range(1.8, 3.0),
        loss_noise: rng.range(0.01, 0.025),
        peak_lr: rng.range(1e-4, 6e-4),
        grad_level: rng.range(0.2, 1.5),
        step_time: rng.range(0.2, 2.0),
        restart_at: (kind.is_none() && rng.uniform() < 0.5).then(|| rng.range(5400.0, 9000.0)),
    };
    let fault = kind.map(|kind| Fault {
        kind,
        onset: (rng.range(5400.0, 8000.0) / CADENCE).round() * CADENCE,
    });
    let (rows, label) = simulate(&shape, fault, &mut rng);
    let mut csv = String::from("time");
    for c in COLUMNS {
        csv.push(',');
        csv.push_str(c);
    }
    for r in 0..RANKS {
        let _ = write!(csv, ",compute_time{{rank={r}}}");
    }
    csv.push('\n');
    for (t, row) in rows {
        let _ = write!(csv, "{t}");
        for v in row {
            csv.push(',');
            if let Some(v) = v {
                if v.is_nan() {
                    csv.push_str("NaN");
                } else if v.is_infinite() {
                    csv.push_str(if v > 0.0 { "Inf" } else { "-Inf" });
                } else {
                    let _ = write!(csv, "{}", round_sig(v));
                }
            }
        }
        csv.push('\n');
    }
    let description = match kind {
        None => format!(
            "Generated healthy run ({:.1} h, a row every {CADENCE} s): warm-up, cosine LR, heavy-tailed noise, eval pauses every 30 min, checkpoint saves every 40 min{}.",
            shape.hours,
            if shape.restart_at.is_some() {
                ", one restart with a step rollback"
            } else {
                ""
            }
        ),
        Some(k) => format!(
            "Generated run ({:.1} h) with one injected `{k}` fault on top of a healthy series.",
            shape.hours
        ),
    };
    Generated {
        name: name.to_string(),
        csv,
        labels: Labels {
            source: format!("babysitter replay generator (src/replay/generate.rs), seed {seed}"),
            description,
            anomalies: label.into_iter().collect(),
        },
    }
}

/// Six significant digits: small files, no visible quantisation.
fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powi(5 - v.abs().log10().floor() as i32);
    if !mag.is_finite() || mag == 0.0 {
        return v;
    }
    (v * mag).round() / mag
}

fn simulate(
    shape: &Shape,
    fault: Option<Fault>,
    rng: &mut Rng,
) -> (Vec<(f64, Row)>, Option<LabelledAnomaly>) {
    use FindingKind as K;
    let end = shape.hours * 3600.0;
    let kind = fault.map(|f| f.kind);
    let onset = fault.map_or(f64::INFINITY, |f| f.onset);
    let after = |t: f64| t >= onset;
    // Holes in every chart: (from, to).
    let mut holes: Vec<(f64, f64)> = Vec::new();
    let mut restarts_at: Vec<f64> = Vec::new();
    if let Some(r) = shape.restart_at {
        restarts_at.push(r);
    }
    let mut label_end = end;
    let mut label_start = onset;
    match kind {
        Some(K::CrashLoop) => restarts_at.extend((0..4).map(|i| onset + i as f64 * 420.0)),
        Some(K::MetricsAbsent) => {
            holes.push((onset, onset + 1500.0));
            label_end = onset + 1500.0;
        }
        Some(K::Nonfinite) => label_end = onset + 60.0,
        Some(K::LossSpike) => label_end = onset + 120.0,
        Some(K::GpuHardwareError) => label_end = onset + 60.0,
        _ => {}
    }
    for &r in &restarts_at {
        holes.push((r, r + 120.0));
    }
    let mut rows = Vec::new();
    let mut step = 0.0f64;
    let mut ckpt_step = 0.0;
    let mut last_save = 0.0;
    let mut skipped = 0.0;
    let mut restarts = 0.0;
    let mut xid = 0.0;
    let mut scale: f64 = 65536.0;
    let mut since_backoff = 0.0;
    let mut eval_offset = 0.0;
    let mut stale_label = None;
    let mut t = 0.0;
    while t <= end {
        let in_hole = holes.iter().any(|&(a, b)| t >= a && t < b);
        // A restart: the counter and the step roll back when the hole ends.
        for &r in &restarts_at {
            if (t - (r + 120.0)).abs() < CADENCE / 2.0 {
                restarts += 1.0;
                step = ckpt_step;
            }
        }
        if in_hole {
            t += CADENCE;
            continue;
        }
        let eval_pause = t > 600.0 && t % 1800.0 < 60.0;
        let saves_stopped = kind == Some(K::CheckpointStale) && after(t);
        let saving = !saves_stopped && t > 600.0 && t % 2400.0 < 30.0;
        let stalled = kind == Some(K::Stall) && after(t);
        let slow = match kind {
            Some(K::ThroughputDrop) if after(t) => 0.45,
            Some(K::DataloaderStall) if after(t) => 0.4,
            _ => 1.0,
        };
        let mut row: Row = [None; COLUMNS.len() + RANKS];
        let progressing = !eval_pause && !saving && !stalled;
        let steps_per_row = (CADENCE / shape.step_time).round().max(1.0);
        if progressing {
            step += (steps_per_row * slow).round().max(1.0);
        }
        if saving && t % 2400.0 < CADENCE {
            ckpt_step = step;
            last_save = t;
        }
        // Loss: warm-up fall, floor, heavy-tailed noise; progress is in steps, so a rollback
        // brings back a slightly higher loss.
        let progress_t = step * shape.step_time;
        let mut level = shape.loss_floor
            + 2.5 * (-progress_t / 1500.0).exp()
            + 0.3 * (-progress_t / 9000.0).exp();
        if kind == Some(K::LossPlateau) && after(t) {
            let p0 = onset;
            level = shape.loss_floor + 2.5 * (-p0 / 1500.0).exp() + 0.3 * (-p0 / 9000.0).exp();
        }
        match kind {
            Some(K::LossSpike) if after(t) && t < onset + 120.0 => level *= 2.2,
            Some(K::LossDivergence) if after(t) => {
                level *= 1.0 + ((t - onset) / 1200.0).min(1.0) * 0.35
            }
            Some(K::GradExplosion) if after(t) && t < onset + 600.0 => level *= 1.03,
            _ => {}
        }
        let mut loss = level * (1.0 + shape.loss_noise * rng.t4());
        if kind == Some(K::Nonfinite) && after(t) && t < onset + 60.0 {
            loss = f64::NAN;
        }
        if progressing {
            row[1] = Some(loss);
        }
        // Evaluation at the end of each pause.
        if t > 600.0 && t % 1800.0 >= 50.0 && t % 1800.0 < 60.0 {
            if kind == Some(K::EvalRegression) && after(t) {
                eval_offset = 0.15 * level;
            }
            row[2] = Some(level + 0.04 + eval_offset + 0.004 * rng.normal());
        }
        // Gradient norm: heavy tails and rare single-sample blips (healthy).
        let warm = 1.0 + 2.0 * (-progress_t / 600.0).exp();
        let mut g = shape.grad_level * warm * (1.0 + 0.2 * rng.t4().abs());
        if rng.uniform() < 0.002 {
            g *= rng.range(4.0, 8.0);
        }
        if kind == Some(K::GradExplosion) && after(t) && t < onset + 600.0 {
            g *= 12.0 * (1.0 + (t - onset) / 120.0);
        }
        if kind == Some(K::Nonfinite) && after(t) && t < onset + 60.0 {
            g = f64::INFINITY;
        }
        if progressing {
            row[3] = Some(g);
        }
        // Learning rate: linear warm-up over 10 min of progress, cosine to 10 % of its peak.
        let total = end;
        let mut lr = if progress_t < 600.0 {
            shape.peak_lr * (progress_t / 600.0).max(0.002)
        } else {
            let x = ((progress_t - 600.0) / (total - 600.0)).clamp(0.0, 1.0);
            shape.peak_lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()))
        };
        if kind == Some(K::LrAnomaly) && after(t) {
            lr = shape.peak_lr * 10.0;
        }
        row[4] = Some(lr);
        // fp16 loss scale: backs off about every 45 min, grows back after 10 min.
        since_backoff += CADENCE;
        if kind == Some(K::LossScaleCollapse) && after(t) {
            scale = (scale / 2.0).max(1.0);
            skipped += steps_per_row;
        } else if rng.uniform() < CADENCE / 2700.0 {
            scale /= 2.0;
            skipped += 1.0;
            since_backoff = 0.0;
        } else if since_backoff >= 600.0 && scale < 65536.0 {
            scale *= 2.0;
            since_backoff = 0.0;
        }
        row[5] = Some(scale);
        row[6] = Some(skipped);
        // Throughput, step time, GPU utilisation, data wait.
        let busy = progressing;
        let tp = if busy {
            (1000.0 / shape.step_time) * slow * (1.0 + 0.03 * rng.t4())
        } else {
            0.0
        };
        row[7] = Some(tp.max(0.0));
        if busy {
            row[8] = Some(shape.step_time / slow * (1.0 + 0.03 * rng.normal()).max(0.5));
        }
        let util = match kind {
            Some(K::GpuUtilDrop) if after(t) => 0.35,
            Some(K::DataloaderStall) if after(t) => 0.5,
            Some(K::Stall) if after(t) => 0.99,
            _ if !busy => 0.1,
            _ => 0.95,
        };
        row[9] = Some((util + 0.02 * rng.normal()).clamp(0.0, 1.0));
        let wait = if kind == Some(K::DataloaderStall) && after(t) {
            0.6
        } else {
            0.03
        };
        row[10] = Some((wait + 0.01 * rng.normal()).clamp(0.0, 1.0));
        if kind == Some(K::GpuHardwareError) && (t - onset).abs() < CADENCE / 2.0 {
            xid += 1.0;
        }
        row[11] = Some(xid);
        row[12] = Some(restarts);
        let age = t - last_save;
        if kind == Some(K::CheckpointStale) && stale_label.is_none() && age > 3.0 * 3600.0 {
            stale_label = Some(t);
        }
        row[13] = Some(age);
        row[0] = Some(step);
        // Per-rank compute time; rank 2 straggles.
        for r in 0..RANKS {
            let f = if kind == Some(K::Straggler) && after(t) && r == 2 {
                1.7
            } else {
                1.0
            };
            if busy {
                row[COLUMNS.len() + r] =
                    Some(0.8 * shape.step_time * f * (1.0 + 0.02 * rng.normal()));
            }
        }
        rows.push((t, row));
        t += CADENCE;
    }
    // Labels lie inside the trace: its last row, not the nominal end.
    let end = rows.last().map_or(0.0, |r: &(f64, Row)| r.0);
    match kind {
        Some(K::CheckpointStale) => label_start = stale_label.unwrap_or(end),
        Some(K::Stall) => label_start = onset,
        Some(K::EvalRegression) => {
            // Visible from the first evaluation after the onset.
            label_start = (onset / 1800.0).ceil() * 1800.0 + 50.0;
        }
        _ => {}
    }
    let label = fault.map(|f| LabelledAnomaly {
        kind: f.kind,
        start: label_start.min(end),
        end: label_end.min(end).max(label_start.min(end)),
        note: format!("injected {} from t={:.0} s", f.kind, f.onset),
    });
    (rows, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::trace::Trace;

    #[test]
    fn same_seed_same_set_every_kind_labelled_and_readable() {
        let a = generate_set(7, 2);
        let b = generate_set(7, 2);
        assert_eq!(a.len(), 2 + FindingKind::ALL.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.csv, y.csv);
        }
        for g in &a {
            let tr = Trace::parse(&g.csv, Path::new(&g.name)).expect("valid trace");
            assert!(tr.rows > 1000, "{}", g.name);
            if g.name.starts_with("healthy") {
                assert!(g.labels.anomalies.is_empty());
            } else {
                let l = &g.labels.anomalies[0];
                assert!(g.name.starts_with(l.kind.as_str()), "{}", g.name);
                assert!(l.start <= l.end && l.end <= tr.end, "{}: {l:?}", g.name);
            }
        }
        assert_ne!(generate_set(8, 2)[0].csv, a[0].csv);
    }
}
