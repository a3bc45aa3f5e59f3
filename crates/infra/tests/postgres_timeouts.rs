//! A query in flight when Postgres hangs ends in `Unavailable` within the
//! operation timeout, instead of waiting for TCP to give up (minutes).

use std::time::{Duration, Instant};

use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use infra::postgres::{PgPoolSettings, connect_pool, unavailable};
use testkit::{TcpProxy, TestDb, target_of};

#[tokio::test]
async fn a_query_in_flight_when_postgres_hangs_times_out() {
    let db = TestDb::create().await;
    let proxy = TcpProxy::start(target_of(&db.url)).await;
    let pg = connect_pool(&PgPoolSettings {
        url: db.url_via(proxy.addr()),
        max_size: 2,
        timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_millis(500),
    })
    .expect("pool");

    let started = Instant::now();
    let result: Result<i32, Unavailable> = pg
        .timed(async {
            let mut conn = pg.conn().await?;
            // The server goes silent after we got our connection.
            proxy.stall();
            diesel::select(diesel::dsl::sql::<Integer>("1"))
                .get_result::<i32>(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await;

    let err = result.expect_err("no answer can come");
    assert_eq!(err.service(), "postgres");
    let took = started.elapsed();
    // A stalled server never answers: without the timeout this waits
    // forever. The bound is generous so that a busy machine passes.
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}, the operation timeout is 1 s"
    );
}

/// A request's time budget (`domain::deadline`) bounds its Postgres
/// operations too: with an operation timeout of a minute, a query on a hung
/// server inside a 300 ms budget gives up with the budget, and one after it
/// has nothing left at all.
#[tokio::test]
async fn a_query_inside_a_spent_request_budget_gives_up_with_the_budget() {
    let db = TestDb::create().await;
    let proxy = TcpProxy::start(target_of(&db.url)).await;
    let pg = connect_pool(&PgPoolSettings {
        url: db.url_via(proxy.addr()),
        max_size: 2,
        timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(30),
    })
    .expect("pool");
    let query = || {
        pg.timed(async {
            let mut conn = pg.conn().await?;
            diesel::select(diesel::dsl::sql::<Integer>("1"))
                .get_result::<i32>(&mut conn)
                .await
                .map_err(unavailable)
        })
    };
    // Connected first, so the hang is the query's, not the connect's.
    assert_eq!(query().await.expect("answers"), 1);
    proxy.stall();

    let request = domain::deadline::within(Duration::from_millis(300), async {
        let first: Result<i32, Unavailable> = query().await;
        let second: Result<i32, Unavailable> = query().await;
        (first, second)
    });
    // Without the budget this waits out the minute-long timeout.
    let (first, second) = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("bounded by the budget, not the operation timeout");
    assert_eq!(first.expect_err("hung").service(), "postgres");
    assert_eq!(second.expect_err("no budget left").service(), "postgres");
}
