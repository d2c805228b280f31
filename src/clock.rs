//! Clock: the time every stage reads. Detectors, policy and verification take `now` as a
//! parameter; the loop reads it from a [`Clock`], so tests run on paused tokio time and the demo
//! compresses simulated time.

use std::sync::Arc;

/// Seconds since the Unix epoch (fractional), as seen by babysitter.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
}

/// Wall-clock time: production.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        unix_now()
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Simulated time: starts at `origin` and runs `speed` times faster than tokio's clock (which
/// tests may pause and advance).
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: f64,
    start: tokio::time::Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(origin: f64, speed: f64) -> Self {
        ScaledClock {
            origin,
            start: tokio::time::Instant::now(),
            speed,
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Wall (tokio) duration that corresponds to `secs` of clock time.
    pub fn wall(&self, secs: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((secs / self.speed).max(0.0))
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> f64 {
        self.origin + self.start.elapsed().as_secs_f64() * self.speed
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// A clock that moves only when told: tests step the loop through simulated hours exactly.
/// (Tokio's paused clock auto-advances while SQLite works on its own thread, so loop tests
/// that touch the audit database use this instead.)
#[derive(Debug)]
pub struct ManualClock {
    t: std::sync::Mutex<f64>,
}

impl ManualClock {
    pub fn new(t: f64) -> Arc<Self> {
        Arc::new(ManualClock {
            t: std::sync::Mutex::new(t),
        })
    }

    pub fn advance(&self, secs: f64) {
        if let Ok(mut t) = self.t.lock() {
            *t += secs;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        self.t.lock().map(|t| *t).unwrap_or(0.0)
    }
}

/// A clock time for messages: Unix times as `HH:MM:SSZ` (UTC), trace times (seconds since the
/// start of a run) as `t=1234s`.
pub fn fmt_t(t: f64) -> String {
    if t.is_finite() && t > 1e9 {
        match chrono::DateTime::from_timestamp(t as i64, 0) {
            Some(d) => d.format("%H:%M:%SZ").to_string(),
            None => format!("t={t:.0}s"),
        }
    } else {
        format!("t={t:.0}s")
    }
}
