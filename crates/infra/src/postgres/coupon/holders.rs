//! A holder's coupons on Postgres: issuing a code, the holder's list, using
//! and giving back. The issue window and the expiry are judged here by
//! Postgres' clock, in the statement that decides.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use domain::coupon::{
    Campaign, CampaignId, CampaignName, Coupon, CouponStatus, DiscountKind, DiscountRule,
    IssueError, RedeemError,
};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;
use domain::paging::{Page, PageRequest};

use super::super::error::is_unique_violation;
use super::super::paging::page_of;
use super::super::prepared::prepared;
use super::super::{Postgres, unavailable};

/// A coupon row joined with its campaign.
#[derive(QueryableByName)]
pub(super) struct CouponRow {
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Int8)]
    campaign_id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    discount_type: String,
    #[diesel(sql_type = Int8)]
    discount_value: i64,
    #[diesel(sql_type = Nullable<Int8>)]
    max_discount_amount: Option<i64>,
    #[diesel(sql_type = Int8)]
    min_order_amount: i64,
    #[diesel(sql_type = Timestamptz)]
    issued_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(super) used_at: Option<DateTime<Utc>>,
}

/// The columns of a [`CouponRow`], for `SELECT … FROM coupons c JOIN
/// coupon_campaigns k`; a macro so statements stay `&'static str` for
/// [`prepared`].
macro_rules! coupon_columns {
    () => {
        "c.code, c.campaign_id, k.name, k.discount_type, k.discount_value, \
         k.max_discount_amount, k.min_order_amount, c.issued_at, c.expires_at, c.used_at"
    };
}
pub(super) use coupon_columns;

impl CouponRow {
    pub(super) fn into_coupon(self) -> Result<Coupon, Unavailable> {
        let corrupt = || unavailable(format!("coupon {} is invalid", self.code));
        let kind = DiscountKind::parse(&self.discount_type).ok_or_else(corrupt)?;
        Ok(Coupon {
            code: CouponCode::parse(&self.code).map_err(|_| corrupt())?,
            campaign_id: CampaignId::new(self.campaign_id),
            campaign_name: CampaignName::parse(&self.name).map_err(|_| corrupt())?,
            rule: DiscountRule::new(
                kind,
                self.discount_value,
                self.max_discount_amount,
                self.min_order_amount,
            )
            .map_err(|_| corrupt())?,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        })
    }
}

#[derive(QueryableByName)]
struct Issued {
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Timestamptz)]
    issued_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
}

/// Why the issue statement handed out no code.
#[derive(QueryableByName)]
struct NotIssued {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    open: bool,
}

#[derive(QueryableByName)]
pub(super) struct Total {
    #[diesel(sql_type = Int8)]
    n: i64,
}

/// The user's coupon with this code, whatever its state.
async fn owned(
    conn: &mut diesel_async::AsyncPgConnection,
    user: UserId,
    code: &CouponCode,
) -> Result<Option<CouponRow>, Unavailable> {
    prepared(concat!(
        "SELECT ",
        coupon_columns!(),
        " FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
          WHERE c.code = $1 AND c.owner_id = $2"
    ))
    .bind::<Text, _>(code.as_str())
    .bind::<Int8, _>(user.get())
    .get_result(conn)
    .await
    .optional()
    .map_err(unavailable)
}

pub(super) async fn issue(
    db: &Postgres,
    campaign: &Campaign,
    user: UserId,
) -> Result<Coupon, IssueError> {
    db
        .timed(async {
            let mut conn = db.conn().await?;
            // A user who already holds a code locks no free one (so others
            // never see a false sold-out); concurrent issuers skip each
            // other's locked rows; the unique index catches a user racing
            // themselves. The window is judged by Postgres' clock, read
            // once for the row with clock_timestamp(), and that instant
            // is also the coupon's issued_at: now() would be the start of
            // the transaction, not the moment the code is handed out. $1
            // and $2 are used twice, so this stays on sql_query.
            let issued = diesel::sql_query(
                "WITH pick AS ( \
                     SELECT id FROM coupons \
                      WHERE campaign_id = $1 AND owner_id IS NULL \
                        AND NOT EXISTS (SELECT 1 FROM coupons WHERE campaign_id = $1 AND owner_id = $2) \
                      ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE coupons c SET owner_id = $2, issued_at = t.at, \
                        expires_at = t.at + make_interval(days => k.valid_days) \
                   FROM pick, coupon_campaigns k, (SELECT clock_timestamp() AS at) t \
                  WHERE c.id = pick.id AND k.id = $1 \
                    AND (k.issue_starts_at IS NULL OR k.issue_starts_at <= t.at) \
                    AND (k.issue_ends_at IS NULL OR t.at < k.issue_ends_at) \
                 RETURNING c.code, c.issued_at, c.expires_at",
            )
            .bind::<Int8, _>(campaign.id.get())
            .bind::<Int8, _>(user.get())
            .get_result::<Issued>(&mut *conn)
            .await
            .optional()
            .map_err(|e| {
                if is_unique_violation(&e, "coupons_campaign_owner_key") {
                    IssueError::AlreadyIssued
                } else {
                    IssueError::Unavailable(unavailable(e))
                }
            })?;
            let Some(issued) = issued else {
                let why: NotIssued = prepared(
                    "SELECT EXISTS (SELECT 1 FROM coupons WHERE campaign_id = $1 AND owner_id = $2) AS held, \
                            EXISTS (SELECT 1 FROM coupon_campaigns WHERE id = $3 \
                                      AND (issue_starts_at IS NULL OR issue_starts_at <= clock_timestamp()) \
                                      AND (issue_ends_at IS NULL OR clock_timestamp() < issue_ends_at)) AS open",
                )
                .bind::<Int8, _>(campaign.id.get())
                .bind::<Int8, _>(user.get())
                .bind::<Int8, _>(campaign.id.get())
                .get_result(&mut *conn)
                .await
                .map_err(unavailable)?;
                return Err(if why.held {
                    IssueError::AlreadyIssued
                } else if !why.open {
                    IssueError::NotActive
                } else {
                    IssueError::SoldOut
                });
            };
            Ok(Coupon {
                code: CouponCode::parse(&issued.code)
                    .map_err(|_| unavailable(format!("coupon {} is invalid", issued.code)))?,
                campaign_id: campaign.id,
                campaign_name: campaign.name.clone(),
                rule: campaign.rule,
                issued_at: issued.issued_at,
                expires_at: issued.expires_at,
                used_at: None,
            })
        })
        .await
}

