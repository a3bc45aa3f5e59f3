//! HTTP routes, one module per context, plus the operational endpoints.

pub mod catalog;
pub mod coupon;
pub mod health;
pub mod identity;
pub mod invest;
pub mod ordering;
pub mod points;

use domain::paging::Page;
use serde::Serialize;

/// The page envelope of API.md: `{items, page, size, totalCount}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageBody<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub size: u32,
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
