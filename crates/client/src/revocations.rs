//! Revocations: the issuer's `GET /api/revocations` answers
//! `{"token": "<JWS>", "revoked": [lid, ...]}`. Only the JWS counts: it is
//! signed with the keys that sign license tokens, with its own header `typ`
//! ([`charter_token::REVOCATIONS_TYP`], so neither passes for the other),
//! and its payload is `{"iss", "iat", "exp", "revoked": [lid, ...]}`.
//!
//! [`LicenseManager::tick`] polls it every `revocations_interval` (at start,
//! then on the ticks that find it due). A list is taken only when its
//! signature and `typ` check against the key set (refreshed from the JWKS
//! when its `kid` is unknown), it has not expired, it was not issued in the
//! future (beyond [`NBF_LEEWAY_SECS`]), and it is not older than the list
//! held (an older list that withdraws nothing from the held one is simply
//! not needed: replicas of the issuer sign a few seconds apart); otherwise
//! it is ignored and the last good list stays in force. The last good list
//! is kept in the [`crate::TokenStore`] (`license.revoked` beside the token
//! for [`crate::FileStore`]) and read back at start, expired or not, so a
//! restart without the issuer still remembers revocations; a recorded list
//! that does not verify (damaged, forged, or signed by a key no longer
//! known) is ignored, never kept, and a recorded list's `iat` counts for
//! staleness no further than [`NBF_LEEWAY_SECS`] past now, so no list can
//! make every later one look older. A verified list's `iat` is a time the
//! issuer vouches for: the clock rollback guard never judges before it.
//!
//! A held token whose `lid` is on the list is not valid (status 3 Invalid,
//! reason and [`crate::Warning::LicenseRevoked`]); it is not renewed, and a
//! token for a revoked license is refused by install
//! ([`crate::InstallError::Revoked`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use charter_token::{MAX_DOCUMENT_LEN, REVOCATIONS_TYP, VerifyError};
use serde::Deserialize;

use crate::manager::{Check, Credit, LicenseManager, NBF_LEEWAY_SECS};
use crate::state::StateInfo;

/// The largest answer read: the JWS and the plain array beside it.
const MAX_ANSWER_BYTES: usize = 2 * MAX_DOCUMENT_LEN + 4096;

/// The signed payload of the issuer's list.
#[derive(Debug, Clone, Deserialize)]
struct Payload {
    iat: i64,
    exp: i64,
    revoked: Vec<String>,
}

/// The issuer's answer; the plain `revoked` array beside the JWS is ignored.
#[derive(Deserialize)]
struct Answer {
    token: String,
}

/// The revocation list in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevocationList {
    pub(crate) iat: i64,
    pub(crate) exp: i64,
    pub(crate) lids: HashSet<String>,
}

impl From<Payload> for RevocationList {
    fn from(p: Payload) -> Self {
        RevocationList {
            iat: p.iat,
            exp: p.exp,
            lids: p.revoked.into_iter().collect(),
        }
    }
}

/// Why a revocation list was not taken. The list held stays in force.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("no issuer is configured")]
    NoIssuer,
    #[error("issuer unreachable: {0}")]
    Unreachable(String),
    #[error("issuer answered {status} for the revocation list")]
    Refused { status: u16 },
    #[error("issuer answered with an unusable revocation list: {0}")]
    BadAnswer(String),
    /// Unsigned, badly signed, signed by an unknown key, or malformed.
    #[error("revocation list refused: {0}")]
    BadSignature(VerifyError),
    #[error("revocation list expired at {}", crate::fmt_time(*.exp))]
    Expired { exp: i64 },
    #[error("revocation list issued at {} is in the future", crate::fmt_time(*.iat))]
    FromTheFuture { iat: i64 },
    #[error(
        "revocation list issued at {} is older than the one held ({})",
        crate::fmt_time(*.iat),
        crate::fmt_time(*.held)
    )]
    Stale { iat: i64, held: i64 },
}

