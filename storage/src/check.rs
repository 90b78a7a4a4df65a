//! Ledger invariants, verified from the database alone (`mojaswitch check`).
//!
//! Each invariant has a name; a report lists every invariant with the number
//! of rows it looked at and the first violations it found.

use std::collections::BTreeMap;

use futures::TryStreamExt;

use crate::{col, Result, Snapshot, Store};

/// Violations kept per invariant; the count of all of them is still reported.
const VIOLATIONS_SHOWN_MAX: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct InvariantReport {
    pub name: &'static str,
    pub rows_checked: u64,
    pub violations: u64,
    pub examples: Vec<String>,
}

impl InvariantReport {
    fn new(name: &'static str) -> Self {
        InvariantReport {
            name,
            rows_checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    fn violation(&mut self, detail: String) {
        self.violations += 1;
        if self.examples.len() < VIOLATIONS_SHOWN_MAX {
            self.examples.push(detail);
        }
    }

    pub fn holds(&self) -> bool {
        self.violations == 0
    }
}

impl Store {
    /// Checks every ledger invariant and reports on each, in one read
    /// transaction: each sees the same snapshot, even while the switch
    /// keeps writing.
    pub async fn check_invariants(&self) -> Result<Vec<InvariantReport>> {
        self.in_long_read(|tx| Box::pin(check_all(tx))).await
    }
}

async fn check_all(tx: &mut Snapshot<'_>) -> Result<Vec<InvariantReport>> {
    let mut reports = Vec::new();
    reports.extend(check_position_histories(tx).await?);
    reports.push(check_limits_not_negative(tx).await?);
    reports.push(check_admin_transfers_final(tx).await?);
    reports.push(check_currency_nets_zero(tx).await?);
    reports.push(check_transfer_movements(tx).await?);
    reports.push(check_history_keys(tx).await?);
    reports.push(check_window_content(tx).await?);
    reports.push(check_settlement_moves(tx).await?);
    reports.push(check_gross_settlements(tx).await?);
    Ok(reports)
}

/// `positions_equal_history` and `history_has_no_gaps`.
async fn check_position_histories(tx: &mut Snapshot<'_>) -> Result<Vec<InvariantReport>> {
    let mut equal = InvariantReport::new("positions_equal_sum_of_changes");
    let mut gaps = InvariantReport::new("position_history_has_no_gaps");
    // Running state per position: (value, reserved) as the history says.
    let mut running: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut rows = sqlx::query(
        "SELECT participant_position_change_id, participant_position_id, value, reserved_value, change_value, change_reserved \
         FROM participant_position_change ORDER BY participant_position_id, participant_position_change_id",
    )
    .fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        gaps.rows_checked += 1;
        let id: i64 = col(&row, "participant_position_change_id")?;
        let position: i64 = col(&row, "participant_position_id")?;
        let value: i64 = col(&row, "value")?;
        let reserved: i64 = col(&row, "reserved_value")?;
        let change: i64 = col(&row, "change_value")?;
        let change_reserved: i64 = col(&row, "change_reserved")?;
        let (before_value, before_reserved) = running.get(&position).copied().unwrap_or((0, 0));
        if before_value.checked_add(change) != Some(value)
            || before_reserved.checked_add(change_reserved) != Some(reserved)
        {
            gaps.violation(format!(
                "position {position} change {id}: ({before_value}, {before_reserved}) + ({change}, {change_reserved}) != ({value}, {reserved}) [units of 1/10000]"
            ));
        }
        running.insert(position, (value, reserved));
    }
    drop(rows);
    let positions = sqlx::query(
        "SELECT participant_position_id, value, reserved_value FROM participant_position",
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in &positions {
        equal.rows_checked += 1;
        let position: i64 = col(row, "participant_position_id")?;
        let value: i64 = col(row, "value")?;
        let reserved: i64 = col(row, "reserved_value")?;
        let history = running.get(&position).copied().unwrap_or((0, 0));
        if history != (value, reserved) {
            equal.violation(format!(
                "position {position}: stored ({value}, {reserved}) but history sums to ({}, {}) [units of 1/10000]",
                history.0, history.1
            ));
        }
    }
    Ok(vec![equal, gaps])
}

async fn check_limits_not_negative(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("limits_not_negative");
    let rows = sqlx::query(
        "SELECT participant_limit_id, value, threshold_alarm_percentage FROM participant_limit",
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        report.rows_checked += 1;
        let id: i64 = col(row, "participant_limit_id")?;
        let value: i64 = col(row, "value")?;
        let alarm: i64 = col(row, "threshold_alarm_percentage")?;
        if value < 0 || alarm < 0 {
            report.violation(format!("limit {id}: value {value}, alarm {alarm}"));
        }
    }
    Ok(report)
}

/// The tables keyed by `transfer_seq` that also name the transfer by id.
const TRANSFER_HISTORY_TABLES: [&str; 4] = [
    "transfer_state_change",
    "transfer_fulfilment",
    "transfer_error",
    "transfer_duplicate_check",
];

/// Every history row's `transfer_seq` is the seq of the transfer its
/// `transfer_id` names. The batch writer looks each batch's seqs up by id
/// (`transfers::seqs_of`); a wrong one would file a state, a fulfilment or
/// a hash under another transfer.
async fn check_history_keys(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("transfer_history_rows_key_their_transfer");
    for table in TRANSFER_HISTORY_TABLES {
        let mismatched = "t.transfer_id IS NULL OR t.transfer_id <> h.transfer_id";
        let counts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS checked, CAST(COALESCE(SUM(CASE WHEN {mismatched} THEN 1 ELSE 0 END), 0) AS SIGNED) AS bad \
             FROM {table} h LEFT JOIN transfer t ON t.transfer_seq = h.transfer_seq"
        )))
        .fetch_one(&mut **tx)
        .await?;
        let checked: i64 = col(&counts, "checked")?;
        report.rows_checked += checked.max(0) as u64;
        let bad: i64 = col(&counts, "bad")?;
        if bad == 0 {
            continue;
        }
        let examples = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT h.transfer_seq, h.transfer_id FROM {table} h LEFT JOIN transfer t ON t.transfer_seq = h.transfer_seq \
             WHERE {mismatched} LIMIT {VIOLATIONS_SHOWN_MAX}"
        )))
        .fetch_all(&mut **tx)
        .await?;
        for row in &examples {
            let seq: i64 = col(row, "transfer_seq")?;
            let id: String = col(row, "transfer_id")?;
            report.violation(format!(
                "{table}: a row for {id} has transfer_seq {seq}, which is not that transfer's"
            ));
        }
        // The rest are counted without examples.
        report.violations += (bad as u64).saturating_sub(examples.len() as u64);
    }
    Ok(report)
}

