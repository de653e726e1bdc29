//! The embedded SQLite store: one file, one writer. Calls run in order on a
//! thread of their own that owns the connection (no lock, no hop through the
//! blocking pool per call), with cached prepared statements; WAL journal with
//! `synchronous=NORMAL` (durable across process crashes; a power cut may lose
//! the last transactions, not corrupt).
//!
//! The SQL and the row mappers are shared with PostgreSQL ([`super::sql`],
//! [`super::rows`]); what is here is how SQLite runs them: every change is
//! one IMMEDIATE transaction with its audit event, and issuances queued back
//! to back share one commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rusqlite::{Connection, Params, Row, TransactionBehavior, params};

use super::rows::{self, Cells, Taken};
use super::{
    Issuance, IssuanceContext, PoolStatus, PushSettings, Recipient, Recorded, Result, Store,
    StoreError, Transition, lists, sql,
};
use crate::domain::{
    Account, AuditEvent, Instance, License, LicenseFilter, LicenseStatus, Listing, Page, Product,
    TokenReason, TokenRecord,
};

mod access;
mod events;
mod keys;
mod push;
mod readers;
mod sessions;
mod usage;

mod embedded {
    refinery::embed_migrations!("sql/sqlite");
}

/// Work for the connection's thread.
enum Job {
    /// Any call (in a transaction of its own if it takes one).
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
    /// A token to record: issuances queued back to back share one
    /// transaction, each in a savepoint of its own (group commit).
    Issuance(Box<IssuanceJob>),
}

struct IssuanceJob {
    issuance: Issuance,
    audit: AuditEvent,
    reply: tokio::sync::oneshot::Sender<Result<Recorded>>,
}

/// Most rows one prune statement deletes (see [`SqliteStore::prune`]).
const SQLITE_PRUNE_BATCH: i64 = 200;

/// Most issuances one commit takes.
const GROUP_COMMIT_MAX: usize = 64;

#[derive(Clone)]
pub struct SqliteStore {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Calls sent and not yet finished.
    pending: Arc<AtomicUsize>,
    /// Read-only connections for the reads that feed no write.
    readers: readers::Readers,
    /// Set while a prune runs (one at a time).
    pruning: Arc<std::sync::atomic::AtomicBool>,
}

