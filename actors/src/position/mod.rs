//! The position actor: one per participant and currency.
//!
//! Every change to one participant's balances in one currency (reservations,
//! commits and reversals of transfers, funds in and out, initial position,
//! limits) is a message to this actor, so all of them are serialised in one
//! place. A message is decided at once by the sans-IO [`rules`] against the
//! in-memory book, which then already includes it; its rows join the actor's
//! pending batch. The actor keeps at most one batch in flight to the
//! [`BatchWriter`]; everything decided meanwhile forms the next batch. A
//! message is answered only when its batch is durable. If a write fails, every
//! answer still owed fails and the actor stops, so the next message finds a
//! fresh actor that reloads the truth from the database.

pub mod rules;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use switch_cluster::placement::{position_slot, Placement, Route};
use switch_cluster::{ask, AskError, Directory, Shards};
use switch_storage::fence::Fence;
use switch_storage::ledger::AdminTransferRecord;
use switch_storage::writer::BatchWriter;
use switch_storage::Store;
use tokio::sync::oneshot;

use crate::error::{ErrorCode, FspiopError};
use rules::{Account, NetDebitCap, Outcome, PositionBook, PositionCommand};

/// The key of a position actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PositionKey {
    pub participant: String,
    pub currency: String,
}

/// Asks the position actor to apply a command.
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<PositionReply, FspiopError>")]
pub struct PositionRequest {
    pub command: PositionCommand,
    /// Cluster mode: the requesting transfer's slot epoch; the write is
    /// refused by the database if that transfer's owner changed since.
    pub fence: Option<Fence>,
}

impl PositionRequest {
    /// A request from the operator or a settlement (no transfer owner to fence).
    pub fn new(command: PositionCommand) -> Self {
        PositionRequest {
            command,
            fence: None,
        }
    }
}

/// The book after the command, whether it was a repeat, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositionReply {
    pub book: PositionBook,
    pub duplicate: bool,
    pub outcome: Outcome,
}

type Answer = oneshot::Sender<Result<PositionReply, FspiopError>>;

/// A decided command waiting for its batch to be durable.
struct Pending {
    write: switch_storage::ledger::LedgerWrite,
    reply: PositionReply,
    answer: Answer,
}

/// Limits of one position actor.
#[derive(Debug, Clone, Copy)]
pub struct PositionLimits {
    pub mailbox_capacity: usize,
    /// Decided commands waiting for durability; beyond it new ones are shed (2003).
    pub pending_max: usize,
}

pub struct PositionActor {
    key: PositionKey,
    /// Cluster mode: this node's epoch of the position's slot when the actor
    /// started; every write carries it.
    fence: Option<Fence>,
    store: Store,
    writer: BatchWriter,
    hub_name: String,
    limits: PositionLimits,
    /// `None` until loaded, or when the participant has no accounts in the currency.
    book: Option<PositionBook>,
    pending: Vec<Pending>,
    in_flight: usize,
    /// Operator transfers decided but not yet durable, for duplicate detection.
    unsaved_admin: HashMap<String, AdminTransferRecord>,
}

pub type PositionDirectory = Directory<PositionKey, PositionActor>;

/// The directory of this node's position actors.
pub fn position_directory(
    shards: Arc<Shards>,
    store: Store,
    writer: BatchWriter,
    hub_name: String,
    limits: PositionLimits,
    placement: Arc<Placement>,
) -> PositionDirectory {
    Directory::new(shards, limits.mailbox_capacity, move |key: &PositionKey| {
        PositionActor {
            key: key.clone(),
            fence: fence_of(&placement, position_slot(&key.participant, &key.currency)),
            store: store.clone(),
            writer: writer.clone(),
            hub_name: hub_name.clone(),
            limits,
            book: None,
            pending: Vec::new(),
            in_flight: 0,
            unsaved_admin: HashMap::new(),
        }
    })
}

/// The fence a new actor of `slot` writes under: none in the embedded
/// default; in cluster mode this node's epoch, or one that no write can
/// match if the node does not own the slot (any write is then refused).
pub fn fence_of(placement: &Placement, slot: u32) -> Option<Fence> {
    if !placement.is_cluster() {
        return None;
    }
    let epoch = placement.local_epoch(slot).unwrap_or(-1);
    Some(Fence { slot, epoch })
}

