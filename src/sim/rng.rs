//! A small, seedable, counter-addressable PRNG for the simulator (no `rand` crate).
//!
//! Every random draw of a scrape comes from a stream seeded by `(run seed, scrape index,
//! channel)`, so a value depends only on *which* sample it is, never on how often or in which
//! order the simulator was polled. The generator is xoshiro256** seeded through splitmix64.

/// One step of splitmix64: advances `state` and returns a well-mixed 64-bit value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes two words into one (order matters).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93).rotate_left(29);
    splitmix64(&mut s)
}

/// FNV-1a of a string: a stable hash (unlike `std`'s randomly keyed one) for run names.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// xoshiro256** (Blackman & Vigna).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix64(&mut sm);
        }
        // splitmix64 never yields four zero words from one seed, but keep the invariant explicit.
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// The stream for one draw site: `(seed, index, channel)`.
    pub fn at(seed: u64, index: u64, channel: u64) -> Self {
        Rng::new(mix(mix(seed, index), channel))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller; one of the pair is discarded to keep draws addressable).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Student-t with `nu` (integer) degrees of freedom: heavy tails, unit scale.
    pub fn student_t(&mut self, nu: u32) -> f64 {
        let nu = nu.max(1);
        let z = self.normal();
        let chi2: f64 = (0..nu).map(|_| self.normal().powi(2)).sum();
        z / (chi2 / f64::from(nu)).sqrt().max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = {
            let mut r = Rng::at(7, 3, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::at(7, 3, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::at(7, 4, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(fnv1a("run-a"), fnv1a("run-b"));
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn distributions_have_the_right_shape() {
        let mut r = Rng::new(42);
        let n = 20_000;
        let us: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        assert!(us.iter().all(|u| *u > 0.0 && *u < 1.0));
        let mean_u = us.iter().sum::<f64>() / n as f64;
        assert!((mean_u - 0.5).abs() < 0.01, "uniform mean {mean_u}");

        let zs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = zs.iter().sum::<f64>() / n as f64;
        let var = zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "normal mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "normal var {var}");

        // Student-t(4) has fatter tails than the normal: more mass beyond 3.
        let ts: Vec<f64> = (0..n).map(|_| r.student_t(4)).collect();
        let tail_t = ts.iter().filter(|t| t.abs() > 3.0).count();
        let tail_z = zs.iter().filter(|z| z.abs() > 3.0).count();
        assert!(
            tail_t > 3 * tail_z.max(1),
            "t tail {tail_t} vs normal tail {tail_z}"
        );
    }
}
