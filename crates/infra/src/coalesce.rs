//! Request coalescing for reads that must see every write that finished
//! before they arrived: [`Coalescer`] (reads of one key share a query),
//! [`Batcher`] (reads of different keys share one `= ANY(…)` query), and the
//! catalogue reads built on them ([`CoalescedCatalog`]).
//!
//! Many simultaneous reads of one key (a sale's product page, the pricing
//! of a hundred orders of one product) share one query instead of each
//! taking a connection and a round trip. A read joins the *next* query for
//! its key, never one already running: a running query's snapshot may
//! predate the read, and "a read that follows a successful order sees the
//! decrement". So every read is answered by a query that started after the
//! read arrived, which is what a query of its own would have given it. A key
//! with nobody waiting costs one task spawn more than a plain query.
//!
//! A read that joins the next query waits for the running one first: on a
//! hung Postgres, for the running query's timeout and then its own. So a
//! coalesced read can be given a patience ([`Coalescer::within`],
//! [`Batcher::within`]): how long it waits in all, from its arrival, before
//! it gives up with `Unavailable` (the query goes on for the others). The
//! stores set it to their operation timeout, so a coalesced read is bounded
//! as a read of its own is (the fault runner's `postgres-hang` saw orders
//! wait two timeouts for their pricing).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use domain::catalog::{CatalogStore, NewProduct, PatchRefused, Product, ProductId, ProductPatch};
use domain::error::Unavailable;
use domain::paging::PageRequest;
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
    /// How long a read waits in all; `None`: as long as the queries take.
    patience: Option<Duration>,
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
            patience: None,
        }
    }

    /// The same coalescer, whose reads wait at most `patience` in all.
    #[must_use]
    pub fn within(self, patience: Duration) -> Self {
        Self {
            patience: Some(patience),
            ..self
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
        match patiently(self.patience, rx).await {
            Some(Ok(result)) => result.map_err(|why| Unavailable::new(self.service, why)),
            Some(Err(_)) => Err(Unavailable::new(
                self.service,
                "a coalesced read was dropped",
            )),
            None => Err(gave_up(self.service, self.patience)),
        }
    }
}

/// `rx`'s answer, or `None` when `patience`, or the request's budget, ran
/// out first.
async fn patiently<T>(
    patience: Option<Duration>,
    rx: oneshot::Receiver<T>,
) -> Option<Result<T, oneshot::error::RecvError>> {
    // Within the request's budget too (`domain::deadline`).
    let limit = match patience {
        Some(patience) => Some(domain::deadline::remaining(patience)),
        None => domain::deadline::left(),
    };
    match limit {
        Some(limit) => tokio::time::timeout(limit, rx).await.ok(),
        None => Some(rx.await),
    }
}

fn gave_up(service: &'static str, patience: Option<Duration>) -> Unavailable {
    Unavailable::new(
        service,
        format!("a coalesced read waited {patience:?} without an answer"),
    )
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

/// The most keys one combined query of a [`Batcher`] asks for; reads past
/// it wait for the next query.
const MAX_BATCH_KEYS: usize = 1_000;

type Load<K, V> = Arc<
    dyn Fn(Vec<K>) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<V>, Unavailable>> + Send>>
        + Send
        + Sync,
>;

/// Reads by key, each of one or more keys, combined across keys: every
/// read waiting when a query starts joins it, and the query asks for the
/// union of their keys (`WHERE id = ANY(…)`). Where a [`Coalescer`] shares
/// a query among reads of the *same* key, this shares one among reads of
/// *different* keys, which is what a hundred orders of a hundred products
/// need. Like the coalescer, a read never joins a query already running,
/// so it sees every write that finished before it arrived.
pub struct Batcher<K, V> {
    waiting: Queue<K, V>,
    load: Load<K, V>,
    key_of: fn(&V) -> K,
    service: &'static str,
    /// How long a read waits in all; `None`: as long as the queries take.
    patience: Option<Duration>,
}

/// `Some` while a query loop runs: the reads waiting for its next query.
type Queue<K, V> = Arc<Mutex<Option<Vec<BatchRead<K, V>>>>>;

struct BatchRead<K, V> {
    keys: Vec<K>,
    reply: Waiter<Vec<V>>,
}

impl<K, V> std::fmt::Debug for Batcher<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<K, V> Batcher<K, V>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// `load` reads the values of some keys (those it finds); `key_of` says
    /// which key a value answers.
    pub fn new<F, Fut>(service: &'static str, key_of: fn(&V) -> K, load: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<V>, Unavailable>> + Send + 'static,
    {
        Self {
            waiting: Arc::new(Mutex::new(None)),
            load: Arc::new(move |keys| Box::pin(load(keys))),
            key_of,
            service,
            patience: None,
        }
    }

    /// The same batcher, whose reads wait at most `patience` in all.
    #[must_use]
    pub fn within(self, patience: Duration) -> Self {
        Self {
            patience: Some(patience),
            ..self
        }
    }

    /// The values of `keys` that exist, in the order of `keys` (each once),
    /// as a query started after this call would read them.
    ///
    /// # Errors
    /// The query's error, shared by every read it answered.
    pub async fn read(&self, keys: Vec<K>) -> Result<Vec<V>, Unavailable> {
        let (reply, rx) = oneshot::channel();
        let lead = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let lead = waiting.is_none();
            waiting
                .get_or_insert_with(Vec::new)
                .push(BatchRead { keys, reply });
            lead
        };
        if lead {
            // A task of its own, as for the coalescer.
            tokio::spawn(run_batches(
                Arc::clone(&self.waiting),
                Arc::clone(&self.load),
                self.key_of,
            ));
        }
        match patiently(self.patience, rx).await {
            Some(Ok(result)) => result.map_err(|why| Unavailable::new(self.service, why)),
            Some(Err(_)) => Err(Unavailable::new(self.service, "a batched read was dropped")),
            None => Err(gave_up(self.service, self.patience)),
        }
    }
}

