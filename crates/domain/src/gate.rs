//! The vocabulary every gate shares: the stock gate in front of orders, the
//! invest gate in front of investments and the issue gate in front of coupon
//! issue.
//!
//! A gate is a fast path (Redis counters) that refuses the late majority of
//! a rush without a Postgres transaction. Postgres stays the final guard, so
//! a gate may err towards admitting, never towards refusing what Postgres
//! would take. Each gate has the same two verbs — `reserve` and `release` —
//! plus `forget` (drop what it knows, so it is rebuilt from Postgres), and
//! answers `reserve` with one [`Admission`].
//!
//! A reservation is a lease: it lasts a few seconds unless the write
//! `confirm`s it after its commit (the units stay taken) or `release`s it
//! (they come back). A lease nobody settled — its instance was killed
//! between reserving and settling — is given back by the gate itself once
//! it expires, so a dead instance's reservations refuse nothing for longer
//! than the lease. A write slower than its lease has its units given back
//! early, which errs towards admitting, as a gate may.
//!
//! A reservation is made for a [`Holder`], the request's user and key. The
//! gate marks the holder in the same atomic step, so a retry of the same
//! request (a double click, a client's timeout retry, the same key on
//! another instance) is recognised as [`Admission::Repeated`] instead of
//! being refused because its own first copy holds what is left. A keyed
//! holder whose refusal the gate recorded (see
//! [`FastRefusals`](crate::idempotency::FastRefusals)) is answered from that
//! record in the same step, [`Admission::Recorded`], before anything else.
//! A keyed holder may carry the answers to the refusals the gate can give
//! it ([`RefusalAnswers`]); the gate then records the one it gives in the
//! same step as it refuses ([`Admission::Answered`]), so a sale's refusal
//! costs the gate one step, not two.

use crate::idempotency::{Fingerprint, IdempotencyKey, Record, StoredResponse};
use crate::identity::UserId;

/// Who a reservation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    pub user_id: UserId,
    /// The request's idempotency key; `None` for a write that is not keyed
    /// (coupon issue), whose holder is the user alone.
    pub key: Option<&'a IdempotencyKey>,
    /// What to record under the key if the gate refuses; `None`: the
    /// caller records a refusal itself.
    pub answers: Option<&'a RefusalAnswers<'a>>,
}

impl<'a> Holder<'a> {
    /// The holder of a keyed write.
    pub fn keyed(user_id: UserId, key: &'a IdempotencyKey) -> Self {
        Self {
            user_id,
            key: Some(key),
            answers: None,
        }
    }

    /// The holder of a write that is one per user (coupon issue).
    pub fn user(user_id: UserId) -> Self {
        Self {
            user_id,
            key: None,
            answers: None,
        }
    }

    /// The same holder, carrying the answers a gate records if it refuses.
    /// Ignored for a holder without a key.
    #[must_use]
    pub fn answering(self, answers: Option<&'a RefusalAnswers<'a>>) -> Self {
        Self {
            answers: answers.filter(|_| self.key.is_some()),
            ..self
        }
    }
}

/// The answers a gate records under a keyed holder's key when it refuses
/// it, in the same atomic step as the refusal: the request's fingerprint,
/// and the response to each refusal the gate may give, one per item it
/// counts, in the order of the items (`responses[i]` answers "item `i` is
/// short"). A gate that cannot record them (its queue for the idempotency
/// records is full, the counts do not match) refuses with
/// [`Admission::Refused`] and the caller records the refusal itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalAnswers<'a> {
    pub fingerprint: &'a Fingerprint,
    pub responses: Vec<StoredResponse>,
}

/// What a gate answered to `reserve`. `R` is what a refusal tells: the
/// product that is sold out, the amount that remains, the coupon refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<R> {
    /// Reserved for the holder; released again unless the write commits.
    Reserved,
    /// Refused without a transaction; nothing was reserved.
    Refused(R),
    /// Refused as [`Admission::Refused`], and the response the holder
    /// carried for this refusal ([`RefusalAnswers`]) is recorded under its
    /// key, as [`FastRefusals`](crate::idempotency::FastRefusals) records:
    /// the write is answered with that response, nothing else to record.
    Answered(R),
    /// The gate cannot decide (it does not know the item, or another
    /// instance is rebuilding it): nothing was reserved, Postgres decides.
    /// The holder is marked all the same, so its copies are recognised.
    Bypass,
    /// The holder came through a moment ago: this is a copy of a request in
    /// flight or just answered. Nothing was reserved and it is never
    /// refused by the gate; the store answers it under the key's lock.
    Repeated,
    /// The holder's key has a refusal recorded at the fast path, perhaps
    /// not yet written to Postgres: nothing was reserved, nothing may run,
    /// and the write is answered from the record (its replay, or a reused
    /// key). Checked before the holder's mark and before a bypass.
    Recorded(Record),
}

impl<R> Admission<R> {
    /// The same decision with the refusal translated.
    pub fn map_refusal<S>(self, f: impl FnOnce(R) -> S) -> Admission<S> {
        match self {
            Self::Reserved => Admission::Reserved,
            Self::Refused(r) => Admission::Refused(f(r)),
            Self::Answered(r) => Admission::Answered(f(r)),
            Self::Bypass => Admission::Bypass,
            Self::Repeated => Admission::Repeated,
            Self::Recorded(record) => Admission::Recorded(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_translated_and_nothing_else_changes() {
        assert_eq!(
            Admission::Refused(3).map_refusal(|n| n * 2),
            Admission::Refused(6)
        );
        assert_eq!(
            Admission::<i32>::Repeated.map_refusal(|n| n * 2),
            Admission::Repeated
        );
        assert_eq!(
            Admission::<i32>::Reserved.map_refusal(|n| n * 2),
            Admission::Reserved
        );
    }
}
