//! `strata bench` runs against a real agent and reports what it measured: behaviour, not
//! speed (etcd + s3s-fs).

use strata_tests::{AgentKind, AgentProcess, TestEnv, cli_ok, unique_name};

fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("output")).expect("--json ends with JSON")
}

#[test]
fn bench_produce_consume_and_e2e_report_throughput_and_costs() {
    let env = TestEnv::from_env();
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env,
            cluster: unique_name("bench"),
            bucket: unique_name("bench"),
        },
        &[],
    );
    let server = agent.server();
    let produce = last_json(&cli_ok(
        &server,
        &[
            "bench",
            "produce",
            "--topic",
            "smoke",
            "--partitions",
            "4",
            "--record-size",
            "512",
            "--duration",
            "2",
            "--producers",
            "2",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(produce["benchmark"], "produce");
    assert_eq!(produce["failed"], 0);
    let records = produce["records"].as_u64().unwrap();
    assert!(
        records > 0 && produce["records_per_sec"].as_f64().unwrap() > 0.0,
        "{produce}"
    );
    assert_eq!(produce["bytes"].as_u64().unwrap(), records * 512);
    assert!(produce["puts"].as_u64().unwrap() > 0, "{produce}");
    assert!(produce["commits"].as_u64().unwrap() > 0, "{produce}");
    assert!(produce["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // Transactional producers: every record acknowledged, transactions committed, their
    // commit latency reported.
    let transactional = last_json(&cli_ok(
        &server,
        &[
            "bench",
            "produce",
            "--topic",
            "smoke-transactional",
            "--partitions",
            "4",
            "--record-size",
            "512",
            "--duration",
            "2",
            "--producers",
            "2",
            "--transactional-id",
            "smoke",
            "--commit-interval-ms",
            "100",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(transactional["failed"], 0, "{transactional}");
    assert!(
        transactional["records"].as_u64().unwrap() > 0,
        "{transactional}"
    );
    assert!(
        transactional["transactions"].as_u64().unwrap() > 2,
        "{transactional}"
    );
    assert!(transactional["commit_latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // Catch-up reads exactly what was produced.
    let consume = last_json(&cli_ok(
        &server,
        &["bench", "consume", "--topic", "smoke", "--json", "--quiet"],
        b"",
    ));
    assert_eq!(consume["records"].as_u64().unwrap(), records, "{consume}");

    // At the tail, everything comes from the write-through cache.
    let e2e = last_json(&cli_ok(
        &server,
        &[
            "bench",
            "e2e",
            "--topic",
            "smoke-e2e",
            "--partitions",
            "2",
            "--rate",
            "500",
            "--duration",
            "2",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert!(e2e["records"].as_u64().unwrap() > 0, "{e2e}");
    assert_eq!(e2e["gets"], 0, "{e2e}");
    assert!(e2e["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // The many-partitions row (x), smaller: the agent takes each partition as its first
    // records arrive, and every acknowledged record is read back.
    let wide = last_json(&cli_ok(
        &server,
        &[
            "bench",
            "produce",
            "--topic",
            "smoke-wide",
            "--partitions",
            "300",
            "--record-size",
            "256",
            "--duration",
            "2",
            "--producers",
            "2",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(wide["failed"], 0, "{wide}");
    let wide_records = wide["records"].as_u64().unwrap();
    assert!(wide_records > 0, "{wide}");
    let wide_read = last_json(&cli_ok(
        &server,
        &[
            "bench",
            "consume",
            "--topic",
            "smoke-wide",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(
        wide_read["records"].as_u64().unwrap(),
        wide_records,
        "{wide_read}"
    );
}

/// The low-latency row (l): an agent flushing 5 ms after a segment's first record,
/// e2e at a low rate, reports its produce and e2e latencies and what it costs in PUTs.
#[test]
fn bench_low_latency_profile_reports_latencies_and_puts_per_gb() {
    let env = TestEnv::from_env();
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env,
            cluster: unique_name("bench-l"),
            bucket: unique_name("bench-l"),
        },
        &["--linger-ms", "5"],
    );
    let e2e = last_json(&cli_ok(
        &agent.server(),
        &[
            "bench",
            "e2e",
            "--topic",
            "smoke-l",
            "--partitions",
            "4",
            "--record-size",
            "1024",
            "--rate",
            "200",
            "--duration",
            "2",
            "--json",
            "--quiet",
        ],
        b"",
    ));
    assert_eq!(e2e["failed"], 0, "{e2e}");
    assert!(e2e["records"].as_u64().unwrap() > 0, "{e2e}");
    assert_eq!(e2e["gets"], 0, "{e2e}");
    assert!(e2e["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{e2e}");
    assert!(
        e2e["produce_latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{e2e}"
    );
    assert!(e2e["puts_per_gb"].as_f64().unwrap() > 0.0, "{e2e}");
}

#[test]
fn bench_object_store_measures_puts_and_gets() {
    let env = TestEnv::from_env();
    let out = cli_ok(
        "http://127.0.0.1:1",
        &[
            "bench",
            "object-store",
            "--object-store",
            &format!("s3://{}/x", unique_name("raw")),
            "--s3-endpoint",
            &env.s3_endpoint,
            "--s3-access-key",
            &env.s3_access_key,
            "--s3-secret-key",
            &env.s3_secret_key,
            "--s3-allow-http",
            "--create-bucket",
            "--object-size",
            "100000",
            "--get-size",
            "10000",
            "--duration",
            "1",
            "--json",
        ],
        b"",
    );
    let report = last_json(&out);
    let puts = report["puts"].as_u64().unwrap();
    assert!(puts > 0 && report["gets"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["bytes"].as_u64().unwrap(), puts * 100_000);
    assert!(report["get_mb_per_sec"].as_f64().unwrap() > 0.0);
}
