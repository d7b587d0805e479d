//! Where to send a partition's records, and where to read them: the cluster's metadata,
//! cached, one channel and one produce session per agent.
//!
//! The router learns each partition's owner from `Metadata` and opens a channel (and a
//! produce session) to each agent it routes to. On an error that says the metadata may be
//! stale (FAILED_PRECONDITION: not the owner; UNAVAILABLE: the agent is gone or stopping)
//! the producer asks for a [`Router::refresh`], which asks the bootstrap agent first and
//! then every agent it knows, so that one dead agent does not blind it.
//!
//! A refresh asks only for the topics this client uses (those it described to send or read
//! records, while they exist), and refreshes are coalesced: callers that ask while one runs, or within
//! 100 ms of the last, share its answer — during a failover every lane of a producer
//! asks, and the cluster sees one request.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::log_client::LogClient;
use tokio::time::Instant;

use crate::session::Session;
use crate::{Connection, Error, MAX_MESSAGE_BYTES, Result, Transport};

/// Refreshes closer together than this are served by the last one.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The producer's view of the cluster.
#[derive(Debug)]
pub(crate) struct Router {
    /// The agent the producer was pointed at, and how to reach the others.
    connection: Connection,
    bootstrap: Transport,
    bootstrap_session: Arc<Session>,
    state: Mutex<RouterState>,
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct RouterState {
    /// Live agents' addresses, by id.
    agents: HashMap<String, String>,
    /// Live agents' zones, by id (empty: none).
    zones: HashMap<String, String>,
    /// Owner agent id of each partition.
    owners: HashMap<(String, u32), String>,
    /// One channel per agent address.
    channels: HashMap<String, Transport>,
    /// One session per agent address.
    sessions: HashMap<String, Arc<Session>>,
    /// The topics this client uses: what a refresh asks for.
    used: BTreeSet<String>,
    /// Bumped when a topic is first used: a refresh older than that does not cover it.
    used_version: u64,
    /// When the last refresh was answered, and the `used_version` it asked for.
    refreshed_at: Option<(Instant, u64)>,
}

impl RouterState {
    /// Notes that `topic` is used; returns whether it is new.
    fn use_topic(&mut self, topic: &str) -> bool {
        if self.used.contains(topic) {
            return false;
        }
        self.used.insert(topic.to_string());
        self.used_version += 1;
        true
    }
}

fn log_client(channel: Transport) -> LogClient<Transport> {
    LogClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

impl Router {
    pub(crate) fn new(connection: Connection) -> Self {
        let bootstrap = connection.transport();
        Self {
            bootstrap_session: Arc::new(Session::new(log_client(bootstrap.clone()))),
            bootstrap,
            connection,
            state: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The address of the agent that owns `topic`/`partition`, as last known; `None` for
    /// the bootstrap agent (the owner is unknown, or it is the only agent).
    fn owner_address(state: &RouterState, topic: &str, partition: u32) -> Option<String> {
        if state.agents.len() <= 1 {
            return None;
        }
        state
            .owners
            .get(&(topic.to_string(), partition))
            .and_then(|owner| state.agents.get(owner))
            .cloned()
    }

    /// A channel to the agent that owns `topic`/`partition` (reads: any agent serves
    /// them, the owner from its cache), or to the bootstrap agent.
    pub(crate) fn channel_for(&self, topic: &str, partition: u32) -> Transport {
        let mut state = self.state.lock().expect("router lock");
        let Some(address) = Self::owner_address(&state, topic, partition) else {
            return self.bootstrap.clone();
        };
        self.channel(&mut state, &address)
            .unwrap_or_else(|| self.bootstrap.clone())
    }

    /// A channel to read `topic`/`partition` from: an agent of `zone` if the client has
    /// one and the cluster has an agent there (the owner if it is one, else the same
    /// agent of the zone for the partition every time), else the owner's.
    pub(crate) fn read_channel_for(
        &self,
        topic: &str,
        partition: u32,
        zone: Option<&str>,
    ) -> Transport {
        let Some(zone) = zone.filter(|z| !z.is_empty()) else {
            return self.channel_for(topic, partition);
        };
        let mut state = self.state.lock().expect("router lock");
        let owner = state.owners.get(&(topic.to_string(), partition));
        if owner.is_some_and(|o| state.zones.get(o).is_some_and(|z| z == zone)) {
            drop(state);
            return self.channel_for(topic, partition);
        }
        let mut in_zone: Vec<&String> = state
            .zones
            .iter()
            .filter(|(_, z)| *z == zone)
            .map(|(id, _)| id)
            .collect();
        if in_zone.is_empty() {
            drop(state);
            return self.channel_for(topic, partition);
        }
        in_zone.sort();
        let spread = topic.bytes().map(u64::from).sum::<u64>() + u64::from(partition);
        let chosen = in_zone[(spread % in_zone.len() as u64) as usize].clone();
        match state.agents.get(&chosen).cloned() {
            Some(address) => self
                .channel(&mut state, &address)
                .unwrap_or_else(|| self.bootstrap.clone()),
            None => {
                drop(state);
                self.channel_for(topic, partition)
            }
        }
    }

    fn channel(&self, state: &mut RouterState, address: &str) -> Option<Transport> {
        if let Some(channel) = state.channels.get(address) {
            return Some(channel.clone());
        }
        let channel = self.connection.lazy(address)?;
        state.channels.insert(address.to_string(), channel.clone());
        Some(channel)
    }

    /// The session to the agent that owns `topic`/`partition`, as last known, or to the
    /// bootstrap agent.
    pub(crate) fn session_for(&self, topic: &str, partition: u32) -> Arc<Session> {
        let mut state = self.state.lock().expect("router lock");
        let Some(address) = Self::owner_address(&state, topic, partition) else {
            return self.bootstrap_session.clone();
        };
        if let Some(session) = state.sessions.get(&address) {
            return session.clone();
        }
        let Some(channel) = self.channel(&mut state, &address) else {
            return self.bootstrap_session.clone();
        };
        let session = Arc::new(Session::new(log_client(channel)));
        state.sessions.insert(address, session.clone());
        session
    }

    /// Channels to try for a request any agent can answer: the bootstrap agent first, then
    /// every other agent known.
    pub(crate) fn candidates(&self) -> Vec<Transport> {
        let mut state = self.state.lock().expect("router lock");
        let addresses: Vec<String> = state.agents.values().cloned().collect();
        let mut channels = vec![self.bootstrap.clone()];
        channels.extend(
            addresses
                .iter()
                .filter_map(|address| self.channel(&mut state, address)),
        );
        channels
    }

    /// A channel to the agent at `address`, or to the bootstrap agent when it is the only
    /// agent known (its advertised address may not be reachable from here).
    pub(crate) fn channel_to(&self, address: &str) -> Transport {
        let mut state = self.state.lock().expect("router lock");
        if state.agents.len() <= 1 {
            return self.bootstrap.clone();
        }
        self.channel(&mut state, address)
            .unwrap_or_else(|| self.bootstrap.clone())
    }

    /// Starts routing `topic` (one that exists: the caller just described it): if it is
    /// new to this client, reads its owners now.
    pub(crate) async fn follow(&self, topic: &str) -> Result<()> {
        let new = self.state.lock().expect("router lock").use_topic(topic);
        if new { self.refresh().await } else { Ok(()) }
    }

    /// Re-reads the metadata of the topics used, unless it was read moments ago (and
    /// covers every topic used).
    pub(crate) async fn refresh(&self) -> Result<()> {
        let _single = self.refreshing.lock().await;
        let (topics, version) = {
            let state = self.state.lock().expect("router lock");
            let fresh = state.refreshed_at.is_some_and(|(at, version)| {
                at.elapsed() < MIN_REFRESH_INTERVAL && version == state.used_version
            });
            if fresh {
                return Ok(());
            }
            (
                state.used.iter().cloned().collect::<Vec<_>>(),
                state.used_version,
            )
        };
        // The cached channels: a refresh opens no new connection (nor TLS handshake) to
        // an agent it already reaches.
        let mut last_error = Error::Closed;
        for channel in self.candidates() {
            let mut client =
                ClusterClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let request = client.metadata(pb::MetadataRequest {
                topics: topics.clone(),
                named_only: true,
            });
            match tokio::time::timeout(Duration::from_secs(5), request).await {
                Ok(Ok(response)) => {
                    self.apply(response.into_inner(), &topics, version);
                    return Ok(());
                }
                Ok(Err(status)) => last_error = Error::Status(status),
                Err(_) => {
                    last_error = Error::Status(tonic::Status::deadline_exceeded(
                        "metadata request timed out",
                    ))
                }
            }
        }
        Err(last_error)
    }

    fn apply(&self, metadata: pb::MetadataResponse, asked: &[String], version: u64) {
        let mut state = self.state.lock().expect("router lock");
        // Topics asked for and not answered no longer exist: no longer asked for (a
        // client that wrote to many short-lived topics asks only for the live ones).
        for gone in asked
            .iter()
            .filter(|t| !metadata.topics.iter().any(|m| m.name == **t))
        {
            state.used.remove(gone);
        }
        state.zones = metadata
            .agents
            .iter()
            .map(|a| (a.agent_id.clone(), a.zone.clone()))
            .collect();
        state.agents = metadata
            .agents
            .into_iter()
            .map(|a| (a.agent_id, a.address))
            .collect();
        state.owners = metadata
            .topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.name;
                topic.partitions.into_iter().filter_map(move |p| {
                    (!p.owner_agent_id.is_empty())
                        .then(|| ((name.clone(), p.partition as u32), p.owner_agent_id))
                })
            })
            .collect();
        let live: Vec<String> = state.agents.values().cloned().collect();
        state.sessions.retain(|address, _| live.contains(address));
        state.channels.retain(|address, _| live.contains(address));
        state.refreshed_at = Some((Instant::now(), version));
    }
}

/// Whether an error may go away once the metadata is refreshed or the cluster settles:
/// the owner moved, an agent is gone or stopping, or one is momentarily overloaded.
pub(crate) fn is_retriable(error: &Error) -> bool {
    // A refusal of a producer's batch (fenced, out of order) or of a transactional
    // request its transaction does not allow is final for that request.
    if let Error::Status(status) = error
        && (status
            .metadata()
            .get(strata_proto::PRODUCER_ERROR)
            .is_some()
            || status
                .metadata()
                .get(strata_proto::TRANSACTION_ERROR)
                .is_some_and(|kind| kind != "concurrent-transactions"))
    {
        return false;
    }
    match error {
        Error::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::FailedPrecondition
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        ),
        Error::Connect(_) => true,
        Error::InvalidArgument(_) | Error::Closed => false,
    }
}
