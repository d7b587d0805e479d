//! The one place agent errors become Kafka error codes.
//!
//! Kafka clients act on the code: a retriable one (NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT, ...) makes them refresh their metadata
//! and retry; the others reach the application. The message that goes with the code is
//! the agent's own, which says what to fix.

use kafka_protocol::error::ResponseError;
use strata_agent::Error;

/// What a request was doing when it failed: some agent errors mean something more
/// precise to Kafka in one place than in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Produce: a refused request is about its records.
    Produce,
    /// Topic administration (create, delete, configs, partitions).
    Admin,
    /// Consumer groups and coordinators.
    Group,
    /// Transactions, at their coordinator.
    Transaction,
    /// Anything else.
    Other,
}

/// The Kafka error code for `error` in `context`.
pub fn code(error: &Error, context: Context) -> ResponseError {
    match error {
        Error::NotAuthorized(denied) => not_authorized(denied.resource_type),
        Error::TopicNotFound(_) | Error::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        // Retriable: the client refreshes its metadata and finds the current incarnation.
        Error::TopicChanged { .. } => ResponseError::UnknownTopicOrPartition,
        Error::TopicExists(_) => ResponseError::TopicAlreadyExists,
        Error::InvalidArgument(_) => match context {
            Context::Produce => ResponseError::InvalidRecord,
            Context::Admin => ResponseError::PolicyViolation,
            Context::Group | Context::Transaction | Context::Other => ResponseError::InvalidRequest,
        },
        Error::RecordTooLarge(_) => ResponseError::MessageTooLarge,
        Error::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        Error::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Retriable: the client refreshes its metadata and follows the owner.
        Error::NotOwner { .. } => ResponseError::NotLeaderOrFollower,
        Error::NotCoordinator { .. } => ResponseError::NotCoordinator,
        Error::GroupNotFound(_) => ResponseError::GroupIdNotFound,
        Error::UnknownMember { .. } => ResponseError::UnknownMemberId,
        Error::FencedMember { .. } => ResponseError::FencedMemberEpoch,
        Error::NotAssigned { .. } => ResponseError::IllegalGeneration,
        Error::GroupNotEmpty { .. } => ResponseError::NonEmptyGroup,
        Error::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        Error::RebalanceInProgress(_) => ResponseError::RebalanceInProgress,
        Error::FencedInstance { .. } => ResponseError::FencedInstanceId,
        Error::InconsistentProtocol { .. } => ResponseError::InconsistentGroupProtocol,
        Error::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        Error::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        Error::NotInTransaction { .. } => ResponseError::InvalidTxnState,
        Error::UnknownTransactionalId(_) => ResponseError::InvalidProducerIdMapping,
        // The timeout's abort bumped the epoch: the producer is fenced (Kafka Streams
        // recovers from this, not from INVALID_TXN_STATE).
        Error::TransactionTimedOut { .. } => ResponseError::InvalidProducerEpoch,
        Error::ConcurrentTransactions(_) => ResponseError::ConcurrentTransactions,
        Error::FailedPrecondition(_) => match context {
            Context::Admin => ResponseError::PolicyViolation,
            _ => ResponseError::InvalidRequest,
        },
        Error::Overloaded(_) => match context {
            Context::Admin => ResponseError::PolicyViolation,
            // A group at its member or state limit.
            Context::Group => ResponseError::GroupMaxSizeReached,
            // Retriable: the producer backs off and sends again.
            _ => ResponseError::RequestTimedOut,
        },
        Error::DataLoss(_) => ResponseError::KafkaStorageError,
        // Retriable; a produce refused this way (the agent is handing off, the object
        // store failed) is sent again after a metadata refresh.
        Error::Unavailable(_) | Error::ObjectGone(_) => match context {
            Context::Produce => ResponseError::NotLeaderOrFollower,
            // Retriable: the client finds the coordinator again.
            Context::Group | Context::Transaction => ResponseError::CoordinatorNotAvailable,
            _ => ResponseError::RequestTimedOut,
        },
    }
}

/// The code Kafka answers when the ACLs refuse an operation on a resource of this type.
pub fn not_authorized(resource_type: strata_metastore::ResourceType) -> ResponseError {
    use strata_metastore::ResourceType;
    match resource_type {
        ResourceType::Topic => ResponseError::TopicAuthorizationFailed,
        ResourceType::Group => ResponseError::GroupAuthorizationFailed,
        ResourceType::Cluster => ResponseError::ClusterAuthorizationFailed,
        ResourceType::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
    }
}

/// Most bytes of an error message sent to a client.
const MAX_MESSAGE: usize = 1024;

/// The message that goes with a code: the agent's, cut to [`MAX_MESSAGE`] bytes.
pub fn message(error: &Error) -> String {
    error.message_within(MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_partition_is_retriable_and_a_bad_record_is_not() {
        let moved = Error::NotOwner {
            topic: "t".into(),
            partition: 0,
            reason: "x".into(),
        };
        assert!(code(&moved, Context::Produce).is_retriable());
        let bad = Error::InvalidArgument("record 0 has no key".into());
        assert_eq!(code(&bad, Context::Produce), ResponseError::InvalidRecord);
        assert!(!code(&bad, Context::Produce).is_retriable());
        let big = Error::RecordTooLarge("too big".into());
        assert_eq!(code(&big, Context::Produce), ResponseError::MessageTooLarge);
    }

    #[test]
    fn messages_are_bounded() {
        let long = Error::InvalidArgument("é".repeat(5000));
        assert!(message(&long).len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
