//! Command-line arguments. Every server option can also come from the environment
//! (`STRATA_…`) and, for `strata agent`, from a TOML file (`--config`); flags win over the
//! environment, which wins over the file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: an event log on object storage"
)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How this process reaches agents, and (for an agent) the certificate it serves.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Agent to talk to (user commands): host:port, http://host:port, or https://host:port
    /// for TLS.
    #[arg(long, global = true, env = "STRATA_SERVER", default_value = strata_client::DEFAULT_SERVER)]
    pub server: String,
    /// CA certificate (PEM) trusted for agents' TLS certificates; turns TLS on for user
    /// commands, and is what an agent trusts for other agents [default: the system's
    /// roots].
    #[arg(long, global = true, env = "STRATA_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// This process's TLS certificate (PEM): an agent serves it (and presents it to other
    /// agents); a user command presents it to agents that require client certificates.
    #[arg(
        long,
        global = true,
        env = "STRATA_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "STRATA_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Bearer token sent with every request, for agents that require one.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Who may talk to an agent: TLS (with --tls-cert and --tls-key) and bearer tokens.
#[derive(Debug, Args, Default)]
pub struct SecurityArgs {
    /// Require clients to present a certificate signed by this CA (PEM): mutual TLS.
    /// Needs --tls-cert.
    #[arg(long, env = "STRATA_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require a bearer token on every request: one of the tokens in this file (one per
    /// line, `principal:token` to name whose it is, `#` comments; at least 16 characters
    /// each). The health service stays open.
    #[arg(long, env = "STRATA_AUTH_TOKENS_FILE", value_name = "PATH")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Like --auth-tokens-file, the tokens themselves, comma-separated (prefer the file:
    /// the environment of a process is easier to read than a file).
    #[arg(
        long,
        env = "STRATA_AUTH_TOKENS",
        hide_env_values = true,
        value_name = "TOKENS"
    )]
    pub auth_tokens: Option<String>,
    /// Check ACLs on every request (`acl`): anything no ACL allows is refused. Needs
    /// authenticated principals: `principal:token` lines in the tokens file, or client
    /// certificates (--tls-client-ca). [default: none, every authenticated request is
    /// allowed]
    #[arg(long, env = "STRATA_AUTHORIZER", value_name = "acl|none")]
    pub authorizer: Option<String>,
    /// Principals allowed everything whatever the ACLs say, comma-separated
    /// (`User:admin,ops`).
    #[arg(long, env = "STRATA_SUPER_USERS", value_name = "PRINCIPALS")]
    pub super_users: Option<String>,
}

