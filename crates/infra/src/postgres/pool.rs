//! Start-up plumbing for Postgres: create the database when it is missing,
//! run the embedded migrations (one instance at a time), build the pool.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Hook, HookError, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use url::Url;

use super::Postgres;
use super::prepared::prepared;

/// The SQL migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Advisory lock key that serialises migrations across instances ("migrate" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x006d_6967_7261_7465;

/// How long a connection serves before the pool closes it and opens a fresh
/// one, at its next checkout: this plus up to a tenth more, so that a pool's
/// connections, opened together at start-up, are not all reopened at once.
///
/// Postgres keeps a prepared statement's plan for the life of the
/// connection, re-planning only when the tables' statistics change. The lanes
/// pin plans outright (`force_generic_plan`), and a server without
/// autovacuum never updates statistics: a plan made on the empty tables of
/// the first minute then serves for as long as the connection lives, however
/// the tables grow. Retiring connections bounds that to minutes, for every
/// statement, including ones whose plan nobody has checked
/// (docs/reliability.md, "Soak").
pub const RETIRE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The instant the spreads of [`retired`] count from: before any pool's
/// first connection (`build_retiring_pool` takes it).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Whether a connection created at `created` is due for retirement at `now`,
/// connections serving `after` plus a spread of up to a tenth of it.
fn retired(created: Instant, now: Instant, after: Duration) -> bool {
    // A spread that differs between connections, even ones opened within a
    // millisecond of each other: their creation times' nanoseconds, hashed
    // (Fibonacci hashing) onto 0..after/10.
    let nanos = created.saturating_duration_since(*EPOCH).as_nanos();
    #[allow(clippy::cast_possible_truncation)] // only the low bits are hashed
    let hashed = (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    #[allow(clippy::cast_precision_loss)] // 53 bits, exact in an f64
    let fraction = hashed as f64 / (1u64 << 53) as f64;
    now.saturating_duration_since(created) > after + (after / 10).mul_f64(fraction)
}

/// The pool every Postgres adapter shares.
pub type PgPool = Pool<AsyncPgConnection>;

/// How the pool connects and how long anyone waits for it.
#[derive(Debug, Clone)]
pub struct PgPoolSettings {
    pub url: String,
    pub max_size: usize,
    /// Bounds connecting, waiting for a free connection and recycling one each.
    pub timeout: Duration,
    /// Server-side limit for any single statement.
    pub statement_timeout: Duration,
}

/// Builds the pool. Connections are opened lazily, so this succeeds while
/// Postgres is down; requests then answer 503 until it is back. One operation
/// may take the pool timeout (to get a connection) plus the statement timeout.
///
/// # Errors
/// When the settings are unusable.
pub fn connect_pool(settings: &PgPoolSettings) -> anyhow::Result<Postgres> {
    Ok(Postgres::new(
        build_pool(settings, &[])?,
        settings.timeout + settings.statement_timeout,
    ))
}

/// As [`connect_pool`], for the lanes' batches: each prepared statement is
/// planned once per connection (`plan_cache_mode = force_generic_plan`)
/// instead of at each execution. A batch's statements take arrays of any
/// length, whose plans are the same for one row or a hundred (index
/// lookups per element, `unnest` joined by key), and planning the 31
/// parameters of the batch write anew took 0.6–0.8 ms of every batch,
/// half as long as executing a batch of one.
///
/// # Errors
/// When the settings are unusable.
pub fn connect_batch_pool(settings: &PgPoolSettings) -> anyhow::Result<Postgres> {
    Ok(Postgres::new(
        build_pool(settings, &["SET plan_cache_mode = force_generic_plan"])?,
        settings.timeout + settings.statement_timeout,
    ))
}

/// As [`connect_pool`], but each thread that asks for a connection gets a
/// pool of its own, of up to `settings.max_size` connections
/// ([`ThreadSets`](crate::thread_sets::ThreadSets)). For the pool requests
/// use, on the server's worker threads; the lanes' pools, whose tasks move
/// between the runtime's threads, stay one pool each.
///
/// # Errors
/// When the settings are unusable.
pub fn connect_pool_per_thread(settings: &PgPoolSettings) -> anyhow::Result<Postgres> {
    build_pool(settings, &[])?;
    let settings = settings.clone();
    let op_timeout = settings.timeout + settings.statement_timeout;
    Ok(Postgres::per_thread(
        move || build_pool(&settings, &[]).expect("the same settings built a pool before"),
        op_timeout,
    ))
}

/// The pool, each new connection set up with the service's settings and
/// then `extra`, and retired after [`RETIRE_AFTER`].
fn build_pool(settings: &PgPoolSettings, extra: &'static [&'static str]) -> anyhow::Result<PgPool> {
    build_retiring_pool(settings, extra, RETIRE_AFTER)
}

