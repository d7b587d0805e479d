//! The consumer: assigned partitions, a position in each, and `poll`.
//!
//! Partitions come either from [`Consumer::assign`] (the application chooses) or from a
//! consumer group ([`Consumer::subscribe`]): the group's coordinator decides, and `poll`
//! follows it — it gives up revoked partitions (committing them first with auto-commit
//! on; they stay committable until the next `poll`, which reports them given up), and
//! starts new ones at the group's committed offset (or per `auto.offset.reset`).
//!
//! A position below the partition's log start (retention moved it) is reset to the log
//! start, as Kafka's `auto.offset.reset=earliest` does; any other error is returned.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::{Connection, Transport};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::log_client::LogClient;

use crate::group::{
    GroupConfig, Membership, OffsetReset, RebalanceEvent, RebalanceKind, TopicPartition,
};
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
    /// The first offset whose record timestamp is at or after this time (ms since the
    /// Unix epoch); the high watermark where there is none.
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bytes per partition per fetch.
    pub max_bytes_per_partition: i32,
    /// What the consumer sees of transactions (Kafka's `isolation.level`).
    pub isolation: Isolation,
    /// The consumer's availability zone (Kafka's `client.rack`): it reads from an agent
    /// of this zone when there is one — any agent serves any partition's reads — so that
    /// no record crosses zones. Without one, or with no agent in the zone, it reads from
    /// each partition's owner.
    pub zone: Option<String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_partition: 1 << 20,
            isolation: Isolation::ReadUncommitted,
            zone: None,
        }
    }
}

/// What a consumer sees of transactions (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Every record, committed or not, up to the high watermark (Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only records of committed transactions (and records outside transactions), up to
    /// the last stable offset.
    ReadCommitted,
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
    /// The incarnation of the topic it reads (fetches name it).
    topic_id: String,
    partition: u32,
    position: i64,
    high_watermark: i64,
    /// The agent refused a fetch: the topic is no longer `topic_id` (deleted, perhaps
    /// created again). Not read until [`Consumer::follow_incarnations`] resolves it.
    changed: bool,
}

/// Reads assigned partitions, each from the agent that owns it (any agent can serve
/// reads; the owner has the partition's recent blocks in its cache). When an agent is gone
/// the consumer refreshes the metadata and reads elsewhere at the next poll.
#[derive(Debug)]
pub struct Consumer {
    router: Arc<Router>,
    /// A refresh of the metadata is due before the next poll.
    stale: bool,
    admin: AdminClient<Transport>,
    /// For ListOffsets (seeking by time).
    log: LogClient<Transport>,
    config: ConsumerConfig,
    assignments: Vec<Assignment>,
    group: Option<GroupMode>,
}

/// A subscribed consumer's group state.
#[derive(Debug)]
struct GroupMode {
    membership: Arc<Membership>,
    /// The membership generation `assignments` belong to.
    generation: u64,
    /// Revoked at the last poll: still committable, given up at the next one.
    revoking: Vec<Assignment>,
    /// Owned, but without a position yet (their committed offsets are being read).
    unpositioned: BTreeSet<TopicPartition>,
    last_auto_commit: tokio::time::Instant,
    auto_commit: Option<tokio::task::JoinHandle<Result<()>>>,
    events: Vec<RebalanceEvent>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn offsets_of<'a>(assignments: impl Iterator<Item = &'a Assignment>) -> Vec<pb::PartitionOffset> {
    assignments
        .filter(|a| a.position >= 0)
        .map(|a| pb::PartitionOffset {
            topic: a.topic.clone(),
            partition: a.partition as i32,
            offset: a.position,
            metadata: String::new(),
        })
        .collect()
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(group) = &self.group {
            // Stops the heartbeat task, which leaves the group.
            group.membership.request_stop();
        }
    }
}

