//! `strata topic ...` and `strata stats`.

use std::collections::HashMap;

use anyhow::{Context, Result};

use crate::args::{ClusterCommand, TopicCommand};
use crate::target::Target;

fn parse_config(pairs: &[String], flag: &str) -> Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("{flag} '{pair}' is not KEY=VALUE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

pub async fn run(server: &Target, command: TopicCommand) -> Result<()> {
    let admin = server.admin().await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            config,
        } => {
            let topic = admin
                .create_topic(&name, partitions, parse_config(&config, "--config")?)
                .await?;
            println!(
                "created topic {} with {} partitions",
                topic.name, topic.partitions
            );
        }
        TopicCommand::List => {
            for topic in admin.list_topics().await? {
                println!("{}\t{} partitions", topic.name, topic.partitions);
            }
        }
        TopicCommand::Describe { name } => {
            let described = admin.describe_topic_with_bytes(&name).await?;
            let topic = described.topic.clone().unwrap_or_default();
            println!("topic {}: {} partitions", topic.name, topic.partitions);
            if !topic.topic_id.is_empty() {
                println!("  id {}", topic.topic_id);
            }
            println!("  records {}", described.records());
            println!("  bytes {}", described.stored_bytes().unwrap_or(0));
            let mut config: Vec<_> = topic.config.iter().collect();
            config.sort();
            for (k, v) in &config {
                println!("  {k}={v}\t({})", topic.config_source(k));
            }
            println!("partition\tlog_start\thigh_watermark\towner\tepoch\tlast_stable\tbytes");
            for p in &described.partitions {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.partition,
                    p.log_start_offset,
                    p.high_watermark,
                    if p.owner_agent_id.is_empty() {
                        "-"
                    } else {
                        &p.owner_agent_id
                    },
                    p.owner_epoch,
                    p.last_stable_offset,
                    p.stored_bytes.unwrap_or(0)
                );
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::Offsets { name, at } => {
            use strata_client::proto::list_offsets_request::Spec;
            let earliest = admin
                .list_offsets(&name, Vec::new(), Spec::Earliest(true))
                .await?;
            let latest = admin
                .list_offsets(&name, Vec::new(), Spec::Latest(true))
                .await?;
            let at = match at {
                Some(time) => {
                    let ms = crate::group::parse_time(&time, "--at")?;
                    Some(
                        admin
                            .list_offsets(&name, Vec::new(), Spec::TimestampMs(ms))
                            .await?,
                    )
                }
                None => None,
            };
            println!(
                "partition\tearliest\tlatest{}",
                if at.is_some() { "\tat\ttimestamp" } else { "" }
            );
            for (i, (first, last)) in earliest.iter().zip(&latest).enumerate() {
                let mut line = format!("{}\t{}\t{}", first.partition, first.offset, last.offset);
                if let Some(at) = &at {
                    // -1: no record at or after the time.
                    line.push_str(&format!("\t{}\t{}", at[i].offset, at[i].timestamp_ms));
                }
                println!("{line}");
            }
        }
        TopicCommand::AddPartitions { name, to } => {
            let topic = admin.add_partitions(&name, to).await?;
            println!("topic {} has {} partitions", topic.name, topic.partitions);
        }
        TopicCommand::Alter { name, set, delete } => {
            let topic = admin
                .alter_topic_config(&name, parse_config(&set, "--set")?, delete)
                .await?;
            println!("altered topic {}", topic.name);
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let start = admin.delete_records(&name, partition, before).await?;
            println!("{name}/{partition}: log start {start}");
        }
    }
    Ok(())
}

pub async fn stats(server: &Target) -> Result<()> {
    let stats = server.admin().await?.agent_stats().await?;
    println!("agent_id\t{}", stats.agent_id);
    println!("flushes\t{}", stats.flushes);
    println!("segment_puts\t{}", stats.segment_puts);
    println!("segment_bytes\t{}", stats.segment_bytes);
    println!("metastore_commits\t{}", stats.metastore_commits);
    println!("partition_blocks\t{}", stats.partition_blocks);
    println!("records_committed\t{}", stats.records_committed);
    println!("object_gets\t{}", stats.object_gets);
    println!("cache_hits\t{}", stats.cache_hits);
    Ok(())
}

/// `strata compactors`: each running compactor's totals and last errors, then the jobs
/// claimed now.
pub async fn compactors(server: &Target) -> Result<()> {
    let described = server.admin().await?.describe_compactors().await?;
    println!(
        "compactor\tpasses\tlast_pass_ended_ms\tlast_pass_ms\tjobs_done\tjobs_failed\texpired_entries\tmerged_entries\tcompacted_records\tobjects_written\torphans_deleted\tarchived_files\tarchived_records"
    );
    for c in &described.compactors {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.compactor_id,
            c.passes,
            c.last_pass_ended_ms,
            c.last_pass_duration_ms,
            c.jobs_done,
            c.jobs_failed,
            c.expired_entries,
            c.merged_entries,
            c.compacted_records,
            c.objects_written,
            c.orphans_deleted,
            c.archived_files,
            c.archived_records
        );
    }
    for c in &described.compactors {
        for e in &c.last_errors {
            println!("error\t{}\t{}\t{}", c.compactor_id, e.at_ms, e.message);
        }
    }
    for job in &described.jobs {
        println!("job\t{}\t{}", job.job, job.compactor_id);
    }
    Ok(())
}

/// `strata health`: the gRPC health service's answer for the whole agent.
pub async fn health(server: &Target) -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(server.connect().await?.transport());
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("health check failed: {status}"))?
        .into_inner()
        .status();
    anyhow::ensure!(status == ServingStatus::Serving, "agent is {status:?}");
    println!("SERVING");
    Ok(())
}

/// `strata cluster status`.
pub async fn cluster(server: &Target, command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let metadata = server.admin().await?.metadata(Vec::new()).await?;
            let (partitions, unassigned) = metadata.partitions_per_agent();
            let controller = if metadata.controller_agent_id.is_empty() {
                "none elected"
            } else {
                &metadata.controller_agent_id
            };
            println!("controller\t{controller}");
            println!("agent\taddress\tzone\tpartitions\trole");
            for agent in &metadata.agents {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    agent.agent_id,
                    agent.address,
                    if agent.zone.is_empty() {
                        "-"
                    } else {
                        &agent.zone
                    },
                    partitions
                        .get(agent.agent_id.as_str())
                        .copied()
                        .unwrap_or(0),
                    if agent.agent_id == metadata.controller_agent_id {
                        "controller"
                    } else {
                        "agent"
                    }
                );
            }
            for record in &metadata.unreadable {
                println!("unreadable\t{}\t{}", record.key, record.reason);
            }
            println!(
                "topics\t{}\tpartitions\t{}\tunassigned\t{unassigned}",
                metadata.topics.len(),
                metadata
                    .topics
                    .iter()
                    .map(|t| t.partitions.len())
                    .sum::<usize>()
            );
        }
    }
    Ok(())
}
