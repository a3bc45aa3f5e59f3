//! The admin's expiring list and the notice claims on Postgres. A notice
//! is claimed in one statement, written by the caller, then marked under
//! the claim's token; a claim past its lifetime is taken again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Double, Int8, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use domain::coupon::{CampaignId, ExpiringCursor};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;

use super::super::prepared::prepared;
use super::super::{Postgres, unavailable};

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
        after: Option<ExpiringCursor>,
        limit: usize,
    ) -> Result<Vec<domain::coupon::ExpiringCoupon>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let limit = i64::try_from(limit).unwrap_or(100);
                // Two statements, not one with an optional cursor, so each
                // binds its placeholders once and is prepared.
                let rows: Vec<ExpiringRow> = match after {
                    None => {
                        prepared(
                            "SELECT id, code, campaign_id, owner_id, expires_at FROM coupons \
                          WHERE owner_id IS NOT NULL AND used_at IS NULL \
                            AND expires_at >= $1 AND expires_at < $2 \
                          ORDER BY expires_at, id LIMIT $3",
                        )
                        .bind::<Timestamptz, _>(from)
                        .bind::<Timestamptz, _>(until)
                        .bind::<Int8, _>(limit)
                        .load(&mut *conn)
                        .await
                    }
                    Some(cursor) => {
                        prepared(
                            "SELECT id, code, campaign_id, owner_id, expires_at FROM coupons \
                          WHERE owner_id IS NOT NULL AND used_at IS NULL \
                            AND expires_at >= $1 AND expires_at < $2 \
                            AND (expires_at, id) > ($3, $4) \
                          ORDER BY expires_at, id LIMIT $5",
                        )
                        .bind::<Timestamptz, _>(from)
                        .bind::<Timestamptz, _>(until)
                        .bind::<Timestamptz, _>(cursor.expires_at())
                        .bind::<Int8, _>(cursor.id())
                        .bind::<Int8, _>(limit)
                        .load(&mut *conn)
                        .await
                    }
                }
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
