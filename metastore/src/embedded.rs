//! The embedded backend of [`KvBackend`]: an ordered map in memory, made durable by an
//! append-only log on local disk. For `strata dev` and tests; one process only.
//!
//! Log format: a sequence of records `[len: u32 LE][crc32c(payload): u32 LE][payload]`,
//! one per committed transaction, where the payload is its operations, each
//! `[tag: u8][key len: u32 LE][key]` followed, for a put, by `[value len: u32 LE][value]`
//! (tags: 1 put, 2 delete, 3 delete prefix).
//!
//! Invariants:
//! - a transaction is acknowledged only after its record is written and `fdatasync`ed;
//! - replay stops at the first torn or corrupt record (a crash mid-append) and truncates
//!   it away: such a transaction was never acknowledged;
//! - an append that fails (a short write, a full disk, a failed `fdatasync`) is cut back to
//!   the last whole record before the transaction reports its error, so no later
//!   transaction is ever written after a torn record (replay would stop there and lose
//!   it); if the cut itself fails, the store refuses every later write until reopened;
//! - writes and their `fdatasync` run on a blocking thread, one transaction at a time
//!   (the writer lock); the map is locked only to check and to apply, so reads never wait
//!   for a disk;
//! - on open, a log much larger than the live data is rewritten as one snapshot record,
//!   through a temporary file and an atomic rename.
//!
//! Test hook: `STRATA_FAILPOINT=metastore-torn-append:N` makes the Nth logged append
//! after open write half its record and fail, as a full disk would.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::kv::{Compare, KvBackend, Liveness, Op};
use crate::{Error, Result};

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_DELETE_PREFIX: u8 = 3;

/// The embedded key-value store.
#[derive(Debug)]
pub struct EmbeddedKv {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// Prefix watches, notified by every write that touches a key under them.
    watches: Arc<Mutex<Vec<PrefixWatch>>>,
    /// Held by one write at a time, on a blocking thread, from its check to its apply.
    writer: Arc<Mutex<Writer>>,
    /// An exclusive lock on `dir/LOCK` while the store is open: one process per directory.
    _lock: Option<File>,
}

/// A watched prefix and where its notifications go.
type PrefixWatch = (String, tokio::sync::mpsc::Sender<()>);

#[derive(Debug)]
struct Writer {
    log: Option<Log>,
}

/// The append-only log file.
#[derive(Debug)]
struct Log {
    file: File,
    /// Bytes of whole records: where the next one starts.
    len: u64,
    /// Set when a failed append could not be cut back: nothing more may be written.
    broken: Option<String>,
    appends: u64,
    /// Test hook: the append (1-based) that is torn.
    tear_at: Option<u64>,
}

impl Log {
    /// Appends one record and syncs it, or leaves the file as it was before.
    fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!(
                "an earlier append could not be undone ({why}); restart to recover"
            )));
        }
        self.appends += 1;
        let written = if self.tear_at == Some(self.appends) {
            self.file
                .write_all(&record[..record.len() / 2])
                .and_then(|()| Err(std::io::Error::other("failpoint: torn append")))
        } else {
            self.file
                .write_all(record)
                .and_then(|()| self.file.sync_data())
        };
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the torn bytes away before anything else is appended.
                if let Err(cut) = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                {
                    self.broken = Some(cut.to_string());
                }
                tracing::warn!(error = %e, "metastore append failed; cut back to the last whole record");
                Err(e)
            }
        }
    }
}

/// The append the `STRATA_FAILPOINT` test hook tears, if it names one.
fn torn_append_failpoint() -> Option<u64> {
    std::env::var("STRATA_FAILPOINT")
        .ok()?
        .split(',')
        .find_map(|f| f.strip_prefix("metastore-torn-append:")?.parse().ok())
}

impl EmbeddedKv {
    /// A store that lives only in memory (tests).
    pub fn in_memory() -> Self {
        Self {
            map: Arc::default(),
            watches: Arc::default(),
            writer: Arc::new(Mutex::new(Writer { log: None })),
            _lock: None,
        }
    }

