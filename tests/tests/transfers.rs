//! FSPIOP transfers end to end: two simulated DFSPs (real HTTP servers)
//! move money through a real switch process, on SQLite and on MariaDB.
//! Each scenario is a request sequence in and the callbacks each party must
//! receive out (the notification matrix of the reference hub), and ends
//! with the ledger invariants.

use std::time::Duration;

use serde_json::{json, Value};
use switch_tests::dfsp::{Dfsp, Prepare, Received, Rule, Scene};
use switch_tests::{assert_ledger_ok, Backend, Switch};

const WAIT: Duration = Duration::from_secs(10);
/// How long a party must stay without a callback to count as "receives nothing".
const QUIET: Duration = Duration::from_millis(700);

async fn scene(backend: Backend, extra_env: &[(&str, &str)]) -> Scene {
    Scene::start(backend, "5000", extra_env).await
}

/// What the transfer scenarios read back.
trait Positions {
    async fn position(&self, name: &str) -> String;
    async fn finish(self);
}

impl Positions for Scene {
    async fn position(&self, name: &str) -> String {
        let (_, body) = self
            .switch
            .get(&format!("/participants/{name}/positions?currency=USD"))
            .await;
        body["value"].to_string()
    }

    async fn finish(self) {
        let Scene { db, switch, .. } = self;
        assert!(switch.stop().success());
        assert_ledger_ok(&db.url);
    }
}

/// A change made to a valid prepare body.
type BodyChange = Box<dyn Fn(&mut Value)>;
/// Header overrides: `None` removes a default header.
type Headers = Vec<(String, Option<String>)>;

/// Requests with an explicit header list (`None` removes a default header).
trait SendRaw {
    async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, Option<String>)>,
        body: Vec<u8>,
    ) -> (u16, Value);
}

impl SendRaw for Dfsp {
    async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, Option<String>)>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let overrides: Vec<(&str, Option<&str>)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        self.send(method, path, &body, &overrides).await
    }
}

/// The bytes `send_json` puts on the wire for a prepare.
fn raw(prepare: &Prepare) -> Vec<u8> {
    prepare.body.to_string().into_bytes()
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const SIGNATURE: &str = r#"{"signature":"abc","protectedHeader":"def"}"#;

/// Sends a prepare with a signature and tracing headers, as a real payer does.
async fn send_signed(dfsp: &Dfsp, prepare: &Prepare) -> (u16, Value) {
    let payee = prepare.body["payeeFsp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    dfsp.send(
        "POST",
        "/transfers",
        &raw(prepare),
        &[
            ("fspiop-destination", Some(payee.as_str())),
            ("fspiop-signature", Some(SIGNATURE)),
            ("traceparent", Some(TRACEPARENT)),
            ("tracestate", Some("mojaloop=1")),
        ],
    )
    .await
}

fn is_put(id: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.method == "PUT" && r.path == format!("/transfers/{id}")
}

fn is_error(id: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.method == "PUT" && r.path == format!("/transfers/{id}/error")
}

fn is_patch(id: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.method == "PATCH" && r.path == format!("/transfers/{id}")
}

fn is_post(id: &str) -> impl Fn(&Received) -> bool + '_ {
    move |r| r.method == "POST" && r.path == "/transfers" && r.json["transferId"] == id
}

/// Only what arrived at or after `t0` (the payee keeps its record: it needs
/// the prepare to address its fulfil).
fn since<'a>(
    t0: std::time::Instant,
    wanted: impl Fn(&Received) -> bool + 'a,
) -> impl Fn(&Received) -> bool + 'a {
    move |r| r.at >= t0 && wanted(r)
}

