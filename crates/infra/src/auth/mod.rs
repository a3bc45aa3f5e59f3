//! Credentials: HS256 access tokens and argon2id password hashes.

mod jwt;
mod password;

pub use jwt::{JwtSecret, JwtSecretError, JwtTokenService};
pub use password::Argon2Hasher;
