//! Investments: products that recruit money inside a window, up to a target
//! that is never exceeded; each investment is its own row.
//!
//! The rules an investment must pass are here ([`InvestProduct::admit`]),
//! and so is the decision of an investment batch ([`books`]): which
//! investments the locked products take, at the database's clock. The store
//! writes what was taken under a guarded update, which is what holds under
//! any number of concurrent investors.

pub mod books;
pub mod models;
pub mod ports;

pub use books::*;
pub use models::*;
pub use ports::*;
