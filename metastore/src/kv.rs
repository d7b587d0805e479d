//! The minimal transactional key-value interface the metastore is written against.
//!
//! Keys are UTF-8 strings (built only by [`crate::keys`]); values are bytes. A transaction
//! applies all of its operations if and only if all of its comparisons hold, atomically.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// A condition a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key holds exactly this value.
    ValueEquals(String, Vec<u8>),
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Exists(String),
}

impl Compare {
    /// The key still holds what was read from it: `old`, or nothing.
    pub fn unchanged(key: &str, old: Option<Vec<u8>>) -> Self {
        match old {
            Some(bytes) => Self::ValueEquals(key.to_string(), bytes),
            None => Self::Absent(key.to_string()),
        }
    }
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key.
    Put(String, Vec<u8>),
    /// Remove a key (no-op if absent).
    Delete(String),
    /// Remove every key that starts with the prefix.
    DeletePrefix(String),
}

/// A transactional key-value store: etcd, or the embedded one.
#[async_trait]
pub trait KvBackend: Send + Sync + Debug + 'static {
    /// The value of `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The values of `keys`, in order, read in as few requests as the backend allows
    /// (etcd: one transaction of reads per [`KvBackend::max_txn_ops`] keys).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Keys in `[from, end of prefix)` in key order, at most `limit` (0 = no limit). `from`
    /// must start with `prefix`.
    async fn range(&self, prefix: &str, from: &str, limit: usize)
    -> Result<Vec<(String, Vec<u8>)>>;

    /// Applies `ops` if every comparison holds; returns whether it did.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool>;

    /// Largest number of comparisons, and of operations, one transaction may hold.
    fn max_txn_ops(&self) -> usize;

    /// The store's current revision (0 if it keeps no history).
    async fn revision(&self) -> Result<i64>;

    /// Discards the store's history older than `revision` (no-op without history).
    async fn compact_history(&self, revision: i64) -> Result<()>;

    /// Sets a key that lives only as long as the returned handle keeps it alive: it is
    /// deleted by [`Liveness::release`], and expires about `ttl` after the process holding
    /// the handle stops renewing it (etcd: a lease; embedded: it dies with the process).
    async fn put_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn Liveness>>;

    /// Notifies on every change of a key under `prefix` (etcd: a watch, re-established
    /// after a lost connection or a compaction; embedded: from the writes themselves).
    /// The first notification comes at once.
    async fn watch_prefix(&self, prefix: &str) -> Result<ChangeWatch>;

    /// As [`KvBackend::put_ephemeral`], but only if `key` does not exist: `None` if it
    /// does (an election: the key's holder is whoever created it).
    async fn create_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>>;
}

/// Notifications that keys under a watched prefix changed ([`KvBackend::watch_prefix`]).
/// A notification carries no detail: the watcher reads the prefix again. Notifications
/// coalesce (one pending at a time), and one is sent whenever the watch is (re)established,
/// so a watcher that reads on every notification never misses a change for long.
pub type ChangeWatch = tokio::sync::mpsc::Receiver<()>;

/// The sending side of a [`ChangeWatch`]: a change notifies once, coalescing.
pub(crate) fn notify(sender: &tokio::sync::mpsc::Sender<()>) {
    let _ = sender.try_send(());
}

/// Keeps an ephemeral key alive (see [`KvBackend::put_ephemeral`]).
#[async_trait]
pub trait Liveness: Send + Sync + Debug {
    /// Deletes the key now and stops renewing it.
    async fn release(self: Box<Self>) -> Result<()>;

    /// Whether the key is, or may already be, gone: renewals failed for a whole TTL (the
    /// process was paused, or lost the store) or the store said it expired. Once lost, a
    /// key stays lost; register anew.
    fn is_lost(&self) -> bool;

    /// Resolves once [`Liveness::is_lost`] turns true.
    async fn lost(&self);
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
