//! Position rules as a plain state machine: no I/O, no clock, no actix.
//!
//! A [`PositionBook`] is one participant's accounts in one currency (POSITION
//! and SETTLEMENT) plus its net debit cap. [`decide`] takes a command and
//! returns the next book together with the ledger rows that make the change
//! durable; the caller writes the rows and only then adopts the new book.
//!
//! Sign conventions (as the reference hub): a POSITION above zero is what the
//! participant owes; a SETTLEMENT balance below zero is money it holds at the
//! settlement bank, so its liquidity cover is `-(settlement value)`.

use rust_decimal::Decimal;
use switch_storage::ledger::{
    AccountChange, AccountIncrement, AdminStateChange, AdminTransferRecord, LedgerWrite,
    NewAdminTransfer, NewLimit,
};

use switch_storage::settlement::SettlementAccountStep;
use switch_storage::transfers::{
    MessageHash, NewFulfilment, NewTransfer, NewTransferError, TransferStateChange, TransferWrite,
};

use crate::error::{ErrorCode, FspiopError};

/// One ledger account as the owning actor sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub id: i64,
    pub position_id: i64,
    pub value: Decimal,
    pub reserved: Decimal,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetDebitCap {
    pub value: Decimal,
    pub alarm_percentage: Decimal,
}

/// Everything a position actor decides on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositionBook {
    pub participant: String,
    pub currency: String,
    pub position: Account,
    pub settlement: Account,
    pub net_debit_cap: Option<NetDebitCap>,
    /// The hub's HUB_RECONCILIATION account in this currency (funds in/out).
    pub hub_reconciliation: i64,
    /// The hub's HUB_MULTILATERAL_SETTLEMENT account (initial positions).
    pub hub_multilateral_settlement: i64,
}

/// An operator movement of funds (the body of recordFundsIn / recordFundsOutPrepareReserve).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FundsMove {
    pub transfer_id: String,
    pub amount: Decimal,
    pub external_reference: String,
    pub reason: String,
    /// Hash of the request body, for duplicate detection.
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PositionCommand {
    InitialPositionAndLimits {
        net_debit_cap: Decimal,
        alarm_percentage: Decimal,
        initial_position: Decimal,
    },
    SetNetDebitCap {
        value: Decimal,
        alarm_percentage: Decimal,
    },
    FundsIn(FundsMove),
    FundsOutReserve(FundsMove),
    FundsOutFinish {
        transfer_id: String,
        commit: bool,
        reason: String,
    },
    /// A prepare on the payer's position: liquidity cover, then net debit cap.
    Reserve {
        transfer: std::sync::Arc<NewTransfer>,
        now_ms: i64,
    },
    /// A fulfil on the payee's position.
    Commit {
        transfer_id: String,
        amount: Decimal,
        fulfilment: NewFulfilment,
        hash: Option<MessageHash>,
        /// The IMMEDIATE-GROSS model that settles the transfer at once, if any.
        gross_model: Option<i64>,
    },
    /// The payer's side of an immediate gross settlement: completes the
    /// transfer as SETTLED.
    GrossSettlePayer {
        transfer_id: String,
        amount: Decimal,
    },
    /// The reserve step of a settlement account: a net payer's liquidity
    /// cover must hold its net amount (4001 otherwise). Moves nothing.
    SettlementLiquidityCheck {
        net_amount: Decimal,
    },
    /// The commit step of a settlement account with automatic position
    /// reset: the position moves back by the net amount and the settlement
    /// account by the opposite, each against HUB_MULTILATERAL_SETTLEMENT,
    /// durable together with the account's step.
    SettlementTransfer {
        settlement_id: i64,
        net_amount: Decimal,
        step: SettlementAccountStep,
    },
    /// Gives a reservation back to the payer (payee error, invalid fulfil, expiry).
    Reverse {
        transfer_id: String,
        amount: Decimal,
        states: Vec<TransferStateChange>,
        error: Option<NewTransferError>,
        hash: Option<MessageHash>,
    },
}

