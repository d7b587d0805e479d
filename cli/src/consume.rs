//! `strata consume TOPIC`: prints records, per partition in offset order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use strata_client::{
    Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, Isolation, OffsetReset, RebalanceKind,
    StartOffset,
};

use crate::args::{CommitMode, ConsumeArgs, IsolationArg};
use crate::target::Target;

fn consumer_config(args: &ConsumeArgs) -> ConsumerConfig {
    ConsumerConfig {
        isolation: match args.isolation {
            IsolationArg::ReadUncommitted => Isolation::ReadUncommitted,
            IsolationArg::ReadCommitted => Isolation::ReadCommitted,
        },
        zone: args.zone.clone(),
        ..ConsumerConfig::default()
    }
}

pub async fn run(server: &Target, args: ConsumeArgs) -> Result<()> {
    if let Some(group) = args.group.clone() {
        return run_group(server, &group, args).await;
    }
    let mut consumer = Consumer::new(server.connect().await?, consumer_config(&args));
    let start = match (&args.from_timestamp, args.offset, args.from_beginning) {
        (Some(time), _, _) => {
            StartOffset::Timestamp(crate::group::parse_time(time, "--from-timestamp")?)
        }
        (None, Some(offset), _) => StartOffset::Offset(offset),
        (None, None, true) => StartOffset::Earliest,
        (None, None, false) => StartOffset::Latest,
    };
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    consumer.assign(&args.topic, &partitions, start).await?;
    // Without --follow, stop at the high watermarks seen now.
    let ends: HashMap<u32, i64> = consumer
        .high_watermarks()
        .into_iter()
        .map(|(_, p, hwm)| (p, hwm))
        .collect();
    let done = |consumer: &Consumer| {
        ends.iter()
            .all(|(p, end)| consumer.position(&args.topic, *p).unwrap_or(i64::MAX) >= *end)
    };
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        if !args.follow && done(&consumer) {
            break;
        }
        let wait = if args.follow {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        for record in consumer.poll(wait).await? {
            if !args.follow
                && ends
                    .get(&record.partition)
                    .is_some_and(|end| record.offset >= *end)
            {
                continue;
            }
            print_record(&mut out, &args, &record)?;
            printed += 1;
            if args.max_messages.is_some_and(|max| printed >= max) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

/// Reads as a group member until interrupted or --max-messages, then leaves the group.
async fn run_group(server: &Target, group: &str, args: ConsumeArgs) -> Result<()> {
    let mut consumer = Consumer::new(server.connect().await?, consumer_config(&args));
    let mut config = GroupConfig::new(group);
    config.instance_id = args.instance_id.clone();
    config.assignor = args.assignor.clone();
    config.session_timeout = Duration::from_millis(args.session_timeout_ms);
    config.rebalance_timeout = Duration::from_millis(args.rebalance_timeout_ms);
    config.auto_commit = matches!(args.commit, CommitMode::Auto);
    config.auto_commit_interval = Duration::from_millis(args.auto_commit_interval_ms);
    config.offset_reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    consumer.subscribe(&[&args.topic], config)?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut interrupt = std::pin::pin!(shutdown_signal());
    loop {
        let records = tokio::select! {
            records = consumer.poll(Duration::from_millis(500)) => records?,
            () = &mut interrupt => break,
        };
        if args.print_rebalances {
            for event in consumer.events() {
                let kind = match event.kind {
                    RebalanceKind::Assigned => "assigned",
                    RebalanceKind::Revoked => "revoked",
                    RebalanceKind::Released => "released",
                    RebalanceKind::Lost => "lost",
                };
                let partitions: Vec<String> = event
                    .partitions
                    .iter()
                    .map(|(t, p)| format!("{t}:{p}"))
                    .collect();
                eprintln!("rebalance {kind} {} {}", event.at_ms, partitions.join(","));
            }
        }
        let mut done = false;
        // The next offset of each partition, past the records written out.
        let mut processed: BTreeMap<(&str, u32), i64> = BTreeMap::new();
        for record in &records {
            print_record(&mut out, &args, record)?;
            processed.insert((&record.topic, record.partition), record.offset + 1);
            printed += 1;
            if args.max_messages.is_some_and(|max| printed >= max) {
                done = true;
                break;
            }
        }
        out.flush()?;
        if matches!(args.commit, CommitMode::Processed) && !processed.is_empty() {
            let offsets: Vec<(&str, u32, i64, &str)> = processed
                .iter()
                .map(|((topic, partition), offset)| (*topic, *partition, *offset, ""))
                .collect();
            if let Err(e) = consumer.commit_offsets(&offsets).await {
                // Not fatal: the records will be read again by whoever owns them next.
                tracing::warn!(error = %e, "commit failed");
            }
        }
        if done {
            break;
        }
    }
    out.flush()?;
    drop(out);
    consumer.close().await?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn text(bytes: Option<&bytes::Bytes>, base64: bool) -> Option<String> {
    bytes.map(|b| {
        if base64 {
            base64::engine::general_purpose::STANDARD.encode(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    })
}

fn print_record(out: &mut impl Write, args: &ConsumeArgs, r: &ConsumerRecord) -> Result<()> {
    if args.json {
        // A list, not an object: a key may repeat, and order is kept.
        let headers: Vec<serde_json::Value> = r
            .headers
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": text(Some(v), args.base64)}))
            .collect();
        let object = serde_json::json!({
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp_ms,
            "key": text(r.key.as_ref(), args.base64),
            "value": text(r.value.as_ref(), args.base64),
            "headers": headers,
        });
        writeln!(out, "{object}")?;
        return Ok(());
    }
    let format = args.format.as_deref().unwrap_or("%v");
    let mut line = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(spec)) => {
                chars.next();
                match spec {
                    't' => line.push_str(&r.topic),
                    'p' => line.push_str(&r.partition.to_string()),
                    'o' => line.push_str(&r.offset.to_string()),
                    'T' => line.push_str(&r.timestamp_ms.to_string()),
                    'k' => line.push_str(&text(r.key.as_ref(), args.base64).unwrap_or_default()),
                    'v' => line.push_str(&text(r.value.as_ref(), args.base64).unwrap_or_default()),
                    'h' => {
                        let headers: Vec<String> = r
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                format!("{k}={}", text(Some(v), args.base64).unwrap_or_default())
                            })
                            .collect();
                        line.push_str(&headers.join(","));
                    }
                    '%' => line.push('%'),
                    other => {
                        line.push('%');
                        line.push(other);
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                line.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                line.push('\t');
            }
            (c, _) => line.push(c),
        }
    }
    if !line.ends_with('\n') {
        line.push('\n');
    }
    out.write_all(line.as_bytes())?;
    Ok(())
}