pub(super) async fn mine(
    db: &Postgres,
    user: UserId,
    status: Option<CouponStatus>,
    now: DateTime<Utc>,
    page: PageRequest,
) -> Result<Page<Coupon>, Unavailable> {
    // EXPIRED is derived from the clock, so each status is a filter on
    // used_at and expires_at at `now`. The text varies and `$2` is bound
    // even when unused, so these stay on sql_query.
    let filter = match status {
        None => "",
        Some(CouponStatus::Issued) => "AND c.used_at IS NULL AND c.expires_at > $2",
        Some(CouponStatus::Used) => "AND c.used_at IS NOT NULL",
        Some(CouponStatus::Expired) => "AND c.used_at IS NULL AND c.expires_at <= $2",
    };
    db.timed(async {
        let mut conn = db.conn().await?;
        let total: Total = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM coupons c WHERE c.owner_id = $1 AND $2 = $2 {filter}"
        ))
        .bind::<Int8, _>(user.get())
        .bind::<Timestamptz, _>(now)
        .get_result(&mut *conn)
        .await
        .map_err(unavailable)?;
        let rows: Vec<CouponRow> = diesel::sql_query(format!(
            concat!(
                "SELECT ",
                coupon_columns!(),
                " FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
                      WHERE c.owner_id = $1 AND $2 = $2 {filter} \
                      ORDER BY c.expires_at ASC, c.id ASC OFFSET $3 LIMIT $4"
            ),
            filter = filter
        ))
        .bind::<Int8, _>(user.get())
        .bind::<Timestamptz, _>(now)
        .bind::<Int8, _>(page.offset())
        .bind::<Int8, _>(page.limit())
        .load(&mut *conn)
        .await
        .map_err(unavailable)?;
        page_of(rows, CouponRow::into_coupon, page, total.n)
    })
    .await
}

pub(super) async fn redeem(
    db: &Postgres,
    user: UserId,
    code: &CouponCode,
) -> Result<Result<Coupon, RedeemError>, Unavailable> {
    db.timed(async {
        let mut conn = db.conn().await?;
        // The row is locked first (the subquery's FOR UPDATE waits for
        // whoever holds it, an order batch say) and judged after, by
        // clock_timestamp(), the time of the judgement; now() would be
        // the time the statement began, before the wait. In READ
        // COMMITTED a row the holder changed is judged again on its
        // new version, and a row it only locked is judged once the
        // lock is ours: either way a use that reaches the row after
        // the expiry is refused, however early it arrived.
        let used = prepared(
            "UPDATE coupons SET used_at = clock_timestamp() \
                  WHERE id = (SELECT id FROM coupons WHERE code = $1 AND owner_id = $2 FOR UPDATE) \
                    AND used_at IS NULL AND expires_at > clock_timestamp()",
        )
        .bind::<Text, _>(code.as_str())
        .bind::<Int8, _>(user.get())
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        let Some(row) = owned(&mut conn, user, code).await? else {
            return Ok(Err(RedeemError::NotFound));
        };
        if used == 1 {
            return row.into_coupon().map(Ok);
        }
        Ok(Err(if row.used_at.is_some() {
            RedeemError::AlreadyUsed
        } else {
            RedeemError::Expired
        }))
    })
    .await
}

pub(super) async fn cancel_redeem(
    db: &Postgres,
    user: UserId,
    code: &CouponCode,
) -> Result<Result<Coupon, RedeemError>, Unavailable> {
    db
        .timed(async {
            let mut conn = db.conn().await?;
            let given_back = prepared(
                "UPDATE coupons SET used_at = NULL \
                  WHERE code = $1 AND owner_id = $2 AND used_at IS NOT NULL AND used_order_id IS NULL",
            )
            .bind::<Text, _>(code.as_str())
            .bind::<Int8, _>(user.get())
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
            let Some(row) = owned(&mut conn, user, code).await? else {
                return Ok(Err(RedeemError::NotFound));
            };
            if given_back == 1 {
                return row.into_coupon().map(Ok);
            }
            // A coupon an order consumed comes back with that order, not here.
            Ok(Err(if row.used_at.is_some() {
                RedeemError::AlreadyUsed
            } else {
                RedeemError::NotUsed
            }))
        })
        .await
}
