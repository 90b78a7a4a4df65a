//! Settlement windows and settlements (the central-settlement API under /v2 on
//! the operator port) end to end: simulated DFSPs move money through a real
//! switch, the operator closes windows and takes the settlements through
//! every state, and the nets, positions, settlement balances, reports and
//! database rows are checked against what the test itself sent. On SQLite
//! and on MariaDB; every test ends with the ledger invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use switch_tests::dfsp::{Dfsp, Received};
use switch_tests::{assert_ledger_ok, exact_number, new_id, Backend, DfspAccounts, Switch, TestDb};

/// How long a transfer may take to commit, or a window to close.
const WAIT: Duration = Duration::from_secs(20);
/// The default (no currency) deferred net settlement model of every test.
const MODEL: &str = "DEFERREDNET";
/// The account states, in order.
const PENDING: &str = "PENDING_SETTLEMENT";
const RECORDED: &str = "PS_TRANSFERS_RECORDED";
const RESERVED: &str = "PS_TRANSFERS_RESERVED";
const COMMITTED: &str = "PS_TRANSFERS_COMMITTED";
const SETTLED: &str = "SETTLED";
const ACCOUNT_STATES: [&str; 5] = [PENDING, RECORDED, RESERVED, COMMITTED, SETTLED];
const CSV_HEADER: &str = "participant,participantId,accountId,currency,netSettlementAmount,sentAmount,sentCount,receivedAmount,receivedCount";

// -- exact amounts ---------------------------------------------------------

/// Units of 1/10000 per unit of currency (the switch's fixed scale).
const SCALE: i128 = 10_000;

/// An exact decimal ("-12.34", "7", "0.0100") in units of 1/10000.
fn units(text: &str) -> i128 {
    let parsed = (|| {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() || fraction.len() > 4 {
            return None;
        }
        if !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let whole: i128 = whole.parse().ok()?;
        let fraction: i128 = format!("{fraction:0<4}").parse().ok()?;
        let value = whole * SCALE + fraction;
        Some(if negative { -value } else { value })
    })();
    parsed.unwrap_or_else(|| panic!("not an exact amount with at most 4 decimals: {text:?}"))
}

/// An amount given as a JSON number or a JSON string.
fn units_of(value: &Value) -> i128 {
    match value {
        Value::Number(n) => units(&n.to_string()),
        Value::String(s) => units(s),
        other => panic!("not an amount: {other}"),
    }
}

/// A count or id given as a JSON number or a JSON string.
fn int_of(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// Units of 1/10000 as a plain decimal ("-12.34").
fn show(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.abs();
    let whole = abs / SCALE;
    let fraction = format!("{:04}", abs % SCALE);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

// -- the hub ---------------------------------------------------------------

/// A switch with hub accounts and the default DEFERREDNET model in each
/// currency, and DFSPs (running simulators) with accounts in every currency.
struct Hub {
    db: TestDb,
    switch: Switch,
    dfsps: BTreeMap<String, Dfsp>,
    /// (DFSP, currency) -> its POSITION and SETTLEMENT account ids.
    accounts: BTreeMap<(String, String), DfspAccounts>,
    /// DFSP -> participant id (from the database).
    pids: BTreeMap<String, i64>,
    /// Funds in of every DFSP in every currency.
    funds: i128,
}

impl Hub {
    async fn start(backend: Backend, names: &[&str], currencies: &[&str], funds: &str) -> Hub {
        let db = TestDb::new(backend);
        let switch = Switch::start(&db, &[]).await;
        for currency in currencies {
            for kind in ["HUB_MULTILATERAL_SETTLEMENT", "HUB_RECONCILIATION"] {
                let (status, body) = switch
                    .post(
                        "/participants/Hub/accounts",
                        json!({"type": kind, "currency": currency}),
                    )
                    .await;
                assert_eq!(status, 201, "hub account {kind} in {currency}: {body}");
            }
        }
        let (status, body) = switch
            .post(
                "/settlementModels",
                json!({
                    "name": MODEL,
                    "settlementGranularity": "NET",
                    "settlementInterchange": "MULTILATERAL",
                    "settlementDelay": "DEFERRED",
                    "requireLiquidityCheck": true,
                    "ledgerAccountType": "POSITION",
                    "settlementAccountType": "SETTLEMENT",
                    "autoPositionReset": true,
                }),
            )
            .await;
        assert_eq!(status, 201, "settlement model {MODEL}: {body}");

        let mut accounts = BTreeMap::new();
        let mut dfsps = BTreeMap::new();
        for name in names {
            for currency in currencies {
                // The first currency creates the participant, the others add a currency.
                let (status, body) = switch
                    .post("/participants", json!({"name": name, "currency": currency}))
                    .await;
                assert_eq!(status, 201, "{name} in {currency}: {body}");
                let (status, body) = switch
                    .post(
                        &format!("/participants/{name}/initialPositionAndLimits"),
                        json!({"currency": currency, "limit": {"type": "NET_DEBIT_CAP", "value": exact_number("1000000")}, "initialPosition": 0}),
                    )
                    .await;
                assert_eq!(
                    status, 201,
                    "initial position of {name} in {currency}: {body}"
                );
                let ids = switch.accounts(name, currency).await;
                let (status, body) = switch
                    .funds(
                        name,
                        ids.settlement,
                        "recordFundsIn",
                        &new_id(),
                        funds,
                        currency,
                    )
                    .await;
                assert_eq!(status, 202, "funds in for {name} in {currency}: {body}");
                accounts.insert((name.to_string(), currency.to_string()), ids);
            }
            let dfsp = Dfsp::start_for(name, &switch);
            dfsp.register(&switch).await;
            dfsps.insert(name.to_string(), dfsp);
        }
        let pids: BTreeMap<String, i64> = db
            .rows("SELECT CAST(participant_id AS CHAR), name FROM participant")
            .into_iter()
            .map(|row| (row[1].clone(), row[0].parse().expect("participant id")))
            .collect();
        for name in names {
            assert!(pids.contains_key(*name), "{name} in the database: {pids:?}");
        }
        let hub = Hub {
            db,
            switch,
            dfsps,
            accounts,
            pids,
            funds: units(funds),
        };
        // Funds in is applied before anything is sent.
        for ((name, _), ids) in &hub.accounts {
            hub.wait_balance(name, ids.settlement, -hub.funds).await;
        }
        hub
    }

    fn dfsp(&self, name: &str) -> &Dfsp {
        &self.dfsps[name]
    }

    fn ids(&self, name: &str, currency: &str) -> DfspAccounts {
        self.accounts[&(name.to_string(), currency.to_string())]
    }

    /// (value, reservedValue) of an account in units.
    async fn balance(&self, name: &str, account: i64) -> (i128, i128) {
        let (value, reserved) = self.switch.balance(name, account).await;
        (units(&value), units(&reserved))
    }

    async fn wait_balance(&self, name: &str, account: i64, value: i128) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (now, _) = self.balance(name, account).await;
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} account {account}: value {} instead of {}",
                show(now),
                show(value)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (DFSP, currency) of a POSITION account id.
    fn owner_of(&self, account: i64) -> Option<(String, String)> {
        self.accounts
            .iter()
            .find(|(_, ids)| ids.position == account)
            .map(|(key, _)| key.clone())
    }

    /// A transfer from `payer` to `payee`, waited for until the payer hears
    /// it is COMMITTED.
    async fn pay(&self, payer: &str, payee: &str, amount: &str, currency: &str) -> Tx {
        let dfsp = self.dfsp(payer);
        let prepare = dfsp.prepare(payee, amount, currency, Duration::from_secs(120));
        let id = prepare.transfer_id.clone();
        let (status, body) = dfsp.send_prepare(&prepare).await;
        assert_eq!(
            status, 202,
            "prepare {id} {payer}->{payee} {amount} {currency}: {body}"
        );
        let put = format!("/transfers/{id}");
        let error = format!("/transfers/{id}/error");
        let answer = dfsp
            .wait_for(
                |r: &Received| r.method == "PUT" && (r.path == put || r.path == error),
                WAIT,
            )
            .await
            .unwrap_or_else(|| panic!("{payer} heard nothing about transfer {id} within {WAIT:?}"));
        assert!(
            answer.path == put && answer.json["transferState"] == "COMMITTED",
            "transfer {id} {payer}->{payee} {amount} {currency} did not commit: {} {}",
            answer.path,
            answer.json
        );
        Tx {
            id,
            payer: payer.to_string(),
            payee: payee.to_string(),
            amount: units(amount),
            currency: currency.to_string(),
        }
    }

    /// Stops the switch gracefully and checks the ledger.
    async fn finish(self) {
        let Hub {
            db, switch, dfsps, ..
        } = self;
        assert!(switch.stop().success(), "graceful exit");
        drop(dfsps);
        assert_ledger_ok(&db.url);
    }
}

/// A committed transfer.
#[derive(Debug, Clone)]
struct Tx {
    id: String,
    payer: String,
    payee: String,
    amount: i128,
    currency: String,
}

/// What an account sent and received in a set of transfers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    sent: i128,
    sent_count: i64,
    received: i128,
    received_count: i64,
}

