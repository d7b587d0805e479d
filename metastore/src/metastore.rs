//! The [`Metastore`] trait and its one implementation over a [`KvBackend`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::keys::Keys;
use crate::kv::{Compare, KvBackend, Liveness, Op};
use crate::{
    AbortedRange, AclBinding, AgentRecord, ArchiveState, Assignment, CleanState, CommitReport,
    CommittedOffset, CompactorRecord, Coordinatorship, EmbeddedKv, Error, EtcdKv, GroupRecord,
    IndexEntry, PartitionAppend, PartitionOwner, PartitionState, ProducerState, Rejection, Result,
    StoredLimits, TakeOverReport, TopicMeta, TopicPartition, TransactionRecord,
};

/// What agents and the compactor know about the cluster's durable state.
#[async_trait]
pub trait Metastore: Send + Sync + std::fmt::Debug {
    /// Stores a new topic; [`Error::TopicExists`] if the name is taken.
    async fn create_topic(&self, topic: &TopicMeta) -> Result<()>;

    /// A topic's definition, if it exists.
    async fn get_topic(&self, name: &str) -> Result<Option<TopicMeta>>;

    /// Every topic, by name.
    async fn list_topics(&self) -> Result<Vec<TopicMeta>>;

    /// Replaces a topic's definition by `altered` (same name and id), if it is still
    /// `current`; returns whether it did.
    async fn alter_topic(&self, current: &TopicMeta, altered: &TopicMeta) -> Result<bool>;

    /// Notifies whenever a topic is created, deleted or changed (and once at once, and
    /// after a lost watch): read the topics again on each notification.
    async fn watch_topics(&self) -> Result<crate::kv::ChangeWatch>;

    /// Deletes a topic with its partitions' state and index. [`Error::TopicNotFound`] if
    /// there is no such topic.
    async fn delete_topic(&self, name: &str) -> Result<()>;

    /// A partition's committed state.
    async fn partition_state(&self, topic: &str, partition: u32) -> Result<PartitionState>;

    /// The stored owner of each of `partitions` (`None`: never owned, or the topic is
    /// gone), read in as few requests as the backend allows: how an agent finds the
    /// partitions it believes it owns that another agent took meanwhile.
    async fn partition_owners(
        &self,
        partitions: &[(String, u32)],
    ) -> Result<Vec<Option<PartitionOwner>>>;

    /// The committed state of partitions `0..count` of `topic`, read in as few requests as
    /// the backend allows (etcd: one per [`Metastore::max_swap_entries`]/3 partitions or
    /// so), not three per partition.
    async fn partition_states(&self, topic: &str, count: u32) -> Result<Vec<PartitionState>>;

    /// A partition's log start offset alone (one read).
    async fn log_start_offset(&self, topic: &str, partition: u32) -> Result<i64>;

    /// Makes `agent_id` the partition's owner under a new epoch (the old one + 1), fencing
    /// any previous owner, and returns the state it takes over. The topic must still be
    /// incarnation `topic_id` and have the partition: else [`Error::TopicChanged`].
    async fn acquire_partition(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        topic_id: &str,
    ) -> Result<PartitionState>;

    /// Takes `partitions` of `topic` for `agent_id` as [`Metastore::acquire_partition`]
    /// takes one, in as few transactions as the backend allows (etcd: about 127 partitions
    /// each) instead of one per partition: how an agent takes the partitions assigned to
    /// it. Each transaction fences the previous owners of all its partitions or of none;
    /// the partitions of one that fails (a partition or the topic changed meanwhile) are
    /// taken one by one. The report holds each partition's outcome, in order.
    async fn acquire_partitions(
        &self,
        topic: &str,
        partitions: &[u32],
        agent_id: &str,
        topic_id: &str,
    ) -> Result<TakeOverReport>;

    /// Commits one flush: for each append, checks its owner epoch and that it starts at the
    /// high watermark, then advances the high watermark and adds its index entry. Uses one
    /// transaction unless the backend's operation limit forces more. Appends that fail
    /// their check are reported in [`CommitReport::rejected`]; the others commit.
    ///
    /// An `Err` means the outcome is unknown for the appends of the failed transaction:
    /// the caller must not acknowledge them and must re-read the partition state.
    async fn commit_flush(&self, appends: &[PartitionAppend]) -> Result<CommitReport>;

    /// A partition's index entries with `base_offset >= from_base`, in offset order, at
    /// most `limit` (0 = all).
    async fn index_entries(
        &self,
        topic: &str,
        partition: u32,
        from_base: i64,
        limit: usize,
    ) -> Result<Vec<IndexEntry>>;

    /// Replaces `old`, a run of a partition's index entries (consecutive, as stored), by
    /// `new`, entries covering exactly the same offsets (a merge or a log compaction), in
    /// one transaction that compares every old entry: `false` (nothing changed) if any of
    /// them changed meanwhile. At most [`Metastore::max_swap_entries`] old entries.
    async fn replace_index_entries(
        &self,
        topic: &str,
        partition: u32,
        old: &[IndexEntry],
        new: &[IndexEntry],
    ) -> Result<bool>;

    /// Retention: removes `dropped`, the first entries of a partition's index, and moves
    /// the log start offset to the offset after the last of them (unless it is past that
    /// already), in one transaction that
    /// compares them and the log start: `false` (nothing changed) if any changed. At most
    /// [`Metastore::max_swap_entries`] entries.
    async fn truncate_log(
        &self,
        topic: &str,
        partition: u32,
        dropped: &[IndexEntry],
    ) -> Result<bool>;

    /// Moves a partition's log start up to `offset` (Kafka's DeleteRecords; never down,
    /// and only in an existing topic); returns the log start afterwards. The caller checks
    /// that `offset` is at most the high watermark.
    async fn advance_log_start(&self, topic: &str, partition: u32, offset: i64) -> Result<i64>;

    /// The most entries [`Metastore::replace_index_entries`] and
    /// [`Metastore::truncate_log`] take at once (the backend's transaction limit).
    fn max_swap_entries(&self) -> usize;

    /// How far log compaction has cleaned a partition.
    async fn clean_state(&self, topic: &str, partition: u32) -> Result<CleanState>;

    /// Records how far log compaction has cleaned a partition, if the stored state is
    /// still `previous`; returns whether it did.
    async fn store_clean_state(
        &self,
        topic: &str,
        partition: u32,
        previous: &CleanState,
        clean: &CleanState,
    ) -> Result<bool>;

    /// How far a partition is archived as Parquet (the default state if never).
    async fn archive_state(&self, topic: &str, partition: u32) -> Result<ArchiveState>;

    /// Records a partition's archive state, if the stored one is still `previous`; returns
    /// whether it did.
    async fn store_archive_state(
        &self,
        topic: &str,
        partition: u32,
        previous: &ArchiveState,
        state: &ArchiveState,
    ) -> Result<bool>;

