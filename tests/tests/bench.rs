//! The load generator against the embedded switch it starts itself: a
//! short run is counted, its books are checked, and the switch's CPU is
//! reported by thread.

use std::process::{Command, Stdio};

use serde_json::Value;

#[test]
fn a_short_run_reports_rates_books_and_the_switch_threads() {
    let dir = std::env::temp_dir().join(format!("mojaswitch-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let json = dir.join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mojaswitch-bench"))
        .args([
            "--backend",
            "sqlite",
            "--rate",
            "200",
            "--ramp-s",
            "1",
            "--steady-s",
            "3",
        ])
        // Not the default (2), so the thread count below shows the setting
        // reached the switch's storage runtime.
        .args(["--switch-env", "MOJASWITCH_STORAGE_THREADS=3"])
        .arg("--switch-bin")
        .arg(switch_tests::binary())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mojaswitch-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stderr}",
        output.status
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("bench JSON")).expect("parses");
    let _ = std::fs::remove_dir_all(&dir);

    // Every transaction offered in the ramp and the steady window
    // committed, and the database agrees.
    assert!(
        summary["counts"]["committed"].as_u64().unwrap_or(0) >= 600,
        "{summary}"
    );
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    assert_eq!(summary["books"]["counts_match"], true, "{summary}");
    assert_eq!(summary["books"]["ledger_check_passed"], true, "{summary}");

    // The per-thread figures come from the scheduler and add up to the
    // process's own CPU time (read from another file, in 10 ms ticks).
    let cpu = &summary["cpu_steady"];
    let threads = cpu["switch_threads"].as_array().expect("switch_threads");
    let named = |name: &str| {
        threads
            .iter()
            .find(|t| t["name"] == name)
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
    let by_thread: f64 = threads.iter().filter_map(|t| t["cores"].as_f64()).sum();
    let process = cpu["switch"]["cores"].as_f64().expect("switch cores");
    assert!(
        (by_thread - process).abs() <= 0.05 + 0.2 * process,
        "threads {by_thread} cores, process {process} cores: {cpu}"
    );
    assert!(stderr.contains("by thread of the switch"), "{stderr}");
}
