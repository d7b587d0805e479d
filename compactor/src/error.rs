//! The compactor's one error type.

/// What can stop a compactor job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metastore failed or refused a request.
    #[error(transparent)]
    Metastore(#[from] strata_metastore::Error),
    /// The object store failed, or stored bytes failed their checks.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
    /// The job's claim expired (the compactor was paused or lost etcd): another
    /// compactor may be working on the same partition, so this one stops.
    #[error("the claim on job '{0}' was lost; stopping it")]
    ClaimLost(String),
}

/// Result with the compactor's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
