//! Group coordination on an agent: the coordinator slots it holds, their groups, and the
//! group operations of the `Groups` service.
//!
//! The controller assigns each of the [`crate::controller::COORDINATOR_SLOTS`] slots to a live agent, as it
//! assigns partitions; a group belongs to slot `murmur2(group id) % slots`. An agent takes
//! a slot with an epoch-bumping transaction ([`Metastore::acquire_coordinator`]) and then
//! loads the slot's groups from the metastore. Every change of a group (membership,
//! assignment, revocations) is written to the metastore **before** the member hears of
//! it, in a transaction that compares the slot's owner, so:
//! - a coordinator that lost its slot (paused, cut off, moved) can never write again, and
//!   learns so from its first refused write;
//! - the next coordinator starts from exactly what members were told, so a partition
//!   given to one member is never given to another before it was given up.
//!
//! Committed offsets are written by the coordinator under the same guard, while the
//! group's lock is held, so a commit and a revocation never interleave. Reads (offsets,
//! describe, list) come straight from the metastore and are served by any agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_metastore::{CommittedOffset, Coordinatorship, GroupRecord, TopicPartition};
use strata_proto::v1 as pb;
use strata_proto::{topic_partition_lists, topic_partition_pairs};
use tokio::time::Instant;

use crate::agent::{Agent, Inner};
use crate::classic::{ClassicJoin, ClassicJoined, ClassicSync, ClassicSynced, JoinStep};
use crate::controller::coordinator_slot;
use crate::group::{Group, Heartbeat};
use crate::{Error, Result};

/// How often members' session and rebalance timeouts are checked.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Longest interval between a member's heartbeats.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the topic list used for assignments is reused.
const TOPICS_TTL: Duration = Duration::from_secs(1);

/// Which fields of a heartbeat were left out: unchanged since the member's last one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unchanged {
    pub topics: bool,
    pub topic_regex: bool,
    pub assignor: bool,
    pub owned: bool,
    pub rebalance_timeout: bool,
}

/// Every topic's partition count, by name.
type TopicCounts = Arc<BTreeMap<String, u32>>;

/// The coordinator slots this agent holds.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    slots: tokio::sync::Mutex<HashMap<u32, Arc<Slot>>>,
    topics: Mutex<Option<(Instant, TopicCounts)>>,
}

/// One held slot and its groups.
#[derive(Debug)]
struct Slot {
    lease: Coordinatorship,
    groups: tokio::sync::Mutex<HashMap<String, Group>>,
}

/// Checks a group id: the same rules as topic names (it is part of metastore keys).
fn validate_group_id(group_id: &str) -> Result<()> {
    crate::topic::validate_key_part("group id", group_id)
}

