//! The [`CatalogStore`] on Postgres.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::catalog::{
    CatalogStore, NewProduct, Product, ProductId, ProductName, ProductPatch, Stock,
};
use domain::error::Unavailable;
use domain::money::Points;
use domain::paging::{Page, PageRequest};

use super::paging::page_of;
use super::schema::products;
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgCatalogStore {
    db: Postgres,
}

impl std::fmt::Debug for PgCatalogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalogStore")
    }
}

impl PgCatalogStore {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
struct ProductRow {
    id: i64,
    name: String,
    price: i64,
    stock: i64,
}

impl ProductRow {
    fn into_product(self) -> Result<Product, Unavailable> {
        let corrupt =
            |what: &str| unavailable(format!("products row {} has an invalid {what}", self.id));
        Ok(Product {
            id: ProductId::new(self.id),
            name: ProductName::parse(&self.name).map_err(|_| corrupt("name"))?,
            price: Points::new(self.price).ok_or_else(|| corrupt("price"))?,
            stock: Stock::new(self.stock).map_err(|_| corrupt("stock"))?,
        })
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = products)]
struct ProductChanges<'a> {
    name: Option<&'a str>,
    price: Option<i64>,
    stock: Option<i64>,
}

#[async_trait]
impl CatalogStore for PgCatalogStore {
    async fn create(&self, product: NewProduct) -> Result<Product, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                diesel::insert_into(products::table)
                    .values((
                        products::name.eq(product.name.as_str()),
                        products::price.eq(product.price.get()),
                        products::stock.eq(product.stock.get()),
                    ))
                    .returning(ProductRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_product()
            })
            .await
    }

    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Option<Product>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let changes = ProductChanges {
                    name: patch.name.as_ref().map(ProductName::as_str),
                    price: patch.price.map(Points::get),
                    stock: patch.stock.map(Stock::get),
                };
                diesel::update(products::table.find(id.get()))
                    .set((changes, products::updated_at.eq(diesel::dsl::now)))
                    .returning(ProductRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                    .map(ProductRow::into_product)
                    .transpose()
            })
            .await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                products::table
                    .find(id.get())
                    .select(ProductRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                    .map(ProductRow::into_product)
                    .transpose()
            })
            .await
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, Unavailable> {
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                products::table
                    .filter(products::id.eq_any(&ids))
                    .order(products::id.asc())
                    .select(ProductRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(ProductRow::into_product)
                    .collect()
            })
            .await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Product>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: i64 = products::table
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows = products::table
                    .order(products::id.asc())
                    .offset(page.offset())
                    .limit(page.limit())
                    .select(ProductRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                page_of(rows, ProductRow::into_product, page, total)
            })
            .await
    }
}
