//! The one pipeline every keyed or gated write runs through: charge, place
//! order and invest (keyed), and coupon issue (gated, one per user).
//!
//! ```text
//! reserve at the gate, marking the holder (user, key), carrying the
//!   answers to the gate's possible refusals when the gate has the last word
//!   Recorded    → the key's refusal recorded at the gate: answer its replay
//!                 or KeyReused (Postgres' record of the key, if it has one,
//!                 comes first; without one, the gate's is written through),
//!                 run nothing                               (nothing was taken)
//!   Answered(r) → the gate refused and recorded r's answer: answer it
//!   Refused(r)  → record r at the fast path (Redis, answered once its
//!                 batch lands in Postgres; Postgres itself if that fails,
//!                 or if the key has a record there already)
//!   Repeated    → go on without a reservation: never refused by the gate
//!   Reserved / Bypass / gate down → go on
//! prepare (the use case's own checks: pricing, rules at the clock)
//!   Err(r)      → store r under the key, answer it
//! run the guarded effect (the store decides the key under its lock,
//!   runs the effect, stores the rendered answer, in one transaction)
//! settle: the effect committed → confirm the reservation (it stays taken,
//!   no longer a lease that expires); otherwise release what the gate
//!   reserved and the holder's mark, and if Postgres refused what the gate
//!   admitted, the gate forgets that item so it is rebuilt from Postgres
//! ```
//!
//! A use case supplies its gate and its guarded effect by implementing
//! [`GatedWrite`] and [`KeyedWrite`] (or [`UnkeyedWrite`]) for one call, and
//! gets back one typed outcome, [`Written`]. Refusals are rendered here with
//! the request's renderer, the same one the store uses inside its
//! transaction, so a refusal decided early and one decided by Postgres are
//! the same bytes.
//!
//! Only a gate's refusal takes the fast path ([`FastRefusals`]): it is
//! decided before any effect, and the gate reads its record in the same
//! step as it reserves, so a retry of that key never reaches the effect
//! while the record waits for its write to Postgres. Where the gate has
//! the last word on its refusals (an order), the holder carries their
//! rendered answers and the gate records the one it gives in the same step
//! as it refuses ([`GatedWrite::gate_refusals`]); otherwise the pipeline
//! records it, one step more. A refusal found in
//! `prepare`, or one by a rule that outranks the gate and is not of the
//! gate's kind ([`GatedWrite::is_gate_refusal`]), is stored in Postgres at
//! once, as before.
//!
//! Why the holder mark: a copy of a request (double click, a client's retry
//! after a timeout, the same key on another instance) must never be refused
//! because its own first copy holds what is left. The gate marks the holder
//! in the same atomic step as the reservation, and a marked holder goes on
//! without reserving again. The store then answers it from its key under
//! the key's lock: in progress while the first copy runs, its replay once
//! it committed. A first copy that died with its instance holds no lock, so
//! its retry runs instead of waiting for the mark to expire.

use async_trait::async_trait;
use domain::error::Unavailable;
use domain::gate::{Admission, Holder, RefusalAnswers};
use domain::idempotency::{
    FastRefusals, IdempotencyStore, IdempotentOutcome, IdempotentRequest, Record, Written,
};

/// One write as the pipeline sees it: its gate, its checks before the
/// effect. Implemented by a use case for the length of one call.
#[async_trait]
pub trait GatedWrite: Send + Sync {
    /// What the effect gives when it commits.
    type Value: Send + Sync;
    /// A business refusal; stored under the key like a success.
    type Refusal: Send + Sync;
    /// What [`prepare`](Self::prepare) hands to the effect.
    type Ready: Send;

    /// Whether the use case's own refusals outrank the gate's: an unknown
    /// or closed campaign or product is answered as such, not as sold out.
    /// Such a write runs [`prepare`](Self::prepare) before answering a gate
    /// refusal (one read, as cheap as the refusal's own answer). An order
    /// keeps the gate first, so a sale's refusals read no prices.
    const RULES_OUTRANK_GATE: bool = false;

    /// Whether `refusal`, found by the use case's own rules, is of the kind
    /// a gate decides (sold out, too little left). When the rules outrank
    /// the gate and answer such a refusal, it confirms the gate's and takes
    /// the fast path as the gate's would; other rules' refusals are stored
    /// in Postgres at once.
    fn is_gate_refusal(&self, _refusal: &Self::Refusal) -> bool {
        false
    }

    /// The refusals the gate may give this write, one per item it counts,
    /// in the order it counts them (an order: each line's product sold
    /// out). The pipeline renders them and the holder carries them, so the
    /// gate records the one it gives in the same step as it refuses. Empty
    /// (the default): the pipeline records a gate's refusal itself. Not
    /// asked of a write whose rules outrank the gate: its answer may be
    /// another refusal.
    fn gate_refusals(&self) -> Vec<Self::Refusal> {
        Vec::new()
    }

    /// Asks the gate for this write's reservation and marks the holder.
    /// A write without a gate keeps the default: Postgres decides.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate fails; the write goes on without it.
    async fn reserve(&self, _holder: Holder<'_>) -> Result<Admission<Self::Refusal>, Unavailable> {
        Ok(Admission::Bypass)
    }

