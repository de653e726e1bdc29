//! Who may do what: service-account roles, the records of service accounts
//! and their tokens, and audit events. Plain types; the HTTP shapes (Grafana's
//! camelCase) live in `api::serviceaccounts`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;

/// A service account's role, as Grafana names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "Viewer",
            Role::Editor => "Editor",
            Role::Admin => "Admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Viewer" => Some(Role::Viewer),
            "Editor" => Some(Role::Editor),
            "Admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A service account: a named, non-human caller of the portal API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: i64,
    pub name: String,
    /// `sa-<name>`, lower-cased; unique.
    pub login: String,
    pub role: Role,
    pub is_disabled: bool,
    /// How many tokens it has (filled by reads).
    pub tokens: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A service-account token. Only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaToken {
    pub id: i64,
    pub service_account_id: i64,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// When it last authenticated (to the minute); `None`: never.
    pub last_used_at: Option<i64>,
}

impl SaToken {
    pub fn has_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// Who did something, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// The server admin (HTTP Basic).
    Admin,
    ServiceAccount,
    /// A product instance renewing its token.
    Instance,
    /// The issuer itself (scheduled work).
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Admin => "admin",
            ActorKind::ServiceAccount => "service_account",
            ActorKind::Instance => "instance",
            ActorKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(ActorKind::Admin),
            "service_account" => Some(ActorKind::ServiceAccount),
            "instance" => Some(ActorKind::Instance),
            "system" => Some(ActorKind::System),
            _ => None,
        }
    }
}

/// One change, who made it, and from where. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Assigned by the store; 0 before.
    pub id: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub actor_kind: ActorKind,
    /// The admin's user name, the service account's login, or the instance URL.
    pub actor: String,
    /// What was done, e.g. `license.revoke`, `token.renew`, `serviceaccount.token.create`.
    pub action: String,
    /// What it was done to: `product`, `account`, `license`, `instance`,
    /// `token`, `serviceaccount`, `serviceaccount_token`, `apikey`.
    pub target_type: String,
    pub target_id: String,
    /// The client's address.
    pub ip: Option<String>,
    /// Context (e.g. the license of an instance); never a secret.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    /// The events the change announces (to webhooks), recorded with the
    /// audit event in the change's transaction; not part of the trail.
    #[serde(skip)]
    pub events: Vec<super::NewEvent>,
}

/// Filters of the audit list; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive, unix seconds.
    pub since: Option<i64>,
    /// Exclusive, unix seconds.
    pub until: Option<i64>,
}
