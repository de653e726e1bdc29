//! The use cases of the issuer: what the HTTP API, the portal and the
//! scheduler do to licenses, instances and tokens, with the rules from
//! [`crate::domain`] and one store operation per change. Nothing here knows
//! HTTP: callers parse and authorise, call one use case, and map its
//! [`Error`] to their own answer (`api::error` for the JSON API).
//!
//! Changes computed from a row read earlier are written conditionally on
//! the row's version ([`crate::db::StoreError::Stale`]); without an
//! `If-Match` from the caller a stale write is recomputed from a fresh read
//! (a few times), so concurrent writers of other fields lose nothing; with
//! one, the caller learns that the row changed ([`Error::Stale`]).

use std::sync::Arc;

use crate::config::Config;
use crate::db::{Store, StoreError};
use crate::domain::{ActorKind, AuditEvent, LicenseStatus};
use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::ratelimit::RenewLimiter;
use crate::sealed::Sealer;

pub mod accounts;
mod diff;
pub mod events;
pub mod instances;
pub mod keys;
pub mod licenses;
pub mod products;
pub mod push;
pub mod retention;
pub mod tokens;
pub mod usage;
pub mod webhooks;

pub use diff::changes;

/// What the use cases work with; cheap to clone.
#[derive(Clone)]
pub struct Licensing {
    pub store: Arc<dyn Store>,
    /// Signs new tokens and verifies presented ones; follows the key set
    /// in the store ([`keys::maintain`]).
    pub keys: Arc<keys::LiveKeys>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub pusher: Arc<Pusher>,
    /// The master key: seals signing keys and push credentials.
    pub sealer: Arc<Sealer>,
    /// Renewals per license and per client address.
    pub renew_limiter: Arc<RenewLimiter>,
    /// Changes of one row from this process take turns (see [`RowLocks`]).
    pub locks: Arc<RowLocks>,
    /// The webhook delivery job's client, lease owner and bell.
    pub deliverer: Arc<webhooks::Deliverer>,
}

/// One async lock per row being changed, so that changes of the same row
/// from this process queue up instead of recomputing against each other:
/// eight Editors PATCHing one license ran out of retries without it. The
/// version check still catches writers in other processes. Entries live
/// only while someone holds or waits for them.
#[derive(Default)]
pub struct RowLocks {
    rows: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a row is being changed; frees its entry when the last one goes.
pub(crate) struct RowGuard<'a> {
    locks: &'a RowLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RowLocks {
    pub(crate) async fn lock(&self, key: String) -> RowGuard<'_> {
        let row = match self.rows.lock() {
            Ok(mut rows) => rows.entry(key.clone()).or_default().clone(),
            // A poisoned map only costs the queueing: the version check holds.
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        let guard = row.lock_owned().await;
        RowGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut rows) = self.locks.rows.lock()
            && rows
                .get(&self.key)
                .is_some_and(|row| Arc::strong_count(row) == 1)
        {
            rows.remove(&self.key);
        }
    }
}

/// Who asks for a change, for its audit event.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: ActorKind,
    /// The admin's user name, the service account's login, an instance URL,
    /// or the job's name.
    pub name: String,
    pub ip: Option<String>,
}

impl Actor {
    /// The issuer itself (a scheduled job).
    pub fn system(name: &str) -> Actor {
        Actor {
            kind: ActorKind::System,
            name: name.to_string(),
            ip: None,
        }
    }

    /// An audit event for `action` on `target_type` `target_id`, now.
    pub fn event(&self, action: &str, target_type: &str, target_id: &str) -> AuditEvent {
        AuditEvent {
            id: 0,
            at: charter_token::now(),
            actor_kind: self.kind,
            actor: self.name.clone(),
            action: action.to_string(),
            target_type: target_type.to_string(),
            target_id: target_id.to_string(),
            ip: self.ip.clone(),
            detail: None,
            events: Vec::new(),
        }
    }
}

