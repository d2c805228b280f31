//! Incident export: a live incident as a replayable, labelled trace (FORMATS.md §1).
//!
//! A false alarm or a miss seen on call becomes a regression case for the detection benchmark:
//! [`incident_trace`] writes the run's charts over `[first onset − before, end of the incident]`
//! as a trace CSV whose `time` starts at 0 on its first row, and the sidecar labels with one
//! anomaly per finding of the incident, on the same time origin. It is a pure function over the
//! charts the engine still holds, the incident and what the engine recorded about when each
//! finding cleared; the API (`GET /api/v1/incidents/{id}/trace|labels`) gathers those and the
//! CLI (`babysitter incident export`) writes the two files.
//!
//! Written values read back exactly through [`super::Trace::parse`]: `NaN`, `Inf` and `-Inf`
//! as such, finite values in Rust's shortest round-trip form, and only chart names whose
//! `Display` parses back to the same [`ChartKey`] (others are left out and named in the
//! description).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::act::ActionKind;
use crate::charts::{ChartKey, ChartSet};
use crate::detect::{Finding, FindingKind};
use crate::incident::Incident;

use super::score::{LabelledAnomaly, Labels};

/// How much history before the first onset an export holds unless told otherwise: the
/// detectors need it (stall learns the step cadence over 2 h, divergence looks back 2 h).
pub const DEFAULT_BEFORE_SECS: f64 = 3.0 * 3600.0;

/// Times in the trace are rounded to this resolution (Prometheus timestamps are milliseconds),
/// so Unix-time float noise does not split one scrape into several rows.
const TICKS_PER_SEC: f64 = 1000.0;

/// The time span of an export, in clock seconds (Unix seconds live).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportWindow {
    /// Where the trace should start: the first onset minus `before`, or an explicit start.
    pub from: f64,
    /// Where it ends: when the incident closed, now if it is open, or an earlier explicit end.
    pub until: f64,
    /// The oldest time the engine still holds charts for (now − retention): anything before it
    /// was pruned from memory.
    pub kept_since: f64,
}

impl ExportWindow {
    /// The window of `[onset − before, end]` for an incident, seen at `now` by an engine that
    /// keeps `retention` seconds of charts.
    pub fn for_incident(inc: &Incident, before: f64, now: f64, retention: f64) -> ExportWindow {
        ExportWindow {
            from: inc.onset() - before,
            until: incident_end(inc, now),
            kept_since: now - retention,
        }
    }
}

/// When an incident ended: the last transition of a resolved or escalated incident (its
/// `updated_at`, which only lifecycle transitions move), else `now`.
pub fn incident_end(inc: &Incident, now: f64) -> f64 {
    if inc.state.is_final() {
        inc.updated_at
    } else {
        now
    }
}

/// A condition that cleared, as the engine recorded it (audit `finding_cleared`): the finding
/// as first reported (kind, chart, onset) and the clock time of the poll that no longer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Clearing {
    pub kind: FindingKind,
    pub chart: String,
    pub onset: f64,
    pub at: f64,
}

impl Clearing {
    /// Reads a `finding_cleared` audit payload (`{"finding": {...}, "cleared_at": t}`); `None`
    /// for a payload without these fields (entries written before `cleared_at` existed).
    pub fn from_payload(payload: &serde_json::Value) -> Option<Clearing> {
        let f = payload.get("finding")?;
        Some(Clearing {
            kind: f.get("kind")?.as_str()?.parse().ok()?,
            chart: f.get("chart")?.as_str()?.to_string(),
            onset: f.get("onset")?.as_f64()?,
            at: payload.get("cleared_at")?.as_f64()?,
        })
    }

    fn is_of(&self, f: &Finding) -> bool {
        self.kind == f.kind && self.chart == f.chart && same_time(self.onset, f.onset)
    }
}

