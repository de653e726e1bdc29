//! A private PostgreSQL server in a temporary directory, on a free loopback
//! port, that a test may stop and start (the shared server at 5432 is never
//! touched). Uses `/usr/lib/postgresql/<v>/bin` (or `CHARTER_PG_BIN`); as
//! root, runs the server as the `postgres` user through `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("CHARTER_PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePg {
    /// Starts a fresh server, or says why it cannot (the caller skips, or
    /// fails under `CI`).
    pub fn start() -> Result<PrivatePg, String> {
        let bin = pg_bin().ok_or("no PostgreSQL binaries under /usr/lib/postgresql")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(
                    "running as root and cannot give the data directory to user postgres".into(),
                );
            }
        }
        let pg = PrivatePg {
            port: super::procs::free_port(),
            dir,
            bin,
            as_postgres,
        };
        let data = pg.data();
        let out = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        pg.up()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "-l",
            &log.to_string_lossy(),
            "start",
        ])
    }

    /// Stops the server: `fast` ends sessions and aborts their transactions.
    pub fn down(&self) -> Result<(), String> {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"])
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// A private server, or `None` after saying why the test is skipped
/// (a failure instead under `CI`).
pub fn private_pg_or_skip(test: &str) -> Option<PrivatePg> {
    match PrivatePg::start() {
        Ok(pg) => Some(pg),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED {test}: cannot run a private PostgreSQL here: {why}");
            None
        }
        Err(why) => panic!("{test}: cannot run a private PostgreSQL: {why}"),
    }
}
