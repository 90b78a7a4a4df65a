//! The heartbeat: membership and slot leases in Redis.
//!
//! Every `heartbeat` each node
//! 1. renews its membership key (`{ns}:node:{id}` = its channel address,
//!    expiring after `ttl`) and lists the live members;
//! 2. reads every slot lease (`{ns}:slot:{n}` = `node:epoch`);
//! 3. runs [`plan`] and carries it out: renew its leases, claim free slots it
//!    should own (lease first, then the database epoch through
//!    [`SlotHooks::raise_epoch`]), hand over slots another member should own,
//!    and drop slots whose lease it lost.
//!
//! A lease is trusted locally only until two thirds of `ttl` after the
//! renewal was sent, so a paused node stops using its slots before another
//! node can take them; the database epoch covers the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::placement::{plan, Action, Lease, Placement, SLOTS};

/// A database answer for the heartbeat.
pub type EpochFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// What the heartbeat needs from the rest of the node.
pub trait SlotHooks: Send + Sync + 'static {
    /// The slot's fencing epoch in the database now.
    fn current_epoch(&self, slot: u32) -> EpochFuture<i64>;
    /// Raises `slot`'s fencing epoch from `expected`; the new epoch, or
    /// `None` if another claimer raised it first. Waits for writes still in
    /// flight under the old epoch.
    fn raise_epoch(&self, slot: u32, node: &str, expected: i64) -> EpochFuture<Option<i64>>;
    /// This node now owns `slots` (all those one heartbeat took, at once, so
    /// that work per acquisition, like re-arming timers, is done once).
    fn acquired(&self, slots: &[u32]);
    /// This node no longer owns `slot`: its actors must go.
    fn lost(&self, slot: u32);
    /// An operator changed reference data (participants, endpoints,
    /// settlement models) through some node: drop what is cached.
    fn reference_changed(&self);
}

/// The counter every node bumps when an operator changes reference data.
pub fn reference_version_key(namespace: &str) -> String {
    format!("{namespace}:reference_version")
}

/// Who this node is in the cluster.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Prefix of every key (several clusters may share one Redis).
    pub namespace: String,
    pub node: String,
    /// host:port of this node's node-to-node channel.
    pub address: String,
    pub heartbeat: Duration,
    pub ttl: Duration,
}

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Connects to Redis with bounded connect and response times.
pub async fn connect(url: &str, bound: Duration) -> Result<ConnectionManager, HeartbeatError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(bound))
        .set_response_timeout(Some(bound))
        .set_number_of_retries(1);
    let connecting = ConnectionManager::new_with_config(client, config);
    tokio::time::timeout(bound, connecting)
        .await
        .map_err(|_| HeartbeatError::Timeout(bound))?
        .map_err(HeartbeatError::from)
}