    /// Opens (or creates) the store persisted in `dir/metastore.log`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| io_error("create", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            Error::Config(format!(
                "{} is in use by another process (another strata dev on the same data dir?)",
                dir.display()
            ))
        })?;
        let path = dir.join("metastore.log");
        let mut map = BTreeMap::new();
        let mut valid_len = 0u64;
        let mut log_len = 0u64;
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io_error("read", &path, e))?;
            log_len = bytes.len() as u64;
            valid_len = replay(&bytes, &mut map) as u64;
            if valid_len < log_len {
                tracing::warn!(
                    path = %path.display(),
                    dropped_bytes = log_len - valid_len,
                    "metastore log ends in a torn record; truncating it"
                );
            }
        }
        let live: u64 = map
            .iter()
            .map(|(k, v)| (k.len() + v.len() + 9) as u64)
            .sum();
        if valid_len < log_len || valid_len > 2 * live + (1 << 20) {
            rewrite(&path, &map)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("stat", &path, e))?
            .len();
        Ok(Self {
            map: Arc::new(Mutex::new(map)),
            watches: Arc::default(),
            writer: Arc::new(Mutex::new(Writer {
                log: Some(Log {
                    file,
                    len,
                    broken: None,
                    appends: 0,
                    tear_at: torn_append_failpoint(),
                }),
            })),
            _lock: Some(lock),
        })
    }

    /// Notifies the watches of the prefixes `keys` (or deleted prefixes) touch.
    fn notify_watches(&self, touched: &[&str]) {
        let mut watches = self.watches.lock().expect("watches lock");
        watches.retain(|(_, sender)| !sender.is_closed());
        for (prefix, sender) in watches.iter() {
            // A deleted prefix may hold keys under the watched one, and the other way round.
            if touched
                .iter()
                .any(|k| k.starts_with(prefix.as_str()) || prefix.starts_with(*k))
            {
                crate::kv::notify(sender);
            }
        }
    }

    /// Runs `write` under the writer lock on a blocking thread: it may wait for the disk.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut Writer, &Mutex<BTreeMap<String, Vec<u8>>>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (writer, map) = (self.writer.clone(), self.map.clone());
        tokio::task::spawn_blocking(move || {
            let mut writer = writer.lock().expect("embedded metastore writer lock");
            write(&mut writer, &map)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("embedded metastore write failed: {e}")))?
    }
}

fn lock_map(
    map: &Mutex<BTreeMap<String, Vec<u8>>>,
) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
    map.lock().expect("embedded metastore lock poisoned")
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!(
        "embedded metastore: {what} {}: {e}",
        path.display()
    ))
}

fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut payload = Vec::new();
    let field = |payload: &mut Vec<u8>, bytes: &[u8]| {
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(bytes);
    };
    for op in ops {
        match op {
            Op::Put(key, value) => {
                payload.push(TAG_PUT);
                field(&mut payload, key.as_bytes());
                field(&mut payload, value);
            }
            Op::Delete(key) => {
                payload.push(TAG_DELETE);
                field(&mut payload, key.as_bytes());
            }
            Op::DeletePrefix(prefix) => {
                payload.push(TAG_DELETE_PREFIX);
                field(&mut payload, prefix.as_bytes());
            }
        }
    }
    let mut record = Vec::with_capacity(payload.len() + 8);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

/// Decodes one record's payload into operations; `None` if malformed.
fn decode_ops(mut payload: &[u8]) -> Option<Vec<Op>> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Some(head)
    }
    fn field<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(buf, 4)?.try_into().ok()?) as usize;
        take(buf, len)
    }
    let mut ops = Vec::new();
    while !payload.is_empty() {
        let tag = take(&mut payload, 1)?[0];
        let key = String::from_utf8(field(&mut payload)?.to_vec()).ok()?;
        ops.push(match tag {
            TAG_PUT => Op::Put(key, field(&mut payload)?.to_vec()),
            TAG_DELETE => Op::Delete(key),
            TAG_DELETE_PREFIX => Op::DeletePrefix(key),
            _ => return None,
        });
    }
    Some(ops)
}

/// Applies every intact record of `log` to `map`; returns the length of the intact part.
fn replay(log: &[u8], map: &mut BTreeMap<String, Vec<u8>>) -> usize {
    let mut pos = 0;
    while log.len() - pos >= 8 {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(log[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(payload) = log.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(ops) = decode_ops(payload) else {
            break;
        };
        apply(map, ops);
        pos += 8 + len;
    }
    pos
}

fn rewrite(path: &Path, map: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let tmp: PathBuf = path.with_extension("log.tmp");
    let ops: Vec<Op> = map
        .iter()
        .map(|(k, v)| Op::Put(k.clone(), v.clone()))
        .collect();
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        if !ops.is_empty() {
            file.write_all(&encode_ops(&ops))?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| io_error("rewrite", path, e))
}

fn apply(map: &mut BTreeMap<String, Vec<u8>>, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::Put(key, value) => {
                map.insert(key, value);
            }
            Op::Delete(key) => {
                map.remove(&key);
            }
            Op::DeletePrefix(prefix) => {
                map.retain(|key, _| !key.starts_with(&prefix));
            }
        }
    }
}

