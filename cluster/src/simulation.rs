//! A deterministic, seeded simulation of slot placement and fencing.
//!
//! Nodes, Redis and the database live in one discrete-event loop over
//! simulated milliseconds, ordered by (time, sequence number), so a seed
//! replays exactly. Every heartbeat runs the real [`plan`] on leases parsed
//! by the real [`parse_lease`], and re-enacts step by step what
//! `coordinator::beat`, `carry_out` and `claim` do with each action (they
//! are async against a real Redis), with the semantics of its Redis scripts
//! (`CLAIM`, `SWAP`, `RELEASE`) and of `storage::fence` (a write carrying
//! `Fence { slot, epoch }` is accepted iff the slot's epoch is `epoch`; a
//! raise from `expected` does `epoch = epoch + 1` iff the epoch is still
//! `expected`, and otherwise changes nothing).
//!
//! A heartbeat carries out every action but the claims first, in slot
//! order, then the claims, in slot order, until one returns false. A claim
//! reads the slot's epoch (`before`, bounded by the heartbeat interval; late
//! or failed: no more claims this beat), takes the lease (`CLAIM`, pending),
//! raises the epoch from `before` (bounded likewise), and then swaps the
//! pending lease for `node:epoch` (trusted until `sent + 2T/3`, `sent` taken
//! just before `CLAIM`), or gives the lease back (`RELEASE`): and claims on
//! if another claimer raised first, or stops claiming for this beat if the
//! raise failed or timed out.
//!
//! Each Redis command is a round trip: the request reaches Redis after a
//! latency, Redis applies it then and there, and the answer comes back
//! after another latency. The node handles the answer only when it runs, so
//! a pause between request and answer delays the node, never Redis. A
//! database request (`Store::run`) is a spawned task: a heartbeat that
//! stops waiting for it (the bound) does not cancel it, so a raise that
//! timed out may still reach the database and be applied much later, even
//! after its process died.
//!
//! Faults, drawn from the seed: pauses (SIGSTOP, also far past the lease
//! ttl; in-flight writes land only once the node resumes, and trust is
//! judged by the real clock afterwards), partitions from Redis (the node
//! keeps running and writing), kills with or without a restart under the
//! same name (the leftover leases then take plan's "held by me but not
//! believed: claim" path), Redis restarts (every key lost at once), slow
//! database requests (answered late, or reaching the database late after
//! waiting for a pooled connection; so raises time out and land after the
//! claim gave up) and nodes joining.
//!
//! Invariants, checked as the run goes; the first violation stops the run
//! and the test prints the seed and the timeline, one line per event:
//! 1. Fencing: every write the database accepts carries the slot's highest
//!    epoch ever raised, accepted epochs never go down per slot, and the
//!    epoch was raised by the very process (node and incarnation) writing.
//! 2. No two nodes trust a view of the same slot at the same epoch.
//! 3. At most one node trusts (`now < valid_until`) a view of a slot. With
//!    `valid_until = sent + 2T/3` and the lease's expiry at (time Redis
//!    applied the command) + T >= sent + T, a trusted view implies its lease
//!    is still in Redis, so two trusted views would mean two leases in one
//!    key. A Redis restart breaks the premise: every lease vanishes while
//!    views stay trusted, and another node may claim at once; then only
//!    fencing (1) protects. A view trusted across a restart at `r` was sent
//!    before `r`, so it lapses before `r + 2T/3`: invariant 3 is waived
//!    inside that window only (not for whole runs with a restart).
//! 4. Liveness: `QUIET` (5T) after the last fault, every slot is trusted by
//!    exactly its `desired_owner` among the running nodes, and a write to
//!    every slot is accepted.
//!
//! One seed alone, with its timeline:
//! `MOJASWITCH_SIM_SEED=<n> cargo test -p switch-cluster simulation -- --nocapture`;
//! more seeds than the tests run (after the same base):
//! `MOJASWITCH_SIM_SEEDS=<count> cargo test --release -p switch-cluster simulation`.
//!
//! This simulation found a protocol bug, fixed since: `claim` used to raise
//! the epoch unconditionally, however late the raise reached the database.
//! If the pending lease lapsed meanwhile (a pause between `CLAIM` and the
//! raise, or a raise waiting for a pooled connection) and another node
//! claimed the slot and raised its epoch first, the late raise outdated the
//! new owner's epoch: its renewals still succeeded, nothing ever dropped
//! the slot, and every write to it was refused for good. The raise is now a
//! compare-and-set from the epoch read before the lease was taken; the
//! scripted tests `a_late_epoch_raise_must_not_fence_out_the_next_owner`
//! and `a_pause_between_lease_and_raise_must_not_fence_out_the_next_owner`
//! replay the two ways it happened, and [`Bug::RaiseWithoutCas`] puts the
//! old raise back to show the random runs catch it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

use crate::coordinator::parse_lease;
use crate::placement::{desired_owner, plan, Action, Lease, SLOTS};

/// Simulated milliseconds.
type Time = u64;
type NodeId = usize;

const HEARTBEAT: Time = 500;
const TTL: Time = 3_000;
/// `coordinator::trusted_until`: two thirds of the ttl after the request was sent.
const TRUST: Time = TTL * 2 / 3;
/// How long after the last fault everything must have settled.
const QUIET: Time = 5 * TTL;
/// How long a node waits for a Redis answer that never comes.
const REDIS_TIMEOUT: Time = 1_000;
const SLOT_COUNT: usize = SLOTS as usize;

/// Seeds the random test runs: `BASE_SEED`, `BASE_SEED + 1`, ...
const BASE_SEED: u64 = 0x5eed_0000;
const SEEDS: u64 = 300;

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A deliberate defect, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// The database accepts writes at an epoch older than the slot's.
    DbAcceptsStaleEpochs,
    /// A lease is trusted for two ttls after the request was sent.
    TrustForTwoTtl,
    /// A renewal the lease script refused is taken as done.
    RenewIgnoresOutcome,
    /// The database raises the epoch whatever it is now (the raise before
    /// the fix: a late one outdates the next owner's epoch).
    RaiseWithoutCas,
}

/// Where the time of a slow database request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlowRaise {
    /// The database applies the request at once; its answer is late (a
    /// raise waiting for a row lock; a plain read does not wait for it).
    AnswersLate,
    /// The request reaches the database late (waiting for a pooled
    /// connection: up to `acquire_timeout_ms`, 5 s, more than the ttl).
    /// The wait is in the process, so a pause holds the request back too.
    ArrivesLate,
    /// Either, split at random.
    Either,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// Starts the node (first start, join, or restart under the same name).
    Start(NodeId),
    Kill(NodeId),
    Pause(NodeId, Time),
    /// Cuts the node off from Redis (not from the database).
    Partition(NodeId, Time),
    /// Redis loses every key and answers nothing for the duration.
    RedisRestart(Time),
    /// Database requests the node starts in the window are slow.
    SlowDb(NodeId, Time),
    /// A write to `slot` decided now, landing after `delay` (scripted tests).
    Write {
        node: NodeId,
        slot: u32,
        delay: Time,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    nodes: usize,
    faults: Vec<(Time, Fault)>,
    /// No fault starts or lasts past this; the liveness check runs `QUIET` later.
    faults_end: Time,
    /// Every running node writes to random slots.
    random_writes: bool,
    /// Duration of a slow request (`None`: random, mostly in `[T/2, 2T]`,
    /// sometimes around the heartbeat interval that bounds it).
    slow_raise: Option<Time>,
    slow_split: SlowRaise,
    /// Whether a slow window delays epoch reads too (only the part spent
    /// before reaching the database matters to a read).
    slow_reads: bool,
    /// Percentage of slow requests that fail (a raise applied or not).
    raise_failures: u64,
    bug: Option<Bug>,
}

impl Scenario {
    /// `nodes` nodes started at 0, then `faults`.
    fn scripted(nodes: usize, faults: Vec<(Time, Fault)>, faults_end: Time) -> Scenario {
        let mut all: Vec<(Time, Fault)> = (0..nodes).map(|n| (0, Fault::Start(n))).collect();
        all.extend(faults);
        all.sort_by_key(|(at, _)| *at);
        Scenario {
            nodes,
            faults: all,
            faults_end,
            random_writes: true,
            slow_raise: Some(2 * TTL),
            slow_split: SlowRaise::AnswersLate,
            slow_reads: false,
            raise_failures: 0,
            bug: None,
        }
    }

