//! Admission of new transfers at the edge: the one place that decides
//! whether a new prepare (or bulk) is taken or refused with 2003.
//!
//! Two bounds. `transfers_in_flight_max` caps the transfer actors alive at
//! once (memory). `overload_prepare_wait_ms` caps how long prepares queue:
//!
//! A prepare is answered 202 only once its reservation is durable, so
//! while the switch is offered more than it can clear, prepares queue and
//! each waits longer than the one before, until the payers' transfers
//! expire in the queue. Rather than accept work it will finish late, the
//! edge watches the prepares it is still answering: once `WAITING_MIN` of
//! them have each waited longer than `overload_prepare_wait_ms`, new
//! prepares are refused at once with 2003 (retry later) and nothing of
//! them is recorded. Fulfils, errors and the prepares already accepted
//! pass, so the switch completes what it accepted at the rate it can
//! sustain; as soon as fewer than `WAITING_MIN` have waited that long, new
//! ones are accepted again.
//!
//! Requests that start a new transaction (`GET /parties`, `POST /quotes`,
//! `/bulkQuotes`, `/transactionRequests`) are refused the same way at half
//! that wait, before any prepare is: in the end-to-end flow a transfer
//! refused after its lookup and quote wastes the work they took, and
//! refusing prepares alone did not help there because the lookups and
//! quotes kept the cores busy (docs/performance.md).
//!
//! The wait is measured, not a count, because how many waiting prepares
//! make a queue too long depends on how fast the machine is.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switch_actors::ErrorCode;

use crate::errors::ApiError;

/// Fewer prepares waiting too long are not a queue: a few stuck on their
/// own (one position's slow load, a lock held elsewhere) must not refuse
/// everyone.
pub const WAITING_MIN: usize = 16;

/// Why a new prepare was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    /// Prepares being answered.
    pub waiting: usize,
    /// How long the `WAITING_MIN`-th oldest of them has waited.
    pub waited: Duration,
}

/// Why new transfers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `transfers_in_flight_max` would be passed by `asked` more.
    InFlight {
        live: usize,
        asked: usize,
        max: usize,
    },
    Behind(Behind),
}

impl From<Behind> for Refusal {
    fn from(behind: Behind) -> Refusal {
        Refusal::Behind(behind)
    }
}

/// The answer to a refused request: 2003, HTTP 503, retry later.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let description = match refusal {
            Refusal::InFlight { live, asked, max } => format!(
                "{live} transfers in flight and {asked} more asked for, the limit is {max}; retry later"
            ),
            Refusal::Behind(behind) => format!(
                "the switch is behind: {WAITING_MIN} of the {} prepares being answered have waited {} ms or longer; retry later",
                behind.waiting,
                behind.waited.as_millis()
            ),
        };
        ApiError::new(ErrorCode::ServiceUnavailable, description)
    }
}

/// The transfers in flight and the prepares being answered, oldest first.
pub struct Overload {
    /// Live transfer actors (counted by the transfer directory).
    transfers_live: Arc<AtomicUsize>,
    in_flight_max: usize,
    /// `None`: never refuse for waiting (`overload_prepare_wait_ms` 0).
    wait_max: Option<Duration>,
    epoch: Instant,
    /// (microseconds since `epoch` at arrival, arrival number).
    waiting: Mutex<BTreeSet<(u64, u64)>>,
    arrivals: AtomicU64,
}

/// A prepare being answered; it stops counting when dropped (also when
/// the client went away and the handler was cancelled).
pub struct Waiting<'a> {
    overload: &'a Overload,
    key: (u64, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let removed = self.overload.lock().remove(&self.key);
        debug_assert!(removed, "a waiting prepare is counted once");
    }
}

