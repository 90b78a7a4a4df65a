//! Balances: loading a participant's position book and writing ledger
//! changes, each batch in one database transaction.
//!
//! Two kinds of account change exist:
//! - [`AccountChange`]: an account owned by one position actor. The actor is
//!   the only writer, so it computes the running balance itself and this
//!   module writes it verbatim.
//! - [`AccountIncrement`]: a shared hub account (HUB_RECONCILIATION, ...)
//!   that several actors move. It is incremented in SQL under the row lock
//!   and the running balance is read back inside the same transaction.

use rust_decimal::Decimal;
use sqlx::{Any, AnyPool, Transaction};

use crate::participants::AccountRecord;
use crate::settlement::{write_account_steps, SettlementAccountStep};
use crate::transfers::{write_transfer_rows, TransferWrite};
use crate::{
    col, from_units, now_text, padded_to_power_of_two, to_units, Result, StorageError, Store,
};

/// A change to an account owned by the writer, with the balances after it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountChange {
    pub account_id: i64,
    pub position_id: i64,
    pub value: Decimal,
    pub reserved_value: Decimal,
    pub change_value: Decimal,
    pub change_reserved: Decimal,
    pub kind: String,
    pub reference: Option<String>,
}

/// A change to a shared account, applied relative to its stored balance.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountIncrement {
    pub account_id: i64,
    pub change_value: Decimal,
    pub kind: String,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewLimit {
    pub account_id: i64,
    pub limit_type: String,
    pub value: Decimal,
    pub alarm_percentage: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAdminTransfer {
    pub transfer_id: String,
    pub account_id: i64,
    pub action: String,
    pub amount: Decimal,
    pub currency: String,
    pub external_reference: String,
    pub reason: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminStateChange {
    pub transfer_id: String,
    pub state: String,
    pub reason: Option<String>,
}

/// Everything one decision wrote, made durable together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerWrite {
    pub changes: Vec<AccountChange>,
    pub increments: Vec<AccountIncrement>,
    pub limits: Vec<NewLimit>,
    pub admin_transfers: Vec<NewAdminTransfer>,
    pub admin_states: Vec<AdminStateChange>,
    pub transfers: TransferWrite,
    /// Settlement account steps made durable with the money they move.
    pub settlement_steps: Vec<SettlementAccountStep>,
    /// Transfers whose payee side was settled gross with their commit:
    /// (transfer id, settlement model id).
    pub gross_payee: Vec<(String, i64)>,
    /// Transfers whose payer side was settled gross: completes them.
    pub gross_payer: Vec<String>,
    /// Cluster mode: the slot epochs this write is valid under (the
    /// position's and the transfer's); empty in the embedded default.
    pub fences: Vec<crate::fence::Fence>,
}

impl LedgerWrite {
    /// Adds another write's rows after this one's (order is kept per account).
    pub fn append(&mut self, other: LedgerWrite) {
        self.changes.extend(other.changes);
        self.increments.extend(other.increments);
        self.limits.extend(other.limits);
        self.admin_transfers.extend(other.admin_transfers);
        self.admin_states.extend(other.admin_states);
        self.transfers.append(other.transfers);
        self.settlement_steps.extend(other.settlement_steps);
        self.gross_payee.extend(other.gross_payee);
        self.gross_payer.extend(other.gross_payer);
        self.fences.extend(other.fences);
    }

    /// How many rows of each kind this write holds.
    /// Destructured in full: a new kind of row is a compile error here
    /// (and in `split_last`), never a row the writer silently loses.
    pub fn shape(&self) -> WriteShape {
        let LedgerWrite {
            changes,
            increments,
            limits,
            admin_transfers,
            admin_states,
            transfers:
                TransferWrite {
                    transfers,
                    states,
                    fulfilments,
                    errors,
                    hashes,
                },
            settlement_steps,
            gross_payee,
            gross_payer,
            fences,
        } = self;
        WriteShape([
            changes.len(),
            increments.len(),
            limits.len(),
            admin_transfers.len(),
            admin_states.len(),
            transfers.len(),
            states.len(),
            fulfilments.len(),
            errors.len(),
            hashes.len(),
            settlement_steps.len(),
            gross_payee.len(),
            gross_payer.len(),
            fences.len(),
        ])
    }

    /// Takes the last write appended off a merged write: the inverse of
    /// [`LedgerWrite::append`], given the shape the appended write had.
    pub fn split_last(&mut self, shape: WriteShape) -> LedgerWrite {
        fn tail<T>(rows: &mut Vec<T>, n: usize) -> Vec<T> {
            assert!(
                n <= rows.len(),
                "a write's shape is larger than the merged write"
            );
            rows.split_off(rows.len() - n)
        }
        let [changes, increments, limits, admin_transfers, admin_states, transfers, states, fulfilments, errors, hashes, settlement_steps, gross_payee, gross_payer, fences] =
            shape.0;
        let t = &mut self.transfers;
        LedgerWrite {
            changes: tail(&mut self.changes, changes),
            increments: tail(&mut self.increments, increments),
            limits: tail(&mut self.limits, limits),
            admin_transfers: tail(&mut self.admin_transfers, admin_transfers),
            admin_states: tail(&mut self.admin_states, admin_states),
            transfers: TransferWrite {
                transfers: tail(&mut t.transfers, transfers),
                states: tail(&mut t.states, states),
                fulfilments: tail(&mut t.fulfilments, fulfilments),
                errors: tail(&mut t.errors, errors),
                hashes: tail(&mut t.hashes, hashes),
            },
            settlement_steps: tail(&mut self.settlement_steps, settlement_steps),
            gross_payee: tail(&mut self.gross_payee, gross_payee),
            gross_payer: tail(&mut self.gross_payer, gross_payer),
            fences: tail(&mut self.fences, fences),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.changes.is_empty()
            && self.increments.is_empty()
            && self.limits.is_empty()
            && self.admin_transfers.is_empty()
            && self.admin_states.is_empty()
            && self.settlement_steps.is_empty()
            && self.gross_payee.is_empty()
            && self.gross_payer.is_empty()
    }
}

/// The row counts of a [`LedgerWrite`], one per kind of row, so that a
/// merged batch can be taken apart again without having been copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteShape([usize; 14]);

/// What a position actor needs to start: its accounts and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionBookRecord {
    pub participant_id: i64,
    pub participant_name: String,
    pub participant_active: bool,
    pub currency: String,
    pub position: Option<AccountRecord>,
    pub settlement: Option<AccountRecord>,
    /// Net debit cap and its alarm percentage, if one was ever set.
    pub net_debit_cap: Option<(Decimal, Decimal)>,
}

/// An operator transfer with its newest state.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTransferRecord {
    pub transfer: NewAdminTransfer,
    pub state: String,
}

