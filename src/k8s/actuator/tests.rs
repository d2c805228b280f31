//! The actuator against a mock API server (the kube-rs "ApiServerVerifier" pattern): every
//! request of every action on every workload kind is asserted — method, path, query, content
//! type and JSON body — and answered the way the API server would.

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_test::mock;

use super::*;
use crate::act::{ChangeOp, ConfigChange};
use crate::clock::ManualClock;

const NS: &str = "ml";
const NAME: &str = "llm";
const KEY: &str = "inc-7/step-2";
/// 2025-11-24T17:01:40.250Z
const NOW: f64 = 1_764_003_700.25;
const EVENT_TIME: &str = "2025-11-24T17:01:40.250000Z";
const CHECKPOINTS: &str = r#"[{"step":1000,"t":1764000000},{"step":2000,"t":1764003600}]"#;

/// One expected request and the answer to it.
struct Call {
    method: &'static str,
    path: String,
    query: String,
    content_type: Option<&'static str>,
    body: Option<Value>,
    status: u16,
    reply: Vec<u8>,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Call {
            method,
            path: path.into(),
            query: String::new(),
            content_type: None,
            body: None,
            status: 200,
            reply: b"{}".to_vec(),
        }
    }
    fn get(path: impl Into<String>) -> Self {
        Call::new("GET", path)
    }
    fn query(mut self, q: &str) -> Self {
        self.query = q.to_string();
        self
    }
    fn merge_patch(path: impl Into<String>, body: Value) -> Self {
        let mut c = Call::new("PATCH", path);
        c.content_type = Some("application/merge-patch+json");
        c.body = Some(body);
        c
    }
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn reply(mut self, status: u16, v: &Value) -> Self {
        self.status = status;
        self.reply = serde_json::to_vec(v).expect("reply serializes");
        self
    }
    fn reply_text(mut self, text: &str) -> Self {
        self.reply = text.as_bytes().to_vec();
        self
    }
}

/// Runs `action` against a mock API server that expects exactly `calls`, in order.
async fn scenario(
    target: &Target,
    action: &Action,
    calls: Vec<Call>,
) -> Result<ActionOutcome, ActError> {
    against(calls, |act| async move {
        act.execute(target, action, KEY).await
    })
    .await
}

/// Runs `recall` of `action` against a mock API server that expects exactly `calls`, in order.
async fn recall_scenario(
    target: &Target,
    action: &Action,
    calls: Vec<Call>,
) -> Result<Option<ActionOutcome>, ActError> {
    against(
        calls,
        |act| async move { act.recall(target, action, KEY).await },
    )
    .await
}

/// Runs `f` with an actuator whose API server expects exactly `calls`, in order, and answers
/// each as given.
async fn against<T, F, Fut>(calls: Vec<Call>, f: F) -> T
where
    F: FnOnce(KubeActuator) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let n = calls.len();
    let server = tokio::spawn(async move {
        for (i, c) in calls.into_iter().enumerate() {
            let what = format!("request {} of {n} ({} {})", i + 1, c.method, c.path);
            let (req, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("{what} was never made"));
            assert_eq!(req.method().as_str(), c.method, "{what}: method");
            assert_rbac_allows(c.method, req.uri().path());
            assert_eq!(req.uri().path(), c.path, "{what}: path");
            // Parameters in order; kube leaves an empty leading pair (`?&a=b`) the server ignores.
            let params = |q: &str| -> Vec<String> {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(
                params(req.uri().query().unwrap_or("")),
                params(&c.query),
                "{what}: query"
            );
            if let Some(ct) = c.content_type {
                assert_eq!(
                    req.headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok()),
                    Some(ct),
                    "{what}: content type"
                );
            }
            let bytes = req
                .into_body()
                .collect_bytes()
                .await
                .expect("request body readable");
            match &c.body {
                Some(want) => {
                    let got: Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {bytes:?}"));
                    assert_eq!(&got, want, "{what}: body");
                }
                None => assert!(bytes.is_empty(), "{what}: unexpected body {bytes:?}"),
            }
            send.send_response(
                Response::builder()
                    .status(c.status)
                    .body(Body::from(c.reply))
                    .expect("response builds"),
            );
        }
    });
    let opts = KubeActuatorOptions {
        instance: "babysitter-0".into(),
        clock: ManualClock::new(NOW),
        log_lines: 20,
        log_bytes: 4096,
        max_pods: 4,
        max_events: 2,
        recreate_timeout: Duration::from_secs(5),
        recreations: Default::default(),
    };
    let act = KubeActuator::new(Client::new(svc, "default"), opts);
    let out = tokio::time::timeout(Duration::from_secs(10), f(act))
        .await
        .expect("the actuator finished (an unexpected extra request would hang it)");
    server
        .await
        .expect("every expected request was made as expected");
    out
}

/// One rule of deploy/rbac/actuator-rules.yaml.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyRule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// Every request the actuator makes must be allowed by the RBAC rules the chart ships.
fn assert_rbac_allows(method: &str, path: &str) {
    let rules: Vec<PolicyRule> =
        serde_saphyr::from_str(include_str!("../../../deploy/rbac/actuator-rules.yaml"))
            .expect("deploy/rbac/actuator-rules.yaml parses");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/NS/RES[/NAME[/SUB]]
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", "namespaces", _, rest @ ..] => ("", rest),
        ["apis", group, _, "namespaces", _, rest @ ..] => (*group, rest),
        _ => panic!("unexpected API path {path}"),
    };
    let (resource, named) = match rest {
        [res] => (res.to_string(), false),
        [res, _] => (res.to_string(), true),
        [res, _, sub] => (format!("{res}/{sub}"), true),
        _ => panic!("unexpected API path {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("unexpected request {method} {path}"),
    };
    let allowed = rules.iter().any(|r| {
        r.api_groups.iter().any(|g| g == group)
            && r.resources.contains(&resource)
            && r.verbs.iter().any(|v| v == verb)
    });
    assert!(
        allowed,
        "{method} {path} needs `{verb}` on {group:?} {resource}, which deploy/rbac/actuator-rules.yaml does not grant"
    );
}

