//! `strata dev`, `strata agent` and `strata compactor`: build the parts from
//! configuration and run until SIGINT/SIGTERM, then flush and stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use strata_agent::auth::security::{BearerTokens, Security, ServerTls};
use strata_agent::auth::{AuthorizationConfig, Principal};
use strata_agent::clock::SystemClock;
use strata_agent::{Agent, AgentConfig, Limits};
use strata_compactor::{Compactor, CompactorConfig};
use strata_metastore::Metastore;
use strata_storage::cache::CacheConfig;
use strata_storage::{BlockCache, ObjectStoreConfig, SegmentStore};
use tokio::net::TcpListener;

use crate::args::{
    AgentArgs, ClientArgs, CompactorArgs, DevArgs, KafkaArgs, SecurityArgs, StoreArgs,
    StoredLimitArgs, Tuning,
};
use crate::target::read_pem;

/// `strata agent` and `strata compactor` options as a TOML file may give them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    metastore: Option<String>,
    object_store: Option<String>,
    cluster: Option<String>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    advertise: Option<String>,
    kafka_listen: Option<String>,
    kafka_advertise: Option<String>,
    kafka_max_request_bytes: Option<usize>,
    kafka_max_connections: Option<usize>,
    agent_id: Option<String>,
    cache_dir: Option<PathBuf>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key: Option<String>,
    s3_secret_key: Option<String>,
    s3_virtual_hosted: Option<bool>,
    s3_allow_http: Option<bool>,
    create_bucket: Option<bool>,
    s3_sign_payload: Option<bool>,
    etcd_max_txn_ops: Option<usize>,
    lease_ttl_secs: Option<u64>,
    zone: Option<String>,
    linger_ms: Option<u64>,
    segment_bytes: Option<usize>,
    max_pending_bytes: Option<usize>,
    max_inflight_flushes: Option<usize>,
    cache_memory_bytes: Option<usize>,
    cache_disk_bytes: Option<usize>,
    compactor_id: Option<String>,
    compactor_interval: Option<String>,
    compactor_metrics_listen: Option<String>,
    orphan_min_age: Option<String>,
    gc_grace: Option<String>,
    archive_interval: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_tokens_file: Option<PathBuf>,
    authorizer: Option<String>,
    super_users: Option<String>,
    max_partitions_per_topic: Option<u32>,
    max_partitions: Option<u64>,
    max_topics: Option<u32>,
    max_request_bytes: Option<usize>,
    max_request_records: Option<usize>,
    max_fetch_bytes: Option<usize>,
    max_headers_per_record: Option<usize>,
    max_header_key_bytes: Option<usize>,
    max_subscription_bytes: Option<usize>,
    group_max_size: Option<usize>,
    offset_metadata_max_bytes: Option<usize>,
    max_group_state_bytes: Option<usize>,
    max_session_inflight: Option<usize>,
    max_streams_per_connection: Option<u32>,
    max_producers_per_partition: Option<usize>,
    producer_id_expiration_ms: Option<u64>,
    max_transactional_ids: Option<usize>,
}