    /// Gives back what [`reserve`](Self::reserve) took, and drops the mark.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate fails (its counters heal by expiry).
    async fn release(&self, _holder: Holder<'_>) -> Result<(), Unavailable> {
        Ok(())
    }

    /// The effect committed: what [`reserve`](Self::reserve) took stays
    /// taken, and is no longer a lease the gate gives back when it expires.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate fails (the lease expires and its units
    /// come back: the counter is then above Postgres, which refuses the
    /// excess).
    async fn confirm(&self, _holder: Holder<'_>) -> Result<(), Unavailable> {
        Ok(())
    }

    /// Postgres refused what the gate admitted: drops what the gate knows
    /// about the item this refusal names, so it is rebuilt from Postgres.
    /// Refusals that say nothing about the gate's count change nothing.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate fails.
    async fn forget(&self, _refusal: &Self::Refusal) -> Result<(), Unavailable> {
        Ok(())
    }

    /// The use case's checks before the effect (pricing, rules at the
    /// clock's now): the effect's input, or a refusal to store.
    ///
    /// # Errors
    /// [`Unavailable`] when a store fails.
    async fn prepare(&self) -> Result<Result<Self::Ready, Self::Refusal>, Unavailable>;
}

/// A write that runs at most once per idempotency key.
#[async_trait]
pub trait KeyedWrite: GatedWrite {
    /// The guarded effect: the store decides the key under its lock, runs
    /// the effect and stores the rendered answer in one transaction.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was stored.
    async fn run(
        &self,
        ready: Self::Ready,
        request: IdempotentRequest<Self::Value, Self::Refusal>,
    ) -> Result<Written<Self::Value, Self::Refusal>, Unavailable>;
}

/// A gated write without a key (coupon issue: one per user is the rule).
#[async_trait]
pub trait UnkeyedWrite: GatedWrite {
    /// The guarded effect.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was written.
    async fn run(
        &self,
        ready: Self::Ready,
    ) -> Result<Result<Self::Value, Self::Refusal>, Unavailable>;
}

/// What the gate holds for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Units are reserved and the holder is marked: released unless the
    /// write commits.
    Reserved,
    /// Nothing to give back: the gate was bypassed or down, or this is a
    /// copy of a request in flight. A bypass's mark lapses by itself; a
    /// copy that finds it goes on unreserved, as the store decides anyway.
    Nothing,
}

/// How the gate step ended.
enum Gate<R> {
    Proceed(Held),
    /// The gate could not decide because Postgres failed it (a counter's
    /// rebuild): the write would wait for Postgres a second time. Nothing
    /// was reserved; answered `Unavailable` at once.
    Failed(Unavailable),
    Refused(R),
    /// Refused, and the refusal recorded under the key by the gate.
    Answered(R),
    /// The key's refusal, recorded at the gate: answered from it.
    Recorded(Record),
}

/// Who decided a refusal before the effect: the gate (it may take the fast
/// path) or the use case's own rules (stored in Postgres at once).
enum Early<R> {
    Gate(R),
    Rules(R),
}

impl<R> Early<R> {
    fn into_inner(self) -> R {
        match self {
            Self::Gate(r) | Self::Rules(r) => r,
        }
    }
}

/// Runs keyed writes; holds the idempotency records for refusals decided
/// before the effect.
#[derive(Clone)]
pub struct Pipeline {
    idempotency: std::sync::Arc<dyn IdempotencyStore>,
    /// Where a gate's refusals are recorded first; `None` for writes
    /// without a gate (a charge), whose refusals all go to Postgres.
    fast_refusals: Option<std::sync::Arc<dyn FastRefusals>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

impl Pipeline {
    pub fn new(
        idempotency: std::sync::Arc<dyn IdempotencyStore>,
        fast_refusals: Option<std::sync::Arc<dyn FastRefusals>>,
    ) -> Self {
        Self {
            idempotency,
            fast_refusals,
        }
    }

    /// Runs `write` at most once per key. See the module documentation.
    ///
    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored under the key,
    /// and the gate's reservation and mark are given back, so a retry runs.
    pub async fn keyed<W: KeyedWrite>(
        &self,
        write: &W,
        request: IdempotentRequest<W::Value, W::Refusal>,
    ) -> Result<Written<W::Value, W::Refusal>, Unavailable> {
        let key = request.key.clone();
        let holder = Holder::keyed(request.user_id, &key);
        let answers = self.gate_answers(write, &request);
        let held = match reserve(write, holder.answering(answers.as_ref())).await {
            Gate::Proceed(held) => held,
            Gate::Refused(refusal) => {
                let refusal = outranking(write, refusal).await;
                return self.refuse(&request, refusal).await;
            }
            Gate::Answered(refusal) => {
                let refusal = Err(refusal);
                let response = request.render(&refusal);
                return Ok(Written::Executed {
                    result: refusal,
                    response,
                });
            }
            Gate::Recorded(record) => return Ok(self.replay(&request, record).await),
            Gate::Failed(err) => return Err(err),
        };
        let written = match write.prepare().await {
            Ok(Ok(ready)) => write.run(ready, request).await,
            Ok(Err(refusal)) => self.refuse(&request, Early::Rules(refusal)).await,
            Err(err) => Err(err),
        };
        let outcome = match &written {
            Ok(written) => written.executed().map_or(Outcome::NotRun, Outcome::Ran),
            Err(_) => Outcome::NotRun,
        };
        settle(write, holder, held, outcome).await;
        written
    }

