//! The APIs the listener implements, and the versions it advertises: each request mapped
//! onto the agent's operations, each answer built for the version asked.
//!
//! - [`metadata`]: ApiVersions, Metadata, DescribeCluster;
//! - [`data`]: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, InitProducerId;
//! - [`admin`]: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//!   AlterConfigs, IncrementalAlterConfigs, DeleteRecords;
//! - [`group`]: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//!   OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete,
//!   ConsumerGroupHeartbeat, ConsumerGroupDescribe;
//! - [`txn`]: InitProducerId with a transactional id, AddPartitionsToTxn,
//!   AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions;
//! - [`auth`]: SaslHandshake, SaslAuthenticate.
//!
//! `kafka-protocol` refuses to encode a field the answer's version does not have, so
//! every handler sets a field only for the versions that carry it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use strata_agent::auth::{Caller, Principal, Resource};

use crate::sasl::Mechanism;
use crate::server::{Pending, Shared};

mod acls;
mod admin;
mod auth;
mod data;
mod group;
mod metadata;
mod txn;

/// The versions of each API implemented: exactly what ApiVersions advertises.
///
/// Produce stops at 11 and Fetch at 12: Produce 12 means the producer leaves
/// AddPartitionsToTxn to the broker (KIP-890), and Fetch 13 names topics by id only;
/// neither is implemented yet.
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // Transaction version 1 (KIP-98): the client adds partitions itself. Kafka 4's
    // transaction version 2 (KIP-890: EndTxn 5, TxnOffsetCommit 5, Produce 12) is not
    // offered, so clients use version 1.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // v0 is advertised because clients (librdkafka) look for it to know the broker does
    // SASL at all; a client that then authenticates the v0 way (raw tokens after the
    // handshake, no SaslAuthenticate) has its connection closed.
    // ACLs (v1 brought pattern types).
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The versions of `api` implemented, if it is.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    VERSIONS
        .iter()
        .find(|(key, ..)| *key == api)
        .map(|(_, min, max)| (*min, *max))
}

/// An API's name in metrics and logs (Kafka's, in snake case).
pub fn name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "produce",
        ApiKey::CreateAcls => "create_acls",
        ApiKey::DescribeAcls => "describe_acls",
        ApiKey::DeleteAcls => "delete_acls",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::OffsetForLeaderEpoch => "offset_for_leader_epoch",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::AlterConfigs => "alter_configs",
        ApiKey::IncrementalAlterConfigs => "incremental_alter_configs",
        ApiKey::CreatePartitions => "create_partitions",
        ApiKey::DeleteRecords => "delete_records",
        ApiKey::DescribeCluster => "describe_cluster",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::DeleteGroups => "delete_groups",
        ApiKey::OffsetDelete => "offset_delete",
        ApiKey::ConsumerGroupHeartbeat => "consumer_group_heartbeat",
        ApiKey::ConsumerGroupDescribe => "consumer_group_describe",
        ApiKey::AddPartitionsToTxn => "add_partitions_to_txn",
        ApiKey::AddOffsetsToTxn => "add_offsets_to_txn",
        ApiKey::TxnOffsetCommit => "txn_offset_commit",
        ApiKey::EndTxn => "end_txn",
        ApiKey::DescribeTransactions => "describe_transactions",
        ApiKey::ListTransactions => "list_transactions",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        _ => "other",
    }
}

/// Whether a connection that has not authenticated may call `api`.
pub fn allowed_before_authentication(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it may call every API: it authenticated, or the agent has no tokens.
    pub authenticated: bool,
    /// The mechanism its SaslHandshake chose.
    pub mechanism: Option<Mechanism>,
    /// Who it authenticated as.
    pub principal: Option<Principal>,
}

impl Session {
    /// A new connection's session.
    pub fn new(peer: SocketAddr, authenticated: bool) -> Self {
        Self {
            peer,
            authenticated,
            mechanism: None,
            principal: None,
        }
    }
}

