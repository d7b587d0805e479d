//! Consumer groups on a three-agent cluster (real etcd, s3s-fs and `strata agent`
//! processes), members as `strata consume --group` processes: exclusive ownership with
//! all records consumed, a fourth member moving only its share, two groups on one topic,
//! a killed member (at least once, duplicates bounded by its uncommitted window), the
//! coordinator's agent killed, and the group errors. Figures go to the test report
//! (summarized in docs/RELIABILITY.md).
//!
//! The tests run one at a time: each runs three agents, producers and several consumer
//! processes, and the machine may have two cores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use strata_client::{Admin, Code, Consumer, ConsumerConfig, GroupConfig, OffsetReset, ResetTo};
use strata_tests::groups::{Member, now_ms, overlaps};
use strata_tests::history::Load;
use strata_tests::{AgentProcess, cli, report, unique_name};

const PARTITIONS: i32 = 12;
const LEASE_TTL_SECS: &str = "4";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_agents() -> Vec<AgentProcess> {
    AgentProcess::start_cluster(3, "groups", &["--lease-ttl-secs", LEASE_TTL_SECS])
}

async fn create_topic(server: &str, topic: &str) {
    Admin::connect(server)
        .await
        .unwrap()
        .create_topic(topic, PARTITIONS, HashMap::new())
        .await
        .unwrap();
}

/// Waits up to `secs` for `condition`; panics with `what` and `details()`.
async fn wait_until(
    secs: u64,
    what: &str,
    mut condition: impl FnMut() -> bool,
    details: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s\n{}",
            details()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owned_by(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}: {:?}\n{}", m.name, m.owned(), m.stderr()))
        .collect()
}

/// Every member owns some partitions and together they own all of them.
fn all_owned(members: &[&Member]) -> bool {
    let owned: Vec<BTreeSet<u32>> = members.iter().map(|m| m.owned()).collect();
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<u32> = owned.iter().flatten().copied().collect();
    owned.iter().all(|o| !o.is_empty()) && total == PARTITIONS as usize && union.len() == total
}

/// What a group's members consumed, against the acknowledged records.
struct Coverage {
    acked: usize,
    /// Acknowledged records no member printed at their position.
    missing: usize,
    /// Positions printed more than once.
    duplicates: usize,
}

fn coverage(
    acked: &HashMap<String, strata_client::RecordPosition>,
    members: &[&Member],
) -> Coverage {
    let mut seen: HashMap<(u32, i64), (String, usize)> = HashMap::new();
    for member in members {
        for c in member.consumed() {
            let entry = seen.entry((c.partition, c.offset)).or_insert((c.value, 0));
            entry.1 += 1;
        }
    }
    let missing = acked
        .iter()
        .filter(|(id, pos)| {
            seen.get(&(pos.partition, pos.offset))
                .is_none_or(|(value, _)| value != *id)
        })
        .count();
    let duplicates = seen.values().map(|(_, n)| n.saturating_sub(1)).sum();
    Coverage {
        acked: acked.len(),
        missing,
        duplicates,
    }
}

/// Waits until the members printed every acknowledged record.
async fn wait_consumed(
    acked: &HashMap<String, strata_client::RecordPosition>,
    members: &[&Member],
    secs: u64,
) {
    wait_until(
        secs,
        "every acknowledged record consumed",
        || coverage(acked, members).missing == 0,
        || {
            let c = coverage(acked, members);
            format!(
                "{} of {} missing\n{}",
                c.missing,
                c.acked,
                owned_by(members)
            )
        },
    )
    .await;
}

/// A cluster under load with one group of three members that own every partition.
struct RunningGroup {
    agents: Vec<AgentProcess>,
    servers: Vec<String>,
    topic: String,
    group: String,
    load: Load,
    members: Vec<Member>,
    /// The members' arguments (session timeout), for members added later.
    args: [String; 2],
}