    /// The answers the holder carries to the gate: only with a fast path to
    /// record them at, and only for a write whose gate has the last word
    /// on its refusals.
    fn gate_answers<'r, W: KeyedWrite>(
        &self,
        write: &W,
        request: &'r IdempotentRequest<W::Value, W::Refusal>,
    ) -> Option<RefusalAnswers<'r>> {
        if W::RULES_OUTRANK_GATE || self.fast_refusals.is_none() {
            return None;
        }
        let refusals = write.gate_refusals();
        (!refusals.is_empty()).then(|| RefusalAnswers {
            fingerprint: &request.fingerprint,
            responses: refusals
                .into_iter()
                .map(|refusal| request.render(&Err(refusal)))
                .collect(),
        })
    }

    /// Answers a key whose gate refusal the gate found recorded at the fast
    /// path. Postgres' record of the key, when it has one, is the truth:
    /// a refusal recorded by a gate step whose answer never reached its
    /// caller (Redis hung, a connection broke) can disagree with what the
    /// caller then did without the gate, and was never queued to be written
    /// behind. Without a Postgres record, the gate's record is written
    /// through (one statement; the writer behind finds it there) before it
    /// answers, unless the key's first request still runs in Postgres: then
    /// it is in progress; a record that came meanwhile answers. Postgres
    /// failing, the gate's record answers (the one answer Postgres has not
    /// confirmed, `docs/idempotency.md`).
    async fn replay<T, E>(
        &self,
        request: &IdempotentRequest<T, E>,
        recorded: Record,
    ) -> Written<T, E> {
        let (user_id, key) = (request.user_id, &request.key);
        let record = match self.idempotency.record(user_id, key).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                let response = recorded.response.clone();
                match self
                    .idempotency
                    .refuse(user_id, key, &recorded.fingerprint, response)
                    .await
                {
                    Ok(IdempotentOutcome::InProgress) => return Written::InProgress,
                    Ok(IdempotentOutcome::Executed(_)) => recorded,
                    // A record came meanwhile (written behind, or another
                    // request's): it answers. Of the same request: its
                    // response; of another: read, as its request is not
                    // known here (still being decided: in progress).
                    Ok(IdempotentOutcome::Replayed(response)) => Record {
                        fingerprint: recorded.fingerprint,
                        response,
                    },
                    Ok(IdempotentOutcome::KeyReused) => {
                        match self.idempotency.record(user_id, key).await {
                            Ok(Some(stored)) => stored,
                            Ok(None) | Err(_) => return Written::InProgress,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not write a recorded refusal through to Postgres");
                        recorded
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not check a recorded refusal against Postgres");
                recorded
            }
        };
        Written::answered(record.answer(&request.fingerprint)).unwrap_or(Written::KeyReused)
    }

    /// Stores a refusal decided before the effect, so the key answers the
    /// same way again; a key that already has a record or runs is answered
    /// from it instead. A gate's refusal is recorded at the fast path when
    /// there is one; anything else, or a fast path that fails, is stored in
    /// Postgres (one statement).
    async fn refuse<T, E>(
        &self,
        request: &IdempotentRequest<T, E>,
        refusal: Early<E>,
    ) -> Result<Written<T, E>, Unavailable> {
        let fast = match &refusal {
            Early::Gate(_) => self.fast_refusals.as_deref(),
            Early::Rules(_) => None,
        };
        let refusal = Err(refusal.into_inner());
        let response = request.render(&refusal);
        let (user_id, key, fingerprint) = (request.user_id, &request.key, &request.fingerprint);
        if let Some(fast) = fast {
            match fast
                .refuse(user_id, key, fingerprint, response.clone())
                .await
            {
                Ok(record) => return Ok(Written::from_record(record, refusal)),
                Err(err) => tracing::warn!(
                    error = %err,
                    "could not record a gate refusal at the fast path; storing it in Postgres"
                ),
            }
        }
        let record = self
            .idempotency
            .refuse(user_id, key, fingerprint, response)
            .await?;
        Ok(Written::from_record(record, refusal))
    }
}

