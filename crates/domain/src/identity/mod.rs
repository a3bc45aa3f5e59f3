//! Identity: who the caller is and what they may do.
//!
//! Users sign up with a login id and a password (stored as an argon2id hash),
//! sign in for a short-lived access token, and carry a [`Role`]. Users that a
//! trusted gateway vouches for are provisioned on first sight, with no password.
//!
//! - [`models`]: the validated value types (`LoginId`, `Password`, …) and `User`.
//! - [`ports`]: what the use cases need from storage, hashing and tokens.

pub mod models;
pub mod ports;

pub use models::*;
pub use ports::*;
