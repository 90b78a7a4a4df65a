//! The batch writer: one task that turns many small ledger writes into few
//! database transactions.
//!
//! Position actors send their decided rows here and wait for the answer
//! before any callback that depends on them. While one transaction is being
//! committed the next requests queue up; the writer then takes every queued
//! request (up to `batch_writes_max`) and commits them together. Under load a
//! batch therefore holds many transfers, and at low load a request waits for
//! no timer. Requests from one sender are applied in the order sent.

use tokio::sync::{mpsc, oneshot};

use crate::ledger::{apply_in_transaction, LedgerWrite};
use crate::{Result, StorageError, Store};

/// Limits of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Requests merged into one transaction at most.
    pub batch_writes_max: usize,
    /// Requests waiting at most; senders wait for room beyond it.
    pub queue_capacity: usize,
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
        let pool = store.pool.clone();
        store
            .runtime
            .spawn(run(pool, requests, limits.batch_writes_max));
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

async fn run(pool: sqlx::AnyPool, mut requests: mpsc::Receiver<Request>, batch_writes_max: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(batch_writes_max);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < batch_writes_max {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut merged = LedgerWrite::default();
        let mut waiting = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            merged.append(request.write);
            waiting.push(request.done);
        }
        let outcome = apply_in_transaction(&pool, merged).await;
        if let Err(error) = &outcome {
            tracing::error!(%error, writes = waiting.len(), "ledger batch failed");
        }
        for done in waiting {
            let answer = match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(StorageError::Invariant(format!(
                    "batch write failed: {error}"
                ))),
            };
            let _ = done.send(answer);
        }
    }
}
