//! mojaswitch durable records.
//!
//! The same schema lives on SQLite (the embedded default) and MySQL/MariaDB
//! (cluster mode); `migrations/` holds one dialect each. Queries go through
//! sqlx's `Any` driver so that each is written once.
//!
//! Architecture invariants:
//! - `storage` knows SQL and nothing of HTTP or FSPIOP; it never decides a
//!   business outcome, it records the outcomes that `actors` decided.
//! - Amounts are `rust_decimal::Decimal` at this crate's boundary and exact
//!   scaled integers (1/10000 units) in the database (see [`amount`]).
//! - History tables are insert-only; the only rows ever updated are current
//!   values (positions, flags) and they change in the same transaction as the
//!   history row that explains the change.
//! - Every query runs on the storage's own Tokio runtime: database
//!   connections belong to that runtime, whichever thread or actix arbiter
//!   asks (see [`Store::run`]).

/// SQL: joins each transfer `t` to its newest state `s` (one row per transfer).
/// A macro, not a const, so that `concat!` can build `&'static str` queries;
/// defined before the modules so that all of them can use it.
/// The state index (`transfer_seq`, id) answers the `MAX` for each transfer.
macro_rules! newest_state_of_t {
    () => {
        "transfer_state_change s ON s.transfer_seq = t.transfer_seq \
         AND s.transfer_state_change_id = (SELECT MAX(x.transfer_state_change_id) \
         FROM transfer_state_change x WHERE x.transfer_seq = t.transfer_seq)"
    };
}

/// Two tests that run one body, an `async fn(&Store)`: `$sqlite` on a
/// scratch SQLite file and `$mariadb` on a scratch database of the test
/// MariaDB, both named after `$tag`. Declared before the modules so that
/// their tests can use it.
#[cfg(test)]
macro_rules! test_on_both_backends {
    ($(#[$doc:meta])* $sqlite:ident, $mariadb:ident, $tag:literal, $body:path) => {
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (store, dir) = crate::scratch_store($tag, 5_000).await;
            $body(&store).await;
            store.close().await;
            let _ = std::fs::remove_dir_all(dir);
        }

        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mariadb() {
            let (store, admin, name) = crate::tests::scratch_mariadb_store($tag).await;
            $body(&store).await;
            crate::tests::drop_scratch_mariadb(store, admin, name).await;
        }
    };
}

pub mod amount;
pub mod bulk;
pub mod check;
pub mod fence;
mod held;
pub mod ledger;
pub mod loader;
pub mod lookup;
mod nodelay;
pub mod participants;
pub mod quotes;
pub mod settlement;
mod sqlite_script;
pub mod transfers;
pub mod writer;

use std::future::Future;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;

pub use amount::{from_units, to_units, AmountError};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored amount is not exact: {0}")]
    Amount(#[from] AmountError),
    #[error("storage runtime stopped")]
    RuntimeGone,
    #[error("{0}")]
    Invariant(String),
    #[error("batched lookup failed: {0}")]
    Lookup(String),
    /// No connection was free within the acquire timeout, for work batched
    /// with others (each sender gets its own copy); nothing was written.
    #[error("database busy: {0}")]
    Busy(String),
    #[error("slot {slot} is fenced: this write carries epoch {epoch}, the database has {current:?} (another node owns the slot now)")]
    Fenced {
        slot: u32,
        epoch: i64,
        current: Option<i64>,
    },
}

impl StorageError {
    /// The database could not take the work now, and the same work may
    /// succeed later: every connection stayed busy for the whole acquire
    /// timeout, or another holder of a lock outlasted the wait for it (see
    /// [`is_lock_conflict`]).
    pub fn is_busy(&self) -> bool {
        match self {
            StorageError::Database(sqlx::Error::PoolTimedOut) | StorageError::Busy(_) => true,
            StorageError::Database(sqlx::Error::Database(error)) => {
                is_lock_conflict(error.as_ref())
            }
            _ => false,
        }
    }
}

