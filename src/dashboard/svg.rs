//! Charts as inline SVG, written by hand: no fonts, no system libraries, no script. Every text
//! and attribute goes through maud, which escapes it.

use maud::{Markup, html};

use crate::charts::Sample;

/// Drawing size in SVG user units (the page scales it to its column).
const W: f64 = 760.0;
const H: f64 = 170.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// A finding drawn on a chart: a band from its onset to where it was raised, and a marker there.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingMark {
    /// Clock time at which it was raised.
    pub at: f64,
    pub onset: f64,
    /// The finding kind (`loss_spike`), also the marker's `data-kind`.
    pub kind: String,
    /// One line shown as the marker's tooltip.
    pub label: String,
}

/// An action babysitter took, drawn as a dashed line.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionMark {
    pub at: f64,
    pub label: String,
    pub ok: bool,
}

/// Time → x and value → y for one chart.
#[derive(Debug, Clone, Copy)]
struct Scale {
    from: f64,
    to: f64,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.from) / (self.to - self.from) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        TOP + (self.hi - v) / (self.hi - self.lo) * (H - TOP - BOTTOM)
    }
}

/// The value range to draw: finite values only, padded so a flat line sits mid-chart.
fn value_range(samples: &[Sample]) -> Option<(f64, f64)> {
    let (lo, hi) = samples
        .iter()
        .map(|s| s.v)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        (lo.abs() * 0.1).max(1.0)
    };
    Some((lo - pad, hi + pad))
}

/// Reduces a series to at most two points per pixel column (its first-seen minimum and maximum),
/// so a spike of one sample survives. Non-finite values split the line: `None` marks a gap.
fn reduce(samples: &[Sample], scale: &Scale) -> Vec<Option<(f64, f64)>> {
    let mut out = Vec::new();
    let mut column: Option<i64> = None;
    let mut bucket: Vec<(f64, f64)> = Vec::new();
    let flush = |bucket: &mut Vec<(f64, f64)>, out: &mut Vec<Option<(f64, f64)>>| {
        if bucket.is_empty() {
            return;
        }
        let min = bucket
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.1.total_cmp(&b.1.1));
        let max = bucket
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1));
        if let (Some((i, a)), Some((j, b))) = (min, max) {
            let (first, second) = if i <= j { (a, b) } else { (b, a) };
            out.push(Some((scale.x(first.0), scale.y(first.1))));
            if i != j {
                out.push(Some((scale.x(second.0), scale.y(second.1))));
            }
        }
        bucket.clear();
    };
    for s in samples {
        if s.t < scale.from || s.t > scale.to {
            continue;
        }
        if !s.v.is_finite() {
            flush(&mut bucket, &mut out);
            out.push(None);
            column = None;
            continue;
        }
        let col = scale.x(s.t).floor() as i64;
        if column != Some(col) {
            flush(&mut bucket, &mut out);
            column = Some(col);
        }
        bucket.push((s.t, s.v));
    }
    flush(&mut bucket, &mut out);
    out
}

