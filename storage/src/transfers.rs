//! Transfers as recorded: the prepare, the insert-only state history, the
//! fulfilment, errors and the hashes used for duplicate detection.

use rust_decimal::Decimal;
use sqlx::{Any, AnyPool, Transaction};

use std::collections::{BTreeSet, HashMap};

use crate::{col, from_units, padded_to_power_of_two, to_units, Result, StorageError, Store};

/// A prepare as it is stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewTransfer {
    pub transfer_id: String,
    pub payer_fsp: String,
    pub payee_fsp: String,
    pub amount: Decimal,
    pub currency: String,
    pub condition: String,
    pub expiration: String,
    pub expiration_ms: i64,
    pub ilp_packet: String,
    pub prepare_hash: String,
    pub content_version: String,
    /// The bulk this transfer is a line of, if any.
    pub bulk_transfer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferStateChange {
    pub transfer_id: String,
    pub state: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewFulfilment {
    pub transfer_id: String,
    pub fulfilment: String,
    pub completed_timestamp: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewTransferError {
    pub transfer_id: String,
    pub error_code: String,
    pub error_description: String,
}

/// Hash of a payee message (`FULFIL` or `ERROR`) for duplicate detection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MessageHash {
    pub transfer_id: String,
    pub kind: String,
    pub hash: String,
}

/// A prepare of 1 USD from `payer` to `payee`, for tests.
#[cfg(test)]
pub(crate) fn test_transfer(id: &str) -> NewTransfer {
    NewTransfer {
        transfer_id: id.into(),
        payer_fsp: "payer".into(),
        payee_fsp: "payee".into(),
        amount: Decimal::ONE,
        currency: "USD".into(),
        condition: "c".into(),
        expiration: "2030-01-01T00:00:00.000Z".into(),
        expiration_ms: 1_893_456_000_000,
        ilp_packet: "p".into(),
        prepare_hash: "h".into(),
        content_version: "1.1".into(),
        bulk_transfer_id: None,
    }
}

/// Everything the switch knows about one transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRecord {
    pub transfer: NewTransfer,
    pub state: String,
    pub state_reason: Option<String>,
    pub fulfilment: Option<String>,
    pub completed_timestamp: Option<String>,
    pub settlement_window_id: Option<i64>,
    pub fulfil_hash: Option<String>,
    pub error_hash: Option<String>,
    pub last_error: Option<(String, String)>,
}

/// The transfer rows of one write batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferWrite {
    /// Shared with the transfer's actor, which keeps the prepare it wrote.
    pub transfers: Vec<std::sync::Arc<NewTransfer>>,
    pub states: Vec<TransferStateChange>,
    pub fulfilments: Vec<NewFulfilment>,
    pub errors: Vec<NewTransferError>,
    pub hashes: Vec<MessageHash>,
}

impl TransferWrite {
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.states.is_empty()
            && self.fulfilments.is_empty()
            && self.errors.is_empty()
            && self.hashes.is_empty()
    }

    pub fn append(&mut self, other: TransferWrite) {
        self.transfers.extend(other.transfers);
        self.states.extend(other.states);
        self.fulfilments.extend(other.fulfilments);
        self.errors.extend(other.errors);
        self.hashes.extend(other.hashes);
    }
}

/// Rows per multi-row INSERT.
const INSERT_ROWS_MAX: usize = 200;

/// Transfer ids looked up in one `IN (…)` at most.
const SEQ_LOOKUP_MAX: usize = 512;

