//! Cluster mode at the edge: the node-to-node channel.
//!
//! Any node accepts any request. A transfer request whose transfer belongs
//! to another node's slot is forwarded there whole (method, path, FSPIOP
//! headers, body) and the owner's answer is relayed; the owner sends the
//! callbacks; a bulk transfer request goes the same way to the bulk's owner.
//! A transfer actor's position command for a position owned elsewhere goes
//! to `POST /internal/positions` on the owner, and a bulk's message for a
//! line owned elsewhere to `POST /internal/lines`. All travel on the
//! cluster port, never on the FSPIOP or operator ports.
//!
//! Limits: at most `forward_in_flight_max` unanswered requests per peer
//! (beyond it the edge answers 2003), each bounded by the actor reply
//! timeout plus one second. A forwarded request is never forwarded again:
//! if ownership moved meanwhile, the answer is 2003 and the DFSP repeats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switch_actors::position::PositionAnswer;
use switch_actors::position::{PositionKey, PositionRequest, RemoteAnswer, RemotePositions};
use switch_actors::transfer::{LineMessage, RemoteLineAnswer, RemoteLines};
use switch_actors::ErrorCode;
use switch_actors::FspiopError;
use switch_cluster::placement::{bulk_slot, transfer_slot, Route, SETTLEMENT_SLOT};
use switch_cluster::AskError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::errors::{ApiError, ApiResult};
use crate::notifier::{callback_client, CallbackClient};
use crate::state::AppState;

/// Marks a request that one node forwarded to another.
pub const FORWARDED_BY: &str = "x-mojaswitch-forwarded-by";

/// Headers not copied onto a forwarded request (hop-by-hop or recomputed).
const NOT_FORWARDED: [&str; 5] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    FORWARDED_BY,
];

/// The client side of the node-to-node channel.
#[derive(Clone)]
pub struct Peers {
    node: String,
    /// hyper, not reqwest: reqwest adds `Accept: */*`, which FSPIOP refuses
    /// on requests that must not carry one (a forwarded `PUT /transfers/{id}`).
    client: CallbackClient,
    io: tokio::runtime::Handle,
    in_flight_max: usize,
    /// Position calls sent in one request at most (`position_batch_max`).
    batch_max: usize,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Per peer: the queue of position calls its batcher sends.
    position_queues: Arc<Mutex<HashMap<String, mpsc::Sender<QueuedPositionCall>>>>,
}

/// Position calls one node accepts in one request, at most (the sender's
/// `position_batch_max` is at most this).
pub const POSITION_BATCH_MAX: usize = switch_config::POSITION_BATCH_MAX_LIMIT;
/// Position batches to one peer in flight at once, at most: while they are,
/// new calls wait in the queue and leave together.
pub const POSITION_BATCHES_IN_FLIGHT_MAX: usize = 16;

/// A position call waiting for its peer's batcher.
struct QueuedPositionCall {
    call: PositionCall,
    timeout: Duration,
    reply: oneshot::Sender<Result<PositionAnswer, AskError>>,
}

/// Why a peer did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0} requests to this peer are unanswered; retry later")]
    Busy(usize),
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("peer unreachable: {0}")]
    Unreachable(String),
}