fn code(r: &Received) -> String {
    r.json["errorInformation"]["errorCode"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

async fn expect(dfsp: &Dfsp, what: &str, matches: impl Fn(&Received) -> bool) -> Received {
    match dfsp.wait_for(matches, WAIT).await {
        Some(received) => received,
        None => panic!(
            "{} never received {what}; it received {:#?}",
            dfsp.name(),
            dfsp.received()
        ),
    }
}

async fn expect_nothing(dfsp: &Dfsp, what: &str, matches: impl Fn(&Received) -> bool) {
    if let Some(received) = dfsp.wait_for(matches, QUIET).await {
        panic!(
            "{} should not receive {what}, got {received:#?}",
            dfsp.name()
        );
    }
}

/// Prepare -> payee fulfils COMMITTED: payee gets the prepare byte for byte,
/// payer gets the payee's PUT, payee gets the confirmation copy.
async fn commit_flow(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Fulfil);
    let prepare = s
        .payer
        .prepare("payeefsp", "100.5", "USD", Duration::from_secs(30));
    let id = prepare.transfer_id.clone();
    let (status, body) = send_signed(&s.payer, &prepare).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(s.position("payerfsp").await, "100.5", "reserved before 202");

    let forwarded = expect(&s.payee, "the prepare", is_post(&id)).await;
    assert_eq!(
        forwarded.body,
        raw(&prepare),
        "prepare reaches the payee byte for byte"
    );
    assert_eq!(
        forwarded.headers.get("fspiop-source").map(String::as_str),
        Some("payerfsp")
    );
    assert_eq!(
        forwarded
            .headers
            .get("fspiop-destination")
            .map(String::as_str),
        Some("payeefsp")
    );
    assert_eq!(
        forwarded.header("fspiop-signature"),
        Some(SIGNATURE),
        "signature passes through"
    );
    assert_eq!(forwarded.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(forwarded.header("tracestate"), Some("mojaloop=1"));

    let committed = expect(&s.payer, "the commit", is_put(&id)).await;
    assert_eq!(committed.json["transferState"], "COMMITTED");
    assert_eq!(committed.json["fulfilment"], json!(prepare.fulfilment));
    assert_eq!(
        committed.headers.get("fspiop-source").map(String::as_str),
        Some("payeefsp")
    );
    let copy = expect(&s.payee, "the confirmation copy", is_put(&id)).await;
    assert_eq!(copy.json["transferState"], "COMMITTED");
    expect_nothing(&s.payer, "an error", is_error(&id)).await;
    assert_eq!(s.position("payerfsp").await, "100.5");
    assert_eq!(s.position("payeefsp").await, "-100.5");
    // The operator API decodes the transaction carried in the ILP packet.
    let (status, transaction) = s.switch.get(&format!("/transactions/{id}")).await;
    assert_eq!(status, 200, "{transaction}");
    assert_eq!(
        transaction["amount"],
        json!({"amount": "100.5", "currency": "USD"})
    );
    assert_eq!(transaction["payee"]["partyIdInfo"]["fspId"], "payeefsp");

    // The same with an ILP v4 packet.
    let v4 = s
        .payer
        .prepare_with_ilp("payeefsp", "0.5", "USD", Duration::from_secs(30), 4);
    assert_eq!(s.payer.send_prepare(&v4).await.0, 202);
    let committed_v4 = expect(&s.payer, "the v4 commit", is_put(&v4.transfer_id)).await;
    assert_eq!(committed_v4.json["transferState"], "COMMITTED");
    let (status, transaction) = s
        .switch
        .get(&format!("/transactions/{}", v4.transfer_id))
        .await;
    assert_eq!(
        (status, transaction["amount"]["amount"].clone()),
        (200, json!("0.5"))
    );
    assert_eq!(s.position("payeefsp").await, "-101");

    // GET from payer and payee: the hub answers from its own record.
    s.payer.clear();
    let (status, _) = s.payer.get_transfer(&id).await;
    assert_eq!(status, 202);
    let answer = expect(&s.payer, "the GET answer", is_put(&id)).await;
    assert_eq!(answer.json["transferState"], "COMMITTED");
    assert_eq!(answer.json["fulfilment"], json!(prepare.fulfilment));
    assert_eq!(
        answer.headers.get("fspiop-source").map(String::as_str),
        Some("Hub")
    );

    // A duplicate prepare of a finished transfer: the payer gets the state again.
    s.payer.clear();
    let (status, _) = s.payer.send_prepare(&prepare).await;
    assert_eq!(status, 202);
    let again = expect(&s.payer, "the current state", is_put(&id)).await;
    assert_eq!(again.json["transferState"], "COMMITTED");
    // A duplicate fulfil: the payee gets the current state, nothing moves twice.
    let fulfil = s
        .payee
        .sent()
        .into_iter()
        .find(|sent| sent.method == "PUT" && sent.url.ends_with(&format!("/transfers/{id}")))
        .expect("the payee's fulfil");
    let t0 = std::time::Instant::now();
    let (status, _) = s
        .payee
        .send_json(
            "PUT",
            &format!("/transfers/{id}"),
            &fulfil.body,
            Some("payerfsp"),
        )
        .await;
    assert_eq!(status, 200);
    let state = expect(&s.payee, "the current state", since(t0, is_put(&id))).await;
    assert_eq!(state.json["transferState"], "COMMITTED");
    expect_nothing(&s.payee, "an error", since(t0, is_error(&id))).await;
    assert_eq!(s.position("payeefsp").await, "-101");
    s.finish().await;
}

#[tokio::test]
async fn commit_flow_sqlite() {
    commit_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn commit_flow_mariadb() {
    commit_flow(Backend::MySql).await;
}

/// The batch writer and the transfer loader keep their MariaDB connections
/// between uses (no ping per use). When the server drops every connection,
/// the next prepares still commit, without an error to anyone: the writer
/// writes the failed batch again on a fresh connection, and the loader asks
/// again. (Found by killing the connections between transfers.)
#[tokio::test]
async fn transfers_commit_after_the_database_drops_every_connection() {
    let s = scene(Backend::MySql, &[]).await;
    s.payee.set_rule(Rule::Fulfil);
    let mut ids = Vec::new();
    for round in 0..4 {
        if round > 0 {
            let killed = s.db.kill_connections();
            assert!(
                killed >= 2,
                "the writer's and the loader's at least: {killed}"
            );
        }
        for _ in 0..3 {
            let prepare = s
                .payer
                .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
            let (status, body) = s.payer.send_prepare(&prepare).await;
            assert_eq!(status, 202, "round {round}: {body}");
            let committed = expect(&s.payer, "the commit", is_put(&prepare.transfer_id)).await;
            assert_eq!(
                committed.json["transferState"], "COMMITTED",
                "round {round}"
            );
            ids.push(prepare.transfer_id);
        }
    }
    for id in &ids {
        expect_nothing(&s.payer, "an error", is_error(id)).await;
    }
    let committed = s.db.rows("SELECT COUNT(*) FROM transfer_fulfilment");
    assert_eq!(committed[0][0], ids.len().to_string());
    s.finish().await;
}

/// A second connection to the SQLite database holding its write lock
/// (`ROLLBACK` on it frees the lock), as an operator's `sqlite3` shell can.
async fn write_lock_held(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut holder = sqlx::AnyConnection::connect(url)
        .await
        .expect("a second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("take the write lock");
    holder
}

/// Someone else holds the SQLite write lock (an operator's `sqlite3` shell,
/// a backup) for longer than the switch waits for it (5 s). A prepare that
/// needs it is answered 503 with 2003 (retry later); nothing of it is
/// recorded and nobody gets a callback; the same prepare sent again once the
/// lock is free commits. (Before, the batch writer waited out the lock a
/// second time on a fresh connection and then answered 2001.)
#[tokio::test]
async fn a_prepare_that_finds_the_database_locked_is_answered_2003_and_can_be_sent_again() {
    let s = scene(Backend::Sqlite, &[]).await;
    s.payee.set_rule(Rule::Fulfil);
    let first = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(60));
    assert_eq!(s.payer.send_prepare(&first).await.0, 202);
    expect(&s.payer, "the first commit", is_put(&first.transfer_id)).await;

    let mut holder = write_lock_held(&s.db.url).await;
    let prepare = s
        .payer
        .prepare("payeefsp", "2", "USD", Duration::from_secs(60));
    let id = prepare.transfer_id.clone();
    let (status, body) = s.payer.send_prepare(&prepare).await;
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("free the write lock");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorInformation"]["errorCode"], "2003", "{body}");
    let recorded = s.db.rows(&format!(
        "SELECT COUNT(*) FROM transfer WHERE transfer_id = '{id}'"
    ));
    assert_eq!(
        recorded[0][0], "0",
        "nothing of the refused prepare is kept"
    );
    expect_nothing(&s.payee, "the prepare", is_post(&id)).await;
    expect_nothing(&s.payer, "a callback", |r| r.path.contains(id.as_str())).await;
    assert_eq!(s.position("payerfsp").await, "1", "no reservation is held");

    let (status, body) = s.payer.send_prepare(&prepare).await;
    assert_eq!(status, 202, "{body}");
    let committed = expect(&s.payer, "the commit", is_put(&id)).await;
    assert_eq!(committed.json["transferState"], "COMMITTED");
    assert_eq!(s.position("payerfsp").await, "3");
    s.finish().await;
}

/// A switch that is behind refuses new prepares at once: while 16
/// prepares being answered have each waited longer than
/// `overload_prepare_wait_ms` (here they queue behind a write lock held
/// elsewhere), a new prepare is answered 503 with 2003 and nothing of it is
/// recorded; so are a bulk prepare, and a lookup and a quote, which would
/// start new transactions. The queued ones are still answered and commit
/// once the lock is free, and the refused prepare sent again then commits.
#[tokio::test]
async fn a_switch_that_is_behind_refuses_new_prepares_until_its_queue_drains() {
    let s = scene(
        Backend::Sqlite,
        &[("MOJASWITCH_OVERLOAD_PREPARE_WAIT_MS", "200")],
    )
    .await;
    s.payee.set_rule(Rule::Fulfil);
    let mut holder = write_lock_held(&s.db.url).await;
    let queued: Vec<_> = (0..20)
        .map(|_| {
            s.payer
                .prepare("payeefsp", "1", "USD", Duration::from_secs(60))
        })
        .collect();
    let answers = futures::future::join_all(queued.iter().map(|p| s.payer.send_prepare(p)));
    let late = s
        .payer
        .prepare("payeefsp", "7", "USD", Duration::from_secs(60));
    let line = s
        .payer
        .prepare("payeefsp", "3", "USD", Duration::from_secs(60));
    let bulk_id = switch_tests::new_id();
    let bulk_body = switch_tests::dfsp::bulk_prepare_body(&bulk_id, std::slice::from_ref(&line));
    let refused = async {
        // The 20 wait for the lock; 0.5 s later the oldest 16 are over 200 ms.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = reqwest::get(s.switch.operator("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("\nmojaswitch_prepares_waiting 20\n"),
            "{metrics}"
        );
        let refused = s.payer.send_prepare(&late).await;
        // A lookup starts a new transaction: refused too (at half the bound).
        let lookup = s
            .payer
            .send("GET", "/parties/MSISDN/27713803912", &[], &[])
            .await;
        // So is a quote, and a bulk is refused like a prepare.
        let quote = s
            .payer
            .send_json(
                "POST",
                "/quotes",
                &switch_tests::dfsp::quote_request(&switch_tests::new_id(), "payeefsp", "USD"),
                Some("payeefsp"),
            )
            .await;
        let bulk = s
            .payer
            .send_json("POST", "/bulkTransfers", &bulk_body, Some("payeefsp"))
            .await;
        sqlx::query("ROLLBACK")
            .execute(&mut holder)
            .await
            .expect("free the write lock");
        (refused, [lookup, quote, bulk])
    };
    let (answers, ((status, body), new_transactions)) = tokio::join!(answers, refused);
    for (status, body) in &new_transactions {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["errorInformation"]["errorCode"], "2003", "{body}");
    }
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorInformation"]["errorCode"], "2003", "{body}");
    let description = body["errorInformation"]["errorDescription"].to_string();
    assert!(description.contains("behind"), "{body}");
    for (status, body) in &answers {
        assert_eq!(*status, 202, "a queued prepare is still answered: {body}");
    }
    for prepare in &queued {
        let put = expect(&s.payer, "a queued commit", is_put(&prepare.transfer_id)).await;
        assert_eq!(put.json["transferState"], "COMMITTED");
    }
    let id = late.transfer_id.clone();
    let recorded = s.db.rows(&format!(
        "SELECT COUNT(*) FROM transfer WHERE transfer_id = '{id}'"
    ));
    assert_eq!(
        recorded[0][0], "0",
        "nothing of the refused prepare is kept"
    );
    let recorded = s.db.rows(&format!(
        "SELECT (SELECT COUNT(*) FROM bulk_transfer WHERE bulk_transfer_id = '{bulk_id}') \
         + (SELECT COUNT(*) FROM transfer WHERE transfer_id = '{}')",
        line.transfer_id
    ));
    assert_eq!(recorded[0][0], "0", "nothing of the refused bulk is kept");
    expect_nothing(&s.payee, "the refused prepare", is_post(&id)).await;
    assert_eq!(s.position("payerfsp").await, "20");

    let (status, body) = s.payer.send_prepare(&late).await;
    assert_eq!(status, 202, "once the queue drained: {body}");
    let committed = expect(&s.payer, "the late commit", is_put(&id)).await;
    assert_eq!(committed.json["transferState"], "COMMITTED");
    assert_eq!(s.position("payerfsp").await, "27");
    s.finish().await;
}

/// The payee answers RESERVED (v1.1 commit notification): commit, the payer
/// gets the hub's PUT, the payee a PATCH with the final state.
async fn patch_flow(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::FulfilReserved);
    let prepare = s
        .payer
        .prepare("payeefsp", "10", "USD", Duration::from_secs(30));
    let id = prepare.transfer_id.clone();
    assert_eq!(s.payer.send_prepare(&prepare).await.0, 202);
    let put = expect(&s.payer, "the commit", is_put(&id)).await;
    assert_eq!(put.json["transferState"], "COMMITTED");
    assert_eq!(
        put.headers.get("fspiop-source").map(String::as_str),
        Some("Hub")
    );
    let patch = expect(&s.payee, "the PATCH", is_patch(&id)).await;
    assert_eq!(patch.json["transferState"], "COMMITTED");
    assert!(patch.json["completedTimestamp"].is_string());
    assert!(patch.json.get("fulfilment").is_none());
    assert_eq!(s.position("payeefsp").await, "-10");
    s.finish().await;
}