/// An operator transfer's states follow RESERVED -> COMMITTED|ABORTED or are a
/// single COMMITTED, and nothing follows a final state.
async fn check_admin_transfers_final(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("operator_transfers_final_states_never_change");
    let rows = sqlx::query(
        "SELECT transfer_id, state FROM admin_transfer_state_change ORDER BY transfer_id, admin_transfer_state_change_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut histories: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &rows {
        report.rows_checked += 1;
        histories
            .entry(col(row, "transfer_id")?)
            .or_default()
            .push(col(row, "state")?);
    }
    for (transfer_id, states) in histories {
        let states: Vec<&str> = states.iter().map(String::as_str).collect();
        let valid = matches!(
            states.as_slice(),
            ["COMMITTED"] | ["RESERVED"] | ["RESERVED", "COMMITTED"] | ["RESERVED", "ABORTED"]
        );
        if !valid {
            report.violation(format!(
                "operator transfer {transfer_id}: states {states:?}"
            ));
        }
    }
    Ok(report)
}

/// The position change kinds a transfer makes.
macro_rules! transfer_move_kinds {
    () => {
        "('TRANSFER_RESERVE', 'TRANSFER_COMMIT', 'TRANSFER_REVERSE')"
    };
}

/// Every ledger movement has two sides, so per currency the balances of all
/// accounts sum to zero, except for reservations of transfers still in
/// flight (the payer's side moves at reserve, the payee's at commit).
async fn check_currency_nets_zero(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("balances_net_to_zero_per_currency");
    let reserved_rows = sqlx::query(concat!(
        "SELECT t.currency_id, CAST(SUM(t.amount) AS SIGNED) AS total FROM transfer t JOIN ",
        newest_state_of_t!(),
        " WHERE s.state = 'RESERVED' GROUP BY t.currency_id"
    ))
    .fetch_all(&mut **tx)
    .await?;
    let mut in_flight: BTreeMap<String, i128> = BTreeMap::new();
    for row in &reserved_rows {
        let total: i64 = col(row, "total")?;
        in_flight.insert(col(row, "currency_id")?, total as i128);
    }
    let rows = sqlx::query(
        "SELECT pc.currency_id, pp.value FROM participant_position pp \
         JOIN participant_currency pc ON pc.participant_currency_id = pp.participant_currency_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for row in &rows {
        report.rows_checked += 1;
        let value: i64 = col(row, "value")?;
        *sums.entry(col(row, "currency_id")?).or_default() += value as i128;
    }
    for currency in in_flight.keys() {
        sums.entry(currency.clone()).or_default();
    }
    for (currency, sum) in sums {
        let reserved = in_flight.get(&currency).copied().unwrap_or(0);
        if sum != reserved {
            report.violation(format!(
                "{currency}: balances sum to {sum} but transfers in flight reserve {reserved} [units of 1/10000]"
            ));
        }
    }
    Ok(report)
}

