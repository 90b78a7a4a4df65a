//! Settlement windows and settlements as recorded.
//!
//! A window close and a settlement's changes each run in one database
//! transaction. The close takes the open-window row lock that every commit
//! batch takes on MariaDB (see `transfers::lock_open_window`; on SQLite
//! every write transaction holds the database's one write lock from
//! `BEGIN IMMEDIATE`), so the content it aggregates is exactly the set of
//! transfers committed into the window.
//! Which transitions are allowed is decided in `actors::settlement`; this
//! module records them.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::transfers::lock_open_window;
use crate::{col, from_units, insert_returning_id, now_text, Result, StorageError, Store};

/// Window states of the central-settlement API.
pub const WINDOW_OPEN: &str = "OPEN";
pub const WINDOW_CLOSED: &str = "CLOSED";
pub const PENDING_SETTLEMENT: &str = "PENDING_SETTLEMENT";
pub const SETTLED: &str = "SETTLED";
pub const ABORTED: &str = "ABORTED";

/// One currency (and ledger account type) of a closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowContentRecord {
    pub id: i64,
    pub window_id: i64,
    pub state: String,
    pub ledger_account_type: String,
    pub currency: String,
    pub settlement_id: Option<i64>,
    pub created_date: String,
    pub changed_date: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowRecord {
    pub id: i64,
    pub state: String,
    pub reason: Option<String>,
    pub created_date: String,
    pub changed_date: Option<String>,
    pub content: Vec<WindowContentRecord>,
}

/// Filters of `GET /settlementWindows` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct WindowFilter {
    pub participant_id: Option<i64>,
    pub state: Option<String>,
    pub from_date: Option<String>,
    pub to_date: Option<String>,
    pub currency: Option<String>,
}

/// One participant account of a settlement.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlementAccountRecord {
    /// The settlement_participant_currency row.
    pub id: i64,
    pub participant_id: i64,
    pub participant_name: String,
    /// The participant's POSITION account (participant currency id).
    pub account_id: i64,
    pub currency: String,
    /// Positive for a net payer, negative for a net receiver.
    pub net_amount: Decimal,
    pub state: String,
    pub reason: Option<String>,
    pub external_reference: Option<String>,
    pub created_date: String,
    pub changed_date: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SettlementRecord {
    pub id: i64,
    pub model_id: i64,
    pub state: String,
    pub reason: Option<String>,
    pub created_date: String,
    pub changed_date: String,
    pub window_ids: Vec<i64>,
    pub accounts: Vec<SettlementAccountRecord>,
}

/// Filters of `GET /settlements`.
#[derive(Debug, Clone, Default)]
pub struct SettlementFilter {
    pub state: Option<String>,
    pub window_id: Option<i64>,
    pub currency: Option<String>,
    pub participant_id: Option<i64>,
    pub account_id: Option<i64>,
    pub from_date: Option<String>,
    pub to_date: Option<String>,
}

/// A state step of one settlement account, recorded with its history row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SettlementAccountStep {
    pub settlement_account_id: i64,
    pub state: String,
    pub reason: Option<String>,
    pub external_reference: Option<String>,
}

/// Sent and received totals of one account over a set of window contents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountTotals {
    pub sent_amount: Decimal,
    pub sent_count: i64,
    pub received_amount: Decimal,
    pub received_count: i64,
}

/// Why a settlement could not be created.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateRefusal {
    WindowNotFound(i64),
    WindowNotApplicable(i64, String),
    NoContent,
}

/// The model columns a settlement creation needs.
#[derive(Debug, Clone)]
pub struct ModelScope {
    pub model_id: i64,
    pub ledger_account_type: String,
    pub currency: Option<String>,
}

const WINDOW_COLUMNS: &str =
    "settlement_window_id, state, reason, created_date, changed_date FROM settlement_window";
