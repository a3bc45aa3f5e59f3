//! A fresh, migrated database per test, cloned from a template in ~30 ms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use url::Url;

use crate::{random_suffix, services};

/// Test databases older than this are leftovers of killed runs and are dropped.
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database that exists for one test, and is dropped when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of the test's own database.
    pub url: String,
    name: String,
    server_url: String,
}

impl TestDb {
    /// Creates a database from the migrated template.
    ///
    /// # Panics
    /// When Postgres cannot be found or refuses to create the database.
    pub async fn create() -> Self {
        let server_url = services().await.postgres_url.clone();
        let template = TEMPLATE
            .get_or_init(|| async { build_template(&server_url).await })
            .await;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("t_{created}_{}", random_suffix(10));
        let mut conn = connect(&server_url).await;
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        Self {
            url: with_database(&server_url, &name),
            name,
            server_url,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database reached through another address (a [`TcpProxy`](crate::TcpProxy)).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let mut url = Url::parse(&self.url).expect("test database URL is valid");
        url.set_host(Some(&addr.ip().to_string()))
            .expect("host is settable");
        url.set_port(Some(addr.port())).expect("port is settable");
        url.to_string()
    }

    /// A direct connection for assertions on the database's contents.
    pub async fn connect(&self) -> AsyncPgConnection {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server_url = self.server_url.clone();
        // Drop may run inside a runtime that is shutting down: use our own.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(&server_url).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn with_database(server_url: &str, name: &str) -> String {
    let mut url = Url::parse(server_url).expect("Postgres URL is valid");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A hash of every migration file, so a changed migration gets a new template.
fn migrations_hash() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()))
        {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(
            f.strip_prefix(&dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update(std::fs::read(&f).unwrap_or_default());
    }
    hex::encode(&hasher.finalize()[..6])
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Builds `tpl_<hash>` once across all test processes (advisory lock), and
/// sweeps test databases left behind by killed runs.
async fn build_template(server_url: &str) -> String {
    let hash = migrations_hash();
    let template = format!("tpl_{hash}");
    let lock_key = i64::from_str_radix(&hash[..12], 16).unwrap_or(0x7e57);
    let mut conn = connect(server_url).await;
    diesel::sql_query(format!("SELECT pg_advisory_lock({lock_key})"))
        .execute(&mut conn)
        .await
        .expect("taking the template lock");

    let existing: Vec<Name> = diesel::sql_query(
        "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE 't%'",
    )
    .load(&mut conn)
    .await
    .expect("listing databases");
    if !existing.iter().any(|d| d.datname == template) {
        let building = format!("{template}_build");
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        diesel::sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .expect("creating the template database");
        infra::postgres::run_migrations(&with_database(server_url, &building))
            .await
            .expect("migrating the template database");
        // Appears under its final name only once fully migrated.
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {template}"))
            .execute(&mut conn)
            .await
            .expect("publishing the template database");
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for db in &existing {
        let created = db
            .datname
            .strip_prefix("t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER.as_secs()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                db.datname
            ))
            .execute(&mut conn)
            .await;
        }
    }
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({lock_key})"))
        .execute(&mut conn)
        .await;
    template
}
