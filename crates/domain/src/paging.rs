//! Page-based list parameters shared by every list endpoint (API.md: 0-based
//! `page`, `size` 1..=100, default 20).

use thiserror::Error;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    page: u32,
    size: u32,
}

/// Why a page request was refused; names the offending parameter.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PageRequestError {
    #[error("size must be between 1 and {max}")]
    Size { max: u32 },
    #[error("page is too large")]
    Page,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u32 = 20;
    pub const MAX_SIZE: u32 = 100;
    /// Keeps `page * size` well inside `i64` offsets and away from pathological scans.
    pub const MAX_PAGE: u32 = 1_000_000;

    /// # Errors
    /// [`PageRequestError`] when `size` is outside 1..=100 or `page` is absurdly large.
    pub fn new(page: Option<u32>, size: Option<u32>) -> Result<Self, PageRequestError> {
        let page = page.unwrap_or(0);
        let size = size.unwrap_or(Self::DEFAULT_SIZE);
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(PageRequestError::Size {
                max: Self::MAX_SIZE,
            });
        }
        if page > Self::MAX_PAGE {
            return Err(PageRequestError::Page);
        }
        Ok(Self { page, size })
    }

    pub fn page(self) -> u32 {
        self.page
    }

    pub fn size(self) -> u32 {
        self.size
    }

    /// Rows to skip.
    pub fn offset(self) -> i64 {
        i64::from(self.page) * i64::from(self.size)
    }

    /// Rows to return.
    pub fn limit(self) -> i64 {
        i64::from(self.size)
    }
}

/// One page of a list, with the total for the client's pager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub request: PageRequest,
    pub total_count: u64,
}

impl<T> Page<T> {
    /// Converts the items, keeping the paging information.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            request: self.request,
            total_count: self.total_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_first_page_of_twenty() {
        let p = PageRequest::new(None, None).expect("defaults are valid");
        assert_eq!((p.page(), p.size(), p.offset(), p.limit()), (0, 20, 0, 20));
    }

    #[test]
    fn size_must_be_between_one_and_a_hundred() {
        assert_eq!(
            PageRequest::new(None, Some(0)),
            Err(PageRequestError::Size { max: 100 })
        );
        assert_eq!(
            PageRequest::new(None, Some(101)),
            Err(PageRequestError::Size { max: 100 })
        );
        assert!(PageRequest::new(Some(3), Some(100)).is_ok());
    }

    #[test]
    fn offset_is_page_times_size() {
        let p = PageRequest::new(Some(3), Some(25)).expect("valid");
        assert_eq!(p.offset(), 75);
    }
}
