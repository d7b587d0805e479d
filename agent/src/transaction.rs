//! Transaction coordination (Kafka's transactional producer, KIP-98): the steps of a
//! transaction as its coordinator takes them. The design, with its costs, is
//! docs/DESIGN.md ("Exactly once").
//!
//! A transactional id's coordinator is the agent holding its coordinator slot (the slots
//! group coordinators use). Its state is one metastore record, written at each step in a
//! transaction that compares the record as read and the slot's owner, so:
//! - a coordinator that lost its slot writes nothing, and two requests of one id never
//!   both apply to one state (the loser gets CONCURRENT_TRANSACTIONS and retries);
//! - the decision to commit (or abort) is one write (`PrepareCommit` with the group
//!   offsets, or `PrepareAbort`); whoever holds the slot next finishes a prepared
//!   transaction: markers in every partition (each written once: a marker for a closed
//!   transaction writes nothing), then `CompleteCommit`/`CompleteAbort`;
//! - `init_transactions` and the timeout bump the epoch: every batch, marker request and
//!   end of the older epoch is refused from then on (fenced).
//!
//! The marker fan-out and the periodic sweep (timeouts, prepared transactions of slots
//! taken over) are in [`crate::service`], which holds the channels to other agents; the
//! Kafka listener reaches them through [`TransactionRouter`], which the service installs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use strata_metastore::{
    CommittedOffset, Coordinatorship, TransactionRecord, TransactionStatus, TransactionTopic,
};

use crate::agent::Agent;
use crate::controller::coordinator_slot;
use crate::{Error, Result};

/// `transaction.timeout.ms` when the producer gives none (Kafka's default).
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 60_000;
/// Longest `transaction.timeout.ms` accepted (Kafka's `transaction.max.timeout.ms`).
pub const MAX_TRANSACTION_TIMEOUT_MS: u64 = 900_000;
/// Most partitions in one transaction: its record is one metastore value.
pub const MAX_TRANSACTION_PARTITIONS: usize = 1_000;
/// How long a prepared transaction is left to whoever prepared it before the sweeper
/// finishes it (its coordinator died, or the slot moved).
const PREPARED_GRACE_MS: i64 = 5_000;
/// Most group offsets in one transaction: they are written with the commit decision, in
/// one metastore transaction (etcd allows 128 operations by default).
pub const MAX_TRANSACTION_OFFSETS: usize = 100;

/// What only the gRPC service can do for a transaction, because it holds the channels to
/// other agents: write a prepared transaction's markers at the partitions' owners, and
/// add offsets at the transactional id's coordinator wherever it is. The service installs
/// itself ([`Agent::set_transaction_router`]); the Kafka listener uses it through
/// [`Agent::finish_transaction`] and [`Agent::add_offsets_at_coordinator`].
#[tonic::async_trait]
pub trait TransactionRouter: Send + Sync + std::fmt::Debug {
    /// Writes every marker of the prepared `record`, then records it complete.
    async fn finish(&self, record: TransactionRecord) -> Result<()>;
    /// Adds a group's offsets to `producer`'s transaction at its coordinator.
    async fn add_offsets(
        &self,
        producer: TransactionalProducer,
        group_id: String,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> Result<()>;
}

impl Agent {
    /// Installs what finishes transactions and reaches their coordinators (the gRPC
    /// service does, once, at start).
    pub fn set_transaction_router(&self, router: Arc<dyn TransactionRouter>) {
        let _ = self.inner.transaction_router.set(router);
    }

    fn router(&self) -> Result<&Arc<dyn TransactionRouter>> {
        self.inner.transaction_router.get().ok_or_else(|| {
            Error::Unavailable("this agent's transaction service is not running yet; retry".into())
        })
    }

    /// Writes every marker of a prepared transaction and records it complete.
    pub async fn finish_transaction(&self, record: TransactionRecord) -> Result<()> {
        self.router()?.finish(record).await
    }

    /// Takes a transactional id ([`Agent::init_transactions`]), first finishing a
    /// transaction of it that is prepared or was just aborted.
    pub async fn init_transactions_finishing(
        &self,
        id: &str,
        timeout_ms: i64,
    ) -> Result<(i64, i16)> {
        for _ in 0..4 {
            match self.init_transactions(id, timeout_ms).await? {
                InitOutcome::Ready(producer_id, epoch) => return Ok((producer_id, epoch)),
                InitOutcome::Finish(record) => self.finish_transaction(record).await?,
            }
        }
        Err(Error::ConcurrentTransactions(id.to_string()))
    }

