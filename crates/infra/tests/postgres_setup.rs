//! Database creation and migrations, as the app runs them at start-up.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use infra::postgres::{ensure_database, run_migrations};
use testkit::TestDb;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn creates_a_missing_database_and_migrates_it_once_even_when_raced() {
    // Borrow a test database's server, but name a database that does not exist yet.
    let db = TestDb::create().await;
    let fresh_name = format!("{}_fresh", db.name());
    let fresh_url = db.url.replace(db.name(), &fresh_name);

    let (a, b) = tokio::join!(
        ensure_database(&fresh_url, Duration::from_secs(3)),
        ensure_database(&fresh_url, Duration::from_secs(3)),
    );
    a.expect("first creation");
    b.expect("racing creation counts as success");
    let (a, b) = tokio::join!(run_migrations(&fresh_url), run_migrations(&fresh_url));
    a.expect("first migration run");
    b.expect("concurrent migration run");

    let mut conn = db.connect().await;
    let exists: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_database WHERE datname = '{fresh_name}'"
    ))
    .get_result(&mut conn)
    .await
    .expect("query");
    assert_eq!(exists.n, 1);
    let mut fresh =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&fresh_url)
            .await
            .expect("connect");
    let users: Count = diesel::sql_query("SELECT count(*) AS n FROM users")
        .get_result::<Count>(&mut fresh)
        .await
        .expect("users table exists");
    assert_eq!(users.n, 0);
    drop(fresh);
    diesel::sql_query(format!("DROP DATABASE {fresh_name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("cleanup");
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

#[tokio::test]
async fn pooled_connections_read_committed_whatever_the_database_default() {
    let db = TestDb::create().await;
    let mut admin = db.connect().await;
    diesel::sql_query(format!(
        "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
        db.name()
    ))
    .execute(&mut admin)
    .await
    .expect("changing the database default");
    let pg = infra::postgres::connect_pool(&infra::postgres::PgPoolSettings {
        url: db.url.clone(),
        max_size: 1,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("pool");

    let mut conn = pg.conn().await.expect("a pooled connection");
    let level: Setting =
        diesel::sql_query("SELECT current_setting('transaction_isolation') AS value")
            .get_result(&mut *conn)
            .await
            .expect("query");

    assert_eq!(level.value, "read committed");
}
