//! Hysteresis: one report when a condition starts, one when it clears.

use std::collections::BTreeMap;

use super::{Finding, FindingKind};

/// Started and cleared conditions of one poll.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Transitions {
    pub started: Vec<Finding>,
    pub cleared: Vec<Finding>,
}

/// Remembers which conditions are active, per (kind, chart).
#[derive(Debug, Default, Clone)]
pub struct Hysteresis {
    active: BTreeMap<(FindingKind, String), Finding>,
}

impl Hysteresis {
    pub fn new() -> Self {
        Hysteresis::default()
    }

    /// Feeds the conditions that hold now; returns what started and what cleared.
    pub fn update(&mut self, current: Vec<Finding>) -> Transitions {
        let mut t = Transitions::default();
        let mut seen = BTreeMap::new();
        for f in current {
            let key = (f.kind, f.chart.clone());
            if !self.active.contains_key(&key) {
                t.started.push(f.clone());
            }
            seen.insert(key, f);
        }
        for (key, f) in std::mem::take(&mut self.active) {
            if !seen.contains_key(&key) {
                t.cleared.push(f);
            }
        }
        // Keep the finding as first reported (its onset), not the latest re-statement.
        for (key, f) in seen {
            self.active.insert(key, f);
        }
        t
    }

    pub fn is_active(&self, kind: FindingKind) -> bool {
        self.active.keys().any(|(k, _)| *k == kind)
    }

    pub fn active(&self) -> impl Iterator<Item = &Finding> {
        self.active.values()
    }

    /// Forgets every active condition (after a restart the run starts a new life).
    pub fn reset(&mut self) {
        self.active.clear();
    }
}
