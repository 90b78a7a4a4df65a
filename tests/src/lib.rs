//! Test harness: a real `mojaswitch` process on free loopback ports, a scratch
//! database on SQLite or MariaDB, and a real HTTP client.
//!
//! Nothing is mocked: tests talk HTTP to the listening switch and read the
//! outcome back over HTTP (and, for restart checks, from the database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cpu_limit;
pub mod dfsp;
pub mod oracle;

/// How long a switch may take to answer its first health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a switch may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

/// MariaDB server URL (no database) used for scratch databases.
pub fn mysql_server_url() -> String {
    std::env::var("MOJASWITCH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://mojaswitch:mojaswitch@127.0.0.1:3306".to_string())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch database, removed when dropped.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    dir: PathBuf,
    mysql_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        let suffix = unique_suffix();
        let dir = std::env::temp_dir().join(format!("mojaswitch-test-{suffix}"));
        std::fs::create_dir_all(&dir).expect("create test dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("switch.db").display()),
                backend,
                dir,
                mysql_name: None,
            },
            Backend::MySql => {
                let name = format!("mjtest_{suffix}");
                mysql_admin(&format!("CREATE DATABASE {name}"));
                TestDb {
                    url: format!("{}/{name}", mysql_server_url()),
                    backend,
                    dir,
                    mysql_name: Some(name),
                }
            }
        }
    }

    /// Where the switch's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("switch.log")
    }

    /// A file in the database's scratch folder.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Rows of a query, every column read as text (for before/after comparisons).
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let url = self.url.clone();
        let sql = sql.to_string();
        on_own_runtime(async move {
            use sqlx::Row;
            sqlx::any::install_default_drivers();
            let url = if url.starts_with("sqlite") {
                format!("{url}?mode=ro")
            } else {
                url
            };
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .expect("connect to test database");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .expect("query test database");
            let text = rows
                .iter()
                .map(|row| {
                    (0..row.columns().len())
                        .map(|i| {
                            row.try_get::<i64, _>(i)
                                .map(|v| v.to_string())
                                .or_else(|_| row.try_get::<String, _>(i))
                                .or_else(|_| {
                                    row.try_get::<Option<String>, _>(i)
                                        .map(|v| v.unwrap_or_default())
                                })
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect()
                })
                .collect();
            pool.close().await;
            text
        })
    }
}

impl TestDb {
    /// MariaDB only: kills every connection open to this database (a
    /// dropped connection, as a network blip or a server restart does).
    pub fn kill_connections(&self) -> usize {
        let Some(name) = &self.mysql_name else {
            return 0;
        };
        let ids = self.rows(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{name}' AND ID <> CONNECTION_ID()"
        ));
        for id in &ids {
            // A connection may end by itself meanwhile; only the attempt counts.
            let _ = std::panic::catch_unwind(|| mysql_admin(&format!("KILL CONNECTION {}", id[0])));
        }
        ids.len()
    }

    /// The database's name on the MariaDB server.
    pub fn mysql_name(&self) -> Option<&str> {
        self.mysql_name.as_deref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.mysql_name {
            mysql_admin(&format!("DROP DATABASE IF EXISTS {name}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("database helper thread")
}

fn mysql_admin(statement: &str) {
    let statement = statement.to_string();
    on_own_runtime(async move {
        use sqlx::Connection;
        let url = mysql_server_url();
        let mut conn = sqlx::MySqlConnection::connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!("MariaDB at {url} is needed by this test (run scripts/test.sh): {e}")
            });
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .expect("admin statement");
    })
}

/// The `mojaswitch` binary of the same profile as this test, built once.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test exe");
            // target/<profile>/deps/<test> -> target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("profile dir")
                .to_path_buf();
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace")
                .to_path_buf();
            let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build.current_dir(&workspace).args([
                "build",
                "-p",
                "switch-http",
                "--bin",
                "mojaswitch",
            ]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building mojaswitch failed");
            profile_dir.join("mojaswitch")
        })
        .clone()
}

/// A free TCP port on loopback (released before the switch binds it),
/// never one this process handed out before: the kernel may give a just
/// released port again, and a switch once got the same port for FSPIOP and
/// the operator API (seen in CI).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const ATTEMPTS_MAX: usize = 100;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..ATTEMPTS_MAX {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no new free port in {ATTEMPTS_MAX} attempts");
}

