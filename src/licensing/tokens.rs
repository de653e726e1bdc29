//! Tokens: issuing one for an instance (the portal, the push job) and
//! renewing one an instance presents. Every token is recorded with the
//! instance columns it changes and its audit event in one store write.

use std::net::IpAddr;

use charter_token::{Claims, DAY, Usage, VerifyError, now};
use serde_json::json;

use super::{Actor, Error, Licensing, Result};
use crate::db::{Issuance, Recipient, Recorded, StoreError};
use crate::domain::{
    Account, ActorKind, Dialect, License, LicenseStatus, RenewRefusal, TokenReason, TokenRecord,
    check_renewable, claims_for, rfc3339,
};

/// How long a retry with the same old token gets the token already issued.
pub const IDEMPOTENCY_WINDOW: i64 = 600;

/// How far in the future a presented token's `nbf` may be (clock skew)
/// for it to renew.
pub const NBF_LEEWAY: i64 = 60;

/// A signed token with its claims.
pub type Signed = (String, Claims);

/// What to issue: for which license, account and instance, and why.
pub(crate) struct Request<'a> {
    pub license: &'a License,
    pub account: &'a Account,
    /// The instance's root URL (the token's `sub`).
    pub url: &'a str,
    pub to: Recipient,
    pub reason: TokenReason,
    /// The `jti` of the token being renewed.
    pub renewed_from: Option<String>,
    pub usage: Option<Usage>,
}

/// Signs a token for the request and records it with `audit` (whose target
/// becomes the token); a retry within the idempotency window gets the token
/// already recorded, and writes nothing.
pub(crate) async fn issue(
    ctx: &Licensing,
    req: Request<'_>,
    mut audit: crate::domain::AuditEvent,
    t: i64,
) -> Result<Signed, StoreOrSign> {
    let jti = uuid::Uuid::now_v7().to_string();
    let claims = claims_for(
        req.license,
        req.account,
        req.url,
        &ctx.config.public_url,
        jti,
        t,
    );
    let keys = ctx.keys.get();
    let token = keys
        .sign(&claims)
        .map_err(|e| StoreOrSign::Sign(e.to_string()))?;
    let record = TokenRecord {
        jti: claims.jti.clone(),
        lid: claims.lid.clone(),
        instance_id: match &req.to {
            Recipient::Bind(i) => i.id.clone(),
            Recipient::Bound { id } => id.clone(),
        },
        kid: keys.signing_key().kid().to_string(),
        iat: claims.iat,
        nbf: claims.nbf,
        exp: claims.exp,
        reason: req.reason,
        renewed_from: req.renewed_from.clone(),
        token: token.clone(),
    };
    let next_renewal_at = t.saturating_add(claims.update_days.saturating_mul(DAY));
    let to = match req.to {
        Recipient::Bind(mut i) => {
            // A new instance starts with this token.
            i.last_jti = Some(claims.jti.clone());
            i.last_issued_at = Some(t);
            i.next_renewal_at = Some(next_renewal_at);
            i.token_expires_at = Some(claims.exp);
            Recipient::Bind(i)
        }
        bound => bound,
    };
    audit.target_type = "token".into();
    audit.target_id = claims.jti.clone();
    let mut detail = json!({
        "lid": claims.lid,
        "instance": claims.sub,
        "reason": req.reason.as_str(),
        "renewed_from": req.renewed_from,
    });
    if let (Some(extra), Some(map)) = (audit.detail.take(), detail.as_object_mut())
        && let Some(extra) = extra.as_object()
    {
        map.extend(extra.clone());
    }
    audit.detail = Some(detail);
    if let Recipient::Bind(i) = &to {
        audit.events.push(super::events::instance_bound(i));
    }
    // `token.renewed` only while an endpoint subscribes (as this replica
    // last saw: within a few seconds); `token.issued` always.
    if req.reason == TokenReason::Issue || ctx.deliverer.renewals_wanted(&*ctx.store).await {
        audit.events.push(super::events::token(&record, req.url));
    }
    let issuance = Issuance {
        token: record,
        to,
        next_renewal_at,
        usage: req.usage,
        idempotent_since: req.renewed_from.as_ref().map(|_| t - IDEMPOTENCY_WINDOW),
    };
    match ctx.store.record_issuance(&issuance, &audit).await {
        Ok(Recorded::New) => Ok((token, claims)),
        Ok(Recorded::Existing(t)) => {
            // We signed it; its claims decode without another verification.
            let (_, claims) = charter_token::insecure_decode(&t.token)
                .map_err(|e| StoreOrSign::Sign(format!("stored token unreadable: {e}")))?;
            Ok((t.token, claims))
        }
        Err(e) => Err(StoreOrSign::Store(e)),
    }
}

