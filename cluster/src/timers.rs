//! Transfer expiry timers.
//!
//! The embedded default keeps them in process, ordered by expiry
//! ([`LocalTimers`]); cluster mode keeps them in Redis, one sorted set per
//! slot ([`RedisTimers`]). A timer that fires only asks the transfer to
//! check its own expiry, so an early, late or repeated firing is harmless:
//! the transfer actor decides from its recorded state, and its writes are
//! fenced by the slot's epoch.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::coordinator::lease_key;
use crate::placement::{transfer_slot, Placement, Route, SLOTS};

/// Expiry timers by transfer id.
pub trait Timers: Send + Sync {
    /// Arms (or re-arms) the timer of `id` for `at_ms` (ms since the epoch).
    fn schedule(&self, id: &str, at_ms: i64);
    /// Disarms it (the transfer became final).
    fn cancel(&self, id: &str, at_ms: i64);
    /// Removes and returns up to `max` ids due at `now_ms`, earliest first.
    fn take_due(&self, now_ms: i64, max: usize) -> Vec<String>;
    /// Timers armed.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-process timers (embedded default).
#[derive(Default)]
pub struct LocalTimers {
    armed: Mutex<BTreeSet<(i64, String)>>,
}

impl LocalTimers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, String)>> {
        self.armed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Timers for LocalTimers {
    fn schedule(&self, id: &str, at_ms: i64) {
        self.lock().insert((at_ms, id.to_string()));
    }

    fn cancel(&self, id: &str, at_ms: i64) {
        self.lock().remove(&(at_ms, id.to_string()));
    }

    fn take_due(&self, now_ms: i64, max: usize) -> Vec<String> {
        let mut armed = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match armed.first() {
                Some((at, _)) if *at <= now_ms => {
                    if let Some((_, id)) = armed.pop_first() {
                        due.push(id);
                    }
                }
                _ => break,
            }
        }
        due
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Ids with a change (arm or disarm) not yet written to Redis, at most.
/// Beyond it a change is dropped and the owned slots are re-armed from the
/// database once Redis takes writes again.
pub const CHANGES_MAX: usize = 100_000;
/// Changes written in one pipeline, at most.
pub const CHANGES_PER_PIPELINE_MAX: usize = 2_000;
/// Claimed timers waiting to be fired here, at most (plus one claim round):
/// beyond it, due timers wait in Redis.
pub const CLAIMED_MAX: usize = 20_000;
/// Timers claimed from one slot per tick, at most.
pub const CLAIMS_PER_SLOT_MAX: usize = 500;

/// Removes and returns up to ARGV[3] members of the sorted set KEYS[2] with
/// a score of at most ARGV[2], but only while the lease KEYS[1] holds
/// exactly ARGV[1] (`node:epoch`): only the slot's owner claims its timers,
/// and each timer once.
const CLAIM_DUE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {} end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then redis.call('ZREM', KEYS[2], unpack(due)) end
return due";

/// The sorted set of `slot`'s timers: member the transfer id, score its
/// expiry in ms since the epoch.
pub fn timeouts_key(namespace: &str, slot: u32) -> String {
    format!("{namespace}:timeouts:{slot}")
}

/// The script call that claims `slot`'s timers due at `now_ms` for the
/// holder of `lease` (`node:epoch`).
fn claim_due_cmd(namespace: &str, slot: u32, lease: &str, now_ms: i64, max: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CLAIM_DUE)
        .arg(2)
        .arg(lease_key(namespace, slot))
        .arg(timeouts_key(namespace, slot))
        .arg(lease)
        .arg(now_ms)
        .arg(max);
    cmd
}

/// Claims up to `max` of `slot`'s timers due at `now_ms`, if `lease` is the
/// slot's lease (`node:epoch`); what the claim loop does for each owned slot.
pub async fn claim_due(
    conn: &mut ConnectionManager,
    namespace: &str,
    slot: u32,
    lease: &str,
    now_ms: i64,
    max: usize,
) -> redis::RedisResult<Vec<String>> {
    claim_due_cmd(namespace, slot, lease, now_ms, max)
        .query_async(conn)
        .await
}

/// Re-arms the unfinished transfers of the given slots from the database.
pub type Rearm = Arc<dyn Fn(Vec<u32>) + Send + Sync>;

/// Timers in Redis (cluster mode).
///
/// Arming and disarming are queued here, at most one change per id (the
/// last wins), and written in pipelines each tick. Then, for every slot this
/// node owns, [`CLAIM_DUE`] moves the due timers out of Redis into this
/// node's claimed queue, which the expiry loop empties with `take_due`.
///
/// A claimed timer is in this node's memory only. If the node dies or loses
/// the slot before the transfer acted on it, the slot's next owner re-arms
/// every unfinished transfer of the slot from the database as it acquires
/// the slot, as it does after Redis lost its data: no expiry is lost, and
/// one that runs twice finds the transfer already final.
pub struct RedisTimers {
    namespace: String,
    placement: Arc<Placement>,
    /// Id → expiry to arm, or `None` to disarm; not yet in Redis.
    changes: Mutex<HashMap<String, Option<i64>>>,
    /// Claimed from Redis, not yet fired.
    claimed: Mutex<VecDeque<String>>,
    /// A change was dropped (`CHANGES_MAX`): re-arm from the database.
    overflowed: AtomicBool,
    /// The last tick could not write or claim.
    failing: AtomicBool,
}

/// What an operator sees of the timers (`/health`, `GET /cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerBacklog {
    /// Changes not yet written to Redis.
    pub queued: usize,
    /// Claimed from Redis, not yet fired.
    pub claimed: usize,
    /// The last tick wrote and claimed.
    pub redis_ok: bool,
}

