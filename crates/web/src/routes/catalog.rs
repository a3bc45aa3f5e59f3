//! Catalogue: product reads for everyone, creation and changes for admins.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use application::catalog::{CatalogQueries, CreateProduct, PopularProducts, UpdateProduct};
use domain::catalog::{
    NewProduct, Product, ProductId, ProductName, ProductPatch, ProductVersion, Stock, StockChange,
};
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

/// The product's `ETag`: its version, a strong entity tag.
fn entity_tag(version: ProductVersion) -> String {
    format!("\"{}\"", version.get())
}

/// `status` with the product as the body and its `ETag`.
fn product_response(mut builder: HttpResponseBuilder, product: Product) -> HttpResponse {
    builder
        .insert_header((header::ETAG, entity_tag(product.version)))
        .json(ProductBody::from(product))
}

/// A version no product has (versions are Postgres transaction ids, 32
/// bits wide): what an entity tag this service never issued names.
const NO_VERSION: ProductVersion = ProductVersion::new(u64::MAX);

/// The version an `If-Match` names: `None` for `*` (any current version);
/// one entity tag otherwise. A weak tag never matches (RFC 9110 compares
/// `If-Match` strongly), nor does a tag this service did not issue: both
/// name [`NO_VERSION`], so the precondition fails (412). Only a value that
/// is not an entity tag at all is a 400.
fn if_match(req: &HttpRequest) -> Result<Option<Option<ProductVersion>>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid_field(
            "If-Match",
            "must be `*` or one entity tag from the product's ETag, such as \"1234\"",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text == "*" {
        return Ok(Some(None));
    }
    let (weak, tag) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let opaque = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| t.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)))
        .ok_or_else(invalid)?;
    let version = match opaque.parse::<u64>() {
        Ok(version) if !weak => ProductVersion::new(version),
        _ => NO_VERSION,
    };
    Ok(Some(Some(version)))
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

/// Any of the fields; those left out (or null) keep their value. `stock`
/// and `stockDelta` exclude each other.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ProductPatch)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchBody {
    #[schema(schema_with = crate::schema::product_name_patch)]
    name: Option<String>,
    #[schema(minimum = 0)]
    price: Option<i64>,
    /// The new stock, only with `If-Match` (the product's `ETag`): units
    /// sold since that read would otherwise be overwritten.
    #[schema(minimum = 0)]
    stock: Option<i64>,
    /// Units to add to the stock as it is at that moment (negative: to
    /// take), so a restock during a sale loses no unit sold meanwhile.
    #[schema(example = 50)]
    stock_delta: Option<i64>,
}

impl PatchBody {
    fn try_into_domain(
        self,
        if_match: Option<Option<ProductVersion>>,
    ) -> Result<ProductPatch, ApiError> {
        let stock = match (self.stock, self.stock_delta) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_field(
                    "stockDelta",
                    "send either stock or stockDelta, not both",
                ));
            }
            // `*` names no version: it would not stop a lost update.
            (Some(_), None) if !matches!(if_match, Some(Some(_))) => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "PRECONDITION_REQUIRED",
                    "Precondition required",
                    "an absolute stock needs If-Match with the product's ETag, \
                     not `*` (or send stockDelta)",
                ));
            }
            (Some(units), None) => Some(StockChange::To(stock(units)?)),
            (None, Some(units)) => Some(StockChange::By(units)),
            (None, None) => None,
        };
        Ok(ProductPatch {
            name: self.name.as_deref().map(name).transpose()?,
            price: self.price.map(price).transpose()?,
            stock,
            if_version: if_match.flatten(),
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
        (status = 200, description = "The product", body = ProductBody,
            headers(("ETag" = String, description = "The product's version; send it as `If-Match` to set an absolute `stock`"))),
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
    Ok(product_response(HttpResponse::Ok(), product))
}

/// Create a product (admin)
#[utoipa::path(
    post,
    path = "/api/v1/admin/products",
    operation_id = "createProduct",
    tag = "catalog",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = ProductBody,
            headers(("ETag" = String, description = "The product's version"))),
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
    Ok(product_response(HttpResponse::Created(), product))
}

/// Change a product (admin)
#[utoipa::path(
    patch,
    path = "/api/v1/admin/products/{id}",
    operation_id = "updateProduct",
    tag = "catalog",
    params(
        ("id" = i64, Path, description = "The product id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The product's `ETag` (or `*`): the change applies only while the product is at that version. Required with an absolute `stock`.",
            pattern = r#"^(\*|(W/)?"[\x21\x23-\x7E]*")$"#, example = "*"),
    ),
    request_body(content = PatchBody, example = json!({"stockDelta": 50})),
    responses(
        (status = 200, description = "The product as changed", body = ProductBody,
            headers(("ETag" = String, description = "The product's new version"))),
        (status = 400, description = "`VALIDATION_FAILED`: name 1..=200 characters, price ≥ 0, stock ≥ 0, not both `stock` and `stockDelta`, a malformed `If-Match`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`PRODUCT_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`INSUFFICIENT_STOCK`: the `stockDelta` would take the stock below 0", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 412, description = "`PRECONDITION_FAILED`: the product changed since the `If-Match` version (a sale included); read it again", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 428, description = "`PRECONDITION_REQUIRED`: an absolute `stock` without `If-Match`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn update(
    api: web::Data<CatalogApi>,
    _admin: AdminUser,
    req: HttpRequest,
    id: web::Path<i64>,
    Json(body): Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.try_into_domain(if_match(&req)?)?;
    let product = api
        .update
        .execute(product_id(id.into_inner()), patch)
        .await?;
    Ok(product_response(HttpResponse::Ok(), product))
}
