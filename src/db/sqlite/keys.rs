//! SQLite: the signing keys' table.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, access, all, one};
use crate::db::keys::{self, KeyStore};
use crate::db::{Result, StoreError};
use crate::domain::{AuditEvent, KeyChange, SigningKeyRecord};

fn insert(c: &Connection, k: &SigningKeyRecord) -> Result<()> {
    c.exec(
        keys::INSERT,
        params![
            k.kid,
            k.alg,
            k.state.as_str(),
            k.sealed_key,
            k.public_jwk,
            k.created_at,
            k.signs_from,
            k.activated_at,
            k.deactivated_at,
            k.retired_at
        ],
    )?;
    Ok(())
}

/// The change's statements; `Stale` (rolled back) when its states no longer hold.
fn apply(c: &Connection, change: &KeyChange, now: i64) -> Result<()> {
    let stale = || StoreError::Stale("key set");
    match change {
        KeyChange::Initial(_) => {
            if c.row(keys::COUNT, [], |r| r.get::<_, i64>(0))? > 0 {
                return Err(stale());
            }
        }
        KeyChange::AddNext(_) => {
            if c.row(keys::HAS_NEXT, [], |r| r.get::<_, i64>(0))? > 0 {
                return Err(stale());
            }
        }
        KeyChange::Promote { kid } => {
            c.exec(keys::DEMOTE_CURRENT, params![now])?;
            if c.exec(keys::PROMOTE, params![now, kid])? == 0 {
                return Err(stale());
            }
        }
        KeyChange::ReplaceCurrent(_) => {
            c.exec(keys::RETIRE_CURRENT, params![now])?;
        }
        KeyChange::Retire { kid } => {
            if c.exec(keys::RETIRE_PREVIOUS, params![now, kid])? == 0 {
                return Err(stale());
            }
        }
    }
    for k in keys::inserted(change) {
        insert(c, k)?;
    }
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.call(|c| all(c, keys::LIST, [], |r| keys::key(r)))
            .await
    }

    async fn change_keys(&self, change: &KeyChange, now: i64, audit: &AuditEvent) -> Result<bool> {
        let (change, audit) = (change.clone(), audit.clone());
        let done = self
            .write(move |c| {
                apply(c, &change, now)?;
                access::insert_audit(c, &audit)
            })
            .await;
        match done {
            Ok(()) => Ok(true),
            Err(StoreError::Stale(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn latest_token_exp(&self, kid: &str) -> Result<Option<i64>> {
        let kid = kid.to_string();
        self.call(move |c| {
            Ok(one(c, keys::LATEST_EXP, [kid], |r| {
                r.get::<_, Option<i64>>(0).map_err(Into::into)
            })?
            .flatten())
        })
        .await
    }
}
