//! The batch writer: one task that turns many small ledger writes into few
//! database transactions.
//!
//! Position actors send their decided rows here and wait for the answer
//! before any callback that depends on them. While one transaction is being
//! committed the next requests queue up; the writer then takes every queued
//! request (up to `batch_writes_max`) and commits them together. Under load a
//! batch therefore holds many transfers, and at low load a request waits for
//! no timer. Requests from one sender are applied in the order sent. Under
//! load, transactions start at most every `interval_min`, so that each
//! carries more ([`keep_interval`]).

use tokio::sync::{mpsc, oneshot};

use crate::held::HeldConnection;
use crate::ledger::{apply_in_transaction, ApplyError, LedgerWrite};
use crate::{Result, StorageError, Store};

/// Limits of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Requests merged into one transaction at most.
    pub batch_writes_max: usize,
    /// Requests waiting at most; senders wait for room beyond it.
    pub queue_capacity: usize,
    /// Time between the starts of two transactions at least.
    pub interval_min: std::time::Duration,
}

struct Request {
    write: LedgerWrite,
    done: oneshot::Sender<Result<()>>,
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    queue: mpsc::Sender<Request>,
}

impl BatchWriter {
    /// Starts the writer on the store's runtime.
    pub fn start(store: &Store, limits: WriterLimits) -> BatchWriter {
        assert!(limits.batch_writes_max > 0 && limits.queue_capacity > 0);
        let (queue, requests) = mpsc::channel(limits.queue_capacity);
        let conn = HeldConnection::new(store.writer_pool.clone(), store.backend);
        store.runtime.spawn(run(
            conn,
            requests,
            limits.batch_writes_max,
            limits.interval_min,
        ));
        BatchWriter { queue }
    }

    /// Makes `write` durable (together with whatever else is queued).
    pub async fn write(&self, write: LedgerWrite) -> Result<()> {
        if write.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Request { write, done })
            .await
            .map_err(|_| StorageError::RuntimeGone)?;
        answer.await.map_err(|_| StorageError::RuntimeGone)?
    }
}

fn answer_all(requests: impl Iterator<Item = Request>, outcome: impl Fn() -> Result<()>) {
    for request in requests {
        let _ = request.done.send(outcome());
    }
}

