//! Runbook checks: the questions a runbook asks before it picks its steps ("did a GPU throw Xid
//! errors in the last 30 minutes?", "is the loss still finite?"), and trigger chart conditions.
//!
//! A check is a PromQL instant query with a threshold. It is answered, in order of preference,
//! by a [`CheckRunner`] (Prometheus, when babysitter reads one), else by the run's own chart
//! named in `chart` (the charts babysitter already polls — the simulator and replay answer
//! checks this way), else it is `unknown`. An unknown check takes the branch written for
//! `unknown` (or `unknown_as`), so a runbook always yields a plan. Evaluation on charts is a pure
//! function of the charts and `now`.

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

    fn decide(&self, value: Option<f64>, source: CheckSource, detail: String) -> CheckResult {
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
            detail,
        }
    }
}

/// What answered a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSource {
    Prometheus,
    Chart,
    /// Nothing answered.
    None,
}

/// One evaluated check, as recorded with the diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub source: CheckSource,
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

/// A [`CheckRunner`] on a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir,
/// VictoriaMetrics): `GET {base}/api/v1/query?query=…&time=…`.
#[derive(Debug, Clone)]
pub struct PrometheusChecks {
    client: reqwest::Client,
    base: String,
}

impl PrometheusChecks {
    /// `client` carries timeouts, auth and TLS; `base` is the server URL (no `/api/v1`).
    pub fn new(client: reqwest::Client, base: impl Into<String>) -> Self {
        PrometheusChecks {
            client,
            base: base.into().trim_end_matches('/').to_string(),
        }
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
        let time = format!("{now:.3}");
        let res = self
            .client
            .get(&url)
            .query(&[("query", promql), ("time", time.as_str())])
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = res.status();
        let body: serde_json::Value = res
            .json()
            .await
            .map_err(|e| format!("GET {url}: {status}: not JSON: {e}"))?;
        instant_value(&body).map_err(|e| format!("GET {url}: {status}: {e}"))
    }
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
                CheckSource::None
            };
            check.decide(value, source, detail)
        }
        (Some(probe), None) => check.decide(None, CheckSource::None, format!("{probe}: no charts")),
        (None, _) => check.decide(
            None,
            CheckSource::None,
            "no Prometheus to run the query and no `chart` to answer it".to_string(),
        ),
    }
}

/// Answers every check: through `runner` when given (falling back to the charts when the
/// query fails), else from the charts.
pub async fn evaluate_all(
    checks: &[Check],
    run: &str,
    runner: Option<&dyn CheckRunner>,
    charts: Option<&ChartSet>,
    now: f64,
) -> Vec<CheckResult> {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let result = match runner {
            Some(r) => {
                let query = check.query_for(run);
                match r.instant(&query, now).await {
                    Ok(v) => check.decide(
                        v,
                        CheckSource::Prometheus,
                        match v {
                            Some(v) => {
                                format!("`{query}` = {v} ({} {})", check.op, check.threshold)
                            }
                            None => format!("`{query}`: empty result"),
                        },
                    ),
                    Err(e) => {
                        let mut r = evaluate_on_charts(check, charts, now);
                        r.detail = format!("Prometheus did not answer ({e}); {}", r.detail);
                        r
                    }
                }
            }
            None => evaluate_on_charts(check, charts, now),
        };
        out.push(result);
    }
    out
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
        assert_eq!(r.source, CheckSource::None);
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
        let r = evaluate_all(
            &checks,
            "run-a",
            Some(&Fixed(Ok(Some(4.0)))),
            Some(&c),
            120.0,
        )
        .await;
        assert_eq!(
            (r[0].outcome, r[0].source),
            (Outcome::True, CheckSource::Prometheus)
        );
        let r = evaluate_all(&checks, "run-a", Some(&Fixed(Ok(None))), Some(&c), 120.0).await;
        assert_eq!(r[0].outcome, Outcome::Unknown);
        let r = evaluate_all(
            &checks,
            "run-a",
            Some(&Fixed(Err("down".into()))),
            Some(&c),
            120.0,
        )
        .await;
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
        let r = evaluate_all(&[check], "run-a", Some(&runner), None, 120.0).await;
        assert_eq!(
            (r[0].outcome, r[0].source),
            (Outcome::True, CheckSource::Prometheus)
        );
        assert_eq!(r[0].value, Some(1.0));
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
