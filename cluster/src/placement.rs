//! Which node owns which actor: slots, leases and fencing epochs.
//!
//! Every position (participant + currency) and every transfer hashes to one
//! of [`SLOTS`] slots. A slot is owned by exactly one live node through a
//! lease in Redis; the node that takes a slot raises the slot's **fencing
//! epoch** in the database first (see `storage::fence`), and every ledger
//! batch it writes for that slot is refused by the database once a later
//! owner has raised the epoch again. So a node that lost its lease without
//! knowing it (paused, partitioned) cannot change money.
//!
//! This module holds the node's current view ([`Placement`], read on every
//! request) and the pure decision of what to claim, renew and release
//! ([`plan`]); [`crate::redis`] runs it against Redis. The embedded default
//! uses [`Placement::embedded`]: every slot local, no epoch.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Instant;

/// Slots the key space is cut into. Fixed: the database seeds one fencing
/// row per slot (migration `0010_cluster_slots.sql`).
pub const SLOTS: u32 = 64;

/// The slot of a key: FNV-1a, stable across processes and builds.
pub fn slot_of(key: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(SLOTS)) as u32
}

/// The slot of a position actor.
pub fn position_slot(participant: &str, currency: &str) -> u32 {
    slot_of(&format!("position/{participant}/{currency}"))
}

/// The slot of a transfer actor.
pub fn transfer_slot(transfer_id: &str) -> u32 {
    slot_of(&format!("transfer/{transfer_id}"))
}

/// The slot whose owner runs every settlement change (window closes,
/// settlements and their steps), so they are serialised cluster-wide by one
/// settlement actor, as on a single node.
pub const SETTLEMENT_SLOT: u32 = 0;

/// The slot of a bulk transfer's actor (its lines have their own slots).
pub fn bulk_slot(bulk_transfer_id: &str) -> u32 {
    slot_of(&format!("bulk/{bulk_transfer_id}"))
}

/// Where a message for a slot goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the slot; writes carry `epoch` (`None`: embedded, unfenced).
    Local { slot: u32, epoch: Option<i64> },
    /// Another live node owns it; its node-to-node channel is at `address`.
    Remote {
        slot: u32,
        node: String,
        address: String,
    },
    /// Nobody owns it right now (a failover or a handover in progress, or
    /// this node's lease may have lapsed): retry later.
    Unavailable { slot: u32 },
}

/// What this node knows of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotView {
    Mine { epoch: i64, valid_until: Instant },
    Peer { node: String },
    Nobody,
}

/// A member as last seen in Redis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub node: String,
    /// host:port of its node-to-node channel.
    pub address: String,
    /// Slots it holds.
    pub slots: usize,
}

/// This node's view of the cluster, read by every request.
pub struct Placement {
    node: String,
    /// `None` in the embedded default: every slot is local and unfenced.
    cluster: Option<RwLock<ClusterView>>,
}

struct ClusterView {
    slots: Vec<SlotView>,
    members: BTreeMap<String, String>,
    /// Set when the last heartbeat reached Redis.
    redis_ok: bool,
}

impl Placement {
    /// One node, every slot local (the embedded default).
    pub fn embedded() -> Placement {
        Placement {
            node: "embedded".into(),
            cluster: None,
        }
    }

