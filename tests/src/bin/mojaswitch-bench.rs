//! `mojaswitch-bench`: an open-model load generator for the transfers tier.
//!
//! It provisions N simulated DFSPs (half payers, half payees) through the
//! operator API, runs one lean DFSP simulator (one HTTP server on loopback,
//! one path prefix per DFSP), and issues `POST /transfers` at a constant
//! target rate (linear ramp, then steady) regardless of completions. A payee
//! answers each prepare with 202 and then `PUT /transfers/{id}` with the
//! fulfilment; a transfer counts when its payer receives the switch's
//! `PUT /transfers/{id}` with COMMITTED. Afterwards it compares the
//! generator's count with the COMMITTED rows in the database and runs
//! `mojaswitch check`.
//!
//! Without `--fspiop-url`/`--operator-url` it starts its own switch (the
//! `mojaswitch` binary next to this one) on a fresh scratch database.
//! Traffic goes to 127.0.0.1 only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use switch_http::ilp;
use switch_tests::dfsp::{rfc1123_now, SECRET};
use switch_tests::{Backend, TestDb};

const CURRENCY: &str = "USD";
/// How long a single HTTP exchange with the switch may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stragglers may take after the steady window.
const GRACE: Duration = Duration::from_secs(10);
/// How long an embedded switch may take to become healthy / to stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Scheduler tick.
const TICK: Duration = Duration::from_millis(1);
/// Transfer expiry (well beyond the run's grace period).
const EXPIRES_IN_S: i64 = 120;
const TRANSFERS_CT: &str = "application/vnd.interoperability.transfers+json;version=1.1";
const TRANSFERS_ACCEPT: &str = "application/vnd.interoperability.transfers+json;version=1";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mojaswitch-bench",
    about = "Open-model transfer load generator for mojaswitch"
)]
struct Args {
    /// FSPIOP base URL of a running switch (loopback only). With neither URL, an embedded switch is started.
    #[arg(long)]
    fspiop_url: Option<String>,
    /// Operator API base URL of a running switch (loopback only).
    #[arg(long)]
    operator_url: Option<String>,
    /// Database URL of the running switch, for the books check (optional with --fspiop-url).
    #[arg(long)]
    db_url: Option<String>,
    /// Backend of the embedded switch: sqlite or mysql (MariaDB from MOJASWITCH_TEST_MYSQL_URL).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// The mojaswitch binary for the embedded switch and `check` (default: next to this binary).
    #[arg(long)]
    switch_bin: Option<PathBuf>,
    /// Extra MOJASWITCH_KEY=VALUE settings for the embedded switch (repeatable).
    #[arg(long = "switch-env")]
    switch_env: Vec<String>,
    /// Target transfers per second in the steady window.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Linear ramp-up from 0 to --rate, seconds.
    #[arg(long, default_value_t = 5.0)]
    ramp_s: f64,
    /// Steady window at --rate, seconds.
    #[arg(long, default_value_t = 20.0)]
    steady_s: f64,
    /// Number of DFSPs (half payers, half payees).
    #[arg(long, default_value_t = 8)]
    dfsps: usize,
    /// Transfers awaiting their callback at most; beyond it prepares are dropped.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Amount of each transfer.
    #[arg(long, default_value = "1")]
    amount: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- the record

struct Done {
    sent_s: f64,
    done_s: f64,
    latency_us: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    dropped_cap: AtomicU64,
    payee_puts: AtomicU64,
    payee_put_errors: AtomicU64,
    payee_notifications: AtomicU64,
    unknown_callbacks: AtomicU64,
}

struct Record {
    start: Instant,
    counters: Counters,
    in_flight: Mutex<HashMap<String, Instant>>,
    done: Mutex<Vec<Done>>,
    /// Error callbacks to payers, by FSPIOP error code (or transfer state).
    failed_by_code: Mutex<BTreeMap<String, u64>>,
    /// Prepares the switch did not accept with 202, by HTTP status / error code.
    refused_by: Mutex<BTreeMap<String, u64>>,
    /// payee PUT failures, by HTTP status or error.
    payee_errors_by: Mutex<BTreeMap<String, u64>>,
}

impl Record {
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *lock(map).entry(key).or_insert(0) += 1;
    }
}