impl PositionCommand {
    /// The operator transfer this command refers to, whose stored record
    /// [`decide`] needs for duplicate detection.
    pub fn admin_transfer_id(&self) -> Option<&str> {
        match self {
            PositionCommand::FundsIn(m) | PositionCommand::FundsOutReserve(m) => {
                Some(&m.transfer_id)
            }
            PositionCommand::FundsOutFinish { transfer_id, .. } => Some(transfer_id),
            _ => None,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub book: PositionBook,
    pub write: LedgerWrite,
    /// True when the command repeated one already applied: nothing to write.
    pub duplicate: bool,
    pub outcome: Outcome,
}

/// How a transfer command ended (operator commands are always `Applied`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Applied,
    /// The prepare was refused (4001 or 4200) and recorded ABORTED_REJECTED.
    Rejected(FspiopError),
    /// The prepare expired before it could be reserved (EXPIRED_PREPARED).
    Expired,
}

pub const FUNDS_IN: &str = "recordFundsIn";
pub const FUNDS_OUT_RESERVE: &str = "recordFundsOutPrepareReserve";

fn validation(detail: impl Into<String>) -> FspiopError {
    FspiopError::new(ErrorCode::GenericValidationError, detail)
}

fn unchanged(book: &PositionBook) -> Decision {
    Decision {
        book: book.clone(),
        write: LedgerWrite::default(),
        duplicate: true,
        outcome: Outcome::Applied,
    }
}

fn applied(book: PositionBook, write: LedgerWrite) -> Decision {
    Decision {
        book,
        write,
        duplicate: false,
        outcome: Outcome::Applied,
    }
}

/// Decides a command against a book. `existing` is the stored operator
/// transfer named by the command, if any.
pub fn decide(
    book: &PositionBook,
    command: PositionCommand,
    existing: Option<&AdminTransferRecord>,
) -> Result<Decision, FspiopError> {
    match command {
        PositionCommand::InitialPositionAndLimits {
            net_debit_cap,
            alarm_percentage,
            initial_position,
        } => initial_position_and_limits(book, net_debit_cap, alarm_percentage, initial_position),
        PositionCommand::SetNetDebitCap {
            value,
            alarm_percentage,
        } => set_net_debit_cap(book, value, alarm_percentage),
        PositionCommand::FundsIn(funds) => funds_in(book, funds, existing),
        PositionCommand::FundsOutReserve(funds) => funds_out_reserve(book, funds, existing),
        PositionCommand::FundsOutFinish {
            transfer_id,
            commit,
            reason,
        } => funds_out_finish(book, &transfer_id, commit, &reason, existing),
        PositionCommand::Reserve { transfer, now_ms } => Ok(reserve(book, transfer, now_ms)),
        PositionCommand::Commit {
            transfer_id,
            amount,
            fulfilment,
            hash,
            gross_model,
        } => {
            let mut decision = commit(book, &transfer_id, amount, fulfilment, hash);
            if let Some(model_id) = gross_model {
                // The payee is paid at the settlement bank at once: its
                // position moves back and its settlement account is credited.
                let write = gross_settle(&mut decision.book, &transfer_id, -amount);
                decision.write.append(write);
                decision.write.gross_payee.push((transfer_id, model_id));
            }
            Ok(decision)
        }
        PositionCommand::GrossSettlePayer {
            transfer_id,
            amount,
        } => {
            let mut next = book.clone();
            let mut write = gross_settle(&mut next, &transfer_id, amount);
            write
                .transfers
                .states
                .push(transfer_state(&transfer_id, "SETTLED", None));
            write.gross_payer.push(transfer_id);
            Ok(applied(next, write))
        }
        PositionCommand::Reverse {
            transfer_id,
            amount,
            states,
            error,
            hash,
        } => Ok(reverse(book, &transfer_id, amount, states, error, hash)),
        PositionCommand::SettlementLiquidityCheck { net_amount } => {
            settlement_liquidity_check(book, net_amount)
        }
        PositionCommand::SettlementTransfer {
            settlement_id,
            net_amount,
            step,
        } => Ok(settlement_transfer(book, settlement_id, net_amount, step)),
    }
}

fn settlement_liquidity_check(
    book: &PositionBook,
    net_amount: Decimal,
) -> Result<Decision, FspiopError> {
    let cover = -(book.settlement.value + book.settlement.reserved);
    if net_amount > Decimal::ZERO && cover < net_amount {
        return Err(FspiopError::new(
            ErrorCode::PayerInsufficientLiquidity,
            format!(
                "{} holds {cover} {} at the settlement bank but owes {net_amount}",
                book.participant, book.currency
            ),
        ));
    }
    Ok(Decision {
        duplicate: false,
        ..unchanged(book)
    })
}

fn settlement_transfer(
    book: &PositionBook,
    settlement_id: i64,
    net_amount: Decimal,
    step: SettlementAccountStep,
) -> Decision {
    let mut next = book.clone();
    let reference = format!("settlement:{settlement_id}");
    let write = LedgerWrite {
        changes: vec![
            move_account(
                &mut next.position,
                -net_amount,
                Decimal::ZERO,
                "SETTLEMENT_POSITION_RESET",
                Some(&reference),
            ),
            move_account(
                &mut next.settlement,
                net_amount,
                Decimal::ZERO,
                "SETTLEMENT_ACCOUNT_MOVE",
                Some(&reference),
            ),
        ],
        increments: vec![
            AccountIncrement {
                account_id: book.hub_multilateral_settlement,
                change_value: net_amount,
                kind: "SETTLEMENT_POSITION_RESET".into(),
                reference: Some(reference.clone()),
            },
            AccountIncrement {
                account_id: book.hub_multilateral_settlement,
                change_value: -net_amount,
                kind: "SETTLEMENT_ACCOUNT_MOVE".into(),
                reference: Some(reference),
            },
        ],
        settlement_steps: vec![step],
        ..LedgerWrite::default()
    };
    applied(next, write)
}

/// One side of an immediate gross settlement of `owed` (the payer owes
/// +amount, the payee -amount): the position drops by it and the settlement
/// account rises by it, each against HUB_MULTILATERAL_SETTLEMENT.
fn gross_settle(book: &mut PositionBook, transfer_id: &str, owed: Decimal) -> LedgerWrite {
    let hub = book.hub_multilateral_settlement;
    LedgerWrite {
        changes: vec![
            move_account(
                &mut book.position,
                -owed,
                Decimal::ZERO,
                "GROSS_SETTLEMENT",
                Some(transfer_id),
            ),
            move_account(
                &mut book.settlement,
                owed,
                Decimal::ZERO,
                "GROSS_SETTLEMENT",
                Some(transfer_id),
            ),
        ],
        increments: vec![
            AccountIncrement {
                account_id: hub,
                change_value: owed,
                kind: "GROSS_SETTLEMENT".into(),
                reference: Some(transfer_id.to_string()),
            },
            AccountIncrement {
                account_id: hub,
                change_value: -owed,
                kind: "GROSS_SETTLEMENT".into(),
                reference: Some(transfer_id.to_string()),
            },
        ],
        ..LedgerWrite::default()
    }
}

fn transfer_state(transfer_id: &str, state: &str, reason: Option<String>) -> TransferStateChange {
    TransferStateChange {
        transfer_id: transfer_id.into(),
        state: state.into(),
        reason,
    }
}

/// What the participant could still send: cover not promised to
/// withdrawals, less the position it already owes (reserved included).
pub fn liquidity_available(book: &PositionBook) -> Decimal {
    let cover = -(book.settlement.value + book.settlement.reserved);
    cover - (book.position.value + book.position.reserved)
}

/// The prepare check of the reference hub (section 5.2): liquidity cover
/// first (4001), then the net debit cap (4200).
fn reserve(book: &PositionBook, transfer: std::sync::Arc<NewTransfer>, now_ms: i64) -> Decision {
    let id = transfer.transfer_id.clone();
    let mut write = LedgerWrite::default();
    let mut states = vec![transfer_state(&id, "RECEIVED_PREPARE", None)];
    let refusal = if now_ms >= transfer.expiration_ms {
        Some(Outcome::Expired)
    } else {
        let effective = book.position.value + book.position.reserved;
        if transfer.amount > liquidity_available(book) {
            Some(Outcome::Rejected(FspiopError::new(
                ErrorCode::PayerInsufficientLiquidity,
                "liquidity cover is not enough for this transfer",
            )))
        } else {
            match &book.net_debit_cap {
                Some(cap) if transfer.amount <= cap.value - effective => None,
                Some(_) => Some(Outcome::Rejected(FspiopError::new(
                    ErrorCode::PayerLimitError,
                    "the transfer would exceed the net debit cap",
                ))),
                None => Some(Outcome::Rejected(FspiopError::new(
                    ErrorCode::PayerLimitError,
                    "the payer has no net debit cap in this currency",
                ))),
            }
        }
    };
    let mut next = book.clone();
    let outcome = match refusal {
        None => {
            states.push(transfer_state(&id, "RESERVED", None));
            write.changes.push(move_account(
                &mut next.position,
                transfer.amount,
                Decimal::ZERO,
                "TRANSFER_RESERVE",
                Some(&id),
            ));
            Outcome::Applied
        }
        Some(Outcome::Expired) => {
            let error = FspiopError::new(
                ErrorCode::TransferExpired,
                "expired before it could be reserved",
            );
            states.push(transfer_state(
                &id,
                "EXPIRED_PREPARED",
                Some(error.description()),
            ));
            write.transfers.errors.push(transfer_error(&id, &error));
            Outcome::Expired
        }
        Some(Outcome::Rejected(error)) => {
            states.push(transfer_state(
                &id,
                "ABORTED_REJECTED",
                Some(error.description()),
            ));
            write.transfers.errors.push(transfer_error(&id, &error));
            Outcome::Rejected(error)
        }
        Some(Outcome::Applied) => unreachable!("refusals are never applied"),
    };
    write.transfers.transfers.push(transfer);
    write.transfers.states.extend(states);
    Decision {
        book: next,
        write,
        duplicate: false,
        outcome,
    }
}

pub fn transfer_error(transfer_id: &str, error: &FspiopError) -> NewTransferError {
    NewTransferError {
        transfer_id: transfer_id.into(),
        error_code: error.code.code().into(),
        error_description: error.description(),
    }
}

fn commit(
    book: &PositionBook,
    transfer_id: &str,
    amount: Decimal,
    fulfilment: NewFulfilment,
    hash: Option<MessageHash>,
) -> Decision {
    let mut next = book.clone();
    let write = LedgerWrite {
        changes: vec![move_account(
            &mut next.position,
            -amount,
            Decimal::ZERO,
            "TRANSFER_COMMIT",
            Some(transfer_id),
        )],
        transfers: TransferWrite {
            states: vec![
                transfer_state(transfer_id, "RECEIVED_FULFIL", None),
                transfer_state(transfer_id, "COMMITTED", None),
            ],
            fulfilments: vec![fulfilment],
            hashes: hash.into_iter().collect(),
            ..TransferWrite::default()
        },
        ..LedgerWrite::default()
    };
    applied(next, write)
}

fn reverse(
    book: &PositionBook,
    transfer_id: &str,
    amount: Decimal,
    states: Vec<TransferStateChange>,
    error: Option<NewTransferError>,
    hash: Option<MessageHash>,
) -> Decision {
    let mut next = book.clone();
    let write = LedgerWrite {
        changes: vec![move_account(
            &mut next.position,
            -amount,
            Decimal::ZERO,
            "TRANSFER_REVERSE",
            Some(transfer_id),
        )],
        transfers: TransferWrite {
            states,
            errors: error.into_iter().collect(),
            hashes: hash.into_iter().collect(),
            ..TransferWrite::default()
        },
        ..LedgerWrite::default()
    };
    applied(next, write)
}

fn check_limit(value: Decimal, alarm_percentage: Decimal) -> Result<(), FspiopError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(validation("limit value must not be negative"));
    }
    if alarm_percentage < Decimal::ZERO || alarm_percentage > Decimal::from(100) {
        return Err(validation("alarmPercentage must be between 0 and 100"));
    }
    Ok(())
}

