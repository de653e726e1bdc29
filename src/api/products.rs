//! `/api/products`: what the vendor sells and the features each may grant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path};
use super::precondition::{IfMatch, tagged};
use super::{ApiResult, AppState};
use crate::domain::Product;
use crate::licensing::products::{self, NewProduct, ProductPatch};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product))
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
    let product = products::create(&state, &p.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Gets a product (its `ETag` is what `If-Match` on a PATCH names).
#[utoipa::path(get, path = "/api/products/{slug}", tag = "products", security(("basic" = []), ("service_account" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = Product, headers(("ETag" = String, description = "the product's version"))),
              (status = 404, body = charter_token::ErrorBody)))]
async fn get_product(
    p: Principal,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let product = products::get(&state, &slug).await?;
    Ok(tagged(product.version, product))
}

/// Changes a product's name or features; with `If-Match`, only the version it names.
#[utoipa::path(patch, path = "/api/products/{slug}", tag = "products", security(("basic" = []), ("service_account" = [])),
    params(("slug" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag the change is for", pattern = r#"^(\*|(W/)?"[0-9]+")$"#)),
    request_body = ProductPatch,
    responses((status = 200, body = Product, headers(("ETag" = String, description = "the new version"))),
              (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody),
              (status = 412, description = "changed since the If-Match version", body = charter_token::ErrorBody)))]
async fn update_product(
    p: Principal,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<ProductPatch>,
) -> ApiResult<Response> {
    p.require(Action::LicensingWrite)?;
    let product = products::update(&state, &p.actor(), &slug, body, if_match).await?;
    Ok(tagged(product.version, product))
}
