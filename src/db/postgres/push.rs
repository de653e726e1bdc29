//! PostgreSQL: what the push job needs (claims with `FOR UPDATE SKIP
//! LOCKED` and a lease, outcomes, credentials).

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{INSTANCE_SELECT, PgStore, TOKEN_COLS, instance_row, token_row};
use crate::db::{PUSH_DUE, PushJob, PushStore, Result};
use crate::domain::{Instance, TokenRecord};

fn push_job_row(r: &Row) -> Result<PushJob> {
    Ok(PushJob {
        instance: instance_row(r)?,
        credentials: r.try_get(21)?,
    })
}

#[async_trait]
impl PushStore for PgStore {
    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PushJob>> {
        // The due instances in push order from the partial index, the license
        // checked per row by a scalar subquery (which the planner does not
        // turn into a join), the batch leased by primary key: a claim costs
        // its batch, not the table. Written as a join, it was planned (with
        // or without statistics) as a scan of every due row and a sort, or a
        // scan of the table: quadratic over a run of 10,000 due instances.
        let license_ok = "(l.status = 'active' AND l.expires_at > $1 AND NOT i.removal_pending) \
             OR (l.status = 'revoked' AND i.removal_pending)";
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &c.prepare_cached(&format!(
                    "UPDATE instances SET lease_owner = $3, lease_until = $4 WHERE id = ANY (ARRAY( \
                     SELECT i.id FROM instances i \
                     WHERE i.push_enabled AND i.push_next_at IS NOT NULL AND i.push_next_at <= $1 \
                     AND (i.lease_until IS NULL OR i.lease_until <= $1) \
                     AND (SELECT {license_ok} FROM licenses l WHERE l.lid = i.lid) \
                     ORDER BY i.push_next_at LIMIT $2 FOR UPDATE OF i SKIP LOCKED)) \
                     RETURNING {INSTANCE_SELECT}, credentials"
                ))
                .await?,
                &[&now, &limit, &owner, &lease_until],
            )
            .await?;
        rows.iter().map(push_job_row).collect()
    }

    async fn claim_push(
        &self,
        lid: &str,
        id: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<PushJob>> {
        let due = PUSH_DUE
            .replace(
                "i.push_next_at IS NOT NULL AND i.push_next_at <= {now}",
                "TRUE",
            )
            .replace("{now}", "$1");
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!(
                    "UPDATE instances SET lease_owner = $2, lease_until = $3 WHERE id IN ( \
                     SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid \
                     WHERE i.lid = $4 AND i.id = $5 AND {due} FOR UPDATE OF i SKIP LOCKED) \
                     RETURNING {INSTANCE_SELECT}, credentials"
                ))
                .await?,
                &[&now, &owner, &lease_until, &lid, &id],
            )
            .await?;
        row.as_ref().map(push_job_row).transpose()
    }

    async fn finish_push(&self, i: &Instance, owner: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                &c.prepare_cached("UPDATE instances SET push_next_at = $3, push_attempts = $4, push_last_error = $5, \
                 push_last_ok_at = $6, push_at_risk = $7, removal_pending = $8, push_pending_jti = $9, \
                 token_expires_at = $10, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2").await?,
                &[
                    &i.id, &owner, &i.push_next_at, &i.push_attempts, &i.push_last_error,
                    &i.push_last_ok_at, &i.push_at_risk, &i.removal_pending, &i.push_pending_jti, &i.token_expires_at,
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn mark_removals(&self, lid: &str, now: i64) -> Result<u64> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            &c.prepare_cached("UPDATE instances SET removal_pending = TRUE, push_next_at = $2, push_attempts = 0, \
             push_last_error = NULL WHERE lid = $1 AND push_enabled").await?,
            &[&lid, &now],
        )
        .await?)
    }

    async fn set_credentials(&self, lid: &str, id: &str, sealed: Option<&str>) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            &c.prepare_cached("UPDATE instances SET credentials = $3 WHERE lid = $1 AND id = $2")
                .await?,
            &[&lid, &id, &sealed],
        )
        .await?;
        Ok(())
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>> {
        self.one(
            &format!("SELECT {TOKEN_COLS} FROM tokens WHERE jti = $1"),
            &[&jti],
            token_row,
        )
        .await
    }

    async fn count_push_backoff(&self) -> Result<(i64, i64)> {
        let c = self.pool.get().await?;
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE push_at_risk) FROM instances WHERE push_attempts > 0",
                &[],
            )
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}
