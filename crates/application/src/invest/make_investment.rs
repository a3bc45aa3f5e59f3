//! Make an investment: add an amount to a recruiting product without ever
//! exceeding its target, once per idempotency key.
//!
//! It runs through the keyed-write [`Pipeline`]:
//! 1. the invest gate reserves the amount for the request's holder, or
//!    refuses it when the counter says too little is left (a copy of a
//!    request in flight is never refused: it goes on unreserved, and the
//!    store answers it under the key's lock);
//! 2. the product is read and the rules are checked at the clock's now
//!    (unknown product, closed window, nothing or too little left), a cheap
//!    early refusal that is stored under the key;
//! 3. the store adds the amount in one guarded update (`current + amount <=
//!    total`, the window at the database's clock), the final guard under any
//!    concurrency and the one clock every instance shares;
//! 4. unless it committed, the reservation is given back, and a product
//!    Postgres refused as full is forgotten by the gate so that its counter
//!    is rebuilt from the truth.

use std::sync::Arc;

use async_trait::async_trait;
use domain::clock::Clock;
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};
use domain::idempotency::{FastRefusals, IdempotencyStore, IdempotentRequest, Written};
use domain::identity::UserId;
use domain::invest::{
    InvestAmount, InvestError, InvestGate, InvestOrder, InvestProductId, InvestStore, Investment,
    refusal_for,
};

use crate::pipeline::{GatedWrite, KeyedWrite, Pipeline};

/// A validated investment request.
#[derive(Debug, Clone, Copy)]
pub struct InvestCommand {
    pub user_id: UserId,
    pub product_id: InvestProductId,
    pub amount: InvestAmount,
}

pub struct MakeInvestment {
    store: Arc<dyn InvestStore>,
    gate: Arc<dyn InvestGate>,
    clock: Arc<dyn Clock>,
    pipeline: Pipeline,
}

impl std::fmt::Debug for MakeInvestment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeInvestment")
    }
}

type Request = IdempotentRequest<Investment, InvestError>;

impl MakeInvestment {
    pub fn new(
        store: Arc<dyn InvestStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        fast_refusals: Arc<dyn FastRefusals>,
        gate: Arc<dyn InvestGate>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            gate,
            clock,
            pipeline: Pipeline::new(idempotency, Some(fast_refusals)),
        }
    }

    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored, so a retry runs again.
    #[tracing::instrument(name = "invest", skip_all, fields(user_id = %cmd.user_id, product_id = %cmd.product_id))]
    pub async fn execute(
        &self,
        cmd: InvestCommand,
        request: Request,
    ) -> Result<Written<Investment, InvestError>, Unavailable> {
        let investing = Investing {
            use_case: self,
            cmd,
        };
        self.pipeline.keyed(&investing, request).await
    }
}

/// One investment in the pipeline.
struct Investing<'a> {
    use_case: &'a MakeInvestment,
    cmd: InvestCommand,
}

