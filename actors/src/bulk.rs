//! The bulk transfer actor: one per bulk, from its prepare until it is final.
//!
//! A bulk is split into ordinary transfers, one per line, each with its own
//! transfer actor and the same position path as a single transfer, so one
//! line over the payer's limit fails alone. Lines are marked with their bulk
//! and send no callbacks of their own: this actor tells the payer and the
//! payee about all lines at once (`PUT /bulkTransfers/{ID}` with
//! `individualTransferResults`), reading each line's outcome from the
//! database once its transfer actor has made it durable.
//!
//! States (history in `bulk_transfer_state_change`):
//! RECEIVED → ACCEPTED (at least one line reserved; forwarded to the payee)
//! or REJECTED (none); ACCEPTED → PROCESSING (payee answered) → COMPLETED,
//! or → REJECTED (payee's error); ACCEPTED or RECEIVED → EXPIRED.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use switch_cluster::{timers::Timers, AskError, Directory, Shards};
use switch_storage::bulk::{BulkHash, BulkLine, BulkRecord, NewBulk, NewBulkLine};
use switch_storage::transfers::NewTransfer;
use switch_storage::Store;
use tokio::sync::oneshot;

use crate::error::{ErrorCode, FspiopError};
use crate::notify::{ForwardedMessage, HubMessage, Notification, Notifier, Routed, Target};
use crate::transfer::rules::{api_state, state as line_state, ErrorMessage, FulfilMessage};
use crate::transfer::{Expire, LineAnswer, LineMessage, Lines, Prepare};

pub mod state {
    pub const RECEIVED: &str = "RECEIVED";
    pub const ACCEPTED: &str = "ACCEPTED";
    pub const PROCESSING: &str = "PROCESSING";
    pub const COMPLETED: &str = "COMPLETED";
    pub const REJECTED: &str = "REJECTED";
    pub const EXPIRED: &str = "EXPIRED";
}

/// The schema's limit on `individualTransfers`.
pub const LINES_MAX: usize = 1000;
/// Line messages a bulk has in flight to transfer actors at once, so one
/// large bulk cannot flood the position actors' queues.
const LINES_IN_FLIGHT_MAX: usize = 64;

const POST_ENDPOINT: &str = "FSPIOP_CALLBACK_URL_BULK_TRANSFER_POST";
const PUT_ENDPOINT: &str = "FSPIOP_CALLBACK_URL_BULK_TRANSFER_PUT";
const ERROR_ENDPOINT: &str = "FSPIOP_CALLBACK_URL_BULK_TRANSFER_ERROR";

/// The `bulkTransferState` the API reports for an internal state.
pub fn api_bulk_state(internal: &str) -> &'static str {
    match internal {
        state::RECEIVED => "RECEIVED",
        state::ACCEPTED => "ACCEPTED",
        state::PROCESSING => "PROCESSING",
        state::COMPLETED => "COMPLETED",
        // An expired bulk committed nothing: every reserved line was aborted.
        _ => "REJECTED",
    }
}

fn is_final(internal: &str) -> bool {
    matches!(
        internal,
        state::COMPLETED | state::REJECTED | state::EXPIRED
    )
}

/// What every bulk actor shares.
pub struct BulkServices {
    pub store: Store,
    /// The lines' transfer actors, here or on their owners.
    pub lines: Arc<Lines>,
    pub notifier: Arc<dyn Notifier>,
    /// The bulks' own expiry timers (the lines have theirs).
    pub timers: Arc<dyn Timers>,
    /// How long a line waits for its transfer actor's durable answer.
    pub reply_timeout: Duration,
    pub clock: fn() -> i64,
}

impl BulkServices {
    fn notify(&self, notification: Notification) {
        self.notifier.notify(notification);
    }
}

pub type BulkDirectory = Directory<String, BulkActor>;

pub fn bulk_directory(
    shards: Arc<Shards>,
    services: Arc<BulkServices>,
    mailbox_capacity: usize,
) -> BulkDirectory {
    Directory::new(shards, mailbox_capacity, move |id: &String| BulkActor {
        id: id.clone(),
        services: services.clone(),
        bulk: None,
    })
}

