//! The metastore conformance suite: every test body is written once, against the
//! [`Metastore`] trait, and runs on both backends — the embedded one, and etcd (a real etcd
//! started by `scripts/test.sh`, reached through `STRATA_TEST_ETCD`). Each test uses its own
//! key root, so tests run in parallel on one etcd.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use strata_metastore::{
    AbortedRange, ArchiveRange, ArchiveState, CleanState, CommittedOffset, EmbeddedKv, Error,
    EtcdKv, GroupRecord, IndexEntry, KvMetastore, Metastore, PartitionAppend, PartitionOwner,
    ProducerBatch, ProducerState, Rejection, TopicMeta, TransactionRecord, TransactionStatus,
};

fn unique_root(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "/strata-test/{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn embedded(test: &str) -> Box<dyn Metastore> {
    Box::new(KvMetastore::new(EmbeddedKv::in_memory(), unique_root(test)))
}

async fn etcd(test: &str, max_txn_ops: usize) -> Box<dyn Metastore> {
    let endpoints = std::env::var("STRATA_TEST_ETCD").expect(
        "STRATA_TEST_ETCD is not set: run the tests through scripts/test.sh, which starts etcd",
    );
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_string).collect();
    let kv = EtcdKv::connect(&endpoints)
        .await
        .expect("connect to the test etcd")
        .with_max_txn_ops(max_txn_ops);
    Box::new(KvMetastore::new(kv, unique_root(test)))
}

fn topic(name: &str, partitions: u32) -> TopicMeta {
    TopicMeta {
        name: name.to_string(),
        topic_id: String::new(),
        partitions,
        config: BTreeMap::from([("compression.type".to_string(), "lz4".to_string())]),
        created_at_ms: 1_700_000_000_000,
    }
}

fn append(
    topic: &str,
    partition: u32,
    owner: &PartitionOwner,
    base: i64,
    last: i64,
) -> PartitionAppend {
    PartitionAppend {
        topic: topic.to_string(),
        partition,
        owner: owner.clone(),
        entry: IndexEntry {
            base_offset: base,
            last_offset: last,
            object: format!("segments/{base}.seg"),
            byte_start: 100 * partition as u64,
            byte_len: 100,
            max_timestamp_ms: 1_700_000_000_000 + last,
            appended_at_ms: 0,
            topic_id: String::new(),
        },
        producers: Vec::new(),
        expired_producers: Vec::new(),
        aborted: Vec::new(),
        last_stable_offset: None,
    }
}

fn producer(epoch: i16, first_sequence: i32, base_offset: i64, records: i32) -> ProducerState {
    ProducerState {
        epoch,
        batches: vec![ProducerBatch {
            first_sequence,
            last_sequence: first_sequence + records - 1,
            base_offset,
            last_offset: base_offset + i64::from(records) - 1,
        }],
        last_write_ms: 1_700_000_000_000,
        txn_first_offset: None,
    }
}

/// Many partitions are taken at once as one is: each gets the next epoch, the state it
/// takes over, and fences its previous owner; a partition the topic does not have is
/// refused alone, a changed topic refuses all.
async fn acquire_many_partitions_at_once(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 300)).await.unwrap();
    let first = store
        .acquire_partition("t", 5, "a", "")
        .await
        .unwrap()
        .owner
        .unwrap();
    let report = store
        .commit_flush(&[append("t", 5, &first, 0, 9)])
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");

    let wanted: Vec<u32> = (0..300).chain([300]).collect();
    let report = store
        .acquire_partitions("t", &wanted, "b", "")
        .await
        .unwrap();
    // etcd takes at most 127 partitions a transaction (128 operations); the embedded
    // store, all of them in one.
    assert!((1..=3).contains(&report.transactions), "{report:?}");
    let taken = report.taken;
    assert_eq!(taken.len(), wanted.len());
    for (&partition, outcome) in wanted.iter().zip(&taken) {
        match outcome {
            Ok(state) => {
                let owner = state.owner.as_ref().unwrap();
                assert_eq!(owner.agent_id, "b", "partition {partition}");
                let (epoch, high_watermark) = if partition == 5 { (2, 10) } else { (1, 0) };
                assert_eq!(
                    (owner.epoch, state.high_watermark),
                    (epoch, high_watermark),
                    "partition {partition}"
                );
            }
            Err(e) => {
                assert_eq!(partition, 300, "{e}");
                assert!(matches!(e, Error::TopicChanged { .. }), "{e}");
            }
        }
    }
    // The old owner of partition 5 is fenced; the new one commits.
    let report = store
        .commit_flush(&[append("t", 5, &first, 10, 10)])
        .await
        .unwrap();
    assert!(matches!(
        report.rejected[..],
        [(0, Rejection::Fenced { .. })]
    ));
    let owner = taken[5].as_ref().unwrap().owner.clone().unwrap();
    let report = store
        .commit_flush(&[append("t", 5, &owner, 10, 10)])
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");

    // Taking them again bumps every epoch once more.
    let again = store
        .acquire_partitions("t", &[0, 5, 299], "c", "")
        .await
        .unwrap();
    assert_eq!(again.transactions, 1);
    let epochs: Vec<u64> = again
        .taken
        .iter()
        .map(|o| o.as_ref().unwrap().owner.as_ref().unwrap().epoch)
        .collect();
    assert_eq!(epochs, vec![2, 3, 2]);
    // Another incarnation of the topic: nothing is taken.
    assert!(matches!(
        store
            .acquire_partitions("t", &[0, 1], "d", "another-id")
            .await,
        Err(Error::TopicChanged { .. })
    ));
    assert_eq!(
        store
            .partition_state("t", 1)
            .await
            .unwrap()
            .owner
            .unwrap()
            .agent_id,
        "b"
    );
}

