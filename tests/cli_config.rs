//! Start-up on a config with errors, through the real binary: every error is printed, one per
//! line with its file and line (or the environment variable that set it), like `babysitter
//! check` prints them, and nothing starts.

use std::path::Path;
use std::process::{Command, Output};

/// The binary with `args`, without the `BABYSITTER_*` variables of the calling environment
/// (plus `env`).
fn babysitter(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_babysitter"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("BABYSITTER_")
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run babysitter")
}

/// A bad duration (line 1), an unknown field (line 5) and a run watched twice (line 12).
const THREE_ERRORS: &str = "poll_interval = \"every so often\"\n\
    \n\
    [policy]\n\
    read_only = true\n\
    colour = \"red\"\n\
    \n\
    [[watches]]\n\
    run = \"llama-70b\"\n\
    target = { kind = \"simulated\", run = \"llama-70b\" }\n\
    \n\
    [[watches]]\n\
    run = \"llama-70b\"\n\
    target = { kind = \"simulated\", run = \"llama-8b\" }\n";

#[test]
fn serve_prints_every_config_error_with_its_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("babysitter.toml");
    std::fs::write(&file, THREE_ERRORS).unwrap();
    let f = file.display().to_string();

    let out = babysitter(&["serve", "--config", &f], &[], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{f}:1: poll_interval: invalid duration `every so often`"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{f}:5: policy.colour: unknown field `colour`")),
        "{stderr}"
    );
    assert_eq!(
        lines[2],
        format!("{f}:12: watches[1].run: `llama-70b` is watched twice"),
        "{stderr}"
    );
    assert_eq!(
        lines[3],
        "error: 3 configuration errors; nothing was started"
    );
    // Nothing started: no state was created.
    assert!(!dir.path().join("babysitter-data").exists());

    // `check` lists the same three, the same way.
    let check = babysitter(&["check", "--config", &f], &[], dir.path());
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    let check_lines: Vec<&str> = check_err.lines().take(3).collect();
    assert_eq!(check_lines, lines[..3], "{check_err}");
}

#[test]
fn other_start_commands_report_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("babysitter.toml");
    std::fs::write(&file, THREE_ERRORS).unwrap();
    let f = file.display().to_string();
    let trace = dir.path().join("t.csv");
    std::fs::write(&trace, "t,loss\n0,1.0\n").unwrap();
    let t = trace.display().to_string();
    for args in [
        vec!["demo", "--config", &f, "--for", "1s"],
        vec!["replay", &t, "--config", &f],
    ] {
        let out = babysitter(&args, &[], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{f}:1: poll_interval")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{f}:5: policy.colour")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{f}:12: watches[1].run")),
            "{stderr}"
        );
    }
}

#[test]
fn environment_overrides_apply_and_their_errors_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("babysitter.yaml");
    // Bad in the file, fixed by a variable (which overrides the file).
    std::fs::write(&file, "poll_interval: soon\n").unwrap();
    let f = file.display().to_string();
    let fixed = babysitter(
        &["check", "--config", &f],
        &[("BABYSITTER_POLL_INTERVAL", "15s")],
        dir.path(),
    );
    assert!(
        fixed.status.success(),
        "{}",
        String::from_utf8_lossy(&fixed.stderr)
    );

    let out = babysitter(
        &["serve", "--config", &f],
        &[
            ("BABYSITTER_POLL_INTERVAL", "15s"),
            ("BABYSITTER_CHECKS__CONCURRENCY", "0"),
            ("BABYSITTER_POLICY__READ_ONLY", "perhaps"),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines.contains(
            &"environment variable BABYSITTER_CHECKS__CONCURRENCY: checks.concurrency: must be 1 to 64 (got 0)"
        ),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l
            .starts_with("environment variable BABYSITTER_POLICY__READ_ONLY: policy.read_only: ")),
        "{stderr}"
    );
    assert_eq!(
        lines[2],
        "error: 2 configuration errors; nothing was started"
    );
}