/// POST /bulkTransfers, checked by the edge: every line is a [`NewTransfer`]
/// with the bulk's payer, payee, expiration and id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct BulkPrepare {
    pub bulk: NewBulk,
    pub lines: Vec<NewTransfer>,
    /// The body as received, to forward the accepted lines.
    pub body: Value,
    pub source: String,
    pub forward: ForwardedMessage,
}

/// One `individualTransferResults` entry of the payee's PUT.
#[derive(Debug, Clone, PartialEq)]
pub struct LineResult {
    pub transfer_id: String,
    pub fulfilment: Option<String>,
    pub error: Option<(String, String)>,
    /// Hash of the entry, the line's fulfil hash.
    pub hash: String,
}

/// PUT /bulkTransfers/{ID} from the payee.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct BulkFulfil {
    pub source: String,
    pub destination: Option<String>,
    pub hash: String,
    pub completed_timestamp: Option<String>,
    pub completed_ms: Option<i64>,
    pub results: Vec<LineResult>,
    pub content_version: String,
}

/// PUT /bulkTransfers/{ID}/error from the payee.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct BulkError(pub ErrorMessage);

/// GET /bulkTransfers/{ID}.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FspiopError>")]
pub struct BulkGet {
    pub source: String,
    pub content_version: String,
}

pub struct BulkActor {
    id: String,
    services: Arc<BulkServices>,
    bulk: Option<BulkRecord>,
}

impl Actor for BulkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = self.services.store.clone();
        let id = self.id.clone();
        ctx.wait(async move { store.bulk(&id).await }.into_actor(self).map(
            |loaded, actor, ctx| match loaded {
                Ok(record) => actor.bulk = record,
                Err(error) => {
                    tracing::error!(bulk_transfer_id = %actor.id, %error, "bulk load failed");
                    ctx.stop();
                }
            },
        ));
    }
}

/// The HTTP answer of a message, sent once its first durable step is done;
/// the rest of the work (the lines) goes on after it.
struct Answer(Mutex<Option<oneshot::Sender<Result<(), FspiopError>>>>);

impl Answer {
    fn ok(&self) {
        self.send(Ok(()));
    }

    fn send(&self, result: Result<(), FspiopError>) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
}

type Reply = ResponseFuture<Result<(), FspiopError>>;
type Step = Result<Option<BulkRecord>, FspiopError>;

impl BulkActor {
    /// Runs one message's work with the mailbox held, adopts the bulk it
    /// leaves, and stops once the bulk is final (or unknown).
    fn run<F, Fut>(&mut self, ctx: &mut Context<Self>, work: F) -> Reply
    where
        F: FnOnce(Arc<BulkServices>, Option<BulkRecord>, Arc<Answer>) -> Fut,
        Fut: std::future::Future<Output = Step> + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let answer = Arc::new(Answer(Mutex::new(Some(sender))));
        let done = answer.clone();
        let future = work(self.services.clone(), self.bulk.clone(), answer);
        ctx.wait(
            async move {
                let step = future.await;
                done.send(step.as_ref().map(|_| ()).map_err(Clone::clone));
                step
            }
            .into_actor(self)
            .map(|step, actor, ctx| match step {
                Ok(record) => {
                    actor.bulk = record;
                    if actor.bulk.as_ref().is_none_or(|b| is_final(&b.state)) {
                        ctx.stop();
                    }
                }
                Err(error) => {
                    // The next message reloads what was made durable.
                    tracing::error!(bulk_transfer_id = %actor.id, %error, "bulk step failed");
                    ctx.stop();
                }
            }),
        );
        Box::pin(async move {
            receiver.await.unwrap_or_else(|_| {
                Err(FspiopError::internal("bulk actor stopped before answering"))
            })
        })
    }
}

impl Handler<BulkPrepare> for BulkActor {
    type Result = Reply;

    fn handle(&mut self, message: BulkPrepare, ctx: &mut Self::Context) -> Reply {
        self.run(ctx, |s, known, answer| {
            on_prepare(s, known, message, answer)
        })
    }
}

impl Handler<BulkFulfil> for BulkActor {
    type Result = Reply;

    fn handle(&mut self, message: BulkFulfil, ctx: &mut Self::Context) -> Reply {
        let id = self.id.clone();
        self.run(ctx, |s, known, answer| {
            on_fulfil(s, id, known, message, answer)
        })
    }
}