    /// A cluster node that owns nothing until its first heartbeat.
    pub fn cluster(node: &str) -> Placement {
        Placement {
            node: node.to_string(),
            cluster: Some(RwLock::new(ClusterView {
                slots: vec![SlotView::Nobody; SLOTS as usize],
                members: BTreeMap::new(),
                redis_ok: false,
            })),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    fn view(&self) -> Option<std::sync::RwLockReadGuard<'_, ClusterView>> {
        self.cluster
            .as_ref()
            .map(|view| view.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn view_mut(&self) -> Option<std::sync::RwLockWriteGuard<'_, ClusterView>> {
        self.cluster.as_ref().map(|view| {
            view.write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    /// Where a message for `slot` goes now.
    pub fn route(&self, slot: u32) -> Route {
        assert!(slot < SLOTS, "slot {slot} out of range");
        let Some(view) = self.view() else {
            return Route::Local { slot, epoch: None };
        };
        match &view.slots[slot as usize] {
            SlotView::Mine { epoch, valid_until } if Instant::now() < *valid_until => {
                Route::Local {
                    slot,
                    epoch: Some(*epoch),
                }
            }
            SlotView::Peer { node } => match view.members.get(node) {
                Some(address) => Route::Remote {
                    slot,
                    node: node.clone(),
                    address: address.clone(),
                },
                None => Route::Unavailable { slot },
            },
            _ => Route::Unavailable { slot },
        }
    }

    /// The epoch this node writes `slot` with, if it owns it.
    pub fn local_epoch(&self, slot: u32) -> Option<i64> {
        match self.route(slot) {
            Route::Local { epoch, .. } => epoch,
            _ => None,
        }
    }

    /// Live members with the slots each holds (empty in the embedded default).
    pub fn members(&self) -> Vec<Member> {
        let Some(view) = self.view() else {
            return Vec::new();
        };
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        for slot in &view.slots {
            match slot {
                SlotView::Mine { .. } => *held.entry(self.node.as_str()).or_default() += 1,
                SlotView::Peer { node } => *held.entry(node.as_str()).or_default() += 1,
                SlotView::Nobody => {}
            }
        }
        view.members
            .iter()
            .map(|(node, address)| Member {
                node: node.clone(),
                address: address.clone(),
                slots: held.get(node.as_str()).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The owner of every slot as this node sees it (`None`: nobody, or
    /// this node with a lease it no longer trusts).
    pub fn slot_owners(&self) -> Vec<Option<String>> {
        (0..SLOTS)
            .map(|slot| match self.route(slot) {
                Route::Local { .. } => Some(self.node.clone()),
                Route::Remote { node, .. } => Some(node),
                Route::Unavailable { .. } => None,
            })
            .collect()
    }

    /// Slots this node owns with a lease it still trusts.
    pub fn owned(&self) -> Vec<u32> {
        (0..SLOTS)
            .filter(|slot| matches!(self.route(*slot), Route::Local { .. }))
            .collect()
    }

    /// Slots nobody owns now.
    pub fn unowned(&self) -> usize {
        (0..SLOTS)
            .filter(|slot| matches!(self.route(*slot), Route::Unavailable { .. }))
            .count()
    }

    /// Whether the last heartbeat reached Redis (always true when embedded).
    pub fn redis_ok(&self) -> bool {
        self.view().is_none_or(|view| view.redis_ok)
    }

    pub(crate) fn set_redis_ok(&self, ok: bool) {
        if let Some(mut view) = self.view_mut() {
            view.redis_ok = ok;
        }
    }

    pub(crate) fn set_members(&self, members: BTreeMap<String, String>) {
        if let Some(mut view) = self.view_mut() {
            view.members = members;
        }
    }

    pub(crate) fn set_mine(&self, slot: u32, epoch: i64, valid_until: Instant) {
        if let Some(mut view) = self.view_mut() {
            view.slots[slot as usize] = SlotView::Mine { epoch, valid_until };
        }
    }

    pub(crate) fn set_peer(&self, slot: u32, node: &str) {
        if let Some(mut view) = self.view_mut() {
            view.slots[slot as usize] = SlotView::Peer {
                node: node.to_string(),
            };
        }
    }

    /// Forgets ownership of `slot`; returns whether this node held it.
    pub(crate) fn set_nobody(&self, slot: u32) -> bool {
        let Some(mut view) = self.view_mut() else {
            return false;
        };
        let was_mine = matches!(view.slots[slot as usize], SlotView::Mine { .. });
        view.slots[slot as usize] = SlotView::Nobody;
        was_mine
    }

    /// The epoch of a slot this node believes it holds, trusted or not.
    pub(crate) fn held_epoch(&self, slot: u32) -> Option<i64> {
        let view = self.view()?;
        match view.slots[slot as usize] {
            SlotView::Mine { epoch, .. } => Some(epoch),
            _ => None,
        }
    }
}

/// The owner a slot should have among `members`: rendezvous hashing, so a
/// member joining or leaving moves only the slots it wins or held.
pub fn desired_owner(members: &[String], slot: u32) -> Option<&str> {
    members
        .iter()
        .max_by_key(|node| (rendezvous_weight(node, slot), node.as_str()))
        .map(String::as_str)
}

fn rendezvous_weight(node: &str, slot: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.as_bytes().iter().chain(&slot.to_le_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; finish like splitmix64.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A slot's lease as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Free,
    /// Held by `node` (epoch `None` while its owner is still raising it).
    Held {
        node: String,
        epoch: Option<i64>,
    },
}

/// What a node does about one slot on a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take the free slot: lease in Redis, then raise the epoch in the database.
    Claim(u32),
    /// Extend our lease.
    Renew(u32),
    /// Hand the slot over: stop using it, then delete our lease.
    Release(u32),
    /// Another node holds it.
    Peer(u32, String),
    /// Our lease is gone (expired and maybe taken): stop using the slot.
    Lost(u32),
    /// Free, and another member should take it.
    Wait(u32),
}

/// Decides, for every slot, what `me` does given the live `members` (me
/// included), the leases read from Redis, and which slots `me` believes it
/// holds. Pure, so the simulation drives exactly the code the nodes run.
pub fn plan(me: &str, members: &[String], leases: &[Lease], believed: &[bool]) -> Vec<Action> {
    assert_eq!(leases.len(), SLOTS as usize);
    assert_eq!(believed.len(), SLOTS as usize);
    (0..SLOTS)
        .map(|slot| {
            let desired = desired_owner(members, slot);
            match &leases[slot as usize] {
                Lease::Held { node, .. } if node == me => {
                    if desired.is_some_and(|d| d != me) {
                        Action::Release(slot)
                    } else if believed[slot as usize] {
                        Action::Renew(slot)
                    } else {
                        // Left by an earlier run under the same name: take
                        // it again with a new epoch.
                        Action::Claim(slot)
                    }
                }
                _ if believed[slot as usize] => Action::Lost(slot),
                Lease::Held { node, .. } => Action::Peer(slot, node.clone()),
                Lease::Free if desired == Some(me) => Action::Claim(slot),
                Lease::Free => Action::Wait(slot),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(
            slot_of("position/payerfsp/USD"),
            slot_of("position/payerfsp/USD")
        );
        for i in 0..1000 {
            assert!(transfer_slot(&format!("id-{i}")) < SLOTS);
        }
    }

    #[test]
    fn rendezvous_spreads_slots_and_moves_few_on_join() {
        let three = nodes(&["a", "b", "c"]);
        let four = nodes(&["a", "b", "c", "d"]);
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        let mut moved = 0;
        for slot in 0..SLOTS {
            let before = desired_owner(&three, slot).expect("owner");
            *count.entry(before).or_default() += 1;
            let after = desired_owner(&four, slot).expect("owner");
            if before != after {
                assert_eq!(after, "d", "a join only moves slots to the new node");
                moved += 1;
            }
        }
        assert!(count.values().all(|n| *n >= 10), "{count:?}");
        assert!(moved > 0 && moved < 32, "{moved}");
    }

    #[test]
    fn plan_claims_renews_releases_and_notices_loss() {
        let members = nodes(&["a", "b"]);
        let mut leases = vec![Lease::Free; SLOTS as usize];
        let believed = vec![false; SLOTS as usize];
        let actions = plan("a", &members, &leases, &believed);
        for (slot, action) in actions.iter().enumerate() {
            let desired = desired_owner(&members, slot as u32);
            match action {
                Action::Claim(_) => assert_eq!(desired, Some("a")),
                Action::Wait(_) => assert_eq!(desired, Some("b")),
                other => panic!("unexpected {other:?}"),
            }
        }
        let slot_of_b = (0..SLOTS)
            .find(|s| desired_owner(&members, *s) == Some("b"))
            .expect("b wins a slot");
        leases[slot_of_b as usize] = Lease::Held {
            node: "a".into(),
            epoch: Some(3),
        };
        assert_eq!(
            plan("a", &members, &leases, &believed)[slot_of_b as usize],
            Action::Release(slot_of_b)
        );
        let mut believed = believed;
        believed[slot_of_b as usize] = true;
        leases[slot_of_b as usize] = Lease::Held {
            node: "b".into(),
            epoch: Some(4),
        };
        assert_eq!(
            plan("a", &members, &leases, &believed)[slot_of_b as usize],
            Action::Lost(slot_of_b)
        );
    }

    #[test]
    fn embedded_routes_everything_locally_without_epoch() {
        let placement = Placement::embedded();
        assert_eq!(
            placement.route(5),
            Route::Local {
                slot: 5,
                epoch: None
            }
        );
        assert!(placement.members().is_empty());
    }

    #[test]
    fn an_expired_belief_is_not_trusted() {
        let placement = Placement::cluster("a");
        placement.set_mine(1, 7, Instant::now() + std::time::Duration::from_secs(60));
        placement.set_mine(2, 8, Instant::now());
        assert_eq!(
            placement.route(1),
            Route::Local {
                slot: 1,
                epoch: Some(7)
            }
        );
        assert_eq!(placement.route(2), Route::Unavailable { slot: 2 });
    }
}
