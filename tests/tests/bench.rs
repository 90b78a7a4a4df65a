//! The load generator against the embedded switch it starts itself: each
//! tier and mode runs briefly, every transaction is counted, the books are
//! checked, and the switch's CPU is reported by thread.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the generator on SQLite at `rate`/s (1 s ramp, `steady_s` steady)
/// with `extra` arguments; its JSON summary and its stderr. Fails the test
/// unless it exits 0 (it exits 2 when the books do not balance).
fn run(rate: u32, steady_s: u32, extra: &[&str]) -> (Value, String) {
    let dir = std::env::temp_dir().join(format!(
        "mojaswitch-bench-test-{}-{}",
        std::process::id(),
        switch_tests::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let json = dir.join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mojaswitch-bench"))
        .args(["--backend", "sqlite", "--ramp-s", "1"])
        .args([
            "--rate",
            &rate.to_string(),
            "--steady-s",
            &steady_s.to_string(),
        ])
        .args(extra)
        .arg("--switch-bin")
        .arg(switch_tests::binary())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mojaswitch-bench");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stderr}",
        output.status
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("bench JSON")).expect("parses");
    let _ = std::fs::remove_dir_all(&dir);
    (summary, stderr)
}

/// Every transaction offered in the ramp and the steady window committed
/// (at least `expected`), none failed, and the database agrees.
fn assert_all_committed(summary: &Value, expected: u64) -> u64 {
    let committed = summary["counts"]["committed"].as_u64().unwrap_or(0);
    assert!(committed >= expected, "{summary}");
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    assert_eq!(summary["books"]["counts_match"], true, "{summary}");
    assert_eq!(summary["books"]["ledger_check_passed"], true, "{summary}");
    // How long `mojaswitch check` took, for runs long enough to matter.
    let check_s = summary["books"]["ledger_check_s"].as_f64().unwrap_or(0.0);
    assert!(check_s > 0.0 && check_s < 600.0, "{summary}");
    committed
}

#[test]
fn a_short_run_reports_rates_books_and_the_switch_threads() {
    // Not the default (1), so the thread count below shows the setting
    // reached the switch's storage runtime.
    let (summary, stderr) = run(200, 3, &["--switch-env", "MOJASWITCH_STORAGE_THREADS=3"]);
    assert_all_committed(&summary, 600);

    // The per-thread figures come from the scheduler and add up to the
    // process's own CPU time (read from another file, in 10 ms ticks).
    let cpu = &summary["cpu_steady"];
    let threads = cpu["switch_threads"].as_array().expect("switch_threads");
    let named = |name: &str| {
        thread_row(&summary, "switch_threads", name)
            .unwrap_or_else(|| panic!("no {name} threads in {cpu}"))
    };
    assert_eq!(named("storage")["threads"], 3, "{cpu}");
    let sqlite = named("sqlx-sqlite-wor");
    assert!(sqlite["cores"].as_f64().unwrap_or(0.0) > 0.0, "{cpu}");
    for thread in threads {
        assert!(
            thread["waiting_for_a_core"].as_f64().unwrap_or(-1.0) >= 0.0,
            "{thread}"
        );
    }
    // Each transfer wakes the switch at least for its prepare and its
    // fulfil (at 200/s the threads idle in between); the upper bound only
    // catches a count that is not per transfer.
    let runs: f64 = threads
        .iter()
        .map(|t| t["runs_per_transfer"].as_f64().unwrap_or(f64::NAN))
        .sum();
    assert!(
        (2.0..1000.0).contains(&runs),
        "{runs} runs per transfer: {cpu}"
    );
    let by_thread: f64 = threads.iter().filter_map(|t| t["cores"].as_f64()).sum();
    let process = cpu["switch"]["cores"].as_f64().expect("switch cores");
    assert!(
        (by_thread - process).abs() <= 0.05 + 0.2 * process,
        "threads {by_thread} cores, process {process} cores: {cpu}"
    );
    assert!(stderr.contains("by thread of the switch"), "{stderr}");

    // The generator's own threads: by default two workers for the DFSPs'
    // requests beside the main thread and the DFSPs' server.
    assert_eq!(summary["config"]["generator_threads"], 2, "{summary}");
    let workers = thread_row(&summary, "generator_threads", "tokio-rt-worker").expect("workers");
    assert_eq!(workers["threads"], 2, "{workers}");
    assert!(workers["cores"].as_f64().unwrap_or(0.0) > 0.0, "{workers}");
    assert!(stderr.contains("by thread of the generator"), "{stderr}");
}

/// The row of threads called `name` in the steady window's report of
/// `piece` (`switch_threads` or `generator_threads`).
fn thread_row<'a>(summary: &'a Value, piece: &str, name: &str) -> Option<&'a Value> {
    summary["cpu_steady"][piece]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
}

