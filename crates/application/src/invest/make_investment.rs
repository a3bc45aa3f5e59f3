//! Invest: add an amount to a recruiting product without ever exceeding its
//! target, once per idempotency key.
//!
//! In front of the investment transaction:
//! 1. a key that already has an answer is answered from it (a replay must
//!    not take from the gate);
//! 2. the product is read and the rules are checked at the clock's now
//!    (unknown product, closed window, nothing or too little left); a
//!    refusal is stored under the key without a transaction on the product;
//! 3. the invest gate reserves the amount, or refuses it when the counter
//!    says too little is left. With the gate down or not knowing the
//!    product, Postgres decides alone;
//! 4. the store adds the amount in one guarded update (`current + amount <=
//!    total`, the window), the final guard under any concurrency;
//! 5. a reservation is given back whenever the investment does not commit,
//!    and a product Postgres refused as full is forgotten by the gate so that
//!    its counter is rebuilt from the truth.

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::idempotency::{IdempotencyStore, IdempotentOutcome, IdempotentRequest};
use domain::identity::UserId;
use domain::invest::{
    InvestAdmission, InvestAmount, InvestError, InvestGate, InvestOrder, InvestPlacement,
    InvestProductId, InvestStore, Investment, refusal_for,
};

/// A validated investment request.
#[derive(Debug, Clone, Copy)]
pub struct InvestCommand {
    pub user_id: UserId,
    pub product_id: InvestProductId,
    pub amount: InvestAmount,
}

pub struct Invest {
    store: Arc<dyn InvestStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    gate: Arc<dyn InvestGate>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Invest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invest")
    }
}

type Request = IdempotentRequest<Investment, InvestError>;

