//! mojaswitch configuration.
//!
//! Layers, lowest first: built-in defaults < TOML file (`--config PATH`) <
//! environment (`MOJASWITCH_<KEY>`) < command-line flags. Every key has a
//! default, an environment variable and a place in the TOML file; unknown keys
//! are refused and every bad value is reported with its key and the reason, so
//! the binary can exit before it opens a port.
//!
//! The environment is passed in as a map so that tests do not touch the
//! process environment.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Prefix of every environment variable that configures the switch.
pub const ENV_PREFIX: &str = "MOJASWITCH_";

/// Longest `batch_interval_min_us`: every write of a busy switch waits up
/// to this long.
const BATCH_INTERVAL_MIN_US_MAX: u64 = 100_000;

/// The effective configuration of one switch node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://PATH` (embedded default) or `mysql://user:pass@host:port/db`.
    pub database_url: String,
    /// Upper bound on pooled database connections.
    pub db_connections_max: u32,
    /// `redis://host:port[/db]`; empty means in-process placement and timers.
    pub redis_url: String,
    /// Address both HTTP listeners bind to.
    pub bind_address: String,
    /// Port of the FSPIOP API (DFSPs).
    pub fspiop_port: u16,
    /// Port of the operator API (central-ledger admin and settlement).
    pub operator_port: u16,
    /// Base URL that links in operator responses point at.
    pub operator_public_url: String,
    /// Name of the hub participant (the reference hub's HUB_NAME).
    pub hub_name: String,
    /// `tracing` filter, e.g. `info` or `mojaswitch=debug,info`.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// HTTP worker threads per listener.
    pub http_workers: usize,
    /// Largest request body accepted (FSPIOP allows 5 MiB).
    pub body_size_max_bytes: usize,
    /// Messages a position actor may have queued before the edge sheds load.
    pub position_mailbox_capacity: usize,
    /// How long the edge waits for an actor's durable answer.
    pub actor_reply_timeout_ms: u64,
    /// Grace period for in-flight requests and writes on SIGTERM/SIGINT.
    pub shutdown_timeout_ms: u64,
    /// Arbiter threads the actors are spread over. One by default: on two
    /// cores it gave lower latency and less CPU per transfer than two in
    /// every alternating pair measured (docs/performance.md); more cores
    /// may want more.
    pub actor_threads: usize,
    /// Worker threads of the storage runtime (database driver, batch
    /// writer, transfer loader, callback delivery). One by default: on two
    /// cores a second one mostly waited for a core, and latency was lower
    /// with one (docs/performance.md); more cores may want more.
    pub storage_threads: usize,
    /// Nice levels the storage runtime's threads (and the SQLite worker
    /// threads they start) run above the process's other threads; 0 leaves
    /// them alone. Every durable write passes one at a time through the
    /// batch writer on these threads, so on a busy machine they should not
    /// wait behind HTTP work for a core (docs/performance.md). Needs
    /// CAP_SYS_NICE (root has it); without it the switch logs a warning and
    /// runs at normal priority.
    pub storage_thread_priority: u32,
    /// Messages a transfer actor may have queued.
    pub transfer_mailbox_capacity: usize,
    /// Transfers in flight (live transfer actors) at most; beyond it new prepares are refused with 2003.
    pub transfers_in_flight_max: usize,
    /// Decided position changes waiting for durability, per position; beyond it the edge sheds load (2003).
    pub position_pending_max: usize,
    /// Once 16 prepares waiting for their answer have each waited longer
    /// than this, new prepares are refused with 2003 until the queue drains,
    /// and requests that start a transaction at half of it (0: never). See
    /// `http/src/overload.rs`.
    pub overload_prepare_wait_ms: u64,
    /// Ledger writes merged into one database transaction at most.
    pub batch_writes_max: usize,
    /// Ledger writes waiting for the writer at most.
    pub writer_queue_capacity: usize,
    /// Microseconds between the starts of two ledger transactions at
    /// least: under load, fewer and larger transactions.
    pub batch_interval_min_us: u64,
    /// ENABLE_ON_US_TRANSFERS: payer and payee may be the same participant.
    pub on_us_transfers_enabled: bool,
    /// SEND_TRANSFER_CONFIRMATION_TO_PAYEE: the payee gets a copy of the commit.
    pub send_transfer_confirmation_to_payee: bool,
    /// The opposite of the quoting service's SIMPLE_ROUTING_MODE: quotes,
    /// bulk quotes and their answers are stored, and a changed resend is
    /// refused with 3106.
    pub quotes_persistence_enabled: bool,
    /// How often expiry timers are checked.
    pub expiry_tick_ms: u64,
    /// Close the open settlement window every this many seconds (0: only
    /// when the operator closes it; the reference hub needs an external cron).
    pub settlement_window_close_interval_s: u64,
    /// How long the operator API waits for a settlement change (a close or a
    /// step over many accounts).
    pub settlement_reply_timeout_ms: u64,
    /// Timeout of one callback delivery attempt.
    pub callback_timeout_ms: u64,
    /// Retries of a callback after a connection error or a 5xx.
    pub callback_retries_max: u32,
    /// Callbacks being delivered at once at most.
    pub callback_concurrency_max: usize,
    /// Callbacks waiting for delivery at most; beyond it new ones are dropped and counted.
    pub callback_queue_capacity: usize,
    /// Cluster mode: the prefix of every Redis key (clusters sharing one Redis
    /// need different names).
    pub cluster_name: String,
    /// Cluster mode: this node's name in Redis (empty: `node-<pid>-<random>`).
    pub node_id: String,
    /// Cluster mode: port of the node-to-node channel (not for DFSPs or operators).
    pub cluster_port: u16,
    /// Cluster mode: the address other nodes reach this node's cluster port at.
    pub cluster_advertise_address: String,
    /// Cluster mode: how often a node renews its membership and its leases.
    pub heartbeat_interval_ms: u64,
    /// Cluster mode: a node (and its leases) silent this long is dead.
    pub node_ttl_ms: u64,
    /// Cluster mode: requests forwarded to one peer and not yet answered at
    /// most; beyond it the edge answers 2003.
    pub forward_in_flight_max: usize,
    /// Cluster mode: position calls to one peer sent in one request at most.
    pub position_batch_max: usize,
}