#[test]
fn rbac_rules_have_no_wildcards() {
    let rules: Vec<PolicyRule> =
        serde_saphyr::from_str(include_str!("../../../deploy/rbac/actuator-rules.yaml"))
            .expect("deploy/rbac/actuator-rules.yaml parses");
    assert_eq!(rules.len(), 9);
    for r in &rules {
        for v in r.api_groups.iter().chain(&r.resources).chain(&r.verbs) {
            assert!(!v.contains('*'), "wildcard in {v}");
        }
    }
}

fn target(kind: WorkloadKind) -> Target {
    Target::Kubernetes {
        api_version: kind.api_version().into(),
        workload_kind: kind.kind().into(),
        namespace: NS.into(),
        name: NAME.into(),
    }
}

fn path(kind: WorkloadKind) -> String {
    let base = match kind {
        WorkloadKind::Job => "/apis/batch/v1".to_string(),
        WorkloadKind::JobSet => "/apis/jobset.x-k8s.io/v1alpha2".to_string(),
        WorkloadKind::PyTorchJob => "/apis/kubeflow.org/v1".to_string(),
        WorkloadKind::TrainJob => "/apis/trainer.kubeflow.org/v1alpha1".to_string(),
    };
    format!("{base}/namespaces/{NS}/{}/{NAME}", kind.plural())
}

fn collection(kind: WorkloadKind) -> String {
    path(kind).trim_end_matches(&format!("/{NAME}")).to_string()
}

/// A live object of each kind, as the API server returns it.
fn fixture(kind: WorkloadKind) -> Value {
    let meta = |config: &str| {
        json!({"name": NAME, "namespace": NS, "uid": "uid-1", "resourceVersion": "41",
            "creationTimestamp": "2025-11-24T10:00:00Z", "generation": 1,
            "annotations": {"babysitter.dev/checkpoints": CHECKPOINTS, "babysitter.dev/config": config}})
    };
    match kind {
        WorkloadKind::Job => json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": merged(meta(r#"{"lr": {"configMap": "llm-config", "key": "lr"}, "warmup": {"env": "WARMUP"}}"#),
                json!({"labels": {"batch.kubernetes.io/controller-uid": "uid-1", "controller-uid": "uid-1",
                    "batch.kubernetes.io/job-name": NAME, "team": "research"}})),
            "spec": {"suspend": false, "backoffLimit": 0,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "uid-1"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "uid-1",
                    "controller-uid": "uid-1", "batch.kubernetes.io/job-name": NAME}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "trainer", "image": "train:1", "env": [{"name": "WARMUP", "value": "100"}]}]}}},
            "status": {"active": 1, "startTime": "2025-11-24T10:00:01Z"}
        }),
        WorkloadKind::JobSet => json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": meta(r#"{"lr": {"configMap": "llm-config", "key": "lr"}}"#),
            "spec": {"suspend": false, "replicatedJobs": [{"name": "workers", "replicas": 2,
                "template": {"spec": {"parallelism": 1, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "train:1"}]}}}}}]},
            "status": {"restarts": 0}
        }),
        WorkloadKind::PyTorchJob => json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": meta(r#"{"lr": {"env": "LR", "container": "pytorch"}}"#),
            "spec": {"runPolicy": {"suspend": false, "cleanPodPolicy": "None"}, "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": {"spec": {"containers": [
                    {"name": "pytorch", "image": "train:1", "env": [{"name": "LR", "value": "0.0003"}]}]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [
                    {"name": "pytorch", "image": "train:1", "env": [{"name": "LR", "value": "0.0003"}]}]}}}}},
            "status": {"conditions": [{"type": "Running", "status": "True"}]}
        }),
        WorkloadKind::TrainJob => json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": meta(r#"{"lr": {"env": "LR"}, "warmup": {"arg": "--warmup"}}"#),
            "spec": {"suspend": false, "runtimeRef": {"name": "torch-distributed"},
                "trainer": {"image": "train:1", "numNodes": 2, "args": ["--warmup=100"],
                    "env": [{"name": "LR", "value": "0.0003"}]}},
            "status": {"conditions": []}
        }),
    }
}

fn merged(mut a: Value, b: Value) -> Value {
    workload::merge(&mut a, b);
    a
}

fn with(kind: WorkloadKind, extra: Value) -> Value {
    merged(fixture(kind), extra)
}

fn suspended(kind: WorkloadKind) -> Value {
    with(kind, patch_at(kind.suspend_path(), json!(true)))
}

/// The name of the Event posted for `reason` under [`KEY`].
fn event_name(reason: &str) -> String {
    let digest = Sha256::digest(format!("{KEY}\n{reason}").as_bytes());
    format!("{NAME}.babysitter.{}", &hex::encode(digest)[..16])
}

/// The Event babysitter must post for `reason` with `note`.
fn event_call(kind: WorkloadKind, reason: &str, kind_type: &str, note: &str) -> Call {
    let name = event_name(reason);
    let action = reason
        .trim_start_matches("Babysitter")
        .trim_end_matches("Refused");
    let body = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": NS},
        "eventTime": EVENT_TIME,
        "reportingController": "babysitter.dev/babysitter",
        "reportingInstance": "babysitter-0",
        "action": action, "reason": reason, "type": kind_type, "note": note,
        "regarding": {"apiVersion": kind.api_version(), "kind": kind.kind(),
            "namespace": NS, "name": NAME, "uid": "uid-1"},
    });
    Call::new(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
    )
    .body(body.clone())
    .reply(201, &body)
}

/// Runs a scenario whose last request is the Event carrying the outcome's own detail: the
/// detail is asserted separately, the Event must repeat it exactly.
async fn with_event(
    kind: WorkloadKind,
    action: &Action,
    event_action: &str,
    detail: &str,
    mut calls: Vec<Call>,
) -> ActionOutcome {
    calls.push(event_call(
        kind,
        &format!("Babysitter{event_action}"),
        "Normal",
        detail,
    ));
    let out = scenario(&target(kind), action, calls)
        .await
        .unwrap_or_else(|e| panic!("{kind}: {action}: {e}"));
    assert_eq!(out.detail, detail, "{kind}: {action}");
    out
}

