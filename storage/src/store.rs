//! Object stores by URL, and the segment-level operations Strata needs from them.
//!
//! | URL | store |
//! |---|---|
//! | `s3://bucket/prefix` | S3 or any S3-compatible server (MinIO, s3s-fs): endpoint, region, credentials, path style and plain http are options |
//! | `file:///dir` | a local directory |
//! | `memory://` | memory (tests) |
//!
//! Data goes through `object_store`. For S3, `aws-sdk-s3` does what `object_store`
//! cannot: create the bucket when asked, check that it is reachable, and set the lifecycle
//! rule that aborts stale multipart uploads. Every store is checked at start-up to honour
//! create-only PUTs, because segment names must never be overwritten.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use tracing::instrument;

use crate::{Error, Result};

/// Where segments live and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct ObjectStoreConfig {
    /// `s3://bucket/prefix`, `file:///dir` or `memory://`.
    pub url: String,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO; unset = AWS.
    pub endpoint: Option<String>,
    /// S3 region; default `us-east-1`.
    pub region: Option<String>,
    /// S3 access key; unset = `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// S3 secret key; unset = `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO wants. Default true when an
    /// endpoint is set.
    pub path_style: Option<bool>,
    /// Allow `http://` endpoints.
    pub allow_http: bool,
    /// Create the bucket if it does not exist.
    pub create_bucket: bool,
    /// Sign S3 request bodies (SHA-256 of every payload in the SigV4 signature). Off by
    /// default: hashing every segment costs a fifth of the agent's CPU at full load, TLS
    /// protects bodies in transit, and every stored block carries its own CRC32C.
    pub sign_payload: bool,
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name relative to the store's prefix (e.g. `segments/.../x.seg`).
    pub name: String,
    /// When it was written, ms since the Unix epoch.
    pub last_modified_ms: i64,
    /// Size in bytes.
    pub size: u64,
}

fn read_error(path: &Path, source: object_store::Error) -> Error {
    match source {
        object_store::Error::NotFound { .. } => Error::NotFound(path.to_string()),
        source => Error::ObjectStore {
            op: "get",
            path: path.to_string(),
            source,
        },
    }
}

/// Segment objects in one store, under one prefix.
#[derive(Debug, Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    description: String,
}

struct S3Location {
    bucket: String,
    prefix: String,
}

