//! An incident becomes a replayable, labelled trace: the engine on the simulator raises it,
//! `GET /api/v1/incidents/{id}/trace|labels` export it, babysitter's own trace and labels
//! parsers read it back, and the offline replay detects the same kind (recall 1), as the
//! detection benchmark would score it. Then the CLI, against the API on a real socket.

mod common;

use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use babysitter::detect::FindingKind;
use babysitter::incident::Incident;
use babysitter::replay::{DetectorSet, Labels, ReplayOptions, Trace, replay, score};
use babysitter::sim::Fault;
use common::{HISTORY, Harness};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(h: &Harness, token: Option<&str>, uri: &str) -> Got {
    let router = babysitter::api::router(h.engine.clone());
    let mut req = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = router
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// The trace and its labels through the API, fetched as the CLI does (the labels for exactly
/// the trace's window), and read back with babysitter's own parsers.
async fn export(h: &Harness, id: &str) -> (Trace, Labels, String) {
    let t = get(h, None, &format!("/api/v1/incidents/{id}/trace")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(t.headers["content-type"], "text/csv; charset=utf-8");
    let origin = t.headers[babysitter::api::ORIGIN_HEADER].to_str().unwrap();
    let until = t.headers[babysitter::api::UNTIL_HEADER].to_str().unwrap();
    let l = get(
        h,
        None,
        &format!("/api/v1/incidents/{id}/labels?from={origin}&until={until}"),
    )
    .await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    assert_eq!(
        l.headers[babysitter::api::ORIGIN_HEADER].to_str().unwrap(),
        origin
    );
    let trace = Trace::parse(&t.body, Path::new(&format!("{id}.csv"))).expect("trace parses");
    let labels =
        Labels::parse(&l.body, Path::new(&format!("{id}.labels.json"))).expect("labels parse");
    (trace, labels, t.body)
}

/// Replays the exported trace as the benchmark does and returns the strict recall of `kind`.
fn recall(trace: &Trace, labels: &Labels, kind: FindingKind) -> Option<f64> {
    let run = replay(trace, &ReplayOptions::default(), DetectorSet::Babysitter).expect("replays");
    let s = score(&run.findings, labels);
    s.strict_by_kind.get(&kind).and_then(|k| k.recall())
}

fn only_incident(h: &Harness, run: &str) -> Incident {
    let incs = h.incidents_of(run);
    assert_eq!(incs.len(), 1, "{incs:#?}");
    incs[0].clone()
}

/// Checks the labels against the incident: one anomaly per finding, onset relative to the
/// trace's time 0, inside the trace.
fn assert_labels_match(inc: &Incident, trace: &Trace, labels: &Labels, origin: f64) {
    assert_eq!(labels.anomalies.len(), inc.findings.len(), "{labels:#?}");
    for (a, f) in labels.anomalies.iter().zip(&inc.findings) {
        assert_eq!(a.kind, f.kind);
        assert!(
            (a.start - (f.onset - origin)).abs() < 1e-3,
            "{a:?} vs {f:?}"
        );
        assert!(a.start <= a.end && a.end <= trace.end, "{a:?}");
        assert_eq!(a.note, f.message);
    }
    assert_eq!(
        labels.source.split(", exported").next(),
        Some(format!("babysitter incident {} on run {}", inc.id, inc.run).as_str())
    );
    assert!(
        labels.description.contains("remove it from `anomalies`"),
        "{}",
        labels.description
    );
}

#[tokio::test]
async fn a_resolved_loss_spike_exports_to_a_trace_that_replays_to_the_same_finding() {
    let h = Harness::new(vec![("run-a", common::spike_fault())], |_| {}).await;
    assert!(h.until_finished(3.0 * 3600.0).await);
    let inc = only_incident(&h, "run-a");
    assert!(inc.state.is_final(), "{inc:#?}");
    assert_eq!(inc.findings[0].kind, FindingKind::LossSpike);

    let (trace, labels, csv) = export(&h, &inc.id).await;
    // Time starts at 0 on the first row and the trace covers 3 h before the onset (the sim's
    // run has exactly that much history) up to when the incident closed.
    assert_eq!(trace.start, 0.0);
    let origin = inc.onset() - labels.anomalies[0].start;
    assert!(
        (inc.onset() - origin - 3.0 * 3600.0).abs() <= 30.0,
        "origin {origin}, onset {}",
        inc.onset()
    );
    assert!((origin + trace.end - inc.updated_at).abs() <= 30.0);
    let header = csv.lines().next().unwrap();
    for chart in ["time,", "step", "loss", "grad_norm", "lr"] {
        assert!(header.contains(chart), "{header}");
    }
    // Every row but the first has a later time (sorted, one row per time).
    let times: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(times.len(), trace.rows);
    assert_labels_match(&inc, &trace, &labels, origin);
    assert!(
        labels.description.contains("loss-spike"),
        "{}",
        labels.description
    );
    assert!(
        labels.description.contains("resolved"),
        "{}",
        labels.description
    );

    assert_eq!(recall(&trace, &labels, FindingKind::LossSpike), Some(1.0));
}

#[tokio::test]
async fn a_hang_exports_with_the_history_stall_detection_needs() {
    let h = Harness::new(vec![("run-b", common::hang_fault(0))], |_| {}).await;
    assert!(h.until_finished(3.0 * 3600.0).await);
    let inc = only_incident(&h, "run-b");
    assert_eq!(inc.findings[0].kind, FindingKind::Stall);
    let (trace, labels, _) = export(&h, &inc.id).await;
    let origin = inc.onset() - labels.anomalies[0].start;
    assert_labels_match(&inc, &trace, &labels, origin);
    assert_eq!(recall(&trace, &labels, FindingKind::Stall), Some(1.0));

    // `before` sets how much history comes with it: 1 min instead of the default 3 h.
    let t = get(
        &h,
        None,
        &format!("/api/v1/incidents/{}/trace?before=1m", inc.id),
    )
    .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let short = Trace::parse(&t.body, Path::new("short.csv")).unwrap();
    let cut = trace.duration() - short.duration();
    assert!((cut - (3.0 * 3600.0 - 60.0)).abs() <= 30.0, "{cut}");
}

#[tokio::test]
async fn nan_values_survive_the_export_and_a_gone_run_is_410() {
    let h = Harness::new(
        vec![(
            "run-n",
            vec![Fault::Nan {
                at: HISTORY + 600.0,
                steps: 50,
            }],
        )],
        |_| {},
    )
    .await;
    assert!(
        h.until(3600.0, |v| v.incidents.values().any(|i| i.run == "run-n"))
            .await
    );
    let inc = only_incident(&h, "run-n");
    assert_eq!(inc.findings[0].kind, FindingKind::Nonfinite);
    let (trace, labels, csv) = export(&h, &inc.id).await;
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let loss_col = header
        .iter()
        .position(|c| *c == "loss")
        .expect("loss column");
    assert!(
        csv.lines()
            .skip(1)
            .any(|l| l.split(',').nth(loss_col) == Some("NaN")),
        "no NaN loss cell written"
    );
    let loss = trace.charts.get(babysitter::charts::Role::Loss).unwrap();
    assert!(loss.samples().iter().any(|s| s.v.is_nan()), "NaN read back");
    assert!(
        loss.samples().iter().any(|s| s.v.is_finite()),
        "history kept"
    );
    assert_eq!(recall(&trace, &labels, FindingKind::Nonfinite), Some(1.0));

    // A bad `before` is a 400 naming the parameter.
    let t = get(
        &h,
        None,
        &format!("/api/v1/incidents/{}/trace?before=soon", inc.id),
    )
    .await;
    assert_eq!(t.status, StatusCode::BAD_REQUEST);
    assert!(
        t.body.contains("before") && t.body.contains("soon"),
        "{}",
        t.body
    );

    // The run stops being watched: its charts are gone, the incident is still known.
    assert!(
        h.engine
            .remove_watch("run-n", "test: workload deleted")
            .await
    );
    for what in ["trace", "labels"] {
        let t = get(&h, None, &format!("/api/v1/incidents/{}/{what}", inc.id)).await;
        assert_eq!(t.status, StatusCode::GONE, "{}", t.body);
        let err: serde_json::Value = serde_json::from_str(&t.body).unwrap();
        let msg = err["error"].as_str().unwrap();
        assert!(
            msg.contains("run-n") && msg.contains("no longer watched"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn unknown_incidents_are_404_and_reads_need_a_token_when_closed() {
    let h = Harness::new(vec![("run-h", vec![])], |cfg| cfg.api.read_open = false).await;
    h.tick().await;
    for what in ["trace", "labels"] {
        let uri = format!("/api/v1/incidents/inc-404/{what}");
        let t = get(&h, None, &uri).await;
        assert_eq!(t.status, StatusCode::UNAUTHORIZED, "{}", t.body);
        let t = get(&h, Some(common::VIEWER_TOKEN), &uri).await;
        assert_eq!(t.status, StatusCode::NOT_FOUND, "{}", t.body);
        let err: serde_json::Value = serde_json::from_str(&t.body).unwrap();
        assert_eq!(err["error"], "no incident `inc-404`");
    }
}

/// `babysitter incident export` (the real binary) against the API on a real socket writes the
/// two files; `babysitter replay --labels` on them finds the incident's kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_both_files_and_the_replay_command_scores_them() {
    let h = Harness::new(vec![("run-a", common::spike_fault())], |cfg| {
        cfg.api.read_open = false
    })
    .await;
    assert!(
        h.until(3600.0, |v| v.incidents.values().any(|i| i.run == "run-a"))
            .await
    );
    let inc = only_incident(&h, "run-a");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = babysitter::api::router(h.engine.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let out = h.dir.path().join("traces");
    let api = format!("http://{addr}");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_babysitter"))
                .args(&args)
                .env("BABYSITTER_TOKEN", common::VIEWER_TOKEN)
                .output()
                .unwrap()
        })
    };
    let args = |id: &str| -> Vec<String> {
        vec![
            "incident".into(),
            "export".into(),
            id.into(),
            "--api".into(),
            api.clone(),
            "--before".into(),
            "3h".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let res = run(args(&inc.id)).await.unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).to_string();
    assert!(
        res.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let csv = out.join(format!("{}.csv", inc.id));
    let labels = out.join(format!("{}.labels.json", inc.id));
    assert!(stdout.contains(&csv.display().to_string()), "{stdout}");
    let command = format!(
        "replay: babysitter replay {} --labels {}",
        csv.display(),
        labels.display()
    );
    assert!(stdout.contains(&command), "{stdout}");
    let trace = Trace::load(&csv).expect("written trace parses");
    let l = Labels::load(&labels).expect("written labels parse");
    assert_eq!(l.anomalies[0].kind, FindingKind::LossSpike);
    // 3 h of history before the onset came with it (the trace reaches back to the run's start).
    assert!(
        l.anomalies[0].start >= 3.0 * 3600.0 - 30.0,
        "{:?}",
        l.anomalies[0]
    );
    assert!(trace.rows > 100, "{}", trace.rows);

    // The printed command, run as printed.
    let res = run(vec![
        "replay".into(),
        csv.display().to_string(),
        "--labels".into(),
        labels.display().to_string(),
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&res.stdout).to_string();
    assert!(res.status.success(), "{text}");
    let strict = text
        .lines()
        .find(|l| l.starts_with("strict"))
        .unwrap_or_default();
    assert!(strict.contains("recall 1.00"), "{text}");

    // An unknown id: the API's 404 and its message, nothing written.
    let res = run(args("inc-999")).await.unwrap();
    let err = String::from_utf8_lossy(&res.stderr).to_string();
    assert!(!res.status.success());
    assert!(
        err.contains("404") && err.contains("no incident `inc-999`"),
        "{err}"
    );
    assert!(!out.join("inc-999.csv").exists());
}

/// A condition that ends by itself (a gradient burst the clipper absorbs): its anomaly ends when
/// the engine saw it clear (`finding_cleared`'s `cleared_at`), not with the trace.
#[tokio::test]
async fn an_anomaly_ends_when_its_finding_cleared() {
    let h = Harness::new(
        vec![(
            "run-g",
            vec![Fault::GradExplosion {
                at: HISTORY + 600.0,
                steps: 20,
            }],
        )],
        |_| {},
    )
    .await;
    let mut cleared = None;
    for _ in 0..120 {
        h.tick().await;
        let entries = h
            .audit
            .query(&babysitter::audit::Filter {
                run: Some("run-g".into()),
                kind: Some(babysitter::audit::EntryKind::FindingCleared),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(e) = entries
            .iter()
            .find(|e| e.payload["finding"]["kind"] == "grad_explosion")
        {
            cleared = Some(e.payload.clone());
            break;
        }
    }
    let cleared = cleared.expect("the burst cleared");
    let cleared_at = cleared["cleared_at"].as_f64().expect("cleared_at recorded");
    // A few polls more, so the trace runs past the clearing.
    for _ in 0..5 {
        h.tick().await;
    }
    let inc = only_incident(&h, "run-g");
    let (trace, labels, _) = export(&h, &inc.id).await;
    let origin = inc.onset() - labels.anomalies[0].start;
    assert_labels_match(&inc, &trace, &labels, origin);
    let a = labels
        .anomalies
        .iter()
        .find(|a| a.kind == FindingKind::GradExplosion)
        .expect("labelled");
    assert!(
        (a.end - (cleared_at - origin)).abs() < 1e-3,
        "{a:?}, cleared at {cleared_at}"
    );
    assert!(
        a.end < trace.end,
        "{a:?} ends before the trace ({})",
        trace.end
    );
    assert_eq!(
        recall(&trace, &labels, FindingKind::GradExplosion),
        Some(1.0)
    );
}
