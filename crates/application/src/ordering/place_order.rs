//! Place an order: price it at the current prices, apply the coupon, and
//! hand it to the order store, which takes stock, balance and coupon in one
//! transaction under the idempotency key.
//!
//! In front of that transaction:
//! 1. the stock gate reserves every line, and refuses a sold-out product
//!    without taking stock or points in Postgres. The refusal is stored
//!    under the key in one statement, which answers a replay or a reused key
//!    from the key's record instead, so a sale's refusals read nothing first.
//!    With the gate down, orders go straight to Postgres, which is the final
//!    guard either way;
//! 2. a reservation is given back whenever the order does not commit (a
//!    replay, a reused key or a key in progress included: the store answers
//!    those from the key's record, inside its transaction), and a
//!    product Postgres refused as out of stock is forgotten by the gate so
//!    that its counter is rebuilt from the truth.
//!
//! Refusals found while pricing (an unknown product, a coupon that does not
//! apply) are stored under the key like the store's own refusals.

use std::sync::Arc;

use domain::catalog::CatalogStore;
use domain::error::Unavailable;
use domain::idempotency::{IdempotencyStore, IdempotentOutcome, IdempotentRequest};
use domain::identity::UserId;
use domain::ordering::{
    CouponCode, CouponQuotes, GateDecision, GateHolder, Order, OrderRequest, OrderStore,
    PlaceOrderError, Placement, PricedOrder, StockGate, price_lines, total_of,
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
    gate: Arc<dyn StockGate>,
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
        gate: Arc<dyn StockGate>,
    ) -> Self {
        Self {
            catalog,
            coupons,
            orders,
            idempotency,
            gate,
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
        let lines = cmd.items.lines().to_vec();
        let holder = GateHolder {
            user_id: request.user_id,
            key: &request.key,
        };
        let reserved = match self.gate.reserve(holder, &lines).await {
            Ok(GateDecision::Reserved) => true,
            Ok(GateDecision::SoldOut(product_id)) => {
                // Nothing was taken, so the key's record need not be read
                // first: `refuse` answers a replay or a reused key from it,
                // and otherwise stores this refusal (one statement, no stock
                // or wallet transaction) so the key answers the same way again.
                let response = (request.render)(&Err(PlaceOrderError::OutOfStock { product_id }));
                return self
                    .idempotency
                    .refuse(
                        request.user_id,
                        &request.key,
                        &request.fingerprint,
                        response,
                    )
                    .await;
            }
            // A repeat of a key that came through a moment ago is answered
            // by the store from the key (in progress, or its first answer).
            Ok(GateDecision::Bypass | GateDecision::Repeated) => false,
            Err(err) => {
                tracing::warn!(error = %err, "stock gate unavailable; Postgres decides alone");
                false
            }
        };
        let placed = self.place(&cmd, request).await;
        if reserved {
            self.settle(&cmd, &placed).await;
        }
        placed.map(|p| p.outcome)
    }

    /// Gives the reservation back unless the order committed.
    async fn settle(&self, cmd: &PlaceOrderCommand, placed: &Result<Placement, Unavailable>) {
        let ran = placed.as_ref().ok().and_then(|p| p.ran.as_ref());
        if matches!(ran, Some(Ok(_))) {
            return;
        }
        self.give_back(cmd).await;
        if let Some(Err(PlaceOrderError::OutOfStock { product_id })) = ran {
            // The gate admitted what Postgres refused: rebuild it from Postgres.
            if let Err(err) = self.gate.forget(*product_id).await {
                tracing::warn!(error = %err, "could not reset a stock counter");
            }
        }
    }

    async fn give_back(&self, cmd: &PlaceOrderCommand) {
        if let Err(err) = self.gate.release(cmd.items.lines()).await {
            tracing::warn!(error = %err, "could not give a reservation back to the stock gate");
        }
    }

    async fn place(
        &self,
        cmd: &PlaceOrderCommand,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Placement, Unavailable> {
        match self.price(cmd).await? {
            Ok(priced) => self.orders.place(priced, request).await,
            Err(refusal) => {
                let response = (request.render)(&Err(refusal.clone()));
                let outcome = self
                    .idempotency
                    .refuse(
                        request.user_id,
                        &request.key,
                        &request.fingerprint,
                        response,
                    )
                    .await?;
                Ok(Placement {
                    outcome,
                    ran: Some(Err(refusal)),
                })
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
    use domain::ordering::{MockCouponQuotes, MockOrderStore, MockStockGate, OrderId, Quantity};

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

    /// No stored answers; refusals are stored (and counted by `times`).
    fn idempotency(refusals: usize) -> MockIdempotencyStore {
        let mut idempotency = MockIdempotencyStore::new();
        // The store reads the key's record itself, under the key's lock.
        idempotency.expect_lookup().never();
        idempotency
            .expect_refuse()
            .times(refusals)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        idempotency
    }

    /// A gate that does not know the products: Postgres decides.
    fn bypassing_gate() -> MockStockGate {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(GateDecision::Bypass));
        gate.expect_release().never();
        gate
    }

    /// A store that places the priced order and renders it.
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
            Ok(Placement {
                outcome: IdempotentOutcome::Executed((req.render)(&Ok(order))),
                ran: Some(Ok(OrderId::new(10))),
            })
        });
        orders
    }

    /// A store that refuses with `refusal`.
    fn refusing_store(refusal: PlaceOrderError) -> MockOrderStore {
        let mut orders = MockOrderStore::new();
        orders.expect_place().returning(move |_, req| {
            Ok(Placement {
                outcome: IdempotentOutcome::Executed((req.render)(&Err(refusal.clone()))),
                ran: Some(Err(refusal.clone())),
            })
        });
        orders
    }

    fn use_case(
        catalog: MockCatalogStore,
        coupons: MockCouponQuotes,
        orders: MockOrderStore,
        idempotency: MockIdempotencyStore,
        gate: MockStockGate,
    ) -> PlaceOrder {
        PlaceOrder::new(
            Arc::new(catalog),
            Arc::new(coupons),
            Arc::new(orders),
            Arc::new(idempotency),
            Arc::new(gate),
        )
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
            .returning(|_, _| {
                Ok(Placement {
                    outcome: IdempotentOutcome::InProgress,
                    ran: None,
                })
            });
        let place = use_case(
            catalog_with(vec![product(1, 1_500), product(2, 700)]),
            MockCouponQuotes::new(),
            orders,
            idempotency(0),
            bypassing_gate(),
        );

        let outcome = place
            .execute(command(&[(2, 3), (1, 2)], None), request())
            .await
            .expect("ran");

        assert_eq!(outcome, IdempotentOutcome::InProgress);
    }

    #[tokio::test]
    async fn an_unknown_product_is_refused_stored_and_never_placed() {
        let mut orders = MockOrderStore::new();
        orders.expect_place().never();
        let place = use_case(
            catalog_with(vec![product(1, 100)]),
            MockCouponQuotes::new(),
            orders,
            idempotency(1),
            bypassing_gate(),
        );

        let outcome = place
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
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            coupons,
            placing_store(),
            idempotency(0),
            bypassing_gate(),
        );

        let outcome = place
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
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            coupons,
            orders,
            idempotency(1),
            bypassing_gate(),
        );

        let outcome = place
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
            let place = use_case(
                catalog_with(vec![product(1, 1_000)]),
                MockCouponQuotes::new(),
                refusing_store(refusal.clone()),
                idempotency(0),
                bypassing_gate(),
            );

            let outcome = place
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
        let place = use_case(
            catalog,
            MockCouponQuotes::new(),
            orders,
            idempotency(0),
            bypassing_gate(),
        );

        let result = place.execute(command(&[(1, 1)], None), request()).await;

        assert!(result.is_err());
    }

    #[tokio::test]
    async fn a_product_sold_out_at_the_gate_is_stored_without_reading_pricing_or_placing() {
        let mut idempotency = MockIdempotencyStore::new();
        idempotency.expect_lookup().never();
        idempotency
            .expect_refuse()
            .times(1)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        let mut catalog = MockCatalogStore::new();
        catalog.expect_get_many().never();
        let mut orders = MockOrderStore::new();
        orders.expect_place().never();
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(GateDecision::SoldOut(ProductId::new(2))));
        gate.expect_release().never();
        let place = use_case(catalog, MockCouponQuotes::new(), orders, idempotency, gate);

        let outcome = place
            .execute(command(&[(1, 1), (2, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "product 2 does not have enough stock");
    }

    #[tokio::test]
    async fn a_reservation_is_kept_when_the_order_commits() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .times(1)
            .returning(|_, _| Ok(GateDecision::Reserved));
        gate.expect_release().never();
        gate.expect_forget().never();
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            MockCouponQuotes::new(),
            placing_store(),
            idempotency(0),
            gate,
        );

        let outcome = place
            .execute(command(&[(1, 2)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "paid:2000");
    }

    #[tokio::test]
    async fn a_reservation_is_given_back_and_the_counter_forgotten_when_postgres_refuses() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(GateDecision::Reserved));
        gate.expect_release()
            .withf(|lines| {
                lines.len() == 1 && lines[0].0 == ProductId::new(1) && lines[0].1.get() == 2
            })
            .times(1)
            .returning(|_| Ok(()));
        gate.expect_forget()
            .withf(|product| *product == ProductId::new(1))
            .times(1)
            .returning(|_| Ok(()));
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            MockCouponQuotes::new(),
            refusing_store(PlaceOrderError::OutOfStock {
                product_id: ProductId::new(1),
            }),
            idempotency(0),
            gate,
        );

        place
            .execute(command(&[(1, 2)], None), request())
            .await
            .expect("ran");
    }

    #[tokio::test]
    async fn a_reservation_is_given_back_when_the_balance_is_short_or_postgres_fails() {
        for store in [refusing_store(PlaceOrderError::InsufficientBalance), {
            let mut failing = MockOrderStore::new();
            failing
                .expect_place()
                .returning(|_, _| Err(Unavailable::new("postgres", "down")));
            failing
        }] {
            let mut gate = MockStockGate::new();
            gate.expect_reserve()
                .returning(|_, _| Ok(GateDecision::Reserved));
            gate.expect_release().times(1).returning(|_| Ok(()));
            gate.expect_forget().never();
            let place = use_case(
                catalog_with(vec![product(1, 1_000)]),
                MockCouponQuotes::new(),
                store,
                idempotency(0),
                gate,
            );

            let _ = place.execute(command(&[(1, 1)], None), request()).await;
        }
    }

    #[tokio::test]
    async fn a_replay_is_answered_by_the_store_and_gives_its_reservation_back() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .times(1)
            .returning(|_, _| Ok(GateDecision::Reserved));
        gate.expect_release().times(1).returning(|_| Ok(()));
        gate.expect_forget().never();
        let mut orders = MockOrderStore::new();
        orders.expect_place().returning(|_, _| {
            Ok(Placement {
                outcome: IdempotentOutcome::Replayed(StoredResponse {
                    status: 201,
                    content_type: "text/plain".into(),
                    body: b"paid:1000".to_vec(),
                }),
                ran: None,
            })
        });
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            MockCouponQuotes::new(),
            orders,
            idempotency(0),
            gate,
        );

        let outcome = place
            .execute(command(&[(1, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "paid:1000");
        assert!(matches!(outcome, IdempotentOutcome::Replayed(_)));
    }

    #[tokio::test]
    async fn a_repeated_key_is_never_refused_by_the_gate_and_goes_to_the_store_unreserved() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .withf(|holder, _| holder.key.as_str() == "o-1" && holder.user_id == UserId::new(1))
            .times(1)
            .returning(|_, _| Ok(GateDecision::Repeated));
        gate.expect_release().never();
        gate.expect_forget().never();
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            MockCouponQuotes::new(),
            placing_store(),
            idempotency(0),
            gate,
        );

        let outcome = place
            .execute(command(&[(1, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "paid:1000", "the store decides");
    }

    #[tokio::test]
    async fn with_the_gate_down_postgres_decides_alone() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .returning(|_, _| Err(Unavailable::new("redis", "connection refused")));
        gate.expect_release().never();
        let place = use_case(
            catalog_with(vec![product(1, 1_000)]),
            MockCouponQuotes::new(),
            placing_store(),
            idempotency(0),
            gate,
        );

        let outcome = place
            .execute(command(&[(1, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "paid:1000");
    }
}
