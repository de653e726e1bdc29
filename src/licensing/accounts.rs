//! Accounts: the vendor's customers.

use charter_token::now;
use serde::Deserialize;
use serde_json::json;

use super::{Actor, Error, Licensing, Result, changes, check_version, retry_stale};
use crate::domain::{Account, Listing, Page, Slug, Text};

/// An account to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub company: Text,
    /// Defaults to the company name.
    pub account: Option<Text>,
    pub slug: Slug,
}

/// The fields of an account that change; absent ones stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub company: Option<Text>,
    pub account: Option<Text>,
    pub slug: Option<Slug>,
}

pub async fn get(ctx: &Licensing, id: &str) -> Result<Account> {
    ctx.store
        .get_account(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("account {id} not found")))
}

pub async fn list(ctx: &Licensing, page: &Page) -> Result<Listing<Account>> {
    Ok(ctx.store.list_accounts(page).await?)
}

pub async fn create(ctx: &Licensing, actor: &Actor, input: NewAccount) -> Result<Account> {
    let t = now();
    let account = Account {
        id: uuid::Uuid::now_v7().to_string(),
        account: input.account.as_ref().unwrap_or(&input.company).to_string(),
        company: input.company.into(),
        slug: input.slug.into(),
        created_at: t,
        updated_at: t,
        version: 1,
    };
    let event = actor.event("account.create", "account", &account.id);
    ctx.store.create_account(&account, &event).await?;
    tracing::info!(account = %account.id, by = %actor.name, "account created");
    Ok(account)
}

pub async fn update(
    ctx: &Licensing,
    actor: &Actor,
    id: &str,
    patch: AccountPatch,
    if_match: Option<i64>,
) -> Result<Account> {
    let _turn = ctx.locks.lock(format!("account:{id}")).await;
    retry_stale(if_match, || async {
        let old = get(ctx, id).await?;
        check_version("account", if_match, old.version)?;
        let mut new = old.clone();
        if let Some(v) = &patch.company {
            new.company = v.to_string();
        }
        if let Some(v) = &patch.account {
            new.account = v.to_string();
        }
        if let Some(v) = &patch.slug {
            new.slug = v.to_string();
        }
        new.updated_at = now();
        let mut event = actor.event("account.update", "account", id);
        event.detail = Some(json!({ "changes": changes(&old, &new) }));
        Ok(ctx.store.update_account(&new, old.version, &event).await?)
    })
    .await
}
