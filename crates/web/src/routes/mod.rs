//! HTTP routes, one module per context, plus the operational endpoints.

pub mod catalog;
pub mod coupon;
pub mod health;
pub mod identity;
pub mod invest;
pub mod legacy_invest;
pub mod ordering;
pub mod points;

use domain::paging::Page;
use serde::Serialize;
use utoipa::ToSchema;

/// The page envelope of API.md: `{items, page, size, totalCount}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// The 0-based page number asked for.
    pub page: u32,
    /// The page size asked for.
    pub size: u32,
    /// How many items all pages hold together.
    pub total_count: u64,
}

impl<T> PageBody<T> {
    pub fn from_page<D>(page: Page<D>, f: impl FnMut(D) -> T) -> Self {
        Self {
            page: page.request.page(),
            size: page.request.size(),
            total_count: page.total_count,
            items: page.items.into_iter().map(f).collect(),
        }
    }
}
