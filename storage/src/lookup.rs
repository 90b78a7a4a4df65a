//! Account lookup: the built-in oracle (party identifier -> owning FSP) and
//! the oracle configuration of the ALS admin API.

use crate::{col, flag, insert_returning_id, now_text, Result, Store};

/// A party identifier as the oracle keys it. Empty sub id or currency means
/// "none".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyKey {
    pub party_id_type: String,
    pub party_identifier: String,
    pub party_sub_id: String,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OracleRecord {
    pub id: i64,
    pub party_id_type: String,
    pub endpoint_type: String,
    pub value: String,
    pub currency: Option<String>,
    pub is_default: bool,
    pub is_active: bool,
    pub created_date: String,
}

impl Store {
    /// The FSPs that registered the party: with a currency, registrations in
    /// that currency first, then currency-less ones.
    pub async fn party_owners(&self, key: PartyKey) -> Result<Vec<String>> {
        self.run(move |pool| async move {
            let rows = sqlx::query(
                "SELECT fsp_id, currency_id FROM party_registration \
                 WHERE party_id_type = ? AND party_identifier = ? AND party_sub_id = ? ORDER BY fsp_id",
            )
            .bind(key.party_id_type)
            .bind(key.party_identifier)
            .bind(key.party_sub_id)
            .fetch_all(&pool)
            .await?;
            // Registrations in the requested currency first, then currency-less ones.
            let mut ranked: Vec<(bool, String)> = Vec::new();
            for row in &rows {
                let currency: String = col(row, "currency_id")?;
                let fsp: String = col(row, "fsp_id")?;
                let exact = !key.currency.is_empty() && currency == key.currency;
                if exact || key.currency.is_empty() || currency.is_empty() {
                    ranked.push((!exact, fsp));
                }
            }
            ranked.sort();
            let mut owners: Vec<String> = Vec::new();
            for (_, fsp) in ranked {
                if !owners.contains(&fsp) {
                    owners.push(fsp);
                }
            }
            Ok(owners)
        })
        .await
    }

    /// Registers `fsp` for the party. Returns the FSP already registered for
    /// exactly this key, if another one is.
    pub async fn register_party(&self, key: PartyKey, fsp: &str) -> Result<Option<String>> {
        let fsp = fsp.to_string();
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let existing = sqlx::query(
                "SELECT fsp_id FROM party_registration WHERE party_id_type = ? AND party_identifier = ? \
                 AND party_sub_id = ? AND currency_id = ?",
            )
            .bind(key.party_id_type.clone())
            .bind(key.party_identifier.clone())
            .bind(key.party_sub_id.clone())
            .bind(key.currency.clone())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let owner: String = col(&row, "fsp_id")?;
                tx.rollback().await?;
                return Ok(if owner == fsp { None } else { Some(owner) });
            }
            sqlx::query(
                "INSERT INTO party_registration (party_id_type, party_identifier, party_sub_id, currency_id, fsp_id, created_date) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(key.party_id_type)
            .bind(key.party_identifier)
            .bind(key.party_sub_id)
            .bind(key.currency)
            .bind(fsp)
            .bind(now_text())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(None)
        })
        .await
    }

    /// Removes `fsp`'s registrations of the party (every currency when the
    /// key has none). Returns how many were removed.
    pub async fn unregister_party(&self, key: PartyKey, fsp: &str) -> Result<u64> {
        let fsp = fsp.to_string();
        self.run(move |pool| async move {
            let removed = sqlx::query(
                "DELETE FROM party_registration WHERE party_id_type = ? AND party_identifier = ? AND party_sub_id = ? \
                 AND fsp_id = ? AND (currency_id = ? OR ? = '')",
            )
            .bind(key.party_id_type)
            .bind(key.party_identifier)
            .bind(key.party_sub_id)
            .bind(fsp)
            .bind(key.currency.clone())
            .bind(key.currency)
            .execute(&pool)
            .await?
            .rows_affected();
            Ok(removed)
        })
        .await
    }

    pub async fn oracles(&self) -> Result<Vec<OracleRecord>> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT oracle_endpoint_id, party_id_type, endpoint_type, value, currency_id, is_default, is_active, created_date \
                 FROM oracle_endpoint WHERE is_active = 1 ORDER BY oracle_endpoint_id",
            )
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(OracleRecord {
                        id: col(row, "oracle_endpoint_id")?,
                        party_id_type: col(row, "party_id_type")?,
                        endpoint_type: col(row, "endpoint_type")?,
                        value: col(row, "value")?,
                        currency: col(row, "currency_id")?,
                        is_default: flag(row, "is_default")?,
                        is_active: flag(row, "is_active")?,
                        created_date: col(row, "created_date")?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn create_oracle(&self, oracle: OracleRecord) -> Result<i64> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let insert = sqlx::query(
                "INSERT INTO oracle_endpoint (party_id_type, endpoint_type, value, currency_id, is_default, is_active, created_date) \
                 VALUES (?, ?, ?, ?, ?, 1, ?)",
            )
            .bind(oracle.party_id_type)
            .bind(oracle.endpoint_type)
            .bind(oracle.value)
            .bind(oracle.currency)
            .bind(oracle.is_default as i64)
            .bind(now_text());
            let id = insert_returning_id(&mut tx, insert).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    pub async fn update_oracle(&self, oracle: OracleRecord) -> Result<()> {
        self.run(move |pool| async move {
            sqlx::query(
                "UPDATE oracle_endpoint SET party_id_type = ?, endpoint_type = ?, value = ?, currency_id = ?, is_default = ? \
                 WHERE oracle_endpoint_id = ?",
            )
            .bind(oracle.party_id_type)
            .bind(oracle.endpoint_type)
            .bind(oracle.value)
            .bind(oracle.currency)
            .bind(oracle.is_default as i64)
            .bind(oracle.id)
            .execute(&pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Deactivates an oracle (the row is kept for audit).
    pub async fn delete_oracle(&self, id: i64) -> Result<()> {
        self.run(move |pool| async move {
            sqlx::query("UPDATE oracle_endpoint SET is_active = 0 WHERE oracle_endpoint_id = ?")
                .bind(id)
                .execute(&pool)
                .await?;
            Ok(())
        })
        .await
    }
}
