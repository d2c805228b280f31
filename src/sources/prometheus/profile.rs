//! Profiles: the PromQL behind each chart, so users write none for common exporters.
//!
//! A profile maps chart keys to [`ChartTemplate`]s. A template is PromQL with placeholders that
//! the source fills in for a *batch* of runs, so one query serves every watch sharing it:
//!
//! | placeholder | becomes |
//! | --- | --- |
//! | `$RUNS` | the matcher of the batch's runs: `run=~"a|b|c"` |
//! | `$RUN_LABEL` | the run label's name (`run`), for `by ($RUN_LABEL, gpu)` |
//! | `$POD_RUNS` | the same runs matched on kube-state-metrics' pod label: `label_run=~"a|b"` |
//! | `$POD_RUN_LABEL` | that pod label's name (`label_run`) |
//!
//! Templates aggregate `by ($RUN_LABEL, …)`: it drops `instance`, `job` and `pod`, so a
//! restarted exporter or pod continues the same chart instead of starting a second one.
//!
//! Profiles: `generic` (a training exporter publishing `training_*`, see docs/METRICS.md),
//! `dcgm` (NVIDIA dcgm-exporter) and `kube_state_metrics` (pod restarts). A watch picks one or
//! more; its `charts` table overrides single charts (an empty expression turns one off).

use std::collections::BTreeMap;

use crate::charts::{ChartKey, Role};

use super::settings::{ChartTemplate, ProfileSel};

/// The charts of one watch: chart key → template.
pub type ChartPlan = BTreeMap<ChartKey, ChartTemplate>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("unknown profile `{0}` (known: generic, dcgm, kube_state_metrics)")]
    Unknown(String),
    #[error(
        "chart `{chart}`: the expression must select the runs with `$RUNS` or `$POD_RUNS` (it is batched over many runs): {expr}"
    )]
    NoRunMatcher { chart: String, expr: String },
    #[error("chart `{chart}`: `{label}` is not a valid label name")]
    BadLabel { chart: String, label: String },
}

/// Names accepted in `profile`.
pub const PROFILES: [&str; 3] = ["generic", "dcgm", "kube_state_metrics"];

/// The built-in profile `name` (`kube` is an alias of `kube_state_metrics`).
pub fn builtin(name: &str) -> Result<ChartPlan, ProfileError> {
    let mut p = ChartPlan::new();
    let mut put = |key: ChartKey, expr: &str, labels: &[&str]| {
        p.insert(key, ChartTemplate::new(expr, labels));
    };
    let by_run = |metric: &str| format!("max by ($RUN_LABEL) ({metric}{{$RUNS}})");
    match name {
        "generic" => {
            put(ChartKey::new(Role::Step), &by_run("training_step"), &[]);
            put(ChartKey::new(Role::Loss), &by_run("training_loss"), &[]);
            put(
                ChartKey::new(Role::EvalLoss),
                &by_run("training_eval_loss"),
                &[],
            );
            put(
                ChartKey::new(Role::GradNorm),
                &by_run("training_grad_norm"),
                &[],
            );
            put(
                ChartKey::new(Role::Lr),
                &by_run("training_learning_rate"),
                &[],
            );
            put(
                ChartKey::new(Role::LossScale),
                &by_run("training_loss_scale"),
                &[],
            );
            put(
                ChartKey::new(Role::SkippedSteps),
                &by_run("training_skipped_steps_total"),
                &[],
            );
            put(
                ChartKey::new(Role::Throughput),
                &by_run("training_throughput"),
                &[],
            );
            put(
                ChartKey::new(Role::StepTime),
                "max by ($RUN_LABEL, rank) (training_step_time_seconds{$RUNS})",
                &["rank"],
            );
            put(
                ChartKey::new(Role::ComputeTime),
                "max by ($RUN_LABEL, rank) (training_compute_time_seconds{$RUNS})",
                &["rank"],
            );
            put(
                ChartKey::new(Role::DataWait),
                &by_run("training_data_wait_seconds"),
                &[],
            );
            put(
                ChartKey::new(Role::CheckpointAge),
                "time() - max by ($RUN_LABEL) (training_last_checkpoint_timestamp_seconds{$RUNS})",
                &[],
            );
        }
        "dcgm" => {
            put(
                ChartKey::new(Role::GpuUtil),
                "max by ($RUN_LABEL, Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL{$RUNS})",
                &["Hostname", "gpu"],
            );
            // FB_USED is in MiB; the chart is in bytes.
            put(
                ChartKey::new(Role::GpuMemUsed),
                "max by ($RUN_LABEL, Hostname, gpu) (DCGM_FI_DEV_FB_USED{$RUNS}) * 1048576",
                &["Hostname", "gpu"],
            );
            // Xid errors counted by dcgm-exporter's xid collector over its window, one series
            // per Xid code: any rise is a new error (a fall is the window moving on).
            put(
                ChartKey::new(Role::XidErrors),
                "sum by ($RUN_LABEL, Hostname, gpu) (DCGM_EXP_XID_ERRORS_COUNT{$RUNS})",
                &["Hostname", "gpu"],
            );
            // Uncorrectable (double-bit) ECC errors since the driver loaded.
            put(
                ChartKey::new(Role::EccErrors),
                "max by ($RUN_LABEL, Hostname, gpu) (DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{$RUNS})",
                &["Hostname", "gpu"],
            );
            // NVLink recovery errors (a link had to retrain): read by the same hardware-error
            // detector as ECC, told apart by `source=nvlink`.
            put(
                ChartKey::new(Role::EccErrors).with_label("source", "nvlink"),
                "sum by ($RUN_LABEL, Hostname, gpu) (DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL{$RUNS})",
                &["Hostname", "gpu"],
            );
        }
        "kube_state_metrics" | "kube" => {
            // Restarts of every container of the run's pods; the run comes from the pod label
            // (`kube_pod_labels`), copied onto the restart counter by a one-to-one join.
            put(
                ChartKey::new(Role::Restarts),
                "sum by ($RUN_LABEL) (kube_pod_container_status_restarts_total * on (namespace, pod) group_left ($RUN_LABEL) label_replace(kube_pod_labels{$POD_RUNS}, \"$RUN_LABEL\", \"$1\", \"$POD_RUN_LABEL\", \"(.+)\"))",
                &[],
            );
        }
        other => return Err(ProfileError::Unknown(other.to_string())),
    }
    Ok(p)
}