    /// The faults a seed draws.
    fn random(seed: u64, slow_split: SlowRaise) -> Scenario {
        let mut rng = Rng(seed ^ 0x0fa1_7500_0000_0000);
        let nodes = rng.between(2, 5) as usize;
        let faults_end = rng.between(8_000, 25_000);
        let redis_restarts = rng.chance(35);
        let mut faults = vec![(0, Fault::Start(0))];
        for node in 1..nodes {
            let at = if rng.chance(30) {
                rng.between(1_000, faults_end - 1_000) // joins later
            } else {
                rng.between(0, 300)
            };
            faults.push((at, Fault::Start(node)));
        }
        for _ in 0..rng.between(2, 12) {
            let at = rng.between(500, faults_end - 200);
            let left = faults_end - at;
            let node = rng.below(nodes as u64) as usize;
            match rng.below(100) {
                0..=24 => {
                    let pause = if rng.chance(50) {
                        rng.between(100, TTL)
                    } else {
                        rng.between(TTL, 3 * TTL)
                    };
                    faults.push((at, Fault::Pause(node, pause.min(left))));
                }
                25..=49 => {
                    let cut = rng.between(300, 3 * TTL).min(left);
                    faults.push((at, Fault::Partition(node, cut)));
                }
                50..=64 => {
                    faults.push((at, Fault::Kill(node)));
                    // Node 0 always comes back, so someone is left to own the slots.
                    if node == 0 || rng.chance(60) {
                        let back = rng.between(0, 2 * TTL).min(left);
                        faults.push((at + back, Fault::Start(node)));
                    }
                }
                65..=74 if redis_restarts => {
                    faults.push((at, Fault::RedisRestart(rng.between(0, 1_500).min(left))));
                }
                _ => {
                    let slow = rng.between(500, 2 * TTL).min(left);
                    faults.push((at, Fault::SlowDb(node, slow)));
                }
            }
        }
        faults.sort_by_key(|(at, _)| *at); // stable: a kill stays before its restart
        Scenario {
            nodes,
            faults,
            faults_end,
            random_writes: true,
            slow_raise: None,
            slow_split,
            slow_reads: true,
            raise_failures: 15,
            bug: None,
        }
    }
}

/// What became of a scripted write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    Pending,
    NotRunning,
    /// The node did not trust a view of the slot: not routed locally.
    NotLocal,
    Accepted(i64),
    Refused {
        epoch: i64,
        db: i64,
    },
    /// The node was killed before it reached the database.
    Dropped,
}

/// `placement::SlotView`, on the simulated clock.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    Nobody,
    Peer(String),
    Mine { epoch: i64, valid_until: Time },
}

#[derive(Debug)]
enum Op {
    /// Membership key `PX ttl`, then the live members (`register_and_list`).
    Register,
    /// `read_leases`.
    ReadLeases,
    /// The `SWAP` script.
    Swap {
        slot: u32,
        expect: String,
        value: String,
    },
    /// The `CLAIM` script with the node's prefix and `node:pending`.
    Claim { slot: u32 },
    /// The `RELEASE` script with the node's prefix.
    Release { slot: u32 },
}

#[derive(Debug)]
enum Reply {
    Failed,
    Members(Vec<String>),
    Leases(Vec<Option<String>>),
    Done(bool),
}

/// How a database request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RaiseOutcome {
    Raised,
    /// Refused before the update (e.g. no pooled connection in time).
    FailsBefore,
    /// Committed, but the answer is lost.
    FailsAfter,
}

/// A database request of `claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbOp {
    /// `hooks.current_epoch` (`Store::slot_epoch`).
    Read,
    /// `hooks.raise_epoch` from `expected` (`Store::raise_slot_epoch`).
    Raise { expected: i64 },
}

/// What a database request answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbAnswer {
    Epoch(i64),
    /// The new epoch, or `None`: another claimer raised it first.
    Raised(Option<i64>),
    Failed,
}

/// Where a heartbeat stands: what it waits for. `token` names the one
/// database request a claim waits for, so an answer after the bound (or a
/// bound after the answer) is ignored.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    Register,
    Leases,
    Renew {
        slot: u32,
        epoch: i64,
        sent: Time,
    },
    ReadEpoch {
        slot: u32,
        token: u64,
    },
    ClaimLease {
        slot: u32,
        before: i64,
        sent: Time,
    },
    Raise {
        slot: u32,
        sent: Time,
        token: u64,
    },
    ClaimSwap {
        slot: u32,
        epoch: i64,
        sent: Time,
    },
    Release,
    /// `RELEASE` after a raise that did not give an epoch; `stop`: no more
    /// claims this beat.
    GiveBack {
        stop: bool,
    },
}

impl Waiting {
    fn token(&self) -> Option<u64> {
        match self {
            Waiting::ReadEpoch { token, .. } | Waiting::Raise { token, .. } => Some(*token),
            _ => None,
        }
    }
}

struct Beat {
    started: Time,
    waiting: Waiting,
    /// Every action but the claims, then the claims.
    actions: std::vec::IntoIter<Action>,
}

#[derive(Debug, Clone, Copy)]
struct Write {
    node: NodeId,
    inc: u32,
    slot: u32,
    epoch: i64,
    decided: Time,
    scripted: Option<usize>,
}

#[derive(Debug)]
enum Event {
    Fault(Fault),
    // Redis and the database act on these whatever the node does.
    AtRedis {
        node: NodeId,
        inc: u32,
        op: Op,
    },
    AtDb {
        node: NodeId,
        inc: u32,
        token: u64,
        slot: u32,
        op: DbOp,
        outcome: RaiseOutcome,
        answer_after: Time,
    },
    // The node acts on these: only while it runs, after any pause.
    Beat {
        node: NodeId,
        inc: u32,
    },
    Reply {
        node: NodeId,
        inc: u32,
        reply: Reply,
    },
    DbAnswer {
        node: NodeId,
        inc: u32,
        token: u64,
        answer: DbAnswer,
    },
    /// The heartbeat's bound on a database request expires.
    DbTimeout {
        node: NodeId,
        inc: u32,
        token: u64,
    },
    WriteTick {
        node: NodeId,
        inc: u32,
    },
    TryWrite {
        node: NodeId,
        inc: u32,
        slot: u32,
        delay: Time,
        scripted: Option<usize>,
    },
    WriteLands(Write),
    /// A database request leaves the process (it got a pooled connection).
    DbLeaves {
        node: NodeId,
        inc: u32,
        token: u64,
        slot: u32,
        op: DbOp,
        outcome: RaiseOutcome,
        answer_after: Time,
    },
}

impl Event {
    /// The process a node-side event belongs to.
    fn owner(&self) -> (NodeId, u32) {
        match self {
            Event::Beat { node, inc }
            | Event::Reply { node, inc, .. }
            | Event::DbAnswer { node, inc, .. }
            | Event::DbTimeout { node, inc, .. }
            | Event::WriteTick { node, inc }
            | Event::TryWrite { node, inc, .. }
            | Event::WriteLands(Write { node, inc, .. })
            | Event::DbLeaves { node, inc, .. } => (*node, *inc),
            other => unreachable!("not a node's event: {other:?}"),
        }
    }
}

