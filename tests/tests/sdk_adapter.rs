//! The real DFSP connector against the switch: two instances of
//! `@mojaloop/sdk-scheme-adapter` 18.0.2 from the npm registry, a payer and a
//! payee, each with a private Redis and a small core-banking backend stub,
//! move money through the adapter's own outbound API:
//!
//! - the payee's `POST /accounts` registers its MSISDN with the switch's
//!   oracle (FSPIOP batch `POST /participants` → `PUT /participants/{requestId}`);
//! - the payer's `POST /transfers` runs `GET /parties` (no FSPIOP-Destination)
//!   → `PUT /parties`, `POST /quotes` → `PUT /quotes`, `POST /transfers` →
//!   `PUT /transfers` through the switch and answers `COMPLETED`;
//! - a transfer beyond the payer's liquidity cover is refused by the switch
//!   with 4001, and a lookup of an unregistered MSISDN with 3204: the payer's
//!   adapter reports exactly those codes.
//!
//! Positions move by exactly the amount and the ledger invariants hold.
//!
//! The adapter is installed outside the repository by
//! `scripts/install-sdk-adapter.sh` (which `scripts/test.sh` runs first).
//!
//! When it fails, the adapters' and the switch's logs are printed. The
//! adapter's inbound server refuses bad FSPIOP headers (HTTP 400, 3101
//! "Malformed syntax" for an `Accept` it cannot parse, such as `*/*` on a
//! callback) before it logs the request: a `callback failed ... answered 400`
//! line in the switch's log with nothing in the adapter's log means the
//! callback's headers were refused; the outbound call then times out (504).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use switch_tests::dfsp::{Dfsp, ServerThread, PAYEE_MSISDN, PAYER_MSISDN};
use switch_tests::{assert_ledger_ok, free_port, Backend, RedisServer, Switch, TestDb};

const ADAPTER_VERSION: &str = "18.0.2";
const CURRENCY: &str = "USD";
/// How long an adapter may take to listen on its ports.
const ADAPTER_START: Duration = Duration::from_secs(45);
/// The adapter gives up on a callback after this many seconds.
const ADAPTER_CALLBACK_TIMEOUT_SECS: u64 = 20;
/// How long one call to an adapter's outbound API may take (a few stages,
/// each bounded by the adapter's callback timeout).
const OUTBOUND_CALL: Duration = Duration::from_secs(3 * ADAPTER_CALLBACK_TIMEOUT_SECS + 10);
/// Lines of each log printed when the test fails.
const LOG_TAIL_LINES: usize = 80;
/// An unregistered MSISDN for the lookup failure.
const UNKNOWN_MSISDN: &str = "27700000404";

/// Where `scripts/install-sdk-adapter.sh` puts the package (keep in step with it).
fn adapter_package_dir() -> PathBuf {
    let root = std::env::var_os("MOJASWITCH_NPM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache").join("mojaswitch")
        });
    root.join(format!("sdk-scheme-adapter-{ADAPTER_VERSION}"))
}

/// The adapter's entry point; panics with the fix when it is not installed.
fn adapter_entry() -> PathBuf {
    let dir = adapter_package_dir();
    let entry = dir.join("node_modules/@mojaloop/sdk-scheme-adapter/src/index.js");
    assert!(
        dir.join(".installed").is_file() && entry.is_file(),
        "@mojaloop/sdk-scheme-adapter@{ADAPTER_VERSION} is not installed in {}: \
         run `bash scripts/install-sdk-adapter.sh` (scripts/test.sh runs it before cargo test)",
        dir.display()
    );
    entry
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The last `lines` lines of a file (or why it could not be read).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// -- child processes ---------------------------------------------------------

/// A child process whose stdout and stderr go to a log file; killed on drop
/// (also when the test panics).
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("create process log");
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited ({status}); its log:\n{}",
                    self.name,
                    tail(&self.log, LOG_TAIL_LINES)
                );
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until something listens on `port` (the process must keep running).
fn wait_listening(proc: &mut Proc, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        proc.assert_running();
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not listen on port {port} after {timeout:?}; its log:\n{}",
            proc.name,
            tail(&proc.log, LOG_TAIL_LINES)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// -- the core-banking backend stub -------------------------------------------

/// One request the backend stub received.
#[derive(Debug, Clone)]
struct BackendCall {
    method: String,
    path: String,
    json: Value,
}

/// The DFSP's core-banking system as the adapter's backend API sees it
/// (`BACKEND_ENDPOINT`): a real HTTP server that records every request and
/// answers party lookups, quote requests and transfers.
struct CoreBanking {
    calls: Arc<Mutex<Vec<BackendCall>>>,
    port: u16,
    /// Held for its Drop, which stops the server.
    _server: ServerThread,
}

impl CoreBanking {
    fn start(name: &str) -> CoreBanking {
        let calls: Arc<Mutex<Vec<BackendCall>>> = Arc::new(Mutex::new(Vec::new()));
        let server_calls = calls.clone();
        let server = ServerThread::start(&format!("core-banking-{name}"), move |cfg| {
            cfg.app_data(web::Data::new(server_calls.clone()))
                .default_service(web::to(core_banking));
        });
        CoreBanking {
            calls,
            port: server.port,
            _server: server,
        }
    }

    /// `host:port`, as the adapter's BACKEND_ENDPOINT wants it (no scheme).
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn calls(&self) -> Vec<BackendCall> {
        lock(&self.calls).clone()
    }

    fn calls_to(&self, method: &str, path: &str) -> Vec<BackendCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path == path)
            .collect()
    }
}

