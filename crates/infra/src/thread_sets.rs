//! Connection pools kept per thread, for the Postgres and the Redis pool.
//!
//! A pooled connection of either client is a handle to a driver task that
//! does its socket's reads and writes (tokio-postgres' connection future,
//! redis-rs' multiplexed pipeline), spawned on the runtime of the thread
//! that opened the connection. actix runs one single-threaded runtime per
//! worker. A connection opened on one worker and handed to a request on
//! another made every command cross threads twice, to the driver and back,
//! each a wake-up of a thread that may be asleep: a coupon rush ran 1.7×
//! faster once each worker kept its own Redis connections, a catalogue
//! read ~1.2× faster with its own Postgres connections
//! (`docs/performance.md`).
//!
//! So each thread that asks gets a set of its own, built on first use, up to
//! [`MAX_THREADS`] threads; any further threads share one more set. A set is
//! a whole deadpool pool, with its own bound, waits and checks.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

/// How many threads get a set of their own. A server has a few (its actix
/// workers, its runtime's workers); the bound keeps a test binary, which
/// may run each test on a thread of its own, from opening sets without end.
pub const MAX_THREADS: usize = 32;

/// One pool per thread (`P` is a cheap handle, as deadpool's pools are).
pub struct ThreadSets<P> {
    make: Box<dyn Fn() -> P + Send + Sync>,
    by_thread: Mutex<HashMap<ThreadId, P>>,
    /// The set of the threads past [`MAX_THREADS`], built when first needed.
    shared: OnceLock<P>,
}

impl<P> std::fmt::Debug for ThreadSets<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let threads = self.by_thread.lock().map_or(0, |m| m.len());
        f.debug_struct("ThreadSets")
            .field("threads", &threads)
            .finish()
    }
}

impl<P: Clone> ThreadSets<P> {
    /// Sets that `make` builds, one per thread, lazily.
    pub fn new(make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        Self {
            make: Box::new(make),
            by_thread: Mutex::new(HashMap::new()),
            shared: OnceLock::new(),
        }
    }

    /// The calling thread's set, built if it has none yet.
    pub fn local(&self) -> P {
        let mut by_thread = self
            .by_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = std::thread::current().id();
        if let Some(set) = by_thread.get(&id) {
            return set.clone();
        }
        if by_thread.len() >= MAX_THREADS {
            return self.shared.get_or_init(|| (self.make)()).clone();
        }
        by_thread.entry(id).or_insert_with(|| (self.make)()).clone()
    }

    /// Every set built so far (for gauges).
    pub fn all(&self) -> Vec<P> {
        let by_thread = self
            .by_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared
            .get()
            .into_iter()
            .chain(by_thread.values())
            .cloned()
            .collect()
    }
}

/// The connections one thread's set may open when `total` are meant for an
/// instance that serves requests on `threads` threads: an even share, at
/// least two.
pub fn share_per_thread(total: usize, threads: usize) -> usize {
    total.div_ceil(threads.max(1)).max(2)
}

/// The states of `sets` added up (`max_size` too: the most they may open
/// together).
pub fn total_status(sets: impl IntoIterator<Item = deadpool::Status>) -> deadpool::Status {
    sets.into_iter()
        .reduce(|mut total, s| {
            total.max_size += s.max_size;
            total.size += s.size;
            total.available += s.available;
            total.waiting += s.waiting;
            total
        })
        .unwrap_or(deadpool::Status {
            max_size: 0,
            size: 0,
            available: 0,
            waiting: 0,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn each_thread_gets_its_own_set_and_keeps_it() {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let sets = Arc::new(ThreadSets::new(move || {
            counter.fetch_add(1, Ordering::SeqCst)
        }));
        let here = sets.local();
        assert_eq!(sets.local(), here, "the same thread keeps its set");
        let s = Arc::clone(&sets);
        let there = std::thread::spawn(move || s.local())
            .join()
            .expect("thread");
        assert_ne!(there, here, "another thread gets another set");
        assert_eq!(built.load(Ordering::SeqCst), 2, "one set per thread");
        assert_eq!(sets.all().len(), 2);
    }

    #[test]
    fn threads_past_the_bound_share_one_set() {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let sets = Arc::new(ThreadSets::new(move || {
            counter.fetch_add(1, Ordering::SeqCst)
        }));
        let got: Vec<usize> = (0..MAX_THREADS + 3)
            .map(|_| {
                let s = Arc::clone(&sets);
                std::thread::spawn(move || s.local())
                    .join()
                    .expect("thread")
            })
            .collect();
        let shared = MAX_THREADS; // built after the per-thread sets
        assert!(got[..MAX_THREADS].iter().all(|&s| s != shared));
        assert!(got[MAX_THREADS..].iter().all(|&s| s == shared));
        assert_eq!(built.load(Ordering::SeqCst), MAX_THREADS + 1);
        assert_eq!(sets.all().len(), MAX_THREADS + 1);
    }

    #[test]
    fn a_share_is_even_and_never_below_two() {
        assert_eq!(share_per_thread(16, 2), 8);
        assert_eq!(share_per_thread(16, 3), 6);
        assert_eq!(share_per_thread(16, 16), 2);
        assert_eq!(share_per_thread(1, 0), 2);
    }
}
