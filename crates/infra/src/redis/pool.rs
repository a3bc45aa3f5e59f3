//! The Redis pool: deadpool over redis-rs' multiplexed connections, with a
//! recycle check that costs a round trip only when it can find something.
//!
//! deadpool-redis checks every connection it hands out with `UNWATCH` +
//! `PING`, a round trip per `get`. On the hot paths a request takes a
//! connection for one script (a flash-sale refusal takes two: the gate, the
//! refusal's record), so half of Redis' commands and of the app's Redis
//! system calls were those checks (`INFO commandstats` during a flash sale:
//! 40,994 `PING` for 39,956 `EVALSHA`).
//!
//! Here a connection is checked only when the check could find a broken
//! one: when any Redis command of this pool has failed since the
//! connection's last check (a failure is reported through [`unavailable`],
//! which every adapter maps its errors with, or through a command error
//! seen by [`Connection`]), or when it sat idle for [`IDLE_CHECK`] (a server
//! or a middlebox may have closed it). So after Redis restarts, every
//! connection is checked once on its next use and the dead ones replaced,
//! as before; on a healthy Redis, no round trip is spent on checks.
//!
//! [`unavailable`]: super::unavailable
//!
//! Each thread that uses the pool gets connections of its own
//! ([`ThreadSets`]): a connection's driver task runs on the thread that
//! opened it, and a command from another actix worker crossed threads twice.
//!
//! On a Redis Cluster (`APP_REDIS_CLUSTER_NODES`), each thread keeps one
//! cluster connection instead (redis-rs' `cluster_async`): a multiplexed
//! handle that routes each command, script and pipeline by its first key's
//! slot, follows `MOVED`/`ASK`, and refreshes the slot map when a replica
//! takes over from a failed master. It is opened on first use, so the
//! service starts while the cluster is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{self, RedisError};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use crate::thread_sets::{ThreadSets, total_status};

/// A connection idle this long is checked before it is handed out again.
pub const IDLE_CHECK: Duration = Duration::from_secs(10);

/// When a command of the pool last failed, in nanoseconds since the pool's
/// start (0: never).
#[derive(Debug)]
struct Failures {
    start: Instant,
    last: AtomicU64,
}

impl Failures {
    fn record(&self) {
        let at = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(at.max(1), Ordering::Relaxed);
    }

    /// Whether a command failed after `at`.
    fn since(&self, at: Instant) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0 && self.start + Duration::from_nanos(last) >= at
    }
}

/// Every pool's failures are also recorded here, for [`super::unavailable`],
/// which does not know which pool an error came from. A failure of one pool
/// makes the others check too: one round trip per connection, rarely.
static ANY_FAILURE: std::sync::LazyLock<Failures> = std::sync::LazyLock::new(|| Failures {
    start: Instant::now(),
    last: AtomicU64::new(0),
});

/// Notes that a Redis operation failed: every connection is checked on its
/// next `get`.
pub(crate) fn note_failure() {
    ANY_FAILURE.record();
}

/// Creates connections as deadpool-redis does; recycles them as described
/// in the module documentation.
pub struct Manager {
    inner: deadpool_redis::Manager,
    ping: AtomicU64,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("redis::Manager")
    }
}

impl Manager {
    pub fn new(inner: deadpool_redis::Manager) -> Self {
        Self {
            inner,
            ping: AtomicU64::new(0),
        }
    }

    async fn check(&self, conn: &mut MultiplexedConnection) -> RecycleResult<RedisError> {
        let n = self.ping.fetch_add(1, Ordering::Relaxed).to_string();
        let (echo,): (String,) = redis::Pipeline::with_capacity(2)
            .cmd("UNWATCH")
            .ignore()
            .cmd("PING")
            .arg(&n)
            .query_async(conn)
            .await?;
        if echo == n {
            Ok(())
        } else {
            Err(managed::RecycleError::message("invalid PING response"))
        }
    }
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        managed::Manager::create(&self.inner).await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        let checked = metrics.recycled.unwrap_or(metrics.created);
        if ANY_FAILURE.since(checked) || metrics.last_used() >= IDLE_CHECK {
            self.check(conn).await
        } else {
            Ok(())
        }
    }
}

/// The pool every Redis adapter takes its connections from: a set of up to
/// `max_size` connections per thread that uses it ([`ThreadSets`]), or on
/// a cluster one cluster connection per thread.
#[derive(Clone)]
pub struct RedisPool {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// The per-thread sets, and the longest one `get` may take.
    Single(Arc<ThreadSets<managed::Pool<Manager>>>, Duration),
    Cluster(Arc<ThreadSets<ClusterSet>>),
}

/// One thread's cluster connection, opened on first use (and again after
/// an attempt failed).
#[derive(Clone)]
struct ClusterSet {
    client: Arc<ClusterClient>,
    timeout: Duration,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("cluster", &self.is_cluster())
            .field("status", &self.status())
            .finish()
    }
}

