//! The values the metastore holds, as the rest of Strata sees them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A topic's definition. Immutable once created (until deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Topic configuration as Kafka names it (`max.message.bytes`, ...), validated by the
    /// agent before it is stored.
    pub config: BTreeMap<String, String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Who owns a partition, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOwner {
    /// Bumped by every take-over; commits carry it and are refused once it moved on.
    pub epoch: u64,
    /// The owning agent.
    pub agent_id: String,
}

/// One partition's committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The current owner, if any agent ever took the partition.
    pub owner: Option<PartitionOwner>,
    /// The first offset still readable (advanced by retention).
    pub log_start_offset: i64,
    /// One past the last committed offset: the offset the next record gets.
    pub high_watermark: i64,
}

/// Where a run of one partition's offsets is stored: a byte range of a segment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// First offset of the run.
    pub base_offset: i64,
    /// Last offset of the run (inclusive).
    pub last_offset: i64,
    /// Object name, relative to the store's prefix.
    pub object: String,
    /// Offset of the partition's block in the object.
    pub byte_start: u64,
    /// Length of the block in bytes.
    pub byte_len: u64,
    /// Largest record timestamp in the run (ms), for time-based retention.
    pub max_timestamp_ms: i64,
}

/// One partition's part of a flush: append `entry` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAppend {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The ownership the writer holds: the commit is refused unless it is still current.
    pub owner: PartitionOwner,
    /// The new run; its `base_offset` must equal the current high watermark.
    pub entry: IndexEntry,
}

/// Why one partition's append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Another owner took the partition: the writer is fenced.
    Fenced {
        /// The owner now on record, if any.
        current: Option<PartitionOwner>,
    },
    /// The append does not start at the high watermark.
    OffsetMismatch {
        /// The committed high watermark.
        high_watermark: i64,
    },
}

/// What [`crate::Metastore::commit_flush`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Metastore transactions that committed.
    pub transactions: u32,
    /// Bytes of keys and values those transactions wrote.
    pub bytes: u64,
    /// Appends refused, by their index in the request. All others committed.
    pub rejected: Vec<(usize, Rejection)>,
}

/// An agent as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Unique id of this agent process.
    pub agent_id: String,
    /// host:port of its gRPC server.
    pub address: String,
    /// Availability zone it runs in, if configured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

/// Which agent serves each partition, as the controller decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Bumped by every change the controller stores.
    pub generation: u64,
    /// The controller that stored it (`agent_id#agent_epoch`).
    pub controller: String,
    /// For each topic, the agent id of each partition, by partition number; `None` while
    /// no agent is live.
    pub topics: BTreeMap<String, Vec<Option<String>>>,
}

impl Assignment {
    /// The agent a partition is assigned to.
    pub fn agent_of(&self, topic: &str, partition: u32) -> Option<&str> {
        self.topics
            .get(topic)
            .and_then(|agents| agents.get(partition as usize))
            .and_then(|agent| agent.as_deref())
    }

    /// Every partition assigned to `agent_id`.
    pub fn partitions_of<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> impl Iterator<Item = (&'a str, u32)> + 'a {
        self.topics.iter().flat_map(move |(topic, agents)| {
            agents
                .iter()
                .enumerate()
                .filter(move |(_, a)| a.as_deref() == Some(agent_id))
                .map(move |(p, _)| (topic.as_str(), p as u32))
        })
    }
}
