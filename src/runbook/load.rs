//! Loading runbook files: split the front matter from the Markdown, parse the YAML into typed
//! values, check what types cannot say, and report every error as `file:line: message`.
//!
//! The YAML is deserialized with serde-saphyr, whose errors and [`Spanned`] values carry the
//! line inside the front matter; the front matter starts on line 2 of the file, so every YAML
//! line is shifted by the lines before it. When an error carries no location, the line of the
//! offending key is found by scanning the front matter text.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::{RenderOptions, SnippetMode, Spanned};
use sha2::{Digest, Sha256};

use super::checks::{ChartCondition, ChartProbe, Check, Cmp, Outcome, Reduce, parse_promql};
use super::{Runbook, RunbookSet, RunbookStep, Triggers, When};
use crate::act::{Action, ActionKind, ChangeOp, CheckpointSelector, ConfigChange};
use crate::charts::Role;
use crate::detect::{FindingKind, Severity};
use crate::verify::VerifySpec;

/// One problem in one runbook file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunbookError {
    /// A problem at a line of a file (lines start at 1).
    #[error("{path}:{line}: {message}")]
    At {
        path: String,
        line: usize,
        message: String,
    },
    /// A file or folder that could not be read.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl RunbookError {
    fn at(path: &str, line: usize, message: impl Into<String>) -> RunbookError {
        RunbookError::At {
            path: path.to_string(),
            line: line.max(1),
            message: message.into(),
        }
    }
}

/// Every error found while loading a set of runbooks, in file order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookErrors(pub Vec<RunbookError>);

impl RunbookErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, RunbookError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for RunbookErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunbookErrors {}

/// The front matter as written. Parameters of every action are flat optional fields of a
/// step (not a serde-tagged enum): serde buffers tagged enums and loses the YAML location, and
/// flat fields let one step report all of its problems at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrontMatter {
    id: Spanned<String>,
    title: Spanned<String>,
    triggers: Spanned<RawTriggers>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    checks: Option<Spanned<Vec<Spanned<RawCheck>>>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
    verify: Spanned<VerifySpec>,
    #[serde(default)]
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    escalate: Option<RawEscalate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    kinds: Vec<FindingKind>,
    #[serde(default)]
    min_severity: Option<Severity>,
    #[serde(default)]
    charts: Vec<Spanned<RawCondition>>,
}

/// `{chart: grad_norm, reduce: max, over: 10m, op: ">", threshold: 100}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    chart: Role,
    #[serde(default)]
    reduce: Option<Reduce>,
    #[serde(default, with = "crate::config::opt_duration")]
    over: Option<Duration>,
    op: Cmp,
    threshold: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    promql: Spanned<String>,
    op: Cmp,
    threshold: Spanned<f64>,
    #[serde(default)]
    chart: Option<Role>,
    #[serde(default)]
    reduce: Option<Spanned<Reduce>>,
    #[serde(default, with = "crate::config::opt_duration")]
    over: Option<Duration>,
    #[serde(default)]
    unknown_as: Option<bool>,
}

/// `when: {check: ID, is: true}` (or `is: [false, unknown]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    check: String,
    is: RawOutcomes,
}

/// One outcome or a list: `true`, `false`, `unknown`.
struct RawOutcomes(Vec<Outcome>);

