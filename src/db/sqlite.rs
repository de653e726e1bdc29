//! The embedded SQLite store: one file, one writer. Calls run in order on a
//! thread of their own that owns the connection (no lock, no hop through the
//! blocking pool per call), with cached prepared statements; WAL journal with
//! `synchronous=NORMAL` (durable across process crashes; a power cut may lose
//! the last transactions, not corrupt).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Issuance, IssuanceContext, PoolStatus, Recorded, Result, Store, StoreError};
use crate::domain::AuditEvent;
use crate::domain::{
    Account, Dialect, Instance, License, LicenseFilter, LicenseStatus, Page, Product, TokenReason,
    TokenRecord,
};

mod access;
mod push;

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
    audit: Option<AuditEvent>,
    reply: tokio::sync::oneshot::Sender<Result<Recorded>>,
}

/// Most issuances one commit takes.
const GROUP_COMMIT_MAX: usize = 64;

#[derive(Clone)]
pub struct SqliteStore {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Calls sent and not yet finished.
    pending: Arc<AtomicUsize>,
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

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
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

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(internal)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn bad_value(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected {what} in the database").into(),
    )
}

const PRODUCT_COLS: &str = "slug, name, features, created_at, updated_at";
fn product_row(r: &Row) -> rusqlite::Result<Product> {
    Ok(Product {
        slug: r.get(0)?,
        name: r.get(1)?,
        features: from_json(&r.get::<_, String>(2)?)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

const ACCOUNT_COLS: &str = "id, company, account, slug, created_at, updated_at";
fn account_row(r: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        company: r.get(1)?,
        account: r.get(2)?,
        slug: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

const LICENSE_COLS: &str =
    "lid, account_id, status, starts_at, expires_at, max_instances, terms, created_at, updated_at";
fn license_row(r: &Row) -> rusqlite::Result<License> {
    let status =
        LicenseStatus::parse(&r.get::<_, String>(2)?).ok_or_else(|| bad_value("status"))?;
    Ok(License {
        lid: r.get(0)?,
        account_id: r.get(1)?,
        status,
        state: status.as_str().to_string(),
        starts_at: r.get(3)?,
        expires_at: r.get(4)?,
        max_instances: r.get(5)?,
        terms: from_json(&r.get::<_, String>(6)?)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// The columns written from an [`Instance`]; reads add whether credentials exist.
const INSTANCE_COLS: &str = "id, lid, url, dialect, push_enabled, last_jti, last_issued_at, \
    next_renewal_at, usage, usage_reported_at, created_at, updated_at, token_expires_at, \
    push_next_at, push_attempts, push_last_error, push_last_ok_at, push_at_risk, \
    removal_pending, push_pending_jti";
const INSTANCE_SELECT: &str = "id, lid, url, dialect, push_enabled, last_jti, last_issued_at, \
    next_renewal_at, usage, usage_reported_at, created_at, updated_at, token_expires_at, \
    push_next_at, push_attempts, push_last_error, push_last_ok_at, push_at_risk, \
    removal_pending, push_pending_jti, credentials IS NOT NULL";
fn instance_row(r: &Row) -> rusqlite::Result<Instance> {
    let usage: Option<String> = r.get(8)?;
    Ok(Instance {
        id: r.get(0)?,
        lid: r.get(1)?,
        url: r.get(2)?,
        dialect: Dialect::parse(&r.get::<_, String>(3)?).ok_or_else(|| bad_value("dialect"))?,
        push_enabled: r.get(4)?,
        last_jti: r.get(5)?,
        last_issued_at: r.get(6)?,
        next_renewal_at: r.get(7)?,
        usage: usage.as_deref().map(from_json).transpose()?,
        usage_reported_at: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        token_expires_at: r.get(12)?,
        push_next_at: r.get(13)?,
        push_attempts: r.get(14)?,
        push_last_error: r.get(15)?,
        push_last_ok_at: r.get(16)?,
        push_at_risk: r.get(17)?,
        removal_pending: r.get(18)?,
        push_pending_jti: r.get(19)?,
        has_credentials: r.get(20)?,
    })
}

const TOKEN_COLS: &str = "jti, lid, instance_id, kid, iat, nbf, exp, reason, renewed_from, token";
fn token_row(r: &Row) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.get(0)?,
        lid: r.get(1)?,
        instance_id: r.get(2)?,
        kid: r.get(3)?,
        iat: r.get(4)?,
        nbf: r.get(5)?,
        exp: r.get(6)?,
        reason: TokenReason::parse(&r.get::<_, String>(7)?).ok_or_else(|| bad_value("reason"))?,
        renewed_from: r.get(8)?,
        token: r.get(9)?,
    })
}

fn insert_instance(c: &Connection, i: &Instance) -> Result<()> {
    let usage = i.usage.as_ref().map(json).transpose()?;
    c.exec(
        &format!("INSERT INTO instances ({INSTANCE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
        params![
            i.id, i.lid, i.url, i.dialect.as_str(), i.push_enabled, i.last_jti, i.last_issued_at,
            i.next_renewal_at, usage, i.usage_reported_at, i.created_at, i.updated_at,
            i.token_expires_at, i.push_next_at, i.push_attempts, i.push_last_error, i.push_last_ok_at,
            i.push_at_risk, i.removal_pending, i.push_pending_jti
        ],
    )
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("instance {} is already bound to license {}", i.url, i.lid))
        }
        other => other,
    })?;
    Ok(())
}

fn update_instance(c: &Connection, i: &Instance) -> Result<()> {
    let usage = i.usage.as_ref().map(json).transpose()?;
    c.exec(
        "UPDATE instances SET dialect = ?3, push_enabled = ?4, last_jti = ?5, last_issued_at = ?6, \
         next_renewal_at = ?7, usage = ?8, usage_reported_at = ?9, updated_at = ?10, \
         token_expires_at = ?11, push_next_at = ?12, push_attempts = ?13, push_last_error = ?14, \
         push_last_ok_at = ?15, push_at_risk = ?16, removal_pending = ?17, push_pending_jti = ?18 \
         WHERE lid = ?1 AND id = ?2",
        params![
            i.lid,
            i.id,
            i.dialect.as_str(),
            i.push_enabled,
            i.last_jti,
            i.last_issued_at,
            i.next_renewal_at,
            usage,
            i.usage_reported_at,
            i.updated_at,
            i.token_expires_at,
            i.push_next_at,
            i.push_attempts,
            i.push_last_error,
            i.push_last_ok_at,
            i.push_at_risk,
            i.removal_pending,
            i.push_pending_jti
        ],
    )?;
    Ok(())
}

fn check_room(c: &Connection, lid: &str, max: i64) -> Result<()> {
    let bound: i64 = c.row(
        "SELECT count(*) FROM instances WHERE lid = ?1",
        [lid],
        |r| r.get(0),
    )?;
    if bound >= max {
        return Err(StoreError::InstanceLimit {
            lid: lid.to_string(),
            max,
        });
    }
    Ok(())
}

/// Records one issuance in the open transaction `c`: the idempotency check,
/// the instance, the token and the audit event.
fn record_one(c: &Connection, is: &Issuance, audit: Option<&AuditEvent>) -> Result<Recorded> {
    if let (Some(since), Some(old)) = (is.idempotent_since, &is.token.renewed_from) {
        let existing = c
            .row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE renewed_from = ?1 AND iat >= ?2 ORDER BY iat DESC LIMIT 1"),
                params![old, since],
                token_row,
            )
            .optional()?;
        if let Some(t) = existing {
            return Ok(Recorded::Existing(t));
        }
    }
    if is.bind {
        check_room(c, &is.instance.lid, is.max_instances)?;
        insert_instance(c, &is.instance)?;
    } else {
        update_instance(c, &is.instance)?;
    }
    let t = &is.token;
    c.exec(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
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
    if let Some(a) = audit {
        access::insert_audit(c, a)?;
    }
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
        let r = record_one(&tx, &one.issuance, one.audit.as_ref());
        answers.push(r);
    } else {
        for j in &batch {
            let r = tx.savepoint().map_err(StoreError::from).and_then(|sp| {
                // Dropped without commit on error: rolled back to the savepoint.
                let r = record_one(&sp, &j.issuance, j.audit.as_ref())?;
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
    pub async fn open(path: &Path, migrate: bool) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<Connection> {
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
        Ok(SqliteStore { jobs, pending })
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

    async fn insert_product(&self, p: &Product) -> Result<()> {
        let p = p.clone();
        self.call(move |c| {
            c.exec(
                &format!("INSERT INTO products ({PRODUCT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    p.slug,
                    p.name,
                    json(&p.features)?,
                    p.created_at,
                    p.updated_at
                ],
            )
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("product {} already exists", p.slug))
                }
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_product(&self, slug: &str) -> Result<Option<Product>> {
        let slug = slug.to_string();
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {PRODUCT_COLS} FROM products WHERE slug = ?1"),
                [slug],
                product_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_products(&self) -> Result<Vec<Product>> {
        self.call(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PRODUCT_COLS} FROM products ORDER BY slug"
            ))?;
            let rows = st
                .query_map([], product_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn update_product(&self, p: &Product) -> Result<()> {
        let p = p.clone();
        self.call(move |c| {
            c.exec(
                "UPDATE products SET name = ?2, features = ?3, updated_at = ?4 WHERE slug = ?1",
                params![p.slug, p.name, json(&p.features)?, p.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_account(&self, a: &Account) -> Result<()> {
        let a = a.clone();
        self.call(move |c| {
            c.exec(
                &format!("INSERT INTO accounts ({ACCOUNT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    a.id,
                    a.company,
                    a.account,
                    a.slug,
                    a.created_at,
                    a.updated_at
                ],
            )
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("an account with slug {} already exists", a.slug))
                }
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"),
                [id],
                account_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_accounts(&self, page: Page) -> Result<(Vec<Account>, i64)> {
        self.call(move |c| {
            let total = c.row("SELECT count(*) FROM accounts", [], |r| r.get(0))?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created_at, id LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = st
                .query_map([page.per_page, page.offset()], account_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn update_account(&self, a: &Account) -> Result<()> {
        let a = a.clone();
        self.call(move |c| {
            c.exec(
                "UPDATE accounts SET company = ?2, account = ?3, slug = ?4, updated_at = ?5 WHERE id = ?1",
                params![a.id, a.company, a.account, a.slug, a.updated_at],
            )
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("an account with slug {} already exists", a.slug)),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn insert_license(&self, l: &License) -> Result<()> {
        let l = l.clone();
        self.call(move |c| {
            c.exec(
                &format!("INSERT INTO licenses ({LICENSE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    l.lid, l.account_id, l.status.as_str(), l.starts_at, l.expires_at,
                    l.max_instances, json(&l.terms)?, l.created_at, l.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_license(&self, lid: &str) -> Result<Option<License>> {
        let lid = lid.to_string();
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {LICENSE_COLS} FROM licenses WHERE lid = ?1"),
                [lid],
                license_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_licenses(&self, f: &LicenseFilter, page: Page) -> Result<(Vec<License>, i64)> {
        let f = f.clone();
        self.call(move |c| {
            // Every filter is bound, NULL meaning "any", so the SQL is fixed.
            let (status, expired): (Option<&str>, Option<bool>) = match f.state.as_deref() {
                Some("expired") => (Some("active"), Some(true)),
                Some("active") => (Some("active"), Some(false)),
                Some(s) => (Some(s), None),
                None => (None, None),
            };
            let product = f.product.clone();
            let filter = "(?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR status = ?2) \
                AND (?3 IS NULL OR (?3 = (expires_at <= ?4))) \
                AND (?5 IS NULL OR EXISTS (SELECT 1 FROM json_each(terms, '$.products') WHERE value = ?5))";
            let args = params![f.account_id, status, expired, f.now, product];
            let total = c.row(&format!("SELECT count(*) FROM licenses WHERE {filter}"), args, |r| r.get(0))?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {LICENSE_COLS} FROM licenses WHERE {filter} ORDER BY created_at, lid LIMIT ?6 OFFSET ?7"
            ))?;
            let rows = st
                .query_map(
                    params![f.account_id, status, expired, f.now, product, page.per_page, page.offset()],
                    license_row,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn update_license(&self, l: &License) -> Result<()> {
        let l = l.clone();
        self.call(move |c| {
            c.exec(
                "UPDATE licenses SET status = ?2, starts_at = ?3, expires_at = ?4, max_instances = ?5, \
                 terms = ?6, updated_at = ?7 WHERE lid = ?1",
                params![l.lid, l.status.as_str(), l.starts_at, l.expires_at, l.max_instances, json(&l.terms)?, l.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn bind_instance(&self, i: &Instance, max_instances: i64) -> Result<()> {
        let i = i.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            check_room(&tx, &i.lid, max_instances)?;
            insert_instance(&tx, &i)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>> {
        let (lid, id) = (lid.to_string(), id.to_string());
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = ?1 AND id = ?2"),
                [lid, id],
                instance_row,
            )
            .optional()?)
        })
        .await
    }

    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>> {
        let (lid, url) = (lid.to_string(), url.to_string());
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = ?1 AND url = ?2"),
                [lid, url],
                instance_row,
            )
            .optional()?)
        })
        .await
    }

    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>> {
        let (lid, url) = (lid.to_string(), url.to_string());
        self.call(move |c| {
            let Some(license) = c
                .row(
                    &format!("SELECT {LICENSE_COLS} FROM licenses WHERE lid = ?1"),
                    [&lid],
                    license_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let instance = c
                .row(
                    &format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = ?1 AND url = ?2"),
                    [&lid, &url],
                    instance_row,
                )
                .optional()?;
            let account = c
                .row(
                    &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"),
                    [&license.account_id],
                    account_row,
                )
                .optional()?;
            Ok(Some(IssuanceContext {
                license,
                instance,
                account,
            }))
        })
        .await
    }

    async fn list_instances(&self, lid: &str) -> Result<Vec<Instance>> {
        let lid = lid.to_string();
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {INSTANCE_SELECT} FROM instances WHERE lid = ?1 ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([lid], instance_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn update_instance(&self, i: &Instance) -> Result<()> {
        let i = i.clone();
        self.call(move |c| update_instance(c, &i)).await
    }

    async fn delete_instance(&self, lid: &str, id: &str) -> Result<bool> {
        let (lid, id) = (lid.to_string(), id.to_string());
        self.call(move |c| {
            Ok(c.exec(
                "DELETE FROM instances WHERE lid = ?1 AND id = ?2",
                [lid, id],
            )? > 0)
        })
        .await
    }

    async fn record_issuance_audited(
        &self,
        is: &Issuance,
        audit: Option<&AuditEvent>,
    ) -> Result<Recorded> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Issuance(Box::new(IssuanceJob {
            issuance: is.clone(),
            audit: audit.cloned(),
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

    async fn list_tokens(&self, lid: &str, page: Page) -> Result<(Vec<TokenRecord>, i64)> {
        let lid = lid.to_string();
        self.call(move |c| {
            let total = c.row("SELECT count(*) FROM tokens WHERE lid = ?1", [&lid], |r| r.get(0))?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM tokens WHERE lid = ?1 ORDER BY iat DESC, jti DESC LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = st
                .query_map(params![lid, page.per_page, page.offset()], token_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn revoked_licenses(&self) -> Result<Vec<String>> {
        self.call(|c| {
            let mut st =
                c.prepare_cached("SELECT lid FROM licenses WHERE status = 'revoked' ORDER BY lid")?;
            let rows = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn license_expiries(&self) -> Result<Vec<(String, i64)>> {
        self.call(|c| {
            let mut st =
                c.prepare_cached("SELECT lid, expires_at FROM licenses WHERE status = 'active'")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        // One connection on its own thread; calls queue in front of it.
        let pending = self.pending.load(Ordering::Relaxed) as i64;
        PoolStatus {
            size: 1,
            available: i64::from(pending == 0),
            waiting: (pending - 1).max(0),
        }
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.call(move |c| {
            Ok(
                c.row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |c| {
            c.exec(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [&key, &value],
            )?;
            Ok(
                c.row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
}