impl Handler<BulkError> for BulkActor {
    type Result = Reply;

    fn handle(&mut self, message: BulkError, ctx: &mut Self::Context) -> Reply {
        let id = self.id.clone();
        self.run(ctx, |s, known, answer| {
            on_error(s, id, known, message, answer)
        })
    }
}

impl Handler<BulkGet> for BulkActor {
    type Result = Reply;

    fn handle(&mut self, message: BulkGet, ctx: &mut Self::Context) -> Reply {
        let id = self.id.clone();
        self.run(ctx, |s, known, _| on_get(s, id, known, message))
    }
}

impl Handler<Expire> for BulkActor {
    type Result = Reply;

    fn handle(&mut self, _: Expire, ctx: &mut Self::Context) -> Reply {
        self.run(ctx, on_expire)
    }
}

// -- the steps -------------------------------------------------------------

async fn on_prepare(
    s: Arc<BulkServices>,
    known: Option<BulkRecord>,
    message: BulkPrepare,
    answer: Arc<Answer>,
) -> Step {
    let id = message.bulk.bulk_transfer_id.clone();
    let version = message.bulk.content_version.clone();
    if let Some(record) = known {
        answer.ok();
        if record.bulk.prepare_hash != message.bulk.prepare_hash {
            let error = FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a different bulk transfer was already received with this id",
            );
            s.notify(error_to(&message.source, &id, &error, &version));
        } else if is_final(&record.state) {
            let lines = s.store.bulk_lines(&id).await?;
            s.notify(results_to(&message.source, &record, &lines, &version));
        }
        // A resend of a bulk still in progress is ignored, as the reference hub.
        return Ok(Some(record));
    }
    if !s.store.insert_bulk(message.bulk.clone()).await? {
        return Err(FspiopError::internal("bulk recorded by another actor"));
    }
    // Armed before any line is reserved, so no reservation outlives its bulk.
    s.timers.schedule(&id, message.bulk.expiration_ms);
    answer.ok();
    let total = message.lines.len();
    let refusals = prepare_lines(&s, message.lines, &message.source).await;
    s.store.record_bulk_lines(&id, refusals).await?;
    let lines = s.store.bulk_lines(&id).await?;
    let reserved: Vec<i64> = lines
        .iter()
        .filter(|l| l.state.as_deref() == Some(line_state::RESERVED))
        .map(|l| l.line_no)
        .collect();
    let mut record = BulkRecord {
        bulk: message.bulk,
        state: state::RECEIVED.into(),
        hashes: Vec::new(),
    };
    if reserved.is_empty() {
        step(
            &s,
            &mut record,
            state::REJECTED,
            Some("no line could be reserved"),
            None,
        )
        .await?;
        s.notify(results_to(
            &record.bulk.payer_fsp,
            &record,
            &lines,
            &version,
        ));
    } else {
        step(&s, &mut record, state::ACCEPTED, None, None).await?;
        let forward = accepted_lines(&message.body, message.forward, &reserved, total);
        s.notify(Notification::Route(Routed {
            target: target(&record.bulk.payee_fsp, POST_ENDPOINT, &id),
            method: "POST",
            message: forward,
        }));
    }
    Ok(Some(record))
}

/// Prepares every line through its transfer actor; returns the lines with
/// the refusal of each one that did not become a transfer of this bulk.
async fn prepare_lines(
    s: &BulkServices,
    lines: Vec<NewTransfer>,
    source: &str,
) -> Vec<NewBulkLine> {
    stream::iter(lines.into_iter().enumerate())
        .map(|(line_no, transfer)| {
            let id = transfer.transfer_id.clone();
            let prepare = Prepare {
                transfer: Arc::new(transfer),
                source: source.to_string(),
                forward: ForwardedMessage {
                    headers: Default::default(),
                    body: bytes::Bytes::new(),
                },
            };
            async move {
                let delivered = s
                    .lines
                    .deliver(&id, LineMessage::Prepare(prepare), s.reply_timeout)
                    .await;
                let refusal = refusal(delivered);
                NewBulkLine {
                    line_no: line_no as i64,
                    transfer_id: id,
                    refusal: refusal.map(|e| (e.code.code().to_string(), e.description())),
                }
            }
        })
        .buffered(LINES_IN_FLIGHT_MAX)
        .collect()
        .await
}