#[tokio::test]
async fn pause_patches_the_suspend_field_of_every_kind() {
    let cases = [
        (
            WorkloadKind::Job,
            json!({"spec": {"suspend": true}}),
            "spec.suspend",
        ),
        (
            WorkloadKind::JobSet,
            json!({"spec": {"suspend": true}}),
            "spec.suspend",
        ),
        (
            WorkloadKind::PyTorchJob,
            json!({"spec": {"runPolicy": {"suspend": true}}}),
            "spec.runPolicy.suspend",
        ),
        (
            WorkloadKind::TrainJob,
            json!({"spec": {"suspend": true}}),
            "spec.suspend",
        ),
    ];
    for (kind, spec, field) in cases {
        let body = merged(
            json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": KEY}}}),
            spec,
        );
        let detail = format!("suspended {}/ml/llm ({field}: false → true)", kind.kind());
        let out = with_event(
            kind,
            &Action::Pause,
            "Pause",
            &detail,
            vec![
                Call::get(path(kind)).reply(200, &fixture(kind)),
                Call::merge_patch(path(kind), body).reply(200, &suspended(kind)),
            ],
        )
        .await;
        assert_eq!(out.facts["changed"], json!(true));
        assert_eq!(out.facts["field"], json!(field));
    }
}

#[tokio::test]
async fn resume_clears_the_suspend_field_of_every_kind() {
    for kind in WorkloadKind::ALL {
        let body = merged(
            json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": KEY}}}),
            patch_at(kind.suspend_path(), json!(false)),
        );
        let field = kind.suspend_path().join(".");
        let detail = format!("resumed {}/ml/llm ({field}: true → false)", kind.kind());
        with_event(
            kind,
            &Action::Resume,
            "Resume",
            &detail,
            vec![
                Call::get(path(kind)).reply(200, &suspended(kind)),
                Call::merge_patch(path(kind), body).reply(200, &fixture(kind)),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn pausing_a_paused_workload_changes_nothing() {
    let kind = WorkloadKind::Job;
    let out = with_event(
        kind,
        &Action::Pause,
        "Pause",
        "Job/ml/llm is already suspended; nothing to pause",
        vec![Call::get(path(kind)).reply(200, &suspended(kind))],
    )
    .await;
    assert_eq!(out.facts["changed"], json!(false));
}

#[tokio::test]
async fn a_kueue_managed_job_is_not_paused_or_resumed() {
    let kind = WorkloadKind::Job;
    let obj = with(
        kind,
        json!({"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpu-queue"}}}),
    );
    let reason = "babysitter does not pause Job/ml/llm: it is in Kueue queue `gpu-queue` (label kueue.x-k8s.io/queue-name): Kueue owns its suspension; pause or resume it through Kueue (e.g. stop its LocalQueue or Workload)";
    let err = scenario(
        &target(kind),
        &Action::Pause,
        vec![
            Call::get(path(kind)).reply(200, &obj),
            event_call(kind, "BabysitterPauseRefused", "Warning", reason),
        ],
    )
    .await
    .unwrap_err();
    match err {
        ActError::Refused(r) => assert_eq!(r, reason),
        other => panic!("expected a refusal, got {other}"),
    }
    let err = scenario(
        &target(kind),
        &Action::Resume,
        vec![
            Call::get(path(kind)).reply(200, &obj),
            event_call(
                kind,
                "BabysitterResumeRefused",
                "Warning",
                &reason.replace("does not pause", "does not resume"),
            ),
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ActError::Refused(_)), "{err}");
}

#[tokio::test]
async fn a_foreign_managed_by_refuses_pause_and_restart() {
    // A JobSet delegated to MultiKueue.
    let kind = WorkloadKind::JobSet;
    let obj = with(
        kind,
        json!({"spec": {"managedBy": "kueue.x-k8s.io/multikueue"}}),
    );
    let why = "its spec.managedBy is \"kueue.x-k8s.io/multikueue\", not the default jobset.sigs.k8s.io/jobset-controller: that controller owns it; act through it";
    let err = scenario(
        &target(kind),
        &Action::Pause,
        vec![
            Call::get(path(kind)).reply(200, &obj),
            event_call(
                kind,
                "BabysitterPauseRefused",
                "Warning",
                &format!("babysitter does not pause JobSet/ml/llm: {why}"),
            ),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("action refused by the workload: babysitter does not pause JobSet/ml/llm: {why}")
    );
    let restart = Action::RestartFromCheckpoint {
        checkpoint: CheckpointSelector::Step(2000),
    };
    let err = scenario(
        &target(kind),
        &restart,
        vec![
            Call::get(path(kind)).reply(200, &obj),
            event_call(
                kind,
                "BabysitterRestartFromCheckpointRefused",
                "Warning",
                &format!("babysitter does not restart JobSet/ml/llm: {why}"),
            ),
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ActError::Refused(_)));

    // A PyTorchJob keeps managedBy under runPolicy.
    let kind = WorkloadKind::PyTorchJob;
    let obj = with(
        kind,
        json!({"spec": {"runPolicy": {"managedBy": "kueue.x-k8s.io/multikueue"}}}),
    );
    let err = scenario(
        &target(kind),
        &Action::Pause,
        vec![
            Call::get(path(kind)).reply(200, &obj),
            event_call(
                kind,
                "BabysitterPauseRefused",
                "Warning",
                "babysitter does not pause PyTorchJob/ml/llm: its spec.runPolicy.managedBy is \"kueue.x-k8s.io/multikueue\", not the default kubeflow.org/training-operator: that controller owns it; act through it",
            ),
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ActError::Refused(_)));
}

fn restart_2000() -> Action {
    Action::RestartFromCheckpoint {
        checkpoint: CheckpointSelector::Step(2000),
    }
}

/// The object a restart by recreation must create: stripped, with the key, the resume
/// annotation and the resume env.
fn recreated(kind: WorkloadKind) -> Value {
    let ann = json!({"babysitter.dev/checkpoints": CHECKPOINTS,
        "babysitter.dev/last-action-key": KEY, "babysitter.dev/resume-checkpoint": "2000"});
    let resume_env = json!({"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "2000"});
    match kind {
        WorkloadKind::Job => json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": NAME, "namespace": NS,
                "annotations": merged(ann, json!({"babysitter.dev/config": r#"{"lr": {"configMap": "llm-config", "key": "lr"}, "warmup": {"env": "WARMUP"}}"#})),
                "labels": {"batch.kubernetes.io/job-name": NAME, "team": "research"}},
            "spec": {"suspend": false, "backoffLimit": 0,
                "template": {"metadata": {"labels": {"batch.kubernetes.io/job-name": NAME},
                    "annotations": {"babysitter.dev/resume-checkpoint": "2000"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "train:1",
                    "env": [{"name": "WARMUP", "value": "100"}, resume_env]}]}}}
        }),
        WorkloadKind::JobSet => json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": NAME, "namespace": NS,
                "annotations": merged(ann, json!({"babysitter.dev/config": r#"{"lr": {"configMap": "llm-config", "key": "lr"}}"#}))},
            "spec": {"suspend": false, "replicatedJobs": [{"name": "workers", "replicas": 2,
                "template": {"spec": {"parallelism": 1, "template": {
                    "metadata": {"annotations": {"babysitter.dev/resume-checkpoint": "2000"}},
                    "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "train:1", "env": [resume_env]}]}}}}}]}
        }),
        WorkloadKind::TrainJob => json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": NAME, "namespace": NS,
                "annotations": merged(ann, json!({"babysitter.dev/config": r#"{"lr": {"env": "LR"}, "warmup": {"arg": "--warmup"}}"#}))},
            "spec": {"suspend": false, "runtimeRef": {"name": "torch-distributed"},
                "annotations": {"babysitter.dev/resume-checkpoint": "2000"},
                "trainer": {"image": "train:1", "numNodes": 2, "args": ["--warmup=100"],
                    "env": [{"name": "LR", "value": "0.0003"}, resume_env]}}
        }),
        WorkloadKind::PyTorchJob => unreachable!("a PyTorchJob is restarted in place"),
    }
}

#[tokio::test]
async fn restart_recreates_jobs_jobsets_and_trainjobs_with_the_resume_checkpoint() {
    for kind in [
        WorkloadKind::Job,
        WorkloadKind::JobSet,
        WorkloadKind::TrainJob,
    ] {
        // Running or paused (the gpu-hardware-error runbook pauses first), the recreated
        // object runs: `recreated` has the suspend field false.
        for was_suspended in [false, true] {
            let live = if was_suspended {
                suspended(kind)
            } else {
                fixture(kind)
            };
            let created = merged(
                recreated(kind),
                json!({"metadata": {"uid": "uid-2", "resourceVersion": "50"}}),
            );
            let detail = format!(
                "restarted {}/ml/llm from checkpoint at step 2000 (deleted and recreated from its spec; BABYSITTER_RESUME_CHECKPOINT=2000){}",
                kind.kind(),
                if was_suspended {
                    "; it was suspended and runs again (spec.suspend: true → false)"
                } else {
                    ""
                }
            );
            let out = with_event(
                kind,
                &restart_2000(),
                "RestartFromCheckpoint",
                &detail,
                vec![
                    Call::get(path(kind)).reply(200, &live),
                    Call::new("DELETE", path(kind))
                        .body(json!({"propagationPolicy": "Background", "preconditions": {"uid": "uid-1"}}))
                        .reply(200, &live),
                    Call::new("POST", collection(kind))
                        .body(recreated(kind))
                        .reply(201, &created),
                ],
            )
            .await;
            assert_eq!(recreated(kind)["spec"]["suspend"], json!(false));
            assert_eq!(out.facts["mechanism"], json!("recreate"), "{kind}");
            assert_eq!(out.facts["old_uid"], json!("uid-1"));
            assert_eq!(out.facts["new_uid"], json!("uid-2"));
            assert_eq!(out.facts["checkpoint_step"], json!(2000));
            assert_eq!(out.facts["checkpoint_t"], json!(1764003600.0));
            assert_eq!(out.facts["was_suspended"], json!(was_suspended), "{kind}");
            assert_eq!(out.facts["suspended"], json!(false), "{kind}");
            assert_eq!(
                out.facts["event"],
                json!(event_name("BabysitterRestartFromCheckpoint"))
            );
        }
    }
}

#[tokio::test]
async fn recreate_waits_for_the_old_object_to_go() {
    let kind = WorkloadKind::Job;
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "jobs.batch \"llm\" already exists", "reason": "AlreadyExists", "code": 409});
    let created = merged(recreated(kind), json!({"metadata": {"uid": "uid-2"}}));
    tokio::time::pause();
    let out = with_event(
        kind,
        &restart_2000(),
        "RestartFromCheckpoint",
        "restarted Job/ml/llm from checkpoint at step 2000 (deleted and recreated from its spec; BABYSITTER_RESUME_CHECKPOINT=2000)",
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::new("DELETE", path(kind))
                .body(json!({"propagationPolicy": "Background", "preconditions": {"uid": "uid-1"}}))
                .reply(200, &fixture(kind)),
            Call::new("POST", collection(kind)).body(recreated(kind)).reply(409, &exists),
            Call::new("POST", collection(kind)).body(recreated(kind)).reply(201, &created),
        ],
    )
    .await;
    assert_eq!(out.facts["create_attempts"], json!(2));
}

/// The merge patch of a PyTorchJob's restart from step 2000: key, resume annotation, the
/// replica templates and (unless Kueue owns its suspension) `suspend: false`, in one request.
fn pytorchjob_restart_patch(unsuspend: bool) -> Value {
    let tmpl = json!({"metadata": {"annotations": {"babysitter.dev/resume-checkpoint": "2000"}},
        "spec": {"containers": [{"name": "pytorch", "image": "train:1", "env": [
            {"name": "LR", "value": "0.0003"},
            {"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "2000"}]}]}});
    let mut patch = json!({
        "metadata": {"resourceVersion": "41", "annotations": {
            "babysitter.dev/last-action-key": KEY, "babysitter.dev/resume-checkpoint": "2000"}},
        "spec": {"pytorchReplicaSpecs": {"Master": {"template": tmpl}, "Worker": {"template": tmpl}}}
    });
    if unsuspend {
        workload::merge(
            &mut patch,
            json!({"spec": {"runPolicy": {"suspend": false}}}),
        );
    }
    patch
}

#[tokio::test]
async fn restart_of_a_pytorchjob_patches_templates_and_deletes_its_pods() {
    let kind = WorkloadKind::PyTorchJob;
    let deleted = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        {"metadata": {"name": "llm-master-0"}}, {"metadata": {"name": "llm-worker-0"}}]});
    let out = with_event(
        kind,
        &restart_2000(),
        "RestartFromCheckpoint",
        "restarted PyTorchJob/ml/llm from checkpoint at step 2000 (patched its replica templates and deleted 2 pod(s); the training operator recreates them; BABYSITTER_RESUME_CHECKPOINT=2000)",
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), pytorchjob_restart_patch(true))
                .reply(200, &fixture(kind)),
            Call::new("DELETE", format!("/api/v1/namespaces/{NS}/pods"))
                .query("labelSelector=training.kubeflow.org%2Fjob-name%3Dllm")
                .reply(200, &deleted),
        ],
    )
    .await;
    assert_eq!(
        out.facts["deleted_pods"],
        json!(["llm-master-0", "llm-worker-0"])
    );
    assert_eq!(out.facts["was_suspended"], json!(false));
    assert_eq!(out.facts["suspended"], json!(false));
}

#[tokio::test]
async fn restart_of_a_paused_pytorchjob_resumes_it_in_the_template_patch() {
    let kind = WorkloadKind::PyTorchJob;
    // Suspended: the training operator has already removed its pods.
    let none = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
    let out = with_event(
        kind,
        &restart_2000(),
        "RestartFromCheckpoint",
        "restarted PyTorchJob/ml/llm from checkpoint at step 2000 (patched its replica templates and deleted 0 pod(s); the training operator recreates them; BABYSITTER_RESUME_CHECKPOINT=2000); it was suspended and runs again (spec.runPolicy.suspend: true → false)",
        vec![
            Call::get(path(kind)).reply(200, &suspended(kind)),
            Call::merge_patch(path(kind), pytorchjob_restart_patch(true))
                .reply(200, &fixture(kind)),
            Call::new("DELETE", format!("/api/v1/namespaces/{NS}/pods"))
                .query("labelSelector=training.kubeflow.org%2Fjob-name%3Dllm")
                .reply(200, &none),
        ],
    )
    .await;
    assert_eq!(out.facts["was_suspended"], json!(true));
    assert_eq!(out.facts["suspended"], json!(false));
    assert_eq!(out.facts["deleted_pods"], json!([]));
}

#[tokio::test]
async fn restart_leaves_the_suspension_of_a_kueue_queued_workload_to_kueue() {
    let queued = json!({"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpu-queue"}}});
    // A Job by recreation: the new object keeps `suspend: true`; Kueue admits it.
    let kind = WorkloadKind::Job;
    let live = merged(suspended(kind), queued.clone());
    let mut want = merged(recreated(kind), queued.clone());
    workload::merge(&mut want, json!({"spec": {"suspend": true}}));
    let out = with_event(
        kind,
        &restart_2000(),
        "RestartFromCheckpoint",
        "restarted Job/ml/llm from checkpoint at step 2000 (deleted and recreated from its spec; BABYSITTER_RESUME_CHECKPOINT=2000); it stays suspended until Kueue (queue `gpu-queue`) admits it",
        vec![
            Call::get(path(kind)).reply(200, &live),
            Call::new("DELETE", path(kind))
                .body(json!({"propagationPolicy": "Background", "preconditions": {"uid": "uid-1"}}))
                .reply(200, &live),
            Call::new("POST", collection(kind))
                .body(want.clone())
                .reply(201, &merged(want, json!({"metadata": {"uid": "uid-2"}}))),
        ],
    )
    .await;
    assert_eq!(out.facts["was_suspended"], json!(true));
    assert_eq!(out.facts["suspended"], json!(true));
    assert_eq!(out.facts["kueue_queue"], json!("gpu-queue"));

    // A PyTorchJob in place: the patch does not touch runPolicy.suspend.
    let kind = WorkloadKind::PyTorchJob;
    let live = merged(fixture(kind), queued);
    let none = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
    let out = with_event(
        kind,
        &restart_2000(),
        "RestartFromCheckpoint",
        "restarted PyTorchJob/ml/llm from checkpoint at step 2000 (patched its replica templates and deleted 0 pod(s); the training operator recreates them; BABYSITTER_RESUME_CHECKPOINT=2000); its suspension is left to Kueue (queue `gpu-queue`)",
        vec![
            Call::get(path(kind)).reply(200, &live),
            Call::merge_patch(path(kind), pytorchjob_restart_patch(false)).reply(200, &live),
            Call::new("DELETE", format!("/api/v1/namespaces/{NS}/pods"))
                .query("labelSelector=training.kubeflow.org%2Fjob-name%3Dllm")
                .reply(200, &none),
        ],
    )
    .await;
    assert_eq!(out.facts["was_suspended"], json!(false));
    assert_eq!(out.facts["suspended"], json!(false));
}

#[tokio::test]
async fn restart_needs_a_reported_checkpoint() {
    let kind = WorkloadKind::Job;
    let err = scenario(
        &target(kind),
        &Action::RestartFromCheckpoint {
            checkpoint: CheckpointSelector::Step(1500),
        },
        vec![Call::get(path(kind)).reply(200, &fixture(kind))],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no checkpoint matches checkpoint at step 1500 for Job/ml/llm (completed checkpoints: 1000, 2000)"
    );
    let bare = merged(
        fixture(kind),
        json!({"metadata": {"annotations": {"babysitter.dev/checkpoints": null}}}),
    );
    let mut bare = bare;
    if let Some(a) = bare
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove("babysitter.dev/checkpoints");
    }
    let err = scenario(
        &target(kind),
        &Action::RestartFromCheckpoint {
            checkpoint: CheckpointSelector::Latest,
        },
        vec![Call::get(path(kind)).reply(200, &bare)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ActError::NoCheckpoint(_)), "{err}");
    assert!(
        err.to_string()
            .contains("annotation `babysitter.dev/checkpoints` is missing")
    );
}

fn lr_halved() -> Action {
    Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "lr".into(),
            op: ChangeOp::Scale(0.5),
        }],
    }
}

#[tokio::test]
async fn patch_config_of_a_configmap_dry_runs_then_patches_for_jobs_and_jobsets() {
    for kind in [WorkloadKind::Job, WorkloadKind::JobSet] {
        let cm_path = format!("/api/v1/namespaces/{NS}/configmaps/llm-config");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "llm-config", "namespace": NS, "resourceVersion": "12"},
            "data": {"lr": "0.0003", "batch": "64"}});
        let cm_patch = json!({"metadata": {"resourceVersion": "12",
            "annotations": {"babysitter.dev/last-action-key": KEY}}, "data": {"lr": "0.00015"}});
        let out = with_event(
            kind,
            &lr_halved(),
            "PatchConfig",
            &format!("patched config of {}/ml/llm: lr 0.0003 → 0.00015 (server-side dry run passed; takes effect when the job re-reads it or restarts)", kind.kind()),
            vec![
                Call::get(path(kind)).reply(200, &fixture(kind)),
                Call::get(&cm_path).reply(200, &cm),
                Call::merge_patch(&cm_path, cm_patch.clone())
                    .query("dryRun=All")
                    .reply(200, &cm),
                Call::merge_patch(&cm_path, cm_patch).reply(200, &cm),
                Call::merge_patch(
                    path(kind),
                    json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": KEY}}}),
                )
                .reply(200, &fixture(kind)),
            ],
        )
        .await;
        assert_eq!(
            out.facts["changes"],
            json!([{"key": "lr", "at": "ConfigMap llm-config key lr", "old": "0.0003", "new": "0.00015"}])
        );
        assert_eq!(out.facts["dry_run"], json!("server-side dry run passed"));
    }
}

#[tokio::test]
async fn a_configmap_already_patched_under_the_key_is_not_patched_twice() {
    // babysitter crashed after patching the ConfigMap, before recording the key on the Job.
    let kind = WorkloadKind::Job;
    let cm_path = format!("/api/v1/namespaces/{NS}/configmaps/llm-config");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "llm-config", "namespace": NS, "resourceVersion": "13",
            "annotations": {"babysitter.dev/last-action-key": KEY}},
        "data": {"lr": "0.00015"}});
    let out = with_event(
        kind,
        &lr_halved(),
        "PatchConfig",
        "patched config of Job/ml/llm: lr = 0.00015 (already applied) (nothing left to patch; takes effect when the job re-reads it or restarts)",
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::get(&cm_path).reply(200, &cm),
            Call::merge_patch(
                path(kind),
                json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": KEY}}}),
            )
            .reply(200, &fixture(kind)),
        ],
    )
    .await;
    assert_eq!(out.facts["changes"][0]["already_applied"], json!(true));
}

