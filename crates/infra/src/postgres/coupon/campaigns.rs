//! Campaigns on Postgres: creating one, reading it with its pool's counts,
//! and adding codes to its pool (generated or imported).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Text};
use diesel_async::RunQueryDsl;
use domain::coupon::{
    AddCodesError, AddedCodes, Campaign, CampaignId, CampaignName, CampaignView, DiscountKind,
    DiscountRule, IssueWindow, NewCampaign, ValidDays,
};
use domain::error::Unavailable;
use domain::ordering::CouponCode;

use super::super::prepared::prepared;
use super::super::schema::coupon_campaigns;
use super::super::{Postgres, unavailable};

#[derive(Queryable, Selectable)]
#[diesel(table_name = coupon_campaigns, check_for_backend(diesel::pg::Pg))]
struct CampaignRow {
    id: i64,
    name: String,
    discount_type: String,
    discount_value: i64,
    max_discount_amount: Option<i64>,
    min_order_amount: i64,
    valid_days: i32,
    issue_starts_at: Option<DateTime<Utc>>,
    issue_ends_at: Option<DateTime<Utc>>,
}

impl CampaignRow {
    fn into_campaign(self) -> Result<Campaign, Unavailable> {
        let corrupt = || unavailable(format!("coupon_campaigns row {} is invalid", self.id));
        let kind = DiscountKind::parse(&self.discount_type).ok_or_else(corrupt)?;
        Ok(Campaign {
            id: CampaignId::new(self.id),
            name: CampaignName::parse(&self.name).map_err(|_| corrupt())?,
            rule: DiscountRule::new(
                kind,
                self.discount_value,
                self.max_discount_amount,
                self.min_order_amount,
            )
            .map_err(|_| corrupt())?,
            valid_days: ValidDays::new(i64::from(self.valid_days)).map_err(|_| corrupt())?,
            window: IssueWindow::new(self.issue_starts_at, self.issue_ends_at)
                .map_err(|_| corrupt())?,
        })
    }
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = Int8)]
    total: i64,
    #[diesel(sql_type = Int8)]
    issued: i64,
}

pub(super) async fn create_campaign(
    db: &Postgres,
    campaign: NewCampaign,
) -> Result<Campaign, Unavailable> {
    db.timed(async {
        let mut conn = db.conn().await?;
        diesel::insert_into(coupon_campaigns::table)
            .values((
                coupon_campaigns::name.eq(campaign.name.as_str()),
                coupon_campaigns::discount_type.eq(campaign.rule.kind().as_str()),
                coupon_campaigns::discount_value.eq(campaign.rule.value()),
                coupon_campaigns::max_discount_amount.eq(campaign.rule.max().map(|m| m.get())),
                coupon_campaigns::min_order_amount.eq(campaign.rule.min_order().get()),
                coupon_campaigns::valid_days.eq(campaign.valid_days.get()),
                coupon_campaigns::issue_starts_at.eq(campaign.window.starts_at),
                coupon_campaigns::issue_ends_at.eq(campaign.window.ends_at),
            ))
            .returning(CampaignRow::as_returning())
            .get_result(&mut *conn)
            .await
            .map_err(unavailable)?
            .into_campaign()
    })
    .await
}

pub(super) async fn campaign_view(
    db: &Postgres,
    id: CampaignId,
) -> Result<Option<CampaignView>, Unavailable> {
    db
        .timed(async {
            let mut conn = db.conn().await?;
            let Some(row) = coupon_campaigns::table
                .find(id.get())
                .select(CampaignRow::as_select())
                .first(&mut *conn)
                .await
                .optional()
                .map_err(unavailable)?
            else {
                return Ok(None);
            };
            let counts: Counts = prepared(
                "SELECT count(*) AS total, count(owner_id) AS issued FROM coupons WHERE campaign_id = $1",
            )
            .bind::<Int8, _>(id.get())
            .get_result(&mut *conn)
            .await
            .map_err(unavailable)?;
            Ok(Some(CampaignView {
                campaign: row.into_campaign()?,
                total_codes: counts.total,
                issued_count: counts.issued,
            }))
        })
        .await
}

pub(super) async fn add_codes(
    db: &Postgres,
    campaign: CampaignId,
    codes: Vec<CouponCode>,
) -> Result<AddedCodes, AddCodesError> {
    let codes: Vec<&str> = codes.iter().map(CouponCode::as_str).collect();
    db.timed(async {
        let mut conn = db.conn().await?;
        // One statement per batch; a code that exists anywhere (or twice
        // in the batch) is skipped by the unique index, not an error.
        let inserted = prepared(
            "INSERT INTO coupons (campaign_id, code) SELECT $1, unnest($2::text[]) \
                 ON CONFLICT (code) DO NOTHING",
        )
        .bind::<Int8, _>(campaign.get())
        .bind::<Array<Text>, _>(&codes)
        .execute(&mut *conn)
        .await
        .map_err(|e| match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => AddCodesError::CampaignNotFound(campaign),
            other => AddCodesError::Unavailable(unavailable(other)),
        })?;
        Ok(AddedCodes {
            inserted,
            duplicates: codes.len() - inserted,
        })
    })
    .await
}

pub(super) async fn campaign(
    db: &Postgres,
    id: CampaignId,
) -> Result<Option<Campaign>, Unavailable> {
    db.timed(async {
        let mut conn = db.conn().await?;
        coupon_campaigns::table
            .find(id.get())
            .select(CampaignRow::as_select())
            .first(&mut *conn)
            .await
            .optional()
            .map_err(unavailable)?
            .map(CampaignRow::into_campaign)
            .transpose()
    })
    .await
}
