//! PostgreSQL: what the push job needs (claims with `FOR UPDATE SKIP
//! LOCKED` and a lease, outcomes).

use async_trait::async_trait;

use super::PgStore;
use crate::db::rows;
use crate::db::sql;
use crate::db::{PushJob, PushOutcome, PushStore, Result};
use crate::domain::TokenRecord;

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
        let claim = pg!(&format!(
            "UPDATE instances SET lease_owner = ?3, lease_until = ?4 WHERE id = ANY (ARRAY( \
             SELECT i.id FROM instances i \
             WHERE i.push_enabled AND i.push_next_at IS NOT NULL AND i.push_next_at <= ?1 \
             AND {unleased} \
             AND (SELECT {pushable} FROM licenses l WHERE l.lid = i.lid) \
             ORDER BY i.push_next_at LIMIT ?2 FOR UPDATE OF i SKIP LOCKED)) \
             RETURNING {cols}, credentials",
            unleased = sql::UNLEASED,
            pushable = sql::PUSHABLE,
            cols = sql::INSTANCE_COLS,
        ));
        self.many(claim, &[&now, &limit, &owner, &lease_until], rows::push_job)
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
        // Due or not; the same conditions otherwise as a batch claim.
        let claim = pg!(&format!(
            "UPDATE instances SET lease_owner = ?2, lease_until = ?3 WHERE id IN ( \
             SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid \
             WHERE i.lid = ?4 AND i.id = ?5 AND i.push_enabled AND {unleased} AND {pushable} \
             FOR UPDATE OF i SKIP LOCKED) \
             RETURNING {cols}, credentials",
            unleased = sql::UNLEASED,
            pushable = sql::PUSHABLE,
            cols = sql::INSTANCE_COLS,
        ));
        self.one(
            claim,
            &[&now, &owner, &lease_until, &lid, &id],
            rows::push_job,
        )
        .await
    }

    async fn finish_push(&self, id: &str, owner: &str, o: &PushOutcome) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                &tx.prepare_cached(pg!(sql::FINISH_PUSH)).await?,
                &[
                    &id,
                    &owner,
                    &o.push_next_at,
                    &o.push_attempts,
                    &o.push_last_error,
                    &o.push_last_ok_at,
                    &o.push_at_risk,
                    &o.removal_pending,
                    &o.push_pending_jti,
                    &o.token_expires_at,
                ],
            )
            .await?;
        if n > 0 {
            for e in &o.events {
                super::events::insert_event(&tx, e, charter_token::now()).await?;
            }
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>> {
        self.one(pg!(sql::GET_TOKEN), &[&jti], rows::token).await
    }

    async fn count_push_backoff(&self) -> Result<(i64, i64)> {
        let c = self.pool.get().await?;
        let r = c
            .query_one(
                &c.prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE push_at_risk) FROM instances \
                     WHERE push_attempts > 0",
                )
                .await?,
                &[],
            )
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}
