//! The agent's eval suite: incident cases (a replayed trace or inline charts, the cluster's
//! state, the findings and the expected diagnosis) run through the investigator and graded.
//! `babysitter agent eval --cases DIR` runs it against the configured endpoint, or with
//! `--scripted` against each case's own scripted model turns (CI: it tests the pipeline —
//! tools, parsing, grading — not a model).
//!
//! A case file (`*.json`):
//! ```json
//! {
//!   "name": "loss spike after a bad batch",
//!   "now": 3000.0,
//!   "findings": [{"kind": "loss_spike", "chart": "loss", "at": 3000.0, "onset": 2970.0,
//!                 "severity": "warning", "message": "loss 5.1 far above its band"}],
//!   "trace": "loss-spike.csv",
//!   "charts": {"grad_norm": [[2940.0, 0.3], [2970.0, 950.0]]},
//!   "cluster": {"pods": [...], "events": [...], "logs": {"pod": ["line", ...]}},
//!   "runbooks": [],
//!   "expected": {"runbook": "loss-spike", "action": "restart_from_checkpoint"},
//!   "script": [{"tool_calls": [{"name": "query_range", "arguments": {"query": "loss"}}]}, ...]
//! }
//! ```
//! Grading: a case that expects "does not know" scores 1 when the agent gives up, else 0;
//! otherwise the right runbook scores ½ and the right action kind ½.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::llm::{
    ChatRequest, ChatResponse, Choice, FunctionCall, LlmClient, LlmError, Message, ToolCall, Usage,
};
use super::{AgentConfig, AgentReport, AgentStatus, Brief, ClusterState, Investigator};
use crate::act::{ActionKind, Target};
use crate::charts::{ChartKey, ChartSet, Sample, Series};
use crate::detect::Finding;
use crate::runbook::{RunbookSet, diagnose};

/// One incident case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalCase {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_run")]
    pub run: String,
    /// Default: a simulated run named `run`.
    #[serde(default)]
    pub target: Option<Target>,
    /// The incident's clock time (the trace's `time` axis).
    pub now: f64,
    pub findings: Vec<Finding>,
    /// A trace (FORMATS.md §1), relative to the case file; samples after `now` are dropped.
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// Inline charts, `[t, v]` points, merged over the trace.
    #[serde(default)]
    pub charts: BTreeMap<String, Vec<(f64, f64)>>,
    #[serde(default)]
    pub cluster: ClusterState,
    /// The watch's allowed runbooks (empty: all).
    #[serde(default)]
    pub runbooks: Vec<String>,
    pub expected: Expected,
    /// Model turns for `--scripted` (ignored against a real endpoint).
    #[serde(default)]
    pub script: Vec<ScriptTurn>,
}

fn default_run() -> String {
    "eval-run".into()
}

/// The expected diagnosis.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub action: Option<ActionKind>,
    /// The right answer is "I don't know" (the evidence cannot tell the causes apart).
    #[serde(default)]
    pub does_not_know: bool,
}

/// One scripted model reply: text and/or tool calls.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ScriptCall>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCall {
    pub name: String,
    /// Arguments as JSON (sent as its string form, as the API does)…
    #[serde(default)]
    pub arguments: Option<Value>,
    /// …or verbatim (to script malformed JSON).
    #[serde(default)]
    pub raw_arguments: Option<String>,
}

/// A model that plays a script, one turn per call (then answers in prose, with no call).
pub struct ScriptedLlm {
    turns: Vec<ScriptTurn>,
    next: Mutex<usize>,
}

impl ScriptedLlm {
    pub fn new(turns: Vec<ScriptTurn>) -> ScriptedLlm {
        ScriptedLlm {
            turns,
            next: Mutex::new(0),
        }
    }
}

/// The chat response a script turn stands for (call ids `call_<turn>_<i>`).
pub fn scripted_response(turn: &ScriptTurn, n: usize) -> ChatResponse {
    let tool_calls = turn
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: format!("call_{n}_{i}"),
            kind: "function".into(),
            function: FunctionCall {
                name: c.name.clone(),
                arguments: c.raw_arguments.clone().unwrap_or_else(|| {
                    c.arguments
                        .clone()
                        .unwrap_or(Value::Object(Default::default()))
                        .to_string()
                }),
            },
        })
        .collect();
    ChatResponse {
        choices: vec![Choice {
            message: Message {
                role: "assistant".into(),
                content: turn.content.clone(),
                tool_calls,
                tool_call_id: None,
            },
            finish_reason: Some("tool_calls".into()),
        }],
        usage: Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 20,
            total_tokens: 120,
        }),
    }
}

