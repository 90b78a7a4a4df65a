//! `mojaswitch-bench`: an open-model load generator for the transfers and
//! end-to-end tiers.
//!
//! It provisions N simulated DFSPs (half payers, half payees) through the
//! operator API, runs one lean DFSP simulator (one HTTP server on loopback,
//! one path prefix per DFSP), and starts transactions at a constant target
//! rate (linear ramp, then steady) regardless of completions.
//!
//! - `--tier transfers`: a transaction is `POST /transfers`. A payee answers
//!   each prepare with 202 and then `PUT /transfers/{id}` with the
//!   fulfilment.
//! - `--tier e2e`: a transaction is discovery, agreement and transfer: the
//!   payer sends `GET /parties/MSISDN/{id}` (the switch finds the payee in
//!   its oracle, where each payee registered a pool of parties), the payee
//!   answers `PUT /parties`, the payer sends `POST /quotes`, the payee
//!   answers `PUT /quotes/{id}` with the ILP packet and condition, and the
//!   payer sends the prepare built from that quote.
//!
//! - `--tier transfers --bulk N`: a transaction is `POST /bulkTransfers` of N
//!   transfers from one payer to one payee. The payee answers the forwarded
//!   bulk with 202 and then `PUT /bulkTransfers/{id}` COMPLETED with a
//!   fulfilment per line.
//!
//! Either way a transaction counts when its payer receives the switch's
//! `PUT /transfers/{id}` with COMMITTED (a bulk: `PUT /bulkTransfers/{id}`
//! COMPLETED with every line committed). `--skew` sends a share of the
//! transactions from the first payer; `--patch` makes payees answer
//! RESERVED, so that the switch notifies them by `PATCH /transfers/{id}`.
//! Afterwards it compares the generator's count of committed transfers with
//! the COMMITTED rows in the database and runs `mojaswitch check`.
//!
//! The switch's resident memory (VmRSS) is sampled once a second when its
//! pid is known (embedded, or `--switch-pid`), to see growth under load.
//!
//! Without `--fspiop-url`/`--operator-url` it starts its own switch (the
//! `mojaswitch` binary next to this one) on a fresh scratch database.
//! Traffic goes to 127.0.0.1 only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use switch_tests::cpu_limit::{self, CpuLimit, Throttling};
use switch_tests::dfsp::{rfc1123_now, SECRET};
use switch_tests::{Backend, TestDb};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// mimalloc, as in the switch: the generator shares the machine's cores
/// with the switch, and under glibc malloc ~15% of its CPU went to the
/// allocator (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`; perf at
/// 2,000 transfers/s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CURRENCY: &str = "USD";
/// How long a single HTTP exchange with the switch may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// All simulated DFSPs' connections to one node at most: well inside the
/// kernel's ~28,000 ephemeral ports.
const CONNECTIONS_MAX: usize = 16_384;
/// How long stragglers may take after the steady window.
const GRACE: Duration = Duration::from_secs(10);
/// How long an embedded switch may take to become healthy / to stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the switch may take to answer a batch party registration.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Scheduler tick.
const TICK: Duration = Duration::from_millis(1);
/// How far ahead each transfer expires (`--expires-in-s`; set once at start).
static EXPIRES_IN_S: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(120);

fn expires_in_s() -> i64 {
    EXPIRES_IN_S.load(Ordering::Relaxed)
}
/// The party type of the e2e tier's parties.
const PARTY_ID_TYPE: &str = "MSISDN";
/// The schema's limit on one batch registration.
const PARTIES_PER_PAYEE_MAX: usize = 10_000;
const TRANSFERS_CT: &str = "application/vnd.interoperability.transfers+json;version=1.1";
const TRANSFERS_ACCEPT: &str = "application/vnd.interoperability.transfers+json;version=1";
const PARTIES_CT: &str = "application/vnd.interoperability.parties+json;version=1.1";
const PARTIES_ACCEPT: &str = "application/vnd.interoperability.parties+json;version=1";
const QUOTES_CT: &str = "application/vnd.interoperability.quotes+json;version=1.1";
const QUOTES_ACCEPT: &str = "application/vnd.interoperability.quotes+json;version=1";
const PARTICIPANTS_CT: &str = "application/vnd.interoperability.participants+json;version=1.1";
const PARTICIPANTS_ACCEPT: &str = "application/vnd.interoperability.participants+json;version=1";
const BULK_CT: &str = "application/vnd.interoperability.bulkTransfers+json;version=1.1";
const BULK_ACCEPT: &str = "application/vnd.interoperability.bulkTransfers+json;version=1";
/// The schema's limit on the lines of one bulk transfer.
const BULK_LINES_MAX: usize = 1000;
/// One RSS sample per this many seconds goes into the memory series.
const MEMORY_SERIES_EVERY_S: f64 = 10.0;

/// What one transaction is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    /// POST /transfers, fulfilled by the payee.
    Transfers,
    /// GET /parties, POST /quotes, then the transfer.
    #[value(name = "e2e")]
    E2e,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Transfers => "transfers",
            Tier::E2e => "e2e",
        }
    }

    /// The payer's first request of a transaction.
    fn first_stage(self, bulk: bool) -> Stage {
        self.stages(bulk)[0]
    }

    /// The payer's requests of a transaction, in order (`bulk`: `--bulk` on).
    fn stages(self, bulk: bool) -> &'static [Stage] {
        match self {
            Tier::Transfers if bulk => &[Stage::Bulk],
            Tier::Transfers => &[Stage::Transfers],
            Tier::E2e => &Stage::ALL,
        }
    }
}

/// How the payers make transfer (and bulk) ids.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Ids {
    /// Random UUID v4, as in the API's examples.
    V4,
    /// Time-ordered UUID v7 (the v2.0 `CorrelationId` pattern allows v1–v7),
    /// ordered like the Testing Toolkit's ULIDs.
    V7,
}

impl Ids {
    fn name(self) -> &'static str {
        match self {
            Ids::V4 => "v4",
            Ids::V7 => "v7",
        }
    }

    fn next(self) -> String {
        match self {
            Ids::V4 => uuid::Uuid::new_v4(),
            Ids::V7 => uuid::Uuid::now_v7(),
        }
        .to_string()
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mojaswitch-bench",
    about = "Open-model transfer load generator for mojaswitch"
)]
struct Args {
    /// FSPIOP base URL of a running switch (loopback only), or a comma-separated
    /// list of cluster nodes, used round-robin per request. With neither URL,
    /// an embedded switch is started.
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
    /// What a transaction is: transfers (POST /transfers) or e2e (GET /parties, POST /quotes, then the transfer).
    #[arg(long, value_enum, default_value = "transfers")]
    tier: Tier,
    /// Percentage of the transactions from the first payer; the rest spread evenly over the others (0: all payers alike).
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// Payees answer prepares with RESERVED; the switch then notifies them by PATCH.
    #[arg(long)]
    patch: bool,
    /// e2e: party identifiers (MSISDNs) each payee registers with the switch's oracle.
    #[arg(long, default_value_t = 100)]
    parties_per_payee: usize,
    /// Target transactions per second in the steady window.
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
    /// Transactions awaiting their callback at most; beyond it new ones are dropped.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Requests each simulated DFSP has open to each switch node at most, as
    /// a DFSP's own HTTP client pool allows; beyond it a request waits in the
    /// generator, and the wait counts in its transaction's latency.
    #[arg(long, default_value_t = 256)]
    connections_per_dfsp: usize,
    /// Amount of each transfer.
    #[arg(long, default_value = "1")]
    amount: String,
    /// Seconds until each transfer (or bulk, or quote) expires.
    #[arg(long, default_value_t = 120)]
    expires_in_s: i64,
    /// Transfers tier: each transaction is a POST /bulkTransfers of this many transfers (0: single transfers; at most 1000).
    #[arg(long, default_value_t = 0)]
    bulk: usize,
    /// Transfer ids: v4 (random) or v7 (time-ordered).
    #[arg(long, value_enum, default_value = "v4")]
    ids: Ids,
    /// Pid of the running switch (with --fspiop-url), to sample its memory and CPU.
    #[arg(long)]
    switch_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the generator and the switch it starts in a control group that
    /// may use at most this many cores (Linux, root): the same pressure on
    /// the CPU on a fast day as on a slow one. Not applied to a database
    /// server or to a running switch.
    #[arg(long)]
    cpu_limit_cores: Option<f64>,
    /// Worker threads that run the simulated DFSPs' requests (their server
    /// has a thread of its own, the schedule runs on the main thread). 1
    /// runs the schedule and the requests on the main thread alone: about a
    /// tenth less CPU for the generator, but no lower p99 at 3,000/s
    /// (docs/performance.md).
    #[arg(long, default_value_t = 2)]
    generator_threads: usize,
}

/// Most `--generator-threads` (the machine of record has 2 cores).
const GENERATOR_THREADS_MAX: usize = 16;

/// The generator's runtime: the main thread alone, or a pool of `threads`
/// workers beside it.
fn generator_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    anyhow::ensure!(
        (1..=GENERATOR_THREADS_MAX).contains(&threads),
        "--generator-threads must be between 1 and {GENERATOR_THREADS_MAX}"
    );
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- the record

struct Done {
    sent_s: f64,
    done_s: f64,
    latency_us: u64,
    /// Transfers it committed: 1, or a bulk's lines.
    transfers: u64,
}

/// The payer's request a transaction is waiting on: what failures and
/// refusals are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// GET /parties, until PUT /parties (e2e).
    Parties,
    /// POST /quotes, until PUT /quotes (e2e).
    Quotes,
    /// POST /transfers, until PUT /transfers.
    Transfers,
    /// POST /bulkTransfers, until PUT /bulkTransfers (`--bulk`).
    Bulk,
}

/// The number of stages, for the per-stage counters.
const STAGES: usize = 4;

impl Stage {
    /// The e2e tier's stages.
    const ALL: [Stage; 3] = [Stage::Parties, Stage::Quotes, Stage::Transfers];