// ---------------------------------------------------------- the HTTP client

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// One request with exactly these headers (no Accept unless given).
async fn send(
    client: &HttpClient,
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, bytes::Bytes), String> {
    if !url.starts_with("http://127.0.0.1:") && !url.starts_with("http://localhost:") {
        return Err(format!("refusing non-loopback URL {url}"));
    }
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| "timeout".to_string())?
}

// -------------------------------------------------------------- the simulator

struct Sim {
    record: Arc<Record>,
    client: HttpClient,
    fspiop: String,
    payees: Vec<String>,
    payers: Vec<String>,
    runtime: tokio::runtime::Handle,
}

/// One server for every simulated DFSP: `/{dfsp}/transfers...`.
async fn handle(req: HttpRequest, body: web::Bytes, sim: web::Data<Arc<Sim>>) -> HttpResponse {
    let path = req.path().trim_start_matches('/');
    let mut parts = path.splitn(4, '/');
    let dfsp = parts.next().unwrap_or("").to_string();
    let resource = parts.next().unwrap_or("");
    let id = parts.next().map(str::to_string);
    let error = parts.next() == Some("error");
    let sim = sim.get_ref().clone();
    if resource != "transfers" {
        sim.record
            .counters
            .unknown_callbacks
            .fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Accepted().finish();
    }
    match (req.method().as_str(), id) {
        ("POST", None) if sim.payees.contains(&dfsp) => {
            let prepare: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let runtime = sim.runtime.clone();
            runtime.spawn(fulfil(sim, dfsp, prepare));
            HttpResponse::Accepted().finish()
        }
        ("PUT", Some(id)) if sim.payers.contains(&dfsp) => {
            let at = Instant::now();
            let record = &sim.record;
            let sent = lock(&record.in_flight).remove(&id);
            let Some(sent) = sent else {
                record
                    .counters
                    .unknown_callbacks
                    .fetch_add(1, Ordering::Relaxed);
                return HttpResponse::Ok().finish();
            };
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let state = json["transferState"].as_str().unwrap_or("");
            if !error && state == "COMMITTED" {
                record.counters.committed.fetch_add(1, Ordering::Relaxed);
                lock(&record.done).push(Done {
                    sent_s: (sent - record.start).as_secs_f64(),
                    done_s: (at - record.start).as_secs_f64(),
                    latency_us: (at - sent).as_micros() as u64,
                });
            } else {
                record.counters.failed.fetch_add(1, Ordering::Relaxed);
                let code = if error {
                    json["errorInformation"]["errorCode"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string()
                } else {
                    format!("state {state}")
                };
                Record::bump(&record.failed_by_code, code);
            }
            HttpResponse::Ok().finish()
        }
        ("PUT", Some(_)) | ("PATCH", Some(_)) => {
            sim.record
                .counters
                .payee_notifications
                .fetch_add(1, Ordering::Relaxed);
            HttpResponse::Ok().finish()
        }
        _ => {
            sim.record
                .counters
                .unknown_callbacks
                .fetch_add(1, Ordering::Relaxed);
            HttpResponse::Accepted().finish()
        }
    }
}

/// The payee's answer: PUT /transfers/{id} COMMITTED with the fulfilment.
async fn fulfil(sim: Arc<Sim>, payee: String, prepare: Value) {
    let id = prepare["transferId"].as_str().unwrap_or("");
    let packet = prepare["ilpPacket"].as_str().unwrap_or("");
    let payer = prepare["payerFsp"].as_str().unwrap_or("");
    let body = json!({
        "fulfilment": ilp::fulfilment_for(SECRET, packet),
        "completedTimestamp": iso_now(),
        "transferState": "COMMITTED",
    });
    let url = format!("{}/transfers/{id}", sim.fspiop);
    let date = rfc1123_now();
    let headers = [
        ("content-type", TRANSFERS_CT),
        ("date", date.as_str()),
        ("fspiop-source", payee.as_str()),
        ("fspiop-destination", payer),
    ];
    let result = send(
        &sim.client,
        hyper::Method::PUT,
        &url,
        &headers,
        body.to_string().into_bytes(),
    )
    .await;
    let counters = &sim.record.counters;
    counters.payee_puts.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok((200, _)) => {}
        Ok((status, _)) => {
            counters.payee_put_errors.fetch_add(1, Ordering::Relaxed);
            Record::bump(&sim.record.payee_errors_by, format!("http {status}"));
        }
        Err(e) => {
            counters.payee_put_errors.fetch_add(1, Ordering::Relaxed);
            Record::bump(&sim.record.payee_errors_by, e);
        }
    }
}