fn new_limit(book: &PositionBook, value: Decimal, alarm_percentage: Decimal) -> NewLimit {
    NewLimit {
        account_id: book.position.id,
        limit_type: "NET_DEBIT_CAP".into(),
        value,
        alarm_percentage,
    }
}

fn initial_position_and_limits(
    book: &PositionBook,
    net_debit_cap: Decimal,
    alarm_percentage: Decimal,
    initial_position: Decimal,
) -> Result<Decision, FspiopError> {
    if book.net_debit_cap.is_some() {
        return Err(FspiopError::new(
            ErrorCode::GenericClientError,
            "Participant Limit or Initial Position already set",
        ));
    }
    check_limit(net_debit_cap, alarm_percentage)?;
    let mut next = book.clone();
    next.net_debit_cap = Some(NetDebitCap {
        value: net_debit_cap,
        alarm_percentage,
    });
    let mut write = LedgerWrite {
        limits: vec![new_limit(book, net_debit_cap, alarm_percentage)],
        ..LedgerWrite::default()
    };
    if !initial_position.is_zero() {
        // Double entry: the hub's multilateral settlement account holds the
        // other side, so every currency still nets to zero.
        write.changes.push(move_account(
            &mut next.position,
            initial_position,
            Decimal::ZERO,
            "INITIAL_POSITION",
            None,
        ));
        write.increments.push(AccountIncrement {
            account_id: book.hub_multilateral_settlement,
            change_value: -initial_position,
            kind: "INITIAL_POSITION".into(),
            reference: Some(book.participant.clone()),
        });
    }
    Ok(applied(next, write))
}