/// Runs the heartbeat until the task is dropped.
pub async fn run(
    mut conn: ConnectionManager,
    settings: NodeSettings,
    placement: Arc<Placement>,
    hooks: Arc<dyn SlotHooks>,
) {
    let mut interval = tokio::time::interval(settings.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reference_version: Option<i64> = None;
    loop {
        interval.tick().await;
        let beaten = beat(&mut conn, &settings, &placement, hooks.as_ref()).await;
        let beaten = match beaten {
            Ok(()) => {
                watch_reference(&mut conn, &settings, hooks.as_ref(), &mut reference_version).await
            }
            failed => failed,
        };
        match beaten {
            Ok(()) => placement.set_redis_ok(true),
            Err(error) => {
                if placement.redis_ok() {
                    tracing::error!(%error, "cluster heartbeat failed; leases lapse unless renewed in time");
                }
                placement.set_redis_ok(false);
            }
        }
    }
}

/// Clears the caches when the reference version moved since the last beat
/// (and, to be safe, when it cannot be compared: first beat after a Redis
/// restart).
async fn watch_reference(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
    hooks: &dyn SlotHooks,
    seen: &mut Option<i64>,
) -> Result<(), HeartbeatError> {
    let now: Option<i64> = redis::cmd("GET")
        .arg(reference_version_key(&settings.namespace))
        .query_async(conn)
        .await?;
    let now = now.unwrap_or(0);
    if seen.is_some_and(|seen| seen != now) {
        tracing::info!(
            version = now,
            "reference data changed on another node; caches cleared"
        );
        hooks.reference_changed();
    }
    *seen = Some(now);
    Ok(())
}

fn key(settings: &NodeSettings, what: &str) -> String {
    format!("{}:{what}", settings.namespace)
}

fn slot_key(settings: &NodeSettings, slot: u32) -> String {
    lease_key(&settings.namespace, slot)
}

/// The key of `slot`'s lease: `{ns}:slot:{n}` = `node:epoch`.
pub fn lease_key(namespace: &str, slot: u32) -> String {
    format!("{namespace}:slot:{slot}")
}

/// One heartbeat.
async fn beat(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
    placement: &Placement,
    hooks: &dyn SlotHooks,
) -> Result<(), HeartbeatError> {
    let members = register_and_list(conn, settings).await?;
    let names: Vec<String> = members.keys().cloned().collect();
    placement.set_members(members);
    let leases = read_leases(conn, settings).await?;
    let believed: Vec<bool> = (0..SLOTS)
        .map(|slot| placement.held_epoch(slot).is_some())
        .collect();
    // Renewals and hand-overs first: they only need Redis, and a claim may
    // wait on the database.
    let (claims, others): (Vec<Action>, Vec<Action>) =
        plan(&settings.node, &names, &leases, &believed)
            .into_iter()
            .partition(|action| matches!(action, Action::Claim(_)));
    for action in others {
        carry_out(conn, settings, placement, hooks, action).await?;
    }
    let mut acquired = Vec::new();
    let claimed = claim_all(conn, settings, placement, hooks, &claims, &mut acquired).await;
    if !acquired.is_empty() {
        hooks.acquired(&acquired);
    }
    claimed
}

/// The claims of one beat, in slot order; the slots taken go to `acquired`.
async fn claim_all(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
    placement: &Placement,
    hooks: &dyn SlotHooks,
    claims: &[Action],
    acquired: &mut Vec<u32>,
) -> Result<(), HeartbeatError> {
    for action in claims {
        let Action::Claim(slot) = *action else {
            continue;
        };
        match claim(conn, settings, placement, hooks, slot).await? {
            Claimed::Acquired => acquired.push(slot),
            Claimed::NotTaken => {}
            // The database is slow (a stopped node's transaction may hold
            // the fencing row until MariaDB kills it): try on the next beat,
            // keeping this beat short so membership and leases stay renewed.
            Claimed::Stalled => break,
        }
    }
    Ok(())
}

/// How one claim ended.
enum Claimed {
    Acquired,
    /// Another node holds the lease, or raised the epoch first.
    NotTaken,
    /// The database did not answer in time.
    Stalled,
}

async fn register_and_list(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
) -> Result<BTreeMap<String, String>, HeartbeatError> {
    let nodes_key = key(settings, "nodes");
    let ttl_ms = settings.ttl.as_millis() as u64;
    let (_, _, ids): ((), (), Vec<String>) = redis::pipe()
        .cmd("SET")
        .arg(key(settings, &format!("node:{}", settings.node)))
        .arg(&settings.address)
        .arg("PX")
        .arg(ttl_ms)
        .cmd("SADD")
        .arg(&nodes_key)
        .arg(&settings.node)
        .cmd("SMEMBERS")
        .arg(&nodes_key)
        .query_async(conn)
        .await?;
    let keys: Vec<String> = ids
        .iter()
        .map(|id| key(settings, &format!("node:{id}")))
        .collect();
    let addresses: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut members = BTreeMap::new();
    for (id, address) in ids.into_iter().zip(addresses) {
        match address {
            Some(address) => {
                members.insert(id, address);
            }
            None => {
                // Its key expired: the node stopped heart-beating.
                tracing::warn!(node = %id, "cluster member is gone");
                let _: () = redis::cmd("SREM")
                    .arg(&nodes_key)
                    .arg(&id)
                    .query_async(conn)
                    .await?;
            }
        }
    }
    Ok(members)
}

async fn read_leases(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
) -> Result<Vec<Lease>, HeartbeatError> {
    let keys: Vec<String> = (0..SLOTS).map(|slot| slot_key(settings, slot)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    Ok(values
        .into_iter()
        .map(|v| parse_lease(v.as_deref()))
        .collect())
}

/// `node:epoch` (or `node:pending` while the owner raises the epoch).
pub fn parse_lease(value: Option<&str>) -> Lease {
    match value.and_then(|v| v.rsplit_once(':')) {
        None => Lease::Free,
        Some((node, epoch)) => Lease::Held {
            node: node.to_string(),
            epoch: epoch.parse().ok(),
        },
    }
}

/// Sets KEYS[1] to ARGV[2] with PX ARGV[3] if it is free or held by this
/// node (value starting with ARGV[1]); 1 when done.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Replaces KEYS[1] by ARGV[2] with PX ARGV[3] if it is exactly ARGV[1]; 1 when done.
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Deletes KEYS[1] if its value starts with ARGV[1].
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

async fn eval(
    conn: &mut ConnectionManager,
    script: &str,
    key: &str,
    args: &[&str],
) -> Result<i64, HeartbeatError> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    for arg in args {
        cmd.arg(*arg);
    }
    Ok(cmd.query_async(conn).await?)
}

/// How long a lease renewed at `sent` is trusted here.
fn trusted_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl * 2 / 3
}