/// Why [`issue`] failed: the store refused or failed, or signing failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreOrSign {
    #[error(transparent)]
    Store(StoreError),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

impl From<StoreOrSign> for Error {
    fn from(e: StoreOrSign) -> Self {
        match e {
            StoreOrSign::Store(e) => e.into(),
            StoreOrSign::Sign(m) => Error::Sign(m),
        }
    }
}

/// Issues a token for the instance at `url` through the portal, binding it
/// if there is room.
pub async fn issue_for(ctx: &Licensing, actor: &Actor, lid: &str, url: &str) -> Result<Signed> {
    let url = super::instances::parse_url("instance", url)?;
    // License, instance and account in one store call.
    let cx = ctx
        .store
        .issuance_context(lid, url.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(format!("license {lid} not found")))?;
    let t = now();
    check_renewable(&cx.license, t).map_err(|r| Error::Conflict(r.to_string()))?;
    let account = cx
        .account
        .ok_or_else(|| Error::NotFound(format!("account {} not found", cx.license.account_id)))?;
    let to = match cx.instance {
        Some(i) => Recipient::Bound { id: i.id },
        None => Recipient::Bind(Box::new(super::instances::new_instance(
            lid,
            &url,
            Dialect::Grafana,
            false,
            t,
        ))),
    };
    let req = Request {
        license: &cx.license,
        account: &account,
        url: url.as_str(),
        to,
        reason: TokenReason::Issue,
        renewed_from: None,
        usage: None,
    };
    let signed = issue(ctx, req, actor.event("token.issue", "token", ""), t)
        .await
        .map_err(|e| match e {
            StoreOrSign::Store(StoreError::NotActive { lid, status }) => {
                Error::Conflict(format!("license {lid} is {status}"))
            }
            e => e.into(),
        })?;
    ctx.metrics.token_issued("issue");
    Ok(signed)
}

/// Why a renewal was refused; [`RenewError::reason`] labels the metric.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("too many renewals {what}; retry in {retry_after} s")]
    RateLimited {
        what: &'static str,
        retry_after: u64,
    },
    #[error("missing bearer license token")]
    NoToken,
    #[error("{0}")]
    TooLarge(String),
    /// No usable token: unsigned, tampered, an unknown key, expired beyond
    /// the grace.
    #[error("{message}")]
    Unauthorized {
        reason: &'static str,
        message: String,
    },
    /// The license may not renew (suspended, revoked, expired, gone).
    #[error("{message}")]
    Forbidden {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotBound(String),
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("{0}")]
    Failed(Error),
}

impl RenewError {
    /// The label of `charter_renewals_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RenewError::RateLimited { .. } => "rate_limited",
            RenewError::NoToken => "no_token",
            RenewError::TooLarge(_) => "bad_token",
            RenewError::Unauthorized { reason, .. } | RenewError::Forbidden { reason, .. } => {
                reason
            }
            RenewError::NotBound(_) => "not_bound",
            RenewError::BadRequest { .. } => "bad_request",
            RenewError::Failed(Error::Store(StoreError::Unavailable(_))) => "unavailable",
            RenewError::Failed(_) => "error",
        }
    }
}

fn refused(r: RenewRefusal) -> RenewError {
    let reason = match r {
        RenewRefusal::Suspended(_) => "suspended",
        RenewRefusal::Revoked(_) => "revoked",
        RenewRefusal::Expired { .. } => "license_expired",
    };
    RenewError::Forbidden {
        reason,
        message: r.to_string(),
    }
}

/// A usage report is counts by name: at most 100 of them, names of 1-64
/// printable characters, no negative counts.
fn check_usage(usage: &Usage) -> Result<(), RenewError> {
    let bad = |field: String, message: String| RenewError::BadRequest { field, message };
    if usage.len() > 100 {
        return Err(bad("usage".into(), "at most 100 entries".into()));
    }
    for (name, n) in usage {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(bad(
                "usage".into(),
                format!("{name:?}: names must be 1-64 printable characters"),
            ));
        }
        if *n < 0 {
            return Err(bad(format!("usage.{name}"), "must not be negative".into()));
        }
    }
    Ok(())
}

