//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` + `pg_ctl` on a free
//! loopback port, run as the `postgres` user when the caller is root (initdb refuses root).
//! Included with `#[path]` by tests/audit.rs and benches/audit_append.rs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};

/// A throwaway PostgreSQL cluster, stopped (immediate mode) on drop.
pub struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("BABYSITTER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    // Highest version (directory names are major versions).
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Pg {
    /// Starts a cluster, or returns `None` (with the reason printed) when PostgreSQL is not
    /// installed and `BABYSITTER_REQUIRE_PG` is unset.
    pub fn start() -> Option<Pg> {
        let required = std::env::var_os("BABYSITTER_REQUIRE_PG").is_some();
        let Some(bin) = pg_bin_dir() else {
            let why = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin \
                       (apt-get install postgresql, or set BABYSITTER_PG_BIN)";
            assert!(!required, "BABYSITTER_REQUIRE_PG is set: {why}");
            eprintln!("SKIPPED PostgreSQL test: {why}");
            return None;
        };
        match Pg::try_start(bin) {
            Ok(pg) => Some(pg),
            Err(why) => {
                // Installed but failing to start is a broken machine: always loud.
                panic!("PostgreSQL did not start: {why}");
            }
        }
    }

    fn try_start(bin: PathBuf) -> Result<Pg, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        // initdb refuses to run as root: run the server as `postgres` then.
        let as_postgres = is_root();
        if as_postgres {
            let uid = id_of("-u")?;
            let gid = id_of("-g")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let port = free_port();
        let pg = Pg {
            _dir: dir,
            data,
            bin,
            port,
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            pg.port,
            pg.data.display()
        );
        let log = pg.data.join("server.log").display().to_string();
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{server_log}")
        })?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {:?} failed ({}): {}{}",
                exe.display(),
                args,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh, empty database in the cluster.
    pub async fn database(&self, name: &str) -> String {
        let admin = connect(&self.url("postgres")).await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        self.url(name)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn id_of(flag: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| format!("id {flag} postgres: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "running as root, and there is no `postgres` user to run the server".into())
}

pub async fn connect(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}
