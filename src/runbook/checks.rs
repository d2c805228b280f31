//! Runbook checks: the questions a runbook asks before it picks its steps ("did a GPU throw Xid
//! errors in the last 30 minutes?", "is the loss still finite?"), and trigger chart conditions.
//!
//! A check is a PromQL instant query with a threshold. It is answered, in order of preference,
//! by a [`CheckRunner`] (Prometheus, when babysitter reads one), else by the run's own chart
//! named in `chart` (the charts babysitter already polls — the simulator and replay answer
//! checks this way), else it is `unknown`. An unknown check takes the branch written for
//! `unknown` (or `unknown_as`), so a runbook always yields a plan. Evaluation on charts is a pure
//! function of the charts and `now`.
//!
//! Asking Prometheus is bounded ([`CheckLimits`]): the queries of one runbook run a few at a time,
//! each with its own deadline, so a slow or dead Prometheus costs the loop at most a few seconds
//! and the check falls back to the charts, never to a stall.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::charts::{ChartSet, Role, Sample};

/// A comparison of a value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Cmp {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Le => value <= threshold,
            Cmp::Eq => value == threshold,
            Cmp::Ne => value != threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a chart window becomes one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// The newest sample.
    #[default]
    Last,
    Max,
    Min,
    Mean,
    /// Newest minus oldest sample of the window (for counters: Xid errors, restarts).
    Increase,
    /// How many samples are NaN or ±Inf.
    NonFinite,
    /// Newest finite sample over the smallest finite one of the window: how far a chart rose
    /// from its low (`loss` 1.5× its one-hour minimum).
    Rise,
}

impl Reduce {
    pub fn as_str(self) -> &'static str {
        match self {
            Reduce::Last => "last",
            Reduce::Max => "max",
            Reduce::Min => "min",
            Reduce::Mean => "mean",
            Reduce::Increase => "increase",
            Reduce::NonFinite => "non_finite",
            Reduce::Rise => "rise",
        }
    }

    /// The reduced value of `samples` (sorted by time), `None` when there are none (or, for
    /// `max`/`min`/`mean`/`increase`, no finite ones).
    pub fn apply(self, samples: &[Sample]) -> Option<f64> {
        let finite = || samples.iter().map(|s| s.v).filter(|v| v.is_finite());
        match self {
            Reduce::Last => samples.last().map(|s| s.v),
            Reduce::Max => finite().reduce(f64::max),
            Reduce::Min => finite().reduce(f64::min),
            Reduce::Mean => {
                let (n, sum) = finite().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
                (n > 0).then(|| sum / n as f64)
            }
            Reduce::Increase => {
                let first = finite().next()?;
                let last = finite().next_back()?;
                Some(last - first)
            }
            Reduce::Rise => {
                let last = finite().next_back()?;
                let min = finite().reduce(f64::min)?;
                (min > 0.0).then(|| last / min)
            }
            Reduce::NonFinite => (!samples.is_empty())
                .then(|| samples.iter().filter(|s| !s.v.is_finite()).count() as f64),
        }
    }
}

/// One of the run's charts reduced over a window: `max(grad_norm) over 10m`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChartProbe {
    pub chart: Role,
    pub reduce: Reduce,
    #[serde(with = "crate::config::duration")]
    pub over: Duration,
}

impl ChartProbe {
    /// The reduced value over `(now - over, now]` of every series of this role (the worst —
    /// largest — across labelled series, e.g. per rank), or `None` without samples.
    pub fn value(&self, charts: &ChartSet, now: f64) -> Option<f64> {
        let from = now - self.over.as_secs_f64();
        charts
            .by_role(self.chart)
            .filter_map(|(_, s)| {
                let window: Vec<Sample> = s
                    .samples()
                    .iter()
                    .copied()
                    .filter(|x| x.t > from && x.t <= now)
                    .collect();
                self.reduce.apply(&window)
            })
            .reduce(|a, b| if b > a || a.is_nan() { b } else { a })
    }
}

impl fmt::Display for ChartProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}) over {}",
            self.reduce.as_str(),
            self.chart,
            humantime::format_duration(self.over)
        )
    }
}

/// A trigger condition on the run's charts: the runbook matches only when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChartCondition {
    #[serde(flatten)]
    pub probe: ChartProbe,
    pub op: Cmp,
    pub threshold: f64,
}