impl LicenseManager {
    /// Fetches the issuer's revocation list now, verifies it and, when it is
    /// good, takes it, records it in the store and publishes the new state.
    pub async fn refresh_revocations(&self) -> Result<StateInfo, RevocationError> {
        let url = self
            .inner
            .revocations_url
            .clone()
            .ok_or(RevocationError::NoIssuer)?;
        let _p = self.inner.revocations_poll.lock().await;
        let jws = self.fetch_revocations(&url).await?;
        let list: RevocationList = self
            .verify_document::<Payload>(&jws, REVOCATIONS_TYP)
            .await
            .map_err(RevocationError::BadSignature)?
            .into();
        let now = self.judging_time(list.iat);
        if now >= list.exp {
            return Err(RevocationError::Expired { exp: list.exp });
        }
        if list.iat > now.saturating_add(NBF_LEEWAY_SECS) {
            return Err(RevocationError::FromTheFuture { iat: list.iat });
        }
        let mut list = list;
        if let Some(held) = self.revocation_list()
            && list.iat < held.iat
        {
            if !held.lids.is_subset(&list.lids) {
                return Err(RevocationError::Stale {
                    iat: list.iat,
                    held: held.iat,
                });
            }
            // Older, but it withdraws nothing (another issuer replica's list,
            // signed a little earlier): its revocations count, the held
            // list's time stays the staleness floor.
            if held.lids == list.lids {
                return Ok(self.publish());
            }
            list.iat = held.iat;
        }
        let iat = list.iat;
        self.take_revocations(list);
        self.credit_issuer_time(iat, Credit::Fresh);
        let owned = jws.clone();
        if let Err(e) = self.blocking(move |s| s.save_revocations(&owned)).await {
            tracing::warn!(error = %e, "could not record the revocation list");
        }
        Ok(self.publish())
    }

    /// The license ids on the list in force, sorted.
    pub fn revoked_licenses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .revocation_list()
            .map(|l| l.lids.iter().cloned().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Whether license `lid` is on the list in force.
    pub fn is_revoked(&self, lid: &str) -> bool {
        self.revocation_list().is_some_and(|l| l.lids.contains(lid))
    }

    /// When the list in force was issued (`iat`), if any is held.
    pub fn revocations_issued_at(&self) -> Option<i64> {
        self.revocation_list().map(|l| l.iat)
    }

    pub(crate) fn revocation_list(&self) -> Option<Arc<RevocationList>> {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The `lid` of the held verified token when it is revoked.
    pub(crate) fn held_revoked_lid(&self) -> Option<String> {
        let list = self.revocation_list()?;
        match &self.held().check {
            Check::Verified(c) if list.lids.contains(&c.lid) => Some(c.lid.clone()),
            _ => None,
        }
    }

    fn take_revocations(&self, list: RevocationList) {
        let before = self.held_revoked_lid();
        let count = list.lids.len();
        *self
            .inner
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(list));
        tracing::debug!(revoked = count, "revocation list taken");
        if let Some(lid) = self.held_revoked_lid()
            && before.is_none()
        {
            tracing::warn!(lid = %lid, "the license held has been revoked by the issuer");
        }
    }

    /// Reads back the last good list at start. Its expiry does not matter
    /// here (it only stops the issuer's old answers from being replayed).
    /// Only a list that verifies now is taken: one that does not (damaged,
    /// forged, or its key is no longer known and the JWKS cannot supply it)
    /// is ignored until the next poll. Even so, its `iat` counts for
    /// staleness no further than [`NBF_LEEWAY_SECS`] past now, so no list
    /// can make every later one look older; as a verified time for the
    /// clock rollback guard, see [`crate::manager`]'s `Credit::Restored`.
    pub(crate) async fn restore_revocations(&self) {
        let jws = match self.blocking(|s| s.load_revocations()).await {
            Ok(Some(jws)) => jws,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the recorded revocation list");
                return;
            }
        };
        let payload = match self.verify_document::<Payload>(&jws, REVOCATIONS_TYP).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the recorded revocation list: it does not verify");
                return;
            }
        };
        let mut list = RevocationList::from(payload);
        let iat = list.iat;
        list.iat = iat.min(self.effective_now().saturating_add(NBF_LEEWAY_SECS));
        if self
            .revocation_list()
            .is_some_and(|held| held.iat > list.iat)
        {
            return;
        }
        self.take_revocations(list);
        self.credit_issuer_time(iat, Credit::Restored);
    }

    /// Polls the list when it is due (at start, then every
    /// `revocations_interval`; sooner after a failure). Skipped while
    /// another poll runs.
    pub(crate) async fn poll_revocations_if_due(&self) {
        if self.inner.revocations_url.is_none() {
            return;
        }
        let Ok(mut next) = self.inner.revocations_next.try_lock() else {
            return;
        };
        if next.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let interval = self.inner.revocations_interval;
        let delay = match self.refresh_revocations().await {
            Ok(_) => interval,
            Err(e) => {
                tracing::warn!(error = %e, "revocation list not taken; keeping the last good one");
                interval.min(self.inner.renewal_cfg.backoff_base)
            }
        };
        *next = Some(Instant::now() + delay);
    }

    async fn fetch_revocations(&self, url: &str) -> Result<String, RevocationError> {
        let mut resp = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| RevocationError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(RevocationError::Refused {
                status: resp.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| RevocationError::Unreachable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(RevocationError::BadAnswer(format!(
                    "larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| RevocationError::BadAnswer(format!("not a revocation answer: {e}")))?;
        Ok(answer.token)
    }
}
