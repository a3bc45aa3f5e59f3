//! Place an order: price it at the current prices, apply the coupon, and
//! hand it to the order store, which takes stock, balance and coupon in one
//! transaction under the idempotency key.
//!
//! Refusals found here (an unknown product, a coupon that does not apply)
//! are stored under the key like the store's own refusals (out of stock,
//! insufficient balance), so every answer to a key is replayed.

use std::sync::Arc;

use domain::catalog::CatalogStore;
use domain::error::Unavailable;
use domain::idempotency::{IdempotencyStore, IdempotentOutcome, IdempotentRequest};
use domain::identity::UserId;
use domain::ordering::{
    CouponCode, CouponQuotes, Order, OrderRequest, OrderStore, PlaceOrderError, PricedOrder,
    price_lines, total_of,
};

/// A validated order request.
#[derive(Debug, Clone)]
pub struct PlaceOrderCommand {
    pub user_id: UserId,
    pub items: OrderRequest,
    pub coupon: Option<CouponCode>,
}

pub struct PlaceOrder {
    catalog: Arc<dyn CatalogStore>,
    coupons: Arc<dyn CouponQuotes>,
    orders: Arc<dyn OrderStore>,
    idempotency: Arc<dyn IdempotencyStore>,
}

impl std::fmt::Debug for PlaceOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaceOrder")
    }
}

