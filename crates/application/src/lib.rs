//! Use cases: the business steps of each context, written against the ports
//! of `domain` only. Nothing here knows about HTTP, SQL or Redis; every use
//! case is unit-tested with mockall mocks of its ports.
//!
//! One module per context (same names as in `domain`, `infra` and `web`), one
//! file per use case with its own command, result and error types. Every
//! keyed or gated write runs through [`pipeline`].

pub mod catalog;
pub mod coupon;
pub mod events;
pub mod identity;
pub mod invest;
pub mod ordering;
pub mod pipeline;
pub mod points;
pub mod throttle;