impl Store {
    /// Loads the accounts and net debit cap of one participant in one currency.
    pub async fn load_position_book(
        &self,
        participant_name: &str,
        currency: &str,
    ) -> Result<Option<PositionBookRecord>> {
        let Some(participant) = self.participant(participant_name).await? else {
            return Ok(None);
        };
        let pick = |kind: &str| {
            participant
                .accounts
                .iter()
                .find(|a| a.currency == currency && a.ledger_account_type == kind)
                .cloned()
        };
        let position = pick("POSITION");
        let settlement = pick("SETTLEMENT");
        let mut net_debit_cap = None;
        if let Some(account) = &position {
            let limits = self
                .limits(
                    Some(participant.id),
                    Some(currency.to_string()),
                    Some("NET_DEBIT_CAP".into()),
                )
                .await?;
            net_debit_cap = limits
                .iter()
                .find(|l| l.account_id == account.id)
                .map(|l| (l.value, l.alarm_percentage));
        }
        Ok(Some(PositionBookRecord {
            participant_id: participant.id,
            participant_name: participant.name.clone(),
            participant_active: participant.is_active,
            currency: currency.to_string(),
            position,
            settlement,
            net_debit_cap,
        }))
    }

    /// A hub account of one type and currency.
    pub async fn hub_account(
        &self,
        hub_name: &str,
        currency: &str,
        account_type: &str,
    ) -> Result<Option<AccountRecord>> {
        Ok(self.participant(hub_name).await?.and_then(|hub| {
            hub.accounts
                .into_iter()
                .find(|a| a.currency == currency && a.ledger_account_type == account_type)
        }))
    }

