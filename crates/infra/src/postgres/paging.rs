//! Turning a page of rows and a total count into a domain [`Page`].

use domain::error::Unavailable;
use domain::paging::{Page, PageRequest};

/// The page of `rows` (converted one by one) out of `total`.
pub(crate) fn page_of<R, T>(
    rows: Vec<R>,
    convert: impl FnMut(R) -> Result<T, Unavailable>,
    request: PageRequest,
    total: i64,
) -> Result<Page<T>, Unavailable> {
    Ok(Page {
        items: rows.into_iter().map(convert).collect::<Result<_, _>>()?,
        request,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}
