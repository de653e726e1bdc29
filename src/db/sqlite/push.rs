//! SQLite: what the push job needs (claims, outcomes, tokens).

use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, all, one};
use crate::db::{PushJob, PushOutcome, PushStore, Result, rows, sql};
use crate::domain::TokenRecord;

/// Leases one instance and reads it back with its credentials.
static LEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE instances SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 \
         RETURNING {}, credentials",
        sql::INSTANCE_COLS
    )
});

/// The instances due for a push, oldest first (?1 now, ?2 limit).
/// `i.push_enabled = 1` and the `push_next_at` bounds are spelled as the
/// partial index `instances_push_due` says, so SQLite walks it in order and
/// stops at the batch; with `i.push_enabled` alone it scanned and sorted the
/// whole table for every batch (quadratic over a run).
static DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid \
         WHERE i.push_enabled = 1 AND i.push_next_at IS NOT NULL AND i.push_next_at <= ?1 \
         AND {} AND {} ORDER BY i.push_next_at LIMIT ?2",
        sql::UNLEASED,
        sql::PUSHABLE
    )
});

/// One instance that may be pushed now, due or not (?1 now, ?2 lid, ?3 id).
static PUSHABLE_NOW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT i.id FROM instances i JOIN licenses l ON l.lid = i.lid \
         WHERE i.lid = ?2 AND i.id = ?3 AND i.push_enabled AND {} AND {}",
        sql::UNLEASED,
        sql::PUSHABLE
    )
});

/// Leases the instances `ids` (found in the same transaction) to `owner`.
/// The lease columns are not part of the instance a client sees, so taking
/// a lease leaves its `version` alone.
fn lease(c: &Connection, ids: &[String], owner: &str, lease_until: i64) -> Result<Vec<PushJob>> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(job) = one(c, &LEASE, params![id, owner, lease_until], |r| {
            rows::push_job(r)
        })? {
            jobs.push(job);
        }
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
        self.write(move |c| {
            let ids: Vec<String> = all(c, &DUE, params![now, limit], |r| {
                r.get(0).map_err(Into::into)
            })?;
            lease(c, &ids, &owner, lease_until)
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
        self.write(move |c| {
            let found: Option<String> = one(c, &PUSHABLE_NOW, params![now, lid, id], |r| {
                r.get(0).map_err(Into::into)
            })?;
            let jobs = lease(c, found.as_slice(), &owner, lease_until)?;
            Ok(jobs.into_iter().next())
        })
        .await
    }

    async fn finish_push(&self, id: &str, owner: &str, outcome: &PushOutcome) -> Result<bool> {
        let (id, owner, o) = (id.to_string(), owner.to_string(), outcome.clone());
        self.write(move |c| {
            let done = c.exec(
                sql::FINISH_PUSH,
                params![
                    id,
                    owner,
                    o.push_next_at,
                    o.push_attempts,
                    o.push_last_error,
                    o.push_last_ok_at,
                    o.push_at_risk,
                    o.removal_pending,
                    o.push_pending_jti,
                    o.token_expires_at
                ],
            )? > 0;
            if done {
                for e in &o.events {
                    super::events::insert_event(c, e, charter_token::now())?;
                }
            }
            Ok(done)
        })
        .await
    }

    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>> {
        let jti = jti.to_string();
        self.read(move |c| one(c, sql::GET_TOKEN, [jti], |r| rows::token(r)))
            .await
    }

    async fn count_push_backoff(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            Ok(c.row(
                "SELECT count(*), coalesce(sum(push_at_risk), 0) FROM instances WHERE push_attempts > 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }
}
