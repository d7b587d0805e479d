//! Faults of a three-agent cluster under load (real etcd, s3s-fs and `strata agent`
//! processes): SIGKILL of an owner, a paused (zombie) agent, an agent cut off from etcd,
//! an etcd restart, and a rolling restart. Every test checks its history with the one
//! checker (`strata_tests::history`) and prints a `RELIABILITY` line with its figures
//! (summarized in docs/RELIABILITY.md).
//!
//! The tests run one at a time: each runs three agents, and the machine may have two cores.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Admin, ProducerConfig};
use strata_tests::etcd::{EtcdProcess, EtcdProxy};
use strata_tests::history::{Load, Report, SendKind, check};
use strata_tests::{AgentKind, AgentProcess, TestEnv, unique_name};

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 6;
const AGENTS: usize = 3;
/// The agents' lease TTL, seconds (shorter than the default 10 s to keep the tests short).
const LEASE_TTL_SECS: u64 = 4;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `AGENTS` agents of a new cluster; `etcd_of(i)` is agent `i`'s etcd endpoint.
fn start_agents(env: &TestEnv, etcd_of: impl Fn(usize) -> String) -> Vec<AgentProcess> {
    start_agents_with(env, etcd_of, &[])
}

/// [`start_agents`], each agent with the environment variables `vars`.
fn start_agents_with(
    env: &TestEnv,
    etcd_of: impl Fn(usize) -> String,
    vars: &[(&str, &str)],
) -> Vec<AgentProcess> {
    let (cluster, bucket) = (unique_name("cluster"), unique_name("cluster"));
    let ttl = LEASE_TTL_SECS.to_string();
    (0..AGENTS)
        .map(|i| {
            let mut env = env.clone();
            env.etcd = etcd_of(i);
            AgentProcess::start_with_env(
                AgentKind::Agent {
                    env,
                    cluster: cluster.clone(),
                    bucket: bucket.clone(),
                },
                &["--lease-ttl-secs", &ttl],
                vars,
            )
        })
        .collect()
}

/// Partition owners as `server` reports them; empty while it cannot answer (its etcd is
/// coming back).
async fn owners(server: &str) -> BTreeMap<u32, String> {
    let Ok(admin) = Admin::connect(server).await else {
        return BTreeMap::new();
    };
    match admin.metadata(vec![TOPIC.to_string()]).await {
        Ok(metadata) => metadata.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition as u32, p.owner_agent_id.clone()))
            .collect(),
        Err(e) => {
            eprintln!("metadata from {server} failed, retrying: {e}");
            BTreeMap::new()
        }
    }
}