/// Producer states are written with the flush that holds their batches, atomically and
/// under the same fence; expired ones are deleted with a flush; ids come in blocks that
/// never overlap.
async fn producer_states_commit_with_the_flush(store: Box<dyn Metastore>) {
    assert_eq!(store.allocate_producer_ids(1000).await.unwrap(), 0);
    assert_eq!(store.allocate_producer_ids(1000).await.unwrap(), 1000);
    assert_eq!(store.allocate_producer_ids(1).await.unwrap(), 2000);
    store.create_topic(&topic("t", 2)).await.unwrap();
    let owner = store
        .acquire_partition("t", 0, "a", "")
        .await
        .unwrap()
        .owner
        .unwrap();
    let mut first = append("t", 0, &owner, 0, 9);
    first.producers = vec![(7, producer(0, 0, 0, 4)), (1003, producer(2, 0, 4, 6))];
    let report = store.commit_flush(&[first]).await.unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
    assert_eq!(
        store.producer_states("t", 0, 0).await.unwrap(),
        vec![(7, producer(0, 0, 0, 4)), (1003, producer(2, 0, 4, 6))]
    );
    assert!(store.producer_states("t", 1, 0).await.unwrap().is_empty());
    assert_eq!(store.producer_states("t", 0, 1).await.unwrap().len(), 1);

    // A later flush replaces one state and deletes an expired one.
    let mut second = append("t", 0, &owner, 10, 10);
    second.producers = vec![(1003, producer(2, 6, 10, 1))];
    second.expired_producers = vec![7];
    assert!(
        store
            .commit_flush(&[second])
            .await
            .unwrap()
            .rejected
            .is_empty()
    );
    assert_eq!(
        store.producer_states("t", 0, 0).await.unwrap(),
        vec![(1003, producer(2, 6, 10, 1))]
    );

    // A fenced writer's producer states are not written.
    let taken = store.acquire_partition("t", 0, "b", "").await.unwrap();
    assert_eq!(taken.high_watermark, 11);
    let mut zombie = append("t", 0, &owner, 11, 11);
    zombie.producers = vec![(1003, producer(2, 7, 11, 1))];
    let report = store.commit_flush(&[zombie]).await.unwrap();
    assert!(matches!(
        report.rejected[..],
        [(0, Rejection::Fenced { .. })]
    ));
    assert_eq!(
        store.producer_states("t", 0, 0).await.unwrap(),
        vec![(1003, producer(2, 6, 10, 1))]
    );

    // An aborted range is stored with the flush of its abort marker.
    let owner = taken.owner.unwrap();
    let mut abort = append("t", 0, &owner, 11, 11);
    let range = AbortedRange {
        producer_id: 1003,
        first_offset: 10,
        last_offset: 11,
    };
    abort.aborted = vec![range];
    assert!(
        store
            .commit_flush(&[abort])
            .await
            .unwrap()
            .rejected
            .is_empty()
    );
    assert_eq!(store.aborted_ranges("t", 0).await.unwrap(), vec![range]);
    assert!(store.aborted_ranges("t", 1).await.unwrap().is_empty());

    // They go with the topic.
    store.delete_topic("t").await.unwrap();
    store.create_topic(&topic("t", 2)).await.unwrap();
    assert!(store.producer_states("t", 0, 0).await.unwrap().is_empty());
    assert!(store.aborted_ranges("t", 0).await.unwrap().is_empty());
}

