//! The popular-products consumer against a real Redis stream.

use std::time::Duration;

use deadpool_redis::redis::cmd;
use domain::catalog::{ProductId, SalesRanking};
use infra::redis::{RedisKeys, RedisPoolSettings, RedisSalesRanking, connect_pool};
use testkit::TestRedis;

fn event(event_id: &str, kind: &str, product: i64, quantity: i64) -> String {
    serde_json::json!({
        "eventId": event_id, "type": kind, "occurredAt": chrono::Utc::now().to_rfc3339(),
        "orderId": 1, "userId": 1,
        "items": [{"productId": product, "quantity": quantity, "unitPrice": 1, "lineTotal": quantity}],
        "totalAmount": quantity, "discountAmount": 0, "paidAmount": quantity,
    })
    .to_string()
}

#[tokio::test]
async fn events_a_dead_consumer_left_unacknowledged_are_claimed_and_counted_once() {
    let redis = TestRedis::create().await;
    let pool = connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 4,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    let ranking = RedisSalesRanking::new(pool, RedisKeys::new(redis.prefix.clone()));
    ranking.ensure_group().await.expect("group");
    let stream = format!("{}events:orders", redis.prefix);
    let mut conn = redis.connect().await;
    for payload in [
        event("e-1", "order.paid", 7, 4),
        event("e-2", "order.refunded", 7, 9),
    ] {
        let _: String = cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("payload")
            .arg(payload)
            .query_async(&mut conn)
            .await
            .expect("xadd");
    }
    // A consumer reads both and dies before acknowledging.
    let _: deadpool_redis::redis::Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("popular")
        .arg("dead")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("read as the dead consumer");
    assert_eq!(
        ranking.consume("alive", 10).await.expect("consume"),
        0,
        "nothing new for others"
    );

    let claimed = ranking
        .claim_stale("alive", Duration::ZERO)
        .await
        .expect("claim");

    assert_eq!(claimed, 2);
    let top = ranking.top(5).await.expect("top");
    assert_eq!(top.len(), 1, "the refund event is not a sale");
    assert_eq!((top[0].product_id, top[0].sold), (ProductId::new(7), 4));
    assert_eq!(
        ranking
            .claim_stale("alive", Duration::ZERO)
            .await
            .expect("claim"),
        0,
        "acknowledged"
    );
}
