//! The hot rows of a ledger batch on SQLite, written by one statement script.
//!
//! sqlx runs SQLite on a worker thread of its own and answers every
//! statement on the caller's thread, so a batch written statement by
//! statement (the transfers, their states, fulfilments, errors and
//! duplicate-check hashes, the position changes, a `transfer_seq` lookup
//! and the positions) cost two thread hand-offs per statement: at 3,000
//! transfers/s SQLite's worker ran about 1.5 times per transfer, and a fifth
//! of its time was spent switching and waking (docs/performance.md).
//!
//! Here those rows go to the worker as one script of seven statements,
//! which sqlx runs one after the other without answering in between. The
//! script's text never changes: each table's rows arrive as one JSON array
//! read with `jsonb_each`, not as one placeholder list per row count, so
//! SQLite prepares it once per connection and the statement cache keeps
//! it. (`jsonb_each`, not `json_each`: the latter hands each row's array
//! back as JSON text, which every `->>` then parsed again; that was a tenth
//! of SQLite's thread.) History rows find their `transfer_seq` and the open
//! settlement window by subqueries, which SQLite answers in process.
//!
//! This relies on sqlx's SQLite driver running a query of several
//! statements and binding its arguments statement by statement, which sqlx
//! 0.9 supports but marks for removal (launchbadge/sqlx#3108). Should an
//! upgrade drop it, `ledger`'s tests of every row written once, in order,
//! and reading back as written fail on SQLite.
//!
//! MariaDB keeps the statements of `transfers::write_transfer_rows` and
//! `ledger::write_owned_changes`: there each statement is a network round
//! trip either way, and sqlx's MySQL driver runs one statement per query.

use std::sync::Arc;

use sqlx::{Any, Executor, Transaction};

use crate::ledger::{last_change_per_account, AccountChange};
use crate::transfers::{truncate, NewTransfer, TransferWrite, ERROR_DESCRIPTION_MAX};
use crate::{to_units, Result, StorageError};

/// The script. Every statement reads its rows from one JSON array (a
/// statement whose array is empty writes nothing) and binds its `?` in the
/// order of the text: the creation date, then the array.
///
/// A history row whose transfer has no row finds no `transfer_seq`, and a
/// fulfilment without an open window no window; both columns are NOT NULL,
/// so such a batch fails before COMMIT, as the statement-by-statement
/// writer fails on its lookup. The open window needs no row lock here (as
/// `transfers::lock_open_window` takes on MariaDB): the batch holds SQLite's
/// one write lock from `BEGIN IMMEDIATE`, so no window closes in between.
const SCRIPT: &str = "\
INSERT INTO transfer (transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition, expiration, \
 expiration_ms, ilp_packet, prepare_hash, content_version, bulk_transfer_id, created_date) \
 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, \
 value->>9, value->>10, value->>11, ? FROM jsonb_each(?) ORDER BY key; \
INSERT INTO transfer_state_change (transfer_seq, transfer_id, state, reason, created_date) \
 SELECT (SELECT transfer_seq FROM transfer WHERE transfer_id = value->>0), value->>0, value->>1, value->>2, ? \
 FROM jsonb_each(?) ORDER BY key; \
INSERT INTO transfer_fulfilment (transfer_seq, transfer_id, ilp_fulfilment, completed_timestamp, settlement_window_id, created_date) \
 SELECT (SELECT transfer_seq FROM transfer WHERE transfer_id = value->>0), value->>0, value->>1, value->>2, \
 (SELECT settlement_window_id FROM settlement_window_open WHERE singleton = 1), ? FROM jsonb_each(?) ORDER BY key; \
INSERT INTO transfer_error (transfer_seq, transfer_id, error_code, error_description, created_date) \
 SELECT (SELECT transfer_seq FROM transfer WHERE transfer_id = value->>0), value->>0, value->>1, value->>2, ? \
 FROM jsonb_each(?) ORDER BY key; \
INSERT INTO transfer_duplicate_check (transfer_seq, transfer_id, kind, hash, created_date) \
 SELECT (SELECT transfer_seq FROM transfer WHERE transfer_id = value->>0), value->>0, value->>1, value->>2, ? \
 FROM jsonb_each(?) ORDER BY key; \
INSERT INTO participant_position_change (participant_position_id, participant_currency_id, value, reserved_value, \
 change_value, change_reserved, kind, reference, created_date) \
 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, ? \
 FROM jsonb_each(?) ORDER BY key; \
UPDATE participant_position SET value = next.balance, reserved_value = next.reserved, changed_date = ? \
 FROM (SELECT value->>0 AS account, value->>1 AS balance, value->>2 AS reserved FROM jsonb_each(?)) AS next \
 WHERE participant_position.participant_currency_id = next.account;";