struct Queued {
    at: Time,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Scenario(String),
    Started(NodeId),
    Killed(NodeId),
    Paused {
        node: NodeId,
        until: Time,
    },
    Partitioned {
        node: NodeId,
        until: Time,
    },
    RedisRestarted {
        up_at: Time,
    },
    SlowDb {
        node: NodeId,
        until: Time,
    },
    HeartbeatFailed(NodeId),
    HeartbeatBack(NodeId),
    Members {
        node: NodeId,
        members: Vec<String>,
    },
    ClaimRefused {
        node: NodeId,
        slot: u32,
    },
    /// A claim could not read the slot's epoch in time: no more claims.
    EpochUnread {
        node: NodeId,
        slot: u32,
    },
    Pending {
        node: NodeId,
        slot: u32,
        before: i64,
    },
    Leftover {
        node: NodeId,
        slot: u32,
    },
    /// Two trusted views of a slot right after a Redis restart (allowed).
    Overlap {
        node: NodeId,
        slot: u32,
        epoch: i64,
        other: NodeId,
        until: Time,
        restart: Time,
    },
    /// The database applied a raise; `late`: after its claim gave up on it.
    Raised {
        node: NodeId,
        slot: u32,
        epoch: i64,
        answered: bool,
        late: bool,
    },
    /// The database refused a raise: the epoch is no longer `expected`.
    RaiseRefused {
        node: NodeId,
        slot: u32,
        expected: i64,
        db: i64,
        late: bool,
    },
    /// The claim gives the lease back (`RELEASE`) for want of an epoch.
    GaveBack {
        node: NodeId,
        slot: u32,
        why: &'static str,
    },
    Claimed {
        node: NodeId,
        slot: u32,
        epoch: i64,
    },
    ClaimLapsed {
        node: NodeId,
        slot: u32,
        epoch: i64,
    },
    Dropped {
        node: NodeId,
        slot: u32,
        epoch: i64,
        why: &'static str,
    },
    Write {
        node: NodeId,
        slot: u32,
        epoch: i64,
        decided: Time,
        refused_by: Option<i64>,
    },
    Violation(String),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Scenario(text) => write!(f, "{text}"),
            Line::Started(n) => write!(f, "n{n} started"),
            Line::Killed(n) => write!(f, "n{n} killed"),
            Line::Paused { node, until } => write!(f, "n{node} paused until t={until}"),
            Line::Partitioned { node, until } => {
                write!(f, "n{node} cut off from redis until t={until}")
            }
            Line::RedisRestarted { up_at } => {
                write!(
                    f,
                    "redis restarted, every key lost (answers again at t={up_at})"
                )
            }
            Line::SlowDb { node, until } => {
                write!(f, "n{node} epoch raises slow until t={until}")
            }
            Line::HeartbeatFailed(n) => write!(f, "n{n} heartbeat failed"),
            Line::HeartbeatBack(n) => write!(f, "n{n} heartbeat reaches redis again"),
            Line::Members { node, members } => {
                write!(f, "n{node} sees members [{}]", members.join(", "))
            }
            Line::ClaimRefused { node, slot } => {
                write!(f, "n{node} claim s{slot} refused (lease held by another)")
            }
            Line::Raised {
                node,
                slot,
                epoch,
                answered,
                late,
            } => {
                write!(f, "db raise s{slot} -> {epoch} for n{node}")?;
                if *late {
                    write!(f, " (late: n{node} no longer waits for it)")?;
                } else if !*answered {
                    write!(f, " (answer lost)")?;
                }
                Ok(())
            }
            Line::RaiseRefused {
                node,
                slot,
                expected,
                db,
                late,
            } => {
                write!(
                    f,
                    "db refuses n{node}'s raise of s{slot} from {expected}: epoch is {db}"
                )?;
                if *late {
                    write!(f, " (late: n{node} no longer waits for it)")?;
                }
                Ok(())
            }
            Line::EpochUnread { node, slot } => write!(
                f,
                "n{node} claim s{slot}: epoch read failed or late; no more claims this beat"
            ),
            Line::Pending { node, slot, before } => write!(
                f,
                "n{node} claim s{slot}: lease pending, raising the epoch from {before}"
            ),
            Line::Leftover { node, slot } => {
                write!(
                    f,
                    "n{node} finds its own leftover lease on s{slot}: claims it anew"
                )
            }
            Line::Overlap {
                node,
                slot,
                epoch,
                other,
                until,
                restart,
            } => write!(
                f,
                "n{node} trusts s{slot} at epoch {epoch} while n{other} still trusts it until \
                 t={until}: allowed, redis restarted at t={restart}; fencing decides"
            ),
            Line::GaveBack { node, slot, why } => {
                write!(f, "n{node} claim s{slot}: {why}; gives the lease back")
            }
            Line::Claimed { node, slot, epoch } => {
                write!(f, "n{node} claim s{slot} -> epoch {epoch}")
            }
            Line::ClaimLapsed { node, slot, epoch } => write!(
                f,
                "n{node} claim s{slot} epoch {epoch} unused: lease lapsed during the raise"
            ),
            Line::Dropped {
                node,
                slot,
                epoch,
                why,
            } => write!(f, "n{node} drops s{slot} e{epoch} ({why})"),
            Line::Write {
                node,
                slot,
                epoch,
                decided,
                refused_by,
            } => {
                write!(f, "n{node} write s{slot} e{epoch} ")?;
                match refused_by {
                    None => write!(f, "accepted")?,
                    Some(db) => write!(f, "REFUSED (db has {db})")?,
                }
                write!(f, " (decided t={decided})")
            }
            Line::Violation(what) => write!(f, "VIOLATION: {what}"),
        }
    }
}

struct Node {
    name: String,
    /// `name:`, what the scripts match a lease of this node by.
    prefix: String,
    /// Bumped by every start and kill: events of an older process are void.
    inc: u32,
    running: bool,
    paused_until: Time,
    partitioned_until: Time,
    slow_db_until: Time,
    redis_ok: bool,
    members: Vec<String>,
    view: Vec<View>,
    beat: Option<Beat>,
}

struct Redis {
    /// Answers nothing before (restarting).
    up_at: Time,
    /// Expiry of each node's membership key (0: none).
    members: Vec<Time>,
    leases: Vec<Option<(String, Time)>>,
}

impl Redis {
    fn lease(&self, slot: u32, now: Time) -> Option<&str> {
        match &self.leases[slot as usize] {
            Some((value, expiry)) if *expiry > now => Some(value),
            _ => None,
        }
    }

    fn set_lease(&mut self, slot: u32, value: String, now: Time) {
        self.leases[slot as usize] = Some((value, now + TTL));
    }

    fn apply(&mut self, nodes: &[Node], node: NodeId, op: Op, now: Time) -> Reply {
        let me = &nodes[node];
        match op {
            Op::Register => {
                self.members[node] = now + TTL;
                let mut names: Vec<String> = (0..nodes.len())
                    .filter(|n| self.members[*n] > now)
                    .map(|n| nodes[n].name.clone())
                    .collect();
                names.sort();
                Reply::Members(names)
            }
            Op::ReadLeases => Reply::Leases(
                (0..SLOTS)
                    .map(|slot| self.lease(slot, now).map(str::to_string))
                    .collect(),
            ),
            Op::Swap {
                slot,
                expect,
                value,
            } => {
                let swapped = self.lease(slot, now) == Some(expect.as_str());
                if swapped {
                    self.set_lease(slot, value, now);
                }
                Reply::Done(swapped)
            }
            Op::Claim { slot } => {
                let claimed = self
                    .lease(slot, now)
                    .is_none_or(|value| value.starts_with(&me.prefix));
                if claimed {
                    self.set_lease(slot, format!("{}:pending", me.name), now);
                }
                Reply::Done(claimed)
            }
            Op::Release { slot } => {
                let released = self
                    .lease(slot, now)
                    .is_some_and(|value| value.starts_with(&me.prefix));
                if released {
                    self.leases[slot as usize] = None;
                }
                Reply::Done(released)
            }
        }
    }
}

struct Db {
    epoch: Vec<i64>,
    /// Which process raised each (slot, epoch).
    raised_by: BTreeMap<(u32, i64), (NodeId, u32)>,
    last_accepted: Vec<i64>,
}

/// What a run left behind.
struct Report {
    seed: u64,
    lines: Vec<(Time, Line)>,
    scripted: Vec<WriteOutcome>,
    violation: Option<String>,
    /// The node trusting each slot at the end, with its epoch.
    owners: Vec<Option<(NodeId, i64)>>,
    db_epochs: Vec<i64>,
}

impl Report {
    fn timeline(&self) -> String {
        let mut text = String::new();
        for (at, line) in &self.lines {
            text.push_str(&format!("t={at} {line}\n"));
        }
        text
    }

    /// Panics with the seed and the timeline on a violation.
    fn assert_holds(&self) {
        if let Some(violation) = &self.violation {
            eprintln!("{}", self.timeline());
            panic!(
                "simulation seed {seed}: {violation}\n(timeline above; this seed alone: \
                 MOJASWITCH_SIM_SEED={seed} cargo test -p switch-cluster simulation -- --nocapture)",
                seed = self.seed
            );
        }
    }

    /// When the first line matching `what` was logged.
    fn first(&self, what: impl Fn(&Line) -> bool) -> Option<Time> {
        self.lines
            .iter()
            .find(|(_, line)| what(line))
            .map(|(at, _)| *at)
    }

    fn count(&self, what: impl Fn(&Line) -> bool) -> usize {
        self.lines.iter().filter(|(_, line)| what(line)).count()
    }
}

struct Sim<'a> {
    scenario: &'a Scenario,
    rng: Rng,
    now: Time,
    seq: u64,
    /// Names database requests (`Waiting::token`).
    tokens: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    redis: Redis,
    db: Db,
    redis_restarts: Vec<Time>,
    lines: Vec<(Time, Line)>,
    scripted: Vec<WriteOutcome>,
    violation: Option<String>,
}

/// Runs `scenario` with `seed` driving latencies, writes and slow raises.
fn run(seed: u64, scenario: &Scenario) -> Report {
    let mut sim = Sim {
        scenario,
        rng: Rng(seed),
        now: 0,
        seq: 0,
        tokens: 0,
        queue: BinaryHeap::new(),
        nodes: (0..scenario.nodes)
            .map(|n| Node {
                name: format!("n{n}"),
                prefix: format!("n{n}:"),
                inc: 0,
                running: false,
                paused_until: 0,
                partitioned_until: 0,
                slow_db_until: 0,
                redis_ok: true,
                members: Vec::new(),
                view: vec![View::Nobody; SLOT_COUNT],
                beat: None,
            })
            .collect(),
        redis: Redis {
            up_at: 0,
            members: vec![0; scenario.nodes],
            leases: vec![None; SLOT_COUNT],
        },
        db: Db {
            epoch: vec![0; SLOT_COUNT],
            raised_by: BTreeMap::new(),
            last_accepted: vec![0; SLOT_COUNT],
        },
        redis_restarts: Vec::new(),
        lines: Vec::new(),
        scripted: Vec::new(),
        violation: None,
    };
    sim.log(Line::Scenario(format!(
        "seed {seed}: {} nodes, faults until t={}, {:?} slow raises{}",
        scenario.nodes,
        scenario.faults_end,
        scenario.slow_split,
        match scenario.bug {
            Some(bug) => format!(", deliberate bug {bug:?}"),
            None => String::new(),
        }
    )));
    for (at, fault) in &scenario.faults {
        assert!(*at <= scenario.faults_end, "fault after faults_end");
        sim.push(*at, Event::Fault(fault.clone()));
    }
    let end = scenario.faults_end + QUIET;
    while let Some(next) = sim.queue.pop() {
        if next.at > end || sim.violation.is_some() {
            break;
        }
        sim.now = next.at;
        sim.handle(next.event);
    }
    if sim.violation.is_none() {
        sim.now = end;
        sim.check_settled();
    }
    let now = sim.now;
    let owners = (0..SLOT_COUNT)
        .map(|slot| {
            sim.nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.running)
                .find_map(|(n, node)| match node.view[slot] {
                    View::Mine { epoch, valid_until } if now < valid_until => Some((n, epoch)),
                    _ => None,
                })
        })
        .collect();
    Report {
        seed,
        lines: sim.lines,
        scripted: sim.scripted,
        violation: sim.violation,
        owners,
        db_epochs: sim.db.epoch,
    }
}