/// Runs combined queries while reads wait; each answers the reads that
/// arrived before it started (up to [`MAX_BATCH_KEYS`] keys).
async fn run_batches<K, V>(waiting: Queue<K, V>, load: Load<K, V>, key_of: fn(&V) -> K)
where
    K: Ord + Clone,
    V: Clone,
{
    loop {
        let reads = {
            let mut slot = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = slot.get_or_insert_with(Vec::new);
            if queue.is_empty() {
                *slot = None;
                return;
            }
            take_batch(queue)
        };
        let mut keys: Vec<K> = reads.iter().flat_map(|r| r.keys.iter().cloned()).collect();
        keys.sort_unstable();
        keys.dedup();
        let result = match AssertUnwindSafe(load(keys)).catch_unwind().await {
            Ok(Ok(values)) => Ok(values
                .into_iter()
                .map(|v| (key_of(&v), v))
                .collect::<std::collections::BTreeMap<K, V>>()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the query panicked".to_owned()),
        };
        for read in reads {
            let answer = match &result {
                Ok(found) => {
                    let mut seen = std::collections::BTreeSet::new();
                    Ok(read
                        .keys
                        .iter()
                        .filter(|k| seen.insert(*k))
                        .filter_map(|k| found.get(k).cloned())
                        .collect())
                }
                Err(why) => Err(why.clone()),
            };
            let _ = read.reply.send(answer);
        }
    }
}

/// The reads at the front of `queue` whose keys fit one query (at least one).
fn take_batch<K, V>(queue: &mut Vec<BatchRead<K, V>>) -> Vec<BatchRead<K, V>> {
    let mut keys = 0;
    let fit = queue
        .iter()
        .take_while(|r| {
            keys += r.keys.len();
            keys <= MAX_BATCH_KEYS
        })
        .count()
        .max(1);
    queue.drain(..fit).collect()
}

/// A [`CatalogStore`] whose reads are coalesced; writes pass through.
pub struct CoalescedCatalog {
    inner: Arc<dyn CatalogStore>,
    /// Product reads by id, of one product (a product page) or several (an
    /// order's pricing), combined into one query.
    by_id: Batcher<ProductId, Product>,
    pages: Coalescer<(i64, i64), Vec<Product>>,
    counts: Coalescer<(), u64>,
}

impl std::fmt::Debug for CoalescedCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoalescedCatalog")
    }
}

impl CoalescedCatalog {
    pub fn new(inner: Arc<dyn CatalogStore>) -> Self {
        let store = Arc::clone(&inner);
        Self {
            inner,
            by_id: Batcher::new(
                "postgres",
                |p: &Product| p.id,
                move |ids: Vec<ProductId>| {
                    let store = Arc::clone(&store);
                    async move { store.get_many(&ids).await }
                },
            ),
            pages: Coalescer::new("postgres"),
            counts: Coalescer::new("postgres"),
        }
    }

