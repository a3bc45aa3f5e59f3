//! The test harness shared by every crate's integration and end-to-end tests.
//!
//! Tests talk to real Postgres and Redis. Where they are comes from, in order:
//! `TEST_DATABASE_URL` / `TEST_REDIS_URL`; else the local services on
//! 127.0.0.1:5432 / 127.0.0.1:6379; else containers started by testcontainers
//! when a Docker daemon answers; else the test fails with a message that says
//! what to start. Nothing is ever skipped.
//!
//! - [`TestDb`]: a fresh database per test, cloned from a migrated template
//!   (built once per migration set, under an advisory lock), dropped after.
//! - [`TestRedis`]: a fresh key prefix per test, its keys deleted after.
//! - [`TcpProxy`]: a proxy in front of a service that a test can cut, stall
//!   and restore, to see how the service behaves when a dependency goes away
//!   or hangs.

mod discovery;
mod postgres;
mod proxy;
mod redis;

pub use discovery::{Services, services};
pub use postgres::TestDb;
pub use proxy::{TcpProxy, target_of};
pub use redis::TestRedis;

/// A short random lowercase-alphanumeric string for names.
pub(crate) fn random_suffix(len: usize) -> String {
    use rand::RngExt as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