impl Sim<'_> {
    fn push(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn log(&mut self, line: Line) {
        self.lines.push((self.now, line));
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.log(Line::Violation(what.clone()));
            self.violation = Some(what);
        }
    }

    fn bug(&self, bug: Bug) -> bool {
        self.scenario.bug == Some(bug)
    }

    /// One Redis or database hop.
    fn latency(&mut self) -> Time {
        if self.rng.chance(2) {
            self.rng.between(10, 100)
        } else {
            self.rng.between(1, 3)
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Fault(fault) => self.fault(fault),
            Event::AtRedis { node, inc, op } => self.at_redis(node, inc, op),
            Event::AtDb {
                node,
                inc,
                token,
                slot,
                op,
                outcome,
                answer_after,
            } => self.at_db(node, inc, token, slot, op, outcome, answer_after),
            event => {
                let (n, inc) = event.owner();
                let node = &self.nodes[n];
                if !node.running || node.inc != inc {
                    // Died with its process.
                    if let Event::WriteLands(Write {
                        scripted: Some(i), ..
                    }) = event
                    {
                        self.scripted[i] = WriteOutcome::Dropped;
                    }
                    return;
                }
                if self.now < node.paused_until {
                    let resume = node.paused_until;
                    self.push(resume, event);
                    return;
                }
                match event {
                    Event::Beat { .. } => self.start_beat(n),
                    Event::Reply { reply, .. } => self.on_reply(n, reply),
                    Event::DbAnswer { token, answer, .. } => self.on_db_answer(n, token, answer),
                    Event::DbTimeout { token, .. } => self.on_db_timeout(n, token),
                    Event::WriteTick { .. } => self.write_tick(n),
                    Event::TryWrite {
                        slot,
                        delay,
                        scripted,
                        ..
                    } => self.try_write(n, slot, delay, scripted),
                    Event::WriteLands(write) => self.land(write),
                    Event::DbLeaves {
                        token,
                        slot,
                        op,
                        outcome,
                        answer_after,
                        ..
                    } => {
                        let at = self.now + self.latency();
                        let event = Event::AtDb {
                            node: n,
                            inc,
                            token,
                            slot,
                            op,
                            outcome,
                            answer_after,
                        };
                        self.push(at, event);
                    }
                    other => unreachable!("{other:?}"),
                }
            }
        }
    }

    fn fault(&mut self, fault: Fault) {
        let now = self.now;
        match fault {
            Fault::Start(n) => {
                if self.nodes[n].running {
                    return;
                }
                let node = &mut self.nodes[n];
                node.running = true;
                node.inc += 1;
                node.paused_until = 0;
                node.redis_ok = true;
                node.members.clear();
                node.view = vec![View::Nobody; SLOT_COUNT];
                node.beat = None;
                let inc = node.inc;
                self.log(Line::Started(n));
                self.push(now, Event::Beat { node: n, inc });
                if self.scenario.random_writes {
                    let first = now + self.rng.between(20, 150);
                    self.push(first, Event::WriteTick { node: n, inc });
                }
            }
            Fault::Kill(n) => {
                if !self.nodes[n].running {
                    return;
                }
                let node = &mut self.nodes[n];
                node.running = false;
                node.inc += 1;
                node.paused_until = 0;
                node.beat = None;
                node.view = vec![View::Nobody; SLOT_COUNT];
                self.log(Line::Killed(n));
            }
            Fault::Pause(n, duration) => {
                if !self.nodes[n].running {
                    return;
                }
                let until = self.nodes[n].paused_until.max(now + duration);
                self.nodes[n].paused_until = until;
                self.log(Line::Paused { node: n, until });
            }
            Fault::Partition(n, duration) => {
                let until = self.nodes[n].partitioned_until.max(now + duration);
                self.nodes[n].partitioned_until = until;
                self.log(Line::Partitioned { node: n, until });
            }
            Fault::RedisRestart(down) => {
                self.redis.members.fill(0);
                self.redis.leases.fill(None);
                self.redis.up_at = now + down;
                self.redis_restarts.push(now);
                self.log(Line::RedisRestarted { up_at: now + down });
            }
            Fault::SlowDb(n, duration) => {
                let until = self.nodes[n].slow_db_until.max(now + duration);
                self.nodes[n].slow_db_until = until;
                self.log(Line::SlowDb { node: n, until });
            }
            Fault::Write { node, slot, delay } => {
                let i = self.scripted.len();
                self.scripted.push(WriteOutcome::Pending);
                if !self.nodes[node].running {
                    self.scripted[i] = WriteOutcome::NotRunning;
                    return;
                }
                let inc = self.nodes[node].inc;
                self.push(
                    now,
                    Event::TryWrite {
                        node,
                        inc,
                        slot,
                        delay,
                        scripted: Some(i),
                    },
                );
            }
        }
    }

    // --- Redis -----------------------------------------------------------

    /// The node sends `op` to Redis now.
    fn send(&mut self, n: NodeId, op: Op) {
        let now = self.now;
        let inc = self.nodes[n].inc;
        if now < self.nodes[n].partitioned_until {
            let reply = Reply::Failed;
            self.push(
                now + REDIS_TIMEOUT,
                Event::Reply {
                    node: n,
                    inc,
                    reply,
                },
            );
        } else {
            let at = now + self.latency();
            self.push(at, Event::AtRedis { node: n, inc, op });
        }
    }

    fn at_redis(&mut self, n: NodeId, inc: u32, op: Op) {
        let now = self.now;
        if now < self.redis.up_at {
            let at = now + self.rng.between(1, 5);
            let reply = Reply::Failed;
            self.push(
                at,
                Event::Reply {
                    node: n,
                    inc,
                    reply,
                },
            );
            return;
        }
        // Applied even if the sender died or was cut off since: it was on the wire.
        let reply = self.redis.apply(&self.nodes, n, op, now);
        let (at, reply) = if now < self.nodes[n].partitioned_until {
            (now + REDIS_TIMEOUT, Reply::Failed) // the answer is lost
        } else {
            (now + self.latency(), reply)
        };
        self.push(
            at,
            Event::Reply {
                node: n,
                inc,
                reply,
            },
        );
    }

    // --- The heartbeat (coordinator::beat and carry_out) ------------------

    fn start_beat(&mut self, n: NodeId) {
        assert!(self.nodes[n].beat.is_none(), "two heartbeats at once");
        self.nodes[n].beat = Some(Beat {
            started: self.now,
            waiting: Waiting::Register,
            actions: Vec::new().into_iter(),
        });
        self.send(n, Op::Register);
    }

    /// The heartbeat is over (`ok`: every step reached Redis); the interval
    /// ticks again a period after it started, or at once if that is past.
    fn end_beat(&mut self, n: NodeId, started: Time, ok: bool) {
        let node = &mut self.nodes[n];
        node.beat = None;
        let changed = node.redis_ok != ok;
        node.redis_ok = ok;
        let inc = node.inc;
        if changed {
            self.log(if ok {
                Line::HeartbeatBack(n)
            } else {
                Line::HeartbeatFailed(n)
            });
        }
        let at = (started + HEARTBEAT).max(self.now);
        self.push(at, Event::Beat { node: n, inc });
    }

    fn on_reply(&mut self, n: NodeId, reply: Reply) {
        let Some(mut beat) = self.nodes[n].beat.take() else {
            unreachable!("n{n}: a Redis answer outside a heartbeat");
        };
        if let Reply::Failed = reply {
            // `?` in beat/carry_out: the rest of this heartbeat is skipped.
            return self.end_beat(n, beat.started, false);
        }
        match (beat.waiting, reply) {
            (Waiting::Register, Reply::Members(members)) => {
                if self.nodes[n].members != members {
                    self.log(Line::Members {
                        node: n,
                        members: members.clone(),
                    });
                    self.nodes[n].members = members;
                }
                beat.waiting = Waiting::Leases;
                self.nodes[n].beat = Some(beat);
                self.send(n, Op::ReadLeases);
            }
            (Waiting::Leases, Reply::Leases(values)) => {
                let leases: Vec<Lease> = values.iter().map(|v| parse_lease(v.as_deref())).collect();
                let node = &self.nodes[n];
                // `held_epoch(slot).is_some()`: believed whether trusted or not.
                let believed: Vec<bool> = node
                    .view
                    .iter()
                    .map(|view| matches!(view, View::Mine { .. }))
                    .collect();
                let actions = plan(&node.name, &node.members, &leases, &believed);
                let leftovers: Vec<u32> = actions
                    .iter()
                    .filter_map(|action| match action {
                        Action::Claim(slot) => Some(*slot),
                        _ => None,
                    })
                    .filter(|slot| {
                        matches!(&leases[*slot as usize], Lease::Held { node: holder, .. } if *holder == node.name)
                    })
                    .collect();
                for slot in leftovers {
                    // Left by an earlier process under this name.
                    self.log(Line::Leftover { node: n, slot });
                }
                // Renewals and hand-overs first, then the claims.
                let (claims, mut others): (Vec<Action>, Vec<Action>) = actions
                    .into_iter()
                    .partition(|action| matches!(action, Action::Claim(_)));
                others.extend(claims);
                beat.actions = others.into_iter();
                self.carry_on(n, beat);
            }
            (Waiting::Renew { slot, epoch, sent }, Reply::Done(renewed)) => {
                if renewed || self.bug(Bug::RenewIgnoresOutcome) {
                    self.set_mine(n, slot, epoch, sent);
                } else {
                    self.drop_slot(n, slot, "lease changed under us");
                }
                self.carry_on(n, beat);
            }
            (Waiting::ClaimLease { slot, before, sent }, Reply::Done(true)) => {
                self.log(Line::Pending {
                    node: n,
                    slot,
                    before,
                });
                let token = self.db_request(n, slot, DbOp::Raise { expected: before });
                beat.waiting = Waiting::Raise { slot, sent, token };
                self.nodes[n].beat = Some(beat);
            }
            (Waiting::ClaimLease { slot, .. }, Reply::Done(false)) => {
                self.log(Line::ClaimRefused { node: n, slot });
                self.carry_on(n, beat);
            }
            (Waiting::ClaimSwap { slot, epoch, sent }, Reply::Done(swapped)) => {
                if swapped {
                    self.log(Line::Claimed {
                        node: n,
                        slot,
                        epoch,
                    });
                    self.set_mine(n, slot, epoch, sent);
                } else {
                    self.log(Line::ClaimLapsed {
                        node: n,
                        slot,
                        epoch,
                    });
                }
                self.carry_on(n, beat);
            }
            (Waiting::GiveBack { stop: true }, Reply::Done(_)) => self.stop_claiming(n, beat),
            (Waiting::Release | Waiting::GiveBack { stop: false }, Reply::Done(_)) => {
                self.carry_on(n, beat)
            }
            (waiting, reply) => unreachable!("n{n} waiting for {waiting:?} got {reply:?}"),
        }
    }

    /// Carries out the plan's actions in order until one needs Redis.
    fn carry_on(&mut self, n: NodeId, mut beat: Beat) {
        let now = self.now;
        while let Some(action) = beat.actions.next() {
            match action {
                Action::Renew(slot) => {
                    let View::Mine { epoch, .. } = self.nodes[n].view[slot as usize] else {
                        continue;
                    };
                    let value = format!("{}:{epoch}", self.nodes[n].name);
                    beat.waiting = Waiting::Renew {
                        slot,
                        epoch,
                        sent: now,
                    };
                    self.nodes[n].beat = Some(beat);
                    let expect = value.clone();
                    return self.send(
                        n,
                        Op::Swap {
                            slot,
                            expect,
                            value,
                        },
                    );
                }
                Action::Claim(slot) => {
                    // `before`, read ahead of the lease.
                    let token = self.db_request(n, slot, DbOp::Read);
                    beat.waiting = Waiting::ReadEpoch { slot, token };
                    self.nodes[n].beat = Some(beat);
                    return;
                }
                Action::Release(slot) => {
                    // Stop using it first, then delete the lease.
                    self.drop_slot(n, slot, "handed over");
                    beat.waiting = Waiting::Release;
                    self.nodes[n].beat = Some(beat);
                    return self.send(n, Op::Release { slot });
                }
                Action::Lost(slot) => self.drop_slot(n, slot, "lease lost"),
                Action::Peer(slot, owner) => self.nodes[n].view[slot as usize] = View::Peer(owner),
                Action::Wait(slot) => self.nodes[n].view[slot as usize] = View::Nobody,
            }
        }
        self.end_beat(n, beat.started, true);
    }

    /// `hooks.current_epoch` or `hooks.raise_epoch`, bounded by the
    /// heartbeat interval: a database round trip, slow inside a slow window.
    /// The request goes on after the bound; its answer is then ignored.
    fn db_request(&mut self, n: NodeId, slot: u32, op: DbOp) -> u64 {
        self.tokens += 1;
        let token = self.tokens;
        let now = self.now;
        let scenario = self.scenario;
        let slow = now < self.nodes[n].slow_db_until
            && match op {
                DbOp::Raise { .. } => true,
                // A plain read waits for a pooled connection, not for a row lock.
                DbOp::Read => scenario.slow_reads && scenario.slow_split != SlowRaise::AnswersLate,
            };
        let (before, after, outcome) = if slow {
            let total = match scenario.slow_raise {
                Some(total) => total,
                None if self.rng.chance(30) => self.rng.between(HEARTBEAT / 5, 2 * HEARTBEAT),
                None => self.rng.between(TTL / 2, 2 * TTL),
            };
            let before = match scenario.slow_split {
                SlowRaise::AnswersLate => self.rng.between(1, 5),
                SlowRaise::ArrivesLate => total,
                SlowRaise::Either => self.rng.between(1, total),
            };
            let outcome = if self.rng.chance(scenario.raise_failures) {
                if self.rng.chance(50) {
                    RaiseOutcome::FailsBefore
                } else {
                    RaiseOutcome::FailsAfter
                }
            } else {
                RaiseOutcome::Raised
            };
            (before, total.saturating_sub(before).max(1), outcome)
        } else {
            let before = self.latency();
            (before, self.latency(), RaiseOutcome::Raised)
        };
        let inc = self.nodes[n].inc;
        let event = if scenario.slow_split == SlowRaise::AnswersLate {
            Event::AtDb {
                node: n,
                inc,
                token,
                slot,
                op,
                outcome,
                answer_after: after,
            }
        } else {
            // The wait is in the process (for a pooled connection): a pause
            // holds the request back too.
            Event::DbLeaves {
                node: n,
                inc,
                token,
                slot,
                op,
                outcome,
                answer_after: after,
            }
        };
        self.push(now + before, event);
        self.push(
            now + HEARTBEAT,
            Event::DbTimeout {
                node: n,
                inc,
                token,
            },
        );
        token
    }

    /// Whether process `(n, inc)` still waits for database request `token`.
    fn waits_for(&self, n: NodeId, inc: u32, token: u64) -> bool {
        let node = &self.nodes[n];
        node.running
            && node.inc == inc
            && node.beat.as_ref().and_then(|beat| beat.waiting.token()) == Some(token)
    }

    /// The database runs a request, whatever became of its sender (the
    /// statement is on the wire).
    #[allow(clippy::too_many_arguments)]
    fn at_db(
        &mut self,
        n: NodeId,
        inc: u32,
        token: u64,
        slot: u32,
        op: DbOp,
        outcome: RaiseOutcome,
        after: Time,
    ) {
        let late = !self.waits_for(n, inc, token);
        let current = self.db.epoch[slot as usize];
        let answer = match op {
            _ if outcome == RaiseOutcome::FailsBefore => DbAnswer::Failed,
            DbOp::Read if outcome == RaiseOutcome::FailsAfter => DbAnswer::Failed,
            DbOp::Read => DbAnswer::Epoch(current),
            DbOp::Raise { expected } => {
                let answered = outcome == RaiseOutcome::Raised;
                let raised = if current == expected || self.bug(Bug::RaiseWithoutCas) {
                    let epoch = current + 1;
                    self.db.epoch[slot as usize] = epoch;
                    self.db.raised_by.insert((slot, epoch), (n, inc));
                    self.log(Line::Raised {
                        node: n,
                        slot,
                        epoch,
                        answered,
                        late,
                    });
                    Some(epoch)
                } else {
                    self.log(Line::RaiseRefused {
                        node: n,
                        slot,
                        expected,
                        db: current,
                        late,
                    });
                    None
                };
                if answered {
                    DbAnswer::Raised(raised)
                } else {
                    DbAnswer::Failed
                }
            }
        };
        self.push(
            self.now + after,
            Event::DbAnswer {
                node: n,
                inc,
                token,
                answer,
            },
        );
    }

    /// The rest of `claim` once its database request answered in time.
    fn on_db_answer(&mut self, n: NodeId, token: u64, answer: DbAnswer) {
        let Some(mut beat) = self.nodes[n].beat.take() else {
            return; // the claim gave up on it, and its heartbeat is over
        };
        if beat.waiting.token() != Some(token) {
            self.nodes[n].beat = Some(beat);
            return; // the claim gave up on it
        }
        let name = &self.nodes[n].name;
        match (beat.waiting, answer) {
            (Waiting::ReadEpoch { slot, .. }, DbAnswer::Epoch(before)) => {
                beat.waiting = Waiting::ClaimLease {
                    slot,
                    before,
                    sent: self.now,
                };
                self.nodes[n].beat = Some(beat);
                self.send(n, Op::Claim { slot });
            }
            (Waiting::ReadEpoch { slot, .. }, DbAnswer::Failed) => {
                self.log(Line::EpochUnread { node: n, slot });
                self.stop_claiming(n, beat);
            }
            (Waiting::Raise { slot, sent, .. }, DbAnswer::Raised(Some(epoch))) => {
                let expect = format!("{name}:pending");
                let value = format!("{name}:{epoch}");
                beat.waiting = Waiting::ClaimSwap { slot, epoch, sent };
                self.nodes[n].beat = Some(beat);
                self.send(
                    n,
                    Op::Swap {
                        slot,
                        expect,
                        value,
                    },
                );
            }
            (Waiting::Raise { slot, .. }, DbAnswer::Raised(None)) => self.give_back(
                n,
                beat,
                slot,
                "another claimer raised the epoch first",
                false,
            ),
            (Waiting::Raise { slot, .. }, DbAnswer::Failed) => {
                self.give_back(n, beat, slot, "the raise failed", true)
            }
            (waiting, answer) => unreachable!("n{n} waiting for {waiting:?} got {answer:?}"),
        }
    }

    /// The bound on a claim's database request expires.
    fn on_db_timeout(&mut self, n: NodeId, token: u64) {
        let Some(beat) = self.nodes[n].beat.take() else {
            return;
        };
        match beat.waiting {
            Waiting::ReadEpoch { slot, token: t } if t == token => {
                self.log(Line::EpochUnread { node: n, slot });
                self.stop_claiming(n, beat);
            }
            Waiting::Raise { slot, token: t, .. } if t == token => {
                self.give_back(n, beat, slot, "the raise timed out", true)
            }
            _ => self.nodes[n].beat = Some(beat), // answered in time
        }
    }

    /// `RELEASE` the pending lease; `stop`: `claim` returns false.
    fn give_back(&mut self, n: NodeId, mut beat: Beat, slot: u32, why: &'static str, stop: bool) {
        self.log(Line::GaveBack { node: n, slot, why });
        beat.waiting = Waiting::GiveBack { stop };
        self.nodes[n].beat = Some(beat);
        self.send(n, Op::Release { slot });
    }

    /// `claim` returned false: the heartbeat ends, its remaining claims untried.
    fn stop_claiming(&mut self, n: NodeId, mut beat: Beat) {
        assert!(
            beat.actions
                .all(|action| matches!(action, Action::Claim(_))),
            "claims come last"
        );
        self.end_beat(n, beat.started, true);
    }

    /// `placement.set_mine(slot, epoch, trusted_until(sent, ttl))`, then
    /// invariants 2 and 3 for the slot: trust only ever starts here.
    fn set_mine(&mut self, n: NodeId, slot: u32, epoch: i64, sent: Time) {
        let trust = if self.bug(Bug::TrustForTwoTtl) {
            2 * TTL
        } else {
            TRUST
        };
        let valid_until = sent + trust;
        self.nodes[n].view[slot as usize] = View::Mine { epoch, valid_until };
        let now = self.now;
        if now >= valid_until {
            return;
        }
        let restart = self
            .redis_restarts
            .iter()
            .rev()
            .find(|restart| **restart <= now && now < **restart + TRUST)
            .copied();
        for m in 0..self.nodes.len() {
            if m == n || !self.nodes[m].running {
                continue;
            }
            let View::Mine {
                epoch: other,
                valid_until: until,
            } = self.nodes[m].view[slot as usize]
            else {
                continue;
            };
            if now >= until {
                continue;
            }
            if other == epoch {
                self.violate(format!(
                    "n{n} and n{m} both trust s{slot} at the same epoch {epoch}"
                ));
            } else if let Some(restart) = restart {
                self.log(Line::Overlap {
                    node: n,
                    slot,
                    epoch,
                    other: m,
                    until,
                    restart,
                });
            } else {
                self.violate(format!(
                    "n{n} trusts s{slot} at epoch {epoch} while n{m} still trusts it \
                     at epoch {other} until t={until}"
                ));
            }
        }
    }

    /// `drop_slot`/`set_nobody`.
    fn drop_slot(&mut self, n: NodeId, slot: u32, why: &'static str) {
        let view = std::mem::replace(&mut self.nodes[n].view[slot as usize], View::Nobody);
        if let View::Mine { epoch, .. } = view {
            self.log(Line::Dropped {
                node: n,
                slot,
                epoch,
                why,
            });
        }
    }

    // --- Writes ----------------------------------------------------------

    fn write_tick(&mut self, n: NodeId) {
        let mine: Vec<u32> = (0..SLOTS)
            .filter(|slot| matches!(self.nodes[n].view[*slot as usize], View::Mine { .. }))
            .collect();
        let slot = if !mine.is_empty() && self.rng.chance(70) {
            mine[self.rng.below(mine.len() as u64) as usize]
        } else {
            self.rng.below(u64::from(SLOTS)) as u32
        };
        let delay = if self.rng.chance(10) {
            self.rng.between(20, 2 * TTL)
        } else {
            self.rng.between(1, 20)
        };
        self.try_write(n, slot, delay, None);
        let next = self.now + self.rng.between(20, 150);
        let inc = self.nodes[n].inc;
        self.push(next, Event::WriteTick { node: n, inc });
    }

    /// `Placement::route`: local only with a trusted view; the write then
    /// carries the view's epoch and reaches the database after `delay`.
    fn try_write(&mut self, n: NodeId, slot: u32, delay: Time, scripted: Option<usize>) {
        let now = self.now;
        match self.nodes[n].view[slot as usize] {
            View::Mine { epoch, valid_until } if now < valid_until => {
                let write = Write {
                    node: n,
                    inc: self.nodes[n].inc,
                    slot,
                    epoch,
                    decided: now,
                    scripted,
                };
                self.push(now + delay, Event::WriteLands(write));
            }
            _ => {
                if let Some(i) = scripted {
                    self.scripted[i] = WriteOutcome::NotLocal;
                }
            }
        }
    }

    /// `check_fences` in the write's transaction, then invariant 1.
    fn land(&mut self, write: Write) {
        let slot = write.slot as usize;
        let current = self.db.epoch[slot];
        let accepted = if self.bug(Bug::DbAcceptsStaleEpochs) {
            write.epoch <= current
        } else {
            write.epoch == current
        };
        self.log(Line::Write {
            node: write.node,
            slot: write.slot,
            epoch: write.epoch,
            decided: write.decided,
            refused_by: (!accepted).then_some(current),
        });
        if let Some(i) = write.scripted {
            self.scripted[i] = if accepted {
                WriteOutcome::Accepted(write.epoch)
            } else {
                WriteOutcome::Refused {
                    epoch: write.epoch,
                    db: current,
                }
            };
        }
        if !accepted {
            return;
        }
        let (n, s, e) = (write.node, write.slot, write.epoch);
        if e != current {
            self.violate(format!(
                "fencing: n{n} wrote s{s} at epoch {e} after epoch {current} was raised"
            ));
        } else if e < self.db.last_accepted[slot] {
            self.violate(format!(
                "fencing: s{s} accepted epoch {e} after epoch {}",
                self.db.last_accepted[slot]
            ));
        } else if self.db.raised_by.get(&(s, e)) != Some(&(n, write.inc)) {
            self.violate(format!(
                "fencing: n{n} wrote s{s} at epoch {e}, raised by {:?}",
                self.db.raised_by.get(&(s, e))
            ));
        }
        self.db.last_accepted[slot] = e;
    }

    // --- Invariant 4 -----------------------------------------------------

    fn check_settled(&mut self) {
        let now = self.now;
        let running: Vec<NodeId> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].running)
            .collect();
        let mut names: Vec<String> = running
            .iter()
            .map(|n| self.nodes[*n].name.clone())
            .collect();
        names.sort();
        for slot in 0..SLOTS {
            let owners: Vec<(NodeId, i64)> = running
                .iter()
                .filter_map(|n| match self.nodes[*n].view[slot as usize] {
                    View::Mine { epoch, valid_until } if now < valid_until => Some((*n, epoch)),
                    _ => None,
                })
                .collect();
            let desired = desired_owner(&names, slot);
            match owners.as_slice() {
                [(owner, epoch)] if Some(self.nodes[*owner].name.as_str()) == desired => {
                    let (owner, epoch) = (*owner, *epoch);
                    let db = self.db.epoch[slot as usize];
                    let write = Write {
                        node: owner,
                        inc: self.nodes[owner].inc,
                        slot,
                        epoch,
                        decided: now,
                        scripted: None,
                    };
                    self.land(write);
                    if epoch != db {
                        self.violate(format!(
                            "liveness: {QUIET} ms after the last fault n{owner} owns s{slot} at \
                             epoch {epoch} but the database has epoch {db}: every write is refused"
                        ));
                    }
                }
                _ => self.violate(format!(
                    "liveness: {QUIET} ms after the last fault s{slot} is trusted by \
                     {owners:?} (node, epoch), should be by {desired:?} alone"
                )),
            }
            if self.violation.is_some() {
                return;
            }
        }
    }
}

