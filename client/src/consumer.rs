//! The consumer: assigned partitions, a position in each, and `poll`.
//!
//! A position below the partition's log start (retention moved it) is reset to the log
//! start, as Kafka's `auto.offset.reset=earliest` does; any other error is returned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::log_client::LogClient;
use tonic::transport::Channel;

use crate::router::{Router, is_retriable};
use crate::{Error, MAX_MESSAGE_BYTES, Result};

/// Where an assignment starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start.
    Earliest,
    /// The high watermark: only records written from now on.
    Latest,
    /// This offset.
    Offset(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bytes per partition per fetch.
    pub max_bytes_per_partition: i32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_partition: 1 << 20,
        }
    }
}

/// A record as the consumer hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value; `None` = tombstone.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
struct Assignment {
    topic: String,
    partition: u32,
    position: i64,
    high_watermark: i64,
}

/// Reads assigned partitions, each from the agent that owns it (any agent can serve
/// reads; the owner has the partition's recent blocks in its cache). When an agent is gone
/// the consumer refreshes the metadata and reads elsewhere at the next poll.
#[derive(Debug)]
pub struct Consumer {
    router: Arc<Router>,
    /// A refresh of the metadata is due before the next poll.
    stale: bool,
    admin: AdminClient<Channel>,
    config: ConsumerConfig,
    assignments: Vec<Assignment>,
}

impl Consumer {
    /// A consumer over an open channel.
    pub fn new(channel: Channel, config: ConsumerConfig) -> Self {
        Self {
            router: Arc::new(Router::new(channel.clone())),
            stale: true,
            admin: AdminClient::new(channel),
            config,
            assignments: Vec::new(),
        }
    }

    /// Connects to `server`.
    pub async fn connect(server: &str, config: ConsumerConfig) -> Result<Self> {
        Ok(Self::new(crate::connect(server).await?, config))
    }

    /// Adds partitions of `topic` (all of them if `partitions` is empty), starting at
    /// `start`.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        start: StartOffset,
    ) -> Result<()> {
        let described = self
            .admin
            .describe_topic(pb::DescribeTopicRequest {
                name: topic.to_string(),
            })
            .await?
            .into_inner();
        for info in described.partitions {
            let partition = info.partition as u32;
            if !partitions.is_empty() && !partitions.contains(&partition) {
                continue;
            }
            let position = match start {
                StartOffset::Earliest => info.log_start_offset,
                StartOffset::Latest => info.high_watermark,
                StartOffset::Offset(o) => o,
            };
            self.assignments
                .retain(|a| !(a.topic == topic && a.partition == partition));
            self.assignments.push(Assignment {
                topic: topic.to_string(),
                partition,
                position,
                high_watermark: info.high_watermark,
            });
        }
        let count = described.topic.map_or(0, |t| t.partitions) as u32;
        if let Some(bad) = partitions.iter().find(|p| **p >= count) {
            return Err(Error::InvalidArgument(format!(
                "partition {bad} does not exist: topic '{topic}' has {count} partitions"
            )));
        }
        Ok(())
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        let assignment = self
            .assignments
            .iter_mut()
            .find(|a| a.topic == topic && a.partition == partition)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{topic}/{partition} is not assigned"))
            })?;
        assignment.position = offset;
        Ok(())
    }

    /// The next offset to be read of an assigned partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.assignments
            .iter()
            .find(|a| a.topic == topic && a.partition == partition)
            .map(|a| a.position)
    }

    /// The high watermark of each assignment as last seen, as (topic, partition, hwm).
    pub fn high_watermarks(&self) -> Vec<(String, u32, i64)> {
        self.assignments
            .iter()
            .map(|a| (a.topic.clone(), a.partition, a.high_watermark))
            .collect()
    }

    /// Fetches from every assigned partition at once and returns as soon as any of them
    /// has records (with whatever else arrived by then), or when all of them waited
    /// `timeout` at their tail. Records are in offset order per partition. Fetches still
    /// in flight are dropped: their positions do not move, so nothing is skipped.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.stale {
            // Best effort: until it succeeds, reads go to the bootstrap agent.
            self.stale = self.router.refresh().await.is_err();
        }
        let max_bytes = self.config.max_bytes_per_partition;
        let wait_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut pending: FuturesUnordered<_> = self
            .assignments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut log = LogClient::new(self.router.channel_for(&a.topic, a.partition))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES);
                let request = pb::FetchRequest {
                    topic: a.topic.clone(),
                    partition: a.partition as i32,
                    offset: a.position,
                    max_bytes,
                    max_wait_ms: wait_ms,
                };
                async move { (i, log.fetch(request).await) }
            })
            .collect();
        let mut out = Vec::new();
        while let Some((i, result)) = pending.next().await {
            self.settle(i, result, &mut out)?;
            if !out.is_empty() {
                while let Some(Some((i, result))) = pending.next().now_or_never() {
                    self.settle(i, result, &mut out)?;
                }
                break;
            }
        }
        if out.is_empty() && self.stale {
            // An agent was unreachable: give the cluster a moment before the next poll.
            tokio::time::sleep(Duration::from_millis(100).min(timeout)).await;
        }
        Ok(out)
    }

    /// Applies one fetch's outcome to assignment `i`.
    fn settle(
        &mut self,
        i: usize,
        result: std::result::Result<tonic::Response<pb::FetchResponse>, tonic::Status>,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<()> {
        let assignment = &mut self.assignments[i];
        match result {
            Ok(response) => {
                let response = response.into_inner();
                assignment.high_watermark = response.high_watermark;
                assignment.position = response.next_offset;
                out.extend(response.records.into_iter().map(|r| ConsumerRecord {
                    topic: assignment.topic.clone(),
                    partition: assignment.partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                }));
                Ok(())
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let bound = |name: &str| {
                    status
                        .metadata()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                };
                if let Some(hwm) = bound("strata-high-watermark") {
                    assignment.high_watermark = hwm;
                }
                match bound("strata-log-start-offset") {
                    Some(start) if assignment.position < start => {
                        assignment.position = start;
                        Ok(())
                    }
                    _ => Err(Error::Status(status)),
                }
            }
            // The agent is gone or stopping: read elsewhere from the next poll on.
            Err(status) if is_retriable(&Error::Status(status.clone())) => {
                self.stale = true;
                Ok(())
            }
            Err(status) => Err(Error::Status(status)),
        }
    }
}