/// As [`build_pool`], connections retired after `retire_after` (and a
/// tenth more at most).
fn build_retiring_pool(
    settings: &PgPoolSettings,
    extra: &'static [&'static str],
    retire_after: Duration,
) -> anyhow::Result<PgPool> {
    LazyLock::force(&EPOCH);
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    let connect_timeout = settings.timeout;
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // `Verified` (the default) sends a test query on every checkout: a round
    // trip per repository call, measured as the largest cost of a read under
    // load. A dead connection now fails its first real query instead
    // (answered 503, and the connection is discarded as broken).
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        async move {
            let mut conn = tokio::time::timeout(connect_timeout, AsyncPgConnection::establish(url))
                .await
                .map_err(|_| {
                    diesel::ConnectionError::BadConnection("connect timed out".to_owned())
                })??;
            // A transaction left idle (its client vanished) is ended by the
            // server, freeing its locks, after twice the statement timeout.
            let idle_ms = statement_timeout_ms * 2;
            // The guarded writes reason in READ COMMITTED (each statement
            // sees what committed before it started, and a statement that
            // waited on a row lock re-reads the row): pinned here, whatever
            // the server's or the database's default says.
            let pinned = [
                format!("SET statement_timeout = {statement_timeout_ms}"),
                format!("SET idle_in_transaction_session_timeout = {idle_ms}"),
                "SET default_transaction_isolation = 'read committed'".to_owned(),
            ];
            for setting in pinned
                .into_iter()
                .chain(extra.iter().map(|s| (*s).to_owned()))
            {
                diesel::sql_query(setting)
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(settings.url.clone(), config);
    Pool::builder(manager)
        .max_size(settings.max_size)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout))
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if retired(metrics.created, Instant::now(), retire_after) {
                tracing::debug!(
                    age_s = metrics.age().as_secs(),
                    "retiring a Postgres connection"
                );
                Err(HookError::message("connection retired"))
            } else {
                Ok(())
            }
        }))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the Postgres pool")
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Creates the database named in `url` when it does not exist yet, through the
/// server's `postgres` maintenance database. Safe to race: a concurrent
/// creation by another instance counts as success.
///
/// # Errors
/// When the server cannot be reached or refuses the creation.
pub async fn ensure_database(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let parsed = Url::parse(url).context("DATABASE_URL is not a valid URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err(anyhow!("DATABASE_URL names no database"));
    }
    // The usual case: it exists and we may connect to it. Managed Postgres
    // often forbids connecting to the maintenance database, so try this first.
    if let Ok(Ok(_)) = tokio::time::timeout(timeout, AsyncPgConnection::establish(url)).await {
        return Ok(());
    }
    let mut maintenance = parsed.clone();
    maintenance.set_path("/postgres");
    let mut conn =
        tokio::time::timeout(timeout, AsyncPgConnection::establish(maintenance.as_str()))
            .await
            .map_err(|_| anyhow!("connecting to Postgres timed out after {timeout:?}"))?
            .context("connecting to the Postgres maintenance database")?;
    let found = prepared("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<Text, _>(&name)
        .get_result::<Exists>(&mut conn)
        .await
        .context("looking up the database")?;
    if found.exists {
        return Ok(());
    }
    let quoted = name.replace('"', "\"\"");
    match diesel::sql_query(format!("CREATE DATABASE \"{quoted}\""))
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another instance created it between our check and our CREATE: Postgres
        // says "already exists" or, when the two commits race, reports a unique
        // violation on its own catalogue.
        Err(diesel::result::Error::DatabaseError(kind, info))
            if info.message().contains("already exists")
                || matches!(kind, diesel::result::DatabaseErrorKind::UniqueViolation) =>
        {
            Ok(())
        }
        Err(err) => Err(err).context("creating the database"),
    }
}

/// Runs the pending embedded migrations, holding a Postgres advisory lock so
/// that instances starting together apply each migration once.
///
/// # Errors
/// When Postgres cannot be reached or a migration fails.
pub async fn run_migrations(url: &str) -> anyhow::Result<()> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;
        let mut conn = <Wrapper as diesel::Connection>::establish(&url)
            .context("connecting to Postgres for migrations")?;
        let lock = diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"));
        diesel::RunQueryDsl::execute(lock, &mut conn).context("taking the migration lock")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|done| done.len())
            .map_err(|e| anyhow!("running migrations: {e}"));
        // The lock dies with the connection anyway; unlock to be tidy.
        let unlock = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
        let _ = diesel::RunQueryDsl::execute(unlock, &mut conn);
        let applied = applied?;
        if applied > 0 {
            tracing::info!(applied, "applied migrations");
        }
        Ok(())
    })
    .await
    .context("migration task panicked")?
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Int4;

    use super::*;

    #[test]
    fn a_connection_retires_after_its_lifetime_and_a_tenth_at_most() {
        let created = Instant::now();
        let after = Duration::from_secs(600);
        assert!(!retired(created, created, after));
        assert!(!retired(created, created + after, after));
        assert!(retired(
            created,
            created + after + after / 10 + Duration::from_millis(1),
            after
        ));
    }

    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Int4)]
        pid: i32,
    }

    async fn backend_pid(pool: &PgPool) -> i32 {
        let mut conn = pool.get().await.expect("connection");
        diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut *conn)
            .await
            .expect("pid")
            .pid
    }

    /// The pool keeps a connection (and the plans it cached) until its
    /// lifetime is over, then serves a new server process.
    #[tokio::test]
    async fn the_pool_reopens_a_connection_past_its_lifetime() {
        let db = testkit::TestDb::create().await;
        let settings = PgPoolSettings {
            url: db.url.clone(),
            max_size: 1,
            timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        };
        let pool = build_retiring_pool(&settings, &[], Duration::from_secs(2)).expect("pool");
        let first = backend_pid(&pool).await;
        assert_eq!(
            backend_pid(&pool).await,
            first,
            "reused within its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let second = backend_pid(&pool).await;
        assert_ne!(second, first, "a connection past its lifetime is reopened");
        assert_eq!(backend_pid(&pool).await, second, "and the new one is kept");
    }
}