fn same_time(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

/// What besides the charts and the incident an export reads.
#[derive(Debug, Clone, Copy)]
pub struct ExportContext<'a> {
    pub window: ExportWindow,
    /// The run's recorded clearings (any order; others than the incident's are ignored).
    pub cleared: &'a [Clearing],
    /// The run's conditions still active now (the engine's hysteresis).
    pub active: &'a [Finding],
    /// When the export was made, as written in the labels' `source` (RFC 3339).
    pub exported_at: &'a str,
    /// How long the engine keeps charts, in words (`6h`), for the pruning note.
    pub retention: &'a str,
}

/// An exported incident: the trace text and its labels, on one time origin.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentTrace {
    /// The trace, FORMATS.md §1.
    pub csv: String,
    pub labels: Labels,
    /// Clock time of the trace's `time` 0 (its first row).
    pub origin: f64,
    /// Clock time of the last row.
    pub last: f64,
    /// The window the trace was cut from (clock seconds).
    pub window: ExportWindow,
    pub rows: usize,
    /// Chart columns written (not counting `time`).
    pub columns: usize,
    /// Set when the window reaches before what the engine still holds: the trace starts later
    /// than asked because charts before this clock time were already pruned.
    pub pruned_before: Option<f64>,
    /// Chart names left out because they would not read back as the same chart.
    pub skipped: Vec<String>,
}

impl IncidentTrace {
    /// The pruning note, for a response header and the labels' description.
    pub fn pruned_note(&self, retention: &str) -> Option<String> {
        self.pruned_before.map(|t| {
            format!(
                "charts before {} were already pruned (the service keeps {retention}): the trace starts at {}, not at {} as asked",
                rfc3339(t),
                rfc3339(self.origin),
                rfc3339(self.window.from)
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    #[error(
        "incident {incident}: the window is empty: it would end at {until} before it starts at {from} (clock seconds)"
    )]
    Window {
        incident: String,
        from: f64,
        until: f64,
    },
    #[error(
        "incident {incident}: no chart of run `{run}` has a sample from {from} to {until} (clock seconds): babysitter keeps charts in memory since {kept_since} only ({retention}), so they were already pruned or never arrived"
    )]
    NoSamples {
        incident: String,
        run: String,
        from: f64,
        until: f64,
        kept_since: f64,
        retention: String,
    },
}