/// The end-to-end tier, with 70% of the traffic from one payer: each
/// transaction is a party lookup, a quote and a transfer, each answered.
/// The quote and transfer ids are time-ordered UUID v7 (`--ids v7`), which
/// the switch takes on v1.1 messages as the v2.0 pattern allows.
#[test]
fn the_end_to_end_tier_runs_lookup_quote_and_transfer() {
    let (summary, _) = run(50, 2, &["--tier", "e2e", "--skew", "70", "--ids", "v7"]);
    assert_eq!(summary["config"]["tier"], "e2e", "{summary}");
    assert_eq!(summary["config"]["ids"], "v7", "{summary}");
    assert_eq!(summary["config"]["skew_percent"], 70.0, "{summary}");
    let committed = assert_all_committed(&summary, 100);
    // The first payer sent 70% of the transactions, the other three the rest.
    let by_payer = summary["config"]["transactions_by_payer"]
        .as_object()
        .expect("transactions by payer");
    let total: u64 = by_payer.values().filter_map(Value::as_u64).sum();
    let first = by_payer
        .iter()
        .find(|(name, _)| name.ends_with("payer0"))
        .and_then(|(_, count)| count.as_u64())
        .expect("the first payer's count");
    assert_eq!((by_payer.len(), total), (4, committed), "{summary}");
    let share = first as f64 / total as f64;
    assert!(
        (0.6..=0.8).contains(&share),
        "first payer's share {share}: {summary}"
    );
    for stage in ["parties", "quotes", "transfers"] {
        let accepted = summary["counts"]["stages"][stage]["accepted_202"]
            .as_u64()
            .unwrap_or(0);
        assert!(accepted >= committed, "{stage}: {summary}");
    }
}

/// PATCH mode: payees answer RESERVED, and each is told COMMITTED by PATCH.
/// Each simulated DFSP has a single connection to the switch here: its
/// requests wait for it in turn, and every transfer still commits. The
/// generator runs on its main thread alone here, with no worker pool.
#[test]
fn patch_mode_notifies_every_payee_of_the_commit() {
    let (summary, _) = run(
        50,
        2,
        &[
            "--patch",
            "--connections-per-dfsp",
            "1",
            "--generator-threads",
            "1",
        ],
    );
    assert!(
        thread_row(&summary, "generator_threads", "tokio-rt-worker").is_none(),
        "{summary}"
    );
    let main = thread_row(&summary, "generator_threads", "mojaswitch-benc").expect("main thread");
    assert_eq!(main["threads"], 1, "{main}");
    assert!(main["cores"].as_f64().unwrap_or(0.0) > 0.0, "{main}");
    let committed = assert_all_committed(&summary, 100);
    assert_eq!(
        summary["counts"]["payee_patches_by_state"]["COMMITTED"], committed,
        "{summary}"
    );
    let connections = &summary["counts"]["connections"];
    assert_eq!(connections["per_dfsp_per_node"], 1, "{summary}");
    assert!(connections["requests_waited"].is_u64(), "{summary}");
}

/// Traffic goes to loopback only: a switch URL elsewhere (here the
/// documentation network 192.0.2.0/24) is refused before any request is
/// made, with a message that names it.
#[test]
fn a_switch_off_loopback_is_refused() {
    for (fspiop, operator) in [
        ("http://192.0.2.1:3000", "http://127.0.0.1:3001"),
        (
            "http://127.0.0.1:3000,http://192.0.2.1:3000",
            "http://127.0.0.1:3001",
        ),
        ("http://127.0.0.1:3000", "http://192.0.2.1:3001"),
    ] {
        let stderr = refusal(&[
            "--fspiop-url",
            fspiop,
            "--operator-url",
            operator,
            "--rate",
            "10",
            "--ramp-s",
            "1",
            "--steady-s",
            "1",
        ]);
        assert!(
            stderr.contains("loopback URLs only: http://192.0.2.1:"),
            "{fspiop} {operator}: {stderr}"
        );
    }
}

/// `--cpu-limit-cores`: the generator and the switch it starts run in a
/// control group of their own that holds them to the limit (throttled when
/// they want more), and the group is removed afterwards. A value out of
/// range is refused before anything starts.
#[test]
fn a_cpu_limit_holds_the_generator_and_its_switch_to_it() {
    let stderr = refusal(&["--cpu-limit-cores", "0"]);
    assert!(
        stderr.contains("--cpu-limit-cores must be between"),
        "{stderr}"
    );

    // Making a control group needs root; CI runs as root.
    if !is_root() {
        eprintln!("skipped the limited run: --cpu-limit-cores needs root");
        return;
    }
    let (summary, stderr) = run(800, 4, &["--cpu-limit-cores", "0.2"]);
    let cpu = &summary["cpu_steady"];
    let limit = &cpu["cpu_limit"];
    assert_eq!(limit["cores"], 0.2, "{limit}");
    assert_eq!(limit["switch_in_group"], true, "{limit}");
    assert!(
        limit["steady"]["throttled_periods"].as_u64().unwrap_or(0) > 0,
        "{limit}"
    );
    let used = cpu["switch"]["cores"].as_f64().unwrap_or(f64::MAX)
        + cpu["generator_and_simulators"]["cores"]
            .as_f64()
            .unwrap_or(f64::MAX);
    // Sampled from /proc in 10 ms ticks at the window's two ends.
    assert!(used <= 0.2 * 1.2 + 0.02, "used {used} cores: {cpu}");
    let group = limit["cgroup"].as_str().expect("cgroup path");
    assert!(!std::path::Path::new(group).exists(), "{group} left behind");
    assert!(stderr.contains("cpu limit 0.2 cores"), "{stderr}");
}

/// The generator's runtime is one thread or a pool of at most 16; other
/// counts are refused before anything starts.
#[test]
fn a_generator_thread_count_out_of_range_is_refused() {
    for threads in ["0", "17"] {
        let stderr = refusal(&["--generator-threads", threads]);
        assert!(
            stderr.contains("--generator-threads must be between 1 and 16"),
            "{threads}: {stderr}"
        );
    }
}

/// Runs the generator with `args` that it must refuse: its stderr.
fn refusal(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mojaswitch-bench"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mojaswitch-bench");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "{args:?}: {stderr}");
    stderr
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}