#[tokio::test]
async fn patch_flow_sqlite() {
    patch_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn patch_flow_mariadb() {
    patch_flow(Backend::MySql).await;
}

/// The payee rejects: the reservation is given back, the payer gets the
/// payee's own error unchanged.
async fn reject_flow(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Reject("5100"));
    let prepare = s
        .payer
        .prepare("payeefsp", "42", "USD", Duration::from_secs(30));
    let id = prepare.transfer_id.clone();
    assert_eq!(s.payer.send_prepare(&prepare).await.0, 202);
    let error = expect(&s.payer, "the payee's error", is_error(&id)).await;
    assert_eq!(code(&error), "5100");
    assert_eq!(
        error.headers.get("fspiop-source").map(String::as_str),
        Some("payeefsp")
    );
    expect_nothing(&s.payer, "a commit", is_put(&id)).await;
    assert_eq!(s.position("payerfsp").await, "0");
    // A second, different error from the payee is refused with 3106.
    let t0 = std::time::Instant::now();
    s.payee.send_error(&id, "5101", "changed my mind").await;
    let modified = expect(&s.payee, "3106", since(t0, is_error(&id))).await;
    assert_eq!(code(&modified), "3106");
    // A fulfil after the abort is refused and moves nothing.
    let t0 = std::time::Instant::now();
    s.payee
        .send_fulfil(&id, &prepare.fulfilment, "COMMITTED")
        .await;
    let refused = expect(&s.payee, "a refusal", since(t0, is_error(&id))).await;
    assert!(
        refused.json["errorInformation"]["errorDescription"]
            .as_str()
            .unwrap_or("")
            .contains("not RESERVED"),
        "{:?}",
        refused.json
    );
    assert_eq!(code(&refused), "3100");
    assert_eq!(s.position("payeefsp").await, "0");
    s.finish().await;
}