/// Starts three agents, a loaded topic and three members, member `i` bootstrapped at agent
/// `i`, with `session_timeout_ms`; waits until they own every partition.
async fn running_group(name: &str, session_timeout_ms: u64) -> RunningGroup {
    let agents = start_agents();
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    let topic = unique_name(name);
    create_topic(&servers[0], &topic).await;
    let load = Load::start(&servers, &topic, 1).await;
    let group = unique_name("g");
    let args = [
        "--session-timeout-ms".to_string(),
        session_timeout_ms.to_string(),
    ];
    let members: Vec<Member> = (0..3)
        .map(|i| {
            Member::start(
                &servers[i],
                &topic,
                &group,
                &args.each_ref().map(String::as_str),
            )
        })
        .collect();
    let refs: Vec<&Member> = members.iter().collect();
    wait_until(
        30,
        "three members own all partitions",
        || all_owned(&refs),
        || owned_by(&refs),
    )
    .await;
    RunningGroup {
        agents,
        servers,
        topic,
        group,
        load,
        members,
        args,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_own_partitions_exclusively_and_a_new_member_moves_only_its_share() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let RunningGroup {
        agents: _agents,
        servers,
        topic,
        group,
        load,
        mut members,
        args,
    } = running_group("excl", 6000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A fourth member joins: it takes its share; only those partitions change hands.
    let before: Vec<BTreeSet<u32>> = members.iter().map(|m| m.owned()).collect();
    let joined_at = now_ms();
    members.push(Member::start(
        &servers[0],
        &topic,
        &group,
        &args.each_ref().map(String::as_str),
    ));
    {
        let refs: Vec<&Member> = members.iter().collect();
        wait_until(
            30,
            "four members own all partitions",
            || all_owned(&refs),
            || owned_by(&refs),
        )
        .await;
    }
    let settled_at = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let history = load.stop().await;
    let acked = history.acked_records();
    let refs: Vec<&Member> = members.iter().collect();
    wait_consumed(&acked, &refs, 60).await;

    let moved: BTreeSet<u32> = members[3].owned();
    assert_eq!(
        moved.len(),
        3,
        "the new member gets its share: {}",
        owned_by(&refs)
    );
    for (i, member) in members[..3].iter().enumerate() {
        let revoked: BTreeSet<u32> = member
            .events()
            .iter()
            .filter(|e| e.kind == "revoked" && e.at_ms >= joined_at)
            .flat_map(|e| e.partitions.clone())
            .collect();
        assert!(
            revoked.is_subset(&moved),
            "{} gave up only moved partitions: {revoked:?}",
            member.name
        );
        assert_eq!(
            member.owned(),
            &before[i] - &revoked,
            "{} kept the others",
            member.name
        );
    }
    // The partitions that did not move kept flowing: their owners read records produced
    // while the group rebalanced, without ever giving them up.
    let kept_flowing: usize = members[..3]
        .iter()
        .flat_map(|m| m.consumed())
        .filter(|c| !moved.contains(&c.partition))
        .filter(|c| (joined_at..=settled_at).contains(&c.timestamp_ms))
        .count();
    assert!(
        kept_flowing > 0,
        "records of unmoved partitions flowed during the rebalance"
    );
    let handoffs: Vec<i64> = moved
        .iter()
        .map(|p| {
            let released = members[..3]
                .iter()
                .flat_map(|m| m.events())
                .filter(|e| {
                    e.kind == "released" && e.partitions.contains(p) && e.at_ms >= joined_at
                })
                .map(|e| e.at_ms)
                .min()
                .expect("a moved partition was released");
            let assigned = members[3]
                .events()
                .iter()
                .filter(|e| e.kind == "assigned" && e.partitions.contains(p))
                .map(|e| e.at_ms)
                .min()
                .expect("and assigned");
            assigned - released
        })
        .collect();
    let violations = overlaps(&refs);
    assert!(violations.is_empty(), "{violations:#?}");
    let c = coverage(&acked, &refs);
    assert_eq!(c.missing, 0);
    report(&format!(
        "RELIABILITY groups-exclusive: acknowledged={} missing=0 duplicates={} overlaps=0 \
         fourth-member rebalance={} ms moved={} (of {PARTITIONS}) handoff released->assigned max={} ms \
         unmoved-partition records produced and consumed during the rebalance={kept_flowing}",
        c.acked,
        c.duplicates,
        settled_at - joined_at,
        moved.len(),
        handoffs.iter().max().unwrap_or(&0)
    ));
    for member in &mut members {
        member.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_groups_on_one_topic_each_receive_every_record() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let agents = start_agents();
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    let topic = unique_name("two");
    create_topic(&servers[0], &topic).await;
    let load = Load::start(&servers, &topic, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a, b) = (unique_name("ga"), unique_name("gb"));
    let group_a: Vec<Member> = (0..2)
        .map(|i| Member::start(&servers[i], &topic, &a, &[]))
        .collect();
    let group_b = [Member::start(&servers[2], &topic, &b, &[])];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = load.stop().await.acked_records();
    let refs_a: Vec<&Member> = group_a.iter().collect();
    let refs_b: Vec<&Member> = group_b.iter().collect();
    wait_consumed(&acked, &refs_a, 60).await;
    wait_consumed(&acked, &refs_b, 60).await;
    let (ca, cb) = (coverage(&acked, &refs_a), coverage(&acked, &refs_b));
    assert_eq!((ca.missing, cb.missing), (0, 0));
    assert!(overlaps(&refs_a).is_empty());
    report(&format!(
        "RELIABILITY groups-two-groups: acknowledged={} group-a missing=0 duplicates={} group-b missing=0 duplicates={}",
        ca.acked, ca.duplicates, cb.duplicates
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_member_loses_nothing_and_duplicates_stay_in_its_uncommitted_window() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let RunningGroup {
        agents: _agents,
        servers,
        topic,
        group,
        load,
        mut members,
        args: _args,
    } = running_group("kill", 3000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let victim_partitions = members[0].owned();
    members[0].kill();
    let killed_at = members[0].stopped_at_ms.unwrap();
    // Its uncommitted window: what it printed past the offsets committed for it.
    let described = Admin::connect(&servers[1])
        .await
        .unwrap()
        .describe_group(&group)
        .await
        .unwrap();
    let committed: BTreeMap<u32, i64> = described
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| (p.partition as u32, p.committed_offset.max(0)))
        .collect();
    let mut printed_to: BTreeMap<u32, i64> = BTreeMap::new();
    for c in members[0].consumed() {
        let next = printed_to.entry(c.partition).or_default();
        *next = (*next).max(c.offset + 1);
    }
    let window: i64 = victim_partitions
        .iter()
        .map(|p| (printed_to.get(p).copied().unwrap_or(0) - committed[p]).max(0))
        .sum();

    {
        let survivors: Vec<&Member> = members[1..].iter().collect();
        wait_until(
            30,
            "the survivors own every partition",
            || survivors.iter().map(|m| m.owned().len()).sum::<usize>() == PARTITIONS as usize,
            || owned_by(&survivors),
        )
        .await;
    }
    let moved_at = members[1..]
        .iter()
        .flat_map(|m| m.events())
        .filter(|e| e.kind == "assigned" && e.at_ms > killed_at)
        .map(|e| e.at_ms)
        .max()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = load.stop().await.acked_records();
    let refs: Vec<&Member> = members.iter().collect();
    wait_consumed(&acked, &refs, 60).await;
    let c = coverage(&acked, &refs);
    assert_eq!(c.missing, 0, "at least once: nothing skipped");
    assert!(
        c.duplicates as i64 <= window,
        "duplicates ({}) exceed the killed member's uncommitted window ({window})",
        c.duplicates
    );
    assert!(overlaps(&refs).is_empty(), "{:#?}", overlaps(&refs));
    report(&format!(
        "RELIABILITY groups-kill-member: acknowledged={} missing=0 duplicates={} \
         uncommitted-window={window} partitions-moved={} rebalance-after-kill={} ms (session timeout 3000 ms)",
        c.acked,
        c.duplicates,
        victim_partitions.len(),
        moved_at - killed_at
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_group_survives_its_coordinators_agent_being_killed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let RunningGroup {
        mut agents,
        servers,
        topic: _topic,
        group,
        load,
        members,
        args: _args,
    } = running_group("coord", 15000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admin = |i: usize| {
        let server = servers[i].clone();
        async move { Admin::connect(&server).await.unwrap() }
    };
    let described = admin(0).await.describe_group(&group).await.unwrap();
    let coordinator = described.group.unwrap().coordinator_agent_id;
    let victim = agents
        .iter()
        .position(|a| a.agent_id() == coordinator)
        .unwrap();
    let survivor = (victim + 1) % 3;
    let committed_before: BTreeMap<u32, i64> = described
        .partitions
        .iter()
        .map(|p| (p.partition as u32, p.committed_offset))
        .collect();
    agents[victim].kill();
    let killed_at = now_ms();

    // A new coordinator takes over; the members keep their partitions and commit there.
    let new_coordinator;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(d) = admin(survivor).await.describe_group(&group).await {
            let summary = d.group.unwrap();
            let advanced = d
                .partitions
                .iter()
                .all(|p| p.committed_offset >= committed_before[&(p.partition as u32)]);
            let moved_on = d
                .partitions
                .iter()
                .any(|p| p.committed_offset > committed_before[&(p.partition as u32)] + 100);
            if summary.coordinator_agent_id != coordinator
                && !summary.coordinator_agent_id.is_empty()
                && advanced
                && moved_on
                && summary.members == 3
            {
                new_coordinator = summary.coordinator_agent_id;
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group did not continue under a new coordinator"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let continued_at = now_ms();
    let acked = load.stop().await.acked_records();
    let refs: Vec<&Member> = members.iter().collect();
    wait_consumed(&acked, &refs, 90).await;
    let after = admin(survivor).await.describe_group(&group).await.unwrap();
    for p in &after.partitions {
        assert!(
            p.committed_offset >= committed_before[&(p.partition as u32)],
            "committed offsets intact: {p:?} was {}",
            committed_before[&(p.partition as u32)]
        );
    }
    let c = coverage(&acked, &refs);
    assert_eq!(c.missing, 0);
    report(&format!(
        "RELIABILITY groups-kill-coordinator: acknowledged={} missing=0 duplicates={} \
         coordinator {coordinator} -> {new_coordinator}, commits flowing again {} ms after the kill (lease TTL {LEASE_TTL_SECS} s)",
        c.acked,
        c.duplicates,
        continued_at - killed_at
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_errors_say_what_to_fix() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let agents = start_agents();
    let server = agents[0].server();
    let topic = unique_name("errs");
    create_topic(&server, &topic).await;
    let admin = Admin::connect(&server).await.unwrap();

    // Unknown group: NOT_FOUND.
    let e = admin.describe_group("no-such-group").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");

    // A member of a one-member group owns every partition.
    let group = unique_name("g");
    let mut consumer = Consumer::connect(&server, ConsumerConfig::default())
        .await
        .unwrap();
    let mut config = GroupConfig::new(&group);
    config.auto_commit = false;
    config.offset_reset = OffsetReset::Earliest;
    consumer.subscribe(&[&topic], config).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while consumer.assignment().len() < PARTITIONS as usize {
        consumer.poll(Duration::from_millis(100)).await.unwrap();
        assert!(tokio::time::Instant::now() < deadline, "never assigned");
    }
    consumer
        .commit_offsets(&[(&topic, 0, 0, "first")])
        .await
        .unwrap();
    let offsets = admin.committed_offsets(&group, &[&topic]).await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(
        (offsets[0].offset, offsets[0].metadata.as_str()),
        (0, "first")
    );

    // Reset on an active group: FAILED_PRECONDITION naming its members.
    let e = admin
        .reset_offsets(&group, &topic, ResetTo::Earliest)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("active members"), "{e}");
    let out = cli(
        &server,
        &[
            "group",
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--to-latest",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("active members"));
    // Delete on an active group: refused too.
    let e = admin.delete_group(&group).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");

    // A commit with a stale epoch, or from a stranger: FAILED_PRECONDITION.
    let mut groups = strata_client::proto::groups_client::GroupsClient::connect(server.clone())
        .await
        .unwrap();
    let describe = admin.describe_group(&group).await.unwrap();
    let member = &describe.members[0];
    let commit =
        |member_id: &str, epoch: i64, partition: i32| strata_client::proto::CommitOffsetsRequest {
            group_id: group.clone(),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            offsets: vec![strata_client::proto::PartitionOffset {
                topic: topic.clone(),
                partition,
                offset: 1,
                metadata: String::new(),
            }],
        };
    let stale = groups
        .commit_offsets(commit(&member.member_id, member.member_epoch + 5, 0))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("fenced"), "{stale:?}");
    let stranger = groups
        .commit_offsets(commit("stranger", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::FailedPrecondition, "{stranger:?}");
    let bad_partition = groups
        .commit_offsets(commit(&member.member_id, member.member_epoch, 99))
        .await
        .unwrap_err();
    assert_eq!(
        bad_partition.code(),
        Code::InvalidArgument,
        "{bad_partition:?}"
    );

    // A second member: the first must give up half; a commit by the first for a
    // partition it gave up is refused as not assigned.
    let mut second = Consumer::connect(&agents[1].server(), ConsumerConfig::default())
        .await
        .unwrap();
    let mut config = GroupConfig::new(&group);
    config.auto_commit = false;
    second.subscribe(&[&topic], config).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while second.assignment().len() < PARTITIONS as usize / 2 {
        consumer.poll(Duration::from_millis(50)).await.unwrap();
        second.poll(Duration::from_millis(50)).await.unwrap();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second member got nothing"
        );
    }
    let (given_topic, given) = second.assignment()[0].clone();
    let e = consumer
        .commit_offsets(&[(&given_topic, given, 0, "")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("does not own"), "{e}");

    // Once both leave, the group can be reset and deleted; the offsets go with it.
    consumer.close().await.unwrap();
    second.close().await.unwrap();
    let reset = admin
        .reset_offsets(&group, &topic, ResetTo::Offset(0))
        .await
        .unwrap();
    assert_eq!(reset.len(), PARTITIONS as usize);
    admin.delete_group(&group).await.unwrap();
    assert_eq!(
        admin.describe_group(&group).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    assert!(
        admin
            .committed_offsets(&group, &[&topic])
            .await
            .unwrap()
            .is_empty()
    );
}