fn iso_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Starts the simulator's server in its own thread (1 worker): its port.
fn start_simulator(sim: Arc<Sim>) -> (u16, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind simulator");
    let port = listener.local_addr().expect("address").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-dfsps".into())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(sim.clone()))
                        .default_service(web::to(handle))
                })
                .workers(1)
                .backlog(4096)
                .max_connection_rate(4096)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .expect("listen")
                .run();
                let _ = tx.send(server.handle());
                let _ = server.await;
            });
        })
        .expect("simulator thread");
    let handle = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("simulator started");
    (port, handle)
}

// ------------------------------------------------------------- the prepares

struct Prepare {
    id: String,
    body: Vec<u8>,
}

fn prepare(payer: &str, payee: &str, amount: &str) -> Prepare {
    let id = uuid::Uuid::new_v4().to_string();
    let transaction = json!({
        "transactionId": uuid::Uuid::new_v4().to_string(),
        "quoteId": uuid::Uuid::new_v4().to_string(),
        "payee": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": switch_tests::dfsp::PAYEE_MSISDN, "fspId": payee}},
        "payer": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": switch_tests::dfsp::PAYER_MSISDN, "fspId": payer}},
        "amount": {"amount": amount, "currency": CURRENCY},
        "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
    });
    let data = ilp::b64url_encode(transaction.to_string().as_bytes());
    let address = format!("g.{payee}.msisdn.{}", switch_tests::dfsp::PAYEE_MSISDN);
    let packet = ilp::encode_v1(
        switch_tests::dfsp::ilp_amount(amount),
        &address,
        data.as_bytes(),
    );
    let condition = ilp::condition_for(SECRET, &packet);
    let expiration = Utc::now() + chrono::Duration::seconds(EXPIRES_IN_S);
    let body = json!({
        "transferId": id,
        "payerFsp": payer,
        "payeeFsp": payee,
        "amount": {"amount": amount, "currency": CURRENCY},
        "ilpPacket": packet,
        "condition": condition,
        "expiration": expiration.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    });
    Prepare {
        id,
        body: body.to_string().into_bytes(),
    }
}