impl ChartCondition {
    /// `Some(true/false)` when the chart has samples in the window; `None` otherwise.
    pub fn holds(&self, charts: &ChartSet, now: f64) -> Option<bool> {
        self.probe
            .value(charts, now)
            .map(|v| self.op.holds(v, self.threshold))
    }
}

impl fmt::Display for ChartCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.probe, self.op, self.threshold)
    }
}

/// The answer to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    True,
    False,
    /// Nothing could answer it (no Prometheus, no chart, no samples).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::True => "true",
            Outcome::False => "false",
            Outcome::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check of a runbook's front matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    /// What the check tells apart, for the human and the audit log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// PromQL instant query; `$run` is replaced by the run's name before it is sent.
    pub promql: String,
    pub op: Cmp,
    pub threshold: f64,
    /// The run's chart that answers the check when no Prometheus does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartProbe>,
    /// Take this answer instead of `unknown` (`false`: "no evidence means no").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_as: Option<bool>,
}

impl Check {
    /// The outcomes this check can produce.
    pub fn possible(&self) -> Vec<Outcome> {
        match self.unknown_as {
            Some(_) => vec![Outcome::True, Outcome::False],
            None => vec![Outcome::True, Outcome::False, Outcome::Unknown],
        }
    }

    /// The PromQL for one run.
    pub fn query_for(&self, run: &str) -> String {
        self.promql.replace("$run", run)
    }

    fn decide(
        &self,
        value: Option<f64>,
        source: CheckSource,
        query: Option<String>,
        detail: String,
    ) -> CheckResult {
        let outcome = match value {
            Some(v) if self.op.holds(v, self.threshold) => Outcome::True,
            Some(v) if !v.is_nan() => Outcome::False,
            _ => match self.unknown_as {
                Some(true) => Outcome::True,
                Some(false) => Outcome::False,
                None => Outcome::Unknown,
            },
        };
        CheckResult {
            id: self.id.clone(),
            outcome,
            value: value.filter(|v| v.is_finite()),
            source,
            query,
            detail,
        }
    }
}

/// What answered a check (`promql`, `chart` or `unknown` in the audit log and the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSource {
    /// The [`CheckRunner`] answered the PromQL query (an empty result included).
    Promql,
    /// Prometheus was not configured or did not answer; the run's chart did.
    Chart,
    /// Nothing answered: the outcome is `unknown` (or the check's `unknown_as`).
    Unknown,
}

/// One evaluated check, as recorded with the diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub source: CheckSource,
    /// The PromQL sent (with `$run` replaced), when a [`CheckRunner`] was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub detail: String,
}

/// Outcomes by check id.
pub type Outcomes = BTreeMap<String, Outcome>;

/// Answers PromQL instant queries (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[async_trait]
pub trait CheckRunner: Send + Sync {
    /// The value of `promql` at `now`: `Ok(None)` for an empty result, the largest value when the
    /// result has several series; `Err` when the query could not be answered.
    async fn instant(&self, promql: &str, now: f64) -> Result<Option<f64>, String>;
}

/// How hard a [`CheckRunner`] is asked: the checks of one plan are queried at most
/// `concurrency` at a time, and a query without an answer after `timeout` counts as not
/// answered (the chart, then `unknown`, answer instead). Configured in `[checks]`
/// ([`crate::config::ChecksConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    pub timeout: Duration,
    pub concurrency: usize,
}

impl CheckLimits {
    /// 5 s per query, 4 at a time: the shipped runbooks ask at most two questions, so a dead
    /// Prometheus delays a diagnosis by 5 s at most while the loop holds its state.
    pub const DEFAULT: CheckLimits = CheckLimits {
        timeout: Duration::from_secs(5),
        concurrency: 4,
    };
    /// The longest timeout the config accepts: the loop waits this long on a dead Prometheus.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
    /// The most queries in flight the config accepts.
    pub const MAX_CONCURRENCY: usize = 64;
}

impl Default for CheckLimits {
    /// [`CheckLimits::DEFAULT`].
    fn default() -> Self {
        CheckLimits::DEFAULT
    }
}

/// A [`CheckRunner`] on a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir,
/// VictoriaMetrics): `GET {base}/api/v1/query?query=…&time=…`.
#[derive(Debug, Clone)]
pub struct PrometheusChecks {
    client: reqwest::Client,
    base: String,
    /// `base` as shown in errors (a password in it masked).
    shown: String,
}