/// Runs the random seeds (`MOJASWITCH_SIM_SEEDS` of them, default
/// `SEEDS`; or the one in `MOJASWITCH_SIM_SEED`, printing its timeline);
/// panics on the first violation.
fn run_seeds(slow_split: SlowRaise) -> Vec<Report> {
    if let Ok(seed) = std::env::var("MOJASWITCH_SIM_SEED") {
        let seed: u64 = seed
            .trim()
            .parse()
            .expect("MOJASWITCH_SIM_SEED is a number");
        let report = run(seed, &Scenario::random(seed, slow_split));
        println!("{}", report.timeline());
        report.assert_holds();
        return vec![report];
    }
    let seeds = std::env::var("MOJASWITCH_SIM_SEEDS").map_or(SEEDS, |count| {
        count
            .trim()
            .parse()
            .expect("MOJASWITCH_SIM_SEEDS is a number")
    });
    (BASE_SEED..BASE_SEED + seeds)
        .map(|seed| {
            let report = run(seed, &Scenario::random(seed, slow_split));
            report.assert_holds();
            report
        })
        .collect()
}

/// What happened over many runs, to show the checks are not vacuous.
#[derive(Debug, Default)]
struct Totals {
    claims: usize,
    lapsed: usize,
    accepted: usize,
    refused: usize,
    restarts: usize,
    pauses: usize,
    starts: usize,
    leftovers: usize,
    overlaps: usize,
    unread: usize,
    timed_out: usize,
    raised_first: usize,
    late_applied: usize,
    late_refused: usize,
}

