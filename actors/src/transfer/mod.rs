//! The transfer actor: one per transfer, from its prepare until it is final.
//!
//! The actor loads what the switch knows about its id (nothing, for a new
//! prepare), then handles one message at a time: each handler asks the
//! sans-IO [`rules`] what to do, runs the position command or record it
//! implies, and only then answers the HTTP edge and queues the callbacks.
//! The mailbox waits (`ctx.wait`) while a position command is in flight, so
//! a fulfil can never overtake the reservation it fulfils. The actor stops
//! once the transfer is final; a later message for the same id starts a new
//! actor that reloads the record.

mod lines;
pub mod rules;

pub use lines::{LineAnswer, LineMessage, Lines, RemoteLineAnswer, RemoteLines};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rust_decimal::Decimal;
use switch_cluster::placement::{transfer_slot, Placement};
use switch_cluster::{timers::Timers, AskError, Directory, Shards};
use switch_storage::fence::Fence;
use switch_storage::ledger::LedgerWrite;
use switch_storage::loader::TransferLoader;
use switch_storage::transfers::{
    MessageHash, NewFulfilment, NewTransfer, TransferStateChange, TransferWrite,
};
use switch_storage::writer::BatchWriter;
use switch_storage::Store;
use tokio::sync::oneshot;

use crate::error::{ErrorCode, FspiopError};
use crate::notify::{Notification, Notifier, TransferEndpoint};
use crate::participants::ParticipantCache;
use crate::position::rules::{transfer_error, Outcome, PositionCommand};
use crate::position::{fence_of, PositionKey, PositionRequest, Positions};
use rules::{
    state, ErrorAction, ErrorMessage, FulfilAction, FulfilMessage, Transfer, TransferSettings,
};

/// What every transfer actor shares.
pub struct TransferServices {
    pub store: Store,
    pub writer: BatchWriter,
    /// Batches the lookup each new actor makes (see [`TransferLoader`]).
    pub loader: TransferLoader,
    pub positions: Arc<Positions>,
    /// Which slots this node owns (the transfer's fence).
    pub placement: Arc<Placement>,
    pub participants: ParticipantCache,
    pub notifier: Arc<dyn Notifier>,
    pub timers: Arc<dyn Timers>,
    pub settings: TransferSettings,
    /// How long a transfer waits for a position's durable answer.
    pub position_timeout: Duration,
    /// Milliseconds since the epoch; injected so tests control time.
    pub clock: fn() -> i64,
    /// Live transfer actors, for the in-flight limit at the edge.
    pub live: Arc<AtomicUsize>,
}

pub type TransferDirectory = Directory<String, TransferActor>;

pub fn transfer_directory(
    shards: Arc<Shards>,
    services: Arc<TransferServices>,
    mailbox_capacity: usize,
) -> TransferDirectory {
    Directory::new(shards, mailbox_capacity, move |id: &String| TransferActor {
        id: id.clone(),
        fence: fence_of(&services.placement, transfer_slot(id)),
        services: services.clone(),
        transfer: None,
        unloaded: None,
    })
}

/// Sends a message to the actor of transfer `id` and waits for its durable
/// answer (redelivered if the actor stopped first, see [`Directory::ask`]).
pub async fn deliver<M>(
    transfers: &TransferDirectory,
    id: &str,
    message: M,
    timeout: Duration,
) -> Result<Result<(), FspiopError>, AskError>
where
    M: Message<Result = Result<(), FspiopError>> + Clone + Send + 'static,
    TransferActor: Handler<M>,
{
    transfers.ask(&id.to_string(), message, timeout).await
}

/// The wall clock in ms since the epoch.
pub fn system_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type Answer = oneshot::Sender<Result<(), FspiopError>>;
type Reply = ResponseFuture<Result<(), FspiopError>>;

/// POST /transfers.
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct Prepare {
    /// Shared: the prepare is cloned on its way (a redelivered ask, the
    /// position command, the record) and never changes once received.
    pub transfer: Arc<NewTransfer>,
    pub source: String,
    pub forward: crate::notify::ForwardedMessage,
}

/// PUT /transfers/{ID}.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct Fulfil(pub FulfilMessage);

/// PUT /transfers/{ID}/error.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct PayeeError(pub ErrorMessage);

/// GET /transfers/{ID}.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct Get {
    pub source: String,
    pub content_version: String,
}

/// The expiry timer fired.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct Expire;

