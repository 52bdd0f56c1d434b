//! The benchmark's small configuration, end to end: the real `tongjiao-bench` binary starts the four
//! real service binaries against the local PostgreSQL and Redis (it fails, loudly, without them) and
//! must finish with every correctness check holding. Asserts no timing.
use std::{collections::BTreeSet, process::Command};

#[test]
fn small_handover_day_issues_every_certificate_gap_free() {
    small_run(
        "combined",
        &["FindCases", "RegisterTransferAndIssue", "counter_total"],
    );
}

#[test]
fn small_handover_day_with_separate_transfer_and_issue_calls() {
    small_run(
        "separate",
        &[
            "FindCases",
            "RegisterTransfer",
            "IssueCertificate",
            "counter_total",
        ],
    );
}

/// Runs the small configuration with one counter flow and checks the report; `rpcs` are the counter
/// RPCs whose latencies the report must hold, one sample per case.
fn small_run(flow: &str, rpcs: &[&str]) {
    let dir = std::env::temp_dir().join(format!(
        "tongjiao-bench-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let report_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tongjiao-bench"))
        .args([
            "handover",
            "--units",
            "50",
            "--buildings",
            "2",
            "--big-table",
            "200",
            "--counters",
            "4",
            "--channels",
            "1",
            "--floor-secs",
            "0.2",
            "--floor-rows",
            "200",
            "--counter-flow",
            flow,
            "--report",
        ])
        .arg(&report_path)
        .output()
        .expect("run tongjiao-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tongjiao-bench failed ({}); it needs PostgreSQL and Redis (TONGJIAO_TEST_PG / TONGJIAO_TEST_REDIS)\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("TARGETS"),
        "the table is printed:\n{stdout}"
    );

    let text = std::fs::read_to_string(&report_path).expect("the JSON report is written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(r["schema"], "tongjiao-bench/handover/v1");
    assert_eq!(r["ok"], true, "failures: {}", r["failures"]);
    assert_eq!(r["failures"].as_array().map(Vec::len), Some(0));

    let certs = &r["checks"]["certificates"];
    assert_eq!(certs["expected"], 50);
    assert_eq!(certs["count"], 50);
    assert_eq!(certs["serial_first"], 1);
    assert_eq!(certs["serial_last"], 50);
    assert_eq!(certs["gap_free"], true);
    assert_eq!(certs["numbers_unique"], true);
    assert_eq!(certs["cases_unique"], true);
    assert_eq!(certs["numbers_match_serials"], true);
    assert_eq!(certs["batch_certificate_issued"], 50);
    assert_eq!(certs["db"]["count"], 50, "register: {}", certs["db"]);
    assert_eq!(certs["db"]["max_serial"], 50);
    assert_eq!(certs["ok"], true);

    let tax = &r["checks"]["tax_feed"];
    assert_eq!(tax["ok"], true, "{tax}");
    assert_eq!(tax["rejected"], 0);
    assert_eq!(tax["accepted"], tax["unique"]);
    assert_eq!(tax["duplicate"], tax["duplicates_sent"]);
    assert!(tax["duplicates_sent"].as_u64().unwrap_or(0) > 0);
    assert_eq!(r["checks"]["all_ready_before_counters"], true);
    assert_eq!(r["checks"]["final_batch_counts"]["certificate_issued"], 50);

    let phases: BTreeSet<&str> = r["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let expected: BTreeSet<&str> = [
        "survey_upload",
        "big_table_upload",
        "first_registration",
        "handover_batch",
        "tax_feed",
        "readiness_visible",
        "readiness_single",
        "readiness_lookups",
        "counters",
    ]
    .into_iter()
    .collect();
    assert_eq!(phases, expected);
    let counters = r["phases"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "counters"))
        .expect("counters phase");
    assert_eq!(counters["items"], 50);
    assert_eq!(counters["detail"]["counter_flow"], flow);
    let measured: BTreeSet<&str> = counters["latency"]
        .as_object()
        .expect("latencies")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(measured, rpcs.iter().copied().collect());
    for rpc in rpcs {
        assert_eq!(counters["latency"][rpc]["count"], 50, "{rpc}");
    }
    let single = r["phases"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "readiness_single"))
        .expect("single-event readiness phase");
    assert_eq!(single["items"], 5, "a tenth of 50 cases");
    assert_eq!(single["latency"]["ready_after_ack"]["count"], 5);
    let big = r["phases"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "big_table_upload"))
        .expect("big table phase");
    assert_eq!(big["detail"]["units"], 200);
    // Every phase reports the server's WAL; issuing certificates and recording the tax feed are
    // durable writes, so their phases cannot have written none.
    for p in r["phases"].as_array().expect("phases") {
        assert!(p["cpu"]["wal_bytes"].is_u64(), "{}: wal_bytes", p["name"]);
    }
    for name in ["counters", "tax_feed"] {
        let p = r["phases"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .expect("phase");
        assert!(
            p["cpu"]["wal_bytes"].as_u64().unwrap_or(0) > 0,
            "{name} wrote WAL"
        );
    }

    for s in ["survey-data", "acceptance", "tax-status", "registration"] {
        assert!(
            r["services"][s]["peak_rss_kib"].as_u64().unwrap_or(0) > 0,
            "{s} peak RSS read from /proc"
        );
        assert!(r["services"][s]["pid"].as_u64().unwrap_or(0) > 0);
    }
    for f in [
        "grpc_unary",
        "pg_single_insert",
        "pg_counter_row",
        "pg_gap_free_batch32",
        "pg_unnest",
        "pg_copy",
        "redis_multiplexed",
    ] {
        assert!(r["floors"][f].is_object(), "floor {f} present");
        assert_eq!(r["floors"][f]["errors"], 0, "floor {f}: {}", r["floors"][f]);
    }
    assert_eq!(r["floors"]["pg_gap_free_verified"], true);
    for key in ["nproc", "cpu_model", "mem_total_kib", "kernel"] {
        assert!(!r["machine"][key].is_null(), "machine.{key}");
    }
    // The server settings the figures depend on, read from the server itself.
    for setting in [
        "synchronous_commit",
        "fsync",
        "wal_init_zero",
        "min_wal_size",
    ] {
        let v = r["machine"]["postgres_settings"][setting].as_str();
        assert!(
            v.is_some_and(|v| !v.is_empty()),
            "machine.postgres_settings.{setting}: {}",
            r["machine"]["postgres_settings"]
        );
    }
    assert!(!r["targets"].as_array().expect("targets").is_empty());
    assert!(!r["ratios"].as_array().expect("ratios").is_empty());

    // CPU per item of each targeted workload, against what its target leaves on these cores.
    let budgets = r["cpu_budgets"].as_array().expect("cpu_budgets");
    let per: Vec<&str> = budgets
        .iter()
        .map(|b| b["per"].as_str().expect("per"))
        .collect();
    assert_eq!(per, ["event sent", "certificate", "unit"]);
    let nproc = r["machine"]["nproc"].as_f64().expect("nproc");
    for b in budgets {
        let first = b["phases"][0].as_str().expect("phase");
        let phase = r["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .find(|p| p["name"] == first)
            .expect("the budget's phase is in the report");
        let items = b["items"].as_f64().expect("items");
        assert_eq!(items, phase["items"].as_f64().expect("phase items"), "{b}");
        let target = b["target_per_s"].as_f64().expect("target");
        let allowance = b["allowance_s"].as_f64().expect("allowance");
        let budget = nproc * 1e6 * (1.0 / target + allowance / items);
        assert!(
            (b["budget_us"].as_f64().expect("budget") - budget).abs() <= 0.051,
            "{b}: budget {budget}"
        );
        let summed: f64 = b["by_process_us"]
            .as_object()
            .expect("by process")
            .iter()
            .filter(|(k, _)| !k.contains(':'))
            .map(|(_, v)| v.as_f64().expect("µs"))
            .sum();
        let total = b["total_us"].as_f64().expect("total");
        assert!(
            (total - summed).abs()
                <= 0.05 * b["by_process_us"].as_object().map_or(1, |m| m.len()) as f64 + 1e-9,
            "{b}: parts sum to {summed}"
        );
    }
    let tax = &budgets[0];
    assert_eq!(
        tax["phases"],
        serde_json::json!(["tax_feed", "readiness_visible"])
    );
    assert_eq!(tax["allowance_s"].as_f64(), Some(0.1), "{tax}");
    let _ = std::fs::remove_dir_all(&dir);
}
