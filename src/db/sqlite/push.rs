//! SQLite: what the push job needs (claims, outcomes, credentials).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, INSTANCE_SELECT, SqliteStore, TOKEN_COLS, instance_row, token_row};
use crate::db::{PUSH_DUE, PushJob, PushStore, Result};
use crate::domain::{Instance, TokenRecord};

/// Leases the instances `ids` and reads them back with their credentials.
fn lease(c: &Connection, ids: &[String], owner: &str, lease_until: i64) -> Result<Vec<PushJob>> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        c.exec(
            "UPDATE instances SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
            params![id, owner, lease_until],
        )?;
        let job = c.row(
            &format!("SELECT {INSTANCE_SELECT}, credentials FROM instances WHERE id = ?1"),
            [id],
            |r| {
                Ok(PushJob {
                    instance: instance_row(r)?,
                    credentials: r.get(21)?,
                })
            },
        )?;
        jobs.push(job);
    }
    Ok(jobs)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PushJob>> {
        let owner = owner.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let due = PUSH_DUE.replace("{now}", "?1");
                // `push_enabled = 1` spelled as the partial index says, so
                // SQLite walks `instances_push_due` in order and stops at the
                // batch; with `i.push_enabled` alone it scanned and sorted the
                // whole table for every batch (quadratic over a run).
                let mut st = tx.prepare_cached(&format!(
                    "SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid \
                     WHERE i.push_enabled = 1 AND {due} ORDER BY i.push_next_at LIMIT ?2"
                ))?;
                st.query_map(params![now, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let jobs = lease(&tx, &ids, &owner, lease_until)?;
            tx.commit()?;
            Ok(jobs)
        })
        .await
    }

    async fn claim_push(
        &self,
        lid: &str,
        id: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<PushJob>> {
        let (lid, id, owner) = (lid.to_string(), id.to_string(), owner.to_string());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let due = PUSH_DUE.replace("i.push_next_at IS NOT NULL AND i.push_next_at <= {now}", "1").replace("{now}", "?1");
            let found: Option<String> = tx
                .row(
                    &format!("SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid WHERE i.lid = ?2 AND i.id = ?3 AND {due}"),
                    params![now, lid, id],
                    |r| r.get(0),
                )
                .optional()?;
            let jobs = lease(&tx, &found.into_iter().collect::<Vec<_>>(), &owner, lease_until)?;
            tx.commit()?;
            Ok(jobs.into_iter().next())
        })
        .await
    }

    async fn finish_push(&self, i: &Instance, owner: &str) -> Result<bool> {
        let (i, owner) = (i.clone(), owner.to_string());
        self.call(move |c| {
            Ok(c.exec(
                "UPDATE instances SET push_next_at = ?3, push_attempts = ?4, push_last_error = ?5, \
                 push_last_ok_at = ?6, push_at_risk = ?7, removal_pending = ?8, push_pending_jti = ?9, \
                 token_expires_at = ?10, lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?1 AND lease_owner = ?2",
                params![
                    i.id, owner, i.push_next_at, i.push_attempts, i.push_last_error, i.push_last_ok_at,
                    i.push_at_risk, i.removal_pending, i.push_pending_jti, i.token_expires_at
                ],
            )? > 0)
        })
        .await
    }

    async fn mark_removals(&self, lid: &str, now: i64) -> Result<u64> {
        let lid = lid.to_string();
        self.call(move |c| {
            let n = c.exec(
                "UPDATE instances SET removal_pending = 1, push_next_at = ?2, push_attempts = 0, \
                 push_last_error = NULL WHERE lid = ?1 AND push_enabled = 1",
                params![lid, now],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn set_credentials(&self, lid: &str, id: &str, sealed: Option<&str>) -> Result<()> {
        let (lid, id, sealed) = (lid.to_string(), id.to_string(), sealed.map(str::to_string));
        self.call(move |c| {
            c.exec(
                "UPDATE instances SET credentials = ?3 WHERE lid = ?1 AND id = ?2",
                params![lid, id, sealed],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>> {
        let jti = jti.to_string();
        self.call(move |c| {
            Ok(c.row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE jti = ?1"),
                [jti],
                token_row,
            )
            .optional()?)
        })
        .await
    }

    async fn count_push_backoff(&self) -> Result<(i64, i64)> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT count(*), coalesce(sum(push_at_risk), 0) FROM instances WHERE push_attempts > 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }
}
