//! Row mapping, once for both stores: each record is read from its columns
//! (in the order of the lists in [`super::sql`]) through [`Cells`], which
//! `rusqlite::Row` and `tokio_postgres::Row` both implement. The only
//! difference between them is how JSON arrives (text in SQLite, `jsonb` in
//! PostgreSQL), and [`Cells::json`] hides it.

use serde::de::DeserializeOwned;

use super::{Result, StoreError};
use crate::domain::{
    Account, ActorKind, AuditEvent, Dialect, Instance, License, LicenseStatus, Product, Role,
    SaToken, ServiceAccount, TokenReason, TokenRecord, license_state,
};

/// Reading the columns of one row by position.
pub(crate) trait Cells {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn flag(&self, i: usize) -> Result<bool>;
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>>;
    fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        self.opt_json(i)?
            .ok_or_else(|| bad_value(&format!("NULL in JSON column {i}")))
    }
}

pub(crate) fn bad_value(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected {what} in the database"))
}

fn cell_error(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("column {i}: {e}"))
}

impl Cells for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        self.get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.get(i).map_err(|e| cell_error(i, e))
    }
    fn text(&self, i: usize) -> Result<String> {
        self.get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.get(i).map_err(|e| cell_error(i, e))
    }
    fn flag(&self, i: usize) -> Result<bool> {
        self.get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>> {
        let text: Option<String> = self.get(i).map_err(|e| cell_error(i, e))?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| cell_error(i, e)))
            .transpose()
    }
}

impl Cells for tokio_postgres::Row {
    fn int(&self, i: usize) -> Result<i64> {
        self.try_get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.try_get(i).map_err(|e| cell_error(i, e))
    }
    fn text(&self, i: usize) -> Result<String> {
        self.try_get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).map_err(|e| cell_error(i, e))
    }
    fn flag(&self, i: usize) -> Result<bool> {
        self.try_get(i).map_err(|e| cell_error(i, e))
    }
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>> {
        let v: Option<tokio_postgres::types::Json<serde_json::Value>> =
            self.try_get(i).map_err(|e| cell_error(i, e))?;
        v.map(|j| serde_json::from_value(j.0).map_err(|e| cell_error(i, e)))
            .transpose()
    }
}

/// [`super::sql::PRODUCT_COLS`].
pub(crate) fn product(r: &impl Cells) -> Result<Product> {
    Ok(Product {
        slug: r.text(0)?,
        name: r.text(1)?,
        features: r.json(2)?,
        created_at: r.int(3)?,
        updated_at: r.int(4)?,
        version: r.int(5)?,
    })
}

/// [`super::sql::ACCOUNT_COLS`].
pub(crate) fn account(r: &impl Cells) -> Result<Account> {
    Ok(Account {
        id: r.text(0)?,
        company: r.text(1)?,
        account: r.text(2)?,
        slug: r.text(3)?,
        created_at: r.int(4)?,
        updated_at: r.int(5)?,
        version: r.int(6)?,
    })
}

/// [`super::sql::LICENSE_COLS`]. `state` is as of now; the API recomputes
/// it at the time it answers.
pub(crate) fn license(r: &impl Cells) -> Result<License> {
    let status = LicenseStatus::parse(&r.text(2)?).ok_or_else(|| bad_value("status"))?;
    let mut l = License {
        lid: r.text(0)?,
        account_id: r.text(1)?,
        status,
        state: crate::domain::LicenseState::Active,
        starts_at: r.int(3)?,
        expires_at: r.int(4)?,
        max_instances: r.int(5)?,
        terms: r.json(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
        version: r.int(9)?,
        over_limit: r.opt_json(10)?,
    };
    l.state = license_state(&l, charter_token::now());
    Ok(l)
}

/// [`super::sql::INSTANCE_COLS`]; with [`super::sql::INSTANCE_COLS`]`, credentials`
/// the sealed credentials follow at [`INSTANCE_WIDTH`].
pub(crate) fn instance(r: &impl Cells) -> Result<Instance> {
    Ok(Instance {
        id: r.text(0)?,
        lid: r.text(1)?,
        url: r.text(2)?,
        dialect: Dialect::parse(&r.text(3)?).ok_or_else(|| bad_value("dialect"))?,
        push_enabled: r.flag(4)?,
        last_jti: r.opt_text(5)?,
        last_issued_at: r.opt_int(6)?,
        next_renewal_at: r.opt_int(7)?,
        usage: r.opt_json(8)?,
        usage_reported_at: r.opt_int(9)?,
        created_at: r.int(10)?,
        updated_at: r.int(11)?,
        token_expires_at: r.opt_int(12)?,
        push_next_at: r.opt_int(13)?,
        push_attempts: r.int(14)?,
        push_last_error: r.opt_text(15)?,
        push_last_ok_at: r.opt_int(16)?,
        push_at_risk: r.flag(17)?,
        removal_pending: r.flag(18)?,
        push_pending_jti: r.opt_text(19)?,
        version: r.int(20)?,
        has_credentials: r.flag(21)?,
    })
}

/// Columns of [`super::sql::INSTANCE_COLS`].
pub(crate) const INSTANCE_WIDTH: usize = 22;

/// An instance followed by its sealed credentials (a push claim).
pub(crate) fn push_job(r: &impl Cells) -> Result<super::PushJob> {
    Ok(super::PushJob {
        instance: instance(r)?,
        credentials: r.opt_text(INSTANCE_WIDTH)?,
    })
}

/// [`super::sql::TOKEN_COLS`].
pub(crate) fn token(r: &impl Cells) -> Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.text(0)?,
        lid: r.text(1)?,
        instance_id: r.text(2)?,
        kid: r.text(3)?,
        iat: r.int(4)?,
        nbf: r.int(5)?,
        exp: r.int(6)?,
        reason: TokenReason::parse(&r.text(7)?).ok_or_else(|| bad_value("reason"))?,
        renewed_from: r.opt_text(8)?,
        token: r.text(9)?,
    })
}

