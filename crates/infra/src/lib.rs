//! Adapters: the implementations of `domain`'s ports on real infrastructure.
//!
//! - [`postgres`]: the source of truth (Diesel + diesel-async, a deadpool pool,
//!   embedded migrations) and every repository.
//! - [`redis`]: the fast path (deadpool-redis) and its key namespace.
//! - [`kafka`]: order events on a Kafka topic (rskafka), for the data platform.
//! - [`auth`]: HS256 JWTs and argon2id password hashes.
//! - [`clock`]: the system clock.
//!
//! `anyhow` is allowed here for start-up plumbing; every port method returns
//! the port's own error type, and a failing backing service is always
//! [`domain::error::Unavailable`].

pub mod auth;
pub mod cached;
pub mod clock;
pub mod coalesce;
pub mod codes;
pub mod kafka;
pub mod notify;
pub mod postgres;
pub mod redis;
pub mod thread_sets;

/// A connection pool's state (both pools are deadpool pools).
pub use deadpool_redis::Status as PoolState;