/// Each transfer with its newest state and its position moves, as
/// (count, sum) per kind. The database groups and joins the moves, and the
/// rows are read one at a time: a check of millions of transfers holds one
/// transfer in memory, not all of them (it held 4.6 GB after an hour at
/// 3,000/s when it gathered them in maps).
const TRANSFERS_WITH_THEIR_MOVES: &str = concat!(
    "SELECT t.transfer_id, t.amount, s.state, \
     COALESCE(m.reserve_n, 0) AS reserve_n, COALESCE(m.reserve_sum, 0) AS reserve_sum, \
     COALESCE(m.commit_n, 0) AS commit_n, COALESCE(m.commit_sum, 0) AS commit_sum, \
     COALESCE(m.reverse_n, 0) AS reverse_n, COALESCE(m.reverse_sum, 0) AS reverse_sum \
     FROM transfer t LEFT JOIN ",
    newest_state_of_t!(),
    " LEFT JOIN (SELECT reference, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_RESERVE' THEN 1 ELSE 0 END) AS SIGNED) AS reserve_n, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_RESERVE' THEN change_value ELSE 0 END) AS SIGNED) AS reserve_sum, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_COMMIT' THEN 1 ELSE 0 END) AS SIGNED) AS commit_n, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_COMMIT' THEN change_value ELSE 0 END) AS SIGNED) AS commit_sum, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_REVERSE' THEN 1 ELSE 0 END) AS SIGNED) AS reverse_n, \
     CAST(SUM(CASE WHEN kind = 'TRANSFER_REVERSE' THEN change_value ELSE 0 END) AS SIGNED) AS reverse_sum \
     FROM participant_position_change WHERE kind IN ",
    transfer_move_kinds!(),
    " GROUP BY reference) m ON m.reference = t.transfer_id"
);

