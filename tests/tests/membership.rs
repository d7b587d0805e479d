//! Agents register under an etcd lease: the lease is their liveness (etcd + s3s-fs).

use std::time::{Duration, Instant};

use strata_client::Admin;
use strata_tests::{AgentKind, AgentProcess, TestEnv, unique_name};

async fn live_agents(server: &str) -> Vec<String> {
    let mut ids: Vec<String> = Admin::connect(server)
        .await
        .unwrap()
        .metadata(vec![])
        .await
        .unwrap()
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_agent_drops_out_after_its_lease_and_a_stopped_one_at_once() {
    let kind = AgentKind::Agent {
        env: TestEnv::from_env(),
        cluster: unique_name("members"),
        bucket: unique_name("members"),
    };
    let args = ["--lease-ttl-secs", "2"];
    let mut a = AgentProcess::start(kind.clone(), &args);
    let mut b = AgentProcess::start(kind.clone(), &args);
    let c = AgentProcess::start(kind, &args);
    let id = |p: &AgentProcess| format!("agent-{}", p.server().rsplit(':').next().unwrap());
    let (a_id, b_id, c_id) = (id(&a), id(&b), id(&c));
    let mut all = vec![a_id.clone(), b_id.clone(), c_id.clone()];
    all.sort();
    assert_eq!(live_agents(&c.server()).await, all);

    // SIGTERM: the agent deregisters on its way out.
    tokio::task::block_in_place(|| b.terminate());
    let mut left = vec![a_id.clone(), c_id.clone()];
    left.sort();
    assert_eq!(live_agents(&c.server()).await, left);

    // SIGKILL: nobody deregisters; the lease expires within its TTL (2 s) plus etcd's
    // expiry granularity.
    tokio::task::block_in_place(|| a.kill());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live = live_agents(&c.server()).await;
        if live == vec![c_id.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed agent is still listed: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn an_agent_with_another_object_store_is_refused() {
    let env = TestEnv::from_env();
    let cluster = unique_name("mismatch");
    let _first = AgentProcess::start(
        AgentKind::Agent {
            env: env.clone(),
            cluster: cluster.clone(),
            bucket: unique_name("first"),
        },
        &[],
    );
    let output = env
        .agent_command(
            &cluster,
            &format!("s3://{}/segments-test", unique_name("second")),
        )
        .args([
            "--listen",
            &format!("127.0.0.1:{}", strata_tests::free_port()),
        ])
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{}", strata_tests::free_port()),
        ])
        .arg("--create-bucket")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the second agent started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("this cluster's segments live in"),
        "{stderr}"
    );
}

/// `strata cluster status` rows as (agent, zone, partitions, role), and the controller.
fn cluster_status(server: &str) -> (String, Vec<(String, String, usize, String)>) {
    let out = strata_tests::cli_ok(server, &["cluster", "status"], b"");
    let mut controller = String::new();
    let mut agents = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["controller", c] => controller = c.to_string(),
            [id, _address, zone, partitions, role] if *id != "agent" => agents.push((
                id.to_string(),
                zone.to_string(),
                partitions.parse().unwrap(),
                role.to_string(),
            )),
            _ => {}
        }
    }
    agents.sort();
    (controller, agents)
}