/// The limits the flags (or the environment, or the file) set, over the defaults.
fn limits(tuning: &Tuning, stored: &StoredLimitArgs, file: &AgentFile) -> Result<Limits> {
    let d = Limits::default();
    let limits = Limits {
        max_partitions_per_topic: stored
            .max_partitions_per_topic
            .or(file.max_partitions_per_topic)
            .unwrap_or(d.max_partitions_per_topic),
        max_partitions: stored
            .max_partitions
            .or(file.max_partitions)
            .unwrap_or(d.max_partitions),
        max_topics: stored
            .max_topics
            .or(file.max_topics)
            .unwrap_or(d.max_topics),
        max_request_bytes: tuning
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(d.max_request_bytes),
        max_request_records: tuning
            .max_request_records
            .or(file.max_request_records)
            .unwrap_or(d.max_request_records),
        max_fetch_bytes: tuning
            .max_fetch_bytes
            .or(file.max_fetch_bytes)
            .unwrap_or(d.max_fetch_bytes),
        max_headers_per_record: tuning
            .max_headers_per_record
            .or(file.max_headers_per_record)
            .unwrap_or(d.max_headers_per_record),
        max_header_key_bytes: tuning
            .max_header_key_bytes
            .or(file.max_header_key_bytes)
            .unwrap_or(d.max_header_key_bytes),
        max_subscription_bytes: tuning
            .max_subscription_bytes
            .or(file.max_subscription_bytes)
            .unwrap_or(d.max_subscription_bytes),
        group_max_size: tuning
            .group_max_size
            .or(file.group_max_size)
            .unwrap_or(d.group_max_size),
        offset_metadata_max_bytes: tuning
            .offset_metadata_max_bytes
            .or(file.offset_metadata_max_bytes)
            .unwrap_or(d.offset_metadata_max_bytes),
        max_group_state_bytes: tuning
            .max_group_state_bytes
            .or(file.max_group_state_bytes)
            .unwrap_or(d.max_group_state_bytes),
        max_session_inflight: tuning
            .max_session_inflight
            .or(file.max_session_inflight)
            .unwrap_or(d.max_session_inflight),
        max_streams_per_connection: tuning
            .max_streams_per_connection
            .or(file.max_streams_per_connection)
            .unwrap_or(d.max_streams_per_connection),
        max_producers_per_partition: tuning
            .max_producers_per_partition
            .or(file.max_producers_per_partition)
            .unwrap_or(d.max_producers_per_partition),
        producer_id_expiration_ms: tuning
            .producer_id_expiration_ms
            .or(file.producer_id_expiration_ms)
            .unwrap_or(d.producer_id_expiration_ms),
        max_transactional_ids: tuning
            .max_transactional_ids
            .or(file.max_transactional_ids)
            .unwrap_or(d.max_transactional_ids),
    };
    limits.validate().map_err(anyhow::Error::msg)?;
    Ok(limits)
}

/// Who may talk to the agent, from the flags (or the file): files are read and checked
/// here, so that a bad one stops the agent before it serves.
fn security(client: &ClientArgs, args: &SecurityArgs, file: &AgentFile) -> Result<Security> {
    let cert = client.tls_cert.clone().or(file.tls_cert.clone());
    let key = client.tls_key.clone().or(file.tls_key.clone());
    let client_ca = args.tls_client_ca.clone().or(file.tls_client_ca.clone());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_pem: read_pem(&cert, "--tls-cert")?,
            key_pem: read_pem(&key, "--tls-key")?,
            client_ca_pem: client_ca
                .map(|ca| read_pem(&ca, "--tls-client-ca"))
                .transpose()?,
            peer_ca_pem: client
                .tls_ca
                .clone()
                .or(file.tls_ca.clone())
                .map(|ca| read_pem(&ca, "--tls-ca"))
                .transpose()?,
        }),
        (None, None) => {
            anyhow::ensure!(
                client_ca.is_none(),
                "--tls-client-ca needs TLS: give --tls-cert and --tls-key too"
            );
            None
        }
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    let tokens_file = args
        .auth_tokens_file
        .clone()
        .or(file.auth_tokens_file.clone());
    let tokens = match (tokens_file, &args.auth_tokens) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the tokens in --auth-tokens-file or STRATA_AUTH_TOKENS, not both")
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read --auth-tokens-file {}", path.display()))?;
            Some(
                BearerTokens::parse(&text)
                    .map_err(|e| anyhow::anyhow!("--auth-tokens-file {}: {e}", path.display()))?,
            )
        }
        (None, Some(tokens)) => Some(
            BearerTokens::parse(tokens).map_err(|e| anyhow::anyhow!("STRATA_AUTH_TOKENS: {e}"))?,
        ),
        (None, None) => None,
    };
    if tokens.is_some() && tls.is_none() {
        tracing::warn!(
            "bearer tokens without TLS: tokens cross the network in the clear; give \
             --tls-cert and --tls-key"
        );
    }
    Ok(Security { tls, tokens })
}

