//! Renewal: [`LicenseManager::renew_now`] asks the issuer's
//! `POST /api/tokens/renew` for a new token, and
//! [`LicenseManager::spawn_background`] does so when the token is due
//! (`iat + update_days`), backing off exponentially with jitter on failure.
//! A failed renewal never drops the token held; its error shows in the state.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use charter_token::rules::{renewal_due_at, subject_matches};
use charter_token::{ErrorBody, RenewRequest, TokenResponse};
use reqwest::header::AUTHORIZATION;
use tokio::task::JoinHandle;

use crate::manager::{Check, InstallError, LicenseManager};
use crate::state::{RenewalError, Source, StateInfo};

/// The largest issuer answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why a renewal did not produce a new token. The held token is kept.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no license to renew")]
    NoToken,
    #[error("no issuer is configured")]
    NoIssuer,
    #[error("issuer unreachable: {0}")]
    Unreachable(String),
    #[error("issuer refused renewal ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("issuer answered with an unusable token: {0}")]
    BadAnswer(String),
    /// The license is on the issuer's revocation list; nothing was asked.
    #[error("license {lid} has been revoked by the issuer")]
    Revoked { lid: String },
}

impl RenewError {
    /// The issuer's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RenewError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl LicenseManager {
    /// Asks the issuer for a new token now, with the held one as credential
    /// and the host's usage as report; installs the answer once verified.
    pub async fn renew_now(&self) -> Result<StateInfo, RenewError> {
        let _r = self.inner.renewing.lock().await;
        let result = self.try_renew().await;
        let now = self.inner.clock.now();
        self.set_held(|h| match &result {
            Ok(()) => {
                h.renewal.last_success_at = Some(now);
                h.renewal.last_error = None;
                h.renewal.failures = 0;
                h.renewal.next_attempt_at = None;
            }
            Err(RenewError::NoToken | RenewError::NoIssuer | RenewError::Revoked { .. }) => {}
            Err(e) => {
                h.renewal.failures = h.renewal.failures.saturating_add(1);
                h.renewal.last_error = Some(RenewalError {
                    at: now,
                    status: e.status(),
                    message: match e {
                        RenewError::Refused { message, .. } => message.clone(),
                        other => other.to_string(),
                    },
                });
            }
        });
        if let Some(e) = result.as_ref().err().filter(|e| {
            !matches!(
                e,
                RenewError::NoToken | RenewError::NoIssuer | RenewError::Revoked { .. }
            )
        }) {
            tracing::warn!(error = %e, "license renewal failed; keeping the current token");
        }
        let info = self.publish();
        result.map(|()| info)
    }

    async fn try_renew(&self) -> Result<(), RenewError> {
        let issuer = self.inner.issuer.clone().ok_or(RenewError::NoIssuer)?;
        let token = self.token().ok_or(RenewError::NoToken)?;
        if let Some(lid) = self.held_revoked_lid() {
            return Err(RenewError::Revoked { lid });
        }
        let url = format!("{}/api/tokens/renew", issuer.trim_end_matches('/'));
        let body = RenewRequest {
            usage: Some(self.usage()),
        };
        let mut resp = self
            .inner
            .http
            .post(&url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| RenewError::Unreachable(e.to_string()))?;
        let status = resp.status();
        // A 429 or 503 may say when to come back (seconds; capped at a day).
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(86_400);
        self.inner
            .retry_after
            .store(retry_after, std::sync::atomic::Ordering::SeqCst);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| RenewError::Unreachable(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(RenewError::BadAnswer("answer too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                });
            return Err(RenewError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        let answer: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| RenewError::BadAnswer(format!("not a token answer: {e}")))?;
        self.install_inner(&answer.token, Source::Renewed, |_| Ok(()), Some(&token))
            .await
            .or_else(|e| match e {
                // A license installed meanwhile wins; nothing to report.
                InstallError::Superseded => Ok(self.state_info()),
                other => Err(other),
            })
            .map_err(|e| match e {
                InstallError::Store(s) => RenewError::BadAnswer(format!("could not store: {s}")),
                other => RenewError::BadAnswer(other.to_string()),
            })?;
        Ok(())
    }

    /// When the held token should be renewed: `iat + update_days`, for a
    /// verified token naming this instance (and its product and issuer, when
    /// configured); `None` when there is nothing to renew (no issuer, no such
    /// token, a revoked license, or the built-in license, which ships with
    /// the product).
    pub fn renewal_due_at(&self) -> Option<i64> {
        self.inner.issuer.as_ref()?;
        if self.held_revoked_lid().is_some() {
            return None;
        }
        let held = self.held();
        match (&held.check, held.source) {
            (_, Some(Source::BuiltIn)) => None,
            (Check::Verified(c), _)
                if subject_matches(&c.sub, self.root_url())
                    && self.inner.expect.mismatch(c).is_none() =>
            {
                Some(renewal_due_at(c))
            }
            _ => None,
        }
    }

    /// The retry delay after `failures` failures in a row: doubling from
    /// `backoff_base`, capped at `backoff_max`, then scaled by a random
    /// factor in [0.5, 1] so a fleet does not retry in step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let cfg = &self.inner.renewal_cfg;
        let exp = failures.saturating_sub(1).min(30);
        let full = cfg
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(cfg.backoff_max);
        let random = RandomState::new().hash_one(std::time::Instant::now());
        let factor = 0.5 + (random % 1_000) as f64 / 2_000.0;
        full.mul_f64(factor)
    }

    /// Spawns the background task: re-checks the token every
    /// `check_interval`, renews when due, retries with backoff. Abort the
    /// handle to stop it.
    pub fn spawn_background(&self) -> JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move { manager.background().await })
    }

    async fn background(self) {
        let check = self.inner.renewal_cfg.check_interval;
        loop {
            self.tick().await;
            let due = self.renewal_due_at();
            // Judged at the effective now, as the token is: after a clock
            // that ran ahead, renewing at once brings the fresh `iat` that
            // resets the rollback guard.
            let now = self.effective_now();
            let wait = match due {
                Some(due) if now >= due => {
                    match self.renew_now().await {
                        // At most one renewal per check interval, even if the
                        // new token is due at once (update_days = 0).
                        Ok(_) => check,
                        Err(_) => {
                            let failures = self.held().renewal.failures;
                            // Never sooner than the issuer asked (its rate limit).
                            let asked = self
                                .inner
                                .retry_after
                                .swap(0, std::sync::atomic::Ordering::SeqCst);
                            let delay = self.backoff(failures).max(Duration::from_secs(asked));
                            let next = now + delay.as_secs() as i64;
                            self.set_held(|h| h.renewal.next_attempt_at = Some(next));
                            self.publish();
                            delay
                        }
                    }
                }
                Some(due) => {
                    let until_due = u64::try_from(due - now).unwrap_or(0);
                    check.min(Duration::from_secs(until_due.max(1)))
                }
                None => check,
            };
            // Wake for the next revocation poll too, when there is one to make,
            // and for the next scheduled key refresh.
            let wait = if self.inner.revocations_url.is_some() {
                wait.min(self.inner.revocations_interval.max(Duration::from_secs(1)))
            } else {
                wait
            };
            let wait = if self.inner.jwks_url.is_some() || self.inner.jwks_file.is_some() {
                wait.min(self.inner.jwks_refresh_interval.max(Duration::from_secs(1)))
            } else {
                wait
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
    }
}
