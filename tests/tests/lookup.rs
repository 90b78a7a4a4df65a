//! Account lookup through a real switch: DFSPs register their parties with
//! the built-in oracle (FSPIOP /participants), a payer finds the payee with
//! GET /parties, and the ALS admin API manages oracles.

use std::time::Duration;

use serde_json::{json, Value};
use switch_tests::dfsp::{Dfsp, Received, Scene};
use switch_tests::{new_id, Backend};

const WAIT: Duration = Duration::from_secs(10);

async fn scene(backend: Backend) -> Scene {
    Scene::start(backend, "0", &[]).await
}

async fn expect(dfsp: &Dfsp, method: &str, path: &str, after: std::time::Instant) -> Received {
    match dfsp
        .wait_for(
            |r| r.method == method && r.path == path && r.at >= after,
            WAIT,
        )
        .await
    {
        Some(received) => received,
        None => panic!(
            "{} never received {method} {path}; it received {:#?}",
            dfsp.name(),
            dfsp.received()
        ),
    }
}

fn code(received: &Received) -> Value {
    received.json["errorInformation"]["errorCode"].clone()
}

async fn register(dfsp: &Dfsp, path: &str, fsp: &str) -> (u16, Value) {
    dfsp.send_json(
        "POST",
        path,
        &json!({"fspId": fsp, "currency": "USD"}),
        None,
    )
    .await
}

async fn lookup_flow(backend: Backend) {
    let s = scene(backend).await;
    let t0 = std::time::Instant::now();
    let (status, answer) = register(&s.payee, "/participants/MSISDN/27713803912", "payeefsp").await;
    assert_eq!(status, 202, "{answer}");
    let registered = expect(&s.payee, "PUT", "/participants/MSISDN/27713803912", t0).await;
    assert_eq!(registered.json, json!({"fspId": "payeefsp"}));
    assert_eq!(registered.header("fspiop-source"), Some("Hub"));

    // A DFSP may only register identifiers for itself.
    let t1 = std::time::Instant::now();
    register(&s.payer, "/participants/MSISDN/27700000000", "payeefsp").await;
    let refused = expect(
        &s.payer,
        "PUT",
        "/participants/MSISDN/27700000000/error",
        t1,
    )
    .await;
    assert_eq!(code(&refused), "3003");

    // The payer finds the payee without naming it.
    let t2 = std::time::Instant::now();
    let (status, _) = s
        .payer
        .send("GET", "/parties/MSISDN/27713803912", &[], &[])
        .await;
    assert_eq!(status, 202);
    let asked = expect(&s.payee, "GET", "/parties/MSISDN/27713803912", t2).await;
    assert_eq!(
        asked.header("fspiop-destination"),
        Some("payeefsp"),
        "the switch fills in the destination"
    );
    assert_eq!(asked.header("fspiop-source"), Some("payerfsp"));
    let party = json!({"party": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": "27713803912", "fspId": "payeefsp"},
        "name": "Henrik Karlsson"}});
    let (status, _) = s
        .payee
        .send_json(
            "PUT",
            "/parties/MSISDN/27713803912",
            &party,
            Some("payerfsp"),
        )
        .await;
    assert_eq!(status, 200);
    let found = expect(&s.payer, "PUT", "/parties/MSISDN/27713803912", t2).await;
    assert_eq!(found.body, party.to_string().into_bytes(), "byte for byte");

    // The oracle, asked directly.
    let t3 = std::time::Instant::now();
    s.payer
        .send("GET", "/participants/MSISDN/27713803912", &[], &[])
        .await;
    let owner = expect(&s.payer, "PUT", "/participants/MSISDN/27713803912", t3).await;
    assert_eq!(owner.json, json!({"fspId": "payeefsp"}));

    // Unknown party: 3204 to the requester.
    let t4 = std::time::Instant::now();
    s.payer.send("GET", "/parties/MSISDN/99999", &[], &[]).await;
    let missing = expect(&s.payer, "PUT", "/parties/MSISDN/99999/error", t4).await;
    assert_eq!(code(&missing), "3204");

    // Sub ids are separate registrations.
    let t5 = std::time::Instant::now();
    register(&s.payee, "/participants/ACCOUNT_ID/123/savings", "payeefsp").await;
    expect(&s.payee, "PUT", "/participants/ACCOUNT_ID/123/savings", t5).await;
    s.payer
        .send("GET", "/parties/ACCOUNT_ID/123/savings", &[], &[])
        .await;
    expect(&s.payee, "GET", "/parties/ACCOUNT_ID/123/savings", t5).await;

    // Only the owner may delete; after the delete the lookup fails at once.
    let t6 = std::time::Instant::now();
    s.payer
        .send("DELETE", "/participants/MSISDN/27713803912", &[], &[])
        .await;
    let not_yours = expect(
        &s.payer,
        "PUT",
        "/participants/MSISDN/27713803912/error",
        t6,
    )
    .await;
    assert_eq!(code(&not_yours), "3040");
    s.payee
        .send("DELETE", "/participants/MSISDN/27713803912", &[], &[])
        .await;
    expect(&s.payee, "PUT", "/participants/MSISDN/27713803912", t6).await;
    let t7 = std::time::Instant::now();
    s.payer
        .send("GET", "/parties/MSISDN/27713803912", &[], &[])
        .await;
    assert_eq!(
        code(&expect(&s.payer, "PUT", "/parties/MSISDN/27713803912/error", t7).await),
        "3204"
    );

    // An unknown requester is refused on the HTTP answer.
    let stranger = Dfsp::start("strangerfsp");
    stranger.set_switch(&s.switch.fspiop(""));
    let (status, answer) = stranger
        .send("GET", "/parties/MSISDN/27713803912", &[], &[])
        .await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (400, json!("3200"))
    );
}

