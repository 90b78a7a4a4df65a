//! Callback delivery: renders the business rules' notifications on the
//! FSPIOP wire and sends them to the participants' registered endpoints.
//!
//! `notify` never blocks an actor: it puts the notification on a bounded
//! queue (a full queue drops it, logged and counted). A worker on the I/O
//! runtime delivers with a pooled keep-alive hyper client that sends no headers of its own, at most
//! `concurrency_max` at once, each attempt bounded by a timeout, retrying
//! connection errors and 5xx answers with exponential backoff. Outcomes are
//! counted in metrics and per participant for the operator API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;
use switch_actors::notify::{Notification, Notifier, TransferEndpoint, TransferStateBody};
use tokio::sync::{mpsc, Semaphore};

use crate::endpoints::{render, EndpointCache};
use crate::errors::error_body;
use crate::fspiop::headers::{content_type, rfc1123_now, Resource, Version};
use crate::metrics::Metrics;

/// Limits of callback delivery.
#[derive(Debug, Clone, Copy)]
pub struct CallbackLimits {
    pub timeout_ms: u64,
    pub retries_max: u32,
    pub concurrency_max: usize,
    pub queue_capacity: usize,
}

/// First retry delay; each further retry waits four times longer.
const RETRY_BACKOFF_FIRST_MS: u64 = 100;

/// Longest wait for a TCP connection to a participant's endpoint (the whole
/// attempt is also bounded by `CallbackLimits::timeout_ms`).
const CONNECT_TIMEOUT_S: u64 = 5;

/// Delivery counts of one participant.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackStats {
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retried: u64,
    pub last_error: Option<String>,
    pub last_error_date: Option<String>,
}

#[derive(Clone, Default)]
pub struct CallbackLedger {
    by_participant: Arc<Mutex<HashMap<String, CallbackStats>>>,
}

impl CallbackLedger {
    fn update(&self, participant: &str, change: impl FnOnce(&mut CallbackStats)) {
        let mut map = self
            .by_participant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: a key is copied once per participant,
        // not once per callback.
        match map.get_mut(participant) {
            Some(stats) => change(stats),
            None => change(map.entry(participant.to_string()).or_default()),
        }
    }

    pub fn of(&self, participant: &str) -> CallbackStats {
        let map = self
            .by_participant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(participant).cloned().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct HttpNotifier {
    queue: mpsc::Sender<Notification>,
    ledger: CallbackLedger,
    metrics: Metrics,
    /// Callbacks queued or being delivered, for a graceful shutdown.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for HttpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpNotifier").finish_non_exhaustive()
    }
}

impl Notifier for HttpNotifier {
    fn notify(&self, notification: Notification) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(error) = self.queue.try_send(notification) {
            self.pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let notification = match error {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            let to = recipient(&notification).to_string();
            tracing::error!(participant = %to, "callback queue full: callback dropped");
            self.metrics
                .callback(endpoint_type(&notification), "dropped", 0.0);
            self.ledger.update(&to, |s| s.dropped += 1);
        }
    }
}

impl HttpNotifier {
    /// Starts the delivery worker on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        endpoints: EndpointCache,
        hub_name: String,
        limits: CallbackLimits,
        metrics: Metrics,
    ) -> HttpNotifier {
        let (queue, receiver) = mpsc::channel(limits.queue_capacity);
        let ledger = CallbackLedger::default();
        let client = callback_client(limits.concurrency_max);
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let delivery = Delivery {
            client,
            endpoints,
            hub_name,
            limits,
            ledger: ledger.clone(),
            metrics: metrics.clone(),
            pending: pending.clone(),
        };
        runtime.spawn(run(receiver, Arc::new(delivery), limits.concurrency_max));
        HttpNotifier {
            queue,
            ledger,
            metrics,
            pending,
        }
    }

    /// Waits until every queued callback has been delivered (or has failed
    /// for good), at most `timeout`. Returns how many were still pending.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.pending.load(std::sync::atomic::Ordering::SeqCst);
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ledger(&self) -> &CallbackLedger {
        &self.ledger
    }
}

/// The callback client sends exactly the headers a rendered callback carries:
/// hyper adds only `Host` and `Content-Length`. (reqwest would add
/// `Accept: */*`, which FSPIOP DFSP software such as the SDK scheme adapter
/// rejects as an unsupported version; callbacks carry no `Accept`.)
pub(crate) type CallbackClient = Client<HttpConnector, Full<bytes::Bytes>>;

/// Also the node-to-node client (`cluster::Peers`): forwarded FSPIOP
/// requests must keep exactly their own headers too.
pub(crate) fn callback_client(idle_per_host: usize) -> CallbackClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(CONNECT_TIMEOUT_S)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(Duration::from_secs(CALLBACK_IDLE_S))
        .build(connector)
}

