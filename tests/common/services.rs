//! Real services the integration tests start on loopback: finding (or installing) their
//! binaries, and free ports to start them on.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An executable named `name` on `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// `prometheus` and `promtool`, installing the Debian packages (Prometheus and the Pushgateway)
/// if they are missing and we can. `None`, with a message, when there is no way to get them.
pub fn prometheus_binaries() -> Option<(PathBuf, PathBuf)> {
    if find_binary("prometheus").is_none() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("[ \"$(id -u)\" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    match (find_binary("prometheus"), find_binary("promtool")) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => {
            eprintln!(
                "SKIPPED: no `prometheus`/`promtool` binary and it could not be installed (apt-get install prometheus)"
            );
            None
        }
    }
}