impl Totals {
    /// Positive for a net payer.
    fn net(&self) -> i128 {
        self.sent - self.received
    }
}

/// (DFSP, currency) -> totals, for every account with a transfer.
fn book<'a>(transfers: impl IntoIterator<Item = &'a Tx>) -> BTreeMap<(String, String), Totals> {
    let mut book: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for tx in transfers {
        let payer = book
            .entry((tx.payer.clone(), tx.currency.clone()))
            .or_default();
        payer.sent += tx.amount;
        payer.sent_count += 1;
        let payee = book
            .entry((tx.payee.clone(), tx.currency.clone()))
            .or_default();
        payee.received += tx.amount;
        payee.received_count += 1;
    }
    book
}

// -- the settlement API --------------------------------------------------

fn error_code(body: &Value) -> String {
    match &body["errorInformation"]["errorCode"] {
        Value::String(code) => code.clone(),
        Value::Null => "none".to_string(),
        other => format!("not a string: {other}"),
    }
}

/// A request the switch must refuse with HTTP 400 and this error code.
async fn refused(switch: &Switch, method: &str, path: &str, body: Option<Value>, code: &str) {
    let (status, answer) = switch.call(method, path, body.clone()).await;
    assert_eq!(
        (status, error_code(&answer)),
        (400, code.to_string()),
        "{method} {path} {} must be refused with {code}: {answer}",
        body.unwrap_or(Value::Null)
    );
    assert!(
        answer["errorInformation"]["errorDescription"].is_string(),
        "{method} {path}: {answer}"
    );
}

async fn window(switch: &Switch, id: i64) -> Value {
    let (status, body) = switch.get(&format!("/v2/settlementWindows/{id}")).await;
    assert_eq!(status, 200, "GET window {id}: {body}");
    assert_eq!(int_of(&body["id"]), id, "{body}");
    body
}

/// Closes the open window `id`: answers the new open window's id.
async fn close(switch: &Switch, id: i64) -> i64 {
    let (status, body) = switch
        .post(
            &format!("/v2/settlementWindows/{id}"),
            json!({"state": "CLOSED", "reason": format!("close window {id}")}),
        )
        .await;
    assert_eq!(status, 200, "close window {id}: {body}");
    assert_eq!(
        body["state"], "OPEN",
        "the answer is the new open window: {body}"
    );
    let next = int_of(&body["id"]);
    assert_eq!(next, id + 1, "the new window has the next id: {body}");
    next
}