/// Whether ACLs are checked, and who the super users are.
fn authorization(
    args: &SecurityArgs,
    file: &AgentFile,
    security: &Security,
) -> Result<AuthorizationConfig> {
    let acls = match args.authorizer.as_deref().or(file.authorizer.as_deref()) {
        None | Some("none") => false,
        Some("acl") => true,
        Some(other) => anyhow::bail!("--authorizer {other}: use acl or none"),
    };
    let super_users = args
        .super_users
        .as_deref()
        .or(file.super_users.as_deref())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            Principal::parse(p).ok_or_else(|| {
                anyhow::anyhow!("--super-users: '{p}' is not a principal (User:<name>)")
            })
        })
        .collect::<Result<_>>()?;
    if acls {
        let client_certificates = security
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_pem.is_some());
        anyhow::ensure!(
            security.tokens.is_some() || client_certificates,
            "--authorizer acl needs authenticated principals: give tokens of principals \
             (principal:token lines in --auth-tokens-file) or client certificates \
             (--tls-client-ca)"
        );
        anyhow::ensure!(
            !security
                .tokens
                .as_ref()
                .is_some_and(|t| t.has_bare_tokens()),
            "--authorizer acl: every token must belong to a principal (write each as \
             principal:token); a bare token would be allowed everything"
        );
    }
    Ok(AuthorizationConfig { acls, super_users })
}

fn read_file(path: &Path) -> Result<AgentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn agent_config(
    agent_id: String,
    advertise: String,
    tuning: &Tuning,
    limits: Limits,
    file: &AgentFile,
) -> Result<AgentConfig> {
    let defaults = AgentConfig::default();
    let config = AgentConfig {
        limits,
        agent_id,
        advertised_address: advertise,
        segment_max_bytes: tuning
            .segment_bytes
            .or(file.segment_bytes)
            .unwrap_or(defaults.segment_max_bytes),
        linger: tuning
            .linger_ms
            .or(file.linger_ms)
            .map_or(defaults.linger, Duration::from_millis),
        max_pending_bytes: tuning
            .max_pending_bytes
            .or(file.max_pending_bytes)
            .unwrap_or(defaults.max_pending_bytes),
        max_inflight_flushes: tuning
            .max_inflight_flushes
            .or(file.max_inflight_flushes)
            .unwrap_or(defaults.max_inflight_flushes),
        lease_ttl: defaults.lease_ttl,
        zone: String::new(),
        cluster: defaults.cluster,
        kafka_advertised_address: String::new(),
        authorization: defaults.authorization,
    };
    anyhow::ensure!(
        config.max_inflight_flushes > 0,
        "max_inflight_flushes must be positive"
    );
    anyhow::ensure!(
        config.segment_max_bytes > 0,
        "segment_bytes must be positive"
    );
    anyhow::ensure!(
        config.max_pending_bytes >= config.segment_max_bytes,
        "max_pending_bytes ({}) must be at least segment_bytes ({})",
        config.max_pending_bytes,
        config.segment_max_bytes
    );
    Ok(config)
}

fn cache_config(tuning: &Tuning, file: &AgentFile, disk_dir: Option<PathBuf>) -> CacheConfig {
    let defaults = CacheConfig::default();
    CacheConfig {
        memory_bytes: tuning
            .cache_memory_bytes
            .or(file.cache_memory_bytes)
            .unwrap_or(defaults.memory_bytes),
        disk_dir,
        disk_bytes: tuning
            .cache_disk_bytes
            .or(file.cache_disk_bytes)
            .unwrap_or(defaults.disk_bytes),
    }
}