fn set_net_debit_cap(
    book: &PositionBook,
    value: Decimal,
    alarm_percentage: Decimal,
) -> Result<Decision, FspiopError> {
    check_limit(value, alarm_percentage)?;
    let mut next = book.clone();
    next.net_debit_cap = Some(NetDebitCap {
        value,
        alarm_percentage,
    });
    Ok(applied(
        next,
        LedgerWrite {
            limits: vec![new_limit(book, value, alarm_percentage)],
            ..LedgerWrite::default()
        },
    ))
}

/// Moves an owned account and returns the history row for it.
fn move_account(
    account: &mut Account,
    change_value: Decimal,
    change_reserved: Decimal,
    kind: &str,
    reference: Option<&str>,
) -> AccountChange {
    account.value += change_value;
    account.reserved += change_reserved;
    AccountChange {
        account_id: account.id,
        position_id: account.position_id,
        value: account.value,
        reserved_value: account.reserved,
        change_value,
        change_reserved,
        kind: kind.into(),
        reference: reference.map(str::to_string),
    }
}

/// Duplicate detection for a new operator transfer: `Ok(true)` for an exact
/// repeat, 3106 for the same id with a different body.
fn is_repeat(
    book: &PositionBook,
    funds: &FundsMove,
    existing: Option<&AdminTransferRecord>,
) -> Result<bool, FspiopError> {
    match existing {
        None => Ok(false),
        Some(record)
            if record.transfer.request_hash == funds.request_hash
                && record.transfer.account_id == book.settlement.id =>
        {
            Ok(true)
        }
        Some(_) => Err(FspiopError::new(
            ErrorCode::ModifiedRequest,
            format!(
                "transferId {} was already used with a different request",
                funds.transfer_id
            ),
        )),
    }
}

