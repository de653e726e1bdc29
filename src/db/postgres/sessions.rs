//! PostgreSQL: portal sessions and the dashboard's figures.

use async_trait::async_trait;

use super::PgStore;
use crate::db::Result;
use crate::db::rows::Cells;
use crate::db::sessions::{self, PortalSession, SessionStore};
use crate::db::stats::{self, StatsStore};
use crate::domain::Instance;

impl PgStore {
    async fn run(
        &self,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.execute(&st, args).await?)
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session(&self, s: &PortalSession) -> Result<()> {
        self.run(
            pg!(sessions::INSERT),
            &[
                &s.id_hash,
                &s.actor_kind.as_str(),
                &s.actor,
                &s.service_account_id,
                &s.token_id,
                &s.role.as_str(),
                &s.csrf,
                &s.ip,
                &s.created_at,
                &s.last_seen_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<PortalSession>> {
        self.one(pg!(sessions::GET), &[&id_hash], sessions::session)
            .await
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        self.run(pg!(sessions::TOUCH), &[&id_hash, &now]).await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        Ok(self.run(pg!(sessions::DELETE), &[&id_hash]).await? > 0)
    }

    async fn prune_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        self.run(pg!(sessions::PRUNE), &[&idle_before, &created_before])
            .await
    }
}

#[async_trait]
impl StatsStore for PgStore {
    async fn count_instances(&self) -> Result<i64> {
        let n = self
            .one(pg!(stats::COUNT_INSTANCES), &[], |r| r.int(0))
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn renewals_per_day(&self, since: i64) -> Result<Vec<(i64, i64)>> {
        self.many(pg!(stats::RENEWALS_PER_DAY), &[&since], |r| {
            Ok((r.int(0)?, r.int(1)?))
        })
        .await
    }

    async fn failing_instances(&self, limit: i64) -> Result<Vec<Instance>> {
        self.many(pg!(&stats::FAILING), &[&limit], crate::db::rows::instance)
            .await
    }
}
