//! The HTTP API, called through the router without a socket (and once over a real socket).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use babysitter::incident::IncidentState;
use common::Harness;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(h: &Harness, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_as(h, Some(common::OPERATOR_TOKEN), method, uri, body).await
}

async fn call_as(
    h: &Harness,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let router = babysitter::api::router(h.engine.clone());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn gpu_harness() -> Harness {
    Harness::new(
        vec![("run-c", common::xid_fault()), ("run-h", vec![])],
        |_| {},
    )
    .await
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = gpu_harness().await;
    assert_eq!(call(&h, "GET", "/healthz", None).await.0, StatusCode::OK);
    // Not ready before the first poll.
    let (status, body) = call(&h, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    h.tick().await;
    let (status, body) = call(&h, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    let (status, body) = call(&h, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str().unwrap().contains("babysitter_polls_total 1"),
        "{body}"
    );
}

#[tokio::test]
async fn watches_incidents_approval_and_audit() {
    let h = gpu_harness().await;
    assert!(h.until_approval_pending().await);

    let (status, body) = call(&h, "GET", "/api/v1/watches", None).await;
    assert_eq!(status, StatusCode::OK);
    let watches = body["watches"].as_array().unwrap();
    assert_eq!(watches.len(), 2);
    let c = watches.iter().find(|w| w["run"] == "run-c").unwrap();
    assert_eq!(c["status"], "paused");
    assert!(c["latest"]["xid_errors"].as_f64().unwrap() >= 1.0, "{c}");
    assert_eq!(
        call(&h, "GET", "/api/v1/watches/run-h", None).await.1["status"],
        "running"
    );
    let (status, body) = call(&h, "GET", "/api/v1/watches/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nope"));

    let (_, body) = call(&h, "GET", "/api/v1/incidents?open=true", None).await;
    let list = body["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["state"], "awaiting_approval");
    assert_eq!(list[0]["runbook"], "gpu-hardware-error");
    let (status, _) = call(&h, "GET", "/api/v1/incidents?state=bogus", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, inc) = call(&h, "GET", &format!("/api/v1/incidents/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inc["findings"][0]["kind"], "gpu_hardware_error");
    assert!(!inc["decisions"].as_array().unwrap().is_empty());
    let action_id = inc["pending"]["id"].as_str().unwrap().to_string();

    let (_, pending) = call(&h, "GET", "/api/v1/actions/pending", None).await;
    assert_eq!(pending["pending"][0]["id"], action_id.as_str());

    // Bad bodies are refused with the field named; nothing is approved.
    let approve = format!("/api/v1/actions/{action_id}/approve");
    let (status, body) = call(&h, "POST", &approve, Some(json!({"who": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("who"), "{body}");
    let (status, body) = call(&h, "POST", &approve, Some(json!({"by": "  "}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("by"));
    let (status, _) = call(
        &h,
        "POST",
        "/api/v1/actions/nope/approve",
        Some(json!({"by": "a"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = call(
        &h,
        "POST",
        &approve,
        Some(json!({"by": "alice", "reason": "go"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pending"]["approved_by"], "alice");
    let (status, _) = call(&h, "POST", &approve, Some(json!({"by": "bob"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);

    assert!(
        h.until(3600.0, |v| v.incidents.values().all(|i| i.state.is_final()))
            .await
    );
    let (_, inc) = call(&h, "GET", &format!("/api/v1/incidents/{id}"), None).await;
    assert_eq!(inc["state"], "resolved", "{inc}");

    // The audit log, filtered.
    let (status, body) = call(&h, "GET", &format!("/api/v1/audit?incident={id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let entries = body["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["incident"] == id.as_str()));
    let approved = entries.iter().find(|e| e["kind"] == "approved").unwrap();
    assert_eq!(approved["actor"], "api:alice");
    let (_, body) = call(&h, "GET", "/api/v1/audit?run=run-h", None).await;
    assert!(
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["run"] == "run-h")
    );
    let (_, body) = call(&h, "GET", "/api/v1/audit?kind=approved", None).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    let (status, _) = call(&h, "GET", "/api/v1/audit?since=yesterday", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &h,
        "GET",
        "/api/v1/audit?since=2000-01-01T00:00:00Z&limit=5",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["entries"].as_array().unwrap().len(), 5);
    let (status, body) = call(&h, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);

    // A day later the finished incident has left memory, but the API still serves it.
    h.clock.advance(25.0 * 3600.0);
    h.engine.tick().await;
    assert!(!h.engine.view().incidents.contains_key(&id));
    let (status, inc) = call(&h, "GET", &format!("/api/v1/incidents/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["state"], "resolved");
}

#[tokio::test]
async fn unknown_endpoints_and_oversized_bodies() {
    let h = gpu_harness().await;
    let (status, body) = call(&h, "GET", "/api/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let big = json!({"by": "a", "reason": "x".repeat(100_000)});
    let (status, _) = call(&h, "POST", "/api/v1/actions/x/approve", Some(big)).await;
    assert!(
        status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST,
        "{status}"
    );
}

#[tokio::test]
async fn runbooks_are_listed_rendered_and_executed_through_the_gate() {
    let h = gpu_harness().await;
    h.tick().await;
    let (status, body) = call(&h, "GET", "/api/v1/runbooks", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"hang") && ids.contains(&"loss-spike"),
        "{ids:?}"
    );
    let (status, rb) = call(&h, "GET", "/api/v1/runbooks/hang", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rb["html"].as_str().unwrap().contains("<h1>"), "{rb}");
    assert!(rb["markdown"].as_str().unwrap().starts_with("# "));
    assert_eq!(
        call(&h, "GET", "/api/v1/runbooks/nope", None).await.0,
        StatusCode::NOT_FOUND
    );

    // Dry run: the plan with resolved checkpoints and the gate's decisions; nothing happens.
    let (status, plan) = call(
        &h,
        "POST",
        "/api/v1/runbooks/hang/execute",
        Some(json!({"run": "run-h", "by": "alice", "dry_run": true, "reason": "looks stuck"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["mode"], "dry_run");
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["action"]["type"], "capture_diagnostics");
    assert!(
        steps[1]["action"]["checkpoint"]["step"].as_u64().is_some(),
        "{plan}"
    );
    assert!(
        steps.iter().all(|s| s["decision"]["verdict"] == "allow"),
        "{plan}"
    );
    assert_eq!(h.sim.status("run-h").unwrap().restarts, 0);
    let (_, audit) = call(&h, "GET", "/api/v1/audit?kind=runbook_dry_run", None).await;
    let e = &audit["entries"][0];
    assert_eq!(e["actor"], "api:alice");
    assert_eq!(e["run"], "run-h");

    // Bad requests name the field; unknown runs are 404.
    let url = "/api/v1/runbooks/hang/execute";
    let (status, body) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-h", "dryrun": true})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("dryrun"), "{body}");
    let (status, _) = call(&h, "POST", url, Some(json!({"run": "nope", "by": "a"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Real execution: an incident runs the plan through the same gate and audit log.
    let (status, res) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-h", "by": "alice"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{res}");
    let id = res["incident"]["id"].as_str().unwrap().to_string();
    assert_eq!(res["incident"]["requested_by"], "alice");
    assert_eq!(res["incident"]["state"], "verifying", "{res}");
    assert_eq!(h.sim.status("run-h").unwrap().restarts, 1);
    // A second request while it is live is refused.
    let (status, body) = call(&h, "POST", url, Some(json!({"run": "run-h", "by": "bob"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        h.until(3600.0, |v| v
            .incidents
            .get(&id)
            .is_some_and(|i| i.state.is_final()))
            .await
    );
    assert_eq!(
        h.engine.view().incidents[&id].state,
        IncidentState::Resolved
    );
    let (_, audit) = call(&h, "GET", &format!("/api/v1/audit?incident={id}"), None).await;
    let kinds: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "runbook_executed",
        "incident_opened",
        "decision",
        "action_intent",
        "action_outcome",
        "incident_resolved",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(audit["entries"][0]["actor"], "api:alice");
}

#[tokio::test]
async fn an_executed_runbook_cannot_get_past_the_policy() {
    let h = Harness::new(vec![("run-h", vec![])], |cfg| cfg.policy.read_only = true).await;
    h.tick().await;
    let url = "/api/v1/runbooks/hang/execute";
    let (_, plan) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-h", "by": "mallory", "dry_run": true})),
    )
    .await;
    assert_eq!(plan["steps"][1]["decision"]["verdict"], "deny", "{plan}");
    assert_eq!(plan["steps"][1]["decision"]["rule"], "read_only");
    let (status, res) = call(
        &h,
        "POST",
        url,
        Some(json!({"run": "run-h", "by": "mallory"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(res["incident"]["state"], "escalated", "{res}");
    assert_eq!(h.sim.status("run-h").unwrap().restarts, 0);
}

#[tokio::test]
async fn every_mutation_needs_an_operator_token() {
    let h = gpu_harness().await;
    assert!(h.until_approval_pending().await);
    let action = h.incidents_of("run-c")[0].pending.clone().unwrap().id;
    let mutations = [
        format!("/api/v1/actions/{action}/approve"),
        format!("/api/v1/actions/{action}/reject"),
        "/api/v1/runbooks/hang/execute".to_string(),
    ];
    let body = json!({"run": "run-h", "dry_run": true});
    for uri in &mutations {
        let b = if uri.contains("execute") {
            body.clone()
        } else {
            json!({})
        };
        let (status, res) = call_as(&h, None, "POST", uri, Some(b.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {res}");
        let (status, _) = call_as(&h, Some("not-a-token"), "POST", uri, Some(b.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let (status, res) =
            call_as(&h, Some(common::VIEWER_TOKEN), "POST", uri, Some(b.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {res}");
        assert!(res["error"].as_str().unwrap().contains("operator"), "{res}");
    }
    // Nothing was approved or rejected by those calls.
    assert_eq!(
        h.incidents_of("run-c")[0].state,
        IncidentState::AwaitingApproval
    );
    // The operator's approval is recorded under the token's name, on behalf of whom it says.
    let (status, _) = call(
        &h,
        "POST",
        &mutations[0],
        Some(json!({"by": "on-call lead"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, audit) = call(&h, "GET", "/api/v1/audit?kind=approved", None).await;
    assert_eq!(audit["entries"][0]["actor"], "api:alice");
    assert_eq!(audit["entries"][0]["payload"]["by"], "on-call lead");
    // Reads are open by default; health and metrics always are.
    assert_eq!(
        call_as(&h, None, "GET", "/api/v1/watches", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call_as(&h, None, "GET", "/metrics", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn closed_reads_and_no_tokens_at_all() {
    let h = Harness::new(vec![("run-h", vec![])], |cfg| cfg.api.read_open = false).await;
    h.tick().await;
    let (status, _) = call_as(&h, None, "GET", "/api/v1/watches", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call_as(
        &h,
        Some(common::VIEWER_TOKEN),
        "GET",
        "/api/v1/watches",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call_as(&h, None, "GET", "/healthz", None).await.0,
        StatusCode::OK
    );

    // With no tokens configured, nothing can be changed over the API.
    let h = Harness::new(vec![("run-h", vec![])], |cfg| cfg.api.tokens.clear()).await;
    h.tick().await;
    let (status, res) = call_as(
        &h,
        Some(common::OPERATOR_TOKEN),
        "POST",
        "/api/v1/runbooks/hang/execute",
        Some(json!({"run": "run-h"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{res}");
    let (status, res) = call_as(
        &h,
        None,
        "POST",
        "/api/v1/runbooks/hang/execute",
        Some(json!({"run": "run-h"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{res}");
    assert!(
        res["error"].as_str().unwrap().contains("api.tokens"),
        "{res}"
    );
    assert_eq!(h.sim.status("run-h").unwrap().restarts, 0);
}