/// A transaction record is replaced only as read, only by its slot's coordinator; the
/// commit point writes the transaction's group offsets with it.
async fn transactions_are_compared_and_fenced(store: Box<dyn Metastore>) {
    store.create_topic(&topic("out", 1)).await.unwrap();
    let coordinator = store.acquire_coordinator(3, "a").await.unwrap();
    let mut record = TransactionRecord {
        transactional_id: "tx".into(),
        producer_id: 7,
        status: TransactionStatus::Empty,
        timeout_ms: 60_000,
        ..TransactionRecord::default()
    };
    assert!(
        store
            .store_transaction(&coordinator, None, &record, false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_transaction(&coordinator, None, &record, false)
            .await
            .unwrap()
    );
    let mut ongoing = record.clone();
    ongoing.status = TransactionStatus::Ongoing;
    ongoing
        .partitions
        .entry("out".into())
        .or_default()
        .partitions
        .insert(0);
    ongoing
        .offsets
        .insert("g".into(), vec![("out".into(), 0, committed(42, "m"))]);
    assert!(
        store
            .store_transaction(&coordinator, Some(&record), &ongoing, false)
            .await
            .unwrap()
    );
    assert!(
        store
            .committed_offsets("g", "out")
            .await
            .unwrap()
            .is_empty()
    );
    let mut prepared = ongoing.clone();
    prepared.status = TransactionStatus::PrepareCommit;
    assert!(
        store
            .store_transaction(&coordinator, Some(&ongoing), &prepared, true)
            .await
            .unwrap()
    );
    assert_eq!(
        store.committed_offsets("g", "out").await.unwrap(),
        vec![(0, committed(42, "m"))]
    );
    assert_eq!(
        store.transaction("tx").await.unwrap(),
        Some(prepared.clone())
    );
    assert_eq!(store.transactions().await.unwrap(), vec![prepared.clone()]);
    // Another agent took the slot: the old coordinator writes nothing.
    let _new = store.acquire_coordinator(3, "b").await.unwrap();
    record = prepared.clone();
    record.status = TransactionStatus::CompleteCommit;
    assert!(
        !store
            .store_transaction(&coordinator, Some(&prepared), &record, false)
            .await
            .unwrap()
    );
    assert_eq!(store.transaction("tx").await.unwrap(), Some(prepared));
}

async fn topics_lifecycle(store: Box<dyn Metastore>) {
    assert_eq!(store.get_topic("orders").await.unwrap(), None);
    store.create_topic(&topic("orders", 3)).await.unwrap();
    store.create_topic(&topic("audit.log", 1)).await.unwrap();
    assert!(matches!(
        store.create_topic(&topic("orders", 5)).await,
        Err(Error::TopicExists(name)) if name == "orders"
    ));
    assert_eq!(
        store.get_topic("orders").await.unwrap(),
        Some(topic("orders", 3))
    );
    let names: Vec<String> = store
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["audit.log".to_string(), "orders".to_string()]);
    store.delete_topic("orders").await.unwrap();
    assert!(matches!(
        store.delete_topic("orders").await,
        Err(Error::TopicNotFound(_))
    ));
    assert_eq!(store.get_topic("orders").await.unwrap(), None);
    assert_eq!(store.list_topics().await.unwrap().len(), 1);
}

async fn acquire_bumps_epoch_and_fences_the_old_owner(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 2)).await.unwrap();
    let first = store
        .acquire_partition("t", 0, "agent-a", "")
        .await
        .unwrap();
    let owner_a = first.owner.clone().unwrap();
    assert_eq!(
        owner_a,
        PartitionOwner {
            topic_id: String::new(),
            epoch: 1,
            agent_id: "agent-a".into()
        }
    );
    assert_eq!((first.high_watermark, first.log_start_offset), (0, 0));

    let report = store
        .commit_flush(&[append("t", 0, &owner_a, 0, 9)])
        .await
        .unwrap();
    assert_eq!(report.transactions, 1);
    assert!(report.rejected.is_empty());

    let second = store
        .acquire_partition("t", 0, "agent-b", "")
        .await
        .unwrap();
    let owner_b = second.owner.clone().unwrap();
    assert_eq!(owner_b.epoch, 2);
    assert_eq!(second.high_watermark, 10);

    // The zombie's commit is refused and changes nothing.
    let report = store
        .commit_flush(&[append("t", 0, &owner_a, 10, 19)])
        .await
        .unwrap();
    assert_eq!(report.transactions, 0);
    assert_eq!(
        report.rejected,
        vec![(
            0,
            Rejection::Fenced {
                current: Some(owner_b.clone())
            }
        )]
    );
    assert_eq!(
        store.partition_state("t", 0).await.unwrap().high_watermark,
        10
    );
    assert_eq!(store.index_entries("t", 0, 0, 0).await.unwrap().len(), 1);

    // The new owner continues at the high watermark.
    let report = store
        .commit_flush(&[append("t", 0, &owner_b, 10, 14)])
        .await
        .unwrap();
    assert!(report.rejected.is_empty());
    assert_eq!(
        store.partition_state("t", 0).await.unwrap().high_watermark,
        15
    );

    assert!(matches!(
        store.acquire_partition("missing", 0, "agent-a", "").await,
        Err(Error::TopicNotFound(_))
    ));
}

