//! The etcd backend of [`KvBackend`].
//!
//! Each call is one etcd request; transactions map one-to-one onto etcd transactions, so
//! their atomicity is etcd's. The number of operations per transaction is bounded by etcd's
//! `--max-txn-ops` (128 by default); [`EtcdKv::with_max_txn_ops`] tells the metastore a
//! different limit.

use async_trait::async_trait;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use tracing::instrument;

use crate::kv::{Compare, KvBackend, Liveness, Op, prefix_end};
use crate::{Error, Result};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// A connection to an etcd cluster.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    endpoints: Vec<String>,
    max_txn_ops: usize,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdKv {
    /// Connects to the etcd endpoints (`host:port` or `http://host:port`).
    #[instrument(name = "metastore.etcd.connect", skip_all, fields(endpoints = ?endpoints))]
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| unavailable("connect", e))?;
        let kv = Self {
            client,
            endpoints: endpoints.to_vec(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        };
        // Connecting is lazy; one read proves the endpoints answer.
        kv.get("/strata-connect-check").await.map_err(|e| {
            Error::Unavailable(format!("etcd connect: cannot reach {endpoints:?}: {e}"))
        })?;
        Ok(kv)
    }

    /// Declares etcd's `--max-txn-ops` if it is not the default.
    pub fn with_max_txn_ops(mut self, max_txn_ops: usize) -> Self {
        self.max_txn_ops = max_txn_ops.max(4);
        self
    }

    /// The underlying client, for leases and watches.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn unavailable(what: &str, e: etcd_client::Error) -> Error {
    Error::Unavailable(format!("etcd {what}: {e}"))
}

