//! Finding Postgres and Redis for tests, once per test process.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::sync::OnceCell;

/// Where the test services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// A server-level URL; its database part is replaced per test.
    pub postgres_url: String,
    pub redis_url: String,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

/// The services every test of this process uses.
///
/// # Panics
/// When neither the environment, nor the local machine, nor Docker provides
/// Postgres or Redis: the message says what to start.
pub async fn services() -> &'static Services {
    SERVICES
        .get_or_init(|| async {
            Services {
                postgres_url: find_postgres().await,
                redis_url: find_redis().await,
            }
        })
        .await
}

async fn postgres_answers(url: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(3), AsyncPgConnection::establish(url)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

async fn redis_answers(url: &str) -> Result<(), String> {
    let client = deadpool_redis::redis::Client::open(url).map_err(|e| e.to_string())?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

async fn find_postgres() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        if let Err(e) = postgres_answers(&url).await {
            panic!("TEST_DATABASE_URL={url} does not answer: {e}");
        }
        return url;
    }
    let local = postgres_answers(LOCAL_POSTGRES).await;
    if local.is_ok() {
        return LOCAL_POSTGRES.to_owned();
    }
    if docker_available() {
        match start_postgres_container().await {
            Ok(url) => return url,
            Err(e) => eprintln!("testkit: could not start a Postgres container: {e}"),
        }
    }
    panic!(
        "No Postgres for the tests. Set TEST_DATABASE_URL (a superuser URL), or start Postgres on \
         127.0.0.1:5432 with trust auth for user postgres (on Debian: pg_ctlcluster \
         --skip-systemctl-redirect $(ls /etc/postgresql) main start), or start a Docker daemon. \
         Local attempt: {}",
        local.err().unwrap_or_default()
    );
}

async fn find_redis() -> String {
    if let Ok(url) = std::env::var("TEST_REDIS_URL") {
        if let Err(e) = redis_answers(&url).await {
            panic!("TEST_REDIS_URL={url} does not answer: {e}");
        }
        return url;
    }
    let local = redis_answers(LOCAL_REDIS).await;
    if local.is_ok() {
        return LOCAL_REDIS.to_owned();
    }
    if docker_available() {
        match start_redis_container().await {
            Ok(url) => return url,
            Err(e) => eprintln!("testkit: could not start a Redis container: {e}"),
        }
    }
    panic!(
        "No Redis for the tests. Set TEST_REDIS_URL, or start Redis on 127.0.0.1:6379 \
         (redis-server --daemonize yes --port 6379 --save ''), or start a Docker daemon. \
         Local attempt: {}",
        local.err().unwrap_or_default()
    );
}

/// One reusable container per service, shared by every test process and run:
/// testcontainers finds it again by its configuration instead of starting a
/// new one, so nothing piles up. Remove it with `docker rm -f` when done.
async fn start_postgres_container() -> anyhow::Result<String> {
    use testcontainers::runners::AsyncRunner as _;
    use testcontainers::{ImageExt as _, ReuseDirective};
    let container = testcontainers_modules::postgres::Postgres::default()
        .with_tag("16-alpine")
        .with_reuse(ReuseDirective::Always)
        .start()
        .await?;
    let port = container.get_host_port_ipv4(5432).await?;
    let host = container.get_host().await?;
    drop(container); // reused containers outlive their handle
    Ok(format!(
        "postgres://postgres:postgres@{host}:{port}/postgres"
    ))
}

async fn start_redis_container() -> anyhow::Result<String> {
    use testcontainers::runners::AsyncRunner as _;
    use testcontainers::{ImageExt as _, ReuseDirective};
    let container = testcontainers_modules::redis::Redis::default()
        .with_tag("7-alpine")
        .with_reuse(ReuseDirective::Always)
        .start()
        .await?;
    let port = container.get_host_port_ipv4(6379).await?;
    let host = container.get_host().await?;
    drop(container); // reused containers outlive their handle
    Ok(format!("redis://{host}:{port}"))
}
