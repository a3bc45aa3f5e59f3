//! Invest use cases: admins open products, everyone reads the open ones,
//! users invest (idempotent) and read their own investments. One file per
//! use case, named after its type.

mod create_invest_product;
mod invest_queries;
mod make_investment;

pub use create_invest_product::CreateInvestProduct;
pub use invest_queries::InvestQueries;
pub use make_investment::{InvestCommand, MakeInvestment};
