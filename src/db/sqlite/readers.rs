//! Read-only connections on threads of their own, beside the writer.
//!
//! WAL lets readers run while the writer writes: each statement here reads
//! the last committed state as of its start, and never waits for, nor
//! delays, the writer's transactions. Before they had their own
//! connections, every list went through the writer's thread in line with
//! the renewals: at 1.17M tokens one admin repeating an audit query cut
//! renewals from ~1200/s to 6-57/s (issue 17). A call answered by the
//! writer has committed before its caller sees the answer, so a read sent
//! after it sees it (read-your-writes holds across the two queues).
//!
//! The readers share one queue: whichever is free takes the next call.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};

use super::internal;
use crate::db::Result;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The reader threads and their queue.
#[derive(Clone)]
pub(super) struct Readers {
    jobs: mpsc::Sender<ReadJob>,
    /// Calls sent and not yet finished.
    pub(super) pending: Arc<AtomicUsize>,
    pub(super) count: usize,
}

/// How many readers: one per core, between 2 and 4 (reads are short; more
/// threads than cores only add switching).
pub(super) fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, 4)
}

/// A read-only connection to the database the writer has opened (and
/// migrated): its `-wal` and `-shm` files exist while the writer holds it.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl Readers {
    /// Opens `count` read-only connections, each on a thread of its own.
    /// The threads end when the last clone of the store is dropped.
    pub(super) fn start(path: &Path, count: usize) -> anyhow::Result<Readers> {
        let (jobs, queue) = mpsc::channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        let pending = Arc::new(AtomicUsize::new(0));
        for n in 0..count {
            let conn = open_reader(path)?;
            let queue = queue.clone();
            let done = pending.clone();
            std::thread::Builder::new()
                .name(format!("charter-sqlite-r{n}"))
                .spawn(move || {
                    loop {
                        // Held only while waiting for the next call.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        // A panicking call fails alone (its caller sees an
                        // error); the connection serves the next.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
                        done.fetch_sub(1, Ordering::Relaxed);
                    }
                })?;
        }
        Ok(Readers {
            jobs,
            pending,
            count,
        })
    }

    /// Runs `f` on a free reader and waits for its answer.
    pub(super) async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending.fetch_add(1, Ordering::Relaxed);
        let job: ReadJob = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(internal("the sqlite reader threads have stopped"));
        }
        rx.await
            .map_err(|_| internal("the sqlite read failed (panicked)"))?
    }
}