/// The (count, sum) columns of [`TRANSFERS_WITH_THEIR_MOVES`]: reserve,
/// commit, reverse.
const MOVE_COLUMNS: [(&str, &str); 3] = [
    ("reserve_n", "reserve_sum"),
    ("commit_n", "commit_sum"),
    ("reverse_n", "reverse_sum"),
];

/// Each transfer moved positions exactly as its final state says: reserved
/// once, then committed once or reversed once, never both, never twice.
async fn check_transfer_movements(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("transfers_move_positions_exactly_once");
    let mut rows = sqlx::query(TRANSFERS_WITH_THEIR_MOVES).fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        report.rows_checked += 1;
        let amount: i64 = col(&row, "amount")?;
        let state: String = col::<Option<String>>(&row, "state")?.unwrap_or_default();
        let mut moves = [(0, 0); 3];
        for (found, (count, sum)) in moves.iter_mut().zip(MOVE_COLUMNS) {
            *found = (col(&row, count)?, col(&row, sum)?);
        }
        let [reserve, commit, reverse] = moves;
        let expected = expected_moves(&state, amount);
        if moves != expected {
            let id: String = col(&row, "transfer_id")?;
            report.violation(format!(
                "transfer {id} ({state}, amount {amount}): reserve {reserve:?}, commit {commit:?}, reverse {reverse:?}; expected {expected:?}"
            ));
        }
    }
    drop(rows);
    let mut orphans = sqlx::query(concat!(
        "SELECT c.reference, COUNT(*) AS n FROM participant_position_change c \
         LEFT JOIN transfer t ON t.transfer_id = c.reference \
         WHERE c.kind IN ",
        transfer_move_kinds!(),
        " AND t.transfer_seq IS NULL GROUP BY c.reference"
    ))
    .fetch(&mut **tx);
    while let Some(row) = orphans.try_next().await? {
        let reference: Option<String> = col(&row, "reference")?;
        let count: i64 = col(&row, "n")?;
        report.violation(format!(
            "{count} position changes for unknown transfer {}",
            reference.unwrap_or_default()
        ));
    }
    Ok(report)
}

/// The (count, sum) of reserve, commit and reverse moves a transfer in
/// `state` has made.
fn expected_moves(state: &str, amount: i64) -> [(i64, i64); 3] {
    let reserved = (1, amount);
    match state {
        "RESERVED" => [reserved, (0, 0), (0, 0)],
        "COMMITTED" | "SETTLED" => [reserved, (1, -amount), (0, 0)],
        "ABORTED_ERROR" | "EXPIRED_RESERVED" => [reserved, (0, 0), (1, -amount)],
        _ => [(0, 0), (0, 0), (0, 0)],
    }
}

/// Per closed window and currency, the aggregated content equals the
/// transfers committed into the window and not settled gross: the same sum,
/// the same count.
async fn check_window_content(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("closed_windows_hold_exactly_their_commits");
    let committed = sqlx::query(
        "SELECT f.settlement_window_id, t.currency_id, CAST(SUM(t.amount) AS SIGNED) AS total, COUNT(*) AS n \
         FROM transfer_fulfilment f JOIN transfer t ON t.transfer_seq = f.transfer_seq \
         JOIN settlement_window w ON w.settlement_window_id = f.settlement_window_id \
         LEFT JOIN gross_settlement g ON g.transfer_id = f.transfer_id \
         WHERE w.state <> 'OPEN' AND g.transfer_id IS NULL GROUP BY f.settlement_window_id, t.currency_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let aggregated = sqlx::query(
        "SELECT c.settlement_window_id, c.currency_id, CAST(SUM(a.sent_amount) AS SIGNED) AS total, \
         CAST(SUM(a.sent_count) AS SIGNED) AS n, CAST(SUM(a.sent_amount - a.received_amount) AS SIGNED) AS net \
         FROM settlement_window_content c JOIN settlement_content_aggregation a \
         ON a.settlement_window_content_id = c.settlement_window_content_id \
         GROUP BY c.settlement_window_id, c.currency_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut expected: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for row in &committed {
        report.rows_checked += 1;
        let key = (col(row, "settlement_window_id")?, col(row, "currency_id")?);
        expected.insert(key, (col(row, "total")?, col(row, "n")?));
    }
    for row in &aggregated {
        let key: (i64, String) = (col(row, "settlement_window_id")?, col(row, "currency_id")?);
        let found: (i64, i64) = (col(row, "total")?, col(row, "n")?);
        let net: i64 = col(row, "net")?;
        if net != 0 {
            report.violation(format!(
                "window {} {}: content nets to {net}, not 0",
                key.0, key.1
            ));
        }
        match expected.remove(&key) {
            Some(wanted) if wanted == found => {}
            wanted => report.violation(format!(
                "window {} {}: content (sum, count) {found:?}, committed transfers {wanted:?}",
                key.0, key.1
            )),
        }
    }
    for ((window, currency), wanted) in expected {
        report.violation(format!(
            "window {window} {currency}: committed transfers {wanted:?} are in no content"
        ));
    }
    Ok(report)
}

