//! Products: what the vendor sells and the features a license for it may grant.

use charter_token::now;
use serde::Deserialize;
use serde_json::json;

use super::{Actor, Error, Licensing, Result, changes, check_version, retry_stale};
use crate::domain::{FeatureName, Product, Slug, Text};

/// A product to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub slug: Slug,
    pub name: Text,
    /// At most 500.
    #[serde(default)]
    pub features: Vec<FeatureName>,
}

/// The fields of a product that change; absent ones stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    pub name: Option<Text>,
    pub features: Option<Vec<FeatureName>>,
}

/// The features in order, each once.
fn features(v: Vec<FeatureName>) -> Result<Vec<String>> {
    if v.len() > 500 {
        return Err(Error::invalid("features", "at most 500 features"));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(v.into_iter()
        .map(String::from)
        .filter(|f| seen.insert(f.clone()))
        .collect())
}

pub async fn get(ctx: &Licensing, slug: &str) -> Result<Product> {
    ctx.store
        .get_product(slug)
        .await?
        .ok_or_else(|| Error::NotFound(format!("product {slug} not found")))
}

pub async fn create(ctx: &Licensing, actor: &Actor, input: NewProduct) -> Result<Product> {
    let t = now();
    let product = Product {
        slug: input.slug.into(),
        name: input.name.into(),
        features: features(input.features)?,
        created_at: t,
        updated_at: t,
        version: 1,
    };
    let event = actor.event("product.create", "product", &product.slug);
    ctx.store.create_product(&product, &event).await?;
    tracing::info!(product = %product.slug, by = %actor.name, "product created");
    Ok(product)
}

pub async fn update(
    ctx: &Licensing,
    actor: &Actor,
    slug: &str,
    patch: ProductPatch,
    if_match: Option<i64>,
) -> Result<Product> {
    let features = patch.features.map(features).transpose()?;
    let _turn = ctx.locks.lock(format!("product:{slug}")).await;
    retry_stale(if_match, || async {
        let old = get(ctx, slug).await?;
        check_version("product", if_match, old.version)?;
        let mut new = old.clone();
        if let Some(name) = &patch.name {
            new.name = name.to_string();
        }
        if let Some(f) = &features {
            new.features = f.clone();
        }
        new.updated_at = now();
        let mut event = actor.event("product.update", "product", slug);
        event.detail = Some(json!({ "changes": changes(&old, &new) }));
        Ok(ctx.store.update_product(&new, old.version, &event).await?)
    })
    .await
}