/// Statements in [`SCRIPT`]; the last sets the positions.
const STATEMENTS: usize = 7;

/// Writes a batch's transfer rows, position changes and positions.
pub(crate) async fn write_hot_rows(
    tx: &mut Transaction<'_, Any>,
    transfers: &TransferWrite,
    changes: &[AccountChange],
    now: &str,
) -> Result<()> {
    if transfers.is_empty() && changes.is_empty() {
        return Ok(());
    }
    let positions = last_change_per_account(changes);
    let arrays = [
        transfer_rows(&transfers.transfers)?,
        json(
            transfers
                .states
                .iter()
                .map(|s| (&s.transfer_id, &s.state, &s.reason)),
        )?,
        json(
            transfers
                .fulfilments
                .iter()
                .map(|f| (&f.transfer_id, &f.fulfilment, &f.completed_timestamp)),
        )?,
        json(transfers.errors.iter().map(|e| {
            (
                &e.transfer_id,
                &e.error_code,
                truncate(&e.error_description, ERROR_DESCRIPTION_MAX),
            )
        }))?,
        json(
            transfers
                .hashes
                .iter()
                .map(|h| (&h.transfer_id, &h.kind, &h.hash)),
        )?,
        change_rows(changes)?,
        position_rows(&positions)?,
    ];
    let mut query = sqlx::query(SCRIPT);
    for array in arrays {
        query = query.bind(now.to_string()).bind(array);
    }
    let results: Vec<_> =
        futures::TryStreamExt::try_collect((&mut **tx).execute_many(query)).await?;
    let updated = match results.as_slice() {
        [.., last] if results.len() == STATEMENTS => last.rows_affected(),
        _ => {
            return Err(StorageError::Invariant(format!(
                "the batch script answered {} of its {STATEMENTS} statements",
                results.len()
            )))
        }
    };
    if updated != positions.len() as u64 {
        return Err(StorageError::Invariant(format!(
            "{updated} of the accounts {:?} have a position row",
            positions.iter().map(|c| c.account_id).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

fn transfer_rows(transfers: &[Arc<NewTransfer>]) -> Result<String> {
    let rows = transfers
        .iter()
        .map(|t| {
            Ok((
                &t.transfer_id,
                &t.payer_fsp,
                &t.payee_fsp,
                to_units(t.amount)?,
                &t.currency,
                &t.condition,
                &t.expiration,
                t.expiration_ms,
                &t.ilp_packet,
                &t.prepare_hash,
                &t.content_version,
                &t.bulk_transfer_id,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    json(rows)
}

fn change_rows(changes: &[AccountChange]) -> Result<String> {
    let rows = changes
        .iter()
        .map(|c| {
            Ok((
                c.position_id,
                c.account_id,
                to_units(c.value)?,
                to_units(c.reserved_value)?,
                to_units(c.change_value)?,
                to_units(c.change_reserved)?,
                &c.kind,
                &c.reference,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    json(rows)
}

fn position_rows(positions: &[&AccountChange]) -> Result<String> {
    let rows = positions
        .iter()
        .map(|c| {
            Ok((
                c.account_id,
                to_units(c.value)?,
                to_units(c.reserved_value)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    json(rows)
}

/// The rows as one JSON array of arrays (a tuple serialises as an array).
fn json<R: serde::Serialize>(rows: impl IntoIterator<Item = R>) -> Result<String> {
    let rows: Vec<R> = rows.into_iter().collect();
    serde_json::to_string(&rows)
        .map_err(|e| StorageError::Invariant(format!("ledger rows as JSON: {e}")))
}