#[tokio::test]
async fn reject_flow_sqlite() {
    reject_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn reject_flow_mariadb() {
    reject_flow(Backend::MySql).await;
}

/// A wrong fulfilment aborts: payer and payee both get 3100; with RESERVED
/// the payee also gets PATCH ABORTED.
async fn wrong_fulfilment(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::WrongFulfilment);
    let prepare = s
        .payer
        .prepare("payeefsp", "7", "USD", Duration::from_secs(30));
    let id = prepare.transfer_id.clone();
    assert_eq!(s.payer.send_prepare(&prepare).await.0, 202);
    assert_eq!(code(&expect(&s.payer, "3100", is_error(&id)).await), "3100");
    assert_eq!(code(&expect(&s.payee, "3100", is_error(&id)).await), "3100");
    assert_eq!(s.position("payerfsp").await, "0");
    assert_eq!(s.position("payeefsp").await, "0");

    // Same with RESERVED: the payee is told ABORTED by PATCH.
    s.payee.set_rule(Rule::Silent);
    let second = s
        .payer
        .prepare("payeefsp", "8", "USD", Duration::from_secs(30));
    let id2 = second.transfer_id.clone();
    assert_eq!(s.payer.send_prepare(&second).await.0, 202);
    expect(&s.payee, "the prepare", is_post(&id2)).await;
    s.payee
        .send_fulfil(
            &id2,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "RESERVED",
        )
        .await;
    let patch = expect(&s.payee, "PATCH ABORTED", is_patch(&id2)).await;
    assert_eq!(patch.json["transferState"], "ABORTED");
    assert_eq!(
        code(&expect(&s.payer, "3100", is_error(&id2)).await),
        "3100"
    );
    s.finish().await;
}

#[tokio::test]
async fn wrong_fulfilment_sqlite() {
    wrong_fulfilment(Backend::Sqlite).await;
}

#[tokio::test]
async fn wrong_fulfilment_mariadb() {
    wrong_fulfilment(Backend::MySql).await;
}

/// Timeouts: a reserved transfer expires within about a second of its
/// expiration (payer and payee get 3303, the reservation comes back); a late
/// fulfil is refused with 3303.
async fn timeouts(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Silent);
    let prepare = s
        .payer
        .prepare("payeefsp", "55", "USD", Duration::from_millis(1500));
    let id = prepare.transfer_id.clone();
    let sent_at = std::time::Instant::now();
    assert_eq!(s.payer.send_prepare(&prepare).await.0, 202);
    expect(&s.payee, "the prepare", is_post(&id)).await;
    assert_eq!(s.position("payerfsp").await, "55");
    let payer_error = expect(&s.payer, "3303", is_error(&id)).await;
    assert_eq!(code(&payer_error), "3303");
    let payee_error = expect(&s.payee, "3303", is_error(&id)).await;
    assert_eq!(code(&payee_error), "3303");
    let waited = payer_error.at.duration_since(sent_at);
    assert!(
        waited < Duration::from_millis(1500 + 2000),
        "expiry acted within about a second: {waited:?}"
    );
    assert_eq!(s.position("payerfsp").await, "0");
    let t0 = std::time::Instant::now();
    s.payee
        .send_fulfil(&id, &prepare.fulfilment, "COMMITTED")
        .await;
    let late = expect(&s.payee, "3303", since(t0, is_error(&id))).await;
    assert_eq!(code(&late), "3303", "{:?}", late.json);
    assert_eq!(s.position("payeefsp").await, "0");

    // GET of an expired transfer answers ABORTED, not an error.
    s.payer.clear();
    s.payer.get_transfer(&id).await;
    let state = expect(&s.payer, "the state", is_put(&id)).await;
    assert_eq!(state.json["transferState"], "ABORTED");

    // A prepare that is already expired is invalid (3100).
    let stale = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_millis(0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.payer.send_prepare(&stale).await.0, 202);
    let error = expect(&s.payer, "3100", is_error(&stale.transfer_id)).await;
    assert_eq!(code(&error), "3100");
    s.finish().await;
}

