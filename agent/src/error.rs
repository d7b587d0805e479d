//! The agent's one error type. [`crate::service`] maps it to gRPC status codes.

/// What can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ACLs do not let the caller do this (nothing was changed).
    #[error("{0}")]
    NotAuthorized(Box<crate::auth::Denied>),
    /// No topic of that name.
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    /// A topic of that name exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The request was resolved against another incarnation of the topic (it was deleted
    /// and created again, or no longer has the partition); retry with fresh metadata.
    #[error("topic '{topic}' changed: {reason}; refresh its metadata and retry")]
    TopicChanged {
        /// The topic.
        topic: String,
        /// What changed.
        reason: String,
    },
    /// A partition number the topic does not have (ListOffsets: Kafka's
    /// UNKNOWN_TOPIC_OR_PARTITION).
    #[error(
        "partition {partition} of topic '{topic}' does not exist: it has partitions 0 to {last}"
    )]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// Its last partition.
        last: u32,
    },
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// A record timestamp outside the topic's bounds (Kafka's INVALID_TIMESTAMP).
    #[error("{0}")]
    InvalidTimestamp(String),
    /// A record larger than the topic's `max.message.bytes`, or a batch over the request
    /// limits (Kafka's MESSAGE_TOO_LARGE: a Java producer splits the batch).
    #[error("{0}")]
    RecordTooLarge(String),
    /// A fetch offset outside the partition's readable range.
    #[error(
        "offset {offset} of {topic}/{partition} is out of range: readable offsets are \
         {log_start_offset} (log start) to {high_watermark} (high watermark)"
    )]
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The offset asked for.
        offset: i64,
        /// First readable offset.
        log_start_offset: i64,
        /// Next offset to be written.
        high_watermark: i64,
    },
    /// This agent does not (or no longer) own the partition.
    #[error("this agent does not own {topic}/{partition}: {reason}")]
    NotOwner {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Why, and who does if known.
        reason: String,
    },
    /// This agent does not coordinate the group.
    #[error("this agent is not the coordinator of group '{group}': {reason}")]
    NotCoordinator {
        /// The group.
        group: String,
        /// Who is, if known.
        reason: String,
    },
    /// No group of that id.
    #[error("group '{0}' does not exist")]
    GroupNotFound(String),
    /// The member id is not (or no longer) a member of the group.
    #[error(
        "member '{member}' is not a member of group '{group}' (it left or timed out); join \
         again"
    )]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id given.
        member: String,
    },
    /// The member's epoch is stale: another incarnation took over or it missed changes.
    #[error(
        "member '{member}' of group '{group}' is fenced: epoch {epoch} is stale (current \
         {current}); join again"
    )]
    FencedMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch given.
        epoch: i64,
        /// The member's epoch now.
        current: i64,
    },
    /// A commit names partitions the member does not own.
    #[error(
        "member '{member}' of group '{group}' does not own {partitions}; commit only partitions assigned to it"
    )]
    NotAssigned {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The partitions, `topic/p`, comma-separated.
        partitions: String,
    },
    /// A classic-protocol member's generation is not the group's (it missed a rebalance).
    #[error(
        "member '{member}' of group '{group}' is at generation {generation} but the group \
         is at {current}; join again"
    )]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The generation given.
        generation: i32,
        /// The group's generation.
        current: i32,
    },
    /// The group is rebalancing: the member must join again.
    #[error("group '{0}' is rebalancing; join again")]
    RebalanceInProgress(String),
    /// A static member (`group.instance.id`) was replaced by a newer instance with the same
    /// id.
    #[error(
        "group.instance.id '{instance}' of group '{group}' belongs to another member now (a \
         newer consumer with the same id joined); this one is fenced"
    )]
    FencedInstance {
        /// The group.
        group: String,
        /// The instance id.
        instance: String,
    },
    /// The member's protocol does not fit the group's: another protocol type, no assignor
    /// in common, or the group's members use the other group protocol.
    #[error("cannot join group '{group}': {reason}")]
    InconsistentProtocol {
        /// The group.
        group: String,
        /// What does not match.
        reason: String,
    },
    /// The operation needs a group without members.
    #[error("group '{group}' has active members ({members}); stop its consumers first")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// Its members, `member_id` or `member_id (instance)`, comma-separated.
        members: String,
    },
    /// An idempotent producer's batch does not follow its last one in the partition:
    /// nothing of it was written.
    #[error(
        "batch of producer {producer_id} at sequence {sequence} is out of order in \
         {topic}/{partition}: the next sequence is {expected}; nothing of it was written"
    )]
    OutOfOrderSequence {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        sequence: i32,
        /// The sequence expected, and why.
        expected: String,
    },
    /// A batch of an older epoch than the producer's current one: another producer took
    /// over its id (a newer session of the same producer). Nothing of it was written.
    #[error(
        "producer {producer_id} is fenced: epoch {epoch} is older than its current epoch \
         {current}; nothing of the batch was written"
    )]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's epoch now.
        current: i16,
    },
    /// A transactional request that its transaction's state does not allow: the batch's
    /// partition is not in the transaction, the transaction is not open, or it timed out.
    #[error("transaction of '{transactional_id}': {reason}")]
    NotInTransaction {
        /// The transactional id.
        transactional_id: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The transactional id has no producer yet: InitTransactions first (Kafka's
    /// INVALID_PRODUCER_ID_MAPPING).
    #[error("transactional id '{0}' is unknown: call InitTransactions first")]
    UnknownTransactionalId(String),
    /// The producer's transaction was open longer than its timeout and was aborted, which
    /// fenced the producer (Kafka answers PRODUCER_FENCED).
    #[error(
        "transaction of '{transactional_id}' was open longer than its \
         transaction.timeout.ms ({timeout_ms} ms) and was aborted; its producer is fenced: \
         call InitTransactions"
    )]
    TransactionTimedOut {
        /// The transactional id.
        transactional_id: String,
        /// Its timeout.
        timeout_ms: u64,
    },
    /// A transaction request that must wait: another request of the same transactional
    /// id is changing its state (Kafka's CONCURRENT_TRANSACTIONS); retry.
    #[error(
        "transaction of '{0}' is being changed by another request (completing or initializing); retry"
    )]
    ConcurrentTransactions(String),
    /// The request cannot be done in the cluster's present state; the message says what
    /// to change first.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too much is waiting to be flushed; retry later.
    #[error("agent overloaded: {0}")]
    Overloaded(String),
    /// Stored data failed its checksum.
    #[error("{0}")]
    DataLoss(String),
    /// An index entry names an object that no longer exists: the compactor replaced the
    /// entry and deleted the object. The reader reloads the index; never sent to clients
    /// as such.
    #[error("object '{0}' no longer exists")]
    ObjectGone(String),
    /// The object store or metastore failed; the request may succeed if retried.
    #[error("{0}")]
    Unavailable(String),
}