/// Renews the token an instance presents: the rate limits (per address
/// before any signature work, per license once the token is proven), the
/// signature, the grace, the license and the binding, then a new token
/// recorded with the usage report.
pub async fn renew(
    ctx: &Licensing,
    ip: Option<IpAddr>,
    token: Option<&str>,
    body: &[u8],
) -> Result<Signed, RenewError> {
    let addr = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Err(wait) = ctx.renew_limiter.by_address.hit(&addr) {
        return Err(RenewError::RateLimited {
            what: "from this address",
            retry_after: wait,
        });
    }
    let token = token.ok_or(RenewError::NoToken)?;
    let t = now();
    let old = ctx
        .keys
        .get()
        .public()
        .verify_signature(token)
        .map_err(|e| match e {
            e @ VerifyError::TooLarge => RenewError::TooLarge(e.to_string()),
            e @ (VerifyError::UnknownKey(_) | VerifyError::MissingKid) => {
                RenewError::Unauthorized {
                    reason: "unknown_key",
                    message: format!("license token refused: {e}"),
                }
            }
            e => RenewError::Unauthorized {
                reason: "bad_token",
                message: format!("license token refused: {e}"),
            },
        })?;
    // Per license only once the token is proven, so a forger cannot use up
    // another customer's renewals.
    if let Err(wait) = ctx.renew_limiter.by_license.hit(&old.lid) {
        return Err(RenewError::RateLimited {
            what: "for this license",
            retry_after: wait,
        });
    }
    let grace_days = ctx.config.renew_grace_days;
    if t >= old.exp.saturating_add(grace_days.saturating_mul(DAY)) {
        return Err(RenewError::Unauthorized {
            reason: "beyond_grace",
            message: format!(
                "license token expired at {}, beyond the renewal grace of {grace_days} days",
                rfc3339::format(old.exp)
            ),
        });
    }
    // A token from the future (its license starts later, or it was signed
    // ahead of time) is not a current token to renew; clocks may be a
    // little apart.
    if old.nbf > t.saturating_add(NBF_LEEWAY) {
        return Err(RenewError::Unauthorized {
            reason: "not_yet_valid",
            message: "license token not yet valid".into(),
        });
    }
    // The body is optional: `{"usage": {...}}`.
    let usage = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<charter_token::RenewRequest>(body)
            .map_err(|e| RenewError::BadRequest {
                field: "body".into(),
                message: e.to_string(),
            })?
            .usage
    };
    if let Some(u) = &usage {
        check_usage(u)?;
    }
    let failed = |e: StoreError| RenewError::Failed(e.into());
    let cx = ctx
        .store
        .issuance_context(&old.lid, &old.sub)
        .await
        .map_err(failed)?
        .ok_or_else(|| RenewError::Forbidden {
            reason: "unknown_license",
            message: format!("license {} does not exist", old.lid),
        })?;
    check_renewable(&cx.license, t).map_err(refused)?;
    let not_bound = || {
        RenewError::NotBound(format!(
            "instance {} is not bound to license {}",
            old.sub, old.lid
        ))
    };
    let instance = cx.instance.ok_or_else(not_bound)?;
    let account = cx.account.ok_or_else(|| RenewError::Forbidden {
        reason: "unknown_account",
        message: format!("account {} not found", cx.license.account_id),
    })?;
    // The instance is the actor: it proved itself with its current token.
    let actor = Actor {
        kind: ActorKind::Instance,
        name: old.sub.clone(),
        ip: ip.map(|ip| ip.to_string()),
    };
    let req = Request {
        license: &cx.license,
        account: &account,
        url: &old.sub,
        to: Recipient::Bound { id: instance.id },
        reason: TokenReason::Renew,
        renewed_from: Some(old.jti.clone()),
        usage,
    };
    let signed = issue(ctx, req, actor.event("token.renew", "token", ""), t)
        .await
        .map_err(|e| match e {
            // Changed between the read and the write: answer as if read after.
            StoreOrSign::Store(StoreError::NotActive { lid, status }) => {
                let r = match status {
                    LicenseStatus::Suspended => RenewRefusal::Suspended(lid),
                    _ => RenewRefusal::Revoked(lid),
                };
                refused(r)
            }
            StoreOrSign::Store(StoreError::NotFound(_)) => not_bound(),
            e => RenewError::Failed(e.into()),
        })?;
    ctx.metrics.token_issued("renew");
    Ok(signed)
}