#[tokio::test]
async fn timeouts_sqlite() {
    timeouts(Backend::Sqlite).await;
}

#[tokio::test]
async fn timeouts_mariadb() {
    timeouts(Backend::MySql).await;
}

/// Prepare validation (section 4.2) and the position checks: every refusal
/// is recorded and answered with PUT /error to the payer; nothing moves.
async fn prepare_refusals(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Silent);
    // Liquidity cover (5000) is checked before the net debit cap (1000).
    let over_cap = s
        .payer
        .prepare("payeefsp", "1000.0001", "USD", Duration::from_secs(30));
    assert_eq!(s.payer.send_prepare(&over_cap).await.0, 202);
    assert_eq!(
        code(&expect(&s.payer, "4200", is_error(&over_cap.transfer_id)).await),
        "4200"
    );
    s.switch
        .put(
            "/participants/payerfsp/limits",
            json!({"currency": "USD", "limit": {"type": "NET_DEBIT_CAP", "value": 100000, "alarmPercentage": 10}}),
        )
        .await;
    let over_liquidity = s
        .payer
        .prepare("payeefsp", "5000.0001", "USD", Duration::from_secs(30));
    assert_eq!(s.payer.send_prepare(&over_liquidity).await.0, 202);
    assert_eq!(
        code(&expect(&s.payer, "4001", is_error(&over_liquidity.transfer_id)).await),
        "4001"
    );

    let cases: Vec<(&str, BodyChange)> = vec![
        (
            "unknown payee",
            Box::new(|b: &mut Value| b["payeeFsp"] = json!("nobody")),
        ),
        (
            "payer = payee",
            Box::new(|b: &mut Value| b["payeeFsp"] = json!("payerfsp")),
        ),
        (
            "unknown currency account",
            Box::new(|b: &mut Value| b["amount"]["currency"] = json!("EUR")),
        ),
        (
            "payer field is not the source",
            Box::new(|b: &mut Value| b["payerFsp"] = json!("payeefsp")),
        ),
    ];
    for (what, change) in cases {
        let mut prepare = s
            .payer
            .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
        change(&mut prepare.body);
        let (status, body) = s.payer.send_prepare(&prepare).await;
        assert_eq!(status, 202, "{what}: {body}");
        let error = expect(&s.payer, what, is_error(&prepare.transfer_id)).await;
        assert_eq!(code(&error), "3100", "{what}: {:?}", error.json);
        assert!(error.json["errorInformation"]["errorDescription"].is_string());
        expect_nothing(&s.payee, "a refused prepare", is_post(&prepare.transfer_id)).await;
    }
    // An inactive payee is refused.
    s.switch
        .put("/participants/payeefsp", json!({"isActive": false}))
        .await;
    let inactive = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    s.payer.send_prepare(&inactive).await;
    assert_eq!(
        code(&expect(&s.payer, "3100", is_error(&inactive.transfer_id)).await),
        "3100"
    );
    s.switch
        .put("/participants/payeefsp", json!({"isActive": true}))
        .await;
    assert_eq!(s.position("payerfsp").await, "0");

    // A modified duplicate prepare: 3106.
    let original = s
        .payer
        .prepare("payeefsp", "3", "USD", Duration::from_secs(30));
    s.payer.send_prepare(&original).await;
    expect(&s.payee, "the prepare", is_post(&original.transfer_id)).await;
    let mut modified = original.clone();
    modified.body["amount"]["amount"] = json!("4");
    s.payer.send_prepare(&modified).await;
    assert_eq!(
        code(&expect(&s.payer, "3106", is_error(&original.transfer_id)).await),
        "3106"
    );
    // A GET by a third party: 3000; an unknown id: 3208.
    let third = Dfsp::start("thirdfsp");
    third.set_switch(&s.switch.fspiop(""));
    s.switch
        .post(
            "/participants",
            json!({"name": "thirdfsp", "currency": "USD"}),
        )
        .await;
    third.register(&s.switch).await;
    third.get_transfer(&original.transfer_id).await;
    assert_eq!(
        code(&expect(&third, "3000", is_error(&original.transfer_id)).await),
        "3000"
    );
    let unknown = uuid_like();
    s.payer.get_transfer(&unknown).await;
    assert_eq!(
        code(&expect(&s.payer, "3208", is_error(&unknown)).await),
        "3208"
    );
    // Only the payee may fulfil: a third party's fulfil changes nothing.
    third.clear();
    let stolen = json!({"transferState": "COMMITTED", "fulfilment": original.fulfilment, "completedTimestamp": switch_tests::dfsp::iso_now()});
    let (status, _) = third
        .send_json(
            "PUT",
            &format!("/transfers/{}", original.transfer_id),
            &stolen,
            Some("payerfsp"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        code(&expect(&third, "3100", is_error(&original.transfer_id)).await),
        "3100"
    );
    assert_eq!(s.position("payerfsp").await, "3");
    s.finish().await;
}