fn millis(ms: i32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

fn members_list(group: &Group) -> String {
    group
        .record
        .members
        .values()
        .map(|m| {
            if m.instance_id.is_empty() {
                m.member_id.clone()
            } else {
                format!("{} ({})", m.member_id, m.instance_id)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Inner {
    /// Takes the slots assigned to this agent and drops the others.
    pub(crate) async fn reconcile_slots(&self) {
        let me = self.config.agent_id.as_str();
        let assignment = self.cluster.assignment();
        let wanted: BTreeSet<u32> = if self.cluster.registered() {
            assignment.coordinator_slots_of(me).collect()
        } else {
            BTreeSet::new()
        };
        let mut slots = self.coordinator.slots.lock().await;
        slots.retain(|slot, _| {
            let keep = wanted.contains(slot);
            if !keep {
                tracing::info!(slot, "coordinator slot moved away; dropping its groups");
            }
            keep
        });
        for slot in wanted {
            if !slots.contains_key(&slot)
                && let Err(e) = self.take_slot(&mut slots, slot).await
            {
                tracing::warn!(slot, error = %e, "could not take a coordinator slot");
            }
        }
    }

    /// Drops every slot (the registration was lost, or the agent is stopping).
    pub(crate) async fn drop_slots(&self) {
        self.coordinator.slots.lock().await.clear();
    }

    #[tracing::instrument(name = "coordinator.take_slot", skip(self, slots))]
    async fn take_slot(&self, slots: &mut HashMap<u32, Arc<Slot>>, slot: u32) -> Result<Arc<Slot>> {
        let lease = self
            .metastore
            .acquire_coordinator(slot, &self.config.agent_id)
            .await?;
        let now = Instant::now();
        let groups: HashMap<String, Group> = self
            .metastore
            .groups()
            .await?
            .into_iter()
            .filter(|g| coordinator_slot(&g.group_id) == slot)
            .map(|g| (g.group_id.clone(), Group::new(g, now)))
            .collect();
        tracing::info!(
            slot,
            epoch = lease.owner.epoch,
            groups = groups.len(),
            "took a coordinator slot"
        );
        let held = Arc::new(Slot {
            lease,
            groups: tokio::sync::Mutex::new(groups),
        });
        slots.insert(slot, held.clone());
        Ok(held)
    }

    /// The held slot of `group_id`, taken now if the controller assigned it here.
    async fn slot_for(&self, group_id: &str) -> Result<Arc<Slot>> {
        let slot = coordinator_slot(group_id);
        let mut slots = self.coordinator.slots.lock().await;
        if let Some(held) = slots.get(&slot) {
            return Ok(held.clone());
        }
        let me = self.config.agent_id.as_str();
        match self.cluster.assignment().coordinator_of(slot) {
            Some(agent) if agent == me && self.cluster.registered() => {
                self.take_slot(&mut slots, slot).await
            }
            Some(agent) => Err(Error::NotCoordinator {
                group: group_id.to_string(),
                reason: format!("agent '{agent}' coordinates it"),
            }),
            None => Err(Error::NotCoordinator {
                group: group_id.to_string(),
                reason: "no agent coordinates it yet; retry".to_string(),
            }),
        }
    }

    /// Forgets a slot whose write was refused: another agent took it.
    async fn lose_slot(&self, slot: &Slot, group_id: &str) -> Error {
        self.lose_lease(&slot.lease, group_id).await
    }

    /// Forgets the slot `lease` holds, after a write under it was refused: another agent
    /// took it. The error says so about `key` (a group or transactional id).
    pub(crate) async fn lose_lease(&self, lease: &Coordinatorship, key: &str) -> Error {
        let mut slots = self.coordinator.slots.lock().await;
        if slots
            .get(&lease.slot)
            .is_some_and(|held| held.lease == *lease)
        {
            slots.remove(&lease.slot);
        }
        tracing::warn!(slot = lease.slot, "coordinator slot taken by another agent");
        Error::NotCoordinator {
            group: key.to_string(),
            reason: "another agent took over its coordination; find the coordinator again"
                .to_string(),
        }
    }

    /// This agent's hold on the coordinator slot of `key` (a group id or a transactional
    /// id), taken now if the controller assigned it here.
    pub(crate) async fn coordinator_lease(&self, key: &str) -> Result<Coordinatorship> {
        Ok(self.slot_for(key).await?.lease.clone())
    }

    /// The coordinator slots this agent holds.
    pub(crate) async fn held_slots(&self) -> BTreeSet<u32> {
        self.coordinator
            .slots
            .lock()
            .await
            .keys()
            .copied()
            .collect()
    }

    /// Every topic's partition count, at most [`TOPICS_TTL`] old.
    async fn topic_counts(&self) -> Result<Arc<BTreeMap<String, u32>>> {
        if let Some((at, topics)) = self
            .coordinator
            .topics
            .lock()
            .expect("topics lock")
            .as_ref()
            && at.elapsed() < TOPICS_TTL
        {
            return Ok(topics.clone());
        }
        let topics: Arc<BTreeMap<String, u32>> = Arc::new(
            self.metastore
                .list_topics()
                .await?
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect(),
        );
        *self.coordinator.topics.lock().expect("topics lock") =
            Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// A copy of the group to work on: the one held in memory, else the stored one; with
    /// `create`, a group that does not exist is created empty. Nothing is kept in memory
    /// until [`Inner::save_group`] stores it.
    async fn loaded_group(
        &self,
        groups: &HashMap<String, Group>,
        group_id: &str,
        create: bool,
    ) -> Result<Group> {
        if let Some(group) = groups.get(group_id) {
            return Ok(group.clone());
        }
        match self.metastore.group(group_id).await? {
            Some(record) => Ok(Group::new(record, Instant::now())),
            None if create => {
                let record = GroupRecord {
                    group_id: group_id.to_string(),
                    assignor: "uniform".to_string(),
                    ..Default::default()
                };
                let mut group = Group::new(record, Instant::now());
                group.stored = false;
                Ok(group)
            }
            None => Err(Error::GroupNotFound(group_id.to_string())),
        }
    }

    /// Makes `changed` the group's state: stores it first if its record changed (or was
    /// never stored). On a refused write the slot is dropped; on an unknown outcome the
    /// group is reloaded from the metastore at its next use. Only groups with members
    /// stay in memory (their members' deadlines live there); an empty one is read from
    /// the metastore when it is next used.
    async fn save_group(
        &self,
        slot: &Slot,
        groups: &mut HashMap<String, Group>,
        mut changed: Group,
    ) -> Result<()> {
        let group_id = changed.record.group_id.clone();
        let unchanged = changed.stored
            && groups
                .get(&group_id)
                .is_none_or(|g| g.record == changed.record);
        if !unchanged {
            let limit = self.config.limits.max_group_state_bytes;
            let size = serde_json::to_vec(&changed.record).map_or(usize::MAX, |v| v.len());
            if size > limit {
                return Err(crate::limits::full(
                    format!(
                        "group '{group_id}' would take {size} bytes of stored state, over the \
                         limit of {limit}: fewer members, or fewer subscribed partitions"
                    ),
                    "max_group_state_bytes",
                ));
            }
            match self
                .metastore
                .store_group(&slot.lease, &changed.record)
                .await
            {
                Ok(true) => changed.stored = true,
                Ok(false) => return Err(self.lose_slot(slot, &group_id).await),
                Err(e) => {
                    // The write may or may not have applied: the group is what is stored
                    // now (read again), or, failing that, read at its next use.
                    match self.metastore.group(&group_id).await {
                        Ok(Some(record)) => {
                            let reloaded = Group::new(record, Instant::now());
                            reloaded.classic.changed();
                            groups.insert(group_id, reloaded);
                        }
                        _ => {
                            groups.remove(&group_id);
                        }
                    }
                    return Err(e.into());
                }
            }
            // Joins and syncs waiting for the group look again.
            changed.classic.changed();
        }
        if changed.is_empty() {
            groups.remove(&group_id);
        } else {
            groups.insert(group_id, changed);
        }
        Ok(())
    }

    /// Stores committed offsets of a group under the slot's fence.
    async fn store_offsets(
        &self,
        slot: &Slot,
        group_id: &str,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> Result<()> {
        if self
            .metastore
            .commit_offsets(&slot.lease, group_id, offsets)
            .await?
        {
            Ok(())
        } else {
            Err(self.lose_slot(slot, group_id).await)
        }
    }

    /// Removes timed-out members of every loaded group.
    pub(crate) async fn sweep_groups(&self) {
        let held: Vec<Arc<Slot>> = self
            .coordinator
            .slots
            .lock()
            .await
            .values()
            .cloned()
            .collect();
        if held.is_empty() {
            return;
        }
        let topics = match self.topic_counts().await {
            Ok(topics) => topics,
            Err(e) => {
                tracing::debug!(error = %e, "group sweep: cannot list topics");
                return;
            }
        };
        let now = Instant::now();
        for slot in held {
            let mut groups = slot.groups.lock().await;
            let ids: Vec<String> = groups.keys().cloned().collect();
            for id in ids {
                let mut work = groups[&id].clone();
                let expired = !work.expire(&topics, now).is_empty();
                let classic_changed = work.classic_tick(now);
                if !expired && !classic_changed {
                    continue;
                }
                if let Err(e) = self.save_group(&slot, &mut groups, work).await {
                    tracing::warn!(group = %id, error = %e, "could not store a group after timeouts");
                    // A slot taken away fails every group's write: stop there. Another
                    // error was this group's; the others still get their timers.
                    if matches!(e, Error::NotCoordinator { .. }) {
                        break;
                    }
                }
            }
        }
    }

    /// Runs the sweep every [`SWEEP_INTERVAL`] until `stop` turns true.
    pub(crate) async fn run_group_sweeper(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
            if *stop.borrow() {
                break;
            }
            self.sweep_groups().await;
        }
        self.drop_slots().await;
    }
}

impl Agent {
    /// The live agent that coordinates `key` (a group id or a transactional id: both
    /// are placed by the same slots).
    pub fn coordinator_agent(&self, key: &str) -> Result<strata_metastore::AgentRecord> {
        validate_group_id(key)?;
        let slot = coordinator_slot(key);
        let assignment = self.inner.cluster.assignment();
        let agent = assignment.coordinator_of(slot).ok_or_else(|| {
            Error::Unavailable(format!(
                "no agent coordinates '{key}' yet (the controller has not assigned its slot); \
                 retry"
            ))
        })?;
        self.inner
            .cluster
            .agents()
            .iter()
            .find(|a| a.agent_id == agent)
            .cloned()
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the coordinator of '{key}', agent '{agent}', is not live; retry"
                ))
            })
    }

    /// The live agent that coordinates `group_id`.
    pub fn find_coordinator(&self, group_id: &str) -> Result<pb::FindCoordinatorResponse> {
        let agent = self.coordinator_agent(group_id)?;
        Ok(pb::FindCoordinatorResponse {
            agent_id: agent.agent_id,
            address: agent.address,
        })
    }

    /// Whether this agent coordinates `key` (a group or transactional id) now.
    pub fn coordinates(&self, key: &str) -> bool {
        self.inner
            .cluster
            .assignment()
            .coordinator_of(coordinator_slot(key))
            .is_some_and(|agent| agent == self.inner.config.agent_id)
    }

    /// The address of the agent coordinating `group_id`, unless it is this one.
    pub fn coordinator_address(&self, group_id: &str) -> Option<String> {
        self.find_coordinator(group_id)
            .ok()
            .filter(|c| c.agent_id != self.inner.config.agent_id)
            .map(|c| c.address)
    }

    /// A member's heartbeat (see the `Groups.Heartbeat` RPC).
    #[tracing::instrument(name = "group.heartbeat", skip_all, fields(group = %r.group_id, epoch = r.member_epoch))]
    pub async fn group_heartbeat(&self, r: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        self.member_heartbeat(r, Unchanged::default()).await
    }

    /// A member's heartbeat in which some fields may be left out, meaning unchanged since
    /// the member's last one (Kafka's ConsumerGroupHeartbeat: a null field).
    #[tracing::instrument(name = "group.member_heartbeat", skip_all, fields(group = %r.group_id, epoch = r.member_epoch))]
    pub async fn member_heartbeat(
        &self,
        mut r: pb::HeartbeatRequest,
        unchanged: Unchanged,
    ) -> Result<pb::HeartbeatResponse> {
        validate_group_id(&r.group_id)?;
        self.check_heartbeat(&r)?;
        let inner = &self.inner;
        let topics = inner.topic_counts().await?;
        let slot = inner.slot_for(&r.group_id).await?;
        let mut groups = slot.groups.lock().await;
        let leaving = matches!(
            r.member_epoch,
            crate::group::LEAVE | crate::group::STATIC_LEAVE
        );
        let mut work = match inner.loaded_group(&groups, &r.group_id, !leaving).await {
            // A leave of a group nobody knows: nothing to do, nothing stored.
            Err(Error::GroupNotFound(_)) if leaving => {
                return Ok(pb::HeartbeatResponse {
                    member_epoch: crate::group::LEAVE,
                    ..Default::default()
                });
            }
            other => other?,
        };
        if unchanged.assignor {
            r.assignor = work.record.assignor.clone();
        }
        if let Some(member) = work.record.members.get(&r.member_id)
            && r.member_epoch > 0
        {
            if unchanged.topics {
                r.topics = member.topics.clone();
            }
            if unchanged.topic_regex {
                r.topic_regex = member.topic_regex.clone();
            }
            if unchanged.rebalance_timeout {
                r.rebalance_timeout_ms = member.rebalance_timeout_ms as i32;
            }
            if unchanged.owned {
                let owned: BTreeSet<TopicPartition> =
                    member.assigned.union(&member.revoking).cloned().collect();
                r.owned = topic_partition_lists(&owned);
            }
        }
        if r.member_epoch == crate::group::JOIN && work.classic_state().is_some() {
            return Err(Error::InconsistentProtocol {
                group: r.group_id.clone(),
                reason: "its members use Kafka's classic group protocol (JoinGroup); a group \
                         has members of one protocol at a time"
                    .to_string(),
            });
        }
        let max_size = inner.config.limits.group_max_size;
        let replaces_static = !r.instance_id.is_empty()
            && work
                .record
                .members
                .values()
                .any(|m| m.instance_id == r.instance_id);
        if r.member_epoch == crate::group::JOIN
            && !replaces_static
            && work.record.members.len() >= max_size
        {
            return Err(crate::limits::full(
                format!(
                    "group '{}' has {} members, its limit",
                    r.group_id,
                    work.record.members.len()
                ),
                "group_max_size",
            ));
        }
        let heartbeat = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            instance_id: r.instance_id,
            topics: r.topics,
            topic_regex: r.topic_regex,
            assignor: r.assignor,
            session_timeout: millis(r.session_timeout_ms),
            rebalance_timeout: millis(r.rebalance_timeout_ms),
            owned: topic_partition_pairs(&r.owned).collect(),
        };
        let view = work.heartbeat(heartbeat, &topics, Instant::now())?;
        let interval = match &view {
            Some(v) => {
                let session =
                    Duration::from_millis(work.record.members[&v.member_id].session_timeout_ms);
                (session / 3).min(MAX_HEARTBEAT_INTERVAL)
            }
            None => MAX_HEARTBEAT_INTERVAL,
        };
        inner.save_group(&slot, &mut groups, work).await?;
        Ok(match view {
            Some(view) => pb::HeartbeatResponse {
                member_id: view.member_id,
                member_epoch: view.member_epoch,
                heartbeat_interval_ms: interval.as_millis() as i32,
                assignment: topic_partition_lists(&view.assignment),
            },
            None => pb::HeartbeatResponse {
                member_epoch: crate::group::LEAVE,
                ..Default::default()
            },
        })
    }

    /// Checks a heartbeat's sizes before anything is loaded or kept for it.
    fn check_heartbeat(&self, r: &pb::HeartbeatRequest) -> Result<()> {
        let limits = &self.inner.config.limits;
        crate::limits::check_member_id(&r.member_id)?;
        if !r.instance_id.is_empty() {
            crate::topic::validate_key_part("group.instance.id", &r.instance_id)?;
        }
        let subscription = r.topics.iter().map(String::len).sum::<usize>() + r.topic_regex.len();
        if subscription > limits.max_subscription_bytes {
            return Err(crate::limits::over(
                format!(
                    "the subscription (topic names and regex) takes {subscription} bytes, over \
                     the limit of {}",
                    limits.max_subscription_bytes
                ),
                "max_subscription_bytes",
            ));
        }
        let owned: usize = r.owned.iter().map(|o| o.partitions.len()).sum();
        if owned as u64 > limits.max_partitions {
            return Err(crate::limits::over(
                format!(
                    "the heartbeat reports {owned} owned partitions, more than the cluster has"
                ),
                "max_partitions",
            ));
        }
        Ok(())
    }

    /// Checks and decodes offsets to commit.
    async fn offsets_to_commit(
        &self,
        offsets: &[pb::PartitionOffset],
    ) -> Result<Vec<(String, u32, CommittedOffset)>> {
        let limits = &self.inner.config.limits;
        if offsets.len() as u64 > limits.max_partitions {
            return Err(crate::limits::over(
                format!(
                    "the commit names {} partitions, more than the cluster has",
                    offsets.len()
                ),
                "max_partitions",
            ));
        }
        let now = self.inner.clock.now_ms();
        let mut decoded = Vec::with_capacity(offsets.len());
        for o in offsets {
            if o.metadata.len() > limits.offset_metadata_max_bytes {
                return Err(crate::limits::over(
                    format!(
                        "the metadata of the offset for {}/{} is {} bytes, over the limit of {}",
                        crate::limits::shown(&o.topic),
                        o.partition,
                        o.metadata.len(),
                        limits.offset_metadata_max_bytes
                    ),
                    "offset_metadata_max_bytes",
                ));
            }
            let handle = self.topic(&o.topic).await?;
            let partition = Self::check_partition(&handle, o.partition)?;
            if o.offset < 0 {
                return Err(Error::InvalidArgument(format!(
                    "offset {} for {}/{} is negative: commit the next offset to read",
                    o.offset, o.topic, o.partition
                )));
            }
            decoded.push((
                o.topic.clone(),
                partition,
                CommittedOffset {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                    committed_at_ms: now,
                },
            ));
        }
        Ok(decoded)
    }

    /// Commits offsets (see the `Groups.CommitOffsets` RPC).
    #[tracing::instrument(name = "group.commit", skip_all, fields(group = %r.group_id, partitions = r.offsets.len()))]
    pub async fn commit_offsets(&self, r: pb::CommitOffsetsRequest) -> Result<()> {
        self.member_commit(r, "").await
    }

    /// Commits offsets of a member that may be static (Kafka's OffsetCommit v7+ names its
    /// `group.instance.id`: a replaced instance is fenced).
    pub async fn member_commit(
        &self,
        r: pb::CommitOffsetsRequest,
        instance_id: &str,
    ) -> Result<()> {
        validate_group_id(&r.group_id)?;
        crate::limits::check_member_id(&r.member_id)?;
        let offsets = self.offsets_to_commit(&r.offsets).await?;
        let inner = &self.inner;
        let slot = inner.slot_for(&r.group_id).await?;
        let mut groups = slot.groups.lock().await;
        let standalone = r.member_id.is_empty();
        let group = inner
            .loaded_group(&groups, &r.group_id, standalone)
            .await
            .map_err(|e| match e {
                Error::GroupNotFound(_) => Error::UnknownMember {
                    group: r.group_id.clone(),
                    member: r.member_id.clone(),
                },
                other => other,
            })?;
        if standalone {
            if !group.is_empty() {
                return Err(Error::GroupNotEmpty {
                    group: r.group_id.clone(),
                    members: members_list(&group),
                });
            }
            // A group known only by its offsets is listed all the same.
            inner.save_group(&slot, &mut groups, group).await?;
        } else if group.is_classic_member(&r.member_id) || group.classic_state().is_some() {
            let generation = i32::try_from(r.member_epoch).unwrap_or(i32::MAX);
            group.check_classic_commit(&r.member_id, instance_id, generation)?;
        } else {
            let partitions: Vec<TopicPartition> =
                offsets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
            group.check_commit(&r.member_id, r.member_epoch, &partitions)?;
        }
        inner.store_offsets(&slot, &r.group_id, &offsets).await
    }

    /// A group's committed offsets, from the metastore.
    pub async fn fetch_offsets(
        &self,
        r: pb::FetchOffsetsRequest,
    ) -> Result<pb::FetchOffsetsResponse> {
        validate_group_id(&r.group_id)?;
        let max = self.inner.config.limits.max_topics as usize;
        if r.topics.len() > max {
            return Err(crate::limits::over(
                format!(
                    "the request names {} topics, more than {max}",
                    r.topics.len()
                ),
                "max_topics",
            ));
        }
        for topic in &r.topics {
            crate::topic::validate_name(topic)?;
        }
        let topics = if r.topics.is_empty() {
            self.list_topics()
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect()
        } else {
            r.topics
        };
        let mut offsets = Vec::new();
        for topic in topics {
            for (partition, committed) in self
                .inner
                .metastore
                .committed_offsets(&r.group_id, &topic)
                .await?
            {
                offsets.push(pb::PartitionOffset {
                    topic: topic.clone(),
                    partition: partition as i32,
                    offset: committed.offset,
                    metadata: committed.metadata,
                });
            }
        }
        Ok(pb::FetchOffsetsResponse { offsets })
    }

    fn group_summary(&self, record: &GroupRecord) -> pb::GroupSummary {
        let slot = coordinator_slot(&record.group_id);
        pb::GroupSummary {
            group_id: record.group_id.clone(),
            state: Group::state(record).to_string(),
            members: (record.members.len() + record.classic.as_ref().map_or(0, |c| c.members.len()))
                as i32,
            coordinator_agent_id: self
                .inner
                .cluster
                .assignment()
                .coordinator_of(slot)
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// Every stored group.
    pub async fn list_groups(&self) -> Result<pb::ListGroupsResponse> {
        let groups = self.inner.metastore.groups().await?;
        Ok(pb::ListGroupsResponse {
            groups: groups.iter().map(|g| self.group_summary(g)).collect(),
        })
    }

    /// A group's members, assignment and lag, from the metastore.
    pub async fn describe_group(&self, group_id: &str) -> Result<pb::DescribeGroupResponse> {
        validate_group_id(group_id)?;
        let record = self
            .inner
            .metastore
            .group(group_id)
            .await?
            .ok_or_else(|| Error::GroupNotFound(group_id.to_string()))?;
        let classic_members = record
            .classic
            .as_ref()
            .map(|c| c.members.values())
            .into_iter()
            .flatten();
        let owners: BTreeMap<TopicPartition, &str> = record
            .members
            .values()
            .flat_map(|m| {
                m.assigned
                    .iter()
                    .chain(&m.revoking)
                    .map(move |tp| (tp.clone(), m.member_id.as_str()))
            })
            .chain(classic_members.clone().flat_map(|m| {
                m.assigned
                    .iter()
                    .map(move |tp| (tp.clone(), m.member_id.as_str()))
            }))
            .collect();
        let classic_topics: BTreeSet<&str> = classic_members
            .clone()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .collect();
        let mut partitions = Vec::new();
        for topic in self.list_topics().await? {
            let committed: BTreeMap<u32, CommittedOffset> = self
                .inner
                .metastore
                .committed_offsets(group_id, &topic.name)
                .await?
                .into_iter()
                .collect();
            let subscribed = record.topic_partitions.contains_key(&topic.name)
                || classic_topics.contains(topic.name.as_str());
            if committed.is_empty() && !subscribed {
                continue;
            }
            for p in 0..topic.partitions {
                let state = self.inner.metastore.partition_state(&topic.name, p).await?;
                let offset = committed.get(&p);
                let from = offset.map_or(state.log_start_offset, |c| c.offset);
                partitions.push(pb::PartitionLag {
                    topic: topic.name.clone(),
                    partition: p as i32,
                    committed_offset: offset.map_or(-1, |c| c.offset),
                    metadata: offset.map(|c| c.metadata.clone()).unwrap_or_default(),
                    log_end_offset: state.high_watermark,
                    lag: (state.high_watermark - from).max(0),
                    last_stable_offset: state.last_stable_offset,
                    lag_committed: (state.last_stable_offset - from).max(0),
                    member_id: owners
                        .get(&(topic.name.clone(), p))
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(pb::DescribeGroupResponse {
            group: Some(self.group_summary(&record)),
            assignor: match record.classic.as_ref().filter(|c| !c.members.is_empty()) {
                Some(classic) => classic.protocol_name.clone(),
                None => record.assignor.clone(),
            },
            group_epoch: match record.classic.as_ref().filter(|c| !c.members.is_empty()) {
                Some(classic) => classic.generation as i64,
                None => record.epoch as i64,
            },
            members: record
                .members
                .values()
                .map(|m| pb::MemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    member_epoch: m.epoch as i64,
                    topics: m.topics.clone(),
                    topic_regex: m.topic_regex.clone(),
                    assignment: topic_partition_lists(&m.assigned),
                    revoking: topic_partition_lists(&m.revoking),
                })
                .chain(classic_members.map(|m| pb::MemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    member_epoch: record.classic.as_ref().map_or(0, |c| c.generation) as i64,
                    topics: m.topics.clone(),
                    topic_regex: String::new(),
                    assignment: topic_partition_lists(&m.assigned),
                    revoking: Vec::new(),
                }))
                .collect(),
            partitions,
        })
    }

    /// The first offset of a partition whose record timestamp is at or after
    /// `timestamp_ms`; the high watermark if there is none.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<i64> {
        let key = (topic.to_string(), partition);
        match self
            .inner
            .offset_at(&key, crate::reader::OffsetSpec::Timestamp(timestamp_ms))
            .await?
        {
            Some((offset, _)) => Ok(offset),
            None => Ok(self
                .inner
                .metastore
                .partition_state(topic, partition)
                .await?
                .high_watermark),
        }
    }

    /// Moves a group's committed offsets of a topic; only while the group has no members.
    #[tracing::instrument(name = "group.reset_offsets", skip_all, fields(group = %r.group_id, topic = %r.topic))]
    pub async fn reset_offsets(
        &self,
        r: pb::ResetOffsetsRequest,
    ) -> Result<pb::ResetOffsetsResponse> {
        use pb::reset_offsets_request::To;
        validate_group_id(&r.group_id)?;
        let handle = self.topic(&r.topic).await?;
        let to = r.to.ok_or_else(|| {
            Error::InvalidArgument(
                "say where to reset to: earliest, latest, an offset or a timestamp".to_string(),
            )
        })?;
        let inner = &self.inner;
        let slot = inner.slot_for(&r.group_id).await?;
        let mut groups = slot.groups.lock().await;
        let group = inner.loaded_group(&groups, &r.group_id, true).await?;
        if !group.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: r.group_id.clone(),
                members: members_list(&group),
            });
        }
        let now = inner.clock.now_ms();
        let mut offsets = Vec::new();
        for p in 0..handle.meta.partitions {
            let state = inner.metastore.partition_state(&r.topic, p).await?;
            let offset = match to {
                To::Earliest(_) => state.log_start_offset,
                To::Latest(_) => state.high_watermark,
                To::Offset(o) => o.clamp(state.log_start_offset, state.high_watermark),
                To::TimestampMs(t) => self.offset_for_timestamp(&r.topic, p, t).await?,
            };
            offsets.push((
                r.topic.clone(),
                p,
                CommittedOffset {
                    offset,
                    metadata: String::new(),
                    committed_at_ms: now,
                },
            ));
        }
        inner.save_group(&slot, &mut groups, group).await?;
        inner.store_offsets(&slot, &r.group_id, &offsets).await?;
        tracing::info!(group = %r.group_id, topic = %r.topic, "reset committed offsets");
        Ok(pb::ResetOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(topic, p, c)| pb::PartitionOffset {
                    topic,
                    partition: p as i32,
                    offset: c.offset,
                    metadata: c.metadata,
                })
                .collect(),
        })
    }

    /// Deletes a group and its offsets; only while it has no members.
    #[tracing::instrument(name = "group.delete", skip(self))]
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        validate_group_id(group_id)?;
        let inner = &self.inner;
        let slot = inner.slot_for(group_id).await?;
        let mut groups = slot.groups.lock().await;
        let group = inner.loaded_group(&groups, group_id, false).await?;
        if !group.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: group_id.to_string(),
                members: members_list(&group),
            });
        }
        let deleted = inner.metastore.delete_group(&slot.lease, group_id).await;
        groups.remove(group_id);
        if !deleted? {
            return Err(inner.lose_slot(&slot, group_id).await);
        }
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }
}

