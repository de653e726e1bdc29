//! SQLite: service accounts, their tokens and the audit trail.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Cached, SqliteStore, bad_value, from_json, json};
use crate::db::{AccessStore, Result, StoreError};
use crate::domain::{ActorKind, AuditEvent, AuditFilter, Page, Role, SaToken, ServiceAccount};

const SA_COLS: &str = "s.id, s.name, s.login, s.role, s.is_disabled, \
    (SELECT count(*) FROM service_account_tokens t WHERE t.service_account_id = s.id), \
    s.created_at, s.updated_at";
fn sa_row(r: &Row) -> rusqlite::Result<ServiceAccount> {
    sa_at(r, 0)
}
fn sa_at(r: &Row, o: usize) -> rusqlite::Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: r.get(o)?,
        name: r.get(o + 1)?,
        login: r.get(o + 2)?,
        role: Role::parse(&r.get::<_, String>(o + 3)?).ok_or_else(|| bad_value("role"))?,
        is_disabled: r.get(o + 4)?,
        tokens: r.get(o + 5)?,
        created_at: r.get(o + 6)?,
        updated_at: r.get(o + 7)?,
    })
}

const TOKEN_COLS: &str = "k.id, k.service_account_id, k.name, k.created_at, k.expires_at";
fn token_row(r: &Row) -> rusqlite::Result<SaToken> {
    Ok(SaToken {
        id: r.get(0)?,
        service_account_id: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

const AUDIT_COLS: &str = "id, at, actor_kind, actor, action, target_type, target_id, ip, detail";
fn audit_row(r: &Row) -> rusqlite::Result<AuditEvent> {
    let detail: Option<String> = r.get(8)?;
    Ok(AuditEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        actor_kind: ActorKind::parse(&r.get::<_, String>(2)?)
            .ok_or_else(|| bad_value("actor kind"))?,
        actor: r.get(3)?,
        action: r.get(4)?,
        target_type: r.get(5)?,
        target_id: r.get(6)?,
        ip: r.get(7)?,
        detail: detail.as_deref().map(from_json).transpose()?,
    })
}

/// Writes an audit event on `c` (a transaction, when the change has one).
pub(super) fn insert_audit(c: &Connection, e: &AuditEvent) -> Result<()> {
    let detail = e.detail.as_ref().map(json).transpose()?;
    c.exec(
        "INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
    Ok(())
}

fn get_sa(c: &Connection, id: i64) -> Result<Option<ServiceAccount>> {
    Ok(c.row(
        &format!("SELECT {SA_COLS} FROM service_accounts s WHERE s.id = ?1"),
        [id],
        sa_row,
    )
    .optional()?)
}

fn conflict(e: rusqlite::Error, msg: impl FnOnce() -> String) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(msg()),
        other => other,
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn insert_service_account(
        &self,
        name: &str,
        login: &str,
        role: Role,
        is_disabled: bool,
        now: i64,
    ) -> Result<ServiceAccount> {
        let (name, login) = (name.to_string(), login.to_string());
        self.call(move |c| {
            c.exec(
                "INSERT INTO service_accounts (name, login, role, is_disabled, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![name, login, role.as_str(), is_disabled, now],
            )
            .map_err(|e| conflict(e, || format!("service account {name} already exists")))?;
            let id = c.last_insert_rowid();
            get_sa(c, id)?.ok_or_else(|| StoreError::Internal("service account vanished".into()))
        })
        .await
    }

    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>> {
        self.call(move |c| get_sa(c, id)).await
    }

    async fn search_service_accounts(
        &self,
        query: &str,
        page: Page,
    ) -> Result<(Vec<ServiceAccount>, i64)> {
        let query = query.to_lowercase();
        self.call(move |c| {
            // instr, not LIKE: the query's `%` and `_` are plain characters.
            let filter = "(instr(lower(s.name), ?1) > 0 OR instr(lower(s.login), ?1) > 0)";
            let total = c.row(
                &format!("SELECT count(*) FROM service_accounts s WHERE {filter}"),
                [&query],
                |r| r.get(0),
            )?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {SA_COLS} FROM service_accounts s WHERE {filter} ORDER BY s.name, s.id LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = st
                .query_map(params![query, page.per_page, page.offset()], sa_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn update_service_account(&self, sa: &ServiceAccount) -> Result<()> {
        let sa = sa.clone();
        self.call(move |c| {
            c.exec(
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
            .map_err(|e| conflict(e, || format!("service account {} already exists", sa.name)))?;
            Ok(())
        })
        .await
    }

    async fn delete_service_account(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.exec(
                "DELETE FROM service_account_tokens WHERE service_account_id = ?1",
                [id],
            )?;
            let n = tx.exec("DELETE FROM service_accounts WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn insert_sa_token(
        &self,
        service_account_id: i64,
        name: &str,
        hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<SaToken> {
        let (name, hash) = (name.to_string(), hash.to_string());
        self.call(move |c| {
            c.exec(
                "INSERT INTO service_account_tokens (service_account_id, name, hash, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![service_account_id, name, hash, now, expires_at],
            )
            .map_err(|e| {
                conflict(e, || {
                    format!("service account {service_account_id} already has a token named {name}")
                })
            })?;
            Ok(SaToken {
                id: c.last_insert_rowid(),
                service_account_id,
                name,
                created_at: now,
                expires_at,
            })
        })
        .await
    }

    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM service_account_tokens k WHERE k.service_account_id = ?1 ORDER BY k.id"
            ))?;
            let rows = st
                .query_map([service_account_id], token_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_sa_token(&self, service_account_id: Option<i64>, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(c.exec(
                "DELETE FROM service_account_tokens WHERE id = ?1 AND (?2 IS NULL OR service_account_id = ?2)",
                params![id, service_account_id],
            )? > 0)
        })
        .await
    }

    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>> {
        let hash = hash.to_string();
        self.call(move |c| {
            Ok(c.row(
                &format!(
                    "SELECT {TOKEN_COLS}, {SA_COLS} FROM service_account_tokens k \
                     JOIN service_accounts s ON s.id = k.service_account_id WHERE k.hash = ?1"
                ),
                [hash],
                |r| Ok((token_row(r)?, sa_at(r, 5)?)),
            )
            .optional()?)
        })
        .await
    }

    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS}, s.role FROM service_account_tokens k \
                 JOIN service_accounts s ON s.id = k.service_account_id \
                 WHERE ?1 OR k.expires_at IS NULL OR k.expires_at > ?2 ORDER BY k.id"
            ))?;
            let rows = st
                .query_map(params![include_expired, now], |r| {
                    let role =
                        Role::parse(&r.get::<_, String>(5)?).ok_or_else(|| bad_value("role"))?;
                    Ok((token_row(r)?, role))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn insert_audit(&self, event: &AuditEvent) -> Result<()> {
        let event = event.clone();
        self.call(move |c| insert_audit(c, &event)).await
    }

    async fn list_audit(&self, f: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)> {
        let f = f.clone();
        self.call(move |c| {
            let filter = "(?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) \
                AND (?3 IS NULL OR target_type = ?3) AND (?4 IS NULL OR target_id = ?4) \
                AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6)";
            let total = c.row(
                &format!("SELECT count(*) FROM audit_events WHERE {filter}"),
                params![f.actor, f.action, f.target_type, f.target_id, f.since, f.until],
                |r| r.get(0),
            )?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {AUDIT_COLS} FROM audit_events WHERE {filter} ORDER BY at DESC, id DESC LIMIT ?7 OFFSET ?8"
            ))?;
            let rows = st
                .query_map(
                    params![
                        f.actor, f.action, f.target_type, f.target_id, f.since, f.until,
                        page.per_page, page.offset()
                    ],
                    audit_row,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }
}