fn check_amount(amount: Decimal) -> Result<(), FspiopError> {
    if amount <= Decimal::ZERO {
        return Err(validation("amount must be positive"));
    }
    Ok(())
}

fn admin_transfer(book: &PositionBook, funds: &FundsMove, action: &str) -> NewAdminTransfer {
    NewAdminTransfer {
        transfer_id: funds.transfer_id.clone(),
        account_id: book.settlement.id,
        action: action.into(),
        amount: funds.amount,
        currency: book.currency.clone(),
        external_reference: funds.external_reference.clone(),
        reason: funds.reason.clone(),
        request_hash: funds.request_hash.clone(),
    }
}

fn state(transfer_id: &str, state: &str, reason: &str) -> AdminStateChange {
    AdminStateChange {
        transfer_id: transfer_id.into(),
        state: state.into(),
        reason: Some(reason.into()),
    }
}

fn funds_in(
    book: &PositionBook,
    funds: FundsMove,
    existing: Option<&AdminTransferRecord>,
) -> Result<Decision, FspiopError> {
    check_amount(funds.amount)?;
    if is_repeat(book, &funds, existing)? {
        return Ok(unchanged(book));
    }
    let mut next = book.clone();
    let write = LedgerWrite {
        changes: vec![move_account(
            &mut next.settlement,
            -funds.amount,
            Decimal::ZERO,
            "RECORD_FUNDS_IN",
            Some(&funds.transfer_id),
        )],
        increments: vec![AccountIncrement {
            account_id: book.hub_reconciliation,
            change_value: funds.amount,
            kind: "RECORD_FUNDS_IN".into(),
            reference: Some(funds.transfer_id.clone()),
        }],
        admin_transfers: vec![admin_transfer(book, &funds, FUNDS_IN)],
        admin_states: vec![state(&funds.transfer_id, "COMMITTED", &funds.reason)],
        ..LedgerWrite::default()
    };
    Ok(applied(next, write))
}

/// Funds that may leave the scheme: the liquidity cover not already promised
/// to reserved withdrawals, less what the participant owes on its position.
/// Unsettled credits (a negative position) are not withdrawable.
pub fn withdrawable(book: &PositionBook) -> Decimal {
    let cover = -(book.settlement.value + book.settlement.reserved);
    let owed = (book.position.value + book.position.reserved).max(Decimal::ZERO);
    cover - owed
}

fn funds_out_reserve(
    book: &PositionBook,
    funds: FundsMove,
    existing: Option<&AdminTransferRecord>,
) -> Result<Decision, FspiopError> {
    check_amount(funds.amount)?;
    if is_repeat(book, &funds, existing)? {
        return Ok(unchanged(book));
    }
    let available = withdrawable(book);
    if funds.amount > available {
        return Err(FspiopError::new(
            ErrorCode::PayerInsufficientLiquidity,
            format!(
                "funds out of {} exceeds the {} available",
                funds.amount,
                available.normalize()
            ),
        ));
    }
    let mut next = book.clone();
    let write = LedgerWrite {
        changes: vec![move_account(
            &mut next.settlement,
            Decimal::ZERO,
            funds.amount,
            "RECORD_FUNDS_OUT_RESERVE",
            Some(&funds.transfer_id),
        )],
        admin_transfers: vec![admin_transfer(book, &funds, FUNDS_OUT_RESERVE)],
        admin_states: vec![state(&funds.transfer_id, "RESERVED", &funds.reason)],
        ..LedgerWrite::default()
    };
    Ok(applied(next, write))
}

