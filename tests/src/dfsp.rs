//! A simulated DFSP: a real HTTP server on 127.0.0.1 that records every
//! request the switch sends it and, as payee, answers prepares by a [`Rule`];
//! and an FSPIOP client that plays the payer (or anything else) towards the
//! switch.
//!
//! The server runs in its own thread with its own actix System, so it works
//! from `#[tokio::test]`. Every wait is bounded; traffic goes to 127.0.0.1 only
//! (the client refuses any other URL).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use serde_json::{json, Value};
use switch_http::ilp;

use crate::Switch;

/// The ILP secret of every simulator: the test plays both payer and payee, so
/// the payer can compute the fulfilment the payee will send.
pub const SECRET: &[u8] = b"mojaswitch-simulator-ilp-secret";

/// The MSISDN of the payee party in generated transactions.
pub const PAYEE_MSISDN: &str = "27713803912";
/// The MSISDN of the payer party in generated transactions.
pub const PAYER_MSISDN: &str = "27713803911";

/// How long an outgoing request may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the payee waits after answering 202 before it acts.
const PAYEE_DELAY: Duration = Duration::from_millis(5);
/// How often `wait_for` looks at the record.
const POLL: Duration = Duration::from_millis(10);
/// The record keeps at most this many requests (the oldest are dropped).
const MAX_RECORDS: usize = 100_000;
/// Largest request body the server accepts (above the FSPIOP 5 MB limit).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// One request the simulator received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string, without `?` (empty when there is none).
    pub query: String,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The body as JSON, `Null` if it is not JSON.
    pub json: Value,
    pub at: Instant,
}

impl Received {
    /// A header by (any-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.path == path
    }
}

/// What the payee does with a `POST /transfers` it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// PUT /transfers/{id} with transferState COMMITTED and the right fulfilment.
    Fulfil,
    /// The same with transferState RESERVED (expects a PATCH from the switch).
    FulfilReserved,
    /// PUT /transfers/{id}/error with this errorCode.
    Reject(&'static str),
    /// PUT /transfers/{id} COMMITTED with a 32-byte fulfilment that does not match.
    WrongFulfilment,
    /// Nothing.
    Silent,
}

/// A request the payee rule sent on its own, and the answer.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    pub url: String,
    pub body: Value,
    /// HTTP status, `None` if the request failed.
    pub status: Option<u16>,
    pub response: Value,
    pub error: Option<String>,
}

/// The fulfilment a simulator payee produces for a packet: HMAC over the
/// packet for ILP v1, over the packet's data for ILP v4.
pub fn fulfilment_of(secret: &[u8], packet: &str) -> String {
    match ilp::decode_packet(packet) {
        Ok(decoded) if decoded.version == 4 => {
            ilp::b64url_encode(&ilp::hmac_sha256(secret, &decoded.data))
        }
        _ => ilp::fulfilment_for(secret, packet),
    }
}

/// A transfer prepared by the payer side.
#[derive(Debug, Clone)]
pub struct Prepare {
    pub transfer_id: String,
    /// The POST /transfers body (change it freely before sending).
    pub body: Value,
    /// What the payee's [`Rule::Fulfil`] will send.
    pub fulfilment: String,
    pub condition: String,
    pub ilp_packet: String,
}

struct Shared {
    name: String,
    received: Mutex<Vec<Received>>,
    sent: Mutex<Vec<Sent>>,
    rule: Mutex<Rule>,
    switch_url: Mutex<Option<String>>,
    version: Mutex<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn record(&self, received: Received) {
        let mut all = lock(&self.received);
        if all.len() >= MAX_RECORDS {
            all.remove(0);
        }
        all.push(received);
    }

    fn switch_url(&self) -> Option<String> {
        lock(&self.switch_url).clone()
    }

