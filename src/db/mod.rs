//! Storage: one [`Store`] interface, two implementations (embedded SQLite,
//! the default for a single node, and PostgreSQL for production and several
//! replicas), tested by the same suite. Migrations live in `sql/` and are
//! embedded in the binary.

use async_trait::async_trait;

use charter_token::Usage;

use crate::domain::{
    Account, AuditEvent, AuditFilter, Dialect, Instance, License, LicenseFilter, LicenseStatus,
    Listing, Page, Product, Role, SaToken, ServiceAccount, TokenRecord,
};

pub mod events;
mod keys;
#[doc(hidden)]
pub mod lists;
mod postgres;
pub(crate) mod rows;
pub mod sessions;
pub(crate) mod sql;
mod sqlite;
pub mod stats;
mod usage;

pub use events::EventStore;
pub use keys::KeyStore;
pub use postgres::PgStore;
pub use sessions::{PortalSession, SessionStore};
pub use sqlite::SqliteStore;
pub use stats::StatsStore;
pub use usage::UsageStore;

/// Errors of the store. A client's mistake never ends up as `Internal`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (the message says which).
    #[error("{0}")]
    Conflict(String),
    /// The license already has `max_instances` instances bound.
    #[error("license {lid} already has its {max} instance(s) bound")]
    InstanceLimit { lid: String, max: i64 },
    /// The row a change names does not exist (the message says which).
    #[error("{0}")]
    NotFound(String),
    /// The row changed since the version the change was computed from.
    #[error("the {0} changed since it was read")]
    Stale(&'static str),
    /// The license is not active (suspended or revoked), so no token may
    /// be recorded for it and a revoked one cannot change.
    #[error("license {lid} is {status}")]
    NotActive { lid: String, status: LicenseStatus },
    /// The database cannot be reached; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where an issued token goes.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// A new instance, inserted with the token (counting against the
    /// license's `max_instances`, read in the same transaction).
    Bind(Box<Instance>),
    /// A bound instance, by id.
    Bound { id: String },
}

/// A token to record, in one transaction with the instance columns an
/// issuance owns (last token, next renewal, token expiry or the pending
/// push, usage) and its audit event. The license must be active in that
/// transaction ([`StoreError::NotActive`] otherwise); a bound instance must
/// still exist ([`StoreError::NotFound`]).
#[derive(Debug, Clone)]
pub struct Issuance {
    pub token: TokenRecord,
    pub to: Recipient,
    /// `iat + update_days`: when the instance is next due, and when a
    /// push-enabled instance is next pushed (unless a removal is pending).
    pub next_renewal_at: i64,
    /// A usage report that came with a renewal.
    pub usage: Option<Usage>,
    /// For a renewal: if a token renewed from the same old token was
    /// recorded at or after this time, record nothing and return that one.
    pub idempotent_since: Option<i64>,
}

/// What [`Store::record_issuance`] did.
#[derive(Debug, Clone)]
pub enum Recorded {
    New,
    /// A retry: the token already issued for the same old token.
    Existing(TokenRecord),
}

/// An instance leased for a push, with its sealed credentials.
#[derive(Debug, Clone)]
pub struct PushJob {
    pub instance: Instance,
    pub credentials: Option<String>,
}

/// What a push run writes when it is done with an instance: only the push
/// columns, and only while its lease holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub push_next_at: Option<i64>,
    pub push_attempts: i64,
    pub push_last_error: Option<String>,
    pub push_last_ok_at: Option<i64>,
    pub push_at_risk: bool,
    pub removal_pending: bool,
    pub push_pending_jti: Option<String>,
    pub token_expires_at: Option<i64>,
    /// Announced with the outcome (the instance went at risk, or
    /// recovered), in its transaction and only while the lease holds.
    pub events: Vec<crate::domain::NewEvent>,
}

/// How an instance is pushed: the columns `PATCH .../instances/{id}` owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    pub dialect: Dialect,
    pub push_enabled: bool,
    pub push_next_at: Option<i64>,
    pub push_attempts: i64,
    /// `None`: keep the stored credentials; `Some(None)`: clear them;
    /// `Some(Some(sealed))`: replace them.
    pub credentials: Option<Option<String>>,
}