#[tokio::test]
async fn patch_config_of_env_and_args_for_pytorchjobs_and_trainjobs() {
    // PyTorchJob: the bound container's env in every replica template.
    let kind = WorkloadKind::PyTorchJob;
    let containers = json!([{"name": "pytorch", "image": "train:1", "env": [{"name": "LR", "value": "0.00015"}]}]);
    let patch = json!({"metadata": {"resourceVersion": "41",
        "annotations": {"babysitter.dev/last-action-key": KEY}},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {"containers": containers}}},
            "Worker": {"template": {"spec": {"containers": containers}}}}}});
    let out = with_event(
        kind,
        &lr_halved(),
        "PatchConfig",
        "patched config of PyTorchJob/ml/llm: lr 0.0003 → 0.00015 (server-side dry run passed; takes effect when the job re-reads it or restarts)",
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), patch.clone())
                .query("dryRun=All")
                .reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), patch).reply(200, &fixture(kind)),
        ],
    )
    .await;
    assert_eq!(
        out.facts["changes"][1],
        json!({"key": "lr", "at": "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0 (pytorch) env LR",
            "old": "0.0003", "new": "0.00015"})
    );

    // TrainJob: the trainer's env and args.
    let kind = WorkloadKind::TrainJob;
    let action = Action::PatchConfig {
        changes: vec![
            ConfigChange {
                key: "lr".into(),
                op: ChangeOp::Scale(0.5),
            },
            ConfigChange {
                key: "warmup".into(),
                op: ChangeOp::Set(json!(500)),
            },
        ],
    };
    let patch = json!({"metadata": {"resourceVersion": "41",
        "annotations": {"babysitter.dev/last-action-key": KEY}},
        "spec": {"trainer": {"env": [{"name": "LR", "value": "0.00015"}], "args": ["--warmup=500"]}}});
    let out = with_event(
        kind,
        &action,
        "PatchConfig",
        "patched config of TrainJob/ml/llm: lr 0.0003 → 0.00015, warmup 100 → 500 (server-side dry run passed; takes effect when the job re-reads it or restarts)",
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), patch.clone())
                .query("dryRun=All")
                .reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), patch).reply(200, &fixture(kind)),
        ],
    )
    .await;
    assert_eq!(
        out.facts["changes"][1]["at"],
        json!("/spec/trainer (trainer) args --warmup")
    );
}