pub struct TransferActor {
    id: String,
    /// Cluster mode: this node's epoch of the transfer's slot when the actor
    /// started; every write for the transfer carries it.
    fence: Option<Fence>,
    services: Arc<TransferServices>,
    transfer: Option<Transfer>,
    /// Set when the database was too busy to say what is known of the
    /// transfer: every message is answered with it (2003, retry later).
    unloaded: Option<FspiopError>,
}

impl Actor for TransferActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.services.live.fetch_add(1, Ordering::Relaxed);
        let loader = self.services.loader.clone();
        let id = self.id.clone();
        ctx.wait(async move { loader.load(&id).await }.into_actor(self).map(
            |loaded, actor, ctx| match loaded {
                Ok(record) => actor.transfer = record.map(Transfer::from_record),
                Err(error) if error.is_busy() => {
                    tracing::warn!(transfer_id = %actor.id, %error, "transfer not loaded: the database is busy");
                    actor.unloaded = Some(FspiopError::from(error));
                }
                Err(error) => {
                    tracing::error!(transfer_id = %actor.id, %error, "transfer load failed");
                    ctx.stop();
                }
            },
        ));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.services.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TransferActor {
    /// The answer to any message while the transfer could not be loaded;
    /// the actor then stops, so the next message starts a fresh one that
    /// reads again.
    fn refuse_unloaded(&self, ctx: &mut Context<Self>) -> Option<Reply> {
        let error = self.unloaded.clone()?;
        ctx.stop();
        Some(Box::pin(async move { Err(error) }))
    }
}

fn answered(answer: oneshot::Receiver<Result<(), FspiopError>>) -> Reply {
    Box::pin(async move {
        answer.await.unwrap_or_else(|_| {
            Err(FspiopError::internal(
                "transfer actor stopped before answering",
            ))
        })
    })
}

impl TransferActor {
    /// Sends callbacks, except for a line of a bulk: its bulk tells the
    /// DFSPs about all its lines at once (`PUT /bulkTransfers/{ID}`).
    fn notify_all(&self, notifications: Vec<Notification>) {
        let in_bulk = self
            .transfer
            .as_ref()
            .is_some_and(|t| t.record.bulk_transfer_id.is_some());
        if in_bulk {
            return;
        }
        self.send_now(notifications);
    }

    fn send_now(&self, notifications: Vec<Notification>) {
        for notification in notifications {
            self.services.notifier.notify(notification);
        }
    }

    /// Stops the actor once its transfer is final (or unknown): nothing more
    /// will change, and a later message reloads the record.
    fn stop_if_done(&self, ctx: &mut Context<Self>) {
        if self.transfer.as_ref().is_none_or(Transfer::is_final) {
            ctx.stop();
        }
    }

    fn now(&self) -> i64 {
        (self.services.clock)()
    }

    /// Runs a position command and waits for its durable answer.
    fn position(
        &self,
        participant: &str,
        currency: &str,
        command: PositionCommand,
    ) -> impl std::future::Future<Output = Result<Outcome, FspiopError>> + 'static {
        position_command(
            self.services.clone(),
            self.fence,
            participant.to_string(),
            currency.to_string(),
            command,
        )
    }

    fn schedule_expiry(&self) {
        if let Some(t) = &self.transfer {
            self.services
                .timers
                .schedule(t.id(), t.record.expiration_ms);
        }
    }

    fn cancel_expiry(&self) {
        if let Some(t) = &self.transfer {
            self.services.timers.cancel(t.id(), t.record.expiration_ms);
        }
    }
}

/// Commits on the payee's position; when the currency settles immediate
/// gross, then settles the payer's side too. Answers whether the transfer
/// ended SETTLED. The commit is durable before the payer's side is asked
/// for; if that second step fails, the switch finishes it at its next start
/// (`Store::unsettled_gross`).
async fn commit_and_settle(
    services: Arc<TransferServices>,
    fence: Option<Fence>,
    record: Arc<NewTransfer>,
    fulfilment: NewFulfilment,
    hash: MessageHash,
) -> Result<bool, FspiopError> {
    let gross_model = services.participants.gross_model(&record.currency).await?;
    let commit = PositionCommand::Commit {
        transfer_id: record.transfer_id.clone(),
        amount: record.amount,
        fulfilment,
        hash: Some(hash),
        gross_model,
    };
    position_command(
        services.clone(),
        fence,
        record.payee_fsp.clone(),
        record.currency.clone(),
        commit,
    )
    .await?;
    if gross_model.is_none() {
        return Ok(false);
    }
    let settle = PositionCommand::GrossSettlePayer {
        transfer_id: record.transfer_id.clone(),
        amount: record.amount,
    };
    match position_command(
        services,
        fence,
        record.payer_fsp.clone(),
        record.currency.clone(),
        settle,
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(error) => {
            // Committed all the same: the payee is paid; the payer's side
            // is finished at the next start.
            tracing::error!(transfer_id = %record.transfer_id, %error, "gross settlement of the payer's side failed");
            Ok(false)
        }
    }
}

