//! Participants, their accounts, endpoints and limits, ledger account types,
//! currencies and settlement models: the reference data an operator manages.

use rust_decimal::Decimal;
use sqlx::any::AnyRow;
use sqlx::AnyPool;

use crate::{col, flag, from_units, insert_returning_id, now_text, to_units, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRecord {
    pub id: i64,
    pub name: String,
    pub is_active: bool,
    pub is_proxy: bool,
    pub created_date: String,
    pub accounts: Vec<AccountRecord>,
}

/// A ledger account (the reference hub's participantCurrency) with its balance.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub id: i64,
    pub participant_id: i64,
    pub currency: String,
    pub ledger_account_type: String,
    pub is_active: bool,
    pub created_date: String,
    pub position_id: i64,
    pub value: Decimal,
    pub reserved_value: Decimal,
    pub changed_date: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    pub endpoint_type: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitRecord {
    pub participant_name: String,
    pub account_id: i64,
    pub currency: String,
    pub limit_type: String,
    pub value: Decimal,
    pub alarm_percentage: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerAccountTypeRecord {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub is_active: bool,
    pub is_settleable: bool,
    pub created_date: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SettlementModelRecord {
    pub id: i64,
    pub name: String,
    pub is_active: bool,
    pub settlement_granularity: String,
    pub settlement_interchange: String,
    pub settlement_delay: String,
    pub currency: Option<String>,
    pub require_liquidity_check: bool,
    pub ledger_account_type: String,
    pub settlement_account_type: String,
    pub auto_position_reset: bool,
}

const ACCOUNT_COLUMNS: &str = "pc.participant_currency_id, pc.participant_id, pc.currency_id, \
     lat.name AS ledger_account_type, pc.is_active, pc.created_date, \
     pp.participant_position_id, pp.value, pp.reserved_value, pp.changed_date \
     FROM participant_currency pc \
     JOIN ledger_account_type lat ON lat.ledger_account_type_id = pc.ledger_account_type_id \
     JOIN participant_position pp ON pp.participant_currency_id = pc.participant_currency_id";

fn account_from_row(row: &AnyRow) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: col(row, "participant_currency_id")?,
        participant_id: col(row, "participant_id")?,
        currency: col(row, "currency_id")?,
        ledger_account_type: col(row, "ledger_account_type")?,
        is_active: flag(row, "is_active")?,
        created_date: col(row, "created_date")?,
        position_id: col(row, "participant_position_id")?,
        value: from_units(col(row, "value")?),
        reserved_value: from_units(col(row, "reserved_value")?),
        changed_date: col(row, "changed_date")?,
    })
}

fn participant_from_row(row: &AnyRow) -> Result<ParticipantRecord> {
    Ok(ParticipantRecord {
        id: col(row, "participant_id")?,
        name: col(row, "name")?,
        is_active: flag(row, "is_active")?,
        is_proxy: flag(row, "is_proxy")?,
        created_date: col(row, "created_date")?,
        accounts: Vec::new(),
    })
}

async fn accounts_of(pool: &AnyPool, participant_id: Option<i64>) -> Result<Vec<AccountRecord>> {
    let rows = match participant_id {
        Some(id) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLUMNS} WHERE pc.participant_id = ? ORDER BY pc.participant_currency_id"
            )))
            .bind(id)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLUMNS} ORDER BY pc.participant_currency_id"
            )))
                .fetch_all(pool)
                .await?
        }
    };
    rows.iter().map(account_from_row).collect()
}