#[tokio::test]
async fn patch_config_refuses_unbound_keys_and_immutable_templates() {
    let kind = WorkloadKind::Job;
    let warmup = Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "warmup".into(),
            op: ChangeOp::Set(json!(10)),
        }],
    };
    let why = "Job/ml/llm: `warmup` is bound to env WARMUP, but a Job's pod template is immutable; bind it to a ConfigMap key (docs/KUBERNETES.md)";
    let err = scenario(
        &target(kind),
        &warmup,
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            event_call(kind, "BabysitterPatchConfigRefused", "Warning", why),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("action refused by the workload: {why}")
    );

    let dropout = Action::PatchConfig {
        changes: vec![ConfigChange {
            key: "dropout".into(),
            op: ChangeOp::Set(json!(0.1)),
        }],
    };
    let why = "Job/ml/llm: config key `dropout` is not bound in annotation babysitter.dev/config (bound keys: lr, warmup)";
    let err = scenario(
        &target(kind),
        &dropout,
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            event_call(kind, "BabysitterPatchConfigRefused", "Warning", why),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("action refused by the workload: {why}")
    );
}

#[tokio::test]
async fn a_dry_run_rejected_by_the_server_stops_the_patch() {
    let kind = WorkloadKind::TrainJob;
    let invalid = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "TrainJob.trainer.kubeflow.org \"llm\" is invalid: spec.trainer: Invalid value: immutable",
        "reason": "Invalid", "code": 422});
    let patch = json!({"metadata": {"resourceVersion": "41",
        "annotations": {"babysitter.dev/last-action-key": KEY}},
        "spec": {"trainer": {"env": [{"name": "LR", "value": "0.00015"}]}}});
    let why = "dry-run patch of TrainJob/ml/llm: 422 Invalid: TrainJob.trainer.kubeflow.org \"llm\" is invalid: spec.trainer: Invalid value: immutable";
    let err = scenario(
        &target(kind),
        &lr_halved(),
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::merge_patch(path(kind), patch)
                .query("dryRun=All")
                .reply(422, &invalid),
            event_call(kind, "BabysitterPatchConfigRefused", "Warning", why),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("action refused by the workload: {why}")
    );
}