/// A watch's charts: its profiles merged in order, then its overrides (empty = off).
pub fn resolve(
    profiles: &ProfileSel,
    overrides: &BTreeMap<ChartKey, ChartTemplate>,
) -> Result<ChartPlan, ProfileError> {
    let mut plan = ChartPlan::new();
    for name in profiles.names() {
        plan.extend(builtin(name.trim())?);
    }
    for (key, t) in overrides {
        if t.is_off() {
            plan.remove(key);
        } else {
            plan.insert(key.clone(), t.clone());
        }
    }
    for (key, t) in &plan {
        check(key, t)?;
    }
    Ok(plan)
}

fn check(key: &ChartKey, t: &ChartTemplate) -> Result<(), ProfileError> {
    if !t.expr.contains("$RUNS") && !t.expr.contains("$POD_RUNS") {
        return Err(ProfileError::NoRunMatcher {
            chart: key.to_string(),
            expr: t.expr.clone(),
        });
    }
    for l in &t.labels {
        if !is_label_name(l) {
            return Err(ProfileError::BadLabel {
                chart: key.to_string(),
                label: l.clone(),
            });
        }
    }
    Ok(())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names used when expanding a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels<'a> {
    pub run_label: &'a str,
    pub pod_run_label: &'a str,
}

/// The template's PromQL for these runs.
pub fn expand(expr: &str, labels: &Labels<'_>, runs: &[&str]) -> String {
    let alternatives = runs
        .iter()
        .map(|r| promql_string_escape(&regex_escape(r)))
        .collect::<Vec<_>>()
        .join("|");
    expr.replace(
        "$POD_RUNS",
        &format!("{}=~\"{alternatives}\"", labels.pod_run_label),
    )
    .replace("$POD_RUN_LABEL", labels.pod_run_label)
    .replace(
        "$RUNS",
        &format!("{}=~\"{alternatives}\"", labels.run_label),
    )
    .replace("$RUN_LABEL", labels.run_label)
}

/// Escapes RE2 metacharacters so a run name matches literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes a value for a double-quoted PromQL string.
fn promql_string_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Labels<'static> = Labels {
        run_label: "run",
        pod_run_label: "label_run",
    };

    #[test]
    fn expands_a_batch_with_escaping() {
        let q = expand(
            "max by ($RUN_LABEL) (training_loss{$RUNS})",
            &L,
            &["a", "b.c", "d\"e"],
        );
        assert_eq!(q, r#"max by (run) (training_loss{run=~"a|b\\.c|d\"e"})"#);
        let k = expand(
            &builtin("kube").unwrap()[&ChartKey::new(Role::Restarts)].expr,
            &L,
            &["x"],
        );
        assert!(k.contains(r#"kube_pod_labels{label_run=~"x"}"#), "{k}");
        assert!(k.contains(r#""run", "$1", "label_run", "(.+)""#), "{k}");
        assert!(k.starts_with("sum by (run) ("), "{k}");
    }

    #[test]
    fn profiles_merge_and_overrides_replace_or_remove() {
        let mut o = BTreeMap::new();
        o.insert(
            ChartKey::new(Role::Loss),
            ChartTemplate::new("avg by ($RUN_LABEL) (my_loss{$RUNS})", &[]),
        );
        o.insert(ChartKey::new(Role::EvalLoss), ChartTemplate::new("", &[]));
        let plan = resolve(&ProfileSel::Many(vec!["generic".into(), "dcgm".into()]), &o).unwrap();
        assert_eq!(
            plan[&ChartKey::new(Role::Loss)].expr,
            "avg by ($RUN_LABEL) (my_loss{$RUNS})"
        );
        assert!(!plan.contains_key(&ChartKey::new(Role::EvalLoss)));
        assert!(plan.contains_key(&ChartKey::new(Role::GpuUtil)));
        assert!(plan.contains_key(&ChartKey::new(Role::EccErrors).with_label("source", "nvlink")));
        assert_eq!(
            plan[&ChartKey::new(Role::XidErrors)].labels,
            vec!["Hostname", "gpu"]
        );
        assert!(
            plan[&ChartKey::new(Role::XidErrors)]
                .expr
                .contains("DCGM_EXP_XID_ERRORS_COUNT")
        );
    }

    #[test]
    fn bad_profiles_and_templates_are_named() {
        assert_eq!(
            resolve(&ProfileSel::One("gneric".into()), &BTreeMap::new()),
            Err(ProfileError::Unknown("gneric".into()))
        );
        let mut o = BTreeMap::new();
        o.insert(
            ChartKey::new(Role::Loss),
            ChartTemplate::new("training_loss", &[]),
        );
        let e = resolve(&ProfileSel::One("generic".into()), &o).unwrap_err();
        assert!(e.to_string().contains("chart `loss`"), "{e}");
        let mut o = BTreeMap::new();
        o.insert(
            ChartKey::new(Role::Loss),
            ChartTemplate::new("x{$RUNS}", &["bad-label"]),
        );
        assert!(matches!(
            resolve(&ProfileSel::One("generic".into()), &o),
            Err(ProfileError::BadLabel { .. })
        ));
    }
}
