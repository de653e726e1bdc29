//! SQL that both stores run, written once with SQLite's `?N` placeholders;
//! the PostgreSQL store passes each statement through [`pg`]. Column lists
//! match the mappers in [`super::rows`]. What truly differs per dialect
//! (row locks, JSON operators, the push claim's plan) stays in each store.
//!
//! Every write of a product, account, license or instance row bumps its
//! `version` (the `ETag` of its `GET`); changes computed from a row read
//! earlier are conditional on that version.

/// `?1` → `$1`: PostgreSQL's placeholders. Only a `?` followed by a digit
/// is one (PostgreSQL's `?` JSON operator is followed by a space).
pub(crate) fn pg(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

macro_rules! product_cols {
    () => {
        "slug, name, features, created_at, updated_at, version"
    };
}
macro_rules! account_cols {
    () => {
        "id, company, account, slug, created_at, updated_at, version"
    };
}
macro_rules! license_cols {
    () => {
        "lid, account_id, status, starts_at, expires_at, max_instances, terms, created_at, updated_at, version, over_limit"
    };
}
/// The stored columns of an instance, in insert order.
macro_rules! instance_stored {
    () => {
        "id, lid, url, dialect, push_enabled, last_jti, last_issued_at, next_renewal_at, usage, \
         usage_reported_at, created_at, updated_at, token_expires_at, push_next_at, push_attempts, \
         push_last_error, push_last_ok_at, push_at_risk, removal_pending, push_pending_jti, version"
    };
}
macro_rules! instance_cols {
    () => {
        concat!(instance_stored!(), ", credentials IS NOT NULL")
    };
}
macro_rules! token_cols {
    () => {
        "jti, lid, instance_id, kid, iat, nbf, exp, reason, renewed_from, token"
    };
}

pub(crate) const ACCOUNT_COLS: &str = account_cols!();
pub(crate) const LICENSE_COLS: &str = license_cols!();
/// An instance as [`super::rows::instance`] reads it (whether credentials
/// are stored, never them).
pub(crate) const INSTANCE_COLS: &str = instance_cols!();
pub(crate) const TOKEN_COLS: &str = token_cols!();
/// A service account (alias `s`), with its number of tokens.
pub(crate) const SA_COLS: &str = "s.id, s.name, s.login, s.role, s.is_disabled, \
    (SELECT count(*) FROM service_account_tokens t WHERE t.service_account_id = s.id), \
    s.created_at, s.updated_at";
/// A service-account token (alias `k`).
pub(crate) const SA_TOKEN_COLS: &str =
    "k.id, k.service_account_id, k.name, k.created_at, k.expires_at, k.last_used_at";
pub(crate) const AUDIT_COLS: &str =
    "id, at, actor_kind, actor, action, target_type, target_id, ip, detail";

// Products: ?1 slug, ?2 name, ?3 features (JSON), ?4 time.
pub(crate) const INSERT_PRODUCT: &str = "INSERT INTO products (slug, name, features, created_at, updated_at, version) \
     VALUES (?1, ?2, ?3, ?4, ?4, 1)";
pub(crate) const GET_PRODUCT: &str =
    concat!("SELECT ", product_cols!(), " FROM products WHERE slug = ?1");
pub(crate) const LIST_PRODUCTS: &str =
    concat!("SELECT ", product_cols!(), " FROM products ORDER BY slug");
/// ?5 the version the change was computed from.
pub(crate) const UPDATE_PRODUCT: &str = concat!(
    "UPDATE products SET name = ?2, features = ?3, updated_at = ?4, version = version + 1 \
     WHERE slug = ?1 AND version = ?5 RETURNING ",
    product_cols!()
);

// Accounts: ?1 id, ?2 company, ?3 account, ?4 slug, ?5 time.
pub(crate) const INSERT_ACCOUNT: &str = "INSERT INTO accounts (id, company, account, slug, created_at, updated_at, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)";
pub(crate) const GET_ACCOUNT: &str =
    concat!("SELECT ", account_cols!(), " FROM accounts WHERE id = ?1");
/// ?6 the version.
pub(crate) const UPDATE_ACCOUNT: &str = concat!(
    "UPDATE accounts SET company = ?2, account = ?3, slug = ?4, updated_at = ?5, version = version + 1 \
     WHERE id = ?1 AND version = ?6 RETURNING ",
    account_cols!()
);

// Licenses.
/// ?1 lid, ?2 account, ?3 status, ?4 starts, ?5 expires, ?6 max instances,
/// ?7 terms (JSON), ?8 time.
pub(crate) const INSERT_LICENSE: &str = "INSERT INTO licenses (lid, account_id, status, starts_at, expires_at, max_instances, terms, \
     created_at, updated_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1)";
pub(crate) const GET_LICENSE: &str =
    concat!("SELECT ", license_cols!(), " FROM licenses WHERE lid = ?1");
/// Never `status`; never a revoked license; only while the terms are still
/// the ones the change was computed from (a status change in between does
/// not matter to it), and at the caller's version when it named one.
/// ?1 lid, ?2 starts, ?3 expires, ?4 max instances, ?5 terms, ?6 time;
/// as read: ?7 starts, ?8 expires, ?9 max instances, ?10 terms; ?11 the
/// version named by `If-Match`, or NULL.
pub(crate) const UPDATE_LICENSE_TERMS: &str = concat!(
    "UPDATE licenses SET starts_at = ?2, expires_at = ?3, max_instances = ?4, terms = ?5, \
     updated_at = ?6, version = version + 1 \
     WHERE lid = ?1 AND status <> 'revoked' \
     AND starts_at = ?7 AND expires_at = ?8 AND max_instances = ?9 AND terms = ?10 \
     AND (CAST(?11 AS BIGINT) IS NULL OR version = ?11) RETURNING ",
    license_cols!()
);
/// Revoked is terminal here as in the schema's trigger. ?1 lid, ?2 status, ?3 time.
pub(crate) const SET_LICENSE_STATUS: &str = concat!(
    "UPDATE licenses SET status = ?2, updated_at = ?3, version = version + 1 \
     WHERE lid = ?1 AND status <> 'revoked' AND status <> ?2 RETURNING ",
    license_cols!()
);
/// A revocation's removals, for the push job to deliver. ?1 lid, ?2 time.
pub(crate) const QUEUE_REMOVALS: &str = "UPDATE instances SET removal_pending = TRUE, push_next_at = ?2, push_attempts = 0, \
     push_last_error = NULL, updated_at = ?2, version = version + 1 \
     WHERE lid = ?1 AND push_enabled";
pub(crate) const REVOKED_LICENSES: &str =
    "SELECT lid FROM licenses WHERE status = 'revoked' ORDER BY lid";
/// Licenses by state at ?1 (as `domain::license_state` computes it) and,
/// for the active ones, by how soon they expire: `expired`, within 7, 30
/// or 90 days (?2, ?3, ?4 the ends of those windows), or `later`. One
/// aggregate over the licenses, for the metrics: a fixed number of series
/// however many licenses there are.
pub(crate) const LICENSE_COUNTS: &str = "SELECT \
     CASE WHEN status <> 'active' THEN status WHEN expires_at <= ?1 THEN 'expired' \
          WHEN starts_at > ?1 THEN 'not_started' ELSE 'active' END, \
     CASE WHEN status <> 'active' THEN '' WHEN expires_at <= ?1 THEN 'expired' \
          WHEN expires_at <= ?2 THEN '7d' WHEN expires_at <= ?3 THEN '30d' \
          WHEN expires_at <= ?4 THEN '90d' ELSE 'later' END, \
     count(*) FROM licenses GROUP BY 1, 2";

// Instances.
pub(crate) const COUNT_BOUND: &str = "SELECT count(*) FROM instances WHERE lid = ?1";
/// ?1..?21 as [`INSTANCE_COLS`] without the last (version is ?21), ?22
/// the sealed credentials.
pub(crate) const INSERT_INSTANCE: &str = concat!(
    "INSERT INTO instances (",
    instance_stored!(),
    ", credentials) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
);
pub(crate) const GET_INSTANCE: &str = concat!(
    "SELECT ",
    instance_cols!(),
    " FROM instances WHERE lid = ?1 AND id = ?2"
);
pub(crate) const FIND_INSTANCE: &str = concat!(
    "SELECT ",
    instance_cols!(),
    " FROM instances WHERE lid = ?1 AND url = ?2"
);
/// ?1 lid, ?2 id, ?3 dialect, ?4 push enabled, ?5 next push, ?6 attempts,
/// ?7 whether credentials change, ?8 the new sealed credentials, ?9 time,
/// ?10 the version.
pub(crate) const UPDATE_PUSH_SETTINGS: &str = concat!(
    "UPDATE instances SET dialect = ?3, push_enabled = ?4, push_next_at = ?5, push_attempts = ?6, \
     credentials = CASE WHEN ?7 THEN ?8 ELSE credentials END, updated_at = ?9, version = version + 1 \
     WHERE lid = ?1 AND id = ?2 AND version = ?10 RETURNING ",
    instance_cols!()
);
pub(crate) const DELETE_INSTANCE: &str = "DELETE FROM instances WHERE lid = ?1 AND id = ?2";
pub(crate) const INSTANCE_EXISTS: &str = "SELECT 1 FROM instances WHERE lid = ?1 AND id = ?2";

// Issuance.
/// A token renewed from the same old one at or after a time (a retry).
/// ?1 the old jti, ?2 since.
pub(crate) const FIND_RETRY: &str = concat!(
    "SELECT ",
    token_cols!(),
    " FROM tokens WHERE renewed_from = ?1 AND iat >= ?2 ORDER BY iat DESC LIMIT 1"
);
pub(crate) const INSERT_TOKEN: &str = concat!(
    "INSERT INTO tokens (",
    token_cols!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
);
/// What an issued or renewed token changes on a bound instance: push follows
/// the renewal only while push is on and no removal is pending (read here,
/// not from an earlier copy of the row). ?1 lid, ?2 id, ?3 jti, ?4 iat,
/// ?5 next renewal, ?6 exp, ?7 usage (JSON, or NULL to keep), ?8 when
/// reported (or NULL).
pub(crate) const RECORD_TOKEN: &str = "UPDATE instances SET last_jti = ?3, last_issued_at = ?4, next_renewal_at = ?5, \
     token_expires_at = ?6, \
     push_next_at = CASE WHEN push_enabled AND NOT removal_pending THEN ?5 ELSE push_next_at END, \
     usage = COALESCE(?7, usage), usage_reported_at = COALESCE(?8, usage_reported_at), \
     updated_at = ?4, version = version + 1 WHERE lid = ?1 AND id = ?2";
/// A token issued by the push job: pending until delivered (the push job
/// records the outcome). ?1 lid, ?2 id, ?3 jti, ?4 iat, ?5 next renewal.
pub(crate) const RECORD_PUSH_TOKEN: &str = "UPDATE instances SET last_jti = ?3, last_issued_at = ?4, next_renewal_at = ?5, \
     push_pending_jti = ?3, updated_at = ?4, version = version + 1 WHERE lid = ?1 AND id = ?2";
pub(crate) const GET_TOKEN: &str = concat!("SELECT ", token_cols!(), " FROM tokens WHERE jti = ?1");

// Push.
/// A push claim may take the instance: no live lease (?1 now).
pub(crate) const UNLEASED: &str = "(i.lease_until IS NULL OR i.lease_until <= ?1)";
/// Its license lets it be pushed: an active, unexpired license and no
/// removal pending, or a revoked one with the removal to deliver (?1 now).
pub(crate) const PUSHABLE: &str = "((l.status = 'active' AND l.expires_at > ?1 AND NOT i.removal_pending) \
     OR (l.status = 'revoked' AND i.removal_pending))";
/// ?1 id, ?2 lease owner, ?3 next push, ?4 attempts, ?5 last error,
/// ?6 last success, ?7 at risk, ?8 removal pending, ?9 pending jti,
/// ?10 token expiry.
pub(crate) const FINISH_PUSH: &str = "UPDATE instances SET push_next_at = ?3, push_attempts = ?4, push_last_error = ?5, \
     push_last_ok_at = ?6, push_at_risk = ?7, removal_pending = ?8, push_pending_jti = ?9, \
     token_expires_at = ?10, lease_owner = NULL, lease_until = NULL, version = version + 1 \
     WHERE id = ?1 AND lease_owner = ?2";

// Audit: ?1 at, ?2 actor kind, ?3 actor, ?4 action, ?5 target type,
// ?6 target id, ?7 ip, ?8 detail (JSON).
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

// Retention: a batch of the oldest rows at a time (each its own short
// transaction), by `tokens_iat` and `audit_events_at`.
/// Tokens issued before ?1 that no instance holds as its current or
/// pending token; ?2 at most.
pub(crate) const PRUNE_TOKENS: &str = "DELETE FROM tokens WHERE jti IN (SELECT jti FROM tokens \
     WHERE iat < ?1 \
     AND jti NOT IN (SELECT last_jti FROM instances WHERE last_jti IS NOT NULL) \
     AND jti NOT IN (SELECT push_pending_jti FROM instances WHERE push_pending_jti IS NOT NULL) \
     ORDER BY iat LIMIT ?2)";
/// Audit events before ?1; ?2 at most.
pub(crate) const PRUNE_AUDIT: &str = "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
     WHERE at < ?1 ORDER BY at, id LIMIT ?2)";

// Settings.
pub(crate) const GET_SETTING: &str = "SELECT value FROM settings WHERE key = ?1";
pub(crate) const INIT_SETTING: &str =
    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING";

/// How a license state filter is spelled in SQL: the stored status, and
/// whether the license has expired and has started at the filter's time
/// (`None`: either).
pub(crate) fn state_filter(
    state: Option<crate::domain::LicenseState>,
) -> (Option<&'static str>, Option<bool>, Option<bool>) {
    use crate::domain::LicenseState as S;
    match state {
        None => (None, None, None),
        Some(S::Active) => (Some("active"), Some(false), Some(true)),
        Some(S::Expired) => (Some("active"), Some(true), None),
        Some(S::NotStarted) => (Some("active"), Some(false), Some(false)),
        Some(S::Suspended) => (Some("suspended"), None, None),
        Some(S::Revoked) => (Some("revoked"), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones_and_nothing_else_changes() {
        assert_eq!(
            pg("SELECT a FROM t WHERE x = ?1 AND y = ?12 AND terms->'p' ? ?3"),
            "SELECT a FROM t WHERE x = $1 AND y = $12 AND terms->'p' ? $3"
        );
    }
}
