//! Request coalescing for reads that must see every write that finished
//! before they arrived: [`Coalescer`], and the catalogue reads built on it
//! ([`CoalescedCatalog`]).
//!
//! Many simultaneous reads of one key (a sale's product page, the pricing
//! of a hundred orders of one product) share one query instead of each
//! taking a connection and a round trip. A read joins the *next* query for
//! its key, never one already running: a running query's snapshot may
//! predate the read, and "a read that follows a successful order sees the
//! decrement". So every read is answered by a query that started after the
//! read arrived, which is what a query of its own would have given it. A key
//! with nobody waiting costs one task spawn more than a plain query.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use domain::catalog::{CatalogStore, NewProduct, Product, ProductId, ProductPatch};
use domain::error::Unavailable;
use domain::paging::{Page, PageRequest};
use futures_util::FutureExt as _;
use tokio::sync::oneshot;

type Waiter<V> = oneshot::Sender<Result<V, String>>;

/// Coalesces reads of `V` by key `K`.
pub struct Coalescer<K, V> {
    /// A key is present while a query loop runs for it; its list holds the
    /// reads waiting for the loop's next query.
    waiting: Arc<Mutex<HashMap<K, Vec<Waiter<V>>>>>,
    /// Which service the reads come from, for errors.
    service: &'static str,
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    pub fn new(service: &'static str) -> Self {
        Self {
            waiting: Arc::new(Mutex::new(HashMap::new())),
            service,
        }
    }

    /// The value of `key` as a query started after this call would read it.
    ///
    /// # Errors
    /// The query's error, shared by every read it answered.
    pub async fn read<F, Fut>(&self, key: K, load: F) -> Result<V, Unavailable>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, Unavailable>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.get_mut(&key) {
                Some(queue) => {
                    queue.push(tx);
                    false
                }
                None => {
                    waiting.insert(key.clone(), vec![tx]);
                    true
                }
            }
        };
        if lead {
            // A task of its own: the reads it answers must not depend on the
            // first reader's future staying alive.
            tokio::spawn(run(Arc::clone(&self.waiting), key, load));
        }
        match rx.await {
            Ok(result) => result.map_err(|why| Unavailable::new(self.service, why)),
            Err(_) => Err(Unavailable::new(
                self.service,
                "a coalesced read was dropped",
            )),
        }
    }
}

/// Runs queries for `key` while reads wait for one; each query answers the
/// reads that arrived before it started.
async fn run<K, V, F, Fut>(waiting: Arc<Mutex<HashMap<K, Vec<Waiter<V>>>>>, key: K, load: F)
where
    K: Hash + Eq,
    V: Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<V, Unavailable>>,
{
    loop {
        let readers = {
            let mut map = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get_mut(&key) {
                Some(queue) if !queue.is_empty() => std::mem::take(queue),
                _ => {
                    map.remove(&key);
                    return;
                }
            }
        };
        // A panicking query answers its readers instead of stranding them
        // (and every later reader of the key) forever.
        let result = match AssertUnwindSafe(load()).catch_unwind().await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the query panicked".to_owned()),
        };
        for reader in readers {
            let _ = reader.send(result.clone());
        }
    }
}

/// A [`CatalogStore`] whose reads are coalesced; writes pass through.
pub struct CoalescedCatalog {
    inner: Arc<dyn CatalogStore>,
    one: Coalescer<ProductId, Option<Product>>,
    many: Coalescer<Vec<ProductId>, Vec<Product>>,
    pages: Coalescer<(i64, i64), Page<Product>>,
}

impl std::fmt::Debug for CoalescedCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoalescedCatalog")
    }
}

impl CoalescedCatalog {
    pub fn new(inner: Arc<dyn CatalogStore>) -> Self {
        Self {
            inner,
            one: Coalescer::new("postgres"),
            many: Coalescer::new("postgres"),
            pages: Coalescer::new("postgres"),
        }
    }
}

#[async_trait]
impl CatalogStore for CoalescedCatalog {
    async fn create(&self, product: NewProduct) -> Result<Product, Unavailable> {
        self.inner.create(product).await
    }

    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Option<Product>, Unavailable> {
        self.inner.update(id, patch).await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable> {
        let inner = Arc::clone(&self.inner);
        self.one
            .read(id, move || {
                let inner = Arc::clone(&inner);
                async move { inner.get(id).await }
            })
            .await
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, Unavailable> {
        let mut key = ids.to_vec();
        key.sort_unstable();
        key.dedup();
        let inner = Arc::clone(&self.inner);
        let wanted = key.clone();
        self.many
            .read(key, move || {
                let (inner, wanted) = (Arc::clone(&inner), wanted.clone());
                async move { inner.get_many(&wanted).await }
            })
            .await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Product>, Unavailable> {
        let inner = Arc::clone(&self.inner);
        self.pages
            .read((page.offset(), page.limit()), move || {
                let inner = Arc::clone(&inner);
                async move { inner.list(page).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A loader that counts its queries, reads `value` when it starts and
    /// takes 20 ms.
    fn counting(
        queries: &Arc<AtomicUsize>,
        value: &Arc<AtomicUsize>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<usize, Unavailable>> + Send>>
    + Send
    + 'static {
        let (queries, value) = (Arc::clone(queries), Arc::clone(value));
        move || {
            let (queries, value) = (Arc::clone(&queries), Arc::clone(&value));
            Box::pin(async move {
                queries.fetch_add(1, Ordering::SeqCst);
                let seen = value.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(seen)
            })
        }
    }

    #[tokio::test]
    async fn simultaneous_reads_of_one_key_share_a_query() {
        let c = Arc::new(Coalescer::<u8, usize>::new("test"));
        let (queries, value) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(7)));

        let reads: Vec<_> = (0..50)
            .map(|_| {
                let (c, load) = (Arc::clone(&c), counting(&queries, &value));
                tokio::spawn(async move { c.read(1, load).await })
            })
            .collect();
        let mut answers = Vec::new();
        for r in reads {
            answers.push(r.await.expect("joined").expect("read"));
        }

        assert!(answers.iter().all(|&a| a == 7));
        assert!(
            queries.load(Ordering::SeqCst) <= 2,
            "50 reads took {} queries",
            queries.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_read_arriving_during_a_query_waits_for_the_next_one_and_sees_newer_writes() {
        let c = Arc::new(Coalescer::<u8, usize>::new("test"));
        let (queries, value) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(1)));
        let first = {
            let (c, load) = (Arc::clone(&c), counting(&queries, &value));
            tokio::spawn(async move { c.read(1, load).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await; // the first query runs

        value.store(2, Ordering::SeqCst); // a write that finishes before the second read
        let second = c.read(1, counting(&queries, &value)).await.expect("read");

        assert_eq!(first.await.expect("joined").expect("read"), 1);
        assert_eq!(
            second, 2,
            "the second read is not answered by the older query"
        );
        assert_eq!(queries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn different_keys_do_not_share_and_errors_reach_every_reader() {
        let c = Arc::new(Coalescer::<u8, usize>::new("test"));

        let ok = c.read(1, || async { Ok(10) }).await;
        let failed = c
            .read(2, || async { Err(Unavailable::new("test", "down")) })
            .await;

        assert_eq!(ok.expect("read"), 10);
        assert_eq!(failed.expect_err("failed").service(), "test");
    }
}
