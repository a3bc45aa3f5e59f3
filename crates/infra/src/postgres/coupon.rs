//! The [`CouponStore`] on Postgres: campaigns and their pools of codes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Double, Int8, Text};
use diesel::sql_types::{Nullable, Timestamptz};
use diesel_async::RunQueryDsl;
use domain::coupon::{
    AddCodesError, AddedCodes, Campaign, CampaignId, CampaignName, CampaignView, Coupon,
    CouponStatus, CouponStore, DiscountKind, DiscountRule, IssueError, IssueWindow, NewCampaign,
    RedeemError, ValidDays,
};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;
use domain::paging::{Page, PageRequest};

use super::error::is_unique_violation;
use super::paging::page_of;
use super::prepared::prepared;

use super::schema::coupon_campaigns;
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgCouponStore {
    db: Postgres,
}

impl std::fmt::Debug for PgCouponStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCouponStore")
    }
}

impl PgCouponStore {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

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

/// A coupon row joined with its campaign.
#[derive(QueryableByName)]
struct CouponRow {
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
    used_at: Option<DateTime<Utc>>,
}

/// The columns of a [`CouponRow`], for `SELECT … FROM coupons c JOIN coupon_campaigns k`.
const COUPON_COLUMNS: &str = "c.code, c.campaign_id, k.name, k.discount_type, k.discount_value, \
     k.max_discount_amount, k.min_order_amount, c.issued_at, c.expires_at, c.used_at";

impl CouponRow {
    fn into_coupon(self) -> Result<Coupon, Unavailable> {
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
struct Total {
    #[diesel(sql_type = Int8)]
    n: i64,
}

/// The user's coupon with this code, whatever its state.
async fn owned(
    conn: &mut diesel_async::AsyncPgConnection,
    user: UserId,
    code: &CouponCode,
) -> Result<Option<CouponRow>, Unavailable> {
    diesel::sql_query(format!(
        "SELECT {COUPON_COLUMNS} FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
          WHERE c.code = $1 AND c.owner_id = $2"
    ))
    .bind::<Text, _>(code.as_str())
    .bind::<Int8, _>(user.get())
    .get_result(conn)
    .await
    .optional()
    .map_err(unavailable)
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = Int8)]
    total: i64,
    #[diesel(sql_type = Int8)]
    issued: i64,
}

#[async_trait]
impl CouponStore for PgCouponStore {
    async fn create_campaign(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                diesel::insert_into(coupon_campaigns::table)
                    .values((
                        coupon_campaigns::name.eq(campaign.name.as_str()),
                        coupon_campaigns::discount_type.eq(campaign.rule.kind().as_str()),
                        coupon_campaigns::discount_value.eq(campaign.rule.value()),
                        coupon_campaigns::max_discount_amount
                            .eq(campaign.rule.max().map(|m| m.get())),
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

    async fn campaign_view(&self, id: CampaignId) -> Result<Option<CampaignView>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
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

    async fn add_codes(
        &self,
        campaign: CampaignId,
        codes: Vec<CouponCode>,
    ) -> Result<AddedCodes, AddCodesError> {
        let codes: Vec<&str> = codes.iter().map(CouponCode::as_str).collect();
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
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

    async fn issue(&self, campaign: &Campaign, user: UserId) -> Result<Coupon, IssueError> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                // A user who already holds a code locks no free one (so others
                // never see a false sold-out); concurrent issuers skip each
                // other's locked rows; the unique index catches a user racing
                // themselves. The window is judged by Postgres' clock, read
                // once for the row with clock_timestamp(), and that instant
                // is also the coupon's issued_at: now() would be the start of
                // the transaction, not the moment the code is handed out.
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

    async fn mine(
        &self,
        user: UserId,
        status: Option<CouponStatus>,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<Coupon>, Unavailable> {
        let filter = match status {
            None => "",
            Some(CouponStatus::Issued) => "AND c.used_at IS NULL AND c.expires_at > $2",
            Some(CouponStatus::Used) => "AND c.used_at IS NOT NULL",
            Some(CouponStatus::Expired) => "AND c.used_at IS NULL AND c.expires_at <= $2",
        };
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: Total = diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM coupons c WHERE c.owner_id = $1 AND $2 = $2 {filter}"
                ))
                .bind::<Int8, _>(user.get())
                .bind::<Timestamptz, _>(now)
                .get_result(&mut *conn)
                .await
                .map_err(unavailable)?;
                let rows: Vec<CouponRow> = diesel::sql_query(format!(
                    "SELECT {COUPON_COLUMNS} FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
                      WHERE c.owner_id = $1 AND $2 = $2 {filter} \
                      ORDER BY c.expires_at ASC, c.id ASC OFFSET $3 LIMIT $4"
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

    async fn redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
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

    async fn cancel_redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
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

    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
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
}

/// The [`CouponQuotes`] port of ordering, on the coupon tables: what a
/// coupon would take off an order. The order transaction consumes it (see
/// `ordering.rs`), guarded again, so a quote never has to be trusted.
#[derive(Clone)]
pub struct PgCouponQuotes {
    db: Postgres,
}

impl std::fmt::Debug for PgCouponQuotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCouponQuotes")
    }
}

impl PgCouponQuotes {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[async_trait]
impl domain::ordering::CouponQuotes for PgCouponQuotes {
    async fn quote(
        &self,
        user: UserId,
        code: &CouponCode,
        total: domain::money::Points,
    ) -> Result<Option<domain::money::Points>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let usable: Option<CouponRow> = diesel::sql_query(format!(
                    "SELECT {COUPON_COLUMNS} FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
                      WHERE c.code = $1 AND c.owner_id = $2 AND c.used_at IS NULL AND c.expires_at > now()"
                ))
                .bind::<Text, _>(code.as_str())
                .bind::<Int8, _>(user.get())
                .get_result(&mut *conn)
                .await
                .optional()
                .map_err(unavailable)?;
                Ok(match usable {
                    Some(row) => row.into_coupon()?.rule.discount_for(total),
                    None => None,
                })
            })
            .await
    }
}

/// The [`ExpiryStore`](domain::coupon::ExpiryStore) on the coupon tables;
/// `coupons_expiring_idx` keeps both queries to the coupons that matter.
#[derive(Clone)]
pub struct PgExpiryStore {
    db: Postgres,
}

impl std::fmt::Debug for PgExpiryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgExpiryStore")
    }
}

impl PgExpiryStore {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[derive(QueryableByName)]
struct ExpiringRow {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Int8)]
    campaign_id: i64,
    #[diesel(sql_type = Int8)]
    owner_id: i64,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
}

