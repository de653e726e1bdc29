//! PostgreSQL: service accounts, their tokens and the audit trail.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use super::{PgStore, bad_value, conflict};
use crate::db::{AccessStore, Result, StoreError};
use crate::domain::{ActorKind, AuditEvent, AuditFilter, Page, Role, SaToken, ServiceAccount};

const SA_COLS: &str = "s.id, s.name, s.login, s.role, s.is_disabled, \
    (SELECT count(*) FROM service_account_tokens t WHERE t.service_account_id = s.id), \
    s.created_at, s.updated_at";
fn sa_row(r: &Row) -> Result<ServiceAccount> {
    sa_at(r, 0)
}
fn sa_at(r: &Row, o: usize) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: r.try_get(o)?,
        name: r.try_get(o + 1)?,
        login: r.try_get(o + 2)?,
        role: Role::parse(r.try_get(o + 3)?).ok_or_else(|| bad_value("role"))?,
        is_disabled: r.try_get(o + 4)?,
        tokens: r.try_get(o + 5)?,
        created_at: r.try_get(o + 6)?,
        updated_at: r.try_get(o + 7)?,
    })
}

const TOKEN_COLS: &str = "k.id, k.service_account_id, k.name, k.created_at, k.expires_at";
fn token_row(r: &Row) -> Result<SaToken> {
    Ok(SaToken {
        id: r.try_get(0)?,
        service_account_id: r.try_get(1)?,
        name: r.try_get(2)?,
        created_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
    })
}
fn token_and_sa(r: &Row) -> Result<(SaToken, ServiceAccount)> {
    Ok((token_row(r)?, sa_at(r, 5)?))
}
fn token_and_role(r: &Row) -> Result<(SaToken, Role)> {
    let role = Role::parse(r.try_get(5)?).ok_or_else(|| bad_value("role"))?;
    Ok((token_row(r)?, role))
}

const AUDIT_COLS: &str = "id, at, actor_kind, actor, action, target_type, target_id, ip, detail";
fn audit_row(r: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor_kind: ActorKind::parse(r.try_get(2)?).ok_or_else(|| bad_value("actor kind"))?,
        actor: r.try_get(3)?,
        action: r.try_get(4)?,
        target_type: r.try_get(5)?,
        target_id: r.try_get(6)?,
        ip: r.try_get(7)?,
        detail: r
            .try_get::<_, Option<Json<serde_json::Value>>>(8)?
            .map(|j| j.0),
    })
}

