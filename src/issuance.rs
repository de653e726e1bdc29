//! Issuing a token: compute the claims from the license as it is now, sign,
//! and record the token with the instance update in one transaction. Used by
//! the portal's issue endpoint, the renew endpoint and (later) the push job.

use charter_token::{Claims, DAY, Keyring, Usage};

use crate::db::{Issuance, Recorded, Store, StoreError};
use crate::domain::{Account, AuditEvent, Instance, License, TokenReason, TokenRecord, claims_for};

/// How long a retry with the same old token gets the token already issued.
pub const IDEMPOTENCY_WINDOW: i64 = 600;

pub struct Request<'a> {
    pub license: &'a License,
    pub account: &'a Account,
    /// The instance; `bind` says whether it is new.
    pub instance: Instance,
    pub bind: bool,
    pub reason: TokenReason,
    /// The `jti` of the token being renewed.
    pub renewed_from: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug)]
pub enum IssueError {
    Store(StoreError),
    Sign(String),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        IssueError::Store(e)
    }
}

/// Issues and records a token; returns it with its claims.
pub async fn issue(
    store: &dyn Store,
    keys: &Keyring,
    issuer: &str,
    req: Request<'_>,
    now: i64,
) -> Result<(String, Claims), IssueError> {
    issue_audited(store, keys, issuer, req, now, None).await
}

/// [`issue`], writing `audit` in the same transaction as the token. Its
/// target becomes the new token (`token`, `jti`); an idempotent retry
/// records nothing new and writes no event.
pub async fn issue_audited(
    store: &dyn Store,
    keys: &Keyring,
    issuer: &str,
    req: Request<'_>,
    now: i64,
    audit: Option<AuditEvent>,
) -> Result<(String, Claims), IssueError> {
    let jti = uuid::Uuid::now_v7().to_string();
    let claims = claims_for(
        req.license,
        req.account,
        &req.instance.url,
        issuer,
        jti,
        now,
    );
    let token = keys
        .sign(&claims)
        .map_err(|e| IssueError::Sign(e.to_string()))?;
    let mut instance = req.instance;
    instance.last_jti = Some(claims.jti.clone());
    instance.last_issued_at = Some(now);
    let next_renewal = now.saturating_add(claims.update_days.saturating_mul(DAY));
    instance.next_renewal_at = Some(next_renewal);
    if req.reason == TokenReason::Push {
        // Delivered or not, this is the token the next attempt redelivers;
        // the push job records the outcome and the next due time.
        instance.push_pending_jti = Some(claims.jti.clone());
    } else {
        instance.token_expires_at = Some(claims.exp);
        if instance.push_enabled && !instance.removal_pending {
            instance.push_next_at = Some(next_renewal);
        }
    }
    if let Some(usage) = req.usage {
        instance.usage = Some(usage);
        instance.usage_reported_at = Some(now);
    }
    instance.updated_at = now;
    let record = TokenRecord {
        jti: claims.jti.clone(),
        lid: claims.lid.clone(),
        instance_id: instance.id.clone(),
        kid: keys.signing_key().kid().to_string(),
        iat: claims.iat,
        nbf: claims.nbf,
        exp: claims.exp,
        reason: req.reason,
        renewed_from: req.renewed_from.clone(),
        token: token.clone(),
    };
    let issuance = Issuance {
        token: record,
        instance,
        bind: req.bind,
        max_instances: req.license.max_instances,
        idempotent_since: req.renewed_from.as_ref().map(|_| now - IDEMPOTENCY_WINDOW),
    };
    let audit = audit.map(|mut a| {
        a.target_type = "token".into();
        a.target_id = claims.jti.clone();
        a.detail = Some(serde_json::json!({
            "lid": claims.lid,
            "instance": claims.sub,
            "reason": req.reason.as_str(),
            "renewed_from": req.renewed_from,
        }));
        a
    });
    match store
        .record_issuance_audited(&issuance, audit.as_ref())
        .await?
    {
        Recorded::New => Ok((token, claims)),
        Recorded::Existing(t) => {
            // We signed it; its claims decode without another verification.
            let (_, claims) = charter_token::insecure_decode(&t.token)
                .map_err(|e| IssueError::Sign(format!("stored token unreadable: {e}")))?;
            Ok((t.token, claims))
        }
    }
}