    fn name(self) -> &'static str {
        match self {
            Stage::Parties => "parties",
            Stage::Quotes => "quotes",
            Stage::Transfers => "transfers",
            Stage::Bulk => "bulkTransfers",
        }
    }

    /// Index into the per-stage counters.
    fn index(self) -> usize {
        self as usize
    }

    /// Content-Type and Accept of this stage's messages.
    fn media(self) -> (&'static str, &'static str) {
        match self {
            Stage::Parties => (PARTIES_CT, PARTIES_ACCEPT),
            Stage::Quotes => (QUOTES_CT, QUOTES_ACCEPT),
            Stage::Transfers => (TRANSFERS_CT, TRANSFERS_ACCEPT),
            Stage::Bulk => (BULK_CT, BULK_ACCEPT),
        }
    }
}

/// A transaction awaiting a callback.
struct Flight {
    /// When its first request was issued: latency is measured from here.
    sent: Instant,
    stage: Stage,
}

#[derive(Default)]
struct Counters {
    /// Transactions scheduled (dropped ones included).
    sent: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    dropped_cap: AtomicU64,
    /// Payer requests per stage (`Stage::index`): sent, answered 202, refused.
    stage_sent: [AtomicU64; STAGES],
    stage_accepted: [AtomicU64; STAGES],
    stage_refused: [AtomicU64; STAGES],
    /// `--bulk`: the lines of the results payers received, by outcome, and
    /// the lines a result left out.
    lines_committed: AtomicU64,
    lines_failed: AtomicU64,
    lines_missing: AtomicU64,
    payee_puts: AtomicU64,
    payee_put_errors: AtomicU64,
    payee_notifications: AtomicU64,
    /// PATCH /transfers/{id} received by payees (`--patch`).
    payee_patches: AtomicU64,
    unknown_callbacks: AtomicU64,
}

/// Counts by stage, then by FSPIOP error code or HTTP status.
type ByStage = BTreeMap<&'static str, BTreeMap<String, u64>>;

struct Record {
    start: Instant,
    counters: Counters,
    in_flight: Mutex<HashMap<String, Flight>>,
    /// e2e: transactions awaiting PUT /parties, by (payer, party), oldest
    /// first. The callback names only the party, and two lookups of one
    /// party by one payer get the same answer, so the oldest takes it.
    lookups: Mutex<HashMap<(String, String), VecDeque<String>>>,
    done: Mutex<Vec<Done>>,
    /// Error callbacks to payers (or a final state other than COMMITTED).
    failed_by: Mutex<ByStage>,
    /// Payer requests the switch did not accept with 202, by HTTP status / error code.
    refused_by: Mutex<ByStage>,
    /// payee PUT failures, by resource and HTTP status or error.
    payee_errors_by: Mutex<BTreeMap<String, u64>>,
    /// PATCH notifications to payees, by transferState.
    patches_by_state: Mutex<BTreeMap<String, u64>>,
    /// `--bulk`: lines of payers' results that were not committed, by error code.
    lines_failed_by: Mutex<BTreeMap<String, u64>>,
    /// The switch's resident memory.
    memory: Memory,
}

impl Record {
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *lock(map).entry(key).or_insert(0) += 1;
    }

    fn bump_stage(map: &Mutex<ByStage>, stage: Stage, key: String) {
        *lock(map)
            .entry(stage.name())
            .or_default()
            .entry(key)
            .or_insert(0) += 1;
    }

    fn unknown(&self) {
        self.counters
            .unknown_callbacks
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a new transaction in flight, unless the cap is reached.
    fn admit(&self, id: &str, stage: Stage, cap: usize) -> bool {
        let mut in_flight = lock(&self.in_flight);
        if in_flight.len() >= cap {
            return false;
        }
        let flight = Flight {
            sent: Instant::now(),
            stage,
        };
        in_flight.insert(id.to_string(), flight);
        true
    }

    /// Moves a transaction on to its next request; false if it is no longer awaited.
    fn advance(&self, id: &str, stage: Stage) -> bool {
        match lock(&self.in_flight).get_mut(id) {
            Some(flight) => {
                flight.stage = stage;
                true
            }
            None => false,
        }
    }

    /// Ends a transaction: `None` if it was not (or no longer) awaited.
    fn finish(&self, id: &str) -> Option<Flight> {
        lock(&self.in_flight).remove(id)
    }

    /// Ends a transaction with a failure callback at `stage`.
    fn fail(&self, id: &str, stage: Stage, code: String) {
        if self.finish(id).is_none() {
            self.unknown();
            return;
        }
        self.count_failure(stage, code);
    }

    /// Counts a failure of a transaction already finished.
    fn count_failure(&self, stage: Stage, code: String) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        Record::bump_stage(&self.failed_by, stage, code);
    }

    /// Counts a transaction committed, with its latency.
    fn count_commit(&self, flight: &Flight, at: Instant, transfers: u64) {
        self.counters.committed.fetch_add(1, Ordering::Relaxed);
        lock(&self.done).push(Done {
            sent_s: (flight.sent - self.start).as_secs_f64(),
            done_s: (at - self.start).as_secs_f64(),
            latency_us: (at - flight.sent).as_micros() as u64,
            transfers,
        });
    }

    /// e2e: a lookup the payer is about to send.
    fn expect_lookup(&self, payer: &str, party: &str, id: &str) {
        lock(&self.lookups)
            .entry((payer.to_string(), party.to_string()))
            .or_default()
            .push_back(id.to_string());
    }

    /// e2e: the transaction a PUT /parties answers. Lookups no longer in
    /// flight (refused on sending) are skipped; the queue bounds the loop.
    fn answered_lookup(&self, payer: &str, party: &str) -> Option<String> {
        let key = (payer.to_string(), party.to_string());
        let mut lookups = lock(&self.lookups);
        let queue = lookups.get_mut(&key)?;
        let in_flight = lock(&self.in_flight);
        let mut found = None;
        while let Some(id) = queue.pop_front() {
            if in_flight
                .get(&id)
                .is_some_and(|f| f.stage == Stage::Parties)
            {
                found = Some(id);
                break;
            }
        }
        drop(in_flight);
        if queue.is_empty() {
            lookups.remove(&key);
        }
        found
    }
}

// ------------------------------------------------------- the switch's memory

/// The switch's resident memory, sampled once a second by the progress
/// task, so that growth under steady load shows (a leak per transaction
/// grows with the count, a cache levels off).
struct Memory {
    /// None: the switch's process is unknown (a running switch without
    /// `--switch-pid`), nothing is sampled.
    pid: Option<u32>,
    /// (seconds since the scheduler start, KiB), in time order.
    samples: Mutex<Vec<(f64, u64)>>,
}

