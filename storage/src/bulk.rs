//! Bulk transfers: the bulk record, its state history, its lines and the
//! payee's message hashes. Each accepted line is an ordinary `transfer` row
//! (with `bulk_transfer_id` set) and moves money like any transfer; the rows
//! here only say which transfers form the bulk and how far the bulk got.

use crate::{col, from_units, now_text, Result, Store};

/// A bulk as the payer sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBulk {
    pub bulk_transfer_id: String,
    pub bulk_quote_id: String,
    pub payer_fsp: String,
    pub payee_fsp: String,
    pub expiration: String,
    pub expiration_ms: i64,
    pub prepare_hash: String,
    pub content_version: String,
}

/// A payee message on a bulk, kept for duplicate detection.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkHash {
    /// FULFIL or ERROR.
    pub kind: String,
    pub hash: String,
    pub completed_timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkRecord {
    pub bulk: NewBulk,
    /// The newest state.
    pub state: String,
    pub hashes: Vec<BulkHash>,
}

impl BulkRecord {
    pub fn hash(&self, kind: &str) -> Option<&BulkHash> {
        self.hashes.iter().find(|h| h.kind == kind)
    }
}

/// A line of a bulk as the payer sent it, and how the switch refused it if
/// it never became a transfer of this bulk.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBulkLine {
    pub line_no: i64,
    pub transfer_id: String,
    pub refusal: Option<(String, String)>,
}

/// A line with the current state of its transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkLine {
    pub line_no: i64,
    pub transfer_id: String,
    /// The transfer's newest state; None when the line never became a
    /// transfer of this bulk (see `refusal`).
    pub state: Option<String>,
    pub amount: Option<rust_decimal::Decimal>,
    pub fulfilment: Option<String>,
    /// The transfer's last error, or the line's refusal.
    pub error: Option<(String, String)>,
}

/// A line's transfer (`t`): amount, newest state, fulfilment, last error.
const LINE_TRANSFER_COLUMNS: &str = "t.amount, \
    (SELECT s.state FROM transfer_state_change s WHERE s.transfer_seq = t.transfer_seq \
       ORDER BY s.transfer_state_change_id DESC LIMIT 1) AS state, \
    (SELECT f.ilp_fulfilment FROM transfer_fulfilment f WHERE f.transfer_seq = t.transfer_seq) AS fulfilment, \
    (SELECT e.error_code FROM transfer_error e WHERE e.transfer_seq = t.transfer_seq \
       ORDER BY e.transfer_error_id DESC LIMIT 1) AS error_code, \
    (SELECT e.error_description FROM transfer_error e WHERE e.transfer_seq = t.transfer_seq \
       ORDER BY e.transfer_error_id DESC LIMIT 1) AS error_description";

fn bulk_state_sql() -> &'static str {
    "INSERT INTO bulk_transfer_state_change (bulk_transfer_id, state, reason, created_date) VALUES (?, ?, ?, ?)"
}