    /// Ends `producer`'s transaction ([`Agent::end_transaction`]) and writes its markers.
    pub async fn end_transaction_finishing(
        &self,
        producer: &TransactionalProducer,
        commit: bool,
    ) -> Result<()> {
        if let Some(prepared) = self.end_transaction(producer, commit).await? {
            self.finish_transaction(prepared).await?;
        }
        Ok(())
    }

    /// Adds a group's offsets to `producer`'s transaction at its coordinator, this agent
    /// or another (Kafka's TxnOffsetCommit arrives at the group's coordinator).
    pub async fn add_offsets_at_coordinator(
        &self,
        producer: TransactionalProducer,
        group_id: String,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> Result<()> {
        if self.coordinates(&producer.transactional_id) {
            return self
                .add_offsets_to_transaction(&producer, &group_id, &offsets)
                .await;
        }
        self.router()?
            .add_offsets(producer, group_id, offsets)
            .await
    }
}

/// The producer a transactional request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionalProducer {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
}

/// What `init_transactions` needs next.
#[derive(Debug)]
pub enum InitOutcome {
    /// The producer id and epoch to use.
    Ready(i64, i16),
    /// A transaction of the id is prepared (or was just aborted to fence its producer):
    /// finish it ([`Agent::finish_transaction`]'s markers), then ask again.
    Finish(TransactionRecord),
}

/// One lock per transactional id on its coordinator: its steps run one at a time here
/// (across agents, the record's comparison orders them).
#[derive(Debug, Default)]
pub(crate) struct TransactionLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn check_transactional_id(id: &str) -> Result<()> {
    crate::topic::validate_key_part("transactional id", id)
}

impl Agent {
    async fn transaction_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .inner
            .transaction_locks
            .locks
            .lock()
            .expect("transaction locks")
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Replaces `previous` by `new` under `lease`; NOT_COORDINATOR if the slot was lost,
    /// CONCURRENT_TRANSACTIONS if the record changed meanwhile.
    async fn replace_transaction(
        &self,
        lease: &Coordinatorship,
        previous: Option<&TransactionRecord>,
        new: &TransactionRecord,
        commit_offsets: bool,
    ) -> Result<()> {
        let metastore = &self.inner.metastore;
        if metastore
            .store_transaction(lease, previous, new, commit_offsets)
            .await?
        {
            return Ok(());
        }
        let id = &new.transactional_id;
        if metastore.transaction(id).await?.as_ref() != previous {
            return Err(Error::ConcurrentTransactions(id.clone()));
        }
        Err(self.inner.lose_lease(lease, id).await)
    }

    /// The record of `producer`'s transactional id, checked: it exists, and the producer
    /// holds its producer id and current epoch.
    async fn producer_record(
        &self,
        producer: &TransactionalProducer,
    ) -> Result<(Coordinatorship, TransactionRecord)> {
        check_transactional_id(&producer.transactional_id)?;
        let lease = self
            .inner
            .coordinator_lease(&producer.transactional_id)
            .await?;
        let record = self
            .inner
            .metastore
            .transaction(&producer.transactional_id)
            .await?
            .ok_or_else(|| Error::UnknownTransactionalId(producer.transactional_id.clone()))?;
        if record.producer_id != producer.producer_id || record.epoch != producer.epoch {
            if record.timed_out && record.epoch == producer.epoch.saturating_add(1) {
                return Err(Error::TransactionTimedOut {
                    transactional_id: producer.transactional_id.clone(),
                    timeout_ms: record.timeout_ms,
                });
            }
            return Err(Error::ProducerFenced {
                producer_id: producer.producer_id,
                epoch: producer.epoch,
                current: record.epoch,
            });
        }
        Ok((lease, record))
    }