const CONTENT_COLUMNS: &str =
    "settlement_window_content_id, settlement_window_id, state, ledger_account_type, currency_id, \
     settlement_id, created_date, changed_date FROM settlement_window_content";
const ACCOUNT_COLUMNS: &str = "spc.settlement_participant_currency_id, spc.settlement_id, pc.participant_id, p.name, \
     spc.participant_currency_id, pc.currency_id, spc.net_amount, spc.state, spc.reason, spc.external_reference, \
     spc.created_date, spc.changed_date FROM settlement_participant_currency spc \
     JOIN participant_currency pc ON pc.participant_currency_id = spc.participant_currency_id \
     JOIN participant p ON p.participant_id = pc.participant_id";

impl Store {
    /// Closes window `id` if it is the open one and opens the next, in one
    /// transaction. Returns the new window's id, or `None` when `id` is not
    /// the open window.
    pub async fn close_window(&self, id: i64, reason: String) -> Result<Option<i64>> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            if lock_open_window(&mut tx).await? != id {
                return Ok(None);
            }
            let now = now_text();
            let next = insert_returning_id(
                &mut tx,
                sqlx::query("INSERT INTO settlement_window (reason, created_date, state, changed_date) VALUES (NULL, ?, 'OPEN', ?)")
                    .bind(now.clone())
                    .bind(now.clone()),
            )
            .await?;
            window_history(&mut tx, next, WINDOW_OPEN, None, &now).await?;
            sqlx::query("UPDATE settlement_window_open SET settlement_window_id = ? WHERE singleton = 1")
                .bind(next)
                .execute(&mut *tx)
                .await?;
            // PROCESSING and CLOSED in one step: the content is aggregated
            // under the lock, so there is no window of time to wait for
            // late commits.
            window_history(&mut tx, id, "PROCESSING", Some(&reason), &now).await?;
            sqlx::query("UPDATE settlement_window SET reason = ? WHERE settlement_window_id = ?")
                .bind(reason.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            set_window_state(&mut tx, id, WINDOW_CLOSED, Some(&reason), &now).await?;
            aggregate_window(&mut tx, id, &now).await?;
            tx.commit().await?;
            Ok(Some(next))
        })
        .await
    }

    /// The id of the open window.
    pub async fn open_window(&self) -> Result<i64> {
        self.run(|pool| async move {
            let row = sqlx::query(
                "SELECT settlement_window_id FROM settlement_window_open WHERE singleton = 1",
            )
            .fetch_one(&pool)
            .await?;
            col(&row, "settlement_window_id")
        })
        .await
    }

    pub async fn window(&self, id: i64) -> Result<Option<WindowRecord>> {
        Ok(self.windows_by_ids(vec![id]).await?.pop())
    }

    /// Windows matching every filter given, oldest first.
    pub async fn windows(&self, filter: WindowFilter) -> Result<Vec<WindowRecord>> {
        let mut query = Conditions::new(
            "SELECT w.settlement_window_id AS id FROM settlement_window w WHERE 1 = 1",
        );
        query.and("w.state = ?", filter.state.map(Arg::Text));
        query.and("w.created_date >= ?", filter.from_date.map(Arg::Text));
        query.and("w.created_date <= ?", filter.to_date.map(Arg::Text));
        query.and(
            "EXISTS (SELECT 1 FROM settlement_window_content c WHERE c.settlement_window_id = w.settlement_window_id AND c.currency_id = ?)",
            filter.currency.map(Arg::Text),
        );
        query.and(
            "EXISTS (SELECT 1 FROM settlement_window_content c \
             JOIN settlement_content_aggregation a ON a.settlement_window_content_id = c.settlement_window_content_id \
             JOIN participant_currency pc ON pc.participant_currency_id = a.participant_currency_id \
             WHERE c.settlement_window_id = w.settlement_window_id AND pc.participant_id = ?)",
            filter.participant_id.map(Arg::Int),
        );
        let ids = self.matching_ids(query, "w.settlement_window_id").await?;
        self.windows_by_ids(ids).await
    }

    async fn matching_ids(&self, mut query: Conditions, order_by: &str) -> Result<Vec<i64>> {
        query.sql.push_str(&format!(" ORDER BY {order_by}"));
        self.run(move |pool| async move {
            let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(query.sql)), query.args)
                .fetch_all(&pool)
                .await?;
            rows.iter().map(|r| col(r, "id")).collect()
        })
        .await
    }

    async fn windows_by_ids(&self, ids: Vec<i64>) -> Result<Vec<WindowRecord>> {
        self.run(move |pool| async move {
            let mut windows = Vec::with_capacity(ids.len());
            let mut conn = pool.acquire().await?;
            for id in ids {
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {WINDOW_COLUMNS} WHERE settlement_window_id = ?"
                )))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                else {
                    continue;
                };
                let content = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONTENT_COLUMNS} WHERE settlement_window_id = ? ORDER BY settlement_window_content_id"
                )))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(content_record)
                .collect::<Result<Vec<_>>>()?;
                windows.push(WindowRecord {
                    id,
                    state: col(&row, "state")?,
                    reason: col(&row, "reason")?,
                    created_date: col(&row, "created_date")?,
                    changed_date: col(&row, "changed_date")?,
                    content,
                });
            }
            Ok(windows)
        })
        .await
    }

    /// Creates a settlement over the windows' content that the model covers.
    pub async fn create_settlement(
        &self,
        model: ModelScope,
        reason: String,
        window_ids: Vec<i64>,
    ) -> Result<std::result::Result<i64, CreateRefusal>> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let mut contents = Vec::new();
            for &window_id in &window_ids {
                let Some(row) = sqlx::query("SELECT state FROM settlement_window WHERE settlement_window_id = ?")
                    .bind(window_id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(Err(CreateRefusal::WindowNotFound(window_id)));
                };
                let state: String = col(&row, "state")?;
                if state != WINDOW_CLOSED && state != ABORTED && state != PENDING_SETTLEMENT {
                    return Ok(Err(CreateRefusal::WindowNotApplicable(window_id, state)));
                }
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONTENT_COLUMNS} WHERE settlement_window_id = ? ORDER BY settlement_window_content_id"
                )))
                .bind(window_id)
                .fetch_all(&mut *tx)
                .await?;
                for row in &rows {
                    let content = content_record(row)?;
                    let covered = content.ledger_account_type == model.ledger_account_type
                        && model.currency.as_ref().is_none_or(|c| *c == content.currency);
                    let free = content.state == WINDOW_CLOSED || content.state == ABORTED;
                    if covered && free {
                        contents.push(content);
                    }
                }
            }
            if contents.is_empty() {
                return Ok(Err(CreateRefusal::NoContent));
            }
            let now = now_text();
            let settlement_id = insert_returning_id(
                &mut tx,
                sqlx::query("INSERT INTO settlement (settlement_model_id, reason, state, created_date, changed_date) VALUES (?, ?, ?, ?, ?)")
                    .bind(model.model_id)
                    .bind(reason.clone())
                    .bind(PENDING_SETTLEMENT)
                    .bind(now.clone())
                    .bind(now.clone()),
            )
            .await?;
            settlement_history(&mut tx, settlement_id, PENDING_SETTLEMENT, Some(&reason), &now).await?;
            for &window_id in &window_ids {
                sqlx::query("INSERT INTO settlement_settlement_window (settlement_id, settlement_window_id) VALUES (?, ?)")
                    .bind(settlement_id)
                    .bind(window_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let content_ids: Vec<i64> = contents.iter().map(|c| c.id).collect();
            for content in &contents {
                sqlx::query("UPDATE settlement_window_content SET settlement_id = ? WHERE settlement_window_content_id = ?")
                    .bind(settlement_id)
                    .bind(content.id)
                    .execute(&mut *tx)
                    .await?;
                set_content_state(&mut tx, content.id, PENDING_SETTLEMENT, Some(&reason), &now).await?;
            }
            for &window_id in &window_ids {
                set_window_state(&mut tx, window_id, PENDING_SETTLEMENT, Some(&reason), &now).await?;
            }
            for (account_id, totals) in totals_of_contents(&mut tx, &content_ids).await? {
                let net = totals.sent_amount - totals.received_amount;
                let row_id = insert_returning_id(
                    &mut tx,
                    sqlx::query(
                        "INSERT INTO settlement_participant_currency (settlement_id, participant_currency_id, net_amount, state, reason, \
                         created_date, changed_date) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(settlement_id)
                    .bind(account_id)
                    .bind(crate::to_units(net)?)
                    .bind(PENDING_SETTLEMENT)
                    .bind(reason.clone())
                    .bind(now.clone())
                    .bind(now.clone()),
                )
                .await?;
                let step = SettlementAccountStep {
                    settlement_account_id: row_id,
                    state: PENDING_SETTLEMENT.into(),
                    reason: Some(reason.clone()),
                    external_reference: None,
                };
                account_history(&mut tx, &step, &now).await?;
            }
            tx.commit().await?;
            Ok(Ok(settlement_id))
        })
        .await
    }

    pub async fn settlement(&self, id: i64) -> Result<Option<SettlementRecord>> {
        Ok(self.settlements_by_ids(vec![id]).await?.pop())
    }

    /// Settlements matching every filter given, oldest first.
    pub async fn settlements(&self, filter: SettlementFilter) -> Result<Vec<SettlementRecord>> {
        let mut query =
            Conditions::new("SELECT s.settlement_id AS id FROM settlement s WHERE 1 = 1");
        query.and("s.state = ?", filter.state.map(Arg::Text));
        query.and(
            "EXISTS (SELECT 1 FROM settlement_settlement_window w WHERE w.settlement_id = s.settlement_id AND w.settlement_window_id = ?)",
            filter.window_id.map(Arg::Int),
        );
        let account = |condition: &str| {
            format!(
                "EXISTS (SELECT 1 FROM settlement_participant_currency spc \
                 JOIN participant_currency pc ON pc.participant_currency_id = spc.participant_currency_id \
                 WHERE spc.settlement_id = s.settlement_id AND {condition})"
            )
        };
        query.and(
            &account("pc.currency_id = ?"),
            filter.currency.map(Arg::Text),
        );
        query.and(
            &account("pc.participant_id = ?"),
            filter.participant_id.map(Arg::Int),
        );
        query.and(
            &account("pc.participant_currency_id = ?"),
            filter.account_id.map(Arg::Int),
        );
        query.and("s.created_date >= ?", filter.from_date.map(Arg::Text));
        query.and("s.created_date <= ?", filter.to_date.map(Arg::Text));
        let ids = self.matching_ids(query, "s.settlement_id").await?;
        self.settlements_by_ids(ids).await
    }

    async fn settlements_by_ids(&self, ids: Vec<i64>) -> Result<Vec<SettlementRecord>> {
        self.run(move |pool| async move {
            let mut conn = pool.acquire().await?;
            let mut settlements = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(row) = sqlx::query(
                    "SELECT settlement_id, settlement_model_id, state, reason, created_date, changed_date FROM settlement WHERE settlement_id = ?",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                else {
                    continue;
                };
                let window_ids = sqlx::query(
                    "SELECT settlement_window_id FROM settlement_settlement_window WHERE settlement_id = ? ORDER BY settlement_window_id",
                )
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| col(r, "settlement_window_id"))
                .collect::<Result<Vec<i64>>>()?;
                let accounts = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS} WHERE spc.settlement_id = ? ORDER BY pc.participant_id, spc.participant_currency_id"
                )))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(account_record)
                .collect::<Result<Vec<_>>>()?;
                settlements.push(SettlementRecord {
                    id,
                    model_id: col(&row, "settlement_model_id")?,
                    state: col(&row, "state")?,
                    reason: col(&row, "reason")?,
                    created_date: col(&row, "created_date")?,
                    changed_date: col(&row, "changed_date")?,
                    window_ids,
                    accounts,
                });
            }
            Ok(settlements)
        })
        .await
    }

    /// Records account steps that move no money, in one transaction.
    pub async fn record_settlement_steps(&self, steps: Vec<SettlementAccountStep>) -> Result<()> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            write_account_steps(&mut tx, &steps, &now_text()).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Moves a settlement to `state`; when it is SETTLED its window content
    /// is too, and every window whose content is all settled.
    pub async fn set_settlement_state(
        &self,
        settlement_id: i64,
        state: String,
        reason: Option<String>,
    ) -> Result<()> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let now = now_text();
            set_settlement_state(&mut tx, settlement_id, &state, reason.as_deref(), &now).await?;
            if state == SETTLED || state == ABORTED {
                finish_windows(&mut tx, settlement_id, &state, reason.as_deref(), &now).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Aborts a settlement: it, its accounts, its window content and its
    /// windows become ABORTED (the windows may be settled again).
    pub async fn abort_settlement(&self, settlement_id: i64, reason: String) -> Result<()> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let now = now_text();
            let accounts = sqlx::query(
                "SELECT settlement_participant_currency_id FROM settlement_participant_currency WHERE settlement_id = ?",
            )
            .bind(settlement_id)
            .fetch_all(&mut *tx)
            .await?;
            let steps = accounts
                .iter()
                .map(|r| {
                    Ok(SettlementAccountStep {
                        settlement_account_id: col(r, "settlement_participant_currency_id")?,
                        state: ABORTED.into(),
                        reason: Some(reason.clone()),
                        external_reference: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            write_account_steps(&mut tx, &steps, &now).await?;
            set_settlement_state(&mut tx, settlement_id, ABORTED, Some(&reason), &now).await?;
            finish_windows(&mut tx, settlement_id, ABORTED, Some(&reason), &now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Sent and received totals per account over a settlement's content.
    pub async fn settlement_totals(
        &self,
        settlement_id: i64,
    ) -> Result<BTreeMap<i64, AccountTotals>> {
        self.totals_where("settlement_id", settlement_id).await
    }

    /// Sent and received totals per account in one window (all currencies).
    pub async fn window_totals(&self, window_id: i64) -> Result<BTreeMap<i64, AccountTotals>> {
        self.totals_where("settlement_window_id", window_id).await
    }

    /// Totals over the window content whose `column` is `id`.
    async fn totals_where(
        &self,
        column: &'static str,
        id: i64,
    ) -> Result<BTreeMap<i64, AccountTotals>> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let ids = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT settlement_window_content_id FROM settlement_window_content WHERE {column} = ?"
            )))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| col(r, "settlement_window_content_id"))
            .collect::<Result<Vec<i64>>>()?;
            let totals = totals_of_contents(&mut tx, &ids).await?;
            tx.rollback().await?;
            Ok(totals)
        })
        .await
    }
}