/// SQLite's primary result codes for a lock held by another connection:
/// `SQLITE_BUSY` (the database file, past `busy_timeout`) and
/// `SQLITE_LOCKED` (a table, within one process).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
/// MariaDB/MySQL error numbers: lock wait timeout, and deadlock (the server
/// rolled the transaction back).
const MYSQL_LOCK_WAIT_TIMEOUT: u16 = 1205;
const MYSQL_DEADLOCK: u16 = 1213;

/// Whether the database refused a statement because someone else held a
/// lock it needed for longer than it would wait: an operator's `sqlite3`
/// shell or a backup holding the SQLite write lock past the 5 s busy
/// timeout, a MariaDB lock wait timeout or deadlock. The statement did
/// nothing, and the caller's transaction is rolled back.
fn is_lock_conflict(error: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::DatabaseError;
    if let Some(sqlite) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // `code()` is the extended result code; its low byte is the primary.
        let primary = sqlite
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        return matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED));
    }
    if let Some(mysql) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(mysql.number(), MYSQL_LOCK_WAIT_TIMEOUT | MYSQL_DEADLOCK);
    }
    false
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// The batch writer's connection. On MySQL a pool of its own (one
    /// connection with a larger statement cache, see [`WRITER_STATEMENT_CACHE`]);
    /// on SQLite the same pool as everyone's.
    pub(crate) writer_pool: AnyPool,
    /// SQLite only: the checkpointer's connection (closed with the store).
    checkpoint_pool: Option<AnyPool>,
    backend: Backend,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Limits on the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connections_max: u32,
    pub acquire_timeout_ms: u64,
}

