//! Order events on Kafka (`APP_KAFKA_BROKERS`): each paid order reaches the
//! topic `order-events`, keyed by its order id, with the same JSON as the
//! Redis stream entry, read back from offset 0 by an ordinary Kafka client
//! (kafka-python, `tests/kafka/read_topic.py`); a broker that is down holds
//! back only the Kafka copy, and nothing is lost when it returns.
//!
//! Each test starts its own broker, `tansu` (a Kafka-protocol broker from
//! the crates registry, memory storage), on a free port. These tests run as
//! their own CI step (`.ci/run`, "Kafka"), with the `kafka-tests` feature:
//!
//! ```sh
//! cargo install tansu --locked --version 0.6.0 --features dynostore
//! pip install kafka-python        # or KAFKA_PYTHON=<a python that has it>
//! cargo test -p app --features kafka-tests --test kafka_events
//! ```
#![cfg(feature = "kafka-tests")]

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use infra::kafka::{KafkaSettings, KafkaTopicReader, partition_for};
use infra::redis::{RedisEventStream, RedisKeys, RedisPoolSettings, connect_pool};
use serde_json::{Value, json};
use support::{Options, TestApp};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const PARTITIONS: usize = 3;

/// A `tansu` broker on a port of its own, killed when dropped.
struct Broker {
    port: u16,
    child: Option<std::process::Child>,
}

