//! Investments: products that recruit money inside a window, up to a target
//! that is never exceeded; each investment is its own row.
//!
//! The rules an investment must pass are here ([`InvestProduct::admit`]); the
//! store enforces them again in one guarded update, which is what holds under
//! any number of concurrent investors.

pub mod models;
pub mod ports;

pub use models::*;
pub use ports::*;