/// How long an idle callback connection is kept. Below the keep-alive of
/// common DFSP servers (Node.js and actix-web close idle connections after
/// 5 s): a callback sent on a connection the DFSP is closing would fail.
const CALLBACK_IDLE_S: u64 = 2;

/// Why one delivery attempt did not succeed.
enum AttemptError {
    /// The request never got an HTTP answer (connect, write or timeout):
    /// worth retrying.
    Transport(String),
    /// The request could not even be built (bad URL, method or header).
    Invalid(String),
}

struct Delivery {
    client: CallbackClient,
    endpoints: EndpointCache,
    hub_name: String,
    limits: CallbackLimits,
    ledger: CallbackLedger,
    metrics: Metrics,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

async fn run(
    mut receiver: mpsc::Receiver<Notification>,
    delivery: Arc<Delivery>,
    concurrency_max: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency_max));
    while let Some(notification) = receiver.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let delivery = delivery.clone();
        tokio::spawn(async move {
            delivery.deliver(notification).await;
            delivery
                .pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            drop(slot);
        });
    }
}

fn recipient(notification: &Notification) -> &str {
    match notification {
        Notification::Forward { to, .. }
        | Notification::State { to, .. }
        | Notification::Error { to, .. } => to,
        Notification::Route(routed) => &routed.target.to,
        Notification::Hub(message) => &message.target.to,
    }
}

fn endpoint_type(notification: &Notification) -> &'static str {
    let endpoint = match notification {
        Notification::Forward { endpoint, .. } => *endpoint,
        Notification::State { .. } => TransferEndpoint::Put,
        Notification::Error { .. } => TransferEndpoint::Error,
        Notification::Route(routed) => return routed.target.endpoint_type,
        Notification::Hub(message) => return message.target.endpoint_type,
    };
    match endpoint {
        TransferEndpoint::Post => "FSPIOP_CALLBACK_URL_TRANSFER_POST",
        TransferEndpoint::Put => "FSPIOP_CALLBACK_URL_TRANSFER_PUT",
        TransferEndpoint::Error => "FSPIOP_CALLBACK_URL_TRANSFER_ERROR",
    }
}

/// The URL of a target: its template with placeholders substituted, plus
/// the path appended for base-URL endpoint types.
fn target_url(template: &str, target: &switch_actors::notify::Target) -> String {
    let mut values: Vec<(&str, &str)> = target
        .values
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    values.push(("fsp", target.to.as_str()));
    let url = render(template, &values);
    match &target.path {
        Some(path) => format!("{}{path}", url.trim_end_matches('/')),
        None => url,
    }
}

/// A callback ready to send.
struct Rendered {
    method: hyper::Method,
    url: String,
    /// Shared with the message it forwards, if any (never copied per attempt).
    headers: Arc<Vec<(String, String)>>,
    body: bytes::Bytes,
}

fn state_json(body: &TransferStateBody, patch: bool) -> serde_json::Value {
    let mut value = json!({ "transferState": body.transfer_state });
    let completed = body.completed_timestamp.clone().unwrap_or_else(|| {
        chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    });
    value["completedTimestamp"] = json!(completed);
    if !patch {
        if let Some(fulfilment) = &body.fulfilment {
            value["fulfilment"] = json!(fulfilment);
        }
    }
    value
}

fn version_of(text: &str) -> Version {
    let mut parts = text.split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    Version { major, minor }
}