async fn send_prepare(sim: Arc<Sim>, payer: String, payee: String, p: Prepare) {
    let record = &sim.record;
    let url = format!("{}/transfers", sim.fspiop);
    let date = rfc1123_now();
    let headers = [
        ("content-type", TRANSFERS_CT),
        ("accept", TRANSFERS_ACCEPT),
        ("date", date.as_str()),
        ("fspiop-source", payer.as_str()),
        ("fspiop-destination", payee.as_str()),
    ];
    let result = send(&sim.client, hyper::Method::POST, &url, &headers, p.body).await;
    let reason = match result {
        Ok((202, _)) => {
            record.counters.accepted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok((status, body)) => {
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match json["errorInformation"]["errorCode"].as_str() {
                Some(code) => format!("http {status} / {code}"),
                None => format!("http {status}"),
            }
        }
        Err(e) => format!("send error: {e}"),
    };
    // A refused prepare gets no callback: it is no longer in flight (unless a
    // callback raced the answer and already took it).
    if lock(&record.in_flight).remove(&p.id).is_some() {
        record.counters.refused.fetch_add(1, Ordering::Relaxed);
        Record::bump(&record.refused_by, reason);
    }
}

/// Transfers due by `t` seconds: the integral of the rate (linear ramp, then flat).
fn due_by(t: f64, rate: f64, ramp: f64, total: f64) -> f64 {
    let t = t.min(total);
    if ramp <= 0.0 {
        rate * t
    } else if t < ramp {
        rate * t * t / (2.0 * ramp)
    } else {
        rate * ramp / 2.0 + rate * (t - ramp)
    }
}

// -------------------------------------------------------- embedded switch

struct Embedded {
    child: Child,
}

impl Embedded {
    fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn switch_command(bin: &PathBuf, db_url: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("MOJASWITCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("MOJASWITCH_DATABASE_URL", db_url);
    cmd
}

async fn start_embedded(
    bin: &PathBuf,
    db: &TestDb,
    extra: &[String],
    client: &reqwest::Client,
) -> anyhow::Result<(Embedded, String, String)> {
    let fspiop_port = switch_tests::free_port();
    let operator_port = switch_tests::free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(db.log_path())?;
    let mut cmd = switch_command(bin, &db.url);
    cmd.env("MOJASWITCH_FSPIOP_PORT", fspiop_port.to_string())
        .env("MOJASWITCH_OPERATOR_PORT", operator_port.to_string())
        .env("MOJASWITCH_BIND_ADDRESS", "127.0.0.1")
        .env("MOJASWITCH_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for pair in extra {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--switch-env wants KEY=VALUE, got {pair}"))?;
        cmd.env(key, value);
    }
    let mut child = Embedded {
        child: cmd.spawn()?,
    };
    let operator = format!("http://127.0.0.1:{operator_port}");
    let fspiop = format!("http://127.0.0.1:{fspiop_port}");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            anyhow::bail!(
                "mojaswitch exited during start ({status}):\n{}",
                std::fs::read_to_string(db.log_path()).unwrap_or_default()
            );
        }
        let health = client.get(format!("{operator}/health")).send().await;
        if matches!(&health, Ok(r) if r.status().is_success()) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("mojaswitch not healthy within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, fspiop, operator))
}

// ------------------------------------------------------------ provisioning

async fn operator_post(
    client: &reqwest::Client,
    operator: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = client
        .post(format!("{operator}{path}"))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn expect(
    what: &str,
    want: u16,
    call: impl std::future::Future<Output = anyhow::Result<(u16, Value)>>,
) -> anyhow::Result<Value> {
    let (status, body) = call.await?;
    if status != want {
        anyhow::bail!("{what}: HTTP {status} (wanted {want}): {body}");
    }
    Ok(body)
}

/// Hub accounts and settlement model (tolerated if they already exist, as on
/// a switch that was provisioned before), then each DFSP as the tests do it.
async fn provision(
    client: &reqwest::Client,
    operator: &str,
    names: &[String],
    sim_base: &str,
) -> anyhow::Result<()> {
    for kind in ["HUB_MULTILATERAL_SETTLEMENT", "HUB_RECONCILIATION"] {
        let (status, body) = operator_post(
            client,
            operator,
            "/participants/Hub/accounts",
            json!({"type": kind, "currency": CURRENCY}),
        )
        .await?;
        if status != 201 {
            eprintln!("note: hub account {kind}: HTTP {status} {body} (continuing)");
        }
    }
    let (status, body) = operator_post(
        client,
        operator,
        "/settlementModels",
        json!({
            "name": format!("DEFERREDNET{CURRENCY}"),
            "settlementGranularity": "NET",
            "settlementInterchange": "MULTILATERAL",
            "settlementDelay": "DEFERRED",
            "requireLiquidityCheck": true,
            "ledgerAccountType": "POSITION",
            "settlementAccountType": "SETTLEMENT",
            "autoPositionReset": true,
            "currency": CURRENCY,
        }),
    )
    .await?;
    if status != 201 {
        eprintln!("note: settlement model: HTTP {status} {body} (continuing)");
    }
    for name in names {
        expect(
            &format!("create {name}"),
            201,
            operator_post(
                client,
                operator,
                "/participants",
                json!({"name": name, "currency": CURRENCY}),
            ),
        )
        .await?;
        expect(
            &format!("initial position of {name}"),
            201,
            operator_post(
                client,
                operator,
                &format!("/participants/{name}/initialPositionAndLimits"),
                json!({"currency": CURRENCY, "limit": {"type": "NET_DEBIT_CAP", "value": switch_tests::exact_number("1000000000")}, "initialPosition": 0}),
            ),
        )
        .await?;
        let list = client
            .get(format!("{operator}/participants/{name}/accounts"))
            .send()
            .await?
            .json::<Value>()
            .await?;
        let settlement = list
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["ledgerAccountType"] == "SETTLEMENT" && x["currency"] == CURRENCY)
            })
            .and_then(|x| x["id"].as_i64())
            .ok_or_else(|| anyhow::anyhow!("{name} has no settlement account: {list}"))?;
        expect(
            &format!("funds in for {name}"),
            202,
            operator_post(
                client,
                operator,
                &format!("/participants/{name}/accounts/{settlement}"),
                json!({
                    "transferId": uuid::Uuid::new_v4().to_string(),
                    "externalReference": "bench",
                    "action": "recordFundsIn",
                    "reason": "bench",
                    "amount": {"amount": "1000000000", "currency": CURRENCY},
                }),
            ),
        )
        .await?;
        let base = format!("{sim_base}/{name}");
        for (kind, value) in [
            (
                "FSPIOP_CALLBACK_URL_TRANSFER_POST",
                format!("{base}/transfers"),
            ),
            (
                "FSPIOP_CALLBACK_URL_TRANSFER_PUT",
                format!("{base}/transfers/{{{{transferId}}}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_TRANSFER_ERROR",
                format!("{base}/transfers/{{{{transferId}}}}/error"),
            ),
        ] {
            expect(
                &format!("endpoint {kind} of {name}"),
                201,
                operator_post(
                    client,
                    operator,
                    &format!("/participants/{name}/endpoints"),
                    json!({"type": kind, "value": value}),
                ),
            )
            .await?;
        }
    }
    Ok(())
}