/// Why a use case refused or failed. Every variant says what a person can
/// act on; a database failure keeps its cause for the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (a revoked license, no
    /// room for another instance, a name taken).
    #[error("{0}")]
    Conflict(String),
    /// The request names something that does not fit (a product that does
    /// not exist, a feature no product grants).
    #[error("{0}")]
    Unprocessable(String),
    /// The row changed since the version the caller gave (`If-Match`).
    #[error("the {0} changed since the version given in If-Match; read it again")]
    Stale(&'static str),
    /// The database is down or failed.
    #[error("{0}")]
    Store(StoreError),
    /// Signing failed (a key problem, not the caller's).
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Error::NotFound(m),
            StoreError::Conflict(m) => Error::Conflict(m),
            e @ StoreError::InstanceLimit { .. } => Error::Conflict(e.to_string()),
            StoreError::NotActive {
                lid,
                status: LicenseStatus::Revoked,
            } => Error::Conflict(format!("license {lid} is revoked; revocation is final")),
            e @ StoreError::NotActive { .. } => Error::Conflict(e.to_string()),
            StoreError::Stale(what) => Error::Stale(what),
            e @ (StoreError::Unavailable(_) | StoreError::Internal(_)) => Error::Store(e),
        }
    }
}

/// How often a change computed from a read is recomputed when another
/// writer got in between (without `If-Match`). Eight Editors patching one
/// license in a loop needed up to a dozen; each try backs off a little
/// more, with jitter, so the writers spread out.
const ATTEMPTS: u32 = 32;

/// Runs `attempt` (read, compute, write conditionally on the version read)
/// until it is not stale. With `if_match` the first stale answer is final:
/// the caller's copy is out of date.
pub(crate) async fn retry_stale<T, F, Fut>(if_match: Option<i64>, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt().await {
            Err(Error::Stale(what)) if if_match.is_none() => {
                if tries >= ATTEMPTS {
                    return Err(Error::Conflict(format!(
                        "the {what} is changing too often to apply this change; try again"
                    )));
                }
                let mut r = [0u8; 1];
                let _ = aws_lc_rs::rand::fill(&mut r);
                let micros = u64::from(tries.min(10)) * (200 + 4 * u64::from(r[0]));
                tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
            }
            other => return other,
        }
    }
}

/// The caller's `If-Match` against the version read: stale when they differ.
pub(crate) fn check_version(what: &'static str, if_match: Option<i64>, version: i64) -> Result<()> {
    match if_match {
        Some(v) if v != version => Err(Error::Stale(what)),
        _ => Ok(()),
    }
}

/// The loop of a delivery job (pushes, webhooks): claims a batch with
/// `claim` (leases in the store) until one comes back empty, and runs
/// `process` on each claimed job, `concurrency` at once; counts what it
/// delivered (`true`) and what failed (`false`, or a task that panicked).
pub(crate) async fn drain<J, C, CF, P, PF>(
    ctx: &Licensing,
    concurrency: usize,
    what: &'static str,
    mut claim: C,
    process: P,
) -> Result<crate::push::RunStats>
where
    J: Send + 'static,
    C: FnMut() -> CF,
    CF: std::future::Future<Output = Result<Vec<J>, StoreError>>,
    P: Fn(Licensing, J) -> PF + Copy + Send + 'static,
    PF: std::future::Future<Output = bool> + Send + 'static,
{
    let mut stats = crate::push::RunStats::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    loop {
        let jobs = claim().await?;
        if jobs.is_empty() {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for job in jobs {
            let (ctx, permits) = (ctx.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                process(ctx, job).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(true) => stats.delivered += 1,
                Ok(false) => stats.failed += 1,
                Err(e) => {
                    tracing::error!(error = %e, job = what, "a delivery task panicked");
                    stats.failed += 1;
                }
            }
        }
    }
    Ok(stats)
}
