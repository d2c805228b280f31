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

use super::{PlanStep, Runbook, RunbookSet, Triggers};
use crate::act::{Action, ActionKind, ChangeOp, CheckpointSelector, ConfigChange};
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalate {
    severity: Severity,
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
        "the front matter opened on line 1 is never closed: add a `---` line after the YAML"
            .into(),
    ))
}

/// The first line (1-based, inside `yaml`) at or after `from` whose key is `key`
/// (`key:` after indentation and an optional `- `).
fn find_key_line(yaml: &str, from: usize, key: &str) -> Option<usize> {
    yaml.lines().enumerate().skip(from.saturating_sub(1)).find_map(|(i, line)| {
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
            key.and_then(|k| find_key_line(self.yaml, 1, k)).unwrap_or(0)
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
            format!(
                "id `{id}` is reserved for \"no runbook matched\": rename the file and the id"
            ),
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
    let triggers = Triggers {
        kinds: raw.triggers.value.kinds,
        min_severity: raw.triggers.value.min_severity,
    };

    if raw.steps.value.is_empty() {
        errs.push(
            spanned_line(&raw.steps),
            Some("steps"),
            "no steps: a runbook needs at least one step",
        );
    }
    let mut steps = Vec::with_capacity(raw.steps.value.len());
    for (i, step) in raw.steps.value.into_iter().enumerate() {
        if let Some(s) = convert_step(i + 1, step, &mut errs) {
            steps.push(s);
        }
    }

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

    if !errs.errors.is_empty() {
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
        steps,
        verify,
        max_attempts,
        escalation_severity: raw.escalate.map_or(Severity::Critical, |e| e.severity),
    })
}

/// Turns one step into a [`PlanStep`], reporting missing and foreign parameters.
fn convert_step(n: usize, step: Spanned<RawStep>, errs: &mut FileErrors<'_>) -> Option<PlanStep> {
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
        ActionKind::Pause
        | ActionKind::Resume
        | ActionKind::CaptureDiagnostics => &[],
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
        ActionKind::RestartFromCheckpoint => raw.checkpoint.map(|c| Action::RestartFromCheckpoint {
            checkpoint: c.value.0,
        }),
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
    let requires_approval = raw
        .approval
        .is_some_and(|a| a.value == Approval::Required);
    match action {
        Some(action) if errs.errors.len() == before => Some(PlanStep {
            action,
            requires_approval,
        }),
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
            errs.push(line, Some("changes"), format!("step {n}: a change has an empty `key`"));
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
                format!("step {n}: the change of `{key}` needs `scale: <factor>` or `set: <value>`"),
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

    const GOOD: &str = "---\nid: x\ntitle: X\ntriggers:\n  kinds: [stall]\nsteps:\n  - action: pause\nverify:\n  within: 5m\n  expect: [progress]\n---\nBody\n";

    fn errs(path: &str, text: &str) -> Vec<String> {
        match parse_file(path, text) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn scratch() {
        let cases = [
            GOOD.replace("title: X", "title: \"X"),
            GOOD.replace("  kinds: [stall]", "  kinds: [stall]\n   - oops"),
            GOOD.replace("  kinds: [stall]", "  min_severity: warning\n  foo: 1"),
            GOOD.replace("  kinds: [stall]", "  min_severity: warning"),
            GOOD.replace("  - action: pause", "  - checkpoint: latest\n    approval: required"),
            GOOD.replace("  expect: [progress]", "  expect: [progress]\n  bogus: 3"),
            GOOD.replace("  expect: [progress]", ""),
            GOOD.replace("id: x", "id: x\nid: y"),
            GOOD.replace("  - action: pause", "  - action: pause\n    approval: maybe"),
            GOOD.replace("[stall]", "[stall"),
            GOOD.replace("title: X", "title: X\n\ttab: 1"),
            GOOD.replace("title: X", "title: X\npriority: high"),
            GOOD.replace("id: x", "id: 5"),
        ];
        for c in cases { eprintln!("{:?}", errs("d/x.md", &c)); }
    }
}