    /// The FSPIOP headers this DFSP sends: Content-Type, Date, FSPIOP-Source,
    /// FSPIOP-Destination (if given), and Accept on requests (not on callbacks).
    fn headers(
        &self,
        method: &str,
        path: &str,
        destination: Option<&str>,
    ) -> Vec<(String, String)> {
        let version = lock(&self.version).clone();
        let major = version.split('.').next().unwrap_or("1").to_string();
        let resource = resource_of(path);
        let mut headers = vec![
            (
                "content-type".to_string(),
                format!("application/vnd.interoperability.{resource}+json;version={version}"),
            ),
            ("date".to_string(), rfc1123_now()),
            ("fspiop-source".to_string(), self.name.clone()),
        ];
        if let Some(destination) = destination {
            headers.push(("fspiop-destination".to_string(), destination.to_string()));
        }
        if matches!(
            method.to_ascii_uppercase().as_str(),
            "POST" | "GET" | "DELETE"
        ) {
            headers.push((
                "accept".to_string(),
                format!("application/vnd.interoperability.{resource}+json;version={major}"),
            ));
        }
        headers
    }
}

/// The FSPIOP resource of a path: `/transfers/x/error` -> `transfers`.
fn resource_of(path: &str) -> String {
    path.trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("transfers")
        .to_string()
}

/// `Date` header format (RFC 1123), e.g. `Tue, 15 Nov 1994 08:12:31 GMT`.
pub fn rfc1123_now() -> String {
    Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// ISO 8601 with milliseconds and `Z`, as FSPIOP DateTime.
pub fn iso_now() -> String {
    iso(Utc::now())
}

fn iso(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A `Party` of type MSISDN held at `fsp`.
pub fn msisdn_party(fsp: &str, msisdn: &str) -> Value {
    json!({"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": msisdn, "fspId": fsp}})
}

/// A `POST /quotes` body: payerfsp's customer sends 25 `currency` to
/// `payee`'s.
pub fn quote_request(quote_id: &str, payee: &str, currency: &str) -> Value {
    json!({
        "quoteId": quote_id,
        "transactionId": crate::new_id(),
        "payee": msisdn_party(payee, PAYEE_MSISDN),
        "payer": msisdn_party("payerfsp", PAYER_MSISDN),
        "amountType": "SEND",
        "amount": {"amount": "25", "currency": currency},
        "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
    })
}

/// A `POST /bulkTransfers` body from payerfsp to payeefsp whose lines are
/// `lines` (prepares the payer made), expiring with the first of them.
pub fn bulk_prepare_body(bulk_id: &str, lines: &[Prepare]) -> Value {
    let individual: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "transferId": l.transfer_id,
                "transferAmount": l.body["amount"],
                "ilpPacket": l.ilp_packet,
                "condition": l.condition,
            })
        })
        .collect();
    json!({
        "bulkTransferId": bulk_id,
        "bulkQuoteId": crate::new_id(),
        "payerFsp": "payerfsp",
        "payeeFsp": "payeefsp",
        "individualTransfers": individual,
        "expiration": lines.first().map(|l| l.body["expiration"].clone()),
    })
}

/// An amount in minor units at 2 decimals (extra decimals are dropped);
/// anything unparsable is 0. Never panics: tests send bad amounts on purpose.
pub fn ilp_amount(amount: &str) -> u64 {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let whole: u64 = match whole.parse() {
        Ok(v) => v,
        Err(_) => return 0,
    };
    let mut cents = 0u64;
    for (i, c) in fraction.chars().take(2).enumerate() {
        let digit = c.to_digit(10).unwrap_or(0) as u64;
        cents += digit * if i == 0 { 10 } else { 1 };
    }
    whole.saturating_mul(100).saturating_add(cents)
}

/// One HTTP/1.1 request with exactly `headers` (plus Host and
/// Content-Length): no client adds an `Accept` of its own. Connections are not
/// pooled, so it works from any runtime. Only loopback URLs are allowed.
async fn send_raw(
    method: &str,
    url: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> Result<(u16, Value), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    if !url.starts_with("http://127.0.0.1:") {
        return Err(format!("refusing non-loopback URL {url}"));
    }
    let method = hyper::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|e| e.to_string())?;
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<bytes::Bytes>>();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {url} within {CLIENT_TIMEOUT:?}"))?
}

/// A simulated DFSP.
pub struct Dfsp {
    shared: Arc<Shared>,
    port: u16,
    /// Held for its Drop, which stops the server.
    _server: ServerThread,
}

/// Ports tried for a simulated DFSP's server before giving up.
const BIND_ATTEMPTS_MAX: usize = 10;