impl Memory {
    fn new(pid: Option<u32>) -> Memory {
        Memory {
            pid,
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Takes a sample at `t`: the RSS in KiB, or None if there is no process.
    fn sample(&self, t: f64) -> Option<u64> {
        let kib = rss_kib(self.pid?)?;
        lock(&self.samples).push((t, kib));
        Some(kib)
    }
}

/// VmRSS of a process in KiB, from /proc/{pid}/status (Linux only).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    // "VmRSS:\t   12345 kB"
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Least-squares slope of (seconds, MiB) points, in MiB per second; None
/// with fewer than two distinct times.
fn slope_per_s(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The `memory` object of the result: RSS at the start and end of the
/// steady window [`from`, `to`] (seconds since the scheduler start), the
/// max over the run, one sample per 10 s of the window, and the growth as
/// a slope and per 1,000 transactions (and transfers) completed in it.
fn memory_report(memory: &Memory, from: f64, to: f64, transactions: u64, transfers: u64) -> Value {
    let samples = lock(&memory.samples).clone();
    let Some(pid) = memory.pid.filter(|_| !samples.is_empty()) else {
        return json!({"sampled": false, "pid": memory.pid});
    };
    // Samples are taken at whole seconds; allow for float noise at the edges.
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= from - 1e-6 && *t <= to + 1e-6)
        .map(|(t, kib)| (*t, mib(*kib)))
        .collect();
    let start = steady.first().copied();
    let end = steady.last().copied();
    let growth = start.zip(end).map(|(a, b)| b.1 - a.1);
    let per_1000 = |n: u64| growth.filter(|_| n > 0).map(|g| g * 1000.0 / n as f64);
    let mut next_t = start.map(|s| s.0).unwrap_or(0.0);
    let mut series = Vec::new();
    for (t, m) in &steady {
        if *t >= next_t - 1e-6 {
            series.push(json!({"t_s": t - from, "rss_mib": m}));
            next_t += MEMORY_SERIES_EVERY_S;
        }
    }
    json!({
        "sampled": true,
        "pid": pid,
        "interval_s": 1,
        "samples": samples.len(),
        "run_start_mib": mib(samples[0].1),
        "steady_start_mib": start.map(|s| s.1),
        "steady_end_mib": end.map(|s| s.1),
        "max_mib": samples.iter().map(|s| s.1).max().map(mib),
        "series_every_10s": series,
        "slope_mib_per_min": slope_per_s(&steady).map(|s| s * 60.0),
        "growth_steady_mib": growth,
        "growth_mib_per_1000_transactions": per_1000(transactions),
        "growth_mib_per_1000_transfers": per_1000(transfers),
    })
}

// ---------------------------------------------------------- the HTTP client

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

/// Idle connections are dropped before the switch's keep-alive (actix-web
/// closes after 5 s) can close them: a request sent on a connection the
/// server is closing got a 408 or a reset (seen at 3,000/s). Up to
/// `idle_per_host` are kept, as many as the DFSPs may have open (see
/// `Connections`), so that none is closed and opened again while the
/// load swings.
fn http_client(idle_per_host: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(Duration::from_secs(2))
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

/// "http 400 / 3101" from an error answer.
fn http_reason(status: u16, body: &[u8]) -> String {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match json["errorInformation"]["errorCode"].as_str() {
        Some(code) => format!("http {status} / {code}"),
        None => format!("http {status}"),
    }
}

fn error_code(json: &Value) -> String {
    json["errorInformation"]["errorCode"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

// -------------------------------------------------------------- the simulator

/// The simulated DFSPs' connections to the switch: each DFSP has at most
/// `--connections-per-dfsp` requests open to each node, as its own HTTP
/// client pool would. Without a bound, an overloaded switch made the
/// generator open a connection for every waiting request (~12,000), and
/// the kernel's search for a free ephemeral port in `connect()` took 70%
/// of the generator's CPU, on the cores the switch needed.
struct Connections {
    /// Per DFSP, one semaphore per switch node (as `Sim::fspiop`).
    slots: HashMap<String, Vec<Arc<Semaphore>>>,
    per_dfsp: usize,
    /// Requests that found their DFSP's connections all busy, and the
    /// longest such wait.
    waited: AtomicU64,
    wait_us_max: AtomicU64,
}

impl Connections {
    fn new<'a>(dfsps: impl Iterator<Item = &'a String>, nodes: usize, per_dfsp: usize) -> Self {
        let slots = dfsps
            .map(|dfsp| {
                let per_node = (0..nodes)
                    .map(|_| Arc::new(Semaphore::new(per_dfsp)))
                    .collect();
                (dfsp.clone(), per_node)
            })
            .collect();
        Connections {
            slots,
            per_dfsp,
            waited: AtomicU64::new(0),
            wait_us_max: AtomicU64::new(0),
        }
    }

    /// A connection of `dfsp` to node `node`, waited for at most `HTTP_TIMEOUT`.
    async fn acquire(&self, dfsp: &str, node: usize) -> Result<OwnedSemaphorePermit, String> {
        let slots = self
            .slots
            .get(dfsp)
            .and_then(|per_node| per_node.get(node))
            .ok_or_else(|| format!("{dfsp} is not a simulated DFSP"))?;
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let since = Instant::now();
        let permit = tokio::time::timeout(HTTP_TIMEOUT, slots.clone().acquire_owned())
            .await
            .map_err(|_| "timeout waiting for a connection".to_string())?
            .map_err(|_| "connections closed".to_string())?;
        self.waited.fetch_add(1, Ordering::Relaxed);
        let waited_us = since.elapsed().as_micros() as u64;
        self.wait_us_max.fetch_max(waited_us, Ordering::Relaxed);
        Ok(permit)
    }

    fn report(&self) -> Value {
        json!({
            "per_dfsp_per_node": self.per_dfsp,
            "requests_waited": self.waited.load(Ordering::Relaxed),
            "wait_ms_max": self.wait_us_max.load(Ordering::Relaxed) as f64 / 1000.0,
        })
    }
}

struct Sim {
    record: Arc<Record>,
    client: HttpClient,
    /// FSPIOP base URLs of the switch's nodes, used round-robin.
    fspiop: Vec<String>,
    next_node: AtomicUsize,
    connections: Connections,
    payees: Vec<String>,
    payers: Vec<String>,
    runtime: tokio::runtime::Handle,
    /// Payees fulfil with RESERVED instead of COMMITTED.
    patch: bool,
    /// The amount payers ask quotes for (e2e).
    amount: String,
    /// `--bulk`: the lines of each bulk (0: single transfers).
    bulk_lines: u64,
    /// `--ids`: how bulk lines' transfer ids are made.
    ids: Ids,
    /// Batch registration answers, by requestId (read by provisioning).
    registrations: Mutex<HashMap<String, Value>>,
}

/// One request from the switch to a simulated DFSP.
struct Call<'a> {
    method: &'a str,
    dfsp: String,
    /// The path segments after the resource.
    rest: &'a [&'a str],
    /// The path ends in `/error`.
    error: bool,
    /// FSPIOP-Source: who the message is from.
    source: String,
    body: web::Bytes,
}

impl Call<'_> {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One server for every simulated DFSP: `/{dfsp}/{resource}/...`.
async fn handle(req: HttpRequest, body: web::Bytes, sim: web::Data<Arc<Sim>>) -> HttpResponse {
    let sim = sim.get_ref().clone();
    let path = req.path().trim_start_matches('/');
    // dfsp, resource, then at most /{type}/{id}/{sub}/error.
    let segments: Vec<&str> = path.splitn(7, '/').collect();
    let resource = segments.get(1).copied().unwrap_or("");
    let rest = segments.get(2..).unwrap_or(&[]);
    let call = Call {
        method: req.method().as_str(),
        dfsp: segments.first().copied().unwrap_or("").to_string(),
        rest,
        error: rest.last() == Some(&"error"),
        source: req
            .headers()
            .get("fspiop-source")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body,
    };
    let answer = match resource {
        "transfers" => on_transfers(&sim, &call),
        "parties" => on_parties(&sim, &call),
        "quotes" => on_quotes(&sim, &call),
        "participants" => on_participants(&sim, &call),
        "bulkTransfers" => on_bulk(&sim, &call),
        _ => None,
    };
    answer.unwrap_or_else(|| {
        sim.record.unknown();
        HttpResponse::Accepted().finish()
    })
}

/// `/transfers`: prepares to payees, results to payers, notifications to payees.
fn on_transfers(sim: &Arc<Sim>, call: &Call) -> Option<HttpResponse> {
    let payee = sim.payees.contains(&call.dfsp);
    let payer = sim.payers.contains(&call.dfsp);
    match (call.method, call.rest.first()) {
        ("POST", None) if payee => {
            let runtime = sim.runtime.clone();
            runtime.spawn(fulfil(sim.clone(), call.dfsp.clone(), call.json()));
            Some(HttpResponse::Accepted().finish())
        }
        ("PUT", Some(id)) if payer => {
            on_transfer_result(sim, id, call.error, &call.json());
            Some(HttpResponse::Ok().finish())
        }
        ("PATCH", Some(_)) if payee => {
            sim.record
                .counters
                .payee_patches
                .fetch_add(1, Ordering::Relaxed);
            let state = call.json()["transferState"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            Record::bump(&sim.record.patches_by_state, state);
            Some(HttpResponse::Ok().finish())
        }
        ("PUT", Some(_)) | ("PATCH", Some(_)) => {
            sim.record
                .counters
                .payee_notifications
                .fetch_add(1, Ordering::Relaxed);
            Some(HttpResponse::Ok().finish())
        }
        _ => None,
    }
}

/// The payer's PUT /transfers/{id} (or /error): the end of a transaction.
fn on_transfer_result(sim: &Sim, id: &str, error: bool, json: &Value) {
    let at = Instant::now();
    let record = &sim.record;
    let state = json["transferState"].as_str().unwrap_or("");
    if error || state != "COMMITTED" {
        let code = if error {
            error_code(json)
        } else {
            format!("state {state}")
        };
        record.fail(id, Stage::Transfers, code);
        return;
    }
    let Some(flight) = record.finish(id) else {
        record.unknown();
        return;
    };
    record.count_commit(&flight, at, 1);
}

/// `/bulkTransfers`: bulks to payees, results to payers, and the results a
/// payee gets when the switch did not commit a line it fulfilled.
fn on_bulk(sim: &Arc<Sim>, call: &Call) -> Option<HttpResponse> {
    let payee = sim.payees.contains(&call.dfsp);
    let payer = sim.payers.contains(&call.dfsp);
    match (call.method, call.rest.first()) {
        ("POST", None) if payee => {
            let runtime = sim.runtime.clone();
            runtime.spawn(fulfil_bulk(sim.clone(), call.dfsp.clone(), call.json()));
            Some(HttpResponse::Accepted().finish())
        }
        ("PUT", Some(id)) if payer => {
            on_bulk_result(sim, id, call.error, &call.json());
            Some(HttpResponse::Ok().finish())
        }
        ("PUT", Some(_)) => {
            sim.record
                .counters
                .payee_notifications
                .fetch_add(1, Ordering::Relaxed);
            Some(HttpResponse::Ok().finish())
        }
        _ => None,
    }
}

/// The payer's PUT /bulkTransfers/{id} (or /error): the end of a bulk. It
/// counts as committed when COMPLETED with every line committed; its lines
/// are counted by outcome whatever the bulk's state.
fn on_bulk_result(sim: &Sim, id: &str, error: bool, json: &Value) {
    let at = Instant::now();
    let record = &sim.record;
    if error {
        record.fail(id, Stage::Bulk, error_code(json));
        return;
    }
    // Only the awaited bulk's lines count, once: a repeated PUT is unknown.
    let Some(flight) = record.finish(id) else {
        record.unknown();
        return;
    };
    let committed = count_lines(record, json, sim.bulk_lines);
    let state = json["bulkTransferState"].as_str().unwrap_or("");
    if state != "COMPLETED" {
        record.count_failure(Stage::Bulk, format!("state {state}"));
    } else if committed < sim.bulk_lines {
        record.count_failure(Stage::Bulk, "COMPLETED with lines not committed".into());
    } else {
        record.count_commit(&flight, at, committed);
    }
}

/// Counts the lines of a bulk's results: committed (a fulfilment), failed
/// (by error code), missing (no entry). Returns the committed ones.
fn count_lines(record: &Record, json: &Value, lines: u64) -> u64 {
    let entries = json["individualTransferResults"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let c = &record.counters;
    let mut committed = 0;
    for entry in entries.iter().take(BULK_LINES_MAX) {
        if entry.get("fulfilment").is_some() {
            committed += 1;
            continue;
        }
        let code = entry["errorInformation"]["errorCode"]
            .as_str()
            .unwrap_or("no fulfilment, no error");
        c.lines_failed.fetch_add(1, Ordering::Relaxed);
        Record::bump(&record.lines_failed_by, code.to_string());
    }
    c.lines_committed.fetch_add(committed, Ordering::Relaxed);
    let missing = lines.saturating_sub(entries.len() as u64);
    c.lines_missing.fetch_add(missing, Ordering::Relaxed);
    committed
}

/// `/parties/{type}/{id}`: lookups to payees, their answers to payers.
fn on_parties(sim: &Arc<Sim>, call: &Call) -> Option<HttpResponse> {
    let [id_type, party, ..] = call.rest else {
        return None;
    };
    match call.method {
        "GET" if sim.payees.contains(&call.dfsp) => {
            let runtime = sim.runtime.clone();
            runtime.spawn(answer_party(
                sim.clone(),
                call.dfsp.clone(),
                call.source.clone(),
                id_type.to_string(),
                party.to_string(),
            ));
            Some(HttpResponse::Accepted().finish())
        }
        "PUT" if sim.payers.contains(&call.dfsp) => {
            on_party(sim, call, party);
            Some(HttpResponse::Ok().finish())
        }
        _ => None,
    }
}

/// The payer learned which FSP serves the party (or why none does): it
/// asks that FSP for a quote.
fn on_party(sim: &Arc<Sim>, call: &Call, party: &str) {
    let record = &sim.record;
    let Some(id) = record.answered_lookup(&call.dfsp, party) else {
        record.unknown();
        return;
    };
    let json = call.json();
    if call.error {
        record.fail(&id, Stage::Parties, error_code(&json));
        return;
    }
    // The FSP the party says it belongs to; the answering FSP otherwise.
    let payee = json["party"]["partyIdInfo"]["fspId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(&call.source)
        .to_string();
    if !record.advance(&id, Stage::Quotes) {
        record.unknown();
        return;
    }
    let runtime = sim.runtime.clone();
    runtime.spawn(send_quote(
        sim.clone(),
        call.dfsp.clone(),
        payee,
        party.to_string(),
        id,
    ));
}

/// `/quotes`: quote requests to payees, quotes to payers.
fn on_quotes(sim: &Arc<Sim>, call: &Call) -> Option<HttpResponse> {
    match (call.method, call.rest.first()) {
        ("POST", None) if sim.payees.contains(&call.dfsp) => {
            let runtime = sim.runtime.clone();
            runtime.spawn(answer_quote(
                sim.clone(),
                call.dfsp.clone(),
                call.source.clone(),
                call.json(),
            ));
            Some(HttpResponse::Accepted().finish())
        }
        ("PUT", Some(id)) if sim.payers.contains(&call.dfsp) => {
            on_quote(sim, call, id);
            Some(HttpResponse::Ok().finish())
        }
        _ => None,
    }
}

/// The payer got its quote (the quote id is the transfer id): it sends the
/// prepare with the payee's ILP packet and condition.
fn on_quote(sim: &Arc<Sim>, call: &Call, id: &str) {
    let record = &sim.record;
    let json = call.json();
    if call.error {
        record.fail(id, Stage::Quotes, error_code(&json));
        return;
    }
    if !record.advance(id, Stage::Transfers) {
        record.unknown();
        return;
    }
    let p = Prepare {
        id: id.to_string(),
        body: prepare_body(
            id,
            &call.dfsp,
            &call.source,
            &json["transferAmount"],
            json["ilpPacket"].as_str().unwrap_or(""),
            json["condition"].as_str().unwrap_or(""),
        ),
    };
    let runtime = sim.runtime.clone();
    runtime.spawn(send_prepare(
        sim.clone(),
        call.dfsp.clone(),
        call.source.clone(),
        p,
    ));
}

/// `/participants/{requestId}`: the answer to a batch registration.
fn on_participants(sim: &Arc<Sim>, call: &Call) -> Option<HttpResponse> {
    let ("PUT", Some(request_id)) = (call.method, call.rest.first()) else {
        return None;
    };
    let answer = match call.error {
        false => call.json(),
        true => json!({"error": call.json()}),
    };
    lock(&sim.registrations).insert(request_id.to_string(), answer);
    Some(HttpResponse::Ok().finish())
}

/// The payee's answer to a prepare: PUT /transfers/{id} COMMITTED (RESERVED
/// with `--patch`) with the fulfilment.
async fn fulfil(sim: Arc<Sim>, payee: String, prepare: Value) {
    let id = prepare["transferId"].as_str().unwrap_or("");
    let packet = prepare["ilpPacket"].as_str().unwrap_or("");
    let payer = prepare["payerFsp"].as_str().unwrap_or("");
    let state = if sim.patch { "RESERVED" } else { "COMMITTED" };
    let body = json!({
        "fulfilment": ilp::fulfilment_for(SECRET, packet),
        "completedTimestamp": iso_in(0),
        "transferState": state,
    });
    let path = format!("/transfers/{id}");
    payee_put(&sim, Stage::Transfers, &path, &payee, payer, body).await;
}

/// The payee's answer to a bulk: PUT /bulkTransfers/{id} COMPLETED with the
/// fulfilment of each line's condition (the switch reads only the lines).
async fn fulfil_bulk(sim: Arc<Sim>, payee: String, bulk: Value) {
    let id = bulk["bulkTransferId"].as_str().unwrap_or("");
    let payer = bulk["payerFsp"].as_str().unwrap_or("");
    let lines = bulk["individualTransfers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let results: Vec<Value> = lines
        .iter()
        .take(BULK_LINES_MAX)
        .map(|line| {
            let packet = line["ilpPacket"].as_str().unwrap_or("");
            json!({
                "transferId": line["transferId"],
                "fulfilment": ilp::fulfilment_for(SECRET, packet),
            })
        })
        .collect();
    let body = json!({
        "bulkTransferState": "COMPLETED",
        "completedTimestamp": iso_in(0),
        "individualTransferResults": results,
    });
    let path = format!("/bulkTransfers/{id}");
    payee_put(&sim, Stage::Bulk, &path, &payee, payer, body).await;
}

/// The payee's answer to a lookup: the party, as its FSP knows it.
async fn answer_party(sim: Arc<Sim>, payee: String, payer: String, id_type: String, party: String) {
    let body = json!({"party": {
        "partyIdInfo": {"partyIdType": id_type, "partyIdentifier": party, "fspId": payee},
        "name": "Bench Payee",
    }});
    let path = format!("/parties/{id_type}/{party}");
    payee_put(&sim, Stage::Parties, &path, &payee, &payer, body).await;
}

/// The payee's quote: the amount asked for, no fees, and the ILP packet and
/// condition the payer will put in its prepare.
async fn answer_quote(sim: Arc<Sim>, payee: String, payer: String, quote: Value) {
    let id = quote["quoteId"].as_str().unwrap_or("");
    let amount = &quote["amount"];
    let party = quote["payee"]["partyIdInfo"]["partyIdentifier"]
        .as_str()
        .unwrap_or("");
    let transaction = json!({
        "transactionId": quote["transactionId"],
        "quoteId": id,
        "payee": quote["payee"],
        "payer": quote["payer"],
        "amount": amount,
        "transactionType": quote["transactionType"],
    });
    let (packet, condition) = ilp_for(
        &payee,
        party,
        amount["amount"].as_str().unwrap_or("0"),
        &transaction,
    );
    let body = json!({
        "transferAmount": amount,
        "expiration": iso_in(expires_in_s()),
        "ilpPacket": packet,
        "condition": condition,
    });
    let path = format!("/quotes/{id}");
    payee_put(&sim, Stage::Quotes, &path, &payee, &payer, body).await;
}

impl Sim {
    /// `dfsp`'s request to the next node (round-robin), on one of its
    /// connections to that node.
    async fn send(
        &self,
        dfsp: &str,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes), String> {
        let node = self.next_node.fetch_add(1, Ordering::Relaxed) % self.fspiop.len();
        let url = format!("{}{path}", self.fspiop[node]);
        let _connection = self.connections.acquire(dfsp, node).await?;
        send(&self.client, method, &url, headers, body).await
    }
}

/// A payee's callback to the switch, counted by resource and outcome.
async fn payee_put(sim: &Sim, stage: Stage, path: &str, payee: &str, payer: &str, body: Value) {
    let date = rfc1123_now();
    let headers = [
        ("content-type", stage.media().0),
        ("date", date.as_str()),
        ("fspiop-source", payee),
        ("fspiop-destination", payer),
    ];
    let body = body.to_string().into_bytes();
    let result = sim
        .send(payee, hyper::Method::PUT, path, &headers, body)
        .await;
    let counters = &sim.record.counters;
    counters.payee_puts.fetch_add(1, Ordering::Relaxed);
    let problem = match result {
        Ok((200, _)) => return,
        Ok((status, body)) => http_reason(status, &body),
        Err(e) => e,
    };
    counters.payee_put_errors.fetch_add(1, Ordering::Relaxed);
    Record::bump(
        &sim.record.payee_errors_by,
        format!("{}: {problem}", stage.name()),
    );
}

/// FSPIOP DateTime `seconds` from now.
fn iso_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
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

// ------------------------------------------------------- the payer's requests

struct Prepare {
    id: String,
    body: Vec<u8>,
}

/// ILP v1 packet to the payee's party, carrying the transaction, and its condition.
fn ilp_for(payee: &str, party: &str, amount: &str, transaction: &Value) -> (String, String) {
    let data = ilp::b64url_encode(transaction.to_string().as_bytes());
    let address = format!("g.{payee}.msisdn.{party}");
    let packet = ilp::encode_v1(
        switch_tests::dfsp::ilp_amount(amount),
        &address,
        data.as_bytes(),
    );
    let condition = ilp::condition_for(SECRET, &packet);
    (packet, condition)
}

fn prepare_body(
    id: &str,
    payer: &str,
    payee: &str,
    amount: &Value,
    packet: &str,
    condition: &str,
) -> Vec<u8> {
    let body = json!({
        "transferId": id,
        "payerFsp": payer,
        "payeeFsp": payee,
        "amount": amount,
        "ilpPacket": packet,
        "condition": condition,
        "expiration": iso_in(expires_in_s()),
    });
    body.to_string().into_bytes()
}

/// The ILP packet and condition of a transaction the payer makes up itself
/// (transfers tier, no quote).
fn made_up_ilp(payer: &str, payee: &str, amount: &Value) -> (String, String) {
    let transaction = json!({
        "transactionId": uuid::Uuid::new_v4().to_string(),
        "quoteId": uuid::Uuid::new_v4().to_string(),
        "payee": {"partyIdInfo": {"partyIdType": PARTY_ID_TYPE, "partyIdentifier": switch_tests::dfsp::PAYEE_MSISDN, "fspId": payee}},
        "payer": {"partyIdInfo": {"partyIdType": PARTY_ID_TYPE, "partyIdentifier": switch_tests::dfsp::PAYER_MSISDN, "fspId": payer}},
        "amount": amount,
        "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
    });
    ilp_for(
        payee,
        switch_tests::dfsp::PAYEE_MSISDN,
        amount["amount"].as_str().unwrap_or("0"),
        &transaction,
    )
}

/// The transfers tier's prepare: the payer makes up the transaction itself.
fn prepare(id: &str, payer: &str, payee: &str, amount: &str) -> Prepare {
    let amount = json!({"amount": amount, "currency": CURRENCY});
    let (packet, condition) = made_up_ilp(payer, payee, &amount);
    Prepare {
        id: id.to_string(),
        body: prepare_body(id, payer, payee, &amount, &packet, &condition),
    }
}

/// `--bulk`: a bulk of `lines` transfers, each with its own transaction,
/// ILP packet and condition, as `tests/tests/bulk.rs` builds them.
fn bulk_prepare(
    id: &str,
    payer: &str,
    payee: &str,
    amount: &str,
    lines: usize,
    ids: Ids,
) -> Prepare {
    let amount = json!({"amount": amount, "currency": CURRENCY});
    let individual: Vec<Value> = (0..lines.min(BULK_LINES_MAX))
        .map(|_| {
            let (packet, condition) = made_up_ilp(payer, payee, &amount);
            json!({
                "transferId": ids.next(),
                "transferAmount": amount,
                "ilpPacket": packet,
                "condition": condition,
            })
        })
        .collect();
    let body = json!({
        "bulkTransferId": id,
        "bulkQuoteId": uuid::Uuid::new_v4().to_string(),
        "payerFsp": payer,
        "payeeFsp": payee,
        "individualTransfers": individual,
        "expiration": iso_in(expires_in_s()),
    });
    Prepare {
        id: id.to_string(),
        body: body.to_string().into_bytes(),
    }
}

/// One request of a payer for one stage of a transaction.
struct Ask {
    stage: Stage,
    /// The transaction.
    id: String,
    method: hyper::Method,
    path: String,
    payer: String,
    /// FSPIOP-Destination (none on GET /parties: the switch asks its oracle).
    payee: Option<String>,
    body: Vec<u8>,
}

/// Sends a payer's request. Anything but 202 ends the transaction as
/// refused: it will get no callback.
async fn payer_request(sim: &Sim, ask: Ask) {
    let record = &sim.record;
    let i = ask.stage.index();
    record.counters.stage_sent[i].fetch_add(1, Ordering::Relaxed);
    let (content_type, accept) = ask.stage.media();
    let date = rfc1123_now();
    let mut headers = vec![
        ("content-type", content_type),
        ("accept", accept),
        ("date", date.as_str()),
        ("fspiop-source", ask.payer.as_str()),
    ];
    if let Some(payee) = &ask.payee {
        headers.push(("fspiop-destination", payee.as_str()));
    }
    let answer = sim
        .send(&ask.payer, ask.method, &ask.path, &headers, ask.body)
        .await;
    let reason = match answer {
        Ok((202, _)) => {
            record.counters.stage_accepted[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok((status, body)) => http_reason(status, &body),
        Err(e) => format!("send error: {e}"),
    };
    // Unless a callback raced the answer and already took it.
    if record.finish(&ask.id).is_some() {
        record.counters.refused.fetch_add(1, Ordering::Relaxed);
        record.counters.stage_refused[i].fetch_add(1, Ordering::Relaxed);
        Record::bump_stage(&record.refused_by, ask.stage, reason);
    }
}

async fn send_prepare(sim: Arc<Sim>, payer: String, payee: String, p: Prepare) {
    let ask = Ask {
        stage: Stage::Transfers,
        id: p.id,
        method: hyper::Method::POST,
        path: "/transfers".into(),
        payer,
        payee: Some(payee),
        body: p.body,
    };
    payer_request(&sim, ask).await;
}

/// `--bulk`: builds the bulk here rather than in the scheduler, so that a
/// large bulk does not hold up the 1 ms tick.
async fn send_bulk(sim: Arc<Sim>, payer: String, payee: String, id: String, amount: String) {
    let p = bulk_prepare(
        &id,
        &payer,
        &payee,
        &amount,
        sim.bulk_lines as usize,
        sim.ids,
    );
    let ask = Ask {
        stage: Stage::Bulk,
        id: p.id,
        method: hyper::Method::POST,
        path: "/bulkTransfers".into(),
        payer,
        payee: Some(payee),
        body: p.body,
    };
    payer_request(&sim, ask).await;
}

/// e2e: who serves this party?
async fn send_lookup(sim: Arc<Sim>, payer: String, party: String, id: String) {
    let ask = Ask {
        stage: Stage::Parties,
        id,
        method: hyper::Method::GET,
        path: format!("/parties/{PARTY_ID_TYPE}/{party}"),
        payer,
        payee: None,
        body: Vec::new(),
    };
    payer_request(&sim, ask).await;
}

/// e2e: the quote request to the party's FSP. The quote id is the transfer
/// id, so that the quote's answer leads to the transaction.
async fn send_quote(sim: Arc<Sim>, payer: String, payee: String, party: String, id: String) {
    let body = json!({
        "quoteId": id,
        "transactionId": uuid::Uuid::new_v4().to_string(),
        "payee": {"partyIdInfo": {"partyIdType": PARTY_ID_TYPE, "partyIdentifier": party, "fspId": payee}},
        "payer": {"partyIdInfo": {"partyIdType": PARTY_ID_TYPE, "partyIdentifier": switch_tests::dfsp::PAYER_MSISDN, "fspId": payer}},
        "amountType": "SEND",
        "amount": {"amount": sim.amount, "currency": CURRENCY},
        "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
    });
    let ask = Ask {
        stage: Stage::Quotes,
        id,
        method: hyper::Method::POST,
        path: "/quotes".into(),
        payer,
        payee: Some(payee),
        body: body.to_string().into_bytes(),
    };
    payer_request(&sim, ask).await;
}

/// Transactions due by `t` seconds: the integral of the rate (linear ramp, then flat).
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

/// Who pays whom, transaction by transaction. Without skew the payers take
/// turns; with it the first payer takes `skew` percent of the transactions
/// (spread evenly through the run, so that its position is under load the
/// whole time) and the others take turns with the rest. Each payer cycles
/// over the payees, and over each payee's parties.
struct Picker {
    skew: f64,
    k: u64,
    by_payer: Vec<u64>,
    payees: usize,
}

struct Pick {
    payer: usize,
    payee: usize,
    /// How many transactions this payer had before this one.
    round: u64,
}

impl Picker {
    fn new(skew: f64, payers: usize, payees: usize) -> Picker {
        Picker {
            skew,
            k: 0,
            by_payer: vec![0; payers.max(1)],
            payees: payees.max(1),
        }
    }

    fn next(&mut self) -> Pick {
        let k = self.k;
        self.k += 1;
        let payers = self.by_payer.len() as u64;
        let payer = if self.skew <= 0.0 || payers == 1 {
            k % payers
        } else {
            // The first payer's transactions among the first k and k + 1.
            let share = self.skew / 100.0;
            let before = (k as f64 * share).floor() as u64;
            let after = ((k + 1) as f64 * share).floor() as u64;
            if after > before {
                0
            } else {
                1 + (k - before) % (payers - 1)
            }
        } as usize;
        let round = self.by_payer[payer];
        self.by_payer[payer] += 1;
        Pick {
            payer,
            payee: ((round + payer as u64) % self.payees as u64) as usize,
            round,
        }
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
    tier: Tier,
    bulk: bool,
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
        for (kind, value) in endpoints(&base, tier, bulk) {
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

/// The callback endpoints of a DFSP whose simulator path is `base`. The e2e
/// tier adds lookup (payees are asked, payers answered), quotes (a base URL:
/// the switch appends the path) and batch registration answers; `--bulk`
/// adds the bulk transfer endpoints (the bulk's id is `{{id}}`).
fn endpoints(base: &str, tier: Tier, bulk: bool) -> Vec<(&'static str, String)> {
    let party = format!("{base}/parties/{{{{partyIdType}}}}/{{{{partyIdentifier}}}}");
    let batch = format!("{base}/participants/{{{{requestId}}}}");
    let mut list = vec![
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
    ];
    if tier == Tier::E2e {
        list.extend([
            ("FSPIOP_CALLBACK_URL_PARTIES_GET", party.clone()),
            ("FSPIOP_CALLBACK_URL_PARTIES_PUT", party.clone()),
            (
                "FSPIOP_CALLBACK_URL_PARTIES_PUT_ERROR",
                format!("{party}/error"),
            ),
            ("FSPIOP_CALLBACK_URL_QUOTES", base.to_string()),
            ("FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT", batch.clone()),
            (
                "FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT_ERROR",
                format!("{batch}/error"),
            ),
        ]);
    }
    if bulk {
        list.extend([
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_POST",
                format!("{base}/bulkTransfers"),
            ),
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_PUT",
                format!("{base}/bulkTransfers/{{{{id}}}}"),
            ),
            (
                "FSPIOP_CALLBACK_URL_BULK_TRANSFER_ERROR",
                format!("{base}/bulkTransfers/{{{{id}}}}/error"),
            ),
        ]);
    }
    list
}

/// e2e: the parties of each payee, unique to the run (a running switch may
/// know other runs' parties): MSISDN-like digits, run tag, payee, number.
fn party_pools(run_tag: &str, payees: usize, per_payee: usize) -> Vec<Vec<String>> {
    let run = u32::from_str_radix(run_tag, 16).unwrap_or(0);
    (0..payees)
        .map(|payee| {
            (0..per_payee)
                .map(|n| format!("{run:08}{payee:03}{n:04}"))
                .collect()
        })
        .collect()
}

/// e2e: each payee registers its parties with the switch's oracle, as a
/// DFSP does: one batch `POST /participants`, answered by callback.
async fn register_parties(sim: &Sim, pools: &[Vec<String>]) -> anyhow::Result<()> {
    for (payee, parties) in sim.payees.iter().zip(pools) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let list: Vec<Value> = parties
            .iter()
            .map(|p| json!({"partyIdType": PARTY_ID_TYPE, "partyIdentifier": p, "fspId": payee}))
            .collect();
        let body = json!({"requestId": request_id, "currency": CURRENCY, "partyList": list});
        let date = rfc1123_now();
        let headers = [
            ("content-type", PARTICIPANTS_CT),
            ("accept", PARTICIPANTS_ACCEPT),
            ("date", date.as_str()),
            ("fspiop-source", payee.as_str()),
        ];
        let body = body.to_string().into_bytes();
        let (status, answer) = sim
            .send(payee, hyper::Method::POST, "/participants", &headers, body)
            .await
            .map_err(|e| anyhow::anyhow!("register parties of {payee}: {e}"))?;
        anyhow::ensure!(
            status == 202,
            "register parties of {payee}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let result = registration_answer(sim, &request_id).await?;
        // Every party registered: one result each, none with an error.
        let entries = result["partyList"].as_array().cloned().unwrap_or_default();
        let registered = entries
            .iter()
            .filter(|e| e.get("errorInformation").is_none())
            .count();
        anyhow::ensure!(
            entries.len() == parties.len() && registered == parties.len(),
            "register parties of {payee}: {result}"
        );
    }
    Ok(())
}

/// The switch's callback to a batch registration, within REGISTRATION_TIMEOUT.
async fn registration_answer(sim: &Sim, request_id: &str) -> anyhow::Result<Value> {
    let poll = Duration::from_millis(20);
    let polls = REGISTRATION_TIMEOUT.as_millis() / poll.as_millis();
    for _ in 0..polls {
        if let Some(answer) = lock(&sim.registrations).remove(request_id) {
            return Ok(answer);
        }
        tokio::time::sleep(poll).await;
    }
    anyhow::bail!("no answer to batch registration {request_id} within {REGISTRATION_TIMEOUT:?}")
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
    EXPIRES_IN_S.store(args.expires_in_s, Ordering::Relaxed);
    // Before any thread or child exists, so that all of them are limited.
    let limit = args.cpu_limit_cores.map(CpuLimit::apply).transpose()?;
    let runtime = generator_runtime(args.generator_threads)?;
    let code = runtime.block_on(run(args, limit.as_ref()));
    runtime.shutdown_timeout(Duration::from_secs(2));
    // `exit` skips destructors: the group is removed here.
    drop(limit);
    std::process::exit(code?);
}

fn check_args(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.steady_s > 0.0 && args.ramp_s >= 0.0,
        "--steady-s must be positive"
    );
    anyhow::ensure!(args.dfsps >= 2, "--dfsps must be at least 2");
    anyhow::ensure!(
        args.connections_per_dfsp >= 1
            && args.dfsps.saturating_mul(args.connections_per_dfsp) <= CONNECTIONS_MAX,
        "--connections-per-dfsp must be at least 1, and --dfsps times it at most {CONNECTIONS_MAX}"
    );
    anyhow::ensure!(
        (1..=86_400).contains(&args.expires_in_s),
        "--expires-in-s must be between 1 and 86400"
    );
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.skew),
        "--skew is a percentage (0 to 100)"
    );
    anyhow::ensure!(
        (1..=PARTIES_PER_PAYEE_MAX).contains(&args.parties_per_payee),
        "--parties-per-payee must be 1 to {PARTIES_PER_PAYEE_MAX}"
    );
    anyhow::ensure!(
        args.bulk <= BULK_LINES_MAX,
        "--bulk must be 0 (off) to {BULK_LINES_MAX} lines"
    );
    // A bulk is fulfilled for all lines at once: no lookups, no RESERVED.
    anyhow::ensure!(
        args.bulk == 0 || (args.tier == Tier::Transfers && !args.patch),
        "--bulk is for the transfers tier, without --patch"
    );
    if let Some(pid) = args.switch_pid {
        anyhow::ensure!(
            args.fspiop_url.is_some(),
            "--switch-pid is for a running switch (--fspiop-url); the embedded one is known"
        );
        anyhow::ensure!(
            rss_kib(pid).is_some(),
            "--switch-pid {pid}: no VmRSS in /proc/{pid}/status"
        );
    }
    Ok(())
}

async fn run(args: Args, limit: Option<&CpuLimit>) -> anyhow::Result<i32> {
    check_args(&args)?;
    let bulk = args.bulk > 0;
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
            f.split(',')
                .map(|url| url.trim().trim_end_matches('/').to_string())
                .filter(|url| !url.is_empty())
                .collect::<Vec<_>>(),
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
            (vec![f], o, Some(url), args.backend.clone())
        }
        _ => anyhow::bail!("give both --fspiop-url and --operator-url, or neither"),
    };
    anyhow::ensure!(!fspiop.is_empty(), "--fspiop-url names no node");
    for url in fspiop.iter().chain([&operator]) {
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

    let pools = match args.tier {
        Tier::E2e => party_pools(&run_tag, payees.len(), args.parties_per_payee),
        Tier::Transfers => Vec::new(),
    };
    // Memory (and CPU) of the switch: the embedded one, or the one named.
    let switch_pid = embedded
        .as_ref()
        .map(|e: &Embedded| e.child.id())
        .or(args.switch_pid);

    let record = Arc::new(Record {
        start: Instant::now(),
        counters: Counters::default(),
        in_flight: Mutex::new(HashMap::with_capacity(args.max_in_flight * 2)),
        lookups: Mutex::new(HashMap::new()),
        done: Mutex::new(Vec::new()),
        failed_by: Mutex::new(BTreeMap::new()),
        refused_by: Mutex::new(BTreeMap::new()),
        payee_errors_by: Mutex::new(BTreeMap::new()),
        patches_by_state: Mutex::new(BTreeMap::new()),
        lines_failed_by: Mutex::new(BTreeMap::new()),
        memory: Memory::new(switch_pid),
    });
    let sim = Arc::new(Sim {
        record: record.clone(),
        client: http_client(args.dfsps * args.connections_per_dfsp),
        fspiop: fspiop.clone(),
        next_node: AtomicUsize::new(0),
        connections: Connections::new(
            payers.iter().chain(payees.iter()),
            fspiop.len(),
            args.connections_per_dfsp,
        ),
        payees: payees.clone(),
        payers: payers.clone(),
        runtime: tokio::runtime::Handle::current(),
        patch: args.patch,
        amount: args.amount.clone(),
        bulk_lines: args.bulk as u64,
        ids: args.ids,
        registrations: Mutex::new(HashMap::new()),
    });
    let (sim_port, sim_server) = start_simulator(sim.clone());
    let all: Vec<String> = payers.iter().chain(payees.iter()).cloned().collect();
    eprintln!(
        "switch fspiop {} operator {operator} ({backend_name}); provisioning {} DFSPs",
        fspiop.join(","),
        all.len()
    );
    provision(
        &client,
        &operator,
        &all,
        &format!("http://127.0.0.1:{sim_port}"),
        args.tier,
        bulk,
    )
    .await?;
    if args.tier == Tier::E2e {
        register_parties(&sim, &pools).await?;
        eprintln!(
            "registered {} parties per payee with the oracle",
            args.parties_per_payee
        );
    }

    // The run: timing is relative to the scheduler start, not `record.start`.
    let offset = record.now_s();
    let total = args.ramp_s + args.steady_s;
    eprintln!(
        "running tier {}: {} tr/s, ramp {} s, steady {} s, cap {} in flight, skew {}%, patch {}, bulk {}, ids {}",
        args.tier.name(),
        args.rate,
        args.ramp_s,
        args.steady_s,
        args.max_in_flight,
        args.skew,
        args.patch,
        args.bulk,
        args.ids.name()
    );
    // The switch's memory as the run starts: the first sample.
    record.memory.sample(0.0);
    let progress = tokio::spawn(report_progress(
        record.clone(),
        args.rate,
        args.ramp_s,
        total,
        offset,
        bulk,
    ));

    // The scheduler: open model, bounded by time and count.
    let mut issued: u64 = 0;
    let mut picker = Picker::new(args.skew, payers.len(), payees.len());
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let max_ticks = (total / TICK.as_secs_f64()) as u64 * 4 + 1000;
    let amount = args.amount.clone();
    let db_pids = database_pids();
    let mut cpu_at_steady: Option<CpuSample> = None;
    let mut cpu_at_end: Option<CpuSample> = None;
    for _ in 0..max_ticks {
        interval.tick().await;
        let t = record.now_s() - offset;
        let due = due_by(t, args.rate, args.ramp_s, total).floor() as u64;
        if cpu_at_steady.is_none() && t >= args.ramp_s {
            cpu_at_steady = Some(cpu_sample(switch_pid, &db_pids, limit));
        }
        if t >= total {
            cpu_at_end = Some(cpu_sample(switch_pid, &db_pids, limit));
        }
        while issued < due {
            issued += 1;
            record.counters.sent.fetch_add(1, Ordering::Relaxed);
            let pick = picker.next();
            let id = args.ids.next();
            if !record.admit(&id, args.tier.first_stage(bulk), args.max_in_flight) {
                record.counters.dropped_cap.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let payer = payers[pick.payer].clone();
            match args.tier {
                Tier::Transfers if bulk => {
                    let payee = payees[pick.payee].clone();
                    tokio::spawn(send_bulk(sim.clone(), payer, payee, id, amount.clone()));
                }
                Tier::Transfers => {
                    let payee = payees[pick.payee].clone();
                    let p = prepare(&id, &payer, &payee, &amount);
                    tokio::spawn(send_prepare(sim.clone(), payer, payee, p));
                }
                Tier::E2e => {
                    // Each (payer, payee) pair walks through the payee's parties.
                    let pool = &pools[pick.payee];
                    let n = (pick.round / payees.len() as u64) % pool.len() as u64;
                    let party = pool[n as usize].clone();
                    record.expect_lookup(&payer, &party, &id);
                    tokio::spawn(send_lookup(sim.clone(), payer, party, id));
                }
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
    let stages = stage_counts(c, args.tier.stages(bulk));
    let unanswered = |stage: &str| stages[stage]["unanswered"].as_u64().unwrap_or(0);
    let requests_unanswered: u64 = args
        .tier
        .stages(bulk)
        .iter()
        .map(|s| unanswered(s.name()))
        .sum();
    // The request that prepares: POST /transfers, or POST /bulkTransfers.
    let prepare_stage = if bulk { Stage::Bulk } else { Stage::Transfers };
    let failed_by = lock(&record.failed_by).clone();
    let refused_by = lock(&record.refused_by).clone();
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
    let in_window: Vec<&Done> = done
        .iter()
        .filter(|d| {
            let s = d.done_s - offset;
            s >= steady_from && s < steady_to
        })
        .collect();
    let completed_in_window = in_window.len() as u64;
    let transfers_in_window: u64 = in_window.iter().map(|d| d.transfers).sum();
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
            "connections_per_dfsp": args.connections_per_dfsp,
            "switch_env": args.switch_env, "cpu_limit_cores": args.cpu_limit_cores,
            "generator_threads": args.generator_threads,
            "tier": args.tier.name(), "skew_percent": args.skew, "patch": args.patch,
            "bulk": args.bulk, "ids": args.ids.name(), "switch_pid": switch_pid,
            "parties_per_payee": (args.tier == Tier::E2e).then_some(args.parties_per_payee),
            "transactions_by_payer": payers.iter().cloned().zip(picker.by_payer.iter().copied()).collect::<BTreeMap<String, u64>>(),
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
            "accepted_202": c.stage_accepted[args.tier.first_stage(bulk).index()].load(Ordering::Relaxed),
            "committed": committed,
            "failed": c.failed.load(Ordering::Relaxed),
            "failed_by_code": by_code(&failed_by),
            "failed_by_stage": failed_by,
            "dropped_in_flight_cap": c.dropped_cap.load(Ordering::Relaxed),
            "refused_by_switch": c.refused.load(Ordering::Relaxed),
            "refused_by": by_code(&refused_by),
            "refused_by_stage": refused_by,
            "stages": stages,
            "prepare_unanswered": unanswered(prepare_stage.name()),
            "requests_unanswered": requests_unanswered,
            "late_after_window": late,
            "connections": sim.connections.report(),
            "unfinished": unfinished,
            "unfinished_by_stage": unfinished_by_stage(&record),
            "payee_puts": c.payee_puts.load(Ordering::Relaxed),
            "payee_put_errors": c.payee_put_errors.load(Ordering::Relaxed),
            "payee_put_errors_by": *lock(&record.payee_errors_by),
            "payee_notifications": c.payee_notifications.load(Ordering::Relaxed),
            "payee_patches": c.payee_patches.load(Ordering::Relaxed),
            "payee_patches_by_state": *lock(&record.patches_by_state),
            "unknown_callbacks": c.unknown_callbacks.load(Ordering::Relaxed),
        },
    });
    let window = Window {
        offered: offered_in_window,
        achieved,
        steady_s: args.steady_s,
        transfers: transfers_in_window,
    };
    result["bulk"] = bulk_report(&record, args.bulk, &window);
    result["memory"] = memory_report(
        &record.memory,
        steady_from,
        steady_to,
        completed_in_window,
        transfers_in_window,
    );
    sim_server.stop(false).await;

    // The books.
    let mut books_ok = true;
    let mut books = json!({"checked": false});
    if let Some(url) = db_url {
        let clean_stop = embedded.take().map(Embedded::stop);
        // This run's DFSPs only: a running switch may hold earlier runs.
        let count_sql = format!("SELECT COUNT(*) FROM transfer_state_change tsc JOIN transfer t ON t.transfer_seq = tsc.transfer_seq WHERE tsc.state = 'COMMITTED' AND t.payer_fsp LIKE 'bench{run_tag}%'");
        let db_committed: Option<u64> = match &db {
            Some(db) => db
                .rows(&count_sql)
                .first()
                .and_then(|r| r.first()?.parse().ok()),
            None => count_rows(&url, &count_sql).await,
        };
        let check_started = Instant::now();
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
        let check_seconds = check_started.elapsed().as_secs_f64();
        // Transfers the payers heard committed: with --bulk, the committed
        // lines (N x committed bulks, plus those of bulks with failed lines).
        let heard = match bulk {
            true => c.lines_committed.load(Ordering::Relaxed),
            false => committed,
        };
        // Transfers whose outcome the generator never heard (still awaiting
        // their callback at the end, or their prepare got no HTTP answer)
        // may have committed after all; every transfer it heard committed
        // must be in the database.
        let lines = if bulk { args.bulk as u64 } else { 1 };
        let outcome_unknown = (unfinished + unanswered(prepare_stage.name())) * lines;
        let matches = db_committed.is_some_and(|d| d >= heard && d <= heard + outcome_unknown);
        books_ok = matches && check_ok;
        books = json!({
            "checked": true,
            "run_tag": run_tag,
            "db_committed": db_committed,
            "generator_committed": heard,
            "generator_committed_bulks": bulk.then_some(committed),
            "lines_per_bulk_times_committed_bulks": bulk.then_some(committed * args.bulk as u64),
            "counts_match": matches,
            "outcome_unknown_to_generator": outcome_unknown,
            "committed_without_callback_in_time": db_committed.map(|d| d as i64 - heard as i64),
            "ledger_check_passed": check_ok,
            "ledger_check_s": check_seconds,
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
        // ms_per_commit is per transaction (a bulk with --bulk), ms_per_transfer per line.
        let per_line =
            |cpu: f64| (transfers_in_window > 0).then(|| cpu * 1000.0 / transfers_in_window as f64);
        let piece = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => {
                json!({"cores": (y - x) / wall, "ms_per_commit": per_transfer(y - x), "ms_per_transfer": per_line(y - x)})
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
            "switch_threads": thread_report(&a.switch_threads, &b.switch_threads, wall, transfers_in_window),
            "generator_threads": thread_report(&a.generator_threads, &b.generator_threads, wall, transfers_in_window),
            "cpu_limit": limit_report(limit, (a.throttling, b.throttling), wall, a.switch_limited),
        });
    }

    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    let n = |key: &str| result["counts"][key].as_u64().unwrap_or(0);
    eprintln!(
        "tier {} skew {}% patch {}{}: offered {:.0}/s achieved {:.0}/s{}  p50 {} p95 {} p99 {} max {} ms  committed {} failed {} dropped {} refused {} unanswered {} unfinished {}{}{}  {}  books {}",
        args.tier.name(),
        args.skew,
        if args.patch { "on" } else { "off" },
        if bulk { format!(" bulk {}", args.bulk) } else { String::new() },
        offered_in_window,
        achieved,
        bulk_rates_summary(&result["bulk"]),
        fmt_ms(lat(50.0)),
        fmt_ms(lat(95.0)),
        fmt_ms(lat(99.0)),
        fmt_ms(steady_latencies.last().map(|v| *v as f64 / 1000.0)),
        n("committed"),
        n("failed"),
        n("dropped_in_flight_cap"),
        n("refused_by_switch"),
        n("requests_unanswered"),
        n("unfinished"),
        if args.patch {
            format!("  payee PATCHes {}", n("payee_patches"))
        } else {
            String::new()
        },
        bulk_lines_summary(&result["bulk"]),
        memory_summary(&result["memory"]),
        if result["books"]["checked"] == true {
            if books_ok { "OK" } else { "DO NOT BALANCE" }
        } else {
            "not checked (no --db-url)"
        }
    );
    let connections = &result["counts"]["connections"];
    if connections["requests_waited"].as_u64().unwrap_or(0) > 0 {
        eprintln!(
            "requests that waited for one of their DFSP's {} connections to a node: {} (longest wait {} ms)",
            connections["per_dfsp_per_node"], connections["requests_waited"], connections["wait_ms_max"]
        );
    }
    if let Some(summary) = limit_summary(&result["cpu_steady"]["cpu_limit"]) {
        eprintln!("{summary}");
    }
    for (piece, key) in [
        ("switch", "switch_threads"),
        ("generator", "generator_threads"),
    ] {
        let threads = threads_summary(&result["cpu_steady"][key]);
        if !threads.is_empty() {
            eprintln!("steady window, by thread of the {piece}:{threads}");
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n")?;
    }
    drop(embedded);
    drop(db);
    Ok(if books_ok { 0 } else { 2 })
}

/// Once a second until aborted (at most through the grace period): the
/// switch's RSS sample, and a progress line on stderr.
async fn report_progress(
    record: Arc<Record>,
    rate: f64,
    ramp: f64,
    total: f64,
    offset: f64,
    bulk: bool,
) {
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let max_ticks = (total + GRACE.as_secs_f64() + 5.0) as u64 + 1;
    for second in 1..=max_ticks {
        tokio::time::sleep_until(
            tokio::time::Instant::from_std(record.start)
                + Duration::from_secs_f64(offset + second as f64),
        )
        .await;
        let rss = record.memory.sample(second as f64);
        let c = &record.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        let committed = c.committed.load(Ordering::Relaxed);
        let lines = c.lines_committed.load(Ordering::Relaxed);
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
        let transfers = match bulk {
            true => format!("  transfers {:>6}/s", lines - last.3),
            false => String::new(),
        };
        eprintln!(
            "[{second:>3}s] target {target:>7.0}/s  offered {:>6}/s  committed {:>6}/s{transfers}  in flight {:>6}  errors {:>6} (+{})  rss {} MiB",
            sent - last.0,
            committed - last.1,
            lock(&record.in_flight).len(),
            errors,
            errors - last.2,
            fmt_mib(rss.map(mib)),
        );
        last = (sent, committed, errors, lines);
    }
}

/// The steady window's rates, for the bulk report.
struct Window {
    /// Transactions offered and completed per second.
    offered: f64,
    achieved: f64,
    steady_s: f64,
    /// Transfers committed by the transactions completed in the window.
    transfers: u64,
}

/// `--bulk`: rates in bulks and in transfers, and every line's outcome as
/// the payers heard it (null without `--bulk`).
fn bulk_report(record: &Record, lines: usize, window: &Window) -> Value {
    if lines == 0 {
        return Value::Null;
    }
    let c = &record.counters;
    json!({
        "lines_per_bulk": lines,
        "offered_bulks_per_s": window.offered,
        "achieved_bulks_per_s": window.achieved,
        "offered_transfers_per_s": window.offered * lines as f64,
        "achieved_transfers_per_s": window.transfers as f64 / window.steady_s,
        "bulks_committed": c.committed.load(Ordering::Relaxed),
        "bulks_failed": c.failed.load(Ordering::Relaxed),
        "lines": {
            "committed": c.lines_committed.load(Ordering::Relaxed),
            "failed": c.lines_failed.load(Ordering::Relaxed),
            "failed_by_code": *lock(&record.lines_failed_by),
            "missing_from_results": c.lines_missing.load(Ordering::Relaxed),
        },
    })
}

/// `--bulk`, for the final line: the rates in transfers (the line's own
/// rates are bulks).
fn bulk_rates_summary(bulk: &Value) -> String {
    if bulk.is_null() {
        return String::new();
    }
    let rate = |key: &str| bulk[key].as_f64().unwrap_or(0.0);
    format!(
        " bulks ({:.0}/s offered, {:.0}/s achieved transfers)",
        rate("offered_transfers_per_s"),
        rate("achieved_transfers_per_s")
    )
}

/// `--bulk`, for the final line: the lines' outcomes as the payers heard them.
fn bulk_lines_summary(bulk: &Value) -> String {
    if bulk.is_null() {
        return String::new();
    }
    let n = |key: &str| bulk["lines"][key].as_u64().unwrap_or(0);
    format!(
        "  lines committed {} failed {} missing {}",
        n("committed"),
        n("failed"),
        n("missing_from_results")
    )
}

/// The switch's memory, for the final line.
fn memory_summary(memory: &Value) -> String {
    if memory["sampled"] != true {
        return "rss not sampled (switch pid unknown: --switch-pid)".into();
    }
    let v = |key: &str| memory[key].as_f64();
    format!(
        "rss steady {} -> {} MiB (max {}, {} MiB/min, {} MiB per 1000 tx)",
        fmt_mib(v("steady_start_mib")),
        fmt_mib(v("steady_end_mib")),
        fmt_mib(v("max_mib")),
        v("slope_mib_per_min")
            .map(|x| format!("{x:+.2}"))
            .unwrap_or_else(|| "-".into()),
        v("growth_mib_per_1000_transactions")
            .map(|x| format!("{x:+.3}"))
            .unwrap_or_else(|| "-".into()),
    )
}

/// Payer requests of the given stages: sent, answered 202, refused, neither.
fn stage_counts(c: &Counters, stages: &[Stage]) -> Value {
    let mut out = serde_json::Map::new();
    for stage in stages {
        let i = stage.index();
        let sent = c.stage_sent[i].load(Ordering::Relaxed);
        let accepted = c.stage_accepted[i].load(Ordering::Relaxed);
        let refused = c.stage_refused[i].load(Ordering::Relaxed);
        out.insert(
            stage.name().to_string(),
            json!({
                "sent": sent, "accepted_202": accepted, "refused": refused,
                "unanswered": sent.saturating_sub(accepted + refused),
            }),
        );
    }
    Value::Object(out)
}

/// Counts by stage summed over the stages.
fn by_code(by_stage: &ByStage) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (code, n) in by_stage.values().flatten() {
        *out.entry(code.clone()).or_insert(0) += n;
    }
    out
}

/// Transactions still awaited, by the request they wait on.
fn unfinished_by_stage(record: &Record) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for flight in lock(&record.in_flight).values() {
        *out.entry(flight.stage.name()).or_insert(0) += 1;
    }
    out
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

/// Threads of the switch read at most (the switch runs a dozen).
const THREADS_MAX: usize = 256;

/// Scheduler times of the threads that share a name, summed.
#[derive(Clone, Copy, Default)]
struct ThreadTimes {
    threads: u32,
    /// Seconds on a core.
    cpu_s: f64,
    /// Seconds runnable but waiting for a core (the run queue).
    waiting_s: f64,
    /// Times scheduled onto a core.
    slices: u64,
}

/// Scheduler times of a process's threads by thread name, from
/// /proc/{pid}/task/*/schedstat (Linux): on a machine whose cores are all
/// busy, how long each kind of thread waited for one beside how long it ran.
fn thread_times(pid: u32) -> BTreeMap<String, ThreadTimes> {
    let mut out: BTreeMap<String, ThreadTimes> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.filter_map(|t| t.ok()).take(THREADS_MAX) {
        let dir = task.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        let fields: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [cpu_ns, waiting_ns, slices] = fields[..] else {
            continue;
        };
        let entry = out.entry(name.trim().to_string()).or_default();
        entry.threads += 1;
        entry.cpu_s += cpu_ns as f64 / 1e9;
        entry.waiting_s += waiting_ns as f64 / 1e9;
        entry.slices += slices;
    }
    out
}

/// Per thread name, what the threads did between two samples.
fn thread_report(
    start: &BTreeMap<String, ThreadTimes>,
    end: &BTreeMap<String, ThreadTimes>,
    wall_s: f64,
    transfers: u64,
) -> Value {
    let per_transfer_ms = |s: f64| (transfers > 0).then(|| s * 1000.0 / transfers as f64);
    let rows: Vec<Value> = end
        .iter()
        .filter_map(|(name, b)| {
            let a = start.get(name).copied().unwrap_or_default();
            let cpu = b.cpu_s - a.cpu_s;
            let waiting = b.waiting_s - a.waiting_s;
            let slices = b.slices.saturating_sub(a.slices);
            (b.cpu_s > 0.0).then(|| {
                json!({
                    "name": name,
                    "threads": b.threads,
                    "cores": cpu / wall_s,
                    "waiting_for_a_core": waiting / wall_s,
                    "ms_per_transfer": per_transfer_ms(cpu),
                    "waiting_ms_per_transfer": per_transfer_ms(waiting),
                    "mean_wait_us": (slices > 0).then(|| waiting * 1e6 / slices as f64),
                    // Each run on a core follows a wake-up (a hand-off from
                    // another thread, I/O, a timer) or a preemption.
                    "runs_per_transfer": (transfers > 0).then(|| slices as f64 / transfers as f64),
                })
            })
        })
        .collect();
    Value::Array(rows)
}

/// One line per thread name that ran for at least 1% of a core: cores
/// used, cores' worth of waiting, and runs on a core per transfer.
fn threads_summary(report: &Value) -> String {
    let Some(rows) = report.as_array() else {
        return String::new();
    };
    rows.iter()
        .filter(|r| r["cores"].as_f64().unwrap_or(0.0) >= 0.01)
        .map(|r| {
            let number = |key: &str| {
                r[key]
                    .as_f64()
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into())
            };
            format!(
                "\n  {:<16} x{:<2} on a core {} cores ({} ms per transfer), waiting for a core {} cores ({} ms per transfer), {} runs per transfer",
                r["name"].as_str().unwrap_or("?"),
                r["threads"],
                number("cores"),
                number("ms_per_transfer"),
                number("waiting_for_a_core"),
                number("waiting_ms_per_transfer"),
                number("runs_per_transfer"),
            )
        })
        .collect()
}

/// CPU use of the pieces, sampled at the start and end of the steady window.
#[derive(Clone, Default)]
struct CpuSample {
    generator: f64,
    switch: Option<f64>,
    switch_threads: BTreeMap<String, ThreadTimes>,
    generator_threads: BTreeMap<String, ThreadTimes>,
    database: Option<f64>,
    machine_busy: f64,
    machine_total: f64,
    /// The `--cpu-limit-cores` group's counters, and whether the switch
    /// is in the group.
    throttling: Option<Throttling>,
    switch_limited: Option<bool>,
}

fn cpu_sample(switch_pid: Option<u32>, db_pids: &[u32], limit: Option<&CpuLimit>) -> CpuSample {
    let (machine_busy, machine_total) = machine_cpu_s().unwrap_or((0.0, 0.0));
    let database = if db_pids.is_empty() {
        None
    } else {
        Some(db_pids.iter().filter_map(|p| proc_cpu_s(*p)).sum())
    };
    CpuSample {
        generator: proc_cpu_s(std::process::id()).unwrap_or(0.0),
        switch: switch_pid.and_then(proc_cpu_s),
        switch_threads: switch_pid.map(thread_times).unwrap_or_default(),
        generator_threads: thread_times(std::process::id()),
        database,
        machine_busy,
        machine_total,
        throttling: limit.and_then(CpuLimit::throttling),
        switch_limited: limit.zip(switch_pid).map(|(l, pid)| l.holds(pid)),
    }
}

/// The CPU limit and how often it held the run back in the steady window
/// (null without `--cpu-limit-cores`).
fn limit_report(
    limit: Option<&CpuLimit>,
    (start, end): (Option<Throttling>, Option<Throttling>),
    wall_s: f64,
    switch_limited: Option<bool>,
) -> Value {
    let Some(limit) = limit else {
        return Value::Null;
    };
    let steady = start.zip(end).map(|(a, b)| {
        json!({
            "periods": b.periods.saturating_sub(a.periods),
            "throttled_periods": b.throttled_periods.saturating_sub(a.throttled_periods),
            "throttled_ms_per_s": (b.throttled_ms - a.throttled_ms) / wall_s,
        })
    });
    json!({
        "cores": limit.cores,
        "period_us": cpu_limit::PERIOD_US,
        "cgroup": limit.path().display().to_string(),
        // A switch started before the limit, or a running one, is not in it.
        "switch_in_group": switch_limited,
        "steady": steady,
    })
}

fn limit_summary(report: &Value) -> Option<String> {
    let steady = &report["steady"];
    Some(format!(
        "cpu limit {} cores (period {} us): throttled in {} of {} periods of the steady window, {:.1} ms held back per second",
        report["cores"].as_f64()?,
        report["period_us"],
        steady["throttled_periods"],
        steady["periods"],
        steady["throttled_ms_per_s"].as_f64().unwrap_or(0.0),
    ))
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn fmt_mib(v: Option<f64>) -> String {
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

#[cfg(test)]
mod tests {
    use super::Ids;

    /// `--ids v7` makes version-7 ids that sort in the order they were
    /// made (what keeps the switch's id index appending); `v4` random ones.
    #[test]
    fn v7_ids_are_time_ordered_and_v4_ids_random() {
        let v7: Vec<String> = (0..1000).map(|_| Ids::V7.next()).collect();
        assert!(v7.iter().all(|id| id.as_bytes()[14] == b'7'), "{v7:?}");
        assert!(v7.windows(2).all(|w| w[0] < w[1]), "not in order");
        let v4: Vec<String> = (0..1000).map(|_| Ids::V4.next()).collect();
        assert!(v4.iter().all(|id| id.as_bytes()[14] == b'4'), "{v4:?}");
        assert!(
            !v4.windows(2).all(|w| w[0] < w[1]),
            "v4 ids came out sorted"
        );
    }
}