/// Moves whatever is queued now into `batch`, up to `max` (the batching
/// step of the writer and of the transfer loader).
pub(crate) fn take_queued<T>(requests: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// Longest wait for the senders of the previous batch to send again.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

/// Under load, waits briefly for as many requests as the previous batch had.
///
/// When a batch commits, each position actor that was in it gets its answer
/// and only then sends its next write; the first to do so would otherwise
/// start the next transaction alone, and the rest wait a whole transaction
/// more. Waiting at most [`GATHER_WAIT`] for the previous batch's number of
/// senders keeps them in one transaction. At low load the previous batch had
/// one request, so nothing waits.
async fn gather(requests: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, target: usize) {
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    while batch.len() < target {
        match tokio::time::timeout_at(deadline, requests.recv()).await {
            Ok(Some(request)) => {
                batch.push(request);
                take_queued(requests, batch, target);
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Waits until `interval_min` after the previous transaction's start, and
/// returns when this one starts.
///
/// Every transaction costs about the same whatever it holds: BEGIN and
/// COMMIT, the WAL frames of the pages every batch touches (the position
/// rows, the tails of the history tables and their indexes), an fsync, and
/// the hand-offs to the database and back. Under load the writer would start
/// the next transaction the moment the last one ended, so the faster it
/// wrote, the more, smaller transactions it wrote. A floor between starts
/// makes each transaction carry more: at 3,000 transfers/s on SQLite, 3 ms
/// cut the switch's CPU per transfer by about a seventh (docs/performance.md).
/// At low load the previous start is long past and nothing waits.
async fn keep_interval(
    last_start: Option<tokio::time::Instant>,
    interval_min: std::time::Duration,
) -> tokio::time::Instant {
    if let Some(floor) = last_start.map(|start| start + interval_min) {
        if tokio::time::Instant::now() < floor {
            tokio::time::sleep_until(floor).await;
        }
    }
    tokio::time::Instant::now()
}

/// Writes `write` in one transaction on the writer's connection.
///
/// A kept connection may have died while idle (a restarted server, a killed
/// connection), and the first statement is where that shows. Nothing was
/// written when a statement before COMMIT failed, so the batch is written
/// once more on a fresh connection before anyone is answered.
async fn apply(
    conn: &mut HeldConnection,
    write: &LedgerWrite,
) -> std::result::Result<(), ApplyError> {
    let kept = conn.holds();
    match apply_once(conn, write).await {
        // A busy database is not cured by a fresh connection: it would
        // only wait out the same lock again before anyone hears busy.
        Err(ApplyError::BeforeCommit(error)) if kept && !error.is_busy() => {
            tracing::warn!(%error, "ledger batch failed on a kept connection; writing it again on a fresh one");
            apply_once(conn, write).await
        }
        outcome => outcome,
    }
}

async fn apply_once(
    conn: &mut HeldConnection,
    write: &LedgerWrite,
) -> std::result::Result<(), ApplyError> {
    let pool = conn.pool().clone();
    let outcome = match conn.acquire().await {
        Ok(held) => apply_in_transaction(held, &pool, write).await,
        Err(error) => Err(ApplyError::BeforeCommit(error)),
    };
    match outcome {
        Ok(()) => conn.done(),
        Err(_) => conn.failed(),
    }
    outcome
}

async fn run(
    mut conn: HeldConnection,
    mut requests: mpsc::Receiver<Request>,
    batch_writes_max: usize,
    interval_min: std::time::Duration,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(batch_writes_max);
    let mut last_writes = 0;
    let mut last_start: Option<tokio::time::Instant> = None;
    while let Some(first) = conn.idle_until(requests.recv()).await {
        batch.push(first);
        last_start = Some(keep_interval(last_start, interval_min).await);
        take_queued(&mut requests, &mut batch, batch_writes_max);
        if batch.len() < last_writes.min(batch_writes_max) {
            gather(&mut requests, &mut batch, last_writes.min(batch_writes_max)).await;
        }
        last_writes = batch.len();
        // The rows are moved, not copied: should the batch fail, the
        // shapes give each request its own rows back.
        let mut merged = LedgerWrite::default();
        let mut shapes = Vec::with_capacity(batch.len());
        for request in &mut batch {
            let write = std::mem::take(&mut request.write);
            shapes.push(write.shape());
            merged.append(write);
        }
        let started = std::time::Instant::now();
        let outcome = apply(&mut conn, &merged).await;
        tracing::debug!(
            writes = batch.len(),
            changes = merged.changes.len(),
            transfers = merged.transfers.states.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "ledger batch"
        );
        match outcome {
            Ok(()) => answer_all(batch.drain(..), || Ok(())),
            Err(ApplyError::BeforeCommit(error)) if error.is_busy() => {
                // No connection was free in time and nothing was written:
                // every sender hears busy (2003, retry later). Writing the
                // requests one by one would only wait again.
                tracing::warn!(%error, writes = batch.len(), "ledger batch not written: the database is busy");
                let reason = error.to_string();
                answer_all(batch.drain(..), || Err(StorageError::Busy(reason.clone())));
            }
            Err(ApplyError::BeforeCommit(error)) if batch.len() > 1 => {
                // Nothing was written. Write each request alone, so that one
                // bad write fails only its own sender.
                tracing::warn!(%error, writes = batch.len(), "ledger batch failed; writing its requests one by one");
                for (request, shape) in batch.iter_mut().zip(&shapes).rev() {
                    request.write = merged.split_last(*shape);
                }
                assert_eq!(
                    merged,
                    LedgerWrite::default(),
                    "every row went back to its request"
                );
                for request in batch.drain(..) {
                    let outcome = apply(&mut conn, &request.write).await;
                    if let Err(error) = &outcome {
                        tracing::error!(%error, "ledger write failed");
                    }
                    let _ =
                        request
                            .done
                            .send(outcome.map_err(|e| {
                                StorageError::Invariant(format!("write failed: {e}"))
                            }));
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = batch.len(), "ledger batch failed");
                let reason = error.to_string();
                answer_all(batch.drain(..), || {
                    Err(StorageError::Invariant(format!(
                        "batch write failed: {reason}"
                    )))
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ledger::{AdminStateChange, NewAdminTransfer};
    use rust_decimal::Decimal;

    /// A writer with small limits, for tests.
    pub(crate) fn test_writer(store: &Store) -> BatchWriter {
        BatchWriter::start(
            store,
            WriterLimits {
                batch_writes_max: 100,
                queue_capacity: 100,
                interval_min: std::time::Duration::ZERO,
            },
        )
    }

    fn funds_in(id: &str) -> LedgerWrite {
        LedgerWrite {
            admin_transfers: vec![NewAdminTransfer {
                transfer_id: id.into(),
                account_id: 1,
                action: "recordFundsIn".into(),
                amount: Decimal::ONE,
                currency: "USD".into(),
                external_reference: "r".into(),
                reason: "r".into(),
                request_hash: "h".into(),
            }],
            admin_states: vec![AdminStateChange {
                transfer_id: id.into(),
                state: "COMMITTED".into(),
                reason: None,
            }],
            ..LedgerWrite::default()
        }
    }

    /// With no connection free in time a write is answered busy (the edge
    /// answers 2003) and nothing of it is written; once a connection is
    /// free the same write goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_database_is_answered_busy() {
        let (store, dir) =
            crate::scratch_store("writer-busy", crate::BUSY_ACQUIRE_TIMEOUT_MS).await;
        let writer = test_writer(&store);
        let only_connection = store.pool.acquire().await.expect("the connection");
        let error = writer
            .write(funds_in("busy"))
            .await
            .expect_err("no connection to write on");
        assert!(error.is_busy(), "{error}");
        drop(only_connection);
        assert!(store.admin_transfer("busy").await.expect("read").is_none());
        writer
            .write(funds_in("busy"))
            .await
            .expect("written once free");
        assert!(store.admin_transfer("busy").await.expect("read").is_some());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Under load a transaction starts no sooner than `interval_min` after
    /// the previous one, and the writes that arrive meanwhile go together in
    /// that next transaction; a write to an idle writer does not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_start_no_closer_than_the_interval() {
        let interval_min = std::time::Duration::from_millis(1_000);
        let (store, dir) = crate::scratch_store("writer-interval", 5_000).await;
        let writer = BatchWriter::start(
            &store,
            WriterLimits {
                batch_writes_max: 100,
                queue_capacity: 100,
                interval_min,
            },
        );
        let first = std::time::Instant::now();
        writer.write(funds_in("first")).await.expect("first");
        let idle_write = first.elapsed();
        let (second, third) = tokio::join!(
            writer.write(funds_in("second")),
            writer.write(funds_in("third"))
        );
        second.expect("second");
        third.expect("third");
        let both = first.elapsed();
        assert!(
            both >= interval_min,
            "the next transaction started {both:?} after the first"
        );
        // Both waited for the same next transaction: apart, the later one
        // would have ended a whole interval later still.
        assert!(both < 2 * interval_min, "{both:?}");
        // The first write found the writer idle and went straight in.
        assert!(idle_write < interval_min, "{idle_write:?}");
        tokio::time::sleep(interval_min).await;
        let idle = std::time::Instant::now();
        writer.write(funds_in("fourth")).await.expect("fourth");
        assert!(idle.elapsed() < interval_min, "{:?}", idle.elapsed());
        for id in ["first", "second", "third", "fourth"] {
            assert!(store.admin_transfer(id).await.expect("read").is_some());
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// One bad write in a batch fails only its own sender.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_write_fails_alone() {
        let (store, dir) = crate::scratch_store("writer", 5_000).await;
        let writer = test_writer(&store);
        writer.write(funds_in("first")).await.expect("first write");
        // Queue a good and a bad (duplicate id) write together.
        let (good, bad) = tokio::join!(
            writer.write(funds_in("second")),
            writer.write(funds_in("first"))
        );
        assert!(good.is_ok(), "{good:?}");
        assert!(bad.is_err());
        assert!(store
            .admin_transfer("second")
            .await
            .expect("read")
            .is_some());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
