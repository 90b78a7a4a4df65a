//! Fencing epochs of placement slots (cluster mode).
//!
//! A node that takes a slot raises its epoch here ([`Store::raise_slot_epoch`]);
//! every ledger batch that carries fences first takes a shared lock on the
//! fenced slots' rows and checks their epochs ([`check_fences`]). Raising an
//! epoch takes the row's exclusive lock, so it waits for batches still in
//! flight under the old epoch, and every batch after it that still carries
//! the old epoch is refused: a node that lost its lease cannot write, whatever
//! it believes. Locks are taken in slot order, first in each transaction.

use sqlx::{Any, Transaction};

use crate::{col, now_text, Result, StorageError, Store};

/// A write's claim to a slot at an epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Fence {
    pub slot: u32,
    pub epoch: i64,
}

/// Fences one batch carries at most (one per slot).
pub const FENCES_PER_BATCH_MAX: usize = 64;

impl Store {
    /// The current epoch of `slot`.
    pub async fn slot_epoch(&self, slot: u32) -> Result<i64> {
        self.run(move |pool| async move {
            let row = sqlx::query("SELECT epoch FROM cluster_slot WHERE slot = ?")
                .bind(i64::from(slot))
                .fetch_optional(&pool)
                .await?
                .ok_or_else(|| {
                    StorageError::Invariant(format!("slot {slot} has no fencing row"))
                })?;
            col(&row, "epoch")
        })
        .await
    }

    /// Raises the epoch of `slot` from `expected` for `node`; the new epoch,
    /// or `None` when another claimer raised it first (compare-and-set, so
    /// a raise that arrives late never overtakes a later owner's epoch).
    pub async fn raise_slot_epoch(
        &self,
        slot: u32,
        node: &str,
        expected: i64,
    ) -> Result<Option<i64>> {
        let node = node.to_string();
        self.run(move |pool| async move {
            let raised = sqlx::query(
                "UPDATE cluster_slot SET epoch = epoch + 1, owner_node = ?, claimed_date = ? WHERE slot = ? AND epoch = ?",
            )
            .bind(node)
            .bind(now_text())
            .bind(i64::from(slot))
            .bind(expected)
            .execute(&pool)
            .await?;
            Ok((raised.rows_affected() == 1).then_some(expected + 1))
        })
        .await
    }
}

/// Refuses the transaction unless every fence still holds its slot's epoch.
pub(crate) async fn check_fences(tx: &mut Transaction<'_, Any>, fences: &[Fence]) -> Result<()> {
    if fences.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<Fence> = fences.to_vec();
    wanted.sort();
    wanted.dedup();
    let mut slots: Vec<u32> = wanted.iter().map(|f| f.slot).collect();
    slots.dedup();
    if slots.len() > FENCES_PER_BATCH_MAX {
        return Err(StorageError::Invariant(format!(
            "{} fenced slots in one batch",
            slots.len()
        )));
    }
    let marks = vec!["?"; slots.len()].join(", ");
    let sql = format!(
        "SELECT slot, epoch FROM cluster_slot WHERE slot IN ({marks}) ORDER BY slot LOCK IN SHARE MODE"
    );
    // Only placeholders are spliced in.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for slot in &slots {
        query = query.bind(i64::from(*slot));
    }
    let rows = query.fetch_all(&mut **tx).await?;
    let mut current = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let slot: i64 = col(row, "slot")?;
        let epoch: i64 = col(row, "epoch")?;
        current.insert(slot, epoch);
    }
    for fence in &wanted {
        let now = current.get(&i64::from(fence.slot)).copied();
        if now != Some(fence.epoch) {
            return Err(StorageError::Fenced {
                slot: fence.slot,
                epoch: fence.epoch,
                current: now,
            });
        }
    }
    Ok(())
}
