//! Metric traces (FORMATS.md §1): a CSV with a `time` column and one column per chart.
//!
//! Parsing is strict about structure and lenient about content, like the format: a header
//! that is not `time,...`, a row with the wrong number of cells, a cell that is not a number or
//! time going backwards are errors that name the file, line and column; empty cells are "no
//! sample", `NaN`/`Inf`/`-Inf` are values, and columns whose name is not a chart role are kept
//! out of the charts (listed in [`Trace::ignored`]).

use std::path::{Path, PathBuf};

use crate::charts::{ChartError, ChartKey, ChartSet, Sample};

/// Why a trace could not be read. Every variant names the file; row errors name the line
/// (1-based, the header is line 1) and the column (1-based field number and its header name).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: empty file (expected a header `time,<chart>,...`)")]
    Empty { path: PathBuf },
    #[error("{path}:1: column {column}: {reason}")]
    Header {
        path: PathBuf,
        column: usize,
        reason: String,
    },
    #[error("{path}:{line}: column {column} (`{name}`): {reason}")]
    Cell {
        path: PathBuf,
        line: usize,
        column: usize,
        name: String,
        reason: String,
    },
    #[error("{path}:{line}: {reason}")]
    Row {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One training run's charts, as read from a trace file.
#[derive(Debug, Clone)]
pub struct Trace {
    pub path: PathBuf,
    pub charts: ChartSet,
    /// Header names that are not chart roles (allowed by the format, ignored by detectors).
    pub ignored: Vec<String>,
    /// Time of the first and last row (0 for a trace without rows).
    pub start: f64,
    pub end: f64,
    /// Number of data rows.
    pub rows: usize,
    /// Median spacing between consecutive distinct row times (the trace's sampling cadence), if
    /// the trace has at least two distinct times.
    pub cadence: Option<f64>,
}

impl Trace {
    /// Reads and parses a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Trace::parse(&text, path)
    }

    /// Parses trace text; `path` is only used in error messages and kept in the result.
    pub fn parse(text: &str, path: &Path) -> Result<Trace, TraceError> {
        let path_buf = path.to_path_buf();
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
        let header = loop {
            match lines.next() {
                None => return Err(TraceError::Empty { path: path_buf }),
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((_, l)) => break l.strip_prefix('\u{feff}').unwrap_or(l),
            }
        };
        let header_err = |column: usize, reason: String| TraceError::Header {
            path: path_buf.clone(),
            column,
            reason,
        };
        let names: Vec<String> = split_cells(header)
            .into_iter()
            .map(|c| c.trim().to_string())
            .collect();
        if names.first().map(String::as_str) != Some("time") {
            return Err(header_err(
                1,
                format!(
                    "the first column must be `time`, found `{}`",
                    names.first().map(String::as_str).unwrap_or("")
                ),
            ));
        }
        let mut columns: Vec<Option<ChartKey>> = Vec::with_capacity(names.len());
        let mut ignored = Vec::new();
        columns.push(None);
        for (i, name) in names.iter().enumerate().skip(1) {
            if name.is_empty() {
                return Err(header_err(i + 1, "empty column name".into()));
            }
            match name.parse::<ChartKey>() {
                Ok(key) => {
                    if columns.iter().flatten().any(|k| *k == key) {
                        return Err(header_err(i + 1, format!("chart `{key}` appears twice")));
                    }
                    columns.push(Some(key));
                }
                Err(ChartError::UnknownRole(_)) => {
                    ignored.push(name.clone());
                    columns.push(None);
                }
                Err(e @ ChartError::Malformed(_)) => return Err(header_err(i + 1, e.to_string())),
            }
        }

        let mut charts = ChartSet::new();
        let mut times: Vec<f64> = Vec::new();
        for (line, raw) in lines {
            if raw.trim().is_empty() {
                continue;
            }
            let cells = split_cells(raw);
            if cells.len() != names.len() {
                return Err(TraceError::Row {
                    path: path_buf.clone(),
                    line,
                    reason: format!(
                        "{} cells, but the header has {} columns",
                        cells.len(),
                        names.len()
                    ),
                });
            }
            let cell_err = |column: usize, reason: String| TraceError::Cell {
                path: path_buf.clone(),
                line,
                column: column + 1,
                name: names[column].clone(),
                reason,
            };
            let t_raw = cells[0].trim();
            let t: f64 = t_raw
                .parse()
                .map_err(|_| cell_err(0, format!("`{t_raw}` is not a number")))?;
            if !t.is_finite() {
                return Err(cell_err(0, format!("time must be finite, got `{t_raw}`")));
            }
            if let Some(&prev) = times.last()
                && t < prev
            {
                return Err(cell_err(
                    0,
                    format!(
                        "time {t} is before the previous row's {prev}: rows must be sorted by time"
                    ),
                ));
            }
            for (i, cell) in cells.iter().enumerate().skip(1) {
                let Some(key) = &columns[i] else { continue };
                let cell = cell.trim();
                if cell.is_empty() {
                    continue;
                }
                let v: f64 = cell
                    .parse()
                    .map_err(|_| cell_err(i, format!("`{cell}` is not a number")))?;
                charts.merge(key.clone(), [Sample::new(t, v)]);
            }
            times.push(t);
        }
        let cadence = cadence(&times);
        Ok(Trace {
            path: path_buf,
            charts,
            ignored,
            start: times.first().copied().unwrap_or(0.0),
            end: times.last().copied().unwrap_or(0.0),
            rows: times.len(),
            cadence,
        })
    }

    /// Length of the run in seconds (last row minus first row).
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

/// Median positive spacing between consecutive sorted times.
fn cadence(times: &[f64]) -> Option<f64> {
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    Some(gaps[gaps.len() / 2])
}

/// Splits one CSV line into cells. Commas inside `{...}` (chart labels) or inside double quotes
/// do not split; surrounding double quotes are removed (`""` inside quotes is a quote).
fn split_cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '{' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            '}' if !quoted => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if !quoted && depth == 0 => cells.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    cells.push(cur);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::Role;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        Trace::parse(text, Path::new("t.csv"))
    }

    #[test]
    fn reads_charts_labels_gaps_and_nonfinite_values() {
        let t = parse(
            "time,loss,step_time{rank=3,node=a},progress_pct,grad_norm\n\
             0,2.5,1.0,0.1,\n\
             30,NaN,,0.2,Inf\n\
             60,-Inf,1.5,0.3,1.0\n",
        )
        .expect("parses");
        assert_eq!(
            (t.rows, t.start, t.end, t.cadence),
            (3, 0.0, 60.0, Some(30.0))
        );
        assert_eq!(t.ignored, vec!["progress_pct".to_string()]);
        let loss = t.charts.get(Role::Loss).expect("loss");
        assert_eq!(loss.len(), 3);
        assert!(loss.samples()[1].v.is_nan());
        assert_eq!(loss.samples()[2].v, f64::NEG_INFINITY);
        let key: ChartKey = "step_time{node=a,rank=3}".parse().expect("key");
        let st = t.charts.get_key(&key).expect("labelled chart");
        assert_eq!(
            st.samples().iter().map(|s| s.t).collect::<Vec<_>>(),
            vec![0.0, 60.0]
        );
        let g = t.charts.get(Role::GradNorm).expect("grad_norm");
        assert_eq!(g.samples()[0], Sample::new(30.0, f64::INFINITY));
    }

    #[test]
    fn broken_files_name_file_line_and_column() {
        let e = parse("").expect_err("empty").to_string();
        assert_eq!(
            e,
            "t.csv: empty file (expected a header `time,<chart>,...`)"
        );
        let e = parse("t,loss\n0,1\n").expect_err("bad header").to_string();
        assert_eq!(
            e,
            "t.csv:1: column 1: the first column must be `time`, found `t`"
        );
        let e = parse("time,loss,loss\n").expect_err("dup").to_string();
        assert_eq!(e, "t.csv:1: column 3: chart `loss` appears twice");
        let e = parse("time,loss{rank\n")
            .expect_err("malformed")
            .to_string();
        assert!(
            e.starts_with("t.csv:1: column 2: malformed chart name"),
            "{e}"
        );
        let e = parse("time,loss\n0,1\n30,abc\n")
            .expect_err("bad cell")
            .to_string();
        assert_eq!(e, "t.csv:3: column 2 (`loss`): `abc` is not a number");
        let e = parse("time,loss\n0,1\n30,1,2\n")
            .expect_err("extra cell")
            .to_string();
        assert_eq!(e, "t.csv:3: 3 cells, but the header has 2 columns");
        let e = parse("time,loss\n30,1\n\n0,1\n")
            .expect_err("backwards")
            .to_string();
        assert_eq!(
            e,
            "t.csv:4: column 1 (`time`): time 0 is before the previous row's 30: rows must be sorted by time"
        );
        let e = parse("time,loss\nNaN,1\n")
            .expect_err("nan time")
            .to_string();
        assert_eq!(
            e,
            "t.csv:2: column 1 (`time`): time must be finite, got `NaN`"
        );
        let e = Trace::load(Path::new("/nonexistent/x.csv"))
            .expect_err("missing")
            .to_string();
        assert!(e.starts_with("/nonexistent/x.csv: "), "{e}");
    }

    #[test]
    fn header_only_bom_crlf_and_quotes() {
        let t = parse("\u{feff}time,loss\r\n").expect("header only");
        assert_eq!((t.rows, t.cadence), (0, None));
        assert!(t.charts.is_empty());
        let t = parse("time,\"step_time{rank=1,node=b}\"\r\n0,\"2\"\r\n").expect("quoted");
        let key: ChartKey = "step_time{node=b,rank=1}".parse().expect("key");
        assert_eq!(t.charts.get_key(&key).map(|s| s.len()), Some(1));
    }
}