/// `strata dev`.
pub async fn run_dev(args: DevArgs, client: &ClientArgs) -> Result<()> {
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("bad data dir {}", args.data_dir.display()))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let metastore_url = format!("file://{}", data_dir.join("metastore").display());
    let file = AgentFile::default();
    let limits = limits(&args.tuning, &args.stored_limits, &file)?;
    let metastore =
        strata_metastore::open_with(&metastore_url, "dev", limits.stored(), None).await?;
    let store = SegmentStore::open(&ObjectStoreConfig {
        url: format!("file://{}", data_dir.join("objects").display()),
        ..Default::default()
    })
    .await?;
    let security = security(client, &args.security, &file)?;
    let cache = BlockCache::new(&cache_config(
        &args.tuning,
        &file,
        Some(data_dir.join("cache")),
    ))
    .await?;
    let mut config = agent_config(
        "dev".to_string(),
        args.listen.clone(),
        &args.tuning,
        limits,
        &file,
    )?;
    config.authorization = authorization(&args.security, &file, &security)?;
    config.cluster = "dev".to_string();
    let kafka = kafka_listen(
        &args.kafka,
        &file,
        "127.0.0.1:9092",
        &args.listen,
        &security,
    )?;
    if let Some(kafka) = &kafka {
        config.kafka_advertised_address = kafka.advertise.clone();
    }
    tracing::info!(data_dir = %data_dir.display(), "strata dev: embedded metastore, local object store, compactor");
    let compactor = start_dev_compactor(metastore.clone(), store.clone()).await?;
    let listen = Listen {
        grpc: &args.listen,
        metrics: &args.metrics_listen,
        kafka,
        security: &security,
    };
    let served = serve(config, listen, metastore, store, cache).await;
    compactor.shutdown().await;
    served
}

/// The metastore and object store `args` (or the file) name, checked to belong together.
async fn open_cluster(
    args: &StoreArgs,
    file: &AgentFile,
    stored_limits: &Limits,
) -> Result<(Arc<dyn Metastore>, SegmentStore)> {
    let metastore_url = args
        .metastore
        .clone()
        .or(file.metastore.clone())
        .context("no metastore: pass --metastore etcd://host:port (or set STRATA_METASTORE)")?;
    let object_store = args
        .object_store
        .clone()
        .or(file.object_store.clone())
        .context(
            "no object store: pass --object-store s3://bucket/prefix (or set STRATA_OBJECT_STORE)",
        )?;
    let cluster = args
        .cluster
        .clone()
        .or(file.cluster.clone())
        .unwrap_or_else(|| "default".to_string());
    let etcd_max_txn_ops = args.etcd_max_txn_ops.or(file.etcd_max_txn_ops);
    let metastore = strata_metastore::open_with(
        &metastore_url,
        &cluster,
        stored_limits.stored(),
        etcd_max_txn_ops,
    )
    .await?;
    let store = SegmentStore::open(&ObjectStoreConfig {
        url: object_store,
        endpoint: args.s3_endpoint.clone().or(file.s3_endpoint.clone()),
        region: args.s3_region.clone().or(file.s3_region.clone()),
        access_key_id: args.s3_access_key.clone().or(file.s3_access_key.clone()),
        secret_access_key: args.s3_secret_key.clone().or(file.s3_secret_key.clone()),
        path_style: Some(!(args.s3_virtual_hosted || file.s3_virtual_hosted.unwrap_or(false))),
        allow_http: args.s3_allow_http || file.s3_allow_http.unwrap_or(false),
        create_bucket: args.create_bucket || file.create_bucket.unwrap_or(false),
        sign_payload: args.s3_sign_payload || file.s3_sign_payload.unwrap_or(false),
    })
    .await?;
    // One cluster, one object store: segments in two stores would be unreadable from one.
    let ours = store.description().to_string();
    let cluster_store = metastore.claim_object_store(&ours).await?;
    anyhow::ensure!(
        cluster_store == ours,
        "this cluster's segments live in {cluster_store}, but this process was given {ours}: \
         start it with the cluster's object store, or use another --cluster"
    );
    Ok((metastore, store))
}

