//! SQLite: portal sessions and the dashboard's figures.

use async_trait::async_trait;
use rusqlite::params;

use super::{Cached, SqliteStore, all, one};
use crate::db::Result;
use crate::db::sessions::{self, PortalSession, SessionStore};
use crate::db::stats::{self, StatsStore};
use crate::domain::Instance;

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, s: &PortalSession) -> Result<()> {
        let s = s.clone();
        self.call(move |c| {
            c.exec(
                sessions::INSERT,
                params![
                    s.id_hash,
                    s.actor_kind.as_str(),
                    s.actor,
                    s.service_account_id,
                    s.token_id,
                    s.role.as_str(),
                    s.csrf,
                    s.ip,
                    s.created_at,
                    s.last_seen_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<PortalSession>> {
        let id_hash = id_hash.to_string();
        self.read(move |c| one(c, sessions::GET, params![id_hash], |r| sessions::session(r)))
            .await
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        let id_hash = id_hash.to_string();
        self.call(move |c| {
            c.exec(sessions::TOUCH, params![id_hash, now])?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let id_hash = id_hash.to_string();
        self.call(move |c| Ok(c.exec(sessions::DELETE, params![id_hash])? > 0))
            .await
    }

    async fn prune_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        self.call(move |c| {
            Ok(c.exec(sessions::PRUNE, params![idle_before, created_before])? as u64)
        })
        .await
    }
}

#[async_trait]
impl StatsStore for SqliteStore {
    async fn count_instances(&self) -> Result<i64> {
        self.read(|c| Ok(c.row(stats::COUNT_INSTANCES, [], |r| r.get::<_, i64>(0))?))
            .await
    }

    async fn renewals_per_day(&self, since: i64) -> Result<Vec<(i64, i64)>> {
        self.read(move |c| {
            all(c, stats::RENEWALS_PER_DAY, params![since], |r| {
                use crate::db::rows::Cells;
                Ok((r.int(0)?, r.int(1)?))
            })
        })
        .await
    }

    async fn failing_instances(&self, limit: i64) -> Result<Vec<Instance>> {
        self.read(move |c| {
            all(c, &stats::FAILING, params![limit], |r| {
                crate::db::rows::instance(r)
            })
        })
        .await
    }
}