/// The largest `position_batch_max` accepted: a batch is one HTTP body.
pub const POSITION_BATCH_MAX_LIMIT: usize = 1_024;

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://data/mojaswitch.db".into(),
            db_connections_max: 8,
            redis_url: String::new(),
            bind_address: "0.0.0.0".into(),
            fspiop_port: 3000,
            operator_port: 3001,
            operator_public_url: "http://localhost:3001".into(),
            hub_name: "Hub".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            http_workers: 2,
            body_size_max_bytes: 5_242_880,
            position_mailbox_capacity: 1024,
            actor_reply_timeout_ms: 10_000,
            shutdown_timeout_ms: 10_000,
            actor_threads: 1,
            storage_threads: 1,
            storage_thread_priority: 10,
            transfer_mailbox_capacity: 64,
            transfers_in_flight_max: 100_000,
            position_pending_max: 20_000,
            overload_prepare_wait_ms: 1_000,
            batch_writes_max: 1_000,
            writer_queue_capacity: 10_000,
            batch_interval_min_us: 3_000,
            on_us_transfers_enabled: false,
            send_transfer_confirmation_to_payee: true,
            quotes_persistence_enabled: false,
            expiry_tick_ms: 100,
            settlement_window_close_interval_s: 0,
            settlement_reply_timeout_ms: 60_000,
            callback_timeout_ms: 10_000,
            callback_retries_max: 3,
            callback_concurrency_max: 256,
            callback_queue_capacity: 100_000,
            cluster_name: "mojaswitch".into(),
            node_id: String::new(),
            cluster_port: 3010,
            cluster_advertise_address: "127.0.0.1".into(),
            heartbeat_interval_ms: 500,
            node_ttl_ms: 3_000,
            forward_in_flight_max: 4_096,
            position_batch_max: 256,
        }
    }
}

/// A configuration that cannot be used, with the key it is about.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("unknown configuration key `{key}` (from {source_name})")]
    UnknownKey { key: String, source_name: String },
    #[error("bad value for `{key}` (from {source_name}): {reason}")]
    BadValue {
        key: String,
        source_name: String,
        reason: String,
    },
}

/// Where a value came from, for error messages.
fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