/// Waits until `strata cluster status` shows `agents` agents serving `each` partitions.
fn wait_for_even_status(
    server: &str,
    agents: usize,
    each: usize,
) -> (String, Vec<(String, String, usize, String)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster_status(server);
        if status.1.len() == agents && status.1.iter().all(|a| a.2 == each) {
            return status;
        }
        assert!(Instant::now() < deadline, "not spread evenly: {status:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_controller_spreads_partitions_and_a_new_one_keeps_them() {
    let kind = AgentKind::Agent {
        env: TestEnv::from_env(),
        cluster: unique_name("controller"),
        bucket: unique_name("controller"),
    };
    let mut agents: Vec<AgentProcess> = ["a", "b", "c"]
        .iter()
        .map(|zone| AgentProcess::start(kind.clone(), &["--lease-ttl-secs", "3", "--zone", zone]))
        .collect();
    let server = agents[2].server();
    strata_tests::cli_ok(
        &server,
        &["topic", "create", "spread", "--partitions", "9"],
        b"",
    );
    let (controller, rows) = wait_for_even_status(&server, 3, 3);
    assert_eq!(rows.iter().filter(|r| r.3 == "controller").count(), 1);
    assert!(
        rows.iter()
            .any(|r| r.0 == controller && r.3 == "controller")
    );
    let mut zones: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    zones.sort();
    assert_eq!(zones, ["a", "b", "c"]);

    // The controller dies: another agent is elected and moves only the dead one's
    // partitions; the survivors keep theirs.
    let owners = |server: &str| -> Vec<String> {
        let out = strata_tests::cli_ok(server, &["topic", "describe", "spread"], b"");
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 5 && f[0] != "partition").then(|| f[3].to_string())
            })
            .collect()
    };
    let before = owners(&server);
    let dead = agents
        .iter()
        .position(|a| a.agent_id() == controller)
        .unwrap();
    agents[dead].kill();
    let survivor = agents[(dead + 1) % 3].server();
    // 9 partitions over 2 agents: 5 and 4.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (new_controller, rows) = loop {
        let status = cluster_status(&survivor);
        let mut counts: Vec<usize> = status.1.iter().map(|r| r.2).collect();
        counts.sort();
        if counts == [4, 5] && !status.0.is_empty() && status.0 != "none elected" {
            break status;
        }
        assert!(Instant::now() < deadline, "not moved: {status:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(new_controller, controller);
    assert!(
        rows.iter()
            .any(|r| r.0 == new_controller && r.3 == "controller")
    );
    let after = owners(&survivor);
    for (b, a) in before.iter().zip(&after) {
        if *b != controller {
            assert_eq!(
                b, a,
                "a surviving agent's partition moved: {before:?} -> {after:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_produce_to_another_agents_partition_is_forwarded_once() {
    use strata_client::proto as pb;
    use strata_client::proto::log_client::LogClient;

    let kind = AgentKind::Agent {
        env: TestEnv::from_env(),
        cluster: unique_name("forward"),
        bucket: unique_name("forward"),
    };
    let a = AgentProcess::start(kind.clone(), &[]);
    let b = AgentProcess::start(kind, &[]);
    let admin = Admin::connect(&a.server()).await.unwrap();
    admin
        .create_topic("fwd", 2, Default::default())
        .await
        .unwrap();
    // Wait until each agent serves one partition; find b's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let b_partition = loop {
        let metadata = admin.metadata(vec!["fwd".into()]).await.unwrap();
        let owners: Vec<String> = metadata.topics[0]
            .partitions
            .iter()
            .map(|p| p.owner_agent_id.clone())
            .collect();
        if owners.contains(&a.agent_id()) && owners.contains(&b.agent_id()) {
            break owners.iter().position(|o| *o == b.agent_id()).unwrap() as i32;
        }
        assert!(Instant::now() < deadline, "not spread: {owners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let request = pb::ProduceRequest {
        topic_id: String::new(),
        topic: "fwd".into(),
        partition: Some(b_partition),
        records: vec![pb::Record {
            value: Some("forwarded".into()),
            ..Default::default()
        }],
        acks: pb::Acks::All as i32,
        ..Default::default()
    };

    // Unary Produce to a: forwarded to b, which assigns the offset.
    let mut log_a = LogClient::connect(a.server()).await.unwrap();
    let response = log_a.produce(request.clone()).await.unwrap().into_inner();
    assert_eq!(response.positions.len(), 1);
    assert_eq!(response.positions[0].partition, b_partition);
    let metrics_url = a.metrics_url();
    let metrics = tokio::task::spawn_blocking(move || strata_tests::http_get(&metrics_url))
        .await
        .unwrap();
    let forwarded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_produce_forwarded_total "))
        .expect("the forwarded counter is exported");
    assert_eq!(forwarded.trim(), "1");

    // A produce session is not forwarded (it would lose its ordering): the agent answers
    // FAILED_PRECONDITION naming the owner, and the SDK routes by metadata instead.
    let session = log_a
        .produce_session(tokio_stream::iter(vec![pb::ProduceSessionRequest {
            sequence: 7,
            request: Some(request),
        }]))
        .await
        .unwrap();
    let answer = session.into_inner().message().await.unwrap().unwrap();
    assert_eq!(answer.sequence, 7);
    assert_eq!(answer.error_code, tonic::Code::FailedPrecondition as i32);
    assert!(
        answer.error_message.contains(&b.agent_id()),
        "{}",
        answer.error_message
    );
}

/// An agent that owns a partition another agent took meanwhile (its view of the
/// assignment was behind, and it got a record) learns it within a few seconds even with
/// no write to find out by: it gives the partition up, takes it again under a newer
/// epoch, and serves the stored high watermark, not the one it knew. Here the other
/// owner is written into etcd directly, with a record the agent never saw.
#[tokio::test(flavor = "multi_thread")]
async fn an_owner_fenced_without_knowing_it_finds_out_and_serves_the_stored_state() {
    let env = TestEnv::from_env();
    let cluster = unique_name("zombie");
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env: env.clone(),
            cluster: cluster.clone(),
            bucket: unique_name("zombie"),
        },
        &[],
    );
    let server = agent.server();
    strata_tests::compactor::create_topic(&server, "z", 1, &[]).await;
    strata_tests::cli_ok(&server, &["produce", "z", "--partition", "0"], b"one\n");
    let admin = Admin::connect(&server).await.unwrap();
    let describe = async || admin.describe_topic("z").await.unwrap();
    let before = describe().await;
    let (epoch, topic_id) = (
        before.partitions[0].owner_epoch,
        before.topic.unwrap().topic_id,
    );
    // Another agent took it (a newer epoch) and committed a second record: the high
    // watermark moved to 2 behind this agent's back (the entry points at no object, so
    // only the watermark is checked).
    let etcd = |key: &str, value: &str| {
        let status = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &env.etcd, "put", key, value])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let partition = format!("/strata/{cluster}/partitions/z/0");
    etcd(
        &format!("{partition}/owner"),
        &format!(
            r#"{{"epoch":{},"agent_id":"ghost","topic_id":"{topic_id}"}}"#,
            epoch + 1
        ),
    );
    etcd(&format!("{partition}/hwm"), "2");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = describe().await;
        let p = &now.partitions[0];
        if p.owner_epoch > epoch + 1 && p.high_watermark == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent still holds epoch {epoch}: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agent
            .log_text()
            .contains("partition taken by another agent meanwhile")
    );
}