/// A position actor's answer.
pub type PositionAnswer = Result<PositionReply, FspiopError>;

/// The future of a request sent to another node.
pub type RemoteAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PositionAnswer, AskError>> + Send>>;

/// Sends a position request to the node that owns the position.
pub trait RemotePositions: Send + Sync {
    fn ask(
        &self,
        address: &str,
        key: &PositionKey,
        request: &PositionRequest,
        timeout: std::time::Duration,
    ) -> RemoteAnswer;
}

/// Every position, wherever it lives: the local actors of the slots this
/// node owns, and the owning node's for the rest.
pub struct Positions {
    local: PositionDirectory,
    placement: Arc<Placement>,
    remote: Option<Arc<dyn RemotePositions>>,
}

impl Positions {
    pub fn new(
        local: PositionDirectory,
        placement: Arc<Placement>,
        remote: Option<Arc<dyn RemotePositions>>,
    ) -> Positions {
        Positions {
            local,
            placement,
            remote,
        }
    }

    /// Sends `request` to the position's actor, here or on its owner, and
    /// waits for the durable answer. Sent once: a money-moving command is
    /// never redelivered by this layer.
    pub async fn ask(
        &self,
        key: &PositionKey,
        request: PositionRequest,
        timeout: std::time::Duration,
    ) -> Result<PositionAnswer, AskError> {
        self.send(key, request, timeout, true).await
    }

    /// For the node-to-node channel: handles `request` only if this node
    /// owns the position now (never a second hop).
    pub async fn ask_here(
        &self,
        key: &PositionKey,
        request: PositionRequest,
        timeout: std::time::Duration,
    ) -> Result<PositionAnswer, AskError> {
        self.send(key, request, timeout, false).await
    }

    async fn send(
        &self,
        key: &PositionKey,
        request: PositionRequest,
        timeout: std::time::Duration,
        may_forward: bool,
    ) -> Result<PositionAnswer, AskError> {
        let route = self
            .placement
            .route(position_slot(&key.participant, &key.currency));
        match (route, &self.remote) {
            (Route::Local { .. }, _) => ask(&self.local.get(key), request, timeout).await,
            (Route::Remote { address, .. }, Some(remote)) if may_forward => {
                remote.ask(&address, key, &request, timeout).await
            }
            (Route::Remote { node, .. }, _) => Err(AskError::Unavailable(format!(
                "the position is owned by {node}"
            ))),
            (Route::Unavailable { slot }, _) => Err(AskError::Unavailable(format!(
                "slot {slot} has no live owner"
            ))),
        }
    }

    /// Drops this node's actors of `slot` (its lease is gone): they finish
    /// what they hold and stop; the next owner reloads from the database.
    pub fn forget_slot(&self, slot: u32) {
        self.local
            .forget_where(|key| position_slot(&key.participant, &key.currency) == slot);
    }
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
    type Result = ResponseFuture<Result<PositionReply, FspiopError>>;

    fn handle(&mut self, request: PositionRequest, ctx: &mut Self::Context) -> Self::Result {
        let (answer, answered) = oneshot::channel();
        let fences: Vec<Fence> = self.fence.into_iter().chain(request.fence).collect();
        let command = request.command;
        match command.admin_transfer_id().map(str::to_string) {
            Some(id) if !self.unsaved_admin.contains_key(&id) => {
                // Operator transfers need their stored record first; the
                // mailbox waits so no other change slips in between.
                let store = self.store.clone();
                let lookup = async move { store.admin_transfer(&id).await };
                ctx.wait(
                    lookup
                        .into_actor(self)
                        .map(move |existing, actor, ctx| match existing {
                            Ok(existing) => actor.decide(command, fences, existing, answer, ctx),
                            Err(error) => {
                                let _ = answer.send(Err(error.into()));
                            }
                        }),
                );
            }
            Some(id) => {
                let existing = self.unsaved_admin.get(&id).cloned();
                self.decide(command, fences, existing, answer, ctx);
            }
            None => self.decide(command, fences, None, answer, ctx),
        }
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(FspiopError::internal(
                    "position actor stopped before answering",
                ))
            })
        })
    }
}

