//! Ordering: one order of several products, paid from the points balance,
//! optionally with a coupon, in one atomic step.
//!
//! Pricing and the discount are computed here, in pure functions; the order
//! store then takes stock, balance and coupon in one transaction.

pub mod models;
pub mod ports;
pub mod pricing;

pub use models::*;
pub use ports::*;
pub use pricing::*;