/// The sequence numbers (`transfer_seq`) of the given transfer ids that
/// have a transfer row, in as few queries as `SEQ_LOOKUP_MAX` allows.
///
/// Each id list is padded (repeating its last id) to a power of two, so the
/// database sees a handful of statement shapes and its prepared statements
/// stay cached instead of being prepared afresh for every batch size.
pub(crate) async fn seqs_of(
    conn: &mut sqlx::AnyConnection,
    ids: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut seqs = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(SEQ_LOOKUP_MAX) {
        let ids = padded_to_power_of_two(chunk);
        let sql = format!(
            "SELECT transfer_id, transfer_seq FROM transfer WHERE transfer_id IN ({})",
            vec!["?"; ids.clone().count()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            seqs.insert(col(&row, "transfer_id")?, col(&row, "transfer_seq")?);
        }
    }
    Ok(seqs)
}

/// The sequence number of a transfer that a history row of this batch
/// belongs to. Every such transfer has a row (written earlier or in this
/// batch), so a miss is a broken invariant, not bad input.
fn seq_in(seqs: &HashMap<String, i64>, transfer_id: &str) -> Result<i64> {
    seqs.get(transfer_id).copied().ok_or_else(|| {
        StorageError::Invariant(format!("history row for unknown transfer {transfer_id}"))
    })
}

/// The transfers that a batch's history rows name, each once.
fn history_ids(write: &TransferWrite) -> Vec<&str> {
    let ids: BTreeSet<&str> = write
        .states
        .iter()
        .map(|s| s.transfer_id.as_str())
        .chain(write.fulfilments.iter().map(|f| f.transfer_id.as_str()))
        .chain(write.errors.iter().map(|e| e.transfer_id.as_str()))
        .chain(write.hashes.iter().map(|h| h.transfer_id.as_str()))
        .collect();
    ids.into_iter().collect()
}

fn placeholders(row: &str, rows: usize) -> String {
    vec![row; rows].join(", ")
}

/// The open settlement window, locked until the caller's transaction ends.
///
/// Every commit joins the window that is open when its batch commits. The
/// UPDATE takes the row lock that a window close also takes, so a batch
/// either commits wholly before a close (its transfers are in the closed
/// window's content) or waits and joins the next window.
///
/// One statement, one round trip per commit batch: SQLite returns the id
/// (`RETURNING`); MariaDB has no `UPDATE … RETURNING`, so the id comes back
/// as the statement's last-insert id (`LAST_INSERT_ID(expr)`).
pub(crate) async fn lock_open_window(tx: &mut Transaction<'_, Any>) -> Result<i64> {
    if crate::on_sqlite(tx) {
        return col(
            &sqlx::query(
                "UPDATE settlement_window_open SET commit_batches = commit_batches + 1 WHERE singleton = 1 \
                 RETURNING settlement_window_id",
            )
            .fetch_one(&mut **tx)
            .await?,
            "settlement_window_id",
        );
    }
    let result = sqlx::query(
        "UPDATE settlement_window_open SET commit_batches = commit_batches + 1, \
         settlement_window_id = LAST_INSERT_ID(settlement_window_id) WHERE singleton = 1",
    )
    .execute(&mut **tx)
    .await?;
    match result.last_insert_id() {
        Some(window) if window > 0 && result.rows_affected() == 1 => Ok(window),
        _ => Err(StorageError::Invariant(
            "no open settlement window row".to_string(),
        )),
    }
}

/// Writes the transfer rows of a batch inside the caller's transaction.
pub(crate) async fn write_transfer_rows(
    tx: &mut Transaction<'_, Any>,
    write: &TransferWrite,
    now: &str,
) -> Result<()> {
    for chunk in write.transfers.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO transfer (transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition, expiration, expiration_ms, \
             ilp_packet, prepare_hash, content_version, bulk_transfer_id, created_date) VALUES {}",
            placeholders("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            query = query
                .bind(t.transfer_id.clone())
                .bind(t.payer_fsp.clone())
                .bind(t.payee_fsp.clone())
                .bind(to_units(t.amount)?)
                .bind(t.currency.clone())
                .bind(t.condition.clone())
                .bind(t.expiration.clone())
                .bind(t.expiration_ms)
                .bind(t.ilp_packet.clone())
                .bind(t.prepare_hash.clone())
                .bind(t.content_version.clone())
                .bind(t.bulk_transfer_id.clone())
                .bind(now.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    // One lookup for the whole batch: a subquery per row cost ~100 µs a row
    // on MariaDB, a multi-row IN ~15 µs.
    let seqs = seqs_of(tx, &history_ids(write)).await?;
    for chunk in write.states.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO transfer_state_change (transfer_seq, transfer_id, state, reason, created_date) VALUES {}",
            placeholders("(?, ?, ?, ?, ?)", chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in chunk {
            query = query
                .bind(seq_in(&seqs, &s.transfer_id)?)
                .bind(s.transfer_id.clone())
                .bind(s.state.clone())
                .bind(s.reason.clone())
                .bind(now.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    if !write.fulfilments.is_empty() {
        let window = lock_open_window(tx).await?;
        for chunk in write.fulfilments.chunks(INSERT_ROWS_MAX) {
            let sql = format!(
                "INSERT INTO transfer_fulfilment (transfer_seq, transfer_id, ilp_fulfilment, completed_timestamp, settlement_window_id, created_date) VALUES {}",
                placeholders("(?, ?, ?, ?, ?, ?)", chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for f in chunk {
                query = query
                    .bind(seq_in(&seqs, &f.transfer_id)?)
                    .bind(f.transfer_id.clone())
                    .bind(f.fulfilment.clone())
                    .bind(f.completed_timestamp.clone())
                    .bind(window)
                    .bind(now.to_string());
            }
            query.execute(&mut **tx).await?;
        }
    }
    for chunk in write.errors.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO transfer_error (transfer_seq, transfer_id, error_code, error_description, created_date) VALUES {}",
            placeholders("(?, ?, ?, ?, ?)", chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(seq_in(&seqs, &e.transfer_id)?)
                .bind(e.transfer_id.clone())
                .bind(e.error_code.clone())
                .bind(truncate(&e.error_description, ERROR_DESCRIPTION_MAX))
                .bind(now.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    for chunk in write.hashes.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO transfer_duplicate_check (transfer_seq, transfer_id, kind, hash, created_date) VALUES {}",
            placeholders("(?, ?, ?, ?, ?)", chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for h in chunk {
            query = query
                .bind(seq_in(&seqs, &h.transfer_id)?)
                .bind(h.transfer_id.clone())
                .bind(h.kind.clone())
                .bind(h.hash.clone())
                .bind(now.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Bytes of an error description kept (the column's width).
pub(crate) const ERROR_DESCRIPTION_MAX: usize = 1024;

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

pub(crate) async fn load(pool: &AnyPool, transfer_id: String) -> Result<Option<TransferRecord>> {
    let row = sqlx::query(
        "SELECT transfer_seq, transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition, expiration, expiration_ms, ilp_packet, \
         prepare_hash, content_version, bulk_transfer_id FROM transfer WHERE transfer_id = ?",
    )
    .bind(transfer_id.clone())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let seq: i64 = col(&row, "transfer_seq")?;
    let transfer = NewTransfer {
        transfer_id: col(&row, "transfer_id")?,
        payer_fsp: col(&row, "payer_fsp")?,
        payee_fsp: col(&row, "payee_fsp")?,
        amount: from_units(col(&row, "amount")?),
        currency: col(&row, "currency_id")?,
        condition: col(&row, "ilp_condition")?,
        expiration: col(&row, "expiration")?,
        expiration_ms: col(&row, "expiration_ms")?,
        ilp_packet: col(&row, "ilp_packet")?,
        prepare_hash: col(&row, "prepare_hash")?,
        content_version: col(&row, "content_version")?,
        bulk_transfer_id: col(&row, "bulk_transfer_id")?,
    };
    let state = sqlx::query(
        "SELECT state, reason FROM transfer_state_change WHERE transfer_seq = ? ORDER BY transfer_state_change_id DESC LIMIT 1",
    )
    .bind(seq)
    .fetch_optional(pool)
    .await?;
    let (state, state_reason) = match state {
        Some(row) => (col(&row, "state")?, col(&row, "reason")?),
        None => ("RECEIVED_PREPARE".to_string(), None),
    };
    let fulfilment = sqlx::query(
        "SELECT ilp_fulfilment, completed_timestamp, settlement_window_id FROM transfer_fulfilment WHERE transfer_seq = ?",
    )
    .bind(seq)
    .fetch_optional(pool)
    .await?;
    let hashes =
        sqlx::query("SELECT kind, hash FROM transfer_duplicate_check WHERE transfer_seq = ?")
            .bind(seq)
            .fetch_all(pool)
            .await?;
    let hash_of = |kind: &str| -> Result<Option<String>> {
        for row in &hashes {
            if col::<String>(row, "kind")? == kind {
                return Ok(Some(col(row, "hash")?));
            }
        }
        Ok(None)
    };
    let error = sqlx::query(
        "SELECT error_code, error_description FROM transfer_error WHERE transfer_seq = ? ORDER BY transfer_error_id DESC LIMIT 1",
    )
    .bind(seq)
    .fetch_optional(pool)
    .await?;
    Ok(Some(TransferRecord {
        transfer,
        state,
        state_reason,
        fulfilment: fulfilment
            .as_ref()
            .map(|r| col(r, "ilp_fulfilment"))
            .transpose()?,
        completed_timestamp: fulfilment
            .as_ref()
            .map(|r| col(r, "completed_timestamp"))
            .transpose()?,
        settlement_window_id: fulfilment
            .as_ref()
            .map(|r| col(r, "settlement_window_id"))
            .transpose()?,
        fulfil_hash: hash_of("FULFIL")?,
        error_hash: hash_of("ERROR")?,
        last_error: error
            .map(|r| {
                Ok::<_, crate::StorageError>((
                    col(&r, "error_code")?,
                    col(&r, "error_description")?,
                ))
            })
            .transpose()?,
    }))
}

impl Store {
    /// One transfer with its newest state, fulfilment, hashes and last error.
    pub async fn transfer(&self, transfer_id: &str) -> Result<Option<TransferRecord>> {
        let transfer_id = transfer_id.to_string();
        self.run(move |pool| async move { load(&pool, transfer_id).await })
            .await
    }

    /// Transfers whose newest state is not final: (id, expiration in ms).
    /// Used at start to re-arm expiry timers.
    pub async fn unfinished_transfers(&self) -> Result<Vec<(String, i64)>> {
        self.run(|pool| async move {
            let rows = sqlx::query(concat!(
                "SELECT t.transfer_id, t.expiration_ms FROM transfer t JOIN ",
                newest_state_of_t!(),
                " WHERE s.state IN ('RECEIVED_PREPARE', 'RESERVED', 'RECEIVED_FULFIL', 'RECEIVED_ERROR', 'RESERVED_TIMEOUT')"
            ))
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|r| Ok((col(r, "transfer_id")?, col(r, "expiration_ms")?)))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolSettings;

    async fn exec(pool: &AnyPool, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(pool)
            .await
            .expect(sql);
    }

    /// A database written before `0009_sequential_transfer_keys` keeps every
    /// transfer and its history: each history row gets its transfer's
    /// `transfer_seq`, a transfer loads whole by id, and a new transfer's
    /// history is written under a sequence number after the old ones.
    #[tokio::test]
    async fn transfers_written_before_sequential_keys_survive_the_migration() {
        let dir = std::env::temp_dir().join(format!("mojaswitch-seqkeys-{}", std::process::id()));
        let url = format!("sqlite://{}/s.db", dir.display());
        let settings = PoolSettings {
            connections_max: 1,
            acquire_timeout_ms: 5_000,
        };
        let store = Store::connect(&url, &settings).await.expect("connect");
        let migrator = sqlx::migrate!("./migrations/sqlite");
        migrator
            .run_to(8, &store.pool)
            .await
            .expect("migrate to 0008");
        exec(
            &store.pool,
            "INSERT INTO transfer (transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition, expiration, \
             expiration_ms, ilp_packet, prepare_hash, content_version, created_date) VALUES \
             ('b', 'payer', 'payee', 100, 'USD', 'c', 'e', 1, 'p', 'h', '1.1', 'd'), \
             ('a', 'payer', 'payee', 200, 'USD', 'c', 'e', 1, 'p', 'h', '1.1', 'd'); \
             INSERT INTO transfer_state_change (transfer_id, state, created_date) VALUES \
             ('b', 'RESERVED', 'd'), ('a', 'RESERVED', 'd'), ('b', 'COMMITTED', 'd'); \
             INSERT INTO transfer_fulfilment VALUES ('b', 'f', 'ts', 1, 'd'); \
             INSERT INTO transfer_duplicate_check VALUES ('b', 'FULFIL', 'fh', 'd'); \
             INSERT INTO transfer_error (transfer_id, error_code, error_description, created_date) VALUES ('a', '3100', 'bad', 'd');",
        )
        .await;
        migrator
            .run(&store.pool)
            .await
            .expect("migrate to the newest");

        let b = load(&store.pool, "b".into())
            .await
            .expect("load")
            .expect("b");
        assert_eq!(
            (
                b.state.as_str(),
                b.fulfilment.as_deref(),
                b.fulfil_hash.as_deref()
            ),
            ("COMMITTED", Some("f"), Some("fh"))
        );
        assert_eq!(b.transfer.amount, from_units(100));
        let a = load(&store.pool, "a".into())
            .await
            .expect("load")
            .expect("a");
        assert_eq!(a.state, "RESERVED");
        assert_eq!(a.last_error, Some(("3100".into(), "bad".into())));

        let mut conn = store.pool.acquire().await.expect("acquire");
        let old = seqs_of(&mut conn, &["a", "b", "missing"])
            .await
            .expect("seqs");
        assert_eq!(old.len(), 2, "unknown ids have no sequence number");
        drop(conn);
        exec(
            &store.pool,
            "INSERT INTO transfer (transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition, expiration, \
             expiration_ms, ilp_packet, prepare_hash, content_version, created_date) VALUES \
             ('c', 'payer', 'payee', 300, 'USD', 'c', 'e', 1, 'p', 'h', '1.1', 'd')",
        )
        .await;
        let mut conn = store.pool.acquire().await.expect("acquire");
        let new = seqs_of(&mut conn, &["c"]).await.expect("seqs");
        assert!(new["c"] > old["a"].max(old["b"]), "{new:?} after {old:?}");
        drop(conn);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