fn parse_s3(url: &str) -> Result<S3Location> {
    let rest = url.strip_prefix("s3://").unwrap_or_default();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Config(format!(
            "'{url}' names no bucket; use s3://bucket/prefix"
        )));
    }
    Ok(S3Location {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

impl SegmentStore {
    /// Opens the store `config.url` names and checks it: reachable, and create-only PUTs
    /// refused on an existing object.
    #[instrument(name = "storage.open", skip_all, fields(url = %config.url))]
    pub async fn open(config: &ObjectStoreConfig) -> Result<Self> {
        let url = config.url.as_str();
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if url.starts_with("s3://") {
            let location = parse_s3(url)?;
            s3_admin::prepare_bucket(config, &location.bucket).await?;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&location.bucket)
                .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_allow_http(config.allow_http)
                .with_unsigned_payload(!config.sign_payload)
                .with_conditional_put(S3ConditionalPut::ETagMatch);
            if let Some(endpoint) = &config.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(!config.path_style.unwrap_or(true));
            }
            if let Some(key) = &config.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let store = builder
                .build()
                .map_err(|e| Error::Config(format!("{url}: {e}")))?;
            (Arc::new(store), location.prefix)
        } else if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Config(format!("cannot create {dir}: {e}")))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::Config(format!("{url}: {e}")))?;
            (Arc::new(store), String::new())
        } else if url == "memory://" {
            (Arc::new(InMemory::new()), String::new())
        } else {
            return Err(Error::Config(format!(
                "unsupported object store URL '{url}'; use s3://bucket/prefix, file:///dir or memory://"
            )));
        };
        let description = match &config.endpoint {
            Some(endpoint) if url.starts_with("s3://") => format!("{url} at {endpoint}"),
            _ => url.to_string(),
        };
        let segments = Self {
            store,
            prefix: Path::from(prefix),
            description,
        };
        segments.check_create_only().await?;
        Ok(segments)
    }

    /// Wraps an existing store (tests, or a store with extra layers).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: Path::from(prefix),
            description: format!("custom store, prefix '{prefix}'"),
        }
    }

    /// What the store is: its URL, and for S3 the endpoint too (the same bucket name on
    /// two servers is two stores). Agents of one cluster must agree on it.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn path(&self, name: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.child(part);
        }
        path
    }

    /// Writes `name` unless it exists ([`Error::AlreadyExists`] then). The body may be
    /// several buffers ([`PutPayload`]): they are sent one after another, not copied
    /// together.
    #[instrument(name = "storage.put", skip(self, body), fields(bytes))]
    pub async fn put_create_only(&self, name: &str, body: impl Into<PutPayload>) -> Result<()> {
        let body = body.into();
        tracing::Span::current().record("bytes", body.content_length());
        let path = self.path(name);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.put_opts(&path, body, options).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(Error::AlreadyExists(path.to_string()))
            }
            Err(source) => Err(Error::ObjectStore {
                op: "put",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Writes `name`, replacing it if it exists. Only for objects whose every writer
    /// writes the same contents under one name (archive files); segments use
    /// [`SegmentStore::put_create_only`].
    #[instrument(name = "storage.put", skip(self, bytes), fields(bytes = bytes.len()))]
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name);
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|source| Error::ObjectStore {
                op: "put",
                path: path.to_string(),
                source,
            })
    }

    /// Reads `range` of `name`: one ranged GET.
    #[instrument(name = "storage.get_range", skip(self))]
    pub async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(name);
        self.store
            .get_range(&path, range)
            .await
            .map_err(|source| read_error(&path, source))
    }

    /// Reads all of `name`.
    #[instrument(name = "storage.get", skip(self))]
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name);
        let result = async { self.store.get(&path).await?.bytes().await }.await;
        result.map_err(|source| read_error(&path, source))
    }

    /// Every object whose name starts with `prefix` (a folder, e.g. `segments/`), with
    /// names relative to the store's prefix.
    #[instrument(name = "storage.list", skip(self))]
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let path = self.path(prefix.trim_end_matches('/'));
        let skip = if self.prefix.as_ref().is_empty() {
            0
        } else {
            self.prefix.as_ref().len() + 1
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|source| Error::ObjectStore {
                op: "list",
                path: path.to_string(),
                source,
            })?;
        Ok(listed
            .into_iter()
            .map(|meta| ObjectInfo {
                name: meta.location.as_ref()[skip..].to_string(),
                last_modified_ms: meta.last_modified.timestamp_millis(),
                size: meta.size,
            })
            .collect())
    }

    /// Whether any object's name starts with `prefix` (a folder): one listing request.
    #[instrument(name = "storage.has_any", skip(self))]
    pub async fn has_any(&self, prefix: &str) -> Result<bool> {
        use futures::StreamExt;
        let path = self.path(prefix.trim_end_matches('/'));
        match self.store.list(Some(&path)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(Error::ObjectStore {
                op: "list",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Deletes `name` (no error if it is already gone).
    #[instrument(name = "storage.delete", skip(self))]
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::ObjectStore {
                op: "delete",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Writes a probe object twice: the second create-only PUT must be refused, or segment
    /// names could be overwritten.
    async fn check_create_only(&self) -> Result<()> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("_strata/probe-{}-{nanos}", std::process::id());
        let unreachable = |e: Error| {
            Error::Config(format!(
                "object store {} is not usable: {e}",
                self.description
            ))
        };
        self.put_create_only(&name, Bytes::from_static(b"probe"))
            .await
            .map_err(unreachable)?;
        let second = self
            .put_create_only(&name, Bytes::from_static(b"probe"))
            .await;
        let _ = self.store.delete(&self.path(&name)).await;
        match second {
            Err(Error::AlreadyExists(_)) => Ok(()),
            Ok(()) => Err(Error::Config(format!(
                "object store {} overwrote an object on a create-only PUT (If-None-Match: *); \
                 Strata needs a store that honours it (AWS S3, MinIO, s3s-fs do)",
                self.description
            ))),
            Err(e) => Err(unreachable(e)),
        }
    }
}

mod s3_admin {
    //! Bucket administration through `aws-sdk-s3`.

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleRule, LifecycleRuleFilter,
    };
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use tracing::instrument;

    use super::ObjectStoreConfig;
    use crate::{Error, Result};

    /// An S3 error in one line: the service's code and message when it answered, else
    /// what went wrong on the way.
    fn brief<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// A bucket-admin client, if static keys are configured; `None` when credentials come
    /// from the environment's role (EC2 instance profile, ECS task role), which
    /// `object_store` picks up for the data path by itself.
    fn client(config: &ObjectStoreConfig) -> Option<aws_sdk_s3::Client> {
        let access_key = config
            .access_key_id
            .clone()
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret_key = config
            .secret_access_key
            .clone()
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            return None;
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(
                config.region.clone().unwrap_or_else(|| "us-east-1".into()),
            ))
            .credentials_provider(Credentials::new(
                access_key, secret_key, None, None, "strata",
            ))
            .http_client(http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .endpoint_url(endpoint)
                .force_path_style(config.path_style.unwrap_or(true));
        }
        Some(aws_sdk_s3::Client::from_conf(builder.build()))
    }

    /// Creates the bucket if asked, checks that it is reachable, and sets the rule that
    /// aborts multipart uploads left unfinished for a day.
    #[instrument(name = "storage.s3.prepare_bucket", skip(config))]
    pub(super) async fn prepare_bucket(config: &ObjectStoreConfig, bucket: &str) -> Result<()> {
        let endpoint = config.endpoint.as_deref().unwrap_or("AWS S3");
        let Some(s3) = client(config) else {
            if config.create_bucket {
                return Err(Error::Config(format!(
                    "creating bucket '{bucket}' needs S3 keys (the access key and secret key \
                     options, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); with a role's \
                     credentials, create the bucket beforehand"
                )));
            }
            tracing::info!(
                bucket,
                "no S3 keys: using the environment's role credentials; the bucket is checked \
                 by the create-only probe, its multipart lifecycle rule is left to its owner"
            );
            return Ok(());
        };
        if s3.head_bucket().bucket(bucket).send().await.is_err() {
            if !config.create_bucket {
                return Err(Error::Config(format!(
                    "bucket '{bucket}' at {endpoint} is not reachable (missing, or wrong \
                     credentials); create it, or pass --create-bucket"
                )));
            }
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot create bucket '{bucket}' at {endpoint}: {}",
                        brief(&e)
                    ))
                })?;
            tracing::info!(bucket, "created bucket");
        }
        let rule = LifecycleRule::builder()
            .id("strata-abort-stale-multipart-uploads")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            )
            .build()
            .map_err(|e| Error::Config(format!("lifecycle rule: {e}")))?;
        let lifecycle = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| Error::Config(format!("lifecycle configuration: {e}")))?;
        if let Err(e) = s3
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(lifecycle)
            .send()
            .await
        {
            // Not every S3-compatible server implements lifecycle rules; data is safe
            // without it, stale multipart uploads just are not cleaned by the server.
            tracing::warn!(
                bucket,
                error = %brief(&e),
                "could not set the lifecycle rule that aborts stale multipart uploads"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no S3 keys (a role's credentials) the bucket must already exist: asked to
    /// create it, the agent says what it needs; otherwise bucket administration is
    /// skipped without a request (the endpoint here does not even listen).
    #[tokio::test]
    async fn without_keys_the_bucket_is_not_administered() {
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
            return; // keys from the environment: the role path is not taken
        }
        let mut config = ObjectStoreConfig {
            url: "s3://strata-role/segments".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            create_bucket: true,
            ..Default::default()
        };
        let error = s3_admin::prepare_bucket(&config, "strata-role")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("needs S3 keys"), "{error}");
        config.create_bucket = false;
        s3_admin::prepare_bucket(&config, "strata-role")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn file_store_refuses_to_overwrite_and_serves_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::open(&ObjectStoreConfig {
            url: format!("file://{}", dir.path().display()),
            ..Default::default()
        })
        .await
        .unwrap();
        store
            .put_create_only("segments/a.seg", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let again = store
            .put_create_only("segments/a.seg", Bytes::from_static(b"xxxx"))
            .await;
        assert!(matches!(again, Err(Error::AlreadyExists(_))));
        assert_eq!(
            store.get_range("segments/a.seg", 2..5).await.unwrap(),
            "234"
        );
        assert_eq!(store.get("segments/a.seg").await.unwrap(), "0123456789");
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let err = SegmentStore::open(&ObjectStoreConfig {
            url: "gs://bucket".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("use s3://bucket/prefix"), "{err}");
    }
}