/// What one account owes another over a settlement's content: positive
/// when `account_a` (the lower id) owes `account_b`.
#[derive(Debug, Clone, PartialEq)]
pub struct BilateralNet {
    pub account_a: i64,
    pub account_b: i64,
    pub net_amount: Decimal,
}

impl Store {
    /// The net per pair of accounts over a settlement's content (the
    /// amounts a bilateral settlement moves), pairs with no transfer left out.
    pub async fn bilateral_nets(&self, settlement_id: i64) -> Result<Vec<BilateralNet>> {
        self.run(move |pool| async move {
            let rows = sqlx::query(
                "SELECT p.payer_currency_id, p.payee_currency_id, CAST(SUM(p.amount) AS SIGNED) AS total \
                 FROM settlement_content_pair p JOIN settlement_window_content c \
                 ON c.settlement_window_content_id = p.settlement_window_content_id \
                 WHERE c.settlement_id = ? GROUP BY p.payer_currency_id, p.payee_currency_id",
            )
            .bind(settlement_id)
            .fetch_all(&pool)
            .await?;
            let mut nets: BTreeMap<(i64, i64), i64> = BTreeMap::new();
            for row in &rows {
                let payer: i64 = col(row, "payer_currency_id")?;
                let payee: i64 = col(row, "payee_currency_id")?;
                let total: i64 = col(row, "total")?;
                let (key, owed) = if payer < payee {
                    ((payer, payee), total)
                } else {
                    ((payee, payer), -total)
                };
                *nets.entry(key).or_default() += owed;
            }
            Ok(nets
                .into_iter()
                .map(|((a, b), net)| BilateralNet {
                    account_a: a,
                    account_b: b,
                    net_amount: from_units(net),
                })
                .collect())
        })
        .await
    }
}