async fn commit_refuses_gaps_and_overlaps(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 1)).await.unwrap();
    let owner = store
        .acquire_partition("t", 0, "a", "")
        .await
        .unwrap()
        .owner
        .unwrap();
    let report = store
        .commit_flush(&[append("t", 0, &owner, 5, 9)])
        .await
        .unwrap();
    assert_eq!(
        report.rejected,
        vec![(0, Rejection::OffsetMismatch { high_watermark: 0 })]
    );
    store
        .commit_flush(&[append("t", 0, &owner, 0, 4)])
        .await
        .unwrap();
    let report = store
        .commit_flush(&[append("t", 0, &owner, 3, 9)])
        .await
        .unwrap();
    assert_eq!(
        report.rejected,
        vec![(0, Rejection::OffsetMismatch { high_watermark: 5 })]
    );
    assert_eq!(
        store.partition_state("t", 0).await.unwrap().high_watermark,
        5
    );
}

async fn one_flush_of_many_partitions_is_one_transaction(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 8)).await.unwrap();
    let mut appends = Vec::new();
    for p in 0..8 {
        let owner = store
            .acquire_partition("t", p, "a", "")
            .await
            .unwrap()
            .owner
            .unwrap();
        appends.push(append("t", p, &owner, 0, p as i64));
    }
    // A fenced partition in the middle does not stop the others.
    store.acquire_partition("t", 3, "b", "").await.unwrap();
    let report = store.commit_flush(&appends).await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, 3);
    for p in 0..8u32 {
        let hwm = store.partition_state("t", p).await.unwrap().high_watermark;
        assert_eq!(hwm, if p == 3 { 0 } else { p as i64 + 1 });
    }

    // Without a fenced partition: exactly one transaction for all eight.
    let mut appends = Vec::new();
    for p in 0..8u32 {
        if p == 3 {
            continue;
        }
        let state = store.partition_state("t", p).await.unwrap();
        appends.push(append(
            "t",
            p,
            &state.owner.unwrap(),
            state.high_watermark,
            state.high_watermark + 9,
        ));
    }
    let report = store.commit_flush(&appends).await.unwrap();
    assert_eq!((report.transactions, report.rejected.len()), (1, 0));

    // Every partition's state read at once equals each read alone.
    let states = store.partition_states("t", 8).await.unwrap();
    for p in 0..8u32 {
        assert_eq!(
            states[p as usize],
            store.partition_state("t", p).await.unwrap()
        );
    }
}

async fn index_entries_in_offset_order(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 1)).await.unwrap();
    let owner = store
        .acquire_partition("t", 0, "a", "")
        .await
        .unwrap()
        .owner
        .unwrap();
    let mut base = 0;
    for len in [1i64, 9, 90, 900, 9000] {
        store
            .commit_flush(&[append("t", 0, &owner, base, base + len - 1)])
            .await
            .unwrap();
        base += len;
    }
    let all = store.index_entries("t", 0, 0, 0).await.unwrap();
    let bases: Vec<i64> = all.iter().map(|e| e.base_offset).collect();
    assert_eq!(bases, vec![0, 1, 10, 100, 1000]);
    let tail = store.index_entries("t", 0, 11, 0).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.base_offset).collect::<Vec<_>>(),
        vec![100, 1000]
    );
    let limited = store.index_entries("t", 0, 0, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(all[4].last_offset, 9999);

    // Deleting the topic takes its index with it; a new topic of the same name starts over.
    store.delete_topic("t").await.unwrap();
    store.create_topic(&topic("t", 1)).await.unwrap();
    assert!(store.index_entries("t", 0, 0, 0).await.unwrap().is_empty());
    let state = store.partition_state("t", 0).await.unwrap();
    assert_eq!((state.high_watermark, state.owner), (0, None));
}

