//! The consume-transform-produce program of `tests/tests/transactions.rs`, run as its own
//! process so that the test can SIGKILL it: reads topic IN in group GROUP (read_committed,
//! no auto-commit), and for each poll writes every record to topic OUT (same key and
//! value) in one transaction with the group's offsets. Any error ends the process with a
//! non-zero status; whoever supervises it starts it again, and `init_transactions`
//! fences (and aborts the transaction of) the instance before.
//!
//! Usage: `strata-transform SERVER GROUP IN OUT TRANSACTIONAL_ID`. It reads at most 16 KiB
//! per partition per poll (a few thousand records per transaction), so that a test's
//! faults land while it works.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_client::{
    Consumer, ConsumerConfig, GroupConfig, Isolation, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, group, input, output, transactional_id] = args.as_slice() else {
        bail!("usage: strata-transform SERVER GROUP IN OUT TRANSACTIONAL_ID");
    };
    let producer = Producer::connect(
        server,
        ProducerConfig {
            transactional_id: Some(transactional_id.clone()),
            transaction_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        },
    )
    .await?;
    producer
        .init_transactions()
        .await
        .context("init_transactions")?;
    let mut consumer = Consumer::connect(
        server,
        ConsumerConfig {
            isolation: Isolation::ReadCommitted,
            max_bytes_per_partition: 16 << 10,
            ..ConsumerConfig::default()
        },
    )
    .await?;
    let mut membership = GroupConfig::new(group.clone());
    membership.auto_commit = false;
    membership.offset_reset = OffsetReset::Earliest;
    membership.session_timeout = Duration::from_secs(3);
    consumer.subscribe(&[input.as_str()], membership)?;
    loop {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            continue;
        }
        producer.begin_transaction().await?;
        let mut next: BTreeMap<u32, i64> = BTreeMap::new();
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            next.insert(record.partition, record.offset + 1);
            deliveries.push(
                producer
                    .send(
                        output,
                        ProducerRecord {
                            key: record.key,
                            value: record.value,
                            ..ProducerRecord::default()
                        },
                    )
                    .await?,
            );
        }
        for delivery in deliveries {
            delivery.await.context("a transformed record")?;
        }
        let offsets: Vec<(String, u32, i64)> = next
            .into_iter()
            .map(|(partition, offset)| (input.clone(), partition, offset))
            .collect();
        producer
            .send_offsets_to_transaction(group, &offsets)
            .await
            .context("send_offsets_to_transaction")?;
        producer
            .commit_transaction()
            .await
            .context("commit_transaction")?;
    }
}