/// A SELECT of ids with optional AND conditions, each with its argument.
struct Conditions {
    sql: String,
    args: Vec<Arg>,
}

impl Conditions {
    fn new(select: &str) -> Self {
        Conditions {
            sql: select.to_string(),
            args: Vec::new(),
        }
    }

    /// Adds `AND condition` when the filter value is given.
    fn and(&mut self, condition: &str, arg: Option<Arg>) {
        if let Some(arg) = arg {
            self.sql.push_str(" AND ");
            self.sql.push_str(condition);
            self.args.push(arg);
        }
    }
}

enum Arg {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(int) => query.bind(int),
        };
    }
    query
}

fn content_record(row: &AnyRow) -> Result<WindowContentRecord> {
    Ok(WindowContentRecord {
        id: col(row, "settlement_window_content_id")?,
        window_id: col(row, "settlement_window_id")?,
        state: col(row, "state")?,
        ledger_account_type: col(row, "ledger_account_type")?,
        currency: col(row, "currency_id")?,
        settlement_id: col(row, "settlement_id")?,
        created_date: col(row, "created_date")?,
        changed_date: col(row, "changed_date")?,
    })
}

fn account_record(row: &AnyRow) -> Result<SettlementAccountRecord> {
    Ok(SettlementAccountRecord {
        id: col(row, "settlement_participant_currency_id")?,
        participant_id: col(row, "participant_id")?,
        participant_name: col(row, "name")?,
        account_id: col(row, "participant_currency_id")?,
        currency: col(row, "currency_id")?,
        net_amount: from_units(col(row, "net_amount")?),
        state: col(row, "state")?,
        reason: col(row, "reason")?,
        external_reference: col(row, "external_reference")?,
        created_date: col(row, "created_date")?,
        changed_date: col(row, "changed_date")?,
    })
}