fn refusal(delivered: LineAnswer) -> Option<FspiopError> {
    match delivered {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(AskError::Timeout(_)) => Some(FspiopError::new(
            ErrorCode::ServiceUnavailable,
            "the transfer did not answer in time",
        )),
        Err(AskError::Gone) => Some(FspiopError::internal("transfer actor stopped")),
        Err(AskError::Unavailable(why)) => Some(FspiopError::new(
            ErrorCode::ServiceUnavailable,
            format!("the transfer is not reachable now ({why})"),
        )),
    }
}

/// The payer's bulk for the payee: as received when every line was
/// reserved, else with only the reserved lines.
fn accepted_lines(
    body: &Value,
    forward: ForwardedMessage,
    reserved: &[i64],
    total: usize,
) -> ForwardedMessage {
    if reserved.len() == total {
        return forward;
    }
    let mut body = body.clone();
    if let Some(Value::Array(lines)) = body.get_mut("individualTransfers") {
        let kept = lines
            .drain(..)
            .enumerate()
            .filter(|(i, _)| reserved.contains(&(*i as i64)))
            .map(|(_, line)| line)
            .collect();
        *lines = kept;
    }
    ForwardedMessage {
        headers: forward.headers,
        body: serde_json::to_vec(&body).unwrap_or_default().into(),
    }
}

/// Why a bulk no longer takes the payee's answer.
fn not_accepted(record: &BulkRecord) -> FspiopError {
    if record.state == state::EXPIRED {
        FspiopError::new(ErrorCode::TransferExpired, "the bulk transfer has expired")
    } else {
        FspiopError::new(
            ErrorCode::GenericValidationError,
            format!("bulk transfer is {}", api_bulk_state(&record.state)),
        )
    }
}

async fn on_fulfil(
    s: Arc<BulkServices>,
    id: String,
    known: Option<BulkRecord>,
    message: BulkFulfil,
    answer: Arc<Answer>,
) -> Step {
    let version = message.content_version.clone();
    let Some(mut record) = known else {
        answer.ok();
        s.notify(error_to(&message.source, &id, &not_found(), &version));
        return Ok(None);
    };
    let payer = record.bulk.payer_fsp.clone();
    let wrong_destination = (message.destination.as_deref() != Some(payer.as_str())).then(|| {
        FspiopError::new(
            ErrorCode::GenericValidationError,
            "FSPIOP-Destination does not match the payer of this bulk transfer",
        )
    });
    let payee = Sender {
        source: &message.source,
        hash: &message.hash,
        version: &version,
    };
    if !admit_payee_message(&s, &record, payee, "FULFIL", wrong_destination).await? {
        answer.ok();
        return Ok(Some(record));
    }
    let hash = BulkHash {
        kind: "FULFIL".into(),
        hash: message.hash.clone(),
        completed_timestamp: message.completed_timestamp.clone(),
    };
    step(&s, &mut record, state::PROCESSING, None, Some(hash)).await?;
    answer.ok();
    let lines = s.store.bulk_lines(&id).await?;
    let fulfilled = settle_lines(&s, &record, &lines, &message).await;
    let lines = s.store.bulk_lines(&id).await?;
    step(&s, &mut record, state::COMPLETED, None, None).await?;
    s.timers.cancel(&id, record.bulk.expiration_ms);
    s.notify(results_to(&payer, &record, &lines, &version));
    // The payee fulfilled lines the switch then aborted (a fulfilment that
    // does not match its condition, say): it must not pay them out.
    let payee_surprised = lines.iter().any(|l| {
        fulfilled.contains(&l.transfer_id) && l.state.as_deref().map(api_state) != Some("COMMITTED")
    });
    if payee_surprised {
        s.notify(results_to(
            &record.bulk.payee_fsp,
            &record,
            &lines,
            &version,
        ));
    }
    Ok(Some(record))
}