fn uuid_like() -> String {
    switch_tests::new_id()
}

#[tokio::test]
async fn prepare_refusals_sqlite() {
    prepare_refusals(Backend::Sqlite).await;
}

#[tokio::test]
async fn prepare_refusals_mariadb() {
    prepare_refusals(Backend::MySql).await;
}

/// Synchronous refusals: headers and schema. Nothing is recorded.
async fn header_and_schema_errors(backend: Backend) {
    let s = scene(backend, &[]).await;
    let prepare = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    let body = raw(&prepare);
    let good = |extra: &[(&str, Option<&str>)]| {
        let mut headers: Vec<(String, Option<String>)> = vec![
            (
                "content-type".into(),
                Some("application/vnd.interoperability.transfers+json;version=1.1".into()),
            ),
            (
                "accept".into(),
                Some("application/vnd.interoperability.transfers+json;version=1".into()),
            ),
            ("date".into(), Some("Sat, 28 Nov 2026 10:00:00 GMT".into())),
            ("fspiop-source".into(), Some("payerfsp".into())),
            ("fspiop-destination".into(), Some("payeefsp".into())),
        ];
        for (name, value) in extra {
            headers.retain(|(n, _)| n != name);
            headers.push((name.to_string(), value.map(str::to_string)));
        }
        headers
    };
    let cases: Vec<(Headers, Vec<u8>, u16, &str)> = vec![
        (good(&[("content-type", None)]), body.clone(), 400, "3102"),
        (
            good(&[("content-type", Some("application/json"))]),
            body.clone(),
            400,
            "3101",
        ),
        (
            good(&[(
                "content-type",
                Some("application/vnd.interoperability.transfers+json;version=3.0"),
            )]),
            body.clone(),
            406,
            "3001",
        ),
        (good(&[("accept", None)]), body.clone(), 400, "3102"),
        (good(&[("date", None)]), body.clone(), 400, "3102"),
        (
            good(&[("date", Some("yesterday"))]),
            body.clone(),
            400,
            "3101",
        ),
        (good(&[("fspiop-source", None)]), body.clone(), 400, "3102"),
        (good(&[]), b"{not json".to_vec(), 400, "3101"),
        (good(&[]), br#"{"transferId": 5}"#.to_vec(), 400, "3102"),
        (good(&[]), vec![0xff, 0xfe, 0xfd], 400, "3101"),
    ];
    for (headers, body, want_status, want_code) in cases {
        let (status, answer) = s
            .payer
            .send_raw("POST", "/transfers", headers.clone(), body)
            .await;
        assert_eq!(
            (
                status,
                answer["errorInformation"]["errorCode"]
                    .as_str()
                    .unwrap_or("none")
            ),
            (want_status, want_code),
            "{headers:?} -> {answer}"
        );
    }
    let (status, answer) = s
        .payer
        .send_raw(
            "POST",
            "/transfers",
            good(&[(
                "content-type",
                Some("application/vnd.interoperability.transfers+json;version=3.0"),
            )]),
            body.clone(),
        )
        .await;
    assert_eq!(status, 406);
    assert!(
        answer["errorInformation"]["extensionList"]["extension"].is_array(),
        "{answer}"
    );
    // Wrong amount format names the field.
    let mut bad = prepare.body.clone();
    bad["amount"]["amount"] = json!("1.23456");
    let (status, answer) = s
        .payer
        .send_raw(
            "POST",
            "/transfers",
            good(&[]),
            serde_json::to_vec(&bad).expect("json"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["errorInformation"]["errorCode"], "3100");
    assert!(answer["errorInformation"]["errorDescription"]
        .as_str()
        .unwrap_or("")
        .contains("amount"));
    // Unknown path and wrong method.
    let (status, answer) = s
        .payer
        .send_raw("GET", "/nothing/here", good(&[]), Vec::new())
        .await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (404, json!("3002"))
    );
    let (status, answer) = s
        .payer
        .send_raw("DELETE", "/transfers", good(&[]), Vec::new())
        .await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (405, json!("3000"))
    );
    // A body over the limit.
    let huge = vec![b' '; 6 * 1024 * 1024];
    let (status, answer) = s
        .payer
        .send_raw("POST", "/transfers", good(&[]), huge)
        .await;
    assert_eq!(
        (status, answer["errorInformation"]["errorCode"].clone()),
        (400, json!("3104"))
    );
    // ULID ids and extra fields are accepted on v1.1.
    let mut ulid = s
        .payer
        .prepare("payeefsp", "2", "USD", Duration::from_secs(30));
    ulid.transfer_id = "01HZX3Y5G6Q7R8S9T0V1W2X3Y4".into();
    ulid.body["transferId"] = json!(ulid.transfer_id);
    ulid.body["somethingExtra"] = json!({"x": 1});
    s.payee.set_rule(Rule::Fulfil);
    assert_eq!(s.payer.send_prepare(&ulid).await.0, 202);
    expect(&s.payer, "the commit", is_put(&ulid.transfer_id)).await;
    assert_eq!(s.position("payerfsp").await, "2");
    s.finish().await;
}

#[tokio::test]
async fn header_and_schema_errors_sqlite() {
    header_and_schema_errors(Backend::Sqlite).await;
}

#[tokio::test]
async fn header_and_schema_errors_mariadb() {
    header_and_schema_errors(Backend::MySql).await;
}

