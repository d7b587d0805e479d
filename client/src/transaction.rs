//! The transactional producer (Kafka's `transactional.id`): `init_transactions` takes the
//! id (fencing older producers of it), then records are sent in transactions that commit
//! or abort as a whole, across partitions and topics, optionally with a consumer group's
//! offsets (consume-transform-produce).
//!
//! Before a transaction's first record to a partition, the producer adds the partition to
//! the transaction at its coordinator (the agent coordinating the id; any agent forwards
//! there). `commit_transaction` waits until every record sent in the transaction is
//! acknowledged, then asks the coordinator to commit; if any of them failed, the commit
//! fails and the application aborts. Errors the coordinator may get over (it moved, it is
//! busy finishing the previous transaction) are retried until `delivery_timeout`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::transactions_client::TransactionsClient;
use tokio::time::Instant;

use crate::producer::{Identity, Pending, Producer};
use crate::router::is_retriable;
use crate::{Error, Result};

/// A transactional producer's state.
#[derive(Debug)]
pub(crate) struct Transaction {
    id: String,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// From `init_transactions`.
    producer: Option<pb::TransactionalProducer>,
    open: Option<Open>,
}

/// The open transaction.
#[derive(Debug, Default)]
struct Open {
    partitions: BTreeSet<(String, u32)>,
    pending: Arc<Pending>,
}

/// Whether a transaction call may succeed if made again: the agent or coordinator is
/// unreachable or moved, or the transaction is being finished.
fn worth_retrying(error: &Error) -> bool {
    let Error::Status(status) = error else {
        return matches!(error, Error::Connect(_));
    };
    let kind = status
        .metadata()
        .get(strata_proto::TRANSACTION_ERROR)
        .or_else(|| status.metadata().get("strata-group-error"))
        .and_then(|v| v.to_str().ok());
    match kind {
        Some("not-coordinator" | "concurrent-transactions") => true,
        Some(_) => false,
        None => is_retriable(error) && status.code() != tonic::Code::FailedPrecondition,
    }
}

impl Transaction {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Counts a record into the open transaction, adding its partition to the
    /// transaction first if it is new to it.
    pub(crate) async fn enlist(
        &self,
        producer: &Producer,
        topic: &str,
        partition: u32,
        _topic_id: &str,
    ) -> Result<Arc<Pending>> {
        let mut state = self.state.lock().await;
        let who = state.producer.clone();
        let Some(open) = state.open.as_mut() else {
            return Err(Error::InvalidArgument(
                "a transactional producer sends only inside a transaction: call \
                 begin_transaction first"
                    .to_string(),
            ));
        };
        let key = (topic.to_string(), partition);
        if !open.partitions.contains(&key) {
            let request = pb::AddPartitionsToTransactionRequest {
                producer: who,
                partitions: vec![pb::TopicPartitions {
                    topic: topic.to_string(),
                    partitions: vec![partition as i32],
                }],
            };
            producer
                .call_transactions(|mut client| {
                    let request = request.clone();
                    async move { client.add_partitions_to_transaction(request).await }
                })
                .await?;
            open.partitions.insert(key);
        }
        Ok(open.pending.add())
    }
}

impl Producer {
    fn transaction(&self) -> Result<&Arc<Transaction>> {
        self.transaction_state().ok_or_else(|| {
            Error::InvalidArgument(
                "the producer is not transactional: set ProducerConfig::transactional_id"
                    .to_string(),
            )
        })
    }

    /// Makes a transactions call on any agent (it reaches the coordinator), again while
    /// it fails with an error worth retrying, until `delivery_timeout`.
    pub(crate) async fn call_transactions<T, F>(
        &self,
        call: impl Fn(TransactionsClient<crate::Transport>) -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config().delivery_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut last = Error::Closed;
            for channel in self.router().candidates() {
                match call(TransactionsClient::new(channel)).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) => last = Error::Status(status),
                }
                if !worth_retrying(&last) {
                    return Err(last);
                }
            }
            if Instant::now() + backoff >= deadline {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            let _ = self.router().refresh().await;
        }
    }

    /// Takes the producer's transactional id: older producers of it are fenced and their
    /// open transaction aborted. Call it once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let transaction = self.transaction()?;
        let mut state = transaction.state.lock().await;
        let request = pb::InitTransactionsRequest {
            transactional_id: transaction.id.clone(),
            transaction_timeout_ms: self.config().transaction_timeout.as_millis() as i64,
        };
        let response = self
            .call_transactions(|mut client| {
                let request = request.clone();
                async move { client.init_transactions(request).await }
            })
            .await?;
        let epoch = i16::try_from(response.producer_epoch).unwrap_or(0);
        self.set_identity(Identity {
            producer_id: response.producer_id,
            epoch,
        })
        .await;
        state.producer = Some(pb::TransactionalProducer {
            transactional_id: transaction.id.clone(),
            producer_id: response.producer_id,
            producer_epoch: response.producer_epoch,
        });
        state.open = None;
        Ok(())
    }

    /// Opens a transaction: the records sent until it commits or aborts are its.
    pub async fn begin_transaction(&self) -> Result<()> {
        let transaction = self.transaction()?;
        let mut state = transaction.state.lock().await;
        if state.producer.is_none() {
            return Err(Error::InvalidArgument(
                "call init_transactions before the first transaction".to_string(),
            ));
        }
        if state.open.is_some() {
            return Err(Error::InvalidArgument(
                "a transaction is open already: commit or abort it first".to_string(),
            ));
        }
        state.open = Some(Open::default());
        Ok(())
    }

    /// Adds a consumer group's offsets (`(topic, partition, next offset to read)`) to the
    /// open transaction: they are committed if and only if it commits.
    pub async fn send_offsets_to_transaction(
        &self,
        group_id: &str,
        offsets: &[(String, u32, i64)],
    ) -> Result<()> {
        let transaction = self.transaction()?;
        let state = transaction.state.lock().await;
        if state.open.is_none() {
            return Err(Error::InvalidArgument(
                "no transaction is open: call begin_transaction first".to_string(),
            ));
        }
        let request = pb::AddOffsetsToTransactionRequest {
            producer: state.producer.clone(),
            group_id: group_id.to_string(),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| pb::PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition as i32,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.call_transactions(|mut client| {
            let request = request.clone();
            async move { client.add_offsets_to_transaction(request).await }
        })
        .await?;
        Ok(())
    }

    /// Commits the open transaction: waits until every record sent in it is acknowledged,
    /// then commits them (and the offsets sent with it) as a whole. If a record failed,
    /// nothing is committed and the error is returned: abort the transaction.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the open transaction: none of its records and offsets is ever visible to
    /// `read_committed` readers.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let transaction = self.transaction()?;
        let mut state = transaction.state.lock().await;
        let Some(open) = state.open.as_ref() else {
            return Err(Error::InvalidArgument(
                "no transaction is open: call begin_transaction first".to_string(),
            ));
        };
        open.pending.settle().await;
        let failed = open.pending.failed.lock().expect("pending lock").clone();
        if commit && let Some(error) = failed {
            return Err(error);
        }
        let request = pb::EndTransactionRequest {
            producer: state.producer.clone(),
            commit,
        };
        self.call_transactions(|mut client| {
            let request = request.clone();
            async move { client.end_transaction(request).await }
        })
        .await?;
        state.open = None;
        Ok(())
    }
}
