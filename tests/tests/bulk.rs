//! Bulk transfers through a real switch: a payer's bulk is split into
//! transfers with their own outcomes, the payee answers for all lines at
//! once, and the payer hears every line's outcome in one PUT. Every
//! scenario ends with the ledger check.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switch_tests::dfsp::{Dfsp, Prepare, Received, Scene};
use switch_tests::{assert_ledger_ok, new_id, Backend};

const WAIT: Duration = Duration::from_secs(10);

/// Payer and payee with 5000 of liquidity and a net debit cap of 1000.
async fn scene(backend: Backend) -> Scene {
    Scene::start(backend, "5000", &[]).await
}

async fn position(s: &Scene, name: &str) -> String {
    let (_, body) = s
        .switch
        .get(&format!("/participants/{name}/positions?currency=USD"))
        .await;
    body["value"].to_string()
}

async fn finish(s: Scene) {
    let Scene { db, switch, .. } = s;
    assert!(switch.stop().success());
    assert_ledger_ok(&db.url);
}

/// A bulk of the given lines from the scene's payer to its payee.
struct Bulk {
    id: String,
    lines: Vec<Prepare>,
    body: Value,
}

fn bulk(payer: &Dfsp, amounts: &[&str], expires_in: Duration) -> Bulk {
    let lines: Vec<Prepare> = amounts
        .iter()
        .map(|amount| payer.prepare("payeefsp", amount, "USD", expires_in))
        .collect();
    let id = new_id();
    let body = switch_tests::dfsp::bulk_prepare_body(&id, &lines);
    Bulk { id, lines, body }
}

async fn expect(dfsp: &Dfsp, method: &str, path: &str, after: Instant) -> Received {
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

fn code(received: &Received) -> String {
    received.json["errorInformation"]["errorCode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `individualTransferResults` entry for a transfer.
fn result_for<'a>(put: &'a Received, transfer_id: &str) -> &'a Value {
    put.json["individualTransferResults"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["transferId"] == transfer_id))
        .unwrap_or_else(|| panic!("no result for {transfer_id} in {}", put.json))
}

async fn send_bulk(s: &Scene, b: &Bulk) -> (u16, Value) {
    s.payer
        .send_json("POST", "/bulkTransfers", &b.body, Some("payeefsp"))
        .await
}