/// Writes an audit event on `c` (a transaction, when the change has one).
pub(super) async fn insert_audit(c: &impl GenericClient, e: &AuditEvent) -> Result<()> {
    c.execute(
        &c.prepare_cached("INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)").await?,
        &[
            &e.at,
            &e.actor_kind.as_str(),
            &e.actor,
            &e.action,
            &e.target_type,
            &e.target_id,
            &e.ip,
            &e.detail.as_ref().map(Json),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl AccessStore for PgStore {
    async fn insert_service_account(
        &self,
        name: &str,
        login: &str,
        role: Role,
        is_disabled: bool,
        now: i64,
    ) -> Result<ServiceAccount> {
        let c = self.pool.get().await?;
        let id: i64 = c
            .query_one(
                &c.prepare_cached("INSERT INTO service_accounts (name, login, role, is_disabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING id").await?,
                &[&name, &login, &role.as_str(), &is_disabled, &now],
            )
            .await
            .map_err(|e| conflict(e, || format!("service account {name} already exists")))?
            .try_get(0)?;
        drop(c);
        self.get_service_account(id)
            .await?
            .ok_or_else(|| StoreError::Internal("service account vanished".into()))
    }

    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>> {
        self.one(
            &format!("SELECT {SA_COLS} FROM service_accounts s WHERE s.id = $1"),
            &[&id],
            sa_row,
        )
        .await
    }

    async fn search_service_accounts(
        &self,
        query: &str,
        page: Page,
    ) -> Result<(Vec<ServiceAccount>, i64)> {
        let query = query.to_lowercase();
        // strpos, not LIKE: the query's `%` and `_` are plain characters.
        let filter = "(strpos(lower(s.name), $1) > 0 OR strpos(lower(s.login), $1) > 0)";
        let total = self
            .count(
                &format!("SELECT count(*) FROM service_accounts s WHERE {filter}"),
                &[&query],
            )
            .await?;
        let rows = self
            .many(
                &format!("SELECT {SA_COLS} FROM service_accounts s WHERE {filter} ORDER BY s.name, s.id LIMIT $2 OFFSET $3"),
                &[&query, &page.per_page, &page.offset()],
                sa_row,
            )
            .await?;
        Ok((rows, total))
    }

    async fn update_service_account(&self, sa: &ServiceAccount) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached(
                "UPDATE service_accounts SET name = $2, login = $3, role = $4, is_disabled = $5, \
             updated_at = $6 WHERE id = $1",
            )
            .await?,
            &[
                &sa.id,
                &sa.name,
                &sa.login,
                &sa.role.as_str(),
                &sa.is_disabled,
                &sa.updated_at,
            ],
        )
        .await
        .map_err(|e| conflict(e, || format!("service account {} already exists", sa.name)))?;
        Ok(())
    }

    async fn delete_service_account(&self, id: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        // Its tokens go with it (ON DELETE CASCADE).
        Ok(c.execute(
            &c.prepare_cached("DELETE FROM service_accounts WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?
            > 0)
    }

    async fn insert_sa_token(
        &self,
        service_account_id: i64,
        name: &str,
        hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<SaToken> {
        let c = self.pool.get().await?;
        let id: i64 = c
            .query_one(
                &c.prepare_cached("INSERT INTO service_account_tokens (service_account_id, name, hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id").await?,
                &[&service_account_id, &name, &hash, &now, &expires_at],
            )
            .await
            .map_err(|e| {
                conflict(e, || {
                    format!("service account {service_account_id} already has a token named {name}")
                })
            })?
            .try_get(0)?;
        Ok(SaToken {
            id,
            service_account_id,
            name: name.to_string(),
            created_at: now,
            expires_at,
        })
    }

    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>> {
        self.many(
            &format!("SELECT {TOKEN_COLS} FROM service_account_tokens k WHERE k.service_account_id = $1 ORDER BY k.id"),
            &[&service_account_id],
            token_row,
        )
        .await
    }

    async fn delete_sa_token(&self, service_account_id: Option<i64>, id: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            &c.prepare_cached("DELETE FROM service_account_tokens WHERE id = $1 AND ($2::bigint IS NULL OR service_account_id = $2)").await?,
            &[&id, &service_account_id],
        )
        .await?
            > 0)
    }

    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>> {
        self.one(
            &format!(
                "SELECT {TOKEN_COLS}, {SA_COLS} FROM service_account_tokens k \
                 JOIN service_accounts s ON s.id = k.service_account_id WHERE k.hash = $1"
            ),
            &[&hash],
            token_and_sa,
        )
        .await
    }

    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>> {
        self.many(
            &format!(
                "SELECT {TOKEN_COLS}, s.role FROM service_account_tokens k \
                 JOIN service_accounts s ON s.id = k.service_account_id \
                 WHERE $1 OR k.expires_at IS NULL OR k.expires_at > $2 ORDER BY k.id"
            ),
            &[&include_expired, &now],
            token_and_role,
        )
        .await
    }

    async fn insert_audit(&self, event: &AuditEvent) -> Result<()> {
        let c = self.pool.get().await?;
        insert_audit(&c, event).await
    }

    async fn list_audit(&self, f: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)> {
        let filter = "($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2) \
            AND ($3::text IS NULL OR target_type = $3) AND ($4::text IS NULL OR target_id = $4) \
            AND ($5::bigint IS NULL OR at >= $5) AND ($6::bigint IS NULL OR at < $6)";
        let args: [&(dyn ToSql + Sync); 6] = [
            &f.actor,
            &f.action,
            &f.target_type,
            &f.target_id,
            &f.since,
            &f.until,
        ];
        let total = self
            .count(
                &format!("SELECT count(*) FROM audit_events WHERE {filter}"),
                &args,
            )
            .await?;
        let rows = self
            .many(
                &format!("SELECT {AUDIT_COLS} FROM audit_events WHERE {filter} ORDER BY at DESC, id DESC LIMIT $7 OFFSET $8"),
                &[
                    &f.actor,
                    &f.action,
                    &f.target_type,
                    &f.target_id,
                    &f.since,
                    &f.until,
                    &page.per_page,
                    &page.offset(),
                ],
                audit_row,
            )
            .await?;
        Ok((rows, total))
    }
}
