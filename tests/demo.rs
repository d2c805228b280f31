//! The README's first command, as a new user runs it (faster): the real binary, the real API, the
//! SQLite audit log; then `audit verify` before and after one row is changed.

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_babysitter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_tells_three_stories_and_the_audit_log_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin())
        .args([
            "demo",
            "--speed",
            "180",
            "--for",
            "35s",
            "--approve-after",
            "5s",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The story, one readable line per step.
    assert!(stdout.contains("API:"), "{stdout}");
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    for needle in [
        "run-a  ! loss_spike",
        "diagnosed with runbook `loss-spike`",
        "lr ",
        "run-b  ! stall",
        "diagnosed with runbook `hang`",
        "run-c  ! gpu_hardware_error",
        "diagnosed with runbook `gpu-hardware-error`",
        "PAGE [critical]",
        "approve: curl -sX POST http://127.0.0.1:",
        "export BABYSITTER_TOKEN=",
        "demo-operator approved",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    for run in ["run-a", "run-b", "run-c"] {
        let resolved = stdout
            .lines()
            .any(|l| l.contains(run) && l.contains("resolved") && l.contains("verified"));
        assert!(resolved, "{run} was not verified and resolved:\n{stdout}");
    }
    assert!(stdout.contains("audit log OK"), "{stdout}");

    let db = data.join("audit.db");
    assert!(db.exists());
    let verify = |expect_ok: bool| {
        let out = Command::new(bin())
            .args(["audit", "verify", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect_ok, "{text}");
        text
    };
    verify(true);

    // Change one row, as someone with sqlite3 would; verify names it.
    let url = format!("sqlite://{}", db.display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_log SET payload = '{\"edited\":true}' WHERE seq = 12")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let text = verify(false);
    assert!(text.contains("12"), "verify must name entry 12: {text}");
}

#[test]
fn check_validates_the_shipped_config_and_runbooks() {
    let out = Command::new(bin())
        .args([
            "check",
            "--config",
            "examples/babysitter.toml",
            "--runbooks",
            "runbooks",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("runbooks: OK"), "{text}");
}

#[test]
fn check_names_the_file_and_line_of_a_broken_runbook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.md"),
        "---\nid: bad\ntitle: Bad\ntriggers:\n  kinds: [stall]\nsteps:\n  - action: reboot_the_world\nverify:\n  within: 10m\n  expect: [progress]\n---\n# Bad\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--runbooks"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bad.md:7"), "{text}");
}