/// Longest a JoinGroup or SyncGroup waits beyond the group's rebalance timeout (the
/// rebalance completes by then; this only bounds a wait whose group vanished).
const CLASSIC_WAIT_SLACK: Duration = Duration::from_secs(5);

impl Agent {
    /// Checks the sizes of a JoinGroup before anything is kept for it.
    fn check_classic_join(&self, join: &ClassicJoin) -> Result<()> {
        let limits = &self.inner.config.limits;
        validate_group_id(&join.group_id)?;
        crate::limits::check_member_id(&join.member_id)?;
        if !join.instance_id.is_empty() {
            crate::topic::validate_key_part("group.instance.id", &join.instance_id)?;
        }
        let subscription: usize = join
            .protocols
            .iter()
            .map(|p| p.name.len() + p.metadata.len())
            .sum::<usize>()
            + join.topics.iter().map(String::len).sum::<usize>()
            + join.protocol_type.len()
            + join.client_id.len();
        if subscription > limits.max_subscription_bytes {
            return Err(crate::limits::over(
                format!(
                    "the JoinGroup's protocols and subscription take {subscription} bytes, over \
                     the limit of {}",
                    limits.max_subscription_bytes
                ),
                "max_subscription_bytes",
            ));
        }
        Ok(())
    }

    /// Waits until `answer` has one for the group (it is asked again at every stored
    /// change of the group, and at least every [`SWEEP_INTERVAL`]), for at most `wait`.
    async fn classic_wait<T>(
        &self,
        group_id: &str,
        member_id: &str,
        wait: Duration,
        answer: impl Fn(&Group) -> Option<Result<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + wait;
        loop {
            let slot = self.inner.slot_for(group_id).await?;
            let mut changes = {
                let groups = slot.groups.lock().await;
                let Some(group) = groups.get(group_id) else {
                    // Emptied, or dropped after a write of unknown outcome: the client
                    // finds the coordinator again and retries, keeping its member id.
                    return Err(Error::Unavailable(format!(
                        "group '{group_id}' is being reloaded; retry (member '{member_id}')"
                    )));
                };
                if let Some(answer) = answer(group) {
                    return answer;
                }
                group.classic.subscribe()
            };
            if Instant::now() >= deadline {
                return Err(Error::RebalanceInProgress(group_id.to_string()));
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
        }
    }

    /// A JoinGroup of Kafka's classic group protocol: answers when the rebalance it
    /// takes part in completed (see [`crate::classic`]).
    #[tracing::instrument(name = "group.classic_join", skip_all, fields(group = %join.group_id, member = %join.member_id))]
    pub async fn classic_join(&self, join: ClassicJoin) -> Result<ClassicJoined> {
        self.check_classic_join(&join)?;
        let inner = &self.inner;
        let (member_id, after_generation, wait) = {
            let slot = inner.slot_for(&join.group_id).await?;
            let mut groups = slot.groups.lock().await;
            let mut work = inner.loaded_group(&groups, &join.group_id, true).await?;
            let step =
                work.classic_join(&join, inner.config.limits.group_max_size, Instant::now())?;
            let wait = work
                .record
                .classic
                .as_ref()
                .and_then(|c| c.members.values().map(|m| m.rebalance_timeout_ms).max())
                .map_or(
                    crate::group::DEFAULT_REBALANCE_TIMEOUT,
                    Duration::from_millis,
                );
            match step {
                JoinStep::MemberIdRequired(id) => return Ok(ClassicJoined::MemberIdRequired(id)),
                JoinStep::Current(member_id) => {
                    let joined = work.joined_generation(&member_id);
                    inner.save_group(&slot, &mut groups, work).await?;
                    return Ok(ClassicJoined::Joined(joined));
                }
                JoinStep::Wait {
                    member_id,
                    after_generation,
                } => {
                    inner.save_group(&slot, &mut groups, work).await?;
                    (member_id, after_generation, wait)
                }
            }
        };
        self.classic_wait(
            &join.group_id,
            &member_id,
            wait + CLASSIC_WAIT_SLACK,
            |group| group.classic_join_result(&member_id, after_generation),
        )
        .await
        .map(ClassicJoined::Joined)
    }

    /// A SyncGroup: the leader hands in the generation's assignment; every member gets
    /// its part once the leader did.
    #[tracing::instrument(name = "group.classic_sync", skip_all, fields(group = %sync.group_id, member = %sync.member_id, generation = sync.generation))]
    pub async fn classic_sync(&self, sync: ClassicSync) -> Result<ClassicSynced> {
        validate_group_id(&sync.group_id)?;
        crate::limits::check_member_id(&sync.member_id)?;
        let inner = &self.inner;
        let wait = {
            let slot = inner.slot_for(&sync.group_id).await?;
            let mut groups = slot.groups.lock().await;
            let mut work = match inner.loaded_group(&groups, &sync.group_id, false).await {
                Err(Error::GroupNotFound(_)) => {
                    return Err(Error::UnknownMember {
                        group: sync.group_id.clone(),
                        member: sync.member_id.clone(),
                    });
                }
                other => other?,
            };
            let answer = work.classic_sync(&sync, Instant::now())?;
            let wait = work
                .record
                .classic
                .as_ref()
                .and_then(|c| c.members.get(&sync.member_id))
                .map_or(crate::group::DEFAULT_REBALANCE_TIMEOUT, |m| {
                    Duration::from_millis(m.rebalance_timeout_ms.max(m.session_timeout_ms))
                });
            inner.save_group(&slot, &mut groups, work).await?;
            if let Some(answer) = answer {
                return Ok(answer);
            }
            wait
        };
        self.classic_wait(&sync.group_id, &sync.member_id, wait, |group| {
            group.classic_sync_result(&sync.member_id, sync.generation)
        })
        .await
    }

    /// A Heartbeat of a classic member.
    #[tracing::instrument(name = "group.classic_heartbeat", skip(self), level = "debug")]
    pub async fn classic_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: &str,
        generation: i32,
    ) -> Result<()> {
        validate_group_id(group_id)?;
        crate::limits::check_member_id(member_id)?;
        let inner = &self.inner;
        let slot = inner.slot_for(group_id).await?;
        let mut groups = slot.groups.lock().await;
        let mut work = match inner.loaded_group(&groups, group_id, false).await {
            Err(Error::GroupNotFound(_)) => {
                return Err(Error::UnknownMember {
                    group: group_id.to_string(),
                    member: member_id.to_string(),
                });
            }
            other => other?,
        };
        let result = work.classic_heartbeat(member_id, instance_id, generation, Instant::now());
        if matches!(result, Ok(()) | Err(Error::RebalanceInProgress(_))) {
            inner.save_group(&slot, &mut groups, work).await?;
        }
        result
    }