    /// Takes a transactional id (Kafka's InitProducerId with a transactional id): a new
    /// id gets a producer id; a known one gets its epoch bumped, fencing older producers,
    /// after its open transaction is aborted.
    #[tracing::instrument(name = "transaction.init", skip(self))]
    pub async fn init_transactions(&self, id: &str, timeout_ms: i64) -> Result<InitOutcome> {
        check_transactional_id(id)?;
        let timeout_ms = match timeout_ms {
            0 => DEFAULT_TRANSACTION_TIMEOUT_MS,
            t if t < 0 || t as u64 > MAX_TRANSACTION_TIMEOUT_MS => {
                return Err(Error::InvalidArgument(format!(
                    "transaction timeout {t} ms is outside 1 to {MAX_TRANSACTION_TIMEOUT_MS} ms"
                )));
            }
            t => t as u64,
        };
        let _serial = self.transaction_lock(id).await;
        let lease = self.inner.coordinator_lease(id).await?;
        let now = self.inner.clock.now_ms();
        let previous = self.inner.metastore.transaction(id).await?;
        let new = match &previous {
            None => {
                let limit = self.inner.config.limits.max_transactional_ids;
                let known = self.inner.metastore.transactions().await?.len();
                if known >= limit {
                    return Err(crate::limits::full(
                        format!("the cluster has {known} transactional ids; a new one is refused"),
                        "max_transactional_ids",
                    ));
                }
                TransactionRecord {
                    transactional_id: id.to_string(),
                    producer_id: self.init_producer_id().await?,
                    epoch: 0,
                    status: TransactionStatus::Empty,
                    timeout_ms,
                    updated_ms: now,
                    ..TransactionRecord::default()
                }
            }
            Some(record) => match record.status {
                TransactionStatus::PrepareCommit | TransactionStatus::PrepareAbort => {
                    return Ok(InitOutcome::Finish(record.clone()));
                }
                TransactionStatus::Ongoing => {
                    // Abort it under a new epoch, so its producer is fenced everywhere.
                    let aborting = TransactionRecord {
                        epoch: record.epoch.saturating_add(1),
                        status: TransactionStatus::PrepareAbort,
                        timed_out: false,
                        updated_ms: now,
                        ..record.clone()
                    };
                    self.replace_transaction(&lease, previous.as_ref(), &aborting, false)
                        .await?;
                    tracing::info!(id, "aborting the open transaction of an older producer");
                    return Ok(InitOutcome::Finish(aborting));
                }
                _ => {
                    // Past the last epoch, a new producer id (as Kafka does).
                    let (producer_id, epoch) = match record.epoch.checked_add(1) {
                        Some(epoch) => (record.producer_id, epoch),
                        None => (self.init_producer_id().await?, 0),
                    };
                    TransactionRecord {
                        transactional_id: id.to_string(),
                        producer_id,
                        epoch,
                        status: TransactionStatus::Empty,
                        timeout_ms,
                        updated_ms: now,
                        ..TransactionRecord::default()
                    }
                }
            },
        };
        self.replace_transaction(&lease, previous.as_ref(), &new, false)
            .await?;
        tracing::info!(
            id,
            producer_id = new.producer_id,
            epoch = new.epoch,
            "transactional id taken"
        );
        Ok(InitOutcome::Ready(new.producer_id, new.epoch))
    }

    /// Adds partitions to `producer`'s transaction, opening it.
    #[tracing::instrument(name = "transaction.add_partitions", skip(self, partitions), fields(id = %producer.transactional_id))]
    pub async fn add_partitions_to_transaction(
        &self,
        producer: &TransactionalProducer,
        partitions: &[(String, Vec<i32>)],
    ) -> Result<()> {
        let _serial = self.transaction_lock(&producer.transactional_id).await;
        let (lease, record) = self.producer_record(producer).await?;
        let mut new = self.opened(&record)?;
        for (topic, numbers) in partitions {
            let handle = self.inner.topic(topic).await?;
            let meta = &handle.meta;
            let entry = new
                .partitions
                .entry(topic.clone())
                .or_insert_with(|| TransactionTopic {
                    topic_id: meta.topic_id.clone(),
                    ..TransactionTopic::default()
                });
            if entry.topic_id != meta.topic_id {
                return Err(self.inner.topic_changed(
                    topic,
                    &entry.topic_id,
                    "it was deleted and created again during the transaction".to_string(),
                ));
            }
            for p in numbers {
                entry.partitions.insert(Self::check_partition(&handle, *p)?);
            }
        }
        let count: usize = new.partitions.values().map(|t| t.partitions.len()).sum();
        if count > MAX_TRANSACTION_PARTITIONS {
            return Err(Error::InvalidArgument(format!(
                "a transaction holds at most {MAX_TRANSACTION_PARTITIONS} partitions; this one \
                 would hold {count}: commit more often"
            )));
        }
        if new == record {
            return Ok(());
        }
        self.replace_transaction(&lease, Some(&record), &new, false)
            .await
    }