async fn window_history(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO settlement_window_state_change (settlement_window_id, state, reason, created_date) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(state.to_string())
        .bind(reason.map(str::to_string))
        .bind(now.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn set_window_state(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    window_history(tx, id, state, reason, now).await?;
    sqlx::query(
        "UPDATE settlement_window SET state = ?, changed_date = ? WHERE settlement_window_id = ?",
    )
    .bind(state.to_string())
    .bind(now.to_string())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_content_state(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO settlement_window_content_state_change (settlement_window_content_id, state, reason, created_date) VALUES (?, ?, ?, ?)",
    )
    .bind(id)
    .bind(state.to_string())
    .bind(reason.map(str::to_string))
    .bind(now.to_string())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE settlement_window_content SET state = ?, changed_date = ? WHERE settlement_window_content_id = ?")
        .bind(state.to_string())
        .bind(now.to_string())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn settlement_history(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO settlement_state_change (settlement_id, state, reason, created_date) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(state.to_string())
        .bind(reason.map(str::to_string))
        .bind(now.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn set_settlement_state(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    settlement_history(tx, id, state, reason, now).await?;
    sqlx::query("UPDATE settlement SET state = ?, changed_date = ? WHERE settlement_id = ?")
        .bind(state.to_string())
        .bind(now.to_string())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn account_history(
    tx: &mut Transaction<'_, Any>,
    step: &SettlementAccountStep,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO settlement_participant_currency_state_change (settlement_participant_currency_id, state, reason, \
         external_reference, created_date) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(step.settlement_account_id)
    .bind(step.state.clone())
    .bind(step.reason.clone())
    .bind(step.external_reference.clone())
    .bind(now.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records account steps (history row and current state) inside the
/// caller's transaction; the ledger writer calls it so that a step that
/// moves money is durable together with the money.
pub(crate) async fn write_account_steps(
    tx: &mut Transaction<'_, Any>,
    steps: &[SettlementAccountStep],
    now: &str,
) -> Result<()> {
    for step in steps {
        account_history(tx, step, now).await?;
        let updated = sqlx::query(
            "UPDATE settlement_participant_currency SET state = ?, reason = ?, external_reference = COALESCE(?, external_reference), \
             changed_date = ? WHERE settlement_participant_currency_id = ?",
        )
        .bind(step.state.clone())
        .bind(step.reason.clone())
        .bind(step.external_reference.clone())
        .bind(now.to_string())
        .bind(step.settlement_account_id)
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StorageError::Invariant(format!(
                "settlement account {} does not exist",
                step.settlement_account_id
            )));
        }
    }
    Ok(())
}

/// The settlement's content, and every window whose content is all in
/// `state`, move to `state` (SETTLED or ABORTED).
async fn finish_windows(
    tx: &mut Transaction<'_, Any>,
    settlement_id: i64,
    state: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    let contents = sqlx::query(
        "SELECT settlement_window_content_id, settlement_window_id FROM settlement_window_content WHERE settlement_id = ?",
    )
    .bind(settlement_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut windows = Vec::new();
    for row in &contents {
        set_content_state(
            tx,
            col(row, "settlement_window_content_id")?,
            state,
            reason,
            now,
        )
        .await?;
        let window: i64 = col(row, "settlement_window_id")?;
        if !windows.contains(&window) {
            windows.push(window);
        }
    }
    for window in windows {
        let other = sqlx::query(
            "SELECT COUNT(*) AS n FROM settlement_window_content WHERE settlement_window_id = ? AND state <> ?",
        )
        .bind(window)
        .bind(state.to_string())
        .fetch_one(&mut **tx)
        .await?;
        if col::<i64>(&other, "n")? == 0 {
            set_window_state(tx, window, state, reason, now).await?;
        }
    }
    Ok(())
}

/// Aggregates a closing window's committed transfers per currency and
/// participant POSITION account (transfers settled gross are not in it).
async fn aggregate_window(tx: &mut Transaction<'_, Any>, window_id: i64, now: &str) -> Result<()> {
    let rows = sqlx::query(
        "SELECT t.payer_fsp, t.payee_fsp, t.currency_id, CAST(SUM(t.amount) AS SIGNED) AS total, COUNT(*) AS n \
         FROM transfer_fulfilment f JOIN transfer t ON t.transfer_seq = f.transfer_seq \
         LEFT JOIN gross_settlement g ON g.transfer_id = f.transfer_id \
         WHERE f.settlement_window_id = ? AND g.transfer_id IS NULL GROUP BY t.payer_fsp, t.payee_fsp, t.currency_id",
    )
    .bind(window_id)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let accounts = position_accounts(tx).await?;
    // currency -> account -> (sent, sent count, received, received count)
    let mut per_currency: BTreeMap<String, BTreeMap<i64, [i64; 4]>> = BTreeMap::new();
    // currency -> (payer account, payee account, sum, count)
    let mut pairs: BTreeMap<String, Vec<[i64; 4]>> = BTreeMap::new();
    for row in &rows {
        let currency: String = col(row, "currency_id")?;
        let total: i64 = col(row, "total")?;
        let count: i64 = col(row, "n")?;
        let account_of = |fsp: String| {
            accounts
                .get(&(fsp.clone(), currency.clone()))
                .copied()
                .ok_or_else(|| {
                    StorageError::Invariant(format!("{fsp} has no POSITION account in {currency}"))
                })
        };
        let payer = account_of(col(row, "payer_fsp")?)?;
        let payee = account_of(col(row, "payee_fsp")?)?;
        pairs
            .entry(currency.clone())
            .or_default()
            .push([payer, payee, total, count]);
        let book = per_currency.entry(currency.clone()).or_default();
        let sent = book.entry(payer).or_default();
        sent[0] += total;
        sent[1] += count;
        let received = book.entry(payee).or_default();
        received[2] += total;
        received[3] += count;
    }
    for (currency, book) in per_currency {
        let currency_pairs = pairs.remove(&currency).unwrap_or_default();
        let content_id = insert_returning_id(
            tx,
            sqlx::query(
                "INSERT INTO settlement_window_content (settlement_window_id, ledger_account_type, currency_id, state, created_date, changed_date) \
                 VALUES (?, 'POSITION', ?, ?, ?, ?)",
            )
            .bind(window_id)
            .bind(currency)
            .bind(WINDOW_CLOSED)
            .bind(now.to_string())
            .bind(now.to_string()),
        )
        .await?;
        set_content_state(tx, content_id, WINDOW_CLOSED, None, now).await?;
        for (account, [sent, sent_count, received, received_count]) in book {
            sqlx::query(
                "INSERT INTO settlement_content_aggregation (settlement_window_content_id, participant_currency_id, sent_amount, sent_count, \
                 received_amount, received_count) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(content_id)
            .bind(account)
            .bind(sent)
            .bind(sent_count)
            .bind(received)
            .bind(received_count)
            .execute(&mut **tx)
            .await?;
        }
        for [payer, payee, amount, count] in currency_pairs {
            sqlx::query(
                "INSERT INTO settlement_content_pair (settlement_window_content_id, payer_currency_id, payee_currency_id, amount, transfer_count) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(content_id)
            .bind(payer)
            .bind(payee)
            .bind(amount)
            .bind(count)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// (participant name, currency) -> POSITION account id.
async fn position_accounts(
    tx: &mut Transaction<'_, Any>,
) -> Result<BTreeMap<(String, String), i64>> {
    let rows = sqlx::query(
        "SELECT p.name, pc.currency_id, pc.participant_currency_id FROM participant_currency pc \
         JOIN participant p ON p.participant_id = pc.participant_id \
         JOIN ledger_account_type lat ON lat.ledger_account_type_id = pc.ledger_account_type_id \
         WHERE lat.name = 'POSITION'",
    )
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (col(r, "name")?, col(r, "currency_id")?),
                col(r, "participant_currency_id")?,
            ))
        })
        .collect()
}

async fn totals_of_contents(
    tx: &mut Transaction<'_, Any>,
    content_ids: &[i64],
) -> Result<BTreeMap<i64, AccountTotals>> {
    let mut totals: BTreeMap<i64, AccountTotals> = BTreeMap::new();
    for &content_id in content_ids {
        let rows = sqlx::query(
            "SELECT participant_currency_id, sent_amount, sent_count, received_amount, received_count \
             FROM settlement_content_aggregation WHERE settlement_window_content_id = ?",
        )
        .bind(content_id)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let entry = totals
                .entry(col(row, "participant_currency_id")?)
                .or_default();
            entry.sent_amount += from_units(col(row, "sent_amount")?);
            entry.sent_count += col::<i64>(row, "sent_count")?;
            entry.received_amount += from_units(col(row, "received_amount")?);
            entry.received_count += col::<i64>(row, "received_count")?;
        }
    }
    Ok(totals)
}