#[async_trait]
impl GatedWrite for Investing<'_> {
    type Value = Investment;
    type Refusal = InvestError;
    type Ready = InvestOrder;
    const RULES_OUTRANK_GATE: bool = true;

    async fn reserve(&self, holder: Holder<'_>) -> Result<Admission<InvestError>, Unavailable> {
        let InvestCommand {
            product_id, amount, ..
        } = self.cmd;
        Ok(
            match self
                .use_case
                .gate
                .reserve(holder, product_id, amount)
                .await?
            {
                Admission::Refused(remaining) => match refusal_for(product_id, amount, remaining) {
                    Some(refusal) => Admission::Refused(refusal),
                    // A gate that refuses what its own count admits is
                    // confused: nothing was reserved, Postgres decides.
                    None => Admission::Bypass,
                },
                // Its rules outrank the gate, so the holder never carries
                // answers for the gate to record (`Pipeline::keyed`); were
                // one recorded, its refusal is answered as the gate's.
                Admission::Answered(remaining) => refusal_for(product_id, amount, remaining)
                    .map_or(Admission::Bypass, Admission::Answered),
                Admission::Reserved => Admission::Reserved,
                Admission::Bypass => Admission::Bypass,
                Admission::Repeated => Admission::Repeated,
                Admission::Recorded(record) => Admission::Recorded(record),
            },
        )
    }

    fn is_gate_refusal(&self, refusal: &InvestError) -> bool {
        matches!(
            refusal,
            InvestError::SoldOut { .. } | InvestError::AmountExceedsRemaining { .. }
        )
    }

    async fn release(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        let gate = &self.use_case.gate;
        gate.release(holder, self.cmd.product_id, self.cmd.amount)
            .await
    }

    async fn confirm(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        let gate = &self.use_case.gate;
        gate.confirm(holder, self.cmd.product_id, self.cmd.amount)
            .await
    }

    async fn forget(&self, refusal: &InvestError) -> Result<(), Unavailable> {
        if self.is_gate_refusal(refusal) {
            self.use_case.gate.forget(self.cmd.product_id).await
        } else {
            Ok(())
        }
    }

    async fn prepare(&self) -> Result<Result<InvestOrder, InvestError>, Unavailable> {
        let InvestCommand {
            user_id,
            product_id,
            amount,
        } = self.cmd;
        let Some(product) = self.use_case.store.get(product_id).await? else {
            return Ok(Err(InvestError::ProductNotFound { product_id }));
        };
        Ok(product
            .admit(amount, self.use_case.clock.now())
            .map(|()| InvestOrder {
                user_id,
                product_id,
                amount,
            }))
    }
}