/// Waits up to `secs` for `condition` on the owners `server` reports; panics with `what`.
async fn wait_for_owners(
    server: &str,
    secs: u64,
    what: &str,
    condition: impl Fn(&BTreeMap<u32, String>) -> bool,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let owners = owners(server).await;
        // An empty answer is no answer: the agent could not read the metastore.
        if !owners.is_empty() && condition(&owners) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s; owners: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no partition is owned by `agent` and every one has an owner; returns how
/// long that took.
async fn wait_until_moved_away(server: &str, agent: &str, what: &str) -> Duration {
    wait_for_owners(server, 30, what, |o| {
        o.values().all(|owner| owner != agent && !owner.is_empty())
    })
    .await
}

/// Waits until `agent` owns a partition again.
async fn wait_until_rejoined(server: &str, agent: &str, what: &str) {
    wait_for_owners(server, 30, what, |o| o.values().any(|owner| owner == agent)).await;
}

/// Creates the topic and waits until its partitions are spread over every agent.
async fn create_topic(agents: &[AgentProcess]) {
    Admin::connect(&agents[0].server())
        .await
        .unwrap()
        .create_topic(TOPIC, PARTITIONS, Default::default())
        .await
        .unwrap();
    let ids: Vec<String> = agents.iter().map(AgentProcess::agent_id).collect();
    wait_for_owners(
        &agents[0].server(),
        20,
        "partitions spread over the agents",
        |o| {
            ids.iter()
                .all(|id| o.values().filter(|owner| *owner == id).count() == 2)
        },
    )
    .await;
}

fn servers(agents: &[AgentProcess]) -> Vec<String> {
    agents.iter().map(AgentProcess::server).collect()
}

/// Retried idempotent batches the running agents answered with their first offsets
/// (instead of writing them again).
fn duplicates_answered(agents: &mut [AgentProcess]) -> u64 {
    let mut total = 0;
    for agent in agents.iter_mut() {
        if !agent.is_running() {
            continue;
        }
        let metrics = strata_tests::http_get(&agent.metrics_url());
        total += metrics
            .lines()
            .find_map(|l| l.strip_prefix("strata_produce_duplicate_batches_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    total
}

/// The figures every fault test must show.
fn assert_safe(test: &str, report: &Report, agents: &mut [AgentProcess]) {
    strata_tests::report(&format!(
        "RELIABILITY {test}: {report} retries_answered_with_first_offsets={}",
        duplicates_answered(agents)
    ));
    assert!(report.acked > 0, "{test}: nothing was acknowledged");
    assert_eq!(report.lost, 0, "{test}: acknowledged records were lost");
    // The load's producers are idempotent (the SDK's default): a retry of a send whose
    // outcome was unknown is answered with the offsets it got, never written twice.
    assert_eq!(
        report.duplicated, 0,
        "{test}: records written twice by an idempotent producer"
    );
    assert_eq!(
        report.reordered, 0,
        "{test}: records of an idempotent producer stored out of sending order"
    );
    assert_eq!(
        report.out_of_order, 0,
        "{test}: offsets not dense and increasing"
    );
}

/// Every partition acknowledged records after `since`.
fn assert_all_partitions_served(test: &str, load: &Load, since: Duration) {
    let served = load.history().acked_per_partition_since(since);
    assert_eq!(
        served.len(),
        PARTITIONS as usize,
        "{test}: partitions without acknowledgements after the fault: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_an_owner_loses_nothing_and_its_partitions_move() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut agents = start_agents(&env, |_| env.etcd.clone());
    create_topic(&agents).await;
    // Producers bootstrap at agents 0 and 1; the victim is agent 2, which owns partitions
    // both producers write to.
    let load = Load::start(&servers(&agents[..2]), TOPIC, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = agents[2].agent_id();
    let fault_at = load.history().now();
    tokio::task::block_in_place(|| agents[2].kill());
    let moved = wait_until_moved_away(
        &agents[0].server(),
        &victim,
        "the victim's partitions moved",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_all_partitions_served("sigkill", &load, fault_at + moved);
    let history = load.stop().await;
    let report = check(&history, &agents[0].server(), TOPIC).await;
    strata_tests::report(&format!(
        "RELIABILITY sigkill: partitions reassigned {:.1} s after the kill (lease TTL {LEASE_TTL_SECS} s)",
        moved.as_secs_f64()
    ));
    assert_safe("sigkill", &report, &mut agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_agent_is_fenced_and_acknowledges_nothing_it_lost() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut agents = start_agents(&env, |_| env.etcd.clone());
    create_topic(&agents).await;
    let load = Load::start(&servers(&agents[..2]), TOPIC, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let zombie = agents[2].agent_id();
    agents[2].pause();
    let fault_at = load.history().now();
    let moved = wait_until_moved_away(
        &agents[0].server(),
        &zombie,
        "the zombie's partitions moved",
    )
    .await;
    // The others serve its partitions for a while; then it wakes up, still believing it
    // owns them, with produce requests and a flush in its pipeline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agents[2].resume();
    // It notices its lease is gone, gives everything up, registers again and is given
    // its share back.
    wait_until_rejoined(&agents[0].server(), &zombie, "the zombie rejoined").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_all_partitions_served("zombie", &load, fault_at + moved);
    let history = load.stop().await;
    let report = check(&history, &agents[0].server(), TOPIC).await;
    let log = agents[2].log_text();
    assert!(
        log.contains("registration lost"),
        "the zombie did not notice it lost its lease:\n{log}"
    );
    strata_tests::report(&format!(
        "RELIABILITY zombie: partitions reassigned {:.1} s after SIGSTOP (lease TTL {LEASE_TTL_SECS} s); \
         on waking it had {} flush commits fenced and gave up its partitions",
        moved.as_secs_f64(),
        log.matches("flush commit fenced").count()
    ));
    assert_safe("zombie", &report, &mut agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_cut_from_etcd_stops_writing_and_rejoins() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut proxy = EtcdProxy::start(&env.etcd).await;
    let through_proxy = proxy.endpoint();
    let mut agents = start_agents(&env, |i| {
        if i == 2 {
            through_proxy.clone()
        } else {
            env.etcd.clone()
        }
    });
    create_topic(&agents).await;
    let load = Load::start(&servers(&agents[..2]), TOPIC, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut_off = agents[2].agent_id();
    proxy.cut();
    let fault_at = load.history().now();
    let moved = wait_until_moved_away(
        &agents[0].server(),
        &cut_off,
        "the cut agent's partitions moved",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore().await;
    wait_until_rejoined(&agents[0].server(), &cut_off, "the cut agent rejoined").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_all_partitions_served("etcd-cut", &load, fault_at + moved);
    let history = load.stop().await;
    let report = check(&history, &agents[0].server(), TOPIC).await;
    let log = agents[2].log_text();
    assert!(
        log.contains("registration lost"),
        "the cut agent did not notice it lost its lease:\n{log}"
    );
    strata_tests::report(&format!(
        "RELIABILITY etcd-cut: partitions reassigned {:.1} s after the cut (lease TTL {LEASE_TTL_SECS} s)",
        moved.as_secs_f64()
    ));
    assert_safe("etcd-cut", &report, &mut agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_restart_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut etcd = tokio::task::block_in_place(EtcdProcess::start);
    let endpoint = etcd.endpoint();
    let mut agents = start_agents(&env, |_| endpoint.clone());
    create_topic(&agents).await;
    let load = Load::start(&servers(&agents), TOPIC, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_before = load.history().acked();
    etcd.stop();
    let fault_at = load.history().now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| etcd.start_again());
    // Service resumes once the agents reach etcd again.
    let resumed = wait_for_owners(&agents[0].server(), 30, "every partition owned", |o| {
        o.values().all(|owner| !owner.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_all_partitions_served("etcd-restart", &load, fault_at + resumed);
    let history = load.stop().await;
    assert!(
        history.acked() > acked_before,
        "no progress after etcd came back"
    );
    let report = check(&history, &agents[0].server(), TOPIC).await;
    assert_safe("etcd-restart", &report, &mut agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_send() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut agents = start_agents(&env, |_| env.etcd.clone());
    create_topic(&agents).await;
    let load = Load::start(&servers(&agents), TOPIC, 3).await;
    for i in 0..AGENTS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id = agents[i].agent_id();
        let survivor = agents[(i + 1) % AGENTS].server();
        tokio::task::block_in_place(|| agents[i].terminate());
        // Its partitions move at once (it deregistered), then it comes back.
        wait_until_moved_away(&survivor, &id, "the stopped agent's partitions moved").await;
        tokio::task::block_in_place(|| agents[i].start_again());
        wait_for_owners(&survivor, 30, "the restarted agent got its share", |o| {
            o.values().filter(|owner| **owner == id).count() == 2
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let history = load.stop().await;
    let report = check(&history, &agents[0].server(), TOPIC).await;
    assert_safe("rolling-restart", &report, &mut agents);
    assert_eq!(
        report.failed, 0,
        "rolling restart: sends failed despite retries"
    );
}

/// Flush commits whose reply is lost (they committed, but the agent cannot know: what an
/// etcd cut mid-commit does, made frequent by a failpoint on every agent). The SDK sends
/// those batches again: the default, idempotent producers get their first offsets back
/// and write nothing twice; producers without idempotence, on another topic of the same
/// cluster at the same time, write duplicates — the checker sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_commit_replies_duplicate_nothing_an_idempotent_producer_sent() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::from_env();
    let mut agents = start_agents_with(
        &env,
        |_| env.etcd.clone(),
        &[("STRATA_FAILPOINT", "commit-reply-lost:*15")],
    );
    create_topic(&agents).await;
    const PLAIN: &str = "faults-not-idempotent";
    Admin::connect(&agents[0].server())
        .await
        .unwrap()
        .create_topic(PLAIN, PARTITIONS, Default::default())
        .await
        .unwrap();
    let servers = servers(&agents);
    let idempotent = Load::start(&servers, TOPIC, 2).await;
    let plain = Load::start_with(
        &servers,
        PLAIN,
        &[SendKind::Keyed, SendKind::Keyed],
        ProducerConfig {
            enable_idempotence: false,
            ..ProducerConfig::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (history, plain_history) = (idempotent.stop().await, plain.stop().await);
    let report = check(&history, &servers[0], TOPIC).await;
    let plain_report = check(&plain_history, &servers[0], PLAIN).await;
    strata_tests::report(&format!(
        "RELIABILITY lost-commit-reply, without idempotence: {plain_report}"
    ));
    assert_safe("lost-commit-reply", &report, &mut agents);
    assert!(
        duplicates_answered(&mut agents) > 0,
        "no retry of an idempotent batch was answered with its first offsets"
    );
    assert!(
        plain_report.duplicated > 0,
        "without idempotence, lost commit replies wrote no duplicate: the fault did not bite"
    );
}
