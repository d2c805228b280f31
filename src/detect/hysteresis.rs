//! Hysteresis: one report when a condition starts, one when it clears.
//!
//! Detectors restate every condition on every poll; [`Hysteresis`] remembers which
//! (kind, chart) conditions are active and keeps each one *as first reported* (its onset and
//! message), so a condition is reported once when it starts and once, with the same finding,
//! when it clears.

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

    /// Feeds the conditions that hold now; returns what started and what cleared. A condition
    /// stated twice in one poll counts once (the first statement).
    pub fn update(&mut self, current: Vec<Finding>) -> Transitions {
        let mut t = Transitions::default();
        let mut next = BTreeMap::new();
        for f in current {
            let key = (f.kind, f.chart.clone());
            if next.contains_key(&key) {
                continue;
            }
            match self.active.remove(&key) {
                // Keep the finding as first reported (its onset), not the latest re-statement.
                Some(first) => {
                    next.insert(key, first);
                }
                None => {
                    t.started.push(f.clone());
                    next.insert(key, f);
                }
            }
        }
        // Whatever was active and is not restated has cleared.
        t.cleared
            .extend(std::mem::replace(&mut self.active, next).into_values());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn f(kind: FindingKind, chart: &str, at: f64, onset: f64) -> Finding {
        Finding {
            kind,
            chart: chart.into(),
            at,
            onset,
            severity: Severity::Warning,
            message: format!("seen at {at}"),
            value: None,
            baseline: None,
        }
    }

    #[test]
    fn started_once_kept_as_first_reported_cleared_once() {
        let mut h = Hysteresis::new();
        let t = h.update(vec![f(FindingKind::Stall, "step", 100.0, 90.0)]);
        assert_eq!(t.started.len(), 1);
        assert!(t.cleared.is_empty());
        // Restated with a later onset and a new message: nothing new, the first is kept.
        let t = h.update(vec![
            f(FindingKind::Stall, "step", 130.0, 120.0),
            f(FindingKind::Stall, "step", 130.0, 125.0),
        ]);
        assert_eq!(t, Transitions::default());
        let kept: Vec<_> = h.active().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].onset, kept[0].message.as_str()),
            (90.0, "seen at 100")
        );
        assert!(h.is_active(FindingKind::Stall));
        // Another chart of the same kind is its own condition.
        let t = h.update(vec![
            f(FindingKind::Stall, "step", 160.0, 150.0),
            f(FindingKind::Nonfinite, "loss", 160.0, 160.0),
        ]);
        assert_eq!(t.started.len(), 1);
        assert_eq!(t.started[0].kind, FindingKind::Nonfinite);
        // Both clear once, each with the finding as first reported.
        let t = h.update(Vec::new());
        assert!(t.started.is_empty());
        assert_eq!(t.cleared.len(), 2);
        let stall = t
            .cleared
            .iter()
            .find(|c| c.kind == FindingKind::Stall)
            .expect("stall cleared");
        assert_eq!((stall.at, stall.onset), (100.0, 90.0));
        assert_eq!(h.update(Vec::new()), Transitions::default());
        assert!(!h.is_active(FindingKind::Stall));
        // A new episode starts again.
        assert_eq!(
            h.update(vec![f(FindingKind::Stall, "step", 400.0, 380.0)])
                .started
                .len(),
            1
        );
    }
}