/// Builds the trace CSV and its labels for an incident from the charts of its run.
///
/// The trace holds every chart with a sample in `[from, until]`; `time` is seconds since the
/// first of those samples (rounded to the millisecond), one row per distinct time, an empty cell
/// where a chart has no sample at that time. Labels: one anomaly per finding, `start` = its
/// onset, `end` = when it cleared ([`Clearing`]), or the time of a successful restart from
/// checkpoint that ended it (a restart starts a new life of the run and forgets its
/// conditions), or the trace's end when it is still active or its end is unknown; both clamped
/// to the trace.
pub fn incident_trace(
    charts: &ChartSet,
    inc: &Incident,
    ctx: &ExportContext<'_>,
) -> Result<IncidentTrace, ExportError> {
    let w = ctx.window;
    if !(w.from.is_finite() && w.until.is_finite() && w.until >= w.from) {
        return Err(ExportError::Window {
            incident: inc.id.clone(),
            from: w.from,
            until: w.until,
        });
    }
    // Columns: every chart with a sample in the window whose name reads back as itself.
    let mut skipped = Vec::new();
    let mut columns: Vec<(&ChartKey, &[crate::charts::Sample])> = Vec::new();
    for (key, series) in charts.iter() {
        let samples = series.range(w.from, w.until);
        if samples.is_empty() {
            continue;
        }
        if key.to_string().parse::<ChartKey>().as_ref() != Ok(key) {
            skipped.push(key.to_string());
            continue;
        }
        columns.push((key, samples));
    }
    let origin = columns
        .iter()
        .filter_map(|(_, s)| s.first().map(|x| x.t))
        .min_by(f64::total_cmp)
        .ok_or_else(|| ExportError::NoSamples {
            incident: inc.id.clone(),
            run: inc.run.clone(),
            from: w.from,
            until: w.until,
            kept_since: w.kept_since,
            retention: ctx.retention.to_string(),
        })?;
    let tick = |t: f64| ((t - origin) * TICKS_PER_SEC).round() as i64;
    let mut rows: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
    for (j, (_, samples)) in columns.iter().enumerate() {
        for s in *samples {
            rows.entry(tick(s.t))
                .or_insert_with(|| vec![None; columns.len()])[j] = Some(s.v);
        }
    }
    let mut csv = String::from("time");
    for (key, _) in &columns {
        csv.push(',');
        csv.push_str(&csv_field(&key.to_string()));
    }
    csv.push('\n');
    for (t, cells) in &rows {
        csv.push_str(&format_value(*t as f64 / TICKS_PER_SEC));
        for c in cells {
            csv.push(',');
            if let Some(v) = c {
                csv.push_str(&format_value(*v));
            }
        }
        csv.push('\n');
    }
    let last_tick = rows.keys().next_back().copied().unwrap_or(0);
    let trace_end = last_tick as f64 / TICKS_PER_SEC;
    let rel = |t: f64| (tick(t) as f64 / TICKS_PER_SEC).clamp(0.0, trace_end);
    let pruned_before = (w.from < w.kept_since).then_some(w.kept_since);

    let mut anomalies = Vec::new();
    for f in &inc.findings {
        let start = rel(f.onset);
        let end = match finding_end(f, inc, ctx) {
            Some(t) => rel(t),
            None => trace_end,
        };
        anomalies.push(LabelledAnomaly {
            kind: f.kind,
            start,
            end: end.max(start),
            note: f.message.clone(),
        });
    }
    let mut out = IncidentTrace {
        csv,
        labels: Labels {
            source: format!(
                "babysitter incident {} on run {}, exported {}",
                inc.id, inc.run, ctx.exported_at
            ),
            description: String::new(),
            anomalies,
        },
        origin,
        last: origin + trace_end,
        window: w,
        rows: rows.len(),
        columns: columns.len(),
        pruned_before,
        skipped,
    };
    out.labels.description = describe(inc, &out, ctx);
    Ok(out)
}

/// When a finding's condition ended (clock time), if babysitter knows it ended.
fn finding_end(f: &Finding, inc: &Incident, ctx: &ExportContext<'_>) -> Option<f64> {
    if ctx
        .active
        .iter()
        .any(|a| a.kind == f.kind && a.chart == f.chart && same_time(a.onset, f.onset))
    {
        return None;
    }
    let cleared = ctx
        .cleared
        .iter()
        .filter(|c| c.is_of(f) && c.at >= f.at)
        .map(|c| c.at)
        .min_by(f64::total_cmp);
    cleared.or_else(|| {
        inc.actions
            .iter()
            .filter(|a| {
                a.ok && a.action.kind() == ActionKind::RestartFromCheckpoint && a.at >= f.at
            })
            .map(|a| a.at)
            .min_by(f64::total_cmp)
    })
}

