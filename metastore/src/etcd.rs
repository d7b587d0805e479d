//! The etcd backend of [`KvBackend`].
//!
//! Each call is one etcd request; transactions map one-to-one onto etcd transactions, so
//! their atomicity is etcd's. The number of operations per transaction is bounded by etcd's
//! `--max-txn-ops` (128 by default); [`EtcdKv::with_max_txn_ops`] tells the metastore a
//! different limit.

use async_trait::async_trait;
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
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

    #[instrument(name = "metastore.etcd.put_ephemeral", skip(self, value))]
    async fn put_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>> {
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let mut client = self.client.clone();
        let lease = client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| unavailable("lease grant", e))?
            .id();
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| unavailable("put", e))?;
        let (mut keeper, mut responses) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| unavailable("lease keep-alive", e))?;
        let key_name = key.to_string();
        let renewer = tokio::spawn(async move {
            let period = Duration::from_secs((ttl_secs as u64 / 3).max(1));
            loop {
                tokio::time::sleep(period).await;
                let renewed = match keeper.keep_alive().await {
                    Ok(()) => responses.message().await.ok().flatten(),
                    Err(_) => None,
                };
                match renewed {
                    Some(r) if r.ttl() > 0 => {}
                    _ => {
                        tracing::warn!(key = %key_name, "lease lost; its key is gone");
                        return;
                    }
                }
            }
        });
        Ok(Box::new(EtcdLease {
            client,
            lease,
            renewer,
        }))
    }
}

/// A key kept alive by an etcd lease, renewed every third of its TTL.
struct EtcdLease {
    client: Client,
    lease: i64,
    renewer: tokio::task::JoinHandle<()>,
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
}