/// Sends a command to a position actor and waits for its durable answer.
async fn position_command(
    services: Arc<TransferServices>,
    fence: Option<Fence>,
    participant: String,
    currency: String,
    command: PositionCommand,
) -> Result<Outcome, FspiopError> {
    let key = PositionKey {
        participant,
        currency,
    };
    let request = PositionRequest { command, fence };
    match services
        .positions
        .ask(&key, request, services.position_timeout)
        .await
    {
        Ok(Ok(reply)) => Ok(reply.outcome),
        Ok(Err(error)) => Err(error),
        Err(AskError::Timeout(_)) => Err(FspiopError::new(
            ErrorCode::ServiceUnavailable,
            "the position did not answer in time",
        )),
        Err(AskError::Gone) => Err(FspiopError::internal("position actor stopped")),
        Err(AskError::Unavailable(why)) => Err(FspiopError::new(
            ErrorCode::ServiceUnavailable,
            format!("the position is not reachable now ({why}); retry later"),
        )),
    }
}

/// How a new prepare ended, once durable.
enum PrepareEnd {
    Invalid(FspiopError),
    Position(Outcome),
}

impl Handler<Prepare> for TransferActor {
    type Result = Reply;

    fn handle(&mut self, prepare: Prepare, ctx: &mut Self::Context) -> Reply {
        if let Some(refused) = self.refuse_unloaded(ctx) {
            return refused;
        }
        let (answer, answer_rx) = oneshot::channel();
        if self.transfer.is_some() && prepare.transfer.bulk_transfer_id.is_some() {
            // A bulk line never joins an existing transfer, its own bulk's included.
            let _ = answer.send(Err(FspiopError::new(
                ErrorCode::ModifiedRequest,
                "Individual transfer prepare duplicate",
            )));
            self.stop_if_done(ctx);
            return answered(answer_rx);
        }
        if let Some(existing) = &self.transfer {
            // Answered even for a line of a bulk: the sender is not the bulk.
            self.send_now(rules::on_duplicate_prepare(
                existing,
                &prepare.transfer.prepare_hash,
                &prepare.source,
            ));
            let _ = answer.send(Ok(()));
            self.stop_if_done(ctx);
            return answered(answer_rx);
        }
        // Armed before the reservation is asked for: if the answer is lost
        // (timeout, crash of the actor), the timer still finds the transfer.
        // A timer for a transfer that never became RESERVED does nothing.
        self.services.timers.schedule(
            &prepare.transfer.transfer_id,
            prepare.transfer.expiration_ms,
        );
        let services = self.services.clone();
        let fence = self.fence;
        let transfer = prepare.transfer.clone();
        let source = prepare.source.clone();
        let work = async move {
            let payer = services.participants.get(&transfer.payer_fsp).await?;
            let payee = services.participants.get(&transfer.payee_fsp).await?;
            let now = (services.clock)();
            let checked = rules::validate_prepare(
                &transfer,
                &source,
                payer.as_deref(),
                payee.as_deref(),
                now,
                services.settings,
            );
            if let Err(invalid) = checked {
                services
                    .writer
                    .write(invalid_record(transfer, &invalid, fence))
                    .await?;
                return Ok::<_, FspiopError>(PrepareEnd::Invalid(invalid));
            }
            // Only a valid prepare reaches (and so starts) the payer's position actor.
            let reserve = PositionCommand::Reserve {
                transfer: transfer.clone(),
                now_ms: (services.clock)(),
            };
            let outcome = position_command(
                services.clone(),
                fence,
                transfer.payer_fsp.clone(),
                transfer.currency.clone(),
                reserve,
            )
            .await?;
            Ok(PrepareEnd::Position(outcome))
        };
        let forward = prepare.forward;
        ctx.wait(work.into_actor(self).map(move |ended, actor, ctx| {
            // Refusals go to the sender (FSPIOP-Source): for an invalid
            // prepare that need not be the payerFsp the body names.
            let (record, payer, payee) = {
                let t = &prepare.transfer;
                (t.clone(), prepare.source.clone(), t.payee_fsp.clone())
            };
            let final_state = match &ended {
                Ok(PrepareEnd::Invalid(_)) => state::INVALID,
                Ok(PrepareEnd::Position(Outcome::Applied)) => state::RESERVED,
                Ok(PrepareEnd::Position(Outcome::Rejected(_))) => state::ABORTED_REJECTED,
                Ok(PrepareEnd::Position(Outcome::Expired)) => state::EXPIRED_PREPARED,
                Err(error) => {
                    // Nothing (or an unknown outcome) was recorded: the payer
                    // hears it on the HTTP answer and may repeat the prepare.
                    let _ = answer.send(Err(error.clone()));
                    ctx.stop();
                    return;
                }
            };
            let transfer = Transfer {
                record,
                state: final_state.to_string(),
                fulfilment: None,
                completed_timestamp: None,
                fulfil_hash: None,
                error_hash: None,
            };
            let notifications = match ended {
                Ok(PrepareEnd::Position(Outcome::Applied)) => vec![Notification::Forward {
                    to: payee,
                    transfer_id: transfer.id().to_string(),
                    endpoint: TransferEndpoint::Post,
                    method: "POST",
                    message: forward,
                }],
                Ok(PrepareEnd::Invalid(error))
                | Ok(PrepareEnd::Position(Outcome::Rejected(error))) => {
                    vec![transfer.error_to(&payer, error)]
                }
                Ok(PrepareEnd::Position(Outcome::Expired)) => vec![transfer.error_to(
                    &payer,
                    FspiopError::new(
                        ErrorCode::TransferExpired,
                        "expired before it could be reserved",
                    ),
                )],
                Err(_) => unreachable!("handled above"),
            };
            actor.transfer = Some(transfer);
            if final_state != state::RESERVED {
                actor.cancel_expiry();
            }
            let _ = answer.send(Ok(()));
            actor.notify_all(notifications);
            actor.stop_if_done(ctx);
        }));
        answered(answer_rx)
    }
}

