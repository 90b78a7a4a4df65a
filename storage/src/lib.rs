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

pub mod amount;
pub mod bulk;
pub mod check;
pub mod ledger;
pub mod loader;
pub mod lookup;
mod nodelay;
pub mod participants;
pub mod quotes;
pub mod settlement;
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
    /// Read-only lookups that must not queue behind writes: on SQLite its
    /// own read-only connections, on MySQL the same pool.
    pub(crate) read_pool: AnyPool,
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
        let mut options = AnyPoolOptions::new()
            .max_connections(connections_max)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
        if backend == Backend::MySql {
            let port = mysql_port(&url)?;
            options = options.after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    nodelay::set_nodelay_to_port(port);
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
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let read_pool = match backend {
            Backend::Sqlite => sqlite_read_pool(&url, settings).await?,
            Backend::MySql => pool.clone(),
        };
        Ok(Store {
            pool,
            read_pool,
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
        let read_pool = self.read_pool.clone();
        let _ = self
            .runtime
            .spawn(async move {
                read_pool.close().await;
                pool.close().await
            })
            .await;
    }
}

/// The TCP port of a MySQL URL (3306 unless it names one).
fn mysql_port(url: &str) -> Result<u16> {
    use std::str::FromStr;
    Ok(sqlx::mysql::MySqlConnectOptions::from_str(url)?.get_port())
}

/// Read connections of the loader on SQLite: WAL readers see every
/// committed batch without waiting for the single writer connection.
/// `query_only` makes a write through them an error, not a second writer.
async fn sqlite_read_pool(url: &str, settings: &PoolSettings) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(SQLITE_READ_CONNECTIONS)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA query_only = ON").await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// Read-only connections beside SQLite's one writer.
const SQLITE_READ_CONNECTIONS: u32 = 2;

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
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
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