impl Peers {
    pub fn new(
        node: &str,
        io: tokio::runtime::Handle,
        in_flight_max: usize,
        batch_max: usize,
    ) -> Peers {
        assert!(in_flight_max > 0);
        assert!((1..=POSITION_BATCH_MAX).contains(&batch_max));
        let client = callback_client(64);
        Peers {
            node: node.to_string(),
            client,
            io,
            in_flight_max,
            batch_max,
            slots: Arc::new(Mutex::new(HashMap::new())),
            position_queues: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn permits(&self, address: &str) -> Arc<Semaphore> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.in_flight_max)))
            .clone()
    }

    /// Sends `request` to `address` within `timeout`, on the I/O runtime.
    async fn send(
        &self,
        address: &str,
        request: hyper::http::request::Builder,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Option<String>, bytes::Bytes), PeerError> {
        let Ok(permit) = self.permits(address).try_acquire_owned() else {
            return Err(PeerError::Busy(self.in_flight_max));
        };
        let request = request
            .header(FORWARDED_BY, self.node.as_str())
            .body(Full::new(body))
            .map_err(|e| PeerError::Unreachable(format!("cannot build the request: {e}")))?;
        let client = self.client.clone();
        let exchange = async move {
            let response = client
                .request(request)
                .await
                .map_err(|e| PeerError::Unreachable(e.to_string()))?;
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| PeerError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, content_type, body))
        };
        let work = async move {
            let _permit = permit;
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(PeerError::Timeout(timeout)))
        };
        self.io
            .spawn(work)
            .await
            .unwrap_or_else(|e| Err(PeerError::Unreachable(e.to_string())))
    }

    /// Forwards an edge request whole to the node at `address`.
    pub async fn forward(
        &self,
        address: &str,
        request: &HttpRequest,
        body: &web::Bytes,
        timeout: Duration,
    ) -> Result<HttpResponse, PeerError> {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut outgoing = hyper::Request::builder()
            .method(request.method().as_str())
            .uri(format!("http://{address}{path}"));
        for (name, value) in request.headers() {
            if !NOT_FORWARDED.contains(&name.as_str()) {
                outgoing = outgoing.header(name.as_str(), value.as_bytes());
            }
        }
        let (status, content_type, body) =
            self.send(address, outgoing, body.clone(), timeout).await?;
        let mut response = HttpResponse::build(status);
        if let Some(content_type) = content_type {
            response.content_type(content_type);
        }
        Ok(response.body(body))
    }
}

/// The body of `POST /internal/positions`.
#[derive(Serialize, Deserialize)]
struct PositionCall {
    key: PositionKey,
    request: PositionRequest,
}