impl PrometheusChecks {
    /// `client` carries timeouts, auth and TLS; `base` is the server URL (no `/api/v1`).
    pub fn new(client: reqwest::Client, base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_string();
        PrometheusChecks {
            client,
            shown: crate::app::redact(&base),
            base,
        }
    }

    /// The runner for `[sources.prometheus]`, with exactly the client the source polls with:
    /// URL, bearer or basic auth, extra headers (`X-Scope-OrgID`), TLS and timeouts.
    pub fn from_config(
        cfg: &crate::sources::prometheus::settings::PrometheusConfig,
    ) -> Result<Self, crate::sources::prometheus::http::SetupError> {
        let client = crate::sources::prometheus::http::build_client(cfg)?;
        Ok(PrometheusChecks::new(client.inner().clone(), &cfg.url))
    }
}

/// The value of an instant-query response: the largest finite sample of a vector, a scalar,
/// `None` for an empty vector.
fn instant_value(body: &serde_json::Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            body["error"].as_str().unwrap_or("no error message")
        ));
    }
    let sample = |v: &serde_json::Value| -> Result<f64, String> {
        v.get(1)
            .and_then(|x| x.as_str())
            .ok_or_else(|| "a sample without a value".to_string())?
            .parse::<f64>()
            .map_err(|e| format!("a sample that is not a number: {e}"))
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("scalar") => sample(&data["result"]).map(Some),
        Some("vector") => {
            let mut best: Option<f64> = None;
            for s in data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let v = sample(&s["value"])?;
                best = Some(match best {
                    Some(b) if b >= v || v.is_nan() => b,
                    _ => v,
                });
            }
            Ok(best)
        }
        other => Err(format!(
            "an instant query must return a vector or a scalar, got {}",
            other.unwrap_or("nothing")
        )),
    }
}

#[async_trait]
impl CheckRunner for PrometheusChecks {
    async fn instant(&self, promql: &str, now: f64) -> Result<Option<f64>, String> {
        let url = format!("{}/api/v1/query", self.base);
        let shown = format!("{}/api/v1/query", self.shown);
        let time = format!("{now:.3}");
        let res = self
            .client
            .get(&url)
            .query(&[("query", promql), ("time", time.as_str())])
            .send()
            .await
            // Without the URL: it may carry credentials; `shown` has them masked.
            .map_err(|e| format!("GET {shown}: {}", error_chain(&e.without_url())))?;
        let status = res.status();
        let body: serde_json::Value = res
            .json()
            .await
            .map_err(|e| format!("GET {shown}: {status}: not JSON: {}", e.without_url()))?;
        instant_value(&body).map_err(|e| format!("GET {shown}: {status}: {e}"))
    }
}

/// An error with its causes ("error sending request" alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Answers a check from the run's charts only (no PromQL): the simulator, replay, and the
/// fallback when Prometheus does not answer.
pub fn evaluate_on_charts(check: &Check, charts: Option<&ChartSet>, now: f64) -> CheckResult {
    match (check.chart, charts) {
        (Some(probe), Some(charts)) => {
            let value = probe.value(charts, now);
            let detail = match value {
                Some(v) => format!(
                    "{probe} = {v} ({} {} {})",
                    check.op,
                    check.threshold,
                    check.op.holds(v, check.threshold)
                ),
                None => format!("{probe}: no samples"),
            };
            let source = if value.is_some() {
                CheckSource::Chart
            } else {
                CheckSource::Unknown
            };
            check.decide(value, source, None, detail)
        }
        (Some(probe), None) => check.decide(
            None,
            CheckSource::Unknown,
            None,
            format!("{probe}: no charts"),
        ),
        (None, _) => check.decide(
            None,
            CheckSource::Unknown,
            None,
            "no Prometheus answered the query and no `chart` can answer it".to_string(),
        ),
    }
}

