//! SIGKILL the agent while producers with acks=ALL are running, restart it, and check that
//! every acknowledged record is readable at exactly the offset it was acknowledged with
//! (etcd + s3s-fs).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, RecordPosition,
    StartOffset,
};
use strata_tests::{AgentKind, AgentProcess, TestEnv, unique_name};
use tokio::sync::watch;

const PRODUCERS: usize = 4;
const PARTITIONS: i32 = 6;

/// Sends numbered records until told to stop; records every acknowledged one.
async fn produce_until_stopped(
    server: String,
    id: usize,
    acked: Arc<Mutex<HashMap<String, RecordPosition>>>,
    failures: Arc<Mutex<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    let mut seq = 0u64;
    while !*stop.borrow() {
        // A window of 200 in-flight records, then wait for all of them.
        let mut window = Vec::new();
        for _ in 0..200 {
            let value = format!("producer-{id}-record-{seq}");
            let record = ProducerRecord::keyed(format!("key-{}", seq % 97), value.clone());
            seq += 1;
            match producer.send("crash", record).await {
                Ok(delivery) => window.push((value, delivery)),
                Err(_) => *failures.lock().unwrap() += 1,
            }
        }
        for (value, delivery) in window {
            match delivery.await {
                Ok(position) => {
                    acked.lock().unwrap().insert(value, position);
                }
                Err(_) => *failures.lock().unwrap() += 1,
            }
        }
        if *stop.borrow() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(5), stop.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_record_survives_sigkill() {
    let mut agent = AgentProcess::start(
        AgentKind::Agent {
            env: TestEnv::from_env(),
            cluster: unique_name("crash"),
            bucket: unique_name("crash"),
        },
        &[],
    );
    let server = agent.server();
    Admin::connect(&server)
        .await
        .unwrap()
        .create_topic("crash", PARTITIONS, Default::default())
        .await
        .unwrap();

    let acked = Arc::new(Mutex::new(HashMap::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let (stop_tx, stop_rx) = watch::channel(false);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            tokio::spawn(produce_until_stopped(
                server.clone(),
                id,
                acked.clone(),
                failures.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Let them run, kill the agent mid-stream, bring it back, let them run again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_before_kill = acked.lock().unwrap().len();
    tokio::task::block_in_place(|| agent.restart());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    for p in producers {
        p.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let failures = *failures.lock().unwrap();
    println!(
        "acknowledged {} records ({} before the kill), {} sends failed",
        acked.len(),
        acked_before_kill,
        failures
    );
    assert!(
        acked_before_kill > 0,
        "producers made no progress before the kill"
    );
    assert!(
        acked.len() > acked_before_kill,
        "producers made no progress after the restart"
    );

    // Read everything back.
    let mut consumer = Consumer::connect(&server, ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("crash", &[], StartOffset::Earliest)
        .await
        .unwrap();
    let ends: BTreeMap<u32, i64> = consumer
        .high_watermarks()
        .into_iter()
        .map(|(_, p, hwm)| (p, hwm))
        .collect();
    let mut stored: HashMap<(u32, i64), String> = HashMap::new();
    while ends
        .iter()
        .any(|(p, end)| consumer.position("crash", *p).unwrap() < *end)
    {
        for r in consumer.poll(Duration::ZERO).await.unwrap() {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            assert!(stored.insert((r.partition, r.offset), value).is_none());
        }
    }
    // Offsets are dense from 0 in every partition.
    for (p, end) in &ends {
        for offset in 0..*end {
            assert!(
                stored.contains_key(&(*p, offset)),
                "partition {p} has a hole at {offset}"
            );
        }
    }
    let mut lost = 0;
    for (value, position) in &acked {
        match stored.get(&(position.partition, position.offset)) {
            Some(found) if found == value => {}
            other => {
                lost += 1;
                eprintln!("acknowledged {value} at {position:?}, found {other:?}");
            }
        }
    }
    println!(
        "{} records stored, {} acknowledged, {} lost",
        stored.len(),
        acked.len(),
        lost
    );
    assert_eq!(lost, 0, "acknowledged records were lost");
}
