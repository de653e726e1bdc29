//! The PostgreSQL store (`tokio-postgres` + `deadpool-postgres`), for
//! production and several replicas on one database.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};

use super::{Issuance, IssuanceContext, PoolStatus, Recorded, Result, Store, StoreError};
use crate::domain::AuditEvent;
use crate::domain::{
    Account, Dialect, Instance, License, LicenseFilter, LicenseStatus, Page, Product, TokenReason,
    TokenRecord,
};

mod access;
mod push;
mod tls;

mod embedded {
    refinery::embed_migrations!("sql/postgres");
}

/// Serialises migrations between replicas starting together.
const MIGRATION_LOCK: i64 = 0x0063_6861_7274_6572; // "charter"

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::Conflict(e.to_string()),
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

fn bad_value(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected {what} in the database"))
}

fn conflict(e: tokio_postgres::Error, msg: impl FnOnce() -> String) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(msg()),
        other => other,
    }
}

const PRODUCT_COLS: &str = "slug, name, features, created_at, updated_at";
fn product_row(r: &Row) -> Result<Product> {
    Ok(Product {
        slug: r.try_get(0)?,
        name: r.try_get(1)?,
        features: r.try_get::<_, Json<Vec<String>>>(2)?.0,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}

const ACCOUNT_COLS: &str = "id, company, account, slug, created_at, updated_at";
fn account_row(r: &Row) -> Result<Account> {
    Ok(Account {
        id: r.try_get(0)?,
        company: r.try_get(1)?,
        account: r.try_get(2)?,
        slug: r.try_get(3)?,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

const LICENSE_COLS: &str =
    "lid, account_id, status, starts_at, expires_at, max_instances, terms, created_at, updated_at";
fn license_row(r: &Row) -> Result<License> {
    let status = LicenseStatus::parse(r.try_get(2)?).ok_or_else(|| bad_value("status"))?;
    Ok(License {
        lid: r.try_get(0)?,
        account_id: r.try_get(1)?,
        status,
        state: status.as_str().to_string(),
        starts_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
        max_instances: r.try_get(5)?,
        terms: r.try_get::<_, Json<_>>(6)?.0,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
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
fn instance_row(r: &Row) -> Result<Instance> {
    Ok(Instance {
        id: r.try_get(0)?,
        lid: r.try_get(1)?,
        url: r.try_get(2)?,
        dialect: Dialect::parse(r.try_get(3)?).ok_or_else(|| bad_value("dialect"))?,
        push_enabled: r.try_get(4)?,
        last_jti: r.try_get(5)?,
        last_issued_at: r.try_get(6)?,
        next_renewal_at: r.try_get(7)?,
        usage: r.try_get::<_, Option<Json<_>>>(8)?.map(|j| j.0),
        usage_reported_at: r.try_get(9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        token_expires_at: r.try_get(12)?,
        push_next_at: r.try_get(13)?,
        push_attempts: r.try_get(14)?,
        push_last_error: r.try_get(15)?,
        push_last_ok_at: r.try_get(16)?,
        push_at_risk: r.try_get(17)?,
        removal_pending: r.try_get(18)?,
        push_pending_jti: r.try_get(19)?,
        has_credentials: r.try_get(20)?,
    })
}

const TOKEN_COLS: &str = "jti, lid, instance_id, kid, iat, nbf, exp, reason, renewed_from, token";
fn token_row(r: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.try_get(0)?,
        lid: r.try_get(1)?,
        instance_id: r.try_get(2)?,
        kid: r.try_get(3)?,
        iat: r.try_get(4)?,
        nbf: r.try_get(5)?,
        exp: r.try_get(6)?,
        reason: TokenReason::parse(r.try_get(7)?).ok_or_else(|| bad_value("reason"))?,
        renewed_from: r.try_get(8)?,
        token: r.try_get(9)?,
    })
}

async fn insert_instance(c: &impl GenericClient, i: &Instance) -> Result<()> {
    c.execute(
        &c.prepare_cached(&format!(
            "INSERT INTO instances ({INSTANCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .await?,
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
        ],
    )
    .await
    .map_err(|e| {
        conflict(e, || {
            format!("instance {} is already bound to license {}", i.url, i.lid)
        })
    })?;
    Ok(())
}

async fn update_instance(c: &impl GenericClient, i: &Instance) -> Result<()> {
    c.execute(
        &c.prepare_cached("UPDATE instances SET dialect = $3, push_enabled = $4, last_jti = $5, last_issued_at = $6, \
         next_renewal_at = $7, usage = $8, usage_reported_at = $9, updated_at = $10, \
         token_expires_at = $11, push_next_at = $12, push_attempts = $13, push_last_error = $14, \
         push_last_ok_at = $15, push_at_risk = $16, removal_pending = $17, push_pending_jti = $18 \
         WHERE lid = $1 AND id = $2").await?,
        &[
            &i.lid,
            &i.id,
            &i.dialect.as_str(),
            &i.push_enabled,
            &i.last_jti,
            &i.last_issued_at,
            &i.next_renewal_at,
            &i.usage.as_ref().map(Json),
            &i.usage_reported_at,
            &i.updated_at,
            &i.token_expires_at,
            &i.push_next_at,
            &i.push_attempts,
            &i.push_last_error,
            &i.push_last_ok_at,
            &i.push_at_risk,
            &i.removal_pending,
            &i.push_pending_jti,
        ],
    )
    .await?;
    Ok(())
}

/// Locks the license row (serialising binds) and checks there is room.
async fn check_room(c: &impl GenericClient, lid: &str, max: i64) -> Result<()> {
    c.query_opt(
        &c.prepare_cached("SELECT 1 FROM licenses WHERE lid = $1 FOR UPDATE")
            .await?,
        &[&lid],
    )
    .await?;
    let bound: i64 = c
        .query_one(
            &c.prepare_cached("SELECT count(*) FROM instances WHERE lid = $1")
                .await?,
            &[&lid],
        )
        .await?
        .try_get(0)?;
    if bound >= max {
        return Err(StoreError::InstanceLimit {
            lid: lid.to_string(),
            max,
        });
    }
    Ok(())
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
        args: &[&(dyn ToSql + Sync)],
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
        args: &[&(dyn ToSql + Sync)],
        map: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let c = self.pool.get().await?;
        c.query(&c.prepare_cached(sql).await?, args)
            .await?
            .iter()
            .map(map)
            .collect()
    }

    async fn count(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<i64> {
        let c = self.pool.get().await?;
        Ok(c.query_one(&c.prepare_cached(sql).await?, args)
            .await?
            .try_get(0)?)
    }
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

    async fn insert_product(&self, p: &Product) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(&format!(
                "INSERT INTO products ({PRODUCT_COLS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .await?,
            &[
                &p.slug,
                &p.name,
                &Json(&p.features),
                &p.created_at,
                &p.updated_at,
            ],
        )
        .await
        .map_err(|e| conflict(e, || format!("product {} already exists", p.slug)))?;
        Ok(())
    }

    async fn get_product(&self, slug: &str) -> Result<Option<Product>> {
        self.one(
            &format!("SELECT {PRODUCT_COLS} FROM products WHERE slug = $1"),
            &[&slug],
            product_row,
        )
        .await
    }

    async fn list_products(&self) -> Result<Vec<Product>> {
        self.many(
            &format!("SELECT {PRODUCT_COLS} FROM products ORDER BY slug"),
            &[],
            product_row,
        )
        .await
    }

    async fn update_product(&self, p: &Product) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(
                "UPDATE products SET name = $2, features = $3, updated_at = $4 WHERE slug = $1",
            )
            .await?,
            &[&p.slug, &p.name, &Json(&p.features), &p.updated_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_account(&self, a: &Account) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(&format!(
                "INSERT INTO accounts ({ACCOUNT_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await?,
            &[
                &a.id,
                &a.company,
                &a.account,
                &a.slug,
                &a.created_at,
                &a.updated_at,
            ],
        )
        .await
        .map_err(|e| {
            conflict(e, || {
                format!("an account with slug {} already exists", a.slug)
            })
        })?;
        Ok(())
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        self.one(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"),
            &[&id],
            account_row,
        )
        .await
    }

    async fn list_accounts(&self, page: Page) -> Result<(Vec<Account>, i64)> {
        let total = self.count("SELECT count(*) FROM accounts", &[]).await?;
        let rows = self
            .many(
                &format!(
                    "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created_at, id LIMIT $1 OFFSET $2"
                ),
                &[&page.per_page, &page.offset()],
                account_row,
            )
            .await?;
        Ok((rows, total))
    }

    async fn update_account(&self, a: &Account) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached("UPDATE accounts SET company = $2, account = $3, slug = $4, updated_at = $5 WHERE id = $1").await?,
            &[&a.id, &a.company, &a.account, &a.slug, &a.updated_at],
        )
        .await
        .map_err(|e| conflict(e, || format!("an account with slug {} already exists", a.slug)))?;
        Ok(())
    }

    async fn insert_license(&self, l: &License) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(&format!(
                "INSERT INTO licenses ({LICENSE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .await?,
            &[
                &l.lid,
                &l.account_id,
                &l.status.as_str(),
                &l.starts_at,
                &l.expires_at,
                &l.max_instances,
                &Json(&l.terms),
                &l.created_at,
                &l.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_license(&self, lid: &str) -> Result<Option<License>> {
        self.one(
            &format!("SELECT {LICENSE_COLS} FROM licenses WHERE lid = $1"),
            &[&lid],
            license_row,
        )
        .await
    }

    async fn list_licenses(&self, f: &LicenseFilter, page: Page) -> Result<(Vec<License>, i64)> {
        let (status, expired): (Option<&str>, Option<bool>) = match f.state.as_deref() {
            Some("expired") => (Some("active"), Some(true)),
            Some("active") => (Some("active"), Some(false)),
            Some(s) => (Some(s), None),
            None => (None, None),
        };
        let filter = "($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR status = $2) \
            AND ($3::bool IS NULL OR $3 = (expires_at <= $4)) \
            AND ($5::text IS NULL OR terms->'products' ? $5)";
        let args: [&(dyn ToSql + Sync); 5] = [&f.account_id, &status, &expired, &f.now, &f.product];
        let total = self
            .count(
                &format!("SELECT count(*) FROM licenses WHERE {filter}"),
                &args,
            )
            .await?;
        let rows = self
            .many(
                &format!("SELECT {LICENSE_COLS} FROM licenses WHERE {filter} ORDER BY created_at, lid LIMIT $6 OFFSET $7"),
                &[&f.account_id, &status, &expired, &f.now, &f.product, &page.per_page, &page.offset()],
                license_row,
            )
            .await?;
        Ok((rows, total))
    }

    async fn update_license(&self, l: &License) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached("UPDATE licenses SET status = $2, starts_at = $3, expires_at = $4, max_instances = $5, \
             terms = $6, updated_at = $7 WHERE lid = $1").await?,
            &[
                &l.lid,
                &l.status.as_str(),
                &l.starts_at,
                &l.expires_at,
                &l.max_instances,
                &Json(&l.terms),
                &l.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn bind_instance(&self, i: &Instance, max_instances: i64) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        check_room(&tx, &i.lid, max_instances).await?;
        insert_instance(&tx, i).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>> {
        self.one(
            &format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = $1 AND id = $2"),
            &[&lid, &id],
            instance_row,
        )
        .await
    }

    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>> {
        self.one(
            &format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = $1 AND url = $2"),
            &[&lid, &url],
            instance_row,
        )
        .await
    }

    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>> {
        // Three queries pipelined on one connection: one round trip.
        let c = self.pool.get().await?;
        let license_sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE lid = $1");
        let instance_sql =
            format!("SELECT {INSTANCE_SELECT} FROM instances WHERE lid = $1 AND url = $2");
        let account_sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = (SELECT account_id FROM licenses WHERE lid = $1)"
        );
        let (l, i, a) = tokio::try_join!(
            c.prepare_cached(&license_sql),
            c.prepare_cached(&instance_sql),
            c.prepare_cached(&account_sql)
        )?;
        let (by_lid, by_url): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 2]) =
            ([&lid], [&lid, &url]);
        let (license, instance, account) = tokio::try_join!(
            c.query_opt(&l, &by_lid),
            c.query_opt(&i, &by_url),
            c.query_opt(&a, &by_lid)
        )?;
        let Some(license) = license.as_ref().map(license_row).transpose()? else {
            return Ok(None);
        };
        Ok(Some(IssuanceContext {
            license,
            instance: instance.as_ref().map(instance_row).transpose()?,
            account: account.as_ref().map(account_row).transpose()?,
        }))
    }

    async fn list_instances(&self, lid: &str) -> Result<Vec<Instance>> {
        self.many(
            &format!(
                "SELECT {INSTANCE_SELECT} FROM instances WHERE lid = $1 ORDER BY created_at, id"
            ),
            &[&lid],
            instance_row,
        )
        .await
    }

    async fn update_instance(&self, i: &Instance) -> Result<()> {
        let c = self.pool.get().await?;
        update_instance(&c, i).await
    }

    async fn delete_instance(&self, lid: &str, id: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            &c.prepare_cached("DELETE FROM instances WHERE lid = $1 AND id = $2")
                .await?,
            &[&lid, &id],
        )
        .await?
            > 0)
    }

    async fn record_issuance_audited(
        &self,
        is: &Issuance,
        audit: Option<&AuditEvent>,
    ) -> Result<Recorded> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Statements of a group are pipelined: prepared (cached) first, then
        // sent together in order on the group's first poll, one round trip,
        // and run by the server in that order, each (READ COMMITTED) with a
        // snapshot taken after the one before finished: the idempotency check
        // after the lock sees what the lock waited for. The first error of a
        // group is returned (the first one where order matters); nothing is
        // committed after an error.
        let idempotent = match (is.idempotent_since, &is.token.renewed_from) {
            (Some(since), Some(old)) => Some((since, old)),
            _ => None,
        };
        let idempotency_sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE renewed_from = $1 AND iat >= $2 \
             ORDER BY iat DESC LIMIT 1"
        );
        let existing = if is.bind {
            check_room(&tx, &is.instance.lid, is.max_instances).await?;
            match idempotent {
                Some((since, old)) => {
                    let st = tx.prepare_cached(&idempotency_sql).await?;
                    tx.query_opt(&st, &[old, &since]).await?
                }
                None => None,
            }
        } else {
            // Serialise renewals of one instance, so a retry sees the first.
            let (lock_st, idempotency_st) = tokio::try_join!(
                tx.prepare_cached("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE"),
                tx.prepare_cached(&idempotency_sql)
            )?;
            let id: [&(dyn ToSql + Sync); 1] = [&is.instance.id];
            let lock = tx.query_opt(&lock_st, &id);
            let check = async {
                match idempotent {
                    Some((since, old)) => tx.query_opt(&idempotency_st, &[old, &since]).await,
                    None => Ok(None),
                }
            };
            tokio::try_join!(lock, check)?.1
        };
        if let Some(row) = existing {
            return Ok(Recorded::Existing(token_row(&row)?));
        }
        if is.bind {
            // Before the token, which refers to it.
            insert_instance(&tx, &is.instance).await?;
        }
        // No order among these: each writes rows no other one reads.
        let instance = async {
            if is.bind {
                Ok(())
            } else {
                update_instance(&tx, &is.instance).await
            }
        };
        let token = async {
            let t = &is.token;
            let st = tx
                .prepare_cached(&format!(
                    "INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .await?;
            tx.execute(
                &st,
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
            .await?;
            Ok::<_, StoreError>(())
        };
        let event = async {
            match audit {
                Some(a) => access::insert_audit(&tx, a).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(instance, token, event)?;
        tx.commit().await?;
        Ok(Recorded::New)
    }

    async fn list_tokens(&self, lid: &str, page: Page) -> Result<(Vec<TokenRecord>, i64)> {
        let total = self
            .count("SELECT count(*) FROM tokens WHERE lid = $1", &[&lid])
            .await?;
        let rows = self
            .many(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE lid = $1 ORDER BY iat DESC, jti DESC LIMIT $2 OFFSET $3"),
                &[&lid, &page.per_page, &page.offset()],
                token_row,
            )
            .await?;
        Ok((rows, total))
    }

    async fn revoked_licenses(&self) -> Result<Vec<String>> {
        let c = self.pool.get().await?;
        c.query(
            &c.prepare_cached("SELECT lid FROM licenses WHERE status = 'revoked' ORDER BY lid")
                .await?,
            &[],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0).map_err(StoreError::from))
        .collect()
    }

    async fn license_expiries(&self) -> Result<Vec<(String, i64)>> {
        let c = self.pool.get().await?;
        c.query(
            &c.prepare_cached("SELECT lid, expires_at FROM licenses WHERE status = 'active'")
                .await?,
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
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

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let c = self.pool.get().await?;
        c.query_opt(
            &c.prepare_cached("SELECT value FROM settings WHERE key = $1")
                .await?,
            &[&key],
        )
        .await?
        .map(|r| r.try_get(0).map_err(StoreError::from))
        .transpose()
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .await?,
            &[&key, &value],
        )
        .await?;
        Ok(c.query_one(
            &c.prepare_cached("SELECT value FROM settings WHERE key = $1")
                .await?,
            &[&key],
        )
        .await?
        .try_get(0)?)
    }
}
