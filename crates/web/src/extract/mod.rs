//! Request extractors that answer problems, not actix's plain-text errors.

mod auth;
mod client;
mod idempotency;
mod json;
mod page;

pub use auth::{AdminUser, AuthContext, AuthUser, GATEWAY_SECRET_HEADER, Gateway, GatewaySecret};
pub use client::{ClientAddr, ProxyHops};
pub use idempotency::{
    IdempotencyKeyHeader, IdempotentJson, fingerprint_of, render, respond, write_failed,
};
pub use json::{Json, JsonLimit};
pub use page::{PageParams, PageQuery};