async fn agent_epochs_increase_and_agents_register(store: Box<dyn Metastore>) {
    let a = store.next_agent_epoch().await.unwrap();
    let b = store.next_agent_epoch().await.unwrap();
    assert!(b > a);
    let agent = strata_metastore::AgentRecord {
        agent_id: "x".into(),
        address: "127.0.0.1:1".into(),
        zone: "z1".into(),
        kafka_address: "127.0.0.1:9092".into(),
        node_id: 7,
    };
    let registration = store
        .register_agent(&agent, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(store.list_agents().await.unwrap(), vec![agent]);
    registration.release().await.unwrap();
    assert_eq!(store.list_agents().await.unwrap(), vec![]);

    // The first agent's object store is the cluster's.
    assert_eq!(
        store.claim_object_store("s3://a/x").await.unwrap(),
        "s3://a/x"
    );
    assert_eq!(
        store.claim_object_store("s3://b/y").await.unwrap(),
        "s3://a/x"
    );
}

async fn one_controller_at_a_time(store: Box<dyn Metastore>) {
    let ttl = std::time::Duration::from_secs(5);
    let a = store
        .campaign_controller("a#1", ttl)
        .await
        .unwrap()
        .expect("the first candidate wins");
    assert!(
        store
            .campaign_controller("b#2", ttl)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.controller().await.unwrap().as_deref(), Some("a#1"));
    assert!(!a.is_lost());

    let mut assignment = strata_metastore::Assignment {
        generation: 1,
        controller: "a#1".into(),
        ..Default::default()
    };
    assignment
        .topics
        .insert("t".into(), vec![Some("a".into()), None, Some("b".into())]);
    assert!(store.store_assignment("a#1", &assignment).await.unwrap());
    assert!(!store.store_assignment("b#2", &assignment).await.unwrap());
    let stored = store.assignment().await.unwrap().unwrap();
    assert_eq!(stored, assignment);
    assert_eq!(stored.agent_of("t", 2), Some("b"));
    assert_eq!(stored.agent_of("t", 1), None);
    assert_eq!(
        stored.partitions_of("a").collect::<Vec<_>>(),
        vec![("t", 0)]
    );

    // Once the holder resigns, another candidate wins and the old one can no longer store.
    a.release().await.unwrap();
    assert_eq!(store.controller().await.unwrap(), None);
    let b = store.campaign_controller("b#2", ttl).await.unwrap();
    assert!(b.is_some());
    assert!(!store.store_assignment("a#1", &assignment).await.unwrap());
    assert!(store.store_assignment("b#2", &assignment).await.unwrap());
}

fn committed(offset: i64, metadata: &str) -> CommittedOffset {
    CommittedOffset {
        offset,
        metadata: metadata.to_string(),
        committed_at_ms: 1_700_000_000_000,
    }
}

async fn groups_and_offsets_are_fenced_by_the_coordinator_slot(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 3)).await.unwrap();
    store.create_topic(&topic("u", 1)).await.unwrap();
    let a = store.acquire_coordinator(5, "agent-a").await.unwrap();
    assert_eq!(a.owner.epoch, 1);
    let group = GroupRecord {
        group_id: "g1".into(),
        epoch: 3,
        assignor: "uniform".into(),
        ..Default::default()
    };
    assert!(store.store_group(&a, &group).await.unwrap());
    let offsets = vec![
        ("t".to_string(), 0, committed(10, "")),
        ("t".to_string(), 2, committed(7, "meta")),
        ("u".to_string(), 0, committed(1, "")),
    ];
    assert!(store.commit_offsets(&a, "g1", &offsets).await.unwrap());
    assert_eq!(store.group("g1").await.unwrap(), Some(group.clone()));
    assert_eq!(
        store.committed_offsets("g1", "t").await.unwrap(),
        vec![(0, committed(10, "")), (2, committed(7, "meta"))]
    );
    assert!(store.committed_offsets("g2", "t").await.unwrap().is_empty());

    // Another agent takes the slot: the first can no longer write the group or offsets.
    let b = store.acquire_coordinator(5, "agent-b").await.unwrap();
    assert_eq!(b.owner.epoch, 2);
    let stale = GroupRecord {
        epoch: 4,
        ..group.clone()
    };
    assert!(!store.store_group(&a, &stale).await.unwrap());
    assert!(
        !store
            .commit_offsets(&a, "g1", &[("t".to_string(), 0, committed(99, ""))])
            .await
            .unwrap()
    );
    assert!(!store.delete_group(&a, "g1").await.unwrap());
    assert_eq!(store.group("g1").await.unwrap(), Some(group.clone()));
    assert_eq!(
        store.committed_offsets("g1", "t").await.unwrap()[0]
            .1
            .offset,
        10
    );

    // A commit for a deleted topic says so; deleting a topic deletes its offsets.
    store.delete_topic("u").await.unwrap();
    assert!(store.committed_offsets("g1", "u").await.unwrap().is_empty());
    assert!(matches!(
        store.commit_offsets(&b, "g1", &[("u".to_string(), 0, committed(2, ""))]).await,
        Err(Error::TopicNotFound(t)) if t == "u"
    ));

    // The current coordinator deletes the group with its offsets.
    assert_eq!(store.groups().await.unwrap().len(), 1);
    assert!(store.delete_group(&b, "g1").await.unwrap());
    assert_eq!(store.group("g1").await.unwrap(), None);
    assert!(store.committed_offsets("g1", "t").await.unwrap().is_empty());
    assert!(store.groups().await.unwrap().is_empty());
}

