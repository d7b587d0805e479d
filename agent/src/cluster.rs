//! The agent as a cluster member: its registration, the controller role, and following
//! the controller's assignment.
//!
//! Two tasks run beside the write and read paths:
//! - **membership** keeps the agent's registration (an etcd lease). When the lease is
//!   lost — the process was paused, or cut off from etcd, for a whole TTL — the agent
//!   stops writing at once: it gives up every partition and fails their pending produce
//!   requests with FAILED_PRECONDITION, then registers anew;
//! - **control** runs every [`TICK`]: every agent campaigns for the controller role (a
//!   leased key; one holder at a time); the controller computes the assignment
//!   ([`crate::controller::assign`]) from the live agents and the topics and stores it,
//!   guarded by its role; every agent then reads the assignment, gives up the partitions
//!   assigned elsewhere and takes the ones assigned to it (an epoch-bumping transaction
//!   each, [`strata_metastore::Metastore::acquire_partition`]).
//!
//! Safety never rests on these tasks being timely: a partition's commits compare its
//! owner epoch, so an agent that still believes it owns a partition after another took it
//! can write segments but never commit them, and never acknowledges their records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strata_metastore::{AgentRecord, Assignment, Liveness};
use tokio::sync::{Notify, watch};

use crate::agent::{Inner, PartitionKey};
use crate::controller::{assign, assign_coordinators};
use crate::{Error, Result};

/// How often the control loop runs: the controller's reaction time to agents and topics
/// coming and going, and every agent's to a new assignment.
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// Longest a control step waits for the metastore before trying again next tick.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an agent checks that some of the partitions it owns are still its own...
const VERIFY_INTERVAL: Duration = Duration::from_secs(1);
/// ...and how many at a time (one etcd request): an agent of many partitions goes through
/// them in turn, so the check costs one request a second whatever it owns.
const VERIFY_BATCH: usize = 120;
/// Assigned partitions taken in one call (the metastore groups them into as few
/// transactions as it can); requests for them wait meanwhile.
const TAKE_AT_ONCE: usize = 512;

/// What this agent knows of the cluster.
#[derive(Debug)]
pub(crate) struct ClusterView {
    assignment: RwLock<Arc<Assignment>>,
    agents: RwLock<Arc<Vec<AgentRecord>>>,
    /// Whether the agent's registration is live. While it is not, the agent writes nothing.
    registered: AtomicBool,
    /// Whether this agent holds the controller role.
    controller: AtomicBool,
    /// Runs the control loop now (a topic was created or deleted).
    wake: Notify,
    /// When this agent last checked its ownerships against the metastore, and where in
    /// its (sorted) partitions the next check starts.
    verified_at: std::sync::Mutex<(Option<tokio::time::Instant>, usize)>,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self {
            assignment: RwLock::default(),
            agents: RwLock::default(),
            registered: AtomicBool::new(true),
            controller: AtomicBool::new(false),
            wake: Notify::new(),
            verified_at: std::sync::Mutex::default(),
        }
    }
}

impl ClusterView {
    /// The last assignment read.
    pub(crate) fn assignment(&self) -> Arc<Assignment> {
        self.assignment.read().expect("view lock").clone()
    }

    /// The last agent list read.
    pub(crate) fn agents(&self) -> Arc<Vec<AgentRecord>> {
        self.agents.read().expect("view lock").clone()
    }

    /// Whether this agent's registration is live.
    pub(crate) fn registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// Whether this agent is the controller.
    pub(crate) fn is_controller(&self) -> bool {
        self.controller.load(Ordering::SeqCst)
    }

    /// Asks the control loop to run now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The address of the agent a partition is assigned to, if it is another live agent.
    pub(crate) fn owner_address(&self, key: &PartitionKey, me: &str) -> Option<String> {
        let assignment = self.assignment();
        let owner = assignment.agent_of(&key.0, key.1)?;
        if owner == me {
            return None;
        }
        self.agents()
            .iter()
            .find(|a| a.agent_id == owner)
            .map(|a| a.address.clone())
    }
}

impl Inner {
    /// This agent's registration record.
    pub(crate) fn agent_record(&self) -> AgentRecord {
        AgentRecord {
            agent_id: self.config.agent_id.clone(),
            address: self.config.advertised_address.clone(),
            zone: self.config.zone.clone(),
            kafka_address: self.config.kafka_advertised_address.clone(),
            node_id: self.node_id(),
        }
    }

    /// The controller holder string of this incarnation: `agent_id#agent_epoch`, so that
    /// a restarted agent with the same id never mistakes its predecessor's role for its own.
    fn controller_holder(&self) -> String {
        format!("{}#{}", self.config.agent_id, self.agent_epoch)
    }

