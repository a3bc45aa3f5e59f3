//! `?page=&size=` for page-based lists, validated into a [`PageRequest`].

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use domain::paging::PageRequest;
use futures_util::future::{Ready, ready};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::problem::ApiError;

/// The query parameters of a page-based list, as read (and documented).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The 0-based page number.
    #[param(minimum = 0, maximum = 1_000_000, default = 0)]
    page: Option<u32>,
    /// Items per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    size: Option<u32>,
}

/// A validated page request taken from the query string.
#[derive(Debug, Clone, Copy)]
pub struct PageParams(pub PageRequest);

impl FromRequest for PageParams {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse(req.query_string()))
    }
}

fn parse(query: &str) -> Result<PageParams, ApiError> {
    let raw = actix_web::web::Query::<PageQuery>::from_query(query)
        .map_err(|_| ApiError::validation("page and size must be non-negative integers"))?;
    Ok(PageParams(PageRequest::new(raw.page, raw.size)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_and_values_and_refuses_nonsense() {
        assert_eq!(parse("").expect("defaults").0.size(), 20);
        let p = parse("page=2&size=5").expect("valid").0;
        assert_eq!((p.page(), p.size()), (2, 5));
        assert_eq!(
            parse("size=0").expect_err("too small").code(),
            "VALIDATION_FAILED"
        );
        assert_eq!(
            parse("page=-1").expect_err("negative").code(),
            "VALIDATION_FAILED"
        );
        assert_eq!(
            parse("size=abc").expect_err("not a number").code(),
            "VALIDATION_FAILED"
        );
    }
}