    /// Adds a group's offsets to `producer`'s transaction: they are committed with it.
    #[tracing::instrument(name = "transaction.add_offsets", skip(self, offsets), fields(id = %producer.transactional_id))]
    pub async fn add_offsets_to_transaction(
        &self,
        producer: &TransactionalProducer,
        group_id: &str,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> Result<()> {
        crate::topic::validate_key_part("group id", group_id)?;
        let _serial = self.transaction_lock(&producer.transactional_id).await;
        let (lease, record) = self.producer_record(producer).await?;
        let mut new = self.opened(&record)?;
        let limit = self.inner.config.limits.offset_metadata_max_bytes;
        let group = new.offsets.entry(group_id.to_string()).or_default();
        for (topic, partition, offset) in offsets {
            if offset.metadata.len() > limit {
                return Err(crate::limits::over(
                    format!("offset metadata of {} bytes", offset.metadata.len()),
                    "offset_metadata_max_bytes",
                ));
            }
            group.retain(|(t, p, _)| !(t == topic && p == partition));
            group.push((topic.clone(), *partition, offset.clone()));
        }
        let count: usize = new.offsets.values().map(Vec::len).sum();
        if count > MAX_TRANSACTION_OFFSETS {
            return Err(Error::InvalidArgument(format!(
                "a transaction commits at most {MAX_TRANSACTION_OFFSETS} group offsets; this one \
                 would commit {count}: commit more often"
            )));
        }
        self.replace_transaction(&lease, Some(&record), &new, false)
            .await
    }

    /// `record` with a transaction open (it may be open already).
    fn opened(&self, record: &TransactionRecord) -> Result<TransactionRecord> {
        match record.status {
            TransactionStatus::Ongoing => Ok(record.clone()),
            TransactionStatus::PrepareCommit | TransactionStatus::PrepareAbort => Err(
                Error::ConcurrentTransactions(record.transactional_id.clone()),
            ),
            _ => Ok(TransactionRecord {
                status: TransactionStatus::Ongoing,
                started_ms: self.inner.clock.now_ms(),
                updated_ms: self.inner.clock.now_ms(),
                partitions: BTreeMap::new(),
                offsets: BTreeMap::new(),
                timed_out: false,
                ..record.clone()
            }),
        }
    }

    /// Decides `producer`'s transaction: commit (with its group offsets) or abort. Returns
    /// the prepared record whose markers are to be written ([`InitOutcome::Finish`]'s
    /// way), or `None` when there is nothing to finish (no open transaction, or a retry
    /// of an end that completed).
    #[tracing::instrument(name = "transaction.end", skip(self), fields(id = %producer.transactional_id))]
    pub async fn end_transaction(
        &self,
        producer: &TransactionalProducer,
        commit: bool,
    ) -> Result<Option<TransactionRecord>> {
        let _serial = self.transaction_lock(&producer.transactional_id).await;
        let (lease, record) = self.producer_record(producer).await?;
        let invalid = |state: &str| Error::NotInTransaction {
            transactional_id: producer.transactional_id.clone(),
            reason: format!(
                "cannot {} a transaction that is {state}",
                if commit { "commit" } else { "abort" }
            ),
        };
        match (record.status, commit) {
            (TransactionStatus::Ongoing, _) => {
                let prepared = TransactionRecord {
                    status: if commit {
                        TransactionStatus::PrepareCommit
                    } else {
                        TransactionStatus::PrepareAbort
                    },
                    updated_ms: self.inner.clock.now_ms(),
                    ..record.clone()
                };
                // The commit point: the decision and the group offsets, in one write.
                self.replace_transaction(&lease, Some(&record), &prepared, commit)
                    .await?;
                Ok(Some(prepared))
            }
            (TransactionStatus::PrepareCommit, true) | (TransactionStatus::PrepareAbort, false) => {
                Ok(Some(record))
            }
            (TransactionStatus::Empty, _)
            | (TransactionStatus::CompleteCommit, true)
            | (TransactionStatus::CompleteAbort, false) => Ok(None),
            (status, _) => Err(invalid(status.name())),
        }
    }

    /// Records that every marker of the prepared `record` is written: the transaction is
    /// complete and the record is ready for the next one. Nothing if the record moved on.
    pub async fn complete_transaction(&self, record: &TransactionRecord) -> Result<()> {
        let id = &record.transactional_id;
        let _serial = self.transaction_lock(id).await;
        let lease = self.inner.coordinator_lease(id).await?;
        let current = self.inner.metastore.transaction(id).await?;
        if current.as_ref() != Some(record) {
            return Ok(());
        }
        let status = match record.status {
            TransactionStatus::PrepareCommit => TransactionStatus::CompleteCommit,
            TransactionStatus::PrepareAbort => TransactionStatus::CompleteAbort,
            _ => return Ok(()),
        };
        let complete = TransactionRecord {
            status,
            started_ms: 0,
            updated_ms: self.inner.clock.now_ms(),
            partitions: BTreeMap::new(),
            offsets: BTreeMap::new(),
            ..record.clone()
        };
        self.replace_transaction(&lease, Some(record), &complete, false)
            .await?;
        tracing::info!(id, status = status.name(), "transaction complete");
        Ok(())
    }

    /// Aborts `id`'s open transaction under a bumped epoch (the producer is fenced):
    /// `timed_out` when the coordinator does it for `transaction.timeout.ms`, else an
    /// operator's abort. The prepared record to finish, or `None` if none is open.
    pub async fn abort_open_transaction(
        &self,
        id: &str,
        timed_out: bool,
    ) -> Result<Option<TransactionRecord>> {
        check_transactional_id(id)?;
        let _serial = self.transaction_lock(id).await;
        let lease = self.inner.coordinator_lease(id).await?;
        let Some(record) = self.inner.metastore.transaction(id).await? else {
            return Err(Error::InvalidArgument(format!(
                "transactional id '{id}' is unknown"
            )));
        };
        match record.status {
            TransactionStatus::Ongoing => {}
            TransactionStatus::PrepareAbort | TransactionStatus::PrepareCommit => {
                return Ok(Some(record));
            }
            _ => return Ok(None),
        }
        let aborting = TransactionRecord {
            epoch: record.epoch.saturating_add(1),
            status: TransactionStatus::PrepareAbort,
            timed_out,
            updated_ms: self.inner.clock.now_ms(),
            ..record.clone()
        };
        self.replace_transaction(&lease, Some(&record), &aborting, false)
            .await?;
        tracing::info!(id, timed_out, "aborting an open transaction");
        Ok(Some(aborting))
    }

    /// The transactions this agent coordinates that need its attention now: prepared
    /// ones (to finish, e.g. of a slot just taken over) and open ones past their timeout
    /// (to abort).
    pub async fn transactions_due(&self) -> Result<Vec<(TransactionRecord, bool)>> {
        let held = self.inner.held_slots().await;
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.now_ms();
        Ok(self
            .inner
            .metastore
            .transactions()
            .await?
            .into_iter()
            .filter(|r| held.contains(&coordinator_slot(&r.transactional_id)))
            .filter_map(|r| match r.status {
                // Prepared ones left alone for a while (whoever prepared it is writing
                // its markers), then finished here.
                TransactionStatus::PrepareCommit | TransactionStatus::PrepareAbort
                    if now.saturating_sub(r.updated_ms) > PREPARED_GRACE_MS =>
                {
                    Some((r, false))
                }
                TransactionStatus::Ongoing
                    if now.saturating_sub(r.started_ms) > r.timeout_ms as i64 =>
                {
                    Some((r, true))
                }
                _ => None,
            })
            .collect())
    }

    /// Every transactional id's record (any agent answers).
    pub async fn list_transactions(&self) -> Result<Vec<TransactionRecord>> {
        Ok(self.inner.metastore.transactions().await?)
    }

    /// One transactional id's record.
    pub async fn describe_transaction(&self, id: &str) -> Result<TransactionRecord> {
        check_transactional_id(id)?;
        self.inner
            .metastore
            .transaction(id)
            .await?
            .ok_or_else(|| Error::InvalidArgument(format!("transactional id '{id}' is unknown")))
    }

    /// Writes a transaction's marker in a partition this agent owns (see the
    /// `Transactions.WriteMarker` RPC).
    pub async fn write_marker(
        &self,
        topic: &str,
        topic_id: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let handle = self.resolve_topic(topic, topic_id).await?;
        let partition = Self::check_partition(&handle, partition)?;
        self.inner
            .write_marker(
                &(topic.to_string(), partition),
                &handle.meta.topic_id,
                producer_id,
                epoch,
                commit,
            )
            .await
    }
}
