//! Catalogue: products with a price and live stock.
//!
//! Stock never goes below 0: the order store decrements it with a guarded
//! update in the order's transaction (`CHECK (stock >= 0)` behind it).

pub mod models;
pub mod popular;
pub mod ports;

pub use models::*;
pub use popular::*;
pub use ports::*;
