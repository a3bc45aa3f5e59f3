//! Popular products: the ranking from the event consumer (Redis), or from
//! Postgres when Redis is down, joined with the catalogue and cached for a
//! second so a busy front page costs one ranking read per second per instance.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::catalog::{CatalogStore, POPULAR_LIMIT, PopularProduct, SalesRanking};
use domain::error::Unavailable;

const CACHE_TTL: Duration = Duration::from_secs(1);

pub struct PopularProducts {
    ranking: Arc<dyn SalesRanking>,
    fallback: Arc<dyn SalesRanking>,
    catalog: Arc<dyn CatalogStore>,
    cache: Mutex<Option<(Instant, Vec<PopularProduct>)>>,
}

impl std::fmt::Debug for PopularProducts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PopularProducts")
    }
}

impl PopularProducts {
    pub fn new(
        ranking: Arc<dyn SalesRanking>,
        fallback: Arc<dyn SalesRanking>,
        catalog: Arc<dyn CatalogStore>,
    ) -> Self {
        Self {
            ranking,
            fallback,
            catalog,
            cache: Mutex::new(None),
        }
    }

    /// The top products, most sold first.
    ///
    /// # Errors
    /// [`Unavailable`] when both rankings (or the catalogue) fail.
    pub async fn get(&self) -> Result<Vec<PopularProduct>, Unavailable> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, top)) = cache.as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(top.clone());
        }
        let sales = match self.ranking.top(POPULAR_LIMIT).await {
            Ok(sales) => sales,
            Err(err) => {
                tracing::warn!(error = %err, "ranking unavailable; counting from Postgres");
                self.fallback.top(POPULAR_LIMIT).await?
            }
        };
        let ids: Vec<_> = sales.iter().map(|s| s.product_id).collect();
        let products = self.catalog.get_many(&ids).await?;
        let top: Vec<PopularProduct> = sales
            .into_iter()
            .filter_map(|s| {
                let product = products.iter().find(|p| p.id == s.product_id)?.clone();
                Some(PopularProduct {
                    product,
                    sold: s.sold,
                })
            })
            .collect();
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), top.clone()));
        }
        Ok(top)
    }
}

#[cfg(test)]
mod tests {
    use domain::catalog::{
        MockCatalogStore, MockSalesRanking, Product, ProductId, ProductName, ProductSales, Stock,
    };
    use domain::money::Points;

    use super::*;

    fn sales(pairs: &[(i64, i64)]) -> Vec<ProductSales> {
        pairs
            .iter()
            .map(|(id, sold)| ProductSales {
                product_id: ProductId::new(*id),
                sold: *sold,
            })
            .collect()
    }

    fn catalog() -> MockCatalogStore {
        let mut catalog = MockCatalogStore::new();
        catalog.expect_get_many().returning(|ids| {
            Ok(ids
                .iter()
                .map(|id| Product {
                    id: *id,
                    name: ProductName::parse(&format!("p{id}")).expect("valid"),
                    price: Points::ZERO,
                    stock: Stock::new(1).expect("valid"),
                    version: Default::default(),
                })
                .collect())
        });
        catalog
    }

    #[tokio::test]
    async fn reads_the_ranking_joins_the_catalogue_and_caches_briefly() {
        let mut ranking = MockSalesRanking::new();
        ranking
            .expect_top()
            .times(1)
            .returning(|_| Ok(sales(&[(2, 5), (1, 3)])));
        let mut fallback = MockSalesRanking::new();
        fallback.expect_top().never();
        let popular =
            PopularProducts::new(Arc::new(ranking), Arc::new(fallback), Arc::new(catalog()));

        let first = popular.get().await.expect("ranked");
        let cached = popular.get().await.expect("ranked");

        let ids: Vec<i64> = first.iter().map(|p| p.product.id.get()).collect();
        assert_eq!(ids, [2, 1]);
        assert_eq!(first[0].sold, 5);
        assert_eq!(cached, first);
    }

    #[tokio::test]
    async fn falls_back_to_the_other_ranking_when_the_first_is_down() {
        let mut ranking = MockSalesRanking::new();
        ranking
            .expect_top()
            .returning(|_| Err(Unavailable::new("redis", "down")));
        let mut fallback = MockSalesRanking::new();
        fallback
            .expect_top()
            .withf(|limit| *limit == 5)
            .returning(|_| Ok(sales(&[(7, 1)])));
        let popular =
            PopularProducts::new(Arc::new(ranking), Arc::new(fallback), Arc::new(catalog()));

        let top = popular.get().await.expect("ranked");

        assert_eq!(
            top.iter().map(|p| p.product.id.get()).collect::<Vec<_>>(),
            [7]
        );
    }
}
