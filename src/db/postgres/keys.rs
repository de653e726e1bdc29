//! PostgreSQL: the signing keys' table. Changes by several replicas at once
//! are serialised by the row locks of their UPDATEs and by the unique
//! indexes (one current key, one next key): the replica that comes second
//! finds nothing to change, or a unique violation, and writes nothing.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{PgStore, access};
use crate::db::keys::{self, KeyStore};
use crate::db::{Result, StoreError};
use crate::domain::{AuditEvent, KeyChange, SigningKeyRecord};

async fn insert(c: &impl GenericClient, k: &SigningKeyRecord) -> Result<()> {
    let st = c.prepare_cached(pg!(keys::INSERT)).await?;
    c.execute(
        &st,
        &[
            &k.kid,
            &k.alg,
            &k.state.as_str(),
            &k.sealed_key,
            &k.public_jwk,
            &k.created_at,
            &k.signs_from,
            &k.activated_at,
            &k.deactivated_at,
            &k.retired_at,
        ],
    )
    .await?;
    Ok(())
}

async fn count(c: &impl GenericClient, sql: &'static str) -> Result<i64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, &[]).await?.try_get(0)?)
}

async fn exec(c: &impl GenericClient, sql: &'static str, args: Params<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, args).await?)
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// The change's statements; `Stale` when its states no longer hold.
async fn apply(c: &impl GenericClient, change: &KeyChange, now: i64) -> Result<()> {
    let stale = || StoreError::Stale("key set");
    match change {
        KeyChange::Initial(_) => {
            if count(c, pg!(keys::COUNT)).await? > 0 {
                return Err(stale());
            }
        }
        KeyChange::AddNext(_) => {
            if count(c, pg!(keys::HAS_NEXT)).await? > 0 {
                return Err(stale());
            }
        }
        KeyChange::Promote { kid } => {
            exec(c, pg!(keys::DEMOTE_CURRENT), &[&now]).await?;
            if exec(c, pg!(keys::PROMOTE), &[&now, kid]).await? == 0 {
                return Err(stale());
            }
        }
        KeyChange::ReplaceCurrent(_) => {
            exec(c, pg!(keys::RETIRE_CURRENT), &[&now]).await?;
        }
        KeyChange::Retire { kid } => {
            if exec(c, pg!(keys::RETIRE_PREVIOUS), &[&now, kid]).await? == 0 {
                return Err(stale());
            }
        }
    }
    for k in keys::inserted(change) {
        insert(c, k).await?;
    }
    Ok(())
}

#[async_trait]
impl KeyStore for PgStore {
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.many(pg!(keys::LIST), &[], keys::key).await
    }

    async fn change_keys(&self, change: &KeyChange, now: i64, audit: &AuditEvent) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        match apply(&tx, change, now).await {
            Ok(()) => {}
            // Another replica changed the key set first (a second current
            // or next key is a unique violation): nothing is written.
            Err(StoreError::Stale(_) | StoreError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn latest_token_exp(&self, kid: &str) -> Result<Option<i64>> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(keys::LATEST_EXP)).await?;
        Ok(c.query_one(&st, &[&kid]).await?.try_get(0)?)
    }
}