impl Config {
    /// Builds the configuration from every layer and validates it.
    ///
    /// `env` is the process environment (only `MOJASWITCH_*` entries are read);
    /// `flags` are `key -> value` pairs from the command line.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut table = defaults_table();
        if let Some(path) = file {
            merge_file(&mut table, path)?;
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            set_from_text(&mut table, &key, value, name)?;
        }
        for (key, value) in flags {
            set_from_text(
                &mut table,
                key,
                value,
                &format!("flag --{}", key.replace('_', "-")),
            )?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::BadValue {
                    key: "?".into(),
                    source_name: "merged configuration".into(),
                    reason: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::BadValue {
                key: key.into(),
                source_name: "validation".into(),
                reason: reason.into(),
            })
        };
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("mysql://"))
        {
            return bad("database_url", "must start with sqlite: or mysql://");
        }
        let redis_ok = self.redis_url.is_empty()
            || self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("rediss://");
        if !redis_ok {
            return bad(
                "redis_url",
                "must be empty or start with redis:// or rediss://",
            );
        }
        if !self.redis_url.is_empty() && !self.database_url.starts_with("mysql://") {
            return bad(
                "redis_url",
                "cluster mode (redis_url set) needs a mysql:// database_url shared by every node",
            );
        }
        if self.cluster_name.is_empty() || self.cluster_name.len() > 64 {
            return bad("cluster_name", "must be 1 to 64 characters");
        }
        if self.db_connections_max == 0 || self.db_connections_max > 1000 {
            return bad("db_connections_max", "must be between 1 and 1000");
        }
        if self.fspiop_port == self.operator_port && self.fspiop_port != 0 {
            return bad("operator_port", "must differ from fspiop_port");
        }
        if self.bind_address.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "bind_address",
                "must be an IP address, e.g. 0.0.0.0 or 127.0.0.1",
            );
        }
        if self.hub_name.is_empty() || self.hub_name.len() > 30 {
            return bad("hub_name", "must be 1 to 30 characters");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format", "must be text or json");
        }
        if self.http_workers == 0 || self.http_workers > 64 {
            return bad("http_workers", "must be between 1 and 64");
        }
        if self.body_size_max_bytes < 1024 || self.body_size_max_bytes > 64 * 1024 * 1024 {
            return bad("body_size_max_bytes", "must be between 1024 and 67108864");
        }
        if self.position_mailbox_capacity == 0 || self.position_mailbox_capacity > 1_000_000 {
            return bad("position_mailbox_capacity", "must be between 1 and 1000000");
        }
        if self.actor_reply_timeout_ms == 0 {
            return bad("actor_reply_timeout_ms", "must be positive");
        }
        let positive: [(&str, u64); 12] = [
            (
                "settlement_reply_timeout_ms",
                self.settlement_reply_timeout_ms,
            ),
            (
                "transfers_in_flight_max",
                self.transfers_in_flight_max as u64,
            ),
            ("actor_threads", self.actor_threads as u64),
            (
                "transfer_mailbox_capacity",
                self.transfer_mailbox_capacity as u64,
            ),
            ("position_pending_max", self.position_pending_max as u64),
            ("batch_writes_max", self.batch_writes_max as u64),
            ("writer_queue_capacity", self.writer_queue_capacity as u64),
            ("expiry_tick_ms", self.expiry_tick_ms),
            ("callback_timeout_ms", self.callback_timeout_ms),
            (
                "callback_concurrency_max",
                self.callback_concurrency_max as u64,
            ),
            (
                "callback_queue_capacity",
                self.callback_queue_capacity as u64,
            ),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return bad(key, "must be positive");
            }
        }
        if self.batch_interval_min_us > BATCH_INTERVAL_MIN_US_MAX {
            return bad("batch_interval_min_us", "must be at most 100000 (100 ms)");
        }
        if self.actor_threads > 64 {
            return bad("actor_threads", "must be at most 64");
        }
        if self.storage_threads == 0 || self.storage_threads > 64 {
            return bad("storage_threads", "must be between 1 and 64");
        }
        if self.storage_thread_priority > 20 {
            return bad("storage_thread_priority", "must be between 0 and 20");
        }
        if self.heartbeat_interval_ms == 0 || self.node_ttl_ms < 3 * self.heartbeat_interval_ms {
            return bad(
                "node_ttl_ms",
                "must be at least three heartbeat_interval_ms (and the interval positive)",
            );
        }
        if self.forward_in_flight_max == 0 {
            return bad("forward_in_flight_max", "must be positive");
        }
        if !(1..=POSITION_BATCH_MAX_LIMIT).contains(&self.position_batch_max) {
            return bad("position_batch_max", "must be between 1 and 1024");
        }
        let ports = [self.fspiop_port, self.operator_port];
        if !self.redis_url.is_empty()
            && self.cluster_port != 0
            && ports.contains(&self.cluster_port)
        {
            return bad(
                "cluster_port",
                "must differ from fspiop_port and operator_port",
            );
        }
        if self.node_id.len() > 64
            || self
                .node_id
                .contains(|c: char| c.is_whitespace() || c == ':')
        {
            return bad(
                "node_id",
                "must be at most 64 characters, without spaces or ':'",
            );
        }
        if self.callback_retries_max > 10 {
            return bad("callback_retries_max", "must be at most 10");
        }
        Ok(())
    }

    /// The configuration as TOML with secrets (database and Redis passwords) redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = redact_url(&shown.database_url);
        shown.redis_url = redact_url(&shown.redis_url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// True when placement, membership and timers live in Redis.
    pub fn is_cluster(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// True when the switch runs on the embedded SQLite database.
    pub fn is_embedded_database(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

fn defaults_table() -> toml::Table {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(table)) => table,
        _ => unreachable!("Config serialises to a table"),
    }
}

fn merge_file(table: &mut toml::Table, path: &Path) -> Result<(), ConfigError> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: source_name.clone(),
        reason: e.to_string(),
    })?;
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: source_name.clone(),
            reason: e.to_string(),
        })?;
    for (key, value) in file {
        let Some(default) = table.get(&key) else {
            return Err(ConfigError::UnknownKey { key, source_name });
        };
        if default.type_str() != value.type_str() {
            return Err(ConfigError::BadValue {
                reason: format!(
                    "expected {}, found {}",
                    default.type_str(),
                    value.type_str()
                ),
                key,
                source_name,
            });
        }
        table.insert(key, value);
    }
    Ok(())
}

