//! The PostgreSQL store (`tokio-postgres` + `deadpool-postgres`), for
//! production and several replicas on one database. The SQL both stores
//! run comes from [`super::sql`] (converted once per statement by [`pg!`]),
//! rows are read by [`super::rows`]; what is PostgreSQL's own (row locks,
//! pipelining, the push claim's plan) is here.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};

use super::rows::{self, Taken};
use super::{
    Issuance, IssuanceContext, PoolStatus, PushSettings, Recipient, Recorded, Result, Store,
    StoreError, Transition,
};
use super::{lists, sql};
use crate::domain::{
    Account, AuditEvent, Instance, License, LicenseFilter, LicenseStatus, Listing, Page, Product,
    TokenReason, TokenRecord,
};

/// The text of a statement with PostgreSQL's placeholders ([`sql::pg`]),
/// built once, on first use: a `&'static str` for `prepare_cached`.
macro_rules! pg {
    ($sql:expr) => {{
        static SQL: ::std::sync::LazyLock<String> =
            ::std::sync::LazyLock::new(|| $crate::db::sql::pg($sql));
        SQL.as_str()
    }};
}

mod access;
mod events;
mod keys;
mod push;
mod sessions;
mod tls;
mod usage;

mod embedded {
    refinery::embed_migrations!("sql/postgres");
}

/// Serialises migrations between replicas starting together.
const MIGRATION_LOCK: i64 = 0x0063_6861_7274_6572; // "charter"

/// A parameter of a statement.
type Param<'a> = &'a (dyn ToSql + Sync);

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::Conflict(e.to_string()),
            // Raised by the schema's own rules (a revoked license is final).
            Some(c) if *c == SqlState::INTEGRITY_CONSTRAINT_VIOLATION => StoreError::Conflict(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            ),
            Some(c)
                if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                StoreError::Unavailable(e.to_string())
            }
            Some(_) => StoreError::Internal(e.to_string()),
            // No SQL state: the connection broke or could not be made.
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

// Pipelining. The statements of a group are prepared (cached) first, then
// run with `tokio::try_join!(biased; ...)`: each is sent when first polled,
// so in the order written, all in one round trip, and the server runs them
// in that order, each (READ COMMITTED) with a snapshot taken after the one
// before finished: a check after a lock sees what the lock waited for.
// Responses come back in that order too and `biased` polls in it, so the
// error returned is the first statement's that failed, not the "current
// transaction is aborted" of the ones after it. Nothing is committed after
// an error. A change and its audit event go together this way; when the
// change finds nothing to change, the transaction is dropped (rolled back)
// with the event.

/// The license row of an issuance or a bind, locked: `FOR UPDATE` when
/// binding (serialising the room checks), `FOR SHARE` otherwise (a
/// revocation waits for the issuances in flight, and one after it sees it).
const LOCK_LICENSE_UPDATE: &str =
    "SELECT status, max_instances FROM licenses WHERE lid = $1 FOR UPDATE";
const LOCK_LICENSE_SHARE: &str =
    "SELECT status, max_instances FROM licenses WHERE lid = $1 FOR SHARE";
/// Serialises renewals of one instance, so a retry sees the first.
const LOCK_INSTANCE: &str = "SELECT 1 FROM instances WHERE id = $1 AND lid = $2 FOR UPDATE";

fn license_not_found(lid: &str) -> StoreError {
    StoreError::NotFound(format!("license {lid} not found"))
}

fn parse_status(s: &str) -> Result<LicenseStatus> {
    LicenseStatus::parse(s).ok_or_else(|| rows::bad_value("status"))
}

