//! No silent wedge and no unbounded connection: a panicking segment PUT fails the agent
//! (NOT_SERVING, producers refused, exit, restart, nothing acknowledged lost); a torn
//! embedded-metastore append loses nothing acknowledged across a SIGKILL; a ProduceSession
//! that never reads its responses is held back and costs the agent bounded memory (real
//! etcd + s3s-fs; `strata dev` for the embedded metastore).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use strata_client::proto;
use strata_client::proto::log_client::LogClient;
use strata_tests::compactor::create_topic;
use strata_tests::history::{Load, check};
use strata_tests::{AgentKind, AgentProcess, cli_ok, one_record, report};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The agent's overall health status, if it answers.
async fn health(server: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(server.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_segment_put_fails_the_agent_and_loses_nothing() {
    let mut agent = AgentProcess::start_with_env(
        AgentKind::new_cluster("putpanic"),
        &[],
        &[("STRATA_FAILPOINT", "put-panic:60")],
    );
    let server = agent.server();
    create_topic(&server, "events", 4, &[]).await;
    assert_eq!(health(&server).await, Some(ServingStatus::Serving));
    let load = Load::start(std::slice::from_ref(&server), "events", 2).await;

    // The 60th segment's PUT task panics: the agent must say so within a second.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed_at = None;
    let not_serving_at = loop {
        assert!(Instant::now() < deadline, "the failpoint never fired");
        if failed_at.is_none() && agent.log_text().contains("agent part failed") {
            failed_at = Some(Instant::now());
        }
        if health(&server).await == Some(ServingStatus::NotServing) {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failed_at = failed_at.unwrap_or(not_serving_at);
    let to_not_serving = not_serving_at.saturating_duration_since(failed_at);
    assert!(
        to_not_serving < Duration::from_secs(1),
        "NOT_SERVING {to_not_serving:?} after the failure"
    );
    // It exits non-zero, and its supervisor (this test) starts it again.
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("a failed agent exits");
    assert!(!status.success(), "{status}");
    assert!(agent.log_text().contains("segment write failed"));
    agent.set_env(&[]);
    agent.start_again();
    let acked_before = load.history().acked();
    let resumed = Instant::now() + Duration::from_secs(60);
    while load.history().acked() < acked_before + 500 {
        assert!(Instant::now() < resumed, "producers did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = load.stop().await;
    let found = check(&history, &server, "events").await;
    report(&format!(
        "WEDGE put-panic: NOT_SERVING {} ms after the failure, exit {status}; {found}",
        to_not_serving.as_millis()
    ));
    assert_eq!(found.lost, 0, "{found}");
    assert!(found.acked > 500, "{found}");
}

/// One record per request, acknowledged or not: `(value, offset)` of those acknowledged.
async fn produce_one_by_one(
    server: &str,
    topic: &str,
    count: usize,
) -> (Vec<(String, i64)>, usize) {
    let channel = strata_client::connect(server).await.unwrap();
    let mut log = LogClient::new(channel.transport());
    let mut acked = Vec::new();
    let mut failed = 0;
    for i in 0..count {
        let value = format!("r{i}");
        match log.produce(one_record(topic, 0, &value)).await {
            Ok(response) => acked.push((value, response.into_inner().positions[0].offset)),
            Err(_) => failed += 1,
        }
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_metastore_append_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = AgentProcess::start_with_env(
        AgentKind::Dev {
            data_dir: dir.path().to_path_buf(),
        },
        &["--linger-ms", "0"],
        &[("STRATA_FAILPOINT", "metastore-torn-append:40")],
    );
    let server = dev.server();
    create_topic(&server, "torn", 1, &[]).await;
    let (acked, failed) = produce_one_by_one(&server, "torn", 120).await;
    assert!(
        dev.log_text().contains("metastore append failed"),
        "the failpoint fired:\n{}",
        dev.log_text()
    );
    dev.kill();
    dev.set_env(&[]);
    dev.start_again();
    let out = cli_ok(
        &server,
        &["consume", "torn", "--from-beginning", "--format", "%o %v"],
        b"",
    );
    let stored: BTreeMap<i64, String> = out
        .lines()
        .map(|line| {
            let (offset, value) = line.split_once(' ').unwrap();
            (offset.parse().unwrap(), value.to_string())
        })
        .collect();
    let lost: Vec<&(String, i64)> = acked
        .iter()
        .filter(|(value, offset)| stored.get(offset) != Some(value))
        .collect();
    report(&format!(
        "WEDGE torn metastore append: {} acknowledged, {failed} refused, {} stored after \
         SIGKILL and restart, {} lost",
        acked.len(),
        stored.len(),
        lost.len()
    ));
    assert!(failed >= 1, "the torn append failed its request");
    assert!(acked.len() >= 100, "later appends were acknowledged");
    assert!(lost.is_empty(), "lost: {lost:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_never_reads_is_held_back() {
    // A small block cache, so that what the agent holds for the session shows.
    let agent = AgentProcess::start(
        AgentKind::new_cluster("flood"),
        &["--cache-memory-bytes", &(16 << 20).to_string()],
    );
    let server = agent.server();
    create_topic(&server, "flood", 1, &[]).await;
    create_topic(&server, "other", 1, &[]).await;
    let pid = agent.pid().unwrap();
    let rss_before = rss_kib(pid);

    // 400,000 requests of 10 KiB (4 GiB), made as the transport asks for them; the
    // responses are never read. The SDK offers an 8 MiB HTTP/2 window, so some 80,000
    // small answers fit in it before the agent must stop.
    const REQUESTS: u64 = 400_000;
    let pulled = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'x'; 10 << 10]);
    let requests = futures::stream::iter(0..REQUESTS).map({
        let pulled = pulled.clone();
        move |sequence| {
            pulled.fetch_add(1, Ordering::Relaxed);
            proto::ProduceSessionRequest {
                sequence,
                request: Some(proto::ProduceRequest {
                    topic: "flood".into(),
                    topic_id: String::new(),
                    partition: Some(0),
                    records: vec![proto::Record {
                        value: Some(value.clone()),
                        ..Default::default()
                    }],
                    acks: proto::Acks::All as i32,
                    ..Default::default()
                }),
            }
        }
    });
    let channel = strata_client::connect(&server).await.unwrap();
    let mut flood = LogClient::new(channel.transport());
    let _unread = flood.produce_session(requests).await.unwrap();

    // Meanwhile another client produces, each request acknowledged.
    let (acked, failed) = produce_one_by_one(&server, "other", 50).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = rss_kib(pid);
    let sent = pulled.load(Ordering::Relaxed);
    report(&format!(
        "FLOOD produce session: {sent} of {REQUESTS} requests taken by the transport; agent \
         RSS {} MiB before, {} MiB after; other client: {} acknowledged, {failed} failed",
        rss_before / 1024,
        rss_after / 1024,
        acked.len()
    ));
    assert_eq!((acked.len(), failed), (50, 0), "the other client is served");
    // The agent reads on while its answers fit the client's receive window (refusals
    // once 64 MiB wait for the store are small and quick), then stops reading.
    assert!(
        sent < REQUESTS / 2,
        "{sent} requests taken: the session is not held back"
    );
    // Pending bytes (64 MiB), the cache (16 MiB) and buffers: bounded, not 1 GiB.
    assert!(
        rss_after < rss_before + 256 * 1024,
        "agent RSS grew from {} to {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_waiting_on_a_panicked_put_gets_unavailable() {
    // The very first segment's PUT task panics: the one produce waiting on it.
    let mut agent = AgentProcess::start_with_env(
        AgentKind::new_cluster("putpanic1"),
        &[],
        &[("STRATA_FAILPOINT", "put-panic:1")],
    );
    let server = agent.server();
    create_topic(&server, "first", 1, &[]).await;
    let channel = strata_client::connect(&server).await.unwrap();
    let mut log = LogClient::new(channel.transport());
    let request = one_record("first", 0, "never acknowledged");
    let refused = log.produce(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Refused while it says NOT_SERVING (within a second), then it exits.
    let deadline = Instant::now() + Duration::from_secs(1);
    while health(&server).await != Some(ServingStatus::NotServing) {
        assert!(Instant::now() < deadline, "still SERVING a second later");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = log.produce(request).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unavailable, "{again:?}");
    let status = agent.wait_exit(Duration::from_secs(30)).expect("it exits");
    assert!(!status.success());
    // Restarted: the refused record is nowhere, and the log takes new ones.
    agent.set_env(&[]);
    agent.start_again();
    cli_ok(
        &server,
        &["produce", "first", "--partition", "0"],
        b"after\n",
    );
    let out = cli_ok(
        &server,
        &["consume", "first", "--from-beginning", "--format", "%o %v"],
        b"",
    );
    assert_eq!(out, "0 after\n");
}
