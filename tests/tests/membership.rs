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
