//! Catalogue: product reads for everyone, creation and changes for admins.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::catalog::{CatalogQueries, CreateProduct, PopularProducts, UpdateProduct};
use domain::catalog::{NewProduct, Product, ProductId, ProductName, ProductPatch, Stock};
use domain::money::Points;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{AdminUser, AuthUser, Json, PageParams, PageQuery};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
use crate::routes::PageBody;

/// The catalogue use cases the routes call.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    pub create: Arc<CreateProduct>,
    pub update: Arc<UpdateProduct>,
    pub queries: Arc<CatalogQueries>,
    pub popular: Arc<PopularProducts>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/products").route(web::get().to(list)))
        // Before `/products/{id}`, which would take "popular" for an id.
        .service(web::resource("/products/popular").route(web::get().to(popular)))
        .service(web::resource("/products/{id}").route(web::get().to(detail)))
        .service(web::resource("/admin/products").route(web::post().to(create)))
        .service(web::resource("/admin/products/{id}").route(web::patch().to(update)));
}

/// A product; `stock` is what remains at the moment of the read.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
pub(crate) struct ProductBody {
    id: i64,
    name: String,
    /// The unit price in points (KRW).
    price: i64,
    stock: i64,
}

impl From<Product> for ProductBody {
    fn from(p: Product) -> Self {
        Self {
            id: p.id.get(),
            name: p.name.as_str().to_owned(),
            price: p.price.get(),
            stock: p.stock.get(),
        }
    }
}

fn name(raw: &str) -> Result<ProductName, ApiError> {
    ProductName::parse(raw).map_err(|e| ApiError::invalid_field("name", e))
}

fn price(raw: i64) -> Result<Points, ApiError> {
    Points::new(raw).ok_or_else(|| ApiError::invalid_field("price", "must be 0 or more"))
}

fn stock(raw: i64) -> Result<Stock, ApiError> {
    Stock::new(raw).map_err(|e| ApiError::invalid_field("stock", e))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewProduct)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[schema(schema_with = crate::schema::product_name)]
    name: String,
    #[schema(minimum = 0, example = 3_000)]
    price: i64,
    #[schema(minimum = 0, example = 100)]
    stock: i64,
}

impl CreateBody {
    fn try_into_domain(self) -> Result<NewProduct, ApiError> {
        Ok(NewProduct {
            name: name(&self.name)?,
            price: price(self.price)?,
            stock: stock(self.stock)?,
        })
    }
}

/// Any of the fields; those left out (or null) keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ProductPatch)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[schema(schema_with = crate::schema::product_name_patch)]
    name: Option<String>,
    #[schema(minimum = 0)]
    price: Option<i64>,
    #[schema(minimum = 0)]
    stock: Option<i64>,
}

impl PatchBody {
    fn try_into_domain(self) -> Result<ProductPatch, ApiError> {
        Ok(ProductPatch {
            name: self.name.as_deref().map(name).transpose()?,
            price: self.price.map(price).transpose()?,
            stock: self.stock.map(stock).transpose()?,
        })
    }
}

pub(crate) fn product_id(raw: i64) -> ProductId {
    ProductId::new(raw)
}

/// List products
///
/// Ordered by id.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    operation_id = "listProducts",
    tag = "catalog",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of products", body = PageBody<ProductBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn list(
    api: web::Data<CatalogApi>,
    _caller: AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.list(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, ProductBody::from)))
}

/// A best seller: quantity sold in paid orders of the last 72 hours.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PopularProduct)]
#[serde(rename_all = "camelCase")]
struct PopularBody {
    id: i64,
    name: String,
    price: i64,
    sold_quantity: i64,
}

/// Popular products
///
/// The top 5 by quantity sold in paid orders of the last 72 hours, most sold
/// first, ties by lower id; fewer when fewer were sold.
#[utoipa::path(
    get,
    path = "/api/v1/products/popular",
    operation_id = "listPopularProducts",
    tag = "catalog",
    responses((status = 200, description = "At most 5 products", body = Vec<PopularBody>)),
    security(("bearer" = [])),
)]
async fn popular(api: web::Data<CatalogApi>, _caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let top = api.popular.get().await?;
    let body: Vec<PopularBody> = top
        .into_iter()
        .map(|p| PopularBody {
            id: p.product.id.get(),
            name: p.product.name.as_str().to_owned(),
            price: p.product.price.get(),
            sold_quantity: p.sold,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// One product
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    operation_id = "getProduct",
    tag = "catalog",
    params(("id" = i64, Path, description = "The product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 400, description = "`VALIDATION_FAILED`: the id is not an integer", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`PRODUCT_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn detail(
    api: web::Data<CatalogApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let product = api.queries.get(product_id(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(ProductBody::from(product)))
}

/// Create a product (admin)
#[utoipa::path(
    post,
    path = "/api/v1/admin/products",
    operation_id = "createProduct",
    tag = "catalog",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 400, description = "`VALIDATION_FAILED`: name 1..=200 characters, price ≥ 0, stock ≥ 0", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn create(
    api: web::Data<CatalogApi>,
    _admin: AdminUser,
    Json(body): Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api.create.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(ProductBody::from(product)))
}

/// Change a product (admin)
#[utoipa::path(
    patch,
    path = "/api/v1/admin/products/{id}",
    operation_id = "updateProduct",
    tag = "catalog",
    params(("id" = i64, Path, description = "The product id")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The product as changed", body = ProductBody),
        (status = 400, description = "`VALIDATION_FAILED`: name 1..=200 characters, price ≥ 0, stock ≥ 0", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`PRODUCT_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn update(
    api: web::Data<CatalogApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    Json(body): Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api
        .update
        .execute(product_id(id.into_inner()), body.try_into_domain()?)
        .await?;
    Ok(HttpResponse::Ok().json(ProductBody::from(product)))
}
