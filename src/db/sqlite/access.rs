//! SQLite: service accounts, their tokens and the audit trail.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, all, json, list, one};
use crate::db::rows::{self, Taken};
use crate::db::{AccessStore, NewSaToken, NewServiceAccount, Result, StoreError, lists, sql};
use crate::domain::{AuditEvent, AuditFilter, Listing, Page, Role, SaToken, ServiceAccount};

/// Writes an audit event on `c` (the change's transaction, when it has one).
pub(super) fn insert_audit(c: &Connection, e: &AuditEvent) -> Result<()> {
    let detail = e.detail.as_ref().map(json).transpose()?;
    c.exec(
        sql::INSERT_AUDIT,
        params![
            e.at,
            e.actor_kind.as_str(),
            e.actor,
            e.action,
            e.target_type,
            e.target_id,
            e.ip,
            detail
        ],
    )?;
    super::events::insert_events(c, e)
}

/// Writes `audit` for the row the change created: an event without a
/// target gets the new row's id.
fn insert_audit_for(c: &Connection, audit: &AuditEvent, id: i64) -> Result<()> {
    if audit.target_id.is_empty() {
        let audit = AuditEvent {
            target_id: id.to_string(),
            ..audit.clone()
        };
        insert_audit(c, &audit)
    } else {
        insert_audit(c, audit)
    }
}

/// ?1 token id, ?2 now: `last_used_at` unless it was written in the last
/// minute, so that a token in constant use costs one write a minute.
const TOUCH_SA_TOKEN: &str = "UPDATE service_account_tokens SET last_used_at = ?2 \
    WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60)";

fn get_sa(c: &Connection, id: i64) -> Result<Option<ServiceAccount>> {
    one(
        c,
        &format!(
            "SELECT {} FROM service_accounts s WHERE s.id = ?1",
            sql::SA_COLS
        ),
        [id],
        |r| rows::service_account(r),
    )
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn insert_service_account(
        &self,
        sa: NewServiceAccount<'_>,
        audit: &AuditEvent,
    ) -> Result<ServiceAccount> {
        let (name, login, audit) = (sa.name.to_string(), sa.login.to_string(), audit.clone());
        let (role, is_disabled, now) = (sa.role, sa.is_disabled, sa.now);
        self.write(move |c| {
            c.exec(
                "INSERT INTO service_accounts (name, login, role, is_disabled, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![name, login, role.as_str(), is_disabled, now],
            )
            .map_err(|e| Taken::ServiceAccount(&name).or(e))?;
            let id = c.last_insert_rowid();
            insert_audit_for(c, &audit, id)?;
            get_sa(c, id)?.ok_or_else(|| StoreError::Internal("service account vanished".into()))
        })
        .await
    }

    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>> {
        self.read(move |c| get_sa(c, id)).await
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
            lists::Dialect::Sqlite,
        );
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| rows::service_account(r)))
            .await
    }

    async fn update_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()> {
        let (sa, audit) = (sa.clone(), audit.clone());
        self.write(move |c| {
            let changed = c
                .exec(
                    "UPDATE service_accounts SET name = ?2, login = ?3, role = ?4, is_disabled = ?5, \
                     updated_at = ?6 WHERE id = ?1",
                    params![
                        sa.id,
                        sa.name,
                        sa.login,
                        sa.role.as_str(),
                        sa.is_disabled,
                        sa.updated_at
                    ],
                )
                .map_err(|e| Taken::ServiceAccount(&sa.name).or(e))?;
            // No event for a change that did not happen.
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "service account {} not found",
                    sa.id
                )));
            }
            insert_audit(c, &audit)
        })
        .await
    }

    async fn delete_service_account(&self, id: i64, audit: &AuditEvent) -> Result<bool> {
        let audit = audit.clone();
        self.write(move |c| {
            c.exec(
                "DELETE FROM service_account_tokens WHERE service_account_id = ?1",
                [id],
            )?;
            if c.exec("DELETE FROM service_accounts WHERE id = ?1", [id])? == 0 {
                return Ok(false);
            }
            insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn insert_sa_token(&self, t: NewSaToken<'_>, audit: &AuditEvent) -> Result<SaToken> {
        let (name, hash, audit) = (t.name.to_string(), t.hash.to_string(), audit.clone());
        let (service_account_id, now, expires_at) = (t.service_account_id, t.now, t.expires_at);
        self.write(move |c| {
            c.exec(
                "INSERT INTO service_account_tokens (service_account_id, name, hash, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![service_account_id, name, hash, now, expires_at],
            )
            .map_err(|e| {
                Taken::SaToken {
                    service_account_id,
                    name: &name,
                }
                .or(e)
            })?;
            let id = c.last_insert_rowid();
            insert_audit_for(c, &audit, id)?;
            Ok(SaToken {
                id,
                service_account_id,
                name,
                created_at: now,
                expires_at,
                last_used_at: None,
            })
        })
        .await
    }

    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>> {
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {} FROM service_account_tokens k WHERE k.service_account_id = ?1 \
                     ORDER BY k.id",
                    sql::SA_TOKEN_COLS
                ),
                [service_account_id],
                |r| rows::sa_token(r),
            )
        })
        .await
    }

    async fn delete_sa_token(
        &self,
        service_account_id: Option<i64>,
        id: i64,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let audit = audit.clone();
        self.write(move |c| {
            let deleted = c.exec(
                "DELETE FROM service_account_tokens WHERE id = ?1 \
                 AND (?2 IS NULL OR service_account_id = ?2)",
                params![id, service_account_id],
            )?;
            if deleted == 0 {
                return Ok(false);
            }
            insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>> {
        let hash = hash.to_string();
        self.read(move |c| {
            one(
                c,
                &format!(
                    "SELECT {}, {} FROM service_account_tokens k \
                     JOIN service_accounts s ON s.id = k.service_account_id WHERE k.hash = ?1",
                    sql::SA_TOKEN_COLS,
                    sql::SA_COLS
                ),
                [hash],
                |r| rows::sa_token_and_account(r),
            )
        })
        .await
    }

    async fn touch_sa_token(&self, id: i64, now: i64) -> Result<()> {
        self.call(move |c| {
            c.exec(TOUCH_SA_TOKEN, params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>> {
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {}, s.role FROM service_account_tokens k \
                     JOIN service_accounts s ON s.id = k.service_account_id \
                     WHERE ?1 OR k.expires_at IS NULL OR k.expires_at > ?2 ORDER BY k.id",
                    sql::SA_TOKEN_COLS
                ),
                params![include_expired, now],
                |r| rows::sa_token_and_role(r),
            )
        })
        .await
    }

    async fn insert_audit(&self, event: &AuditEvent) -> Result<()> {
        let event = event.clone();
        self.call(move |c| insert_audit(c, &event)).await
    }

    async fn list_audit(&self, f: &AuditFilter, page: &Page) -> Result<Listing<AuditEvent>> {
        let q = lists::audit(f, page, sql::AUDIT_COLS);
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| rows::audit_event(r)))
            .await
    }
}
