//! Ordering: one order of several products, paid from the points balance,
//! optionally with a coupon, in one atomic step.
//!
//! Pricing and the discount are computed here, in pure functions, and so is
//! the decision of an order batch ([`books`]): which orders the stock,
//! balances and coupons allow. The order store locks those rows, asks the
//! books, and writes what was taken in one transaction.

pub mod books;
pub mod models;
pub mod ports;
pub mod pricing;

pub use books::*;
pub use models::*;
pub use ports::*;
pub use pricing::*;
