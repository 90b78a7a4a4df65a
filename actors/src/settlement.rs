//! The settlement actor: window closes and settlement changes, one at a time.
//!
//! Operator settlement calls are rare and each touches many rows, so one
//! actor serialises them all: two updates of the same account can never both
//! pass the "next step" check. Money moves only at the commit step of an
//! account whose model has `autoPositionReset`, and then through the
//! participant's position actor, which writes the step together with the
//! ledger rows (so a step is never recorded without its money, or twice).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rust_decimal::Decimal;
use switch_cluster::{Directory, Shards};
use switch_storage::participants::SettlementModelRecord;
use switch_storage::settlement::{
    CreateRefusal, ModelScope, SettlementAccountRecord, SettlementAccountStep, SettlementRecord,
    ABORTED, PENDING_SETTLEMENT, SETTLED,
};
use switch_storage::Store;

use crate::error::{ErrorCode, FspiopError};
use crate::position::rules::PositionCommand;
use crate::position::{PositionKey, PositionRequest, Positions};

pub const PS_TRANSFERS_RECORDED: &str = "PS_TRANSFERS_RECORDED";
pub const PS_TRANSFERS_RESERVED: &str = "PS_TRANSFERS_RESERVED";
pub const PS_TRANSFERS_COMMITTED: &str = "PS_TRANSFERS_COMMITTED";
pub const SETTLING: &str = "SETTLING";

/// The account states in the only order an account may take them.
const ACCOUNT_STEPS: [&str; 5] = [
    PENDING_SETTLEMENT,
    PS_TRANSFERS_RECORDED,
    PS_TRANSFERS_RESERVED,
    PS_TRANSFERS_COMMITTED,
    SETTLED,
];

/// Windows one settlement may cover at most.
pub const SETTLEMENT_WINDOWS_MAX: usize = 1_000;

/// The one key of the settlement actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SettlementKey;

pub type SettlementDirectory = Directory<SettlementKey, SettlementActor>;

pub struct SettlementActor {
    store: Store,
    positions: Arc<Positions>,
    position_timeout: Duration,
}

pub fn settlement_directory(
    shards: Arc<Shards>,
    store: Store,
    positions: Arc<Positions>,
    position_timeout: Duration,
) -> SettlementDirectory {
    Directory::new(shards, 64, move |_: &SettlementKey| SettlementActor {
        store: store.clone(),
        positions: positions.clone(),
        position_timeout,
    })
}

impl Actor for SettlementActor {
    type Context = Context<Self>;
}

fn validation(detail: impl Into<String>) -> FspiopError {
    FspiopError::new(ErrorCode::GenericValidationError, detail)
}

fn internal(error: switch_storage::StorageError) -> FspiopError {
    tracing::error!(%error, "settlement storage failure");
    FspiopError::internal(error)
}

/// Closes window `id` (which must be the open one); answers the new window's id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<i64, FspiopError>")]
pub struct CloseWindow {
    pub id: i64,
    pub reason: String,
}

impl Handler<CloseWindow> for SettlementActor {
    type Result = AtomicResponse<Self, Result<i64, FspiopError>>;

    fn handle(&mut self, msg: CloseWindow, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                match store.close_window(msg.id, msg.reason).await {
                    Ok(Some(next)) => Ok(next),
                    Ok(None) => Err(validation(format!(
                        "settlementWindowId: {} is not the OPEN window",
                        msg.id
                    ))),
                    Err(error) => Err(internal(error)),
                }
            }
            .into_actor(self),
        ))
    }
}

/// Creates a deferred settlement over closed windows; answers its id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<i64, FspiopError>")]
pub struct CreateSettlement {
    pub model: String,
    pub reason: String,
    pub window_ids: Vec<i64>,
}

impl Handler<CreateSettlement> for SettlementActor {
    type Result = AtomicResponse<Self, Result<i64, FspiopError>>;

    fn handle(&mut self, msg: CreateSettlement, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(create(store, msg).into_actor(self)))
    }
}

async fn find_model(store: &Store, name: &str) -> Result<SettlementModelRecord, FspiopError> {
    let models = store.settlement_models().await.map_err(internal)?;
    models
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| validation(format!("settlementModel {name} does not exist")))
}

