//! The storage layer's one error type.

/// What can go wrong storing or reading segments.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store URL or options are wrong, or the store fails a start-up check.
    #[error("object store configuration: {0}")]
    Config(String),
    /// A request to the object store failed; it may succeed if retried.
    #[error("object store {op} '{path}': {source}")]
    ObjectStore {
        /// The operation (put, get).
        op: &'static str,
        /// The object.
        path: String,
        /// What the store said.
        source: object_store::Error,
    },
    /// The object does not exist (a compactor deleted it after a merge, or it was never
    /// written).
    #[error("object '{0}' does not exist")]
    NotFound(String),
    /// A create-only PUT found the object already there.
    #[error("object '{0}' already exists")]
    AlreadyExists(String),
    /// Stored bytes failed their checksum or do not parse: never returned as records.
    #[error(transparent)]
    Corrupt(strata_record::Corrupt),
    /// Records could not be encoded.
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// The read cache could not be built or read.
    #[error("cache: {0}")]
    Cache(String),
}

/// Result with the storage layer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The codec's errors are the storage layer's own: a corrupt batch is corrupt data
/// wherever it was read.
impl From<strata_record::Error> for Error {
    fn from(e: strata_record::Error) -> Self {
        match e {
            strata_record::Error::Corrupt(corrupt) => Self::Corrupt(corrupt),
            strata_record::Error::Encode(reason) => Self::Encode(reason),
        }
    }
}