/// Pods of a workload, one per kind's selector.
fn pods() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"continue": ""}, "items": [{
        "metadata": {"name": "llm-0", "namespace": NS},
        "spec": {"nodeName": "gpu-node-3", "containers": [{"name": "trainer", "image": "train:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "ready": true,
            "restartCount": 2, "image": "train:1", "imageID": "", "state": {"running": {"startedAt": "2025-11-24T16:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
    }]})
}

fn events() -> Value {
    let ev = |reason: &str, t: &str| {
        json!({"metadata": {"name": format!("llm.{reason}"), "namespace": NS},
            "involvedObject": {"kind": "Job", "name": NAME}, "reason": reason, "type": "Normal",
            "message": format!("{reason} happened"), "count": 1, "lastTimestamp": t})
    };
    json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [
        ev("SuccessfulCreate", "2025-11-24T16:00:00Z"),
        ev("Suspended", "2025-11-24T16:30:00Z"),
        ev("Resumed", "2025-11-24T16:10:00Z"),
    ]})
}

#[tokio::test]
async fn capture_diagnostics_reads_status_pods_events_and_logs_of_every_kind() {
    for kind in WorkloadKind::ALL {
        let selector = kind
            .pod_selector(NAME)
            .replace('/', "%2F")
            .replace('=', "%3D");
        let fields = format!(
            "involvedObject.kind%3D{}%2CinvolvedObject.name%3Dllm",
            kind.kind()
        );
        let out = with_event(
            kind,
            &Action::CaptureDiagnostics,
            "CaptureDiagnostics",
            &format!("captured diagnostics of {}/ml/llm: status, 1 pod(s), 2 event(s), last 20 log lines per container", kind.kind()),
            vec![
                Call::get(path(kind)).reply(200, &fixture(kind)),
                Call::get(format!("/api/v1/namespaces/{NS}/pods"))
                    .query(&format!("labelSelector={selector}&limit=4"))
                    .reply(200, &pods()),
                Call::get(format!("/api/v1/namespaces/{NS}/events"))
                    .query(&format!("fieldSelector={fields}"))
                    .reply(200, &events()),
                Call::get(format!("/api/v1/namespaces/{NS}/pods/llm-0/log"))
                    .query("container=trainer&limitBytes=4096&tailLines=20")
                    .reply_text("step 1999 loss 2.1\nstep 2000 loss 9.8\n"),
            ],
        )
        .await;
        let f = &out.facts;
        assert_eq!(f["status"], fixture(kind)["status"], "{kind}");
        assert_eq!(f["pods"][0]["phase"], json!("Running"));
        assert_eq!(f["pods"][0]["node"], json!("gpu-node-3"));
        assert_eq!(f["pods"][0]["containers"][0]["restarts"], json!(2));
        assert_eq!(
            f["pods"][0]["containers"][0]["last_state"]["terminated"]["reason"],
            json!("OOMKilled")
        );
        assert_eq!(
            f["pods"][0]["logs"]["trainer"],
            json!("step 1999 loss 2.1\nstep 2000 loss 9.8\n")
        );
        // The two most recent events, oldest first.
        let reasons: Vec<&str> = f["events"]
            .as_array()
            .expect("events listed")
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert_eq!(reasons, ["Resumed", "Suspended"]);
        assert_eq!(f["more_pods"], json!(false));
    }
}

