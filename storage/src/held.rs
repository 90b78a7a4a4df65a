//! A connection that one task keeps between uses.
//!
//! sqlx pings every connection as it goes back to its pool: one extra round
//! trip per use. At 1,500 transfers/s on MariaDB that was ~700 pings a
//! second, a third of every command the server answered, nearly all of
//! them from the two tasks that use the database in a loop: the batch
//! writer and the transfer loader. On MySQL each of them now keeps one
//! connection. SQLite has one connection that everyone shares, so there it
//! goes back after every use (its ping is an in-process call).

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

use crate::{Backend, Result};

/// A kept connection idle for longer is given back and a fresh one taken:
/// the server may have closed one that sat idle (`wait_timeout`, a killed
/// connection), and the pool's ping on return finds that out.
const HELD_IDLE_MAX: Duration = Duration::from_secs(5);

struct Held {
    conn: PoolConnection<Any>,
    last_used: Instant,
}

/// One task's connection: [`acquire`](Self::acquire) before a use, then
/// [`done`](Self::done) or [`failed`](Self::failed).
pub(crate) struct HeldConnection {
    pool: AnyPool,
    /// Keep the connection between uses (MySQL), or give it back (SQLite).
    keep: bool,
    held: Option<Held>,
}

impl HeldConnection {
    pub(crate) fn new(pool: AnyPool, backend: Backend) -> HeldConnection {
        HeldConnection {
            pool,
            keep: backend == Backend::MySql,
            held: None,
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Waits for `next` (the task's next piece of work). If the pool starts
    /// closing meanwhile, the kept connection is given back at once: closing
    /// waits for every connection to come back, and an idle task would
    /// otherwise hold shutdown up for ever.
    pub(crate) async fn idle_until<T>(&mut self, next: impl std::future::Future<Output = T>) -> T {
        if self.held.is_none() {
            return next.await;
        }
        let closing = self.pool.close_event();
        tokio::pin!(next);
        tokio::select! {
            biased;
            item = &mut next => item,
            () = closing => {
                self.held = None;
                next.await
            }
        }
    }

    /// Whether a connection is kept from an earlier use.
    pub(crate) fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// The kept connection, or a fresh one from the pool.
    pub(crate) async fn acquire(&mut self) -> Result<&mut PoolConnection<Any>> {
        let stale = self
            .held
            .as_ref()
            .is_some_and(|held| held.last_used.elapsed() > HELD_IDLE_MAX);
        if stale {
            self.held = None;
        }
        let held = match self.held.take() {
            Some(held) => held,
            None => Held {
                conn: self.pool.acquire().await?,
                last_used: Instant::now(),
            },
        };
        Ok(&mut self.held.insert(held).conn)
    }

    /// The use succeeded: keep the connection (MySQL) or give it back.
    pub(crate) fn done(&mut self) {
        match self.held.as_mut() {
            Some(held) if self.keep => held.last_used = Instant::now(),
            _ => self.held = None,
        }
    }

    /// The use failed: the connection may be broken or mid-transaction, so
    /// a kept one is closed rather than used again. SQLite's one connection
    /// goes back to its pool, which rolls back whatever was left open.
    pub(crate) fn failed(&mut self) {
        if let Some(mut held) = self.held.take() {
            if self.keep {
                held.conn.close_on_drop();
            }
        }
    }
}