impl Peers {
    /// POSTs `call` as JSON to `path` on the node at `address` and decodes
    /// its 200 answer; any other status is the peer's refusal.
    async fn call<C: Serialize, A: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        call: &C,
        timeout: Duration,
    ) -> Result<A, AskError> {
        let body = serde_json::to_vec(call)
            .map_err(|e| AskError::Unavailable(format!("cannot encode: {e}")))?;
        let outgoing = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://{address}{path}"))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        let body = bytes::Bytes::from(body);
        let (status, _, body) = match self.send(address, outgoing, body, timeout).await {
            Ok(answer) => answer,
            Err(PeerError::Timeout(t)) => return Err(AskError::Timeout(t)),
            Err(error) => return Err(AskError::Unavailable(error.to_string())),
        };
        if status != StatusCode::OK {
            return Err(AskError::Unavailable(
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        serde_json::from_slice::<A>(&body)
            .map_err(|e| AskError::Unavailable(format!("cannot decode the answer: {e}")))
    }
}

impl RemotePositions for Peers {
    /// Queues the call for the peer's batcher (at most
    /// `forward_in_flight_max` waiting; beyond it the call is refused at
    /// once) and waits for its own answer within `timeout`. With
    /// `position_batch_max` 1, sends it alone at once instead.
    fn ask(
        &self,
        address: &str,
        key: &PositionKey,
        request: &PositionRequest,
        timeout: Duration,
    ) -> RemoteAnswer {
        let call = PositionCall {
            key: key.clone(),
            request: request.clone(),
        };
        if self.batch_max == 1 {
            // Batching off: one request per call, as many at once as
            // `forward_in_flight_max` allows.
            let (peers, address) = (self.clone(), address.to_string());
            return Box::pin(async move {
                let answers: Vec<Result<PositionAnswer, AskError>> = peers
                    .call(&address, "/internal/positions", &[call], timeout)
                    .await?;
                answers.into_iter().next().unwrap_or_else(|| {
                    Err(AskError::Unavailable("the peer answered nothing".into()))
                })
            });
        }
        let (reply, answer) = oneshot::channel();
        let queued = QueuedPositionCall {
            call,
            timeout,
            reply,
        };
        let queued = self.position_queue(address).try_send(queued);
        Box::pin(async move {
            if queued.is_err() {
                return Err(AskError::Unavailable(
                    "too many position calls queued for this peer; retry later".into(),
                ));
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(AskError::Unavailable("the batcher stopped".into())),
                Err(_) => Err(AskError::Timeout(timeout)),
            }
        })
    }
}

impl Peers {
    /// The queue of `address`'s batcher, started on first use.
    fn position_queue(&self, address: &str) -> mpsc::Sender<QueuedPositionCall> {
        let mut queues = self
            .position_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = queues.get(address).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, calls) = mpsc::channel(self.in_flight_max);
        self.io.spawn(send_position_batches(
            self.clone(),
            address.to_string(),
            calls,
        ));
        queues.insert(address.to_string(), queue.clone());
        queue
    }
}

/// A peer's batcher: takes every call waiting (up to `position_batch_max`)
/// as one `POST /internal/positions`, with at most
/// `POSITION_BATCHES_IN_FLIGHT_MAX` batches unanswered. At low load a batch
/// is one call and leaves at once; under load calls queue behind the
/// batches in flight and share the next request.
async fn send_position_batches(
    peers: Peers,
    address: String,
    mut calls: mpsc::Receiver<QueuedPositionCall>,
) {
    let in_flight = Arc::new(Semaphore::new(POSITION_BATCHES_IN_FLIGHT_MAX));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = calls.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < peers.batch_max {
            match calls.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        let (peers, address) = (peers.clone(), address.clone());
        tokio::spawn(async move {
            let _permit = permit;
            send_position_batch(&peers, &address, batch).await;
        });
    }
}

/// Sends one batch and hands each caller its own answer. Sent once: a
/// batch that fails fails every call in it (none is resent).
async fn send_position_batch(peers: &Peers, address: &str, batch: Vec<QueuedPositionCall>) {
    let timeout = batch
        .iter()
        .map(|queued| queued.timeout)
        .max()
        .unwrap_or_default();
    let (calls, replies): (Vec<PositionCall>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.call, queued.reply))
        .unzip();
    let answers: Result<Vec<Result<PositionAnswer, AskError>>, AskError> = peers
        .call(address, "/internal/positions", &calls, timeout)
        .await
        .and_then(|answers: Vec<_>| {
            if answers.len() == replies.len() {
                Ok(answers)
            } else {
                Err(AskError::Unavailable(format!(
                    "the peer answered {} of {} position calls",
                    answers.len(),
                    replies.len()
                )))
            }
        });
    match answers {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The body of `POST /internal/lines`.
#[derive(Serialize, Deserialize)]
struct LineCall {
    transfer_id: String,
    message: LineMessage,
}

impl RemoteLines for Peers {
    fn ask(
        &self,
        address: &str,
        transfer_id: &str,
        message: &LineMessage,
        timeout: Duration,
    ) -> RemoteLineAnswer {
        let peers = self.clone();
        let address = address.to_string();
        let call = LineCall {
            transfer_id: transfer_id.to_string(),
            message: message.clone(),
        };
        Box::pin(async move {
            peers
                .call::<_, Result<(), FspiopError>>(&address, "/internal/lines", &call, timeout)
                .await
        })
    }
}

/// The node-to-node routes: the FSPIOP routes and the settlement API (for
/// forwarded requests; their paths do not overlap), position commands and
/// bulk lines' messages.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/internal/positions").route(web::post().to(position_call)));
    cfg.service(web::resource("/internal/lines").route(web::post().to(line_call)));
    crate::fspiop::routes(cfg);
    crate::operator::settlement_routes(cfg);
}

/// A batch of position calls: all asked at once (the position actors batch
/// their writes), each answered in order, each with its own outcome.
async fn position_call(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let calls: Vec<PositionCall> = match serde_json::from_slice(&body) {
        Ok(calls) => calls,
        Err(error) => return undecodable(error),
    };
    if calls.len() > POSITION_BATCH_MAX {
        return HttpResponse::PayloadTooLarge().body(format!(
            "{} position calls; at most {POSITION_BATCH_MAX} a batch",
            calls.len()
        ));
    }
    let timeout = Duration::from_millis(state.config.actor_reply_timeout_ms);
    let answers: Vec<Result<PositionAnswer, AskError>> =
        futures::future::join_all(calls.into_iter().map(|call| {
            let positions = state.positions.clone();
            async move { positions.ask_here(&call.key, call.request, timeout).await }
        }))
        .await;
    HttpResponse::Ok().json(answers)
}

async fn line_call(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let call: LineCall = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(error) => return undecodable(error),
    };
    let timeout = Duration::from_millis(state.config.actor_reply_timeout_ms);
    let answer = state
        .lines
        .deliver_here(&call.transfer_id, call.message, timeout)
        .await;
    reply(answer, "line")
}