/// `strata agent`.
pub async fn run_agent(args: AgentArgs, client: &ClientArgs) -> Result<()> {
    let file = match &args.store.config {
        Some(path) => read_file(path)?,
        None => AgentFile::default(),
    };
    let security = security(client, &args.security, &file)?;
    let limits = limits(&args.tuning, &args.store.stored_limits, &file)?;
    let (metastore, store) = open_cluster(&args.store, &file, &limits).await?;
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "0.0.0.0:7070".to_string());
    let advertise = args
        .advertise
        .clone()
        .or(file.advertise.clone())
        .unwrap_or_else(|| listen.clone());
    let agent_id = args
        .agent_id
        .clone()
        .or(file.agent_id.clone())
        .unwrap_or_else(|| format!("agent-{:08x}", rand_id()));
    let cache_dir = args.cache_dir.clone().or(file.cache_dir.clone());
    let cache = BlockCache::new(&cache_config(&args.tuning, &file, cache_dir)).await?;
    let kafka = kafka_listen(&args.kafka, &file, "0.0.0.0:9092", &advertise, &security)?;
    let mut config = agent_config(agent_id, advertise, &args.tuning, limits, &file)?;
    config.authorization = authorization(&args.security, &file, &security)?;
    config.zone = args.zone.clone().or(file.zone.clone()).unwrap_or_default();
    config.cluster = args
        .store
        .cluster
        .clone()
        .or(file.cluster.clone())
        .unwrap_or_else(|| "default".to_string());
    if let Some(kafka) = &kafka {
        config.kafka_advertised_address = kafka.advertise.clone();
    }
    if let Some(secs) = args.lease_ttl_secs.or(file.lease_ttl_secs) {
        anyhow::ensure!(
            secs >= 2,
            "lease_ttl_secs must be at least 2 (etcd's minimum)"
        );
        config.lease_ttl = Duration::from_secs(secs);
    }
    let metrics_listen = args
        .metrics_listen
        .clone()
        .or(file.metrics_listen.clone())
        .unwrap_or_else(|| "0.0.0.0:9090".to_string());
    let listen = Listen {
        grpc: &listen,
        metrics: &metrics_listen,
        kafka,
        security: &security,
    };
    serve(config, listen, metastore, store, cache).await
}

