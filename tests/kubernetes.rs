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
use fake_kube::{FakeKube, JOBS, LEASES};
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

/// The same discovery against a real cluster: `KUBECONFIG=… cargo test --test kubernetes -- --ignored`.
/// It creates a suspended, annotated Job in `$BABYSITTER_TEST_NAMESPACE` (default `default`),
/// waits for its watch, deletes it, and waits for the watch to end.
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
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"babysitter.dev/watch": "true"}},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let found = eventually(30.0, || watched(&h.engine).contains(&name)).await;
    let _ = jobs.delete(&name, &DeleteParams::background()).await;
    assert!(found, "the annotated job was not discovered");
    assert!(eventually(30.0, || !watched(&h.engine).contains(&name)).await);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
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
