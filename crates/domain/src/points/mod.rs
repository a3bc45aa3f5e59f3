//! Points: a prepaid balance per user and the ledger of every change to it.
//!
//! The balance never goes below 0 nor above [`MAX_BALANCE`]; the store
//! enforces both with guarded updates in the same transaction as the ledger
//! row, backed by a `CHECK` constraint.

pub mod models;
pub mod ports;

pub use models::*;
pub use ports::*;