impl Store {
    /// Connects (creating the SQLite file and its folder when needed).
    ///
    /// Must be called from inside the runtime that will own the connections.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("mysql:") {
            Backend::MySql
        } else {
            Backend::Sqlite
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url_creating_folder(url),
            Backend::MySql => url.to_string(),
        };
        // SQLite allows one writer: one connection serialises writes and avoids
        // SQLITE_BUSY on lock upgrades; WAL keeps it fast and durable.
        let connections_max = match backend {
            Backend::Sqlite => 1,
            Backend::MySql => settings.connections_max,
        };
        // No ping before each acquire: it doubled the round trips of every
        // lookup. A connection that died idle fails its next query instead;
        // the pool then drops it and the caller's error path (a failed batch
        // is answered as failed, never as written) takes over.
        let mut options = AnyPoolOptions::new()
            .max_connections(connections_max)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
        if backend == Backend::MySql {
            let port = mysql_port(&url)?;
            options = options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    nodelay::set_nodelay_to_port(port);
                    bound_idle_transactions(conn).await;
                    Ok(())
                })
            });
        }
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    // Checkpoints run beside the writer (see `sqlite_checkpointer`),
                    // not inside whichever commit crosses the WAL size limit.
                    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    // A WAL that grew under a burst is cut back when reused.
                    conn.execute("PRAGMA journal_size_limit = 67108864").await?;
                    // The page cache, allocated as pages are used, up to
                    // this bound. With sequential transfer keys (0009) the
                    // pages a batch touches are the tails of the tables and
                    // the `transfer_id` index. SQLite scans its cache's
                    // hash table at the end of every write transaction
                    // (`pcache1TruncateUnsafe`): with 256 MiB that scan was
                    // 17% of the SQLite thread at 2,500 transfers/s; with
                    // 32 MiB the same runs had the same rate and latency,
                    // and the switch's resident memory fell from ~400 to
                    // ~170 MiB (docs/performance.md).
                    conn.execute("PRAGMA cache_size = -32768").await?;
                    // A statement that writes many rows inside a batch keeps a
                    // statement journal (to undo just that statement), which
                    // past 64 KiB SQLite spilled to a new temporary file: ~70
                    // files created, written and unlinked a second at 3,000
                    // transfers/s. In memory they cost no system call; they
                    // hold at most one statement's pages and need no
                    // durability (docs/performance.md).
                    conn.execute("PRAGMA temp_store = MEMORY").await?;
                    Ok(())
                })
            });
        }
        let pool = options.clone().connect(&url).await?;
        let writer_pool = match backend {
            Backend::MySql => {
                options
                    .max_connections(1)
                    .connect(&with_statement_cache(&url, WRITER_STATEMENT_CACHE))
                    .await?
            }
            Backend::Sqlite => pool.clone(),
        };
        let checkpoint_pool = match backend {
            Backend::Sqlite => {
                let checkpoint_pool = sqlite_checkpoint_pool(&url, settings).await?;
                tokio::spawn(sqlite_checkpointer(checkpoint_pool.clone()));
                Some(checkpoint_pool)
            }
            Backend::MySql => None,
        };
        Ok(Store {
            pool,
            writer_pool,
            checkpoint_pool,
            backend,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations of this backend's dialect.
    pub async fn migrate(&self) -> Result<()> {
        let backend = self.backend;
        self.run(move |pool| async move {
            match backend {
                Backend::MySql => sqlx::migrate!("./migrations/mysql").run(&pool).await?,
                Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            }
            Ok(())
        })
        .await
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<()> {
        self.run(|pool| async move {
            sqlx::query("SELECT 1").execute(&pool).await?;
            Ok(())
        })
        .await
    }

    /// Runs `work` on the storage runtime with the pool.
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.runtime
            .spawn(work(pool))
            .await
            .map_err(|_| StorageError::RuntimeGone)?
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        let pool = self.pool.clone();
        let writer_pool = self.writer_pool.clone();
        let checkpoint_pool = self.checkpoint_pool.clone();
        let _ = self
            .runtime
            .spawn(async move {
                if let Some(checkpoint_pool) = checkpoint_pool {
                    checkpoint_pool.close().await;
                }
                writer_pool.close().await;
                pool.close().await
            })
            .await;
    }
}

/// Seconds a transaction may sit idle (no statement running) before
/// MariaDB kills its connection. Our transactions never wait between
/// statements, so only a stopped or partitioned node's transaction lasts this
/// long, and its locks (a fencing row, the open window) would otherwise
/// freeze every other node until it resumed.
pub const IDLE_TRANSACTION_TIMEOUT_S: u32 = 2;

/// Sets [`IDLE_TRANSACTION_TIMEOUT_S`] on a new MariaDB connection. MySQL has
/// no such setting: there the statement fails, the connection is kept, and
/// a paused node's locks last until it resumes (docs/cluster.md).
async fn bound_idle_transactions(conn: &mut sqlx::AnyConnection) {
    set_idle_transaction_timeout(conn, IDLE_TRANSACTION_TIMEOUT_S).await;
}

/// `SET SESSION idle_transaction_timeout` (MariaDB; on MySQL it fails and
/// nothing changes).
pub(crate) async fn set_idle_transaction_timeout(conn: &mut sqlx::AnyConnection, seconds: u32) {
    use sqlx::Executor;
    let statement = format!("SET SESSION idle_transaction_timeout = {seconds}");
    if let Err(error) = conn.execute(sqlx::AssertSqlSafe(statement)).await {
        tracing::debug!(%error, "idle_transaction_timeout not supported (MySQL)");
    }
}

/// A read transaction that may pause between statements (see
/// [`Store::in_long_read`]).
pub(crate) type Snapshot<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Work done in a [`Snapshot`].
pub(crate) type LongRead<T> =
    for<'a, 'c> fn(&'a mut Snapshot<'c>) -> futures::future::BoxFuture<'a, Result<T>>;

/// How long a long read's transaction may wait between its statements on
/// MariaDB. The ledger check reads every history row and works through
/// millions of them between statements: on a database of 1.8M transfers
/// one pause took more than [`IDLE_TRANSACTION_TIMEOUT_S`], and MariaDB
/// closed the connection mid-check.
pub const LONG_READ_IDLE_TIMEOUT_S: u32 = 3600;

impl Store {
    /// Runs `work` in one read transaction (rolled back at the end) on a
    /// connection whose idle-transaction bound is
    /// [`LONG_READ_IDLE_TIMEOUT_S`] for the while. The connection goes back
    /// to the pool with the switch's own bound, or is closed if that could
    /// not be restored.
    pub(crate) async fn in_long_read<T: Send + 'static>(&self, work: LongRead<T>) -> Result<T> {
        let mariadb = self.backend == Backend::MySql;
        self.run(move |pool| async move {
            use sqlx::Connection;
            let mut conn = pool.acquire().await?;
            if mariadb {
                set_idle_transaction_timeout(&mut conn, LONG_READ_IDLE_TIMEOUT_S).await;
            }
            let result = async {
                let mut tx = conn.begin().await?;
                let value = work(&mut tx).await?;
                tx.rollback().await?;
                Ok(value)
            }
            .await;
            if mariadb {
                if result.is_ok() {
                    set_idle_transaction_timeout(&mut conn, IDLE_TRANSACTION_TIMEOUT_S).await;
                } else {
                    drop(conn.detach());
                }
            }
            result
        })
        .await
    }
}