/// Sends each reserved line its commit or abort; returns the ids the payee
/// gave a fulfilment for.
async fn settle_lines(
    s: &BulkServices,
    record: &BulkRecord,
    lines: &[BulkLine],
    message: &BulkFulfil,
) -> Vec<String> {
    let reserved = lines
        .iter()
        .filter(|l| l.state.as_deref() == Some(line_state::RESERVED));
    let mut fulfilled = Vec::new();
    let mut work = Vec::new();
    for line in reserved {
        let result = message
            .results
            .iter()
            .find(|r| r.transfer_id == line.transfer_id);
        match result {
            Some(r) if r.fulfilment.is_some() => {
                fulfilled.push(line.transfer_id.clone());
                work.push((
                    line.transfer_id.clone(),
                    LineMessage::Fulfil(FulfilMessage {
                        source: message.source.clone(),
                        destination: message.destination.clone(),
                        hash: r.hash.clone(),
                        transfer_state: "COMMITTED".into(),
                        fulfilment: r.fulfilment.clone(),
                        completed_timestamp: message.completed_timestamp.clone(),
                        completed_ms: message.completed_ms,
                        content_version: message.content_version.clone(),
                        forward: empty_message(),
                    }),
                ));
            }
            _ => {
                let (code, description, hash) = match result {
                    Some(r) => {
                        let (code, description) = r.error.clone().unwrap_or_else(|| {
                            no_fulfilment("the payee's result for this transfer has no fulfilment")
                        });
                        (code, description, r.hash.clone())
                    }
                    None => {
                        let (code, description) = no_fulfilment(
                            "the payee's bulk answer has no result for this transfer",
                        );
                        (code, description, message.hash.clone())
                    }
                };
                work.push((
                    line.transfer_id.clone(),
                    LineMessage::Abort(ErrorMessage {
                        source: message.source.clone(),
                        hash,
                        error_code: code,
                        error_description: description,
                        content_version: message.content_version.clone(),
                        forward: empty_message(),
                    }),
                ));
            }
        }
    }
    run_lines(s, &record.bulk.bulk_transfer_id, work).await;
    fulfilled
}

fn no_fulfilment(detail: &str) -> (String, String) {
    let error = FspiopError::new(ErrorCode::GenericValidationError, detail);
    (error.code.code().to_string(), error.description())
}

/// A message for one line's transfer actor: the line's id and the message.
type LineWork = (String, LineMessage);

/// Delivers line messages, a bounded number at once. A line whose actor
/// does not answer stays as it is; its own expiry timer ends it.
async fn run_lines(s: &BulkServices, bulk_id: &str, work: Vec<LineWork>) {
    let failures: Vec<FspiopError> = stream::iter(work)
        .map(|(id, message)| async move {
            refusal(s.lines.deliver(&id, message, s.reply_timeout).await)
        })
        .buffer_unordered(LINES_IN_FLIGHT_MAX)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    for failure in failures {
        tracing::warn!(bulk_transfer_id = %bulk_id, %failure, "a line of the bulk did not finish");
    }
}

async fn on_error(
    s: Arc<BulkServices>,
    id: String,
    known: Option<BulkRecord>,
    BulkError(message): BulkError,
    answer: Arc<Answer>,
) -> Step {
    let version = message.content_version.clone();
    let Some(mut record) = known else {
        answer.ok();
        s.notify(error_to(&message.source, &id, &not_found(), &version));
        return Ok(None);
    };
    let payee = Sender {
        source: &message.source,
        hash: &message.hash,
        version: &version,
    };
    if !admit_payee_message(&s, &record, payee, "ERROR", None).await? {
        answer.ok();
        return Ok(Some(record));
    }
    let hash = BulkHash {
        kind: "ERROR".into(),
        hash: message.hash.clone(),
        completed_timestamp: None,
    };
    step(&s, &mut record, state::PROCESSING, None, Some(hash)).await?;
    answer.ok();
    let lines = s.store.bulk_lines(&id).await?;
    let work = lines
        .iter()
        .filter(|l| l.state.as_deref() == Some(line_state::RESERVED))
        .map(|line| {
            (
                line.transfer_id.clone(),
                LineMessage::Abort(ErrorMessage {
                    source: message.source.clone(),
                    hash: message.hash.clone(),
                    error_code: message.error_code.clone(),
                    error_description: message.error_description.clone(),
                    content_version: version.clone(),
                    forward: empty_message(),
                }),
            )
        })
        .collect();
    run_lines(&s, &id, work).await;
    let reason = format!("{}: {}", message.error_code, message.error_description);
    step(&s, &mut record, state::REJECTED, Some(&reason), None).await?;
    s.timers.cancel(&id, record.bulk.expiration_ms);
    // The payer gets the payee's own error, unchanged.
    s.notify(Notification::Route(Routed {
        target: target(&record.bulk.payer_fsp, ERROR_ENDPOINT, &id),
        method: "PUT",
        message: message.forward,
    }));
    Ok(Some(record))
}