    /// An operator transfer and its newest state.
    pub async fn admin_transfer(&self, transfer_id: &str) -> Result<Option<AdminTransferRecord>> {
        let transfer_id = transfer_id.to_string();
        self.run(move |pool| async move {
            let row = sqlx::query(
                "SELECT t.transfer_id, t.participant_currency_id, t.action, t.amount, t.currency_id, t.external_reference, \
                 t.reason, t.request_hash, s.state FROM admin_transfer t \
                 JOIN admin_transfer_state_change s ON s.transfer_id = t.transfer_id \
                 WHERE t.transfer_id = ? ORDER BY s.admin_transfer_state_change_id DESC LIMIT 1",
            )
            .bind(transfer_id)
            .fetch_optional(&pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(AdminTransferRecord {
                transfer: NewAdminTransfer {
                    transfer_id: col(&row, "transfer_id")?,
                    account_id: col(&row, "participant_currency_id")?,
                    action: col(&row, "action")?,
                    amount: from_units(col(&row, "amount")?),
                    currency: col(&row, "currency_id")?,
                    external_reference: col(&row, "external_reference")?,
                    reason: col(&row, "reason")?,
                    request_hash: col(&row, "request_hash")?,
                },
                state: col(&row, "state")?,
            }))
        })
        .await
    }
}

/// Why a batch did not land.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// A statement failed before COMMIT: nothing was written, and the
    /// writes may be retried one by one to find the one at fault.
    BeforeCommit(crate::StorageError),
    /// COMMIT itself failed: the outcome is unknown, nothing may be retried.
    AtCommit(crate::StorageError),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::BeforeCommit(e) => write!(f, "{e}"),
            ApplyError::AtCommit(e) => write!(f, "commit failed, outcome unknown: {e}"),
        }
    }
}

/// Writes one batch of ledger changes in a single transaction (the batch
/// writer is the only caller: every ledger write goes through it).
pub(crate) async fn apply_in_transaction(
    conn: &mut sqlx::AnyConnection,
    pool: &AnyPool,
    write: &LedgerWrite,
) -> std::result::Result<(), ApplyError> {
    let mut tx = crate::begin_write_on(conn, pool)
        .await
        .map_err(ApplyError::BeforeCommit)?;
    write_rows(&mut tx, write)
        .await
        .map_err(ApplyError::BeforeCommit)?;
    tx.commit()
        .await
        .map_err(|e| ApplyError::AtCommit(e.into()))
}