impl Delivery {
    async fn render(&self, notification: &Notification) -> Result<Rendered, String> {
        let to = recipient(notification);
        let kind = endpoint_type(notification);
        let template = self
            .endpoints
            .template(to, kind)
            .await?
            .ok_or_else(|| format!("{to} has no {kind} endpoint"))?;
        let hub_headers = |transfer_id: &str, method: &str, suffix: &str, version: &str| {
            Arc::new(vec![
                (
                    "content-type".to_string(),
                    content_type(Resource::Transfers, version_of(version)),
                ),
                ("date".to_string(), rfc1123_now()),
                ("fspiop-source".to_string(), self.hub_name.clone()),
                ("fspiop-destination".to_string(), to.to_string()),
                ("fspiop-http-method".to_string(), method.to_string()),
                (
                    "fspiop-uri".to_string(),
                    format!("/transfers/{transfer_id}{suffix}"),
                ),
            ])
        };
        match notification {
            Notification::Forward {
                transfer_id,
                method,
                message,
                ..
            } => Ok(Rendered {
                method: hyper::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
                url: render(&template, &[("transferId", transfer_id), ("fsp", to)]),
                headers: message.headers.clone(),
                body: message.body.clone(),
            }),
            Notification::State {
                transfer_id,
                patch,
                body,
                content_version,
                ..
            } => {
                let method = if *patch { "PATCH" } else { "PUT" };
                Ok(Rendered {
                    method: if *patch {
                        hyper::Method::PATCH
                    } else {
                        hyper::Method::PUT
                    },
                    url: render(&template, &[("transferId", transfer_id), ("fsp", to)]),
                    headers: hub_headers(transfer_id, method, "", content_version),
                    body: bytes::Bytes::from(state_json(body, *patch).to_string()),
                })
            }
            Notification::Error {
                transfer_id,
                error,
                content_version,
                ..
            } => Ok(Rendered {
                method: hyper::Method::PUT,
                url: render(&template, &[("transferId", transfer_id), ("fsp", to)]),
                headers: hub_headers(transfer_id, "PUT", "/error", content_version),
                body: bytes::Bytes::from(error_body(error).to_string()),
            }),
            Notification::Route(routed) => Ok(Rendered {
                method: hyper::Method::from_bytes(routed.method.as_bytes())
                    .map_err(|e| e.to_string())?,
                url: target_url(&template, &routed.target),
                headers: routed.message.headers.clone(),
                body: routed.message.body.clone(),
            }),
            Notification::Hub(message) => Ok(Rendered {
                method: hyper::Method::from_bytes(message.method.as_bytes())
                    .map_err(|e| e.to_string())?,
                url: target_url(&template, &message.target),
                headers: Arc::new(vec![
                    (
                        "content-type".to_string(),
                        format!(
                            "application/vnd.interoperability.{}+json;version={}",
                            message.resource,
                            version_of(&message.content_version)
                        ),
                    ),
                    ("date".to_string(), rfc1123_now()),
                    ("fspiop-source".to_string(), self.hub_name.clone()),
                    ("fspiop-destination".to_string(), to.to_string()),
                    ("fspiop-http-method".to_string(), message.method.to_string()),
                    ("fspiop-uri".to_string(), message.uri.clone()),
                ]),
                body: message.body.clone(),
            }),
        }
    }

    async fn deliver(&self, notification: Notification) {
        let to = recipient(&notification).to_string();
        let kind = endpoint_type(&notification);
        let started = Instant::now();
        let rendered = match self.render(&notification).await {
            Ok(rendered) => rendered,
            Err(reason) => {
                self.failed(&to, kind, started, reason);
                return;
            }
        };
        let mut attempt = 0;
        loop {
            let (retryable, reason) = match self.attempt(&rendered).await {
                Ok(status) if status.is_success() => {
                    self.metrics
                        .callback(kind, "delivered", started.elapsed().as_secs_f64());
                    self.ledger.update(&to, |s| s.delivered += 1);
                    return;
                }
                Ok(status) => (
                    status.is_server_error(),
                    format!("{} answered {status}", rendered.url),
                ),
                Err(AttemptError::Transport(reason)) => (true, reason),
                Err(AttemptError::Invalid(reason)) => (false, reason),
            };
            if !retryable || attempt >= self.limits.retries_max {
                self.failed(&to, kind, started, reason);
                return;
            }
            attempt += 1;
            self.ledger.update(&to, |s| s.retried += 1);
            let backoff = RETRY_BACKOFF_FIRST_MS * 4u64.pow(attempt - 1);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    }

    /// One request, bounded by the callback timeout; the answer's body is
    /// read (and dropped) so that the connection goes back to the pool.
    async fn attempt(&self, rendered: &Rendered) -> Result<hyper::StatusCode, AttemptError> {
        let mut request = hyper::Request::builder()
            .method(rendered.method.clone())
            .uri(rendered.url.as_str());
        for (name, value) in rendered.headers.iter() {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(rendered.body.clone()))
            .map_err(|e| AttemptError::Invalid(format!("{}: {e}", rendered.url)))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // A body that fails to arrive does not change the status.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(Duration::from_millis(self.limits.timeout_ms), exchange).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(error)) => Err(AttemptError::Transport(format!(
                "{}: {error}",
                rendered.url
            ))),
            Err(_) => Err(AttemptError::Transport(format!(
                "{}: no answer within {} ms",
                rendered.url, self.limits.timeout_ms
            ))),
        }
    }

    fn failed(&self, to: &str, kind: &'static str, started: Instant, reason: String) {
        tracing::warn!(participant = %to, endpoint_type = kind, %reason, "callback failed");
        self.metrics
            .callback(kind, "failed", started.elapsed().as_secs_f64());
        let now = switch_storage::now_text();
        self.ledger.update(to, |s| {
            s.failed += 1;
            s.last_error = Some(reason);
            s.last_error_date = Some(now);
        });
    }
}