/// Each settlement's nets sum to zero per currency, and a settlement
/// account moved positions exactly once, by its net, if and only if it
/// passed PS_TRANSFERS_COMMITTED under a model with automatic position reset.
/// (The hub's counter-entries on HUB_MULTILATERAL_SETTLEMENT net to zero per
/// settlement; `balances_net_to_zero_per_currency` covers them.)
async fn check_settlement_moves(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("settlements_net_to_zero_and_move_positions_once");
    let accounts = sqlx::query(
        "SELECT spc.settlement_id, spc.participant_currency_id, pc.currency_id, spc.net_amount, spc.state, m.auto_position_reset \
         FROM settlement_participant_currency spc \
         JOIN participant_currency pc ON pc.participant_currency_id = spc.participant_currency_id \
         JOIN settlement s ON s.settlement_id = spc.settlement_id \
         JOIN settlement_model m ON m.settlement_model_id = s.settlement_model_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let moves = sqlx::query(
        "SELECT c.reference, c.participant_currency_id, COUNT(*) AS n, CAST(SUM(c.change_value) AS SIGNED) AS total \
         FROM participant_position_change c \
         JOIN participant_currency pc ON pc.participant_currency_id = c.participant_currency_id \
         JOIN ledger_account_type lat ON lat.ledger_account_type_id = pc.ledger_account_type_id \
         WHERE c.kind = 'SETTLEMENT_POSITION_RESET' AND lat.name = 'POSITION' \
         GROUP BY c.reference, c.participant_currency_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut moved: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for row in &moves {
        let reference: Option<String> = col(row, "reference")?;
        moved.insert(
            (
                reference.unwrap_or_default(),
                col(row, "participant_currency_id")?,
            ),
            (col(row, "n")?, col(row, "total")?),
        );
    }
    let mut nets: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for row in &accounts {
        report.rows_checked += 1;
        let settlement: i64 = col(row, "settlement_id")?;
        let account: i64 = col(row, "participant_currency_id")?;
        let net: i64 = col(row, "net_amount")?;
        let state: String = col(row, "state")?;
        let auto_reset = col::<i64>(row, "auto_position_reset")? != 0;
        *nets
            .entry((settlement, col(row, "currency_id")?))
            .or_default() += net;
        let passed_commit = state == "PS_TRANSFERS_COMMITTED" || state == "SETTLED";
        let wanted = if passed_commit && auto_reset && net != 0 {
            (1, -net)
        } else {
            (0, 0)
        };
        let found = moved
            .remove(&(format!("settlement:{settlement}"), account))
            .unwrap_or((0, 0));
        if found != wanted {
            report.violation(format!(
                "settlement {settlement} account {account} ({state}, net {net}): position moves {found:?}, expected {wanted:?}"
            ));
        }
    }
    for ((settlement, currency), net) in nets {
        if net != 0 {
            report.violation(format!(
                "settlement {settlement} {currency}: nets sum to {net}, not 0"
            ));
        }
    }
    for ((reference, account), found) in moved {
        report.violation(format!(
            "position moves {found:?} on account {account} for unknown {reference}"
        ));
    }
    Ok(report)
}

