//! Unit tests of the write path against in-memory backends, with an object store that
//! injects PUT failures and delays: failed flushes never ack, offsets stay dense, and
//! pipelined flushes commit in order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use strata_storage::cache::CacheConfig;
use strata_storage::{BlockCache, SegmentStore};

use crate::clock::SystemClock;
use crate::{Agent, AgentConfig, Error, NewRecord};

/// An in-memory store whose PUTs can be made to fail, or the first one to be slow.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: InMemory,
    failing: AtomicBool,
    /// Milliseconds the next PUT sleeps before it lands (then reset to 0).
    delay_next_put_ms: AtomicU64,
    puts: AtomicUsize,
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: "injected PUT failure".into(),
            });
        }
        let delay = self.delay_next_put_ms.swap(0, Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

async fn agent_on(store: Arc<FlakyStore>) -> Agent {
    let metastore = strata_metastore::open("memory://", "test").await.unwrap();
    let cache = BlockCache::new(&CacheConfig {
        memory_bytes: 16 << 20,
        disk_dir: None,
        disk_bytes: 0,
    })
    .await
    .unwrap();
    let config = AgentConfig {
        linger: Duration::from_millis(5),
        ..AgentConfig::default()
    };
    let agent = Agent::start(
        config,
        metastore,
        SegmentStore::from_store(store, "segments"),
        cache,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    agent.create_topic("t", 2, &BTreeMap::new()).await.unwrap();
    agent
}

fn records(prefix: &str, n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            key: None,
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            timestamp_ms: 0,
            headers: vec![],
        })
        .collect()
}

/// Every committed value of partition 0, in offset order, checking offsets are dense.
async fn read_partition(agent: &Agent) -> Vec<String> {
    let mut offset = 0;
    let mut values = Vec::new();
    loop {
        let fetched = agent
            .fetch(
                "t",
                "",
                0,
                crate::FetchSpec {
                    offset,
                    max_bytes: 1 << 20,
                    max_wait: Duration::ZERO,
                    isolation: crate::Isolation::ReadUncommitted,
                },
            )
            .await
            .unwrap();
        for r in &fetched.records {
            assert_eq!(r.offset, offset, "offsets are dense");
            offset += 1;
            values.push(String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap());
        }
        if fetched.next_offset >= fetched.committed.high_watermark {
            return values;
        }
    }
}

#[tokio::test]
async fn a_failed_put_acks_nothing_and_later_writes_continue_densely() {
    let store = Arc::new(FlakyStore::default());
    let agent = agent_on(store.clone()).await;

    let first = agent
        .produce("t", Some(0), records("a", 10), true)
        .await
        .unwrap();
    assert_eq!(first.last(), Some(&(0, 9)));

    store.failing.store(true, Ordering::SeqCst);
    let failed = agent.produce("t", Some(0), records("b", 10), true).await;
    assert!(matches!(failed, Err(Error::Unavailable(_))), "{failed:?}");

    store.failing.store(false, Ordering::SeqCst);
    let third = agent
        .produce("t", Some(0), records("c", 10), true)
        .await
        .unwrap();
    assert_eq!(
        third.first(),
        Some(&(0, 10)),
        "continues at the committed high watermark"
    );

    let values = read_partition(&agent).await;
    let expected: Vec<String> = (0..10)
        .map(|i| format!("a-{i}"))
        .chain((0..10).map(|i| format!("c-{i}")))
        .collect();
    assert_eq!(values, expected);
    agent.shutdown().await;
}

#[tokio::test]
async fn pipelined_flushes_commit_in_order() {
    let store = Arc::new(FlakyStore::default());
    let agent = agent_on(store.clone()).await;

    // The first segment's PUT is slow; the second one's lands first. Its commit must wait:
    // committed first, it would be refused (it starts at offset 5, the high watermark
    // would still be 0) and its producer would get an error instead of offsets.
    store.delay_next_put_ms.store(300, Ordering::SeqCst);
    let slow = tokio::spawn({
        let agent = agent.clone();
        async move { agent.produce("t", Some(0), records("slow", 5), true).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast = agent
        .produce("t", Some(0), records("fast", 5), true)
        .await
        .unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.first(), Some(&(0, 0)));
    assert_eq!(fast.first(), Some(&(0, 5)));
    assert!(
        store.puts.load(Ordering::SeqCst) >= 2,
        "two segments, two PUTs"
    );

    let values = read_partition(&agent).await;
    let expected: Vec<String> = (0..5)
        .map(|i| format!("slow-{i}"))
        .chain((0..5).map(|i| format!("fast-{i}")))
        .collect();
    assert_eq!(values, expected);
    agent.shutdown().await;
}

/// An idempotent producer's batch is written once however often it is sent: a retry gets
/// the offsets it got then, a gap and an older epoch are refused, and the state comes back
/// from the metastore when the partition is taken again after a failed flush.
#[tokio::test]
async fn idempotent_batches_are_written_once() {
    let store = Arc::new(FlakyStore::default());
    let agent = agent_on(store.clone()).await;
    let producer_id = agent.init_producer_id().await.unwrap();
    assert_eq!(agent.init_producer_id().await.unwrap(), producer_id + 1);
    let send = |epoch: i16, sequence: i32, prefix: &'static str| {
        let agent = agent.clone();
        async move {
            let fields = strata_storage::ProducerFields {
                producer_id,
                producer_epoch: epoch,
                base_sequence: sequence,
            };
            let appended = agent
                .append(
                    "t",
                    "",
                    Some(0),
                    Some(crate::ProducerBatch {
                        fields,
                        transactional_id: None,
                    }),
                    records(prefix, 10),
                    true,
                )
                .await?;
            let duplicate = appended.duplicate;
            let positions = appended.committed().await?;
            Ok::<_, Error>((positions[0].1, positions[9].1, duplicate))
        }
    };
    assert_eq!(send(1, 0, "a").await.unwrap(), (0, 9, false));
    assert_eq!(send(1, 0, "a").await.unwrap(), (0, 9, true));
    assert_eq!(send(1, 10, "b").await.unwrap(), (10, 19, false));
    let gap = send(1, 30, "x").await.unwrap_err();
    assert!(
        matches!(gap, Error::OutOfOrderSequence { sequence: 30, .. }),
        "{gap}"
    );
    let fenced = send(0, 20, "x").await.unwrap_err();
    assert!(
        matches!(fenced, Error::ProducerFenced { current: 1, .. }),
        "{fenced}"
    );

    // A failed flush: the partition is given up; taken again, its producer state is the
    // committed one, read from the metastore.
    store.failing.store(true, Ordering::SeqCst);
    assert!(send(1, 20, "c").await.is_err());
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(send(1, 10, "b").await.unwrap(), (10, 19, true));
    assert_eq!(send(1, 20, "c").await.unwrap(), (20, 29, false));
    assert_eq!(send(1, 20, "c").await.unwrap(), (20, 29, true));
    // A new epoch starts at sequence 0.
    assert!(send(2, 30, "x").await.is_err());
    assert_eq!(send(2, 0, "d").await.unwrap(), (30, 39, false));

    let values = read_partition(&agent).await;
    let expected: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|p| (0..10).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(values, expected, "each batch once, in order");
    assert_eq!(agent.metrics().produce_duplicates.get(), 3);
    agent.shutdown().await;
}