impl Overload {
    pub fn new(
        transfers_live: Arc<AtomicUsize>,
        in_flight_max: usize,
        prepare_wait_max_ms: u64,
    ) -> Self {
        Overload {
            transfers_live,
            in_flight_max,
            wait_max: (prepare_wait_max_ms > 0).then(|| Duration::from_millis(prepare_wait_max_ms)),
            epoch: Instant::now(),
            waiting: Mutex::new(BTreeSet::new()),
            arrivals: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// `Some` when `WAITING_MIN` prepares have each waited over `wait_max`.
    fn behind_by(
        waiting: &BTreeSet<(u64, u64)>,
        now_us: u64,
        wait_max: Duration,
    ) -> Option<Behind> {
        let &(arrived_us, _) = waiting.iter().nth(WAITING_MIN - 1)?;
        let waited = Duration::from_micros(now_us.saturating_sub(arrived_us));
        (waited > wait_max).then_some(Behind {
            waiting: waiting.len(),
            waited,
        })
    }

    /// Transfers alive now.
    pub fn in_flight(&self) -> usize {
        self.transfers_live.load(Ordering::Relaxed)
    }

    /// Refused if `asked` more transfers would pass `transfers_in_flight_max`.
    fn room_for(&self, asked: usize) -> Result<(), Refusal> {
        let live = self.in_flight();
        match live + asked > self.in_flight_max {
            true => Err(Refusal::InFlight {
                live,
                asked,
                max: self.in_flight_max,
            }),
            false => Ok(()),
        }
    }

    /// Counts a new prepare as waiting, unless there is no room for it or
    /// the switch is behind. Transfers already in flight still finish.
    pub fn admit(&self) -> Result<Waiting<'_>, Refusal> {
        self.room_for(1)?;
        let now_us = self.now_us();
        let mut waiting = self.lock();
        if let Some(wait_max) = self.wait_max {
            if let Some(behind) = Self::behind_by(&waiting, now_us, wait_max) {
                return Err(behind.into());
            }
        }
        let key = (now_us, self.arrivals.fetch_add(1, Ordering::Relaxed));
        waiting.insert(key);
        Ok(Waiting {
            overload: self,
            key,
        })
    }

    /// A bulk of `lines` transfers: each line counts in flight, and none is
    /// taken while single prepares are refused for waiting too long.
    pub fn admit_bulk(&self, lines: usize) -> Result<(), Refusal> {
        self.room_for(lines)?;
        let Some(wait_max) = self.wait_max else {
            return Ok(());
        };
        match Self::behind_by(&self.lock(), self.now_us(), wait_max) {
            Some(behind) => Err(behind.into()),
            None => Ok(()),
        }
    }

    /// Whether a request that starts a new transaction is refused now: at
    /// half the prepares' bound, so that those already under way finish.
    pub fn admit_new_transaction(&self) -> Result<(), Refusal> {
        let Some(wait_max) = self.wait_max else {
            return Ok(());
        };
        match Self::behind_by(&self.lock(), self.now_us(), wait_max / 2) {
            Some(behind) => Err(behind.into()),
            None => Ok(()),
        }
    }

    /// Prepares being answered now.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No transfer alive, room for 1,000; prepares may wait `wait_ms`.
    fn bounds(wait_ms: u64) -> Overload {
        Overload::new(Arc::new(AtomicUsize::new(0)), 1_000, wait_ms)
    }

    #[test]
    fn transfers_beyond_the_in_flight_limit_are_refused() {
        let live = Arc::new(AtomicUsize::new(9));
        let overload = Overload::new(live.clone(), 10, 1_000);
        let one = overload.admit().expect("the tenth fits");
        assert_eq!(
            overload.admit_bulk(2).err(),
            Some(Refusal::InFlight {
                live: 9,
                asked: 2,
                max: 10
            })
        );
        live.store(10, Ordering::Relaxed);
        assert!(matches!(overload.admit(), Err(Refusal::InFlight { .. })));
        drop(one);
    }

    #[test]
    fn a_queue_older_than_the_bound_refuses_until_it_drains() {
        let overload = bounds(20);
        let queue: Vec<_> = (0..WAITING_MIN)
            .map(|_| overload.admit().expect("young queue"))
            .collect();
        assert_eq!(overload.waiting(), WAITING_MIN);
        std::thread::sleep(Duration::from_millis(40));
        let Err(Refusal::Behind(behind)) = overload.admit() else {
            panic!("the oldest waited 40 ms > 20 ms");
        };
        assert!(overload.admit_bulk(1).is_err());
        assert!(overload.admit_new_transaction().is_err());
        assert_eq!(behind.waiting, WAITING_MIN);
        assert!(behind.waited >= Duration::from_millis(40));
        assert_eq!(
            overload.waiting(),
            WAITING_MIN,
            "a refused prepare is not counted"
        );
        drop(queue);
        assert_eq!(overload.waiting(), 0);
        assert!(overload.admit().is_ok(), "the queue drained");
    }

    #[test]
    fn a_few_old_prepares_are_not_a_queue() {
        let overload = bounds(10);
        let stuck: Vec<_> = (0..WAITING_MIN - 1)
            .map(|_| overload.admit().expect("admitted"))
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        let young: Vec<_> = (0..WAITING_MIN * 2)
            .map(|_| overload.admit().expect("only 15 have waited long"))
            .collect();
        assert_eq!(overload.waiting(), WAITING_MIN * 3 - 1);
        drop((stuck, young));
    }

    #[test]
    fn new_transactions_are_refused_first() {
        let overload = bounds(100);
        let queue: Vec<_> = (0..WAITING_MIN)
            .map(|_| overload.admit().expect("young queue"))
            .collect();
        std::thread::sleep(Duration::from_millis(60));
        let Err(Refusal::Behind(behind)) = overload.admit_new_transaction() else {
            panic!("60 ms is over half of 100 ms");
        };
        assert!(behind.waited >= Duration::from_millis(60));
        assert!(overload.admit_bulk(1).is_ok(), "prepares still pass");
        drop(queue);
        assert!(overload.admit_new_transaction().is_ok());
    }

    #[test]
    fn zero_never_refuses() {
        let overload = bounds(0);
        let queue: Vec<_> = (0..WAITING_MIN * 2)
            .map(|_| overload.admit().expect("admitted"))
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        assert!(overload.admit().is_ok());
        assert!(overload.admit_new_transaction().is_ok());
        drop(queue);
    }
}