/// The Kafka listener of `dev` and `agent`.
#[derive(Debug, Args, Default)]
pub struct KafkaArgs {
    /// Kafka protocol listen address, or `off` [default: 0.0.0.0:9092 for an agent,
    /// 127.0.0.1:9092 for dev].
    #[arg(long, env = "STRATA_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// host:port Kafka clients reach this agent on (Metadata lists it) [default: the
    /// host of --advertise with the port of --kafka-listen].
    #[arg(long, env = "STRATA_KAFKA_ADVERTISE")]
    pub kafka_advertise: Option<String>,
    /// Largest Kafka request frame accepted, in bytes (Kafka's socket.request.max.bytes)
    /// [default: 104857600].
    #[arg(long, env = "STRATA_KAFKA_MAX_REQUEST_BYTES")]
    pub kafka_max_request_bytes: Option<usize>,
    /// Most Kafka connections open at once [default: 10000].
    #[arg(long, env = "STRATA_KAFKA_MAX_CONNECTIONS")]
    pub kafka_max_connections: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent with the embedded metastore and a local-directory object store: nothing
    /// to install.
    Dev(Box<DevArgs>),
    /// Run an agent against a real metastore (etcd) and object store (S3).
    Agent(Box<AgentArgs>),
    /// Run a compactor: retention, log compaction, segment merges, orphan GC.
    Compactor(Box<CompactorArgs>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of standard input.
    Produce(ProduceArgs),
    /// Print records of a topic.
    Consume(ConsumeArgs),
    /// Show the agent's counters: segment PUTs, GETs, metastore commits.
    Stats,
    /// Show the compactors running now (passes, totals, last errors) and the jobs they
    /// hold.
    Compactors,
    /// Whether the agent serves (the standard gRPC health check, which needs no token):
    /// prints SERVING and exits 0, or says why not and exits 1. For container health
    /// checks and load balancers.
    Health,
    /// Show the cluster: live agents, the controller, partitions per agent.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Inspect topics' Parquet archives (topics created with archive.enabled=true).
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// List and describe transactional producers' transactions; abort a hanging one.
    #[command(subcommand)]
    Transactions(TransactionsCommand),
    /// Measure throughput, latency and what they cost in requests.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Add, list and remove ACLs (checked by agents run with --authorizer acl).
    #[command(subcommand)]
    Acl(AclCommand),
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allows (or with --deny, forbids) a principal operations on a resource.
    Add(AclArgs),
    /// The ACLs that apply to a resource (or all), optionally of one principal.
    List(AclSelection),
    /// Removes the ACLs these arguments name (every operation unless --operation).
    Remove(AclArgs),
}

/// Which resource: one of --topic, --group, --transactional-id, --cluster.
#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("resource").multiple(false)))]
pub struct AclResource {
    /// A topic (with --prefixed: every topic whose name starts with it; `*`: every topic).
    #[arg(long, group = "resource")]
    pub topic: Option<String>,
    /// A consumer group (as --topic).
    #[arg(long, group = "resource")]
    pub group: Option<String>,
    /// A transactional id (as --topic).
    #[arg(long, group = "resource")]
    pub transactional_id: Option<String>,
    /// The cluster (creating topics, managing ACLs, idempotent producers).
    #[arg(long, group = "resource")]
    pub cluster: bool,
    /// The name is a prefix: every resource whose name starts with it.
    #[arg(long)]
    pub prefixed: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AclArgs {
    /// Whose access: a principal name (`billing`, as in the tokens file), `User:<name>`,
    /// or `*` for everyone.
    #[arg(long)]
    pub principal: String,
    #[command(flatten)]
    pub resource: AclResource,
    /// Operations, comma-separated: read, write, create, delete, alter, describe,
    /// describe-configs, alter-configs, idempotent-write, cluster-action, all.
    #[arg(long, value_delimiter = ',')]
    pub operation: Vec<String>,
    /// Forbid instead of allow (a deny wins over any allow).
    #[arg(long)]
    pub deny: bool,
    /// Only from this client IP address [default: any].
    #[arg(long, default_value = "*")]
    pub host: String,
}

#[derive(Debug, Args, Clone)]
pub struct AclSelection {
    /// Only ACLs of this principal.
    #[arg(long)]
    pub principal: Option<String>,
    #[command(flatten)]
    pub resource: AclResource,
}

#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// Every transactional id with its state, producer id and epoch, and coordinator.
    List,
    /// One transactional id: state, open transaction's partitions and age.
    Describe { transactional_id: String },
    /// Aborts a transactional id's open transaction (a hanging one): its records never
    /// become visible to read_committed readers, and its producer is fenced.
    Abort { transactional_id: String },
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Where a topic's archive is and, per partition, how far it is archived, in how many
    /// files, and how far it trails the log.
    Status { topic: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every group with its state, member count and coordinator.
    List,
    /// A group's members and, per partition, committed offset, log end and lag.
    Describe { group: String },
    /// Move a group's committed offsets of a topic; the group must have no members.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group and its committed offsets; the group must have no members.
    Delete { group: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true)))]
