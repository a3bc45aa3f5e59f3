//! Idempotent money writes, the way Stripe's API does them.
//!
//! A client sends an `Idempotency-Key` with a write. The first request with a
//! key runs, and its response (success or business error) is stored in the
//! same transaction as its effect. A later request with the same key and the
//! same body gets the stored response again, and nothing runs twice. The same
//! key with another body is refused, and so is a second request while the
//! first one still runs. A failure of a backing service stores nothing, so a
//! retry runs again. `docs/idempotency.md` tells the whole story.
//!
//! The response is stored as the exact bytes sent, so a replay is
//! byte-identical. The rendering function that makes those bytes comes from
//! the edge and runs inside the store's transaction: the store sees only
//! opaque bytes, never HTTP types.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::identity::UserId;

/// A client's idempotency key: 1..=128 visible ASCII characters, scoped to
/// the user who sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 1 to 128 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// [`InvalidIdempotencyKey`] when empty, too long, or holding anything but
    /// visible ASCII (no spaces, no control characters).
    pub fn parse(raw: &str) -> Result<Self, InvalidIdempotencyKey> {
        let ok =
            (1..=Self::MAX_LEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A digest of what a request asks for (method, path and canonical body), so
/// that a reused key with another request is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Wraps a digest computed by the edge (hex SHA-256 there).
    pub fn new(digest: String) -> Self {
        Self(digest)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A response exactly as it was first sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Turns the outcome of an operation into the response to send and store.
/// Runs inside the store's transaction, so it must be pure and quick.
pub type Render<T, E> = Arc<dyn Fn(&Result<T, E>) -> StoredResponse + Send + Sync>;

/// A write that must take effect at most once per key.
pub struct IdempotentRequest<T, E> {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub render: Render<T, E>,
}

impl<T, E> Clone for IdempotentRequest<T, E> {
    fn clone(&self) -> Self {
        Self {
            user_id: self.user_id,
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            render: Arc::clone(&self.render),
        }
    }
}

impl<T, E> IdempotentRequest<T, E> {
    /// The response for `result`, as it is sent and stored.
    pub fn render(&self, result: &Result<T, E>) -> StoredResponse {
        (self.render)(result)
    }
}

impl<T, E> fmt::Debug for IdempotentRequest<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentRequest")
            .field("user_id", &self.user_id)
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What became of a keyed write: the one outcome every keyed write (charge,
/// order, investment) returns, from the store through the use case to the
/// edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T, E> {
    /// It ran now: the effect committed (`Ok`) or the refusal was stored
    /// (`Err`), together with `response` under the key.
    Executed {
        result: Result<T, E>,
        response: StoredResponse,
    },
    /// It ran before with the same request: here is the same response again.
    Replayed(StoredResponse),
    /// The key was used before with another request.
    KeyReused,
    /// The first request with this key is still running.
    InProgress,
}

impl<T, E> Written<T, E> {
    /// The typed outcome of a key's record: `executed` is what ran now when
    /// the record was written now.
    pub fn from_record(record: IdempotentOutcome, executed: Result<T, E>) -> Self {
        match record {
            IdempotentOutcome::Executed(response) => Self::Executed {
                result: executed,
                response,
            },
            IdempotentOutcome::Replayed(response) => Self::Replayed(response),
            IdempotentOutcome::KeyReused => Self::KeyReused,
            IdempotentOutcome::InProgress => Self::InProgress,
        }
    }

    /// The answer of a key that already has a record (or a running request),
    /// when nothing ran now.
    pub fn answered(record: IdempotentOutcome) -> Option<Self> {
        match record {
            IdempotentOutcome::Executed(_) => None,
            IdempotentOutcome::Replayed(response) => Some(Self::Replayed(response)),
            IdempotentOutcome::KeyReused => Some(Self::KeyReused),
            IdempotentOutcome::InProgress => Some(Self::InProgress),
        }
    }

    /// The result of what ran now, if anything ran.
    pub fn executed(&self) -> Option<&Result<T, E>> {
        match self {
            Self::Executed { result, .. } => Some(result),
            _ => None,
        }
    }

    /// Whether the write's effect committed now.
    pub fn committed(&self) -> bool {
        matches!(self.executed(), Some(Ok(_)))
    }

    /// The response to send: the stored bytes of an executed or replayed
    /// write, `None` for a reused key or a key in progress.
    pub fn response(&self) -> Option<&StoredResponse> {
        match self {
            Self::Executed { response, .. } | Self::Replayed(response) => Some(response),
            Self::KeyReused | Self::InProgress => None,
        }
    }
}

/// What a key's record says, in bytes: what the idempotency store answers
/// for a refusal it stores or a key it looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentOutcome {
    /// It ran now (its effect, or its business refusal, is committed with this response).
    Executed(StoredResponse),
    /// It ran before with the same request: here is the same response again.
    Replayed(StoredResponse),
    /// The key was used before with another request.
    KeyReused,
    /// The first request with this key is still running.
    InProgress,
}

/// A key's record as a fast store keeps it: the request it answered (its
/// fingerprint) and the response sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: Fingerprint,
    pub response: StoredResponse,
}

impl Record {
    /// What the record answers a request with `fingerprint`: its response
    /// again for the same request, [`IdempotentOutcome::KeyReused`] for
    /// another. Never `Executed`: nothing runs now.
    pub fn answer(self, fingerprint: &Fingerprint) -> IdempotentOutcome {
        if self.fingerprint == *fingerprint {
            IdempotentOutcome::Replayed(self.response)
        } else {
            IdempotentOutcome::KeyReused
        }
    }
}

/// The idempotency records themselves, for refusals that are decided before
/// any effect runs (an amount outside the limits, say): they are stored and
/// replayed like any other answer under the key.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Stores `response` under the key unless the key already has an answer
    /// (then [`IdempotentOutcome::Replayed`] or [`IdempotentOutcome::KeyReused`])
    /// or is in progress ([`IdempotentOutcome::InProgress`]).
    ///
    /// # Errors
    /// [`Unavailable`](crate::error::Unavailable) when the store fails; nothing is stored.
    async fn refuse(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        response: StoredResponse,
    ) -> Result<IdempotentOutcome, crate::error::Unavailable>;

    /// The key's record, while it answers the key (younger than the
    /// retention); `None` when there is none, or while the key's first
    /// request is still running.
    ///
    /// # Errors
    /// [`Unavailable`](crate::error::Unavailable) when the store fails.
    async fn record(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Record>, crate::error::Unavailable>;
}

/// Refusals a gate decided before any effect (`OUT_OF_STOCK`, `SOLD_OUT`,
/// `AMOUNT_EXCEEDS_REMAINING`): recorded first in a fast store that the
/// gate reads in the same step as it reserves, and written to the
/// idempotency records behind, in batches (`docs/idempotency.md`). A
/// sale's refusals come by the thousand; this keeps them off Postgres'
/// hot path.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait FastRefusals: Send + Sync {
    /// Records `response` under the key, queues it for the idempotency
    /// records and answers once they hold it: [`IdempotentOutcome::Executed`],
    /// or, when they had another record of the key, that record's answer
    /// ([`IdempotentOutcome::Replayed`] for the same fingerprint,
    /// [`IdempotentOutcome::KeyReused`]). Never `InProgress`.
    ///
    /// # Errors
    /// [`Unavailable`](crate::error::Unavailable) when the refusal is not
    /// known to be in the idempotency records: it could not be recorded and
    /// queued (the fast store is down, the queue is full, the response is
    /// a 5xx, the records failed lately), the key had a record here
    /// already (another copy's, perhaps not yet in the records), or its
    /// write failed or did not land in time (it stays queued). The caller
    /// stores the refusal with [`IdempotencyStore::refuse`] itself, which
    /// decides the key.
    async fn refuse(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        response: StoredResponse,
    ) -> Result<IdempotentOutcome, crate::error::Unavailable>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_128() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse("order-2026-11-23_#1!~").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        assert_eq!(IdempotencyKey::parse(""), Err(InvalidIdempotencyKey));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(129)),
            Err(InvalidIdempotencyKey)
        );
        assert_eq!(
            IdempotencyKey::parse("has space"),
            Err(InvalidIdempotencyKey)
        );
        assert_eq!(IdempotencyKey::parse("tab\t"), Err(InvalidIdempotencyKey));
        assert_eq!(IdempotencyKey::parse("키"), Err(InvalidIdempotencyKey));
    }

    #[test]
    fn a_record_replays_its_own_request_and_refuses_another() {
        let record = Record {
            fingerprint: Fingerprint::new("f1".into()),
            response: StoredResponse {
                status: 409,
                content_type: "application/problem+json".into(),
                body: b"{}".to_vec(),
            },
        };
        assert_eq!(
            record.clone().answer(&Fingerprint::new("f1".into())),
            IdempotentOutcome::Replayed(record.response.clone())
        );
        assert_eq!(
            record.answer(&Fingerprint::new("f2".into())),
            IdempotentOutcome::KeyReused
        );
    }
}