#[async_trait]
impl LlmClient for ScriptedLlm {
    fn model(&self) -> &str {
        "scripted"
    }
    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let n = {
            let mut next = self
                .next
                .lock()
                .map_err(|_| LlmError::Transport("script lock".into()))?;
            let n = *next;
            *next += 1;
            n
        };
        let turn = self.turns.get(n).cloned().unwrap_or(ScriptTurn {
            content: Some("(end of script)".into()),
            tool_calls: Vec::new(),
        });
        Ok(scripted_response(&turn, n))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {message}")]
    Case { path: String, message: String },
    #[error("{0}: no *.json cases")]
    Empty(String),
}

fn case_err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Case {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Loads every `*.json` case of `dir`, in file-name order, with its path.
pub fn load_cases(dir: &Path) -> Result<Vec<(PathBuf, EvalCase)>, EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| case_err(dir, e.to_string()))?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(EvalError::Empty(dir.display().to_string()));
    }
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| case_err(&p, e.to_string()))?;
        let case: EvalCase =
            serde_json::from_str(&text).map_err(|e| case_err(&p, e.to_string()))?;
        if case.findings.is_empty() {
            return Err(case_err(&p, "findings: at least one finding is needed"));
        }
        out.push((p, case));
    }
    Ok(out)
}

/// The case's charts: the trace up to `now`, then the inline points.
pub fn case_charts(path: &Path, case: &EvalCase) -> Result<ChartSet, EvalError> {
    let mut charts = ChartSet::new();
    if let Some(t) = &case.trace {
        let file = path.parent().unwrap_or(Path::new(".")).join(t);
        let trace = crate::replay::Trace::load(&file).map_err(|e| case_err(path, e.to_string()))?;
        for (key, series) in trace.charts.iter() {
            charts.insert(
                key.clone(),
                Series::from_samples(series.until(case.now).iter().copied()),
            );
        }
    }
    for (name, pts) in &case.charts {
        let key: ChartKey = name
            .parse()
            .map_err(|e| case_err(path, format!("charts.{name}: {e}")))?;
        charts.merge(key, pts.iter().map(|&(t, v)| Sample::new(t, v)));
    }
    Ok(charts)
}

/// The grade of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub score: f64,
    pub status: AgentStatus,
    pub got_runbook: Option<String>,
    pub got_action: Option<ActionKind>,
    pub expected: Expected,
    pub error: Option<String>,
    pub confidence: Option<f64>,
    pub tokens: u64,
}

pub fn grade(expected: &Expected, report: &AgentReport) -> f64 {
    if expected.does_not_know {
        return if report.status == AgentStatus::DoesNotKnow {
            1.0
        } else {
            0.0
        };
    }
    let Some(p) = &report.proposal else {
        return 0.0;
    };
    let mut score = 0.0;
    let parts = expected.runbook.is_some() as u8 + expected.action.is_some() as u8;
    if parts == 0 {
        return 1.0;
    }
    let share = 1.0 / parts as f64;
    if expected.runbook.as_deref().is_some_and(|r| r == p.runbook) {
        score += share;
    }
    if expected.action.is_some_and(|k| k == p.action.kind()) {
        score += share;
    }
    score
}

