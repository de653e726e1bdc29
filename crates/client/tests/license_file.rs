//! `license.jwt` damaged or removed on disk while the instance runs and
//! across a restart: the manager says so (a warning and a log line) and
//! holds the built-in license where there is one; a good file is taken up
//! again when it comes back.

mod common;

use std::sync::Arc;

use charter_client::{FileStore, LicenseManager, Source, TokenStatus, Warning};
use common::*;

fn unusable(info: &charter_client::StateInfo) -> Option<String> {
    info.warnings.iter().find_map(|w| match w {
        Warning::StoredLicenseUnusable { message } => Some(message.clone()),
        _ => None,
    })
}

fn builtin() -> String {
    let mut c = claims();
    c.lid = "builtin".into();
    c.jti = "builtin-jti".into();
    sign(&c)
}

async fn manager(dir: &std::path::Path, with_builtin: bool) -> LicenseManager {
    let store = Arc::new(FileStore::open(dir).expect("store opens"));
    let (mut cfg, _, _) = config(None);
    cfg.store = store;
    cfg.builtin_license = with_builtin.then(builtin);
    LicenseManager::start(cfg).await.expect("starts")
}

#[tokio::test]
async fn a_corrupt_or_removed_license_file_falls_back_to_the_builtin_license() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("license.jwt");
    std::fs::write(&file, format!("{}\n", valid_token())).expect("write");
    let m = manager(dir.path(), true).await;
    let info = m.state_info();
    assert_eq!(
        (info.source, info.status),
        (Some(Source::Stored), TokenStatus::Valid)
    );
    assert_eq!(unusable(&info), None);

    let valid = valid_token();
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not a token at all".to_vec()),
        ("truncated", valid.as_bytes()[..valid.len() / 2].to_vec()),
        ("one byte flipped", {
            let mut b = valid.clone().into_bytes();
            let i = b.len() - 5;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            b
        }),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01, 0x80]),
    ];
    for (name, bytes) in corruptions {
        std::fs::write(&file, &bytes).expect("corrupt");
        let info = m.tick().await;
        assert_eq!(info.source, Some(Source::BuiltIn), "{name}");
        assert_eq!(info.status, TokenStatus::Valid, "{name}");
        assert_eq!(
            info.claims.as_ref().map(|c| c.lid.as_str()),
            Some("builtin")
        );
        let w = unusable(&info).unwrap_or_else(|| panic!("{name}: no warning in {info:?}"));
        assert!(
            w.contains("unusable") && w.contains("built-in"),
            "{name}: {w}"
        );
        // Judged once: another tick changes nothing.
        assert_eq!(m.tick().await.source, Some(Source::BuiltIn), "{name}");
        // The good file comes back and is taken up, the warning gone.
        std::fs::write(&file, format!("{valid}\n")).expect("restore");
        let info = m.tick().await;
        assert_eq!(info.source, Some(Source::Stored), "{name}");
        assert_eq!(unusable(&info), None, "{name}");
    }

    // A token by a key not known yet is not corrupt: it may be a rotated
    // key the JWKS will supply, so it is held (unverified), not replaced.
    std::fs::write(&file, unknown_key_token()).expect("write");
    assert_eq!(m.tick().await.source, Some(Source::Stored));

    // Removed while running.
    std::fs::remove_file(&file).expect("remove");
    let info = m.tick().await;
    assert_eq!(
        (info.source, info.status),
        (Some(Source::BuiltIn), TokenStatus::Valid)
    );
    let w = unusable(&info).expect("a warning");
    assert!(w.contains("removed"), "{w}");

    // A restart on a corrupt file: the same fallback, said at once.
    std::fs::write(&file, b"garbage").expect("corrupt");
    drop(m);
    let m = manager(dir.path(), true).await;
    let info = m.state_info();
    assert_eq!(
        (info.source, info.status),
        (Some(Source::BuiltIn), TokenStatus::Valid)
    );
    assert!(unusable(&info).is_some());
    // The file was left as it was: the operator may want to look at it.
    assert_eq!(std::fs::read(&file).expect("read"), b"garbage");
}

#[tokio::test]
async fn without_a_builtin_license_a_corrupt_file_is_reported_invalid() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("license.jwt");
    std::fs::write(&file, [0xffu8, 0x00, b'x']).expect("write");
    let m = manager(dir.path(), false).await;
    let info = m.state_info();
    assert_eq!(info.status, TokenStatus::Invalid);
    assert!(!info.valid);
    let w = unusable(&info).expect("a warning");
    assert!(w.contains("unusable"), "{w}");
    // Removed: not found, and said so.
    std::fs::remove_file(&file).expect("remove");
    let info = m.tick().await;
    assert_eq!(info.status, TokenStatus::NotFound);
    std::fs::write(&file, valid_token()).expect("write");
    let info = m.tick().await;
    assert_eq!(info.status, TokenStatus::Valid);
    assert_eq!(unusable(&info), None);
}
