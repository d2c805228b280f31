//! `babysitter serve` as an operator runs it: the real binary on a config file, the API over a
//! real socket, a clean stop on SIGTERM with the stop recorded in the audit log.

use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_on_its_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("babysitter.toml");
    std::fs::write(
        &cfg,
        format!(
            "poll_interval = \"1s\"\ndata_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[watches]]\nrun = \"r1\"\ntarget = {{ kind = \"simulated\", run = \"r1\" }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "serve never became ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let watches: serde_json::Value = client
        .get(format!("{base}/api/v1/watches"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(watches["watches"][0]["run"], "r1");
    assert_eq!(watches["watches"][0]["status"], "running");

    // SIGTERM: graceful stop, exit 0, "stopped" recorded, chain intact.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("data/audit.db");
    let verify = Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .args(["audit", "verify", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM audit_log ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kinds.first().map(String::as_str), Some("started"));
    assert_eq!(kinds.last().map(String::as_str), Some("stopped"));
}

#[test]
fn serve_refuses_a_bad_config_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[policy]\nread_onl = true\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read_onl") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn a_broken_runbook_stops_start_up_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir(&runbooks).unwrap();
    for entry in std::fs::read_dir("runbooks").unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, runbooks.join(path.file_name().unwrap())).unwrap();
    }
    // Line 5 of hang.md names a finding kind that does not exist.
    let hang = runbooks.join("hang.md");
    let text = std::fs::read_to_string(&hang).unwrap();
    std::fs::write(&hang, text.replace("kinds: [stall]", "kinds: [stal]")).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "runbooks_dir = \"{}\"\ndata_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            runbooks.display(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_babysitter"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("hang.md:5"), "{err}");
    assert!(err.contains("stal"), "{err}");
    // Nothing half-started: no audit entry was written.
    assert!(!dir.path().join("data/audit.db").exists(), "{err}");
}