// ----------------------------------------------------------------- results

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index] as f64 / 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = runtime.block_on(run(args))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn run(args: Args) -> anyhow::Result<i32> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.steady_s > 0.0 && args.ramp_s >= 0.0,
        "--steady-s must be positive"
    );
    anyhow::ensure!(args.dfsps >= 2, "--dfsps must be at least 2");
    let client = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?;
    let bin = match &args.switch_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
            .join("mojaswitch"),
    };

    // The switch: given, or embedded on a scratch database.
    let mut embedded = None;
    let mut db = None;
    let (fspiop, operator, db_url, backend_name) = match (&args.fspiop_url, &args.operator_url) {
        (Some(f), Some(o)) => (
            f.trim_end_matches('/').to_string(),
            o.trim_end_matches('/').to_string(),
            args.db_url.clone(),
            "external".to_string(),
        ),
        (None, None) => {
            let backend = match args.backend.as_str() {
                "sqlite" => Backend::Sqlite,
                "mysql" | "mariadb" => Backend::MySql,
                other => anyhow::bail!("--backend sqlite|mysql, not {other}"),
            };
            anyhow::ensure!(
                bin.exists(),
                "{} not found: build it with `cargo build --release -p switch-http --bin mojaswitch`",
                bin.display()
            );
            let test_db = TestDb::new(backend);
            let (child, f, o) = start_embedded(&bin, &test_db, &args.switch_env, &client).await?;
            let url = test_db.url.clone();
            embedded = Some(child);
            db = Some(test_db);
            (f, o, Some(url), args.backend.clone())
        }
        _ => anyhow::bail!("give both --fspiop-url and --operator-url, or neither"),
    };
    for url in [&fspiop, &operator] {
        anyhow::ensure!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:"),
            "loopback URLs only: {url}"
        );
    }

    // DFSP names unique per run (a running switch may already know others).
    let run_tag = format!(
        "{:06x}",
        std::process::id() as u64 ^ Utc::now().timestamp() as u64
    )
    .chars()
    .rev()
    .take(6)
    .collect::<String>();
    let payers: Vec<String> = (0..args.dfsps / 2)
        .map(|i| format!("bench{run_tag}payer{i}"))
        .collect();
    let payees: Vec<String> = (0..args.dfsps - args.dfsps / 2)
        .map(|i| format!("bench{run_tag}payee{i}"))
        .collect();

    let record = Arc::new(Record {
        start: Instant::now(),
        counters: Counters::default(),
        in_flight: Mutex::new(HashMap::with_capacity(args.max_in_flight * 2)),
        done: Mutex::new(Vec::new()),
        failed_by_code: Mutex::new(BTreeMap::new()),
        refused_by: Mutex::new(BTreeMap::new()),
        payee_errors_by: Mutex::new(BTreeMap::new()),
    });
    let sim = Arc::new(Sim {
        record: record.clone(),
        client: http_client(),
        fspiop: fspiop.clone(),
        payees: payees.clone(),
        payers: payers.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    let (sim_port, sim_server) = start_simulator(sim.clone());
    let all: Vec<String> = payers.iter().chain(payees.iter()).cloned().collect();
    eprintln!(
        "switch fspiop {fspiop} operator {operator} ({backend_name}); provisioning {} DFSPs",
        all.len()
    );
    provision(
        &client,
        &operator,
        &all,
        &format!("http://127.0.0.1:{sim_port}"),
    )
    .await?;

    // The run: timing is relative to the scheduler start, not `record.start`.
    let offset = record.now_s();
    let total = args.ramp_s + args.steady_s;
    eprintln!(
        "running: {} tr/s, ramp {} s, steady {} s, cap {} in flight",
        args.rate, args.ramp_s, args.steady_s, args.max_in_flight
    );
    let progress = {
        let record = record.clone();
        let rate = args.rate;
        let ramp = args.ramp_s;
        tokio::spawn(async move {
            let mut last = (0u64, 0u64, 0u64);
            let max_ticks = (total + GRACE.as_secs_f64() + 5.0) as u64 + 1;
            for second in 1..=max_ticks {
                tokio::time::sleep_until(
                    tokio::time::Instant::from_std(record.start)
                        + Duration::from_secs_f64(offset + second as f64),
                )
                .await;
                let c = &record.counters;
                let sent = c.sent.load(Ordering::Relaxed);
                let committed = c.committed.load(Ordering::Relaxed);
                let errors = c.failed.load(Ordering::Relaxed)
                    + c.refused.load(Ordering::Relaxed)
                    + c.dropped_cap.load(Ordering::Relaxed);
                let target = if (second as f64) < ramp {
                    rate * second as f64 / ramp
                } else if (second as f64) <= total {
                    rate
                } else {
                    0.0
                };
                eprintln!(
                    "[{second:>3}s] target {target:>7.0}/s  offered {:>6}/s  committed {:>6}/s  in flight {:>6}  errors {:>6} (+{})",
                    sent - last.0,
                    committed - last.1,
                    lock(&record.in_flight).len(),
                    errors,
                    errors - last.2,
                );
                last = (sent, committed, errors);
            }
        })
    };

    // The scheduler: open model, bounded by time and count.
    let mut issued: u64 = 0;
    let mut k: u64 = 0;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let max_ticks = (total / TICK.as_secs_f64()) as u64 * 4 + 1000;
    let amount = args.amount.clone();
    let switch_pid = embedded.as_ref().map(|e: &Embedded| e.child.id());
    let db_pids = database_pids();
    let mut cpu_at_steady: Option<CpuSample> = None;
    let mut cpu_at_end: Option<CpuSample> = None;
    for _ in 0..max_ticks {
        interval.tick().await;
        let t = record.now_s() - offset;
        let due = due_by(t, args.rate, args.ramp_s, total).floor() as u64;
        if cpu_at_steady.is_none() && t >= args.ramp_s {
            cpu_at_steady = Some(cpu_sample(switch_pid, &db_pids));
        }
        if t >= total {
            cpu_at_end = Some(cpu_sample(switch_pid, &db_pids));
        }
        while issued < due {
            issued += 1;
            let payer = payers[(k % payers.len() as u64) as usize].clone();
            let payee =
                payees[((k / payers.len() as u64 + k) % payees.len() as u64) as usize].clone();
            k += 1;
            record.counters.sent.fetch_add(1, Ordering::Relaxed);
            {
                let mut in_flight = lock(&record.in_flight);
                if in_flight.len() >= args.max_in_flight {
                    record.counters.dropped_cap.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let p = prepare(&payer, &payee, &amount);
                in_flight.insert(p.id.clone(), Instant::now());
                drop(in_flight);
                tokio::spawn(send_prepare(sim.clone(), payer, payee, p));
            }
        }
        if t >= total {
            break;
        }
    }
    let end_s = record.now_s() - offset;
    eprintln!("schedule done at {end_s:.1} s; waiting up to {GRACE:?} for stragglers");
    let grace_end = Instant::now() + GRACE;
    while Instant::now() < grace_end && !lock(&record.in_flight).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let payee PUT answers settle before reading the counters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    progress.abort();

    // Results.
    let c = &record.counters;
    let unfinished = lock(&record.in_flight).len() as u64;
    let steady_from = args.ramp_s;
    let steady_to = total;
    let done = std::mem::take(&mut *lock(&record.done));
    let mut steady_latencies: Vec<u64> = done
        .iter()
        .filter(|d| {
            let s = d.sent_s - offset;
            s >= steady_from && s < steady_to
        })
        .map(|d| d.latency_us)
        .collect();
    steady_latencies.sort_unstable();
    let completed_in_window = done
        .iter()
        .filter(|d| {
            let s = d.done_s - offset;
            s >= steady_from && s < steady_to
        })
        .count() as u64;
    let late = done
        .iter()
        .filter(|d| d.done_s - offset >= steady_to)
        .count() as u64;
    let achieved = completed_in_window as f64 / args.steady_s;
    let offered_in_window = (due_by(steady_to, args.rate, args.ramp_s, total)
        - due_by(steady_from, args.rate, args.ramp_s, total))
        / args.steady_s;
    let committed = c.committed.load(Ordering::Relaxed);
    let lat = |p: f64| percentile(&steady_latencies, p);
    let mut result = json!({
        "switch": {"fspiop": fspiop, "operator": operator, "backend": backend_name},
        "config": {
            "rate": args.rate, "ramp_s": args.ramp_s, "steady_s": args.steady_s,
            "dfsps": args.dfsps, "payers": payers.len(), "payees": payees.len(),
            "max_in_flight": args.max_in_flight, "amount": args.amount,
            "switch_env": args.switch_env,
        },
        "offered_rate_steady": offered_in_window,
        "achieved_rate_steady": achieved,
        "latency_ms_steady": {
            "samples": steady_latencies.len(),
            "p50": lat(50.0), "p95": lat(95.0), "p99": lat(99.0),
            "max": steady_latencies.last().map(|v| *v as f64 / 1000.0),
        },
        "counts": {
            "scheduled": c.sent.load(Ordering::Relaxed),
            "sent": c.sent.load(Ordering::Relaxed) - c.dropped_cap.load(Ordering::Relaxed),
            "accepted_202": c.accepted.load(Ordering::Relaxed),
            "committed": committed,
            "failed": c.failed.load(Ordering::Relaxed),
            "failed_by_code": *lock(&record.failed_by_code),
            "dropped_in_flight_cap": c.dropped_cap.load(Ordering::Relaxed),
            "refused_by_switch": c.refused.load(Ordering::Relaxed),
            "refused_by": *lock(&record.refused_by),
            "prepare_unanswered": (c.sent.load(Ordering::Relaxed) - c.dropped_cap.load(Ordering::Relaxed))
                .saturating_sub(c.accepted.load(Ordering::Relaxed) + c.refused.load(Ordering::Relaxed)),
            "late_after_window": late,
            "unfinished": unfinished,
            "payee_puts": c.payee_puts.load(Ordering::Relaxed),
            "payee_put_errors": c.payee_put_errors.load(Ordering::Relaxed),
            "payee_put_errors_by": *lock(&record.payee_errors_by),
            "payee_notifications": c.payee_notifications.load(Ordering::Relaxed),
            "unknown_callbacks": c.unknown_callbacks.load(Ordering::Relaxed),
        },
    });
    sim_server.stop(false).await;

    // The books.
    let mut books_ok = true;
    let mut books = json!({"checked": false});
    if let Some(url) = db_url {
        let clean_stop = embedded.take().map(Embedded::stop);
        let count_sql = "SELECT COUNT(*) FROM transfer_state_change tsc JOIN transfer t ON t.transfer_id = tsc.transfer_id WHERE tsc.state = 'COMMITTED' AND t.payer_fsp LIKE 'bench%'";
        let db_committed: Option<u64> = match &db {
            Some(db) => db.rows(count_sql).first().and_then(|r| r[0].parse().ok()),
            None => count_rows(&url, count_sql).await,
        };
        let (check_ok, report) = match switch_command(&bin, &url).arg("check").output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("could not run {} check: {e}", bin.display())),
        };
        let matches = db_committed == Some(committed);
        books_ok = matches && check_ok;
        books = json!({
            "checked": true,
            "run_tag": run_tag,
            "db_committed": db_committed,
            "generator_committed": committed,
            "counts_match": matches,
            "committed_without_callback_in_time": db_committed.map(|d| d as i64 - committed as i64),
            "ledger_check_passed": check_ok,
            "switch_stopped_cleanly": clean_stop,
            "ledger_check_report": report.trim(),
        });
    }
    result["books"] = books;
    if let (Some(a), Some(b)) = (cpu_at_steady, cpu_at_end) {
        let wall = args.steady_s;
        let per_transfer = |cpu: f64| {
            if completed_in_window > 0 {
                Some(cpu * 1000.0 / completed_in_window as f64)
            } else {
                None
            }
        };
        let piece = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => {
                json!({"cores": (y - x) / wall, "ms_per_commit": per_transfer(y - x)})
            }
            _ => Value::Null,
        };
        result["cpu_steady"] = json!({
            "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "machine_busy_cores": (b.machine_busy - a.machine_busy) / wall,
            "machine_ms_per_commit": per_transfer(b.machine_busy - a.machine_busy),
            "machine_busy_fraction": if b.machine_total > a.machine_total { (b.machine_busy - a.machine_busy) / (b.machine_total - a.machine_total) } else { 0.0 },
            "switch": piece(a.switch, b.switch),
            "generator_and_simulators": piece(Some(a.generator), Some(b.generator)),
            "database_server": piece(a.database, b.database),
        });
    }

    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    let n = |key: &str| result["counts"][key].as_u64().unwrap_or(0);
    eprintln!(
        "offered {:.0}/s achieved {:.0}/s  p50 {} p95 {} p99 {} max {} ms  committed {} failed {} dropped {} refused {} unanswered {} unfinished {}  books {}",
        offered_in_window,
        achieved,
        fmt_ms(lat(50.0)),
        fmt_ms(lat(95.0)),
        fmt_ms(lat(99.0)),
        fmt_ms(steady_latencies.last().map(|v| *v as f64 / 1000.0)),
        n("committed"),
        n("failed"),
        n("dropped_in_flight_cap"),
        n("refused_by_switch"),
        n("prepare_unanswered"),
        n("unfinished"),
        if result["books"]["checked"] == true {
            if books_ok { "OK" } else { "DO NOT BALANCE" }
        } else {
            "not checked (no --db-url)"
        }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n")?;
    }
    drop(embedded);
    drop(db);
    Ok(if books_ok { 0 } else { 2 })
}

