//! The transfer loader: batches the read every new transfer actor makes.
//!
//! A transfer actor starts by asking what the switch already knows about its
//! id. For a new prepare the answer is "nothing", and asking it one query at
//! a time cost a database round trip per transfer. The loader collects the
//! ids asked for while its previous query runs and asks for all of them in
//! one `SELECT … WHERE transfer_id IN (…)`; only ids that exist (duplicates,
//! or a fulfil reaching a restarted switch) are then loaded in full.
//!
//! On SQLite the lookup takes a turn on the single connection between write
//! batches: one turn per batch of ids, not one per transfer. (Read-only
//! connections beside the writer were tried: they kept SQLite from reusing
//! its WAL, which then grew without bound under load.)

use std::collections::HashSet;

use tokio::sync::{mpsc, oneshot};

use crate::held::HeldConnection;
use crate::transfers::{load, TransferRecord};
use crate::writer::take_queued;
use crate::{Result, StorageError, Store};

/// Limits of the loader.
#[derive(Debug, Clone, Copy)]
pub struct LoaderLimits {
    /// Ids asked for in one query at most.
    pub batch_ids_max: usize,
    /// Lookups waiting at most; callers wait for room beyond it.
    pub queue_capacity: usize,
}

struct Request {
    transfer_id: String,
    answer: oneshot::Sender<Result<Option<TransferRecord>>>,
}

/// Handle to the loader task. Cheap to clone.
#[derive(Clone)]
pub struct TransferLoader {
    queue: mpsc::Sender<Request>,
}

impl TransferLoader {
    /// Starts the loader on the store's runtime.
    pub fn start(store: &Store, limits: LoaderLimits) -> TransferLoader {
        assert!(limits.batch_ids_max > 0 && limits.queue_capacity > 0);
        let (queue, requests) = mpsc::channel(limits.queue_capacity);
        let conn = HeldConnection::new(store.pool.clone(), store.backend);
        store
            .runtime
            .spawn(run(conn, requests, limits.batch_ids_max));
        TransferLoader { queue }
    }

    /// What the switch knows about `transfer_id` (`None`: nothing).
    pub async fn load(&self, transfer_id: &str) -> Result<Option<TransferRecord>> {
        let (answer, answered) = oneshot::channel();
        let request = Request {
            transfer_id: transfer_id.to_string(),
            answer,
        };
        self.queue
            .send(request)
            .await
            .map_err(|_| StorageError::RuntimeGone)?;
        answered.await.map_err(|_| StorageError::RuntimeGone)?
    }
}

async fn run(
    mut conn: HeldConnection,
    mut requests: mpsc::Receiver<Request>,
    batch_ids_max: usize,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(batch_ids_max);
    while let Some(first) = conn.idle_until(requests.recv()).await {
        batch.push(first);
        take_queued(&mut requests, &mut batch, batch_ids_max);
        let ids: Vec<&str> = batch.iter().map(|r| r.transfer_id.as_str()).collect();
        match known_ids(&mut conn, &ids).await {
            Ok(known) => answer(conn.pool(), batch.drain(..), &known),
            Err(error) => {
                tracing::error!(%error, ids = batch.len(), "transfer lookup failed");
                // A busy database stays busy to each asker (the edge answers
                // 2003, retry later), not a lookup failure (2001).
                let busy = error.is_busy();
                let reason = error.to_string();
                for request in batch.drain(..) {
                    let failed = match busy {
                        true => StorageError::Busy(reason.clone()),
                        false => StorageError::Lookup(reason.clone()),
                    };
                    let _ = request.answer.send(Err(failed));
                }
            }
        }
    }
}

/// Answers unknown ids at once; loads the known ones in full, each on its
/// own task so that a slow one does not hold up the next batch.
fn answer(pool: &sqlx::AnyPool, requests: impl Iterator<Item = Request>, known: &HashSet<String>) {
    for request in requests {
        if !known.contains(&request.transfer_id) {
            let _ = request.answer.send(Ok(None));
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let loaded = load(&pool, request.transfer_id).await;
            let _ = request.answer.send(loaded);
        });
    }
}

/// Which of `ids` have a transfer row.
///
/// A lookup only reads, so one that failed is asked once more on a fresh
/// connection: the kept one may have died while idle (a restarted or
/// failed-over server, a killed connection), and the first query is where
/// that shows.
async fn known_ids(conn: &mut HeldConnection, ids: &[&str]) -> Result<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    match seqs_on(conn, ids).await {
        Ok(known) => Ok(known),
        Err(error) if error.is_busy() => Err(error),
        Err(error) => {
            tracing::debug!(%error, "transfer lookup failed; asking again on a fresh connection");
            seqs_on(conn, ids).await
        }
    }
}

async fn seqs_on(conn: &mut HeldConnection, ids: &[&str]) -> Result<HashSet<String>> {
    let seqs = match conn.acquire().await {
        Ok(held) => crate::transfers::seqs_of(held, ids).await,
        Err(error) => Err(error),
    };
    match seqs {
        Ok(seqs) => {
            conn.done();
            Ok(seqs.into_keys().collect())
        }
        Err(error) => {
            conn.failed();
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerWrite;
    use crate::transfers::{test_transfer, TransferStateChange, TransferWrite};

    fn test_loader(store: &Store) -> TransferLoader {
        TransferLoader::start(
            store,
            LoaderLimits {
                batch_ids_max: 8,
                queue_capacity: 8,
            },
        )
    }

    fn prepare(id: &str) -> LedgerWrite {
        LedgerWrite {
            transfers: TransferWrite {
                transfers: vec![std::sync::Arc::new(test_transfer(id))],
                states: vec![TransferStateChange {
                    transfer_id: id.into(),
                    state: "RESERVED".into(),
                    reason: None,
                }],
                ..TransferWrite::default()
            },
            ..LedgerWrite::default()
        }
    }

    /// With no connection free in time a lookup is answered busy (the
    /// edge answers 2003), not as a failed lookup (2001).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_database_is_answered_busy() {
        let (store, dir) =
            crate::scratch_store("loader-busy", crate::BUSY_ACQUIRE_TIMEOUT_MS).await;
        let loader = test_loader(&store);
        let only_connection = store.pool.acquire().await.expect("the connection");
        let error = loader.load("any").await.expect_err("no connection");
        assert!(error.is_busy(), "{error}");
        drop(only_connection);
        assert!(loader.load("any").await.expect("load once free").is_none());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Lookups asked for together share one query (three ids, padded to
    /// four); a known id comes back in full, unknown ones as nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_lookups_tell_known_from_unknown() {
        let (store, dir) = crate::scratch_store("loader", 5_000).await;
        let writer = crate::writer::tests::test_writer(&store);
        writer.write(prepare("known")).await.expect("write");
        let loader = test_loader(&store);
        let (known, first, second) = tokio::join!(
            loader.load("known"),
            loader.load("unknown-1"),
            loader.load("unknown-2")
        );
        let known = known.expect("load").expect("the known transfer");
        assert_eq!(known.transfer.payer_fsp, "payer");
        assert_eq!(known.state, "RESERVED");
        assert!(first.expect("load").is_none());
        assert!(second.expect("load").is_none());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