fn funds_out_finish(
    book: &PositionBook,
    transfer_id: &str,
    commit: bool,
    reason: &str,
    existing: Option<&AdminTransferRecord>,
) -> Result<Decision, FspiopError> {
    let Some(record) = existing else {
        return Err(FspiopError::new(
            ErrorCode::GenericIdNotFound,
            format!("transfer {transfer_id} does not exist"),
        ));
    };
    if record.transfer.account_id != book.settlement.id
        || record.transfer.action != FUNDS_OUT_RESERVE
    {
        return Err(validation(format!(
            "transfer {transfer_id} is not a funds-out reservation on this account"
        )));
    }
    let wanted_final = if commit { "COMMITTED" } else { "ABORTED" };
    match record.state.as_str() {
        "RESERVED" => {}
        current if current == wanted_final => return Ok(unchanged(book)),
        current => {
            return Err(validation(format!(
                "transfer {transfer_id} is {current}, not RESERVED"
            )))
        }
    }
    let amount = record.transfer.amount;
    let mut next = book.clone();
    let mut write = LedgerWrite {
        admin_states: vec![state(transfer_id, wanted_final, reason)],
        ..LedgerWrite::default()
    };
    if commit {
        write.changes.push(move_account(
            &mut next.settlement,
            amount,
            -amount,
            "RECORD_FUNDS_OUT_COMMIT",
            Some(transfer_id),
        ));
        write.increments.push(AccountIncrement {
            account_id: book.hub_reconciliation,
            change_value: -amount,
            kind: "RECORD_FUNDS_OUT_COMMIT".into(),
            reference: Some(transfer_id.into()),
        });
    } else {
        write.changes.push(move_account(
            &mut next.settlement,
            Decimal::ZERO,
            -amount,
            "RECORD_FUNDS_OUT_ABORT",
            Some(transfer_id),
        ));
    }
    Ok(applied(next, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> PositionBook {
        PositionBook {
            participant: "payerfsp".into(),
            currency: "USD".into(),
            position: Account {
                id: 10,
                position_id: 100,
                value: Decimal::ZERO,
                reserved: Decimal::ZERO,
            },
            settlement: Account {
                id: 11,
                position_id: 101,
                value: Decimal::ZERO,
                reserved: Decimal::ZERO,
            },
            net_debit_cap: None,
            hub_reconciliation: 1,
            hub_multilateral_settlement: 2,
        }
    }

    fn funds(id: &str, amount: i64, hash: &str) -> FundsMove {
        FundsMove {
            transfer_id: id.into(),
            amount: Decimal::from(amount),
            external_reference: "ref".into(),
            reason: "why".into(),
            request_hash: hash.into(),
        }
    }

    fn record(decision: &Decision, state: &str) -> AdminTransferRecord {
        AdminTransferRecord {
            transfer: decision.write.admin_transfers[0].clone(),
            state: state.into(),
        }
    }

    #[test]
    fn funds_in_moves_settlement_and_hub_reconciliation() {
        let d = decide(
            &book(),
            PositionCommand::FundsIn(funds("t1", 500, "h")),
            None,
        )
        .expect("ok");
        assert_eq!(d.book.settlement.value, Decimal::from(-500));
        assert_eq!(d.write.increments[0].change_value, Decimal::from(500));
        let sum: Decimal = d
            .write
            .changes
            .iter()
            .map(|c| c.change_value)
            .sum::<Decimal>()
            + d.write
                .increments
                .iter()
                .map(|c| c.change_value)
                .sum::<Decimal>();
        assert_eq!(sum, Decimal::ZERO, "double entry nets to zero");
    }

    #[test]
    fn repeats_are_idempotent_and_modified_repeats_refused() {
        let first = decide(
            &book(),
            PositionCommand::FundsIn(funds("t1", 500, "h")),
            None,
        )
        .expect("ok");
        let stored = record(&first, "COMMITTED");
        let again = decide(
            &first.book,
            PositionCommand::FundsIn(funds("t1", 500, "h")),
            Some(&stored),
        )
        .expect("ok");
        assert!(again.duplicate);
        assert_eq!(again.book, first.book, "nothing moves twice");
        let modified = decide(
            &first.book,
            PositionCommand::FundsIn(funds("t1", 600, "h2")),
            Some(&stored),
        );
        assert_eq!(
            modified.map(|_| ()).unwrap_err().code,
            ErrorCode::ModifiedRequest
        );
    }

    #[test]
    fn funds_out_is_limited_by_liquidity_and_owed_position() {
        let funded = decide(
            &book(),
            PositionCommand::FundsIn(funds("in", 1000, "h")),
            None,
        )
        .expect("ok");
        let mut owing = funded.book.clone();
        owing.position.value = Decimal::from(300);
        assert_eq!(withdrawable(&owing), Decimal::from(700));
        let refused = decide(
            &owing,
            PositionCommand::FundsOutReserve(funds("out", 701, "h")),
            None,
        );
        assert_eq!(
            refused.unwrap_err().code,
            ErrorCode::PayerInsufficientLiquidity
        );
        let reserved = decide(
            &owing,
            PositionCommand::FundsOutReserve(funds("out", 700, "h")),
            None,
        )
        .expect("ok");
        assert_eq!(reserved.book.settlement.reserved, Decimal::from(700));
        assert_eq!(withdrawable(&reserved.book), Decimal::ZERO);
    }

    #[test]
    fn funds_out_commit_and_abort_only_from_reserved() {
        let funded = decide(
            &book(),
            PositionCommand::FundsIn(funds("in", 1000, "h")),
            None,
        )
        .expect("ok");
        let reserved = decide(
            &funded.book,
            PositionCommand::FundsOutReserve(funds("out", 400, "h")),
            None,
        )
        .expect("ok");
        let stored = record(&reserved, "RESERVED");
        let commit = PositionCommand::FundsOutFinish {
            transfer_id: "out".into(),
            commit: true,
            reason: "done".into(),
        };
        let committed = decide(&reserved.book, commit.clone(), Some(&stored)).expect("ok");
        assert_eq!(committed.book.settlement.value, Decimal::from(-600));
        assert_eq!(committed.book.settlement.reserved, Decimal::ZERO);
        let done = record(&reserved, "COMMITTED");
        assert!(
            decide(&committed.book, commit, Some(&done))
                .expect("repeat")
                .duplicate
        );
        let abort = PositionCommand::FundsOutFinish {
            transfer_id: "out".into(),
            commit: false,
            reason: "no".into(),
        };
        assert_eq!(
            decide(&committed.book, abort, Some(&done))
                .unwrap_err()
                .code,
            ErrorCode::GenericValidationError
        );
        let unknown = PositionCommand::FundsOutFinish {
            transfer_id: "nope".into(),
            commit: true,
            reason: "x".into(),
        };
        assert_eq!(
            decide(&book(), unknown, None).unwrap_err().code,
            ErrorCode::GenericIdNotFound
        );
    }

    #[test]
    fn initial_position_and_limits_is_one_shot() {
        let cmd = PositionCommand::InitialPositionAndLimits {
            net_debit_cap: Decimal::from(1000),
            alarm_percentage: Decimal::from(10),
            initial_position: Decimal::from(5),
        };
        let first = decide(&book(), cmd.clone(), None).expect("ok");
        assert_eq!(first.book.position.value, Decimal::from(5));
        assert_eq!(first.write.increments[0].change_value, Decimal::from(-5));
        assert_eq!(
            decide(&first.book, cmd, None).unwrap_err().code,
            ErrorCode::GenericClientError
        );
        let negative = PositionCommand::SetNetDebitCap {
            value: Decimal::from(-1),
            alarm_percentage: Decimal::from(10),
        };
        assert_eq!(
            decide(&first.book, negative, None).unwrap_err().code,
            ErrorCode::GenericValidationError
        );
    }

    #[test]
    fn position_commands_round_trip_as_json() -> Result<(), serde_json::Error> {
        fn dec(s: &str) -> Decimal {
            s.parse().expect("decimal literal")
        }
        fn variant(cmd: &PositionCommand) -> &'static str {
            // Exhaustive on purpose: a new variant must be added below.
            match cmd {
                PositionCommand::InitialPositionAndLimits { .. } => "InitialPositionAndLimits",
                PositionCommand::SetNetDebitCap { .. } => "SetNetDebitCap",
                PositionCommand::FundsIn(_) => "FundsIn",
                PositionCommand::FundsOutReserve(_) => "FundsOutReserve",
                PositionCommand::FundsOutFinish { .. } => "FundsOutFinish",
                PositionCommand::Reserve { .. } => "Reserve",
                PositionCommand::Commit { .. } => "Commit",
                PositionCommand::GrossSettlePayer { .. } => "GrossSettlePayer",
                PositionCommand::SettlementLiquidityCheck { .. } => "SettlementLiquidityCheck",
                PositionCommand::SettlementTransfer { .. } => "SettlementTransfer",
                PositionCommand::Reverse { .. } => "Reverse",
            }
        }
        let moved = FundsMove {
            transfer_id: "4f1e3c2a-0000-4000-8000-000000000001".into(),
            amount: dec("123.4567"),
            external_reference: "bank-ref-77".into(),
            reason: "top up".into(),
            request_hash: "aGFzaA==".into(),
        };
        let hash = Some(MessageHash {
            transfer_id: "t-2".into(),
            kind: "FULFIL".into(),
            hash: "ZnVsZmls".into(),
        });
        let commands = vec![
            PositionCommand::InitialPositionAndLimits {
                net_debit_cap: dec("10000.00"),
                alarm_percentage: dec("12.5"),
                initial_position: dec("-0.0001"),
            },
            PositionCommand::SetNetDebitCap {
                value: dec("79228162514264337593543950335"),
                alarm_percentage: dec("0.1"),
            },
            PositionCommand::FundsIn(moved.clone()),
            PositionCommand::FundsOutReserve(FundsMove {
                amount: dec("0.0001"),
                ..moved
            }),
            PositionCommand::FundsOutFinish {
                transfer_id: "t-out".into(),
                commit: true,
                reason: "paid \"out\" ✓".into(),
            },
            PositionCommand::Reserve {
                transfer: std::sync::Arc::new(NewTransfer {
                    transfer_id: "t-1".into(),
                    payer_fsp: "payerfsp".into(),
                    payee_fsp: "payeefsp".into(),
                    amount: dec("123.4567"),
                    currency: "USD".into(),
                    condition: "GRzLaTP7DJ9t4P-a_BA0WA9wzzlsugf00-Tn6kESAfM".into(),
                    expiration: "2030-01-01T00:00:00.000Z".into(),
                    expiration_ms: 1_893_456_000_000,
                    ilp_packet: "AYIBgQAAAAAAAASwNGxldmVsb25lLmRmc3AxLm1lci45T2RT".into(),
                    prepare_hash: "cHJlcGFyZQ==".into(),
                    content_version: "1.1".into(),
                    bulk_transfer_id: Some("bulk-9".into()),
                }),
                now_ms: 1_700_000_000_123,
            },
            PositionCommand::Commit {
                transfer_id: "t-2".into(),
                amount: dec("42.10"),
                fulfilment: NewFulfilment {
                    transfer_id: "t-2".into(),
                    fulfilment: "UNlJ98hZTY_dsw0cAqw4i_UN3v4utt7CZFB4yfLbVFA".into(),
                    completed_timestamp: "2024-05-06T07:08:09.010Z".into(),
                },
                hash: hash.clone(),
                gross_model: Some(7),
            },
            PositionCommand::GrossSettlePayer {
                transfer_id: "t-3".into(),
                amount: dec("1.000000000001"),
            },
            PositionCommand::SettlementLiquidityCheck {
                net_amount: dec("-250.75"),
            },
            PositionCommand::SettlementTransfer {
                settlement_id: 31,
                net_amount: dec("250.75"),
                step: SettlementAccountStep {
                    settlement_account_id: 5,
                    state: "PS_TRANSFERS_COMMITTED".into(),
                    reason: Some("auto reset".into()),
                    external_reference: Some("ext-5".into()),
                },
            },
            PositionCommand::Reverse {
                transfer_id: "t-4".into(),
                amount: dec("99.99"),
                states: vec![
                    TransferStateChange {
                        transfer_id: "t-4".into(),
                        state: "RECEIVED_ERROR".into(),
                        reason: None,
                    },
                    TransferStateChange {
                        transfer_id: "t-4".into(),
                        state: "ABORTED_ERROR".into(),
                        reason: Some("payee said no".into()),
                    },
                ],
                error: Some(NewTransferError {
                    transfer_id: "t-4".into(),
                    error_code: "5100".into(),
                    error_description: "Payee rejected".into(),
                }),
                hash,
            },
        ];
        let covered: std::collections::BTreeSet<_> = commands.iter().map(variant).collect();
        assert_eq!(
            covered.len(),
            11,
            "every PositionCommand variant is covered"
        );
        for cmd in &commands {
            let json = serde_json::to_string(cmd)?;
            let back: PositionCommand = serde_json::from_str(&json)?;
            assert_eq!(&back, cmd, "{json}");
            // Same debug text: decimals keep their scale, not just their value.
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        // Decimals travel as exact strings, never as floats.
        let json = serde_json::to_string(&commands[2])?;
        assert!(json.contains("\"123.4567\""), "{json}");

        let error = FspiopError::new(ErrorCode::PayerLimitError, "over the cap")
            .with_extension("allowed", "1000.00");
        let back: FspiopError = serde_json::from_str(&serde_json::to_string(&error)?)?;
        assert_eq!(back, error);
        assert_eq!(back.description(), error.description());

        let mut book = book();
        book.position.value = dec("123.4567");
        book.position.reserved = dec("0.01");
        book.settlement.value = dec("-5000.5");
        book.net_debit_cap = Some(NetDebitCap {
            value: dec("10000.00"),
            alarm_percentage: dec("10"),
        });
        for outcome in [Outcome::Applied, Outcome::Rejected(error), Outcome::Expired] {
            let reply = crate::position::PositionReply {
                book: book.clone(),
                duplicate: true,
                outcome,
            };
            let json = serde_json::to_string(&reply)?;
            let back: crate::position::PositionReply = serde_json::from_str(&json)?;
            assert_eq!(back, reply, "{json}");
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
        Ok(())
    }
}