#[tokio::test]
async fn annotate_records_the_note_on_every_kind() {
    for kind in WorkloadKind::ALL {
        let note = "loss spike at step 2000; restarted from 1000";
        with_event(
            kind,
            &Action::Annotate { note: note.into() },
            "Annotate",
            &format!("annotated {}/ml/llm: {note}", kind.kind()),
            vec![
                Call::get(path(kind)).reply(200, &fixture(kind)),
                Call::merge_patch(
                    path(kind),
                    json!({"metadata": {"annotations": {
                        "babysitter.dev/last-action-key": KEY, "babysitter.dev/last-note": note}}}),
                )
                .reply(200, &fixture(kind)),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn an_action_already_applied_is_not_repeated() {
    for kind in WorkloadKind::ALL {
        let done = with(
            kind,
            json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": KEY}}}),
        );
        for (action, event) in [
            (Action::Pause, "Pause"),
            (restart_2000(), "RestartFromCheckpoint"),
            (lr_halved(), "PatchConfig"),
            (Action::Annotate { note: "x".into() }, "Annotate"),
        ] {
            // Nothing is changed; the Event (which a crash may have cut off) is posted.
            let detail = format!(
                "{} on {}/ml/llm already applied (idempotency key inc-7/step-2); not repeated",
                action.kind(),
                kind.kind()
            );
            let out = with_event(
                kind,
                &action,
                event,
                &detail,
                vec![Call::get(path(kind)).reply(200, &done)],
            )
            .await;
            assert_eq!(out.facts["skipped"], json!(true));
        }
    }
}

#[tokio::test]
async fn a_retried_event_that_exists_is_not_an_error() {
    let kind = WorkloadKind::Job;
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "already exists", "reason": "AlreadyExists", "code": 409});
    let detail = "annotated Job/ml/llm: hi";
    let mut ev = event_call(kind, "BabysitterAnnotate", "Normal", detail);
    ev = ev.reply(409, &exists);
    let out = scenario(
        &target(kind),
        &Action::Annotate { note: "hi".into() },
        vec![
            Call::get(path(kind)).reply(200, &fixture(kind)),
            Call::merge_patch(
                path(kind),
                json!({"metadata": {"annotations": {
                "babysitter.dev/last-action-key": KEY, "babysitter.dev/last-note": "hi"}}}),
            )
            .reply(200, &fixture(kind)),
            ev,
        ],
    )
    .await
    .expect("annotated");
    assert!(
        out.facts["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("llm.babysitter."))
    );
}

#[tokio::test]
async fn checkpoints_come_from_the_annotation() {
    for kind in WorkloadKind::ALL {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let obj = fixture(kind);
        let want = path(kind);
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a GET");
            assert_eq!(req.method().as_str(), "GET");
            assert_eq!(req.uri().path(), want);
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&obj).expect("json")))
                    .expect("response"),
            );
        });
        let act = KubeActuator::new(Client::new(svc, "default"), KubeActuatorOptions::default());
        let cps = act.checkpoints(&target(kind)).await.expect("checkpoints");
        server.await.expect("served");
        assert_eq!(
            cps,
            vec![
                Checkpoint {
                    step: 1000,
                    t: 1_764_000_000.0
                },
                Checkpoint {
                    step: 2000,
                    t: 1_764_003_600.0
                }
            ]
        );
    }
}

