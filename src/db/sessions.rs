//! Portal sessions: what both stores run to keep them, written once with
//! `?N` placeholders. A session lives in the store, so every replica
//! behind a load balancer knows it; the cookie holds a random id and the
//! row only its SHA-256, so a copy of the database opens no session.

use async_trait::async_trait;

use super::Result;
use super::rows::{Cells, bad_value};
use crate::domain::{ActorKind, Role};

/// A signed-in portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// Hex SHA-256 of the id in the cookie.
    pub id_hash: String,
    /// `Admin` (the server admin) or `ServiceAccount`.
    pub actor_kind: ActorKind,
    /// The admin's user name or the service account's login.
    pub actor: String,
    pub service_account_id: Option<i64>,
    /// The service-account token the session was opened with.
    pub token_id: Option<i64>,
    /// The role at sign-in (a service account's is read again on each request).
    pub role: Role,
    /// The synchronizer token every form of the session carries.
    pub csrf: String,
    pub ip: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// The portal's sessions, for every replica.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, s: &PortalSession) -> Result<()>;
    async fn get_session(&self, id_hash: &str) -> Result<Option<PortalSession>>;
    /// Sets `last_seen_at` (the caller writes at most once a minute).
    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()>;
    /// False when there was none.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes sessions idle since before `idle_before` or opened before
    /// `created_before`; returns how many.
    async fn prune_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64>;
}

pub(crate) const INSERT: &str = "INSERT INTO portal_sessions (id_hash, actor_kind, actor, \
     service_account_id, token_id, role, csrf, ip, created_at, last_seen_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

pub(crate) const GET: &str = "SELECT id_hash, actor_kind, actor, service_account_id, token_id, \
     role, csrf, ip, created_at, last_seen_at FROM portal_sessions WHERE id_hash = ?1";

pub(crate) const TOUCH: &str = "UPDATE portal_sessions SET last_seen_at = ?2 WHERE id_hash = ?1";

pub(crate) const DELETE: &str = "DELETE FROM portal_sessions WHERE id_hash = ?1";

pub(crate) const PRUNE: &str =
    "DELETE FROM portal_sessions WHERE last_seen_at < ?1 OR created_at < ?2";

/// A session row, in the order of [`GET`].
pub(crate) fn session(r: &impl Cells) -> Result<PortalSession> {
    Ok(PortalSession {
        id_hash: r.text(0)?,
        actor_kind: ActorKind::parse(&r.text(1)?).ok_or_else(|| bad_value("actor kind"))?,
        actor: r.text(2)?,
        service_account_id: r.opt_int(3)?,
        token_id: r.opt_int(4)?,
        role: Role::parse(&r.text(5)?).ok_or_else(|| bad_value("role"))?,
        csrf: r.text(6)?,
        ip: r.opt_text(7)?,
        created_at: r.int(8)?,
        last_seen_at: r.int(9)?,
    })
}
