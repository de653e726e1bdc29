//! `/api/products`: what the vendor sells and the features each may grant.

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::now;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit;
use super::auth::{Action, Principal};
use super::extract::{Json, Path};
use super::{ApiError, ApiResult, AppState, check_slug, check_text};
use crate::domain::Product;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub slug: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    pub features: Option<Vec<String>>,
}

fn check_features(features: &[String]) -> ApiResult<()> {
    if features.len() > 500 {
        return Err(ApiError::field("features", "at most 500 features"));
    }
    for f in features {
        check_slug("features", f)?;
    }
    Ok(())
}

async fn load(state: &AppState, slug: &str) -> ApiResult<Product> {
    state
        .store
        .get_product(slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product {slug} not found")))
}

/// Lists products.
#[utoipa::path(get, path = "/api/products", tag = "products", security(("basic" = []), ("service_account" = [])),
    responses((status = 200, body = Vec<Product>), (status = 401, body = charter_token::ErrorBody)))]
async fn list_products(
    p: Principal,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<Product>>> {
    p.require(Action::LicensingRead)?;
    Ok(Json(state.store.list_products().await?))
}

/// Creates a product.
#[utoipa::path(post, path = "/api/products", tag = "products", security(("basic" = []), ("service_account" = [])), request_body = NewProduct,
    responses((status = 201, body = Product), (status = 400, body = charter_token::ErrorBody),
              (status = 409, body = charter_token::ErrorBody)))]
async fn create_product(
    p: Principal,
    State(state): State<AppState>,
    Json(body): Json<NewProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    p.require(Action::LicensingWrite)?;
    check_slug("slug", &body.slug)?;
    check_text("name", &body.name, 200)?;
    check_features(&body.features)?;
    let t = now();
    let product = Product {
        slug: body.slug,
        name: body.name,
        features: dedup(body.features),
        created_at: t,
        updated_at: t,
    };
    state.store.insert_product(&product).await?;
    audit::record(&state, p.event("product.create", "product", &product.slug)).await;
    tracing::info!(product = %product.slug, by = p.name(), "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

/// Gets a product.
#[utoipa::path(get, path = "/api/products/{slug}", tag = "products", security(("basic" = []), ("service_account" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = Product), (status = 404, body = charter_token::ErrorBody)))]
async fn get_product(
    p: Principal,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Product>> {
    p.require(Action::LicensingRead)?;
    Ok(Json(load(&state, &slug).await?))
}

/// Changes a product's name or features.
#[utoipa::path(patch, path = "/api/products/{slug}", tag = "products", security(("basic" = []), ("service_account" = [])),
    params(("slug" = String, Path)), request_body = ProductPatch,
    responses((status = 200, body = Product), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn update_product(
    p: Principal,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Json(body): Json<ProductPatch>,
) -> ApiResult<Json<Product>> {
    p.require(Action::LicensingWrite)?;
    let mut product = load(&state, &slug).await?;
    if let Some(name) = body.name {
        check_text("name", &name, 200)?;
        product.name = name;
    }
    if let Some(features) = body.features {
        check_features(&features)?;
        product.features = dedup(features);
    }
    product.updated_at = now();
    state.store.update_product(&product).await?;
    audit::record(&state, p.event("product.update", "product", &product.slug)).await;
    Ok(Json(product))
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}