/// The backend API of sdk-scheme-adapter 18 (docs/dfspInboundApi.yaml):
/// `GET /parties/{type}/{id}` answers the party, `POST /quoterequests` a quote
/// for exactly the requested amount without fees, `POST /transfers` accepts
/// (the adapter then fulfils with its own ILP secret), `PUT /transfers/{id}`
/// (a notification) is acknowledged.
async fn core_banking(
    req: HttpRequest,
    body: web::Bytes,
    calls: web::Data<Arc<Mutex<Vec<BackendCall>>>>,
) -> HttpResponse {
    let call = BackendCall {
        method: req.method().as_str().to_string(),
        path: req.path().to_string(),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    lock(&calls).push(call.clone());
    let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    match (call.method.as_str(), segments.as_slice()) {
        ("GET", ["parties", id_type, id_value]) => HttpResponse::Ok().json(json!({
            "idType": id_type,
            "idValue": id_value,
            "displayName": "Henrik Karlsson",
            "firstName": "Henrik",
            "lastName": "Karlsson",
            "dateOfBirth": "1970-01-01",
        })),
        ("POST", ["quoterequests"]) => {
            let request = &call.json;
            HttpResponse::Ok().json(json!({
                "quoteId": request["quoteId"],
                "transactionId": request["transactionId"],
                "transferAmount": request["amount"],
                "transferAmountCurrency": request["currency"],
                "payeeReceiveAmount": request["amount"],
                "payeeReceiveAmountCurrency": request["currency"],
            }))
        }
        ("POST", ["transfers"]) => HttpResponse::Ok().json(json!({
            "homeTransactionId": format!("core-{}", call.json["transferId"].as_str().unwrap_or("?")),
        })),
        ("PUT", ["transfers", _]) => HttpResponse::Ok().json(json!({})),
        _ => HttpResponse::NotFound().json(json!({"message": "not served by the test backend"})),
    }
}

// -- the adapter --------------------------------------------------------------

/// One running sdk-scheme-adapter with its Redis and backend stub.
struct Adapter {
    name: String,
    inbound_port: u16,
    outbound_port: u16,
    backend: CoreBanking,
    // Dropped in this order: the adapter before its Redis.
    node: Proc,
    redis: RedisServer,
}

impl Adapter {
    /// Starts the adapter for DFSP `name` against `switch`; does not wait
    /// for it to listen (see [`Adapter::wait_ready`]).
    fn start(entry: &Path, dir: &Path, name: &str, switch: &Switch) -> Adapter {
        let redis = RedisServer::start(dir, name, free_port());
        let redis_port = redis.port;
        let backend = CoreBanking::start(name);
        let inbound_port = free_port();
        let outbound_port = free_port();
        let work = dir.join(format!("adapter-{name}"));
        // The adapter reads a `.env` from its working directory: use an empty one.
        std::fs::create_dir_all(&work).expect("adapter working dir");
        let mut command = Command::new("node");
        command.arg(entry).current_dir(&work).env_clear();
        for key in ["PATH", "HOME", "TMPDIR", "LANG"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        let settings = [
            ("DFSP_ID", name.to_string()),
            ("PEER_ENDPOINT", format!("127.0.0.1:{}", switch.fspiop_port)),
            // The switch serves the ALS API on its FSPIOP port too. Lookups
            // fall back to PEER_ENDPOINT, but the outbound `POST /accounts`
            // sends its `POST /participants` to ALS_ENDPOINT only.
            ("ALS_ENDPOINT", format!("127.0.0.1:{}", switch.fspiop_port)),
            ("BACKEND_ENDPOINT", backend.endpoint()),
            ("INBOUND_LISTEN_PORT", inbound_port.to_string()),
            ("OUTBOUND_LISTEN_PORT", outbound_port.to_string()),
            ("TEST_LISTEN_PORT", free_port().to_string()),
            ("METRICS_SERVER_LISTEN_PORT", free_port().to_string()),
            ("CACHE_URL", format!("redis://127.0.0.1:{redis_port}")),
            (
                "ILP_SECRET",
                format!("{name}-ilp-secret-for-sdk-adapter-test"),
            ),
            ("JWS_SIGN", "false".into()),
            ("VALIDATE_INBOUND_JWS", "false".into()),
            ("INBOUND_MUTUAL_TLS_ENABLED", "false".into()),
            ("OUTBOUND_MUTUAL_TLS_ENABLED", "false".into()),
            ("AUTO_ACCEPT_PARTY", "true".into()),
            ("AUTO_ACCEPT_QUOTES", "true".into()),
            ("ENABLE_TEST_FEATURES", "false".into()),
            ("PM4ML_ENABLED", "false".into()),
            ("EXPIRY_SECONDS", "60".into()),
            (
                "REQUEST_PROCESSING_TIMEOUT_SECONDS",
                ADAPTER_CALLBACK_TIMEOUT_SECS.to_string(),
            ),
            ("LOG_INDENT", "0".into()),
        ];
        for (key, value) in settings {
            command.env(key, value);
        }
        let node = Proc::spawn(
            &format!("sdk-scheme-adapter {name}"),
            command,
            dir.join(format!("adapter-{name}.log")),
        );
        Adapter {
            name: name.to_string(),
            inbound_port,
            outbound_port,
            backend,
            node,
            redis,
        }
    }

    fn wait_ready(&mut self) {
        wait_listening(&mut self.node, self.inbound_port, ADAPTER_START);
        wait_listening(&mut self.node, self.outbound_port, ADAPTER_START);
    }

    /// Where the switch sends this DFSP's callbacks.
    fn inbound_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inbound_port)
    }

    fn outbound(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.outbound_port)
    }

    /// Registers the adapter's inbound server as every FSPIOP callback
    /// endpoint of the DFSP: the types and URL templates the simulator
    /// registers, on the adapter's base URL.
    async fn register_endpoints(&self, switch: &Switch) {
        let template = Dfsp::start(&format!("{}-template", self.name));
        let simulator_base = template.base_url();
        let endpoints = template.endpoints();
        drop(template);
        let base = self.inbound_url();
        for (kind, value) in endpoints {
            let value = value.replacen(&simulator_base, &base, 1);
            assert!(value.starts_with(&base), "{kind}: {value}");
            let (status, body) = switch
                .post(
                    &format!("/participants/{}/endpoints", self.name),
                    json!({"type": kind, "value": value}),
                )
                .await;
            assert_eq!(status, 201, "register {kind} for {}: {body}", self.name);
        }
    }

    /// POST to the outbound API: (status, JSON body).
    async fn post(&self, client: &reqwest::Client, path: &str, body: &Value) -> (u16, Value) {
        let response = client
            .post(self.outbound(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} outbound POST {path}: {e}", self.name));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }
}

/// Prints every log's tail if the test panics (declared after the things it
/// reports on, so it drops, and prints, first).
struct Diagnostics {
    logs: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, path) in &self.logs {
                eprintln!(
                    "----- {name}: last {LOG_TAIL_LINES} lines of {} -----\n{}",
                    path.display(),
                    tail(path, LOG_TAIL_LINES)
                );
            }
            eprintln!("(logs kept in {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn scratch_dir(backend: Backend) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mojaswitch-sdk-adapter-{}-{backend:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The outbound API's transfer request.
fn transfer_request(to_msisdn: &str, amount: &str) -> Value {
    json!({
        "homeTransactionId": switch_tests::new_id(),
        "from": {
            "type": "CONSUMER",
            "idType": "MSISDN",
            "idValue": PAYER_MSISDN,
            "displayName": "Alice Payer",
        },
        "to": {"idType": "MSISDN", "idValue": to_msisdn},
        "amountType": "SEND",
        "currency": CURRENCY,
        "amount": amount,
        "transactionType": "TRANSFER",
        "note": "sdk-scheme-adapter integration test",
    })
}

/// The FSPIOP error code the adapter reports for a failed outbound transfer.
fn reported_code(body: &Value) -> &Value {
    &body["transferState"]["lastError"]["mojaloopError"]["errorInformation"]["errorCode"]
}

async fn adapter_flow(backend: Backend) {
    let entry = adapter_entry();
    let dir = scratch_dir(backend);
    let db = TestDb::new(backend);
    let switch = Switch::start(&db, &[]).await;

    // Onboarding as an operator does it. The payer has 500 of liquidity
    // cover under a net debit cap of 1000, so 4001 (liquidity) is what
    // refuses a transfer that exceeds the cover, not 4200 (limit).
    switch.onboard_hub(CURRENCY).await;
    let payer_accounts = switch
        .onboard_dfsp("payerfsp", CURRENCY, "1000", "500")
        .await;
    let payee_accounts = switch.onboard_dfsp("payeefsp", CURRENCY, "1000", "0").await;

    let mut payer = Adapter::start(&entry, &dir, "payerfsp", &switch);
    let mut payee = Adapter::start(&entry, &dir, "payeefsp", &switch);
    let _diagnostics = Diagnostics {
        logs: vec![
            ("switch".into(), db.log_path()),
            ("payer adapter".into(), payer.node.log.clone()),
            ("payee adapter".into(), payee.node.log.clone()),
            ("payer redis".into(), payer.redis.log.clone()),
            ("payee redis".into(), payee.redis.log.clone()),
        ],
        dir: dir.clone(),
    };
    payer.register_endpoints(&switch).await;
    payee.register_endpoints(&switch).await;
    let started = Instant::now();
    payer.wait_ready();
    payee.wait_ready();
    eprintln!("adapters listening after {:?}", started.elapsed());

    let client = reqwest::Client::builder()
        .timeout(OUTBOUND_CALL)
        .build()
        .expect("client");

    // The payee registers its customer's MSISDN through its own adapter.
    let (status, accounts) = payee
        .post(
            &client,
            "/accounts",
            &json!([{"idType": "MSISDN", "idValue": PAYEE_MSISDN, "currency": CURRENCY}]),
        )
        .await;
    assert_eq!(status, 200, "payee POST /accounts: {accounts:#}");
    assert_eq!(accounts["currentState"], "COMPLETED", "{accounts:#}");
    assert_eq!(
        accounts["response"],
        json!([{"idType": "MSISDN", "idValue": PAYEE_MSISDN}]),
        "registered without error: {accounts:#}"
    );

    let payer_before = switch.balance("payerfsp", payer_accounts.position).await;
    let payee_before = switch.balance("payeefsp", payee_accounts.position).await;
    assert_eq!(payer_before, ("0".to_string(), "0".to_string()));
    assert_eq!(payee_before, ("0".to_string(), "0".to_string()));

    // The money moves: lookup, quote and transfer through the switch.
    let t0 = Instant::now();
    let (status, done) = payer
        .post(
            &client,
            "/transfers",
            &transfer_request(PAYEE_MSISDN, "100.25"),
        )
        .await;
    eprintln!(
        "outbound transfer answered {status} after {:?}",
        t0.elapsed()
    );
    assert_eq!(status, 200, "payer POST /transfers: {done:#}");
    assert_eq!(done["currentState"], "COMPLETED", "{done:#}");
    let transfer_id = done["transferId"]
        .as_str()
        .expect("the adapter's transferId")
        .to_string();
    let party = &done["getPartiesResponse"]["body"]["party"];
    assert_eq!(
        party["partyIdInfo"],
        json!({"partyIdType": "MSISDN", "partyIdentifier": PAYEE_MSISDN, "fspId": "payeefsp"}),
        "{done:#}"
    );
    assert_eq!(party["name"], "Henrik Karlsson");
    assert_eq!(done["to"]["fspId"], "payeefsp");
    assert_eq!(done["quoteResponseSource"], "payeefsp");
    assert_eq!(
        done["quoteResponse"]["body"]["transferAmount"],
        json!({"amount": "100.25", "currency": CURRENCY}),
        "{done:#}"
    );
    assert_eq!(done["fulfil"]["body"]["transferState"], "COMMITTED");
    assert_eq!(
        done["fulfil"]["headers"]["fspiop-source"], "payeefsp",
        "{done:#}"
    );

    // The payee's core banking saw the lookup, the quote and the transfer.
    let lookups = payee
        .backend
        .calls_to("GET", &format!("/parties/MSISDN/{PAYEE_MSISDN}"));
    assert_eq!(lookups.len(), 1, "{:#?}", payee.backend.calls());
    let quotes = payee.backend.calls_to("POST", "/quoterequests");
    assert_eq!(quotes.len(), 1, "{:#?}", payee.backend.calls());
    assert_eq!(quotes[0].json["transactionId"], transfer_id.as_str());
    assert_eq!(quotes[0].json["amount"], "100.25");
    assert_eq!(quotes[0].json["currency"], CURRENCY);
    assert_eq!(quotes[0].json["from"]["idValue"], PAYER_MSISDN);
    assert_eq!(quotes[0].json["from"]["fspId"], "payerfsp");
    let credits = payee.backend.calls_to("POST", "/transfers");
    assert_eq!(credits.len(), 1, "{:#?}", payee.backend.calls());
    assert_eq!(credits[0].json["transferId"], transfer_id.as_str());
    assert_eq!(credits[0].json["amount"], "100.25");
    assert_eq!(credits[0].json["currency"], CURRENCY);
    // The payer's adapter never asks its own backend during an outbound transfer.
    assert!(
        payer.backend.calls().is_empty(),
        "{:#?}",
        payer.backend.calls()
    );

    // The switch's record of it, and positions moved by exactly the amount.
    let (status, transaction) = switch.get(&format!("/transactions/{transfer_id}")).await;
    assert_eq!(status, 200, "{transaction}");
    assert_eq!(
        transaction["amount"],
        json!({"amount": "100.25", "currency": CURRENCY})
    );
    assert_eq!(transaction["payee"]["partyIdInfo"]["fspId"], "payeefsp");
    assert_eq!(transaction["payer"]["partyIdInfo"]["fspId"], "payerfsp");
    let payer_after = switch.balance("payerfsp", payer_accounts.position).await;
    let payee_after = switch.balance("payeefsp", payee_accounts.position).await;
    assert_eq!(payer_after, ("100.25".to_string(), "0".to_string()));
    assert_eq!(payee_after, ("-100.25".to_string(), "0".to_string()));

    // Failure: 600 exceeds the payer's remaining cover (500 - 100.25) but
    // not its net debit cap: the switch refuses the prepare with 4001 and the
    // adapter reports that code to its caller.
    let (status, refused) = payer
        .post(
            &client,
            "/transfers",
            &transfer_request(PAYEE_MSISDN, "600"),
        )
        .await;
    assert_eq!(status, 500, "{refused:#}");
    assert_eq!(refused["statusCode"], "4001", "{refused:#}");
    assert_eq!(reported_code(&refused), "4001", "{refused:#}");
    assert_eq!(refused["transferState"]["currentState"], "ERROR_OCCURRED");
    // It got as far as the prepare: the quote was given, the credit never asked for.
    assert_eq!(payee.backend.calls_to("POST", "/quoterequests").len(), 2);
    assert_eq!(payee.backend.calls_to("POST", "/transfers").len(), 1);
    assert_eq!(
        switch.balance("payerfsp", payer_accounts.position).await,
        payer_after
    );
    assert_eq!(
        switch.balance("payeefsp", payee_accounts.position).await,
        payee_after
    );

    // Failure: nobody owns this MSISDN; the switch answers the lookup with 3204.
    let (status, unknown) = payer
        .post(
            &client,
            "/transfers",
            &transfer_request(UNKNOWN_MSISDN, "1"),
        )
        .await;
    assert_eq!(status, 500, "{unknown:#}");
    assert_eq!(unknown["statusCode"], "3204", "{unknown:#}");
    assert_eq!(reported_code(&unknown), "3204", "{unknown:#}");
    assert!(
        payee
            .backend
            .calls()
            .iter()
            .all(|c| !c.path.contains(UNKNOWN_MSISDN)),
        "the lookup never reached a DFSP"
    );

    drop(payer);
    drop(payee);
    assert!(switch.stop().success(), "the switch stops cleanly");
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn sdk_adapter_transfer_sqlite() {
    adapter_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn sdk_adapter_transfer_mariadb() {
    adapter_flow(Backend::MySql).await;
}
