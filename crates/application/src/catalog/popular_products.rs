//! Popular products: the ranking from the event consumer (Redis), or from
//! Postgres when Redis is down, joined with the catalogue and cached for a
//! second so a busy front page costs one ranking read per second per instance.
//! One caller refills it while the others wait for its answer: with Redis
//! down, the refill is Postgres adding up 72 hours of orders, which a
//! front page's callers must not all start at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::catalog::{CatalogStore, POPULAR_LIMIT, PopularProduct, SalesRanking};
use domain::error::Unavailable;

const CACHE_TTL: Duration = Duration::from_secs(1);
/// How long a ranking counted by Postgres is kept: adding up 72 hours of
/// orders took 2.7 s on a million orders (docs/caching.md, section 9), so
/// while Redis is down each instance does it at most twice a minute.
const FALLBACK_TTL: Duration = Duration::from_secs(30);

pub struct PopularProducts {
    ranking: Arc<dyn SalesRanking>,
    fallback: Arc<dyn SalesRanking>,
    catalog: Arc<dyn CatalogStore>,
    /// The list, when it was made, and how long it is kept.
    cache: Mutex<Option<(Instant, Duration, Vec<PopularProduct>)>>,
    refill: futures_util::lock::Mutex<()>,
    /// When the last refill failed, and which service failed it.
    failed: Mutex<Option<(Instant, &'static str)>>,
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
            refill: futures_util::lock::Mutex::new(()),
            failed: Mutex::new(None),
        }
    }

    /// The top products, most sold first.
    ///
    /// # Errors
    /// [`Unavailable`] when both rankings (or the catalogue) fail.
    pub async fn get(&self) -> Result<Vec<PopularProduct>, Unavailable> {
        if let Some(top) = self.cached() {
            return Ok(top);
        }
        let arrived = Instant::now();
        let _refilling = self.refill.lock().await;
        // Refilled by the caller this one waited for.
        if let Some(top) = self.cached() {
            return Ok(top);
        }
        // Or that refill failed: its answer is this one's too, rather than
        // every waiter trying the failing dependency again in turn.
        if let Ok(failed) = self.failed.lock()
            && let Some((at, service)) = *failed
            && at > arrived
        {
            return Err(Unavailable::new(
                service,
                "the popular-products refill this read waited for failed",
            ));
        }
        let refilled = self.refill().await;
        if let (Err(err), Ok(mut failed)) = (&refilled, self.failed.lock()) {
            *failed = Some((Instant::now(), err.service()));
        }
        refilled
    }

    async fn refill(&self) -> Result<Vec<PopularProduct>, Unavailable> {
        let (sales, ttl) = match self.ranking.top(POPULAR_LIMIT).await {
            Ok(sales) => (sales, CACHE_TTL),
            Err(err) => {
                tracing::warn!(error = %err, "ranking unavailable; counting from Postgres");
                (self.fallback.top(POPULAR_LIMIT).await?, FALLBACK_TTL)
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
            *cache = Some((Instant::now(), ttl, top.clone()));
        }
        Ok(top)
    }

    fn cached(&self) -> Option<Vec<PopularProduct>> {
        let cache = self.cache.lock().ok()?;
        let (at, ttl, top) = cache.as_ref()?;
        (at.elapsed() < *ttl).then(|| top.clone())
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

    /// Postgres adding up the orders: slow, and counting its calls.
    #[derive(Default)]
    struct SlowRanking {
        calls: std::sync::atomic::AtomicUsize,
        fails: bool,
    }

    #[async_trait::async_trait]
    impl SalesRanking for SlowRanking {
        async fn top(&self, _limit: usize) -> Result<Vec<ProductSales>, Unavailable> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fails {
                return Err(Unavailable::new("postgres", "statement timeout"));
            }
            Ok(sales(&[(3, 9)]))
        }
    }

    #[tokio::test]
    async fn simultaneous_misses_share_one_refill() {
        let mut ranking = MockSalesRanking::new();
        ranking
            .expect_top()
            .returning(|_| Err(Unavailable::new("redis", "down")));
        let fallback = Arc::new(SlowRanking::default());
        let popular = PopularProducts::new(
            Arc::new(ranking),
            Arc::clone(&fallback) as Arc<dyn SalesRanking>,
            Arc::new(catalog()),
        );

        let answers = futures_util::future::join_all((0..20).map(|_| popular.get())).await;

        for answer in answers {
            let top = answer.expect("ranked");
            assert_eq!(
                top.iter().map(|p| p.product.id.get()).collect::<Vec<_>>(),
                [3]
            );
        }
        assert_eq!(
            fallback.calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one refill for twenty simultaneous misses"
        );
    }

    #[tokio::test]
    async fn a_failed_refill_answers_everyone_who_waited_for_it() {
        let mut ranking = MockSalesRanking::new();
        ranking
            .expect_top()
            .returning(|_| Err(Unavailable::new("redis", "down")));
        let fallback = Arc::new(SlowRanking {
            fails: true,
            ..SlowRanking::default()
        });
        let popular = PopularProducts::new(
            Arc::new(ranking),
            Arc::clone(&fallback) as Arc<dyn SalesRanking>,
            Arc::new(catalog()),
        );

        let answers = futures_util::future::join_all((0..20).map(|_| popular.get())).await;

        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_err_and(|e| e.service() == "postgres"))
        );
        assert_eq!(
            fallback.calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the waiters share the failure instead of queueing to repeat it"
        );
        // A later read tries again.
        assert!(popular.get().await.is_err());
        assert_eq!(fallback.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
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