impl From<strata_metastore::Error> for Error {
    fn from(e: strata_metastore::Error) -> Self {
        match e {
            strata_metastore::Error::TopicNotFound(t) => Self::TopicNotFound(t),
            strata_metastore::Error::TopicExists(t) => Self::TopicExists(t),
            strata_metastore::Error::TakenOver {
                topic,
                partition,
                by,
            } => Self::NotOwner {
                topic,
                partition,
                reason: format!("{by} took it over"),
            },
            strata_metastore::Error::TopicChanged { topic, reason } => {
                Self::TopicChanged { topic, reason }
            }
            e @ strata_metastore::Error::Corrupt { .. } => Self::DataLoss(format!(
                "{e}; fix or delete that record (strata cluster status lists such records)"
            )),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<strata_storage::Error> for Error {
    fn from(e: strata_storage::Error) -> Self {
        match e {
            e @ strata_storage::Error::Corrupt(_) => Self::DataLoss(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<strata_storage::record::Error> for Error {
    fn from(e: strata_storage::record::Error) -> Self {
        strata_storage::Error::from(e).into()
    }
}

impl Error {
    /// Its message, cut to at most `max` bytes (and an ellipsis), so that a message
    /// quoting a huge argument never becomes a huge answer.
    pub fn message_within(&self, max: usize) -> String {
        let mut message = self.to_string();
        if message.len() > max {
            let mut end = max;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        message
    }
}

/// Result with the agent's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