/// The window once it is CLOSED (bounded wait, in case content is aggregated
/// after the answer).
async fn closed_window(switch: &Switch, id: i64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = window(switch, id).await;
        if body["state"] == "CLOSED" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "window {id} not CLOSED within {WAIT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The currencies of a window's content (one entry each, all POSITION).
fn content_currencies(window: &Value) -> BTreeSet<String> {
    let content = window["content"]
        .as_array()
        .unwrap_or_else(|| panic!("window without content array: {window}"));
    let currencies: Vec<String> = content
        .iter()
        .map(|c| {
            assert_eq!(c["ledgerAccountType"], "POSITION", "{window}");
            assert!(c["id"].is_number(), "content id: {window}");
            c["currencyId"]
                .as_str()
                .unwrap_or_else(|| panic!("content currencyId: {window}"))
                .to_string()
        })
        .collect();
    let set: BTreeSet<String> = currencies.iter().cloned().collect();
    assert_eq!(
        set.len(),
        currencies.len(),
        "one entry per currency: {window}"
    );
    set
}

async fn create_settlement(switch: &Switch, windows: &[i64]) -> Value {
    let body = json!({
        "settlementModel": MODEL,
        "reason": "test settlement",
        "settlementWindows": windows.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
    });
    let (status, answer) = switch.post("/v2/settlements", body).await;
    assert_eq!(status, 200, "create settlement over {windows:?}: {answer}");
    assert_eq!(answer["state"], PENDING, "{answer}");
    assert_eq!(answer["settlementModel"], MODEL, "{answer}");
    assert_eq!(answer["reason"], "test settlement", "{answer}");
    assert!(answer["id"].is_number(), "{answer}");
    let listed: BTreeSet<i64> = answer["settlementWindows"]
        .as_array()
        .unwrap_or_else(|| panic!("settlementWindows: {answer}"))
        .iter()
        .map(|w| {
            assert_eq!(w["state"], PENDING, "windows of a new settlement: {answer}");
            int_of(&w["id"])
        })
        .collect();
    assert_eq!(
        listed,
        windows.iter().copied().collect::<BTreeSet<_>>(),
        "{answer}"
    );
    answer
}

async fn settlement(switch: &Switch, id: i64) -> Value {
    let (status, body) = switch.get(&format!("/v2/settlements/{id}")).await;
    assert_eq!(status, 200, "GET settlement {id}: {body}");
    body
}

/// One account of a settlement as listed.
#[derive(Debug, Clone)]
struct Account {
    pid: i64,
    state: String,
    net: i128,
    currency: String,
    error: Value,
}

/// Account id -> account, over every participant of a settlement object.
fn accounts_of(settlement: &Value) -> BTreeMap<i64, Account> {
    let mut all = BTreeMap::new();
    let participants = settlement["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("participants: {settlement}"));
    for participant in participants {
        let pid = int_of(&participant["id"]);
        for account in participant["accounts"]
            .as_array()
            .unwrap_or_else(|| panic!("accounts: {settlement}"))
        {
            let amount = &account["netSettlementAmount"]["amount"];
            assert!(
                amount.is_number(),
                "netSettlementAmount.amount is a JSON number: {account}"
            );
            let id = int_of(&account["id"]);
            let previous = all.insert(
                id,
                Account {
                    pid,
                    state: account["state"].as_str().unwrap_or("?").to_string(),
                    net: units_of(amount),
                    currency: account["netSettlementAmount"]["currency"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                    error: account["errorInformation"].clone(),
                },
            );
            assert!(
                previous.is_none(),
                "account {id} listed twice: {settlement}"
            );
        }
    }
    all
}

/// The settlement lists exactly the accounts with transfers, each with its
/// participant id, currency and net; nets sum to zero per currency.
/// Answers account id -> participant id.
fn check_nets(
    hub: &Hub,
    settlement: &Value,
    expected: &BTreeMap<(String, String), Totals>,
) -> BTreeMap<i64, i64> {
    let listed = accounts_of(settlement);
    let mut wanted = BTreeMap::new();
    for ((name, currency), totals) in expected {
        wanted.insert(
            hub.ids(name, currency).position,
            (name, currency, totals.net()),
        );
    }
    assert_eq!(
        listed.keys().collect::<BTreeSet<_>>(),
        wanted.keys().collect::<BTreeSet<_>>(),
        "the settlement lists the POSITION accounts with transfers in its windows, \
         expected {wanted:?}: {settlement}"
    );
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for (id, account) in &listed {
        let (name, currency, net) = wanted[id];
        assert_eq!(
            (account.pid, account.currency.as_str(), show(account.net)),
            (hub.pids[name.as_str()], currency.as_str(), show(net)),
            "account {id} of {name} in {currency}: {settlement}"
        );
        *sums.entry(account.currency.clone()).or_default() += account.net;
    }
    for (currency, sum) in sums {
        assert_eq!(sum, 0, "nets in {currency} sum to zero: {settlement}");
    }
    listed.iter().map(|(id, a)| (*id, a.pid)).collect()
}

/// The settlement state its account states imply.
fn implied_state(states: &BTreeMap<i64, String>) -> &'static str {
    let settled = states.values().filter(|s| *s == SETTLED).count();
    if settled == states.len() {
        return SETTLED;
    }
    if settled > 0 {
        return "SETTLING";
    }
    let lowest = states
        .values()
        .map(|s| {
            ACCOUNT_STATES
                .iter()
                .position(|x| x == s)
                .unwrap_or_else(|| panic!("unknown account state {s}"))
        })
        .min()
        .expect("accounts");
    ACCOUNT_STATES[lowest]
}

fn account_change(id: i64, state: &str) -> Value {
    json!({"id": id, "state": state, "reason": format!("to {state}"), "externalReference": format!("ref-{id}-{state}")})
}

/// `{"participants": [...]}` moving each (participant, account) to its state.
fn participants_change(changes: &[(i64, i64, &str)]) -> Value {
    let mut by_participant: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (pid, aid, state) in changes {
        by_participant
            .entry(*pid)
            .or_default()
            .push(account_change(*aid, state));
    }
    json!({"participants": by_participant
        .into_iter()
        .map(|(pid, accounts)| json!({"id": pid, "accounts": accounts}))
        .collect::<Vec<_>>()})
}

/// A settlement answer carries exactly the expected account states, no
/// account error, and the implied settlement state; GET agrees.
async fn check_states(
    switch: &Switch,
    sid: i64,
    answer: &Value,
    states: &BTreeMap<i64, String>,
    what: &str,
) {
    assert_eq!(int_of(&answer["id"]), sid, "{what}: {answer}");
    let listed = accounts_of(answer);
    for (id, account) in &listed {
        assert!(
            account.error.is_null(),
            "{what}: account {id} carries an error: {answer}"
        );
        if let Some(state) = states.get(id) {
            assert_eq!(&account.state, state, "{what}: account {id}: {answer}");
        }
    }
    let state = implied_state(states);
    assert_eq!(answer["state"], state, "{what}: {answer}");
    let got = settlement(switch, sid).await;
    assert_eq!(got["state"], state, "{what}, then GET: {got}");
    let all = accounts_of(&got);
    let got_states: BTreeMap<i64, String> =
        all.iter().map(|(id, a)| (*id, a.state.clone())).collect();
    assert_eq!(&got_states, states, "{what}, then GET: {got}");
}

/// Moves every account one step with one PUT /v2/settlements/{id}.
async fn step_all(
    switch: &Switch,
    sid: i64,
    pids: &BTreeMap<i64, i64>,
    states: &mut BTreeMap<i64, String>,
    to: &str,
) -> Value {
    let changes: Vec<(i64, i64, &str)> = pids.iter().map(|(aid, pid)| (*pid, *aid, to)).collect();
    let (status, answer) = switch
        .put(
            &format!("/v2/settlements/{sid}"),
            participants_change(&changes),
        )
        .await;
    assert_eq!(status, 200, "all accounts to {to}: {answer}");
    for state in states.values_mut() {
        *state = to.to_string();
    }
    check_states(
        switch,
        sid,
        &answer,
        states,
        &format!("all accounts to {to}"),
    )
    .await;
    answer
}

async fn report(switch: &Switch, sid: i64) -> Value {
    let (status, body) = switch.get(&format!("/v2/settlements/{sid}/report")).await;
    assert_eq!(status, 200, "report of {sid}: {body}");
    body
}

/// The report's per-pair nets equal those computed from the transfers:
/// per currency and pair of POSITION accounts (lower id first), what the
/// first sent the second minus what it received from it.
async fn check_bilateral(hub: &Hub, sid: i64, transfers: &[Tx]) {
    let mut expected: BTreeMap<(String, i64, i64), i128> = BTreeMap::new();
    for tx in transfers {
        let payer = hub.ids(&tx.payer, &tx.currency).position;
        let payee = hub.ids(&tx.payee, &tx.currency).position;
        let (key, owed) = if payer < payee {
            ((tx.currency.clone(), payer, payee), tx.amount)
        } else {
            ((tx.currency.clone(), payee, payer), -tx.amount)
        };
        *expected.entry(key).or_default() += owed;
    }
    let body = report(&hub.switch, sid).await;
    let got: BTreeMap<(String, i64, i64), i128> = body["bilateralNets"]
        .as_array()
        .unwrap_or_else(|| panic!("bilateralNets in {body}"))
        .iter()
        .map(|row| {
            (
                (
                    row["currency"].as_str().unwrap_or_default().to_string(),
                    int_of(&row["accountA"]),
                    int_of(&row["accountB"]),
                ),
                units_of(&row["netAmount"]),
            )
        })
        .collect();
    assert_eq!(got, expected, "bilateral nets of settlement {sid}");
}

/// The JSON report and the CSV report agree with the expected totals.
async fn check_report(
    hub: &Hub,
    sid: i64,
    state: &str,
    expected: &BTreeMap<(String, String), Totals>,
) {
    let json_report = report(&hub.switch, sid).await;
    assert_eq!(int_of(&json_report["settlementId"]), sid, "{json_report}");
    assert_eq!(json_report["state"], state, "{json_report}");
    let rows = json_report["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("report rows: {json_report}"));
    assert_eq!(
        rows.len(),
        expected.len(),
        "one row per account: {json_report}"
    );
    let mut seen = BTreeSet::new();
    for row in rows {
        for field in ["netSettlementAmount", "sentAmount", "receivedAmount"] {
            assert!(row[field].is_string(), "{field} is a string: {row}");
        }
        let account = int_of(&row["accountId"]);
        let (name, currency) = hub
            .owner_of(account)
            .unwrap_or_else(|| panic!("report row for an unknown account: {row}"));
        let totals = expected
            .get(&(name.clone(), currency.clone()))
            .unwrap_or_else(|| panic!("report row for an account without transfers: {row}"));
        assert!(
            seen.insert(account),
            "account twice in the report: {json_report}"
        );
        assert_eq!(row["participant"], name.as_str(), "{row}");
        assert_eq!(int_of(&row["participantId"]), hub.pids[&name], "{row}");
        assert_eq!(row["currency"], currency.as_str(), "{row}");
        assert_eq!(
            (
                show(units_of(&row["netSettlementAmount"])),
                show(units_of(&row["sentAmount"])),
                int_of(&row["sentCount"]),
                show(units_of(&row["receivedAmount"])),
                int_of(&row["receivedCount"]),
            ),
            (
                show(totals.net()),
                show(totals.sent),
                totals.sent_count,
                show(totals.received),
                totals.received_count,
            ),
            "report row of {name} in {currency}: {row}"
        );
    }

    let response = hub
        .switch
        .client
        .get(
            hub.switch
                .operator(&format!("/v2/settlements/{sid}/report?format=csv")),
        )
        .send()
        .await
        .expect("csv report");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/csv"),
        "content type {content_type:?}"
    );
    let text = response.text().await.expect("csv text");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.first().map(|l| l.trim_end()),
        Some(CSV_HEADER),
        "{text}"
    );
    assert_eq!(lines.len(), rows.len() + 1, "a line per row: {text}");
    let mut csv_rows = BTreeMap::new();
    for line in &lines[1..] {
        let fields: Vec<&str> = line.trim_end().split(',').collect();
        assert_eq!(fields.len(), 9, "nine fields: {line:?}");
        csv_rows.insert(fields[2].parse::<i64>().expect("accountId"), fields);
    }
    for row in rows {
        let fields = &csv_rows
            .get(&int_of(&row["accountId"]))
            .unwrap_or_else(|| panic!("CSV lacks the row {row}: {text}"));
        assert_eq!(
            fields[0],
            row["participant"].as_str().unwrap_or("?"),
            "{text}"
        );
        assert_eq!(
            fields[1].parse::<i64>().ok(),
            Some(int_of(&row["participantId"])),
            "{text}"
        );
        assert_eq!(fields[3], row["currency"].as_str().unwrap_or("?"), "{text}");
        for (i, field) in [
            (4, "netSettlementAmount"),
            (5, "sentAmount"),
            (7, "receivedAmount"),
        ] {
            assert_eq!(units(fields[i]), units_of(&row[field]), "{field}: {text}");
        }
        assert_eq!(
            fields[6].parse::<i64>().ok(),
            Some(int_of(&row["sentCount"])),
            "{text}"
        );
        assert_eq!(
            fields[8].parse::<i64>().ok(),
            Some(int_of(&row["receivedCount"])),
            "{text}"
        );
    }
}

/// The ids of the settlements a filtered list answers.
async fn listed_settlements(switch: &Switch, query: &str) -> BTreeSet<i64> {
    let (status, body) = switch.get(&format!("/v2/settlements?{query}")).await;
    assert_eq!(status, 200, "GET /v2/settlements?{query}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .map(|s| int_of(&s["id"]))
        .collect()
}

/// The ids of the windows a filtered list answers.
async fn listed_windows(switch: &Switch, query: &str) -> BTreeSet<i64> {
    let (status, body) = switch.get(&format!("/v2/settlementWindows?{query}")).await;
    assert_eq!(status, 200, "GET /v2/settlementWindows?{query}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .map(|w| int_of(&w["id"]))
        .collect()
}

// -- 1. the full lifecycle ---------------------------------------------------

/// Four DFSPs in USD and EUR, transfers both ways, window 1 closed and
/// settled account by account through every state to SETTLED.
async fn full_lifecycle(backend: Backend) {
    let names = ["dfspa", "dfspb", "dfspc", "dfspd"];
    let hub = Hub::start(backend, &names, &["USD", "EUR"], "5000").await;
    let s = &hub.switch;

    let first = window(s, 1).await;
    assert_eq!(
        first["state"], "OPEN",
        "window 1 of a fresh database: {first}"
    );
    assert_eq!(listed_windows(s, "state=OPEN").await, BTreeSet::from([1]));

    let plan: [(&str, &str, &str, &str); 12] = [
        ("dfspa", "dfspb", "12.34", "USD"),
        ("dfspb", "dfspc", "7.5", "USD"),
        ("dfspc", "dfspa", "100.01", "USD"),
        ("dfspa", "dfspd", "0.99", "USD"),
        ("dfspd", "dfspb", "45.6", "USD"),
        ("dfspa", "dfspb", "3.21", "USD"),
        // dfspb nets exactly zero in EUR.
        ("dfspb", "dfspc", "9.99", "EUR"),
        ("dfspc", "dfspb", "9.99", "EUR"),
        ("dfspc", "dfspd", "5.55", "EUR"),
        ("dfspd", "dfspa", "1.1", "EUR"),
        ("dfspa", "dfspc", "33.33", "EUR"),
        ("dfspd", "dfspc", "250", "EUR"),
    ];
    let mut sent = Vec::new();
    for (payer, payee, amount, currency) in plan {
        sent.push(hub.pay(payer, payee, amount, currency).await);
    }
    let expected = book(&sent);
    assert_eq!(expected[&("dfspb".to_string(), "EUR".to_string())].net(), 0);
    // Positions before settlement are the nets (they all started at 0).
    for ((name, currency), totals) in &expected {
        let (value, reserved) = hub.balance(name, hub.ids(name, currency).position).await;
        assert_eq!(
            (show(value), reserved),
            (show(totals.net()), 0),
            "{name} position in {currency} before settlement"
        );
    }

    // Close window 1: window 2 opens, window 1 holds both currencies.
    let next = close(s, 1).await;
    assert_eq!(window(s, next).await["state"], "OPEN");
    let closed = closed_window(s, 1).await;
    assert_eq!(
        content_currencies(&closed),
        BTreeSet::from(["EUR".to_string(), "USD".to_string()]),
        "{closed}"
    );
    assert_eq!(
        listed_windows(s, "state=OPEN").await,
        BTreeSet::from([next])
    );
    assert_eq!(listed_windows(s, "state=CLOSED").await, BTreeSet::from([1]));
    assert!(listed_windows(s, "currency=EUR").await.contains(&1));
    let dfspd = hub.pids["dfspd"];
    assert!(listed_windows(s, &format!("participantId={dfspd}"))
        .await
        .contains(&1));

    // The settlement: every account with its own net.
    let created = create_settlement(s, &[1]).await;
    let sid = int_of(&created["id"]);
    let pids = check_nets(&hub, &created, &expected);
    assert_eq!(window(s, 1).await["state"], PENDING);
    assert_eq!(settlement(s, sid).await["state"], PENDING);
    let mut states: BTreeMap<i64, String> =
        pids.keys().map(|id| (*id, PENDING.to_string())).collect();
    check_states(s, sid, &created, &states, "created").await;
    for query in [
        format!("state={PENDING}"),
        "settlementWindowId=1".to_string(),
        "currency=EUR".to_string(),
        format!("participantId={dfspd}"),
    ] {
        assert!(
            listed_settlements(s, &query).await.contains(&sid),
            "settlement {sid} in ?{query}"
        );
    }
    assert!(listed_settlements(s, "settlementWindowId=2")
        .await
        .is_empty());

    // One participant alone.
    let (pa_account, pa) = pids.iter().next().map(|(a, p)| (*a, *p)).expect("accounts");
    let (status, alone) = s
        .get(&format!("/v2/settlements/{sid}/participants/{pa}"))
        .await;
    assert_eq!(status, 200, "{alone}");
    let alone_participants = alone["participants"].as_array().expect("participants");
    assert_eq!(alone_participants.len(), 1, "{alone}");
    assert_eq!(int_of(&alone_participants[0]["id"]), pa, "{alone}");
    let (status, one) = s
        .get(&format!(
            "/v2/settlements/{sid}/participants/{pa}/accounts/{pa_account}"
        ))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(accounts_of(&one)[&pa_account].state, PENDING, "{one}");

    // RECORDED: every account in one request.
    step_all(s, sid, &pids, &mut states, RECORDED).await;

    // RESERVED: one participant at a time.
    let participants: BTreeSet<i64> = pids.values().copied().collect();
    for pid in &participants {
        let accounts: Vec<Value> = pids
            .iter()
            .filter(|(_, p)| *p == pid)
            .map(|(aid, _)| account_change(*aid, RESERVED))
            .collect();
        let (status, answer) = s
            .put(
                &format!("/v2/settlements/{sid}/participants/{pid}"),
                json!({"accounts": accounts}),
            )
            .await;
        assert_eq!(status, 200, "participant {pid} to {RESERVED}: {answer}");
        for (aid, p) in &pids {
            if p == pid {
                states.insert(*aid, RESERVED.to_string());
            }
        }
        check_states(
            s,
            sid,
            &answer,
            &states,
            &format!("participant {pid} reserved"),
        )
        .await;
    }

    // COMMITTED: one account at a time; positions reset at this step.
    for (aid, pid) in &pids {
        let (status, answer) = s
            .put(
                &format!("/v2/settlements/{sid}/participants/{pid}/accounts/{aid}"),
                json!({"state": COMMITTED, "reason": "committed", "externalReference": format!("bank-{aid}")}),
            )
            .await;
        assert_eq!(status, 200, "account {aid} to {COMMITTED}: {answer}");
        states.insert(*aid, COMMITTED.to_string());
        check_states(
            s,
            sid,
            &answer,
            &states,
            &format!("account {aid} committed"),
        )
        .await;
    }
    let check_balances = |when: &'static str| {
        let hub = &hub;
        let expected = &expected;
        async move {
            for ((name, currency), totals) in expected {
                let ids = hub.ids(name, currency);
                let (position, position_reserved) = hub.balance(name, ids.position).await;
                assert_eq!(
                    (show(position), show(position_reserved)),
                    ("0".to_string(), "0".to_string()),
                    "{when}: {name}'s position in {currency} is back to 0 (net was {})",
                    show(totals.net())
                );
                let (settlement_value, _) = hub.balance(name, ids.settlement).await;
                assert_eq!(
                    show(settlement_value),
                    show(-hub.funds + totals.net()),
                    "{when}: {name}'s settlement account in {currency} moved by its net {}",
                    show(totals.net())
                );
            }
        }
    };
    check_balances("after PS_TRANSFERS_COMMITTED").await;
    assert_ne!(window(s, 1).await["state"], SETTLED);

    // SETTLED: half the accounts, then the rest.
    let ids: Vec<i64> = pids.keys().copied().collect();
    let (first_half, second_half) = ids.split_at(ids.len() / 2);
    for (half, what) in [(first_half, "first half"), (second_half, "second half")] {
        let changes: Vec<(i64, i64, &str)> =
            half.iter().map(|aid| (pids[aid], *aid, SETTLED)).collect();
        let (status, answer) = s
            .put(
                &format!("/v2/settlements/{sid}"),
                participants_change(&changes),
            )
            .await;
        assert_eq!(status, 200, "{what} settled: {answer}");
        for aid in half {
            states.insert(*aid, SETTLED.to_string());
        }
        check_states(s, sid, &answer, &states, &format!("{what} settled")).await;
        if what == "first half" {
            assert_eq!(answer["state"], "SETTLING", "{answer}");
            assert_eq!(
                window(s, 1).await["state"],
                PENDING,
                "window while SETTLING"
            );
        }
    }
    let done = settlement(s, sid).await;
    assert_eq!(done["state"], SETTLED, "{done}");
    assert_eq!(window(s, 1).await["state"], SETTLED);
    assert_eq!(done["settlementWindows"][0]["state"], SETTLED, "{done}");
    assert!(listed_settlements(s, "state=SETTLED").await.contains(&sid));
    check_balances("after SETTLED").await;
    // The hub's multilateral settlement account, the counterpart of every
    // settlement transfer, ends where it started: the nets sum to zero.
    let (_, hub_accounts) = s.get("/participants/Hub/accounts").await;
    for currency in ["USD", "EUR"] {
        let account = hub_accounts
            .as_array()
            .and_then(|a| {
                a.iter().find(|x| {
                    x["ledgerAccountType"] == "HUB_MULTILATERAL_SETTLEMENT"
                        && x["currency"] == currency
                })
            })
            .unwrap_or_else(|| panic!("hub settlement account in {currency}: {hub_accounts}"));
        assert_eq!(
            (
                units_of(&account["value"]),
                units_of(&account["reservedValue"])
            ),
            (0, 0),
            "hub multilateral settlement account in {currency}: {account}"
        );
    }
    check_report(&hub, sid, SETTLED, &expected).await;
    check_bilateral(&hub, sid, &sent).await;
    // A settled window cannot be settled again.
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(
            json!({"settlementModel": MODEL, "reason": "again", "settlementWindows": [{"id": 1}]}),
        ),
        "3100",
    )
    .await;

    hub.finish().await;
}

#[tokio::test]
async fn full_lifecycle_sqlite() {
    full_lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn full_lifecycle_mariadb() {
    full_lifecycle(Backend::MySql).await;
}

// -- 2. illegal transitions and abort -------------------------------------

/// A settlement request over these windows.
fn settle_body(model: &str, windows: &[i64]) -> Value {
    json!({"settlementModel": model, "reason": "r",
           "settlementWindows": windows.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()})
}

/// The account in an answer, which must carry this error code and keep this state.
fn refused_account(answer: &Value, aid: i64, code: &str, state: &str, what: &str) {
    let account = accounts_of(answer)
        .remove(&aid)
        .unwrap_or_else(|| panic!("{what}: account {aid} not in the answer: {answer}"));
    let got = match &account.error["errorCode"] {
        Value::String(code) => code.clone(),
        other => format!("{other}"),
    };
    assert_eq!(
        (got, account.state.as_str()),
        (code.to_string(), state),
        "{what}: account {aid} is refused with {code} and stays {state}: {answer}"
    );
    assert!(
        account.error["errorDescription"].is_string(),
        "{what}: {answer}"
    );
}

async fn transitions(backend: Backend) {
    let hub = Hub::start(backend, &["alpha", "beta", "gamma"], &["USD"], "1000").await;
    let s = &hub.switch;
    let acct = |name: &str| hub.ids(name, "USD").position;
    let pid = |name: &str| hub.pids[name];

    // Before anything happened.
    assert_eq!(window(s, 1).await["state"], "OPEN");
    refused(s, "GET", "/v2/settlementWindows/999", None, "3100").await;
    refused(s, "GET", "/v2/settlementWindows", None, "3100").await;
    refused(s, "GET", "/v2/settlements", None, "3100").await;
    // Bad bodies: each refused with its code, and the window stays OPEN.
    let (status, body) = s
        .call_raw("POST", "/v2/settlementWindows/1", b"{\"state\": ")
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "3101".to_string()),
        "{body}"
    );
    let close_path = "/v2/settlementWindows/1";
    refused(
        s,
        "POST",
        close_path,
        Some(json!({"state": "CLOSED"})),
        "3102",
    )
    .await;
    refused(
        s,
        "POST",
        close_path,
        Some(json!({"state": "OPEN", "reason": "r"})),
        "3100",
    )
    .await;
    refused(
        s,
        "POST",
        close_path,
        Some(json!({"state": 7, "reason": "r"})),
        "3100",
    )
    .await;
    refused(
        s,
        "POST",
        "/v2/settlementWindows/abc",
        Some(json!({"state": "CLOSED", "reason": "r"})),
        "3100",
    )
    .await;
    assert_eq!(window(s, 1).await["state"], "OPEN");
    assert!(listed_windows(s, "state=CLOSED").await.is_empty());
    assert!(listed_settlements(s, &format!("state={PENDING}"))
        .await
        .is_empty());
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(settle_body(MODEL, &[1])),
        "3100",
    )
    .await;
    refused(
        s,
        "POST",
        "/v2/settlementWindows/2",
        Some(json!({"state": "CLOSED", "reason": "not open"})),
        "3100",
    )
    .await;

    let w1 = vec![
        hub.pay("alpha", "beta", "90.25", "USD").await,
        hub.pay("beta", "gamma", "10.5", "USD").await,
        hub.pay("gamma", "alpha", "1", "USD").await,
    ];
    let expected_w1 = book(&w1);
    // The open window cannot be settled, even with transfers.
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(settle_body(MODEL, &[1])),
        "3100",
    )
    .await;
    let w2_id = close(s, 1).await;
    closed_window(s, 1).await;
    // A window that is no longer open cannot be closed.
    refused(
        s,
        "POST",
        "/v2/settlementWindows/1",
        Some(json!({"state": "CLOSED", "reason": "twice"})),
        "3100",
    )
    .await;
    refused(
        s,
        "POST",
        "/v2/settlementWindows/99",
        Some(json!({"state": "CLOSED", "reason": "unknown"})),
        "3100",
    )
    .await;

    // Models that cannot settle windows.
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(settle_body("NOSUCHMODEL", &[1])),
        "3100",
    )
    .await;
    for (name, delay, granularity, currency) in [
        ("IMMEDIATEGROSS", "IMMEDIATE", "GROSS", Value::Null),
        ("DEFERREDGROSS", "DEFERRED", "GROSS", json!("EUR")),
    ] {
        let mut model = json!({
            "name": name,
            "settlementGranularity": granularity,
            "settlementInterchange": "BILATERAL",
            "settlementDelay": delay,
            "requireLiquidityCheck": false,
            "ledgerAccountType": "INTERCHANGE_FEE",
            "settlementAccountType": "INTERCHANGE_FEE_SETTLEMENT",
            "autoPositionReset": false,
        });
        if !currency.is_null() {
            model["currency"] = currency;
        }
        let (status, body) = s.post("/settlementModels", model).await;
        assert_eq!(status, 201, "model {name}: {body}");
        refused(
            s,
            "POST",
            "/v2/settlements",
            Some(settle_body(name, &[1])),
            "3100",
        )
        .await;
    }
    assert_eq!(
        window(s, 1).await["state"],
        "CLOSED",
        "refusals change nothing"
    );

    // A first settlement; the window cannot go into a second one.
    let first = create_settlement(s, &[1]).await;
    let s1 = int_of(&first["id"]);
    check_nets(&hub, &first, &expected_w1);
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(settle_body(MODEL, &[1])),
        "3100",
    )
    .await;

    // A skipped step is refused for that account only.
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s1}"),
            participants_change(&[
                (pid("alpha"), acct("alpha"), RESERVED),
                (pid("beta"), acct("beta"), RECORDED),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    refused_account(&answer, acct("alpha"), "3100", PENDING, "skip to RESERVED");
    let beta = accounts_of(&answer)[&acct("beta")].clone();
    assert_eq!(
        (beta.state.as_str(), &beta.error),
        (RECORDED, &Value::Null),
        "{answer}"
    );
    assert_eq!(answer["state"], PENDING, "{answer}");
    let got = accounts_of(&settlement(s, s1).await);
    assert_eq!(got[&acct("alpha")].state, PENDING);
    assert_eq!(got[&acct("beta")].state, RECORDED);
    // A step back too.
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s1}"),
            participants_change(&[(pid("beta"), acct("beta"), PENDING)]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    refused_account(&answer, acct("beta"), "3100", RECORDED, "step back");
    assert_eq!(
        accounts_of(&settlement(s, s1).await)[&acct("beta")].state,
        RECORDED
    );

    // The rest to RECORDED, then abort.
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s1}"),
            participants_change(&[
                (pid("alpha"), acct("alpha"), RECORDED),
                (pid("gamma"), acct("gamma"), RECORDED),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], RECORDED, "{answer}");
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s1}"),
            json!({"state": "ABORTED", "reason": "bank holiday"}),
        )
        .await;
    assert_eq!(status, 200, "abort after RECORDED: {answer}");
    assert_eq!(answer["state"], "ABORTED", "{answer}");
    assert_eq!(settlement(s, s1).await["state"], "ABORTED");
    assert_eq!(window(s, 1).await["state"], "ABORTED");
    assert!(listed_settlements(s, "state=ABORTED").await.contains(&s1));
    // Positions are untouched by an aborted settlement.
    for ((name, _), totals) in &expected_w1 {
        let (value, reserved) = hub.balance(name, acct(name)).await;
        assert_eq!(
            (show(value), reserved),
            (show(totals.net()), 0),
            "{name} after abort"
        );
    }

    // The aborted window goes into a new settlement.
    let second = create_settlement(s, &[1]).await;
    let s2 = int_of(&second["id"]);
    assert_ne!(s1, s2);
    let pids = check_nets(&hub, &second, &expected_w1);
    let mut states: BTreeMap<i64, String> =
        pids.keys().map(|id| (*id, PENDING.to_string())).collect();
    for to in [RECORDED, RESERVED, COMMITTED] {
        step_all(s, s2, &pids, &mut states, to).await;
    }
    refused(
        s,
        "PUT",
        &format!("/v2/settlements/{s2}"),
        Some(json!({"state": "ABORTED", "reason": "too late"})),
        "3100",
    )
    .await;
    assert_eq!(settlement(s, s2).await["state"], COMMITTED);
    step_all(s, s2, &pids, &mut states, SETTLED).await;
    assert_eq!(window(s, 1).await["state"], SETTLED);
    refused(
        s,
        "POST",
        "/v2/settlements",
        Some(settle_body(MODEL, &[1])),
        "3100",
    )
    .await;

    // The liquidity check at RESERVED: alpha owes 50 from window 2, then
    // receives 50 back in window 3 and reserves all its cover for funds out.
    let w2 = vec![hub.pay("alpha", "beta", "50", "USD").await];
    let w3_id = close(s, w2_id).await;
    closed_window(s, w2_id).await;
    hub.pay("beta", "alpha", "50", "USD").await;
    let alpha = hub.ids("alpha", "USD");
    let (value, reserved) = hub.balance("alpha", alpha.settlement).await;
    let cover = -(value + reserved);
    assert!(cover > 0, "alpha has cover: {}", show(cover));
    let out = new_id();
    let (status, body) = s
        .funds(
            "alpha",
            alpha.settlement,
            "recordFundsOutPrepareReserve",
            &out,
            &show(cover),
            "USD",
        )
        .await;
    assert_eq!(
        status,
        202,
        "funds out of alpha's whole cover {}: {body}",
        show(cover)
    );
    let third = create_settlement(s, &[w2_id]).await;
    let s3 = int_of(&third["id"]);
    let pids3 = check_nets(&hub, &third, &book(&w2));
    let mut states3: BTreeMap<i64, String> =
        pids3.keys().map(|id| (*id, PENDING.to_string())).collect();
    step_all(s, s3, &pids3, &mut states3, RECORDED).await;
    let changes: Vec<(i64, i64, &str)> = pids3
        .iter()
        .map(|(aid, pid)| (*pid, *aid, RESERVED))
        .collect();
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s3}"),
            participants_change(&changes),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    refused_account(
        &answer,
        acct("alpha"),
        "4001",
        RECORDED,
        "alpha has no cover",
    );
    let beta = accounts_of(&answer)[&acct("beta")].clone();
    assert_eq!(
        (beta.state.as_str(), &beta.error),
        (RESERVED, &Value::Null),
        "{answer}"
    );
    assert_eq!(answer["state"], RECORDED, "{answer}");
    let (status, answer) = s
        .put(
            &format!("/v2/settlements/{s3}"),
            json!({"state": "ABORTED", "reason": "no cover"}),
        )
        .await;
    assert_eq!(status, 200, "abort after a partial RESERVED: {answer}");
    assert_eq!(answer["state"], "ABORTED", "{answer}");
    assert_eq!(window(s, w2_id).await["state"], "ABORTED");
    assert_eq!(window(s, w3_id).await["state"], "OPEN");
    let (status, body) = s
        .put(
            &format!(
                "/participants/alpha/accounts/{}/transfers/{out}",
                alpha.settlement
            ),
            json!({"action": "recordFundsOutAbort", "reason": "kept"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    hub.finish().await;
}

#[tokio::test]
async fn transitions_and_abort_sqlite() {
    transitions(Backend::Sqlite).await;
}

#[tokio::test]
async fn transitions_and_abort_mariadb() {
    transitions(Backend::MySql).await;
}

// -- 3. one settlement over two windows -----------------------------------

async fn two_windows(backend: Backend) {
    let hub = Hub::start(backend, &["west", "east", "north"], &["USD", "EUR"], "2000").await;
    let s = &hub.switch;
    let first = vec![
        hub.pay("west", "east", "10.01", "USD").await,
        hub.pay("east", "north", "3.5", "USD").await,
        hub.pay("north", "west", "0.25", "EUR").await,
    ];
    let w2 = close(s, 1).await;
    let second = vec![
        hub.pay("east", "west", "4.44", "USD").await,
        hub.pay("north", "east", "99.99", "USD").await,
        hub.pay("west", "north", "12", "EUR").await,
        hub.pay("west", "east", "0.01", "EUR").await,
    ];
    let w3 = close(s, w2).await;
    let c1 = content_currencies(&closed_window(s, 1).await);
    let c2 = content_currencies(&closed_window(s, w2).await);
    assert_eq!(c1, BTreeSet::from(["EUR".to_string(), "USD".to_string()]));
    assert_eq!(c2, c1);
    assert_eq!(
        listed_windows(s, "state=CLOSED").await,
        BTreeSet::from([1, w2])
    );

    let created = create_settlement(s, &[1, w2]).await;
    let sid = int_of(&created["id"]);
    // The nets over both windows are the sums of each window's nets.
    let (book1, book2) = (book(&first), book(&second));
    let both = book(first.iter().chain(&second));
    for (key, totals) in &both {
        let net1 = book1.get(key).map(Totals::net).unwrap_or(0);
        let net2 = book2.get(key).map(Totals::net).unwrap_or(0);
        assert_eq!(totals.net(), net1 + net2);
    }
    let pids = check_nets(&hub, &created, &both);
    for window_id in [1, w2] {
        assert_eq!(window(s, window_id).await["state"], PENDING);
        assert_eq!(
            listed_settlements(s, &format!("settlementWindowId={window_id}")).await,
            BTreeSet::from([sid])
        );
    }
    assert_eq!(
        listed_windows(s, &format!("state={PENDING}")).await,
        BTreeSet::from([1, w2])
    );
    let mut states: BTreeMap<i64, String> =
        pids.keys().map(|id| (*id, PENDING.to_string())).collect();
    for to in [RECORDED, RESERVED, COMMITTED, SETTLED] {
        step_all(s, sid, &pids, &mut states, to).await;
    }
    for window_id in [1, w2] {
        assert_eq!(window(s, window_id).await["state"], SETTLED);
    }
    assert_eq!(window(s, w3).await["state"], "OPEN");
    for ((name, currency), totals) in &both {
        let ids = hub.ids(name, currency);
        assert_eq!(
            hub.balance(name, ids.position).await,
            (0, 0),
            "{name} {currency}"
        );
        assert_eq!(
            show(hub.balance(name, ids.settlement).await.0),
            show(-hub.funds + totals.net()),
            "{name} settlement account in {currency}"
        );
    }
    check_report(&hub, sid, SETTLED, &both).await;
    hub.finish().await;
}

#[tokio::test]
async fn two_windows_sqlite() {
    two_windows(Backend::Sqlite).await;
}

#[tokio::test]
async fn two_windows_mariadb() {
    two_windows(Backend::MySql).await;
}

// -- 4. closing windows under traffic ---------------------------------------

/// How many transfers the traffic test sends, and how many at once.
const TRAFFIC: usize = 360;
const IN_FLIGHT: usize = 50;

/// A committed transfer as the database records it, with its window.
struct Stored {
    payer: String,
    payee: String,
    amount: i128,
    currency: String,
    window: Option<i64>,
    state: String,
}

fn stored_transfers(db: &TestDb) -> BTreeMap<String, Stored> {
    db.rows(
        "SELECT t.transfer_id, t.payer_fsp, t.payee_fsp, CAST(t.amount AS CHAR), t.currency_id, \
           CAST(f.settlement_window_id AS CHAR), \
           (SELECT s.state FROM transfer_state_change s WHERE s.transfer_seq = t.transfer_seq \
             ORDER BY s.transfer_state_change_id DESC LIMIT 1) \
         FROM transfer t LEFT JOIN transfer_fulfilment f ON f.transfer_seq = t.transfer_seq",
    )
    .into_iter()
    .map(|row| {
        (
            row[0].clone(),
            Stored {
                payer: row[1].clone(),
                payee: row[2].clone(),
                amount: row[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("amount in units: {row:?}")),
                currency: row[4].clone(),
                window: if row[5].is_empty() {
                    None
                } else {
                    Some(row[5].parse().unwrap_or_else(|_| panic!("window: {row:?}")))
                },
                state: row[6].clone(),
            },
        )
    })
    .collect()
}

async fn close_under_traffic(backend: Backend) {
    let names = ["moja1", "moja2", "moja3", "moja4"];
    let hub = Hub::start(backend, &names, &["USD", "EUR"], "1000000").await;
    let s = &hub.switch;
    let started = Instant::now();

    let plan: Vec<(String, String, String, String)> = (0..TRAFFIC)
        .map(|i| {
            let payer = names[i % 4];
            let payee = names[(i + 1 + (i / 4) % 3) % 4];
            let currency = if i % 3 == 0 { "EUR" } else { "USD" };
            // FSPIOP amounts carry no trailing zeros.
            let cents = (i * 7) % 100;
            let amount = format!("{}.{cents:02}", 1 + (i * 13) % 97);
            let amount = amount
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string();
            (payer.into(), payee.into(), amount, currency.into())
        })
        .collect();
    let done = AtomicUsize::new(0);
    let traffic = async {
        stream::iter(plan.iter())
            .map(|(payer, payee, amount, currency)| {
                let hub = &hub;
                let done = &done;
                async move {
                    let tx = hub.pay(payer, payee, amount, currency).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    tx
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<Tx>>()
            .await
    };
    // Close the open window twice while transfers are in flight.
    let closer = async {
        let mut open = 1;
        let mut closes = Vec::new();
        for threshold in [TRAFFIC / 3, 2 * TRAFFIC / 3] {
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < threshold {
                assert!(
                    Instant::now() < deadline,
                    "only {} transfers done",
                    done.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let before = done.load(Ordering::SeqCst);
            let next = close(s, open).await;
            closes.push((open, before, done.load(Ordering::SeqCst)));
            open = next;
        }
        (open, closes)
    };
    let (sent, (open, closes)) = tokio::join!(traffic, closer);
    assert_eq!(sent.len(), TRAFFIC);
    // The tail goes into a third closed window.
    let last = close(s, open).await;
    let closed: Vec<i64> = vec![1, 2, 3];
    assert_eq!(open, 3, "{closes:?}");
    assert_eq!(last, 4);

    // The database: every transfer sent is COMMITTED and in exactly one
    // closed window; nothing else was committed.
    let stored = stored_transfers(&hub.db);
    let ids: BTreeSet<&str> = sent.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), TRAFFIC);
    assert_eq!(
        stored.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        ids,
        "the database holds exactly the transfers sent"
    );
    for tx in &sent {
        let row = &stored[&tx.id];
        assert_eq!(
            (
                row.state.as_str(),
                &row.payer,
                &row.payee,
                row.amount,
                &row.currency
            ),
            ("COMMITTED", &tx.payer, &tx.payee, tx.amount, &tx.currency),
            "transfer {} as stored",
            tx.id
        );
        let window = row
            .window
            .unwrap_or_else(|| panic!("committed transfer {} has no window", tx.id));
        assert!(
            closed.contains(&window),
            "transfer {} in window {window}",
            tx.id
        );
    }
    let duplicates = hub.db.rows(
        "SELECT transfer_id, CAST(COUNT(*) AS CHAR) FROM transfer_fulfilment \
         GROUP BY transfer_id HAVING COUNT(*) > 1",
    );
    assert!(
        duplicates.is_empty(),
        "transfers in two windows: {duplicates:?}"
    );

    // Each window: its content and a settlement of its own match exactly the
    // committed transfers the database assigns to it.
    let mut counted = 0;
    for window_id in &closed {
        let mine: Vec<Tx> = stored
            .iter()
            .filter(|(_, row)| row.window == Some(*window_id))
            .map(|(id, row)| Tx {
                id: id.clone(),
                payer: row.payer.clone(),
                payee: row.payee.clone(),
                amount: row.amount,
                currency: row.currency.clone(),
            })
            .collect();
        assert!(
            !mine.is_empty(),
            "window {window_id} holds transfers (closes at {closes:?})"
        );
        counted += mine.len();
        let closed_body = closed_window(s, *window_id).await;
        let currencies: BTreeSet<String> = mine.iter().map(|t| t.currency.clone()).collect();
        assert_eq!(
            content_currencies(&closed_body),
            currencies,
            "window {window_id}: {closed_body}"
        );
        let expected = book(&mine);
        let created = create_settlement(s, &[*window_id]).await;
        let sid = int_of(&created["id"]);
        check_nets(&hub, &created, &expected);
        check_report(&hub, sid, PENDING, &expected).await;
    }
    assert_eq!(counted, TRAFFIC, "every transfer counted once");
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    hub.finish().await;
}

#[tokio::test]
async fn close_under_traffic_sqlite() {
    close_under_traffic(Backend::Sqlite).await;
}

#[tokio::test]
async fn close_under_traffic_mariadb() {
    close_under_traffic(Backend::MySql).await;
}

// -- immediate gross ---------------------------------------------------------

/// Under an IMMEDIATE-GROSS model for EUR, each EUR commit is settled at
/// once: positions move back, settlement accounts move by the amount, the
/// transfer is SETTLED inside the switch (COMMITTED to the DFSPs) and is in
/// no window's content. USD stays deferred.
async fn immediate_gross(backend: Backend) {
    let hub = Hub::start(backend, &["dfspa", "dfspb"], &["USD", "EUR"], "1000").await;
    let (status, body) = hub
        .switch
        .post(
            "/settlementModels",
            json!({
                "name": "GROSSEUR",
                "settlementGranularity": "GROSS",
                "settlementInterchange": "BILATERAL",
                "settlementDelay": "IMMEDIATE",
                "currency": "EUR",
                "requireLiquidityCheck": true,
                "ledgerAccountType": "POSITION",
                "settlementAccountType": "SETTLEMENT",
                "autoPositionReset": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "gross model: {body}");

    let gross = [
        hub.pay("dfspa", "dfspb", "10.5", "EUR").await,
        hub.pay("dfspb", "dfspa", "2.25", "EUR").await,
    ];
    let deferred = hub.pay("dfspa", "dfspb", "5", "USD").await;

    let (a, b) = (hub.ids("dfspa", "EUR"), hub.ids("dfspb", "EUR"));
    // Positions are back at zero; the settlement accounts moved by the amounts.
    hub.wait_balance("dfspa", a.position, 0).await;
    hub.wait_balance("dfspb", b.position, 0).await;
    let net_a = units("10.5") - units("2.25");
    hub.wait_balance("dfspa", a.settlement, -hub.funds + net_a)
        .await;
    hub.wait_balance("dfspb", b.settlement, -hub.funds - net_a)
        .await;
    // USD is untouched by settlement: the payer owes 5 on its position.
    let usd = hub.ids("dfspa", "USD");
    hub.wait_balance("dfspa", usd.position, units("5")).await;

    for tx in &gross {
        let state = hub.db.rows(&format!(
            "SELECT state FROM transfer_state_change WHERE transfer_id = '{}' ORDER BY transfer_state_change_id DESC LIMIT 1",
            tx.id
        ));
        assert_eq!(
            state,
            vec![vec!["SETTLED".to_string()]],
            "transfer {}",
            tx.id
        );
    }
    let deferred_state = hub.db.rows(&format!(
        "SELECT state FROM transfer_state_change WHERE transfer_id = '{}' ORDER BY transfer_state_change_id DESC LIMIT 1",
        deferred.id
    ));
    assert_eq!(deferred_state, vec![vec!["COMMITTED".to_string()]]);

    // The payer's GET still says COMMITTED: FSPIOP has no SETTLED.
    let payer = hub.dfsp("dfspa");
    let (status, _) = payer.get_transfer(&gross[0].id).await;
    assert_eq!(status, 202);
    let answer = payer
        .wait_for_count(
            |r: &Received| r.method == "PUT" && r.path == format!("/transfers/{}", gross[0].id),
            2,
            WAIT,
        )
        .await;
    assert_eq!(answer, 2, "the GET is answered with a second PUT");
    let puts: Vec<Value> = payer
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == format!("/transfers/{}", gross[0].id))
        .map(|r| r.json)
        .collect();
    assert!(
        puts.iter().all(|p| p["transferState"] == "COMMITTED"),
        "{puts:?}"
    );

    // Closing the window: only the deferred USD transfer is in its content.
    close(&hub.switch, 1).await;
    let window = closed_window(&hub.switch, 1).await;
    assert_eq!(
        content_currencies(&window),
        BTreeSet::from(["USD".to_string()])
    );
    hub.finish().await;
}

#[tokio::test]
async fn immediate_gross_sqlite() {
    immediate_gross(Backend::Sqlite).await;
}

#[tokio::test]
async fn immediate_gross_mariadb() {
    immediate_gross(Backend::MySql).await;
}

// -- scheduled close ---------------------------------------------------------

/// With `settlement_window_close_interval_s`, windows close on their own.
async fn scheduled_close(backend: Backend) {
    let db = TestDb::new(backend);
    let switch = Switch::start(
        &db,
        &[("MOJASWITCH_SETTLEMENT_WINDOW_CLOSE_INTERVAL_S", "1")],
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = switch.get("/v2/settlementWindows?state=CLOSED").await;
        assert_eq!(status, 200, "{body}");
        let closed = body.as_array().map_or(0, Vec::len);
        if closed >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no two scheduled closes within {WAIT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, open) = switch.get("/v2/settlementWindows?state=OPEN").await;
    assert_eq!(status, 200);
    assert_eq!(
        open.as_array().map(Vec::len),
        Some(1),
        "one OPEN window: {open}"
    );
    assert!(switch.stop().success(), "graceful exit");
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn scheduled_close_sqlite() {
    scheduled_close(Backend::Sqlite).await;
}

#[tokio::test]
async fn scheduled_close_mariadb() {
    scheduled_close(Backend::MySql).await;
}