async fn write_rows(tx: &mut Transaction<'_, Any>, write: &LedgerWrite) -> Result<()> {
    // First, so the shared locks come before any other lock of the batch.
    crate::fence::check_fences(tx, &write.fences).await?;
    let now = now_text();
    for transfer in &write.admin_transfers {
        sqlx::query(
            "INSERT INTO admin_transfer (transfer_id, participant_currency_id, action, amount, currency_id, external_reference, reason, request_hash, created_date) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(transfer.transfer_id.clone())
        .bind(transfer.account_id)
        .bind(transfer.action.clone())
        .bind(to_units(transfer.amount)?)
        .bind(transfer.currency.clone())
        .bind(transfer.external_reference.clone())
        .bind(transfer.reason.clone())
        .bind(transfer.request_hash.clone())
        .bind(now.clone())
        .execute(&mut **tx)
        .await?;
    }
    for state in &write.admin_states {
        sqlx::query(
            "INSERT INTO admin_transfer_state_change (transfer_id, state, reason, created_date) VALUES (?, ?, ?, ?)",
        )
        .bind(state.transfer_id.clone())
        .bind(state.state.clone())
        .bind(state.reason.clone())
        .bind(now.clone())
        .execute(&mut **tx)
        .await?;
    }
    for limit in &write.limits {
        sqlx::query(
            "INSERT INTO participant_limit (participant_currency_id, limit_type, value, threshold_alarm_percentage, created_date, created_by) \
             VALUES (?, ?, ?, ?, ?, 'operator')",
        )
        .bind(limit.account_id)
        .bind(limit.limit_type.clone())
        .bind(to_units(limit.value)?)
        .bind(to_units(limit.alarm_percentage)?)
        .bind(now.clone())
        .execute(&mut **tx)
        .await?;
    }
    if crate::on_sqlite(tx) {
        crate::sqlite_script::write_hot_rows(tx, &write.transfers, &write.changes, &now).await?;
    } else {
        write_transfer_rows(tx, &write.transfers, &now).await?;
        write_owned_changes(tx, &write.changes, &now).await?;
    }
    for increment in &write.increments {
        write_increment(tx, increment, &now).await?;
    }
    write_account_steps(tx, &write.settlement_steps, &now).await?;
    write_gross(tx, write, &now).await?;
    Ok(())
}

/// Rows per multi-row INSERT: keeps statements well under packet limits.
const INSERT_ROWS_MAX: usize = 200;

async fn write_owned_changes(
    tx: &mut Transaction<'_, Any>,
    changes: &[AccountChange],
    now: &str,
) -> Result<()> {
    for chunk in changes.chunks(INSERT_ROWS_MAX) {
        let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO participant_position_change (participant_position_id, participant_currency_id, value, reserved_value, \
             change_value, change_reserved, kind, reference, created_date) VALUES {placeholders}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for change in chunk {
            query = query
                .bind(change.position_id)
                .bind(change.account_id)
                .bind(to_units(change.value)?)
                .bind(to_units(change.reserved_value)?)
                .bind(to_units(change.change_value)?)
                .bind(to_units(change.change_reserved)?)
                .bind(change.kind.clone())
                .bind(change.reference.clone())
                .bind(now.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    for chunk in last_change_per_account(changes).chunks(POSITION_UPDATES_MAX) {
        update_positions(tx, chunk, now).await?;
    }
    Ok(())
}

/// Each account's last change, which carries its new balance: one
/// position update per account.
pub(crate) fn last_change_per_account(changes: &[AccountChange]) -> Vec<&AccountChange> {
    let mut last_per_account: Vec<&AccountChange> = Vec::new();
    for change in changes.iter().rev() {
        if !last_per_account
            .iter()
            .any(|c| c.account_id == change.account_id)
        {
            last_per_account.push(change);
        }
    }
    last_per_account
}

/// Accounts whose position row one UPDATE sets at most.
const POSITION_UPDATES_MAX: usize = 64;

/// Sets the balances of several accounts (each named once) in one statement.
///
/// One statement instead of one per account: every statement is a network
/// round trip to MariaDB inside the writer's transaction, and under load
/// the waits between statements cost more than the statements. (SQLite
/// sets the positions in `sqlite_script`.) A batch moves
/// most positions. The list is padded (repeating its last account) to a
/// power of two so that only a handful of statement shapes are prepared and
/// kept in the connection's statement cache.
async fn update_positions(
    tx: &mut Transaction<'_, Any>,
    accounts: &[&AccountChange],
    now: &str,
) -> Result<()> {
    assert!(accounts.len() <= POSITION_UPDATES_MAX);
    if accounts.is_empty() {
        return Ok(());
    }
    let rows = || padded_to_power_of_two(accounts);
    let padded = rows().count();
    let arms = vec!["WHEN ? THEN ?"; padded].join(" ");
    let sql = format!(
        "UPDATE participant_position SET value = CASE participant_currency_id {arms} END, \
         reserved_value = CASE participant_currency_id {arms} END, changed_date = ? \
         WHERE participant_currency_id IN ({})",
        vec!["?"; padded].join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for change in rows() {
        query = query.bind(change.account_id).bind(to_units(change.value)?);
    }
    for change in rows() {
        query = query
            .bind(change.account_id)
            .bind(to_units(change.reserved_value)?);
    }
    query = query.bind(now.to_string());
    for change in rows() {
        query = query.bind(change.account_id);
    }
    let updated = query.execute(&mut **tx).await?.rows_affected();
    if updated != accounts.len() as u64 {
        return Err(StorageError::Invariant(format!(
            "{updated} of the accounts {:?} have a position row",
            accounts.iter().map(|c| c.account_id).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

async fn write_increment(
    tx: &mut Transaction<'_, Any>,
    increment: &AccountIncrement,
    now: &str,
) -> Result<()> {
    let change = to_units(increment.change_value)?;
    let updated = sqlx::query(
        "UPDATE participant_position SET value = value + ?, changed_date = ? WHERE participant_currency_id = ?",
    )
    .bind(change)
    .bind(now.to_string())
    .bind(increment.account_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(StorageError::Invariant(format!(
            "account {} has no position row",
            increment.account_id
        )));
    }
    let row = sqlx::query(
        "SELECT participant_position_id, value, reserved_value FROM participant_position WHERE participant_currency_id = ?",
    )
    .bind(increment.account_id)
    .fetch_one(&mut **tx)
    .await?;
    let position_id: i64 = col(&row, "participant_position_id")?;
    let value: i64 = col(&row, "value")?;
    let reserved: i64 = col(&row, "reserved_value")?;
    sqlx::query(
        "INSERT INTO participant_position_change (participant_position_id, participant_currency_id, value, reserved_value, \
         change_value, change_reserved, kind, reference, created_date) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
    )
    .bind(position_id)
    .bind(increment.account_id)
    .bind(value)
    .bind(reserved)
    .bind(change)
    .bind(increment.kind.clone())
    .bind(increment.reference.clone())
    .bind(now.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_gross(tx: &mut Transaction<'_, Any>, write: &LedgerWrite, now: &str) -> Result<()> {
    for (transfer_id, model_id) in &write.gross_payee {
        sqlx::query(
            "INSERT INTO gross_settlement (transfer_id, settlement_model_id, payer_settled_date, created_date) VALUES (?, ?, NULL, ?)",
        )
        .bind(transfer_id.clone())
        .bind(*model_id)
        .bind(now.to_string())
        .execute(&mut **tx)
        .await?;
    }
    for transfer_id in &write.gross_payer {
        let done = sqlx::query(
            "UPDATE gross_settlement SET payer_settled_date = ? WHERE transfer_id = ? AND payer_settled_date IS NULL",
        )
        .bind(now.to_string())
        .bind(transfer_id.clone())
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::Invariant(format!(
                "transfer {transfer_id} is not waiting for its payer's gross settlement"
            )));
        }
    }
    Ok(())
}

/// A gross settlement whose payer side is still to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsettledGross {
    pub transfer_id: String,
    pub payer_fsp: String,
    pub currency: String,
    pub amount: Decimal,
}

impl Store {
    /// Gross settlements whose payer side was not written (the switch
    /// stopped between the payee's and the payer's batch), to finish at start.
    pub async fn unsettled_gross(&self) -> Result<Vec<UnsettledGross>> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT t.transfer_id, t.payer_fsp, t.currency_id, t.amount FROM gross_settlement g \
                 JOIN transfer t ON t.transfer_id = g.transfer_id WHERE g.payer_settled_date IS NULL",
            )
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(UnsettledGross {
                        transfer_id: col(r, "transfer_id")?,
                        payer_fsp: col(r, "payer_fsp")?,
                        currency: col(r, "currency_id")?,
                        amount: from_units(col(r, "amount")?),
                    })
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write with `n` rows of a few kinds, each naming `tag`.
    fn write_of(tag: &str, n: usize) -> LedgerWrite {
        let mut write = LedgerWrite::default();
        for i in 0..n {
            let id = format!("{tag}-{i}");
            write
                .transfers
                .transfers
                .push(std::sync::Arc::new(crate::transfers::test_transfer(&id)));
            write
                .transfers
                .states
                .push(crate::transfers::TransferStateChange {
                    transfer_id: id.clone(),
                    state: "RESERVED".into(),
                    reason: None,
                });
            write.gross_payer.push(id);
        }
        if n % 2 == 1 {
            write.increments.push(AccountIncrement {
                account_id: n as i64,
                change_value: Decimal::ONE,
                kind: tag.into(),
                reference: None,
            });
        }
        write
    }

    /// The writer moves requests' rows into one batch and, when the batch
    /// fails, takes them apart again: every request must get back exactly
    /// its own rows.
    #[test]
    fn a_merged_write_splits_back_into_its_parts() {
        let parts: Vec<LedgerWrite> = [("a", 3), ("b", 0), ("c", 2), ("d", 1)]
            .iter()
            .map(|(tag, n)| write_of(tag, *n))
            .collect();
        let mut merged = LedgerWrite::default();
        let shapes: Vec<WriteShape> = parts.iter().map(LedgerWrite::shape).collect();
        for part in parts.clone() {
            merged.append(part);
        }
        assert_eq!(merged.transfers.transfers.len(), 6);
        let mut back: Vec<LedgerWrite> =
            shapes.iter().rev().map(|s| merged.split_last(*s)).collect();
        back.reverse();
        assert_eq!(back, parts);
        assert_eq!(merged, LedgerWrite::default());
    }

    test_on_both_backends!(
        /// Batches of any size write each row once and in order: on MariaDB
        /// the rows go out in multi-row INSERTs of at most `INSERT_ROWS_MAX`
        /// rows (on SQLite as one JSON array per table), and one transfer's
        /// states must keep their order (its newest state is the one with
        /// the highest id).
        batches_of_any_size_write_every_row_once_in_order,
        batches_of_any_size_write_every_row_once_in_order_on_mariadb,
        "ledger_rows",
        every_row_once_in_order
    );

    /// A batch of transfer rows only.
    fn transfer_rows(transfers: TransferWrite) -> LedgerWrite {
        LedgerWrite {
            transfers,
            ..LedgerWrite::default()
        }
    }

    async fn every_row_once_in_order(store: &Store) {
        use crate::transfers::{MessageHash, NewTransferError, TransferStateChange};
        let writer = crate::writer::tests::test_writer(store);
        for n in [
            1usize,
            3,
            INSERT_ROWS_MAX,
            INSERT_ROWS_MAX + 1,
            2 * INSERT_ROWS_MAX + 50,
        ] {
            let id = |i: usize| format!("rows{n}-{i}");
            let mut write = TransferWrite::default();
            for i in 0..n {
                let transfer = crate::transfers::test_transfer(&id(i));
                write.transfers.push(std::sync::Arc::new(transfer));
                for state in ["RECEIVED_PREPARE", "RESERVED"] {
                    write.states.push(TransferStateChange {
                        transfer_id: id(i),
                        state: state.into(),
                        reason: None,
                    });
                }
                write.errors.push(NewTransferError {
                    transfer_id: id(i),
                    error_code: "3100".into(),
                    error_description: format!("error {i}"),
                });
                write.hashes.push(MessageHash {
                    transfer_id: id(i),
                    kind: "ERROR".into(),
                    hash: format!("hash {i}"),
                });
            }
            writer
                .write(transfer_rows(write))
                .await
                .expect("batch written");
            for i in [0, n / 2, n - 1] {
                let record = store.transfer(&id(i)).await.expect("read");
                let record = record.expect("written");
                assert_eq!(record.state, "RESERVED", "{}", id(i));
                let error = ("3100".to_string(), format!("error {i}"));
                assert_eq!(record.last_error, Some(error));
                assert_eq!(record.error_hash, Some(format!("hash {i}")));
            }
            for (table, per_transfer) in [
                ("transfer", 1),
                ("transfer_state_change", 2),
                ("transfer_error", 1),
                ("transfer_duplicate_check", 1),
            ] {
                let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE transfer_id LIKE ?");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(format!("rows{n}-%"))
                    .fetch_one(&store.pool)
                    .await
                    .expect("count");
                let count: i64 = col(&row, "n").expect("n");
                assert_eq!(count as usize, n * per_transfer, "{table} after {n}");
            }
        }
    }

    test_on_both_backends!(
        /// Every field of a transfer's rows reads back as written, whichever
        /// way the backend writes a batch (on SQLite one script fed with
        /// JSON, on MariaDB one statement per table); a batch naming a
        /// transfer that has no row writes nothing.
        a_transfers_rows_read_back_as_written,
        a_transfers_rows_read_back_as_written_on_mariadb,
        "ledger_fields",
        rows_read_back
    );

    async fn rows_read_back(store: &Store) {
        use crate::transfers::{MessageHash, NewFulfilment, TransferStateChange};
        let writer = crate::writer::tests::test_writer(store);
        let transfer = crate::transfers::NewTransfer {
            amount: Decimal::new(1_234_567, 4),
            ilp_packet: "AYIBgQAAAAAAAASw\\\"quoted\\\" ünïcode".into(),
            ..crate::transfers::test_transfer("fields-1")
        };
        let state = |state: &str, reason: Option<&str>| TransferStateChange {
            transfer_id: "fields-1".into(),
            state: state.into(),
            reason: reason.map(str::to_string),
        };
        let mut rows = TransferWrite {
            transfers: vec![std::sync::Arc::new(transfer.clone())],
            states: vec![state("RESERVED", None)],
            ..TransferWrite::default()
        };
        writer
            .write(transfer_rows(rows.clone()))
            .await
            .expect("prepare written");
        rows = TransferWrite {
            states: vec![state("COMMITTED", Some("payee said \"yes\""))],
            fulfilments: vec![NewFulfilment {
                transfer_id: "fields-1".into(),
                fulfilment: "f".repeat(43),
                completed_timestamp: "2030-01-01T00:00:01.000Z".into(),
            }],
            hashes: vec![MessageHash {
                transfer_id: "fields-1".into(),
                kind: "FULFIL".into(),
                hash: "fulfil hash".into(),
            }],
            ..TransferWrite::default()
        };
        writer
            .write(transfer_rows(rows))
            .await
            .expect("fulfil written");
        let record = store.transfer("fields-1").await.expect("read");
        let record = record.expect("written");
        assert_eq!(record.transfer, transfer);
        assert_eq!(record.state, "COMMITTED");
        assert_eq!(record.state_reason.as_deref(), Some("payee said \"yes\""));
        assert_eq!(record.fulfilment, Some("f".repeat(43)));
        assert_eq!(
            record.completed_timestamp.as_deref(),
            Some("2030-01-01T00:00:01.000Z")
        );
        assert_eq!(record.settlement_window_id, Some(1), "the open window");
        assert_eq!(record.fulfil_hash.as_deref(), Some("fulfil hash"));

        let orphan = transfer_rows(TransferWrite {
            transfers: vec![std::sync::Arc::new(crate::transfers::test_transfer(
                "fields-2",
            ))],
            states: vec![TransferStateChange {
                transfer_id: "no-such-transfer".into(),
                state: "RESERVED".into(),
                reason: None,
            }],
            ..TransferWrite::default()
        });
        assert!(writer.write(orphan).await.is_err());
        assert_eq!(store.transfer("fields-2").await.expect("read"), None);
    }

    fn change(
        account: &crate::participants::AccountRecord,
        value: i64,
        reserved: i64,
    ) -> AccountChange {
        AccountChange {
            account_id: account.id,
            position_id: account.position_id,
            value: Decimal::from(value),
            reserved_value: Decimal::from(reserved),
            change_value: Decimal::from(value),
            change_reserved: Decimal::from(reserved),
            kind: "TEST".into(),
            reference: None,
        }
    }

    test_on_both_backends!(
        /// A batch that moves several positions (some more than once) leaves
        /// each position row at its last change and the others untouched; a
        /// batch naming an account without a position row writes nothing.
        /// On MariaDB an UPDATE's affected rows are the rows it changed
        /// unless the client asks for the rows it matched: a position whose
        /// last change leaves it as it was must still count.
        each_position_row_takes_its_last_change,
        each_position_row_takes_its_last_change_on_mariadb,
        "ledger_positions",
        last_changes_win
    );

    async fn last_changes_win(store: &Store) {
        let writer = crate::writer::tests::test_writer(store);
        let mut accounts = Vec::new();
        for name in ["dfsp1", "dfsp2", "dfsp3"] {
            let id = store
                .create_participant(name, false)
                .await
                .expect("participant");
            store
                .create_accounts(id, "USD", &["POSITION", "SETTLEMENT"])
                .await
                .expect("accounts");
            let participant = store
                .participant(name)
                .await
                .expect("read")
                .expect("exists");
            accounts.extend(participant.accounts);
        }
        assert_eq!(accounts.len(), 6);
        // Six accounts named (padded to eight in the statement), the first
        // twice.
        // The sixth account is named with the balances it already has
        // (0, 0): its row matches but does not change.
        let changes = vec![
            change(&accounts[0], 1, 7),
            change(&accounts[1], -2, 0),
            change(&accounts[2], 3, 1),
            change(&accounts[0], 4, 5),
            change(&accounts[3], -5, 0),
            change(&accounts[4], 6, 2),
            change(&accounts[5], 0, 0),
        ];
        writer
            .write(LedgerWrite {
                changes,
                ..LedgerWrite::default()
            })
            .await
            .expect("batch written");
        let balances = || async {
            let mut balances = Vec::new();
            for name in ["dfsp1", "dfsp2", "dfsp3"] {
                let participant = store
                    .participant(name)
                    .await
                    .expect("read")
                    .expect("exists");
                balances.extend(
                    participant
                        .accounts
                        .iter()
                        .map(|a| (a.value, a.reserved_value)),
                );
            }
            balances
        };
        let expected: Vec<(Decimal, Decimal)> = [(4, 5), (-2, 0), (3, 1), (-5, 0), (6, 2), (0, 0)]
            .into_iter()
            .map(|(v, r)| (Decimal::from(v), Decimal::from(r)))
            .collect();
        assert_eq!(balances().await, expected);

        let mut missing = change(&accounts[5], 9, 9);
        missing.account_id = 9_999;
        let error = writer
            .write(LedgerWrite {
                changes: vec![change(&accounts[0], 100, 0), missing],
                ..LedgerWrite::default()
            })
            .await
            .expect_err("an account without a position row");
        assert!(error.to_string().contains("1 of the accounts"), "{error}");
        assert_eq!(
            balances().await,
            expected,
            "nothing of the failed batch written"
        );
    }
}