    /// The same catalogue, whose coalesced reads wait at most `patience` in
    /// all (the operation timeout of the store behind it).
    #[must_use]
    pub fn within(self, patience: Duration) -> Self {
        Self {
            by_id: self.by_id.within(patience),
            pages: self.pages.within(patience),
            counts: self.counts.within(patience),
            ..self
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
    ) -> Result<Result<Product, PatchRefused>, Unavailable> {
        self.inner.update(id, patch).await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable> {
        Ok(self.by_id.read(vec![id]).await?.into_iter().next())
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, Unavailable> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        self.by_id.read(ids).await
    }

    async fn count(&self) -> Result<u64, Unavailable> {
        let inner = Arc::clone(&self.inner);
        self.counts
            .read((), move || {
                let inner = Arc::clone(&inner);
                async move { inner.count().await }
            })
            .await
    }

    async fn page(&self, page: PageRequest) -> Result<Vec<Product>, Unavailable> {
        let inner = Arc::clone(&self.inner);
        self.pages
            .read((page.offset(), page.limit()), move || {
                let inner = Arc::clone(&inner);
                async move { inner.page(page).await }
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
                let seen = value.load(Ordering::SeqCst);
                queries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(seen)
            })
        }
    }

    #[tokio::test]
    async fn a_read_behind_a_hung_query_gives_up_after_its_patience_and_the_query_goes_on() {
        // Each query hangs for a second, as on a paused Postgres.
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Unavailable>(7_usize)
        };
        let patient = Arc::new(Coalescer::<u8, usize>::new("postgres"));
        let hurried = Coalescer::<u8, usize>::new("postgres").within(Duration::from_millis(100));
        let gave_up = hurried.read(1, slow).await;
        assert_eq!(
            gave_up
                .expect_err("the query takes longer than the patience")
                .service(),
            "postgres"
        );
        // Without a patience, the same read waits for its answer.
        assert_eq!(patient.read(1, slow).await.expect("answered"), 7);

        let batcher = Batcher::new(
            "postgres",
            |v: &usize| *v,
            |keys: Vec<usize>| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(keys)
            },
        )
        .within(Duration::from_millis(100));
        assert!(batcher.read(vec![3]).await.is_err(), "a batched read too");
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
        while queries.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await; // until the first query has read the value
        }

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

    /// A loader of keys that counts its queries, answers `key * 10 + value`
    /// for the keys below 100 as `value` is when it starts, and takes 20 ms.
    fn batch_loader(
        queries: &Arc<AtomicUsize>,
        value: &Arc<AtomicUsize>,
    ) -> Batcher<usize, (usize, usize)> {
        let (queries, value) = (Arc::clone(queries), Arc::clone(value));
        Batcher::new(
            "test",
            |v: &(usize, usize)| v.0,
            move |keys: Vec<usize>| {
                let (queries, value) = (Arc::clone(&queries), Arc::clone(&value));
                async move {
                    let seen = value.load(Ordering::SeqCst);
                    queries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(keys
                        .into_iter()
                        .filter(|k| *k < 100)
                        .map(|k| (k, k * 10 + seen))
                        .collect())
                }
            },
        )
    }

    #[tokio::test]
    async fn simultaneous_reads_of_different_keys_share_a_query_and_get_their_own_keys() {
        let (queries, value) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(1)));
        let b = Arc::new(batch_loader(&queries, &value));

        let reads: Vec<_> = (0..50_usize)
            .map(|i| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.read(vec![i, 100 + i, i]).await })
            })
            .collect();
        let mut answers = Vec::new();
        for r in reads {
            answers.push(r.await.expect("joined").expect("read"));
        }

        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(
                answer,
                &[(i, i * 10 + 1)],
                "its key once, the missing one left out"
            );
        }
        assert!(
            queries.load(Ordering::SeqCst) <= 2,
            "50 reads of 50 keys took {} queries",
            queries.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_batched_read_arriving_during_a_query_waits_for_the_next_one() {
        let (queries, value) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(1)));
        let b = Arc::new(batch_loader(&queries, &value));
        let first = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.read(vec![3]).await })
        };
        while queries.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await; // until the first query has read the value
        }

        value.store(2, Ordering::SeqCst); // a write that finishes before the second read
        let second = b.read(vec![3]).await.expect("read");

        assert_eq!(first.await.expect("joined").expect("read"), [(3, 31)]);
        assert_eq!(second, [(3, 32)], "not answered by the older query");
        assert_eq!(queries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_batch_reaches_every_read_and_the_next_read_queries_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let b = Batcher::new(
            "test",
            |v: &usize| *v,
            move |keys: Vec<usize>| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(Unavailable::new("test", "down"))
                    } else {
                        Ok(keys)
                    }
                }
            },
        );

        let failed = b.read(vec![1]).await;
        let ok = b.read(vec![2, 1]).await;

        assert_eq!(failed.expect_err("failed").service(), "test");
        assert_eq!(ok.expect("read"), [2, 1], "in the order asked");
    }
}
