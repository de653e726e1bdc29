//! Storage: one [`Store`] interface, two implementations (embedded SQLite,
//! the default for a single node, and PostgreSQL for production and several
//! replicas), tested by the same suite. Migrations live in `sql/` and are
//! embedded in the binary.

use async_trait::async_trait;

use crate::domain::{
    Account, AuditEvent, AuditFilter, Instance, License, LicenseFilter, Page, Product, Role,
    SaToken, ServiceAccount, TokenRecord,
};

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors of the store. A client's mistake never ends up as `Internal`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (the message says which).
    #[error("{0}")]
    Conflict(String),
    /// The license already has `max_instances` instances bound.
    #[error("license {lid} already has its {max} instance(s) bound")]
    InstanceLimit { lid: String, max: i64 },
    /// The database cannot be reached; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A token to record, with the instance it goes to, in one transaction.
#[derive(Debug, Clone)]
pub struct Issuance {
    pub token: TokenRecord,
    /// The instance with its new state (last token, next renewal, usage).
    /// Inserted when `bind` is set (counting against `max_instances`),
    /// updated otherwise.
    pub instance: Instance,
    pub bind: bool,
    pub max_instances: i64,
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

/// Which instances a push run may claim (both stores; `?1`/`$1` is now).
/// PostgreSQL's `claim_pushes` spells the same condition per row: keep in step.
pub(crate) const PUSH_DUE: &str = "i.push_enabled AND i.push_next_at IS NOT NULL AND i.push_next_at <= {now} \
    AND (i.lease_until IS NULL OR i.lease_until <= {now}) \
    AND ((l.status = 'active' AND l.expires_at > {now} AND NOT i.removal_pending) \
         OR (l.status = 'revoked' AND i.removal_pending))";

/// See [`Store::issuance_context`].
#[derive(Debug, Clone)]
pub struct IssuanceContext {
    pub license: License,
    pub instance: Option<Instance>,
    pub account: Option<Account>,
}

/// Connections of a store's pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStatus {
    pub size: i64,
    pub available: i64,
    pub waiting: i64,
}

#[async_trait]
pub trait Store: AccessStore + PushStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// A round trip to the database.
    async fn health(&self) -> Result<()>;

    async fn insert_product(&self, p: &Product) -> Result<()>;
    async fn get_product(&self, slug: &str) -> Result<Option<Product>>;
    async fn list_products(&self) -> Result<Vec<Product>>;
    async fn update_product(&self, p: &Product) -> Result<()>;

    async fn insert_account(&self, a: &Account) -> Result<()>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>>;
    async fn list_accounts(&self, page: Page) -> Result<(Vec<Account>, i64)>;
    async fn update_account(&self, a: &Account) -> Result<()>;

    async fn insert_license(&self, l: &License) -> Result<()>;
    async fn get_license(&self, lid: &str) -> Result<Option<License>>;
    async fn list_licenses(&self, f: &LicenseFilter, page: Page) -> Result<(Vec<License>, i64)>;
    async fn update_license(&self, l: &License) -> Result<()>;

    /// Binds an instance, refusing with [`StoreError::InstanceLimit`] when
    /// the license has `max_instances` already.
    async fn bind_instance(&self, i: &Instance, max_instances: i64) -> Result<()>;
    async fn get_instance(&self, lid: &str, id: &str) -> Result<Option<Instance>>;
    async fn find_instance(&self, lid: &str, url: &str) -> Result<Option<Instance>>;
    /// What issuing a token for the instance at `url` under license `lid`
    /// reads, in one call: the license (`None`: it does not exist), the
    /// instance if bound, and the license's account.
    async fn issuance_context(&self, lid: &str, url: &str) -> Result<Option<IssuanceContext>> {
        let Some(license) = self.get_license(lid).await? else {
            return Ok(None);
        };
        let instance = self.find_instance(lid, url).await?;
        let account = self.get_account(&license.account_id).await?;
        Ok(Some(IssuanceContext {
            license,
            instance,
            account,
        }))
    }
    async fn list_instances(&self, lid: &str) -> Result<Vec<Instance>>;
    async fn update_instance(&self, i: &Instance) -> Result<()>;
    /// Unbinds; its tokens stay in the history. False when it did not exist.
    async fn delete_instance(&self, lid: &str, id: &str) -> Result<bool>;

    /// Records a token and the instance update in one transaction.
    async fn record_issuance(&self, issuance: &Issuance) -> Result<Recorded> {
        self.record_issuance_audited(issuance, None).await
    }
    /// [`Store::record_issuance`], writing `audit` in the same transaction
    /// (only when a new token is recorded, not for an idempotent retry).
    async fn record_issuance_audited(
        &self,
        issuance: &Issuance,
        audit: Option<&AuditEvent>,
    ) -> Result<Recorded>;
    async fn list_tokens(&self, lid: &str, page: Page) -> Result<(Vec<TokenRecord>, i64)>;

    /// Ids of revoked licenses.
    async fn revoked_licenses(&self) -> Result<Vec<String>>;

    /// Expiry (unix seconds) of every active license, for the metrics.
    async fn license_expiries(&self) -> Result<Vec<(String, i64)>>;
    /// Connections of the pool, for the metrics.
    fn pool_status(&self) -> PoolStatus;

    /// A setting kept in the database (e.g. the generated admin password hash).
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets it unless present; returns the value that is stored afterwards.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;
}

