//! The signing keys' table: what both stores run to read and change it
//! (see [`crate::domain::KeyChange`]), written once with `?N` placeholders.

use async_trait::async_trait;

use super::Result;
use super::rows::{Cells, bad_value};
use crate::domain::{AuditEvent, KeyChange, KeyState, SigningKeyRecord};

/// The signing keys, for every replica.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key, retired ones included, newest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Applies `change` at `now` with its audit event in one transaction.
    /// `false` when the states it was computed from no longer hold (another
    /// replica or caller changed the key set first): nothing was written.
    async fn change_keys(&self, change: &KeyChange, now: i64, audit: &AuditEvent) -> Result<bool>;
    /// The latest `exp` of the tokens `kid` signed (`None`: it signed none).
    async fn latest_token_exp(&self, kid: &str) -> Result<Option<i64>>;
}

pub(crate) const LIST: &str = "SELECT kid, alg, state, sealed_key, public_jwk, created_at, \
     signs_from, activated_at, deactivated_at, retired_at FROM signing_keys \
     ORDER BY created_at DESC, kid";

pub(crate) const COUNT: &str = "SELECT count(*) FROM signing_keys";

pub(crate) const HAS_NEXT: &str = "SELECT count(*) FROM signing_keys WHERE state = 'next'";

pub(crate) const INSERT: &str = "INSERT INTO signing_keys (kid, alg, state, sealed_key, \
     public_jwk, created_at, signs_from, activated_at, deactivated_at, retired_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// ?1 now. The current key becomes previous (first, so that the one
/// promoted after it is the only current key).
pub(crate) const DEMOTE_CURRENT: &str = "UPDATE signing_keys SET state = 'previous', \
     deactivated_at = ?1 WHERE state = 'current'";

/// ?1 now, ?2 kid: the next key signs, if it still is next and due.
pub(crate) const PROMOTE: &str = "UPDATE signing_keys SET state = 'current', activated_at = ?1 \
     WHERE kid = ?2 AND state = 'next' AND signs_from <= ?1";

/// ?1 now: the current key is retired at once (its private half erased).
pub(crate) const RETIRE_CURRENT: &str = "UPDATE signing_keys SET state = 'retired', \
     deactivated_at = ?1, retired_at = ?1, sealed_key = '' WHERE state = 'current'";

/// ?1 now, ?2 kid: a previous key is retired (its private half erased).
pub(crate) const RETIRE_PREVIOUS: &str = "UPDATE signing_keys SET state = 'retired', \
     retired_at = ?1, sealed_key = '' WHERE kid = ?2 AND state = 'previous'";

/// ?1 kid (served by the index `tokens_kid_exp`).
pub(crate) const LATEST_EXP: &str = "SELECT max(exp) FROM tokens WHERE kid = ?1";

/// A key row, in the order of [`COLS`].
pub(crate) fn key(r: &impl Cells) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.text(0)?,
        alg: r.text(1)?,
        state: KeyState::parse(&r.text(2)?).ok_or_else(|| bad_value("key state"))?,
        sealed_key: r.text(3)?,
        public_jwk: r.text(4)?,
        created_at: r.int(5)?,
        signs_from: r.int(6)?,
        activated_at: r.opt_int(7)?,
        deactivated_at: r.opt_int(8)?,
        retired_at: r.opt_int(9)?,
    })
}

/// The keys a change inserts.
pub(crate) fn inserted(change: &KeyChange) -> &[SigningKeyRecord] {
    match change {
        KeyChange::Initial(keys) => keys,
        KeyChange::AddNext(k) | KeyChange::ReplaceCurrent(k) => std::slice::from_ref(k),
        KeyChange::Promote { .. } | KeyChange::Retire { .. } => &[],
    }
}