/// What [`Store::transition_license`] did.
#[derive(Debug, Clone)]
pub enum Transition {
    /// The status changed (and for a revocation, `removals` instances got a
    /// removal to deliver); the audit event was written.
    Changed { license: License, removals: u64 },
    /// The license already had that status; nothing was written.
    Unchanged(License),
}

/// `audit` with `detail.status` (old and new) and, for a revocation,
/// `detail.removals`: what [`Store::transition_license`] writes, the same on
/// both stores. A detail that is not an object is kept under `detail.detail`.
pub(crate) fn with_transition(
    audit: &AuditEvent,
    old: LicenseStatus,
    new: LicenseStatus,
    removals: Option<u64>,
) -> AuditEvent {
    use serde_json::{Map, Value};
    let mut detail = match &audit.detail {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => Map::from_iter([("detail".to_string(), other.clone())]),
    };
    detail.insert(
        "status".into(),
        serde_json::json!({ "old": old.as_str(), "new": new.as_str() }),
    );
    if let Some(n) = removals {
        detail.insert("removals".into(), n.into());
    }
    AuditEvent {
        detail: Some(Value::Object(detail)),
        ..audit.clone()
    }
}

/// See [`Store::issuance_context`].
#[derive(Debug, Clone)]
pub struct IssuanceContext {
    pub license: License,
    pub instance: Option<Instance>,
    pub account: Option<Account>,
}

/// What [`Store::prune`] deletes.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// Tokens issued before this time that no instance holds (as its
    /// current token or its pending push).
    pub tokens_before: Option<i64>,
    /// Audit events before this time.
    pub audit_before: Option<i64>,
    /// Usage reports before this time, rolled up (not deleted): one
    /// `daily` report per license, instance and UTC day with each
    /// counter's maximum over that day's reports (see [`UsageStore`]).
    pub usage_before: Option<i64>,
    pub batch: i64,
    pub pause: std::time::Duration,
}

/// What [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub tokens: u64,
    pub audit: u64,
    /// Usage reports rolled up into daily ones (and deleted).
    pub usage: u64,
}

/// The PostgreSQL advisory lock a prune run holds (one replica at a time).
pub const PRUNE_LOCK: i64 = 0x0063_6872_7072_756e; // "chrprun"

/// See [`Store::license_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseCounts {
    /// By state (`active`, `expired`, `not_started`, `suspended`, `revoked`).
    pub by_state: Vec<(String, i64)>,
    /// Licenses whose status is active, by expiry window: `expired`, `7d`,
    /// `30d`, `90d` (expiring within that many days), `later`.
    pub by_expiry: Vec<(String, i64)>,
}

impl LicenseCounts {
    /// The ends of the expiry windows after `now`: 7, 30 and 90 days.
    pub fn windows(now: i64) -> [i64; 3] {
        [now + 7 * 86_400, now + 30 * 86_400, now + 90 * 86_400]
    }

    /// From rows `(state, window, count)` of [`sql::LICENSE_COUNTS`].
    pub(crate) fn from_rows(rows: Vec<(String, String, i64)>) -> LicenseCounts {
        let mut c = LicenseCounts::default();
        for (state, window, n) in rows {
            match c.by_state.iter_mut().find(|(s, _)| *s == state) {
                Some((_, total)) => *total += n,
                None => c.by_state.push((state, n)),
            }
            if !window.is_empty() {
                c.by_expiry.push((window, n));
            }
        }
        c
    }
}

/// Connections of a store's pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStatus {
    pub size: i64,
    pub available: i64,
    pub waiting: i64,
}

