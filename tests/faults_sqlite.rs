//! The SQLite store's disk full under a running issuer: writes get 503 with
//! a message (never a 500), reads keep working, writes succeed again as soon
//! as space returns (no restart). Then the filesystem read-only (a volume
//! mounted read-only, or a restore with the wrong owner): `charter serve`
//! refuses to start with an error naming the database, and starts with
//! everything once it is writable. Afterwards `PRAGMA integrity_check` is
//! ok, every write answered 2xx is stored and no refused one is. Needs to mount a small tmpfs (root with
//! CAP_SYS_ADMIN); elsewhere it says so and skips.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::procs::{self, Portal};
use serde_json::{Value, json};

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn renew(app: &Portal, token: &str) -> (u16, Value) {
    common::send(
        app.http
            .post(format!("{}/api/tokens/renew", app.base))
            .bearer_auth(token),
    )
    .await
}

/// Fills the filesystem with one file until it is full.
fn fill(path: &Path) -> PathBuf {
    let file = path.join("filler");
    let mut f = std::fs::File::create(&file).expect("filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    file
}

#[derive(Default)]
struct Tally {
    ok: Vec<String>,
    refused: Vec<String>,
}

/// Tries to create `n` accounts; each answer must be 201 or 503 with a message.
async fn create_accounts(app: &Portal, prefix: &str, n: usize, tally: &mut Tally) {
    for i in 0..n {
        let slug = format!("{prefix}-{i}");
        let (s, body) = app
            .post(
                "/api/accounts",
                json!({"company": "x".repeat(200), "slug": slug}),
            )
            .await;
        match s {
            201 => tally.ok.push(slug),
            503 => {
                let m = body["message"].as_str().expect("message");
                assert!(m.contains("unavailable"), "{m}");
                tally.refused.push(slug);
            }
            other => panic!("{slug}: {other} {body}"),
        }
    }
}

async fn reads_work(app: &Portal, lid: &str) {
    for path in [
        "/api/accounts?per_page=1000".to_string(),
        format!("/api/licenses/{lid}"),
        format!("/api/licenses/{lid}/tokens"),
    ] {
        let (s, body) = app.get(&path).await;
        assert_eq!(s, 200, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_then_read_only() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED sqlite_disk_full_then_read_only: cannot mount a tmpfs here: {why}");
            return;
        }
    };
    let db = fs.path().join("charter.db");
    let db_url = format!("sqlite://{}", db.display());
    let work = tempfile::tempdir().expect("dir");
    let issuer = procs::issuer(work.path(), &db_url, &["--push-interval-secs", "0"]);
    let app = Portal::new(&issuer.base);
    let lid = app.license(json!({})).await;
    let (s, issued) = app
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": "https://a.example/"}),
        )
        .await;
    assert_eq!(s, 201, "{issued}");
    let mut token = issued["token"].as_str().expect("token").to_string();
    let mut tally = Tally::default();
    let mut renewed = Vec::new();

    // Disk full: writes refused with 503, reads fine.
    let filler = fill(fs.path());
    create_accounts(&app, "full", 300, &mut tally).await;
    assert!(
        !tally.refused.is_empty(),
        "a full disk refused some writes ({} accepted)",
        tally.ok.len()
    );
    let (s, body) = renew(&app, &token).await;
    assert!(s == 200 || s == 503, "renew on a full disk: {s} {body}");
    if s == 200 {
        token = body["token"].as_str().expect("token").to_string();
        renewed.push(body["claims"]["jti"].as_str().expect("jti").to_string());
    }
    reads_work(&app, &lid).await;

    // Space returns: writes work again without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let before = tally.ok.len();
    create_accounts(&app, "after-full", 5, &mut tally).await;
    assert_eq!(tally.ok.len(), before + 5, "writes work again");
    let (s, body) = renew(&app, &token).await;
    assert_eq!(s, 200, "{body}");
    token = body["token"].as_str().expect("token").to_string();
    renewed.push(body["claims"]["jti"].as_str().expect("jti").to_string());

    // Read-only: a filesystem with files open for writing cannot be
    // remounted read-only, so the issuer is restarted on it, as after a
    // restore with the wrong permissions or a volume mounted read-only.
    // Killed, so its WAL stays beside the database: SQLite can then open
    // the file read-only and serve reads, the case easiest to miss.
    issuer.kill();
    assert!(
        fs.path().join("charter.db-wal").exists(),
        "the killed issuer left its WAL"
    );
    fs.remount("ro");
    let mut child = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db_url,
        ])
        .arg("--keys-dir")
        .arg(work.path().join("keys"))
        .env("CHARTER_ADMIN_PASSWORD", common::ADMIN.1)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("charter serve kept running on a read-only database with no way to write");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot open database")
            && err.contains("charter.db")
            && err.contains("read-only"),
        "a clear error naming the database: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("read-only: {}", err.trim());

    // Writable again: the issuer starts, with everything it had.
    fs.remount("rw");
    let issuer = procs::issuer(work.path(), &db_url, &["--push-interval-secs", "0"]);
    let app = Portal::new(&issuer.base);
    reads_work(&app, &lid).await;
    let before = tally.ok.len();
    create_accounts(&app, "after-ro", 5, &mut tally).await;
    assert_eq!(tally.ok.len(), before + 5, "writes work again");
    let (s, body) = renew(&app, &token).await;
    assert_eq!(s, 200, "{body}");
    renewed.push(body["claims"]["jti"].as_str().expect("jti").to_string());
    issuer.terminate();

    // Nothing corrupt, nothing lost, nothing refused stored.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT slug FROM accounts").expect("prepare");
    let slugs: std::collections::HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    for s in &tally.ok {
        assert!(slugs.contains(s), "account {s} answered 201 but lost");
    }
    for s in &tally.refused {
        assert!(!slugs.contains(s), "account {s} refused but stored");
    }
    for jti in &renewed {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM tokens WHERE jti = ?1", [jti], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(n, 1, "renewal {jti} answered 200 but not stored");
    }
    eprintln!(
        "disk full + read-only: {} writes accepted and stored, {} refused with 503 and not stored, {} renewals stored; integrity_check ok",
        tally.ok.len(),
        tally.refused.len(),
        renewed.len()
    );
}