impl Broker {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("bound")
            .port();
        let mut broker = Self { port, child: None };
        broker.restart().await;
        broker
    }

    /// Starts the broker (again) on its port. Memory storage: a restarted
    /// broker has no topics.
    async fn restart(&mut self) {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start the Kafka-protocol broker `{bin}` ({err}): install it with \
                     `cargo install tansu --locked --version 0.6.0 --features dynostore`, \
                     or set TANSU_BIN"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(self.address())
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.address()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn spawn_app(brokers: &str) -> TestApp {
    TestApp::spawn_with(Options {
        extra: vec![
            ("APP_KAFKA_BROKERS".into(), brokers.into()),
            ("APP_KAFKA_PARTITIONS".into(), PARTITIONS.to_string()),
            ("APP_KAFKA_TIMEOUT".into(), "2s".into()),
        ],
        ..Options::default()
    })
    .await
}

async fn shop(app: &TestApp) -> (i64, String) {
    let product = app.create_product("Widget", 1_000, 100).await;
    let token = app
        .sign_up(&format!("buyer-{}", support::testkit_suffix()))
        .await;
    app.charge(&token, 100_000).await;
    (product, token)
}

async fn order(app: &TestApp, token: &str, product: i64, key: &str) -> i64 {
    let reply = app
        .post_idempotent(
            "/api/v1/orders",
            key,
            &json!({"items": [{"productId": product, "quantity": 1}]}),
            token,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["orderId"].as_i64().expect("orderId")
}

/// The Redis stream's payloads, by order id, once it holds `n` entries.
async fn stream_payloads(app: &TestApp, n: usize, within: Duration) -> BTreeMap<i64, String> {
    let pool = connect_pool(&RedisPoolSettings {
        url: app.redis.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    let stream = RedisEventStream::new(pool, &RedisKeys::new(app.redis.prefix.clone()), 1_000_000);
    let deadline = Instant::now() + within;
    loop {
        let entries = stream
            .read_after("0", Duration::from_millis(100), 1_000)
            .await
            .unwrap_or_default();
        if entries.len() >= n || Instant::now() > deadline {
            return entries
                .into_iter()
                .map(|e| {
                    let event: Value = serde_json::from_str(&e.payload).expect("json");
                    (event["orderId"].as_i64().expect("orderId"), e.payload)
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the ordinary client (kafka-python) read from offset 0.
#[derive(Debug)]
struct Read {
    partition: usize,
    key: String,
    value: String,
    headers: BTreeMap<String, String>,
    partitioner_choice: usize,
}

async fn read_with_kafka_python(brokers: &str, n: usize, within: Duration) -> Vec<Read> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/kafka/read_topic.py"
    );
    // `.ci/run` points this at a virtualenv with kafka-python.
    let python = std::env::var("KAFKA_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = tokio::process::Command::new(python)
        .args([
            script,
            brokers,
            "order-events",
            &n.to_string(),
            &within.as_secs().to_string(),
        ])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "read_topic.py failed ({}): {} (pip install kafka-python)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).expect("a JSON line");
            Read {
                partition: r["partition"].as_u64().expect("partition") as usize,
                key: r["key"].as_str().expect("a key").to_owned(),
                value: r["value"].as_str().expect("value").to_owned(),
                headers: serde_json::from_value(r["headers"].clone()).expect("headers"),
                partitioner_choice: r["partitionerChoice"].as_u64().expect("choice") as usize,
            }
        })
        .collect()
}

/// The outbox's Kafka backlog as `GET /metrics` shows it.
async fn kafka_lag(app: &TestApp) -> Option<f64> {
    let text = app.get("/metrics", None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(r#"outbox_unpublished_events{sink="kafka"} "#))
        .and_then(|v| v.parse().ok())
}

async fn wait_for<F: Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_reach_the_topic_keyed_by_order_id_as_the_stream_has_them() {
    let broker = Broker::start().await;
    let app = spawn_app(&broker.address()).await;
    let (product, token) = shop(&app).await;

    let mut placed = Vec::new();
    for i in 0..6 {
        placed.push(order(&app, &token, product, &format!("k-{i}")).await);
    }

    let stream = stream_payloads(&app, 6, Duration::from_secs(10)).await;
    assert_eq!(stream.len(), 6, "the stream copy");
    let read = read_with_kafka_python(&broker.address(), 6, Duration::from_secs(20)).await;
    assert_eq!(
        read.len(),
        6,
        "kafka-python read every event once: {read:?}"
    );
    for record in &read {
        let order_id: i64 = record.key.parse().expect("the key is the order id");
        assert!(placed.contains(&order_id));
        assert_eq!(
            record.value, stream[&order_id],
            "the same JSON as the stream entry"
        );
        let event: Value = serde_json::from_str(&record.value).expect("json");
        assert_eq!(event["orderId"], order_id);
        assert_eq!(
            record.headers["eventId"],
            event["eventId"].as_str().expect("id")
        );
        assert_eq!(record.headers["type"], "order.paid");
        assert_eq!(
            record.partition, record.partitioner_choice,
            "placed where Kafka's default partitioner puts the key"
        );
        assert_eq!(
            record.partition,
            partition_for(record.key.as_bytes(), PARTITIONS)
        );
    }
    // Commit order within each partition.
    for partition in 0..PARTITIONS {
        let ids: Vec<i64> = read
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.key.parse().expect("id"))
            .collect();
        assert!(ids.is_sorted(), "partition {partition}: {ids:?}");
    }
    assert!(
        wait_for(Duration::from_secs(5), || async {
            app.scalar("SELECT count(*) AS n FROM outbox WHERE kafka_published_at IS NULL")
                .await
                == 0
        })
        .await,
        "every event marked published for Kafka"
    );
    assert_eq!(kafka_lag(&app).await, Some(0.0));

    // A fresh rskafka reader from offset 0 sees the same records.
    let reader = KafkaTopicReader::connect(&KafkaSettings::new(
        &broker.address(),
        3,
        1,
        Duration::from_secs(5),
    ))
    .await
    .expect("connects");
    assert_eq!(reader.partitions(), PARTITIONS);
    let mut seen = 0;
    for partition in 0..PARTITIONS {
        seen += reader
            .fetch(partition, 0, Duration::from_millis(100))
            .await
            .expect("fetch")
            .len();
    }
    assert_eq!(seen, 6);

    // `app events tail --sink kafka` shows the topic to a person.
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["events", "tail", "--sink", "kafka", "--from-start"])
        .env("APP_KAFKA_BROKERS", broker.address())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let mut tailed = Vec::new();
    while tailed.len() < 6 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .expect("readable")
            .expect("a line");
        let event: Value = serde_json::from_str(&line).expect("a JSON line");
        tailed.push(event["orderId"].as_i64().expect("orderId"));
    }
    let _ = tail.kill().await;
    tailed.sort_unstable();
    assert_eq!(tailed, placed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_holds_back_only_the_kafka_copy_and_loses_nothing() {
    let mut broker = Broker::start().await;
    let app = spawn_app(&broker.address()).await;
    let (product, token) = shop(&app).await;
    let first = order(&app, &token, product, "before").await;
    assert_eq!(
        read_with_kafka_python(&broker.address(), 1, Duration::from_secs(20))
            .await
            .len(),
        1
    );

    broker.kill();
    let mut while_down = Vec::new();
    for i in 0..5 {
        while_down.push(order(&app, &token, product, &format!("down-{i}")).await);
    }
    // The stream copy does not wait for Kafka.
    let stream = stream_payloads(&app, 6, Duration::from_secs(10)).await;
    assert_eq!(stream.len(), 6);
    assert!(stream.contains_key(&first));
    assert!(
        wait_for(Duration::from_secs(10), || async {
            kafka_lag(&app).await == Some(5.0)
        })
        .await,
        "the metrics show the Kafka sink's lag"
    );
    let text = app.get("/metrics", None).await.text;
    assert!(
        text.contains(r#"outbox_unpublished_events{sink="stream"} 0"#),
        "{text}"
    );

    // Back (empty: memory storage). The topic is created again and the
    // events that waited in the outbox drain, in commit order per partition.
    broker.restart().await;
    let read = read_with_kafka_python(&broker.address(), 5, Duration::from_secs(30)).await;
    let mut ids: Vec<i64> = read.iter().map(|r| r.key.parse().expect("id")).collect();
    for partition in 0..PARTITIONS {
        let in_partition: Vec<i64> = read
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.key.parse().expect("id"))
            .collect();
        assert!(
            in_partition.is_sorted(),
            "partition {partition}: {in_partition:?}"
        );
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, while_down, "every event held back, once each at least");
    for record in &read {
        let id: i64 = record.key.parse().expect("id");
        assert_eq!(record.value, stream[&id]);
    }
    assert!(
        wait_for(Duration::from_secs(10), || async {
            kafka_lag(&app).await == Some(0.0)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_sells_while_no_broker_ever_answered_and_kafka_catches_up() {
    // Nothing listens yet on the broker's port.
    let mut broker = Broker::start().await;
    broker.kill();
    let app = spawn_app(&broker.address()).await;
    let (product, token) = shop(&app).await;
    let placed = order(&app, &token, product, "early").await;
    assert_eq!(
        stream_payloads(&app, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    assert!(
        wait_for(Duration::from_secs(10), || async {
            kafka_lag(&app).await == Some(1.0)
        })
        .await
    );

    broker.restart().await;
    let read = read_with_kafka_python(&broker.address(), 1, Duration::from_secs(30)).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key, placed.to_string());
}