/// Inserts a bound instance (version 1) with its sealed push credentials.
async fn insert_instance(
    c: &impl GenericClient,
    i: &Instance,
    credentials: Option<&str>,
) -> Result<()> {
    let st = c.prepare_cached(pg!(sql::INSERT_INSTANCE)).await?;
    c.execute(
        &st,
        &[
            &i.id,
            &i.lid,
            &i.url,
            &i.dialect.as_str(),
            &i.push_enabled,
            &i.last_jti,
            &i.last_issued_at,
            &i.next_renewal_at,
            &i.usage.as_ref().map(Json),
            &i.usage_reported_at,
            &i.created_at,
            &i.updated_at,
            &i.token_expires_at,
            &i.push_next_at,
            &i.push_attempts,
            &i.push_last_error,
            &i.push_last_ok_at,
            &i.push_at_risk,
            &i.removal_pending,
            &i.push_pending_jti,
            &1i64,
            &credentials,
        ],
    )
    .await
    .map_err(|e| {
        Taken::Instance {
            url: &i.url,
            lid: &i.lid,
        }
        .or(e)
    })?;
    Ok(())
}

/// Whether the statement (a `SELECT 1 ...`) finds a row.
async fn exists(c: &impl GenericClient, sql: &str, args: &[Param<'_>]) -> Result<bool> {
    Ok(c.query_opt(&c.prepare_cached(sql).await?, args)
        .await?
        .is_some())
}

impl PgStore {
    /// A pool on `url`; fails fast if the database cannot be reached.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (url, tls) = tls::split_tls(url)?;
        let pg: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            pg,
            tls::connector(&tls)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()?;
        let store = PgStore { pool };
        store.health().await?;
        Ok(store)
    }

    /// Applies the embedded migrations, one replica at a time.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = embedded::migrations::runner()
            .run_async(&mut **client)
            .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result?;
        Ok(())
    }

    async fn one<T>(
        &self,
        sql: &str,
        args: &[Param<'_>],
        map: fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let c = self.pool.get().await?;
        c.query_opt(&c.prepare_cached(sql).await?, args)
            .await?
            .as_ref()
            .map(map)
            .transpose()
    }

    async fn many<T>(
        &self,
        sql: &str,
        args: &[Param<'_>],
        map: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let c = self.pool.get().await?;
        c.query(&c.prepare_cached(sql).await?, args)
            .await?
            .iter()
            .map(map)
            .collect()
    }

    /// A page of a list ([`lists`]): the count and the rows pipelined on
    /// one connection.
    async fn list<T>(
        &self,
        q: &lists::ListQuery,
        page: &Page,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Listing<T>> {
        fn args(a: &[lists::Arg]) -> Vec<Param<'_>> {
            a.iter()
                .map(|a| match a {
                    lists::Arg::Int(n) => n as Param<'_>,
                    lists::Arg::Text(s) => s as Param<'_>,
                })
                .collect()
        }
        let c = self.pool.get().await?;
        let (count_sql, rows_sql) = (sql::pg(&q.count.sql), sql::pg(&q.rows.sql));
        let (count_st, rows_st) =
            tokio::try_join!(c.prepare_cached(&count_sql), c.prepare_cached(&rows_sql))?;
        let (count_args, rows_args) = (args(&q.count.args), args(&q.rows.args));
        let (counted, found) = tokio::try_join!(
            c.query_one(&count_st, &count_args),
            c.query(&rows_st, &rows_args)
        )?;
        let items = found.iter().map(map).collect::<Result<Vec<_>>>()?;
        Ok(Listing::from_rows(
            items,
            page.per_page,
            counted.try_get(0)?,
        ))
    }
}

/// The batches of a prune, each a statement of its own (autocommit), on
/// the connection that holds the prune lock.
async fn prune_batches(c: &impl GenericClient, plan: &super::PrunePlan) -> Result<super::Pruned> {
    let mut pruned = super::Pruned::default();
    for (sql, before, count) in [
        (
            pg!(sql::PRUNE_TOKENS),
            plan.tokens_before,
            &mut pruned.tokens,
        ),
        (pg!(sql::PRUNE_AUDIT), plan.audit_before, &mut pruned.audit),
    ] {
        let Some(before) = before else { continue };
        let st = c.prepare_cached(sql).await?;
        loop {
            let n = c.execute(&st, &[&before, &plan.batch]).await?;
            *count += n;
            if n < plan.batch as u64 {
                break;
            }
            tokio::time::sleep(plan.pause).await;
        }
    }
    Ok(pruned)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> Result<()> {
        let c = self.pool.get().await?;
        c.query_one(&c.prepare_cached("SELECT 1").await?, &[])
            .await?;
        Ok(())
    }

    async fn create_product(&self, p: &Product, audit: &AuditEvent) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::INSERT_PRODUCT)).await?;
        tokio::try_join!(
            biased;
            async {
                tx.execute(
                    &st,
                    &[&p.slug, &p.name, &Json(&p.features), &p.created_at],
                )
                .await
                .map_err(|e| Taken::Product(&p.slug).or(e))
            },
            access::insert_audit(&tx, audit),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_product(&self, slug: &str) -> Result<Option<Product>> {
        self.one(pg!(sql::GET_PRODUCT), &[&slug], rows::product)
            .await
    }

    async fn list_products(&self) -> Result<Vec<Product>> {
        self.many(pg!(sql::LIST_PRODUCTS), &[], rows::product).await
    }

    async fn update_product(
        &self,
        p: &Product,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Product> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::UPDATE_PRODUCT)).await?;
        let (row, ()) = tokio::try_join!(
            biased;
            async {
                tx.query_opt(
                    &st,
                    &[&p.slug, &p.name, &Json(&p.features), &p.updated_at, &version],
                )
                .await
                .map_err(StoreError::from)
            },
            access::insert_audit(&tx, audit),
        )?;
        let Some(row) = row else {
            let found = exists(&tx, "SELECT 1 FROM products WHERE slug = $1", &[&p.slug]).await?;
            return Err(if found {
                StoreError::Stale("product")
            } else {
                StoreError::NotFound(format!("product {} not found", p.slug))
            });
        };
        let product = rows::product(&row)?;
        tx.commit().await?;
        Ok(product)
    }

    async fn create_account(&self, a: &Account, audit: &AuditEvent) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::INSERT_ACCOUNT)).await?;
        tokio::try_join!(
            biased;
            async {
                tx.execute(
                    &st,
                    &[&a.id, &a.company, &a.account, &a.slug, &a.created_at],
                )
                .await
                .map_err(|e| Taken::AccountSlug(&a.slug).or(e))
            },
            access::insert_audit(&tx, audit),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        self.one(pg!(sql::GET_ACCOUNT), &[&id], rows::account).await
    }

    async fn list_accounts(&self, page: &Page) -> Result<Listing<Account>> {
        let q = lists::accounts(page, sql::ACCOUNT_COLS);
        self.list(&q, page, rows::account).await
    }

    async fn update_account(
        &self,
        a: &Account,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Account> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::UPDATE_ACCOUNT)).await?;
        let (row, ()) = tokio::try_join!(
            biased;
            async {
                tx.query_opt(
                    &st,
                    &[&a.id, &a.company, &a.account, &a.slug, &a.updated_at, &version],
                )
                .await
                .map_err(|e| Taken::AccountSlug(&a.slug).or(e))
            },
            access::insert_audit(&tx, audit),
        )?;
        let Some(row) = row else {
            let found = exists(&tx, "SELECT 1 FROM accounts WHERE id = $1", &[&a.id]).await?;
            return Err(if found {
                StoreError::Stale("account")
            } else {
                StoreError::NotFound(format!("account {} not found", a.id))
            });
        };
        let account = rows::account(&row)?;
        tx.commit().await?;
        Ok(account)
    }

    async fn create_license(&self, l: &License, audit: &AuditEvent) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::INSERT_LICENSE)).await?;
        tokio::try_join!(
            biased;
            async {
                tx.execute(
                    &st,
                    &[
                        &l.lid,
                        &l.account_id,
                        &l.status.as_str(),
                        &l.starts_at,
                        &l.expires_at,
                        &l.max_instances,
                        &Json(&l.terms),
                        &l.created_at,
                    ],
                )
                .await
                .map_err(StoreError::from)
            },
            access::insert_audit(&tx, audit),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_license(&self, lid: &str) -> Result<Option<License>> {
        self.one(pg!(sql::GET_LICENSE), &[&lid], rows::license)
            .await
    }

    async fn list_licenses(&self, f: &LicenseFilter, page: &Page) -> Result<Listing<License>> {
        let q = lists::licenses(f, page, sql::LICENSE_COLS, lists::Dialect::Postgres);
        self.list(&q, page, rows::license).await
    }

    async fn update_license_terms(
        &self,
        l: &License,
        from: &License,
        if_match: Option<i64>,
        audit: &AuditEvent,
    ) -> Result<License> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::UPDATE_LICENSE_TERMS)).await?;
        let (row, ()) = tokio::try_join!(
            biased;
            async {
                tx.query_opt(
                    &st,
                    &[
                        &l.lid,
                        &l.starts_at,
                        &l.expires_at,
                        &l.max_instances,
                        &Json(&l.terms),
                        &l.updated_at,
                        &from.starts_at,
                        &from.expires_at,
                        &from.max_instances,
                        &Json(&from.terms),
                        &if_match,
                    ],
                )
                .await
                .map_err(StoreError::from)
            },
            access::insert_audit(&tx, audit),
        )?;
        let Some(row) = row else {
            // Why nothing changed: gone, revoked, or changed since read.
            let st = tx
                .prepare_cached("SELECT status FROM licenses WHERE lid = $1")
                .await?;
            let Some(row) = tx.query_opt(&st, &[&l.lid]).await? else {
                return Err(license_not_found(&l.lid));
            };
            return Err(match parse_status(row.try_get(0)?)? {
                LicenseStatus::Revoked => StoreError::NotActive {
                    lid: l.lid.clone(),
                    status: LicenseStatus::Revoked,
                },
                _ => StoreError::Stale("license"),
            });
        };
        let license = rows::license(&row)?;
        tx.commit().await?;
        Ok(license)
    }

    async fn transition_license(
        &self,
        lid: &str,
        to: LicenseStatus,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Transition> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // The lock makes the status read here the one the change replaces,
        // and makes issuances in flight (FOR SHARE) finish first.
        let (lock, set, queue) = tokio::try_join!(
            tx.prepare_cached(pg!(&format!(
                "SELECT {} FROM licenses WHERE lid = $1 FOR UPDATE",
                sql::LICENSE_COLS
            ))),
            tx.prepare_cached(pg!(sql::SET_LICENSE_STATUS)),
            tx.prepare_cached(pg!(sql::QUEUE_REMOVALS)),
        )?;
        let Some(row) = tx.query_opt(&lock, &[&lid]).await? else {
            return Err(license_not_found(lid));
        };
        let old = rows::license(&row)?;
        if old.status == to {
            return Ok(Transition::Unchanged(old));
        }
        if old.status == LicenseStatus::Revoked {
            return Err(StoreError::NotActive {
                lid: lid.to_string(),
                status: LicenseStatus::Revoked,
            });
        }
        let revoke = to == LicenseStatus::Revoked;
        let (row, removals) = tokio::try_join!(
            biased;
            async {
                tx.query_opt(&set, &[&lid, &to.as_str(), &now])
                    .await
                    .map_err(StoreError::from)
            },
            async {
                if revoke {
                    tx.execute(&queue, &[&lid, &now])
                        .await
                        .map_err(StoreError::from)
                } else {
                    Ok(0)
                }
            },
        )?;
        // Under the lock, with the status checked above, it did change.
        let Some(row) = row else {
            return Err(StoreError::Stale("license"));
        };
        let license = rows::license(&row)?;
        let event = super::with_transition(audit, old.status, to, revoke.then_some(removals));
        access::insert_audit(&tx, &event).await?;
        tx.commit().await?;
        Ok(Transition::Changed { license, removals })
    }

    async fn bind_instance(
        &self,
        i: &Instance,
        credentials: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Instance> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let (lock, count) = tokio::try_join!(
            tx.prepare_cached(LOCK_LICENSE_UPDATE),
            tx.prepare_cached(pg!(sql::COUNT_BOUND)),
        )?;
        // The count runs after the lock is granted: it sees the binds the
        // lock waited for.
        let by_lid: [Param<'_>; 1] = [&i.lid];
        let (license, bound) = tokio::try_join!(
            biased;
            tx.query_opt(&lock, &by_lid),
            tx.query_one(&count, &by_lid),
        )?;
        let Some(license) = license else {
            return Err(license_not_found(&i.lid));
        };
        if parse_status(license.try_get(0)?)? == LicenseStatus::Revoked {
            return Err(StoreError::NotActive {
                lid: i.lid.clone(),
                status: LicenseStatus::Revoked,
            });
        }
        let max: i64 = license.try_get(1)?;
        if bound.try_get::<_, i64>(0)? >= max {
            return Err(StoreError::InstanceLimit {
                lid: i.lid.clone(),
                max,
            });
        }
        tokio::try_join!(
            biased;
            insert_instance(&tx, i, credentials),
            access::insert_audit(&tx, audit),
        )?;
        tx.commit().await?;
        Ok(Instance {
            version: 1,
            has_credentials: credentials.is_some(),
            ..i.clone()
        })
    }

    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>> {
        self.one(pg!(sql::GET_INSTANCE), &[&lid, &id], rows::instance)
            .await
    }

    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>> {
        self.one(pg!(sql::FIND_INSTANCE), &[&lid, &url], rows::instance)
            .await
    }

    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>> {
        // Three queries pipelined on one connection: one round trip.
        let c = self.pool.get().await?;
        let (l, i, a) = tokio::try_join!(
            c.prepare_cached(pg!(sql::GET_LICENSE)),
            c.prepare_cached(pg!(sql::FIND_INSTANCE)),
            c.prepare_cached(pg!(&format!(
                "SELECT {} FROM accounts WHERE id = (SELECT account_id FROM licenses WHERE lid = $1)",
                sql::ACCOUNT_COLS
            )))
        )?;
        let (by_lid, by_url): ([Param<'_>; 1], [Param<'_>; 2]) = ([&lid], [&lid, &url]);
        let (license, instance, account) = tokio::try_join!(
            c.query_opt(&l, &by_lid),
            c.query_opt(&i, &by_url),
            c.query_opt(&a, &by_lid)
        )?;
        let Some(license) = license.as_ref().map(rows::license).transpose()? else {
            return Ok(None);
        };
        Ok(Some(IssuanceContext {
            license,
            instance: instance.as_ref().map(rows::instance).transpose()?,
            account: account.as_ref().map(rows::account).transpose()?,
        }))
    }

    async fn list_instances(&self, lid: &str, page: &Page) -> Result<Listing<Instance>> {
        let q = lists::instances(lid, page, sql::INSTANCE_COLS);
        self.list(&q, page, rows::instance).await
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::UPDATE_PUSH_SETTINGS)).await?;
        let sealed: Option<&str> = s.credentials.as_ref().and_then(Option::as_deref);
        let (row, ()) = tokio::try_join!(
            biased;
            async {
                tx.query_opt(
                    &st,
                    &[
                        &lid,
                        &id,
                        &s.dialect.as_str(),
                        &s.push_enabled,
                        &s.push_next_at,
                        &s.push_attempts,
                        &s.credentials.is_some(),
                        &sealed,
                        &now,
                        &version,
                    ],
                )
                .await
                .map_err(StoreError::from)
            },
            access::insert_audit(&tx, audit),
        )?;
        let Some(row) = row else {
            return Err(
                if exists(&tx, pg!(sql::INSTANCE_EXISTS), &[&lid, &id]).await? {
                    StoreError::Stale("instance")
                } else {
                    StoreError::NotFound(format!("instance {id} of license {lid} not found"))
                },
            );
        };
        let instance = rows::instance(&row)?;
        tx.commit().await?;
        Ok(instance)
    }

    async fn unbind_instance(&self, lid: &str, id: &str, audit: &AuditEvent) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(sql::DELETE_INSTANCE)).await?;
        let (n, ()) = tokio::try_join!(
            biased;
            async { tx.execute(&st, &[&lid, &id]).await.map_err(StoreError::from) },
            access::insert_audit(&tx, audit),
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn record_issuance(&self, is: &Issuance, audit: &AuditEvent) -> Result<Recorded> {
        let t = &is.token;
        let lid = &t.lid;
        let bind = matches!(is.to, Recipient::Bind(_));
        let retry = match (is.idempotent_since, &t.renewed_from) {
            (Some(since), Some(old)) => Some((old, since)),
            _ => None,
        };
        let record_sql = match (&is.to, t.reason) {
            (Recipient::Bind(_), _) => None,
            (Recipient::Bound { .. }, TokenReason::Push) => Some(pg!(sql::RECORD_PUSH_TOKEN)),
            (Recipient::Bound { .. }, _) => Some(pg!(sql::RECORD_TOKEN)),
        };
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let (license_st, second_st, retry_st, record_st, token_st) = tokio::try_join!(
            tx.prepare_cached(if bind {
                LOCK_LICENSE_UPDATE
            } else {
                LOCK_LICENSE_SHARE
            }),
            tx.prepare_cached(if bind {
                pg!(sql::COUNT_BOUND)
            } else {
                LOCK_INSTANCE
            }),
            tx.prepare_cached(pg!(sql::FIND_RETRY)),
            async {
                match record_sql {
                    Some(s) => tx.prepare_cached(s).await.map(Some),
                    None => Ok(None),
                }
            },
            tx.prepare_cached(pg!(sql::INSERT_TOKEN)),
        )?;

        // The license first, then the instance (a revocation's order); the
        // room count and the idempotency check after the locks, so they see
        // what the locks waited for.
        let (license, second, existing) = tokio::try_join!(
            biased;
            async { tx.query_opt(&license_st, &[lid]).await },
            async {
                match &is.to {
                    Recipient::Bind(_) => tx.query_opt(&second_st, &[lid]).await,
                    Recipient::Bound { id } => tx.query_opt(&second_st, &[id, lid]).await,
                }
            },
            async {
                match retry {
                    Some((old, since)) => tx.query_opt(&retry_st, &[old, &since]).await,
                    None => Ok(None),
                }
            },
        )?;
        let Some(license) = license else {
            return Err(license_not_found(lid));
        };
        let status = parse_status(license.try_get(0)?)?;
        if status != LicenseStatus::Active {
            return Err(StoreError::NotActive {
                lid: lid.clone(),
                status,
            });
        }
        if let Recipient::Bound { id } = &is.to
            && second.is_none()
        {
            return Err(StoreError::NotFound(format!(
                "instance {id} is not bound to license {lid}"
            )));
        }
        if let Some(row) = existing {
            // A retry: nothing is written (the transaction is dropped).
            return Ok(Recorded::Existing(rows::token(&row)?));
        }
        if let Recipient::Bind(i) = &is.to {
            let max: i64 = license.try_get(1)?;
            let bound: i64 = match &second {
                Some(row) => row.try_get(0)?,
                None => 0,
            };
            if bound >= max {
                return Err(StoreError::InstanceLimit {
                    lid: lid.clone(),
                    max,
                });
            }
            insert_instance(&tx, i, None).await?;
        }

        // The usage report joins the history (its statement prepared only
        // when there is one: cached per connection after the first).
        let report = is.usage.as_ref().filter(|u| !u.is_empty());
        let usage_st = match (report, &is.to) {
            (Some(_), Recipient::Bound { .. }) => {
                Some(tx.prepare_cached(pg!(super::usage::INSERT)).await?)
            }
            _ => None,
        };
        // No order among these: each writes rows no other one reads.
        let usage = is.usage.as_ref().map(Json);
        let reported = is.usage.as_ref().map(|_| t.iat);
        tokio::try_join!(
            biased;
            async {
                let (Recipient::Bound { id }, Some(st)) = (&is.to, &record_st) else {
                    return Ok(0);
                };
                if t.reason == TokenReason::Push {
                    tx.execute(st, &[lid, id, &t.jti, &t.iat, &is.next_renewal_at])
                        .await
                } else {
                    tx.execute(
                        st,
                        &[
                            lid,
                            id,
                            &t.jti,
                            &t.iat,
                            &is.next_renewal_at,
                            &t.exp,
                            &usage,
                            &reported,
                        ],
                    )
                    .await
                }
                .map_err(StoreError::from)
            },
            async {
                tx.execute(
                    &token_st,
                    &[
                        &t.jti,
                        &t.lid,
                        &t.instance_id,
                        &t.kid,
                        &t.iat,
                        &t.nbf,
                        &t.exp,
                        &t.reason.as_str(),
                        &t.renewed_from,
                        &t.token,
                    ],
                )
                .await
                .map_err(StoreError::from)
            },
            async {
                let (Some(st), Some(counters), Recipient::Bound { id }) =
                    (&usage_st, report, &is.to)
                else {
                    return Ok(0);
                };
                tx.execute(st, &[lid, id, &t.iat, &Json(counters)])
                    .await
                    .map_err(StoreError::from)
            },
            access::insert_audit(&tx, audit),
        )?;
        tx.commit().await?;
        Ok(Recorded::New)
    }

    async fn list_tokens(&self, lid: &str, page: &Page) -> Result<Listing<TokenRecord>> {
        let q = lists::tokens(lid, page, sql::TOKEN_COLS);
        self.list(&q, page, rows::token).await
    }

    async fn revoked_licenses(&self) -> Result<Vec<String>> {
        self.many(pg!(sql::REVOKED_LICENSES), &[], |r| Ok(r.try_get(0)?))
            .await
    }

    async fn license_counts(&self, now: i64) -> Result<super::LicenseCounts> {
        let [d7, d30, d90] = super::LicenseCounts::windows(now);
        self.many(pg!(sql::LICENSE_COUNTS), &[&now, &d7, &d30, &d90], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
        .await
        .map(super::LicenseCounts::from_rows)
    }

    fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        PoolStatus {
            size: n(s.size),
            available: n(s.available),
            waiting: n(s.waiting),
        }
    }

    async fn prune(&self, plan: &super::PrunePlan) -> Result<Option<super::Pruned>> {
        let mut c = self.pool.get().await?;
        let lock = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&super::PRUNE_LOCK])
            .await?;
        if !lock.try_get::<_, bool>(0)? {
            return Ok(None);
        }
        let mut result = prune_batches(&c, plan).await;
        if let (Ok(pruned), Some(before)) = (&mut result, plan.usage_before) {
            match usage::roll_usage(&mut c, before, plan.batch, plan.pause).await {
                Ok(n) => pruned.usage = n,
                Err(e) => result = Err(e),
            }
        }
        let unlocked = c
            .execute("SELECT pg_advisory_unlock($1)", &[&super::PRUNE_LOCK])
            .await;
        if unlocked.is_err() {
            // Never back in the pool with the lock perhaps still held:
            // closing the connection releases it.
            drop(deadpool_postgres::Object::take(c));
        }
        result.map(Some)
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        self.one(pg!(sql::GET_SETTING), &[&key], |r| Ok(r.try_get(0)?))
            .await
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let c = self.pool.get().await?;
        let (init, get) = tokio::try_join!(
            c.prepare_cached(pg!(sql::INIT_SETTING)),
            c.prepare_cached(pg!(sql::GET_SETTING)),
        )?;
        // The read runs after the insert (which waits for a concurrent one
        // of the same key to commit): it sees whichever value won.
        let (init_args, get_args): ([Param<'_>; 2], [Param<'_>; 1]) = ([&key, &value], [&key]);
        let (_, row) = tokio::try_join!(
            biased;
            c.execute(&init, &init_args),
            c.query_one(&get, &get_args),
        )?;
        Ok(row.try_get(0)?)
    }
}