/// Answers every check: through `runner` when given (at most `limits.concurrency` queries at
/// a time, each bounded by `limits.timeout`), falling back to the charts for a query that
/// failed or timed out, else `unknown`. Results are in the order of `checks`.
pub async fn evaluate_all(
    checks: &[Check],
    run: &str,
    runner: Option<&dyn CheckRunner>,
    charts: Option<&ChartSet>,
    now: f64,
    limits: CheckLimits,
) -> Vec<CheckResult> {
    use futures::StreamExt;
    let Some(runner) = runner else {
        return evaluate_all_on_charts(checks, charts, now);
    };
    let timeout = limits.timeout;
    // Owned queries and a plain `fn`-like closure: a closure over `&Check` would make the
    // future not `Send` for every lifetime (rust-lang/rust#64552) and the loop could not spawn.
    let queries: Vec<String> = checks.iter().map(|c| c.query_for(run)).collect();
    let ask = |query: String| async move {
        let answer = match tokio::time::timeout(timeout, runner.instant(&query, now)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )),
        };
        (query, answer)
    };
    let answers: Vec<(String, Result<Option<f64>, String>)> = futures::stream::iter(queries)
        .map(ask)
        .buffered(limits.concurrency.max(1))
        .collect()
        .await;
    checks
        .iter()
        .zip(answers)
        .map(|(check, (query, answer))| {
            let why = match answer {
                Ok(Some(v)) => {
                    let detail = format!(
                        "`{query}` = {v} ({} {} {})",
                        check.op,
                        check.threshold,
                        check.op.holds(v, check.threshold)
                    );
                    return check.decide(Some(v), CheckSource::Promql, Some(query), detail);
                }
                // No series: the metric may have another name here, or the run is not in this
                // Prometheus (the charts may still come from elsewhere).
                Ok(None) => format!("`{query}`: empty result"),
                Err(e) => format!("Prometheus did not answer ({e})"),
            };
            let mut r = evaluate_on_charts(check, charts, now);
            r.detail = format!("{why}; {}", r.detail);
            r.query = Some(query);
            r
        })
        .collect()
}

/// Answers every check from the charts (synchronous; what diagnosis uses).
pub fn evaluate_all_on_charts(
    checks: &[Check],
    charts: Option<&ChartSet>,
    now: f64,
) -> Vec<CheckResult> {
    checks
        .iter()
        .map(|c| evaluate_on_charts(c, charts, now))
        .collect()
}