impl Invest {
    pub fn new(
        store: Arc<dyn InvestStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        gate: Arc<dyn InvestGate>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            idempotency,
            gate,
            clock,
        }
    }

    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored, so a retry runs again.
    #[tracing::instrument(name = "invest", skip_all, fields(user_id = %cmd.user_id, product_id = %cmd.product_id))]
    pub async fn execute(
        &self,
        cmd: InvestCommand,
        request: Request,
    ) -> Result<IdempotentOutcome, Unavailable> {
        if let Some(answered) = self
            .idempotency
            .lookup(request.user_id, &request.key, &request.fingerprint)
            .await?
        {
            return Ok(answered);
        }
        let Some(product) = self.store.get(cmd.product_id).await? else {
            let refusal = InvestError::ProductNotFound {
                product_id: cmd.product_id,
            };
            return self.refuse(&request, refusal).await;
        };
        let now = self.clock.now();
        if let Err(refusal) = product.admit(cmd.amount, now) {
            return self.refuse(&request, refusal).await;
        }
        let reserved = match self.gate.reserve(cmd.product_id, cmd.amount).await {
            Ok(InvestAdmission::Reserved) => true,
            Ok(InvestAdmission::Refused { remaining }) => {
                if let Some(refusal) = refusal_for(cmd.product_id, cmd.amount, remaining) {
                    return self.refuse(&request, refusal).await;
                }
                // A gate that refuses what its own count admits is confused:
                // nothing was reserved, Postgres decides.
                false
            }
            Ok(InvestAdmission::Bypass) => false,
            Err(err) => {
                tracing::warn!(error = %err, "invest gate unavailable; Postgres decides alone");
                false
            }
        };
        let order = InvestOrder {
            user_id: cmd.user_id,
            product_id: cmd.product_id,
            amount: cmd.amount,
            at: now,
        };
        let placed = self.store.invest(order, request).await;
        if reserved {
            self.settle(&cmd, &placed).await;
        }
        placed.map(|p| p.outcome)
    }

    /// Stores a refusal decided before the transaction (one insert), so the
    /// key answers the same way again.
    async fn refuse(
        &self,
        request: &Request,
        refusal: InvestError,
    ) -> Result<IdempotentOutcome, Unavailable> {
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

    /// Gives the reservation back unless the investment committed.
    async fn settle(&self, cmd: &InvestCommand, placed: &Result<InvestPlacement, Unavailable>) {
        let ran = placed.as_ref().ok().and_then(|p| p.ran.as_ref());
        if matches!(ran, Some(Ok(_))) {
            return;
        }
        if let Err(err) = self.gate.release(cmd.product_id, cmd.amount).await {
            tracing::warn!(error = %err, "could not give a reservation back to the invest gate");
        }
        if let Some(Err(InvestError::SoldOut { .. } | InvestError::AmountExceedsRemaining { .. })) =
            ran
        {
            // The gate admitted what Postgres refused: rebuild it from Postgres.
            if let Err(err) = self.gate.forget(cmd.product_id).await {
                tracing::warn!(error = %err, "could not reset an invest counter");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::idempotency::{Fingerprint, IdempotencyKey, MockIdempotencyStore, StoredResponse};
    use domain::invest::{
        InvestProduct, InvestTitle, InvestmentId, MockInvestGate, MockInvestStore, RecruitingWindow,
    };
    use domain::money::Points;

    use super::*;

    const PRODUCT: InvestProductId = InvestProductId::new(7);

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
            .single()
            .expect("valid")
    }

    fn finish() -> DateTime<Utc> {
        start() + Duration::hours(9)
    }

    fn noon() -> DateTime<Utc> {
        start() + Duration::hours(3)
    }

    fn clock(now: DateTime<Utc>) -> Arc<MockClock> {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(now);
        Arc::new(clock)
    }

    fn points(v: i64) -> Points {
        Points::new(v).expect("valid")
    }

    fn product(total: i64, current: i64) -> InvestProduct {
        InvestProduct {
            id: PRODUCT,
            title: InvestTitle::parse("Solar farm").expect("valid"),
            total: points(total),
            current: points(current),
            investors: 3,
            window: RecruitingWindow::new(start(), finish()).expect("valid"),
        }
    }

    fn command(amount: i64) -> InvestCommand {
        InvestCommand {
            user_id: UserId::new(1),
            product_id: PRODUCT,
            amount: InvestAmount::new(amount).expect("valid"),
        }
    }

    /// Renders "invested:<amount>@<time>" or the refusal's text.
    fn request() -> Request {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("i-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| StoredResponse {
                status: if result.is_ok() { 201 } else { 409 },
                content_type: "text/plain".into(),
                body: match result {
                    Ok(i) => format!("invested:{}@{}", i.amount.get(), i.invested_at.to_rfc3339())
                        .into_bytes(),
                    Err(e) => e.to_string().into_bytes(),
                },
            }),
        }
    }

    fn body(outcome: &IdempotentOutcome) -> String {
        match outcome {
            IdempotentOutcome::Executed(r) | IdempotentOutcome::Replayed(r) => {
                String::from_utf8_lossy(&r.body).into_owned()
            }
            other => format!("{other:?}"),
        }
    }

    /// No stored answers; `refusals` refusals are stored.
    fn idempotency(refusals: usize) -> MockIdempotencyStore {
        let mut idempotency = MockIdempotencyStore::new();
        idempotency.expect_lookup().returning(|_, _, _| Ok(None));
        idempotency
            .expect_refuse()
            .times(refusals)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        idempotency
    }

    /// A store holding `product` that must not be asked to invest.
    fn store_refusing_early(product: Option<InvestProduct>) -> MockInvestStore {
        let mut store = MockInvestStore::new();
        store.expect_get().returning(move |_| Ok(product.clone()));
        store.expect_invest().never();
        store
    }

    /// A store holding `product` that accepts one investment.
    fn investing_store(product: InvestProduct) -> MockInvestStore {
        let mut store = MockInvestStore::new();
        store
            .expect_get()
            .returning(move |_| Ok(Some(product.clone())));
        store.expect_invest().times(1).returning(|order, req| {
            let investment = Investment {
                id: InvestmentId::new(40),
                product_id: order.product_id,
                user_id: order.user_id,
                amount: order.amount,
                invested_at: order.at,
            };
            Ok(InvestPlacement {
                outcome: IdempotentOutcome::Executed((req.render)(&Ok(investment.clone()))),
                ran: Some(Ok(investment)),
            })
        });
        store
    }

    /// A store holding `product` whose transaction refuses with `refusal`.
    fn refusing_store(product: InvestProduct, refusal: InvestError) -> MockInvestStore {
        let mut store = MockInvestStore::new();
        store
            .expect_get()
            .returning(move |_| Ok(Some(product.clone())));
        store.expect_invest().times(1).returning(move |_, req| {
            Ok(InvestPlacement {
                outcome: IdempotentOutcome::Executed((req.render)(&Err(refusal.clone()))),
                ran: Some(Err(refusal.clone())),
            })
        });
        store
    }

    /// A gate that does not know the product.
    fn bypassing_gate() -> MockInvestGate {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(InvestAdmission::Bypass));
        gate.expect_release().never();
        gate.expect_forget().never();
        gate
    }

    /// A gate that must not be asked at all.
    fn untouched_gate() -> MockInvestGate {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve().never();
        gate.expect_release().never();
        gate
    }

    fn use_case(
        store: MockInvestStore,
        idempotency: MockIdempotencyStore,
        gate: MockInvestGate,
        now: DateTime<Utc>,
    ) -> Invest {
        Invest::new(
            Arc::new(store),
            Arc::new(idempotency),
            Arc::new(gate),
            clock(now),
        )
    }

    async fn run(invest: &Invest, amount: i64) -> String {
        body(
            &invest
                .execute(command(amount), request())
                .await
                .expect("ran"),
        )
    }

    #[tokio::test]
    async fn the_window_includes_its_first_and_last_instant() {
        for now in [start(), finish()] {
            let invest = use_case(
                investing_store(product(5_000, 0)),
                idempotency(0),
                bypassing_gate(),
                now,
            );
            assert_eq!(
                run(&invest, 100).await,
                format!("invested:100@{}", now.to_rfc3339()),
                "the investment is dated by the clock"
            );
        }
    }

    #[tokio::test]
    async fn a_second_outside_the_window_is_refused_and_stored() {
        for now in [
            start() - Duration::seconds(1),
            finish() + Duration::seconds(1),
        ] {
            let invest = use_case(
                store_refusing_early(Some(product(5_000, 0))),
                idempotency(1),
                untouched_gate(),
                now,
            );
            assert_eq!(
                run(&invest, 100).await,
                "investment product 7 is not recruiting now"
            );
        }
    }

    #[tokio::test]
    async fn exactly_what_remains_is_accepted() {
        let invest = use_case(
            investing_store(product(5_000, 4_000)),
            idempotency(0),
            bypassing_gate(),
            noon(),
        );
        assert!(run(&invest, 1_000).await.starts_with("invested:1000@"));
    }

    #[tokio::test]
    async fn one_over_what_remains_is_refused_whole() {
        let invest = use_case(
            store_refusing_early(Some(product(5_000, 4_000))),
            idempotency(1),
            untouched_gate(),
            noon(),
        );
        assert_eq!(
            run(&invest, 1_001).await,
            "only 1000 can still be invested in product 7"
        );
    }

    #[tokio::test]
    async fn a_full_product_is_sold_out() {
        let invest = use_case(
            store_refusing_early(Some(product(5_000, 5_000))),
            idempotency(1),
            untouched_gate(),
            noon(),
        );
        assert_eq!(
            run(&invest, 1).await,
            "investment product 7 has reached its target"
        );
    }

    #[tokio::test]
    async fn an_unknown_product_is_refused_and_stored() {
        let invest = use_case(
            store_refusing_early(None),
            idempotency(1),
            untouched_gate(),
            noon(),
        );
        assert_eq!(run(&invest, 1).await, "investment product 7 does not exist");
    }

    #[tokio::test]
    async fn an_answered_key_is_replayed_without_reading_or_reserving() {
        let mut idempotency = MockIdempotencyStore::new();
        idempotency.expect_lookup().returning(|_, _, _| {
            Ok(Some(IdempotentOutcome::Replayed(StoredResponse {
                status: 201,
                content_type: "text/plain".into(),
                body: b"invested:100@before".to_vec(),
            })))
        });
        let mut store = MockInvestStore::new();
        store.expect_get().never();
        store.expect_invest().never();
        let invest = use_case(store, idempotency, untouched_gate(), noon());
        assert_eq!(run(&invest, 100).await, "invested:100@before");
    }

    #[tokio::test]
    async fn the_gate_refuses_with_what_it_counts_as_left() {
        // Postgres says 1,000 is left, but 800 of it is reserved by
        // investments in flight: the gate's count is what remains.
        let mut gate = MockInvestGate::new();
        gate.expect_reserve().times(1).returning(|_, _| {
            Ok(InvestAdmission::Refused {
                remaining: Points::new(200).expect("valid"),
            })
        });
        gate.expect_release().never();
        let invest = use_case(
            store_refusing_early(Some(product(5_000, 4_000))),
            idempotency(1),
            gate,
            noon(),
        );
        assert_eq!(
            run(&invest, 500).await,
            "only 200 can still be invested in product 7"
        );
    }

    #[tokio::test]
    async fn a_committed_reservation_is_kept() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(InvestAdmission::Reserved));
        gate.expect_release().never();
        gate.expect_forget().never();
        let invest = use_case(
            investing_store(product(5_000, 0)),
            idempotency(0),
            gate,
            noon(),
        );
        assert!(run(&invest, 300).await.starts_with("invested:300@"));
    }

    #[tokio::test]
    async fn a_reservation_postgres_refused_is_given_back_and_the_counter_rebuilt() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(InvestAdmission::Reserved));
        gate.expect_release()
            .withf(|p, a| *p == PRODUCT && a.get() == 300)
            .times(1)
            .returning(|_, _| Ok(()));
        gate.expect_forget()
            .withf(|p| *p == PRODUCT)
            .times(1)
            .returning(|_| Ok(()));
        let invest = use_case(
            refusing_store(
                product(5_000, 0),
                InvestError::SoldOut {
                    product_id: PRODUCT,
                },
            ),
            idempotency(0),
            gate,
            noon(),
        );
        assert_eq!(
            run(&invest, 300).await,
            "investment product 7 has reached its target"
        );
    }

    #[tokio::test]
    async fn a_reservation_is_given_back_when_postgres_fails() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(InvestAdmission::Reserved));
        gate.expect_release().times(1).returning(|_, _| Ok(()));
        gate.expect_forget().never();
        let mut store = MockInvestStore::new();
        store
            .expect_get()
            .returning(|_| Ok(Some(product(5_000, 0))));
        store
            .expect_invest()
            .returning(|_, _| Err(Unavailable::new("postgres", "connection reset")));
        let invest = use_case(store, idempotency(0), gate, noon());
        let err = invest
            .execute(command(300), request())
            .await
            .expect_err("postgres failed");
        assert_eq!(err.service(), "postgres");
    }

    #[tokio::test]
    async fn with_the_gate_down_postgres_decides_alone() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _| Err(Unavailable::new("redis", "connection refused")));
        gate.expect_release().never();
        let invest = use_case(
            investing_store(product(5_000, 0)),
            idempotency(0),
            gate,
            noon(),
        );
        assert!(run(&invest, 300).await.starts_with("invested:300@"));
    }
}