/// [`super::sql::SA_COLS`], starting at column `o`.
pub(crate) fn service_account_at(r: &impl Cells, o: usize) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: r.int(o)?,
        name: r.text(o + 1)?,
        login: r.text(o + 2)?,
        role: Role::parse(&r.text(o + 3)?).ok_or_else(|| bad_value("role"))?,
        is_disabled: r.flag(o + 4)?,
        tokens: r.int(o + 5)?,
        created_at: r.int(o + 6)?,
        updated_at: r.int(o + 7)?,
    })
}

pub(crate) fn service_account(r: &impl Cells) -> Result<ServiceAccount> {
    service_account_at(r, 0)
}

/// [`super::sql::SA_TOKEN_COLS`].
pub(crate) fn sa_token(r: &impl Cells) -> Result<SaToken> {
    Ok(SaToken {
        id: r.int(0)?,
        service_account_id: r.int(1)?,
        name: r.text(2)?,
        created_at: r.int(3)?,
        expires_at: r.opt_int(4)?,
        last_used_at: r.opt_int(5)?,
    })
}

/// [`super::sql::SA_TOKEN_COLS`]` , `[`super::sql::SA_COLS`].
pub(crate) fn sa_token_and_account(r: &impl Cells) -> Result<(SaToken, ServiceAccount)> {
    Ok((sa_token(r)?, service_account_at(r, 6)?))
}

/// [`super::sql::SA_TOKEN_COLS`]` , s.role`.
pub(crate) fn sa_token_and_role(r: &impl Cells) -> Result<(SaToken, Role)> {
    let role = Role::parse(&r.text(6)?).ok_or_else(|| bad_value("role"))?;
    Ok((sa_token(r)?, role))
}

/// [`super::sql::AUDIT_COLS`].
pub(crate) fn audit_event(r: &impl Cells) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.int(0)?,
        at: r.int(1)?,
        actor_kind: ActorKind::parse(&r.text(2)?).ok_or_else(|| bad_value("actor kind"))?,
        actor: r.text(3)?,
        action: r.text(4)?,
        target_type: r.text(5)?,
        target_id: r.text(6)?,
        ip: r.opt_text(7)?,
        detail: r.opt_json(8)?,
        events: Vec::new(),
    })
}

/// What a unique key says is taken; its message, once for both stores.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Taken<'a> {
    Product(&'a str),
    AccountSlug(&'a str),
    Instance {
        url: &'a str,
        lid: &'a str,
    },
    ServiceAccount(&'a str),
    SaToken {
        service_account_id: i64,
        name: &'a str,
    },
}

impl Taken<'_> {
    pub(crate) fn message(self) -> String {
        match self {
            Taken::Product(slug) => format!("product {slug} already exists"),
            Taken::AccountSlug(slug) => format!("an account with slug {slug} already exists"),
            Taken::Instance { url, lid } => {
                format!("instance {url} is already bound to license {lid}")
            }
            Taken::ServiceAccount(name) => format!("service account {name} already exists"),
            Taken::SaToken {
                service_account_id,
                name,
            } => format!("service account {service_account_id} already has a token named {name}"),
        }
    }

    /// A unique-key violation ([`StoreError::Conflict`]) becomes this
    /// message; other errors pass.
    pub(crate) fn or(self, e: impl Into<StoreError>) -> StoreError {
        match e.into() {
            StoreError::Conflict(_) => StoreError::Conflict(self.message()),
            other => other,
        }
    }
}