impl<'de> Deserialize<'de> for RawOutcomes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "`true`, `false`, `unknown` or a list of them";
        fn word<E: de::Error>(v: &str) -> Result<Outcome, E> {
            match v {
                "true" => Ok(Outcome::True),
                "false" => Ok(Outcome::False),
                "unknown" => Ok(Outcome::Unknown),
                other => Err(E::custom(format!(
                    "unknown outcome `{other}`: expected {EXPECTED}"
                ))),
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawOutcomes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawOutcomes, E> {
                Ok(RawOutcomes(vec![if v {
                    Outcome::True
                } else {
                    Outcome::False
                }]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawOutcomes, E> {
                word(v).map(|o| RawOutcomes(vec![o]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawOutcomes, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<serde_json::Value>()? {
                    let o = match &v {
                        serde_json::Value::Bool(true) => Outcome::True,
                        serde_json::Value::Bool(false) => Outcome::False,
                        serde_json::Value::String(s) => word(s)?,
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown outcome `{other}`: expected {EXPECTED}"
                            )));
                        }
                    };
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
                Ok(RawOutcomes(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalate {
    severity: Severity,
    #[serde(default)]
    route: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    action: Spanned<ActionKind>,
    #[serde(default)]
    changes: Option<Spanned<Vec<Spanned<RawChange>>>>,
    #[serde(default)]
    checkpoint: Option<Spanned<RawCheckpoint>>,
    #[serde(default)]
    severity: Option<Spanned<Severity>>,
    #[serde(default)]
    summary: Option<Spanned<String>>,
    #[serde(default)]
    note: Option<Spanned<String>>,
    #[serde(default)]
    approval: Option<Spanned<Approval>>,
    #[serde(default)]
    when: Option<Spanned<RawWhen>>,
    #[serde(default)]
    stop: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChange {
    key: String,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    set: Option<serde_json::Value>,
}

/// Who decides whether a step runs without a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Approval {
    /// A human must approve the step, whatever the policy mode.
    Required,
    /// The policy gate decides (the default).
    Policy,
}

/// `latest`, `before_onset` or a step number.
struct RawCheckpoint(CheckpointSelector);

impl<'de> Deserialize<'de> for RawCheckpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "`latest`, `before_onset` or a step number";
        impl Visitor<'_> for V {
            type Value = RawCheckpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawCheckpoint, E> {
                Ok(RawCheckpoint(CheckpointSelector::Step(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawCheckpoint, E> {
                u64::try_from(v)
                    .map(|s| RawCheckpoint(CheckpointSelector::Step(s)))
                    .map_err(|_| E::custom(format!("checkpoint {v}: expected {EXPECTED}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCheckpoint, E> {
                match v {
                    "latest" => Ok(RawCheckpoint(CheckpointSelector::Latest)),
                    "before_onset" => Ok(RawCheckpoint(CheckpointSelector::BeforeOnset)),
                    other => Err(E::custom(format!(
                        "unknown checkpoint `{other}`: expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the front matter sits in a file.
struct Split<'a> {
    /// The YAML between the two `---` lines.
    yaml: &'a str,
    /// File line of the YAML's first line, minus one: YAML line `l` is file line `l + offset`.
    offset: usize,
    /// File line of the closing `---`.
    close_line: usize,
    /// The Markdown after the closing `---`.
    body: &'a str,
}

fn is_fence(line: &str) -> bool {
    line.trim_end() == "---"
}

/// Splits `---\nYAML\n---\nMarkdown`. Errors point at line 1 (where the fence is missing or
/// opened).
fn split_front_matter(text: &str) -> Result<Split<'_>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if !is_fence(first) {
        return Err((
            1,
            "missing front matter: a runbook starts with a `---` line, then the YAML front \
             matter, then a closing `---` line, then the Markdown"
                .into(),
        ));
    }
    let yaml_start = first.len();
    let mut pos = yaml_start;
    for (i, line) in lines.enumerate() {
        if is_fence(line) {
            return Ok(Split {
                yaml: &text[yaml_start..pos],
                offset: 1,
                close_line: i + 2,
                body: &text[pos + line.len()..],
            });
        }
        pos += line.len();
    }
    Err((
        1,
        "the front matter opened on line 1 is never closed: add a `---` line after the YAML".into(),
    ))
}

/// The first line (1-based, inside `yaml`) at or after `from` whose key is `key`
/// (`key:` after indentation and an optional `- `).
fn find_key_line(yaml: &str, from: usize, key: &str) -> Option<usize> {
    yaml.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, line)| {
            let t = line.trim_start();
            let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
            let rest = t
                .strip_prefix(key)
                .or_else(|| t.strip_prefix(&format!("\"{key}\"")))?;
            rest.trim_start().starts_with(':').then_some(i + 1)
        })
}

/// The message of a saphyr error without its location suffix, and its line in the YAML.
fn yaml_error(err: &serde_saphyr::Error, yaml: &str) -> (usize, String) {
    let mut opts = RenderOptions::default();
    opts.snippets = SnippetMode::Off;
    let rendered = err.without_snippet().render_with_options(opts);
    let mut message = match rendered.rsplit_once(" at line ") {
        Some((msg, loc))
            if loc
                .split(", column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            msg.to_string()
        }
        _ => rendered,
    };
    // Advice meant for the programmer calling serde-saphyr, not for the runbook author.
    if let Some((msg, _)) = message.split_once(", set DuplicateKeyPolicy") {
        message = match msg.strip_prefix("duplicate mapping key:") {
            Some(key) => format!("duplicate key `{}`", key.trim()),
            None => msg.to_string(),
        };
    }
    let line = err
        .location()
        .map(|l| l.line() as usize)
        .filter(|&l| l > 0)
        .map(|l| {
            if message.starts_with("missing field") {
                // serde-saphyr points at the last key of the mapping that lacks the field;
                // the author wants the mapping itself.
                mapping_start(yaml, l)
            } else {
                l
            }
        })
        .or_else(|| {
            // No location: look for the key the message names in backquotes.
            let name = message.split('`').nth(1)?;
            find_key_line(yaml, 1, name)
        })
        .unwrap_or(1);
    // Syntax and type errors like "invalid u32" name no field: quote the line.
    if !message.contains('`')
        && let Some(text) = yaml.lines().nth(line - 1).map(str::trim)
        && !text.is_empty()
    {
        let message_head = match message.as_str() {
            m if m.starts_with("invalid i") || m.starts_with("invalid u") => {
                "expected a whole number".to_string()
            }
            "invalid floating point" => "expected a number".to_string(),
            m => m.to_string(),
        };
        message = format!("{message_head} (near `{text}`)");
    }
    (line, message)
}

/// Leading spaces plus any `- ` sequence markers: the column where a line's mapping content starts.
fn content_indent(line: &str) -> (usize, bool) {
    let mut rest = line;
    let mut indent = 0;
    let mut item = false;
    loop {
        let trimmed = rest.trim_start_matches(' ');
        indent += rest.len() - trimmed.len();
        match trimmed.strip_prefix("- ") {
            Some(r) => {
                indent += 2;
                item = true;
                rest = r;
            }
            None => return (indent, item),
        }
    }
}

/// The line where the block mapping containing YAML line `line` starts: its `- ` item line, or
/// the key that owns it; line 1 for the top level. A flow mapping (`{…}`) is its own line.
fn mapping_start(yaml: &str, line: usize) -> usize {
    let lines: Vec<&str> = yaml.lines().collect();
    let Some(here) = lines.get(line - 1) else {
        return line;
    };
    if here.contains('{') {
        return line;
    }
    let (indent, item) = content_indent(here);
    if item || indent == 0 {
        return if indent == 0 { 1 } else { line };
    }
    for k in (1..line).rev() {
        let text = lines[k - 1];
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (ind, item) = content_indent(text);
        if ind < indent || (ind == indent && item) {
            return k;
        }
    }
    1
}

fn spanned_line<T>(s: &Spanned<T>) -> usize {
    s.referenced.line() as usize
}

/// Collects the errors of one file, translating YAML lines to file lines.
struct FileErrors<'a> {
    path: &'a str,
    yaml: &'a str,
    offset: usize,
    errors: Vec<RunbookError>,
}

impl FileErrors<'_> {
    /// An error at a YAML line; a missing (0) line falls back to the line of `key`, if given.
    fn push(&mut self, yaml_line: usize, key: Option<&str>, message: impl Into<String>) {
        let line = if yaml_line > 0 {
            yaml_line
        } else {
            key.and_then(|k| find_key_line(self.yaml, 1, k))
                .unwrap_or(0)
        };
        // Line 0 of the YAML is the opening `---` (file line 1): never report line 0.
        let file_line = if line == 0 { 1 } else { line + self.offset };
        self.errors
            .push(RunbookError::at(self.path, file_line, message));
    }
}

/// Parses one runbook file; on failure returns every error found in it.
pub(super) fn parse_file(path: &str, text: &str) -> Result<Runbook, Vec<RunbookError>> {
    let split = match split_front_matter(text) {
        Ok(s) => s,
        Err((line, msg)) => return Err(vec![RunbookError::at(path, line, msg)]),
    };
    if split.yaml.trim().is_empty() {
        return Err(vec![RunbookError::at(
            path,
            1,
            "the front matter is empty: it needs at least id, title, triggers, steps and verify",
        )]);
    }
    let mut errs = FileErrors {
        path,
        yaml: split.yaml,
        offset: split.offset,
        errors: Vec::new(),
    };
    let raw: RawFrontMatter = match serde_saphyr::from_str(split.yaml) {
        Ok(raw) => raw,
        Err(e) => {
            // The YAML parser stops at its first error: report it and nothing else of this file.
            let (line, message) = yaml_error(&e, split.yaml);
            errs.push(line, None, message);
            return Err(errs.errors);
        }
    };

    // id: equal to the file stem, and not the reserved `none`.
    let stem = Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let id = raw.id.value.trim().to_string();
    if id != stem {
        errs.push(
            spanned_line(&raw.id),
            Some("id"),
            format!("id `{id}` does not match the file name: it must be `{stem}`"),
        );
    } else if id == super::NO_RUNBOOK_ID {
        errs.push(
            spanned_line(&raw.id),
            Some("id"),
            format!("id `{id}` is reserved for \"no runbook matched\": rename the file and the id"),
        );
    }
    let title = raw.title.value.trim().to_string();
    if title.is_empty() {
        errs.push(spanned_line(&raw.title), Some("title"), "title is empty");
    }

    if raw.triggers.value.kinds.is_empty() {
        let line = find_key_line(split.yaml, spanned_line(&raw.triggers).max(1), "kinds")
            .unwrap_or(spanned_line(&raw.triggers));
        errs.push(
            line,
            Some("triggers"),
            "no triggers: `triggers.kinds` must name at least one finding kind",
        );
    }
    let mut conditions = Vec::new();
    for c in raw.triggers.value.charts {
        let line = spanned_line(&c);
        let c = c.value;
        if !c.threshold.is_finite() {
            errs.push(
                line,
                Some("charts"),
                format!(
                    "trigger condition on `{}`: threshold must be a finite number",
                    c.chart
                ),
            );
        }
        conditions.push(ChartCondition {
            probe: ChartProbe {
                chart: c.chart,
                reduce: c.reduce.unwrap_or_default(),
                over: c.over.unwrap_or(DEFAULT_OVER),
            },
            op: c.op,
            threshold: c.threshold,
        });
    }
    let triggers = Triggers {
        kinds: raw.triggers.value.kinds,
        min_severity: raw.triggers.value.min_severity,
        charts: conditions,
    };

    let checks = convert_checks(raw.checks, &mut errs);

    if raw.steps.value.is_empty() {
        errs.push(
            spanned_line(&raw.steps),
            Some("steps"),
            "no steps: a runbook needs at least one step",
        );
    }
    let mut steps = Vec::with_capacity(raw.steps.value.len());
    // (step number, line, when, stop) of every step, for reachability.
    let mut shapes: Vec<(usize, usize, Option<When>, bool)> = Vec::new();
    for (i, step) in raw.steps.value.into_iter().enumerate() {
        let n = i + 1;
        let line = spanned_line(&step);
        let when = step
            .value
            .when
            .as_ref()
            .and_then(|w| convert_when(n, w, &checks, &mut errs));
        let stop = match &step.value.stop {
            Some(s) if s.value && step.value.action.value != ActionKind::Page => {
                errs.push(
                    spanned_line(s),
                    Some("stop"),
                    format!(
                        "step {n}: `stop` ends the plan after a page that hands the run to a \
                         human; `{}` is not a page",
                        step.value.action.value
                    ),
                );
                false
            }
            Some(s) => s.value,
            None => false,
        };
        shapes.push((n, line, when.clone(), stop));
        if let Some(s) = convert_step(n, step, &mut errs) {
            steps.push(RunbookStep {
                action: s.0,
                requires_approval: s.1,
                when,
                stop,
            });
        }
    }
    check_reachability(&shapes, &mut errs);

    let verify_line = spanned_line(&raw.verify);
    let verify = raw.verify.value;
    if verify.within == Duration::ZERO {
        let line = find_key_line(split.yaml, verify_line.max(1), "within").unwrap_or(verify_line);
        errs.push(
            line,
            Some("verify"),
            "verify.within must be longer than 0: how long may recovery take?",
        );
    }
    if verify.settle.is_some_and(|s| s >= verify.within) && verify.within != Duration::ZERO {
        let line = find_key_line(split.yaml, verify_line.max(1), "settle").unwrap_or(verify_line);
        errs.push(
            line,
            Some("verify"),
            "verify.settle must be shorter than verify.within",
        );
    }
    if verify.expect.is_empty() {
        let line = find_key_line(split.yaml, verify_line.max(1), "expect").unwrap_or(verify_line);
        errs.push(
            line,
            Some("verify"),
            "verify.expect is empty: name at least one expectation (e.g. progress)",
        );
    }

    let max_attempts = match raw.max_attempts {
        None => 1,
        Some(m) if m.value == 0 => {
            errs.push(
                spanned_line(&m),
                Some("max_attempts"),
                "max_attempts must be at least 1 (the steps run at least once)",
            );
            0
        }
        Some(m) => m.value,
    };

    if split.body.trim().is_empty() {
        errs.errors.push(RunbookError::at(
            path,
            split.close_line,
            "the Markdown body after the front matter is empty: write what the human on call \
             should look at and do",
        ));
    }

    let mut escalation_route_line = 0;
    let (escalation_severity, escalation_route) = match raw.escalate {
        None => (Severity::Critical, None),
        Some(e) => {
            let route = e.route.and_then(|r| {
                escalation_route_line = match spanned_line(&r) {
                    0 => find_key_line(split.yaml, 1, "route").unwrap_or(0),
                    l => l,
                } + split.offset;
                let name = r.value.trim().to_string();
                if name.is_empty() {
                    errs.push(
                        spanned_line(&r),
                        Some("route"),
                        "escalate.route is empty: name an on-call route or remove it",
                    );
                    None
                } else {
                    Some(name)
                }
            });
            (e.severity, route)
        }
    };

    if !errs.errors.is_empty() {
        // In file order, so an author fixes them top to bottom (stable: same line keeps order).
        errs.errors.sort_by_key(|e| match e {
            RunbookError::At { line, .. } => *line,
            RunbookError::Io { .. } => 0,
        });
        return Err(errs.errors);
    }
    Ok(Runbook {
        id,
        title,
        path: path.to_string(),
        body: split.body.to_string(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        triggers,
        priority: raw.priority,
        checks,
        steps,
        verify,
        max_attempts,
        escalation_severity,
        escalation_route,
        escalation_route_line,
    })
}

/// The window of a chart probe that names none.
const DEFAULT_OVER: Duration = Duration::from_secs(600);

/// Turns the `checks` list into [`Check`]s: unique ids, PromQL that parses, chart parameters
/// only with a chart.
fn convert_checks(
    raw: Option<Spanned<Vec<Spanned<RawCheck>>>>,
    errs: &mut FileErrors<'_>,
) -> Vec<Check> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut out: Vec<Check> = Vec::new();
    for c in raw.value {
        let line = spanned_line(&c);
        let c = c.value;
        let id = c.id.value.trim().to_string();
        let id_line = match spanned_line(&c.id) {
            0 => line,
            l => l,
        };
        if id.is_empty() {
            errs.push(id_line, Some("id"), "a check has an empty `id`");
            continue;
        }
        if out.iter().any(|o| o.id == id) {
            errs.push(id_line, Some("id"), format!("duplicate check id `{id}`"));
            continue;
        }
        let promql_line = match spanned_line(&c.promql) {
            0 => line,
            l => l,
        };
        if let Err(e) = parse_promql(c.promql.value.trim()) {
            let first = e.lines().next().unwrap_or("").trim().to_string();
            errs.push(
                promql_line,
                Some("promql"),
                format!("check `{id}`: the PromQL does not parse: {first}"),
            );
        }
        if !c.threshold.value.is_finite() {
            errs.push(
                spanned_line(&c.threshold),
                Some("threshold"),
                format!("check `{id}`: threshold must be a finite number"),
            );
        }
        if c.chart.is_none() {
            if let Some(r) = &c.reduce {
                errs.push(
                    spanned_line(r),
                    Some("reduce"),
                    format!("check `{id}`: `reduce` needs `chart` (which chart does it reduce?)"),
                );
            }
            if c.over.is_some() {
                errs.push(
                    find_key_line(errs.yaml, line.max(1), "over").unwrap_or(line),
                    Some("over"),
                    format!("check `{id}`: `over` needs `chart` (which chart does it look at?)"),
                );
            }
        }
        out.push(Check {
            id,
            description: c.description.unwrap_or_default().trim().to_string(),
            promql: c.promql.value.trim().to_string(),
            op: c.op,
            threshold: c.threshold.value,
            chart: c.chart.map(|chart| ChartProbe {
                chart,
                reduce: c.reduce.map(|r| r.value).unwrap_or_default(),
                over: c.over.unwrap_or(DEFAULT_OVER),
            }),
            unknown_as: c.unknown_as,
        });
    }
    out
}

/// Checks a step's `when` against the checks: it must name one, and an outcome it can produce.
fn convert_when(
    n: usize,
    w: &Spanned<RawWhen>,
    checks: &[Check],
    errs: &mut FileErrors<'_>,
) -> Option<When> {
    let line = spanned_line(w);
    let name = w.value.check.trim();
    let Some(check) = checks.iter().find(|c| c.id == name) else {
        let known = if checks.is_empty() {
            "this runbook defines no checks".to_string()
        } else {
            let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
            format!("checks: {}", ids.join(", "))
        };
        errs.push(
            line,
            Some("when"),
            format!("step {n}: `when` names an undefined check `{name}` ({known})"),
        );
        return None;
    };
    let is = &w.value.is.0;
    if is.is_empty() {
        errs.push(
            line,
            Some("when"),
            format!("step {n}: `when.is` is empty: the step can never run"),
        );
        return None;
    }
    let possible = check.possible();
    let impossible: Vec<&Outcome> = is.iter().filter(|o| !possible.contains(o)).collect();
    if !impossible.is_empty() && impossible.len() == is.len() {
        errs.push(
            line,
            Some("when"),
            format!(
                "step {n} is unreachable: check `{name}` never yields unknown (it has \
                 `unknown_as: {}`)",
                check.unknown_as.unwrap_or(false)
            ),
        );
        return None;
    }
    Some(When {
        check: name.to_string(),
        is: is.clone(),
    })
}

/// A step after a `stop` step that always runs first is unreachable: after a `stop` without
/// `when`, every step; after a `stop` with `when`, every step whose `when` implies it.
fn check_reachability(shapes: &[(usize, usize, Option<When>, bool)], errs: &mut FileErrors<'_>) {
    for (i, (n_stop, _, stop_when, stop)) in shapes.iter().enumerate() {
        if !stop {
            continue;
        }
        for (n, line, when, _) in &shapes[i + 1..] {
            let shadowed = match (stop_when, when) {
                (None, _) => true,
                (Some(s), Some(w)) => s.check == w.check && w.is.iter().all(|o| s.is.contains(o)),
                (Some(_), None) => false,
            };
            if shadowed {
                let why = match stop_when {
                    None => "always ends the plan before it".to_string(),
                    Some(s) => format!("ends the plan whenever {s}"),
                };
                errs.push(
                    *line,
                    Some("action"),
                    format!("step {n} is unreachable: step {n_stop} (page, stop: true) {why}"),
                );
            }
        }
    }
}

/// Turns one step into its action and approval flag, reporting missing and foreign parameters.
fn convert_step(
    n: usize,
    step: Spanned<RawStep>,
    errs: &mut FileErrors<'_>,
) -> Option<(Action, bool)> {
    let step_line = spanned_line(&step);
    let raw = step.value;
    let kind = raw.action.value;
    let action_line = match spanned_line(&raw.action) {
        0 => step_line,
        l => l,
    };
    let before = errs.errors.len();

    // Parameters present on this step, with their lines.
    let given: [(&str, Option<usize>); 5] = [
        ("changes", raw.changes.as_ref().map(spanned_line)),
        ("checkpoint", raw.checkpoint.as_ref().map(spanned_line)),
        ("severity", raw.severity.as_ref().map(spanned_line)),
        ("summary", raw.summary.as_ref().map(spanned_line)),
        ("note", raw.note.as_ref().map(spanned_line)),
    ];
    let wanted: &[&str] = match kind {
        ActionKind::Pause | ActionKind::Resume | ActionKind::CaptureDiagnostics => &[],
        ActionKind::RestartFromCheckpoint => &["checkpoint"],
        ActionKind::PatchConfig => &["changes"],
        ActionKind::Page => &["severity", "summary"],
        ActionKind::Annotate => &["note"],
    };
    for (name, line) in given {
        if let Some(line) = line
            && !wanted.contains(&name)
        {
            let takes = if wanted.is_empty() {
                "it takes no parameters".to_string()
            } else {
                format!("it takes {}", backquoted(wanted))
            };
            errs.push(
                line,
                Some(name),
                format!("step {n}: `{name}` is not a parameter of `{kind}` ({takes})"),
            );
        }
    }
    for name in wanted {
        if given.iter().any(|(g, l)| g == name && l.is_none()) {
            errs.push(
                action_line,
                Some("action"),
                format!("step {n}: `{kind}` needs `{name}`"),
            );
        }
    }

    let action = match kind {
        ActionKind::Pause => Some(Action::Pause),
        ActionKind::Resume => Some(Action::Resume),
        ActionKind::CaptureDiagnostics => Some(Action::CaptureDiagnostics),
        ActionKind::RestartFromCheckpoint => {
            raw.checkpoint.map(|c| Action::RestartFromCheckpoint {
                checkpoint: c.value.0,
            })
        }
        ActionKind::PatchConfig => raw.changes.and_then(|c| convert_changes(n, c, errs)),
        ActionKind::Page => match (raw.severity, raw.summary) {
            (Some(severity), Some(summary)) => {
                if summary.value.trim().is_empty() {
                    errs.push(
                        spanned_line(&summary),
                        Some("summary"),
                        format!("step {n}: the page `summary` is empty"),
                    );
                }
                Some(Action::Page {
                    severity: severity.value,
                    summary: summary.value.trim().to_string(),
                })
            }
            _ => None,
        },
        ActionKind::Annotate => raw.note.map(|note| {
            if note.value.trim().is_empty() {
                errs.push(
                    spanned_line(&note),
                    Some("note"),
                    format!("step {n}: the `note` is empty"),
                );
            }
            Action::Annotate {
                note: note.value.trim().to_string(),
            }
        }),
    };
    let requires_approval = raw.approval.is_some_and(|a| a.value == Approval::Required);
    match action {
        Some(action) if errs.errors.len() == before => Some((action, requires_approval)),
        _ => None,
    }
}

fn convert_changes(
    n: usize,
    changes: Spanned<Vec<Spanned<RawChange>>>,
    errs: &mut FileErrors<'_>,
) -> Option<Action> {
    if changes.value.is_empty() {
        errs.push(
            spanned_line(&changes),
            Some("changes"),
            format!("step {n}: `changes` is empty: name at least one key to change"),
        );
        return None;
    }
    let changes_line = spanned_line(&changes);
    let mut out = Vec::with_capacity(changes.value.len());
    for change in changes.value {
        let line = match spanned_line(&change) {
            0 => changes_line,
            l => l,
        };
        let c = change.value;
        let key = c.key.trim().to_string();
        if key.is_empty() {
            errs.push(
                line,
                Some("changes"),
                format!("step {n}: a change has an empty `key`"),
            );
            continue;
        }
        match (c.scale, c.set) {
            (Some(x), None) if x.is_finite() && x > 0.0 => out.push(ConfigChange {
                key,
                op: ChangeOp::Scale(x),
            }),
            (Some(x), None) => errs.push(
                line,
                Some("scale"),
                format!("step {n}: `scale` of `{key}` must be a finite number above 0, not {x}"),
            ),
            (None, Some(v)) => out.push(ConfigChange {
                key,
                op: ChangeOp::Set(v),
            }),
            (Some(_), Some(_)) => errs.push(
                line,
                Some("changes"),
                format!("step {n}: the change of `{key}` has both `scale` and `set`: pick one"),
            ),
            (None, None) => errs.push(
                line,
                Some("changes"),
                format!(
                    "step {n}: the change of `{key}` needs `scale: <factor>` or `set: <value>`"
                ),
            ),
        }
    }
    Some(Action::PatchConfig { changes: out })
}

fn backquoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Parses `(path, text)` pairs into a set, or returns every error of every file.
pub(super) fn parse_all(sources: &[(String, &str)]) -> Result<RunbookSet, RunbookErrors> {
    let mut errors = Vec::new();
    let mut runbooks: Vec<Runbook> = Vec::with_capacity(sources.len());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (path, text) in sources {
        match parse_file(path, text) {
            Ok(rb) => {
                if let Some(first) = seen.get(&rb.id) {
                    let line = split_front_matter(text)
                        .ok()
                        .and_then(|s| find_key_line(s.yaml, 1, "id").map(|l| l + s.offset))
                        .unwrap_or(1);
                    errors.push(RunbookError::at(
                        path,
                        line,
                        format!("duplicate id `{}`: already defined in {first}", rb.id),
                    ));
                } else {
                    seen.insert(rb.id.clone(), path.clone());
                    runbooks.push(rb);
                }
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(RunbookSet::from_runbooks(runbooks))
    } else {
        Err(RunbookErrors(errors))
    }
}

/// Loads `dir/*.md` except `README.md`, sorted by file name.
pub(super) fn load_dir(dir: &Path) -> Result<RunbookSet, RunbookErrors> {
    let io = |path: &Path, message: String| {
        RunbookErrors(vec![RunbookError::Io {
            path: path.display().to_string(),
            message,
        }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io(dir, format!("cannot read the runbook folder: {e}")))?;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(RunbookError::Io {
                    path: dir.display().to_string(),
                    message: format!("cannot list the runbook folder: {e}"),
                });
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".md") || name.eq_ignore_ascii_case("README.md") || !path.is_file() {
            continue;
        }
        files.push((name, path));
    }
    files.sort();
    if files.is_empty() && errors.is_empty() {
        return Err(io(
            dir,
            "no runbooks (*.md besides README.md) in this folder".into(),
        ));
    }
    let mut sources = Vec::with_capacity(files.len());
    for (_, path) in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((path.display().to_string(), text)),
            Err(e) => errors.push(RunbookError::Io {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let borrowed: Vec<(String, &str)> = sources
        .iter()
        .map(|(p, t)| (p.clone(), t.as_str()))
        .collect();
    match parse_all(&borrowed) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(RunbookErrors(errors)),
        Err(RunbookErrors(mut parse)) => {
            errors.append(&mut parse);
            Err(RunbookErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::PlanStep;
    use crate::verify::Expectation;

    /// A valid runbook `x`; line numbers in tests refer to this layout:
    /// 1 `---`, 2 id, 3 title, 4 triggers, 5 kinds, 6 steps, 7 `- action: pause`, 8 verify,
    /// 9 within, 10 expect, 11 `---`, 12 body.
    const GOOD: &str = "---\nid: x\ntitle: X\ntriggers:\n  kinds: [stall]\nsteps:\n  - action: pause\n\
                        verify:\n  within: 5m\n  expect: [progress]\n---\nBody\n";

    fn with_id(text: &str, id: &str) -> String {
        text.replacen("id: x", &format!("id: {id}"), 1)
    }

    /// Writes `files` to a fresh folder and loads it; returns the folder and the error lines.
    fn load_errors(files: &[(&str, String)]) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let lines = match RunbookSet::load_dir(dir.path()) {
            Ok(set) => panic!("expected errors, loaded {} runbooks", set.len()),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        };
        (dir, lines)
    }

    fn one_error(name: &str, text: String) -> (String, String) {
        let (dir, lines) = load_errors(&[(name, text)]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let prefix = dir.path().join(name).display().to_string();
        let rest = lines[0]
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{} does not start with {prefix}", lines[0]))
            .to_string();
        (prefix, rest)
    }

    /// A runbook with checks and branches where every line has a problem; line numbers matter.
    const BRANCHY: &str = "---
id: x
title: X
triggers:
  kinds: [stall]
  charts: [{chart: gpu_util, op: \">\", threshold: .inf}]
checks:
  - id: busy
    promql: 'avg(gpu_util{run=\"$run\"}'
    op: \">\"
    threshold: 0.9
  - id: busy
    promql: up
    op: \"<\"
    threshold: 1
  - id: quiet
    promql: up
    op: \"==\"
    threshold: 0
    reduce: max
    unknown_as: false
steps:
  - action: pause
    when: {check: bsy, is: true}
  - action: page
    severity: error
    summary: stop here
    stop: true
  - action: annotate
    note: after
  - action: resume
    stop: true
  - action: capture_diagnostics
    when: {check: quiet, is: unknown}
verify:
  within: 5m
  expect: [progress]
---
Body
";

    #[test]
    fn branches_pick_steps_by_outcome_and_stop_ends_the_plan() {
        let text = "---\nid: x\ntitle: X\ntriggers:\n  kinds: [stall]\n  charts: [{chart: gpu_util, reduce: mean, over: 5m, op: \">\", threshold: 0.9}]\n\
                    checks:\n  - id: hw\n    promql: 'increase(xid_total{run=\"$run\"}[1h])'\n    op: \">\"\n    threshold: 0\n    chart: xid_errors\n    reduce: increase\n    over: 1h\n\
                    steps:\n  - action: capture_diagnostics\n  - action: page\n    severity: critical\n    summary: hw\n    when: {check: hw, is: true}\n    stop: true\n\
                    \x20 - action: restart_from_checkpoint\n    checkpoint: latest\n    when: {check: hw, is: [false, unknown]}\n  - action: annotate\n    note: done\n\
                    verify:\n  within: 5m\n  expect: [progress]\nescalate:\n  severity: error\n  route: ml-oncall\n---\nBody\n";
        let rb = match parse_file("x.md", text) {
            Ok(rb) => rb,
            Err(e) => panic!("{e:?}"),
        };
        let kinds = |o: Option<Outcome>| -> Vec<ActionKind> {
            let outcomes: super::super::Outcomes =
                o.map(|o| ("hw".to_string(), o)).into_iter().collect();
            rb.plan_for(&outcomes)
                .steps
                .iter()
                .map(|s| s.action.kind())
                .collect()
        };
        assert_eq!(
            kinds(Some(Outcome::True)),
            [ActionKind::CaptureDiagnostics, ActionKind::Page]
        );
        let restart = [
            ActionKind::CaptureDiagnostics,
            ActionKind::RestartFromCheckpoint,
            ActionKind::Annotate,
        ];
        assert_eq!(kinds(Some(Outcome::False)), restart);
        assert_eq!(kinds(None), restart);
        assert_eq!(rb.plan().steps.len(), 3);
        assert_eq!(rb.plan().escalation_route.as_deref(), Some("ml-oncall"));
        assert_eq!(rb.escalation_severity, Severity::Error);
        assert_eq!(rb.triggers.charts.len(), 1);
        assert_eq!(
            rb.triggers.charts[0].to_string(),
            "mean(gpu_util) over 5m > 0.9"
        );
        assert_eq!(
            rb.checks[0].chart.map(|c| c.to_string()).as_deref(),
            Some("increase(xid_errors) over 1h")
        );
    }

    #[test]
    fn check_and_branch_errors_are_all_reported_with_their_lines() {
        let (dir, lines) = load_errors(&[("x.md", BRANCHY.to_string())]);
        let p = dir.path().join("x.md").display().to_string();
        let want: Vec<String> = [
            "6: trigger condition on `gpu_util`: threshold must be a finite number",
            "9: check `busy`: the PromQL does not parse: unclosed left parenthesis",
            "12: duplicate check id `busy`",
            "20: check `quiet`: `reduce` needs `chart` (which chart does it reduce?)",
            "24: step 1: `when` names an undefined check `bsy` (checks: busy, quiet)",
            "29: step 3 is unreachable: step 2 (page, stop: true) always ends the plan before it",
            "31: step 4 is unreachable: step 2 (page, stop: true) always ends the plan before it",
            "32: step 4: `stop` ends the plan after a page that hands the run to a human; `resume` is not a page",
            "33: step 5 is unreachable: step 2 (page, stop: true) always ends the plan before it",
            "34: step 5 is unreachable: check `quiet` never yields unknown (it has `unknown_as: false`)",
        ]
        .iter()
        .map(|l| format!("{p}:{l}"))
        .collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn good_runbook_parses_with_defaults() {
        let rb = match parse_file("dir/x.md", GOOD) {
            Ok(rb) => rb,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(rb.id, "x");
        assert_eq!(rb.title, "X");
        assert_eq!(rb.body, "Body\n");
        assert_eq!(rb.priority, 0);
        assert_eq!(rb.max_attempts, 1);
        assert_eq!(rb.escalation_severity, Severity::Critical);
        assert_eq!(rb.triggers.kinds, vec![FindingKind::Stall]);
        assert_eq!(rb.triggers.min_severity, None);
        assert_eq!(
            rb.plan().steps,
            vec![PlanStep {
                action: Action::Pause,
                requires_approval: false
            }]
        );
        assert_eq!(rb.verify.within, Duration::from_secs(300));
        assert_eq!(rb.verify.expect, vec![Expectation::Progress]);
        assert_eq!(rb.sha256, hex::encode(Sha256::digest(GOOD.as_bytes())));
        assert_eq!(rb.sha256.len(), 64);
    }

    #[test]
    fn crlf_bom_and_every_parameter_form_parse() {
        let text = "\u{feff}---\r\nid: y\r\ntitle: Y\r\ntriggers:\r\n  kinds: [loss_spike, nonfinite]\r\n  \
                    min_severity: error\r\npriority: -3\r\nsteps:\r\n  - action: patch_config\r\n    \
                    changes: [{key: lr, scale: 0.25}, {key: data.skip, set: [10, 20]}]\r\n  \
                    - action: restart_from_checkpoint\r\n    checkpoint: 1200\r\n    approval: required\r\n  \
                    - action: annotate\r\n    note: hi\r\n  - action: resume\r\n    approval: policy\r\n\
                    verify:\r\n  within: 90\r\n  expect: [finite, no_new_hardware_errors, findings_cleared]\r\n\
                    max_attempts: 3\r\nescalate:\r\n  severity: warning\r\n---\r\n# Y\r\n";
        let rb = match parse_file("y.md", text) {
            Ok(rb) => rb,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(rb.triggers.min_severity, Some(Severity::Error));
        assert_eq!(rb.priority, -3);
        assert_eq!(rb.max_attempts, 3);
        assert_eq!(rb.escalation_severity, Severity::Warning);
        assert_eq!(rb.verify.within, Duration::from_secs(90));
        assert_eq!(
            rb.verify.expect,
            vec![
                Expectation::Finite,
                Expectation::NoNewHardwareErrors,
                Expectation::FindingsCleared
            ]
        );
        let kinds: Vec<ActionKind> = rb.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                ActionKind::PatchConfig,
                ActionKind::RestartFromCheckpoint,
                ActionKind::Annotate,
                ActionKind::Resume
            ]
        );
        assert_eq!(
            rb.steps[0].action,
            Action::PatchConfig {
                changes: vec![
                    ConfigChange {
                        key: "lr".into(),
                        op: ChangeOp::Scale(0.25)
                    },
                    ConfigChange {
                        key: "data.skip".into(),
                        op: ChangeOp::Set(serde_json::json!([10, 20]))
                    },
                ]
            }
        );
        assert_eq!(
            rb.steps[1].action,
            Action::RestartFromCheckpoint {
                checkpoint: CheckpointSelector::Step(1200)
            }
        );
        let approvals: Vec<bool> = rb.steps.iter().map(|s| s.requires_approval).collect();
        assert_eq!(approvals, vec![false, true, false, false]);
        assert_eq!(rb.body, "# Y\r\n");
    }

    #[test]
    fn unknown_action_points_at_its_line() {
        // Line 9: the second step.
        let text = GOOD.replace(
            "  - action: pause\n",
            "  - action: pause\n  - action: capture_diagnostics\n  - action: reboot_node\n",
        );
        let (_, rest) = one_error("x.md", text);
        assert!(
            rest.starts_with(":9: unknown variant `reboot_node`, expected one of pause,"),
            "{rest}"
        );
    }

    #[test]
    fn unknown_finding_kind_points_at_kinds() {
        let (_, rest) = one_error("x.md", GOOD.replace("[stall]", "[stall, los_spike]"));
        assert!(
            rest.starts_with(":5: unknown variant `los_spike`"),
            "{rest}"
        );
    }

    #[test]
    fn yaml_syntax_error_points_at_its_line() {
        let (_, rest) = one_error("x.md", GOOD.replace("title: X", "title: \"X"));
        assert_eq!(rest, ":3: unclosed quote (near `title: \"X`)");
    }

    #[test]
    fn wrong_typed_parameters_point_at_their_line() {
        let text = GOOD.replace(
            "  - action: pause\n",
            "  - action: pause\n  - action: patch_config\n    changes: [{key: lr, scale: half}]\n",
        );
        let (_, rest) = one_error("x.md", text);
        assert_eq!(
            rest,
            ":9: expected a number (near `changes: [{key: lr, scale: half}]`)"
        );

        let text = GOOD.replace(
            "  - action: pause\n",
            "  - action: restart_from_checkpoint\n    checkpoint: yesterday\n",
        );
        let (_, rest) = one_error("x.md", text);
        assert_eq!(
            rest,
            ":8: unknown checkpoint `yesterday`: expected `latest`, `before_onset` or a step number"
        );

        let (_, rest) = one_error("x.md", GOOD.replace("within: 5m", "within: 5 fortnights"));
        assert!(
            rest.starts_with(":9: invalid duration `5 fortnights`"),
            "{rest}"
        );
    }

    #[test]
    fn front_matter_must_open_and_close() {
        let (_, rest) = one_error("x.md", GOOD.replacen("---\n", "", 1));
        assert!(rest.starts_with(":1: missing front matter"), "{rest}");

        let unclosed = GOOD.replace("---\nBody\n", "Body\n");
        let (_, rest) = one_error("x.md", unclosed);
        assert_eq!(
            rest,
            ":1: the front matter opened on line 1 is never closed: add a `---` line after the YAML"
        );
    }

    #[test]
    fn id_must_match_the_file_stem() {
        let (_, rest) = one_error("x.md", with_id(GOOD, "y"));
        assert_eq!(
            rest,
            ":2: id `y` does not match the file name: it must be `x`"
        );
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let sources = [("a/x.md".to_string(), GOOD), ("b/x.md".to_string(), GOOD)];
        let err = match parse_all(&sources) {
            Ok(_) => panic!("duplicate ids loaded"),
            Err(e) => e.to_string(),
        };
        assert_eq!(err, "b/x.md:2: duplicate id `x`: already defined in a/x.md");
    }

    #[test]
    fn semantic_errors_of_one_file_are_all_reported() {
        let text = "---\nid: z\ntitle: ' '\ntriggers:\n  kinds: []\nsteps: []\nverify:\n  within: 0s\n  \
                    expect: []\nmax_attempts: 0\n---\n\n";
        let (dir, lines) = load_errors(&[("q.md", text.to_string())]);
        let p = dir.path().join("q.md").display().to_string();
        assert_eq!(
            lines,
            vec![
                format!("{p}:2: id `z` does not match the file name: it must be `q`"),
                format!("{p}:3: title is empty"),
                format!("{p}:5: no triggers: `triggers.kinds` must name at least one finding kind"),
                format!("{p}:6: no steps: a runbook needs at least one step"),
                format!("{p}:8: verify.within must be longer than 0: how long may recovery take?"),
                format!(
                    "{p}:9: verify.expect is empty: name at least one expectation (e.g. progress)"
                ),
                format!("{p}:10: max_attempts must be at least 1 (the steps run at least once)"),
                format!(
                    "{p}:11: the Markdown body after the front matter is empty: write what the \
                     human on call should look at and do"
                ),
            ]
        );
    }

    #[test]
    fn step_parameters_must_fit_the_action() {
        let text = GOOD.replace(
            "  - action: pause\n",
            "  - action: pause\n    checkpoint: latest\n  - action: page\n    severity: warning\n  \
             - action: patch_config\n    changes: [{key: lr}, {key: wd, scale: 2, set: 1}, {key: b, scale: -1}]\n",
        );
        let (dir, lines) = load_errors(&[("x.md", text)]);
        let p = dir.path().join("x.md").display().to_string();
        assert_eq!(
            lines,
            vec![
                format!(
                    "{p}:8: step 1: `checkpoint` is not a parameter of `pause` (it takes no parameters)"
                ),
                format!("{p}:9: step 2: `page` needs `summary`"),
                format!(
                    "{p}:12: step 3: the change of `lr` needs `scale: <factor>` or `set: <value>`"
                ),
                format!("{p}:12: step 3: the change of `wd` has both `scale` and `set`: pick one"),
                format!("{p}:12: step 3: `scale` of `b` must be a finite number above 0, not -1"),
            ]
        );
    }

    #[test]
    fn missing_and_unknown_fields_point_at_their_mapping() {
        let (_, rest) = one_error(
            "x.md",
            GOOD.replace("  kinds: [stall]", "  min_severity: error"),
        );
        assert_eq!(rest, ":4: missing field `kinds`");
        let (_, rest) = one_error(
            "x.md",
            GOOD.replace(
                "  - action: pause",
                "  - checkpoint: latest\n    approval: required",
            ),
        );
        assert_eq!(rest, ":7: missing field `action`");
        let (_, rest) = one_error("x.md", GOOD.replace("title: X\n", ""));
        assert_eq!(rest, ":2: missing field `title`");
        let (_, rest) = one_error("x.md", GOOD.replace("title: X", "title: X\nowner: me"));
        assert!(
            rest.starts_with(":4: unknown field `owner`, expected one of id,"),
            "{rest}"
        );
        let (_, rest) = one_error("x.md", GOOD.replace("title: X", "title: X\nid: x"));
        assert_eq!(rest, ":4: duplicate key `id`");
    }

    #[test]
    fn errors_of_several_files_are_all_reported_in_file_order() {
        let bad_a = GOOD.replace("action: pause", "action: explode");
        let bad_b = with_id(&GOOD.replace("[stall]", "[stal]"), "b");
        let bad_c = with_id(GOOD, "not-c").replace("title: X", "title: X\nmax_attempts: 0");
        let readme = "# not a runbook\n".to_string();
        let (dir, lines) = load_errors(&[
            ("c.md", bad_c),
            ("a.md", with_id(&bad_a, "a")),
            ("b.md", bad_b),
            ("ok.md", with_id(GOOD, "ok")),
            ("README.md", readme),
            ("notes.txt", "ignored".to_string()),
        ]);
        let p = |n: &str| dir.path().join(n).display().to_string();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with(&format!("{}:7: unknown variant `explode`", p("a.md"))));
        assert!(lines[1].starts_with(&format!("{}:5: unknown variant `stal`", p("b.md"))));
        assert_eq!(
            lines[2],
            format!(
                "{}:2: id `not-c` does not match the file name: it must be `c`",
                p("c.md")
            )
        );
        assert_eq!(
            lines[3],
            format!(
                "{}:4: max_attempts must be at least 1 (the steps run at least once)",
                p("c.md")
            )
        );
    }

    #[test]
    fn load_dir_skips_readme_and_fails_on_an_empty_or_missing_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("README.md"), "# docs\n").expect("write");
        let err = RunbookSet::load_dir(dir.path()).map(|s| s.len());
        match err {
            Err(e) => assert!(
                e.to_string()
                    .ends_with(": no runbooks (*.md besides README.md) in this folder")
            ),
            Ok(n) => panic!("loaded {n}"),
        }
        std::fs::write(dir.path().join("x.md"), GOOD).expect("write");
        let set = match RunbookSet::load_dir(dir.path()) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("x").map(|r| r.path.ends_with("x.md")), Some(true));

        let missing = dir.path().join("nope");
        match RunbookSet::load_dir(&missing) {
            Err(e) => assert!(
                e.to_string().starts_with(&format!(
                    "{}: cannot read the runbook folder",
                    missing.display()
                )),
                "{e}"
            ),
            Ok(_) => panic!("loaded a missing folder"),
        }
    }

    #[test]
    fn reserved_id_none_is_refused() {
        let (_, rest) = one_error("none.md", with_id(GOOD, "none"));
        assert!(rest.starts_with(":2: id `none` is reserved"), "{rest}");
    }

    #[test]
    fn odd_inputs_fail_cleanly_with_a_line() {
        let cases: [(&str, &str); 7] = [
            ("", ":1: missing front matter"),
            (
                "---",
                ":1: the front matter opened on line 1 is never closed",
            ),
            ("---\n---\nbody\n", ":1: the front matter is empty"),
            ("---\n- a\n- b\n---\nbody\n", ":2: "),
            ("---\n[\n---\nbody\n", ":"),
            ("---\nid: x\n---\nbody\n", ":2: missing field `title`"),
            ("# just markdown\n", ":1: missing front matter"),
        ];
        for (text, want) in cases {
            let errs = match parse_file("x.md", text) {
                Ok(_) => panic!("{text:?} loaded"),
                Err(e) => e,
            };
            let first = errs[0].to_string();
            assert!(
                first.starts_with(&format!("x.md{want}")),
                "{text:?} gave {first}"
            );
            for e in &errs {
                match e {
                    RunbookError::At { line, .. } => assert!(*line >= 1, "{e}"),
                    RunbookError::Io { .. } => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn mapping_start_finds_the_owner() {
        let yaml = "a: 1\nb:\n  c: 1\n  d: 2\ns:\n  - e: 1\n    f: 2\n";
        assert_eq!(mapping_start(yaml, 1), 1);
        assert_eq!(mapping_start(yaml, 4), 2);
        assert_eq!(mapping_start(yaml, 7), 6);
        assert_eq!(mapping_start(yaml, 6), 6);
    }
}