/// A private `redis-server` (nothing kept on disk), killed when dropped.
/// The cluster tests restart one; each SDK adapter needs its own, because
/// the adapter's keys are server-wide.
pub struct RedisServer {
    pub port: u16,
    /// Where the server logs (shown when it fails to start).
    pub log: PathBuf,
    child: Option<Child>,
}

/// Longest wait for a new redis-server to answer PING.
const REDIS_START: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts a server on `port`, working in `dir`, and waits for PING.
    pub fn start(dir: &Path, name: &str, port: u16) -> RedisServer {
        let work = dir.join(format!("redis-{name}"));
        std::fs::create_dir_all(&work).expect("redis dir");
        let log = dir.join(format!("redis-{name}.log"));
        let file = std::fs::File::create(&log).expect("redis log");
        // scripts/test.sh says where it found (or installed) redis-server.
        let program =
            std::env::var("MOJASWITCH_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&program)
            .current_dir(&work)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} (scripts/test.sh installs it): {e}")
            });
        let mut server = RedisServer {
            port,
            log,
            child: Some(child),
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + REDIS_START;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server exited ({status}):\n{}",
                    read_or_empty(&self.log)
                );
            }
            if redis_ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} does not answer PING:\n{}",
                self.port,
                read_or_empty(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: every key is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// True when a Redis server on loopback `port` answers PING.
fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// A `mojaswitch` command with only the given configuration (the test's own
/// MOJASWITCH_* variables are not passed on).
pub fn command(db_url: &str) -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("MOJASWITCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("MOJASWITCH_DATABASE_URL", db_url);
    cmd
}

/// A running switch.
pub struct Switch {
    child: Option<Child>,
    pub fspiop_port: u16,
    pub operator_port: u16,
    pub db_url: String,
    log: PathBuf,
    pub client: reqwest::Client,
}

impl Switch {
    /// Starts a switch on `db` with extra `MOJASWITCH_*` settings and waits until it is healthy.
    pub async fn start(db: &TestDb, extra_env: &[(&str, &str)]) -> Switch {
        Switch::start_logged(db, &db.log_path(), extra_env).await
    }

    /// [`Switch::start`] with its own log file (several nodes on one database).
    pub async fn start_logged(db: &TestDb, log_path: &Path, extra_env: &[(&str, &str)]) -> Switch {
        let fspiop_port = free_port();
        let operator_port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("log file");
        let mut cmd = command(&db.url);
        cmd.env("MOJASWITCH_FSPIOP_PORT", fspiop_port.to_string())
            .env("MOJASWITCH_OPERATOR_PORT", operator_port.to_string())
            .env("MOJASWITCH_BIND_ADDRESS", "127.0.0.1")
            .env("MOJASWITCH_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("spawn mojaswitch");
        let mut switch = Switch {
            child: Some(child),
            fspiop_port,
            operator_port,
            db_url: db.url.clone(),
            log: log_path.to_path_buf(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        switch.wait_healthy().await;
        switch
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "mojaswitch exited during start ({status}):\n{}",
                        self.log_text()
                    );
                }
            }
            let health = self.client.get(self.operator("/health")).send().await;
            if matches!(&health, Ok(r) if r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mojaswitch not healthy in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn operator(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.operator_port)
    }

    pub fn fspiop(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.fspiop_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(&mut child, STOP_TIMEOUT)
    }

    /// Sends a signal (e.g. `STOP`, `CONT`) to the running switch.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Operator API: a request with a JSON body; answers (status, JSON or null).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.operator(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("operator request")).await
    }

    /// Operator API with a raw body (for malformed input).
    pub async fn call_raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request = self
            .client
            .request(method, self.operator(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        read(request.send().await.expect("operator request")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mojaswitch did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `mojaswitch check` on a database: (passed, printed report).
pub fn ledger_check(db_url: &str) -> (bool, String) {
    let output = command(db_url)
        .arg("check")
        .output()
        .expect("run mojaswitch check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Asserts that every ledger invariant holds.
pub fn assert_ledger_ok(db_url: &str) {
    let (ok, report) = ledger_check(db_url);
    assert!(ok, "ledger invariants violated:\n{report}");
    assert!(
        report.contains("positions_equal_sum_of_changes"),
        "check ran: {report}"
    );
}

/// A fresh UUID v4 as text.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The accounts of an onboarded DFSP in one currency.
#[derive(Debug, Clone, Copy)]
pub struct DfspAccounts {
    pub position: i64,
    pub settlement: i64,
}

impl Switch {
    /// Hub accounts and a default DEFERREDNET settlement model for `currency`
    /// (the operator's first steps, as the Testing Toolkit runs them).
    pub async fn onboard_hub(&self, currency: &str) {
        for kind in ["HUB_MULTILATERAL_SETTLEMENT", "HUB_RECONCILIATION"] {
            let (status, body) = self
                .post(
                    "/participants/Hub/accounts",
                    serde_json::json!({"type": kind, "currency": currency}),
                )
                .await;
            assert_eq!(status, 201, "hub account {kind}: {body}");
        }
        let (status, body) = self
            .post(
                "/settlementModels",
                serde_json::json!({
                    "name": format!("DEFERREDNET{currency}"),
                    "settlementGranularity": "NET",
                    "settlementInterchange": "MULTILATERAL",
                    "settlementDelay": "DEFERRED",
                    "requireLiquidityCheck": true,
                    "ledgerAccountType": "POSITION",
                    "settlementAccountType": "SETTLEMENT",
                    "autoPositionReset": true,
                    "currency": currency,
                }),
            )
            .await;
        assert_eq!(status, 201, "settlement model: {body}");
    }

    /// Participant, currency, net debit cap and funds in, as an operator onboards a DFSP.
    pub async fn onboard_dfsp(
        &self,
        name: &str,
        currency: &str,
        net_debit_cap: &str,
        funds_in: &str,
    ) -> DfspAccounts {
        let (status, body) = self
            .post(
                "/participants",
                serde_json::json!({"name": name, "currency": currency}),
            )
            .await;
        assert_eq!(status, 201, "create {name}: {body}");
        let (status, body) = self
            .post(
                &format!("/participants/{name}/initialPositionAndLimits"),
                serde_json::json!({"currency": currency, "limit": {"type": "NET_DEBIT_CAP", "value": exact_number(net_debit_cap)}, "initialPosition": 0}),
            )
            .await;
        assert_eq!(status, 201, "initial position of {name}: {body}");
        let accounts = self.accounts(name, currency).await;
        if funds_in != "0" {
            let (status, body) = self
                .funds(
                    name,
                    accounts.settlement,
                    "recordFundsIn",
                    &new_id(),
                    funds_in,
                    currency,
                )
                .await;
            assert_eq!(status, 202, "funds in for {name}: {body}");
        }
        accounts
    }

    /// The POSITION and SETTLEMENT account ids of a participant in a currency.
    pub async fn accounts(&self, name: &str, currency: &str) -> DfspAccounts {
        let (status, list) = self.get(&format!("/participants/{name}/accounts")).await;
        assert_eq!(status, 200, "accounts of {name}: {list}");
        let id_of = |kind: &str| {
            list.as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|x| x["ledgerAccountType"] == kind && x["currency"] == currency)
                })
                .and_then(|x| x["id"].as_i64())
                .unwrap_or_else(|| panic!("{name} has no {kind} account in {currency}: {list}"))
        };
        DfspAccounts {
            position: id_of("POSITION"),
            settlement: id_of("SETTLEMENT"),
        }
    }

    /// Funds in or funds-out reserve.
    pub async fn funds(
        &self,
        name: &str,
        account: i64,
        action: &str,
        transfer_id: &str,
        amount: &str,
        currency: &str,
    ) -> (u16, Value) {
        self.post(
            &format!("/participants/{name}/accounts/{account}"),
            serde_json::json!({
                "transferId": transfer_id,
                "externalReference": "string",
                "action": action,
                "reason": "test",
                "amount": {"amount": amount, "currency": currency},
            }),
        )
        .await
    }

    /// (value, reservedValue) of an account, as strings of exact decimals.
    pub async fn balance(&self, name: &str, account: i64) -> (String, String) {
        let (_, list) = self.get(&format!("/participants/{name}/accounts")).await;
        let entry = list
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["id"].as_i64() == Some(account))
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no account {account} for {name}: {list}"));
        (
            entry["value"].to_string(),
            entry["reservedValue"].to_string(),
        )
    }
}

/// A JSON number written exactly as given (no float rounding).
pub fn exact_number(text: &str) -> Value {
    use std::str::FromStr;
    Value::Number(serde_json::Number::from_str(text).expect("a JSON number"))
}