/// Does `promql` parse? The error message of the parser otherwise.
pub fn parse_promql(promql: &str) -> Result<(), String> {
    promql_parser::parser::parse(promql)
        .map(|_| ())
        .map_err(|e| e.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{ChartKey, Series};

    fn charts(role: Role, samples: &[(f64, f64)]) -> ChartSet {
        let mut c = ChartSet::new();
        c.insert(
            ChartKey::new(role),
            Series::from_samples(samples.iter().map(|&(t, v)| Sample::new(t, v))),
        );
        c
    }

    fn check(chart: Option<ChartProbe>, unknown_as: Option<bool>) -> Check {
        Check {
            id: "xid".into(),
            description: String::new(),
            promql: "increase(xid_total{run=\"$run\"}[30m])".into(),
            op: Cmp::Gt,
            threshold: 0.0,
            chart,
            unknown_as,
        }
    }

    const XID_30M: ChartProbe = ChartProbe {
        chart: Role::XidErrors,
        reduce: Reduce::Increase,
        over: Duration::from_secs(1800),
    };

    #[test]
    fn reductions() {
        let s = [
            Sample::new(1.0, 2.0),
            Sample::new(2.0, f64::NAN),
            Sample::new(3.0, 5.0),
        ];
        assert_eq!(Reduce::Last.apply(&s), Some(5.0));
        assert_eq!(Reduce::Max.apply(&s), Some(5.0));
        assert_eq!(Reduce::Min.apply(&s), Some(2.0));
        assert_eq!(Reduce::Mean.apply(&s), Some(3.5));
        assert_eq!(Reduce::Increase.apply(&s), Some(3.0));
        assert_eq!(Reduce::NonFinite.apply(&s), Some(1.0));
        assert_eq!(Reduce::Rise.apply(&s), Some(2.5));
        assert_eq!(Reduce::Max.apply(&[]), None);
        assert_eq!(Reduce::NonFinite.apply(&[]), None);
    }

    #[test]
    fn chart_check_outcomes() {
        let c = charts(Role::XidErrors, &[(0.0, 3.0), (1000.0, 3.0), (1900.0, 5.0)]);
        let r = evaluate_on_charts(&check(Some(XID_30M), None), Some(&c), 2000.0);
        assert_eq!(r.outcome, Outcome::True);
        assert_eq!(r.value, Some(2.0));
        assert_eq!(r.source, CheckSource::Chart);
        // The window (200, 2000] holds 3 → 5; at 4000 it holds nothing.
        let r = evaluate_on_charts(&check(Some(XID_30M), None), Some(&c), 4000.0);
        assert_eq!(r.outcome, Outcome::Unknown);
        let r = evaluate_on_charts(&check(Some(XID_30M), Some(false)), Some(&c), 4000.0);
        assert_eq!(r.outcome, Outcome::False);
        let flat = charts(Role::XidErrors, &[(0.0, 3.0), (100.0, 3.0)]);
        let r = evaluate_on_charts(&check(Some(XID_30M), None), Some(&flat), 120.0);
        assert_eq!(r.outcome, Outcome::False);
        assert_eq!(r.value, Some(0.0));
        let r = evaluate_on_charts(&check(None, None), Some(&flat), 120.0);
        assert_eq!(r.outcome, Outcome::Unknown);
        assert_eq!(r.source, CheckSource::Unknown);
    }

    struct Fixed(Result<Option<f64>, String>);

    #[async_trait]
    impl CheckRunner for Fixed {
        async fn instant(&self, promql: &str, _now: f64) -> Result<Option<f64>, String> {
            assert_eq!(promql, "increase(xid_total{run=\"run-a\"}[30m])");
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn runner_answers_first_and_charts_are_the_fallback() {
        let c = charts(Role::XidErrors, &[(0.0, 3.0), (100.0, 3.0)]);
        let checks = [check(Some(XID_30M), None)];
        let limits = CheckLimits::default();
        let ask = |answer: Result<Option<f64>, String>, charts: Option<ChartSet>| {
            let checks = checks.clone();
            async move {
                evaluate_all(
                    &checks,
                    "run-a",
                    Some(&Fixed(answer)),
                    charts.as_ref(),
                    120.0,
                    limits,
                )
                .await
            }
        };
        // Prometheus says 4 new Xid errors while the chart says none: Prometheus wins.
        let r = ask(Ok(Some(4.0)), Some(c.clone())).await;
        assert_eq!(
            (r[0].outcome, r[0].source, r[0].value),
            (Outcome::True, CheckSource::Promql, Some(4.0))
        );
        assert_eq!(
            r[0].query.as_deref(),
            Some("increase(xid_total{run=\"run-a\"}[30m])")
        );
        assert_eq!(
            r[0].detail,
            "`increase(xid_total{run=\"run-a\"}[30m])` = 4 (> 0 true)"
        );
        // An empty result: the chart answers (0 new errors: false).
        let r = ask(Ok(None), Some(c.clone())).await;
        assert_eq!(
            (r[0].outcome, r[0].source, r[0].value),
            (Outcome::False, CheckSource::Chart, Some(0.0))
        );
        assert!(
            r[0].detail.contains("empty result; increase(xid_errors)"),
            "{}",
            r[0].detail
        );
        // A failed query: the chart answers.
        let r = ask(Err("down".into()), Some(c.clone())).await;
        assert_eq!(
            (r[0].outcome, r[0].source),
            (Outcome::False, CheckSource::Chart)
        );
        assert!(
            r[0].detail
                .starts_with("Prometheus did not answer (down); "),
            "{}",
            r[0].detail
        );
        // Neither answers: unknown.
        let r = ask(Err("down".into()), None).await;
        assert_eq!(
            (r[0].outcome, r[0].source, r[0].value),
            (Outcome::Unknown, CheckSource::Unknown, None)
        );
    }

    /// A runner that never answers.
    struct Hung;

    #[async_trait]
    impl CheckRunner for Hung {
        async fn instant(&self, _promql: &str, _now: f64) -> Result<Option<f64>, String> {
            std::future::pending().await
        }
    }

    /// A runner that counts how many queries run at once.
    struct Counting {
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl CheckRunner for Counting {
        async fn instant(&self, _promql: &str, _now: f64) -> Result<Option<f64>, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.now.fetch_sub(1, SeqCst);
            Ok(Some(1.0))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_runner_times_out_and_queries_are_bounded() {
        let c = charts(Role::XidErrors, &[(0.0, 3.0), (100.0, 5.0)]);
        let checks: Vec<Check> = (0..3)
            .map(|i| Check {
                id: format!("c{i}"),
                ..check(Some(XID_30M), None)
            })
            .collect();
        let limits = CheckLimits {
            timeout: Duration::from_secs(2),
            concurrency: 2,
        };
        let started = tokio::time::Instant::now();
        let r = evaluate_all(&checks, "run-a", Some(&Hung), Some(&c), 120.0, limits).await;
        // Two rounds (2 + 1 queries) of one 2 s deadline each; every check answered by the chart.
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert!(r.iter().all(|r| {
            r.outcome == Outcome::True
                && r.source == CheckSource::Chart
                && r.detail
                    .starts_with("Prometheus did not answer (no answer within 2s); ")
        }));
        assert_eq!(
            r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["c0", "c1", "c2"]
        );

        let counting = Counting {
            now: Default::default(),
            peak: Default::default(),
        };
        let r = evaluate_all(&checks, "run-a", Some(&counting), None, 120.0, limits).await;
        assert!(r.iter().all(|r| r.source == CheckSource::Promql));
        assert_eq!(counting.peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn instant_values_from_prometheus_responses() {
        use serde_json::json;
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"gpu": "0"}, "value": [1.0, "2"]},
            {"metric": {"gpu": "1"}, "value": [1.0, "5.5"]}]}});
        assert_eq!(instant_value(&vector), Ok(Some(5.5)));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(instant_value(&empty), Ok(None));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "1"]}});
        assert_eq!(instant_value(&scalar), Ok(Some(1.0)));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(instant_value(&matrix).is_err());
        let err = json!({"status": "error", "error": "parse error"});
        assert_eq!(
            instant_value(&err),
            Err("query failed: parse error".to_string())
        );
    }

    #[tokio::test]
    async fn prometheus_runner_sends_the_query_and_time() {
        use axum::extract::Query;
        use std::collections::HashMap;
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
                let ok = q.get("query").map(String::as_str) == Some("up{run=\"run-a\"}")
                    && q.get("time").map(String::as_str) == Some("120.000");
                axum::Json(
                    serde_json::json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {}, "value": [120.0, if ok { "1" } else { "0" }]}]}}),
                )
            }),
        );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let runner = PrometheusChecks::new(reqwest::Client::new(), format!("http://{addr}/"));
        let check = Check {
            id: "up".into(),
            description: String::new(),
            promql: "up{run=\"$run\"}".into(),
            op: Cmp::Eq,
            threshold: 1.0,
            chart: None,
            unknown_as: None,
        };
        let r = evaluate_all(
            &[check],
            "run-a",
            Some(&runner),
            None,
            120.0,
            CheckLimits::default(),
        )
        .await;
        assert_eq!(
            (r[0].outcome, r[0].source),
            (Outcome::True, CheckSource::Promql)
        );
        assert_eq!(r[0].value, Some(1.0));
    }

    #[tokio::test]
    async fn prometheus_runner_from_config_sends_the_sources_auth_and_tenant() {
        use axum::http::HeaderMap;
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(|headers: HeaderMap| async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                let ok = h("x-scope-orgid") == "team-a" && h("authorization") == "Bearer s3cret";
                axum::Json(serde_json::json!({"status": "success", "data": {
                    "resultType": "scalar", "result": [1.0, if ok { "7" } else { "-1" }]}}))
            }),
        );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut cfg =
            crate::sources::prometheus::settings::PrometheusConfig::new(format!("http://{addr}/"));
        cfg.headers.insert("X-Scope-OrgID".into(), "team-a".into());
        cfg.bearer_token = Some(crate::sources::prometheus::settings::Secret(
            "s3cret".into(),
        ));
        let runner = match PrometheusChecks::from_config(&cfg) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(runner.instant("vector(7)", 1.0).await, Ok(Some(7.0)));
    }

    #[test]
    fn promql_parses_or_says_why() {
        assert_eq!(parse_promql("increase(x{run=\"$run\"}[30m]) > 0"), Ok(()));
        assert!(parse_promql("sum(rate(x[5m])").is_err());
        assert!(parse_promql("").is_err());
    }

    #[test]
    fn trigger_condition() {
        let c = charts(Role::GradNorm, &[(0.0, 1.0), (50.0, 150.0)]);
        let cond = ChartCondition {
            probe: ChartProbe {
                chart: Role::GradNorm,
                reduce: Reduce::Max,
                over: Duration::from_secs(600),
            },
            op: Cmp::Gt,
            threshold: 100.0,
        };
        assert_eq!(cond.holds(&c, 60.0), Some(true));
        assert_eq!(cond.holds(&c, 10_000.0), None);
        assert_eq!(cond.to_string(), "max(grad_norm) over 10m > 100");
    }
}