#[async_trait]
impl KvBackend for EtcdKv {
    #[instrument(name = "metastore.etcd.get", skip(self))]
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut kv = self.client.kv_client();
        let response = kv.get(key, None).await.map_err(|e| unavailable("get", e))?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    #[instrument(name = "metastore.etcd.get_many", skip_all, fields(keys = keys.len()))]
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.max_txn_ops.max(1)) {
            let reads: Vec<TxnOp> = chunk.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
            let mut kv = self.client.kv_client();
            let response = kv
                .txn(Txn::new().and_then(reads))
                .await
                .map_err(|e| unavailable("get_many", e))?;
            for answer in response.op_responses() {
                values.push(match answer {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                });
            }
        }
        Ok(values)
    }

    #[instrument(name = "metastore.etcd.range", skip(self))]
    async fn range(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        debug_assert!(from.starts_with(prefix));
        let mut kv = self.client.kv_client();
        let mut options = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            options = options.with_limit(limit as i64);
        }
        let response = kv
            .get(from, Some(options))
            .await
            .map_err(|e| unavailable("range", e))?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().map_err(|e| Error::Corrupt {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: e.to_string(),
                })?;
                Ok((key.to_string(), kv.value().to_vec()))
            })
            .collect()
    }

    #[instrument(name = "metastore.etcd.txn", skip_all, fields(compares = compares.len(), ops = ops.len()))]
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool> {
        let compares: Vec<EtcdCompare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::ValueEquals(key, value) => {
                    EtcdCompare::value(key, CompareOp::Equal, value)
                }
                Compare::Absent(key) => EtcdCompare::version(key, CompareOp::Equal, 0),
                Compare::Exists(key) => EtcdCompare::version(key, CompareOp::Greater, 0),
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(key, value) => TxnOp::put(key, value, None),
                Op::Delete(key) => TxnOp::delete(key, None),
                Op::DeletePrefix(prefix) => {
                    TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let mut kv = self.client.kv_client();
        let response = kv
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(|e| unavailable("txn", e))?;
        Ok(response.succeeded())
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<crate::kv::ChangeWatch> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let client = self.client.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            // Until the watcher goes away: (re)establish the watch, notify (changes may
            // have been missed meanwhile), then notify on every response with events. A
            // cancelled watch (etcd compacted past it) or a broken stream starts over.
            while !sender.is_closed() {
                let options = etcd_client::WatchOptions::new().with_prefix();
                match client
                    .watch_client()
                    .watch(prefix.clone(), Some(options))
                    .await
                {
                    Ok(mut stream) => {
                        crate::kv::notify(&sender);
                        loop {
                            match stream.message().await {
                                Ok(Some(response)) if !response.canceled() => {
                                    if !response.events().is_empty() {
                                        crate::kv::notify(&sender);
                                    }
                                }
                                Ok(_) => break,
                                Err(e) => {
                                    tracing::debug!(%prefix, error = %e, "etcd watch broke; watching again");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(%prefix, error = %e, "cannot watch etcd; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(receiver)
    }

    #[instrument(name = "metastore.etcd.revision", skip(self))]
    async fn revision(&self) -> Result<i64> {
        let mut kv = self.client.kv_client();
        let response = kv
            .get(
                "/strata-revision",
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| unavailable("get", e))?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    #[instrument(name = "metastore.etcd.compact", skip(self))]
    async fn compact_history(&self, revision: i64) -> Result<()> {
        if revision <= 0 {
            return Ok(());
        }
        let mut client = self.client.clone();
        match client.compact(revision, None).await {
            Ok(_) => Ok(()),
            // Another process compacted past it already: the goal is met.
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("compact", e)),
        }
    }

    #[instrument(name = "metastore.etcd.put_ephemeral", skip(self, value))]
    async fn put_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>> {
        let lease = self.leased_put(key, value, ttl, false).await?;
        Ok(Box::new(
            lease.expect("an unconditional put always happens"),
        ))
    }

    #[instrument(name = "metastore.etcd.create_ephemeral", skip(self, value))]
    async fn create_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>> {
        let lease = self.leased_put(key, value, ttl, true).await?;
        Ok(lease.map(|l| Box::new(l) as Box<dyn Liveness>))
    }
}

impl EtcdKv {
    /// Puts `key` under a new lease of `ttl` (only if absent with `only_if_absent`) and
    /// starts renewing the lease; `None` if the key existed.
    async fn leased_put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        only_if_absent: bool,
    ) -> Result<Option<EtcdLease>> {
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let mut client = self.client.clone();
        let lease = client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| unavailable("lease grant", e))?
            .id();
        // The lease runs from its grant: renewals are measured from here.
        let granted = Instant::now();
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let compares = if only_if_absent {
            vec![EtcdCompare::version(key, CompareOp::Equal, 0)]
        } else {
            vec![]
        };
        let created = client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(vec![put]))
            .await
            .map_err(|e| unavailable("put", e))?
            .succeeded();
        if !created {
            let _ = client.lease_revoke(lease).await;
            return Ok(None);
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let renewer = tokio::spawn(renew_lease(
            client.clone(),
            lease,
            Duration::from_secs(ttl_secs as u64),
            granted,
            key.to_string(),
            lost_tx,
        ));
        Ok(Some(EtcdLease {
            client,
            lease,
            renewer,
            lost: lost_rx,
        }))
    }
}

/// Renews `lease` every third of its TTL until it is lost: etcd says it expired, or no
/// renewal succeeded for a whole TTL. Each renewal is measured from the moment it was
/// sent, which is no later than etcd received it, so the lease is declared lost here no
/// later than etcd expires it.
async fn renew_lease(
    client: Client,
    lease: i64,
    ttl: Duration,
    granted: Instant,
    key: String,
    lost: watch::Sender<bool>,
) {
    let period = ttl / 3;
    let mut last_renewed = granted;
    let mut stream = None;
    loop {
        tokio::time::sleep(period).await;
        let sent = Instant::now();
        if sent.duration_since(last_renewed) >= ttl {
            tracing::warn!(%key, lease, "lease lost: no renewal for a whole TTL");
            let _ = lost.send(true);
            return;
        }
        let renewal = tokio::time::timeout(period, async {
            if stream.is_none() {
                stream = Some(client.clone().lease_keep_alive(lease).await?);
            }
            let (keeper, responses) = stream.as_mut().expect("opened above");
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match renewal {
            Ok(Ok(Some(response))) if response.ttl() > 0 => last_renewed = sent,
            Ok(Ok(Some(_))) => {
                tracing::warn!(%key, lease, "lease lost: etcd says it expired");
                let _ = lost.send(true);
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!(%key, lease, "lease renewal failed; retrying");
                stream = None;
            }
        }
    }
}

/// A key kept alive by an etcd lease, renewed every third of its TTL.
struct EtcdLease {
    client: Client,
    lease: i64,
    renewer: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl std::fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLease")
            .field("lease", &self.lease)
            .finish()
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        // Without renewals the lease, and its key, expire after the TTL.
        self.renewer.abort();
    }
}

#[async_trait]
impl Liveness for EtcdLease {
    async fn release(self: Box<Self>) -> Result<()> {
        self.renewer.abort();
        let mut client = self.client.clone();
        client
            .lease_revoke(self.lease)
            .await
            .map_err(|e| unavailable("lease revoke", e))?;
        Ok(())
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the renewer ended without a verdict (aborted): treat as lost.
        let _ = lost.wait_for(|lost| *lost).await;
    }
}