impl RedisTimers {
    pub fn new(namespace: &str, placement: Arc<Placement>) -> Arc<RedisTimers> {
        Arc::new(RedisTimers {
            namespace: namespace.to_string(),
            placement,
            changes: Mutex::new(HashMap::new()),
            claimed: Mutex::new(VecDeque::new()),
            overflowed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        })
    }

    pub fn backlog(&self) -> TimerBacklog {
        TimerBacklog {
            queued: self.lock_changes().len(),
            claimed: self.lock_claimed().len(),
            redis_ok: !self.failing.load(Ordering::Relaxed),
        }
    }

    /// Each `tick`: writes the queued changes, then claims the due timers
    /// of the owned slots. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>, mut conn: ConnectionManager, tick: Duration, rearm: Rearm) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let done = match self.flush(&mut conn).await {
                Ok(()) => self.claim(&mut conn, now_ms()).await,
                failed => failed,
            };
            match done {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("expiry timers reach Redis again");
                    }
                    if self.overflowed.swap(false, Ordering::SeqCst) {
                        tracing::warn!("timer changes were dropped: re-arming the owned slots from the database");
                        rearm(self.placement.owned());
                    }
                }
                Err(error) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(%error, "cannot write or claim expiry timers in Redis; retrying each tick");
                    }
                }
            }
        }
    }

    /// Writes every queued change, a pipeline per `CHANGES_PER_PIPELINE_MAX`.
    /// A batch that fails goes back to the queue, under any newer change.
    async fn flush(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        loop {
            let batch = self.take_changes(CHANGES_PER_PIPELINE_MAX);
            if batch.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for (id, change) in &batch {
                let key = timeouts_key(&self.namespace, transfer_slot(id));
                match change {
                    Some(at_ms) => pipe.cmd("ZADD").arg(key).arg(*at_ms).arg(id).ignore(),
                    None => pipe.cmd("ZREM").arg(key).arg(id).ignore(),
                };
            }
            if let Err(error) = pipe.query_async::<()>(conn).await {
                let mut changes = self.lock_changes();
                for (id, change) in batch {
                    changes.entry(id).or_insert(change);
                }
                return Err(error);
            }
            if batch.len() < CHANGES_PER_PIPELINE_MAX {
                return Ok(());
            }
        }
    }

    fn take_changes(&self, max: usize) -> Vec<(String, Option<i64>)> {
        let mut changes = self.lock_changes();
        let ids: Vec<String> = changes.keys().take(max).cloned().collect();
        ids.into_iter()
            .filter_map(|id| changes.remove_entry(&id))
            .collect()
    }

    /// Claims the due timers of every slot this node owns, in one pipeline.
    async fn claim(&self, conn: &mut ConnectionManager, now_ms: i64) -> redis::RedisResult<()> {
        let room = CLAIMED_MAX.saturating_sub(self.lock_claimed().len());
        let node = self.placement.node().to_string();
        let owned: Vec<(u32, String)> = (0..SLOTS)
            .filter_map(|slot| match self.placement.route(slot) {
                Route::Local {
                    epoch: Some(epoch), ..
                } => Some((slot, format!("{node}:{epoch}"))),
                _ => None,
            })
            .collect();
        if room == 0 || owned.is_empty() {
            return Ok(());
        }
        let per_slot = (room / owned.len()).clamp(1, CLAIMS_PER_SLOT_MAX);
        let mut pipe = redis::pipe();
        for (slot, lease) in &owned {
            pipe.add_command(claim_due_cmd(
                &self.namespace,
                *slot,
                lease,
                now_ms,
                per_slot,
            ));
        }
        let due: Vec<Vec<String>> = pipe.query_async(conn).await?;
        self.lock_claimed().extend(due.into_iter().flatten());
        Ok(())
    }

    fn change(&self, id: &str, change: Option<i64>) {
        let mut changes = self.lock_changes();
        if changes.len() >= CHANGES_MAX && !changes.contains_key(id) {
            if !self.overflowed.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    limit = CHANGES_MAX,
                    "too many timer changes waiting for Redis; dropping them until it takes writes"
                );
            }
            return;
        }
        changes.insert(id.to_string(), change);
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<i64>>> {
        self.changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_claimed(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.claimed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Timers for RedisTimers {
    fn schedule(&self, id: &str, at_ms: i64) {
        self.change(id, Some(at_ms));
    }

    fn cancel(&self, id: &str, _at_ms: i64) {
        self.change(id, None);
    }

    /// The claimed timers, oldest claim first. Redis compared their expiry
    /// with this node's clock when it claimed them.
    fn take_due(&self, _now_ms: i64, max: usize) -> Vec<String> {
        let mut claimed = self.lock_claimed();
        let count = claimed.len().min(max);
        claimed.drain(..count).collect()
    }

    fn len(&self) -> usize {
        self.lock_changes().len() + self.lock_claimed().len()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_once() {
        let timers = LocalTimers::default();
        timers.schedule("b", 20);
        timers.schedule("a", 10);
        timers.schedule("c", 30);
        timers.cancel("c", 30);
        assert_eq!(timers.take_due(5, 10), Vec::<String>::new());
        assert_eq!(timers.take_due(25, 1), vec!["a".to_string()]);
        assert_eq!(timers.take_due(25, 10), vec!["b".to_string()]);
        assert_eq!(timers.take_due(100, 10), Vec::<String>::new());
        assert!(timers.is_empty());
    }
}
