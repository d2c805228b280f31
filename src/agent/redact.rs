//! Redaction of names before anything leaves for the model: run, namespace, workload and pod
//! (and node) names become placeholders (`run-1`, `namespace-1`, `pod-1`), and the model's tool
//! arguments are mapped back before a tool runs, so the model can still query what it saw.
//!
//! It replaces the names babysitter knows (the watch's target, and pods and nodes as tools
//! return them); a name it was never told about, inside free text, is not caught.

/// A two-way map between real names and placeholders. Disabled: both directions are identity.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    enabled: bool,
    /// (real, placeholder), longest real name first so `run-a-2` is replaced before `run-a`.
    pairs: Vec<(String, String)>,
    counts: std::collections::BTreeMap<&'static str, usize>,
}

impl Redactor {
    pub fn new(enabled: bool) -> Redactor {
        Redactor {
            enabled,
            ..Redactor::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Registers a name of a class (`run`, `namespace`, `workload`, `pod`, `node`); returns its
    /// placeholder (the name itself when disabled). Names shorter than 3 characters are left
    /// alone: replacing them would mangle ordinary words.
    pub fn register(&mut self, class: &'static str, real: &str) -> String {
        if !self.enabled || real.len() < 3 {
            return real.to_string();
        }
        if let Some((_, p)) = self.pairs.iter().find(|(r, _)| r == real) {
            return p.clone();
        }
        let n = self.counts.entry(class).or_insert(0);
        *n += 1;
        let placeholder = format!("{class}-{n}");
        self.pairs.push((real.to_string(), placeholder.clone()));
        self.pairs
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        placeholder
    }

    /// Text as it may leave: every registered name replaced.
    pub fn redact(&self, text: &str) -> String {
        if !self.enabled {
            return text.to_string();
        }
        let mut out = text.to_string();
        for (real, p) in &self.pairs {
            out = out.replace(real.as_str(), p);
        }
        out
    }

    /// The model's text as babysitter uses it: placeholders back to names. Longest placeholder
    /// first, so `pod-12` is not read as `pod-1` followed by `2`.
    pub fn restore(&self, text: &str) -> String {
        if !self.enabled {
            return text.to_string();
        }
        let mut by_placeholder: Vec<&(String, String)> = self.pairs.iter().collect();
        by_placeholder.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(b.1.cmp(&a.1)));
        let mut out = text.to_string();
        for (real, p) in by_placeholder {
            out = out.replace(p.as_str(), real);
        }
        out
    }

    /// How many names are hidden (recorded with the investigation; the names are not).
    pub fn hidden(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_longest_wins() {
        let mut r = Redactor::new(true);
        assert_eq!(r.register("run", "llama-70b"), "run-1");
        assert_eq!(r.register("pod", "llama-70b-worker-0"), "pod-1");
        assert_eq!(r.register("namespace", "team-a"), "namespace-1");
        assert_eq!(r.register("run", "llama-70b"), "run-1");
        let text = "pod llama-70b-worker-0 of llama-70b in team-a";
        let out = r.redact(text);
        assert_eq!(out, "pod pod-1 of run-1 in namespace-1");
        assert!(!out.contains("llama"));
        assert_eq!(r.restore(&out), text);
        assert_eq!(r.hidden(), 3);
    }

    #[test]
    fn disabled_is_identity() {
        let mut r = Redactor::new(false);
        assert_eq!(r.register("run", "llama-70b"), "llama-70b");
        assert_eq!(r.redact("llama-70b"), "llama-70b");
        assert_eq!(r.restore("run-1"), "run-1");
    }
}
