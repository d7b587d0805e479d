//! One consumer group's membership and assignment, as its coordinator runs it: a state
//! machine over the stored [`GroupRecord`] plus in-memory deadlines, with no I/O (the
//! coordinator, [`crate::coordinator`], persists the record after every change and before
//! it answers).
//!
//! Invariants:
//! - **one owner per partition**: a partition is in at most one member's `assigned ∪
//!   revoking`. A partition moves in two steps: it is revoked from its old member (moved to
//!   `revoking`), and given to the new one only after the old member reported that it no
//!   longer owns it — or was removed (session or rebalance timeout, leave);
//! - a member's epoch grows whenever its assignment changes; heartbeats and commits carry
//!   it, and one older than the previous epoch is fenced;
//! - the group epoch grows whenever members, subscriptions or the subscribed topics'
//!   partition counts change; targets are recomputed for it ([`crate::assignor`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use regex::Regex;
use strata_metastore::{GroupRecord, MemberRecord, TopicPartition};
use tokio::time::Instant;

use crate::assignor::{self, Assignor, MemberInput};
use crate::classic::ClassicRuntime;
use crate::{Error, Result};

/// Session timeout when a member sets none (Kafka's default).
pub(crate) const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// Rebalance timeout when a member sets none (Kafka's default `max.poll.interval.ms`).
pub(crate) const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds of both timeouts.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Member epoch of a join, a leave, and a static member's temporary leave.
pub(crate) const JOIN: i64 = 0;
pub(crate) const LEAVE: i64 = -1;
pub(crate) const STATIC_LEAVE: i64 = -2;

/// A heartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i64,
    pub instance_id: String,
    pub topics: Vec<String>,
    pub topic_regex: String,
    pub assignor: String,
    pub session_timeout: Option<Duration>,
    pub rebalance_timeout: Option<Duration>,
    pub owned: BTreeSet<TopicPartition>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub member_id: String,
    pub member_epoch: i64,
    /// What the member may own now.
    pub assignment: BTreeSet<TopicPartition>,
}

/// A group as its coordinator holds it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub record: GroupRecord,
    /// Whether `record` is in the metastore (false for a group created a moment ago).
    pub stored: bool,
    /// When each member's session ends unless it heartbeats.
    session_deadlines: HashMap<String, Instant>,
    /// When each member with partitions to give up is removed unless it does.
    revoke_deadlines: HashMap<String, Instant>,
    /// The in-memory part of its classic-protocol state.
    pub(crate) classic: ClassicRuntime,
}

pub(crate) fn timeout(given: Option<Duration>, default: Duration, what: &str) -> Result<Duration> {
    let value = given.unwrap_or(default);
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
        return Err(Error::InvalidArgument(format!(
            "{what} of {} ms is out of range: use {} to {} ms",
            value.as_millis(),
            MIN_TIMEOUT.as_millis(),
            MAX_TIMEOUT.as_millis()
        )));
    }
    Ok(value)
}

/// Compiles a subscription regex to match whole topic names.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| Error::InvalidArgument(format!("invalid topic regex '{pattern}': {e}")))
}

