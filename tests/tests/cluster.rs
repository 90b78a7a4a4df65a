//! Cluster mode: three switch processes on one MariaDB database and one
//! Redis, traffic from the load generator spread over the nodes, and the
//! failures of docs/cluster.md injected under load: a node killed, a node
//! paused past its lease, Redis restarted, the database connections
//! dropped. After each, every transfer ends final and `mojaswitch check`
//! holds. Each test runs its own `redis-server` (so it can restart it) and
//! its own database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switch_tests::{assert_ledger_ok, free_port, Backend, RedisServer, Switch, TestDb};

/// Short heartbeat and lease, so failovers happen within a test's time.
const HEARTBEAT_MS: &str = "200";
const NODE_TTL_MS: &str = "1500";
/// Transfers expire soon, so those a failure strands end within the test.
const EXPIRES_IN_S: &str = "6";
/// Longest wait for the cluster to settle (members agreed, every slot owned).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for one callback.
const CALLBACK_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for every transfer to be final after the load.
const FINAL_TIMEOUT: Duration = Duration::from_secs(40);

struct Cluster {
    db: TestDb,
    redis: RedisServer,
    nodes: Vec<Option<Switch>>,
}

impl Cluster {
    async fn start(size: usize) -> Cluster {
        let db = TestDb::new(Backend::MySql);
        let redis = RedisServer::start(&db.scratch_path(""), "cluster", free_port());
        let mut nodes = Vec::new();
        for index in 0..size {
            nodes.push(Some(start_node(&db, &redis, index).await));
        }
        let cluster = Cluster { db, redis, nodes };
        cluster.wait_settled(&(0..size).collect::<Vec<_>>()).await;
        cluster
    }

    fn node(&self, index: usize) -> &Switch {
        self.nodes[index].as_ref().expect("node running")
    }

