//! Importing codes into a campaign's pool from a CSV upload, streamed.

use actix_web::{HttpResponse, web};
use domain::coupon::CampaignId;
use serde::Serialize;
use utoipa::ToSchema;

use super::CouponApi;
use crate::extract::AdminUser;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};

/// A CSV row that was not imported.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RejectedLine)]
struct RejectedBody {
    /// The line the row starts on, counting the file's first line as 1.
    line: u64,
    reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ImportReport)]
#[serde(rename_all = "camelCase")]
struct ImportBody {
    /// Codes added to the pool.
    imported: usize,
    /// Codes already in the pool (or repeated in the file).
    duplicates: usize,
    /// The first rejected lines (a bounded list).
    rejected: Vec<RejectedBody>,
    /// How many lines were rejected in all.
    rejected_count: u64,
}

/// The body of an import, for the OpenAPI document (the handler streams it).
#[derive(Debug)]
struct CsvUpload;

impl utoipa::PartialSchema for CsvUpload {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        crate::schema::csv_upload()
    }
}

impl utoipa::ToSchema for CsvUpload {}

/// The largest CSV upload accepted: it is streamed, so this bounds time, not memory.
pub const IMPORT_LIMIT: usize = 200 * 1024 * 1024;

/// Import codes from CSV (admin)
///
/// CSV as a spreadsheet exports it (RFC 4180: quoted fields, CRLF or LF, an
/// optional UTF-8 byte-order mark): the header row names the columns, the
/// one named `code` (any case) holds the codes (4 to 64 of `[A-Z0-9-]` in
/// any case, stored upper-cased), other columns are ignored. Streamed: files
/// of 100,000+ lines import in a few seconds with bounded memory. Rows
/// without a valid code are reported, not fatal.
#[utoipa::path(
    post,
    path = "/api/v1/admin/coupon-campaigns/{id}/codes/import",
    operation_id = "importCouponCodes",
    tag = "coupons",
    params(("id" = i64, Path, description = "The campaign id")),
    request_body(content = inline(CsvUpload), content_type = "text/csv", description = "A header row with a `code` column, then one row per code", example = "code,note\r\nWINTER-0001,\"first, of two\"\r\nwinter-0002,\r\n"),
    responses(
        (status = 200, description = "What was imported", body = ImportBody),
        (status = 400, description = "`VALIDATION_FAILED`: the header row has no `code` column, or the upload cannot be read", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`CAMPAIGN_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: over 200 MiB", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn import(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt as _;
    let too_large = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = std::rc::Rc::clone(&too_large);
    let mut total = 0usize;
    let chunks = payload.map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        total += chunk.len();
        if total > IMPORT_LIMIT {
            flag.set(true);
            return Err("the upload is too large".to_owned());
        }
        Ok(chunk.to_vec())
    });
    match api
        .import_codes
        .execute(CampaignId::new(id.into_inner()), chunks)
        .await
    {
        Ok(report) => Ok(HttpResponse::Ok().json(ImportBody {
            imported: report.imported,
            duplicates: report.duplicates,
            rejected: report
                .rejected
                .iter()
                .map(|r| RejectedBody {
                    line: r.line,
                    reason: r.reason,
                })
                .collect(),
            rejected_count: report.rejected_count,
        })),
        Err(_) if too_large.get() => Err(ApiError::payload_too_large(IMPORT_LIMIT)),
        Err(err) => Err(err.into()),
    }
}
