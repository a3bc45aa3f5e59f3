//! Ordering use cases: place an order, read the caller's orders. One file
//! per use case, named after its type.

mod order_queries;
mod place_order;

pub use order_queries::OrderQueries;
pub use place_order::{PlaceOrder, PlaceOrderCommand};