/// Runs one case. `llm`: the model; `None` plays the case's script.
pub async fn run_case(
    path: &Path,
    case: &EvalCase,
    agent: &AgentConfig,
    runbooks: Arc<RunbookSet>,
    llm: Option<Arc<dyn LlmClient>>,
) -> Result<(CaseResult, AgentReport), EvalError> {
    let charts = case_charts(path, case)?;
    let llm = llm.unwrap_or_else(|| Arc::new(ScriptedLlm::new(case.script.clone())));
    let inv = Investigator::new(
        agent.clone(),
        llm,
        None,
        Arc::new(case.cluster.clone()),
        runbooks.clone(),
    );
    let brief = Brief {
        incident: format!("eval-{}", case.name),
        run: case.run.clone(),
        target: case.target.clone().unwrap_or(Target::Simulated {
            run: case.run.clone(),
        }),
        findings: case.findings.clone(),
        diagnosis: diagnose(&runbooks, &case.findings, &case.runbooks),
        charts,
        allowed_runbooks: case.runbooks.clone(),
        now: case.now,
    };
    let report = inv.investigate(&brief).await;
    let result = CaseResult {
        name: case.name.clone(),
        score: grade(&case.expected, &report),
        status: report.status,
        got_runbook: report.proposal.as_ref().map(|p| p.runbook.clone()),
        got_action: report.proposal.as_ref().map(|p| p.action.kind()),
        expected: case.expected.clone(),
        error: report.error.clone(),
        confidence: report.confidence,
        tokens: report.usage.total_tokens,
    };
    Ok((result, report))
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    pub cases: Vec<CaseResult>,
    pub score: f64,
    pub max: f64,
}

/// Runs every case of `dir`.
pub async fn run_suite(
    dir: &Path,
    agent: &AgentConfig,
    runbooks: Arc<RunbookSet>,
    llm: Option<Arc<dyn LlmClient>>,
) -> Result<EvalSummary, EvalError> {
    let mut cases = Vec::new();
    for (path, case) in load_cases(dir)? {
        let (r, _) = run_case(&path, &case, agent, runbooks.clone(), llm.clone()).await?;
        cases.push(r);
    }
    let score = cases.iter().map(|c| c.score).sum();
    let max = cases.len() as f64;
    Ok(EvalSummary { cases, score, max })
}

impl EvalSummary {
    /// The table `babysitter agent eval` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.cases {
            let got = match (&c.got_runbook, c.got_action) {
                (Some(r), Some(a)) => format!("{r}/{a}"),
                _ => c.status_text(),
            };
            let want = if c.expected.does_not_know {
                "does not know".to_string()
            } else {
                format!(
                    "{}/{}",
                    c.expected.runbook.as_deref().unwrap_or("*"),
                    c.expected.action.map_or("*", |a| a.as_str())
                )
            };
            s.push_str(&format!(
                "{:>4.2}  {:<40} expected {:<40} got {}{}\n",
                c.score,
                c.name,
                want,
                got,
                c.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        s.push_str(&format!(
            "score: {:.2}/{:.0} ({:.1}%)\n",
            self.score,
            self.max,
            if self.max > 0.0 {
                100.0 * self.score / self.max
            } else {
                0.0
            }
        ));
        s
    }
}

impl CaseResult {
    fn status_text(&self) -> String {
        match self.status {
            AgentStatus::Proposed => "proposed".into(),
            AgentStatus::DoesNotKnow => "does not know".into(),
            AgentStatus::Failed => "failed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shipped_cases_load_and_score_fully_when_scripted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/agent-evals");
        let agent = AgentConfig::new("http://127.0.0.1:9/v1", "scripted");
        let s = run_suite(&dir, &agent, Arc::new(RunbookSet::embedded()), None)
            .await
            .unwrap();
        assert!(s.cases.len() >= 4, "{}", s.render());
        assert_eq!(s.score, s.max, "{}", s.render());
    }

    #[test]
    fn grading_gives_half_for_the_right_runbook() {
        use crate::act::Action;
        let mut r = AgentReport {
            status: AgentStatus::Proposed,
            model: "m".into(),
            summary: String::new(),
            error: None,
            proposal: Some(super::super::Proposal {
                runbook: "loss-spike".into(),
                action: Action::Pause,
                rationale: String::new(),
                evidence: vec![],
            }),
            stated_confidence: None,
            confidence: None,
            evidence: vec![],
            decision: None,
            usage: Default::default(),
            redacted_names: 0,
            transcript: vec![],
        };
        let e = Expected {
            runbook: Some("loss-spike".into()),
            action: Some(ActionKind::RestartFromCheckpoint),
            does_not_know: false,
        };
        assert_eq!(grade(&e, &r), 0.5);
        let dk = Expected {
            does_not_know: true,
            ..Expected::default()
        };
        assert_eq!(grade(&dk, &r), 0.0);
        r.status = AgentStatus::DoesNotKnow;
        r.proposal = None;
        assert_eq!(grade(&dk, &r), 1.0);
        assert_eq!(grade(&e, &r), 0.0);
    }
}