impl Consumer {
    /// A consumer over an open connection.
    pub fn new(connection: Connection, config: ConsumerConfig) -> Self {
        Self {
            admin: AdminClient::new(connection.transport()),
            log: LogClient::new(connection.transport()),
            router: Arc::new(Router::new(connection)),
            stale: true,
            config,
            assignments: Vec::new(),
            group: None,
        }
    }

    /// Joins consumer group `config.group_id` subscribed to `topics`. From then on the
    /// group's coordinator decides which partitions this consumer reads; see
    /// [`Consumer::events`] for when they change.
    pub fn subscribe(&mut self, topics: &[&str], config: GroupConfig) -> Result<()> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        self.join(topics, String::new(), config)
    }

    /// As [`Consumer::subscribe`], to every topic whose whole name matches `pattern`
    /// (topics created later included).
    pub fn subscribe_regex(&mut self, pattern: &str, config: GroupConfig) -> Result<()> {
        self.join(Vec::new(), pattern.to_string(), config)
    }

    fn join(&mut self, topics: Vec<String>, regex: String, config: GroupConfig) -> Result<()> {
        if self.group.is_some() || !self.assignments.is_empty() {
            return Err(Error::InvalidArgument(
                "subscribe once, on a consumer without assigned partitions".to_string(),
            ));
        }
        if config.group_id.is_empty() {
            return Err(Error::InvalidArgument("a group id is required".to_string()));
        }
        let membership = Membership::start(config, topics, regex, self.router.clone());
        self.group = Some(GroupMode {
            membership,
            generation: 0,
            revoking: Vec::new(),
            unpositioned: BTreeSet::new(),
            last_auto_commit: tokio::time::Instant::now(),
            auto_commit: None,
            events: Vec::new(),
        });
        Ok(())
    }

    /// The rebalance events since the last call, oldest first.
    pub fn events(&mut self) -> Vec<RebalanceEvent> {
        self.group
            .as_mut()
            .map(|g| std::mem::take(&mut g.events))
            .unwrap_or_default()
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignments
            .iter()
            .map(|a| (a.topic.clone(), a.partition))
            .collect()
    }

    fn membership(&self) -> Result<Arc<Membership>> {
        self.group
            .as_ref()
            .map(|g| g.membership.clone())
            .ok_or_else(|| Error::InvalidArgument("commit needs a subscribed consumer".to_string()))
    }

    /// Commits, synchronously, the position of every partition this consumer reads (and
    /// of those revoked at the last poll): what `poll` returned so far.
    pub async fn commit(&mut self) -> Result<()> {
        let membership = self.membership()?;
        let group = self.group.as_ref().expect("subscribed");
        let offsets = offsets_of(self.assignments.iter().chain(&group.revoking));
        membership.commit(offsets).await
    }

    /// As [`Consumer::commit`], in the background: await the handle for the outcome.
    pub fn commit_async(&mut self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let membership = self.membership()?;
        let group = self.group.as_ref().expect("subscribed");
        let offsets = offsets_of(self.assignments.iter().chain(&group.revoking));
        Ok(tokio::spawn(
            async move { membership.commit(offsets).await },
        ))
    }

    /// Commits chosen offsets `(topic, partition, next offset to read, metadata)`.
    pub async fn commit_offsets(&mut self, offsets: &[(&str, u32, i64, &str)]) -> Result<()> {
        let membership = self.membership()?;
        let offsets = offsets
            .iter()
            .map(|(topic, partition, offset, metadata)| pb::PartitionOffset {
                topic: topic.to_string(),
                partition: *partition as i32,
                offset: *offset,
                metadata: metadata.to_string(),
            })
            .collect();
        membership.commit(offsets).await
    }

    /// Leaves the group, committing first when auto-commit is on.
    pub async fn close(mut self) -> Result<()> {
        let Some(group) = self.group.as_ref() else {
            return Ok(());
        };
        let membership = group.membership.clone();
        let result = if membership.config.auto_commit {
            self.commit().await
        } else {
            Ok(())
        };
        self.assignments.clear();
        membership.stop().await;
        result
    }

    /// Moves this consumer's partitions toward what the coordinator granted.
    async fn follow_group(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let membership = group.membership.clone();
        if let Some(e) = membership
            .state
            .lock()
            .expect("membership lock")
            .fatal
            .clone()
        {
            return Err(e);
        }
        // Give up what was revoked at the last poll.
        if !group.revoking.is_empty() {
            let released: Vec<TopicPartition> = group
                .revoking
                .drain(..)
                .map(|a| (a.topic, a.partition))
                .collect();
            let mut state = membership.state.lock().expect("membership lock");
            for tp in &released {
                state.owned.remove(tp);
            }
            drop(state);
            group.events.push(RebalanceEvent {
                kind: RebalanceKind::Released,
                partitions: released,
                at_ms: now_ms(),
            });
            membership.wake.notify_one();
        }
        // Lost the membership: drop everything without committing.
        let (generation, granted) = {
            let state = membership.state.lock().expect("membership lock");
            (state.generation, state.granted.clone())
        };
        if generation != group.generation {
            group.generation = generation;
            let mut lost: Vec<TopicPartition> = self
                .assignments
                .drain(..)
                .map(|a| (a.topic, a.partition))
                .collect();
            lost.extend(std::mem::take(&mut group.unpositioned));
            membership
                .state
                .lock()
                .expect("membership lock")
                .owned
                .clear();
            if !lost.is_empty() {
                group.events.push(RebalanceEvent {
                    kind: RebalanceKind::Lost,
                    partitions: lost,
                    at_ms: now_ms(),
                });
            }
            membership.wake.notify_one();
        }
        // Stop reading what was revoked; commit it with auto-commit on.
        let (revoked, kept): (Vec<Assignment>, Vec<Assignment>) = self
            .assignments
            .drain(..)
            .partition(|a| !granted.contains(&(a.topic.clone(), a.partition)));
        self.assignments = kept;
        let dropped: Vec<TopicPartition> = group
            .unpositioned
            .iter()
            .filter(|tp| !granted.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() || !dropped.is_empty() {
            if membership.config.auto_commit
                && let Err(e) = membership.commit(offsets_of(revoked.iter())).await
            {
                tracing::warn!(error = %e, "commit on revocation failed");
            }
            let mut partitions: Vec<TopicPartition> = revoked
                .iter()
                .map(|a| (a.topic.clone(), a.partition))
                .collect();
            partitions.extend(dropped.iter().cloned());
            for tp in &dropped {
                group.unpositioned.remove(tp);
            }
            // Partitions that never got a position were not read: give them up with the
            // others at the next poll.
            group.revoking = revoked;
            group
                .revoking
                .extend(dropped.into_iter().map(|(topic, partition)| Assignment {
                    topic,
                    topic_id: String::new(),
                    partition,
                    position: -1,
                    high_watermark: -1,
                    changed: false,
                }));
            group.events.push(RebalanceEvent {
                kind: RebalanceKind::Revoked,
                partitions,
                at_ms: now_ms(),
            });
        }
        // Take what was granted and is not owned yet.
        let added: Vec<TopicPartition> = {
            let mut state = membership.state.lock().expect("membership lock");
            let added: Vec<TopicPartition> =
                state.granted.difference(&state.owned).cloned().collect();
            state.owned.extend(added.iter().cloned());
            added
        };
        if !added.is_empty() {
            group.unpositioned.extend(added.iter().cloned());
            group.events.push(RebalanceEvent {
                kind: RebalanceKind::Assigned,
                partitions: added,
                at_ms: now_ms(),
            });
        }
        if !group.unpositioned.is_empty() {
            self.position_new_partitions().await;
        }
        // Auto-commit what poll returned, in the background.
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let due = group.last_auto_commit.elapsed() >= membership.config.auto_commit_interval;
        let idle = group.auto_commit.as_ref().is_none_or(|h| h.is_finished());
        if membership.config.auto_commit && due && idle && !self.assignments.is_empty() {
            group.last_auto_commit = tokio::time::Instant::now();
            let offsets = offsets_of(self.assignments.iter());
            let membership = membership.clone();
            group.auto_commit = Some(tokio::spawn(
                async move { membership.commit(offsets).await },
            ));
        }
        Ok(())
    }

    /// Starts newly owned partitions at the group's committed offsets, or per
    /// `auto.offset.reset`. Those whose offsets cannot be read now are tried again at the
    /// next poll.
    async fn position_new_partitions(&mut self) {
        let group = self.group.as_ref().expect("subscribed");
        let membership = group.membership.clone();
        let pending = group.unpositioned.clone();
        let mut topics: Vec<String> = pending.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        let committed = match membership.committed(topics.clone()).await {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read committed offsets; retrying");
                self.stale = true;
                return;
            }
        };
        for topic in topics {
            let (topic_id, partitions) = match self.describe(&topic).await {
                Ok(described) => described,
                Err(error) => {
                    tracing::warn!(topic, %error, "cannot describe a topic; retrying");
                    self.stale = true;
                    continue;
                }
            };
            for info in partitions {
                let tp = (topic.clone(), info.partition as u32);
                if !pending.contains(&tp) {
                    continue;
                }
                let position = committed
                    .iter()
                    .find(|c| c.topic == topic && c.partition == info.partition)
                    .map(|c| c.offset)
                    .unwrap_or(match membership.config.offset_reset {
                        OffsetReset::Earliest => info.log_start_offset,
                        OffsetReset::Latest => info.high_watermark,
                    });
                self.group
                    .as_mut()
                    .expect("subscribed")
                    .unpositioned
                    .remove(&tp);
                self.assignments.push(Assignment {
                    topic: tp.0,
                    topic_id: topic_id.clone(),
                    partition: tp.1,
                    position,
                    high_watermark: info.high_watermark,
                    changed: false,
                });
            }
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
        let (topic_id, described) = self.describe(topic).await?;
        let by_time: HashMap<u32, i64> = match start {
            StartOffset::Timestamp(t) => self
                .log
                .list_offsets(pb::ListOffsetsRequest {
                    topic: topic.to_string(),
                    partitions: Vec::new(),
                    spec: Some(pb::list_offsets_request::Spec::TimestampMs(t)),
                })
                .await?
                .into_inner()
                .offsets
                .into_iter()
                .map(|o| (o.partition as u32, o.offset))
                .collect(),
            _ => Default::default(),
        };
        let count = described.len() as u32;
        for info in described {
            let partition = info.partition as u32;
            if !partitions.is_empty() && !partitions.contains(&partition) {
                continue;
            }
            let position = match start {
                StartOffset::Earliest => info.log_start_offset,
                StartOffset::Latest => info.high_watermark,
                StartOffset::Offset(o) => o,
                StartOffset::Timestamp(_) => by_time
                    .get(&partition)
                    .copied()
                    .filter(|o| *o >= 0)
                    .unwrap_or(info.high_watermark),
            };
            self.assignments
                .retain(|a| !(a.topic == topic && a.partition == partition));
            self.assignments.push(Assignment {
                topic: topic.to_string(),
                topic_id: topic_id.clone(),
                partition,
                position,
                high_watermark: info.high_watermark,
                changed: false,
            });
        }
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
        self.follow_group().await?;
        self.follow_incarnations().await;
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
            .filter(|(_, a)| !a.changed)
            .map(|(i, a)| {
                let channel = self.router.read_channel_for(
                    &a.topic,
                    a.partition,
                    self.config.zone.as_deref(),
                );
                let mut log = LogClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
                let request = pb::FetchRequest {
                    isolation_level: match self.config.isolation {
                        Isolation::ReadUncommitted => pb::IsolationLevel::ReadUncommitted,
                        Isolation::ReadCommitted => pb::IsolationLevel::ReadCommitted,
                    } as i32,
                    topic: a.topic.clone(),
                    topic_id: a.topic_id.clone(),
                    partition: a.partition as i32,
                    offset: a.position,
                    max_bytes,
                    max_wait_ms: wait_ms,
                    zone: self.config.zone.clone().unwrap_or_default(),
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

    /// `topic`'s current incarnation (its id) and partitions; from now on the router
    /// follows its owners.
    async fn describe(&self, topic: &str) -> Result<(String, Vec<pb::PartitionInfo>)> {
        let described = self
            .admin
            .clone()
            .describe_topic(pb::DescribeTopicRequest {
                name: topic.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let _ = self.router.follow(topic).await;
        let topic_id = described.topic.map(|t| t.topic_id).unwrap_or_default();
        Ok((topic_id, described.partitions))
    }

    /// Whether a position lost (below the log start, or in a deleted incarnation) moves to
    /// the end: a group member with `auto.offset.reset=latest`. Otherwise to the start.
    fn resets_to_latest(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| matches!(g.membership.config.offset_reset, OffsetReset::Latest))
    }

    /// Moves assignments whose topic was deleted and created again to the new
    /// incarnation, at its log start (a group member with `auto.offset.reset=latest`: its
    /// end): offsets of the old incarnation mean nothing in the new one, and reading the new
    /// one from an old position would skip its first records. A partition the new
    /// incarnation lacks is dropped; a topic that does not exist (yet) is tried again at the
    /// next poll.
    async fn follow_incarnations(&mut self) {
        let topics: BTreeSet<String> = self
            .assignments
            .iter()
            .filter(|a| a.changed)
            .map(|a| a.topic.clone())
            .collect();
        let latest = self.resets_to_latest();
        for topic in topics {
            let (topic_id, partitions) = match self.describe(&topic).await {
                Ok(described) => described,
                Err(error) => {
                    tracing::debug!(topic, %error, "a changed topic cannot be described yet");
                    continue;
                }
            };
            let partitions: HashMap<u32, pb::PartitionInfo> = partitions
                .into_iter()
                .map(|p| (p.partition as u32, p))
                .collect();
            self.assignments.retain_mut(|a| {
                if !a.changed || a.topic != topic {
                    return true;
                }
                if a.topic_id == topic_id {
                    // Still the incarnation it reads (the refusing agent was behind, or
                    // this one is): keep the position and fetch again.
                    a.changed = false;
                    return true;
                }
                let Some(info) = partitions.get(&a.partition) else {
                    tracing::warn!(topic, partition = a.partition, "the topic was created again without this partition; no longer reading it");
                    return false;
                };
                a.position = if latest {
                    info.high_watermark
                } else {
                    info.log_start_offset
                };
                tracing::warn!(topic, partition = a.partition, old = %a.topic_id, new = %topic_id, position = a.position, "the topic was deleted and created again; reading the new incarnation");
                a.topic_id.clone_from(&topic_id);
                a.high_watermark = info.high_watermark;
                a.changed = false;
                true
            });
        }
    }

    /// Applies one fetch's outcome to assignment `i`.
    fn settle(
        &mut self,
        i: usize,
        result: std::result::Result<tonic::Response<pb::FetchResponse>, tonic::Status>,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<()> {
        // Below the log start (retention moved it): a group member follows its
        // `auto.offset.reset`; a consumer without a group restarts at the log start.
        let reset_to_latest = self.resets_to_latest();
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
                        assignment.position = if reset_to_latest {
                            assignment.high_watermark.max(start)
                        } else {
                            start
                        };
                        Ok(())
                    }
                    _ => Err(Error::Status(status)),
                }
            }
            // Another incarnation now, or none: resolved at the next poll.
            Err(status) if status.metadata().get(strata_proto::TOPIC_CHANGED).is_some() => {
                assignment.changed = true;
                Ok(())
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
