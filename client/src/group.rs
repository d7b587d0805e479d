//! Group membership for the consumer: the background heartbeat, the coordinator's
//! address, and offset commits.
//!
//! The heartbeat task reports what the consumer owns and learns what it may own
//! ([`Membership::granted`]); the consumer's `poll` moves its partitions toward that (see
//! [`crate::Consumer::subscribe`]). What the heartbeat reports as owned is the union of
//! what `poll` owns and what was granted, so a partition that `poll` may still pick up is
//! never reported given up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Transport;
use strata_proto::v1 as pb;
use strata_proto::v1::groups_client::GroupsClient;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::router::{Router, is_retriable};
use crate::{Error, Result};

/// A topic and partition.
pub type TopicPartition = (String, u32);

/// Where a partition without a committed offset starts (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The high watermark: only records written from now on.
    Latest,
}

/// Consumer group settings (Kafka's names in brackets).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group (`group.id`).
    pub group_id: String,
    /// A static member's id (`group.instance.id`): restarting with it keeps its partitions.
    pub instance_id: Option<String>,
    /// `uniform` (default, sticky) or `range`.
    pub assignor: Option<String>,
    /// The member is removed when no heartbeat arrives for this long
    /// (`session.timeout.ms`, default 45 s). The consumer also gives up its partitions
    /// itself when it could not heartbeat for this long.
    pub session_timeout: Duration,
    /// Longest time to give up a revoked partition (`max.poll.interval.ms`, default 5 min):
    /// call `poll` at least this often.
    pub rebalance_timeout: Duration,
    /// Commit what `poll` returned every `auto_commit_interval`, and on revocation and
    /// close (`enable.auto.commit`, default true).
    pub auto_commit: bool,
    /// `auto.commit.interval.ms`, default 5 s.
    pub auto_commit_interval: Duration,
    /// `auto.offset.reset`, default latest.
    pub offset_reset: OffsetReset,
    /// How long a synchronous commit retries while the coordinator moves (default 30 s).
    pub commit_timeout: Duration,
}

impl GroupConfig {
    /// The defaults for `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            instance_id: None,
            assignor: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            offset_reset: OffsetReset::Latest,
            commit_timeout: Duration::from_secs(30),
        }
    }
}