/// `strata compactor`.
pub async fn run_compactor(args: CompactorArgs) -> Result<()> {
    let file = match &args.store.config {
        Some(path) => read_file(path)?,
        None => AgentFile::default(),
    };
    let limits = limits(&Tuning::default(), &args.store.stored_limits, &file)?;
    let (metastore, store) = open_cluster(&args.store, &file, &limits).await?;
    let file_duration = |value: &Option<String>, name: &str| -> Result<Option<Duration>> {
        value
            .as_deref()
            .map(|v| {
                humantime::parse_duration(v)
                    .with_context(|| format!("invalid {name} '{v}' in the config file"))
            })
            .transpose()
    };
    let compactor_id = args
        .compactor_id
        .clone()
        .or(file.compactor_id.clone())
        .unwrap_or_else(|| format!("compactor-{:08x}", rand_id()));
    let mut config = CompactorConfig::new(compactor_id);
    if let Some(d) = args.interval.or(file_duration(
        &file.compactor_interval,
        "compactor_interval",
    )?) {
        config.interval = d;
    }
    if let Some(d) = args
        .orphan_min_age
        .or(file_duration(&file.orphan_min_age, "orphan_min_age")?)
    {
        config.orphan_min_age = d;
    }
    if let Some(d) = args.gc_grace.or(file_duration(&file.gc_grace, "gc_grace")?) {
        config.gc_grace = d;
    }
    config.claim_ttl = args.claim_ttl.unwrap_or(config.claim_ttl);
    config.segment_target_bytes = args
        .merge_segment_bytes
        .unwrap_or(config.segment_target_bytes);
    config.block_target_bytes = args.merge_block_bytes.unwrap_or(config.block_target_bytes);
    config.merge_min_age = args.merge_min_age.unwrap_or(config.merge_min_age);
    config.history_interval = args.history_interval.unwrap_or(config.history_interval);
    if let Some(d) = args
        .archive_interval
        .or(file_duration(&file.archive_interval, "archive_interval")?)
    {
        config.archive_interval = d;
    }
    config.archive_file_bytes = args.archive_file_bytes.unwrap_or(config.archive_file_bytes);
    config.archive_row_group_bytes = args
        .archive_row_group_bytes
        .unwrap_or(config.archive_row_group_bytes);
    config.failpoint = args.failpoint.clone();
    anyhow::ensure!(
        config.claim_ttl >= Duration::from_secs(2),
        "--claim-ttl must be at least 2s (etcd's minimum lease)"
    );
    anyhow::ensure!(
        config.block_target_bytes > 0 && config.segment_target_bytes > 0,
        "--merge-block-bytes and --merge-segment-bytes must be positive"
    );
    anyhow::ensure!(
        config.archive_file_bytes > 0 && config.archive_row_group_bytes > 0,
        "--archive-file-bytes and --archive-row-group-bytes must be positive"
    );
    if args.gc_dry_run {
        let compactor = Compactor::new(config, metastore, store, Arc::new(SystemClock)).await?;
        let orphans = compactor.orphans().await?;
        for orphan in &orphans {
            println!(
                "{}\t{} bytes\t{}s old",
                orphan.name,
                orphan.size,
                orphan.age_ms / 1000
            );
        }
        let bytes: u64 = orphans.iter().map(|o| o.size).sum();
        println!(
            "{} orphaned objects, {bytes} bytes (dry run: nothing deleted)",
            orphans.len()
        );
        return Ok(());
    }
    if args.once {
        let compactor = Compactor::new(config, metastore, store, Arc::new(SystemClock)).await?;
        let report = compactor.run_pass().await;
        println!("{report:?}");
        anyhow::ensure!(
            report.failures == 0,
            "{} compaction jobs failed",
            report.failures
        );
        return Ok(());
    }
    let metrics_listen = args
        .metrics_listen
        .clone()
        .or(file.compactor_metrics_listen.clone())
        .unwrap_or_else(|| "0.0.0.0:9190".to_string());
    let listener = TcpListener::bind(&metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {metrics_listen} for metrics"))?;
    let compactor =
        Arc::new(Compactor::start(config, metastore, store, Arc::new(SystemClock)).await?);
    tracing::info!(metrics = %listener.local_addr()?, "compactor serving metrics at /metrics and health at /health");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(serve_compactor_http(compactor.clone(), listener, stopped));
    shutdown_signal().await;
    let _ = stop.send(true);
    compactor.shutdown().await;
    let _ = http.await;
    Ok(())
}

/// The compactor's HTTP port: `/metrics` (Prometheus text) and `/health`.
async fn serve_compactor_http(
    compactor: Arc<Compactor>,
    listener: TcpListener,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    let metrics = compactor.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let compactor = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        compactor.metrics().render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move || {
                let compactor = compactor.clone();
                async move {
                    let health = compactor.health();
                    let status = if health.serving {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let word = if health.serving {
                        "SERVING"
                    } else {
                        "NOT_SERVING"
                    };
                    (status, format!("{word}: {}\n", health.detail))
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
}

/// The compactor `strata dev` runs beside its agent: short intervals, so retention,
/// compaction and merges show within seconds.
async fn start_dev_compactor(
    metastore: Arc<dyn Metastore>,
    store: SegmentStore,
) -> Result<Compactor> {
    let mut config = CompactorConfig::new("dev-compactor");
    config.interval = Duration::from_secs(5);
    config.merge_min_age = Duration::from_secs(10);
    config.orphan_min_age = Duration::from_secs(600);
    config.gc_grace = Duration::from_secs(60);
    config.archive_interval = Duration::from_secs(10);
    Ok(Compactor::start(config, metastore, store, Arc::new(SystemClock)).await?)
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

/// Where and how an agent serves.
struct Listen<'a> {
    grpc: &'a str,
    metrics: &'a str,
    /// The Kafka listener, unless it is off.
    kafka: Option<KafkaListen>,
    security: &'a Security,
}

/// Where and how the Kafka listener serves.
struct KafkaListen {
    listen: String,
    advertise: String,
    config: strata_kafka::KafkaConfig,
}

/// The Kafka listener the flags (or the file) ask for; `None` with `--kafka-listen off`.
/// It advertises `--kafka-advertise`, or the host clients reach the agent's gRPC on
/// (`grpc_advertise`) with the Kafka listener's port.
fn kafka_listen(
    args: &KafkaArgs,
    file: &AgentFile,
    default_listen: &str,
    grpc_advertise: &str,
    security: &Security,
) -> Result<Option<KafkaListen>> {
    let listen = args
        .kafka_listen
        .clone()
        .or(file.kafka_listen.clone())
        .unwrap_or_else(|| default_listen.to_string());
    if listen == "off" {
        return Ok(None);
    }
    let port = listen
        .rsplit_once(':')
        .map(|(_, port)| port)
        .context("--kafka-listen needs host:port (or off)")?;
    let advertise = match args
        .kafka_advertise
        .clone()
        .or(file.kafka_advertise.clone())
    {
        Some(advertise) => advertise,
        None => {
            let host = grpc_advertise
                .rsplit_once(':')
                .map_or(grpc_advertise, |(host, _)| host);
            if host == "0.0.0.0" || host == "[::]" {
                tracing::warn!(
                    "Kafka listener off: it needs an address clients can reach; give \
                     --kafka-advertise host:port (or --advertise)"
                );
                return Ok(None);
            }
            format!("{host}:{port}")
        }
    };
    let defaults = strata_kafka::KafkaConfig::default();
    let max_request_bytes = args
        .kafka_max_request_bytes
        .or(file.kafka_max_request_bytes)
        .unwrap_or(defaults.max_request_bytes);
    anyhow::ensure!(
        (1024..=1 << 30).contains(&max_request_bytes),
        "--kafka-max-request-bytes must be 1024 to 1073741824"
    );
    let tls = security
        .tls
        .as_ref()
        .map(strata_kafka::server::tls_config)
        .transpose()
        .map_err(|e| anyhow::anyhow!("Kafka listener: {e}"))?;
    Ok(Some(KafkaListen {
        listen,
        advertise,
        config: strata_kafka::KafkaConfig {
            max_request_bytes,
            max_inflight_bytes: defaults.max_inflight_bytes.max(max_request_bytes),
            max_connections: args
                .kafka_max_connections
                .or(file.kafka_max_connections)
                .unwrap_or(defaults.max_connections),
            tls,
            tokens: security.tokens.clone(),
        },
    }))
}

async fn serve(
    config: AgentConfig,
    listen: Listen<'_>,
    metastore: Arc<dyn Metastore>,
    store: SegmentStore,
    cache: BlockCache,
) -> Result<()> {
    let listener = TcpListener::bind(listen.grpc)
        .await
        .with_context(|| format!("cannot listen on {}", listen.grpc))?;
    let metrics_listener = TcpListener::bind(listen.metrics)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", listen.metrics))?;
    let kafka_listener = match &listen.kafka {
        Some(kafka) => Some(
            TcpListener::bind(&kafka.listen)
                .await
                .with_context(|| format!("cannot listen on {} for Kafka", kafka.listen))?,
        ),
        None => None,
    };
    let agent = Agent::start(config, metastore, store, cache, Arc::new(SystemClock)).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        tls = listen.security.tls.is_some(),
        mutual_tls = listen.security.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        tokens = listen.security.tokens.is_some(),
        "serving gRPC, and metrics at /metrics"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let kafka = match (kafka_listener, listen.kafka) {
        (Some(listener), Some(kafka)) => {
            tracing::info!(
                address = %listener.local_addr()?,
                advertised = %kafka.advertise,
                tls = kafka.config.tls.is_some(),
                sasl = kafka.config.tokens.is_some(),
                "serving Kafka clients"
            );
            let mut stopped = stopped.clone();
            Some(tokio::spawn(strata_kafka::serve(
                agent.clone(),
                listener,
                kafka.config,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };
    let console = strata_console::Console::new(console_config(agent.config(), listen.security)?);
    console.start_sampler();
    // With tokens, the console authenticates visitors by token: its port asks no client
    // certificate even where gRPC requires one (browsers seldom hold one).
    let http_tls = listen
        .security
        .tls
        .as_ref()
        .map(|tls| {
            let mut tls = tls.clone();
            if listen.security.tokens.is_some() {
                tls.client_ca_pem = None;
            }
            strata_kafka::server::tls_config(&tls)
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("HTTP port: {e}"))?;
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    let http_address = metrics_listener.local_addr()?;
    tracing::info!(
        "console at {scheme}://{}/",
        reachable(&http_address, &agent.config().advertised_address)
    );
    let metrics = tokio::spawn(strata_console::http::serve(
        metrics_listener,
        http_tls,
        strata_agent::service::metrics_router(agent.clone()).merge(console.router()),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    // On SIGTERM the agent hands off while still answering (produce requests get
    // UNAVAILABLE, so clients move on): it flushes, commits and deregisters; only then
    // does the server stop.
    let serving = strata_agent::service::serve(agent.clone(), listener, listen.security, {
        let agent = agent.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("handing off: flushing, committing, deregistering");
            agent.shutdown().await;
        }
    })
    .await;
    agent.shutdown().await;
    serving?;
    let _ = stop.send(true);
    let _ = metrics.await;
    if let Some(kafka) = kafka {
        let _ = kafka.await;
    }
    if let Some(failure) = agent.failed().borrow().clone() {
        anyhow::bail!("agent {failure}; exiting so that a supervisor restarts it");
    }
    Ok(())
}

/// How the console reaches its own agent: the agent's advertised gRPC address, with the
/// TLS the agent uses toward other agents; and what the agent requires of visitors.
fn console_config(
    config: &AgentConfig,
    security: &Security,
) -> Result<strata_console::ConsoleConfig> {
    let mut connector = strata_client::Connector::new();
    if let Some(tls) = &security.tls {
        connector = connector
            .with_tls(tls.peer_ca_pem.as_deref())
            .with_client_identity(&tls.cert_pem, &tls.key_pem);
    }
    let sampler_token = security
        .tokens
        .as_ref()
        .map(|t| t.agent_token().to_string());
    Ok(strata_console::ConsoleConfig {
        grpc_address: config.advertised_address.clone(),
        connector,
        tokens_required: security.tokens.is_some(),
        certificates_only: security.tokens.is_none()
            && security
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_pem.is_some()),
        sampler_token,
        tls: security.tls.is_some(),
    })
}

/// The address a browser on this machine reaches `bound` at: the advertised host when the
/// port is bound to every interface.
fn reachable(bound: &std::net::SocketAddr, advertised: &str) -> String {
    if bound.ip().is_unspecified() {
        let host = advertised
            .rsplit_once(':')
            .map_or(advertised, |(host, _)| host);
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