#[tokio::test]
async fn lookup_flow_sqlite() {
    lookup_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn lookup_flow_mariadb() {
    lookup_flow(Backend::MySql).await;
}

/// Batch registration: each party has its own outcome.
#[tokio::test]
async fn batch_registration() {
    let s = scene(Backend::Sqlite).await;
    let request_id = new_id();
    let batch = json!({
        "requestId": request_id,
        "currency": "USD",
        "partyList": [
            {"partyIdType": "MSISDN", "partyIdentifier": "111", "fspId": "payerfsp"},
            {"partyIdType": "MSISDN", "partyIdentifier": "222", "fspId": "payeefsp"},
            {"partyIdType": "EMAIL", "partyIdentifier": "a@b.c", "fspId": "payerfsp"},
        ],
    });
    let t0 = std::time::Instant::now();
    let (status, answer) = s
        .payer
        .send_json("POST", "/participants", &batch, None)
        .await;
    assert_eq!(status, 202, "{answer}");
    let result = expect(&s.payer, "PUT", &format!("/participants/{request_id}"), t0).await;
    let list = result.json["partyList"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 3, "{:?}", result.json);
    assert!(list[0].get("errorInformation").is_none());
    assert_eq!(list[1]["errorInformation"]["errorCode"], "3003");
    assert!(list[2].get("errorInformation").is_none());
    let t1 = std::time::Instant::now();
    s.payee
        .send("GET", "/participants/MSISDN/111", &[], &[])
        .await;
    let owner = expect(&s.payee, "PUT", "/participants/MSISDN/111", t1).await;
    assert_eq!(owner.json, json!({"fspId": "payerfsp"}));
}

/// The ALS admin API: one active oracle per type and currency.
#[tokio::test]
async fn oracle_admin_api() {
    let s = scene(Backend::MySql).await;
    let oracle = json!({"oracleIdType": "MSISDN", "endpoint": {"value": "http://oracle:8444", "endpointType": "URL"}, "currency": "USD", "isDefault": true});
    let (status, body) = s.switch.post("/oracles", oracle.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s.switch.post("/oracles", oracle.clone()).await;
    assert_eq!(
        (status, body["errorInformation"]["errorCode"].clone()),
        (400, json!("3003"))
    );
    let (status, list) = s.switch.get("/oracles?type=MSISDN").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["endpoint"]["value"], "http://oracle:8444");
    let id = list[0]["oracleId"].as_str().unwrap_or_default().to_string();
    let moved = json!({"oracleIdType": "MSISDN", "endpoint": {"value": "http://oracle2:8444", "endpointType": "URL"}, "currency": "USD"});
    assert_eq!(s.switch.put(&format!("/oracles/{id}"), moved).await.0, 204);
    assert_eq!(
        s.switch.get("/oracles?type=MSISDN").await.1[0]["endpoint"]["value"],
        "http://oracle2:8444"
    );
    assert_eq!(
        s.switch
            .call("DELETE", &format!("/oracles/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(s.switch.get("/oracles").await.1, json!([]));
    let (status, body) = s
        .switch
        .call("DELETE", &format!("/oracles/{id}"), None)
        .await;
    assert_eq!(
        (status, body["errorInformation"]["errorCode"].clone()),
        (400, json!("3200"))
    );
    let bad =
        json!({"oracleIdType": "NOPE", "endpoint": {"value": "http://x", "endpointType": "URL"}});
    assert_eq!(s.switch.post("/oracles", bad).await.0, 400);
}

/// An external oracle configured through the admin API serves registrations
/// and lookups for its party id type; when it is down the requester gets a
/// clear error callback, quickly.
#[tokio::test]
async fn external_oracle() {
    let s = scene(Backend::Sqlite).await;
    let oracle = switch_tests::oracle::Oracle::start();
    let (status, body) = s
        .switch
        .post(
            "/oracles",
            json!({"oracleIdType": "EMAIL", "endpoint": {"value": oracle.url(), "endpointType": "URL"}, "isDefault": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let t0 = std::time::Instant::now();
    register(&s.payee, "/participants/EMAIL/bob@example.com", "payeefsp").await;
    expect(&s.payee, "PUT", "/participants/EMAIL/bob@example.com", t0).await;
    assert_eq!(
        oracle
            .owner("/participants/EMAIL/bob@example.com")
            .as_deref(),
        Some("payeefsp")
    );
    s.payer
        .send("GET", "/parties/EMAIL/bob@example.com", &[], &[])
        .await;
    let asked = expect(&s.payee, "GET", "/parties/EMAIL/bob@example.com", t0).await;
    assert_eq!(asked.header("fspiop-destination"), Some("payeefsp"));
    assert!(oracle
        .calls()
        .iter()
        .any(|c| c.starts_with("GET /participants/EMAIL/bob@example.com")));
    // MSISDN has no external oracle: the built-in one still serves it.
    register(&s.payee, "/participants/MSISDN/555", "payeefsp").await;
    expect(&s.payee, "PUT", "/participants/MSISDN/555", t0).await;
    assert!(oracle.calls().iter().all(|c| !c.contains("MSISDN")));
    // The oracle goes down: a lookup answers with an error callback, quickly.
    oracle.stop().await;
    let t1 = std::time::Instant::now();
    s.payer
        .send("GET", "/parties/EMAIL/bob@example.com", &[], &[])
        .await;
    let down = expect(&s.payer, "PUT", "/parties/EMAIL/bob@example.com/error", t1).await;
    assert_eq!(code(&down), "1000", "{:?}", down.json);
    assert!(down.at.duration_since(t1) < Duration::from_secs(6));
    // The operator removes the oracle: the next lookup is the built-in
    // oracle's (the switch's cache of oracles is forgotten at once), which
    // has no registration for bob.
    let (_, list) = s.switch.get("/oracles?type=EMAIL").await;
    let id = list[0]["oracleId"].as_str().unwrap_or_default().to_string();
    let path = format!("/oracles/{id}");
    assert_eq!(s.switch.call("DELETE", &path, None).await.0, 204);
    let t2 = std::time::Instant::now();
    s.payer
        .send("GET", "/parties/EMAIL/bob@example.com", &[], &[])
        .await;
    let missing = expect(&s.payer, "PUT", "/parties/EMAIL/bob@example.com/error", t2).await;
    assert_eq!(code(&missing), "3204", "{:?}", missing.json);
}