impl PositionActor {
    fn decide(
        &mut self,
        command: PositionCommand,
        fences: Vec<Fence>,
        existing: Option<AdminTransferRecord>,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) {
        let Some(book) = &self.book else {
            let _ = answer.send(Err(FspiopError::new(
                ErrorCode::GenericIdNotFound,
                format!(
                    "participant {} has no POSITION and SETTLEMENT accounts in {} (or the hub has no accounts in it)",
                    self.key.participant, self.key.currency
                ),
            )));
            // Nothing to keep: a later message reloads (the accounts may exist by then).
            ctx.stop();
            return;
        };
        if self.pending.len() >= self.limits.pending_max {
            let _ = answer.send(Err(FspiopError::new(
                ErrorCode::ServiceUnavailable,
                "position is overloaded, retry later",
            )));
            return;
        }
        let mut decision = match rules::decide(book, command, existing.as_ref()) {
            Ok(decision) => decision,
            Err(refusal) => {
                let _ = answer.send(Err(refusal));
                return;
            }
        };
        decision.write.fences = fences;
        self.book = Some(decision.book.clone());
        for transfer in &decision.write.admin_transfers {
            let state = decision
                .write
                .admin_states
                .iter()
                .rev()
                .find(|s| s.transfer_id == transfer.transfer_id)
                .map(|s| s.state.clone())
                .unwrap_or_default();
            self.unsaved_admin.insert(
                transfer.transfer_id.clone(),
                AdminTransferRecord {
                    transfer: transfer.clone(),
                    state,
                },
            );
        }
        for state in &decision.write.admin_states {
            if let Some(record) = self.unsaved_admin.get_mut(&state.transfer_id) {
                record.state = state.state.clone();
            } else if let Some(stored) = existing
                .as_ref()
                .filter(|e| e.transfer.transfer_id == state.transfer_id)
            {
                let mut record = stored.clone();
                record.state = state.state.clone();
                self.unsaved_admin.insert(state.transfer_id.clone(), record);
            }
        }
        self.pending.push(Pending {
            write: decision.write,
            reply: PositionReply {
                book: decision.book,
                duplicate: decision.duplicate,
                outcome: decision.outcome,
            },
            answer,
        });
        self.flush_if_idle(ctx);
    }

    /// Sends the pending batch to the writer unless one is already in flight.
    fn flush_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight > 0 || self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let mut merged = switch_storage::ledger::LedgerWrite::default();
        let mut owed = Vec::with_capacity(batch.len());
        for pending in batch {
            merged.append(pending.write);
            owed.push((pending.reply, pending.answer));
        }
        self.in_flight = owed.len();
        let writer = self.writer.clone();
        let durable = async move { writer.write(merged).await };
        ctx.spawn(durable.into_actor(self).map(move |written, actor, ctx| {
            actor.in_flight = 0;
            match written {
                Ok(()) => {
                    for (reply, answer) in owed {
                        let _ = answer.send(Ok(reply));
                    }
                    if actor.pending.is_empty() {
                        actor.unsaved_admin.clear();
                    }
                    actor.flush_if_idle(ctx);
                }
                Err(error) => {
                    tracing::error!(participant = %actor.key.participant, currency = %actor.key.currency, %error, "position write failed");
                    // Busy: nothing was written (2003, retry later).
                    // Anything else may or may not have been (2001).
                    let failure = match error.is_busy() {
                        true => FspiopError::from(error),
                        false => FspiopError::internal("the ledger write failed; repeat the request to learn its outcome"),
                    };
                    for (_, answer) in owed {
                        let _ = answer.send(Err(failure.clone()));
                    }
                    for pending in actor.pending.drain(..) {
                        let _ = pending.answer.send(Err(failure.clone()));
                    }
                    actor.book = None;
                    ctx.stop();
                }
            }
        }));
    }
}