/// The rows recording a prepare that failed validation (state INVALID).
fn invalid_record(
    mut transfer: Arc<NewTransfer>,
    error: &FspiopError,
    fence: Option<Fence>,
) -> LedgerWrite {
    if switch_storage::to_units(transfer.amount).is_err() {
        // Kept for audit even when the amount cannot be stored exactly.
        Arc::make_mut(&mut transfer).amount = Decimal::ZERO;
    }
    let id = transfer.transfer_id.clone();
    LedgerWrite {
        transfers: TransferWrite {
            transfers: vec![transfer],
            states: vec![TransferStateChange {
                transfer_id: id.clone(),
                state: state::INVALID.into(),
                reason: Some(error.description()),
            }],
            errors: vec![transfer_error(&id, error)],
            ..TransferWrite::default()
        },
        fences: fence.into_iter().collect(),
        ..LedgerWrite::default()
    }
}

fn states(id: &str, names: &[&str], reason: Option<String>) -> Vec<TransferStateChange> {
    names
        .iter()
        .map(|name| TransferStateChange {
            transfer_id: id.into(),
            state: (*name).into(),
            reason: reason.clone(),
        })
        .collect()
}

impl Handler<Fulfil> for TransferActor {
    type Result = Reply;

    fn handle(&mut self, Fulfil(message): Fulfil, ctx: &mut Self::Context) -> Reply {
        if let Some(refused) = self.refuse_unloaded(ctx) {
            return refused;
        }
        let Some(transfer) = self.transfer.clone() else {
            return self.unknown_transfer(&message.source, &message.content_version, ctx);
        };
        let (answer, answer_rx) = oneshot::channel();
        let hash = MessageHash {
            transfer_id: self.id.clone(),
            kind: "FULFIL".into(),
            hash: message.hash.clone(),
        };
        match rules::on_fulfil(&transfer, &message, self.now()) {
            FulfilAction::Reply(notifications) => {
                self.notify_all(notifications);
                let _ = answer.send(Ok(()));
                self.stop_if_done(ctx);
            }
            FulfilAction::Commit { patch } => {
                // completedTimestamp is optional in a fulfil: the switch's own time stands in.
                let completed = message.completed_timestamp.clone().unwrap_or_else(|| {
                    chrono::DateTime::from_timestamp_millis(self.now())
                        .unwrap_or_default()
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                        .to_string()
                });
                let fulfilment = NewFulfilment {
                    transfer_id: self.id.clone(),
                    fulfilment: message.fulfilment.clone().unwrap_or_default(),
                    completed_timestamp: completed.clone(),
                };
                let commit = commit_and_settle(
                    self.services.clone(),
                    self.fence,
                    transfer.record.clone(),
                    fulfilment,
                    hash,
                );
                ctx.wait(commit.into_actor(self).map(move |committed, actor, ctx| {
                    let settled = match committed {
                        Ok(settled) => settled,
                        Err(error) => {
                            let _ = answer.send(Err(error));
                            ctx.stop();
                            return;
                        }
                    };
                    actor.cancel_expiry();
                    let mut done = transfer;
                    done.state = if settled {
                        state::SETTLED
                    } else {
                        state::COMMITTED
                    }
                    .into();
                    done.fulfilment = message.fulfilment.clone();
                    done.completed_timestamp = Some(completed);
                    done.fulfil_hash = Some(message.hash.clone());
                    let notifications =
                        rules::after_commit(&done, &message, patch, actor.services.settings);
                    actor.transfer = Some(done);
                    let _ = answer.send(Ok(()));
                    actor.notify_all(notifications);
                    ctx.stop();
                }));
            }
            FulfilAction::Abort { error, patch } => {
                let reverse = self.reverse(
                    &transfer,
                    &[state::RECEIVED_FULFIL, state::ABORTED_ERROR],
                    error.clone(),
                    Some(hash),
                );
                ctx.wait(reverse.into_actor(self).map(move |reversed, actor, ctx| {
                    if let Err(failure) = reversed {
                        let _ = answer.send(Err(failure));
                        ctx.stop();
                        return;
                    }
                    let mut done = transfer;
                    done.state = state::ABORTED_ERROR.into();
                    done.fulfil_hash = Some(message.hash.clone());
                    actor.finish(
                        done,
                        rules::after_invalid_fulfil,
                        &error,
                        patch,
                        answer,
                        ctx,
                    );
                }));
            }
            FulfilAction::Expire { patch } => {
                self.expire(transfer, patch, answer, ctx);
            }
        }
        answered(answer_rx)
    }
}

