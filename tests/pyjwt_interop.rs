//! PyJWT verifies Charter's RS256 and EdDSA tokens against Charter's JWKS,
//! and Charter verifies tokens PyJWT signed with Charter's private keys.
//!
//! Needs a Python with `pyjwt[crypto]`: `$CHARTER_PYTHON`, else `.venv/bin/python`
//! (`.ci/run` makes it). Without one the test is skipped locally, but fails
//! when `CI` is set, so CI cannot pass without running the check.

use std::path::{Path, PathBuf};
use std::process::Command;

fn charter(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run charter");
    assert!(
        out.status.success(),
        "charter {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("CHARTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

#[test]
fn pyjwt_and_charter_accept_each_others_tokens() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PyJWT interop check: no Python with pyjwt[crypto]"
        );
        eprintln!("skipped: no Python with pyjwt[crypto]; run .ci/run or set CHARTER_PYTHON");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    charter(&["keys", "generate", "--alg", "rs256"], dir);
    charter(&["keys", "generate", "--alg", "eddsa"], dir);
    let jwks = charter(&["keys", "jwks"], dir);
    std::fs::write(dir.join("jwks.json"), &jwks).expect("write jwks");

    // One token per algorithm: sign with the RSA key, then rotate to EdDSA.
    let claims = r#"{"lid":"lic-interop","sub":"https://a.example.com/","features":["x"]}"#;
    std::fs::write(dir.join("claims.json"), claims).expect("write claims");
    let rs = charter(&["token", "sign", "--claims", "claims.json"], dir);
    std::fs::write(dir.join("rs.jwt"), rs.trim()).expect("write");
    charter(&["keys", "rotate", "--alg", "eddsa"], dir);
    let ed = charter(&["token", "sign", "--claims", "claims.json"], dir);
    std::fs::write(dir.join("ed.jwt"), ed.trim()).expect("write");
    let jwks = charter(&["keys", "jwks"], dir);
    std::fs::write(dir.join("jwks.json"), &jwks).expect("write jwks");
    let out_dir = dir.join("pyjwt");
    std::fs::create_dir(&out_dir).expect("mkdir");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pyjwt_check.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["jwks.json", "keys", "rs.jwt", "ed.jwt"])
        .arg(&out_dir)
        .current_dir(dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyJWT check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pyjwt verified RS256 token lid=lic-interop"), "{stdout}");
    assert!(stdout.contains("pyjwt verified EdDSA token lid=lic-interop"), "{stdout}");

    let mut algs = Vec::new();
    for entry in std::fs::read_dir(&out_dir).expect("read pyjwt dir") {
        let path = entry.expect("entry").path();
        let line = charter(
            &["token", "verify", path.to_str().expect("path"), "--keys", "keys"],
            dir,
        );
        assert!(line.starts_with("valid: lid=pyjwt-"), "{line}");
        algs.push(line);
    }
    assert!(algs.iter().any(|l| l.contains("lid=pyjwt-RS256")), "{algs:?}");
    assert!(algs.iter().any(|l| l.contains("lid=pyjwt-EdDSA")), "{algs:?}");
    assert_eq!(algs.len(), 3, "one RSA key and two Ed25519 keys: {algs:?}");
}