/// Service accounts, their tokens, and the audit trail.
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
    /// Writes the push state of `i` and releases its lease, if `owner` still holds it.
    async fn finish_push(&self, i: &Instance, owner: &str) -> Result<bool>;
    /// After a revocation: the license's push-enabled instances get a removal to deliver.
    async fn mark_removals(&self, lid: &str, now: i64) -> Result<u64>;
    /// Stores (or clears) an instance's encrypted push credentials.
    async fn set_credentials(&self, lid: &str, id: &str, sealed: Option<&str>) -> Result<()>;
    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>>;
    /// Instances whose last pushes failed, and of those the ones at risk
    /// (their token expires within the warning window).
    async fn count_push_backoff(&self) -> Result<(i64, i64)>;
}

#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Creates a service account (409 [`StoreError::Conflict`] when the name
    /// or login is taken); returns it with its id.
    async fn insert_service_account(
        &self,
        name: &str,
        login: &str,
        role: Role,
        is_disabled: bool,
        now: i64,
    ) -> Result<ServiceAccount>;
    async fn get_service_account(&self, id: i64) -> Result<Option<ServiceAccount>>;
    /// Accounts whose name or login contains `query` (case-insensitive), by name.
    async fn search_service_accounts(
        &self,
        query: &str,
        page: Page,
    ) -> Result<(Vec<ServiceAccount>, i64)>;
    async fn update_service_account(&self, sa: &ServiceAccount) -> Result<()>;
    /// Deletes it and its tokens. False when it did not exist.
    async fn delete_service_account(&self, id: i64) -> Result<bool>;

    /// Stores a token by the SHA-256 of its secret (409 when the account
    /// already has a token of that name).
    async fn insert_sa_token(
        &self,
        service_account_id: i64,
        name: &str,
        hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<SaToken>;
    async fn list_sa_tokens(&self, service_account_id: i64) -> Result<Vec<SaToken>>;
    /// Deletes a token; of that account when `service_account_id` is given.
    /// False when there was none.
    async fn delete_sa_token(&self, service_account_id: Option<i64>, id: i64) -> Result<bool>;
    /// The token with this hash and its account, for authentication.
    async fn find_sa_token(&self, hash: &str) -> Result<Option<(SaToken, ServiceAccount)>>;
    /// Every token with its account's role (the legacy API keys view),
    /// expired ones only when `include_expired`.
    async fn list_api_keys(&self, include_expired: bool, now: i64) -> Result<Vec<(SaToken, Role)>>;

    async fn insert_audit(&self, event: &AuditEvent) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, f: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)>;
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