impl TransferActor {
    /// A fulfil or error for an id the switch does not know: 2001 to the
    /// sender, as the reference hub.
    fn unknown_transfer(
        &self,
        source: &str,
        content_version: &str,
        ctx: &mut Context<Self>,
    ) -> Reply {
        self.notify_all(vec![rules::error_to(
            source,
            &self.id,
            FspiopError::internal("transfer not found"),
            content_version,
        )]);
        ctx.stop();
        Box::pin(async { Ok(()) })
    }

    /// Gives the reservation back to the payer, recording `names` with `error`.
    fn reverse(
        &self,
        transfer: &Transfer,
        names: &[&str],
        error: FspiopError,
        hash: Option<MessageHash>,
    ) -> impl std::future::Future<Output = Result<Outcome, FspiopError>> + 'static {
        let id = transfer.id().to_string();
        self.position(
            &transfer.record.payer_fsp,
            &transfer.record.currency,
            PositionCommand::Reverse {
                transfer_id: id.clone(),
                amount: transfer.record.amount,
                states: states(&id, names, Some(error.description())),
                error: Some(transfer_error(&id, &error)),
                hash,
            },
        )
    }

    /// Adopts a final transfer, answers, notifies, and stops.
    fn finish(
        &mut self,
        done: Transfer,
        notifications: fn(&Transfer, &FspiopError, bool) -> Vec<Notification>,
        error: &FspiopError,
        patch: bool,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) {
        self.cancel_expiry();
        let out = notifications(&done, error, patch);
        self.transfer = Some(done);
        let _ = answer.send(Ok(()));
        self.notify_all(out);
        ctx.stop();
    }

    /// The timeout of a reserved transfer: reverse, EXPIRED_RESERVED, 3303 to both.
    fn expire(&mut self, transfer: Transfer, patch: bool, answer: Answer, ctx: &mut Context<Self>) {
        let error = FspiopError::new(
            ErrorCode::TransferExpired,
            "the transfer expired before it was fulfilled",
        );
        let reverse = self.reverse(
            &transfer,
            &[state::RESERVED_TIMEOUT, state::EXPIRED_RESERVED],
            error.clone(),
            None,
        );
        ctx.wait(reverse.into_actor(self).map(move |reversed, actor, ctx| {
            if let Err(failure) = reversed {
                // Try again later: the timer must not be lost.
                actor.schedule_expiry();
                let _ = answer.send(Err(failure));
                ctx.stop();
                return;
            }
            let mut done = transfer;
            done.state = state::EXPIRED_RESERVED.into();
            actor.finish(
                done,
                |t, _, patch| rules::after_expiry(t, patch),
                &error,
                patch,
                answer,
                ctx,
            );
        }));
    }
}

