//! Kubernetes end to end against a fake API server on loopback: the real kube client, the real
//! kube-runtime watcher (discovery) and kube-lease-manager (leader election) talk HTTP to it.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::time::{Duration, Instant};

use babysitter::act::Target;
use babysitter::audit::{EntryKind, Filter};
use babysitter::engine::Engine;
use babysitter::k8s::discovery::{Discovery, WorkloadKind};
use babysitter::k8s::leader::{self, ElectionSettings};
use common::Harness;
use fake_kube::{FakeKube, JOBS, LEASES, NEW_EVENTS, PODS};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Waits (real time) until `pred` holds; returns whether it did.
async fn eventually(secs: f64, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pred()
}

fn watched(engine: &Engine) -> Vec<String> {
    engine.view().watches.into_iter().map(|w| w.run).collect()
}

fn job(name: &str, annotations: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "ml", "annotations": annotations},
        "spec": {"suspend": false, "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}},
        "status": {"active": 4},
    })
}

async fn entries(h: &Harness, kind: EntryKind) -> Vec<babysitter::audit::Entry> {
    h.audit
        .query(&Filter {
            kind: Some(kind),
            limit: Some(1000),
            ..Filter::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_jobs_become_watches_until_they_finish_or_disappear() {
    let kube = FakeKube::start().await;
    let h = Harness::new(vec![], |_| {}).await;
    // A job that exists before babysitter starts is found by the initial list.
    kube.put(&JOBS, job("early", json!({"babysitter.dev/watch": "true"})));
    let discovery = Discovery::new(kube.client(), h.engine.clone());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(discovery.clone().run(async move {
        let _ = rx.await;
    }));
    assert!(
        eventually(10.0, || watched(&h.engine) == vec!["early"]).await,
        "the pre-existing annotated job is watched: {:?}",
        watched(&h.engine)
    );

    // Not annotated, annotated "false", and a bad annotation: none is watched.
    kube.put(&JOBS, job("plain", json!({})));
    kube.put(&JOBS, job("off", json!({"babysitter.dev/watch": "false"})));
    kube.put(
        &JOBS,
        job(
            "bad",
            json!({"babysitter.dev/watch": "true", "babysitter.dev/autonomy": "yolo"}),
        ),
    );
    // A job that appears while running, with every annotation.
    kube.put(
        &JOBS,
        job(
            "llama",
            json!({
                "babysitter.dev/watch": "true", "babysitter.dev/run": "llama-70b",
                "babysitter.dev/autonomy": "observe", "babysitter.dev/route": "ml-oncall",
            }),
        ),
    );
    assert!(
        eventually(10.0, || watched(&h.engine) == vec!["early", "llama-70b"]).await,
        "{:?}",
        watched(&h.engine)
    );
    let view = h.engine.view();
    let w = view.watches.iter().find(|w| w.run == "llama-70b").unwrap();
    assert_eq!(w.route, "ml-oncall");
    assert_eq!(w.autonomy, babysitter::policy::Autonomy::Observe);
    assert_eq!(
        w.target,
        Target::Kubernetes {
            api_version: "batch/v1".into(),
            workload_kind: "Job".into(),
            namespace: "ml".into(),
            name: "llama".into(),
        }
    );
    let started = entries(&h, EntryKind::WatchStarted).await;
    let runs: Vec<_> = started.iter().filter_map(|e| e.run.clone()).collect();
    assert_eq!(runs, vec!["early", "llama-70b"]);
    assert_eq!(started[1].payload["discovered"], json!(true));

    // It completes: the watch ends, with the reason on record.
    kube.set_status(
        &JOBS,
        "ml",
        "llama",
        json!({"active": 0, "conditions": [{"type": "Complete", "status": "True", "reason": "Done"}]}),
    );
    assert!(eventually(10.0, || watched(&h.engine) == vec!["early"]).await);
    // It disappears: the watch ends.
    assert!(kube.delete(&JOBS, "ml", "early"));
    assert!(eventually(10.0, || watched(&h.engine).is_empty()).await);
    let ended = entries(&h, EntryKind::WatchEnded).await;
    let why: Vec<(String, String)> = ended
        .iter()
        .map(|e| {
            (
                e.run.clone().unwrap_or_default(),
                e.payload["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        why,
        vec![
            (
                "llama-70b".to_string(),
                "workload finished (Complete: Done)".to_string()
            ),
            ("early".to_string(), "workload deleted".to_string()),
        ]
    );
    // A finished job that changes again is not watched again.
    kube.set_status(&JOBS, "ml", "llama", json!({"succeeded": 4}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(watched(&h.engine).is_empty());
    assert!(discovery.watched().await.is_empty());

    // The CRD kinds are not installed on this fake: discovery skipped them and still runs, and
    // it watched Jobs with a real watch request.
    assert!(!running.is_finished());
    let reqs = kube.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path == "/apis/batch/v1/jobs" && r.query.contains("watch=true")),
        "{:?}",
        reqs.iter().map(|r| (&r.path, &r.query)).collect::<Vec<_>>()
    );
    assert!(
        reqs.iter()
            .any(|r| r.path == "/apis/kubeflow.org/v1/pytorchjobs")
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_in_configured_namespaces_only() {
    let kube = FakeKube::start().await;
    let h = Harness::new(vec![], |c| {
        c.kubernetes.namespaces = vec!["ml".into()];
    })
    .await;
    let mut other = job("elsewhere", json!({"babysitter.dev/watch": "true"}));
    other["metadata"]["namespace"] = json!("web");
    kube.put(&JOBS, other);
    kube.put(&JOBS, job("here", json!({"babysitter.dev/watch": "true"})));
    let settings = babysitter::k8s::discovery::Settings::from_config(h.engine.config());
    let discovery = Discovery::with_kinds(
        kube.client(),
        h.engine.clone(),
        settings,
        vec![WorkloadKind::Job],
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(discovery.run(async move {
        let _ = rx.await;
    }));
    assert!(eventually(10.0, || watched(&h.engine) == vec!["here"]).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watched(&h.engine), vec!["here"]);
    assert!(
        kube.requests()
            .iter()
            .all(|r| !r.path.starts_with("/apis/batch/v1/jobs")),
        "only namespaced requests"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_fails_clearly_when_no_kind_is_served() {
    let kube = FakeKube::serving(vec![LEASES]).await;
    let h = Harness::new(vec![], |_| {}).await;
    let err = Discovery::new(kube.client(), h.engine.clone())
        .run(std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Job") && err.contains("TrainJob"), "{err}");
}

fn election(identity: &str, secs: u64) -> ElectionSettings {
    ElectionSettings {
        identity: identity.into(),
        lease_name: "babysitter-leader".into(),
        lease_namespace: "ops".into(),
        lease_duration: Duration::from_secs(secs),
        renew_before: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_a_crash_hands_over_within_the_lease() {
    const LEASE: u64 = 3;
    let kube = FakeKube::start().await;
    let a = Harness::new(vec![], |_| {}).await;
    let b = Harness::new(vec![], |_| {}).await;
    assert!(
        a.engine.is_leader(),
        "a single instance leads until told otherwise"
    );
    let ea = leader::start(kube.client(), a.engine.clone(), election("a", LEASE))
        .await
        .unwrap();
    assert!(!a.engine.is_leader(), "a replica starts as a follower");
    let eb = leader::start(kube.client(), b.engine.clone(), election("b", LEASE))
        .await
        .unwrap();
    assert!(
        eventually(10.0, || a.engine.is_leader() || b.engine.is_leader()).await,
        "someone leads"
    );
    // For two lease periods, never both.
    let end = Instant::now() + Duration::from_secs(2 * LEASE);
    let mut leaders = std::collections::BTreeSet::new();
    while Instant::now() < end {
        let (la, lb) = (a.engine.is_leader(), b.engine.is_leader());
        assert!(!(la && lb), "two leaders at once");
        if la {
            leaders.insert("a");
        }
        if lb {
            leaders.insert("b");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(leaders.len(), 1, "leadership stays put: {leaders:?}");
    let lease = kube.get(&LEASES, "ops", "babysitter-leader").unwrap();
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(leaders.contains(holder.as_str()), "{lease}");
    let (leader, follower, crashed, survivor) = if holder == "a" {
        (&a, &b, ea, eb)
    } else {
        (&b, &a, eb, ea)
    };
    // The follower knows who leads, and says so.
    assert!(
        eventually(5.0, || follower.engine.leadership().holder.as_deref()
            == Some(holder.as_str()))
        .await
    );

    // The leader crashes (no release): the follower takes over once the claim runs out.
    let t = Instant::now();
    crashed.abort();
    assert!(
        eventually(LEASE as f64 + 4.0, || follower.engine.is_leader()).await,
        "the follower never took over"
    );
    let took = t.elapsed();
    // The claim lasts LEASE s from its last renewal (before the crash); kube-lease-manager then
    // waits up to 1 s before locking, and this replica confirms within 0.5 s.
    assert!(
        took <= Duration::from_secs(LEASE) + Duration::from_millis(2000),
        "handover took {took:?}"
    );
    let lease = kube.get(&LEASES, "ops", "babysitter-leader").unwrap();
    assert_ne!(
        lease["spec"]["holderIdentity"].as_str(),
        Some(holder.as_str())
    );
    // Both changes of the survivor's leadership are on record: follower at start, then leader.
    let changes = entries(follower, EntryKind::LeadershipChanged).await;
    let states: Vec<bool> = changes
        .iter()
        .map(|e| e.payload["is_leader"].as_bool().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&true), "{changes:?}");
    assert!(states.contains(&false));
    let _ = leader;
    survivor.shutdown().await;
    assert!(!follower.engine.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_releases_the_lease_and_followers_serve_read_only() {
    const LEASE: u64 = 3;
    let kube = FakeKube::start().await;
    let a = Harness::new(vec![], |_| {}).await;
    let b = Harness::new(vec![], |_| {}).await;
    let ea = leader::start(kube.client(), a.engine.clone(), election("a", LEASE))
        .await
        .unwrap();
    assert!(eventually(10.0, || a.engine.is_leader()).await);
    let eb = leader::start(kube.client(), b.engine.clone(), election("b", LEASE))
        .await
        .unwrap();
    assert!(eventually(5.0, || b.engine.leadership().holder.as_deref() == Some("a")).await);
    assert!(!b.engine.is_leader());

    // The follower's API: ready, says who leads, refuses mutations.
    let router = babysitter::api::router(b.engine.clone());
    let get = |path: &str| {
        axum::http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let res = router.clone().oneshot(get("/api/v1/leader")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(body["is_leader"], json!(false));
    assert_eq!(body["holder"], json!("a"));
    assert_eq!(body["identity"], json!("b"));
    assert_eq!(body["lease"], json!("ops/babysitter-leader"));
    let res = router.clone().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(res.status(), 200, "a follower is ready to serve reads");
    let body: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(body["leader"], json!(false));
    assert_eq!(body["leadership"]["holder"], json!("a"));
    let post = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/actions/act-1/approve")
        .header(
            "authorization",
            format!("Bearer {}", common::OPERATOR_TOKEN),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let res = router.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("follower") && msg.contains("(a)"), "{msg}");

    // A graceful stop releases the Lease at once; the follower (which sleeps until the claim it
    // last saw runs out) then takes it within the lease duration.
    let t = Instant::now();
    ea.shutdown().await;
    assert!(!a.engine.is_leader());
    let lease = kube.get(&LEASES, "ops", "babysitter-leader").unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released: {lease}"
    );
    assert!(eventually(LEASE as f64 + 3.0, || b.engine.is_leader()).await);
    assert!(
        t.elapsed() <= Duration::from_secs(LEASE) + Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    eb.shutdown().await;
}

/// The same against a real cluster: `KUBECONFIG=… cargo test --test kubernetes -- --ignored`.
/// It creates a suspended, annotated Job in `$BABYSITTER_TEST_NAMESPACE` (default `default`),
/// waits for its watch, resumes and pauses it with the real actuator (checking the suspend
/// field, the recall of the last key and the Events), deletes it, and waits for the watch to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn discovery_on_a_real_cluster() {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, DeleteParams, PostParams};
    let client = kube::Client::try_default()
        .await
        .expect("a cluster from $KUBECONFIG");
    let ns = std::env::var("BABYSITTER_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let h = Harness::new(vec![], |c| c.kubernetes.namespaces = vec![ns.clone()]).await;
    let discovery = Discovery::new(client.clone(), h.engine.clone());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(discovery.run(async move {
        let _ = rx.await;
    }));
    let name = format!("babysitter-e2e-{}", std::process::id());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"babysitter.dev/watch": "true"}},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "600"]}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let found = eventually(30.0, || watched(&h.engine).contains(&name)).await;
    let acted = act_on_a_real_job(client.clone(), &ns, &name).await;
    let _ = jobs.delete(&name, &DeleteParams::background()).await;
    assert!(found, "the annotated job was not discovered");
    if let Err(e) = acted {
        panic!("{e}");
    }
    assert!(eventually(30.0, || !watched(&h.engine).contains(&name)).await);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// Resume, then pause, a real Job through the actuator; `Err` says what did not hold (the
/// caller deletes the Job first).
async fn act_on_a_real_job(client: kube::Client, ns: &str, name: &str) -> Result<(), String> {
    use babysitter::act::{Action, Actuator};
    use babysitter::k8s::actuator::{KubeActuator, KubeActuatorOptions};
    use k8s_openapi::api::batch::v1::Job;
    let act = KubeActuator::new(client.clone(), KubeActuatorOptions::default());
    let target = Target::Kubernetes {
        api_version: "batch/v1".into(),
        workload_kind: "Job".into(),
        namespace: ns.into(),
        name: name.into(),
    };
    let jobs: kube::Api<Job> = kube::Api::namespaced(client.clone(), ns);
    let suspended = || async {
        jobs.get(name)
            .await
            .map(|j| j.spec.and_then(|s| s.suspend))
            .map_err(|e| e.to_string())
    };
    act.execute(&target, &Action::Resume, "e2e/resume")
        .await
        .map_err(|e| format!("resume: {e}"))?;
    if suspended().await? != Some(false) {
        return Err("resume did not clear spec.suspend".into());
    }
    act.execute(&target, &Action::Pause, "e2e/pause")
        .await
        .map_err(|e| format!("pause: {e}"))?;
    if suspended().await? != Some(true) {
        return Err("pause did not set spec.suspend".into());
    }
    // A retry under the same key changes nothing; recall finds the key on the Job.
    let again = act
        .execute(&target, &Action::Pause, "e2e/pause")
        .await
        .map_err(|e| format!("pause again: {e}"))?;
    if again.facts["skipped"] != json!(true) {
        return Err(format!("a repeated pause was not skipped: {again:?}"));
    }
    match act.recall(&target, &Action::Pause, "e2e/pause").await {
        Ok(Some(_)) => {}
        other => return Err(format!("recall of the pause: {other:?}")),
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client, ns);
    let posted = events
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect::<Vec<_>>();
    for reason in ["BabysitterResume", "BabysitterPause"] {
        if !posted.iter().any(|r| r == reason) {
            return Err(format!("no {reason} Event on the Job (found {posted:?})"));
        }
    }
    Ok(())
}

fn kube_watch(run: &str, name: &str) -> babysitter::config::WatchConfig {
    babysitter::config::WatchConfig {
        target: Target::Kubernetes {
            api_version: "batch/v1".into(),
            workload_kind: "Job".into(),
            namespace: "ml".into(),
            name: name.into(),
        },
        ..common::watch(run)
    }
}

#[tokio::test]
async fn dynamic_watches_are_checked_and_audited() {
    let h = Harness::new(vec![("static", vec![])], |_| {}).await;
    h.engine.add_watch(kube_watch("a", "job-a")).await.unwrap();
    assert_eq!(watched(&h.engine), vec!["a", "static"]);
    // The same run twice, an empty run and an unknown runbook are refused with the reason.
    let err = h
        .engine
        .add_watch(kube_watch("static", "job-b"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`static` is already watched") && err.contains("sim/static"),
        "{err}"
    );
    let err = h.engine.add_watch(kube_watch(" ", "x")).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let mut w = kube_watch("c", "job-c");
    w.runbooks = vec!["no-such-runbook".into()];
    let err = h.engine.add_watch(w).await.unwrap_err().to_string();
    assert!(err.contains("no-such-runbook"), "{err}");
    assert_eq!(watched(&h.engine), vec!["a", "static"]);

    assert!(h.engine.remove_watch("a", "workload deleted").await);
    assert!(!h.engine.remove_watch("a", "again").await, "only once");
    assert_eq!(watched(&h.engine), vec!["static"]);
    let started = entries(&h, EntryKind::WatchStarted).await;
    assert_eq!(
        started
            .iter()
            .filter_map(|e| e.run.as_deref())
            .collect::<Vec<_>>(),
        vec!["static", "a"]
    );
    let ended = entries(&h, EntryKind::WatchEnded).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].run.as_deref(), Some("a"));
    assert_eq!(ended[0].payload["reason"], json!("workload deleted"));
    assert_eq!(ended[0].payload["target"]["name"], json!("job-a"));
    assert!(h.audit.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_follower_is_denied_every_action_by_the_policy() {
    let h = Harness::new(vec![("r", common::xid_fault())], |_| {}).await;
    h.engine
        .set_leadership(babysitter::engine::Leadership {
            is_leader: false,
            identity: Some("b".into()),
            holder: Some("a".into()),
            lease: Some("ops/l".into()),
        })
        .await;
    assert!(
        h.until(3600.0, |v| v
            .incidents
            .values()
            .any(|i| !i.decisions.is_empty()))
            .await
    );
    let decisions = entries(&h, EntryKind::Decision).await;
    assert!(!decisions.is_empty());
    for d in &decisions {
        assert_eq!(d.payload["rule"], json!("not_leader"), "{d:?}");
    }
    assert!(entries(&h, EntryKind::ActionIntent).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The whole loop on Kubernetes: discovery, the real KubeActuator and leader election together.

const NS: &str = "ml";
const JOB: &str = "llama";
const JOB_PATH: &str = "/apis/batch/v1/namespaces/ml/jobs/llama";
const POD_LABEL: &str = "batch.kubernetes.io/job-name";

/// One babysitter replica: the real engine with the Kubernetes actuator and discovery, reading
/// its charts from the simulator (a run of the same name as the Job).
struct Replica {
    engine: std::sync::Arc<Engine>,
    audit: std::sync::Arc<babysitter::audit::AuditLog>,
    client: kube::Client,
    stop_discovery: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The simulator and the clock both replicas share: the metrics of run `llama`, with GPU Xid
/// errors 10 minutes in.
fn metrics() -> (
    std::sync::Arc<babysitter::clock::ManualClock>,
    std::sync::Arc<babysitter::sim::SimCluster>,
) {
    let clock = babysitter::clock::ManualClock::new(common::ORIGIN);
    let sim = std::sync::Arc::new(babysitter::sim::SimCluster::new(clock.clone(), 7));
    let mut spec = babysitter::sim::SimRunSpec::new(JOB, common::ORIGIN - common::HISTORY);
    spec.faults = common::xid_fault();
    sim.add_run(spec).unwrap();
    (clock, sim)
}

/// The charts of a Kubernetes workload's run, read from the simulator's run of the same name
/// (what Prometheus would serve for it).
struct SimCharts(std::sync::Arc<babysitter::sim::SimCluster>);

#[async_trait::async_trait]
impl babysitter::sources::MetricsSource for SimCharts {
    async fn poll(
        &self,
        requests: &[babysitter::sources::PollRequest],
        now: f64,
    ) -> Vec<Result<babysitter::sources::ChartBatch, babysitter::sources::SourceError>> {
        let as_sim: Vec<babysitter::sources::PollRequest> = requests
            .iter()
            .map(|r| babysitter::sources::PollRequest {
                target: Target::Simulated { run: r.run.clone() },
                ..r.clone()
            })
            .collect();
        self.0.poll(&as_sim, now).await
    }
}

impl Replica {
    /// `dir` holds the audit database; replicas given the same `dir` share it (as replicas
    /// share PostgreSQL in production).
    async fn start(
        kube: &FakeKube,
        who: &str,
        dir: &std::path::Path,
        clock: std::sync::Arc<babysitter::clock::ManualClock>,
        sim: std::sync::Arc<babysitter::sim::SimCluster>,
    ) -> Replica {
        Self::start_with(kube, who, dir, clock, sim, vec![]).await
    }

    /// [`Replica::start`] with watches in its config file.
    async fn start_with(
        kube: &FakeKube,
        who: &str,
        dir: &std::path::Path,
        clock: std::sync::Arc<babysitter::clock::ManualClock>,
        sim: std::sync::Arc<babysitter::sim::SimCluster>,
        watches: Vec<babysitter::config::WatchConfig>,
    ) -> Replica {
        use babysitter::k8s::actuator::{KubeActuator, KubeActuatorOptions};
        use babysitter::k8s::workload::Recreations;
        use std::sync::Arc;
        let cfg = babysitter::config::Config {
            data_dir: dir.to_path_buf(),
            watches,
            ..Default::default()
        };
        let audit = Arc::new(
            babysitter::audit::AuditLog::open(&cfg.audit_url())
                .await
                .unwrap(),
        );
        let client = kube.client_as(who).await;
        let recreations = Arc::new(Recreations::default());
        let shared: babysitter::clock::SharedClock = clock.clone();
        let actuator = Arc::new(KubeActuator::new(
            client.clone(),
            KubeActuatorOptions {
                instance: who.to_string(),
                clock: shared.clone(),
                recreate_timeout: Duration::from_secs(5),
                recreations: recreations.clone(),
                ..KubeActuatorOptions::default()
            },
        ));
        let handles = babysitter::engine::Handles {
            clock: shared,
            source: Arc::new(SimCharts(sim)),
            actuator,
            pager: babysitter::notify::ConsolePager::new(),
            audit: audit.clone(),
            runbooks: Arc::new(babysitter::app::load_runbooks(&cfg).unwrap()),
            checks: None,
        };
        let settings = babysitter::k8s::discovery::Settings::from_config(&cfg);
        let engine = Engine::new(
            Arc::new(cfg),
            handles,
            Arc::new(babysitter::telemetry::Metrics::new()),
        );
        engine.start(who).await;
        let discovery = Discovery::sharing(
            client.clone(),
            engine.clone(),
            settings,
            vec![WorkloadKind::Job],
            recreations,
        );
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(discovery.run(async move {
            let _ = rx.await;
        }));
        Replica {
            engine,
            audit,
            client,
            stop_discovery: Some(stop),
        }
    }

    /// What `Engine::run` does once per poll: a leader ticks, a follower does not.
    async fn step(&self) {
        if self.engine.is_leader() {
            self.engine.tick().await;
        }
    }

    fn incident(&self) -> Option<babysitter::incident::Incident> {
        self.engine.view().incidents.values().next().cloned()
    }

    async fn intents(&self) -> Vec<babysitter::audit::Entry> {
        self.audit
            .query(&Filter {
                kind: Some(EntryKind::ActionIntent),
                limit: Some(1000),
                ..Filter::default()
            })
            .await
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(s) = self.stop_discovery.take() {
            let _ = s.send(());
        }
    }
}

/// The annotated training Job (with one checkpoint its script reported) and its pod.
fn training_job(kube: &FakeKube) {
    let ckpt = format!(r#"[{{"step": 1000, "t": {}}}]"#, common::ORIGIN - 1800.0);
    kube.put(
        &JOBS,
        json!({
            "metadata": {"name": JOB, "namespace": NS, "annotations": {
                "babysitter.dev/watch": "true", "babysitter.dev/autonomy": "act",
                "babysitter.dev/route": "ml-oncall", "babysitter.dev/checkpoints": ckpt,
            }},
            "spec": {"suspend": false, "template": {
                "metadata": {"labels": {POD_LABEL: JOB}},
                "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "train", "image": "trainer:1"}]}}},
            "status": {"active": 1},
        }),
    );
    kube.put(
        &PODS,
        json!({
            "metadata": {"name": "llama-0", "namespace": NS, "labels": {POD_LABEL: JOB}},
            "spec": {"containers": [{"name": "train", "image": "trainer:1"}]},
            "status": {"phase": "Running"},
        }),
    );
    kube.set_log(
        NS,
        "llama-0",
        "step 2990 loss 1.9\nNCCL WARN Xid 79\nstep 3000 loss 1.9",
    );
}

fn is_pause_patch(r: &fake_kube::Request) -> bool {
    r.method == "PATCH"
        && r.path == JOB_PATH
        && r.body
            .as_ref()
            .is_some_and(|b| b["spec"]["suspend"] == json!(true))
}

/// The key of the first action intent of `kind`.
fn intent_key(intents: &[babysitter::audit::Entry], kind: &str) -> String {
    intents
        .iter()
        .find(|e| e.payload["action"]["type"] == json!(kind))
        .and_then(|e| e.payload["key"].as_str())
        .unwrap_or_else(|| panic!("no {kind} intent in {intents:?}"))
        .to_string()
}

/// Requests that change a workload or post an Event (not reads, not the Lease).
fn is_action(r: &fake_kube::Request) -> bool {
    r.method != "GET" && !r.path.contains("/leases")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotated_job_is_discovered_paused_on_a_gpu_fault_and_restarted_after_approval() {
    let kube = FakeKube::start().await;
    training_job(&kube);
    let dir = tempfile::tempdir().unwrap();
    let (clock, sim) = metrics();
    let a = Replica::start(&kube, "a", dir.path(), clock.clone(), sim).await;
    assert!(eventually(10.0, || watched(&a.engine) == vec![JOB]).await);

    // The simulated charts show Xid errors: the runbook pauses the Job, then asks a human
    // before restarting it.
    let mut pending = None;
    for _ in 0..120 {
        clock.advance(30.0);
        a.step().await;
        if let Some(p) = a.incident().and_then(|i| i.pending) {
            pending = Some(p);
            break;
        }
    }
    let pending = pending.expect("the restart waits for approval");
    let inc = a.incident().unwrap();
    assert_eq!(
        inc.diagnosis.as_ref().unwrap().runbook,
        "gpu-hardware-error"
    );
    assert!(inc.actions[0].ok, "{inc:#?}");
    let key = inc.actions[0].key.clone();
    let reqs = kube.requests();
    let patch = reqs
        .iter()
        .find(|r| is_pause_patch(r))
        .expect("the pause PATCH");
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.body,
        Some(
            json!({"metadata": {"annotations": {"babysitter.dev/last-action-key": key}},
                    "spec": {"suspend": true}})
        )
    );
    assert_eq!(patch.client, "a");
    let job = kube.get(&JOBS, NS, JOB).unwrap();
    assert_eq!(job["spec"]["suspend"], json!(true));
    // The pause is on the Job's record, as a Kubernetes Event.
    let events = kube.list(&NEW_EVENTS);
    let pause_ev = events
        .iter()
        .find(|e| e["reason"] == json!("BabysitterPause"))
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(pause_ev["regarding"]["name"], json!(JOB));
    assert_eq!(pause_ev["regarding"]["kind"], json!("Job"));
    assert_eq!(pause_ev["reportingInstance"], json!("a"));
    assert_eq!(pause_ev["type"], json!("Normal"));
    // Nothing was deleted or recreated before the approval.
    assert!(!reqs.iter().any(|r| r.method == "DELETE"));

    a.engine
        .approve(&pending.id, "alice", Some("node drained".into()))
        .await
        .unwrap();
    clock.advance(30.0);
    a.step().await;
    // Restart by recreation: deleted (with its uid as precondition) and created again with the
    // checkpoint to resume from; the watch survives it.
    let reqs = kube.requests();
    let del = reqs
        .iter()
        .find(|r| r.method == "DELETE" && r.path == JOB_PATH)
        .expect("the DELETE of the recreation");
    assert_eq!(
        del.body.as_ref().unwrap()["preconditions"]["uid"],
        job["metadata"]["uid"]
    );
    let post = reqs
        .iter()
        .find(|r| r.method == "POST" && r.path == "/apis/batch/v1/namespaces/ml/jobs")
        .expect("the POST of the recreation");
    let body = post.body.as_ref().unwrap();
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "BABYSITTER_RESUME_CHECKPOINT", "value": "1000"}])
    );
    assert!(body["metadata"]["uid"].is_null() && body["status"].is_null());
    // The paused Job was restarted to run again: created unsuspended.
    assert_eq!(body["spec"]["suspend"], json!(false));
    let job2 = kube.get(&JOBS, NS, JOB).expect("the Job exists again");
    assert_ne!(job2["metadata"]["uid"], job["metadata"]["uid"]);
    assert_eq!(
        job2["metadata"]["annotations"]["babysitter.dev/resume-checkpoint"],
        json!("1000")
    );
    assert_eq!(
        job2["spec"]["suspend"],
        json!(false),
        "after the restart the Job runs again: {job2}"
    );
    let restart_ev = kube
        .list(&NEW_EVENTS)
        .into_iter()
        .find(|e| e["reason"] == json!("BabysitterRestartFromCheckpoint"))
        .expect("the restart's Event");
    assert!(
        restart_ev["note"].as_str().is_some_and(
            |n| n.ends_with("; it was suspended and runs again (spec.suspend: true → false)")
        ),
        "{restart_ev}"
    );
    let restart = a.incident().unwrap().actions[1].clone();
    assert!(restart.ok, "{restart:?}");
    let outcome = entries_of(&a, EntryKind::ActionOutcome)
        .await
        .into_iter()
        .find(|e| e.payload["key"] == json!(restart.key))
        .expect("the restart's outcome");
    assert_eq!(outcome.payload["facts"]["was_suspended"], json!(true));
    assert_eq!(outcome.payload["facts"]["suspended"], json!(false));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        watched(&a.engine),
        vec![JOB],
        "a recreation does not end the watch"
    );
    assert!(entries_of(&a, EntryKind::WatchEnded).await.is_empty());
    let inc = a.incident().unwrap();
    assert!(inc.actions.iter().all(|x| x.ok), "{inc:#?}");
    assert_rbac_grants(&kube.requests());
}

async fn entries_of(r: &Replica, kind: EntryKind) -> Vec<babysitter::audit::Entry> {
    r.audit
        .query(&Filter {
            kind: Some(kind),
            limit: Some(1000),
            ..Filter::default()
        })
        .await
        .unwrap()
}

/// One rule of deploy/rbac/*-rules.yaml.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyRule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// The rules the Helm chart grants: actuator ∪ discovery ∪ leader election.
fn granted_rules() -> Vec<PolicyRule> {
    let mut rules = vec![];
    for (file, text) in [
        (
            "actuator-rules.yaml",
            include_str!("../deploy/rbac/actuator-rules.yaml"),
        ),
        (
            "discovery-rules.yaml",
            include_str!("../deploy/rbac/discovery-rules.yaml"),
        ),
        (
            "leader-rules.yaml",
            include_str!("../deploy/rbac/leader-rules.yaml"),
        ),
    ] {
        let more: Vec<PolicyRule> = serde_saphyr::from_str(text)
            .unwrap_or_else(|e| panic!("deploy/rbac/{file} does not parse: {e}"));
        rules.extend(more);
    }
    rules
}

/// (apiGroup, resource, verb) of one API request, as RBAC sees it.
fn rbac_of(method: &str, path: &str, query: &str) -> (String, String, String) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => panic!("not an API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named) = match rest {
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => panic!("unexpected API path {path}"),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("PATCH", true) => "patch",
        ("PUT", true) => "update",
        ("POST", false) => "create",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("unexpected request {method} {path}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Every request babysitter sent to the fake API server is granted by the chart's rules.
fn assert_rbac_grants(reqs: &[fake_kube::Request]) {
    let rules = granted_rules();
    let mut needed = std::collections::BTreeSet::new();
    for r in reqs {
        needed.insert(rbac_of(&r.method, &r.path, &r.query));
    }
    for (group, resource, verb) in &needed {
        let granted = rules.iter().any(|r| {
            r.api_groups.iter().any(|g| g == group)
                && r.resources.contains(resource)
                && r.verbs.contains(verb)
        });
        assert!(
            granted,
            "babysitter needs `{verb}` on {group:?} {resource}, which deploy/rbac/*-rules.yaml do not grant (all needed: {needed:?})"
        );
    }
}

#[test]
fn requests_map_to_rbac_verbs() {
    let m = |method, path, query| rbac_of(method, path, query);
    let t = |g: &str, r: &str, v: &str| (g.to_string(), r.to_string(), v.to_string());
    assert_eq!(
        m("GET", "/apis/batch/v1/jobs", "watch=true&resourceVersion=3"),
        t("batch", "jobs", "watch")
    );
    assert_eq!(
        m("GET", "/apis/batch/v1/namespaces/ml/jobs", "limit=1"),
        t("batch", "jobs", "list")
    );
    assert_eq!(m("GET", JOB_PATH, ""), t("batch", "jobs", "get"));
    assert_eq!(m("PATCH", JOB_PATH, ""), t("batch", "jobs", "patch"));
    assert_eq!(m("DELETE", JOB_PATH, ""), t("batch", "jobs", "delete"));
    assert_eq!(
        m("POST", "/apis/batch/v1/namespaces/ml/jobs", ""),
        t("batch", "jobs", "create")
    );
    assert_eq!(
        m(
            "DELETE",
            "/api/v1/namespaces/ml/pods",
            "labelSelector=a%3Db"
        ),
        t("", "pods", "deletecollection")
    );
    assert_eq!(
        m("GET", "/api/v1/namespaces/ml/pods/p-0/log", "tailLines=5"),
        t("", "pods/log", "get")
    );
    assert_eq!(
        m(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/l",
            ""
        ),
        t("coordination.k8s.io", "leases", "update")
    );
    // What the rules grant, and one thing they do not.
    let rules = granted_rules();
    let grants = |g: &str, r: &str, v: &str| {
        rules.iter().any(|x| {
            x.api_groups.iter().any(|y| y == g)
                && x.resources.iter().any(|y| y == r)
                && x.verbs.iter().any(|y| y == v)
        })
    };
    assert!(grants("batch", "jobs", "watch") && grants("events.k8s.io", "events", "create"));
    assert!(
        !grants("", "pods", "delete"),
        "single pods are never deleted"
    );
    assert!(!grants("", "secrets", "get"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_acts_and_a_crash_mid_action_is_not_repeated() {
    const LEASE: u64 = 3;
    let kube = FakeKube::start().await;
    training_job(&kube);
    // One audit database for both replicas (PostgreSQL in production).
    let dir = tempfile::tempdir().unwrap();
    let (clock, sim) = metrics();
    let a = Replica::start(&kube, "a", dir.path(), clock.clone(), sim.clone()).await;
    let ea = leader::start(a.client.clone(), a.engine.clone(), election("a", LEASE))
        .await
        .unwrap();
    assert!(eventually(10.0, || a.engine.is_leader()).await);
    let b = Replica::start(&kube, "b", dir.path(), clock.clone(), sim).await;
    let eb = leader::start(b.client.clone(), b.engine.clone(), election("b", LEASE))
        .await
        .unwrap();
    assert!(eventually(5.0, || b.engine.leadership().holder.as_deref() == Some("a")).await);
    assert!(!b.engine.is_leader());
    assert!(
        eventually(10.0, || watched(&a.engine) == vec![JOB]
            && watched(&b.engine) == vec![JOB])
        .await
    );

    // The leader's pause reaches the API server, but the leader dies before it hears back.
    kube.hold("PATCH", JOB_PATH);
    let mut in_flight = None;
    for _ in 0..120 {
        clock.advance(30.0);
        b.step().await;
        let e = a.engine.clone();
        let mut tick = tokio::spawn(async move { e.tick().await });
        let held = tokio::select! {
            _ = &mut tick => false,
            _ = async {
                while kube.get(&JOBS, NS, JOB).unwrap()["spec"]["suspend"] != json!(true) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => true,
        };
        if held {
            in_flight = Some(tick);
            break;
        }
    }
    let tick = in_flight.expect("the leader paused the Job");
    let intents = a.intents().await;
    let key = intent_key(&intents, "pause");
    let job = kube.get(&JOBS, NS, JOB).unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["babysitter.dev/last-action-key"],
        json!(key)
    );
    assert!(
        entries_of(&a, EntryKind::ActionOutcome).await.is_empty(),
        "the pause has an intent and no outcome"
    );
    let before_crash = kube.requests().len();
    // The follower sent nothing that acts while it followed.
    for r in kube.requests().iter().filter(|r| is_action(r)) {
        assert_eq!(r.client, "a", "only the leader acts: {r:?}");
    }

    // Crash: no release of the Lease, no outcome.
    let t = Instant::now();
    tick.abort();
    ea.abort();
    drop(a);
    kube.release_holds();
    assert!(
        eventually(LEASE as f64 + 4.0, || b.engine.is_leader()).await,
        "the follower never took over"
    );
    let took = t.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE) + Duration::from_millis(2000),
        "handover took {took:?}"
    );

    // The new leader asked the Job what happened under the key, found it done, recorded the
    // outcome, and did not pause again.
    let recovery = entries_of(&b, EntryKind::Recovery).await;
    assert!(
        recovery
            .iter()
            .any(|e| e.payload["key"] == json!(key) && e.payload["found"] == json!("done")),
        "{recovery:?}"
    );
    let outcomes = entries_of(&b, EntryKind::ActionOutcome).await;
    let settled = outcomes
        .iter()
        .find(|e| e.payload["key"] == json!(key))
        .expect("the pause's outcome");
    assert_eq!(settled.payload["recovered"], json!(true), "{settled:?}");
    assert!(
        settled.payload["detail"]
            .as_str()
            .is_some_and(|d| d.contains("carries babysitter.dev/last-action-key")),
        "{settled:?}"
    );
    // The pause's Event, which the crash cut off, is posted once, by the new leader.
    let pause_events: Vec<Value> = kube
        .list(&NEW_EVENTS)
        .into_iter()
        .filter(|e| e["reason"] == json!("BabysitterPause"))
        .collect();
    assert_eq!(pause_events.len(), 1, "{pause_events:?}");
    assert_eq!(pause_events[0]["reportingInstance"], json!("b"));
    assert_eq!(pause_events[0]["regarding"]["name"], json!(JOB));
    assert!(
        settled.payload["facts"]["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("llama.babysitter.")),
        "{settled:?}"
    );
    assert!(b.audit.verify().await.unwrap().ok());

    // It carries the incident on: the restart waits for approval, then happens once, from b.
    let mut pending = None;
    for _ in 0..120 {
        clock.advance(30.0);
        b.step().await;
        if let Some(p) = b.incident().and_then(|i| i.pending) {
            pending = Some(p);
            break;
        }
    }
    let pending = pending.expect("the new leader asks before restarting");
    let inc = b.incident().unwrap();
    assert_eq!(
        inc.id, "inc-1",
        "the new leader continues the crashed leader's incident"
    );
    assert_eq!(inc.actions.len(), 1, "{inc:#?}");
    assert_eq!(inc.actions[0].key, key);
    assert!(inc.actions[0].ok);
    b.engine.approve(&pending.id, "alice", None).await.unwrap();
    clock.advance(30.0);
    b.step().await;
    let reqs = kube.requests();
    let pauses: Vec<_> = reqs.iter().filter(|r| is_pause_patch(r)).collect();
    assert_eq!(pauses.len(), 1, "the pause was not repeated: {pauses:?}");
    assert_eq!(pauses[0].client, "a");
    for r in reqs[before_crash..].iter().filter(|r| is_action(r)) {
        assert_eq!(
            r.client, "b",
            "after the crash only the new leader acts: {r:?}"
        );
    }
    assert_eq!(
        reqs.iter()
            .filter(|r| r.method == "DELETE" && r.path == JOB_PATH)
            .count(),
        1
    );
    assert!(
        reqs[before_crash..]
            .iter()
            .any(|r| r.method == "POST" && r.path == "/apis/batch/v1/namespaces/ml/jobs")
    );
    let b_intents = b.intents().await;
    assert_eq!(
        b_intents
            .iter()
            .filter(|e| e.payload["action"]["type"] == json!("pause"))
            .count(),
        1,
        "one pause intent in the shared log: {b_intents:?}"
    );
    assert_rbac_grants(&reqs);
    eb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_a_job_its_pods_events_and_logs_read_only() {
    use babysitter::agent::WorkloadInspector;
    use babysitter::k8s::inspector::{InspectorLimits, KubeInspector};
    let kube = FakeKube::start().await;
    training_job(&kube);
    let ev = |name: &str, kind: &str, obj: &str, reason: &str, at: &str| {
        json!({
            "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"kind": kind, "name": obj, "namespace": NS},
            "reason": reason, "message": format!("{reason} on {obj}"), "lastTimestamp": at,
        })
    };
    kube.put(
        &fake_kube::EVENTS,
        ev("e1", "Job", JOB, "SuccessfulCreate", "2026-11-25T10:00:00Z"),
    );
    kube.put(
        &fake_kube::EVENTS,
        ev("e2", "Pod", "llama-0", "BackOff", "2026-11-25T10:05:00Z"),
    );
    kube.put(
        &fake_kube::EVENTS,
        ev("e3", "Job", "other", "Noise", "2026-11-25T10:06:00Z"),
    );
    let i = KubeInspector::new(kube.client_as("agent").await, InspectorLimits::default());
    let target = Target::Kubernetes {
        api_version: "batch/v1".into(),
        workload_kind: "Job".into(),
        namespace: NS.into(),
        name: JOB.into(),
    };
    let status = i.status(&target).await.unwrap();
    assert_eq!(status["suspended"], json!(false));
    assert_eq!(status["status"], json!({"active": 1}));
    assert_eq!(
        status["annotations"]["babysitter.dev/autonomy"],
        json!("act")
    );
    assert!(status.get("spec").is_none());
    let pods = i.pods(&target).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].name.as_str(), pods[0].phase.as_str()),
        ("llama-0", "Running")
    );
    let events = i.events(&target, 10).await.unwrap();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["SuccessfulCreate", "BackOff"],
        "newest last, only this Job's"
    );
    assert_eq!(i.events(&target, 1).await.unwrap()[0].reason, "BackOff");
    assert_eq!(
        i.logs(&target, None, 2).await.unwrap(),
        vec!["NCCL WARN Xid 79", "step 3000 loss 1.9"]
    );
    let err = i.logs(&target, Some("nope"), 5).await.unwrap_err();
    assert!(
        err.0.contains("not one of Job/ml/llama's pods (llama-0)"),
        "{err}"
    );
    kube.delete(&JOBS, NS, JOB);
    let err = i.status(&target).await.unwrap_err();
    assert!(err.0.contains("Job/ml/llama not found"), "{err}");
    // Reads only.
    let reqs = kube.requests();
    assert!(
        reqs.iter()
            .filter(|r| r.client == "agent")
            .all(|r| r.method == "GET")
    );
    assert!(
        reqs.iter()
            .any(|r| r.path == "/api/v1/namespaces/ml/pods/llama-0/log")
    );
    assert_rbac_grants(&reqs);
}

/// The shared clock and simulator with run `llama` showing `faults`.
fn metrics_with(
    faults: Vec<babysitter::sim::Fault>,
) -> (
    std::sync::Arc<babysitter::clock::ManualClock>,
    std::sync::Arc<babysitter::sim::SimCluster>,
) {
    let clock = babysitter::clock::ManualClock::new(common::ORIGIN);
    let sim = std::sync::Arc::new(babysitter::sim::SimCluster::new(clock.clone(), 7));
    let mut spec = babysitter::sim::SimRunSpec::new(JOB, common::ORIGIN - common::HISTORY);
    spec.faults = faults;
    sim.add_run(spec).unwrap();
    (clock, sim)
}

/// "kubectl patch job llama -p '{"spec":{"suspend":…}}'": the Job as stored, with its suspend
/// field set (and, optionally, a label added), written back as a user would.
fn kubectl_suspend(kube: &FakeKube, suspend: bool) {
    let mut job = kube.get(&JOBS, NS, JOB).expect("the Job");
    job["spec"]["suspend"] = json!(suspend);
    kube.put(&JOBS, job);
}

/// Polls (30 s of engine time, then a little real time for the watch stream) until the
/// replica's audit log holds `n` `workload_suspension` entries; returns them.
async fn until_suspension_entries(
    r: &Replica,
    clock: &babysitter::clock::ManualClock,
    n: usize,
) -> Vec<babysitter::audit::Entry> {
    for _ in 0..100 {
        let got = entries_of(r, EntryKind::WorkloadSuspension).await;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        clock.advance(30.0);
        r.step().await;
    }
    entries_of(r, EntryKind::WorkloadSuspension).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_suspended_with_kubectl_is_held_and_left_alone_until_resumed() {
    let kube = FakeKube::start().await;
    training_job(&kube);
    let dir = tempfile::tempdir().unwrap();
    // The job hangs 10 minutes in: while it runs, that is a stall babysitter restarts.
    let (clock, sim) = metrics_with(common::hang_fault(9));
    let a = Replica::start(&kube, "a", dir.path(), clock.clone(), sim).await;
    assert!(eventually(10.0, || watched(&a.engine) == vec![JOB]).await);
    clock.advance(30.0);
    a.step().await;
    // Discovery's first report (running) records nothing.
    assert!(
        entries_of(&a, EntryKind::WorkloadSuspension)
            .await
            .is_empty()
    );

    // A human suspends it with kubectl.
    kubectl_suspend(&kube, true);
    let held = until_suspension_entries(&a, &clock, 1).await;
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0].run.as_deref(), Some(JOB));
    assert_eq!(held[0].payload["change"], json!("held"));
    assert_eq!(held[0].payload["by"], json!({"holder": "outside"}));
    let w = a.engine.view().watches.remove(0);
    assert_eq!(w.status, "held");
    assert_eq!(
        w.held.map(|h| h.by),
        Some(babysitter::engine::SuspendedBy::Outside)
    );

    // An hour and a half: the step chart stops (the hang), and babysitter neither opens an
    // incident nor touches the Job.
    for _ in 0..180 {
        clock.advance(30.0);
        a.step().await;
    }
    assert!(a.incident().is_none(), "{:#?}", a.incident());
    assert!(
        !kube.requests().iter().any(is_action),
        "no request changed anything: {:#?}",
        kube.requests()
            .into_iter()
            .filter(is_action)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        kube.get(&JOBS, NS, JOB).unwrap()["spec"]["suspend"],
        json!(true)
    );
    assert_eq!(entries_of(&a, EntryKind::WorkloadSuspension).await.len(), 1);

    // babysitter restarts: the hold is not persisted, discovery's initial list reports it again.
    let sim = metrics_with(common::hang_fault(9)).1;
    drop(a);
    let b = Replica::start(&kube, "b", dir.path(), clock.clone(), sim).await;
    assert!(eventually(10.0, || watched(&b.engine) == vec![JOB]).await);
    let again = until_suspension_entries(&b, &clock, 2).await;
    assert_eq!(again.len(), 2, "{again:#?}");
    assert_eq!(again[1].payload["change"], json!("held"));
    assert_eq!(b.engine.view().watches[0].status, "held");

    // The human resumes it: released.
    kubectl_suspend(&kube, false);
    let all = until_suspension_entries(&b, &clock, 3).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[2].payload["change"], json!("released"));
    assert_eq!(b.engine.view().watches[0].status, "running");
    assert!(!kube.requests().iter().any(is_action));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_babysitter_paused_and_a_human_resumed_is_no_longer_paused() {
    let kube = FakeKube::start().await;
    training_job(&kube);
    let dir = tempfile::tempdir().unwrap();
    let (clock, sim) = metrics();
    let a = Replica::start(&kube, "a", dir.path(), clock.clone(), sim).await;
    assert!(eventually(10.0, || watched(&a.engine) == vec![JOB]).await);
    // GPU Xid errors: babysitter pauses the Job and asks before restarting it.
    let mut pending = None;
    for _ in 0..120 {
        clock.advance(30.0);
        a.step().await;
        if let Some(p) = a.incident().and_then(|i| i.pending) {
            pending = Some(p);
            break;
        }
    }
    let pending = pending.expect("the restart waits for approval");
    assert_eq!(
        kube.get(&JOBS, NS, JOB).unwrap()["spec"]["suspend"],
        json!(true)
    );
    // The watch stream echoes babysitter's own pause: consistent, nothing recorded.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        clock.advance(30.0);
        a.step().await;
    }
    assert!(
        entries_of(&a, EntryKind::WorkloadSuspension)
            .await
            .is_empty()
    );
    assert_eq!(a.engine.view().watches[0].status, "paused");
    let actions_before = kube.requests().into_iter().filter(is_action).count();

    // A human resumes it with kubectl.
    kubectl_suspend(&kube, false);
    let resumed = until_suspension_entries(&a, &clock, 1).await;
    assert_eq!(resumed.len(), 1, "{resumed:#?}");
    assert_eq!(resumed[0].payload["change"], json!("resumed_outside"));
    assert_eq!(resumed[0].payload["babysitter_paused"], json!(true));
    let inc = a.incident().unwrap();
    assert_eq!(resumed[0].payload["open_incidents"], json!([inc.id]));
    assert_eq!(a.engine.view().watches[0].status, "running");
    // The incident is left as it was (a human took over): still waiting for the same approval,
    // and babysitter does not pause the Job again.
    for _ in 0..10 {
        clock.advance(30.0);
        a.step().await;
    }
    let inc = a.incident().unwrap();
    assert_eq!(
        inc.state,
        babysitter::incident::IncidentState::AwaitingApproval
    );
    assert_eq!(inc.pending.map(|p| p.id), Some(pending.id));
    assert_eq!(
        kube.requests().into_iter().filter(is_action).count(),
        actions_before
    );
    assert_eq!(
        kube.get(&JOBS, NS, JOB).unwrap()["spec"]["suspend"],
        json!(false)
    );
    assert_eq!(entries_of(&a, EntryKind::WorkloadSuspension).await.len(), 1);

    // babysitter restarts: its pause was undone, so the run is not restored as paused (and the
    // resume is not recorded a second time).
    let sim = metrics().1;
    drop(a);
    let b = Replica::start(&kube, "b", dir.path(), clock.clone(), sim).await;
    assert!(eventually(10.0, || watched(&b.engine) == vec![JOB]).await);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        clock.advance(30.0);
        b.step().await;
    }
    assert_eq!(b.engine.view().watches[0].status, "running");
    assert_eq!(entries_of(&b, EntryKind::WorkloadSuspension).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_watched_from_the_config_file_is_held_too() {
    // The Job is not annotated: babysitter watches it because its config file says so.
    let kube = FakeKube::start().await;
    training_job(&kube);
    let mut job = kube.get(&JOBS, NS, JOB).expect("the Job");
    job["metadata"]["annotations"] = json!({});
    kube.put(&JOBS, job);
    let dir = tempfile::tempdir().unwrap();
    let (clock, sim) = metrics_with(common::hang_fault(9));
    let watch = babysitter::config::WatchConfig {
        target: Target::Kubernetes {
            api_version: "batch/v1".into(),
            workload_kind: "Job".into(),
            namespace: NS.into(),
            name: JOB.into(),
        },
        ..common::watch(JOB)
    };
    let a = Replica::start_with(&kube, "a", dir.path(), clock.clone(), sim, vec![watch]).await;
    assert_eq!(watched(&a.engine), vec![JOB]);
    clock.advance(30.0);
    a.step().await;

    kubectl_suspend(&kube, true);
    let held = until_suspension_entries(&a, &clock, 1).await;
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0].payload["change"], json!("held"));
    assert_eq!(a.engine.view().watches[0].status, "held");
    // The hang starts while it is held: nothing is opened, nothing is sent.
    for _ in 0..60 {
        clock.advance(30.0);
        a.step().await;
    }
    assert!(a.incident().is_none(), "{:#?}", a.incident());
    assert!(!kube.requests().iter().any(is_action));

    kubectl_suspend(&kube, false);
    let all = until_suspension_entries(&a, &clock, 2).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[1].payload["change"], json!("released"));
    // Still the config file's watch: discovery neither ended it nor added another.
    assert_eq!(watched(&a.engine), vec![JOB]);
    assert!(entries_of(&a, EntryKind::WatchEnded).await.is_empty());
}