/// 50 concurrent prepares race one payer's net debit cap: exactly as many
/// as fit are reserved, the rest get 4200, the cap is never exceeded.
async fn net_debit_cap_race(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Silent);
    let prepares: Vec<_> = (0..50)
        .map(|_| {
            s.payer
                .prepare("payeefsp", "30", "USD", Duration::from_secs(60))
        })
        .collect();
    let sends = prepares.iter().map(|p| s.payer.send_prepare(p));
    for (status, body) in futures::future::join_all(sends).await {
        assert_eq!(status, 202, "{body}");
    }
    // 1000 / 30: 33 fit and reach the payee; the other 17 are refused with 4200.
    let count = |dfsp: &Dfsp, wanted: &dyn Fn(&Received) -> bool| {
        dfsp.received().iter().filter(|r| wanted(r)).count()
    };
    let is_any_post = |r: &Received| r.method == "POST" && r.path == "/transfers";
    let is_any_error = |r: &Received| r.path.ends_with("/error");
    for _ in 0..100 {
        if count(&s.payee, &is_any_post) + count(&s.payer, &is_any_error) >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&s.payee, &is_any_post), 33);
    let errors: Vec<Received> = s
        .payer
        .received()
        .into_iter()
        .filter(|r| is_any_error(r))
        .collect();
    assert_eq!(errors.len(), 17, "{errors:#?}");
    assert!(errors.iter().all(|e| code(e) == "4200"), "{errors:#?}");
    assert_eq!(s.position("payerfsp").await, "990");
    s.finish().await;
}

#[tokio::test]
async fn net_debit_cap_race_sqlite() {
    net_debit_cap_race(Backend::Sqlite).await;
}

#[tokio::test]
async fn net_debit_cap_race_mariadb() {
    net_debit_cap_race(Backend::MySql).await;
}

/// Bad input never panics, never answers 5xx and never moves a position:
/// random bytes, truncated and mutated bodies, wrong types, invalid UTF-8,
/// missing headers, on every transfer route.
async fn bad_input(backend: Backend) {
    let s = scene(backend, &[]).await;
    let prepare = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    let valid = raw(&prepare);
    let headers = vec![
        (
            "content-type".to_string(),
            Some("application/vnd.interoperability.transfers+json;version=1.1".to_string()),
        ),
        (
            "accept".to_string(),
            Some("application/vnd.interoperability.transfers+json;version=1".to_string()),
        ),
        (
            "date".to_string(),
            Some("Sat, 28 Nov 2026 10:00:00 GMT".to_string()),
        ),
        ("fspiop-source".to_string(), Some("payerfsp".to_string())),
        (
            "fspiop-destination".to_string(),
            Some("payeefsp".to_string()),
        ),
    ];
    // A small deterministic generator: the same inputs on every run.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        br#"{"transferId": []}"#.to_vec(),
        br#"{"amount": {"amount": 1, "currency": 2}}"#.to_vec(),
        vec![0xc3, 0x28, 0xa0, 0xa1],
    ];
    for cut in (0..valid.len()).step_by(valid.len() / 12 + 1) {
        bodies.push(valid[..cut].to_vec());
    }
    for _ in 0..40 {
        let mut mutated = valid.clone();
        for _ in 0..3 {
            let at = (next() as usize) % mutated.len();
            mutated[at] = (next() & 0xff) as u8;
        }
        bodies.push(mutated);
        let length = (next() % 300) as usize;
        bodies.push((0..length).map(|_| (next() & 0xff) as u8).collect());
    }
    let id = prepare.transfer_id.clone();
    let routes = [
        ("POST", "/transfers".to_string()),
        ("PUT", format!("/transfers/{id}")),
        ("PUT", format!("/transfers/{id}/error")),
    ];
    for body in &bodies {
        for (method, path) in &routes {
            let (status, answer) = s
                .payer
                .send_raw(method, path, headers.clone(), body.clone())
                .await;
            assert!(
                (200..500).contains(&status),
                "{method} {path} {body:?} -> {status} {answer}"
            );
        }
    }
    let mut missing = headers.clone();
    missing.retain(|(name, _)| name != "fspiop-source");
    missing.push(("fspiop-source".to_string(), None));
    let (status, _) = s
        .payer
        .send_raw("POST", "/transfers", missing, valid.clone())
        .await;
    assert_eq!(status, 400);
    for path in [
        "/transfers/%00",
        "/transfers/..%2f..%2f",
        "/transfers/{{transferId}}",
    ] {
        let (status, _) = s
            .payer
            .send_raw("GET", path, headers.clone(), Vec::new())
            .await;
        assert!((400..500).contains(&status), "{path} -> {status}");
    }
    assert_eq!(s.position("payerfsp").await, "0");
    assert_eq!(s.position("payeefsp").await, "0");
    s.finish().await;
}

#[tokio::test]
async fn bad_input_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_input_mariadb() {
    bad_input(Backend::MySql).await;
}

const LATEST_STATES: &str = "SELECT t.transfer_id, s.state FROM transfer t JOIN transfer_state_change s ON s.transfer_seq = t.transfer_seq \
     WHERE s.transfer_state_change_id = (SELECT MAX(x.transfer_state_change_id) FROM transfer_state_change x WHERE x.transfer_seq = t.transfer_seq)";