/// The issuer's storage. Every change is one operation named for what it
/// does: it writes only the columns it owns, in one transaction together
/// with its audit event. Updates of rows that several writers touch are
/// conditional on the `version` they were computed from
/// ([`StoreError::Stale`] otherwise), and every write bumps the version.
#[async_trait]
pub trait Store:
    AccessStore
    + PushStore
    + KeyStore
    + UsageStore
    + EventStore
    + SessionStore
    + StatsStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// A round trip to the database.
    async fn health(&self) -> Result<()>;

    /// Conflict when the slug exists.
    async fn create_product(&self, p: &Product, audit: &AuditEvent) -> Result<()>;
    async fn get_product(&self, slug: &str) -> Result<Option<Product>>;
    async fn list_products(&self) -> Result<Vec<Product>>;
    /// Writes `name` and `features` if the row is at `version`; returns the row.
    async fn update_product(
        &self,
        p: &Product,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Product>;

    /// Conflict when the slug is taken.
    async fn create_account(&self, a: &Account, audit: &AuditEvent) -> Result<()>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>>;
    async fn list_accounts(&self, page: &Page) -> Result<Listing<Account>>;
    /// Writes `company`, `account` and `slug` if the row is at `version`.
    async fn update_account(
        &self,
        a: &Account,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Account>;

    async fn create_license(&self, l: &License, audit: &AuditEvent) -> Result<()>;
    async fn get_license(&self, lid: &str) -> Result<Option<License>>;
    async fn list_licenses(&self, f: &LicenseFilter, page: &Page) -> Result<Listing<License>>;
    /// Writes the terms, dates and `max_instances` of `l` (never `status`)
    /// if the row still has those of `from`, the license they were computed
    /// from ([`StoreError::Stale`] otherwise; a status change in between
    /// does not count), is at version `if_match` when given, and is not
    /// revoked ([`StoreError::NotActive`]).
    async fn update_license_terms(
        &self,
        l: &License,
        from: &License,
        if_match: Option<i64>,
        audit: &AuditEvent,
    ) -> Result<License>;
    /// Sets the status to `to` unless it is already `to`; a revoked license
    /// never changes ([`StoreError::NotActive`]). A revocation queues the
    /// removals of the push-enabled instances in the same transaction. The
    /// audit event gets `detail.status` (old and new).
    async fn transition_license(
        &self,
        lid: &str,
        to: LicenseStatus,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Transition>;

    /// Binds an instance with its sealed push credentials, refusing with
    /// [`StoreError::InstanceLimit`] when the license has `max_instances`
    /// already, [`StoreError::NotActive`] when it is revoked, and
    /// [`StoreError::NotFound`] when it does not exist.
    async fn bind_instance(
        &self,
        i: &Instance,
        credentials: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Instance>;
    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>>;
    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>>;
    /// What issuing a token for the instance at `url` under license `lid`
    /// reads, in one call: the license (`None`: it does not exist), the
    /// instance if bound, and the license's account.
    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>>;
    async fn list_instances(&self, lid: &str, page: &Page) -> Result<Listing<Instance>>;
    /// Writes the push settings if the row is at `version`.
    async fn update_push_settings(
        &self,
        lid: &str,
        id: &str,
        s: &PushSettings,
        version: i64,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Instance>;
    /// Unbinds; its tokens stay in the history. False when it did not
    /// exist (and no event is written).
    async fn unbind_instance(&self, lid: &str, id: &str, audit: &AuditEvent) -> Result<bool>;

    /// Records a token as [`Issuance`] says, with `audit` (only when a new
    /// token is recorded, not for an idempotent retry).
    async fn record_issuance(&self, issuance: &Issuance, audit: &AuditEvent) -> Result<Recorded>;
    async fn list_tokens(&self, lid: &str, page: &Page) -> Result<Listing<TokenRecord>>;

    /// Ids of revoked licenses.
    async fn revoked_licenses(&self) -> Result<Vec<String>>;

    /// How many licenses are in each state at `now`, and how many of the
    /// active ones (status) expire when, for the metrics.
    async fn license_counts(&self, now: i64) -> Result<LicenseCounts>;
    /// Connections of the pool, for the metrics.
    fn pool_status(&self) -> PoolStatus;

    /// Prunes what `plan` names, oldest first, in batches of `plan.batch`
    /// rows (each its own short transaction, `plan.pause` apart, so
    /// renewals go on between them), holding the store's prune lock:
    /// `None`, and nothing deleted, when another run or replica holds it.
    /// Usage reports go a license at a time, whole UTC days of it per
    /// batch (about `plan.batch` reports; a day is never split), each
    /// rolled into its daily row in the transaction that deletes them.
    async fn prune(&self, plan: &PrunePlan) -> Result<Option<Pruned>>;

    /// A setting kept in the database (e.g. the generated admin password hash).
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets it unless present; returns the value that is stored afterwards.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;
}

/// What the push job needs from storage (see `src/push.rs`).
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Leases up to `limit` instances whose push is due (push enabled, license
    /// active and unexpired, or revoked with a removal to deliver) to `owner`
    /// until `lease_until`. Replicas never claim the same instance at once.
    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PushJob>>;
    /// Leases one instance now, due or not; `None` when another run holds it
    /// or its license cannot be pushed.
    async fn claim_push(
        &self,
        lid: &str,
        id: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<PushJob>>;
    /// Writes the outcome of a push and releases the lease, if `owner`
    /// still holds it (false otherwise, and nothing is written).
    async fn finish_push(&self, id: &str, owner: &str, outcome: &PushOutcome) -> Result<bool>;
    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>>;
    /// Instances whose last pushes failed, and of those the ones at risk
    /// (their token expires within the warning window).
    async fn count_push_backoff(&self) -> Result<(i64, i64)>;
}

/// Service accounts, their tokens, and the audit trail. Each change takes
/// its audit event and writes it in its transaction; an event whose
/// `target_id` is empty gets the id of the row the change created.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Creates a service account (409 [`StoreError::Conflict`] when the name
    /// or login is taken); returns it with its id.
    async fn insert_service_account(
        &self,
        sa: NewServiceAccount<'_>,
        audit: &AuditEvent,
    ) -> Result<ServiceAccount>;
    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>>;
    /// Accounts whose name or login contains `query` (case-insensitive), by name.
    async fn search_service_accounts(
        &self,
        query: &str,
        page: &Page,
    ) -> Result<Listing<ServiceAccount>>;
    /// Writes name, login, role and `is_disabled`.
    async fn update_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()>;
    /// Deletes it and its tokens. False when it did not exist.
    async fn delete_service_account(&self, id: i64, audit: &AuditEvent) -> Result<bool>;

    /// Stores a token by the SHA-256 of its secret (409 when the account
    /// already has a token of that name).
    async fn insert_sa_token(&self, t: NewSaToken<'_>, audit: &AuditEvent) -> Result<SaToken>;
    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>>;
    /// Deletes a token; of that account when `service_account_id` is given.
    /// False when there was none.
    async fn delete_sa_token(
        &self,
        service_account_id: Option<i64>,
        id: i64,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// The token with this hash and its account, for authentication.
    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>>;
    /// Records that token `id` authenticated at `now`: sets `last_used_at`
    /// unless it is within the last minute already (so the hot path writes
    /// at most once a minute per token). No audit event; a missing token is
    /// not an error.
    async fn touch_sa_token(&self, id: i64, now: i64) -> Result<()>;
    /// Every token with its account's role (the legacy API keys view),
    /// expired ones only when `include_expired`.
    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>>;

    /// An event that is not part of a change (a failed login).
    async fn insert_audit(&self, event: &AuditEvent) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, f: &AuditFilter, page: &Page) -> Result<Listing<AuditEvent>>;
}

/// A service account to create.
#[derive(Debug, Clone, Copy)]
pub struct NewServiceAccount<'a> {
    pub name: &'a str,
    pub login: &'a str,
    pub role: Role,
    pub is_disabled: bool,
    pub now: i64,
}

/// A service-account token to store.
#[derive(Debug, Clone, Copy)]
pub struct NewSaToken<'a> {
    pub service_account_id: i64,
    pub name: &'a str,
    /// SHA-256 of the secret, hex.
    pub hash: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
}

/// Opens the store a database URL names: `sqlite://PATH` (or a bare path
/// ending in `.db`) or `postgres://...`. Applies migrations when `migrate`.
pub async fn open(url: &str, migrate: bool) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(url).await?;
        if migrate {
            store.migrate().await?;
        }
        Ok(std::sync::Arc::new(store))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let store = SqliteStore::open(std::path::Path::new(path), migrate).await?;
        Ok(std::sync::Arc::new(store))
    }
}

/// The database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
