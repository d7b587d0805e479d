//! The metastore's one error type.

/// What can go wrong talking to the metastore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topic does not exist.
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    /// A topic of that name exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The topic is not the incarnation the request was resolved against (it was deleted
    /// and created again), or no longer has the partition.
    #[error("topic '{topic}' changed: {reason}")]
    TopicChanged {
        /// The topic.
        topic: String,
        /// What changed.
        reason: String,
    },
    /// Another agent took the partition (a newer epoch) right after this one did.
    #[error("{topic}/{partition} was taken over by {by} meanwhile")]
    TakenOver {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The agent that holds it now.
        by: String,
    },
    /// The backend could not be reached or failed; the outcome of a write is unknown.
    #[error("metastore unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded: a bug or a foreign writer.
    #[error("corrupt metastore value at '{key}': {reason}")]
    Corrupt {
        /// The key whose value is bad.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// A request the metastore refuses as it stands (a bug in the caller).
    #[error("invalid metastore request: {0}")]
    Invalid(String),
    /// The metastore URL or configuration is wrong.
    #[error("invalid metastore configuration: {0}")]
    Config(String),
}

/// Result with the metastore's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