/// CPU seconds (user + system) a process has used, from /proc (Linux only).
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// (busy, total) CPU seconds of the whole machine, from /proc/stat.
fn machine_cpu_s() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(((total - idle) / 100.0, total / 100.0))
}

/// Pids of running database servers (MariaDB/MySQL), to attribute CPU.
fn database_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| matches!(c.trim(), "mariadbd" | "mysqld"))
                .unwrap_or(false)
        })
        .take(8)
        .collect()
}

/// CPU use of the pieces, sampled at the start and end of the steady window.
#[derive(Clone, Copy, Default)]
struct CpuSample {
    generator: f64,
    switch: Option<f64>,
    database: Option<f64>,
    machine_busy: f64,
    machine_total: f64,
}

fn cpu_sample(switch_pid: Option<u32>, db_pids: &[u32]) -> CpuSample {
    let (machine_busy, machine_total) = machine_cpu_s().unwrap_or((0.0, 0.0));
    let database = if db_pids.is_empty() {
        None
    } else {
        Some(db_pids.iter().filter_map(|p| proc_cpu_s(*p)).sum())
    };
    CpuSample {
        generator: proc_cpu_s(std::process::id()).unwrap_or(0.0),
        switch: switch_pid.and_then(proc_cpu_s),
        database,
        machine_busy,
        machine_total,
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// COUNT(*) on an external database (sqlite read-only or MySQL).
async fn count_rows(url: &str, sql: &str) -> Option<u64> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite") {
        format!("{url}?mode=ro")
    } else {
        url.to_string()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .ok()?;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&pool)
        .await
        .ok()?;
    let n: i64 = row.try_get(0).ok()?;
    pool.close().await;
    Some(n as u64)
}
