//! Coupons: campaigns own a pool of unguessable codes; users are issued one
//! code per campaign, first come first served, and spend it on an order.
//!
//! The discount rule is computed here ([`DiscountRule::discount_for`]); the
//! store guards the pool (one code per user, never more than the pool).

pub mod expiry;
pub mod models;
pub mod ports;
pub mod status;

pub use expiry::*;
pub use models::*;
pub use ports::*;
pub use status::*;