async fn create(store: Store, msg: CreateSettlement) -> Result<i64, FspiopError> {
    let model = find_model(&store, &msg.model).await?;
    if !model.is_active {
        return Err(validation(format!(
            "settlementModel {} is not active",
            model.name
        )));
    }
    if model.settlement_delay != "DEFERRED" || model.settlement_granularity != "NET" {
        return Err(validation(format!(
            "settlementModel {} is {}-{}: only DEFERRED NET models are settled through /settlements",
            model.name, model.settlement_delay, model.settlement_granularity
        )));
    }
    let mut window_ids = msg.window_ids;
    let requested = window_ids.len();
    window_ids.sort_unstable();
    window_ids.dedup();
    if window_ids.is_empty() || window_ids.len() != requested {
        return Err(validation(
            "settlementWindows must list at least one window, each once",
        ));
    }
    if window_ids.len() > SETTLEMENT_WINDOWS_MAX {
        return Err(validation(format!(
            "at most {SETTLEMENT_WINDOWS_MAX} windows per settlement"
        )));
    }
    let scope = ModelScope {
        model_id: model.id,
        ledger_account_type: model.ledger_account_type,
        currency: model.currency,
    };
    match store.create_settlement(scope, msg.reason, window_ids).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(CreateRefusal::WindowNotFound(id))) => {
            Err(validation(format!("settlementWindowId: {id} not found")))
        }
        Ok(Err(CreateRefusal::WindowNotApplicable(id, state))) => Err(validation(format!(
            "Inapplicable windows: settlementWindowId {id} is {state}"
        ))),
        Ok(Err(CreateRefusal::NoContent)) => Err(validation(
            "Inapplicable windows: no content of the model's account type and currency to settle",
        )),
        Err(error) => Err(internal(error)),
    }
}

/// One account step asked for by `PUT /settlements/{id}` and its sub-resources.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountUpdate {
    pub participant_id: i64,
    pub account_id: i64,
    pub state: String,
    pub reason: Option<String>,
    pub external_reference: Option<String>,
}

/// Applies account steps; answers the refused ones with their errors.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<(AccountUpdate, FspiopError)>, FspiopError>")]
pub struct UpdateAccounts {
    pub settlement_id: i64,
    pub updates: Vec<AccountUpdate>,
}

impl Handler<UpdateAccounts> for SettlementActor {
    type Result = AtomicResponse<Self, Result<Vec<(AccountUpdate, FspiopError)>, FspiopError>>;

    fn handle(&mut self, msg: UpdateAccounts, _: &mut Self::Context) -> Self::Result {
        let steps = Steps {
            store: self.store.clone(),
            positions: self.positions.clone(),
            position_timeout: self.position_timeout,
        };
        AtomicResponse::new(Box::pin(steps.apply(msg).into_actor(self)))
    }
}

/// Aborts a settlement that has moved no money yet.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct AbortSettlement {
    pub settlement_id: i64,
    pub reason: String,
}

impl Handler<AbortSettlement> for SettlementActor {
    type Result = AtomicResponse<Self, Result<(), FspiopError>>;

    fn handle(&mut self, msg: AbortSettlement, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(abort(store, msg).into_actor(self)))
    }
}

async fn load(store: &Store, id: i64) -> Result<SettlementRecord, FspiopError> {
    store
        .settlement(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| validation(format!("settlementId: {id} not found")))
}

async fn abort(store: Store, msg: AbortSettlement) -> Result<(), FspiopError> {
    let settlement = load(&store, msg.settlement_id).await?;
    let moved = settlement
        .accounts
        .iter()
        .any(|a| a.state == PS_TRANSFERS_COMMITTED || a.state == SETTLED);
    if moved || settlement.state == SETTLED || settlement.state == ABORTED {
        return Err(validation(format!(
            "State change not allowed: settlement {} is {} and has accounts past PS_TRANSFERS_RESERVED or is final",
            settlement.id, settlement.state
        )));
    }
    store
        .abort_settlement(settlement.id, msg.reason)
        .await
        .map_err(internal)
}

/// The state a settlement takes from its accounts: the least advanced
/// account's, SETTLING while only some are SETTLED.
pub fn settlement_state(accounts: &[SettlementAccountRecord]) -> String {
    let rank = |state: &str| ACCOUNT_STEPS.iter().position(|s| *s == state);
    let settled = accounts.iter().filter(|a| a.state == SETTLED).count();
    if !accounts.is_empty() && settled == accounts.len() {
        return SETTLED.into();
    }
    if settled > 0 {
        return SETTLING.into();
    }
    accounts
        .iter()
        .filter_map(|a| rank(&a.state))
        .min()
        .map_or(PENDING_SETTLEMENT, |i| ACCOUNT_STEPS[i])
        .to_string()
}

/// The one state an account may move to next.
pub fn next_step(state: &str) -> Option<&'static str> {
    let at = ACCOUNT_STEPS.iter().position(|s| *s == state)?;
    ACCOUNT_STEPS.get(at + 1).copied()
}

struct Steps {
    store: Store,
    positions: Arc<Positions>,
    position_timeout: Duration,
}

