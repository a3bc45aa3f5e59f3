//! The [`CouponQuotes`](domain::ordering::CouponQuotes) port of ordering on
//! the coupon tables.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{Int8, Text};
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;

use super::super::prepared::prepared;
use super::super::{Postgres, unavailable};
use super::holders::{CouponRow, coupon_columns};

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
                let usable: Option<CouponRow> = prepared(concat!(
                    "SELECT ",
                    coupon_columns!(),
                    " FROM coupons c JOIN coupon_campaigns k ON k.id = c.campaign_id \
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
