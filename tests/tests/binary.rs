//! The `mojaswitch` binary as an operator runs it: configuration layers,
//! refusal of bad configuration before any port opens, the `config` command.

use std::net::TcpStream;
use std::time::Duration;

use switch_tests::{command, free_port, Backend, Switch, TestDb};

#[test]
fn bad_configuration_exits_before_opening_a_port() {
    let db = TestDb::new(Backend::Sqlite);
    let port = free_port();
    let cases: Vec<(&str, &str, &str)> = vec![
        ("MOJASWITCH_FSPIOP_PORT", "not-a-port", "fspiop_port"),
        ("MOJASWITCH_NO_SUCH_KEY", "1", "no_such_key"),
        ("MOJASWITCH_DATABASE_URL", "postgres://x", "database_url"),
        ("MOJASWITCH_REDIS_URL", "http://x", "redis_url"),
        ("MOJASWITCH_LOG_LEVEL", "info,[", "log_level"),
    ];
    for (key, value, named) in cases {
        let output = command(&db.url)
            .env("MOJASWITCH_OPERATOR_PORT", port.to_string())
            .env(key, value)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}: {stderr}");
        assert!(
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
                .is_err(),
            "no port may open"
        );
    }
    // A config file with an unknown key is refused too, naming the key.
    let file = std::env::temp_dir().join(format!("mojaswitch-bad-{}.toml", std::process::id()));
    std::fs::write(&file, "fspiop_prot = 3000\n").expect("write");
    let output = command(&db.url)
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("fspiop_prot"));
    let _ = std::fs::remove_file(file);
}

#[test]
fn config_command_prints_layers_with_secrets_redacted() {
    let file = std::env::temp_dir().join(format!("mojaswitch-good-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "fspiop_port = 4100\noperator_port = 4101\nhub_name = \"FileHub\"\n",
    )
    .expect("write");
    let output = command("mysql://switch:s3cret@127.0.0.1:3306/db")
        .env("MOJASWITCH_OPERATOR_PORT", "4201")
        .args(["--fspiop-port", "4300", "--config"])
        .arg(&file)
        .arg("config")
        .output()
        .expect("run");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("fspiop_port = 4300"), "flag wins: {text}");
    assert!(
        text.contains("operator_port = 4201"),
        "environment beats file: {text}"
    );
    assert!(
        text.contains("hub_name = \"FileHub\""),
        "file beats default: {text}"
    );
    assert!(
        text.contains("mysql://switch:***@127.0.0.1:3306/db"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn unreachable_redis_is_refused_at_start() {
    let db = TestDb::new(Backend::Sqlite);
    let dead = free_port();
    let output = command(&db.url)
        .env("MOJASWITCH_REDIS_URL", format!("redis://127.0.0.1:{dead}"))
        .env("MOJASWITCH_OPERATOR_PORT", free_port().to_string())
        .env("MOJASWITCH_FSPIOP_PORT", free_port().to_string())
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("redis"));
}

#[tokio::test]
async fn health_reports_database_and_redis() {
    let db = TestDb::new(Backend::MySql);
    let redis = std::env::var("MOJASWITCH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let switch = Switch::start(&db, &[("MOJASWITCH_REDIS_URL", &redis)]).await;
    for url in [switch.operator("/health"), switch.fspiop("/health")] {
        let body: serde_json::Value = switch
            .client
            .get(url)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert_eq!(body["status"], "OK", "{body}");
        assert_eq!(
            body["services"],
            serde_json::json!([{"name": "datastore", "status": "OK"}, {"name": "cache", "status": "OK"}])
        );
    }
    // The FSPIOP port answers unknown paths with the FSPIOP error.
    let response = switch
        .client
        .get(switch.fspiop("/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["errorInformation"]["errorCode"], "3002");
    assert!(switch.stop().success());
}

/// The nice value of each of `pid`'s threads, by thread name.
fn thread_nice_values(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the switch's threads");
    let mut threads = Vec::new();
    for task in tasks {
        let path = task.expect("thread entry").path();
        let name = std::fs::read_to_string(path.join("comm")).expect("comm");
        let stat = std::fs::read_to_string(path.join("stat")).expect("stat");
        // "tid (name) state ppid ...": the name may hold spaces, so count
        // from its closing parenthesis; nice is the 19th field of the line.
        let (_, after_name) = stat.rsplit_once(')').expect("stat format");
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("nice field");
        threads.push((name.trim().to_string(), nice));
    }
    threads
}

/// The storage runtime's threads and the SQLite workers they start run
/// `storage_thread_priority` nice levels above the HTTP and actor threads;
/// where the kernel refuses (no CAP_SYS_NICE) the switch says so and runs.
#[tokio::test]
async fn storage_threads_run_above_the_http_threads() {
    let db = TestDb::new(Backend::Sqlite);
    let switch = Switch::start(&db, &[("MOJASWITCH_STORAGE_THREAD_PRIORITY", "5")]).await;
    let threads = thread_nice_values(switch.pid());
    let nice_of = |prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let (storage, sqlite, actix) = (
        nice_of("storage"),
        nice_of("sqlx-sqlite"),
        nice_of("actix-rt"),
    );
    assert!(
        !storage.is_empty() && !sqlite.is_empty() && !actix.is_empty(),
        "{threads:?}"
    );
    assert!(actix.iter().all(|n| *n == 0), "{threads:?}");
    let refused = switch
        .log_text()
        .contains("storage threads run at normal priority");
    let expected = if refused { 0 } else { -5 };
    assert!(
        storage.iter().chain(&sqlite).all(|n| *n == expected),
        "expected nice {expected} (refusal logged: {refused}): {threads:?}"
    );
    assert!(switch.stop().success());
}