/// Prepared statements the batch writer's MySQL connection keeps.
///
/// A batch inserts its rows with one multi-row INSERT per table, and each
/// row count is a statement of its own. With sqlx's default cache of 100
/// per connection the writer prepared (and closed) ~2.8 statements per
/// batch at 1,500 transfers/s: a round trip each, and work for MariaDB. The
/// writer's shapes are bounded (a few tables times at most
/// `INSERT_ROWS_MAX` row counts), so this cache holds the ones in use.
/// Only the writer's one connection has it: MariaDB allows 16,382 prepared
/// statements server-wide by default (`max_prepared_stmt_count`).
pub const WRITER_STATEMENT_CACHE: usize = 1024;

/// The URL with sqlx's `statement-cache-capacity` set, unless it sets one.
fn with_statement_cache(url: &str, capacity: usize) -> String {
    if url.contains("statement-cache-capacity=") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}statement-cache-capacity={capacity}")
}

/// The TCP port of a MySQL URL (3306 unless it names one).
fn mysql_port(url: &str) -> Result<u16> {
    use std::str::FromStr;
    Ok(sqlx::mysql::MySqlConnectOptions::from_str(url)?.get_port())
}

/// One connection that copies the WAL into the database file.
async fn sqlite_checkpoint_pool(url: &str, settings: &PoolSettings) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// How often the checkpointer copies committed WAL frames into the database.
const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Every how many checkpoints one is a RESTART (see `sqlite_checkpointer`).
const SQLITE_RESTART_EVERY_TICKS: u64 = 5;

/// Checkpoints the WAL every [`SQLITE_CHECKPOINT_INTERVAL`] from its own
/// connection, so that a writer's commit costs only its WAL append and
/// fsync. SQLite's automatic checkpoint ran inside the commit that crossed
/// 1,000 WAL pages: under load that added 10-30 ms to one batch in four.
/// Mostly PASSIVE, which never blocks the writer or readers; once a second
/// RESTART, so the WAL stays small. Ends when the pool is closed.
async fn sqlite_checkpointer(pool: AnyPool) {
    use sqlx::Row;
    let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    while !pool.is_closed() {
        tick.tick().await;
        ticks += 1;
        // PASSIVE copies frames without blocking the writer, but the WAL is
        // reused from its start only when a writer finds it wholly copied,
        // which under continuous commits is almost never: with PASSIVE
        // alone (and read connections beside the writer) the WAL grew to
        // 3 GB in 30 s at 3,000 transfers/s and every read slowed down.
        // RESTART, once a second, copies the little PASSIVE left, holding
        // the writer for that moment, and the next commit writes the WAL
        // from its start again.
        let mode = if ticks.is_multiple_of(SQLITE_RESTART_EVERY_TICKS) {
            "PRAGMA wal_checkpoint(RESTART)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        let started = std::time::Instant::now();
        match sqlx::query(mode).fetch_optional(&pool).await {
            Ok(row) => {
                // (busy, frames in the WAL, frames copied to the database)
                let frames = |i: usize| {
                    row.as_ref()
                        .and_then(|r| r.try_get::<i64, _>(i).ok())
                        .unwrap_or(-1)
                };
                tracing::debug!(
                    mode,
                    busy = frames(0),
                    wal_frames = frames(1),
                    copied_frames = frames(2),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "SQLite checkpoint"
                );
            }
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::warn!(%error, "SQLite checkpoint failed"),
        }
    }
}

fn sqlite_url_creating_folder(url: &str) -> String {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let file = path.split('?').next().unwrap_or(path);
    if let Some(parent) = std::path::Path::new(file).parent() {
        if !parent.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    if path.contains("mode=") {
        format!("sqlite://{path}")
    } else if path.contains('?') {
        format!("sqlite://{path}&mode=rwc")
    } else {
        format!("sqlite://{path}?mode=rwc")
    }
}

/// Now, as stored: ISO 8601 UTC with milliseconds.
pub fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Begins a transaction that will write.
///
/// On SQLite it takes the write lock at BEGIN (`BEGIN IMMEDIATE`). A deferred
/// transaction whose first statement reads holds a snapshot; if the WAL
/// checkpointer runs a RESTART before the transaction's first write, the
/// upgrade to writer fails at once with `database is locked`, without
/// waiting out the busy timeout. (Seen under load: one fulfil in 183,750
/// answered 2001.) Read-only transactions (the invariant check) keep
/// `pool.begin()`, so they never block the writer.
pub(crate) async fn begin_write(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
    Ok(pool.begin_with(begin_statement(pool)).await?)
}

/// [`begin_write`] on a connection the caller holds.
pub(crate) async fn begin_write_on<'c>(
    conn: &'c mut sqlx::AnyConnection,
    pool: &AnyPool,
) -> Result<sqlx::Transaction<'c, sqlx::Any>> {
    use sqlx::Connection;
    Ok(conn.begin_with(begin_statement(pool)).await?)
}

