//! One time budget per request for all its calls to backing services.
//!
//! Every adapter bounds each of its calls (a Redis command, a Postgres
//! operation) by its own timeout. A request makes several in a row — the
//! gate's script, then the write, then settling the reservation — so on a
//! hung network it could wait the sum: the fault runner's `silent-drop`
//! saw money writes answer 503 after 6–7 s with a 2 s dependency timeout.
//! A request run [`within`] a budget has a deadline, and every adapter
//! bounds its call by [`remaining`]: its own timeout or what is left of
//! the request's budget, whichever is shorter. So the request waits at
//! most its budget in all.
//!
//! This is a timeout budget on the monotonic clock, not business time (that
//! is [`Clock`](crate::clock::Clock)'s). The deadline travels with the
//! request's future: it is set while that future is polled and restored
//! after, so two requests interleaved on one thread never see each other's,
//! and a task the request spawns does not inherit it (such a task is
//! bounded where its result is awaited).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

thread_local! {
    /// The deadline of the future being polled on this thread, if any.
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How long a call bounded by `bound` may take now: `bound`, or what is
/// left of the current request's budget when that is shorter (zero once
/// it is spent).
pub fn remaining(bound: Duration) -> Duration {
    match CURRENT.get() {
        Some(deadline) => bound.min(deadline.saturating_duration_since(Instant::now())),
        None => bound,
    }
}

/// What is left of the current request's budget; `None` outside one.
pub fn left() -> Option<Duration> {
    CURRENT
        .get()
        .map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Runs `fut` with a deadline `budget` from now (or the enclosing one,
/// when that is sooner).
pub fn within<F: Future>(budget: Duration, fut: F) -> Within<F> {
    Within {
        budget,
        deadline: None,
        fut: Box::pin(fut),
    }
}

/// The future of [`within`].
pub struct Within<F> {
    budget: Duration,
    /// Fixed at the first poll, when the request starts its work.
    deadline: Option<Instant>,
    fut: Pin<Box<F>>,
}

impl<F> std::fmt::Debug for Within<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Within")
            .field("budget", &self.budget)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let deadline = *this.deadline.get_or_insert_with(|| {
            let own = Instant::now() + this.budget;
            CURRENT.get().map_or(own, |outer| outer.min(own))
        });
        let outer = CURRENT.replace(Some(deadline));
        // Restored even if the inner future panics.
        struct Restore(Option<Instant>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.set(self.0);
            }
        }
        let _restore = Restore(outer);
        this.fut.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a future that is ready at once, without a runtime.
    fn ready<T>(fut: impl Future<Output = T>) -> T {
        let mut fut = Box::pin(fut);
        let waker = std::task::Waker::noop();
        match fut.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the test future is ready at once"),
        }
    }

    #[test]
    fn outside_a_budget_a_call_keeps_its_own_bound() {
        assert_eq!(remaining(Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(left(), None);
    }

    #[test]
    fn inside_a_budget_a_call_gets_the_shorter_of_the_two_and_the_budget_ends_with_it() {
        let (short, long) = ready(within(Duration::from_millis(300), async {
            (
                remaining(Duration::from_secs(2)),
                remaining(Duration::from_millis(100)),
            )
        }));
        assert!(short <= Duration::from_millis(300), "{short:?}");
        assert_eq!(long, Duration::from_millis(100));
        assert_eq!(left(), None, "restored after the poll");
    }

    #[test]
    fn a_nested_budget_never_extends_the_outer_one() {
        let inner = ready(within(Duration::from_millis(200), async {
            within(Duration::from_secs(60), async { left() }).await
        }));
        assert!(inner.is_some_and(|l| l <= Duration::from_millis(200)));
    }

    #[test]
    fn a_spent_budget_leaves_nothing() {
        let left = ready(within(Duration::ZERO, async {
            remaining(Duration::from_secs(2))
        }));
        assert_eq!(left, Duration::ZERO);
    }
}
