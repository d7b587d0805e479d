//! The SDK's one error type.

/// What can go wrong using the SDK.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The agent could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The agent answered with an error status; its code and message say what happened
    /// (and, for a failed connection, the innermost cause: a TLS alert, a refused
    /// connection).
    #[error("{}: {}{}", .0.code(), .0.message(), root_cause(.0))]
    Status(tonic::Status),
    /// The call was malformed before it was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

/// ` (cause)`: the innermost source of `error` (for a status, the transport error it
/// wraps, such as a TLS alert), or nothing when it has none.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error.source();
    let mut innermost = None;
    while let Some(error) = cause {
        innermost = Some(error);
        cause = error.source();
    }
    innermost.map_or_else(String::new, |e| format!(" ({e})"))
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl Error {
    /// Whether the agent refused the call because it named an incarnation of the topic
    /// that is no longer current (deleted and created again, or deleted): retriable after
    /// describing the topic again.
    pub fn is_topic_changed(&self) -> bool {
        matches!(self, Self::Status(s) if s.metadata().get(strata_proto::TOPIC_CHANGED).is_some())
    }

    /// Why the owner refused an idempotent producer's batch, writing nothing:
    /// `out-of-order-sequence` or `producer-fenced` (the `strata-producer-error`
    /// trailer).
    pub fn producer_error(&self) -> Option<&str> {
        match self {
            Self::Status(s) => s
                .metadata()
                .get(strata_proto::PRODUCER_ERROR)
                .and_then(|v| v.to_str().ok()),
            _ => None,
        }
    }

    /// The gRPC code, when the agent answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// Result with the SDK's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