impl Store {
    /// Records a new bulk as RECEIVED. Returns false (and writes nothing) if
    /// the id is already known.
    pub async fn insert_bulk(&self, bulk: NewBulk) -> Result<bool> {
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            let known = sqlx::query("SELECT bulk_transfer_id FROM bulk_transfer WHERE bulk_transfer_id = ?")
                .bind(bulk.bulk_transfer_id.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_some() {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO bulk_transfer (bulk_transfer_id, bulk_quote_id, payer_fsp, payee_fsp, expiration, expiration_ms, \
                 prepare_hash, content_version, created_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(bulk.bulk_transfer_id.clone())
            .bind(bulk.bulk_quote_id)
            .bind(bulk.payer_fsp)
            .bind(bulk.payee_fsp)
            .bind(bulk.expiration)
            .bind(bulk.expiration_ms)
            .bind(bulk.prepare_hash)
            .bind(bulk.content_version)
            .bind(now.clone())
            .execute(&mut *tx)
            .await?;
            sqlx::query(bulk_state_sql())
                .bind(bulk.bulk_transfer_id)
                .bind("RECEIVED")
                .bind(None::<String>)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Records the lines of a bulk, once, after their prepares.
    pub async fn record_bulk_lines(
        &self,
        bulk_transfer_id: &str,
        lines: Vec<NewBulkLine>,
    ) -> Result<()> {
        let id = bulk_transfer_id.to_string();
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            for line in lines {
                let (code, description) = line.refusal.unzip();
                sqlx::query(
                    "INSERT INTO bulk_transfer_line (bulk_transfer_id, line_no, transfer_id, refusal_code, refusal_description) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(id.clone())
                .bind(line.line_no)
                .bind(line.transfer_id)
                .bind(code)
                .bind(description)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Moves a bulk to `state`, in one transaction with a payee message hash.
    pub async fn bulk_step(
        &self,
        bulk_transfer_id: &str,
        state: &str,
        reason: Option<String>,
        hash: Option<BulkHash>,
    ) -> Result<()> {
        let id = bulk_transfer_id.to_string();
        let state = state.to_string();
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            if let Some(hash) = hash {
                sqlx::query(
                    "INSERT INTO bulk_transfer_duplicate_check (bulk_transfer_id, kind, hash, completed_timestamp, created_date) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(id.clone())
                .bind(hash.kind)
                .bind(hash.hash)
                .bind(hash.completed_timestamp)
                .bind(now.clone())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(bulk_state_sql())
                .bind(id)
                .bind(state)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// One bulk with its newest state and payee hashes.
    pub async fn bulk(&self, bulk_transfer_id: &str) -> Result<Option<BulkRecord>> {
        let id = bulk_transfer_id.to_string();
        self.run(move |pool| async move {
            let row = sqlx::query(
                "SELECT bulk_transfer_id, bulk_quote_id, payer_fsp, payee_fsp, expiration, expiration_ms, prepare_hash, \
                 content_version FROM bulk_transfer WHERE bulk_transfer_id = ?",
            )
            .bind(id.clone())
            .fetch_optional(&pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let bulk = NewBulk {
                bulk_transfer_id: col(&row, "bulk_transfer_id")?,
                bulk_quote_id: col(&row, "bulk_quote_id")?,
                payer_fsp: col(&row, "payer_fsp")?,
                payee_fsp: col(&row, "payee_fsp")?,
                expiration: col(&row, "expiration")?,
                expiration_ms: col(&row, "expiration_ms")?,
                prepare_hash: col(&row, "prepare_hash")?,
                content_version: col(&row, "content_version")?,
            };
            let state = sqlx::query(
                "SELECT state FROM bulk_transfer_state_change WHERE bulk_transfer_id = ? \
                 ORDER BY bulk_transfer_state_change_id DESC LIMIT 1",
            )
            .bind(id.clone())
            .fetch_one(&pool)
            .await?;
            let hashes = sqlx::query(
                "SELECT kind, hash, completed_timestamp FROM bulk_transfer_duplicate_check WHERE bulk_transfer_id = ?",
            )
            .bind(id)
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| {
                Ok(BulkHash {
                    kind: col(r, "kind")?,
                    hash: col(r, "hash")?,
                    completed_timestamp: col(r, "completed_timestamp")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            Ok(Some(BulkRecord {
                bulk,
                state: col(&state, "state")?,
                hashes,
            }))
        })
        .await
    }

    /// The lines of a bulk in order, each with its transfer's newest state,
    /// fulfilment and last error. Before the lines are recorded (a bulk
    /// interrupted while preparing), the bulk's transfers stand in for them.
    pub async fn bulk_lines(&self, bulk_transfer_id: &str) -> Result<Vec<BulkLine>> {
        let id = bulk_transfer_id.to_string();
        self.run(move |pool| async move {
            let lines = format!(
                "SELECT l.line_no, l.transfer_id, l.refusal_code, l.refusal_description, {LINE_TRANSFER_COLUMNS} \
                 FROM bulk_transfer_line l \
                 LEFT JOIN transfer t ON t.transfer_id = l.transfer_id AND t.bulk_transfer_id = l.bulk_transfer_id \
                 WHERE l.bulk_transfer_id = ? ORDER BY l.line_no"
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(lines))
                .bind(id.clone())
                .fetch_all(&pool)
                .await?;
            if rows.is_empty() {
                let transfers = format!(
                    "SELECT 0 AS line_no, t.transfer_id, NULL AS refusal_code, NULL AS refusal_description, \
                     {LINE_TRANSFER_COLUMNS} FROM transfer t WHERE t.bulk_transfer_id = ? ORDER BY t.transfer_id"
                );
                rows = sqlx::query(sqlx::AssertSqlSafe(transfers))
                    .bind(id)
                    .fetch_all(&pool)
                    .await?;
            }
            rows.iter()
                .map(|r| {
                    let refusal: Option<String> = col(r, "refusal_code")?;
                    let error = match refusal {
                        Some(code) => Some((code, col::<Option<String>>(r, "refusal_description")?.unwrap_or_default())),
                        None => col::<Option<String>>(r, "error_code")?
                            .map(|code| {
                                Ok::<_, crate::StorageError>((
                                    code,
                                    col::<Option<String>>(r, "error_description")?.unwrap_or_default(),
                                ))
                            })
                            .transpose()?,
                    };
                    Ok(BulkLine {
                        line_no: col(r, "line_no")?,
                        transfer_id: col(r, "transfer_id")?,
                        state: col(r, "state")?,
                        amount: col::<Option<i64>>(r, "amount")?.map(from_units),
                        fulfilment: col(r, "fulfilment")?,
                        error,
                    })
                })
                .collect()
        })
        .await
    }

    /// Bulks not yet final: (id, expiration in ms), to re-arm their timers at start.
    pub async fn unfinished_bulks(&self) -> Result<Vec<(String, i64)>> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT b.bulk_transfer_id, b.expiration_ms FROM bulk_transfer b \
                 JOIN bulk_transfer_state_change s ON s.bulk_transfer_id = b.bulk_transfer_id \
                 WHERE s.bulk_transfer_state_change_id = (SELECT MAX(x.bulk_transfer_state_change_id) \
                   FROM bulk_transfer_state_change x WHERE x.bulk_transfer_id = b.bulk_transfer_id) \
                 AND s.state IN ('RECEIVED', 'ACCEPTED', 'PROCESSING')",
            )
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|r| Ok((col(r, "bulk_transfer_id")?, col(r, "expiration_ms")?)))
                .collect()
        })
        .await
    }
}