/// Runs every conformance test against a backend made by `$make(test_name)`.
/// Merges swap runs of entries atomically, retention drops a prefix and moves the log
/// start, log compaction records its progress, and compactor claims are exclusive.
async fn compactor_swaps_are_atomic_and_compared(store: Box<dyn Metastore>) {
    store.create_topic(&topic("t", 1)).await.unwrap();
    let owner = store
        .acquire_partition("t", 0, "a", "")
        .await
        .unwrap()
        .owner
        .unwrap();
    for base in 0..6 {
        store
            .commit_flush(&[append("t", 0, &owner, base * 10, base * 10 + 9)])
            .await
            .unwrap();
    }
    let old = store.index_entries("t", 0, 0, 0).await.unwrap();
    let merged = |base: i64, last: i64| IndexEntry {
        base_offset: base,
        last_offset: last,
        object: format!("segments/merged-{base}.seg"),
        byte_start: 0,
        byte_len: 300,
        max_timestamp_ms: 1_700_000_000_000 + last,
        appended_at_ms: 1_700_000_000_000,
        topic_id: String::new(),
    };
    // A replacement must cover exactly the old offsets.
    assert!(
        store
            .replace_index_entries("t", 0, &old[0..3], &[merged(0, 28)])
            .await
            .is_err()
    );
    // Entries 0..3 become one; the others stay.
    assert!(
        store
            .replace_index_entries("t", 0, &old[0..3], &[merged(0, 29)])
            .await
            .unwrap()
    );
    let now = store.index_entries("t", 0, 0, 0).await.unwrap();
    assert_eq!(now.len(), 4);
    assert_eq!(now[0], merged(0, 29));
    assert_eq!(&now[1..], &old[3..]);
    // A swap that compares entries which changed meanwhile changes nothing.
    assert!(
        !store
            .replace_index_entries("t", 0, &old[0..3], &[merged(0, 29)])
            .await
            .unwrap()
    );
    // Retention: the first two entries go and the log start moves past them.
    assert!(store.truncate_log("t", 0, &now[0..2]).await.unwrap());
    let state = store.partition_state("t", 0).await.unwrap();
    assert_eq!((state.log_start_offset, state.high_watermark), (40, 60));
    let left = store.index_entries("t", 0, 0, 0).await.unwrap();
    assert_eq!(left.first().map(|e| e.base_offset), Some(40));
    assert!(!store.truncate_log("t", 0, &now[0..2]).await.unwrap());
    // Flushes keep appending after a swap.
    store
        .commit_flush(&[append("t", 0, &owner, 60, 69)])
        .await
        .unwrap();
    assert_eq!(store.index_entries("t", 0, 0, 0).await.unwrap().len(), 3);

    // Compaction progress is stored only over what was read.
    let fresh = store.clean_state("t", 0).await.unwrap();
    assert_eq!(fresh, CleanState::default());
    let cleaned = CleanState {
        cleaned_to: 60,
        oldest_tombstone_ms: Some(5),
    };
    assert!(
        store
            .store_clean_state("t", 0, &fresh, &cleaned)
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_clean_state("t", 0, &fresh, &cleaned)
            .await
            .unwrap()
    );
    assert_eq!(store.clean_state("t", 0).await.unwrap(), cleaned);

    // Archive progress too: a pending file, then its commit, each over what was read.
    let fresh = store.archive_state("t", 0).await.unwrap();
    assert_eq!(fresh, ArchiveState::default());
    let pending = ArchiveState {
        pending: Some(ArchiveRange { first: 0, last: 39 }),
        ..fresh.clone()
    };
    assert!(
        store
            .store_archive_state("t", 0, &fresh, &pending)
            .await
            .unwrap()
    );
    let committed = ArchiveState {
        archived_to: 40,
        pending: None,
        files: 1,
        records: 40,
        bytes: 1000,
        archived_at_ms: 7,
        ..pending.clone()
    };
    // A second writer that read the fresh state cannot decide another file.
    assert!(
        !store
            .store_archive_state("t", 0, &fresh, &committed)
            .await
            .unwrap()
    );
    assert!(
        store
            .store_archive_state("t", 0, &pending, &committed)
            .await
            .unwrap()
    );
    assert_eq!(store.archive_state("t", 0).await.unwrap(), committed);

    // One compactor per job at a time.
    let job = strata_metastore::compaction_job("t", 0);
    let ttl = std::time::Duration::from_secs(5);
    let claim = store
        .claim_compaction(&job, "c1", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_compaction(&job, "c2", ttl)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.compaction_claims().await.unwrap(),
        vec![(job.clone(), "c1".to_string())]
    );
    claim.release().await.unwrap();
    assert!(
        store
            .claim_compaction(&job, "c2", ttl)
            .await
            .unwrap()
            .is_some()
    );

    // A compactor's published totals: the newest publication is what is listed, and it
    // goes when released.
    let mut record = strata_metastore::CompactorRecord {
        compactor_id: "c1".into(),
        passes: 1,
        ..Default::default()
    };
    let first = store.publish_compactor(&record, ttl).await.unwrap();
    record.passes = 2;
    record.push_error(
        1_000,
        &"x".repeat(2 * strata_metastore::CompactorRecord::MAX_ERROR_LEN),
    );
    let second = store.publish_compactor(&record, ttl).await.unwrap();
    drop(first);
    let listed = store.compactors().await.unwrap();
    assert_eq!(listed, vec![record.clone()]);
    assert_eq!(
        listed[0].last_errors[0].1.len(),
        strata_metastore::CompactorRecord::MAX_ERROR_LEN
    );
    second.release().await.unwrap();
    assert!(store.compactors().await.unwrap().is_empty());

    // History compaction never fails on a revision the store has.
    let revision = store.history_revision().await.unwrap();
    store.compact_history(revision).await.unwrap();
    store.compact_history(revision).await.unwrap();
}