/// A transfer settled gross moved positions back exactly once per side:
/// the payee's by +amount with the commit, the payer's by -amount when the
/// settlement completed (and then the transfer is SETTLED).
async fn check_gross_settlements(tx: &mut Snapshot<'_>) -> Result<InvariantReport> {
    let mut report = InvariantReport::new("gross_settlements_move_each_side_once");
    let mut rows = sqlx::query(concat!(
        "SELECT g.transfer_id, t.amount, g.payer_settled_date, s.state, \
         COALESCE(m.moves, 0) AS moves, COALESCE(m.total, 0) AS total \
         FROM gross_settlement g JOIN transfer t ON t.transfer_id = g.transfer_id LEFT JOIN ",
        newest_state_of_t!(),
        " LEFT JOIN (SELECT c.reference, COUNT(*) AS moves, CAST(SUM(c.change_value) AS SIGNED) AS total \
            FROM participant_position_change c \
            JOIN participant_currency pc ON pc.participant_currency_id = c.participant_currency_id \
            JOIN ledger_account_type lat ON lat.ledger_account_type_id = pc.ledger_account_type_id \
            WHERE c.kind = 'GROSS_SETTLEMENT' AND lat.name = 'POSITION' GROUP BY c.reference) m \
         ON m.reference = g.transfer_id"
    ))
    .fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        report.rows_checked += 1;
        let transfer: String = col(&row, "transfer_id")?;
        let amount: i64 = col(&row, "amount")?;
        let payer_done = col::<Option<String>>(&row, "payer_settled_date")?.is_some();
        let found: (i64, i64) = (col(&row, "moves")?, col(&row, "total")?);
        let state: String = col::<Option<String>>(&row, "state")?.unwrap_or_default();
        let (wanted, wanted_state) = if payer_done {
            ((2, 0), "SETTLED")
        } else {
            ((1, amount), "COMMITTED")
        };
        if found != wanted || state != wanted_state {
            report.violation(format!(
                "transfer {transfer} ({state}): gross moves (count, sum) {found:?}, expected {wanted:?} and {wanted_state}"
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use crate::ledger::LedgerWrite;
    use crate::transfers::{test_transfer, TransferStateChange, TransferWrite};

    fn entered(ids: &[&str], state: &str) -> LedgerWrite {
        let states = ids
            .iter()
            .map(|id| TransferStateChange {
                transfer_id: id.to_string(),
                state: state.into(),
                reason: None,
            })
            .collect();
        LedgerWrite {
            transfers: TransferWrite {
                states,
                ..TransferWrite::default()
            },
            ..LedgerWrite::default()
        }
    }

    fn prepared(ids: &[&str]) -> LedgerWrite {
        let mut write = entered(ids, "RESERVED");
        write.transfers.transfers = ids
            .iter()
            .map(|id| std::sync::Arc::new(test_transfer(id)))
            .collect();
        write
    }

    /// History rows written by the batch writer, in the batch that creates
    /// their transfer and in a later one, are each keyed by their own
    /// transfer; a row filed under another transfer's seq is reported.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_rows_keyed_by_another_transfer_are_reported() {
        let (store, dir) = crate::scratch_store("check-keys", 5_000).await;
        let writer = crate::writer::tests::test_writer(&store);
        let ids = ["a", "b", "c"];
        writer.write(prepared(&ids)).await.expect("prepare batch");
        writer
            .write(entered(&ids, "COMMITTED"))
            .await
            .expect("commit batch");
        let history_keys = |reports: Vec<super::InvariantReport>| {
            reports
                .into_iter()
                .find(|r| r.name == "transfer_history_rows_key_their_transfer")
                .expect("the invariant is checked")
        };
        let report = history_keys(store.check_invariants().await.expect("check"));
        assert!(report.holds(), "{report:?}");
        assert_eq!(report.rows_checked, 6);

        sqlx::query(
            "UPDATE transfer_state_change SET transfer_seq = \
             (SELECT transfer_seq FROM transfer WHERE transfer_id = 'b') \
             WHERE transfer_id = 'a' AND state = 'COMMITTED'",
        )
        .execute(&store.pool)
        .await
        .expect("file a's commit under b");
        let report = history_keys(store.check_invariants().await.expect("check"));
        assert_eq!(report.violations, 1, "{report:?}");
        assert!(
            report.examples[0].contains("for a has transfer_seq"),
            "{report:?}"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    fn report(reports: &[super::InvariantReport], name: &str) -> super::InvariantReport {
        reports
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .expect("the invariant is checked")
    }

    /// A transfer's position moves are compared with its newest state, one
    /// transfer at a time; moves twice over and moves for a transfer that
    /// does not exist are reported, and reservations in flight are what the
    /// balances may sum to.
    async fn transfer_moves_are_checked(store: &crate::Store) {
        let writer = crate::writer::tests::test_writer(store);
        writer
            .write(prepared(&["a", "b", "c"]))
            .await
            .expect("prepares");
        writer
            .write(entered(&["b"], "COMMITTED"))
            .await
            .expect("commit");
        writer
            .write(entered(&["c"], "EXPIRED_RESERVED"))
            .await
            .expect("expiry");
        // (transfer, kind, change in 1/10000): a reserved, b committed, c
        // reversed twice, and a commit for a transfer that never was.
        let moves = [
            ("a", "TRANSFER_RESERVE", 10_000),
            ("b", "TRANSFER_RESERVE", 10_000),
            ("b", "TRANSFER_COMMIT", -10_000),
            ("c", "TRANSFER_RESERVE", 10_000),
            ("c", "TRANSFER_REVERSE", -10_000),
            ("c", "TRANSFER_REVERSE", -10_000),
            ("z", "TRANSFER_COMMIT", -10_000),
        ];
        for (reference, kind, change) in moves {
            sqlx::query(
                "INSERT INTO participant_position_change (participant_position_id, participant_currency_id, value, \
                 reserved_value, change_value, change_reserved, kind, reference, created_date) \
                 VALUES (1, 1, 0, 0, ?, 0, ?, ?, '2026-12-04T00:00:00.000Z')",
            )
            .bind(change)
            .bind(kind)
            .bind(reference)
            .execute(&store.pool)
            .await
            .expect("insert a move");
        }
        let reports = store.check_invariants().await.expect("check");

        let moved = report(&reports, "transfers_move_positions_exactly_once");
        assert_eq!((moved.rows_checked, moved.violations), (3, 2), "{moved:?}");
        assert!(
            moved.examples[0].starts_with("transfer c (EXPIRED_RESERVED, amount 10000)")
                && moved.examples[0].contains("reverse (2, -20000)"),
            "{moved:?}"
        );
        assert_eq!(
            moved.examples[1], "1 position changes for unknown transfer z",
            "{moved:?}"
        );

        // No account has moved, but a's 1.0000 USD is reserved in flight.
        let nets = report(&reports, "balances_net_to_zero_per_currency");
        assert_eq!(nets.violations, 1, "{nets:?}");
        assert!(
            nets.examples[0]
                .starts_with("USD: balances sum to 0 but transfers in flight reserve 10000"),
            "{nets:?}"
        );
    }

    test_on_both_backends!(
        transfer_moves_are_checked_on_sqlite,
        transfer_moves_are_checked_on_mariadb,
        "check_moves",
        transfer_moves_are_checked
    );
}