impl RedisPool {
    /// A pool whose per-thread sets `make` builds; a `get` gives up after
    /// `timeout` in all (see [`get`](Self::get)).
    pub(crate) fn new(
        make: impl Fn() -> managed::Pool<Manager> + Send + Sync + 'static,
        timeout: Duration,
    ) -> Self {
        Self {
            kind: Kind::Single(Arc::new(ThreadSets::new(make)), timeout),
        }
    }

    /// A pool of cluster connections through `client`, one per thread.
    pub(crate) fn cluster(client: ClusterClient, timeout: Duration) -> Self {
        let client = Arc::new(client);
        Self {
            kind: Kind::Cluster(Arc::new(ThreadSets::new(move || ClusterSet {
                client: Arc::clone(&client),
                timeout,
                conn: Arc::new(OnceCell::new()),
            }))),
        }
    }

    /// Whether this pool talks to a Redis Cluster: a script's keys must
    /// then share one slot (`super::slots`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// A connection of the calling thread's set, checked if it may be
    /// broken (module documentation), within the pool's timeout in all.
    ///
    /// deadpool bounds each step by the timeout (waiting for a slot, each
    /// recycle check, creating a connection) but not their sum: after a
    /// failure, a `get` checks the idle connections one after another, and
    /// on a hung Redis each check takes the whole timeout: with a 2 s
    /// timeout, requests waited 6 s on a paused Redis (the fault runner's
    /// `redis-hang`). The whole `get` is bounded here; the connection being
    /// checked when it gives up is dropped.
    ///
    /// # Errors
    /// When no connection could be created or waited for in time.
    pub async fn get(&self) -> Result<Connection, managed::PoolError<RedisError>> {
        match &self.kind {
            Kind::Single(sets, timeout) => {
                let limit = domain::deadline::remaining(*timeout);
                let got = tokio::time::timeout(limit, sets.local().get())
                    .await
                    .unwrap_or(Err(managed::PoolError::Timeout(managed::TimeoutType::Wait)));
                match got {
                    Ok(conn) => Ok(Connection {
                        conn: Conn::Single(conn),
                    }),
                    Err(err) => {
                        note_failure();
                        Err(err)
                    }
                }
            }
            Kind::Cluster(sets) => {
                let set = sets.local();
                let opened = set
                    .conn
                    .get_or_try_init(|| async {
                        match tokio::time::timeout(
                            domain::deadline::remaining(set.timeout),
                            set.client.get_async_connection(),
                        )
                        .await
                        {
                            Ok(result) => result,
                            Err(_) => Err(RedisError::from(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no cluster node answered in time",
                            ))),
                        }
                    })
                    .await;
                match opened {
                    Ok(conn) => Ok(Connection {
                        conn: Conn::Cluster(conn.clone()),
                    }),
                    Err(err) => Err(managed::PoolError::Backend(err)),
                }
            }
        }
    }

    /// Connections open, idle and waited for, over every thread's set (on
    /// a cluster: each thread's one connection, open or not yet).
    pub fn status(&self) -> managed::Status {
        match &self.kind {
            Kind::Single(sets, _) => total_status(sets.all().iter().map(managed::Pool::status)),
            Kind::Cluster(sets) => {
                let all = sets.all();
                let open = all.iter().filter(|s| s.conn.initialized()).count();
                managed::Status {
                    max_size: all.len(),
                    size: open,
                    available: open,
                    waiting: 0,
                }
            }
        }
    }
}

/// A pooled connection; a command error on it has every connection checked
/// on its next `get`.
pub struct Connection {
    conn: Conn,
}

enum Conn {
    Single(managed::Object<Manager>),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisConnection")
    }
}

impl Connection {
    /// Passes `result` on, noting a failure that may have broken the
    /// connection (not a command the server refused, say a missing script).
    fn noted<T>(result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error())
        {
            note_failure();
        }
        result
    }
}

/// A command's reply, within what is left of the request's budget
/// (`domain::deadline`); the connection's own reply timeout applies too.
async fn within_budget<T>(
    reply: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match domain::deadline::left() {
        None => reply.await,
        Some(left) => tokio::time::timeout(left, reply).await.unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request's time budget ran out",
            )))
        }),
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match &mut self.conn {
            Conn::Single(conn) => {
                Box::pin(
                    async move { Self::noted(within_budget(conn.req_packed_command(cmd)).await) },
                )
            }
            Conn::Cluster(conn) => Box::pin(within_budget(conn.req_packed_command(cmd))),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.conn {
            Conn::Single(conn) => Box::pin(async move {
                Self::noted(within_budget(conn.req_packed_commands(cmd, offset, count)).await)
            }),
            Conn::Cluster(conn) => {
                Box::pin(within_budget(conn.req_packed_commands(cmd, offset, count)))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_seen_by_connections_checked_before_it_only() {
        let failures = Failures {
            start: Instant::now(),
            last: AtomicU64::new(0),
        };
        let before = Instant::now();
        assert!(!failures.since(failures.start), "no failure yet");

        failures.record();
        let after = Instant::now();

        assert!(failures.since(before), "checked before the failure");
        assert!(!failures.since(after), "checked after it");
    }
}