    /// Claims a compactor job for `holder`: `None` if another compactor holds it. A job is
    /// named by [`crate::compaction_job`] (one partition) or is `orphan-gc`. The claim
    /// lasts while the returned handle is renewed, as a registration does; release it
    /// when the job is done.
    async fn claim_compaction(
        &self,
        job: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>>;

    /// Every compactor job claimed now: `(job, holder)`.
    async fn compaction_claims(&self) -> Result<Vec<(String, String)>>;

    /// Publishes a compactor's totals: the record lasts while the returned handle renews
    /// it, as a registration does (publish again to update it; drop the old handle).
    async fn publish_compactor(
        &self,
        record: &CompactorRecord,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>>;

    /// The records of the compactors running now.
    async fn compactors(&self) -> Result<Vec<CompactorRecord>>;

    /// Compacts the backend's history (etcd: revisions older than the one
    /// [`Metastore::history_revision`] returned some time ago) up to `revision`.
    async fn compact_history(&self, revision: i64) -> Result<()>;

    /// The backend's current revision (0 for a backend without history).
    async fn history_revision(&self) -> Result<i64>;

    /// Records `object_store` as where this cluster's segments live, unless one is
    /// recorded already; returns the recorded one. Agents refuse to start when it is not
    /// theirs: segments of one cluster in two stores would be unreadable from one of them.
    async fn claim_object_store(&self, object_store: &str) -> Result<String>;

    /// A new agent incarnation number, larger than every one handed out before. Segment
    /// object names carry it, so two incarnations never write the same object.
    async fn next_agent_epoch(&self) -> Result<u64>;

    /// Takes a block of `count` producer ids no one else ever gets and returns its first:
    /// the block is `first..first + count`.
    async fn allocate_producer_ids(&self, count: u64) -> Result<i64>;

    /// The idempotent producers' states of a partition, by producer id (lowest first), at
    /// most `limit` of them (0 = all). Unreadable records are skipped and listed.
    async fn producer_states(
        &self,
        topic: &str,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<(i64, ProducerState)>>;

    /// Registers a live agent: the registration lasts while the returned handle renews it
    /// (etcd: a lease of `ttl`), and ends on [`Liveness::release`] or `ttl` after the agent
    /// stops renewing it (it died or lost etcd).
    async fn register_agent(&self, agent: &AgentRecord, ttl: Duration)
    -> Result<Box<dyn Liveness>>;

    /// The registered agents.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;

    /// Tries to become the controller as `holder` (`agent_id#agent_epoch`): `None` if
    /// another holds the role. The role lasts while the returned handle is renewed, as
    /// a registration does.
    async fn campaign_controller(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>>;

    /// The current controller's holder string, if any.
    async fn controller(&self) -> Result<Option<String>>;

    /// The stored partition assignment, if a controller ever stored one.
    async fn assignment(&self) -> Result<Option<Assignment>>;

    /// Stores `assignment` if `holder` is still the controller; returns whether it did.
    async fn store_assignment(&self, holder: &str, assignment: &Assignment) -> Result<bool>;

    /// Makes `agent_id` the coordinator of group slot `slot` under a new epoch (the old
    /// one + 1), fencing any previous coordinator of the slot.
    async fn acquire_coordinator(&self, slot: u32, agent_id: &str) -> Result<Coordinatorship>;

    /// Every stored group.
    async fn groups(&self) -> Result<Vec<GroupRecord>>;

    /// One group, if stored.
    async fn group(&self, group_id: &str) -> Result<Option<GroupRecord>>;

    /// Stores `group` if `coordinator` still owns its slot; returns whether it did.
    async fn store_group(&self, coordinator: &Coordinatorship, group: &GroupRecord)
    -> Result<bool>;

    /// Deletes a group's record and every committed offset of it, if `coordinator` still
    /// owns its slot; returns whether it did.
    async fn delete_group(&self, coordinator: &Coordinatorship, group_id: &str) -> Result<bool>;

    /// Stores committed offsets `(topic, partition, offset)` of a group if `coordinator`
    /// still owns its slot (false if not). [`Error::TopicNotFound`] if a topic is gone.
    async fn commit_offsets(
        &self,
        coordinator: &Coordinatorship,
        group_id: &str,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> Result<bool>;

    /// Deletes committed offsets `(topic, partition)` of a group if `coordinator` still
    /// owns its slot; returns whether it did.
    async fn delete_offsets(
        &self,
        coordinator: &Coordinatorship,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<bool>;

    /// A group's committed offsets for `topic`, by partition.
    async fn committed_offsets(
        &self,
        group_id: &str,
        topic: &str,
    ) -> Result<Vec<(u32, CommittedOffset)>>;

    /// A transactional id's record, if stored.
    async fn transaction(&self, transactional_id: &str) -> Result<Option<TransactionRecord>>;

    /// Every stored transaction record.
    async fn transactions(&self) -> Result<Vec<TransactionRecord>>;

    /// Replaces a transaction record that still reads as `previous` (`None`: absent) by
    /// `new`, if `coordinator` still owns its slot; with `commit_offsets`, writes the
    /// group offsets of `new` as committed offsets in the same transaction (the commit
    /// point of a transaction). Whether it did.
    async fn store_transaction(
        &self,
        coordinator: &Coordinatorship,
        previous: Option<&TransactionRecord>,
        new: &TransactionRecord,
        commit_offsets: bool,
    ) -> Result<bool>;

    /// A partition's aborted transactions, by first offset.
    async fn aborted_ranges(&self, topic: &str, partition: u32) -> Result<Vec<AbortedRange>>;

    /// The stored records this metastore skipped when it last listed them, `(key,
    /// reason)`: values that do not decode (an older version or a foreign writer wrote
    /// them) or that are over the [`StoredLimits`]. Everything else keeps being served.
    fn unreadable_records(&self) -> Vec<(String, String)>;

    /// Every ACL (at most [`StoredLimits::max_acls`]; more are skipped and reported).
    async fn acls(&self) -> Result<Vec<AclBinding>>;

    /// Stores `acls` at once (those stored already stay as they are);
    /// [`Error::Invalid`] if the ACLs would then number more than
    /// [`StoredLimits::max_acls`].
    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()>;

    /// Deletes `acls` at once; returns those that were stored.
    async fn delete_acls(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>>;

    /// Notifies whenever an ACL is created or deleted (and once at once, and after a lost
    /// watch): read the ACLs again on each notification.
    async fn watch_acls(&self) -> Result<crate::kv::ChangeWatch>;
}

/// Opens the metastore a URL names, under the cluster root `/strata/<cluster>`:
/// - `etcd://host:port[,host:port...]`: etcd;
/// - `file:///path/to/dir` (or a bare path): the embedded store persisted in that directory;
/// - `memory://`: the embedded store, in memory only.
pub async fn open(url: &str, cluster: &str) -> Result<Arc<dyn Metastore>> {
    open_with(url, cluster, StoredLimits::default(), None).await
}

/// [`open`] with the limits stored values are checked against, and etcd's
/// `--max-txn-ops` if it is not etcd's default.
pub async fn open_with(
    url: &str,
    cluster: &str,
    limits: StoredLimits,
    etcd_max_txn_ops: Option<usize>,
) -> Result<Arc<dyn Metastore>> {
    let root = format!("/strata/{cluster}");
    if let Some(endpoints) = url.strip_prefix("etcd://") {
        let endpoints: Vec<String> = endpoints
            .trim_end_matches('/')
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config(format!(
                "'{url}' names no endpoint; use etcd://host:port[,host:port]"
            )));
        }
        let mut kv = EtcdKv::connect(&endpoints).await?;
        if let Some(max_ops) = etcd_max_txn_ops {
            kv = kv.with_max_txn_ops(max_ops);
        }
        Ok(Arc::new(KvMetastore::new(kv, root).with_limits(limits)))
    } else if url == "memory://" {
        Ok(Arc::new(
            KvMetastore::new(EmbeddedKv::in_memory(), root).with_limits(limits),
        ))
    } else if let Some(path) = url
        .strip_prefix("file://")
        .or(Some(url))
        .filter(|p| !p.contains("://"))
    {
        let kv = EmbeddedKv::open(std::path::Path::new(path))?;
        Ok(Arc::new(KvMetastore::new(kv, root).with_limits(limits)))
    } else {
        Err(Error::Config(format!(
            "unsupported metastore URL '{url}'; use etcd://host:port, file:///dir or memory://"
        )))
    }
}

/// The [`Metastore`] over any [`KvBackend`].
///
/// Every value it returns was decoded and checked: a topic's partition count is within
/// [`StoredLimits`], so no caller allocates in proportion to a stored number nobody
/// checked. Listings skip the values that fail (logged once each, kept for
/// [`Metastore::unreadable_records`]); reading one such value by its key is
/// [`Error::Corrupt`].
#[derive(Debug)]
pub struct KvMetastore<B> {
    kv: B,
    keys: Keys,
    limits: StoredLimits,
    /// Skipped stored records: key, reason.
    unreadable: Mutex<BTreeMap<String, String>>,
}

impl<B: KvBackend> KvMetastore<B> {
    /// A metastore keeping its keys under `root` in `kv`, with the default limits.
    pub fn new(kv: B, root: impl Into<String>) -> Self {
        Self {
            kv,
            keys: Keys::new(root),
            limits: StoredLimits::default(),
            unreadable: Mutex::new(BTreeMap::new()),
        }
    }

    /// The same, checking stored values against `limits`.
    pub fn with_limits(mut self, limits: StoredLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Records that `key` was skipped for `reason` (logged the first time).
    fn skip(&self, key: &str, reason: String) {
        let mut unreadable = self.unreadable.lock().expect("unreadable lock");
        if unreadable.get(key) != Some(&reason) {
            tracing::error!(
                key,
                %reason,
                "stored record skipped: it is unreadable or over the limits; everything else \
                 is served (strata cluster status lists it; fix or delete the key)"
            );
            unreadable.insert(key.to_string(), reason);
        }
    }

    /// After a listing of `prefix`: forgets skipped keys under it that were not skipped
    /// again (deleted or fixed since).
    fn forget_skipped(&self, prefix: &str, skipped_now: &BTreeSet<String>) {
        self.unreadable
            .lock()
            .expect("unreadable lock")
            .retain(|key, _| !key.starts_with(prefix) || skipped_now.contains(key));
    }

    /// Decodes a stored topic and checks it: its name is the key's and has no `/`, and
    /// its partition count is 1 to `max_partitions_per_topic`.
    fn check_topic(&self, key: &str, bytes: &[u8]) -> std::result::Result<TopicMeta, String> {
        let meta: TopicMeta = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let keyed = key.strip_prefix(&self.keys.topics_prefix()).unwrap_or(key);
        if meta.name != keyed || meta.name.contains('/') {
            return Err(format!(
                "it names topic '{}' under the key of '{keyed}'",
                meta.name
            ));
        }
        let max = self.limits.max_partitions_per_topic;
        if meta.partitions == 0 || meta.partitions > max {
            return Err(format!(
                "it has {} partitions; a topic has 1 to {max} (max_partitions_per_topic)",
                meta.partitions
            ));
        }
        Ok(meta)
    }

    /// Every value under `prefix` that decodes, in key order, at most `limit` of them
    /// (0 = all); the others are skipped.
    async fn list_checked<T: DeserializeOwned>(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<T>> {
        let mut skipped = BTreeSet::new();
        let mut values = Vec::new();
        for (key, value) in self.kv.range(prefix, prefix, limit).await? {
            match serde_json::from_slice(&value) {
                Ok(decoded) => values.push(decoded),
                Err(e) => {
                    self.skip(&key, e.to_string());
                    skipped.insert(key);
                }
            }
        }
        self.forget_skipped(prefix, &skipped);
        Ok(values)
    }

    /// The key schema in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.kv.get(key).await? {
            Some(bytes) => decode_json(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the JSON value at `key`, a key of one of `topic`'s partitions, by `new`
    /// if it still reads as `previous` (absent = the default value) and the topic exists.
    async fn replace_partition_json<T>(
        &self,
        topic: &str,
        key: String,
        previous: &T,
        new: &T,
    ) -> Result<bool>
    where
        T: DeserializeOwned + Serialize + Default + PartialEq,
    {
        let stored = self.kv.get(&key).await?;
        let current: T = match &stored {
            Some(bytes) => decode_json(&key, bytes)?,
            None => T::default(),
        };
        if current != *previous {
            return Ok(false);
        }
        let guard = Compare::unchanged(&key, stored);
        self.kv
            .txn(
                vec![Compare::Exists(self.keys.topic(topic)), guard],
                vec![Op::Put(key, encode_json(new))],
            )
            .await
    }

    /// The state of partitions `first..first + count` of `topic`, their three keys each
    /// read with [`KvBackend::get_many`] (one etcd request per `max_txn_ops` keys, so one
    /// partition's state is one consistent read).
    /// `topic`'s stored value and metadata, if it is still incarnation `topic_id`
    /// ([`Error::TopicChanged`] if not): what a take-over compares its topic against.
    async fn topic_incarnation(&self, topic: &str, topic_id: &str) -> Result<(Vec<u8>, TopicMeta)> {
        let topic_key = self.keys.topic(topic);
        let Some(stored) = self.kv.get(&topic_key).await? else {
            return Err(Error::TopicNotFound(topic.to_string()));
        };
        let meta = self
            .check_topic(&topic_key, &stored)
            .map_err(|reason| Error::Corrupt {
                key: topic_key.clone(),
                reason,
            })?;
        if meta.topic_id != topic_id {
            return Err(Error::TopicChanged {
                topic: topic.to_string(),
                reason: format!(
                    "it was deleted and created again (id {} is now {})",
                    shown_id(topic_id),
                    shown_id(&meta.topic_id)
                ),
            });
        }
        Ok((stored, meta))
    }

    async fn partition_states_from(
        &self,
        topic: &str,
        first: u32,
        count: u32,
    ) -> Result<Vec<PartitionState>> {
        let partitions: Vec<u32> = (first..first.saturating_add(count)).collect();
        self.partition_states_of(topic, &partitions).await
    }

    /// The committed state of each of `partitions` of `topic`, in order, read in as few
    /// requests as the backend allows.
    async fn partition_states_of(
        &self,
        topic: &str,
        partitions: &[u32],
    ) -> Result<Vec<PartitionState>> {
        let keys: Vec<String> = partitions
            .iter()
            .flat_map(|&p| {
                [
                    self.keys.owner(topic, p),
                    self.keys.log_start(topic, p),
                    self.keys.high_watermark(topic, p),
                    self.keys.last_stable(topic, p),
                ]
            })
            .collect();
        // Each transaction of reads holds whole partitions: a partition's keys are read at
        // one revision.
        let per_request = (self.kv.max_txn_ops() / 4).max(1) * 4;
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(per_request) {
            values.extend(self.kv.get_many(chunk).await?);
        }
        keys.chunks(4)
            .zip(values.chunks(4))
            .map(|(keys, values)| {
                let offset = |i: usize| {
                    values[i]
                        .as_deref()
                        .map_or(Ok(0), |bytes| decode_offset(&keys[i], bytes))
                };
                Ok(PartitionState {
                    owner: values[0]
                        .as_deref()
                        .map(|bytes| decode_json(&keys[0], bytes))
                        .transpose()?,
                    log_start_offset: offset(1)?,
                    high_watermark: offset(2)?,
                    last_stable_offset: match values[3].as_deref() {
                        Some(bytes) => decode_offset(&keys[3], bytes)?.min(offset(2)?),
                        None => offset(2)?,
                    },
                })
            })
            .collect()
    }

    async fn get_offset(&self, key: &str) -> Result<i64> {
        match self.kv.get(key).await? {
            Some(bytes) => decode_offset(key, &bytes),
            None => Ok(0),
        }
    }

    /// The comparisons that hold while `append` is valid.
    fn append_guards(&self, append: &PartitionAppend) -> Vec<Compare> {
        let (topic, partition) = (&append.topic, append.partition);
        let hwm_key = self.keys.high_watermark(topic, partition);
        let hwm = if append.entry.base_offset == 0 {
            Compare::Absent(hwm_key)
        } else {
            Compare::ValueEquals(hwm_key, append.entry.base_offset.to_string().into_bytes())
        };
        vec![
            Compare::ValueEquals(
                self.keys.owner(topic, partition),
                encode_json(&append.owner),
            ),
            hwm,
        ]
    }

    /// Adds `by` to the counter at `key` (absent = 0) unless another writer moved it
    /// meanwhile (then reads it again): its value before and after.
    async fn advance_counter(&self, key: &str, by: i64) -> Result<(i64, i64)> {
        loop {
            let old = self.kv.get(key).await?;
            let before = match &old {
                Some(bytes) => decode_offset(key, bytes)?,
                None => 0,
            };
            let after = before.checked_add(by).ok_or_else(|| Error::Corrupt {
                key: key.to_string(),
                reason: format!("the counter cannot go past {before}"),
            })?;
            let guard = Compare::unchanged(key, old);
            let advanced = self
                .kv
                .txn(
                    vec![guard],
                    vec![Op::Put(key.to_string(), after.to_string().into_bytes())],
                )
                .await?;
            if advanced {
                return Ok((before, after));
            }
        }
    }

    /// The operations of `append`: high watermark, index entry, producer states.
    fn append_ops(&self, append: &PartitionAppend) -> Vec<Op> {
        let (topic, partition) = (&append.topic, append.partition);
        let mut ops = vec![
            Op::Put(
                self.keys.high_watermark(topic, partition),
                (append.entry.last_offset + 1).to_string().into_bytes(),
            ),
            Op::Put(
                self.keys
                    .index_entry(topic, partition, append.entry.base_offset),
                encode_json(&append.entry),
            ),
        ];
        ops.extend(append.producers.iter().map(|(id, state)| {
            Op::Put(
                self.keys.producer_state(topic, partition, *id),
                encode_json(state),
            )
        }));
        ops.extend(
            append
                .expired_producers
                .iter()
                .map(|id| Op::Delete(self.keys.producer_state(topic, partition, *id))),
        );
        if let Some(stable) = append.last_stable_offset {
            let key = self.keys.last_stable(topic, partition);
            ops.push(if stable > append.entry.last_offset {
                Op::Delete(key)
            } else {
                Op::Put(key, stable.to_string().into_bytes())
            });
        }
        ops.extend(append.aborted.iter().map(|range| {
            Op::Put(
                self.keys
                    .aborted_range(topic, partition, range.first_offset),
                encode_json(range),
            )
        }));
        ops
    }

    /// One attempt to make `agent_id` the owner on record at `owner_key` under the next
    /// epoch, if `guards` hold and nobody moved the owner meanwhile: the new owner, or
    /// `None` if the attempt lost.
    async fn take_over(
        &self,
        owner_key: &str,
        agent_id: &str,
        topic_id: &str,
        mut guards: Vec<Compare>,
    ) -> Result<Option<PartitionOwner>> {
        let old = self.kv.get(owner_key).await?;
        let owner = next_owner(owner_key, old.as_deref(), agent_id, topic_id)?;
        guards.push(Compare::unchanged(owner_key, old));
        let taken = self
            .kv
            .txn(
                guards,
                vec![Op::Put(owner_key.to_string(), encode_json(&owner))],
            )
            .await?;
        Ok(taken.then_some(owner))
    }

    /// The comparisons and operations that replace `old` entries by `new` ones.
    fn swap_ops(
        &self,
        topic: &str,
        partition: u32,
        old: &[IndexEntry],
        new: &[IndexEntry],
    ) -> (Vec<Compare>, Vec<Op>) {
        let key = |e: &IndexEntry| self.keys.index_entry(topic, partition, e.base_offset);
        let compares = old
            .iter()
            .map(|e| Compare::ValueEquals(key(e), encode_json(e)))
            .collect();
        // etcd refuses a transaction that deletes and puts the same key: only delete the
        // old keys no new entry takes over.
        let new_keys: std::collections::BTreeSet<String> = new.iter().map(key).collect();
        let mut ops: Vec<Op> = old
            .iter()
            .map(key)
            .filter(|k| !new_keys.contains(k))
            .map(Op::Delete)
            .collect();
        ops.extend(new.iter().map(|e| Op::Put(key(e), encode_json(e))));
        (compares, ops)
    }

    /// Where `acl` is stored.
    fn acl_key(&self, acl: &AclBinding) -> String {
        use base64::Engine as _;
        self.keys
            .acl(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encode_json(acl)))
    }

    /// Holds while `coordinator` still owns its slot.
    fn coordinator_guard(&self, coordinator: &Coordinatorship) -> Compare {
        Compare::ValueEquals(
            self.keys.coordinator(coordinator.slot),
            encode_json(&coordinator.owner),
        )
    }

    /// Applies `ops` in transactions of at most the backend's limit, each guarded by
    /// `guards`; stops with `false` at the first one whose guards fail.
    async fn guarded_chunks(&self, guards: Vec<Compare>, ops: Vec<Op>) -> Result<bool> {
        let per_txn = self.kv.max_txn_ops().max(1);
        for chunk in ops.chunks(per_txn) {
            if !self.kv.txn(guards.clone(), chunk.to_vec()).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Why `append` fails its guards now, if it does.
    async fn check_append(&self, append: &PartitionAppend) -> Result<Option<Rejection>> {
        let (topic, partition) = (&append.topic, append.partition);
        let current: Option<PartitionOwner> =
            self.get_json(&self.keys.owner(topic, partition)).await?;
        if current.as_ref() != Some(&append.owner) {
            return Ok(Some(Rejection::Fenced { current }));
        }
        let high_watermark = self
            .get_offset(&self.keys.high_watermark(topic, partition))
            .await?;
        if high_watermark != append.entry.base_offset {
            return Ok(Some(Rejection::OffsetMismatch { high_watermark }));
        }
        Ok(None)
    }
}

/// Refuses a replacement whose new entries do not cover exactly the old ones' offsets,
/// contiguously: it would open a hole in the log or overlap it.
fn check_same_span(old: &[IndexEntry], new: &[IndexEntry]) -> Result<()> {
    let span = |entries: &[IndexEntry]| -> Option<(i64, i64)> {
        let mut next = entries.first()?.base_offset;
        for e in entries {
            if e.base_offset != next || e.last_offset < e.base_offset {
                return None;
            }
            next = e.last_offset + 1;
        }
        Some((entries.first()?.base_offset, next))
    };
    match (span(old), span(new)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (a, b) => Err(Error::Invalid(format!(
            "index replacement must cover the same contiguous offsets: old {a:?}, new {b:?}"
        ))),
    }
}

/// A topic id in an error message ("none" for a topic created before ids).
fn shown_id(id: &str) -> &str {
    if id.is_empty() { "none" } else { id }
}

/// Checks a stored index entry's numbers, so that no reader's arithmetic on them can
/// overflow: offsets in `0..i64::MAX`, in order, the byte range within `u64`.
fn check_entry(key: &str, entry: &IndexEntry) -> Result<()> {
    let sane = (0..=entry.last_offset).contains(&entry.base_offset)
        && entry.last_offset < i64::MAX
        && entry.byte_start.checked_add(entry.byte_len).is_some();
    if sane {
        Ok(())
    } else {
        Err(Error::Corrupt {
            key: key.to_string(),
            reason: format!(
                "index entry offsets {}..={} or bytes {}+{} are invalid",
                entry.base_offset, entry.last_offset, entry.byte_start, entry.byte_len
            ),
        })
    }
}

fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metastore values always serialize")
}

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The owner record that takes a partition over from `old` (its stored owner record, if
/// any): the next epoch, which fences every earlier owner.
fn next_owner(
    key: &str,
    old: Option<&[u8]>,
    agent_id: &str,
    topic_id: &str,
) -> Result<PartitionOwner> {
    let old_owner: Option<PartitionOwner> = old.map(|bytes| decode_json(key, bytes)).transpose()?;
    Ok(PartitionOwner {
        epoch: old_owner.map_or(1, |o| o.epoch + 1),
        agent_id: agent_id.to_string(),
        topic_id: topic_id.to_string(),
    })
}

fn decode_offset(key: &str, bytes: &[u8]) -> Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_string(),
            reason: "not a decimal offset".to_string(),
        })
}

#[async_trait]
impl<B: KvBackend> Metastore for KvMetastore<B> {
    #[instrument(name = "metastore.create_topic", skip_all, fields(topic = %topic.name))]
    async fn create_topic(&self, topic: &TopicMeta) -> Result<()> {
        let key = self.keys.topic(&topic.name);
        // Nothing is stored that a reader would have to skip.
        self.check_topic(&key, &encode_json(topic))
            .map_err(Error::Invalid)?;
        let created = self
            .kv
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![
                    // Leftovers of an earlier topic of the same name, if a delete was cut short.
                    Op::DeletePrefix(self.keys.topic_partitions_prefix(&topic.name)),
                    Op::DeletePrefix(self.keys.topic_offsets_prefix(&topic.name)),
                    Op::Put(key, encode_json(topic)),
                ],
            )
            .await?;
        if created {
            Ok(())
        } else {
            Err(Error::TopicExists(topic.name.clone()))
        }
    }

    async fn get_topic(&self, name: &str) -> Result<Option<TopicMeta>> {
        let key = self.keys.topic(name);
        let Some(bytes) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        match self.check_topic(&key, &bytes) {
            Ok(meta) => Ok(Some(meta)),
            Err(reason) => {
                self.skip(&key, reason.clone());
                Err(Error::Corrupt { key, reason })
            }
        }
    }

    #[instrument(name = "metastore.list_topics", skip_all)]
    async fn list_topics(&self) -> Result<Vec<TopicMeta>> {
        let prefix = self.keys.topics_prefix();
        let limits = &self.limits;
        // One more than the limit, to see that there are more.
        let stored = self
            .kv
            .range(&prefix, &prefix, limits.max_topics as usize + 1)
            .await?;
        let mut skipped = BTreeSet::new();
        let mut topics = Vec::with_capacity(stored.len());
        let mut partitions = 0u64;
        for (i, (key, value)) in stored.into_iter().enumerate() {
            let checked = self.check_topic(&key, &value).and_then(|meta| {
                if i >= limits.max_topics as usize {
                    Err(format!(
                        "more than {} topic records are stored (max_topics): this one and \
                         those after it are not served",
                        limits.max_topics
                    ))
                } else if partitions + u64::from(meta.partitions) > limits.max_partitions {
                    Err(format!(
                        "its {} partitions would take the cluster past {} partitions \
                         (max_partitions)",
                        meta.partitions, limits.max_partitions
                    ))
                } else {
                    Ok(meta)
                }
            });
            match checked {
                Ok(meta) => {
                    partitions += u64::from(meta.partitions);
                    topics.push(meta);
                }
                Err(reason) => {
                    self.skip(&key, reason);
                    skipped.insert(key);
                }
            }
        }
        self.forget_skipped(&prefix, &skipped);
        Ok(topics)
    }

    async fn watch_topics(&self) -> Result<crate::kv::ChangeWatch> {
        self.kv.watch_prefix(&self.keys.topics_prefix()).await
    }

    #[instrument(name = "metastore.alter_topic", skip_all, fields(topic = %current.name))]
    async fn alter_topic(&self, current: &TopicMeta, altered: &TopicMeta) -> Result<bool> {
        if altered.name != current.name || altered.topic_id != current.topic_id {
            return Err(Error::Invalid(
                "an alteration keeps the topic's name and id".to_string(),
            ));
        }
        let key = self.keys.topic(&current.name);
        let value = encode_json(altered);
        self.check_topic(&key, &value).map_err(Error::Invalid)?;
        self.kv
            .txn(
                vec![Compare::ValueEquals(key.clone(), encode_json(current))],
                vec![Op::Put(key, value)],
            )
            .await
    }

    #[instrument(name = "metastore.delete_topic", skip(self))]
    async fn delete_topic(&self, name: &str) -> Result<()> {
        let key = self.keys.topic(name);
        let deleted = self
            .kv
            .txn(
                vec![Compare::Exists(key.clone())],
                vec![
                    Op::Delete(key),
                    Op::DeletePrefix(self.keys.topic_partitions_prefix(name)),
                    Op::DeletePrefix(self.keys.topic_offsets_prefix(name)),
                ],
            )
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(Error::TopicNotFound(name.to_string()))
        }
    }

    #[instrument(name = "metastore.partition_states", skip(self))]
    async fn partition_states(&self, topic: &str, count: u32) -> Result<Vec<PartitionState>> {
        self.partition_states_from(topic, 0, count).await
    }

    #[instrument(name = "metastore.partition_owners", skip_all, fields(partitions = partitions.len()))]
    async fn partition_owners(
        &self,
        partitions: &[(String, u32)],
    ) -> Result<Vec<Option<PartitionOwner>>> {
        let keys: Vec<String> = partitions
            .iter()
            .map(|(topic, p)| self.keys.owner(topic, *p))
            .collect();
        let values = self.kv.get_many(&keys).await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| {
                value
                    .as_deref()
                    .map(|bytes| decode_json(key, bytes))
                    .transpose()
            })
            .collect()
    }

    #[instrument(name = "metastore.partition_state", skip(self))]
    async fn partition_state(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        // One range of partitions `partition..=partition`: its keys in one request.
        let mut states = self.partition_states_from(topic, partition, 1).await?;
        Ok(states.remove(0))
    }

    async fn log_start_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        self.get_offset(&self.keys.log_start(topic, partition))
            .await
    }

    #[instrument(name = "metastore.acquire_partition", skip(self))]
    async fn acquire_partition(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        topic_id: &str,
    ) -> Result<PartitionState> {
        let topic_key = self.keys.topic(topic);
        let owner_key = self.keys.owner(topic, partition);
        loop {
            // The incarnation asked for, with the partition, and unchanged until taken.
            let (stored, meta) = self.topic_incarnation(topic, topic_id).await?;
            let changed = |reason: String| Error::TopicChanged {
                topic: topic.to_string(),
                reason,
            };
            if partition >= meta.partitions {
                return Err(changed(format!(
                    "it has {} partitions, so no partition {partition}",
                    meta.partitions
                )));
            }
            let guards = vec![Compare::ValueEquals(topic_key.clone(), stored)];
            if let Some(taken) = self
                .take_over(&owner_key, agent_id, topic_id, guards)
                .await?
            {
                // The state read (in one request) must be the one taken over: the topic
                // may have been deleted, or the partition taken by another agent, since.
                let state = self.partition_state(topic, partition).await?;
                return match &state.owner {
                    Some(owner) if *owner == taken => Ok(state),
                    Some(owner) if owner.topic_id == topic_id => Err(Error::TakenOver {
                        topic: topic.to_string(),
                        partition,
                        by: owner.agent_id.clone(),
                    }),
                    _ => Err(changed(
                        "it was deleted while this agent took the partition".to_string(),
                    )),
                };
            }
            // The topic or the owner changed in between: read again and retry.
        }
    }

    #[instrument(name = "metastore.acquire_partitions", skip(self, partitions), fields(partitions = partitions.len()))]
    async fn acquire_partitions(
        &self,
        topic: &str,
        partitions: &[u32],
        agent_id: &str,
        topic_id: &str,
    ) -> Result<TakeOverReport> {
        let topic_key = self.keys.topic(topic);
        let (stored, meta) = self.topic_incarnation(topic, topic_id).await?;
        let changed = |reason: String| Error::TopicChanged {
            topic: topic.to_string(),
            reason,
        };
        let mut outcomes: Vec<Option<Result<PartitionState>>> =
            partitions.iter().map(|_| None).collect();
        let mut valid = Vec::with_capacity(partitions.len());
        for (i, &partition) in partitions.iter().enumerate() {
            if partition >= meta.partitions {
                outcomes[i] = Some(Err(changed(format!(
                    "it has {} partitions, so no partition {partition}",
                    meta.partitions
                ))));
            } else {
                valid.push((i, partition));
            }
        }
        // One comparison of the topic and one of each owner; one write of each owner.
        let per_txn = self.kv.max_txn_ops().saturating_sub(1).max(1);
        let mut transactions = 0;
        for chunk in valid.chunks(per_txn) {
            let owner_keys: Vec<String> = chunk
                .iter()
                .map(|(_, p)| self.keys.owner(topic, *p))
                .collect();
            let old = self.kv.get_many(&owner_keys).await?;
            let mut guards = vec![Compare::ValueEquals(topic_key.clone(), stored.clone())];
            let mut ops = Vec::with_capacity(chunk.len());
            let mut taken = Vec::with_capacity(chunk.len());
            for (key, old) in owner_keys.iter().zip(old) {
                let owner = next_owner(key, old.as_deref(), agent_id, topic_id)?;
                guards.push(Compare::unchanged(key, old));
                ops.push(Op::Put(key.clone(), encode_json(&owner)));
                taken.push(owner);
            }
            transactions += 1;
            if !self.kv.txn(guards, ops).await? {
                // Something changed in between: these are taken one by one, each with
                // its own retries.
                for &(i, partition) in chunk {
                    transactions += 1;
                    outcomes[i] = Some(
                        self.acquire_partition(topic, partition, agent_id, topic_id)
                            .await,
                    );
                }
                continue;
            }
            let numbers: Vec<u32> = chunk.iter().map(|(_, p)| *p).collect();
            let states = self.partition_states_of(topic, &numbers).await?;
            for ((&(i, partition), owner), state) in chunk.iter().zip(taken).zip(states) {
                // As for one partition: the state read must be the one taken over.
                outcomes[i] = Some(match &state.owner {
                    Some(o) if *o == owner => Ok(state),
                    Some(o) if o.topic_id == topic_id => Err(Error::TakenOver {
                        topic: topic.to_string(),
                        partition,
                        by: o.agent_id.clone(),
                    }),
                    _ => Err(changed(
                        "it was deleted while this agent took the partition".to_string(),
                    )),
                });
            }
        }
        Ok(TakeOverReport {
            transactions,
            taken: outcomes
                .into_iter()
                .map(|o| o.expect("every partition has an outcome"))
                .collect(),
        })
    }

    #[instrument(name = "metastore.commit_flush", skip_all, fields(partitions = appends.len()))]
    async fn commit_flush(&self, appends: &[PartitionAppend]) -> Result<CommitReport> {
        // An append takes two comparisons and two operations, plus one per producer
        // state written or deleted, aborted transaction and last stable offset; a
        // transaction holds whole appends, as many as fit.
        let max_ops = self.kv.max_txn_ops().max(2);
        let mut report = CommitReport::default();
        let mut chunks: Vec<Vec<(usize, &PartitionAppend)>> = vec![Vec::new()];
        let mut ops_in_chunk = 0;
        for (index, append) in appends.iter().enumerate() {
            let ops = 2
                + usize::from(append.last_stable_offset.is_some())
                + append.producers.len()
                + append.expired_producers.len()
                + append.aborted.len();
            if ops > max_ops {
                report.rejected.push((
                    index,
                    Rejection::TooLarge {
                        operations: ops,
                        limit: max_ops,
                    },
                ));
                continue;
            }
            if ops_in_chunk + ops > max_ops {
                chunks.push(Vec::new());
                ops_in_chunk = 0;
            }
            ops_in_chunk += ops;
            chunks.last_mut().expect("one chunk").push((index, append));
        }
        for mut pending in chunks {
            while !pending.is_empty() {
                let mut compares = Vec::with_capacity(pending.len() * 2);
                let mut ops = Vec::with_capacity(pending.len() * 2);
                for (_, append) in &pending {
                    compares.extend(self.append_guards(append));
                    ops.extend(self.append_ops(append));
                }
                let bytes: usize = ops
                    .iter()
                    .map(|op| match op {
                        Op::Put(key, value) => key.len() + value.len(),
                        Op::Delete(key) | Op::DeletePrefix(key) => key.len(),
                    })
                    .sum();
                if self.kv.txn(compares, ops).await? {
                    report.transactions += 1;
                    report.bytes += bytes as u64;
                    break;
                }
                // Find the appends whose guards fail, refuse them, retry the rest.
                let mut still_valid = Vec::with_capacity(pending.len());
                for (index, append) in pending {
                    match self.check_append(append).await? {
                        Some(rejection) => report.rejected.push((index, rejection)),
                        None => still_valid.push((index, append)),
                    }
                }
                pending = still_valid;
            }
        }
        Ok(report)
    }

    #[instrument(name = "metastore.index_entries", skip(self))]
    async fn index_entries(
        &self,
        topic: &str,
        partition: u32,
        from_base: i64,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        let prefix = self.keys.index_prefix(topic, partition);
        let from = self.keys.index_entry(topic, partition, from_base.max(0));
        self.kv
            .range(&prefix, &from, limit)
            .await?
            .into_iter()
            .map(|(key, value)| {
                let entry: IndexEntry = decode_json(&key, &value)?;
                check_entry(&key, &entry)?;
                Ok(entry)
            })
            .collect()
    }

    #[instrument(name = "metastore.replace_index_entries", skip(self, old, new), fields(old = old.len(), new = new.len()))]
    async fn replace_index_entries(
        &self,
        topic: &str,
        partition: u32,
        old: &[IndexEntry],
        new: &[IndexEntry],
    ) -> Result<bool> {
        check_same_span(old, new)?;
        let (compares, ops) = self.swap_ops(topic, partition, old, new);
        self.kv.txn(compares, ops).await
    }

    #[instrument(name = "metastore.truncate_log", skip(self, dropped), fields(dropped = dropped.len()))]
    async fn truncate_log(
        &self,
        topic: &str,
        partition: u32,
        dropped: &[IndexEntry],
    ) -> Result<bool> {
        let Some(last) = dropped.last() else {
            return Ok(true);
        };
        let start_key = self.keys.log_start(topic, partition);
        let old_start = self.kv.get(&start_key).await?;
        // A deletion of records may have moved the start past the dropped entries.
        let start = match &old_start {
            Some(bytes) => decode_offset(&start_key, bytes)?,
            None => 0,
        }
        .max(last.last_offset + 1);
        let (mut compares, mut ops) = self.swap_ops(topic, partition, dropped, &[]);
        compares.push(Compare::unchanged(&start_key, old_start));
        ops.push(Op::Put(start_key, start.to_string().into_bytes()));
        self.kv.txn(compares, ops).await
    }

    #[instrument(name = "metastore.advance_log_start", skip(self))]
    async fn advance_log_start(&self, topic: &str, partition: u32, offset: i64) -> Result<i64> {
        let start_key = self.keys.log_start(topic, partition);
        loop {
            let old = self.kv.get(&start_key).await?;
            let start = match &old {
                Some(bytes) => decode_offset(&start_key, bytes)?,
                None => 0,
            };
            if offset <= start {
                return Ok(start);
            }
            let moved = self
                .kv
                .txn(
                    vec![
                        Compare::Exists(self.keys.topic(topic)),
                        Compare::unchanged(&start_key, old),
                    ],
                    vec![Op::Put(start_key.clone(), offset.to_string().into_bytes())],
                )
                .await?;
            if moved {
                return Ok(offset);
            }
            if self.kv.get(&self.keys.topic(topic)).await?.is_none() {
                return Err(Error::TopicNotFound(topic.to_string()));
            }
            // Retention moved it meanwhile: read it again.
        }
    }

    fn max_swap_entries(&self) -> usize {
        // Room for the log start or clean state comparisons beside the entries.
        (self.kv.max_txn_ops().saturating_sub(2)).clamp(1, 1000)
    }

    async fn clean_state(&self, topic: &str, partition: u32) -> Result<CleanState> {
        Ok(self
            .get_json(&self.keys.clean_state(topic, partition))
            .await?
            .unwrap_or_default())
    }

    #[instrument(name = "metastore.store_clean_state", skip(self, previous), fields(cleaned_to = clean.cleaned_to))]
    async fn store_clean_state(
        &self,
        topic: &str,
        partition: u32,
        previous: &CleanState,
        clean: &CleanState,
    ) -> Result<bool> {
        let key = self.keys.clean_state(topic, partition);
        self.replace_partition_json(topic, key, previous, clean)
            .await
    }

    async fn archive_state(&self, topic: &str, partition: u32) -> Result<ArchiveState> {
        Ok(self
            .get_json(&self.keys.archive_state(topic, partition))
            .await?
            .unwrap_or_default())
    }

    #[instrument(name = "metastore.store_archive_state", skip(self, previous), fields(archived_to = state.archived_to, pending = ?state.pending))]
    async fn store_archive_state(
        &self,
        topic: &str,
        partition: u32,
        previous: &ArchiveState,
        state: &ArchiveState,
    ) -> Result<bool> {
        let key = self.keys.archive_state(topic, partition);
        self.replace_partition_json(topic, key, previous, state)
            .await
    }

    #[instrument(name = "metastore.claim_compaction", skip(self))]
    async fn claim_compaction(
        &self,
        job: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>> {
        self.kv
            .create_ephemeral(
                &self.keys.compaction_claim(job),
                holder.as_bytes().to_vec(),
                ttl,
            )
            .await
    }

    async fn compaction_claims(&self) -> Result<Vec<(String, String)>> {
        let prefix = self.keys.compaction_claims_prefix();
        self.kv
            .range(&prefix, &prefix, 0)
            .await?
            .into_iter()
            .map(|(key, value)| {
                let job = key[prefix.len()..].to_string();
                String::from_utf8(value)
                    .map(|holder| (job, holder))
                    .map_err(|e| Error::Corrupt {
                        key,
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    async fn publish_compactor(
        &self,
        record: &CompactorRecord,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>> {
        self.kv
            .put_ephemeral(
                &self.keys.compactor(&record.compactor_id),
                encode_json(record),
                ttl,
            )
            .await
    }

    async fn compactors(&self) -> Result<Vec<CompactorRecord>> {
        self.list_checked(&self.keys.compactors_prefix(), 0).await
    }

    #[instrument(name = "metastore.compact_history", skip(self))]
    async fn compact_history(&self, revision: i64) -> Result<()> {
        self.kv.compact_history(revision).await
    }

    async fn history_revision(&self) -> Result<i64> {
        self.kv.revision().await
    }

    #[instrument(name = "metastore.claim_object_store", skip(self))]
    async fn claim_object_store(&self, object_store: &str) -> Result<String> {
        let key = self.keys.cluster_object_store();
        let claimed = self
            .kv
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![Op::Put(key.clone(), object_store.as_bytes().to_vec())],
            )
            .await?;
        if claimed {
            return Ok(object_store.to_string());
        }
        let stored = self.kv.get(&key).await?.unwrap_or_default();
        String::from_utf8(stored).map_err(|e| Error::Corrupt {
            key,
            reason: e.to_string(),
        })
    }

    #[instrument(name = "metastore.next_agent_epoch", skip(self))]
    async fn next_agent_epoch(&self) -> Result<u64> {
        let (_, next) = self
            .advance_counter(&self.keys.agent_epoch_counter(), 1)
            .await?;
        Ok(next as u64)
    }

    #[instrument(name = "metastore.allocate_producer_ids", skip(self))]
    async fn allocate_producer_ids(&self, count: u64) -> Result<i64> {
        let count = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
        let (first, _) = self
            .advance_counter(&self.keys.producer_id_counter(), count)
            .await?;
        Ok(first)
    }

    #[instrument(name = "metastore.producer_states", skip(self))]
    async fn producer_states(
        &self,
        topic: &str,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<(i64, ProducerState)>> {
        let prefix = self.keys.producers_prefix(topic, partition);
        let mut skipped = BTreeSet::new();
        let mut states = Vec::new();
        for (key, value) in self.kv.range(&prefix, &prefix, limit).await? {
            let decoded = key
                .strip_prefix(&prefix)
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or_else(|| "the key is not a producer id".to_string())
                .and_then(|id| {
                    let state: ProducerState =
                        serde_json::from_slice(&value).map_err(|e| e.to_string())?;
                    if state.batches.len() > crate::PRODUCER_BATCHES_KEPT {
                        return Err(format!(
                            "it holds {} batches; at most {} are kept",
                            state.batches.len(),
                            crate::PRODUCER_BATCHES_KEPT
                        ));
                    }
                    Ok((id, state))
                });
            match decoded {
                Ok(state) => states.push(state),
                Err(reason) => {
                    self.skip(&key, reason);
                    skipped.insert(key);
                }
            }
        }
        self.forget_skipped(&prefix, &skipped);
        Ok(states)
    }

    #[instrument(name = "metastore.register_agent", skip_all, fields(agent = %agent.agent_id))]
    async fn register_agent(
        &self,
        agent: &AgentRecord,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>> {
        self.kv
            .put_ephemeral(&self.keys.agent(&agent.agent_id), encode_json(agent), ttl)
            .await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.list_checked(&self.keys.agents_prefix(), 0).await
    }

    #[instrument(name = "metastore.campaign_controller", skip(self))]
    async fn campaign_controller(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>> {
        self.kv
            .create_ephemeral(&self.keys.controller(), holder.as_bytes().to_vec(), ttl)
            .await
    }

    async fn controller(&self) -> Result<Option<String>> {
        let key = self.keys.controller();
        match self.kv.get(&key).await? {
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    key,
                    reason: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    async fn assignment(&self) -> Result<Option<Assignment>> {
        // An unreadable assignment is as good as none: the controller stores a new one.
        let key = self.keys.assignment();
        match self.get_json(&key).await {
            Err(Error::Corrupt { reason, .. }) => {
                self.skip(&key, reason);
                Ok(None)
            }
            other => other,
        }
    }

    #[instrument(name = "metastore.store_assignment", skip(self, assignment), fields(generation = assignment.generation))]
    async fn store_assignment(&self, holder: &str, assignment: &Assignment) -> Result<bool> {
        self.kv
            .txn(
                vec![Compare::ValueEquals(
                    self.keys.controller(),
                    holder.as_bytes().to_vec(),
                )],
                vec![Op::Put(self.keys.assignment(), encode_json(assignment))],
            )
            .await
    }

    #[instrument(name = "metastore.acquire_coordinator", skip(self))]
    async fn acquire_coordinator(&self, slot: u32, agent_id: &str) -> Result<Coordinatorship> {
        let key = self.keys.coordinator(slot);
        loop {
            if let Some(owner) = self.take_over(&key, agent_id, "", Vec::new()).await? {
                return Ok(Coordinatorship { slot, owner });
            }
        }
    }

    #[instrument(name = "metastore.groups", skip(self))]
    async fn groups(&self) -> Result<Vec<GroupRecord>> {
        self.list_checked(&self.keys.groups_prefix(), 0).await
    }

    #[instrument(name = "metastore.group", skip(self))]
    async fn group(&self, group_id: &str) -> Result<Option<GroupRecord>> {
        self.get_json(&self.keys.group(group_id)).await
    }

    #[instrument(name = "metastore.store_group", skip_all, fields(group = %group.group_id, epoch = group.epoch))]
    async fn store_group(
        &self,
        coordinator: &Coordinatorship,
        group: &GroupRecord,
    ) -> Result<bool> {
        self.kv
            .txn(
                vec![self.coordinator_guard(coordinator)],
                vec![Op::Put(
                    self.keys.group(&group.group_id),
                    encode_json(group),
                )],
            )
            .await
    }

    #[instrument(name = "metastore.delete_group", skip(self, coordinator))]
    async fn delete_group(&self, coordinator: &Coordinatorship, group_id: &str) -> Result<bool> {
        let mut ops: Vec<Op> = self
            .list_topics()
            .await?
            .iter()
            .map(|t| Op::DeletePrefix(self.keys.group_offsets_prefix(&t.name, group_id)))
            .collect();
        // The record goes last: a delete cut short leaves the group listed, to be deleted
        // again.
        ops.push(Op::Delete(self.keys.group(group_id)));
        self.guarded_chunks(vec![self.coordinator_guard(coordinator)], ops)
            .await
    }

    #[instrument(name = "metastore.commit_offsets", skip(self, coordinator, offsets), fields(partitions = offsets.len()))]
    async fn commit_offsets(
        &self,
        coordinator: &Coordinatorship,
        group_id: &str,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> Result<bool> {
        let mut topics: Vec<&str> = offsets.iter().map(|(t, _, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let mut guards = vec![self.coordinator_guard(coordinator)];
        guards.extend(topics.iter().map(|t| Compare::Exists(self.keys.topic(t))));
        let ops = offsets
            .iter()
            .map(|(topic, partition, committed)| {
                Op::Put(
                    self.keys.committed_offset(topic, group_id, *partition),
                    encode_json(committed),
                )
            })
            .collect();
        if self.guarded_chunks(guards, ops).await? {
            return Ok(true);
        }
        // A deleted topic fails the guards too: say which.
        for topic in topics {
            if self.kv.get(&self.keys.topic(topic)).await?.is_none() {
                return Err(Error::TopicNotFound(topic.to_string()));
            }
        }
        Ok(false)
    }

    #[instrument(name = "metastore.delete_offsets", skip(self, coordinator, partitions), fields(partitions = partitions.len()))]
    async fn delete_offsets(
        &self,
        coordinator: &Coordinatorship,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<bool> {
        let ops = partitions
            .iter()
            .map(|(topic, partition)| {
                Op::Delete(self.keys.committed_offset(topic, group_id, *partition))
            })
            .collect();
        self.guarded_chunks(vec![self.coordinator_guard(coordinator)], ops)
            .await
    }

    #[instrument(name = "metastore.transaction", skip(self))]
    async fn transaction(&self, transactional_id: &str) -> Result<Option<TransactionRecord>> {
        self.get_json(&self.keys.transaction(transactional_id))
            .await
    }

    #[instrument(name = "metastore.transactions", skip(self))]
    async fn transactions(&self) -> Result<Vec<TransactionRecord>> {
        self.list_checked(&self.keys.transactions_prefix(), 0).await
    }

    #[instrument(name = "metastore.acls", skip_all)]
    async fn acls(&self) -> Result<Vec<AclBinding>> {
        let max = self.limits.max_acls as usize;
        let prefix = self.keys.acls_prefix();
        let stored = self.kv.range(&prefix, &prefix, max + 1).await?;
        if stored.len() > max {
            self.skip(
                &stored[max].0,
                format!(
                    "more than {max} ACLs are stored (max_acls): this one and any after are ignored"
                ),
            );
        }
        self.list_checked(&prefix, max).await
    }

    #[instrument(name = "metastore.create_acls", skip_all, fields(count = acls.len()))]
    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let max = self.limits.max_acls as usize;
        let prefix = self.keys.acls_prefix();
        let keys: Vec<String> = acls.iter().map(|acl| self.acl_key(acl)).collect();
        let stored = self.kv.get_many(&keys).await?;
        let new: Vec<(String, &AclBinding)> = keys
            .into_iter()
            .zip(acls)
            .zip(&stored)
            .filter(|(_, existing)| existing.is_none())
            .map(|(pair, _)| pair)
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let count = self.kv.range(&prefix, &prefix, max + 1).await?.len();
        if count + new.len() > max {
            return Err(Error::Invalid(format!(
                "{count} ACLs are stored and {} more would pass the limit of {max} \
                 (max_acls): delete ACLs no longer needed, or use prefixed ones",
                new.len()
            )));
        }
        // Putting an ACL stored meanwhile (another creation raced) changes nothing.
        let ops = new
            .iter()
            .map(|(key, acl)| Op::Put(key.clone(), encode_json(acl)))
            .collect();
        self.guarded_chunks(Vec::new(), ops).await.map(|_| ())
    }

    #[instrument(name = "metastore.delete_acls", skip_all, fields(count = acls.len()))]
    async fn delete_acls(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>> {
        let keys: Vec<String> = acls.iter().map(|acl| self.acl_key(acl)).collect();
        let stored = self.kv.get_many(&keys).await?;
        let mut deleted = Vec::new();
        let mut ops = Vec::new();
        for ((key, acl), existing) in keys.into_iter().zip(acls).zip(stored) {
            if existing.is_some() && !deleted.contains(acl) {
                deleted.push(acl.clone());
                ops.push(Op::Delete(key));
            }
        }
        if !ops.is_empty() {
            self.guarded_chunks(Vec::new(), ops).await?;
        }
        Ok(deleted)
    }

    async fn watch_acls(&self) -> Result<crate::kv::ChangeWatch> {
        self.kv.watch_prefix(&self.keys.acls_prefix()).await
    }

    #[instrument(name = "metastore.store_transaction", skip_all, fields(id = %new.transactional_id, status = new.status.name()))]
    async fn store_transaction(
        &self,
        coordinator: &Coordinatorship,
        previous: Option<&TransactionRecord>,
        new: &TransactionRecord,
        commit_offsets: bool,
    ) -> Result<bool> {
        let key = self.keys.transaction(&new.transactional_id);
        let unchanged = match previous {
            Some(previous) => Compare::ValueEquals(key.clone(), encode_json(previous)),
            None => Compare::Absent(key.clone()),
        };
        let mut ops = vec![Op::Put(key, encode_json(new))];
        if commit_offsets {
            for (group, offsets) in &new.offsets {
                ops.extend(offsets.iter().map(|(topic, partition, committed)| {
                    Op::Put(
                        self.keys.committed_offset(topic, group, *partition),
                        encode_json(committed),
                    )
                }));
            }
        }
        if ops.len() > self.kv.max_txn_ops() {
            return Err(Error::Unavailable(format!(
                "the transaction's {} offsets do not fit one metastore transaction ({} \
                 operations)",
                ops.len() - 1,
                self.kv.max_txn_ops()
            )));
        }
        self.kv
            .txn(vec![self.coordinator_guard(coordinator), unchanged], ops)
            .await
    }

    #[instrument(name = "metastore.aborted_ranges", skip(self))]
    async fn aborted_ranges(&self, topic: &str, partition: u32) -> Result<Vec<AbortedRange>> {
        self.list_checked(&self.keys.aborted_prefix(topic, partition), 0)
            .await
    }

    #[instrument(name = "metastore.committed_offsets", skip(self))]
    async fn committed_offsets(
        &self,
        group_id: &str,
        topic: &str,
    ) -> Result<Vec<(u32, CommittedOffset)>> {
        let prefix = self.keys.group_offsets_prefix(topic, group_id);
        let mut offsets = self
            .kv
            .range(&prefix, &prefix, 0)
            .await?
            .into_iter()
            .map(|(key, value)| {
                let partition = key[prefix.len()..].parse().map_err(|_| Error::Corrupt {
                    key: key.clone(),
                    reason: "not a partition number".to_string(),
                })?;
                Ok((partition, decode_json(&key, &value)?))
            })
            .collect::<Result<Vec<(u32, CommittedOffset)>>>()?;
        offsets.sort_by_key(|(p, _)| *p);
        Ok(offsets)
    }

    fn unreadable_records(&self) -> Vec<(String, String)> {
        self.unreadable
            .lock()
            .expect("unreadable lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: u32) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            topic_id: String::new(),
            partitions,
            config: BTreeMap::new(),
            created_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn acls_are_bounded() {
        use crate::{AclOperation, AclPermission, PatternType, ResourceType};
        let store = KvMetastore::new(EmbeddedKv::in_memory(), "/t").with_limits(StoredLimits {
            max_acls: 3,
            ..StoredLimits::default()
        });
        let acl = |name: &str| AclBinding {
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Literal,
            resource_name: name.to_string(),
            principal: "User:a".to_string(),
            host: "*".to_string(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        store.create_acls(&[acl("a"), acl("b")]).await.unwrap();
        let refused = store.create_acls(&[acl("c"), acl("d")]).await.unwrap_err();
        assert!(refused.to_string().contains("max_acls"), "{refused}");
        // Nothing of a refused request is stored; an ACL stored already costs nothing.
        assert_eq!(store.acls().await.unwrap().len(), 2);
        store.create_acls(&[acl("a"), acl("c")]).await.unwrap();
        assert_eq!(store.acls().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn stored_records_over_the_limits_or_unreadable_are_skipped_and_listed() {
        let store = KvMetastore::new(EmbeddedKv::in_memory(), "/t").with_limits(StoredLimits {
            max_partitions_per_topic: 100,
            max_partitions: 150,
            max_topics: 6,
            max_acls: 3,
        });
        store.create_topic(&topic("a", 10)).await.unwrap();
        assert!(matches!(
            store.create_topic(&topic("huge", 101)).await,
            Err(Error::Invalid(_))
        ));
        // Written straight into the store, as an older version or a hand could.
        let raw = |name: &str, value: Vec<u8>| Op::Put(store.keys.topic(name), value);
        store
            .kv
            .txn(
                vec![],
                vec![
                    raw("b", encode_json(&topic("b", u32::MAX))),
                    raw("c", b"{not json".to_vec()),
                    raw("d", encode_json(&topic("other-name", 1))),
                    raw("e", encode_json(&topic("e", 100))),
                    raw("f", encode_json(&topic("f", 50))),
                    raw("g", encode_json(&topic("g", 1))),
                    raw("h", encode_json(&topic("h", 1))),
                ],
            )
            .await
            .unwrap();
        let names: Vec<String> = store
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        // a (10) and e (100) fit; f would pass 150 partitions; g is the seventh record,
        // past max_topics (and h is not even read).
        assert_eq!(names, ["a", "e"]);
        let skipped: BTreeMap<String, String> = store.unreadable_records().into_iter().collect();
        let reason = |name: &str| skipped[&store.keys.topic(name)].clone();
        assert!(
            reason("b").contains("max_partitions_per_topic"),
            "{skipped:?}"
        );
        assert!(reason("c").contains("line 1"), "{skipped:?}");
        assert!(reason("d").contains("other-name"), "{skipped:?}");
        assert!(reason("f").contains("max_partitions"), "{skipped:?}");
        assert!(reason("g").contains("max_topics"), "{skipped:?}");
        assert!(matches!(
            store.get_topic("b").await,
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(store.get_topic("e").await.unwrap().unwrap().partitions, 100);
        // Deleting the bad ones works and clears them from the list.
        for name in ["b", "c", "d", "f", "g", "h"] {
            store.delete_topic(name).await.unwrap();
        }
        store.list_topics().await.unwrap();
        assert!(
            store.unreadable_records().is_empty(),
            "{:?}",
            store.unreadable_records()
        );
    }

    /// Fuzzing of every value the metastore reads: any bytes under any key (random, or a
    /// valid value damaged) make its readers return a value or `Corrupt`, never panic,
    /// and never a topic over the limits. `PROPTEST_CASES` sets how many cases.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// Valid values of every kind the metastore stores, as JSON.
        fn valid_values() -> Vec<Vec<u8>> {
            let owner = PartitionOwner {
                epoch: 3,
                agent_id: "a".into(),
                topic_id: "id".into(),
            };
            let entry = IndexEntry {
                base_offset: 10,
                last_offset: 19,
                object: "segments/o.seg".into(),
                byte_start: 0,
                byte_len: 100,
                max_timestamp_ms: 5,
                appended_at_ms: 6,
                topic_id: String::new(),
            };
            let mut group = GroupRecord {
                group_id: "g".into(),
                ..Default::default()
            };
            group.members.insert(
                "m".into(),
                crate::MemberRecord {
                    member_id: "m".into(),
                    assigned: [("t".to_string(), 0)].into_iter().collect(),
                    ..Default::default()
                },
            );
            vec![
                encode_json(&topic("t", 3)),
                encode_json(&owner),
                encode_json(&entry),
                encode_json(&CleanState {
                    cleaned_to: 4,
                    oldest_tombstone_ms: Some(1),
                }),
                encode_json(&ArchiveState::default()),
                encode_json(&AgentRecord {
                    agent_id: "a".into(),
                    address: "h:1".into(),
                    zone: String::new(),
                    kafka_address: String::new(),
                    node_id: 1,
                }),
                encode_json(&Assignment::default()),
                encode_json(&group),
                encode_json(&CommittedOffset {
                    offset: 1,
                    metadata: "m".into(),
                    committed_at_ms: 2,
                }),
                b"42".to_vec(),
            ]
        }

        /// Stored bytes: random, or a valid value with bytes flipped, cut or inserted.
        fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
            let damaged = (0..valid_values().len(), any::<usize>(), any::<u8>(), 0u8..3).prop_map(
                |(which, at, byte, how)| {
                    let mut value = valid_values()[which].clone();
                    let at = at % value.len();
                    match how {
                        0 => value[at] ^= byte | 1,
                        1 => value.truncate(at),
                        _ => value.insert(at, byte),
                    }
                    value
                },
            );
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                damaged,
                (0..valid_values().len()).prop_map(|i| valid_values()[i].clone()),
            ]
        }

        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            #[test]
            fn every_reader_survives_any_stored_bytes(
                values in proptest::collection::vec(stored_bytes(), 11),
                partitions in prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(async {
                    let store = KvMetastore::new(EmbeddedKv::in_memory(), "/f");
                    let keys = &store.keys;
                    let mut values = values.into_iter();
                    let mut next = || values.next().unwrap();
                    let ops = vec![
                        Op::Put(keys.topic("t"), next()),
                        Op::Put(keys.topic("u"), encode_json(&topic("u", partitions))),
                        Op::Put(keys.owner("t", 0), next()),
                        Op::Put(keys.high_watermark("t", 0), next()),
                        Op::Put(keys.log_start("t", 0), next()),
                        Op::Put(keys.index_entry("t", 0, 0), next()),
                        Op::Put(keys.clean_state("t", 0), next()),
                        Op::Put(keys.archive_state("t", 0), next()),
                        Op::Put(keys.agent("a"), next()),
                        Op::Put(keys.assignment(), next()),
                        Op::Put(keys.group("g"), next()),
                        Op::Put(keys.committed_offset("t", "g", 0), next()),
                    ];
                    store.kv.txn(vec![], ops).await.unwrap();
                    let ok_or_corrupt = |what: &str, result: Result<()>| match result {
                        Ok(()) | Err(Error::Corrupt { .. }) => {}
                        Err(e) => panic!("{what}: {e}"),
                    };
                    for topic in store.list_topics().await.unwrap() {
                        assert!(topic.partitions >= 1);
                        assert!(topic.partitions <= store.limits.max_partitions_per_topic);
                    }
                    ok_or_corrupt("get_topic", store.get_topic("t").await.map(drop));
                    ok_or_corrupt("partition_state", store.partition_state("t", 0).await.map(drop));
                    ok_or_corrupt("index_entries", store.index_entries("t", 0, 0, 0).await.map(drop));
                    ok_or_corrupt("clean_state", store.clean_state("t", 0).await.map(drop));
                    ok_or_corrupt("archive_state", store.archive_state("t", 0).await.map(drop));
                    ok_or_corrupt("committed_offsets", store.committed_offsets("g", "t").await.map(drop));
                    ok_or_corrupt("group", store.group("g").await.map(drop));
                    // Listings skip what does not decode; the assignment is replaced.
                    store.list_agents().await.unwrap();
                    store.groups().await.unwrap();
                    store.assignment().await.unwrap();
                    let acquired = store.acquire_partition("t", 0, "b", "").await;
                    if !matches!(acquired, Err(Error::TopicChanged { .. })) {
                        ok_or_corrupt("acquire_partition", acquired.map(drop));
                    }
                });
            }
        }
    }
}
