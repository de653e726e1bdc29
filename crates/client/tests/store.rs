//! The file store: round trip, permissions, atomic replacement (a reader
//! never sees a torn file), no temporary files left behind.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use charter_client::store::{SEEN_FILE, TOKEN_FILE};
use charter_client::{FileStore, TokenStore};

#[test]
fn round_trip_with_private_permissions_and_no_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path().join("data")).expect("opens");
    assert_eq!(store.load().expect("reads"), None);
    store.save("a.b.c").expect("saves");
    store.save("d.e.f").expect("saves again");
    assert_eq!(store.load().expect("reads"), Some("d.e.f".to_string()));
    let mode = std::fs::metadata(store.token_path())
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a token is a credential");
    store.save_latest_seen(1_800_000_000).expect("saves");
    assert_eq!(
        store.load_latest_seen().expect("reads"),
        Some(1_800_000_000)
    );
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, vec![TOKEN_FILE.to_string(), SEEN_FILE.to_string()]);
    store.clear().expect("clears");
    store.clear().expect("clearing twice is fine");
    assert_eq!(store.load().expect("reads"), None);
}

#[test]
fn a_damaged_seen_record_reads_as_absent_and_whitespace_is_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("opens");
    std::fs::write(dir.path().join(SEEN_FILE), "garbage").expect("writes");
    assert_eq!(store.load_latest_seen().expect("reads"), None);
    std::fs::write(dir.path().join(TOKEN_FILE), "  x.y.z \n\n").expect("writes");
    assert_eq!(store.load().expect("reads"), Some("x.y.z".to_string()));
    std::fs::write(dir.path().join(TOKEN_FILE), "\n").expect("writes");
    assert_eq!(store.load().expect("reads"), None, "empty file = no token");
}

#[test]
fn readers_never_see_a_torn_token_while_it_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FileStore::open(dir.path()).expect("opens"));
    // Large, distinct tokens make a partial write visible if there were one.
    let a = "A".repeat(64 * 1024);
    let b = "B".repeat(48 * 1024);
    store.save(&a).expect("saves");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop, a, b) = (store.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let got = store.load().expect("reads").expect("always present");
                assert!(got == a || got == b, "torn read of {} bytes", got.len());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        store.save(if i % 2 == 0 { &b } else { &a }).expect("saves");
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader did not panic");
    assert!(reads > 0);
}

#[test]
fn a_failed_save_leaves_the_old_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("opens");
    store.save("old.token.here").expect("saves");
    // A directory where the data directory should be makes the rename fail.
    let blocked = FileStore::open(dir.path().join("blocked")).expect("opens");
    std::fs::create_dir(blocked.token_path()).expect("mkdir");
    std::fs::write(blocked.token_path().join("x"), "x").expect("writes");
    assert!(blocked.save("new").is_err());
    let leftovers = std::fs::read_dir(blocked.dir()).expect("lists").count();
    assert_eq!(leftovers, 1, "the temporary file is removed");
    assert_eq!(
        store.load().expect("reads"),
        Some("old.token.here".to_string())
    );
}