pub struct ResetOffsetsArgs {
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// To each partition's log start.
    #[arg(long, group = "to")]
    pub to_earliest: bool,
    /// To each partition's high watermark.
    #[arg(long, group = "to")]
    pub to_latest: bool,
    /// To this offset in every partition (clamped to the readable range).
    #[arg(long, group = "to", value_name = "N")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time: RFC 3339 (2026-11-22T10:00:00Z) or ms
    /// since the Unix epoch.
    #[arg(long, group = "to", value_name = "TIME")]
    pub to_datetime: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CommitMode {
    /// Commit synchronously after each batch of records is written out (at least once).
    Processed,
    /// Commit in the background every --auto-commit-interval-ms (Kafka's default).
    Auto,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Live agents with their address, zone and partition count, and the controller.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as allowed; latency = send to acknowledgement.
    Produce(BenchProduceArgs),
    /// Consume a topic: catch-up from the log start, or at the tail.
    Consume(BenchConsumeArgs),
    /// Produce at a fixed rate while consuming at the tail; latency = send to receipt.
    E2e(BenchE2eArgs),
    /// The baseline: PUT and GET the same object sizes straight through object_store.
    ObjectStore(BenchObjectStoreArgs),
}

/// Output options of every benchmark.
#[derive(Debug, Args, Clone)]
pub struct BenchOutput {
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// How much to run: a record count or a duration.
#[derive(Debug, Args, Clone)]
pub struct BenchLength {
    /// Stop after this many records.
    #[arg(long, conflicts_with = "duration")]
    pub records: Option<u64>,
    /// Stop after this many seconds [default: 10].
    #[arg(long)]
    pub duration: Option<f64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyDistribution {
    /// No keys: sticky partitioning.
    None,
    /// Uniformly random keys among 10,000.
    Random,
}

#[derive(Debug, Args, Clone)]
pub struct BenchProduceArgs {
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    #[command(flatten)]
    pub length: BenchLength,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Bytes of unacknowledged record values per producer (Kafka's buffer.memory).
    #[arg(long, default_value_t = 4 << 20)]
    pub in_flight_bytes: usize,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    #[arg(long, value_enum, default_value = "none")]
    pub keys: KeyDistribution,
    /// Records per second across all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Producers without idempotence (to measure what it costs).
    #[arg(long, conflicts_with = "transactional_id")]
    pub no_idempotence: bool,
    /// Transactional producers (ids PREFIX-0, PREFIX-1, ...), committing every
    /// --commit-interval-ms; the report adds the commit latency.
    #[arg(long, value_name = "PREFIX")]
    pub transactional_id: Option<String>,
    /// With --transactional-id: how often each producer commits.
    #[arg(long, default_value_t = 100)]
    pub commit_interval_ms: u64,
    #[command(flatten)]
    pub output: BenchOutput,
}

#[derive(Debug, Args, Clone)]
pub struct BenchConsumeArgs {
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Read at the tail (records written from now on) instead of from the log start.
    #[arg(long)]
    pub tail: bool,
    /// Bytes per fetch.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_bytes: i32,
    #[command(flatten)]
    pub length: BenchLength,
    #[command(flatten)]
    pub output: BenchOutput,
}

#[derive(Debug, Args, Clone)]
pub struct BenchE2eArgs {
    #[command(flatten)]
    pub produce: BenchProduceArgs,
}

#[derive(Debug, Args, Clone)]
pub struct BenchObjectStoreArgs {
    /// s3://bucket/prefix, file:///dir or memory://.
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    pub object_store: String,
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "STRATA_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "STRATA_S3_SECRET_KEY")]
    pub s3_secret_key: Option<String>,
    #[arg(long, env = "STRATA_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    #[arg(long, env = "STRATA_CREATE_BUCKET")]
    pub create_bucket: bool,
    /// Bytes per PUT.
    #[arg(long, default_value_t = 4 << 20)]
    pub object_size: usize,
    /// Bytes per ranged GET (each reads a range of a PUT object).
    #[arg(long, default_value_t = 256 << 10)]
    pub get_size: usize,
    /// PUTs in flight (the agent's default --max-inflight-flushes is 4).
    #[arg(long, default_value_t = 4)]
    pub put_concurrency: usize,
    /// GETs in flight (a catch-up consumer reads every partition at once).
    #[arg(long, default_value_t = 16)]
    pub get_concurrency: usize,
    /// Seconds of PUTs, then seconds of GETs.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[command(flatten)]
    pub output: BenchOutput,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where data, metadata and cache live.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    pub data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// HTTP address of the Prometheus metrics (`/metrics`).
    #[arg(long, env = "STRATA_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub stored_limits: StoredLimitArgs,
}

/// Write-path tuning and request limits shared by `dev` and `agent`.
#[derive(Debug, Args, Default)]
pub struct Tuning {
    /// Flush a segment at the latest this many milliseconds after its first record
    /// [default: 50].
    #[arg(long, env = "STRATA_LINGER_MS")]
    pub linger_ms: Option<u64>,
    /// Flush a segment once it holds this many bytes [default: 4194304].
    #[arg(long, env = "STRATA_SEGMENT_BYTES")]
    pub segment_bytes: Option<usize>,
    /// Refuse produce requests while this many bytes wait for the object store
    /// [default: 67108864].
    #[arg(long, env = "STRATA_MAX_PENDING_BYTES")]
    pub max_pending_bytes: Option<usize>,
    /// Segments PUT at once (commits stay in order) [default: 4].
    #[arg(long, env = "STRATA_MAX_INFLIGHT_FLUSHES")]
    pub max_inflight_flushes: Option<usize>,
    /// Memory for the block cache, bytes [default: 268435456].
    #[arg(long, env = "STRATA_CACHE_MEMORY_BYTES")]
    pub cache_memory_bytes: Option<usize>,
    /// Disk for the block cache, bytes [default: 1073741824].
    #[arg(long, env = "STRATA_CACHE_DISK_BYTES")]
    pub cache_disk_bytes: Option<usize>,
    /// Bytes of keys, values and headers in one produce request [default: 33554432].
    #[arg(long, env = "STRATA_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Records in one produce request [default: 100000].
    #[arg(long, env = "STRATA_MAX_REQUEST_RECORDS")]
    pub max_request_records: Option<usize>,
    /// Most bytes one fetch returns; a larger max_bytes is capped to it [default: 52428800].
    #[arg(long, env = "STRATA_MAX_FETCH_BYTES")]
    pub max_fetch_bytes: Option<usize>,
    /// Headers of one record [default: 1000].
    #[arg(long, env = "STRATA_MAX_HEADERS_PER_RECORD")]
    pub max_headers_per_record: Option<usize>,
    /// Bytes of one header key [default: 1024].
    #[arg(long, env = "STRATA_MAX_HEADER_KEY_BYTES")]
    pub max_header_key_bytes: Option<usize>,
    /// Bytes of a group member's subscription, topic names and regex [default: 65536].
    #[arg(long, env = "STRATA_MAX_SUBSCRIPTION_BYTES")]
    pub max_subscription_bytes: Option<usize>,
    /// Members of one consumer group (Kafka's group.max.size) [default: 1000].
    #[arg(long, env = "STRATA_GROUP_MAX_SIZE")]
    pub group_max_size: Option<usize>,
    /// Bytes of a committed offset's metadata (Kafka's offset.metadata.max.bytes)
    /// [default: 4096].
    #[arg(long, env = "STRATA_OFFSET_METADATA_MAX_BYTES")]
    pub offset_metadata_max_bytes: Option<usize>,
    /// Bytes of one group's stored state; keep it well under etcd's request limit (1.5 MiB
    /// by default) [default: 1048576].
    #[arg(long, env = "STRATA_MAX_GROUP_STATE_BYTES")]
    pub max_group_state_bytes: Option<usize>,
    /// Requests of one ProduceSession stream in flight; the stream is not read further
    /// until one completes [default: 1024].
    #[arg(long, env = "STRATA_MAX_SESSION_INFLIGHT")]
    pub max_session_inflight: Option<usize>,
    /// Concurrent streams (calls, Subscribe streams included) on one client connection
    /// [default: 1024].
    #[arg(long, env = "STRATA_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// Idempotent producers one partition remembers (each is a metastore key); a new one
    /// past it is refused until one expires [default: 1000].
    #[arg(long, env = "STRATA_MAX_PRODUCERS_PER_PARTITION")]
    pub max_producers_per_partition: Option<usize>,
    /// How long a partition remembers an idempotent producer that stopped writing to it
    /// (Kafka's producer.id.expiration.ms) [default: 86400000].
    #[arg(long, env = "STRATA_PRODUCER_ID_EXPIRATION_MS")]
    pub producer_id_expiration_ms: Option<u64>,
    /// Transactional ids in the cluster (one metastore record each); a new one past it is
    /// refused [default: 10000].
    #[arg(long, env = "STRATA_MAX_TRANSACTIONAL_IDS")]
    pub max_transactional_ids: Option<usize>,
}

/// Where a cluster's state lives: shared by `agent` and `compactor`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// TOML file with any of the options (same names, with underscores).
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Metastore: etcd://host:port[,host:port], file:///dir or memory://.
    #[arg(long, env = "STRATA_METASTORE")]
    pub metastore: Option<String>,
    /// Object store: s3://bucket/prefix, file:///dir or memory://.
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Cluster name: the metastore key root is /strata/<cluster> [default: default].
    #[arg(long, env = "STRATA_CLUSTER")]
    pub cluster: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:9000 for MinIO [default: AWS].
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1].
    #[arg(long, env = "STRATA_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key [default: AWS_ACCESS_KEY_ID].
    #[arg(long, env = "STRATA_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    /// S3 secret key [default: AWS_SECRET_ACCESS_KEY].
    #[arg(long, env = "STRATA_S3_SECRET_KEY")]
    pub s3_secret_key: Option<String>,
    /// Virtual-hosted-style S3 requests instead of path style [default: path style when an
    /// endpoint is set].
    #[arg(long, env = "STRATA_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
    /// Allow plain-http S3 endpoints.
    #[arg(long, env = "STRATA_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// Create the bucket if it does not exist.
    #[arg(long, env = "STRATA_CREATE_BUCKET")]
    pub create_bucket: bool,
    /// Include the SHA-256 of each S3 request body in its signature (costs CPU; off by
    /// default: blocks carry CRC32C and TLS protects transit).
    #[arg(long, env = "STRATA_S3_SIGN_PAYLOAD")]
    pub s3_sign_payload: bool,
    /// etcd's --max-txn-ops, if it is not 128.
    #[arg(long, env = "STRATA_ETCD_MAX_TXN_OPS")]
    pub etcd_max_txn_ops: Option<usize>,
    #[command(flatten)]
    pub stored_limits: StoredLimitArgs,
}

/// Limits stored state is checked against: agents and compactors of a cluster must be
/// given the same (a topic over them is skipped, not served).
#[derive(Debug, Args, Default, Clone)]
pub struct StoredLimitArgs {
    /// Most partitions of one topic [default: 10000].
    #[arg(long, env = "STRATA_MAX_PARTITIONS_PER_TOPIC")]
    pub max_partitions_per_topic: Option<u32>,
    /// Most partitions of all topics together [default: 100000].
    #[arg(long, env = "STRATA_MAX_PARTITIONS")]
    pub max_partitions: Option<u64>,
    /// Most topics [default: 10000].
    #[arg(long, env = "STRATA_MAX_TOPICS")]
    pub max_topics: Option<u32>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// gRPC listen address [default: 0.0.0.0:7070].
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// HTTP address of the Prometheus metrics (`/metrics`) [default: 0.0.0.0:9090].
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Address clients reach this agent on [default: the listen address].
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Unique agent id [default: random].
    #[arg(long, env = "STRATA_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Directory of the block cache's disk tier [default: none, memory only].
    #[arg(long, env = "STRATA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Availability zone this agent runs in, as it registers [default: none].
    #[arg(long, env = "STRATA_ZONE")]
    pub zone: Option<String>,
    /// TTL of this agent's registration lease, seconds [default: 10]: how long after it
    /// dies (or loses etcd) its partitions move to other agents.
    #[arg(long, env = "STRATA_LEASE_TTL_SECS")]
    pub lease_ttl_secs: Option<u64>,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Debug, Args)]
pub struct CompactorArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Unique compactor id, as its claims name it [default: random].
    #[arg(long, env = "STRATA_COMPACTOR_ID")]
    pub compactor_id: Option<String>,
    /// HTTP address of the compactor's Prometheus metrics (`/metrics`) and health
    /// (`/health`: 200 while passes run on schedule, 503 otherwise) [default:
    /// 0.0.0.0:9190].
    #[arg(long, env = "STRATA_COMPACTOR_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Time between passes over every partition [default: 30s].
    #[arg(long, env = "STRATA_COMPACTOR_INTERVAL", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// How long a dead compactor's claims outlive it (etcd lease TTL) [default: 10s].
    #[arg(long, env = "STRATA_COMPACTOR_CLAIM_TTL", value_parser = humantime::parse_duration)]
    pub claim_ttl: Option<Duration>,
    /// Target size of a merged object, bytes [default: 67108864].
    #[arg(long, env = "STRATA_MERGE_SEGMENT_BYTES")]
    pub merge_segment_bytes: Option<u64>,
    /// Target size of a merged block (one index entry, what a reader fetches at once),
    /// bytes [default: 4194304].
    #[arg(long, env = "STRATA_MERGE_BLOCK_BYTES")]
    pub merge_block_bytes: Option<u64>,
    /// A run of small entries under half a block is merged once its newest record is
    /// this old [default: 60s].
    #[arg(long, env = "STRATA_MERGE_MIN_AGE", value_parser = humantime::parse_duration)]
    pub merge_min_age: Option<Duration>,
    /// Unreferenced objects younger than this are never deleted: their commit may still
    /// be in flight [default: 1h].
    #[arg(long, env = "STRATA_ORPHAN_MIN_AGE", value_parser = humantime::parse_duration)]
    pub orphan_min_age: Option<Duration>,
    /// An unreferenced object is deleted after it was seen unreferenced this long, so
    /// readers holding old index entries keep working [default: 5m].
    #[arg(long, env = "STRATA_GC_GRACE", value_parser = humantime::parse_duration)]
    pub gc_grace: Option<Duration>,
    /// How often the metastore's (etcd's) history is compacted [default: 10m].
    #[arg(long, env = "STRATA_HISTORY_INTERVAL", value_parser = humantime::parse_duration)]
    pub history_interval: Option<Duration>,
    /// The archive of a topic with archive.enabled=true trails its log by at most about
    /// this long (plus one pass) [default: 60s].
    #[arg(long, env = "STRATA_ARCHIVE_INTERVAL", value_parser = humantime::parse_duration)]
    pub archive_interval: Option<Duration>,
    /// Target size of one archive file, in stored log bytes [default: 134217728].
    #[arg(long, env = "STRATA_ARCHIVE_FILE_BYTES")]
    pub archive_file_bytes: Option<u64>,
    /// Target size of one Parquet row group, encoded bytes: what a query engine reads in
    /// parallel and skips by its offset/timestamp statistics [default: 33554432].
    #[arg(long, env = "STRATA_ARCHIVE_ROW_GROUP_BYTES")]
    pub archive_row_group_bytes: Option<u64>,
    /// Run one pass, print what it did, and exit.
    #[arg(long)]
    pub once: bool,
    /// List the objects orphan GC would delete (unreferenced, older than
    /// --orphan-min-age) and exit without deleting anything.
    #[arg(long)]
    pub gc_dry_run: bool,
    /// Test hook: stop dead at this point of a job (merge-put, merge-swap, compact-put,
    /// compact-swap, archive-put) so a test can kill the process there.
    #[arg(long, env = "STRATA_COMPACTOR_FAILPOINT", hide = true)]
    pub failpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// Topic config as key=value (max.message.bytes, compression.type, retention.ms,
        /// retention.bytes, cleanup.policy, delete.retention.ms, min.compaction.lag.ms,
        /// archive.enabled); repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's config and partitions.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
    /// Per partition: the log start, the high watermark, and with --at the first offset at
    /// or after a time (Kafka's ListOffsets).
    Offsets {
        name: String,
        /// RFC 3339 (2026-11-22T10:00:00Z) or ms since the Unix epoch.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Grow a topic to more partitions (keyed records then go to murmur2(key) % N).
    AddPartitions {
        name: String,
        /// The partition count wanted: more than today's.
        #[arg(long)]
        to: i32,
    },
    /// Change a topic's config: set keys, delete others (back to their defaults).
    Alter {
        name: String,
        /// KEY=VALUE to set; repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to delete; repeatable.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete a partition's records below an offset (Kafka's DeleteRecords): its log start
    /// moves there; the compactor removes what lies wholly below.
    DeleteRecords {
        name: String,
        #[arg(long, short)]
        partition: u32,
        /// Records below this offset go; -1 = all (the high watermark).
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    /// Ack once durable in the object store and committed.
    All,
    /// Do not wait for durability.
    None,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    /// Header as key=value, added to every record; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Turn idempotence off (Kafka's enable.idempotence=false): a retry whose first
    /// attempt's outcome was unknown may then be written twice.
    #[arg(long, conflicts_with = "transactional_id")]
    pub no_idempotence: bool,
    /// Produce in transactions of this transactional id: they commit every
    /// --transaction-records lines and at the end; the command fails if a commit does.
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// Lines per transaction (with --transactional-id).
    #[arg(long, default_value_t = 1000, requires = "transactional_id")]
    pub transaction_records: u64,
}

/// What a consumer reads of transactions (Kafka's isolation.level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Every record, committed or not (the default, as Kafka's).
    ReadUncommitted,
    /// Only committed transactions' records, up to the last stable offset.
    ReadCommitted,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at each partition's log start (in a group: where nothing is committed).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (with --partition, or in every partition).
    #[arg(long, conflicts_with = "group")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time, in each partition: RFC 3339
    /// (2026-11-22T10:00:00Z) or ms since the Unix epoch.
    #[arg(long, value_name = "TIME", conflicts_with_all = ["group", "offset", "from_beginning"])]
    pub from_timestamp: Option<String>,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<u32>,
    /// Read as a member of this consumer group: the group's coordinator assigns the
    /// partitions, reading starts at the committed offsets, and runs until interrupted
    /// (or --max-messages).
    #[arg(long)]
    pub group: Option<String>,
    /// Static membership (group.instance.id): restarting with the same id keeps the
    /// member's partitions without a rebalance.
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
    /// When to commit offsets in a group.
    #[arg(long, value_enum, default_value = "processed", requires = "group")]
    pub commit: CommitMode,
    /// With --commit auto.
    #[arg(long, default_value_t = 5000)]
    pub auto_commit_interval_ms: u64,
    /// The member is removed when no heartbeat arrives for this long.
    #[arg(long, default_value_t = 45000)]
    pub session_timeout_ms: u64,
    /// The member is removed when it does not give up a revoked partition for this long.
    #[arg(long, default_value_t = 300000)]
    pub rebalance_timeout_ms: u64,
    /// uniform (sticky, default) or range.
    #[arg(long)]
    pub assignor: Option<String>,
    /// Print each rebalance event (assigned, revoked, released, lost) to standard error as
    /// `rebalance KIND UNIX_MS topic:partition,...`.
    #[arg(long, requires = "group")]
    pub print_rebalances: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// What to read of transactions: read-committed stops at the first open
    /// transaction and leaves out aborted ones.
    #[arg(long, value_enum, default_value = "read-uncommitted")]
    pub isolation: IsolationArg,
    /// Keep reading new records instead of stopping at the end.
    #[arg(long)]
    pub follow: bool,
    /// This consumer's availability zone: it reads from agents of this zone when there
    /// are any (Kafka's client.rack).
    #[arg(long)]
    pub zone: Option<String>,
    /// Output format: %t topic, %p partition, %o offset, %k key, %v value, %T timestamp
    /// (ms), %h headers (k=v,...), \n newline, \t tab. A newline ends each record unless
    /// the format ends with \n. Default: %v.
    #[arg(long, conflicts_with = "json")]
    pub format: Option<String>,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    #[arg(long)]
    pub json: bool,
    /// Print keys, values and header values as base64 (binary-safe).
    #[arg(long)]
    pub base64: bool,
}
