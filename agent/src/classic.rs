//! One consumer group under Kafka's classic group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), as its coordinator runs it: a state machine over the stored
//! [`ClassicGroupRecord`] plus in-memory deadlines and the set of members that joined
//! the coming generation, with no I/O (the coordinator, [`crate::coordinator`], stores the
//! record after every change and before any member hears of it).
//!
//! The assignment is computed by one member, the generation's leader, with the assignor
//! the members agreed on; the coordinator keeps it opaque (it decodes the partitions of a
//! `consumer` assignment only to describe the group, in the Kafka crate).
//!
//! States, as Kafka names them:
//! - `Empty`: no members;
//! - `PreparingRebalance`: members are (re)joining; it ends when every member has joined,
//!   or when the longest rebalance timeout passed (members that did not join are removed);
//!   a group that was empty also waits [`INITIAL_REBALANCE_DELAY`] for more members;
//! - `CompletingRebalance`: the new generation is told to the members; waiting for the
//!   leader's assignment (SyncGroup);
//! - `Stable`: every member may fetch its assignment.
//!
//! Invariants:
//! - the generation grows by one each time a rebalance completes, and is stored before
//!   any member hears of it; heartbeats, syncs and commits of another generation are
//!   refused (ILLEGAL_GENERATION), so a member that missed a rebalance cannot commit;
//! - a group has members of one protocol at a time: a classic join is refused while the
//!   group has members of the consumer protocol (KIP-848 or the gRPC SDK), and the other
//!   way round;
//! - members waiting in JoinGroup or SyncGroup do not time out (as in Kafka); every
//!   rebalance ends within the longest rebalance timeout.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use strata_metastore::{ClassicGroupRecord, ClassicMemberRecord, ClassicProtocol, TopicPartition};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::group::{DEFAULT_REBALANCE_TIMEOUT, DEFAULT_SESSION_TIMEOUT, Group, timeout};
use crate::{Error, Result};

/// How long a rebalance of a group that was empty waits for more members (Kafka's
/// `group.initial.rebalance.delay.ms`, shorter): consumers started together then share
/// one rebalance. Each member that joins meanwhile extends it, up to the rebalance
/// timeout.
pub(crate) const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(1000);

/// Bounds a classic member's rebalance timeout is taken within.
const MIN_REBALANCE_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_REBALANCE_TIMEOUT: Duration = Duration::from_secs(3600);

pub(crate) const EMPTY: &str = "Empty";
pub(crate) const PREPARING: &str = "PreparingRebalance";
pub(crate) const COMPLETING: &str = "CompletingRebalance";
pub(crate) const STABLE: &str = "Stable";

/// A JoinGroup, decoded.
#[derive(Debug, Clone, Default)]
pub struct ClassicJoin {
    /// The group.
    pub group_id: String,
    /// Empty on a first join.
    pub member_id: String,
    /// `group.instance.id` of a static member; empty for a dynamic one.
    pub instance_id: String,
    /// The client's id and address.
    pub client_id: String,
    pub client_host: String,
    /// `consumer` for consumers, `connect` for Connect workers, ...
    pub protocol_type: String,
    /// The assignors it supports, in its order of preference, with their metadata.
    pub protocols: Vec<ClassicProtocol>,
    /// Zero: the default.
    pub session_timeout_ms: i32,
    /// Zero or negative: the default.
    pub rebalance_timeout_ms: i32,
    /// A first join without a member id gets one back and must join again with it
    /// (JoinGroup v4 and later: MEMBER_ID_REQUIRED).
    pub require_member_id: bool,
    /// The topics of its subscription, when the protocol type is `consumer`.
    pub topics: Vec<String>,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicJoined {
    /// The member must join again with this member id (Kafka's MEMBER_ID_REQUIRED).
    MemberIdRequired(String),
    /// The generation the member joined.
    Joined(JoinedGeneration),
}

/// A completed join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedGeneration {
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    /// For the leader only: every member's id, instance id and metadata for the chosen
    /// protocol, to compute the assignment from.
    pub members: Vec<(String, String, Vec<u8>)>,
}