impl PlaceOrder {
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        coupons: Arc<dyn CouponQuotes>,
        orders: Arc<dyn OrderStore>,
        idempotency: Arc<dyn IdempotencyStore>,
    ) -> Self {
        Self {
            catalog,
            coupons,
            orders,
            idempotency,
        }
    }

    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored, so a retry runs again.
    #[tracing::instrument(name = "place_order", skip_all, fields(user_id = %cmd.user_id))]
    pub async fn execute(
        &self,
        cmd: PlaceOrderCommand,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<IdempotentOutcome, Unavailable> {
        match self.price(&cmd).await? {
            Ok(priced) => self.orders.place(priced, request).await,
            Err(refusal) => {
                let response = (request.render)(&Err(refusal));
                self.idempotency
                    .refuse(
                        request.user_id,
                        &request.key,
                        &request.fingerprint,
                        response,
                    )
                    .await
            }
        }
    }

    async fn price(
        &self,
        cmd: &PlaceOrderCommand,
    ) -> Result<Result<PricedOrder, PlaceOrderError>, Unavailable> {
        let products = self.catalog.get_many(&cmd.items.product_ids()).await?;
        let lines = match price_lines(&cmd.items, &products) {
            Ok(lines) => lines,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let total = match total_of(&lines) {
            Ok(total) => total,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let discount = match &cmd.coupon {
            None => domain::money::Points::ZERO,
            Some(code) => match self.coupons.quote(cmd.user_id, code, total).await? {
                Some(discount) => discount.min(total),
                None => return Ok(Err(PlaceOrderError::CouponNotApplicable)),
            },
        };
        let paid = total
            .checked_sub(discount)
            .unwrap_or(domain::money::Points::ZERO);
        Ok(Ok(PricedOrder {
            user_id: cmd.user_id,
            lines,
            total,
            discount,
            paid,
            coupon: cmd.coupon.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::catalog::{MockCatalogStore, Product, ProductId, ProductName, Stock};
    use domain::idempotency::{Fingerprint, IdempotencyKey, MockIdempotencyStore, StoredResponse};
    use domain::money::Points;
    use domain::ordering::{MockCouponQuotes, MockOrderStore, OrderId, Quantity};

    use super::*;

    fn product(id: i64, price: i64) -> Product {
        Product {
            id: ProductId::new(id),
            name: ProductName::parse(&format!("p{id}")).expect("valid"),
            price: Points::new(price).expect("valid"),
            stock: Stock::new(5).expect("valid"),
        }
    }

    fn command(lines: &[(i64, i64)], coupon: Option<&str>) -> PlaceOrderCommand {
        PlaceOrderCommand {
            user_id: UserId::new(1),
            items: OrderRequest::new(
                lines
                    .iter()
                    .map(|(id, q)| (ProductId::new(*id), Quantity::new(*q).expect("valid")))
                    .collect(),
            )
            .expect("valid"),
            coupon: coupon.map(|c| CouponCode::parse(c).expect("valid")),
        }
    }

    /// Renders "paid:<amount>" or the refusal's text.
    fn request() -> IdempotentRequest<Order, PlaceOrderError> {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("o-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| StoredResponse {
                status: if result.is_ok() { 201 } else { 409 },
                content_type: "text/plain".into(),
                body: match result {
                    Ok(order) => format!("paid:{}", order.paid).into_bytes(),
                    Err(e) => e.to_string().into_bytes(),
                },
            }),
        }
    }

    fn catalog_with(products: Vec<Product>) -> MockCatalogStore {
        let mut catalog = MockCatalogStore::new();
        catalog.expect_get_many().returning(move |ids| {
            Ok(products
                .iter()
                .filter(|p| ids.contains(&p.id))
                .cloned()
                .collect())
        });
        catalog
    }

    /// An order store that "places" the priced order and renders it.
    fn placing_store() -> MockOrderStore {
        let mut orders = MockOrderStore::new();
        orders.expect_place().returning(|priced, req| {
            let order = Order {
                id: OrderId::new(10),
                user_id: priced.user_id,
                lines: priced.lines,
                total: priced.total,
                discount: priced.discount,
                paid: priced.paid,
                coupon: priced.coupon,
                created_at: Utc::now(),
            };
            Ok(IdempotentOutcome::Executed((req.render)(&Ok(order))))
        });
        orders
    }

    fn body(outcome: &IdempotentOutcome) -> String {
        match outcome {
            IdempotentOutcome::Executed(r) | IdempotentOutcome::Replayed(r) => {
                String::from_utf8_lossy(&r.body).into_owned()
            }
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn prices_every_line_and_pays_the_total() {
        let mut orders = MockOrderStore::new();
        orders
            .expect_place()
            .withf(|priced, _| {
                priced.total.get() == 2 * 1_500 + 3 * 700
                    && priced.paid == priced.total
                    && priced.discount == Points::ZERO
                    && priced
                        .lines
                        .iter()
                        .map(|l| l.product_id.get())
                        .collect::<Vec<_>>()
                        == [1, 2]
            })
            .times(1)
            .returning(|_, _| Ok(IdempotentOutcome::InProgress));
        let use_case = PlaceOrder::new(
            Arc::new(catalog_with(vec![product(1, 1_500), product(2, 700)])),
            Arc::new(MockCouponQuotes::new()),
            Arc::new(orders),
            Arc::new(MockIdempotencyStore::new()),
        );

        let outcome = use_case
            .execute(command(&[(2, 3), (1, 2)], None), request())
            .await
            .expect("ran");

        assert_eq!(outcome, IdempotentOutcome::InProgress);
    }

    #[tokio::test]
    async fn an_unknown_product_is_refused_stored_and_never_placed() {
        let mut orders = MockOrderStore::new();
        orders.expect_place().never();
        let mut idempotency = MockIdempotencyStore::new();
        idempotency
            .expect_refuse()
            .withf(|_, key, _, response| {
                key.as_str() == "o-1" && response.body == b"product 7 does not exist"
            })
            .times(1)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        let use_case = PlaceOrder::new(
            Arc::new(catalog_with(vec![product(1, 100)])),
            Arc::new(MockCouponQuotes::new()),
            Arc::new(orders),
            Arc::new(idempotency),
        );

        let outcome = use_case
            .execute(command(&[(1, 1), (7, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "product 7 does not exist");
    }

    #[tokio::test]
    async fn a_coupon_discount_is_capped_at_the_total() {
        let mut coupons = MockCouponQuotes::new();
        coupons
            .expect_quote()
            .withf(|_, code, total| code.as_str() == "SAVE-ALL" && total.get() == 1_000)
            .returning(|_, _, _| Ok(Some(Points::new(5_000).expect("valid"))));
        let use_case = PlaceOrder::new(
            Arc::new(catalog_with(vec![product(1, 1_000)])),
            Arc::new(coupons),
            Arc::new(placing_store()),
            Arc::new(MockIdempotencyStore::new()),
        );

        let outcome = use_case
            .execute(command(&[(1, 1)], Some("SAVE-ALL")), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "paid:0");
    }

    #[tokio::test]
    async fn a_coupon_that_does_not_apply_refuses_the_whole_order() {
        let mut coupons = MockCouponQuotes::new();
        coupons.expect_quote().returning(|_, _, _| Ok(None));
        let mut orders = MockOrderStore::new();
        orders.expect_place().never();
        let mut idempotency = MockIdempotencyStore::new();
        idempotency
            .expect_refuse()
            .times(1)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        let use_case = PlaceOrder::new(
            Arc::new(catalog_with(vec![product(1, 1_000)])),
            Arc::new(coupons),
            Arc::new(orders),
            Arc::new(idempotency),
        );

        let outcome = use_case
            .execute(command(&[(1, 1)], Some("NOPE-1234")), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "the coupon cannot be applied to this order");
    }

    #[tokio::test]
    async fn the_stores_refusals_out_of_stock_and_insufficient_balance_are_passed_on() {
        for refusal in [
            PlaceOrderError::OutOfStock {
                product_id: ProductId::new(1),
            },
            PlaceOrderError::InsufficientBalance,
        ] {
            let mut orders = MockOrderStore::new();
            let expected = refusal.clone();
            orders.expect_place().returning(move |_, req| {
                Ok(IdempotentOutcome::Executed((req.render)(&Err(
                    expected.clone()
                ))))
            });
            let use_case = PlaceOrder::new(
                Arc::new(catalog_with(vec![product(1, 1_000)])),
                Arc::new(MockCouponQuotes::new()),
                Arc::new(orders),
                Arc::new(MockIdempotencyStore::new()),
            );

            let outcome = use_case
                .execute(command(&[(1, 1)], None), request())
                .await
                .expect("ran");

            assert_eq!(body(&outcome), refusal.to_string());
        }
    }

    #[tokio::test]
    async fn a_failing_catalog_is_unavailable_and_nothing_is_placed() {
        let mut catalog = MockCatalogStore::new();
        catalog
            .expect_get_many()
            .returning(|_| Err(Unavailable::new("postgres", "down")));
        let mut orders = MockOrderStore::new();
        orders.expect_place().never();
        let use_case = PlaceOrder::new(
            Arc::new(catalog),
            Arc::new(MockCouponQuotes::new()),
            Arc::new(orders),
            Arc::new(MockIdempotencyStore::new()),
        );

        let result = use_case.execute(command(&[(1, 1)], None), request()).await;

        assert!(result.is_err());
    }
}
