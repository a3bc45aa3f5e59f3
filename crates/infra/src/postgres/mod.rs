//! Postgres, the source of truth: the connection pool, database creation,
//! embedded migrations, and one repository module per context.

mod batch_keys;
mod catalog;
mod coupon;
mod db;
mod error;
mod health;
mod idempotency;
mod identity;
mod invest;
mod lanes;
mod ordering;
mod outbox;
mod paging;
pub mod plan_audit;
mod points;
mod pool;
mod popular;
mod prepared;
mod schema;
mod unnest;

pub(crate) use batch_keys::AnswerRow;
pub(crate) use idempotency::RefusalsWritten;
pub(crate) use prepared::prepared;
/// The investment products table, for the invest gate's rebuild.
pub(crate) use schema::invest_products as schema_invest_products;
/// The products table, for adapters outside this module (the stock gate's rebuild).
pub(crate) use schema::products as schema_products;

pub use catalog::PgCatalogStore;
pub use coupon::{PgCouponQuotes, PgCouponStore, PgExpiryStore};
pub use db::{PgConn, Postgres};
pub use error::unavailable;
pub use health::PostgresProbe;
pub use identity::PgUserRepository;
pub use invest::PgInvestStore;
pub use lanes::LANES;
pub use ordering::PgOrderStore;
pub use outbox::PgOutbox;
pub use points::{PgIdempotencyStore, PgPointsStore};
pub use pool::{
    MIGRATIONS, PgPool, PgPoolSettings, RETIRE_AFTER, connect_batch_pool, connect_pool,
    connect_pool_per_thread, ensure_database, run_migrations,
};
pub use popular::PgSalesRanking;