async fn carry_out(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
    placement: &Placement,
    hooks: &dyn SlotHooks,
    action: Action,
) -> Result<(), HeartbeatError> {
    let ttl_ms = (settings.ttl.as_millis() as u64).to_string();
    let prefix = format!("{}:", settings.node);
    match action {
        Action::Renew(slot) => {
            let Some(epoch) = placement.held_epoch(slot) else {
                return Ok(());
            };
            let sent = Instant::now();
            let value = format!("{}:{epoch}", settings.node);
            let renewed = eval(
                conn,
                SWAP,
                &slot_key(settings, slot),
                &[&value, &value, &ttl_ms],
            )
            .await?;
            if renewed == 1 {
                placement.set_mine(slot, epoch, trusted_until(sent, settings.ttl));
            } else {
                drop_slot(placement, hooks, slot, "lease changed under us");
            }
        }
        // Claims may wait on the database: `beat` runs them after the rest.
        Action::Claim(_) => {}
        Action::Release(slot) => {
            // Stop using it first, so nothing is written under it while the
            // next owner raises the epoch (which would refuse it anyway).
            drop_slot(placement, hooks, slot, "handed over");
            eval(conn, RELEASE, &slot_key(settings, slot), &[&prefix]).await?;
        }
        Action::Lost(slot) => drop_slot(placement, hooks, slot, "lease lost"),
        Action::Peer(slot, node) => placement.set_peer(slot, &node),
        Action::Wait(slot) => {
            placement.set_nobody(slot);
        }
    }
    Ok(())
}

fn drop_slot(placement: &Placement, hooks: &dyn SlotHooks, slot: u32, why: &str) {
    if placement.set_nobody(slot) {
        tracing::info!(slot, why, "slot dropped");
        hooks.lost(slot);
    }
}

/// Claims a free slot.
async fn claim(
    conn: &mut ConnectionManager,
    settings: &NodeSettings,
    placement: &Placement,
    hooks: &dyn SlotHooks,
    slot: u32,
) -> Result<Claimed, HeartbeatError> {
    let ttl_ms = (settings.ttl.as_millis() as u64).to_string();
    let prefix = format!("{}:", settings.node);
    let pending = format!("{}:pending", settings.node);
    let key = slot_key(settings, slot);
    // Read before the lease is taken: the raise below succeeds only if no
    // other claimer raised the epoch since, however late it arrives.
    let Some(Ok(before)) = bounded(settings.heartbeat, hooks.current_epoch(slot)).await else {
        return Ok(Claimed::Stalled);
    };
    let sent = Instant::now();
    if eval(conn, CLAIM, &key, &[&prefix, &pending, &ttl_ms]).await? != 1 {
        return Ok(Claimed::NotTaken);
    }
    let raised = bounded(
        settings.heartbeat,
        hooks.raise_epoch(slot, &settings.node, before),
    )
    .await;
    let epoch = match raised {
        Some(Ok(Some(epoch))) => epoch,
        Some(Ok(None)) => {
            tracing::warn!(
                slot,
                before,
                "another claimer raised the epoch first; giving the lease back"
            );
            eval(conn, RELEASE, &key, &[&prefix]).await?;
            return Ok(Claimed::NotTaken);
        }
        Some(Err(error)) => {
            tracing::error!(slot, %error, "cannot raise the slot's epoch; giving the lease back");
            eval(conn, RELEASE, &key, &[&prefix]).await?;
            return Ok(Claimed::Stalled);
        }
        None => {
            tracing::warn!(
                slot,
                "raising the slot's epoch is slow; giving the lease back"
            );
            eval(conn, RELEASE, &key, &[&prefix]).await?;
            return Ok(Claimed::Stalled);
        }
    };
    let value = format!("{}:{epoch}", settings.node);
    if eval(conn, SWAP, &key, &[&pending, &value, &ttl_ms]).await? == 1 {
        placement.set_mine(slot, epoch, trusted_until(sent, settings.ttl));
        tracing::info!(slot, epoch, "slot acquired");
        return Ok(Claimed::Acquired);
    }
    // The lease lapsed while the database was slow; whoever takes the slot
    // next reads this epoch and raises past it.
    tracing::warn!(slot, epoch, "lease lapsed while raising the epoch");
    Ok(Claimed::NotTaken)
}

/// `work`'s answer if it comes within `limit`.
async fn bounded<T>(limit: Duration, work: EpochFuture<T>) -> Option<Result<T, String>> {
    tokio::time::timeout(limit, work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_parse() {
        assert_eq!(parse_lease(None), Lease::Free);
        assert_eq!(
            parse_lease(Some("node-1:42")),
            Lease::Held {
                node: "node-1".into(),
                epoch: Some(42)
            }
        );
        assert_eq!(
            parse_lease(Some("node-1:pending")),
            Lease::Held {
                node: "node-1".into(),
                epoch: None
            }
        );
    }
}
