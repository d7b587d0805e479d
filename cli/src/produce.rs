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
        ..Default::default()
    };
    let producer = Producer::open(server.connect().await?, config).await;
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
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
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
