//! Points use cases: read a balance and its history, charge it. One file per
//! use case, named after its type.

mod charge_points;
mod points_queries;

pub use charge_points::ChargePoints;
pub use points_queries::PointsQueries;