impl Totals {
    fn of(reports: &[Report]) -> Totals {
        let mut totals = Totals::default();
        for (_, line) in reports.iter().flat_map(|report| &report.lines) {
            match line {
                Line::Claimed { .. } => totals.claims += 1,
                Line::ClaimLapsed { .. } => totals.lapsed += 1,
                Line::Write {
                    refused_by: None, ..
                } => totals.accepted += 1,
                Line::Write { .. } => totals.refused += 1,
                Line::RedisRestarted { .. } => totals.restarts += 1,
                Line::Paused { .. } => totals.pauses += 1,
                Line::Started(_) => totals.starts += 1,
                Line::Leftover { .. } => totals.leftovers += 1,
                Line::Overlap { .. } => totals.overlaps += 1,
                Line::EpochUnread { .. } => totals.unread += 1,
                Line::GaveBack {
                    why: "the raise timed out",
                    ..
                } => totals.timed_out += 1,
                Line::RaiseRefused { late: false, .. } => totals.raised_first += 1,
                Line::Raised { late: true, .. } => totals.late_applied += 1,
                Line::RaiseRefused { late: true, .. } => totals.late_refused += 1,
                _ => {}
            }
        }
        totals
    }
}

fn random_runs(slow_split: SlowRaise) -> Totals {
    let started = std::time::Instant::now();
    let reports = run_seeds(slow_split);
    let totals = Totals::of(&reports);
    println!(
        "{} runs ({slow_split:?} slow requests) in {:?}: {totals:?}",
        reports.len(),
        started.elapsed()
    );
    if reports.len() > 1 {
        // The faults do happen; the checks are not vacuous.
        assert!(totals.refused > 100, "{totals:?}: few fenced writes");
        assert!(totals.restarts > 10, "{totals:?}: few redis restarts");
        assert!(totals.leftovers > 0, "{totals:?}: no leftover lease");
        assert!(
            totals.lapsed > 0,
            "{totals:?}: no claim lapsed during its raise"
        );
        assert!(totals.timed_out > 0, "{totals:?}: no raise timed out");
        assert!(
            totals.raised_first > 0,
            "{totals:?}: no raise lost to another"
        );
        assert!(totals.late_applied > 0, "{totals:?}: no raise applied late");
    }
    totals
}