    /// A LeaveGroup of classic members `(member id, instance id)`: one result each.
    #[tracing::instrument(name = "group.classic_leave", skip(self, members), fields(members = members.len()))]
    pub async fn classic_leave(
        &self,
        group_id: &str,
        members: &[(String, String)],
    ) -> Result<Vec<Result<()>>> {
        validate_group_id(group_id)?;
        for (member_id, _) in members {
            crate::limits::check_member_id(member_id)?;
        }
        let inner = &self.inner;
        let slot = inner.slot_for(group_id).await?;
        let mut groups = slot.groups.lock().await;
        let mut work = match inner.loaded_group(&groups, group_id, false).await {
            Err(Error::GroupNotFound(_)) => {
                return Ok(members
                    .iter()
                    .map(|(member_id, _)| {
                        Err(Error::UnknownMember {
                            group: group_id.to_string(),
                            member: member_id.clone(),
                        })
                    })
                    .collect());
            }
            other => other?,
        };
        let results = work.classic_leave(members, Instant::now());
        inner.save_group(&slot, &mut groups, work).await?;
        Ok(results)
    }

    /// Checks that a group member is current (Kafka's TxnOffsetCommit v3+, KIP-447: a
    /// zombie of an earlier generation cannot commit offsets in a transaction): nothing
    /// to check without a member id. Only the group's coordinator can tell:
    /// [`Error::NotCoordinator`] elsewhere (the client finds it again).
    pub async fn check_group_member(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: &str,
        generation: i32,
    ) -> Result<()> {
        validate_group_id(group_id)?;
        crate::limits::check_member_id(member_id)?;
        if member_id.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let slot = inner.slot_for(group_id).await?;
        let groups = slot.groups.lock().await;
        let group = match inner.loaded_group(&groups, group_id, false).await {
            Err(Error::GroupNotFound(_)) => {
                return Err(Error::UnknownMember {
                    group: group_id.to_string(),
                    member: member_id.to_string(),
                });
            }
            other => other?,
        };
        if group.is_classic_member(member_id) || group.classic_state().is_some() {
            group.check_classic_txn_commit(member_id, instance_id, generation)
        } else {
            group
                .check_epoch(member_id, i64::from(generation))
                .map(|_| ())
        }
    }

