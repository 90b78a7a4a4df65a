//! The position actor: one per participant and currency.
//!
//! All changes to one participant's balances in one currency (funds in and
//! out, initial position, limits, and from the transfers issue on
//! reservations and commits) are messages to this actor, so they are
//! serialised in one place. Each message is decided by the sans-IO
//! [`rules`], written durably, and only then adopted and answered: the
//! handler is an `AtomicResponse`, so no other message runs while a write is
//! in flight and the in-memory book never runs ahead of the database.

pub mod rules;

use actix::prelude::*;
use std::sync::Arc;
use switch_cluster::{Directory, Shards};
use switch_storage::Store;

use crate::error::{ErrorCode, FspiopError};
use rules::{Account, NetDebitCap, PositionBook, PositionCommand};

/// The key of a position actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PositionKey {
    pub participant: String,
    pub currency: String,
}

/// Asks the position actor to apply a command.
#[derive(Debug, Message)]
#[rtype(result = "Result<PositionReply, FspiopError>")]
pub struct PositionRequest(pub PositionCommand);

/// The book after the command, and whether the command was a repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionReply {
    pub book: PositionBook,
    pub duplicate: bool,
}

pub struct PositionActor {
    key: PositionKey,
    store: Store,
    hub_name: String,
    /// `None` until loaded, or when the participant has no accounts in the currency.
    book: Option<PositionBook>,
}

pub type PositionDirectory = Directory<PositionKey, PositionActor>;

/// The directory through which every position actor is reached.
pub fn position_directory(
    shards: Arc<Shards>,
    store: Store,
    hub_name: String,
    mailbox_capacity: usize,
) -> PositionDirectory {
    Directory::new(shards, mailbox_capacity, move |key: &PositionKey| {
        PositionActor {
            key: key.clone(),
            store: store.clone(),
            hub_name: hub_name.clone(),
            book: None,
        }
    })
}

impl Actor for PositionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Nothing is handled until the book is loaded from the database.
        let load = load_book(self.store.clone(), self.key.clone(), self.hub_name.clone());
        ctx.wait(load.into_actor(self).map(|loaded, actor, ctx| match loaded {
            Ok(book) => actor.book = book,
            Err(error) => {
                tracing::error!(participant = %actor.key.participant, currency = %actor.key.currency, %error, "position load failed");
                ctx.stop();
            }
        }));
    }
}

async fn load_book(
    store: Store,
    key: PositionKey,
    hub_name: String,
) -> Result<Option<PositionBook>, FspiopError> {
    let Some(record) = store
        .load_position_book(&key.participant, &key.currency)
        .await?
    else {
        return Ok(None);
    };
    let (Some(position), Some(settlement)) = (record.position, record.settlement) else {
        return Ok(None);
    };
    let hub_reconciliation = store
        .hub_account(&hub_name, &key.currency, "HUB_RECONCILIATION")
        .await?;
    let hub_multilateral = store
        .hub_account(&hub_name, &key.currency, "HUB_MULTILATERAL_SETTLEMENT")
        .await?;
    let (Some(hub_reconciliation), Some(hub_multilateral)) = (hub_reconciliation, hub_multilateral)
    else {
        return Ok(None);
    };
    let account = |a: &switch_storage::participants::AccountRecord| Account {
        id: a.id,
        position_id: a.position_id,
        value: a.value,
        reserved: a.reserved_value,
    };
    Ok(Some(PositionBook {
        participant: record.participant_name,
        currency: record.currency,
        position: account(&position),
        settlement: account(&settlement),
        net_debit_cap: record
            .net_debit_cap
            .map(|(value, alarm_percentage)| NetDebitCap {
                value,
                alarm_percentage,
            }),
        hub_reconciliation: hub_reconciliation.id,
        hub_multilateral_settlement: hub_multilateral.id,
    }))
}

impl Handler<PositionRequest> for PositionActor {
    type Result = AtomicResponse<Self, Result<PositionReply, FspiopError>>;

    fn handle(&mut self, request: PositionRequest, _ctx: &mut Self::Context) -> Self::Result {
        let Some(book) = self.book.clone() else {
            let key = self.key.clone();
            return AtomicResponse::new(Box::pin(fut::ready(Err(FspiopError::new(
                ErrorCode::GenericIdNotFound,
                format!(
                    "participant {} has no active POSITION and SETTLEMENT accounts in {} (or the hub has no accounts in it)",
                    key.participant, key.currency
                ),
            )))));
        };
        let store = self.store.clone();
        let work = async move {
            let existing = match request.0.admin_transfer_id() {
                Some(id) => store.admin_transfer(id).await?,
                None => None,
            };
            let decision = rules::decide(&book, request.0, existing.as_ref())?;
            debug_assert_eq!(decision.duplicate, decision.write.is_empty());
            store.apply(decision.write).await.map_err(StoreFailed)?;
            Ok::<_, Failure>((decision.book, decision.duplicate))
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, actor, ctx| match result {
            Ok((book, duplicate)) => {
                actor.book = Some(book.clone());
                Ok(PositionReply { book, duplicate })
            }
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Store(error)) => {
                // The write may or may not have landed: drop the in-memory book
                // so the next message reloads the truth from the database.
                tracing::error!(participant = %actor.key.participant, currency = %actor.key.currency, error = %error.0, "position write failed");
                ctx.stop();
                Err(FspiopError::internal(error.0))
            }
        })))
    }
}

/// A storage failure while writing, as opposed to a business refusal.
struct StoreFailed(switch_storage::StorageError);

enum Failure {
    Refused(FspiopError),
    Store(StoreFailed),
}

impl From<FspiopError> for Failure {
    fn from(error: FspiopError) -> Self {
        Failure::Refused(error)
    }
}

impl From<switch_storage::StorageError> for Failure {
    fn from(error: switch_storage::StorageError) -> Self {
        Failure::Refused(error.into())
    }
}

impl From<StoreFailed> for Failure {
    fn from(error: StoreFailed) -> Self {
        Failure::Store(error)
    }
}