impl Handler<PayeeError> for TransferActor {
    type Result = Reply;

    fn handle(&mut self, PayeeError(message): PayeeError, ctx: &mut Self::Context) -> Reply {
        if let Some(refused) = self.refuse_unloaded(ctx) {
            return refused;
        }
        let Some(transfer) = self.transfer.clone() else {
            return self.unknown_transfer(&message.source, &message.content_version, ctx);
        };
        let (answer, answer_rx) = oneshot::channel();
        match rules::on_payee_error(&transfer, &message) {
            ErrorAction::Reply(notifications) => {
                self.notify_all(notifications);
                let _ = answer.send(Ok(()));
                self.stop_if_done(ctx);
            }
            ErrorAction::Abort => {
                let id = self.id.clone();
                let reason = format!("{}: {}", message.error_code, message.error_description);
                let reverse = self.position(
                    &transfer.record.payer_fsp,
                    &transfer.record.currency,
                    PositionCommand::Reverse {
                        transfer_id: id.clone(),
                        amount: transfer.record.amount,
                        states: states(
                            &id,
                            &[state::RECEIVED_ERROR, state::ABORTED_ERROR],
                            Some(reason),
                        ),
                        error: Some(switch_storage::transfers::NewTransferError {
                            transfer_id: id.clone(),
                            error_code: message.error_code.clone(),
                            error_description: message.error_description.clone(),
                        }),
                        hash: Some(MessageHash {
                            transfer_id: id,
                            kind: "ERROR".into(),
                            hash: message.hash.clone(),
                        }),
                    },
                );
                ctx.wait(reverse.into_actor(self).map(move |reversed, actor, ctx| {
                    if let Err(failure) = reversed {
                        let _ = answer.send(Err(failure));
                        ctx.stop();
                        return;
                    }
                    actor.cancel_expiry();
                    let mut done = transfer;
                    done.state = state::ABORTED_ERROR.into();
                    done.error_hash = Some(message.hash.clone());
                    // The payer gets the payee's own error, unchanged.
                    let forward = Notification::Forward {
                        to: done.record.payer_fsp.clone(),
                        transfer_id: done.id().to_string(),
                        endpoint: TransferEndpoint::Error,
                        method: "PUT",
                        message: message.forward,
                    };
                    actor.transfer = Some(done);
                    let _ = answer.send(Ok(()));
                    actor.notify_all(vec![forward]);
                    ctx.stop();
                }));
            }
        }
        answered(answer_rx)
    }
}

impl Handler<Get> for TransferActor {
    type Result = Reply;

    fn handle(&mut self, get: Get, ctx: &mut Self::Context) -> Reply {
        if let Some(refused) = self.refuse_unloaded(ctx) {
            return refused;
        }
        let notification = rules::on_get(
            self.transfer.as_ref(),
            &self.id,
            &get.source,
            &get.content_version,
        );
        // A query is answered even for a line of a bulk.
        self.send_now(vec![notification]);
        self.stop_if_done(ctx);
        Box::pin(async { Ok(()) })
    }
}

impl Handler<Expire> for TransferActor {
    type Result = Reply;

    fn handle(&mut self, _: Expire, ctx: &mut Self::Context) -> Reply {
        if let Some(refused) = self.refuse_unloaded(ctx) {
            return refused;
        }
        let (answer, answer_rx) = oneshot::channel();
        match self.transfer.clone() {
            Some(t) if t.state == state::RESERVED && t.record.expiration_ms <= self.now() => {
                self.expire(t, false, answer, ctx);
            }
            Some(t) if t.state == state::RESERVED => {
                // Fired early (clock or re-arm): wait for the real expiry.
                self.schedule_expiry();
                let _ = answer.send(Ok(()));
            }
            _ => {
                let _ = answer.send(Ok(()));
                self.stop_if_done(ctx);
            }
        }
        answered(answer_rx)
    }
}
