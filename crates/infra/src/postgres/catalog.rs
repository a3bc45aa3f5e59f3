//! The [`CatalogStore`] on Postgres.

use async_trait::async_trait;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel_async::RunQueryDsl;
use domain::catalog::{
    CatalogStore, NewProduct, PatchRefused, Product, ProductId, ProductName, ProductPatch,
    ProductVersion, Stock, StockChange,
};
use domain::error::Unavailable;
use domain::money::Points;
use domain::paging::PageRequest;

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

/// A row and its version: Postgres' `xmin`, the transaction that wrote
/// the row as it is, which every update (a sale's decrement included)
/// replaces. No column and no trigger to keep, nothing added to the
/// order path.
type VersionedRow = (ProductRow, i64);

/// `xmin` as a number, for the select list and `RETURNING`.
fn version() -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>("products.xmin::text::bigint")
}

impl ProductRow {
    fn into_product((row, version): VersionedRow) -> Result<Product, Unavailable> {
        let corrupt =
            |what: &str| unavailable(format!("products row {} has an invalid {what}", row.id));
        Ok(Product {
            id: ProductId::new(row.id),
            name: ProductName::parse(&row.name).map_err(|_| corrupt("name"))?,
            price: Points::new(row.price).ok_or_else(|| corrupt("price"))?,
            stock: Stock::new(row.stock).map_err(|_| corrupt("stock"))?,
            version: ProductVersion::new(u64::try_from(version).map_err(|_| corrupt("xmin"))?),
        })
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = products)]
struct ProductChanges<'a> {
    name: Option<&'a str>,
    price: Option<i64>,
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
                    .returning((ProductRow::as_returning(), version()))
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)
                    .and_then(ProductRow::into_product)
            })
            .await
    }

    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Result<Product, PatchRefused>, Unavailable> {
        // The new stock is `stock * keep + add`: set (keep 0), add a delta
        // (keep 1) or leave it (keep 1, add 0), one assignment either way.
        let (keep, add) = match patch.stock {
            Some(StockChange::To(stock)) => (0, stock.get()),
            Some(StockChange::By(units)) => (1, units),
            None => (1, 0),
        };
        let delta = if keep == 1 { add } else { 0 };
        // One statement: the version check and a delta against the stock as
        // it is then are its WHERE, so a concurrent sale is either before it
        // (it moved the version, or the delta adds to what it left) or after.
        // Without a version the first is true; without a delta the second
        // reads `stock >= 0`, true of every row.
        let version_text = patch.if_version.map(|v| v.get().to_string());
        let at_version = sql::<Bool>("(")
            .bind::<Nullable<Text>, _>(version_text.clone())
            .sql("::text IS NULL OR products.xmin::text = ")
            .bind::<Nullable<Text>, _>(version_text)
            .sql(")");
        let condition = products::id
            .eq(id.get())
            .and(at_version)
            .and(products::stock.ge(delta.saturating_neg()))
            .and(products::stock.le(i64::MAX - delta.max(0)));
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let changes = ProductChanges {
                    name: patch.name.as_ref().map(ProductName::as_str),
                    price: patch.price.map(Points::get),
                };
                let updated: Option<VersionedRow> =
                    diesel::update(products::table.filter(condition))
                        .set((
                            changes,
                            products::stock.eq(products::stock * keep + add),
                            products::updated_at.eq(diesel::dsl::now),
                        ))
                        .returning((ProductRow::as_returning(), version()))
                        .get_result(&mut *conn)
                        .await
                        .optional()
                        .map_err(unavailable)?;
                if let Some(row) = updated {
                    return ProductRow::into_product(row).map(Ok);
                }
                // Nothing matched: say which condition failed.
                let current: Option<i64> = products::table
                    .find(id.get())
                    .select(version())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?;
                let moved = |now: i64| {
                    patch
                        .if_version
                        .is_some_and(|want| u64::try_from(now).ok() != Some(want.get()))
                };
                Ok(Err(match current {
                    None => PatchRefused::NotFound,
                    Some(now) if moved(now) => PatchRefused::VersionMoved,
                    Some(_) if delta > 0 => PatchRefused::StockAboveMaximum,
                    Some(_) => PatchRefused::StockBelowZero,
                }))
            })
            .await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                products::table
                    .find(id.get())
                    .select((ProductRow::as_select(), version()))
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
                    .select((ProductRow::as_select(), version()))
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(ProductRow::into_product)
                    .collect()
            })
            .await
    }

    async fn count(&self) -> Result<u64, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: i64 = products::table
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(u64::try_from(total).unwrap_or(0))
            })
            .await
    }

    async fn page(&self, page: PageRequest) -> Result<Vec<Product>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                products::table
                    .order(products::id.asc())
                    .offset(page.offset())
                    .limit(page.limit())
                    .select((ProductRow::as_select(), version()))
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(ProductRow::into_product)
                    .collect()
            })
            .await
    }
}