fn new_member_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Group {
    /// A group taken over from its stored record (or a new one): every member gets a
    /// whole session (and, if it has partitions to give up, a whole rebalance timeout)
    /// from `now`, since the previous coordinator's clocks are gone.
    pub(crate) fn new(mut record: GroupRecord, now: Instant) -> Self {
        let classic = ClassicRuntime::taken_over(&mut record.classic, now);
        let mut group = Self {
            record,
            stored: true,
            session_deadlines: HashMap::new(),
            revoke_deadlines: HashMap::new(),
            classic,
        };
        for member in group.record.members.values() {
            group.session_deadlines.insert(
                member.member_id.clone(),
                now + Duration::from_millis(member.session_timeout_ms),
            );
            if !member.revoking.is_empty() {
                group.revoke_deadlines.insert(
                    member.member_id.clone(),
                    now + Duration::from_millis(member.rebalance_timeout_ms),
                );
            }
        }
        group
    }

    /// Whether the group has no members.
    pub(crate) fn is_empty(&self) -> bool {
        self.record.members.is_empty() && self.classic_state().is_none()
    }

    /// `empty`, `stable` (every member owns exactly its target) or `reconciling`.
    pub(crate) fn state(record: &GroupRecord) -> &'static str {
        if let Some(classic) = record.classic.as_ref().filter(|c| !c.members.is_empty()) {
            return match classic.state.as_str() {
                crate::classic::STABLE => "stable",
                crate::classic::COMPLETING => "completing_rebalance",
                _ => "preparing_rebalance",
            };
        }
        if record.members.is_empty() {
            "empty"
        } else if record.assignment_epoch == record.epoch
            && record
                .members
                .values()
                .all(|m| m.revoking.is_empty() && m.assigned == m.target)
        {
            "stable"
        } else {
            "reconciling"
        }
    }

    /// Handles a heartbeat at `now`, given every topic's partition count. Returns what
    /// the member may own, or `None` after a leave.
    pub(crate) fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Result<Option<MemberView>> {
        if hb.member_epoch == LEAVE || hb.member_epoch == STATIC_LEAVE {
            self.leave(&hb.member_id, hb.member_epoch == STATIC_LEAVE);
            self.refresh_targets(topics)?;
            return Ok(None);
        }
        let session = timeout(
            hb.session_timeout,
            DEFAULT_SESSION_TIMEOUT,
            "session timeout",
        )?;
        let rebalance = timeout(
            hb.rebalance_timeout,
            DEFAULT_REBALANCE_TIMEOUT,
            "rebalance timeout",
        )?;
        if !hb.topic_regex.is_empty() {
            compile_regex(&hb.topic_regex)?;
        }
        let assignor = Assignor::parse(&hb.assignor)?;
        let member_id = match hb.member_epoch {
            LEAVE | STATIC_LEAVE => {
                self.leave(&hb.member_id, hb.member_epoch == STATIC_LEAVE);
                self.refresh_targets(topics)?;
                return Ok(None);
            }
            JOIN => self.join(&hb, now)?,
            epoch if epoch > 0 => {
                self.check_epoch(&hb.member_id, epoch)?;
                hb.member_id.clone()
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "member epoch {other} is invalid: use 0 to join, -1 to leave, -2 for a \
                     static member's temporary leave, or the epoch last received"
                )));
            }
        };
        if self.record.assignor != assignor.name() {
            self.record.assignor = assignor.name().to_string();
            self.record.epoch += 1;
        }
        let member = self
            .record
            .members
            .get_mut(&member_id)
            .expect("joined or checked above");
        member.session_timeout_ms = session.as_millis() as u64;
        member.rebalance_timeout_ms = rebalance.as_millis() as u64;
        member.left = false;
        let mut topics_wanted = hb.topics.clone();
        topics_wanted.sort();
        topics_wanted.dedup();
        if member.topics != topics_wanted || member.topic_regex != hb.topic_regex {
            member.topics = topics_wanted;
            member.topic_regex = hb.topic_regex.clone();
            self.record.epoch += 1;
        }
        // Revoked partitions the member no longer reports are given up.
        member.revoking.retain(|tp| hb.owned.contains(tp));
        if member.revoking.is_empty() {
            self.revoke_deadlines.remove(&member_id);
        }
        self.session_deadlines
            .insert(member_id.clone(), now + session);
        self.refresh_targets(topics)?;
        self.reconcile(&member_id, now);
        let member = &self.record.members[&member_id];
        Ok(Some(MemberView {
            member_id,
            member_epoch: member.epoch as i64,
            assignment: member.assigned.clone(),
        }))
    }

    /// Adds a member, or replaces the static member of the same instance id (which keeps
    /// its partitions and target: no rebalance). The member id is the one the member
    /// chose (Kafka's KIP-848 clients from ConsumerGroupHeartbeat v1 choose their own),
    /// else a new one; a member joining again under its own id starts afresh.
    fn join(&mut self, hb: &Heartbeat, now: Instant) -> Result<String> {
        let member_id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            if self
                .record
                .members
                .get(&hb.member_id)
                .is_some_and(|m| m.instance_id == hb.instance_id)
            {
                self.remove(&hb.member_id);
            } else if self.record.members.contains_key(&hb.member_id) {
                return Err(Error::InvalidArgument(format!(
                    "member id '{}' is taken by another member of group '{}'",
                    hb.member_id, self.record.group_id
                )));
            }
            hb.member_id.clone()
        };
        let replaced = (!hb.instance_id.is_empty())
            .then(|| {
                self.record
                    .members
                    .values()
                    .find(|m| m.instance_id == hb.instance_id)
                    .map(|m| m.member_id.clone())
            })
            .flatten();
        let member = match replaced {
            Some(old_id) => {
                let old = self.record.members.remove(&old_id).expect("found above");
                self.session_deadlines.remove(&old_id);
                self.revoke_deadlines.remove(&old_id);
                tracing::info!(group = %self.record.group_id, instance = %hb.instance_id, old = %old_id, new = %member_id, "static member rejoined");
                MemberRecord {
                    member_id: member_id.clone(),
                    epoch: old.epoch + 1,
                    previous_epoch: old.epoch + 1,
                    ..old
                }
            }
            None => {
                self.record.epoch += 1;
                MemberRecord {
                    member_id: member_id.clone(),
                    instance_id: hb.instance_id.clone(),
                    epoch: 1,
                    previous_epoch: 1,
                    ..Default::default()
                }
            }
        };
        if !member.revoking.is_empty() {
            self.revoke_deadlines.insert(
                member_id.clone(),
                now + Duration::from_millis(member.rebalance_timeout_ms),
            );
        }
        self.record.members.insert(member_id.clone(), member);
        Ok(member_id)
    }

    fn leave(&mut self, member_id: &str, temporary: bool) {
        let Some(member) = self.record.members.get_mut(member_id) else {
            return;
        };
        if temporary && !member.instance_id.is_empty() {
            // Keeps its partitions until its session ends or its instance comes back.
            member.left = true;
            return;
        }
        self.remove(member_id);
    }

    fn remove(&mut self, member_id: &str) {
        if self.record.members.remove(member_id).is_some() {
            self.session_deadlines.remove(member_id);
            self.revoke_deadlines.remove(member_id);
            self.record.epoch += 1;
        }
    }

    /// Checks that `member_id` is a member and `epoch` is its current or previous epoch.
    pub(crate) fn check_epoch(&self, member_id: &str, epoch: i64) -> Result<&MemberRecord> {
        let member = self
            .record
            .members
            .get(member_id)
            .ok_or_else(|| Error::UnknownMember {
                group: self.record.group_id.clone(),
                member: member_id.to_string(),
            })?;
        let epoch = epoch.max(0) as u64;
        if epoch != member.epoch && epoch != member.previous_epoch {
            return Err(Error::FencedMember {
                group: self.record.group_id.clone(),
                member: member_id.to_string(),
                epoch: epoch as i64,
                current: member.epoch as i64,
            });
        }
        Ok(member)
    }

    /// Checks that a member may commit offsets of `partitions`: it is a member, at its
    /// current or previous epoch, and owns them (or is giving them up).
    pub(crate) fn check_commit(
        &self,
        member_id: &str,
        epoch: i64,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let member = self.check_epoch(member_id, epoch)?;
        let foreign: Vec<String> = partitions
            .iter()
            .filter(|tp| !member.assigned.contains(*tp) && !member.revoking.contains(*tp))
            .map(|(t, p)| format!("{t}/{p}"))
            .collect();
        if !foreign.is_empty() {
            return Err(Error::NotAssigned {
                group: self.record.group_id.clone(),
                member: member_id.to_string(),
                partitions: foreign.join(", "),
            });
        }
        Ok(())
    }

    /// Removes members whose session or rebalance timeout passed; returns their ids.
    pub(crate) fn expire(&mut self, topics: &BTreeMap<String, u32>, now: Instant) -> Vec<String> {
        let expired: BTreeSet<String> = self
            .session_deadlines
            .iter()
            .chain(self.revoke_deadlines.iter())
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in &expired {
            tracing::info!(group = %self.record.group_id, member = %member_id, "member timed out; removed");
            self.remove(member_id);
        }
        if !expired.is_empty() {
            // Best effort: a regex that stopped compiling cannot happen (checked on entry).
            let _ = self.refresh_targets(topics);
        }
        expired.into_iter().collect()
    }

    /// The existing topics a member subscribes to.
    fn subscribed<'a>(
        member: &MemberRecord,
        topics: &'a BTreeMap<String, u32>,
    ) -> Result<BTreeSet<&'a str>> {
        let mut subscribed: BTreeSet<&str> = member
            .topics
            .iter()
            .filter_map(|t| topics.get_key_value(t).map(|(k, _)| k.as_str()))
            .collect();
        if !member.topic_regex.is_empty() {
            let regex = compile_regex(&member.topic_regex)?;
            subscribed.extend(
                topics
                    .keys()
                    .filter(|t| regex.is_match(t))
                    .map(String::as_str),
            );
        }
        Ok(subscribed)
    }

    /// Bumps the group epoch if the subscribed topics' partition counts changed, and
    /// computes new targets if the group epoch moved past them.
    fn refresh_targets(&mut self, topics: &BTreeMap<String, u32>) -> Result<()> {
        let mut subscriptions = BTreeMap::new();
        for member in self.record.members.values() {
            subscriptions.insert(member.member_id.clone(), Self::subscribed(member, topics)?);
        }
        let counts: BTreeMap<String, u32> = subscriptions
            .values()
            .flatten()
            .map(|t| (t.to_string(), topics[*t]))
            .collect();
        if counts != self.record.topic_partitions {
            self.record.topic_partitions = counts;
            self.record.epoch += 1;
        }
        if self.record.assignment_epoch == self.record.epoch {
            return Ok(());
        }
        let assignor = Assignor::parse(&self.record.assignor)?;
        let inputs: Vec<MemberInput<'_>> = self
            .record
            .members
            .values()
            .map(|m| MemberInput {
                member_id: &m.member_id,
                sort_key: if m.instance_id.is_empty() {
                    &m.member_id
                } else {
                    &m.instance_id
                },
                topics: subscriptions[&m.member_id].clone(),
                previous: &m.target,
            })
            .collect();
        let targets = assignor::assign(assignor, &inputs, &self.record.topic_partitions);
        for (member_id, target) in targets {
            self.record
                .members
                .get_mut(&member_id)
                .expect("targets are per member")
                .target = target;
        }
        self.record.assignment_epoch = self.record.epoch;
        Ok(())
    }

    /// Moves one member toward its target: revokes what it should no longer own; once it
    /// has given everything revoked up, gives it the target partitions no other member
    /// owns or is giving up.
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let held_by_others: BTreeSet<TopicPartition> = self
            .record
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(&m.revoking).cloned())
            .collect();
        let member = self
            .record
            .members
            .get_mut(member_id)
            .expect("reconcile a member");
        let revoke: Vec<TopicPartition> = member
            .assigned
            .difference(&member.target)
            .cloned()
            .collect();
        let mut changed = false;
        if !revoke.is_empty() {
            for tp in revoke {
                member.assigned.remove(&tp);
                member.revoking.insert(tp);
            }
            self.revoke_deadlines.insert(
                member_id.to_string(),
                now + Duration::from_millis(member.rebalance_timeout_ms),
            );
            changed = true;
        } else if member.revoking.is_empty() {
            let add: Vec<TopicPartition> = member
                .target
                .difference(&member.assigned)
                .filter(|tp| !held_by_others.contains(*tp))
                .cloned()
                .collect();
            changed = !add.is_empty();
            member.assigned.extend(add);
        }
        if changed {
            member.previous_epoch = member.epoch;
            member.epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("t".to_string(), n)])
    }

    fn join(group: &mut Group, now: Instant) -> MemberView {
        group
            .heartbeat(
                Heartbeat {
                    topics: vec!["t".into()],
                    session_timeout: Some(Duration::from_secs(10)),
                    ..Default::default()
                },
                &topics(6),
                now,
            )
            .unwrap()
            .unwrap()
    }

    fn beat(
        group: &mut Group,
        view: &MemberView,
        owned: &BTreeSet<TopicPartition>,
        now: Instant,
    ) -> MemberView {
        group
            .heartbeat(
                Heartbeat {
                    member_id: view.member_id.clone(),
                    member_epoch: view.member_epoch,
                    topics: vec!["t".into()],
                    session_timeout: Some(Duration::from_secs(10)),
                    owned: owned.clone(),
                    ..Default::default()
                },
                &topics(6),
                now,
            )
            .unwrap()
            .unwrap()
    }

    fn assert_one_owner(group: &Group) {
        let mut seen = BTreeSet::new();
        for member in group.record.members.values() {
            for tp in member.assigned.iter().chain(&member.revoking) {
                assert!(
                    seen.insert(tp.clone()),
                    "{tp:?} held twice: {:?}",
                    group.record
                );
            }
        }
    }

    fn new_group() -> Group {
        Group::new(
            GroupRecord {
                group_id: "g".into(),
                ..Default::default()
            },
            Instant::now(),
        )
    }

    #[test]
    fn a_partition_moves_only_after_its_old_member_gives_it_up() {
        let now = Instant::now();
        let mut group = new_group();
        let a = join(&mut group, now);
        assert_eq!(a.assignment.len(), 6);
        let a_owned = a.assignment.clone();
        let b = join(&mut group, now);
        // b's target is half, but a still owns everything: b gets nothing yet.
        assert!(b.assignment.is_empty());
        assert_one_owner(&group);
        // a's next heartbeat revokes three; it still reports owning all six.
        let a2 = beat(&mut group, &a, &a_owned, now);
        assert_eq!(a2.assignment.len(), 3);
        assert!(a2.member_epoch > a.member_epoch);
        let b2 = beat(&mut group, &b, &BTreeSet::new(), now);
        assert!(b2.assignment.is_empty(), "a has not given them up yet");
        assert_one_owner(&group);
        // a may still commit the revoked ones until it gives them up.
        let revoked: Vec<TopicPartition> = a_owned.difference(&a2.assignment).cloned().collect();
        group
            .check_commit(&a2.member_id, a2.member_epoch, &revoked)
            .unwrap();
        // a reports it gave them up; then b gets them.
        let a3 = beat(&mut group, &a2, &a2.assignment, now);
        assert_eq!(a3.assignment, a2.assignment);
        let b3 = beat(&mut group, &b2, &BTreeSet::new(), now);
        assert_eq!(b3.assignment.len(), 3);
        assert!(b3.assignment.is_disjoint(&a3.assignment));
        assert_one_owner(&group);
        assert_eq!(Group::state(&group.record), "stable");
        // Commits: a may no longer commit what it gave up.
        assert!(matches!(
            group.check_commit(&a3.member_id, a3.member_epoch, &revoked),
            Err(Error::NotAssigned { .. })
        ));
    }

    #[test]
    fn stale_epochs_are_fenced_and_unknown_members_refused() {
        let now = Instant::now();
        let mut group = new_group();
        let a = join(&mut group, now);
        let b = join(&mut group, now);
        let a2 = beat(&mut group, &a, &a.assignment, now);
        let a3 = beat(&mut group, &a2, &a2.assignment, now);
        let _ = beat(&mut group, &b, &BTreeSet::new(), now);
        // Epochs: a joined at 1 (all six, epoch 2), revoked (3); its first epoch is stale.
        assert!(a3.member_epoch > a.member_epoch);
        let stale = a.member_epoch - 1;
        let fenced = group.heartbeat(
            Heartbeat {
                member_id: a.member_id.clone(),
                member_epoch: stale.max(1),
                topics: vec!["t".into()],
                ..Default::default()
            },
            &topics(6),
            now,
        );
        assert!(
            matches!(fenced, Err(Error::FencedMember { .. })),
            "{fenced:?}"
        );
        assert!(matches!(
            group.check_commit("nobody", 1, &[]),
            Err(Error::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_silent_member_expires_and_its_partitions_move() {
        let now = Instant::now();
        let mut group = new_group();
        let a = join(&mut group, now);
        let b = join(&mut group, now);
        let a2 = beat(&mut group, &a, &a.assignment, now);
        let a3 = beat(&mut group, &a2, &a2.assignment, now);
        let b2 = beat(&mut group, &b, &BTreeSet::new(), now);
        assert_eq!(b2.assignment.len(), 3);
        // b goes silent; a keeps heartbeating.
        let later = now + Duration::from_secs(11);
        let a4 = beat(
            &mut group,
            &a3,
            &a3.assignment,
            now + Duration::from_secs(9),
        );
        assert_eq!(group.expire(&topics(6), later), vec![b.member_id.clone()]);
        let a5 = beat(&mut group, &a4, &a4.assignment, later);
        assert_eq!(a5.assignment.len(), 6);
        assert_one_owner(&group);
    }

    #[test]
    fn a_static_member_comes_back_to_its_partitions() {
        let now = Instant::now();
        let mut group = new_group();
        let hb = |instance: &str| Heartbeat {
            instance_id: instance.into(),
            topics: vec!["t".into()],
            session_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        let a = group
            .heartbeat(hb("i-a"), &topics(6), now)
            .unwrap()
            .unwrap();
        let b = group
            .heartbeat(hb("i-b"), &topics(6), now)
            .unwrap()
            .unwrap();
        let a2 = beat(&mut group, &a, &a.assignment, now);
        let a3 = beat(&mut group, &a2, &a2.assignment, now);
        let b2 = beat(&mut group, &b, &BTreeSet::new(), now);
        let epoch = group.record.epoch;
        // b restarts without leaving: the same instance id takes its place and partitions.
        let b_again = group
            .heartbeat(hb("i-b"), &topics(6), now)
            .unwrap()
            .unwrap();
        assert_ne!(b_again.member_id, b2.member_id);
        assert_eq!(b_again.assignment, b2.assignment);
        assert_eq!(group.record.epoch, epoch, "no rebalance");
        assert_eq!(
            beat(&mut group, &a3, &a3.assignment, now).assignment,
            a3.assignment
        );
        // The old incarnation is gone.
        assert!(matches!(
            group.check_commit(&b2.member_id, b2.member_epoch, &[]),
            Err(Error::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_new_coordinator_gives_every_member_a_fresh_session() {
        let now = Instant::now();
        let mut group = new_group();
        let a = join(&mut group, now);
        let taken_over = Group::new(group.record.clone(), now + Duration::from_secs(100));
        let mut taken_over = taken_over;
        assert!(
            taken_over
                .expire(&topics(6), now + Duration::from_secs(105))
                .is_empty()
        );
        let a2 = beat(
            &mut taken_over,
            &a,
            &a.assignment,
            now + Duration::from_secs(105),
        );
        assert_eq!(a2.assignment, a.assignment);
    }
}