/// A change of the partitions the consumer owns, as `poll` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceEvent {
    /// What happened.
    pub kind: RebalanceKind,
    /// To which partitions.
    pub partitions: Vec<TopicPartition>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Kinds of [`RebalanceEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceKind {
    /// The consumer owns these now and reads them from their committed offsets.
    Assigned,
    /// The coordinator revoked these: they are no longer read; their offsets may still be
    /// committed until the next `poll`, which gives them up (with auto-commit on, `poll`
    /// already committed what it returned of them).
    Revoked,
    /// Given up: the coordinator may hand them to another member now.
    Released,
    /// Lost without a chance to commit: the member was fenced or timed out.
    Lost,
}

/// The membership as the heartbeat task and `poll` share it.
#[derive(Debug, Default)]
pub(crate) struct MemberState {
    pub member_id: String,
    pub epoch: i64,
    /// What the coordinator last said the member may own.
    pub granted: BTreeSet<TopicPartition>,
    /// What `poll` owns (including revoked partitions until the next poll).
    pub owned: BTreeSet<TopicPartition>,
    /// Bumped whenever the membership is lost: `poll` drops everything it owns.
    pub generation: u64,
    /// A heartbeat failed for good (bad settings): `poll` returns it.
    pub fatal: Option<Error>,
}

/// The group connection of one consumer.
#[derive(Debug)]
pub(crate) struct Membership {
    pub config: GroupConfig,
    topics: Vec<String>,
    topic_regex: String,
    router: Arc<Router>,
    coordinator: Mutex<Option<Transport>>,
    pub state: Mutex<MemberState>,
    /// Wakes the heartbeat task (ownership changed).
    pub wake: Notify,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn group_error(error: &Error) -> Option<&str> {
    match error {
        Error::Status(status) if status.code() == tonic::Code::FailedPrecondition => status
            .metadata()
            .get("strata-group-error")
            .and_then(|v| v.to_str().ok()),
        _ => None,
    }
}

impl Membership {
    /// Joins the group and starts heartbeating in the background.
    pub(crate) fn start(
        config: GroupConfig,
        topics: Vec<String>,
        topic_regex: String,
        router: Arc<Router>,
    ) -> Arc<Self> {
        let (stop, stopping) = watch::channel(false);
        let membership = Arc::new(Self {
            config,
            topics,
            topic_regex,
            router,
            coordinator: Mutex::new(None),
            state: Mutex::new(MemberState::default()),
            wake: Notify::new(),
            stop,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(membership.clone().run(stopping));
        *membership.task.lock().expect("membership lock") = Some(task);
        membership
    }

    /// A client of the group's coordinator, found through any agent.
    async fn coordinator(&self) -> Result<GroupsClient<Transport>> {
        if let Some(channel) = self.coordinator.lock().expect("membership lock").clone() {
            return Ok(GroupsClient::new(channel));
        }
        let mut last_error = Error::Closed;
        for channel in self.router.candidates() {
            let request = pb::FindCoordinatorRequest {
                group_id: self.config.group_id.clone(),
            };
            let found = tokio::time::timeout(
                Duration::from_secs(5),
                GroupsClient::new(channel).find_coordinator(request),
            )
            .await;
            match found {
                Ok(Ok(response)) => {
                    let channel = self.router.channel_to(&response.into_inner().address);
                    *self.coordinator.lock().expect("membership lock") = Some(channel.clone());
                    return Ok(GroupsClient::new(channel));
                }
                Ok(Err(status)) => last_error = Error::Status(status),
                Err(_) => {
                    last_error = Error::Status(tonic::Status::deadline_exceeded(
                        "finding the group coordinator timed out",
                    ))
                }
            }
        }
        Err(last_error)
    }

    /// Forgets the coordinator after an error that says it moved or is gone.
    fn coordinator_failed(&self, error: &Error) {
        if group_error(error) == Some("not-coordinator") || is_retriable(error) {
            *self.coordinator.lock().expect("membership lock") = None;
            if group_error(error).is_none() {
                // An agent may be gone: learn the live ones before finding it again.
                let router = self.router.clone();
                tokio::spawn(async move { router.refresh().await });
            }
        }
    }

    async fn heartbeat_once(
        &self,
        member_epoch_override: Option<i64>,
    ) -> Result<pb::HeartbeatResponse> {
        let request = {
            let state = self.state.lock().expect("membership lock");
            let owned: BTreeSet<TopicPartition> =
                state.owned.union(&state.granted).cloned().collect();
            pb::HeartbeatRequest {
                group_id: self.config.group_id.clone(),
                member_id: state.member_id.clone(),
                member_epoch: member_epoch_override.unwrap_or(state.epoch),
                instance_id: self.config.instance_id.clone().unwrap_or_default(),
                topics: self.topics.clone(),
                topic_regex: self.topic_regex.clone(),
                assignor: self.config.assignor.clone().unwrap_or_default(),
                session_timeout_ms: self.config.session_timeout.as_millis() as i32,
                rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as i32,
                owned: strata_proto::topic_partition_lists(&owned),
            }
        };
        let mut client = self.coordinator().await?;
        let call = tokio::time::timeout(Duration::from_secs(5), client.heartbeat(request)).await;
        let result = match call {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Error::Status(status)),
            Err(_) => Err(Error::Status(tonic::Status::unavailable(
                "the heartbeat timed out",
            ))),
        };
        if let Err(e) = &result {
            self.coordinator_failed(e);
        }
        result
    }

    /// Drops the membership: `poll` gives up everything without committing, and the next
    /// heartbeat joins again.
    fn lose(&self, why: &str) {
        let mut state = self.state.lock().expect("membership lock");
        tracing::warn!(group = %self.config.group_id, member = %state.member_id, "{why}; joining again");
        state.member_id.clear();
        state.epoch = 0;
        state.granted.clear();
        state.generation += 1;
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last_ok = Instant::now();
        let mut interval = Duration::from_millis(500);
        loop {
            let wait = match self.heartbeat_once(None).await {
                Ok(response) => {
                    last_ok = Instant::now();
                    let mut state = self.state.lock().expect("membership lock");
                    state.member_id = response.member_id;
                    state.epoch = response.member_epoch;
                    state.granted =
                        strata_proto::topic_partition_pairs(&response.assignment).collect();
                    if response.heartbeat_interval_ms > 0 {
                        interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
                    }
                    interval
                }
                Err(e) => match group_error(&e) {
                    Some("unknown-member" | "fenced-member") => {
                        self.lose(&format!("the coordinator refused the member: {e}"));
                        Duration::ZERO
                    }
                    _ if is_retriable(&e) => {
                        if last_ok.elapsed() > self.config.session_timeout {
                            self.lose("no heartbeat got through for a whole session timeout");
                            last_ok = Instant::now();
                        }
                        tracing::debug!(error = %e, "heartbeat failed; retrying");
                        Duration::from_millis(200)
                    }
                    _ => {
                        tracing::warn!(error = %e, "heartbeat refused");
                        self.state.lock().expect("membership lock").fatal = Some(e);
                        return;
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            }
        }
        // Leave: a static member only for now (it keeps its partitions until its session
        // times out or it comes back).
        let leave = if self.config.instance_id.is_some() {
            -2
        } else {
            -1
        };
        let joined = !self
            .state
            .lock()
            .expect("membership lock")
            .member_id
            .is_empty();
        if joined && let Err(e) = self.heartbeat_once(Some(leave)).await {
            tracing::debug!(error = %e, "could not leave the group; the session will time out");
        }
    }

    /// Commits `offsets` as this member, retrying while the coordinator moves, for up to
    /// the configured commit timeout.
    pub(crate) async fn commit(&self, offsets: Vec<pb::PartitionOffset>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.commit_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let (member_id, member_epoch) = {
                let state = self.state.lock().expect("membership lock");
                (state.member_id.clone(), state.epoch)
            };
            if member_id.is_empty() {
                return Err(Error::Status(tonic::Status::failed_precondition(format!(
                    "cannot commit: the consumer is not a member of group '{}' right now",
                    self.config.group_id
                ))));
            }
            let request = pb::CommitOffsetsRequest {
                group_id: self.config.group_id.clone(),
                member_id,
                member_epoch,
                offsets: offsets.clone(),
            };
            let result = match self.coordinator().await {
                Ok(mut client) => client
                    .commit_offsets(request)
                    .await
                    .map(|_| ())
                    .map_err(Error::Status),
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            self.coordinator_failed(&error);
            let moving = group_error(&error) == Some("not-coordinator")
                || (is_retriable(&error) && group_error(&error).is_none());
            if !moving || Instant::now() + backoff > deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The group's committed offsets for `topics`.
    pub(crate) async fn committed(&self, topics: Vec<String>) -> Result<Vec<pb::PartitionOffset>> {
        let mut last_error = Error::Closed;
        for channel in self.router.candidates() {
            let request = pb::FetchOffsetsRequest {
                group_id: self.config.group_id.clone(),
                topics: topics.clone(),
            };
            match GroupsClient::new(channel).fetch_offsets(request).await {
                Ok(response) => return Ok(response.into_inner().offsets),
                Err(status) => last_error = Error::Status(status),
            }
        }
        Err(last_error)
    }

    /// Asks the heartbeat task to leave the group and stop, without waiting.
    pub(crate) fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops heartbeating and leaves the group.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("membership lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