/// An actix-web server on a free loopback port, in a thread of its own with
/// its own actix system; dropping it stops the server.
pub struct ServerThread {
    pub port: u16,
    server: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Starts a one-worker server whose routes `configure` sets.
    pub fn start<F>(name: &str, configure: F) -> ServerThread
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        // A port from `free_port`, not one the kernel picks: a kernel-picked
        // port could be one just handed to a switch that has not bound it
        // yet; the switch then failed to start while its health check was
        // answered by this server (seen once in CI: a hub account "created"
        // with 202 and no body).
        let listener = (0..BIND_ATTEMPTS_MAX)
            .find_map(|_| TcpListener::bind(("127.0.0.1", crate::free_port())).ok())
            .expect("bind server port");
        let port = listener.local_addr().expect("server address").port();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(web::PayloadConfig::new(MAX_BODY))
                            .configure(configure.clone())
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .listen(listener);
                    let server = match server {
                        Ok(server) => server.run(),
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(server.handle()));
                    let _ = server.await;
                });
            })
            .expect("server thread");
        let handle = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started in time")
            .expect("server listening");
        ServerThread {
            port,
            server: Some(handle),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // The stop command is sent at once; the returned future only
            // waits for completion.
            drop(server.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Dfsp {
    /// Starts the server on a free loopback port. Payee rule: [`Rule::Fulfil`].
    pub fn start(name: &str) -> Dfsp {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            received: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            rule: Mutex::new(Rule::Fulfil),
            switch_url: Mutex::new(None),
            version: Mutex::new("1.1".to_string()),
        });
        let server_shared = shared.clone();
        let server = ServerThread::start(&format!("dfsp-{name}"), move |cfg| {
            cfg.app_data(web::Data::new(server_shared.clone()))
                .default_service(web::to(handle));
        });
        Dfsp {
            shared,
            port: server.port,
            _server: server,
        }
    }

    /// Starts a simulator that talks to `switch`'s FSPIOP port.
    pub fn start_for(name: &str, switch: &Switch) -> Dfsp {
        let dfsp = Dfsp::start(name);
        dfsp.set_switch(&switch.fspiop(""));
        dfsp
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where this DFSP sends FSPIOP requests and callbacks (the switch's FSPIOP base URL).
    pub fn set_switch(&self, url: &str) {
        *lock(&self.shared.switch_url) = Some(url.trim_end_matches('/').to_string());
    }

    pub fn set_rule(&self, rule: Rule) {
        *lock(&self.shared.rule) = rule;
    }

    /// The Content-Type version it sends (`1.0`, `1.1`, `2.0`; default `1.1`).
    /// Accept carries the major version.
    pub fn set_version(&self, version: &str) {
        *lock(&self.shared.version) = version.to_string();
    }

    /// The callback endpoints as `(type, URL template)`, as the Testing
    /// Toolkit and the SDK scheme adapter register them.
    pub fn endpoints(&self) -> Vec<(&'static str, String)> {
        let base = self.base_url();
        let with = |path: &str| format!("{base}{path}");
        let party = "/parties/{{partyIdType}}/{{partyIdentifier}}";
        let party_sub = "/parties/{{partyIdType}}/{{partyIdentifier}}/{{partySubIdOrType}}";
        let participant = "/participants/{{partyIdType}}/{{partyIdentifier}}";
        let participant_sub =
            "/participants/{{partyIdType}}/{{partyIdentifier}}/{{partySubIdOrType}}";
        vec![
            ("FSPIOP_CALLBACK_URL_TRANSFER_POST", with("/transfers")),
            (
                "FSPIOP_CALLBACK_URL_TRANSFER_PUT",
                with("/transfers/{{transferId}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_TRANSFER_ERROR",
                with("/transfers/{{transferId}}/error"),
            ),
            ("FSPIOP_CALLBACK_URL_PARTIES_GET", with(party)),
            ("FSPIOP_CALLBACK_URL_PARTIES_PUT", with(party)),
            (
                "FSPIOP_CALLBACK_URL_PARTIES_PUT_ERROR",
                with(&format!("{party}/error")),
            ),
            ("FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_GET", with(party_sub)),
            ("FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT", with(party_sub)),
            (
                "FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT_ERROR",
                with(&format!("{party_sub}/error")),
            ),
            ("FSPIOP_CALLBACK_URL_PARTICIPANT_PUT", with(participant)),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_PUT_ERROR",
                with(&format!("{participant}/error")),
            ),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT",
                with(participant_sub),
            ),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT_ERROR",
                with(&format!("{participant_sub}/error")),
            ),
            ("FSPIOP_CALLBACK_URL_PARTICIPANT_DELETE", with(participant)),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_DELETE",
                with(participant_sub),
            ),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT",
                with("/participants/{{requestId}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT_ERROR",
                with("/participants/{{requestId}}/error"),
            ),
            ("FSPIOP_CALLBACK_URL_QUOTES", base.clone()),
            ("FSPIOP_CALLBACK_URL_BULK_QUOTES", base.clone()),
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_POST",
                with("/bulkTransfers"),
            ),
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_PUT",
                with("/bulkTransfers/{{id}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_ERROR",
                with("/bulkTransfers/{{id}}/error"),
            ),
            ("FSPIOP_CALLBACK_URL_TRX_REQ_SERVICE", base.clone()),
            ("FSPIOP_CALLBACK_URL_AUTHORIZATIONS", base.clone()),
            ("FSPIOP_CALLBACK_URL_FX_QUOTES", base.clone()),
            ("FSPIOP_CALLBACK_URL_FX_TRANSFER_POST", with("/fxTransfers")),
            (
                "FSPIOP_CALLBACK_URL_FX_TRANSFER_PUT",
                with("/fxTransfers/{{commitRequestId}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_FX_TRANSFER_ERROR",
                with("/fxTransfers/{{commitRequestId}}/error"),
            ),
        ]
    }

    /// Registers every callback endpoint of this DFSP with the switch's
    /// operator API (the participant must exist). Panics unless each is 201.
    pub async fn register(&self, switch: &Switch) {
        for (kind, value) in self.endpoints() {
            let (status, body) = switch
                .post(
                    &format!("/participants/{}/endpoints", self.shared.name),
                    json!({"type": kind, "value": value}),
                )
                .await;
            assert_eq!(
                status, 201,
                "register {kind} for {}: {body}",
                self.shared.name
            );
        }
    }

    // -- the record ---------------------------------------------------------

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// What the payee rule sent on its own so far, and the answers.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.sent).clone()
    }

    /// Forgets the received and sent records.
    pub fn clear(&self) {
        lock(&self.shared.received).clear();
        lock(&self.shared.sent).clear();
    }

    /// The first received request matching `pred`, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&Received) -> bool,
        timeout: Duration,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(found) = lock(&self.shared.received).iter().find(|r| pred(r)) {
                return Some(found.clone());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    /// How many received requests match `pred`, waiting up to `timeout` for
    /// there to be at least `count`. (A `wait_for` predicate runs under the
    /// simulator's lock, so it must not call `received()` itself: count here.)
    pub async fn wait_for_count(
        &self,
        pred: impl Fn(&Received) -> bool,
        count: usize,
        timeout: Duration,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        let mut seen = 0;
        for _ in 0..max_polls {
            seen = lock(&self.shared.received)
                .iter()
                .filter(|r| pred(r))
                .count();
            if seen >= count || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        seen
    }

    /// The first `method` request to exactly `path`, waiting up to `timeout`.
    pub async fn wait_for_request(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> Option<Received> {
        self.wait_for(|r| r.is(method, path), timeout).await
    }

    // -- the payer / client side -------------------------------------------

    /// A valid POST /transfers body to `payee`: UUID v4 transferId, an ILP v1
    /// packet with a JSON Transaction in its data, and the condition of the
    /// fulfilment a simulator payee will produce.
    pub fn prepare(
        &self,
        payee: &str,
        amount: &str,
        currency: &str,
        expires_in: Duration,
    ) -> Prepare {
        self.prepare_with_ilp(payee, amount, currency, expires_in, 1)
    }

    /// As [`Dfsp::prepare`], with an ILP v1 or v4 packet (`ilp_version` 1 or 4).
    pub fn prepare_with_ilp(
        &self,
        payee: &str,
        amount: &str,
        currency: &str,
        expires_in: Duration,
        ilp_version: u8,
    ) -> Prepare {
        let transfer_id = uuid::Uuid::new_v4().to_string();
        let transaction = json!({
            "transactionId": uuid::Uuid::new_v4().to_string(),
            "quoteId": uuid::Uuid::new_v4().to_string(),
            "payee": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": PAYEE_MSISDN, "fspId": payee}},
            "payer": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": PAYER_MSISDN, "fspId": self.shared.name}},
            "amount": {"amount": amount, "currency": currency},
            "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
        });
        let data = ilp::b64url_encode(transaction.to_string().as_bytes());
        let address = format!("g.{payee}.msisdn.{PAYEE_MSISDN}");
        let expiration =
            Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::zero());
        let (ilp_packet, fulfilment) = if ilp_version == 4 {
            // v4 carries the condition inside the packet, so the fulfilment
            // is keyed on the data (the transaction) instead of the packet.
            let fulfilment = ilp::b64url_encode(&ilp::hmac_sha256(SECRET, data.as_bytes()));
            let condition = ilp::condition_of_fulfilment(&fulfilment).expect("32-byte fulfilment");
            let mut condition_bytes = [0u8; 32];
            condition_bytes.copy_from_slice(&ilp::b64url_decode(&condition).expect("base64url"));
            let packet = ilp::encode_v4_prepare(
                ilp_amount(amount),
                expiration,
                condition_bytes,
                &address,
                data.as_bytes(),
            );
            (packet, fulfilment)
        } else {
            let packet = ilp::encode_v1(ilp_amount(amount), &address, data.as_bytes());
            let fulfilment = ilp::fulfilment_for(SECRET, &packet);
            (packet, fulfilment)
        };
        let condition = ilp::condition_of_fulfilment(&fulfilment).expect("32-byte fulfilment");
        let body = json!({
            "transferId": transfer_id,
            "payerFsp": self.shared.name,
            "payeeFsp": payee,
            "amount": {"amount": amount, "currency": currency},
            "ilpPacket": ilp_packet,
            "condition": condition,
            "expiration": iso(expiration),
        });
        Prepare {
            transfer_id,
            body,
            fulfilment,
            condition,
            ilp_packet,
        }
    }

    /// POSTs the prepare to the switch (FSPIOP-Destination = its payeeFsp).
    pub async fn send_prepare(&self, prepare: &Prepare) -> (u16, Value) {
        let payee = prepare.body["payeeFsp"].as_str().map(str::to_string);
        self.send_json("POST", "/transfers", &prepare.body, payee.as_deref())
            .await
    }

    /// GET /transfers/{id}.
    pub async fn get_transfer(&self, transfer_id: &str) -> (u16, Value) {
        self.request(
            "GET",
            &format!("/transfers/{transfer_id}"),
            Vec::new(),
            None,
            &[],
        )
        .await
    }

    /// PUT /transfers/{id} as the payee: `{fulfilment, completedTimestamp: now,
    /// transferState}`. FSPIOP-Destination is the payer of the prepare this
    /// simulator received for the id, if it received one.
    pub async fn send_fulfil(
        &self,
        transfer_id: &str,
        fulfilment: &str,
        state: &str,
    ) -> (u16, Value) {
        let body = json!({
            "fulfilment": fulfilment,
            "completedTimestamp": iso_now(),
            "transferState": state,
        });
        let payer = self.payer_of(transfer_id);
        self.send_json(
            "PUT",
            &format!("/transfers/{transfer_id}"),
            &body,
            payer.as_deref(),
        )
        .await
    }

    /// PUT /transfers/{id}/error as the payee (destination as for `send_fulfil`).
    pub async fn send_error(
        &self,
        transfer_id: &str,
        code: &str,
        description: &str,
    ) -> (u16, Value) {
        let body =
            json!({"errorInformation": {"errorCode": code, "errorDescription": description}});
        let payer = self.payer_of(transfer_id);
        self.send_json(
            "PUT",
            &format!("/transfers/{transfer_id}/error"),
            &body,
            payer.as_deref(),
        )
        .await
    }

    /// Any request to the switch's FSPIOP API with this DFSP's default headers
    /// (no FSPIOP-Destination), changed by `overrides`: `(name, Some(value))`
    /// sets or replaces a header, `(name, None)` removes it.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        overrides: &[(&str, Option<&str>)],
    ) -> (u16, Value) {
        self.request(method, path, body.to_vec(), None, overrides)
            .await
    }

    /// A JSON request with the default headers and an FSPIOP-Destination.
    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        destination: Option<&str>,
    ) -> (u16, Value) {
        self.request(
            method,
            path,
            body.to_string().into_bytes(),
            destination,
            &[],
        )
        .await
    }

    /// The headers this DFSP would send (before overrides).
    pub fn default_headers(
        &self,
        method: &str,
        path: &str,
        destination: Option<&str>,
    ) -> Vec<(String, String)> {
        self.shared.headers(method, path, destination)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        destination: Option<&str>,
        overrides: &[(&str, Option<&str>)],
    ) -> (u16, Value) {
        let base = self
            .shared
            .switch_url()
            .unwrap_or_else(|| panic!("{}: set_switch was not called", self.shared.name));
        let mut headers = self.shared.headers(method, path, destination);
        for (name, value) in overrides {
            let name = name.to_ascii_lowercase();
            headers.retain(|(n, _)| *n != name);
            if let Some(value) = value {
                headers.push((name, value.to_string()));
            }
        }
        let url = format!("{base}{path}");
        send_raw(method, &url, body, &headers)
            .await
            .unwrap_or_else(|e| panic!("{} {method} {url}: {e}", self.shared.name))
    }

    fn payer_of(&self, transfer_id: &str) -> Option<String> {
        lock(&self.shared.received)
            .iter()
            .find(|r| r.is("POST", "/transfers") && r.json["transferId"] == transfer_id)
            .and_then(|r| {
                r.json["payerFsp"]
                    .as_str()
                    .or_else(|| r.header("fspiop-source"))
                    .map(str::to_string)
            })
    }
}