#[async_trait]
impl KvBackend for EmbeddedKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(lock_map(&self.map).get(key).cloned())
    }

    async fn range(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let map = lock_map(&self.map);
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(map
            .range(from.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool> {
        let touched: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::Put(key, _) | Op::Delete(key) | Op::DeletePrefix(key) => key.clone(),
            })
            .collect();
        let applied = self
            .write(move |writer, map| {
                // Only writers change the map, and this one holds the writer lock: what is
                // checked here still holds when it is applied below.
                let holds = {
                    let map = lock_map(map);
                    compares.iter().all(|c| match c {
                        Compare::ValueEquals(key, value) => map.get(key) == Some(value),
                        Compare::Absent(key) => !map.contains_key(key),
                        Compare::Exists(key) => map.contains_key(key),
                    })
                };
                if !holds {
                    return Ok(false);
                }
                if let Some(log) = writer.log.as_mut() {
                    log.append(&encode_ops(&ops)).map_err(|e| {
                        Error::Unavailable(format!("embedded metastore: append: {e}"))
                    })?;
                }
                apply(&mut lock_map(map), ops);
                Ok(true)
            })
            .await?;
        if applied {
            let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
            self.notify_watches(&touched);
        }
        Ok(applied)
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<crate::kv::ChangeWatch> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        crate::kv::notify(&sender);
        self.watches
            .lock()
            .expect("watches lock")
            .push((prefix.to_string(), sender));
        Ok(receiver)
    }

    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }

    async fn revision(&self) -> Result<i64> {
        Ok(0)
    }

    async fn compact_history(&self, _revision: i64) -> Result<()> {
        // The embedded store keeps no history: only the current value of each key.
        Ok(())
    }

    async fn put_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        _ttl: Duration,
    ) -> Result<Box<dyn Liveness>> {
        // Never logged: the store lives in this process, so the key dies with it.
        let owned = key.to_string();
        self.write(move |_, map| {
            lock_map(map).insert(owned, value);
            Ok(())
        })
        .await?;
        Ok(Box::new(EphemeralKey {
            map: self.map.clone(),
            writer: self.writer.clone(),
            key: key.to_string(),
        }))
    }

    async fn create_ephemeral(
        &self,
        key: &str,
        value: Vec<u8>,
        _ttl: Duration,
    ) -> Result<Option<Box<dyn Liveness>>> {
        let owned = key.to_string();
        let created = self
            .write(move |_, map| {
                let mut map = lock_map(map);
                if map.contains_key(&owned) {
                    return Ok(false);
                }
                map.insert(owned, value);
                Ok(true)
            })
            .await?;
        Ok(created.then(|| {
            Box::new(EphemeralKey {
                map: self.map.clone(),
                writer: self.writer.clone(),
                key: key.to_string(),
            }) as Box<dyn Liveness>
        }))
    }
}

/// An ephemeral key of the embedded store.
#[derive(Debug)]
struct EphemeralKey {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    writer: Arc<Mutex<Writer>>,
    key: String,
}

#[async_trait]
impl Liveness for EphemeralKey {
    async fn release(self: Box<Self>) -> Result<()> {
        let Self { map, writer, key } = *self;
        tokio::task::spawn_blocking(move || {
            let _writer = writer.lock().expect("embedded metastore writer lock");
            lock_map(&map).remove(&key);
        })
        .await
        .map_err(|e| Error::Unavailable(format!("embedded metastore write failed: {e}")))
    }

    fn is_lost(&self) -> bool {
        // The key lives in this process's memory: it cannot outlive or miss its holder.
        false
    }

    async fn lost(&self) {
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = EmbeddedKv::open(dir.path()).unwrap();
        let second = EmbeddedKv::open(dir.path()).unwrap_err();
        assert!(
            second.to_string().contains("in use by another process"),
            "{second}"
        );
        drop(first);
        EmbeddedKv::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn torn_tail_is_dropped_and_earlier_commits_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = EmbeddedKv::open(dir.path()).unwrap();
            assert!(
                kv.txn(vec![], vec![Op::Put("a".into(), b"1".to_vec())])
                    .await
                    .unwrap()
            );
            assert!(
                kv.txn(vec![], vec![Op::Put("b".into(), b"2".to_vec())])
                    .await
                    .unwrap()
            );
        }
        // A crash in the middle of a third append leaves half a record.
        let path = dir.path().join("metastore.log");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let record = encode_ops(&[Op::Put("c".into(), b"3".to_vec())]);
        file.write_all(&record[..record.len() - 2]).unwrap();
        drop(file);

        let kv = EmbeddedKv::open(dir.path()).unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(kv.get("c").await.unwrap(), None);
        // And it keeps appending after the truncation.
        assert!(
            kv.txn(vec![], vec![Op::Put("d".into(), b"4".to_vec())])
                .await
                .unwrap()
        );
        drop(kv);
        let kv = EmbeddedKv::open(dir.path()).unwrap();
        assert_eq!(kv.get("d").await.unwrap(), Some(b"4".to_vec()));
    }

    #[tokio::test]
    async fn a_failed_append_is_cut_back_so_later_commits_survive() {
        let dir = tempfile::tempdir().unwrap();
        let put = |k: &str| vec![Op::Put(k.to_string(), k.as_bytes().to_vec())];
        {
            let kv = EmbeddedKv::open(dir.path()).unwrap();
            kv.writer.lock().unwrap().log.as_mut().unwrap().tear_at = Some(2);
            assert!(kv.txn(vec![], put("a")).await.unwrap());
            let torn = kv.txn(vec![], put("b")).await.unwrap_err();
            assert!(torn.to_string().contains("torn append"), "{torn}");
            assert_eq!(kv.get("b").await.unwrap(), None, "not applied");
            assert!(kv.txn(vec![], put("c")).await.unwrap());
            assert!(kv.txn(vec![], put("d")).await.unwrap());
        }
        let kv = EmbeddedKv::open(dir.path()).unwrap();
        for (key, there) in [("a", true), ("b", false), ("c", true), ("d", true)] {
            assert_eq!(kv.get(key).await.unwrap().is_some(), there, "{key}");
        }
    }
}
