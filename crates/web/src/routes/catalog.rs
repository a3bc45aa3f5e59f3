//! Catalogue: product reads for everyone, creation and changes for admins.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::catalog::{Catalog, PopularProducts};
use domain::catalog::{NewProduct, Product, ProductId, ProductName, ProductPatch, Stock};
use domain::money::Points;
use serde::{Deserialize, Serialize};

use crate::extract::{AdminUser, AuthUser, Json, PageParams};
use crate::problem::ApiError;
use crate::routes::PageBody;

/// The catalogue use cases the routes call.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    pub catalog: Arc<Catalog>,
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

#[derive(Debug, Serialize)]
pub(crate) struct ProductBody {
    id: i64,
    name: String,
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

#[derive(Debug, Deserialize)]
struct CreateBody {
    name: String,
    price: i64,
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

#[derive(Debug, Deserialize)]
struct PatchBody {
    name: Option<String>,
    price: Option<i64>,
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

async fn list(
    api: web::Data<CatalogApi>,
    _caller: AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.catalog.list(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, ProductBody::from)))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PopularBody {
    id: i64,
    name: String,
    price: i64,
    sold_quantity: i64,
}

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

async fn detail(
    api: web::Data<CatalogApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let product = api.catalog.get(product_id(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(ProductBody::from(product)))
}

async fn create(
    api: web::Data<CatalogApi>,
    _admin: AdminUser,
    Json(body): Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api.catalog.create(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(ProductBody::from(product)))
}

async fn update(
    api: web::Data<CatalogApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    Json(body): Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api
        .catalog
        .update(product_id(id.into_inner()), body.try_into_domain()?)
        .await?;
    Ok(HttpResponse::Ok().json(ProductBody::from(product)))
}