/// kill -9 in the middle of traffic, then restart on the same database:
/// every transfer ends COMMITTED, ABORTED or expired, positions equal their
/// histories, and the ledger check passes.
async fn crash_in_traffic(backend: Backend) {
    let s = scene(backend, &[]).await;
    s.payee.set_rule(Rule::Fulfil);
    let Scene {
        db,
        switch,
        payer,
        payee,
    } = s;
    let payer = std::sync::Arc::new(payer);
    let mut sent = Vec::new();
    let mut in_flight = Vec::new();
    for round in 0..120 {
        let prepare = payer.prepare("payeefsp", "1", "USD", Duration::from_secs(3));
        sent.push(prepare.transfer_id.clone());
        let payer = payer.clone();
        in_flight.push(tokio::spawn(
            async move { payer.send_prepare(&prepare).await },
        ));
        if round == 60 {
            // Let part of the traffic land before the crash.
            for _ in 0..100 {
                if db.rows(LATEST_STATES).len() >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    switch.kill();
    for task in in_flight {
        let _ = task.await;
    }
    let switch = Switch::start(&db, &[]).await;
    payer.set_switch(&switch.fspiop(""));
    payee.set_switch(&switch.fspiop(""));
    // Wait past every expiration: nothing may stay in flight.
    let finals = [
        "COMMITTED",
        "ABORTED_REJECTED",
        "ABORTED_ERROR",
        "EXPIRED_PREPARED",
        "EXPIRED_RESERVED",
        "INVALID",
    ];
    let mut unfinished = Vec::new();
    for _ in 0..100 {
        unfinished = db
            .rows(LATEST_STATES)
            .into_iter()
            .filter(|row| !finals.contains(&row[1].as_str()))
            .collect();
        if unfinished.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unfinished.is_empty(),
        "still in flight after restart: {unfinished:?}"
    );
    let recorded = db.rows(LATEST_STATES).len();
    assert!(
        recorded > 0 && recorded <= sent.len(),
        "{recorded} of {} recorded",
        sent.len()
    );
    assert!(switch.stop().success());
    assert_ledger_ok(&db.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_traffic_sqlite() {
    crash_in_traffic(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_traffic_mariadb() {
    crash_in_traffic(Backend::MySql).await;
}

/// A payee whose callback URL does not answer: delivery is retried, then
/// counted as failed and visible on the operator API; the transfer later
/// expires and the payer's reservation comes back.
#[tokio::test]
async fn callback_failures_are_visible() {
    let s = scene(
        Backend::Sqlite,
        &[("MOJASWITCH_CALLBACK_TIMEOUT_MS", "500")],
    )
    .await;
    let dead = format!("http://127.0.0.1:{}", switch_tests::free_port());
    let (status, body) = s
        .switch
        .post(
            "/participants/payeefsp/endpoints",
            json!({"type": "FSPIOP_CALLBACK_URL_TRANSFER_POST", "value": format!("{dead}/transfers")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let prepare = s
        .payer
        .prepare("payeefsp", "5", "USD", Duration::from_secs(4));
    assert_eq!(s.payer.send_prepare(&prepare).await.0, 202);
    let mut stats = Value::Null;
    for _ in 0..60 {
        stats = s.switch.get("/participants/payeefsp/callbacks").await.1;
        if stats["failed"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["failed"], 1, "{stats}");
    assert_eq!(stats["retried"], 3, "{stats}");
    assert!(
        stats["lastError"].as_str().unwrap_or("").contains(&dead),
        "{stats}"
    );
    let expired = expect(&s.payer, "3303", is_error(&prepare.transfer_id)).await;
    assert_eq!(code(&expired), "3303");
    assert_eq!(s.position("payerfsp").await, "0");
    let metrics = s
        .switch
        .client
        .get(s.switch.operator("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"mojaswitch_callbacks_total{endpoint_type="FSPIOP_CALLBACK_URL_TRANSFER_POST",outcome="failed"} 1"#),
        "{metrics}"
    );
    s.finish().await;
}

/// Load is shed at the edge: beyond `transfers_in_flight_max` live transfers
/// a new prepare is refused synchronously with 2003 (HTTP 503) and nothing is
/// recorded; transfers already in flight still finish.
#[tokio::test]
async fn in_flight_limit_sheds_new_prepares() {
    let s = scene(
        Backend::Sqlite,
        &[("MOJASWITCH_TRANSFERS_IN_FLIGHT_MAX", "2")],
    )
    .await;
    s.payee.set_rule(Rule::Silent);
    let first = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    let second = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    assert_eq!(s.payer.send_prepare(&first).await.0, 202);
    assert_eq!(s.payer.send_prepare(&second).await.0, 202);
    let third = s
        .payer
        .prepare("payeefsp", "1", "USD", Duration::from_secs(30));
    let (status, body) = s.payer.send_prepare(&third).await;
    assert_eq!(
        (status, body["errorInformation"]["errorCode"].clone()),
        (503, json!("2003")),
        "{body}"
    );
    assert_eq!(s.position("payerfsp").await, "2");
    // The transfers in flight can still be fulfilled.
    s.payee
        .send_fulfil(&first.transfer_id, &first.fulfilment, "COMMITTED")
        .await;
    expect(&s.payer, "the commit", is_put(&first.transfer_id)).await;
    let (_, unknown) = s
        .switch
        .get(&format!("/transactions/{}", third.transfer_id))
        .await;
    assert_eq!(
        unknown["errorInformation"]["errorCode"], "3208",
        "nothing recorded"
    );
    s.finish().await;
}

/// A fulfil or an error for an id the switch never saw: 2001 to the sender
/// (as the reference hub), in the sender's content version; nothing moves.
#[tokio::test]
async fn messages_for_unknown_transfers() {
    let s = scene(Backend::Sqlite, &[]).await;
    let id = switch_tests::new_id();
    let t0 = std::time::Instant::now();
    let fulfil = json!({"transferState": "COMMITTED", "fulfilment": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "completedTimestamp": switch_tests::dfsp::iso_now()});
    let (status, _) = s
        .payee
        .send_json(
            "PUT",
            &format!("/transfers/{id}"),
            &fulfil,
            Some("payerfsp"),
        )
        .await;
    assert_eq!(status, 200);
    let answer = expect(&s.payee, "2001", since(t0, is_error(&id))).await;
    assert_eq!(code(&answer), "2001");
    s.payee.set_version("1.0");
    let t1 = std::time::Instant::now();
    s.payee.send_error(&id, "5100", "no such transfer").await;
    let answer = expect(&s.payee, "2001", since(t1, is_error(&id))).await;
    assert_eq!(code(&answer), "2001");
    assert_eq!(
        answer.header("content-type"),
        Some("application/vnd.interoperability.transfers+json;version=1.0")
    );
    assert_eq!(s.position("payeefsp").await, "0");
    s.finish().await;
}