/// Whether a transaction runs on SQLite (the batch's rows and the window
/// lock take another path there than on MariaDB).
pub(crate) fn on_sqlite(tx: &sqlx::Transaction<'_, sqlx::Any>) -> bool {
    tx.backend_name().eq_ignore_ascii_case("sqlite")
}

fn begin_statement(pool: &AnyPool) -> &'static str {
    match pool.connect_options().database_url.scheme() {
        "sqlite" => "BEGIN IMMEDIATE",
        _ => "BEGIN",
    }
}

/// `items`, then its last item repeated up to the next power of two in all.
///
/// Statements whose size follows a batch (`IN (…)` lists, `CASE` arms) are
/// padded this way so the database sees a handful of statement shapes and
/// keeps them prepared instead of preparing one for every batch size.
/// Repeating an item changes neither an `IN` nor a `CASE` (the first match
/// wins).
pub(crate) fn padded_to_power_of_two<T>(items: &[T]) -> impl Iterator<Item = &T> + Clone {
    let padding = items.len().next_power_of_two() - items.len();
    items
        .iter()
        .chain(items.last().into_iter().cycle().take(padding))
}

/// Reads a column, naming it in the error.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    Ok(row.try_get(name)?)
}

/// Reads a 0/1 flag column.
pub(crate) fn flag(row: &AnyRow, name: &str) -> Result<bool> {
    Ok(col::<i64>(row, name)? != 0)
}

/// Runs an INSERT and returns the new row's id on either backend (the Any
/// driver reports MySQL's id but not SQLite's, which is read back on the same
/// connection).
pub(crate) async fn insert_returning_id<'q>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> Result<i64> {
    let result = query.execute(&mut **tx).await?;
    if let Some(id) = result.last_insert_id() {
        return Ok(id);
    }
    let row = sqlx::query("SELECT last_insert_rowid() AS id")
        .fetch_one(&mut **tx)
        .await?;
    col(&row, "id")
}

/// The pool's acquire timeout in tests that hold the only connection to
/// see "busy": short enough to keep them quick, long enough that opening
/// the scratch database on a loaded 2-core CI machine fits in it (200 ms
/// did not: `connect` itself timed out once).
#[cfg(test)]
pub(crate) const BUSY_ACQUIRE_TIMEOUT_MS: u64 = 1_000;