async fn on_get(
    s: Arc<BulkServices>,
    id: String,
    known: Option<BulkRecord>,
    message: BulkGet,
) -> Step {
    let version = message.content_version;
    let party = known
        .as_ref()
        .filter(|r| message.source == r.bulk.payer_fsp || message.source == r.bulk.payee_fsp);
    match party {
        Some(record) => {
            let lines = s.store.bulk_lines(&id).await?;
            s.notify(results_to(&message.source, record, &lines, &version));
        }
        // Someone else's bulk is as unknown as a missing one.
        None => s.notify(error_to(&message.source, &id, &not_found(), &version)),
    }
    Ok(known)
}

async fn on_expire(s: Arc<BulkServices>, known: Option<BulkRecord>, _: Arc<Answer>) -> Step {
    let Some(mut record) = known else {
        return Ok(None);
    };
    if is_final(&record.state) {
        return Ok(Some(record));
    }
    let id = record.bulk.bulk_transfer_id.clone();
    if record.bulk.expiration_ms > (s.clock)() {
        // Fired early: wait for the real expiry.
        s.timers.schedule(&id, record.bulk.expiration_ms);
        return Ok(Some(record));
    }
    let lines = s.store.bulk_lines(&id).await?;
    let work = lines
        .iter()
        .filter(|l| l.state.as_deref().is_some_and(|st| !is_line_final(st)))
        .map(|l| (l.transfer_id.clone(), LineMessage::Expire))
        .collect();
    run_lines(&s, &id, work).await;
    let lines = s.store.bulk_lines(&id).await?;
    let payee_knew = record.state != state::RECEIVED;
    step(
        &s,
        &mut record,
        state::EXPIRED,
        Some("the bulk transfer expired"),
        None,
    )
    .await?;
    let version = record.bulk.content_version.clone();
    s.notify(results_to(
        &record.bulk.payer_fsp,
        &record,
        &lines,
        &version,
    ));
    if payee_knew {
        let error = FspiopError::new(ErrorCode::TransferExpired, "the bulk transfer expired");
        s.notify(error_to(&record.bulk.payee_fsp, &id, &error, &version));
    }
    Ok(Some(record))
}

fn is_line_final(internal: &str) -> bool {
    matches!(api_state(internal), "COMMITTED" | "ABORTED")
}

// -- helpers ---------------------------------------------------------------

/// Records a state change and adopts it.
async fn step(
    s: &BulkServices,
    record: &mut BulkRecord,
    next: &str,
    reason: Option<&str>,
    hash: Option<BulkHash>,
) -> Result<(), FspiopError> {
    s.store
        .bulk_step(
            &record.bulk.bulk_transfer_id,
            next,
            reason.map(str::to_string),
            hash.clone(),
        )
        .await?;
    record.state = next.to_string();
    record.hashes.extend(hash);
    Ok(())
}

/// Who sent a payee message, its hash, and its content version.
#[derive(Clone, Copy)]
struct Sender<'a> {
    source: &'a str,
    hash: &'a str,
    version: &'a str,
}

/// The checks a payee message (`kind` FULFIL or ERROR) passes before it
/// changes anything: its sender, a message seen before (the same one gets
/// the final state again, a different one 3106), and the bulk's state.
/// Ok(false) once the message has been answered.
async fn admit_payee_message(
    s: &BulkServices,
    record: &BulkRecord,
    sender: Sender<'_>,
    kind: &str,
    refusal: Option<FspiopError>,
) -> Result<bool, FspiopError> {
    let id = &record.bulk.bulk_transfer_id;
    let not_payee = (sender.source != record.bulk.payee_fsp).then(|| {
        FspiopError::new(
            ErrorCode::GenericValidationError,
            "FSPIOP-Source does not match the payee of this bulk transfer",
        )
    });
    if let Some(error) = not_payee.or(refusal) {
        s.notify(error_to(sender.source, id, &error, sender.version));
        return Ok(false);
    }
    if let Some(seen) = record.hash(kind) {
        if seen.hash != sender.hash {
            let error = FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a different answer was already received for this bulk transfer",
            );
            s.notify(error_to(sender.source, id, &error, sender.version));
        } else if is_final(&record.state) {
            let lines = s.store.bulk_lines(id).await?;
            s.notify(results_to(sender.source, record, &lines, sender.version));
        }
        return Ok(false);
    }
    if record.state != state::ACCEPTED {
        s.notify(error_to(
            sender.source,
            id,
            &not_accepted(record),
            sender.version,
        ));
        return Ok(false);
    }
    Ok(true)
}