impl ExpiringRow {
    fn code(&self) -> Result<CouponCode, Unavailable> {
        CouponCode::parse(&self.code)
            .map_err(|_| unavailable(format!("coupon {} is invalid", self.id)))
    }
}

#[async_trait]
impl domain::coupon::ExpiryStore for PgExpiryStore {
    async fn expiring(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, i64)>,
        limit: usize,
    ) -> Result<Vec<domain::coupon::ExpiringCoupon>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let rows: Vec<ExpiringRow> = diesel::sql_query(
                    "SELECT id, code, campaign_id, owner_id, expires_at FROM coupons \
                      WHERE owner_id IS NOT NULL AND used_at IS NULL \
                        AND expires_at >= $1 AND expires_at < $2 \
                        AND ($3::timestamptz IS NULL OR (expires_at, id) > ($3, $4)) \
                      ORDER BY expires_at, id LIMIT $5",
                )
                .bind::<Timestamptz, _>(from)
                .bind::<Timestamptz, _>(until)
                .bind::<Nullable<Timestamptz>, _>(after.map(|(at, _)| at))
                .bind::<Int8, _>(after.map_or(0, |(_, id)| id))
                .bind::<Int8, _>(i64::try_from(limit).unwrap_or(100))
                .load(&mut *conn)
                .await
                .map_err(unavailable)?;
                rows.into_iter()
                    .map(|r| {
                        Ok(domain::coupon::ExpiringCoupon {
                            code: r.code()?,
                            id: r.id,
                            campaign_id: CampaignId::new(r.campaign_id),
                            user_id: UserId::new(r.owner_id),
                            expires_at: r.expires_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn claim_notices(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
        lifetime: std::time::Duration,
    ) -> Result<domain::coupon::ClaimedNotices, Unavailable> {
        let claim = domain::coupon::NoticeClaim::new(rand::random());
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                // One statement, so the claim commits on its own before any
                // notice is written. Concurrent runs skip each other's locked
                // rows, and a row claimed meanwhile fails the claim test when
                // its lock is taken. A lapsed claim is judged by Postgres'
                // clock, the one that stamped it.
                let rows: Vec<ExpiringRow> = prepared(
                    "WITH due AS ( \
                         SELECT id FROM coupons \
                          WHERE owner_id IS NOT NULL AND used_at IS NULL AND notified_at IS NULL \
                            AND expires_at > $1 AND expires_at <= $2 \
                            AND (notice_claimed_at IS NULL \
                                 OR notice_claimed_at <= clock_timestamp() - make_interval(secs => $3)) \
                          ORDER BY expires_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                     UPDATE coupons c SET notice_claimed_at = clock_timestamp(), notice_claim = $5 \
                       FROM due WHERE c.id = due.id \
                     RETURNING c.id, c.code, c.campaign_id, c.owner_id, c.expires_at",
                )
                .bind::<Timestamptz, _>(now)
                .bind::<Timestamptz, _>(until)
                .bind::<Double, _>(lifetime.as_secs_f64())
                .bind::<Int8, _>(i64::try_from(limit).unwrap_or(1_000))
                .bind::<Int8, _>(claim.get())
                .load(&mut *conn)
                .await
                .map_err(unavailable)?;
                let claimed = rows.len();
                // An unreadable row stays claimed and unmarked: the others go
                // out, and it is tried again when its claim lapses.
                let notices = rows
                    .into_iter()
                    .filter_map(|r| match r.code() {
                        Ok(code) => Some(domain::coupon::ExpiryNotice {
                            coupon_id: r.id,
                            user_id: UserId::new(r.owner_id),
                            code,
                            expires_at: r.expires_at,
                        }),
                        Err(err) => {
                            tracing::error!(error = %err, coupon_id = r.id, "skipping an unreadable coupon's notice");
                            None
                        }
                    })
                    .collect();
                Ok(domain::coupon::ClaimedNotices {
                    claim,
                    notices,
                    claimed,
                })
            })
            .await
    }

    async fn mark_notified(
        &self,
        claim: domain::coupon::NoticeClaim,
        coupons: Vec<i64>,
    ) -> Result<usize, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                prepared(
                    "UPDATE coupons SET notified_at = clock_timestamp() \
                      WHERE id = ANY($1) AND notice_claim = $2 AND notified_at IS NULL",
                )
                .bind::<Array<Int8>, _>(&coupons)
                .bind::<Int8, _>(claim.get())
                .execute(&mut *conn)
                .await
                .map_err(unavailable)
            })
            .await
    }
}