    /// A group's stored record (Kafka's DescribeGroups and ListGroups read it).
    pub async fn group_record(&self, group_id: &str) -> Result<Option<GroupRecord>> {
        validate_group_id(group_id)?;
        Ok(self.inner.metastore.group(group_id).await?)
    }

    /// Every stored group's record.
    pub async fn group_records(&self) -> Result<Vec<GroupRecord>> {
        Ok(self.inner.metastore.groups().await?)
    }

    /// Deletes committed offsets of a group (Kafka's OffsetDelete), but those of topics
    /// its members subscribe to: returns the partitions left for that reason.
    #[tracing::instrument(name = "group.delete_offsets", skip(self, partitions), fields(partitions = partitions.len()))]
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>> {
        validate_group_id(group_id)?;
        let max = self.inner.config.limits.max_partitions;
        if partitions.len() as u64 > max {
            return Err(crate::limits::over(
                format!(
                    "the request names {} partitions, more than the cluster has",
                    partitions.len()
                ),
                "max_partitions",
            ));
        }
        let inner = &self.inner;
        let slot = inner.slot_for(group_id).await?;
        let groups = slot.groups.lock().await;
        let group = inner.loaded_group(&groups, group_id, false).await?;
        let subscribed: BTreeSet<&str> = group
            .record
            .members
            .values()
            .flat_map(|m| m.topics.iter())
            .chain(
                group
                    .record
                    .classic
                    .iter()
                    .flat_map(|c| c.members.values().flat_map(|m| m.topics.iter())),
            )
            .map(String::as_str)
            .chain(group.record.topic_partitions.keys().map(String::as_str))
            .collect();
        let (kept, deleted): (Vec<TopicPartition>, Vec<TopicPartition>) = partitions
            .iter()
            .cloned()
            .partition(|(t, _)| subscribed.contains(t.as_str()));
        if inner
            .metastore
            .delete_offsets(&slot.lease, group_id, &deleted)
            .await?
        {
            Ok(kept)
        } else {
            Err(inner.lose_slot(&slot, group_id).await)
        }
    }
}