/// One line over the net debit cap, one wrong fulfilment, one rejected by
/// the payee, one committed: each line has its own outcome.
async fn mixed_outcomes(backend: Backend) {
    let s = scene(backend).await;
    let b = bulk(
        &s.payer,
        &["100", "2000", "50", "30"],
        Duration::from_secs(60),
    );
    let t0 = Instant::now();
    let (status, answer) = send_bulk(&s, &b).await;
    assert_eq!(status, 202, "{answer}");

    // The payee gets the reserved lines only (the 2000 line is over the cap).
    let post = expect(&s.payee, "POST", "/bulkTransfers", t0).await;
    let forwarded: Vec<&str> = post.json["individualTransfers"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["transferId"].as_str())
        .collect();
    let ids: Vec<&str> = b.lines.iter().map(|l| l.transfer_id.as_str()).collect();
    assert_eq!(forwarded, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(post.json["bulkTransferId"], b.id.as_str());
    assert_eq!(post.header("fspiop-source"), Some("payerfsp"));
    assert_eq!(post.header("fspiop-destination"), Some("payeefsp"));
    assert_eq!(
        post.header("content-type"),
        Some("application/vnd.interoperability.bulkTransfers+json;version=1.1")
    );
    assert_eq!(position(&s, "payerfsp").await, "180");

    let t1 = Instant::now();
    let fulfil = json!({
        "completedTimestamp": switch_tests::dfsp::iso_now(),
        "bulkTransferState": "COMPLETED",
        "individualTransferResults": [
            {"transferId": ids[0], "fulfilment": b.lines[0].fulfilment},
            {"transferId": ids[2], "fulfilment": b.lines[0].fulfilment},
            {"transferId": ids[3], "errorInformation": {"errorCode": "5100", "errorDescription": "Payee rejected"}},
        ],
    });
    let path = format!("/bulkTransfers/{}", b.id);
    let (status, answer) = s
        .payee
        .send_json("PUT", &path, &fulfil, Some("payerfsp"))
        .await;
    assert_eq!(status, 200, "{answer}");

    let put = expect(&s.payer, "PUT", &path, t1).await;
    assert_eq!(put.json["bulkTransferState"], "COMPLETED");
    assert_eq!(put.header("fspiop-source"), Some("Hub"));
    assert_eq!(put.header("fspiop-destination"), Some("payerfsp"));
    assert_eq!(
        result_for(&put, ids[0])["fulfilment"],
        b.lines[0].fulfilment.as_str()
    );
    let over_cap = &result_for(&put, ids[1])["errorInformation"]["errorCode"];
    assert_eq!(over_cap, "4200");
    let wrong = &result_for(&put, ids[2])["errorInformation"]["errorCode"];
    assert_eq!(wrong, "3100");
    let rejected = &result_for(&put, ids[3])["errorInformation"];
    assert_eq!(rejected["errorCode"], "5100");
    assert_eq!(rejected["errorDescription"], "Payee rejected");
    assert_eq!(
        put.json["individualTransferResults"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    // The payee fulfilled a line the switch aborted: it hears the results too.
    let to_payee = expect(&s.payee, "PUT", &path, t1).await;
    assert_eq!(to_payee.json, put.json);

    assert_eq!(position(&s, "payerfsp").await, "100");
    assert_eq!(position(&s, "payeefsp").await, "-100");
    // No line sent callbacks of its own.
    assert!(!s
        .payer
        .received()
        .iter()
        .any(|r| r.path.starts_with("/transfers")));

    // GET: the payer learns the same results; an unknown id is 3210.
    let t2 = Instant::now();
    let (status, _) = s.payer.send("GET", &path, b"", &[]).await;
    assert_eq!(status, 202);
    let again = expect(&s.payer, "PUT", &path, t2).await;
    assert_eq!(again.json, put.json);
    let unknown = format!("/bulkTransfers/{}", new_id());
    s.payer.send("GET", &unknown, b"", &[]).await;
    let error = expect(&s.payer, "PUT", &format!("{unknown}/error"), t2).await;
    assert_eq!(code(&error), "3210");

    // A line of a bulk is also a transfer: GET /transfers/{id} answers it.
    let t3 = Instant::now();
    let (status, _) = s.payer.get_transfer(ids[0]).await;
    assert_eq!(status, 202);
    let single = expect(&s.payer, "PUT", &format!("/transfers/{}", ids[0]), t3).await;
    assert_eq!(single.json["transferState"], "COMMITTED");
    finish(s).await;
}

#[tokio::test]
async fn mixed_outcomes_sqlite() {
    mixed_outcomes(Backend::Sqlite).await;
}

#[tokio::test]
async fn mixed_outcomes_mariadb() {
    mixed_outcomes(Backend::MySql).await;
}

/// Resends and changes: an identical bulk gets the outcome again, a changed
/// one 3106, a line reusing a transfer id 3106 for that line alone, and a
/// changed fulfil 3106 to the payee.
async fn duplicates(backend: Backend) {
    let s = scene(backend).await;
    let b = bulk(&s.payer, &["10", "20"], Duration::from_secs(60));
    let path = format!("/bulkTransfers/{}", b.id);
    let t0 = Instant::now();
    assert_eq!(send_bulk(&s, &b).await.0, 202);
    expect(&s.payee, "POST", "/bulkTransfers", t0).await;
    let results: Vec<Value> = b
        .lines
        .iter()
        .map(|l| json!({"transferId": l.transfer_id, "fulfilment": l.fulfilment}))
        .collect();
    let fulfil = json!({"bulkTransferState": "COMPLETED", "individualTransferResults": results});
    s.payee
        .send_json("PUT", &path, &fulfil, Some("payerfsp"))
        .await;
    let put = expect(&s.payer, "PUT", &path, t0).await;
    assert_eq!(put.json["bulkTransferState"], "COMPLETED");

    // The same bulk again: the payer gets the outcome again, nothing moves.
    let t1 = Instant::now();
    assert_eq!(send_bulk(&s, &b).await.0, 202);
    let resent = expect(&s.payer, "PUT", &path, t1).await;
    assert_eq!(
        resent.json["individualTransferResults"],
        put.json["individualTransferResults"]
    );
    // A changed bulk with the same id: 3106.
    let mut changed = b.body.clone();
    changed["individualTransfers"][0]["transferAmount"]["amount"] = json!("11");
    s.payer
        .send_json("POST", "/bulkTransfers", &changed, Some("payeefsp"))
        .await;
    let refused = expect(&s.payer, "PUT", &format!("{path}/error"), t1).await;
    assert_eq!(code(&refused), "3106");
    // The same fulfil again: the payee gets the outcome; a changed one 3106.
    let t2 = Instant::now();
    s.payee
        .send_json("PUT", &path, &fulfil, Some("payerfsp"))
        .await;
    let outcome = expect(&s.payee, "PUT", &path, t2).await;
    assert_eq!(outcome.json["bulkTransferState"], "COMPLETED");
    let mut other = fulfil.clone();
    other["bulkTransferState"] = json!("REJECTED");
    s.payee
        .send_json("PUT", &path, &other, Some("payerfsp"))
        .await;
    let refused = expect(&s.payee, "PUT", &format!("{path}/error"), t2).await;
    assert_eq!(code(&refused), "3106");

    // A new bulk whose second line reuses a committed transfer's id.
    let mut reuse = bulk(&s.payer, &["5", "6"], Duration::from_secs(60));
    let old_id = b.lines[0].transfer_id.clone();
    reuse.body["individualTransfers"][1]["transferId"] = json!(old_id);
    let t3 = Instant::now();
    assert_eq!(send_bulk(&s, &reuse).await.0, 202);
    let post = expect(&s.payee, "POST", "/bulkTransfers", t3).await;
    assert_eq!(
        post.json["individualTransfers"].as_array().map(Vec::len),
        Some(1)
    );
    let reuse_path = format!("/bulkTransfers/{}", reuse.id);
    let only = json!({"bulkTransferState": "COMPLETED", "individualTransferResults": [
        {"transferId": reuse.lines[0].transfer_id, "fulfilment": reuse.lines[0].fulfilment}]});
    s.payee
        .send_json("PUT", &reuse_path, &only, Some("payerfsp"))
        .await;
    let put = expect(&s.payer, "PUT", &reuse_path, t3).await;
    assert_eq!(
        result_for(&put, &old_id)["errorInformation"]["errorCode"],
        "3106"
    );
    assert!(result_for(&put, &reuse.lines[0].transfer_id)["fulfilment"].is_string());
    // The reused id still belongs to the first bulk, committed once.
    assert_eq!(position(&s, "payerfsp").await, "35");
    assert_eq!(position(&s, "payeefsp").await, "-35");
    finish(s).await;
}

#[tokio::test]
async fn duplicates_sqlite() {
    duplicates(Backend::Sqlite).await;
}

#[tokio::test]
async fn duplicates_mariadb() {
    duplicates(Backend::MySql).await;
}

/// A bulk the payee never answers expires as a whole: every reserved line
/// is given back, the payer hears 3303 per line, the payee 3303 for the
/// bulk, and a late fulfil is refused.
async fn expiry(backend: Backend) {
    let s = scene(backend).await;
    let b = bulk(&s.payer, &["40", "60"], Duration::from_secs(2));
    let path = format!("/bulkTransfers/{}", b.id);
    let t0 = Instant::now();
    assert_eq!(send_bulk(&s, &b).await.0, 202);
    expect(&s.payee, "POST", "/bulkTransfers", t0).await;
    assert_eq!(position(&s, "payerfsp").await, "100");

    let put = expect(&s.payer, "PUT", &path, t0).await;
    assert_eq!(put.json["bulkTransferState"], "REJECTED");
    for line in &b.lines {
        assert_eq!(
            result_for(&put, &line.transfer_id)["errorInformation"]["errorCode"],
            "3303"
        );
    }
    let to_payee = expect(&s.payee, "PUT", &format!("{path}/error"), t0).await;
    assert_eq!(code(&to_payee), "3303");
    assert_eq!(position(&s, "payerfsp").await, "0");

    let t1 = Instant::now();
    let late = json!({"bulkTransferState": "COMPLETED", "individualTransferResults": [
        {"transferId": b.lines[0].transfer_id, "fulfilment": b.lines[0].fulfilment}]});
    s.payee
        .send_json("PUT", &path, &late, Some("payerfsp"))
        .await;
    let refused = expect(&s.payee, "PUT", &format!("{path}/error"), t1).await;
    assert_eq!(code(&refused), "3303");
    assert_eq!(position(&s, "payerfsp").await, "0");
    assert_eq!(position(&s, "payeefsp").await, "0");
    finish(s).await;
}

#[tokio::test]
async fn expiry_sqlite() {
    expiry(Backend::Sqlite).await;
}

#[tokio::test]
async fn expiry_mariadb() {
    expiry(Backend::MySql).await;
}

/// The payee refuses the whole bulk: every line is given back and the payer
/// gets the payee's error byte for byte. Bad input is refused up front.
async fn payee_error_and_bad_input(backend: Backend) {
    let s = scene(backend).await;
    let b = bulk(&s.payer, &["70", "80"], Duration::from_secs(60));
    let path = format!("/bulkTransfers/{}", b.id);
    let t0 = Instant::now();
    assert_eq!(send_bulk(&s, &b).await.0, 202);
    expect(&s.payee, "POST", "/bulkTransfers", t0).await;
    let error = json!({"errorInformation": {"errorCode": "5000", "errorDescription": "Generic Payee error"}});
    let (status, _) = s
        .payee
        .send_json("PUT", &format!("{path}/error"), &error, Some("payerfsp"))
        .await;
    assert_eq!(status, 200);
    let forwarded = expect(&s.payer, "PUT", &format!("{path}/error"), t0).await;
    assert_eq!(forwarded.body, error.to_string().into_bytes());
    assert_eq!(forwarded.header("fspiop-source"), Some("payeefsp"));
    assert_eq!(position(&s, "payerfsp").await, "0");
    // The lines are aborted with the payee's error.
    let t1 = Instant::now();
    s.payer.send("GET", &path, b"", &[]).await;
    let state = expect(&s.payer, "PUT", &path, t1).await;
    assert_eq!(state.json["bulkTransferState"], "REJECTED");
    assert_eq!(
        result_for(&state, &b.lines[1].transfer_id)["errorInformation"]["errorCode"],
        "5000"
    );

    // Refused before anything is recorded.
    let mut not_mine = bulk(&s.payer, &["1"], Duration::from_secs(60));
    not_mine.body["payerFsp"] = json!("payeefsp");
    let (status, body) = send_bulk(&s, &not_mine).await;
    assert_eq!(status, 400);
    assert_eq!(body["errorInformation"]["errorCode"], "3100");
    let mut empty = bulk(&s.payer, &["1"], Duration::from_secs(60));
    empty.body["individualTransfers"] = json!([]);
    let (status, body) = send_bulk(&s, &empty).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errorInformation"]["errorCode"]
        .as_str()
        .is_some_and(|c| c.starts_with("31")));
    // Only the payee may answer for a bulk.
    let t2 = Instant::now();
    let fulfil = json!({"bulkTransferState": "COMPLETED"});
    s.payer
        .send_json("PUT", &path, &fulfil, Some("payeefsp"))
        .await;
    let refused = expect(&s.payer, "PUT", &format!("{path}/error"), t2).await;
    assert_eq!(code(&refused), "3100");
    finish(s).await;
}

#[tokio::test]
async fn payee_error_and_bad_input_sqlite() {
    payee_error_and_bad_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn payee_error_and_bad_input_mariadb() {
    payee_error_and_bad_input(Backend::MySql).await;
}
