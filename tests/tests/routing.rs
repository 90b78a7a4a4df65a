//! Routed resources (quotes, bulk quotes, transaction requests,
//! authorizations, transactions) between two simulated DFSPs through a real
//! switch: each message reaches the far side byte for byte at its base URL
//! plus the request path, and refusals come back as error callbacks.

use std::time::Duration;

use serde_json::{json, Value};
use switch_tests::dfsp::{msisdn_party as party, Dfsp, Received, Scene};
use switch_tests::{new_id, Backend};

const WAIT: Duration = Duration::from_secs(10);

async fn scene(backend: Backend) -> Scene {
    Scene::start(backend, "0", &[]).await
}

async fn expect(dfsp: &Dfsp, method: &str, path: &str) -> Received {
    match dfsp
        .wait_for(|r| r.method == method && r.path == path, WAIT)
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

/// A quote request with two fields the schema does not list: the switch
/// passes them on.
fn quote_request(quote_id: &str, payee: &str, currency: &str) -> Value {
    let mut body = switch_tests::dfsp::quote_request(quote_id, payee, currency);
    body["note"] = json!("an unknown field is tolerated");
    body["extra"] = json!({"x": 1});
    body
}

/// POST /quotes to the payee, PUT /quotes/{ID} back to the payer, and GET.
async fn quotes_round_trip(backend: Backend) {
    let s = scene(backend).await;
    let quote_id = new_id();
    let body = quote_request(&quote_id, "payeefsp", "USD");
    let bytes = body.to_string().into_bytes();
    let (status, answer) = s
        .payer
        .send(
            "POST",
            "/quotes",
            &bytes,
            &[
                ("fspiop-destination", Some("payeefsp")),
                (
                    "traceparent",
                    Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ),
            ],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let post = expect(&s.payee, "POST", "/quotes").await;
    assert_eq!(post.body, bytes, "byte for byte");
    assert_eq!(post.header("fspiop-source"), Some("payerfsp"));
    assert_eq!(
        post.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );

    let response = json!({
        "transferAmount": {"amount": "25", "currency": "USD"},
        "expiration": "2030-01-01T00:00:00.000Z",
        "ilpPacket": "AYIBgQAAAAAAAASwNGxldmVsb25lLmRmc3AxLm1lci45T2RTOF81MDdqUUZERmZlakgyOVc4bXFmNEpLMHlGTFGCAUBQU0svMS4wCk5vbmNlOiB1SXlweUYzY3pYSXBFdzVVc05TYWh3CkVuY3J5cHRpb246IG5vbmUKUGF5bWVudC1JZDogMTMyMzZhM2ItOGZhOC00MTYzLTg0NDctNGMzZWQzZGE5OGE3CgpDb250ZW50LUxlbmd0aDogMTM1CkNvbnRlbnQtVHlwZTogYXBwbGljYXRpb24vanNvbgpTZW5kZXItSWRlbnRpZmllcjogOTI4MDYzOTEKCiJ7XCJmZWVcIjowLFwidHJhbnNmZXJDb2RlXCI6XCJpbnZvaWNlXCIsXCJkZWJpdE5hbWVcIjpcImFsaWNlIGNvb3BlclwiLFwiY3JlZGl0TmFtZVwiOlwibWVyIGNoYW50XCIsXCJkZWJpdElkZW50aWZpZXJcIjpcIjkyODA2MzkxXCJ9IgA",
        "condition": "GRzLaTP7DJ9t4P-a_BA0WA9wzzlsugf00-Tn6kESAfM",
    });
    let (status, answer) = s
        .payee
        .send_json(
            "PUT",
            &format!("/quotes/{quote_id}"),
            &response,
            Some("payerfsp"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let put = expect(&s.payer, "PUT", &format!("/quotes/{quote_id}")).await;
    assert_eq!(put.body, response.to_string().into_bytes());
    assert_eq!(put.header("fspiop-source"), Some("payeefsp"));

    let (status, _) = s
        .payer
        .send(
            "GET",
            &format!("/quotes/{quote_id}"),
            &[],
            &[("fspiop-destination", Some("payeefsp"))],
        )
        .await;
    assert_eq!(status, 202);
    expect(&s.payee, "GET", &format!("/quotes/{quote_id}")).await;
    let error = json!({"errorInformation": {"errorCode": "5101", "errorDescription": "Payee rejected quote"}});
    s.payee
        .send_json(
            "PUT",
            &format!("/quotes/{quote_id}/error"),
            &error,
            Some("payerfsp"),
        )
        .await;
    let routed = expect(&s.payer, "PUT", &format!("/quotes/{quote_id}/error")).await;
    assert_eq!(routed.json["errorInformation"]["errorCode"], "5101");
}

#[tokio::test]
async fn quotes_round_trip_sqlite() {
    quotes_round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn quotes_round_trip_mariadb() {
    quotes_round_trip(Backend::MySql).await;
}

/// Quote refusals: unknown payee 3203, payer without the currency 3202,
/// inactive payee 3203, payee without a quotes endpoint 3201, all as error
/// callbacks to the payer; an unknown source is refused synchronously.
#[tokio::test]
async fn quote_refusals() {
    let s = scene(Backend::Sqlite).await;
    let cases: Vec<(Value, &str)> = vec![
        (quote_request(&new_id(), "nobody", "USD"), "3203"),
        (quote_request(&new_id(), "payeefsp", "EUR"), "3202"),
    ];
    for (body, code) in cases {
        let id = body["quoteId"].as_str().unwrap_or_default().to_string();
        let payee = body["payee"]["partyIdInfo"]["fspId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (status, _) = s
            .payer
            .send_json("POST", "/quotes", &body, Some(&payee))
            .await;
        assert_eq!(status, 202);
        let error = expect(&s.payer, "PUT", &format!("/quotes/{id}/error")).await;
        assert_eq!(
            error.json["errorInformation"]["errorCode"], code,
            "{:?}",
            error.json
        );
        assert_eq!(error.header("fspiop-source"), Some("Hub"));
    }
    s.switch
        .put("/participants/payeefsp", json!({"isActive": false}))
        .await;
    let inactive = quote_request(&new_id(), "payeefsp", "USD");
    s.payer
        .send_json("POST", "/quotes", &inactive, Some("payeefsp"))
        .await;
    let error = expect(
        &s.payer,
        "PUT",
        &format!(
            "/quotes/{}/error",
            inactive["quoteId"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(error.json["errorInformation"]["errorCode"], "3203");
    s.switch
        .put("/participants/payeefsp", json!({"isActive": true}))
        .await;
    // A third DFSP with no endpoints at all.
    s.switch
        .post(
            "/participants",
            json!({"name": "silentfsp", "currency": "USD"}),
        )
        .await;
    let unreachable = quote_request(&new_id(), "silentfsp", "USD");
    s.payer
        .send_json("POST", "/quotes", &unreachable, Some("silentfsp"))
        .await;
    let error = expect(
        &s.payer,
        "PUT",
        &format!(
            "/quotes/{}/error",
            unreachable["quoteId"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(error.json["errorInformation"]["errorCode"], "3201");
    assert!(
        s.payee.received().iter().all(|r| r.method != "POST"),
        "nothing was forwarded"
    );
    // An unknown source cannot be called back: refused on the HTTP answer.
    let stranger = Dfsp::start("strangerfsp");
    stranger.set_switch(&s.switch.fspiop(""));
    let (status, answer) = stranger
        .send_json(
            "POST",
            "/quotes",
            &quote_request(&new_id(), "payeefsp", "USD"),
            Some("payeefsp"),
        )
        .await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (400, json!("3200"))
    );
}

/// Transaction requests, authorizations (with their query string) and
/// transactions, each routed both ways.
#[tokio::test]
async fn request_to_pay_authorizations_and_transactions() {
    let s = scene(Backend::Sqlite).await;
    let request_id = new_id();
    let request = json!({
        "transactionRequestId": request_id,
        "payee": party("payeefsp", "27713803912"),
        "payer": {"partyIdType": "MSISDN", "partyIdentifier": "27713803911", "fspId": "payerfsp"},
        "amount": {"amount": "10", "currency": "USD"},
        "transactionType": {"scenario": "PAYMENT", "initiator": "PAYEE", "initiatorType": "BUSINESS"},
    });
    let (status, answer) = s
        .payee
        .send_json("POST", "/transactionRequests", &request, Some("payerfsp"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let received = expect(&s.payer, "POST", "/transactionRequests").await;
    assert_eq!(received.json["transactionRequestId"], json!(request_id));
    s.payer
        .send_json(
            "PUT",
            &format!("/transactionRequests/{request_id}"),
            &json!({"transactionRequestState": "RECEIVED"}),
            Some("payeefsp"),
        )
        .await;
    let state = expect(
        &s.payee,
        "PUT",
        &format!("/transactionRequests/{request_id}"),
    )
    .await;
    assert_eq!(state.json["transactionRequestState"], "RECEIVED");

    let authorization = new_id();
    let query = "authenticationType=OTP&retriesLeft=2&amount=10&currency=USD";
    let (status, _) = s
        .payer
        .send(
            "GET",
            &format!("/authorizations/{authorization}?{query}"),
            &[],
            &[("fspiop-destination", Some("payeefsp"))],
        )
        .await;
    assert_eq!(status, 202);
    let get = s
        .payee
        .wait_for(
            |r| {
                r.method == "GET"
                    && r.path
                        .starts_with(&format!("/authorizations/{authorization}"))
            },
            WAIT,
        )
        .await
        .expect("the authorization request");
    assert_eq!(get.query, query, "the query string passes through");
    s.payee
        .send_json(
            "PUT",
            &format!("/authorizations/{authorization}"),
            &json!({"responseType": "ENTERED", "authenticationInfo": {"authentication": "OTP", "authenticationValue": "1234"}}),
            Some("payerfsp"),
        )
        .await;
    let entered = expect(&s.payer, "PUT", &format!("/authorizations/{authorization}")).await;
    assert_eq!(entered.json["responseType"], "ENTERED");

    let transaction = new_id();
    s.payer
        .send(
            "GET",
            &format!("/transactions/{transaction}"),
            &[],
            &[("fspiop-destination", Some("payeefsp"))],
        )
        .await;
    expect(&s.payee, "GET", &format!("/transactions/{transaction}")).await;
    s.payee
        .send_json(
            "PUT",
            &format!("/transactions/{transaction}"),
            &json!({"transactionState": "COMPLETED"}),
            Some("payerfsp"),
        )
        .await;
    let completed = expect(&s.payer, "PUT", &format!("/transactions/{transaction}")).await;
    assert_eq!(completed.json["transactionState"], "COMPLETED");

    // Schema errors are synchronous and name the field.
    let (status, answer) = s
        .payer
        .send_json(
            "PUT",
            &format!("/transactions/{transaction}"),
            &json!({"transactionState": "SIDEWAYS"}),
            Some("payeefsp"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["errorInformation"]["errorCode"], "3100");
    assert!(answer["errorInformation"]["errorDescription"]
        .as_str()
        .unwrap_or("")
        .contains("transactionState"));
}

/// Bulk quotes go to the payee named in FSPIOP-Destination.
#[tokio::test]
async fn bulk_quotes_are_routed() {
    let s = scene(Backend::MySql).await;
    let bulk_id = new_id();
    let individual = |id: String| {
        json!({
            "quoteId": id,
            "transactionId": new_id(),
            "payee": party("payeefsp", "27713803912"),
            "amountType": "SEND",
            "amount": {"amount": "5", "currency": "USD"},
            "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"},
        })
    };
    let bulk = json!({
        "bulkQuoteId": bulk_id,
        "payer": party("payerfsp", "27713803911"),
        "individualQuotes": [individual(new_id()), individual(new_id())],
    });
    let (status, answer) = s
        .payer
        .send_json("POST", "/bulkQuotes", &bulk, Some("payeefsp"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let received = expect(&s.payee, "POST", "/bulkQuotes").await;
    assert_eq!(
        received.json["individualQuotes"].as_array().map(Vec::len),
        Some(2)
    );
    s.payee
        .send_json(
            "PUT",
            &format!("/bulkQuotes/{bulk_id}"),
            &json!({"expiration": "2030-01-01T00:00:00.000Z"}),
            Some("payerfsp"),
        )
        .await;
    expect(&s.payer, "PUT", &format!("/bulkQuotes/{bulk_id}")).await;
    // Without FSPIOP-Destination a bulk quote cannot be routed.
    let (status, answer) = s.payer.send_json("POST", "/bulkQuotes", &bulk, None).await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (400, json!("3102"))
    );
}

/// With quote persistence on, an identical resend is passed on again and a
/// changed one refused with 3106 (quote and answer); off, nothing is stored.
async fn quote_persistence(backend: Backend) {
    let s = Scene::start(
        backend,
        "0",
        &[("MOJASWITCH_QUOTES_PERSISTENCE_ENABLED", "true")],
    )
    .await;
    let quote_id = new_id();
    let body = quote_request(&quote_id, "payeefsp", "USD");
    let copies = |dfsp: &Dfsp, method: &str, path: &str| {
        dfsp.received()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    };
    for _ in 0..2 {
        let (status, _) = s
            .payer
            .send_json("POST", "/quotes", &body, Some("payeefsp"))
            .await;
        assert_eq!(status, 202);
    }
    let posted = |r: &Received| r.is("POST", "/quotes");
    assert_eq!(
        s.payee.wait_for_count(posted, 2, WAIT).await,
        2,
        "the resend reaches the payee again"
    );
    let mut changed = body.clone();
    changed["amount"]["amount"] = json!("26");
    s.payer
        .send_json("POST", "/quotes", &changed, Some("payeefsp"))
        .await;
    let refused = expect(&s.payer, "PUT", &format!("/quotes/{quote_id}/error")).await;
    assert_eq!(refused.json["errorInformation"]["errorCode"], "3106");
    assert_eq!(
        copies(&s.payee, "POST", "/quotes"),
        2,
        "the change is not passed on"
    );

    let response = json!({
        "transferAmount": {"amount": "25", "currency": "USD"},
        "expiration": "2030-01-01T00:00:00.000Z",
        "ilpPacket": "AYIBgQAAAAAAAASwNGxldmVsb25lLmRmc3AxLm1lci45T2RTOF81MDdqUUZERmZlakgyOVc4bXFmNEpLMHlGTFGCAUBQU0svMS4wCk5vbmNlOiB1SXlweUYzY3pYSXBFdzVVc05TYWh3CkVuY3J5cHRpb246IG5vbmUKUGF5bWVudC1JZDogMTMyMzZhM2ItOGZhOC00MTYzLTg0NDctNGMzZWQzZGE5OGE3CgpDb250ZW50LUxlbmd0aDogMTM1CkNvbnRlbnQtVHlwZTogYXBwbGljYXRpb24vanNvbgpTZW5kZXItSWRlbnRpZmllcjogOTI4MDYzOTEKCiJ7XCJmZWVcIjowLFwidHJhbnNmZXJDb2RlXCI6XCJpbnZvaWNlXCIsXCJkZWJpdE5hbWVcIjpcImFsaWNlIGNvb3BlclwiLFwiY3JlZGl0TmFtZVwiOlwibWVyIGNoYW50XCIsXCJkZWJpdElkZW50aWZpZXJcIjpcIjkyODA2MzkxXCJ9IgA",
        "condition": "GRzLaTP7DJ9t4P-a_BA0WA9wzzlsugf00-Tn6kESAfM",
    });
    let path = format!("/quotes/{quote_id}");
    s.payee
        .send_json("PUT", &path, &response, Some("payerfsp"))
        .await;
    expect(&s.payer, "PUT", &path).await;
    let mut other = response.clone();
    other["transferAmount"]["amount"] = json!("24");
    s.payee
        .send_json("PUT", &path, &other, Some("payerfsp"))
        .await;
    let refused = expect(&s.payee, "PUT", &format!("{path}/error")).await;
    assert_eq!(refused.json["errorInformation"]["errorCode"], "3106");
    assert_eq!(copies(&s.payer, "PUT", &path), 1);

    let stored = s.db.rows(&format!(
        "SELECT kind, source_fsp, destination_fsp FROM quote_message WHERE quote_id = '{quote_id}' ORDER BY kind"
    ));
    assert_eq!(
        stored,
        vec![
            vec!["REQUEST".to_string(), "payerfsp".into(), "payeefsp".into()],
            vec!["RESPONSE".to_string(), "payeefsp".into(), "payerfsp".into()],
        ]
    );

    // Off (the default): the same changed quote is simply routed.
    let plain = scene(backend).await;
    let quote_id = new_id();
    let body = quote_request(&quote_id, "payeefsp", "USD");
    let mut changed = body.clone();
    changed["amount"]["amount"] = json!("26");
    for b in [&body, &changed] {
        plain
            .payer
            .send_json("POST", "/quotes", b, Some("payeefsp"))
            .await;
    }
    assert_eq!(plain.payee.wait_for_count(posted, 2, WAIT).await, 2);
    assert!(plain
        .db
        .rows("SELECT quote_id FROM quote_message")
        .is_empty());
}

#[tokio::test]
async fn quote_persistence_sqlite() {
    quote_persistence(Backend::Sqlite).await;
}

#[tokio::test]
async fn quote_persistence_mariadb() {
    quote_persistence(Backend::MySql).await;
}