/// Runs a gated write that has no key: the gate, the checks, the
/// effect, and settling the gate.
///
/// # Errors
/// [`Unavailable`] when a store fails; the gate's hold is given back.
pub async fn gated<W: UnkeyedWrite>(
    write: &W,
    holder: Holder<'_>,
) -> Result<Result<W::Value, W::Refusal>, Unavailable> {
    let held = match reserve(write, holder).await {
        Gate::Proceed(held) => held,
        Gate::Refused(refusal) | Gate::Answered(refusal) => {
            return Ok(Err(outranking(write, refusal).await.into_inner()));
        }
        // Records are kept for keys; a gate answers them only to a keyed
        // holder. Should one come, nothing was reserved: Postgres decides.
        Gate::Recorded(_) => Held::Nothing,
        Gate::Failed(err) => return Err(err),
    };
    let result = match write.prepare().await {
        Ok(Ok(ready)) => write.run(ready).await,
        Ok(Err(refusal)) => Ok(Err(refusal)),
        Err(err) => Err(err),
    };
    let outcome = match &result {
        Ok(ran) => Outcome::Ran(ran),
        Err(_) => Outcome::NotRun,
    };
    settle(write, holder, held, outcome).await;
    result
}

async fn reserve<W: GatedWrite>(write: &W, holder: Holder<'_>) -> Gate<W::Refusal> {
    match write.reserve(holder).await {
        Ok(Admission::Reserved) => Gate::Proceed(Held::Reserved),
        Ok(Admission::Bypass) => Gate::Proceed(Held::Nothing),
        Ok(Admission::Refused(refusal)) => Gate::Refused(refusal),
        Ok(Admission::Answered(refusal)) => Gate::Answered(refusal),
        Ok(Admission::Recorded(record)) => Gate::Recorded(record),
        // The mark and any reservation belong to the first copy.
        Ok(Admission::Repeated) => Gate::Proceed(Held::Nothing),
        // Postgres failed the gate (rebuilding a counter): the write needs
        // Postgres too, and would wait for it a second time.
        Err(err) if err.service() == "postgres" => Gate::Failed(err),
        Err(err) => {
            tracing::warn!(error = %err, "gate unavailable; Postgres decides alone");
            Gate::Proceed(Held::Nothing)
        }
    }
}

/// The refusal to answer for a gate refusal: the use case's own, when its
/// rules outrank the gate and refuse too.
async fn outranking<W: GatedWrite>(write: &W, refusal: W::Refusal) -> Early<W::Refusal> {
    if W::RULES_OUTRANK_GATE
        && let Ok(Err(rule)) = write.prepare().await
    {
        return if write.is_gate_refusal(&rule) {
            Early::Gate(rule)
        } else {
            Early::Rules(rule)
        };
    }
    Early::Gate(refusal)
}

/// What became of the effect, as far as this request knows.
enum Outcome<'a, V, R> {
    /// It ran and answered: committed (`Ok`) or refused.
    Ran(&'a Result<V, R>),
    /// It did not commit for this request: refused before it, answered
    /// from the key (a replay, in progress, reused), or failed. A failure
    /// inside the effect leaves its outcome unknown (an order's batch goes
    /// on after its caller gave up); it is given back all the same.
    NotRun,
}

/// Settles what the gate holds for this request: confirms it when the
/// effect committed; otherwise gives it back, and makes the gate forget an
/// item Postgres refused although the gate admitted it. Giving back keeps
/// the holder's mark (as "holds nothing"): a retry of the key goes to the
/// store, which answers it from the key, instead of being refused by the
/// gate while a first copy whose outcome is unknown commits. If that copy
/// does commit, the counter is above Postgres by its units, the drift
/// Postgres absorbs. A money write settles within what is left of its
/// time budget (`domain::deadline`, honoured by the gates' Redis calls): a
/// settle cut short is safe, since the reservation is a lease the gate
/// gives back itself.
async fn settle<W: GatedWrite>(
    write: &W,
    holder: Holder<'_>,
    held: Held,
    outcome: Outcome<'_, W::Value, W::Refusal>,
) {
    if held == Held::Nothing {
        return;
    }
    if matches!(outcome, Outcome::Ran(Ok(_))) {
        if let Err(err) = write.confirm(holder).await {
            tracing::warn!(error = %err, "could not confirm a reservation; its lease expires");
        }
        return;
    }
    if let Err(err) = write.release(holder).await {
        tracing::warn!(error = %err, "could not give a reservation back to its gate");
    }
    if let Outcome::Ran(Err(refusal)) = outcome
        && let Err(err) = write.forget(refusal).await
    {
        tracing::warn!(error = %err, "could not reset a gate counter");
    }
}