/// The SVG path of a reduced series (`M` starts a segment after each gap).
fn path(points: &[Option<(f64, f64)>]) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for p in points {
        match p {
            Some((x, y)) => {
                d.push_str(if pen_down { "L" } else { "M" });
                d.push_str(&format!("{x:.1},{y:.1}"));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d
}

/// A compact number for an axis label: 3 significant digits.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Clock time as `HH:MM` UTC for the time axis.
fn hhmm(t: f64) -> String {
    chrono::DateTime::from_timestamp(t.floor() as i64, 0)
        .map(|d| d.format("%H:%M").to_string())
        .unwrap_or_default()
}

/// The value at or just before `t` (for placing a marker on the line).
fn value_at(samples: &[Sample], t: f64) -> Option<f64> {
    let i = samples.partition_point(|s| s.t <= t);
    samples[..i]
        .iter()
        .rev()
        .map(|s| s.v)
        .find(|v| v.is_finite())
}

/// One chart: the series over `[from, to]`, its findings and the actions taken.
pub fn chart(
    title: &str,
    samples: &[Sample],
    from: f64,
    to: f64,
    findings: &[FindingMark],
    actions: &[ActionMark],
) -> Markup {
    let to = if to > from { to } else { from + 1.0 };
    let visible: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.t >= from && s.t <= to)
        .collect();
    let Some((lo, hi)) = value_range(&visible) else {
        return html! {
            figure.chart {
                figcaption { (title) }
                p.muted { "no finite samples in this window" }
            }
        };
    };
    let sc = Scale { from, to, lo, hi };
    let d = path(&reduce(&visible, &sc));
    let bottom = H - BOTTOM;
    let right = W - RIGHT;
    // One tick per pixel column at most for NaN / Inf samples.
    let mut nonfinite: Vec<(f64, String)> = Vec::new();
    for s in visible.iter().filter(|s| !s.v.is_finite()) {
        let x = sc.x(s.t);
        if nonfinite.last().is_none_or(|(px, _)| x - px >= 1.0) {
            nonfinite.push((x, s.v.to_string()));
        }
    }
    let mid = (from + to) / 2.0;
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label={ "chart " (title) }
                xmlns="http://www.w3.org/2000/svg" {
                rect.plot x=(LEFT) y=(TOP) width=(right - LEFT) height=(bottom - TOP) {}
                @for f in [0.0, 0.5, 1.0] {
                    @let v = lo + (hi - lo) * f;
                    line.grid x1=(LEFT) x2=(right) y1=(format!("{:.1}", sc.y(v))) y2=(format!("{:.1}", sc.y(v))) {}
                    text.axis x=(LEFT - 6.0) y=(format!("{:.1}", sc.y(v) + 4.0)) text-anchor="end" { (fmt_num(v)) }
                }
                text.axis x=(LEFT) y=(H - 8.0) text-anchor="start" { (hhmm(from)) }
                text.axis x=(format!("{:.1}", sc.x(mid))) y=(H - 8.0) text-anchor="middle" { (hhmm(mid)) }
                text.axis x=(right) y=(H - 8.0) text-anchor="end" { (hhmm(to)) " UTC" }
                @for f in findings.iter().filter(|f| f.at >= from && f.at <= to) {
                    @let x0 = sc.x(f.onset.clamp(from, to));
                    @let x1 = sc.x(f.at);
                    @let y = value_at(&visible, f.at).map_or(TOP + 6.0, |v| sc.y(v));
                    g.finding-marker data-kind=(f.kind) {
                        title { (f.label) }
                        rect.onset x=(format!("{x0:.1}")) y=(TOP) width=(format!("{:.1}", (x1 - x0).max(1.0))) height=(bottom - TOP) {}
                        line.raised x1=(format!("{x1:.1}")) x2=(format!("{x1:.1}")) y1=(TOP) y2=(bottom) {}
                        circle cx=(format!("{x1:.1}")) cy=(format!("{y:.1}")) r="5" {}
                    }
                }
                @for a in actions.iter().filter(|a| a.at >= from && a.at <= to) {
                    @let x = sc.x(a.at);
                    g.action-marker.failed[!a.ok] {
                        title { (a.label) }
                        line x1=(format!("{x:.1}")) x2=(format!("{x:.1}")) y1=(TOP) y2=(bottom) {}
                    }
                }
                path.series d=(d) {}
                @for (x, v) in &nonfinite {
                    g.nonfinite {
                        title { (v) }
                        line x1=(format!("{x:.1}")) x2=(format!("{x:.1}")) y1=(TOP) y2=(TOP + 10.0) {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<Sample> {
        (0..n).map(|i| Sample::new(i as f64, i as f64)).collect()
    }

    #[test]
    fn draws_the_series_inside_the_plot_area() {
        let svg = chart("loss", &ramp(11), 0.0, 10.0, &[], &[]).into_string();
        // First sample at the left edge and the bottom of the padded range, last at the right.
        assert!(svg.contains(r#"d="M62.0,"#), "{svg}");
        assert!(svg.contains(&format!("L{:.1},", W - RIGHT)), "{svg}");
        assert!(svg.contains(">loss</figcaption>"));
        assert!(!svg.contains("finding-marker"));
    }

    #[test]
    fn marks_a_finding_where_it_was_raised() {
        let f = FindingMark {
            at: 5.0,
            onset: 3.0,
            kind: "loss_spike".into(),
            label: "loss_spike: 9 > 4".into(),
        };
        let svg = chart("loss", &ramp(11), 0.0, 10.0, &[f], &[]).into_string();
        let sc = Scale {
            from: 0.0,
            to: 10.0,
            lo: 0.0,
            hi: 1.0,
        };
        assert!(svg.contains(r#"class="finding-marker" data-kind="loss_spike""#));
        assert!(svg.contains(&format!(r#"cx="{:.1}""#, sc.x(5.0))), "{svg}");
        assert!(svg.contains("<title>loss_spike: 9 &gt; 4</title>"));
    }

    #[test]
    fn findings_outside_the_window_are_not_drawn() {
        let f = FindingMark {
            at: 50.0,
            onset: 40.0,
            kind: "stall".into(),
            label: "x".into(),
        };
        let svg = chart("step", &ramp(11), 0.0, 10.0, &[f], &[]).into_string();
        assert!(!svg.contains("finding-marker"));
    }

    #[test]
    fn nonfinite_values_break_the_line_and_get_a_tick() {
        let mut s = ramp(5);
        s[2].v = f64::NAN;
        let svg = chart("loss", &s, 0.0, 4.0, &[], &[]).into_string();
        let d = svg.split(r#"d=""#).nth(1).unwrap();
        assert_eq!(d.split('"').next().unwrap().matches('M').count(), 2);
        assert!(svg.contains("<title>NaN</title>"));
    }

    #[test]
    fn one_spike_survives_downsampling() {
        let mut s: Vec<Sample> = (0..20_000).map(|i| Sample::new(i as f64, 1.0)).collect();
        s[12_345].v = 100.0;
        let sc = Scale {
            from: 0.0,
            to: 20_000.0,
            lo: 0.0,
            hi: 101.0,
        };
        let pts = reduce(&s, &sc);
        assert!(pts.len() < 2 * (W as usize));
        let top = pts
            .iter()
            .flatten()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min);
        assert!((top - sc.y(100.0)).abs() < 1e-9);
    }

    #[test]
    fn labels_are_escaped() {
        let f = FindingMark {
            at: 1.0,
            onset: 1.0,
            kind: "\"><script>".into(),
            label: "<script>alert(1)</script>".into(),
        };
        let svg = chart("<b>", &ramp(3), 0.0, 2.0, &[f], &[]).into_string();
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn a_flat_or_empty_series_still_draws() {
        let flat: Vec<Sample> = (0..5).map(|i| Sample::new(i as f64, 2.0)).collect();
        assert!(value_range(&flat).is_some_and(|(lo, hi)| lo < 2.0 && hi > 2.0));
        let none = [Sample::new(0.0, f64::NAN)];
        let svg = chart("loss", &none, 0.0, 1.0, &[], &[]).into_string();
        assert!(svg.contains("no finite samples"));
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(fmt_num(1234.5), "1234");
        assert_eq!(fmt_num(2.345), "2.35");
        assert_eq!(fmt_num(0.00001), "1.00e-5");
        assert_eq!(fmt_num(0.0), "0.000");
    }
}
