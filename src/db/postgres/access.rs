//! PostgreSQL: service accounts, their tokens and the audit trail.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::types::Json;

use super::PgStore;
use crate::db::rows::{self, Taken};
use crate::db::{AccessStore, NewSaToken, NewServiceAccount, Result, StoreError};
use crate::db::{lists, sql};
use crate::domain::{AuditEvent, AuditFilter, Listing, Page, Role, SaToken, ServiceAccount};

/// Writes an audit event on `c` (the transaction of its change).
pub(super) async fn insert_audit(c: &impl GenericClient, e: &AuditEvent) -> Result<()> {
    insert_audit_as(c, e, &e.target_id, e.detail.as_ref()).await
}

/// [`insert_audit`] with the target id and detail the change settled on
/// (the id of the row it created, what it did).
pub(super) async fn insert_audit_as(
    c: &impl GenericClient,
    e: &AuditEvent,
    target_id: &str,
    detail: Option<&Value>,
) -> Result<()> {
    let st = c.prepare_cached(pg!(sql::INSERT_AUDIT)).await?;
    c.execute(
        &st,
        &[
            &e.at,
            &e.actor_kind.as_str(),
            &e.actor,
            &e.action,
            &e.target_type,
            &target_id,
            &e.ip,
            &detail.map(Json),
        ],
    )
    .await?;
    super::events::insert_events(c, e).await
}

/// $1 token id, $2 now: `last_used_at` unless it was written in the last
/// minute, so that a token in constant use costs one write a minute.
/// (`$2::bigint`: the WHERE clause is typed first, and `$2 - 60` alone
/// would make `$2` an integer.)
const TOUCH_SA_TOKEN: &str = "UPDATE service_account_tokens SET last_used_at = $2 \
    WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::bigint - 60)";

/// The event's target, or the id of the row the change created when the
/// caller could not know it.
fn target_or(audit: &AuditEvent, id: i64) -> String {
    if audit.target_id.is_empty() {
        id.to_string()
    } else {
        audit.target_id.clone()
    }
}

#[async_trait]
impl AccessStore for PgStore {
    async fn insert_service_account(
        &self,
        sa: NewServiceAccount<'_>,
        audit: &AuditEvent,
    ) -> Result<ServiceAccount> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(pg!(&format!(
                "INSERT INTO service_accounts AS s (name, login, role, is_disabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING {}",
                sql::SA_COLS
            )))
            .await?;
        let row = tx
            .query_one(
                &st,
                &[
                    &sa.name,
                    &sa.login,
                    &sa.role.as_str(),
                    &sa.is_disabled,
                    &sa.now,
                ],
            )
            .await
            .map_err(|e| Taken::ServiceAccount(sa.name).or(e))?;
        let created = rows::service_account(&row)?;
        insert_audit_as(
            &tx,
            audit,
            &target_or(audit, created.id),
            audit.detail.as_ref(),
        )
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>> {
        self.one(
            pg!(&format!(
                "SELECT {} FROM service_accounts s WHERE s.id = $1",
                sql::SA_COLS
            )),
            &[&id],
            rows::service_account,
        )
        .await
    }

    async fn search_service_accounts(
        &self,
        query: &str,
        page: &Page,
    ) -> Result<Listing<ServiceAccount>> {
        let q = lists::service_accounts(
            &query.to_lowercase(),
            page,
            sql::SA_COLS,
            lists::Dialect::Postgres,
        );
        self.list(&q, page, rows::service_account).await
    }

    async fn update_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "UPDATE service_accounts SET name = $2, login = $3, role = $4, is_disabled = $5, \
                 updated_at = $6 WHERE id = $1",
            )
            .await?;
        let (n, ()) = tokio::try_join!(
            biased;
            async {
                tx.execute(
                    &st,
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
                .map_err(|e| Taken::ServiceAccount(&sa.name).or(e))
            },
            insert_audit(&tx, audit),
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "service account {} not found",
                sa.id
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_service_account(&self, id: i64, audit: &AuditEvent) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Its tokens go with it (ON DELETE CASCADE).
        let st = tx
            .prepare_cached("DELETE FROM service_accounts WHERE id = $1")
            .await?;
        let (n, ()) = tokio::try_join!(
            biased;
            async { tx.execute(&st, &[&id]).await.map_err(StoreError::from) },
            insert_audit(&tx, audit),
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_sa_token(&self, t: NewSaToken<'_>, audit: &AuditEvent) -> Result<SaToken> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO service_account_tokens (service_account_id, name, hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .await?;
        let id: i64 = tx
            .query_one(
                &st,
                &[
                    &t.service_account_id,
                    &t.name,
                    &t.hash,
                    &t.now,
                    &t.expires_at,
                ],
            )
            .await
            .map_err(|e| {
                Taken::SaToken {
                    service_account_id: t.service_account_id,
                    name: t.name,
                }
                .or(e)
            })?
            .try_get(0)?;
        insert_audit_as(&tx, audit, &target_or(audit, id), audit.detail.as_ref()).await?;
        tx.commit().await?;
        Ok(SaToken {
            id,
            service_account_id: t.service_account_id,
            name: t.name.to_string(),
            created_at: t.now,
            expires_at: t.expires_at,
            last_used_at: None,
        })
    }

    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>> {
        self.many(
            pg!(&format!(
                "SELECT {} FROM service_account_tokens k WHERE k.service_account_id = $1 ORDER BY k.id",
                sql::SA_TOKEN_COLS
            )),
            &[&service_account_id],
            rows::sa_token,
        )
        .await
    }

    async fn delete_sa_token(
        &self,
        service_account_id: Option<i64>,
        id: i64,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "DELETE FROM service_account_tokens \
                 WHERE id = $1 AND ($2::bigint IS NULL OR service_account_id = $2)",
            )
            .await?;
        let (n, ()) = tokio::try_join!(
            biased;
            async {
                tx.execute(&st, &[&id, &service_account_id])
                    .await
                    .map_err(StoreError::from)
            },
            insert_audit(&tx, audit),
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>> {
        self.one(
            pg!(&format!(
                "SELECT {}, {} FROM service_account_tokens k \
                 JOIN service_accounts s ON s.id = k.service_account_id WHERE k.hash = $1",
                sql::SA_TOKEN_COLS,
                sql::SA_COLS
            )),
            &[&hash],
            rows::sa_token_and_account,
        )
        .await
    }

    async fn touch_sa_token(&self, id: i64, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(TOUCH_SA_TOKEN).await?;
        c.execute(&st, &[&id, &now]).await?;
        Ok(())
    }

    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>> {
        self.many(
            pg!(&format!(
                "SELECT {}, s.role FROM service_account_tokens k \
                 JOIN service_accounts s ON s.id = k.service_account_id \
                 WHERE $1 OR k.expires_at IS NULL OR k.expires_at > $2 ORDER BY k.id",
                sql::SA_TOKEN_COLS
            )),
            &[&include_expired, &now],
            rows::sa_token_and_role,
        )
        .await
    }

    async fn insert_audit(&self, event: &AuditEvent) -> Result<()> {
        let c = self.pool.get().await?;
        insert_audit(&c, event).await
    }

    async fn list_audit(&self, f: &AuditFilter, page: &Page) -> Result<Listing<AuditEvent>> {
        let q = lists::audit(f, page, sql::AUDIT_COLS);
        self.list(&q, page, rows::audit_event).await
    }
}