async fn topic_changes_are_notified(store: Box<dyn Metastore>) {
    let mut changes = store.watch_topics().await.unwrap();
    let next = async |changes: &mut strata_metastore::ChangeWatch| {
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
            .await
            .expect("a notification within 10 s")
            .expect("the watch stays open")
    };
    // One at once (read the topics now), then one per change.
    next(&mut changes).await;
    store.create_topic(&topic("watched", 2)).await.unwrap();
    next(&mut changes).await;
    store.delete_topic("watched").await.unwrap();
    next(&mut changes).await;
    // Changes elsewhere do not notify.
    store.create_topic(&topic("other", 1)).await.unwrap();
    next(&mut changes).await;
    let owner = store.acquire_partition("other", 0, "a", "").await.unwrap();
    assert!(owner.owner.is_some());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), changes.recv())
            .await
            .is_err(),
        "a partition's change is not a topic's"
    );
}

async fn acls_are_stored_once_deleted_and_notified(store: Box<dyn Metastore>) {
    use strata_metastore::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
    let acl = |name: &str, operation| AclBinding {
        resource_type: ResourceType::Topic,
        pattern_type: PatternType::Prefixed,
        resource_name: name.to_string(),
        principal: "User:billing".to_string(),
        host: "*".to_string(),
        operation,
        permission: AclPermission::Allow,
    };
    let mut changes = store.watch_acls().await.unwrap();
    let next = async |changes: &mut strata_metastore::ChangeWatch| {
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
            .await
            .expect("a notification within 10 s")
            .expect("the watch stays open")
    };
    next(&mut changes).await;
    assert!(store.acls().await.unwrap().is_empty());
    let write = acl("orders-", AclOperation::Write);
    let read = acl("orders/eu", AclOperation::Read);
    store
        .create_acls(&[write.clone(), read.clone(), write.clone()])
        .await
        .unwrap();
    next(&mut changes).await;
    // Created twice, stored once; names with any characters.
    let mut stored = store.acls().await.unwrap();
    stored.sort();
    let mut expected = vec![write.clone(), read.clone()];
    expected.sort();
    assert_eq!(stored, expected);
    store
        .create_acls(std::slice::from_ref(&write))
        .await
        .unwrap();
    assert_eq!(store.acls().await.unwrap().len(), 2);
    // Deleting returns what was stored.
    let other = acl("payments", AclOperation::Write);
    assert_eq!(
        store.delete_acls(&[write.clone(), other]).await.unwrap(),
        vec![write.clone()]
    );
    next(&mut changes).await;
    assert_eq!(store.acls().await.unwrap(), vec![read.clone()]);
    assert!(store.delete_acls(&[write]).await.unwrap().is_empty());
}

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn topics_lifecycle() {
                super::topics_lifecycle($make("topics").await).await;
            }

            #[tokio::test]
            async fn acquire_bumps_epoch_and_fences_the_old_owner() {
                super::acquire_bumps_epoch_and_fences_the_old_owner($make("fence").await).await;
            }

            #[tokio::test]
            async fn acquire_many_partitions_at_once() {
                super::acquire_many_partitions_at_once($make("many-take").await).await;
            }

            #[tokio::test]
            async fn commit_refuses_gaps_and_overlaps() {
                super::commit_refuses_gaps_and_overlaps($make("gaps").await).await;
            }

            #[tokio::test]
            async fn one_flush_of_many_partitions_is_one_transaction() {
                super::one_flush_of_many_partitions_is_one_transaction($make("many").await).await;
            }

            #[tokio::test]
            async fn index_entries_in_offset_order() {
                super::index_entries_in_offset_order($make("index").await).await;
            }

            #[tokio::test]
            async fn one_controller_at_a_time() {
                super::one_controller_at_a_time($make("controller").await).await;
            }

            #[tokio::test]
            async fn groups_and_offsets_are_fenced_by_the_coordinator_slot() {
                super::groups_and_offsets_are_fenced_by_the_coordinator_slot($make("groups").await)
                    .await;
            }

            #[tokio::test]
            async fn compactor_swaps_are_atomic_and_compared() {
                super::compactor_swaps_are_atomic_and_compared($make("compactor").await).await;
            }

            #[tokio::test]
            async fn producer_states_commit_with_the_flush() {
                super::producer_states_commit_with_the_flush($make("producers").await).await;
            }

            #[tokio::test]
            async fn transactions_are_compared_and_fenced() {
                super::transactions_are_compared_and_fenced($make("transactions").await).await;
            }

            #[tokio::test]
            async fn topic_changes_are_notified() {
                super::topic_changes_are_notified($make("watch").await).await;
            }

            #[tokio::test]
            async fn acls_are_stored_once_deleted_and_notified() {
                super::acls_are_stored_once_deleted_and_notified($make("acls").await).await;
            }

            #[tokio::test]
            async fn agent_epochs_increase_and_agents_register() {
                super::agent_epochs_increase_and_agents_register($make("agents").await).await;
            }
        }
    };
}