/// The labels' description: what happened, what was done, how it ended, and what a human
/// should check before the trace joins a benchmark.
fn describe(inc: &Incident, tr: &IncidentTrace, ctx: &ExportContext<'_>) -> String {
    let t = |x: f64| {
        format!(
            "t={} s",
            format_value(((x - tr.origin) * 1000.0).round() / 1000.0)
        )
    };
    let mut d = format!(
        "Incident {} on run {} ({} family), opened {} ({}), {}.",
        inc.id,
        inc.run,
        inc.family,
        rfc3339(inc.opened_at),
        t(inc.opened_at),
        inc.state
    );
    if let Some(by) = &inc.requested_by {
        let _ = write!(d, " Opened by {by} running a runbook by hand.");
    }
    for f in &inc.findings {
        let _ = write!(
            d,
            " Finding {} on {}: onset {}, raised {}: {}",
            f.kind,
            f.chart,
            t(f.onset),
            t(f.at),
            f.message.trim_end_matches('.')
        );
        d.push('.');
        if f.onset < tr.origin {
            d.push_str(
                " Its onset is before time 0 (those charts were pruned): its anomaly starts at 0.",
            );
        }
    }
    match &inc.diagnosis {
        Some(dg) => {
            let _ = write!(d, " Runbook: {} ({}).", dg.runbook, dg.title);
        }
        None => d.push_str(" Not diagnosed."),
    }
    if inc.actions.is_empty() {
        d.push_str(" No action ran.");
    } else {
        let done: Vec<String> = inc
            .actions
            .iter()
            .map(|a| {
                format!(
                    "{} at {} ({})",
                    a.action,
                    t(a.at),
                    if a.ok { "ok" } else { "failed" }
                )
            })
            .collect();
        let _ = write!(d, " Done: {}.", done.join("; "));
    }
    // The outcome of a verified incident usually repeats the verification: say it once.
    if let Some(v) = &inc.verification {
        let (_, msg) = verify_text(v);
        if !inc.outcome.as_ref().is_some_and(|o| o.contains(msg)) {
            let _ = write!(d, " Verification: {}.", verify_text(v).0);
        }
    }
    if let Some(o) = &inc.outcome {
        let _ = write!(d, " Outcome: {}.", o.trim_end_matches('.'));
    }
    let _ = write!(
        d,
        " Trace: time 0 is {} (clock {}), the last row is {}; {} rows, {} charts.",
        rfc3339(tr.origin),
        format_value(tr.origin),
        t(tr.last),
        tr.rows,
        tr.columns
    );
    if let Some(note) = tr.pruned_note(ctx.retention) {
        let _ = write!(d, " Note: {note}.");
    }
    if !tr.skipped.is_empty() {
        let _ = write!(
            d,
            " Left out (their names would not read back as the same chart): {}.",
            tr.skipped.join(", ")
        );
    }
    if inc.findings.is_empty() {
        d.push_str(
            " It has no findings, so `anomalies` is empty, which makes this a healthy trace: add the anomaly that made someone act, if there was one.",
        );
        return d;
    }
    d.push_str(
        " Each anomaly below is a finding babysitter raised, from its onset to when it cleared (or the end of the trace). A human should check them: if a finding was a false alarm, remove it from `anomalies` (an empty list makes this a healthy trace, on which every finding is a false positive); if something was missed, add it.",
    );
    d
}

/// The verification in words, and its bare message.
fn verify_text(v: &crate::verify::VerifyStatus) -> (String, &str) {
    use crate::verify::VerifyStatus;
    let (word, m) = match v {
        VerifyStatus::Pending(m) => ("pending", m),
        VerifyStatus::Passed(m) => ("passed", m),
        VerifyStatus::Failed(m) => ("failed", m),
    };
    let m = m.trim_end_matches('.');
    (format!("{word}: {m}"), m)
}

/// A clock time as RFC 3339 (UTC, seconds), or the number when it is not a plausible date.
pub fn rfc3339(t: f64) -> String {
    if !t.is_finite() {
        return format_value(t);
    }
    let secs = t.floor();
    let nanos = ((t - secs) * 1e9).round().min(999_999_999.0) as u32;
    match chrono::DateTime::from_timestamp(secs as i64, nanos) {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format_value(t),
    }
}

/// A value as a trace cell: `NaN`, `Inf`, `-Inf`, or the shortest decimal that reads back as
/// the same `f64` (exponent form for very large or very small magnitudes).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        let a = v.abs();
        if a == 0.0 || (1e-4..1e15).contains(&a) {
            format!("{v}")
        } else {
            format!("{v:e}")
        }
    }
}

