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

/// A length of time for messages: `45 s`, `10 min`, `4 h`, `1.5 h`, `20 d` (minutes up to
/// two hours, hours up to two days, one decimal when it is not a whole number).
pub fn fmt_span(secs: f64) -> String {
    span(secs, false)
}

/// [`fmt_span`] as an adjective: `45-s`, `10-min`, `4-h`, `20-day` ("its 10-min median").
pub fn fmt_span_adj(secs: f64) -> String {
    span(secs, true)
}

fn span(secs: f64, adj: bool) -> String {
    let sep = if adj { "-" } else { " " };
    let one = |x: f64| {
        let r = format!("{x:.1}");
        r.strip_suffix(".0").map(str::to_string).unwrap_or(r)
    };
    let a = secs.abs();
    if !secs.is_finite() || a < 120.0 {
        format!("{secs:.0}{sep}s")
    } else if a < 7200.0 {
        format!("{:.0}{sep}min", secs / 60.0)
    } else if a < 172_800.0 {
        format!("{}{sep}h", one(secs / 3600.0))
    } else {
        format!(
            "{}{sep}{}",
            one(secs / 86400.0),
            if adj { "day" } else { "d" }
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_an_engineer_writes_them() {
        let cases = [
            (45.0, "45 s", "45-s"),
            (600.0, "10 min", "10-min"),
            (3600.0, "60 min", "60-min"),
            (7200.0, "2 h", "2-h"),
            (5400.0 * 3.0, "4.5 h", "4.5-h"),
            (172_800.0, "2 d", "2-day"),
            (28_800.0 * 60.0, "20 d", "20-day"),
        ];
        for (secs, plain, adj) in cases {
            assert_eq!(fmt_span(secs), plain, "{secs}");
            assert_eq!(fmt_span_adj(secs), adj, "{secs}");
        }
        assert_eq!(fmt_span(f64::NAN), "NaN s");
    }
}