/// `execute` and `query_row` through the connection's statement cache, so
/// the hot paths parse their SQL once.
pub(crate) trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// The first row of `sql` (through the statement cache) mapped by `map`,
/// one of the shared mappers in [`rows`]: they return [`StoreError`]s, which
/// rusqlite's `query_row` closures cannot, so the rows are stepped here.
fn one<T, P: Params>(
    c: &Connection,
    sql: &str,
    params: P,
    map: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(params)?;
    match rows.next()? {
        Some(r) => map(r).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql` mapped by `map` (see [`one`]).
fn all<T, P: Params>(
    c: &Connection,
    sql: &str,
    params: P,
    mut map: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(map(r)?);
    }
    Ok(out)
}

impl rusqlite::ToSql for lists::Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            lists::Arg::Int(n) => n.to_sql(),
            lists::Arg::Text(s) => s.to_sql(),
        }
    }
}

/// A page of a list ([`lists`]): its rows, whether more follow, and the
/// capped count.
fn list<T>(
    c: &Connection,
    q: &lists::ListQuery,
    page: &Page,
    map: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Listing<T>> {
    let counted = c.row(
        &q.count.sql,
        rusqlite::params_from_iter(&q.count.args),
        |r| r.get(0),
    )?;
    let rows = all(
        c,
        &q.rows.sql,
        rusqlite::params_from_iter(&q.rows.args),
        map,
    )?;
    Ok(Listing::from_rows(rows, page.per_page, counted))
}

/// Runs `f` in an IMMEDIATE transaction: the write lock is taken first, so
/// what `f` reads still holds when it writes (a deferred transaction that
/// reads and then writes can also fail with `SQLITE_BUSY` when another
/// process wrote in between, which the busy timeout does not retry).
/// Commits when `f` succeeds; rolls back (on drop) when it fails.
fn in_tx<R>(c: &mut Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let r = f(&tx)?;
    tx.commit()?;
    Ok(r)
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            // Unique keys, and the trigger that makes a revocation final.
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// JSON columns are TEXT in SQLite.
fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(internal)
}

fn license_not_found(lid: &str) -> StoreError {
    StoreError::NotFound(format!("license {lid} not found"))
}

/// The status and instance limit of a license, read in the transaction
/// whose writes depend on them (only these two: the hot path of every
/// issuance need not decode the terms).
const LICENSE_GATE: &str = "SELECT status, max_instances FROM licenses WHERE lid = ?1";

fn license_gate(c: &Connection, lid: &str) -> Result<(LicenseStatus, i64)> {
    one(c, LICENSE_GATE, [lid], |r| {
        let status = LicenseStatus::parse(&r.text(0)?).ok_or_else(|| rows::bad_value("status"))?;
        Ok((status, r.int(1)?))
    })?
    .ok_or_else(|| license_not_found(lid))
}

/// Refuses another instance when the license has `max` bound already.
fn check_room(c: &Connection, lid: &str, max: i64) -> Result<()> {
    let bound: i64 = c.row(sql::COUNT_BOUND, [lid], |r| r.get(0))?;
    if bound >= max {
        return Err(StoreError::InstanceLimit {
            lid: lid.to_string(),
            max,
        });
    }
    Ok(())
}

/// Inserts a new instance (at version 1) with its sealed push credentials;
/// returns it as stored.
fn insert_instance(c: &Connection, i: &Instance, credentials: Option<&str>) -> Result<Instance> {
    let usage = i.usage.as_ref().map(json).transpose()?;
    c.exec(
        sql::INSERT_INSTANCE,
        params![
            i.id,
            i.lid,
            i.url,
            i.dialect.as_str(),
            i.push_enabled,
            i.last_jti,
            i.last_issued_at,
            i.next_renewal_at,
            usage,
            i.usage_reported_at,
            i.created_at,
            i.updated_at,
            i.token_expires_at,
            i.push_next_at,
            i.push_attempts,
            i.push_last_error,
            i.push_last_ok_at,
            i.push_at_risk,
            i.removal_pending,
            i.push_pending_jti,
            1_i64,
            credentials,
        ],
    )
    .map_err(|e| {
        Taken::Instance {
            url: &i.url,
            lid: &i.lid,
        }
        .or(e)
    })?;
    Ok(Instance {
        version: 1,
        has_credentials: credentials.is_some(),
        ..i.clone()
    })
}

/// Records one issuance in the open transaction `c`: the license check, the
/// idempotency check, the instance, the token and the audit event.
fn record_one(c: &Connection, is: &Issuance, audit: &AuditEvent) -> Result<Recorded> {
    let t = &is.token;
    let (status, max) = license_gate(c, &t.lid)?;
    if status != LicenseStatus::Active {
        return Err(StoreError::NotActive {
            lid: t.lid.clone(),
            status,
        });
    }
    if let (Some(since), Some(old)) = (is.idempotent_since, &t.renewed_from)
        && let Some(existing) = one(c, sql::FIND_RETRY, params![old, since], |r| rows::token(r))?
    {
        return Ok(Recorded::Existing(existing));
    }
    match &is.to {
        Recipient::Bind(i) => {
            check_room(c, &t.lid, max)?;
            insert_instance(c, i, None)?;
        }
        Recipient::Bound { id } => {
            let changed = if t.reason == TokenReason::Push {
                c.exec(
                    sql::RECORD_PUSH_TOKEN,
                    params![t.lid, id, t.jti, t.iat, is.next_renewal_at],
                )?
            } else {
                let usage = is.usage.as_ref().map(json).transpose()?;
                c.exec(
                    sql::RECORD_TOKEN,
                    params![
                        t.lid,
                        id,
                        t.jti,
                        t.iat,
                        is.next_renewal_at,
                        t.exp,
                        usage,
                        is.usage.as_ref().map(|_| t.iat),
                    ],
                )?
            };
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "instance {id} is not bound to license {}",
                    t.lid
                )));
            }
            if let Some(usage) = is.usage.as_ref().filter(|u| !u.is_empty()) {
                c.exec(
                    super::usage::INSERT,
                    params![t.lid, id, t.iat, json(usage)?],
                )?;
            }
        }
    }
    c.exec(
        sql::INSERT_TOKEN,
        params![
            t.jti,
            t.lid,
            t.instance_id,
            t.kid,
            t.iat,
            t.nbf,
            t.exp,
            t.reason.as_str(),
            t.renewed_from,
            t.token
        ],
    )?;
    access::insert_audit(c, audit)?;
    Ok(Recorded::New)
}

/// Records queued issuances in one transaction (one commit, one WAL sync
/// point), each in its own savepoint so that one failing (say, no room for
/// another instance) leaves the others; answers each once committed.
fn record_batch(conn: &mut Connection, batch: Vec<IssuanceJob>) {
    // IMMEDIATE: take the write lock first, so each idempotency check and
    // its insert see the same state.
    let mut tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            for j in batch {
                let _ = j.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    if let [one] = &batch[..] {
        // Alone: the transaction is its own; no savepoint needed.
        let r = record_one(&tx, &one.issuance, &one.audit);
        answers.push(r);
    } else {
        for j in &batch {
            let r = tx.savepoint().map_err(StoreError::from).and_then(|sp| {
                // Dropped without commit on error: rolled back to the savepoint.
                let r = record_one(&sp, &j.issuance, &j.audit)?;
                sp.commit()?;
                Ok(r)
            });
            answers.push(r);
        }
    }
    // A lone failed issuance is rolled back with its transaction.
    let commit = if batch.len() == 1 && answers[0].is_err() {
        Ok(())
    } else {
        tx.commit().map_err(StoreError::from)
    };
    for (j, r) in batch.into_iter().zip(answers) {
        let _ = j.reply.send(match &commit {
            Ok(()) => r,
            Err(e) => Err(e.clone()),
        });
    }
}

impl SqliteStore {
    /// Opens (creating) the database file and applies migrations when `migrate`.
    ///
    /// The database holds renewal-capable license tokens: a directory
    /// Charter creates for it is 0700 and a database file it creates is
    /// 0600 (SQLite gives the `-wal` and `-shm` files the database file's
    /// mode). Existing directories and files keep their modes.
    pub async fn open(path: &Path, migrate: bool) -> anyhow::Result<Self> {
        /// Creates the directory (0700, with missing parents) and an empty
        /// database file (0600) when they do not exist; warns when an
        /// existing database file is readable by others.
        fn create_private(path: &Path) -> anyhow::Result<()> {
            use anyhow::Context;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            if !path.exists() {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    // Created by another process in between: theirs stands.
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(e).with_context(|| format!("creating {}", path.display()));
                    }
                    _ => return Ok(()),
                }
            }
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = %format!("{mode:o}"),
                        "the database holds license tokens and others may read it: chmod 600 it and its -wal and -shm files"
                    );
                }
            }
            Ok(())
        }

        let path = path.to_path_buf();
        let reader_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<Connection> {
            create_private(&path)?;
            let mut conn = Connection::open(&path)?;
            // SQLite falls back to read-only when it cannot write the file
            // (a read-only volume, the wrong owner after a restore); the
            // issuer must write, so say so now rather than at the first
            // write. (A WAL left by an unclean stop would even let it serve
            // reads as if all were well.)
            if conn.is_readonly(rusqlite::MAIN_DB)? {
                anyhow::bail!(
                    "{} is read-only (check the volume's mount and the file's owner and mode)",
                    path.display()
                );
            }
            conn.set_prepared_statement_cache_capacity(128);
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            if migrate {
                embedded::migrations::runner().run(&mut conn)?;
            }
            Ok(conn)
        })
        .await??;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        // The thread ends, closing the connection, when the last clone of
        // the store is dropped.
        std::thread::Builder::new()
            .name("charter-sqlite".into())
            .spawn(move || {
                let mut conn = conn;
                let mut held = None;
                loop {
                    let job = match held.take() {
                        Some(job) => job,
                        None => match queue.recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                    };
                    // A panicking call fails alone (its caller sees an
                    // error); the connection keeps serving the others.
                    let n = match job {
                        Job::Call(f) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                f(&mut conn)
                            }));
                            1
                        }
                        Job::Issuance(first) => {
                            let mut batch = vec![*first];
                            while batch.len() < GROUP_COMMIT_MAX {
                                match queue.try_recv() {
                                    Ok(Job::Issuance(j)) => batch.push(*j),
                                    Ok(other) => {
                                        held = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let n = batch.len();
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                record_batch(&mut conn, batch)
                            }));
                            n
                        }
                    };
                    done.fetch_sub(n, Ordering::Relaxed);
                }
            })?;
        // After the writer has opened (and migrated) the database.
        let readers = tokio::task::spawn_blocking(move || {
            readers::Readers::start(&reader_path, readers::default_count())
        })
        .await??;
        Ok(SqliteStore {
            jobs,
            pending,
            readers,
            pruning: Default::default(),
        })
    }

    /// Runs `f` on a read-only connection (see [`readers`]): for reads
    /// that feed no write in the same call, so they never wait in line
    /// with the writes, nor make the writes wait.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        self.readers.call(f).await
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending.fetch_add(1, Ordering::Relaxed);
        let job = Job::Call(Box::new(move |c| {
            let _ = tx.send(f(c));
        }));
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(internal("the sqlite thread has stopped"));
        }
        rx.await
            .map_err(|_| internal("the sqlite call failed (panicked)"))?
    }

    /// Runs `f` in an IMMEDIATE transaction on the connection's thread (see
    /// [`in_tx`]): a change and its audit event commit together or not at all.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        self.call(move |c| in_tx(c, f)).await
    }
}

/// Whether the row a conditional update missed exists: then it changed
/// since it was read ([`StoreError::Stale`]), else it is not there.
fn stale_or_missing(
    c: &Connection,
    exists: &str,
    key: impl Params,
    what: &'static str,
    missing: impl FnOnce() -> String,
) -> StoreError {
    match c.row(exists, key, |_| Ok(())) {
        Ok(()) => StoreError::Stale(what),
        Err(rusqlite::Error::QueryReturnedNoRows) => StoreError::NotFound(missing()),
        Err(e) => e.into(),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> Result<()> {
        self.call(|c| Ok(c.row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
            .await
    }

    async fn create_product(&self, p: &Product, audit: &AuditEvent) -> Result<()> {
        let (p, audit) = (p.clone(), audit.clone());
        self.write(move |c| {
            c.exec(
                sql::INSERT_PRODUCT,
                params![p.slug, p.name, json(&p.features)?, p.created_at],
            )
            .map_err(|e| Taken::Product(&p.slug).or(e))?;
            access::insert_audit(c, &audit)
        })
        .await
    }

    async fn get_product(&self, slug: &str) -> Result<Option<Product>> {
        let slug = slug.to_string();
        self.read(move |c| one(c, sql::GET_PRODUCT, [slug], |r| rows::product(r)))
            .await
    }

    async fn list_products(&self) -> Result<Vec<Product>> {
        self.read(|c| all(c, sql::LIST_PRODUCTS, [], |r| rows::product(r)))
            .await
    }

    async fn update_product(
        &self,
        p: &Product,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Product> {
        let (p, audit) = (p.clone(), audit.clone());
        self.write(move |c| {
            let updated = one(
                c,
                sql::UPDATE_PRODUCT,
                params![p.slug, p.name, json(&p.features)?, p.updated_at, version],
                |r| rows::product(r),
            )?;
            let Some(updated) = updated else {
                return Err(stale_or_missing(
                    c,
                    "SELECT 1 FROM products WHERE slug = ?1",
                    [&p.slug],
                    "product",
                    || format!("product {} not found", p.slug),
                ));
            };
            access::insert_audit(c, &audit)?;
            Ok(updated)
        })
        .await
    }

    async fn create_account(&self, a: &Account, audit: &AuditEvent) -> Result<()> {
        let (a, audit) = (a.clone(), audit.clone());
        self.write(move |c| {
            c.exec(
                sql::INSERT_ACCOUNT,
                params![a.id, a.company, a.account, a.slug, a.created_at],
            )
            .map_err(|e| Taken::AccountSlug(&a.slug).or(e))?;
            access::insert_audit(c, &audit)
        })
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        let id = id.to_string();
        self.read(move |c| one(c, sql::GET_ACCOUNT, [id], |r| rows::account(r)))
            .await
    }

    async fn list_accounts(&self, page: &Page) -> Result<Listing<Account>> {
        let page = page.clone();
        self.read(move |c| {
            let q = lists::accounts(&page, sql::ACCOUNT_COLS);
            list(c, &q, &page, |r| rows::account(r))
        })
        .await
    }

    async fn update_account(
        &self,
        a: &Account,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Account> {
        let (a, audit) = (a.clone(), audit.clone());
        self.write(move |c| {
            let updated = one(
                c,
                sql::UPDATE_ACCOUNT,
                params![a.id, a.company, a.account, a.slug, a.updated_at, version],
                |r| rows::account(r),
            )
            .map_err(|e| Taken::AccountSlug(&a.slug).or(e))?;
            let Some(updated) = updated else {
                return Err(stale_or_missing(
                    c,
                    "SELECT 1 FROM accounts WHERE id = ?1",
                    [&a.id],
                    "account",
                    || format!("account {} not found", a.id),
                ));
            };
            access::insert_audit(c, &audit)?;
            Ok(updated)
        })
        .await
    }

    async fn create_license(&self, l: &License, audit: &AuditEvent) -> Result<()> {
        let (l, audit) = (l.clone(), audit.clone());
        self.write(move |c| {
            c.exec(
                sql::INSERT_LICENSE,
                params![
                    l.lid,
                    l.account_id,
                    l.status.as_str(),
                    l.starts_at,
                    l.expires_at,
                    l.max_instances,
                    json(&l.terms)?,
                    l.created_at
                ],
            )?;
            access::insert_audit(c, &audit)
        })
        .await
    }

    async fn get_license(&self, lid: &str) -> Result<Option<License>> {
        let lid = lid.to_string();
        self.read(move |c| one(c, sql::GET_LICENSE, [lid], |r| rows::license(r)))
            .await
    }

    async fn list_licenses(&self, f: &LicenseFilter, page: &Page) -> Result<Listing<License>> {
        let q = lists::licenses(f, page, sql::LICENSE_COLS, lists::Dialect::Sqlite);
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| rows::license(r)))
            .await
    }

    async fn update_license_terms(
        &self,
        l: &License,
        from: &License,
        if_match: Option<i64>,
        audit: &AuditEvent,
    ) -> Result<License> {
        let (l, from, audit) = (l.clone(), from.clone(), audit.clone());
        self.write(move |c| {
            let updated = one(
                c,
                sql::UPDATE_LICENSE_TERMS,
                params![
                    l.lid,
                    l.starts_at,
                    l.expires_at,
                    l.max_instances,
                    json(&l.terms)?,
                    l.updated_at,
                    from.starts_at,
                    from.expires_at,
                    from.max_instances,
                    json(&from.terms)?,
                    if_match
                ],
                |r| rows::license(r),
            )?;
            let Some(updated) = updated else {
                let (status, _) = license_gate(c, &l.lid)?;
                return Err(match status {
                    LicenseStatus::Revoked => StoreError::NotActive {
                        lid: l.lid.clone(),
                        status,
                    },
                    _ => StoreError::Stale("license"),
                });
            };
            access::insert_audit(c, &audit)?;
            Ok(updated)
        })
        .await
    }

    async fn transition_license(
        &self,
        lid: &str,
        to: LicenseStatus,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Transition> {
        let (lid, audit) = (lid.to_string(), audit.clone());
        self.write(move |c| {
            let license = one(c, sql::GET_LICENSE, [&lid], |r| rows::license(r))?
                .ok_or_else(|| license_not_found(&lid))?;
            let from = license.status;
            if from == to {
                return Ok(Transition::Unchanged(license));
            }
            if from == LicenseStatus::Revoked {
                return Err(StoreError::NotActive { lid, status: from });
            }
            // Read in this (IMMEDIATE) transaction, so the row is there.
            let license = one(
                c,
                sql::SET_LICENSE_STATUS,
                params![lid, to.as_str(), now],
                |r| rows::license(r),
            )?
            .ok_or(StoreError::Stale("license"))?;
            let removals = if to == LicenseStatus::Revoked {
                Some(c.exec(sql::QUEUE_REMOVALS, params![lid, now])? as u64)
            } else {
                None
            };
            access::insert_audit(c, &super::with_transition(&audit, from, to, removals))?;
            Ok(Transition::Changed {
                license,
                removals: removals.unwrap_or(0),
            })
        })
        .await
    }

    async fn bind_instance(
        &self,
        i: &Instance,
        credentials: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Instance> {
        let (i, audit) = (i.clone(), audit.clone());
        let credentials = credentials.map(str::to_string);
        self.write(move |c| {
            let (status, max) = license_gate(c, &i.lid)?;
            if status == LicenseStatus::Revoked {
                return Err(StoreError::NotActive {
                    lid: i.lid.clone(),
                    status,
                });
            }
            check_room(c, &i.lid, max)?;
            let bound = insert_instance(c, &i, credentials.as_deref())?;
            access::insert_audit(c, &audit)?;
            Ok(bound)
        })
        .await
    }

    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>> {
        let (lid, id) = (lid.to_string(), id.to_string());
        self.read(move |c| one(c, sql::GET_INSTANCE, [lid, id], |r| rows::instance(r)))
            .await
    }

    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>> {
        let (lid, url) = (lid.to_string(), url.to_string());
        self.read(move |c| one(c, sql::FIND_INSTANCE, [lid, url], |r| rows::instance(r)))
            .await
    }

    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>> {
        let (lid, url) = (lid.to_string(), url.to_string());
        self.read(move |c| {
            let Some(license) = one(c, sql::GET_LICENSE, [&lid], |r| rows::license(r))? else {
                return Ok(None);
            };
            let instance = one(c, sql::FIND_INSTANCE, [&lid, &url], |r| rows::instance(r))?;
            let account = one(c, sql::GET_ACCOUNT, [&license.account_id], |r| {
                rows::account(r)
            })?;
            Ok(Some(IssuanceContext {
                license,
                instance,
                account,
            }))
        })
        .await
    }

    async fn list_instances(&self, lid: &str, page: &Page) -> Result<Listing<Instance>> {
        let q = lists::instances(lid, page, sql::INSTANCE_COLS);
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| rows::instance(r)))
            .await
    }

    async fn update_push_settings(
        &self,
        lid: &str,
        id: &str,
        s: &PushSettings,
        version: i64,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Instance> {
        let (lid, id, s, audit) = (lid.to_string(), id.to_string(), s.clone(), audit.clone());
        self.write(move |c| {
            let updated = one(
                c,
                sql::UPDATE_PUSH_SETTINGS,
                params![
                    lid,
                    id,
                    s.dialect.as_str(),
                    s.push_enabled,
                    s.push_next_at,
                    s.push_attempts,
                    s.credentials.is_some(),
                    s.credentials.clone().flatten(),
                    now,
                    version
                ],
                |r| rows::instance(r),
            )?;
            let Some(updated) = updated else {
                return Err(stale_or_missing(
                    c,
                    sql::INSTANCE_EXISTS,
                    [&lid, &id],
                    "instance",
                    || format!("instance {id} of license {lid} not found"),
                ));
            };
            access::insert_audit(c, &audit)?;
            Ok(updated)
        })
        .await
    }

    async fn unbind_instance(&self, lid: &str, id: &str, audit: &AuditEvent) -> Result<bool> {
        let (lid, id, audit) = (lid.to_string(), id.to_string(), audit.clone());
        self.write(move |c| {
            if c.exec(sql::DELETE_INSTANCE, [lid, id])? == 0 {
                return Ok(false);
            }
            access::insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn record_issuance(&self, is: &Issuance, audit: &AuditEvent) -> Result<Recorded> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Issuance(Box::new(IssuanceJob {
            issuance: is.clone(),
            audit: audit.clone(),
            reply,
        }));
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(internal("the sqlite thread has stopped"));
        }
        answer
            .await
            .map_err(|_| internal("the sqlite call failed (panicked)"))?
    }

    async fn list_tokens(&self, lid: &str, page: &Page) -> Result<Listing<TokenRecord>> {
        let q = lists::tokens(lid, page, sql::TOKEN_COLS);
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| rows::token(r)))
            .await
    }

    async fn revoked_licenses(&self) -> Result<Vec<String>> {
        self.read(|c| all(c, sql::REVOKED_LICENSES, [], |r| r.text(0)))
            .await
    }

    async fn license_counts(&self, now: i64) -> Result<super::LicenseCounts> {
        let [d7, d30, d90] = super::LicenseCounts::windows(now);
        self.read(move |c| {
            all(c, sql::LICENSE_COUNTS, params![now, d7, d30, d90], |r| {
                Ok((r.text(0)?, r.text(1)?, r.int(2)?))
            })
        })
        .await
        .map(super::LicenseCounts::from_rows)
    }

    fn pool_status(&self) -> PoolStatus {
        // The writer and the readers, each a connection on its own thread;
        // calls queue in front of them.
        let writes = self.pending.load(Ordering::Relaxed) as i64;
        let reads = self.readers.pending.load(Ordering::Relaxed) as i64;
        let readers = self.readers.count as i64;
        PoolStatus {
            size: 1 + readers,
            available: i64::from(writes == 0) + (readers - reads).max(0),
            waiting: (writes - 1).max(0) + (reads - readers).max(0),
        }
    }

    async fn prune(&self, plan: &super::PrunePlan) -> Result<Option<super::Pruned>> {
        /// Clears the flag however the run ends.
        struct Running<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        if self.pruning.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        let _running = Running(&self.pruning);
        let mut pruned = super::Pruned::default();
        // The writer is the renewals' too: small statements, and after
        // each at least as long a rest, so a prune holds it at most half
        // the time and a renewal waits at most one statement. (1000 rows a
        // statement and 20 ms rests cut renewals to 0.3x during a prune of
        // 2M rows, p99 200 ms.)
        let batch = plan.batch.min(SQLITE_PRUNE_BATCH);
        for (sql, before, count) in [
            (sql::PRUNE_TOKENS, plan.tokens_before, &mut pruned.tokens),
            (sql::PRUNE_AUDIT, plan.audit_before, &mut pruned.audit),
        ] {
            let Some(before) = before else { continue };
            loop {
                let started = std::time::Instant::now();
                let n = self
                    .call(move |c| Ok(c.exec(sql, params![before, batch])? as u64))
                    .await?;
                *count += n;
                if n < batch as u64 {
                    break;
                }
                tokio::time::sleep(plan.pause.max(started.elapsed())).await;
            }
        }
        if let Some(before) = plan.usage_before {
            pruned.usage = self.roll_usage(before, batch, plan.pause).await?;
        }
        Ok(Some(pruned))
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.read(move |c| one(c, sql::GET_SETTING, [key], |r| r.text(0)))
            .await
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |c| {
            c.exec(sql::INIT_SETTING, [&key, &value])?;
            Ok(c.row(sql::GET_SETTING, [key], |r| r.get(0))?)
        })
        .await
    }
}
