//! Expiry notice claims on a real database: a run that dies between claiming
//! and marking loses no notice, and the notice comes again with the same id.

use std::time::Duration;

use chrono::Utc;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl as _;
use domain::coupon::{ExpiryStore, Notifier};
use infra::notify::JsonLineNotifier;
use infra::postgres::{PgExpiryStore, PgPoolSettings, Postgres, connect_pool};
use testkit::TestDb;

const LIFETIME: Duration = Duration::from_secs(1);
const AHEAD: chrono::Duration = chrono::Duration::days(3);

fn pool(db: &TestDb) -> Postgres {
    connect_pool(&PgPoolSettings {
        url: db.url.clone(),
        max_size: 4,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("pool")
}

async fn run(db: &TestDb, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.connect().await;
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Three coupons of one owner expiring in two days, plus `extra` (raw
/// codes), each of its own campaign (an owner holds one code per campaign).
async fn due_coupons(db: &TestDb, extra: &[&str]) {
    run(
        db,
        "WITH u AS (INSERT INTO users (login_id, name) VALUES ('owner', 'Owner') RETURNING id) \
         SELECT count(*) AS n FROM u",
    )
    .await;
    let mut codes = vec!["DUE-0001", "DUE-0002", "DUE-0003"];
    codes.extend_from_slice(extra);
    for code in codes {
        run(
            db,
            &format!(
                "WITH k AS (INSERT INTO coupon_campaigns (name, discount_type, discount_value, valid_days) \
                            VALUES ('c', 'AMOUNT', 1000, 7) RETURNING id), \
                      x AS (INSERT INTO coupons (campaign_id, code, owner_id, issued_at, expires_at) \
                            SELECT k.id, '{code}', u.id, now(), now() + interval '2 days' \
                              FROM k, users u RETURNING 1) \
                 SELECT count(*) AS n FROM x"
            ),
        )
        .await;
    }
}

fn lines(out: Vec<u8>) -> Vec<serde_json::Value> {
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[tokio::test]
async fn a_run_that_dies_between_claim_and_mark_loses_nothing_and_the_repeat_keeps_its_notice_id() {
    let db = TestDb::create().await;
    due_coupons(&db, &[]).await;
    let store = PgExpiryStore::new(pool(&db));
    let now = Utc::now();

    // The first run claims, writes one notice, and dies before marking.
    let first = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    let dead = JsonLineNotifier::new(Vec::new());
    dead.notify(&first.notices[0]).expect("written");
    drop(first);

    // While its claims hold, another run finds nothing to send.
    let meanwhile = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    assert_eq!(
        meanwhile.claimed, 0,
        "claimed notices are not sent twice at once"
    );

    // Once they lapse, the next run sends all three and marks them.
    tokio::time::sleep(LIFETIME + Duration::from_millis(300)).await;
    let second = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    assert_eq!(second.claimed, 3, "no notice is lost");
    let live = JsonLineNotifier::new(Vec::new());
    for notice in &second.notices {
        live.notify(notice).expect("written");
    }
    let marked = store
        .mark_notified(
            second.claim,
            second.notices.iter().map(|n| n.coupon_id).collect(),
        )
        .await
        .expect("marked");

    assert_eq!(marked, 3);
    let repeated = &lines(dead.into_inner())[0];
    let sent = lines(live.into_inner());
    let again = sent
        .iter()
        .find(|l| l["code"] == repeated["code"])
        .expect("the dead run's notice is sent again");
    assert_eq!(
        again["noticeId"], repeated["noticeId"],
        "a consumer can drop the repeat"
    );
    assert_eq!(again["message"], "쿠폰이 3일 후 만료됩니다.");
    assert_eq!(
        run(
            &db,
            "SELECT count(*) AS n FROM coupons WHERE notified_at IS NOT NULL"
        )
        .await,
        3
    );
    tokio::time::sleep(LIFETIME + Duration::from_millis(300)).await;
    let after = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    assert_eq!(after.claimed, 0, "a marked notice is never sent again");
}

#[tokio::test]
async fn a_run_whose_claim_was_taken_over_marks_nothing_of_the_new_holders() {
    let db = TestDb::create().await;
    due_coupons(&db, &[]).await;
    let store = PgExpiryStore::new(pool(&db));
    let now = Utc::now();
    let stalled = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    tokio::time::sleep(LIFETIME + Duration::from_millis(300)).await;
    let taker = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");

    let late = store
        .mark_notified(
            stalled.claim,
            stalled.notices.iter().map(|n| n.coupon_id).collect(),
        )
        .await
        .expect("answered");

    assert_eq!((stalled.claimed, taker.claimed, late), (3, 3, 0));
    assert_eq!(
        run(
            &db,
            "SELECT count(*) AS n FROM coupons WHERE notified_at IS NOT NULL"
        )
        .await,
        0,
        "the new holder marks them once it has written them"
    );
}

#[tokio::test]
async fn an_unreadable_coupon_neither_blocks_nor_loses_the_others() {
    let db = TestDb::create().await;
    due_coupons(&db, &["not a code!"]).await;
    let store = PgExpiryStore::new(pool(&db));
    let now = Utc::now();

    let batch = store
        .claim_notices(now, now + AHEAD, 100, LIFETIME)
        .await
        .expect("claimed");
    let marked = store
        .mark_notified(
            batch.claim,
            batch.notices.iter().map(|n| n.coupon_id).collect(),
        )
        .await
        .expect("marked");

    assert_eq!((batch.claimed, batch.notices.len(), marked), (4, 3, 3));
    assert_eq!(
        run(
            &db,
            "SELECT count(*) AS n FROM coupons WHERE notified_at IS NULL AND code = 'not a code!'"
        )
        .await,
        1,
        "the unreadable one is still owed, to be tried again when its claim lapses"
    );
}