/// Every request: record it, answer 200 to PUT/PATCH and 202 to the rest, and
/// as payee act on a POST /transfers afterwards.
async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let received = Received {
        method: method.clone(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let shared = shared.get_ref().clone();
    shared.record(received.clone());
    if method == "POST" && received.path.trim_end_matches('/') == "/transfers" {
        let rule = *lock(&shared.rule);
        if rule != Rule::Silent {
            actix_web::rt::spawn(act_as_payee(shared, rule, received));
        }
    }
    match method.as_str() {
        "PUT" | "PATCH" => HttpResponse::Ok().finish(),
        _ => HttpResponse::Accepted().finish(),
    }
}

/// The payee's answer to a prepare, per `rule`.
async fn act_as_payee(shared: Arc<Shared>, rule: Rule, prepare: Received) {
    tokio::time::sleep(PAYEE_DELAY).await;
    let transfer_id = prepare.json["transferId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let packet = prepare.json["ilpPacket"].as_str().unwrap_or("").to_string();
    let payer = prepare.json["payerFsp"]
        .as_str()
        .or_else(|| prepare.header("fspiop-source"))
        .map(str::to_string);
    let fulfil = |fulfilment: String, state: &str| json!({"fulfilment": fulfilment, "completedTimestamp": iso_now(), "transferState": state});
    let (path, body) = match rule {
        Rule::Silent => return,
        Rule::Fulfil => (
            format!("/transfers/{transfer_id}"),
            fulfil(fulfilment_of(SECRET, &packet), "COMMITTED"),
        ),
        Rule::FulfilReserved => (
            format!("/transfers/{transfer_id}"),
            fulfil(fulfilment_of(SECRET, &packet), "RESERVED"),
        ),
        Rule::WrongFulfilment => (
            format!("/transfers/{transfer_id}"),
            fulfil(fulfilment_of(b"not the secret", &packet), "COMMITTED"),
        ),
        Rule::Reject(code) => (
            format!("/transfers/{transfer_id}/error"),
            json!({"errorInformation": {"errorCode": code, "errorDescription": format!("Simulator {} rejects the transfer", shared.name)}}),
        ),
    };
    let Some(base) = shared.switch_url() else {
        lock(&shared.sent).push(Sent {
            method: "PUT".into(),
            url: path,
            body,
            status: None,
            response: Value::Null,
            error: Some("set_switch was not called".into()),
        });
        return;
    };
    let url = format!("{base}{path}");
    let headers = shared.headers("PUT", &path, payer.as_deref());
    let result = send_raw("PUT", &url, body.to_string().into_bytes(), &headers).await;
    let (status, response, error) = match result {
        Ok((status, response)) => (Some(status), response, None),
        Err(e) => (None, Value::Null, Some(e)),
    };
    lock(&shared.sent).push(Sent {
        method: "PUT".into(),
        url,
        body,
        status,
        response,
        error,
    });
}

/// A switch with two onboarded DFSPs in USD, each a running simulator with
/// its callback endpoints registered: the starting point of most scenarios.
pub struct Scene {
    pub db: crate::TestDb,
    pub switch: Switch,
    pub payer: Dfsp,
    pub payee: Dfsp,
}

impl Scene {
    /// `payerfsp` and `payeefsp`, each with a net debit cap of 1000 and
    /// `funds_in` of liquidity.
    pub async fn start(
        backend: crate::Backend,
        funds_in: &str,
        extra_env: &[(&str, &str)],
    ) -> Scene {
        let db = crate::TestDb::new(backend);
        let switch = Switch::start(&db, extra_env).await;
        switch.onboard_hub("USD").await;
        switch
            .onboard_dfsp("payerfsp", "USD", "1000", funds_in)
            .await;
        switch
            .onboard_dfsp("payeefsp", "USD", "1000", funds_in)
            .await;
        let payer = Dfsp::start("payerfsp");
        let payee = Dfsp::start("payeefsp");
        for dfsp in [&payer, &payee] {
            dfsp.set_switch(&switch.fspiop(""));
            dfsp.register(&switch).await;
        }
        Scene {
            db,
            switch,
            payer,
            payee,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn amounts_scale_to_minor_units() {
        assert_eq!(ilp_amount("12.34"), 1234);
        assert_eq!(ilp_amount("12.3"), 1230);
        assert_eq!(ilp_amount("12"), 1200);
        assert_eq!(ilp_amount("0.005"), 0);
        assert_eq!(ilp_amount("-1"), 0);
        assert_eq!(ilp_amount("abc"), 0);
        assert_eq!(resource_of("/transfers/x/error"), "transfers");
        assert_eq!(resource_of("/parties/MSISDN/1"), "parties");
    }

    /// One simulator plays the payer, the other the payee; each one is the
    /// other's "switch".
    #[tokio::test]
    async fn simulator_records_headers_and_fulfils() {
        let payer = Dfsp::start("simpayer");
        let payee = Dfsp::start("simpayee");
        payer.set_switch(&payee.base_url());
        payee.set_switch(&payer.base_url());
        payee.set_rule(Rule::Fulfil);

        let prepare = payer.prepare("simpayee", "12.34", "USD", Duration::from_secs(60));
        let (status, _) = payer.send_prepare(&prepare).await;
        assert_eq!(status, 202);

        let post = payee
            .wait_for_request("POST", "/transfers", WAIT)
            .await
            .expect("payee got the prepare");
        assert_eq!(post.json, prepare.body);
        assert_eq!(post.body, prepare.body.to_string().into_bytes());
        assert_eq!(
            post.header("Content-Type"),
            Some("application/vnd.interoperability.transfers+json;version=1.1")
        );
        assert_eq!(
            post.header("accept"),
            Some("application/vnd.interoperability.transfers+json;version=1")
        );
        assert_eq!(post.header("fspiop-source"), Some("simpayer"));
        assert_eq!(post.header("fspiop-destination"), Some("simpayee"));
        let date = post.header("date").expect("date");
        assert!(
            chrono::DateTime::parse_from_rfc2822(date).is_ok() && date.ends_with(" GMT"),
            "{date}"
        );
        assert!(ilp::is_32_byte_value(&prepare.condition));
        assert_eq!(prepare.body["condition"], prepare.condition.as_str());
        let decoded = ilp::decode_packet(&prepare.ilp_packet).expect("packet");
        assert_eq!(decoded.version, 1);
        assert_eq!(decoded.amount, 1234);
        assert_eq!(decoded.account, format!("g.simpayee.msisdn.{PAYEE_MSISDN}"));
        let tx = decoded.transaction.expect("transaction");
        assert_eq!(tx["amount"], json!({"amount": "12.34", "currency": "USD"}));
        assert_eq!(tx["payer"]["partyIdInfo"]["fspId"], "simpayer");

        // Rule::Fulfil: the payee PUTs to its "switch", the payer simulator.
        let put_path = format!("/transfers/{}", prepare.transfer_id);
        let put = payer
            .wait_for_request("PUT", &put_path, WAIT)
            .await
            .expect("fulfil arrived");
        assert_eq!(put.json["transferState"], "COMMITTED");
        let fulfilment = put.json["fulfilment"].as_str().expect("fulfilment");
        assert_eq!(fulfilment, prepare.fulfilment);
        assert_eq!(
            ilp::condition_of_fulfilment(fulfilment).unwrap(),
            prepare.condition
        );
        let completed = put.json["completedTimestamp"].as_str().unwrap();
        assert!(
            completed.ends_with('Z') && completed.len() == 24,
            "{completed}"
        );
        assert_eq!(put.header("fspiop-source"), Some("simpayee"));
        assert_eq!(put.header("fspiop-destination"), Some("simpayer"));
        assert_eq!(put.header("accept"), None);
        assert_eq!(
            put.header("content-type"),
            Some("application/vnd.interoperability.transfers+json;version=1.1")
        );
        let sent = payee.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, Some(200));

        // The payer side's helpers and the record.
        let (status, _) = payer.get_transfer(&prepare.transfer_id).await;
        assert_eq!(status, 202);
        assert!(payee
            .wait_for_request("GET", &put_path, WAIT)
            .await
            .is_some());
        let (status, _) = payee
            .send_fulfil(&prepare.transfer_id, &prepare.fulfilment, "COMMITTED")
            .await;
        assert_eq!(status, 200);
        let (status, _) = payee
            .send(
                "PATCH",
                &put_path,
                b"{}",
                &[("FSPIOP-Source", Some("other")), ("date", None)],
            )
            .await;
        assert_eq!(status, 200);
        let patch = payer
            .wait_for_request("PATCH", &put_path, WAIT)
            .await
            .expect("patch");
        assert_eq!(patch.header("fspiop-source"), Some("other"));
        assert_eq!(patch.header("date"), None);
        assert!(payer
            .wait_for(|r| r.is("DELETE", "/x"), Duration::from_millis(50))
            .await
            .is_none());
        payer.clear();
        assert!(payer.received().is_empty());
    }

    #[tokio::test]
    async fn simulator_rules() {
        let payer = Dfsp::start("rulepayer");
        let payee = Dfsp::start("rulepayee");
        payer.set_switch(&payee.base_url());
        payee.set_switch(&payer.base_url());
        payer.set_version("1.0");

        for rule in [
            Rule::FulfilReserved,
            Rule::Reject("5100"),
            Rule::WrongFulfilment,
            Rule::Silent,
        ] {
            payee.set_rule(rule);
            let prepare = payer.prepare("rulepayee", "1", "USD", Duration::from_secs(60));
            let (status, _) = payer.send_prepare(&prepare).await;
            assert_eq!(status, 202);
            let id = &prepare.transfer_id;
            let post = payee
                .wait_for(
                    |r| r.is("POST", "/transfers") && r.json["transferId"] == id.as_str(),
                    WAIT,
                )
                .await
                .expect("prepare");
            assert_eq!(
                post.header("content-type"),
                Some("application/vnd.interoperability.transfers+json;version=1.0")
            );
            let answer = payer
                .wait_for(
                    |r| r.path.starts_with(&format!("/transfers/{id}")),
                    if rule == Rule::Silent {
                        Duration::from_millis(300)
                    } else {
                        WAIT
                    },
                )
                .await;
            match rule {
                Rule::FulfilReserved => {
                    let put = answer.expect("put");
                    assert_eq!(put.json["transferState"], "RESERVED");
                    assert_eq!(put.json["fulfilment"], prepare.fulfilment.as_str());
                }
                Rule::Reject(code) => {
                    let put = answer.expect("error");
                    assert_eq!(put.path, format!("/transfers/{id}/error"));
                    assert_eq!(put.json["errorInformation"]["errorCode"], code);
                    assert!(put.json["errorInformation"]["errorDescription"].is_string());
                }
                Rule::WrongFulfilment => {
                    let put = answer.expect("put");
                    let fulfilment = put.json["fulfilment"].as_str().unwrap();
                    assert_ne!(fulfilment, prepare.fulfilment);
                    assert_ne!(
                        ilp::condition_of_fulfilment(fulfilment).unwrap(),
                        prepare.condition
                    );
                }
                Rule::Silent => assert!(answer.is_none()),
                Rule::Fulfil => unreachable!(),
            }
        }
    }
}
