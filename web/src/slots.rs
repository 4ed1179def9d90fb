//! Admission of PromQL queries, like Prometheus' `--query.max-concurrency`: at most that
//! many queries evaluate at once; the others wait for a slot in arrival order, each for
//! at most its own timeout, and are then refused with Prometheus' timeout error.
//!
//! Also holds what `/metrics` reports about queries: how many run and wait, and how
//! many were canceled because their client went away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::api::ApiError;

/// Queries evaluated at once when not configured (Prometheus' default).
pub const DEFAULT_MAX_CONCURRENCY: usize = 20;

/// The query slots of one server.
pub struct QuerySlots {
    /// One permit per query allowed to evaluate at once. Never closed. tokio's
    /// semaphore is fair: a released permit goes to the longest waiter. A permit is
    /// moved into the blocking task that evaluates, so it is returned when evaluation
    /// ends, not when the request's handler is dropped (a canceled query keeps its slot
    /// until the evaluator notices the cancellation).
    sem: Arc<Semaphore>,
    /// The number of permits `sem` was created with.
    max: usize,
    /// Requests inside [`QuerySlots::acquire`] waiting for a permit. Incremented and
    /// decremented by [`Waiting`], so a request dropped while waiting counts out.
    waiting: AtomicU64,
    /// Requests refused after waiting their whole timeout for a slot.
    queue_timeouts: AtomicU64,
    /// Evaluations stopped because their client went away.
    canceled: AtomicU64,
}

/// Counts a request as waiting while it exists.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl QuerySlots {
    /// `max` slots, at least one (zero would refuse every query after its timeout).
    pub fn new(max: usize) -> QuerySlots {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        QuerySlots {
            sem: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            canceled: AtomicU64::new(0),
        }
    }

    /// Queries allowed to evaluate at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Queries holding a slot (evaluating, or stopping after a cancellation).
    pub fn running(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits())
    }

    /// Queries waiting for a slot.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queries refused after waiting their timeout for a slot, since start.
    pub fn queue_timeouts(&self) -> u64 {
        self.queue_timeouts.load(Ordering::Relaxed)
    }

    /// Evaluations stopped because their client went away, since start.
    pub fn canceled(&self) -> u64 {
        self.canceled.load(Ordering::Relaxed)
    }

    /// Records an evaluation that stopped on its cancel flag.
    pub(crate) fn count_canceled(&self) {
        self.canceled.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits at most `timeout` for a slot. The slot is held until the permit is dropped.
    /// When none frees up in time, the answer is Prometheus' timeout error (503).
    pub async fn acquire(&self, timeout: Duration) -> Result<OwnedSemaphorePermit, ApiError> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(closed()),
        }
        let _waiting = Waiting::new(&self.waiting);
        match tokio::time::timeout(timeout, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::timeout(format!(
                    "query timed out in query queue: waited {timeout:?} for a free query slot \
                     (all {} in use, see --query.max-concurrency)",
                    self.max
                )))
            }
        }
    }
}

/// The semaphore is never closed; should that change, waiting queries get a 503.
fn closed() -> ApiError {
    ApiError::unavailable("query slots are closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_server_refuses_after_the_timeout_and_counts_the_waiter_out() {
        let slots = Arc::new(QuerySlots::new(1));
        let held = slots
            .acquire(Duration::from_secs(1))
            .await
            .expect("free slot");
        assert_eq!((slots.running(), slots.waiting()), (1, 0));
        let err = slots
            .acquire(Duration::from_millis(20))
            .await
            .expect_err("no slot");
        assert_eq!(err.status.as_u16(), 503);
        assert_eq!(err.error_type, "timeout");
        assert!(err.message.contains("free query slot"), "{}", err.message);
        assert_eq!((slots.waiting(), slots.queue_timeouts()), (0, 1));

        // A waiter gets the slot as soon as it is released.
        let s = slots.clone();
        let waiter = tokio::spawn(async move { s.acquire(Duration::from_secs(30)).await });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let p = waiter.await.expect("join").expect("slot after release");
        assert_eq!((slots.running(), slots.waiting()), (1, 0));
        drop(p);
        assert_eq!(slots.running(), 0);
    }

    #[test]
    fn zero_slots_means_one() {
        assert_eq!(QuerySlots::new(0).max(), 1);
    }
}