#[tokio::test]
async fn unknown_targets_and_pages_make_no_request() {
    let sim = Target::Simulated { run: "a".into() };
    let err = scenario(&sim, &Action::Pause, vec![]).await.unwrap_err();
    assert!(matches!(err, ActError::UnknownTarget(_)), "{err}");
    let deploy = Target::Kubernetes {
        api_version: "apps/v1".into(),
        workload_kind: "Deployment".into(),
        namespace: NS.into(),
        name: NAME.into(),
    };
    let err = scenario(&deploy, &Action::Pause, vec![]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported workload apps/v1 Deployment"),
        "{err}"
    );
    let page = Action::Page {
        severity: crate::detect::Severity::Critical,
        summary: "x".into(),
    };
    let err = scenario(&target(WorkloadKind::Job), &page, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, ActError::Refused(_)), "{err}");
}

#[tokio::test]
async fn a_missing_workload_is_an_unknown_target() {
    let kind = WorkloadKind::JobSet;
    let nf = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "jobsets.jobset.x-k8s.io \"llm\" not found", "reason": "NotFound", "code": 404});
    let err = scenario(
        &target(kind),
        &Action::Pause,
        vec![Call::get(path(kind)).reply(404, &nf)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "unknown target JobSet/ml/llm not found");
}

#[test]
fn action_names_are_camel_case() {
    assert_eq!(camel("restart_from_checkpoint"), "RestartFromCheckpoint");
    assert_eq!(camel("pause"), "Pause");
    assert_eq!(
        pointer_segments("/spec/a~1b/c~0d"),
        vec!["spec", "a/b", "c~d"]
    );
}

/// A workload that carries [`KEY`]: the action under it was applied (here a restart from step
/// 2000 of a workload that stays paused).
fn done_under_key(kind: WorkloadKind) -> Value {
    let mut done = with(
        kind,
        json!({"metadata": {"annotations": {
            "babysitter.dev/last-action-key": KEY,
            "babysitter.dev/resume-checkpoint": "2000"}}}),
    );
    workload::merge(&mut done, patch_at(kind.suspend_path(), json!(true)));
    done
}

fn recalled_detail(kind: WorkloadKind, action: &Action) -> String {
    format!(
        "{}/ml/llm carries babysitter.dev/last-action-key=inc-7/step-2: the {} was applied before babysitter stopped; not repeated",
        kind.kind(),
        action.kind()
    )
}

#[tokio::test]
async fn recall_reads_the_last_action_key_and_posts_the_event_on_every_kind() {
    for kind in WorkloadKind::ALL {
        for (action, reason) in [
            (restart_2000(), "BabysitterRestartFromCheckpoint"),
            (Action::Pause, "BabysitterPause"),
        ] {
            let detail = recalled_detail(kind, &action);
            let out = recall_scenario(
                &target(kind),
                &action,
                vec![
                    Call::get(path(kind)).reply(200, &done_under_key(kind)),
                    // The Event the crash may have cut off, exactly as `execute` posts it.
                    event_call(kind, reason, "Normal", &detail),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"))
            .unwrap_or_else(|| panic!("{kind}: the key is on the workload"));
            assert_eq!(out.detail, detail);
            assert_eq!(out.facts["recalled"], json!(true));
            assert_eq!(out.facts["key"], json!(KEY));
            assert_eq!(out.facts["uid"], json!("uid-1"));
            assert_eq!(out.facts["suspended"], json!(true), "{kind}");
            assert_eq!(out.facts["resume_checkpoint"], json!("2000"));
            assert_eq!(out.facts["event"], json!(event_name(reason)), "{kind}");
            assert!(out.facts.get("event_error").is_none());
        }
    }
}

#[tokio::test]
async fn recall_of_an_action_not_done_posts_nothing() {
    for kind in WorkloadKind::ALL {
        // Another key, or none: not done here, and no Event (the action runs again, and
        // posts its own).
        let other = with(
            kind,
            json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": "inc-7/step-1"}}}),
        );
        for obj in [other, fixture(kind)] {
            let out = recall_scenario(
                &target(kind),
                &Action::Pause,
                vec![Call::get(path(kind)).reply(200, &obj)],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(out.is_none(), "{kind}: {out:?}");
        }
    }
}

#[tokio::test]
async fn a_recalled_event_posted_before_the_crash_is_not_an_error() {
    let kind = WorkloadKind::Job;
    let action = Action::Pause;
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "events.events.k8s.io \"llm.babysitter\" already exists",
        "reason": "AlreadyExists", "code": 409});
    let out = recall_scenario(
        &target(kind),
        &action,
        vec![
            Call::get(path(kind)).reply(200, &done_under_key(kind)),
            event_call(
                kind,
                "BabysitterPause",
                "Normal",
                &recalled_detail(kind, &action),
            )
            .reply(409, &exists),
        ],
    )
    .await
    .expect("recall reads")
    .expect("done");
    assert_eq!(out.facts["event"], json!(event_name("BabysitterPause")));
    assert!(out.facts.get("event_error").is_none(), "{:?}", out.facts);
}

#[tokio::test]
async fn a_recalled_event_that_cannot_be_posted_does_not_undo_the_recall() {
    let kind = WorkloadKind::TrainJob;
    let action = restart_2000();
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "events.events.k8s.io is forbidden", "reason": "Forbidden", "code": 403});
    let out = recall_scenario(
        &target(kind),
        &action,
        vec![
            Call::get(path(kind)).reply(200, &done_under_key(kind)),
            event_call(
                kind,
                "BabysitterRestartFromCheckpoint",
                "Normal",
                &recalled_detail(kind, &action),
            )
            .reply(403, &forbidden),
        ],
    )
    .await
    .expect("recall reads")
    .expect("still done: the action happened");
    assert_eq!(out.facts["recalled"], json!(true));
    assert!(out.facts.get("event").is_none());
    let err = out.facts["event_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("actuator failed: posting the Event: 403 Forbidden"),
        "{err}"
    );
}