/// Sets `key` from text (environment or flag), typed by the default's type.
fn set_from_text(
    table: &mut toml::Table,
    key: &str,
    text: &str,
    source_name: &str,
) -> Result<(), ConfigError> {
    let Some(default) = table.get(key) else {
        return Err(ConfigError::UnknownKey {
            key: key.into(),
            source_name: source_name.into(),
        });
    };
    let bad = |reason: String| ConfigError::BadValue {
        key: key.into(),
        source_name: source_name.into(),
        reason,
    };
    let value = match default {
        toml::Value::Integer(_) => {
            let n: i64 = text
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{text}` is not an integer")))?;
            if n < 0 {
                return Err(bad(format!("`{text}` is negative")));
            }
            toml::Value::Integer(n)
        }
        toml::Value::Boolean(_) => match text.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(bad(format!("`{text}` is not true or false"))),
        },
        _ => toml::Value::String(text.to_string()),
    };
    table.insert(key.to_string(), value);
    Ok(())
}

/// The environment variable for a key, as documented.
pub fn env_var_for(key: &str) -> String {
    env_name(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::load(None, &BTreeMap::new(), &BTreeMap::new()).expect("defaults");
        assert_eq!(config, Config::default());
        assert!(config.is_embedded_database());
        assert_eq!(config.fspiop_port, 3000);
        assert_eq!(config.operator_port, 3001);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("mojaswitch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("switch.toml");
        std::fs::write(
            &file,
            "fspiop_port = 4000\noperator_port = 4001\nhub_name = \"FileHub\"\n",
        )
        .expect("write");
        let environment = env(&[("MOJASWITCH_OPERATOR_PORT", "5001"), ("PATH", "/bin")]);
        let flags = env(&[("hub_name", "FlagHub")]);
        let config = Config::load(Some(&file), &environment, &flags).expect("load");
        assert_eq!(config.fspiop_port, 4000, "file beats default");
        assert_eq!(config.operator_port, 5001, "environment beats file");
        assert_eq!(config.hub_name, "FlagHub", "flag beats file");
    }

    #[test]
    fn unknown_keys_are_refused_everywhere() {
        let err = Config::load(None, &env(&[("MOJASWITCH_NO_SUCH", "1")]), &BTreeMap::new())
            .expect_err("unknown env key");
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "no_such"));
        let dir = std::env::temp_dir().join(format!("mojaswitch-config-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "fspiop_prot = 1\n").expect("write");
        let err = Config::load(Some(&file), &BTreeMap::new(), &BTreeMap::new())
            .expect_err("unknown file key");
        assert!(err.to_string().contains("fspiop_prot"));
    }

    #[test]
    fn bad_values_name_their_key() {
        // The error for one environment setting on top of the defaults.
        let refused = |key: &str, value: &str| {
            Config::load(None, &env(&[(key, value)]), &BTreeMap::new())
                .expect_err(key)
                .to_string()
        };
        let err = refused("MOJASWITCH_FSPIOP_PORT", "abc");
        assert!(err.contains("fspiop_port"), "{err}");
        let err = refused("MOJASWITCH_DATABASE_URL", "postgres://x");
        assert!(err.contains("database_url"), "{err}");
        let err = refused("MOJASWITCH_STORAGE_THREADS", "0");
        assert!(err.contains("storage_threads"), "{err}");
        for value in ["21", "-1"] {
            let err = refused("MOJASWITCH_STORAGE_THREAD_PRIORITY", value);
            assert!(err.contains("storage_thread_priority"), "{err}");
        }
        let err = refused("MOJASWITCH_BATCH_INTERVAL_MIN_US", "100001");
        assert!(err.contains("batch_interval_min_us"), "{err}");
        let err = refused("MOJASWITCH_FSPIOP_PORT", "70000");
        assert!(err.contains("70000") || err.contains("fspiop"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_url("mysql://root:secret@127.0.0.1:3306/db"),
            "mysql://root:***@127.0.0.1:3306/db"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/db"),
            "mysql://root@127.0.0.1/db"
        );
        let config = Config {
            redis_url: "redis://:pw@localhost:6379".into(),
            ..Config::default()
        };
        assert!(!config.redacted_toml().contains("pw@"));
    }
}
