//! What the transfer rules need to know about participants, cached.
//!
//! A snapshot per participant name (or the fact that the name is unknown) is
//! read from storage once and kept until the operator API changes that
//! participant, which invalidates it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switch_storage::participants::SettlementModelRecord;
use switch_storage::Store;

use crate::cached::Cached;
use crate::error::FspiopError;

/// Entries kept at most; beyond it the cache starts again from empty.
const ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct AccountSnapshot {
    pub currency: String,
    pub ledger_account_type: String,
    pub is_active: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantSnapshot {
    pub name: String,
    pub is_active: bool,
    pub accounts: Vec<AccountSnapshot>,
}

impl ParticipantSnapshot {
    /// The participant's POSITION account in `currency`, if any.
    pub fn position_account(&self, currency: &str) -> Option<&AccountSnapshot> {
        self.accounts
            .iter()
            .find(|a| a.currency == currency && a.ledger_account_type == "POSITION")
    }
}

#[derive(Clone)]
pub struct ParticipantCache {
    store: Store,
    entries: Arc<Mutex<HashMap<String, Option<Arc<ParticipantSnapshot>>>>>,
    /// The settlement models, read once and kept until the operator changes one.
    models: Cached<Vec<SettlementModelRecord>>,
}

impl std::fmt::Debug for ParticipantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantCache").finish_non_exhaustive()
    }
}

impl ParticipantCache {
    pub fn new(store: Store) -> Self {
        ParticipantCache {
            store,
            entries: Arc::new(Mutex::new(HashMap::new())),
            models: Cached::default(),
        }
    }

    /// The IMMEDIATE-GROSS model that settles `currency`, if that is how it
    /// settles: the active POSITION model for the currency, else the active
    /// default model (no currency), decides.
    pub async fn gross_model(&self, currency: &str) -> Result<Option<i64>, FspiopError> {
        let models = self
            .models
            .get_or_load(|| self.store.settlement_models())
            .await?;
        let applies =
            |m: &&SettlementModelRecord| m.is_active && m.ledger_account_type == "POSITION";
        let model = models
            .iter()
            .filter(applies)
            .find(|m| m.currency.as_deref() == Some(currency))
            .or_else(|| models.iter().filter(applies).find(|m| m.currency.is_none()));
        Ok(model
            .filter(|m| m.settlement_delay == "IMMEDIATE" && m.settlement_granularity == "GROSS")
            .map(|m| m.id))
    }

    /// Forgets the settlement models (after the operator changed one).
    pub fn models_changed(&self) {
        self.models.forget();
    }

    /// The participant, or `None` if no participant has that name.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<ParticipantSnapshot>>, FspiopError> {
        if let Some(hit) = self.lock().get(name) {
            return Ok(hit.clone());
        }
        let snapshot = self.store.participant(name).await?.map(|p| {
            Arc::new(ParticipantSnapshot {
                name: p.name,
                is_active: p.is_active,
                accounts: p
                    .accounts
                    .into_iter()
                    .map(|a| AccountSnapshot {
                        currency: a.currency,
                        ledger_account_type: a.ledger_account_type,
                        is_active: a.is_active,
                    })
                    .collect(),
            })
        });
        let mut entries = self.lock();
        if entries.len() >= ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(name.to_string(), snapshot.clone());
        Ok(snapshot)
    }

    /// Forgets one participant (after the operator changed it).
    pub fn invalidate(&self, name: &str) {
        self.lock().remove(name);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<ParticipantSnapshot>>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