    /// Polls `check` every 100 ms until it answers `Ok`; after `timeout`,
    /// panics with its last complaint and the nodes' logs.
    async fn poll<F, Fut>(&self, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let complaint = match check().await {
                Ok(()) => return,
                Err(complaint) => complaint,
            };
            assert!(Instant::now() < deadline, "{complaint}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the `live` nodes agree on the members and together own
    /// every slot.
    async fn wait_settled(&self, live: &[usize]) {
        self.poll(SETTLE_TIMEOUT, || async {
            let mut views = Vec::new();
            for index in live {
                // A request may fail: a node resumed after SIGSTOP closes its
                // idle keep-alive connections (idle past actix's 5 s) just as
                // the client reuses one. Ask again at the next poll.
                let node = self.node(*index);
                let answer = node.client.get(node.operator("/cluster")).send().await;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(error) => return Err(format!("node {index}: GET /cluster: {error}")),
                };
                let status = answer.status().as_u16();
                views.push((status, answer.json::<Value>().await.unwrap_or(Value::Null)));
            }
            let agreed = views.iter().all(|(status, view)| {
                *status == 200
                    && view["members"].as_array().map(Vec::len) == Some(live.len())
                    && view["slotsWithoutOwner"] == 0
            });
            let owned: u64 = views
                .iter()
                .map(|(_, view)| view["slotsOwned"].as_u64().unwrap_or(0))
                .sum();
            if agreed && owned == 64 {
                Ok(())
            } else {
                Err(format!("cluster of {live:?} did not settle: {views:?}"))
            }
        })
        .await;
    }

    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let text = std::fs::read_to_string(node_log(&self.db, i)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- node {i} (last 40 lines, newest first)\n{}",
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the load generator through the `via` nodes.
    fn load(&self, via: &[usize], rate: u32, steady_s: u32) -> Load {
        self.load_with(via, rate, steady_s, &[])
    }

    /// As [`Cluster::load`], with more generator arguments.
    fn load_with(&self, via: &[usize], rate: u32, steady_s: u32, extra: &[&str]) -> Load {
        let urls: Vec<String> = via.iter().map(|i| self.node(*i).fspiop("")).collect();
        let json = self.db.scratch_path(&format!("bench-{}.json", free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_mojaswitch-bench"))
            .args([
                "--fspiop-url",
                &urls.join(","),
                "--operator-url",
                &self.node(via[0]).operator(""),
                "--db-url",
                &self.db.url,
                "--rate",
                &rate.to_string(),
                "--ramp-s",
                "1",
                "--steady-s",
                &steady_s.to_string(),
                "--expires-in-s",
                EXPIRES_IN_S,
                "--switch-bin",
                switch_tests::binary().to_str().expect("path"),
                "--json",
                json.to_str().expect("path"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mojaswitch-bench");
        Load { child, json }
    }

    /// Through node 0: the hub's USD accounts, `payerfsp` and `payeefsp`
    /// with this net debit cap and funds in, and their simulators, sending
    /// to node 0 until told otherwise.
    async fn payer_and_payee(
        &self,
        net_debit_cap: &str,
        funds_in: &str,
    ) -> (switch_tests::dfsp::Dfsp, switch_tests::dfsp::Dfsp) {
        let operator = self.node(0);
        operator.onboard_hub("USD").await;
        for name in ["payerfsp", "payeefsp"] {
            operator
                .onboard_dfsp(name, "USD", net_debit_cap, funds_in)
                .await;
        }
        let payer = switch_tests::dfsp::Dfsp::start("payerfsp");
        let payee = switch_tests::dfsp::Dfsp::start("payeefsp");
        for dfsp in [&payer, &payee] {
            dfsp.register(operator).await;
            dfsp.set_switch(&operator.fspiop(""));
        }
        (payer, payee)
    }

    /// Sends one transfer of `amount` USD from `payer` to `payeefsp` (which
    /// fulfils it) and waits until the payer hears COMMITTED; its id.
    async fn commit_one(&self, payer: &switch_tests::dfsp::Dfsp, amount: &str) -> String {
        let prepare = payer.prepare("payeefsp", amount, "USD", Duration::from_secs(30));
        let id = prepare.transfer_id.clone();
        assert_eq!(payer.send_prepare(&prepare).await.0, 202);
        let put = payer
            .wait_for_request("PUT", &format!("/transfers/{id}"), CALLBACK_WAIT)
            .await
            .unwrap_or_else(|| panic!("no fulfil for {id}\n{}", self.logs()));
        assert_eq!(put.json["transferState"], "COMMITTED", "{}", put.json);
        id
    }

    /// Asserts that every running node answered calls to `route` (a
    /// node-to-node route) with 200.
    async fn assert_every_node_answered(&self, route: &str) {
        let line = format!(
            "mojaswitch_http_requests_total{{api=\"cluster\",method=\"POST\",route=\"{route}\",status=\"200\"}}"
        );
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let answered = metric(node, &line).await;
                assert!(answered > 0.0, "node {index} answered no call to {route}");
            }
        }
    }

    /// Transfers not yet final (RECEIVED or RESERVED).
    fn unfinished(&self) -> i64 {
        let rows = self.db.rows(
            "SELECT COUNT(*) FROM transfer t WHERE (SELECT s.state FROM transfer_state_change s \
             WHERE s.transfer_seq = t.transfer_seq ORDER BY s.transfer_state_change_id DESC LIMIT 1) \
             IN ('RECEIVED_PREPARE', 'RESERVED')",
        );
        rows[0][0].parse().expect("count")
    }

    /// Waits until every transfer is COMMITTED, ABORTED or expired.
    async fn wait_all_final(&self) {
        self.poll(FINAL_TIMEOUT, || async {
            match self.unfinished() {
                0 => Ok(()),
                n => Err(format!("{n} transfers still not final")),
            }
        })
        .await;
    }

    fn committed(&self) -> i64 {
        let rows = self.db.rows("SELECT COUNT(*) FROM transfer_fulfilment");
        rows[0][0].parse().expect("count")
    }
}

fn node_log(db: &TestDb, index: usize) -> std::path::PathBuf {
    db.scratch_path(&format!("node{index}.log"))
}

async fn start_node(db: &TestDb, redis: &RedisServer, index: usize) -> Switch {
    let cluster_port = free_port().to_string();
    let node_id = format!("n{index}");
    let redis_url = redis.url();
    let env = [
        ("MOJASWITCH_REDIS_URL", redis_url.as_str()),
        ("MOJASWITCH_CLUSTER_NAME", "test"),
        ("MOJASWITCH_NODE_ID", node_id.as_str()),
        ("MOJASWITCH_CLUSTER_PORT", cluster_port.as_str()),
        ("MOJASWITCH_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS),
        ("MOJASWITCH_NODE_TTL_MS", NODE_TTL_MS),
        ("MOJASWITCH_EXPIRY_TICK_MS", "50"),
    ];
    Switch::start_logged(db, &node_log(db, index), &env).await
}

/// A running load generator.
struct Load {
    child: Child,
    json: std::path::PathBuf,
}

impl Load {
    /// Waits for the generator; its summary. It exits non-zero when the
    /// books do not agree with what it was told.
    fn finish(self) -> Value {
        let output = self.child.wait_with_output().expect("bench output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "load generator failed ({}):\n{stderr}",
            output.status
        );
        let text = std::fs::read_to_string(&self.json).expect("bench JSON");
        serde_json::from_str(&text).expect("bench JSON parses")
    }
}

fn counter(summary: &Value, name: &str) -> u64 {
    summary["counts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

/// A metric line's value on a node (0 when absent).
async fn metric(node: &Switch, line_prefix: &str) -> f64 {
    let text = node
        .client
        .get(node.operator("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_act_as_one_switch() {
    let cluster = Cluster::start(3).await;
    let (status, view) = cluster.node(1).get("/health").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["cluster"]["members"].as_array().map(Vec::len), Some(3));
    let summary = cluster.load(&[0, 1, 2], 100, 4).finish();
    let scheduled = counter(&summary, "scheduled");
    assert!(scheduled > 300, "{summary}");
    assert_eq!(counter(&summary, "committed"), scheduled, "{summary}");
    assert_eq!(cluster.committed() as u64, scheduled);
    // Every node owned positions that other nodes' transfers used.
    cluster
        .assert_every_node_answered("/internal/positions")
        .await;
    assert_ledger_ok(&cluster.db.url);
    // Bulk transfers through every node: each bulk's requests reach the
    // bulk's owner, and each line's messages the line's owner.
    let before = cluster.committed() as u64;
    let summary = cluster
        .load_with(&[0, 1, 2], 20, 3, &["--bulk", "10"])
        .finish();
    let bulks = counter(&summary, "scheduled");
    assert!(bulks >= 40, "{summary}");
    assert_eq!(
        counter(&summary, "committed"),
        bulks,
        "every bulk COMPLETED: {summary}"
    );
    assert_eq!(
        cluster.committed() as u64,
        before + 10 * bulks,
        "every line committed: {summary}"
    );
    cluster.assert_every_node_answered("/internal/lines").await;
    assert_ledger_ok(&cluster.db.url);
    // An operator change on one node reaches the others' caches.
    const HEARD: &str = "reference data changed on another node";
    let heard = |index: usize| {
        std::fs::read_to_string(node_log(&cluster.db, index))
            .unwrap_or_default()
            .matches(HEARD)
            .count()
    };
    let before = [heard(1), heard(2)];
    let (status, body) = cluster
        .node(0)
        .post(
            "/participants",
            serde_json::json!({"name": "latecomer", "currency": "USD"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (index, before) in [1, 2].into_iter().zip(before) {
        cluster
            .poll(Duration::from_secs(5), || async {
                if heard(index) > before {
                    Ok(())
                } else {
                    Err(format!("node {index} did not hear of the change"))
                }
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3).await;
    let load = cluster.load(&[0, 1], 100, 8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nodes[2].take().expect("node 2").kill();
    cluster.wait_settled(&[0, 1]).await;
    let summary = load.finish();
    cluster.wait_all_final().await;
    assert!(cluster.committed() > 0, "{summary}");
    assert_ledger_ok(&cluster.db.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_rejoins_without_harm() {
    let cluster = Cluster::start(3).await;
    let load = cluster.load(&[0, 1], 100, 9);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.node(2).signal("STOP");
    cluster.wait_settled(&[0, 1]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node(2).signal("CONT");
    cluster.wait_settled(&[0, 1, 2]).await;
    let summary = load.finish();
    cluster.wait_all_final().await;
    assert!(cluster.committed() > 0, "{summary}");
    assert_ledger_ok(&cluster.db.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_costs_only_a_pause() {
    let mut cluster = Cluster::start(3).await;
    let load = cluster.load(&[0, 1, 2], 100, 9);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.redis.kill();
    // Without Redis a node trusts none of its leases and says so.
    cluster
        .poll(SETTLE_TIMEOUT, || async {
            let (status, view) = cluster.node(0).get("/health").await;
            if view["cluster"]["heartbeat"] != "DOWN" {
                return Err(format!("heartbeat not DOWN yet: {status} {view}"));
            }
            assert_eq!(status, 502, "{view}");
            assert_eq!(view["status"], "DOWN", "{view}");
            Ok(())
        })
        .await;
    let port = cluster.redis.port;
    cluster.redis = RedisServer::start(&cluster.db.scratch_path(""), "cluster", port);
    cluster.wait_settled(&[0, 1, 2]).await;
    let summary = load.finish();
    cluster.wait_all_final().await;
    assert!(cluster.committed() > 0, "{summary}");
    assert_ledger_ok(&cluster.db.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_dropped_under_load_lose_nothing() {
    let cluster = Cluster::start(3).await;
    let load = cluster.load(&[0, 1, 2], 100, 8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = cluster.db.kill_connections();
    assert!(killed > 0, "no connection to kill");
    let summary = load.finish();
    cluster.wait_all_final().await;
    assert!(cluster.committed() > 0, "{summary}");
    assert_ledger_ok(&cluster.db.url);
}

/// The database, not only the node, refuses a write under an epoch that a
/// later owner has superseded: here the epochs are raised behind the
/// node's back while it still holds its leases in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_superseded_epoch_is_refused_by_the_database() {
    let cluster = Cluster::start(1).await;
    let node = cluster.node(0);
    node.onboard_hub("USD").await;
    let accounts = node.onboard_dfsp("fencedfsp", "USD", "1000", "500").await;
    let before = node.balance("fencedfsp", accounts.settlement).await;
    // As if another node had taken every slot (`rows` runs any statement).
    cluster.db.rows("UPDATE cluster_slot SET epoch = epoch + 1");
    let (status, body) = node
        .funds(
            "fencedfsp",
            accounts.settlement,
            "recordFundsIn",
            &switch_tests::new_id(),
            "250",
            "USD",
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errorInformation"]["errorCode"], "2001", "{body}");
    assert_eq!(
        node.balance("fencedfsp", accounts.settlement).await,
        before,
        "nothing moved"
    );
    let log = std::fs::read_to_string(node_log(&cluster.db, 0)).unwrap_or_default();
    assert!(log.contains("is fenced"), "the refusal is logged:\n{log}");
    assert_ledger_ok(&cluster.db.url);
}

/// A prepare, an error and a GET reach the transfer's owner whichever node
/// they arrive at: each is sent through the node that does NOT own the
/// transfer (read from `slotOwners`), and the owner's callbacks arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transfer_message_reaches_the_owner_from_any_node() {
    use switch_tests::dfsp::Rule;
    let cluster = Cluster::start(2).await;
    let operator = cluster.node(0);
    let (payer, payee) = cluster.payer_and_payee("1000", "500").await;
    payee.set_rule(Rule::Reject("5100"));
    let (_, view) = operator.get("/cluster").await;
    let owners = view["slotOwners"].as_array().expect("slotOwners").clone();
    for _ in 0..2 {
        let prepare = payer.prepare("payeefsp", "7", "USD", Duration::from_secs(30));
        let id = prepare.transfer_id.clone();
        let slot = switch_cluster::placement::transfer_slot(&id) as usize;
        let owner = owners[slot].as_str().expect("owned slot");
        let other = if owner == "n0" { 1 } else { 0 };
        // Everything goes through the node that does not own the transfer.
        payer.set_switch(&cluster.node(other).fspiop(""));
        payee.set_switch(&cluster.node(other).fspiop(""));
        assert_eq!(payer.send_prepare(&prepare).await.0, 202);
        let error = payer
            .wait_for_request("PUT", &format!("/transfers/{id}/error"), CALLBACK_WAIT)
            .await
            .unwrap_or_else(|| panic!("no error callback for {id}\n{}", cluster.logs()));
        assert_eq!(error.json["errorInformation"]["errorCode"], "5100");
        payer.clear();
        assert_eq!(payer.get_transfer(&id).await.0, 202);
        let state = payer
            .wait_for_request("PUT", &format!("/transfers/{id}"), CALLBACK_WAIT)
            .await
            .unwrap_or_else(|| panic!("no answer to the GET of {id}\n{}", cluster.logs()));
        assert_eq!(state.json["transferState"], "ABORTED", "{}", state.json);
        payer.clear();
    }
    let forwarded = metric(
        cluster.node(0),
        "mojaswitch_http_requests_total{api=\"cluster\",method=\"POST\",route=\"/transfers\"",
    )
    .await
        + metric(
            cluster.node(1),
            "mojaswitch_http_requests_total{api=\"cluster\",method=\"POST\",route=\"/transfers\"",
        )
        .await;
    assert_eq!(forwarded, 2.0, "both prepares were forwarded");
    assert_ledger_ok(&cluster.db.url);
}

/// Timers of a few owned slots: a sorted set per slot, as the switch keeps them.
const TIMER_SLOT: u32 = 5;

/// §4, claiming: many claimers at once take each due timer exactly once,
/// and only the holder of the slot's lease (`node:epoch`) takes any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_timers_are_claimed_once_and_only_by_the_lease_holder() {
    use switch_cluster::coordinator::{connect, lease_key};
    use switch_cluster::timers::{claim_due, timeouts_key};
    let db = TestDb::new(Backend::Sqlite);
    let server = RedisServer::start(&db.scratch_path(""), "claims", free_port());
    let mut conn = connect(&server.url(), Duration::from_secs(2))
        .await
        .expect("redis");
    let (due, later) = (3_000, 10);
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(lease_key("t", TIMER_SLOT))
        .arg("a:7")
        .ignore();
    for i in 0..due + later {
        let at_ms = if i < due { i } else { 1_000_000 + i };
        pipe.cmd("ZADD")
            .arg(timeouts_key("t", TIMER_SLOT))
            .arg(at_ms)
            .arg(format!("id{i}"))
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.expect("fill");
    // Four claimers hold the lease; two hold a superseded one ("b:6").
    let claimers: Vec<_> = ["a:7", "a:7", "a:7", "a:7", "b:6", "b:6"]
        .into_iter()
        .map(|lease| {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                let mut claimed = Vec::new();
                for _ in 0..1_000 {
                    let batch = claim_due(&mut conn, "t", TIMER_SLOT, lease, 500_000, 37)
                        .await
                        .expect("claim");
                    if batch.is_empty() && lease == "a:7" {
                        break;
                    }
                    claimed.extend(batch);
                    tokio::task::yield_now().await;
                }
                (lease, claimed)
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for claimer in claimers {
        let (lease, claimed) = claimer.await.expect("claimer");
        if lease == "b:6" {
            assert!(claimed.is_empty(), "a stale lease claimed {claimed:?}");
        }
        for id in claimed {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), due as usize, "every due timer claimed");
    let left: u64 = redis::cmd("ZCARD")
        .arg(timeouts_key("t", TIMER_SLOT))
        .query_async(&mut conn)
        .await
        .expect("zcard");
    assert_eq!(left, later as u64, "timers not yet due stay in Redis");
}

/// Every timer left in the cluster's Redis, by transfer id.
async fn timers_in_redis(
    conn: &mut redis::aio::ConnectionManager,
) -> std::collections::BTreeMap<String, i64> {
    let mut all = std::collections::BTreeMap::new();
    for slot in 0..switch_cluster::placement::SLOTS {
        let key = switch_cluster::timers::timeouts_key("test", slot);
        let entries: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .expect("zrange");
        all.extend(entries);
    }
    all
}

fn expiration_ms(prepare: &switch_tests::dfsp::Prepare) -> i64 {
    let text = prepare.body["expiration"].as_str().expect("expiration");
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339 expiration")
        .timestamp_millis()
}

/// §4, end to end: a RESERVED transfer's timer is in Redis at its
/// expiration; a commit removes it; the timers of a killed node's
/// transfers fire on the survivor; each expiry is carried out once; a stale
/// timer of a committed transfer changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_timers_live_in_redis_and_fire_once_after_a_node_dies() {
    use switch_tests::dfsp::Rule;
    let mut cluster = Cluster::start(2).await;
    let operator = cluster.node(0);
    let (payer, payee) = cluster.payer_and_payee("10000", "5000").await;
    let mut redis =
        switch_cluster::coordinator::connect(&cluster.redis.url(), Duration::from_secs(2))
            .await
            .expect("redis");

    // A committed transfer leaves no timer behind.
    let committed_id = cluster.commit_one(&payer, "5").await;
    cluster
        .poll(CALLBACK_WAIT, || async {
            let timers = timers_in_redis(&mut redis.clone()).await;
            match timers.get(&committed_id) {
                None => Ok(()),
                Some(at) => Err(format!(
                    "the committed transfer's timer is still armed ({at})"
                )),
            }
        })
        .await;

    // A silent payee: these stay RESERVED until they expire.
    payee.set_rule(Rule::Silent);
    let mut reserved = Vec::new();
    for i in 0..20 {
        let via = cluster.node(i % 2);
        payer.set_switch(&via.fspiop(""));
        let prepare = payer.prepare("payeefsp", "3", "USD", Duration::from_secs(5));
        assert_eq!(payer.send_prepare(&prepare).await.0, 202);
        reserved.push(prepare);
    }
    cluster
        .poll(CALLBACK_WAIT, || async {
            let timers = timers_in_redis(&mut redis.clone()).await;
            let wrong: Vec<_> = reserved
                .iter()
                .filter(|p| timers.get(&p.transfer_id) != Some(&expiration_ms(p)))
                .map(|p| p.transfer_id.clone())
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "not armed in Redis at their expiration: {wrong:?} (Redis holds {timers:?})"
                ))
            }
        })
        .await;
    let (_, view) = operator.get("/cluster").await;
    let owners = view["slotOwners"].as_array().expect("slotOwners").clone();
    let on_n1 = reserved
        .iter()
        .filter(|p| {
            owners[switch_cluster::placement::transfer_slot(&p.transfer_id) as usize] == "n1"
        })
        .count();
    assert!(
        on_n1 > 0,
        "some transfers are owned by the node about to die"
    );

    // n1 dies with its transfers RESERVED; n0 takes its slots and fires them.
    if let Some(node) = cluster.nodes[1].take() {
        node.kill();
    }
    // A stale timer of the committed transfer, already due.
    let _: i64 = redis::cmd("ZADD")
        .arg(switch_cluster::timers::timeouts_key(
            "test",
            switch_cluster::placement::transfer_slot(&committed_id),
        ))
        .arg(1)
        .arg(&committed_id)
        .query_async(&mut redis)
        .await
        .expect("zadd");
    cluster.wait_settled(&[0]).await;
    cluster.wait_all_final().await;
    cluster
        .poll(CALLBACK_WAIT, || async {
            let left = timers_in_redis(&mut redis.clone()).await;
            let (_, view) = cluster.node(0).get("/cluster").await;
            let backlog = serde_json::json!({"queued": 0, "claimed": 0, "redisOk": true});
            if left.is_empty() && view["timers"] == backlog {
                Ok(())
            } else {
                Err(format!(
                    "timers left in Redis: {left:?}; node 0's: {}",
                    view["timers"]
                ))
            }
        })
        .await;

    // Each expiry happened once: one reversal, one error callback.
    for prepare in &reserved {
        let id = &prepare.transfer_id;
        let changes = cluster.db.rows(&format!(
            "SELECT COUNT(*) FROM participant_position_change WHERE reference = '{id}'"
        ));
        assert_eq!(changes[0][0], "2", "{id}: a reservation and one reversal");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors: Vec<_> = payer
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/error"))
        .collect();
    for prepare in &reserved {
        let theirs: Vec<_> = errors
            .iter()
            .filter(|r| r.path == format!("/transfers/{}/error", prepare.transfer_id))
            .collect();
        assert_eq!(
            theirs.len(),
            1,
            "one expiry callback for {}",
            prepare.transfer_id
        );
        assert_eq!(theirs[0].json["errorInformation"]["errorCode"], "3303");
    }
    // The stale timer changed nothing.
    assert!(
        errors.iter().all(|r| !r.path.contains(&committed_id)),
        "a committed transfer got an error callback"
    );
    let changes = cluster.db.rows(&format!(
        "SELECT COUNT(*) FROM participant_position_change WHERE reference = '{committed_id}'"
    ));
    assert_eq!(
        changes[0][0], "2",
        "the committed transfer: reserve and commit only"
    );
    assert_ledger_ok(&cluster.db.url);
}

/// Line prepares of 10 USD from `payer`, at least four, until both nodes own
/// some of them (by `owners`, the cluster's `slotOwners`).
fn lines_on_both_nodes(
    payer: &switch_tests::dfsp::Dfsp,
    owners: &[Value],
    expires_in: Duration,
) -> Vec<switch_tests::dfsp::Prepare> {
    let mut lines = Vec::new();
    let mut holders = std::collections::BTreeSet::new();
    while lines.len() < 4 || holders.len() < 2 {
        assert!(lines.len() < 200, "two nodes own no lines: {owners:?}");
        let line = payer.prepare("payeefsp", "10", "USD", expires_in);
        let slot = switch_cluster::placement::transfer_slot(&line.transfer_id) as usize;
        holders.insert(owners[slot].to_string());
        lines.push(line);
    }
    lines
}

fn bulk_body(id: &str, lines: &[switch_tests::dfsp::Prepare]) -> Value {
    let individual: Vec<Value> = lines
        .iter()
        .map(|l| {
            serde_json::json!({
                "transferId": l.transfer_id,
                "transferAmount": l.body["amount"],
                "ilpPacket": l.ilp_packet,
                "condition": l.condition,
            })
        })
        .collect();
    serde_json::json!({
        "bulkTransferId": id,
        "bulkQuoteId": switch_tests::new_id(),
        "payerFsp": "payerfsp",
        "payeeFsp": "payeefsp",
        "individualTransfers": individual,
        "expiration": lines[0].body["expiration"],
    })
}

/// Bulk transfers in cluster mode: every request sent through the node that
/// does not own the bulk, lines owned by both nodes. A fulfilled bulk
/// commits every line; a bulk the payee ignores expires on its owner, which
/// aborts every line wherever it lives; a GET through the other node answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_through_any_node_reaches_lines_on_every_node() {
    let cluster = Cluster::start(2).await;
    let operator = cluster.node(0);
    let (payer, payee) = cluster.payer_and_payee("1000", "5000").await;
    let (_, view) = operator.get("/cluster").await;
    let owners = view["slotOwners"].as_array().expect("slotOwners").clone();
    let not_owning = |bulk_id: &str| {
        let slot = switch_cluster::placement::bulk_slot(bulk_id) as usize;
        let other = if owners[slot] == "n0" { 1 } else { 0 };
        cluster.node(other).fspiop("")
    };
    let payer_position = || async {
        let (_, body) = operator
            .get("/participants/payerfsp/positions?currency=USD")
            .await;
        body["value"].to_string()
    };

    // Sends a bulk of `lines` through the node that does not own it (the
    // payee answers through that node too); its id and path.
    let send_bulk = |lines: &[switch_tests::dfsp::Prepare]| {
        let id = switch_tests::new_id();
        for dfsp in [&payer, &payee] {
            dfsp.set_switch(&not_owning(&id));
        }
        let body = bulk_body(&id, lines);
        let payer = &payer;
        async move {
            let (status, answer) = payer
                .send_json("POST", "/bulkTransfers", &body, Some("payeefsp"))
                .await;
            assert_eq!(status, 202, "{answer}");
            let path = format!("/bulkTransfers/{id}");
            (id, path)
        }
    };

    // Fulfilled: every line commits.
    let lines = lines_on_both_nodes(&payer, &owners, Duration::from_secs(30));
    let (id, path) = send_bulk(&lines).await;
    payee
        .wait_for_request("POST", "/bulkTransfers", CALLBACK_WAIT)
        .await
        .unwrap_or_else(|| panic!("the payee got no bulk\n{}", cluster.logs()));
    let results: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::json!({"transferId": l.transfer_id, "fulfilment": l.fulfilment}))
        .collect();
    let fulfil = serde_json::json!({
        "bulkTransferState": "COMPLETED",
        "completedTimestamp": switch_tests::dfsp::iso_now(),
        "individualTransferResults": results,
    });
    let (status, body) = payee
        .send_json("PUT", &path, &fulfil, Some("payerfsp"))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = payer
        .wait_for_request("PUT", &path, CALLBACK_WAIT)
        .await
        .unwrap_or_else(|| panic!("the payer heard nothing of {id}\n{}", cluster.logs()));
    assert_eq!(done.json["bulkTransferState"], "COMPLETED", "{}", done.json);
    let committed = (10 * lines.len()).to_string();
    assert_eq!(payer_position().await, committed);

    // Ignored by the payee: the bulk expires and every line is aborted.
    let lines = lines_on_both_nodes(&payer, &owners, Duration::from_secs(3));
    let (id, path) = send_bulk(&lines).await;
    let expired = payer
        .wait_for_request("PUT", &path, CALLBACK_WAIT)
        .await
        .unwrap_or_else(|| panic!("the payer heard nothing of {id}\n{}", cluster.logs()));
    assert_eq!(
        expired.json["bulkTransferState"], "REJECTED",
        "{}",
        expired.json
    );
    for line in &lines {
        let result = expired.json["individualTransferResults"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["transferId"] == line.transfer_id))
            .unwrap_or_else(|| panic!("no result for {} in {}", line.transfer_id, expired.json));
        assert_eq!(result["errorInformation"]["errorCode"], "3303", "{result}");
    }
    assert_eq!(
        payer_position().await,
        committed,
        "every expired line released"
    );
    payer.clear();
    let (status, _) = payer.send("GET", &path, &[], &[]).await;
    assert_eq!(status, 202);
    let state = payer
        .wait_for_request("PUT", &path, CALLBACK_WAIT)
        .await
        .unwrap_or_else(|| panic!("no answer to the GET of {id}\n{}", cluster.logs()));
    assert_eq!(
        state.json["bulkTransferState"], "REJECTED",
        "{}",
        state.json
    );
    cluster.wait_all_final().await;
    assert_ledger_ok(&cluster.db.url);
}

/// Accounts of a settlement answer that carry an error.
fn account_errors(answer: &Value) -> usize {
    answer["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["accounts"].as_array().into_iter().flatten())
        .filter(|a| !a["errorInformation"].is_null())
        .count()
}

/// Moves every account of settlement `sid` to `to` with one PUT through
/// `node`; the answer.
async fn settle_step(node: &Switch, sid: i64, settlement: &Value, to: &str) -> (u16, Value) {
    let participants: Vec<Value> = settlement["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| {
            let accounts: Vec<Value> = p["accounts"]
                .as_array()
                .expect("accounts")
                .iter()
                .map(|a| serde_json::json!({"id": a["id"], "state": to, "reason": to}))
                .collect();
            serde_json::json!({"id": p["id"], "accounts": accounts})
        })
        .collect();
    node.put(
        &format!("/v2/settlements/{sid}"),
        serde_json::json!({ "participants": participants }),
    )
    .await
}

/// Settlement changes through any node run on one settlement actor (the
/// owner of `SETTLEMENT_SLOT`): a window closed through one node, the
/// settlement created through the other, its steps sent through both, one
/// step sent through both nodes at once; it ends SETTLED with every position
/// moved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_changes_through_any_node_run_on_one_node() {
    let cluster = Cluster::start(2).await;
    let (payer, _payee) = cluster.payer_and_payee("1000", "500").await;
    for _ in 0..3 {
        cluster.commit_one(&payer, "5").await;
    }
    let (_, view) = cluster.node(0).get("/cluster").await;
    let owner = view["slotOwners"][switch_cluster::placement::SETTLEMENT_SLOT as usize].clone();
    let (settler, other) = if owner == "n0" { (0, 1) } else { (1, 0) };
    let (status, open) = cluster
        .node(other)
        .get("/v2/settlementWindows?state=OPEN")
        .await;
    assert_eq!(status, 200, "{open}");
    let window = open[0]["id"].as_i64().expect("open window id");
    let (status, body) = cluster
        .node(other)
        .post(
            &format!("/v2/settlementWindows/{window}"),
            serde_json::json!({"state": "CLOSED", "reason": "through the other node"}),
        )
        .await;
    assert_eq!(status, 200, "close: {body}");
    let (status, settlement) = cluster
        .node(other)
        .post(
            "/v2/settlements",
            serde_json::json!({"settlementModel": "DEFERREDNETUSD", "reason": "cluster",
                "settlementWindows": [{"id": window}]}),
        )
        .await;
    assert_eq!(status, 200, "create: {settlement}");
    let sid = settlement["id"].as_i64().expect("settlement id");
    // The same step through both nodes at once: one actor takes them in
    // turn, so exactly one of them moves the accounts.
    let (a, b) = tokio::join!(
        settle_step(cluster.node(0), sid, &settlement, "PS_TRANSFERS_RECORDED"),
        settle_step(cluster.node(1), sid, &settlement, "PS_TRANSFERS_RECORDED"),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let clean = [&a.1, &b.1]
        .iter()
        .filter(|answer| account_errors(answer) == 0)
        .count();
    assert!(clean >= 1, "neither step went through: {a:?} {b:?}");
    for (node, to) in [
        (settler, "PS_TRANSFERS_RESERVED"),
        (other, "PS_TRANSFERS_COMMITTED"),
        (other, "SETTLED"),
    ] {
        let (status, body) = settle_step(cluster.node(node), sid, &settlement, to).await;
        assert_eq!(status, 200, "{to}: {body}");
        assert_eq!(account_errors(&body), 0, "{to}: {body}");
    }
    let (status, done) = cluster
        .node(other)
        .get(&format!("/v2/settlements/{sid}"))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "SETTLED", "{done}");
    let forwarded = metric(
        cluster.node(settler),
        "mojaswitch_http_requests_total{api=\"cluster\",method=\"PUT\",route=\"/v2/settlements/{id}\",status=\"200\"}",
    )
    .await;
    assert_eq!(
        forwarded, 3.0,
        "the settler ran the other node's three steps"
    );
    assert_ledger_ok(&cluster.db.url);
}