/// What a request comes to.
pub(crate) enum Outcome {
    /// An answer.
    Reply(Pending),
    /// No answer (a produce with acks=0).
    NoReply,
    /// An answer, then the connection is closed (a failed authentication), for this
    /// reason.
    ReplyAndClose(Pending, String),
    /// No answer, and the connection is closed (a refused acks=0 produce), for this
    /// reason.
    Close(String),
}

fn ready(response: ResponseKind) -> Outcome {
    Outcome::Reply(Pending::Ready(Box::new(response)))
}

/// Serves one decoded request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    header: &RequestHeader,
    request: RequestKind,
) -> Outcome {
    let version = header.request_api_version;
    let context = Context {
        shared,
        version,
        api: ApiKey::try_from(header.request_api_key).expect("checked when decoded"),
        client_id: header.client_id.as_deref().unwrap_or(""),
        peer: session.peer,
        caller: Caller::new(
            session
                .principal
                .clone()
                .unwrap_or_else(Principal::anonymous),
            session.peer.ip().to_string(),
        ),
    };
    match request {
        RequestKind::ApiVersions(_) => ready(metadata::api_versions(version)),
        RequestKind::Metadata(r) => ready(metadata::metadata(&context, r).await),
        RequestKind::DescribeCluster(r) => ready(metadata::describe_cluster(&context, r).await),
        RequestKind::Produce(r) => data::produce(&context, r).await,
        RequestKind::Fetch(r) => ready(data::fetch(&context, r).await),
        RequestKind::ListOffsets(r) => ready(data::list_offsets(&context, r).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ready(data::offset_for_leader_epoch(&context, r).await)
        }
        RequestKind::InitProducerId(r) => ready(data::init_producer_id(&context, r).await),
        RequestKind::CreateTopics(r) => ready(admin::create_topics(&context, r).await),
        RequestKind::DeleteTopics(r) => ready(admin::delete_topics(&context, r).await),
        RequestKind::CreatePartitions(r) => ready(admin::create_partitions(&context, r).await),
        RequestKind::DescribeConfigs(r) => ready(admin::describe_configs(&context, r).await),
        RequestKind::AlterConfigs(r) => ready(admin::alter_configs(&context, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ready(admin::incremental_alter_configs(&context, r).await)
        }
        RequestKind::DeleteRecords(r) => ready(admin::delete_records(&context, r).await),
        RequestKind::FindCoordinator(r) => ready(group::find_coordinator(&context, r).await),
        RequestKind::JoinGroup(r) => group::join_group(&context, r),
        RequestKind::SyncGroup(r) => group::sync_group(&context, r),
        RequestKind::Heartbeat(r) => ready(group::heartbeat(&context, r).await),
        RequestKind::LeaveGroup(r) => ready(group::leave_group(&context, r).await),
        RequestKind::OffsetCommit(r) => ready(group::offset_commit(&context, r).await),
        RequestKind::OffsetFetch(r) => ready(group::offset_fetch(&context, r).await),
        RequestKind::ListGroups(r) => ready(group::list_groups(&context, r).await),
        RequestKind::DescribeGroups(r) => ready(group::describe_groups(&context, r).await),
        RequestKind::DeleteGroups(r) => ready(group::delete_groups(&context, r).await),
        RequestKind::OffsetDelete(r) => ready(group::offset_delete(&context, r).await),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ready(group::consumer_group_heartbeat(&context, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => ready(txn::add_partitions_to_txn(&context, r).await),
        RequestKind::AddOffsetsToTxn(r) => ready(txn::add_offsets_to_txn(&context, r).await),
        RequestKind::TxnOffsetCommit(r) => ready(txn::txn_offset_commit(&context, r).await),
        RequestKind::EndTxn(r) => ready(txn::end_txn(&context, r).await),
        RequestKind::DescribeTransactions(r) => {
            ready(txn::describe_transactions(&context, r).await)
        }
        RequestKind::ListTransactions(r) => ready(txn::list_transactions(&context, r).await),
        RequestKind::ConsumerGroupDescribe(r) => {
            ready(group::consumer_group_describe(&context, r).await)
        }
        RequestKind::CreateAcls(r) => ready(acls::create_acls(&context, r).await),
        RequestKind::DescribeAcls(r) => ready(acls::describe_acls(&context, r).await),
        RequestKind::DeleteAcls(r) => ready(acls::delete_acls(&context, r).await),
        RequestKind::SaslHandshake(r) => ready(auth::handshake(&context, session, r)),
        RequestKind::SaslAuthenticate(r) => auth::authenticate(&context, session, r),
        // `supported` lets no other API through.
        _ => unreachable!("an API VERSIONS does not list was decoded"),
    }
}

/// A request the ACLs refused: the code to answer, and the message.
#[derive(Debug, Clone)]
pub(crate) struct NotAuthorized {
    pub error: ResponseError,
    pub message: String,
}

/// What a handler works with.
pub(crate) struct Context<'a> {
    pub shared: &'a Arc<Shared>,
    /// The request's version: the answer's too.
    pub version: i16,
    pub api: ApiKey,
    /// The client's id, from the request header.
    pub client_id: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who sent the request (its SASL principal, certificate subject, or anonymous).
    pub caller: Caller,
}

impl Context<'_> {
    /// The access table's name of this request's API (`kafka.Produce`).
    pub fn api_name(&self) -> String {
        format!("kafka.{:?}", self.api)
    }

    /// Whether the caller may call this API on `resource` (the operation is the access
    /// table's); a denial is counted and logged by the authorizer, and returned as the
    /// resource type's authorization error with the message that says which ACL is
    /// missing (for the answer to count with [`Context::error`]).
    pub fn authorize(&self, resource: Resource<'_>) -> Result<(), NotAuthorized> {
        let resource_type = resource.resource_type;
        self.shared
            .agent
            .authorize(&self.caller, &self.api_name(), resource)
            .map_err(|e| NotAuthorized {
                error: crate::error::not_authorized(resource_type),
                message: crate::error::message(&e),
            })
    }

    /// The topics of `names` the caller may not call this API on, each with its error
    /// code (counted, as [`Context::authorize`] and [`Context::error`] do: once per topic,
    /// however often `names` repeats it, as in AddPartitionsToTxn's list of partitions).
    pub fn refused_topics<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> BTreeMap<String, i16> {
        names
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|name| {
                let refusal = self.authorize(Resource::topic(name)).err()?;
                Some((name.to_string(), self.error(refusal.error)))
            })
            .collect()
    }

    /// Whether the caller may call this API on `resource`, for answers that leave out
    /// what it may not see (nothing counted or logged).
    pub fn permits(&self, resource: Resource<'_>) -> bool {
        self.shared
            .agent
            .authorizer()
            .permits(&self.caller, &self.api_name(), resource)
    }
    /// Counts an error returned (per partition or topic where the answer has one per
    /// partition or topic) and returns its code.
    pub fn error(&self, error: ResponseError) -> i16 {
        self.shared
            .metrics
            .errors
            .with_label_values(&[name(self.api), &format!("{error:?}")])
            .inc();
        error.code()
    }

    /// The code for an agent error, counted.
    pub fn agent_error(&self, error: &strata_agent::Error, context: crate::error::Context) -> i16 {
        self.error(crate::error::code(error, context))
    }
}

/// A string for an answer.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The answer to an ApiVersions request of a newer version than implemented.
pub(crate) fn api_versions_unsupported(version: i16) -> ResponseKind {
    tracing::debug!(
        version,
        "ApiVersions of an unknown version: answering v0 so the client falls back"
    );
    metadata::api_versions_error(ResponseError::UnsupportedVersion)
}
