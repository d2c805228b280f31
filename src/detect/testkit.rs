//! Test support: a tiny deterministic PRNG for seeded heavy-tailed noise, and a poll loop that
//! drives the detectors through [`Hysteresis`] the way the engine and `replay` do.

use crate::charts::ChartSet;

use super::{DetectContext, DetectorParams, Finding, Hysteresis, detect_all};

/// splitmix64: small, fast, good enough for test noise, identical on every platform.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Student-t with `nu` degrees of freedom: a normal over the root of a scaled chi-square.
    /// Heavy tails like per-batch loss noise (ν = 4: finite variance, frequent 5σ outliers).
    pub(crate) fn student_t(&mut self, nu: u32) -> f64 {
        let chi2: f64 = (0..nu.max(1)).map(|_| self.normal().powi(2)).sum();
        self.normal() / (chi2 / f64::from(nu.max(1))).sqrt()
    }
}

/// Polls `detect_all` every 30 s from `from` to `to` (inclusive) with default parameters and
/// returns every finding that *started* (what the engine would report).
pub(crate) fn poll_started(
    charts: &ChartSet,
    from: f64,
    to: f64,
    since: Option<f64>,
    paused: bool,
) -> Vec<Finding> {
    let params = DetectorParams::default();
    let mut h = Hysteresis::new();
    let mut started = Vec::new();
    let mut now = from;
    while now <= to {
        let ctx = DetectContext {
            now,
            charts,
            since,
            paused,
            params: &params,
        };
        started.extend(h.update(detect_all(&ctx)).started);
        now += 30.0;
    }
    started
}

/// One detector's conditions at `now`, with default parameters.
pub(crate) fn run_detector(
    detect: fn(&DetectContext<'_>, &mut Vec<Finding>),
    charts: &ChartSet,
    now: f64,
    since: Option<f64>,
    paused: bool,
) -> Vec<Finding> {
    let params = DetectorParams::default();
    let ctx = DetectContext {
        now,
        charts,
        since,
        paused,
        params: &params,
    };
    let mut out = Vec::new();
    detect(&ctx, &mut out);
    out
}