impl Steps {
    async fn apply(
        self,
        msg: UpdateAccounts,
    ) -> Result<Vec<(AccountUpdate, FspiopError)>, FspiopError> {
        let mut settlement = load(&self.store, msg.settlement_id).await?;
        if settlement.state == SETTLED || settlement.state == ABORTED {
            return Err(validation(format!(
                "State change not allowed: settlement {} is {}",
                settlement.id, settlement.state
            )));
        }
        let model = self
            .store
            .settlement_models()
            .await
            .map_err(internal)?
            .into_iter()
            .find(|m| m.id == settlement.model_id)
            .ok_or_else(|| FspiopError::internal("the settlement's model is gone"))?;
        let mut refused = Vec::new();
        for update in msg.updates {
            let account = settlement.accounts.iter_mut().find(|a| {
                a.account_id == update.account_id && a.participant_id == update.participant_id
            });
            let Some(account) = account else {
                let error = validation(format!(
                    "Participant and account mismatch: participant {} has no account {} in settlement {}",
                    update.participant_id, update.account_id, settlement.id
                ));
                refused.push((update, error));
                continue;
            };
            match self.step(settlement.id, &model, account, &update).await {
                Ok(()) => account.state = update.state.clone(),
                Err(error) => refused.push((update, error)),
            }
        }
        let state = settlement_state(&settlement.accounts);
        if state != settlement.state {
            self.store
                .set_settlement_state(settlement.id, state, None)
                .await
                .map_err(internal)?;
        }
        Ok(refused)
    }

    /// Moves one account one step, with the money its model asks for.
    async fn step(
        &self,
        settlement_id: i64,
        model: &SettlementModelRecord,
        account: &SettlementAccountRecord,
        update: &AccountUpdate,
    ) -> Result<(), FspiopError> {
        if next_step(&account.state) != Some(update.state.as_str()) {
            return Err(validation(format!(
                "State change not allowed: account {} is {} and cannot become {}",
                account.account_id, account.state, update.state
            )));
        }
        let step = SettlementAccountStep {
            settlement_account_id: account.id,
            state: update.state.clone(),
            reason: update.reason.clone(),
            external_reference: update.external_reference.clone(),
        };
        let net = account.net_amount;
        if update.state == PS_TRANSFERS_RESERVED
            && model.require_liquidity_check
            && net > Decimal::ZERO
        {
            self.position(
                account,
                PositionCommand::SettlementLiquidityCheck { net_amount: net },
            )
            .await?;
        }
        if update.state == PS_TRANSFERS_COMMITTED && model.auto_position_reset && !net.is_zero() {
            let command = PositionCommand::SettlementTransfer {
                settlement_id,
                net_amount: net,
                step,
            };
            return self.position(account, command).await;
        }
        self.store
            .record_settlement_steps(vec![step])
            .await
            .map_err(internal)
    }

    async fn position(
        &self,
        account: &SettlementAccountRecord,
        command: PositionCommand,
    ) -> Result<(), FspiopError> {
        let key = PositionKey {
            participant: account.participant_name.clone(),
            currency: account.currency.clone(),
        };
        // No redelivery: a money-moving command is sent exactly once.
        let request = PositionRequest::new(command);
        match self
            .positions
            .ask(&key, request, self.position_timeout)
            .await
        {
            Ok(answer) => answer.map(|_| ()),
            Err(error) => Err(FspiopError::new(
                ErrorCode::ServiceUnavailable,
                format!("position of {} did not answer: {error:?}", key.participant),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(state: &str) -> SettlementAccountRecord {
        SettlementAccountRecord {
            id: 1,
            participant_id: 1,
            participant_name: "p".into(),
            account_id: 1,
            currency: "USD".into(),
            net_amount: Decimal::ONE,
            state: state.into(),
            reason: None,
            external_reference: None,
            created_date: String::new(),
            changed_date: String::new(),
        }
    }

    #[test]
    fn steps_go_one_at_a_time() {
        assert_eq!(next_step(PENDING_SETTLEMENT), Some(PS_TRANSFERS_RECORDED));
        assert_eq!(next_step(PS_TRANSFERS_COMMITTED), Some(SETTLED));
        assert_eq!(next_step(SETTLED), None);
        assert_eq!(next_step(ABORTED), None);
    }

    #[test]
    fn settlement_state_follows_accounts() {
        let of = |states: &[&str]| {
            settlement_state(&states.iter().map(|s| account(s)).collect::<Vec<_>>())
        };
        assert_eq!(
            of(&[PS_TRANSFERS_RESERVED, PS_TRANSFERS_RECORDED]),
            PS_TRANSFERS_RECORDED
        );
        assert_eq!(of(&[SETTLED, PS_TRANSFERS_COMMITTED]), SETTLING);
        assert_eq!(of(&[SETTLED, SETTLED]), SETTLED);
    }
}