conformance!(embedded_backend, embedded);
conformance!(etcd_backend, |test| etcd(
    test,
    strata_metastore::etcd::DEFAULT_MAX_TXN_OPS
));

/// etcd with a small op limit: a flush is split into as few transactions as the limit allows.
#[tokio::test]
async fn etcd_commit_splits_only_where_the_op_limit_forces_it() {
    let store = etcd("split", 8).await; // 4 appends per transaction
    store.create_topic(&topic("t", 10)).await.unwrap();
    let mut appends = Vec::new();
    for p in 0..10 {
        let owner = store
            .acquire_partition("t", p, "a", "")
            .await
            .unwrap()
            .owner
            .unwrap();
        appends.push(append("t", p, &owner, 0, 0));
    }
    let report = store.commit_flush(&appends).await.unwrap();
    assert_eq!((report.transactions, report.rejected.len()), (3, 0));
    // Reads are split by the same limit (30 keys in transactions of 6 reads: whole
    // partitions), and each still equals its own read.
    let states = store.partition_states("t", 10).await.unwrap();
    assert_eq!(states.len(), 10);
    for (p, state) in states.iter().enumerate() {
        assert_eq!(*state, store.partition_state("t", p as u32).await.unwrap());
        assert_eq!(state.high_watermark, 1);
    }
    // An append that needs more operations than a transaction holds is refused, alone.
    let owner = store.partition_state("t", 0).await.unwrap().owner.unwrap();
    let owner9 = store.partition_state("t", 9).await.unwrap().owner.unwrap();
    let mut too_large = append("t", 0, &owner, 1, 1);
    too_large.producers = (0..7).map(|id| (id, producer(0, 0, 1, 1))).collect();
    let report = store
        .commit_flush(&[too_large, append("t", 9, &owner9, 1, 1)])
        .await
        .unwrap();
    assert!(matches!(
        report.rejected[..],
        [(
            0,
            Rejection::TooLarge {
                operations: 9,
                limit: 8
            }
        )]
    ));
    assert_eq!(
        store.partition_state("t", 9).await.unwrap().high_watermark,
        2
    );
    assert_eq!(
        store.partition_state("t", 0).await.unwrap().high_watermark,
        1
    );
}

/// An agent that stops renewing its lease (it died, or lost etcd) disappears after the TTL.
#[tokio::test]
async fn etcd_registration_expires_without_renewals() {
    let store = etcd("lease", strata_metastore::etcd::DEFAULT_MAX_TXN_OPS).await;
    let agent = strata_metastore::AgentRecord {
        agent_id: "gone".into(),
        address: "127.0.0.1:2".into(),
        zone: String::new(),
        kafka_address: String::new(),
        node_id: 0,
    };
    let registration = store
        .register_agent(&agent, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    // Renewals keep it past its TTL...
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(store.list_agents().await.unwrap(), vec![agent]);
    // ...and without them it expires.
    drop(registration);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !store.list_agents().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registration did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = "/strata/reopen";
    {
        let store = KvMetastore::new(EmbeddedKv::open(dir.path()).unwrap(), root);
        store.create_topic(&topic("t", 1)).await.unwrap();
        let owner = store
            .acquire_partition("t", 0, "a", "")
            .await
            .unwrap()
            .owner
            .unwrap();
        store
            .commit_flush(&[append("t", 0, &owner, 0, 41)])
            .await
            .unwrap();
    }
    let store = KvMetastore::new(EmbeddedKv::open(dir.path()).unwrap(), root);
    assert_eq!(store.get_topic("t").await.unwrap(), Some(topic("t", 1)));
    let state = store.acquire_partition("t", 0, "b", "").await.unwrap();
    assert_eq!(state.high_watermark, 42);
    assert_eq!(state.owner.unwrap().epoch, 2);
}