#[test]
fn placement_protocol_holds_under_random_faults() {
    random_runs(SlowRaise::AnswersLate);
}

/// Raises (and reads) may also reach the database long after their claim
/// gave up on them: the raise that used to fence out the next owner.
#[test]
fn placement_protocol_holds_with_late_epoch_raises() {
    let totals = random_runs(SlowRaise::Either);
    if totals.claims > 100_000 {
        assert!(totals.unread > 0, "{totals:?}: no epoch read late");
        assert!(totals.late_refused > 0, "{totals:?}: no late raise refused");
    }
}

#[test]
fn the_simulation_catches_deliberately_broken_protocols() {
    for (bug, slow_split) in [
        (Bug::DbAcceptsStaleEpochs, SlowRaise::AnswersLate),
        (Bug::TrustForTwoTtl, SlowRaise::AnswersLate),
        (Bug::RenewIgnoresOutcome, SlowRaise::AnswersLate),
        (Bug::RaiseWithoutCas, SlowRaise::Either),
    ] {
        let caught = (BASE_SEED..BASE_SEED + SEEDS).find_map(|seed| {
            let mut scenario = Scenario::random(seed, slow_split);
            scenario.bug = Some(bug);
            run(seed, &scenario).violation.map(|v| (seed, v))
        });
        let Some((seed, violation)) = caught else {
            panic!("{bug:?} went unnoticed over {SEEDS} seeds");
        };
        println!("{bug:?}: caught by seed {seed}: {violation}");
    }
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("n{n}")).collect()
}

/// The first slot `node` should own among `count` nodes.
fn a_slot_of(node: usize, count: usize) -> u32 {
    let names = names(count);
    (0..SLOTS)
        .find(|slot| desired_owner(&names, *slot) == Some(names[node].as_str()))
        .expect("every node wins some slot")
}

#[test]
fn a_node_paused_past_its_lease_cannot_write_after_resuming() {
    let slot = a_slot_of(0, 2);
    let resume = 5_001 + 2 * TTL;
    let scenario = Scenario::scripted(
        2,
        vec![
            // In flight when n0 stops; lands when it resumes.
            (
                5_000,
                Fault::Write {
                    node: 0,
                    slot,
                    delay: 10,
                },
            ),
            (5_001, Fault::Pause(0, 2 * TTL)),
            // Decided on resuming: the view is there, but no longer trusted.
            (
                resume,
                Fault::Write {
                    node: 0,
                    slot,
                    delay: 1,
                },
            ),
        ],
        resume,
    );
    let report = run(1, &scenario);
    report.assert_holds();
    let WriteOutcome::Refused { epoch, db } = report.scripted[0] else {
        panic!("{:?}\n{}", report.scripted, report.timeline());
    };
    assert!(db > epoch);
    assert_eq!(report.scripted[1], WriteOutcome::NotLocal);
    let taken = report
        .first(
            |l| matches!(l, Line::Claimed { node: 1, slot: s, epoch: e } if *s == slot && *e == db),
        )
        .expect("n1 took the slot over");
    assert!((5_001 + TTL..resume).contains(&taken), "{taken}");
    // n0 wins it back once it heart-beats again, at a newer epoch.
    let (owner, last) = report.owners[slot as usize].expect("owned");
    assert_eq!(owner, 0);
    assert!(last > db);
}

