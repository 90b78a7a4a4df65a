//! The operator API over real HTTP against a real switch process, on SQLite
//! and on MariaDB: onboarding, every error path, idempotency, concurrency,
//! and restarts. Every scenario ends with `mojaswitch check`.

use serde_json::{json, Value};
use switch_tests::{assert_ledger_ok, exact_number, new_id, Backend, Switch, TestDb};

async fn started(backend: Backend) -> (TestDb, Switch) {
    let db = TestDb::new(backend);
    let switch = Switch::start(&db, &[]).await;
    (db, switch)
}

fn error_code(body: &Value) -> &str {
    body["errorInformation"]["errorCode"]
        .as_str()
        .unwrap_or("none")
}

/// The onboarding sequence an operator runs, step by step, with balances read back.
async fn onboarding(backend: Backend) {
    let (db, switch) = started(backend).await;
    switch.onboard_hub("USD").await;
    let (status, body) = switch
        .post(
            "/participants",
            json!({"name": "payerfsp", "currency": "USD"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "payerfsp");
    assert_eq!(body["isActive"], 1);
    let kinds: Vec<&str> = body["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|a| a["ledgerAccountType"].as_str())
        .collect();
    assert_eq!(kinds, vec!["POSITION", "SETTLEMENT"]);

    let (status, body) = switch
        .post(
            "/participants/payerfsp/initialPositionAndLimits",
            json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 10000}, "initialPosition": 0}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, limits) = switch.get("/participants/payerfsp/limits").await;
    assert_eq!(status, 200);
    assert_eq!(
        limits,
        json!([{"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 10000, "alarmPercentage": 10}}])
    );

    for (kind, url) in [
        (
            "FSPIOP_CALLBACK_URL_TRANSFER_POST",
            "http://dfsp:4000/transfers",
        ),
        (
            "FSPIOP_CALLBACK_URL_TRANSFER_PUT",
            "http://dfsp:4000/transfers/{{transferId}}",
        ),
    ] {
        let (status, body) = switch
            .post(
                "/participants/payerfsp/endpoints",
                json!({"type": kind, "value": url}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Replacing an endpoint keeps the newest value; templates stay verbatim.
    switch
        .post(
            "/participants/payerfsp/endpoints",
            json!({"type": "FSPIOP_CALLBACK_URL_TRANSFER_POST", "value": "http://dfsp:4001/transfers"}),
        )
        .await;
    let (_, endpoints) = switch.get("/participants/payerfsp/endpoints").await;
    assert_eq!(
        endpoints,
        json!([
            {"type": "FSPIOP_CALLBACK_URL_TRANSFER_POST", "value": "http://dfsp:4001/transfers"},
            {"type": "FSPIOP_CALLBACK_URL_TRANSFER_PUT", "value": "http://dfsp:4000/transfers/{{transferId}}"},
        ])
    );

    let accounts = switch.accounts("payerfsp", "USD").await;
    let (status, body) = switch
        .funds(
            "payerfsp",
            accounts.settlement,
            "recordFundsIn",
            &new_id(),
            "5000.25",
            "USD",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        switch.balance("payerfsp", accounts.settlement).await,
        ("-5000.25".into(), "0".into())
    );

    // Funds out: reserve then commit.
    let out = new_id();
    let (status, body) = switch
        .funds(
            "payerfsp",
            accounts.settlement,
            "recordFundsOutPrepareReserve",
            &out,
            "1000",
            "USD",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        switch.balance("payerfsp", accounts.settlement).await,
        ("-5000.25".into(), "1000".into())
    );
    let (status, body) = switch
        .put(
            &format!(
                "/participants/payerfsp/accounts/{}/transfers/{out}",
                accounts.settlement
            ),
            json!({"action": "recordFundsOutCommit", "reason": "settlement bank paid"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        switch.balance("payerfsp", accounts.settlement).await,
        ("-4000.25".into(), "0".into())
    );

    // Funds out: reserve then abort.
    let aborted = new_id();
    switch
        .funds(
            "payerfsp",
            accounts.settlement,
            "recordFundsOutPrepareReserve",
            &aborted,
            "250",
            "USD",
        )
        .await;
    let (status, body) = switch
        .put(
            &format!(
                "/participants/payerfsp/accounts/{}/transfers/{aborted}",
                accounts.settlement
            ),
            json!({"action": "recordFundsOutAbort", "reason": "cancelled"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        switch.balance("payerfsp", accounts.settlement).await,
        ("-4000.25".into(), "0".into())
    );

    // Hub reconciliation holds the other side of every movement.
    let (_, hub) = switch.get("/participants/Hub/accounts").await;
    let reconciliation = hub
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["ledgerAccountType"] == "HUB_RECONCILIATION")
        })
        .expect("hub reconciliation");
    assert_eq!(reconciliation["value"].to_string(), "4000.25");

    // Deactivate and reactivate the participant and its position account.
    let (status, body) = switch
        .put("/participants/payerfsp", json!({"isActive": false}))
        .await;
    assert_eq!((status, body["isActive"].clone()), (200, json!(0)));
    let (status, body) = switch
        .put("/participants/payerfsp", json!({"isActive": true}))
        .await;
    assert_eq!((status, body["isActive"].clone()), (200, json!(1)));
    let path = format!("/participants/payerfsp/accounts/{}", accounts.position);
    assert_eq!(switch.put(&path, json!({"isActive": false})).await.0, 200);
    let (_, participant) = switch.get("/participants/payerfsp").await;
    assert_eq!(participant["accounts"][0]["isActive"], 0);
    assert_eq!(switch.put(&path, json!({"isActive": true})).await.0, 200);

    // Positions and limit adjustment.
    let (status, position) = switch
        .get("/participants/payerfsp/positions?currency=USD")
        .await;
    assert_eq!((status, position["value"].clone()), (200, json!(0)));
    let (status, body) = switch
        .put(
            "/participants/payerfsp/limits",
            json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 2500.5, "alarmPercentage": 20}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 2500.5, "alarmPercentage": 20}})
    );
    let (_, all) = switch.get("/participants/limits?currency=USD").await;
    assert_eq!(all[0]["name"], "payerfsp");
    assert_eq!(all[0]["limit"]["value"], exact_number("2500.5"));

    // Reference data round-trips.
    let (status, _) = switch
        .post(
            "/ledgerAccountTypes",
            json!({"name": "HUB_FEE", "description": "fees", "isActive": true, "isSettleable": true}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, types) = switch.get("/ledgerAccountTypes").await;
    assert!(types
        .as_array()
        .expect("types")
        .iter()
        .any(|t| t["name"] == "HUB_FEE"));
    let (status, model) = switch.get("/settlementModels/DEFERREDNETUSD").await;
    assert_eq!(
        (status, model["settlementDelay"].clone()),
        (200, json!("DEFERRED"))
    );
    let (status, model) = switch
        .put(
            "/settlementModels/DEFERREDNETUSD",
            json!({"isActive": false}),
        )
        .await;
    assert_eq!((status, model["isActive"].clone()), (200, json!(0)));
    let (status, enums) = switch.get("/enums").await;
    assert_eq!(status, 200);
    assert!(enums["ledgerAccountType"]["POSITION"].is_number());

    let (status, list) = switch.get("/participants").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Hub", "payerfsp"]);
    assert_eq!(switch.get("/participants?isProxy=true").await.1, json!([]));

    let (status, metrics) = (
        200,
        switch
            .client
            .get(switch.operator("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    assert_eq!(status, 200);
    assert!(metrics.contains("mojaswitch_http_requests_total{api=\"operator\",method=\"POST\",route=\"/participants/{name}/accounts/{id}\",status=\"202\"}"), "{metrics}");
    assert!(metrics.contains("mojaswitch_http_request_duration_seconds_bucket"));

    assert!(switch.stop().success(), "graceful exit");
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn onboarding_sqlite() {
    onboarding(Backend::Sqlite).await;
}

#[tokio::test]
async fn onboarding_mariadb() {
    onboarding(Backend::MySql).await;
}

/// Every refusal with its FSPIOP code and HTTP status; nothing recorded changes.
async fn error_paths(backend: Backend) {
    let (db, switch) = started(backend).await;
    // A currency without hub accounts cannot be added.
    let (status, body) = switch
        .post("/participants", json!({"name": "early", "currency": "USD"}))
        .await;
    assert_eq!((status, error_code(&body)), (400, "3003"), "{body}");
    switch.onboard_hub("USD").await;
    let payer = switch.onboard_dfsp("payerfsp", "USD", "1000", "1000").await;
    let before = switch.balance("payerfsp", payer.settlement).await;

    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        ("GET", "/participants/nobody".into(), None, 400, "3200"),
        (
            "GET",
            "/participants/nobody/accounts".into(),
            None,
            400,
            "3200",
        ),
        (
            "POST",
            "/participants".into(),
            Some(json!({"name": "payerfsp", "currency": "USD"})),
            400,
            "3000",
        ),
        (
            "POST",
            "/participants".into(),
            Some(json!({"name": "other", "currency": "XXX"})),
            400,
            "3100",
        ),
        (
            "POST",
            "/participants".into(),
            Some(json!({"name": "x", "currency": "USD"})),
            400,
            "3100",
        ),
        (
            "POST",
            "/participants".into(),
            Some(json!({"currency": "USD"})),
            400,
            "3102",
        ),
        (
            "POST",
            "/participants".into(),
            Some(json!({"name": 12, "currency": "USD"})),
            400,
            "3100",
        ),
        (
            "POST",
            "/participants/payerfsp/initialPositionAndLimits".into(),
            Some(json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 5}})),
            400,
            "3000",
        ),
        (
            "PUT",
            "/participants/payerfsp/limits".into(),
            Some(
                json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": -5, "alarmPercentage": 10}}),
            ),
            400,
            "3100",
        ),
        (
            "PUT",
            "/participants/payerfsp/limits".into(),
            Some(
                json!({"currency": "USD", "limit": {"type": "OTHER", "value": 5, "alarmPercentage": 10}}),
            ),
            400,
            "3100",
        ),
        (
            "POST",
            "/participants/payerfsp/endpoints".into(),
            Some(json!({"type": "NOT_A_TYPE", "value": "http://x"})),
            400,
            "3100",
        ),
        (
            "POST",
            "/participants/payerfsp/accounts".into(),
            Some(json!({"type": "HUB_RECONCILIATION", "currency": "USD"})),
            400,
            "3000",
        ),
        (
            "POST",
            "/participants/Hub/accounts".into(),
            Some(json!({"type": "POSITION", "currency": "USD"})),
            400,
            "3100",
        ),
        (
            "POST",
            "/settlementModels".into(),
            Some(
                json!({"name": "BAD", "settlementGranularity": "GROSS", "settlementInterchange": "MULTILATERAL",
                "settlementDelay": "IMMEDIATE", "requireLiquidityCheck": true, "ledgerAccountType": "POSITION",
                "settlementAccountType": "SETTLEMENT", "autoPositionReset": true, "currency": "USD"}),
            ),
            400,
            "3100",
        ),
        ("GET", "/settlementModels/NOPE".into(), None, 400, "3200"),
        (
            "GET",
            format!("/transactions/{}", new_id()),
            None,
            400,
            "3208",
        ),
        ("GET", "/no/such/path".into(), None, 404, "3002"),
        ("DELETE", "/participants".into(), None, 405, "3000"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, answer) = switch.call(method, &path, body.clone()).await;
        assert_eq!(
            (status, error_code(&answer)),
            (want_status, want_code),
            "{method} {path} {body:?} -> {answer}"
        );
        assert!(
            answer["errorInformation"]["errorDescription"].is_string(),
            "{answer}"
        );
    }

    let settlement = format!("/participants/payerfsp/accounts/{}", payer.settlement);
    let funds_cases: Vec<(Value, &str)> = vec![
        (json!({"amount": "-5", "currency": "USD"}), "3100"),
        (json!({"amount": "1.00001", "currency": "USD"}), "3100"),
        (json!({"amount": "0", "currency": "USD"}), "3100"),
        (json!({"amount": "10", "currency": "EUR"}), "3100"),
        (json!({"amount": "10", "currency": "QQQ"}), "3100"),
        (
            json!({"amount": "1000000000000000000000", "currency": "USD"}),
            "3100",
        ),
    ];
    for (amount, code) in funds_cases {
        let body = json!({"transferId": new_id(), "externalReference": "r", "action": "recordFundsIn", "reason": "r", "amount": amount});
        let (status, answer) = switch.post(&settlement, body).await;
        assert_eq!(
            (status, error_code(&answer)),
            (400, code),
            "{amount} -> {answer}"
        );
    }
    // Missing mandatory fields name the field.
    let (status, answer) = switch
        .post(&settlement, json!({"externalReference": "r", "action": "recordFundsIn", "reason": "r", "amount": {"amount": "1", "currency": "USD"}}))
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3102"));
    assert!(answer["errorInformation"]["errorDescription"]
        .as_str()
        .unwrap_or("")
        .contains("transferId"));
    // Malformed JSON, and a JSON value that is not an object.
    for raw in [
        &b"{\"transferId\": "[..],
        &b"[1, 2]"[..],
        &[0xff, 0xfe, 0x00][..],
    ] {
        let (status, answer) = switch.call_raw("POST", &settlement, raw).await;
        assert_eq!((status, error_code(&answer)), (400, "3101"), "{answer}");
    }
    // Funds on the POSITION account, or on an account of another participant.
    let (status, answer) = switch
        .funds(
            "payerfsp",
            payer.position,
            "recordFundsIn",
            &new_id(),
            "1",
            "USD",
        )
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3000"), "{answer}");
    let (status, answer) = switch
        .funds("payerfsp", 1, "recordFundsIn", &new_id(), "1", "USD")
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3000"), "{answer}");
    // Funds out beyond liquidity.
    let (status, answer) = switch
        .funds(
            "payerfsp",
            payer.settlement,
            "recordFundsOutPrepareReserve",
            &new_id(),
            "1000.0001",
            "USD",
        )
        .await;
    assert_eq!((status, error_code(&answer)), (400, "4001"), "{answer}");
    // Commit of a funds-out that was never reserved, and of a funds in.
    let unknown = format!("{settlement}/transfers/{}", new_id());
    let (status, answer) = switch
        .put(
            &unknown,
            json!({"action": "recordFundsOutCommit", "reason": "r"}),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3200"), "{answer}");
    let funds_in = new_id();
    switch
        .funds(
            "payerfsp",
            payer.settlement,
            "recordFundsIn",
            &funds_in,
            "1",
            "USD",
        )
        .await;
    let (status, answer) = switch
        .put(
            &format!("{settlement}/transfers/{funds_in}"),
            json!({"action": "recordFundsOutCommit", "reason": "r"}),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3100"), "{answer}");
    // Commit after abort is refused; a repeated abort is the same outcome.
    let out = new_id();
    switch
        .funds(
            "payerfsp",
            payer.settlement,
            "recordFundsOutPrepareReserve",
            &out,
            "10",
            "USD",
        )
        .await;
    let finish = format!("{settlement}/transfers/{out}");
    assert_eq!(
        switch
            .put(
                &finish,
                json!({"action": "recordFundsOutAbort", "reason": "r"})
            )
            .await
            .0,
        202
    );
    assert_eq!(
        switch
            .put(
                &finish,
                json!({"action": "recordFundsOutAbort", "reason": "r"})
            )
            .await
            .0,
        202
    );
    let (status, answer) = switch
        .put(
            &finish,
            json!({"action": "recordFundsOutCommit", "reason": "r"}),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3100"), "{answer}");
    let (status, answer) = switch
        .put(&finish, json!({"action": "sideways", "reason": "r"}))
        .await;
    assert_eq!((status, error_code(&answer)), (400, "3100"), "{answer}");

    // A repeated transferId: same body, same outcome; different body, 3106.
    let repeated = new_id();
    let body = json!({"transferId": repeated, "externalReference": "r", "action": "recordFundsIn", "reason": "r", "amount": {"amount": "7", "currency": "USD"}});
    assert_eq!(switch.post(&settlement, body.clone()).await.0, 202);
    assert_eq!(switch.post(&settlement, body).await.0, 202);
    let modified = json!({"transferId": repeated, "externalReference": "r", "action": "recordFundsIn", "reason": "r", "amount": {"amount": "8", "currency": "USD"}});
    let (status, answer) = switch.post(&settlement, modified).await;
    assert_eq!((status, error_code(&answer)), (400, "3106"), "{answer}");

    // Unknown extra fields are tolerated.
    let (status, answer) = switch
        .post(
            &settlement,
            json!({"transferId": new_id(), "externalReference": "r", "action": "recordFundsIn", "reason": "r",
                   "amount": {"amount": "2", "currency": "USD", "note": "x"}, "extra": {"deep": [1, 2]}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    // Only the accepted funds moved the balance: 1000 + 1 + 7 + 2.
    assert_eq!(before, ("-1000".into(), "0".into()));
    assert_eq!(
        switch.balance("payerfsp", payer.settlement).await,
        ("-1010".into(), "0".into())
    );
    drop(switch);
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn error_paths_sqlite() {
    error_paths(Backend::Sqlite).await;
}

#[tokio::test]
async fn error_paths_mariadb() {
    error_paths(Backend::MySql).await;
}

/// 40 concurrent funds-out reservations of 50 against 1000 of liquidity:
/// exactly 20 succeed, the rest are refused with 4001, nothing over-reserves.
async fn concurrent_funds_out(backend: Backend) {
    let (db, switch) = started(backend).await;
    switch.onboard_hub("USD").await;
    let payer = switch.onboard_dfsp("payerfsp", "USD", "1000", "1000").await;
    let switch = std::sync::Arc::new(switch);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let switch = switch.clone();
        tasks.push(tokio::spawn(async move {
            switch
                .funds(
                    "payerfsp",
                    payer.settlement,
                    "recordFundsOutPrepareReserve",
                    &new_id(),
                    "50",
                    "USD",
                )
                .await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            202 => accepted += 1,
            400 => assert_eq!(error_code(&body), "4001", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted, 20);
    assert_eq!(
        switch.balance("payerfsp", payer.settlement).await,
        ("-1000".into(), "1000".into())
    );
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn concurrent_funds_out_sqlite() {
    concurrent_funds_out(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_funds_out_mariadb() {
    concurrent_funds_out(Backend::MySql).await;
}

const HISTORY: &str = "SELECT participant_position_change_id, participant_position_id, value, reserved_value, change_value, change_reserved, kind FROM participant_position_change ORDER BY participant_position_change_id";

/// Stop the process, start it again on the same database: every balance and
/// history row is as before, and the switch carries on from there.
async fn restart_keeps_everything(backend: Backend) {
    let db = TestDb::new(backend);
    let switch = Switch::start(&db, &[]).await;
    switch.onboard_hub("USD").await;
    let payer = switch
        .onboard_dfsp("payerfsp", "USD", "1000", "750.5")
        .await;
    let payee = switch.onboard_dfsp("payeefsp", "USD", "2000", "10").await;
    let reserved = new_id();
    switch
        .funds(
            "payerfsp",
            payer.settlement,
            "recordFundsOutPrepareReserve",
            &reserved,
            "100",
            "USD",
        )
        .await;
    let (_, participants_before) = switch.get("/participants").await;
    let (_, accounts_before) = switch.get("/participants/payerfsp/accounts").await;
    let (_, limits_before) = switch.get("/participants/limits").await;
    let history_before = db.rows(HISTORY);
    assert!(history_before.len() >= 5, "{history_before:?}");
    assert!(switch.stop().success(), "SIGTERM exits 0");

    let switch = Switch::start(&db, &[]).await;
    assert_eq!(switch.get("/participants").await.1, participants_before);
    assert_eq!(
        switch.get("/participants/payerfsp/accounts").await.1,
        accounts_before
    );
    assert_eq!(switch.get("/participants/limits").await.1, limits_before);
    assert_eq!(db.rows(HISTORY), history_before);
    // The reservation made before the restart can still be committed, once.
    let finish = format!(
        "/participants/payerfsp/accounts/{}/transfers/{reserved}",
        payer.settlement
    );
    assert_eq!(
        switch
            .put(
                &finish,
                json!({"action": "recordFundsOutCommit", "reason": "r"})
            )
            .await
            .0,
        202
    );
    assert_eq!(
        switch.balance("payerfsp", payer.settlement).await,
        ("-650.5".into(), "0".into())
    );
    assert_eq!(
        switch.balance("payeefsp", payee.settlement).await,
        ("-10".into(), "0".into())
    );
    // A crash (SIGKILL) loses nothing that was acknowledged either.
    switch.kill();
    let switch = Switch::start(&db, &[]).await;
    assert_eq!(
        switch.balance("payerfsp", payer.settlement).await,
        ("-650.5".into(), "0".into())
    );
    assert!(switch.stop().success());
    assert_ledger_ok(&db.url);
}

#[tokio::test]
async fn restart_keeps_everything_sqlite() {
    restart_keeps_everything(Backend::Sqlite).await;
}

#[tokio::test]
async fn restart_keeps_everything_mariadb() {
    restart_keeps_everything(Backend::MySql).await;
}
