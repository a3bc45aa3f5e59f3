//! The heart of the service: entities, value objects, domain errors and the
//! port traits that adapters implement.
//!
//! This crate does no I/O and depends on no I/O crate (no tokio, diesel, redis
//! or actix): `cargo tree -p domain` proves it. Each business context is one
//! module here and a module of the same name in `application`, `infra` and
//! `web`, so one feature is one folder name to grep.
//!
//! - [`identity`]: users, roles, login ids, passwords and access tokens.
//! - [`points`]: prepaid balances and their ledger.
//! - [`catalog`]: products and their live stock.
//! - [`ordering`]: pricing and placing orders.
//! - [`coupon`]: campaigns, code pools and first-come issue.
//! - [`invest`]: recruiting products and investments that never exceed the target.
//! - [`idempotency`]: keys, fingerprints, stored responses and [`Written`](idempotency::Written), the outcome of every keyed write.
//! - [`gate`]: the vocabulary of the Redis gates in front of the hot writes.
//! - [`money`]: the checked `Points` amount.
//! - [`throttle`]: quotas on attempts per subject and the rate-limiter port.
//! - [`clock`]: the [`Clock`](clock::Clock) port; time is never read directly.
//! - [`health`]: the readiness probe port for backing services.
//! - [`error`]: the one error every port may return when a backing service fails.
//! - [`deadline`]: one time budget per request for all its backing-service calls.

pub mod catalog;
pub mod clock;
pub mod coupon;
pub mod deadline;
pub mod error;
pub mod events;
pub mod gate;
pub mod health;
pub mod idempotency;
pub mod identity;
pub mod invest;
pub mod money;
pub mod ordering;
pub mod paging;
pub mod points;
pub mod throttle;