/// A SyncGroup, decoded.
#[derive(Debug, Clone, Default)]
pub struct ClassicSync {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: String,
    pub generation: i32,
    /// Checked against the group's if given (SyncGroup v5 and later).
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: per member, the bytes and (for `consumer`) the decoded
    /// partitions.
    pub assignments: Vec<(String, Vec<u8>, BTreeSet<TopicPartition>)>,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicSynced {
    pub protocol_type: String,
    pub protocol_name: String,
    /// The member's assignment.
    pub assignment: Vec<u8>,
}

/// The in-memory part of a classic group.
#[derive(Debug, Clone)]
pub(crate) struct ClassicRuntime {
    /// Members that sent a JoinGroup for the coming generation.
    joined: BTreeSet<String>,
    /// When the rebalance under way completes at the latest.
    rebalance_deadline: Option<Instant>,
    /// When the first rebalance of a group that was empty may complete at the earliest.
    join_not_before: Option<Instant>,
    /// When the leader must have handed in the generation's assignment: past it, the
    /// leader is removed and the others rebalance (a group never stays waiting for it).
    sync_deadline: Option<Instant>,
    /// When each member's session ends unless it heartbeats.
    session_deadlines: HashMap<String, Instant>,
    /// Told of every stored change, so that waiting joins and syncs look again.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for ClassicRuntime {
    fn default() -> Self {
        Self {
            joined: BTreeSet::new(),
            rebalance_deadline: None,
            join_not_before: None,
            sync_deadline: None,
            session_deadlines: HashMap::new(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

fn new_member_id(client_id: &str) -> String {
    // Kafka's form (client id, then a unique part), the client id cut short.
    let prefix: String = client_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    let prefix = if prefix.is_empty() {
        "member".to_string()
    } else {
        prefix
    };
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

impl ClassicRuntime {
    /// The runtime of a group taken over from its stored record at `now`: every member
    /// gets a whole session, and a rebalance that was under way starts again.
    pub(crate) fn taken_over(record: &mut Option<ClassicGroupRecord>, now: Instant) -> Self {
        let mut runtime = Self::default();
        let Some(classic) = record.as_mut() else {
            return runtime;
        };
        for member in classic.members.values() {
            runtime.session_deadlines.insert(
                member.member_id.clone(),
                now + Duration::from_millis(member.session_timeout_ms),
            );
        }
        if classic.state == PREPARING || classic.state == COMPLETING {
            classic.state = PREPARING.to_string();
            runtime.rebalance_deadline = Some(now + longest_rebalance(classic));
        }
        runtime
    }

    /// Waits for the next stored change (or returns at once if one came since `seen`).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells waiting joins and syncs that the group changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

fn longest_rebalance(classic: &ClassicGroupRecord) -> Duration {
    classic
        .members
        .values()
        .map(|m| Duration::from_millis(m.rebalance_timeout_ms))
        .max()
        .unwrap_or(DEFAULT_REBALANCE_TIMEOUT)
}

/// Protocol names every member supports.
fn common_protocols<'a>(
    members: impl Iterator<Item = &'a ClassicMemberRecord>,
) -> Option<BTreeSet<String>> {
    let mut common: Option<BTreeSet<String>> = None;
    for member in members {
        let names: BTreeSet<String> = member.protocols.iter().map(|p| p.name.clone()).collect();
        common = Some(match common {
            None => names,
            Some(c) => c.intersection(&names).cloned().collect(),
        });
    }
    common
}

impl Group {
    fn classic_error_unknown(&self, member_id: &str) -> Error {
        Error::UnknownMember {
            group: self.record.group_id.clone(),
            member: member_id.to_string(),
        }
    }

    /// The classic state, `None` for a group without classic members.
    pub(crate) fn classic_state(&self) -> Option<&str> {
        self.record
            .classic
            .as_ref()
            .filter(|c| !c.members.is_empty())
            .map(|c| c.state.as_str())
    }

    /// The classic member `member_id`, or why not. A static member is found by its
    /// instance id first, as Kafka does: an instance id that now belongs to another member
    /// id is a fenced zombie (FENCED_INSTANCE_ID, which its client treats as fatal), not
    /// an unknown member (which would make it join again and take the place back).
    fn classic_member(&self, member_id: &str, instance_id: &str) -> Result<&ClassicMemberRecord> {
        let classic = self.record.classic.as_ref();
        if !instance_id.is_empty() {
            let member = classic
                .and_then(|c| c.members.values().find(|m| m.instance_id == instance_id))
                .ok_or_else(|| self.classic_error_unknown(member_id))?;
            if member.member_id != member_id {
                return Err(Error::FencedInstance {
                    group: self.record.group_id.clone(),
                    instance: instance_id.to_string(),
                });
            }
            return Ok(member);
        }
        classic
            .and_then(|c| c.members.get(member_id))
            .ok_or_else(|| self.classic_error_unknown(member_id))
    }

    fn check_generation(&self, member_id: &str, generation: i32) -> Result<()> {
        let current = self.record.classic.as_ref().map_or(0, |c| c.generation);
        if generation != current {
            return Err(Error::IllegalGeneration {
                group: self.record.group_id.clone(),
                member: member_id.to_string(),
                generation,
                current,
            });
        }
        Ok(())
    }

    /// Handles a JoinGroup at `now`. The caller stores the group, then waits with
    /// [`Group::classic_join_result`] until the rebalance completed.
    pub(crate) fn classic_join(
        &mut self,
        join: &ClassicJoin,
        max_size: usize,
        now: Instant,
    ) -> Result<JoinStep> {
        let group_id = self.record.group_id.clone();
        let inconsistent = |reason: String| Error::InconsistentProtocol {
            group: group_id.clone(),
            reason,
        };
        if !self.record.members.is_empty() {
            return Err(inconsistent(
                "its members use the consumer group protocol (KIP-848 or Strata's SDK); a \
                 group has members of one protocol at a time"
                    .to_string(),
            ));
        }
        if join.protocol_type.is_empty() || join.protocols.is_empty() {
            return Err(inconsistent(
                "the JoinGroup names no protocol type or no protocol".to_string(),
            ));
        }
        let session = timeout(
            (join.session_timeout_ms > 0)
                .then(|| Duration::from_millis(join.session_timeout_ms as u64)),
            DEFAULT_SESSION_TIMEOUT,
            "session timeout",
        )?;
        // `max.poll.interval.ms`, which Kafka does not bound (Streams once defaulted it to
        // i32::MAX): taken within the bounds rather than refused.
        let rebalance = timeout(
            Some(if join.rebalance_timeout_ms > 0 {
                Duration::from_millis(join.rebalance_timeout_ms as u64)
                    .clamp(MIN_REBALANCE_TIMEOUT, MAX_REBALANCE_TIMEOUT)
            } else {
                // Before JoinGroup v1 the session timeout was both.
                session
            }),
            DEFAULT_REBALANCE_TIMEOUT,
            "rebalance timeout",
        )?;
        let classic = self
            .record
            .classic
            .get_or_insert_with(|| ClassicGroupRecord {
                state: EMPTY.to_string(),
                ..Default::default()
            });
        if classic.members.is_empty() {
            classic.protocol_type = join.protocol_type.clone();
        } else if classic.protocol_type != join.protocol_type {
            return Err(inconsistent(format!(
                "its members use protocol type '{}', not '{}'",
                classic.protocol_type, join.protocol_type
            )));
        }
        // Who is joining.
        let by_instance = (!join.instance_id.is_empty())
            .then(|| {
                classic
                    .members
                    .values()
                    .find(|m| m.instance_id == join.instance_id)
                    .map(|m| m.member_id.clone())
            })
            .flatten();
        let member_id = if join.member_id.is_empty() {
            match &by_instance {
                // A static member restarted: its new id replaces the old one, which is
                // fenced from now on.
                Some(old) => {
                    let new = new_member_id(&join.client_id);
                    let mut member = classic.members.remove(old).expect("found above");
                    member.member_id = new.clone();
                    classic.members.insert(new.clone(), member);
                    if classic.leader == *old {
                        classic.leader = new.clone();
                    }
                    let runtime = &mut self.classic;
                    if runtime.joined.remove(old) {
                        runtime.joined.insert(new.clone());
                    }
                    runtime.session_deadlines.remove(old);
                    tracing::info!(group = %group_id, instance = %join.instance_id, old = %old, new = %new, "static member rejoined");
                    new
                }
                None if join.require_member_id && join.instance_id.is_empty() => {
                    return Ok(JoinStep::MemberIdRequired(new_member_id(&join.client_id)));
                }
                None => new_member_id(&join.client_id),
            }
        } else {
            if let Some(owner) = &by_instance
                && *owner != join.member_id
            {
                return Err(Error::FencedInstance {
                    group: group_id,
                    instance: join.instance_id.clone(),
                });
            }
            // An id unknown here is one this coordinator handed out with
            // MEMBER_ID_REQUIRED (or one of a member that timed out): it joins as new.
            join.member_id.clone()
        };
        let classic = self.record.classic.as_mut().expect("created above");
        let known = classic.members.get(&member_id);
        let is_new = known.is_none();
        if is_new && classic.members.len() >= max_size {
            return Err(crate::limits::full(
                format!(
                    "group '{group_id}' has {} members, its limit",
                    classic.members.len()
                ),
                "group_max_size",
            ));
        }
        let protocols_changed = known.is_none_or(|m| m.protocols != join.protocols);
        if !is_new {
            let mut others = classic
                .members
                .values()
                .filter(|m| m.member_id != member_id)
                .peekable();
            if others.peek().is_some() {
                let common = common_protocols(others).unwrap_or_default();
                if !join.protocols.iter().any(|p| common.contains(&p.name)) {
                    return Err(inconsistent(
                        "none of its assignors is supported by every other member".to_string(),
                    ));
                }
            }
        } else if !classic.members.is_empty() {
            let common = common_protocols(classic.members.values()).unwrap_or_default();
            if !join.protocols.iter().any(|p| common.contains(&p.name)) {
                return Err(inconsistent(format!(
                    "none of its assignors ({}) is supported by every member ({})",
                    join.protocols
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    common.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let previous = classic.members.remove(&member_id).unwrap_or_default();
        classic.members.insert(
            member_id.clone(),
            ClassicMemberRecord {
                member_id: member_id.clone(),
                instance_id: join.instance_id.clone(),
                client_id: join.client_id.clone(),
                client_host: join.client_host.clone(),
                session_timeout_ms: session.as_millis() as u64,
                rebalance_timeout_ms: rebalance.as_millis() as u64,
                protocols: join.protocols.clone(),
                topics: join.topics.clone(),
                ..previous
            },
        );
        let state = classic.state.clone();
        let is_leader = classic.leader == member_id;
        let generation = classic.generation;
        self.classic
            .session_deadlines
            .insert(member_id.clone(), now + session);
        if !is_new && !protocols_changed && (state == COMPLETING || (state == STABLE && !is_leader))
        {
            // A member joining again with nothing new (its join answer was lost): it gets
            // the current generation, and its assignment from SyncGroup. (A leader
            // joining a stable group again is given a rebalance, to assign anew.)
            return Ok(JoinStep::Current(member_id));
        }
        self.classic.joined.insert(member_id.clone());
        if state != PREPARING {
            self.prepare_rebalance(now, state == EMPTY);
        } else if let Some(not_before) = &mut self.classic.join_not_before
            && is_new
        {
            // More members of a group that was empty: wait a little more for others.
            let deadline = self.classic.rebalance_deadline.unwrap_or(now);
            *not_before = (now + INITIAL_REBALANCE_DELAY).min(deadline);
        }
        self.try_complete_join(now);
        Ok(JoinStep::Wait {
            member_id,
            after_generation: generation,
        })
    }

    /// Starts a rebalance: every member must join again.
    fn prepare_rebalance(&mut self, now: Instant, initial: bool) {
        let Some(classic) = self.record.classic.as_mut() else {
            return;
        };
        classic.state = PREPARING.to_string();
        self.classic.sync_deadline = None;
        let deadline = now + longest_rebalance(classic);
        self.classic.rebalance_deadline = Some(deadline);
        self.classic.join_not_before =
            initial.then(|| (now + INITIAL_REBALANCE_DELAY).min(deadline));
    }

    /// Completes the rebalance under way if every member joined (and a first rebalance's
    /// delay passed), or its deadline passed; returns whether it did.
    fn try_complete_join(&mut self, now: Instant) -> bool {
        let runtime = &mut self.classic;
        let Some(classic) = self.record.classic.as_mut() else {
            return false;
        };
        if classic.state != PREPARING {
            return false;
        }
        let all_joined = classic.members.keys().all(|m| runtime.joined.contains(m));
        let delay_over = runtime.join_not_before.is_none_or(|t| now >= t);
        let deadline_over = runtime.rebalance_deadline.is_some_and(|d| now >= d);
        if !(deadline_over || (all_joined && delay_over)) {
            return false;
        }
        let late: Vec<String> = classic
            .members
            .keys()
            .filter(|m| !runtime.joined.contains(*m))
            .cloned()
            .collect();
        for member_id in &late {
            tracing::info!(group = %self.record.group_id, member = %member_id, "member did not join the rebalance in time; removed");
            classic.members.remove(member_id);
            runtime.session_deadlines.remove(member_id);
        }
        runtime.joined.clear();
        runtime.rebalance_deadline = None;
        runtime.join_not_before = None;
        classic.generation += 1;
        if classic.members.is_empty() {
            classic.state = EMPTY.to_string();
            classic.protocol_name.clear();
            classic.leader.clear();
            return true;
        }
        // Each member votes for its most preferred protocol of those every member has.
        let common = common_protocols(classic.members.values()).unwrap_or_default();
        let mut votes: Vec<(String, usize)> = Vec::new();
        for member in classic.members.values() {
            if let Some(choice) = member.protocols.iter().find(|p| common.contains(&p.name)) {
                match votes.iter_mut().find(|(name, _)| *name == choice.name) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((choice.name.clone(), 1)),
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max().unwrap_or(0);
        classic.protocol_name = votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(name, _)| name)
            .unwrap_or_default();
        if !classic.members.contains_key(&classic.leader) {
            classic.leader = classic.members.keys().next().cloned().unwrap_or_default();
        }
        classic.state = COMPLETING.to_string();
        runtime.sync_deadline = Some(now + longest_rebalance(classic));
        for member in classic.members.values_mut() {
            member.assignment.clear();
            member.assigned.clear();
            // Its whole session from now to sync and heartbeat.
            runtime.session_deadlines.insert(
                member.member_id.clone(),
                now + Duration::from_millis(member.session_timeout_ms),
            );
        }
        tracing::info!(
            group = %self.record.group_id,
            generation = classic.generation,
            members = classic.members.len(),
            protocol = %classic.protocol_name,
            "rebalance completed"
        );
        true
    }

    /// The answer to a join that waits for the generation after `after_generation`:
    /// `None` while the rebalance is under way.
    pub(crate) fn classic_join_result(
        &self,
        member_id: &str,
        after_generation: i32,
    ) -> Option<Result<JoinedGeneration>> {
        let Some(classic) = self.record.classic.as_ref() else {
            return Some(Err(self.classic_error_unknown(member_id)));
        };
        if classic.generation <= after_generation {
            return None;
        }
        if !classic.members.contains_key(member_id) {
            return Some(Err(self.classic_error_unknown(member_id)));
        }
        Some(Ok(self.joined_generation(member_id)))
    }

    /// The current generation as `member_id` hears of it.
    pub(crate) fn joined_generation(&self, member_id: &str) -> JoinedGeneration {
        let classic = self.record.classic.as_ref().expect("a classic group");
        let members = if classic.leader == member_id {
            classic
                .members
                .values()
                .map(|m| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|p| p.name == classic.protocol_name)
                        .map(|p| p.metadata.clone())
                        .unwrap_or_default();
                    (m.member_id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinedGeneration {
            member_id: member_id.to_string(),
            generation: classic.generation,
            protocol_type: classic.protocol_type.clone(),
            protocol_name: classic.protocol_name.clone(),
            leader: classic.leader.clone(),
            members,
        }
    }

    /// Handles a SyncGroup at `now`: the member's assignment if the generation has one,
    /// `None` if it must wait for the leader's.
    pub(crate) fn classic_sync(
        &mut self,
        sync: &ClassicSync,
        now: Instant,
    ) -> Result<Option<ClassicSynced>> {
        let member = self.classic_member(&sync.member_id, &sync.instance_id)?;
        let wait =
            Duration::from_millis(member.session_timeout_ms.max(member.rebalance_timeout_ms));
        self.check_generation(&sync.member_id, sync.generation)?;
        let classic = self.record.classic.as_mut().expect("has the member");
        let mismatch = |given: &Option<String>, ours: &str| {
            given.as_deref().is_some_and(|g| !g.is_empty() && g != ours)
        };
        if mismatch(&sync.protocol_type, &classic.protocol_type)
            || mismatch(&sync.protocol_name, &classic.protocol_name)
        {
            return Err(Error::InconsistentProtocol {
                group: self.record.group_id.clone(),
                reason: format!(
                    "the generation's protocol is '{}' of type '{}'",
                    classic.protocol_name, classic.protocol_type
                ),
            });
        }
        match classic.state.as_str() {
            PREPARING => Err(Error::RebalanceInProgress(self.record.group_id.clone())),
            COMPLETING => {
                self.classic
                    .session_deadlines
                    .insert(sync.member_id.clone(), now + wait);
                if classic.leader == sync.member_id {
                    for (member_id, bytes, partitions) in &sync.assignments {
                        if let Some(member) = classic.members.get_mut(member_id) {
                            member.assignment = bytes.clone();
                            member.assigned = partitions.clone();
                        }
                    }
                    classic.state = STABLE.to_string();
                    self.classic.sync_deadline = None;
                    // Members waiting for the assignment were kept alive; from now on
                    // their heartbeats keep them.
                    for member in classic.members.values() {
                        self.classic.session_deadlines.insert(
                            member.member_id.clone(),
                            now + Duration::from_millis(member.session_timeout_ms),
                        );
                    }
                    tracing::info!(group = %self.record.group_id, generation = classic.generation, "assignment received from the leader");
                    Ok(self
                        .classic_sync_result(&sync.member_id, sync.generation)
                        .and_then(Result::ok))
                } else {
                    Ok(None)
                }
            }
            _ => Ok(self
                .classic_sync_result(&sync.member_id, sync.generation)
                .and_then(Result::ok)),
        }
    }

    /// The answer to a sync waiting for the leader: `None` while it has not synced.
    pub(crate) fn classic_sync_result(
        &self,
        member_id: &str,
        generation: i32,
    ) -> Option<Result<ClassicSynced>> {
        let Some(classic) = self.record.classic.as_ref() else {
            return Some(Err(self.classic_error_unknown(member_id)));
        };
        let Some(member) = classic.members.get(member_id) else {
            return Some(Err(self.classic_error_unknown(member_id)));
        };
        if classic.generation != generation || classic.state == PREPARING {
            return Some(Err(Error::RebalanceInProgress(
                self.record.group_id.clone(),
            )));
        }
        (classic.state == STABLE).then(|| {
            Ok(ClassicSynced {
                protocol_type: classic.protocol_type.clone(),
                protocol_name: classic.protocol_name.clone(),
                assignment: member.assignment.clone(),
            })
        })
    }

    /// Handles a Heartbeat at `now`. `Err(RebalanceInProgress)` still kept the member
    /// alive: the caller keeps the group's new state either way.
    pub(crate) fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<()> {
        let member = self.classic_member(member_id, instance_id)?;
        let session = Duration::from_millis(member.session_timeout_ms);
        self.check_generation(member_id, generation)?;
        self.classic
            .session_deadlines
            .insert(member_id.to_string(), now + session);
        match self.classic_state() {
            Some(PREPARING) => Err(Error::RebalanceInProgress(self.record.group_id.clone())),
            _ => Ok(()),
        }
    }

    /// Handles a LeaveGroup of `(member id, instance id)` pairs at `now`: one result per
    /// member. A static member may be named by its instance id alone.
    pub(crate) fn classic_leave(
        &mut self,
        leaving: &[(String, String)],
        now: Instant,
    ) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            let id = if member_id.is_empty() && !instance_id.is_empty() {
                self.record.classic.as_ref().and_then(|c| {
                    c.members
                        .values()
                        .find(|m| m.instance_id == *instance_id)
                        .map(|m| m.member_id.clone())
                })
            } else {
                Some(member_id.clone())
            };
            let result = match id {
                None => Err(self.classic_error_unknown(member_id)),
                Some(id) => self.classic_member(&id, instance_id).map(|_| id),
            };
            results.push(result.map(|id| {
                tracing::info!(group = %self.record.group_id, member = %id, "member left");
                self.remove_classic(&id);
                removed = true;
            }));
        }
        if removed {
            self.after_removal(now);
        }
        results
    }

    fn remove_classic(&mut self, member_id: &str) {
        if let Some(classic) = self.record.classic.as_mut() {
            classic.members.remove(member_id);
        }
        self.classic.session_deadlines.remove(member_id);
        self.classic.joined.remove(member_id);
    }

    /// After members were removed: the others must rebalance.
    fn after_removal(&mut self, now: Instant) {
        if self.classic_state() != Some(PREPARING) {
            self.prepare_rebalance(now, false);
        }
        if self
            .record
            .classic
            .as_ref()
            .is_some_and(|c| c.members.is_empty())
        {
            // Nobody left to join: completes now, as an empty generation.
            self.classic.rebalance_deadline = Some(now);
        }
        self.try_complete_join(now);
    }

    /// Removes members whose session ended and completes a rebalance whose time came;
    /// returns whether anything changed.
    pub(crate) fn classic_tick(&mut self, now: Instant) -> bool {
        if self.record.classic.is_none() {
            return false;
        }
        let mut expired: Vec<String> = self
            .classic
            .session_deadlines
            .iter()
            .filter(|(id, deadline)| **deadline <= now && !self.classic.joined.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if self.classic_state() == Some(COMPLETING)
            && self.classic.sync_deadline.is_some_and(|d| d <= now)
            && let Some(leader) = self.record.classic.as_ref().map(|c| c.leader.clone())
        {
            tracing::info!(group = %self.record.group_id, member = %leader, "the leader did not hand in the assignment in time; removed");
            self.classic.sync_deadline = None;
            if !expired.contains(&leader) {
                expired.push(leader);
            }
        }
        for member_id in &expired {
            tracing::info!(group = %self.record.group_id, member = %member_id, "member's session timed out; removed");
            self.remove_classic(member_id);
        }
        if !expired.is_empty() {
            self.after_removal(now);
            return true;
        }
        self.try_complete_join(now)
    }

    /// Checks that a classic member may commit offsets: it is a member of the current
    /// generation, and the group is not waiting for its assignment.
    pub(crate) fn check_classic_commit(
        &self,
        member_id: &str,
        instance_id: &str,
        generation: i32,
    ) -> Result<()> {
        self.classic_member(member_id, instance_id)?;
        self.check_generation(member_id, generation)?;
        if self.classic_state() == Some(COMPLETING) {
            return Err(Error::RebalanceInProgress(self.record.group_id.clone()));
        }
        Ok(())
    }

    /// Checks that a classic member may add offsets to a transaction (TxnOffsetCommit,
    /// KIP-447): a member of the current generation. Unlike a plain commit it is not
    /// refused while the leader's assignment is awaited (Kafka does not either).
    pub(crate) fn check_classic_txn_commit(
        &self,
        member_id: &str,
        instance_id: &str,
        generation: i32,
    ) -> Result<()> {
        self.classic_member(member_id, instance_id)?;
        self.check_generation(member_id, generation)
    }

    /// Whether `member_id` is a classic member.
    pub(crate) fn is_classic_member(&self, member_id: &str) -> bool {
        self.record
            .classic
            .as_ref()
            .is_some_and(|c| c.members.contains_key(member_id))
    }
}

/// What a JoinGroup comes to, before waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinStep {
    /// Join again with this id.
    MemberIdRequired(String),
    /// The current generation, at once (no rebalance).
    Current(String),
    /// Wait for the generation after `after_generation`.
    Wait {
        member_id: String,
        after_generation: i32,
    },
}

#[cfg(test)]
mod tests {
    use strata_metastore::{GroupRecord, MemberRecord};

    use super::*;

    fn group() -> Group {
        Group::new(
            GroupRecord {
                group_id: "g".to_string(),
                ..Default::default()
            },
            Instant::now(),
        )
    }

    fn join(member_id: &str, instance_id: &str, assignors: &[&str]) -> ClassicJoin {
        ClassicJoin {
            group_id: "g".to_string(),
            member_id: member_id.to_string(),
            instance_id: instance_id.to_string(),
            client_id: "test".to_string(),
            protocol_type: "consumer".to_string(),
            protocols: assignors
                .iter()
                .map(|name| ClassicProtocol {
                    name: name.to_string(),
                    metadata: name.as_bytes().to_vec(),
                })
                .collect(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            require_member_id: true,
            ..Default::default()
        }
    }

    /// Joins a new dynamic member the v4+ way (MEMBER_ID_REQUIRED, then again with the id).
    fn new_member(g: &mut Group, now: Instant) -> String {
        let JoinStep::MemberIdRequired(id) =
            g.classic_join(&join("", "", &["range"]), 10, now).unwrap()
        else {
            panic!("a first join needs a member id")
        };
        assert!(matches!(
            g.classic_join(&join(&id, "", &["range", "roundrobin"]), 10, now)
                .unwrap(),
            JoinStep::Wait { .. }
        ));
        id
    }

    fn sync(member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> ClassicSync {
        ClassicSync {
            group_id: "g".to_string(),
            member_id: member_id.to_string(),
            generation,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), a.to_vec(), BTreeSet::new()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn members_join_one_generation_and_get_the_leaders_assignment() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        let b = new_member(&mut g, t0);
        // Both joined, but a group that was empty waits for more members first.
        assert_eq!(g.classic_state(), Some(PREPARING));
        assert!(g.classic_join_result(&a, 0).is_none());
        assert!(g.classic_tick(t0 + INITIAL_REBALANCE_DELAY));
        assert_eq!(g.classic_state(), Some(COMPLETING));
        let joined_a = g.classic_join_result(&a, 0).unwrap().unwrap();
        let joined_b = g.classic_join_result(&b, 0).unwrap().unwrap();
        assert_eq!(joined_a.generation, 1);
        assert_eq!(joined_a.protocol_name, "range");
        assert_eq!(joined_a.leader, joined_b.leader);
        let (leader, follower) = if joined_a.leader == a {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let leader_view = if leader == &a { &joined_a } else { &joined_b };
        assert_eq!(leader_view.members.len(), 2, "the leader sees every member");
        // The follower waits for the leader's assignment.
        assert_eq!(g.classic_sync(&sync(follower, 1, &[]), t0).unwrap(), None);
        let mine = g
            .classic_sync(&sync(leader, 1, &[(leader, b"L"), (follower, b"F")]), t0)
            .unwrap()
            .unwrap();
        assert_eq!(mine.assignment, b"L");
        assert_eq!(g.classic_state(), Some(STABLE));
        let theirs = g.classic_sync_result(follower, 1).unwrap().unwrap();
        assert_eq!(theirs.assignment, b"F");
        assert!(g.classic_heartbeat(follower, "", 1, t0).is_ok());
        assert!(g.check_classic_commit(follower, "", 1).is_ok());
        assert!(matches!(
            g.check_classic_commit(follower, "", 0),
            Err(Error::IllegalGeneration { current: 1, .. })
        ));
        // Once the assignment is out, only heartbeats keep a member: the follower
        // heartbeats, the leader (say, killed) does not, and is gone after its session
        // (not after its much longer rebalance timeout).
        let t1 = t0 + Duration::from_secs(9);
        g.classic_heartbeat(follower, "", 1, t1).unwrap();
        assert!(g.classic_tick(t0 + Duration::from_secs(11)));
        assert!(!g.is_classic_member(leader));
        assert!(g.is_classic_member(follower));
    }

    #[test]
    fn a_member_whose_session_ends_is_removed_and_the_rest_rebalance() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        let b = new_member(&mut g, t0);
        g.classic_tick(t0 + INITIAL_REBALANCE_DELAY);
        let leader = g.record.classic.as_ref().unwrap().leader.clone();
        g.classic_sync(&sync(&leader, 1, &[]), t0).unwrap();
        // `a` heartbeats, `b` does not.
        let t1 = t0 + Duration::from_secs(8);
        g.classic_heartbeat(&a, "", 1, t1).unwrap();
        assert!(g.classic_tick(t0 + Duration::from_secs(12)));
        assert!(!g.is_classic_member(&b));
        assert_eq!(g.classic_state(), Some(PREPARING));
        assert!(matches!(
            g.classic_heartbeat(&a, "", 1, t1),
            Err(Error::RebalanceInProgress(_))
        ));
        assert!(matches!(
            g.classic_join(&join(&a, "", &["range"]), 10, t1).unwrap(),
            JoinStep::Wait {
                after_generation: 1,
                ..
            }
        ));
        let joined = g.classic_join_result(&a, 1).unwrap().unwrap();
        assert_eq!((joined.generation, joined.leader.as_str()), (2, a.as_str()));
        assert!(matches!(
            g.classic_sync(&sync(&b, 2, &[]), t1),
            Err(Error::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_left_out_of_the_generation() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        let b = new_member(&mut g, t0);
        g.classic_tick(t0 + INITIAL_REBALANCE_DELAY);
        // A third member starts a rebalance; `b` keeps heartbeating but never rejoins.
        let c = new_member(&mut g, t0 + Duration::from_secs(2));
        g.classic_join(&join(&a, "", &["range"]), 10, t0 + Duration::from_secs(2))
            .unwrap();
        for s in 3..32 {
            let _ = g.classic_heartbeat(&b, "", 1, t0 + Duration::from_secs(s));
            g.classic_tick(t0 + Duration::from_secs(s));
        }
        assert!(
            g.classic_tick(t0 + Duration::from_secs(33)) || g.classic_state() == Some(COMPLETING)
        );
        let classic = g.record.classic.as_ref().unwrap();
        assert_eq!(classic.generation, 2);
        assert_eq!(
            classic.members.keys().cloned().collect::<BTreeSet<_>>(),
            [a, c].into_iter().collect()
        );
    }

    #[test]
    fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        let JoinStep::Wait { member_id: s1, .. } = g
            .classic_join(&join("", "instance-1", &["range"]), 10, t0)
            .unwrap()
        else {
            panic!("a static member joins at once")
        };
        g.classic_tick(t0 + INITIAL_REBALANCE_DELAY);
        let leader = g.record.classic.as_ref().unwrap().leader.clone();
        g.classic_sync(&sync(&leader, 1, &[(&a, b"A"), (&s1, b"S")]), t0)
            .unwrap();
        let follower_is_static = leader != s1;
        let step = g
            .classic_join(&join("", "instance-1", &["range"]), 10, t0)
            .unwrap();
        let s2 = match &step {
            JoinStep::Current(id) | JoinStep::Wait { member_id: id, .. } => id.clone(),
            other => panic!("{other:?}"),
        };
        assert_ne!(s1, s2);
        if follower_is_static {
            assert_eq!(
                step,
                JoinStep::Current(s2.clone()),
                "no rebalance for a follower"
            );
            assert_eq!(g.classic_state(), Some(STABLE));
            let synced = g.classic_sync(&sync(&s2, 1, &[]), t0).unwrap().unwrap();
            assert_eq!(synced.assignment, b"S", "it keeps its assignment");
        }
        // The replaced instance is a fenced zombie, not an unknown member (which would
        // make it join again and take the place back).
        assert!(matches!(
            g.classic_heartbeat(&s1, "instance-1", 1, t0),
            Err(Error::FencedInstance { .. })
        ));
        assert!(matches!(
            g.check_classic_commit(&s1, "instance-1", 1),
            Err(Error::FencedInstance { .. })
        ));
        assert!(matches!(
            g.classic_join(&join(&s1, "instance-1", &["range"]), 10, t0),
            Err(Error::FencedInstance { .. })
        ));
    }

    #[test]
    fn a_leader_that_never_hands_in_the_assignment_is_removed() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        let b = new_member(&mut g, t0);
        g.classic_tick(t0 + INITIAL_REBALANCE_DELAY);
        let leader = g.record.classic.as_ref().unwrap().leader.clone();
        let follower = if leader == a { b } else { a };
        // Both keep heartbeating; the leader never syncs.
        for s in 2..40 {
            let at = t0 + Duration::from_secs(s);
            let _ = g.classic_heartbeat(&leader, "", 1, at);
            let _ = g.classic_heartbeat(&follower, "", 1, at);
            g.classic_tick(at);
        }
        assert!(!g.is_classic_member(&leader));
        assert_eq!(g.classic_state(), Some(PREPARING));
    }

    #[test]
    fn protocols_must_fit_the_group() {
        let mut g = group();
        let t0 = Instant::now();
        new_member(&mut g, t0);
        let mut other_type = join("", "", &["range"]);
        other_type.protocol_type = "connect".to_string();
        other_type.require_member_id = false;
        assert!(matches!(
            g.classic_join(&other_type, 10, t0),
            Err(Error::InconsistentProtocol { .. })
        ));
        let mut no_common = join("", "", &["sticky"]);
        no_common.require_member_id = false;
        assert!(matches!(
            g.classic_join(&no_common, 10, t0),
            Err(Error::InconsistentProtocol { .. })
        ));
        // A group with consumer-protocol members takes no classic member.
        let mut consumer = group();
        consumer.record.members.insert(
            "m".to_string(),
            MemberRecord {
                member_id: "m".to_string(),
                ..Default::default()
            },
        );
        assert!(matches!(
            consumer.classic_join(&join("", "", &["range"]), 10, t0),
            Err(Error::InconsistentProtocol { .. })
        ));
        // The size limit.
        let mut full = join("", "", &["range"]);
        full.require_member_id = false;
        assert!(matches!(
            g.classic_join(&full, 1, t0),
            Err(Error::Overloaded(_))
        ));
    }

    #[test]
    fn the_last_member_leaving_empties_the_group() {
        let mut g = group();
        let t0 = Instant::now();
        let a = new_member(&mut g, t0);
        g.classic_tick(t0 + INITIAL_REBALANCE_DELAY);
        let results = g.classic_leave(
            &[(a.clone(), String::new()), ("nobody".into(), String::new())],
            t0,
        );
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Error::UnknownMember { .. })));
        assert_eq!(g.classic_state(), None);
        assert!(g.is_empty());
        assert_eq!(g.record.classic.as_ref().unwrap().state, EMPTY);
    }
}