/// For the use cases' tests: a fast path that is down, as when Redis is,
/// so a gate's refusals are stored in Postgres, where those tests count
/// them. The pipeline's own tests cover the fast path.
#[cfg(test)]
pub(crate) fn fast_path_down() -> std::sync::Arc<dyn FastRefusals> {
    let mut fast = domain::idempotency::MockFastRefusals::new();
    fast.expect_refuse()
        .returning(|_, _, _, _| Err(Unavailable::new("redis", "connection refused")));
    std::sync::Arc::new(fast)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use domain::idempotency::{
        Fingerprint, IdempotencyKey, IdempotentOutcome, MockFastRefusals, MockIdempotencyStore,
        StoredResponse,
    };
    use domain::identity::UserId;

    use super::*;

    /// A scripted write that records what the pipeline asked of it.
    struct Script {
        gate: Result<Admission<&'static str>, ()>,
        prepared: Result<(), &'static str>,
        /// What the store's guarded run answers.
        store: fn() -> Written<u32, &'static str>,
        /// The store fails instead.
        store_fails: bool,
        /// The service a failing gate names.
        gate_service: &'static str,
        /// What it tells the pipeline its gate may refuse, in item order.
        gate_refusals: Vec<&'static str>,
        /// The answers the holder carried to the gate.
        carried: Mutex<Option<Vec<StoredResponse>>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Script {
        fn new(gate: Admission<&'static str>) -> Self {
            Self {
                gate: Ok(gate),
                prepared: Ok(()),
                store: || Written::Executed {
                    result: Ok(7),
                    response: stored(201, "ok"),
                },
                store_fails: false,
                gate_service: "redis",
                gate_refusals: Vec::new(),
                carried: Mutex::new(None),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().expect("lock").clone()
        }

        fn log(&self, call: &'static str) {
            self.calls.lock().expect("lock").push(call);
        }
    }

    #[async_trait]
    impl GatedWrite for Script {
        type Value = u32;
        type Refusal = &'static str;
        type Ready = ();

        fn gate_refusals(&self) -> Vec<&'static str> {
            self.gate_refusals.clone()
        }

        async fn reserve(&self, h: Holder<'_>) -> Result<Admission<&'static str>, Unavailable> {
            self.log("reserve");
            if let Some(answers) = h.answers {
                assert_eq!(
                    answers.fingerprint.as_str(),
                    "f",
                    "the request's fingerprint"
                );
                *self.carried.lock().expect("lock") = Some(answers.responses.clone());
            }
            self.gate
                .clone()
                .map_err(|()| Unavailable::new(self.gate_service, "connection refused"))
        }

        async fn release(&self, _: Holder<'_>) -> Result<(), Unavailable> {
            self.log("release");
            Ok(())
        }

        async fn confirm(&self, _: Holder<'_>) -> Result<(), Unavailable> {
            self.log("confirm");
            Ok(())
        }

        async fn forget(&self, _: &&'static str) -> Result<(), Unavailable> {
            self.log("forget");
            Ok(())
        }

        async fn prepare(&self) -> Result<Result<(), &'static str>, Unavailable> {
            self.log("prepare");
            Ok(self.prepared)
        }
    }

    #[async_trait]
    impl KeyedWrite for Script {
        async fn run(
            &self,
            (): (),
            _: IdempotentRequest<u32, &'static str>,
        ) -> Result<Written<u32, &'static str>, Unavailable> {
            self.log("run");
            if self.store_fails {
                return Err(Unavailable::new("postgres", "connection reset"));
            }
            Ok((self.store)())
        }
    }

    fn stored(status: u16, body: &str) -> StoredResponse {
        StoredResponse {
            status,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn request() -> IdempotentRequest<u32, &'static str> {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("k-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| match result {
                Ok(v) => stored(201, &v.to_string()),
                Err(e) => stored(409, e),
            }),
        }
    }

    /// An idempotency store that stores every refusal and has no records.
    fn records() -> MockIdempotencyStore {
        let mut store = MockIdempotencyStore::new();
        store
            .expect_refuse()
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        store
    }

    async fn run(script: &Script, store: MockIdempotencyStore) -> Written<u32, &'static str> {
        Pipeline::new(Arc::new(store), None)
            .keyed(script, request())
            .await
            .expect("answered")
    }

    #[tokio::test]
    async fn a_committed_write_keeps_its_reservation_and_confirms_its_lease() {
        let script = Script::new(Admission::Reserved);
        let written = run(&script, records()).await;
        assert!(written.committed());
        assert_eq!(script.calls(), ["reserve", "prepare", "run", "confirm"]);
    }

    #[tokio::test]
    async fn a_committed_write_that_reserved_nothing_confirms_nothing() {
        for gate in [Admission::Bypass, Admission::Repeated] {
            let script = Script::new(gate);
            let written = run(&script, records()).await;
            assert!(written.committed());
            assert_eq!(script.calls(), ["reserve", "prepare", "run"]);
        }
    }

    #[tokio::test]
    async fn a_gate_refusal_is_stored_under_the_key_and_nothing_runs() {
        // Recorded at the fast path when there is one (Postgres is not
        // asked), in Postgres otherwise.
        for fast in [false, true] {
            let script = Script::new(Admission::Refused("SOLD_OUT"));
            let written = if fast {
                run_fast(&script, untouched(), recording()).await
            } else {
                run(&script, records()).await
            };
            assert_eq!(
                written,
                Written::Executed {
                    result: Err("SOLD_OUT"),
                    response: stored(409, "SOLD_OUT"),
                }
            );
            assert_eq!(script.calls(), ["reserve"]);
        }
    }

    #[tokio::test]
    async fn a_repeated_holder_is_never_refused_and_runs_without_a_reservation() {
        let mut script = Script::new(Admission::Repeated);
        script.store = || Written::InProgress;
        let written = run(&script, records()).await;
        assert_eq!(
            written,
            Written::InProgress,
            "the store answers from the key"
        );
        assert_eq!(
            script.calls(),
            ["reserve", "prepare", "run"],
            "nothing of the first copy's is given back"
        );
    }

    #[tokio::test]
    async fn a_write_whose_rules_outrank_the_gate_answers_its_own_refusal() {
        struct RulesFirst(Script);
        #[async_trait]
        impl GatedWrite for RulesFirst {
            type Value = u32;
            type Refusal = &'static str;
            type Ready = ();
            const RULES_OUTRANK_GATE: bool = true;
            fn is_gate_refusal(&self, refusal: &&'static str) -> bool {
                *refusal == "SOLD_OUT"
            }
            fn gate_refusals(&self) -> Vec<&'static str> {
                vec!["SOLD_OUT"]
            }
            async fn reserve(&self, h: Holder<'_>) -> Result<Admission<&'static str>, Unavailable> {
                self.0.reserve(h).await
            }
            async fn prepare(&self) -> Result<Result<(), &'static str>, Unavailable> {
                self.0.prepare().await
            }
        }
        #[async_trait]
        impl KeyedWrite for RulesFirst {
            async fn run(
                &self,
                (): (),
                r: IdempotentRequest<u32, &'static str>,
            ) -> Result<Written<u32, &'static str>, Unavailable> {
                self.0.run((), r).await
            }
        }
        let mut script = Script::new(Admission::Refused("SOLD_OUT"));
        script.prepared = Err("NOT_ACTIVE");
        let write = RulesFirst(script);
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse().never();
        let written = Pipeline::new(Arc::new(records()), Some(Arc::new(fast)))
            .keyed(&write, request())
            .await
            .expect("answered");
        assert_eq!(
            written.executed(),
            Some(&Err("NOT_ACTIVE")),
            "a rule's refusal is stored in Postgres, not at the fast path"
        );
        assert_eq!(write.0.calls(), ["reserve", "prepare"], "nothing runs");
        assert_eq!(
            *write.0.carried.lock().expect("lock"),
            None,
            "a gate whose refusals the rules may replace is given no answers to record"
        );

        let write = RulesFirst(Script::new(Admission::Refused("SOLD_OUT")));
        let written = Pipeline::new(Arc::new(untouched()), Some(Arc::new(recording())))
            .keyed(&write, request())
            .await
            .expect("answered");
        assert_eq!(
            written.executed(),
            Some(&Err("SOLD_OUT")),
            "rules that pass leave the gate's refusal"
        );

        let mut script = Script::new(Admission::Refused("SOLD_OUT"));
        script.prepared = Err("SOLD_OUT");
        let write = RulesFirst(script);
        let written = Pipeline::new(Arc::new(untouched()), Some(Arc::new(recording())))
            .keyed(&write, request())
            .await
            .expect("answered");
        assert_eq!(
            written.executed(),
            Some(&Err("SOLD_OUT")),
            "rules that confirm the gate's kind of refusal take the fast path"
        );
    }

    #[tokio::test]
    async fn a_refusal_found_while_preparing_is_stored_and_the_reservation_given_back() {
        let mut script = Script::new(Admission::Reserved);
        script.prepared = Err("COUPON_NOT_APPLICABLE");
        let written = run(&script, records()).await;
        assert_eq!(written.executed(), Some(&Err("COUPON_NOT_APPLICABLE")));
        assert_eq!(
            script.calls(),
            ["reserve", "prepare", "release", "forget"],
            "the pipeline asks; the write decides whether this refusal says anything about the gate"
        );
    }

    #[tokio::test]
    async fn what_postgres_refused_is_given_back_and_forgotten() {
        let mut script = Script::new(Admission::Reserved);
        script.store = || Written::Executed {
            result: Err("OUT_OF_STOCK"),
            response: stored(409, "OUT_OF_STOCK"),
        };
        run(&script, records()).await;
        assert_eq!(
            script.calls(),
            ["reserve", "prepare", "run", "release", "forget"]
        );
    }

    #[tokio::test]
    async fn a_replay_from_the_store_gives_the_reservation_back_and_forgets_nothing() {
        for store in [
            (|| Written::Replayed(stored(201, "7"))) as fn() -> Written<u32, &'static str>,
            || Written::InProgress,
            || Written::KeyReused,
        ] {
            let mut script = Script::new(Admission::Reserved);
            script.store = store;
            run(&script, records()).await;
            assert_eq!(script.calls(), ["reserve", "prepare", "run", "release"]);
        }
    }

    #[tokio::test]
    async fn a_bypass_gives_nothing_back_and_never_forgets() {
        let mut script = Script::new(Admission::Bypass);
        script.store = || Written::Executed {
            result: Err("OUT_OF_STOCK"),
            response: stored(409, "OUT_OF_STOCK"),
        };
        run(&script, records()).await;
        assert_eq!(
            script.calls(),
            ["reserve", "prepare", "run"],
            "a bypass took nothing, and releasing could take what a holder owns"
        );
    }

    /// A store failing in the effect: the outcome is unknown, the
    /// reservation is given back (the gate keeps the holder's mark, see
    /// `infra::redis::counter`), nothing is stored.
    #[tokio::test]
    async fn a_failing_store_gives_the_reservation_back_and_stores_nothing() {
        let mut store = MockIdempotencyStore::new();
        store.expect_refuse().never();
        let mut script = Script::new(Admission::Reserved);
        script.store_fails = true;
        let result = Pipeline::new(Arc::new(store), None)
            .keyed(&script, request())
            .await;
        assert!(matches!(result, Err(u) if u.service() == "postgres"));
        assert_eq!(script.calls(), ["reserve", "prepare", "run", "release"]);
    }

    #[tokio::test]
    async fn with_the_gate_down_postgres_decides_and_nothing_is_given_back() {
        let mut script = Script::new(Admission::Reserved);
        script.gate = Err(());
        script.store = || Written::Executed {
            result: Err("OUT_OF_STOCK"),
            response: stored(409, "OUT_OF_STOCK"),
        };
        run(&script, records()).await;
        assert_eq!(script.calls(), ["reserve", "prepare", "run"]);
    }

    #[tokio::test]
    async fn a_gate_that_postgres_failed_answers_unavailable_at_once_and_runs_nothing() {
        let mut script = Script::new(Admission::Reserved);
        script.gate = Err(());
        script.gate_service = "postgres";
        let answer = Pipeline::new(Arc::new(untouched()), None)
            .keyed(&script, request())
            .await;
        assert_eq!(
            answer.expect_err("unavailable").service(),
            "postgres",
            "the write would wait for Postgres a second time"
        );
        assert_eq!(script.calls(), ["reserve"]);
    }

    /// A fast path that records every refusal it is given.
    fn recording() -> MockFastRefusals {
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse()
            .times(1)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        fast
    }

    /// An idempotency store that must not be asked.
    fn untouched() -> MockIdempotencyStore {
        let mut store = MockIdempotencyStore::new();
        store.expect_refuse().never();
        store
    }

    async fn run_fast(
        script: &Script,
        store: MockIdempotencyStore,
        fast: MockFastRefusals,
    ) -> Written<u32, &'static str> {
        Pipeline::new(Arc::new(store), Some(Arc::new(fast)))
            .keyed(script, request())
            .await
            .expect("answered")
    }

    #[tokio::test]
    async fn a_gate_refusal_another_copy_recorded_first_is_its_replay() {
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse()
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Replayed(r)));
        let script = Script::new(Admission::Refused("SOLD_OUT"));
        let written = run_fast(&script, untouched(), fast).await;
        assert_eq!(written, Written::Replayed(stored(409, "SOLD_OUT")));
    }

    #[tokio::test]
    async fn a_gate_refusal_the_fast_path_cannot_record_is_stored_in_postgres() {
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse()
            .times(1)
            .returning(|_, _, _, _| Err(Unavailable::new("redis", "connection refused")));
        let mut store = MockIdempotencyStore::new();
        store
            .expect_refuse()
            .times(1)
            .returning(|_, _, _, r| Ok(IdempotentOutcome::Executed(r)));
        let script = Script::new(Admission::Refused("SOLD_OUT"));
        let written = run_fast(&script, store, fast).await;
        assert_eq!(written.executed(), Some(&Err("SOLD_OUT")));
        assert_eq!(script.calls(), ["reserve"]);
    }

    #[tokio::test]
    async fn a_refusal_found_while_preparing_is_stored_in_postgres_not_at_the_fast_path() {
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse().never();
        let mut script = Script::new(Admission::Reserved);
        script.prepared = Err("COUPON_NOT_APPLICABLE");
        let written = run_fast(&script, records(), fast).await;
        assert_eq!(written.executed(), Some(&Err("COUPON_NOT_APPLICABLE")));
    }

    #[tokio::test]
    async fn a_recorded_refusal_is_replayed_or_refuses_another_request_and_nothing_runs() {
        let record = |fingerprint: &str| Record {
            fingerprint: Fingerprint::new(fingerprint.into()),
            response: stored(409, "SOLD_OUT"),
        };
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse().never();

        let script = Script::new(Admission::Recorded(record("f")));
        let written = run_fast(&script, postgres_has(Ok(None)), fast).await;
        assert_eq!(written, Written::Replayed(stored(409, "SOLD_OUT")));
        assert_eq!(
            script.calls(),
            ["reserve"],
            "nothing runs, nothing is given back"
        );

        let script = Script::new(Admission::Recorded(record("another body")));
        let written = run_fast(&script, postgres_has(Ok(None)), MockFastRefusals::new()).await;
        assert_eq!(written, Written::KeyReused);
        assert_eq!(script.calls(), ["reserve"]);
    }

    /// An idempotency store whose record of the key is `found`; without
    /// one, the gate's record is written through and stored.
    fn postgres_has(found: Result<Option<Record>, ()>) -> MockIdempotencyStore {
        writing_through(found, IdempotentOutcome::Executed)
    }

    /// As [`postgres_has`], the write-through answering `outcome`.
    fn writing_through(
        found: Result<Option<Record>, ()>,
        outcome: fn(StoredResponse) -> IdempotentOutcome,
    ) -> MockIdempotencyStore {
        let mut store = MockIdempotencyStore::new();
        let write_through = matches!(found, Ok(None));
        store.expect_record().times(1).returning(move |user, key| {
            assert_eq!((user.get(), key.as_str()), (1, "k-1"), "the request's key");
            found
                .clone()
                .map_err(|()| Unavailable::new("postgres", "connection refused"))
        });
        store
            .expect_refuse()
            .times(usize::from(write_through))
            .returning(move |user, key, _, response| {
                assert_eq!((user.get(), key.as_str()), (1, "k-1"), "the request's key");
                assert_eq!(response, stored(409, "SOLD_OUT"), "the gate's record");
                Ok(outcome(response))
            });
        store
    }

    #[tokio::test]
    async fn a_recorded_refusal_gives_way_to_the_postgres_record_of_its_key() {
        // A gate step whose answer was lost (Redis hung) may have recorded a
        // refusal while its request went on without the gate and paid.
        let recorded = Record {
            fingerprint: Fingerprint::new("f".into()),
            response: stored(409, "SOLD_OUT"),
        };
        let paid = Record {
            fingerprint: Fingerprint::new("f".into()),
            response: stored(201, "7"),
        };
        let script = Script::new(Admission::Recorded(recorded.clone()));
        let written = run_fast(&script, postgres_has(Ok(Some(paid))), recording_nothing()).await;
        assert_eq!(written, Written::Replayed(stored(201, "7")));
        assert_eq!(script.calls(), ["reserve"], "nothing runs");

        let script = Script::new(Admission::Recorded(recorded.clone()));
        let written = run_fast(&script, postgres_has(Err(())), recording_nothing()).await;
        assert_eq!(
            written,
            Written::Replayed(stored(409, "SOLD_OUT")),
            "with Postgres down, the gate's record answers"
        );

        // Without a Postgres record, the gate's is written through (the
        // mock checks it is asked to), and answers...
        let script = Script::new(Admission::Recorded(recorded.clone()));
        let written = run_fast(&script, postgres_has(Ok(None)), recording_nothing()).await;
        assert_eq!(written, Written::Replayed(stored(409, "SOLD_OUT")));
        // ...unless the key's first request still runs in Postgres.
        let script = Script::new(Admission::Recorded(recorded));
        let store = writing_through(Ok(None), |_| IdempotentOutcome::InProgress);
        let written = run_fast(&script, store, recording_nothing()).await;
        assert_eq!(written, Written::InProgress);
        assert_eq!(script.calls(), ["reserve"], "nothing runs");
    }

    #[tokio::test]
    async fn a_recorded_refusal_whose_write_through_meets_a_record_is_answered_by_it() {
        let recorded = Record {
            fingerprint: Fingerprint::new("f".into()),
            response: stored(409, "SOLD_OUT"),
        };
        // The same request's record came meanwhile (another response).
        let script = Script::new(Admission::Recorded(recorded));
        let store = writing_through(Ok(None), |_| IdempotentOutcome::Replayed(stored(201, "7")));
        let written = run_fast(&script, store, recording_nothing()).await;
        assert_eq!(written, Written::Replayed(stored(201, "7")));
        assert_eq!(script.calls(), ["reserve"], "nothing runs");
    }

    /// A fast path that must not be asked.
    fn recording_nothing() -> MockFastRefusals {
        let mut fast = MockFastRefusals::new();
        fast.expect_refuse().never();
        fast
    }

    #[tokio::test]
    async fn a_gate_given_the_answers_records_its_refusal_itself_and_nothing_else_does() {
        let mut script = Script::new(Admission::Answered("B_SOLD_OUT"));
        script.gate_refusals = vec!["A_SOLD_OUT", "B_SOLD_OUT"];
        let written = run_fast(&script, untouched(), recording_nothing()).await;
        assert_eq!(
            *script.carried.lock().expect("lock"),
            Some(vec![stored(409, "A_SOLD_OUT"), stored(409, "B_SOLD_OUT")]),
            "the holder carries each refusal rendered as the request renders it"
        );
        assert_eq!(
            written,
            Written::Executed {
                result: Err("B_SOLD_OUT"),
                response: stored(409, "B_SOLD_OUT"),
            }
        );
        assert_eq!(
            script.calls(),
            ["reserve"],
            "nothing runs, nothing is given back"
        );
    }

    #[tokio::test]
    async fn answers_go_to_the_gate_only_with_a_fast_path_to_write_them_behind() {
        let mut script = Script::new(Admission::Reserved);
        script.gate_refusals = vec!["SOLD_OUT"];
        run(&script, records()).await;
        assert_eq!(*script.carried.lock().expect("lock"), None);

        let mut script = Script::new(Admission::Refused("SOLD_OUT"));
        script.gate_refusals = vec!["SOLD_OUT"];
        let written = run_fast(&script, untouched(), recording()).await;
        assert_eq!(
            *script.carried.lock().expect("lock"),
            Some(vec![stored(409, "SOLD_OUT")])
        );
        assert_eq!(
            written.executed(),
            Some(&Err("SOLD_OUT")),
            "a gate that could not record the answer leaves it to the fast path"
        );
    }
}
