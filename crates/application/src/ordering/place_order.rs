//! Place an order: price it at the current prices, apply the coupon, and
//! hand it to the order store, which takes stock, balance and coupon in one
//! transaction under the idempotency key.
//!
//! It runs through the keyed-write [`Pipeline`]: the stock gate reserves
//! every line first (a sold-out product is refused without reading prices
//! or touching Postgres' stock and wallets), then the order is priced (an
//! unknown product or a coupon that does not apply is refused and stored),
//! then the store places it. A product Postgres refused as out of stock is
//! forgotten by the gate, so that its counter is rebuilt from the truth.

use std::sync::Arc;

use async_trait::async_trait;
use domain::catalog::{CatalogStore, ProductId};
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};
use domain::idempotency::{FastRefusals, IdempotencyStore, IdempotentRequest, Written};
use domain::identity::UserId;
use domain::money::Points;
use domain::ordering::{
    CouponCode, CouponQuotes, Order, OrderRequest, OrderStore, PlaceOrderError, PricedOrder,
    StockGate, price_lines, total_of,
};

use crate::pipeline::{GatedWrite, KeyedWrite, Pipeline};

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
    gate: Arc<dyn StockGate>,
    pipeline: Pipeline,
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
        fast_refusals: Arc<dyn FastRefusals>,
        gate: Arc<dyn StockGate>,
    ) -> Self {
        Self {
            catalog,
            coupons,
            orders,
            gate,
            pipeline: Pipeline::new(idempotency, Some(fast_refusals)),
        }
    }

    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored, so a retry runs again.
    #[tracing::instrument(name = "place_order", skip_all, fields(user_id = %cmd.user_id))]
    pub async fn execute(
        &self,
        cmd: PlaceOrderCommand,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Written<Order, PlaceOrderError>, Unavailable> {
        let lines = cmd.items.lines().to_vec();
        let placing = Placing {
            use_case: self,
            cmd: &cmd,
            lines: &lines,
        };
        self.pipeline.keyed(&placing, request).await
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
            None => Points::ZERO,
            Some(code) => match self.coupons.quote(cmd.user_id, code, total).await? {
                Some(discount) => discount.min(total),
                None => return Ok(Err(PlaceOrderError::CouponNotApplicable)),
            },
        };
        let paid = total.checked_sub(discount).unwrap_or(Points::ZERO);
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

/// One order in the pipeline.
struct Placing<'a> {
    use_case: &'a PlaceOrder,
    cmd: &'a PlaceOrderCommand,
    lines: &'a [(ProductId, domain::ordering::Quantity)],
}

#[async_trait]
impl GatedWrite for Placing<'_> {
    type Value = Order;
    type Refusal = PlaceOrderError;
    type Ready = PricedOrder;

    /// The stock gate counts the order's lines, in order.
    fn gate_refusals(&self) -> Vec<PlaceOrderError> {
        self.lines
            .iter()
            .map(|(product_id, _)| PlaceOrderError::OutOfStock {
                product_id: *product_id,
            })
            .collect()
    }

    async fn reserve(&self, holder: Holder<'_>) -> Result<Admission<PlaceOrderError>, Unavailable> {
        let admission = self.use_case.gate.reserve(holder, self.lines).await?;
        Ok(admission.map_refusal(|product_id| PlaceOrderError::OutOfStock { product_id }))
    }

    async fn release(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        self.use_case.gate.release(holder, self.lines).await
    }

    async fn confirm(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        self.use_case.gate.confirm(holder, self.lines).await
    }

    async fn forget(&self, refusal: &PlaceOrderError) -> Result<(), Unavailable> {
        match refusal {
            PlaceOrderError::OutOfStock { product_id } => {
                self.use_case.gate.forget(*product_id).await
            }
            _ => Ok(()),
        }
    }

    async fn prepare(&self) -> Result<Result<PricedOrder, PlaceOrderError>, Unavailable> {
        self.use_case.price(self.cmd).await
    }
}

