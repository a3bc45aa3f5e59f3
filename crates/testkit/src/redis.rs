//! A key prefix per test on the shared Redis server.

use deadpool_redis::redis;

use crate::{random_suffix, services};

/// A namespace of Redis keys for one test; its keys are deleted when dropped.
#[derive(Debug)]
pub struct TestRedis {
    pub url: String,
    /// Every key the service writes in this test starts with this.
    pub prefix: String,
}

impl TestRedis {
    /// # Panics
    /// When Redis cannot be found.
    pub async fn create() -> Self {
        Self {
            url: services().await.redis_url.clone(),
            prefix: format!("t:{}:", random_suffix(12)),
        }
    }

    /// The URL of the same server reached through another address (a [`TcpProxy`](crate::TcpProxy)).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        format!("redis://{addr}")
    }

    /// Deletes every key of this namespace, as a Redis restarted without
    /// persistence has lost them.
    pub async fn lose_everything(&self) {
        let mut conn = self.connect().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("listing the namespace's keys");
        for chunk in keys.chunks(500) {
            let () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("deleting the namespace's keys");
        }
    }

    /// A direct connection for assertions on the keys.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("Redis URL is valid")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to Redis")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // The synchronous client needs no runtime, so this works in any Drop.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}