/// A migrated SQLite store in a scratch folder, for this crate's unit
/// tests; remove the folder when done.
#[cfg(test)]
pub(crate) async fn scratch_store(
    name: &str,
    acquire_timeout_ms: u64,
) -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("mojaswitch-{name}-{}", std::process::id()));
    let url = format!("sqlite://{}/s.db", dir.display());
    let settings = PoolSettings {
        connections_max: 1,
        acquire_timeout_ms,
    };
    let store = Store::connect(&url, &settings).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_repeats_the_last_item_up_to_a_power_of_two() {
        let padded = |items: &[u8]| padded_to_power_of_two(items).copied().collect::<Vec<_>>();
        assert_eq!(padded(&[]), Vec::<u8>::new());
        assert_eq!(padded(&[7]), [7]);
        assert_eq!(padded(&[1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(padded(&[1, 2, 3, 4]), [1, 2, 3, 4]);
        assert_eq!(padded(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5, 5, 5, 5]);
    }

    /// A query that cannot get a connection in time is reported busy (the
    /// edge answers 2003), and the store works again once one is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_that_stays_busy_is_reported_busy() {
        // 1 s: long enough to open the SQLite file on a loaded machine (the
        // timeout also bounds connecting), short enough for a unit test.
        let (store, dir) = scratch_store("busy", BUSY_ACQUIRE_TIMEOUT_MS).await;
        let held = store.pool.acquire().await.expect("acquire");
        let error = store.ping().await.expect_err("no connection is free");
        assert!(error.is_busy(), "{error}");
        drop(held);
        store.ping().await.expect("a connection is free again");
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The settings every SQLite connection of the store runs with: a
    /// durable WAL (each COMMIT synced before it returns) and statement
    /// journals in memory, not in a new temporary file per spill.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_connection_is_durable_and_keeps_temporary_files_in_memory() {
        let (store, dir) = scratch_store("pragmas", 5_000).await;
        let mut conn = store.pool.acquire().await.expect("acquire");
        let mut pragma = async |name: &str| -> String {
            let sql = format!("SELECT CAST({name} AS TEXT) FROM pragma_{name}");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            sqlx::Row::get::<String, _>(&row, 0)
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("synchronous").await, "2", "FULL");
        assert_eq!(pragma("temp_store").await, "2", "MEMORY");
        drop(conn);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn connect_any(url: &str) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(url).await.expect("connect")
    }

    /// A new database on the test MariaDB: an admin connection, its name
    /// (to drop it at the end) and its URL.
    pub(crate) async fn scratch_mariadb(tag: &str) -> (sqlx::AnyConnection, String, String) {
        let server = std::env::var("MOJASWITCH_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://mojaswitch:mojaswitch@127.0.0.1:3306".to_string());
        let name = format!("mjtest_{tag}_{}", std::process::id());
        let mut admin = connect_any(&server).await;
        exec(&mut admin, &format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        let url = format!("{server}/{name}");
        (admin, name, url)
    }

    /// A migrated store (two connections) on a new database of the test
    /// MariaDB; [`drop_scratch_mariadb`] closes it and drops the database.
    pub(crate) async fn scratch_mariadb_store(tag: &str) -> (Store, sqlx::AnyConnection, String) {
        let (admin, name, url) = scratch_mariadb(tag).await;
        let settings = PoolSettings {
            connections_max: 2,
            acquire_timeout_ms: 5_000,
        };
        let store = Store::connect(&url, &settings).await.expect("connect");
        store.migrate().await.expect("migrate");
        (store, admin, name)
    }

    pub(crate) async fn drop_scratch_mariadb(
        store: Store,
        mut admin: sqlx::AnyConnection,
        name: String,
    ) {
        store.close().await;
        exec(&mut admin, &format!("DROP DATABASE {name}"))
            .await
            .expect("drop");
    }

    pub(crate) async fn exec(conn: &mut sqlx::AnyConnection, sql: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Someone else (an operator's `sqlite3` shell, a backup) holds the
    /// SQLite write lock past the busy timeout: the writer's BEGIN fails as
    /// busy (2003), not as a failed write (2001), through the `Any` driver
    /// the store uses. Other failures stay not busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_write_lock_held_elsewhere_is_busy() {
        let (store, dir) = scratch_store("locked", 5_000).await;
        let url = format!("sqlite://{}/s.db", dir.display());
        let mut other = connect_any(&url).await;
        exec(&mut other, "BEGIN IMMEDIATE").await.expect("lock");
        let error = begin_write(&store.pool)
            .await
            .expect_err("the write lock is held elsewhere");
        assert!(error.is_busy(), "{error}");
        exec(&mut other, "ROLLBACK").await.expect("unlock");
        begin_write(&store.pool).await.expect("free again");
        let mut conn = store.pool.acquire().await.expect("acquire");
        let error = exec(&mut conn, "SELECT * FROM no_such_table")
            .await
            .expect_err("no such table");
        assert!(!error.is_busy(), "{error}");
        drop(conn);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// On MariaDB a long read (the ledger check) may pause between its
    /// statements longer than the switch's own transactions may, and its
    /// connection goes back to the pool with the switch's bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_may_pause_between_statements_on_mariadb() {
        let (mut admin, name, url) = scratch_mariadb("long_read").await;
        let settings = PoolSettings {
            connections_max: 1,
            acquire_timeout_ms: 5_000,
        };
        let store = Store::connect(&url, &settings).await.expect("connect");
        let pause = Duration::from_secs(u64::from(IDLE_TRANSACTION_TIMEOUT_S) + 2);
        async fn pausing(tx: &mut Snapshot<'_>) -> Result<i64> {
            let pause = Duration::from_secs(u64::from(IDLE_TRANSACTION_TIMEOUT_S) + 2);
            let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut **tx).await?;
            tokio::time::sleep(pause).await;
            let two: i64 = sqlx::query_scalar("SELECT 2").fetch_one(&mut **tx).await?;
            Ok(one + two)
        }
        let sum = store
            .in_long_read(|tx| Box::pin(pausing(tx)))
            .await
            .expect("the long read outlives the switch's idle bound");
        assert_eq!(sum, 3);

        // The pool's one connection is the same, with the switch's bound
        // again: an ordinary transaction that pauses as long is cut off.
        let mut conn = store.pool.acquire().await.expect("acquire");
        let bound: i64 = sqlx::query_scalar("SELECT @@SESSION.idle_transaction_timeout")
            .fetch_one(&mut *conn)
            .await
            .expect("bound");
        assert_eq!(bound, i64::from(IDLE_TRANSACTION_TIMEOUT_S));
        exec(&mut conn, "BEGIN").await.expect("begin");
        tokio::time::sleep(pause).await;
        exec(&mut conn, "SELECT 1")
            .await
            .expect_err("MariaDB closed the idle transaction's connection");
        drop(conn.detach());
        store.close().await;
        exec(&mut admin, &format!("DROP DATABASE {name}"))
            .await
            .expect("drop");
    }

    /// The same on MariaDB: a lock wait timeout (another transaction holds
    /// the row) is busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mariadb_lock_wait_timeout_is_busy() {
        let (mut admin, name, url) = scratch_mariadb("lock").await;
        let mut holder = connect_any(&url).await;
        exec(
            &mut holder,
            "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
        )
        .await
        .expect("table");
        exec(&mut holder, "INSERT INTO t VALUES (1)")
            .await
            .expect("row");
        exec(&mut holder, "BEGIN").await.expect("begin");
        exec(&mut holder, "UPDATE t SET id = 1 WHERE id = 1")
            .await
            .expect("lock the row");
        let mut waiter = connect_any(&url).await;
        exec(&mut waiter, "SET SESSION innodb_lock_wait_timeout = 1")
            .await
            .expect("set");
        exec(&mut waiter, "BEGIN").await.expect("begin");
        let error = exec(&mut waiter, "UPDATE t SET id = 1 WHERE id = 1")
            .await
            .expect_err("the row is locked elsewhere");
        assert!(error.is_busy(), "{error}");
        let error = exec(&mut waiter, "SELECT * FROM no_such_table")
            .await
            .expect_err("no such table");
        assert!(!error.is_busy(), "{error}");
        // Both transactions end (and their metadata locks go) before the drop.
        drop((waiter, holder));
        exec(&mut admin, &format!("DROP DATABASE {name}"))
            .await
            .expect("drop");
    }
}