#[async_trait]
impl KeyedWrite for Investing<'_> {
    async fn run(
        &self,
        order: InvestOrder,
        request: Request,
    ) -> Result<Written<Investment, InvestError>, Unavailable> {
        self.use_case.store.invest(order, request).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::idempotency::{
        Fingerprint, IdempotencyKey, IdempotentOutcome, MockIdempotencyStore, StoredResponse,
    };
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

    /// Renders "invested:<amount>" or the refusal's text.
    fn request() -> Request {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("i-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| StoredResponse {
                status: if result.is_ok() { 201 } else { 409 },
                content_type: "text/plain".into(),
                body: match result {
                    Ok(i) => format!("invested:{}", i.amount.get()).into_bytes(),
                    Err(e) => e.to_string().into_bytes(),
                },
            }),
        }
    }

    fn body(written: &Written<Investment, InvestError>) -> String {
        match written.response() {
            Some(r) => String::from_utf8_lossy(&r.body).into_owned(),
            None => format!("{written:?}"),
        }
    }

    /// No stored answers; `refusals` refusals are stored.
    fn idempotency(refusals: usize) -> MockIdempotencyStore {
        let mut idempotency = MockIdempotencyStore::new();
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

    fn executed(
        result: Result<Investment, InvestError>,
        req: &Request,
    ) -> Written<Investment, InvestError> {
        let response = req.render(&result);
        Written::Executed { result, response }
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
                invested_at: noon(),
            };
            Ok(executed(Ok(investment), &req))
        });
        store
    }

    /// A store holding `product` whose transaction refuses with `refusal`.
    fn refusing_store(product: InvestProduct, refusal: InvestError) -> MockInvestStore {
        let mut store = MockInvestStore::new();
        store
            .expect_get()
            .returning(move |_| Ok(Some(product.clone())));
        store
            .expect_invest()
            .times(1)
            .returning(move |_, req| Ok(executed(Err(refusal.clone()), &req)));
        store
    }

    /// A gate that does not know the product; it only marks the holder.
    fn bypassing_gate() -> MockInvestGate {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _, _| Ok(Admission::Bypass));
        gate.expect_release().returning(|_, _, _| Ok(()));
        gate.expect_forget().never();
        gate
    }

    /// A gate that reserves, and expects the reservation back `releases` times.
    fn reserving_gate(releases: usize) -> MockInvestGate {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .withf(|holder, product, amount| {
                holder.key.map(IdempotencyKey::as_str) == Some("i-1")
                    && *product == PRODUCT
                    && amount.get() > 0
            })
            .returning(|_, _, _| Ok(Admission::Reserved));
        gate.expect_release()
            .times(releases)
            .returning(|_, _, _| Ok(()));
        // A committed investment confirms its lease.
        gate.expect_confirm()
            .times(1 - releases.min(1))
            .returning(|_, _, _| Ok(()));
        gate
    }

    fn use_case(
        store: MockInvestStore,
        idempotency: MockIdempotencyStore,
        gate: MockInvestGate,
        now: DateTime<Utc>,
    ) -> MakeInvestment {
        MakeInvestment::new(
            Arc::new(store),
            Arc::new(idempotency),
            crate::pipeline::fast_path_down(),
            Arc::new(gate),
            clock(now),
        )
    }

    async fn run(invest: &MakeInvestment, amount: i64) -> String {
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
            assert_eq!(run(&invest, 100).await, "invested:100");
        }
    }

    #[tokio::test]
    async fn a_second_outside_the_window_is_refused_stored_and_given_back() {
        for now in [
            start() - Duration::seconds(1),
            finish() + Duration::seconds(1),
        ] {
            let mut gate = reserving_gate(1);
            gate.expect_forget().never();
            let invest = use_case(
                store_refusing_early(Some(product(5_000, 0))),
                idempotency(1),
                gate,
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
        assert_eq!(run(&invest, 1_000).await, "invested:1000");
    }

    #[tokio::test]
    async fn one_over_what_remains_is_refused_whole() {
        let invest = use_case(
            store_refusing_early(Some(product(5_000, 4_000))),
            idempotency(1),
            bypassing_gate(),
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
            bypassing_gate(),
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
            bypassing_gate(),
            noon(),
        );
        assert_eq!(run(&invest, 1).await, "investment product 7 does not exist");
    }

    #[tokio::test]
    async fn a_copy_of_a_request_in_flight_is_never_refused_and_goes_to_the_store_unreserved() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _, _| Ok(Admission::Repeated));
        gate.expect_release().never();
        gate.expect_forget().never();
        let mut store = MockInvestStore::new();
        store
            .expect_get()
            .returning(|_| Ok(Some(product(1_000_000, 0))));
        store
            .expect_invest()
            .times(1)
            .returning(|_, _| Ok(Written::InProgress));
        let invest = use_case(store, idempotency(0), gate, noon());
        assert_eq!(run(&invest, 600_000).await, "InProgress");
    }

    #[tokio::test]
    async fn the_gate_refuses_with_what_it_counts_as_left() {
        // Postgres says 1,000 is left, but 800 of it is reserved by
        // investments in flight: the gate's count is what remains.
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .times(1)
            .returning(|_, _, _| Ok(Admission::Refused(points(200))));
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
    async fn a_closed_window_outranks_the_gates_refusal() {
        let mut gate = MockInvestGate::new();
        gate.expect_reserve()
            .returning(|_, _, _| Ok(Admission::Refused(Points::ZERO)));
        gate.expect_release().never();
        let invest = use_case(
            store_refusing_early(Some(product(5_000, 5_000))),
            idempotency(1),
            gate,
            finish() + Duration::seconds(1),
        );
        assert_eq!(
            run(&invest, 500).await,
            "investment product 7 is not recruiting now"
        );
    }

    #[tokio::test]
    async fn a_committed_reservation_is_kept() {
        let mut gate = reserving_gate(0);
        gate.expect_forget().never();
        let invest = use_case(
            investing_store(product(5_000, 0)),
            idempotency(0),
            gate,
            noon(),
        );
        assert_eq!(run(&invest, 300).await, "invested:300");
    }

    #[tokio::test]
    async fn a_reservation_postgres_refused_is_given_back_and_the_counter_rebuilt() {
        let mut gate = reserving_gate(1);
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
        let mut gate = reserving_gate(1);
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
            .returning(|_, _, _| Err(Unavailable::new("redis", "connection refused")));
        gate.expect_release().never();
        let invest = use_case(
            investing_store(product(5_000, 0)),
            idempotency(0),
            gate,
            noon(),
        );
        assert_eq!(run(&invest, 300).await, "invested:300");
    }
}