/// A header cell: quoted when it holds a quote (the trace reader's rule: `""` inside quotes is
/// a quote). Commas inside `{...}` need no quotes.
fn csv_field(name: &str) -> String {
    if name.contains('"') {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::act::Action;
    use crate::charts::{Role, Sample};
    use crate::detect::Severity;
    use crate::incident::{ActionRecord, IncidentState};
    use crate::policy::Decision;
    use crate::replay::{DetectorSet, ReplayOptions, Trace, replay, score};

    const T0: f64 = 1_700_000_000.0;

    fn finding(kind: FindingKind, chart: &str, onset: f64, at: f64) -> Finding {
        Finding {
            kind,
            chart: chart.into(),
            at,
            onset,
            severity: Severity::Error,
            message: format!("{kind} on {chart}"),
            value: None,
            baseline: None,
        }
    }

    fn allowed() -> Decision {
        Decision {
            verdict: crate::policy::Verdict::Allow,
            rule: "test".into(),
            reason: "test".into(),
            retry_at: None,
        }
    }

    fn ctx<'a>(
        window: ExportWindow,
        cleared: &'a [Clearing],
        active: &'a [Finding],
    ) -> ExportContext<'a> {
        ExportContext {
            window,
            cleared,
            active,
            exported_at: "2023-11-14T23:00:00Z",
            retention: "6h",
        }
    }

    fn window(from: f64, until: f64) -> ExportWindow {
        ExportWindow {
            from,
            until,
            kept_since: T0 - 6.0 * 3600.0,
        }
    }

    fn parse(csv: &str) -> Trace {
        Trace::parse(csv, Path::new("inc.csv")).expect("the export reads back")
    }

    #[test]
    fn values_are_written_so_they_read_back_exactly() {
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1,
            2.5e-7,
            -3.25,
            1e300,
            123_456_789.125,
            8.0e10,
            f64::MIN_POSITIVE,
        ] {
            let s = format_value(v);
            assert_eq!(s.parse::<f64>(), Ok(v), "{v} written as {s}");
        }
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e300), "1e300");
        assert_eq!(format_value(30.5), "30.5");
        assert_eq!(rfc3339(T0), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(T0 + 0.5), "2023-11-14T22:13:20.500Z");
    }

    #[test]
    fn csv_has_one_row_per_time_empty_cells_nonfinite_values_and_labelled_charts() {
        let mut charts = ChartSet::new();
        let rank3 = ChartKey::new(Role::StepTime).with_label("rank", "3");
        let two_labels = ChartKey::new(Role::StepTime)
            .with_label("rank", "1")
            .with_label("node", "gpu-a");
        // Unix-time float noise: 30.0000001 s and 30 s are one row.
        charts.merge(
            ChartKey::new(Role::Loss),
            [
                Sample::new(T0 - 100.0, 9.0), // before the window: left out
                Sample::new(T0, 2.0),
                Sample::new(T0 + 30.000_000_1, f64::NAN),
                Sample::new(T0 + 60.0, f64::INFINITY),
                Sample::new(T0 + 90.0, f64::NEG_INFINITY),
            ],
        );
        charts.merge(rank3.clone(), [Sample::new(T0 + 30.0, 1.5)]);
        charts.merge(
            two_labels.clone(),
            [Sample::new(T0 + 15.0, 1.25), Sample::new(T0 + 90.0, 1.0)],
        );
        // A chart with nothing in the window gets no column.
        charts.merge(ChartKey::new(Role::Lr), [Sample::new(T0 - 500.0, 1e-4)]);
        let inc = Incident::new(
            "inc-1".into(),
            "run-a".into(),
            finding(FindingKind::Nonfinite, "loss", T0 + 30.0, T0 + 60.0),
            T0 + 60.0,
        );
        let tr = incident_trace(&charts, &inc, &ctx(window(T0 - 50.0, T0 + 90.0), &[], &[]))
            .expect("exports");
        assert_eq!(
            tr.csv,
            "time,loss,step_time{node=gpu-a,rank=1},step_time{rank=3}\n\
             0,2,,\n\
             15,,1.25,\n\
             30,NaN,,1.5\n\
             60,Inf,,\n\
             90,-Inf,1,\n"
        );
        assert_eq!(
            (tr.origin, tr.last, tr.rows, tr.columns),
            (T0, T0 + 90.0, 5, 3)
        );
        assert_eq!(tr.pruned_before, None);

        // Read back by babysitter's own parser: same charts, same values, sorted times.
        let t = parse(&tr.csv);
        assert_eq!((t.rows, t.start, t.end), (5, 0.0, 90.0));
        assert!(t.ignored.is_empty());
        let loss = t.charts.get(Role::Loss).expect("loss");
        let v: Vec<f64> = loss.samples().iter().map(|s| s.v).collect();
        assert_eq!(v[0], 2.0);
        assert!(v[1].is_nan());
        assert_eq!(&v[2..], &[f64::INFINITY, f64::NEG_INFINITY]);
        let ts: Vec<f64> = loss.samples().iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![0.0, 30.0, 60.0, 90.0]);
        assert_eq!(
            t.charts.get_key(&two_labels).map(|s| s.samples().to_vec()),
            Some(vec![Sample::new(15.0, 1.25), Sample::new(90.0, 1.0)])
        );
        assert_eq!(
            t.charts.get_key(&rank3).map(|s| s.samples().to_vec()),
            Some(vec![Sample::new(30.0, 1.5)])
        );
        assert!(t.charts.get(Role::Lr).is_none());

        // The labels read back too, on the same origin; still active → ends with the trace.
        let active = [inc.findings[0].clone()];
        let tr = incident_trace(
            &charts,
            &inc,
            &ctx(window(T0 - 50.0, T0 + 90.0), &[], &active),
        )
        .expect("exports");
        let text = serde_json::to_string(&tr.labels).expect("json");
        let labels = Labels::parse(&text, Path::new("inc.labels.json")).expect("labels parse");
        assert_eq!(
            labels.anomalies,
            vec![LabelledAnomaly {
                kind: FindingKind::Nonfinite,
                start: 30.0,
                end: 90.0,
                note: "nonfinite on loss".into(),
            }]
        );
        assert_eq!(
            labels.source,
            "babysitter incident inc-1 on run run-a, exported 2023-11-14T23:00:00Z"
        );
    }

    #[test]
    fn names_that_would_not_read_back_are_left_out_and_named() {
        let mut charts = ChartSet::new();
        charts.merge(ChartKey::new(Role::Loss), [Sample::new(T0, 1.0)]);
        // A label value with a comma would split into two labels when read back.
        let odd = ChartKey::new(Role::StepTime).with_label("node", "a,b");
        charts.merge(odd.clone(), [Sample::new(T0, 1.0)]);
        let inc = Incident::new(
            "inc-2".into(),
            "r".into(),
            finding(FindingKind::LossSpike, "loss", T0, T0),
            T0,
        );
        let tr =
            incident_trace(&charts, &inc, &ctx(window(T0 - 10.0, T0), &[], &[])).expect("exports");
        assert_eq!(tr.csv, "time,loss\n0,1\n");
        assert_eq!(tr.skipped, vec![odd.to_string()]);
        assert!(
            tr.labels.description.contains("Left out"),
            "{}",
            tr.labels.description
        );
        assert!(tr.labels.description.contains("step_time{node=a,b}"));
    }

    /// A run logging every 10 s whose step stops at `hang` (rows keep coming).
    fn hung(hang: f64, end: f64) -> ChartSet {
        let mut c = ChartSet::new();
        let mut step = 0.0;
        let mut t = 0.0;
        while t <= end {
            if t < hang {
                step += 5.0;
            }
            c.merge(ChartKey::new(Role::Step), [Sample::new(T0 + t, step)]);
            c.merge(ChartKey::new(Role::Loss), [Sample::new(T0 + t, 2.0)]);
            t += 10.0;
        }
        c
    }

    #[test]
    fn anomalies_end_when_cleared_or_restarted_and_the_export_replays_to_the_same_kind() {
        let charts = hung(7200.0, 9000.0);
        let stall = finding(FindingKind::Stall, "step", T0 + 7190.0, T0 + 7500.0);
        let mut inc = Incident::new("inc-7".into(), "run-b".into(), stall.clone(), T0 + 7500.0);
        inc.state = IncidentState::Resolved;
        inc.updated_at = T0 + 8400.0;
        inc.outcome = Some("verified: progressing".into());
        let w = ExportWindow::for_incident(&inc, DEFAULT_BEFORE_SECS, T0 + 9000.0, 6.0 * 3600.0);
        assert_eq!((w.from, w.until), (T0 + 7190.0 - 10_800.0, T0 + 8400.0));
        // Recorded clearings: another chart's and an earlier condition's are not this one's.
        let cleared = [
            Clearing {
                kind: FindingKind::Stall,
                chart: "step".into(),
                onset: T0 + 10.0,
                at: T0 + 600.0,
            },
            Clearing {
                kind: FindingKind::Stall,
                chart: "step".into(),
                onset: T0 + 7190.0,
                at: T0 + 8100.0,
            },
        ];
        let tr = incident_trace(&charts, &inc, &ctx(w, &cleared, &[])).expect("exports");
        // The charts start at T0, after `from`: time 0 is the first sample.
        assert_eq!(tr.origin, T0);
        assert_eq!(tr.last, T0 + 8400.0);
        assert_eq!(
            tr.labels.anomalies,
            vec![LabelledAnomaly {
                kind: FindingKind::Stall,
                start: 7190.0,
                end: 8100.0,
                note: stall.message.clone(),
            }]
        );
        let d = &tr.labels.description;
        for needle in [
            "Incident inc-7 on run run-b (progress family)",
            "resolved",
            "Outcome: verified: progressing.",
            "time 0 is 2023-11-14T22:13:20Z",
            "remove it from `anomalies`",
        ] {
            assert!(d.contains(needle), "`{needle}` not in {d}");
        }

        // No clearing recorded, a successful restart at 7800: the anomaly ends there.
        inc.actions.push(ActionRecord {
            key: "k".into(),
            step: 0,
            attempt: 1,
            action: Action::Pause,
            decision: allowed(),
            at: T0 + 7600.0,
            ok: true,
            detail: String::new(),
        });
        inc.actions.push(ActionRecord {
            key: "k2".into(),
            step: 1,
            attempt: 1,
            action: Action::RestartFromCheckpoint {
                checkpoint: crate::act::CheckpointSelector::Latest,
            },
            decision: allowed(),
            at: T0 + 7800.0,
            ok: true,
            detail: String::new(),
        });
        let tr = incident_trace(&charts, &inc, &ctx(w, &[], &[])).expect("exports");
        assert_eq!(tr.labels.anomalies[0].end, 7800.0);
        assert!(
            tr.labels.description.contains("pause at t=7600 s (ok)"),
            "{}",
            tr.labels.description
        );

        // The trace replays offline and the scorer finds the same kind: recall 1.
        let trace = parse(&tr.csv);
        let run =
            replay(&trace, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
        let s = score(&run.findings, &tr.labels);
        let stall_score = s.strict_by_kind.get(&FindingKind::Stall).expect("scored");
        assert_eq!(stall_score.recall(), Some(1.0), "{:#?}", run.findings);
    }

    #[test]
    fn a_window_reaching_past_memory_is_clipped_and_says_so() {
        let charts = hung(1e9, 600.0);
        let inc = Incident::new(
            "inc-3".into(),
            "r".into(),
            finding(FindingKind::LossSpike, "loss", T0 + 300.0, T0 + 330.0),
            T0 + 330.0,
        );
        let w = ExportWindow {
            from: T0 - 3600.0,
            until: T0 + 600.0,
            kept_since: T0 + 100.0,
        };
        let tr = incident_trace(&charts, &inc, &ctx(w, &[], &[])).expect("exports");
        assert_eq!(tr.pruned_before, Some(T0 + 100.0));
        let note = tr.pruned_note("6h").expect("note");
        assert!(
            note.starts_with(
                "charts before 2023-11-14T22:15:00Z were already pruned (the service keeps 6h)"
            ),
            "{note}"
        );
        assert!(
            tr.labels.description.contains(&note),
            "{}",
            tr.labels.description
        );
        assert_eq!(tr.labels.anomalies[0].start, 300.0);

        // An onset older than what is kept: the anomaly starts at 0, and the description says so.
        let mut charts = charts;
        charts.prune_before(T0 + 400.0);
        let w = ExportWindow {
            kept_since: T0 + 400.0,
            ..w
        };
        let tr = incident_trace(&charts, &inc, &ctx(w, &[], &[])).expect("exports");
        assert_eq!(tr.origin, T0 + 400.0);
        assert_eq!(tr.labels.anomalies[0].start, 0.0);
        assert!(
            tr.labels.description.contains("Its onset is before time 0"),
            "{}",
            tr.labels.description
        );
    }

    #[test]
    fn a_runbook_run_by_hand_exports_with_no_anomaly_and_says_why() {
        let charts = hung(1e9, 600.0);
        let inc = Incident::manual(
            "inc-5".into(),
            "r".into(),
            crate::detect::Family::Progress,
            "alice".into(),
            T0 + 300.0,
        );
        let w = ExportWindow::for_incident(&inc, 120.0, T0 + 600.0, 3600.0);
        let tr = incident_trace(&charts, &inc, &ctx(w, &[], &[])).expect("exports");
        assert_eq!(tr.origin, T0 + 180.0);
        assert!(tr.labels.anomalies.is_empty());
        let d = &tr.labels.description;
        assert!(
            d.contains("Opened by alice running a runbook by hand"),
            "{d}"
        );
        assert!(d.contains("add the anomaly that made someone act"), "{d}");
    }

    #[test]
    fn empty_windows_are_errors_that_name_the_incident_and_run() {
        let charts = hung(1e9, 600.0);
        let inc = Incident::new(
            "inc-4".into(),
            "run-z".into(),
            finding(FindingKind::Stall, "step", T0, T0),
            T0,
        );
        let e = incident_trace(
            &charts,
            &inc,
            &ctx(window(T0 + 5000.0, T0 + 6000.0), &[], &[]),
        )
        .expect_err("nothing there");
        let msg = e.to_string();
        assert!(
            msg.contains("inc-4") && msg.contains("run-z") && msg.contains("6h"),
            "{msg}"
        );
        let e = incident_trace(&charts, &inc, &ctx(window(T0 + 10.0, T0), &[], &[]))
            .expect_err("backwards");
        assert!(matches!(e, ExportError::Window { .. }), "{e}");
        let e =
            incident_trace(&charts, &inc, &ctx(window(f64::NAN, T0), &[], &[])).expect_err("nan");
        assert!(matches!(e, ExportError::Window { .. }), "{e}");
    }

    #[test]
    fn clearings_are_read_from_audit_payloads() {
        let f = finding(FindingKind::LossSpike, "loss", T0, T0 + 30.0);
        let p = serde_json::json!({ "finding": f, "cleared_at": T0 + 90.0 });
        assert_eq!(
            Clearing::from_payload(&p),
            Some(Clearing {
                kind: FindingKind::LossSpike,
                chart: "loss".into(),
                onset: T0,
                at: T0 + 90.0
            })
        );
        // Written before `cleared_at` existed: unknown end.
        assert_eq!(
            Clearing::from_payload(&serde_json::json!({ "finding": f })),
            None
        );
        assert_eq!(Clearing::from_payload(&serde_json::json!({ "x": 1 })), None);
    }
}