#[test]
fn a_claim_whose_raise_times_out_gives_the_lease_back() {
    // n1's first raise is applied at once but answered after 2T: the claim
    // stops waiting at the heartbeat interval, gives the lease back and
    // claims nothing more this beat, so the heartbeat keeps n1's membership.
    let scenario = Scenario::scripted(2, vec![(0, Fault::SlowDb(1, 100))], 1_000);
    let report = run(2, &scenario);
    report.assert_holds();
    let (gave_up, slot) = report
        .lines
        .iter()
        .find_map(|(t, l)| match l {
            Line::GaveBack {
                node: 1,
                slot,
                why: "the raise timed out",
            } => Some((*t, *slot)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no raise timed out\n{}", report.timeline()));
    assert!(gave_up < HEARTBEAT + 100, "{gave_up}");
    assert!(
        report
            .first(|l| matches!(l, Line::Raised { node: 1, slot: s, epoch: 1, .. } if *s == slot))
            .is_some_and(|t| t < gave_up),
        "n1's raise was applied, the slot's first\n{}",
        report.timeline()
    );
    // The next claim, n1's own on the next beat, reads that epoch and raises past it.
    let taken = report
        .first(|l| matches!(l, Line::Claimed { node: 1, slot: s, epoch: 2 } if *s == slot))
        .unwrap_or_else(|| panic!("n1 claims s{slot} at 2\n{}", report.timeline()));
    assert!(
        taken > gave_up && taken < gave_up + 2 * HEARTBEAT,
        "{taken}"
    );
    assert!(
        report
            .first(|l| matches!(l, Line::Claimed { node: 1, .. }))
            .is_some_and(|t| t > gave_up),
        "no more claims in the beat that gave up"
    );
    assert_eq!(
        report.count(|l| matches!(l, Line::Claimed { node: 0, slot: s, .. } if *s == slot)),
        0,
        "n1 stays a member and keeps s{slot}"
    );
    assert_eq!(
        report.count(|l| matches!(l, Line::Claimed { slot: s, epoch: 1, .. } | Line::Write { slot: s, epoch: 1, .. } if *s == slot)),
        0,
        "epoch 1 of s{slot} is never used"
    );
    assert_eq!(report.owners[slot as usize], Some((1, 2)));
}

#[test]
fn a_late_raise_applied_while_nobody_owns_the_slot_is_read_by_the_next_claim() {
    // Every raise n0 starts before t=7000 waits 2T for a pooled connection:
    // each claim times out and gives the lease back, and the raises reach
    // the database one by one, long after. The first finds the epoch it
    // expects (nobody raised it meanwhile) and is applied; those after it
    // expect the old epoch and are refused; the claims after it read it.
    let mut scenario = Scenario::scripted(1, vec![(0, Fault::SlowDb(0, 7_000))], 7_000);
    scenario.slow_split = SlowRaise::ArrivesLate;
    let report = run(7, &scenario);
    report.assert_holds();
    let (late, slot) = report
        .lines
        .iter()
        .find_map(|(t, l)| match l {
            Line::Raised {
                node: 0,
                slot,
                epoch: 1,
                late: true,
                ..
            } => Some((*t, *slot)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no late raise applied\n{}", report.timeline()));
    assert!(late > 2 * TTL, "{late}");
    assert!(
        report
            .first(|l| matches!(l, Line::RaiseRefused { node: 0, slot: s, expected: 0, db: 1, late: true } if *s == slot))
            .is_some_and(|t| t > late),
        "the raises after it are refused\n{}",
        report.timeline()
    );
    assert!(
        report
            .first(|l| matches!(l, Line::Pending { node: 0, slot: s, before: 1 } if *s == slot))
            .is_some_and(|t| t > late),
        "the next claim reads epoch 1\n{}",
        report.timeline()
    );
    let claimed = report
        .lines
        .iter()
        .find_map(|(t, l)| match l {
            Line::Claimed { slot: s, epoch, .. } if *s == slot => Some((*t, *epoch)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("s{slot} never claimed\n{}", report.timeline()));
    assert!(claimed.0 > 7_000 && claimed.1 >= 2, "{claimed:?}");
    assert_eq!(
        report.owners[slot as usize],
        Some((0, report.db_epochs[slot as usize]))
    );
    keeps_writing(
        &report,
        0,
        slot,
        report.lines.last().map_or(0, |(t, _)| *t) - TTL,
    );
}

#[test]
fn redis_restart_reassigns_every_slot() {
    let restart = 6_000;
    let slot = a_slot_of(0, 3);
    let scenario = Scenario::scripted(
        3,
        vec![
            // Decided before the restart, lands after the slot was claimed anew.
            (
                restart - 10,
                Fault::Write {
                    node: 0,
                    slot,
                    delay: 2_500,
                },
            ),
            (restart, Fault::RedisRestart(500)),
        ],
        restart + 1_000,
    );
    let report = run(3, &scenario);
    report.assert_holds();
    for s in 0..SLOTS {
        let before = report
            .lines
            .iter()
            .filter_map(|(t, l)| match l {
                Line::Claimed { slot, epoch, .. } if *slot == s && *t < restart => Some(*epoch),
                _ => None,
            })
            .max()
            .expect("claimed before the restart");
        assert!(
            report
                .first(|l| matches!(l, Line::Claimed { slot, epoch, .. } if *slot == s && *epoch > before))
                .is_some_and(|t| t > restart),
            "s{s} claimed anew after the restart"
        );
    }
    assert!(
        matches!(report.scripted[0], WriteOutcome::Refused { epoch, db } if db > epoch),
        "{:?}",
        report.scripted
    );
}

#[test]
fn a_joining_node_takes_over_only_its_slots() {
    let join = 5_000;
    let mut scenario = Scenario::scripted(3, vec![(join, Fault::Start(2))], join + 1_000);
    scenario.faults.retain(|f| *f != (0, Fault::Start(2)));
    let report = run(4, &scenario);
    report.assert_holds();
    let three = names(3);
    for slot in 0..SLOTS {
        let moved = report
            .lines
            .iter()
            .filter(|(t, l)| {
                *t > join
                    && matches!(l, Line::Dropped { slot: s, why: "handed over", .. } if *s == slot)
            })
            .count();
        let taken =
            report.first(|l| matches!(l, Line::Claimed { node: 2, slot: s, .. } if *s == slot));
        if desired_owner(&three, slot) == Some("n2") {
            assert_eq!(moved, 1, "s{slot} handed over once");
            assert!(taken.is_some_and(|t| t > join), "s{slot} claimed by n2");
        } else {
            assert_eq!(moved, 0, "s{slot} stays");
            assert_eq!(taken, None);
        }
    }
}

/// Asserts that `node` owns `slot` from `after` on: writes it and has them
/// accepted, and trusts it at the database's epoch at the end.
fn keeps_writing(report: &Report, node: NodeId, slot: u32, after: Time) {
    let accepted = report
        .lines
        .iter()
        .filter(|(t, l)| {
            *t > after
                && matches!(l, Line::Write { node: n, slot: s, refused_by: None, .. } if *n == node && *s == slot)
        })
        .count();
    let refused = report
        .lines
        .iter()
        .filter(|(t, l)| {
            *t > after
                && matches!(l, Line::Write { node: n, slot: s, refused_by: Some(_), .. } if *n == node && *s == slot)
        })
        .count();
    assert!(
        accepted >= 2 && refused == 0,
        "n{node} writes s{slot} after t={after}: {accepted} accepted, {refused} refused\n{}",
        report.timeline()
    );
    assert_eq!(
        report.owners[slot as usize],
        Some((node, report.db_epochs[slot as usize])),
        "n{node} owns s{slot} at the database's epoch in the end"
    );
}

/// The protocol bug this simulation found (fixed): n1 claims a slot while
/// n0 is cut off, and its epoch raise waits for a pooled connection longer
/// than the ttl. The claim gives up at the heartbeat interval and gives its
/// pending lease back; n0 (back, and the desired owner) claims the slot and
/// raises the epoch; then n1's raise reaches the database. It used to raise
/// the epoch again, fencing n0 out for good while n0 kept renewing its
/// lease; as a compare-and-set from the epoch n1 read, it is now refused.
#[test]
fn a_late_epoch_raise_must_not_fence_out_the_next_owner() {
    let mut scenario = Scenario::scripted(
        2,
        vec![
            (5_000, Fault::Partition(0, 3_500)),
            (7_000, Fault::SlowDb(1, 2_500)),
        ],
        10_000,
    );
    scenario.slow_split = SlowRaise::ArrivesLate;
    let report = run(5, &scenario);
    report.assert_holds();
    let (refused, slot) = report
        .lines
        .iter()
        .find_map(|(t, l)| match l {
            Line::RaiseRefused {
                node: 1,
                slot,
                late: true,
                ..
            } => Some((*t, *slot)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no late raise of n1\n{}", report.timeline()));
    let taken = report
        .lines
        .iter()
        .find(|(t, l)| {
            *t > 5_000 && matches!(l, Line::Claimed { node: 0, slot: s, .. } if *s == slot)
        })
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("n0 never took s{slot} back\n{}", report.timeline()));
    assert!(
        report
            .first(|l| matches!(l, Line::GaveBack { node: 1, slot: s, why: "the raise timed out" } if *s == slot))
            .is_some_and(|t| t < taken),
        "n1 gave up its claim before n0 took the slot\n{}",
        report.timeline()
    );
    assert!(taken < refused, "{taken} {refused}");
    assert_eq!(
        report.count(|l| matches!(l, Line::Raised { node: 1, slot: s, .. } if *s == slot)),
        0,
        "n1 never raised s{slot}"
    );
    keeps_writing(&report, 0, slot, refused);
}

/// The same bug with a fast database: a pause (SIGSTOP, a frozen VM)
/// between the lease claim and the raise was enough. The raise now reads
/// the epoch it expects before the lease is taken, and is refused.
#[test]
fn a_pause_between_lease_and_raise_must_not_fence_out_the_next_owner() {
    let faults = vec![(5_000, Fault::Partition(0, 3_500))];
    let calm = run(6, &Scenario::scripted(2, faults.clone(), 10_000));
    calm.assert_holds();
    // n1 takes n0's slots while n0 is cut off; stop n1 as its first claim is answered.
    let (at, slot) = calm
        .lines
        .iter()
        .find_map(|(t, l)| match l {
            Line::Pending { node: 1, slot, .. } if *t > 5_000 => Some((*t, *slot)),
            _ => None,
        })
        .expect("n1 claims n0's slots");
    let mut faults = faults;
    faults.push((at, Fault::Pause(1, 2 * TTL)));
    let resume = at + 2 * TTL;
    let report = run(6, &Scenario::scripted(2, faults, resume));
    report.assert_holds();
    let taken = report
        .lines
        .iter()
        .find(|(t, l)| {
            *t > 5_000 && matches!(l, Line::Claimed { node: 0, slot: s, .. } if *s == slot)
        })
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("n0 never took s{slot} back\n{}", report.timeline()));
    let refused = report
        .first(|l| matches!(l, Line::RaiseRefused { node: 1, slot: s, .. } if *s == slot))
        .unwrap_or_else(|| panic!("n1's raise went through\n{}", report.timeline()));
    assert!(
        taken < resume && resume <= refused,
        "{taken} {resume} {refused}"
    );
    assert!(
        report
            .first(|l| matches!(l, Line::GaveBack { node: 1, slot: s, why: "another claimer raised the epoch first" } if *s == slot))
            .is_some_and(|t| t > refused),
        "n1 gives the lease back and claims on\n{}",
        report.timeline()
    );
    keeps_writing(&report, 0, slot, refused);
}