fn not_found() -> FspiopError {
    FspiopError::new(ErrorCode::BulkTransferIdNotFound, "")
}

fn empty_message() -> ForwardedMessage {
    ForwardedMessage {
        headers: Default::default(),
        body: bytes::Bytes::new(),
    }
}

fn target(to: &str, endpoint_type: &'static str, id: &str) -> Target {
    Target {
        to: to.to_string(),
        endpoint_type,
        values: vec![("id", id.to_string())],
        path: None,
    }
}

fn hub_message(
    to: &str,
    endpoint_type: &'static str,
    id: &str,
    uri: String,
    body: Value,
    version: &str,
) -> Notification {
    Notification::Hub(HubMessage {
        target: target(to, endpoint_type, id),
        method: "PUT",
        uri,
        resource: "bulkTransfers",
        body: serde_json::to_vec(&body).unwrap_or_default().into(),
        content_version: version.to_string(),
    })
}

/// The hub's `PUT /bulkTransfers/{ID}/error`.
fn error_to(to: &str, id: &str, error: &FspiopError, version: &str) -> Notification {
    let mut information = json!({
        "errorCode": error.code.code(),
        "errorDescription": error.description(),
    });
    if !error.extensions.is_empty() {
        let extension: Vec<Value> = error
            .extensions
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect();
        information["extensionList"] = json!({ "extension": extension });
    }
    hub_message(
        to,
        ERROR_ENDPOINT,
        id,
        format!("/bulkTransfers/{id}/error"),
        json!({ "errorInformation": information }),
        version,
    )
}

/// The hub's `PUT /bulkTransfers/{ID}` with the outcome of every line that
/// has one.
fn results_to(to: &str, record: &BulkRecord, lines: &[BulkLine], version: &str) -> Notification {
    let id = &record.bulk.bulk_transfer_id;
    hub_message(
        to,
        PUT_ENDPOINT,
        id,
        format!("/bulkTransfers/{id}"),
        results_body(record, lines),
        version,
    )
}

pub fn results_body(record: &BulkRecord, lines: &[BulkLine]) -> Value {
    let results: Vec<Value> = lines.iter().filter_map(line_result).collect();
    let mut body = json!({ "bulkTransferState": api_bulk_state(&record.state) });
    let completed = record
        .hash("FULFIL")
        .and_then(|h| h.completed_timestamp.clone());
    if let Some(completed) = completed.filter(|_| record.state == state::COMPLETED) {
        body["completedTimestamp"] = json!(completed);
    }
    if !results.is_empty() {
        body["individualTransferResults"] = json!(results);
    }
    body
}

/// A line's entry in `individualTransferResults`: its fulfilment once
/// committed, its error once aborted or refused, nothing while pending.
fn line_result(line: &BulkLine) -> Option<Value> {
    let error = |(code, description): &(String, String)| {
        json!({
            "transferId": line.transfer_id,
            "errorInformation": {"errorCode": code, "errorDescription": description},
        })
    };
    match line.state.as_deref().map(api_state) {
        Some("COMMITTED") => Some(json!({
            "transferId": line.transfer_id,
            "fulfilment": line.fulfilment.clone().unwrap_or_default(),
        })),
        Some("ABORTED") => {
            let fallback = (
                ErrorCode::InternalServerError.code().to_string(),
                "the transfer was aborted".to_string(),
            );
            Some(error(line.error.as_ref().unwrap_or(&fallback)))
        }
        None => line.error.as_ref().map(error),
        _ => None,
    }
}
