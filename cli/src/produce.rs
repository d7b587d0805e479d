//! `strata produce TOPIC`: one record per line of standard input.

use std::collections::VecDeque;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use strata_client::{Acks, Delivery, Producer, ProducerConfig, ProducerRecord};
use tokio::io::AsyncBufReadExt;

use crate::args::{AcksArg, ProduceArgs};
use crate::target::Target;

/// Deliveries awaited at most at once; beyond it the oldest is awaited first.
const MAX_OUTSTANDING: usize = 200_000;

pub async fn run(server: &Target, args: ProduceArgs) -> Result<()> {
    let headers: Vec<(String, Bytes)> = args
        .headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once('=')
                .with_context(|| format!("--header '{h}' is not KEY=VALUE"))?;
            Ok((k.to_string(), Bytes::from(v.to_string())))
        })
        .collect::<Result<_>>()?;
    let config = ProducerConfig {
        acks: match args.acks {
            AcksArg::All => Acks::All,
            AcksArg::None => Acks::None,
        },
        enable_idempotence: !args.no_idempotence,
        transactional_id: args.transactional_id.clone(),
        ..Default::default()
    };
    let producer = Producer::open(server.connect().await?, config).await;
    if args.transactional_id.is_some() {
        return produce_in_transactions(&producer, &args, &headers).await;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut outstanding: VecDeque<Delivery> = VecDeque::new();
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let mut settle = |result: strata_client::Result<_>| {
        if let Err(e) = result {
            failed += 1;
            first_error.get_or_insert(e);
        }
    };
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let (key, value) = split_line(&line, args.key_separator.as_deref());
        let record = ProducerRecord {
            key,
            value: Some(Bytes::from(value)),
            headers: headers.clone(),
            partition: args.partition,
            timestamp_ms: 0,
        };
        outstanding.push_back(producer.send(&args.topic, record).await?);
        sent += 1;
        if outstanding.len() >= MAX_OUTSTANDING {
            let oldest = outstanding.pop_front().expect("non-empty");
            settle(oldest.await);
        }
    }
    for delivery in outstanding {
        settle(delivery.await);
    }
    if let Some(e) = first_error {
        bail!("{failed} of {sent} records were not acknowledged; first error: {e}");
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

/// `--transactional-id`: one transaction per `--transaction-records` lines (and one for
/// the rest); each commits only once all its records are acknowledged.
async fn produce_in_transactions(
    producer: &Producer,
    args: &ProduceArgs,
    headers: &[(String, Bytes)],
) -> Result<()> {
    producer
        .init_transactions()
        .await
        .context("taking the transactional id")?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let (mut sent, mut in_transaction, mut transactions) = (0u64, 0u64, 0u64);
    let mut deliveries: Vec<Delivery> = Vec::new();
    loop {
        let line = lines.next_line().await.context("reading standard input")?;
        if let Some(line) = &line {
            if in_transaction == 0 {
                producer.begin_transaction().await?;
            }
            let (key, value) = split_line(line, args.key_separator.as_deref());
            let record = ProducerRecord {
                key,
                value: Some(Bytes::from(value)),
                headers: headers.to_vec(),
                partition: args.partition,
                timestamp_ms: 0,
            };
            deliveries.push(producer.send(&args.topic, record).await?);
            sent += 1;
            in_transaction += 1;
        }
        let full = in_transaction >= args.transaction_records.max(1);
        if in_transaction > 0 && (full || line.is_none()) {
            for delivery in deliveries.drain(..) {
                if let Err(e) = delivery.await {
                    producer.abort_transaction().await.ok();
                    bail!(
                        "a record of transaction {} failed, so it was aborted: {e}",
                        transactions + 1
                    );
                }
            }
            producer
                .commit_transaction()
                .await
                .with_context(|| format!("committing transaction {}", transactions + 1))?;
            transactions += 1;
            in_transaction = 0;
        }
        if line.is_none() {
            break;
        }
    }
    eprintln!(
        "produced {sent} records to {} in {transactions} committed transactions",
        args.topic
    );
    Ok(())
}

/// A line as `(key, value)`: split at the first `separator`, if given and present.
fn split_line(line: &str, separator: Option<&str>) -> (Option<Bytes>, String) {
    match separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
        None => (None, line.to_string()),
    }
}
