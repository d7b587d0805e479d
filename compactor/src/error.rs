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
    /// An archive file could not be built.
    #[error("cannot write a Parquet archive file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Records could not be laid out as Arrow columns for the archive.
    #[error("cannot build the archive's Arrow columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// CPU work moved to a blocking thread failed (it panicked).
    #[error("{0}")]
    Task(String),
}

/// Runs CPU work (encoding, compression) on a blocking thread, off the async workers.
pub(crate) async fn off_async<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(format!("blocking work failed: {e}")))?
}

/// Result with the compactor's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<strata_storage::record::Error> for Error {
    fn from(e: strata_storage::record::Error) -> Self {
        Self::Storage(e.into())
    }
}