/// The 400 that refuses a node-to-node call's body.
fn undecodable(error: serde_json::Error) -> HttpResponse {
    HttpResponse::BadRequest().body(error.to_string())
}

/// The local actor's answer as JSON, or why there is none (504, 503).
fn reply<A: Serialize>(answer: Result<A, AskError>, actor: &str) -> HttpResponse {
    match answer {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(AskError::Timeout(_)) => {
            HttpResponse::GatewayTimeout().body(format!("{actor} did not answer"))
        }
        Err(error) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

/// Sends a transfer request to its owner if that is another node: `None`
/// when this node handles it, the owner's answer otherwise.
pub async fn forward_transfer(
    state: &AppState,
    request: &HttpRequest,
    body: &web::Bytes,
    transfer_id: &str,
) -> ApiResult<Option<HttpResponse>> {
    forward_to_owner(state, request, body, transfer_slot(transfer_id)).await
}

/// Sends a settlement change (operator API) to the owner of
/// `SETTLEMENT_SLOT`, whose settlement actor serialises every window close
/// and settlement step of the cluster; as [`forward_transfer`].
pub async fn forward_settlement_change(
    state: &AppState,
    request: &HttpRequest,
    body: &web::Bytes,
) -> ApiResult<Option<HttpResponse>> {
    forward_to_owner(state, request, body, SETTLEMENT_SLOT).await
}

/// Sends a bulk transfer request to the bulk's owner, as [`forward_transfer`].
pub async fn forward_bulk(
    state: &AppState,
    request: &HttpRequest,
    body: &web::Bytes,
    bulk_transfer_id: &str,
) -> ApiResult<Option<HttpResponse>> {
    forward_to_owner(state, request, body, bulk_slot(bulk_transfer_id)).await
}

async fn forward_to_owner(
    state: &AppState,
    request: &HttpRequest,
    body: &web::Bytes,
    slot: u32,
) -> ApiResult<Option<HttpResponse>> {
    let Some(peers) = &state.peers else {
        return Ok(None);
    };
    match state.placement.route(slot) {
        Route::Local { .. } => Ok(None),
        Route::Remote { address, .. } if request.headers().get(FORWARDED_BY).is_none() => {
            let timeout = Duration::from_millis(state.config.actor_reply_timeout_ms + 1_000);
            peers
                .forward(&address, request, body, timeout)
                .await
                .map(Some)
                .map_err(|error| unavailable(&error.to_string()))
        }
        _ => Err(unavailable("the owner is changing")),
    }
}

fn unavailable(why: &str) -> ApiError {
    ApiError::new(ErrorCode::ServiceUnavailable, format!("{why}; retry later"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that accepts connections and never answers: the second
    /// request beyond the bound is refused at once, the first times out.
    #[actix_web::test]
    async fn requests_to_a_stuck_peer_are_bounded_in_number_and_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                keep.lock().expect("lock").push(stream);
            }
        });
        let peers = Peers::new("n0", tokio::runtime::Handle::current(), 1, 1);
        let request = actix_web::test::TestRequest::put()
            .uri("/transfers/abc")
            .to_http_request();
        let body = web::Bytes::from_static(b"{}");
        let timeout = Duration::from_millis(300);
        let first = {
            let (peers, address, request, body) = (
                peers.clone(),
                address.clone(),
                request.clone(),
                body.clone(),
            );
            actix_web::rt::spawn(
                async move { peers.forward(&address, &request, &body, timeout).await },
            )
        };
        // Let the first request take the only permit.
        while peers.permits(&address).available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = peers.forward(&address, &request, &body, timeout).await;
        assert!(matches!(second, Err(PeerError::Busy(1))), "{second:?}");
        let first = first.await.expect("first request's task");
        assert!(matches!(first, Err(PeerError::Timeout(_))), "{first:?}");
        assert_eq!(
            peers.permits(&address).available_permits(),
            1,
            "permit returned"
        );
    }

    /// A peer that answers each position call with an error naming the
    /// call's participant, holding every request `hold` first; the sizes of
    /// the batches it received.
    async fn position_peer(hold: Duration) -> (String, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let server = actix_web::HttpServer::new(move || {
            let seen = seen.clone();
            actix_web::App::new().route(
                "/internal/positions",
                web::post().to(move |body: web::Bytes| {
                    let seen = seen.clone();
                    async move {
                        let calls: Vec<PositionCall> =
                            serde_json::from_slice(&body).expect("calls");
                        seen.lock().expect("lock").push(calls.len());
                        tokio::time::sleep(hold).await;
                        let answers: Vec<Result<PositionAnswer, AskError>> = calls
                            .iter()
                            .map(|c| {
                                Ok(Err(FspiopError::new(
                                    ErrorCode::PayerFspIdNotFound,
                                    c.key.participant.clone(),
                                )))
                            })
                            .collect();
                        HttpResponse::Ok().json(answers)
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind");
        let address = server.addrs()[0].to_string();
        actix_web::rt::spawn(server.run());
        (address, sizes)
    }

    fn funds_in_request() -> PositionRequest {
        use switch_actors::position::rules::{FundsMove, PositionCommand};
        PositionRequest {
            command: PositionCommand::FundsIn(FundsMove {
                transfer_id: "t".into(),
                amount: rust_decimal::Decimal::ONE,
                external_reference: "ref".into(),
                reason: "test".into(),
                request_hash: "hash".into(),
            }),
            fence: None,
        }
    }

    /// Calls made while a batch is in flight leave together; each caller
    /// gets its own answer; no batch is larger than `position_batch_max`.
    #[actix_web::test]
    async fn position_calls_to_a_peer_are_batched_and_each_answered() {
        let (address, sizes) = position_peer(Duration::from_millis(100)).await;
        let batch_max = 256;
        let peers = Peers::new("n0", tokio::runtime::Handle::current(), 4096, batch_max);
        let calls = 2 * batch_max + 100;
        let sizes = ask_all(&peers, &address, &sizes, calls).await;
        assert!(sizes.len() < calls / 10, "batched: {sizes:?}");
        assert!(sizes.iter().all(|n| *n <= batch_max), "{sizes:?}");
    }

    /// `position_batch_max` 1: every call is its own request.
    #[actix_web::test]
    async fn position_calls_are_sent_one_by_one_with_batching_off() {
        let (address, sizes) = position_peer(Duration::from_millis(20)).await;
        let peers = Peers::new("n0", tokio::runtime::Handle::current(), 4096, 1);
        let sizes = ask_all(&peers, &address, &sizes, 40).await;
        assert_eq!(sizes, vec![1; 40]);
    }

    /// Makes `calls` position calls at once through `peers`; checks each got
    /// its own answer; the batch sizes the peer received.
    async fn ask_all(
        peers: &Peers,
        address: &str,
        sizes: &Mutex<Vec<usize>>,
        calls: usize,
    ) -> Vec<usize> {
        let asks: Vec<_> = (0..calls)
            .map(|i| {
                let key = PositionKey {
                    participant: format!("fsp{i}"),
                    currency: "USD".into(),
                };
                RemotePositions::ask(
                    peers,
                    address,
                    &key,
                    &funds_in_request(),
                    Duration::from_secs(5),
                )
            })
            .collect();
        for (i, answer) in futures::future::join_all(asks)
            .await
            .into_iter()
            .enumerate()
        {
            match answer {
                Ok(Err(error)) => assert!(
                    error.description().ends_with(&format!(" - fsp{i}")),
                    "call {i} got {error:?}"
                ),
                other => panic!("call {i}: {other:?}"),
            }
        }
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), calls, "{sizes:?}");
        sizes
    }
}