impl Store {
    /// Every participant with its accounts, optionally only proxies or non-proxies.
    pub async fn list_participants(
        &self,
        is_proxy: Option<bool>,
    ) -> Result<Vec<ParticipantRecord>> {
        self.run(move |pool| async move {
            let rows = sqlx::query(
                "SELECT participant_id, name, is_active, is_proxy, created_date FROM participant ORDER BY participant_id",
            )
            .fetch_all(&pool)
            .await?;
            let mut participants = rows
                .iter()
                .map(participant_from_row)
                .collect::<Result<Vec<_>>>()?;
            if let Some(wanted) = is_proxy {
                participants.retain(|p| p.is_proxy == wanted);
            }
            let accounts = accounts_of(&pool, None).await?;
            for participant in &mut participants {
                participant.accounts = accounts
                    .iter()
                    .filter(|a| a.participant_id == participant.id)
                    .cloned()
                    .collect();
            }
            Ok(participants)
        })
        .await
    }

    /// One participant with its accounts.
    pub async fn participant(&self, name: &str) -> Result<Option<ParticipantRecord>> {
        let name = name.to_string();
        self.run(move |pool| async move {
            let row = sqlx::query(
                "SELECT participant_id, name, is_active, is_proxy, created_date FROM participant WHERE name = ?",
            )
            .bind(name)
            .fetch_optional(&pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let mut participant = participant_from_row(&row)?;
            participant.accounts = accounts_of(&pool, Some(participant.id)).await?;
            Ok(Some(participant))
        })
        .await
    }

    /// Creates a participant; the caller has checked that the name is free.
    pub async fn create_participant(&self, name: &str, is_proxy: bool) -> Result<i64> {
        let name = name.to_string();
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            let insert = sqlx::query(
                "INSERT INTO participant (name, is_active, is_proxy, created_date, created_by) VALUES (?, 1, ?, ?, 'operator')",
            )
            .bind(name)
            .bind(is_proxy as i64)
            .bind(now.clone());
            let id = insert_returning_id(&mut tx, insert).await?;
            sqlx::query(
                "INSERT INTO participant_status_change (participant_id, is_active, reason, created_date) VALUES (?, 1, 'created', ?)",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    /// Creates one account (with a zero position) per ledger account type.
    /// Returns the new account ids in the order of `types`.
    pub async fn create_accounts(
        &self,
        participant_id: i64,
        currency: &str,
        types: &[&str],
    ) -> Result<Vec<i64>> {
        let currency = currency.to_string();
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            let mut ids = Vec::with_capacity(types.len());
            for account_type in types {
                let insert = sqlx::query(
                    "INSERT INTO participant_currency (participant_id, currency_id, ledger_account_type_id, is_active, created_date, created_by) \
                     SELECT ?, ?, ledger_account_type_id, 1, ?, 'operator' FROM ledger_account_type WHERE name = ?",
                )
                .bind(participant_id)
                .bind(currency.clone())
                .bind(now.clone())
                .bind(account_type.clone());
                let id = insert_returning_id(&mut tx, insert).await?;
                sqlx::query(
                    "INSERT INTO participant_position (participant_currency_id, value, reserved_value, changed_date) VALUES (?, 0, 0, ?)",
                )
                .bind(id)
                .bind(now.clone())
                .execute(&mut *tx)
                .await?;
                ids.push(id);
            }
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    pub async fn set_participant_active(&self, participant_id: i64, is_active: bool) -> Result<()> {
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            sqlx::query("UPDATE participant SET is_active = ? WHERE participant_id = ?")
                .bind(is_active as i64)
                .bind(participant_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO participant_status_change (participant_id, is_active, reason, created_date) VALUES (?, ?, 'operator', ?)",
            )
            .bind(participant_id)
            .bind(is_active as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn set_account_active(&self, account_id: i64, is_active: bool) -> Result<()> {
        self.run(move |pool| async move {
            let now = now_text();
            let mut tx = crate::begin_write(&pool).await?;
            sqlx::query("UPDATE participant_currency SET is_active = ? WHERE participant_currency_id = ?")
                .bind(is_active as i64)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO participant_currency_status_change (participant_currency_id, is_active, created_date) VALUES (?, ?, ?)",
            )
            .bind(account_id)
            .bind(is_active as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Minor units of a seeded, active ISO 4217 currency; `None` if unknown.
    pub async fn currency_scale(&self, code: &str) -> Result<Option<i64>> {
        let code = code.to_string();
        self.run(move |pool| async move {
            let row =
                sqlx::query("SELECT scale FROM currency WHERE currency_id = ? AND is_active = 1")
                    .bind(code)
                    .fetch_optional(&pool)
                    .await?;
            row.map(|r| col::<i64>(&r, "scale")).transpose()
        })
        .await
    }

    pub async fn ledger_account_types(&self) -> Result<Vec<LedgerAccountTypeRecord>> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT ledger_account_type_id, name, description, is_active, is_settleable, created_date \
                 FROM ledger_account_type ORDER BY ledger_account_type_id",
            )
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(LedgerAccountTypeRecord {
                        id: col(row, "ledger_account_type_id")?,
                        name: col(row, "name")?,
                        description: col::<Option<String>>(row, "description")?.unwrap_or_default(),
                        is_active: flag(row, "is_active")?,
                        is_settleable: flag(row, "is_settleable")?,
                        created_date: col(row, "created_date")?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn create_ledger_account_type(
        &self,
        name: &str,
        description: &str,
        is_active: bool,
        is_settleable: bool,
    ) -> Result<i64> {
        let (name, description) = (name.to_string(), description.to_string());
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let insert = sqlx::query(
                "INSERT INTO ledger_account_type (name, description, is_active, is_settleable, created_date) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(name)
            .bind(description)
            .bind(is_active as i64)
            .bind(is_settleable as i64)
            .bind(now_text());
            let id = insert_returning_id(&mut tx, insert).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    /// The current endpoints of a participant: the newest row of each type.
    pub async fn endpoints(&self, participant_id: i64) -> Result<Vec<EndpointRecord>> {
        self.run(move |pool| async move {
            let rows = sqlx::query(
                "SELECT e.endpoint_type, e.value FROM participant_endpoint e \
                 WHERE e.participant_id = ? AND e.participant_endpoint_id = ( \
                   SELECT MAX(x.participant_endpoint_id) FROM participant_endpoint x \
                   WHERE x.participant_id = e.participant_id AND x.endpoint_type = e.endpoint_type) \
                 ORDER BY e.endpoint_type",
            )
            .bind(participant_id)
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(EndpointRecord {
                        endpoint_type: col(row, "endpoint_type")?,
                        value: col(row, "value")?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn endpoint_type_exists(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |pool| async move {
            Ok(sqlx::query("SELECT name FROM endpoint_type WHERE name = ?")
                .bind(name)
                .fetch_optional(&pool)
                .await?
                .is_some())
        })
        .await
    }

    /// Adds or replaces (by inserting a newer row) one endpoint.
    pub async fn add_endpoint(
        &self,
        participant_id: i64,
        endpoint_type: &str,
        value: &str,
    ) -> Result<()> {
        let (endpoint_type, value) = (endpoint_type.to_string(), value.to_string());
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO participant_endpoint (participant_id, endpoint_type, value, created_date, created_by) VALUES (?, ?, ?, ?, 'operator')",
            )
            .bind(participant_id)
            .bind(endpoint_type)
            .bind(value)
            .bind(now_text())
            .execute(&pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Current limits (newest row per account and type), filtered.
    pub async fn limits(
        &self,
        participant_id: Option<i64>,
        currency: Option<String>,
        limit_type: Option<String>,
    ) -> Result<Vec<LimitRecord>> {
        self.run(move |pool| async move {
            let rows = sqlx::query(
                "SELECT p.name, p.participant_id, pc.participant_currency_id, pc.currency_id, l.limit_type, l.value, l.threshold_alarm_percentage \
                 FROM participant_limit l \
                 JOIN participant_currency pc ON pc.participant_currency_id = l.participant_currency_id \
                 JOIN participant p ON p.participant_id = pc.participant_id \
                 WHERE l.participant_limit_id = ( \
                   SELECT MAX(x.participant_limit_id) FROM participant_limit x \
                   WHERE x.participant_currency_id = l.participant_currency_id AND x.limit_type = l.limit_type) \
                 ORDER BY p.participant_id, pc.currency_id, l.limit_type",
            )
            .fetch_all(&pool)
            .await?;
            let mut limits = Vec::new();
            for row in &rows {
                let pid: i64 = col(row, "participant_id")?;
                let record = LimitRecord {
                    participant_name: col(row, "name")?,
                    account_id: col(row, "participant_currency_id")?,
                    currency: col(row, "currency_id")?,
                    limit_type: col(row, "limit_type")?,
                    value: from_units(col(row, "value")?),
                    alarm_percentage: from_units(col(row, "threshold_alarm_percentage")?),
                };
                let wanted = participant_id.is_none_or(|id| id == pid)
                    && currency.as_deref().is_none_or(|c| c == record.currency)
                    && limit_type.as_deref().is_none_or(|t| t == record.limit_type);
                if wanted {
                    limits.push(record);
                }
            }
            Ok(limits)
        })
        .await
    }

    pub async fn settlement_models(&self) -> Result<Vec<SettlementModelRecord>> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT settlement_model_id, name, is_active, settlement_granularity, settlement_interchange, settlement_delay, \
                 currency_id, require_liquidity_check, ledger_account_type, settlement_account_type, auto_position_reset \
                 FROM settlement_model ORDER BY settlement_model_id",
            )
            .fetch_all(&pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(SettlementModelRecord {
                        id: col(row, "settlement_model_id")?,
                        name: col(row, "name")?,
                        is_active: flag(row, "is_active")?,
                        settlement_granularity: col(row, "settlement_granularity")?,
                        settlement_interchange: col(row, "settlement_interchange")?,
                        settlement_delay: col(row, "settlement_delay")?,
                        currency: col(row, "currency_id")?,
                        require_liquidity_check: flag(row, "require_liquidity_check")?,
                        ledger_account_type: col(row, "ledger_account_type")?,
                        settlement_account_type: col(row, "settlement_account_type")?,
                        auto_position_reset: flag(row, "auto_position_reset")?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn create_settlement_model(&self, model: SettlementModelRecord) -> Result<i64> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let insert = sqlx::query(
                "INSERT INTO settlement_model (name, is_active, settlement_granularity, settlement_interchange, settlement_delay, \
                 currency_id, require_liquidity_check, ledger_account_type, settlement_account_type, auto_position_reset, created_date) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(model.name)
            .bind(model.is_active as i64)
            .bind(model.settlement_granularity)
            .bind(model.settlement_interchange)
            .bind(model.settlement_delay)
            .bind(model.currency)
            .bind(model.require_liquidity_check as i64)
            .bind(model.ledger_account_type)
            .bind(model.settlement_account_type)
            .bind(model.auto_position_reset as i64)
            .bind(now_text());
            let id = insert_returning_id(&mut tx, insert).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    pub async fn set_settlement_model_active(&self, id: i64, is_active: bool) -> Result<()> {
        self.run(move |pool| async move {
            sqlx::query("UPDATE settlement_model SET is_active = ? WHERE settlement_model_id = ?")
                .bind(is_active as i64)
                .bind(id)
                .execute(&pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Creates the hub participant if it is missing (idempotent, run at start).
    pub async fn ensure_hub(&self, hub_name: &str) -> Result<i64> {
        if let Some(hub) = self.participant(hub_name).await? {
            return Ok(hub.id);
        }
        self.create_participant(hub_name, false).await
    }
}

/// Converts an operator-supplied limit or alarm percentage for storage.
pub fn limit_units(value: Decimal) -> Result<i64> {
    Ok(to_units(value)?)
}