#[async_trait]
impl KeyedWrite for Placing<'_> {
    async fn run(
        &self,
        priced: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Written<Order, PlaceOrderError>, Unavailable> {
        self.use_case.orders.place(priced, request).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::catalog::{MockCatalogStore, Product, ProductId, ProductName, Stock};
    use domain::idempotency::{
        Fingerprint, IdempotencyKey, IdempotentOutcome, MockIdempotencyStore, StoredResponse,
    };
    use domain::money::Points;
    use domain::ordering::{MockCouponQuotes, MockOrderStore, MockStockGate, OrderId, Quantity};

    type Placed = Written<Order, PlaceOrderError>;

    use super::*;

    fn product(id: i64, price: i64) -> Product {
        Product {
            id: ProductId::new(id),
            name: ProductName::parse(&format!("p{id}")).expect("valid"),
            price: Points::new(price).expect("valid"),
            stock: Stock::new(5).expect("valid"),
            version: Default::default(),
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
            .returning(|_, _| Ok(Admission::Bypass));
        gate.expect_release().returning(|_, _| Ok(()));
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
            let result = Ok(order);
            let response = req.render(&result);
            Ok(Written::Executed { result, response })
        });
        orders
    }

    /// A store that refuses with `refusal`.
    fn refusing_store(refusal: PlaceOrderError) -> MockOrderStore {
        let mut orders = MockOrderStore::new();
        orders.expect_place().returning(move |_, req| {
            let result = Err(refusal.clone());
            let response = req.render(&result);
            Ok(Written::Executed { result, response })
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
            crate::pipeline::fast_path_down(),
            Arc::new(gate),
        )
    }

    fn body(written: &Placed) -> String {
        match written.response() {
            Some(r) => String::from_utf8_lossy(&r.body).into_owned(),
            None => format!("{written:?}"),
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
            .returning(|_, _| Ok(Written::InProgress));
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

        assert_eq!(outcome, Written::InProgress);
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
            .returning(|_, _| Ok(Admission::Refused(ProductId::new(2))));
        gate.expect_release().never();
        let place = use_case(catalog, MockCouponQuotes::new(), orders, idempotency, gate);

        let outcome = place
            .execute(command(&[(1, 1), (2, 1)], None), request())
            .await
            .expect("ran");

        assert_eq!(body(&outcome), "product 2 does not have enough stock");
    }

    #[tokio::test]
    async fn a_reservation_is_kept_and_its_lease_confirmed_when_the_order_commits() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .times(1)
            .returning(|_, _| Ok(Admission::Reserved));
        gate.expect_confirm()
            .withf(|holder, lines| {
                holder.key.map(IdempotencyKey::as_str) == Some("o-1")
                    && lines.len() == 1
                    && lines[0].1.get() == 2
            })
            .times(1)
            .returning(|_, _| Ok(()));
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
            .returning(|_, _| Ok(Admission::Reserved));
        gate.expect_release()
            .withf(|holder, lines| {
                holder.key.map(IdempotencyKey::as_str) == Some("o-1")
                    && lines.len() == 1
                    && lines[0].0 == ProductId::new(1)
                    && lines[0].1.get() == 2
            })
            .times(1)
            .returning(|_, _| Ok(()));
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
                .returning(|_, _| Ok(Admission::Reserved));
            gate.expect_release().times(1).returning(|_, _| Ok(()));
            gate.expect_confirm().never();
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
            .returning(|_, _| Ok(Admission::Reserved));
        gate.expect_release().times(1).returning(|_, _| Ok(()));
        gate.expect_forget().never();
        let mut orders = MockOrderStore::new();
        orders.expect_place().returning(|_, _| {
            Ok(Written::Replayed(StoredResponse {
                status: 201,
                content_type: "text/plain".into(),
                body: b"paid:1000".to_vec(),
            }))
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
        assert!(matches!(outcome, Written::Replayed(_)));
    }

    #[tokio::test]
    async fn a_repeated_key_is_never_refused_by_the_gate_and_goes_to_the_store_unreserved() {
        let mut gate = MockStockGate::new();
        gate.expect_reserve()
            .withf(|holder, _| {
                holder.key.map(IdempotencyKey::as_str) == Some("o-1")
                    && holder.user_id == UserId::new(1)
            })
            .times(1)
            .returning(|_, _| Ok(Admission::Repeated));
        gate.expect_release().never();
        gate.expect_forget().never();
        let mut orders = MockOrderStore::new();
        orders
            .expect_place()
            .times(1)
            .returning(|_, _| Ok(Written::InProgress));
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

        assert_eq!(
            outcome,
            Written::InProgress,
            "the store answers from the key"
        );
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