    /// Keeps the registration alive; on its loss gives up every partition and registers
    /// anew. Releases the registration when `stop` turns true.
    pub(crate) async fn run_membership(
        self: Arc<Self>,
        mut registration: Box<dyn Liveness>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let stopping = tokio::select! {
                () = registration.lost() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                if let Err(e) = registration.release().await {
                    tracing::warn!(error = %e, "could not deregister; the lease will expire");
                }
                return;
            }
            self.cluster.registered.store(false, Ordering::SeqCst);
            tracing::warn!(
                "registration lost (paused, or cut off from the metastore, for a whole lease \
                 TTL): gave up every partition; registering again"
            );
            self.disown_all("this agent lost its registration lease; its partitions move");
            self.drop_slots().await;
            registration = loop {
                let attempt = tokio::time::timeout(
                    STEP_TIMEOUT,
                    self.metastore
                        .register_agent(&self.agent_record(), self.config.lease_ttl),
                )
                .await;
                match attempt {
                    Ok(Ok(registration)) => break registration,
                    Ok(Err(e)) => tracing::debug!(error = %e, "registration failed; retrying"),
                    Err(_) => tracing::debug!("registration timed out; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            };
            tracing::info!("registered again");
            self.cluster.registered.store(true, Ordering::SeqCst);
            self.cluster.wake();
        }
    }

    /// Runs the control loop until `stop` turns true, then resigns the controller role.
    pub(crate) async fn run_control_loop(
        self: Arc<Self>,
        mut role: Option<Box<dyn Liveness>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failing = false;
        loop {
            let result = self.control_step(&mut role).await;
            match (&result, failing) {
                (Err(e), false) => tracing::warn!(error = %e, "control step failed; retrying"),
                (Ok(()), true) => tracing::info!("control step succeeded again"),
                _ => {}
            }
            failing = result.is_err();
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = self.cluster.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.cluster.controller.store(false, Ordering::SeqCst);
        if let Some(role) = role
            && let Err(e) = role.release().await
        {
            tracing::warn!(error = %e, "could not resign the controller role; it will expire");
        }
    }

    /// One round: keep or win the controller role (and act on it), then follow the
    /// assignment.
    pub(crate) async fn control_step(&self, role: &mut Option<Box<dyn Liveness>>) -> Result<()> {
        if role.as_ref().is_some_and(|r| r.is_lost()) {
            tracing::warn!("controller role lost");
            *role = None;
            self.cluster.controller.store(false, Ordering::SeqCst);
        }
        if role.is_none() && self.cluster.registered() {
            let holder = self.controller_holder();
            let won = with_timeout(
                "controller campaign",
                self.metastore
                    .campaign_controller(&holder, self.config.lease_ttl),
            )
            .await?;
            if let Some(won) = won {
                tracing::info!(holder, "became the controller");
                *role = Some(won);
                self.cluster.controller.store(true, Ordering::SeqCst);
            }
        }
        let (assignment, agents) = if role.is_some() {
            with_timeout("rebalance", self.rebalance()).await?
        } else {
            with_timeout("read assignment", async {
                tokio::try_join!(self.metastore.assignment(), self.metastore.list_agents())
            })
            .await?
        };
        with_timeout(
            "reconcile",
            self.reconcile(assignment.unwrap_or_default(), agents),
        )
        .await
    }

    /// The controller's duty: store the assignment the live agents and topics call for.
    /// Returns the assignment in force afterwards and the live agents.
    async fn rebalance(
        &self,
    ) -> std::result::Result<(Option<Assignment>, Vec<AgentRecord>), strata_metastore::Error> {
        let (agents, topics, current) = tokio::try_join!(
            self.metastore.list_agents(),
            self.metastore.list_topics(),
            self.metastore.assignment(),
        )?;
        let current = current.unwrap_or_default();
        let live: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
        let placement = assign(&current, &topics, &live);
        let coordinators = assign_coordinators(&current, &live);
        if placement == current.topics && coordinators == current.coordinators {
            return Ok((Some(current), agents));
        }
        let moved: usize = placement
            .iter()
            .map(|(topic, agents)| {
                let old = current.topics.get(topic);
                agents
                    .iter()
                    .enumerate()
                    .filter(|(p, a)| old.and_then(|o| o.get(*p)) != Some(*a))
                    .count()
            })
            .sum();
        let holder = self.controller_holder();
        let next = Assignment {
            generation: current.generation + 1,
            controller: holder.clone(),
            topics: placement,
            coordinators,
        };
        if self.metastore.store_assignment(&holder, &next).await? {
            tracing::info!(
                generation = next.generation,
                agents = live.len(),
                moved,
                "stored a new assignment"
            );
            Ok((Some(next), agents))
        } else {
            // The role was lost meanwhile: follow whatever the new controller stored.
            Ok((self.metastore.assignment().await?, agents))
        }
    }

    /// Every [`VERIFY_INTERVAL`], reads the stored owner of the next [`VERIFY_BATCH`] of
    /// the partitions this agent owns and gives up those another agent took meanwhile (an
    /// agent whose assignment view was behind took one for a record it got). Such an agent learns it was fenced at its
    /// next commit; without writes it would go on serving reads from the high watermark it
    /// knew. Given up, a partition assigned here is taken again under a new epoch, with
    /// the stored state.
    async fn verify_ownership(&self) -> Result<()> {
        let due = |verified: &(Option<tokio::time::Instant>, usize)| {
            verified.0.is_none_or(|at| at.elapsed() >= VERIFY_INTERVAL)
        };
        if !due(&self.cluster.verified_at.lock().expect("view lock")) {
            return Ok(());
        }
        let mut held = self.owned_with_owners();
        if held.is_empty() {
            return Ok(());
        }
        held.sort_by(|a, b| a.0.cmp(&b.0));
        let start = {
            let mut verified = self.cluster.verified_at.lock().expect("view lock");
            if !due(&verified) {
                return Ok(());
            }
            let start = verified.1 % held.len();
            *verified = (Some(tokio::time::Instant::now()), start + VERIFY_BATCH);
            start
        };
        let count = VERIFY_BATCH.min(held.len());
        let held: Vec<_> = held.into_iter().cycle().skip(start).take(count).collect();
        let keys: Vec<PartitionKey> = held.iter().map(|(key, _)| key.clone()).collect();
        let stored = self.metastore.partition_owners(&keys).await?;
        for ((key, mine), stored) in held.into_iter().zip(stored) {
            if stored.as_ref() != Some(&mine) {
                let by = stored.map_or_else(
                    || "nobody (the topic is gone)".to_string(),
                    |o| format!("{} under epoch {}", o.agent_id, o.epoch),
                );
                tracing::info!(topic = %key.0, partition = key.1, %by, "partition taken by another agent meanwhile; giving it up");
                self.disown(&[key], &format!("it is held by {by}"));
            }
        }
        Ok(())
    }

    /// Follows `assignment`: gives up partitions assigned to other agents and takes those
    /// assigned to this one.
    async fn reconcile(&self, assignment: Assignment, agents: Vec<AgentRecord>) -> Result<()> {
        let assignment = Arc::new(assignment);
        *self.cluster.assignment.write().expect("view lock") = assignment.clone();
        *self.cluster.agents.write().expect("view lock") = Arc::new(agents);
        if !self.cluster.registered() {
            return Ok(());
        }
        let me = self.config.agent_id.as_str();
        if let Err(e) = self.verify_ownership().await {
            tracing::warn!(error = %e, "cannot check this agent's ownerships; next tick");
        }
        for key in self.owned_partitions() {
            if let Some(other) = assignment.agent_of(&key.0, key.1)
                && other != me
            {
                tracing::info!(topic = %key.0, partition = key.1, to = other, "partition reassigned; giving it up");
                self.disown(
                    &[key],
                    &format!("the controller moved it to agent '{other}'"),
                );
            }
        }
        // The partitions to take, by topic, in order.
        let mut wanted: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (topic, p) in assignment.partitions_of(me) {
            if !self.owns(&(topic.to_string(), p)) {
                wanted.entry(topic.to_string()).or_default().push(p);
            }
        }
        self.reconcile_slots().await;
        for (topic, mut partitions) in wanted {
            partitions.sort_unstable();
            let handle = match self.topic(&topic).await {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "could not take assigned partitions");
                    continue;
                }
            };
            for chunk in partitions.chunks(TAKE_AT_ONCE) {
                let taken = self
                    .take_partitions(&topic, &handle.meta.topic_id, chunk)
                    .await;
                match taken {
                    Ok(outcomes) => {
                        for (partition, e) in outcomes
                            .into_iter()
                            .filter_map(|(p, outcome)| outcome.err().map(|e| (p, e)))
                        {
                            tracing::warn!(%topic, partition, error = %e, "could not take an assigned partition");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%topic, partitions = chunk.len(), error = %e, "could not take assigned partitions");
                    }
                }
            }
        }
        Ok(())
    }
}

async fn with_timeout<T>(
    what: &str,
    step: impl Future<Output = std::result::Result<T, impl Into<Error>>>,
) -> Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Error::Unavailable(format!(
            "{what}: the metastore did not answer within {STEP_TIMEOUT:?}"
        ))),
    }
}

/// The agent id in a controller holder string (see `Inner::controller_holder`).
pub(crate) fn controller_agent_id(holder: &str) -> &str {
    holder.split('#').next().unwrap_or_default()
}
